//! The agent building blocks against the REAL Claude Code CLI.
//!
//! Each test starts the fake Messages API (`common/fake_api.rs`) on
//! 127.0.0.1, builds the argv with the Claude profile, runs the CLI with
//! `ANTHROPIC_BASE_URL` pointing at the fake, a temporary HOME and config
//! folder, and feeds its stdout to a `Tally`. Nothing but 127.0.0.1 is
//! contacted: the CLI's non-essential traffic is off, and any proxy-able
//! request would go to a closed loopback port.
//!
//! The binary: `SESSIONLET_CLAUDE_BIN`, else `.ci/claude/node_modules/.bin/claude`
//! (installed by `.ci/install-claude.sh`), else `claude` on PATH. Without one
//! the CLI tests print "SKIPPED: no claude binary" and pass.

#[path = "common/claude.rs"]
mod claude;
#[path = "common/fake_api.rs"]
mod fake_api;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use fake_api::{FakeApi, Scenario};
use nix::sys::signal::{kill, Signal as Sig};
use nix::unistd::Pid;
use sessionlet::agent::{
    profile, restart_hint, should_resume, Conversation, FailureReason, LaunchRequest, Outcome,
    Policy, RestartHint, Signal, Tally,
};
use sessionlet::api::agent::{AgentKind, AgentSpec, Charter, Constraints, PermissionMode};
use uuid::Uuid;

/// Longest a single CLI run may take: the CLI is slow to start on a loaded
/// 2-core machine, and the 429 case waits for one `retry-after`.
const RUN_DEADLINE: Duration = Duration::from_secs(180);

/// A temporary HOME (with the CLI's config folder) and working directory.
struct Sandbox {
    _dir: tempfile::TempDir,
    home: PathBuf,
    work: PathBuf,
}

impl Sandbox {
    fn new() -> Sandbox {
        let dir = tempfile::tempdir().expect("tempdir");
        let home = dir.path().join("home");
        let work = dir.path().join("work");
        std::fs::create_dir_all(home.join(".claude")).expect("mkdir home");
        std::fs::create_dir_all(&work).expect("mkdir work");
        // Canonical: the CLI reports its cwd resolved.
        let work = work.canonicalize().expect("canonicalize");
        Sandbox {
            _dir: dir,
            home,
            work,
        }
    }
}

/// What one attempt is given.
struct Attempt<'a> {
    spec: AgentSpec,
    charter: Option<&'a Charter>,
    conversation: Conversation,
    user_env: BTreeMap<String, String>,
    /// Overrides the fake's default scenario through the base URL path.
    base_url: String,
}

impl<'a> Attempt<'a> {
    fn new(fake: &FakeApi, prompt: &str) -> Attempt<'a> {
        Attempt {
            spec: AgentSpec {
                prompt: Some(prompt.into()),
                ..AgentSpec::default()
            },
            charter: None,
            conversation: Conversation::New {
                session_id: Uuid::new_v4(),
            },
            user_env: BTreeMap::new(),
            base_url: fake.base_url(),
        }
    }
}

/// A CLI process whose stdout is being read.
struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
    stderr: JoinHandle<String>,
    started: Instant,
}

/// A finished attempt.
struct Run {
    tally: Tally,
    signals: Vec<Signal>,
    status: ExitStatus,
    stderr: String,
    stdout: Vec<String>,
}

impl Run {
    fn describe(&self) -> String {
        format!(
            "exit {:?}\n--- stderr\n{}\n--- stdout\n{}",
            self.status,
            self.stderr,
            self.stdout.join("\n")
        )
    }
}

