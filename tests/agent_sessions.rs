//! Agent sessions end to end: the real `sessionlet run` controller drives the
//! REAL Claude Code CLI (`spec.agent`), which talks to the fake Messages API
//! of `common/fake_api.rs` on 127.0.0.1.
//!
//! Each test gets a temporary folder with `sessions/` (the watched manifests
//! and statuses), `home/` (HOME and CLAUDE_CONFIG_DIR of the CLI) and `work/`
//! (the agent's working directory). The controller runs with a cleared
//! environment (PATH, HOME and RUST_LOG only), so nothing of the caller's
//! environment reaches the CLI; the manifest's `spec.env` carries what the
//! CLI needs: `ANTHROPIC_BASE_URL` (the fake), `ANTHROPIC_API_KEY`, `HOME`,
//! `CLAUDE_CONFIG_DIR`, and proxies pointing at a closed loopback port. No
//! test contacts anything but 127.0.0.1.
//!
//! The CLI: `SESSIONLET_CLAUDE_BIN`, else `.ci/claude/node_modules/.bin/claude`
//! (installed by `.ci/install-claude.sh`), else `claude` on PATH. Without one
//! the tests that need it print "SKIPPED: no claude binary" and pass.

#[path = "common/claude.rs"]
mod claude;
mod common;
#[path = "common/fake_api.rs"]
mod fake_api;

use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{alive, session, status, wait_for_within, write_file, Controller, KeeperGuard};
use fake_api::{FakeApi, Scenario};
use serde_json::{json, Value};
use uuid::Uuid;

/// How long an agent session may take to reach a phase: the CLI starts
/// slowly on a loaded 2-core machine.
const AGENT_DEADLINE: Duration = Duration::from_secs(180);

/// A test's folders.
struct Sandbox {
    _tmp: tempfile::TempDir,
    /// The temporary folder, canonical.
    root: PathBuf,
    /// The watched manifest (and status) folder.
    dir: PathBuf,
    /// HOME of the controller and the CLI.
    home: PathBuf,
    /// The agent's working directory.
    work: PathBuf,
}

impl Sandbox {
    fn new() -> Sandbox {
        let tmp = tempfile::tempdir().expect("tempdir");
        // Canonical: the CLI reports its cwd resolved.
        let root = tmp.path().canonicalize().expect("canonicalize");
        let dir = root.join("sessions");
        let home = root.join("home");
        let work = root.join("work");
        for d in [&dir, &home.join(".claude"), &work] {
            std::fs::create_dir_all(d).expect("mkdir");
        }
        Sandbox {
            _tmp: tmp,
            root,
            dir,
            home,
            work,
        }
    }

    /// `spec.env` (YAML, as under `spec:`) for a CLI talking to `base_url`.
    fn env_yaml(&self, base_url: &str) -> String {
        let vars = [
            ("ANTHROPIC_BASE_URL", base_url.to_string()),
            ("ANTHROPIC_API_KEY", fake_api::API_KEY.to_string()),
            ("HOME", self.home.display().to_string()),
            (
                "CLAUDE_CONFIG_DIR",
                self.home.join(".claude").display().to_string(),
            ),
            // Anything the CLI would fetch through a proxy hits a closed port.
            ("HTTPS_PROXY", "http://127.0.0.1:9".to_string()),
            ("HTTP_PROXY", "http://127.0.0.1:9".to_string()),
            ("NO_PROXY", "127.0.0.1,localhost".to_string()),
        ];
        let mut out = String::from("env:\n");
        for (k, v) in vars {
            out.push_str(&format!("  {k}: {}\n", q(&v)));
        }
        out
    }

    /// Writes `sessions/STEM.yaml`.
    fn write(&self, stem: &str, spec: &str) {
        write_file(&self.dir.join(format!("{stem}.yaml")), &session(stem, spec));
    }

