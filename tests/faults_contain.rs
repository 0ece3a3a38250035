//! Containment: a session's whole tree stops with it, with or without a
//! memory limit, with or without cgroups. The session double-forks a
//! daemon (a subshell starts it in the background and exits at once, and
//! `setsid` takes it out of the session's process group and session): it is
//! re-parented to the keeper and is no descendant of the session's process
//! any more. Whether the session is deleted, completes, or the controller
//! drains, the daemon must die.
//!
//! Each scenario runs twice: on this host's cgroups (where the controller
//! may create them) and with `--memory-limits sampled`, where no cgroup is
//! made and only the keeper's attribution of re-parented orphans (the
//! environment marker) can find the daemon.

mod common;
use common::*;

use std::path::{Path, PathBuf};

use nix::sys::signal::Signal;

/// Kills, on drop, the daemons a test started (their pids from their pid
/// files), so a failing test leaves nothing behind.
struct DaemonGuard(Vec<PathBuf>);

impl Drop for DaemonGuard {
    fn drop(&mut self) {
        for f in &self.0 {
            if let Some(pid) = read_pid(f) {
                if alive(pid) {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid as i32),
                        Signal::SIGKILL,
                    );
                }
            }
        }
    }
}

fn read_pid(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Where the containment comes from in a scenario.
#[derive(Clone, Copy, PartialEq)]
enum Host {
    /// Whatever this host offers (cgroups when the controller may make them).
    Default,
    /// No cgroup at all (`--memory-limits sampled`): the fallback.
    NoCgroup,
}

impl Host {
    fn args(self) -> &'static [&'static str] {
        match self {
            Host::Default => &[],
            Host::NoCgroup => &["--memory-limits", "sampled"],
        }
    }
}

/// What the session's main process does after it started the daemon.
#[derive(Clone, Copy)]
enum Main {
    /// Runs until stopped.
    Stays,
    /// Exits 0 once the daemon has written its pid.
    Exits,
}

/// The manifest body of a session that double-forks a daemon writing its
/// pid to `pidfile`.
fn daemon_session(pidfile: &Path, main: Main, limited: bool) -> String {
    let pidfile = pidfile.display();
    let daemon = format!(
        "(setsid sh -c 'echo $$ > {pidfile}.tmp && mv {pidfile}.tmp {pidfile}; exec sleep 1000' &)"
    );
    let rest = match main {
        Main::Stays => "exec sleep 1000".to_string(),
        // The session's own loop (not the test's): it ends only once the
        // daemon exists, so that the test can know the daemon's pid.
        Main::Exits => format!("until [ -s {pidfile} ]; do sleep 0.01; done; exit 0"),
    };
    let limit = if limited {
        "resources:\n  maxMemory: 1Gi\n"
    } else {
        ""
    };
    format!("restartPolicy: Never\n{limit}command:\n  - sh\n  - -c\n  - \"{daemon}; {rest}\"")
}

/// Waits for the daemon's pid and checks it really left the session's tree
/// (re-parented, in its own process group).
fn daemon_pid(pidfile: &Path, leader: u32) -> u32 {
    let daemon = wait_for("the daemon's pid", || read_pid(pidfile));
    wait_for(
        "the daemon to be an orphan outside the session's tree",
        || (ppid(daemon).is_some_and(|p| p != leader) || !alive(daemon)).then_some(()),
    );
    daemon
}

fn wait_dead(pid: u32, what: &str) {
    wait_for(what, || (!alive(pid)).then_some(()));
}

fn leader_pid(dir: &Path, stem: &str) -> u32 {
    let s = wait_status(dir, stem, "Running with a pid", |s| {
        s["status"]["pid"].is_u64()
    });
    s["status"]["pid"].as_u64().unwrap_or(0) as u32
}

/// The session is deleted while it runs.
fn deleted(host: Host, limited: bool) {
    let (tmp, dir) = sessions_dir();
    let _keeper = KeeperGuard(dir.clone());
    let pidfile = tmp.path().join("daemon.pid");
    let _daemons = DaemonGuard(vec![pidfile.clone()]);
    let manifest = dir.join("d.yaml");
    write_file(
        &manifest,
        &session("d", &daemon_session(&pidfile, Main::Stays, limited)),
    );
    let c = Controller::start(&dir, host.args());
    let leader = leader_pid(&dir, "d");
    let daemon = daemon_pid(&pidfile, leader);
    assert!(alive(daemon), "the daemon runs while its session runs");
    std::fs::remove_file(&manifest).expect("delete the manifest");
    wait_dead(leader, "the session's main process to die");
    wait_dead(daemon, "the daemon of the deleted session to die");
    drop(c);
}

/// The session's main process exits 0 (restartPolicy Never): Completed.
fn completed(host: Host, limited: bool) {
    let (tmp, dir) = sessions_dir();
    let _keeper = KeeperGuard(dir.clone());
    let pidfile = tmp.path().join("daemon.pid");
    let _daemons = DaemonGuard(vec![pidfile.clone()]);
    write_file(
        &dir.join("c.yaml"),
        &session("c", &daemon_session(&pidfile, Main::Exits, limited)),
    );
    let c = Controller::start(&dir, host.args());
    let daemon = wait_for("the daemon's pid", || read_pid(&pidfile));
    wait_phase(&dir, "c", "Completed");
    wait_dead(daemon, "the daemon of the completed session to die");
    drop(c);
}

