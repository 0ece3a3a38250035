//! The keeper: one small, long-lived parent of every session.
//!
//! The controller is what users restart, upgrade and occasionally crash; the
//! keeper is what lets sessions (and their exit statuses) outlive it. It is
//! the same binary (`sessionlet keeper`), single-threaded, without an async
//! runtime.
//!
//! **The registry.** Every child is recorded in `.sessionlet/children/PID.json`
//! (pid, start ticks, boot id, and the session's identity: name, uid,
//! generation, attempt) *before* it runs any of the session's code (see
//! [`super::fork`]), and every exit in `.sessionlet/exits/PID.json` before it
//! is reported. An exit stays recorded until the controller acknowledges it,
//! which it does only once the status that holds it is saved. So a
//! controller that starts learns every live child and every unsaved exit,
//! whatever was killed when; and a keeper that starts after another one died
//! finds the children still alive from the registry and watches them through
//! a pidfd (their exit codes went to their new parent; the record says so
//! when a code could not be known).
//!
//! **The socket.** `.sessionlet/keeper.sock`, a path inside the control
//! folder, which only the controller's user may write: nobody else can bind
//! it first. Both ends check the peer's credentials (SO_PEERCRED) before
//! saying anything, and a keeper that does not answer in time is an error,
//! never a hang.
//!
//! **The protocol.** JSON lines over one connection. The controller sends
//! `hello`, `spawn` (tagged), `ack` and `shutdown`; the keeper answers
//! `welcome` (its children and unacknowledged exits), then pushes `spawned` /
//! `spawnFailed` (with the tag) and `exited` on the same ordered stream, so a
//! spawn's reply always precedes its exit. Spawns overlap: the keeper forks,
//! records, releases the child and goes on; the exec's outcome arrives on a
//! pipe in its poll loop.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use serde::{Deserialize, Serialize};

use super::files::create_dir;
use super::fork::{self, Forked, Outcome};
use super::process::{self, SpawnError, SpawnRequest};
use crate::core::ExitStatus;

/// The protocol spoken on the socket; a keeper and a controller of
/// different protocols refuse each other.
pub const PROTOCOL: u32 = 4;

/// How long a keeper may take to answer the greeting.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a new keeper may take to be ready.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// Which session (and which of its attempts) a child runs.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Identity {
    /// The session's name.
    pub session: String,
    /// Its uid (`metadata.uid` in the status).
    #[serde(default)]
    pub uid: String,
    /// The spec generation the attempt runs.
    pub generation: u64,
    /// The attempt, 1-based.
    pub attempt: u32,
}

/// A child of the keeper, as its registry records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Child {
    /// Its pid (also its process group id).
    pub pid: u32,
    /// Its start time in clock ticks since boot (guards against pid reuse).
    pub start_ticks: Option<u64>,
    /// The boot it runs in.
    pub boot_id: Option<String>,
    /// Whom it runs for.
    pub identity: Identity,
    /// When it was started.
    pub started_at: DateTime<Utc>,
    /// Its standard output file.
    #[serde(default)]
    pub stdout: PathBuf,
    /// Its standard error file.
    #[serde(default)]
    pub stderr: PathBuf,
    /// True when an earlier keeper started it (this one cannot know its exit code).
    #[serde(default)]
    pub orphan: bool,
}

/// An exit the keeper saw.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExitRecord {
    /// Which child.
    pub child: Child,
    /// How it ended; `None` when that could not be known (it ended while
    /// no process able to reap it was recording).
    pub status: Option<ExitStatus>,
    /// When it was seen gone.
    pub at: DateTime<Utc>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "camelCase")]
enum Request {
    Hello {
        protocol: u32,
    },
    Spawn {
        tag: u64,
        identity: Identity,
        request: Box<SpawnRequest>,
    },
    Ack {
        pid: u32,
    },
    Shutdown,
    /// Scale-out: the node's lease cannot expire within this many
    /// milliseconds; past that without a newer one, fence (see `fence.rs`).
    /// Without `withinMs`: fence no more (a controller without a coordinator).
    Fence {
        #[serde(rename = "withinMs", default)]
        within_ms: Option<u64>,
    },
    /// Appends `data` to child `pid`'s stdin pipe (no reply).
    Write {
        pid: u32,
        data: String,
    },
    /// Closes child `pid`'s stdin pipe once what was written is flushed
    /// (no reply): the child reads end-of-file.
    CloseStdin {
        pid: u32,
    },
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "camelCase")]
enum Reply {
    Welcome {
        protocol: u32,
        keeper_pid: u32,
        children: Vec<Child>,
        exits: Vec<ExitRecord>,
    },
    Refused {
        message: String,
    },
    Spawned {
        tag: u64,
        child: Child,
    },
    SpawnFailed {
        tag: u64,
        error: SpawnError,
    },
    Exited {
        exit: ExitRecord,
    },
    Ok,
}

/// The keeper's socket in `control_dir`.
pub fn socket_path(control_dir: &Path) -> PathBuf {
    control_dir.join("keeper.sock")
}

fn exits_dir(control_dir: &Path) -> PathBuf {
    control_dir.join("exits")
}

fn children_dir(control_dir: &Path) -> PathBuf {
    control_dir.join("children")
}

/// Kills this process at a named step when a test armed that failpoint
/// (only with the `failpoints` feature).
///
/// With `SESSIONLET_CRASH_ONCE=FILE` in the environment, only the first
/// process to create FILE crashes: a keeper started after the crash
/// inherits the same variables and must not crash again.
#[cfg(feature = "failpoints")]
pub fn crash_point(name: &str) {
    if fail::eval(name, |_| ()).is_none() {
        return;
    }
    if let Some(once) = std::env::var_os("SESSIONLET_CRASH_ONCE") {
        let first = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&once)
            .is_ok();
        if !first {
            return;
        }
    }
    let _ = nix::sys::signal::kill(nix::unistd::Pid::this(), Signal::SIGKILL);
}

