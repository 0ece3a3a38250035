//! Scale-out: many controllers over one repository of manifests, coordinated
//! by etcd (`sessionlet run --coordinator etcd`, issue 15).
//!
//! This module is always compiled and holds what needs no etcd client: the
//! flags' validation and the [`Fleet`] handle through which the controller
//! learns which sessions this node owns. The coordinator that talks to etcd
//! is [`coordinator`], compiled only with the `etcd` cargo feature.
//!
//! The controller's only hook is a filter on its desired state: a session
//! owned by another node is not desired here, so this node neither starts it
//! nor keeps it (ownership moving away stops it, as a deleted manifest would).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::core::Desired;

#[cfg(feature = "etcd")]
pub mod coordinator;
pub mod error;
pub use error::FleetError;
pub mod view;

/// The environment variable naming the node a session runs on.
pub const NODE_ENV: &str = "SESSIONLET_NODE";
/// The environment variable holding the session's fencing token (the owner
/// key's create revision): a shared resource the session writes can refuse a
/// lower token than one it has seen.
pub const TOKEN_ENV: &str = "SESSIONLET_FENCING_TOKEN";

/// A validated `--coordinator etcd` configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// etcd client URLs.
    pub endpoints: Vec<String>,
    /// This node's name (unique in the fleet).
    pub node: String,
    /// The membership lease's TTL.
    pub lease_ttl: Duration,
    /// How long before the lease could expire this node stops its sessions.
    pub fence_margin: Duration,
    /// Every key lives under this prefix (ends with `/`).
    pub prefix: String,
    /// The keeper's socket, to which the coordinator hands its fencing
    /// deadlines (set by `run` from the status folder).
    pub keeper_socket: Option<std::path::PathBuf>,
}

/// The scale-out flags of `sessionlet run`, before validation.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Flags {
    /// Coordinate with other nodes over one repository of manifests: `etcd`
    /// (each session runs on exactly one node; needs a build with
    /// `--features etcd`) or `none` (the default: this node runs every session).
    #[arg(long, value_name = "etcd|none", help_heading = "Scaling out")]
    pub coordinator: Option<String>,
    /// etcd client URLs, comma-separated (e.g. http://10.0.0.5:2379,http://10.0.0.6:2379).
    #[arg(
        long = "etcd-endpoints",
        value_name = "URL[,URL...]",
        help_heading = "Scaling out"
    )]
    pub endpoints: Option<String>,
    /// This node's name, unique in the fleet (on Kubernetes, the pod's name).
    #[arg(long, value_name = "NAME", help_heading = "Scaling out")]
    pub node: Option<String>,
    /// The membership lease: a node silent this long loses its sessions to the others.
    #[arg(long, default_value = "10s", value_parser = parse_duration, help_heading = "Scaling out")]
    pub lease_ttl: Duration,
    /// This long before its lease could expire, a node that could not renew it
    /// kills its sessions, so that none runs twice.
    #[arg(long, default_value = "2s", value_parser = parse_duration, help_heading = "Scaling out")]
    pub fence_margin: Duration,
    /// The prefix of every key sessionlet writes in etcd.
    #[arg(
        long = "etcd-prefix",
        default_value = "/sessionlet/",
        help_heading = "Scaling out"
    )]
    pub prefix: String,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    s.parse::<crate::api::Duration>()
        .map(|d| d.std())
        .map_err(|e| e.to_string())
}

