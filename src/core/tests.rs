//! Unit tests of the pure decision core: no processes, no files, no real time.
//!
//! A [`World`] holds the desired state, the controller's state and a fixed
//! `now` that tests advance by hand; it plays the shell by answering each
//! `Action::Spawn` with `Event::Spawned` (or `Event::SpawnFailed`) and by
//! reporting exits. The property test at the end drives random sequences of
//! operations through the same functions with a simulated process table.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use nix::sys::signal::Signal;
use proptest::prelude::*;

use super::*;
use crate::api::{Backoff, Duration, Priority, RestartPolicy, SessionSpec, SignalName};

// Agent accounts, quota and budgets (core::quota, core::budget).
mod agents;

// ---------------------------------------------------------------------------
// A tiny world: builders, a fixed clock and a simulated shell.
// ---------------------------------------------------------------------------

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2030, 1, 1, 12, 0, 0).unwrap()
}

fn s(n: i64) -> TimeDelta {
    TimeDelta::seconds(n)
}

fn ms(n: i64) -> TimeDelta {
    TimeDelta::milliseconds(n)
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// A long-running command with the manifest defaults spelt out (the derived
/// `Default` of `SessionSpec` has a zero grace period, the loader's is 10s).
fn base_spec() -> SessionSpec {
    SessionSpec {
        command: Some(vec!["sleep".into(), "infinity".into()]),
        termination_grace_period: secs(10),
        ..SessionSpec::default()
    }
}

/// Builds one desired session.
fn desired_session(
    name: &str,
    spec: SessionSpec,
    generation: u64,
    first_seen: DateTime<Utc>,
    replica: Option<Replica>,
) -> DesiredSession {
    DesiredSession {
        name: name.to_string(),
        spec: Arc::new(spec),
        generation,
        first_seen,
        replica,
        restarted_at: None,
    }
}

/// What a status file would show for a record.
/// The phase the status shows; a finished record always has its outcome.
fn phase_of(rec: &Record) -> Phase {
    if matches!(rec.run, Run::Done(_)) {
        assert!(rec.outcome().is_some(), "a finished record has an outcome");
    }
    rec.phase()
}

struct World {
    desired: Desired,
    state: State,
    now: DateTime<Utc>,
    next_pid: u32,
    /// The simulated live process of each session.
    live: BTreeMap<String, u32>,
}

impl World {
    fn new() -> Self {
        World {
            desired: Desired::default(),
            state: State::default(),
            now: t0(),
            next_pid: 100,
            live: BTreeMap::new(),
        }
    }

    /// Declares a session (first seen now) or redeclares it; a changed spec bumps its generation.
    fn put(&mut self, name: &str, f: impl FnOnce(&mut SessionSpec)) {
        let mut spec = base_spec();
        f(&mut spec);
        self.put_spec(name, spec, None);
    }

    fn put_spec(&mut self, name: &str, spec: SessionSpec, replica: Option<Replica>) {
        match self.desired.sessions.get_mut(name) {
            Some(d) => {
                if *d.spec != spec || d.replica != replica {
                    d.spec = Arc::new(spec);
                    d.replica = replica;
                    d.generation += 1;
                }
            }
            None => {
                let d = desired_session(name, spec, 1, self.now, replica);
                self.desired.sessions.insert(name.to_string(), d);
            }
        }
    }

    /// Edits a declared session's spec (a new generation when it changes).
    fn edit(&mut self, name: &str, f: impl FnOnce(&mut SessionSpec)) {
        let d = &self.desired.sessions[name];
        let mut spec = (*d.spec).clone();
        let replica = d.replica.clone();
        f(&mut spec);
        self.put_spec(name, spec, replica);
    }

    fn generation(&self, name: &str) -> u64 {
        self.desired.sessions[name].generation
    }

    /// The manifest is deleted.
    fn remove(&mut self, name: &str) {
        self.desired.sessions.remove(name);
    }

    /// Declares or edits a pool.
    fn pool(&mut self, name: &str, max_concurrent: Option<u32>, max_queue: u32) {
        let old = self.desired.pools.get(name);
        let pool = DesiredPool {
            name: name.to_string(),
            replicas: old.map_or(0, |p| p.replicas),
            max_concurrent,
            max_queue,
            generation: old.map_or(1, |p| p.generation + 1),
        };
        self.desired.pools.insert(name.to_string(), pool);
    }

    /// Sets a pool's replicas and template: `POOL-0` … `POOL-(n-1)`.
    fn scale(&mut self, pool: &str, n: u32, f: impl Fn(&mut SessionSpec)) {
        let mut spec = base_spec();
        f(&mut spec);
        for i in 0..n {
            let replica = Replica {
                pool: pool.to_string(),
                ordinal: i,
            };
            self.put_spec(&format!("{pool}-{i}"), spec.clone(), Some(replica));
        }
        let extra: Vec<String> = self
            .desired
            .sessions
            .values()
            .filter(|d| {
                d.replica
                    .as_ref()
                    .is_some_and(|r| r.pool == pool && r.ordinal >= n)
            })
            .map(|d| d.name.clone())
            .collect();
        for name in extra {
            self.desired.sessions.remove(&name);
        }
        if let Some(p) = self.desired.pools.get_mut(pool) {
            p.replicas = n;
        }
    }

    fn reconcile(&mut self) -> Plan {
        reconcile(&self.desired, &mut self.state, self.now)
    }

    /// Reconciles, then plays the shell: every spawn succeeds with a fresh pid.
    fn step(&mut self) -> Plan {
        let plan = self.reconcile();
        for name in spawns(&plan).into_iter().map(|(n, _)| n.to_string()) {
            self.spawned(&name);
        }
        plan
    }

    /// Reconciles, then plays the shell: every spawn fails.
    fn step_failing(&mut self, reason: Reason) -> Plan {
        let plan = self.reconcile();
        for name in spawns(&plan).into_iter().map(|(n, _)| n.to_string()) {
            self.event(Event::SpawnFailed {
                name,
                reason,
                message: "No such file or directory (os error 2)".into(),
            });
        }
        plan
    }

    fn spawned(&mut self, name: &str) {
        let pid = self.next_pid;
        self.next_pid += 1;
        assert!(
            self.live.insert(name.to_string(), pid).is_none(),
            "two live processes for {name}"
        );
        self.event(Event::Spawned {
            name: name.to_string(),
            pid,
        });
    }

    /// The session's live process ends.
    fn exit(&mut self, name: &str, status: ExitStatus) {
        let pid = self
            .live
            .remove(name)
            .unwrap_or_else(|| panic!("{name} has no live process"));
        self.event(Event::Exited {
            name: name.to_string(),
            pid,
            status,
        });
    }

    fn event(&mut self, event: Event) {
        observe(&self.desired, &mut self.state, event, self.now);
    }

    fn advance(&mut self, by: TimeDelta) {
        self.now += by;
    }

    fn rec(&self, name: &str) -> &Record {
        self.state
            .sessions
            .get(name)
            .unwrap_or_else(|| panic!("no record for {name}"))
    }

    fn phase(&self, name: &str) -> Phase {
        phase_of(self.rec(name))
    }

    fn pid(&self, name: &str) -> u32 {
        self.live[name]
    }

    fn stop_reason(&self, name: &str) -> Option<Reason> {
        match &self.rec(name).run {
            Run::Running(r) => r.stop.as_ref().map(|s| s.why),
            _ => None,
        }
    }

    fn last_exit(&self, name: &str) -> LastExit {
        self.rec(name)
            .last_exit
            .clone()
            .unwrap_or_else(|| panic!("{name} has no last exit"))
    }

    fn outcome_reason(&self, name: &str) -> Option<Reason> {
        self.rec(name).outcome().map(|o| o.reason)
    }

    fn wait(&self, name: &str) -> Option<(Phase, Reason, Option<u32>)> {
        self.rec(name)
            .wait()
            .map(|w| (w.phase, w.reason, w.position))
    }
}

fn spawns(plan: &Plan) -> Vec<(&str, u32)> {
    plan.actions
        .iter()
        .filter_map(|a| match a {
            Action::Spawn { name, attempt } => Some((name.as_str(), *attempt)),
            _ => None,
        })
        .collect()
}

fn spawned_names(plan: &Plan) -> Vec<&str> {
    spawns(plan).into_iter().map(|(n, _)| n).collect()
}

fn signals(plan: &Plan) -> Vec<(&str, Signal)> {
    plan.actions
        .iter()
        .filter_map(|a| match a {
            Action::Signal { name, signal, .. } => Some((name.as_str(), *signal)),
            _ => None,
        })
        .collect()
}

fn crash_dumps(plan: &Plan) -> Vec<&LastExit> {
    plan.actions
        .iter()
        .filter_map(|a| match a {
            Action::WriteCrashDump { exit, .. } => Some(exit),
            _ => None,
        })
        .collect()
}

fn forgets(plan: &Plan) -> Vec<&str> {
    plan.actions
        .iter()
        .filter_map(|a| match a {
            Action::Forget { name } => Some(name.as_str()),
            _ => None,
        })
        .collect()
}

fn collects(plan: &Plan) -> Vec<&str> {
    plan.actions
        .iter()
        .filter_map(|a| match a {
            Action::CollectGarbage { name } => Some(name.as_str()),
            _ => None,
        })
        .collect()
}

fn status_writes(plan: &Plan) -> Vec<&str> {
    plan.actions
        .iter()
        .filter_map(|a| match a {
            Action::WriteStatus { name } => Some(name.as_str()),
            _ => None,
        })
        .collect()
}

/// Nothing but status writes: no spawn, signal, crash dump, forget or collection.
fn assert_no_effects(plan: &Plan, context: &str) {
    for a in &plan.actions {
        assert!(
            matches!(a, Action::WriteStatus { .. }),
            "{context}: unexpected {a:?} in {plan:?}"
        );
    }
}

fn write(name: &str) -> Action {
    Action::WriteStatus {
        name: name.to_string(),
    }
}

fn spawn(name: &str, attempt: u32) -> Action {
    Action::Spawn {
        name: name.to_string(),
        attempt,
    }
}

/// A world with one session `a` already running (pid 100, started at t0).
fn running(f: impl FnOnce(&mut SessionSpec)) -> World {
    let mut w = World::new();
    w.put("a", f);
    assert_eq!(spawned_names(&w.step()), ["a"]);
    w.reconcile();
    w
}

// ---------------------------------------------------------------------------
// Starting and idempotence
// ---------------------------------------------------------------------------

#[test]
fn a_new_session_is_spawned_once_and_an_unchanged_world_then_plans_nothing() {
    let mut w = World::new();
    w.put("a", |_| {});

    let plan = w.reconcile();
    assert_eq!(
        plan,
        Plan {
            actions: vec![spawn("a", 1), write("a")],
            wake_at: None,
            ..Plan::default()
        }
    );
    assert_eq!(w.rec("a").run, Run::Starting { at: t0() });

    // While the spawn is in flight, reconciling again plans nothing at all.
    assert_eq!(w.reconcile(), Plan::default());

    w.spawned("a");
    // The spawn result changed the record: its status is written once, nothing else.
    assert_eq!(
        w.reconcile(),
        Plan {
            actions: vec![write("a")],
            wake_at: None,
            ..Plan::default()
        }
    );
    // And then the unchanged world plans nothing.
    assert_eq!(w.reconcile(), Plan::default());

    let rec = w.rec("a");
    assert!(
        matches!(&rec.run, Run::Running(r) if r.pid == 100 && r.started_at == t0() && r.stop.is_none())
    );
    assert_eq!((rec.attempt, rec.restarts, rec.failures), (1, 0, 0));
    assert_eq!(rec.series_started_at, Some(t0()));
    assert_eq!(rec.generation, 1);
    assert_eq!(w.phase("a"), Phase::Running);
}

#[test]
fn an_exit_reported_for_another_pid_is_ignored() {
    let mut w = running(|_| {});
    let before = w.rec("a").clone();
    w.event(Event::Exited {
        name: "a".into(),
        pid: 99,
        status: ExitStatus::Code(1),
    });
    assert_eq!(*w.rec("a"), before);
    let plan = w.reconcile();
    assert_no_effects(&plan, "stale exit");
}

#[test]
fn a_process_that_vanished_while_away_is_a_failed_attempt_exited_while_away() {
    let mut w = running(|_| {});
    let pid = w.live.remove("a").unwrap();
    w.advance(s(30));
    w.event(Event::Vanished {
        name: "a".into(),
        pid,
    });
    let plan = w.reconcile();
    let last = w.last_exit("a");
    assert_eq!(last.reason, Reason::ExitedWhileAway);
    assert_eq!(last.status, None);
    assert_eq!(crash_dumps(&plan), [&last]);
    assert_eq!(w.phase("a"), Phase::Recovering);
    assert_eq!(w.rec("a").failures, 1);
}

#[test]
fn an_oom_kill_reported_before_the_exit_gives_the_exit_its_reason() {
    let mut w = World::new();
    w.pool("p", None, 100);
    w.put("a", in_pool("p", Priority::Medium));
    w.step();
    w.reconcile();
    let pid = w.pid("a");
    w.advance(s(5));
    w.event(Event::Killed {
        name: "a".into(),
        pid,
        reason: Reason::OOMKilled,
        message: "the kernel killed it".into(),
    });
    w.exit("a", ExitStatus::Signal(9));
    let plan = w.reconcile();
    assert!(signals(&plan).is_empty(), "already dead: no SIGKILL");
    let last = w.last_exit("a");
    assert_eq!(last.reason, Reason::OOMKilled);
    assert_eq!(last.message, "the kernel killed it");
    assert_eq!(crash_dumps(&plan), [&last]);
    assert_eq!(w.phase("a"), Phase::Recovering);
    assert_eq!(w.state.pools["p"].crashed, 1);
}

#[test]
fn an_oom_kill_during_a_stop_does_not_undo_what_the_stop_was_for() {
    // The change that causes the stop, then what the session must end as.
    type Change = fn(&mut World);
    let cases: [(&str, Change, Phase, Option<u32>); 2] = [
        (
            "spec change",
            |w| w.edit("a", |s| s.command = Some(vec!["new".into()])),
            Phase::Running,
            Some(1),
        ),
        (
            "suspend",
            |w| w.edit("a", |s| s.suspend = true),
            Phase::Cancelled,
            None,
        ),
    ];
    for (what, change, phase, attempt) in cases {
        let mut w = running(|_| {});
        change(&mut w);
        assert_eq!(signals(&w.reconcile()).len(), 1, "{what}");
        let pid = w.pid("a");
        w.event(Event::Killed {
            name: "a".into(),
            pid,
            reason: Reason::OOMKilled,
            message: "oom".into(),
        });
        w.exit("a", ExitStatus::Signal(9));
        let plan = w.step();
        assert_eq!(w.phase("a"), phase, "{what}");
        assert_eq!(spawns(&plan).first().map(|(_, a)| *a), attempt, "{what}");
        w.advance(s(3600));
        assert!(spawns(&w.step()).is_empty(), "{what}");
    }
}

#[test]
fn events_for_unknown_sessions_are_ignored() {
    let mut w = World::new();
    w.event(Event::Spawned {
        name: "ghost".into(),
        pid: 7,
    });
    w.event(Event::Exited {
        name: "ghost".into(),
        pid: 7,
        status: ExitStatus::Code(0),
    });
    assert!(w.state.sessions.is_empty());
    assert_eq!(w.reconcile(), Plan::default());
}

// ---------------------------------------------------------------------------
// Exits, restart policies and backoff
// ---------------------------------------------------------------------------

#[derive(Debug)]
struct ExitCase {
    policy: RestartPolicy,
    max_retries: Option<u32>,
    status: ExitStatus,
    phase: Phase,
    reason: Reason,
    crash_dump: bool,
    restarts: bool,
}

#[test]
fn an_exit_leads_to_the_phase_its_restart_policy_says() {
    use ExitStatus::{Code, Signal as Sig};
    use RestartPolicy::*;
    #[rustfmt::skip]
    let cases = [
        // policy, maxRetries, exit, phase, reason, crash dump, restarts
        (OnFailure, None, Code(0), Phase::Completed, Reason::Completed, false, false),
        (OnFailure, None, Code(1), Phase::Recovering, Reason::Error, true, true),
        (OnFailure, None, Sig(9), Phase::Recovering, Reason::Crashed, true, true),
        (OnFailure, Some(0), Code(1), Phase::Failed, Reason::Error, true, false),
        (Never, None, Code(0), Phase::Completed, Reason::Completed, false, false),
        (Never, None, Code(1), Phase::Failed, Reason::Error, true, false),
        (Never, None, Sig(11), Phase::Failed, Reason::Crashed, true, false),
        (Never, Some(5), Code(3), Phase::Failed, Reason::Error, true, false),
        (Always, None, Code(0), Phase::Recovering, Reason::Completed, false, true),
        (Always, None, Code(2), Phase::Recovering, Reason::Error, true, true),
        (Always, None, Sig(6), Phase::Recovering, Reason::Crashed, true, true),
    ];
    for (policy, max_retries, status, phase, reason, crash_dump, restarts) in cases {
        let c = ExitCase {
            policy,
            max_retries,
            status,
            phase,
            reason,
            crash_dump,
            restarts,
        };
        let mut w = running(|s| {
            s.restart_policy = c.policy;
            s.max_retries = c.max_retries;
        });
        w.advance(s(5));
        w.exit("a", c.status);
        let plan = w.reconcile();

        assert_eq!(w.phase("a"), c.phase, "{c:?}");
        let last = w.last_exit("a");
        assert_eq!(last.reason, c.reason, "{c:?}");
        assert_eq!(last.status, Some(c.status), "{c:?}");
        assert_eq!(last.attempt, 1, "{c:?}");
        assert_eq!(last.started_at, Some(t0()), "{c:?}");
        assert_eq!(last.finished_at, t0() + s(5), "{c:?}");
        assert_eq!(last.crash_dump.is_some(), c.crash_dump, "{c:?}");
        let dumps = crash_dumps(&plan);
        if c.crash_dump {
            assert_eq!(dumps, [&last], "{c:?}");
        } else {
            assert!(dumps.is_empty(), "{c:?}");
        }
        assert!(spawns(&plan).is_empty(), "{c:?}: restarted before backoff");
        assert_eq!(status_writes(&plan), ["a"], "{c:?}");

        if c.restarts {
            let until = t0() + s(6);
            assert_eq!(w.rec("a").run, Run::Backoff { until }, "{c:?}");
            assert_eq!(plan.wake_at, Some(until), "{c:?}");
            assert_eq!(w.rec("a").outcome(), None, "{c:?}");
            w.advance(s(1));
            assert_eq!(spawns(&w.step()), [("a", 2)], "{c:?}");
            assert_eq!(w.rec("a").restarts, 1, "{c:?}");
        } else {
            assert_eq!(plan.wake_at, None, "{c:?}");
            let outcome = w.rec("a").outcome().cloned().unwrap();
            assert_eq!(outcome.reason, c.reason, "{c:?}");
            assert_eq!(outcome.finished_at, t0() + s(5), "{c:?}");
            w.advance(s(3600));
            assert_eq!(
                w.step(),
                Plan::default(),
                "{c:?}: a finished session stays put"
            );
        }
    }
}

#[test]
fn a_process_killed_by_a_signal_it_was_not_sent_is_crashed_and_says_which() {
    let mut w = running(|_| {});
    w.advance(s(2));
    w.exit("a", ExitStatus::Signal(Signal::SIGSEGV as i32));
    w.reconcile();
    let last = w.last_exit("a");
    assert_eq!(last.reason, Reason::Crashed);
    assert_eq!(last.message, "killed by signal SIGSEGV");
    assert_eq!(w.phase("a"), Phase::Recovering);
}

#[test]
fn the_backoff_starts_at_the_initial_delay_doubles_and_is_capped_at_max_delay() {
    let mut w = running(|s| {
        s.max_retries = Some(10);
        s.backoff = Backoff {
            initial_delay: secs(1),
            multiplier: 2.0,
            max_delay: secs(5),
            reset_after: secs(600),
        };
    });
    for (i, delay) in [1, 2, 4, 5, 5, 5].into_iter().enumerate() {
        let failures = i as u32 + 1;
        w.advance(ms(500));
        w.exit("a", ExitStatus::Code(1));
        let exited_at = w.now;
        let plan = w.reconcile();
        let until = exited_at + s(delay);
        assert_eq!(w.rec("a").run, Run::Backoff { until }, "failure {failures}");
        assert_eq!(plan.wake_at, Some(until), "failure {failures}");
        assert_eq!(w.rec("a").failures, failures);

        w.advance(s(delay) - ms(1));
        let early = w.step();
        assert!(
            spawns(&early).is_empty(),
            "failure {failures}: started early"
        );
        assert_eq!(early.wake_at, Some(until));
        w.advance(ms(1));
        assert_eq!(spawns(&w.step()), [("a", failures + 1)]);
    }
}

#[test]
fn max_retries_counts_the_restarts_allowed_after_failures() {
    use RestartPolicy::*;
    // policy, maxRetries, the failure that makes the session Failed
    let cases = [
        (OnFailure, None, 4),
        (OnFailure, Some(0), 1),
        (OnFailure, Some(1), 2),
        (OnFailure, Some(3), 4),
        (Always, Some(2), 3),
        (Never, None, 1),
    ];
    for (policy, max_retries, fatal) in cases {
        let ctx = format!("{policy:?} maxRetries {max_retries:?}");
        let mut w = running(|s| {
            s.restart_policy = policy;
            s.max_retries = max_retries;
        });
        for failure in 1..=fatal {
            w.advance(s(1));
            w.exit("a", ExitStatus::Code(1));
            w.reconcile();
            if failure < fatal {
                assert_eq!(w.phase("a"), Phase::Recovering, "{ctx}, failure {failure}");
                w.advance(s(3600));
                assert_eq!(spawns(&w.step()), [("a", failure + 1)], "{ctx}");
            }
        }
        assert_eq!(w.phase("a"), Phase::Failed, "{ctx}");
        assert_eq!(w.outcome_reason("a"), Some(Reason::Error), "{ctx}");
        let rec = w.rec("a");
        assert_eq!(
            (rec.attempt, rec.restarts, rec.failures),
            (fatal, fatal - 1, fatal),
            "{ctx}"
        );
        if let (Some(max), false) = (max_retries.or(Some(3)), policy == Never) {
            let message = &rec.outcome().unwrap().message;
            assert!(
                message.contains(&format!("maxRetries {max}")),
                "{ctx}: {message}"
            );
        }
        w.advance(s(36000));
        assert!(
            spawns(&w.step()).is_empty(),
            "{ctx}: a Failed session restarted"
        );
    }
}

#[test]
fn a_run_that_lasted_reset_after_resets_the_backoff() {
    // Seconds the fourth attempt ran, and the delay before the fifth.
    for (ran, delay) in [(59, 8), (60, 1), (600, 1)] {
        let mut w = running(|s| {
            s.max_retries = Some(10);
            s.backoff = Backoff {
                initial_delay: secs(1),
                multiplier: 2.0,
                max_delay: secs(100),
                reset_after: secs(60),
            };
        });
        for _ in 0..3 {
            w.advance(s(1));
            w.exit("a", ExitStatus::Code(1));
            w.reconcile();
            w.advance(s(10));
            assert_eq!(spawns(&w.step()).len(), 1);
        }
        assert_eq!(w.rec("a").failures, 3);
        w.advance(s(ran));
        w.exit("a", ExitStatus::Code(1));
        let plan = w.reconcile();
        assert_eq!(plan.wake_at, Some(w.now + s(delay)), "ran {ran}s");
        assert_eq!(
            w.rec("a").run,
            Run::Backoff {
                until: w.now + s(delay)
            }
        );
    }
}

#[test]
fn always_restarts_after_a_clean_exit_without_counting_a_failure() {
    let mut w = running(|s| s.restart_policy = RestartPolicy::Always);
    for attempt in 1..=5 {
        w.advance(s(3));
        w.exit("a", ExitStatus::Code(0));
        let plan = w.reconcile();
        assert!(crash_dumps(&plan).is_empty());
        assert_eq!(w.rec("a").failures, 0);
        // The initial delay, every time: `true` cannot hot-loop.
        assert_eq!(plan.wake_at, Some(w.now + s(1)));
        w.advance(s(1));
        assert_eq!(spawns(&w.step()), [("a", attempt + 1)]);
    }
}

#[test]
fn a_clean_exit_under_always_waits_no_longer_than_max_delay() {
    // maxDelay is the cap on every delay; backoff::delay caps the initial delay too.
    let mut w = running(|s| {
        s.restart_policy = RestartPolicy::Always;
        s.backoff.initial_delay = secs(10);
        s.backoff.max_delay = secs(5);
    });
    w.advance(s(1));
    w.exit("a", ExitStatus::Code(0));
    let plan = w.reconcile();
    assert_eq!(
        plan.wake_at,
        Some(w.now + s(5)),
        "the restart after a clean exit exceeds maxDelay"
    );
}

#[test]
fn a_command_not_found_in_path_or_at_an_absolute_path_is_not_retried() {
    for program in ["missing-binary", "/opt/nowhere/tool"] {
        let mut w = World::new();
        w.put("a", |s| s.command = Some(vec![program.into()]));
        assert_eq!(spawns(&w.step_failing(Reason::CommandNotFound)), [("a", 1)]);
        let plan = w.reconcile();
        assert_eq!(
            crash_dumps(&plan).len(),
            1,
            "{program}: the dump is written"
        );
        assert_eq!(w.phase("a"), Phase::Failed, "{program}: no backoff forever");
        let o = w.rec("a").outcome().cloned().expect("an outcome");
        assert_eq!(o.reason, Reason::CommandNotFound);
        assert!(o.message.contains("not retried"), "{}", o.message);
        w.advance(s(3600));
        assert!(spawns(&w.reconcile()).is_empty(), "{program}: never again");
        // Fixing the manifest starts a fresh run.
        w.put("a", |s| s.command = Some(vec!["true".into()]));
        assert_eq!(spawns(&w.reconcile()), [("a", 1)], "{program}");
    }
    // A relative path (against workingDir) may appear: it backs off.
    let mut w = World::new();
    w.put("a", |s| s.command = Some(vec!["./bin/tool".into()]));
    w.step_failing(Reason::CommandNotFound);
    w.reconcile();
    assert_eq!(w.phase("a"), Phase::Recovering);
}

#[test]
fn a_spawn_that_fails_is_a_failed_attempt_with_backoff_and_a_crash_dump() {
    for reason in [
        Reason::CommandNotFound,
        Reason::PermissionDenied,
        Reason::SpawnFailed,
    ] {
        let mut w = World::new();
        // A relative command may appear (a build step): it is retried.
        w.put("a", |s| s.command = Some(vec!["./bin/tool".into()]));
        let mut expected_delay = 1;
        for attempt in 1..=4u32 {
            let plan = w.step_failing(reason);
            assert_eq!(spawns(&plan), [("a", attempt)], "{reason:?}");
            let failed_at = w.now;
            let plan = w.reconcile();
            let dumps = crash_dumps(&plan);
            assert_eq!(dumps.len(), 1, "{reason:?}");
            assert_eq!(dumps[0].reason, reason);
            assert_eq!(dumps[0].status, None, "no process, no exit status");
            assert_eq!(dumps[0].attempt, attempt);
            assert!(dumps[0].crash_dump.is_some());
            assert!(spawns(&plan).is_empty(), "{reason:?}: hot loop");
            // No hot loop: reconciling at the same instant plans nothing.
            assert_eq!(w.reconcile().actions, [], "{reason:?}");
            if attempt < 4 {
                assert_eq!(w.phase("a"), Phase::Recovering);
                assert_eq!(plan.wake_at, Some(failed_at + s(expected_delay)));
                w.advance(s(expected_delay) - ms(1));
                assert!(spawns(&w.reconcile()).is_empty());
                w.advance(ms(1));
                expected_delay *= 2;
            }
        }
        assert_eq!(w.phase("a"), Phase::Failed, "{reason:?}");
        assert_eq!(w.outcome_reason("a"), Some(reason));
        assert_eq!(w.last_exit("a").reason, reason);
    }
}

// ---------------------------------------------------------------------------
// Timeouts and deadlines
// ---------------------------------------------------------------------------

#[test]
fn a_timeout_sends_the_stop_signal_then_sigkill_after_the_grace_period() {
    let mut w = World::new();
    w.put("a", |s| {
        s.timeout = Some(secs(30));
        s.stop_signal = SignalName(Signal::SIGINT);
        s.termination_grace_period = secs(10);
        s.max_retries = Some(0);
    });
    w.step();
    // Once the process runs, the controller asks to be woken at its timeout.
    assert_eq!(w.reconcile().wake_at, Some(t0() + s(30)));

    w.advance(s(29));
    let plan = w.reconcile();
    assert!(signals(&plan).is_empty());
    assert_eq!(plan.wake_at, Some(t0() + s(30)));

    w.advance(s(1));
    let plan = w.reconcile();
    assert_eq!(signals(&plan), [("a", Signal::SIGINT)]);
    assert_eq!(plan.wake_at, Some(t0() + s(40)), "woken at the kill time");
    assert_eq!(w.stop_reason("a"), Some(Reason::TimedOut));
    assert_no_effects(&w.reconcile(), "stop already sent");

    w.advance(s(9));
    let plan = w.reconcile();
    assert!(signals(&plan).is_empty());
    assert_eq!(plan.wake_at, Some(t0() + s(40)));

    w.advance(s(1));
    let plan = w.reconcile();
    assert_eq!(signals(&plan), [("a", Signal::SIGKILL)]);
    assert_eq!(plan.wake_at, None);
    assert_eq!(w.reconcile(), Plan::default(), "SIGKILL is sent once");

    w.advance(ms(10));
    w.exit("a", ExitStatus::Signal(Signal::SIGKILL as i32));
    let plan = w.reconcile();
    let last = w.last_exit("a");
    assert_eq!(last.reason, Reason::TimedOut);
    assert_eq!(last.status, Some(ExitStatus::Signal(9)));
    assert_eq!(crash_dumps(&plan), [&last]);
    assert_eq!(w.phase("a"), Phase::TimedOut, "no retry left");
    assert_eq!(w.outcome_reason("a"), Some(Reason::TimedOut));
    assert!(spawns(&plan).is_empty());
}

#[test]
fn a_timed_out_attempt_with_retries_left_is_a_failure_and_restarts_after_backoff() {
    let mut w = World::new();
    w.put("a", |s| s.timeout = Some(secs(30)));
    w.step();
    w.advance(s(30));
    assert_eq!(signals(&w.reconcile()), [("a", Signal::SIGTERM)]);
    // The session handles SIGTERM and exits before the grace period ends.
    w.advance(s(2));
    w.exit("a", ExitStatus::Code(143));
    let plan = w.reconcile();
    assert_eq!(w.last_exit("a").reason, Reason::TimedOut);
    assert_eq!(crash_dumps(&plan).len(), 1);
    assert_eq!(w.phase("a"), Phase::Recovering);
    assert_eq!(w.rec("a").failures, 1);
    w.advance(s(1));
    let plan = w.step();
    assert_eq!(spawns(&plan), [("a", 2)]);
    assert!(
        signals(&plan).is_empty(),
        "no SIGKILL for an exited process"
    );
    // The new attempt has its own timeout.
    assert_eq!(w.reconcile().wake_at, Some(w.now + s(30)));
}

#[test]
fn an_active_deadline_ends_the_whole_session_as_timed_out_deadline_exceeded() {
    let mut w = World::new();
    w.put("a", |s| {
        s.restart_policy = RestartPolicy::Always;
        s.active_deadline = Some(secs(60));
    });
    w.step();
    assert_eq!(w.reconcile().wake_at, Some(t0() + s(60)));
    w.advance(s(60));
    let plan = w.reconcile();
    assert_eq!(signals(&plan), [("a", Signal::SIGTERM)]);
    assert_eq!(w.stop_reason("a"), Some(Reason::DeadlineExceeded));
    w.advance(s(1));
    w.exit("a", ExitStatus::Code(0));
    let plan = w.reconcile();
    assert_eq!(w.phase("a"), Phase::TimedOut);
    assert_eq!(w.outcome_reason("a"), Some(Reason::DeadlineExceeded));
    assert_eq!(w.last_exit("a").reason, Reason::DeadlineExceeded);
    assert_eq!(crash_dumps(&plan).len(), 1);
    w.advance(s(3600));
    assert!(
        spawns(&w.step()).is_empty(),
        "Always does not restart past the deadline"
    );
}

#[test]
fn the_active_deadline_counts_across_attempts() {
    let mut w = running(|s| s.active_deadline = Some(secs(60)));
    w.advance(s(20));
    w.exit("a", ExitStatus::Code(1));
    w.reconcile();
    w.advance(s(1));
    assert_eq!(spawns(&w.step()), [("a", 2)]);
    assert_eq!(
        w.reconcile().wake_at,
        Some(t0() + s(60)),
        "measured from the first attempt"
    );
    w.advance(s(39));
    assert_eq!(signals(&w.reconcile()), [("a", Signal::SIGTERM)]);
}

#[test]
fn an_active_deadline_passing_during_backoff_ends_the_session() {
    let mut w = running(|s| {
        s.active_deadline = Some(secs(60));
        s.backoff.initial_delay = secs(30);
    });
    w.advance(s(50));
    w.exit("a", ExitStatus::Code(1));
    let plan = w.reconcile();
    assert_eq!(
        w.rec("a").run,
        Run::Backoff {
            until: t0() + s(80)
        }
    );
    assert_eq!(plan.wake_at, Some(t0() + s(60)), "the deadline comes first");
    w.advance(s(10));
    let plan = w.step();
    assert!(spawns(&plan).is_empty());
    assert_eq!(w.phase("a"), Phase::TimedOut);
    assert_eq!(w.outcome_reason("a"), Some(Reason::DeadlineExceeded));
    w.advance(s(30));
    assert!(spawns(&w.step()).is_empty());
}

// ---------------------------------------------------------------------------
// Spec changes and suspension
// ---------------------------------------------------------------------------

#[test]
fn a_spec_change_while_running_stops_gracefully_then_starts_fresh_with_attempt_1() {
    let mut w = running(|_| {});
    // A failed first attempt, so that there is something to reset.
    w.advance(s(1));
    w.exit("a", ExitStatus::Code(1));
    w.reconcile();
    w.advance(s(1));
    w.step();
    assert_eq!((w.rec("a").attempt, w.rec("a").restarts), (2, 1));

    w.advance(s(5));
    w.edit("a", |s| {
        s.env.insert("MODE".into(), "new".into());
    });
    assert_eq!(w.generation("a"), 2);
    let plan = w.reconcile();
    assert_eq!(signals(&plan), [("a", Signal::SIGTERM)]);
    assert!(
        spawns(&plan).is_empty(),
        "no second process next to the old one"
    );
    assert_eq!(plan.wake_at, Some(w.now + s(10)));
    assert_eq!(w.stop_reason("a"), Some(Reason::SpecChanged));
    assert_no_effects(&w.reconcile(), "stop already sent");

    w.advance(s(2));
    w.exit("a", ExitStatus::Signal(Signal::SIGTERM as i32));
    let plan = w.step();
    assert!(
        crash_dumps(&plan).is_empty(),
        "a stop for a new spec is no crash"
    );
    assert_eq!(spawns(&plan), [("a", 1)]);
    let rec = w.rec("a");
    assert_eq!(rec.generation, 2);
    assert_eq!((rec.attempt, rec.restarts, rec.failures), (1, 0, 0));
    assert_eq!(rec.series_started_at, Some(w.now));
    assert_eq!(rec.last_exit.as_ref().unwrap().reason, Reason::SpecChanged);
    assert_eq!(w.phase("a"), Phase::Running);
}

#[test]
fn a_spec_change_whose_old_process_ignores_the_stop_is_killed_after_the_grace_period() {
    let mut w = running(|s| s.termination_grace_period = secs(3));
    w.edit("a", |s| s.command = Some(vec!["sleep".into(), "1".into()]));
    assert_eq!(signals(&w.reconcile()), [("a", Signal::SIGTERM)]);
    w.advance(s(3));
    let plan = w.reconcile();
    assert_eq!(signals(&plan), [("a", Signal::SIGKILL)]);
    assert!(spawns(&plan).is_empty());
    w.exit("a", ExitStatus::Signal(9));
    assert_eq!(spawns(&w.step()), [("a", 1)]);
}

#[test]
fn a_spec_change_of_a_finished_session_runs_it_again() {
    use RestartPolicy::*;
    for (policy, status, phase) in [
        (OnFailure, ExitStatus::Code(0), Phase::Completed),
        (Never, ExitStatus::Code(1), Phase::Failed),
    ] {
        let mut w = running(|s| s.restart_policy = policy);
        w.advance(s(1));
        w.exit("a", status);
        w.reconcile();
        assert_eq!(w.phase("a"), phase);
        w.advance(s(60));
        w.edit("a", |s| {
            s.env.insert("X".into(), "1".into());
        });
        let plan = w.step();
        assert_eq!(spawns(&plan), [("a", 1)], "{phase:?}");
        assert_eq!(w.rec("a").outcome(), None);
        assert_eq!(w.phase("a"), Phase::Running);
    }
}

#[test]
fn a_spec_change_during_backoff_starts_the_new_spec_at_once() {
    let mut w = running(|s| s.backoff.initial_delay = secs(60));
    w.advance(s(1));
    w.exit("a", ExitStatus::Code(1));
    w.reconcile();
    w.edit("a", |s| {
        s.env.insert("FIX".into(), "1".into());
    });
    assert_eq!(spawns(&w.step()), [("a", 1)]);
    assert_eq!(w.rec("a").failures, 0);
}

#[test]
fn suspending_a_running_session_cancels_it_and_unsuspending_starts_a_fresh_run() {
    let mut w = running(|s| s.stop_signal = SignalName(Signal::SIGHUP));
    w.advance(s(5));
    w.edit("a", |s| s.suspend = true);
    let plan = w.reconcile();
    assert_eq!(signals(&plan), [("a", Signal::SIGHUP)]);
    assert!(spawns(&plan).is_empty());
    assert_eq!(w.stop_reason("a"), Some(Reason::Suspended));

    w.advance(s(1));
    w.exit("a", ExitStatus::Signal(Signal::SIGHUP as i32));
    let plan = w.reconcile();
    assert!(crash_dumps(&plan).is_empty(), "a suspension is no crash");
    assert!(spawns(&plan).is_empty());
    assert_eq!(w.phase("a"), Phase::Cancelled);
    assert_eq!(w.outcome_reason("a"), Some(Reason::Suspended));
    assert_eq!(w.reconcile(), Plan::default(), "settled");
    w.advance(s(3600));
    assert!(spawns(&w.step()).is_empty());

    w.edit("a", |s| s.suspend = false);
    let plan = w.step();
    assert_eq!(spawns(&plan), [("a", 1)]);
    assert_eq!(w.phase("a"), Phase::Running);
    assert_eq!(w.rec("a").restarts, 0);
}

#[test]
fn a_session_declared_suspended_never_starts_until_resumed() {
    let mut w = World::new();
    w.put("a", |s| s.suspend = true);
    let plan = w.reconcile();
    assert!(spawns(&plan).is_empty());
    assert_eq!(status_writes(&plan), ["a"]);
    assert_eq!(w.phase("a"), Phase::Cancelled);
    assert_eq!(w.outcome_reason("a"), Some(Reason::Suspended));
    assert_eq!(w.reconcile(), Plan::default());
    w.edit("a", |s| s.suspend = false);
    assert_eq!(spawns(&w.step()), [("a", 1)]);
}

#[test]
fn suspending_a_session_in_backoff_cancels_it_without_a_signal() {
    let mut w = running(|_| {});
    w.advance(s(1));
    w.exit("a", ExitStatus::Code(1));
    w.reconcile();
    w.edit("a", |s| s.suspend = true);
    let plan = w.step();
    assert!(spawns(&plan).is_empty() && signals(&plan).is_empty());
    assert_eq!(w.phase("a"), Phase::Cancelled);
}

// ---------------------------------------------------------------------------
// Deletion and garbage collection
// ---------------------------------------------------------------------------

#[test]
fn a_deleted_running_session_gets_sigterm_and_is_forgotten_after_it_exits() {
    let mut w = running(|_| {});
    let pid = w.pid("a");
    w.advance(s(5));
    w.remove("a");
    let plan = w.reconcile();
    assert_eq!(
        plan.actions,
        [Action::Signal {
            name: "a".into(),
            pid,
            signal: Signal::SIGTERM
        }]
    );
    assert_eq!(plan.wake_at, Some(w.now + s(10)));
    assert_eq!(w.stop_reason("a"), Some(Reason::Removed));
    assert_eq!(w.reconcile().actions, [], "stop already sent");

    w.advance(s(1));
    w.exit("a", ExitStatus::Signal(Signal::SIGTERM as i32));
    let plan = w.reconcile();
    // A tombstone with its last exit (why it stopped), then forgotten.
    let [Action::Tombstone { name, record }, Action::Forget { name: forgotten }] =
        &plan.actions[..]
    else {
        panic!("a tombstone then a forget: {plan:?}");
    };
    assert_eq!((name.as_str(), forgotten.as_str()), ("a", "a"));
    assert_eq!(
        record.last_exit.as_ref().map(|e| e.reason),
        Some(Reason::Removed)
    );
    assert_eq!(plan.wake_at, None);
    assert!(!w.state.sessions.contains_key("a"));
    assert_eq!(w.reconcile(), Plan::default());
}

#[test]
fn a_deleted_session_that_ignores_sigterm_is_killed_then_forgotten() {
    let mut w = running(|_| {});
    w.remove("a");
    w.reconcile();
    w.advance(s(10));
    assert_eq!(signals(&w.reconcile()), [("a", Signal::SIGKILL)]);
    w.exit("a", ExitStatus::Signal(9));
    assert_eq!(forgets(&w.reconcile()), ["a"]);
}

#[test]
fn a_deleted_session_is_stopped_with_its_own_stop_signal_and_grace_period() {
    // "Stopping always means: stopSignal to the whole process group, wait
    // terminationGracePeriod, then SIGKILL" (issue 3), deletion included.
    let mut w = running(|s| {
        s.stop_signal = SignalName(Signal::SIGINT);
        s.termination_grace_period = secs(30);
    });
    w.remove("a");
    let plan = w.reconcile();
    assert_eq!(
        signals(&plan),
        [("a", Signal::SIGINT)],
        "stopSignal ignored"
    );
    assert_eq!(
        plan.wake_at,
        Some(w.now + s(30)),
        "terminationGracePeriod ignored"
    );
}

#[test]
fn a_deleted_session_without_a_process_is_forgotten_at_once() {
    // How the session got where it is, then the phase it is in.
    type Setup = fn(&mut World);
    let cases: [(&str, Setup, Phase); 5] = [
        (
            "completed",
            |w| {
                w.put("a", |_| {});
                w.step();
                w.exit("a", ExitStatus::Code(0));
            },
            Phase::Completed,
        ),
        (
            "recovering",
            |w| {
                w.put("a", |_| {});
                w.step();
                w.exit("a", ExitStatus::Code(1));
            },
            Phase::Recovering,
        ),
        (
            "cancelled",
            |w| w.put("a", |s| s.suspend = true),
            Phase::Cancelled,
        ),
        (
            "waiting for a pool",
            |w| w.put("a", |s| s.pool = Some("nowhere".into())),
            Phase::Pending,
        ),
        (
            "queued",
            |w| {
                w.pool("p", Some(1), 10);
                w.put("first", |s| s.pool = Some("p".into()));
                w.advance(s(1));
                w.put("a", |s| s.pool = Some("p".into()));
            },
            Phase::Queued,
        ),
    ];
    for (what, setup, phase) in cases {
        let mut w = World::new();
        setup(&mut w);
        w.step();
        w.reconcile();
        assert_eq!(w.phase("a"), phase, "{what}");
        w.remove("a");
        let plan = w.reconcile();
        assert_eq!(forgets(&plan), ["a"], "{what}");
        assert!(signals(&plan).is_empty(), "{what}");
        assert!(!status_writes(&plan).contains(&"a"), "{what}");
        assert!(!w.state.sessions.contains_key("a"), "{what}");
        assert!(
            forgets(&w.reconcile()).is_empty(),
            "{what}: forgotten twice"
        );
    }
}

#[test]
fn a_session_deleted_while_its_spawn_is_in_flight_is_stopped_once_it_runs() {
    let mut w = World::new();
    w.put("a", |_| {});
    w.reconcile();
    w.remove("a");
    assert_eq!(w.reconcile(), Plan::default(), "nothing to signal yet");
    w.spawned("a");
    assert_eq!(signals(&w.reconcile()), [("a", Signal::SIGTERM)]);
    w.exit("a", ExitStatus::Code(0));
    assert_eq!(forgets(&w.reconcile()), ["a"]);
}

#[test]
fn ttl_after_finished_collects_garbage_once_at_the_right_time() {
    for (policy, status) in [
        (RestartPolicy::OnFailure, ExitStatus::Code(0)),
        (RestartPolicy::Never, ExitStatus::Code(1)),
    ] {
        let mut w = running(|s| {
            s.restart_policy = policy;
            s.ttl_after_finished = Some(secs(60));
        });
        w.advance(s(5));
        w.exit("a", status);
        let finished = w.now;
        let plan = w.reconcile();
        assert!(phase_of(w.rec("a")).is_terminal());
        assert_eq!(plan.wake_at, Some(finished + s(60)));
        assert!(collects(&plan).is_empty());

        w.advance(s(59));
        let plan = w.reconcile();
        assert!(collects(&plan).is_empty(), "collected early");
        assert_eq!(plan.wake_at, Some(finished + s(60)));

        w.advance(s(1));
        let plan = w.reconcile();
        assert_eq!(collects(&plan), ["a"]);
        assert_eq!(plan.wake_at, None);
        assert!(w.rec("a").collected);
        assert!(collects(&w.reconcile()).is_empty(), "collected twice");
        w.advance(s(3600));
        assert!(collects(&w.reconcile()).is_empty(), "collected twice");

        // The shell deletes the manifest; the session is then forgotten.
        w.remove("a");
        assert_eq!(forgets(&w.reconcile()), ["a"]);
    }
}

#[test]
fn ttl_after_finished_does_not_apply_while_a_session_restarts() {
    let mut w = running(|s| s.ttl_after_finished = Some(secs(1)));
    w.advance(s(5));
    w.exit("a", ExitStatus::Code(1));
    w.advance(s(1));
    let plan = w.step();
    assert!(collects(&plan).is_empty());
    assert_eq!(spawns(&plan), [("a", 2)]);
}

#[test]
fn a_suspended_session_is_not_garbage_collected() {
    // `suspend: false` again starts a fresh run (issue 3): collecting a
    // suspended session would delete the manifest the user means to resume.
    let mut w = running(|s| s.ttl_after_finished = Some(secs(60)));
    w.edit("a", |s| s.suspend = true);
    w.reconcile();
    w.exit("a", ExitStatus::Signal(15));
    w.reconcile();
    assert_eq!(w.phase("a"), Phase::Cancelled);
    w.advance(s(3600));
    let plan = w.reconcile();
    assert!(
        collects(&plan).is_empty(),
        "a suspended session was garbage-collected (manifest deleted)"
    );
}

// ---------------------------------------------------------------------------
// Shutdown and stop requests
// ---------------------------------------------------------------------------

#[test]
fn shutting_down_stops_every_running_session_and_starts_nothing() {
    let mut w = World::new();
    w.put("a", |_| {});
    w.put("b", |s| s.stop_signal = SignalName(Signal::SIGINT));
    w.put("c", |s| s.termination_grace_period = secs(2));
    w.put("recovering", |_| {});
    w.step();
    w.exit("recovering", ExitStatus::Code(1));
    w.reconcile();
    w.advance(s(5));
    w.put("new", |_| {});

    w.state.shutting_down = true;
    let plan = w.reconcile();
    assert!(spawns(&plan).is_empty());
    assert_eq!(
        signals(&plan),
        [
            ("a", Signal::SIGTERM),
            ("b", Signal::SIGINT),
            ("c", Signal::SIGTERM)
        ]
    );
    for name in ["a", "b", "c"] {
        assert_eq!(w.stop_reason(name), Some(Reason::ControllerStopped));
    }
    assert_eq!(plan.wake_at, Some(w.now + s(2)));

    w.exit("a", ExitStatus::Signal(15));
    w.exit("b", ExitStatus::Code(0));
    w.advance(s(2));
    let plan = w.reconcile();
    assert_eq!(signals(&plan), [("c", Signal::SIGKILL)]);
    assert!(crash_dumps(&plan).is_empty(), "a drain is no crash");
    w.exit("c", ExitStatus::Signal(9));
    w.advance(s(60));
    let plan = w.reconcile();
    assert!(spawns(&plan).is_empty(), "nothing starts while draining");
    assert!(crash_dumps(&plan).is_empty(), "a drain is no crash");
    assert!(w.state.all_stopped());
    for name in ["a", "b", "c"] {
        assert!(matches!(w.rec(name).run, Run::Idle(_)), "{name}");
        assert_eq!(
            w.wait(name),
            Some((Phase::Pending, Reason::ControllerStopped, None)),
            "{name}"
        );
        assert_eq!(w.last_exit(name).reason, Reason::ControllerStopped);
    }
    assert_eq!(w.phase("recovering"), Phase::Recovering);
    assert!(matches!(w.rec("new").run, Run::Idle(_)));
    assert_eq!(w.reconcile(), Plan::default());
}

#[test]
fn a_spawn_in_flight_during_shutdown_is_stopped_once_it_runs() {
    let mut w = World::new();
    w.put("a", |_| {});
    w.reconcile();
    w.state.shutting_down = true;
    assert_eq!(w.reconcile(), Plan::default());
    w.spawned("a");
    assert_eq!(signals(&w.reconcile()), [("a", Signal::SIGTERM)]);
}

#[test]
fn a_policy_violation_or_a_token_budget_stop_is_final_and_not_retried() {
    for reason in [Reason::PolicyViolation, Reason::TokenBudgetExceeded] {
        let mut w = running(|s| s.restart_policy = crate::api::RestartPolicy::Always);
        w.event(Event::StopRequested {
            name: "a".into(),
            reason,
            message: "broke the rule".into(),
        });
        w.reconcile();
        w.advance(s(1));
        w.exit("a", ExitStatus::Signal(Signal::SIGTERM as i32));
        w.reconcile();
        assert_eq!(w.phase("a"), Phase::Failed, "{reason:?}");
        assert_eq!(w.last_exit("a").reason, reason);
    }
}

#[test]
fn a_stop_requested_by_monitoring_signals_and_records_its_reason() {
    for reason in [
        Reason::MemoryLimitExceeded,
        Reason::CpuTimeLimitExceeded,
        Reason::Stale,
    ] {
        let mut w = running(|s| s.stop_signal = SignalName(Signal::SIGUSR1));
        let pid = w.pid("a");
        w.advance(s(5));
        let request = Event::StopRequested {
            name: "a".into(),
            reason,
            message: "over the limit".into(),
        };
        w.event(request.clone());
        let plan = w.reconcile();
        assert_eq!(
            plan,
            Plan {
                actions: vec![
                    Action::Signal {
                        name: "a".into(),
                        pid,
                        signal: Signal::SIGUSR1
                    },
                    write("a")
                ],
                wake_at: Some(w.now + s(10)),
                due: BTreeMap::from([("a".to_string(), w.now + s(10))]),
            },
            "{reason:?}"
        );
        // Asking again while the stop is under way changes nothing.
        w.event(request);
        assert!(signals(&w.reconcile()).is_empty(), "{reason:?}");

        w.advance(s(1));
        w.exit("a", ExitStatus::Signal(Signal::SIGUSR1 as i32));
        let plan = w.reconcile();
        let last = w.last_exit("a");
        assert_eq!(last.reason, reason);
        assert_eq!(last.message, "over the limit");
        assert_eq!(crash_dumps(&plan), [&last], "{reason:?}");
        assert_eq!(w.phase("a"), Phase::Recovering, "{reason:?}");
    }
}

#[test]
fn a_stop_requested_for_a_session_that_is_not_running_is_ignored() {
    let mut w = World::new();
    w.put("a", |_| {});
    w.reconcile();
    w.event(Event::StopRequested {
        name: "a".into(),
        reason: Reason::Stale,
        message: "silent".into(),
    });
    let plan = w.reconcile();
    assert!(signals(&plan).is_empty());
}

// ---------------------------------------------------------------------------
// Agent runs: SIGINT-first stops and verdicts
// ---------------------------------------------------------------------------

fn agent(s: &mut SessionSpec) {
    s.command = None;
    s.agent = Some(Box::default());
    s.termination_grace_period = secs(10);
}

#[test]
fn an_agent_run_is_stopped_with_sigint_then_its_stop_signal_then_sigkill_within_the_grace_period() {
    // What causes the stop, applied to a running agent session `a`.
    type Cause = fn(&mut World);
    let cases: [(&str, Cause); 6] = [
        ("timeout", |w| w.advance(s(30))),
        ("suspend", |w| w.edit("a", |s| s.suspend = true)),
        ("spec change", |w| {
            w.edit("a", |s| {
                s.env.insert("V".into(), "2".into());
            })
        }),
        ("shutdown", |w| w.state.shutting_down = true),
        ("stop request", |w| {
            w.event(Event::StopRequested {
                name: "a".into(),
                reason: Reason::TokenBudgetExceeded,
                message: "over budget".into(),
            })
        }),
        ("deletion", |w| w.remove("a")),
    ];
    for (cause, apply) in cases {
        let mut w = running(|s| {
            agent(s);
            s.timeout = Some(secs(30));
            s.stop_signal = SignalName(Signal::SIGTERM);
        });
        apply(&mut w);
        let start = w.now;
        let plan = w.reconcile();
        assert_eq!(signals(&plan), [("a", Signal::SIGINT)], "{cause}");
        assert_eq!(plan.wake_at, Some(start + s(5)), "{cause}: halfway");
        w.advance(s(5));
        let plan = w.reconcile();
        assert_eq!(signals(&plan), [("a", Signal::SIGTERM)], "{cause}");
        assert_eq!(plan.wake_at, Some(start + s(10)), "{cause}");
        assert!(signals(&w.reconcile()).is_empty(), "{cause}: sent twice");
        w.advance(s(5));
        assert_eq!(signals(&w.reconcile()), [("a", Signal::SIGKILL)], "{cause}");
    }
}

fn verdict(reason: Reason, retry: bool, min_delay: Option<u64>) -> super::state::Verdict {
    super::state::Verdict {
        reason,
        message: format!("{reason:?}"),
        min_delay: min_delay.map(std::time::Duration::from_secs),
        retry,
        quota: None,
    }
}

#[test]
fn an_agent_verdict_decides_how_the_attempt_ended() {
    use ExitStatus::Code;
    #[rustfmt::skip]
    let cases = [
        // verdict reason, retry, min delay, exit, phase, delay before the next attempt
        (Reason::Completed, true, None, Code(0), Phase::Completed, None),
        (Reason::Completed, true, None, Code(1), Phase::Completed, None),
        (Reason::AgentAbnormal, true, None, Code(0), Phase::Recovering, Some(1)),
        (Reason::AgentFailed, true, None, Code(1), Phase::Recovering, Some(1)),
        // A rate limit waits longer than the backoff (even past maxDelay).
        (Reason::AgentFailed, true, Some(600), Code(1), Phase::Recovering, Some(600)),
        // An auth failure does not hammer the API.
        (Reason::AgentFailed, false, None, Code(1), Phase::Failed, None),
    ];
    for (reason, retry, min_delay, status, phase, delay) in cases {
        let ctx = format!("{reason:?} retry {retry} min {min_delay:?} {status:?}");
        let mut w = running(agent);
        let pid = w.pid("a");
        w.advance(s(5));
        w.event(Event::Judged {
            name: "a".into(),
            pid,
            verdict: verdict(reason, retry, min_delay),
        });
        w.exit("a", status);
        let plan = w.reconcile();
        assert_eq!(w.phase("a"), phase, "{ctx}");
        assert_eq!(w.last_exit("a").reason, reason, "{ctx}");
        assert_eq!(
            crash_dumps(&plan).len(),
            usize::from(reason != Reason::Completed),
            "{ctx}"
        );
        match delay {
            Some(d) => assert_eq!(
                w.rec("a").run,
                Run::Backoff {
                    until: w.now + s(d)
                },
                "{ctx}"
            ),
            None => assert!(!matches!(w.rec("a").run, Run::Backoff { .. }), "{ctx}"),
        }
        if phase == Phase::Failed {
            assert_eq!(w.outcome_reason("a"), Some(reason), "{ctx}");
            w.advance(s(3600));
            assert!(spawns(&w.step()).is_empty(), "{ctx}: retried");
        }
    }
}

#[test]
fn a_verdict_does_not_outlive_its_attempt() {
    let mut w = running(agent);
    let pid = w.pid("a");
    w.event(Event::Judged {
        name: "a".into(),
        pid: 99,
        verdict: verdict(Reason::Completed, true, None),
    });
    assert_eq!(w.rec("a").verdict(), None, "a verdict for another pid");
    w.event(Event::Judged {
        name: "a".into(),
        pid,
        verdict: verdict(Reason::AgentFailed, true, Some(7)),
    });
    // The process vanishes (the controller was away): its verdict goes with it.
    w.live.remove("a");
    w.event(Event::Vanished {
        name: "a".into(),
        pid,
    });
    w.reconcile();
    w.advance(s(3600));
    assert_eq!(spawns(&w.step()), [("a", 2)]);
    w.advance(s(5));
    w.exit("a", ExitStatus::Code(3));
    w.reconcile();
    assert_eq!(
        w.last_exit("a").reason,
        Reason::Error,
        "the second attempt's exit took the first attempt's verdict"
    );
}

// ---------------------------------------------------------------------------
// Pools: capacity and queue
// ---------------------------------------------------------------------------

fn in_pool(pool: &str, priority: Priority) -> impl FnOnce(&mut SessionSpec) {
    let pool = pool.to_string();
    move |s| {
        s.pool = Some(pool);
        s.priority = priority;
    }
}

fn live_names(w: &World) -> Vec<String> {
    w.state
        .sessions
        .iter()
        .filter(|(_, r)| r.run.is_live())
        .map(|(n, _)| n.clone())
        .collect()
}

#[test]
fn a_pool_of_one_starts_sessions_in_priority_order_one_by_one() {
    let mut w = World::new();
    w.pool("p", Some(1), 100);
    // First seen in an order that is neither the priority nor the name order.
    for (name, priority) in [
        ("low", Priority::Low),
        ("critical", Priority::Critical),
        ("medium", Priority::Medium),
        ("high", Priority::High),
    ] {
        w.put(name, in_pool("p", priority));
        w.advance(s(1));
    }
    let mut order = Vec::new();
    let mut queue = vec!["critical", "high", "medium", "low"];
    let queued_at = w.now;
    loop {
        let plan = w.step();
        let started = spawned_names(&plan);
        assert_eq!(started.len(), 1, "{plan:?}");
        assert_eq!(started[0], queue.remove(0));
        order.push(started[0].to_string());
        assert_eq!(live_names(&w), [started[0]], "one at a time");
        for (i, name) in queue.iter().enumerate() {
            assert_eq!(
                w.wait(name),
                Some((Phase::Queued, Reason::PoolFull, Some(i as u32 + 1))),
                "{name}"
            );
            assert_eq!(w.rec(name).wait().unwrap().queued_at, Some(queued_at));
            assert_eq!(w.phase(name), Phase::Queued);
        }
        assert_no_effects(&w.reconcile(), "settled");
        w.advance(s(10));
        w.exit(started[0], ExitStatus::Code(0));
        if queue.is_empty() {
            break;
        }
    }
    assert_eq!(order, ["critical", "high", "medium", "low"]);
    let stats = &w.state.pools["p"];
    assert_eq!(stats.total_sessions, 4);
    assert_eq!(stats.queue_waits, 3);
    assert_eq!((stats.completed, stats.runs), (4, 4));
}

#[test]
fn equal_priorities_queue_in_the_order_they_were_first_seen() {
    let mut w = World::new();
    w.pool("p", Some(1), 100);
    for name in ["zeta", "alpha", "mid"] {
        w.put(name, in_pool("p", Priority::Medium));
        w.advance(s(1));
    }
    let mut order = Vec::new();
    for _ in 0..3 {
        let plan = w.step();
        let name = spawned_names(&plan)[0].to_string();
        w.exit(&name, ExitStatus::Code(0));
        order.push(name);
    }
    assert_eq!(order, ["zeta", "alpha", "mid"]);
}

#[test]
fn the_queue_estimates_the_wait_from_the_average_run_time() {
    let mut w = World::new();
    w.pool("p", Some(1), 100);
    w.put("first", in_pool("p", Priority::Medium));
    w.step();
    w.advance(s(10));
    w.exit("first", ExitStatus::Code(0));
    for name in ["b", "c", "d"] {
        w.put(name, in_pool("p", Priority::Medium));
        w.advance(ms(1));
    }
    assert_eq!(spawned_names(&w.step()), ["b"]);
    let estimate = |w: &World, n: &str| w.rec(n).wait().unwrap().estimated_wait_seconds;
    assert_eq!(estimate(&w, "c"), Some(10));
    assert_eq!(estimate(&w, "d"), Some(20));
}

#[test]
fn a_queue_longer_than_max_queue_fails_the_newest_with_queue_full() {
    let mut w = World::new();
    w.pool("p", Some(1), 2);
    for name in ["a", "b", "c", "d"] {
        w.put(name, in_pool("p", Priority::Medium));
        w.advance(s(1));
    }
    let plan = w.step();
    assert_eq!(spawned_names(&plan), ["a"]);
    assert_eq!(
        w.wait("b"),
        Some((Phase::Queued, Reason::PoolFull, Some(1)))
    );
    assert_eq!(
        w.wait("c"),
        Some((Phase::Queued, Reason::PoolFull, Some(2)))
    );
    assert_eq!(w.phase("d"), Phase::Failed);
    assert_eq!(w.outcome_reason("d"), Some(Reason::QueueFull));
    let message = &w.rec("d").outcome().unwrap().message;
    assert!(message.contains("maxQueue 2"), "{message}");

    // Room again: b starts, and a newcomer fits in the queue.
    w.exit("a", ExitStatus::Code(0));
    w.put("e", in_pool("p", Priority::Medium));
    assert_eq!(spawned_names(&w.step()), ["b"]);
    assert_eq!(
        w.wait("c"),
        Some((Phase::Queued, Reason::PoolFull, Some(1)))
    );
    assert_eq!(
        w.wait("e"),
        Some((Phase::Queued, Reason::PoolFull, Some(2)))
    );
    assert_eq!(w.phase("d"), Phase::Failed, "QueueFull is final");
}

#[test]
fn a_session_naming_a_missing_pool_waits_pending_pool_not_found_until_it_appears() {
    let mut w = World::new();
    w.put("a", in_pool("p", Priority::Medium));
    let plan = w.reconcile();
    assert!(spawns(&plan).is_empty());
    assert_eq!(
        w.wait("a"),
        Some((Phase::Pending, Reason::PoolNotFound, None))
    );
    assert_eq!(w.phase("a"), Phase::Pending);
    assert_eq!(w.reconcile(), Plan::default());

    w.advance(s(30));
    w.pool("p", None, 100);
    assert_eq!(spawns(&w.step()), [("a", 1)]);
    assert_eq!(w.phase("a"), Phase::Running);
    assert_eq!(w.rec("a").wait(), None);
}

#[test]
fn deleting_a_pool_sends_its_queued_sessions_back_to_pending_until_it_is_recreated() {
    let mut w = World::new();
    w.pool("p", Some(1), 100);
    w.put("a", in_pool("p", Priority::Medium));
    w.advance(s(1));
    w.put("b", in_pool("p", Priority::Medium));
    w.step();
    assert_eq!(w.phase("b"), Phase::Queued);

    w.desired.pools.remove("p");
    let plan = w.step();
    assert!(spawns(&plan).is_empty() && signals(&plan).is_empty());
    assert_eq!(
        w.wait("b"),
        Some((Phase::Pending, Reason::PoolNotFound, None))
    );
    assert_eq!(
        w.phase("a"),
        Phase::Running,
        "a running member is left alone"
    );

    w.pool("p", Some(1), 100);
    assert!(spawns(&w.step()).is_empty(), "a still holds the only slot");
    assert_eq!(w.phase("b"), Phase::Queued);
    w.exit("a", ExitStatus::Code(0));
    assert_eq!(spawned_names(&w.step()), ["b"]);
}

#[test]
fn replicas_start_before_queued_sessions() {
    let mut w = World::new();
    w.pool("p", Some(2), 100);
    w.put("urgent", in_pool("p", Priority::Critical));
    w.advance(s(1));
    w.scale("p", 2, |_| {});
    let plan = w.step();
    assert_eq!(spawned_names(&plan), ["p-0", "p-1"]);
    assert_eq!(
        w.wait("urgent"),
        Some((Phase::Queued, Reason::PoolFull, Some(1)))
    );
}

#[test]
fn raising_max_concurrent_starts_queued_sessions_at_once() {
    let mut w = World::new();
    w.pool("p", Some(1), 100);
    for name in ["a", "b", "c", "d"] {
        w.put(name, in_pool("p", Priority::Medium));
        w.advance(s(1));
    }
    assert_eq!(spawned_names(&w.step()), ["a"]);
    w.pool("p", Some(3), 100);
    assert_eq!(spawned_names(&w.step()), ["b", "c"]);
    assert_eq!(
        w.wait("d"),
        Some((Phase::Queued, Reason::PoolFull, Some(1)))
    );
}

#[test]
fn lowering_max_concurrent_kills_nothing_and_starts_nothing_until_under_the_cap() {
    let mut w = World::new();
    w.pool("p", Some(3), 100);
    for name in ["a", "b", "c", "d"] {
        w.put(name, in_pool("p", Priority::Medium));
        w.advance(s(1));
    }
    assert_eq!(spawned_names(&w.step()), ["a", "b", "c"]);
    w.pool("p", Some(1), 100);
    let plan = w.step();
    assert!(signals(&plan).is_empty(), "a lowered cap kills nothing");
    assert!(spawns(&plan).is_empty());
    for name in ["a", "b"] {
        w.exit(name, ExitStatus::Code(0));
        assert!(spawns(&w.step()).is_empty(), "still at or over the cap");
    }
    w.exit("c", ExitStatus::Code(0));
    assert_eq!(spawned_names(&w.step()), ["d"]);
}

#[test]
fn a_deleted_member_still_counts_against_the_cap_until_it_exits() {
    let mut w = World::new();
    w.pool("p", Some(1), 100);
    w.put("a", in_pool("p", Priority::Medium));
    w.advance(s(1));
    w.put("b", in_pool("p", Priority::Medium));
    w.step();
    w.remove("a");
    let plan = w.step();
    assert_eq!(signals(&plan), [("a", Signal::SIGTERM)]);
    assert!(
        spawns(&plan).is_empty(),
        "b started while the deleted a is still running: two members over a cap of 1"
    );
    w.exit("a", ExitStatus::Signal(15));
    assert_eq!(spawned_names(&w.step()), ["b"]);
}

#[test]
fn a_restart_that_finds_the_pool_full_is_queued() {
    let mut w = World::new();
    w.pool("p", Some(1), 100);
    w.put("a", in_pool("p", Priority::Medium));
    w.advance(s(1));
    w.put("b", in_pool("p", Priority::Medium));
    w.step();
    w.advance(s(5));
    w.exit("a", ExitStatus::Code(1));
    // a waits out its backoff; its slot goes to b meanwhile.
    assert_eq!(spawned_names(&w.step()), ["b"]);
    w.advance(s(1));
    let plan = w.step();
    assert!(spawns(&plan).is_empty());
    assert_eq!(
        w.wait("a"),
        Some((Phase::Queued, Reason::PoolFull, Some(1)))
    );
    // The backoff is over and a waits for room: the record must say so, or
    // the status shows Recovering with a next attempt in the past and the
    // pool's queue leaves it out (render.rs maps Run::Backoff to Recovering
    // and counts only Run::Idle as queued).
    assert!(
        matches!(w.rec("a").run, Run::Idle(_)),
        "a queued restart still looks like a backoff"
    );
}

#[test]
fn a_restart_due_while_its_pool_is_gone_waits_for_the_pool_as_pending() {
    let mut w = World::new();
    w.pool("p", None, 100);
    w.put("a", in_pool("p", Priority::Medium));
    w.step();
    w.advance(s(5));
    w.exit("a", ExitStatus::Code(1));
    w.step();
    assert_eq!(w.phase("a"), Phase::Recovering);
    w.desired.pools.remove("p");
    w.advance(s(60));
    let plan = w.step();
    assert!(spawns(&plan).is_empty(), "no pool, no start");
    // Not a Recovering whose next attempt is already past: it waits for
    // its pool, as a new member does (the wait lives in Run::Idle).
    assert_eq!(
        w.wait("a"),
        Some((Phase::Pending, Reason::PoolNotFound, None))
    );
    assert_eq!(w.phase("a"), Phase::Pending);
    w.pool("p", None, 100);
    assert_eq!(spawned_names(&w.step()), ["a"]);
}

#[test]
fn a_queued_restart_still_ends_at_its_active_deadline() {
    let mut w = World::new();
    w.pool("p", Some(1), 100);
    w.put("a", |s| {
        s.pool = Some("p".into());
        s.active_deadline = Some(secs(60));
    });
    w.advance(s(1));
    w.put("b", in_pool("p", Priority::Medium));
    w.step();
    w.reconcile();
    w.advance(s(9));
    w.exit("a", ExitStatus::Code(1)); // t0+10s; a started at t0+1s: deadline t0+61s
    assert_eq!(spawned_names(&w.step()), ["b"]);
    w.advance(s(1));
    w.step();
    assert_eq!(w.phase("a"), Phase::Queued);
    w.advance(s(1));
    assert_eq!(
        w.reconcile().wake_at,
        Some(t0() + s(61)),
        "a queued session is not woken at its deadline"
    );
    w.advance(s(49));
    let plan = w.step();
    assert!(spawns(&plan).is_empty());
    assert_eq!(
        (w.phase("a"), w.outcome_reason("a")),
        (Phase::TimedOut, Some(Reason::DeadlineExceeded)),
        "a session waiting in the queue outlives its activeDeadline"
    );
}

#[test]
fn queue_wait_is_counted_once_per_spell_in_the_queue() {
    let mut w = World::new();
    w.pool("p", Some(1), 100);
    w.put("a", in_pool("p", Priority::Medium));
    w.advance(s(1));
    w.put("b", in_pool("p", Priority::Medium));
    w.step(); // b queued at t0+1s
    w.advance(s(10));
    w.exit("a", ExitStatus::Code(0));
    // A failed spawn that is retried (a CommandNotFound of a PATH name is not).
    assert_eq!(spawned_names(&w.step_failing(Reason::SpawnFailed)), ["b"]);
    w.reconcile();
    w.advance(s(1));
    assert_eq!(spawned_names(&w.step()), ["b"], "room: no queue this time");
    let stats = &w.state.pools["p"];
    assert_eq!(
        (stats.queue_waits, stats.queue_wait_seconds),
        (1, 10.0),
        "the stale queue entry of the first spell counted again"
    );
}

// ---------------------------------------------------------------------------
// Pools: replicas
// ---------------------------------------------------------------------------

fn up(w: &World, name: &str) -> bool {
    matches!(&w.rec(name).run, Run::Running(r) if r.stop.is_none())
}

#[test]
fn a_rolling_update_replaces_one_replica_at_a_time() {
    let mut w = World::new();
    w.pool("p", None, 100);
    w.scale("p", 3, |_| {});
    assert_eq!(spawned_names(&w.step()), ["p-0", "p-1", "p-2"]);
    w.reconcile();
    let names = ["p-0", "p-1", "p-2"];

    w.advance(s(10));
    w.scale("p", 3, |s| {
        s.env.insert("VERSION".into(), "2".into());
    });
    let check = |w: &World, when: &str| {
        let down = names.iter().filter(|n| !up(w, n)).count();
        assert!(down <= 1, "{when}: {down} replicas down at once");
    };
    let mut replaced = Vec::new();
    for round in 0..20 {
        let plan = w.step();
        check(&w, &format!("round {round}"));
        let stopped: Vec<&str> = signals(&plan).into_iter().map(|(n, _)| n).collect();
        assert!(stopped.len() <= 1, "round {round}: {stopped:?}");
        for name in stopped {
            assert_eq!(w.stop_reason(name), Some(Reason::SpecChanged));
            // Every lower ordinal already runs the new template.
            let ordinal: usize = name[2..].parse().unwrap();
            for lower in &names[..ordinal] {
                assert!(
                    up(&w, lower),
                    "{name} stopped before {lower} was Running again"
                );
                assert_eq!(w.rec(lower).generation, 2);
            }
            replaced.push(name.to_string());
            w.advance(s(1));
            w.exit(name, ExitStatus::Signal(15));
            check(&w, &format!("round {round}, after {name} exited"));
        }
        w.advance(s(1));
        if names.iter().all(|n| up(&w, n) && w.rec(n).generation == 2) {
            break;
        }
    }
    assert_eq!(replaced, names);
    for name in names {
        assert_eq!(w.rec(name).generation, 2);
        assert_eq!(w.rec(name).attempt, 1);
    }
    assert_no_effects(&w.reconcile(), "rollout finished");
}

#[test]
fn a_replica_waiting_for_its_turn_in_a_rollout_still_times_out() {
    let mut w = World::new();
    w.pool("p", None, 100);
    w.scale("p", 2, |s| s.timeout = Some(secs(60)));
    w.step();
    w.reconcile();
    w.advance(s(10));
    // A broken new template: p-0's replacement cannot start, p-1 waits its turn.
    w.scale("p", 2, |s| {
        s.timeout = Some(secs(60));
        s.command = Some(vec!["missing-binary".into()]);
    });
    assert_eq!(signals(&w.reconcile()), [("p-0", Signal::SIGTERM)]);
    w.exit("p-0", ExitStatus::Signal(15));
    assert_eq!(
        spawned_names(&w.step_failing(Reason::CommandNotFound)),
        ["p-0"]
    );
    w.reconcile();
    w.advance(s(50)); // p-1 has run for its 60s timeout
    let plan = w.step_failing(Reason::CommandNotFound);
    assert!(
        plan.wake_at.is_none_or(|t| t > w.now),
        "wake_at {:?} is not after now {}: the shell would reconcile in a hot loop",
        plan.wake_at,
        w.now
    );
    assert_eq!(
        w.stop_reason("p-1"),
        Some(Reason::TimedOut),
        "the timeout of a replica waiting for the rollout is ignored"
    );
}

#[test]
fn scaling_three_to_one_to_two_stops_the_highest_ordinals_and_restarts_the_missing_one() {
    let mut w = World::new();
    w.pool("p", None, 100);
    w.scale("p", 3, |_| {});
    w.step();
    w.reconcile();
    let pid0 = w.pid("p-0");

    w.scale("p", 1, |_| {});
    let plan = w.reconcile();
    assert_eq!(
        signals(&plan),
        [("p-2", Signal::SIGTERM), ("p-1", Signal::SIGTERM)]
    );
    assert!(spawns(&plan).is_empty());
    assert!(up(&w, "p-0"), "ordinal 0 untouched");
    assert_eq!(w.pid("p-0"), pid0);

    w.exit("p-2", ExitStatus::Signal(15));
    w.exit("p-1", ExitStatus::Code(0));
    let plan = w.reconcile();
    let mut forgotten = forgets(&plan);
    forgotten.sort();
    assert_eq!(forgotten, ["p-1", "p-2"]);
    assert_eq!(live_names(&w), ["p-0"]);

    w.scale("p", 2, |_| {});
    let plan = w.step();
    assert_eq!(spawns(&plan), [("p-1", 1)]);
    assert_eq!(live_names(&w), ["p-0", "p-1"]);
    assert_eq!(w.pid("p-0"), pid0);
}

// ---------------------------------------------------------------------------
// Property tests: random operations through a simulated shell
// ---------------------------------------------------------------------------

const NAMES: [&str; 4] = ["a", "b", "c", "d"];
const POOL: &str = "p";

#[derive(Debug, Clone)]
enum Op {
    /// Declare or redeclare a session.
    Put(usize, SessionSpec),
    /// Delete its manifest.
    Remove(usize),
    /// Set `suspend`.
    Suspend(usize, bool),
    /// The n-th live process exits.
    Exit(usize, ExitStatus),
    /// The n-th live process vanishes (ended while no controller watched).
    Vanish(usize),
    /// The kernel's OOM killer kills the n-th live process (reported, then its exit).
    OomKill(usize),
    /// The n-th live process's output gives a verdict (reason index, retry, min delay in s).
    Judge(usize, usize, bool, Option<u64>),
    /// An exit for a pid that is not the session's.
    StaleExit(usize),
    /// Every process that was sent a signal dies of it.
    DieFromSignals,
    /// Time passes (milliseconds).
    Advance(u64),
    /// Monitoring asks for a stop.
    StopRequested(usize),
    /// Declare the pool with this cap, or delete it.
    Pool(Option<Option<u32>>),
    /// Scale the pool's replicas (`p-0` …) to n, with this template.
    Scale(u32, SessionSpec),
    /// The controller starts draining.
    Shutdown,
}

/// How the shell answers the spawns of the step.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Answer {
    Spawned,
    Failed(Reason),
    Later,
}

