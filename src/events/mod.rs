//! Events: a Kubernetes-style record of every lifecycle transition, kept in
//! a bounded file in the control folder (`.sessionlet/events.jsonl`, one JSON
//! object per line) so that they survive controller restarts, and published
//! live to whoever subscribed (the local API's stream, webhooks).
//!
//! The file format is the contract between the writer (the controller) and
//! the readers (`sessionlet events`, `describe`, the API): each line is one
//! [`Event`] as JSON. A repeated event (same object, reason and message) is
//! folded into the previous one: its `count` grows and `lastTimestamp` moves.

pub mod derive;
pub mod webhook;

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

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
    /// The phase the object entered with this event, when it entered one
    /// (`Failed`, `Completed`, `Queued`…): what webhooks' `on:` matches
    /// besides the reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
}

impl Event {
    /// A new event, seen once at `now`.
    pub fn new(
        now: DateTime<Utc>,
        object: ObjectRef,
        kind: EventType,
        reason: &str,
        message: String,
        attempt: Option<u32>,
    ) -> Event {
        Event {
            first_timestamp: now,
            last_timestamp: now,
            object,
            kind,
            reason: reason.to_string(),
            message: clip(message),
            count: 1,
            attempt,
            phase: None,
        }
    }
    /// The identity folded repeats share (object, reason, message, first time).
    fn key(&self) -> (String, String, String, String, DateTime<Utc>) {
        (
            self.object.kind.clone(),
            self.object.name.clone(),
            self.reason.clone(),
            self.message.clone(),
            self.first_timestamp,
        )
    }
}

/// Event reasons that are not status reasons: the verbs of events. Other
/// parts of sessionlet record events with these (e.g. the quota work calls
/// [`EventLog::record`] with [`reasons::WAITING_FOR_QUOTA`]).
pub mod reasons {
    /// A process was started.
    pub const SPAWNED: &str = "Spawned";
    /// A restart was scheduled after a failed attempt.
    pub const BACK_OFF: &str = "BackOff";
    /// A running process was adopted after a controller restart.
    pub const ADOPTED: &str = "Adopted";
    /// A pool's replicas changed.
    pub const SCALED: &str = "Scaled";
    /// A queued session got room in its pool.
    pub const ADMITTED: &str = "Admitted";
    /// A session waits for room in its pool.
    pub const QUEUED: &str = "Queued";
    /// A finished session's files were removed (ttlAfterFinished).
    pub const GARBAGE_COLLECTED: &str = "GarbageCollected";
    /// The manifest validates again.
    pub const MANIFEST_VALID: &str = "ManifestValid";
    /// Ended with no retry left.
    pub const FAILED: &str = "Failed";
    /// Stopped on request or by the controller (Cancelled).
    pub const STOPPED: &str = "Stopped";
    /// A stale session wrote output again.
    pub const ACTIVE: &str = "Active";
    /// A webhook could not be delivered.
    pub const NOTIFICATION_FAILED: &str = "NotificationFailed";
    /// An agent run waits for its quota to come back.
    pub const WAITING_FOR_QUOTA: &str = "WaitingForQuota";
    /// An agent run resumed after waiting for quota.
    pub const RESUMED: &str = "Resumed";
    /// Every event verb, with its type, for validation and the README.
    pub const ALL: &[&str] = &[
        SPAWNED,
        BACK_OFF,
        ADOPTED,
        SCALED,
        ADMITTED,
        QUEUED,
        GARBAGE_COLLECTED,
        MANIFEST_VALID,
        FAILED,
        STOPPED,
        ACTIVE,
        NOTIFICATION_FAILED,
        WAITING_FOR_QUOTA,
        RESUMED,
    ];
}

/// A message longer than this is cut (keeps every line, and so the file's
/// bound, small).
const MAX_MESSAGE: usize = 1024;

fn clip(mut message: String) -> String {
    if message.len() > MAX_MESSAGE {
        let mut end = MAX_MESSAGE;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
        message.push('…');
    }
    message
}

/// The rotated (older) events file's name.
pub const OLD_FILE: &str = "events.1.jsonl";

/// The default bound of the events file: past it the file is rotated to
/// [`OLD_FILE`] (one old file is kept, so at most twice this on disk).
pub const DEFAULT_MAX_BYTES: u64 = 1024 * 1024;

/// The events file of a status folder.
pub fn path(control_dir: &Path) -> PathBuf {
    control_dir.join(FILE)
}

/// Where to send notifications for one object's events, with what the
/// payload needs beyond the event.
#[derive(Debug, Clone, Default)]
pub struct Context {
    /// The webhooks of this object (its `spec.notify` and `--notify`).
    pub notify: Vec<webhook::Target>,
    /// Its status document, relative to the status folder.
    pub status_path: String,
}

