//! Usage limits end to end: the real `sessionlet run` drives the REAL Claude
//! Code CLI against the fake Messages API (127.0.0.1). A subscriber login
//! (`CLAUDE_CODE_OAUTH_TOKEN`, from an `envFrom` file) on the fake's
//! `ulimit-N` scenario is rejected with a reset time N seconds after the
//! first request, then answered normally.
//!
//! Without the CLI the tests print "SKIPPED: no claude binary" and pass.

#[path = "common/agent_sandbox.rs"]
mod agent_sandbox;
#[path = "common/claude.rs"]
mod claude;
mod common;
#[path = "common/fake_api.rs"]
mod fake_api;

use agent_sandbox::{agent_yaml, q, wait_done, wait_status, Sandbox};
use chrono::{DateTime, Utc};
use common::KeeperGuard;
use fake_api::{FakeApi, Scenario};
use serde_json::Value;

fn time(v: &Value) -> DateTime<Utc> {
    v.as_str()
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_else(|| panic!("not a time: {v}"))
}

/// A subscriber's agent session on `scenario`.
fn subscriber_spec(
    sb: &Sandbox,
    fake: &FakeApi,
    bin: &std::path::Path,
    scenario: &Scenario,
    prompt: &str,
) -> String {
    format!(
        "{}{}workingDir: {}\nrestartPolicy: OnFailure\nmaxRetries: 1\nbackoff:\n  initialDelay: 1s\n",
        agent_yaml(bin, prompt, ""),
        sb.subscriber_yaml(&fake.base_url_for(scenario)),
        q(&sb.work.display().to_string()),
    )
}

#[test]
fn a_usage_limit_waits_for_the_reset_then_resumes_the_conversation() {
    let bin = require_claude!("a_usage_limit_waits_for_the_reset_then_resumes_the_conversation");
    let fake = FakeApi::start(Scenario::Text);
    let sb = Sandbox::new();
    let _keeper = KeeperGuard(sb.dir.clone());
    let scenario = Scenario::UsageLimit(6);
    sb.write(
        "limited",
        &subscriber_spec(&sb, &fake, &bin, &scenario, "do the work (marker 51q)"),
    );
    let _c = sb.controller(&[]);

    let s = wait_status(&sb, "limited", "WaitingForQuota", |s| {
        s["status"]["phase"] == "WaitingForQuota"
    });
    let st = &s["status"];
    assert_eq!(st["reason"], "UsageLimited", "{s:#}");
    // Not a failure: nothing counted, no crash dump.
    assert_eq!(st["consecutiveFailures"], 0, "{s:#}");
    assert!(st["lastExit"]["crashDump"].is_null(), "{s:#}");
    assert_eq!(st["quota"]["limitType"], "five_hour", "{s:#}");
    let account = st["quota"]["account"].as_str().expect("an account");
    assert!(account.starts_with("sha256:"), "{s:#}");
    // The reset time is the stream's (the fake's first request + 6 s), and
    // the next attempt follows it (plus a little jitter).
    let first = fake
        .requests()
        .into_iter()
        .find(|r| r.method == "POST")
        .expect("a request");
    assert_eq!(first.scenario, "ulimit-6");
    let resets_at = time(&st["quota"]["resetsAt"]);
    let next = time(&st["nextRestartAt"]);
    assert!(next > resets_at, "{s:#}");
    assert!((next - resets_at).num_seconds() <= 5, "{s:#}");
    let sid = st["agent"]["sessionId"]
        .as_str()
        .expect("a conversation")
        .to_string();
    // The credential itself is in no status.
    let text = std::fs::read_to_string(sb.dir.join("limited.status.yaml")).expect("status");
    assert!(!text.contains("sk-ant-oat01-fake"), "{text}");
    let controller = std::fs::read_to_string(sb.dir.join(".sessionlet/controller.status.yaml"))
        .expect("controller status");
    assert!(!controller.contains("sk-ant-oat01-fake"), "{controller}");

    let s = wait_done(&sb, "limited");
    let st = &s["status"];
    assert_eq!(st["phase"], "Completed", "{s:#}");
    assert_eq!(st["attempt"], 2, "{s:#}");
    assert_eq!(st["consecutiveFailures"], 0, "{s:#}");
    assert!(st["quota"].is_null(), "{s:#}");
    assert_eq!(st["agent"]["sessionId"], sid.as_str(), "{s:#}");
    assert_eq!(st["agent"]["attempts"][1]["resumed"], true, "{s:#}");
    // The event log tells the wait and the resume.
    let waited = common::wait_event(&sb.dir, "limited", "WaitingForQuota");
    assert_eq!(waited["type"], "Warning", "{waited}");
    let resumed = common::wait_event(&sb.dir, "limited", "Resumed");
    assert_eq!(resumed["type"], "Normal", "{resumed}");
    assert_eq!(
        st["agent"]["attempts"][1]["sessionId"],
        sid.as_str(),
        "{s:#}"
    );
    // The resumed attempt carried the conversation and the continuation prompt.
    let last = fake
        .requests()
        .into_iter()
        .rfind(|r| r.method == "POST" && r.path.contains("/v1/messages"))
        .expect("the resumed attempt called the API");
    let history = last.message_text();
    assert!(
        history.contains("marker 51q") && history.contains(sessionlet::agent::QUOTA_RESUME_PROMPT),
        "{history}"
    );
    // The resumed attempt started after the reset.
    assert!(time(&st["lastExit"]["startedAt"]) >= resets_at, "{s:#}");
}

