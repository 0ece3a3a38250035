//! Faults around the keeper: it dies under a live controller, or both die;
//! something else answers at its socket. Rules: never two live copies of a
//! session, spawning works again, exit codes kept wherever they could be
//! known, and nobody but our own user is ever spoken to.

mod common;
use common::*;

use std::path::Path;
use std::process::{Command, Stdio};

use nix::sys::signal::Signal;
use serde_json::Value;

fn kill_pid(pid: u32, sig: Signal) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig);
}

fn tag(dir: &Path, name: &str) -> String {
    format!("{}-{name}", dir.display())
}

/// A session that runs until SIGTERM and then exits with code 5.
fn long_session(dir: &Path, name: &str, policy: &str) -> String {
    format!(
        "apiVersion: sessionlet.dev/v1alpha1\nkind: Session\nmetadata:\n  name: {name}\nspec:\n  restartPolicy: {policy}\n  backoff: {{initialDelay: 100ms}}\n  env:\n    SESSION_TAG: \"{}\"\n  command: [\"/bin/sh\", \"-c\", \"trap 'exit 5' TERM; while :; do sleep 0.2; done\"]\n",
        tag(dir, name)
    )
}

fn pid_of(s: &Value) -> Option<u32> {
    s["status"]["pid"].as_u64().map(|p| p as u32)
}

fn wait_running(dir: &Path, stem: &str) -> u32 {
    let s = wait_status(dir, stem, "Running with a pid", |s| {
        s["status"]["phase"] == "Running" && s["status"]["pid"].is_u64()
    });
    pid_of(&s).unwrap_or(0)
}

#[test]
fn a_killed_keeper_under_a_live_controller_keeps_exit_codes_and_spawning_works_again() {
    let (_tmp, dir) = sessions_dir();
    let _guard = KeeperGuard(dir.clone());
    write_file(&dir.join("a.yaml"), &long_session(&dir, "a", "OnFailure"));
    let mut c = Controller::start(&dir, &[]);
    let first = wait_running(&dir, "a");
    let keeper = wait_for("the keeper", || keeper_of(&dir));
    kill_pid(keeper, Signal::SIGKILL);
    // A new keeper takes over; the session is not started a second time.
    let new_keeper = wait_for("a new keeper", || keeper_of(&dir).filter(|k| *k != keeper));
    assert_eq!(live_copies(&tag(&dir, "a")), vec![first]);
    // New manifests start again.
    write_file(&dir.join("b.yaml"), &long_session(&dir, "b", "Always"));
    let b = wait_running(&dir, "b");
    assert_eq!(live_copies(&tag(&dir, "b")), vec![b]);
    // The orphan's exit code is kept (we are its subreaper), not "unknown".
    kill_pid(first, Signal::SIGTERM);
    let s = wait_status(&dir, "a", "a restart after exit 5", |s| {
        s["status"]["lastExit"]["exitCode"] == 5 && pid_of(s).is_some_and(|p| p != first)
    });
    assert_eq!(s["status"]["lastExit"]["reason"], "Error", "{s:#?}");
    let second = pid_of(&s).unwrap_or(0);
    assert_eq!(live_copies(&tag(&dir, "a")), vec![second]);
    assert!(alive(new_keeper));
    assert!(c.stop().success(), "{}", c.log());
    assert!(live_copies(&tag(&dir, "a")).is_empty());
    assert!(live_copies(&tag(&dir, "b")).is_empty());
}

#[test]
fn with_controller_and_keeper_both_killed_the_next_controller_supervises_the_orphans() {
    let (_tmp, dir) = sessions_dir();
    let _guard = KeeperGuard(dir.clone());
    write_file(&dir.join("a.yaml"), &long_session(&dir, "a", "Always"));
    write_file(&dir.join("d.yaml"), &long_session(&dir, "d", "Always"));
    let mut c = Controller::start(&dir, &[]);
    let a = wait_running(&dir, "a");
    let d = wait_running(&dir, "d");
    let keeper = wait_for("the keeper", || keeper_of(&dir));
    c.kill();
    kill_pid(keeper, Signal::SIGKILL);
    wait_for("the keeper to be gone", || (!alive(keeper)).then_some(()));
    assert!(alive(a) && alive(d), "sessions outlive both");
    let mut c = Controller::start(&dir, &[]);
    // Supervised again, same pids, no second copy.
    wait_status(&dir, "a", "a adopted", |s| {
        s["status"]["phase"] == "Running" && pid_of(s) == Some(a)
    });
    wait_passes(&dir, c.pid(), 2);
    assert_eq!(live_copies(&tag(&dir, "a")), vec![a]);
    assert_eq!(live_copies(&tag(&dir, "d")), vec![d]);
    // An orphan that ends is noticed (its code went to init: said so), and restarted once.
    kill_pid(a, Signal::SIGTERM);
    let s = wait_status(&dir, "a", "a restarted", |s| {
        s["status"]["phase"] == "Running" && pid_of(s).is_some_and(|p| p != a)
    });
    assert!(
        s["status"]["lastExit"]["exitCode"].is_null(),
        "no code can be known: {s:#?}"
    );
    let a2 = pid_of(&s).unwrap_or(0);
    assert_eq!(live_copies(&tag(&dir, "a")), vec![a2]);
    // Removing a manifest stops its adopted orphan; a drain stops the rest.
    std::fs::remove_file(dir.join("d.yaml")).expect("remove d");
    wait_for("d stopped", || (!alive(d)).then_some(()));
    assert!(c.stop().success(), "{}", c.log());
    assert!(live_copies(&tag(&dir, "a")).is_empty());
    assert!(live_copies(&tag(&dir, "d")).is_empty());
}

