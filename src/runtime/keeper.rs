//! The keeper: one small, long-lived parent of every session.
//!
//! The controller is what users restart, upgrade and occasionally crash; the
//! keeper is what lets sessions (and their exit statuses) outlive it. It forks
//! sessions on request, reaps them, records each exit in a file under
//! `.sessionlet/exits/` and reports it to the controller, which acknowledges
//! it once handled. A controller that starts finds the keeper (or starts one),
//! learns which children are alive and which exits it missed, and carries on.
//!
//! One keeper serves all sessions, so surviving a controller crash costs one
//! process, not one per session. It is the same binary (`sessionlet keeper`),
//! single-threaded, without an async runtime.
//!
//! Protocol: JSON lines over a Unix socket in the abstract namespace (no path
//! length limit, nothing left on disk), accepted only from the keeper's own
//! uid. A controller opens two connections: `command` (request/reply: spawn,
//! ack, shutdown) and `events` (the keeper pushes exits).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use serde::{Deserialize, Serialize};

use super::files::create_dir;
use super::process::{self, SpawnError, SpawnRequest};
use crate::core::ExitStatus;

/// A child of the keeper.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChildId {
    /// Its pid.
    pub pid: u32,
    /// Its start time in clock ticks since boot (guards against pid reuse).
    pub start_ticks: Option<u64>,
}

/// An exit the keeper saw.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExitRecord {
    /// Which child.
    pub child: ChildId,
    /// How it ended.
    pub status: ExitStatus,
    /// When it was reaped.
    pub at: DateTime<Utc>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "camelCase")]
enum Request {
    Hello { role: Role },
    Spawn { request: Box<SpawnRequest> },
    Ack { pid: u32 },
    Shutdown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
enum Role {
    Command,
    Events,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "camelCase")]
enum Reply {
    Welcome {
        children: Vec<ChildId>,
        keeper_pid: u32,
    },
    Spawned {
        child: ChildId,
    },
    SpawnFailed {
        error: SpawnError,
    },
    Ok,
    Exited {
        exit: ExitRecord,
    },
}

/// The socket name of the keeper serving `control_dir`.
fn socket_addr(control_dir: &Path) -> std::io::Result<SocketAddr> {
    let key = super::catalog::spec_hash(&control_dir.to_string_lossy());
    SocketAddr::from_abstract_name(format!("sessionlet-keeper-{key:016x}").as_bytes())
}

fn exits_dir(control_dir: &Path) -> PathBuf {
    control_dir.join("exits")
}

// ---------------------------------------------------------------- the keeper

struct Conn {
    stream: UnixStream,
    reader: BufReader<UnixStream>,
    role: Option<Role>,
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
        Ok(())
    }
}

