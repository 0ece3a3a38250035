//! Restart and stop requests from the local API (`sessionlet restart`,
//! `sessionlet stop`, `POST /api/v1/sessions/{name}/restart|stop`).
//!
//! A request is a fact the reconcile honours, as it honours the
//! `sessionlet.dev/restartedAt` annotation, but without editing a manifest:
//!
//! - **restart**: the running attempt is stopped gracefully and a new one
//!   starts at once. It is not a failure: `failures` (which drives backoff and
//!   `maxRetries`) and `restarts` stay as they were. A session that is not
//!   running (finished, waiting out a backoff) starts a new attempt now.
//! - **stop**: the session is stopped gracefully and held in phase Cancelled
//!   (reason `StoppedByRequest`) until its spec changes (a new generation) or
//!   a restart is asked. The runtime saves the held sessions in the control
//!   folder so that a new controller keeps holding them.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};

use super::desired::DesiredSession;
use super::phase::{Phase, Reason};
use super::plan::{Action, Plan};
use super::reconcile::{begin_stop, first_signal, terminal};
use super::state::{Record, Run};

/// The requests the reconcile has not finished honouring.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Requests {
    /// Sessions to restart, once each.
    pub restart: BTreeSet<String>,
    /// Sessions held stopped, with the generation they were stopped at: a
    /// different generation (the spec changed) releases them.
    pub stopped: BTreeMap<String, u64>,
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// No such session is declared.
    Unknown,
    /// The controller is shutting down: nothing starts any more.
    ShuttingDown,
}

impl Requests {
    /// Asks for a restart of `name` (`declared`: the manifests declare it).
    pub fn ask_restart(
        &mut self,
        name: &str,
        declared: bool,
        shutting_down: bool,
    ) -> Result<(), Refused> {
        if !declared {
            return Err(Refused::Unknown);
        }
        if shutting_down {
            return Err(Refused::ShuttingDown);
        }
        self.stopped.remove(name);
        self.restart.insert(name.to_string());
        Ok(())
    }

    /// Asks to stop `name` and hold it stopped while its spec stays at `generation`.
    pub fn ask_stop(&mut self, name: &str, generation: Option<u64>) -> Result<(), Refused> {
        let Some(generation) = generation else {
            return Err(Refused::Unknown);
        };
        self.restart.remove(name);
        self.stopped.insert(name.to_string(), generation);
        Ok(())
    }

    /// Forgets requests about sessions no longer declared.
    pub fn retain_declared(&mut self, declared: impl Fn(&str) -> bool) {
        self.restart.retain(|n| declared(n));
        self.stopped.retain(|n, _| declared(n));
    }
}

/// Applies the requests about `d` before the ordinary step. Returns true
/// when it decided this session's pass (the ordinary step is skipped).
pub fn step(
    requests: &mut Requests,
    d: &DesiredSession,
    rec: &mut Record,
    now: DateTime<Utc>,
    plan: &mut Plan,
    shutting_down: bool,
) -> bool {
    if shutting_down {
        // A drain stops everything anyway; what is held stays held.
        return false;
    }
    if requests
        .stopped
        .get(&d.name)
        .is_some_and(|g| *g != d.generation)
    {
        // A spec change releases a stopped session, also one that applies
        // in place (which would otherwise leave a finished run finished).
        requests.stopped.remove(&d.name);
        if !rec.run.is_live()
            && rec
                .outcome()
                .as_ref()
                .is_some_and(|o| o.reason == Reason::StoppedByRequest)
        {
            *rec = Record {
                generation: d.generation,
                last_exit: rec.last_exit.take(),
                ..Record::default()
            };
        }
    }
    if requests.restart.contains(&d.name) {
        return restart(requests, d, rec, now, plan);
    }
    if requests.stopped.contains_key(&d.name) {
        return hold(d, rec, now, plan);
    }
    false
}

