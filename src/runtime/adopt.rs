//! Rebuilding the controller's memory from the status files an earlier
//! controller wrote: attempt and restart counts, backoff, the running pid.

use std::path::Path;

use chrono::{DateTime, Utc};

use crate::api::status::{ExitInfo, SessionStatus};
use crate::core::state::{LastExit, Outcome, Record, Run, Running};
use crate::core::{ExitStatus, Phase, Reason};
use crate::manifest::codec;

fn parse<T: serde::de::DeserializeOwned>(s: &str) -> Option<T> {
    serde_json::from_value(serde_json::Value::String(s.to_string())).ok()
}

fn last_exit(e: &ExitInfo) -> Option<LastExit> {
    let status = match (e.exit_code, &e.signal) {
        (Some(c), _) => Some(ExitStatus::Code(c)),
        (None, Some(s)) => s
            .parse::<nix::sys::signal::Signal>()
            .ok()
            .map(|s| ExitStatus::Signal(s as i32))
            .or_else(|| s.parse().ok().map(ExitStatus::Signal)),
        (None, None) => None,
    };
    Some(LastExit {
        attempt: e.attempt,
        status,
        reason: parse(&e.reason)?,
        message: e.message.clone(),
        started_at: e.started_at,
        finished_at: e.finished_at,
        crash_dump: e
            .crash_dump
            .as_ref()
            .and_then(|p| p.rsplit('/').next().map(str::to_string)),
    })
}

/// The record a status file describes; `None` for statuses that say nothing to restore.
pub fn record_from_status(st: &SessionStatus) -> Option<Record> {
    let phase: Phase = parse(&st.phase)?;
    let reason: Option<Reason> = st.reason.as_deref().and_then(parse);
    let run = match phase {
        Phase::Invalid => return None,
        Phase::Running => Run::Running(Running {
            pid: st.pid?,
            started_at: st.started_at?,
            stop: None,
            verdict: None,
        }),
        Phase::Recovering => Run::Backoff {
            until: st.next_restart_at?,
        },
        // Waiting out its own rejection (Backoff), or held by its account's.
        Phase::WaitingForQuota => match st.next_restart_at {
            Some(until) => Run::Backoff { until },
            None => Run::Idle(None),
        },
        Phase::Completed | Phase::Failed | Phase::TimedOut | Phase::Cancelled => {
            Run::Done(Outcome {
                phase,
                reason: reason.unwrap_or(Reason::Completed),
                message: st.message.clone().unwrap_or_default(),
                finished_at: st.finished_at?,
            })
        }
        Phase::Pending | Phase::Queued => Run::Idle(None),
    };
    Some(Record {
        generation: st.observed_generation,
        run,
        attempt: st.attempt,
        restarts: st.restarts,
        failures: st.consecutive_failures,
        series_started_at: st.run_started_at,
        last_exit: st.last_exit.as_ref().and_then(last_exit),
        collected: false,
        last_spec: None,
        // From the status's metadata (`runHash`, `restartedAt`), by the caller.
        run_hash: 0,
        restarted_at: None,
        quota: st.quota.as_ref().map(|q| crate::core::quota::QuotaWait {
            resets_at: q.resets_at,
            limit_type: q.limit_type.clone(),
            account: q.account.clone(),
        }),
    })
}

/// One Session or Pool document of a status file an earlier controller wrote.
#[derive(Debug, Clone)]
pub struct PreviousStatus {
    /// `Session` or `Pool`.
    pub kind: &'static str,
    /// The object's name.
    pub name: String,
    /// The stem of the status file (`STEM.status.yaml`): the manifest holding the name.
    pub stem: String,
    /// Identity and generation, as the catalog remembers them.
    pub known: super::catalog::Known,
    /// True when the status says the object is Invalid (it holds no name).
    pub invalid: bool,
    /// The whole document.
    pub doc: serde_json::Value,
}

/// The Session and Pool documents of the status files in `status_dir`, as
/// a starting controller reads them (hidden and unreadable files, and
/// documents without a name, uid or spec hash, say nothing).
pub fn previous_statuses(status_dir: &Path, now: DateTime<Utc>) -> Vec<PreviousStatus> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(status_dir) else {
        return out;
    };
    for e in entries.flatten() {
        let file = e.file_name().to_string_lossy().into_owned();
        if !file.ends_with(".status.yaml") || file.starts_with('.') {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(e.path()) else {
            continue;
        };
        let Ok(docs) = codec::from_yaml_multi::<serde_json::Value>(&text) else {
            continue;
        };
        for doc in docs {
            let kind = match doc.get("kind").and_then(|k| k.as_str()) {
                Some("SessionStatus") => "Session",
                Some("PoolStatus") => "Pool",
                _ => continue,
            };
            let meta = &doc["metadata"];
            let (Some(n), Some(uid), Some(hash)) = (
                meta["name"].as_str(),
                meta["uid"].as_str().and_then(|u| u.parse().ok()),
                meta["specHash"]
                    .as_str()
                    .and_then(|h| u64::from_str_radix(h, 16).ok()),
            ) else {
                continue;
            };
            let generation = doc["status"]["observedGeneration"]
                .as_u64()
                .unwrap_or(1)
                .max(1);
            out.push(PreviousStatus {
                kind,
                name: n.to_string(),
                stem: file.trim_end_matches(".status.yaml").to_string(),
                known: super::catalog::Known {
                    uid,
                    spec_hash: hash,
                    generation,
                    first_seen: now,
                },
                invalid: doc["status"]["phase"] == "Invalid",
                doc,
            });
        }
    }
    out
}