/// Without the `failpoints` feature, nothing.
#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn crash_point(_name: &str) {}

/// Refuses a control folder another user could write to (so could bind
/// the socket, or plant records).
pub fn check_private_dir(dir: &Path) -> Result<(), KeeperError> {
    let meta = std::fs::symlink_metadata(dir)?;
    let me = nix::unistd::geteuid().as_raw();
    if !meta.is_dir() {
        return Err(KeeperError::Untrusted(format!(
            "{} is not a folder (a symbolic link?); remove it and start again",
            dir.display()
        )));
    }
    if meta.uid() != me || meta.permissions().mode() & 0o022 != 0 {
        return Err(KeeperError::Untrusted(format!(
            "{} is owned by uid {} with mode {:o}; it must be owned by uid {me} and writable by nobody else \
             (fix: chown {me} {0} && chmod go-w {0})",
            dir.display(),
            meta.uid(),
            meta.permissions().mode() & 0o7777,
        )));
    }
    Ok(())
}

/// Checks what is at the socket's path before connecting to it.
fn check_socket_file(path: &Path) -> Result<(), KeeperError> {
    let meta = std::fs::symlink_metadata(path)?;
    let me = nix::unistd::geteuid().as_raw();
    if !meta.file_type().is_socket() || meta.uid() != me {
        return Err(KeeperError::Untrusted(format!(
            "{} is not a socket of uid {me} (found uid {}); refusing to talk to it",
            path.display(),
            meta.uid()
        )));
    }
    Ok(())
}

/// The uid and pid of the peer of a connected socket.
fn peer(stream: &UnixStream) -> std::io::Result<(u32, u32)> {
    let c = nix::sys::socket::getsockopt(stream, nix::sys::socket::sockopt::PeerCredentials)?;
    Ok((c.uid(), u32::try_from(c.pid()).unwrap_or(0)))
}

/// A Unix socket path short enough for `sun_path`: the path itself, or the
/// same file reached through a descriptor of its folder.
struct SockPath {
    path: PathBuf,
    _dir: Option<OwnedFd>,
}

fn sock_path(control_dir: &Path) -> std::io::Result<SockPath> {
    let path = socket_path(control_dir);
    if path.as_os_str().len() < 100 {
        return Ok(SockPath { path, _dir: None });
    }
    let dir = nix::fcntl::open(
        control_dir,
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )?;
    Ok(SockPath {
        path: PathBuf::from(format!("/proc/self/fd/{}/keeper.sock", dir.as_raw_fd())),
        _dir: Some(dir),
    })
}

/// Temporary file and rename, without fsync: the records must outlive the
/// controller and the keeper, not a power cut (which ends every session).
fn write_unsynced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    match write_unsynced_once(path, bytes) {
        // The status folder was deleted under us: make the folder again.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(dir) = path.parent() {
                create_dir(dir)?;
            }
            write_unsynced_once(path, bytes)
        }
        other => other,
    }
}

