//! Events derived from status changes: a pure comparison of what a session
//! (or pool) looked like at the previous status render and what it looks
//! like now. The controller calls it where it renders statuses, so every
//! transition that shows in a status also shows as an event, and the few
//! that do not (adoption, garbage collection) are recorded by the shell.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{Event, EventType, ObjectRef};
use crate::api::status::{PoolStatusDoc, SessionStatusDoc};

/// How one attempt ended, as much of it as events need.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExitSnap {
    /// The attempt.
    pub attempt: u32,
    /// Its exit code.
    pub exit_code: Option<i32>,
    /// The signal that killed it.
    pub signal: Option<String>,
    /// Why it ended (a status reason).
    pub reason: String,
    /// For a person.
    pub message: String,
    /// When it ended (tells two exits of one attempt number apart).
    pub finished_at: DateTime<Utc>,
}

/// What events are derived from: one object's status, reduced.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Snapshot {
    /// `Session` or `Pool`.
    pub kind: String,
    /// Its name.
    pub name: String,
    /// Its uid.
    pub uid: Option<String>,
    /// Its phase (sessions).
    pub phase: String,
    /// The status reason.
    pub reason: Option<String>,
    /// The status message.
    pub message: Option<String>,
    /// The generation of the current or last attempt.
    pub generation: u64,
    /// The current or last attempt.
    pub attempt: u32,
    /// The running process.
    pub pid: Option<u32>,
    /// How the last attempt ended.
    pub last_exit: Option<ExitSnap>,
    /// When the next attempt is due (backoff).
    pub next_restart_at: Option<DateTime<Utc>>,
    /// False while the manifest does not validate.
    pub manifest_valid: bool,
    /// True while the session is silent for `staleAfter`.
    pub stale: bool,
    /// Its pool.
    pub pool: Option<String>,
    /// Position in the pool's queue.
    pub queue_position: Option<u32>,
    /// Pools: desired replicas.
    pub replicas: Option<u32>,
    /// The (generation, attempt) last seen with a process (or reported as
    /// spawned): a process appearing later is not a new spawn.
    #[serde(default)]
    pub spawned: Option<(u64, u32)>,
}

impl Snapshot {
    /// The snapshot of a session's status document.
    pub fn of_session(doc: &SessionStatusDoc) -> Snapshot {
        let s = &doc.status;
        let cond = |kind: &str| s.conditions.iter().find(|c| c.kind == kind);
        let invalid = s.phase == "Invalid";
        Snapshot {
            kind: "Session".into(),
            name: doc.metadata.name.clone(),
            uid: doc.metadata.uid.clone(),
            phase: s.phase.clone(),
            reason: s.reason.clone(),
            message: s.message.clone(),
            generation: s.observed_generation,
            attempt: s.attempt,
            pid: s.pid,
            last_exit: s.last_exit.as_ref().map(|e| ExitSnap {
                attempt: e.attempt,
                exit_code: e.exit_code,
                signal: e.signal.clone(),
                reason: e.reason.clone(),
                message: e.message.clone(),
                finished_at: e.finished_at,
            }),
            next_restart_at: s.next_restart_at,
            manifest_valid: !invalid && cond("ManifestValid").is_none_or(|c| c.status == "True"),
            stale: cond("Stale").is_some_and(|c| c.status == "True"),
            pool: doc.metadata.pool.clone(),
            queue_position: s.queue.as_ref().map(|q| q.position),
            replicas: None,
            spawned: s.pid.map(|_| (s.observed_generation, s.attempt)),
        }
    }

    /// The snapshot of a pool's status document.
    pub fn of_pool(doc: &PoolStatusDoc) -> Snapshot {
        Snapshot {
            kind: "Pool".into(),
            name: doc.metadata.name.clone(),
            uid: doc.metadata.uid.clone(),
            phase: String::new(),
            manifest_valid: doc.status.errors.is_empty(),
            replicas: Some(doc.status.replicas),
            ..Snapshot::default()
        }
    }

    fn object(&self) -> ObjectRef {
        ObjectRef {
            kind: self.kind.clone(),
            name: self.name.clone(),
            uid: self.uid.clone(),
        }
    }
}

/// Reasons that are expected when a process ends or is stopped: Normal
/// events. Everything else that ends a process is a Warning.
const NORMAL_REASONS: &[&str] = &[
    "Completed",
    "SpecChanged",
    "Removed",
    "ControllerStopped",
    "Suspended",
    "Starting",
];

fn type_of(reason: &str) -> EventType {
    if NORMAL_REASONS.contains(&reason) {
        EventType::Normal
    } else {
        EventType::Warning
    }
}

fn is_terminal(phase: &str) -> bool {
    matches!(
        phase,
        "Completed" | "Failed" | "TimedOut" | "Cancelled" | "Invalid"
    )
}

