//! Garbage collection that keeps the manifest: a session collected after
//! `ttlAfterFinished` is remembered by name and spec hash, so the same spec
//! does not run again (a `git pull` bringing the file back changes nothing)
//! while a changed spec does.

use std::collections::BTreeMap;

use super::desired::Desired;

/// Collected sessions: name to the spec hash that was collected.
pub type Collected = BTreeMap<String, u64>;

/// True when `name` with spec hash `hash` was collected.
pub fn is_collected(collected: &Collected, name: &str, hash: Option<u64>) -> bool {
    hash.is_some() && collected.get(name).copied() == hash
}

/// Removes the collected sessions from `desired` (they are not run nor
/// reported) and forgets entries whose session now has another spec (it
/// runs again). Returns true when `collected` changed.
pub fn apply(
    desired: &mut Desired,
    collected: &mut Collected,
    hash_of: impl Fn(&str) -> Option<u64>,
) -> bool {
    let before = collected.len();
    collected.retain(|name, h| match desired.sessions.get(name) {
        Some(_) => hash_of(name) == Some(*h),
        // Manifest gone: kept, so that the file coming back does not run again.
        None => true,
    });
    desired
        .sessions
        .retain(|name, _| !is_collected(collected, name, hash_of(name)));
    collected.len() != before
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::desired::DesiredSession;

    fn desired(names: &[&str]) -> Desired {
        let mut d = Desired::default();
        for n in names {
            d.sessions.insert(
                n.to_string(),
                DesiredSession {
                    name: n.to_string(),
                    spec: std::sync::Arc::default(),
                    generation: 1,
                    first_seen: chrono::DateTime::default(),
                    replica: None,
                    restarted_at: None,
                },
            );
        }
        d
    }

    #[test]
    fn the_same_spec_stays_collected_and_a_changed_one_runs_again() {
        let mut c = Collected::from([("a".into(), 7), ("b".into(), 8), ("gone".into(), 9)]);
        let mut d = desired(&["a", "b", "c"]);
        let hashes = |n: &str| match n {
            "a" => Some(7),
            "b" => Some(80),
            _ => Some(1),
        };
        assert!(apply(&mut d, &mut c, hashes), "b's entry is dropped");
        let names: Vec<_> = d.sessions.keys().cloned().collect();
        assert_eq!(
            names,
            ["b", "c"],
            "a is collected, b changed, c never collected"
        );
        assert_eq!(c.keys().cloned().collect::<Vec<_>>(), ["a", "gone"]);
        assert!(!apply(&mut d, &mut c, hashes));
    }
}