/// Validates the flags: `Ok(None)` without a coordinator (nothing about etcd
/// runs), else the configuration, or an error naming the flag and the fix.
pub fn validate(f: &Flags) -> Result<Option<Config>, String> {
    let etcd_only = [
        ("--etcd-endpoints", f.endpoints.is_some()),
        ("--node", f.node.is_some()),
    ];
    match f.coordinator.as_deref() {
        None | Some("none") => {
            if let Some((flag, _)) = etcd_only.iter().find(|(_, set)| *set) {
                return Err(format!(
                    "{flag} needs --coordinator etcd (without it this node runs alone and ignores etcd)"
                ));
            }
            return Ok(None);
        }
        Some("etcd") => {}
        Some(other) => {
            return Err(format!(
                "--coordinator {other}: unknown coordinator; use `etcd` or `none`"
            ))
        }
    }
    if !cfg!(feature = "etcd") {
        return Err(
            "--coordinator etcd: this sessionlet was built without etcd support; \
             build it with `cargo build --release --features etcd` (needs protoc: \
             Debian `protobuf-compiler libprotobuf-dev`)"
                .to_string(),
        );
    }
    let endpoints = endpoint_list(f.endpoints.as_deref().unwrap_or("")).map_err(|e| {
        if e.is_empty() {
            "--coordinator etcd needs --etcd-endpoints URL[,URL...] \
             (e.g. --etcd-endpoints http://127.0.0.1:2379)"
                .to_string()
        } else {
            e
        }
    })?;
    let node = f.node.clone().unwrap_or_default();
    if node.is_empty() {
        return Err("--coordinator etcd needs --node NAME, unique in the fleet \
             (on Kubernetes, the pod's name)"
            .to_string());
    }
    if node.len() > 253
        || !node
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
    {
        return Err(format!(
            "--node {node:?}: use letters, digits, '-', '.' and '_' only (at most 253)"
        ));
    }
    if f.lease_ttl < Duration::from_secs(2) {
        return Err(format!(
            "--lease-ttl {:?}: etcd leases are whole seconds and need at least 2s",
            f.lease_ttl
        ));
    }
    if f.lease_ttl.subsec_nanos() != 0 {
        return Err(format!(
            "--lease-ttl {:?}: etcd leases are whole seconds; round it (e.g. 10s)",
            f.lease_ttl
        ));
    }
    if f.fence_margin.is_zero() || f.fence_margin * 2 > f.lease_ttl {
        return Err(format!(
            "--fence-margin {:?}: must be above 0 and at most half of --lease-ttl ({:?})",
            f.fence_margin, f.lease_ttl
        ));
    }
    let prefix = key_prefix(&f.prefix)?;
    Ok(Some(Config {
        endpoints,
        node,
        lease_ttl: f.lease_ttl,
        fence_margin: f.fence_margin,
        prefix,
        keeper_socket: None,
    }))
}

/// The URLs of `--etcd-endpoints` (comma-separated); `Err("")` when there
/// is none (each caller says what needs them), else an error naming the
/// flag and the fix.
pub(crate) fn endpoint_list(raw: &str) -> Result<Vec<String>, String> {
    let endpoints: Vec<String> = raw
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(str::to_string)
        .collect();
    if endpoints.is_empty() {
        return Err(String::new());
    }
    if let Some(e) = endpoints
        .iter()
        .find(|e| !(e.starts_with("http://") || e.starts_with("https://")))
    {
        return Err(format!(
            "--etcd-endpoints: {e:?} is not a URL; write it as http://HOST:PORT"
        ));
    }
    Ok(endpoints)
}

/// `--etcd-prefix`, ending with `/`, or an error naming the fix.
pub(crate) fn key_prefix(raw: &str) -> Result<String, String> {
    if !raw.starts_with('/') {
        return Err(format!(
            "--etcd-prefix {raw:?}: must start with '/' (e.g. /sessionlet/)"
        ));
    }
    let mut prefix = raw.to_string();
    if !prefix.ends_with('/') {
        prefix.push('/');
    }
    Ok(prefix)
}

/// What the coordinator knows, shared with the controller.
#[derive(Debug, Default)]
struct Shared {
    /// Every session the manifests declare (the filter's input).
    declared: Option<Desired>,
    /// Sessions this node owns, with their fencing tokens.
    owned: BTreeMap<String, i64>,
    /// Sessions whose outcome is final fleet-wide (never run again).
    finished: BTreeSet<String>,
    /// Sessions finished on this node, for the coordinator to record, with
    /// the hash of the spec they finished under.
    done: BTreeMap<String, u64>,
    /// Every owner key as last read: session → node.
    owners: BTreeMap<String, String>,
    /// The live summaries of the sessions owned here (see
    /// [`Fleet::note_state`]), for the coordinator to publish.
    summaries: BTreeMap<String, view::Summary>,
    /// Declared, unfinished sessions no live node owns: name → why.
    unowned: BTreeMap<String, String>,
    /// The `Owned` condition of the controller status: whether every
    /// session had a live owner, and since when; `None` before the first round.
    owned_since: Option<(bool, chrono::DateTime<chrono::Utc>)>,
}

