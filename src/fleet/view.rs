//! The fleet-wide view: what `sessionlet get --etcd-endpoints` and
//! `describe --etcd-endpoints` show.
//!
//! Each owner publishes a small summary of every session it owns under
//! `live/<session>` (with its lease, so a dead node's summaries vanish with
//! it; written only under the owner key's fencing token). The reader takes
//! one consistent snapshot of `members/`, `owners/`, `live/` and `status/`
//! and lays it over the local status files (every node writes one for every
//! declared session), so that the `get` table and `-o json|yaml` stay the
//! same code with a NODE added.
//!
//! The merge is pure and always compiled; only [`fetch`] talks to etcd.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::api::status::{SessionStatus, SessionStatusDoc, StatusMetadata};
use crate::cli::read::Found;

/// The reason a session no live node owns carries, in its status, in
/// `get --etcd-endpoints` and in the controller status's `Owned` condition.
pub const UNOWNED: &str = "Unowned";

/// The live summary of one owned session, as published in `live/<session>`.
/// Small on purpose: it is written at every change of these fields, and never
/// carries the spec (no env, no argv, nothing secret).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// The owner (filled in by the coordinator when it publishes).
    #[serde(default)]
    pub node: String,
    /// The owner key's create revision the summary was written under.
    #[serde(default)]
    pub token: i64,
    /// The session's phase, as in its status.
    pub phase: String,
    /// The phase's reason, as in its status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Restarts since the spec last changed.
    #[serde(default)]
    pub restarts: u32,
    /// When the current attempt started (while running).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    /// When it reached a terminal phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
    /// The last attempt's exit code, when it exited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
}

impl Summary {
    /// The summary of a record; cheap enough to compute for every owned
    /// session after each pass (no I/O, a handful of small strings).
    pub fn of(rec: &crate::core::Record) -> Summary {
        let (phase, reason, _) = crate::runtime::render::phase_of(rec);
        Summary {
            node: String::new(),
            token: 0,
            phase: phase.as_str().to_string(),
            reason: reason.map(|r| r.as_str()),
            restarts: rec.restarts,
            started_at: match &rec.run {
                crate::core::Run::Running(r) => Some(r.started_at),
                _ => None,
            },
            finished_at: rec.outcome().map(|o| o.finished_at),
            exit_code: rec.last_exit.as_ref().and_then(|e| match e.status {
                Some(crate::core::ExitStatus::Code(c)) => Some(c),
                _ => None,
            }),
        }
    }
}

/// One snapshot of the fleet's keys in etcd.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// Live members (their member keys exist).
    pub members: BTreeSet<String>,
    /// Owner keys: session → owning node.
    pub owners: BTreeMap<String, String>,
    /// Live summaries: session → summary.
    pub live: BTreeMap<String, Summary>,
    /// Finished sessions: session → the recorded outcome (`node`, and the
    /// phase when the recorder wrote one).
    pub finished: BTreeMap<String, serde_json::Value>,
}

/// Why `session` has no live owner, or `None` when it has one (or is
/// finished, or no member is needed for it). `owners` maps session → node.
pub fn why_unowned(
    session: &str,
    members: &BTreeSet<String>,
    owners: &BTreeMap<String, String>,
) -> Option<String> {
    match owners.get(session) {
        Some(o) if members.contains(o) => None,
        Some(o) => Some(format!(
            "owner {o}'s lease is gone; another node claims it once its owner key expires"
        )),
        None if members.is_empty() => {
            Some("no live member in the fleet (every node's lease is gone)".to_string())
        }
        None => Some(match crate::core::placement::pick(session, members) {
            Some(p) => {
                format!("not claimed: placement gives it to node {p}, which has not claimed it")
            }
            None => "not claimed".to_string(),
        }),
    }
}

/// The sessions the local manifests declare (name → manifest file name), in
/// the manifest folder the controller status of `status_dir` names (else
/// `status_dir` itself, the default): a manifest added after the controller
/// stopped has no status file yet, and is still work the fleet must run.
pub fn declared_here(status_dir: &Path) -> BTreeMap<String, String> {
    let manifest_dir =
        std::fs::read_to_string(status_dir.join(".sessionlet/controller.status.yaml"))
            .ok()
            .and_then(|t| crate::manifest::codec::from_yaml::<serde_json::Value>(&t).ok())
            .and_then(|v| v["manifestDir"].as_str().map(PathBuf::from))
            .unwrap_or_else(|| status_dir.to_path_buf());
    let Ok(listing) = crate::manifest::files::list_manifests(&manifest_dir) else {
        return BTreeMap::new();
    };
    let mut out = BTreeMap::new();
    for path in listing.manifests {
        let file = crate::manifest::load::load_file(&path);
        let manifest = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        for o in file.objects() {
            if let crate::api::Object::Session(_) = o {
                out.insert(o.name().to_string(), manifest.clone());
            }
        }
    }
    out
}