#[test]
fn a_wait_for_quota_survives_a_controller_restart() {
    let bin = require_claude!("a_wait_for_quota_survives_a_controller_restart");
    let fake = FakeApi::start(Scenario::Text);
    let sb = Sandbox::new();
    let _keeper = KeeperGuard(sb.dir.clone());
    let scenario = Scenario::UsageLimit(15);
    sb.write(
        "patient",
        &subscriber_spec(&sb, &fake, &bin, &scenario, "patient work (marker 7pq)"),
    );
    let mut c = sb.controller(&[]);
    let s = wait_status(&sb, "patient", "WaitingForQuota", |s| {
        s["status"]["phase"] == "WaitingForQuota"
    });
    let sid = s["status"]["agent"]["sessionId"].clone();
    let resets_at = time(&s["status"]["quota"]["resetsAt"]);
    c.signal(nix::sys::signal::Signal::SIGKILL);
    c.wait();
    let _c2 = sb.controller(&[]);
    let done = wait_done(&sb, "patient");
    let st = &done["status"];
    assert_eq!(st["phase"], "Completed", "{done:#}");
    assert_eq!(st["consecutiveFailures"], 0, "{done:#}");
    assert_eq!(st["agent"]["sessionId"], sid, "{done:#}");
    assert!(time(&st["lastExit"]["startedAt"]) >= resets_at, "{done:#}");
    let last = fake
        .requests()
        .into_iter()
        .rfind(|r| r.method == "POST" && r.path.contains("/v1/messages"))
        .expect("the resumed attempt called the API");
    let history = last.message_text();
    assert!(
        history.contains("marker 7pq") && history.contains(sessionlet::agent::QUOTA_RESUME_PROMPT),
        "{history}"
    );
}