    /// Starts `sessionlet run` on `sessions/` with a cleared environment.
    fn controller(&self, extra: &[&str]) -> Controller {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let log = self.root.join(format!("controller-{nanos}.log"));
        let child = Command::new(common::bin())
            .arg("run")
            .arg("--dir")
            .arg(&self.dir)
            .args(["--resync-interval", "2s"])
            .args(extra)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", &self.home)
            .env("RUST_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("start sessionlet");
        Controller {
            child: Some(child),
            dir: self.dir.clone(),
            status_dir: self.dir.clone(),
            log,
        }
    }

    /// The CLI's transcript of conversation `sid`, if it wrote one.
    fn transcript(&self, sid: &str) -> Option<PathBuf> {
        let projects = self.home.join(".claude/projects");
        std::fs::read_dir(projects)
            .ok()?
            .flatten()
            .map(|e| e.path().join(format!("{sid}.jsonl")))
            .find(|p| p.is_file())
    }

    /// `sessions/STEM.logs/attempt-N.stdout.log`.
    fn stdout_log(&self, stem: &str, attempt: u32) -> PathBuf {
        self.dir
            .join(format!("{stem}.logs/attempt-{attempt}.stdout.log"))
    }
}

/// A YAML (and JSON) double-quoted string.
fn q(s: &str) -> String {
    Value::String(s.to_string()).to_string()
}

/// `spec.agent` for the real CLI (YAML, as under `spec:`), with more fields
/// appended from `extra` (indented as under `agent:`).
fn agent_yaml(bin: &Path, prompt: &str, extra: &str) -> String {
    let mut out = format!(
        "agent:\n  kind: claude\n  binary: {}\n  prompt: {}\n",
        q(&bin.display().to_string()),
        q(prompt)
    );
    for line in extra.lines() {
        out.push_str(&format!("  {line}\n"));
    }
    out
}

/// Waits until `STEM.status.yaml` satisfies `pred`; an Invalid manifest
/// fails at once (with its message) rather than at the deadline.
fn wait_status(sb: &Sandbox, stem: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    wait_for_within(AGENT_DEADLINE, &format!("{stem}: {what}"), || {
        let s = status(&sb.dir, stem)?;
        assert_ne!(
            s["status"]["phase"], "Invalid",
            "the manifest is invalid: {s:#}"
        );
        pred(&s).then_some(s)
    })
}

/// Waits for a terminal phase and returns the status.
fn wait_done(sb: &Sandbox, stem: &str) -> Value {
    wait_status(sb, stem, "a terminal phase", |s| {
        matches!(
            s["status"]["phase"].as_str(),
            Some("Completed" | "Failed" | "TimedOut" | "Cancelled")
        )
    })
}

/// Every file under `dir` (recursively).
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// Asserts that no status file, crash dump or controller status holds the
/// API key (environment values never reach them).
fn assert_no_api_key(sb: &Sandbox) {
    for f in files_under(&sb.dir) {
        let name = f.to_string_lossy();
        // The manifests hold it, and the session's own output is the agent's.
        let manifest = f.parent() == Some(sb.dir.as_path())
            && name.ends_with(".yaml")
            && !name.ends_with(".status.yaml");
        if manifest || name.contains(".logs/") {
            continue;
        }
        let text = std::fs::read_to_string(&f).unwrap_or_default();
        assert!(
            !text.contains(fake_api::API_KEY),
            "{} holds the API key:\n{text}",
            f.display()
        );
    }
}

/// The processes whose argv is exactly `args`.
fn processes_with_args(args: &[&str]) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let argv: Vec<String> = cmdline
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if argv == args && alive(pid) {
            out.push(pid);
        }
    }
    out
}

/// A `sleep` duration no other process on the machine uses.
fn unique_sleep() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("1000.{:06}{}", nanos / 1000, std::process::id() % 10)
}

/// The parsed `status.agent.sessionId`.
fn session_id(s: &Value) -> Uuid {
    let sid = s["status"]["agent"]["sessionId"]
        .as_str()
        .unwrap_or_else(|| panic!("no agent.sessionId: {s:#}"));
    Uuid::parse_str(sid).unwrap_or_else(|e| panic!("sessionId {sid:?} is not a uuid: {e}"))
}

/// Seconds from `a` to `b`, both RFC 3339 strings.
fn seconds_between(a: &Value, b: &Value) -> f64 {
    let parse = |v: &Value| {
        chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap_or_default())
            .unwrap_or_else(|e| panic!("{v} is not a timestamp: {e}"))
    };
    (parse(b) - parse(a)).num_milliseconds() as f64 / 1000.0
}

/// `sessionlet get --dir DIR -o wide`, as rows of cells (header first).
fn get_wide(dir: &Path) -> Vec<Vec<String>> {
    let out = Command::new(common::bin())
        .args(["get", "--dir"])
        .arg(dir)
        .args(["-o", "wide"])
        .output()
        .expect("sessionlet get");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .collect()
}

/// Waits for the controller to make `more` further reconcile passes (with a
/// 2 s resync, proof that time went by with the controller looking).
fn wait_more_passes(c: &Controller, more: u64) {
    let now = common::controller_status_of(&c.status_dir)
        .and_then(|s| s["reconcileCount"].as_u64())
        .unwrap_or(0);
    common::wait_passes(&c.status_dir, c.pid(), now + more);
}

/// A TCP forwarder on 127.0.0.1 whose upstream can be switched: every
/// connection goes to the upstream set when it was accepted. It lets one
/// session's attempts meet different fake APIs through the same
/// `ANTHROPIC_BASE_URL` (the fake itself is stateless per request).
struct Switch {
    addr: SocketAddr,
    upstream: Arc<Mutex<SocketAddr>>,
    stop: Arc<AtomicBool>,
}