/// Runs the keeper until it has no children and no controller.
pub fn serve(control_dir: &Path) -> anyhow::Result<()> {
    let _ = process::become_subreaper();
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGCHLD);
    mask.thread_block()?;
    let sfd = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)?;
    let listener = UnixListener::bind_addr(&socket_addr(control_dir)?)?;
    listener.set_nonblocking(true)?;
    let exits_dir = exits_dir(control_dir);
    create_dir(&exits_dir)?;
    // Exits recorded by an earlier keeper and not yet acknowledged.
    let mut exits: BTreeMap<u32, ExitRecord> = BTreeMap::new();
    for e in std::fs::read_dir(&exits_dir)?.flatten() {
        if let Ok(text) = std::fs::read_to_string(e.path()) {
            if let Ok(rec) = serde_json::from_str::<ExitRecord>(&text) {
                exits.insert(rec.child.pid, rec);
            }
        }
    }
    let mut children: BTreeMap<u32, ChildId> = BTreeMap::new();
    let mut conns: Vec<Conn> = Vec::new();
    let mut ever_connected = false;
    let mut shutdown = false;
    let my_uid = nix::unistd::getuid().as_raw();
    loop {
        if children.is_empty() && conns.is_empty() && (ever_connected || shutdown) {
            return Ok(());
        }
        let (ready_listener, ready_sfd, ready_conns) = {
            let mut fds = vec![
                PollFd::new(listener.as_fd(), PollFlags::POLLIN),
                PollFd::new(sfd.as_fd(), PollFlags::POLLIN),
            ];
            for c in &conns {
                let mut flags = PollFlags::POLLIN;
                if !c.out.is_empty() {
                    flags |= PollFlags::POLLOUT;
                }
                fds.push(PollFd::new(c.stream.as_fd(), flags));
            }
            // Nobody came within a minute of the start: give up.
            let timeout = if ever_connected || !children.is_empty() {
                PollTimeout::NONE
            } else {
                PollTimeout::from(60_000u16)
            };
            match poll(&mut fds, timeout) {
                Ok(0) if !ever_connected && children.is_empty() => return Ok(()),
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
            let revents = |f: &PollFd| f.revents().unwrap_or(PollFlags::empty());
            (
                !revents(&fds[0]).is_empty(),
                !revents(&fds[1]).is_empty(),
                fds[2..].iter().map(revents).collect::<Vec<_>>(),
            )
        };
        let mut drop_conns = Vec::new();
        if ready_sfd {
            while let Ok(Some(_)) = sfd.read_signal() {}
            for (pid, status) in process::reap() {
                let Some(child) = children.remove(&pid) else {
                    continue; // an orphaned grandchild
                };
                let rec = ExitRecord {
                    child,
                    status,
                    at: Utc::now(),
                };
                if let Ok(text) = serde_json::to_vec(&rec) {
                    // Atomic but not fsynced: the record must survive the
                    // controller (and this keeper), not a power cut, which
                    // ends every session anyway. Reporting is not delayed.
                    let _ = write_unsynced(&exits_dir.join(format!("{pid}.json")), &text);
                }
                exits.insert(pid, rec.clone());
                for (i, c) in conns.iter_mut().enumerate() {
                    if c.role == Some(Role::Events)
                        && c.queue(&Reply::Exited { exit: rec.clone() }).is_err()
                    {
                        drop_conns.push(i);
                    }
                }
            }
        }
        if ready_listener {
            while let Ok((stream, _)) = listener.accept() {
                let same_uid = nix::sys::socket::getsockopt(
                    &stream,
                    nix::sys::socket::sockopt::PeerCredentials,
                )
                .is_ok_and(|c| c.uid() == my_uid);
                if !same_uid {
                    continue;
                }
                let _ = stream.set_nonblocking(false);
                if let Ok(r) = stream.try_clone() {
                    ever_connected = true;
                    conns.push(Conn {
                        stream,
                        reader: BufReader::new(r),
                        role: None,
                        out: Vec::new(),
                    });
                }
            }
        }
        for (i, flags) in ready_conns.into_iter().enumerate() {
            if i >= conns.len() || flags.is_empty() {
                continue;
            }
            let conn = &mut conns[i];
            if flags.contains(PollFlags::POLLOUT) && conn.flush().is_err() {
                drop_conns.push(i);
                continue;
            }
            if !flags.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR) {
                continue;
            }
            loop {
                let mut line = String::new();
                match conn.reader.read_line(&mut line) {
                    Ok(0) | Err(_) => {
                        drop_conns.push(i);
                        break;
                    }
                    Ok(_) => {}
                }
                let reply = match serde_json::from_str::<Request>(&line) {
                    Ok(Request::Hello { role }) => {
                        conn.role = Some(role);
                        let welcome = Reply::Welcome {
                            children: children.values().copied().collect(),
                            keeper_pid: std::process::id(),
                        };
                        if role == Role::Events {
                            let mut ok = conn.queue(&welcome).is_ok();
                            for rec in exits.values() {
                                ok = ok && conn.queue(&Reply::Exited { exit: rec.clone() }).is_ok();
                            }
                            if !ok {
                                drop_conns.push(i);
                                break;
                            }
                            None
                        } else {
                            Some(welcome)
                        }
                    }
                    Ok(Request::Spawn { request }) => Some(match process::spawn(&request) {
                        Ok(pid) => {
                            let child = ChildId {
                                pid,
                                start_ticks: process::start_ticks(pid),
                            };
                            children.insert(pid, child);
                            Reply::Spawned { child }
                        }
                        Err(error) => Reply::SpawnFailed { error },
                    }),
                    Ok(Request::Ack { pid }) => {
                        // No reply: the controller acknowledges without waiting.
                        exits.remove(&pid);
                        let _ = std::fs::remove_file(exits_dir.join(format!("{pid}.json")));
                        None
                    }
                    Ok(Request::Shutdown) => {
                        shutdown = true;
                        Some(Reply::Ok)
                    }
                    Err(_) => {
                        drop_conns.push(i);
                        break;
                    }
                };
                if let Some(reply) = reply {
                    if conn.queue(&reply).is_err() {
                        drop_conns.push(i);
                        break;
                    }
                }
                // Requests that arrived together sit in the reader's buffer, where
                // poll() cannot see them: handle them all now.
                if conn.reader.buffer().is_empty() {
                    break;
                }
            }
        }
        drop_conns.sort_unstable();
        drop_conns.dedup();
        for i in drop_conns.into_iter().rev() {
            conns.remove(i);
        }
    }
}

/// Temporary file and rename, without fsync.
fn write_unsynced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("json.tmp");
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(super::files::FILE_MODE)
        .open(&tmp)?
        .write_all(bytes)?;
    std::fs::rename(&tmp, path)
}

fn send<T: Serialize>(stream: &mut UnixStream, msg: &T) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(msg).map_err(std::io::Error::other)?;
    line.push(b'\n');
    stream.write_all(&line)
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
}

