//! The decision functions: `reconcile(desired, state, now) -> plan` and
//! `observe(desired, state, event, now)`.
//!
//! Both are pure: no clock, no file system, no syscalls. The shell passes
//! `now`, performs the plan and reports what happened back as [`Event`]s.
//! Level-triggered: `reconcile` never learns what woke it; it looks at the
//! whole picture each time and plans what is missing. Intents are recorded in
//! the state as they are planned (a spawn makes the run `Starting`, a stop
//! records its deadline), so reconciling an unchanged world plans nothing.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use nix::sys::signal::Signal;

use super::backoff;
use super::change;
use super::desired::{Desired, DesiredSession};
use super::phase::{ExitStatus, Phase, Reason};
use super::plan::{Action, Plan};
use super::state::{LastExit, Outcome, Record, Run, Running, State, Stop, Wait};
use super::time;
use crate::api::RestartPolicy;

/// Something that happened, reported by the shell.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A planned spawn succeeded.
    Spawned {
        /// The session.
        name: String,
        /// Its pid.
        pid: u32,
    },
    /// A planned spawn failed (command not found, not executable, bad working directory).
    SpawnFailed {
        /// The session.
        name: String,
        /// CommandNotFound, PermissionDenied or SpawnFailed.
        reason: Reason,
        /// What the OS said.
        message: String,
    },
    /// A process ended.
    Exited {
        /// The session.
        name: String,
        /// Its pid.
        pid: u32,
        /// How it ended.
        status: ExitStatus,
    },
    /// A process adopted from an earlier controller is gone and its exit
    /// status is unknown (it ended while nothing was watching it).
    Vanished {
        /// The session.
        name: String,
        /// Its pid.
        pid: u32,
    },
    /// The process was killed for a reason the controller learned from
    /// outside (the kernel's OOM killer); its coming exit takes this reason.
    Killed {
        /// The session.
        name: String,
        /// Its pid.
        pid: u32,
        /// OOMKilled.
        reason: Reason,
        /// For a person.
        message: String,
    },
    /// The attempt's output says how it ended (an agent's final result, or
    /// its absence); the coming exit takes this verdict.
    Judged {
        /// The session.
        name: String,
        /// Its pid.
        pid: u32,
        /// The verdict.
        verdict: super::state::Verdict,
    },
    /// Monitoring asks to stop a session (a limit, staleness, a policy violation).
    StopRequested {
        /// The session.
        name: String,
        /// Why (MemoryLimitExceeded, Stale, PolicyViolation...).
        reason: Reason,
        /// For a person.
        message: String,
    },
}

impl Event {
    /// The session the event is about.
    pub fn session(&self) -> &str {
        match self {
            Event::Spawned { name, .. }
            | Event::SpawnFailed { name, .. }
            | Event::Exited { name, .. }
            | Event::Vanished { name, .. }
            | Event::Killed { name, .. }
            | Event::Judged { name, .. }
            | Event::StopRequested { name, .. } => name,
        }
    }
}