fn arb_spec() -> impl Strategy<Value = SessionSpec> {
    (
        prop_oneof![
            Just(RestartPolicy::Always),
            Just(RestartPolicy::OnFailure),
            Just(RestartPolicy::Never)
        ],
        proptest::option::of(0u32..4),
        // initialDelay, multiplier, maxDelay − initialDelay, resetAfter (ms).
        // initialDelay ≤ maxDelay here: the case initialDelay > maxDelay is
        // `a_clean_exit_under_always_waits_no_longer_than_max_delay`.
        (0u64..3_000, 1.0f64..3.0, 0u64..20_000, 1u64..30_000),
        proptest::option::of(1u64..30_000),
        proptest::option::of(5_000u64..90_000),
        0u64..5_000,
        proptest::option::of(0u64..30_000),
        any::<bool>(),
        prop_oneof![
            Just(Priority::Critical),
            Just(Priority::High),
            Just(Priority::Medium),
            Just(Priority::Low)
        ],
        prop_oneof![Just(Signal::SIGTERM), Just(Signal::SIGINT)],
        0u8..3,
    )
        .prop_map(
            |(
                policy,
                max_retries,
                (initial, mult, extra, reset),
                timeout,
                deadline,
                grace,
                ttl,
                pooled,
                priority,
                stop,
                variant,
            )| {
                let ms = Duration::from_millis;
                let mut spec = base_spec();
                spec.command = Some(vec!["run".into(), variant.to_string()]);
                spec.restart_policy = policy;
                spec.max_retries = max_retries;
                spec.backoff = Backoff {
                    initial_delay: ms(initial),
                    multiplier: mult,
                    max_delay: ms(initial + extra),
                    reset_after: ms(reset),
                };
                spec.timeout = timeout.map(ms);
                spec.active_deadline = deadline.map(ms);
                spec.termination_grace_period = ms(grace);
                spec.ttl_after_finished = ttl.map(ms);
                spec.pool = pooled.then(|| POOL.to_string());
                spec.priority = priority;
                spec.stop_signal = SignalName(stop);
                spec
            },
        )
}

