//! What survives a controller restart: SIGKILLed controllers leave their
//! sessions running and the next one adopts them (same pid, no restart,
//! supervision resumes); an exit that happens while no controller runs is
//! reported with its real code; a reused pid is never taken for a session;
//! backoff and attempt counts survive; `--keep-sessions` makes SIGTERM leave
//! sessions running while the default SIGTERM drains them.

mod common;
use common::*;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use nix::sys::signal::Signal;
use serde_json::Value;

fn kill_pid(pid: u32, sig: Signal) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig);
}

/// Waits until a process is gone (dead, reaped or a zombie).
fn wait_dead(pid: u32, what: &str) {
    wait_for(&format!("{what} (pid {pid}) to be gone"), || {
        (!alive(pid)).then_some(())
    });
}

/// Waits until a process no longer exists at all (its parent reaped it).
fn wait_reaped(pid: u32, what: &str) {
    wait_for(&format!("{what} (pid {pid}) to be reaped"), || {
        (!Path::new(&format!("/proc/{pid}")).exists()).then_some(())
    });
}

fn pid_of(s: &Value) -> u32 {
    s["status"]["pid"]
        .as_u64()
        .unwrap_or_else(|| panic!("no pid: {s:#?}")) as u32
}

fn wait_running(dir: &Path, stem: &str) -> Value {
    wait_status(dir, stem, "Running with a pid", |s| {
        s["status"]["phase"] == "Running" && s["status"]["pid"].is_u64()
    })
}

/// Every SessionStatus document of the status directory, by session name.
fn session_statuses(dir: &Path) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(dir).expect("status dir").flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.ends_with(".status.yaml") || name.starts_with('.') {
            continue;
        }
        for doc in status_docs(&e.path()).unwrap_or_default() {
            if doc["kind"] == "SessionStatus" {
                if let Some(n) = doc["metadata"]["name"].as_str() {
                    out.insert(n.to_string(), doc.clone());
                }
            }
        }
    }
    out
}

/// Ends the test's controller gracefully (so the keeper exits with its last
/// child) and checks that nothing is left: no keeper, no session.
fn stop_and_check_clean(mut c: Controller, pids: &[u32]) {
    let status_dir = c.status_dir.clone();
    let code = c.stop();
    assert!(
        code.success(),
        "the controller drains and exits 0: {code:?}"
    );
    for &pid in pids {
        wait_dead(pid, "a session after the drain");
    }
    wait_for("the keeper to exit after the drain", || {
        keeper_of(&status_dir).is_none().then_some(())
    });
}

/// A process of the test itself, killed and reaped on drop.
struct Own(Child);

