//! The agent verdict: what an ended attempt of an agent session means, from
//! what its CLI wrote (the shell reads and parses the output into an
//! [`agent::Tally`]; this decides).

use crate::agent::{self, Outcome, RestartHint, Tally};

use super::state::Verdict;
use super::Reason;

/// Judges an ended attempt from its tally: a usage limit waits for its
/// reset, a success completes, a failure says why and whether another
/// attempt could succeed (and how long to wait first), and an attempt
/// without a final result is abnormal; denied tool calls are noted.
pub fn of(tally: &Tally) -> Verdict {
    let outcome = tally.outcome();
    let status = tally.status();
    let text = status
        .result_text
        .as_deref()
        .map(|t| t.chars().take(300).collect::<String>())
        .unwrap_or_default();
    let quota = tally.usage_limit().and_then(|limit| {
        let resets_at = chrono::DateTime::from_timestamp(limit.resets_at?, 0)?;
        Some(crate::core::quota::QuotaHit {
            resets_at,
            limit_type: limit.rate_limit_type.clone(),
        })
    });
    if let Some(hit) = quota {
        return Verdict {
            reason: Reason::UsageLimited,
            message: format!(
                "the account reached its usage limit{}; it resets at {}",
                hit.limit_type
                    .as_deref()
                    .map(|t| format!(" ({t})"))
                    .unwrap_or_default(),
                hit.resets_at.to_rfc3339()
            ),
            min_delay: None,
            retry: true,
            quota: Some(hit),
        };
    }
    let retry_after = status
        .last_retry_delay_ms
        .map(std::time::Duration::from_millis);
    let verdict = match &outcome {
        Outcome::Success => Verdict {
            reason: Reason::Completed,
            message: format!(
                "the agent finished ({} turns{})",
                status.turns,
                status
                    .cost_usd
                    .map(|c| format!(", ${c:.4}"))
                    .unwrap_or_default()
            ),
            min_delay: None,
            retry: true,
            quota: None,
        },
        Outcome::Failed { reason } => {
            let hint = agent::restart_hint(&outcome, tally.last_retry_reason());
            Verdict {
                reason: Reason::AgentFailed,
                message: format!(
                    "the agent failed: {}{}{}",
                    reason.as_str(),
                    if text.is_empty() {
                        String::new()
                    } else {
                        format!(": {text}")
                    },
                    match (reason, retry_after) {
                        (agent::FailureReason::RateLimited, Some(d)) => {
                            format!(" (the CLI's retry-after: {} ms)", d.as_millis())
                        }
                        _ => String::new(),
                    }
                ),
                // A rate limit without a reset time (an API key's 429):
                // the backoff, at least the floor, and at least what
                // the API asked for (the CLI's retry delay).
                min_delay: match hint {
                    RestartHint::WaitLonger { min_delay, .. } => {
                        Some(retry_after.map_or(min_delay, |r| r.max(min_delay)))
                    }
                    _ => None,
                },
                retry: hint != RestartHint::DoNotRetry,
                quota: None,
            }
        }
        Outcome::Abnormal => {
            let hint = agent::restart_hint(&outcome, tally.last_retry_reason());
            Verdict {
                reason: Reason::AgentAbnormal,
                message: "the agent ended without a final result".into(),
                min_delay: match hint {
                    RestartHint::WaitLonger { min_delay, .. } => Some(min_delay),
                    _ => None,
                },
                retry: true,
                quota: None,
            }
        }
    };
    let mut verdict = verdict;
    if let Some(note) = agent::stream::denial_note(
        &status.permission_denials,
        status.permission_denials_omitted,
    ) {
        verdict.message = format!("{}; {note}", verdict.message);
    }
    verdict
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The verdict of a real CLI transcript (tests/fixtures/claude).
    fn verdict_of(fixture: &str) -> Verdict {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/claude")
            .join(fixture);
        let text = std::fs::read_to_string(&path).expect("the fixture");
        let mut tally = Tally::new();
        for line in text.lines() {
            tally.feed(line);
        }
        of(&tally)
    }

    #[test]
    fn a_finished_run_completes() {
        let v = verdict_of("ok_text.stream-json.jsonl");
        assert_eq!(v.reason, Reason::Completed, "{v:?}");
        assert!(v.retry && v.quota.is_none() && v.min_delay.is_none());
        assert!(
            v.message.starts_with("the agent finished ("),
            "{}",
            v.message
        );
    }

    #[test]
    fn an_auth_failure_is_not_retried() {
        let v = verdict_of("err_401_retries1.stream-json.jsonl");
        assert_eq!(v.reason, Reason::AgentFailed, "{v:?}");
        assert!(!v.retry, "another attempt fails the same way: {v:?}");
    }

    #[test]
    fn a_usage_limit_waits_for_its_reset() {
        let v = verdict_of("ulimit_oauth_print.stream-json.jsonl");
        assert_eq!(v.reason, Reason::UsageLimited, "{v:?}");
        let hit = v.quota.expect("the reset time");
        assert!(
            v.message.contains(&hit.resets_at.to_rfc3339()),
            "{}",
            v.message
        );
    }

    #[test]
    fn a_run_without_a_result_is_abnormal_and_retried() {
        let v = verdict_of("sig_term_during_bash_tool.stream-json.jsonl");
        assert_eq!(v.reason, Reason::AgentAbnormal, "{v:?}");
        assert!(v.retry);
    }

    #[test]
    fn an_api_key_rate_limit_waits_at_least_the_floor() {
        let v = verdict_of("err_429_retries1.stream-json.jsonl");
        assert_eq!(v.reason, Reason::AgentFailed, "{v:?}");
        assert!(v.retry && v.min_delay.is_some(), "{v:?}");
    }

    #[test]
    fn denied_tool_calls_are_noted() {
        let v = verdict_of("denied_bash_default_mode.stream-json.jsonl");
        assert!(v.message.contains("denied"), "{}", v.message);
    }
}
