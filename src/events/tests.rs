//! Unit tests of the event derivation and the events file.

use chrono::{DateTime, Duration, TimeZone, Utc};

use super::derive::{transitions, ExitSnap, Snapshot};
use super::*;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap()
}

fn session(phase: &str) -> Snapshot {
    Snapshot {
        kind: "Session".into(),
        name: "web".into(),
        uid: Some("u-1".into()),
        phase: phase.into(),
        manifest_valid: true,
        generation: 1,
        ..Snapshot::default()
    }
}

/// A running session as the log keeps it (its spawn reported).
fn running(attempt: u32, pid: u32) -> Snapshot {
    Snapshot {
        attempt,
        pid: Some(pid),
        spawned: Some((1, attempt)),
        ..session("Running")
    }
}

fn exit(attempt: u32, code: Option<i32>, signal: Option<&str>, reason: &str) -> ExitSnap {
    ExitSnap {
        attempt,
        exit_code: code,
        signal: signal.map(str::to_string),
        reason: reason.into(),
        message: format!("{reason} happened"),
        finished_at: t0() + Duration::seconds(i64::from(attempt)),
    }
}

fn reasons_of(events: &[Event]) -> Vec<(&str, EventType)> {
    events.iter().map(|e| (e.reason.as_str(), e.kind)).collect()
}

#[test]
fn first_spawn() {
    let ev = transitions(Some(&session("Pending")), &running(1, 42), t0());
    assert_eq!(reasons_of(&ev), vec![("Spawned", EventType::Normal)]);
    assert_eq!(ev[0].object.kind, "Session");
    assert_eq!(ev[0].object.name, "web");
    assert_eq!(ev[0].object.uid.as_deref(), Some("u-1"));
    assert_eq!(ev[0].attempt, Some(1));
    assert!(ev[0].message.contains("pid 42"), "{}", ev[0].message);
    // Seen again unchanged: nothing.
    assert!(transitions(Some(&running(1, 42)), &running(1, 42), t0()).is_empty());
}

#[test]
fn a_spawn_seen_first_as_starting_then_running() {
    // The attempt number moves when the spawn is planned; the pid comes later.
    let starting = Snapshot {
        attempt: 1,
        reason: Some("Starting".into()),
        ..session("Pending")
    };
    assert!(transitions(Some(&session("Pending")), &starting, t0()).is_empty());
    let dir = tempfile::tempdir().unwrap();
    let log = EventLog::new(dir.path());
    log.seed(session("Pending"));
    log.observe(starting, &Context::default(), t0());
    log.observe(running(1, 42), &Context::default(), t0());
    log.observe(running(1, 42), &Context::default(), t0());
    let all = read_all(dir.path());
    assert_eq!(all.len(), 1, "{all:#?}");
    assert_eq!(all[0].reason, "Spawned");
    assert_eq!(all[0].phase.as_deref(), Some("Running"));
}

#[test]
fn an_adopted_process_seeded_from_disk_is_not_a_spawn() {
    let dir = tempfile::tempdir().unwrap();
    let log = EventLog::new(dir.path());
    log.seed(Snapshot {
        spawned: Some((1, 3)),
        ..running(3, 42)
    });
    log.observe(running(3, 42), &Context::default(), t0());
    assert!(read_all(dir.path()).is_empty());
}

#[test]
fn exit_with_a_code_then_backoff_then_respawn() {
    let mut rec = Snapshot {
        attempt: 1,
        last_exit: Some(exit(1, Some(1), None, "Error")),
        next_restart_at: Some(t0() + Duration::seconds(3)),
        reason: Some("Error".into()),
        ..session("Recovering")
    };
    let ev = transitions(Some(&running(1, 42)), &rec, t0());
    assert_eq!(
        reasons_of(&ev),
        vec![
            ("Error", EventType::Warning),
            ("BackOff", EventType::Warning)
        ]
    );
    assert!(ev[0].message.contains("exit code 1"), "{}", ev[0].message);
    assert_eq!(ev[1].attempt, Some(2));
    assert!(ev[1].message.contains("back-off 2s"), "{}", ev[1].message);
    assert_eq!(
        ev[0].message,
        "attempt 1 ended (exit code 1): Error happened"
    );
    let next = Snapshot {
        last_exit: rec.last_exit.clone(),
        ..running(2, 43)
    };
    let ev = transitions(Some(&rec), &next, t0());
    assert_eq!(reasons_of(&ev), vec![("Spawned", EventType::Normal)]);
    rec.attempt = 2;
    let _ = rec;
}

