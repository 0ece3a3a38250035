//! Usage limits of agent accounts: waiting for quota is not a failure.
//!
//! When an agent run is rejected by its account's usage limit (the CLI's
//! `rate_limit_event` with `status: rejected` and `resetsAt`), the session
//! waits in [`Phase::WaitingForQuota`](super::Phase::WaitingForQuota) until
//! the reset plus a little jitter, then resumes the same conversation. It
//! counts no failure (neither `maxRetries` nor the backoff see it).
//!
//! Sessions on one account park together: while any session of the account
//! waits for its reset, the others are not started (running ones are left
//! alone: they may finish before they hit the limit). The park is derived
//! from the records themselves ([`parked_until`]), so it survives a
//! controller restart with the statuses, and nothing else must be kept in step.
//!
//! Pure: `now` is passed in.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::desired::Desired;
use super::state::{Record, Run, State, Wait};
use super::{Phase, Reason};

/// The most jitter added after a reset: sessions of one account do not all
/// hit the API in the same second.
pub const MAX_JITTER_SECONDS: u64 = 5;

/// What a usage-limit rejection said (carried by the attempt's verdict).
#[derive(Debug, Clone, PartialEq)]
pub struct QuotaHit {
    /// When the limit resets.
    pub resets_at: DateTime<Utc>,
    /// `five_hour`, `seven_day`, ...
    pub limit_type: Option<String>,
}

/// A session waiting for its account's quota (`status.quota`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct QuotaWait {
    /// When the limit resets.
    pub resets_at: DateTime<Utc>,
    /// `five_hour`, `seven_day`, ...
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit_type: Option<String>,
    /// The account (a name, or a hash of the credential: never the credential).
    pub account: String,
}

/// A small per-session delay after the reset, from the name (the same on
/// every pass and after a restart), 1 to [`MAX_JITTER_SECONDS`] seconds.
pub fn jitter(name: &str) -> chrono::Duration {
    // FNV-1a: stable across runs and platforms, unlike the std hasher.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    chrono::Duration::seconds(1 + (h % MAX_JITTER_SECONDS) as i64)
}

/// When the session resumes after a reset at `resets_at`.
pub fn resume_at(name: &str, resets_at: DateTime<Utc>) -> DateTime<Utc> {
    resets_at + jitter(name)
}

/// Puts an attempt rejected by its usage limit to wait for the reset: no
/// failure counted, the next attempt at the reset plus jitter.
pub fn wait_for_reset(
    name: &str,
    rec: &mut Record,
    hit: &QuotaHit,
    account: &str,
    now: DateTime<Utc>,
) {
    // A reset already past (a clock step, a slow exit) still waits the jitter.
    let resets_at = hit.resets_at.max(now);
    rec.run = Run::Backoff {
        until: resume_at(name, resets_at),
    };
    rec.quota = Some(QuotaWait {
        resets_at,
        limit_type: hit.limit_type.clone(),
        account: account.to_string(),
    });
}

/// Until when `account` is parked: the latest reset any session of the
/// account waits for, if still ahead.
pub fn parked_until<'a>(
    state: &'a State,
    account: &str,
    now: DateTime<Utc>,
) -> Option<&'a QuotaWait> {
    state
        .sessions
        .values()
        .filter_map(|r| r.quota.as_ref())
        .filter(|q| q.account == account && q.resets_at > now)
        .max_by_key(|q| q.resets_at)
}

/// Holds a session that would start now because its account is parked.
pub fn hold(rec: &mut Record, park: &QuotaWait) {
    rec.quota = Some(park.clone());
    rec.run = Run::Idle(Some(Wait {
        phase: Phase::WaitingForQuota,
        reason: Reason::UsageLimited,
        message: format!(
            "account {} reached its usage limit{}; starts after it resets at {}",
            park.account,
            park.limit_type
                .as_deref()
                .map(|t| format!(" ({t})"))
                .unwrap_or_default(),
            park.resets_at.to_rfc3339()
        ),
        position: None,
        estimated_wait_seconds: None,
        queued_at: None,
    }));
}

/// One account's state, for the controller status and `get`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AccountView {
    /// `Ok`, or `WaitingForQuota` while parked.
    pub state: String,
    /// While parked: when the limit resets.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resets_at: Option<DateTime<Utc>>,
    /// While parked: which limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit_type: Option<String>,
    /// Sessions declared on the account.
    pub sessions: u32,
    /// Of them, running now.
    pub running: u32,
    /// Of them, waiting for the reset.
    pub waiting: u32,
}

/// Every account's state.
pub fn accounts(
    desired: &Desired,
    state: &State,
    now: DateTime<Utc>,
) -> BTreeMap<String, AccountView> {
    let mut out: BTreeMap<String, AccountView> = BTreeMap::new();
    for (name, account) in &desired.accounts {
        let park = parked_until(state, account, now);
        let view = out.entry(account.clone()).or_insert_with(|| AccountView {
            state: if park.is_some() {
                "WaitingForQuota"
            } else {
                "Ok"
            }
            .into(),
            resets_at: park.map(|p| p.resets_at),
            limit_type: park.and_then(|p| p.limit_type.clone()),
            sessions: 0,
            running: 0,
            waiting: 0,
        });
        view.sessions += 1;
        if let Some(rec) = state.sessions.get(name) {
            if rec.run.is_live() {
                view.running += 1;
            } else if rec.quota.as_ref().is_some_and(|q| q.resets_at > now) {
                view.waiting += 1;
            }
        }
    }
    out
}
