//! A fake Anthropic Messages API on 127.0.0.1, for driving the real Claude
//! Code CLI in tests (`ANTHROPIC_BASE_URL=<FakeApi::base_url()>`).
//!
//! Plain std threads and a minimal HTTP/1.1 server: usable from blocking
//! tests and from async ones alike. It answers:
//! - `POST …/v1/messages`: SSE streaming in the public Messages API format
//!   (`message_start`, `ping`, `content_block_start`/`delta`/`stop`,
//!   `message_delta` with usage, `message_stop`), or a JSON message when the
//!   request does not ask for streaming (the CLI's fallback);
//! - `POST …/v1/messages/count_tokens`: a token count;
//! - `HEAD` anything: 200; anything else: a 404 in the API's error format.
//!
//! The scenario comes, first match wins, from a `/s/<name>` prefix of the
//! request path ([`FakeApi::base_url_for`]), from a `fake-scenario:<name>`
//! marker anywhere in the request's messages (e.g. in the prompt), or from the
//! server's default. Like the Python reference (`fake_anthropic_api.py`) it is
//! stateless: the turn is the number of `tool_result` blocks in the request.
//!
//! It never connects anywhere; it only listens on 127.0.0.1.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// The API key the tests pass (any non-empty value works).
pub const API_KEY: &str = "test-key";
/// The text of every final answer.
pub const FINAL_TEXT: &str = "Hello from the fake Anthropic API.";
/// The Bash command of [`Scenario::Bash`].
pub const BASH_COMMAND: &str = "echo hello-from-fake > fake_out.txt && cat fake_out.txt";
/// Largest request body accepted.
const MAX_BODY: usize = 64 << 20;
/// Largest request head accepted.
const MAX_HEAD: usize = 64 << 10;

/// What the fake model does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scenario {
    /// One text answer.
    Text,
    /// A Bash call ([`BASH_COMMAND`]), then text once the result comes back.
    Bash,
    /// One Bash call per turn with these commands, in order, then text.
    Commands(Vec<String>),
    /// One Bash call with this command, handed out once per server (a
    /// resumed conversation gets text even when the interrupted CLI did not
    /// save the call), then text.
    BashOnce(String),
    /// Write `notes.txt` in the CLI's working directory, Edit it, then text.
    WriteEdit,
    /// A Bash call on every turn, forever (for `--max-turns` and budgets).
    ToolLoop,
    /// HTTP 401 `authentication_error`.
    Unauthorized,
    /// HTTP 403 `permission_error`.
    Forbidden,
    /// HTTP 400 `invalid_request_error` (prompt too long).
    PromptTooLong,
    /// HTTP 429 `rate_limit_error` with `retry-after: 1`.
    RateLimited,
    /// HTTP 500 `api_error`.
    ServerError,
    /// HTTP 529 `overloaded_error`.
    Overloaded,
    /// 200, then an SSE `error` event (overloaded) mid-stream.
    SseError,
    /// 200, then the connection closes mid-message.
    Drop,
    /// Accepts the request and never answers (until the server is dropped).
    Hang,
    /// A subscriber's usage limit (HTTP 429 with the
    /// `anthropic-ratelimit-unified-*` headers), resetting this many seconds
    /// after the scenario's first request; afterwards it answers as
    /// [`Scenario::Text`], so a resumed conversation can finish. `ulimit` is
    /// an hour, `ulimit-N` N seconds (as `fake_anthropic_api.py`).
    UsageLimit(u64),
    /// A normal answer carrying an `allowed_warning` usage header (92% used).
    UsageWarn,
}

impl Scenario {
    /// The name used in `/s/<name>` paths and `fake-scenario:<name>` markers.
    pub fn name(&self) -> String {
        match self {
            Scenario::Text => "text".into(),
            Scenario::Bash => "bash".into(),
            Scenario::Commands(cmds) => format!("cmd_{}", pct_encode(&cmds.join("\n"))),
            Scenario::BashOnce(cmd) => format!("once_{}", pct_encode(cmd)),
            Scenario::WriteEdit => "edit".into(),
            Scenario::ToolLoop => "loop".into(),
            Scenario::Unauthorized => "e401".into(),
            Scenario::Forbidden => "e403".into(),
            Scenario::PromptTooLong => "e400".into(),
            Scenario::RateLimited => "e429".into(),
            Scenario::ServerError => "e500".into(),
            Scenario::Overloaded => "e529".into(),
            Scenario::SseError => "sse_error".into(),
            Scenario::Drop => "drop".into(),
            Scenario::Hang => "hang".into(),
            Scenario::UsageLimit(3600) => "ulimit".into(),
            Scenario::UsageLimit(n) => format!("ulimit-{n}"),
            Scenario::UsageWarn => "uwarn".into(),
        }
    }

