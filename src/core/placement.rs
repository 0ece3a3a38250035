//! Placement of sessions over the live members of a fleet (scale-out, issue 15).
//!
//! Pure: the coordinator passes in what it read from etcd (live members and
//! current owners) and acts on what comes back. Two rules:
//!
//! - **Sticky ownership.** A session whose owner is still a live member stays
//!   there: a joining node takes new sessions, it never steals a running one
//!   (a long agent run would lose its work).
//! - **Rendezvous hashing** (highest random weight) for the rest: every node
//!   computes the same pick from the same member list without talking to the
//!   others, and losing a member moves only that member's sessions.
//!
//! The hash is spelt out here (FNV-1a, then a 64-bit finaliser) rather than
//! taken from `std`, whose `DefaultHasher` may change between Rust releases:
//! nodes built by different toolchains must agree on every pick.

use std::collections::{BTreeMap, BTreeSet};

/// The weight of `node` for `session`: the highest weight among the live
/// members wins the session.
pub fn weight(node: &str, session: &str) -> u64 {
    // FNV-1a over "node\0session": the NUL keeps ("ab","c") and ("a","bc") apart.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in node
        .as_bytes()
        .iter()
        .chain(std::iter::once(&0u8))
        .chain(session.as_bytes())
    {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // splitmix64's finaliser: FNV alone spreads short, similar names poorly.
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// The rendezvous pick for `session` among `members` (ties broken by the
/// node name, so the pick is total); `None` when there is no member.
pub fn pick<'a, I>(session: &str, members: I) -> Option<&'a str>
where
    I: IntoIterator<Item = &'a String>,
{
    members
        .into_iter()
        .map(|m| (weight(m, session), m.as_str()))
        .max()
        .map(|(_, m)| m)
}

/// Where every session belongs: its current owner while that owner is a
/// live member (sticky), else the rendezvous pick among `live`. Sessions are
/// left out when no member is live (they are unowned, and the caller reports
/// them).
pub fn assign(
    sessions: &BTreeSet<String>,
    owners: &BTreeMap<String, String>,
    live: &BTreeSet<String>,
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for s in sessions {
        let owner = match owners.get(s) {
            Some(o) if live.contains(o) => Some(o.as_str()),
            _ => pick(s, live),
        };
        if let Some(o) = owner {
            out.insert(s.clone(), o.to_string());
        }
    }
    out
}

/// The sessions `node` should claim now: those with no live owner whose
/// rendezvous pick is `node`. Only the picked node claims, so members do not
/// race for every free session; the claim itself is still a transaction, so
/// two nodes with different views of the membership cannot both win.
pub fn to_claim(
    node: &str,
    sessions: &BTreeSet<String>,
    owners: &BTreeMap<String, String>,
    live: &BTreeSet<String>,
) -> Vec<String> {
    sessions
        .iter()
        .filter(|s| owners.get(*s).is_none_or(|o| !live.contains(o)))
        .filter(|s| pick(s, live) == Some(node))
        .cloned()
        .collect()
}

/// Pools whose members must all run on one node, by member: a pool with a
/// `maxConcurrent` or a `budget` decides across its members (capacity, the
/// queue and its order, `maxQueue`, the budget's spend), and those
/// decisions hold fleet-wide only when one node makes them. The pool is then
/// placed as one unit (its own owner key, claimed like a session), and its
/// members follow it. Other pools' replicas are placed one by one.
pub fn grouped(desired: &crate::core::Desired) -> BTreeMap<String, String> {
    let decides = |pool: &str| {
        desired
            .pools
            .get(pool)
            .is_some_and(|p| p.max_concurrent.is_some())
            || desired.budgets.contains_key(pool)
    };
    desired
        .sessions
        .values()
        .filter_map(|d| {
            let pool = d.pool()?;
            decides(pool).then(|| (d.name.clone(), pool.to_string()))
        })
        .collect()
}

/// The members of grouped pools (`members`: member → pool) that `node`
/// should claim now: those with no live owner whose pool `node` holds
/// (`pool_owners`: pool → node). A member still owned by another live node
/// (its pool became grouped while it ran there) stays where it is.
pub fn members_to_claim(
    node: &str,
    members: &BTreeMap<String, String>,
    pool_owners: &BTreeMap<String, String>,
    owners: &BTreeMap<String, String>,
    live: &BTreeSet<String>,
) -> Vec<String> {
    members
        .iter()
        .filter(|(s, _)| owners.get(*s).is_none_or(|o| !live.contains(o)))
        .filter(|(_, pool)| pool_owners.get(*pool).is_some_and(|o| o == node))
        .map(|(s, _)| s.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_pick_is_stable_across_builds() {
        // Pinned values: a change to the hash would split a mixed-version
        // fleet's view of who owns what, so it must be deliberate.
        // The values were computed independently (a Python transcription of
        // the same FNV-1a + splitmix64 finaliser).
        assert_eq!(weight("a", "s"), 0x3e09_4e82_dbca_0d55);
        assert_eq!(weight("n1", "web-0"), 0xe650_d194_b70d_5d25);
        assert_ne!(weight("ab", "c"), weight("a", "bc"));
        assert_eq!(pick("web-0", &set(&["n1", "n2", "n3"])), Some("n1"));
    }

    #[test]
    fn no_member_means_no_owner() {
        let none = BTreeSet::new();
        assert_eq!(pick("s", &none), None);
        assert!(assign(&set(&["s"]), &BTreeMap::new(), &none).is_empty());
    }

    #[test]
    fn sessions_spread_over_members() {
        let live = set(&["n1", "n2", "n3"]);
        let sessions: BTreeSet<String> = (0..300).map(|i| format!("s-{i}")).collect();
        let placed = assign(&sessions, &BTreeMap::new(), &live);
        for n in &live {
            let count = placed.values().filter(|o| *o == n).count();
            // 100 expected each; a hash this skewed would be broken.
            assert!((50..=150).contains(&count), "{n} got {count} of 300");
        }
    }

    #[test]
    fn pools_that_decide_across_members_are_placed_as_one_unit() {
        use crate::core::{Desired, DesiredPool, DesiredSession};
        let mut d = Desired::default();
        for (name, cap) in [("capped", Some(2)), ("open", None), ("budgeted", None)] {
            d.pools.insert(
                name.into(),
                DesiredPool {
                    name: name.into(),
                    replicas: 0,
                    max_concurrent: cap,
                    max_queue: 10,
                    generation: 1,
                },
            );
        }
        let budget: crate::api::manifest::Budget =
            serde_json::from_value(serde_json::json!({"maxCostUsd": 1.0})).expect("a budget");
        d.budgets.insert("budgeted".into(), budget);
        for (name, pool) in [
            ("a", Some("capped")),
            ("b", Some("open")),
            ("c", Some("budgeted")),
            ("d", None),
        ] {
            let mut spec = serde_json::json!({"command": ["true"]});
            if let Some(p) = pool {
                spec["pool"] = p.into();
            }
            d.sessions.insert(
                name.into(),
                DesiredSession {
                    name: name.into(),
                    spec: std::sync::Arc::new(serde_json::from_value(spec).expect("a spec")),
                    generation: 1,
                    first_seen: chrono::Utc::now(),
                    replica: None,
                    restarted_at: None,
                },
            );
        }
        let g = grouped(&d);
        assert_eq!(
            g.into_iter().collect::<Vec<_>>(),
            [
                ("a".into(), "capped".into()),
                ("c".into(), "budgeted".into())
            ]
        );
    }

    fn names(prefix: &'static str, max: usize) -> impl Strategy<Value = BTreeSet<String>> {
        proptest::collection::btree_set(
            (0..1000u32).prop_map(move |i| format!("{prefix}{i}")),
            0..max,
        )
    }

    proptest! {
        #[test]
        fn every_session_has_one_live_owner(
            sessions in names("s", 60),
            live in names("n", 8),
        ) {
            let placed = assign(&sessions, &BTreeMap::new(), &live);
            if live.is_empty() {
                prop_assert!(placed.is_empty());
            } else {
                prop_assert_eq!(placed.len(), sessions.len());
                for o in placed.values() {
                    prop_assert!(live.contains(o));
                }
                // Exactly the picked node claims each free session.
                let mut claimed = BTreeMap::new();
                for n in &live {
                    for s in to_claim(n, &sessions, &BTreeMap::new(), &live) {
                        prop_assert!(claimed.insert(s, n.clone()).is_none());
                    }
                }
                prop_assert_eq!(claimed, placed);
            }
        }

        #[test]
        fn a_join_moves_no_running_session(
            sessions in names("s", 60),
            live in names("n", 8),
            joiner in (1000..2000u32).prop_map(|i| format!("n{i}")),
        ) {
            let before = assign(&sessions, &BTreeMap::new(), &live);
            let mut grown = live.clone();
            grown.insert(joiner.clone());
            let after = assign(&sessions, &before, &grown);
            for (s, o) in &before {
                prop_assert_eq!(after.get(s), Some(o));
            }
            // And the joiner claims nothing that is already owned.
            for s in to_claim(&joiner, &sessions, &before, &grown) {
                prop_assert!(!before.contains_key(&s));
            }
        }

        #[test]
        fn a_grouped_pools_members_all_land_on_its_one_owner(
            members in names("m", 40),
            pools in 1..4u32,
            live in names("n", 8).prop_filter("a member", |l| !l.is_empty()),
        ) {
            let members: BTreeMap<String, String> = members
                .into_iter()
                .enumerate()
                .map(|(i, m)| (m, format!("p{}", i as u32 % pools)))
                .collect();
            let pool_names: BTreeSet<String> = members.values().cloned().collect();
            // Exactly one node claims each pool ...
            let mut pool_owners = BTreeMap::new();
            for n in &live {
                for p in to_claim(n, &pool_names, &BTreeMap::new(), &live) {
                    prop_assert!(pool_owners.insert(p, n.clone()).is_none());
                }
            }
            prop_assert_eq!(pool_owners.len(), pool_names.len());
            // ... and only that node claims the pool's members, each once.
            let mut claimed = BTreeMap::new();
            for n in &live {
                for m in members_to_claim(n, &members, &pool_owners, &BTreeMap::new(), &live) {
                    prop_assert_eq!(Some(n), pool_owners.get(&members[&m]));
                    prop_assert!(claimed.insert(m, n.clone()).is_none());
                }
            }
            prop_assert_eq!(claimed.len(), members.len());
            // A member owned by a live node is claimed by nobody.
            let owners: BTreeMap<String, String> = claimed.clone();
            for n in &live {
                prop_assert!(members_to_claim(n, &members, &pool_owners, &owners, &live).is_empty());
            }
        }

        #[test]
        fn a_loss_moves_only_the_lost_nodes_sessions(
            sessions in names("s", 60),
            live in names("n", 8).prop_filter("two members", |l| l.len() >= 2),
            which in any::<prop::sample::Index>(),
        ) {
            let before = assign(&sessions, &BTreeMap::new(), &live);
            let lost = which.get(&live.iter().cloned().collect::<Vec<_>>()).clone();
            let mut shrunk = live.clone();
            shrunk.remove(&lost);
            let after = assign(&sessions, &before, &shrunk);
            for (s, o) in &before {
                let now = after.get(s);
                if *o == lost {
                    prop_assert!(now.is_some_and(|n| *n != lost && shrunk.contains(n)));
                } else {
                    prop_assert_eq!(now, Some(o));
                }
            }
        }
    }
}
