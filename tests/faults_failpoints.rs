//! The controller and the keeper SIGKILLed at named steps (failpoints, the
//! `failpoints` feature: `cargo test --features failpoints --test
//! faults_failpoints`). After each: no duplicate process, no lost exit, no
//! torn file, the right final status. Each session journals its own starts,
//! so a second copy or a second run cannot hide.

mod common;
use common::*;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn skip() -> bool {
    if cfg!(feature = "failpoints") {
        return false;
    }
    eprintln!("SKIPPED: needs `--features failpoints` (.ci/run runs it)");
    true
}

fn tag(dir: &Path, name: &str) -> String {
    format!("{}-{name}", dir.display())
}

fn journal(dir: &Path) -> PathBuf {
    dir.parent().unwrap_or(dir).join("journal")
}

/// Start lines of a session in the journal.
fn starts(dir: &Path, name: &str) -> Vec<u32> {
    std::fs::read_to_string(journal(dir))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some("start") && w.next() == Some(name))
                .then(|| w.next().and_then(|p| p.parse().ok()))
                .flatten()
        })
        .collect()
}

/// A session that journals its start, then runs `body` in the shell.
fn journaled(dir: &Path, name: &str, policy: &str, body: &str) -> String {
    format!(
        "apiVersion: sessionlet.dev/v1alpha1\nkind: Session\nmetadata:\n  name: {name}\nspec:\n  restartPolicy: {policy}\n  backoff: {{initialDelay: 100ms}}\n  env:\n    SESSION_TAG: \"{}\"\n    JOURNAL: \"{}\"\n  command: [\"/bin/sh\", \"-c\", \"echo start {name} $$ >> \\\"$JOURNAL\\\"; {body}\"]\n",
        tag(dir, name),
        journal(dir).display()
    )
}

const FOREVER: &str = "trap 'exit 5' TERM; while :; do sleep 0.2; done";

/// Starts a controller with failpoints armed (FAILPOINTS syntax of the `fail` crate).
fn start_armed(dir: &Path, failpoints: &str) -> Controller {
    let log = dir.parent().unwrap_or(dir).join("armed-controller.log");
    let once = dir.parent().unwrap_or(dir).join("crashed-once");
    let child = Command::new(bin())
        .arg("run")
        .arg("--dir")
        .arg(dir)
        .args(["--resync-interval", "2s"])
        .env("RUST_LOG", "debug")
        .env("FAILPOINTS", failpoints)
        .env("SESSIONLET_CRASH_ONCE", &once)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("start sessionlet");
    Controller {
        child: Some(child),
        dir: dir.to_path_buf(),
        status_dir: dir.to_path_buf(),
        log,
    }
}

/// Waits for a controller to die by its own failpoint (SIGKILL).
fn wait_crashed(c: &mut Controller) {
    use std::os::unix::process::ExitStatusExt;
    let status = c.wait();
    assert_eq!(
        status.signal(),
        Some(9),
        "killed by its failpoint: {}",
        c.log()
    );
}

fn running_pid(dir: &Path, stem: &str) -> u32 {
    let s = wait_status(dir, stem, "Running with a pid", |s| {
        s["status"]["phase"] == "Running" && s["status"]["pid"].is_u64()
    });
    s["status"]["pid"].as_u64().unwrap_or(0) as u32
}

/// No `.NAME.tmp-PID` nor `*.json.tmp` anywhere under the status folder.
fn temporaries(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            if p.is_dir() {
                stack.push(p);
            } else if name.contains(".tmp-") || name.ends_with(".tmp") {
                out.push(p.display().to_string());
            }
        }
    }
    out
}

#[test]
fn killed_after_a_spawn_request_before_its_status_the_next_controller_adopts_the_child() {
    if skip() {
        return;
    }
    let (_tmp, dir) = sessions_dir();
    let _guard = KeeperGuard(dir.clone());
    write_file(
        &dir.join("srv.yaml"),
        &journaled(&dir, "srv", "Always", FOREVER),
    );
    let mut a = start_armed(&dir, "controller-after-spawn-request=return");
    wait_crashed(&mut a);
    let first = wait_for("the first copy to start", || {
        starts(&dir, "srv").first().copied()
    });
    assert!(
        status(&dir, "srv").is_none_or(|s| s["status"]["pid"].is_null()),
        "the crash came before any status named the pid"
    );
    let mut b = Controller::start(&dir, &[]);
    assert_eq!(
        running_pid(&dir, "srv"),
        first,
        "adopted, not started again"
    );
    wait_passes(&dir, b.pid(), 3);
    assert_eq!(starts(&dir, "srv"), vec![first], "one start in the journal");
    assert_eq!(live_copies(&tag(&dir, "srv")), vec![first]);
    let s = status(&dir, "srv").expect("status");
    assert_eq!(s["status"]["restarts"], 0, "{s:#?}");
    assert!(b.stop().success(), "{}", b.log());
    assert!(live_copies(&tag(&dir, "srv")).is_empty());
}

