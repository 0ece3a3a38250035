//! The controller's wall clock, behind a trait so that the shell's routing
//! is tested under a clock the test moves (see `controller::tests`).

use std::sync::{Arc, Mutex};

use chrono::{DateTime, TimeDelta, Utc};

/// Where the controller reads the time its decisions are made at.
pub trait Clock: Send + Sync {
    /// The current instant.
    fn now(&self) -> DateTime<Utc>;
}

/// The system's clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that stands still until it is moved (tests).
#[derive(Debug, Clone)]
pub struct PausedClock(Arc<Mutex<DateTime<Utc>>>);

impl PausedClock {
    /// A clock stopped at `at`.
    pub fn at(at: DateTime<Utc>) -> PausedClock {
        PausedClock(Arc::new(Mutex::new(at)))
    }

    /// Moves the clock forward by `by` (saturating at the end of time).
    pub fn advance(&self, by: std::time::Duration) {
        if let Ok(mut t) = self.0.lock() {
            let step = TimeDelta::from_std(by).unwrap_or(TimeDelta::MAX);
            *t = t
                .checked_add_signed(step)
                .unwrap_or(DateTime::<Utc>::MAX_UTC);
        }
    }
}

impl Clock for PausedClock {
    fn now(&self) -> DateTime<Utc> {
        // A poisoned lock still holds the last time set.
        match self.0.lock() {
            Ok(t) => *t,
            Err(p) => *p.into_inner(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_paused_clock_moves_only_when_told() {
        let t0 = DateTime::<Utc>::from_timestamp(1_800_000_000, 0).expect("an instant");
        let c = PausedClock::at(t0);
        assert_eq!(c.now(), t0);
        c.advance(std::time::Duration::from_secs(10));
        assert_eq!(c.now(), t0 + TimeDelta::seconds(10));
        c.advance(std::time::Duration::MAX);
        assert_eq!(c.now(), DateTime::<Utc>::MAX_UTC);
    }
}
