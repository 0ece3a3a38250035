//! The keeper's fence (scale-out, issue 15): the node's last line against
//! running a session that another node may now own.
//!
//! The coordinator hands the keeper a deadline before which the node's etcd
//! lease cannot expire (`fence` request: milliseconds from now). Once the
//! deadline passes without a newer one, the keeper kills every session's
//! tree and refuses to start any until a new deadline arrives. The keeper
//! needs no etcd client and no working controller for this: a controller
//! stopped by SIGSTOP, or cut off from etcd, is fenced all the same.
//!
//! A keeper that never received a deadline (no `--coordinator`) never fences.

use std::path::Path;
use std::time::{Duration, Instant};

/// The fence's state inside the keeper.
#[derive(Debug, Default)]
pub struct Fence {
    deadline: Option<Instant>,
    fenced: bool,
}

impl Fence {
    /// A new deadline, `within` from now; lifts a fence.
    pub fn arm(&mut self, within: Duration) {
        self.deadline = Some(Instant::now() + within);
        self.fenced = false;
    }

    /// No more deadlines: a controller without `--coordinator` took over,
    /// and its sessions run whatever etcd says.
    pub fn disarm(&mut self) {
        self.deadline = None;
        self.fenced = false;
    }

    /// How long the keeper's poll may sleep before the fence must be looked
    /// at (`None`: no deadline pending).
    pub fn wait(&self) -> Option<Duration> {
        match self.deadline {
            Some(d) if !self.fenced => Some(d.saturating_duration_since(Instant::now())),
            _ => None,
        }
    }

    /// True once when the deadline has passed: the caller kills everything.
    pub fn due(&mut self) -> bool {
        match self.deadline {
            Some(d) if !self.fenced && Instant::now() >= d => {
                self.fenced = true;
                true
            }
            _ => false,
        }
    }

    /// Spawns are refused while fenced.
    pub fn refuses(&self) -> bool {
        self.fenced
    }
}

/// The message of a spawn refused while fenced.
pub const REFUSED: &str = "the node is fenced: its etcd lease was not renewed before the \
     fencing deadline, so another node may own this session; nothing starts until the \
     controller renews the lease";

/// Kills every pid's process group and the pid itself (SIGKILL: the lease
/// may be about to expire, there is no time for a graceful stop), and
/// records why in `.sessionlet/fenced.json`.
pub fn kill_all(control_dir: &Path, pids: &[u32]) {
    use nix::sys::signal::{kill, killpg, Signal};
    use nix::unistd::Pid;
    for pid in pids {
        let Ok(raw) = i32::try_from(*pid) else {
            continue;
        };
        let _ = killpg(Pid::from_raw(raw), Signal::SIGKILL);
        let _ = kill(Pid::from_raw(raw), Signal::SIGKILL);
    }
    let record = serde_json::json!({
        "at": chrono::Utc::now(),
        "killed": pids,
        "reason": "the fencing deadline passed without a lease renewal from the controller",
    });
    let _ = std::fs::write(control_dir.join("fenced.json"), record.to_string());
    eprintln!(
        "sessionlet keeper: fenced: killed {} session(s); {}",
        pids.len(),
        record["reason"].as_str().unwrap_or_default()
    );
}

/// Sends `within` to the keeper at `socket` (the coordinator's side). A
/// short blocking exchange on its own connection: the keeper answers `ok`.
pub fn send(socket: &Path, within: Duration) -> std::io::Result<()> {
    let ms = u64::try_from(within.as_millis()).unwrap_or(u64::MAX);
    exchange(socket, &serde_json::json!({"op": "fence", "withinMs": ms}))
}

/// Tells the keeper at `socket` to fence no more (a controller started
/// without `--coordinator`: a deadline left by an earlier coordinated run
/// would otherwise kill its sessions).
pub fn disarm(socket: &Path) -> std::io::Result<()> {
    exchange(socket, &serde_json::json!({"op": "fence"}))
}

fn exchange(socket: &Path, request: &serde_json::Value) -> std::io::Result<()> {
    use std::io::{BufRead, Write};
    let mut s = std::os::unix::net::UnixStream::connect(socket)?;
    s.set_read_timeout(Some(Duration::from_millis(500)))?;
    s.set_write_timeout(Some(Duration::from_millis(500)))?;
    writeln!(s, "{request}")?;
    let mut line = String::new();
    std::io::BufReader::new(s).read_line(&mut line)?;
    if line.contains("\"ok\"") {
        Ok(())
    } else {
        Err(std::io::Error::other(format!("keeper answered {line:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unarmed_fence_never_fires_and_a_new_deadline_lifts_it() {
        let mut f = Fence::default();
        assert_eq!(f.wait(), None);
        assert!(!f.due());
        f.arm(Duration::ZERO);
        assert!(f.due());
        assert!(f.refuses());
        assert!(!f.due(), "fires once");
        f.arm(Duration::from_secs(3600));
        assert!(!f.refuses());
        assert!(!f.due());
        assert!(f.wait().is_some());
        f.arm(Duration::ZERO);
        f.disarm();
        assert!(!f.due() && !f.refuses() && f.wait().is_none());
    }
}