/// Applies one event to the state.
pub fn observe(desired: &Desired, state: &mut State, event: Event, now: DateTime<Utc>) {
    let name = event.session().to_string();
    let Some(rec) = state.sessions.get_mut(&name) else {
        return;
    };
    let spec = desired.sessions.get(&name);
    match event {
        Event::Spawned { pid, .. } => {
            if let Run::Starting { at } = rec.run {
                rec.run = Run::Running(Running {
                    pid,
                    started_at: at,
                    stop: None,
                    verdict: None,
                });
            }
        }
        Event::SpawnFailed {
            reason, message, ..
        } => {
            if let Run::Starting { at } = rec.run {
                let exit = LastExit {
                    attempt: rec.attempt,
                    status: None,
                    reason,
                    message,
                    started_at: Some(at),
                    finished_at: now,
                    crash_dump: None,
                };
                finish_attempt(&name, rec, spec, exit, None, now, &mut state.outbox);
                if reason == Reason::CommandNotFound
                    && matches!(rec.run, Run::Backoff { .. })
                    && spec.is_some_and(|d| not_found_for_good(&d.spec))
                {
                    // Another attempt would look in the same place and fail
                    // the same way: Failed now, not a backoff forever. An
                    // edit of the manifest starts a fresh run.
                    let msg = format!(
                        "{}; not retried: the command does not exist and another attempt would fail the same way (fix spec.command)",
                        rec.last_exit.as_ref().map(|e| e.message.as_str()).unwrap_or_default()
                    );
                    terminal(rec, Phase::Failed, Reason::CommandNotFound, msg, now);
                }
            }
        }
        Event::Exited { pid, status, .. } => {
            let Run::Running(running) = &rec.run else {
                return;
            };
            if running.pid != pid {
                return;
            }
            let mut running = running.clone();
            let verdict = running.verdict.take();
            let (reason, message) = match (&running.stop, status) {
                (Some(stop), _) => (stop.why, stop.message.clone()),
                (None, _) if verdict.is_some() => verdict
                    .as_ref()
                    .map(|v| (v.reason, v.message.clone()))
                    .unwrap_or((Reason::Completed, String::new())),
                (None, ExitStatus::Code(0)) => (Reason::Completed, "exited 0".to_string()),
                (None, ExitStatus::Code(c)) => (Reason::Error, format!("exited with code {c}")),
                (None, ExitStatus::Signal(s)) => (
                    Reason::Crashed,
                    format!("killed by signal {}", signal_name(s)),
                ),
            };
            let exit = LastExit {
                attempt: rec.attempt,
                status: Some(status),
                reason,
                message,
                started_at: Some(running.started_at),
                finished_at: now,
                crash_dump: None,
            };
            if let Some(pool) = spec.and_then(|d| d.pool()) {
                let stats = state.pools.entry(pool.to_string()).or_default();
                stats.runs += 1;
                stats.run_seconds += exit.duration().num_milliseconds() as f64 / 1000.0;
                match (reason, status) {
                    (Reason::Completed, _) => stats.completed += 1,
                    (_, ExitStatus::Signal(_)) => stats.crashed += 1,
                    _ => stats.failed += 1,
                }
            }
            let min_delay = verdict.as_ref().and_then(|v| v.min_delay);
            let no_retry = verdict.as_ref().is_some_and(|v| !v.retry);
            let quota = verdict.as_ref().and_then(|v| v.quota.as_ref());
            if let (Some(hit), None, Some(_)) = (quota, &running.stop, spec) {
                // Not a failure: no crash dump, no count, no backoff.
                rec.last_exit = Some(exit);
                let account = desired
                    .accounts
                    .get(&name)
                    .map_or("default", String::as_str);
                super::quota::wait_for_reset(&name, rec, hit, account, now);
                state.dirty.insert(name);
                return;
            }
            finish_attempt(
                &name,
                rec,
                spec,
                exit,
                running.stop.as_ref(),
                now,
                &mut state.outbox,
            );
            if let Run::Backoff { until } = &mut rec.run {
                if no_retry {
                    let last = rec.last_exit.clone();
                    let msg = format!(
                        "{}; not retried: another attempt would fail the same way",
                        last.as_ref().map(|e| e.message.clone()).unwrap_or_default()
                    );
                    let reason = last.map_or(Reason::AgentFailed, |e| e.reason);
                    terminal(rec, Phase::Failed, reason, msg, now);
                } else if let Some(min) = min_delay {
                    let floor = time::after_std(now, min);
                    if *until < floor {
                        *until = floor;
                    }
                }
            }
        }
        Event::Killed {
            pid,
            reason,
            message,
            ..
        } => {
            if let Run::Running(r) = &mut rec.run {
                if r.pid == pid && r.stop.is_none() {
                    r.stop = Some(Stop {
                        why: reason,
                        message,
                        signalled_at: now,
                        kill_at: now,
                        killed: true,
                        escalated: true,
                    });
                }
            }
        }
        Event::Judged { pid, verdict, .. } => {
            if let Run::Running(r) = &mut rec.run {
                if r.pid == pid {
                    r.verdict = Some(verdict);
                }
            }
        }
        Event::Vanished { pid, .. } => {
            let Run::Running(running) = &rec.run else {
                return;
            };
            if running.pid != pid {
                return;
            }
            let running = running.clone();
            let exit = LastExit {
                attempt: rec.attempt,
                status: None,
                reason: Reason::ExitedWhileAway,
                message:
                    "the process ended while no controller was running; its exit status is unknown"
                        .into(),
                started_at: Some(running.started_at),
                finished_at: now,
                crash_dump: None,
            };
            finish_attempt(
                &name,
                rec,
                spec,
                exit,
                running.stop.as_ref(),
                now,
                &mut state.outbox,
            );
        }
        Event::StopRequested {
            reason, message, ..
        } => {
            if let (Run::Running(r), Some(d)) = (&mut rec.run, spec) {
                if r.stop.is_none() {
                    let pid = r.pid;
                    begin_stop(r, d, reason, message, now);
                    let signal = first_signal(&d.spec);
                    state.outbox.push(Action::Signal {
                        name: name.clone(),
                        pid,
                        signal,
                    });
                }
            }
        }
    }
    state.dirty.insert(name);
}

