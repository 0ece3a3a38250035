//! Agent sessions: headless agent CLI runs (`spec.agent`).
//!
//! The building blocks the controller uses:
//! - [`argv`]: the CLI profile that turns `spec.agent` (and the charter and
//!   global policy) into an argv and environment.
//! - [`charter`]: the charter rendered to Markdown for the system prompt.
//! - [`stream`]: the reader of the CLI's stream-json output ([`Tally`]), which
//!   keeps the status's metrics and judges the [`Outcome`].
//! - [`policy`]: forbidden commands and patterns, checked on every Bash call.
//! - [`restart_hint`] and [`should_resume`]: what an outcome means for the
//!   next attempt.

pub mod argv;
pub mod charter;
pub mod policy;
pub mod stream;
pub mod transcript;

use std::time::Duration;

pub use argv::{
    load_prompt, profile, ArgvError, ClaudeProfile, Conversation, Invocation, LaunchRequest,
    Profile, QUOTA_RESUME_PROMPT, RESUME_PROMPT,
};
pub use charter::render as render_charter;
pub use policy::{load_policy_file, Policy, PolicyError, RuleKind, Violation};
pub use stream::{AgentStatus, FailureReason, Outcome, PermissionDenial, Signal, Tally};

/// What an outcome means for the restart decision (on top of the session's
/// restart policy, which still decides whether there is a next attempt).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartHint {
    /// Use the configured backoff as it is.
    Backoff,
    /// Wait longer than the configured backoff: `multiplier` times the
    /// computed delay, and at least `min_delay`.
    WaitLonger {
        /// Factor on the computed delay.
        multiplier: u32,
        /// Floor of the delay.
        min_delay: Duration,
    },
    /// Do not restart automatically: the next attempt would fail the same way
    /// (and may cost money or hammer the API). A person must change something.
    DoNotRetry,
}

impl RestartHint {
    /// The delay to use given the backoff's computed delay.
    pub fn delay(&self, computed: Duration) -> Option<Duration> {
        match self {
            RestartHint::Backoff => Some(computed),
            RestartHint::WaitLonger {
                multiplier,
                min_delay,
            } => Some(computed.saturating_mul(*multiplier).max(*min_delay)),
            RestartHint::DoNotRetry => None,
        }
    }
}

/// A rate limit waits at least this long before the next attempt.
pub const RATE_LIMIT_MIN_DELAY: Duration = Duration::from_secs(60);
/// An overloaded API waits at least this long.
pub const OVERLOADED_MIN_DELAY: Duration = Duration::from_secs(30);

/// Maps an outcome to a restart hint.
///
/// An abnormal end during API retries (the CLI killed while it was backing
/// off) is judged by the retry's reason, which [`Tally::last_retry_reason`]
/// gives: pass it as `retrying`.
pub fn restart_hint(outcome: &Outcome, retrying: Option<FailureReason>) -> RestartHint {
    let reason = match outcome {
        Outcome::Success => return RestartHint::Backoff,
        Outcome::Failed { reason } => *reason,
        Outcome::Abnormal => match retrying {
            // Only transient reasons stretch the wait: an auth failure seen in
            // a retry of a killed run is not proof enough to stop for good.
            Some(r @ (FailureReason::RateLimited | FailureReason::Overloaded)) => r,
            _ => return RestartHint::Backoff,
        },
    };
    match reason {
        FailureReason::RateLimited => RestartHint::WaitLonger {
            multiplier: 4,
            min_delay: RATE_LIMIT_MIN_DELAY,
        },
        FailureReason::Overloaded => RestartHint::WaitLonger {
            multiplier: 2,
            min_delay: OVERLOADED_MIN_DELAY,
        },
        // The key will not fix itself; retrying only hammers the API.
        FailureReason::AuthFailed => RestartHint::DoNotRetry,
        // The same limits would be hit again, at the same cost.
        FailureReason::MaxTurns | FailureReason::BudgetExceeded => RestartHint::DoNotRetry,
        // The same prompt would be too long again.
        FailureReason::PromptTooLong => RestartHint::DoNotRetry,
        FailureReason::NetworkError
        | FailureReason::ApiError
        | FailureReason::Interrupted
        | FailureReason::SessionNotFound
        | FailureReason::ExecutionError => RestartHint::Backoff,
    }
}

