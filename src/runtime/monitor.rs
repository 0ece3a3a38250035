//! Sampling a session's process tree: memory, CPU time, last output.
//!
//! Only the session's own processes are read: the tree is walked from the
//! session's leader through `/proc/PID/task/TID/children`, never by scanning
//! every process on the host, so the cost is per session.

/// Where the controller reads its sessions' processes, behind a trait so
/// that the shell's routing is tested with readings the test chooses.
pub trait Procfs: Send + Sync {
    /// A reading of the tree of `pid`; `None` when the leader is gone.
    fn sample(&self, pid: u32) -> Option<Sample>;
    /// The start time of `pid` in clock ticks since boot; `None` when it
    /// is gone (a pid with other ticks is another process).
    fn start_ticks(&self, pid: u32) -> Option<u64>;
}

/// The system's `/proc`.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemProcfs;

impl Procfs for SystemProcfs {
    fn sample(&self, pid: u32) -> Option<Sample> {
        sample(pid)
    }
    fn start_ticks(&self, pid: u32) -> Option<u64> {
        super::process::start_ticks(pid)
    }
}

/// One reading of a tree.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Sample {
    /// Resident memory of every process in the tree.
    pub memory_bytes: u64,
    /// User + system CPU time of the tree, including reaped descendants.
    pub cpu_seconds: f64,
    /// Processes in the tree.
    pub processes: u32,
}

/// Pids of the tree rooted at `pid` (the root first), at most `limit` of them.
pub fn tree(pid: u32, limit: usize) -> Vec<u32> {
    let mut out = vec![pid];
    let mut i = 0;
    while i < out.len() && out.len() < limit {
        let p = out[i];
        i += 1;
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) else {
            continue;
        };
        for t in tasks.flatten() {
            let Ok(children) = std::fs::read_to_string(t.path().join("children")) else {
                continue;
            };
            out.extend(
                children
                    .split_whitespace()
                    .filter_map(|c| c.parse::<u32>().ok()),
            );
        }
    }
    out.truncate(limit);
    out
}

fn clock_ticks() -> f64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .map_or(100.0, |t| t as f64)
}

fn page_size() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .map_or(4096, |p| p as u64)
}

/// Reads the tree of `pid`; `None` when the leader is gone.
///
/// One pass: each process's `stat` gives its CPU time, memory and thread
/// count; a single-threaded process's children are read from its one task,
/// so an idle `sleep` costs two small reads.
pub fn sample(pid: u32) -> Option<Sample> {
    let ticks = clock_ticks();
    let page = page_size();
    let mut s = Sample::default();
    let mut leader_seen = false;
    let mut todo = vec![pid];
    let mut seen = 0usize;
    while let Some(p) = todo.pop() {
        seen += 1;
        if seen > 4096 {
            break;
        }
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
            continue;
        };
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        // Fields after the command: state f[0]; utime..cstime f[11..15];
        // num_threads f[17]; rss f[21].
        let num = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        s.cpu_seconds += (num(11) + num(12) + num(13) + num(14)) as f64 / ticks;
        s.memory_bytes += num(21) * page;
        s.processes += 1;
        leader_seen |= p == pid;
        let mut push_children = |path: String| {
            if let Ok(children) = std::fs::read_to_string(path) {
                todo.extend(
                    children
                        .split_whitespace()
                        .filter_map(|c| c.parse::<u32>().ok()),
                );
            }
        };
        if num(17) <= 1 {
            push_children(format!("/proc/{p}/task/{p}/children"));
        } else if let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) {
            for t in tasks.flatten() {
                push_children(t.path().join("children").to_string_lossy().into_owned());
            }
        }
    }
    leader_seen.then_some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tree_sample_reads_this_process() {
        let s = sample(std::process::id()).expect("we exist");
        assert!(s.memory_bytes > 0);
        assert!(s.processes >= 1);
    }

    #[test]
    fn the_tree_of_a_shell_includes_its_child() {
        let mut child = std::process::Command::new("/bin/sh")
            .args(["-c", "sleep 30 & wait"])
            .spawn()
            .unwrap();
        let pid = child.id();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let mut found = false;
        while std::time::Instant::now() < deadline {
            if tree(pid, 100).len() >= 2 {
                found = true;
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        for p in tree(pid, 100).into_iter().rev() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(p as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = child.wait();
        assert!(found, "the sleep child was not seen in the tree");
    }
}
