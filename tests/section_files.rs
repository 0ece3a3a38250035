//! Files written: status files (content, atomic and change-only rewrites,
//! stable uids), `--status-dir`, file modes, the controller's own status and
//! lock, and the retention of logs and crash dumps.

mod common;
use common::*;

use std::collections::BTreeSet;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use serde_json::Value;

fn sleeper(name: &str, secs: u32) -> String {
    session(name, &format!("command: [sleep, '{secs}']"))
}

/// Waits for `STEM` to be Running and returns its status.
fn wait_running(dir: &Path, stem: &str) -> Value {
    wait_status(dir, stem, "Running with a pid", |s| {
        s["status"]["phase"] == "Running" && s["status"]["pid"].is_u64()
    })
}

/// Drops a one-shot manifest in and waits for it to complete: proof that the
/// controller rescanned (and reconciled) after everything done before.
fn prove_rescan(dir: &Path, tag: &str) {
    let stem = format!("probe-{tag}");
    write_file(
        &dir.join(format!("{stem}.yaml")),
        &session(&stem, "command: ['true']\nrestartPolicy: Never"),
    );
    wait_phase(dir, &stem, "Completed");
}

fn controller_status(status_dir: &Path) -> Option<Value> {
    status_docs(&status_dir.join(".sessionlet/controller.status.yaml"))?
        .into_iter()
        .next()
}

fn names_in(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

/// This process's umask (inherited by the controller), read without changing it.
fn umask() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Umask:"))
                .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
        })
        .unwrap_or(0o022)
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

fn rfc3339(v: &Value) -> bool {
    v.as_str()
        .is_some_and(|t| chrono::DateTime::parse_from_rfc3339(t).is_ok())
}

#[test]
fn a_status_file_is_rewritten_only_when_its_content_changes() {
    let (_tmp, dir) = sessions_dir();
    let text = sleeper("web", 300);
    write_file(&dir.join("web.yaml"), &text);
    let _c = Controller::start(&dir, &[]);
    wait_running(&dir, "web");
    let path = dir.join("web.status.yaml");
    // Let the first passes settle: the status no longer changes once the session runs.
    prove_rescan(&dir, "settle");
    let before_bytes = std::fs::read(&path).unwrap();
    let before = std::fs::metadata(&path).unwrap();
    let count_before = wait_for("the controller status", || controller_status(&dir))
        ["reconcileCount"]
        .as_u64()
        .unwrap();

    // A new manifest (which makes every status dirty), an identical save of
    // web.yaml (which re-reads it), and resyncs, all proven by their effects.
    prove_rescan(&dir, "new-file");
    write_file(&dir.join("web.yaml"), &text);
    prove_rescan(&dir, "identical-save");
    let c = wait_for("more reconcile passes", || {
        controller_status(&dir).filter(|c| {
            c["reconcileCount"]
                .as_u64()
                .is_some_and(|n| n >= count_before + 4)
        })
    });
    assert!(c["reconcileCount"].as_u64().unwrap() > count_before);

    let after = std::fs::metadata(&path).unwrap();
    assert_eq!(
        std::fs::read(&path).unwrap(),
        before_bytes,
        "same bytes, updatedAt included"
    );
    assert_eq!(after.ino(), before.ino(), "the file was not replaced");
    assert_eq!(
        (after.mtime(), after.mtime_nsec()),
        (before.mtime(), before.mtime_nsec()),
        "the file was not rewritten"
    );
}