/// True when a command that was not found cannot be found by a later
/// attempt either: an absolute path, or a bare name looked up in PATH. A
/// relative path (`./bin/tool`, resolved against `workingDir`) may appear
/// (a build step, a checkout) and is retried with backoff.
pub fn not_found_for_good(spec: &crate::api::SessionSpec) -> bool {
    spec.command
        .as_ref()
        .and_then(|c| c.first())
        .is_some_and(|program| program.starts_with('/') || !program.contains('/'))
}

/// Decides what an ended attempt leads to: a restart after backoff, a terminal phase, or a fresh start.
fn finish_attempt(
    name: &str,
    rec: &mut Record,
    desired: Option<&DesiredSession>,
    mut exit: LastExit,
    stop: Option<&Stop>,
    now: DateTime<Utc>,
    outbox: &mut Vec<Action>,
) {
    let failed = exit.failed()
        && !matches!(
            exit.reason,
            Reason::SpecChanged
                | Reason::Removed
                | Reason::Suspended
                | Reason::ControllerStopped
                | Reason::StoppedByRequest
                | Reason::RestartRequested
                | Reason::BudgetExceeded
        );
    if failed {
        exit.crash_dump = Some(crash_dump_name(name, &exit));
        outbox.push(Action::WriteCrashDump {
            name: name.to_string(),
            exit: exit.clone(),
        });
    }
    let lasted = exit.duration();
    rec.last_exit = Some(exit.clone());
    let Some(d) = desired else {
        // The manifest is gone: nothing runs again; reconcile forgets it.
        rec.run = Run::Idle(None);
        return;
    };
    let spec = &d.spec;
    match stop.map(|s| s.why) {
        Some(why @ (Reason::StoppedByRequest | Reason::RestartRequested)) => {
            return super::requests::finished(rec, why, now);
        }
        Some(Reason::SpecChanged) => {
            *rec = Record {
                last_exit: rec.last_exit.take(),
                ..Record::default()
            };
            return;
        }
        Some(Reason::Removed) => {
            rec.run = Run::Idle(None);
            return;
        }
        Some(Reason::Suspended) => {
            return terminal(
                rec,
                Phase::Cancelled,
                Reason::Suspended,
                "suspended (spec.suspend is true)".into(),
                now,
            );
        }
        Some(Reason::ControllerStopped) => {
            rec.run = Run::Idle(Some(Wait {
                phase: Phase::Pending,
                reason: Reason::ControllerStopped,
                message: "stopped because the controller shut down; starts again when it runs"
                    .into(),
                position: None,
                estimated_wait_seconds: None,
                queued_at: None,
            }));
            return;
        }
        Some(Reason::BudgetExceeded) => {
            // Not a failure: it waits for the budget's next period.
            rec.run = Run::Idle(Some(super::budget::wait(exit.message.clone())));
            return;
        }
        Some(Reason::DeadlineExceeded) => {
            let msg = format!(
                "activeDeadline {} passed",
                spec.active_deadline.unwrap_or_default()
            );
            return terminal(rec, Phase::TimedOut, Reason::DeadlineExceeded, msg, now);
        }
        _ => {}
    }
    if matches!(
        stop.map(|s| s.why),
        Some(Reason::PolicyViolation | Reason::TokenBudgetExceeded)
    ) {
        // Another attempt would break the same rule or budget again.
        let msg = format!("{}; not retried", exit.message);
        return terminal(rec, Phase::Failed, exit.reason, msg, now);
    }
    if exit.status.is_none() && exit.reason == Reason::PolicyViolation {
        // Refused before running: retrying would be refused again.
        return terminal(
            rec,
            Phase::Failed,
            Reason::PolicyViolation,
            exit.message,
            now,
        );
    }
    if lasted >= spec.backoff.reset_after.chrono() {
        rec.failures = 0;
    }
    if !failed {
        rec.failures = 0;
        if spec.restart_policy == RestartPolicy::Always {
            // Even a clean exit waits the initial delay, so `true` cannot hot-loop.
            let until = time::after(now, spec.backoff.initial_delay.min(spec.backoff.max_delay));
            rec.run = Run::Backoff { until };
            return;
        }
        return terminal(rec, Phase::Completed, Reason::Completed, exit.message, now);
    }
    rec.failures = rec.failures.saturating_add(1);
    let retries_left = match spec.effective_max_retries() {
        _ if spec.restart_policy == RestartPolicy::Never => false,
        None => true,
        Some(max) => rec.failures <= max,
    };
    if !retries_left {
        let phase = if exit.reason == Reason::TimedOut {
            Phase::TimedOut
        } else {
            Phase::Failed
        };
        let msg = match spec.effective_max_retries() {
            Some(max) if spec.restart_policy != RestartPolicy::Never => {
                format!("{}; no retry left (maxRetries {max})", exit.message)
            }
            _ => format!("{}; restartPolicy {:?}", exit.message, spec.restart_policy),
        };
        return terminal(rec, phase, exit.reason, msg, now);
    }
    let delay = backoff::delay(&spec.backoff, rec.failures);
    let until = time::after_std(now, delay);
    rec.run = Run::Backoff { until };
}

