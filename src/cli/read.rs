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
