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
//!
//! On x86_64 and aarch64 the child is a `clone(CLONE_VM)`: it runs on a
//! stack of its own inside the keeper's memory until it execs, as
//! `posix_spawn` does, instead of in a copy of that memory. Copying the
//! keeper's page tables at each fork, the copy-on-write faults after it and
//! tearing the copy down again at exec were about a third of the keeper's
//! CPU during a cold start (BENCHMARK.md, "Cold start and replacement").
//! So the child makes only raw system calls, which leave `errno` alone (it
//! shares the keeper's), and what it reads ([`Exec`]) and its stack stay
//! allocated until it exec'd or ended ([`Forked`]'s drop waits for that).

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
    /// True once the report pipe read end-of-file: the child exec'd or
    /// ended, and uses neither `exec` nor `stack` any more.
    gone: bool,
    /// What the child reads until it execs (it shares our memory).
    exec: Option<Box<Exec>>,
    /// The stack it runs on until then.
    stack: Option<Stack>,
}

impl Drop for Forked {
    fn drop(&mut self) {
        // A child not released reads end-of-file and exits at once.
        self.release.take();
        if self.gone || self.wait_gone() {
            if let Some(st) = self.stack.take() {
                st.give_back();
            }
        } else {
            // Never free memory a child may still run on: leak it instead
            // (a read error on our own pipe; not expected).
            if let Some(e) = self.exec.take() {
                Box::leak(e);
            }
            if let Some(st) = self.stack.take() {
                std::mem::forget(st);
            }
        }
    }
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

