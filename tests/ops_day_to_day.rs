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

// ---------------------------------------------------------------------------
// Bugs 1 and 2: who holds a name

use serde_json::Value;

/// Waits for `STEM` to be Running and returns its pid.
fn running_pid(dir: &Path, stem: &str) -> u32 {
    let s = wait_status(dir, stem, "Running with a pid", |s| {
        s["status"]["phase"] == "Running" && s["status"]["pid"].is_u64()
    });
    s["status"]["pid"].as_u64().expect("pid") as u32
}

/// The SessionStatus documents of `STEM.status.yaml`, by name.
fn session_docs(dir: &Path, stem: &str) -> std::collections::BTreeMap<String, Value> {
    status_docs(&dir.join(format!("{stem}.status.yaml")))
        .unwrap_or_default()
        .into_iter()
        .filter(|d| d["kind"] == "SessionStatus")
        .filter_map(|d| Some((d["metadata"]["name"].as_str()?.to_string(), d)))
        .collect()
}

/// A Pool of `replicas` sleepers.
fn pool(name: &str, replicas: u32) -> String {
    format!(
        "apiVersion: sessionlet.dev/v1alpha1\nkind: Pool\nmetadata:\n  name: {name}\nspec:\n  replicas: {replicas}\n  template:\n    spec:\n      command: [sleep, '1000']\n"
    )
}

/// `validate DIR`'s problem lines.
fn validate(dir: &Path) -> (Option<i32>, Vec<String>) {
    let out = cli(&["validate", arg(dir)]);
    let lines = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    (out.status.code(), lines)
}

#[test]
fn a_new_file_cannot_take_over_a_running_sessions_name() {
    let (_tmp, dir) = sessions_dir();
    write_file(
        &dir.join("zz-server.yaml"),
        &session("api", "command: [sleep, '1001']"),
    );
    let mut c = Controller::start(&dir, &[]);
    let pid = running_pid(&dir, "zz-server");
    // A file that sorts first declares the same name.
    write_file(
        &dir.join("aa-new.yaml"),
        &session("api", "command: [sleep, '1002']"),
    );
    let new = wait_phase(&dir, "aa-new", "Invalid");
    assert_eq!(new["status"]["reason"], "DuplicateName", "{new:#}");
    let message = new["status"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("zz-server.yaml"),
        "names the holder: {message}"
    );
    // The statuses of one pass: the server was not touched.
    let server = status(&dir, "zz-server").expect("the server's status");
    assert_eq!(server["status"]["phase"], "Running", "{server:#}");
    assert_eq!(server["status"]["pid"], pid, "{server:#}");
    assert!(alive(pid));
    // validate blames the file that would lose, as the controller does.
    let (code, lines) = validate(&dir);
    assert_eq!(code, Some(1), "{lines:?}");
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].starts_with(&format!("{}:", dir.join("aa-new.yaml").display())),
        "{lines:?}"
    );
    assert!(lines[0].contains("zz-server.yaml"), "{lines:?}");

    // A new controller reads who holds the name from the status files.
    let code = c.stop();
    assert!(code.success(), "{code:?}");
    let mut c2 = Controller::start(&dir, &[]);
    let pid2 = running_pid(&dir, "zz-server");
    let new = wait_phase(&dir, "aa-new", "Invalid");
    assert_eq!(new["status"]["reason"], "DuplicateName", "{new:#}");
    let cmd = std::fs::read(format!("/proc/{pid2}/cmdline")).unwrap_or_default();
    assert!(
        String::from_utf8_lossy(&cmd).contains("1001"),
        "the holder's spec runs"
    );
    c2.stop();
}

#[test]
fn a_session_named_like_a_pool_replica_is_a_duplicate() {
    let (_tmp, dir) = sessions_dir();
    write_file(&dir.join("web.yaml"), &pool("web", 2));
    write_file(
        &dir.join("zz-web-0.yaml"),
        &session("web-0", "command: [sleep, '1003']"),
    );
    // validate: the clash, with file:line:col of both.
    let (code, lines) = validate(&dir);
    assert_eq!(code, Some(1), "{lines:?}");
    assert_eq!(lines.len(), 1, "{lines:?}");
    let at = format!("{}:4:9: error: ", dir.join("zz-web-0.yaml").display());
    assert!(lines[0].starts_with(&at), "{lines:?}");
    assert!(
        lines[0].contains(&format!("{}:4:9", dir.join("web.yaml").display())),
        "{lines:?}"
    );
    let _c = Controller::start(&dir, &[]);
    let dup = wait_phase(&dir, "zz-web-0", "Invalid");
    assert_eq!(dup["status"]["reason"], "DuplicateName", "{dup:#}");
    wait_for("both replicas running", || {
        let docs = session_docs(&dir, "web");
        (["web-0", "web-1"].iter().all(|n| {
            docs.get(*n)
                .is_some_and(|d| d["status"]["phase"] == "Running")
        }))
        .then_some(())
    });
}

