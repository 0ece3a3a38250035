//! What a reading of a running session means: its limits, its staleness,
//! and whom the kernel's OOM killer hit.
//!
//! The shell samples (`runtime::monitor`: memory, CPU time, last output) and
//! reads the cgroup's OOM counter; these functions decide, so that the
//! decisions are tested without processes and the shell only routes their
//! events to `observe`.

use chrono::{DateTime, Utc};

use super::reconcile::Event;
use super::Reason;
use crate::api::status::Usage;
use crate::api::{OnStale, SessionSpec};

/// What monitoring knows of a running session between two readings.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Watch {
    /// Memory and CPU time of its process tree.
    pub usage: Usage,
    /// When it last wrote output (its start when it never did).
    pub last_activity: Option<DateTime<Utc>>,
    /// Whether it has been silent for `staleAfter`.
    pub stale: bool,
}

/// One reading of a running session's tree, as the shell took it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reading {
    /// Resident memory of every process in the tree.
    pub memory_bytes: u64,
    /// User + system CPU time of the tree.
    pub cpu_seconds: f64,
    /// When it last showed activity (output, or a running tool call).
    pub activity: DateTime<Utc>,
    /// Whether the kernel enforces its memory limit (its own memory
    /// cgroup): then the OOM killer, not a reading, stops it.
    pub memory_enforced: bool,
}

/// Sampling rounds between two readings of a session whose readings decide
/// nothing (no memory or CPU-time limit, no `staleAfter`, not an agent):
/// its usage and `lastActivityAt` in the status are refreshed every 12th
/// round (a minute at the default 5 s interval). Nothing but the status,
/// the metrics and the controller's health figures consume those
/// readings, and reading a tree costs path walks in `/proc` (its `stat`,
/// its children) and two `stat`s of its logs: at 1000 idle sessions this
/// is most of the controller's idle CPU, so it is paid once a minute.
pub const RELAXED_ROUNDS: u64 = 12;

/// Whether `name` is read at sampling round `round`. Sessions whose readings
/// can stop them are read at every round; the others at their first round
/// (`read_before` false) and then once in [`RELAXED_ROUNDS`], on a round
/// chosen by their name so that the reads spread over the rounds.
pub fn read_now(spec: &SessionSpec, name: &str, round: u64, read_before: bool) -> bool {
    let watched = spec.resources.max_memory.is_some()
        || spec.resources.max_cpu_time.is_some()
        || spec.stale_after.is_some()
        || spec.agent.is_some();
    if watched || !read_before {
        return true;
    }
    // FNV-1a: stable across runs and builds, unlike the std hasher.
    let spread = name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    round.wrapping_add(spread) % RELAXED_ROUNDS == 0
}

/// Judges `name`'s reading against its spec: the watch to keep from now on
/// and the stops it asks for (memory and CPU-time limits; staleness once,
/// when it becomes stale, if `onStale` is `Restart`).
pub fn judge(
    name: &str,
    spec: &SessionSpec,
    reading: &Reading,
    before: &Watch,
    now: DateTime<Utc>,
) -> (Watch, Vec<Event>) {
    let stop = |reason: Reason, message: String| Event::StopRequested {
        name: name.to_string(),
        reason,
        message,
    };
    let mut events = Vec::new();
    let mut watch = before.clone();
    watch.usage.memory_bytes = reading.memory_bytes;
    watch.usage.peak_memory_bytes = before.usage.peak_memory_bytes.max(reading.memory_bytes);
    // Hundredths of a second: finer changes would rewrite the status for nothing.
    watch.usage.cpu_seconds = (reading.cpu_seconds * 100.0).round() / 100.0;
    watch.last_activity = Some(reading.activity);
    watch.stale = spec
        .stale_after
        .is_some_and(|t| now.signed_duration_since(reading.activity) >= t.chrono());
    if let Some(limit) = spec.resources.max_memory {
        if !reading.memory_enforced && reading.memory_bytes > limit.0 {
            events.push(stop(
                Reason::MemoryLimitExceeded,
                format!(
                    "its processes used {} MiB, over the memory limit {limit}",
                    reading.memory_bytes >> 20
                ),
            ));
        }
    }
    if let Some(limit) = spec.resources.max_cpu_time {
        if reading.cpu_seconds > limit.std().as_secs_f64() {
            events.push(stop(
                Reason::CpuTimeLimitExceeded,
                format!(
                    "its processes used {:.1}s of CPU time, over the limit {limit}",
                    reading.cpu_seconds
                ),
            ));
        }
    }
    if watch.stale && !before.stale && spec.on_stale == OnStale::Restart {
        events.push(stop(
            Reason::Stale,
            format!(
                "no output since {} (staleAfter {})",
                reading.activity.to_rfc3339(),
                spec.stale_after.unwrap_or_default()
            ),
        ));
    }
    (watch, events)
}

