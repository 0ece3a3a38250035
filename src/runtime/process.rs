//! Processes: spawning sessions into their own process group, signalling
//! whole groups, and reaping every child (sessions and orphans alike).
//!
//! The child holds its own output files open (O_APPEND); nothing flows
//! through the controller, so a controller that dies never blocks a session.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};

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
    /// A file read as stdin; `None` is /dev/null.
    pub stdin: Option<PathBuf>,
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

/// Starts a session's process in a new process group; returns its pid.
pub fn spawn(req: &SpawnRequest) -> Result<u32, SpawnError> {
    let fail = |reason, message: String| SpawnError { reason, message };
    let Some(program) = req.argv.first() else {
        return Err(fail(Reason::SpawnFailed, "the command is empty".into()));
    };
    if !req.cwd.is_dir() {
        return Err(fail(
            Reason::SpawnFailed,
            format!(
                "working directory {} does not exist or is not a directory",
                req.cwd.display()
            ),
        ));
    }
    let open = |p: &PathBuf| {
        super::files::open_append(p).map_err(|e| {
            fail(
                Reason::SpawnFailed,
                format!("cannot open log file {}: {e}", p.display()),
            )
        })
    };
    let stdout = open(&req.stdout)?;
    let stderr = open(&req.stderr)?;
    let stdin = match &req.stdin {
        Some(p) => Stdio::from(std::fs::File::open(p).map_err(|e| {
            fail(
                Reason::SpawnFailed,
                format!("cannot open stdin file {}: {e}", p.display()),
            )
        })?),
        None => Stdio::null(),
    };
    let mut cmd = Command::new(program);
    cmd.args(&req.argv[1..])
        .current_dir(&req.cwd)
        .env_clear()
        .envs(req.env.iter().map(|(k, v)| (k, v)))
        .stdin(stdin)
        .stdout(stdout)
        .stderr(stderr)
        .process_group(0);
    // Dropped in pre_exec, after joining the cgroup (which needs our rights).
    let user = req.user;
    // Prepared before fork: nothing may allocate between fork and exec.
    let cgroup_procs = match &req.cgroup_procs {
        Some(p) => Some(
            std::ffi::CString::new(p.as_os_str().as_encoded_bytes())
                .map_err(|_| fail(Reason::SpawnFailed, "cgroup path holds a NUL byte".into()))?,
        ),
        None => None,
    };
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if let Some(path) = &cgroup_procs {
                // Join the session's cgroup before exec, so every descendant is in it.
                let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd < 0 || libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                    if fd >= 0 {
                        libc::close(fd);
                    }
                    return Err(std::io::Error::last_os_error());
                }
                libc::close(fd);
            }
            if let Some((uid, gid)) = user {
                // No supplementary groups of ours, then the group, then the user.
                if libc::setgroups(0, std::ptr::null()) != 0
                    || libc::setgid(gid) != 0
                    || libc::setuid(uid) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
            }
            // The controller may block or ignore signals; a session starts clean.
            let empty = nix::sys::signal::SigSet::empty();
            let _ = nix::sys::signal::pthread_sigmask(
                nix::sys::signal::SigmaskHow::SIG_SETMASK,
                Some(&empty),
                None,
            );
            Ok(())
        });
    }
    match cmd.spawn() {
        // The Child handle is dropped on purpose: the reaper waits for every child.
        Ok(child) => Ok(child.id()),
        Err(e) => Err(match e.kind() {
            std::io::ErrorKind::NotFound => fail(
                Reason::CommandNotFound,
                format!("command {program:?} not found (check spec.command and PATH)"),
            ),
            std::io::ErrorKind::PermissionDenied => fail(
                Reason::PermissionDenied,
                format!("command {program:?} is not executable: {e}"),
            ),
            _ => fail(
                Reason::SpawnFailed,
                format!("cannot start {program:?}: {e}"),
            ),
        }),
    }
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

/// This boot's id.
pub fn boot_id() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|s| s.trim().to_string())
}