    /// Parses a name (see [`Scenario::name`]); `cmd_<pct-encoded>` holds
    /// newline-separated commands.
    pub fn parse(name: &str) -> Option<Scenario> {
        Some(match name {
            "text" => Scenario::Text,
            "bash" => Scenario::Bash,
            "edit" => Scenario::WriteEdit,
            "loop" | "maxturns" => Scenario::ToolLoop,
            "e401" => Scenario::Unauthorized,
            "e403" => Scenario::Forbidden,
            "e400" => Scenario::PromptTooLong,
            "e429" => Scenario::RateLimited,
            "e500" => Scenario::ServerError,
            "e529" => Scenario::Overloaded,
            "sse_error" => Scenario::SseError,
            "drop" => Scenario::Drop,
            "hang" => Scenario::Hang,
            "ulimit" => Scenario::UsageLimit(3600),
            "uwarn" => Scenario::UsageWarn,
            other if other.starts_with("ulimit-") => {
                Scenario::UsageLimit(other["ulimit-".len()..].parse().ok()?)
            }
            other if other.starts_with("once_") => {
                Scenario::BashOnce(pct_decode(&other["once_".len()..]))
            }
            other => {
                let cmds = pct_decode(other.strip_prefix("cmd_")?);
                Scenario::Commands(cmds.split('\n').map(str::to_owned).collect())
            }
        })
    }

    /// The HTTP error this scenario answers with, if any.
    fn error(&self) -> Option<(u16, &'static str, &'static str)> {
        Some(match self {
            Scenario::Unauthorized => (401, "authentication_error", "invalid x-api-key"),
            Scenario::Forbidden => (403, "permission_error", "fake: permission denied"),
            Scenario::PromptTooLong => (400, "invalid_request_error", "prompt is too long"),
            Scenario::RateLimited => (429, "rate_limit_error", "fake: rate limited"),
            Scenario::ServerError => (500, "api_error", "fake: internal server error"),
            Scenario::Overloaded => (529, "overloaded_error", "Overloaded"),
            _ => return None,
        })
    }
}

/// Server settings beyond the scenario.
#[derive(Debug, Clone)]
pub struct Config {
    /// The scenario when neither the path nor a marker picks one.
    pub scenario: Scenario,
    /// Input tokens reported per request: this plus 10 per message.
    pub base_input_tokens: u64,
    /// Output tokens reported per content block (plus 5 per message).
    pub output_tokens_per_block: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            scenario: Scenario::Text,
            base_input_tokens: 100,
            output_tokens_per_block: 7,
        }
    }
}

/// One request the server received.
#[derive(Debug, Clone)]
pub struct Request {
    /// `POST`, `HEAD`, ...
    pub method: String,
    /// The path with its query.
    pub path: String,
    /// The scenario that answered it.
    pub scenario: String,
    /// The `User-Agent` header.
    pub user_agent: Option<String>,
    /// Whether an `x-api-key` or `authorization` header was present (values
    /// are not kept).
    pub authenticated: bool,
    /// The JSON body (`Null` when absent or not JSON).
    pub body: Value,
}

impl Request {
    /// Every text in the request's messages, joined (prompts, tool results).
    pub fn message_text(&self) -> String {
        let mut out = String::new();
        collect_strings(self.body.get("messages").unwrap_or(&Value::Null), &mut out);
        out
    }

    /// The system prompt's text.
    pub fn system_text(&self) -> String {
        let mut out = String::new();
        collect_strings(self.body.get("system").unwrap_or(&Value::Null), &mut out);
        out
    }
}

struct Shared {
    config: Config,
    /// Set when the server is dropped; hanging handlers wake up and leave.
    stop: Mutex<bool>,
    stopped: Condvar,
    log: Mutex<Vec<Request>>,
    /// Signalled on every logged request (for [`FakeApi::wait_for_messages`]).
    logged: Condvar,
    messages: AtomicUsize,
    shutting_down: AtomicBool,
    /// Set once a [`Scenario::BashOnce`] call was handed out.
    handed_once: AtomicBool,
    next_id: AtomicU64,
    /// Per usage-limit scenario name: when its limit resets (epoch seconds),
    /// fixed by its first request.
    resets: Mutex<std::collections::HashMap<String, u64>>,
}