#[test]
fn sessions_on_one_account_park_together() {
    let bin = require_claude!("sessions_on_one_account_park_together");
    let fake = FakeApi::start(Scenario::Text);
    let sb = Sandbox::new();
    let _keeper = KeeperGuard(sb.dir.clone());
    let scenario = Scenario::UsageLimit(15);
    sb.write(
        "first",
        &subscriber_spec(&sb, &fake, &bin, &scenario, "first task"),
    );
    let _c = sb.controller(&[]);
    let s = wait_status(&sb, "first", "WaitingForQuota", |s| {
        s["status"]["phase"] == "WaitingForQuota"
    });
    let resets_at = time(&s["status"]["quota"]["resetsAt"]);
    let account = s["status"]["quota"]["account"].clone();

    // A second session with the same credential: the same account, so it
    // is not started before the reset.
    sb.write(
        "second",
        &subscriber_spec(&sb, &fake, &bin, &scenario, "second task"),
    );
    let s2 = wait_status(&sb, "second", "held for the account", |s| {
        s["status"]["phase"] == "WaitingForQuota"
    });
    assert!(
        Utc::now() < resets_at,
        "the test was too slow to see the park"
    );
    let st = &s2["status"];
    assert_eq!(st["attempt"], 0, "{s2:#}");
    assert!(st["pid"].is_null(), "{s2:#}");
    assert_eq!(st["reason"], "UsageLimited", "{s2:#}");
    assert_eq!(st["quota"]["account"], account, "{s2:#}");
    // The controller status shows the account's state.
    let cs = common::controller_status_of(&sb.dir).expect("controller status");
    let acc = &cs["extra"]["accounts"][account.as_str().unwrap_or_default()];
    assert_eq!(acc["state"], "WaitingForQuota", "{cs:#}");
    assert_eq!(acc["sessions"], 2, "{cs:#}");
    // So does `get`: an ACCOUNT table.
    let out = std::process::Command::new(common::bin())
        .args(["get", "--dir"])
        .arg(&sb.dir)
        .output()
        .expect("sessionlet get");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with(account.as_str().unwrap_or("?")))
        .unwrap_or_else(|| panic!("no account line: {text}"));
    assert!(line.contains("WaitingForQuota"), "{text}");

    // Both finish after the reset; the second started after it.
    let done2 = wait_done(&sb, "second");
    assert_eq!(done2["status"]["phase"], "Completed", "{done2:#}");
    assert_eq!(done2["status"]["attempt"], 1, "{done2:#}");
    assert!(
        time(&done2["status"]["runStartedAt"]) >= resets_at,
        "{done2:#}"
    );
    let done1 = wait_done(&sb, "first");
    assert_eq!(done1["status"]["phase"], "Completed", "{done1:#}");
}

#[test]
fn an_api_key_rate_limit_takes_the_backoff_with_the_clis_retry_after() {
    let bin = require_claude!("an_api_key_rate_limit_takes_the_backoff_with_the_clis_retry_after");
    let fake = FakeApi::start(Scenario::Text);
    let sb = Sandbox::new();
    let _keeper = KeeperGuard(sb.dir.clone());
    let spec = format!(
        "{}{}workingDir: {}\nrestartPolicy: OnFailure\nmaxRetries: 3\nbackoff:\n  initialDelay: 1s\n",
        agent_yaml(&bin, "hi", ""),
        sb.env_yaml(&fake.base_url_for(&Scenario::UsageLimit(3600))),
        q(&sb.work.display().to_string()),
    );
    sb.write("keyed", &spec);
    let _c = sb.controller(&[]);
    let s = wait_status(&sb, "keyed", "a first exit", |s| {
        s["status"]["lastExit"].is_object()
    });
    let st = &s["status"];
    // No reset time with an API key: an ordinary failure and backoff.
    assert_eq!(st["phase"], "Recovering", "{s:#}");
    assert_eq!(st["consecutiveFailures"], 1, "{s:#}");
    assert!(st["quota"].is_null(), "{s:#}");
    assert!(st["agent"]["lastRetryDelayMs"].is_u64(), "{s:#}");
    let message = st["lastExit"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("retry-after"), "{s:#}");
}

