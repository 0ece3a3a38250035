//! Lifecycle: completion, failures with backoff and retries, restart policies.

mod common;
use common::*;

#[test]
fn a_one_shot_session_completes_and_keeps_its_output() {
    let (_tmp, dir) = sessions_dir();
    write_file(
        &dir.join("job.yaml"),
        &session("job", "command: [/bin/sh, -c, 'echo out; echo err >&2']"),
    );
    let _c = Controller::start(&dir, &[]);
    let s = wait_phase(&dir, "job", "Completed");
    assert_eq!(s["status"]["reason"], "Completed");
    assert_eq!(s["status"]["lastExit"]["exitCode"], 0);
    assert_eq!(s["status"]["observedGeneration"], 1);
    let out =
        std::fs::read_to_string(dir.join(s["status"]["logs"]["stdout"].as_str().unwrap())).unwrap();
    let err =
        std::fs::read_to_string(dir.join(s["status"]["logs"]["stderr"].as_str().unwrap())).unwrap();
    assert_eq!(out, "out\n");
    assert_eq!(err, "err\n");
    assert!(
        !dir.join("job.crashes").exists(),
        "a clean exit leaves no crash dump"
    );
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
    assert!(
        recovering["status"]["nextRestartAt"].is_string(),
        "{recovering:#?}"
    );
    let s = wait_phase(&dir, "flaky", "Failed");
    assert_eq!(s["status"]["reason"], "Error");
    assert_eq!(s["status"]["attempt"], 3);
    assert_eq!(s["status"]["restarts"], 2);
    assert_eq!(s["status"]["lastExit"]["exitCode"], 3);
    let dumps: Vec<_> = std::fs::read_dir(dir.join("flaky.crashes"))
        .unwrap()
        .flatten()
        .collect();
    assert_eq!(dumps.len(), 3, "one crash dump per failed attempt");
    let dump_path = dir.join(s["status"]["lastExit"]["crashDump"].as_str().unwrap());
    let dump = std::fs::read_to_string(dump_path).unwrap();
    assert!(dump.contains("boom"), "stderr tail in the dump: {dump}");
    assert!(
        dump.contains("SECRET_TOKEN"),
        "env names in the dump: {dump}"
    );
    assert!(!dump.contains("hunter2-value"), "never env values: {dump}");
    let status_text = std::fs::read_to_string(dir.join("flaky.status.yaml")).unwrap();
    assert!(!status_text.contains("hunter2-value"));
}

// ---------------------------------------------------------------------------
// Helpers of this file.

/// Reads a file named relative to the status directory (as status files name them).
fn read_rel(dir: &std::path::Path, rel: &serde_json::Value) -> String {
    let rel = rel.as_str().unwrap_or_else(|| panic!("not a path: {rel}"));
    std::fs::read_to_string(dir.join(rel)).unwrap_or_else(|e| panic!("read {rel}: {e}"))
}

/// The files in `STEM.crashes/`, sorted.
fn crash_dumps(dir: &std::path::Path, stem: &str) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir.join(format!("{stem}.crashes")))
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

/// An RFC 3339 timestamp of a status file.
fn time(v: &serde_json::Value) -> chrono::DateTime<chrono::Utc> {
    let s = v.as_str().unwrap_or_else(|| panic!("not a timestamp: {v}"));
    chrono::DateTime::parse_from_rfc3339(s)
        .unwrap_or_else(|e| panic!("bad timestamp {s}: {e}"))
        .with_timezone(&chrono::Utc)
}

/// The pid a session printed as the first line of an attempt's stdout.
fn printed_pid(dir: &std::path::Path, stem: &str, attempt: u32) -> u32 {
    let path = dir.join(format!("{stem}.logs/attempt-{attempt}.stdout.log"));
    wait_for(&format!("{} to hold a pid", path.display()), || {
        std::fs::read_to_string(&path)
            .ok()?
            .lines()
            .next()?
            .trim()
            .parse()
            .ok()
    })
}