impl Switch {
    fn start(upstream: SocketAddr) -> Switch {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let upstream = Arc::new(Mutex::new(upstream));
        let stop = Arc::new(AtomicBool::new(false));
        let (up, st) = (upstream.clone(), stop.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if st.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = client else { continue };
                let target = *up.lock().expect("upstream");
                std::thread::spawn(move || {
                    let Ok(server) = TcpStream::connect(target) else {
                        return;
                    };
                    pipe(client, server);
                });
            }
        });
        Switch {
            addr,
            upstream,
            stop,
        }
    }

    fn set(&self, upstream: SocketAddr) {
        *self.upstream.lock().expect("upstream") = upstream;
    }

    fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Switch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
    }
}

/// Copies both ways until each side has closed.
fn pipe(a: TcpStream, b: TcpStream) {
    let (Ok(mut a2), Ok(mut b2)) = (a.try_clone(), b.try_clone()) else {
        return;
    };
    let (mut a, mut b) = (a, b);
    let t = std::thread::spawn(move || {
        let _ = std::io::copy(&mut a, &mut b2);
        let _ = b2.shutdown(Shutdown::Write);
    });
    let _ = std::io::copy(&mut b, &mut a2);
    let _ = a2.shutdown(Shutdown::Write);
    let _ = t.join();
}

// ---------------------------------------------------------------------------

#[test]
fn a_finished_agent_session_reports_its_conversation_and_metrics() {
    let bin = require_claude!("a_finished_agent_session_reports_its_conversation_and_metrics");
    let fake = FakeApi::start(Scenario::Text);
    let sb = Sandbox::new();
    let _keeper = KeeperGuard(sb.dir.clone());
    let spec = format!(
        "{}{}workingDir: {}\nrestartPolicy: Never\ncharter:\n  identity:\n    name: Release Bot 7c1e\n    role: release engineer\n  objectives:\n    - Say hello.\n  constraints:\n    forbiddenCommands: [\"git push\"]\n",
        agent_yaml(&bin, "say hello (marker 5d2b)", "maxTurns: 3"),
        sb.env_yaml(&fake.base_url()),
        q(&sb.work.display().to_string()),
    );
    sb.write("hello-agent", &spec);
    let _c = sb.controller(&[]);

    let s = wait_done(&sb, "hello-agent");
    let st = &s["status"];
    assert_eq!(st["phase"], "Completed", "{s:#}");
    assert_eq!(st["lastExit"]["reason"], "Completed", "{s:#}");
    assert_eq!(st["attempt"], 1, "{s:#}");

    // The conversation: a uuid, the one passed as --session-id.
    let agent = &st["agent"];
    let sid = session_id(&s);
    assert_eq!(
        agent["attempts"],
        json!([{"attempt": 1, "sessionId": sid.to_string(), "resumed": false}]),
        "{s:#}"
    );
    let transcript = sb
        .transcript(&sid.to_string())
        .unwrap_or_else(|| panic!("the CLI kept no transcript named {sid}"));
    let text = std::fs::read_to_string(&transcript).expect("transcript");
    assert!(text.contains("marker 5d2b"), "{text}");
    let stdout = std::fs::read_to_string(sb.stdout_log("hello-agent", 1)).expect("stdout log");
    let init: Value =
        serde_json::from_str(stdout.lines().next().expect("a first line")).expect("stream-json");
    assert_eq!(init["subtype"], "init", "{stdout}");
    assert_eq!(init["session_id"], sid.to_string(), "{stdout}");

    // Metrics from the final result.
    assert!(agent["turns"].as_u64().is_some_and(|t| t >= 1), "{s:#}");
    assert!(
        agent["inputTokens"].as_u64().is_some_and(|t| t > 0),
        "{s:#}"
    );
    assert!(
        agent["outputTokens"].as_u64().is_some_and(|t| t > 0),
        "{s:#}"
    );
    assert!(agent["costUsd"].as_f64().is_some(), "{s:#}");
    assert_eq!(agent["resultSubtype"], "success", "{s:#}");
    assert_eq!(agent["resultText"], fake_api::FINAL_TEXT, "{s:#}");
    assert_eq!(agent["outcome"], "Success", "{s:#}");

    // The fake saw the prompt, authenticated, and the charter in the system prompt.
    let reqs: Vec<_> = fake
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST" && r.path.contains("/v1/messages"))
        .collect();
    assert!(!reqs.is_empty(), "the CLI never called the fake API");
    assert!(reqs.iter().all(|r| r.authenticated));
    assert!(reqs
        .iter()
        .any(|r| r.message_text().contains("marker 5d2b")));
    assert!(
        reqs.iter()
            .any(|r| r.system_text().contains("Release Bot 7c1e")),
        "the charter never reached the system prompt"
    );

    // The charter is kept next to the logs; no CLAUDE.md anywhere of the user's.
    let charter = std::fs::read_to_string(sb.dir.join("hello-agent.logs/charter.md"))
        .expect("charter.md in the logs folder");
    assert!(
        charter.contains("Release Bot 7c1e") && charter.contains("git push"),
        "{charter}"
    );
    for d in [&sb.work, &sb.dir] {
        let found: Vec<_> = files_under(d)
            .into_iter()
            .filter(|p| p.file_name().is_some_and(|n| n == "CLAUDE.md"))
            .collect();
        assert!(found.is_empty(), "CLAUDE.md written: {found:?}");
    }
    assert_no_api_key(&sb);

    // `get -o wide` shows turns, tokens and cost.
    let rows = get_wide(&sb.dir);
    let header = &rows[0];
    let col = |name: &str| {
        header
            .iter()
            .position(|h| h == name)
            .unwrap_or_else(|| panic!("no {name} column: {rows:?}"))
    };
    let row = rows
        .iter()
        .find(|r| r.first().map(String::as_str) == Some("hello-agent"))
        .unwrap_or_else(|| panic!("no row: {rows:?}"));
    assert_eq!(row.len(), header.len(), "{rows:?}");
    assert_eq!(row[col("TURNS")], agent["turns"].to_string(), "{rows:?}");
    let tokens = agent["inputTokens"].as_u64().unwrap() + agent["outputTokens"].as_u64().unwrap();
    assert_eq!(row[col("TOKENS")], tokens.to_string(), "{rows:?}");
    assert_eq!(
        row[col("COST")],
        format!("${:.4}", agent["costUsd"].as_f64().unwrap()),
        "{rows:?}"
    );
}

