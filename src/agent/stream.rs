//! An incremental, lenient reader of the Claude Code CLI's `stream-json` output.
//!
//! The CLI writes one JSON object per line on stdout (`--output-format
//! stream-json --verbose`). [`Tally`] is fed those lines one at a time, as they
//! arrive, and keeps what the session's status shows ([`AgentStatus`]); it also
//! returns [`Signal`]s for the things the controller must act on at once (a
//! Bash command to check against the policy, a token count to check against the
//! budget).
//!
//! The CLI changes often, so everything here is lenient: a line that is not
//! JSON is skipped, unknown event types and fields are ignored, a missing field
//! is "unknown", and nothing panics whatever the input.
//!
//! Accounting follows what the transcripts show (see `tests/fixtures/claude/`):
//! - The final `result` line is the source of truth for cost and tokens. Its
//!   `modelUsage` includes sub-agents; its `usage` does not.
//! - `assistant` lines come one per content block, share their `message.id`
//!   and carry the `message_start` usage snapshot (`output_tokens: 1`), so they
//!   are only used, de-duplicated by message id, for a running estimate that
//!   the live token budget is checked against.

use std::collections::{HashMap, HashSet};
use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Longest `resultText` kept in the status, in characters.
pub const RESULT_TEXT_LIMIT: usize = 2000;
/// Most paths kept in `filesModified`; further ones are only counted.
pub const FILES_MODIFIED_LIMIT: usize = 1000;
/// Most entries kept in `permissionDenials`; further ones are only counted.
pub const DENIALS_LIMIT: usize = 100;
/// Longest `detail` of a permission denial, in characters.
const DENIAL_DETAIL_LIMIT: usize = 500;

/// The CLI's tools whose successful calls modify a file, and the input field
/// holding the path.
const FILE_TOOLS: &[(&str, &str)] = &[
    ("Edit", "file_path"),
    ("Write", "file_path"),
    ("NotebookEdit", "notebook_path"),
];

/// Something the controller must act on now, returned by [`Tally::feed`].
#[derive(Debug, Clone, PartialEq)]
pub enum Signal {
    /// The conversation began (the CLI's `init` event or a first assistant
    /// message): from now on an abnormal end can be resumed with this id.
    Began {
        /// The CLI's session id, when the event carried one.
        session_id: Option<String>,
    },
    /// The agent asked to run a Bash command (any agent, sub-agents included).
    /// Check it against the policy; the CLI may already be running it.
    BashCommand {
        /// The command line, as the model wrote it.
        command: String,
    },
    /// The running token count (input + output) changed.
    Tokens {
        /// Input plus output tokens so far, sub-agents included.
        total: u64,
    },
    /// The final `result` line arrived; the CLI exits shortly after it.
    Finished {
        /// How the run ended.
        outcome: Outcome,
    },
}

/// Why a run that wrote a final `result` failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum FailureReason {
    /// Missing or rejected credentials (401, 403, "Not logged in").
    AuthFailed,
    /// The API answered 429.
    RateLimited,
    /// The API is at capacity (529, an `overloaded_error`).
    Overloaded,
    /// The API could not be reached, timed out, or the stream broke.
    NetworkError,
    /// `--max-turns` was reached.
    MaxTurns,
    /// `--max-budget-usd` was reached.
    BudgetExceeded,
    /// The conversation no longer fits the model's context.
    PromptTooLong,
    /// Any other API error (500, unknown model, ...).
    ApiError,
    /// The run was interrupted (SIGINT) while a tool or the model was running.
    Interrupted,
    /// `--resume` named a conversation the CLI does not have (never saved,
    /// e.g. the first attempt was SIGKILLed before its transcript was
    /// written): start a new conversation instead.
    SessionNotFound,
    /// The CLI reported an error that is not an API error.
    ExecutionError,
}

impl FailureReason {
    /// The reason's name, as shown in the status.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureReason::AuthFailed => "AuthFailed",
            FailureReason::RateLimited => "RateLimited",
            FailureReason::Overloaded => "Overloaded",
            FailureReason::NetworkError => "NetworkError",
            FailureReason::MaxTurns => "MaxTurns",
            FailureReason::BudgetExceeded => "BudgetExceeded",
            FailureReason::PromptTooLong => "PromptTooLong",
            FailureReason::ApiError => "ApiError",
            FailureReason::Interrupted => "Interrupted",
            FailureReason::SessionNotFound => "SessionNotFound",
            FailureReason::ExecutionError => "ExecutionError",
        }
    }
}

impl fmt::Display for FailureReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How an agent run ended, judged from its output alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "outcome")]
pub enum Outcome {
    /// A final `result` without `is_error`.
    Success,
    /// A final `result` with `is_error`.
    Failed {
        /// Why, from the result and the events before it.
        reason: FailureReason,
    },
    /// No final `result` line: the CLI died, was killed or stopped mid-way,
    /// whatever its exit code (SIGINT while waiting on the API exits 0 with no
    /// result).
    Abnormal,
}

impl Outcome {
    /// The failure reason, if the run failed with a result.
    pub fn reason(&self) -> Option<FailureReason> {
        match self {
            Outcome::Failed { reason } => Some(*reason),
            _ => None,
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Success => f.write_str("Success"),
            Outcome::Failed { reason } => write!(f, "Failed ({reason})"),
            Outcome::Abnormal => f.write_str("Abnormal"),
        }
    }
}

/// A tool call the CLI denied, listed in the status as a pending approval.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct PermissionDenial {
    /// The tool, e.g. `Bash` or `Write`.
    pub tool_name: String,
    /// The CLI's id of the call.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub tool_use_id: String,
    /// What was asked: the command for Bash, the path for file tools
    /// (truncated; the full input can be large, e.g. a whole file's content).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub detail: String,
    /// A rule that would allow this call if added to `agent.allowedTools`.
    pub suggested_rule: String,
}

/// A note for the status message when tool calls were denied, with the
/// rule that would allow the first: `2 tool call(s) denied (Bash: rm x);
/// allow with agent.allowedTools: ["Bash(rm:*)"]`. None without denials.
pub fn denial_note(denials: &[PermissionDenial], omitted: u64) -> Option<String> {
    let first = denials.first()?;
    let count = denials.len() as u64 + omitted;
    let what = if first.detail.is_empty() {
        first.tool_name.clone()
    } else {
        format!("{}: {}", first.tool_name, first.detail)
    };
    let mut rules: Vec<&str> = Vec::new();
    for d in denials {
        if !d.suggested_rule.is_empty() && !rules.contains(&d.suggested_rule.as_str()) {
            rules.push(&d.suggested_rule);
        }
    }
    let rules: Vec<String> = rules.iter().map(|r| format!("{r:?}")).collect();
    Some(format!(
        "{count} tool call(s) denied ({what}); allow with agent.allowedTools: [{}]",
        rules.join(", ")
    ))
}

