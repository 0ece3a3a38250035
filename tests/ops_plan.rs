//! `sessionlet plan`: what the controller would do with the manifests as
//! they are now against the recorded statuses, without running anything.
//! Fixtures: statuses written by a real controller (stopped with
//! `--keep-sessions`, so they say Running), then edited manifests.

mod common;
use common::*;

use std::path::Path;
use std::process::{Command, Output, Stdio};

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

/// `plan --dir DIR EXTRA...`: its exit code and stdout.
fn plan(dir: &Path, extra: &[&str]) -> (Option<i32>, String) {
    let mut args = vec!["plan", "--dir", arg(dir)];
    args.extend_from_slice(extra);
    let out = cli(&args);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

const LONG: &str =
    "command: [/bin/sh, -c, 'while :; do sleep 0.2; done']\nterminationGracePeriod: 2s";

/// Runs a controller until every stem's status says `phase`, then stops it
/// with SIGTERM under `--keep-sessions`: the statuses stay as they were and
/// the sessions keep running (`down` ends them).
fn settle(dir: &Path, phases: &[(&str, &str)]) {
    let mut c = Controller::start(dir, &["--keep-sessions"]);
    for (stem, phase) in phases {
        wait_phase(dir, stem, phase);
    }
    let code = c.stop();
    assert!(code.success(), "{code:?}\n{}", c.log());
}

/// Ends the sessions and the keeper the fixture left running.
fn down(dir: &Path) {
    let out = cli(&["down", "--dir", arg(dir)]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
}

#[test]
fn plan_lists_each_kind_of_change_and_exits_2_and_0_when_nothing_changes() {
    let (_tmp, dir) = sessions_dir();
    let _keeper = KeeperGuard(dir.clone());
    write_file(&dir.join("web.yaml"), &session("web", LONG));
    write_file(&dir.join("worker.yaml"), &session("worker", LONG));
    write_file(&dir.join("old.yaml"), &session("old", LONG));
    write_file(
        &dir.join("job.yaml"),
        &session(
            "job",
            "command: [/bin/true]\nrestartPolicy: Never\nttlAfterFinished: 1h",
        ),
    );
    write_file(
        &dir.join("done.yaml"),
        &session("done", "command: [/bin/true]\nrestartPolicy: Never"),
    );
    settle(
        &dir,
        &[
            ("web", "Running"),
            ("worker", "Running"),
            ("old", "Running"),
            ("job", "Completed"),
            ("done", "Completed"),
        ],
    );

    // Nothing edited: nothing to do, exit 0.
    let (code, text) = plan(&dir, &[]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("nothing to do"), "{text}");

    // One edit of each kind.
    write_file(&dir.join("api.yaml"), &session("api", LONG));
    write_file(
        &dir.join("web.yaml"),
        &session(
            "web",
            "command: [/bin/sh, -c, 'echo v2; while :; do sleep 0.2; done']",
        ),
    );
    write_file(
        &dir.join("worker.yaml"),
        &session("worker", &format!("{LONG}\ntimeout: 1h")),
    );
    std::fs::remove_file(dir.join("old.yaml")).expect("rm old.yaml");
    std::fs::remove_file(dir.join("done.yaml")).expect("rm done.yaml");
    write_file(
        &dir.join("bad.yaml"),
        &session("bad", "command: [/bin/true]\ntimeout: 30"),
    );
    // The job finished two hours ago: its ttlAfterFinished (1h) is over.
    let mut doc = status(&dir, "job").expect("job status");
    doc["status"]["finishedAt"] =
        serde_json::json!((chrono::Utc::now() - chrono::Duration::hours(2)).to_rfc3339());
    // JSON is YAML.
    write_file(
        &dir.join("job.status.yaml"),
        &serde_json::to_string_pretty(&doc).expect("status as JSON"),
    );

    let (code, text) = plan(&dir, &[]);
    assert_eq!(code, Some(2), "something would change: {text}");
    let line = |prefix: &str| {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no line starting {prefix:?}:\n{text}"))
            .to_string()
    };
    assert_eq!(line("start api"), "start api");
    assert!(line("restart web").contains("what runs changed"), "{text}");
    assert!(line("apply in place worker").len() > "apply in place worker".len());
    assert!(!text.contains("restart worker"), "{text}");
    assert_eq!(line("stop old"), "stop old (manifest deleted)");
    assert!(line("forget done").contains("manifest deleted"), "{text}");
    assert!(
        line("garbage-collect job").contains("ttlAfterFinished"),
        "{text}"
    );
    let refusal = line("refuse bad.yaml:");
    assert!(
        refusal.contains("30s"),
        "file:line:col and the problem: {refusal}"
    );

    // The same as JSON, for tools.
    let (code, json) = plan(&dir, &["-o", "json"]);
    assert_eq!(code, Some(2), "{json}");
    let v: serde_json::Value = serde_json::from_str(&json).expect("JSON");
    let verbs: Vec<(String, String)> = v["changes"]
        .as_array()
        .expect("changes")
        .iter()
        .map(|c| {
            (
                c["verb"].as_str().unwrap_or_default().to_string(),
                c["name"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    for (verb, name) in [
        ("start", "api"),
        ("restart", "web"),
        ("applyInPlace", "worker"),
        ("stop", "old"),
        ("forget", "done"),
        ("collectGarbage", "job"),
    ] {
        assert!(
            verbs.contains(&(verb.to_string(), name.to_string())),
            "{verb} {name} in {verbs:?}"
        );
    }
    assert_eq!(v["refused"][0]["file"], "bad.yaml", "{json}");

    // Nothing ran: the statuses are as the controller left them.
    let web = status(&dir, "web").expect("web status");
    assert_eq!(web["status"]["phase"], "Running");
    assert!(alive(web["status"]["pid"].as_u64().expect("pid") as u32));
    assert!(!dir.join("api.status.yaml").exists(), "plan writes nothing");
    assert!(
        dir.join("done.status.yaml").exists(),
        "plan removes nothing"
    );
    down(&dir);
}

#[test]
fn plan_keeps_a_running_session_whose_manifest_broke_and_refuses_a_taken_name() {
    let (_tmp, dir) = sessions_dir();
    let _keeper = KeeperGuard(dir.clone());
    write_file(&dir.join("zz-api.yaml"), &session("api", LONG));
    write_file(&dir.join("svc.yaml"), &session("svc", LONG));
    settle(&dir, &[("zz-api", "Running"), ("svc", "Running")]);

    // A newcomer sorting first takes a held name; a running session's file breaks.
    write_file(&dir.join("aa-new.yaml"), &session("api", LONG));
    write_file(&dir.join("svc.yaml"), "apiVersion: sessionlet.dev/v1alpha1\nkind: Session\nmetadata:\n  name: svc\nspec:\n  command: [/bin/true\n");
    let (code, text) = plan(&dir, &[]);
    assert_eq!(code, Some(2), "{text}");
    assert!(
        text.lines().any(|l| l.starts_with("refuse aa-new.yaml")
            && l.contains("zz-api")
            && l.contains("holds the name")),
        "the newcomer loses: {text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("keep svc") && l.contains("svc.yaml")),
        "the last good spec stays in force: {text}"
    );
    assert!(
        text.lines().any(|l| l.starts_with("refuse svc.yaml:")),
        "{text}"
    );
    assert!(!text.contains("stop svc"), "{text}");
    assert!(!text.contains("api ("), "api is untouched: {text}");
    down(&dir);
}

#[test]
fn plan_after_a_drain_starts_again_and_a_suspend_stops() {
    let (_tmp, dir) = sessions_dir();
    let _keeper = KeeperGuard(dir.clone());
    write_file(&dir.join("web.yaml"), &session("web", LONG));
    write_file(&dir.join("api.yaml"), &session("api", LONG));
    settle(&dir, &[("web", "Running"), ("api", "Running")]);
    write_file(
        &dir.join("api.yaml"),
        &session("api", &format!("{LONG}\nsuspend: true")),
    );
    let (code, text) = plan(&dir, &[]);
    assert_eq!(code, Some(2), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("stop api") && l.contains("suspend")),
        "{text}"
    );
    // A drain (SIGINT) stops everything; the next controller starts them again.
    down(&dir);
    let (code, text) = plan(&dir, &[]);
    assert_eq!(code, Some(2), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("start web") && l.contains("controller shut down")),
        "{text}"
    );
}
