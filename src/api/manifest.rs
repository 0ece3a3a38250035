//! The manifest types: what users write (`kind: Session`, `kind: Pool`).
//!
//! These types are the single source of truth: the loader deserializes into
//! them, the JSON Schemas in `schemas/` are generated from them, and the
//! validator checks documents against those schemas.

use std::collections::BTreeMap;
use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::units::{Duration, Quantity, SignalName};

/// The one API version this build understands.
pub const API_VERSION: &str = "sessionlet.dev/v1alpha1";

/// `metadata`: the object's name and free-form labels and annotations.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Metadata {
    /// A DNS-1123 label: lowercase letters, digits and '-', at most 63 characters.
    /// Defaults to the manifest file's stem.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"))]
    pub name: Option<String>,
    /// Free-form key/value labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Free-form key/value annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// A `kind: Session` document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(title = "Session")]
pub struct SessionManifest {
    /// Always `sessionlet.dev/v1alpha1`.
    #[schemars(extend("const" = API_VERSION))]
    pub api_version: String,
    /// Always `Session`.
    #[schemars(extend("const" = "Session"))]
    pub kind: String,
    /// Name, labels and annotations.
    #[serde(default)]
    pub metadata: Metadata,
    /// What to run and how.
    pub spec: SessionSpec,
}

/// A `kind: Pool` document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(title = "Pool")]
pub struct PoolManifest {
    /// Always `sessionlet.dev/v1alpha1`.
    #[schemars(extend("const" = API_VERSION))]
    pub api_version: String,
    /// Always `Pool`.
    #[schemars(extend("const" = "Pool"))]
    pub kind: String,
    /// Name, labels and annotations.
    #[serde(default)]
    pub metadata: Metadata,
    /// Replicas, template and capacity.
    #[serde(default)]
    pub spec: PoolSpec,
}

/// When an exited session runs again.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum RestartPolicy {
    /// Always run again, whatever the exit.
    Always,
    /// Run again after a failure (non-zero exit, signal, timeout).
    #[default]
    OnFailure,
    /// Never run again.
    Never,
}

/// What to do when a session has been silent for `staleAfter`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum OnStale {
    /// Only set the `Stale` condition.
    #[default]
    Warn,
    /// Stop the session (reason Stale) and let the restart policy apply.
    Restart,
}

/// Order in a pool's queue.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    /// Ahead of everything.
    Critical,
    /// Ahead of medium and low.
    High,
    /// The default.
    #[default]
    Medium,
    /// Behind everything.
    Low,
}

/// Exponential backoff between restarts.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Backoff {
    /// Delay before the first restart. Default 1s.
    pub initial_delay: Duration,
    /// Factor applied to the delay after each failure. Default 2.0.
    #[schemars(range(min = 1.0))]
    pub multiplier: f64,
    /// Cap on the delay. Default 5m.
    pub max_delay: Duration,
    /// A run that lasted this long resets the delay. Default 10m.
    pub reset_after: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial_delay: Duration::from_secs(1),
            multiplier: 2.0,
            max_delay: Duration::from_secs(300),
            reset_after: Duration::from_secs(600),
        }
    }
}

/// Resource limits of one session's process tree.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Resources {
    /// Memory limit of the whole tree.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_memory: Option<Quantity>,
    /// CPU time limit of the whole tree.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_cpu_time: Option<Duration>,
}

/// One `spec.envFrom` entry: a dotenv file of variables.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EnvFrom {
    /// A dotenv file (`NAME=VALUE` lines); relative paths resolve against
    /// the manifest's directory. Read at every spawn; a missing or malformed
    /// file fails the spawn.
    pub file: PathBuf,
}

/// The `spec` of a Session (also a Pool's `template.spec`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SessionSpec {
    /// The argv, executed directly (no shell). Required unless `agent` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub command: Option<Vec<String>>,
    // Boxed, as `charter`: a spec is kept per session and most set
    // neither; inline they were 700 of its 1,168 bytes.
    /// A headless agent run instead of a command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<Box<crate::api::agent::AgentSpec>>,
    /// Who the agent is and what it may do; rendered into its system prompt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub charter: Option<Box<crate::api::agent::Charter>>,
    /// Working directory; relative paths resolve against the manifest's directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<PathBuf>,
    /// A Git worktree of its own, made before the first attempt in the
    /// status folder (`NAME.workspace/`): the session runs there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace: Option<Workspace>,
    /// Variables read from dotenv files at every spawn, before `env`. Their
    /// values are never written or printed anywhere.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env_from: Vec<EnvFrom>,
    /// Variables of the session, on top of the minimal base (`PATH`, `HOME`,
    /// `LANG`, `TZ`, `USER`), `--pass-env` and `envFrom`. Never put secrets
    /// here: use `envFrom` or `--pass-env`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Text written to the session's stdin, which is then closed; or
    /// `{pipe: true}`: stdin stays open (the keeper holds it) for
    /// `sessionlet send`. Otherwise stdin is /dev/null.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin: Option<Stdin>,
    /// When an exited session runs again. Default OnFailure.
    #[serde(default)]
    pub restart_policy: RestartPolicy,
    /// Restarts allowed after failures before the session is Failed.
    /// Default 3 for OnFailure, unlimited for Always.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_retries: Option<u32>,
    /// Exponential delay between restarts.
    #[serde(default)]
    pub backoff: Backoff,
    /// Wall time limit of one attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    /// Wall time limit of the whole session, all attempts together.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_deadline: Option<Duration>,
    /// Sent to the session's process group to stop it. Default SIGTERM.
    #[serde(default)]
    pub stop_signal: SignalName,
    /// Time between the stop signal and SIGKILL. Default 10s.
    #[serde(default = "default_grace")]
    pub termination_grace_period: Duration,
    /// Memory and CPU limits.
    #[serde(default)]
    pub resources: Resources,
    /// No output for this long marks the session stale.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stale_after: Option<Duration>,
    /// What a stale session gets. Default Warn.
    #[serde(default)]
    pub on_stale: OnStale,
    /// A finished session is garbage-collected (manifest included) this long after it finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_after_finished: Option<Duration>,
    /// True stops the session (Cancelled); false again starts a new run.
    #[serde(default)]
    pub suspend: bool,
    /// Run under this pool's concurrency limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"))]
    pub pool: Option<String>,
    /// Order in the pool's queue. Default medium.
    #[serde(default)]
    pub priority: Priority,
    /// Run as this user (only when the controller runs as root).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Run with this group (only when the controller runs as root).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Webhooks: an HTTP POST of JSON to each `url` for the events in its `on`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notify: Vec<Notify>,
}

