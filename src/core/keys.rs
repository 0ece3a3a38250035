//! Per-key reconcile: what a change touches, and when each key is due.
//!
//! The shell does not reconcile every session on every wake-up. Each trigger
//! names keys (a changed manifest: its sessions and pool; an exit, an
//! agent's output, a spawn's answer: its session; a deadline: the keys that
//! asked to be woken then), a [`Queue`] collapses them and holds each key's
//! due time, and [`crate::core::reconcile::reconcile_keys`] steps only the
//! sessions those keys reach ([`closure`]). A pool owns the decisions across
//! its members (capacity, queue order, rolling order, budget), so a key of
//! any member reaches the whole pool; an account's sessions park together,
//! so a key of one reaches its account's sessions.
//!
//! The property test in `core::tests` checks the promise this rests on:
//! reconciling only the keys the events returned reaches the same state and
//! plans the same actions as reconciling everything.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::desired::{Desired, DesiredSession};
use super::state::State;

/// What a trigger names.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Key {
    /// One session (declared, or only known from the state).
    Session(String),
    /// A pool: every member, declared or still running.
    Pool(String),
}

/// The keys a change of the desired state touches: sessions added, removed
/// or changed (spec, generation, replica place, restart annotation, first
/// sight, account), pools added, removed or changed, and budgets or spend
/// that moved. Its cost follows the size of the maps compared; the shell,
/// which knows which files changed, can name keys directly instead.
pub fn changed(old: &Desired, new: &Desired) -> BTreeSet<Key> {
    let mut keys = BTreeSet::new();
    let same = |a: &DesiredSession, b: &DesiredSession| {
        a.generation == b.generation
            && (Arc::ptr_eq(&a.spec, &b.spec) || a.spec == b.spec)
            && a.replica == b.replica
            && a.restarted_at == b.restarted_at
            && a.first_seen == b.first_seen
    };
    for (name, d) in &new.sessions {
        let was = old.sessions.get(name);
        if was.is_none_or(|o| !same(o, d)) || old.accounts.get(name) != new.accounts.get(name) {
            keys.insert(Key::Session(name.clone()));
            keys.extend(d.pool().map(|p| Key::Pool(p.to_string())));
            keys.extend(was.and_then(|o| o.pool()).map(|p| Key::Pool(p.to_string())));
        }
    }
    for (name, d) in &old.sessions {
        if !new.sessions.contains_key(name) {
            keys.insert(Key::Session(name.clone()));
            keys.extend(d.pool().map(|p| Key::Pool(p.to_string())));
        }
    }
    let pools: BTreeSet<&String> = old.pools.keys().chain(new.pools.keys()).collect();
    for p in pools {
        let (a, b) = (old.pools.get(p), new.pools.get(p));
        let differs = match (a, b) {
            (Some(a), Some(b)) => {
                (a.replicas, a.max_concurrent, a.max_queue, a.generation)
                    != (b.replicas, b.max_concurrent, b.max_queue, b.generation)
            }
            (None, None) => false,
            _ => true,
        };
        if differs {
            keys.insert(Key::Pool(p.clone()));
        }
    }
    keys.extend(spend_moved(
        &Spending::of(old),
        &Spending::of(new),
        &old.accounts,
        &new.accounts,
    ));
    keys
}

/// The budget figures of a desired state, as [`spend_moved`] compares them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Spending {
    budgets: BTreeMap<String, crate::api::manifest::Budget>,
    spend: BTreeMap<String, super::budget::Spend>,
    account_budgets: BTreeMap<String, crate::api::manifest::Budget>,
    account_spend: BTreeMap<String, super::budget::Spend>,
}

impl Spending {
    /// A copy of `desired`'s budgets and spend (a few entries per pool and account).
    pub fn of(desired: &Desired) -> Spending {
        Spending {
            budgets: desired.budgets.clone(),
            spend: desired.spend.clone(),
            account_budgets: desired.account_budgets.clone(),
            account_spend: desired.account_spend.clone(),
        }
    }
}

