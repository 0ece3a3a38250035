//! The local API: HTTP/1 on `.sessionlet/api.sock` (only our own user may
//! connect) and, with `--http-addr`, on TCP beside `/metrics`.
//!
//! Reads are served from the [`Hub`], a copy of the status documents the
//! controller last wrote (published from `write_statuses`), so a reader
//! never waits for the reconcile loop. Acts (restart, stop) are sent to the
//! loop as [`Command`]s over an mpsc channel and answered on a oneshot.
//! `GET /api/v1/watch` streams every changed document and every recorded
//! event as Server-Sent Events.

pub mod auth;
pub mod client;
pub mod dashboard;
pub mod routes;
pub mod serve;
pub mod sse;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use serde_json::Value;
use tokio::sync::{broadcast, mpsc, oneshot};

/// The API socket's name in the control folder.
pub const SOCKET: &str = "api.sock";

/// The API socket of a control folder.
pub fn socket_path(control_dir: &Path) -> PathBuf {
    control_dir.join(SOCKET)
}

/// A change of a status document, as the watch stream sends it.
#[derive(Debug, Clone)]
pub enum Change {
    /// A session's status document (new or changed).
    Session(Value),
    /// A pool's status document (new or changed).
    Pool(Value),
    /// An object whose status is gone (manifest deleted).
    Deleted {
        /// `Session` or `Pool`.
        kind: &'static str,
        /// Its name.
        name: String,
    },
    /// The controller's own status document.
    Controller(Value),
}

/// An act asked through the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Act {
    /// A new attempt, not counted as a failure.
    Restart,
    /// Stop and hold until the next spec change or restart.
    Stop,
}

impl Act {
    /// The word in paths and replies.
    pub fn as_str(self) -> &'static str {
        match self {
            Act::Restart => "restart",
            Act::Stop => "stop",
        }
    }
}

/// A request for the controller's loop.
#[derive(Debug)]
pub struct Command {
    /// What to do.
    pub act: Act,
    /// The session.
    pub name: String,
    /// The answer: the reply document, or an error.
    pub reply: oneshot::Sender<Result<Value, ApiError>>,
}

/// An error answer: `{error, hint}` with a 4xx (or 5xx) status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApiError {
    /// The HTTP status code.
    #[serde(skip)]
    pub status: u16,
    /// What went wrong.
    pub error: String,
    /// What to do about it.
    pub hint: String,
}

impl ApiError {
    /// An error with a status code, a message and a hint.
    pub fn new(status: u16, error: impl Into<String>, hint: impl Into<String>) -> Self {
        ApiError {
            status,
            error: error.into(),
            hint: hint.into(),
        }
    }
    /// 404 for a session or pool nobody declares.
    pub fn unknown(kind: &str, name: &str) -> Self {
        ApiError::new(
            404,
            format!("no {kind} named {name:?}"),
            format!(
                "`sessionlet get` lists the declared objects; check the name, or declare a {kind} called {name:?}"
            ),
        )
    }
}

/// The documents the controller last wrote, by stem (manifest file).
///
/// Session and pool documents are kept as their compact JSON text, not as
/// [`Value`] trees: a status document's tree is about a hundred small
/// allocations (some 7 KB per session), its text under 1 KB, and the hub
/// holds one per declared object. Readers parse the text back (the
/// `float_roundtrip` parsing makes that exact, numbers included).
#[derive(Debug, Default)]
struct Docs {
    sessions: BTreeMap<String, Box<str>>,
    pools: BTreeMap<String, Box<str>>,
    /// The names each status file holds, to tell which went away.
    by_stem: BTreeMap<String, (Vec<String>, Vec<String>)>,
    controller: Value,
}

/// What the API serves from: the current documents, the live feeds, and
/// the way to the controller's loop.
pub struct Hub {
    docs: Mutex<Docs>,
    changes: broadcast::Sender<Change>,
    /// The event log's live feed, to subscribe to. A sender, not a
    /// receiver: a receiver nobody reads keeps the last 1024 events (the
    /// channel's whole ring, with their texts) alive for as long as it lives.
    events: broadcast::Sender<crate::events::Event>,
    commands: mpsc::Sender<Command>,
    /// The control folder (events, the socket).
    pub control_dir: PathBuf,
    /// The status folder (log paths in statuses are relative to it).
    pub status_dir: PathBuf,
    /// Health and readiness, from the reconcile loop.
    pub metrics: Arc<crate::telemetry::Metrics>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("control_dir", &self.control_dir)
            .finish_non_exhaustive()
    }
}

