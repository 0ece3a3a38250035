//! Events (issue 13): every lifecycle transition shows as a Kubernetes-style
//! event in `.sessionlet/events.jsonl`, through the real binary; `sessionlet
//! events` and `describe` show them; they survive a controller restart and
//! the file stays within its bound.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use serde_json::Value;

/// Every event of the status folder, as `sessionlet events -o json` prints them.
fn events(dir: &Path, name: Option<&str>) -> Vec<Value> {
    let mut cmd = Command::new(bin());
    cmd.args(["events", "-o", "json", "--dir"]).arg(dir);
    if let Some(n) = name {
        cmd.arg(n);
    }
    let out = cmd.output().expect("sessionlet events");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice::<Vec<Value>>(&out.stdout).expect("a JSON array")
}

/// The reasons of `name`'s events, in order.
fn reasons(dir: &Path, name: &str) -> Vec<String> {
    events(dir, Some(name))
        .iter()
        .map(|e| e["reason"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// Waits until `name` has an event with `reason`, and returns it.
fn wait_event(dir: &Path, name: &str, reason: &str) -> Value {
    wait_for(&format!("a {reason} event of {name}"), || {
        events(dir, Some(name))
            .into_iter()
            .find(|e| e["reason"] == reason)
    })
}

/// `order` appears in `list` in that order (other items between).
fn in_order(list: &[String], order: &[&str]) -> bool {
    let mut at = 0;
    for want in order {
        match list[at..].iter().position(|r| r == want) {
            Some(i) => at += i + 1,
            None => return false,
        }
    }
    true
}

#[test]
fn a_failing_session_with_restarts_shows_spawned_error_backoff_then_failed() {
    let (_tmp, dir) = sessions_dir();
    write_file(
        &dir.join("flaky.yaml"),
        &session(
            "flaky",
            "command: [/bin/sh, -c, 'echo boom; exit 1']\nmaxRetries: 1\nbackoff: {initialDelay: 100ms}",
        ),
    );
    let _c = Controller::start(&dir, &[]);
    let s = wait_phase(&dir, "flaky", "Failed");
    let uid = s["metadata"]["uid"].as_str().expect("uid").to_string();
    let failed = wait_event(&dir, "flaky", "Failed");
    assert_eq!(failed["type"], "Warning");
    assert_eq!(failed["phase"], "Failed");
    let list = reasons(&dir, "flaky");
    assert!(
        in_order(
            &list,
            &["Spawned", "Error", "BackOff", "Spawned", "Error", "Failed"]
        ),
        "{list:?}"
    );
    for e in events(&dir, Some("flaky")) {
        assert_eq!(e["object"]["kind"], "Session", "{e}");
        assert_eq!(e["object"]["name"], "flaky", "{e}");
        assert_eq!(e["object"]["uid"], uid.as_str(), "{e}");
        assert!(e["count"].as_u64().is_some_and(|c| c >= 1), "{e}");
        assert!(e["firstTimestamp"].is_string() && e["lastTimestamp"].is_string());
    }
    let all = events(&dir, Some("flaky"));
    let spawned: Vec<&Value> = all.iter().filter(|e| e["reason"] == "Spawned").collect();
    assert_eq!(spawned[0]["type"], "Normal");
    assert_eq!(spawned[0]["attempt"], 1);
    assert_eq!(spawned[1]["attempt"], 2);
    let error = all.iter().find(|e| e["reason"] == "Error").unwrap();
    assert_eq!(error["type"], "Warning");
    assert!(
        error["message"].as_str().unwrap().contains("code 1"),
        "{error}"
    );
    let backoff = all.iter().find(|e| e["reason"] == "BackOff").unwrap();
    assert_eq!(backoff["attempt"], 2, "{backoff}");

    // The table, as kubectl get events.
    let out = Command::new(bin())
        .args(["events", "flaky", "--dir"])
        .arg(&dir)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let header = text.lines().next().unwrap_or_default();
    for col in ["LAST SEEN", "TYPE", "REASON", "OBJECT", "COUNT", "MESSAGE"] {
        assert!(header.contains(col), "{text}");
    }
    assert!(text.contains("session/flaky"), "{text}");
    assert!(text.contains("BackOff"), "{text}");

    // describe ends with them.
    let out = Command::new(bin())
        .args(["describe", "flaky", "--dir"])
        .arg(&dir)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let tail = &text[text.find("\nEvents:\n").expect("an Events: block")..];
    assert!(
        tail.contains("Spawned") && tail.contains("Failed"),
        "{text}"
    );
    assert!(text.trim_end().ends_with(|c: char| !c.is_whitespace()));
    let last_block = text.rfind("\nEvents:\n").unwrap();
    assert!(
        !text[last_block + 9..].contains("\n\n"),
        "Events is the last block: {text}"
    );

    // --since filters by age: nothing is older than a day, nothing newer than 0s... in the future.
    let out = Command::new(bin())
        .args(["events", "flaky", "--since", "1d", "-o", "json", "--dir"])
        .arg(&dir)
        .output()
        .unwrap();
    let since: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(since.len(), all.len());
    let out = Command::new(bin())
        .args(["events", "--since", "soon", "--dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--since"));
}

#[test]
fn a_timeout_and_an_active_deadline_are_warning_events_entering_timed_out() {
    let (_tmp, dir) = sessions_dir();
    write_file(
        &dir.join("slow.yaml"),
        &session(
            "slow",
            "command: [/bin/sh, -c, 'exec sleep 300']\ntimeout: 1s\nmaxRetries: 0\nterminationGracePeriod: 1s",
        ),
    );
    write_file(
        &dir.join("late.yaml"),
        &session(
            "late",
            "command: [/bin/sh, -c, 'exec sleep 300']\nactiveDeadline: 1s\nterminationGracePeriod: 1s",
        ),
    );
    let _c = Controller::start(&dir, &[]);
    wait_phase(&dir, "slow", "TimedOut");
    wait_phase(&dir, "late", "TimedOut");
    let e = wait_event(&dir, "slow", "TimedOut");
    assert_eq!(e["type"], "Warning");
    let entered = wait_for("slow's TimedOut phase event", || {
        events(&dir, Some("slow"))
            .into_iter()
            .find(|e| e["phase"] == "TimedOut")
    });
    assert_eq!(entered["reason"], "TimedOut");
    let e = wait_event(&dir, "late", "DeadlineExceeded");
    assert_eq!(e["type"], "Warning");
    let list = reasons(&dir, "slow");
    assert!(in_order(&list, &["Spawned", "TimedOut"]), "{list:?}");
}

#[test]
fn an_invalid_manifest_then_a_valid_one() {
    let (_tmp, dir) = sessions_dir();
    write_file(
        &dir.join("typo.yaml"),
        &session("typo", "comand: [/bin/sh, -c, 'exec sleep 300']"),
    );
    let _c = Controller::start(&dir, &[]);
    wait_phase(&dir, "typo", "Invalid");
    let e = wait_event(&dir, "typo", "ManifestInvalid");
    assert_eq!(e["type"], "Warning");
    write_file(
        &dir.join("typo.yaml"),
        &session("typo", "command: [/bin/sh, -c, 'exec sleep 300']"),
    );
    wait_phase(&dir, "typo", "Running");
    let e = wait_event(&dir, "typo", "ManifestValid");
    assert_eq!(e["type"], "Normal");
    let list = reasons(&dir, "typo");
    assert!(
        in_order(&list, &["ManifestInvalid", "ManifestValid", "Spawned"]),
        "{list:?}"
    );
    // A running session whose manifest breaks keeps running: a Warning, then valid again.
    write_file(
        &dir.join("typo.yaml"),
        &session(
            "typo",
            "command: [/bin/sh, -c, 'exec sleep 300']\nmaxRetries: -1",
        ),
    );
    wait_for("a second ManifestInvalid", || {
        (reasons(&dir, "typo")
            .iter()
            .filter(|r| *r == "ManifestInvalid")
            .count()
            == 2)
            .then_some(())
    });
}

/// A Pool manifest.
fn pool(name: &str, spec: &str) -> String {
    let body: String = spec.lines().map(|l| format!("  {l}\n")).collect();
    format!(
        "apiVersion: sessionlet.dev/v1alpha1\nkind: Pool\nmetadata:\n  name: {name}\nspec:\n{body}"
    )
}

#[test]
fn a_pool_queues_admits_and_scales() {
    let (tmp, dir) = sessions_dir();
    let gate = tmp.path().join("gate");
    write_file(&dir.join("cap.yaml"), &pool("cap", "maxConcurrent: 1"));
    write_file(
        &dir.join("first.yaml"),
        &session(
            "first",
            &format!(
                "command: [/bin/sh, -c, 'while [ ! -e \"{}\" ]; do sleep 0.05; done']\npool: cap",
                gate.display()
            ),
        ),
    );
    let _c = Controller::start(&dir, &[]);
    wait_phase(&dir, "first", "Running");
    write_file(
        &dir.join("second.yaml"),
        &session(
            "second",
            "command: [/bin/sh, -c, 'exec sleep 300']\npool: cap",
        ),
    );
    wait_phase(&dir, "second", "Queued");
    let q = wait_event(&dir, "second", "Queued");
    assert_eq!(q["type"], "Normal");
    assert_eq!(q["phase"], "Queued");
    assert!(q["message"].as_str().unwrap().contains("pool cap"), "{q}");
    std::fs::write(&gate, "").unwrap();
    wait_phase(&dir, "second", "Running");
    let a = wait_event(&dir, "second", "Admitted");
    assert_eq!(a["type"], "Normal");
    let list = reasons(&dir, "second");
    assert!(in_order(&list, &["Queued", "Spawned"]), "{list:?}");

    write_file(
        &dir.join("web.yaml"),
        &pool(
            "web",
            "replicas: 1\ntemplate:\n  spec:\n    command: [/bin/sh, -c, 'exec sleep 300']",
        ),
    );
    wait_for("web's replica running", || {
        status_docs(&dir.join("web.status.yaml")).and_then(|d| {
            d.into_iter()
                .find(|d| d["kind"] == "PoolStatus" && d["status"]["running"] == 1)
        })
    });
    write_file(
        &dir.join("web.yaml"),
        &pool(
            "web",
            "replicas: 2\ntemplate:\n  spec:\n    command: [/bin/sh, -c, 'exec sleep 300']",
        ),
    );
    let s = wait_event(&dir, "web", "Scaled");
    assert_eq!(s["object"]["kind"], "Pool");
    assert_eq!(s["type"], "Normal");
    assert!(
        s["message"].as_str().unwrap().contains("from 1 to 2"),
        "{s}"
    );
    wait_event(&dir, "web-1", "Spawned");
}

#[test]
fn a_running_session_is_adopted_after_a_controller_sigkill_and_events_survive() {
    let (_tmp, dir) = sessions_dir();
    let _keeper = KeeperGuard(dir.clone());
    write_file(
        &dir.join("long.yaml"),
        &session("long", "command: [/bin/sh, -c, 'exec sleep 300']"),
    );
    let mut c = Controller::start(&dir, &[]);
    let s = wait_phase(&dir, "long", "Running");
    let pid = s["status"]["pid"].as_u64().unwrap();
    wait_event(&dir, "long", "Spawned");
    c.kill();
    let _c2 = Controller::start(&dir, &[]);
    let e = wait_event(&dir, "long", "Adopted");
    assert_eq!(e["type"], "Normal");
    assert!(
        e["message"].as_str().unwrap().contains(&pid.to_string()),
        "{e}"
    );
    // The first controller's events are still there, and no second spawn.
    let list = reasons(&dir, "long");
    assert!(in_order(&list, &["Spawned", "Adopted"]), "{list:?}");
    wait_passes(&dir, _c2.pid(), 3);
    assert_eq!(
        reasons(&dir, "long")
            .iter()
            .filter(|r| *r == "Spawned")
            .count(),
        1,
        "{list:?}"
    );
}

#[test]
fn a_finished_session_is_garbage_collected_after_ttl() {
    let (_tmp, dir) = sessions_dir();
    write_file(
        &dir.join("once.yaml"),
        &session("once", "command: [/bin/true]\nttlAfterFinished: 1s"),
    );
    let _c = Controller::start(&dir, &[]);
    let e = wait_event(&dir, "once", "GarbageCollected");
    assert_eq!(e["type"], "Normal");
    let list = reasons(&dir, "once");
    assert!(
        in_order(&list, &["Spawned", "Completed", "GarbageCollected"]),
        "{list:?}"
    );
    let done = events(&dir, Some("once"))
        .into_iter()
        .find(|e| e["reason"] == "Completed")
        .unwrap();
    assert_eq!(done["phase"], "Completed");
    assert_eq!(done["type"], "Normal");
}

#[test]
fn a_silent_session_is_stale() {
    let (_tmp, dir) = sessions_dir();
    write_file(
        &dir.join("quiet.yaml"),
        &session(
            "quiet",
            "command: [/bin/sh, -c, 'exec sleep 300']\nstaleAfter: 1s",
        ),
    );
    let _c = Controller::start(&dir, &["--usage-interval", "200ms"]);
    let e = wait_event(&dir, "quiet", "Stale");
    assert_eq!(e["type"], "Warning");
}

#[test]
fn a_session_over_its_memory_limit_gets_a_warning() {
    if Command::new("python3").arg("-V").output().is_err() {
        eprintln!("skipped: python3 is not installed");
        return;
    }
    let (_tmp, dir) = sessions_dir();
    let script = "import time\nchunks = []\nfor i in range(40):\n    chunks.append(b'x' * (10 << 20))\n    time.sleep(0.1)\ntime.sleep(1000)\n";
    let quoted = serde_json::to_string(script).unwrap();
    write_file(
        &dir.join("hog.yaml"),
        &session(
            "hog",
            &format!(
                "command: [python3, -c, {quoted}]\nresources:\n  maxMemory: 100Mi\nrestartPolicy: Never\nterminationGracePeriod: 1s"
            ),
        ),
    );
    let _c = Controller::start(
        &dir,
        &["--usage-interval", "200ms", "--memory-limits", "sampled"],
    );
    let e = wait_event(&dir, "hog", "MemoryLimitExceeded");
    assert_eq!(e["type"], "Warning");
    assert_eq!(e["object"]["name"], "hog");
}

#[test]
fn the_events_file_stays_within_its_bound() {
    let (_tmp, dir) = sessions_dir();
    write_file(
        &dir.join("loop.yaml"),
        &session(
            "loop",
            "command: [/bin/sh, -c, 'exit 3']\nrestartPolicy: Always\nbackoff: {initialDelay: 10ms, maxDelay: 10ms}",
        ),
    );
    let bound: u64 = 2048;
    let mut c = Controller::start(&dir, &["--max-events-size", "2Ki"]);
    let control = dir.join(".sessionlet");
    wait_for("the events file to rotate twice", || {
        // Rotated at least once, and the current file refilled past half the bound.
        let old = std::fs::metadata(control.join("events.1.jsonl")).ok()?;
        let cur = std::fs::metadata(control.join("events.jsonl")).ok()?;
        (old.len() > bound / 2 && cur.len() > bound / 2).then_some(())
    });
    c.stop();
    for f in ["events.jsonl", "events.1.jsonl"] {
        let len = std::fs::metadata(control.join(f)).unwrap().len();
        assert!(len <= bound, "{f} is {len} bytes, over {bound}");
    }
    assert!(!control.join("events.2.jsonl").exists());
    // Still readable, oldest first.
    let all = events(&dir, Some("loop"));
    assert!(all.len() >= 4, "{all:#?}");
    let times: Vec<&str> = all
        .iter()
        .map(|e| e["lastTimestamp"].as_str().unwrap())
        .collect();
    let mut sorted = times.clone();
    sorted.sort();
    assert_eq!(times, sorted);
}

#[test]
fn no_env_value_appears_in_events() {
    let (_tmp, dir) = sessions_dir();
    let secret = "s3cr3t-value-4471";
    write_file(
        &dir.join("leaky.yaml"),
        &session(
            "leaky",
            &format!(
                "command: [/bin/sh, -c, 'echo \"$TOKEN\"; echo \"$TOKEN\" >&2; exit 1']\nenv: {{TOKEN: {secret}}}\nmaxRetries: 1\nbackoff: {{initialDelay: 50ms}}"
            ),
        ),
    );
    let _c = Controller::start(&dir, &[]);
    wait_phase(&dir, "leaky", "Failed");
    wait_event(&dir, "leaky", "Failed");
    let text = std::fs::read_to_string(dir.join(".sessionlet/events.jsonl")).unwrap();
    assert!(text.contains("leaky"));
    assert!(!text.contains(secret), "{text}");
}

#[test]
fn events_work_without_a_controller() {
    let (_tmp, dir) = sessions_dir();
    let out = Command::new(bin())
        .args(["events", "--dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no events"));
    let out = Command::new(bin())
        .args(["events", "--dir"])
        .arg(dir.join("missing"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a folder"));
}

#[test]
fn events_w_prints_new_events_as_they_happen() {
    let (_tmp, dir) = sessions_dir();
    let _c = Controller::start(&dir, &[]);
    wait_passes(&dir, _c.pid(), 1);
    let out_file = dir.parent().unwrap().join("watch.out");
    let mut watch = Command::new(bin())
        .args(["events", "-w", "--dir"])
        .arg(&dir)
        .stdout(std::fs::File::create(&out_file).unwrap())
        .spawn()
        .unwrap();
    wait_for("the header", || {
        std::fs::read_to_string(&out_file)
            .ok()
            .filter(|t| t.contains("REASON"))
    });
    write_file(
        &dir.join("later.yaml"),
        &session("later", "command: [/bin/true]"),
    );
    let text = wait_for("a Spawned line for later", || {
        std::fs::read_to_string(&out_file)
            .ok()
            .filter(|t| t.contains("session/later") && t.contains("Completed"))
    });
    assert!(text.contains("Spawned"), "{text}");
    let _ = watch.kill();
    let _ = watch.wait();
}

#[test]
fn a_deleted_session_is_removed() {
    let (_tmp, dir) = sessions_dir();
    write_file(
        &dir.join("gone.yaml"),
        &session(
            "gone",
            "command: [/bin/sh, -c, 'exec sleep 300']\nterminationGracePeriod: 1s",
        ),
    );
    let _c = Controller::start(&dir, &[]);
    let s = wait_phase(&dir, "gone", "Running");
    wait_event(&dir, "gone", "Spawned");
    std::fs::remove_file(dir.join("gone.yaml")).unwrap();
    let e = wait_event(&dir, "gone", "Removed");
    assert_eq!(e["type"], "Normal");
    assert_eq!(e["object"]["uid"], s["metadata"]["uid"], "{e}");
}

#[test]
fn a_missing_command_is_a_warning_not_a_spawn() {
    let (_tmp, dir) = sessions_dir();
    write_file(
        &dir.join("nocmd.yaml"),
        &session("nocmd", "command: [/nonexistent/program]"),
    );
    let _c = Controller::start(&dir, &[]);
    wait_phase(&dir, "nocmd", "Failed");
    let e = wait_event(&dir, "nocmd", "CommandNotFound");
    assert_eq!(e["type"], "Warning");
    wait_event(&dir, "nocmd", "Failed");
    let list = reasons(&dir, "nocmd");
    assert!(!list.iter().any(|r| r == "Spawned"), "{list:?}");
}

#[test]
fn a_suspended_session_is_stopped_with_why() {
    let (_tmp, dir) = sessions_dir();
    let spec = "command: [/bin/sh, -c, 'exec sleep 300']\nterminationGracePeriod: 1s";
    write_file(&dir.join("pause.yaml"), &session("pause", spec));
    let _c = Controller::start(&dir, &[]);
    wait_phase(&dir, "pause", "Running");
    write_file(
        &dir.join("pause.yaml"),
        &session("pause", &format!("{spec}\nsuspend: true")),
    );
    wait_phase(&dir, "pause", "Cancelled");
    let e = wait_event(&dir, "pause", "Stopped");
    assert_eq!(e["type"], "Normal");
    assert_eq!(e["phase"], "Cancelled");
    assert!(e["message"].as_str().unwrap().contains("Suspended"), "{e}");
    let list = reasons(&dir, "pause");
    assert!(
        in_order(&list, &["Spawned", "Suspended", "Stopped"]),
        "{list:?}"
    );
}
