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

/// Reads a small `/proc` file into `buf` (cleared first): one `open`, one
/// `read` for a file that fits (what `std::fs::read_to_string` does costs
/// a `statx` for its size hint and a second `read` to see the end, and a
/// fresh allocation), then `close`. A `/proc` file is generated whole at
/// each read of its start, and a read shorter than the room left means the
/// end; a file that fills the room is read on in a larger buffer.
fn read_proc(path: &std::ffi::CStr, buf: &mut Vec<u8>) -> bool {
    use std::io::Read;
    use std::os::fd::FromRawFd;
    buf.clear();
    // SAFETY: a valid NUL-terminated path; the descriptor returned is
    // owned by the File below, which closes it.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return false;
    }
    // SAFETY: `fd` was just opened and nothing else owns it.
    let mut file = unsafe { std::fs::File::from_raw_fd(fd) };
    if buf.capacity() < 1024 {
        buf.reserve(1024);
    }
    loop {
        let len = buf.len();
        let room = buf.capacity() - len;
        buf.resize(len + room, 0);
        match file.read(&mut buf[len..]) {
            Ok(n) => {
                buf.truncate(len + n);
                if n < room {
                    return true;
                }
                buf.reserve(room.max(1024));
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => buf.truncate(len),
            Err(_) => return false,
        }
    }
}

/// `args` as a C string, written into `path` (reused): no allocation per
/// read once `path` has grown.
fn c_path<'a>(path: &'a mut Vec<u8>, args: std::fmt::Arguments) -> &'a std::ffi::CStr {
    use std::io::Write;
    path.clear();
    // Writing into a Vec cannot fail; the paths made here (pids and fixed
    // names) hold no NUL, and one that did would name no file.
    let _ = path.write_fmt(args);
    path.push(0);
    std::ffi::CStr::from_bytes_with_nul(path).unwrap_or(c"")
}

/// Pushes the pids listed (space-separated) in `text` onto `todo`.
fn push_pids(text: &[u8], todo: &mut Vec<u32>) {
    todo.extend(
        text.split(|b| b.is_ascii_whitespace())
            .filter_map(|c| std::str::from_utf8(c).ok()?.parse::<u32>().ok()),
    );
}

/// Reads the tree of `pid`; `None` when the leader is gone.
///
/// One pass: each process's `stat` gives its CPU time, memory and thread
/// count; a single-threaded process's children are read from its one task,
/// so an idle `sleep` costs two small reads (an `open`, a `read` and a
/// `close` each, into one buffer for the whole tree).
pub fn sample(pid: u32) -> Option<Sample> {
    let ticks = clock_ticks();
    let page = page_size();
    let mut s = Sample::default();
    let mut leader_seen = false;
    let mut todo = vec![pid];
    let mut seen = 0usize;
    let (mut buf, mut path) = (Vec::new(), Vec::new());
    let mut fields = [0u64; 22];
    while let Some(p) = todo.pop() {
        seen += 1;
        if seen > 4096 {
            break;
        }
        if !read_proc(c_path(&mut path, format_args!("/proc/{p}/stat")), &mut buf) {
            continue;
        }
        // The command name may hold spaces and parentheses: the fields
        // start after the last ')'.
        let Some(at) = buf.iter().rposition(|b| *b == b')') else {
            continue;
        };
        // Fields after the command: state f[0]; utime..cstime f[11..15];
        // num_threads f[17]; rss f[21].
        fields.fill(0);
        for (i, f) in buf[at + 1..]
            .split(|b| *b == b' ')
            .filter(|f| !f.is_empty())
            .take(fields.len())
            .enumerate()
        {
            fields[i] = std::str::from_utf8(f)
                .ok()
                .and_then(|v| v.trim_end().parse::<u64>().ok())
                .unwrap_or(0);
        }
        let num = |i: usize| fields[i];
        s.cpu_seconds += (num(11) + num(12) + num(13) + num(14)) as f64 / ticks;
        s.memory_bytes += num(21) * page;
        s.processes += 1;
        leader_seen |= p == pid;
        if num(17) <= 1 {
            let children = c_path(&mut path, format_args!("/proc/{p}/task/{p}/children"));
            if read_proc(children, &mut buf) {
                push_pids(&buf, &mut todo);
            }
        } else if let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) {
            for t in tasks.flatten() {
                if let Ok(children) = std::fs::read(t.path().join("children")) {
                    push_pids(&children, &mut todo);
                }
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

    /// A file longer than the first buffer is read whole, in more reads.
    #[test]
    fn a_long_file_is_read_whole() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("long");
        let text: Vec<u8> = (0..5000u32).map(|i| b'a' + (i % 26) as u8).collect();
        std::fs::write(&path, &text).unwrap();
        let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
        let mut buf = Vec::new();
        assert!(read_proc(&c, &mut buf));
        assert_eq!(buf, text);
        // Reused for a shorter file: only that file's bytes.
        assert!(read_proc(c"/proc/self/stat", &mut buf));
        assert!(buf.starts_with(format!("{} (", std::process::id()).as_bytes()));
        assert!(!read_proc(c"/proc/0/no-such-file", &mut buf));
    }

    /// The fields parsed from `stat` are the ones `/proc` gives: the
    /// resident memory of a lone `sleep`, one process.
    #[test]
    fn the_sample_of_a_sleep_matches_its_stat() {
        let mut child = std::process::Command::new("/bin/sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id();
        let stat_of = || std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        // Until it has exec'd and sleeps (its name is sleep, its state S).
        while !stat_of().contains("(sleep) S ") && std::time::Instant::now() < deadline {
            std::thread::yield_now();
        }
        let s = sample(pid);
        let stat = stat_of();
        let _ = child.kill();
        let _ = child.wait();
        let s = s.expect("the sleep is alive");
        let f: Vec<&str> = stat[stat.rfind(')').unwrap() + 1..]
            .split_whitespace()
            .collect();
        let rss: u64 = f[21].parse().unwrap();
        assert_eq!(s.processes, 1);
        // Memory may move a little between the two reads; the same order.
        let ours = s.memory_bytes / page_size();
        assert!(
            ours * 2 > rss && ours < rss * 2,
            "{ours} pages, stat says {rss}"
        );
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
            // The sample walks the same tree, through the shell's one task.
            if tree(pid, 100).len() >= 2 && sample(pid).is_some_and(|s| s.processes >= 2) {
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
