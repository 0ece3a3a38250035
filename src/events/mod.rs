//! Events: a Kubernetes-style record of every lifecycle transition, kept in
//! a bounded file in the control folder (`.sessionlet/events.jsonl`, one JSON
//! object per line) so that they survive controller restarts, and published
//! live to whoever subscribed (the local API's stream, webhooks).
//!
//! The file format is the contract between the writer (the controller) and
//! the readers (`sessionlet events`, `describe`, the API): each line is one
//! [`Event`] as JSON. A repeated event (same object, reason and message) is
//! folded into the previous one: its `count` grows and `lastTimestamp` moves.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

/// The events file's name in the control folder.
pub const FILE: &str = "events.jsonl";

/// Normal or Warning, as Kubernetes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventType {
    /// Something expected happened.
    Normal,
    /// Something went wrong or needs attention.
    Warning,
}

/// The object an event is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectRef {
    /// `Session`, `Pool` or `Controller`.
    pub kind: String,
    /// Its name.
    pub name: String,
    /// Its uid, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
}

/// One event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    /// When it first happened.
    pub first_timestamp: DateTime<Utc>,
    /// When it last happened (equal to `first_timestamp` unless folded).
    pub last_timestamp: DateTime<Utc>,
    /// What it is about.
    pub object: ObjectRef,
    /// Normal or Warning.
    #[serde(rename = "type")]
    pub kind: EventType,
    /// CamelCase reason, from the status vocabulary (`Spawned`, `Error`, `BackOff`…).
    pub reason: String,
    /// A sentence for people. Never contains a value from a manifest's `env`.
    pub message: String,
    /// How many times it happened (folded repeats).
    pub count: u64,
    /// The attempt it concerns, for sessions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
}

/// The events file of a status folder.
pub fn path(control_dir: &Path) -> PathBuf {
    control_dir.join(FILE)
}

/// The controller's side: records events and publishes them live.
#[derive(Debug)]
pub struct EventLog {
    path: PathBuf,
    live: broadcast::Sender<Event>,
}

impl EventLog {
    /// An event log writing to `control_dir/events.jsonl`.
    pub fn new(control_dir: &Path) -> Self {
        let (live, _) = broadcast::channel(1024);
        EventLog {
            path: path(control_dir),
            live,
        }
    }
    /// Where the events are kept.
    pub fn file(&self) -> &Path {
        &self.path
    }
    /// A live feed of the events recorded from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.live.subscribe()
    }
    /// Publishes `event` to the live subscribers (nobody listening is fine).
    pub fn publish(&self, event: &Event) {
        let _ = self.live.send(event.clone());
    }
}

/// The events kept in `control_dir`, oldest first; a missing file is none,
/// an unreadable line is skipped. (The writer keeps the file bounded.)
pub fn read_all(control_dir: &Path) -> Vec<Event> {
    let Ok(text) = std::fs::read_to_string(path(control_dir)) else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}