#[test]
fn a_keeper_socket_that_never_answers_is_a_clear_error_not_a_hang() {
    let (_tmp, dir) = sessions_dir();
    let control = dir.join(".sessionlet");
    std::fs::create_dir_all(&control).expect("control dir");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&control, std::fs::Permissions::from_mode(0o750)).expect("mode");
    // Our own user, listening but silent.
    let listener =
        std::os::unix::net::UnixListener::bind(control.join("keeper.sock")).expect("bind");
    write_file(&dir.join("a.yaml"), &long_session(&dir, "a", "Always"));
    let mut c = Controller::start(&dir, &[]);
    let status = c.wait();
    assert!(!status.success());
    let log = c.log();
    assert!(log.contains("did not answer within"), "{log}");
    drop(listener);
    assert!(live_copies(&tag(&dir, "a")).is_empty(), "nothing started");
}

/// As root: a socket bound by another uid at the keeper's path is refused
/// before anything is sent to it (its peer credentials are checked), and a
/// control folder owned by another uid is refused outright.
#[test]
fn a_squatter_of_another_uid_is_refused_and_sent_nothing() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPED: needs root to act as a second uid");
        return;
    }
    if Command::new("python3").arg("--version").output().is_err() {
        eprintln!("SKIPPED: needs python3 for the squatter");
        return;
    }
    let (tmp, dir) = sessions_dir();
    let control = dir.join(".sessionlet");
    std::fs::create_dir_all(&control).expect("control dir");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&control, std::fs::Permissions::from_mode(0o750)).expect("mode");
    let got = tmp.path().join("squatter-received");
    let ready = tmp.path().join("squatter-ready");
    // Binds as root (so the file looks right), then becomes uid 12345 and listens.
    let script = r#"
import os, socket, sys
path, got, ready = sys.argv[1], sys.argv[2], sys.argv[3]
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(path)
out = open(got, "wb")
os.setgid(12345); os.setuid(12345)
s.listen(8)
print("ready", flush=True)
while True:
    c, _ = s.accept()
    c.settimeout(3)
    try:
        data = c.recv(65536)
        out.write(data); out.flush()
    except Exception:
        pass
"#;
    let mut squatter = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(control.join("keeper.sock"))
        .arg(&got)
        .arg(&ready)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("squatter");
    {
        use std::io::BufRead;
        let out = squatter.stdout.take().expect("stdout");
        let mut line = String::new();
        let _ = std::io::BufReader::new(out).read_line(&mut line);
        assert_eq!(line.trim(), "ready");
    }
    write_file(&dir.join("a.yaml"), &long_session(&dir, "a", "Always"));
    let mut c = Controller::start(&dir, &[]);
    let status = c.wait();
    let _ = squatter.kill();
    let _ = squatter.wait();
    assert!(!status.success());
    let log = c.log();
    assert!(
        log.contains("uid 12345"),
        "the error names the squatter: {log}"
    );
    let received = std::fs::read(&got).unwrap_or_default();
    assert!(
        received.is_empty(),
        "sent {:?}",
        String::from_utf8_lossy(&received)
    );
    assert!(live_copies(&tag(&dir, "a")).is_empty());

    // A control folder owned by another uid: refused, with the fix.
    let (_tmp2, dir2) = sessions_dir();
    let control2 = dir2.join(".sessionlet");
    std::fs::create_dir_all(&control2).expect("control dir");
    nix::unistd::chown(
        &control2,
        Some(nix::unistd::Uid::from_raw(12345)),
        Some(nix::unistd::Gid::from_raw(12345)),
    )
    .expect("chown");
    write_file(&dir2.join("a.yaml"), &long_session(&dir2, "a", "Always"));
    let mut c = Controller::start(&dir2, &[]);
    assert!(!c.wait().success());
    let log = c.log();
    assert!(
        log.contains("owned by uid 12345") && log.contains("chown"),
        "{log}"
    );
}
