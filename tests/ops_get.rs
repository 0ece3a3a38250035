//! Operating sessionlet day to day (issue 12): what `get` shows, and the
//! decisions behind it, through the real binary.

mod common;
use common::*;

use std::path::Path;
use std::process::{Command, Output, Stdio};

/// Runs `sessionlet ARGS...` to completion.
#[allow(dead_code)]
fn cli(args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run sessionlet")
}

/// The directory as a command-line argument.
#[allow(dead_code)]
fn arg(dir: &Path) -> &str {
    dir.to_str().expect("UTF-8 temporary path")
}

// ---------------------------------------------------------------------------
// A CommandNotFound that cannot succeed is not retried

#[test]
fn a_command_missing_from_path_or_at_an_absolute_path_fails_at_once() {
    let (_tmp, dir) = sessions_dir();
    write_file(
        &dir.join("ghost.yaml"),
        &session("ghost", "command: [sessionlet-no-such-command-xyz]"),
    );
    write_file(
        &dir.join("abs.yaml"),
        &session("abs", "command: [/nonexistent/sessionlet-tool]"),
    );
    let _c = Controller::start(&dir, &[]);
    for stem in ["ghost", "abs"] {
        let s = wait_phase(&dir, stem, "Failed");
        assert_eq!(s["status"]["reason"], "CommandNotFound", "{s:#?}");
        assert_eq!(s["status"]["attempt"], 1, "one attempt only: {s:#?}");
        let msg = s["status"]["message"].as_str().unwrap_or_default();
        assert!(msg.contains("not retried"), "says why: {msg}");
        assert!(s["status"]["nextRestartAt"].is_null(), "{s:#?}");
    }
    // Still one attempt after later passes (proof of a pass: another session ran).
    write_file(
        &dir.join("other.yaml"),
        &session("other", "command: [/bin/true]\nrestartPolicy: Never"),
    );
    wait_phase(&dir, "other", "Completed");
    assert_eq!(
        status(&dir, "ghost").expect("status")["status"]["attempt"],
        1
    );
    // Fixing the manifest starts a fresh run.
    write_file(
        &dir.join("ghost.yaml"),
        &session("ghost", "command: [/bin/true]\nrestartPolicy: Never"),
    );
    wait_phase(&dir, "ghost", "Completed");
}
