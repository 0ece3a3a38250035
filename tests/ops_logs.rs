//! Operating day to day: the controller's log tells each session's story
//! (one line per lifecycle event, text or JSON), and `sessionlet logs`
//! follows attempts, reaches earlier ones, lists pool members and renders
//! agent transcripts.

mod common;

use common::*;
use serde_json::Value;

/// The JSON lines of a controller log; panics on a line that is not JSON.
fn json_lines(log: &str) -> Vec<Value> {
    log.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// The lines of `event` for `session`.
fn events<'a>(lines: &'a [Value], event: &str, session: &str) -> Vec<&'a Value> {
    lines
        .iter()
        .filter(|l| l["event"] == event && l["session"] == session)
        .collect()
}

#[test]
fn the_json_log_tells_spawned_exited_restarting_and_failed_and_exit_when_done_names_the_failure() {
    let (_tmp, dir) = sessions_dir();
    write_file(
        &dir.join("flaky.yaml"),
        &session(
            "flaky",
            "command: [/bin/sh, -c, 'exit 3']\nmaxRetries: 1\nbackoff: {initialDelay: 200ms}",
        ),
    );
    write_file(
        &dir.join("fine.yaml"),
        &session("fine", "command: [/bin/sh, -c, 'exit 0']"),
    );
    let mut c = Controller::start(&dir, &["--exit-when-done", "--log-format", "json"]);
    let status = c.wait();
    assert_eq!(status.code(), Some(1), "a session failed");
    let lines = json_lines(&c.log());
    let spawned = events(&lines, "spawned", "flaky");
    assert_eq!(spawned.len(), 2, "two attempts: {lines:#?}");
    assert!(spawned
        .iter()
        .all(|l| l["pid"].as_u64().is_some_and(|p| p > 0)));
    let exited = events(&lines, "exited", "flaky");
    assert_eq!(exited.len(), 2, "{lines:#?}");
    assert!(exited
        .iter()
        .all(|l| l["code"] == 3 && l["expected"] == false && l["reason"] == "Error"));
    let restarting = events(&lines, "restarting", "flaky");
    assert_eq!(restarting.len(), 1, "{lines:#?}");
    assert_eq!(restarting[0]["attempt"], 2);
    assert!(restarting[0]["in_seconds"].is_u64());
    let stopped = events(&lines, "stopped", "flaky");
    assert_eq!(stopped.len(), 1, "{lines:#?}");
    assert_eq!(stopped[0]["phase"], "Failed");
    // The session that completed: an expected exit, no failure.
    let fine = events(&lines, "exited", "fine");
    assert_eq!(fine.len(), 1);
    assert_eq!(fine[0]["expected"], true);
    // --exit-when-done says which sessions failed, and only those.
    let failed: Vec<_> = lines.iter().filter(|l| l["event"] == "failed").collect();
    assert_eq!(failed.len(), 1, "{lines:#?}");
    assert_eq!(failed[0]["session"], "flaky");
    assert_eq!(failed[0]["reason"], "Error");
    let done = lines
        .iter()
        .find(|l| l["event"] == "done")
        .expect("a summary line");
    assert!(done["message"]
        .as_str()
        .is_some_and(|m| m.contains("flaky") && !m.contains("fine")));
}

#[test]
fn the_text_log_has_no_colours_off_a_terminal_and_names_an_invalid_manifest_with_its_line() {
    let (_tmp, dir) = sessions_dir();
    write_file(
        &dir.join("srv.yaml"),
        &session("srv", "command: [/bin/sleep, '300']"),
    );
    let c = Controller::start(&dir, &[]);
    wait_phase(&dir, "srv", "Running");
    // Break the manifest of the running session: the last good spec keeps running.
    write_file(
        &dir.join("srv.yaml"),
        &session("srv", "command: [/bin/sleep, '300']\ntimeout: 30"),
    );
    let log = wait_for("a manifest-invalid line", || {
        let log = c.log();
        log.lines()
            .any(|l| l.contains("manifest invalid") && l.contains("srv.yaml:"))
            .then_some(log)
    });
    assert!(!log.contains('\u{1b}'), "no ANSI escapes off a terminal");
    assert!(log.contains("event=\"spawned\"") || log.contains("event=spawned"));
    let line = log
        .lines()
        .find(|l| l.contains("manifest invalid"))
        .unwrap_or_default();
    assert!(
        line.contains("srv.yaml:7:"),
        "file:line:col of the problem: {line}"
    );
}

