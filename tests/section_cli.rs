//! The reading commands: `get`, `describe`, `logs`, and `--help` of every command.

mod common;
use common::*;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;

use serde_json::Value;

/// Runs `sessionlet ARGS...` to completion.
fn cli(args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run sessionlet")
}

/// The standard output of a command that must succeed.
fn cli_ok(args: &[&str]) -> String {
    let out = cli(args);
    assert!(
        out.status.success(),
        "sessionlet {args:?} failed with {:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

/// The directory as a command-line argument.
fn arg(dir: &Path) -> &str {
    dir.to_str().expect("UTF-8 temporary path")
}

/// The row of a table whose first column is `name`, split into columns.
fn row<'a>(table: &'a str, name: &str) -> Vec<&'a str> {
    table
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|cols| cols.first() == Some(&name))
        .unwrap_or_else(|| panic!("no row for {name} in:\n{table}"))
}

/// A completed session and a running one; returns the running one's pid.
fn completed_and_running(dir: &Path) -> u32 {
    write_file(
        &dir.join("done.yaml"),
        &session("done", "command: [/bin/sh, -c, 'echo finished']"),
    );
    write_file(
        &dir.join("live.yaml"),
        &session("live", "command: [sleep, '1000']"),
    );
    wait_phase(dir, "done", "Completed");
    let s = wait_status(dir, "live", "Running with a pid", |s| {
        s["status"]["phase"] == "Running" && s["status"]["pid"].is_u64()
    });
    s["status"]["pid"].as_u64().unwrap() as u32
}

/// Phases by session name, from `get -o json|yaml` documents.
fn phases(docs: &[Value]) -> std::collections::BTreeMap<String, String> {
    docs.iter()
        .map(|d| {
            (
                d["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                d["status"]["phase"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect()
}

// ---------------------------------------------------------------------------
// get

#[test]
fn get_prints_a_header_and_one_row_per_session() {
    let (_tmp, dir) = sessions_dir();
    let _c = Controller::start(&dir, &[]);
    let pid = completed_and_running(&dir);
    let out = cli_ok(&["get", "--dir", arg(&dir)]);
    let header: Vec<&str> = out
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        ["NAME", "PHASE", "RESTARTS", "AGE", "PID", "REASON"],
        "{out}"
    );
    assert_eq!(out.lines().count(), 3, "a header and two rows:\n{out}");
    let done = row(&out, "done");
    assert_eq!(done.len(), 6, "{out}");
    assert_eq!(
        (done[1], done[2], done[4], done[5]),
        ("Completed", "0", "-", "Completed"),
        "{out}"
    );
    let live = row(&out, "live");
    assert_eq!(live.len(), 6, "{out}");
    assert_eq!((live[1], live[2], live[5]), ("Running", "0", "-"), "{out}");
    assert_eq!(live[4], pid.to_string(), "{out}");
}

#[test]
fn get_output_json_parses_and_holds_the_phases() {
    let (_tmp, dir) = sessions_dir();
    let _c = Controller::start(&dir, &[]);
    completed_and_running(&dir);
    let out = cli_ok(&["get", "--dir", arg(&dir), "-o", "json"]);
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}):\n{out}"));
    let docs = v
        .as_array()
        .unwrap_or_else(|| panic!("not an array:\n{out}"));
    let p = phases(docs);
    assert_eq!(
        p.get("done").map(String::as_str),
        Some("Completed"),
        "{out}"
    );
    assert_eq!(p.get("live").map(String::as_str), Some("Running"), "{out}");
    assert!(docs.iter().all(|d| d["kind"] == "SessionStatus"), "{out}");
}

#[test]
fn get_output_yaml_parses_and_holds_the_phases() {
    let (_tmp, dir) = sessions_dir();
    let _c = Controller::start(&dir, &[]);
    completed_and_running(&dir);
    let out = cli_ok(&["get", "--dir", arg(&dir), "-o", "yaml"]);
    let parsed: Vec<Value> = sessionlet::manifest::codec::from_yaml_multi(&out)
        .unwrap_or_else(|e| panic!("not YAML ({e}):\n{out}"));
    // One document per status, or one document holding a list of them.
    let docs: Vec<Value> = match parsed.as_slice() {
        [Value::Array(items)] => items.clone(),
        _ => parsed,
    };
    let p = phases(&docs);
    assert_eq!(
        p.get("done").map(String::as_str),
        Some("Completed"),
        "{out}"
    );
    assert_eq!(p.get("live").map(String::as_str), Some("Running"), "{out}");
}

#[test]
fn get_output_wide_adds_columns_and_the_manifest() {
    let (_tmp, dir) = sessions_dir();
    let _c = Controller::start(&dir, &[]);
    completed_and_running(&dir);
    let out = cli_ok(&["get", "--dir", arg(&dir), "-o", "wide"]);
    let header: Vec<&str> = out
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        &header[..6],
        ["NAME", "PHASE", "RESTARTS", "AGE", "PID", "REASON"],
        "{out}"
    );
    assert!(header.len() > 6, "more columns than the default:\n{out}");
    assert_eq!(header.last(), Some(&"MANIFEST"), "{out}");
    assert_eq!(row(&out, "done").last(), Some(&"done.yaml"), "{out}");
    assert_eq!(row(&out, "live").last(), Some(&"live.yaml"), "{out}");
    assert_eq!(
        row(&out, "done").len(),
        header.len(),
        "every column filled:\n{out}"
    );
}

