//! Building an agent CLI's argv and environment from `spec.agent`.
//!
//! A [`Profile`] knows one CLI's flags; [`profile`] picks it by
//! [`AgentKind`]. Adding another CLI means adding a profile and an
//! `AgentKind` variant; the controller only sees [`Invocation`]s.
//!
//! The Claude profile's flags were checked against the CLI (2.1.197): see
//! `tests/fixtures/claude/index.json` and `tests/agent_cli.rs`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use uuid::Uuid;

use crate::api::agent::{AgentKind, AgentSpec, Charter, Constraints, PermissionMode};

/// Prompts longer than this (in bytes) go to the CLI's stdin instead of argv:
/// Linux caps one argument at 128 KiB (`MAX_ARG_STRLEN`).
pub const ARGV_PROMPT_LIMIT: usize = 100 * 1024;
/// Largest prompt file read.
pub const PROMPT_FILE_LIMIT: u64 = 4 * 1024 * 1024;
/// The CLI retries API errors itself with up to ~3 minutes of backoff by
/// default (10 retries); sessionlet's own backoff, which the user configured
/// and can see in the status, should do the waiting instead.
pub const DEFAULT_MAX_RETRIES: &str = "1";
/// A prompt for continuing a conversation after an abnormal end.
pub const RESUME_PROMPT: &str =
    "The previous run was interrupted. Continue the task from where you left off.";

/// The prompt for continuing a conversation after its account's usage limit reset.
pub const QUOTA_RESUME_PROMPT: &str =
    "The usage limit has reset. Continue the task from where you left off.";

/// Errors building an invocation.
#[derive(Debug, thiserror::Error)]
pub enum ArgvError {
    /// Neither `prompt` nor `promptFile` is set (or the prompt is blank).
    #[error("spec.agent needs a non-empty prompt or promptFile")]
    NoPrompt,
    /// The prompt file could not be read.
    #[error("cannot read promptFile {path}: {source}")]
    PromptFile {
        /// The resolved path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The prompt file is larger than [`PROMPT_FILE_LIMIT`].
    #[error("promptFile {path} is larger than {limit} bytes")]
    PromptFileTooLarge {
        /// The resolved path.
        path: PathBuf,
        /// The limit.
        limit: u64,
    },
    /// A value cannot be passed to the CLI.
    #[error("spec.agent.{field}: {message}")]
    Invalid {
        /// The manifest field.
        field: &'static str,
        /// What is wrong.
        message: String,
    },
}

/// How an attempt starts its conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conversation {
    /// A new conversation with this id (`--session-id`). The id must not have
    /// been used before: the CLI refuses a reused one.
    New {
        /// The id the status keeps as `agent.sessionId`.
        session_id: Uuid,
    },
    /// Continue an earlier conversation (`--resume`).
    Resume {
        /// The conversation's id.
        session_id: Uuid,
    },
}

impl Conversation {
    /// The conversation's id.
    pub fn session_id(&self) -> Uuid {
        match self {
            Conversation::New { session_id } | Conversation::Resume { session_id } => *session_id,
        }
    }
}

/// Everything a profile needs to build one attempt's invocation.
#[derive(Debug, Clone, Copy)]
pub struct LaunchRequest<'a> {
    /// `spec.agent`.
    pub spec: &'a AgentSpec,
    /// The text sent as the user message: the task prompt (see
    /// [`load_prompt`]) for a new conversation, e.g. [`RESUME_PROMPT`] when
    /// resuming.
    pub prompt: &'a str,
    /// `spec.charter`, rendered into the appended system prompt.
    pub charter: Option<&'a Charter>,
    /// The global `--policy` constraints, if any (their forbidden commands
    /// become deny rules as well).
    pub policy: Option<&'a Constraints>,
    /// New or resumed conversation.
    pub conversation: Conversation,
    /// `spec.env`: the user's variables win over the profile's defaults
    /// (except where a default is a safety setting).
    pub user_env: &'a BTreeMap<String, String>,
    /// The manifest's directory: relative paths (`addDirs`, `mcpConfig`,
    /// a `binary` with a slash) resolve against it.
    pub base_dir: &'a Path,
}