fn write_unsynced_once(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    // Hidden, and named by its writer (`.PID.json.tmp-KEEPER`): no reader
    // listing the folder takes it for a record, and a sweep knows whether
    // its writer is alive (files::remove_stale_temporaries).
    let Some(name) = path.file_name() else {
        return Err(std::io::Error::other("a record path without a file name"));
    };
    let tmp = path.with_file_name(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_NOFOLLOW)
        .mode(super::files::FILE_MODE)
        .open(&tmp)
        .and_then(|mut f| f.write_all(bytes))
        .and_then(|()| std::fs::rename(&tmp, path));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// A record's temporary: `.PID.json.tmp-KEEPER`, or `PID.json.tmp` from an
/// older keeper. At a keeper's start none can be in the middle of a write.
fn is_temporary(path: &Path) -> bool {
    path.extension().is_some_and(|x| x == "tmp")
        || path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with('.'))
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Option<T> {
    let mut text = String::new();
    std::fs::File::open(path)
        .ok()?
        .take(1 << 20)
        .read_to_string(&mut text)
        .ok()?;
    serde_json::from_str(&text).ok()
}

/// True when `pid` is still the process that started at `ticks`, and
/// alive: a zombie not yet reaped (its parent, a dead keeper, gone; the
/// reaper slow) keeps its pid and start time, but runs nothing.
pub fn same_process(pid: u32, ticks: Option<u64>) -> bool {
    ticks.is_some() && process::start_ticks(pid) == ticks && !process::is_zombie(pid)
}

// ---------------------------------------------------------------- the keeper

struct Conn {
    id: u64,
    stream: UnixStream,
    reader: BufReader<UnixStream>,
    hello: bool,
    /// Bytes not yet written: a controller busy with a burst of exits must
    /// never make the keeper block, nor lose a report.
    out: Vec<u8>,
}

impl Conn {
    /// Queues a message and writes what the socket takes without blocking.
    fn queue<T: Serialize>(&mut self, msg: &T) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(msg).map_err(std::io::Error::other)?;
        line.push(b'\n');
        self.out.extend_from_slice(&line);
        self.flush()
    }

    /// Writes pending bytes until the socket would block.
    fn flush(&mut self) -> std::io::Result<()> {
        use nix::sys::socket::{send, MsgFlags};
        while !self.out.is_empty() {
            let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL;
            match send(self.stream.as_raw_fd(), &self.out, flags) {
                Ok(n) => {
                    self.out.drain(..n);
                }
                Err(nix::errno::Errno::EAGAIN) => return Ok(()),
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        release_burst(&mut self.out);
        Ok(())
    }
}

/// What an emptied send buffer keeps: a burst (thousands of spawn
/// requests or exit reports at once) grows it to megabytes, which a `Vec`
/// would otherwise hold for the rest of the process's life.
const KEPT_BUFFER: usize = 64 * 1024;

/// Gives back the memory of an emptied buffer past [`KEPT_BUFFER`].
fn release_burst(buf: &mut Vec<u8>) {
    if buf.is_empty() && buf.capacity() > KEPT_BUFFER {
        buf.shrink_to(KEPT_BUFFER);
    }
}

/// A spawn whose exec has not reported yet.
struct Pending {
    tag: u64,
    conn: u64,
    forked: Forked,
}

struct Server {
    control: PathBuf,
    boot_id: Option<String>,
    children: BTreeMap<u32, Child>,
    /// Children of an earlier keeper, watched through a pidfd.
    orphans: BTreeMap<u32, OwnedFd>,
    pending: BTreeMap<u32, Pending>,
    /// The most spawns pending at once since the last burst ended.
    pending_peak: usize,
    exits: BTreeMap<u32, ExitRecord>,
    /// Exits whose record could not be written (a full disk): held in
    /// memory, so the keeper stays until a controller took them.
    unsaved: std::collections::BTreeSet<u32>,
    conns: Vec<Conn>,
    next_conn: u64,
    ever_connected: bool,
    shutdown: bool,
    fence: super::fence::Fence,
    /// The write ends of children's stdin pipes, held here so that a
    /// controller restart does not close a session's input.
    stdins: BTreeMap<u32, StdinPipe>,
}

/// A child's stdin pipe: what is not written yet, and whether to close it
/// after.
struct StdinPipe {
    file: std::fs::File,
    pending: Vec<u8>,
    close: bool,
}

impl StdinPipe {
    /// Writes what the pipe takes without blocking; false once it must be
    /// dropped (closed on request and flushed, or the reader is gone).
    fn flush(&mut self) -> bool {
        while !self.pending.is_empty() {
            match self.file.write(&self.pending) {
                Ok(0) => return false,
                Ok(n) => {
                    self.pending.drain(..n);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return true,
                // EPIPE: the child closed its stdin or ended.
                Err(_) => return false,
            }
        }
        !self.close
    }
}

/// Runs the keeper until it has no children and no controller.
pub fn serve(control_dir: &Path) -> Result<(), KeeperError> {
    #[cfg(feature = "failpoints")]
    let _scenario = fail::FailScenario::setup();
    let _ = process::become_subreaper();
    check_private_dir(control_dir)?;
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGCHLD);
    mask.thread_block()?;
    let sfd = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)?;
    create_dir(&exits_dir(control_dir))?;
    create_dir(&children_dir(control_dir))?;
    let sock = sock_path(control_dir)?;
    match std::fs::symlink_metadata(socket_path(control_dir)) {
        Ok(m) if m.file_type().is_socket() && m.uid() == nix::unistd::geteuid().as_raw() => {
            // A dead keeper's socket (the controller found nobody answering).
            std::fs::remove_file(&sock.path)?;
        }
        Ok(_) => {
            return Err(KeeperError::NotOurSocket(socket_path(control_dir)));
        }
        Err(_) => {}
    }
    let listener = {
        // Nobody else may connect, whatever the folder's mode.
        let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
        let l = UnixListener::bind(&sock.path);
        nix::sys::stat::umask(old);
        l?
    };
    listener.set_nonblocking(true)?;
    let mut server = Server {
        control: control_dir.to_path_buf(),
        boot_id: process::boot_id(),
        children: BTreeMap::new(),
        orphans: BTreeMap::new(),
        pending: BTreeMap::new(),
        pending_peak: 0,
        exits: BTreeMap::new(),
        unsaved: std::collections::BTreeSet::new(),
        conns: Vec::new(),
        next_conn: 1,
        ever_connected: false,
        shutdown: false,
        fence: super::fence::Fence::default(),
        stdins: BTreeMap::new(),
    };
    server.load_records();
    // Ready: the controller that started us waits for this line.
    {
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(b"ready\n");
        let _ = out.flush();
    }
    if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        // SAFETY: dup2 onto our own stdout.
        unsafe {
            libc::dup2(null.as_raw_fd(), 1);
        }
    }
    server.run(&listener, &sfd)
}

