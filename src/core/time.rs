//! Saturating arithmetic on instants.
//!
//! Durations reach the core from manifests and status files; adding one to
//! an instant with `+` panics when the sum leaves chrono's range. Every
//! deadline in the core is computed here instead: a sum past
//! [`far_future`] is that instant, which is later than any real deadline and
//! still renders and parses as an ordinary RFC 3339 time.

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};

/// 9999-12-31T23:59:59Z: the latest instant a deadline saturates to.
pub fn far_future() -> DateTime<Utc> {
    NaiveDate::from_ymd_opt(9999, 12, 31)
        .and_then(|d| d.and_hms_opt(23, 59, 59))
        .map_or(DateTime::<Utc>::MAX_UTC, |t| t.and_utc())
}

/// `t + d`, saturating: never later than `max(t, far_future())` for a
/// positive `d`, never earlier than chrono's minimum for a negative one.
pub fn add(t: DateTime<Utc>, d: TimeDelta) -> DateTime<Utc> {
    let cap = far_future().max(t);
    match t.checked_add_signed(d) {
        Some(sum) if sum <= cap => sum,
        _ if d >= TimeDelta::zero() => cap,
        Some(sum) => sum,
        None => DateTime::<Utc>::MIN_UTC,
    }
}

/// `t + d` for a manifest duration, saturating (see [`add`]).
pub fn after(t: DateTime<Utc>, d: crate::api::Duration) -> DateTime<Utc> {
    after_std(t, d.std())
}

/// `t + d` for a standard duration, saturating (see [`add`]).
pub fn after_std(t: DateTime<Utc>, d: std::time::Duration) -> DateTime<Utc> {
    add(t, TimeDelta::from_std(d).unwrap_or(TimeDelta::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_in_range_are_exact_and_overflows_saturate() {
        let now = Utc::now();
        assert_eq!(add(now, TimeDelta::seconds(5)), now + TimeDelta::seconds(5));
        assert_eq!(
            add(now, TimeDelta::seconds(-5)),
            now - TimeDelta::seconds(5)
        );
        assert_eq!(add(now, TimeDelta::MAX), far_future());
        assert_eq!(add(now, TimeDelta::MIN), DateTime::<Utc>::MIN_UTC);
        assert_eq!(
            after_std(now, std::time::Duration::from_secs(u64::MAX)),
            far_future()
        );
        assert_eq!(after_std(now, std::time::Duration::MAX), far_future());
        assert_eq!(
            add(DateTime::<Utc>::MAX_UTC, TimeDelta::seconds(1)),
            DateTime::<Utc>::MAX_UTC
        );
        assert_eq!(
            add(DateTime::<Utc>::MIN_UTC, TimeDelta::seconds(-1)),
            DateTime::<Utc>::MIN_UTC
        );
        assert_eq!(far_future().to_rfc3339(), "9999-12-31T23:59:59+00:00");
    }
}