/// What the status shows about an agent run (`status.agent`).
///
/// Live values (turns, tokens) are estimates while the run goes on and are
/// replaced by the final `result`'s totals when it arrives.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct AgentStatus {
    /// The CLI's conversation id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// The model, as the CLI reports it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Turns (model requests of the main agent).
    pub turns: u64,
    /// Input tokens, sub-agents included (not counting cache reads and writes).
    pub input_tokens: u64,
    /// Output tokens, sub-agents included.
    pub output_tokens: u64,
    /// Input tokens read from the prompt cache.
    #[serde(skip_serializing_if = "is_zero")]
    pub cache_read_input_tokens: u64,
    /// Input tokens written to the prompt cache.
    #[serde(skip_serializing_if = "is_zero")]
    pub cache_creation_input_tokens: u64,
    /// Cost in USD from the final result (sub-agents included); unset before it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost_usd: Option<f64>,
    /// Bash tool calls, any agent.
    pub commands_executed: u64,
    /// Bash tool calls whose result was an error (non-zero exit or denied).
    pub commands_failed: u64,
    /// Paths changed by successful Edit, Write and NotebookEdit calls, first
    /// change first, each once.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub files_modified: Vec<String>,
    /// Modified paths beyond [`FILES_MODIFIED_LIMIT`], counted only.
    #[serde(skip_serializing_if = "is_zero")]
    pub files_modified_omitted: u64,
    /// Tool calls the CLI denied (pending approvals).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub permission_denials: Vec<PermissionDenial>,
    /// Denials beyond [`DENIALS_LIMIT`], counted only.
    #[serde(skip_serializing_if = "is_zero")]
    pub permission_denials_omitted: u64,
    /// API requests the CLI retried.
    pub api_retries: u64,
    /// The error kind of the last retry (`rate_limit`, `authentication_failed`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_retry_error: Option<String>,
    /// The final result's subtype (`success`, `error_max_turns`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result_subtype: Option<String>,
    /// The final result's text, or its errors (truncated to [`RESULT_TEXT_LIMIT`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result_text: Option<String>,
    /// The final result's `terminal_reason` (`completed`, `max_turns`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub terminal_reason: Option<String>,
    /// The HTTP status of the API error that ended the run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_error_status: Option<u16>,
    /// Wall time of the run as the CLI measured it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// The last `rate_limit_event` (a subscriber's usage limit): `allowed`
    /// and `allowed_warning` are informational, `rejected` parks the session
    /// until `resetsAt`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimitInfo>,
    /// The CLI's own retry delay of its last API retry (its reading of the
    /// API's `retry-after`), milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_retry_delay_ms: Option<u64>,
}

/// What a `rate_limit_event` said (`rate_limit_info`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct RateLimitInfo {
    /// `allowed`, `allowed_warning` or `rejected`.
    pub status: String,
    /// When the window resets, seconds since the epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resets_at: Option<i64>,
    /// `five_hour`, `seven_day`, ...
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_limit_type: Option<String>,
    /// The share of the window used (0 to 1), when the CLI reports it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub utilization: Option<f64>,
}

impl RateLimitInfo {
    /// True for a rejection (the usage limit was reached).
    pub fn rejected(&self) -> bool {
        self.status == "rejected"
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl AgentStatus {
    /// Input plus output tokens: what `maxTokens` is checked against. Cache
    /// reads and writes are left out: every turn re-reads the cached prompt,
    /// which would make a budget run out after a few turns of any real work.
    pub fn total_tokens(&self) -> u64 {
        self.input_tokens.saturating_add(self.output_tokens)
    }
}

/// A tool call waiting for its result.
#[derive(Debug, Clone)]
enum Pending {
    Bash,
    File(String),
}

/// What the final `result` said, kept for [`Tally::outcome`].
#[derive(Debug, Clone)]
struct Final {
    outcome: Outcome,
}

/// Per-message usage for the running estimate.
#[derive(Debug, Clone, Copy, Default)]
struct MessageUsage {
    input: u64,
    output: u64,
    cache_read: u64,
    cache_creation: u64,
}

/// Accumulates a run's status from its stream-json lines.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    status: AgentStatus,
    began: bool,
    final_result: Option<Final>,
    /// Tool calls seen, by id (de-duplicates repeated blocks).
    seen_tools: HashSet<String>,
    pending: HashMap<String, Pending>,
    /// Usage per assistant message id, for the running estimate.
    usage: HashMap<String, MessageUsage>,
    /// Main-agent message ids, for the running turn count.
    main_messages: HashSet<String>,
    /// The message id of the `stream_event` message being streamed.
    streaming_message: Option<String>,
    /// `error` of the last assistant event (the CLI's synthetic error message).
    last_assistant_error: Option<String>,
    files_seen: HashSet<String>,
    malformed_lines: u64,
    last_tokens: u64,
    /// Tool calls (any tool) whose result has not come back yet.
    open_tools: HashSet<String>,
    /// The last `system` `status` event said `compacting`.
    compacting: bool,
}

impl Tally {
    /// An empty tally.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds one line of the CLI's stdout; returns what needs acting on now.
    ///
    /// Blank lines, lines that are not JSON objects, and events of unknown
    /// types are ignored.
    pub fn feed(&mut self, line: &str) -> Vec<Signal> {
        let mut signals = Vec::new();
        let line = line.trim();
        if line.is_empty() {
            return signals;
        }
        let event: Value = match serde_json::from_str(line) {
            Ok(v @ Value::Object(_)) => v,
            _ => {
                self.malformed_lines += 1;
                return signals;
            }
        };
        if self.status.session_id.is_none() {
            if let Some(id) = str_at(&event, &["session_id"]) {
                self.status.session_id = Some(id.to_owned());
            }
        }
        match str_at(&event, &["type"]).unwrap_or_default() {
            "system" => self.on_system(&event, &mut signals),
            "assistant" => self.on_assistant(&event, &mut signals),
            "user" => self.on_user(&event),
            "result" => self.on_result(&event, &mut signals),
            "stream_event" => self.on_stream_event(&event),
            "rate_limit_event" => self.on_rate_limit(&event),
            // Unknown event types are ignored, never fatal.
            _ => {}
        }
        self.push_tokens(&mut signals);
        signals
    }

    /// The status so far (final once the result arrived).
    pub fn status(&self) -> &AgentStatus {
        &self.status
    }

    /// The input and output tokens this run spent: the larger of the final
    /// figure and what its streamed messages reported, each way. A CLI
    /// stopped by a signal still ends with a result whose totals leave out
    /// the requests it broke off, though the API served (and billed) them;
    /// budgets must not see the spend shrink when a session is stopped.
    pub fn spent_tokens(&self) -> (u64, u64) {
        let (mut input, mut output) = (0u64, 0u64);
        for u in self.usage.values() {
            input = input.saturating_add(u.input);
            output = output.saturating_add(u.output);
        }
        (
            input.max(self.status.input_tokens),
            output.max(self.status.output_tokens),
        )
    }

    /// A copy of the status so far, e.g. for writing the status file.
    pub fn to_status(&self) -> AgentStatus {
        self.status.clone()
    }

    /// Whether the conversation began (an `init` event or any assistant
    /// message), so that an abnormal end can be resumed.
    ///
    /// The CLI writes its transcript lazily: a run SIGKILLed right after its
    /// first request may have saved nothing, and `--resume` then fails with
    /// [`FailureReason::SessionNotFound`] (start a new conversation then).
    pub fn began(&self) -> bool {
        self.began
    }