#[test]
fn the_code_is_not_said_twice_and_short_delays_keep_their_unit() {
    let mut e = exit(1, Some(2), None, "Error");
    e.message = "exited with code 2".into();
    let next = Snapshot {
        attempt: 1,
        last_exit: Some(e.clone()),
        next_restart_at: Some(e.finished_at + Duration::milliseconds(100)),
        ..session("Recovering")
    };
    let ev = transitions(Some(&running(1, 42)), &next, t0());
    assert_eq!(ev[0].message, "attempt 1 ended: exited with code 2");
    assert_eq!(ev[1].message, "back-off 100ms restarting failed session");
}

#[test]
fn killed_by_a_signal() {
    let next = Snapshot {
        attempt: 1,
        last_exit: Some(exit(1, None, Some("SIGSEGV"), "Crashed")),
        ..session("Failed")
    };
    let ev = transitions(Some(&running(1, 42)), &next, t0());
    assert_eq!(
        reasons_of(&ev),
        vec![
            ("Crashed", EventType::Warning),
            ("Failed", EventType::Warning)
        ]
    );
    assert!(ev[0].message.contains("signal SIGSEGV"));
    assert_eq!(ev[1].phase.as_deref(), Some("Failed"));
}

#[test]
fn spawn_and_exit_between_two_renders() {
    // Attempt 2 started and ended before the status was rendered again.
    let prev = Snapshot {
        attempt: 1,
        last_exit: Some(exit(1, Some(1), None, "Error")),
        next_restart_at: Some(t0()),
        ..session("Recovering")
    };
    let next = Snapshot {
        attempt: 2,
        last_exit: Some(exit(2, Some(1), None, "Error")),
        next_restart_at: Some(t0() + Duration::seconds(10)),
        ..session("Recovering")
    };
    let ev = transitions(Some(&prev), &next, t0());
    assert_eq!(
        reasons_of(&ev),
        vec![
            ("Spawned", EventType::Normal),
            ("Error", EventType::Warning),
            ("BackOff", EventType::Warning)
        ]
    );
}

#[test]
fn completed_is_one_event() {
    let next = Snapshot {
        attempt: 1,
        last_exit: Some(exit(1, Some(0), None, "Completed")),
        ..session("Completed")
    };
    let ev = transitions(Some(&running(1, 42)), &next, t0());
    assert_eq!(reasons_of(&ev), vec![("Completed", EventType::Normal)]);
    assert_eq!(ev[0].phase.as_deref(), Some("Completed"));
}

#[test]
fn spawn_failure_is_not_a_spawn() {
    let next = Snapshot {
        attempt: 1,
        last_exit: Some(exit(1, None, None, "CommandNotFound")),
        reason: Some("CommandNotFound".into()),
        ..session("Failed")
    };
    let ev = transitions(Some(&session("Pending")), &next, t0());
    assert_eq!(
        reasons_of(&ev),
        vec![
            ("CommandNotFound", EventType::Warning),
            ("Failed", EventType::Warning)
        ]
    );
    assert!(ev[0].message.contains("never started"));
}

fn stopping(why: &str) -> Snapshot {
    Snapshot {
        reason: Some(why.into()),
        message: Some(format!("stopping: {why}")),
        ..running(1, 42)
    }
}

