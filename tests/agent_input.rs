//! Input to a running session end to end: an `agent.input: stream` session
//! (the REAL Claude Code CLI against the fake Messages API on 127.0.0.1)
//! answers its prompt, keeps running, survives a SIGKILL of the controller
//! (the keeper holds its stdin pipe), receives a second message with
//! `sessionlet send` and answers it too, then ends after `closeAfterIdle`.
//!
//! Without the CLI the tests print "SKIPPED: no claude binary" and pass.

#[path = "common/agent_sandbox.rs"]
mod agent_sandbox;
#[path = "common/claude.rs"]
mod claude;
mod common;
#[path = "common/fake_api.rs"]
mod fake_api;

use std::process::Command;

use agent_sandbox::{agent_yaml, q, wait_done, wait_status, Sandbox, AGENT_DEADLINE};
use common::{alive, wait_for_within, KeeperGuard};
use fake_api::{FakeApi, Scenario};

fn results_in(sb: &Sandbox) -> usize {
    std::fs::read_to_string(sb.stdout_log("chat", 1))
        .map(|t| {
            t.lines()
                .filter(|l| l.contains(r#""type":"result""#))
                .count()
        })
        .unwrap_or(0)
}

fn send(sb: &Sandbox, text: &str) -> std::process::Output {
    Command::new(common::bin())
        .args(["send", "--dir"])
        .arg(&sb.dir)
        .args(["chat", text])
        .output()
        .expect("sessionlet send")
}

#[test]
fn a_stream_session_takes_a_second_message_across_a_controller_restart() {
    let bin =
        require_claude!("a_stream_session_takes_a_second_message_across_a_controller_restart");
    let fake = FakeApi::start(Scenario::Text);
    let sb = Sandbox::new();
    let _keeper = KeeperGuard(sb.dir.clone());
    let spec = format!(
        "{}{}workingDir: {}\nrestartPolicy: Never\n",
        agent_yaml(
            &bin,
            "first message (marker a1)",
            "input: stream\ncloseAfterIdle: 20s"
        ),
        sb.env_yaml(&fake.base_url()),
        q(&sb.work.display().to_string()),
    );
    sb.write("chat", &spec);
    let mut c = sb.controller(&[]);

    // The first turn is answered and the session keeps running.
    wait_for_within(AGENT_DEADLINE, "the first answer", || {
        (results_in(&sb) >= 1).then_some(())
    });
    let s = wait_status(&sb, "chat", "running after its first turn", |s| {
        s["status"]["phase"] == "Running" && s["status"]["pid"].is_u64()
    });
    let pid = s["status"]["pid"].as_u64().unwrap_or(0) as u32;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    assert!(
        String::from_utf8_lossy(&cmdline).contains("stream-json\0"),
        "--input-format stream-json: {}",
        String::from_utf8_lossy(&cmdline)
    );

    // The controller dies hard; the CLI's input stays open (the keeper holds it).
    c.signal(nix::sys::signal::Signal::SIGKILL);
    c.wait();
    assert!(alive(pid), "the session ended with its controller");
    let _c2 = sb.controller(&[]);
    wait_status(&sb, "chat", "adopted", |s| {
        s["status"]["pid"] == pid && s["status"]["phase"] == "Running"
    });

    let out = send(&sb, "second message (marker b2)");
    assert!(out.status.success(), "{out:?}");
    wait_for_within(AGENT_DEADLINE, "the second answer", || {
        (results_in(&sb) >= 2).then_some(())
    });
    let asked = fake
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST" && r.path.contains("/v1/messages"))
        .any(|r| r.message_text().contains("marker b2") && r.message_text().contains("marker a1"));
    assert!(asked, "the second message continued the same conversation");
    assert!(alive(pid), "the same process answered");

    // No further message: closeAfterIdle closes its input and the CLI ends.
    let s = wait_done(&sb, "chat");
    assert_eq!(s["status"]["phase"], "Completed", "{s:#}");
    assert_eq!(s["status"]["attempt"], 1, "{s:#}");

    // A session that is over takes no more input.
    let out = send(&sb, "too late");
    assert!(!out.status.success(), "{out:?}");
}

#[test]
fn a_command_with_a_stdin_pipe_reads_what_send_writes() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().canonicalize().expect("canonical");
    let _keeper = KeeperGuard(dir.clone());
    common::write_file(
        &dir.join("echoer.yaml"),
        &common::session(
            "echoer",
            "command: [/bin/sh, -c, 'while read line; do echo \"got: $line\"; done; echo eof']\nstdin: {pipe: true}\n",
        ),
    );
    let _c = common::Controller::start(&dir, &[]);
    let s = common::wait_phase(&dir, "echoer", "Running");
    let pid = s["status"]["pid"].as_u64().unwrap_or(0) as u32;
    let out = Command::new(common::bin())
        .args(["send", "--dir"])
        .arg(&dir)
        .args(["echoer", "hello there"])
        .output()
        .expect("sessionlet send");
    assert!(out.status.success(), "{out:?}");
    let log = dir.join("echoer.logs/attempt-1.stdout.log");
    common::wait_for("the line echoed", || {
        std::fs::read_to_string(&log)
            .ok()
            .filter(|t| t.contains("got: hello there"))
    });
    // Its stdin stays open: it is still reading.
    assert!(alive(pid));
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(!text.contains("eof"), "{text}");
}