    /// Whether the final `result` line was seen.
    pub fn finished(&self) -> bool {
        self.final_result.is_some()
    }

    /// Input plus output tokens so far: the running estimate until the result
    /// arrives, then its totals.
    pub fn total_tokens(&self) -> u64 {
        self.status.total_tokens()
    }

    /// Lines that were not JSON objects (skipped).
    pub fn malformed_lines(&self) -> u64 {
        self.malformed_lines
    }

    /// How the run ended: from the last `result` line, or
    /// [`Outcome::Abnormal`] when there was none.
    pub fn outcome(&self) -> Outcome {
        self.final_result
            .as_ref()
            .map_or(Outcome::Abnormal, |f| f.outcome)
    }

    /// The reason the CLI was retrying when the output stopped, if it was:
    /// useful to wait longer after an abnormal end during a rate limit.
    pub fn last_retry_reason(&self) -> Option<FailureReason> {
        let kind = self.status.last_retry_error.as_deref()?;
        retry_kind_reason(kind)
    }

    /// The usage-limit rejection of this run, if it hit one: the last
    /// `rate_limit_event` said `rejected` and gave a reset time.
    pub fn usage_limit(&self) -> Option<&RateLimitInfo> {
        self.status
            .rate_limit
            .as_ref()
            .filter(|r| r.rejected() && r.resets_at.is_some())
    }

    /// Whether the agent is busy without writing: a tool call is running
    /// (a `tool_use` without its `tool_result` yet), or the CLI said it is
    /// compacting its context. Such silence is not staleness.
    pub fn busy(&self) -> bool {
        self.final_result.is_none() && (self.compacting || !self.open_tools.is_empty())
    }

    fn on_rate_limit(&mut self, event: &Value) {
        let Some(info) = event.get("rate_limit_info") else {
            return;
        };
        let utilization = info
            .get("utilization")
            .and_then(Value::as_f64)
            .or_else(|| info.get("utilisation").and_then(Value::as_f64));
        self.status.rate_limit = Some(RateLimitInfo {
            status: str_at(info, &["status"]).unwrap_or("unknown").to_owned(),
            resets_at: info.get("resetsAt").and_then(Value::as_i64),
            rate_limit_type: str_at(info, &["rateLimitType"]).map(str::to_owned),
            utilization,
        });
    }

    fn mark_began(&mut self, signals: &mut Vec<Signal>) {
        if !self.began {
            self.began = true;
            signals.push(Signal::Began {
                session_id: self.status.session_id.clone(),
            });
        }
    }

    fn on_system(&mut self, event: &Value, signals: &mut Vec<Signal>) {
        match str_at(event, &["subtype"]).unwrap_or_default() {
            "init" => {
                if let Some(id) = str_at(event, &["session_id"]) {
                    self.status.session_id = Some(id.to_owned());
                }
                if let Some(model) = str_at(event, &["model"]) {
                    self.status.model = Some(model.to_owned());
                }
                self.mark_began(signals);
            }
            "api_retry" => {
                self.status.api_retries += 1;
                self.status.last_retry_error = str_at(event, &["error"]).map(str::to_owned);
                self.status.last_retry_delay_ms = event
                    .get("retry_delay_ms")
                    .and_then(Value::as_f64)
                    .filter(|ms| ms.is_finite() && *ms >= 0.0)
                    .map(|ms| ms.round() as u64);
            }
            "status" => {
                self.compacting = str_at(event, &["status"]) == Some("compacting");
            }
            _ => {}
        }
    }

    fn on_assistant(&mut self, event: &Value, signals: &mut Vec<Signal>) {
        let message = event.get("message").unwrap_or(&Value::Null);
        let model = str_at(message, &["model"]);
        // The CLI reports API failures as a synthetic assistant message with a
        // top-level `error` kind; remember it for the outcome.
        if let Some(kind) = str_at(event, &["error"]) {
            self.last_assistant_error = Some(kind.to_owned());
        }
        let synthetic = model == Some("<synthetic>");
        if !synthetic {
            self.mark_began(signals);
            if self.status.model.is_none() {
                self.status.model = model.map(str::to_owned);
            }
        }
        let main_agent = event.get("parent_tool_use_id").is_none_or(Value::is_null);
        if let Some(id) = str_at(message, &["id"]) {
            if !synthetic && self.final_result.is_none() {
                if main_agent && self.main_messages.insert(id.to_owned()) {
                    self.status.turns = self.main_messages.len() as u64;
                }
                let snapshot = MessageUsage {
                    input: u64_at(message, &["usage", "input_tokens"]).unwrap_or(0),
                    output: u64_at(message, &["usage", "output_tokens"]).unwrap_or(0),
                    cache_read: u64_at(message, &["usage", "cache_read_input_tokens"]).unwrap_or(0),
                    cache_creation: u64_at(message, &["usage", "cache_creation_input_tokens"])
                        .unwrap_or(0),
                };
                let entry = self.usage.entry(id.to_owned()).or_default();
                entry.input = entry.input.max(snapshot.input);
                entry.output = entry.output.max(snapshot.output);
                entry.cache_read = entry.cache_read.max(snapshot.cache_read);
                entry.cache_creation = entry.cache_creation.max(snapshot.cache_creation);
                self.recompute_estimate();
            }
        }
        let blocks = message
            .get("content")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        for block in blocks {
            if str_at(block, &["type"]) != Some("tool_use") {
                continue;
            }
            let (Some(id), Some(name)) = (str_at(block, &["id"]), str_at(block, &["name"])) else {
                continue;
            };
            if !self.seen_tools.insert(id.to_owned()) {
                continue;
            }
            if self.final_result.is_none() {
                self.open_tools.insert(id.to_owned());
            }
            let input = block.get("input").unwrap_or(&Value::Null);
            if name == "Bash" {
                self.status.commands_executed += 1;
                self.pending.insert(id.to_owned(), Pending::Bash);
                if let Some(command) = str_at(input, &["command"]) {
                    signals.push(Signal::BashCommand {
                        command: command.to_owned(),
                    });
                }
            } else if let Some((_, field)) = FILE_TOOLS.iter().find(|(tool, _)| *tool == name) {
                if let Some(path) = str_at(input, &[field]) {
                    self.pending
                        .insert(id.to_owned(), Pending::File(path.to_owned()));
                }
            }
        }
    }

    fn on_user(&mut self, event: &Value) {
        let Some(blocks) = event
            .get("message")
            .and_then(|m| m.get("content"))
            .and_then(Value::as_array)
        else {
            return;
        };
        for block in blocks {
            if str_at(block, &["type"]) != Some("tool_result") {
                continue;
            }
            let Some(id) = str_at(block, &["tool_use_id"]) else {
                continue;
            };
            self.open_tools.remove(id);
            let is_error = block
                .get("is_error")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            match self.pending.remove(id) {
                Some(Pending::Bash) if is_error => self.status.commands_failed += 1,
                Some(Pending::File(path)) if !is_error => self.add_file(path),
                _ => {}
            }
        }
    }