pub(super) fn terminal(
    rec: &mut Record,
    phase: Phase,
    reason: Reason,
    message: String,
    now: DateTime<Utc>,
) {
    rec.run = Run::Done(Outcome {
        phase,
        reason,
        message,
        finished_at: now,
    });
}

/// The crash dump's file name: sortable, unique per attempt.
pub fn crash_dump_name(name: &str, exit: &LastExit) -> String {
    format!(
        "{name}-{}-attempt-{}.yaml",
        exit.finished_at.format("%Y%m%dT%H%M%S%.3fZ"),
        exit.attempt
    )
}

fn signal_name(sig: i32) -> String {
    Signal::try_from(sig).map_or_else(|_| sig.to_string(), |s| s.as_str().to_string())
}

pub(super) fn begin_stop(
    r: &mut Running,
    d: &DesiredSession,
    why: Reason,
    message: String,
    now: DateTime<Utc>,
) {
    r.stop = Some(Stop {
        why,
        message,
        signalled_at: now,
        kill_at: time::after(now, d.spec.termination_grace_period),
        killed: false,
        escalated: false,
    });
}

/// Stops a member of a pool whose budget is spent (core::budget).
pub(crate) fn begin_budget_stop(
    r: &mut Running,
    d: &DesiredSession,
    message: String,
    now: DateTime<Utc>,
) {
    begin_stop(r, d, Reason::BudgetExceeded, message, now);
}

/// Compares the desired state with the state and plans what is missing.
pub fn reconcile(desired: &Desired, state: &mut State, now: DateTime<Utc>) -> Plan {
    reconcile_only(desired, state, now, None)
}

/// Reconciles only the sessions `keys` reach (see [`super::keys::closure`]):
/// the same decisions [`reconcile`] makes for them, at a cost that follows
/// what changed instead of every session. Returns the plan and the sessions
/// it looked at, whose next due time is the plan's `wake_at`.
pub fn reconcile_keys(
    desired: &Desired,
    state: &mut State,
    keys: &BTreeSet<super::keys::Key>,
    now: DateTime<Utc>,
) -> (Plan, BTreeSet<String>) {
    let only = super::keys::closure(desired, state, keys);
    let plan = reconcile_only(desired, state, now, Some(&only));
    (plan, only)
}