fn arb_status() -> impl Strategy<Value = ExitStatus> {
    prop_oneof![
        Just(ExitStatus::Code(0)),
        Just(ExitStatus::Code(1)),
        Just(ExitStatus::Code(137)),
        Just(ExitStatus::Signal(9)),
        Just(ExitStatus::Signal(15)),
    ]
}

fn arb_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        30 => (0..NAMES.len(), arb_spec()).prop_map(|(n, s)| Op::Put(n, s)),
        10 => (0..NAMES.len()).prop_map(Op::Remove),
        10 => (0..NAMES.len(), any::<bool>()).prop_map(|(n, b)| Op::Suspend(n, b)),
        40 => (any::<usize>(), arb_status()).prop_map(|(i, s)| Op::Exit(i, s)),
        5 => any::<usize>().prop_map(Op::Vanish),
        5 => any::<usize>().prop_map(Op::OomKill),
        5 => (0..NAMES.len()).prop_map(Op::StaleExit),
        5 => (any::<usize>(), 0usize..3, any::<bool>(), proptest::option::of(0u64..100))
            .prop_map(|(i, r, retry, min)| Op::Judge(i, r, retry, min)),
        20 => Just(Op::DieFromSignals),
        40 => (0u64..20_000).prop_map(Op::Advance),
        10 => (0..NAMES.len()).prop_map(Op::StopRequested),
        2 => Just(Op::Pool(None)),
        8 => proptest::option::of(1u32..4).prop_map(|cap| Op::Pool(Some(cap))),
        10 => (0u32..4, arb_spec()).prop_map(|(n, s)| Op::Scale(n, s)),
        1 => Just(Op::Shutdown),
    ]
}