// ---------------------------------------------------------------------------
// describe

#[test]
fn describe_shows_the_phase_last_exit_crash_dump_and_log_paths() {
    let (_tmp, dir) = sessions_dir();
    write_file(
        &dir.join("broken.yaml"),
        &session(
            "broken",
            "command: [/bin/sh, -c, 'echo out-line; echo err-line >&2; exit 3']\nmaxRetries: 0",
        ),
    );
    let _c = Controller::start(&dir, &[]);
    let s = wait_phase(&dir, "broken", "Failed");
    let out = cli_ok(&["describe", "broken", "--dir", arg(&dir)]);
    let field = |name: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
            .unwrap_or_else(|| panic!("no {name:?} line in:\n{out}"))
    };
    assert_eq!(field("Name:"), "broken", "{out}");
    assert_eq!(field("Phase:"), "Failed", "{out}");
    assert_eq!(field("Reason:"), "Error", "{out}");
    assert!(out.contains("Last exit:"), "{out}");
    assert!(out.contains("exit code 3"), "{out}");
    let dump = s["status"]["lastExit"]["crashDump"].as_str().unwrap();
    assert!(
        out.contains(&format!("crash dump: {dump}")),
        "the last exit's dump:\n{out}"
    );
    let listed: Vec<&str> = out
        .lines()
        .skip_while(|l| !l.starts_with("Crash dumps:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .map(str::trim)
        .collect();
    assert_eq!(listed.len(), 1, "the crash dumps are listed:\n{out}");
    assert!(Path::new(listed[0]).is_file(), "a real path: {}", listed[0]);
    let stdout = field("  stdout:");
    let stderr = field("  stderr:");
    assert_eq!(
        std::fs::read_to_string(stdout).unwrap(),
        "out-line\n",
        "{out}"
    );
    assert_eq!(
        std::fs::read_to_string(stderr).unwrap(),
        "err-line\n",
        "{out}"
    );
}

#[test]
fn describe_and_logs_of_an_unknown_name_exit_one() {
    let (_tmp, dir) = sessions_dir();
    write_file(
        &dir.join("known.yaml"),
        &session("known", "command: [/bin/sh, -c, 'echo hi']"),
    );
    let _c = Controller::start(&dir, &[]);
    wait_phase(&dir, "known", "Completed");
    for cmd in ["describe", "logs"] {
        let out = cli(&[cmd, "nosuchsession", "--dir", arg(&dir)]);
        assert_eq!(out.status.code(), Some(1), "{cmd}: {out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("nosuchsession"),
            "{cmd} names what it did not find: {err}"
        );
    }
}

// ---------------------------------------------------------------------------
// logs

#[test]
fn logs_prints_stdout_stderr_and_the_tail() {
    let (_tmp, dir) = sessions_dir();
    write_file(
        &dir.join("talker.yaml"),
        &session("talker", "command: [/bin/sh, -c, 'for i in one two three four five; do echo $i; done; echo oops >&2']"),
    );
    let _c = Controller::start(&dir, &[]);
    wait_phase(&dir, "talker", "Completed");
    let d = arg(&dir);
    assert_eq!(
        cli_ok(&["logs", "talker", "--dir", d]),
        "one\ntwo\nthree\nfour\nfive\n"
    );
    assert_eq!(
        cli_ok(&["logs", "talker", "--dir", d, "--stderr"]),
        "oops\n"
    );
    assert_eq!(
        cli_ok(&["logs", "talker", "--dir", d, "--tail", "2"]),
        "four\nfive\n"
    );
}

#[test]
fn logs_previous_prints_the_attempt_before_a_restart() {
    let (tmp, dir) = sessions_dir();
    let counter = tmp.path().join("runs");
    write_file(
        &dir.join("again.yaml"),
        &session(
            "again",
            &format!(
                "command: [/bin/sh, -c, 'n=$(cat {c} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {c}; echo \"run $n\"; if [ $n -ge 2 ]; then exec sleep 1000; fi; exit 1']\nbackoff: {{initialDelay: 100ms}}",
                c = counter.display()
            ),
        ),
    );
    let _c = Controller::start(&dir, &[]);
    let s = wait_status(&dir, "again", "the second attempt running", |s| {
        s["status"]["attempt"] == 2 && s["status"]["pid"].is_u64()
    });
    let current = dir.join(s["status"]["logs"]["stdout"].as_str().unwrap());
    wait_for("the second attempt's output", || {
        (std::fs::read_to_string(&current).ok()? == "run 2\n").then_some(())
    });
    let d = arg(&dir);
    assert_eq!(cli_ok(&["logs", "again", "--dir", d]), "run 2\n");
    assert_eq!(
        cli_ok(&["logs", "again", "--dir", d, "--previous"]),
        "run 1\n"
    );
}

#[test]
fn logs_follow_prints_output_appended_later() {
    let (tmp, dir) = sessions_dir();
    let go = tmp.path().join("go");
    write_file(
        &dir.join("later.yaml"),
        &session(
            "later",
            &format!(
                "command: [/bin/sh, -c, 'echo first-line; while [ ! -f {g} ]; do sleep 0.1; done; echo second-line']",
                g = go.display()
            ),
        ),
    );
    let _c = Controller::start(&dir, &[]);
    wait_status(&dir, "later", "output files", |s| {
        s["status"]["logs"]["stdout"].is_string()
    });
    let mut follower = Command::new(bin())
        .args(["logs", "later", "--dir", arg(&dir), "-f"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start logs -f");
    let stdout = follower.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let mut wait_line = |want: &str| {
        wait_for(
            &format!("logs -f to print {want:?} (so far {seen:?})"),
            || {
                while let Ok(l) = rx.try_recv() {
                    seen.push(l);
                }
                seen.iter().any(|l| l == want).then_some(())
            },
        )
    };
    wait_line("first-line");
    // Only now does the session write its second line.
    std::fs::write(&go, "").unwrap();
    wait_line("second-line");
    let _ = follower.kill();
    let _ = follower.wait();
}

// ---------------------------------------------------------------------------
// help

#[test]
fn every_subcommand_has_help_with_an_example() {
    for sub in [
        "run", "get", "describe", "logs", "validate", "schema", "down", "plan",
    ] {
        let out = cli(&[sub, "--help"]);
        assert!(out.status.success(), "{sub} --help: {out:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("Example"),
            "{sub} --help has an example:\n{text}"
        );
    }
}