#[test]
fn a_pool_added_beside_a_running_session_leaves_it_its_name() {
    let (_tmp, dir) = sessions_dir();
    write_file(
        &dir.join("zz-web-0.yaml"),
        &session("web-0", "command: [sleep, '1004']"),
    );
    let _c = Controller::start(&dir, &[]);
    let pid = running_pid(&dir, "zz-web-0");
    write_file(&dir.join("web.yaml"), &pool("web", 2));
    let docs = wait_for("the pool's statuses", || {
        let docs = session_docs(&dir, "web");
        (docs
            .get("web-1")
            .is_some_and(|d| d["status"]["phase"] == "Running")
            && docs.contains_key("web-0"))
        .then_some(docs)
    });
    let replica = &docs["web-0"];
    assert_eq!(replica["status"]["phase"], "Invalid", "{replica:#}");
    assert_eq!(replica["status"]["reason"], "DuplicateName", "{replica:#}");
    assert!(
        replica["status"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("zz-web-0.yaml"),
        "{replica:#}"
    );
    let s = status(&dir, "zz-web-0").expect("status");
    assert_eq!(s["status"]["pid"], pid, "{s:#}");
    assert!(alive(pid));
}

#[test]
fn pool_replica_names_over_63_characters_are_refused_up_front() {
    let (_tmp, dir) = sessions_dir();
    let name = "p".repeat(62);
    write_file(&dir.join("long.yaml"), &pool(&name, 10));
    let (code, lines) = validate(&dir);
    assert_eq!(code, Some(1), "{lines:?}");
    assert_eq!(lines.len(), 1, "{lines:?}");
    // spec.replicas is on line 6, column 3.
    assert!(
        lines[0].starts_with(&format!(
            "{}:6:3: error: spec.replicas: ",
            dir.join("long.yaml").display()
        )),
        "{lines:?}"
    );
    assert!(lines[0].contains(&format!("{name}-9")), "{lines:?}");
    let _c = Controller::start(&dir, &[]);
    let s = wait_phase(&dir, "long", "Invalid");
    assert_eq!(s["status"]["reason"], "ManifestInvalid", "{s:#}");
    assert!(s.to_string().contains("63-character"), "{s:#}");
}

// ---------------------------------------------------------------------------
// Bug 8: a drain is not a restart

#[test]
fn a_drain_and_a_new_start_do_not_count_a_restart() {
    let (_tmp, dir) = sessions_dir();
    write_file(
        &dir.join("steady.yaml"),
        &session("steady", "command: [sleep, '1005']"),
    );
    let mut c = Controller::start(&dir, &[]);
    running_pid(&dir, "steady");
    assert!(c.stop().success());
    let drained = status(&dir, "steady").expect("the final status");
    assert_eq!(drained["status"]["restarts"], 0, "{drained:#}");
    let mut c2 = Controller::start(&dir, &[]);
    let pid = running_pid(&dir, "steady");
    let s = status(&dir, "steady").expect("status");
    assert_eq!(s["status"]["restarts"], 0, "never failed: {s:#}");
    let out = cli(&["get", "--dir", arg(&dir)]);
    let table = String::from_utf8_lossy(&out.stdout);
    let row: Vec<&str> = table
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|cols| cols.first() == Some(&"steady"))
        .unwrap_or_else(|| panic!("no row for steady:\n{table}"));
    assert_eq!(row[2], "0", "RESTARTS:\n{table}");
    assert_eq!(row[4], pid.to_string(), "{table}");
    c2.stop();
}

// ---------------------------------------------------------------------------
// Bug 5: the analysis matches the reason

#[test]
fn a_process_gone_while_no_controller_ran_is_not_analysed_as_a_deliberate_stop() {
    let (_tmp, dir) = sessions_dir();
    let _guard = KeeperGuard(dir.clone());
    write_file(
        &dir.join("lost.yaml"),
        &session("lost", "command: [sleep, '1007']"),
    );
    let mut c1 = Controller::start(&dir, &[]);
    let pid = running_pid(&dir, "lost");
    // The controller, then the keeper and the session, die without a word.
    c1.kill();
    let keeper = wait_for("the keeper", || keeper_of(&dir));
    kill_keeper_tree_silently(keeper);
    wait_for("the session to be gone", || (!alive(pid)).then_some(()));
    wait_for("the keeper to be gone", || (!alive(keeper)).then_some(()));
    let _c2 = Controller::start(&dir, &[]);
    let s = wait_status(&dir, "lost", "the vanished attempt analysed", |s| {
        s["status"]["lastExit"]["reason"] == "ExitedWhileAway"
            && s["status"]["lastExit"]["analysis"].is_object()
    });
    let a = &s["status"]["lastExit"]["analysis"];
    assert_eq!(a["type"], "Unknown", "{a:#}");
    let text = a.to_string();
    assert!(!text.contains("on purpose"), "{a:#}");
    assert!(!text.contains("Nothing is wrong"), "{a:#}");
    assert!(text.contains("no controller was watching"), "{a:#}");
}

// ---------------------------------------------------------------------------
// Seeing what is going on

#[test]
fn get_and_describe_warn_when_no_controller_runs_and_rows_sort_naturally() {
    let (_tmp, dir) = sessions_dir();
    for name in ["job-10", "job-2", "job-1"] {
        write_file(
            &dir.join(format!("{name}.yaml")),
            &session(name, "command: [/bin/sh, -c, 'echo done']"),
        );
    }
    let mut c = Controller::start(&dir, &[]);
    for name in ["job-10", "job-2", "job-1"] {
        wait_phase(&dir, name, "Completed");
    }
    let d = arg(&dir);
    let running = cli(&["get", "--dir", d]);
    assert_eq!(running.status.code(), Some(0), "{running:?}");
    assert_eq!(
        String::from_utf8_lossy(&running.stderr),
        "",
        "no warning while a controller runs"
    );
    let names: Vec<String> = String::from_utf8_lossy(&running.stdout)
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect();
    assert_eq!(names, ["job-1", "job-2", "job-10"], "natural order");
    assert!(c.stop().success());
    for args in [
        vec!["get", "--dir", d],
        vec!["describe", "job-2", "--dir", d],
    ] {
        let out = cli(&args);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(
            stderr.starts_with("warning: no controller is running on "),
            "{args:?}: {stderr}"
        );
        assert!(!out.stdout.is_empty(), "the statuses are still shown");
    }
}