/// A ready-to-spawn agent command.
#[derive(Clone, PartialEq, Eq)]
pub struct Invocation {
    /// The program (a name looked up on PATH, or a path).
    pub program: String,
    /// The arguments after the program.
    pub args: Vec<String>,
    /// Variables to set on top of the session's environment (apply them after
    /// `spec.env`: the profile already left out defaults the user overrode).
    pub env: Vec<(String, String)>,
    /// Text to write to the CLI's stdin before closing it (a prompt too long
    /// for argv); `None` means stdin is /dev/null.
    pub stdin: Option<String>,
}

impl fmt::Debug for Invocation {
    // Environment values can be secrets in other profiles: show names only.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Invocation")
            .field("program", &self.program)
            .field("args", &self.args)
            .field(
                "env",
                &self.env.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
            )
            .field("stdin", &self.stdin.as_ref().map(|s| s.len()))
            .finish()
    }
}

/// One agent CLI: how to run it headless.
pub trait Profile: Sync {
    /// The manifest's `kind`.
    fn kind(&self) -> AgentKind;
    /// The binary used when `spec.agent.binary` is unset.
    fn default_binary(&self) -> &'static str;
    /// Builds the argv and environment of one attempt.
    fn build(&self, req: &LaunchRequest<'_>) -> Result<Invocation, ArgvError>;
    /// The CLI's deny rule for a forbidden command prefix, or `None` when the
    /// prefix cannot be expressed as a rule (the controller still watches it).
    fn forbidden_command_rule(&self, command: &str) -> Option<String>;
    /// Whether the CLI's stderr says the conversation to resume does not exist
    /// (then start a new one).
    fn is_unknown_session(&self, stderr: &str) -> bool;
    /// Whether the CLI's stderr says a new conversation's id is already taken
    /// (then use another id, or resume it).
    fn is_session_in_use(&self, stderr: &str) -> bool;
}

/// The profile for a kind of agent.
pub fn profile(kind: AgentKind) -> &'static dyn Profile {
    match kind {
        AgentKind::Claude => &ClaudeProfile,
    }
}

/// Reads the task prompt: `prompt`, or `promptFile` relative to `base_dir`.
pub fn load_prompt(spec: &AgentSpec, base_dir: &Path) -> Result<String, ArgvError> {
    let text = match (&spec.prompt, &spec.prompt_file) {
        (Some(p), _) => p.clone(),
        (None, Some(file)) => {
            let path = base_dir.join(file);
            let io = |source| ArgvError::PromptFile {
                path: path.clone(),
                source,
            };
            // Never blocks on a FIFO; refuses anything but a regular file.
            use crate::manifest::files::{read_regular, ReadError};
            let bytes = match read_regular(&path, PROMPT_FILE_LIMIT) {
                Ok(b) => b,
                Err(ReadError::TooLarge(_)) => {
                    return Err(ArgvError::PromptFileTooLarge {
                        path,
                        limit: PROMPT_FILE_LIMIT,
                    })
                }
                Err(ReadError::Io(e)) => return Err(io(e)),
                Err(other) => return Err(io(std::io::Error::other(other.to_string()))),
            };
            String::from_utf8(bytes)
                .map_err(|e| io(std::io::Error::new(std::io::ErrorKind::InvalidData, e)))?
        }
        (None, None) => return Err(ArgvError::NoPrompt),
    };
    if text.trim().is_empty() {
        return Err(ArgvError::NoPrompt);
    }
    Ok(text)
}

/// Claude Code (`claude -p`), version 2.1.x.
#[derive(Debug, Clone, Copy, Default)]
pub struct ClaudeProfile;

impl ClaudeProfile {
    /// The variable that keeps the CLI from contacting anything but the API.
    pub const NONESSENTIAL_TRAFFIC: &'static str = "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC";
    /// The variable that bounds the CLI's own API retries.
    pub const MAX_RETRIES: &'static str = "CLAUDE_CODE_MAX_RETRIES";

