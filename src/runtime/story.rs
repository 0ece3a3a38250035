//! The controller's log tells the story: one line per lifecycle event
//! (spawned, exited, restarting, stopping, finished, forgotten, manifest
//! invalid, pool scaled, garbage-collected). What happened is decided by
//! [`crate::core::lifecycle`] from snapshots; this module writes the lines.
//!
//! Every line carries `event` and, for sessions, `session`, so that
//! `--log-format json` can be read by machines.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use super::catalog::{Catalog, Entry};
use crate::core::lifecycle::{self, Lifecycle, Seen};
use crate::core::{Desired, ExitStatus, State};

/// The snapshots the next lines are derived from.
#[derive(Debug, Default)]
pub struct Story {
    /// What each session's record looked like at its last line (the facts
    /// the lines compare, not a whole record: see [`Seen`]).
    sessions: BTreeMap<String, Seen>,
    pools: BTreeMap<String, u32>,
    problems: BTreeMap<String, Vec<String>>,
}

impl Story {
    /// Takes the snapshots without logging (at start: what was restored is not news).
    pub fn seed(&mut self, state: &State, desired: &Desired, catalog: &Catalog) {
        self.sessions = state
            .sessions
            .iter()
            .map(|(n, r)| (n.clone(), Seen::of(r)))
            .collect();
        self.pools = pools(desired);
        self.problems = problems(catalog);
    }

    /// Logs what changed since the last snapshot and takes a new one: of
    /// the sessions in `touched` (the names the pass's plans acted on; a
    /// record changes only through them), and of the files and pools when
    /// `catalog_changed`. The cost follows what changed, not the number of
    /// sessions.
    pub fn tell(
        &mut self,
        state: &State,
        desired: &Desired,
        catalog: &Catalog,
        touched: &std::collections::BTreeSet<String>,
        catalog_changed: bool,
        now: DateTime<Utc>,
    ) {
        if catalog_changed {
            let problems = problems(catalog);
            for (stem, list) in lifecycle::new_problems(&self.problems, &problems) {
                let file = catalog
                    .views
                    .get(&stem)
                    .map(|v| v.path.display().to_string())
                    .unwrap_or(stem);
                for p in list {
                    tracing::warn!(event = "manifest-invalid", file = %file, "manifest invalid: {p}");
                }
            }
            self.problems = problems;
            let pools = pools(desired);
            for (pool, was, now) in lifecycle::pool_scalings(&self.pools, &pools) {
                tracing::info!(event = "pool-scaled", pool = %pool, from = was, to = now, "pool {pool} scaled from {was} to {now} replicas");
            }
            self.pools = pools;
        }
        for name in touched {
            let next = state.sessions.get(name);
            for e in lifecycle::lifecycle(self.sessions.get(name), next, now) {
                log(name, &e);
            }
            match next {
                Some(rec) => {
                    let seen = Seen::of(rec);
                    match self.sessions.get_mut(name) {
                        Some(kept) => *kept = seen,
                        None => {
                            self.sessions.insert(name.clone(), seen);
                        }
                    }
                }
                None => {
                    self.sessions.remove(name);
                }
            }
        }
    }
}

/// `spawned`: a new attempt runs.
pub fn spawned(session: &str, pid: u32, attempt: u32) {
    tracing::info!(
        event = "spawned",
        session,
        pid,
        attempt,
        "{session}: spawned attempt {attempt} (pid {pid})"
    );
}

/// `garbage-collected`: ttlAfterFinished passed.
pub fn collected(session: &str, what: &str) {
    tracing::info!(
        event = "garbage-collected",
        session,
        "{session}: garbage-collected after ttlAfterFinished ({what})"
    );
}