/// The record a Session status document restores, with its status: the
/// counts, the backoff, the pid (taken as running), and what the attempt
/// runs (`metadata.runHash`, `metadata.restartedAt`). A spawn that was
/// asked but whose answer was never saved is not counted.
pub fn restore_record(doc: &serde_json::Value) -> Option<(SessionStatus, Record)> {
    let status = serde_json::from_value::<SessionStatus>(doc["status"].clone()).ok()?;
    let mut rec = record_from_status(&status)?;
    let ended = rec.last_exit.as_ref().map_or(0, |e| e.attempt);
    if status.phase == "Pending" && rec.attempt > ended {
        // A spawn was asked and its answer never saved. If the keeper
        // started it, its registry brings the attempt back (restoring
        // from the keeper); if not, that attempt never happened.
        let was_restart = crate::core::reconcile::is_restart(&rec);
        rec.attempt -= 1;
        if was_restart {
            rec.restarts = rec.restarts.saturating_sub(1);
        }
    }
    // What the attempt runs: an edit that applies in place must not restart it.
    rec.run_hash = doc["metadata"]["runHash"]
        .as_str()
        .and_then(|h| u64::from_str_radix(h, 16).ok())
        .unwrap_or(0);
    rec.restarted_at = doc["metadata"]["restartedAt"].as_str().map(str::to_string);
    Some((status, rec))
}

/// True when the keeper recorded the exit of this pid (with this start time).
pub fn recorded_exit(control_dir: &Path, pid: u32, start_ticks: Option<u64>) -> bool {
    let Ok(text) = std::fs::read_to_string(control_dir.join("exits").join(format!("{pid}.json")))
    else {
        return false;
    };
    serde_json::from_str::<super::keeper::ExitRecord>(&text)
        .is_ok_and(|r| r.child.start_ticks == start_ticks)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};

    fn status(phase: &str) -> SessionStatus {
        SessionStatus {
            phase: phase.into(),
            observed_generation: 3,
            attempt: 4,
            restarts: 3,
            consecutive_failures: 2,
            run_started_at: Some(Utc.timestamp_opt(1_000, 0).unwrap()),
            ..SessionStatus::default()
        }
    }

    #[test]
    fn a_running_status_restores_the_pid_and_the_counts() {
        let mut st = status("Running");
        st.pid = Some(42);
        st.started_at = Some(Utc.timestamp_opt(2_000, 0).unwrap());
        let rec = record_from_status(&st).unwrap();
        assert!(matches!(rec.run, Run::Running(Running { pid: 42, .. })));
        assert_eq!(
            (rec.generation, rec.attempt, rec.restarts, rec.failures),
            (3, 4, 3, 2)
        );
    }

    #[test]
    fn a_recovering_status_restores_the_backoff_deadline() {
        let mut st = status("Recovering");
        let until = Utc.timestamp_opt(5_000, 0).unwrap();
        st.next_restart_at = Some(until);
        st.last_exit = Some(ExitInfo {
            attempt: 4,
            exit_code: Some(3),
            signal: None,
            reason: "Error".into(),
            message: "exited with code 3".into(),
            started_at: None,
            finished_at: Utc.timestamp_opt(4_000, 0).unwrap(),
            crash_dump: Some("x.crashes/x-1.yaml".into()),
            analysis: None,
        });
        let rec = record_from_status(&st).unwrap();
        assert_eq!(rec.run, Run::Backoff { until });
        let exit = rec.last_exit.unwrap();
        assert_eq!(exit.status, Some(ExitStatus::Code(3)));
        assert_eq!(exit.reason, Reason::Error);
        assert_eq!(exit.crash_dump.as_deref(), Some("x-1.yaml"));
    }

    #[test]
    fn a_terminal_status_restores_the_outcome_and_an_invalid_one_nothing() {
        let mut st = status("Failed");
        st.reason = Some("Error".into());
        st.finished_at = Some(Utc.timestamp_opt(6_000, 0).unwrap());
        let rec = record_from_status(&st).unwrap();
        assert!(matches!(rec.run, Run::Done(_)));
        assert_eq!(rec.outcome().unwrap().phase, Phase::Failed);
        assert!(record_from_status(&status("Invalid")).is_none());
        // A running status without its pid says nothing that can be adopted.
        assert!(record_from_status(&status("Running")).is_none());
    }
}
