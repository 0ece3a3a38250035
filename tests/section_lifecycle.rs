//! Lifecycle: completion, failures with backoff and retries, restart policies.

mod common;
use common::*;

#[test]
fn a_one_shot_session_completes_and_keeps_its_output() {
    let (_tmp, dir) = sessions_dir();
    write_file(&dir.join("job.yaml"), &session("job", "command: [/bin/sh, -c, 'echo out; echo err >&2']"));
    let _c = Controller::start(&dir, &[]);
    let s = wait_phase(&dir, "job", "Completed");
    assert_eq!(s["status"]["reason"], "Completed");
    assert_eq!(s["status"]["lastExit"]["exitCode"], 0);
    assert_eq!(s["status"]["observedGeneration"], 1);
    let out = std::fs::read_to_string(dir.join(s["status"]["logs"]["stdout"].as_str().unwrap())).unwrap();
    let err = std::fs::read_to_string(dir.join(s["status"]["logs"]["stderr"].as_str().unwrap())).unwrap();
    assert_eq!(out, "out\n");
    assert_eq!(err, "err\n");
    assert!(!dir.join("job.crashes").exists(), "a clean exit leaves no crash dump");
}

#[test]
fn a_failing_session_backs_off_then_fails_after_max_retries_with_a_crash_dump_each() {
    let (_tmp, dir) = sessions_dir();
    write_file(
        &dir.join("flaky.yaml"),
        &session(
            "flaky",
            "command: [/bin/sh, -c, 'echo boom >&2; exit 3']\nmaxRetries: 2\nbackoff: {initialDelay: 300ms, multiplier: 2.0}\nenv: {SECRET_TOKEN: hunter2-value}",
        ),
    );
    let _c = Controller::start(&dir, &[]);
    let recovering = wait_phase(&dir, "flaky", "Recovering");
    assert!(recovering["status"]["nextRestartAt"].is_string(), "{recovering:#?}");
    let s = wait_phase(&dir, "flaky", "Failed");
    assert_eq!(s["status"]["reason"], "Error");
    assert_eq!(s["status"]["attempt"], 3);
    assert_eq!(s["status"]["restarts"], 2);
    assert_eq!(s["status"]["lastExit"]["exitCode"], 3);
    let dumps: Vec<_> = std::fs::read_dir(dir.join("flaky.crashes")).unwrap().flatten().collect();
    assert_eq!(dumps.len(), 3, "one crash dump per failed attempt");
    let dump_path = dir.join(s["status"]["lastExit"]["crashDump"].as_str().unwrap());
    let dump = std::fs::read_to_string(dump_path).unwrap();
    assert!(dump.contains("boom"), "stderr tail in the dump: {dump}");
    assert!(dump.contains("SECRET_TOKEN"), "env names in the dump: {dump}");
    assert!(!dump.contains("hunter2-value"), "never env values: {dump}");
    let status_text = std::fs::read_to_string(dir.join("flaky.status.yaml")).unwrap();
    assert!(!status_text.contains("hunter2-value"));
}