#[test]
fn an_auth_failure_is_classified_and_not_retried() {
    let bin = require_claude!("an_auth_failure_is_classified_and_not_retried");
    let fake = FakeApi::start(Scenario::Unauthorized);
    let sb = Sandbox::new();
    let _keeper = KeeperGuard(sb.dir.clone());
    let spec = format!(
        "{}{}workingDir: {}\nrestartPolicy: OnFailure\nmaxRetries: 3\nbackoff:\n  initialDelay: 1s\n",
        agent_yaml(&bin, "hi", ""),
        sb.env_yaml(&fake.base_url()),
        q(&sb.work.display().to_string()),
    );
    sb.write("bad-key", &spec);
    let c = sb.controller(&[]);

    let s = wait_done(&sb, "bad-key");
    let st = &s["status"];
    assert_eq!(st["phase"], "Failed", "{s:#}");
    assert_eq!(st["reason"], "AgentFailed", "{s:#}");
    assert_eq!(st["lastExit"]["reason"], "AgentFailed", "{s:#}");
    let message = st["lastExit"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("AuthFailed"), "{s:#}");
    assert!(
        st["message"]
            .as_str()
            .is_some_and(|m| m.contains("not retried")),
        "{s:#}"
    );
    assert_eq!(st["attempt"], 1, "{s:#}");
    assert_eq!(st["restarts"], 0, "{s:#}");
    let agent = &st["agent"];
    assert!(
        agent["outcome"]
            .as_str()
            .is_some_and(|o| o.contains("AuthFailed")),
        "{s:#}"
    );
    assert_eq!(agent["apiErrorStatus"], 401, "{s:#}");
    assert!(agent["resultSubtype"].is_string(), "{s:#}");

    // Time goes by, the controller looks, nothing calls the API again.
    let calls = fake.message_requests();
    wait_more_passes(&c, 3);
    let later = status(&sb.dir, "bad-key").expect("status");
    assert_eq!(later["status"]["phase"], "Failed", "{later:#}");
    assert_eq!(later["status"]["attempt"], 1, "{later:#}");
    assert_eq!(fake.message_requests(), calls);
    assert_no_api_key(&sb);
}

