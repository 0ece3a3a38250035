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
