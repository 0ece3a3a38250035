//! Stopping: stop signals and grace periods, whole process groups, deleted
//! manifests, suspension, spec changes, and how the controller itself stops.

mod common;
use common::*;

use std::path::Path;

use nix::sys::signal::Signal;
use serde_json::Value;

/// The pid of a status that has one.
fn pid_of(s: &Value) -> u32 {
    s["status"]["pid"]
        .as_u64()
        .unwrap_or_else(|| panic!("no pid: {s:#?}")) as u32
}

/// Waits until the session runs, and returns its pid.
fn wait_running(dir: &Path, stem: &str) -> u32 {
    pid_of(&wait_status(dir, stem, "Running with a pid", |s| {
        s["status"]["phase"] == "Running" && s["status"]["pid"].is_u64()
    }))
}

/// Sends a signal to one process the test started (directly or through a session).
fn kill_pid(pid: u32, sig: Signal) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig);
}

/// Waits until a process is gone.
fn wait_dead(pid: u32, what: &str) {
    wait_for(&format!("{what} (pid {pid}) to be gone"), || {
        (!alive(pid)).then_some(())
    });
}

/// Reads a file named relative to the status directory.
fn read_rel(dir: &Path, rel: &Value) -> String {
    let rel = rel.as_str().unwrap_or_else(|| panic!("not a path: {rel}"));
    std::fs::read_to_string(dir.join(rel)).unwrap_or_else(|e| panic!("read {rel}: {e}"))
}

/// Waits until the session's current stdout holds `needle`.
fn wait_stdout(dir: &Path, stem: &str, needle: &str) -> String {
    wait_for(&format!("{stem} to print {needle:?}"), || {
        let s = status(dir, stem)?;
        let text =
            std::fs::read_to_string(dir.join(s["status"]["logs"]["stdout"].as_str()?)).ok()?;
        text.contains(needle).then_some(text)
    })
}