/// The part of an object's last event a repeat folds into.
#[derive(Debug)]
struct Fold {
    reason: Box<str>,
    message: Box<str>,
    first_timestamp: DateTime<Utc>,
    count: u64,
}

#[derive(Debug)]
struct Inner {
    file: Option<std::fs::File>,
    size: u64,
    max_bytes: u64,
    /// What repeats fold into: of each object's last event, what a repeat
    /// must match and what it carries on (not the whole event: one per
    /// object ever seen, so it is kept small).
    last: HashMap<(String, String), Fold>,
    /// What each object looked like at its last status render.
    /// Boxed in a hash map: one entry per object, and a B-tree's half-full
    /// nodes of whole snapshots took about twice the snapshot.
    seen: HashMap<(String, String), Box<derive::Snapshot>>,
    write_errors: u64,
}

/// The controller's side: records events and publishes them live. Cheap to
/// clone (a shared handle), so the webhook sender records its failures too.
#[derive(Clone)]
pub struct EventLog {
    path: PathBuf,
    live: broadcast::Sender<Event>,
    inner: Arc<Mutex<Inner>>,
    notifier: Option<webhook::Notifier>,
    metrics: Option<Arc<crate::telemetry::Metrics>>,
}

impl std::fmt::Debug for EventLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventLog")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl EventLog {
    /// An event log writing to `control_dir/events.jsonl`.
    pub fn new(control_dir: &Path) -> Self {
        Self::with_bound(control_dir, DEFAULT_MAX_BYTES)
    }
    /// An event log whose file is rotated past `max_bytes`.
    pub fn with_bound(control_dir: &Path, max_bytes: u64) -> Self {
        let (live, _) = broadcast::channel(1024);
        EventLog {
            path: path(control_dir),
            live,
            inner: Arc::new(Mutex::new(Inner {
                file: None,
                size: 0,
                max_bytes: max_bytes.max(1024),
                last: HashMap::new(),
                seen: HashMap::new(),
                write_errors: 0,
            })),
            notifier: None,
            metrics: None,
        }
    }
    /// Counts events (and write errors) in `metrics` from now on.
    pub fn set_metrics(&mut self, metrics: Arc<crate::telemetry::Metrics>) {
        self.metrics = Some(metrics);
    }
    fn count(&self, result: &str) {
        if let Some(m) = &self.metrics {
            m.events
                .get_or_create(&crate::telemetry::metrics::ResultLabel {
                    result: result.to_string(),
                })
                .inc();
        }
    }
    /// Sends notifications through `notifier` from now on.
    pub fn set_notifier(&mut self, notifier: webhook::Notifier) {
        self.notifier = Some(notifier);
    }
    /// Where the events are kept.
    pub fn file(&self) -> &Path {
        &self.path
    }
    /// A live feed of the events recorded from now on. A folded repeat is
    /// sent again with its new `count` and `lastTimestamp`.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.live.subscribe()
    }
    /// The live feed's sending side, for whoever subscribes later (the
    /// API hub): holding it, unlike holding an unread receiver, keeps no
    /// event alive.
    pub fn feed(&self) -> broadcast::Sender<Event> {
        self.live.clone()
    }
    /// Publishes `event` to the live subscribers (nobody listening is fine).
    pub fn publish(&self, event: &Event) {
        let _ = self.live.send(event.clone());
    }
    /// Writes failed since start (each is logged; none is fatal).
    pub fn write_errors(&self) -> u64 {
        self.lock().write_errors
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic elsewhere while holding the lock leaves plain data behind.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records one event: folds it into the object's previous event when
    /// reason and message repeat, appends it to the file, publishes it.
    /// Returns the event as recorded (with its count).
    pub fn record(&self, event: Event) -> Event {
        let mut inner = self.lock();
        let key = (event.object.kind.clone(), event.object.name.clone());
        let event = match inner.last.get(&key) {
            Some(prev) if *prev.reason == *event.reason && *prev.message == *event.message => {
                Event {
                    first_timestamp: prev.first_timestamp,
                    count: prev.count + 1,
                    ..event
                }
            }
            _ => event,
        };
        inner.last.insert(
            key,
            Fold {
                reason: event.reason.as_str().into(),
                message: event.message.as_str().into(),
                first_timestamp: event.first_timestamp,
                count: event.count,
            },
        );
        self.append(&mut inner, &event);
        drop(inner);
        self.count(match event.kind {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        });
        self.publish(&event);
        event
    }

    /// Records the events that take a session or pool from its last
    /// rendered status to `next`, and sends the notifications they match.
    pub fn observe(&self, next: derive::Snapshot, ctx: &Context, now: DateTime<Utc>) {
        let events = {
            let mut inner = self.lock();
            let key = (next.kind.clone(), next.name.clone());
            let prev = inner.seen.get(&key).map(|b| &**b);
            let events = derive::transitions(prev, &next, now);
            let kept = derive::carry(prev, next.clone(), &events);
            inner.seen.insert(key, Box::new(kept));
            events
        };
        for e in events {
            let e = self.record(e);
            if let Some(n) = &self.notifier {
                n.offer(&e, &next, ctx);
            }
        }
    }

    /// Remembers what an object looked like before this controller started
    /// (its last status on disk), so that its first render here is compared
    /// with that and not taken for news.
    pub fn seed(&self, snapshot: derive::Snapshot) {
        let key = (snapshot.kind.clone(), snapshot.name.clone());
        self.lock().seen.insert(key, Box::new(snapshot));
    }

    /// Forgets an object (it was deleted): a new one with its name starts afresh.
    pub fn forget(&self, kind: &str, name: &str) {
        let key = (kind.to_string(), name.to_string());
        let mut inner = self.lock();
        inner.seen.remove(&key);
        inner.last.remove(&key);
    }

    fn append(&self, inner: &mut Inner, event: &Event) {
        let Ok(mut line) = serde_json::to_vec(event) else {
            return;
        };
        line.push(b'\n');
        let len = line.len() as u64;
        if inner.file.is_some() && inner.size > 0 && inner.size + len > inner.max_bytes {
            inner.file = None;
            if let Err(e) = self.rotate() {
                self.failed(inner, format!("cannot rotate {}: {e}", self.path.display()));
            }
        }
        if inner.file.is_none() {
            match crate::runtime::files::open_append(&self.path).and_then(|f| {
                let size = f.metadata()?.len();
                Ok((f, size))
            }) {
                Ok((f, size)) => {
                    inner.file = Some(f);
                    inner.size = size;
                    if size > 0 && size + len > inner.max_bytes {
                        // An earlier controller left it full.
                        inner.file = None;
                        if let Err(e) = self.rotate() {
                            self.failed(
                                inner,
                                format!("cannot rotate {}: {e}", self.path.display()),
                            );
                            return;
                        }
                        return self.append(inner, event);
                    }
                }
                Err(e) => {
                    self.failed(inner, format!("cannot open {}: {e}", self.path.display()));
                    return;
                }
            }
        }
        let Some(f) = inner.file.as_mut() else { return };
        // Never fsynced: events must outlive the controller, not the machine.
        match f.write_all(&line) {
            Ok(()) => inner.size += len,
            Err(e) => {
                inner.file = None;
                self.failed(inner, format!("cannot write {}: {e}", self.path.display()));
            }
        }
    }

    fn rotate(&self) -> std::io::Result<()> {
        let (parent, name) = crate::runtime::files::split(&self.path)?;
        let dir = crate::runtime::files::open_dir(parent)?;
        nix::fcntl::renameat(&dir, name, &dir, std::ffi::OsStr::new(OLD_FILE))
            .map_err(std::io::Error::from)
    }

    fn failed(&self, inner: &mut Inner, message: String) {
        inner.write_errors += 1;
        self.count("write_error");
        // The first failure and then every hundredth: a full disk must not flood the log.
        if inner.write_errors % 100 == 1 {
            tracing::warn!(errors = inner.write_errors, "events: {message}");
        }
    }
}

