//! Webhooks (issue 13): a receiver on 127.0.0.1 inside the test gets a
//! signed JSON POST when a session fails; a receiver that is down or never
//! answers delays no spawn and no exit; failures become events.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::mpsc;

use common::*;
use serde_json::Value;

/// One HTTP request as received: the request line, headers, body.
#[derive(Debug)]
struct Received {
    line: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Received {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn read_request(stream: &mut TcpStream) -> Option<Received> {
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        reader.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':')?;
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    let len: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    reader.read_exact(&mut body).ok()?;
    Some(Received {
        line: line.trim_end().to_string(),
        headers,
        body,
    })
}

/// A receiver answering 200 to every request, handing them to the test.
fn receiver() -> (String, mpsc::Receiver<Received>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            if let Some(r) = read_request(&mut stream) {
                let _ = stream.write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                );
                if tx.send(r).is_err() {
                    return;
                }
            }
        }
    });
    (url, rx)
}

fn recv(rx: &mpsc::Receiver<Received>, what: &str) -> Received {
    rx.recv_timeout(DEADLINE)
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

fn events_of(dir: &Path, name: &str) -> Vec<Value> {
    sessionlet::events::read_filtered(&dir.join(".sessionlet"), Some(name), None)
        .into_iter()
        .map(|e| serde_json::to_value(e).unwrap())
        .collect()
}

#[test]
fn a_failed_session_is_posted_with_a_valid_signature() {
    let (tmp, dir) = sessions_dir();
    let (url, rx) = receiver();
    let secret_file = tmp.path().join("hook.secret");
    std::fs::write(&secret_file, "shared-key\n").unwrap();
    let env_secret = "env-value-never-sent-9931";
    write_file(
        &dir.join("broken.yaml"),
        &session(
            "broken",
            &format!(
                "command: [/bin/sh, -c, 'echo \"$T\"; exit 2']\nenv: {{T: {env_secret}}}\nmaxRetries: 0\nnotify:\n- url: {url}\n  on: [Failed]"
            ),
        ),
    );
    let _c = Controller::start(
        &dir,
        &["--notify-secret-file", secret_file.to_str().unwrap()],
    );
    let r = recv(&rx, "the Failed notification");
    assert!(r.line.starts_with("POST /hook "), "{r:?}");
    assert_eq!(r.header("content-type"), Some("application/json"));
    let sig = r.header("x-sessionlet-signature").expect("a signature");
    assert_eq!(
        sig,
        sessionlet::events::webhook::sign(b"shared-key", &r.body),
        "the signature is HMAC-SHA256 of the body with the file's key (newline removed)"
    );
    let text = String::from_utf8_lossy(&r.body).to_string();
    assert!(!text.contains(env_secret), "{text}");
    let p: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(p["phase"], "Failed", "{p:#}");
    assert_eq!(p["event"]["reason"], "Failed");
    assert_eq!(p["event"]["type"], "Warning");
    assert_eq!(p["object"]["kind"], "Session");
    assert_eq!(p["object"]["name"], "broken");
    let s = wait_phase(&dir, "broken", "Failed");
    assert_eq!(p["object"]["uid"], s["metadata"]["uid"]);
    assert_eq!(p["attempt"], 1);
    assert_eq!(p["statusPath"], "broken.status.yaml");
    assert!(p["time"].is_string() && p["message"].is_string(), "{p:#}");
    // Only what `on` asks for: no second POST for Spawned or Error.
    assert!(rx
        .recv_timeout(std::time::Duration::from_millis(300))
        .is_err());
}

#[test]
fn run_notify_tells_about_every_session_end() {
    let (_tmp, dir) = sessions_dir();
    let (url, rx) = receiver();
    write_file(&dir.join("ok.yaml"), &session("ok", "command: [/bin/true]"));
    let _c = Controller::start(&dir, &["--notify", &url]);
    let r = recv(&rx, "the Completed notification");
    let p: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(p["phase"], "Completed");
    assert_eq!(p["object"]["name"], "ok");
    assert!(r.header("x-sessionlet-signature").is_none());
}

#[test]
fn a_receiver_that_never_answers_does_not_hold_up_restarts() {
    let (_tmp, dir) = sessions_dir();
    // Accepts connections and never answers: every POST hangs until its timeout.
    let hole = TcpListener::bind("127.0.0.1:0").unwrap();
    let hole_url = format!("http://{}/hook", hole.local_addr().unwrap());
    let (held_tx, held_rx) = mpsc::channel::<TcpStream>();
    std::thread::spawn(move || {
        for s in hole.incoming().flatten() {
            if held_tx.send(s).is_err() {
                return;
            }
        }
    });
    // Nothing listens here: connections are refused.
    let down = TcpListener::bind("127.0.0.1:0").unwrap();
    let down_url = format!("http://{}/hook", down.local_addr().unwrap());
    drop(down);
    write_file(
        &dir.join("flaky.yaml"),
        &session(
            "flaky",
            &format!(
                "command: [/bin/sh, -c, 'exit 1']\nmaxRetries: 3\nbackoff: {{initialDelay: 50ms}}\nnotify:\n- url: {hole_url}\n  on: [Spawned, Error, BackOff, Failed]\n- url: {down_url}\n  on: [Spawned, Error, BackOff, Failed]"
            ),
        ),
    );
    let metrics = TcpListener::bind("127.0.0.1:0").unwrap();
    let metrics_addr = metrics.local_addr().unwrap().to_string();
    drop(metrics);
    let _c = Controller::start(
        &dir,
        &["--notify-retry-for", "1s", "--metrics-addr", &metrics_addr],
    );
    // Every restart still happens, in order, while the notifications hang or fail.
    let s = wait_phase(&dir, "flaky", "Failed");
    assert_eq!(s["status"]["attempt"], 4, "{s:#}");
    let reasons: Vec<String> = events_of(&dir, "flaky")
        .iter()
        .map(|e| e["reason"].as_str().unwrap().to_string())
        .collect();
    let spawned = reasons.iter().filter(|r| *r == "Spawned").count();
    assert_eq!(spawned, 4, "{reasons:?}");
    // The black hole got connections (the sender did try) while none answered.
    held_rx
        .recv_timeout(DEADLINE)
        .expect("a connection to the black hole");
    // The refused deliveries become Warning events after their retries.
    let failed = wait_for("a NotificationFailed event", || {
        events_of(&dir, "flaky")
            .into_iter()
            .find(|e| e["reason"] == "NotificationFailed")
    });
    assert_eq!(failed["type"], "Warning");
    assert!(failed["message"]
        .as_str()
        .unwrap()
        .contains("not delivered"));
    // And a metric.
    wait_for("sessionlet_notifications_total{result=\"failed\"}", || {
        let mut c = TcpStream::connect(&metrics_addr).ok()?;
        c.write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .ok()?;
        let mut text = String::new();
        c.read_to_string(&mut text).ok()?;
        text.lines()
            .any(|l| l.starts_with("sessionlet_notifications_total{result=\"failed\"}"))
            .then_some(())
    });
}

#[test]
fn bad_notify_settings_are_refused_with_the_field() {
    let (tmp, dir) = sessions_dir();
    write_file(
        &dir.join("bad.yaml"),
        &session(
            "bad",
            "command: [/bin/true]\nnotify:\n- url: ftp://127.0.0.1/x\n  on: [Faild]",
        ),
    );
    let out = std::process::Command::new(bin())
        .args(["validate"])
        .arg(&dir)
        .output()
        .unwrap();
    let err = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("bad.yaml:"), "{err}");
    assert!(err.contains("spec.notify[0].url"), "{err}");
    assert!(err.contains("must start with http://"), "{err}");
    assert!(err.contains("spec.notify[0].on[0]"), "{err}");
    assert!(err.contains("did you mean \"Failed\""), "{err}");
    // --notify is checked before anything starts.
    let out = std::process::Command::new(bin())
        .args(["run", "--notify", "https://x/", "--dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("https is not supported"));
    let missing = tmp.path().join("nope.secret");
    let out = std::process::Command::new(bin())
        .args(["run", "--notify-secret-file"])
        .arg(&missing)
        .arg("--dir")
        .arg(&dir)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--notify-secret-file"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_pool_templates_notify_applies_to_its_replicas() {
    let (_tmp, dir) = sessions_dir();
    let (url, rx) = receiver();
    write_file(
        &dir.join("web.yaml"),
        &format!(
            "apiVersion: sessionlet.dev/v1alpha1\nkind: Pool\nmetadata:\n  name: web\nspec:\n  replicas: 1\n  template:\n    spec:\n      command: [/bin/sh, -c, 'exec sleep 300']\n      notify:\n      - url: {url}\n        on: [Running]\n"
        ),
    );
    let _c = Controller::start(&dir, &[]);
    let r = recv(&rx, "the replica's Running notification");
    let p: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(p["object"]["name"], "web-0", "{p:#}");
    assert_eq!(p["phase"], "Running");
    assert_eq!(p["event"]["reason"], "Spawned");
    assert_eq!(p["statusPath"], "web.status.yaml");
}
