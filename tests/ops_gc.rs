//! Garbage collection and Git: `ttlAfterFinished` keeps the manifest by
//! default (Git may track it), removes the status, logs and crash dumps and
//! records the collected spec so that it does not run again, while a
//! changed spec does.

mod common;

use common::*;

/// How many times the session ran (each run appends a line to `runs`).
fn runs(work: &std::path::Path) -> usize {
    std::fs::read_to_string(work.join("runs"))
        .map(|t| t.lines().count())
        .unwrap_or(0)
}

/// Writes a session that completes at once and waits for it: proof that
/// the controller made a pass over everything written before.
fn probe(dir: &std::path::Path, name: &str) {
    write_file(
        &dir.join(format!("{name}.yaml")),
        &session(name, "command: [/bin/true]"),
    );
    wait_phase(dir, name, "Completed");
}

fn temp_session(work: &std::path::Path, word: &str) -> String {
    session(
        "temp",
        &format!(
            "command: [/bin/sh, -c, 'echo {word} >> runs; echo bye; exit 5']\nworkingDir: {}\nmaxRetries: 0\nttlAfterFinished: 1s",
            work.display()
        ),
    )
}

#[test]
fn ttl_after_finished_keeps_the_manifest_and_the_same_spec_does_not_run_again() {
    let (tmp, dir) = sessions_dir();
    let work = tmp.path();
    write_file(&dir.join("temp.yaml"), &temp_session(work, "one"));
    let mut c = Controller::start(&dir, &[]);
    wait_phase(&dir, "temp", "Failed");
    assert!(dir.join("temp.logs").is_dir(), "logs exist before the TTL");
    assert!(
        dir.join("temp.crashes").is_dir(),
        "a crash dump exists before the TTL"
    );
    wait_for("the status, logs and crash dumps to be removed", || {
        let left: Vec<_> = ["temp.status.yaml", "temp.logs", "temp.crashes"]
            .into_iter()
            .filter(|f| dir.join(f).exists())
            .collect();
        left.is_empty().then_some(())
    });
    assert!(dir.join("temp.yaml").is_file(), "the manifest stays");
    let collected: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.join(".sessionlet/collected.json")).expect("collected.json"),
    )
    .expect("JSON");
    assert!(collected["temp"].is_u64(), "{collected}");
    assert!(c
        .log()
        .lines()
        .any(|l| l.contains("garbage-collected") && l.contains("temp")));
    // A new controller (a reboot, a `git pull` touching the file) does not run it again.
    c.stop();
    let _c2 = Controller::start(&dir, &[]);
    // A probe written after the controller started completes only after a
    // pass that saw every manifest.
    probe(&dir, "probe-1");
    assert_eq!(runs(work), 1, "the collected spec did not run again");
    assert!(!dir.join("temp.status.yaml").exists());
    // The same content written again (a checkout) changes nothing either.
    write_file(&dir.join("temp.yaml"), &temp_session(work, "one"));
    probe(&dir, "probe-2");
    assert_eq!(runs(work), 1);
    // A changed spec runs.
    write_file(&dir.join("temp.yaml"), &temp_session(work, "two"));
    wait_for("the changed spec to run", || {
        (runs(work) == 2).then_some(())
    });
    let lines = std::fs::read_to_string(work.join("runs")).unwrap_or_default();
    assert_eq!(lines, "one\ntwo\n");
}

// ---------------------------------------------------------------------------
// Tombstones.

fn tombstone(dir: &std::path::Path, name: &str) -> Option<serde_json::Value> {
    status_docs(&dir.join(format!("{name}.tombstone.status.yaml")))?
        .into_iter()
        .next()
}

#[test]
fn a_deleted_session_keeps_a_tombstone_and_its_logs() {
    let (_tmp, dir) = sessions_dir();
    write_file(
        &dir.join("srv.yaml"),
        &session(
            "srv",
            "command: [/bin/sh, -c, 'echo hello-srv; exec sleep 300']",
        ),
    );
    let _c = Controller::start(&dir, &[]);
    wait_status(&dir, "srv", "running with output", |s| {
        s["status"]["phase"] == "Running"
            && s["status"]["logs"]["stdout"]
                .as_str()
                .and_then(|p| std::fs::read_to_string(dir.join(p)).ok())
                .is_some_and(|t| t.contains("hello-srv"))
    });
    std::fs::remove_file(dir.join("srv.yaml")).expect("delete the manifest");
    let t = wait_for("the tombstone", || tombstone(&dir, "srv"));
    wait_for("the status file to go", || {
        (!dir.join("srv.status.yaml").exists()).then_some(())
    });
    assert_eq!(t["metadata"]["name"], "srv");
    assert_eq!(t["status"]["phase"], "Cancelled", "{t:#}");
    assert_eq!(t["status"]["reason"], "Removed", "{t:#}");
    assert!(t["status"]["finishedAt"].is_string(), "when: {t:#}");
    assert_eq!(
        t["status"]["lastExit"]["reason"], "Removed",
        "last exit: {t:#}"
    );
    assert!(
        t["status"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("kept until")),
        "{t:#}"
    );
    // The logs stay readable, by name.
    let out = std::process::Command::new(bin())
        .args(["logs", "srv", "--dir"])
        .arg(&dir)
        .output()
        .expect("logs");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello-srv\n");
}

#[test]
fn a_scaled_down_replica_keeps_a_tombstone_until_the_tombstone_ttl() {
    let (_tmp, dir) = sessions_dir();
    let pool = |n: u32| {
        format!("apiVersion: sessionlet.dev/v1alpha1\nkind: Pool\nmetadata:\n  name: web\nspec:\n  replicas: {n}\n  template:\n    spec:\n      command: [/bin/sh, -c, 'echo up; exec sleep 300']\n")
    };
    write_file(&dir.join("web.yaml"), &pool(2));
    let c = Controller::start(&dir, &["--tombstone-ttl", "1s"]);
    wait_status(&dir, "web", "two running members", |s| {
        s["status"]["members"]
            .as_array()
            .is_some_and(|m| m.len() == 2 && m.iter().all(|m| m["phase"] == "Running"))
    });
    write_file(&dir.join("web.yaml"), &pool(1));
    // The tombstone is written, then removed with the replica's logs once
    // the TTL passed; the log says both.
    wait_for("the tombstone to expire", || {
        c.log()
            .lines()
            .any(|l| l.contains("tombstone-expired") && l.contains("web-1"))
            .then_some(())
    });
    let log = c.log();
    assert!(
        log.lines()
            .any(|l| l.contains("event=\"tombstone\"") && l.contains("web-1")),
        "written first: {log}"
    );
    assert!(tombstone(&dir, "web-1").is_none());
    assert!(
        !dir.join("web.logs/web-1").exists(),
        "its logs went with it"
    );
    assert!(
        dir.join("web.logs/web-0").is_dir(),
        "the other member's stay"
    );
}