// ---------------------------------------------------------------------------
// Restart policies and retries.

#[test]
fn restart_policy_never_fails_at_the_first_failure_without_a_restart() {
    let (_tmp, dir) = sessions_dir();
    write_file(
        &dir.join("once.yaml"),
        &session("once", "command: [/bin/sh, -c, 'exit 4']\nrestartPolicy: Never\nmaxRetries: 5\nbackoff: {initialDelay: 100ms}"),
    );
    let _c = Controller::start(&dir, &[]);
    let s = wait_phase(&dir, "once", "Failed");
    assert_eq!(s["status"]["reason"], "Error", "{s:#?}");
    assert_eq!(s["status"]["attempt"], 1, "no second attempt: {s:#?}");
    assert_eq!(s["status"]["restarts"], 0, "{s:#?}");
    assert_eq!(s["status"]["lastExit"]["exitCode"], 4, "{s:#?}");
    assert!(s["status"]["nextRestartAt"].is_null(), "{s:#?}");
    assert_eq!(
        crash_dumps(&dir, "once").len(),
        1,
        "one dump for the one failed attempt"
    );
}

#[test]
fn restart_policy_always_restarts_after_a_clean_exit_with_a_new_pid() {
    let (_tmp, dir) = sessions_dir();
    write_file(
        &dir.join("loop.yaml"),
        &session(
            "loop",
            "command: [/bin/sh, -c, 'echo $$; exit 0']\nrestartPolicy: Always\nbackoff: {initialDelay: 200ms, multiplier: 1.0}",
        ),
    );
    let _c = Controller::start(&dir, &[]);
    let s = wait_status(&dir, "loop", "two restarts", |s| {
        s["status"]["restarts"].as_u64().is_some_and(|r| r >= 2)
    });
    assert_ne!(
        s["status"]["phase"], "Completed",
        "Always never completes: {s:#?}"
    );
    assert_ne!(s["status"]["phase"], "Failed", "{s:#?}");
    assert_eq!(s["status"]["lastExit"]["exitCode"], 0, "{s:#?}");
    assert_eq!(s["status"]["lastExit"]["reason"], "Completed", "{s:#?}");
    let (p1, p2) = (printed_pid(&dir, "loop", 1), printed_pid(&dir, "loop", 2));
    assert_ne!(p1, p2, "each attempt is a new process");
    assert!(
        crash_dumps(&dir, "loop").is_empty(),
        "clean exits leave no crash dump"
    );
}

#[test]
fn max_retries_zero_with_on_failure_fails_after_one_attempt() {
    let (_tmp, dir) = sessions_dir();
    write_file(
        &dir.join("zero.yaml"),
        &session(
            "zero",
            "command: [/bin/sh, -c, 'exit 2']\nrestartPolicy: OnFailure\nmaxRetries: 0\nbackoff: {initialDelay: 100ms}",
        ),
    );
    let _c = Controller::start(&dir, &[]);
    let s = wait_phase(&dir, "zero", "Failed");
    assert_eq!(s["status"]["reason"], "Error", "{s:#?}");
    assert_eq!(s["status"]["attempt"], 1, "{s:#?}");
    assert_eq!(s["status"]["restarts"], 0, "{s:#?}");
    assert_eq!(s["status"]["lastExit"]["exitCode"], 2, "{s:#?}");
    let msg = s["status"]["message"].as_str().unwrap_or_default();
    assert!(msg.contains("maxRetries 0"), "the message says why: {msg}");
}

