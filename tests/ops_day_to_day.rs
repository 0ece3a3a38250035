//! Operating sessionlet day to day (issue 12): the bugs a user meets in
//! daily operation, each through the real binary.

mod common;
use common::*;

use std::os::fd::OwnedFd;
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

/// Runs `sessionlet ARGS...` with its stdout a pipe nobody reads any more
/// (the read end is closed before it starts, as after `| head` has exited).
fn cli_into_closed_pipe(args: &[&str]) -> Output {
    let (read, write): (OwnedFd, OwnedFd) = nix::unistd::pipe().expect("pipe");
    drop(read);
    Command::new(bin())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::from(write))
        .stderr(Stdio::piped())
        .output()
        .expect("run sessionlet")
}

// ---------------------------------------------------------------------------
// Bug 6: future times

#[test]
fn describe_says_in_for_a_time_ahead() {
    let (_tmp, dir) = sessions_dir();
    write_file(
        &dir.join("later.yaml"),
        &session(
            "later",
            "command: [/bin/sh, -c, 'exit 1']\nbackoff: {initialDelay: 1h, maxDelay: 1h}",
        ),
    );
    let _c = Controller::start(&dir, &[]);
    wait_status(&dir, "later", "Recovering with a restart due", |s| {
        s["status"]["phase"] == "Recovering" && s["status"]["nextRestartAt"].is_string()
    });
    let out = cli(&["describe", "later", "--dir", arg(&dir)]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("Next restart:"))
        .unwrap_or_else(|| panic!("no Next restart line:\n{text}"));
    assert!(line.contains("(in "), "a time ahead reads `in ...`: {line}");
    assert!(!line.contains("ago"), "{line}");
}

// ---------------------------------------------------------------------------
// Bug 7: a closed stdout

#[test]
fn every_reading_command_ends_quietly_on_a_closed_stdout() {
    let (_tmp, dir) = sessions_dir();
    write_file(
        &dir.join("chatty.yaml"),
        &session(
            "chatty",
            "command: [/bin/sh, -c, 'for i in 1 2 3 4 5; do echo line $i; done']",
        ),
    );
    write_file(&dir.join("bad.yaml"), "kind: Nope\n");
    let _c = Controller::start(&dir, &[]);
    wait_phase(&dir, "chatty", "Completed");
    let d = arg(&dir);
    for args in [
        vec!["describe", "chatty", "--dir", d],
        vec!["get", "--dir", d],
        vec!["get", "--dir", d, "-o", "wide"],
        vec!["get", "--dir", d, "-o", "json"],
        vec!["get", "--dir", d, "-o", "yaml"],
        vec!["logs", "chatty", "--dir", d],
        vec!["logs", "chatty", "--dir", d, "--tail", "2"],
        vec!["validate", d],
        vec!["validate", "-o", "json", d],
    ] {
        let out = cli_into_closed_pipe(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        // Status 0, as `ls | head`: the reader has seen enough.
        assert_eq!(out.status.code(), Some(0), "sessionlet {args:?}: {stderr}");
        assert!(
            !stderr.contains("panicked") && !stderr.contains("error"),
            "sessionlet {args:?} is quiet about the closed pipe: {stderr}"
        );
    }
}

// ---------------------------------------------------------------------------
// Bug 4: --keep-sessions and Ctrl-C

#[test]
fn ctrl_c_drains_even_with_keep_sessions() {
    let (_tmp, dir) = sessions_dir();
    let _keeper = KeeperGuard(dir.clone());
    write_file(
        &dir.join("worker.yaml"),
        &session("worker", "command: [sleep, '1000']"),
    );
    let mut c = Controller::start(&dir, &["--keep-sessions"]);
    let s = wait_status(&dir, "worker", "Running with a pid", |s| {
        s["status"]["phase"] == "Running" && s["status"]["pid"].is_u64()
    });
    let pid = s["status"]["pid"].as_u64().expect("pid") as u32;
    c.signal(nix::sys::signal::Signal::SIGINT);
    let code = c.wait();
    assert_eq!(code.code(), Some(0), "{code:?}\n{}", c.log());
    // The drain stopped the session and wrote its final status before the exit.
    assert!(!alive(pid), "Ctrl-C stopped the session (pid {pid})");
    let st = status(&dir, "worker").expect("a final status");
    assert_ne!(st["status"]["phase"], "Running", "{st}");
}