/// Kills what a session left behind after a failed assertion: each pid and
/// its process group (a session's pid is its group id).
struct KillOnDrop(Vec<u32>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        for &pid in &self.0 {
            let _ =
                nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid as i32), Signal::SIGKILL);
            if alive(pid) {
                kill_pid(pid, Signal::SIGKILL);
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Stop signal and grace period.

#[test]
fn a_session_that_ignores_its_stop_signal_is_killed_after_the_grace_period() {
    let (_tmp, dir) = sessions_dir();
    let spec = "command: [/bin/sh, -c, 'trap \"echo term-ignored\" TERM; echo ready; while :; do sleep 0.2; done']\nterminationGracePeriod: 1s";
    write_file(&dir.join("stubborn.yaml"), &session("stubborn", spec));
    let _c = Controller::start(&dir, &[]);
    let pid = wait_running(&dir, "stubborn");
    let _guard = KillOnDrop(vec![pid]);
    wait_stdout(&dir, "stubborn", "ready");
    let asked = chrono::Utc::now();
    write_file(
        &dir.join("stubborn.yaml"),
        &session("stubborn", &format!("{spec}\nsuspend: true")),
    );
    let s = wait_phase(&dir, "stubborn", "Cancelled");
    assert_eq!(s["status"]["reason"], "Suspended", "{s:#?}");
    assert_eq!(
        s["status"]["lastExit"]["signal"], "SIGKILL",
        "killed, not exited: {s:#?}"
    );
    let finished = chrono::DateTime::parse_from_rfc3339(
        s["status"]["lastExit"]["finishedAt"].as_str().unwrap(),
    )
    .unwrap();
    assert!(
        finished.with_timezone(&chrono::Utc) - asked >= chrono::Duration::milliseconds(950),
        "SIGKILL only after the 1s grace period: asked at {asked}, ended at {finished}"
    );
    assert!(!alive(pid));
    let out = read_rel(&dir, &s["status"]["logs"]["stdout"]);
    assert!(
        out.contains("term-ignored"),
        "the stop signal came first: {out}"
    );
}

#[test]
fn a_custom_stop_signal_is_the_one_the_process_receives() {
    let (_tmp, dir) = sessions_dir();
    let spec = "command: [/bin/sh, -c, 'trap \"echo got-int; exit 0\" INT; trap \"echo got-term; exit 0\" TERM; echo ready; while :; do sleep 0.2; done']\nstopSignal: SIGINT\nterminationGracePeriod: 30s";
    write_file(&dir.join("intr.yaml"), &session("intr", spec));
    let _c = Controller::start(&dir, &[]);
    let pid = wait_running(&dir, "intr");
    let _guard = KillOnDrop(vec![pid]);
    wait_stdout(&dir, "intr", "ready");
    write_file(
        &dir.join("intr.yaml"),
        &session("intr", &format!("{spec}\nsuspend: true")),
    );
    let s = wait_phase(&dir, "intr", "Cancelled");
    let out = read_rel(&dir, &s["status"]["logs"]["stdout"]);
    assert!(out.contains("got-int"), "SIGINT was delivered: {out}");
    assert!(!out.contains("got-term"), "not SIGTERM: {out}");
    assert_eq!(
        s["status"]["lastExit"]["exitCode"], 0,
        "it exited from its trap: {s:#?}"
    );
    wait_dead(pid, "the session");
}

#[test]
fn a_grandchild_in_the_group_that_ignores_sigterm_dies_too() {
    let (tmp, dir) = sessions_dir();
    let pidfile = tmp.path().join("grandchild.pid");
    let spec = format!(
        "command: [/bin/sh, -c, 'sh -c \"trap \\\"\\\" TERM; exec sleep 1000\" & echo $! > {}; wait']\nterminationGracePeriod: 1s",
        pidfile.display()
    );
    write_file(&dir.join("family.yaml"), &session("family", &spec));
    let _c = Controller::start(&dir, &[]);
    let pid = wait_running(&dir, "family");
    let grandchild: u32 = wait_for("the grandchild's pid", || {
        std::fs::read_to_string(&pidfile).ok()?.trim().parse().ok()
    });
    let _guard = KillOnDrop(vec![pid, grandchild]);
    // The grandchild ignores SIGTERM once its trap is set; wait until it runs sleep.
    wait_for("the grandchild to run sleep, ignoring SIGTERM", || {
        let cmdline = std::fs::read(format!("/proc/{grandchild}/cmdline")).ok()?;
        cmdline.starts_with(b"sleep\0").then_some(())
    });
    write_file(
        &dir.join("family.yaml"),
        &session("family", &format!("{spec}\nsuspend: true")),
    );
    let s = wait_phase(&dir, "family", "Cancelled");
    assert_eq!(s["status"]["reason"], "Suspended", "{s:#?}");
    wait_dead(pid, "the session");
    wait_dead(grandchild, "the grandchild that ignores SIGTERM");
}

// ---------------------------------------------------------------------------
// Deleted manifests.

#[test]
fn deleting_the_manifest_stops_the_session_and_removes_status_logs_and_crash_dumps() {
    let (tmp, dir) = sessions_dir();
    let mark = tmp.path().join("failed-once");
    // The first attempt fails (a crash dump), the second keeps running.
    let spec = format!(
        "command: [/bin/sh, -c, 'if [ -f {m} ]; then exec sleep 1000; fi; touch {m}; exit 1']\nbackoff: {{initialDelay: 100ms}}",
        m = mark.display()
    );
    write_file(&dir.join("doomed.yaml"), &session("doomed", &spec));
    // --tombstone-ttl 0: no tombstone (by default one keeps the logs, tests/ops_gc.rs).
    let _c = Controller::start(&dir, &["--tombstone-ttl", "0s"]);
    let s = wait_status(&dir, "doomed", "the second attempt running", |s| {
        s["status"]["attempt"] == 2
            && s["status"]["phase"] == "Running"
            && s["status"]["pid"].is_u64()
    });
    let pid = pid_of(&s);
    let _guard = KillOnDrop(vec![pid]);
    assert!(dir.join("doomed.logs").is_dir());
    assert!(
        dir.join("doomed.crashes")
            .read_dir()
            .unwrap()
            .next()
            .is_some(),
        "a crash dump exists"
    );
    std::fs::remove_file(dir.join("doomed.yaml")).unwrap();
    wait_dead(pid, "the session");
    wait_for("status, logs and crash dumps to be removed", || {
        ["doomed.status.yaml", "doomed.logs", "doomed.crashes"]
            .iter()
            .all(|f| !dir.join(f).exists())
            .then_some(())
    });
}

#[test]
fn deleting_the_manifest_stops_the_session_with_its_own_stop_signal() {
    let (_tmp, dir) = sessions_dir();
    let spec = "command: [/bin/sh, -c, 'trap \"echo got-int >&2; exit 0\" INT; trap \"echo got-term >&2; exit 0\" TERM; echo ready; while :; do sleep 0.2; done']\nstopSignal: SIGINT\nterminationGracePeriod: 30s";
    write_file(&dir.join("gone.yaml"), &session("gone", spec));
    let c = Controller::start(&dir, &[]);
    let pid = wait_running(&dir, "gone");
    let _guard = KillOnDrop(vec![pid]);
    wait_stdout(&dir, "gone", "ready");
    // The logs are removed with the status: keep an eye on stderr through /proc.
    let stderr = std::fs::read_link(format!("/proc/{pid}/fd/2")).expect("the session's stderr");
    let watcher = std::fs::File::open(&stderr).expect("open the session's stderr");
    std::fs::remove_file(dir.join("gone.yaml")).unwrap();
    wait_dead(pid, "the session");
    let mut text = String::new();
    use std::io::Read;
    (&watcher).read_to_string(&mut text).unwrap();
    assert!(
        text.contains("got-int"),
        "stopSignal SIGINT also applies when the manifest is deleted: {text:?}\n{}",
        c.log()
    );
}

// ---------------------------------------------------------------------------
// Suspension and spec changes.

#[test]
fn suspend_true_cancels_the_session_and_suspend_false_starts_a_fresh_run() {
    let (_tmp, dir) = sessions_dir();
    let spec = "command: [sleep, '1000']";
    write_file(&dir.join("pausable.yaml"), &session("pausable", spec));
    let _c = Controller::start(&dir, &[]);
    let pid1 = wait_running(&dir, "pausable");
    let _guard1 = KillOnDrop(vec![pid1]);
    write_file(
        &dir.join("pausable.yaml"),
        &session("pausable", &format!("{spec}\nsuspend: true")),
    );
    let s = wait_phase(&dir, "pausable", "Cancelled");
    assert_eq!(s["status"]["reason"], "Suspended", "{s:#?}");
    assert!(s["status"]["pid"].is_null(), "{s:#?}");
    wait_dead(pid1, "the suspended session");
    write_file(
        &dir.join("pausable.yaml"),
        &session("pausable", &format!("{spec}\nsuspend: false")),
    );
    let s = wait_status(&dir, "pausable", "Running again with a new pid", |s| {
        s["status"]["phase"] == "Running"
            && s["status"]["pid"]
                .as_u64()
                .is_some_and(|p| p as u32 != pid1)
    });
    let _guard2 = KillOnDrop(vec![pid_of(&s)]);
    assert_eq!(s["status"]["attempt"], 1, "a fresh run: {s:#?}");
    assert_eq!(s["status"]["restarts"], 0, "a fresh run: {s:#?}");
    assert!(s["status"]["reason"].is_null(), "{s:#?}");
}

#[test]
fn a_changed_spec_restarts_the_session_gracefully_with_the_new_spec() {
    let (_tmp, dir) = sessions_dir();
    let spec = |v: &str| {
        format!("command: [/bin/sh, -c, 'trap \"echo got-term; exit 0\" TERM; echo \"v=$V\"; sleep 1000 & wait']\nenv: {{V: {v}}}")
    };
    write_file(
        &dir.join("evolving.yaml"),
        &session("evolving", &spec("one")),
    );
    let _c = Controller::start(&dir, &[]);
    let s1 = wait_status(&dir, "evolving", "generation 1 running", |s| {
        s["status"]["phase"] == "Running" && s["status"]["pid"].is_u64()
    });
    assert_eq!(s1["status"]["observedGeneration"], 1);
    let pid1 = pid_of(&s1);
    let _guard1 = KillOnDrop(vec![pid1]);
    let old_stdout = dir.join(s1["status"]["logs"]["stdout"].as_str().unwrap());
    wait_stdout(&dir, "evolving", "v=one");
    write_file(
        &dir.join("evolving.yaml"),
        &session("evolving", &spec("two")),
    );
    let s2 = wait_status(&dir, "evolving", "generation 2 running", |s| {
        s["status"]["observedGeneration"] == 2
            && s["status"]["phase"] == "Running"
            && s["status"]["pid"].is_u64()
    });
    let pid2 = pid_of(&s2);
    let _guard2 = KillOnDrop(vec![pid2]);
    assert_ne!(pid1, pid2, "a new process");
    wait_dead(pid1, "the old process");
    wait_stdout(&dir, "evolving", "v=two");
    let old = std::fs::read_to_string(&old_stdout).unwrap_or_default();
    assert!(
        old.contains("got-term"),
        "the old process was stopped gracefully: {old}"
    );
    assert_eq!(s2["status"]["lastExit"]["reason"], "SpecChanged", "{s2:#?}");
}

// ---------------------------------------------------------------------------
// The controller stopping.

#[test]
fn sigterm_to_the_controller_drains_every_session_and_exits_zero() {
    let (_tmp, dir) = sessions_dir();
    write_file(
        &dir.join("a.yaml"),
        &session("a", "command: [sleep, '1000']"),
    );
    write_file(
        &dir.join("b.yaml"),
        &session("b", "command: [/bin/sh, -c, 'sleep 1000 & wait']"),
    );
    let mut c = Controller::start(&dir, &[]);
    let (pa, pb) = (wait_running(&dir, "a"), wait_running(&dir, "b"));
    let _guard = KillOnDrop(vec![pa, pb]);
    let code = c.stop();
    assert_eq!(code.code(), Some(0), "a drain exits 0: {code:?}");
    assert!(!alive(pa) && !alive(pb), "every session stopped");
    for stem in ["a", "b"] {
        let s = status(&dir, stem).unwrap();
        assert_eq!(s["status"]["phase"], "Pending", "{s:#?}");
        assert_eq!(s["status"]["reason"], "ControllerStopped", "{s:#?}");
        assert!(s["status"]["pid"].is_null(), "{s:#?}");
        assert_eq!(
            s["status"]["lastExit"]["reason"], "ControllerStopped",
            "{s:#?}"
        );
    }
}

#[test]
fn a_second_sigterm_during_a_drain_kills_at_once_and_the_controller_exits() {
    let (_tmp, dir) = sessions_dir();
    write_file(
        &dir.join("tough.yaml"),
        &session(
            "tough",
            "command: [/bin/sh, -c, 'trap \"echo term-ignored\" TERM; echo ready; while :; do sleep 0.2; done']\nterminationGracePeriod: 5m",
        ),
    );
    let mut c = Controller::start(&dir, &[]);
    let pid = wait_running(&dir, "tough");
    let _guard = KillOnDrop(vec![pid]);
    wait_stdout(&dir, "tough", "ready");
    c.signal(Signal::SIGTERM);
    // The drain has begun once the session got its stop signal.
    wait_stdout(&dir, "tough", "term-ignored");
    assert!(
        alive(pid),
        "the session ignores SIGTERM and has a long grace period"
    );
    c.signal(Signal::SIGTERM);
    c.wait();
    wait_dead(pid, "the session after the second signal");
}

#[test]
fn exit_when_done_exits_zero_when_every_session_completed() {
    let (_tmp, dir) = sessions_dir();
    write_file(
        &dir.join("one.yaml"),
        &session("one", "command: [/bin/sh, -c, 'echo 1']"),
    );
    write_file(
        &dir.join("two.yaml"),
        &session("two", "command: [/bin/sh, -c, 'echo 2']"),
    );
    let mut c = Controller::start(&dir, &["--exit-when-done"]);
    let code = c.wait();
    assert_eq!(code.code(), Some(0), "{code:?}\n{}", c.log());
    assert_eq!(phase(&dir, "one").as_deref(), Some("Completed"));
    assert_eq!(phase(&dir, "two").as_deref(), Some("Completed"));
}

#[test]
fn exit_when_done_exits_one_when_a_session_failed() {
    let (_tmp, dir) = sessions_dir();
    write_file(
        &dir.join("good.yaml"),
        &session("good", "command: [/bin/sh, -c, 'echo ok']"),
    );
    write_file(
        &dir.join("bad.yaml"),
        &session("bad", "command: [/bin/sh, -c, 'exit 1']\nmaxRetries: 0"),
    );
    let mut c = Controller::start(&dir, &["--exit-when-done"]);
    let code = c.wait();
    assert_eq!(code.code(), Some(1), "{code:?}\n{}", c.log());
    assert_eq!(phase(&dir, "good").as_deref(), Some("Completed"));
    assert_eq!(phase(&dir, "bad").as_deref(), Some("Failed"));
}

#[test]
fn keep_sessions_leaves_the_session_running_when_the_controller_exits() {
    let (_tmp, dir) = sessions_dir();
    write_file(
        &dir.join("survivor.yaml"),
        &session("survivor", "command: [sleep, '1000']"),
    );
    let mut c = Controller::start(&dir, &["--keep-sessions"]);
    let pid = wait_running(&dir, "survivor");
    let _guard = KillOnDrop(vec![pid]);
    let code = c.stop();
    assert_eq!(code.code(), Some(0), "{code:?}");
    assert!(alive(pid), "the session outlives the controller");
    kill_pid(pid, Signal::SIGKILL);
    wait_dead(pid, "the session killed by the test");
}