#[test]
fn a_status_file_has_the_documented_fields() {
    let (_tmp, dir) = sessions_dir();
    // The status file is named after the manifest file, whatever the session's name.
    write_file(&dir.join("web-file.yaml"), &sleeper("web", 300));
    let _c = Controller::start(&dir, &[]);
    let s = wait_running(&dir, "web-file");
    assert_eq!(s["apiVersion"], "sessionlet.dev/v1alpha1", "{s:#?}");
    assert_eq!(s["kind"], "SessionStatus", "{s:#?}");
    let meta = &s["metadata"];
    assert_eq!(meta["name"], "web", "{s:#?}");
    assert_eq!(meta["manifest"], "web-file.yaml", "{s:#?}");
    assert!(
        meta["uid"]
            .as_str()
            .is_some_and(|u| uuid::Uuid::parse_str(u).is_ok()),
        "uid: {s:#?}"
    );
    let st = &s["status"];
    assert_eq!(st["phase"], "Running", "{s:#?}");
    assert_eq!(st["observedGeneration"], 1, "{s:#?}");
    assert_eq!(st["attempt"], 1, "{s:#?}");
    assert_eq!(st["restarts"], 0, "{s:#?}");
    let pid = st["pid"].as_u64().unwrap() as u32;
    assert!(alive(pid));
    assert!(rfc3339(&st["startedAt"]), "startedAt: {s:#?}");
    assert!(rfc3339(&st["updatedAt"]), "updatedAt: {s:#?}");
    let conditions = st["conditions"].as_array().expect("conditions");
    assert!(!conditions.is_empty());
    for c in conditions {
        for field in ["type", "status", "reason", "message"] {
            assert!(c[field].is_string(), "condition {field}: {s:#?}");
        }
        assert!(
            ["True", "False", "Unknown"].contains(&c["status"].as_str().unwrap()),
            "{s:#?}"
        );
        assert!(rfc3339(&c["lastTransitionTime"]), "{s:#?}");
    }
    let ready = conditions
        .iter()
        .find(|c| c["type"] == "Ready")
        .expect("a Ready condition");
    assert_eq!(ready["status"], "True", "{s:#?}");
    for stream in ["stdout", "stderr"] {
        let p = st["logs"][stream].as_str().expect("log path");
        assert!(
            Path::new(p).is_relative(),
            "relative to the status directory: {p}"
        );
        assert!(dir.join(p).is_file(), "{p} exists");
        assert!(p.starts_with("web-file.logs/"), "{p}");
    }
}

#[test]
fn a_session_keeps_its_uid_across_a_controller_restart() {
    let (_tmp, dir) = sessions_dir();
    write_file(&dir.join("web.yaml"), &sleeper("web", 300));
    let mut c = Controller::start(&dir, &[]);
    let s = wait_running(&dir, "web");
    let uid = s["metadata"]["uid"].as_str().expect("uid").to_string();
    let pid = s["status"]["pid"].as_u64().unwrap() as u32;
    assert!(c.stop().success(), "the drain exits 0");
    assert!(!alive(pid), "the drain stopped the session");
    assert_eq!(
        status(&dir, "web").unwrap()["metadata"]["uid"],
        uid.as_str()
    );

    let _c2 = Controller::start(&dir, &[]);
    let s = wait_status(&dir, "web", "running again", |s| {
        s["status"]["phase"] == "Running"
            && s["status"]["pid"]
                .as_u64()
                .is_some_and(|p| p != u64::from(pid))
    });
    assert_eq!(s["metadata"]["uid"], uid.as_str(), "{s:#?}");
    assert_eq!(s["status"]["observedGeneration"], 1, "{s:#?}");
}

#[test]
fn status_dir_holds_statuses_logs_and_crash_dumps_instead_of_the_watched_directory() {
    let (tmp, dir) = sessions_dir();
    let state = tmp.path().join("state");
    write_file(&dir.join("web.yaml"), &sleeper("web", 300));
    write_file(
        &dir.join("fail.yaml"),
        &session(
            "fail",
            "command: [/bin/sh, -c, 'echo bad >&2; exit 1']\nrestartPolicy: Never",
        ),
    );
    let _c = Controller::start_with_status_dir(&dir, Some(&state), &[]);
    let s = wait_running(&state, "web");
    let f = wait_phase(&state, "fail", "Failed");
    wait_for("the controller status", || controller_status(&state));

    let names = names_in(&state);
    for expected in [
        ".sessionlet",
        "web.status.yaml",
        "web.logs",
        "fail.status.yaml",
        "fail.logs",
        "fail.crashes",
    ] {
        assert!(names.contains(expected), "{expected} in {names:?}");
    }
    assert!(state
        .join(s["status"]["logs"]["stdout"].as_str().unwrap())
        .is_file());
    let dump = f["status"]["lastExit"]["crashDump"]
        .as_str()
        .expect("crash dump");
    assert!(state.join(dump).is_file(), "{dump}");
    assert_eq!(
        names_in(&dir),
        BTreeSet::from(["web.yaml".to_string(), "fail.yaml".to_string()]),
        "the watched directory holds only the manifests"
    );
}