fn arb_answer() -> impl Strategy<Value = Answer> {
    prop_oneof![
        6 => Just(Answer::Spawned),
        1 => Just(Answer::Failed(Reason::CommandNotFound)),
        1 => Just(Answer::Failed(Reason::PermissionDenied)),
        2 => Just(Answer::Later),
    ]
}

/// The decision core plus a simulated process table.
struct Sim {
    desired: Desired,
    state: State,
    now: DateTime<Utc>,
    next_generation: u64,
    next_pid: u32,
    /// Live simulated processes: pid → (session, signals received).
    live: BTreeMap<u32, (String, Vec<Signal>)>,
    /// Spawns planned and not answered yet.
    pending: Vec<String>,
    /// The minimum delay a verdict asked for, by session, until its attempt ends.
    min_delays: BTreeMap<String, TimeDelta>,
    /// The same world reconciled per key (core::keys): only the keys that
    /// changes, events and due times returned. After every pass it must
    /// equal `state`, and have planned the same actions.
    keyed: State,
    queue: super::keys::Queue,
}

impl Sim {
    fn new() -> Self {
        let mut desired = Desired::default();
        let pool = DesiredPool {
            name: POOL.to_string(),
            replicas: 0,
            max_concurrent: Some(1),
            max_queue: 1,
            generation: 1,
        };
        desired.pools.insert(POOL.to_string(), pool);
        Sim {
            desired,
            state: State::default(),
            now: t0(),
            next_generation: 1,
            next_pid: 1000,
            live: BTreeMap::new(),
            pending: Vec::new(),
            min_delays: BTreeMap::new(),
            keyed: State::default(),
            queue: super::keys::Queue::default(),
        }
    }

