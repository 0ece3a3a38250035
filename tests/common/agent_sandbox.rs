//! A sandbox for agent tests (copied from tests/agent_sessions.rs, which
//! keeps its own): temporary folders, a controller with a cleared
//! environment, the fake API's variables in `spec.env`, and waits with
//! deadlines. Included by path together with `common`, `claude` and `fake_api`.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::common::{self, session, status, wait_for_within, write_file, Controller};
use crate::fake_api;

/// How long an agent session may take to reach a phase: the CLI starts
/// slowly on a loaded 2-core machine.
pub const AGENT_DEADLINE: Duration = Duration::from_secs(180);

/// A test's folders.
pub struct Sandbox {
    _tmp: tempfile::TempDir,
    /// The temporary folder, canonical.
    pub root: PathBuf,
    /// The watched manifest (and status) folder.
    pub dir: PathBuf,
    /// HOME of the controller and the CLI.
    pub home: PathBuf,
    /// The agent's working directory.
    pub work: PathBuf,
}

impl Sandbox {
    pub fn new() -> Sandbox {
        let tmp = tempfile::tempdir().expect("tempdir");
        // Canonical: the CLI reports its cwd resolved.
        let root = tmp.path().canonicalize().expect("canonicalize");
        let dir = root.join("sessions");
        let home = root.join("home");
        let work = root.join("work");
        for d in [&dir, &home.join(".claude"), &work] {
            std::fs::create_dir_all(d).expect("mkdir");
        }
        Sandbox {
            _tmp: tmp,
            root,
            dir,
            home,
            work,
        }
    }

    /// `spec.env` (YAML, as under `spec:`) for a CLI talking to `base_url`.
    pub fn env_yaml(&self, base_url: &str) -> String {
        let vars = [
            ("ANTHROPIC_BASE_URL", base_url.to_string()),
            ("ANTHROPIC_API_KEY", fake_api::API_KEY.to_string()),
            ("HOME", self.home.display().to_string()),
            (
                "CLAUDE_CONFIG_DIR",
                self.home.join(".claude").display().to_string(),
            ),
            // Anything the CLI would fetch through a proxy hits a closed port.
            ("HTTPS_PROXY", "http://127.0.0.1:9".to_string()),
            ("HTTP_PROXY", "http://127.0.0.1:9".to_string()),
            ("NO_PROXY", "127.0.0.1,localhost".to_string()),
        ];
        let mut out = String::from("env:\n");
        for (k, v) in vars {
            out.push_str(&format!("  {k}: {}\n", q(&v)));
        }
        out
    }

    /// `spec.envFrom` and `spec.env` for a subscriber login (the CLI's
    /// usage-limit path): the OAuth token comes from an env file (as a real
    /// deployment would pass it), never from the manifest, and there is no
    /// API key.
    pub fn subscriber_yaml(&self, base_url: &str) -> String {
        let file = self.root.join("subscriber.env");
        write_file(
            &file,
            "CLAUDE_CODE_OAUTH_TOKEN=sk-ant-oat01-fake\nCLAUDE_CODE_SUBSCRIPTION_TYPE=max\n",
        );
        let env = self
            .env_yaml(base_url)
            .lines()
            .filter(|l| !l.contains("ANTHROPIC_API_KEY"))
            .map(|l| format!("{l}\n"))
            .collect::<String>();
        format!(
            "envFrom:\n  - file: {}\n{env}",
            q(&file.display().to_string())
        )
    }

    /// Writes `sessions/STEM.yaml`.
    pub fn write(&self, stem: &str, spec: &str) {
        write_file(&self.dir.join(format!("{stem}.yaml")), &session(stem, spec));
    }

    /// Starts `sessionlet run` on `sessions/` with a cleared environment.
    pub fn controller(&self, extra: &[&str]) -> Controller {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let log = self.root.join(format!("controller-{nanos}.log"));
        let child = Command::new(common::bin())
            .arg("run")
            .arg("--dir")
            .arg(&self.dir)
            .args(["--resync-interval", "2s"])
            .args(extra)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", &self.home)
            .env("RUST_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("start sessionlet");
        Controller {
            child: Some(child),
            dir: self.dir.clone(),
            status_dir: self.dir.clone(),
            log,
        }
    }

    /// The CLI's transcript of conversation `sid`, if it wrote one.
    pub fn transcript(&self, sid: &str) -> Option<PathBuf> {
        let projects = self.home.join(".claude/projects");
        std::fs::read_dir(projects)
            .ok()?
            .flatten()
            .map(|e| e.path().join(format!("{sid}.jsonl")))
            .find(|p| p.is_file())
    }

    /// `sessions/STEM.logs/attempt-N.stdout.log`.
    pub fn stdout_log(&self, stem: &str, attempt: u32) -> PathBuf {
        self.dir
            .join(format!("{stem}.logs/attempt-{attempt}.stdout.log"))
    }
}

/// A YAML (and JSON) double-quoted string.
pub fn q(s: &str) -> String {
    Value::String(s.to_string()).to_string()
}

/// `spec.agent` for the real CLI (YAML, as under `spec:`), with more fields
/// appended from `extra` (indented as under `agent:`).
pub fn agent_yaml(bin: &Path, prompt: &str, extra: &str) -> String {
    let mut out = format!(
        "agent:\n  kind: claude\n  binary: {}\n  prompt: {}\n",
        q(&bin.display().to_string()),
        q(prompt)
    );
    for line in extra.lines() {
        out.push_str(&format!("  {line}\n"));
    }
    out
}

/// Waits until `STEM.status.yaml` satisfies `pred`; an Invalid manifest
/// fails at once (with its message) rather than at the deadline.
pub fn wait_status(sb: &Sandbox, stem: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    wait_for_within(AGENT_DEADLINE, &format!("{stem}: {what}"), || {
        let s = status(&sb.dir, stem)?;
        assert_ne!(
            s["status"]["phase"], "Invalid",
            "the manifest is invalid: {s:#}"
        );
        pred(&s).then_some(s)
    })
}

/// Waits for a terminal phase and returns the status.
pub fn wait_done(sb: &Sandbox, stem: &str) -> Value {
    wait_status(sb, stem, "a terminal phase", |s| {
        matches!(
            s["status"]["phase"].as_str(),
            Some("Completed" | "Failed" | "TimedOut" | "Cancelled")
        )
    })
}
