//! Which edits restart a session: the classification of the spec's fields.
//!
//! Every edit bumps the generation (`observedGeneration`). Only an edit of
//! what runs (the command, the agent, its environment, its user, its memory
//! cgroup) restarts the session gracefully; the rest applies to the running
//! process in place (the next deadline, stop or restart uses the new value).
//! The decision compares a *run hash* of just the restart fields with the one
//! the running attempt was started with.

use crate::api::SessionSpec;

/// The annotation whose change restarts a session on purpose, as
/// `kubectl rollout restart` does (`sessionlet.dev/restartedAt: <time>`).
pub const RESTARTED_AT: &str = "sessionlet.dev/restartedAt";

/// What editing a field does to a running session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// A graceful restart with the new spec (stop signal, grace, new attempt).
    Restart,
    /// Applied in place: same process, new value from now on.
    InPlace,
    /// `suspend`: stops the session (Cancelled) or starts it again.
    Suspend,
}

/// Every field of a Session spec (by its manifest name; `resources.*` per
/// limit) and of its metadata, with what editing it does. The README's
/// manifest reference shows the same table.
pub const FIELDS: &[(&str, Effect)] = &[
    ("command", Effect::Restart),
    ("agent", Effect::Restart),
    ("charter", Effect::Restart),
    ("workingDir", Effect::Restart),
    ("workspace", Effect::Restart),
    ("env", Effect::Restart),
    ("envFrom", Effect::Restart),
    ("stdin", Effect::Restart),
    ("user", Effect::Restart),
    ("group", Effect::Restart),
    ("resources.maxMemory", Effect::Restart),
    ("pool", Effect::Restart),
    ("restartPolicy", Effect::InPlace),
    ("maxRetries", Effect::InPlace),
    ("backoff", Effect::InPlace),
    ("timeout", Effect::InPlace),
    ("activeDeadline", Effect::InPlace),
    ("ttlAfterFinished", Effect::InPlace),
    ("staleAfter", Effect::InPlace),
    ("onStale", Effect::InPlace),
    ("priority", Effect::InPlace),
    ("terminationGracePeriod", Effect::InPlace),
    ("stopSignal", Effect::InPlace),
    ("resources.maxCpuTime", Effect::InPlace),
    ("notify", Effect::InPlace),
    ("suspend", Effect::Suspend),
    ("metadata.labels", Effect::InPlace),
    ("metadata.annotations", Effect::InPlace),
];

/// What editing `field` does; `None` for a name not in [`FIELDS`].
pub fn effect(field: &str) -> Option<Effect> {
    FIELDS.iter().find(|(f, _)| *f == field).map(|(_, e)| *e)
}

/// The restart fields of a spec, hashed (FNV-1a over their JSON, stable
/// across builds and kept in the status as `runHash`). Never 0, which
/// means "not known" in a record.
pub fn run_hash(spec: &SessionSpec) -> u64 {
    let Ok(serde_json::Value::Object(all)) = serde_json::to_value(spec) else {
        return 1;
    };
    let mut picked = serde_json::Map::new();
    for (field, e) in FIELDS {
        if *e != Effect::Restart {
            continue;
        }
        let value = match field.split_once('.') {
            Some((outer, inner)) => all.get(outer).and_then(|o| o.get(inner)),
            None => all.get(*field),
        };
        if let Some(v) = value {
            picked.insert((*field).to_string(), v.clone());
        }
    }
    let bytes = serde_json::to_vec(&picked).unwrap_or_default();
    let h = bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    });
    h.max(1)
}

/// Why a session with a changed generation restarts, or `None` when the
/// change applies in place. `run_hash` and `restarted_at` are what the
/// current (or last) attempt was started with; a `run_hash` of 0 (not
/// known: a status written before run hashes existed) restarts.
pub fn restart_reason(
    run_hash: u64,
    restarted_at: Option<&str>,
    spec: &SessionSpec,
    want_restarted_at: Option<&str>,
) -> Option<String> {
    if run_hash == 0 || run_hash != self::run_hash(spec) {
        return Some("what runs changed; restarting with the new spec".to_string());
    }
    if restarted_at != want_restarted_at {
        return Some(format!(
            "restart asked ({RESTARTED_AT}: {})",
            want_restarted_at.unwrap_or("removed")
        ));
    }
    None
}
