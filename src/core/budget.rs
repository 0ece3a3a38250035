//! Budgets across sessions: what a pool's agent members may spend together.
//!
//! The shell adds up the spend ([`Spend`], in `Desired::spend`); the core
//! decides: at the budget, running members are stopped (SIGINT first, as
//! every agent stop: the CLI ends its turn and writes its result) with
//! reason `BudgetExceeded`, and no member starts until the period rolls over
//! (midnight UTC for `per: day`; never for `per: total`). A member stopped
//! that way is not failed: it waits (Pending, BudgetExceeded) and resumes
//! its conversation in the next period.
//!
//! Pure: `now` is passed in.

use chrono::{DateTime, Duration, NaiveTime, Utc};
use serde::{Deserialize, Serialize};

use super::desired::Desired;
use super::plan::{Action, Plan};
use super::state::{Run, State, Wait};
use super::{Phase, Reason};
use crate::api::manifest::{Budget, BudgetPeriod};

/// What was spent in a period.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Spend {
    /// USD.
    pub cost_usd: f64,
    /// Input plus output tokens.
    pub tokens: u64,
}

/// The period `now` falls in: the UTC date for `day`, `total` otherwise.
pub fn period(per: BudgetPeriod, now: DateTime<Utc>) -> String {
    match per {
        BudgetPeriod::Day => now.date_naive().to_string(),
        BudgetPeriod::Total => "total".into(),
    }
}

/// When the current period ends (`None`: never).
pub fn period_end(per: BudgetPeriod, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    match per {
        BudgetPeriod::Day => {
            let tomorrow = now.date_naive() + Duration::days(1);
            Some(tomorrow.and_time(NaiveTime::MIN).and_utc())
        }
        BudgetPeriod::Total => None,
    }
}

/// Why the budget is spent, if it is (for a person).
pub fn exceeded(budget: &Budget, spend: &Spend) -> Option<String> {
    if let Some(max) = budget.max_cost_usd {
        if spend.cost_usd >= max {
            return Some(format!("spent ${:.4} of maxCostUsd ${max}", spend.cost_usd));
        }
    }
    if let Some(max) = budget.max_tokens {
        if spend.tokens >= max {
            return Some(format!("used {} of maxTokens {max} tokens", spend.tokens));
        }
    }
    None
}

/// The pools whose budget is spent: (pool, message, when it renews).
fn spent_pools(
    desired: &Desired,
    now: DateTime<Utc>,
) -> Vec<(String, String, Option<DateTime<Utc>>)> {
    desired
        .budgets
        .iter()
        .filter_map(|(pool, b)| {
            let spend = desired.spend.get(pool).copied().unwrap_or_default();
            let why = exceeded(b, &spend)?;
            let per = match b.per {
                BudgetPeriod::Day => "per day",
                BudgetPeriod::Total => "in total",
            };
            let until = period_end(b.per, now);
            let msg = format!(
                "pool {pool:?} {why} ({per}){}",
                until
                    .map(|t| format!("; members start again at {}", t.to_rfc3339()))
                    .unwrap_or_else(|| "; raise the budget to start members again".into())
            );
            Some((pool.clone(), msg, until))
        })
        .collect()
}

/// Whether `pool`'s budget is spent: the hold message and when it renews.
pub fn hold_for(
    desired: &Desired,
    pool: Option<&str>,
    now: DateTime<Utc>,
) -> Option<(String, Option<DateTime<Utc>>)> {
    let pool = pool?;
    spent_pools(desired, now)
        .into_iter()
        .find(|(p, _, _)| p == pool)
        .map(|(_, m, u)| (m, u))
}

/// Stops the running members of every pool whose budget is spent.
pub fn enforce(desired: &Desired, state: &mut State, now: DateTime<Utc>, plan: &mut Plan) {
    let spent = spent_pools(desired, now);
    if spent.is_empty() {
        return;
    }
    for d in desired.sessions.values() {
        let Some((_, message, _)) = spent.iter().find(|(p, _, _)| Some(p.as_str()) == d.pool())
        else {
            continue;
        };
        let Some(rec) = state.sessions.get_mut(&d.name) else {
            continue;
        };
        if let Run::Running(r) = &mut rec.run {
            if r.stop.is_none() {
                let pid = r.pid;
                super::reconcile::begin_budget_stop(r, d, message.clone(), now);
                plan.actions.push(Action::Signal {
                    name: d.name.clone(),
                    pid,
                    signal: super::reconcile::first_signal(&d.spec),
                });
                state.dirty.insert(d.name.clone());
            }
        }
    }
}

/// The wait of a member held by its pool's budget.
pub fn wait(message: String) -> Wait {
    Wait {
        phase: Phase::Pending,
        reason: Reason::BudgetExceeded,
        message,
        position: None,
        estimated_wait_seconds: None,
        queued_at: None,
    }
}