fn restart(
    requests: &mut Requests,
    d: &DesiredSession,
    rec: &mut Record,
    now: DateTime<Utc>,
    plan: &mut Plan,
) -> bool {
    match &mut rec.run {
        Run::Running(r) if r.stop.is_none() => {
            let pid = r.pid;
            begin_stop(
                r,
                d,
                Reason::RestartRequested,
                "restart asked through the API".into(),
                now,
            );
            plan.actions.push(Action::Signal {
                name: d.name.clone(),
                pid,
                signal: first_signal(&d.spec),
            });
            requests.restart.remove(&d.name);
            true
        }
        // Being stopped or started: the request waits for the process to settle.
        Run::Running(_) | Run::Starting { .. } => false,
        Run::Backoff { .. } | Run::Idle(_) => {
            rec.run = Run::Idle(None);
            requests.restart.remove(&d.name);
            false
        }
        Run::Done(_) => {
            // A fresh run of the same spec, as a person asked for it.
            *rec = Record {
                generation: d.generation,
                attempt: rec.attempt,
                restarts: rec.restarts,
                last_exit: rec.last_exit.take(),
                ..Record::default()
            };
            requests.restart.remove(&d.name);
            false
        }
    }
}

fn hold(d: &DesiredSession, rec: &mut Record, now: DateTime<Utc>, plan: &mut Plan) -> bool {
    match &mut rec.run {
        Run::Running(r) if r.stop.is_none() => {
            let pid = r.pid;
            begin_stop(
                r,
                d,
                Reason::StoppedByRequest,
                "stop asked through the API".into(),
                now,
            );
            plan.actions.push(Action::Signal {
                name: d.name.clone(),
                pid,
                signal: first_signal(&d.spec),
            });
            true
        }
        // The stop under way (or the spawn) ends first; escalation is the ordinary step's.
        Run::Running(_) | Run::Starting { .. } => false,
        _ => {
            if rec
                .outcome()
                .as_ref()
                .is_none_or(|o| o.reason != Reason::StoppedByRequest)
            {
                terminal(
                    rec,
                    Phase::Cancelled,
                    Reason::StoppedByRequest,
                    stopped_message(),
                    now,
                );
            }
            true
        }
    }
}

fn stopped_message() -> String {
    "stopped on request (sessionlet stop); runs again after a spec change or `sessionlet restart`"
        .into()
}