/// A running fake API. Dropping it stops the server.
pub struct FakeApi {
    /// Where it listens (127.0.0.1, a free port).
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

impl FakeApi {
    /// Starts a server answering with `scenario` by default.
    pub fn start(scenario: Scenario) -> FakeApi {
        Self::start_with(Config {
            scenario,
            ..Config::default()
        })
    }

    /// Starts a server with full settings.
    pub fn start_with(config: Config) -> FakeApi {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let shared = Arc::new(Shared {
            config,
            stop: Mutex::new(false),
            stopped: Condvar::new(),
            log: Mutex::new(Vec::new()),
            logged: Condvar::new(),
            messages: AtomicUsize::new(0),
            shutting_down: AtomicBool::new(false),
            handed_once: AtomicBool::new(false),
            next_id: AtomicU64::new(1),
            resets: Mutex::new(std::collections::HashMap::new()),
        });
        let s = shared.clone();
        let acceptor = std::thread::Builder::new()
            .name("fake-api-accept".into())
            .spawn(move || {
                for stream in listener.incoming() {
                    if s.shutting_down.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let s = s.clone();
                    let _ = std::thread::Builder::new()
                        .name("fake-api-conn".into())
                        .spawn(move || handle(stream, &s));
                }
            })
            .expect("spawn acceptor");
        FakeApi {
            addr,
            shared,
            acceptor: Some(acceptor),
        }
    }

    /// The base URL for `ANTHROPIC_BASE_URL` (default scenario).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A base URL that selects `scenario` whatever the server's default.
    pub fn base_url_for(&self, scenario: &Scenario) -> String {
        format!("http://{}/s/{}", self.addr, scenario.name())
    }

    /// The variables pointing the CLI here: `ANTHROPIC_BASE_URL` and
    /// `ANTHROPIC_API_KEY`.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("ANTHROPIC_BASE_URL".into(), self.base_url()),
            ("ANTHROPIC_API_KEY".into(), API_KEY.into()),
        ]
    }

    /// `POST …/v1/messages` requests received so far.
    pub fn message_requests(&self) -> usize {
        self.shared.messages.load(Ordering::SeqCst)
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<Request> {
        self.shared
            .log
            .lock()
            .map(|l| l.clone())
            .unwrap_or_default()
    }

    /// Blocks until at least `n` message requests arrived; false after `timeout`.
    pub fn wait_for_messages(&self, n: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut log = self.shared.log.lock().expect("log lock");
        loop {
            if self.message_requests() >= n {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            log = self
                .shared
                .logged
                .wait_timeout(log, left)
                .expect("log lock")
                .0;
        }
    }
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        self.shared.shutting_down.store(true, Ordering::SeqCst);
        if let Ok(mut stop) = self.shared.stop.lock() {
            *stop = true;
        }
        self.shared.stopped.notify_all();
        // Wake the acceptor with a connection of our own.
        let _ = TcpStream::connect(self.addr);
        if let Some(h) = self.acceptor.take() {
            let _ = h.join();
        }
    }
}

