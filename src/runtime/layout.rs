//! Where sessionlet writes: status files, logs and crash dumps beside the
//! manifests (or in `--status-dir`), and its own files in `.sessionlet/`.

use std::path::{Path, PathBuf};

/// The directories of one controller.
#[derive(Debug, Clone)]
pub struct Layout {
    /// The watched manifest directory.
    pub manifest_dir: PathBuf,
    /// Where statuses, logs and crash dumps go.
    pub status_dir: PathBuf,
}

impl Layout {
    /// `STEM.status.yaml`.
    pub fn status_file(&self, stem: &str) -> PathBuf {
        self.status_dir.join(format!("{stem}.status.yaml"))
    }
    /// `STEM.logs/` or, for files declaring several sessions, `STEM.logs/SESSION/`.
    pub fn logs_dir(&self, stem: &str, session: &str, shared: bool) -> PathBuf {
        let base = self.status_dir.join(format!("{stem}.logs"));
        if shared {
            base.join(session)
        } else {
            base
        }
    }
    /// `STEM.crashes/`.
    pub fn crashes_dir(&self, stem: &str) -> PathBuf {
        self.status_dir.join(format!("{stem}.crashes"))
    }
    /// `.sessionlet/`.
    pub fn control_dir(&self) -> PathBuf {
        self.status_dir.join(".sessionlet")
    }
    /// `.sessionlet/controller.status.yaml`.
    pub fn controller_status(&self) -> PathBuf {
        self.control_dir().join("controller.status.yaml")
    }
    /// A path relative to the status directory, for status files.
    pub fn relative(&self, p: &Path) -> String {
        p.strip_prefix(&self.status_dir)
            .unwrap_or(p)
            .to_string_lossy()
            .into_owned()
    }
}

/// Log file names of an attempt: `attempt-N.stdout.log` for the first
/// spec, `genG.attempt-N.stdout.log` once the spec changed (attempts count
/// from 1 again, and the last run's logs stay readable).
pub fn attempt_logs(dir: &Path, generation: u64, attempt: u32) -> (PathBuf, PathBuf) {
    let prefix = log_prefix(generation, attempt);
    (
        dir.join(format!("{prefix}.stdout.log")),
        dir.join(format!("{prefix}.stderr.log")),
    )
}

fn log_prefix(generation: u64, attempt: u32) -> String {
    if generation <= 1 {
        format!("attempt-{attempt}")
    } else {
        format!("gen{generation}.attempt-{attempt}")
    }
}

/// The generation and attempt of a log file name.
pub fn parse_log_name(name: &str) -> Option<(u64, u32)> {
    let (generation, rest) = match name.strip_prefix("gen") {
        Some(r) => {
            let (g, rest) = r.split_once('.')?;
            (g.parse().ok()?, rest)
        }
        None => (1, name),
    };
    let n = rest
        .strip_prefix("attempt-")?
        .split('.')
        .next()?
        .parse()
        .ok()?;
    Some((generation, n))
}

/// The last `n` lines of a file, reading at most its last 256 KiB.
pub fn tail_lines(path: &Path, n: usize) -> String {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut f) = std::fs::File::open(path) else {
        return String::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(256 * 1024);
    if f.seek(SeekFrom::Start(start)).is_err() {
        return String::new();
    }
    let mut buf = Vec::new();
    if f.take(256 * 1024).read_to_end(&mut buf).is_err() {
        return String::new();
    }
    let text = String::from_utf8_lossy(&buf);
    let lines: Vec<&str> = text.lines().collect();
    let from = lines.len().saturating_sub(n);
    let mut out = lines[from..].join("\n");
    if !out.is_empty() {
        out.push('\n');
    }
    out
}

/// The log file of the attempt before `current` among `names` (file names
/// of one session's log folder), for the same stream (`stdout` or
/// `stderr`): the latest (generation, attempt) before the current one, so
/// that `logs --previous` reaches the last attempt of the previous spec
/// right after a spec change.
pub fn previous_log<'a>(
    names: impl IntoIterator<Item = &'a str>,
    current: &str,
    stream: &str,
) -> Option<&'a str> {
    let suffix = format!(".{stream}.log");
    let now = parse_log_name(current)?;
    names
        .into_iter()
        .filter(|n| n.ends_with(&suffix))
        .filter_map(|n| parse_log_name(n).map(|k| (k, n)))
        .filter(|(k, _)| *k < now)
        .max_by_key(|(k, _)| *k)
        .map(|(_, n)| n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_previous_log_crosses_a_spec_change_and_keeps_the_stream() {
        let names = [
            "attempt-1.stdout.log",
            "attempt-2.stdout.log",
            "attempt-2.stderr.log",
            "attempt-2.stdout.log.1",
            "gen3.attempt-1.stdout.log",
            "gen3.attempt-2.stdout.log",
        ];
        let prev = |cur: &str, s: &str| previous_log(names.iter().copied(), cur, s);
        assert_eq!(
            prev("gen3.attempt-1.stdout.log", "stdout"),
            Some("attempt-2.stdout.log")
        );
        assert_eq!(
            prev("gen3.attempt-2.stdout.log", "stdout"),
            Some("gen3.attempt-1.stdout.log")
        );
        assert_eq!(
            prev("gen3.attempt-1.stderr.log", "stderr"),
            Some("attempt-2.stderr.log")
        );
        assert_eq!(prev("attempt-1.stdout.log", "stdout"), None);
    }
}
