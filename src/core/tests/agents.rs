//! Usage limits: waiting for quota is not a failure, and sessions of one
//! account park together (core::quota).

use super::*;
use crate::core::quota::{self, QuotaHit};

fn quota_verdict(resets_at: DateTime<Utc>) -> super::super::state::Verdict {
    super::super::state::Verdict {
        reason: Reason::UsageLimited,
        message: "usage limit".into(),
        min_delay: None,
        retry: true,
        quota: Some(QuotaHit {
            resets_at,
            limit_type: Some("five_hour".into()),
        }),
    }
}

/// Session `name`'s running attempt is rejected by its usage limit, which
/// resets `in_secs` from now.
fn hit_limit(w: &mut World, name: &str, in_secs: i64) -> DateTime<Utc> {
    let pid = w.pid(name);
    let resets_at = w.now + s(in_secs);
    w.event(Event::Judged {
        name: name.into(),
        pid,
        verdict: quota_verdict(resets_at),
    });
    w.exit(name, ExitStatus::Code(1));
    resets_at
}

fn on_account(w: &mut World, name: &str, account: &str) {
    w.desired
        .accounts
        .insert(name.to_string(), account.to_string());
}

#[test]
fn a_usage_limit_waits_for_the_reset_and_counts_no_failure() {
    let mut w = running(|s| {
        agent(s);
        s.restart_policy = RestartPolicy::OnFailure;
        // Even with no retry left, a usage limit is waited out.
        s.max_retries = Some(0);
    });
    on_account(&mut w, "a", "acc");
    let resets_at = hit_limit(&mut w, "a", 600);
    let plan = w.reconcile();
    let rec = w.rec("a").clone();
    assert_eq!(render_phase(&rec), Phase::WaitingForQuota);
    assert_eq!(rec.failures, 0);
    assert!(
        crash_dumps(&plan).is_empty(),
        "not a failure: no crash dump"
    );
    let q = rec.quota.expect("status.quota");
    assert_eq!((q.resets_at, q.account.as_str()), (resets_at, "acc"));
    let until = quota::resume_at("a", resets_at);
    assert_eq!(rec.run, Run::Backoff { until });
    assert!(until > resets_at && until <= resets_at + s(quota::MAX_JITTER_SECONDS as i64));
    assert_eq!(plan.wake_at, Some(until));
    // Nothing starts before the reset.
    w.advance(s(599));
    assert!(spawns(&w.step()).is_empty());
    w.now = until;
    assert_eq!(spawns(&w.step()), [("a", 2)]);
    assert!(w.rec("a").quota.is_none(), "cleared once resumed");
    assert_eq!(w.rec("a").failures, 0);
}

#[test]
fn the_jitter_is_small_and_stable() {
    for name in ["a", "b", "pool-0", "pool-1", "a-much-longer-name"] {
        let j = quota::jitter(name);
        assert!(
            j >= s(1) && j <= s(quota::MAX_JITTER_SECONDS as i64),
            "{name}"
        );
        assert_eq!(j, quota::jitter(name));
    }
}

#[test]
fn sessions_of_one_account_park_together_and_running_ones_are_left_alone() {
    let mut w = World::new();
    for n in ["a", "c"] {
        w.put(n, agent);
        on_account(&mut w, n, "acc");
    }
    w.put("other", agent);
    on_account(&mut w, "other", "elsewhere");
    w.step();
    w.reconcile();
    let resets_at = hit_limit(&mut w, "a", 300);
    // b arrives on the same account while a waits: held, not started.
    w.put("b", agent);
    on_account(&mut w, "b", "acc");
    w.put("d", agent);
    on_account(&mut w, "d", "elsewhere");
    let plan = w.step();
    assert_eq!(spawned_names(&plan), ["d"], "only the other account starts");
    assert!(signals(&plan).is_empty(), "c keeps running");
    assert!(matches!(w.rec("c").run, Run::Running(_)));
    let b = w.rec("b").clone();
    assert_eq!(render_phase(&b), Phase::WaitingForQuota);
    assert_eq!(
        w.wait("b").map(|(p, r, _)| (p, r)),
        Some((Phase::WaitingForQuota, Reason::UsageLimited))
    );
    assert_eq!(b.attempt, 0);
    assert!(plan.wake_at.is_some_and(|t| t <= resets_at));
    let views = quota::accounts(&w.desired, &w.state, w.now);
    assert_eq!(views["acc"].state, "WaitingForQuota");
    assert_eq!(
        (
            views["acc"].sessions,
            views["acc"].running,
            views["acc"].waiting
        ),
        (3, 1, 2)
    );
    assert_eq!(views["elsewhere"].state, "Ok");
    // At the reset b starts; a follows after its jitter.
    w.now = resets_at;
    assert_eq!(spawned_names(&w.step()), ["b"]);
    w.now = quota::resume_at("a", resets_at);
    assert_eq!(spawned_names(&w.step()), ["a"]);
    assert_eq!(
        quota::accounts(&w.desired, &w.state, w.now)["acc"].state,
        "Ok"
    );
}

#[test]
fn a_stop_during_the_attempt_wins_over_the_usage_limit() {
    let mut w = running(agent);
    w.edit("a", |s| s.suspend = true);
    w.reconcile();
    hit_limit(&mut w, "a", 300);
    w.reconcile();
    assert_eq!(w.phase("a"), Phase::Cancelled);
    assert!(w.rec("a").quota.is_none());
}

/// The phase the status shows (the test world's `phase_of` predates the quota).
fn render_phase(rec: &Record) -> Phase {
    crate::runtime::render::phase_only(rec)
}
