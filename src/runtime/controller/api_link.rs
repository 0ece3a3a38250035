//! The controller's side of the local API (crate::apiserver): it publishes
//! the status documents it writes, answers restart and stop requests from
//! its select loop, and keeps the sessions held stopped in
//! `.sessionlet/stopped.json` so that a new controller keeps holding them.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::mpsc;

use crate::runtime::errors::StartError;

use super::Controller;
use crate::api::status::{ControllerStatus, PoolStatusDoc, SessionStatusDoc};
use crate::apiserver::{Act, ApiError, Command, Hub};
use crate::core::requests::Refused;

/// The file of held sessions in the control folder.
pub const STOPPED_FILE: &str = "stopped.json";

/// One held session, as saved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Held {
    /// The generation it was stopped at.
    generation: u64,
    /// The spec hash then: a new controller matches on it (generations are
    /// seeded from statuses, the hash is what the manifest says now).
    spec_hash: Option<u64>,
}

/// What the controller keeps for the API.
pub(super) struct ApiLink {
    pub(super) hub: Arc<Hub>,
    rx: Option<mpsc::Receiver<Command>>,
    saved: BTreeMap<String, u64>,
    /// The socket we bound, removed when the controller ends so that
    /// clients see no controller rather than a refusing socket.
    socket: Option<std::path::PathBuf>,
}

impl Drop for ApiLink {
    fn drop(&mut self) {
        if let Some(p) = &self.socket {
            let _ = std::fs::remove_file(p);
        }
    }
}

impl Controller {
    /// Makes the hub and reads back the sessions held stopped. Called once
    /// the manifests are read (the held ones are matched against them).
    pub(super) fn api_init(&mut self) {
        let (hub, rx) = Hub::new(
            self.layout.control_dir(),
            self.layout.status_dir.clone(),
            self.metrics.clone(),
            self.events.feed(),
        );
        let path = self.layout.control_dir().join(STOPPED_FILE);
        let held: BTreeMap<String, Held> = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        for (name, h) in held {
            let Some(d) = self.model.desired.sessions.get(&name) else {
                continue;
            };
            let known = self
                .model
                .catalog
                .known("Session", &name)
                .map(|k| k.spec_hash);
            let same = match (known, h.spec_hash) {
                (Some(now), Some(then)) => now == then,
                _ => d.generation == h.generation,
            };
            if same {
                self.model.state.requests.stopped.insert(name, d.generation);
            }
        }
        let saved = self.model.state.requests.stopped.clone();
        self.api = Some(ApiLink {
            hub,
            rx: Some(rx),
            saved,
            socket: None,
        });
    }

    /// Serves the API socket and, with `--http-addr`, TCP; returns the
    /// loop's end of the command channel. A socket that cannot be made is
    /// a warning: supervision goes on without it.
    pub(super) async fn api_start(&mut self) -> Result<mpsc::Receiver<Command>, StartError> {
        let Some(link) = self.api.as_mut() else {
            return Ok(mpsc::channel(1).1);
        };
        let hub = link.hub.clone();
        let rx = link.rx.take().unwrap_or_else(|| mpsc::channel(1).1);
        match crate::apiserver::serve::serve_unix(&self.layout.control_dir(), hub.clone()) {
            Ok(p) => {
                tracing::info!("API on unix:{}", p.display());
                link.socket = Some(p);
            }
            Err(e) => tracing::warn!(
                "cannot serve the API socket in {} ({e}); restart, stop, status and get -w need it",
                self.layout.control_dir().display()
            ),
        }
        if let Some(addr) = self.opts.metrics_addr {
            let token = match &self.opts.http_token_file {
                Some(f) => Some(Arc::<str>::from(
                    crate::apiserver::auth::load_token(f).map_err(StartError::Token)?,
                )),
                None => None,
            };
            let acting = if token.is_some() {
                "reads and acts with the token"
            } else {
                "reads only"
            };
            let bound = crate::telemetry::http::serve(addr, hub, token)
                .await
                .map_err(|source| StartError::Http { addr, source })?;
            tracing::info!("metrics on http://{bound}/metrics, dashboard and API on http://{bound}/ ({acting})");
        }
        Ok(rx)
    }

