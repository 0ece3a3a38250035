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
/// The folder is opened without following a link, and dumps are removed
/// relative to its handle: a planted link never redirects a removal.
pub fn prune(dir: &Path, session: &str, keep: usize) {
    let Ok(fd) = super::files::open_dir_for_listing(dir) else {
        return;
    };
    let Ok(mut listing) = nix::dir::Dir::from_fd(fd) else {
        return;
    };
    let prefix = format!("{session}-");
    let mut names: Vec<String> = listing
        .iter()
        .filter_map(|e| e.ok()?.file_name().to_str().ok().map(str::to_string))
        .filter(|n| n.starts_with(&prefix) && n.ends_with(".yaml"))
        .filter(|n| n[prefix.len()..].starts_with(|c: char| c.is_ascii_digit()))
        .collect();
    names.sort();
    let excess = names.len().saturating_sub(keep);
    for n in names.into_iter().take(excess) {
        let _ = nix::unistd::unlinkat(
            &listing,
            n.as_str(),
            nix::unistd::UnlinkatFlags::NoRemoveDir,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pruning_keeps_the_newest_and_never_follows_a_linked_folder() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("x.crashes");
        std::fs::create_dir(&dir).unwrap();
        for t in ["1", "2", "3"] {
            std::fs::write(dir.join(format!("web-{t}-attempt-1.yaml")), "x").unwrap();
        }
        std::fs::write(dir.join("webby-1.yaml"), "x").unwrap();
        prune(&dir, "web", 1);
        let mut left: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, ["web-3-attempt-1.yaml", "webby-1.yaml"]);

        let link = tmp.path().join("y.crashes");
        std::os::unix::fs::symlink(&dir, &link).unwrap();
        prune(&link, "web", 0);
        assert!(
            dir.join("web-3-attempt-1.yaml").exists(),
            "removed through a link"
        );
    }
}
