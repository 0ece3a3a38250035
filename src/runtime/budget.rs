//! The spend of pools with a budget (core::budget decides what it means).
//!
//! Each ended attempt of a member is charged to its pool once, when it
//! ends; the running members' attempts so far are added at every pass. The
//! charged spend of pools and accounts is kept in
//! `.sessionlet/budget-spend.json`, so a new controller goes on from it; a
//! new period (the UTC day) starts from zero.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use super::agents::{Agents, Totals};
use crate::core::budget::{self, Spend};
use crate::core::{Desired, Run, State};

/// The file's content: charged spend per pool and per account.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct Kept {
    pools: BTreeMap<String, (String, Spend)>,
    accounts: BTreeMap<String, (String, Spend)>,
}

/// What each pool's ended attempts spent: (period, spend).
#[derive(Debug, Default)]
pub struct Ledger {
    charged: BTreeMap<String, (String, Spend)>,
    /// The same per agent account (`--account-budget`).
    accounts: BTreeMap<String, (String, Spend)>,
    /// Where the charged spend of pools and accounts is kept
    /// (`.sessionlet/budget-spend.json`).
    accounts_file: Option<std::path::PathBuf>,
}

impl Ledger {
    /// The charged spend of `pool` in the current period.
    fn current(&self, pool: &str, period: &str) -> Spend {
        match self.charged.get(pool) {
            Some((p, s)) if p == period => *s,
            _ => Spend::default(),
        }
    }

    /// Adds an ended attempt's cost and tokens to its pool.
    fn add(&mut self, pool: &str, period: String, t: Totals) {
        let now = self.current(pool, &period);
        let spend = Spend {
            cost_usd: now.cost_usd + t.cost_usd,
            tokens: now
                .tokens
                .saturating_add(t.input_tokens.saturating_add(t.output_tokens)),
        };
        self.charged.insert(pool.to_string(), (period, spend));
        self.save();
    }

    /// The charged spend of `account` in the current period.
    fn account_current(&self, account: &str, period: &str) -> Spend {
        match self.accounts.get(account) {
            Some((p, s)) if p == period => *s,
            _ => Spend::default(),
        }
    }

    /// Reads the charged spend an earlier controller kept, and keeps it
    /// there from now on.
    pub fn restore_kept(&mut self, control_dir: &std::path::Path) {
        let file = control_dir.join("budget-spend.json");
        if let Ok(text) = std::fs::read(&file) {
            if let Ok(v) = serde_json::from_slice::<Kept>(&text) {
                self.charged = v.pools;
                self.accounts = v.accounts;
            }
        }
        self.accounts_file = Some(file);
    }

    fn save(&self) {
        let Some(file) = &self.accounts_file else {
            return;
        };
        let kept = Kept {
            pools: self.charged.clone(),
            accounts: self.accounts.clone(),
        };
        if let Ok(text) = serde_json::to_vec(&kept) {
            if let Err(e) = super::files::write_atomic(file, &text) {
                tracing::error!("cannot write {}: {e}", file.display());
            }
        }
    }
}

/// Charges `name`'s ended attempt to its pool, when the pool has a budget.
pub fn charge(
    ledger: &mut Ledger,
    desired: &Desired,
    agents: &Agents,
    name: &str,
    now: DateTime<Utc>,
) {
    charge_account(ledger, desired, agents, name, now);
    let Some(pool) = desired.sessions.get(name).and_then(|d| d.pool()) else {
        return;
    };
    let Some(b) = desired.budgets.get(pool) else {
        return;
    };
    if let Some(t) = agents.attempt_totals(name) {
        ledger.add(pool, budget::period(b.per, now), t);
    }
}

/// Charges `name`'s ended attempt to its account, when it has a budget.
fn charge_account(
    ledger: &mut Ledger,
    desired: &Desired,
    agents: &Agents,
    name: &str,
    now: DateTime<Utc>,
) {
    let Some(account) = desired.accounts.get(name) else {
        return;
    };
    let Some(b) = desired.account_budgets.get(account) else {
        return;
    };
    let Some(t) = agents.attempt_totals(name) else {
        return;
    };
    let period = budget::period(b.per, now);
    let was = ledger.account_current(account, &period);
    let spend = Spend {
        cost_usd: was.cost_usd + t.cost_usd,
        tokens: was
            .tokens
            .saturating_add(t.input_tokens.saturating_add(t.output_tokens)),
    };
    ledger.accounts.insert(account.clone(), (period, spend));
    ledger.save();
}

