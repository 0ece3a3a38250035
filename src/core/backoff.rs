//! Exponential backoff between restarts.

use crate::api::Backoff;

/// The delay before the restart that follows the `failures`-th consecutive
/// failure (1-based): `initialDelay * multiplier^(failures-1)`, capped at
/// `maxDelay`. Zero failures means no delay.
pub fn delay(backoff: &Backoff, failures: u32) -> std::time::Duration {
    if failures == 0 {
        return std::time::Duration::ZERO;
    }
    let initial = backoff.initial_delay.std().as_secs_f64();
    let cap = backoff.max_delay.std();
    let exp = i32::try_from(failures - 1).unwrap_or(i32::MAX);
    let secs = initial * backoff.multiplier.max(1.0).powi(exp);
    if !secs.is_finite() || secs >= cap.as_secs_f64() {
        return cap;
    }
    std::time::Duration::from_secs_f64(secs.max(0.0)).min(cap)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Duration;
    use proptest::prelude::*;

    #[test]
    fn delays_double_from_the_initial_delay() {
        let b = Backoff::default();
        assert_eq!(delay(&b, 1).as_secs(), 1);
        assert_eq!(delay(&b, 2).as_secs(), 2);
        assert_eq!(delay(&b, 4).as_secs(), 8);
        assert_eq!(delay(&b, 100).as_secs(), 300);
    }

    proptest! {
        #[test]
        fn backoff_never_exceeds_its_cap(
            initial_ms in 0u64..100_000,
            cap_ms in 0u64..1_000_000,
            mult in 1.0f64..10.0,
            failures in 0u32..10_000,
        ) {
            let b = Backoff {
                initial_delay: Duration::from_millis(initial_ms),
                multiplier: mult,
                max_delay: Duration::from_millis(cap_ms),
                reset_after: Duration::from_secs(600),
            };
            prop_assert!(delay(&b, failures) <= std::time::Duration::from_millis(cap_ms));
        }
    }
}
