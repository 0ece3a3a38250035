//! Starting a child in two steps: fork, then exec once the parent says so.
//!
//! The keeper must record a child (pid, start time, identity) before the
//! child runs any of the session's code: a keeper killed in between must not
//! leave a process nobody knows. So the child waits on a pipe after `fork`
//! and only `exec`s when the parent writes a byte; if the parent dies first
//! the pipe reads end-of-file and the child exits without running anything.
//! A second, close-on-exec pipe reports the outcome of `exec` without the
//! parent waiting for it: end-of-file means it ran, eight bytes say which
//! step failed and why.
//!
//! Everything the child needs is prepared before `fork` (no allocation may
//! happen between `fork` and `exec`).

use std::ffi::CString;
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::process::{SpawnError, SpawnRequest};
use crate::core::Reason;

/// The steps of the child, reported with the errno when one fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
enum Step {
    Group = 2,
    Cgroup = 3,
    Stdio = 4,
    Chdir = 5,
    User = 6,
    Exec = 7,
}

impl Step {
    fn from_u32(v: u32) -> Option<Step> {
        Some(match v {
            2 => Step::Group,
            3 => Step::Cgroup,
            4 => Step::Stdio,
            5 => Step::Chdir,
            6 => Step::User,
            7 => Step::Exec,
            _ => return None,
        })
    }
}

/// A child that exists and waits for [`Forked::release`].
#[derive(Debug)]
pub struct Forked {
    /// Its pid (and process group id).
    pub pid: u32,
    release: Option<File>,
    report: File,
    program: String,
    /// The write end of the child's stdin pipe (`SpawnRequest::stdin_pipe`).
    pub stdin: Option<File>,
}

/// What became of an `exec`.
#[derive(Debug)]
pub enum Outcome {
    /// The child runs the session's program.
    Running,
    /// It failed before running it (and exits at once).
    Failed(SpawnError),
}

impl Forked {
    /// Lets the child go on to `exec`.
    pub fn release(&mut self) -> std::io::Result<()> {
        use std::io::Write;
        if let Some(mut f) = self.release.take() {
            f.write_all(b"g")?;
        }
        Ok(())
    }

    /// The pipe that becomes readable (end-of-file or a report) once the
    /// child has exec'd or failed.
    pub fn report_fd(&self) -> RawFd {
        self.report.as_raw_fd()
    }