/// Parses `--account-budget ACCOUNT:maxCostUsd=5,maxTokens=1000,per=day`.
pub fn parse_account_budget(s: &str) -> Result<(String, crate::api::manifest::Budget), String> {
    use crate::api::manifest::{Budget, BudgetPeriod};
    let (account, limits) = s
        .split_once(':')
        .ok_or("expected ACCOUNT:maxCostUsd=N,maxTokens=N,per=day|total")?;
    if account.trim().is_empty() {
        return Err("the account is empty (e.g. team-max:maxCostUsd=5)".into());
    }
    let mut b = Budget {
        max_cost_usd: None,
        max_tokens: None,
        per: BudgetPeriod::Day,
    };
    for part in limits.split(',').filter(|p| !p.trim().is_empty()) {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| format!("{part:?}: expected KEY=VALUE"))?;
        match k.trim() {
            "maxCostUsd" => {
                let n: f64 = v
                    .trim()
                    .parse()
                    .map_err(|_| format!("maxCostUsd {v:?} is not a number"))?;
                if !(n.is_finite() && n > 0.0) {
                    return Err(format!("maxCostUsd {v:?} must be a positive number"));
                }
                b.max_cost_usd = Some(n);
            }
            "maxTokens" => {
                let n: u64 = v
                    .trim()
                    .parse()
                    .map_err(|_| format!("maxTokens {v:?} is not a whole number"))?;
                if n == 0 {
                    return Err("maxTokens must be at least 1".into());
                }
                b.max_tokens = Some(n);
            }
            "per" => {
                b.per = match v.trim() {
                    "day" => BudgetPeriod::Day,
                    "total" => BudgetPeriod::Total,
                    other => return Err(format!("per {other:?}: use day or total")),
                }
            }
            other => {
                return Err(format!(
                    "unknown limit {other:?}: use maxCostUsd, maxTokens or per"
                ))
            }
        }
    }
    if b.max_cost_usd.is_none() && b.max_tokens.is_none() {
        return Err("set maxCostUsd or maxTokens (e.g. team-max:maxCostUsd=5)".into());
    }
    Ok((account.to_string(), b))
}

/// Adds each account budget's state to the controller status (`extra.accountBudgets`).
pub fn add_account_budgets(
    extra: &mut BTreeMap<String, Value>,
    ledger: &Ledger,
    desired: &Desired,
    now: DateTime<Utc>,
) {
    if desired.account_budgets.is_empty() {
        return;
    }
    let mut out = serde_json::Map::new();
    for (account, b) in &desired.account_budgets {
        let period = budget::period(b.per, now);
        let spend = desired
            .account_spend
            .get(account)
            .copied()
            .unwrap_or_else(|| ledger.account_current(account, &period));
        out.insert(
            account.clone(),
            json!({
                "per": b.per,
                "period": period,
                "maxCostUsd": b.max_cost_usd,
                "maxTokens": b.max_tokens,
                "spentCostUsd": (spend.cost_usd * 1e6).round() / 1e6,
                "spentTokens": spend.tokens,
                "exceeded": budget::exceeded(b, &spend).is_some(),
                "renewsAt": budget::period_end(b.per, now),
            }),
        );
    }
    extra.insert("accountBudgets".into(), Value::Object(out));
}

/// Fills `desired.spend`: charged spend plus the running members' attempts,
/// never below the highest spend the core saw in the period (its
/// [`budget::Marks`], which its decisions use): the statuses show the
/// figure the members are held by.
pub fn fill(
    ledger: &Ledger,
    desired: &mut Desired,
    state: &State,
    agents: &Agents,
    now: DateTime<Utc>,
) {
    if desired.budgets.is_empty() && desired.account_budgets.is_empty() {
        // Nothing is budgeted: no spend to add up (a pass stays O(changes)).
        desired.spend.clear();
        desired.account_spend.clear();
        return;
    }
    let mut spend: BTreeMap<String, Spend> = BTreeMap::new();
    for (pool, b) in &desired.budgets {
        spend.insert(
            pool.clone(),
            ledger.current(pool, &budget::period(b.per, now)),
        );
    }
    for d in desired.sessions.values() {
        let Some(total) = d.pool().and_then(|p| spend.get_mut(p)) else {
            continue;
        };
        let running = state
            .sessions
            .get(&d.name)
            .is_some_and(|r| matches!(r.run, Run::Running(_)));
        if let (true, Some(t)) = (running, agents.attempt_totals(&d.name)) {
            total.cost_usd += t.cost_usd;
            total.tokens = total
                .tokens
                .saturating_add(t.input_tokens.saturating_add(t.output_tokens));
        }
    }
    for (pool, total) in spend.iter_mut() {
        if let Some(b) = desired.budgets.get(pool) {
            *total = total.max(state.budget_marks.pool(pool, b, now));
        }
    }
    desired.spend = spend;
    let mut accounts: BTreeMap<String, Spend> = BTreeMap::new();
    for (account, b) in &desired.account_budgets {
        let current = ledger.account_current(account, &budget::period(b.per, now));
        accounts.insert(account.clone(), current);
    }
    for d in desired.sessions.values() {
        let Some(total) = desired
            .accounts
            .get(&d.name)
            .and_then(|a| accounts.get_mut(a))
        else {
            continue;
        };
        let running = state
            .sessions
            .get(&d.name)
            .is_some_and(|r| matches!(r.run, Run::Running(_)));
        if let (true, Some(t)) = (running, agents.attempt_totals(&d.name)) {
            total.cost_usd += t.cost_usd;
            total.tokens = total
                .tokens
                .saturating_add(t.input_tokens.saturating_add(t.output_tokens));
        }
    }
    for (account, total) in accounts.iter_mut() {
        if let Some(b) = desired.account_budgets.get(account) {
            *total = total.max(state.budget_marks.account(account, b, now));
        }
    }
    desired.account_spend = accounts;
}

