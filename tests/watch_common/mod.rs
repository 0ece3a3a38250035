//! Helpers of the API, CLI and dashboard tests: raw HTTP/1.1 over the
//! controller's Unix socket or TCP, read with deadlines.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

/// One answer: status code, headers (lower-cased names), body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Answer {
    /// The body as JSON (panics with the body when it is not).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The API socket of a status folder.
pub fn socket(dir: &Path) -> PathBuf {
    dir.join(".sessionlet").join("api.sock")
}

fn exchange(mut s: impl Read + Write, method: &str, path: &str, extra: &[(&str, &str)]) -> Answer {
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: 0\r\n"
    );
    for (k, v) in extra {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).expect("send the request");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read the answer");
    parse(&String::from_utf8_lossy(&raw))
}

fn parse(text: &str) -> Answer {
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect::<Vec<_>>();
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_string()
    };
    Answer {
        status,
        headers,
        body,
    }
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// A request over the Unix socket.
pub fn unix(dir: &Path, method: &str, path: &str) -> Answer {
    let s =
        std::os::unix::net::UnixStream::connect(socket(dir)).expect("connect to the API socket");
    s.set_read_timeout(Some(Duration::from_secs(60)))
        .expect("timeout");
    exchange(s, method, path, &[])
}

/// A request over TCP, with extra headers.
pub fn tcp(addr: &str, method: &str, path: &str, extra: &[(&str, &str)]) -> Answer {
    let s = std::net::TcpStream::connect(addr).expect("connect over TCP");
    s.set_read_timeout(Some(Duration::from_secs(60)))
        .expect("timeout");
    exchange(s, method, path, extra)
}

/// Waits until the API socket answers.
pub fn wait_api(dir: &Path) {
    super::common::wait_for("the API socket to answer", || {
        std::os::unix::net::UnixStream::connect(socket(dir)).ok()
    });
}

/// Opens the watch stream and reads events until `until` says stop (or
/// the deadline passes: then panics). Returns the events read (name, data).
pub fn watch_until(
    dir: &Path,
    what: &str,
    until: impl Fn(&[(String, Value)]) -> bool,
) -> Vec<(String, Value)> {
    let mut s = std::os::unix::net::UnixStream::connect(socket(dir)).expect("connect");
    s.set_read_timeout(Some(super::common::DEADLINE))
        .expect("timeout");
    s.write_all(b"GET /api/v1/watch HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .expect("send");
    let mut r = BufReader::new(s);
    let mut events = Vec::new();
    let mut name = String::new();
    let start = std::time::Instant::now();
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            panic!("the stream ended before {what}: {events:?}");
        }
        let l = line.trim_end();
        if let Some(n) = l.strip_prefix("event: ") {
            name = n.to_string();
        } else if let Some(d) = l.strip_prefix("data: ") {
            events.push((name.clone(), serde_json::from_str(d).unwrap_or(Value::Null)));
            if until(&events) {
                return events;
            }
        }
        assert!(
            start.elapsed() < super::common::DEADLINE,
            "timed out waiting for {what}"
        );
    }
}

/// The TCP address the controller logged (`--http-addr 127.0.0.1:0`).
pub fn http_addr(c: &super::common::Controller) -> String {
    super::common::wait_for("the HTTP address in the log", || {
        let log = c.log();
        let start = log.find("metrics on http://")? + "metrics on http://".len();
        let end = log[start..].find("/metrics")?;
        Some(log[start..start + end].to_string())
    })
}

/// A long-running session that stops on SIGTERM.
pub fn long(name: &str) -> String {
    super::common::session(
        name,
        "command: [/bin/sh, -c, 'trap \"exit 0\" TERM; while :; do sleep 0.1; done']\nrestartPolicy: Always\nterminationGracePeriod: 5s\nbackoff: {initialDelay: 60s, maxDelay: 60s}",
    )
}