#[test]
fn a_rate_limit_waits_at_least_a_minute_before_the_next_attempt() {
    let bin = require_claude!("a_rate_limit_waits_at_least_a_minute_before_the_next_attempt");
    let fake = FakeApi::start(Scenario::RateLimited);
    let sb = Sandbox::new();
    let _keeper = KeeperGuard(sb.dir.clone());
    let spec = format!(
        "{}{}workingDir: {}\nrestartPolicy: OnFailure\nmaxRetries: 3\nbackoff:\n  initialDelay: 1s\n",
        agent_yaml(&bin, "hi", ""),
        sb.env_yaml(&fake.base_url()),
        q(&sb.work.display().to_string()),
    );
    sb.write("limited", &spec);
    let c = sb.controller(&[]);

    let s = wait_status(&sb, "limited", "a first exit", |s| {
        s["status"]["lastExit"].is_object()
    });
    let st = &s["status"];
    assert_eq!(st["lastExit"]["reason"], "AgentFailed", "{s:#}");
    assert!(
        st["lastExit"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("RateLimited")),
        "{s:#}"
    );
    assert!(
        st["agent"]["outcome"]
            .as_str()
            .is_some_and(|o| o.contains("RateLimited")),
        "{s:#}"
    );
    assert_eq!(st["phase"], "Recovering", "{s:#}");
    assert_eq!(st["attempt"], 1, "{s:#}");
    // The configured backoff says 1 s; the rate limit's floor says 60 s.
    let wait = seconds_between(&st["lastExit"]["finishedAt"], &st["nextRestartAt"]);
    assert!(
        wait >= 59.9,
        "next attempt only {wait} s after the exit: {s:#}"
    );

    // A few seconds later it still waits, and the API was left alone.
    let calls = fake.message_requests();
    wait_more_passes(&c, 3);
    let later = status(&sb.dir, "limited").expect("status");
    assert_eq!(later["status"]["phase"], "Recovering", "{later:#}");
    assert_eq!(later["status"]["attempt"], 1, "{later:#}");
    assert_eq!(fake.message_requests(), calls);
}

#[test]
fn suspending_an_agent_interrupts_it_first_and_leaves_no_tool_process_behind() {
    let bin = require_claude!(
        "suspending_an_agent_interrupts_it_first_and_leaves_no_tool_process_behind"
    );
    let sb = Sandbox::new();
    let secs = unique_sleep();
    let pid_file = sb.work.join("tool.pid");
    let command = format!("echo $$ > {}; exec sleep {secs}", pid_file.display());
    let fake = FakeApi::start(Scenario::Commands(vec![command]));
    let _keeper = KeeperGuard(sb.dir.clone());
    let spec = format!(
        "{}{}workingDir: {}\nrestartPolicy: Never\nterminationGracePeriod: 60s\n",
        agent_yaml(&bin, "run the long command", "allowedTools: [\"Bash\"]"),
        sb.env_yaml(&fake.base_url()),
        q(&sb.work.display().to_string()),
    );
    sb.write("long-tool", &spec);
    let _c = sb.controller(&[]);

    // The agent's Bash tool runs the sleep.
    let sleep = wait_for_within(AGENT_DEADLINE, "the agent's sleep to run", || {
        processes_with_args(&["sleep", &secs]).into_iter().next()
    });
    let s = wait_status(&sb, "long-tool", "Running with a pid", |s| {
        s["status"]["phase"] == "Running" && s["status"]["pid"].is_u64()
    });
    let cli = s["status"]["pid"].as_u64().unwrap() as u32;
    assert!(alive(cli));
    // The tool really is the agent's (its pid file says so, when the shell wrote it).
    if let Ok(p) = std::fs::read_to_string(&pid_file) {
        assert_eq!(p.trim(), sleep.to_string());
    }

    let asked = Instant::now();
    sb.write("long-tool", &format!("{spec}suspend: true\n"));
    let s = wait_status(&sb, "long-tool", "Cancelled", |s| {
        s["status"]["phase"] == "Cancelled"
    });
    let took = asked.elapsed();
    let st = &s["status"];
    assert_eq!(st["reason"], "Suspended", "{s:#}");
    // SIGINT first: the CLI ended its tool call and wrote its final result,
    // and exited by itself before the stop signal (half the 60 s grace).
    assert!(took < Duration::from_secs(30), "stopping took {took:?}");
    assert!(st["lastExit"]["signal"].is_null(), "{s:#}");
    // Nothing the agent started outlives the session.
    wait_for_within(Duration::from_secs(30), "the CLI to be gone", || {
        (!alive(cli)).then_some(())
    });
    wait_for_within(
        Duration::from_secs(30),
        "the tool's sleep to be gone",
        || (!alive(sleep) && processes_with_args(&["sleep", &secs]).is_empty()).then_some(()),
    );
    // The CLI's final result proves it was interrupted (not killed): it
    // writes one on SIGINT during a tool call (error_during_execution).
    let stdout = std::fs::read_to_string(sb.stdout_log("long-tool", 1)).expect("stdout log");
    let last: Value = stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .expect("a JSON line");
    let stderr = std::fs::read_to_string(sb.dir.join("long-tool.logs/attempt-1.stderr.log"))
        .unwrap_or_default();
    assert_eq!(
        last["type"], "result",
        "no final result line:\n{stdout}\n--- stderr\n{stderr}\n--- status\n{s:#}"
    );
    assert!(st["agent"]["resultSubtype"].is_string(), "{s:#}");
    assert_ne!(st["agent"]["outcome"], "Abnormal", "{s:#}");
}

