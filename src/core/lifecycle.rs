//! The lifecycle events the controller logs, one line each, derived by
//! comparing a session's record before and after a wake-up. Pure: the shell
//! formats and writes them.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use super::phase::{ExitStatus, Phase, Reason};
use super::state::{LastExit, Record, Run};

/// The facts of a record that [`lifecycle`] compares the next record with.
/// The shell keeps one per session between wake-ups: a few dozen bytes
/// instead of a whole [`Record`] copy (its spec, paths and timers), which
/// at 10,000 held sessions was about 1 KB each.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Seen {
    /// The pid and reason of a stop under way.
    stop: Option<(u32, Reason)>,
    /// How the last attempt ended.
    last_exit: Option<LastExit>,
    /// When the next attempt is due, while backing off.
    backoff_until: Option<DateTime<Utc>>,
    /// The terminal phase and its reason.
    outcome: Option<(Phase, Reason)>,
}

impl Seen {
    /// What `record` looks like to [`lifecycle`].
    pub fn of(record: &Record) -> Seen {
        Seen {
            stop: stop_of(record),
            last_exit: record.last_exit.clone(),
            backoff_until: match record.run {
                Run::Backoff { until } => Some(until),
                _ => None,
            },
            outcome: record.outcome().map(|o| (o.phase, o.reason)),
        }
    }
}

/// The pid and reason of a running attempt being stopped.
fn stop_of(r: &Record) -> Option<(u32, Reason)> {
    match &r.run {
        Run::Running(run) => run.stop.as_ref().map(|s| (run.pid, s.why)),
        _ => None,
    }
}

/// One thing that happened to a session, for the controller's log.
#[derive(Debug, Clone, PartialEq)]
pub enum Lifecycle {
    /// An attempt ended.
    Exited {
        /// The attempt that ended.
        attempt: u32,
        /// Its exit code or signal; none when it vanished or never started.
        status: Option<ExitStatus>,
        /// Why it ended.
        reason: Reason,
        /// For a person.
        message: String,
        /// True when the exit was wanted: a success, or a stop the
        /// controller asked for (a spec change, a removal, a drain, a suspend).
        expected: bool,
    },
    /// The controller began stopping a running attempt.
    Stopping {
        /// Its pid.
        pid: u32,
        /// Why.
        why: Reason,
        /// For a person.
        message: String,
    },
    /// The next attempt waits out a backoff.
    Restarting {
        /// The attempt that will start.
        attempt: u32,
        /// Seconds until it starts.
        in_seconds: i64,
        /// Consecutive failures so far (the backoff's exponent).
        failures: u32,
    },
    /// The session reached a terminal phase.
    Finished {
        /// Completed, Failed, TimedOut, Cancelled or Invalid.
        phase: Phase,
        /// Why.
        reason: Reason,
        /// For a person.
        message: String,
    },
    /// The controller forgot the session (its manifest is gone or its pool scaled down).
    Forgotten,
}

/// True for an exit the controller wanted or a success.
pub fn expected_exit(reason: Reason) -> bool {
    matches!(
        reason,
        Reason::Completed
            | Reason::SpecChanged
            | Reason::Removed
            | Reason::Suspended
            | Reason::ControllerStopped
            | Reason::StoppedByRequest
            | Reason::RestartRequested
            | Reason::BudgetExceeded
    )
}

/// What happened to one session between what was [`Seen`] of its record
/// and the record now.
pub fn lifecycle(
    before: Option<&Seen>,
    after: Option<&Record>,
    now: DateTime<Utc>,
) -> Vec<Lifecycle> {
    let Some(after) = after else {
        return if before.is_some() {
            vec![Lifecycle::Forgotten]
        } else {
            Vec::new()
        };
    };
    let mut out = Vec::new();
    if let (Run::Running(run), Some(stop)) = (&after.run, stop_of(after)) {
        if before.and_then(|b| b.stop) != Some(stop) {
            if let Some(s) = &run.stop {
                out.push(Lifecycle::Stopping {
                    pid: run.pid,
                    why: s.why,
                    message: s.message.clone(),
                });
            }
        }
    }
    if let Some(exit) = &after.last_exit {
        if before.and_then(|b| b.last_exit.as_ref()) != Some(exit) {
            out.push(Lifecycle::Exited {
                attempt: exit.attempt,
                status: exit.status,
                reason: exit.reason,
                message: exit.message.clone(),
                expected: expected_exit(exit.reason),
            });
        }
    }
    if let Run::Backoff { until } = &after.run {
        if before.map(|b| b.backoff_until) != Some(Some(*until)) {
            out.push(Lifecycle::Restarting {
                attempt: after.attempt + 1,
                in_seconds: (*until - now).num_seconds().max(0),
                failures: after.failures,
            });
        }
    }
    if let Some(o) = after.outcome() {
        if before.and_then(|b| b.outcome) != Some((o.phase, o.reason)) {
            out.push(Lifecycle::Finished {
                phase: o.phase,
                reason: o.reason,
                message: o.message.clone(),
            });
        }
    }
    out
}

/// A pool whose replica count changed: (pool, before, after). A pool that
/// appears or goes away is not a scaling.
pub fn pool_scalings(
    before: &BTreeMap<String, u32>,
    after: &BTreeMap<String, u32>,
) -> Vec<(String, u32, u32)> {
    after
        .iter()
        .filter_map(|(name, &now)| {
            let was = *before.get(name)?;
            (was != now).then(|| (name.clone(), was, now))
        })
        .collect()
}