    /// The `--disallowedTools` rules of a spec plus the forbidden commands of
    /// the charter and the global policy, de-duplicated, in order.
    pub fn disallowed_rules(&self, req: &LaunchRequest<'_>) -> Vec<String> {
        let mut rules: Vec<String> = Vec::new();
        let mut push = |rule: String| {
            if !rules.contains(&rule) {
                rules.push(rule);
            }
        };
        for rule in &req.spec.disallowed_tools {
            push(rule.clone());
        }
        let charter = req.charter.map(|c| &c.constraints);
        for constraints in charter.into_iter().chain(req.policy) {
            for command in &constraints.forbidden_commands {
                if let Some(rule) = self.forbidden_command_rule(command) {
                    push(rule);
                }
            }
        }
        rules
    }
}

impl Profile for ClaudeProfile {
    fn kind(&self) -> AgentKind {
        AgentKind::Claude
    }

    fn default_binary(&self) -> &'static str {
        "claude"
    }

    fn build(&self, req: &LaunchRequest<'_>) -> Result<Invocation, ArgvError> {
        let spec = req.spec;
        if req.prompt.trim().is_empty() {
            return Err(ArgvError::NoPrompt);
        }
        let program = match spec.binary.as_deref() {
            None => self.default_binary().to_owned(),
            Some(b) if b.contains('/') => path_arg("binary", &req.base_dir.join(b))?,
            Some(b) => b.to_owned(),
        };

        // stream-json output requires --verbose in print mode.
        let mut args: Vec<String> = vec![
            "-p".into(),
            "--output-format".into(),
            "stream-json".into(),
            "--verbose".into(),
        ];
        match req.conversation {
            Conversation::New { session_id } => {
                args.extend(["--session-id".into(), session_id.to_string()])
            }
            Conversation::Resume { session_id } => {
                args.extend(["--resume".into(), session_id.to_string()])
            }
        }
        if let Some(model) = &spec.model {
            args.extend(["--model".into(), model.clone()]);
        }
        if let Some(turns) = spec.max_turns {
            if turns == 0 {
                return Err(invalid("maxTurns", "must be at least 1"));
            }
            args.extend(["--max-turns".into(), turns.to_string()]);
        }
        if let Some(usd) = spec.max_budget_usd {
            if !(usd.is_finite() && usd > 0.0) {
                return Err(invalid("maxBudgetUsd", "must be a positive number"));
            }
            args.extend(["--max-budget-usd".into(), usd.to_string()]);
        }
        if let Some(mode) = spec.permission_mode {
            args.extend(["--permission-mode".into(), permission_mode(mode).into()]);
        }
        // Each rule is its own argv item: a rule may hold spaces and commas
        // (`Bash(git commit:*)`), which the CLI keeps together that way.
        let allowed = allowed_rules(req);
        if !allowed.is_empty() {
            args.push("--allowedTools".into());
            args.extend(allowed);
        }
        let disallowed = self.disallowed_rules(req);
        if !disallowed.is_empty() {
            args.push("--disallowedTools".into());
            args.extend(disallowed);
        }
        if !spec.add_dirs.is_empty() {
            args.push("--add-dir".into());
            for dir in &spec.add_dirs {
                args.push(path_arg("addDirs", &req.base_dir.join(dir))?);
            }
        }
        if let Some(mcp) = &spec.mcp_config {
            args.extend([
                "--mcp-config".into(),
                path_arg("mcpConfig", &req.base_dir.join(mcp))?,
            ]);
        }
        let system = system_prompt(req.charter, spec.append_system_prompt.as_deref());
        if !system.is_empty() {
            if system.len() > ARGV_PROMPT_LIMIT {
                return Err(invalid(
                    "appendSystemPrompt",
                    format!(
                        "the charter and appendSystemPrompt together exceed {ARGV_PROMPT_LIMIT} bytes"
                    ),
                ));
            }
            args.extend(["--append-system-prompt".into(), system]);
        }
        args.extend(spec.extra_args.iter().cloned());

        // The prompt goes last, after `--`: the list options above are
        // variadic and would swallow a bare positional, and a prompt starting
        // with '-' would read as an option. A prompt too long for one argv
        // item goes to stdin instead (the CLI reads it from a pipe).
        let stdin = if spec.input == crate::api::agent::AgentInput::Stream {
            // The prompt is the first message; more follow on the same pipe.
            args.extend(["--input-format".into(), "stream-json".into()]);
            Some(stream_user_message(req.prompt))
        } else if req.prompt.len() > ARGV_PROMPT_LIMIT {
            Some(req.prompt.to_owned())
        } else {
            args.extend(["--".into(), req.prompt.to_owned()]);
            None
        };
        if let Some(bad) = args.iter().find(|a| a.contains('\0')) {
            let shown: String = bad.chars().take(40).collect();
            return Err(invalid(
                "extraArgs",
                format!("an argument contains a NUL byte: {shown:?}"),
            ));
        }

        // Without this the CLI makes several connections to api.anthropic.com
        // (telemetry, updates) even with ANTHROPIC_BASE_URL elsewhere; it is
        // set whatever spec.env says.
        let mut env = vec![(Self::NONESSENTIAL_TRAFFIC.to_owned(), "1".to_owned())];
        if !req.user_env.contains_key(Self::MAX_RETRIES) {
            env.push((Self::MAX_RETRIES.to_owned(), DEFAULT_MAX_RETRIES.to_owned()));
        }
        Ok(Invocation {
            program,
            args,
            env,
            stdin,
        })
    }

    fn forbidden_command_rule(&self, command: &str) -> Option<String> {
        // `Bash(<prefix>:*)` denies the prefix on a word boundary, the bare
        // command, and any part of a compound command (`a && b`, `a; b`,
        // `a | b`), as checked against the CLI. Parentheses cannot be quoted
        // inside a rule.
        let words: Vec<&str> = command.split_whitespace().collect();
        if words.is_empty() || command.contains(['(', ')']) {
            return None;
        }
        Some(format!("Bash({}:*)", words.join(" ")))
    }

    fn is_unknown_session(&self, stderr: &str) -> bool {
        stderr.contains("No conversation found with session ID")
    }

    fn is_session_in_use(&self, stderr: &str) -> bool {
        stderr.contains("is already in use")
    }
}