    /// Starts draining, in both worlds: a drain touches every session.
    fn shut_down(&mut self) {
        self.state.shutting_down = true;
        self.keyed.shutting_down = true;
        let all: Vec<super::keys::Key> = self
            .desired
            .sessions
            .keys()
            .chain(self.keyed.sessions.keys())
            .map(|n| super::keys::Key::Session(n.clone()))
            .collect();
        self.queue.touch_all(all);
    }

    fn put(&mut self, name: &str, spec: SessionSpec) {
        self.put_replica(name, spec, None);
    }

    fn put_replica(&mut self, name: &str, spec: SessionSpec, replica: Option<Replica>) {
        let generation = self.next_generation;
        match self.desired.sessions.get_mut(name) {
            Some(d) if *d.spec == spec && d.replica == replica => {}
            Some(d) => {
                d.spec = Arc::new(spec);
                d.replica = replica;
                d.generation = generation;
                self.next_generation += 1;
            }
            None => {
                let d = desired_session(name, spec, generation, self.now, replica);
                self.desired.sessions.insert(name.to_string(), d);
                self.next_generation += 1;
            }
        }
    }

    fn live_pid(&self, name: &str) -> Option<u32> {
        self.live
            .iter()
            .find(|(_, (n, _))| n == name)
            .map(|(pid, _)| *pid)
    }