impl Hub {
    /// A hub and the receiving end of its command channel (for the loop).
    pub fn new(
        control_dir: PathBuf,
        status_dir: PathBuf,
        metrics: Arc<crate::telemetry::Metrics>,
        events: broadcast::Sender<crate::events::Event>,
    ) -> (Arc<Hub>, mpsc::Receiver<Command>) {
        let (changes, _) = broadcast::channel(1024);
        let (commands, rx) = mpsc::channel(64);
        let hub = Hub {
            docs: Mutex::new(Docs::default()),
            changes,
            events,
            commands,
            control_dir,
            status_dir,
            metrics,
        };
        (Arc::new(hub), rx)
    }

    fn docs(&self) -> std::sync::MutexGuard<'_, Docs> {
        // A poisoned lock only means a reader panicked: the data is whole.
        self.docs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records the documents of one status file and publishes those that changed.
    pub fn publish_file(&self, stem: &str, sessions: Vec<Value>, pools: Vec<Value>) {
        let mut out = Vec::new();
        {
            let mut docs = self.docs();
            let (old_s, old_p) = docs.by_stem.remove(stem).unwrap_or_default();
            let mut new_s = Vec::new();
            let mut new_p = Vec::new();
            for doc in sessions {
                let name = doc_name(&doc);
                new_s.push(name.clone());
                if let Some(text) = changed_text(docs.sessions.get(&name).map(AsRef::as_ref), &doc)
                {
                    docs.sessions.insert(name, text);
                    out.push(Change::Session(doc));
                }
            }
            for doc in pools {
                let name = doc_name(&doc);
                new_p.push(name.clone());
                if let Some(text) = changed_text(docs.pools.get(&name).map(AsRef::as_ref), &doc) {
                    docs.pools.insert(name, text);
                    out.push(Change::Pool(doc));
                }
            }
            for name in old_s.into_iter().filter(|n| !new_s.contains(n)) {
                if docs.sessions.remove(&name).is_some() {
                    out.push(Change::Deleted {
                        kind: "Session",
                        name,
                    });
                }
            }
            for name in old_p.into_iter().filter(|n| !new_p.contains(n)) {
                if docs.pools.remove(&name).is_some() {
                    out.push(Change::Deleted { kind: "Pool", name });
                }
            }
            docs.by_stem.insert(stem.to_string(), (new_s, new_p));
        }
        for c in out {
            // Nobody watching is fine.
            let _ = self.changes.send(c);
        }
    }

    /// The status file of `stem` is gone: so are its documents.
    pub fn forget_file(&self, stem: &str) {
        self.publish_file(stem, Vec::new(), Vec::new());
        self.docs().by_stem.remove(stem);
    }

    /// Records the controller's own status.
    pub fn publish_controller(&self, doc: Value) {
        let changed = {
            let mut docs = self.docs();
            let changed = docs.controller != doc;
            docs.controller = doc.clone();
            changed
        };
        if changed {
            let _ = self.changes.send(Change::Controller(doc));
        }
    }

    /// Every session document, by name.
    pub fn sessions(&self) -> Vec<Value> {
        self.docs().sessions.values().map(|t| parse(t)).collect()
    }
    /// One session's document.
    pub fn session(&self, name: &str) -> Option<Value> {
        self.docs().sessions.get(name).map(|t| parse(t))
    }
    /// Every pool document, by name.
    pub fn pools(&self) -> Vec<Value> {
        self.docs().pools.values().map(|t| parse(t)).collect()
    }
    /// One pool's document.
    pub fn pool(&self, name: &str) -> Option<Value> {
        self.docs().pools.get(name).map(|t| parse(t))
    }
    /// The controller's status document.
    pub fn controller(&self) -> Value {
        self.docs().controller.clone()
    }
    /// A live feed of document changes.
    pub fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.changes.subscribe()
    }
    /// A live feed of recorded events.
    pub fn subscribe_events(&self) -> broadcast::Receiver<crate::events::Event> {
        self.events.subscribe()
    }

    /// Sends `act` on `name` to the controller's loop and waits for its answer.
    pub async fn ask(&self, act: Act, name: &str) -> Result<Value, ApiError> {
        let (reply, answer) = oneshot::channel();
        let cmd = Command {
            act,
            name: name.to_string(),
            reply,
        };
        let gone = || {
            ApiError::new(
                503,
                "the controller is not taking requests (it is shutting down)",
                "wait for it to exit and start it again",
            )
        };
        self.commands.send(cmd).await.map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }
}