/// The controller's connection to its keeper.
pub struct Keeper {
    stream: UnixStream,
    reader: BufReader<UnixStream>,
    control_dir: PathBuf,
    /// The keeper's pid.
    pub pid: u32,
    /// Children alive when the controller connected.
    pub children: Vec<ChildId>,
}

impl Keeper {
    /// Connects to the keeper of `control_dir`, starting one if there is none.
    pub fn connect_or_start(control_dir: &Path) -> Result<Keeper, KeeperError> {
        if let Ok(k) = Self::connect(control_dir) {
            return Ok(k);
        }
        let exe = std::env::current_exe()?;
        let log = super::files::open_append(&control_dir.join("keeper.log"))?;
        let mut cmd = std::process::Command::new(exe);
        cmd.arg("keeper")
            .arg("--control-dir")
            .arg(control_dir)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(log);
        use std::os::unix::process::CommandExt;
        // Its own session: a terminal's ^C or a killed process group of the
        // controller does not reach the keeper or the sessions.
        unsafe {
            cmd.pre_exec(|| {
                nix::unistd::setsid().map_err(std::io::Error::from)?;
                Ok(())
            });
        }
        cmd.spawn()?;
        // Startup handshake: the socket exists once the keeper has bound it.
        let start = std::time::Instant::now();
        loop {
            match Self::connect(control_dir) {
                Ok(k) => return Ok(k),
                Err(e) if start.elapsed() > Duration::from_secs(10) => return Err(e),
                Err(_) => std::thread::sleep(Duration::from_millis(2)),
            }
        }
    }

    fn connect(control_dir: &Path) -> Result<Keeper, KeeperError> {
        let mut stream = UnixStream::connect_addr(&socket_addr(control_dir)?)?;
        let reader = BufReader::new(stream.try_clone()?);
        send(
            &mut stream,
            &Request::Hello {
                role: Role::Command,
            },
        )?;
        let mut k = Keeper {
            stream,
            reader,
            control_dir: control_dir.to_path_buf(),
            pid: 0,
            children: Vec::new(),
        };
        match k.read()? {
            Reply::Welcome {
                children,
                keeper_pid,
            } => {
                k.children = children;
                k.pid = keeper_pid;
                Ok(k)
            }
            other => Err(KeeperError::Protocol(format!(
                "expected welcome, got {other:?}"
            ))),
        }
    }

    fn read(&mut self) -> Result<Reply, KeeperError> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(KeeperError::Protocol(
                "the keeper closed the connection".into(),
            ));
        }
        serde_json::from_str(&line).map_err(|e| KeeperError::Protocol(e.to_string()))
    }

    /// Asks the keeper to start a session.
    pub fn spawn(&mut self, request: &SpawnRequest) -> Result<ChildId, SpawnError> {
        let fail = |e: KeeperError| SpawnError {
            reason: crate::core::Reason::SpawnFailed,
            message: e.to_string(),
        };
        send(
            &mut self.stream,
            &Request::Spawn {
                request: Box::new(request.clone()),
            },
        )
        .map_err(|e| fail(e.into()))?;
        match self.read().map_err(fail)? {
            Reply::Spawned { child } => Ok(child),
            Reply::SpawnFailed { error } => Err(error),
            other => Err(fail(KeeperError::Protocol(format!(
                "unexpected reply {other:?}"
            )))),
        }
    }

    /// Tells the keeper an exit has been handled (no reply is awaited).
    pub fn ack(&mut self, pid: u32) -> Result<(), KeeperError> {
        send(&mut self.stream, &Request::Ack { pid })?;
        Ok(())
    }

    /// Tells the keeper to exit once its last child is gone.
    pub fn shutdown(&mut self) -> Result<(), KeeperError> {
        send(&mut self.stream, &Request::Shutdown)?;
        self.read().map(|_| ())
    }

    /// Opens the events connection: every unacknowledged exit, then each new
    /// one, arrives on the returned channel. Needs a tokio runtime.
    pub fn events(&self) -> Result<tokio::sync::mpsc::UnboundedReceiver<ExitRecord>, KeeperError> {
        let mut stream = UnixStream::connect_addr(&socket_addr(&self.control_dir)?)?;
        send(&mut stream, &Request::Hello { role: Role::Events })?;
        stream.set_nonblocking(true)?;
        let stream = tokio::net::UnixStream::from_std(stream)?;
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            use tokio::io::AsyncBufReadExt;
            let mut lines = tokio::io::BufReader::new(stream).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if let Ok(Reply::Exited { exit }) = serde_json::from_str::<Reply>(&line) {
                    if tx.send(exit).is_err() {
                        break;
                    }
                }
            }
            tracing::error!("the connection to the keeper closed; exits are no longer reported");
        });
        Ok(rx)
    }
}
