//! Operating sessionlet day to day (issue 12), the CLI half: `down`,
//! `plan`, completions and man pages, through the real binary.

mod common;
use common::*;

use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

/// Runs `sessionlet ARGS...` to completion.
fn cli(args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run sessionlet")
}

/// The directory as a command-line argument.
fn arg(dir: &Path) -> &str {
    dir.to_str().expect("UTF-8 temporary path")
}

/// Waits for `STEM` to be Running and returns its pid.
fn running_pid(dir: &Path, stem: &str) -> u32 {
    let s = wait_status(dir, stem, "Running with a pid", |s| {
        s["status"]["phase"] == "Running" && s["status"]["pid"].is_u64()
    });
    s["status"]["pid"].as_u64().expect("pid") as u32
}

/// The current attempt's stdout of `STEM`.
fn stdout_of(dir: &Path, s: &Value) -> String {
    s["status"]["logs"]["stdout"]
        .as_str()
        .map(|p| std::fs::read_to_string(dir.join(p)).unwrap_or_default())
        .unwrap_or_default()
}

/// A session that says `ready`, and on SIGUSR1 (its stopSignal) says
/// `got-usr1` and exits 0; SIGTERM it notes too.
const POLITE: &str = "command: [/bin/sh, -c, 'trap \"echo got-usr1; exit 0\" USR1; trap \"echo got-term; exit 0\" TERM; echo ready; while :; do sleep 0.2; done']\nstopSignal: SIGUSR1\nterminationGracePeriod: 60s";

// ---------------------------------------------------------------------------
// `sessionlet down`

#[test]
fn down_drains_a_running_controller_even_with_keep_sessions() {
    let (_tmp, dir) = sessions_dir();
    let _keeper = KeeperGuard(dir.clone());
    write_file(&dir.join("polite.yaml"), &session("polite", POLITE));
    let mut c = Controller::start(&dir, &["--keep-sessions"]);
    let pid = running_pid(&dir, "polite");
    wait_status(&dir, "polite", "ready in its output", |s| {
        stdout_of(&dir, s).contains("ready")
    });
    let out = cli(&["down", "--dir", arg(&dir)]);
    assert_eq!(out.status.code(), Some(0), "{out:?}\n{}", c.log());
    let code = c.wait();
    assert_eq!(code.code(), Some(0), "the controller drained: {code:?}");
    assert!(!alive(pid), "the session is stopped (pid {pid})");
    assert_eq!(keeper_of(&dir), None, "down waits for the keeper to exit");
    let s = status(&dir, "polite").expect("a final status");
    assert_eq!(s["status"]["reason"], "ControllerStopped", "{s:#?}");
    let text = stdout_of(&dir, &s);
    assert!(text.contains("got-usr1"), "its stopSignal: {text}");
}

#[test]
fn down_after_a_kill_9_of_the_controller_stops_sessions_and_the_keeper() {
    let (_tmp, dir) = sessions_dir();
    let _keeper = KeeperGuard(dir.clone());
    write_file(&dir.join("polite.yaml"), &session("polite", POLITE));
    write_file(
        &dir.join("plain.yaml"),
        &session("plain", "command: [/bin/sh, -c, 'sleep 1000 & wait']"),
    );
    let mut c = Controller::start(&dir, &[]);
    let polite = running_pid(&dir, "polite");
    let plain = running_pid(&dir, "plain");
    wait_status(&dir, "polite", "ready in its output", |s| {
        stdout_of(&dir, s).contains("ready")
    });
    let keeper = keeper_of(&dir).expect("a keeper");
    c.kill();
    assert!(alive(polite) && alive(plain) && alive(keeper));

    let out = cli(&["down", "--dir", arg(&dir)]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(stderr.contains("no controller runs"), "{stderr}");
    assert!(!alive(polite) && !alive(plain), "every session is stopped");
    assert!(!alive(keeper), "the keeper exited (pid {keeper})");
    assert_eq!(keeper_of(&dir), None);
    for stem in ["polite", "plain"] {
        let s = status(&dir, stem).expect("a final status");
        assert_ne!(s["status"]["phase"], "Running", "{s:#?}");
        assert_eq!(s["status"]["reason"], "ControllerStopped", "{s:#?}");
    }
    let text = stdout_of(&dir, &status(&dir, "polite").expect("status"));
    assert!(
        text.contains("got-usr1") && !text.contains("got-term"),
        "the manifest's stopSignal, not SIGTERM: {text}"
    );

    // Nothing left: a second `down` says so and succeeds.
    let again = cli(&["down", "--dir", arg(&dir)]);
    assert_eq!(again.status.code(), Some(0), "{again:?}");
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("nothing left to stop"),
        "{again:?}"
    );
}

#[test]
fn down_where_nothing_ever_ran_succeeds() {
    let (_tmp, dir) = sessions_dir();
    let out = cli(&["down", "--dir", arg(&dir)]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("nothing to stop"));
}

// ---------------------------------------------------------------------------
// Not every edit restarts; restart on purpose