/// Lays the fleet's snapshot over the local status documents: every session
/// gets its owner's node and, when the owner published one, its live phase,
/// restarts, reason, start and last exit code; a session with no live owner
/// gets node `None`, reason `Unowned` and a message saying why. Sessions the
/// local manifests declare without a status file (`declared`, name →
/// manifest), and those the fleet knows and this checkout does not (it is
/// behind the others), are added.
pub fn merge(
    found: &mut Vec<(PathBuf, Found)>,
    snap: &Snapshot,
    declared: &BTreeMap<String, String>,
) {
    let mut seen = BTreeSet::new();
    for (_, f) in found.iter_mut() {
        let Found::Session(doc) = f else { continue };
        if doc.metadata.name.is_empty() || doc.status.phase == "Invalid" {
            continue;
        }
        seen.insert(doc.metadata.name.clone());
        overlay(&doc.metadata.name.clone(), &mut doc.status, snap);
    }
    let extra: BTreeSet<&String> = declared
        .keys()
        .chain(snap.owners.keys())
        .chain(snap.live.keys())
        .chain(snap.finished.keys())
        .filter(|n| !seen.contains(*n))
        .collect();
    for name in extra {
        let mut status = SessionStatus {
            phase: "Pending".into(),
            ..SessionStatus::default()
        };
        overlay(name, &mut status, snap);
        let doc = SessionStatusDoc {
            api_version: crate::api::API_VERSION.into(),
            kind: "SessionStatus".into(),
            metadata: StatusMetadata {
                name: name.clone(),
                manifest: declared.get(name).cloned().unwrap_or_default(),
                ..StatusMetadata::default()
            },
            status,
        };
        found.push((PathBuf::new(), Found::Session(Box::new(doc))));
    }
}

fn overlay(name: &str, st: &mut SessionStatus, snap: &Snapshot) {
    if let Some(done) = snap.finished.get(name) {
        // Finished fleet-wide: the owner may be gone with its summary.
        match snap.live.get(name) {
            Some(s) => apply(st, s),
            None => {
                if let Some(p) = done["phase"].as_str() {
                    st.phase = p.to_string();
                    st.reason = done["reason"].as_str().map(str::to_string);
                    st.message = None;
                    st.pid = None;
                }
            }
        }
        st.node = done["node"].as_str().map(str::to_string);
        return;
    }
    match why_unowned(name, &snap.members, &snap.owners) {
        Some(why) => {
            // The local view's phase stays (it says what this node knows).
            st.node = None;
            st.reason = Some(UNOWNED.to_string());
            st.message = Some(why);
        }
        None => {
            if let Some(s) = snap.live.get(name) {
                apply(st, s);
            }
            st.node = snap.owners.get(name).cloned();
        }
    }
}

fn apply(st: &mut SessionStatus, s: &Summary) {
    if st.node.as_deref() != Some(s.node.as_str()) || st.phase != s.phase {
        // Process details of the local file describe another run (or none).
        st.pid = None;
        st.kill_at = None;
        st.next_restart_at = None;
        st.message = None;
    }
    st.phase = s.phase.clone();
    st.reason = s.reason.clone();
    st.restarts = s.restarts;
    st.started_at = s.started_at;
    st.finished_at = s.finished_at;
    // The local file's last exit, when there is one, takes the owner's code
    // (a node that does not own the session has none to correct).
    if let (Some(code), Some(e)) = (s.exit_code, st.last_exit.as_mut()) {
        e.exit_code = Some(code);
    }
}

/// The read-only etcd flags of `get` and `describe`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ViewFlags {
    /// Show the whole fleet from etcd (every session with its node), not
    /// only this node's status files: the client URLs, comma-separated.
    #[arg(long = "etcd-endpoints", value_name = "URL[,URL...]")]
    pub endpoints: Option<String>,
    /// The prefix the fleet's controllers were given (`run --etcd-prefix`).
    #[arg(long = "etcd-prefix", default_value = "/sessionlet/")]
    pub prefix: String,
}