#[test]
fn a_resumed_conversation_sums_its_cost_and_the_charter_tools_reach_the_argv() {
    let bin = require_claude!(
        "a_resumed_conversation_sums_its_cost_and_the_charter_tools_reach_the_argv"
    );
    // The first attempt runs a long Bash call and is interrupted by its
    // timeout (SIGINT: the CLI writes a result with its cost); the resumed
    // attempt gets the tool's result back and answers.
    // The call is handed out once: a resume answers with text even when the
    // CLI was interrupted before it saved the call (seen on CI: every
    // resume asked for the same `sleep 120` again and timed out).
    let fake = FakeApi::start(Scenario::BashOnce("sleep 120".into()));
    let sb = Sandbox::new();
    let _keeper = KeeperGuard(sb.dir.clone());
    let spec = format!(
        "{}charter:\n  resources:\n    allowedTools: [\"Bash(sleep:*)\"]\n{}workingDir: {}\nrestartPolicy: OnFailure\nmaxRetries: 5\ntimeout: 20s\nterminationGracePeriod: 20s\nbackoff:\n  initialDelay: 1s\n",
        agent_yaml(&bin, "sleep a while", ""),
        sb.env_yaml(&fake.base_url()),
        q(&sb.work.display().to_string()),
    );
    sb.write("summed", &spec);
    let _c = sb.controller(&[]);

    let s = wait_status(&sb, "summed", "running", |s| {
        s["status"]["phase"] == "Running" && s["status"]["pid"].is_u64()
    });
    let pid = s["status"]["pid"].as_u64().unwrap_or(0);
    let argv: Vec<String> = std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            b.split(|c| *c == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect()
        })
        .unwrap_or_default();
    let at = argv.iter().position(|a| a == "--allowedTools");
    assert!(
        at.is_some_and(|i| argv.get(i + 1).map(String::as_str) == Some("Bash(sleep:*)")),
        "{argv:?}"
    );

    let s = wait_done(&sb, "summed");
    let st = &s["status"];
    assert_eq!(st["phase"], "Completed", "{s:#}");
    // Attempt 2 normally; on a loaded machine an attempt's timeout may come
    // before the CLI saved its tool call, and the resume asks for the same
    // call again (seen: three attempts in a row under a full CI run), so the
    // retries leave room. What matters: the last attempt resumed the
    // conversation and the costs add up.
    let attempt = st["attempt"].as_u64().unwrap_or(0);
    assert!((2..=6).contains(&attempt), "{s:#}");
    let last = usize::try_from(attempt - 1).unwrap_or(0);
    assert_eq!(st["agent"]["attempts"][last]["resumed"], true, "{s:#}");
    let a = &st["agent"];
    let prior = a["priorCostUsd"].as_f64().expect("priorCostUsd");
    let this = a["attemptCostUsd"].as_f64().expect("attemptCostUsd");
    let total = a["costUsd"].as_f64().expect("costUsd");
    assert!(prior > 0.0 && this > 0.0, "{s:#}");
    assert!((total - (prior + this)).abs() < 1e-9, "{s:#}");
    assert!(
        a["inputTokens"].as_u64().unwrap_or(0) > a["priorInputTokens"].as_u64().unwrap_or(0),
        "{s:#}"
    );
}

#[test]
fn an_informational_rate_limit_event_is_recorded_and_not_fatal() {
    let bin = require_claude!("an_informational_rate_limit_event_is_recorded_and_not_fatal");
    let fake = FakeApi::start(Scenario::Text);
    let sb = Sandbox::new();
    let _keeper = KeeperGuard(sb.dir.clone());
    sb.write(
        "warned",
        &subscriber_spec(&sb, &fake, &bin, &Scenario::UsageWarn, "hello"),
    );
    let _c = sb.controller(&[]);
    let s = wait_done(&sb, "warned");
    let st = &s["status"];
    assert_eq!(st["phase"], "Completed", "{s:#}");
    assert_eq!(st["attempt"], 1, "{s:#}");
    let info = &st["agent"]["rateLimit"];
    assert!(
        matches!(info["status"].as_str(), Some("allowed" | "allowed_warning")),
        "{s:#}"
    );
    assert!(info["resetsAt"].is_i64(), "{s:#}");
    assert!(st["quota"].is_null(), "{s:#}");
}