/// The fleet's metrics (on `/metrics` with `--http-addr`). Cloning shares them.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    /// Sessions this node owns.
    pub owned: prometheus_client::metrics::gauge::Gauge,
    /// Declared, unfinished sessions with no live owner, fleet-wide: non-zero
    /// for longer than a claim round means work nobody runs.
    pub unowned: prometheus_client::metrics::gauge::Gauge,
    /// Live members seen.
    pub members: prometheus_client::metrics::gauge::Gauge,
    /// Claims this node won.
    pub claims: prometheus_client::metrics::counter::Counter,
    /// Times this node fenced itself (lease not renewed in time).
    pub fences: prometheus_client::metrics::counter::Counter,
}

/// The handle the controller holds: which sessions this node owns. Cloning
/// shares it.
#[derive(Clone, Default)]
pub struct Fleet {
    node: String,
    shared: Arc<Mutex<Shared>>,
    changed: Arc<tokio::sync::Notify>,
    /// The coordinator's metrics.
    pub metrics: Metrics,
}

impl std::fmt::Debug for Fleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fleet").field("node", &self.node).finish()
    }
}

impl Fleet {
    /// A handle for `node` that owns nothing yet.
    pub fn new(node: &str) -> Self {
        Fleet {
            node: node.to_string(),
            ..Fleet::default()
        }
    }

    /// Puts the fleet's metrics beside the controller's.
    pub fn register_metrics(&self, m: &crate::telemetry::Metrics) {
        let f = &self.metrics;
        m.register_extra(
            "fleet_owned_sessions",
            "Sessions this node owns",
            f.owned.clone(),
        );
        m.register_extra(
            "fleet_unowned_sessions",
            "Declared, unfinished sessions that no live node owns (fleet-wide)",
            f.unowned.clone(),
        );
        m.register_extra(
            "fleet_members",
            "Live members of the fleet",
            f.members.clone(),
        );
        m.register_extra(
            "fleet_claims",
            "Sessions this node claimed",
            f.claims.clone(),
        );
        m.register_extra(
            "fleet_fences",
            "Times this node fenced itself (lease not renewed in time)",
            f.fences.clone(),
        );
    }

    /// This node's name.
    pub fn node(&self) -> &str {
        &self.node
    }

    fn lock(&self) -> MutexGuard<'_, Shared> {
        // A panic elsewhere while holding the lock leaves plain data behind:
        // still usable.
        self.shared.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The sessions `desired` declares, keeping only those this node owns
    /// (with `SESSIONLET_NODE` and `SESSIONLET_FENCING_TOKEN` in their env).
    /// Remembers `desired` so that a change of ownership can filter again.
    pub fn filter(&self, desired: Desired) -> Desired {
        let mut s = self.lock();
        s.declared = Some(desired.clone());
        own_only(&self.node, desired, &s.owned)
    }

    /// The last declared state, unfiltered, for the controller to filter
    /// again (through [`Fleet::filter`]) after ownership changed; `None`
    /// before the controller declared any.
    pub fn declared_state(&self) -> Option<Desired> {
        self.lock().declared.clone()
    }