impl ViewFlags {
    /// The endpoints and prefix when `--etcd-endpoints` was given, or an
    /// error naming the flag and the fix.
    fn parse(&self) -> Result<Option<(Vec<String>, String)>, String> {
        let Some(raw) = self.endpoints.as_deref() else {
            return Ok(None);
        };
        if !cfg!(feature = "etcd") {
            return Err(
                "--etcd-endpoints: this sessionlet was built without etcd support; \
                 build it with `cargo build --release --features etcd` (needs protoc: \
                 Debian `protobuf-compiler libprotobuf-dev`)"
                    .to_string(),
            );
        }
        let endpoints = super::endpoint_list(raw).map_err(|e| {
            if e.is_empty() {
                "--etcd-endpoints needs URL[,URL...] (e.g. http://127.0.0.1:2379)".to_string()
            } else {
                e
            }
        })?;
        let prefix = super::key_prefix(&self.prefix)?;
        Ok(Some((endpoints, prefix)))
    }
}

/// Reads the fleet's snapshot when `--etcd-endpoints` was given: `Ok(None)`
/// without it, `Err` with a message for people (bad flags, a build without
/// etcd, no member answering).
pub fn fetch(flags: &ViewFlags) -> Result<Option<Snapshot>, String> {
    let Some((endpoints, prefix)) = flags.parse()? else {
        return Ok(None);
    };
    #[cfg(feature = "etcd")]
    {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start a runtime: {e}"))?;
        rt.block_on(read(&endpoints, &prefix)).map(Some)
    }
    #[cfg(not(feature = "etcd"))]
    {
        // parse() refuses this already.
        let _ = (endpoints, prefix);
        Err("built without the `etcd` feature".into())
    }
}