/// The events kept in `control_dir`, oldest first (the rotated file, then
/// the current one); a missing file is none, an unreadable line is skipped.
/// Folded repeats are collapsed into their latest form.
pub fn read_all(control_dir: &Path) -> Vec<Event> {
    let mut events: Vec<Option<Event>> = Vec::new();
    let mut index: HashMap<(String, String, String, String, DateTime<Utc>), usize> = HashMap::new();
    for file in [control_dir.join(OLD_FILE), path(control_dir)] {
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        for e in text
            .lines()
            .filter_map(|l| serde_json::from_str::<Event>(l).ok())
        {
            let key = e.key();
            if let Some(old) = index.insert(key, events.len()) {
                events[old] = None;
            }
            events.push(Some(e));
        }
    }
    events.into_iter().flatten().collect()
}

/// [`read_all`], keeping the events of objects named `name` (any kind)
/// last seen at or after `since`.
pub fn read_filtered(
    control_dir: &Path,
    name: Option<&str>,
    since: Option<DateTime<Utc>>,
) -> Vec<Event> {
    read_all(control_dir)
        .into_iter()
        .filter(|e| name.is_none_or(|n| e.object.name == n))
        .filter(|e| since.is_none_or(|t| e.last_timestamp >= t))
        .collect()
}

#[cfg(test)]
mod tests;