fn reconcile_only(
    desired: &Desired,
    state: &mut State,
    now: DateTime<Utc>,
    only: Option<&BTreeSet<String>>,
) -> Plan {
    let mut plan = Plan::default();
    // Actions decided while observing events come first.
    plan.actions.append(&mut state.outbox);

    // Sessions no longer desired: stop, then forget.
    let gone: Vec<String> = match only {
        None => state
            .sessions
            .keys()
            .filter(|n| !desired.sessions.contains_key(*n))
            .cloned()
            .collect(),
        Some(o) => o
            .iter()
            .filter(|n| state.sessions.contains_key(*n) && !desired.sessions.contains_key(*n))
            .cloned()
            .collect(),
    };
    // Highest names first, so a pool scaling down stops its highest ordinals first.
    for name in gone.into_iter().rev() {
        let Some(rec) = state.sessions.get_mut(&name) else {
            continue;
        };
        match &mut rec.run {
            Run::Running(r) => {
                if r.stop.is_none() {
                    // The manifest is gone: stop with the last spec's signals and grace.
                    let (signal, grace) = rec.last_spec.as_ref().map_or(
                        (Signal::SIGTERM, chrono::Duration::seconds(10)),
                        |(spec, _)| (first_signal(spec), spec.termination_grace_period.chrono()),
                    );
                    r.stop = Some(Stop {
                        why: Reason::Removed,
                        message: "manifest deleted".into(),
                        signalled_at: now,
                        kill_at: time::add(now, grace),
                        killed: false,
                        escalated: false,
                    });
                    plan.actions.push(Action::Signal {
                        name: name.clone(),
                        pid: r.pid,
                        signal,
                    });
                }
                let last = rec.last_spec.as_ref().map(|(s, _)| s.as_ref());
                escalate(&name, r, now, &mut plan, last);
            }
            Run::Starting { .. } => {}
            _ => {
                if let Some(rec) = state.sessions.remove(&name) {
                    // A session that ran keeps its story for a while; one
                    // collected after ttlAfterFinished does not.
                    if rec.attempt > 0 && !rec.collected {
                        plan.actions.push(Action::Tombstone {
                            name: name.clone(),
                            record: Box::new(rec),
                        });
                    }
                }
                state.dirty.remove(&name);
                plan.actions.push(Action::Forget { name });
            }
        }
    }

    // Rolling updates: per pool, the lowest replica ordinal not yet settled
    // (running the current template). Higher outdated replicas wait for it.
    let mut unsettled: BTreeMap<&str, u32> = BTreeMap::new();
    let replicas: Box<dyn Iterator<Item = &DesiredSession>> = match only {
        None => Box::new(desired.sessions.values()),
        Some(o) => Box::new(o.iter().filter_map(|n| desired.sessions.get(n))),
    };
    for d in replicas {
        let Some(r) = &d.replica else { continue };
        let settled = state.sessions.get(&d.name).is_some_and(|rec| {
            (rec.generation == d.generation || applies_in_place(rec, d))
                && matches!(&rec.run, Run::Running(run) if run.stop.is_none())
        });
        if !settled {
            let min = unsettled.entry(r.pool.as_str()).or_insert(r.ordinal);
            *min = (*min).min(r.ordinal);
        }
    }

    // Desired sessions: changes of spec, suspension, deadlines, kills.
    let mut candidates: Vec<&DesiredSession> = Vec::new();
    let stepped: Vec<&DesiredSession> = match only {
        None => desired.sessions.values().collect(),
        Some(o) => o.iter().filter_map(|n| desired.sessions.get(n)).collect(),
    };
    for d in stepped {
        let rec = state.sessions.entry(d.name.clone()).or_insert_with(|| {
            state.dirty.insert(d.name.clone());
            Record {
                generation: d.generation,
                ..Record::default()
            }
        });
        let before = rec.clone();
        if super::requests::step(
            &mut state.requests,
            d,
            rec,
            now,
            &mut plan,
            state.shutting_down,
        ) {
            if *rec != before {
                state.dirty.insert(d.name.clone());
            }
            continue;
        }
        let blocked = d.replica.as_ref().is_some_and(|r| {
            unsettled
                .get(r.pool.as_str())
                .is_some_and(|&m| m < r.ordinal)
        });
        step_session(
            d,
            rec,
            blocked,
            now,
            &mut plan,
            &mut candidates,
            state.shutting_down,
        );
        if *rec != before {
            state.dirty.insert(d.name.clone());
        }
    }

    super::budget::note(desired, &mut state.budget_marks, now);
    super::budget::enforce(desired, state, now, &mut plan, only);
    start_candidates(desired, state, candidates, now, &mut plan, only);

    for name in std::mem::take(&mut state.dirty) {
        if state.sessions.contains_key(&name) {
            plan.actions.push(Action::WriteStatus { name });
        }
    }
    plan
}