    /// Observes an event about `name`; checks the backoff bound of the exit it may record.
    fn observe(&mut self, name: &str, event: Event) {
        let before = self.state.sessions.get(name).map(|r| r.run.clone());
        // Does the event end the current attempt (and with it, its verdict)?
        let ends = match &event {
            Event::Exited { pid, .. } | Event::Vanished { pid, .. } => {
                matches!(&before, Some(Run::Running(r)) if r.pid == *pid)
            }
            Event::SpawnFailed { .. } => true,
            _ => false,
        };
        self.queue
            .touch_all(super::keys::event_keys(&self.desired, &self.keyed, name));
        observe(&self.desired, &mut self.keyed, event.clone(), self.now);
        observe(&self.desired, &mut self.state, event, self.now);
        let min_delay = if ends {
            self.min_delays.remove(name)
        } else {
            None
        };
        let Some(rec) = self.state.sessions.get(name) else {
            return;
        };
        if let Run::Backoff { until } = rec.run {
            if before.as_ref() != Some(&rec.run) {
                let max = self.desired.sessions[name].spec.backoff.max_delay.chrono();
                let max = max.max(min_delay.unwrap_or_default());
                let wait = until - self.now;
                assert!(
                    wait >= TimeDelta::zero() && wait <= max,
                    "{name}: backoff of {wait} after an exit, maxDelay {max}"
                );
            }
        }
    }