/// The keys a move of budgets or spend touches: each pool whose budget or
/// spend moved (also of a pool whose manifest went: core::budget looks the
/// pool up by name only), and every session of an account whose budget or
/// spend moved (`old_accounts`, `new_accounts`: session → account).
pub fn spend_moved(
    old: &Spending,
    new: &Spending,
    old_accounts: &BTreeMap<String, String>,
    new_accounts: &BTreeMap<String, String>,
) -> BTreeSet<Key> {
    let mut keys = BTreeSet::new();
    if old == new {
        return keys;
    }
    let budgeted: BTreeSet<&String> = old
        .budgets
        .keys()
        .chain(new.budgets.keys())
        .chain(old.spend.keys())
        .chain(new.spend.keys())
        .collect();
    for p in budgeted {
        if old.budgets.get(p) != new.budgets.get(p) || old.spend.get(p) != new.spend.get(p) {
            keys.insert(Key::Pool(p.clone()));
        }
    }
    let accounts: BTreeSet<&String> = old
        .account_budgets
        .keys()
        .chain(new.account_budgets.keys())
        .chain(old.account_spend.keys())
        .chain(new.account_spend.keys())
        .collect();
    for a in accounts {
        if old.account_budgets.get(a) != new.account_budgets.get(a)
            || old.account_spend.get(a) != new.account_spend.get(a)
        {
            for (s, acc) in new_accounts.iter().chain(old_accounts.iter()) {
                if acc == a {
                    keys.insert(Key::Session(s.clone()));
                }
            }
        }
    }
    keys
}

/// The sessions `keys` reach: each session named, the whole pool of each
/// pooled session (its declared members and the members still running
/// after their manifest went), and every session of each account a reached
/// session belongs to (they park on one usage limit and share a budget).
pub fn closure(desired: &Desired, state: &State, keys: &BTreeSet<Key>) -> BTreeSet<String> {
    let mut sessions: BTreeSet<String> = BTreeSet::new();
    let mut pools: BTreeSet<String> = BTreeSet::new();
    for k in keys {
        match k {
            Key::Session(s) => {
                sessions.insert(s.clone());
                if let Some(p) = pool_of(desired, state, s) {
                    pools.insert(p.to_string());
                }
            }
            Key::Pool(p) => {
                pools.insert(p.clone());
            }
        }
    }
    if !pools.is_empty() {
        for d in desired.sessions.values() {
            if d.pool().is_some_and(|p| pools.contains(p)) {
                sessions.insert(d.name.clone());
            }
        }
        // Members by the rule the pool's running count uses: a session
        // still running under a spec of the pool counts in it, also when its
        // manifest went or its new spec left the pool.
        for name in state.sessions.keys() {
            if pool_of(desired, state, name).is_some_and(|p| pools.contains(p)) {
                sessions.insert(name.clone());
            }
        }
    }
    let accounts: BTreeSet<&String> = sessions
        .iter()
        .filter_map(|s| desired.accounts.get(s))
        .collect();
    if !accounts.is_empty() {
        let more: Vec<String> = desired
            .accounts
            .iter()
            .filter(|(_, a)| accounts.contains(a))
            .map(|(s, _)| s.clone())
            .collect();
        sessions.extend(more);
    }
    sessions
}

/// The keys an event about session `name` touches, taken before the event
/// is observed: the session, and the pool it counts in now (an exit frees a
/// slot of the pool its last spec ran in, which the record forgets once the
/// attempt has ended).
pub fn event_keys(desired: &Desired, state: &State, name: &str) -> Vec<Key> {
    let mut keys = vec![Key::Session(name.to_string())];
    if let Some(p) = pool_of(desired, state, name) {
        keys.push(Key::Pool(p.to_string()));
    }
    keys
}

/// The pool a session counts in: its declared pool, else the pool of the
/// spec it last ran with (a member whose manifest went holds its slot
/// until it exits).
fn pool_of<'a>(desired: &'a Desired, state: &'a State, name: &str) -> Option<&'a str> {
    desired
        .sessions
        .get(name)
        .and_then(|d| d.pool())
        .or_else(|| {
            state
                .sessions
                .get(name)
                .and_then(|r| r.last_spec.as_ref())
                .and_then(|(_, p)| p.as_deref())
        })
}