/// The controller drains (SIGTERM).
fn drained(host: Host, limited: bool) {
    let (tmp, dir) = sessions_dir();
    let _keeper = KeeperGuard(dir.clone());
    let pidfile = tmp.path().join("daemon.pid");
    let _daemons = DaemonGuard(vec![pidfile.clone()]);
    write_file(
        &dir.join("s.yaml"),
        &session("s", &daemon_session(&pidfile, Main::Stays, limited)),
    );
    let mut c = Controller::start(&dir, host.args());
    let leader = leader_pid(&dir, "s");
    let daemon = daemon_pid(&pidfile, leader);
    assert!(alive(daemon), "the daemon runs while its session runs");
    let st = c.stop();
    assert!(st.success(), "the drain succeeds: {st:?}\n{}", c.log());
    wait_dead(leader, "the session's main process to die");
    wait_dead(daemon, "the daemon to die with the drain");
}

#[test]
fn a_deleted_plain_session_takes_its_double_forked_daemon_with_it() {
    deleted(Host::Default, false);
}

#[test]
fn a_deleted_plain_session_takes_its_daemon_with_it_without_cgroups() {
    deleted(Host::NoCgroup, false);
}

#[test]
fn a_completed_plain_session_takes_its_double_forked_daemon_with_it() {
    completed(Host::Default, false);
}

#[test]
fn a_completed_plain_session_takes_its_daemon_with_it_without_cgroups() {
    completed(Host::NoCgroup, false);
}

#[test]
fn a_deleted_limited_session_takes_its_double_forked_daemon_with_it() {
    deleted(Host::Default, true);
}

#[test]
fn a_completed_limited_session_takes_its_double_forked_daemon_with_it() {
    completed(Host::Default, true);
}

#[test]
fn a_limited_session_without_cgroups_takes_its_daemon_with_it() {
    completed(Host::NoCgroup, true);
}

#[test]
fn a_drain_takes_double_forked_daemons_with_it() {
    drained(Host::Default, false);
}

#[test]
fn a_drain_takes_double_forked_daemons_with_it_without_cgroups() {
    drained(Host::NoCgroup, false);
}

#[test]
fn the_startup_log_says_what_containment_is_left_without_cgroups() {
    let (_tmp, dir) = sessions_dir();
    let _keeper = KeeperGuard(dir.clone());
    let mut c = Controller::start(&dir, Host::NoCgroup.args());
    wait_for("the startup log", || {
        c.log()
            .contains("sessionlet controller started")
            .then_some(())
    });
    let log = c.log();
    assert!(
        log.contains("containment: no cgroup") && log.contains("SESSIONLET_SESSION marker"),
        "the log says what containment is left:\n{log}"
    );
    c.stop();
}

/// Where cgroups exist, a plain session is moved into its own cgroup right
/// after it starts; from then on even a daemon that clears its environment
/// (so no marker can find it) and leaves the tree stops with the session.
#[test]
fn a_plain_session_joins_its_cgroup_so_even_an_unmarked_daemon_stops_with_it() {
    let (tmp, dir) = sessions_dir();
    let _keeper = KeeperGuard(dir.clone());
    let pidfile = tmp.path().join("daemon.pid");
    let go = tmp.path().join("go");
    let _daemons = DaemonGuard(vec![pidfile.clone()]);
    let p = pidfile.display();
    let body = format!(
        "command:\n  - sh\n  - -c\n  - \"until [ -e {go} ]; do sleep 0.01; done; (env -i /usr/bin/setsid /bin/sh -c 'echo $$ > {p}.tmp && /bin/mv {p}.tmp {p}; exec /bin/sleep 1000' &); exec sleep 1000\"",
        go = go.display()
    );
    let manifest = dir.join("u.yaml");
    write_file(&manifest, &session("u", &body));
    let c = Controller::start(&dir, &[]);
    let leader = leader_pid(&dir, "u");
    let mode = wait_for("the controller status", || {
        controller_status_of(&dir)?["extra"]["memoryLimits"]
            .as_str()
            .map(str::to_string)
    });
    if !mode.contains("cgroup") {
        eprintln!("SKIPPED: no usable cgroups here ({mode}); the fallback is tested above");
        let _ =
            nix::sys::signal::killpg(nix::unistd::Pid::from_raw(leader as i32), Signal::SIGKILL);
        return;
    }
    wait_for("the session to be moved into its own cgroup", || {
        std::fs::read_to_string(format!("/proc/{leader}/cgroup"))
            .ok()?
            .lines()
            .any(|l| l.contains("/sessionlet-") && l.ends_with("/u"))
            .then_some(())
    });
    std::fs::write(&go, "").expect("write the go file");
    let daemon = daemon_pid(&pidfile, leader);
    let environ = std::fs::read(format!("/proc/{daemon}/environ")).unwrap_or_default();
    assert!(
        !String::from_utf8_lossy(&environ).contains("SESSIONLET_SESSION"),
        "the daemon carries no marker"
    );
    std::fs::remove_file(&manifest).expect("delete the manifest");
    wait_dead(leader, "the session's main process to die");
    wait_dead(daemon, "the unmarked daemon to die with its cgroup");
    drop(c);
}