    /// A restart or stop from the API.
    pub(super) fn on_api(&mut self, cmd: Command) {
        let name = cmd.name;
        let result = match cmd.act {
            Act::Restart => self.model.state.requests.ask_restart(
                &name,
                self.model.desired.sessions.contains_key(&name),
                self.model.state.shutting_down,
            ),
            Act::Stop => self.model.state.requests.ask_stop(
                &name,
                self.model.desired.sessions.get(&name).map(|d| d.generation),
            ),
        };
        let answer = match result {
            Ok(()) => {
                self.model
                    .keys
                    .touch(crate::core::keys::Key::Session(name.clone()));
                self.mark_dirty(&name);
                self.api_save_stopped();
                let message = match cmd.act {
                    Act::Restart => "a new attempt starts now (not counted as a failure)",
                    Act::Stop => "stopped until its spec changes or a restart is asked",
                };
                tracing::info!(session = %name, "{} asked through the API", cmd.act.as_str());
                Ok(
                    json!({"name": name, "action": cmd.act.as_str(), "accepted": true, "message": message}),
                )
            }
            Err(Refused::Unknown) => Err(ApiError::unknown("session", &name)),
            Err(Refused::ShuttingDown) => Err(ApiError::new(
                409,
                "the controller is shutting down; nothing starts any more",
                "start the controller again, then ask",
            )),
        };
        // The asker may have given up: nothing to do then.
        let _ = cmd.reply.send(answer);
    }

    /// Saves the held sessions when they changed (a request, a spec change
    /// that released one, a session no longer declared).
    pub(super) fn api_save_stopped(&mut self) {
        let desired = &self.model.desired;
        self.model
            .state
            .requests
            .retain_declared(|n| desired.sessions.contains_key(n));
        let Some(link) = self.api.as_mut() else {
            return;
        };
        if link.saved == self.model.state.requests.stopped {
            return;
        }
        let held: BTreeMap<&String, Held> = self
            .model
            .state
            .requests
            .stopped
            .iter()
            .map(|(n, g)| {
                let spec_hash = self.model.catalog.known("Session", n).map(|k| k.spec_hash);
                (
                    n,
                    Held {
                        generation: *g,
                        spec_hash,
                    },
                )
            })
            .collect();
        let path = self.layout.control_dir().join(STOPPED_FILE);
        let text = serde_json::to_vec_pretty(&held).unwrap_or_default();
        match super::write_atomic(&path, &text) {
            Ok(()) => link.saved = self.model.state.requests.stopped.clone(),
            Err(e) => tracing::error!("cannot write {}: {e}", path.display()),
        }
    }

    /// The documents just written for `stem`, to the API's readers.
    pub(super) fn api_publish(
        &self,
        stem: &str,
        sessions: &[SessionStatusDoc],
        pools: &[PoolStatusDoc],
    ) {
        let Some(link) = &self.api else { return };
        let s = sessions
            .iter()
            .filter_map(|d| serde_json::to_value(d).ok())
            .collect();
        let p = pools
            .iter()
            .filter_map(|d| serde_json::to_value(d).ok())
            .collect();
        link.hub.publish_file(stem, s, p);
    }

    /// The status file of `stem` is gone.
    pub(super) fn api_forget(&self, stem: &str) {
        if let Some(link) = &self.api {
            link.hub.forget_file(stem);
        }
    }

    /// The controller's own status, to `/api/v1/controller` and the stream.
    pub(super) fn api_controller(&self, status: &ControllerStatus) {
        if let Some(link) = &self.api {
            let mut doc = serde_json::to_value(status).unwrap_or_default();
            if let Some(o) = doc.as_object_mut() {
                // Counters change every pass: the stream sends real changes only.
                o.remove("reconcileCount");
                o.remove("lastReconcileMillis");
                o.remove("updatedAt");
                if let Some(serde_json::Value::Object(x)) = o.get_mut("extra") {
                    x.remove("reconcileMillis");
                }
            }
            link.hub.publish_controller(doc);
        }
    }
}