/// Keys waiting to be reconciled: those touched since the last pass, and
/// each reconciled key's next due time. Touching a key many times before a
/// pass collapses into one visit; a key is due at most at one time.
#[derive(Debug, Clone, Default)]
pub struct Queue {
    touched: BTreeSet<Key>,
    due: BTreeMap<Key, DateTime<Utc>>,
    by_time: BTreeSet<(DateTime<Utc>, Key)>,
}

impl Queue {
    /// `key` changed: visit it at the next pass.
    pub fn touch(&mut self, key: Key) {
        self.touched.insert(key);
    }

    /// Every key in `keys` changed.
    pub fn touch_all(&mut self, keys: impl IntoIterator<Item = Key>) {
        self.touched.extend(keys);
    }

    /// The keys to visit at `now`: the touched ones and those due by then.
    /// They leave the queue; [`Queue::schedule`] puts them back with their
    /// next due time.
    pub fn take(&mut self, now: DateTime<Utc>) -> BTreeSet<Key> {
        let mut keys = std::mem::take(&mut self.touched);
        while let Some((at, _)) = self.by_time.first() {
            if *at > now {
                break;
            }
            if let Some((_, key)) = self.by_time.pop_first() {
                self.due.remove(&key);
                keys.insert(key);
            }
        }
        keys
    }

    /// After a pass over `sessions`: each is due next at its own time in
    /// `due` (the plan's [`super::plan::Plan::due`]), or not at all.
    pub fn schedule(&mut self, sessions: &BTreeSet<String>, due: &BTreeMap<String, DateTime<Utc>>) {
        for s in sessions {
            let key = Key::Session(s.clone());
            if let Some(old) = self.due.remove(&key) {
                self.by_time.remove(&(old, key.clone()));
            }
            if let Some(at) = due.get(s).copied() {
                self.due.insert(key.clone(), at);
                self.by_time.insert((at, key));
            }
        }
    }

    /// Forgets the due time of a session no longer known.
    pub fn forget(&mut self, session: &str) {
        let key = Key::Session(session.to_string());
        if let Some(old) = self.due.remove(&key) {
            self.by_time.remove(&(old, key));
        }
    }

    /// When the next key is due, for the shell's one timer.
    pub fn next_due(&self) -> Option<DateTime<Utc>> {
        self.by_time.first().map(|(at, _)| *at)
    }

    /// True when nothing is touched (due keys may wait).
    pub fn is_quiet(&self) -> bool {
        self.touched.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(s: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_700_000_000 + s, 0)
            .single()
            .expect("a time")
    }

    #[test]
    fn touched_keys_collapse_and_due_keys_come_back_at_their_time() {
        let mut q = Queue::default();
        q.touch(Key::Session("a".into()));
        q.touch(Key::Session("a".into()));
        assert_eq!(q.take(t(0)).len(), 1);
        assert!(q.take(t(0)).is_empty());
        let at = |s: &[(&str, i64)]| -> BTreeMap<String, DateTime<Utc>> {
            s.iter().map(|(n, x)| (n.to_string(), t(*x))).collect()
        };
        q.schedule(
            &BTreeSet::from(["a".to_string(), "b".to_string()]),
            &at(&[("a", 10), ("b", 15)]),
        );
        assert_eq!(q.next_due(), Some(t(10)));
        assert!(q.take(t(9)).is_empty());
        // A later pass over `a` moves its due time; `b` keeps its own.
        q.schedule(&BTreeSet::from(["a".to_string()]), &at(&[("a", 20)]));
        assert_eq!(q.take(t(15)), BTreeSet::from([Key::Session("b".into())]));
        q.schedule(&BTreeSet::from(["a".to_string()]), &at(&[]));
        assert_eq!(q.next_due(), None);
        assert!(q.is_quiet());
    }
}