/// An attempt stopped by a request ended: held (stop) or started again at
/// once (restart), neither counted as a failure.
pub fn finished(rec: &mut Record, why: Reason, now: DateTime<Utc>) {
    if why == Reason::StoppedByRequest {
        terminal(
            rec,
            Phase::Cancelled,
            Reason::StoppedByRequest,
            stopped_message(),
            now,
        );
    } else {
        rec.run = Run::Idle(None);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use chrono::TimeZone;

    use super::*;
    use crate::api::{Duration, RestartPolicy, SessionSpec};
    use crate::core::{observe, reconcile, Desired, Event, ExitStatus, State};

    fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2030, 1, 1, 12, 0, 0)
            .single()
            .unwrap_or_default()
    }

    fn world() -> (Desired, State) {
        let spec = SessionSpec {
            command: Some(vec!["sleep".into(), "infinity".into()]),
            termination_grace_period: Duration::from_secs(10),
            restart_policy: RestartPolicy::Always,
            ..SessionSpec::default()
        };
        let mut desired = Desired::default();
        desired.sessions.insert(
            "web".into(),
            DesiredSession {
                name: "web".into(),
                spec: Arc::new(spec),
                generation: 1,
                first_seen: t0(),
                replica: None,
                restarted_at: None,
            },
        );
        (desired, State::default())
    }

    /// Reconciles and answers every spawn and signal the plan asks for, as the shell would.
    fn settle(desired: &Desired, state: &mut State, pid: &mut u32, now: DateTime<Utc>) {
        for _ in 0..8 {
            let plan = reconcile(desired, state, now);
            let mut fed = false;
            for a in plan.actions {
                match a {
                    Action::Spawn { name, .. } => {
                        *pid += 1;
                        observe(desired, state, Event::Spawned { name, pid: *pid }, now);
                        fed = true;
                    }
                    Action::Signal { name, pid, .. } => {
                        let status = ExitStatus::Code(0);
                        observe(desired, state, Event::Exited { name, pid, status }, now);
                        fed = true;
                    }
                    _ => {}
                }
            }
            if !fed {
                return;
            }
        }
    }

    fn running_pid(state: &State) -> Option<u32> {
        match &state.sessions["web"].run {
            Run::Running(r) => Some(r.pid),
            _ => None,
        }
    }

    #[test]
    fn a_restart_starts_a_new_attempt_without_counting_a_failure() {
        let (desired, mut state) = world();
        let mut pid = 100;
        settle(&desired, &mut state, &mut pid, t0());
        let first = running_pid(&state);
        assert!(first.is_some());
        state.requests.ask_restart("web", true, false).ok();
        settle(&desired, &mut state, &mut pid, t0());
        let rec = &state.sessions["web"];
        assert!(
            running_pid(&state).is_some() && running_pid(&state) != first,
            "{rec:?}"
        );
        assert_eq!(rec.attempt, 2);
        assert_eq!(rec.restarts, 0);
        assert_eq!(rec.failures, 0);
        assert_eq!(
            rec.last_exit.as_ref().map(|e| e.reason),
            Some(Reason::RestartRequested)
        );
        assert!(state.requests.restart.is_empty(), "honoured once");
    }

    #[test]
    fn a_stop_holds_until_the_generation_changes() {
        let (mut desired, mut state) = world();
        let mut pid = 100;
        settle(&desired, &mut state, &mut pid, t0());
        state.requests.ask_stop("web", Some(1)).ok();
        settle(&desired, &mut state, &mut pid, t0());
        let held = |state: &State| {
            let rec = &state.sessions["web"];
            matches!(rec.run, Run::Done(_))
                && rec.outcome().map(|o| (o.phase, o.reason))
                    == Some((Phase::Cancelled, Reason::StoppedByRequest))
        };
        assert!(held(&state), "{:?}", state.sessions["web"]);
        // Later passes (a resync) keep it stopped.
        settle(
            &desired,
            &mut state,
            &mut pid,
            t0() + chrono::Duration::hours(1),
        );
        assert!(held(&state));
        // A new generation releases it.
        if let Some(d) = desired.sessions.get_mut("web") {
            d.generation = 2;
        }
        settle(
            &desired,
            &mut state,
            &mut pid,
            t0() + chrono::Duration::hours(1),
        );
        assert!(running_pid(&state).is_some());
        assert!(state.requests.stopped.is_empty());
    }

    #[test]
    fn a_restart_releases_a_stop_and_unknown_names_are_refused() {
        let (desired, mut state) = world();
        let mut pid = 100;
        settle(&desired, &mut state, &mut pid, t0());
        state.requests.ask_stop("web", Some(1)).ok();
        settle(&desired, &mut state, &mut pid, t0());
        assert!(running_pid(&state).is_none());
        assert_eq!(state.requests.ask_restart("web", true, false), Ok(()));
        settle(&desired, &mut state, &mut pid, t0());
        assert!(running_pid(&state).is_some());
        assert_eq!(
            state.sessions["web"].restarts, 0,
            "a requested start is not a restart after a failure"
        );
        assert_eq!(
            state.requests.ask_restart("nope", false, false),
            Err(Refused::Unknown)
        );
        assert_eq!(state.requests.ask_stop("nope", None), Err(Refused::Unknown));
        assert_eq!(
            state.requests.ask_restart("web", true, true),
            Err(Refused::ShuttingDown)
        );
    }
}