    fn add_file(&mut self, path: String) {
        if self.files_seen.contains(&path) {
            return;
        }
        if self.status.files_modified.len() >= FILES_MODIFIED_LIMIT {
            self.status.files_modified_omitted += 1;
            // Still remember it so that a repeat is not counted twice.
            self.files_seen.insert(path);
            return;
        }
        self.files_seen.insert(path.clone());
        self.status.files_modified.push(path);
    }

    fn on_stream_event(&mut self, event: &Value) {
        // Only with --include-partial-messages: raw API events. message_delta
        // carries the real output token count that assistant lines lack.
        let inner = event.get("event").unwrap_or(&Value::Null);
        match str_at(inner, &["type"]).unwrap_or_default() {
            "message_start" => {
                self.streaming_message = str_at(inner, &["message", "id"]).map(str::to_owned);
            }
            "message_delta" => {
                let (Some(id), Some(out)) = (
                    self.streaming_message.clone(),
                    u64_at(inner, &["usage", "output_tokens"]),
                ) else {
                    return;
                };
                if self.final_result.is_none() {
                    let entry = self.usage.entry(id).or_default();
                    entry.output = entry.output.max(out);
                    self.recompute_estimate();
                }
            }
            _ => {}
        }
    }

    fn recompute_estimate(&mut self) {
        let mut sum = MessageUsage::default();
        for u in self.usage.values() {
            sum.input = sum.input.saturating_add(u.input);
            sum.output = sum.output.saturating_add(u.output);
            sum.cache_read = sum.cache_read.saturating_add(u.cache_read);
            sum.cache_creation = sum.cache_creation.saturating_add(u.cache_creation);
        }
        self.status.input_tokens = sum.input;
        self.status.output_tokens = sum.output;
        self.status.cache_read_input_tokens = sum.cache_read;
        self.status.cache_creation_input_tokens = sum.cache_creation;
    }

    fn on_result(&mut self, event: &Value, signals: &mut Vec<Signal>) {
        let s = &mut self.status;
        if let Some(id) = str_at(event, &["session_id"]) {
            s.session_id = Some(id.to_owned());
        }
        let subtype = str_at(event, &["subtype"]).map(str::to_owned);
        let terminal_reason = str_at(event, &["terminal_reason"]).map(str::to_owned);
        let api_status = u64_at(event, &["api_error_status"]).and_then(|n| u16::try_from(n).ok());
        let is_error = event
            .get("is_error")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let text = str_at(event, &["result"]).map(str::to_owned).or_else(|| {
            let errors: Vec<&str> = event
                .get("errors")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            (!errors.is_empty()).then(|| errors.join("; "))
        });

        if let Some(turns) = u64_at(event, &["num_turns"]) {
            s.turns = turns;
        }
        if let Some(cost) = event.get("total_cost_usd").and_then(Value::as_f64) {
            s.cost_usd = Some(cost);
        }
        s.duration_ms = u64_at(event, &["duration_ms"]);
        // Tokens: modelUsage (all models, sub-agents included); `usage` only
        // covers the main agent, so it is the fallback when modelUsage is absent.
        match event.get("modelUsage").and_then(Value::as_object) {
            Some(models) if !models.is_empty() => {
                let sum = |field: &str| {
                    models
                        .values()
                        .filter_map(|m| u64_at(m, &[field]))
                        .fold(0u64, u64::saturating_add)
                };
                s.input_tokens = sum("inputTokens");
                s.output_tokens = sum("outputTokens");
                s.cache_read_input_tokens = sum("cacheReadInputTokens");
                s.cache_creation_input_tokens = sum("cacheCreationInputTokens");
            }
            Some(_) => {
                // An empty modelUsage: no model request succeeded.
                s.input_tokens = u64_at(event, &["usage", "input_tokens"]).unwrap_or(0);
                s.output_tokens = u64_at(event, &["usage", "output_tokens"]).unwrap_or(0);
                s.cache_read_input_tokens =
                    u64_at(event, &["usage", "cache_read_input_tokens"]).unwrap_or(0);
                s.cache_creation_input_tokens =
                    u64_at(event, &["usage", "cache_creation_input_tokens"]).unwrap_or(0);
            }
            None => {
                if let Some(usage) = event.get("usage") {
                    s.input_tokens = u64_at(usage, &["input_tokens"]).unwrap_or(s.input_tokens);
                    s.output_tokens = u64_at(usage, &["output_tokens"]).unwrap_or(s.output_tokens);
                }
            }
        }

        s.permission_denials.clear();
        s.permission_denials_omitted = 0;
        if let Some(denials) = event.get("permission_denials").and_then(Value::as_array) {
            for d in denials {
                if s.permission_denials.len() >= DENIALS_LIMIT {
                    s.permission_denials_omitted += 1;
                    continue;
                }
                s.permission_denials.push(denial(d));
            }
        }

        s.result_text = text.as_deref().map(|t| truncate(t, RESULT_TEXT_LIMIT));
        s.result_subtype = subtype.clone();
        s.terminal_reason = terminal_reason.clone();
        s.api_error_status = api_status;

        let outcome = judge(&Verdict {
            subtype: subtype.as_deref(),
            is_error,
            terminal_reason: terminal_reason.as_deref(),
            api_status,
            assistant_error: self.last_assistant_error.as_deref(),
            retry_error: self.status.last_retry_error.as_deref(),
            text: text.as_deref().unwrap_or_default(),
        });
        self.final_result = Some(Final { outcome });
        self.open_tools.clear();
        self.compacting = false;
        // Results end a turn: a further init (stream-json input) starts anew.
        self.last_assistant_error = None;
        signals.push(Signal::Finished { outcome });
    }

    fn push_tokens(&mut self, signals: &mut Vec<Signal>) {
        let total = self.status.total_tokens();
        if total != self.last_tokens {
            self.last_tokens = total;
            // Keep Tokens ahead of Finished so that a budget check sees the
            // final count before the end.
            let at = signals
                .iter()
                .position(|s| matches!(s, Signal::Finished { .. }))
                .unwrap_or(signals.len());
            signals.insert(at, Signal::Tokens { total });
        }
    }
}

/// The inputs of the outcome decision.
struct Verdict<'a> {
    subtype: Option<&'a str>,
    is_error: bool,
    terminal_reason: Option<&'a str>,
    api_status: Option<u16>,
    assistant_error: Option<&'a str>,
    retry_error: Option<&'a str>,
    text: &'a str,
}

/// Classifies a final result. The order matters: explicit subtypes and
/// terminal reasons first, then the HTTP status, then the message text and
/// error kinds (the 529 case has no status and an unhelpful `server_error`
/// kind; only its text says "Overloaded").
fn judge(v: &Verdict<'_>) -> Outcome {
    let failed = |reason| Outcome::Failed { reason };
    match v.subtype {
        Some("error_max_turns") => return failed(FailureReason::MaxTurns),
        Some("error_max_budget_usd") => return failed(FailureReason::BudgetExceeded),
        _ => {}
    }
    match v.terminal_reason {
        Some("max_turns") => return failed(FailureReason::MaxTurns),
        Some("prompt_too_long") => return failed(FailureReason::PromptTooLong),
        Some("aborted_tools" | "aborted_streaming") => return failed(FailureReason::Interrupted),
        _ => {}
    }
    let error_subtype = v.subtype.is_some_and(|s| s.starts_with("error"));
    if !v.is_error && !error_subtype {
        return Outcome::Success;
    }
    if error_subtype && v.text.contains("No conversation found") {
        return failed(FailureReason::SessionNotFound);
    }
    if error_subtype {
        // error_during_execution (not an interruption), or a subtype newer
        // than this code: the CLI failed, not the API.
        return failed(FailureReason::ExecutionError);
    }
    failed(api_failure(v))
}

