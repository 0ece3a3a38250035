//! Crash dumps: one YAML file per failed attempt that explains the death.

use std::path::Path;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::api::status::ExitInfo;
use crate::api::API_VERSION;

/// The content of a crash dump.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CrashDump {
    /// `sessionlet.dev/v1alpha1`.
    pub api_version: String,
    /// `CrashDump`.
    pub kind: String,
    /// The session.
    pub session: String,
    /// Its uid.
    pub uid: String,
    /// The manifest file.
    pub manifest: String,
    /// The argv that ran.
    pub command: Vec<String>,
    /// Where it ran.
    pub working_dir: String,
    /// Names (never values) of the variables the manifest set.
    pub env_names: Vec<String>,
    /// How it ended.
    pub exit: ExitInfo,
    /// Wall time of the attempt.
    pub duration_seconds: f64,
    /// The last 100 lines of standard output.
    pub stdout_tail: String,
    /// The last 100 lines of standard error.
    pub stderr_tail: String,
    /// sessionlet's version.
    pub controller_version: String,
    /// When the dump was written.
    pub written_at: DateTime<Utc>,
}

impl CrashDump {
    /// A dump with the fixed fields filled in.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        session: &str,
        uid: String,
        manifest: String,
        command: Vec<String>,
        working_dir: String,
        env_names: Vec<String>,
        exit: ExitInfo,
        stdout_tail: String,
        stderr_tail: String,
        now: DateTime<Utc>,
    ) -> Self {
        let duration_seconds = exit
            .started_at
            .map(|s| (exit.finished_at - s).num_milliseconds() as f64 / 1000.0)
            .unwrap_or(0.0);
        CrashDump {
            api_version: API_VERSION.into(),
            kind: "CrashDump".into(),
            session: session.to_string(),
            uid,
            manifest,
            command,
            working_dir,
            env_names,
            exit,
            duration_seconds,
            stdout_tail,
            stderr_tail,
            controller_version: env!("CARGO_PKG_VERSION").into(),
            written_at: now,
        }
    }
}

/// Keeps the newest `keep` dumps of a session (file names sort by time).
pub fn prune(dir: &Path, session: &str, keep: usize) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let prefix = format!("{session}-");
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with(&prefix) && n.ends_with(".yaml"))
        .filter(|n| n[prefix.len()..].starts_with(|c: char| c.is_ascii_digit()))
        .collect();
    names.sort();
    let excess = names.len().saturating_sub(keep);
    for n in names.into_iter().take(excess) {
        let _ = std::fs::remove_file(dir.join(n));
    }
}
