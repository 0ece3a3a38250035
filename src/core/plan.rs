//! The plan: what the decision functions ask the shell to do, as data.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use nix::sys::signal::Signal;

use super::state::LastExit;

/// One thing to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Start the session's next attempt; answer with `Event::Spawned` or `Event::SpawnFailed`.
    Spawn {
        /// The session.
        name: String,
        /// The attempt number, 1-based.
        attempt: u32,
    },
    /// Send a signal to the session's whole process group (or cgroup).
    Signal {
        /// The session.
        name: String,
        /// Its process (group leader).
        pid: u32,
        /// The signal.
        signal: Signal,
    },
    /// Write the crash dump of a failed attempt.
    WriteCrashDump {
        /// The session.
        name: String,
        /// How the attempt ended (its `crash_dump` names the file).
        exit: LastExit,
    },
    /// Write the session's status file (only if its content changed).
    WriteStatus {
        /// The session.
        name: String,
    },
    /// The session is gone: remove its status, logs and crash dumps.
    Forget {
        /// The session.
        name: String,
    },
    /// Keep a tombstone status (phase, last exit, when and why it stopped)
    /// and the logs of a session about to be forgotten (manifest deleted,
    /// pool scaled down) for a bounded time; comes right before its `Forget`.
    Tombstone {
        /// The session.
        name: String,
        /// Its last record.
        record: Box<super::state::Record>,
    },
    /// `ttlAfterFinished` passed: delete the manifest, then forget.
    CollectGarbage {
        /// The session.
        name: String,
    },
}

impl Action {
    /// The session the action is about.
    pub fn session(&self) -> &str {
        match self {
            Action::Spawn { name, .. }
            | Action::Signal { name, .. }
            | Action::WriteCrashDump { name, .. }
            | Action::WriteStatus { name }
            | Action::Forget { name }
            | Action::Tombstone { name, .. }
            | Action::CollectGarbage { name } => name,
        }
    }
}

/// What to do now, and when to look again.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    /// Actions, in order.
    pub actions: Vec<Action>,
    /// The earliest time something is due (a timeout, a restart, a kill, a TTL).
    pub wake_at: Option<DateTime<Utc>>,
    /// Each session's own earliest due time, of the sessions the pass
    /// looked at (`wake_at` is the earliest of them): the per-key queue
    /// wakes each key at its own time, not every key at the earliest.
    pub due: BTreeMap<String, DateTime<Utc>>,
}

impl Plan {
    /// Asks to be woken at `t` at the latest, for session `name`.
    pub fn wake(&mut self, name: &str, t: DateTime<Utc>) {
        self.wake_at = Some(self.wake_at.map_or(t, |w| w.min(t)));
        match self.due.get_mut(name) {
            Some(d) => *d = (*d).min(t),
            None => {
                self.due.insert(name.to_string(), t);
            }
        }
    }
    /// True when nothing is to be done (a wake-up alone does not count).
    pub fn is_idle(&self) -> bool {
        self.actions.is_empty()
    }
}
