//! Renders status documents from the controller's state. Pure: `now` is passed in.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use crate::api::status::{
    Condition, ExitInfo, LogPaths, PoolMember, PoolMetrics, PoolStatus, PoolStatusDoc, QueueEntry,
    QueueInfo, SessionStatus, SessionStatusDoc, StatusMetadata,
};
use crate::api::API_VERSION;
use crate::core::{Desired, ExitStatus, LastExit, Phase, Reason, Record, Run, State};

/// Per-session facts the shell knows and the core does not.
#[derive(Debug, Clone, Default)]
pub struct Extras {
    /// Current attempt's output files (relative to the status directory).
    pub logs: Option<LogPaths>,
    /// Process start ticks, for identity.
    pub start_ticks: Option<u64>,
    /// Boot id.
    pub boot_id: Option<String>,
    /// Crash dump folder, relative.
    pub crashes_dir: String,
    /// Sampled usage.
    pub usage: Option<crate::api::status::Usage>,
    /// Last output.
    pub last_activity: Option<DateTime<Utc>>,
    /// The spec's staleAfter.
    pub stale_after: Option<crate::api::Duration>,
    /// Silent for staleAfter.
    pub stale: bool,
    /// The crash analysis of an attempt: (attempt, analysis).
    pub analysis: Option<(u32, serde_json::Value)>,
    /// Agent runs: the status's `agent` block.
    pub agent: Option<serde_json::Value>,
    /// `spec.workspace`: the status's `workspace` block.
    pub workspace: Option<serde_json::Value>,
}