/// The compact JSON text of `doc`, when it differs from the text kept.
fn changed_text(kept: Option<&str>, doc: &Value) -> Option<Box<str>> {
    // Value's Display is its compact JSON; maps are sorted, so equal
    // documents give equal text.
    let text = doc.to_string();
    (kept != Some(text.as_str())).then(|| text.into_boxed_str())
}

/// A kept document's text as a [`Value`] again.
fn parse(text: &str) -> Value {
    // The text is serde_json's own rendering of a Value, so it parses; a
    // failure would be a bug, answered as null rather than a panic.
    serde_json::from_str(text).unwrap_or_else(|e| {
        tracing::error!("a kept status document does not parse: {e}");
        Value::Null
    })
}

/// `metadata.name` of a document; invalid manifests without a name are
/// known by their file.
fn doc_name(doc: &Value) -> String {
    doc["metadata"]["name"]
        .as_str()
        .map(str::to_string)
        .or_else(|| {
            doc["metadata"]["manifest"]
                .as_str()
                .map(|m| format!("({m})"))
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn hub() -> Arc<Hub> {
        let (events, _) = broadcast::channel(4);
        let metrics = Arc::new(crate::telemetry::Metrics::new(
            std::time::Duration::from_secs(10),
        ));
        Hub::new(
            PathBuf::from("/nonexistent"),
            PathBuf::from("/nonexistent"),
            metrics,
            events,
        )
        .0
    }

    fn doc(name: &str, x: f64) -> Value {
        json!({"kind": "SessionStatus", "metadata": {"name": name}, "status": {"cpuSeconds": x, "phase": "Running"}})
    }

    /// The kept text gives back the very document, numbers to the last bit.
    #[test]
    fn documents_read_back_exactly() {
        let hub = hub();
        // A fixed xorshift stream of bit patterns: many finite doubles.
        let mut bits: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut docs = Vec::new();
        for i in 0..5000 {
            bits ^= bits << 13;
            bits ^= bits >> 7;
            bits ^= bits << 17;
            let x = f64::from_bits(bits);
            let x = if x.is_finite() { x } else { i as f64 / 7.0 };
            docs.push(doc(&format!("s{i}"), x));
        }
        hub.publish_file("f", docs.clone(), Vec::new());
        let mut want = docs;
        want.sort_by_key(doc_name);
        assert_eq!(hub.sessions(), want);
        assert_eq!(
            hub.session("s17").as_ref(),
            want.iter().find(|d| doc_name(d) == "s17")
        );
    }

    /// Only a changed document goes to the stream; a deleted one says so.
    #[test]
    fn only_changes_are_streamed() {
        let hub = hub();
        let mut rx = hub.subscribe();
        hub.publish_file("f", vec![doc("a", 1.5), doc("b", 2.0)], Vec::new());
        hub.publish_file("f", vec![doc("a", 1.5), doc("b", 2.5)], Vec::new());
        hub.publish_file("f", vec![doc("b", 2.5)], Vec::new());
        let mut seen = Vec::new();
        while let Ok(c) = rx.try_recv() {
            seen.push(match c {
                Change::Session(d) => format!("{}={}", doc_name(&d), d["status"]["cpuSeconds"]),
                Change::Deleted { kind, name } => format!("{kind} {name} deleted"),
                other => format!("{other:?}"),
            });
        }
        assert_eq!(seen, ["a=1.5", "b=2.0", "b=2.5", "Session a deleted"]);
        assert_eq!(hub.session("a"), None);
        assert_eq!(hub.session("b"), Some(doc("b", 2.5)));
    }
}