#[test]
fn killed_after_an_exit_arrived_before_it_was_saved_the_exit_is_neither_lost_nor_rerun() {
    if skip() {
        return;
    }
    let (_tmp, dir) = sessions_dir();
    let _guard = KeeperGuard(dir.clone());
    write_file(
        &dir.join("job.yaml"),
        &journaled(&dir, "job", "OnFailure", "exit 0"),
    );
    write_file(
        &dir.join("bad.yaml"),
        &journaled(&dir, "bad", "Never", "exit 3"),
    );
    let mut a = start_armed(&dir, "controller-after-exit-received=return");
    wait_crashed(&mut a);
    let mut b = Controller::start(&dir, &[]);
    let job = wait_phase(&dir, "job", "Completed");
    let bad = wait_phase(&dir, "bad", "Failed");
    wait_passes(&dir, b.pid(), 3);
    assert_eq!(
        starts(&dir, "job").len(),
        1,
        "an OnFailure job that exited 0 ran once"
    );
    assert_eq!(starts(&dir, "bad").len(), 1);
    assert_eq!(job["status"]["lastExit"]["exitCode"], 0, "{job:#?}");
    assert_eq!(
        bad["status"]["lastExit"]["exitCode"], 3,
        "the real code: {bad:#?}"
    );
    assert_eq!(bad["status"]["lastExit"]["reason"], "Error", "{bad:#?}");
    assert!(b.stop().success(), "{}", b.log());
}

#[test]
fn killed_in_the_middle_of_a_status_write_no_file_is_torn_and_nothing_is_duplicated() {
    if skip() {
        return;
    }
    let (_tmp, dir) = sessions_dir();
    let _guard = KeeperGuard(dir.clone());
    write_file(
        &dir.join("srv.yaml"),
        &journaled(&dir, "srv", "Always", FOREVER),
    );
    // The third write: after the first pass's two (the session's status and
    // the controller's), the one that records the running pid.
    let mut a = start_armed(&dir, "status-mid-write=2*off->return");
    wait_crashed(&mut a);
    if dir.join("srv.status.yaml").exists() {
        assert!(
            status(&dir, "srv").is_some(),
            "a status that exists parses whole"
        );
    }
    let before = starts(&dir, "srv");
    let mut b = Controller::start(&dir, &[]);
    let pid = running_pid(&dir, "srv");
    wait_passes(&dir, b.pid(), 3);
    if let Some(first) = before.first() {
        assert_eq!(pid, *first, "the copy started before the crash is adopted");
    }
    assert_eq!(live_copies(&tag(&dir, "srv")), vec![pid]);
    assert_eq!(starts(&dir, "srv"), vec![pid], "one start in the journal");
    assert!(
        temporaries(&dir).is_empty(),
        "leftover temporaries removed at start: {:?}",
        temporaries(&dir)
    );
    assert!(b.stop().success(), "{}", b.log());
}

/// The keeper dies between fork and its registry write, or between the
/// registry write and releasing the child: the child never runs the
/// session's code, a new keeper takes over, and exactly one copy runs.
fn keeper_killed_at(point: &str) {
    let (_tmp, dir) = sessions_dir();
    let _guard = KeeperGuard(dir.clone());
    write_file(
        &dir.join("srv.yaml"),
        &journaled(&dir, "srv", "Always", FOREVER),
    );
    let mut c = start_armed(&dir, &format!("{point}=return"));
    let pid = running_pid(&dir, "srv");
    wait_passes(&dir, c.pid(), 3);
    assert!(
        c.log().contains("a new keeper took over"),
        "the keeper crashed and was replaced: {}",
        c.log()
    );
    assert_eq!(
        starts(&dir, "srv"),
        vec![pid],
        "the unreleased child never ran"
    );
    assert_eq!(live_copies(&tag(&dir, "srv")), vec![pid]);
    assert!(c.stop().success(), "{}", c.log());
    assert!(live_copies(&tag(&dir, "srv")).is_empty());
}

#[test]
fn a_keeper_killed_after_fork_before_its_registry_write_leaves_no_unknown_process() {
    if skip() {
        return;
    }
    keeper_killed_at("keeper-after-fork");
}

#[test]
fn a_keeper_killed_after_its_registry_write_before_the_reply_leaves_one_copy() {
    if skip() {
        return;
    }
    keeper_killed_at("keeper-after-registry");
}