/// Remembers when each condition last changed, so `lastTransitionTime` is true.
#[derive(Debug, Default)]
pub struct Transitions {
    /// By owner and condition type: the status last rendered and when it
    /// became that (a `bool` and the type's literal: one entry per
    /// condition of every session, so no strings beyond the owner's name).
    seen: BTreeMap<(String, &'static str), (bool, DateTime<Utc>)>,
}

impl Transitions {
    fn condition(
        &mut self,
        owner: &str,
        kind: &'static str,
        status: bool,
        reason: &str,
        message: String,
        now: DateTime<Utc>,
    ) -> Condition {
        let key = (owner.to_string(), kind);
        let entry = self.seen.entry(key).or_insert((status, now));
        if entry.0 != status {
            *entry = (status, now);
        }
        Condition {
            kind: kind.to_string(),
            status: if status { "True" } else { "False" }.to_string(),
            reason: reason.to_string(),
            message,
            last_transition_time: entry.1,
        }
    }
    /// Forgets a session's conditions.
    pub fn forget(&mut self, owner: &str) {
        // The owner's entries only (a walk of every entry made deleting
        // many sessions quadratic); "" sorts before every type.
        let keys: Vec<(String, &'static str)> = self
            .seen
            .range((owner.to_string(), "")..)
            .take_while(|((o, _), _)| o == owner)
            .map(|(k, _)| k.clone())
            .collect();
        for k in keys {
            self.seen.remove(&k);
        }
    }
}

/// Converts a core exit to its status form.
pub fn exit_info(exit: &LastExit, crashes_dir: &str) -> ExitInfo {
    let (exit_code, signal) = match exit.status {
        Some(ExitStatus::Code(c)) => (Some(c), None),
        Some(ExitStatus::Signal(s)) => (
            None,
            Some(
                nix::sys::signal::Signal::try_from(s)
                    .map_or_else(|_| s.to_string(), |x| x.as_str().to_string()),
            ),
        ),
        None => (None, None),
    };
    ExitInfo {
        attempt: exit.attempt,
        exit_code,
        signal,
        reason: exit.reason.as_str(),
        message: exit.message.clone(),
        started_at: exit.started_at,
        finished_at: exit.finished_at,
        crash_dump: exit
            .crash_dump
            .as_ref()
            .map(|f| format!("{crashes_dir}/{f}")),
        analysis: None,
    }
}

/// Phase, reason and message of a record.
pub fn phase_of(rec: &Record) -> (Phase, Option<Reason>, Option<String>) {
    match &rec.run {
        Run::Starting { .. } => (Phase::Pending, Some(Reason::Starting), None),
        Run::Running(r) => match &r.stop {
            Some(s) => (
                Phase::Running,
                Some(s.why),
                Some(format!("stopping: {}", s.message)),
            ),
            None => (Phase::Running, None, None),
        },
        Run::Backoff { until } if rec.quota.is_some() => {
            let q = rec.quota.as_ref();
            (
                Phase::WaitingForQuota,
                Some(Reason::UsageLimited),
                Some(format!(
                    "account {} reached its usage limit{}; resumes the conversation at {}",
                    q.map(|q| q.account.as_str()).unwrap_or_default(),
                    q.and_then(|q| q.limit_type.as_deref())
                        .map(|t| format!(" ({t})"))
                        .unwrap_or_default(),
                    until.to_rfc3339()
                )),
            )
        }
        Run::Backoff { until } => {
            let (reason, msg) = rec
                .last_exit
                .as_ref()
                .map(|e| (Some(e.reason), e.message.clone()))
                .unwrap_or((None, String::new()));
            (
                Phase::Recovering,
                reason,
                Some(format!(
                    "attempt {} ended: {msg}; next attempt at {}",
                    rec.attempt,
                    until.to_rfc3339()
                )),
            )
        }
        Run::Idle(wait) => match wait {
            Some(w) => (w.phase, Some(w.reason), Some(w.message.clone())),
            None => (Phase::Pending, Some(Reason::Starting), None),
        },
        Run::Done(_) => match &rec.outcome() {
            Some(o) => (o.phase, Some(o.reason), Some(o.message.clone())),
            None => (Phase::Completed, None, None),
        },
    }
}

/// The status document of one session.
#[allow(clippy::too_many_arguments)]
pub fn session_status(
    name: &str,
    manifest: &str,
    uid: Option<String>,
    spec_hash: Option<u64>,
    pool: Option<String>,
    rec: &Record,
    extras: &Extras,
    stale_problems: &[String],
    transitions: &mut Transitions,
    now: DateTime<Utc>,
) -> SessionStatusDoc {
    let (phase, reason, message) = phase_of(rec);
    let mut conditions = vec![transitions.condition(
        name,
        "Ready",
        phase == Phase::Running,
        reason
            .map(|r| r.as_str())
            .as_deref()
            .unwrap_or(phase.as_str()),
        format!("phase {}", phase.as_str()),
        now,
    )];
    conditions.push(if stale_problems.is_empty() {
        transitions.condition(
            name,
            "ManifestValid",
            true,
            "Valid",
            "the manifest validates".into(),
            now,
        )
    } else {
        transitions.condition(
            name,
            "ManifestValid",
            false,
            "ManifestInvalid",
            "the manifest no longer validates; the last good spec stays in force".into(),
            now,
        )
    });
    if let Some(after) = extras.stale_after {
        let since = extras
            .last_activity
            .map(|t| t.to_rfc3339())
            .unwrap_or_default();
        conditions.push(if extras.stale {
            transitions.condition(
                name,
                "Stale",
                true,
                "NoOutput",
                format!("no output since {since} (staleAfter {after})"),
                now,
            )
        } else {
            transitions.condition(
                name,
                "Stale",
                false,
                "Active",
                format!("output within staleAfter {after}"),
                now,
            )
        });
    }
    let (pid, started_at) = match &rec.run {
        Run::Running(r) => (Some(r.pid), Some(r.started_at)),
        _ => (None, None),
    };
    let running = pid.is_some();
    let mut last_exit = rec
        .last_exit
        .as_ref()
        .map(|e| exit_info(e, &extras.crashes_dir));
    if let (Some(e), Some((attempt, a))) = (&mut last_exit, &extras.analysis) {
        if e.attempt == *attempt {
            e.analysis = Some(a.clone());
        }
    }
    let queue = match (&rec.run, &pool) {
        (Run::Idle(Some(w)), Some(p)) if w.phase == Phase::Queued => Some(QueueInfo {
            pool: p.clone(),
            position: w.position.unwrap_or(0),
            queued_at: w.queued_at,
            estimated_wait_seconds: w.estimated_wait_seconds,
        }),
        _ => None,
    };
    SessionStatusDoc {
        api_version: API_VERSION.into(),
        kind: "SessionStatus".into(),
        metadata: StatusMetadata {
            name: name.to_string(),
            manifest: manifest.to_string(),
            uid,
            spec_hash: spec_hash.map(|h| format!("{h:016x}")),
            run_hash: (rec.run_hash != 0).then(|| format!("{:016x}", rec.run_hash)),
            restarted_at: rec.restarted_at.clone(),
            pool,
            labels: Default::default(),
        },
        status: SessionStatus {
            phase: phase.as_str().into(),
            reason: reason.map(|r| r.as_str()),
            message,
            observed_generation: rec.generation,
            attempt: rec.attempt,
            restarts: rec.restarts,
            consecutive_failures: rec.failures,
            pid,
            pid_start_ticks: pid.and(extras.start_ticks),
            boot_id: pid.and(extras.boot_id.clone()),
            started_at,
            run_started_at: rec.series_started_at,
            finished_at: rec.outcome().map(|o| o.finished_at),
            next_restart_at: match rec.run {
                Run::Backoff { until } => Some(until),
                _ => None,
            },
            quota: rec.quota.as_ref().map(|q| crate::api::status::QuotaStatus {
                resets_at: q.resets_at,
                limit_type: q.limit_type.clone(),
                account: q.account.clone(),
            }),
            kill_at: match &rec.run {
                Run::Running(r) => r.stop.as_ref().map(|s| s.kill_at),
                _ => None,
            },
            queue,
            last_exit,
            usage: if running { extras.usage.clone() } else { None },
            last_activity_at: if running { extras.last_activity } else { None },
            agent: extras.agent.clone(),
            workspace: extras.workspace.clone(),
            conditions,
            logs: extras.logs.clone(),
            errors: stale_problems.to_vec(),
            updated_at: None,
            node: None,
        },
    }
}

/// The status document of a file (or document) that does not validate.
pub fn invalid_status(
    name: Option<&str>,
    manifest: &str,
    reason: Reason,
    message: String,
    errors: Vec<String>,
) -> SessionStatusDoc {
    SessionStatusDoc {
        api_version: API_VERSION.into(),
        kind: "SessionStatus".into(),
        metadata: StatusMetadata {
            name: name.unwrap_or_default().to_string(),
            manifest: manifest.to_string(),
            ..StatusMetadata::default()
        },
        status: SessionStatus {
            phase: Phase::Invalid.as_str().into(),
            reason: Some(reason.as_str()),
            message: Some(message),
            errors,
            ..SessionStatus::default()
        },
    }
}

/// The status document of a pool.
#[allow(clippy::too_many_arguments)]
pub fn pool_status(
    name: &str,
    manifest: &str,
    uid: Option<String>,
    desired: &Desired,
    state: &State,
    crashes_dir: &str,
    transitions: &mut Transitions,
    now: DateTime<Utc>,
) -> PoolStatusDoc {
    let pool = desired.pools.get(name);
    let mut members = Vec::new();
    let mut running = 0;
    let mut ready = 0;
    let mut queue = Vec::new();
    for d in desired.sessions.values().filter(|d| d.pool() == Some(name)) {
        let Some(rec) = state.sessions.get(&d.name) else {
            continue;
        };
        let (phase, _, _) = phase_of(rec);
        if rec.run.is_live() {
            running += 1;
        }
        if let Some(w) = rec.wait().filter(|w| w.phase == Phase::Queued) {
            queue.push(QueueEntry {
                name: d.name.clone(),
                priority: format!("{:?}", d.spec.priority).to_lowercase(),
                position: w.position.unwrap_or(0),
                queued_at: w.queued_at,
                estimated_wait_seconds: w.estimated_wait_seconds,
            });
        }
        if d.replica.is_some() {
            if phase == Phase::Running && rec.generation == d.generation {
                ready += 1;
            }
            members.push(PoolMember {
                name: d.name.clone(),
                phase: phase.as_str().into(),
                pid: match &rec.run {
                    Run::Running(r) => Some(r.pid),
                    _ => None,
                },
                restarts: rec.restarts,
                started_at: match &rec.run {
                    Run::Running(r) => Some(r.started_at),
                    _ => None,
                },
                last_exit: rec.last_exit.as_ref().map(|e| exit_info(e, crashes_dir)),
            });
        }
    }
    members.sort_by_key(|m| {
        m.name
            .rsplit('-')
            .next()
            .and_then(|o| o.parse::<u32>().ok())
    });
    queue.sort_by_key(|q| q.position);
    let stats = state.pools.get(name).cloned().unwrap_or_default();
    let capacity = pool.and_then(|p| p.max_concurrent);
    let replicas = pool.map_or(0, |p| p.replicas);
    let conditions = vec![transitions.condition(
        name,
        "Available",
        ready == replicas,
        if ready == replicas {
            "AllReplicasReady"
        } else {
            "ReplicasNotReady"
        },
        format!("{ready} of {replicas} replicas ready"),
        now,
    )];
    PoolStatusDoc {
        api_version: API_VERSION.into(),
        kind: "PoolStatus".into(),
        metadata: StatusMetadata {
            name: name.to_string(),
            manifest: manifest.to_string(),
            uid,
            ..StatusMetadata::default()
        },
        status: PoolStatus {
            replicas,
            ready_replicas: ready,
            running,
            queued: queue.len() as u32,
            capacity,
            utilization: capacity.map(|c| (f64::from(running) * 100.0 / f64::from(c)).round()),
            queue,
            members,
            metrics: PoolMetrics {
                total_sessions: stats.total_sessions,
                completed: stats.completed,
                failed: stats.failed,
                crashed: stats.crashed,
                average_run_seconds: stats
                    .average_run_seconds()
                    .map(|v| (v * 1000.0).round() / 1000.0),
                average_queue_wait_seconds: stats
                    .average_queue_wait_seconds()
                    .map(|v| (v * 1000.0).round() / 1000.0),
            },
            conditions,
            observed_generation: pool.map_or(0, |p| p.generation),
            agent: None,
            budget: None,
            errors: Vec::new(),
            updated_at: None,
        },
    }
}

/// Turns a session's last status into its tombstone: the session was
/// forgotten (manifest deleted, pool scaled down) and this document says
/// how it ended, why it stopped and until when it (and its logs) are kept.
/// A phase that was not terminal reads `Cancelled` (stopped on request).
pub fn tombstone(doc: &mut SessionStatusDoc, until: DateTime<Utc>, now: DateTime<Utc>) {
    let ended_phase = Phase::ALL
        .iter()
        .find(|p| p.as_str() == doc.status.phase)
        .is_some_and(|p| p.is_terminal());
    if !ended_phase {
        doc.status.phase = Phase::Cancelled.as_str().to_string();
    }
    doc.status.reason = Some(Reason::Removed.as_str());
    doc.status.message = Some(format!(
        "removed at {} (manifest deleted or pool scaled down); this tombstone and the logs are kept until {}",
        now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    ));
    doc.status.pid = None;
    doc.status.pid_start_ticks = None;
    doc.status.next_restart_at = None;
    if doc.status.finished_at.is_none() {
        doc.status.finished_at = doc
            .status
            .last_exit
            .as_ref()
            .map(|e| e.finished_at)
            .or(Some(now));
    }
    doc.status.updated_at = Some(now);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A condition keeps its transition time while its status holds, takes
    /// a new one when it flips, and forgetting a session forgets its
    /// conditions only (not those of a name it prefixes).
    #[test]
    fn transitions_keep_their_time_and_forget_one_owner() {
        let t0 = Utc::now();
        let t1 = t0 + chrono::Duration::seconds(5);
        let t2 = t1 + chrono::Duration::seconds(5);
        let mut tr = Transitions::default();
        let c = |tr: &mut Transitions, owner: &str, status: bool, now| {
            tr.condition(owner, "Ready", status, "R", String::new(), now)
        };
        assert_eq!(c(&mut tr, "a", false, t0).last_transition_time, t0);
        assert_eq!(c(&mut tr, "a", false, t1).last_transition_time, t0);
        let flipped = c(&mut tr, "a", true, t1);
        assert_eq!(
            (flipped.status.as_str(), flipped.last_transition_time),
            ("True", t1)
        );
        c(&mut tr, "ab", true, t0);
        tr.condition("a", "Stale", false, "S", String::new(), t0);
        tr.forget("a");
        assert_eq!(
            c(&mut tr, "a", true, t2).last_transition_time,
            t2,
            "forgotten"
        );
        assert_eq!(c(&mut tr, "ab", true, t2).last_transition_time, t0, "kept");
    }
}
