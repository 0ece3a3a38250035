//! Operating sessionlet day to day (issue 12): what `get` shows, and the
//! decisions behind it, through the real binary.

mod common;
use common::*;

use std::io::{Read, Write};
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

// ---------------------------------------------------------------------------
// `get`: readable phases

/// `get --dir DIR ARGS...`: exit code, stdout, stderr.
fn get(dir: &Path, extra: &[&str]) -> (Option<i32>, String, String) {
    let mut args = vec!["get", "--dir", arg(dir)];
    args.extend_from_slice(extra);
    let out = cli(&args);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The row of `name` in a `get` table.
fn row<'a>(table: &'a str, name: &str) -> &'a str {
    table
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .unwrap_or_else(|| panic!("no row {name}:\n{table}"))
}

/// The names in the first column of every row but the headers.
fn names(table: &str) -> Vec<String> {
    table
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| *n != "NAME" && *n != "POOL")
        .map(str::to_string)
        .collect()
}

#[test]
fn a_session_being_stopped_is_terminating_with_its_kill_deadline() {
    let (_tmp, dir) = sessions_dir();
    // It ignores its stop signal: the stop lasts the whole grace period.
    let body = "command: [/bin/sh, -c, 'trap \"\" USR1; echo ready; while :; do sleep 0.2; done']\nstopSignal: SIGUSR1\nterminationGracePeriod: 1h";
    write_file(&dir.join("stubborn.yaml"), &session("stubborn", body));
    let _c = Controller::start(&dir, &[]);
    let pid = wait_phase(&dir, "stubborn", "Running")["status"]["pid"]
        .as_u64()
        .expect("pid") as i32;
    write_file(
        &dir.join("stubborn.yaml"),
        &session("stubborn", &format!("{body}\nsuspend: true")),
    );
    let s = wait_status(&dir, "stubborn", "a stop under way", |s| {
        s["status"]["killAt"].is_string()
    });
    assert_eq!(
        s["status"]["phase"], "Running",
        "the status phase stays: {s:#?}"
    );
    let (code, out, _) = get(&dir, &[]);
    assert_eq!(code, Some(0));
    let r = row(&out, "stubborn");
    assert!(r.contains("Terminating (kill in "), "{out}");
    assert!(r.contains("Suspended"), "why it stops: {out}");
    // End it (its stop would last an hour).
    let _ = nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    );
    wait_phase(&dir, "stubborn", "Cancelled");
}

#[test]
fn a_crash_loop_shows_when_the_next_attempt_is_due() {
    let (_tmp, dir) = sessions_dir();
    write_file(
        &dir.join("loop.yaml"),
        &session(
            "loop",
            "command: [/bin/sh, -c, 'exit 3']\nbackoff: {initialDelay: 1h, maxDelay: 1h}",
        ),
    );
    let _c = Controller::start(&dir, &[]);
    wait_status(&dir, "loop", "Recovering", |s| {
        s["status"]["phase"] == "Recovering"
    });
    let (_, out, _) = get(&dir, &[]);
    let r = row(&out, "loop");
    assert!(r.contains("Recovering (next in "), "{out}");
    assert!(r.contains("m)"), "an hour ahead reads in minutes: {out}");
    assert!(r.contains("Error"), "{out}");
}