#[test]
fn next_restart_at_is_set_while_recovering_and_the_backoff_grows() {
    let (_tmp, dir) = sessions_dir();
    write_file(
        &dir.join("grow.yaml"),
        &session(
            "grow",
            "command: [/bin/sh, -c, 'exit 1']\nmaxRetries: 2\nbackoff: {initialDelay: 1s, multiplier: 3.0, maxDelay: 1m}",
        ),
    );
    let _c = Controller::start(&dir, &[]);
    // Collect the Recovering statuses of the first two failed attempts.
    let mut delays: std::collections::BTreeMap<u64, chrono::Duration> = Default::default();
    wait_for("Recovering after attempts 1 and 2, then Failed", || {
        let s = status(&dir, "grow")?;
        let st = &s["status"];
        if st["phase"] == "Recovering" {
            let attempt = st["lastExit"]["attempt"].as_u64()?;
            assert!(
                st["nextRestartAt"].is_string(),
                "nextRestartAt while Recovering: {s:#?}"
            );
            let delay = time(&st["nextRestartAt"]) - time(&st["lastExit"]["finishedAt"]);
            delays.insert(attempt, delay);
        } else {
            assert!(
                st["nextRestartAt"].is_null(),
                "nextRestartAt only while Recovering: {s:#?}"
            );
        }
        (st["phase"] == "Failed").then_some(())
    });
    let (Some(d1), Some(d2)) = (delays.get(&1), delays.get(&2)) else {
        panic!("did not see both Recovering statuses: {delays:?}");
    };
    let tolerance = chrono::Duration::milliseconds(50);
    assert!(
        *d1 + tolerance >= chrono::Duration::milliseconds(1000),
        "first delay is the initial delay: {d1}"
    );
    assert!(*d2 + tolerance >= *d1, "second delay {d2} < first {d1}");
    assert!(
        *d2 > *d1 + chrono::Duration::milliseconds(1000),
        "multiplier 3 grows the delay: {d1} then {d2}"
    );
}

// ---------------------------------------------------------------------------
// Spawn failures.

#[test]
fn a_command_that_is_not_found_is_a_backed_off_failed_attempt_with_a_crash_dump() {
    let (_tmp, dir) = sessions_dir();
    // A relative path may appear (a build step): it is retried with backoff
    // (an absolute path or a PATH name is not: ops_get.rs).
    write_file(
        &dir.join("ghost.yaml"),
        &session(
            "ghost",
            "command: [./sessionlet-no-such-command-xyz, --flag]\nmaxRetries: 2\nbackoff: {initialDelay: 300ms, multiplier: 2.0}",
        ),
    );
    let _c = Controller::start(&dir, &[]);
    let r = wait_status(&dir, "ghost", "Recovering after CommandNotFound", |s| {
        s["status"]["phase"] == "Recovering"
    });
    assert_eq!(r["status"]["reason"], "CommandNotFound", "{r:#?}");
    assert!(r["status"]["nextRestartAt"].is_string(), "{r:#?}");
    let s = wait_phase(&dir, "ghost", "Failed");
    assert_eq!(s["status"]["reason"], "CommandNotFound", "{s:#?}");
    assert_eq!(
        s["status"]["attempt"], 3,
        "maxRetries+1 attempts, no hot loop: {s:#?}"
    );
    assert_eq!(s["status"]["restarts"], 2, "{s:#?}");
    assert_eq!(
        s["status"]["lastExit"]["reason"], "CommandNotFound",
        "{s:#?}"
    );
    let msg = s["status"]["lastExit"]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(
        msg.contains("sessionlet-no-such-command-xyz"),
        "names the command: {msg}"
    );
    assert_eq!(
        crash_dumps(&dir, "ghost").len(),
        3,
        "one dump per failed spawn"
    );
    let dump = read_rel(&dir, &s["status"]["lastExit"]["crashDump"]);
    assert!(dump.contains("CommandNotFound"), "{dump}");
    assert!(
        dump.contains("sessionlet-no-such-command-xyz"),
        "the command is in the dump: {dump}"
    );
}

