//! The controller's memory of each session: what it started, when, and how it ended.
//!
//! Only the decision functions ([`super::reconcile()`], [`super::observe()`]) change it.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::phase::{ExitStatus, Phase, Reason};
use super::plan::Action;

/// Everything the controller remembers.
#[derive(Debug, Clone, Default)]
pub struct State {
    /// One record per known session.
    pub sessions: BTreeMap<String, Record>,
    /// Running figures per pool.
    pub pools: BTreeMap<String, PoolStats>,
    /// True while draining: stop everything, start nothing.
    pub shutting_down: bool,
    /// Restart and stop requests from the local API (core::requests).
    pub requests: super::requests::Requests,
    /// The highest spend seen per budgeted pool and account in the current
    /// period (core::budget): a spent budget stays spent until it renews.
    pub budget_marks: super::budget::Marks,
    /// Sessions whose status must be written.
    pub(crate) dirty: BTreeSet<String>,
    /// Actions decided while observing events, emitted by the next reconcile.
    pub(crate) outbox: Vec<Action>,
}

impl State {
    /// True when no session has a live process.
    pub fn all_stopped(&self) -> bool {
        self.sessions.values().all(|r| !r.run.is_live())
    }
    /// Marks a session's status for writing.
    pub fn touch(&mut self, name: &str) {
        self.dirty.insert(name.to_string());
    }
}

/// What the controller knows of one session.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Record {
    /// The generation the current or last run was started with.
    pub generation: u64,
    /// What the process is doing.
    pub run: Run,
    /// Attempts started since the spec last changed (1-based once started).
    pub attempt: u32,
    /// Restarts since the spec last changed.
    pub restarts: u32,
    /// Consecutive failed attempts (drives backoff and maxRetries).
    pub failures: u32,
    /// When the first attempt of this run started (activeDeadline origin).
    pub series_started_at: Option<DateTime<Utc>>,
    /// How the last attempt ended.
    pub last_exit: Option<LastExit>,
    /// Set once a garbage collection was asked for.
    pub collected: bool,
    /// The spec and pool of the last attempt: a session whose manifest is
    /// gone is still stopped with its own stop signal and grace period, and
    /// counts against its pool until it exits.
    pub last_spec: Option<(std::sync::Arc<crate::api::SessionSpec>, Option<String>)>,
    /// The run hash ([`super::change::run_hash`]) of the spec the current or
    /// last attempt was started with; 0 when not known.
    pub run_hash: u64,
    /// The `sessionlet.dev/restartedAt` annotation it was started with.
    pub restarted_at: Option<String>,
    /// Set while waiting for an account's usage limit to reset (core::quota).
    pub quota: Option<super::quota::QuotaWait>,
}

impl Record {
    /// How it ended, once it reached a terminal phase.
    pub fn outcome(&self) -> Option<&Outcome> {
        match &self.run {
            Run::Done(o) => Some(o),
            _ => None,
        }
    }

    /// Why a session without a process waits, when it is blocked.
    pub fn wait(&self) -> Option<&Wait> {
        match &self.run {
            Run::Idle(w) => w.as_ref(),
            _ => None,
        }
    }

    /// The running attempt's verdict, if it was judged.
    pub fn verdict(&self) -> Option<&Verdict> {
        match &self.run {
            Run::Running(r) => r.verdict.as_ref(),
            _ => None,
        }
    }

    /// The phase the record is in, as its status shows it (without the
    /// reason and message, which the status renders).
    pub fn phase(&self) -> Phase {
        match &self.run {
            Run::Starting { .. } => Phase::Pending,
            Run::Running(_) => Phase::Running,
            Run::Backoff { .. } if self.quota.is_some() => Phase::WaitingForQuota,
            Run::Backoff { .. } => Phase::Recovering,
            Run::Idle(wait) => wait.as_ref().map_or(Phase::Pending, |w| w.phase),
            Run::Done(o) => o.phase,
        }
    }
}

/// An attempt's outcome judged from what it wrote, not only its exit code.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// `Completed` for a success, else why it failed (AgentFailed, AgentAbnormal).
    pub reason: Reason,
    /// For a person.
    pub message: String,
    /// Wait at least this long before the next attempt (a rate limit).
    pub min_delay: Option<std::time::Duration>,
    /// False when another attempt would fail the same way (an auth failure).
    pub retry: bool,
    /// The account's usage limit rejected the run: wait for the reset
    /// instead of failing (core::quota).
    pub quota: Option<super::quota::QuotaHit>,
}