impl Server {
    /// Exits recorded by an earlier keeper, and its children: those still
    /// alive are watched, those gone get an exit record (code unknown,
    /// unless their new parent, the controller, recorded it).
    fn load_records(&mut self) {
        let exits = exits_dir(&self.control);
        if let Ok(entries) = std::fs::read_dir(&exits) {
            for e in entries.flatten() {
                let p = e.path();
                if is_temporary(&p) {
                    let _ = std::fs::remove_file(&p);
                    continue;
                }
                match read_json::<ExitRecord>(&p) {
                    Some(rec) => {
                        self.exits.insert(rec.child.pid, rec);
                    }
                    None => tracing::warn!("ignoring unreadable exit record {}", p.display()),
                }
            }
        }
        let children = children_dir(&self.control);
        let Ok(entries) = std::fs::read_dir(&children) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            if is_temporary(&p) {
                let _ = std::fs::remove_file(&p);
                continue;
            }
            let Some(mut child) = read_json::<Child>(&p) else {
                let _ = std::fs::remove_file(&p);
                continue;
            };
            if child.boot_id.is_none() || child.boot_id != self.boot_id {
                // Another boot: it ended with the machine.
                self.record_exit(child, None);
                continue;
            }
            if self.exits.contains_key(&child.pid) {
                let _ = std::fs::remove_file(&p);
                continue;
            }
            if same_process(child.pid, child.start_ticks) {
                if let Some(fd) = pidfd_open(child.pid) {
                    // Checked again with the pidfd held: the pid cannot be reused now.
                    if same_process(child.pid, child.start_ticks) {
                        child.orphan = true;
                        self.orphans.insert(child.pid, fd);
                        self.children.insert(child.pid, child);
                        continue;
                    }
                }
            }
            self.record_exit(child, None);
        }
    }

    /// Records an exit (keeping a better one the controller wrote) and
    /// reports it to every controller.
    fn record_exit(&mut self, child: Child, status: Option<ExitStatus>) {
        let pid = child.pid;
        self.stdins.remove(&pid);
        let path = exits_dir(&self.control).join(format!("{pid}.json"));
        let rec = match read_json::<ExitRecord>(&path) {
            Some(r) if r.child.start_ticks == child.start_ticks => r,
            _ => {
                let rec = ExitRecord {
                    child,
                    status,
                    at: Utc::now(),
                };
                let saved = serde_json::to_vec(&rec)
                    .map_err(std::io::Error::other)
                    .and_then(|text| write_unsynced(&path, &text));
                if let Err(e) = saved {
                    tracing::error!("cannot record the exit of {pid}: {e}; holding it until a controller takes it");
                    self.unsaved.insert(pid);
                }
                rec
            }
        };
        let _ = std::fs::remove_file(children_dir(&self.control).join(format!("{pid}.json")));
        self.exits.insert(pid, rec.clone());
        let mut dead = Vec::new();
        for c in self.conns.iter_mut().filter(|c| c.hello) {
            if c.queue(&Reply::Exited { exit: rec.clone() }).is_err() {
                dead.push(c.id);
            }
        }
        self.conns.retain(|c| !dead.contains(&c.id));
    }

    fn done(&self) -> bool {
        self.children.is_empty()
            && self.pending.is_empty()
            && self.conns.is_empty()
            && (self.unsaved.is_empty() || self.shutdown)
            && (self.ever_connected || self.shutdown)
    }

    fn run(&mut self, listener: &UnixListener, sfd: &SignalFd) -> Result<(), KeeperError> {
        loop {
            if self.done() {
                return Ok(());
            }
            let conn_ids: Vec<u64> = self.conns.iter().map(|c| c.id).collect();
            let pending_pids: Vec<u32> = self.pending.keys().copied().collect();
            let orphan_pids: Vec<u32> = self.orphans.keys().copied().collect();
            // Stdin pipes the child has not drained yet: written when they take more.
            let full_stdins: Vec<u32> = self
                .stdins
                .iter()
                .filter(|(_, p)| !p.pending.is_empty())
                .map(|(pid, _)| *pid)
                .collect();
            let revents = {
                let mut fds = vec![
                    PollFd::new(listener.as_fd(), PollFlags::POLLIN),
                    PollFd::new(sfd.as_fd(), PollFlags::POLLIN),
                ];
                for c in &self.conns {
                    let mut flags = PollFlags::POLLIN;
                    if !c.out.is_empty() {
                        flags |= PollFlags::POLLOUT;
                    }
                    fds.push(PollFd::new(c.stream.as_fd(), flags));
                }
                for p in self.pending.values() {
                    // SAFETY: the fd lives in `self.pending` for this poll.
                    let fd = unsafe { BorrowedFd::borrow_raw(p.forked.report_fd()) };
                    fds.push(PollFd::new(fd, PollFlags::POLLIN));
                }
                for fd in self.orphans.values() {
                    fds.push(PollFd::new(fd.as_fd(), PollFlags::POLLIN));
                }
                for pid in &full_stdins {
                    if let Some(p) = self.stdins.get(pid) {
                        fds.push(PollFd::new(p.file.as_fd(), PollFlags::POLLOUT));
                    }
                }
                // Nobody came within a minute of the start: give up.
                let idle = !self.ever_connected && self.children.is_empty();
                let timeout = match (idle, self.fence.wait()) {
                    // A fencing deadline wakes the keeper in time.
                    (_, Some(d)) => PollTimeout::from(
                        u16::try_from(d.as_millis().min(60_000)).unwrap_or(60_000),
                    ),
                    (true, None) => PollTimeout::from(60_000u16),
                    (false, None) => PollTimeout::NONE,
                };
                match poll(&mut fds, timeout) {
                    Ok(0) if idle => return Ok(()),
                    Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                    Err(e) => return Err(e.into()),
                }
                fds.iter()
                    .map(|f| f.revents().unwrap_or(PollFlags::empty()))
                    .collect::<Vec<_>>()
            };
            if self.fence.due() {
                let pids: Vec<u32> = self.children.keys().copied().collect();
                super::fence::kill_all(&self.control, &pids);
            }
            let n_conns = conn_ids.len();
            let n_pending = pending_pids.len();
            // Exec outcomes first: a spawn's reply must precede its exit.
            for (i, pid) in pending_pids.iter().enumerate() {
                if !revents[2 + n_conns + i].is_empty() {
                    self.finish_spawn(*pid);
                }
            }
            if !revents[1].is_empty() {
                while let Ok(Some(_)) = sfd.read_signal() {}
                self.reap();
            }
            for (i, pid) in orphan_pids.iter().enumerate() {
                if !revents[2 + n_conns + n_pending + i].is_empty() {
                    self.orphans.remove(pid);
                    if let Some(child) = self.children.remove(pid) {
                        self.record_exit(child, None);
                    }
                }
            }
            let n_orphans = orphan_pids.len();
            for (i, pid) in full_stdins.iter().enumerate() {
                let at = 2 + n_conns + n_pending + n_orphans + i;
                if revents.get(at).is_some_and(|r| !r.is_empty()) {
                    self.flush_stdin(*pid);
                }
            }
            if !revents[0].is_empty() {
                self.accept(listener);
            }
            for (i, id) in conn_ids.iter().enumerate() {
                let flags = revents[2 + i];
                if !flags.is_empty() {
                    self.serve_conn(*id, flags);
                }
            }
        }
    }

    fn reap(&mut self) {
        for (pid, status) in process::reap() {
            if self.pending.contains_key(&pid) {
                // It exec'd (or failed) and already ended: report that first.
                self.finish_spawn(pid);
            }
            if let Some(child) = self.children.remove(&pid) {
                self.record_exit(child, Some(status));
            }
            // Else: an orphaned grandchild, or a child whose exec failed.
        }
    }

    fn accept(&mut self, listener: &UnixListener) {
        let me = nix::unistd::geteuid().as_raw();
        while let Ok((stream, _)) = listener.accept() {
            // Only our own user speaks to us.
            if !peer(&stream).is_ok_and(|(uid, _)| uid == me) {
                continue;
            }
            let _ = stream.set_nonblocking(false);
            let Ok(r) = stream.try_clone() else {
                continue;
            };
            self.ever_connected = true;
            let id = self.next_conn;
            self.next_conn += 1;
            self.conns.push(Conn {
                id,
                stream,
                reader: BufReader::new(r),
                hello: false,
                out: Vec::new(),
            });
        }
    }

    fn conn(&mut self, id: u64) -> Option<&mut Conn> {
        self.conns.iter_mut().find(|c| c.id == id)
    }

    fn drop_conn(&mut self, id: u64) {
        self.conns.retain(|c| c.id != id);
    }

    fn serve_conn(&mut self, id: u64, flags: PollFlags) {
        let Some(conn) = self.conn(id) else { return };
        if flags.contains(PollFlags::POLLOUT) && conn.flush().is_err() {
            self.drop_conn(id);
            return;
        }
        if !flags.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR) {
            return;
        }
        loop {
            let Some(conn) = self.conn(id) else { return };
            let mut line = String::new();
            // Bounded: a request is a spawn, at most a few hundred KiB.
            match (&mut conn.reader).take(16 << 20).read_line(&mut line) {
                Ok(0) | Err(_) => {
                    self.drop_conn(id);
                    return;
                }
                Ok(_) => {}
            }
            let ok = match serde_json::from_str::<Request>(&line) {
                Ok(req) => self.handle(id, req),
                Err(_) => false,
            };
            if !ok {
                self.drop_conn(id);
                return;
            }
            // Requests that arrived together sit in the reader's buffer,
            // where poll() cannot see them: handle them all now.
            match self.conn(id) {
                Some(c) if !c.reader.buffer().is_empty() => continue,
                _ => return,
            }
        }
    }

    /// Handles one request; false drops the connection.
    fn handle(&mut self, id: u64, req: Request) -> bool {
        match req {
            Request::Hello { protocol } => {
                let children: Vec<Child> = self.children.values().cloned().collect();
                let exits: Vec<ExitRecord> = self.exits.values().cloned().collect();
                let Some(conn) = self.conn(id) else {
                    return false;
                };
                if protocol != PROTOCOL {
                    let _ = conn.queue(&Reply::Refused {
                        message: format!(
                            "this keeper speaks protocol {PROTOCOL}, the controller {protocol}; \
                             stop the old sessions with `sessionlet down` before upgrading"
                        ),
                    });
                    return false;
                }
                conn.hello = true;
                conn.queue(&Reply::Welcome {
                    protocol: PROTOCOL,
                    keeper_pid: std::process::id(),
                    children,
                    exits,
                })
                .is_ok()
            }
            Request::Spawn {
                tag,
                identity,
                request,
            } => {
                if let Some(reply) = self.spawn(id, tag, identity, &request) {
                    return self.conn(id).is_some_and(|c| c.queue(&reply).is_ok());
                }
                true
            }
            Request::Ack { pid } => {
                // No reply: the controller acknowledges without waiting.
                self.exits.remove(&pid);
                self.unsaved.remove(&pid);
                let _ = std::fs::remove_file(exits_dir(&self.control).join(format!("{pid}.json")));
                true
            }
            Request::Shutdown => {
                self.shutdown = true;
                self.conn(id).is_some_and(|c| c.queue(&Reply::Ok).is_ok())
            }
            Request::Fence { within_ms } => {
                match within_ms {
                    Some(ms) => self.fence.arm(Duration::from_millis(ms)),
                    None => self.fence.disarm(),
                }
                self.conn(id).is_some_and(|c| c.queue(&Reply::Ok).is_ok())
            }
            Request::Write { pid, data } => {
                if let Some(p) = self.stdins.get_mut(&pid) {
                    p.pending.extend_from_slice(data.as_bytes());
                }
                self.flush_stdin(pid);
                true
            }
            Request::CloseStdin { pid } => {
                if let Some(p) = self.stdins.get_mut(&pid) {
                    p.close = true;
                }
                self.flush_stdin(pid);
                true
            }
        }
    }

    /// Forks, records, releases; the reply comes once the exec reported
    /// (`None` now), or at once for a failure.
    fn spawn(
        &mut self,
        conn: u64,
        tag: u64,
        identity: Identity,
        req: &SpawnRequest,
    ) -> Option<Reply> {
        if self.fence.refuses() {
            return Some(Reply::SpawnFailed {
                tag,
                error: SpawnError {
                    reason: crate::core::Reason::SpawnFailed,
                    message: super::fence::REFUSED.to_string(),
                },
            });
        }
        let mut forked = match fork::fork(req) {
            Ok(f) => f,
            Err(error) => return Some(Reply::SpawnFailed { tag, error }),
        };
        let pid = forked.pid;
        crash_point("keeper-after-fork");
        let child = Child {
            pid,
            start_ticks: process::start_ticks(pid),
            boot_id: self.boot_id.clone(),
            identity,
            started_at: Utc::now(),
            stdout: req.stdout.clone(),
            stderr: req.stderr.clone(),
            orphan: false,
        };
        let path = children_dir(&self.control).join(format!("{pid}.json"));
        let recorded = serde_json::to_vec(&child)
            .map_err(std::io::Error::other)
            .and_then(|text| write_unsynced(&path, &text));
        if let Err(e) = recorded {
            // Never run what is not recorded: the child dies unreleased.
            drop(forked);
            let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid as i32), None);
            return Some(Reply::SpawnFailed {
                tag,
                error: SpawnError {
                    reason: crate::core::Reason::SpawnFailed,
                    message: format!("cannot record the child in {}: {e}", path.display()),
                },
            });
        }
        crash_point("keeper-after-registry");
        if let Err(e) = forked.release() {
            let _ = std::fs::remove_file(&path);
            drop(forked);
            let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid as i32), None);
            return Some(Reply::SpawnFailed {
                tag,
                error: SpawnError {
                    reason: crate::core::Reason::SpawnFailed,
                    message: format!("cannot release the child: {e}"),
                },
            });
        }
        self.children.insert(pid, child);
        if let Some(file) = forked.stdin.take() {
            // Never block the keeper on a child that does not read.
            let _ = nix::fcntl::fcntl(
                &file,
                nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
            );
            // The first input (an agent's first message) comes as a file.
            let pending = req
                .stdin
                .as_ref()
                .and_then(|p| std::fs::read(p).ok())
                .unwrap_or_default();
            self.stdins.insert(
                pid,
                StdinPipe {
                    file,
                    pending,
                    close: false,
                },
            );
            self.flush_stdin(pid);
        }
        self.pending.insert(pid, Pending { tag, conn, forked });
        self.pending_peak = self.pending_peak.max(self.pending.len());
        None
    }

    /// Writes what a stdin pipe holds; drops it when it is done or broken.
    fn flush_stdin(&mut self, pid: u32) {
        if let Some(p) = self.stdins.get_mut(&pid) {
            if !p.flush() {
                self.stdins.remove(&pid);
            }
        }
    }

    /// The exec of `pid` reported: answer its spawn.
    fn finish_spawn(&mut self, pid: u32) {
        let Some(mut p) = self.pending.remove(&pid) else {
            return;
        };
        if self.pending.is_empty() && self.pending_peak > super::heap::BURST {
            self.pending_peak = 0;
            super::heap::give_back();
        }
        let reply = match p.forked.outcome() {
            Outcome::Running => match self.children.get(&pid) {
                Some(child) => Reply::Spawned {
                    tag: p.tag,
                    child: child.clone(),
                },
                None => return,
            },
            Outcome::Failed(error) => {
                // It exits at once; its exit is not a session's.
                self.children.remove(&pid);
                let _ =
                    std::fs::remove_file(children_dir(&self.control).join(format!("{pid}.json")));
                Reply::SpawnFailed { tag: p.tag, error }
            }
        };
        let conn = p.conn;
        let ok = self.conn(conn).map(|c| c.queue(&reply).is_ok());
        if ok == Some(false) {
            self.drop_conn(conn);
        }
    }
}

