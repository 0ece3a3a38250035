//! The fleet-wide view over a real three-member etcd cluster on loopback
//! (feature `etcd`): `sessionlet get --etcd-endpoints` on any node lists
//! every session with its node, the NODE column follows a failover, and a
//! session no live node owns is `Unowned` in the table, in its status and in
//! the controller status's `Owned` condition.
#![cfg(feature = "etcd")]

mod common;
mod fleet_common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use fleet_common::{have_etcd, wait, Fleet};

const SESSIONS: [&str; 6] = ["s-a", "s-b", "s-c", "s-d", "s-e", "s-f"];

/// `sessionlet ARGS --dir STATUS --etcd-endpoints ... --etcd-prefix /t/`:
/// stdout when it succeeded.
fn fleet_cli(f: &Fleet, cmd: &str, status: &Path, extra: &[&str]) -> Option<String> {
    let out = Command::new(common::bin())
        .arg(cmd)
        .args(extra)
        .arg("--dir")
        .arg(status)
        .args([
            "--etcd-endpoints",
            &f.cluster.endpoints(),
            "--etcd-prefix",
            "/t/",
        ])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The `get` table's session rows: name → column → cell (columns cut at
/// the header's positions, so cells with spaces stay whole).
fn table(text: &str) -> BTreeMap<String, BTreeMap<String, String>> {
    let mut lines = text.lines();
    let Some(header) = lines.next() else {
        return BTreeMap::new();
    };
    let mut cols: Vec<(usize, String)> = Vec::new();
    let mut start = None;
    for (i, c) in header
        .char_indices()
        .chain(std::iter::once((header.len(), ' ')))
    {
        match (c == ' ', start) {
            (false, None) => start = Some(i),
            (true, Some(s)) => {
                cols.push((s, header[s..i].to_string()));
                start = None;
            }
            _ => {}
        }
    }
    let mut rows = BTreeMap::new();
    for line in lines {
        if line.is_empty() {
            // The pool and account tables follow.
            break;
        }
        let cell = |k: usize| {
            let from = cols[k].0.min(line.len());
            let to = cols.get(k + 1).map_or(line.len(), |c| c.0.min(line.len()));
            line[from..to].trim().to_string()
        };
        let row: BTreeMap<String, String> = (0..cols.len())
            .map(|k| (cols[k].1.clone(), cell(k)))
            .collect();
        rows.insert(row["NAME"].clone(), row);
    }
    rows
}

/// The node each session last started on (from the shared journal).
fn owners(f: &Fleet) -> BTreeMap<String, String> {
    SESSIONS
        .iter()
        .filter_map(|s| Some((s.to_string(), f.starts(s).last()?.clone())))
        .collect()
}

/// Waits until `get --etcd-endpoints` from node `i`'s folder shows every
/// session Running on the node the journal says.
fn wait_table_matches(f: &Fleet, i: usize, want: &BTreeMap<String, String>) {
    let node = &f.nodes[i];
    wait(
        &format!("get --etcd-endpoints on {} to show {want:?}", node.name),
        || {
            let rows = table(&fleet_cli(f, "get", &node.status, &[])?);
            want.iter()
                .all(|(s, n)| {
                    rows.get(s)
                        .is_some_and(|r| r["NODE"] == *n && r["PHASE"] == "Running")
                })
                .then_some(())
        },
    );
}

#[test]
fn get_with_etcd_lists_every_session_with_its_node_on_any_node_and_follows_a_failover() {
    if !have_etcd(
        "get_with_etcd_lists_every_session_with_its_node_on_any_node_and_follows_a_failover",
    ) {
        return;
    }
    let tmp = tempfile::tempdir().expect("tmp");
    let all: Vec<(&str, &str)> = SESSIONS.iter().map(|s| (*s, "always")).collect();
    let mut f = Fleet::new(tmp.path(), 3, &all);
    for i in 0..3 {
        f.start(i);
    }
    for s in SESSIONS {
        wait(&format!("{s} to start on some node"), || {
            (!f.starts(s).is_empty()).then_some(())
        });
    }
    let before = owners(&f);
    for i in 0..3 {
        wait_table_matches(&f, i, &before);
    }
    // -o json: the same view as status documents, with `status.node`.
    let json = fleet_cli(&f, "get", &f.nodes[0].status, &["-o", "json"]).expect("get -o json");
    let docs: Vec<serde_json::Value> = serde_json::from_str(&json).expect("json");
    for (s, n) in &before {
        let doc = docs
            .iter()
            .find(|d| d["metadata"]["name"] == s.as_str())
            .unwrap_or_else(|| panic!("{s} in {json}"));
        assert_eq!(doc["status"]["node"], n.as_str(), "{doc}");
    }
    // describe names the node, from any node's folder.
    let (s, n) = before.iter().next().expect("a session");
    let other = f
        .nodes
        .iter()
        .position(|x| x.name != *n)
        .expect("another node");
    let text = fleet_cli(&f, "describe", &f.nodes[other].status, &[s.as_str()]).expect("describe");
    assert!(text.contains(&format!("Node:          {n}")), "{text}");
    // What an owner publishes is a summary: never the spec (env, argv).
    let live = f
        .cluster
        .etcdctl(&["get", "--prefix", "/t/live/"])
        .expect("live keys");
    assert!(live.contains("\"phase\":\"Running\""), "{live}");
    for secret in ["JOURNAL", "work.sh", "command", "env"] {
        assert!(!live.contains(secret), "{secret} in {live}");
    }

    // The node running the most sessions dies whole: the NODE column follows
    // its sessions to where they run now.
    let victim = (0..3)
        .max_by_key(|i| before.values().filter(|n| **n == f.nodes[*i].name).count())
        .unwrap_or(0);
    let victim_name = f.nodes[victim].name.clone();
    f.kill_node(victim);
    for (s, _) in before.iter().filter(|(_, n)| **n == victim_name) {
        wait(&format!("{s} to run on another node"), || {
            let starts = f.starts(s);
            (starts.len() == 2 && starts[1] != victim_name).then_some(())
        });
    }
    let after = owners(&f);
    assert!(after.values().all(|n| *n != victim_name), "{after:?}");
    for i in (0..3).filter(|i| *i != victim) {
        wait_table_matches(&f, i, &after);
    }
    let survivor = (0..3).find(|i| *i != victim).unwrap_or(0);
    eprintln!(
        "get --etcd-endpoints after {victim_name} died:\n{}",
        fleet_cli(&f, "get", &f.nodes[survivor].status, &[]).unwrap_or_default()
    );
    f.assert_no_overlap(&[&victim_name]);
}

#[test]
fn a_session_no_live_node_owns_is_unowned_in_get_its_status_and_the_controller_status() {
    if !have_etcd(
        "a_session_no_live_node_owns_is_unowned_in_get_its_status_and_the_controller_status",
    ) {
        return;
    }
    let tmp = tempfile::tempdir().expect("tmp");
    let mut f = Fleet::new(tmp.path(), 2, &[("s-a", "always")]);
    for i in 0..2 {
        f.start(i);
    }
    wait("s-a to start", || {
        (!f.starts("s-a").is_empty()).then_some(())
    });
    // A member that never claims (its controller stuck, say): placement
    // gives it sessions that therefore nobody runs. No lease: it stays.
    f.cluster
        .etcdctl(&["put", "/t/members/ghost", "ghost"])
        .expect("put the ghost member");
    let members: std::collections::BTreeSet<String> = ["n1", "n2", "ghost"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let orphan = (0..1000)
        .map(|k| format!("orphan-{k}"))
        .find(|s| sessionlet::core::placement::pick(s, &members) == Some("ghost"))
        .expect("a name placed on the ghost");
    f.add(&orphan, "always");
    for n in &f.nodes {
        // The table, from etcd.
        wait(
            &format!("get on {} to show {orphan} Unowned", n.name),
            || {
                let rows = table(&fleet_cli(&f, "get", &n.status, &[])?);
                let r = rows.get(&orphan)?;
                (r["NODE"] == "<none>" && r["REASON"] == "Unowned").then_some(())
            },
        );
        // The node's own status file of the session says why.
        wait(
            &format!("{}'s status of {orphan} to say Unowned", n.name),
            || {
                let st = common::status(&n.status, &orphan)?;
                let st = &st["status"];
                (st["reason"] == "Unowned"
                    && st["message"].as_str().is_some_and(|m| m.contains("ghost"))
                    && st["node"].is_null())
                .then_some(())
            },
        );
        // The controller's own status: a condition, not only a gauge.
        wait(
            &format!("{}'s controller status: Owned False", n.name),
            || {
                let c = common::controller_status_of(&n.status)?;
                let fleet = &c["extra"]["fleet"];
                let cond = &fleet["conditions"][0];
                (fleet["unownedSessions"] == 1
                    && cond["type"] == "Owned"
                    && cond["status"] == "False"
                    && cond["reason"] == "Unowned"
                    && cond["message"]
                        .as_str()
                        .is_some_and(|m| m.contains(&orphan)))
                .then_some(())
            },
        );
    }
    assert!(f.starts(&orphan).is_empty(), "the ghost's session ran");

    // The ghost leaves: a live node claims the session, and the condition
    // turns True again.
    f.cluster
        .etcdctl(&["del", "/t/members/ghost"])
        .expect("delete the ghost member");
    wait(&format!("{orphan} to start"), || {
        (!f.starts(&orphan).is_empty()).then_some(())
    });
    let owner = f.starts(&orphan)[0].clone();
    for n in &f.nodes {
        wait(
            &format!("{}'s controller status: Owned True", n.name),
            || {
                let c = common::controller_status_of(&n.status)?;
                let fleet = &c["extra"]["fleet"];
                let cond = &fleet["conditions"][0];
                (fleet["unownedSessions"] == 0
                    && cond["type"] == "Owned"
                    && cond["status"] == "True")
                    .then_some(())
            },
        );
        wait(
            &format!("get on {} to show {orphan} on {owner}", n.name),
            || {
                let rows = table(&fleet_cli(&f, "get", &n.status, &[])?);
                (rows.get(&orphan)?["NODE"] == owner).then_some(())
            },
        );
    }

    // Every member gone: every session is Unowned, from what the local
    // files declare (the status files stay behind the dead controllers).
    for i in 0..2 {
        f.kill_node(i);
    }
    wait("every member and owner key to expire", || {
        let keys = f.cluster.keys("/t/members/")?;
        let owners = f.cluster.keys("/t/owners/")?;
        (keys.is_empty() && owners.is_empty()).then_some(())
    });
    // Declared while every member is gone: no status file anywhere, still
    // listed (from the manifests), Unowned.
    f.add("late", "always");
    let text = fleet_cli(&f, "get", &f.nodes[0].status, &[]).expect("get");
    eprintln!("get --etcd-endpoints with every member gone:\n{text}");
    let rows = table(&text);
    assert!(common::status(&f.nodes[0].status, "late").is_none());
    for s in ["s-a", orphan.as_str(), "late"] {
        let r = rows.get(s).unwrap_or_else(|| panic!("{s} in {rows:?}"));
        assert_eq!(
            (r["NODE"].as_str(), r["REASON"].as_str()),
            ("<none>", "Unowned"),
            "{r:?}"
        );
    }
    let text = fleet_cli(&f, "describe", &f.nodes[0].status, &["s-a"]).expect("describe");
    assert!(text.contains("no live member"), "{text}");
    f.assert_no_overlap(&["n1", "n2"]);
}