    /// Reads the outcome; blocks until the child exec'd or failed, which
    /// after [`Forked::release`] takes microseconds (poll [`Forked::report_fd`] first).
    pub fn outcome(&mut self) -> Outcome {
        let mut buf = [0u8; 8];
        let mut got = 0;
        while got < buf.len() {
            match self.report.read(&mut buf[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
        if got < buf.len() {
            return Outcome::Running;
        }
        let step = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]);
        let errno = i32::from_ne_bytes([buf[4], buf[5], buf[6], buf[7]]);
        let err = std::io::Error::from_raw_os_error(errno);
        let program = &self.program;
        let fail = |reason, message: String| Outcome::Failed(SpawnError { reason, message });
        match Step::from_u32(step) {
            Some(Step::Exec) => match errno {
                libc::ENOENT => fail(
                    Reason::CommandNotFound,
                    format!("command {program:?} not found (check spec.command and PATH)"),
                ),
                libc::EACCES | libc::EPERM => fail(
                    Reason::PermissionDenied,
                    format!("command {program:?} is not executable: {err}"),
                ),
                _ => fail(
                    Reason::SpawnFailed,
                    format!("cannot start {program:?}: {err}"),
                ),
            },
            Some(Step::User) => fail(
                Reason::PermissionDenied,
                format!("cannot switch to spec.user/spec.group: {err}"),
            ),
            Some(Step::Chdir) => fail(
                Reason::SpawnFailed,
                format!("cannot enter the working directory: {err}"),
            ),
            Some(Step::Cgroup) => fail(
                Reason::SpawnFailed,
                format!("cannot join the session's cgroup: {err}"),
            ),
            Some(s) => fail(
                Reason::SpawnFailed,
                format!("cannot start {program:?} (step {s:?}): {err}"),
            ),
            None => fail(Reason::SpawnFailed, format!("cannot start {program:?}")),
        }
    }
}

/// Everything the child uses, prepared before `fork`.
struct Prepared {
    path: CString,
    argv: Vec<CString>,
    envp: Vec<CString>,
    cwd: CString,
    stdin: OwnedFd,
    /// The write end, for the parent, when stdin is a pipe.
    stdin_w: Option<File>,
    stdout: OwnedFd,
    stderr: OwnedFd,
    cgroup_procs: Option<CString>,
    user: Option<(u32, u32)>,
}

fn cstring(bytes: &[u8], what: &str) -> Result<CString, SpawnError> {
    CString::new(bytes).map_err(|_| SpawnError {
        reason: Reason::SpawnFailed,
        message: format!("{what} holds a NUL byte"),
    })
}

/// The value of `PATH` in the child's environment, or the default.
fn child_path(env: &[(String, String)]) -> String {
    env.iter()
        .rev()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".to_string())
}

/// Finds `program` on the child's PATH, as `execvp` would (but before
/// forking, with the child's own PATH). A name with a slash is used as is.
fn resolve(program: &str, env: &[(String, String)], cwd: &Path) -> Result<PathBuf, SpawnError> {
    if program.contains('/') {
        return Ok(PathBuf::from(program));
    }
    use std::os::unix::fs::PermissionsExt;
    let mut not_executable = None;
    for dir in child_path(env).split(':') {
        let dir = if dir.is_empty() { "." } else { dir };
        let mut candidate = PathBuf::from(dir).join(program);
        if candidate.is_relative() {
            candidate = cwd.join(candidate);
        }
        match std::fs::metadata(&candidate) {
            Ok(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 => return Ok(candidate),
            Ok(m) if m.is_file() => not_executable = Some(candidate),
            _ => {}
        }
    }
    match not_executable {
        Some(p) => Err(SpawnError {
            reason: Reason::PermissionDenied,
            message: format!("command {program:?} is not executable ({})", p.display()),
        }),
        None => Err(SpawnError {
            reason: Reason::CommandNotFound,
            message: format!("command {program:?} not found (check spec.command and PATH)"),
        }),
    }
}

fn prepare(req: &SpawnRequest) -> Result<Prepared, SpawnError> {
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
    let path = resolve(program, &req.env, &req.cwd)?;
    let log_error = |p: &Path, e: std::io::Error| {
        fail(
            Reason::SpawnFailed,
            format!("cannot open log file {}: {e}", p.display()),
        )
    };
    // Both logs live in the session's log folder: one walk opens it for both.
    let (out_dir, out_name) =
        super::files::split(&req.stdout).map_err(|e| log_error(&req.stdout, e))?;
    let dir = super::files::open_dir(out_dir).map_err(|e| log_error(&req.stdout, e))?;
    let stdout = super::files::open_append_in(&dir, out_name, &req.stdout)
        .map(OwnedFd::from)
        .map_err(|e| log_error(&req.stdout, e))?;
    let stderr = match super::files::split(&req.stderr) {
        Ok((err_dir, err_name)) if err_dir == out_dir => {
            super::files::open_append_in(&dir, err_name, &req.stderr)
        }
        _ => super::files::open_append(&req.stderr),
    }
    .map(OwnedFd::from)
    .map_err(|e| log_error(&req.stderr, e))?;
    drop(dir);
    let mut stdin_w = None;
    let stdin: OwnedFd = match &req.stdin {
        // Both ends close on exec; the child's dup2 onto 0 keeps its copy.
        _ if req.stdin_pipe => {
            let (r, w) = pipe()?;
            stdin_w = Some(w);
            OwnedFd::from(r)
        }
        Some(p) => File::open(p).map(OwnedFd::from).map_err(|e| {
            fail(
                Reason::SpawnFailed,
                format!("cannot open stdin file {}: {e}", p.display()),
            )
        })?,
        None => File::open("/dev/null")
            .map(OwnedFd::from)
            .map_err(|e| fail(Reason::SpawnFailed, format!("cannot open /dev/null: {e}")))?,
    };
    let argv = req
        .argv
        .iter()
        .map(|a| cstring(a.as_bytes(), "an argument"))
        .collect::<Result<Vec<_>, _>>()?;
    let envp = req
        .env
        .iter()
        .map(|(k, v)| cstring(format!("{k}={v}").as_bytes(), "an environment variable"))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Prepared {
        path: cstring(path.as_os_str().as_bytes(), "the command")?,
        argv,
        envp,
        cwd: cstring(req.cwd.as_os_str().as_bytes(), "the working directory")?,
        stdin,
        stdin_w,
        stdout,
        stderr,
        cgroup_procs: match &req.cgroup_procs {
            Some(p) => Some(cstring(p.as_os_str().as_bytes(), "the cgroup path")?),
            None => None,
        },
        user: req.user,
    })
}

fn pipe() -> Result<(File, File), SpawnError> {
    let mut fds = [0; 2];
    // SAFETY: fds is a valid two-element array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(SpawnError {
            reason: Reason::SpawnFailed,
            message: format!("pipe: {}", std::io::Error::last_os_error()),
        });
    }
    // SAFETY: both fds were just created and are owned here.
    Ok(unsafe { (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) })
}