/// One consistent snapshot (four prefix reads at one revision), from the
/// first member that answers.
#[cfg(feature = "etcd")]
async fn read(endpoints: &[String], prefix: &str) -> Result<Snapshot, String> {
    use etcd_client::{Client, ConnectOptions};
    use std::time::Duration;
    use tokio::time::timeout;

    let call = Duration::from_secs(3);
    let mut errors = Vec::new();
    for url in endpoints {
        let got: Result<Snapshot, super::FleetError> = async {
            let opts = ConnectOptions::new()
                .with_connect_timeout(call)
                .with_timeout(call);
            let mut client = timeout(call, Client::connect([url], Some(opts))).await??;
            let mut snap = Snapshot::default();
            let mut revision = 0;
            for kind in ["members", "owners", "live", "status"] {
                let p = format!("{prefix}{kind}/");
                // In pages, all at the first page's revision.
                let kvs =
                    super::coordinator::read_prefix(&mut client, &p, &mut revision, call).await?;
                for kv in &kvs {
                    let (Ok(k), Ok(v)) = (kv.key_str(), kv.value_str()) else {
                        continue;
                    };
                    let Some(name) = k.strip_prefix(p.as_str()) else {
                        continue;
                    };
                    let name = name.to_string();
                    match kind {
                        "members" => {
                            snap.members.insert(name);
                        }
                        "owners" => {
                            snap.owners.insert(name, v.to_string());
                        }
                        "live" => {
                            if let Ok(s) = serde_json::from_str(v) {
                                snap.live.insert(name, s);
                            }
                        }
                        _ => {
                            let v = serde_json::from_str(v).unwrap_or(serde_json::Value::Null);
                            snap.finished.insert(name, v);
                        }
                    }
                }
            }
            Ok(snap)
        }
        .await;
        match got {
            Ok(s) => return Ok(s),
            Err(e) => errors.push(format!("{url}: {e}")),
        }
    }
    Err(format!(
        "cannot read the fleet from etcd: {}",
        errors.join("; ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    fn local(name: &str, phase: &str, node: Option<&str>) -> (PathBuf, Found) {
        let doc = SessionStatusDoc {
            api_version: crate::api::API_VERSION.into(),
            kind: "SessionStatus".into(),
            metadata: StatusMetadata {
                name: name.into(),
                ..StatusMetadata::default()
            },
            status: SessionStatus {
                phase: phase.into(),
                pid: Some(7),
                node: node.map(str::to_string),
                ..SessionStatus::default()
            },
        };
        (PathBuf::from("x"), Found::Session(Box::new(doc)))
    }

    fn status<'a>(found: &'a [(PathBuf, Found)], name: &str) -> &'a SessionStatus {
        found
            .iter()
            .find_map(|(_, f)| match f {
                Found::Session(s) if s.metadata.name == name => Some(&s.status),
                _ => None,
            })
            .expect(name)
    }

    #[test]
    fn the_fleet_view_names_owners_live_phases_and_unowned_sessions() {
        let snap = Snapshot {
            members: set(&["n1", "n2"]),
            owners: BTreeMap::from([
                ("a".to_string(), "n2".to_string()),
                ("gone".to_string(), "n9".to_string()),
                ("far".to_string(), "n1".to_string()),
            ]),
            live: BTreeMap::from([
                (
                    "a".to_string(),
                    Summary {
                        node: "n2".into(),
                        token: 5,
                        phase: "Running".into(),
                        restarts: 3,
                        ..Summary::default()
                    },
                ),
                (
                    "far".to_string(),
                    Summary {
                        node: "n1".into(),
                        token: 6,
                        phase: "Recovering".into(),
                        ..Summary::default()
                    },
                ),
            ]),
            finished: BTreeMap::from([(
                "once".to_string(),
                serde_json::json!({"node": "n9", "token": 2, "done": true, "phase": "Completed"}),
            )]),
        };
        let mut found = vec![
            local("a", "Running", Some("n2")),
            local("gone", "Pending", None),
            local("new", "Pending", None),
            local("once", "Pending", None),
        ];
        let declared = BTreeMap::from([("late".to_string(), "late.yaml".to_string())]);
        merge(&mut found, &snap, &declared);
        let a = status(&found, "a");
        assert_eq!(
            (a.phase.as_str(), a.restarts, a.node.as_deref(), a.pid),
            ("Running", 3, Some("n2"), Some(7))
        );
        let gone = status(&found, "gone");
        assert_eq!(gone.reason.as_deref(), Some(UNOWNED));
        assert_eq!(gone.node, None);
        assert!(gone
            .message
            .as_deref()
            .unwrap_or("")
            .contains("n9's lease is gone"));
        let new = status(&found, "new");
        assert_eq!(new.reason.as_deref(), Some(UNOWNED));
        assert!(new
            .message
            .as_deref()
            .unwrap_or("")
            .contains("placement gives it"));
        let once = status(&found, "once");
        assert_eq!(
            (once.phase.as_str(), once.node.as_deref()),
            ("Completed", Some("n9"))
        );
        // Declared here, no status file yet: unowned, from the manifest.
        let late = status(&found, "late");
        assert_eq!(
            (late.phase.as_str(), late.reason.as_deref()),
            ("Pending", Some(UNOWNED))
        );
        // Known to the fleet, not to this checkout: added from etcd.
        let far = status(&found, "far");
        assert_eq!(
            (far.phase.as_str(), far.node.as_deref(), far.pid),
            ("Recovering", Some("n1"), None)
        );
    }

    #[test]
    fn no_member_means_every_session_is_unowned() {
        let why = why_unowned("s", &BTreeSet::new(), &BTreeMap::new());
        assert!(why.unwrap_or_default().contains("no live member"));
        assert_eq!(
            why_unowned(
                "s",
                &set(&["n1"]),
                &BTreeMap::from([("s".to_string(), "n1".to_string())])
            ),
            None
        );
    }

    #[test]
    fn the_summary_carries_no_spec() {
        let text = serde_json::to_string(&Summary {
            node: "n1".into(),
            token: 1,
            phase: "Running".into(),
            ..Summary::default()
        })
        .unwrap_or_default();
        assert_eq!(
            text,
            r#"{"node":"n1","token":1,"phase":"Running","restarts":0}"#
        );
    }

    #[test]
    fn without_endpoints_nothing_is_read() {
        assert_eq!(fetch(&ViewFlags::default()), Ok(None));
        let f = ViewFlags {
            endpoints: Some("127.0.0.1:2379".into()),
            prefix: "/sessionlet/".into(),
        };
        let err = fetch(&f).unwrap_err();
        if cfg!(feature = "etcd") {
            assert!(err.contains("http://HOST:PORT"), "{err}");
        } else {
            assert!(err.contains("--features etcd"), "{err}");
        }
    }
}
