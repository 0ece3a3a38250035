//! Reading status files back (for `get`, `describe`, `logs`); works with or
//! without a running controller.

use std::path::{Path, PathBuf};

use crate::api::status::{PoolStatusDoc, SessionStatusDoc};
use crate::manifest::codec;

/// One status document found in the status directory.
#[derive(Debug, Clone)]
pub enum Found {
    /// A session (or an invalid manifest).
    Session(Box<SessionStatusDoc>),
    /// A pool.
    Pool(Box<PoolStatusDoc>),
}

/// Reads every `*.status.yaml` in `dir`, in file name order.
pub fn read_statuses(dir: &Path) -> anyhow::Result<Vec<(PathBuf, Found)>> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.ends_with(".status.yaml") && !n.starts_with('.'))
        })
        .collect();
    names.sort();
    let mut out = Vec::new();
    for path in names {
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let Ok(docs) = codec::from_yaml_multi::<serde_json::Value>(&text) else {
            continue;
        };
        for doc in docs {
            let found = match doc.get("kind").and_then(|k| k.as_str()) {
                Some("PoolStatus") => serde_json::from_value(doc)
                    .ok()
                    .map(|d| Found::Pool(Box::new(d))),
                Some("SessionStatus") => serde_json::from_value(doc)
                    .ok()
                    .map(|d| Found::Session(Box::new(d))),
                _ => None,
            };
            if let Some(f) = found {
                out.push((path.clone(), f));
            }
        }
    }
    Ok(out)
}

/// A duration for people: `45s`, `12m`, `3h`, `2d`.
pub fn human_age(d: chrono::Duration) -> String {
    let s = d.num_seconds().max(0);
    match s {
        0..=119 => format!("{s}s"),
        120..=7199 => format!("{}m", s / 60),
        7200..=172_799 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

/// Says so on stderr, in one line, when no controller runs on the status
/// directory `dir` (from the lock in `.sessionlet/` and the controller's
/// status file), so that statuses are never read as current when nothing
/// keeps them up to date.
pub fn warn_if_no_controller(dir: &Path) {
    let control = dir.join(".sessionlet");
    if crate::runtime::lock::is_held(&control) != Some(false) {
        return;
    }
    let last = std::fs::read_to_string(control.join("controller.status.yaml"))
        .ok()
        .and_then(|t| codec::from_yaml_multi::<serde_json::Value>(&t).ok())
        .and_then(|docs| docs.into_iter().next());
    let seen = last
        .as_ref()
        .and_then(|c| c["updatedAt"].as_str())
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(|t| {
            format!(
                "; the last one stopped writing {}",
                relative_time(chrono::Utc::now(), t.with_timezone(&chrono::Utc))
            )
        })
        .unwrap_or_default();
    eprintln!(
        "warning: no controller is running on {}{seen}: these statuses are not kept up to date (start `sessionlet run`)",
        dir.display()
    );
}

/// Orders names the way people count: `job-2` before `job-10` (runs of
/// digits compare as numbers, the rest as text).
pub fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    fn chunks(s: &str) -> Vec<(bool, &str)> {
        let mut out = Vec::new();
        let mut start = 0;
        let bytes = s.as_bytes();
        for i in 1..=bytes.len() {
            if i == bytes.len() || bytes[i].is_ascii_digit() != bytes[start].is_ascii_digit() {
                out.push((bytes[start].is_ascii_digit(), &s[start..i]));
                start = i;
            }
        }
        out
    }
    let (ca, cb) = (chunks(a), chunks(b));
    for ((da, xa), (db, xb)) in ca.iter().zip(cb.iter()) {
        let ord = if *da && *db {
            let (ta, tb) = (xa.trim_start_matches('0'), xb.trim_start_matches('0'));
            ta.len().cmp(&tb.len()).then_with(|| ta.cmp(tb))
        } else {
            xa.cmp(xb)
        };
        if ord != std::cmp::Ordering::Equal {
            return ord;
        }
    }
    ca.len().cmp(&cb.len()).then_with(|| a.cmp(b))
}

/// When `t` is, seen from `now`, for people: `20s ago`, or `in 20s` for a
/// time still ahead (a restart due, a clock set ahead).
pub fn relative_time(
    now: chrono::DateTime<chrono::Utc>,
    t: chrono::DateTime<chrono::Utc>,
) -> String {
    if t > now {
        format!("in {}", human_age(t - now))
    } else {
        format!("{} ago", human_age(now - t))
    }
}

/// Writes rows as aligned columns.
pub fn print_table(out: &mut impl std::io::Write, rows: &[Vec<String>]) -> std::io::Result<()> {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for r in rows {
        let mut line = String::new();
        for (i, cell) in r.iter().enumerate() {
            if i + 1 == r.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}   ", w = widths[i]));
            }
        }
        writeln!(out, "{}", line.trim_end())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::natural_cmp;

    #[test]
    fn names_sort_naturally() {
        let mut names = vec![
            "job-10", "job-2", "api", "job-1", "job-02b", "web-0", "job-",
        ];
        names.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(
            names,
            ["api", "job-", "job-1", "job-2", "job-02b", "job-10", "web-0"]
        );
    }
}