/// Writes one lifecycle line.
fn log(session: &str, e: &Lifecycle) {
    match e {
        Lifecycle::Exited {
            attempt,
            status,
            reason,
            message,
            expected,
        } => {
            let reason = reason.as_str();
            let how = match status {
                Some(ExitStatus::Code(c)) => format!("with code {c}"),
                Some(ExitStatus::Signal(s)) => format!("by signal {s}"),
                None => "without an exit status".to_string(),
            };
            let code = match status {
                Some(ExitStatus::Code(c)) => i64::from(*c),
                _ => -1,
            };
            let signal = match status {
                Some(ExitStatus::Signal(s)) => i64::from(*s),
                _ => -1,
            };
            let word = if *expected { "expected" } else { "unexpected" };
            if *expected {
                tracing::info!(event = "exited", session, attempt, code, signal, reason = %reason, expected, "{session}: attempt {attempt} exited {how} ({word}, {reason}: {message})");
            } else {
                tracing::warn!(event = "exited", session, attempt, code, signal, reason = %reason, expected, "{session}: attempt {attempt} exited {how} ({word}, {reason}: {message})");
            }
            match reason.as_str() {
                "TimedOut" | "DeadlineExceeded" => {
                    tracing::warn!(event = "timed-out", session, attempt, reason = %reason, "{session}: attempt {attempt} timed out: {message}")
                }
                "OOMKilled" | "MemoryLimitExceeded" => {
                    tracing::warn!(event = "oom-killed", session, attempt, reason = %reason, "{session}: attempt {attempt} OOM-killed: {message}")
                }
                _ => {}
            }
        }
        Lifecycle::Stopping { pid, why, message } => {
            let why = why.as_str();
            tracing::info!(event = "stopping", session, pid, reason = %why, "{session}: stopping pid {pid} ({why}: {message})");
        }
        Lifecycle::Restarting {
            attempt,
            in_seconds,
            failures,
        } => {
            tracing::info!(event = "restarting", session, attempt, in_seconds, failures, "{session}: restarting in {in_seconds}s (attempt {attempt}, backoff after {failures} failure(s))");
        }
        Lifecycle::Finished {
            phase,
            reason,
            message,
        } => {
            let (phase, reason) = (phase.as_str(), reason.as_str());
            if phase == "Completed" {
                tracing::info!(event = "stopped", session, phase, reason = %reason, "{session}: {phase} ({reason}: {message})");
            } else {
                tracing::warn!(event = "stopped", session, phase, reason = %reason, "{session}: {phase} ({reason}: {message})");
            }
        }
        Lifecycle::Forgotten => {
            tracing::info!(
                event = "forgotten",
                session,
                "{session}: forgotten (manifest deleted or pool scaled down)"
            );
        }
    }
}

fn pools(desired: &Desired) -> BTreeMap<String, u32> {
    desired
        .pools
        .iter()
        .map(|(n, p)| (n.clone(), p.replicas))
        .collect()
}

fn problems(catalog: &Catalog) -> BTreeMap<String, Vec<String>> {
    catalog
        .views
        .iter()
        .map(|(stem, v)| {
            let mut list = v.stale_problems.clone();
            for e in &v.entries {
                if let Entry::Invalid { problems, .. } = e {
                    list.extend(problems.iter().cloned());
                }
            }
            (stem.clone(), list)
        })
        .collect()
}

/// `--exit-when-done` with failures: one line per session that did not
/// complete (name, phase, reason, message) and per invalid manifest, then
/// a summary naming them all.
pub fn failures(desired: &Desired, state: &State, catalog: &Catalog) {
    let mut failed = Vec::new();
    for name in desired.sessions.keys() {
        let Some(o) = state.sessions.get(name).and_then(|r| r.outcome()) else {
            continue;
        };
        if o.phase == crate::core::Phase::Completed {
            continue;
        }
        let (phase, reason) = (o.phase.as_str(), o.reason.as_str());
        tracing::error!(event = "failed", session = %name, phase, reason = %reason, "{name}: {phase} ({reason}: {})", o.message);
        failed.push(format!("{name} ({phase}, {reason})"));
    }
    for v in catalog.views.values() {
        for e in &v.entries {
            let (name, reason) = match e {
                Entry::Invalid { name, .. } => (name.clone(), "ManifestInvalid"),
                Entry::Duplicate { name, .. } => (Some(name.clone()), "DuplicateName"),
                _ => continue,
            };
            let name = name.unwrap_or_else(|| v.path.display().to_string());
            tracing::error!(event = "failed", session = %name, phase = "Invalid", reason, "{name}: Invalid ({reason}) in {}", v.path.display());
            failed.push(format!("{name} (Invalid, {reason})"));
        }
    }
    tracing::error!(
        event = "done",
        failed = failed.len(),
        "done: {} session(s) did not complete: {}",
        failed.len(),
        failed.join(", ")
    );
}
