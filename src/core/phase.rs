//! Phases and reasons: the words the status files use.

use serde::{Deserialize, Serialize};

/// Where a session is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
pub enum Phase {
    /// Known, not started yet (or waiting for its pool to exist).
    Pending,
    /// Waiting for room in its pool.
    Queued,
    /// A process is running.
    Running,
    /// Waiting out the backoff before the next attempt.
    Recovering,
    /// An agent's account reached its usage limit: waiting for the reset
    /// (not a failure), then resuming the conversation.
    WaitingForQuota,
    /// Ended successfully, will not run again.
    Completed,
    /// Ended in failure with no retry left.
    Failed,
    /// Ended by its timeout (no retry left) or its active deadline.
    TimedOut,
    /// Stopped on request (suspend).
    Cancelled,
    /// The manifest is invalid or the name is taken.
    Invalid,
}

impl Phase {
    /// A terminal phase does not change without a new spec.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Phase::Completed | Phase::Failed | Phase::TimedOut | Phase::Cancelled | Phase::Invalid
        )
    }
    /// All phases, in display order.
    pub const ALL: [Phase; 10] = [
        Phase::Pending,
        Phase::Queued,
        Phase::Running,
        Phase::Recovering,
        Phase::WaitingForQuota,
        Phase::Completed,
        Phase::Failed,
        Phase::TimedOut,
        Phase::Cancelled,
        Phase::Invalid,
    ];
    /// The name as written in status files.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::Queued => "Queued",
            Phase::Running => "Running",
            Phase::Recovering => "Recovering",
            Phase::WaitingForQuota => "WaitingForQuota",
            Phase::Completed => "Completed",
            Phase::Failed => "Failed",
            Phase::TimedOut => "TimedOut",
            Phase::Cancelled => "Cancelled",
            Phase::Invalid => "Invalid",
        }
    }
}

/// Why a session is in its phase, or why an attempt ended (CamelCase, machine-readable).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Reason {
    /// Exited 0.
    Completed,
    /// Exited non-zero.
    Error,
    /// Killed by a signal sessionlet did not send.
    Crashed,
    /// An attempt passed its `timeout`.
    TimedOut,
    /// The session passed its `activeDeadline`.
    DeadlineExceeded,
    /// The command does not exist.
    CommandNotFound,
    /// The command or working directory may not be used.
    PermissionDenied,
    /// Spawning failed for another reason (e.g. a missing working directory).
    SpawnFailed,
    /// `suspend: true`.
    Suspended,
    /// The manifest does not validate.
    ManifestInvalid,
    /// Another file declares the same name first.
    DuplicateName,
    /// The pool named in `spec.pool` does not exist.
    PoolNotFound,
    /// The pool's queue is full.
    QueueFull,
    /// Waiting for room in the pool.
    PoolFull,
    /// Stopped because the controller shut down; starts again with the controller.
    ControllerStopped,
    /// The memory limit was passed (sampled mode).
    MemoryLimitExceeded,
    /// The kernel killed it for memory (cgroup OOM counter).
    OOMKilled,
    /// The CPU time limit was passed.
    CpuTimeLimitExceeded,
    /// No output for `staleAfter` with `onStale: Restart`.
    Stale,
    /// An agent run used more tokens than `maxTokens`.
    TokenBudgetExceeded,
    /// An agent ran a forbidden command.
    PolicyViolation,
    /// The spec changed; the session restarts with the new one.
    SpecChanged,
    /// The manifest was deleted, or the pool scaled down.
    Removed,
    /// Waiting to start.
    Starting,
    /// Exited while no controller was running; found on restart.
    ExitedWhileAway,
    /// An agent run ended without a final result.
    AgentAbnormal,
    /// An agent run reported a failure (the agent block says which).
    AgentFailed,
    /// Stopped through the API (`sessionlet stop`) until its next spec change or restart.
    StoppedByRequest,
    /// Restarted through the API (`sessionlet restart`): a new attempt, not a failure.
    RestartRequested,
    /// An agent's account reached its usage limit (waits for the reset).
    UsageLimited,
    /// The usage limit reset: the conversation continues.
    Resumed,
    /// A pool's or an account's budget (cost or tokens) was reached.
    BudgetExceeded,
}

impl Reason {
    /// The name as written in status files.
    pub fn as_str(self) -> String {
        format!("{self:?}")
    }
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ExitStatus {
    /// It exited with this code.
    Code(i32),
    /// A signal (this number) killed it.
    Signal(i32),
}

impl ExitStatus {
    /// Exit code 0.
    pub fn success(self) -> bool {
        self == ExitStatus::Code(0)
    }
}