#[test]
fn a_killed_attempt_resumes_the_same_conversation() {
    let bin = require_claude!("a_killed_attempt_resumes_the_same_conversation");
    let hang = FakeApi::start(Scenario::Hang);
    let text = FakeApi::start(Scenario::Text);
    // The first attempt meets a hanging API; later ones the text answer.
    let switch = Switch::start(hang.addr);
    let sb = Sandbox::new();
    let _keeper = KeeperGuard(sb.dir.clone());
    let prompt = "start the work (marker 93aa)";
    let spec = format!(
        "{}{}workingDir: {}\nrestartPolicy: OnFailure\nmaxRetries: 1\nbackoff:\n  initialDelay: 1s\n",
        agent_yaml(&bin, prompt, ""),
        sb.env_yaml(&switch.base_url()),
        q(&sb.work.display().to_string()),
    );
    sb.write("resumable", &spec);
    let _c = sb.controller(&[]);

    assert!(
        hang.wait_for_messages(1, AGENT_DEADLINE),
        "the CLI never called the API"
    );
    switch.set(text.addr);
    let s = wait_status(&sb, "resumable", "Running with a conversation", |s| {
        s["status"]["phase"] == "Running"
            && s["status"]["pid"].is_u64()
            && s["status"]["agent"]["sessionId"].is_string()
    });
    let sid = session_id(&s);
    let cli = s["status"]["pid"].as_u64().unwrap() as u32;
    let cmdline = std::fs::read(format!("/proc/{cli}/cmdline")).expect("the CLI's cmdline");
    assert!(
        String::from_utf8_lossy(&cmdline).contains(&sid.to_string()),
        "pid {cli} is not the CLI of {sid}"
    );
    // The conversation began: the CLI saved the prompt (it writes its
    // transcript before calling the API).
    wait_for_within(AGENT_DEADLINE, "the CLI's transcript", || {
        let t = sb.transcript(&sid.to_string())?;
        std::fs::read_to_string(t)
            .ok()
            .filter(|t| t.contains("marker 93aa"))
    });

    // A crash: SIGKILL, no result line.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(cli as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill the CLI");

    let s = wait_done(&sb, "resumable");
    let st = &s["status"];
    assert_eq!(st["phase"], "Completed", "{s:#}");
    assert_eq!(st["attempt"], 2, "{s:#}");
    assert_eq!(st["restarts"], 1, "{s:#}");
    assert_eq!(session_id(&s), sid, "{s:#}");
    assert_eq!(
        st["agent"]["attempts"],
        json!([
            {"attempt": 1, "sessionId": sid.to_string(), "resumed": false},
            {"attempt": 2, "sessionId": sid.to_string(), "resumed": true},
        ]),
        "{s:#}"
    );
    assert_eq!(st["agent"]["resultSubtype"], "success", "{s:#}");
    // The first attempt's end was judged abnormal (no result line).
    let dumps: Vec<_> = files_under(&sb.dir.join("resumable.crashes"))
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("attempt-1"))
        .collect();
    assert_eq!(dumps.len(), 1, "{dumps:?}");
    let dump = std::fs::read_to_string(&dumps[0]).expect("crash dump");
    assert!(dump.contains("AgentAbnormal"), "{dump}");
    // The second attempt continued the conversation: its request carries
    // the first prompt as history, then the resume prompt.
    let last = text
        .requests()
        .into_iter()
        .rfind(|r| r.method == "POST" && r.path.contains("/v1/messages"))
        .expect("the resumed attempt called the API");
    let history = last.message_text();
    assert!(
        history.contains("marker 93aa") && history.contains(sessionlet::agent::RESUME_PROMPT),
        "{history}"
    );
    let stdout = std::fs::read_to_string(sb.stdout_log("resumable", 2)).expect("stdout log");
    assert!(stdout.contains(&sid.to_string()), "{stdout}");
    assert_no_api_key(&sb);
}

