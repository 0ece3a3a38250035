//! Containment: every process a session started stops with it, including
//! daemons that double-fork out of its process group and session.
//!
//! Three nets, from the strongest:
//!
//! 1. **The session's cgroup** (where the controller may create cgroups):
//!    nothing forked after the join can leave it. Sessions with a memory
//!    limit (and agents) join in the child before `exec`; every other
//!    session joins right after it runs, from the controller's joiner thread
//!    ([`Joiner`]), because on cgroup v1 an isolated join waits for an RCU
//!    grace period (10–15 ms) that would otherwise sit on every spawn.
//! 2. **A marker in the environment**: every session starts with
//!    [`SESSION_VAR`] and [`UID_VAR`]. A double-forked daemon is re-parented
//!    to the keeper (a child subreaper), or to the controller when the
//!    keeper is gone; the children of those two that carry the session's
//!    marker, and their descendants, belong to it. This covers the joiner's
//!    window and hosts where no cgroup can be made.
//! 3. **The process group and the descendants** walked from the leader.
//!
//! What is left without a cgroup: a process that both clears its
//! environment and leaves its parent before the session stops.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::mpsc;

/// The session's name, in every session's environment.
pub const SESSION_VAR: &str = "SESSIONLET_SESSION";
/// The session's uid (`metadata.uid`), in every session's environment.
pub const UID_VAR: &str = "SESSIONLET_SESSION_UID";

/// The variables that mark a session's processes (added last, so that no
/// manifest can override them).
pub fn marker(name: &str, uid: &str) -> Vec<(String, String)> {
    vec![
        (SESSION_VAR.to_string(), name.to_string()),
        (UID_VAR.to_string(), uid.to_string()),
    ]
}

/// True when a NUL-separated environment (the text of `/proc/PID/environ`)
/// carries the marker of session `name` with uid `uid`. The last value of a
/// variable counts, as `getenv` would see it.
pub fn carries(environ: &[u8], name: &str, uid: &str) -> bool {
    let value = |var: &str| {
        let prefix = format!("{var}=");
        environ
            .split(|b| *b == 0)
            .rev()
            .find_map(|kv| kv.strip_prefix(prefix.as_bytes()))
    };
    value(SESSION_VAR) == Some(name.as_bytes()) && value(UID_VAR) == Some(uid.as_bytes())
}

/// The state letter of a `/proc/PID/stat` text, and the process group.
fn parse_stat(stat: &str) -> Option<(char, u32)> {
    // The command name may hold spaces and parentheses: split after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let _ppid = fields.next()?;
    let pgrp = fields.next()?.parse().ok()?;
    Some((state, pgrp))
}

/// Pids to signal among `candidates`: each once, never `leader`, never a
/// member of the leader's group (the group signal reached it), never a pid
/// in `done`. `pgrp_of` says a candidate's group (`None`: gone or a zombie).
pub fn targets(
    candidates: impl IntoIterator<Item = u32>,
    leader: u32,
    done: &BTreeSet<u32>,
    mut pgrp_of: impl FnMut(u32) -> Option<u32>,
) -> Vec<u32> {
    let mut seen = BTreeSet::new();
    candidates
        .into_iter()
        .filter(|p| *p != leader && *p != 0 && !done.contains(p) && seen.insert(*p))
        .filter(|p| pgrp_of(*p).is_some_and(|g| g != leader))
        .collect()
}

/// The group of a live process (`None` when it is gone or a zombie).
pub fn live_pgrp(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    match parse_stat(&stat)? {
        ('Z' | 'X' | 'x', _) => None,
        (_, g) => Some(g),
    }
}

/// Direct children of `pid`, from every one of its threads (an orphan is
/// re-parented to one thread of its subreaper).
fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for t in tasks.flatten() {
        if let Ok(text) = std::fs::read_to_string(t.path().join("children")) {
            out.extend(
                text.split_whitespace()
                    .filter_map(|c| c.parse::<u32>().ok()),
            );
        }
    }
    out
}

/// The children of the reapers (the keeper, the controller) that are not
/// known session leaders, with their environments: read once and shared by
/// the sweeps of a burst of exits, so that a burst costs one listing of the
/// keeper's children, not one per exit (which is quadratic when thousands
/// of sessions end together).
#[derive(Debug, Default)]
pub struct Census {
    orphans: Vec<(u32, Vec<u8>)>,
}

impl Census {
    /// Lists the children of `reapers`, skipping the `known` ones (sessions'
    /// leaders, the keeper): only orphans have their environment read.
    pub fn take(reapers: &[u32], known: impl Fn(u32) -> bool) -> Census {
        let mut orphans = Vec::new();
        for &r in reapers.iter().filter(|r| **r != 0) {
            for child in children(r).into_iter().filter(|c| !known(*c)) {
                if let Ok(env) = std::fs::read(format!("/proc/{child}/environ")) {
                    orphans.push((child, env));
                }
            }
        }
        Census { orphans }
    }

