//! A preview of what the controller would do (`sessionlet plan`): one
//! reconcile on a copy of the state, its actions read as changes.
//!
//! Pure: the decisions are [`reconcile`]'s, nothing is performed. The state
//! is what the status files say (a session they say runs is taken as
//! running).

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::desired::Desired;
use super::phase::Reason;
use super::plan::Action;
use super::reconcile::reconcile;
use super::state::{Run, State};

/// One thing the controller would do to a session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Change {
    /// What it would do.
    pub verb: Verb,
    /// The session.
    pub name: String,
    /// Why, for a person (empty when it goes without saying).
    pub why: String,
}

/// The kinds of change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Verb {
    /// Start an attempt of a session that does not run.
    Start,
    /// Stop the running attempt gracefully and start one with the new spec.
    Restart,
    /// The spec changed in fields that apply to the running process in place.
    ApplyInPlace,
    /// Stop the running process gracefully (and not start it again).
    Stop,
    /// A session that ended and whose manifest is gone: its status, logs and
    /// crash dumps are removed.
    Forget,
    /// `ttlAfterFinished` passed: the session's files are collected.
    CollectGarbage,
    /// The session ends without running again (suspended, past its deadline).
    Finish,
}

impl Verb {
    /// The verb as `plan` prints it.
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Start => "start",
            Verb::Restart => "restart",
            Verb::ApplyInPlace => "apply in place",
            Verb::Stop => "stop",
            Verb::Forget => "forget",
            Verb::CollectGarbage => "garbage-collect",
            Verb::Finish => "finish",
        }
    }
}

/// What one reconcile of `state` against `desired` at `now` would do, in
/// session order. `state` is left as it was.
pub fn preview(desired: &Desired, state: &State, now: DateTime<Utc>) -> Vec<Change> {
    let before = state.clone();
    let mut after = state.clone();
    let plan = reconcile(desired, &mut after, now);
    let mut changes: Vec<Change> = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    let mut push = |verb: Verb, name: &str, why: String, changes: &mut Vec<Change>| {
        if seen.insert(name.to_string()) {
            changes.push(Change {
                verb,
                name: name.to_string(),
                why,
            });
        }
    };
    for action in &plan.actions {
        match action {
            Action::Spawn { name, attempt } => {
                let why = match before.sessions.get(name) {
                    None => String::new(),
                    Some(old) => {
                        let generation = desired.sessions.get(name).map(|d| d.generation);
                        if generation.is_some_and(|g| g != old.generation) {
                            "the spec changed".to_string()
                        } else {
                            match &old.run {
                                Run::Backoff { .. } => {
                                    format!("restart after backoff, attempt {attempt}")
                                }
                                _ if old
                                    .wait()
                                    .map(|w| w.reason)
                                    .or(old.last_exit.as_ref().map(|e| e.reason))
                                    == Some(Reason::ControllerStopped) =>
                                {
                                    "stopped when the controller shut down".to_string()
                                }
                                _ => String::new(),
                            }
                        }
                    }
                };
                push(Verb::Start, name, why, &mut changes);
            }
            Action::Signal { name, .. } => {
                let stop = after.sessions.get(name).and_then(|r| match &r.run {
                    Run::Running(run) => run.stop.clone(),
                    _ => None,
                });
                let Some(stop) = stop else { continue };
                let verb = if stop.why == Reason::SpecChanged {
                    Verb::Restart
                } else {
                    Verb::Stop
                };
                push(verb, name, stop.message, &mut changes);
            }
            Action::Forget { name } => {
                push(Verb::Forget, name, "manifest deleted".into(), &mut changes);
            }
            Action::CollectGarbage { name } => {
                push(
                    Verb::CollectGarbage,
                    name,
                    "ttlAfterFinished passed".into(),
                    &mut changes,
                );
            }
            // A tombstone always comes with the Forget shown above.
            Action::WriteCrashDump { .. }
            | Action::WriteStatus { .. }
            | Action::Tombstone { .. } => {}
        }
    }
    // Decisions that need no action: an edit applied in place, an ending.
    for (name, rec) in &after.sessions {
        let Some(old) = before.sessions.get(name) else {
            continue;
        };
        match (&old.run, &rec.run) {
            (Run::Running(a), Run::Running(b))
                if a.pid == b.pid && b.stop.is_none() && old.generation != rec.generation =>
            {
                push(
                    Verb::ApplyInPlace,
                    name,
                    "the spec changed, not what runs".into(),
                    &mut changes,
                );
            }
            _ => {}
        }
        if let Some(o) = rec.outcome().as_ref().filter(|o| old.outcome() != Some(*o)) {
            push(
                Verb::Finish,
                name,
                format!("{:?}: {}", o.phase, o.message),
                &mut changes,
            );
        }
    }
    changes.sort_by(|a, b| a.name.cmp(&b.name));
    changes
}