impl Drop for Own {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

// ---------------------------------------------------------------------------

#[test]
fn a_sigkilled_controller_leaves_every_session_running_and_the_next_one_adopts_them() {
    let (_tmp, dir) = sessions_dir();
    let _guard = KeeperGuard(dir.clone());
    write_file(
        &dir.join("solo.yaml"),
        &session("solo", "command: [sleep, '1000']"),
    );
    write_file(
        &dir.join("pair.yaml"),
        &format!(
            "{}---\n{}",
            session("left", "command: [sleep, '1000']"),
            session("right", "command: [sh, -c, 'sleep 1000']")
        ),
    );
    write_file(
        &dir.join("crew.yaml"),
        "apiVersion: sessionlet.dev/v1alpha1\nkind: Pool\nmetadata:\n  name: crew\nspec:\n  replicas: 2\n  template:\n    spec:\n      command: [sleep, '1000']\n",
    );
    // Stopped at its timeout by whichever controller runs then.
    write_file(
        &dir.join("timed.yaml"),
        &session(
            "timed",
            "command: [sleep, '1000']\ntimeout: 8s\nrestartPolicy: Never",
        ),
    );
    let mut c1 = Controller::start(&dir, &[]);
    let before = wait_for("six running sessions", || {
        let all = session_statuses(&dir);
        let running: BTreeMap<String, Value> = all
            .into_iter()
            .filter(|(_, s)| s["status"]["phase"] == "Running" && s["status"]["pid"].is_u64())
            .collect();
        (running.len() == 6).then_some(running)
    });
    let pids: BTreeMap<String, u32> = before.iter().map(|(n, s)| (n.clone(), pid_of(s))).collect();
    let timed_pid = pids["timed"];

    c1.kill();
    for (name, &pid) in &pids {
        assert!(
            alive(pid),
            "{name} (pid {pid}) survives the SIGKILL of its controller"
        );
    }
    let keeper = keeper_of(&dir).expect("the keeper outlives the controller");
    for (name, &pid) in &pids {
        assert_eq!(
            ppid(pid),
            Some(keeper),
            "{name}'s parent is the keeper, not the dead controller"
        );
    }

    let c2 = Controller::start(&dir, &[]);
    wait_passes(&dir, c2.pid(), 3);
    // Adopted: the same process, the same attempt, not restarted.
    for (name, s) in &before {
        if name == "timed" {
            continue;
        }
        let now = wait_for(&format!("{name} in the new controller's statuses"), || {
            session_statuses(&dir)
                .remove(name)
                .filter(|s| s["status"]["phase"] == "Running")
        });
        assert_eq!(now["status"]["pid"], s["status"]["pid"], "{name}: same pid");
        assert_eq!(
            now["status"]["attempt"], s["status"]["attempt"],
            "{name}: no new attempt"
        );
        assert_eq!(now["status"]["restarts"], 0, "{name}: not restarted");
        assert_eq!(
            now["status"]["startedAt"], s["status"]["startedAt"],
            "{name}: the same run"
        );
        assert_eq!(
            now["metadata"]["uid"], s["metadata"]["uid"],
            "{name}: the same object"
        );
        assert!(alive(pids[name]), "{name} still runs");
    }
    // The pool's replicas too, as members of the pool's status.
    let pool = status(&dir, "crew").expect("pool status");
    assert_eq!(pool["kind"], "PoolStatus", "{pool:#?}");

    // Supervision resumed: the timeout is enforced on the adopted process.
    let s = wait_status(&dir, "timed", "stopped at its timeout", |s| {
        s["status"]["phase"] == "TimedOut"
    });
    assert_eq!(s["status"]["lastExit"]["attempt"], 1, "{s:#?}");
    assert_eq!(s["status"]["lastExit"]["reason"], "TimedOut", "{s:#?}");
    assert_eq!(s["status"]["attempt"], 1, "never restarted: {s:#?}");
    wait_dead(timed_pid, "the timed-out session");

    let live: Vec<u32> = pids.values().copied().collect();
    stop_and_check_clean(c2, &live);
}

/// A session exits 7 while no controller runs; `bystander` (when asked)
/// keeps the keeper alive meanwhile, else the keeper exits with its last
/// child and the next one reads the exit from `.sessionlet/exits/`.
fn exit_while_away(keeper_stays: bool) {
    let (_tmp, dir) = sessions_dir();
    let _guard = KeeperGuard(dir.clone());
    // The first attempt waits for the test's go, then exits 7; later attempts run on.
    write_file(
        &dir.join("seven.yaml"),
        &session(
            "seven",
            "command:\n  - sh\n  - -c\n  - |\n    if [ -e ran-once ]; then exec sleep 1000; fi\n    touch ran-once\n    while [ ! -e go ]; do sleep 0.05; done\n    exit 7\nrestartPolicy: OnFailure\nbackoff: {initialDelay: 2s}",
        ),
    );
    if keeper_stays {
        write_file(
            &dir.join("bystander.yaml"),
            &session("bystander", "command: [sleep, '1000']"),
        );
    }
    let mut c1 = Controller::start(&dir, &[]);
    let first = wait_running(&dir, "seven");
    let pid = pid_of(&first);
    let bystander = keeper_stays.then(|| pid_of(&wait_running(&dir, "bystander")));
    wait_for("the first attempt to start", || {
        dir.join("ran-once").exists().then_some(())
    });
    let keeper = keeper_of(&dir).expect("a keeper");
    c1.kill();
    assert!(alive(pid), "the session outlives its controller");

    // It ends while nobody watches; the keeper reaps it and records the exit.
    std::fs::write(dir.join("go"), "").unwrap();
    wait_reaped(pid, "the session that exits 7");
    let record = dir.join(format!(".sessionlet/exits/{pid}.json"));
    let text = wait_for("the keeper's record of the exit", || {
        std::fs::read_to_string(&record).ok()
    });
    let rec: Value = serde_json::from_str(&text).expect("exit record is JSON");
    assert_eq!(rec["child"]["pid"], pid, "{rec}");
    if keeper_stays {
        assert!(alive(keeper), "the keeper stays with the bystander");
    } else {
        wait_dead(keeper, "the keeper without children nor controller");
    }

    let c2 = Controller::start(&dir, &[]);
    if keeper_stays {
        assert_eq!(
            keeper_of(&dir),
            Some(keeper),
            "the same keeper serves the new controller"
        );
    }
    let s = wait_status(&dir, "seven", "the exit seen while away", |s| {
        s["status"]["lastExit"]["attempt"] == 1
    });
    assert_eq!(
        s["status"]["lastExit"]["exitCode"], 7,
        "the real exit code, not 'unknown': {s:#?}"
    );
    assert_eq!(s["status"]["lastExit"]["reason"], "Error", "{s:#?}");
    assert!(
        s["status"]["phase"] == "Recovering"
            || (s["status"]["attempt"] == 2 && s["status"]["phase"] == "Running"),
        "OnFailure: backoff, then a new attempt: {s:#?}"
    );
    let s = wait_status(&dir, "seven", "the second attempt", |s| {
        s["status"]["attempt"] == 2 && s["status"]["phase"] == "Running"
    });
    assert_eq!(s["status"]["restarts"], 1, "{s:#?}");
    assert_eq!(s["status"]["lastExit"]["exitCode"], 7, "{s:#?}");
    assert_ne!(pid_of(&s), pid);
    // Acknowledged: the record is gone once handled.
    wait_for("the exit record to be acknowledged", || {
        (!record.exists()).then_some(())
    });
    let mut live = vec![pid_of(&s)];
    if let Some(b) = bystander {
        let st = status(&dir, "bystander").expect("status");
        assert_eq!(pid_of(&st), b, "the bystander was adopted, not restarted");
        live.push(b);
    }
    stop_and_check_clean(c2, &live);
}

#[test]
fn an_exit_while_no_controller_runs_is_reported_with_its_real_code_and_the_restart_policy_applies()
{
    exit_while_away(false);
}

#[test]
fn an_exit_while_no_controller_runs_is_reported_even_when_the_keeper_stayed_up() {
    exit_while_away(true);
}

#[test]
fn a_reused_pid_is_never_mistaken_for_the_session_and_never_signalled() {
    let (_tmp, dir) = sessions_dir();
    let _guard = KeeperGuard(dir.clone());
    write_file(
        &dir.join("victim.yaml"),
        &session(
            "victim",
            "command: [sleep, '1000']\nrestartPolicy: OnFailure\nbackoff: {initialDelay: 1h, maxDelay: 2h}",
        ),
    );
    let mut c1 = Controller::start(&dir, &[]);
    let s = wait_running(&dir, "victim");
    let pid = pid_of(&s);
    let ticks = s["status"]["pidStartTicks"].clone();
    assert!(ticks.is_u64(), "the status records the start time: {s:#?}");
    c1.kill();

    // The session dies while nobody watches, and an unrelated process of ours
    // gets "its" pid (we rewrite the status to say so, keeping the old start time).
    kill_pid(pid, Signal::SIGKILL);
    wait_reaped(pid, "the killed session");
    let stranger = Own(Command::new("sleep")
        .arg("1000")
        .stdin(Stdio::null())
        .spawn()
        .expect("sleep"));
    let stranger_pid = stranger.0.id();
    let path = dir.join("victim.status.yaml");
    let mut docs = status_docs(&path).expect("status");
    docs[0]["status"]["pid"] = Value::from(stranger_pid);
    assert_eq!(docs[0]["status"]["pidStartTicks"], ticks);
    let text = sessionlet::manifest::codec::to_yaml(&docs[0]).expect("yaml");
    write_file(&path, &text);

    let c2 = Controller::start(&dir, &[]);
    let s = wait_status(&dir, "victim", "the vanished process handled", |s| {
        s["status"]["pid"] != stranger_pid
    });
    // Several passes and resyncs later, the stranger was never signalled.
    wait_passes(&dir, c2.pid(), 8);
    assert!(
        alive(stranger_pid),
        "the process that reuses the pid was signalled"
    );
    assert_eq!(
        s["status"]["lastExit"]["attempt"], 1,
        "the first attempt ended: {s:#?}"
    );
    // Handled by its restart policy: OnFailure with a 1h backoff means Recovering.
    let s = status(&dir, "victim").unwrap();
    assert_eq!(
        s["status"]["phase"], "Recovering",
        "restartPolicy OnFailure with initialDelay 1h: the next attempt waits; got {s:#?}"
    );
    assert!(
        s["status"]["nextRestartAt"].is_string(),
        "a backoff is scheduled: {s:#?}"
    );
    assert_eq!(s["status"]["attempt"], 1, "no new attempt yet: {s:#?}");
    assert_eq!(s["status"]["restarts"], 0, "{s:#?}");
    stop_and_check_clean(c2, &[]);
    assert!(alive(stranger_pid), "the drain did not touch the stranger");
    drop(stranger);
}

#[test]
fn backoff_state_and_attempt_and_restart_counts_survive_a_controller_restart() {
    let (_tmp, dir) = sessions_dir();
    let _guard = KeeperGuard(dir.clone());
    // Fails at once; the first retry after 1s, the next after ~2.8 hours.
    write_file(
        &dir.join("failing.yaml"),
        &session(
            "failing",
            "command: [sh, -c, 'exit 3']\nrestartPolicy: OnFailure\nbackoff: {initialDelay: 1s, multiplier: 10000, maxDelay: 24h}",
        ),
    );
    let mut c1 = Controller::start(&dir, &[]);
    let before = wait_status(&dir, "failing", "the second failure in backoff", |s| {
        s["status"]["phase"] == "Recovering" && s["status"]["attempt"] == 2
    });
    assert_eq!(before["status"]["restarts"], 1, "{before:#?}");
    assert_eq!(before["status"]["consecutiveFailures"], 2, "{before:#?}");
    assert!(before["status"]["nextRestartAt"].is_string(), "{before:#?}");
    c1.kill();
    wait_for("the keeper to exit (no session runs)", || {
        keeper_of(&dir).is_none().then_some(())
    });

    let c2 = Controller::start(&dir, &[]);
    wait_passes(&dir, c2.pid(), 4);
    let after = status(&dir, "failing").expect("status");
    for field in [
        "phase",
        "attempt",
        "restarts",
        "consecutiveFailures",
        "nextRestartAt",
        "runStartedAt",
    ] {
        assert_eq!(
            after["status"][field], before["status"][field],
            "status.{field} survives the restart:\nbefore {before:#?}\nafter {after:#?}"
        );
    }
    // The last exit too (its crash analysis is a separate matter: see the logs test).
    for field in [
        "attempt",
        "exitCode",
        "reason",
        "message",
        "startedAt",
        "finishedAt",
        "crashDump",
    ] {
        assert_eq!(
            after["status"]["lastExit"][field], before["status"]["lastExit"][field],
            "status.lastExit.{field} survives the restart"
        );
    }
    assert_eq!(after["metadata"]["uid"], before["metadata"]["uid"]);
    stop_and_check_clean(c2, &[]);
}

#[test]
fn the_last_attempt_stays_described_and_its_logs_readable_after_a_controller_restart() {
    let (_tmp, dir) = sessions_dir();
    let _guard = KeeperGuard(dir.clone());
    write_file(
        &dir.join("oneshot.yaml"),
        &session(
            "oneshot",
            "command: [sh, -c, 'echo output-of-the-only-attempt; exit 3']\nrestartPolicy: Never",
        ),
    );
    let mut c1 = Controller::start(&dir, &[]);
    let before = wait_phase(&dir, "oneshot", "Failed");
    assert!(
        before["status"]["logs"]["stdout"].is_string(),
        "{before:#?}"
    );
    let logs = || {
        Command::new(bin())
            .args(["logs", "--dir"])
            .arg(&dir)
            .arg("oneshot")
            .output()
            .expect("sessionlet logs")
    };
    let out = logs();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("output-of-the-only-attempt"),
        "{out:?}"
    );
    c1.kill();