#[test]
fn files_and_folders_are_created_with_modes_0640_and_0750() {
    let (_tmp, dir) = sessions_dir();
    write_file(&dir.join("web.yaml"), &sleeper("web", 300));
    write_file(
        &dir.join("fail.yaml"),
        &session(
            "fail",
            "command: [/bin/sh, -c, 'exit 1']\nrestartPolicy: Never",
        ),
    );
    let _c = Controller::start(&dir, &[]);
    let s = wait_running(&dir, "web");
    let f = wait_phase(&dir, "fail", "Failed");
    wait_for("the controller status", || controller_status(&dir));

    let mask = umask();
    let file_mode = 0o640 & !mask;
    let dir_mode = 0o750 & !mask;
    let files = [
        "web.status.yaml".to_string(),
        "fail.status.yaml".into(),
        s["status"]["logs"]["stdout"].as_str().unwrap().into(),
        s["status"]["logs"]["stderr"].as_str().unwrap().into(),
        f["status"]["lastExit"]["crashDump"]
            .as_str()
            .unwrap()
            .into(),
        ".sessionlet/controller.status.yaml".into(),
        ".sessionlet/lock".into(),
    ];
    for p in &files {
        assert_eq!(
            mode(&dir.join(p)),
            file_mode,
            "{p}: {:o}",
            mode(&dir.join(p))
        );
    }
    for p in ["web.logs", "fail.logs", "fail.crashes", ".sessionlet"] {
        assert_eq!(
            mode(&dir.join(p)),
            dir_mode,
            "{p}: {:o}",
            mode(&dir.join(p))
        );
    }
}

#[test]
fn the_controller_status_file_reports_version_pid_phases_and_reconcile_count() {
    let (_tmp, dir) = sessions_dir();
    write_file(&dir.join("web.yaml"), &sleeper("web", 300));
    write_file(
        &dir.join("job.yaml"),
        &session("job", "command: ['true']\nrestartPolicy: Never"),
    );
    let c = Controller::start(&dir, &[]);
    wait_running(&dir, "web");
    wait_phase(&dir, "job", "Completed");
    let s = wait_for("one Running and one Completed", || {
        controller_status(&dir).filter(|s| {
            s["sessionsByPhase"]["Running"] == 1 && s["sessionsByPhase"]["Completed"] == 1
        })
    });
    assert_eq!(s["version"], env!("CARGO_PKG_VERSION"), "{s:#?}");
    assert_eq!(s["pid"], c.pid(), "{s:#?}");
    assert!(
        s["reconcileCount"].as_u64().is_some_and(|n| n >= 1),
        "{s:#?}"
    );
    assert!(rfc3339(&s["startedAt"]), "{s:#?}");
    let canonical = std::fs::canonicalize(&dir).unwrap();
    assert_eq!(
        s["manifestDir"],
        canonical.to_string_lossy().as_ref(),
        "{s:#?}"
    );
    assert_eq!(
        s["statusDir"],
        canonical.to_string_lossy().as_ref(),
        "{s:#?}"
    );
}

#[test]
fn a_second_controller_on_the_same_status_directory_refuses_to_start() {
    let (_tmp, dir) = sessions_dir();
    write_file(&dir.join("web.yaml"), &sleeper("web", 300));
    let first = Controller::start(&dir, &[]);
    let pid = wait_running(&dir, "web")["status"]["pid"].as_u64().unwrap();

    let mut second = Controller::start(&dir, &[]);
    let exit = second.wait();
    assert!(!exit.success(), "the second controller must fail: {exit:?}");
    let log = second.log();
    assert!(
        log.contains("another sessionlet controller"),
        "a clear message: {log}"
    );
    assert!(
        log.contains(&first.pid().to_string()),
        "names the pid holding the lock: {log}"
    );

    // The first one is undisturbed and still at work.
    assert!(alive(first.pid()));
    assert!(alive(pid as u32));
    write_file(&dir.join("later.yaml"), &sleeper("later", 300));
    wait_running(&dir, "later");
    assert_eq!(status(&dir, "web").unwrap()["status"]["pid"], pid);
}