    /// The names the manifests declare, for the coordinator to place.
    pub fn declared(&self) -> BTreeSet<String> {
        self.lock()
            .declared
            .as_ref()
            .map(|d| d.sessions.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Members of pools that are placed as one unit, member → pool (see
    /// [`crate::core::placement::grouped`]).
    pub fn grouped(&self) -> BTreeMap<String, String> {
        self.lock()
            .declared
            .as_ref()
            .map(crate::core::placement::grouped)
            .unwrap_or_default()
    }

    /// The sessions owned here now, with their tokens.
    pub fn owned(&self) -> BTreeMap<String, i64> {
        self.lock().owned.clone()
    }

    /// The coordinator's view changed: the controller filters again.
    pub fn set_owned(&self, owned: BTreeMap<String, i64>) {
        let mut s = self.lock();
        if s.owned != owned {
            s.owned = owned;
            drop(s);
            self.changed.notify_one();
        }
    }

    /// Every session's owner as last read from etcd; a change rewrites
    /// the status files (their `node`).
    pub fn set_owners(&self, owners: BTreeMap<String, String>) {
        let mut s = self.lock();
        if s.owners != owners {
            s.owners = owners;
            drop(s);
            self.changed.notify_one();
        }
    }

    /// Names the owner in a session's status; a session owned by another
    /// node says so instead of looking stuck in Pending.
    pub fn annotate(&self, name: &str, status: &mut crate::api::status::SessionStatus) {
        let s = self.lock();
        let owner = s
            .owned
            .contains_key(name)
            .then(|| self.node.clone())
            .or_else(|| s.owners.get(name).cloned());
        if let Some(o) = &owner {
            if *o != self.node && status.phase == "Pending" {
                status.reason = Some("OwnedElsewhere".into());
                status.message = Some(format!("runs on node {o}"));
            }
        }
        // Work nobody runs says so where people look, not only in a gauge.
        let unowned = s.unowned.get(name).filter(|_| !s.owned.contains_key(name));
        if let Some(why) = unowned {
            if status.phase == "Pending" {
                status.reason = Some(view::UNOWNED.into());
                status.message = Some(why.clone());
            }
        }
        // A dead owner's leftover key names no owner.
        status.node = if unowned.is_some() { None } else { owner };
    }

    /// Sessions recorded as finished fleet-wide.
    pub fn finished(&self) -> BTreeSet<String> {
        self.lock().finished.clone()
    }

    /// Records the sessions finished fleet-wide.
    pub fn set_finished(&self, finished: BTreeSet<String>) {
        self.lock().finished = finished;
    }

    /// After each pass: the sessions finished here (terminal, restarted by
    /// nothing), whose outcome the coordinator records in etcd, and the live
    /// summaries of the sessions owned here, which it publishes (only the
    /// changed ones reach etcd: the coordinator keeps what it wrote).
    pub fn note_state(&self, state: &crate::core::State) {
        let mut s = self.lock();
        // The declared state is the one this pass reconciled (set by
        // `filter` at its start), so each hash is the spec it finished under.
        let done: BTreeMap<String, u64> = state
            .sessions
            .iter()
            .filter(|(_, r)| matches!(r.run, crate::core::Run::Done(_)))
            .filter_map(|(n, _)| {
                let d = s.declared.as_ref()?.sessions.get(n)?;
                Some((n.clone(), outcome_hash(d)))
            })
            .collect();
        if s.done != done {
            s.done = done;
        }
        // Only the owned sessions: the others are not run here, and their
        // records say nothing about the fleet.
        let summaries: BTreeMap<String, view::Summary> = s
            .owned
            .keys()
            .filter_map(|n| Some((n.clone(), view::Summary::of(state.sessions.get(n)?))))
            .collect();
        s.summaries = summaries;
    }

    /// The live summaries of the sessions owned here (see [`Fleet::note_state`]).
    pub fn summaries(&self) -> BTreeMap<String, view::Summary> {
        self.lock().summaries.clone()
    }

    /// The declared, unfinished sessions that no live node owns, with why,
    /// as the coordinator's last round found them; a change rewrites the
    /// status files (their reason `Unowned`) and the controller status.
    pub fn set_unowned(&self, unowned: BTreeMap<String, String>) {
        let mut s = self.lock();
        let all_owned = unowned.is_empty();
        if s.owned_since.is_none_or(|(was, _)| was != all_owned) {
            s.owned_since = Some((all_owned, chrono::Utc::now()));
        }
        if s.unowned != unowned {
            s.unowned = unowned;
            drop(s);
            self.changed.notify_one();
        }
    }

    /// Adds the fleet's part of the controller status (`extra.fleet`): this
    /// node, the unowned count and the `Owned` condition (False while any
    /// declared session has no live owner, naming them).
    pub fn add_to_status(&self, extra: &mut BTreeMap<String, serde_json::Value>) {
        let s = self.lock();
        let mut fleet = serde_json::json!({
            "node": self.node,
            "ownedHere": s.owned.len(),
            "unownedSessions": s.unowned.len(),
        });
        if let Some((all_owned, since)) = s.owned_since {
            let names: Vec<&String> = s.unowned.keys().take(10).collect();
            let more = s.unowned.len().saturating_sub(names.len());
            let message = if all_owned {
                "every declared session has a live owner".to_string()
            } else {
                format!(
                    "{} declared session(s) owned by no live node: {}{}",
                    s.unowned.len(),
                    names
                        .iter()
                        .map(|n| n.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                    if more > 0 {
                        format!(" and {more} more")
                    } else {
                        String::new()
                    }
                )
            };
            let condition = crate::api::status::Condition {
                kind: "Owned".into(),
                status: if all_owned { "True" } else { "False" }.into(),
                reason: if all_owned { "AllOwned" } else { view::UNOWNED }.into(),
                message,
                last_transition_time: since,
            };
            fleet["conditions"] = serde_json::json!([condition]);
        }
        extra.insert("fleet".into(), fleet);
    }

    /// The sessions finished on this node, with the hash of the spec each
    /// finished under (see [`Fleet::note_state`]).
    pub fn take_done(&self) -> BTreeMap<String, u64> {
        self.lock().done.clone()
    }

    /// The hash of each of the sessions `names` (those declared) as the
    /// manifests say it: a finished outcome counts only for the spec it
    /// finished under, so a changed spec runs again (as it does on a single
    /// node). Only the names asked: a hash is a serialisation, too dear for
    /// every declared session every round.
    pub fn declared_hashes_of<'a>(
        &self,
        names: impl IntoIterator<Item = &'a String>,
    ) -> BTreeMap<String, u64> {
        let s = self.lock();
        let Some(d) = s.declared.as_ref() else {
            return BTreeMap::new();
        };
        names
            .into_iter()
            .filter_map(|n| Some((n.clone(), outcome_hash(d.sessions.get(n)?))))
            .collect()
    }

    /// Resolves when ownership changed since the last call.
    pub async fn changed(&self) {
        self.changed.notified().await;
    }
}

/// Joins the fleet when `config` asks for a coordinator (see
/// [`coordinator`]); `None` runs alone, and touches nothing of etcd.
pub async fn start(config: Option<Config>) -> Result<Option<Fleet>, FleetError> {
    let Some(config) = config else {
        return Ok(None);
    };
    #[cfg(feature = "etcd")]
    {
        coordinator::start(config).await.map(Some)
    }
    #[cfg(not(feature = "etcd"))]
    {
        // validate() refuses this already; kept for callers that skip it.
        let _ = config;
        Err(FleetError::NotBuilt)
    }
}

/// Waits for a change of ownership; never resolves without a fleet (a node
/// running alone), so the controller's `select!` arm stays idle.
pub async fn changed(fleet: Option<&Fleet>) {
    match fleet {
        Some(f) => f.changed().await,
        None => std::future::pending().await,
    }
}

/// What a finished outcome is tied to: the spec as declared (before this
/// node adds its name and token) and the restart annotation, the same on
/// every node that reads the same manifests.
fn outcome_hash(d: &crate::core::DesiredSession) -> u64 {
    crate::runtime::catalog::spec_hash(&(&*d.spec, &d.restarted_at))
}

fn own_only(node: &str, mut desired: Desired, owned: &BTreeMap<String, i64>) -> Desired {
    desired.sessions.retain(|name, _| owned.contains_key(name));
    for (name, d) in desired.sessions.iter_mut() {
        let token = owned.get(name).copied().unwrap_or_default();
        let spec = Arc::make_mut(&mut d.spec);
        spec.env.insert(NODE_ENV.to_string(), node.to_string());
        spec.env.insert(TOKEN_ENV.to_string(), token.to_string());
    }
    desired
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags() -> Flags {
        Flags {
            coordinator: Some("etcd".into()),
            endpoints: Some("http://127.0.0.1:2379".into()),
            node: Some("n1".into()),
            lease_ttl: Duration::from_secs(10),
            fence_margin: Duration::from_secs(2),
            prefix: "/sessionlet/".into(),
        }
    }

    #[test]
    fn no_coordinator_means_nothing_etcd() {
        let f = Flags {
            coordinator: None,
            endpoints: None,
            node: None,
            ..flags()
        };
        assert_eq!(validate(&f), Ok(None));
        let f = Flags {
            coordinator: Some("none".into()),
            node: Some("n1".into()),
            endpoints: None,
            ..flags()
        };
        assert!(validate(&f)
            .unwrap_err()
            .contains("--node needs --coordinator etcd"));
    }

    #[test]
    fn bad_flags_name_the_flag_and_the_fix() {
        let cases: Vec<(Flags, &str)> = vec![
            (
                Flags {
                    coordinator: Some("zk".into()),
                    ..flags()
                },
                "use `etcd` or `none`",
            ),
            (
                Flags {
                    endpoints: Some(" ,".into()),
                    ..flags()
                },
                "needs --etcd-endpoints",
            ),
            (
                Flags {
                    endpoints: Some("127.0.0.1:2379".into()),
                    ..flags()
                },
                "write it as http://HOST:PORT",
            ),
            (
                Flags {
                    node: None,
                    ..flags()
                },
                "needs --node NAME",
            ),
            (
                Flags {
                    node: Some("a b".into()),
                    ..flags()
                },
                "--node \"a b\"",
            ),
            (
                Flags {
                    lease_ttl: Duration::from_millis(2500),
                    ..flags()
                },
                "whole seconds",
            ),
            (
                Flags {
                    fence_margin: Duration::from_secs(6),
                    ..flags()
                },
                "at most half of --lease-ttl",
            ),
            (
                Flags {
                    prefix: "x/".into(),
                    ..flags()
                },
                "must start with '/'",
            ),
        ];
        for (f, want) in cases {
            let err = validate(&f).unwrap_err();
            if cfg!(feature = "etcd") {
                assert!(err.contains(want), "{err:?} should contain {want:?}");
            } else if f.coordinator.as_deref() == Some("etcd") {
                assert!(err.contains("--features etcd"), "{err}");
            }
        }
    }

    #[test]
    fn the_filter_keeps_only_owned_sessions_and_gives_them_node_and_token() {
        use crate::core::DesiredSession;
        let spec: crate::api::SessionSpec =
            serde_json::from_value(serde_json::json!({"command": ["true"]})).unwrap();
        let mut d = Desired::default();
        for n in ["a", "b"] {
            d.sessions.insert(
                n.into(),
                DesiredSession {
                    name: n.into(),
                    spec: Arc::new(spec.clone()),
                    generation: 1,
                    first_seen: chrono::Utc::now(),
                    replica: None,
                    restarted_at: None,
                },
            );
        }
        let fleet = Fleet::new("n1");
        assert!(fleet.filter(d).sessions.is_empty());
        fleet.set_owned(BTreeMap::from([("b".to_string(), 42)]));
        let mine = fleet.filter(fleet.declared_state().unwrap());
        assert_eq!(mine.sessions.keys().collect::<Vec<_>>(), ["b"]);
        let env = &mine.sessions["b"].spec.env;
        assert_eq!(env[NODE_ENV], "n1");
        assert_eq!(env[TOKEN_ENV], "42");
        assert_eq!(fleet.declared().len(), 2);
    }

    #[test]
    fn an_unowned_session_says_why_and_the_controller_status_has_a_condition() {
        let fleet = Fleet::new("n1");
        let mut extra = BTreeMap::new();
        fleet.add_to_status(&mut extra);
        // Before the first round: no condition (nothing is known yet).
        assert!(extra["fleet"].get("conditions").is_none());
        fleet.set_owners(BTreeMap::from([("gone".to_string(), "n9".to_string())]));
        fleet.set_unowned(BTreeMap::from([(
            "gone".to_string(),
            "owner n9's lease is gone".to_string(),
        )]));
        let mut st = crate::api::status::SessionStatus {
            phase: "Pending".into(),
            ..Default::default()
        };
        fleet.annotate("gone", &mut st);
        assert_eq!(st.reason.as_deref(), Some(view::UNOWNED));
        assert_eq!(st.message.as_deref(), Some("owner n9's lease is gone"));
        assert_eq!(st.node, None);
        fleet.add_to_status(&mut extra);
        let c = &extra["fleet"]["conditions"][0];
        assert_eq!(
            (&c["type"], &c["status"], &c["reason"]),
            (&"Owned".into(), &"False".into(), &"Unowned".into())
        );
        assert!(c["message"].as_str().unwrap_or("").contains("gone"), "{c}");
        assert_eq!(extra["fleet"]["unownedSessions"], 1);
        fleet.set_unowned(BTreeMap::new());
        fleet.add_to_status(&mut extra);
        assert_eq!(extra["fleet"]["conditions"][0]["status"], "True");
    }
}