    fn apply(&mut self, op: Op) {
        let before = self.desired.clone();
        self.apply_op(op);
        self.queue
            .touch_all(super::keys::changed(&before, &self.desired));
    }

    fn apply_op(&mut self, op: Op) {
        match op {
            Op::Put(n, spec) => self.put(NAMES[n], spec),
            Op::Remove(n) => {
                self.desired.sessions.remove(NAMES[n]);
            }
            Op::Suspend(n, on) => {
                if let Some(d) = self.desired.sessions.get(NAMES[n]) {
                    let mut spec = (*d.spec).clone();
                    spec.suspend = on;
                    self.put(NAMES[n], spec);
                }
            }
            Op::Exit(i, status) => {
                if !self.live.is_empty() {
                    let pid = *self.live.keys().nth(i % self.live.len()).unwrap();
                    let (name, _) = self.live.remove(&pid).unwrap();
                    self.observe(&name.clone(), Event::Exited { name, pid, status });
                }
            }
            Op::Vanish(i) => {
                if !self.live.is_empty() {
                    let pid = *self.live.keys().nth(i % self.live.len()).unwrap();
                    let (name, _) = self.live.remove(&pid).unwrap();
                    self.observe(&name.clone(), Event::Vanished { name, pid });
                }
            }
            Op::OomKill(i) => {
                if !self.live.is_empty() {
                    let pid = *self.live.keys().nth(i % self.live.len()).unwrap();
                    let (name, _) = self.live.remove(&pid).unwrap();
                    let killed = Event::Killed {
                        name: name.clone(),
                        pid,
                        reason: Reason::OOMKilled,
                        message: "out of memory".into(),
                    };
                    self.observe(&name, killed);
                    let status = ExitStatus::Signal(9);
                    self.observe(&name.clone(), Event::Exited { name, pid, status });
                }
            }
            Op::Judge(i, r, retry, min) => {
                if !self.live.is_empty() {
                    let pid = *self.live.keys().nth(i % self.live.len()).unwrap();
                    let name = self.live[&pid].0.clone();
                    let reason = [
                        Reason::Completed,
                        Reason::AgentFailed,
                        Reason::AgentAbnormal,
                    ][r];
                    let verdict = super::state::Verdict {
                        reason,
                        message: "judged".into(),
                        min_delay: min.map(std::time::Duration::from_secs),
                        retry,
                        quota: None,
                    };
                    if let Some(m) = min {
                        self.min_delays
                            .insert(name.clone(), TimeDelta::seconds(m as i64));
                    }
                    self.observe(&name.clone(), Event::Judged { name, pid, verdict });
                }
            }
            Op::StaleExit(n) => {
                let name = NAMES[n];
                let before = self.state.sessions.get(name).cloned();
                self.observe(
                    name,
                    Event::Exited {
                        name: name.to_string(),
                        pid: 1,
                        status: ExitStatus::Code(1),
                    },
                );
                assert_eq!(
                    self.state.sessions.get(name).cloned(),
                    before,
                    "a stale exit changed {name}"
                );
            }
            Op::DieFromSignals => {
                let dying: Vec<(u32, String, Signal)> = self
                    .live
                    .iter()
                    .filter_map(|(pid, (n, sigs))| sigs.last().map(|s| (*pid, n.clone(), *s)))
                    .collect();
                for (pid, name, signal) in dying {
                    self.live.remove(&pid);
                    let status = ExitStatus::Signal(signal as i32);
                    self.observe(&name.clone(), Event::Exited { name, pid, status });
                }
            }
            Op::Advance(ms) => {
                let by = TimeDelta::milliseconds(i64::try_from(ms).unwrap_or(i64::MAX));
                self.now = super::time::add(self.now, by);
            }
            Op::StopRequested(n) => self.observe(
                NAMES[n],
                Event::StopRequested {
                    name: NAMES[n].to_string(),
                    reason: Reason::MemoryLimitExceeded,
                    message: "memory limit".into(),
                },
            ),
            Op::Pool(None) => {
                // The pool's manifest is gone, and its replicas with it.
                self.desired.pools.remove(POOL);
                self.desired.sessions.retain(|_, d| d.replica.is_none());
            }
            Op::Scale(n, template) => {
                if self.desired.pools.contains_key(POOL) {
                    for ordinal in 0..n {
                        let replica = Replica {
                            pool: POOL.to_string(),
                            ordinal,
                        };
                        let name = format!("{POOL}-{ordinal}");
                        self.put_replica(&name, template.clone(), Some(replica));
                    }
                    self.desired
                        .sessions
                        .retain(|_, d| d.replica.as_ref().is_none_or(|r| r.ordinal < n));
                }
            }
            Op::Pool(Some(max_concurrent)) => {
                let pool = DesiredPool {
                    name: POOL.to_string(),
                    replicas: 0,
                    max_concurrent,
                    max_queue: 1,
                    generation: 1,
                };
                self.desired.pools.insert(POOL.to_string(), pool);
            }
            Op::Shutdown => self.shut_down(),
        }
    }

    fn answer(&mut self, name: String, answer: Answer) {
        let rec = &self.state.sessions[&name];
        assert!(
            matches!(rec.run, Run::Starting { .. }),
            "{name}: a spawn answered for a record in {:?}",
            rec.run
        );
        match answer {
            Answer::Later => unreachable!("deferred answers are not given"),
            Answer::Spawned => {
                assert!(self.live_pid(&name).is_none(), "{name}: two live processes");
                let pid = self.next_pid;
                self.next_pid += 1;
                self.live.insert(pid, (name.clone(), Vec::new()));
                self.observe(&name.clone(), Event::Spawned { name, pid });
            }
            Answer::Failed(reason) => self.observe(
                &name.clone(),
                Event::SpawnFailed {
                    name,
                    reason,
                    message: "spawn failed".into(),
                },
            ),
        }
    }

    fn answer_pending(&mut self, answer: Answer) {
        if answer != Answer::Later {
            for name in std::mem::take(&mut self.pending) {
                self.answer(name, answer);
            }
        }
    }

    /// Live members of the pool among the sessions that currently name it.
    fn pool_members_live(&self) -> usize {
        self.desired
            .sessions
            .values()
            .filter(|d| d.pool() == Some(POOL))
            .filter(|d| self.live_pid(&d.name).is_some() || self.pending.contains(&d.name))
            .count()
    }

    /// Reconciles, checks the plan, and plays the shell.
    fn reconcile(&mut self, answer: Answer) {
        self.answer_pending(answer);
        let keys = self.queue.take(self.now);
        let (keyed_plan, looked_at) =
            super::reconcile::reconcile_keys(&self.desired, &mut self.keyed, &keys, self.now);
        self.queue.schedule(&looked_at, &keyed_plan.due);
        let plan = reconcile(&self.desired, &mut self.state, self.now);
        // Reconciling only the keys that events returned reaches the same
        // state, and plans the same actions, as reconciling everything.
        if self.keyed.sessions != self.state.sessions {
            let names: BTreeSet<&String> = self
                .keyed
                .sessions
                .keys()
                .chain(self.state.sessions.keys())
                .collect();
            for n in names {
                let (k, f) = (self.keyed.sessions.get(n), self.state.sessions.get(n));
                assert_eq!(
                    k, f,
                    "per-key reconcile of {keys:?} (looked at {looked_at:?}) diverged on {n}"
                );
            }
        }
        assert_eq!(self.keyed.pools, self.state.pools, "pool figures diverged");
        let sorted = |p: &Plan| {
            let mut v: Vec<String> = p.actions.iter().map(|a| format!("{a:?}")).collect();
            v.sort();
            v
        };
        assert_eq!(
            sorted(&keyed_plan),
            sorted(&plan),
            "per-key plan of {keys:?}"
        );
        if let Some(at) = plan.wake_at {
            // The shell's one timer: the earliest due key is no later.
            assert!(
                self.queue.next_due().is_some_and(|d| d <= at),
                "no key due by {at}"
            );
        }
        let desired_before = self.desired.clone();

        // Never woken in the past: the shell would reconcile in a hot loop.
        if let Some(at) = plan.wake_at {
            assert!(at > self.now, "wake_at {at} is not after now {}", self.now);
        }
        // A second reconcile of the unchanged world plans nothing.
        let mut again = self.state.clone();
        let replan = reconcile(&self.desired, &mut again, self.now);
        assert_no_effects(&replan, "second reconcile at the same instant");

        for action in plan.actions {
            match action {
                Action::Spawn { name, attempt } => {
                    assert!(!self.state.shutting_down, "{name} spawned while draining");
                    let d = self
                        .desired
                        .sessions
                        .get(&name)
                        .unwrap_or_else(|| panic!("spawn of {name}, which is not desired"));
                    assert!(
                        self.live_pid(&name).is_none(),
                        "{name}: spawned while its process lives"
                    );
                    assert!(!self.pending.contains(&name), "{name}: spawned twice");
                    let rec = &self.state.sessions[&name];
                    assert!(matches!(rec.run, Run::Starting { .. }));
                    assert_eq!(rec.attempt, attempt);
                    assert!(!d.spec.suspend, "{name}: a suspended session spawned");
                    self.pending.push(name.clone());
                    if let (Some(POOL), Some(p)) = (d.pool(), self.desired.pools.get(POOL)) {
                        if let Some(cap) = p.max_concurrent {
                            let n = self.pool_members_live();
                            assert!(
                                n as u32 <= cap,
                                "{name} spawned: {n} live members, cap {cap}"
                            );
                        }
                    }
                }
                Action::Signal { name, pid, signal } => {
                    let (owner, sigs) = self.live.get_mut(&pid).unwrap_or_else(|| {
                        panic!("{signal} sent to {name}'s pid {pid}, which is not alive")
                    });
                    assert_eq!(*owner, name, "signal to another session's process");
                    sigs.push(signal);
                }
                Action::Tombstone { name, record } => {
                    assert!(
                        !self.desired.sessions.contains_key(&name),
                        "{name} is desired but tombstoned"
                    );
                    assert!(!record.run.is_live(), "{name}: tombstoned while live");
                }
                Action::Forget { name } => {
                    assert!(
                        !self.desired.sessions.contains_key(&name),
                        "{name} is desired but forgotten"
                    );
                    assert!(
                        self.live_pid(&name).is_none(),
                        "{name} forgotten while its process lives"
                    );
                    assert!(
                        !self.pending.contains(&name),
                        "{name} forgotten while spawning"
                    );
                    assert!(!self.state.sessions.contains_key(&name));
                }
                Action::CollectGarbage { name } => {
                    assert!(self.desired.sessions.contains_key(&name));
                    let rec = &self.state.sessions[&name];
                    assert!(
                        matches!(rec.run, Run::Done(_)),
                        "{name} collected while not finished"
                    );
                    assert!(self.live_pid(&name).is_none());
                    // The shell deletes the manifest.
                    self.desired.sessions.remove(&name);
                }
                Action::WriteCrashDump { name, exit } => {
                    assert!(exit.failed(), "{name}: crash dump of a success");
                    assert!(exit.crash_dump.is_some());
                }
                Action::WriteStatus { name } => {
                    assert!(
                        self.state.sessions.contains_key(&name),
                        "status of unknown {name}"
                    );
                }
            }
        }
        // The shell's own changes (a collected session's manifest deleted).
        self.queue
            .touch_all(super::keys::changed(&desired_before, &self.desired));
        self.answer_pending(answer);
        self.check();
    }