fn start(bin: &Path, sandbox: &Sandbox, attempt: &Attempt<'_>) -> Running {
    let prompt = sessionlet::agent::load_prompt(&attempt.spec, &sandbox.work).expect("prompt");
    let inv = profile(AgentKind::Claude)
        .build(&LaunchRequest {
            spec: &attempt.spec,
            prompt: &prompt,
            charter: attempt.charter,
            policy: None,
            conversation: attempt.conversation,
            user_env: &attempt.user_env,
            base_dir: &sandbox.work,
        })
        .expect("build invocation");
    let mut cmd = Command::new(bin);
    cmd.args(&inv.args)
        .current_dir(&sandbox.work)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", &sandbox.home)
        .env("CLAUDE_CONFIG_DIR", sandbox.home.join(".claude"))
        .env("ANTHROPIC_BASE_URL", &attempt.base_url)
        .env("ANTHROPIC_API_KEY", fake_api::API_KEY)
        // Anything the CLI would fetch through a proxy hits a closed port.
        .env("HTTPS_PROXY", "http://127.0.0.1:9")
        .env("HTTP_PROXY", "http://127.0.0.1:9")
        .env("NO_PROXY", "127.0.0.1,localhost")
        .envs(&attempt.user_env)
        .envs(inv.env.iter().map(|(k, v)| (k, v)))
        .stdin(if inv.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn claude");
    if let Some(text) = inv.stdin {
        let mut stdin = child.stdin.take().expect("stdin");
        // A thread: a large prompt can fill the pipe before the CLI reads it.
        std::thread::spawn(move || {
            let _ = stdin.write_all(text.as_bytes());
        });
    }
    let stdout = child.stdout.take().expect("stdout");
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut stderr_pipe = child.stderr.take().expect("stderr");
    let stderr = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr_pipe.read_to_string(&mut s);
        s
    });
    Running {
        child,
        lines,
        stderr,
        started: Instant::now(),
    }
}

impl Running {
    fn pid(&self) -> Pid {
        Pid::from_raw(i32::try_from(self.child.id()).expect("pid"))
    }

    /// Reads stdout to the end, calling `on_signal` with each signal as it
    /// arrives (it may signal the process), and waits for the exit.
    fn finish_with(mut self, mut on_signal: impl FnMut(&Signal, Pid)) -> Run {
        let mut tally = Tally::new();
        let mut signals = Vec::new();
        let mut stdout = Vec::new();
        let pid = self.pid();
        loop {
            let left = RUN_DEADLINE.saturating_sub(self.started.elapsed());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    for s in tally.feed(&line) {
                        on_signal(&s, pid);
                        signals.push(s);
                    }
                    stdout.push(line);
                }
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    panic!(
                        "the CLI ran past {RUN_DEADLINE:?}; stdout so far:\n{}",
                        stdout.join("\n")
                    );
                }
            }
        }
        let status = self.child.wait().expect("wait");
        let stderr = self.stderr.join().unwrap_or_default();
        Run {
            tally,
            signals,
            status,
            stderr,
            stdout,
        }
    }

    fn finish(self) -> Run {
        self.finish_with(|_, _| {})
    }
}

fn run(bin: &Path, sandbox: &Sandbox, attempt: &Attempt<'_>) -> Run {
    start(bin, sandbox, attempt).finish()
}

fn bash_commands(run: &Run) -> Vec<&str> {
    run.signals
        .iter()
        .filter_map(|s| match s {
            Signal::BashCommand { command } => Some(command.as_str()),
            _ => None,
        })
        .collect()
}

#[test]
fn text_run_reports_metrics() {
    let bin = require_claude!("text_run_reports_metrics");
    let fake = FakeApi::start(Scenario::Text);
    let sandbox = Sandbox::new();
    // A prompt that starts with '-' proves the `--` before it.
    let attempt = Attempt::new(&fake, "-say hello (marker 7f3a)");
    let sid = attempt.conversation.session_id();
    let r = run(&bin, &sandbox, &attempt);
    let s = r.tally.status();
    assert_eq!(r.tally.outcome(), Outcome::Success, "{}", r.describe());
    assert!(r.status.success(), "{}", r.describe());
    assert!(r.tally.began());
    assert_eq!(s.session_id.as_deref(), Some(sid.to_string().as_str()));
    assert!(s.model.is_some());
    assert_eq!(s.turns, 1);
    assert!(s.input_tokens > 0 && s.output_tokens > 0, "{s:?}");
    assert!(s.cost_usd.is_some_and(|c| c > 0.0), "{s:?}");
    assert_eq!(s.result_subtype.as_deref(), Some("success"));
    assert_eq!(s.result_text.as_deref(), Some(fake_api::FINAL_TEXT));
    assert_eq!(r.tally.malformed_lines(), 0, "{}", r.describe());
    // The prompt arrived whole, and the Tokens signal tracked the final count.
    let reqs = fake.requests();
    assert!(reqs
        .iter()
        .any(|q| q.message_text().contains("-say hello (marker 7f3a)")));
    assert!(reqs.iter().all(|q| q.authenticated));
    assert!(r.signals.contains(&Signal::Tokens {
        total: s.total_tokens()
    }));
}

