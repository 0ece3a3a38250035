//! The spend of pools with a budget (core::budget decides what it means).
//!
//! Each ended attempt of a member is charged to its pool once, when it
//! ends; the running members' attempts so far are added at every pass. The
//! charged spend is kept in the pool's status (`status.budget`), so a new
//! controller goes on from it; a new period (the UTC day) starts from zero.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use super::agents::{Agents, Totals};
use crate::core::budget::{self, Spend};
use crate::core::{Desired, Run, State};

/// What each pool's ended attempts spent: (period, spend).
#[derive(Debug, Default)]
pub struct Ledger {
    charged: BTreeMap<String, (String, Spend)>,
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
    }

    /// Restores a pool's charged spend from its previous status.
    pub fn restore(&mut self, pool: &str, status: &Value) {
        let b = &status["budget"];
        let Some(period) = b["period"].as_str() else {
            return;
        };
        let spend = Spend {
            cost_usd: b["chargedCostUsd"].as_f64().unwrap_or(0.0),
            tokens: b["chargedTokens"].as_u64().unwrap_or(0),
        };
        self.charged
            .insert(pool.to_string(), (period.to_string(), spend));
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

/// Fills `desired.spend`: charged spend plus the running members' attempts.
pub fn fill(
    ledger: &Ledger,
    desired: &mut Desired,
    state: &State,
    agents: &Agents,
    now: DateTime<Utc>,
) {
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
    desired.spend = spend;
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
        let mut again = Ledger::default();
        again.restore(
            "p",
            &json!({"budget": {"period": "2030-01-02", "chargedCostUsd": 0.5, "chargedTokens": 15}}),
        );
        assert_eq!(
            again.current("p", "2030-01-02"),
            l.current("p", "2030-01-02")
        );
    }
}