/// Manifest files whose problems are new or changed: (file stem, problems).
/// A file whose problems went away is not reported.
pub fn new_problems(
    before: &BTreeMap<String, Vec<String>>,
    after: &BTreeMap<String, Vec<String>>,
) -> Vec<(String, Vec<String>)> {
    after
        .iter()
        .filter(|(stem, problems)| !problems.is_empty() && before.get(*stem) != Some(problems))
        .map(|(s, p)| (s.clone(), p.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::state::{LastExit, Running, Stop};

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + s, 0).unwrap_or_default()
    }

    fn running(pid: u32) -> Record {
        Record {
            attempt: 1,
            run: Run::Running(Running {
                pid,
                started_at: t(0),
                stop: None,
                verdict: None,
            }),
            ..Record::default()
        }
    }

    #[test]
    fn an_exit_then_a_backoff_is_two_lines() {
        let before = running(7);
        let mut after = before.clone();
        after.failures = 1;
        after.last_exit = Some(LastExit {
            attempt: 1,
            status: Some(ExitStatus::Code(3)),
            reason: Reason::Error,
            message: "exited with code 3".into(),
            started_at: Some(t(0)),
            finished_at: t(5),
            crash_dump: None,
        });
        after.run = Run::Backoff { until: t(15) };
        let got = lifecycle(Some(&Seen::of(&before)), Some(&after), t(5));
        assert_eq!(got.len(), 2);
        assert!(matches!(
            got[0],
            Lifecycle::Exited {
                expected: false,
                status: Some(ExitStatus::Code(3)),
                ..
            }
        ));
        assert_eq!(
            got[1],
            Lifecycle::Restarting {
                attempt: 2,
                in_seconds: 10,
                failures: 1
            }
        );
        // Nothing new: nothing logged.
        assert!(lifecycle(Some(&Seen::of(&after)), Some(&after), t(6)).is_empty());
    }

    #[test]
    fn a_stop_is_logged_once_and_its_exit_is_expected() {
        let before = running(7);
        let mut stopping = before.clone();
        if let Run::Running(r) = &mut stopping.run {
            r.stop = Some(Stop {
                why: Reason::SpecChanged,
                message: "the spec changed".into(),
                signalled_at: t(1),
                kill_at: t(11),
                killed: false,
                escalated: false,
            });
        }
        let got = lifecycle(Some(&Seen::of(&before)), Some(&stopping), t(1));
        assert!(matches!(got[..], [Lifecycle::Stopping { pid: 7, .. }]));
        assert!(lifecycle(Some(&Seen::of(&stopping)), Some(&stopping), t(2)).is_empty());
        assert!(expected_exit(Reason::SpecChanged));
        assert!(!expected_exit(Reason::OOMKilled));
        assert!(
            expected_exit(Reason::BudgetExceeded),
            "the controller stopped it for its pool's budget"
        );
        assert_eq!(
            lifecycle(Some(&Seen::of(&before)), None, t(3)),
            [Lifecycle::Forgotten]
        );
    }

    #[test]
    fn a_new_backoff_and_a_finish_are_logged_once() {
        let mut backoff = running(7);
        backoff.run = Run::Backoff { until: t(10) };
        let seen = Seen::of(&backoff);
        assert!(lifecycle(Some(&seen), Some(&backoff), t(1)).is_empty());
        let mut later = backoff.clone();
        later.run = Run::Backoff { until: t(20) };
        let got = lifecycle(Some(&seen), Some(&later), t(11));
        assert!(matches!(
            got[..],
            [Lifecycle::Restarting { in_seconds: 9, .. }]
        ));
        let mut done = later.clone();
        done.run = Run::Done(crate::core::state::Outcome {
            phase: Phase::Failed,
            reason: Reason::Error,
            message: "gave up".into(),
            finished_at: t(20),
        });
        let got = lifecycle(Some(&Seen::of(&later)), Some(&done), t(20));
        assert!(matches!(
            got[..],
            [Lifecycle::Finished {
                phase: Phase::Failed,
                ..
            }]
        ));
        // Another message with the same phase and reason is no new finish.
        let mut reworded = done.clone();
        if let Run::Done(o) = &mut reworded.run {
            o.message = "still given up".into();
        }
        assert!(lifecycle(Some(&Seen::of(&done)), Some(&reworded), t(21)).is_empty());
        assert!(lifecycle(None, Some(&done), t(21)).len() == 1);
    }

    #[test]
    fn scalings_and_problems_report_changes_only() {
        let a = BTreeMap::from([("web".to_string(), 2), ("old".to_string(), 1)]);
        let b = BTreeMap::from([("web".to_string(), 3), ("new".to_string(), 1)]);
        assert_eq!(pool_scalings(&a, &b), [("web".to_string(), 2, 3)]);
        let p1 = BTreeMap::from([("x".to_string(), vec!["x.yaml:1:1: bad".to_string()])]);
        let p2 = BTreeMap::from([("x".to_string(), vec!["x.yaml:2:1: bad".to_string()])]);
        assert!(new_problems(&p1, &p1).is_empty());
        assert_eq!(new_problems(&p1, &p2).len(), 1);
        assert!(new_problems(&p2, &BTreeMap::new()).is_empty());
    }
}
