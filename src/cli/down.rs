//! `sessionlet down`: stop every session gracefully and end the keeper, with
//! or without a running controller (also after a `kill -9` of it).
//!
//! With a controller holding the status directory's lock, `down` sends it
//! SIGINT (a drain) and waits for it to exit. When the keeper still has
//! children and no controller runs, `down` runs the controller itself in
//! drain mode: it takes the lock (so no controller starts meanwhile), adopts
//! the keeper's children exactly as a starting controller does (pid and start
//! time checked), stops each with its manifest's `stopSignal` and
//! `terminationGracePeriod` then SIGKILL, writes the final statuses, starts
//! nothing, and tells the keeper to exit after its last child. Every decision
//! is the core's, as in a Ctrl-C drain.

use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::runtime::keeper::{self, Keeper, KeeperError};
use crate::runtime::{lock, Controller, Exit, Options, Signals};

/// Arguments of `down`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  sessionlet down --dir examples/sessions\n  sessionlet down --dir /etc/sessionlet/sessions --status-dir /var/lib/sessionlet"
)]
pub struct Args {
    /// The directory of manifests the controller watches (their stopSignal
    /// and terminationGracePeriod are used).
    #[arg(long, default_value = ".")]
    pub dir: PathBuf,
    /// Where the controller writes statuses (default: the watched directory).
    #[arg(long)]
    pub status_dir: Option<PathBuf>,
}

/// Runs `down`: 0 once nothing is left running, 1 when sessions had to be
/// killed (a second Ctrl-C), 2 on an error.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let status_dir = args.status_dir.clone().unwrap_or_else(|| args.dir.clone());
    let control = status_dir.join(".sessionlet");
    if !control.is_dir() {
        eprintln!(
            "sessionlet: nothing to stop: no controller ever ran on {}",
            status_dir.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(pid) = lock::controller_pid(&control) {
        drain_controller(&control, pid)?;
    }
    // The keeper outlives a killed controller; it may also still be ending
    // after the drain above (it exits once its last child and connection are gone).
    let keeper = match Keeper::connect(&control) {
        Ok(k) => Some(k),
        Err(KeeperError::Io(e))
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            None
        }
        Err(e) => return Err(anyhow::anyhow!("cannot reach the keeper: {e}")),
    };
    let Some(keeper) = keeper else {
        eprintln!("sessionlet: no keeper runs: nothing left to stop");
        return Ok(ExitCode::SUCCESS);
    };
    let keeper_pid = keeper.welcome.keeper_pid;
    let sessions: Vec<String> = keeper
        .welcome
        .children
        .iter()
        .filter(|c| keeper::same_process(c.pid, c.start_ticks))
        .map(|c| c.identity.session.clone())
        .collect();
    // Held while connected, so the keeper's pid cannot be reused under us.
    let keeper_fd = pidfd_open(keeper_pid);
    drop(keeper);
    let mut code = ExitCode::SUCCESS;
    if !sessions.is_empty() {
        eprintln!(
            "sessionlet: no controller runs; stopping {} session(s) gracefully: {}",
            sessions.len(),
            sessions.join(", ")
        );
        code = drain_here(&args)?;
    }
    eprintln!("sessionlet: waiting for the keeper (pid {keeper_pid}) to exit");
    wait_gone(keeper_pid, keeper_fd);
    eprintln!("sessionlet: down: every session is stopped and the keeper has exited");
    Ok(code)
}

/// SIGINT to the controller holding the lock (a graceful drain, whatever
/// its `--keep-sessions`), then waits for it to exit.
fn drain_controller(control: &std::path::Path, pid: u32) -> anyhow::Result<()> {
    // Hold a pidfd first, then check again that this pid holds the lock:
    // between the two, the pid cannot be reused by another process.
    let fd = pidfd_open(pid);
    if lock::controller_pid(control) != Some(pid) {
        return Ok(()); // it exited meanwhile
    }
    eprintln!("sessionlet: asking the controller (pid {pid}) to stop every session gracefully");
    match kill(Pid::from_raw(pid as i32), Signal::SIGINT) {
        Ok(()) => {}
        Err(nix::errno::Errno::ESRCH) => return Ok(()),
        Err(e) => anyhow::bail!("cannot signal the controller (pid {pid}): {e}"),
    }
    wait_gone(pid, fd);
    eprintln!("sessionlet: the controller (pid {pid}) has drained and exited");
    Ok(())
}

/// Runs the controller in drain mode in this process.
fn drain_here(args: &Args) -> anyhow::Result<ExitCode> {
    let opts = Options {
        dir: args.dir.clone(),
        status_dir: args.status_dir.clone(),
        // Nothing to watch: the drain starts nothing.
        poll: true,
        drain: true,
        ..Options::default()
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let exit = runtime.block_on(async {
        // Ctrl-C during `down` kills what is left, as a second SIGINT to a controller does.
        let signals = Signals::install()?;
        let controller = Controller::new(opts)?;
        anyhow::Ok(controller.run(signals).await?)
    })?;
    Ok(match exit {
        Exit::Clean | Exit::SomeFailed => ExitCode::SUCCESS,
        Exit::Forced => ExitCode::from(1),
    })
}

/// A pidfd for `pid`, when the kernel has them (Linux 5.3+).
fn pidfd_open(pid: u32) -> Option<OwnedFd> {
    // SAFETY: a plain syscall; the returned descriptor is ours.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::c_int, 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: a new descriptor owned here.
    Some(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Waits until `pid` has exited: on its pidfd, or else by looking at
/// `/proc` (its start time guards against a reused pid).
fn wait_gone(pid: u32, fd: Option<OwnedFd>) {
    if let Some(fd) = fd {
        loop {
            let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(n) if n > 0 => return,
                Err(nix::errno::Errno::EINTR) | Ok(_) => continue,
                Err(_) => break, // fall back to /proc
            }
        }
    }
    let ticks = crate::runtime::process::start_ticks(pid);
    while keeper::same_process(pid, ticks) {
        std::thread::sleep(Duration::from_millis(50));
    }
}
