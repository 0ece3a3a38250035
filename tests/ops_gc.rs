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