    /// Invariants that hold between steps.
    fn check(&self) {
        let mut owners = std::collections::BTreeSet::new();
        for (pid, (name, _)) in &self.live {
            assert!(owners.insert(name), "{name}: two live processes");
            let rec = self
                .state
                .sessions
                .get(name)
                .unwrap_or_else(|| panic!("live process {pid} of {name} has no record: lost"));
            assert!(
                matches!(&rec.run, Run::Running(r) if r.pid == *pid),
                "{name}: process {pid} lives but the record says {:?}",
                rec.run
            );
        }
        for name in &self.pending {
            assert!(
                !owners.contains(name),
                "{name}: spawning next to a live process"
            );
            assert!(matches!(
                self.state.sessions[name].run,
                Run::Starting { .. }
            ));
        }
        for (name, rec) in &self.state.sessions {
            match &rec.run {
                Run::Running(r) => {
                    assert_eq!(
                        self.live.get(&r.pid).map(|(n, _)| n),
                        Some(name),
                        "{name}: the record names a process that does not exist"
                    );
                }
                Run::Starting { .. } => assert!(self.pending.contains(name)),
                Run::Done(_) => assert!(rec.outcome().is_some(), "{name}: done without an outcome"),
                Run::Backoff { until } => {
                    let exit = rec.last_exit.as_ref().expect("a backoff follows an exit");
                    assert!(*until >= exit.finished_at);
                }
                Run::Idle(_) => {}
            }
        }
        for name in self.desired.sessions.keys() {
            assert!(
                self.state.sessions.contains_key(name),
                "{name}: desired, no record"
            );
        }
    }

    /// Drains: everything stops, nothing starts, in a bounded number of rounds.
    fn drain(&mut self) {
        self.shut_down();
        for _ in 0..6 {
            self.reconcile(Answer::Spawned);
            self.apply(Op::DieFromSignals);
            self.now = super::time::add(self.now, TimeDelta::seconds(6));
        }
        self.reconcile(Answer::Spawned);
        assert!(
            self.live.is_empty(),
            "still alive after draining: {:?}",
            self.live
        );
        assert!(self.pending.is_empty());
        assert!(self.state.all_stopped());
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 64,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// At most one live process per session, no spawn of an undesired
    /// session, no lost session, backoff within maxDelay, and a second
    /// reconcile at the same instant plans nothing: after every step.
    #[test]
    fn random_operations_keep_the_core_invariants(
        steps in prop::collection::vec((arb_op(), arb_answer()), 1..40),
    ) {
        let mut sim = Sim::new();
        for (op, answer) in steps {
            sim.apply(op);
            sim.reconcile(answer);
        }
        sim.drain();
    }

    /// Durations at and far past every bound (0, 1ns, the manifest maximum,
    /// u64::MAX seconds), a clock that jumps by centuries or starts at the
    /// end of time: reconcile and observe never panic (no `DateTime +
    /// TimeDelta` overflow), and the invariants above still hold.
    #[test]
    fn extreme_durations_and_instants_never_panic(
        start in arb_start(),
        steps in prop::collection::vec((arb_extreme_op(), arb_answer()), 1..40),
    ) {
        let mut sim = Sim::new();
        sim.now = start;
        for (op, answer) in steps {
            sim.apply(op);
            sim.reconcile(answer);
        }
        sim.drain();
    }
}

/// A duration at an edge: zero, the smallest, ordinary, the manifest
/// maximum, and values only a bug or a hand-edited status could produce.
fn arb_extreme_duration() -> impl Strategy<Value = Duration> {
    let std = std::time::Duration::from_secs;
    prop_oneof![
        Just(Duration(std::time::Duration::ZERO)),
        Just(Duration(std::time::Duration::from_nanos(1))),
        Just(Duration::from_millis(1)),
        Just(Duration(std(10))),
        Just(Duration::MAX),
        Just(Duration(std(100_000_000 * 86_400))),
        Just(Duration(std(i64::MAX as u64))),
        Just(Duration(std(u64::MAX))),
        Just(Duration(std::time::Duration::MAX)),
        any::<u64>().prop_map(|n| Duration(std::time::Duration::from_secs(n))),
    ]
}

/// A spec whose every duration is extreme, with any multiplier.
fn arb_extreme_spec() -> impl Strategy<Value = SessionSpec> {
    (
        arb_spec(),
        prop::collection::vec(arb_extreme_duration(), 9),
        prop_oneof![Just(1.0f64), Just(2.0), Just(f64::MAX), Just(f64::INFINITY)],
        any::<u8>(),
    )
        .prop_map(|(mut spec, d, multiplier, some)| {
            // Each optional field is set or not by one bit of `some`.
            let opt = |bit: u8, v: Duration| (some & (1 << bit) != 0).then_some(v);
            spec.backoff = Backoff {
                initial_delay: d[0],
                multiplier,
                max_delay: d[1],
                reset_after: d[2],
            };
            spec.timeout = opt(0, d[3]);
            spec.active_deadline = opt(1, d[4]);
            spec.termination_grace_period = d[5];
            spec.ttl_after_finished = opt(2, d[6]);
            spec.stale_after = opt(3, d[7]);
            spec.resources.max_cpu_time = opt(4, d[8]);
            spec
        })
}

/// Operations with extreme specs and clock jumps up to the end of time.
fn arb_extreme_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        30 => (0..NAMES.len(), arb_extreme_spec()).prop_map(|(n, s)| Op::Put(n, s)),
        40 => arb_op(),
        10 => prop_oneof![Just(0u64), Just(1), Just(u64::MAX), any::<u64>()].prop_map(Op::Advance),
        10 => (0u32..4, arb_extreme_spec()).prop_map(|(n, s)| Op::Scale(n, s)),
    ]
}

/// Where the clock starts: an ordinary day, just before the instant
/// deadlines saturate to, or chrono's very last instant.
fn arb_start() -> impl Strategy<Value = DateTime<Utc>> {
    prop_oneof![
        Just(t0()),
        Just(super::time::far_future() - s(3600)),
        Just(DateTime::<Utc>::MAX_UTC - s(1)),
    ]
}

// ---------------------------------------------------------------------------
// Not every edit restarts (core::change).

/// One edit per classified spec field.
type Edit = fn(&mut SessionSpec);

fn edits() -> Vec<(&'static str, Edit)> {
    use crate::api::{EnvFrom, OnStale, Quantity};
    vec![
        ("command", |s| {
            s.command = Some(vec!["sleep".into(), "2".into()])
        }),
        ("workingDir", |s| s.working_dir = Some("/tmp".into())),
        ("workspace", |s| {
            s.workspace = Some(crate::api::manifest::Workspace {
                repo: "/repo".into(),
                ..Default::default()
            })
        }),
        ("env", |s| {
            s.env.insert("MODE".into(), "new".into());
        }),
        ("envFrom", |s| {
            s.env_from.push(EnvFrom {
                file: "secrets.env".into(),
            })
        }),
        ("stdin", |s| {
            s.stdin = Some(crate::api::manifest::Stdin::Text("hello".into()))
        }),
        ("user", |s| s.user = Some("nobody".into())),
        ("group", |s| s.group = Some("nogroup".into())),
        ("resources.maxMemory", |s| {
            s.resources.max_memory = Some(Quantity(64 << 20))
        }),
        ("pool", |s| s.pool = Some("p".into())),
        ("restartPolicy", |s| s.restart_policy = RestartPolicy::Never),
        ("maxRetries", |s| s.max_retries = Some(7)),
        ("backoff", |s| s.backoff.initial_delay = secs(9)),
        ("timeout", |s| s.timeout = Some(secs(3600))),
        ("activeDeadline", |s| s.active_deadline = Some(secs(7200))),
        ("ttlAfterFinished", |s| {
            s.ttl_after_finished = Some(secs(60))
        }),
        ("staleAfter", |s| s.stale_after = Some(secs(600))),
        ("onStale", |s| s.on_stale = OnStale::Restart),
        ("priority", |s| s.priority = Priority::High),
        ("terminationGracePeriod", |s| {
            s.termination_grace_period = secs(99)
        }),
        ("stopSignal", |s| s.stop_signal = SignalName(Signal::SIGINT)),
        ("resources.maxCpuTime", |s| {
            s.resources.max_cpu_time = Some(secs(100))
        }),
        ("notify", |s| {
            s.notify = vec![crate::api::Notify {
                url: "http://127.0.0.1:9/hook".into(),
                on: vec!["Failed".into()],
            }]
        }),
    ]
}

#[test]
fn each_field_either_restarts_the_session_or_applies_in_place() {
    use super::change::{effect, Effect};
    let edits = edits();
    for (field, edit) in &edits {
        let mut w = running(|_| {});
        let pid = w.pid("a");
        w.advance(s(5));
        w.edit("a", *edit);
        assert_eq!(w.generation("a"), 2, "{field}: the edit changes the spec");
        let plan = w.reconcile();
        match effect(field).unwrap_or_else(|| panic!("{field} is not classified")) {
            Effect::Restart => {
                assert_eq!(signals(&plan), [("a", Signal::SIGTERM)], "{field} restarts");
                assert_eq!(w.stop_reason("a"), Some(Reason::SpecChanged), "{field}");
            }
            Effect::InPlace => {
                assert!(
                    signals(&plan).is_empty(),
                    "{field} applies in place: {plan:?}"
                );
                assert_eq!(w.stop_reason("a"), None, "{field}");
                assert_eq!(w.pid("a"), pid, "{field}: same process");
                let rec = w.rec("a");
                assert_eq!(rec.generation, 2, "{field}: observedGeneration bumps");
                assert_eq!(rec.attempt, 1, "{field}: the attempt goes on");
                assert!(
                    plan.actions
                        .iter()
                        .any(|a| matches!(a, Action::WriteStatus { name } if name == "a")),
                    "{field}: the new generation is written"
                );
            }
            Effect::Suspend => unreachable!("suspend has its own tests"),
        }
    }
    // Every restart and in-place field of the table has an edit here.
    for (field, e) in super::change::FIELDS {
        if *e != Effect::Suspend
            && !field.starts_with("metadata.")
            && *field != "agent"
            && *field != "charter"
        {
            assert!(
                edits.iter().any(|(f, _)| f == field),
                "{field} has no edit in this test"
            );
        }
    }
}

#[test]
fn every_spec_field_of_the_schema_is_classified() {
    let schema = serde_json::to_value(schemars::schema_for!(SessionSpec)).unwrap();
    let props = schema["properties"].as_object().expect("properties");
    for (field, _) in props {
        if field == "resources" {
            for limit in ["maxMemory", "maxCpuTime"] {
                let name = format!("resources.{limit}");
                assert!(super::change::effect(&name).is_some(), "{name}");
            }
            continue;
        }
        assert!(
            super::change::effect(field).is_some(),
            "spec.{field} is not in core::change::FIELDS: say whether editing it restarts"
        );
    }
}

#[test]
fn an_agent_prompt_edit_restarts_and_an_in_place_edit_keeps_a_finished_session_finished() {
    // Agent prompt: what runs.
    let agent: crate::api::agent::AgentSpec =
        serde_json::from_value(serde_json::json!({"prompt": "one"})).unwrap();
    let mut w = running(|s| {
        s.command = None;
        s.agent = Some(Box::new(agent.clone()));
    });
    w.edit("a", |s| {
        if let Some(a) = &mut s.agent {
            a.prompt = Some("two".into());
        }
    });
    w.reconcile();
    assert_eq!(w.stop_reason("a"), Some(Reason::SpecChanged));

    // A Completed job whose ttlAfterFinished is edited does not run again.
    let mut w = running(|s| s.restart_policy = RestartPolicy::Never);
    w.exit("a", ExitStatus::Code(0));
    w.step();
    assert_eq!(w.phase("a"), Phase::Completed);
    w.edit("a", |s| s.ttl_after_finished = Some(secs(3600)));
    let plan = w.step();
    assert!(spawns(&plan).is_empty(), "{plan:?}");
    assert_eq!(w.phase("a"), Phase::Completed);
    assert_eq!(w.rec("a").generation, 2);
    // What runs changed: it runs again.
    w.edit("a", |s| s.command = Some(vec!["true".into()]));
    let plan = w.step();
    assert_eq!(spawns(&plan), [("a", 1)]);
}

#[test]
fn a_changed_restarted_at_annotation_restarts_without_counting_a_failure() {
    let mut w = running(|_| {});
    w.exit("a", ExitStatus::Code(1));
    w.reconcile();
    w.advance(s(1));
    w.step();
    assert_eq!(w.rec("a").failures, 1);
    let restart = |w: &mut World, at: &str| {
        let d = w.desired.sessions.get_mut("a").unwrap();
        d.restarted_at = Some(at.into());
        d.generation += 1;
    };
    restart(&mut w, "2030-01-01T12:00:00Z");
    let plan = w.reconcile();
    assert_eq!(signals(&plan), [("a", Signal::SIGTERM)]);
    assert_eq!(w.stop_reason("a"), Some(Reason::SpecChanged));
    match &w.rec("a").run {
        Run::Running(r) => assert!(
            r.stop
                .as_ref()
                .unwrap()
                .message
                .contains("sessionlet.dev/restartedAt"),
            "{r:?}"
        ),
        other => panic!("{other:?}"),
    }
    w.exit("a", ExitStatus::Signal(Signal::SIGTERM as i32));
    let plan = w.step();
    assert!(crash_dumps(&plan).is_empty(), "not a crash");
    assert_eq!(spawns(&plan), [("a", 1)]);
    assert_eq!(w.rec("a").failures, 0, "not a failure");
    // The same annotation again: nothing happens.
    let plan = w.step();
    assert!(signals(&plan).is_empty() && spawns(&plan).is_empty());
}
