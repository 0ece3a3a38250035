//! Tombstones: a deleted session or a scaled-down replica keeps a status
//! (`NAME.tombstone.status.yaml`: phase, last exit, when and why it stopped)
//! and its logs and crash dumps for `--tombstone-ttl`, so the reason it
//! ended is never lost at once. `get`, `describe` and `logs` read it as any
//! status file.

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::api::status::SessionStatusDoc;
use crate::manifest::codec;

/// One tombstone and what it keeps.
#[derive(Debug, Clone)]
pub struct Tombstone {
    /// The tombstone status file.
    pub path: PathBuf,
    /// The session's logs folder.
    pub log_dir: PathBuf,
    /// The crash dump folder of its file.
    pub crashes_dir: PathBuf,
    /// `STEM.logs/`, removed once empty.
    pub logs_base: PathBuf,
    /// When it is removed.
    pub until: DateTime<Utc>,
}

/// `STATUS_DIR/NAME.tombstone.status.yaml`.
pub fn path(status_dir: &Path, name: &str) -> PathBuf {
    status_dir.join(format!("{name}.tombstone.status.yaml"))
}

/// Removes a tombstone with the logs and crash dumps it kept.
pub fn remove(name: &str, t: &Tombstone) {
    let _ = std::fs::remove_file(&t.path);
    let _ = std::fs::remove_dir_all(&t.log_dir);
    let _ = std::fs::remove_dir(&t.logs_base);
    super::crash_dump::prune(&t.crashes_dir, name, 0);
    let _ = std::fs::remove_dir(&t.crashes_dir);
}

/// The tombstones an earlier controller left, each due `ttl` after it was written.
pub fn scan(status_dir: &Path, ttl: Duration) -> std::collections::BTreeMap<String, Tombstone> {
    let mut out = std::collections::BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(status_dir) else {
        return out;
    };
    for e in entries.flatten() {
        let file = e.file_name().to_string_lossy().into_owned();
        let Some(name) = file.strip_suffix(".tombstone.status.yaml") else {
            continue;
        };
        let p = e.path();
        let written: DateTime<Utc> = match e.metadata().and_then(|m| m.modified()) {
            Ok(t) => t.into(),
            Err(_) => Utc::now(),
        };
        let until = crate::core::time::after_std(written, ttl);
        let doc = std::fs::read_to_string(&p)
            .ok()
            .and_then(|t| codec::from_yaml_multi::<SessionStatusDoc>(&t).ok())
            .and_then(|d| d.into_iter().next());
        let stdout = doc
            .and_then(|d| d.status.logs)
            .map(|l| status_dir.join(l.stdout));
        let Some(log_dir) = stdout.as_deref().and_then(Path::parent) else {
            out.insert(
                name.to_string(),
                Tombstone {
                    path: p.clone(),
                    log_dir: p.with_extension("none"),
                    crashes_dir: p.with_extension("none"),
                    logs_base: p.with_extension("none"),
                    until,
                },
            );
            continue;
        };
        // `STEM.logs/` or `STEM.logs/SESSION/`.
        let base = log_dir
            .strip_prefix(status_dir)
            .ok()
            .and_then(|r| r.components().next())
            .map(|c| status_dir.join(c.as_os_str()))
            .unwrap_or_else(|| log_dir.to_path_buf());
        let stem = base
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".logs"))
            .unwrap_or(name)
            .to_string();
        out.insert(
            name.to_string(),
            Tombstone {
                path: p.clone(),
                log_dir: log_dir.to_path_buf(),
                crashes_dir: status_dir.join(format!("{stem}.crashes")),
                logs_base: base,
                until,
            },
        );
    }
    out
}