#[test]
fn only_the_logs_of_the_newest_five_attempts_are_kept() {
    let (_tmp, dir) = sessions_dir();
    write_file(
        &dir.join("tick.yaml"),
        &session(
            "tick",
            "command: [/bin/sh, -c, 'echo out; echo err >&2']\nrestartPolicy: Always\nbackoff: {initialDelay: 100ms}",
        ),
    );
    let _c = Controller::start(&dir, &[]);
    wait_status(&dir, "tick", "attempt 7 or later", |s| {
        s["status"]["attempt"].as_u64().is_some_and(|a| a >= 7)
    });
    let attempts: BTreeSet<u32> = names_in(&dir.join("tick.logs"))
        .iter()
        .filter_map(|n| n.strip_prefix("attempt-")?.split('.').next()?.parse().ok())
        .collect();
    assert!(
        attempts.len() <= 5,
        "at most five attempts' logs: {attempts:?}"
    );
    let newest = *attempts.iter().max().expect("some logs");
    assert!(newest >= 7, "{attempts:?}");
    assert!(
        attempts.iter().all(|a| a + 5 > newest),
        "only the newest attempts: {attempts:?}"
    );
    assert!(
        !attempts.contains(&1) && !attempts.contains(&2),
        "{attempts:?}"
    );
}

#[test]
fn crash_dumps_beyond_max_crash_dumps_are_pruned_to_the_newest() {
    let (_tmp, dir) = sessions_dir();
    write_file(
        &dir.join("crashy.yaml"),
        &session(
            "crashy",
            "command: [/bin/sh, -c, 'echo boom >&2; exit 2']\nmaxRetries: 4\nbackoff: {initialDelay: 100ms, multiplier: 1.0}",
        ),
    );
    let _c = Controller::start(&dir, &["--max-crash-dumps", "2"]);
    let s = wait_phase(&dir, "crashy", "Failed");
    assert_eq!(s["status"]["attempt"], 5, "{s:#?}");
    let dumps = names_in(&dir.join("crashy.crashes"));
    assert_eq!(dumps.len(), 2, "{dumps:?}");
    let mut dumps: Vec<String> = dumps.into_iter().collect();
    dumps.sort();
    assert!(dumps[0].ends_with("-attempt-4.yaml"), "{dumps:?}");
    assert!(dumps[1].ends_with("-attempt-5.yaml"), "{dumps:?}");
    let latest = s["status"]["lastExit"]["crashDump"].as_str().unwrap();
    assert!(dir.join(latest).is_file(), "{latest}");
}

#[test]
fn max_log_size_rotates_a_chatty_sessions_output_while_it_keeps_writing() {
    let (_tmp, dir) = sessions_dir();
    // About 1.3 KB a second: over 1 KiB between two resync ticks.
    write_file(
        &dir.join("chatty.yaml"),
        &session(
            "chatty",
            "command: [/bin/sh, -c, 'i=0; while :; do i=$((i+1)); echo \"line $i 0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789\"; sleep 0.1; done']",
        ),
    );
    let _c = Controller::start(&dir, &["--max-log-size", "1Ki"]);
    let s = wait_running(&dir, "chatty");
    let pid = s["status"]["pid"].as_u64().unwrap();
    let live = dir.join(s["status"]["logs"]["stdout"].as_str().unwrap());
    let rotated = live.with_extension("log.1");

    let big = wait_for("the log to pass 1 KiB", || {
        std::fs::metadata(&live)
            .ok()
            .map(|m| m.len())
            .filter(|&n| n > 1024)
    });
    let shrunk = wait_for("a rotation: .log.1 and a shorter live file", || {
        let n = std::fs::metadata(&live).ok()?.len();
        (rotated.is_file() && n < big).then_some(n)
    });
    // The rotated file holds the last --max-log-size bytes that were there,
    // from a line start (it is replaced whole by each rotation, never rewritten).
    wait_for("a complete rotated file", || {
        let old = std::fs::read_to_string(&rotated).ok()?;
        (!old.is_empty() && old.len() <= 1024 && old.starts_with("line ") && !old.contains('\0'))
            .then_some(())
    });
    // The child keeps appending to the same (truncated) file, without a hole of NULs.
    wait_for("the child to keep writing", || {
        let n = std::fs::metadata(&live).ok()?.len();
        (n > shrunk).then_some(())
    });
    let text = wait_for("the live log's content", || {
        std::fs::read(&live).ok().filter(|t| !t.is_empty())
    });
    assert!(!text.contains(&0), "no NUL bytes after truncation");
    assert!(
        text.starts_with(b"line "),
        "{:?}",
        String::from_utf8_lossy(&text[..text.len().min(200)])
    );
    let s = status(&dir, "chatty").unwrap();
    assert_eq!(
        s["status"]["pid"], pid,
        "the session was not disturbed: {s:#?}"
    );
    assert_eq!(s["status"]["phase"], "Running");
}