    let c2 = Controller::start(&dir, &[]);
    wait_passes(&dir, c2.pid(), 3);
    let after = status(&dir, "oneshot").expect("status");
    assert_eq!(after["status"]["phase"], "Failed", "{after:#?}");
    assert_eq!(
        after["status"]["logs"], before["status"]["logs"],
        "where the last attempt's output is stays in the status after a restart"
    );
    assert_eq!(
        after["status"]["lastExit"]["analysis"], before["status"]["lastExit"]["analysis"],
        "the crash analysis of the last exit stays in the status after a restart"
    );
    let out = logs();
    assert!(
        out.status.success()
            && String::from_utf8_lossy(&out.stdout).contains("output-of-the-only-attempt"),
        "`sessionlet logs` still shows the last attempt after a restart: {out:?}"
    );
    stop_and_check_clean(c2, &[]);
}

#[test]
fn keep_sessions_makes_sigterm_leave_sessions_running_and_the_next_controller_adopts_them() {
    let (_tmp, dir) = sessions_dir();
    let _guard = KeeperGuard(dir.clone());
    for name in ["one", "two"] {
        write_file(
            &dir.join(format!("{name}.yaml")),
            &session(name, "command: [sleep, '1000']"),
        );
    }
    let mut c1 = Controller::start(&dir, &["--keep-sessions"]);
    let one = wait_running(&dir, "one");
    let two = wait_running(&dir, "two");
    let pids = [pid_of(&one), pid_of(&two)];
    let code = c1.stop();
    assert_eq!(code.code(), Some(0), "{code:?}");
    for pid in pids {
        assert!(alive(pid), "--keep-sessions: pid {pid} still runs");
    }
    assert!(
        keeper_of(&dir).is_some(),
        "the keeper stays with its sessions"
    );

    let c2 = Controller::start(&dir, &[]);
    wait_passes(&dir, c2.pid(), 3);
    for (stem, before) in [("one", &one), ("two", &two)] {
        let s = status(&dir, stem).expect("status");
        assert_eq!(s["status"]["phase"], "Running", "{s:#?}");
        assert_eq!(
            s["status"]["pid"], before["status"]["pid"],
            "adopted: {s:#?}"
        );
        assert_eq!(s["status"]["attempt"], 1, "{s:#?}");
        assert_eq!(s["status"]["restarts"], 0, "{s:#?}");
    }
    // The default SIGTERM of the new controller drains them.
    stop_and_check_clean(c2, &pids);
}

#[test]
fn the_default_sigterm_drains_every_session_and_the_keeper_exits() {
    let (_tmp, dir) = sessions_dir();
    let _guard = KeeperGuard(dir.clone());
    write_file(
        &dir.join("plain.yaml"),
        &session("plain", "command: [sleep, '1000']"),
    );
    write_file(
        &dir.join("stubborn.yaml"),
        &session(
            "stubborn",
            "command: [sh, -c, 'trap \"\" TERM; sleep 1000 & wait; sleep 1000']\nterminationGracePeriod: 1s",
        ),
    );
    let c = Controller::start(&dir, &[]);
    let a = pid_of(&wait_running(&dir, "plain"));
    let b = pid_of(&wait_running(&dir, "stubborn"));
    let keeper = keeper_of(&dir).expect("a keeper");
    stop_and_check_clean(c, &[a, b]);
    wait_dead(keeper, "the keeper");
    for stem in ["plain", "stubborn"] {
        let s = status(&dir, stem).expect("status");
        assert_ne!(s["status"]["phase"], "Running", "{s:#?}");
        assert!(s["status"]["pid"].is_null(), "{s:#?}");
    }
}