#[test]
fn a_command_that_is_not_executable_fails_with_permission_denied() {
    let (tmp, dir) = sessions_dir();
    let script = tmp.path().join("not-executable.sh");
    std::fs::write(&script, "#!/bin/sh\necho should-not-run\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o644)).unwrap();
    write_file(
        &dir.join("noexec.yaml"),
        &session(
            "noexec",
            &format!("command: [{}]\nmaxRetries: 0", script.display()),
        ),
    );
    let _c = Controller::start(&dir, &[]);
    let s = wait_phase(&dir, "noexec", "Failed");
    assert_eq!(s["status"]["reason"], "PermissionDenied", "{s:#?}");
    assert_eq!(
        s["status"]["lastExit"]["reason"], "PermissionDenied",
        "{s:#?}"
    );
    assert_eq!(s["status"]["attempt"], 1, "{s:#?}");
    assert_eq!(crash_dumps(&dir, "noexec").len(), 1);
}

#[test]
fn a_missing_working_directory_is_a_failed_attempt_with_a_clear_message() {
    let (tmp, dir) = sessions_dir();
    let missing = tmp.path().join("no-such-workdir");
    write_file(
        &dir.join("nowd.yaml"),
        &session(
            "nowd",
            &format!(
                "command: [/bin/sh, -c, 'echo hi']\nworkingDir: {}\nmaxRetries: 0",
                missing.display()
            ),
        ),
    );
    let _c = Controller::start(&dir, &[]);
    let s = wait_phase(&dir, "nowd", "Failed");
    assert_eq!(s["status"]["attempt"], 1, "{s:#?}");
    let exit = &s["status"]["lastExit"];
    assert_eq!(exit["reason"], "SpawnFailed", "{s:#?}");
    assert!(
        exit["exitCode"].is_null() && exit["signal"].is_null(),
        "it never ran: {s:#?}"
    );
    let msg = exit["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains("no-such-workdir"),
        "names the directory: {msg}"
    );
    assert!(
        msg.contains("working directory"),
        "says what is wrong: {msg}"
    );
    assert_eq!(
        crash_dumps(&dir, "nowd").len(),
        1,
        "a failed attempt like any other"
    );
}

// ---------------------------------------------------------------------------
// What the process gets.

#[test]
fn stdin_text_is_given_to_the_process() {
    let (_tmp, dir) = sessions_dir();
    write_file(
        &dir.join("cat.yaml"),
        &session("cat", "command: [cat]\nstdin: \"line one\\nline two\\n\""),
    );
    let _c = Controller::start(&dir, &[]);
    let s = wait_phase(&dir, "cat", "Completed");
    assert_eq!(
        read_rel(&dir, &s["status"]["logs"]["stdout"]),
        "line one\nline two\n"
    );
}

#[test]
fn env_variables_reach_the_process() {
    let (_tmp, dir) = sessions_dir();
    write_file(
        &dir.join("env.yaml"),
        &session(
            "env",
            "command: [/bin/sh, -c, 'echo \"$GREETING/$OTHER\"']\nenv: {GREETING: hello-env, OTHER: second}",
        ),
    );
    let _c = Controller::start(&dir, &[]);
    let s = wait_phase(&dir, "env", "Completed");
    assert_eq!(
        read_rel(&dir, &s["status"]["logs"]["stdout"]),
        "hello-env/second\n"
    );
}

#[test]
fn a_relative_working_dir_resolves_against_the_manifest_directory() {
    let (tmp, dir) = sessions_dir();
    let work = tmp.path().join("workarea");
    std::fs::create_dir(&work).unwrap();
    std::fs::write(work.join("marker.txt"), "found-the-marker\n").unwrap();
    write_file(
        &dir.join("wd.yaml"),
        &session(
            "wd",
            "command: [/bin/sh, -c, 'cat marker.txt; pwd -P']\nworkingDir: ../workarea",
        ),
    );
    let _c = Controller::start(&dir, &[]);
    let s = wait_phase(&dir, "wd", "Completed");
    let out = read_rel(&dir, &s["status"]["logs"]["stdout"]);
    let expected = std::fs::canonicalize(&work).unwrap();
    assert_eq!(out, format!("found-the-marker\n{}\n", expected.display()));
}

// ---------------------------------------------------------------------------
// Time limits.

#[test]
fn a_timeout_stops_the_attempt_and_ends_timed_out_without_retries() {
    let (_tmp, dir) = sessions_dir();
    write_file(
        &dir.join("slow.yaml"),
        &session(
            "slow",
            "command: [sleep, '1000']\ntimeout: 1s\nmaxRetries: 0\nterminationGracePeriod: 1s",
        ),
    );
    let _c = Controller::start(&dir, &[]);
    let running = wait_status(&dir, "slow", "Running with a pid", |s| {
        s["status"]["pid"].is_u64()
    });
    let pid = running["status"]["pid"].as_u64().unwrap() as u32;
    let s = wait_phase(&dir, "slow", "TimedOut");
    assert_eq!(s["status"]["reason"], "TimedOut", "{s:#?}");
    assert_eq!(s["status"]["lastExit"]["reason"], "TimedOut", "{s:#?}");
    assert_eq!(
        s["status"]["lastExit"]["signal"], "SIGTERM",
        "stopped with its stop signal: {s:#?}"
    );
    assert_eq!(s["status"]["attempt"], 1, "{s:#?}");
    assert!(!alive(pid), "the attempt's process is gone");
    assert_eq!(
        crash_dumps(&dir, "slow").len(),
        1,
        "a timeout counts as a failure"
    );
}

#[test]
fn an_active_deadline_ends_the_session_timed_out_with_deadline_exceeded() {
    let (_tmp, dir) = sessions_dir();
    write_file(
        &dir.join("deadline.yaml"),
        &session(
            "deadline",
            "command: [sleep, '1000']\nactiveDeadline: 1s\nmaxRetries: 5\nterminationGracePeriod: 1s",
        ),
    );
    let _c = Controller::start(&dir, &[]);
    let running = wait_status(&dir, "deadline", "Running with a pid", |s| {
        s["status"]["pid"].is_u64()
    });
    let pid = running["status"]["pid"].as_u64().unwrap() as u32;
    let s = wait_phase(&dir, "deadline", "TimedOut");
    assert_eq!(s["status"]["reason"], "DeadlineExceeded", "{s:#?}");
    assert_eq!(
        s["status"]["lastExit"]["reason"], "DeadlineExceeded",
        "{s:#?}"
    );
    assert_eq!(
        s["status"]["attempt"], 1,
        "the deadline ends the whole session, no retry: {s:#?}"
    );
    assert!(!alive(pid), "the process is gone");
}

// ---------------------------------------------------------------------------
// Crashes.

#[test]
fn a_session_killed_by_a_signal_it_sent_itself_is_crashed_with_the_signal() {
    let (_tmp, dir) = sessions_dir();
    write_file(
        &dir.join("segv.yaml"),
        &session(
            "segv",
            "command: [/bin/sh, -c, 'ulimit -c 0; kill -SEGV $$']\nmaxRetries: 0",
        ),
    );
    let _c = Controller::start(&dir, &[]);
    let s = wait_phase(&dir, "segv", "Failed");
    assert_eq!(s["status"]["reason"], "Crashed", "{s:#?}");
    assert_eq!(s["status"]["lastExit"]["reason"], "Crashed", "{s:#?}");
    assert_eq!(s["status"]["lastExit"]["signal"], "SIGSEGV", "{s:#?}");
    assert!(s["status"]["lastExit"]["exitCode"].is_null(), "{s:#?}");
    let dump = read_rel(&dir, &s["status"]["lastExit"]["crashDump"]);
    assert!(dump.contains("SIGSEGV"), "{dump}");
}

#[test]
fn a_session_killed_by_someone_else_with_sigkill_is_crashed_and_restarted() {
    let (_tmp, dir) = sessions_dir();
    write_file(
        &dir.join("victim.yaml"),
        &session(
            "victim",
            "command: [sleep, '1000']\nmaxRetries: 1\nbackoff: {initialDelay: 100ms}",
        ),
    );
    let _c = Controller::start(&dir, &[]);
    let running = wait_status(&dir, "victim", "Running with a pid", |s| {
        s["status"]["pid"].is_u64()
    });
    let pid = running["status"]["pid"].as_u64().unwrap() as u32;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let s = wait_status(&dir, "victim", "the second attempt running", |s| {
        s["status"]["attempt"] == 2 && s["status"]["pid"].is_u64()
    });
    assert_eq!(s["status"]["lastExit"]["reason"], "Crashed", "{s:#?}");
    assert_eq!(s["status"]["lastExit"]["signal"], "SIGKILL", "{s:#?}");
    assert_ne!(s["status"]["pid"].as_u64().unwrap() as u32, pid);
}

// ---------------------------------------------------------------------------
// Garbage collection.

#[test]
fn ttl_after_finished_with_gc_delete_manifests_removes_the_manifest_status_logs_and_crash_dumps() {
    let (_tmp, dir) = sessions_dir();
    write_file(
        &dir.join("temp.yaml"),
        &session(
            "temp",
            "command: [/bin/sh, -c, 'echo bye; exit 5']\nmaxRetries: 0\nttlAfterFinished: 3s",
        ),
    );
    // Opt-in: by default the manifest stays (tests/ops_gc.rs).
    let _c = Controller::start(&dir, &["--gc-delete-manifests"]);
    let s = wait_phase(&dir, "temp", "Failed");
    assert!(dir.join("temp.logs").is_dir(), "logs exist before the TTL");
    assert_eq!(
        crash_dumps(&dir, "temp").len(),
        1,
        "a crash dump exists before the TTL"
    );
    assert!(s["status"]["finishedAt"].is_string(), "{s:#?}");
    wait_for(
        "the manifest, status, logs and crash dumps to be removed",
        || {
            let left: Vec<_> = ["temp.yaml", "temp.status.yaml", "temp.logs", "temp.crashes"]
                .into_iter()
                .filter(|f| dir.join(f).exists())
                .collect();
            left.is_empty().then_some(())
        },
    );
}

// ---------------------------------------------------------------------------
// Files declaring several sessions.

#[test]
fn a_manifest_with_two_sessions_gets_one_status_file_in_order_and_per_session_logs() {
    let (_tmp, dir) = sessions_dir();
    let text = format!(
        "{}---\n{}",
        session("zeta", "command: [/bin/sh, -c, 'echo from-zeta']"),
        session("alpha", "command: [/bin/sh, -c, 'echo from-alpha']")
    );
    write_file(&dir.join("pair.yaml"), &text);
    let _c = Controller::start(&dir, &[]);
    let path = dir.join("pair.status.yaml");
    let docs = wait_for("both sessions Completed", || {
        let docs = status_docs(&path)?;
        (docs.len() == 2 && docs.iter().all(|d| d["status"]["phase"] == "Completed"))
            .then_some(docs)
    });
    let names: Vec<_> = docs
        .iter()
        .map(|d| d["metadata"]["name"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(names, ["zeta", "alpha"], "the manifest's order");
    for (doc, name) in docs.iter().zip(["zeta", "alpha"]) {
        assert_eq!(doc["metadata"]["manifest"], "pair.yaml");
        let stdout = doc["status"]["logs"]["stdout"].as_str().unwrap();
        assert!(
            stdout.starts_with(&format!("pair.logs/{name}/")),
            "per-session folder: {stdout}"
        );
        assert_eq!(
            read_rel(&dir, &doc["status"]["logs"]["stdout"]),
            format!("from-{name}\n")
        );
    }
    assert!(!dir.join("zeta.status.yaml").exists() && !dir.join("alpha.status.yaml").exists());
}
