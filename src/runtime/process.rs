//! Processes: what a spawn needs (the keeper starts it, see `fork`),
//! signalling whole groups, and reaping every child (sessions and orphans alike).
//!
//! The child holds its own output files open (O_APPEND); nothing flows
//! through the controller, so a controller that dies never blocks a session.

use std::path::PathBuf;

use nix::sys::signal::{killpg, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::core::{ExitStatus, Reason};

/// Everything needed to start one attempt.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct SpawnRequest {
    /// argv; argv[0] is looked up on PATH.
    pub argv: Vec<String>,
    /// Working directory.
    pub cwd: PathBuf,
    /// The whole environment of the child (nothing is inherited).
    pub env: Vec<(String, String)>,
    /// A file read as stdin; `None` is /dev/null. With `stdin_pipe`, the
    /// text the keeper writes into the pipe first.
    pub stdin: Option<PathBuf>,
    /// Stdin is a pipe whose write end the keeper holds (so that a
    /// controller restart does not close it): `sessionlet send` appends to
    /// it, and it closes when asked or when the child ends.
    #[serde(default)]
    pub stdin_pipe: bool,
    /// Standard output file (appended to).
    pub stdout: PathBuf,
    /// Standard error file (appended to).
    pub stderr: PathBuf,
    /// Run as this uid/gid (controller running as root only).
    pub user: Option<(u32, u32)>,
    /// The child joins this cgroup (its `cgroup.procs` file) before exec.
    #[serde(default)]
    pub cgroup_procs: Option<PathBuf>,
}

/// Why a spawn failed, in the words of the status file.
#[derive(Debug, Clone, PartialEq, thiserror::Error, serde::Serialize, serde::Deserialize)]
#[error("{message}")]
pub struct SpawnError {
    /// CommandNotFound, PermissionDenied or SpawnFailed.
    pub reason: Reason,
    /// What went wrong, for a person.
    pub message: String,
}

/// Sends a signal to a whole process group. A group that is already gone is not an error.
pub fn signal_group(pid: u32, signal: Signal) -> nix::Result<()> {
    let Ok(raw) = i32::try_from(pid) else {
        return Ok(());
    };
    match killpg(Pid::from_raw(raw), signal) {
        Err(nix::errno::Errno::ESRCH) => Ok(()),
        other => other,
    }
}

/// Reaps every exited child without blocking: sessions and adopted orphans.
pub fn reap() -> Vec<(u32, ExitStatus)> {
    let mut out = Vec::new();
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) => {
                out.push((pid.as_raw() as u32, ExitStatus::Code(code)))
            }
            Ok(WaitStatus::Signaled(pid, sig, _)) => {
                out.push((pid.as_raw() as u32, ExitStatus::Signal(sig as i32)))
            }
            Ok(WaitStatus::StillAlive) | Err(_) => break,
            Ok(_) => continue,
        }
    }
    out
}

/// Makes this process the reaper of orphaned descendants, so grandchildren
/// that escape their group are still ours to reap and kill.
pub fn become_subreaper() -> nix::Result<()> {
    nix::sys::prctl::set_child_subreaper(true)
}

/// The start time of a process in clock ticks since boot (field 22 of
/// /proc/PID/stat): with the pid and boot id, it identifies a process.
pub fn start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: split after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// True when `pid` has died and waits to be reaped (state Z or X in
/// /proc/PID/stat): its pid and start time still read as before, but no
/// process runs.
pub fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit(')')
            .next()
            .and_then(|r| r.split_whitespace().next())
            .is_some_and(|state| state == "Z" || state == "X")
    })
}

/// This boot's id.
pub fn boot_id() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|s| s.trim().to_string())
}