    /// Reads the report pipe to its end-of-file (the child exec'd or
    /// ended); false on a read error.
    fn wait_gone(&mut self) -> bool {
        let mut sink = [0u8; 64];
        loop {
            match self.report.read(&mut sink) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => return false,
            }
        }
    }

    /// Reads the outcome; blocks until the child exec'd or failed, which
    /// after [`Forked::release`] takes microseconds (poll [`Forked::report_fd`] first).
    pub fn outcome(&mut self) -> Outcome {
        let mut buf = [0u8; 8];
        let mut got = 0;
        while got < buf.len() {
            match self.report.read(&mut buf[got..]) {
                Ok(0) => {
                    self.gone = true;
                    break;
                }
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
        if got < buf.len() {
            return Outcome::Running;
        }
        // It exits right after its report (microseconds): wait for that,
        // so that its stack can go.
        self.gone = self.wait_gone();
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

/// What the child reads between its start and `exec`: built before it
/// starts, never changed while it may run (it shares our memory), freed
/// once it exec'd or ended.
#[derive(Debug)]
struct Exec {
    path: CString,
    cwd: CString,
    cgroup_procs: Option<CString>,
    user: Option<(u32, u32)>,
    /// The child's stdin, stdout and stderr (our descriptors, which it dups
    /// onto 0, 1 and 2; its copies, not these numbers' files, are what it keeps).
    stdio: [RawFd; 3],
    /// The release pipe: read end, write end (the parent's, closed in the child).
    release: [RawFd; 2],
    /// The report pipe: read end (the parent's, closed in the child), write end.
    report: [RawFd; 2],
    /// NULL-terminated pointers into `_strings`.
    argv: Vec<*const libc::c_char>,
    envp: Vec<*const libc::c_char>,
    /// The arguments and the environment the pointers point into.
    _strings: (Vec<CString>, Vec<CString>),
}

/// The child's stack until it execs: private anonymous memory with a guard
/// page below it.
#[derive(Debug)]
struct Stack {
    base: *mut libc::c_void,
    len: usize,
}

/// Room for [`child`] (a few hundred bytes of frames) with a wide margin.
const STACK_LEN: usize = 64 * 1024;

/// Stacks of children that exec'd, kept for the next ones: a map, a guard
/// page and an unmap per spawn were a sixth of the keeper's CPU in a burst.
/// Spawns overlap briefly, so a few suffice.
static SPARE: std::sync::Mutex<Vec<Stack>> = std::sync::Mutex::new(Vec::new());
const SPARE_MAX: usize = 8;

// SAFETY: a `Stack` is plain memory owned by the value; nothing in it is
// tied to a thread (the pool only hands it from one spawn to the next).
unsafe impl Send for Stack {}

impl Stack {
    /// A spare stack, or a new one.
    fn take() -> Result<Stack, SpawnError> {
        match SPARE.lock().ok().and_then(|mut v| v.pop()) {
            Some(st) => Ok(st),
            None => Stack::new(),
        }
    }

    /// Keeps a stack no child uses any more for the next spawn.
    fn give_back(self) {
        if let Ok(mut v) = SPARE.lock() {
            if v.len() < SPARE_MAX {
                v.push(self);
            }
        }
    }

    fn new() -> Result<Stack, SpawnError> {
        let fail = |what: &str| SpawnError {
            reason: Reason::SpawnFailed,
            message: format!("{what}: {}", std::io::Error::last_os_error()),
        };
        // SAFETY: a fresh private mapping, owned by the returned value.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                STACK_LEN,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(fail("mmap of the child's stack"));
        }
        let stack = Stack {
            base,
            len: STACK_LEN,
        };
        // SAFETY: page_size is a plain query.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
        // SAFETY: the lowest page of our own mapping: an overflow faults
        // instead of writing below it.
        if unsafe { libc::mprotect(base, page.min(STACK_LEN), libc::PROT_NONE) } != 0 {
            return Err(fail("mprotect of the child's stack guard"));
        }
        Ok(stack)
    }

    /// The highest address, 16-byte aligned (stacks grow down).
    fn top(&self) -> *mut libc::c_void {
        let end = self.base as usize + self.len;
        (end & !15) as *mut libc::c_void
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        // SAFETY: our own mapping, no longer used ([`Forked`] drops it only
        // once the child exec'd or ended).
        unsafe {
            libc::munmap(self.base, self.len);
        }
    }
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
    let argv_strings = std::mem::take(&mut p.argv);
    let envp_strings = std::mem::take(&mut p.envp);
    let mut argv: Vec<*const libc::c_char> = argv_strings.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = envp_strings.iter().map(|a| a.as_ptr()).collect();
    envp.push(std::ptr::null());
    let exec = Box::new(Exec {
        path: std::mem::take(&mut p.path),
        cwd: std::mem::take(&mut p.cwd),
        cgroup_procs: p.cgroup_procs.take(),
        user: p.user,
        stdio: [
            p.stdin.as_raw_fd(),
            p.stdout.as_raw_fd(),
            p.stderr.as_raw_fd(),
        ],
        release: [release_r.as_raw_fd(), release_w.as_raw_fd()],
        report: [report_r.as_raw_fd(), report_w.as_raw_fd()],
        argv,
        envp,
        _strings: (argv_strings, envp_strings),
    });
    let stack = Stack::take()?;
    // SAFETY: the keeper is single-threaded; the child only makes raw
    // system calls on `exec` and its own stack, both kept until it exec'd
    // or ended (see `Forked`'s drop), then execs or exits.
    let pid = unsafe { start_child(&exec, &stack) };
    if pid < 0 {
        return Err(SpawnError {
            reason: Reason::SpawnFailed,
            message: format!("fork: {}", std::io::Error::last_os_error()),
        });
    }
    // Our copies: the child has its own (its descriptor table is a copy).
    drop(release_r);
    drop(report_w);
    drop(p);
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
        gone: false,
        exec: Some(exec),
        stack: Some(stack),
    })
}

/// Starts the child: it shares our memory (on its own stack) until exec.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
unsafe fn start_child(exec: &Exec, stack: &Stack) -> libc::pid_t {
    extern "C" fn entry(arg: *mut libc::c_void) -> libc::c_int {
        // SAFETY: `arg` is the `Exec` the parent keeps alive for us.
        unsafe { child(&*(arg as *const Exec)) }
    }
    libc::clone(
        entry,
        stack.top(),
        libc::CLONE_VM | libc::SIGCHLD,
        exec as *const Exec as *mut libc::c_void,
    )
}

/// Starts the child as a plain fork (its own copy of our memory) where the
/// raw system calls below are not written for the architecture.
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
unsafe fn start_child(exec: &Exec, _stack: &Stack) -> libc::pid_t {
    let pid = libc::fork();
    if pid == 0 {
        child(exec)
    }
    pid
}

