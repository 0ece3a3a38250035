//! Desired state: what the manifests ask for, flattened into sessions and pools.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::api::{Priority, SessionSpec};

/// Everything the manifests ask for.
#[derive(Debug, Clone, Default)]
pub struct Desired {
    /// Sessions by name: declared Sessions and pool replicas.
    pub sessions: BTreeMap<String, DesiredSession>,
    /// Pools by name.
    pub pools: BTreeMap<String, DesiredPool>,
    /// The account of each agent session (`agent.account`, or a hash of its
    /// credential), filled in by the shell: sessions of one account park
    /// together on its usage limit (core::quota).
    pub accounts: BTreeMap<String, String>,
    /// Each pool's `spec.budget`.
    pub budgets: BTreeMap<String, crate::api::manifest::Budget>,
    /// What each pool with a budget spent in the current period (ended
    /// attempts and the running ones so far), filled in by the shell before
    /// every pass (core::budget).
    pub spend: BTreeMap<String, super::budget::Spend>,
    /// Budgets of agent accounts (`--account-budget`).
    pub account_budgets: BTreeMap<String, crate::api::manifest::Budget>,
    /// What each account with a budget spent in the current period.
    pub account_spend: BTreeMap<String, super::budget::Spend>,
}

/// One session the manifests ask for.
#[derive(Debug, Clone)]
pub struct DesiredSession {
    /// Unique name (`POOL-N` for replicas).
    pub name: String,
    /// The spec to run.
    pub spec: Arc<SessionSpec>,
    /// Changes whenever the spec changes.
    pub generation: u64,
    /// When the controller first saw this session (queue order).
    pub first_seen: DateTime<Utc>,
    /// Set for pool replicas.
    pub replica: Option<Replica>,
    /// The `sessionlet.dev/restartedAt` annotation (the Pool's, for
    /// replicas): a change restarts the session on purpose.
    pub restarted_at: Option<String>,
}

/// A replica's place in its pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replica {
    /// The pool.
    pub pool: String,
    /// Its ordinal, 0-based.
    pub ordinal: u32,
}

impl DesiredSession {
    /// The pool whose capacity this session counts against.
    pub fn pool(&self) -> Option<&str> {
        match &self.replica {
            Some(r) => Some(&r.pool),
            None => self.spec.pool.as_deref(),
        }
    }
    /// Queue priority (replicas go first regardless).
    pub fn priority(&self) -> Priority {
        self.spec.priority
    }
}

/// One pool the manifests ask for.
#[derive(Debug, Clone)]
pub struct DesiredPool {
    /// The pool's name.
    pub name: String,
    /// Desired replicas.
    pub replicas: u32,
    /// Cap on running members; `None` is unlimited.
    pub max_concurrent: Option<u32>,
    /// Sessions allowed to wait.
    pub max_queue: u32,
    /// Changes whenever the pool's spec changes.
    pub generation: u64,
}