/// Handles one desired session; pushes it to `candidates` when it wants to start.
fn step_session<'a>(
    d: &'a DesiredSession,
    rec: &mut Record,
    rolling_blocked: bool,
    now: DateTime<Utc>,
    plan: &mut Plan,
    candidates: &mut Vec<&'a DesiredSession>,
    shutting_down: bool,
) {
    let spec = &d.spec;
    if rec.generation != d.generation && applies_in_place(rec, d) {
        // Nothing that runs changed: same process, same counts; the status
        // describes the new generation (core::change).
        rec.generation = d.generation;
    }
    if let Run::Running(r) = &mut rec.run {
        if r.stop.is_none() {
            let stop = if shutting_down {
                Some((
                    Reason::ControllerStopped,
                    "the controller is shutting down".to_string(),
                ))
            } else if spec.suspend {
                Some((
                    Reason::Suspended,
                    "suspended (spec.suspend is true)".to_string(),
                ))
            } else if rec.generation != d.generation && !rolling_blocked {
                Some((
                    Reason::SpecChanged,
                    change::restart_reason(
                        rec.run_hash,
                        rec.restarted_at.as_deref(),
                        spec,
                        d.restarted_at.as_deref(),
                    )
                    .unwrap_or_else(|| "the spec changed; restarting with the new spec".into()),
                ))
            } else if let Some(t) = spec
                .timeout
                .filter(|t| time::after(r.started_at, *t) <= now)
            {
                Some((
                    Reason::TimedOut,
                    format!("attempt ran longer than its timeout {t}"),
                ))
            } else {
                spec.active_deadline
                    .filter(|t| {
                        rec.series_started_at
                            .is_some_and(|s| time::after(s, *t) <= now)
                    })
                    .map(|t| {
                        (
                            Reason::DeadlineExceeded,
                            format!("session ran longer than its activeDeadline {t}"),
                        )
                    })
            };
            if let Some((why, message)) = stop {
                let pid = r.pid;
                begin_stop(r, d, why, message, now);
                plan.actions.push(Action::Signal {
                    name: d.name.clone(),
                    pid,
                    signal: first_signal(&d.spec),
                });
            } else {
                if let Some(t) = spec.timeout {
                    plan.wake(&d.name, time::after(r.started_at, t));
                }
                if let (Some(t), Some(s)) = (spec.active_deadline, rec.series_started_at) {
                    plan.wake(&d.name, time::after(s, t));
                }
            }
        }
        escalate(&d.name, r, now, plan, Some(&d.spec));
        return;
    }
    if rec.run.is_live() {
        return;
    }
    if shutting_down {
        return;
    }
    // Not running. A changed spec (or a resumed one) starts a fresh run.
    if rec.generation != d.generation {
        *rec = Record {
            generation: d.generation,
            last_exit: rec.last_exit.take(),
            ..Record::default()
        };
    }
    if spec.suspend {
        if rec
            .outcome()
            .as_ref()
            .is_none_or(|o| o.reason != Reason::Suspended)
        {
            terminal(
                rec,
                Phase::Cancelled,
                Reason::Suspended,
                "suspended (spec.suspend is true)".into(),
                now,
            );
        }
        return;
    }
    if let Some(o) = &rec.outcome() {
        if o.reason == Reason::Suspended {
            // Unsuspended without another change: a fresh run.
            *rec = Record {
                generation: d.generation,
                last_exit: rec.last_exit.take(),
                ..Record::default()
            };
        }
    }
    match rec.run {
        Run::Done(_) => collect_when_due(d, rec, now, plan),
        Run::Backoff { until } => {
            if let Some(t) = spec.active_deadline {
                if let Some(s) = rec.series_started_at {
                    let due = time::after(s, t);
                    if due <= now {
                        let msg = format!("session ran longer than its activeDeadline {t}");
                        terminal(rec, Phase::TimedOut, Reason::DeadlineExceeded, msg, now);
                        // A zero ttlAfterFinished is due at once: this pass, not the next.
                        collect_when_due(d, rec, now, plan);
                        return;
                    }
                    plan.wake(&d.name, due);
                }
            }
            if until <= now {
                candidates.push(d);
            } else {
                plan.wake(&d.name, until);
            }
        }
        Run::Idle(_) => {
            // A restart waiting in a pool's queue still ends at the deadline.
            if let (Some(t), Some(s)) = (spec.active_deadline, rec.series_started_at) {
                let due = time::after(s, t);
                if due <= now {
                    let msg = format!("session ran longer than its activeDeadline {t}");
                    terminal(rec, Phase::TimedOut, Reason::DeadlineExceeded, msg, now);
                    collect_when_due(d, rec, now, plan);
                    return;
                }
                plan.wake(&d.name, due);
            }
            candidates.push(d);
        }
        Run::Starting { .. } | Run::Running(_) => {}
    }
}

/// A finished session whose `ttlAfterFinished` is over is collected (once);
/// otherwise the plan wakes when it will be.
fn collect_when_due(d: &DesiredSession, rec: &mut Record, now: DateTime<Utc>, plan: &mut Plan) {
    let (Some(ttl), Some(o)) = (d.spec.ttl_after_finished, &rec.outcome()) else {
        return;
    };
    let due = time::after(o.finished_at, ttl);
    if due > now {
        plan.wake(&d.name, due);
    } else if !rec.collected {
        rec.collected = true;
        plan.actions.push(Action::CollectGarbage {
            name: d.name.clone(),
        });
    }
}