fn api_failure(v: &Verdict<'_>) -> FailureReason {
    match v.api_status {
        Some(401 | 403) => return FailureReason::AuthFailed,
        Some(429) => return FailureReason::RateLimited,
        Some(529) => return FailureReason::Overloaded,
        Some(413) => return FailureReason::PromptTooLong,
        _ => {}
    }
    let text = v.text.to_lowercase();
    if text.contains("prompt is too long") {
        return FailureReason::PromptTooLong;
    }
    if v.assistant_error == Some("authentication_failed")
        || text.contains("not logged in")
        || text.contains("invalid api key")
        || text.contains("failed to authenticate")
    {
        return FailureReason::AuthFailed;
    }
    if v.assistant_error == Some("rate_limit")
        || text.contains("(429)")
        || text.contains("rate limit")
        || text.contains("rate_limit")
    {
        return FailureReason::RateLimited;
    }
    if v.assistant_error == Some("overloaded")
        || text.contains("overloaded")
        || text.contains(" 529 ")
    {
        return FailureReason::Overloaded;
    }
    if text.contains("unable to connect")
        || text.contains("timed out")
        || text.contains("stream ended")
        || text.contains("connection")
        || text.contains("network")
    {
        return FailureReason::NetworkError;
    }
    if v.api_status.is_none() {
        // No HTTP status and no telling text: the retry events may know.
        if let Some(reason) = v.retry_error.and_then(retry_kind_reason) {
            return reason;
        }
    }
    FailureReason::ApiError
}

/// Maps the `error` kind of an `api_retry` event to a reason.
fn retry_kind_reason(kind: &str) -> Option<FailureReason> {
    match kind {
        "authentication_failed" => Some(FailureReason::AuthFailed),
        "rate_limit" => Some(FailureReason::RateLimited),
        "overloaded" => Some(FailureReason::Overloaded),
        "server_error" => Some(FailureReason::ApiError),
        // Connection refused, DNS failures and timeouts show as "unknown".
        "unknown" => Some(FailureReason::NetworkError),
        _ => None,
    }
}

fn denial(d: &Value) -> PermissionDenial {
    let tool_name = str_at(d, &["tool_name"]).unwrap_or("unknown").to_owned();
    let input = d.get("tool_input").unwrap_or(&Value::Null);
    let detail = str_at(input, &["command"])
        .or_else(|| str_at(input, &["file_path"]))
        .or_else(|| str_at(input, &["notebook_path"]))
        .or_else(|| str_at(input, &["url"]))
        .map(|s| truncate(s, DENIAL_DETAIL_LIMIT))
        .unwrap_or_default();
    let suggested_rule = match str_at(input, &["command"]) {
        // The exact command, in the CLI's rule syntax. Parentheses inside the
        // command would break the rule, so fall back to the tool's name.
        Some(cmd) if tool_name == "Bash" && !cmd.contains(['(', ')', '\n']) => {
            format!("Bash({cmd})")
        }
        _ => tool_name.clone(),
    };
    PermissionDenial {
        tool_use_id: str_at(d, &["tool_use_id"]).unwrap_or_default().to_owned(),
        tool_name,
        detail,
        suggested_rule,
    }
}

/// Cuts `s` to at most `limit` characters, marking the cut with "…".
pub(crate) fn truncate(s: &str, limit: usize) -> String {
    match s.char_indices().nth(limit) {
        None => s.to_owned(),
        Some((at, _)) => {
            let mut out = s[..at].to_owned();
            out.push('…');
            out
        }
    }
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(v, |v, k| v.get(k))?.as_str()
}