#[test]
fn bash_tool_call_is_counted() {
    let bin = require_claude!("bash_tool_call_is_counted");
    let fake = FakeApi::start(Scenario::Bash);
    let sandbox = Sandbox::new();
    let mut attempt = Attempt::new(&fake, "run a command");
    attempt.spec.allowed_tools = vec!["Bash".into()];
    let r = run(&bin, &sandbox, &attempt);
    let s = r.tally.status();
    assert_eq!(r.tally.outcome(), Outcome::Success, "{}", r.describe());
    assert_eq!(bash_commands(&r), [fake_api::BASH_COMMAND]);
    assert_eq!((s.commands_executed, s.commands_failed), (1, 0), "{s:?}");
    assert_eq!(s.turns, 2);
    assert_eq!(fake.message_requests(), 2);
    let out = std::fs::read_to_string(sandbox.work.join("fake_out.txt")).expect("tool ran");
    assert_eq!(out.trim(), "hello-from-fake");
}

#[test]
fn write_and_edit_are_counted() {
    let bin = require_claude!("write_and_edit_are_counted");
    let fake = FakeApi::start(Scenario::WriteEdit);
    let sandbox = Sandbox::new();
    let mut attempt = Attempt::new(&fake, "make notes");
    attempt.spec.permission_mode = Some(PermissionMode::AcceptEdits);
    let r = run(&bin, &sandbox, &attempt);
    let s = r.tally.status();
    assert_eq!(r.tally.outcome(), Outcome::Success, "{}", r.describe());
    let notes = sandbox.work.join("notes.txt");
    assert_eq!(
        s.files_modified,
        [notes.to_string_lossy().into_owned()],
        "{}",
        r.describe()
    );
    assert_eq!(
        std::fs::read_to_string(&notes).expect("notes.txt"),
        "line one\nline 2 (edited)\n"
    );
    assert_eq!(s.turns, 3);
    assert!(s.permission_denials.is_empty());
}

#[test]
fn unauthorized_is_auth_failed() {
    let bin = require_claude!("unauthorized_is_auth_failed");
    let fake = FakeApi::start(Scenario::Unauthorized);
    let sandbox = Sandbox::new();
    // The profile's default CLAUDE_CODE_MAX_RETRIES=1: one retry, then out.
    let r = run(&bin, &sandbox, &Attempt::new(&fake, "hi"));
    assert_eq!(
        r.tally.outcome(),
        Outcome::Failed {
            reason: FailureReason::AuthFailed
        },
        "{}",
        r.describe()
    );
    assert_eq!(r.status.code(), Some(1));
    assert_eq!(r.tally.status().api_retries, 1);
    assert_eq!(r.tally.status().api_error_status, Some(401));
    assert_eq!(fake.message_requests(), 2);
    assert_eq!(
        restart_hint(&r.tally.outcome(), None),
        RestartHint::DoNotRetry
    );
}