fn handle(mut stream: TcpStream, s: &Shared) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(120)));
    let Some((method, path, headers, body)) = read_request(&stream) else {
        return;
    };
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);

    // /s/<scenario>/v1/... picks the scenario; the rest is the API path.
    let bare = path.split('?').next().unwrap_or("");
    let (from_path, api_path) = match bare.strip_prefix("/s/") {
        Some(rest) => match rest.split_once('/') {
            Some((name, tail)) => (Scenario::parse(name), format!("/{tail}")),
            None => (Scenario::parse(rest), "/".to_string()),
        },
        None => (None, bare.to_string()),
    };
    let scenario = from_path
        .or_else(|| marker_scenario(&body))
        .unwrap_or_else(|| s.config.scenario.clone());

    let is_messages = method == "POST" && api_path.ends_with("/v1/messages");
    if let Ok(mut log) = s.log.lock() {
        log.push(Request {
            method: method.clone(),
            path: path.clone(),
            scenario: scenario.name(),
            user_agent: header("user-agent"),
            authenticated: header("x-api-key").is_some() || header("authorization").is_some(),
            body: body.clone(),
        });
        if is_messages {
            s.messages.fetch_add(1, Ordering::SeqCst);
        }
    }
    s.logged.notify_all();

    if method == "HEAD" {
        let _ =
            stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        return;
    }
    if method == "POST" && api_path.ends_with("/v1/messages/count_tokens") {
        let n = s.config.base_input_tokens + 10 * messages_len(&body);
        return respond_json(&mut stream, 200, &json!({"input_tokens": n}), &[]);
    }
    if !is_messages {
        return respond_error(
            &mut stream,
            404,
            "not_found_error",
            "fake: no such endpoint",
        );
    }
    let mut scenario = scenario;
    if let Scenario::UsageLimit(secs) = scenario {
        let now = epoch_seconds();
        let reset_at = s
            .resets
            .lock()
            .map(|mut m| *m.entry(scenario.name()).or_insert(now + secs))
            .unwrap_or(now + secs);
        if now >= reset_at {
            scenario = Scenario::Text;
        } else {
            let reset = reset_at.to_string();
            let body = json!({"type": "error", "error": {"type": "rate_limit_error", "message": "fake: unified limit"}});
            return respond_json(
                &mut stream,
                429,
                &body,
                &[
                    ("anthropic-ratelimit-unified-status", "rejected"),
                    ("anthropic-ratelimit-unified-reset", &reset),
                    (
                        "anthropic-ratelimit-unified-representative-claim",
                        "five_hour",
                    ),
                    ("anthropic-ratelimit-unified-overage-status", "rejected"),
                    (
                        "anthropic-ratelimit-unified-overage-disabled-reason",
                        "org_level_disabled",
                    ),
                ],
            );
        }
    }
    if let Some((code, kind, message)) = scenario.error() {
        let extra: &[(&str, &str)] = if code == 429 {
            &[("retry-after", "1")]
        } else {
            &[]
        };
        let body = json!({"type": "error", "error": {"type": kind, "message": message}});
        return respond_json(&mut stream, code, &body, extra);
    }
    if scenario == Scenario::Hang {
        // Hold the connection open, answering nothing, until the server stops.
        let mut stop = s.stop.lock().expect("stop lock");
        while !*stop {
            stop = s.stopped.wait(stop).expect("stop lock");
        }
        let _ = stream.shutdown(Shutdown::Both);
        return;
    }

    let (blocks, stop_reason) = plan(&scenario, &body, s);
    let in_tok = s.config.base_input_tokens + 10 * messages_len(&body);
    let out_tok = s.config.output_tokens_per_block * blocks.len() as u64 + 5;
    let model = body
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("claude-fake")
        .to_owned();
    let msg_id = format!("msg_fake_{:08}", s.next_id.fetch_add(1, Ordering::SeqCst));

    if !body.get("stream").and_then(Value::as_bool).unwrap_or(false) {
        let message = json!({
            "id": msg_id, "type": "message", "role": "assistant", "model": model,
            "content": blocks, "stop_reason": stop_reason, "stop_sequence": null,
            "usage": {"input_tokens": in_tok, "output_tokens": out_tok,
                      "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0},
        });
        return respond_json(&mut stream, 200, &message, &[]);
    }

    let warn = if scenario == Scenario::UsageWarn {
        let reset = epoch_seconds() + 1800;
        format!(
            "anthropic-ratelimit-unified-status: allowed_warning\r\n\
             anthropic-ratelimit-unified-reset: {reset}\r\n\
             anthropic-ratelimit-unified-representative-claim: five_hour\r\n\
             anthropic-ratelimit-unified-5h-utilization: 0.92\r\n\
             anthropic-ratelimit-unified-5h-reset: {reset}\r\n"
        )
    } else {
        String::new()
    };
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\n\
         Cache-Control: no-cache\r\n{warn}request-id: req_{msg_id}\r\nConnection: close\r\n\r\n"
    );
    let mut w = std::io::BufWriter::new(&stream);
    let send = |w: &mut std::io::BufWriter<&TcpStream>, event: &str, data: Value| {
        write!(w, "event: {event}\ndata: {data}\n\n").and_then(|_| w.flush())
    };
    let result = (|| -> std::io::Result<()> {
        w.write_all(head.as_bytes())?;
        send(
            &mut w,
            "message_start",
            json!({"type": "message_start", "message": {
                "id": msg_id, "type": "message", "role": "assistant", "model": model,
                "content": [], "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": in_tok, "output_tokens": 1,
                          "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}}}),
        )?;
        send(&mut w, "ping", json!({"type": "ping"}))?;
        if scenario == Scenario::SseError {
            return send(
                &mut w,
                "error",
                json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
            );
        }
        for (i, block) in blocks.iter().enumerate() {
            if block["type"] == "text" {
                send(
                    &mut w,
                    "content_block_start",
                    json!({"type": "content_block_start", "index": i,
                           "content_block": {"type": "text", "text": ""}}),
                )?;
                let text = block["text"].as_str().unwrap_or_default();
                for (j, word) in text.split(' ').enumerate() {
                    let piece = if j == 0 {
                        word.to_owned()
                    } else {
                        format!(" {word}")
                    };
                    send(
                        &mut w,
                        "content_block_delta",
                        json!({"type": "content_block_delta", "index": i,
                               "delta": {"type": "text_delta", "text": piece}}),
                    )?;
                    if scenario == Scenario::Drop && j == 1 {
                        // The connection closes mid-message.
                        return Ok(());
                    }
                }
            } else {
                send(
                    &mut w,
                    "content_block_start",
                    json!({"type": "content_block_start", "index": i,
                           "content_block": {"type": "tool_use", "id": block["id"],
                                             "name": block["name"], "input": {}}}),
                )?;
                // The input arrives as JSON text in chunks, as from the real API.
                let input = block["input"].to_string();
                let chars: Vec<char> = input.chars().collect();
                for chunk in chars.chunks(20) {
                    send(
                        &mut w,
                        "content_block_delta",
                        json!({"type": "content_block_delta", "index": i,
                               "delta": {"type": "input_json_delta",
                                         "partial_json": chunk.iter().collect::<String>()}}),
                    )?;
                }
            }
            send(
                &mut w,
                "content_block_stop",
                json!({"type": "content_block_stop", "index": i}),
            )?;
        }
        send(
            &mut w,
            "message_delta",
            json!({"type": "message_delta",
                   "delta": {"stop_reason": stop_reason, "stop_sequence": null},
                   "usage": {"output_tokens": out_tok}}),
        )?;
        send(&mut w, "message_stop", json!({"type": "message_stop"}))
    })();
    drop(w);
    let _ = result;
    let _ = stream.shutdown(Shutdown::Both);
}

/// Seconds since the epoch.
fn epoch_seconds() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The reply's content blocks and stop reason.
fn plan(scenario: &Scenario, body: &Value, s: &Shared) -> (Vec<Value>, &'static str) {
    let turn = tool_results(body);
    let has_tool = |name: &str| {
        body.get("tools")
            .and_then(Value::as_array)
            .is_some_and(|t| t.iter().any(|t| t["name"] == name))
    };
    let text = |t: &str| (vec![json!({"type": "text", "text": t})], "end_turn");
    let tool = |name: &str, input: Value| {
        let id = format!(
            "toolu_fake_{:012}",
            s.next_id.fetch_add(1, Ordering::SeqCst)
        );
        (
            vec![
                json!({"type": "text", "text": format!("Calling {name}.")}),
                json!({"type": "tool_use", "id": id, "name": name, "input": input}),
            ],
            "tool_use",
        )
    };
    let bash = |cmd: &str| {
        tool(
            "Bash",
            json!({"command": cmd, "description": "Scripted command"}),
        )
    };
    match scenario {
        Scenario::Bash if has_tool("Bash") && turn == 0 => bash(BASH_COMMAND),
        Scenario::Commands(cmds) if has_tool("Bash") && turn < cmds.len() => bash(&cmds[turn]),
        Scenario::BashOnce(cmd)
            if has_tool("Bash") && turn == 0 && !s.handed_once.swap(true, Ordering::SeqCst) =>
        {
            bash(cmd)
        }
        Scenario::ToolLoop if has_tool("Bash") => bash(&format!("echo turn {turn}")),
        Scenario::WriteEdit if turn < 2 => {
            // Write and Edit need absolute paths: the CLI's working directory
            // is in its system prompt.
            let path = format!(
                "{}/notes.txt",
                working_dir(body).unwrap_or_else(|| ".".into())
            );
            if turn == 0 {
                tool(
                    "Write",
                    json!({"file_path": path, "content": "line one\nline two\n"}),
                )
            } else {
                tool(
                    "Edit",
                    json!({"file_path": path, "old_string": "line two",
                           "new_string": "line 2 (edited)"}),
                )
            }
        }
        _ => text(FINAL_TEXT),
    }
}

/// `tool_result` blocks in the request's user messages: the turn number.
fn tool_results(body: &Value) -> usize {
    body.get("messages")
        .and_then(Value::as_array)
        .map(|msgs| {
            msgs.iter()
                .filter(|m| m["role"] == "user")
                .filter_map(|m| m["content"].as_array())
                .flatten()
                .filter(|b| b["type"] == "tool_result")
                .count()
        })
        .unwrap_or(0)
}

fn messages_len(body: &Value) -> u64 {
    body.get("messages")
        .and_then(Value::as_array)
        .map_or(0, |m| m.len() as u64)
}

/// "Primary working directory: /abs/dir" from the CLI's prompt.
fn working_dir(body: &Value) -> Option<String> {
    let mut text = String::new();
    collect_strings(body.get("system").unwrap_or(&Value::Null), &mut text);
    collect_strings(body.get("messages").unwrap_or(&Value::Null), &mut text);
    let at = text.find("working directory: ")? + "working directory: ".len();
    let rest = &text[at..];
    Some(rest.lines().next().unwrap_or("").trim().to_owned())
}

/// A `fake-scenario:<name>` marker in the first user message (the prompt).
/// Only the first message counts, so that a tool result quoting a marker
/// does not switch scenarios mid-conversation.
fn marker_scenario(body: &Value) -> Option<Scenario> {
    const MARKER: &str = "fake-scenario:";
    let first_user = body
        .get("messages")?
        .as_array()?
        .iter()
        .find(|m| m["role"] == "user")?;
    let mut text = String::new();
    collect_strings(&first_user["content"], &mut text);
    let at = text.find(MARKER)? + MARKER.len();
    let name: String = text[at..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '%' | '-' | '.'))
        .collect();
    Scenario::parse(&name)
}

fn collect_strings(v: &Value, out: &mut String) {
    match v {
        Value::String(s) => {
            out.push_str(s);
            out.push('\n');
        }
        Value::Array(a) => a.iter().for_each(|v| collect_strings(v, out)),
        Value::Object(o) => o.values().for_each(|v| collect_strings(v, out)),
        _ => {}
    }
}

type Head = (String, String, Vec<(String, String)>, Vec<u8>);

/// Reads one request: method, path, headers and body (Content-Length or
/// chunked). `None` on anything malformed or oversized.
fn read_request(stream: &TcpStream) -> Option<Head> {
    let mut r = BufReader::new(stream);
    let mut line = String::new();
    let mut head_bytes = 0usize;
    r.read_line(&mut line).ok()?;
    head_bytes += line.len();
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_owned();
    let path = parts.next()?.to_owned();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).ok()? == 0 {
            return None;
        }
        head_bytes += h.len();
        if head_bytes > MAX_HEAD {
            return None;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':')?;
        headers.push((k.trim().to_owned(), v.trim().to_owned()));
    }
    let get = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    };
    let mut body = Vec::new();
    if get("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        loop {
            let mut size = String::new();
            r.read_line(&mut size).ok()?;
            let n = usize::from_str_radix(size.trim().split(';').next()?.trim(), 16).ok()?;
            if n == 0 {
                // Trailers, up to the blank line.
                loop {
                    let mut t = String::new();
                    if r.read_line(&mut t).ok()? == 0 || t.trim().is_empty() {
                        break;
                    }
                }
                break;
            }
            if body.len() + n > MAX_BODY {
                return None;
            }
            let start = body.len();
            body.resize(start + n, 0);
            r.read_exact(&mut body[start..]).ok()?;
            let mut crlf = [0u8; 2];
            r.read_exact(&mut crlf).ok()?;
        }
    } else if let Some(n) = get("content-length").and_then(|v| v.parse::<usize>().ok()) {
        if n > MAX_BODY {
            return None;
        }
        body.resize(n, 0);
        r.read_exact(&mut body).ok()?;
    }
    Some((method, path, headers, body))
}

fn respond_json(stream: &mut TcpStream, code: u16, body: &Value, extra: &[(&str, &str)]) {
    let text = body.to_string();
    let reason = match code {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        529 => "Site Overloaded",
        _ => "Status",
    };
    let mut head = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         request-id: req_fake\r\nConnection: close\r\n",
        text.len()
    );
    for (k, v) in extra {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let _ = stream
        .write_all(head.as_bytes())
        .and_then(|_| stream.write_all(text.as_bytes()))
        .and_then(|_| stream.flush());
    let _ = stream.shutdown(Shutdown::Both);
}

fn respond_error(stream: &mut TcpStream, code: u16, kind: &str, message: &str) {
    let body = json!({"type": "error", "error": {"type": kind, "message": message}});
    respond_json(stream, code, &body, &[]);
}

fn pct_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn pct_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        if bytes[i] == b'%' {
            if let Some(b) = hex {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