#[test]
fn get_takes_names_and_label_selectors() {
    let (_tmp, dir) = sessions_dir();
    let labelled = |name: &str, labels: &str| {
        format!("apiVersion: sessionlet.dev/v1alpha1\nkind: Session\nmetadata:\n  name: {name}\n  labels: {{{labels}}}\nspec:\n  command: [/bin/sh, -c, 'while :; do sleep 0.2; done']\n  terminationGracePeriod: 2s\n")
    };
    write_file(&dir.join("a.yaml"), &labelled("a", "tier: web, env: prod"));
    write_file(&dir.join("b.yaml"), &labelled("b", "tier: db"));
    write_file(
        &dir.join("p.yaml"),
        "apiVersion: sessionlet.dev/v1alpha1\nkind: Pool\nmetadata:\n  name: p\nspec:\n  replicas: 2\n  template:\n    metadata:\n      labels: {tier: web}\n    spec:\n      command: [/bin/sh, -c, 'while :; do sleep 0.2; done']\n      terminationGracePeriod: 2s\n",
    );
    let _c = Controller::start(&dir, &[]);
    for stem in ["a", "b"] {
        wait_phase(&dir, stem, "Running");
    }
    wait_status(&dir, "p", "two replicas with their labels", |_| {
        status_docs(&dir.join("p.status.yaml")).is_some_and(|docs| {
            docs.iter()
                .filter(|d| {
                    d["kind"] == "SessionStatus" && d["metadata"]["labels"]["tier"] == "web"
                })
                .count()
                == 2
        })
    });

    let (code, out, _) = get(&dir, &["a"]);
    assert_eq!(code, Some(0));
    assert_eq!(names(&out), ["a"], "{out}");
    let (_, out, _) = get(&dir, &["b", "a"]);
    assert_eq!(names(&out), ["a", "b"], "{out}");
    // A pool's name shows the pool and its replicas.
    let (_, out, _) = get(&dir, &["p"]);
    assert_eq!(names(&out), ["p-0", "p-1", "p"], "{out}");
    let (_, out, _) = get(&dir, &["-l", "tier=web"]);
    assert_eq!(names(&out), ["a", "p-0", "p-1"], "{out}");
    let (_, out, _) = get(&dir, &["-l", "tier=web,env=prod"]);
    assert_eq!(names(&out), ["a"], "{out}");
    let (_, out, _) = get(&dir, &["-l", "tier!=web"]);
    assert_eq!(names(&out), ["b", "p"], "{out}");
    let (_, json, _) = get(&dir, &["-l", "tier=db", "-o", "json"]);
    let v: serde_json::Value = serde_json::from_str(&json).expect("JSON");
    assert_eq!(v.as_array().map(Vec::len), Some(1), "{json}");
    // An unknown name is an error, as kubectl's NotFound.
    let (code, _, err) = get(&dir, &["nosuch"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("nosuch"), "{err}");
    let (code, _, err) = get(&dir, &["-l", "=x"]);
    assert_eq!(code, Some(2), "{err}");
}

// ---------------------------------------------------------------------------
// A broken manifest on a running session is visible everywhere

/// A tiny HTTP/1.1 GET: the body (chunks joined).
fn http_body(addr: &str, path: &str) -> String {
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .expect("timeout");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut raw = String::new();
    stream.read_to_string(&mut raw).expect("read");
    let (head, mut body) = raw.split_once("\r\n\r\n").expect("a response");
    if !head.to_ascii_lowercase().contains("chunked") {
        return body.to_string();
    }
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

#[test]
fn a_broken_manifest_on_a_running_session_shows_in_get_the_log_and_the_metrics() {
    let (_tmp, dir) = sessions_dir();
    write_file(
        &dir.join("svc.yaml"),
        &session(
            "svc",
            "command: [/bin/sh, -c, 'while :; do sleep 0.2; done']\nterminationGracePeriod: 2s",
        ),
    );
    let c = Controller::start(&dir, &["--metrics-addr", "127.0.0.1:0"]);
    let pid = wait_phase(&dir, "svc", "Running")["status"]["pid"].clone();
    let addr = wait_for("the metrics address in the log", || {
        let log = c.log();
        let start = log.find("metrics on http://")? + "metrics on http://".len();
        let end = log[start..].find("/metrics")?;
        Some(log[start..start + end].to_string())
    });
    wait_for("no invalid manifest counted", || {
        http_body(&addr, "/metrics")
            .lines()
            .any(|l| l == "sessionlet_invalid_manifests 0")
            .then_some(())
    });
    let (_, out, _) = get(&dir, &[]);
    assert!(!row(&out, "svc").contains("ManifestInvalid"), "{out}");

    write_file(
        &dir.join("svc.yaml"),
        &session("svc", "command: [/bin/sh, -c, 'sleep 1']\ntimeout: 30"),
    );
    let s = wait_status(&dir, "svc", "the manifest marked invalid", |s| {
        s["status"]["errors"]
            .as_array()
            .is_some_and(|e| !e.is_empty())
    });
    assert_eq!(s["status"]["pid"], pid, "the last good spec keeps running");
    let (_, out, _) = get(&dir, &[]);
    let r = row(&out, "svc");
    assert!(
        r.contains("Running") && r.contains("ManifestInvalid"),
        "{out}"
    );
    wait_for("one invalid manifest counted", || {
        http_body(&addr, "/metrics")
            .lines()
            .any(|l| l == "sessionlet_invalid_manifests 1")
            .then_some(())
    });
    let log = c.log();
    let line = log
        .lines()
        .find(|l| l.contains("manifest invalid"))
        .unwrap_or_else(|| panic!("no log line:\n{log}"));
    assert!(line.contains("svc.yaml:"), "names file:line:col: {line}");
    assert!(
        line.split("svc.yaml:")
            .nth(1)
            .is_some_and(|rest| rest.split(':').take(2).all(|n| n.parse::<u32>().is_ok())),
        "file:line:col: {line}"
    );
    assert!(line.contains("last good spec"), "{line}");
}

// ---------------------------------------------------------------------------
// `--dir` defaults to $SESSIONLET_DIR, else the current directory

/// `sessionlet ARGS...` run in `cwd`, with `SESSIONLET_DIR` set to `env` (or unset).
fn cli_in(cwd: &Path, env: Option<&Path>, args: &[&str]) -> Output {
    let mut cmd = Command::new(bin());
    cmd.args(args).current_dir(cwd).stdin(Stdio::null());
    match env {
        Some(d) => cmd.env("SESSIONLET_DIR", d),
        None => cmd.env_remove("SESSIONLET_DIR"),
    };
    cmd.output().expect("run sessionlet")
}

#[test]
fn dir_defaults_to_sessionlet_dir_else_the_current_directory() {
    let (tmp, dir) = sessions_dir();
    write_file(
        &dir.join("here.yaml"),
        &session("here", "command: [/bin/true]\nrestartPolicy: Never"),
    );
    write_file(&dir.join("bad.yaml"), "kind: Nope\n");
    let elsewhere = tmp.path();
    // `run` in the directory, without --dir.
    let mut c = Command::new(bin())
        .args(["run", "--exit-when-done"])
        .current_dir(&dir)
        .env_remove("SESSIONLET_DIR")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start sessionlet run");
    let code = wait_for("run --exit-when-done to exit", || {
        c.try_wait().ok().flatten()
    });
    assert_eq!(code.code(), Some(1), "the invalid manifest counts");
    assert_eq!(phase(&dir, "here").as_deref(), Some("Completed"));

    for (cwd, env) in [(dir.as_path(), None), (elsewhere, Some(dir.as_path()))] {
        let out = cli_in(cwd, env, &["get"]);
        assert_eq!(out.status.code(), Some(0), "{out:?}");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("here"),
            "{cwd:?} {env:?}: {out:?}"
        );
        let out = cli_in(cwd, env, &["describe", "here"]);
        assert_eq!(out.status.code(), Some(0), "{out:?}");
        let out = cli_in(cwd, env, &["logs", "here"]);
        assert_eq!(out.status.code(), Some(0), "{out:?}");
        let out = cli_in(cwd, env, &["validate"]);
        assert_eq!(out.status.code(), Some(1), "bad.yaml is found: {out:?}");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("bad.yaml"),
            "{out:?}"
        );
        let out = cli_in(cwd, env, &["plan"]);
        assert_eq!(out.status.code(), Some(2), "bad.yaml is refused: {out:?}");
        let out = cli_in(cwd, env, &["down"]);
        assert_eq!(out.status.code(), Some(0), "{out:?}");
    }
    // Elsewhere without the variable: nothing there.
    let out = cli_in(elsewhere, None, &["get"]);
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("here"),
        "{out:?}"
    );
}