/// One user message for `--input-format stream-json`, as a line.
pub fn stream_user_message(text: &str) -> String {
    let msg = serde_json::json!({
        "type": "user",
        "message": {"role": "user", "content": [{"type": "text", "text": text}]},
    });
    format!("{msg}\n")
}

/// The `--allowedTools` rules: `spec.agent.allowedTools`, then the charter's
/// `resources.allowedTools` (the charter states them, so the CLI must enforce
/// them too, not only read them in the system prompt), de-duplicated, in order.
fn allowed_rules(req: &LaunchRequest<'_>) -> Vec<String> {
    let charter = req
        .charter
        .and_then(|c| c.resources.as_ref())
        .map(|r| r.allowed_tools.as_slice())
        .unwrap_or_default();
    let mut rules: Vec<String> = Vec::new();
    for rule in req.spec.allowed_tools.iter().chain(charter) {
        if !rules.contains(rule) {
            rules.push(rule.clone());
        }
    }
    rules
}

/// The appended system prompt: the rendered charter, then the user's text.
fn system_prompt(charter: Option<&Charter>, append: Option<&str>) -> String {
    let mut parts: Vec<String> = Vec::new();
    if let Some(c) = charter {
        let md = super::charter::render(c);
        if !md.trim().is_empty() {
            parts.push(md.trim_end().to_owned());
        }
    }
    if let Some(a) = append {
        if !a.trim().is_empty() {
            parts.push(a.trim_end().to_owned());
        }
    }
    parts.join("\n\n")
}