/// Sends SIGKILL once the grace period is over.
fn escalate(
    name: &str,
    r: &mut Running,
    now: DateTime<Utc>,
    plan: &mut Plan,
    spec: Option<&crate::api::SessionSpec>,
) {
    let Some(stop) = &mut r.stop else {
        return;
    };
    if stop.killed {
        return;
    }
    // An agent got SIGINT first (it then ends its tool calls and writes its
    // result); halfway through the grace period it gets the stop signal.
    if let Some(spec) = spec.filter(|s| s.agent.is_some() && !stop.escalated) {
        let half = time::add(stop.signalled_at, (stop.kill_at - stop.signalled_at) / 2);
        if half <= now {
            stop.escalated = true;
            plan.actions.push(Action::Signal {
                name: name.to_string(),
                pid: r.pid,
                signal: spec.stop_signal.0,
            });
        } else {
            plan.wake(name, half);
        }
    }
    if stop.kill_at <= now {
        stop.killed = true;
        plan.actions.push(Action::Signal {
            name: name.to_string(),
            pid: r.pid,
            signal: Signal::SIGKILL,
        });
    } else {
        plan.wake(name, stop.kill_at);
    }
}

/// The first signal of a stop: SIGINT for agent runs, else the stop signal.
pub(crate) fn first_signal(spec: &crate::api::SessionSpec) -> Signal {
    if spec.agent.is_some() {
        Signal::SIGINT
    } else {
        spec.stop_signal.0
    }
}

/// Starts what may start, in queue order, within each pool's capacity.
fn start_candidates(
    desired: &Desired,
    state: &mut State,
    mut candidates: Vec<&DesiredSession>,
    now: DateTime<Utc>,
    plan: &mut Plan,
    only: Option<&BTreeSet<String>>,
) {
    if state.shutting_down {
        return;
    }
    // Replicas first (by ordinal), then Sessions by priority and first sight.
    candidates.sort_by(|a, b| {
        let ka = (
            a.replica.is_none(),
            a.replica.as_ref().map(|r| r.ordinal),
            a.priority(),
            a.first_seen,
            &a.name,
        );
        let kb = (
            b.replica.is_none(),
            b.replica.as_ref().map(|r| r.ordinal),
            b.priority(),
            b.first_seen,
            &b.name,
        );
        ka.cmp(&kb)
    });
    let mut running: std::collections::BTreeMap<String, u32> = Default::default();
    // A pass over some keys counts its pools exactly: the closure holds
    // every member of each pool it reaches (core::keys).
    let counted: Vec<(&String, &Record)> = match only {
        None => state.sessions.iter().collect(),
        Some(o) => o
            .iter()
            .filter_map(|n| state.sessions.get_key_value(n))
            .collect(),
    };
    for (name, rec) in counted {
        if rec.run.is_live() {
            // A member whose manifest is gone still holds its slot until it exits.
            let pool = desired
                .sessions
                .get(name)
                .and_then(|d| d.pool())
                .or_else(|| rec.last_spec.as_ref().and_then(|(_, p)| p.as_deref()));
            if let Some(pool) = pool {
                *running.entry(pool.to_string()).or_default() += 1;
            }
        }
    }
    let mut queued: std::collections::BTreeMap<&str, Vec<&DesiredSession>> = Default::default();
    for d in candidates {
        let park = desired
            .accounts
            .get(&d.name)
            .and_then(|a| super::quota::parked_until(state, a, now))
            .cloned();
        let Some(rec) = state.sessions.get_mut(&d.name) else {
            continue;
        };
        let before = rec.clone();
        if let Some(park) = park {
            // Its account waits for its usage limit: starting it now would
            // only be rejected the same way.
            super::quota::hold(rec, &park);
            plan.wake(&d.name, park.resets_at);
            if *rec != before {
                state.dirty.insert(d.name.clone());
            }
            continue;
        }
        if let Some((message, renews)) =
            super::budget::hold_for(desired, &state.budget_marks, d, now)
        {
            // The pool's budget is spent: nothing starts until it renews.
            rec.run = Run::Idle(Some(super::budget::wait(message)));
            if let Some(t) = renews {
                plan.wake(&d.name, t);
            }
            if *rec != before {
                state.dirty.insert(d.name.clone());
            }
            continue;
        }
        match d.pool() {
            Some(pool) => match desired.pools.get(pool) {
                None => {
                    // A restart due now waits for its pool like a new session.
                    rec.run = Run::Idle(Some(Wait {
                        phase: Phase::Pending,
                        reason: Reason::PoolNotFound,
                        message: format!("pool {pool:?} does not exist; starts once it does"),
                        position: None,
                        estimated_wait_seconds: None,
                        queued_at: None,
                    }));
                }
                Some(p) => {
                    let n = running.entry(pool.to_string()).or_default();
                    if p.max_concurrent.is_none_or(|cap| *n < cap) {
                        *n += 1;
                        if let Some(q) = rec.wait().and_then(|w| w.queued_at) {
                            let stats = state.pools.entry(pool.to_string()).or_default();
                            stats.queue_wait_seconds +=
                                (now - q).num_milliseconds() as f64 / 1000.0;
                            stats.queue_waits += 1;
                        }
                        state
                            .pools
                            .entry(pool.to_string())
                            .or_default()
                            .total_sessions += 1;
                        spawn(d, rec, now, plan);
                    } else {
                        // A restart due now that finds the pool full waits in the queue.
                        if matches!(rec.run, Run::Backoff { .. }) {
                            rec.run = Run::Idle(None);
                        }
                        queued.entry(pool).or_default().push(d);
                    }
                }
            },
            None => spawn(d, rec, now, plan),
        }
        if *rec != before {
            state.dirty.insert(d.name.clone());
        }
    }
    for (pool, waiting) in queued {
        let Some(p) = desired.pools.get(pool) else {
            continue;
        };
        let cap = p.max_concurrent.unwrap_or(1).max(1);
        let avg = state.pools.get(pool).and_then(|s| s.average_run_seconds());
        // Queue overflow: the newest beyond maxQueue fail (replicas never count).
        let mut by_age: Vec<&DesiredSession> = waiting
            .iter()
            .copied()
            .filter(|d| d.replica.is_none())
            .collect();
        by_age.sort_by(|a, b| (a.first_seen, &a.name).cmp(&(b.first_seen, &b.name)));
        let overflow: Vec<String> = by_age
            .iter()
            .skip(p.max_queue as usize)
            .map(|d| d.name.clone())
            .collect();
        let mut position = 0u32;
        for d in waiting {
            let Some(rec) = state.sessions.get_mut(&d.name) else {
                continue;
            };
            let before = rec.clone();
            if overflow.contains(&d.name) {
                let msg = format!(
                    "pool {pool:?} already has {} sessions waiting (maxQueue {})",
                    p.max_queue, p.max_queue
                );
                terminal(rec, Phase::Failed, Reason::QueueFull, msg, now);
                collect_when_due(d, rec, now, plan);
            } else {
                position += 1;
                let queued_at = rec.wait().and_then(|w| w.queued_at).unwrap_or(now);
                let estimate = avg.map(|a| (a * f64::from(position.div_ceil(cap))).round() as u64);
                rec.run = Run::Idle(Some(Wait {
                    phase: Phase::Queued,
                    reason: Reason::PoolFull,
                    message: format!("waiting for room in pool {pool:?} (maxConcurrent {cap}), position {position}"),
                    position: Some(position),
                    estimated_wait_seconds: estimate,
                    queued_at: Some(queued_at),
                }));
            }
            if *rec != before {
                state.dirty.insert(d.name.clone());
            }
        }
    }
}