/// Forks a child that waits for [`Forked::release`] before it sets itself
/// up (own process group, cgroup, stdio, working directory, user) and execs.
///
/// Must be called from a single-threaded process (the keeper).
pub fn fork(req: &SpawnRequest) -> Result<Forked, SpawnError> {
    let mut p = prepare(req)?;
    let stdin_w = p.stdin_w.take();
    let (release_r, release_w) = pipe()?;
    let (report_r, report_w) = pipe()?;
    let mut argv: Vec<*const libc::c_char> = p.argv.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = p.envp.iter().map(|a| a.as_ptr()).collect();
    envp.push(std::ptr::null());
    // SAFETY: the keeper is single-threaded; the child only makes
    // async-signal-safe calls on memory prepared above, then execs or exits.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(SpawnError {
            reason: Reason::SpawnFailed,
            message: format!("fork: {}", std::io::Error::last_os_error()),
        });
    }
    if pid == 0 {
        // SAFETY: in the child, see above.
        unsafe {
            child(
                &p,
                [release_r.as_raw_fd(), release_w.as_raw_fd()],
                [report_r.as_raw_fd(), report_w.as_raw_fd()],
                &argv,
                &envp,
            )
        }
    }
    drop(release_r);
    drop(report_w);
    // Also from the parent, so the group exists whatever the child's progress.
    // SAFETY: plain syscall on our own child.
    unsafe {
        libc::setpgid(pid, pid);
    }
    Ok(Forked {
        pid: pid as u32,
        release: Some(release_w),
        report: report_r,
        program: req.argv.first().cloned().unwrap_or_default(),
        stdin: stdin_w,
    })
}

/// The child between fork and exec. Never returns.
unsafe fn child(
    p: &Prepared,
    [release, release_w]: [RawFd; 2],
    [report_r, report]: [RawFd; 2],
    argv: &[*const libc::c_char],
    envp: &[*const libc::c_char],
) -> ! {
    let fail = |step: Step| -> ! {
        let errno = *libc::__errno_location();
        let mut buf = [0u8; 8];
        buf[..4].copy_from_slice(&(step as u32).to_ne_bytes());
        buf[4..].copy_from_slice(&errno.to_ne_bytes());
        libc::write(report, buf.as_ptr().cast(), buf.len());
        libc::_exit(127);
    };
    // Our copies of the parent's ends: the release pipe must read
    // end-of-file when the parent is gone.
    libc::close(release_w);
    libc::close(report_r);
    // Wait for the parent to record us; end-of-file means it died first.
    let mut b = 0u8;
    loop {
        let n = libc::read(release, (&mut b as *mut u8).cast(), 1);
        if n == 1 {
            break;
        }
        if n < 0 && *libc::__errno_location() == libc::EINTR {
            continue;
        }
        libc::_exit(126);
    }
    libc::close(release);
    if libc::setpgid(0, 0) != 0 {
        fail(Step::Group);
    }
    if let Some(path) = &p.cgroup_procs {
        // Join before exec, so that every descendant is in it.
        let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        if fd < 0 || libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
            fail(Step::Cgroup);
        }
        libc::close(fd);
    }
    for (fd, target) in [
        (p.stdin.as_raw_fd(), 0),
        (p.stdout.as_raw_fd(), 1),
        (p.stderr.as_raw_fd(), 2),
    ] {
        if libc::dup2(fd, target) < 0 {
            fail(Step::Stdio);
        }
    }
    if libc::chdir(p.cwd.as_ptr()) != 0 {
        fail(Step::Chdir);
    }
    if let Some((uid, gid)) = p.user {
        // No supplementary groups of ours, then the group, then the user.
        if libc::setgroups(0, std::ptr::null()) != 0
            || libc::setgid(gid) != 0
            || libc::setuid(uid) != 0
        {
            fail(Step::User);
        }
    }
    // A session starts clean: no blocked signals, default dispositions
    // (the keeper blocks SIGCHLD; Rust ignores SIGPIPE).
    let mut set: libc::sigset_t = std::mem::zeroed();
    libc::sigemptyset(&mut set);
    libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
    for sig in 1..32 {
        if sig != libc::SIGKILL && sig != libc::SIGSTOP {
            libc::signal(sig, libc::SIG_DFL);
        }
    }
    libc::execve(p.path.as_ptr(), argv.as_ptr(), envp.as_ptr());
    fail(Step::Exec)
}