fn u64_at(v: &Value, path: &[&str]) -> Option<u64> {
    let v = path.iter().try_fold(v, |v, k| v.get(k))?;
    // Counts are integers, but be lenient with floats (e.g. "12.0").
    v.as_u64().or_else(|| {
        v.as_f64()
            .filter(|f| f.is_finite() && *f >= 0.0)
            .map(|f| f as u64)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn fixture_dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/claude")
    }

    /// Feeds a whole fixture, returning the tally and every signal.
    fn run(name: &str) -> (Tally, Vec<Signal>) {
        let text = std::fs::read_to_string(fixture_dir().join(name)).unwrap();
        let mut tally = Tally::new();
        let mut signals = Vec::new();
        for line in text.lines() {
            signals.extend(tally.feed(line));
        }
        (tally, signals)
    }

    const fn failed(reason: FailureReason) -> Outcome {
        Outcome::Failed { reason }
    }

    /// What each transcript must give: outcome, began, turns, input and
    /// output tokens, cost, commands (run, failed), API retries.
    struct Expect {
        file: &'static str,
        outcome: Outcome,
        began: bool,
        turns: u64,
        tokens: (u64, u64),
        cost: Option<f64>,
        commands: (u64, u64),
        retries: u64,
    }

    // A table row builder: one positional argument per column keeps the
    // table below readable.
    #[allow(clippy::too_many_arguments)]
    const fn e(
        file: &'static str,
        outcome: Outcome,
        began: bool,
        turns: u64,
        tokens: (u64, u64),
        cost: Option<f64>,
        commands: (u64, u64),
        retries: u64,
    ) -> Expect {
        Expect {
            file,
            outcome,
            began,
            turns,
            tokens,
            cost,
            commands,
            retries,
        }
    }

    use FailureReason::*;
    use Outcome::{Abnormal, Success};

    #[rustfmt::skip]
    const EXPECTED: &[Expect] = &[
        e("ok_text.stream-json.jsonl", Success, true, 1, (120, 12), Some(0.0009000000000000001), (0, 0), 0),
        e("ok_text.json", Success, false, 1, (120, 12), Some(0.0009000000000000001), (0, 0), 0),
        e("ok_bash_tool.stream-json.jsonl", Success, true, 2, (260, 31), Some(0.002075), (1, 0), 0),
        e("ok_partial_messages.stream-json.jsonl", Success, true, 2, (260, 31), Some(0.002075), (1, 0), 0),
        e("ok_write_edit.stream-json.jsonl", Success, true, 4, (600, 69), Some(0.004725), (1, 0), 0),
        e("ok_subagent_task.stream-json.jsonl", Success, true, 2, (530, 62), Some(0.0042), (1, 0), 0),
        e("ok_stdin_stream_input.stream-json.jsonl", Success, true, 1, (260, 24), Some(0.0019000000000000002), (0, 0), 0),
        e("ok_after_stream_drop_nonstreaming_fallback.stream-json.jsonl", Success, true, 1, (120, 12), Some(0.0009000000000000001), (0, 0), 0),
        e("denied_bash_default_mode.stream-json.jsonl", Success, true, 2, (260, 31), Some(0.002075), (1, 1), 0),
        e("denied_bash_disallowed_rule.stream-json.jsonl", Success, true, 2, (260, 31), Some(0.002075), (1, 1), 0),
        e("err_400_prompt_too_long.stream-json.jsonl", failed(PromptTooLong), true, 1, (0, 0), Some(0.0), (0, 0), 0),
        e("err_401_retries1.stream-json.jsonl", failed(AuthFailed), true, 1, (0, 0), Some(0.0), (0, 0), 1),
        e("err_401_default_retries_killed_at_120s.stream-json.jsonl", Abnormal, true, 0, (0, 0), None, (0, 0), 9),
        e("err_403.stream-json.jsonl", failed(AuthFailed), true, 1, (0, 0), Some(0.0), (0, 0), 0),
        e("err_404_model_not_found.json", failed(ApiError), false, 1, (0, 0), Some(0.0), (0, 0), 0),
        e("err_429_retries1.stream-json.jsonl", failed(RateLimited), true, 1, (0, 0), Some(0.0), (0, 0), 1),
        e("err_429_default_retries_killed_at_120s.stream-json.jsonl", Abnormal, true, 0, (0, 0), None, (0, 0), 9),
        e("err_500_retries2.stream-json.jsonl", failed(ApiError), true, 1, (0, 0), Some(0.0), (0, 0), 2),
        e("err_529_overloaded.stream-json.jsonl", failed(Overloaded), true, 1, (0, 0), Some(0.0), (0, 0), 2),
        e("err_sse_error_event.stream-json.jsonl", failed(Overloaded), true, 1, (360, 3), Some(0.001875), (0, 0), 0),
        e("err_stream_dropped.stream-json.jsonl", failed(NetworkError), true, 1, (0, 0), Some(0.0), (0, 0), 0),
        e("err_conn_refused_retries0.stream-json.jsonl", failed(NetworkError), true, 1, (0, 0), Some(0.0), (0, 0), 0),
        e("err_conn_refused_default_retries_killed_at_120s.stream-json.jsonl", Abnormal, true, 0, (0, 0), None, (0, 0), 9),
        e("err_offline_no_network_retries3.stream-json.jsonl", failed(NetworkError), true, 1, (0, 0), Some(0.0), (0, 0), 3),
        e("err_request_timeout.stream-json.jsonl", failed(NetworkError), true, 1, (0, 0), Some(0.0), (0, 0), 1),
        e("err_not_logged_in.stream-json.jsonl", failed(AuthFailed), true, 1, (0, 0), Some(0.0), (0, 0), 0),
        e("err_not_logged_in.json", failed(AuthFailed), false, 1, (0, 0), Some(0.0), (0, 0), 0),
        e("err_max_turns.stream-json.jsonl", failed(MaxTurns), true, 3, (260, 38), Some(0.00225), (2, 0), 0),
        e("err_max_budget.stream-json.jsonl", failed(BudgetExceeded), true, 3, (450, 57), Some(0.0036750000000000003), (3, 0), 0),
        e("sig_int_during_bash_tool.stream-json.jsonl", failed(Interrupted), true, 3, (120, 19), Some(0.001075), (1, 1), 0),
        e("sig_int_during_api_request.stream-json.jsonl", Abnormal, true, 0, (0, 0), None, (0, 0), 0),
        e("sig_term_during_api_request.stream-json.jsonl", Abnormal, true, 0, (0, 0), None, (0, 0), 0),
        // The live estimate: one message of 120 input tokens and the
        // message_start snapshot's single output token.
        e("sig_term_during_bash_tool.stream-json.jsonl", Abnormal, true, 1, (120, 1), None, (1, 0), 0),
        e("err_resume_unknown_session.stream-json.jsonl", failed(SessionNotFound), false, 0, (0, 0), Some(0.0), (0, 0), 0),
        e("synthetic_unknown_events.stream-json.jsonl", Success, true, 2, (1010, 202), Some(0.5), (1, 1), 1),
        e("synthetic_no_init_killed.stream-json.jsonl", Abnormal, true, 1, (300, 1), None, (1, 0), 0),
        e("ulimit_oauth_print.stream-json.jsonl", failed(RateLimited), true, 1, (0, 0), Some(0.0), (0, 0), 0),
        e("ulimit_oauth_stdin.stream-json.jsonl", failed(RateLimited), true, 1, (0, 0), Some(0.0), (0, 0), 0),
        e("ulimit_apikey_print.stream-json.jsonl", failed(RateLimited), true, 1, (0, 0), Some(0.0), (0, 0), 1),
        e("uwarn_oauth_print.stream-json.jsonl", Success, true, 1, (120, 12), Some(0.0009000000000000001), (0, 0), 0),
    ];

    /// Files in the fixture folder that are not CLI output.
    const NOT_TRANSCRIPTS: &[&str] = &["index.json", "api_request_sample.json", "README.md"];

    #[test]
    fn every_transcript_has_an_expectation() {
        for entry in std::fs::read_dir(fixture_dir()).unwrap() {
            let name = entry.unwrap().file_name().to_string_lossy().into_owned();
            if NOT_TRANSCRIPTS.contains(&name.as_str()) {
                continue;
            }
            assert!(
                EXPECTED.iter().any(|e| e.file == name),
                "fixture {name} has no expectation in EXPECTED"
            );
        }
    }

    #[test]
    fn every_transcript_parses_as_expected() {
        for exp in EXPECTED {
            let (tally, signals) = run(exp.file);
            let s = tally.status();
            let f = exp.file;
            assert_eq!(tally.outcome(), exp.outcome, "{f}: outcome");
            assert_eq!(tally.began(), exp.began, "{f}: began");
            assert_eq!(tally.finished(), exp.outcome != Abnormal, "{f}: finished");
            assert_eq!(s.turns, exp.turns, "{f}: turns");
            assert_eq!((s.input_tokens, s.output_tokens), exp.tokens, "{f}: tokens");
            match (s.cost_usd, exp.cost) {
                (Some(got), Some(want)) => assert!((got - want).abs() < 1e-12, "{f}: cost {got}"),
                (got, want) => assert_eq!(got, want, "{f}: cost"),
            }
            assert_eq!(
                (s.commands_executed, s.commands_failed),
                exp.commands,
                "{f}: commands"
            );
            assert_eq!(s.api_retries, exp.retries, "{f}: api retries");
            assert!(s.session_id.is_some(), "{f}: session id");
            // Signals agree with the state.
            let bash = signals
                .iter()
                .filter(|s| matches!(s, Signal::BashCommand { .. }))
                .count() as u64;
            assert_eq!(bash, s.commands_executed, "{f}: BashCommand signals");
            let finished: Vec<_> = signals
                .iter()
                .filter_map(|s| match s {
                    Signal::Finished { outcome } => Some(*outcome),
                    _ => None,
                })
                .collect();
            assert_eq!(
                finished.last().copied().unwrap_or(Abnormal),
                exp.outcome,
                "{f}"
            );
            let began = signals
                .iter()
                .filter(|s| matches!(s, Signal::Began { .. }))
                .count();
            assert_eq!(began, usize::from(exp.began), "{f}: Began signals");
            if let Some(Signal::Tokens { total }) = signals
                .iter()
                .rev()
                .find(|s| matches!(s, Signal::Tokens { .. }))
            {
                assert_eq!(*total, s.total_tokens(), "{f}: last Tokens signal");
            }
            if exp.outcome != Abnormal {
                assert!(s.result_subtype.is_some(), "{f}: subtype");
                assert!(s.result_text.is_some(), "{f}: result text");
            } else {
                assert!(s.result_subtype.is_none() && s.cost_usd.is_none(), "{f}");
            }
        }
    }

    #[test]
    fn success_metrics() {
        let (tally, signals) = run("ok_text.stream-json.jsonl");
        let s = tally.status();
        assert_eq!(
            s.session_id.as_deref(),
            Some("46d881e0-1db7-40e7-b798-272ba66c72a3")
        );
        assert_eq!(s.model.as_deref(), Some("claude-opus-4-8[1m]"));
        assert_eq!(s.result_subtype.as_deref(), Some("success"));
        assert_eq!(
            s.result_text.as_deref(),
            Some("Hello from the fake Anthropic API.")
        );
        assert_eq!(s.terminal_reason.as_deref(), Some("completed"));
        assert_eq!(s.duration_ms, Some(140));
        assert_eq!(
            signals,
            vec![
                Signal::Began {
                    session_id: Some("46d881e0-1db7-40e7-b798-272ba66c72a3".into())
                },
                Signal::Tokens { total: 121 },
                Signal::Tokens { total: 132 },
                Signal::Finished { outcome: Success },
            ]
        );
    }

    #[test]
    fn bash_commands_are_signalled() {
        let (_, signals) = run("ok_bash_tool.stream-json.jsonl");
        assert!(signals.contains(&Signal::BashCommand {
            command: "echo hello-from-fake > fake_out.txt && cat fake_out.txt".into()
        }));
        // Sub-agent calls count too.
        let (tally, signals) = run("ok_subagent_task.stream-json.jsonl");
        assert!(signals.contains(&Signal::BashCommand {
            command: "echo from-subagent".into()
        }));
        // Cost and tokens include the sub-agent (modelUsage), not `usage`.
        assert_eq!(tally.status().input_tokens, 530);
        // The sub-agent's messages are not main-agent turns.
        assert_eq!(tally.status().turns, 2);
    }

    #[test]
    fn files_modified_once_and_only_on_success() {
        let (tally, _) = run("ok_write_edit.stream-json.jsonl");
        assert_eq!(
            tally.status().files_modified,
            vec!["/srv/work/fake_edit_sj/notes.txt".to_string()]
        );
        let (tally, _) = run("synthetic_unknown_events.stream-json.jsonl");
        assert_eq!(
            tally.status().files_modified,
            vec!["/w/a.txt".to_string(), "/w/n.ipynb".to_string()]
        );
    }

    #[test]
    fn permission_denials_and_rules() {
        let (tally, _) = run("denied_bash_disallowed_rule.stream-json.jsonl");
        assert_eq!(
            tally.status().permission_denials,
            vec![PermissionDenial {
                tool_name: "Bash".into(),
                tool_use_id: "toolu_0a5a3b51ba61470caf14efc6".into(),
                detail: "touch a.txt".into(),
                suggested_rule: "Bash(touch a.txt)".into(),
            }]
        );
        let (tally, _) = run("synthetic_unknown_events.stream-json.jsonl");
        let d = &tally.status().permission_denials;
        assert_eq!(d.len(), 2);
        assert_eq!(d[0].suggested_rule, "WebFetch");
        assert_eq!(d[0].detail, "http://example.invalid/");
        // Parentheses cannot go inside a rule: the tool name instead.
        assert_eq!(d[1].suggested_rule, "Bash");
    }

    #[test]
    fn usage_limits_are_recorded_and_only_rejections_park() {
        let (tally, _) = run("ulimit_oauth_print.stream-json.jsonl");
        let limit = tally.usage_limit().expect("a rejection");
        assert_eq!(limit.resets_at, Some(1796164384));
        assert_eq!(limit.rate_limit_type.as_deref(), Some("five_hour"));
        // Informational events are kept in the status but are no rejection.
        let (tally, _) = run("uwarn_oauth_print.stream-json.jsonl");
        assert_eq!(tally.outcome(), Success);
        assert!(tally.usage_limit().is_none());
        let info = tally.status().rate_limit.as_ref().expect("recorded");
        assert_eq!(info.status, "allowed");
        assert!(info.resets_at.is_some());
        // An API key's 429 has no reset time: no rejection, but the CLI's
        // retry delay is kept.
        let (tally, _) = run("ulimit_apikey_print.stream-json.jsonl");
        assert!(tally.usage_limit().is_none());
        assert_eq!(tally.status().last_retry_delay_ms, Some(549));
        // A rejection without a reset time is not a park either.
        let mut t = Tally::new();
        t.feed(r#"{"type":"rate_limit_event","rate_limit_info":{"status":"rejected"}}"#);
        assert!(t.usage_limit().is_none());
        t.feed(r#"{"type":"rate_limit_event","rate_limit_info":{"status":"allowed_warning","resetsAt":5,"utilization":0.92}}"#);
        assert_eq!(
            t.status().rate_limit.as_ref().and_then(|r| r.utilization),
            Some(0.92)
        );
    }

    #[test]
    fn running_tools_and_compacting_are_busy() {
        let mut t = Tally::new();
        assert!(!t.busy());
        t.feed(r#"{"type":"assistant","message":{"id":"m1","model":"x","content":[{"type":"tool_use","id":"t1","name":"Read","input":{}}]}}"#);
        assert!(t.busy(), "a tool call without its result is busy");
        t.feed(
            r#"{"type":"user","message":{"content":[{"type":"tool_result","tool_use_id":"t1"}]}}"#,
        );
        assert!(!t.busy());
        t.feed(r#"{"type":"system","subtype":"status","status":"compacting"}"#);
        assert!(t.busy(), "compacting is busy");
        t.feed(r#"{"type":"system","subtype":"status","status":null}"#);
        assert!(!t.busy());
    }

    #[test]
    fn unknown_events_and_fields_are_ignored() {
        let (tally, signals) = run("synthetic_unknown_events.stream-json.jsonl");
        let s = tally.status();
        assert_eq!(s.model.as_deref(), Some("claude-future-9"));
        assert_eq!(tally.malformed_lines(), 4);
        assert_eq!(s.last_retry_error.as_deref(), Some("server_error"));
        // A repeated tool_use block is counted once.
        assert_eq!(
            signals
                .iter()
                .filter(|s| matches!(s, Signal::BashCommand { .. }))
                .count(),
            1
        );
        assert_eq!(s.result_text.as_deref(), Some("All done."));
    }

    #[test]
    fn error_results_keep_their_text() {
        let (tally, _) = run("err_max_turns.stream-json.jsonl");
        let s = tally.status();
        assert_eq!(s.result_subtype.as_deref(), Some("error_max_turns"));
        assert_eq!(
            s.result_text.as_deref(),
            Some("Reached maximum number of turns (2)")
        );
        let (tally, _) = run("err_401_retries1.stream-json.jsonl");
        let s = tally.status();
        assert_eq!(s.api_error_status, Some(401));
        assert_eq!(
            s.result_text.as_deref(),
            Some("Invalid API key · Fix external API key")
        );
    }

    #[test]
    fn abnormal_ends_remember_the_retry_reason() {
        let cases = [
            (
                "err_401_default_retries_killed_at_120s.stream-json.jsonl",
                AuthFailed,
            ),
            (
                "err_429_default_retries_killed_at_120s.stream-json.jsonl",
                RateLimited,
            ),
            (
                "err_conn_refused_default_retries_killed_at_120s.stream-json.jsonl",
                NetworkError,
            ),
        ];
        for (file, reason) in cases {
            let (tally, _) = run(file);
            assert_eq!(tally.outcome(), Abnormal, "{file}");
            assert_eq!(tally.last_retry_reason(), Some(reason), "{file}");
        }
    }

    #[test]
    fn the_spent_tokens_never_shrink_when_the_result_counts_fewer() {
        // A CLI stopped by SIGTERM ends with a result that leaves out the
        // request it broke off: the spend is what the API reported.
        let mut tally = Tally::new();
        tally.feed(r#"{"type":"assistant","message":{"id":"m1","model":"claude-x","content":[],"usage":{"input_tokens":900,"output_tokens":40}}}"#);
        tally.feed(r#"{"type":"result","subtype":"success","is_error":false,"num_turns":1,"modelUsage":{"claude-x":{"inputTokens":300,"outputTokens":50}}}"#);
        assert_eq!(
            tally.status().input_tokens,
            300,
            "the CLI's figure is shown as is"
        );
        assert_eq!(tally.spent_tokens(), (900, 50));
    }

    #[test]
    fn running_estimate_uses_partial_message_usage() {
        // With --include-partial-messages, message_delta carries the real
        // output count; the estimate picks it up before the result.
        let text =
            std::fs::read_to_string(fixture_dir().join("ok_partial_messages.stream-json.jsonl"))
                .unwrap();
        let mut tally = Tally::new();
        for line in text.lines() {
            if line.contains("\"type\":\"result\"") {
                break;
            }
            tally.feed(line);
        }
        assert_eq!(tally.status().output_tokens, 19 + 12);
        assert_eq!(tally.status().input_tokens, 120 + 140);
    }

    #[test]
    fn result_text_is_truncated() {
        let long = "é".repeat(RESULT_TEXT_LIMIT + 50);
        let line = serde_json::json!({
            "type": "result", "subtype": "success", "is_error": false, "result": long
        })
        .to_string();
        let mut tally = Tally::new();
        tally.feed(&line);
        let text = tally.status().result_text.clone().unwrap();
        assert_eq!(text.chars().count(), RESULT_TEXT_LIMIT + 1);
        assert!(text.ends_with('…'));
    }

    #[test]
    fn files_modified_is_capped() {
        let mut tally = Tally::new();
        for i in 0..FILES_MODIFIED_LIMIT + 5 {
            let id = format!("t{i}");
            tally.feed(
                &serde_json::json!({"type": "assistant", "message": {"id": "m", "content": [
                    {"type": "tool_use", "id": id, "name": "Write", "input": {"file_path": format!("/f{i}")}}
                ]}})
                .to_string(),
            );
            tally.feed(
                &serde_json::json!({"type": "user", "message": {"content": [
                    {"type": "tool_result", "tool_use_id": id}
                ]}})
                .to_string(),
            );
        }
        assert_eq!(tally.status().files_modified.len(), FILES_MODIFIED_LIMIT);
        assert_eq!(tally.status().files_modified_omitted, 5);
    }

    #[test]
    fn truncated_lines_never_panic() {
        // Every prefix of every line of a few rich transcripts.
        for file in [
            "ok_write_edit.stream-json.jsonl",
            "ok_subagent_task.stream-json.jsonl",
            "err_max_budget.stream-json.jsonl",
        ] {
            let text = std::fs::read_to_string(fixture_dir().join(file)).unwrap();
            let mut tally = Tally::new();
            for line in text.lines() {
                for (i, _) in line.char_indices().step_by(7) {
                    tally.feed(&line[..i]);
                }
                tally.feed(line);
            }
        }
    }

    #[test]
    fn status_serializes_camel_case() {
        let (tally, _) = run("denied_bash_default_mode.stream-json.jsonl");
        let json = serde_json::to_value(tally.status()).unwrap();
        for key in [
            "sessionId",
            "model",
            "turns",
            "inputTokens",
            "outputTokens",
            "costUsd",
            "commandsExecuted",
            "commandsFailed",
            "permissionDenials",
            "apiRetries",
            "resultSubtype",
            "resultText",
        ] {
            assert!(json.get(key).is_some(), "missing {key} in {json}");
        }
        let back: AgentStatus = serde_json::from_value(json).unwrap();
        assert_eq!(&back, tally.status());
        // Reading an older or newer status file is lenient too.
        let partial: AgentStatus =
            serde_json::from_str(r#"{"turns": 3, "somethingNew": 1}"#).unwrap();
        assert_eq!(partial.turns, 3);
    }

    #[test]
    fn outcome_serializes_with_reason() {
        assert_eq!(
            serde_json::to_string(&failed(RateLimited)).unwrap(),
            r#"{"outcome":"Failed","reason":"RateLimited"}"#
        );
        assert_eq!(failed(RateLimited).to_string(), "Failed (RateLimited)");
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_input_never_panics(lines in proptest::collection::vec(".{0,200}", 0..20)) {
            let mut tally = Tally::new();
            for line in &lines {
                tally.feed(line);
            }
            let _ = tally.outcome();
        }

        #[test]
        fn arbitrary_json_never_panics(
            ty in proptest::sample::select(vec!["system", "assistant", "user", "result", "stream_event", "x"]),
            sub in proptest::sample::select(vec!["init", "api_retry", "success", "error_max_turns", "weird"]),
            n in proptest::num::i64::ANY,
            f in proptest::num::f64::ANY,
            s in ".{0,20}",
        ) {
            let mut tally = Tally::new();
            for v in [
                serde_json::json!({"type": ty, "subtype": sub, "session_id": n, "model": [s.clone()]}),
                serde_json::json!({"type": ty, "subtype": sub, "num_turns": n, "total_cost_usd": s.clone(),
                    "modelUsage": {"m": {"inputTokens": f, "outputTokens": n}}, "permission_denials": [n, {"tool_input": n}]}),
                serde_json::json!({"type": ty, "message": {"id": s.clone(), "content": [{"type": "tool_use", "id": s.clone(), "name": "Bash", "input": {"command": n}}], "usage": {"input_tokens": f}}}),
                serde_json::json!({"type": ty, "message": {"content": [{"type": "tool_result", "tool_use_id": s.clone(), "is_error": n}]}}),
                serde_json::json!({"type": ty, "event": {"type": "message_delta", "usage": {"output_tokens": f}}}),
            ] {
                tally.feed(&v.to_string());
            }
            let _ = tally.outcome();
        }
    }
}