/// The pool status's `budget` block.
pub fn status(ledger: &Ledger, desired: &Desired, pool: &str, now: DateTime<Utc>) -> Option<Value> {
    let b = desired.budgets.get(pool)?;
    let period = budget::period(b.per, now);
    let charged = ledger.current(pool, &period);
    let spend = desired.spend.get(pool).copied().unwrap_or(charged);
    let exceeded = budget::exceeded(b, &spend);
    Some(json!({
        "per": b.per,
        "period": period,
        "maxCostUsd": b.max_cost_usd,
        "maxTokens": b.max_tokens,
        "spentCostUsd": (spend.cost_usd * 1e6).round() / 1e6,
        "spentTokens": spend.tokens,
        "chargedCostUsd": charged.cost_usd,
        "chargedTokens": charged.tokens,
        "exceeded": exceeded.is_some(),
        "message": exceeded,
        "renewsAt": budget::period_end(b.per, now),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charges_add_up_per_period_and_restore() {
        let mut l = Ledger::default();
        let t = Totals {
            cost_usd: 0.5,
            input_tokens: 10,
            output_tokens: 5,
        };
        l.add("p", "2030-01-01".into(), t);
        l.add("p", "2030-01-01".into(), t);
        assert_eq!(
            l.current("p", "2030-01-01"),
            Spend {
                cost_usd: 1.0,
                tokens: 30
            }
        );
        // A new day starts from zero.
        assert_eq!(l.current("p", "2030-01-02"), Spend::default());
        l.add("p", "2030-01-02".into(), t);
        assert_eq!(l.current("p", "2030-01-02").tokens, 15);
        // Kept in the control folder for the next controller.
        let dir = tempfile::tempdir().unwrap();
        let mut kept = Ledger::default();
        kept.restore_kept(dir.path());
        kept.add("p", "2030-01-02".into(), t);
        let mut again = Ledger::default();
        again.restore_kept(dir.path());
        assert_eq!(again.current("p", "2030-01-02").tokens, 15);
    }
}

#[cfg(test)]
mod fill_tests {
    use super::*;
    use crate::api::manifest::{Budget, BudgetPeriod};

    #[test]
    fn the_spend_shown_is_never_below_the_highest_the_core_saw() {
        let now = chrono::TimeZone::with_ymd_and_hms(&Utc, 2030, 1, 1, 12, 0, 0).unwrap();
        let mut desired = Desired::default();
        let b = Budget {
            max_cost_usd: None,
            max_tokens: Some(2000),
            per: BudgetPeriod::Day,
        };
        desired.budgets.insert("p".into(), b);
        desired.spend.insert(
            "p".into(),
            Spend {
                cost_usd: 0.0,
                tokens: 2092,
            },
        );
        let mut state = State::default();
        budget::note(&desired, &mut state.budget_marks, now);
        // The ledger (nothing charged here) says less than the core saw.
        fill(
            &Ledger::default(),
            &mut desired,
            &state,
            &Agents::default(),
            now,
        );
        assert_eq!(desired.spend["p"].tokens, 2092);
        assert!(
            status(&Ledger::default(), &desired, "p", now).is_some_and(|v| v["exceeded"] == true)
        );
    }
}

#[cfg(test)]
mod parse_tests {
    use super::*;
    use crate::api::manifest::BudgetPeriod;

    #[test]
    fn account_budgets_parse_with_clear_errors() {
        let (a, b) = parse_account_budget("team:maxCostUsd=5,maxTokens=100,per=total").unwrap();
        assert_eq!(a, "team");
        assert_eq!(
            (b.max_cost_usd, b.max_tokens, b.per),
            (Some(5.0), Some(100), BudgetPeriod::Total)
        );
        assert_eq!(
            parse_account_budget("t:maxTokens=9").unwrap().1.per,
            BudgetPeriod::Day
        );
        for bad in [
            "team",
            ":maxCostUsd=1",
            "t:",
            "t:maxCostUsd=-1",
            "t:maxTokens=0",
            "t:per=week,maxTokens=1",
            "t:colour=red",
        ] {
            assert!(parse_account_budget(bad).is_err(), "{bad}");
        }
    }
}