/// Human form of a duration in whole seconds (`90s`, `5m`, `2h`).
fn short_duration(d: chrono::Duration) -> String {
    let ms = d.num_milliseconds().max(0);
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let s = ms / 1000;
    if s >= 3600 && s % 3600 == 0 {
        format!("{}h", s / 3600)
    } else if s >= 60 && s % 60 == 0 {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

/// `next` with what it carries over from `prev` (the attempt last reported
/// as spawned), once `events` were derived from the two.
pub fn carry(prev: Option<&Snapshot>, mut next: Snapshot, events: &[Event]) -> Snapshot {
    if next.pid.is_some() || events.iter().any(|e| e.reason == "Spawned") {
        next.spawned = Some((next.generation, next.attempt));
    } else if next.spawned.is_none() {
        next.spawned = prev.and_then(|p| p.spawned);
    }
    next
}

/// The events that take an object from `prev` (its last rendered status;
/// `None` when it was never seen) to `next`, in the order they happened.
pub fn transitions(prev: Option<&Snapshot>, next: &Snapshot, now: DateTime<Utc>) -> Vec<Event> {
    let obj = next.object();
    let mut out: Vec<Event> = Vec::new();
    macro_rules! push {
        ($kind:expr, $reason:expr, $message:expr, $attempt:expr $(,)?) => {
            out.push(Event::new(
                now,
                obj.clone(),
                $kind,
                $reason,
                $message,
                $attempt,
            ))
        };
    }
    let was_valid = prev.is_none_or(|p| p.manifest_valid);
    if next.kind == "Pool" {
        if let (Some(p), Some(to)) = (prev, next.replicas) {
            if let Some(from) = p.replicas.filter(|f| *f != to) {
                push!(
                    EventType::Normal,
                    "Scaled",
                    format!("scaled from {from} to {to} replicas"),
                    None,
                );
            }
        }
        if !next.manifest_valid && was_valid {
            push!(
                EventType::Warning,
                "ManifestInvalid",
                "the manifest no longer validates; the last good spec stays in force".into(),
                None,
            );
        } else if next.manifest_valid && !was_valid {
            push!(
                EventType::Normal,
                "ManifestValid",
                "the manifest validates again".into(),
                None,
            );
        }
        return out;
    }
    if next.phase == "Invalid" {
        let same = prev.is_some_and(|p| {
            p.phase == next.phase && p.reason == next.reason && p.message == next.message
        });
        if !same {
            let reason = next.reason.as_deref().unwrap_or("ManifestInvalid");
            push!(
                EventType::Warning,
                reason,
                next.message.clone().unwrap_or_default(),
                None,
            );
            set_phase(&mut out, next);
        }
        return out;
    }
    if !next.manifest_valid && was_valid {
        push!(
            EventType::Warning,
            "ManifestInvalid",
            "the manifest no longer validates; the last good spec stays in force".into(),
            None,
        );
    } else if next.manifest_valid && !was_valid {
        push!(
            EventType::Normal,
            "ManifestValid",
            "the manifest validates again".into(),
            None,
        );
    }
    let prev_phase = prev.map(|p| p.phase.as_str());
    let prev_exit = prev.and_then(|p| p.last_exit.as_ref());
    let new_exit = next.last_exit.as_ref().filter(|e| {
        prev_exit.is_none_or(|p| (p.attempt, p.finished_at) != (e.attempt, e.finished_at))
    });
    // A fresh controller with no earlier status sees the last exit for the
    // first time: it is history, not news, unless the session is known.
    let new_exit = new_exit.filter(|_| prev.is_some() || next.attempt > 0);
    let current = (next.generation, next.attempt);
    let reported = prev.and_then(|p| p.spawned) == Some(current);
    let new_attempt = next.attempt > 0 && !reported;
    let exit_event = |e: &ExitSnap| {
        // The exit's own message usually says the code or signal already.
        let how = match (&e.exit_code, &e.signal) {
            (Some(c), _) if e.message.contains(&format!("code {c}")) => String::new(),
            (Some(c), _) => format!(" (exit code {c})"),
            (None, Some(s)) if e.message.contains(s.as_str()) => String::new(),
            (None, Some(s)) => format!(" (signal {s})"),
            (None, None) => " (never started)".to_string(),
        };
        Event::new(
            now,
            obj.clone(),
            type_of(&e.reason),
            &e.reason,
            format!("attempt {} ended{how}: {}", e.attempt, e.message),
            Some(e.attempt),
        )
    };
    // An exit of an earlier attempt came before this attempt's spawn.
    if let Some(e) = new_exit.filter(|e| !new_attempt || e.attempt != next.attempt) {
        out.push(exit_event(e));
    }
    if new_attempt {
        let exited_here = new_exit.filter(|e| e.attempt == next.attempt);
        let started = next.pid.is_some()
            || exited_here.is_some_and(|e| e.exit_code.is_some() || e.signal.is_some());
        let same_pid = next.pid.is_some() && prev.is_some_and(|p| p.pid == next.pid);
        if started && !same_pid {
            let message = match next.pid {
                Some(pid) => format!("started attempt {} (pid {pid})", next.attempt),
                None => format!("started attempt {}", next.attempt),
            };
            out.push(Event::new(
                now,
                obj.clone(),
                EventType::Normal,
                "Spawned",
                message,
                Some(next.attempt),
            ));
            if next.pid.is_some() && prev_phase != Some("Running") {
                set_phase(&mut out, next);
            }
        }
        if let Some(e) = exited_here {
            out.push(exit_event(e));
        }
    }
    // Restart scheduled.
    if next.phase == "Recovering" {
        if let Some(until) = next.next_restart_at {
            if prev.is_none_or(|p| p.next_restart_at != Some(until)) {
                let from = next.last_exit.as_ref().map_or(now, |e| e.finished_at);
                push!(
                    EventType::Warning,
                    "BackOff",
                    format!(
                        "back-off {} restarting failed session",
                        short_duration(until - from)
                    ),
                    Some(next.attempt + 1),
                );
                if prev_phase != Some("Recovering") {
                    set_phase(&mut out, next);
                }
            }
        }
    }
    // An agent's account hit its usage limit: it waits for the reset
    // (not a failure), then resumes the same conversation.
    if next.phase == "WaitingForQuota" && prev_phase != Some("WaitingForQuota") {
        let until = next
            .next_restart_at
            .map(|t| {
                format!(
                    " until {}",
                    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                )
            })
            .unwrap_or_default();
        push!(
            EventType::Warning,
            super::reasons::WAITING_FOR_QUOTA,
            format!("usage limit reached; waiting for the reset{until}, then resuming"),
            Some(next.attempt),
        );
        set_phase(&mut out, next);
    }
    if prev_phase == Some("WaitingForQuota") && next.phase == "Running" {
        push!(
            EventType::Normal,
            super::reasons::RESUMED,
            "the usage limit reset; the conversation continues".into(),
            Some(next.attempt),
        );
    }
    // A stop asked for (timeout, limits, stale, spec change, removal...).
    if next.phase == "Running" && next.pid.is_some() {
        if let Some(why) = &next.reason {
            let same = prev.is_some_and(|p| p.pid == next.pid && p.reason.as_ref() == Some(why));
            if !same {
                push!(
                    type_of(why),
                    why,
                    next.message.clone().unwrap_or_default(),
                    Some(next.attempt),
                );
            }
        }
    }
    // Output stopped or came back.
    if next.stale && !prev.is_some_and(|p| p.stale) {
        push!(
            EventType::Warning,
            "Stale",
            "no output for staleAfter".into(),
            Some(next.attempt),
        );
    } else if !next.stale && prev.is_some_and(|p| p.stale) && next.pid.is_some() {
        push!(
            EventType::Normal,
            "Active",
            "output again".into(),
            Some(next.attempt),
        );
    }
    // Pools: waiting for room, then admitted.
    if next.phase == "Queued" && prev_phase != Some("Queued") {
        let pool = next.pool.as_deref().unwrap_or("?");
        let at = next
            .queue_position
            .map(|p| format!(" (position {p})"))
            .unwrap_or_default();
        push!(
            EventType::Normal,
            "Queued",
            format!("waiting for room in pool {pool}{at}"),
            None,
        );
        set_phase(&mut out, next);
    } else if prev_phase == Some("Queued") && next.phase != "Queued" && !is_terminal(&next.phase) {
        let pool = next.pool.as_deref().unwrap_or("?");
        push!(
            EventType::Normal,
            "Admitted",
            format!("admitted by pool {pool}"),
            None,
        );
    }
    // Waiting for something else (a missing pool, the controller).
    if next.phase == "Pending" {
        if let Some(r) = next.reason.as_deref().filter(|r| *r != "Starting") {
            let same = prev.is_some_and(|p| p.phase == "Pending" && p.reason == next.reason);
            if !same {
                push!(
                    type_of(r),
                    r,
                    next.message.clone().unwrap_or_default(),
                    None,
                );
            }
        }
    }
    // Entered a terminal phase.
    if is_terminal(&next.phase) && prev_phase != Some(next.phase.as_str()) {
        let reason = match next.phase.as_str() {
            "Failed" => "Failed".to_string(),
            "Completed" => "Completed".to_string(),
            "Cancelled" => "Stopped".to_string(),
            other => next.reason.clone().unwrap_or_else(|| other.to_string()),
        };
        let message = match (next.phase.as_str(), &next.reason) {
            ("Cancelled", Some(why)) => format!(
                "stopped ({why}): {}",
                next.message.clone().unwrap_or_default()
            ),
            _ => next.message.clone().unwrap_or_default(),
        };
        // The exit that ended it says the same: one event, not two.
        let merged = out.last().is_some_and(|e| e.reason == reason);
        if !merged {
            let kind = if matches!(next.phase.as_str(), "Completed" | "Cancelled") {
                EventType::Normal
            } else {
                EventType::Warning
            };
            out.push(Event::new(
                now,
                obj.clone(),
                kind,
                &reason,
                message,
                (next.attempt > 0).then_some(next.attempt),
            ));
        }
        set_phase(&mut out, next);
    }
    out
}

/// Marks the last event as the one that made the object enter its phase.
fn set_phase(out: &mut [Event], next: &Snapshot) {
    if let Some(e) = out.last_mut() {
        e.phase = Some(next.phase.clone());
    }
}