#[test]
fn rate_limit_is_rate_limited() {
    let bin = require_claude!("rate_limit_is_rate_limited");
    let fake = FakeApi::start(Scenario::RateLimited);
    let sandbox = Sandbox::new();
    let mut attempt = Attempt::new(&fake, "hi");
    // The manifest's env overrides the profile's default.
    attempt
        .user_env
        .insert("CLAUDE_CODE_MAX_RETRIES".into(), "0".into());
    let r = run(&bin, &sandbox, &attempt);
    assert_eq!(
        r.tally.outcome(),
        Outcome::Failed {
            reason: FailureReason::RateLimited
        },
        "{}",
        r.describe()
    );
    assert_eq!(r.tally.status().api_retries, 0);
    assert_eq!(fake.message_requests(), 1);
    assert!(matches!(
        restart_hint(&r.tally.outcome(), None),
        RestartHint::WaitLonger { .. }
    ));
}

#[test]
fn max_turns_is_max_turns() {
    let bin = require_claude!("max_turns_is_max_turns");
    let fake = FakeApi::start(Scenario::ToolLoop);
    let sandbox = Sandbox::new();
    let mut attempt = Attempt::new(&fake, "loop");
    attempt.spec.max_turns = Some(2);
    attempt.spec.allowed_tools = vec!["Bash".into()];
    let r = run(&bin, &sandbox, &attempt);
    let s = r.tally.status();
    assert_eq!(
        r.tally.outcome(),
        Outcome::Failed {
            reason: FailureReason::MaxTurns
        },
        "{}",
        r.describe()
    );
    assert_eq!(s.result_subtype.as_deref(), Some("error_max_turns"));
    assert_eq!(s.commands_executed, 2);
    assert!(s.cost_usd.is_some_and(|c| c > 0.0));
}

#[test]
fn forbidden_command_is_denied_by_the_cli_and_flagged() {
    let bin = require_claude!("forbidden_command_is_denied_by_the_cli_and_flagged");
    let fake = FakeApi::start(Scenario::Commands(vec!["ls && rm -rf victim".into()]));
    let sandbox = Sandbox::new();
    std::fs::create_dir(sandbox.work.join("victim")).expect("mkdir victim");
    let charter = Charter {
        constraints: Constraints {
            forbidden_commands: vec!["rm -rf".into()],
            ..Constraints::default()
        },
        ..Charter::default()
    };
    let mut attempt = Attempt::new(&fake, "clean up");
    attempt.spec.allowed_tools = vec!["Bash".into()];
    attempt.charter = Some(&charter);
    let r = run(&bin, &sandbox, &attempt);
    let s = r.tally.status();
    assert_eq!(r.tally.outcome(), Outcome::Success, "{}", r.describe());
    // The deny rule derived from forbiddenCommands held, even in a compound
    // command that --allowedTools Bash would otherwise allow.
    assert!(sandbox.work.join("victim").is_dir(), "{}", r.describe());
    assert_eq!(s.permission_denials.len(), 1, "{s:?}");
    assert_eq!(s.permission_denials[0].tool_name, "Bash");
    assert_eq!((s.commands_executed, s.commands_failed), (1, 1));
    // And the controller's own watch flags the call.
    let policy = Policy::new([&charter.constraints]).expect("policy");
    let cmds = bash_commands(&r);
    assert_eq!(cmds, ["ls && rm -rf victim"]);
    let v = policy.check_shell(cmds[0]).expect("violation");
    assert_eq!(v.rule, "rm -rf");
    // The charter reached the system prompt.
    assert!(fake
        .requests()
        .iter()
        .any(|q| q.system_text().contains("# Charter") && q.system_text().contains("rm -rf")));
}

