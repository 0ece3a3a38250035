//! The status types: what sessionlet writes (`NAME.status.yaml`, crash dumps,
//! the controller status) and what `get`/`describe` read back.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// `kind: SessionStatus`, one document per Session (or a file that failed to parse).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionStatusDoc {
    /// `sessionlet.dev/v1alpha1`.
    pub api_version: String,
    /// `SessionStatus`.
    pub kind: String,
    /// Which session, declared where.
    pub metadata: StatusMetadata,
    /// What it is doing.
    pub status: SessionStatus,
}

/// Identifies the object a status belongs to.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusMetadata {
    /// The object's name (empty when it could not be read).
    pub name: String,
    /// The manifest file's name.
    pub manifest: String,
    /// Stable id, kept across controller restarts and spec changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// Hash of the spec last acted upon (how a restarted controller tells a changed spec).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec_hash: Option<String>,
    /// Hash of the fields that restart the session when edited, as the
    /// current or last attempt was started with (see the manifest reference).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_hash: Option<String>,
    /// The `sessionlet.dev/restartedAt` annotation that attempt was started with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restarted_at: Option<String>,
    /// The pool, for pool replicas and Sessions naming one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    /// The object's labels (a replica's: its pool template's), for
    /// `get -l key=value`.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub labels: std::collections::BTreeMap<String, String>,
}

/// A condition, Kubernetes style.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// E.g. `Ready`, `ManifestValid`, `Stale`.
    #[serde(rename = "type")]
    pub kind: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// CamelCase reason.
    pub reason: String,
    /// For a person.
    pub message: String,
    /// When `status` last changed.
    pub last_transition_time: DateTime<Utc>,
}

/// How an attempt ended, as written in status and crash dumps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExitInfo {
    /// Attempt number.
    pub attempt: u32,
    /// Exit code, when it exited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Signal name, when a signal killed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<String>,
    /// Why it ended.
    pub reason: String,
    /// For a person.
    pub message: String,
    /// When it started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    /// When it ended.
    pub finished_at: DateTime<Utc>,
    /// Path of the crash dump.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crash_dump: Option<String>,
    /// Why it died, in plain words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis: Option<serde_json::Value>,
}

/// Paths of the current attempt's output.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogPaths {
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
    /// Output of this session (over all its attempts) discarded rather than
    /// kept in a log file: a file truncated in place on a full disk, the
    /// head of a file that outgrew `--max-log-size` before its rotation.
    /// Omitted when 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub dropped_bytes: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Resource usage of the session's process tree.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Usage {
    /// Resident memory now.
    pub memory_bytes: u64,
    /// Highest resident memory seen.
    pub peak_memory_bytes: u64,
    /// CPU time used.
    pub cpu_seconds: f64,
}

/// `status.quota`: an agent waiting for its account's usage limit to reset.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QuotaStatus {
    /// When the limit resets.
    pub resets_at: DateTime<Utc>,
    /// `five_hour`, `seven_day`, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit_type: Option<String>,
    /// The account: `agent.account`, or `sha256:` and the start of a hash of
    /// the credential (never the credential).
    pub account: String,
}

/// The `status` of a SessionStatus.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionStatus {
    /// Pending, Queued, Running, Recovering, Completed, Failed, TimedOut, Cancelled, Invalid.
    pub phase: String,
    /// CamelCase, machine-readable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// For a person.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Generation of the spec this status describes.
    #[serde(default)]
    pub observed_generation: u64,
    /// Attempts since the spec last changed.
    #[serde(default)]
    pub attempt: u32,
    /// Restarts since the spec last changed.
    #[serde(default)]
    pub restarts: u32,
    /// Consecutive failures (drives backoff and maxRetries).
    #[serde(default)]
    pub consecutive_failures: u32,
    /// While running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// Process start time in clock ticks since boot (identity check on adoption).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid_start_ticks: Option<u64>,
    /// Boot id of the machine the pid belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_id: Option<String>,
    /// When the current attempt started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    /// When the first attempt of this run started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_started_at: Option<DateTime<Utc>>,
    /// When it reached a terminal phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
    /// While Recovering: when the next attempt starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_restart_at: Option<DateTime<Utc>>,
    /// While WaitingForQuota: the account's usage limit and when it resets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota: Option<QuotaStatus>,
    /// While being stopped (`get` shows Terminating): when SIGKILL follows,
    /// the end of the `terminationGracePeriod` (past once it was sent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kill_at: Option<DateTime<Utc>>,
    /// While Queued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<QueueInfo>,
    /// How the last attempt ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_exit: Option<ExitInfo>,
    /// Resource usage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// Last time the session wrote output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_activity_at: Option<DateTime<Utc>>,
    /// Agent runs: conversation, tokens, cost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<serde_json::Value>,
    /// `spec.workspace`: the worktree, its branch, whether it is dirty, and
    /// (after a deletion) whether it was removed or kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace: Option<serde_json::Value>,
    /// Conditions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The current attempt's output files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logs: Option<LogPaths>,
    /// The manifest's problems, when Invalid (or when a last good spec keeps running).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
    /// When this status was written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<DateTime<Utc>>,
    /// Scale-out (`--coordinator etcd`): the node that owns the session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