/// System calls for the child that leave `errno` alone (it shares the
/// keeper's until exec): the result, or `-errno`.
mod sys {
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    pub unsafe fn call(n: libc::c_long, a0: usize, a1: usize, a2: usize, a3: usize) -> isize {
        let ret: isize;
        core::arch::asm!(
            "syscall",
            inlateout("rax") n as isize => ret,
            in("rdi") a0,
            in("rsi") a1,
            in("rdx") a2,
            in("r10") a3,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
        ret
    }

    #[cfg(target_arch = "aarch64")]
    #[inline(always)]
    pub unsafe fn call(n: libc::c_long, a0: usize, a1: usize, a2: usize, a3: usize) -> isize {
        let ret: isize;
        core::arch::asm!(
            "svc 0",
            in("x8") n,
            inlateout("x0") a0 as isize => ret,
            in("x1") a1,
            in("x2") a2,
            in("x3") a3,
            options(nostack),
        );
        ret
    }

    /// A forked child has its own `errno`: libc's wrapper is enough.
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    pub unsafe fn call(n: libc::c_long, a0: usize, a1: usize, a2: usize, a3: usize) -> isize {
        let r = libc::syscall(n, a0, a1, a2, a3);
        if r == -1 {
            -(*libc::__errno_location() as isize)
        } else {
            r as isize
        }
    }
}

/// The child between its start and exec. Never returns.
unsafe fn child(x: &Exec) -> ! {
    use libc::{
        SYS_chdir, SYS_close, SYS_dup3, SYS_execve, SYS_exit_group, SYS_fcntl, SYS_openat,
        SYS_read, SYS_rt_sigaction, SYS_rt_sigprocmask, SYS_setgid, SYS_setgroups, SYS_setpgid,
        SYS_setuid, SYS_write,
    };
    let [release, release_w] = x.release;
    let [report_r, report] = x.report;
    let exit = |code: usize| -> ! {
        loop {
            sys::call(SYS_exit_group, code, 0, 0, 0);
        }
    };
    let fail = |step: Step, ret: isize| -> ! {
        let errno = i32::try_from(-ret).unwrap_or(libc::EINVAL);
        let mut buf = [0u8; 8];
        buf[..4].copy_from_slice(&(step as u32).to_ne_bytes());
        buf[4..].copy_from_slice(&errno.to_ne_bytes());
        sys::call(
            SYS_write,
            report as usize,
            buf.as_ptr() as usize,
            buf.len(),
            0,
        );
        exit(127)
    };
    // Our copies of the parent's ends: the release pipe must read
    // end-of-file when the parent is gone.
    sys::call(SYS_close, release_w as usize, 0, 0, 0);
    sys::call(SYS_close, report_r as usize, 0, 0, 0);
    // Wait for the parent to record us; end-of-file means it died first.
    let mut b = 0u8;
    loop {
        let n = sys::call(SYS_read, release as usize, &mut b as *mut u8 as usize, 1, 0);
        if n == 1 {
            break;
        }
        if n == -(libc::EINTR as isize) {
            continue;
        }
        exit(126);
    }
    sys::call(SYS_close, release as usize, 0, 0, 0);
    let r = sys::call(SYS_setpgid, 0, 0, 0, 0);
    if r < 0 {
        fail(Step::Group, r);
    }
    if let Some(path) = &x.cgroup_procs {
        // Join before exec, so that every descendant is in it.
        let fd = sys::call(
            SYS_openat,
            libc::AT_FDCWD as usize,
            path.as_ptr() as usize,
            (libc::O_WRONLY | libc::O_CLOEXEC) as usize,
            0,
        );
        if fd < 0 {
            fail(Step::Cgroup, fd);
        }
        let w = sys::call(SYS_write, fd as usize, b"0".as_ptr() as usize, 1, 0);
        if w != 1 {
            fail(Step::Cgroup, if w < 0 { w } else { -(libc::EIO as isize) });
        }
        sys::call(SYS_close, fd as usize, 0, 0, 0);
    }
    for (fd, target) in x.stdio.iter().copied().zip(0..) {
        // dup2: dup3 refuses equal descriptors, where only the
        // close-on-exec flag must go.
        let r = if fd == target {
            sys::call(SYS_fcntl, fd as usize, libc::F_SETFD as usize, 0, 0)
        } else {
            sys::call(SYS_dup3, fd as usize, target as usize, 0, 0)
        };
        if r < 0 {
            fail(Step::Stdio, r);
        }
    }
    let r = sys::call(SYS_chdir, x.cwd.as_ptr() as usize, 0, 0, 0);
    if r != 0 {
        fail(Step::Chdir, r);
    }
    if let Some((uid, gid)) = x.user {
        // No supplementary groups of ours, then the group, then the user
        // (the raw calls: libc's would also try to change "our other
        // threads", which are the keeper's).
        for (nr, a0, a1) in [
            (SYS_setgroups, 0usize, 0usize),
            (SYS_setgid, gid as usize, 0),
            (SYS_setuid, uid as usize, 0),
        ] {
            let r = sys::call(nr, a0, a1, 0, 0);
            if r != 0 {
                fail(Step::User, r);
            }
        }
    }
    // A session starts clean: no blocked signals, default dispositions
    // (the keeper blocks SIGCHLD; Rust ignores SIGPIPE). The kernel's
    // sigaction for SIG_DFL: handler, flags, restorer and mask all zero.
    let empty: u64 = 0;
    sys::call(
        SYS_rt_sigprocmask,
        libc::SIG_SETMASK as usize,
        &empty as *const u64 as usize,
        0,
        8,
    );
    let default = [0usize; 4];
    for sig in 1..32usize {
        if sig != libc::SIGKILL as usize && sig != libc::SIGSTOP as usize {
            sys::call(SYS_rt_sigaction, sig, default.as_ptr() as usize, 0, 8);
        }
    }
    let r = sys::call(
        SYS_execve,
        x.path.as_ptr() as usize,
        x.argv.as_ptr() as usize,
        x.envp.as_ptr() as usize,
        0,
    );
    fail(Step::Exec, r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::wait::{waitpid, WaitStatus};
    use nix::unistd::Pid;

    fn request(dir: &Path, argv: &[&str]) -> SpawnRequest {
        SpawnRequest {
            argv: argv.iter().map(|a| a.to_string()).collect(),
            cwd: dir.to_path_buf(),
            env: vec![("SEEN".into(), "value-42".into())],
            stdin: None,
            stdin_pipe: false,
            stdout: dir.join("out.log"),
            stderr: dir.join("err.log"),
            user: None,
            cgroup_procs: None,
        }
    }

    fn exit_code(pid: u32) -> Option<i32> {
        match waitpid(Pid::from_raw(pid as i32), None) {
            Ok(WaitStatus::Exited(_, code)) => Some(code),
            _ => None,
        }
    }

    #[test]
    fn a_released_child_runs_with_its_directory_environment_and_output() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let req = request(
            tmp.path(),
            &["/bin/sh", "-c", "pwd; echo \"$SEEN\"; exit 3"],
        );
        let mut f = fork(&req).expect("fork");
        f.release().expect("release");
        assert!(matches!(f.outcome(), Outcome::Running));
        assert_eq!(exit_code(f.pid), Some(3));
        let out = std::fs::read_to_string(tmp.path().join("out.log")).expect("out.log");
        let cwd = tmp.path().canonicalize().expect("canonical");
        assert_eq!(out, format!("{}\nvalue-42\n", cwd.display()));
    }

    #[test]
    fn a_failed_exec_reports_its_step_and_errno() {
        let tmp = tempfile::tempdir().expect("tempdir");
        // Executable, but neither ELF nor a script: execve says ENOEXEC.
        let bogus = tmp.path().join("bogus");
        std::fs::write(&bogus, b"\x00\x01\x02\x03").expect("write");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&bogus, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let req = request(tmp.path(), &[bogus.to_str().expect("utf-8")]);
        let mut f = fork(&req).expect("fork");
        f.release().expect("release");
        let Outcome::Failed(e) = f.outcome() else {
            panic!("the exec must fail");
        };
        assert_eq!(e.reason, Reason::SpawnFailed);
        let enoexec = std::io::Error::from_raw_os_error(libc::ENOEXEC).to_string();
        assert!(e.message.contains(&enoexec), "{}", e.message);
        assert_eq!(exit_code(f.pid), Some(127));
    }

    #[test]
    fn a_child_never_released_runs_nothing() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let marker = tmp.path().join("ran");
        let script = format!("touch {}", marker.display());
        let req = request(tmp.path(), &["/bin/sh", "-c", &script]);
        let f = fork(&req).expect("fork");
        let pid = f.pid;
        drop(f);
        assert_eq!(exit_code(pid), Some(126));
        assert!(!marker.exists());
    }
}