/// Whether the attempt `rec` is starting counts as a restart: a start after
/// an earlier attempt, unless the controller stopped that one itself on
/// shutting down (a drain, then a new controller): the session never failed
/// nor exited; nor does a start asked through the API (core::requests).
pub fn is_restart(rec: &Record) -> bool {
    rec.attempt > 1
        && !rec.last_exit.as_ref().is_some_and(|e| {
            matches!(
                e.reason,
                Reason::ControllerStopped | Reason::RestartRequested | Reason::StoppedByRequest
            )
        })
}

/// True when the record's attempt runs what `d` asks for: its generation
/// changed only in fields that apply in place (core::change).
fn applies_in_place(rec: &Record, d: &DesiredSession) -> bool {
    change::restart_reason(
        rec.run_hash,
        rec.restarted_at.as_deref(),
        &d.spec,
        d.restarted_at.as_deref(),
    )
    .is_none()
}

fn spawn(d: &DesiredSession, rec: &mut Record, now: DateTime<Utc>, plan: &mut Plan) {
    rec.attempt = rec.attempt.saturating_add(1);
    if is_restart(rec) {
        rec.restarts = rec.restarts.saturating_add(1);
    }
    rec.series_started_at.get_or_insert(now);
    rec.run = Run::Starting { at: now };
    rec.quota = None;
    rec.last_spec = Some((d.spec.clone(), d.pool().map(str::to_string)));
    rec.run_hash = change::run_hash(&d.spec);
    rec.restarted_at = d.restarted_at.clone();
    plan.actions.push(Action::Spawn {
        name: d.name.clone(),
        attempt: rec.attempt,
    });
}