/// Whether the next attempt should continue the same conversation
/// (`--resume`) rather than start over.
///
/// Yes when resuming is enabled, the conversation began, and the run was cut
/// short rather than finished: an abnormal end, an interruption, or a
/// transient API failure. Not after a success (a new run starts afresh), nor
/// after the limits, an auth failure or a too-long prompt (which resuming
/// would only repeat), nor when the conversation to resume was not found
/// ([`FailureReason::SessionNotFound`]: the CLI writes its transcript
/// lazily, so a run SIGKILLed right after starting may have none; stopping it
/// with SIGINT or SIGTERM first lets it flush).
pub fn should_resume(outcome: &Outcome, began: bool, resume_enabled: bool) -> bool {
    if !(began && resume_enabled) {
        return false;
    }
    match outcome {
        Outcome::Abnormal => true,
        Outcome::Success => false,
        Outcome::Failed { reason } => matches!(
            reason,
            FailureReason::Interrupted
                | FailureReason::RateLimited
                | FailureReason::Overloaded
                | FailureReason::NetworkError
                | FailureReason::ApiError
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed(reason: FailureReason) -> Outcome {
        Outcome::Failed { reason }
    }

    #[test]
    fn hints() {
        use FailureReason::*;
        assert_eq!(
            restart_hint(&failed(AuthFailed), None),
            RestartHint::DoNotRetry
        );
        assert_eq!(
            restart_hint(&failed(MaxTurns), None),
            RestartHint::DoNotRetry
        );
        assert_eq!(
            restart_hint(&failed(BudgetExceeded), None),
            RestartHint::DoNotRetry
        );
        assert_eq!(
            restart_hint(&failed(PromptTooLong), None),
            RestartHint::DoNotRetry
        );
        assert_eq!(restart_hint(&failed(ApiError), None), RestartHint::Backoff);
        assert_eq!(restart_hint(&Outcome::Success, None), RestartHint::Backoff);
        assert_eq!(restart_hint(&Outcome::Abnormal, None), RestartHint::Backoff);
        assert_eq!(
            restart_hint(&Outcome::Abnormal, Some(AuthFailed)),
            RestartHint::Backoff
        );

        let rl = restart_hint(&failed(RateLimited), None);
        assert_eq!(rl.delay(Duration::from_secs(1)), Some(RATE_LIMIT_MIN_DELAY));
        assert_eq!(
            rl.delay(Duration::from_secs(100)),
            Some(Duration::from_secs(400))
        );
        assert_eq!(restart_hint(&Outcome::Abnormal, Some(RateLimited)), rl);
        assert_eq!(
            restart_hint(&failed(Overloaded), None).delay(Duration::from_secs(1)),
            Some(OVERLOADED_MIN_DELAY)
        );
        assert_eq!(RestartHint::DoNotRetry.delay(Duration::from_secs(1)), None);
    }

    #[test]
    fn resume_decisions() {
        use FailureReason::*;
        assert!(should_resume(&Outcome::Abnormal, true, true));
        assert!(!should_resume(&Outcome::Abnormal, false, true));
        assert!(!should_resume(&Outcome::Abnormal, true, false));
        assert!(!should_resume(&Outcome::Success, true, true));
        assert!(should_resume(&failed(Interrupted), true, true));
        assert!(should_resume(&failed(NetworkError), true, true));
        assert!(!should_resume(&failed(PromptTooLong), true, true));
        assert!(!should_resume(&failed(MaxTurns), true, true));
        assert!(!should_resume(&failed(AuthFailed), true, true));
        assert!(!should_resume(&failed(SessionNotFound), true, true));
    }
}