fn permission_mode(mode: PermissionMode) -> &'static str {
    match mode {
        PermissionMode::Default => "default",
        PermissionMode::AcceptEdits => "acceptEdits",
        PermissionMode::Auto => "auto",
        PermissionMode::Plan => "plan",
        PermissionMode::BypassPermissions => "bypassPermissions",
        PermissionMode::DontAsk => "dontAsk",
    }
}

fn path_arg(field: &'static str, path: &Path) -> Result<String, ArgvError> {
    path.to_str()
        .map(str::to_owned)
        .ok_or_else(|| invalid(field, format!("{} is not valid UTF-8", path.display())))
}

fn invalid(field: &'static str, message: impl Into<String>) -> ArgvError {
    ArgvError::Invalid {
        field,
        message: message.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::agent::Identity;

    const SID: &str = "11111111-2222-4333-8444-555555555555";

    fn spec() -> AgentSpec {
        AgentSpec {
            prompt: Some("do it".into()),
            ..AgentSpec::default()
        }
    }

    fn build_with(
        spec: &AgentSpec,
        charter: Option<&Charter>,
        policy: Option<&Constraints>,
        env: &BTreeMap<String, String>,
        conversation: Conversation,
    ) -> Invocation {
        let prompt = load_prompt(spec, Path::new("/m")).unwrap();
        profile(AgentKind::Claude)
            .build(&LaunchRequest {
                spec,
                prompt: &prompt,
                charter,
                policy,
                conversation,
                user_env: env,
                base_dir: Path::new("/m"),
            })
            .unwrap()
    }

    fn new_conv() -> Conversation {
        Conversation::New {
            session_id: SID.parse().unwrap(),
        }
    }

    fn build(spec: &AgentSpec) -> Invocation {
        build_with(spec, None, None, &BTreeMap::new(), new_conv())
    }

    /// The values following `flag` up to the next option.
    fn values<'a>(inv: &'a Invocation, flag: &str) -> Vec<&'a str> {
        let Some(i) = inv.args.iter().position(|a| a == flag) else {
            return vec![];
        };
        inv.args[i + 1..]
            .iter()
            .take_while(|a| !a.starts_with("--"))
            .map(String::as_str)
            .collect()
    }

    #[test]
    fn minimal_invocation() {
        let inv = build(&spec());
        assert_eq!(inv.program, "claude");
        assert_eq!(
            inv.args,
            [
                "-p",
                "--output-format",
                "stream-json",
                "--verbose",
                "--session-id",
                SID,
                "--",
                "do it"
            ]
        );
        assert_eq!(
            inv.env,
            [
                (
                    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC".to_string(),
                    "1".to_string()
                ),
                ("CLAUDE_CODE_MAX_RETRIES".to_string(), "1".to_string()),
            ]
        );
        assert_eq!(inv.stdin, None);
    }

    #[test]
    fn every_field_becomes_its_flag() {
        let s = AgentSpec {
            binary: Some("bin/claude".into()),
            model: Some("sonnet".into()),
            max_turns: Some(7),
            max_budget_usd: Some(0.5),
            max_tokens: Some(1000),
            allowed_tools: vec!["Bash(git commit:*)".into(), "Edit".into()],
            disallowed_tools: vec!["WebFetch".into()],
            permission_mode: Some(PermissionMode::AcceptEdits),
            append_system_prompt: Some("- Be terse.".into()),
            add_dirs: vec!["../shared".into(), "/abs".into()],
            mcp_config: Some("mcp.json".into()),
            extra_args: vec!["--fallback-model".into(), "haiku".into()],
            ..spec()
        };
        let inv = build(&s);
        assert_eq!(inv.program, "/m/bin/claude");
        assert_eq!(values(&inv, "--model"), ["sonnet"]);
        assert_eq!(values(&inv, "--max-turns"), ["7"]);
        assert_eq!(values(&inv, "--max-budget-usd"), ["0.5"]);
        assert_eq!(values(&inv, "--permission-mode"), ["acceptEdits"]);
        assert_eq!(
            values(&inv, "--allowedTools"),
            ["Bash(git commit:*)", "Edit"]
        );
        assert_eq!(values(&inv, "--disallowedTools"), ["WebFetch"]);
        assert_eq!(values(&inv, "--add-dir"), ["/m/../shared", "/abs"]);
        assert_eq!(values(&inv, "--mcp-config"), ["/m/mcp.json"]);
        assert_eq!(values(&inv, "--append-system-prompt"), ["- Be terse."]);
        // maxTokens is the controller's, not a CLI flag.
        assert!(!inv.args.iter().any(|a| a.contains("1000")));
        // extraArgs come after the profile's flags, before the prompt.
        let n = inv.args.len();
        assert_eq!(
            &inv.args[n - 4..],
            ["--fallback-model", "haiku", "--", "do it"]
        );
    }

    #[test]
    fn resume_uses_the_same_id() {
        let inv = build_with(
            &spec(),
            None,
            None,
            &BTreeMap::new(),
            Conversation::Resume {
                session_id: SID.parse().unwrap(),
            },
        );
        assert_eq!(values(&inv, "--resume"), [SID]);
        assert!(!inv.args.iter().any(|a| a == "--session-id"));
    }

    #[test]
    fn forbidden_commands_become_deny_rules() {
        let charter = Charter {
            constraints: Constraints {
                forbidden_commands: vec![
                    "rm -rf".into(),
                    "  git   push  ".into(),
                    "echo $(x)".into(),
                    "".into(),
                ],
                ..Constraints::default()
            },
            ..Charter::default()
        };
        let policy = Constraints {
            forbidden_commands: vec!["shutdown".into(), "rm -rf".into()],
            ..Constraints::default()
        };
        let s = AgentSpec {
            disallowed_tools: vec!["Bash(rm -rf:*)".into()],
            ..spec()
        };
        let inv = build_with(
            &s,
            Some(&charter),
            Some(&policy),
            &BTreeMap::new(),
            new_conv(),
        );
        assert_eq!(
            values(&inv, "--disallowedTools"),
            ["Bash(rm -rf:*)", "Bash(git push:*)", "Bash(shutdown:*)"]
        );
    }

    #[test]
    fn stream_input_sends_the_prompt_as_the_first_message() {
        let s = AgentSpec {
            input: crate::api::agent::AgentInput::Stream,
            ..spec()
        };
        let inv = build(&s);
        assert_eq!(values(&inv, "--input-format"), ["stream-json"]);
        assert!(!inv.args.iter().any(|a| a == "do it"), "{:?}", inv.args);
        let line = inv.stdin.expect("the first message");
        let v: serde_json::Value = serde_json::from_str(line.trim_end()).unwrap();
        assert_eq!(v["type"], "user");
        assert_eq!(v["message"]["content"][0]["text"], "do it");
        assert!(line.ends_with('\n'));
    }

    #[test]
    fn charter_allowed_tools_become_allow_rules() {
        let charter = Charter {
            resources: Some(crate::api::agent::CharterResources {
                allowed_tools: vec!["Read".into(), "Bash(git status:*)".into(), "Edit".into()],
                ..Default::default()
            }),
            ..Charter::default()
        };
        let s = AgentSpec {
            allowed_tools: vec!["Edit".into()],
            ..spec()
        };
        let inv = build_with(&s, Some(&charter), None, &BTreeMap::new(), new_conv());
        assert_eq!(
            values(&inv, "--allowedTools"),
            ["Edit", "Read", "Bash(git status:*)"]
        );
        // Without a charter nothing is added.
        let inv = build_with(&spec(), None, None, &BTreeMap::new(), new_conv());
        assert!(values(&inv, "--allowedTools").is_empty());
    }

    #[test]
    fn charter_then_append_in_system_prompt() {
        let charter = Charter {
            identity: Some(Identity {
                name: Some("Ada".into()),
                ..Identity::default()
            }),
            ..Charter::default()
        };
        let s = AgentSpec {
            append_system_prompt: Some("Extra.".into()),
            ..spec()
        };
        let inv = build_with(&s, Some(&charter), None, &BTreeMap::new(), new_conv());
        let sys = values(&inv, "--append-system-prompt")[0];
        assert!(sys.contains("Ada"), "{sys}");
        assert!(sys.ends_with("\n\nExtra."), "{sys}");
    }

    #[test]
    fn user_env_overrides_max_retries_but_not_traffic() {
        let env: BTreeMap<String, String> = [
            ("CLAUDE_CODE_MAX_RETRIES".to_string(), "5".to_string()),
            (
                "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC".to_string(),
                "0".to_string(),
            ),
        ]
        .into();
        let inv = build_with(&spec(), None, None, &env, new_conv());
        assert_eq!(
            inv.env,
            [(
                "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC".to_string(),
                "1".to_string()
            )]
        );
    }

    #[test]
    fn dash_prompt_stays_a_prompt_and_long_prompt_uses_stdin() {
        let s = AgentSpec {
            prompt: Some("--help me".into()),
            allowed_tools: vec!["Bash".into()],
            ..spec()
        };
        let inv = build(&s);
        let n = inv.args.len();
        assert_eq!(&inv.args[n - 2..], ["--", "--help me"]);

        let long = "x".repeat(ARGV_PROMPT_LIMIT + 1);
        let s = AgentSpec {
            prompt: Some(long.clone()),
            ..spec()
        };
        let inv = build(&s);
        assert_eq!(inv.stdin.as_deref(), Some(long.as_str()));
        assert!(!inv.args.iter().any(|a| a == "--"));
    }

    #[test]
    fn invalid_values_are_refused() {
        let req = |s: &AgentSpec, prompt: &str| {
            ClaudeProfile
                .build(&LaunchRequest {
                    spec: s,
                    prompt,
                    charter: None,
                    policy: None,
                    conversation: new_conv(),
                    user_env: &BTreeMap::new(),
                    base_dir: Path::new("/"),
                })
                .map(|_| ())
        };
        let bad_budget = AgentSpec {
            max_budget_usd: Some(f64::NAN),
            ..spec()
        };
        assert!(matches!(
            req(&bad_budget, "x"),
            Err(ArgvError::Invalid {
                field: "maxBudgetUsd",
                ..
            })
        ));
        assert!(matches!(req(&spec(), "  "), Err(ArgvError::NoPrompt)));
        let nul = AgentSpec {
            extra_args: vec!["a\0b".into()],
            ..spec()
        };
        assert!(matches!(req(&nul, "x"), Err(ArgvError::Invalid { .. })));
    }

    #[test]
    fn prompt_file_is_read_relative_to_the_manifest() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("task.md"), "from a file").unwrap();
        let s = AgentSpec {
            prompt: None,
            prompt_file: Some("task.md".into()),
            ..AgentSpec::default()
        };
        assert_eq!(load_prompt(&s, dir.path()).unwrap(), "from a file");
        let missing = AgentSpec {
            prompt_file: Some("nope.md".into()),
            ..s.clone()
        };
        assert!(matches!(
            load_prompt(&missing, dir.path()),
            Err(ArgvError::PromptFile { .. })
        ));
        assert!(matches!(
            load_prompt(&AgentSpec::default(), dir.path()),
            Err(ArgvError::NoPrompt)
        ));
    }

    #[test]
    fn stderr_recognition() {
        let p = profile(AgentKind::Claude);
        assert!(p.is_unknown_session(
            "No conversation found with session ID: 11111111-2222-3333-4444-555555555555\n"
        ));
        assert!(p.is_session_in_use("Error: Session ID x is already in use.\n"));
        assert!(!p.is_unknown_session(""));
    }

    #[test]
    fn debug_hides_env_values() {
        let mut inv = build(&spec());
        inv.env
            .push(("ANTHROPIC_API_KEY".into(), "sk-secret".into()));
        let shown = format!("{inv:?}");
        assert!(shown.contains("ANTHROPIC_API_KEY"));
        assert!(!shown.contains("sk-secret"));
    }
}