#[test]
fn killed_run_resumes_the_same_conversation() {
    let bin = require_claude!("killed_run_resumes_the_same_conversation");
    let fake = FakeApi::start(Scenario::Hang);
    let sandbox = Sandbox::new();
    let first = Attempt::new(&fake, "start the work");
    let sid = first.conversation.session_id();
    let running = start(&bin, &sandbox, &first);
    // Stop it while it waits on the API, SIGINT first as the controller
    // does: the CLI then flushes its transcript (after a SIGKILL this early
    // it may have none; see resume_of_an_unknown_conversation...). It exits
    // 0 without a result line.
    assert!(
        fake.wait_for_messages(1, RUN_DEADLINE),
        "the CLI never called the API"
    );
    kill(running.pid(), Sig::SIGINT).expect("kill");
    let r1 = running.finish();
    // Depending on where the interrupt lands, the CLI ends with no result
    // line or with an "interrupted" one: both are resumable.
    assert!(
        matches!(
            r1.tally.outcome(),
            Outcome::Abnormal
                | Outcome::Failed {
                    reason: sessionlet::agent::FailureReason::Interrupted
                }
        ),
        "{}",
        r1.describe()
    );
    assert!(r1.tally.began());
    assert!(should_resume(&r1.tally.outcome(), r1.tally.began(), true));

    let mut second = Attempt::new(&fake, sessionlet::agent::RESUME_PROMPT);
    second.conversation = Conversation::Resume { session_id: sid };
    second.base_url = fake.base_url_for(&Scenario::Text);
    let r2 = run(&bin, &sandbox, &second);
    assert_eq!(r2.tally.outcome(), Outcome::Success, "{}", r2.describe());
    assert_eq!(
        r2.tally.status().session_id.as_deref(),
        Some(sid.to_string().as_str())
    );
    // The resumed request carries the first prompt as history.
    let last = fake.requests().into_iter().last().expect("a request");
    let text = last.message_text();
    assert!(
        text.contains("start the work") && text.contains(sessionlet::agent::RESUME_PROMPT),
        "{text}"
    );
}

#[test]
fn resume_of_an_unknown_conversation_is_recognised() {
    let bin = require_claude!("resume_of_an_unknown_conversation_is_recognised");
    let fake = FakeApi::start(Scenario::Text);
    let sandbox = Sandbox::new();
    let mut attempt = Attempt::new(&fake, "continue");
    attempt.conversation = Conversation::Resume {
        session_id: Uuid::new_v4(),
    };
    let r = run(&bin, &sandbox, &attempt);
    // A result line (error_during_execution) and the message on stderr too.
    assert_eq!(
        r.tally.outcome(),
        Outcome::Failed {
            reason: FailureReason::SessionNotFound
        },
        "{}",
        r.describe()
    );
    assert!(!r.tally.began());
    assert!(!should_resume(&r.tally.outcome(), true, true));
    assert!(
        profile(AgentKind::Claude).is_unknown_session(&r.stderr),
        "{}",
        r.describe()
    );
    assert_eq!(fake.message_requests(), 0);
}

#[test]
fn token_count_stops_a_looping_agent() {
    let bin = require_claude!("token_count_stops_a_looping_agent");
    let fake = FakeApi::start(Scenario::ToolLoop);
    let sandbox = Sandbox::new();
    let mut attempt = Attempt::new(&fake, "loop forever");
    attempt.spec.allowed_tools = vec!["Bash".into()];
    let budget = 500;
    let mut interrupted = false;
    let r = start(&bin, &sandbox, &attempt).finish_with(|signal, pid| {
        if let Signal::Tokens { total } = signal {
            if *total >= budget && !interrupted {
                // SIGINT first: the CLI ends its tool calls and, when it is
                // not waiting on the API, writes a final result.
                interrupted = kill(pid, Sig::SIGINT).is_ok();
            }
        }
    });
    assert!(
        interrupted,
        "the budget was never reached: {}",
        r.describe()
    );
    // What the run spent: the CLI's final result may leave out the request
    // the SIGINT broke off (the API served it), so budgets count the
    // streamed usage when it is larger (`Tally::spent_tokens`).
    let (input, output) = r.tally.spent_tokens();
    assert!(
        input.saturating_add(output) >= budget,
        "{input} + {output} < {budget}: {}",
        r.describe()
    );
    assert!(
        matches!(
            r.tally.outcome(),
            Outcome::Abnormal
                | Outcome::Failed {
                    reason: FailureReason::Interrupted
                }
        ),
        "{}",
        r.describe()
    );
    // Each request reports ~120+ input tokens: the loop stopped early.
    assert!(fake.message_requests() <= 8, "{}", fake.message_requests());
}