    /// Processes of session `name`/`uid` that left its tree: the orphans
    /// carrying its marker, with all their descendants.
    pub fn strays(&self, name: &str, uid: &str) -> Vec<u32> {
        let mut out = Vec::new();
        for (child, env) in &self.orphans {
            if carries(env, name, uid) {
                out.extend(super::monitor::tree(*child, 4096));
            }
        }
        out
    }
}

/// Processes of session `name`/`uid` that left its tree: the children of
/// `reapers` (the keeper, the controller) carrying its marker, with all
/// their descendants. Reads only those children, never every process, and
/// skips the `known` ones (sessions' leaders, the keeper): only orphans
/// have their environment read.
pub fn strays(reapers: &[u32], name: &str, uid: &str, known: impl Fn(u32) -> bool) -> Vec<u32> {
    Census::take(reapers, known).strays(name, uid)
}

/// Sends `signal` to each pid; gone ones are not an error.
pub fn signal_all(pids: &[u32], signal: nix::sys::signal::Signal) {
    for &p in pids {
        if let Ok(raw) = i32::try_from(p) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(raw), signal);
        }
    }
}

/// One join for the [`Joiner`]: move `pid` (while it is still the process
/// that started at `start_ticks`) and its descendants into a cgroup.
#[derive(Debug)]
pub struct Join {
    /// The session's `cgroup.procs`.
    pub procs: PathBuf,
    /// The session's leader.
    pub pid: u32,
    /// Its start time, guarding against a reused pid.
    pub start_ticks: Option<u64>,
    /// Make the cgroup first (a session without a memory limit: its
    /// cgroup is created here, off the spawn path; `Some(v2)`).
    pub create: Option<bool>,
}

/// A thread that moves sessions into their cgroups after they started,
/// off the spawn path. Joins that arrive together overlap in the kernel
/// (one RCU grace period serves them all).
#[derive(Debug)]
pub struct Joiner {
    tx: mpsc::Sender<Join>,
}

impl Joiner {
    /// Starts the thread.
    pub fn start() -> std::io::Result<Joiner> {
        let (tx, rx) = mpsc::channel::<Join>();
        std::thread::Builder::new()
            .name("cgroup-joiner".into())
            .spawn(move || {
                while let Ok(j) = rx.recv() {
                    join(&j);
                }
            })?;
        Ok(Joiner { tx })
    }

    /// Queues a join; false when the thread is gone.
    pub fn join(&self, j: Join) -> bool {
        self.tx.send(j).is_ok()
    }
}

/// Moves a leader and the descendants it already has into its cgroup.
fn join(j: &Join) {
    use std::io::Write;
    if j.start_ticks.is_none() || super::process::start_ticks(j.pid) != j.start_ticks {
        return;
    }
    if let (Some(v2), Some(dir)) = (j.create, j.procs.parent()) {
        if let Err(e) = super::cgroup::prepare(dir, v2, None) {
            tracing::warn!(
                "cannot create the cgroup {} ({e}); the session is contained by its process group and environment marker only",
                dir.display()
            );
            return;
        }
    }
    let Ok(mut f) = std::fs::OpenOptions::new().write(true).open(&j.procs) else {
        tracing::warn!("cannot open {} to join it", j.procs.display());
        return;
    };
    for p in super::monitor::tree(j.pid, 4096) {
        // One write per pid (the kernel takes one per write call); a
        // process that ended meanwhile is not an error.
        if let Err(e) = f.write_all(p.to_string().as_bytes()) {
            if e.raw_os_error() != Some(libc::ESRCH) {
                tracing::warn!("cannot move {p} into {}: {e}", j.procs.display());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_marker_is_recognised_by_name_and_uid() {
        let env = b"PATH=/bin\0SESSIONLET_SESSION=web\0SESSIONLET_SESSION_UID=u1\0";
        assert!(carries(env, "web", "u1"));
        assert!(!carries(env, "web", "u2"));
        assert!(!carries(env, "we", "u1"));
        assert!(!carries(b"PATH=/bin\0", "web", "u1"));
        // The last value wins, as getenv sees it.
        let env = b"SESSIONLET_SESSION=web\0SESSIONLET_SESSION_UID=u1\0SESSIONLET_SESSION=db\0";
        assert!(!carries(env, "web", "u1"));
        assert!(carries(env, "db", "u1"));
    }

    #[test]
    fn targets_skip_the_leader_its_group_the_gone_and_the_done() {
        let done = BTreeSet::from([7]);
        let groups = |p: u32| match p {
            3 => Some(10), // in the leader's group
            4 => None,     // gone
            _ => Some(p),
        };
        let t = targets([10, 3, 4, 5, 5, 6, 7, 0], 10, &done, groups);
        assert_eq!(t, vec![5, 6]);
    }

    #[test]
    fn stat_fields_survive_odd_command_names() {
        assert_eq!(parse_stat("12 (a) b) S 1 12 12 0"), Some(('S', 12)));
        assert_eq!(parse_stat("12 (x) Z 1 9 9"), Some(('Z', 9)));
        assert_eq!(parse_stat("garbage"), None);
    }
}
