//! Budgets across sessions: what a pool's agent members may spend together.
//!
//! The shell adds up the spend ([`Spend`], in `Desired::spend`); the core
//! decides: at the budget, running members are stopped (SIGINT first, as
//! every agent stop: the CLI ends its turn and writes its result) with
//! reason `BudgetExceeded`, and no member starts until the period rolls over
//! (midnight UTC for `per: day`; never for `per: total`). A member stopped
//! that way is not failed: it waits (Pending, BudgetExceeded) and resumes
//! its conversation in the next period. The core keeps the highest spend
//! it was told of in the period ([`Marks`]): a lower figure later (an
//! attempt charged less than its running estimate) never reopens it.
//!
//! Pure: `now` is passed in.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, NaiveTime, Utc};
use serde::{Deserialize, Serialize};

use super::desired::{Desired, DesiredSession};
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

/// The highest spend seen per pool and per account in a period, kept by
/// the core across passes: spend never goes down within a period, so a
/// figure from the shell lower than one it gave before (an ended attempt
/// charged less than its running estimate, a tally rebuilt) must not
/// reopen a budget that was already spent.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Marks {
    pools: BTreeMap<String, (String, Spend)>,
    accounts: BTreeMap<String, (String, Spend)>,
}

impl Marks {
    /// The highest spend of `pool` seen in the current period of `b`.
    pub fn pool(&self, pool: &str, b: &Budget, now: DateTime<Utc>) -> Spend {
        seen(&self.pools, &BTreeMap::new(), pool, b, now)
    }

    /// The highest spend of `account` seen in the current period of `b`.
    pub fn account(&self, account: &str, b: &Budget, now: DateTime<Utc>) -> Spend {
        seen(&self.accounts, &BTreeMap::new(), account, b, now)
    }
}

impl Spend {
    /// The larger figure of each kind.
    pub fn max(self, o: Spend) -> Spend {
        Spend {
            cost_usd: self.cost_usd.max(o.cost_usd),
            tokens: self.tokens.max(o.tokens),
        }
    }
}

/// Raises `marks` to what the shell reports now (`spend`, per name); marks
/// of other periods and of names no longer budgeted are dropped.
fn raise(
    marks: &mut BTreeMap<String, (String, Spend)>,
    budgets: &BTreeMap<String, Budget>,
    spend: &BTreeMap<String, Spend>,
    now: DateTime<Utc>,
) {
    marks.retain(|name, (p, _)| budgets.get(name).is_some_and(|b| *p == period(b.per, now)));
    for (name, b) in budgets {
        let reported = spend.get(name).copied().unwrap_or_default();
        let entry = marks
            .entry(name.clone())
            .or_insert_with(|| (period(b.per, now), Spend::default()));
        entry.1 = entry.1.max(reported);
    }
}

/// Takes in the spend the shell reported in `desired` (at each reconcile,
/// before any budget decision).
pub fn note(desired: &Desired, marks: &mut Marks, now: DateTime<Utc>) {
    raise(&mut marks.pools, &desired.budgets, &desired.spend, now);
    raise(
        &mut marks.accounts,
        &desired.account_budgets,
        &desired.account_spend,
        now,
    );
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

/// A spent budget: what it covers, the message, when it renews.
struct Spent {
    pool: Option<String>,
    account: Option<String>,
    message: String,
    renews: Option<DateTime<Utc>>,
}

fn describe(
    what: &str,
    b: &Budget,
    why: String,
    now: DateTime<Utc>,
) -> (String, Option<DateTime<Utc>>) {
    let per = match b.per {
        BudgetPeriod::Day => "per day",
        BudgetPeriod::Total => "in total",
    };
    let until = period_end(b.per, now);
    let msg = format!(
        "{what} {why} ({per}){}",
        until
            .map(|t| format!("; sessions start again at {}", t.to_rfc3339()))
            .unwrap_or_else(|| "; raise the budget to start sessions again".into())
    );
    (msg, until)
}

/// The spend of `name` in the current period: the highest figure seen.
fn seen(
    marks: &BTreeMap<String, (String, Spend)>,
    reported: &BTreeMap<String, Spend>,
    name: &str,
    b: &Budget,
    now: DateTime<Utc>,
) -> Spend {
    let reported = reported.get(name).copied().unwrap_or_default();
    match marks.get(name) {
        Some((p, mark)) if *p == period(b.per, now) => reported.max(*mark),
        _ => reported,
    }
}

/// The pools and accounts whose budget is spent.
fn spent(desired: &Desired, marks: &Marks, now: DateTime<Utc>) -> Vec<Spent> {
    let mut out = Vec::new();
    for (pool, b) in &desired.budgets {
        let spend = seen(&marks.pools, &desired.spend, pool, b, now);
        if let Some(why) = exceeded(b, &spend) {
            let (message, renews) = describe(&format!("pool {pool:?}"), b, why, now);
            out.push(Spent {
                pool: Some(pool.clone()),
                account: None,
                message,
                renews,
            });
        }
    }
    for (account, b) in &desired.account_budgets {
        let spend = seen(&marks.accounts, &desired.account_spend, account, b, now);
        if let Some(why) = exceeded(b, &spend) {
            let (message, renews) = describe(&format!("account {account}"), b, why, now);
            out.push(Spent {
                pool: None,
                account: Some(account.clone()),
                message,
                renews,
            });
        }
    }
    out
}

/// The spent budget that holds session `d`, if any.
fn holding<'a>(spent: &'a [Spent], desired: &Desired, d: &DesiredSession) -> Option<&'a Spent> {
    let account = desired.accounts.get(&d.name);
    spent.iter().find(|s| {
        (s.pool.is_some() && s.pool.as_deref() == d.pool())
            || (s.account.is_some() && s.account.as_ref() == account)
    })
}

/// Whether `d`'s pool's or account's budget is spent: the hold message and
/// when it renews.
pub fn hold_for(
    desired: &Desired,
    marks: &Marks,
    d: &DesiredSession,
    now: DateTime<Utc>,
) -> Option<(String, Option<DateTime<Utc>>)> {
    let spent = spent(desired, marks, now);
    holding(&spent, desired, d).map(|s| (s.message.clone(), s.renews))
}

/// Stops the running sessions of every pool and account whose budget is spent.
pub fn enforce(
    desired: &Desired,
    state: &mut State,
    now: DateTime<Utc>,
    plan: &mut Plan,
    only: Option<&std::collections::BTreeSet<String>>,
) {
    let spent = spent(desired, &state.budget_marks, now);
    if spent.is_empty() {
        return;
    }
    for d in desired
        .sessions
        .values()
        .filter(|d| only.is_none_or(|o| o.contains(&d.name)))
    {
        let Some(s) = holding(&spent, desired, d) else {
            continue;
        };
        let Some(rec) = state.sessions.get_mut(&d.name) else {
            continue;
        };
        if let Run::Running(r) = &mut rec.run {
            if r.stop.is_none() {
                let pid = r.pid;
                super::reconcile::begin_budget_stop(r, d, s.message.clone(), now);
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