#[test]
fn stops_carry_their_reason() {
    for (why, kind) in [
        ("TimedOut", EventType::Warning),
        ("DeadlineExceeded", EventType::Warning),
        ("MemoryLimitExceeded", EventType::Warning),
        ("CpuTimeLimitExceeded", EventType::Warning),
        ("Stale", EventType::Warning),
        ("PolicyViolation", EventType::Warning),
        ("TokenBudgetExceeded", EventType::Warning),
        ("SpecChanged", EventType::Normal),
        ("Removed", EventType::Normal),
        ("Suspended", EventType::Normal),
        ("ControllerStopped", EventType::Normal),
    ] {
        let ev = transitions(Some(&running(1, 42)), &stopping(why), t0());
        assert_eq!(reasons_of(&ev), vec![(why, kind)], "{why}");
        // Still stopping at the next render: no second event.
        assert!(transitions(Some(&stopping(why)), &stopping(why), t0()).is_empty());
    }
}

#[test]
fn timed_out_and_deadline_enter_timed_out() {
    for reason in ["TimedOut", "DeadlineExceeded"] {
        let next = Snapshot {
            attempt: 1,
            reason: Some(reason.into()),
            last_exit: Some(exit(1, None, Some("SIGTERM"), reason)),
            ..session("TimedOut")
        };
        let ev = transitions(Some(&stopping(reason)), &next, t0());
        assert_eq!(reasons_of(&ev), vec![(reason, EventType::Warning)]);
        assert_eq!(ev[0].phase.as_deref(), Some("TimedOut"));
    }
}

#[test]
fn oom_killed() {
    let next = Snapshot {
        attempt: 1,
        last_exit: Some(exit(1, None, Some("SIGKILL"), "OOMKilled")),
        next_restart_at: Some(t0() + Duration::seconds(5)),
        ..session("Recovering")
    };
    let ev = transitions(Some(&running(1, 42)), &next, t0());
    assert_eq!(ev[0].reason, "OOMKilled");
    assert_eq!(ev[0].kind, EventType::Warning);
}

#[test]
fn stale_and_active_again() {
    let stale = Snapshot {
        stale: true,
        ..running(1, 42)
    };
    let ev = transitions(Some(&running(1, 42)), &stale, t0());
    assert_eq!(reasons_of(&ev), vec![("Stale", EventType::Warning)]);
    let ev = transitions(Some(&stale), &running(1, 42), t0());
    assert_eq!(reasons_of(&ev), vec![("Active", EventType::Normal)]);
}

#[test]
fn cancelled_is_stopped_with_why() {
    let next = Snapshot {
        attempt: 1,
        reason: Some("Suspended".into()),
        message: Some("suspend: true".into()),
        ..session("Cancelled")
    };
    let ev = transitions(Some(&session("Pending")), &next, t0());
    assert_eq!(reasons_of(&ev), vec![("Stopped", EventType::Normal)]);
    assert!(ev[0].message.contains("Suspended"));
    assert_eq!(ev[0].phase.as_deref(), Some("Cancelled"));
}

#[test]
fn manifest_invalid_then_valid() {
    let invalid = Snapshot {
        reason: Some("ManifestInvalid".into()),
        message: Some("the manifest does not validate (1 problem(s))".into()),
        manifest_valid: false,
        ..session("Invalid")
    };
    let ev = transitions(None, &invalid, t0());
    assert_eq!(
        reasons_of(&ev),
        vec![("ManifestInvalid", EventType::Warning)]
    );
    assert!(transitions(Some(&invalid), &invalid, t0()).is_empty());
    let ev = transitions(Some(&invalid), &session("Pending"), t0());
    assert_eq!(reasons_of(&ev), vec![("ManifestValid", EventType::Normal)]);
    // A running session whose manifest breaks keeps its spec.
    let broken = Snapshot {
        manifest_valid: false,
        ..running(1, 42)
    };
    let ev = transitions(Some(&running(1, 42)), &broken, t0());
    assert_eq!(
        reasons_of(&ev),
        vec![("ManifestInvalid", EventType::Warning)]
    );
    let ev = transitions(Some(&broken), &running(1, 42), t0());
    assert_eq!(reasons_of(&ev), vec![("ManifestValid", EventType::Normal)]);
}

