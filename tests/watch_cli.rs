//! `get -w`, `restart`, `stop` and `status` through the real binary.

mod common;
mod watch_common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;

use common::*;
use watch_common::*;

/// Spawns `sessionlet get -w` with piped stdout; lines arrive on the channel.
fn get_w(dir: &std::path::Path) -> (std::process::Child, mpsc::Receiver<String>) {
    let mut child = Command::new(bin())
        .args(["get", "-w", "--dir"])
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("get -w");
    let out = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

/// Waits for a line satisfying `pred`; returns every line read so far.
fn wait_line(
    rx: &mpsc::Receiver<String>,
    seen: &mut Vec<String>,
    what: &str,
    pred: impl Fn(&str) -> bool,
) {
    let start = std::time::Instant::now();
    loop {
        if seen.iter().any(|l| pred(l)) {
            return;
        }
        let left = DEADLINE.saturating_sub(start.elapsed());
        match rx.recv_timeout(left) {
            Ok(l) => seen.push(l),
            Err(_) => panic!("no line with {what} from get -w; got {seen:#?}"),
        }
    }
}

fn interrupt(child: &mut std::process::Child) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    );
    let status = wait_for("get -w to exit on Ctrl-C", || {
        child.try_wait().ok().flatten()
    });
    assert!(status.success(), "Ctrl-C ends get -w cleanly: {status:?}");
}

#[test]
fn get_w_prints_a_line_when_a_session_changes_phase() {
    let (_tmp, dir) = sessions_dir();
    write_file(&dir.join("web.yaml"), &long("web"));
    let _c = Controller::start(&dir, &[]);
    wait_phase(&dir, "web", "Running");
    wait_api(&dir);
    let (mut child, rx) = get_w(&dir);
    let mut seen = Vec::new();
    wait_line(&rx, &mut seen, "the table", |l| l.starts_with("NAME"));
    wait_line(&rx, &mut seen, "web Running", |l| {
        l.starts_with("web") && l.contains("Running")
    });
    let before = seen.len();
    // The phase changes: a line says so without asking again.
    write_file(
        &dir.join("web.yaml"),
        &format!("{}  suspend: true\n", long("web")),
    );
    wait_line(&rx, &mut seen, "web Cancelled", |l| {
        l.starts_with("web") && l.contains("Cancelled")
    });
    assert!(seen.len() > before);
    interrupt(&mut child);
}

#[test]
fn get_w_follows_the_status_files_when_no_controller_runs() {
    let (_tmp, dir) = sessions_dir();
    write_file(&dir.join("web.yaml"), &long("web"));
    {
        let mut c = Controller::start(&dir, &[]);
        wait_phase(&dir, "web", "Running");
        assert!(c.stop().success());
    }
    let (mut child, rx) = get_w(&dir);
    let mut seen = Vec::new();
    wait_line(&rx, &mut seen, "the table", |l| l.starts_with("NAME"));
    // A controller started now writes the status files the watch follows.
    let _c = Controller::start(&dir, &[]);
    wait_line(&rx, &mut seen, "web Running", |l| {
        l.starts_with("web") && l.contains("Running") && !l.contains("NAME")
    });
    interrupt(&mut child);
}

#[test]
fn restart_stop_and_status_say_when_no_controller_runs() {
    let (_tmp, dir) = sessions_dir();
    for args in [&["restart", "web"][..], &["stop", "web"], &["status"]] {
        let out = Command::new(bin())
            .args(args)
            .arg("--dir")
            .arg(&dir)
            .output()
            .expect("run");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}");
        assert!(
            err.contains(&format!("no controller is running for {}", dir.display()))
                && err.contains("no socket at")
                && err.contains("api.sock"),
            "{args:?}: {err}"
        );
    }
}

#[test]
fn restart_stop_and_status_act_through_the_socket() {
    let (_tmp, dir) = sessions_dir();
    write_file(&dir.join("web.yaml"), &long("web"));
    let _c = Controller::start(&dir, &[]);
    let first = wait_phase(&dir, "web", "Running");
    wait_api(&dir);
    let run = |args: &[&str]| {
        let out = Command::new(bin())
            .args(args)
            .arg("--dir")
            .arg(&dir)
            .output()
            .expect("run");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, _) = run(&["status"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("healthy") && out.contains("Running"), "{out}");

    let (code, out, err) = run(&["restart", "web"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("web: restart asked"), "{out}");
    wait_status(&dir, "web", "a new attempt", |s| {
        s["status"]["phase"] == "Running"
            && s["status"]["attempt"].as_u64() > first["status"]["attempt"].as_u64()
    });

    let (code, _, err) = run(&["stop", "web", "ghost"]);
    assert_eq!(code, Some(1), "one name is unknown");
    assert!(err.contains("ghost") && err.contains("hint"), "{err}");
    wait_status(&dir, "web", "stopped", |s| {
        s["status"]["reason"] == "StoppedByRequest"
    });
}

#[test]
fn the_new_commands_have_help_with_an_example() {
    for sub in ["restart", "stop", "status"] {
        let out = Command::new(bin())
            .args([sub, "--help"])
            .output()
            .expect("help");
        assert!(out.status.success(), "{sub} --help");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("Example") && text.contains(&format!("sessionlet {sub}")),
            "{sub}: {text}"
        );
    }
    let out = Command::new(bin())
        .args(["get", "--help"])
        .output()
        .expect("help");
    assert!(String::from_utf8_lossy(&out.stdout).contains("--watch"));
    let out = Command::new(bin())
        .args(["run", "--help"])
        .output()
        .expect("help");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("--http-addr")
            && text.contains("metrics-addr")
            && text.contains("--http-token-file"),
        "{text}"
    );
}

#[test]
fn get_w_prints_a_line_when_a_pool_scales() {
    let (_tmp, dir) = sessions_dir();
    let pool = |replicas: u32| {
        format!(
            "apiVersion: sessionlet.dev/v1alpha1\nkind: Pool\nmetadata:\n  name: crew\nspec:\n  replicas: {replicas}\n  template:\n    spec:\n      command: [/bin/sleep, \"600\"]\n"
        )
    };
    write_file(&dir.join("crew.yaml"), &pool(1));
    let _c = Controller::start(&dir, &[]);
    wait_status(&dir, "crew", "one ready replica", |s| {
        s["status"]["readyReplicas"] == 1
    });
    wait_api(&dir);
    let (mut child, rx) = get_w(&dir);
    let mut seen = Vec::new();
    wait_line(&rx, &mut seen, "the table", |l| l.starts_with("NAME"));
    // Scaling the pool changes its counts: a `pool/crew` line says so.
    write_file(&dir.join("crew.yaml"), &pool(2));
    wait_line(&rx, &mut seen, "pool/crew READY 2/2", |l| {
        l.starts_with("pool/crew") && l.contains("READY 2/2")
    });
    interrupt(&mut child);
}