/// Whether the kernel's OOM killer ended `name`'s attempt: its cgroup's
/// kill counter rose above what it was when the attempt started. The event
/// says so with its limit, before the exit is observed.
pub fn oom_killed(
    name: &str,
    pid: u32,
    spec: Option<&SessionSpec>,
    kills: u64,
    baseline: u64,
) -> Option<Event> {
    if kills <= baseline {
        return None;
    }
    let limit = spec.and_then(|s| s.resources.max_memory);
    Some(Event::Killed {
        name: name.to_string(),
        pid,
        reason: Reason::OOMKilled,
        message: format!(
            "the kernel killed it for using more than its memory limit{}",
            limit.map(|l| format!(" ({l})")).unwrap_or_default()
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Duration, Quantity};
    use chrono::TimeZone;

    fn t(s: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000 + s, 0)
            .single()
            .expect("a valid instant")
    }

    fn reading(memory_bytes: u64, cpu_seconds: f64, activity: DateTime<Utc>) -> Reading {
        Reading {
            memory_bytes,
            cpu_seconds,
            activity,
            memory_enforced: false,
        }
    }

    fn reasons(events: &[Event]) -> Vec<Reason> {
        events
            .iter()
            .filter_map(|e| match e {
                Event::StopRequested { reason, .. } => Some(*reason),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_reading_within_limits_asks_for_nothing_and_keeps_the_peak() {
        let mut spec = SessionSpec::default();
        spec.resources.max_memory = Some(Quantity(100 << 20));
        let before = Watch {
            usage: Usage {
                memory_bytes: 80 << 20,
                peak_memory_bytes: 90 << 20,
                cpu_seconds: 1.0,
            },
            ..Watch::default()
        };
        let (w, events) = judge("a", &spec, &reading(50 << 20, 1.234, t(0)), &before, t(1));
        assert!(events.is_empty(), "{events:?}");
        assert_eq!(w.usage.memory_bytes, 50 << 20);
        assert_eq!(w.usage.peak_memory_bytes, 90 << 20);
        assert_eq!(w.usage.cpu_seconds, 1.23);
        assert_eq!(w.last_activity, Some(t(0)));
    }

    #[test]
    fn memory_over_the_limit_stops_it_unless_the_kernel_enforces_it() {
        let mut spec = SessionSpec::default();
        spec.resources.max_memory = Some(Quantity(100 << 20));
        let over = reading(200 << 20, 0.0, t(0));
        let (_, events) = judge("a", &spec, &over, &Watch::default(), t(0));
        assert_eq!(reasons(&events), vec![Reason::MemoryLimitExceeded]);
        let enforced = Reading {
            memory_enforced: true,
            ..over
        };
        let (_, events) = judge("a", &spec, &enforced, &Watch::default(), t(0));
        assert!(events.is_empty(), "the OOM killer stops it: {events:?}");
    }

    #[test]
    fn cpu_time_over_the_limit_stops_it() {
        let mut spec = SessionSpec::default();
        spec.resources.max_cpu_time = Some(Duration::from_millis(2_000));
        let (_, events) = judge("a", &spec, &reading(0, 2.5, t(0)), &Watch::default(), t(0));
        assert_eq!(reasons(&events), vec![Reason::CpuTimeLimitExceeded]);
        let (_, events) = judge("a", &spec, &reading(0, 1.5, t(0)), &Watch::default(), t(0));
        assert!(events.is_empty());
    }

    #[test]
    fn staleness_restarts_once_when_it_begins_and_only_if_asked() {
        let mut spec = SessionSpec {
            stale_after: Some(Duration::from_millis(10_000)),
            on_stale: OnStale::Restart,
            ..SessionSpec::default()
        };
        let fresh = judge("a", &spec, &reading(0, 0.0, t(0)), &Watch::default(), t(5));
        assert!(!fresh.0.stale && fresh.1.is_empty());
        let (stale, events) = judge("a", &spec, &reading(0, 0.0, t(0)), &fresh.0, t(10));
        assert!(stale.stale);
        assert_eq!(reasons(&events), vec![Reason::Stale]);
        let (_, again) = judge("a", &spec, &reading(0, 0.0, t(0)), &stale, t(20));
        assert!(again.is_empty(), "asked once: {again:?}");
        spec.on_stale = OnStale::Warn;
        let (w, events) = judge("a", &spec, &reading(0, 0.0, t(0)), &fresh.0, t(10));
        assert!(w.stale && events.is_empty(), "reported, not restarted");
    }

    #[test]
    fn an_activity_in_the_future_is_not_stale_and_never_panics() {
        let spec = SessionSpec {
            stale_after: Some(Duration::MAX),
            on_stale: OnStale::Restart,
            ..SessionSpec::default()
        };
        let far = DateTime::<Utc>::MAX_UTC;
        let (w, events) = judge(
            "a",
            &spec,
            &reading(u64::MAX, f64::MAX, far),
            &Watch::default(),
            DateTime::<Utc>::MIN_UTC,
        );
        assert!(!w.stale && events.is_empty());
    }

    #[test]
    fn only_sessions_whose_readings_decide_are_read_at_every_round() {
        let plain = SessionSpec::default();
        let reads =
            |spec: &SessionSpec| (0..60).filter(|r| read_now(spec, "web", *r, true)).count();
        assert_eq!(reads(&plain), 5, "one round in 12 (a minute at 5 s)");
        assert!(
            read_now(&plain, "web", 1, false) && read_now(&plain, "web", 2, false),
            "a first reading is at once"
        );
        let mut limited = SessionSpec::default();
        limited.resources.max_memory = Some(Quantity(1 << 20));
        assert_eq!(reads(&limited), 60);
        let stale = SessionSpec {
            stale_after: Some(Duration::from_millis(1_000)),
            ..SessionSpec::default()
        };
        assert_eq!(reads(&stale), 60);
        // Names spread over the rounds instead of all at once.
        let at_zero = (0..60)
            .filter(|i| read_now(&plain, &format!("s{i}"), 0, true))
            .count();
        assert!(
            at_zero < 30,
            "{at_zero} of 60 sessions read at the same round"
        );
    }

    #[test]
    fn the_oom_killer_is_named_only_when_its_counter_rose() {
        let mut spec = SessionSpec::default();
        spec.resources.max_memory = Some(Quantity(64 << 20));
        assert_eq!(oom_killed("a", 7, Some(&spec), 2, 2), None);
        match oom_killed("a", 7, Some(&spec), 3, 2) {
            Some(Event::Killed {
                reason,
                message,
                pid,
                ..
            }) => {
                assert_eq!((reason, pid), (Reason::OOMKilled, 7));
                assert!(
                    message.contains("64Mi") || message.contains("memory limit ("),
                    "{message}"
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(oom_killed("a", 7, None, 1, 0).is_some());
    }
}