#[test]
fn duplicate_name() {
    let dup = Snapshot {
        reason: Some("DuplicateName".into()),
        message: Some("taken".into()),
        ..session("Invalid")
    };
    let ev = transitions(None, &dup, t0());
    assert_eq!(reasons_of(&ev), vec![("DuplicateName", EventType::Warning)]);
}

#[test]
fn queued_then_admitted() {
    let queued = Snapshot {
        pool: Some("p".into()),
        queue_position: Some(2),
        reason: Some("PoolFull".into()),
        ..session("Queued")
    };
    let ev = transitions(Some(&session("Pending")), &queued, t0());
    assert_eq!(reasons_of(&ev), vec![("Queued", EventType::Normal)]);
    assert!(ev[0].message.contains("pool p (position 2)"));
    assert_eq!(ev[0].phase.as_deref(), Some("Queued"));
    let admitted = Snapshot {
        pool: Some("p".into()),
        ..running(1, 7)
    };
    let ev = transitions(Some(&queued), &admitted, t0());
    assert_eq!(
        reasons_of(&ev),
        vec![
            ("Spawned", EventType::Normal),
            ("Admitted", EventType::Normal)
        ]
    );
}

#[test]
fn pool_not_found_is_a_warning() {
    let next = Snapshot {
        reason: Some("PoolNotFound".into()),
        message: Some("no pool q".into()),
        ..session("Pending")
    };
    let ev = transitions(None, &next, t0());
    assert_eq!(reasons_of(&ev), vec![("PoolNotFound", EventType::Warning)]);
}

#[test]
fn pool_scaled() {
    let pool = |n| Snapshot {
        kind: "Pool".into(),
        name: "p".into(),
        replicas: Some(n),
        manifest_valid: true,
        ..Snapshot::default()
    };
    assert!(transitions(None, &pool(2), t0()).is_empty());
    let ev = transitions(Some(&pool(2)), &pool(3), t0());
    assert_eq!(reasons_of(&ev), vec![("Scaled", EventType::Normal)]);
    assert_eq!(ev[0].object.kind, "Pool");
    assert!(ev[0].message.contains("from 2 to 3"));
}

#[test]
fn adopted_process_is_not_spawned_again() {
    // The controller restarted: its first render matches the status on disk.
    assert!(transitions(Some(&running(3, 42)), &running(3, 42), t0()).is_empty());
}

#[test]
fn messages_are_clipped() {
    let e = Event::new(
        t0(),
        ObjectRef {
            kind: "Session".into(),
            name: "a".into(),
            uid: None,
        },
        EventType::Normal,
        "X",
        "é".repeat(5000),
        None,
    );
    assert!(e.message.len() <= MAX_MESSAGE + 4);
}

fn plain(name: &str, reason: &str, message: &str, at: DateTime<Utc>) -> Event {
    Event::new(
        at,
        ObjectRef {
            kind: "Session".into(),
            name: name.into(),
            uid: None,
        },
        EventType::Warning,
        reason,
        message.into(),
        None,
    )
}

#[test]
fn repeats_fold_into_one_with_a_count() {
    let dir = tempfile::tempdir().unwrap();
    let log = EventLog::new(dir.path());
    log.record(plain("a", "BackOff", "back-off 10s", t0()));
    log.record(plain(
        "a",
        "BackOff",
        "back-off 10s",
        t0() + Duration::seconds(10),
    ));
    let third = log.record(plain(
        "a",
        "BackOff",
        "back-off 10s",
        t0() + Duration::seconds(20),
    ));
    assert_eq!(third.count, 3);
    log.record(plain(
        "a",
        "Spawned",
        "started",
        t0() + Duration::seconds(30),
    ));
    // Not consecutive for this object: a new event.
    log.record(plain(
        "a",
        "BackOff",
        "back-off 10s",
        t0() + Duration::seconds(40),
    ));
    let all = read_all(dir.path());
    assert_eq!(all.len(), 3, "{all:#?}");
    assert_eq!(all[0].count, 3);
    assert_eq!(all[0].first_timestamp, t0());
    assert_eq!(all[0].last_timestamp, t0() + Duration::seconds(20));
    assert_eq!(all[2].count, 1);
}