#[test]
fn a_pool_scaled_and_a_stop_on_spec_change_are_logged() {
    let (_tmp, dir) = sessions_dir();
    let pool = |n: u32| {
        format!("apiVersion: sessionlet.dev/v1alpha1\nkind: Pool\nmetadata:\n  name: web\nspec:\n  replicas: {n}\n  template:\n    spec:\n      command: [/bin/sleep, '300']\n")
    };
    write_file(&dir.join("web.yaml"), &pool(1));
    write_file(
        &dir.join("one.yaml"),
        &session("one", "command: [/bin/sleep, '300']"),
    );
    let c = Controller::start(&dir, &["--log-format", "json"]);
    wait_phase(&dir, "one", "Running");
    wait_for("web-0 spawned", || {
        events(&json_lines(&c.log()), "spawned", "web-0")
            .first()
            .map(|_| ())
    });
    write_file(&dir.join("web.yaml"), &pool(2));
    write_file(
        &dir.join("one.yaml"),
        &session("one", "command: [/bin/sleep, '301']"),
    );
    let lines = wait_for("pool-scaled and stopping lines", || {
        let lines = json_lines(&c.log());
        let scaled = lines.iter().any(|l| {
            l["event"] == "pool-scaled" && l["pool"] == "web" && l["from"] == 1 && l["to"] == 2
        });
        let stopping = !events(&lines, "stopping", "one").is_empty();
        let respawned = events(&lines, "spawned", "one").len() == 2;
        (scaled && stopping && respawned).then_some(lines)
    });
    let stopping = events(&lines, "stopping", "one");
    assert_eq!(stopping[0]["reason"], "SpecChanged");
    let exited = events(&lines, "exited", "one");
    assert_eq!(exited[0]["expected"], true, "{lines:#?}");
}

// ---------------------------------------------------------------------------
// `sessionlet logs`.

