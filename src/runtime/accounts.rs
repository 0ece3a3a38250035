//! Which account each agent session runs on, for the usage-limit park
//! (core::quota).
//!
//! `agent.account` names it; without one, the account is a hash of the
//! session's credential (`CLAUDE_CODE_OAUTH_TOKEN`, `ANTHROPIC_API_KEY` or
//! `ANTHROPIC_AUTH_TOKEN`, from `--pass-env`, `envFrom` or `env`), so that
//! sessions sharing a login share a park. The credential itself is never
//! stored, logged or shown: only `sha256:` and the first 12 hex digits of its
//! hash.

use std::collections::BTreeMap;
use std::path::Path;

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use crate::api::SessionSpec;
use crate::core::{Desired, State};

/// The variables that hold an agent's credential, in the order the CLI
/// prefers them.
pub const CREDENTIAL_VARS: &[&str] = &[
    "CLAUDE_CODE_OAUTH_TOKEN",
    "ANTHROPIC_AUTH_TOKEN",
    "ANTHROPIC_API_KEY",
];

/// The account of a session with no credential and no `agent.account`.
pub const DEFAULT_ACCOUNT: &str = "default";

/// The account name for a credential value: a short hash, never the value.
pub fn hashed(credential: &str) -> String {
    let digest = Sha256::digest(credential.as_bytes());
    let hex: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// The account of one agent session (`None` for plain commands).
pub fn account_of(spec: &SessionSpec, pass_env: &[String], manifest_dir: &Path) -> Option<String> {
    let agent = spec.agent.as_ref()?;
    if let Some(name) = agent.account.as_deref().filter(|a| !a.trim().is_empty()) {
        return Some(name.to_string());
    }
    // The same layers the spawn uses; an unreadable envFrom file fails the
    // spawn later with its own message, here it only means "no credential".
    let env = super::session_env::build(spec, Vec::new(), pass_env, manifest_dir).ok()?;
    let credential = CREDENTIAL_VARS.iter().find_map(|var| {
        env.iter()
            .find(|(k, v)| k == var && !v.is_empty())
            .map(|(_, v)| v.as_str())
    });
    Some(credential.map_or_else(|| DEFAULT_ACCOUNT.to_string(), hashed))
}

/// Fills `desired.accounts` for every agent session.
pub fn fill(desired: &mut Desired, pass_env: &[String], manifest_dir: &Path) {
    let accounts: BTreeMap<String, String> = desired
        .sessions
        .values()
        .filter_map(|d| Some((d.name.clone(), account_of(&d.spec, pass_env, manifest_dir)?)))
        .collect();
    desired.accounts = accounts;
}

/// Adds each account's state to the controller status (`extra.accounts`).
pub fn add_to_status(
    extra: &mut BTreeMap<String, serde_json::Value>,
    desired: &Desired,
    state: &State,
    now: DateTime<Utc>,
) {
    let accounts = crate::core::quota::accounts(desired, state, now);
    if !accounts.is_empty() {
        extra.insert("accounts".into(), serde_json::json!(accounts));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_hides_the_credential() {
        let a = hashed("sk-ant-oat01-fake");
        assert!(a.starts_with("sha256:") && a.len() == 7 + 12, "{a}");
        assert!(!a.contains("fake"));
        assert_eq!(a, hashed("sk-ant-oat01-fake"), "stable");
        assert_ne!(a, hashed("sk-ant-oat01-other"));
    }
}