#[test]
fn live_subscribers_get_events() {
    let dir = tempfile::tempdir().unwrap();
    let log = EventLog::new(dir.path());
    let mut rx = log.subscribe();
    log.record(plain("a", "Spawned", "started", t0()));
    assert_eq!(rx.try_recv().unwrap().reason, "Spawned");
}

#[test]
fn file_is_rotated_within_its_bound() {
    let dir = tempfile::tempdir().unwrap();
    let bound = 4096;
    let log = EventLog::with_bound(dir.path(), bound);
    for i in 0..500 {
        log.record(plain(&format!("s{i}"), "Spawned", "started", t0()));
    }
    let cur = std::fs::metadata(path(dir.path())).unwrap().len();
    let old = std::fs::metadata(dir.path().join(OLD_FILE)).unwrap().len();
    assert!(cur <= bound && old <= bound, "{cur} {old}");
    let all = read_all(dir.path());
    assert!(!all.is_empty());
    // Oldest first, the newest kept.
    assert_eq!(all.last().unwrap().object.name, "s499");
    // A new log (a new controller) appends to the same file, still bounded.
    let again = EventLog::with_bound(dir.path(), bound);
    for i in 0..100 {
        again.record(plain(&format!("t{i}"), "Spawned", "started", t0()));
    }
    assert!(std::fs::metadata(path(dir.path())).unwrap().len() <= bound);
    assert_eq!(read_all(dir.path()).last().unwrap().object.name, "t99");
}

#[test]
fn a_symlink_is_never_followed() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("elsewhere");
    std::fs::write(&target, "").unwrap();
    std::os::unix::fs::symlink(&target, path(dir.path())).unwrap();
    let log = EventLog::new(dir.path());
    log.record(plain("a", "Spawned", "started", t0()));
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "");
    assert_eq!(log.write_errors(), 1);
}

#[test]
fn filters_by_name_and_time() {
    let dir = tempfile::tempdir().unwrap();
    let log = EventLog::new(dir.path());
    log.record(plain("a", "Spawned", "started", t0()));
    log.record(plain("b", "Spawned", "started", t0() + Duration::hours(2)));
    assert_eq!(read_filtered(dir.path(), Some("b"), None).len(), 1);
    assert_eq!(
        read_filtered(dir.path(), None, Some(t0() + Duration::hours(1))).len(),
        1
    );
}

#[test]
fn observe_derives_and_records() {
    let dir = tempfile::tempdir().unwrap();
    let log = EventLog::new(dir.path());
    log.seed(session("Pending"));
    log.observe(running(1, 9), &Context::default(), t0());
    log.observe(running(1, 9), &Context::default(), t0());
    let all = read_all(dir.path());
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].reason, "Spawned");
}

#[test]
fn waiting_for_quota_then_resumed() {
    let waiting = Snapshot {
        attempt: 1,
        last_exit: Some(exit(1, Some(1), None, "UsageLimited")),
        reason: Some("UsageLimited".into()),
        next_restart_at: Some(t0() + chrono::Duration::hours(1)),
        ..session("WaitingForQuota")
    };
    let ev = transitions(Some(&running(1, 42)), &waiting, t0());
    let w = ev
        .iter()
        .find(|e| e.reason == "WaitingForQuota")
        .expect("a WaitingForQuota event");
    assert_eq!(w.kind, EventType::Warning);
    assert_eq!(w.phase.as_deref(), Some("WaitingForQuota"));
    assert!(w.message.contains("until"), "{}", w.message);
    let resumed = Snapshot {
        last_exit: waiting.last_exit.clone(),
        ..running(2, 43)
    };
    let ev = transitions(Some(&waiting), &resumed, t0());
    let reasons: Vec<&str> = ev.iter().map(|e| e.reason.as_str()).collect();
    assert!(reasons.contains(&"Spawned"), "{reasons:?}");
    assert!(reasons.contains(&"Resumed"), "{reasons:?}");
    // Waiting again in the same wait is not news.
    assert!(transitions(Some(&waiting), &waiting, t0())
        .iter()
        .all(|e| e.reason != "WaitingForQuota"));
}