#[test]
fn a_forbidden_command_is_denied_and_the_session_stopped() {
    let bin = require_claude!("a_forbidden_command_is_denied_and_the_session_stopped");
    let sb = Sandbox::new();
    let victim = sb.root.join("victim");
    std::fs::create_dir(&victim).expect("mkdir victim");
    std::fs::write(victim.join("keep.txt"), "keep").expect("victim file");
    let fake = FakeApi::start(Scenario::Commands(vec![format!(
        "rm -rf {}",
        victim.display()
    )]));
    let _keeper = KeeperGuard(sb.dir.clone());
    let spec = format!(
        "{}{}workingDir: {}\nrestartPolicy: Never\ncharter:\n  constraints:\n    forbiddenCommands: [\"rm -rf\"]\n    forbiddenPatterns: ['rm\\s+-rf']\n",
        agent_yaml(&bin, "clean up", "allowedTools: [\"Bash\"]"),
        sb.env_yaml(&fake.base_url()),
        q(&sb.work.display().to_string()),
    );
    sb.write("cleaner", &spec);
    let _c = sb.controller(&[]);

    let s = wait_done(&sb, "cleaner");
    let st = &s["status"];
    assert!(
        victim.join("keep.txt").is_file(),
        "the forbidden command ran: {s:#}"
    );
    let stopped = st["reason"] == "PolicyViolation";
    let denied = st["agent"]["permissionDenials"]
        .as_array()
        .is_some_and(|d| {
            d.iter()
                .any(|d| d["toolName"] == "Bash" && d["detail"].to_string().contains("rm -rf"))
        });
    eprintln!("cleaner: stopped by the controller: {stopped}; denied by the CLI: {denied}");
    assert!(stopped || denied, "neither stopped nor denied: {s:#}");
    if stopped {
        assert_eq!(st["phase"], "Failed", "{s:#}");
        assert_eq!(st["lastExit"]["reason"], "PolicyViolation", "{s:#}");
    }
}

#[test]
fn a_command_matching_a_forbidden_pattern_stops_the_session() {
    let bin = require_claude!("a_command_matching_a_forbidden_pattern_stops_the_session");
    let sb = Sandbox::new();
    let marker = sb.root.join("forbidden-file");
    let secs = unique_sleep();
    // Not a forbiddenCommands entry: no deny rule, the CLI runs it; only the
    // controller's own watch of the stream can stop it. The sleep keeps the
    // tool call going, so the stop cannot come after the run ended anyway.
    let fake = FakeApi::start(Scenario::Commands(vec![format!(
        "touch {} && sleep {secs}",
        marker.display()
    )]));
    let _keeper = KeeperGuard(sb.dir.clone());
    let spec = format!(
        "{}{}workingDir: {}\nrestartPolicy: Never\nterminationGracePeriod: 60s\ncharter:\n  constraints:\n    forbiddenPatterns: ['touch\\s+.*forbidden']\n",
        agent_yaml(&bin, "touch it", "allowedTools: [\"Bash\"]"),
        sb.env_yaml(&fake.base_url()),
        q(&sb.work.display().to_string()),
    );
    sb.write("toucher", &spec);
    let _c = sb.controller(&[]);

    let s = wait_done(&sb, "toucher");
    let st = &s["status"];
    assert_eq!(st["phase"], "Failed", "{s:#}");
    assert_eq!(st["reason"], "PolicyViolation", "{s:#}");
    let ev = common::wait_event(&sb.dir, "toucher", "PolicyViolation");
    assert_eq!(ev["type"], "Warning", "{ev}");
    assert_eq!(st["lastExit"]["reason"], "PolicyViolation", "{s:#}");
    let message = st["lastExit"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("forbidden") && message.contains("touch"),
        "{s:#}"
    );
    // Stopped at once (SIGINT), well before the stop signal at half the grace.
    let ran = seconds_between(&st["lastExit"]["startedAt"], &st["lastExit"]["finishedAt"]);
    assert!(ran < 30.0, "the stop took {ran} s: {s:#}");
    assert!(st["lastExit"]["signal"].is_null(), "{s:#}");
    assert_eq!(st["attempt"], 1, "{s:#}");
    wait_for_within(
        Duration::from_secs(30),
        "the tool's sleep to be gone",
        || {
            processes_with_args(&["sleep", &secs])
                .is_empty()
                .then_some(())
        },
    );
}

#[test]
fn an_agent_over_its_token_budget_is_stopped() {
    let bin = require_claude!("an_agent_over_its_token_budget_is_stopped");
    let fake = FakeApi::start(Scenario::ToolLoop);
    let sb = Sandbox::new();
    let _keeper = KeeperGuard(sb.dir.clone());
    let spec = format!(
        "{}{}workingDir: {}\nrestartPolicy: Never\n",
        agent_yaml(
            &bin,
            "loop forever",
            "maxTokens: 50\nallowedTools: [\"Bash\"]"
        ),
        sb.env_yaml(&fake.base_url()),
        q(&sb.work.display().to_string()),
    );
    sb.write("spender", &spec);
    let _c = sb.controller(&[]);

    let s = wait_done(&sb, "spender");
    let st = &s["status"];
    assert_eq!(st["phase"], "Failed", "{s:#}");
    assert_eq!(st["reason"], "TokenBudgetExceeded", "{s:#}");
    let ev = common::wait_event(&sb.dir, "spender", "TokenBudgetExceeded");
    assert_eq!(ev["type"], "Warning", "{ev}");
    assert_eq!(st["lastExit"]["reason"], "TokenBudgetExceeded", "{s:#}");
    assert!(
        st["lastExit"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("maxTokens 50")),
        "{s:#}"
    );
    let agent = &st["agent"];
    let used =
        agent["inputTokens"].as_u64().unwrap_or(0) + agent["outputTokens"].as_u64().unwrap_or(0);
    assert!(used > 50, "{s:#}");
    // The endless loop was cut short: each request reports 100+ tokens.
    let calls = fake.message_requests();
    assert!(calls <= 10, "{calls} API calls before the stop");
}

