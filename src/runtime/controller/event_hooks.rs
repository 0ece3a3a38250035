//! The controller's event hooks: where statuses are rendered, the events
//! are derived from them ([`crate::events::derive`]); adoption and garbage
//! collection, which show in no status change, are recorded here directly.
//! A child module of the controller, so the hook lines there stay one call.

use std::path::Path;

use chrono::Utc;

use super::Controller;
use crate::api::status::{PoolStatusDoc, SessionStatusDoc};
use crate::events::derive::Snapshot;
use crate::events::{reasons, webhook, Context, Event, EventType, ObjectRef};

impl Controller {
    /// Connects the event log to the metrics and starts the webhook sender.
    pub(super) fn start_events(&mut self) {
        self.events.set_metrics(self.metrics.clone());
        let global = self
            .opts
            .notify
            .iter()
            .map(|url| webhook::Target {
                url: url.clone(),
                on: Vec::new(),
            })
            .collect();
        let config = webhook::Config {
            secret: self.opts.notify_secret.clone(),
            global,
            retry_for: self.opts.notify_retry_for,
            try_timeout: std::time::Duration::from_secs(5),
        };
        // Only inside the runtime (always, from `sessionlet run`): unit
        // tests that build a controller elsewhere simply send nothing.
        if tokio::runtime::Handle::try_current().is_ok() {
            let notifier =
                webhook::Notifier::start(config, self.events.clone(), Some(self.metrics.clone()));
            self.events.set_notifier(notifier);
        }
    }

    /// Remembers an object's status as an earlier controller left it.
    pub(super) fn seed_events(&self, kind: &str, doc: &serde_json::Value) {
        let snap = if kind == "Pool" {
            serde_json::from_value::<PoolStatusDoc>(doc.clone())
                .ok()
                .map(|d| Snapshot::of_pool(&d))
        } else {
            serde_json::from_value::<SessionStatusDoc>(doc.clone())
                .ok()
                .map(|d| Snapshot::of_session(&d))
        };
        if let Some(s) = snap {
            self.events.seed(s);
        }
    }

    /// The events of a session whose status was just rendered.
    pub(super) fn session_events(&self, doc: &SessionStatusDoc, status_file: &Path) {
        let name = &doc.metadata.name;
        let notify = self
            .model
            .desired
            .sessions
            .get(name)
            .map(|d| {
                d.spec
                    .notify
                    .iter()
                    .map(|n| webhook::Target {
                        url: n.url.clone(),
                        on: n.on.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let mut snap = Snapshot::of_session(doc);
        if snap.name.is_empty() {
            // A document without a name: the file names it.
            snap.name = doc.metadata.manifest.clone();
        }
        let ctx = Context {
            notify,
            status_path: self.layout.relative(status_file),
        };
        self.events.observe(snap, &ctx, Utc::now());
    }

    /// The events of a pool whose status was just rendered.
    pub(super) fn pool_events(&self, doc: &PoolStatusDoc) {
        self.events
            .observe(Snapshot::of_pool(doc), &Context::default(), Utc::now());
    }

    fn session_ref(&self, name: &str) -> ObjectRef {
        ObjectRef {
            kind: "Session".into(),
            name: name.to_string(),
            uid: self
                .model
                .catalog
                .known("Session", name)
                .map(|k| k.uid.to_string())
                .or_else(|| {
                    self.procs
                        .live(name)
                        .map(|l| l.uid.clone())
                        .filter(|u| !u.is_empty())
                }),
        }
    }

    /// A session no longer declared (its manifest deleted, its pool scaled
    /// down) is forgotten: its status goes, so no render shows it.
    pub(super) fn removed_event(&self, name: &str) {
        self.events.record(Event::new(
            Utc::now(),
            self.session_ref(name),
            EventType::Normal,
            "Removed",
            "no longer declared (manifest deleted or pool scaled down): stopped and forgotten"
                .into(),
            None,
        ));
    }

    /// A running process taken over from an earlier controller.
    pub(super) fn adopted_event(&self, name: &str, pid: u32, attempt: u32) {
        self.events.record(Event::new(
            Utc::now(),
            self.session_ref(name),
            EventType::Normal,
            reasons::ADOPTED,
            format!("adopted running process {pid} after a controller restart"),
            (attempt > 0).then_some(attempt),
        ));
    }

    /// A finished session's files removed after ttlAfterFinished.
    pub(super) fn collected_event(&self, name: &str, what: &str) {
        self.events.record(Event::new(
            Utc::now(),
            self.session_ref(name),
            EventType::Normal,
            reasons::GARBAGE_COLLECTED,
            format!("ttlAfterFinished passed: {what}"),
            None,
        ));
    }
}