/// Runs `sessionlet logs ARGS --dir DIR` to the end: (code, stdout, stderr).
fn logs(dir: &std::path::Path, args: &[&str]) -> (Option<i32>, String, String) {
    let out = std::process::Command::new(bin())
        .arg("logs")
        .args(args)
        .arg("--dir")
        .arg(dir)
        .output()
        .expect("run sessionlet logs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn logs_follow_goes_across_restarts_announcing_each_attempt_and_ends_when_finished() {
    let (tmp, dir) = sessions_dir();
    let work = tmp.path();
    // Each attempt counts itself; the first waits for the test's go-ahead,
    // so that `logs -f` starts on attempt 1.
    write_file(
        &dir.join("flaky.yaml"),
        &session(
            "flaky",
            &format!(
                "command: [/bin/sh, -c, 'n=$(cat count 2>/dev/null || echo 0); n=$((n+1)); echo $n > count; echo out-$n; while [ ! -e go ]; do sleep 0.05; done; exit 1']\nworkingDir: {}\nmaxRetries: 2\nbackoff: {{initialDelay: 100ms, multiplier: 1.0}}",
                work.display()
            ),
        ),
    );
    let _c = Controller::start(&dir, &[]);
    wait_status(&dir, "flaky", "attempt 1 running", |s| {
        s["status"]["phase"] == "Running" && s["status"]["attempt"] == 1
    });
    let out_path = work.join("follow.out");
    let err_path = work.join("follow.err");
    let mut follower = std::process::Command::new(bin())
        .args(["logs", "flaky", "-f", "--dir"])
        .arg(&dir)
        .stdout(std::fs::File::create(&out_path).expect("out file"))
        .stderr(std::fs::File::create(&err_path).expect("err file"))
        .spawn()
        .expect("start logs -f");
    wait_for("logs -f to print attempt 1", || {
        std::fs::read_to_string(&out_path)
            .ok()
            .filter(|o| o.contains("out-1"))
    });
    std::fs::write(work.join("go"), "").expect("go");
    let status = wait_for("logs -f to end by itself", || {
        follower.try_wait().ok().flatten()
    });
    assert!(status.success(), "{status:?}");
    let out = std::fs::read_to_string(&out_path).unwrap_or_default();
    let err = std::fs::read_to_string(&err_path).unwrap_or_default();
    assert_eq!(
        out, "out-1\nout-2\nout-3\n",
        "every attempt's output, in order"
    );
    assert!(err.contains("--- attempt 2"), "{err}");
    assert!(err.contains("--- attempt 3"), "{err}");
    assert!(err.contains("is Failed"), "says why it ended: {err}");
    assert_eq!(phase(&dir, "flaky").as_deref(), Some("Failed"));
}

#[test]
fn logs_previous_reaches_the_last_attempt_of_the_previous_spec() {
    let (_tmp, dir) = sessions_dir();
    write_file(
        &dir.join("job.yaml"),
        &session("job", "command: [/bin/sh, -c, 'echo first-spec']"),
    );
    let _c = Controller::start(&dir, &[]);
    wait_phase(&dir, "job", "Completed");
    write_file(
        &dir.join("job.yaml"),
        &session("job", "command: [/bin/sh, -c, 'echo second-spec']"),
    );
    wait_status(&dir, "job", "the new spec completed", |s| {
        s["status"]["phase"] == "Completed"
            && s["status"]["logs"]["stdout"]
                .as_str()
                .is_some_and(|p| p.contains("gen"))
    });
    let (code, out, err) = logs(&dir, &["job"]);
    assert_eq!((code, out.as_str()), (Some(0), "second-spec\n"), "{err}");
    let (code, out, err) = logs(&dir, &["job", "--previous"]);
    assert_eq!((code, out.as_str()), (Some(0), "first-spec\n"), "{err}");
}

#[test]
fn logs_of_a_pool_lists_its_members_to_choose_from() {
    let (_tmp, dir) = sessions_dir();
    write_file(
        &dir.join("web.yaml"),
        "apiVersion: sessionlet.dev/v1alpha1\nkind: Pool\nmetadata:\n  name: web\nspec:\n  replicas: 2\n  template:\n    spec:\n      command: [/bin/sleep, '300']\n",
    );
    let _c = Controller::start(&dir, &[]);
    wait_status(&dir, "web", "two members", |s| {
        s["status"]["members"]
            .as_array()
            .is_some_and(|m| m.len() == 2)
    });
    let (code, out, err) = logs(&dir, &["web"]);
    assert_eq!(code, Some(1), "no logs printed: {out}");
    assert!(err.contains("is a pool"), "{err}");
    assert!(err.contains("web-0") && err.contains("web-1"), "{err}");
}

/// An agent session `bot` whose CLI is a stand-in replaying the fixture
/// `NAME.stream-json.jsonl`; returns the fixture's path once the run completed.
fn replayed_agent(tmp: &std::path::Path, dir: &std::path::Path, name: &str) -> std::path::PathBuf {
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(format!("tests/fixtures/claude/{name}.stream-json.jsonl"));
    let fake = tmp.join("fake-claude");
    std::fs::write(&fake, format!("#!/bin/sh\ncat '{}'\n", fixture.display())).expect("fake");
    let mut perms = std::fs::metadata(&fake).expect("meta").permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(&fake, perms).expect("chmod");
    write_file(
        &dir.join("bot.yaml"),
        &session(
            "bot",
            &format!(
                "agent:\n  kind: claude\n  binary: {}\n  prompt: say hi\n",
                fake.display()
            ),
        ),
    );
    fixture
}

#[test]
fn logs_of_an_agent_session_is_a_transcript_and_raw_is_the_stream_json() {
    let (tmp, dir) = sessions_dir();
    let fixture = replayed_agent(tmp.path(), &dir, "ok_bash_tool");
    let _c = Controller::start(&dir, &[]);
    wait_status(&dir, "bot", "the run completed with its agent block", |s| {
        s["status"]["phase"] == "Completed" && s["status"]["agent"].is_object()
    });
    let (code, out, err) = logs(&dir, &["bot"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("assistant: Calling Bash."), "{out}");
    assert!(out.contains("-> Bash: echo hello-from-fake"), "{out}");
    assert!(out.contains("<- hello-from-fake"), "{out}");
    assert!(out.contains("=== result: success"), "{out}");
    assert!(!out.contains("{\"type\""), "{out}");
    let (code, raw, _) = logs(&dir, &["bot", "--raw"]);
    assert_eq!(code, Some(0));
    let expected = std::fs::read_to_string(&fixture).expect("fixture");
    assert_eq!(raw, expected, "--raw is the stream-json as written");
    for line in raw.lines() {
        serde_json::from_str::<Value>(line).expect("each raw line is JSON");
    }
}

#[test]
fn a_run_with_denied_tool_calls_says_so_in_its_message_and_describe_shows_readable_yaml() {
    let (tmp, dir) = sessions_dir();
    replayed_agent(tmp.path(), &dir, "denied_bash_default_mode");
    let _c = Controller::start(&dir, &[]);
    let s = wait_status(&dir, "bot", "the run completed with its agent block", |s| {
        s["status"]["phase"] == "Completed" && s["status"]["agent"].is_object()
    });
    let rule = s["status"]["agent"]["permissionDenials"][0]["suggestedRule"]
        .as_str()
        .expect("a suggested rule")
        .to_string();
    let message = s["status"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("1 tool call(s) denied") && message.contains(&rule),
        "the status message (what get shows): {message}"
    );
    let out = std::process::Command::new(bin())
        .args(["describe", "bot", "--dir"])
        .arg(&dir)
        .output()
        .expect("describe");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("Denied:") && text.contains(&rule), "{text}");
    assert!(
        text.lines().any(|l| l.trim_start().starts_with("turns: ")),
        "the agent block as YAML: {text}"
    );
    assert!(
        !text
            .lines()
            .any(|l| l.starts_with("Agent:") && l.contains('{')),
        "not one-line JSON: {text}"
    );
}