fn pidfd_open(pid: u32) -> Option<OwnedFd> {
    // SAFETY: a plain syscall; the returned fd is ours.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::c_int, 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: a new descriptor owned here.
    Some(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

// ---------------------------------------------------------------- the client

/// Errors talking to the keeper.
#[derive(Debug, thiserror::Error)]
pub enum KeeperError {
    /// The socket failed.
    #[error("keeper connection: {0}")]
    Io(#[from] std::io::Error),
    /// The keeper said something unexpected.
    #[error("keeper protocol: {0}")]
    Protocol(String),
    /// Something answers that is not our keeper, or could be tampered with.
    #[error("untrusted keeper: {0}")]
    Untrusted(String),
    /// A system call failed.
    #[error("keeper: {0}")]
    Os(#[from] nix::errno::Errno),
    /// Something that is not our socket is where the keeper's goes.
    #[error("{} exists and is not our socket; remove it and start again", .0.display())]
    NotOurSocket(PathBuf),
    /// Nothing answered in time.
    #[error("the keeper at {0} did not answer within {1:?}; if it is stuck, kill it (its pid is in keeper.log)")]
    Timeout(PathBuf, Duration),
}

/// What the keeper tells the controller, in order.
#[derive(Debug)]
pub enum FromKeeper {
    /// A spawn (by tag) started this child.
    Spawned {
        /// The request's tag.
        tag: u64,
        /// The child.
        child: Child,
    },
    /// A spawn (by tag) failed.
    SpawnFailed {
        /// The request's tag.
        tag: u64,
        /// Why.
        error: SpawnError,
    },
    /// A child ended.
    Exited(ExitRecord),
    /// The connection closed: the keeper died.
    Closed,
}

/// A greeting: what the keeper has.
#[derive(Debug, Default)]
pub struct Welcome {
    /// The keeper's pid.
    pub keeper_pid: u32,
    /// Its live children.
    pub children: Vec<Child>,
    /// Exits not yet acknowledged.
    pub exits: Vec<ExitRecord>,
}

/// The controller's connection to its keeper.
pub struct Keeper {
    stream: UnixStream,
    /// Bytes read past the greeting.
    leftover: Vec<u8>,
    /// What the keeper had when we connected.
    pub welcome: Welcome,
    /// The keeper process, when this controller started it (our child: reap it).
    pub started: Option<u32>,
}

impl Keeper {
    /// Connects to the keeper of `control_dir`, starting one if there is none.
    pub fn connect_or_start(control_dir: &Path) -> Result<Keeper, KeeperError> {
        check_private_dir(control_dir)?;
        match Self::connect(control_dir) {
            Ok(k) => return Ok(k),
            Err(KeeperError::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
                ) => {}
            Err(e) => return Err(e),
        }
        let pid = Self::start(control_dir)?;
        let mut k = Self::connect(control_dir)?;
        k.started = Some(pid);
        Ok(k)
    }

    /// Starts a keeper and waits (bounded) for its "ready" line.
    fn start(control_dir: &Path) -> Result<u32, KeeperError> {
        let exe = std::env::current_exe()?;
        let log = super::files::open_append(&control_dir.join("keeper.log"))?;
        let mut cmd = std::process::Command::new(exe);
        cmd.arg("keeper")
            .arg("--control-dir")
            .arg(control_dir)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(log);
        use std::os::unix::process::CommandExt;
        // Its own session: a terminal's ^C or a killed process group of the
        // controller does not reach the keeper or the sessions.
        // SAFETY: setsid is async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                nix::unistd::setsid().map_err(std::io::Error::from)?;
                Ok(())
            });
        }
        let mut child = cmd.spawn()?;
        let pid = child.id();
        let Some(mut out) = child.stdout.take() else {
            return Err(KeeperError::Protocol("the keeper has no stdout".into()));
        };
        // Dropping the handle neither kills nor waits: the controller reaps it.
        drop(child);
        let mut fds = [PollFd::new(out.as_fd(), PollFlags::POLLIN)];
        let ms = u16::try_from(START_TIMEOUT.as_millis()).unwrap_or(u16::MAX);
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(n) if n > 0 => {}
            _ => {
                return Err(KeeperError::Timeout(
                    socket_path(control_dir),
                    START_TIMEOUT,
                ))
            }
        }
        let mut buf = [0u8; 6];
        let n = out.read(&mut buf)?;
        if &buf[..n] != b"ready\n" {
            return Err(KeeperError::Protocol(format!(
                "the keeper did not start; see {}",
                control_dir.join("keeper.log").display()
            )));
        }
        Ok(pid)
    }

    /// Connects to a running keeper and reads its greeting.
    pub fn connect(control_dir: &Path) -> Result<Keeper, KeeperError> {
        let path = socket_path(control_dir);
        check_socket_file(&path)?;
        let sock = sock_path(control_dir)?;
        let mut stream = UnixStream::connect(&sock.path)?;
        let me = nix::unistd::geteuid().as_raw();
        let (uid, _) = peer(&stream)?;
        if uid != me {
            return Err(KeeperError::Untrusted(format!(
                "{} is served by uid {uid}, not {me}; nothing was sent to it",
                path.display()
            )));
        }
        stream.set_read_timeout(Some(ANSWER_TIMEOUT))?;
        send(&mut stream, &Request::Hello { protocol: PROTOCOL })?;
        let mut reader = BufReader::new(stream.try_clone()?);
        let mut line = String::new();
        match (&mut reader).take(256 << 20).read_line(&mut line) {
            Ok(0) => {
                return Err(KeeperError::Protocol(
                    "the keeper closed the connection".into(),
                ))
            }
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Err(KeeperError::Timeout(path, ANSWER_TIMEOUT))
            }
            Err(e) => return Err(e.into()),
        }
        let welcome = match serde_json::from_str::<Reply>(&line) {
            Ok(Reply::Welcome {
                keeper_pid,
                children,
                exits,
                ..
            }) => Welcome {
                keeper_pid,
                children,
                exits,
            },
            Ok(Reply::Refused { message }) => return Err(KeeperError::Protocol(message)),
            Ok(other) => {
                return Err(KeeperError::Protocol(format!(
                    "expected a welcome, got {other:?}"
                )))
            }
            Err(e) => return Err(KeeperError::Protocol(e.to_string())),
        };
        stream.set_read_timeout(None)?;
        Ok(Keeper {
            leftover: reader.buffer().to_vec(),
            stream,
            welcome,
            started: None,
        })
    }

    /// Starts the connection's reader and writer on the tokio runtime.
    pub fn start_io(
        self,
    ) -> Result<(KeeperTx, tokio::sync::mpsc::UnboundedReceiver<FromKeeper>), KeeperError> {
        self.stream.set_nonblocking(true)?;
        let stream = tokio::net::UnixStream::from_std(self.stream)?;
        let (read, write) = stream.into_split();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let leftover = self.leftover;
        tokio::spawn(async move {
            use tokio::io::{AsyncBufReadExt, AsyncReadExt};
            let mut reader = tokio::io::BufReader::new(AsyncReadExt::chain(
                std::io::Cursor::new(leftover),
                read,
            ));
            loop {
                let mut line = String::new();
                match reader.read_line(&mut line).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                let msg = match serde_json::from_str::<Reply>(&line) {
                    Ok(Reply::Spawned { tag, child }) => FromKeeper::Spawned { tag, child },
                    Ok(Reply::SpawnFailed { tag, error }) => FromKeeper::SpawnFailed { tag, error },
                    Ok(Reply::Exited { exit }) => FromKeeper::Exited(exit),
                    _ => continue,
                };
                if tx.send(msg).is_err() {
                    return;
                }
            }
            let _ = tx.send(FromKeeper::Closed);
        });
        // Requests are written at once, from the caller, without blocking:
        // a spawn must reach the keeper before the controller goes on to
        // write statuses. What the socket does not take now waits in the
        // outbox for the flusher, in order.
        let write = std::sync::Arc::new(write);
        let outbox = std::sync::Arc::new(std::sync::Mutex::new(Outbox::default()));
        let wake = std::sync::Arc::new(tokio::sync::Notify::new());
        {
            let (write, outbox, wake) = (write.clone(), outbox.clone(), wake.clone());
            tokio::spawn(async move {
                loop {
                    wake.notified().await;
                    loop {
                        let pending = outbox.lock().map(|o| !o.bytes.is_empty()).unwrap_or(false);
                        if !pending {
                            break;
                        }
                        if write.writable().await.is_err() {
                            return;
                        }
                        if let Ok(mut o) = outbox.lock() {
                            if o.flush(&write).is_err() {
                                o.broken = true;
                                return;
                            }
                        }
                    }
                }
            });
        }
        Ok((
            KeeperTx {
                write,
                outbox,
                wake,
            },
            rx,
        ))
    }
}

