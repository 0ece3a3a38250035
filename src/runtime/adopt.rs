//! Rebuilding the controller's memory from the status files an earlier
//! controller wrote: attempt and restart counts, backoff, the running pid.

use std::path::Path;

use crate::api::status::{ExitInfo, SessionStatus};
use crate::core::state::{LastExit, Outcome, Record, Run, Running};
use crate::core::{ExitStatus, Phase, Reason};

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
        }),
        Phase::Recovering => Run::Backoff {
            until: st.next_restart_at?,
        },
        Phase::Completed | Phase::Failed | Phase::TimedOut | Phase::Cancelled => Run::Done,
        Phase::Pending | Phase::Queued => Run::Idle,
    };
    let outcome = match run {
        Run::Done => Some(Outcome {
            phase,
            reason: reason.unwrap_or(Reason::Completed),
            message: st.message.clone().unwrap_or_default(),
            finished_at: st.finished_at?,
        }),
        _ => None,
    };
    Some(Record {
        generation: st.observed_generation,
        run,
        attempt: st.attempt,
        restarts: st.restarts,
        failures: st.consecutive_failures,
        series_started_at: st.run_started_at,
        last_exit: st.last_exit.as_ref().and_then(last_exit),
        outcome,
        wait: None,
        collected: false,
        verdict: None,
        last_spec: None,
    })
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