#[test]
fn long_prompt_goes_through_stdin() {
    let bin = require_claude!("long_prompt_goes_through_stdin");
    let fake = FakeApi::start(Scenario::Text);
    let sandbox = Sandbox::new();
    let mut prompt = "padding ".repeat(sessionlet::agent::argv::ARGV_PROMPT_LIMIT / 8 + 100);
    prompt.push_str("END-OF-LONG-PROMPT");
    let r = run(&bin, &sandbox, &Attempt::new(&fake, &prompt));
    assert_eq!(r.tally.outcome(), Outcome::Success, "{}", r.describe());
    assert!(fake
        .requests()
        .iter()
        .any(|q| q.message_text().contains("END-OF-LONG-PROMPT")));
}

/// The fake API alone, over raw HTTP: runs with or without the CLI.
#[test]
fn fake_api_speaks_the_messages_api() {
    fn post(fake: &FakeApi, path: &str, body: &str) -> String {
        let mut s = TcpStream::connect(fake.addr).expect("connect");
        write!(
            s,
            "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .expect("write");
        let mut out = String::new();
        s.read_to_string(&mut out).expect("read");
        out
    }
    let fake = FakeApi::start(Scenario::Bash);
    let body = r#"{"model":"m","stream":true,"tools":[{"name":"Bash"}],
                   "messages":[{"role":"user","content":"go"}]}"#;
    let sse = post(&fake, "/v1/messages?beta=true", body);
    assert!(sse.starts_with("HTTP/1.1 200"), "{sse}");
    let events: Vec<&str> = sse
        .lines()
        .filter_map(|l| l.strip_prefix("event: "))
        .collect();
    assert_eq!(events.first(), Some(&"message_start"));
    assert_eq!(events.last(), Some(&"message_stop"));
    assert!(events.contains(&"content_block_delta"));
    assert_eq!(events[events.len() - 2], "message_delta");
    assert!(sse.contains("input_json_delta") && sse.contains("\"tool_use\""));
    assert!(sse.contains("\"stop_reason\":\"tool_use\""));

    // A path picks the scenario; a marker in the prompt does too.
    let e = post(&fake, "/s/e429/v1/messages", body);
    assert!(
        e.starts_with("HTTP/1.1 429") && e.contains("retry-after: 1"),
        "{e}"
    );
    let marked = r#"{"model":"m","messages":[{"role":"user","content":"x fake-scenario:e401 y"}]}"#;
    assert!(post(&fake, "/v1/messages", marked).starts_with("HTTP/1.1 401"));
    // Non-streaming fallback, count_tokens, unknown endpoints.
    let plain = post(&fake, "/v1/messages", r#"{"messages":[]}"#);
    assert!(
        plain.contains("\"type\":\"message\"") && plain.contains(fake_api::FINAL_TEXT),
        "{plain}"
    );
    assert!(post(&fake, "/v1/messages/count_tokens", "{}").contains("input_tokens"));
    assert!(post(&fake, "/v2/nothing", "{}").starts_with("HTTP/1.1 404"));
    assert_eq!(fake.message_requests(), 4);
    assert_eq!(fake.requests().len(), 6);
    assert_eq!(fake.requests()[1].scenario, "e429");

    // A hanging request answers nothing until the server is dropped.
    let hang = FakeApi::start(Scenario::Hang);
    let mut s = TcpStream::connect(hang.addr).expect("connect");
    write!(
        s,
        "POST /v1/messages HTTP/1.1\r\nContent-Length: 2\r\n\r\n{{}}"
    )
    .expect("write");
    assert!(hang.wait_for_messages(1, Duration::from_secs(30)));
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let mut buf = [0u8; 16];
    assert!(s.read(&mut buf).is_err(), "a hang must not answer");
    drop(hang);
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    assert_eq!(s.read(&mut buf).expect("closed"), 0);

    // Scenario names round-trip, commands included.
    let cmds = Scenario::Commands(vec!["echo a && rm -rf /x".into(), "ls".into()]);
    assert_eq!(Scenario::parse(&cmds.name()), Some(cmds));
}
