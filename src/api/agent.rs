//! Agent manifest types: `spec.agent` (a headless CLI run) and `spec.charter`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::units::Duration;

/// Which agent CLI profile builds the argv.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AgentKind {
    /// Claude Code (`claude -p`).
    #[default]
    Claude,
}

/// `spec.agent`: a headless agent run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AgentSpec {
    /// The CLI profile. Default claude.
    #[serde(default)]
    pub kind: AgentKind,
    /// The CLI binary. Default `claude` on PATH.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binary: Option<String>,
    /// The task prompt. One of prompt or promptFile is required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    /// A file holding the prompt, relative to the manifest's directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_file: Option<PathBuf>,
    /// Model name or alias.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Passed to the CLI as --max-turns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_turns: Option<u32>,
    /// Passed to the CLI as --max-budget-usd. Must be positive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("exclusiveMinimum" = 0))]
    pub max_budget_usd: Option<f64>,
    /// Enforced by the controller from the stream's token counts (TokenBudgetExceeded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u64>,
    /// Tool rules allowed without asking, e.g. `Bash(git:*)`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_tools: Vec<String>,
    /// Tool rules always denied.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disallowed_tools: Vec<String>,
    /// default, acceptEdits, auto, plan, bypassPermissions, dontAsk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permission_mode: Option<PermissionMode>,
    /// Appended to the CLI's system prompt (after the charter).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub append_system_prompt: Option<String>,
    /// Extra directories the agent may use.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub add_dirs: Vec<PathBuf>,
    /// An MCP configuration file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mcp_config: Option<PathBuf>,
    /// Continue the same conversation after an abnormal end. Default true.
    #[serde(default = "yes")]
    pub resume: bool,
    /// Further CLI arguments, appended as they are.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_args: Vec<String>,
    /// The account whose usage limit the run counts against. Sessions of
    /// one account wait for its reset together. Default: a hash of the
    /// session's credential (never the credential itself).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    /// `argv` (default): the prompt is an argument and stdin is closed.
    /// `stream`: the CLI reads stream-json messages on stdin; the prompt is
    /// the first, `sessionlet send NAME TEXT` appends more.
    #[serde(default, skip_serializing_if = "is_default")]
    pub input: AgentInput,
    /// With `input: stream`: stdin is closed (the CLI then ends) once the
    /// agent finished its turn and no message came for this long. Unset:
    /// the conversation stays open until the session is stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub close_after_idle: Option<Duration>,
}

fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

/// How the task reaches the CLI.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AgentInput {
    /// The prompt as an argument; no further input.
    #[default]
    Argv,
    /// Stream-json user messages on stdin, kept open for `sessionlet send`.
    Stream,
}

fn yes() -> bool {
    true
}

impl Default for AgentSpec {
    /// What an empty `agent:` mapping means (`resume` defaults to true).
    fn default() -> Self {
        AgentSpec {
            kind: AgentKind::default(),
            binary: None,
            prompt: None,
            prompt_file: None,
            model: None,
            max_turns: None,
            max_budget_usd: None,
            max_tokens: None,
            allowed_tools: Vec::new(),
            disallowed_tools: Vec::new(),
            permission_mode: None,
            append_system_prompt: None,
            add_dirs: Vec::new(),
            mcp_config: None,
            resume: true,
            extra_args: Vec::new(),
            account: None,
            input: AgentInput::Argv,
            close_after_idle: None,
        }
    }
}

/// The CLI's permission modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum PermissionMode {
    /// Ask (in headless mode: deny) for anything not allowed.
    Default,
    /// Accept file edits without asking.
    AcceptEdits,
    /// The CLI approves actions itself (it ran file writes without asking).
    Auto,
    /// Plan only.
    Plan,
    /// Skip every permission check. The CLI refuses it when run as root
    /// unless the environment sets `IS_SANDBOX=1`.
    BypassPermissions,
    /// Deny whatever is not allowed, without asking.
    DontAsk,
}

/// `spec.charter`: identity, objectives, constraints and context of an agent.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Charter {
    /// Who the agent acts as.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<Identity>,
    /// What it is to achieve.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub objectives: Vec<String>,
    /// What it must not do.
    #[serde(default)]
    pub constraints: Constraints,
    /// Resource limits stated to the agent (and enforced where a field says so).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<CharterResources>,
    /// The task at hand.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_context: Option<TaskContext>,
    /// What the agent should remember.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Memory>,
}

/// The agent's identity.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Identity {
    /// Display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// E-mail used for commits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Role, e.g. "release engineer".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
}

/// What the agent must not do.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Constraints {
    /// Command prefixes that are never run (become --disallowedTools rules and are watched for).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub forbidden_commands: Vec<String>,
    /// Regular expressions a Bash command must never match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub forbidden_patterns: Vec<String>,
    /// Actions that need a person's approval.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub required_approvals: Vec<String>,
}

/// Limits stated in the charter.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CharterResources {
    /// Token budget.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u64>,
    /// Wall time budget.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_execution_time: Option<Duration>,
    /// Tools the agent may use.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_tools: Vec<String>,
}

/// The task the agent works on.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TaskContext {
    /// Tracker id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<String>,
    /// What the task is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// How urgent it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<String>,
}

/// What the agent should remember.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Memory {
    /// What was done recently.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recent_actions: Vec<String>,
    /// Preferences of the people it works for.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub preferences: BTreeMap<String, String>,
    /// Background on the project.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_context: Option<String>,
}