#[test]
fn a_global_policy_rejects_a_forbidden_command_before_it_runs() {
    let sb = Sandbox::new();
    let _keeper = KeeperGuard(sb.dir.clone());
    let side_effect = sb.root.join("side-effect");
    let allowed = sb.root.join("allowed");
    let policy = sb.root.join("policy.yaml");
    std::fs::write(
        &policy,
        "constraints:\n  forbiddenPatterns: ['touch\\s+\\S*side-effect']\n",
    )
    .expect("policy file");
    sb.write(
        "sneaky",
        &format!(
            "command: [\"sh\", \"-c\", {}]\nrestartPolicy: OnFailure\n",
            q(&format!("touch {}", side_effect.display()))
        ),
    );
    sb.write(
        "harmless",
        &format!(
            "command: [\"sh\", \"-c\", {}]\nrestartPolicy: Never\n",
            q(&format!("touch {}", allowed.display()))
        ),
    );
    let policy_arg = policy.display().to_string();
    let c = sb.controller(&["--policy", &policy_arg]);

    let s = wait_done(&sb, "sneaky");
    let st = &s["status"];
    assert_eq!(st["phase"], "Failed", "{s:#}");
    assert_eq!(st["reason"], "PolicyViolation", "{s:#}");
    assert_eq!(st["lastExit"]["reason"], "PolicyViolation", "{s:#}");
    assert!(st["lastExit"]["exitCode"].is_null(), "it ran: {s:#}");
    assert_eq!(st["attempt"], 1, "{s:#}");
    assert!(!side_effect.exists(), "the forbidden command ran");
    // The policy refuses only what it names.
    let h = wait_done(&sb, "harmless");
    assert_eq!(h["status"]["phase"], "Completed", "{h:#}");
    assert!(allowed.exists());
    // Not retried later either.
    wait_more_passes(&c, 3);
    assert_eq!(status(&sb.dir, "sneaky").unwrap()["status"]["attempt"], 1);
    assert!(!side_effect.exists(), "the forbidden command ran");
}

#[test]
fn approving_a_denied_tool_call_by_editing_the_manifest_resumes_the_same_conversation() {
    let bin = require_claude!(
        "approving_a_denied_tool_call_by_editing_the_manifest_resumes_the_same_conversation"
    );
    let sb = Sandbox::new();
    let target = sb.work.join("approved.txt");
    let fake = FakeApi::start(Scenario::Commands(vec![format!(
        "touch {}",
        target.display()
    )]));
    let _keeper = KeeperGuard(sb.dir.clone());
    let spec = |extra: &str| {
        format!(
            "{}{}workingDir: {}\nrestartPolicy: Never\n",
            agent_yaml(&bin, "create the file", extra),
            sb.env_yaml(&fake.base_url()),
            q(&sb.work.display().to_string()),
        )
    };
    // No rule allows the call: the headless CLI denies it.
    sb.write("approver", &spec(""));
    let _c = sb.controller(&[]);
    let s1 = wait_done(&sb, "approver");
    let denials = s1["status"]["agent"]["permissionDenials"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        denials.iter().any(|d| d["toolName"] == "Bash"),
        "the call was not denied: {s1:#}"
    );
    let first = session_id(&s1);
    // Approve: add the rule to allowedTools; the changed spec resumes.
    sb.write("approver", &spec("allowedTools: [\"Bash(touch:*)\"]"));
    let s2 = wait_status(&sb, "approver", "the approved run finished", |s| {
        s["status"]["observedGeneration"] == 2
            && matches!(
                s["status"]["phase"].as_str(),
                Some("Completed" | "Failed" | "TimedOut" | "Cancelled")
            )
    });
    let attempts = s2["status"]["agent"]["attempts"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let last = attempts.last().cloned().unwrap_or(Value::Null);
    assert_eq!(last["resumed"], true, "not resumed: {s2:#}");
    assert_eq!(
        last["sessionId"].as_str(),
        Some(first.to_string().as_str()),
        "{s2:#}"
    );
    assert_eq!(session_id(&s2), first, "{s2:#}");
    assert_no_api_key(&sb);
}