/// Bytes the socket did not take yet.
#[derive(Default)]
struct Outbox {
    bytes: Vec<u8>,
    broken: bool,
}

impl Outbox {
    /// Writes what the socket takes now.
    fn flush(&mut self, write: &tokio::net::unix::OwnedWriteHalf) -> std::io::Result<()> {
        while !self.bytes.is_empty() {
            match write.try_write(&self.bytes) {
                Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.bytes.drain(..n);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        release_burst(&mut self.bytes);
        Ok(())
    }
}

/// What the controller asks of its keeper, none of it waiting for an
/// answer (answers and exits come back on the event stream). [`KeeperTx`]
/// talks to the real keeper; the controller's routing tests use a fake
/// that records the requests.
pub trait KeeperClient: Send + Sync {
    /// Asks for a spawn; the answer comes tagged on the event stream.
    fn spawn(&self, tag: u64, identity: Identity, request: SpawnRequest) -> bool;
    /// Acknowledges an exit once its status is saved.
    fn ack(&self, pid: u32) -> bool;
    /// Appends `data` to child `pid`'s stdin pipe.
    fn write_stdin(&self, pid: u32, data: String) -> bool;
    /// Closes child `pid`'s stdin pipe once its pending input is written.
    fn close_stdin(&self, pid: u32) -> bool;
    /// Tells the keeper to exit after its last child; waits (bounded)
    /// until the request is written.
    fn shutdown(&self) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>>;
}

impl KeeperClient for KeeperTx {
    fn spawn(&self, tag: u64, identity: Identity, request: SpawnRequest) -> bool {
        KeeperTx::spawn(self, tag, identity, request)
    }
    fn ack(&self, pid: u32) -> bool {
        KeeperTx::ack(self, pid)
    }
    fn write_stdin(&self, pid: u32, data: String) -> bool {
        KeeperTx::write_stdin(self, pid, data)
    }
    fn close_stdin(&self, pid: u32) -> bool {
        KeeperTx::close_stdin(self, pid)
    }
    fn shutdown(&self) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>> {
        Box::pin(KeeperTx::shutdown(self))
    }
}

/// Sends requests to the keeper without waiting.
#[derive(Clone)]
pub struct KeeperTx {
    write: std::sync::Arc<tokio::net::unix::OwnedWriteHalf>,
    outbox: std::sync::Arc<std::sync::Mutex<Outbox>>,
    wake: std::sync::Arc<tokio::sync::Notify>,
}

impl KeeperTx {
    /// Writes a request now (what the socket does not take follows, in
    /// order); false when the connection is broken.
    fn send(&self, req: &Request) -> bool {
        let Ok(mut line) = serde_json::to_vec(req) else {
            return false;
        };
        line.push(b'\n');
        let Ok(mut o) = self.outbox.lock() else {
            return false;
        };
        if o.broken {
            return false;
        }
        o.bytes.extend_from_slice(&line);
        if o.flush(&self.write).is_err() {
            o.broken = true;
            return false;
        }
        if !o.bytes.is_empty() {
            self.wake.notify_one();
        }
        true
    }

    /// Asks for a spawn; the answer comes tagged on the event stream.
    pub fn spawn(&self, tag: u64, identity: Identity, request: SpawnRequest) -> bool {
        let ok = self.send(&Request::Spawn {
            tag,
            identity,
            request: Box::new(request),
        });
        if ok {
            // The request is on its way; no status names the child yet.
            crash_point("controller-after-spawn-request");
        }
        ok
    }

    /// Acknowledges an exit once its status is saved.
    pub fn ack(&self, pid: u32) -> bool {
        self.send(&Request::Ack { pid })
    }

    /// Appends `data` to child `pid`'s stdin pipe (which the keeper holds).
    pub fn write_stdin(&self, pid: u32, data: String) -> bool {
        self.send(&Request::Write { pid, data })
    }

    /// Closes child `pid`'s stdin pipe once its pending input is written.
    pub fn close_stdin(&self, pid: u32) -> bool {
        self.send(&Request::CloseStdin { pid })
    }

    /// Tells the keeper to exit once its last child is gone; waits
    /// (bounded) until everything queued is written.
    pub async fn shutdown(&self) {
        if !self.send(&Request::Shutdown) {
            return;
        }
        let deadline = tokio::time::Instant::now() + ANSWER_TIMEOUT;
        loop {
            let pending = self
                .outbox
                .lock()
                .map(|o| !o.bytes.is_empty() && !o.broken)
                .unwrap_or(false);
            if !pending || tokio::time::Instant::now() >= deadline {
                return;
            }
            if tokio::time::timeout_at(deadline, self.write.writable())
                .await
                .is_err()
            {
                return;
            }
            if let Ok(mut o) = self.outbox.lock() {
                let _ = o.flush(&self.write);
            }
        }
    }
}

fn send<T: Serialize>(stream: &mut UnixStream, msg: &T) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(msg).map_err(std::io::Error::other)?;
    line.push(b'\n');
    stream.write_all(&line)
}

/// Writes an exit record the way the keeper does, for an orphan the
/// controller reaped itself (as subreaper, after the keeper died).
pub fn record_reaped_exit(control_dir: &Path, child: Child, status: ExitStatus) {
    let pid = child.pid;
    let rec = ExitRecord {
        child,
        status: Some(status),
        at: Utc::now(),
    };
    if let Ok(text) = serde_json::to_vec(&rec) {
        let path = exits_dir(control_dir).join(format!("{pid}.json"));
        if let Err(e) = write_unsynced(&path, &text) {
            tracing::error!("cannot record the exit of {pid}: {e}");
        }
    }
}

/// Removes an exit record the controller saved itself.
pub fn remove_exit_record(control_dir: &Path, pid: u32) {
    let _ = std::fs::remove_file(exits_dir(control_dir).join(format!("{pid}.json")));
    let _ = std::fs::remove_file(children_dir(control_dir).join(format!("{pid}.json")));
}