/// One `spec.notify` entry: a webhook.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Notify {
    /// Where to POST: `http://HOST[:PORT][/PATH]`.
    pub url: String,
    /// Phases the session enters (`Failed`, `Completed`, `TimedOut`…) and
    /// event reasons (`BackOff`, `OOMKilled`…) to be told about. Default:
    /// Completed, Failed, TimedOut.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub on: Vec<String>,
}

fn default_grace() -> Duration {
    Duration::from_secs(10)
}

impl SessionSpec {
    /// Restarts allowed after failures, `None` meaning unlimited.
    pub fn effective_max_retries(&self) -> Option<u32> {
        match (self.max_retries, self.restart_policy) {
            (Some(n), _) => Some(n),
            (None, RestartPolicy::Always) => None,
            (None, RestartPolicy::OnFailure) => Some(3),
            (None, RestartPolicy::Never) => Some(0),
        }
    }
}

/// The `spec` of a Pool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PoolSpec {
    /// Number of sessions kept running from the template. Default 0.
    #[serde(default)]
    pub replicas: u32,
    /// The replicas' labels and Session spec. Required when replicas > 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<PoolTemplate>,
    /// Cap on running members (replicas and Sessions naming the pool). Unset: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_concurrent: Option<u32>,
    /// Sessions allowed to wait; past this the newest is Failed (QueueFull). Default 100.
    #[serde(default = "default_max_queue")]
    pub max_queue: u32,
    /// What the pool's agent members may spend together: at the budget,
    /// running members are stopped (BudgetExceeded) and none starts until
    /// the period rolls over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<Budget>,
}

impl Default for PoolSpec {
    fn default() -> Self {
        PoolSpec {
            replicas: 0,
            template: None,
            max_concurrent: None,
            max_queue: default_max_queue(),
            budget: None,
        }
    }
}

/// `spec.stdin`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Stdin {
    /// Written to stdin, which is then closed.
    Text(String),
    /// `{pipe: true}`: stdin stays open for `sessionlet send` (each message
    /// is written as a line); `{pipe: false}` is /dev/null.
    Pipe(StdinPipe),
}

/// `spec.stdin: {pipe: true}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StdinPipe {
    /// Keep stdin open for `sessionlet send`.
    pub pipe: bool,
}

impl Stdin {
    /// The text to write first, if any.
    pub fn text(&self) -> Option<&str> {
        match self {
            Stdin::Text(t) => Some(t),
            Stdin::Pipe(_) => None,
        }
    }
    /// Whether stdin stays open for `sessionlet send`.
    pub fn pipe(&self) -> bool {
        matches!(self, Stdin::Pipe(StdinPipe { pipe: true }))
    }
}

/// `spec.workspace`: a Git worktree per session.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Workspace {
    /// The repository (a path, relative to the manifest's directory).
    pub repo: PathBuf,
    /// The session's branch, made from `base` when missing. Default
    /// `sessionlet/NAME`; pool replicas add `-ORDINAL` to a given branch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    /// Where a new branch starts. Default the repository's `HEAD`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<String>,
}

/// A spending budget of agent sessions (`Pool.spec.budget`, `--account-budget`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Budget {
    /// Cost in USD (the CLI's `total_cost_usd`, all attempts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("exclusiveMinimum" = 0))]
    pub max_cost_usd: Option<f64>,
    /// Input plus output tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_tokens: Option<u64>,
    /// `day` (the UTC day; spend starts again at midnight UTC) or `total`. Default day.
    #[serde(default)]
    pub per: BudgetPeriod,
}

/// The period a budget covers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum BudgetPeriod {
    /// The UTC day.
    #[default]
    Day,
    /// Ever (until the pool is deleted).
    Total,
}

fn default_max_queue() -> u32 {
    100
}

/// A Pool's template: labels and a Session spec.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PoolTemplate {
    /// Labels given to every replica.
    #[serde(default)]
    pub metadata: TemplateMetadata,
    /// The replicas' Session spec.
    pub spec: SessionSpec,
}

/// A template's metadata: labels only (replica names come from the pool).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TemplateMetadata {
    /// Labels given to every replica.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// One object of a manifest file.
#[derive(Debug, Clone, PartialEq)]
pub enum Object {
    /// A `kind: Session` document.
    Session(SessionManifest),
    /// A `kind: Pool` document.
    Pool(PoolManifest),
}

impl Object {
    /// `Session` or `Pool`.
    pub fn kind(&self) -> &'static str {
        match self {
            Object::Session(_) => "Session",
            Object::Pool(_) => "Pool",
        }
    }
    /// The object's name (always set after loading).
    pub fn name(&self) -> &str {
        let m = match self {
            Object::Session(s) => &s.metadata,
            Object::Pool(p) => &p.metadata,
        };
        m.name.as_deref().unwrap_or("")
    }
}