/// A session's place in its pool's queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QueueInfo {
    /// The pool.
    pub pool: String,
    /// 1-based.
    pub position: u32,
    /// When it joined the queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queued_at: Option<DateTime<Utc>>,
    /// From the pool's average run time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimated_wait_seconds: Option<u64>,
}

/// `kind: PoolStatus`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PoolStatusDoc {
    /// `sessionlet.dev/v1alpha1`.
    pub api_version: String,
    /// `PoolStatus`.
    pub kind: String,
    /// Which pool.
    pub metadata: StatusMetadata,
    /// Its state.
    pub status: PoolStatus,
}

/// The `status` of a PoolStatus.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PoolStatus {
    /// Desired replicas.
    pub replicas: u32,
    /// Replicas running the current template.
    pub ready_replicas: u32,
    /// Running members (replicas and Sessions).
    pub running: u32,
    /// Sessions waiting.
    pub queued: u32,
    /// maxConcurrent, when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<u32>,
    /// running / capacity, percent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub utilization: Option<f64>,
    /// The queue, in order.
    #[serde(default)]
    pub queue: Vec<QueueEntry>,
    /// One entry per replica.
    #[serde(default)]
    pub members: Vec<PoolMember>,
    /// Figures over the pool's life.
    pub metrics: PoolMetrics,
    /// Conditions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Generation of the pool spec.
    pub observed_generation: u64,
    /// Agent totals over members.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<serde_json::Value>,
    /// With `spec.budget`: the spend of the current period (kept here, so a
    /// new controller goes on from it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<serde_json::Value>,
    /// The manifest's problems, when invalid.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
    /// When this status was written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<DateTime<Utc>>,
}

/// One queued Session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QueueEntry {
    /// The session.
    pub name: String,
    /// Its priority.
    pub priority: String,
    /// 1-based.
    pub position: u32,
    /// When it joined.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queued_at: Option<DateTime<Utc>>,
    /// Estimate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimated_wait_seconds: Option<u64>,
}

/// One replica.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PoolMember {
    /// `POOL-N`.
    pub name: String,
    /// Its phase.
    pub phase: String,
    /// While running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// Restarts.
    pub restarts: u32,
    /// Current attempt's start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    /// How its last attempt ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_exit: Option<ExitInfo>,
}

/// Pool figures.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PoolMetrics {
    /// Attempts started.
    pub total_sessions: u64,
    /// Exited 0.
    pub completed: u64,
    /// Failed without a signal.
    pub failed: u64,
    /// Killed by a signal.
    pub crashed: u64,
    /// Average run time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub average_run_seconds: Option<f64>,
    /// Average queue wait.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub average_queue_wait_seconds: Option<f64>,
}

/// `.sessionlet/controller.status.yaml`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ControllerStatus {
    /// `sessionlet.dev/v1alpha1`.
    #[serde(default)]
    pub api_version: String,
    /// `ControllerStatus`.
    #[serde(default)]
    pub kind: String,
    /// sessionlet version.
    pub version: String,
    /// Controller pid.
    pub pid: u32,
    /// When it started.
    pub started_at: Option<DateTime<Utc>>,
    /// The watched directory.
    pub manifest_dir: String,
    /// Where statuses are written.
    pub status_dir: String,
    /// Sessions known.
    pub total_sessions: u64,
    /// Sessions by phase.
    pub sessions_by_phase: BTreeMap<String, u64>,
    /// Reconcile passes so far.
    pub reconcile_count: u64,
    /// Duration of the last pass, milliseconds.
    pub last_reconcile_millis: f64,
    /// The last error (file writes, spawns), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// When the last error happened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error_at: Option<DateTime<Utc>>,
    /// Extra figures (health, limits mode).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra: BTreeMap<String, serde_json::Value>,
    /// When this status was written.
    pub updated_at: Option<DateTime<Utc>>,
}