/// A Session with annotations (YAML flow map) and a spec body.
fn annotated(name: &str, annotations: &str, spec: &str) -> String {
    session(name, spec).replacen(
        &format!("  name: {name}\n"),
        &format!("  name: {name}\n  annotations: {annotations}\n"),
        1,
    )
}

#[test]
fn an_edit_of_timeout_keeps_the_process_and_an_edit_of_command_restarts_it() {
    let (_tmp, dir) = sessions_dir();
    let _keeper = KeeperGuard(dir.clone());
    let file = dir.join("svc.yaml");
    write_file(
        &file,
        &session("svc", "command: [sleep, '1000']\ntimeout: 1h"),
    );
    let mut c = Controller::start(&dir, &[]);
    let pid = running_pid(&dir, "svc");

    // In place: same pid, a new observedGeneration.
    write_file(
        &file,
        &session("svc", "command: [sleep, '1000']\ntimeout: 2h"),
    );
    let s = wait_status(&dir, "svc", "generation 2", |s| {
        s["status"]["observedGeneration"] == 2
    });
    assert_eq!(s["status"]["pid"].as_u64(), Some(u64::from(pid)), "{s:#?}");
    assert_eq!(s["status"]["phase"], "Running", "{s:#?}");

    // Also across a controller restart: the next one knows what the attempt runs.
    c.kill();
    write_file(
        &file,
        &session(
            "svc",
            "command: [sleep, '1000']\ntimeout: 3h\nmaxRetries: 4",
        ),
    );
    let mut c = Controller::start(&dir, &[]);
    let s = wait_status(&dir, "svc", "generation 3", |s| {
        s["status"]["observedGeneration"] == 3
    });
    assert_eq!(s["status"]["pid"].as_u64(), Some(u64::from(pid)), "{s:#?}");
    assert!(alive(pid), "the adopted process was left alone");

    // What runs: a graceful restart with a new pid.
    write_file(
        &file,
        &session(
            "svc",
            "command: [sleep, '2000']\ntimeout: 3h\nmaxRetries: 4",
        ),
    );
    let s = wait_status(&dir, "svc", "a new process for generation 4", |s| {
        s["status"]["observedGeneration"] == 4
            && s["status"]["phase"] == "Running"
            && s["status"]["pid"]
                .as_u64()
                .is_some_and(|p| p != u64::from(pid))
    });
    assert!(!alive(pid), "the old process was stopped");
    assert_eq!(s["status"]["lastExit"]["reason"], "SpecChanged", "{s:#?}");
    assert_eq!(c.stop().code(), Some(0));
}

#[test]
fn a_changed_restarted_at_annotation_restarts_the_session_without_a_failure() {
    let (_tmp, dir) = sessions_dir();
    let _keeper = KeeperGuard(dir.clone());
    let file = dir.join("svc.yaml");
    let spec = "command: [sleep, '1000']";
    write_file(&file, &annotated("svc", "{team: a}", spec));
    let _c = Controller::start(&dir, &[]);
    let pid = running_pid(&dir, "svc");
    write_file(&file, &annotated("svc", "{team: b}", spec));
    write_file(
        &file,
        &annotated(
            "svc",
            "{team: b, sessionlet.dev/restartedAt: '2030-01-01T00:00:00Z'}",
            spec,
        ),
    );
    let s = wait_status(&dir, "svc", "a new process", |s| {
        s["status"]["phase"] == "Running"
            && s["status"]["pid"]
                .as_u64()
                .is_some_and(|p| p != u64::from(pid))
    });
    assert!(!alive(pid), "the old process was stopped");
    assert_eq!(s["status"]["consecutiveFailures"], 0, "{s:#?}");
    assert_eq!(s["status"]["lastExit"]["reason"], "SpecChanged", "{s:#?}");
    let message = s["status"]["lastExit"]["message"].as_str().unwrap_or("");
    assert!(message.contains("sessionlet.dev/restartedAt"), "{s:#?}");
    assert_eq!(
        s["metadata"]["restartedAt"], "2030-01-01T00:00:00Z",
        "{s:#?}"
    );
}

// ---------------------------------------------------------------------------
// Completions and man pages

#[test]
fn completions_for_bash_zsh_and_fish_name_every_command() {
    for shell in ["bash", "zsh", "fish"] {
        let out = cli(&["completion", shell]);
        assert_eq!(out.status.code(), Some(0), "{shell}: {out:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        for sub in ["run", "get", "describe", "logs", "validate", "down"] {
            assert!(text.contains(sub), "{shell} completion lacks {sub}");
        }
    }
    assert_ne!(cli(&["completion", "tcsh"]).status.code(), Some(0));
}

#[test]
fn man_prints_the_page_and_writes_one_per_command() {
    let out = cli(&["man"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(".TH sessionlet 1"), "{text}");
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("man1");
    let out = cli(&["man", "--out-dir", arg(&dir)]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    for page in ["sessionlet.1", "sessionlet-run.1", "sessionlet-down.1"] {
        let text = std::fs::read_to_string(dir.join(page)).unwrap_or_default();
        assert!(text.contains(".TH"), "{page}: {text}");
    }
}