/// What the process of a session is doing.
#[derive(Debug, Clone, PartialEq)]
pub enum Run {
    /// No process and none due: waiting to be started, or blocked for the
    /// reason it holds (a full pool, a spent budget, a usage limit…).
    Idle(Option<Wait>),
    /// A spawn was planned; its result is not known yet.
    Starting {
        /// When the spawn was planned.
        at: DateTime<Utc>,
    },
    /// A process is alive.
    Running(Running),
    /// Waiting out the backoff.
    Backoff {
        /// When the next attempt is due.
        until: DateTime<Utc>,
    },
    /// Terminal, with how it ended.
    Done(Outcome),
}

impl Default for Run {
    fn default() -> Run {
        Run::Idle(None)
    }
}

impl Run {
    /// True when a process exists or is being created.
    pub fn is_live(&self) -> bool {
        matches!(self, Run::Starting { .. } | Run::Running(_))
    }
}

/// A live process.
#[derive(Debug, Clone, PartialEq)]
pub struct Running {
    /// Its pid (also its process group id).
    pub pid: u32,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// Set once the controller decided to stop it.
    pub stop: Option<Stop>,
    /// How it ended, judged from its output before its exit arrived
    /// (agent runs); consumed by its exit, gone with its process.
    pub verdict: Option<Verdict>,
}

/// A stop in progress.
#[derive(Debug, Clone, PartialEq)]
pub struct Stop {
    /// Why it is being stopped.
    pub why: Reason,
    /// For a person.
    pub message: String,
    /// When the stop signal was sent.
    pub signalled_at: DateTime<Utc>,
    /// When SIGKILL is due.
    pub kill_at: DateTime<Utc>,
    /// True once SIGKILL was sent.
    pub killed: bool,
    /// Agent runs get SIGINT first; true once the stop signal followed.
    pub escalated: bool,
}

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LastExit {
    /// The attempt, 1-based.
    pub attempt: u32,
    /// Exit code or signal; none when the process never started.
    #[serde(flatten, default, skip_serializing_if = "Option::is_none")]
    pub status: Option<ExitStatus>,
    /// Why it ended.
    pub reason: Reason,
    /// For a person.
    pub message: String,
    /// When it started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    /// When it ended.
    pub finished_at: DateTime<Utc>,
    /// The crash dump's file name in the crashes folder, for failed attempts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crash_dump: Option<String>,
}

impl LastExit {
    /// How long the attempt ran.
    pub fn duration(&self) -> chrono::Duration {
        self.started_at
            .map(|s| self.finished_at - s)
            .unwrap_or_default()
    }
    /// True for a failed attempt (deserves a crash dump).
    pub fn failed(&self) -> bool {
        self.reason != Reason::Completed
    }
}

/// A terminal result.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// Completed, Failed, TimedOut or Cancelled.
    pub phase: Phase,
    /// Why.
    pub reason: Reason,
    /// For a person.
    pub message: String,
    /// When it finished.
    pub finished_at: DateTime<Utc>,
}

/// Why a session without a process is waiting.
#[derive(Debug, Clone, PartialEq)]
pub struct Wait {
    /// Pending or Queued.
    pub phase: Phase,
    /// PoolNotFound, PoolFull, Starting, ControllerStopped...
    pub reason: Reason,
    /// For a person.
    pub message: String,
    /// Position in the pool's queue, 1-based.
    pub position: Option<u32>,
    /// Estimated wait, from the pool's average run time.
    pub estimated_wait_seconds: Option<u64>,
    /// When it joined the queue.
    pub queued_at: Option<DateTime<Utc>>,
}

/// Running figures of a pool, for its status.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PoolStats {
    /// Attempts started.
    pub total_sessions: u64,
    /// Attempts that exited 0.
    pub completed: u64,
    /// Attempts that failed without a signal.
    pub failed: u64,
    /// Attempts killed by a signal.
    pub crashed: u64,
    /// Sum of run times of finished attempts, seconds.
    pub run_seconds: f64,
    /// Finished attempts counted in `run_seconds`.
    pub runs: u64,
    /// Sum of queue waits, seconds.
    pub queue_wait_seconds: f64,
    /// Queue waits counted.
    pub queue_waits: u64,
}

impl PoolStats {
    /// Average run time, seconds.
    pub fn average_run_seconds(&self) -> Option<f64> {
        (self.runs > 0).then(|| self.run_seconds / self.runs as f64)
    }
    /// Average queue wait, seconds.
    pub fn average_queue_wait_seconds(&self) -> Option<f64> {
        (self.queue_waits > 0).then(|| self.queue_wait_seconds / self.queue_waits as f64)
    }
}
