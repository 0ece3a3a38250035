//! Scale-out over a real three-member etcd cluster on loopback (feature
//! `etcd`): three nodes over copies of one manifests folder; every session
//! runs on exactly one node, a dead node's sessions move, a finished session
//! is not run again, a restarted controller keeps its sessions.
#![cfg(feature = "etcd")]

mod common;
mod fleet_common;

use std::time::Instant;

use fleet_common::{have_etcd, metric, wait, Fleet};

const SESSIONS: [&str; 6] = ["s-a", "s-b", "s-c", "s-d", "s-e", "s-f"];

fn started_fleet(root: &std::path::Path, extra: &[(&str, &str)]) -> Fleet {
    started_fleet_with(root, extra, "3s", false)
}

/// `leader_first`: every node starts talking to the etcd leader.
fn started_fleet_with(
    root: &std::path::Path,
    extra: &[(&str, &str)],
    ttl: &str,
    leader_first: bool,
) -> Fleet {
    let mut all: Vec<(&str, &str)> = SESSIONS.iter().map(|s| (*s, "always")).collect();
    all.extend_from_slice(extra);
    let mut f = Fleet::new(root, 3, &all);
    f.lease_ttl = ttl.to_string();
    if leader_first {
        f.first_member = Some(wait("the etcd leader", || f.cluster.leader()));
    }
    for i in 0..3 {
        f.start(i);
    }
    for s in SESSIONS {
        wait(&format!("{s} to start on some node"), || {
            (!f.starts(s).is_empty()).then_some(())
        });
    }
    f
}

#[test]
fn every_session_runs_on_exactly_one_node() {
    if !have_etcd("every_session_runs_on_exactly_one_node") {
        return;
    }
    let tmp = tempfile::tempdir().expect("tmp");
    let all: Vec<(&str, &str)> = SESSIONS.iter().map(|s| (*s, "always")).collect();
    let mut f = Fleet::new(tmp.path(), 3, &all);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    let addr = format!("127.0.0.1:{port}");
    f.start_with(0, &["--http-addr", &addr]);
    f.start(1);
    f.start(2);
    for s in SESSIONS {
        wait(&format!("{s} to start on some node"), || {
            (!f.starts(s).is_empty()).then_some(())
        });
    }
    // The metrics of node n1: members, what it owns and claimed, nothing unowned.
    let on_n1 = SESSIONS
        .iter()
        .filter(|s| f.starts(s).first().map(String::as_str) == Some("n1"))
        .count() as f64;
    wait("n1's fleet metrics to settle", || {
        let got = (
            metric(&addr, "sessionlet_fleet_members")?,
            metric(&addr, "sessionlet_fleet_owned_sessions")?,
            metric(&addr, "sessionlet_fleet_claims_total")?,
            metric(&addr, "sessionlet_fleet_unowned_sessions")?,
        );
        (got == (3.0, on_n1, on_n1, 0.0)).then_some(())
    });
    // Every node's status file of every session names the owner; a node
    // that does not own it says where it runs.
    for n in &f.nodes {
        for s in SESSIONS {
            let owner = f.starts(s)[0].clone();
            wait(
                &format!("{}'s status of {s} to name {owner}", n.name),
                || {
                    let st = common::status(&n.status, s)?;
                    let st = &st["status"];
                    let elsewhere = owner == n.name
                        || (st["reason"] == "OwnedElsewhere"
                            && st["message"] == format!("runs on node {owner}").as_str());
                    (st["node"] == owner.as_str() && elsewhere).then_some(())
                },
            );
        }
    }
    // Each node has made passes after the claims: still one start each.
    for n in &f.nodes {
        let pid = n.controller.as_ref().map(|c| c.pid()).unwrap_or(0);
        common::wait_passes(&n.status, pid, 3);
    }
    for s in SESSIONS {
        let starts = f.starts(s);
        assert_eq!(starts.len(), 1, "{s} started {starts:?}");
    }
    // Every owner key names a live member, and the session env carried it.
    let owners = f.cluster.keys("/t/owners/").expect("owner keys");
    assert_eq!(owners.len(), SESSIONS.len(), "{owners:?}");
    let members = f.cluster.keys("/t/members/").expect("member keys");
    assert_eq!(members.len(), 3, "{members:?}");
    for w in f.journal() {
        if w[0] == "start" {
            assert!(
                w.len() == 4 && w[3].parse::<i64>().is_ok_and(|t| t > 0),
                "{w:?}"
            );
        }
    }
    f.assert_no_overlap(&[]);
}

#[test]
fn a_dead_nodes_sessions_run_elsewhere_without_overlap() {
    if !have_etcd("a_dead_nodes_sessions_run_elsewhere_without_overlap") {
        return;
    }
    let tmp = tempfile::tempdir().expect("tmp");
    let mut f = started_fleet(tmp.path(), &[]);
    // The node running the most sessions dies whole.
    let victim = (0..3)
        .max_by_key(|i| {
            let n = &f.nodes[*i].name;
            SESSIONS
                .iter()
                .filter(|s| f.starts(s).last() == Some(n))
                .count()
        })
        .unwrap_or(0);
    let victim_name = f.nodes[victim].name.clone();
    let lost: Vec<&str> = SESSIONS
        .iter()
        .copied()
        .filter(|s| f.starts(s).last() == Some(&victim_name))
        .collect();
    assert!(!lost.is_empty());
    let killed = Instant::now();
    f.kill_node(victim);
    for s in &lost {
        wait(&format!("{s} to run on another node"), || {
            let starts = f.starts(s);
            (starts.len() == 2 && starts[1] != victim_name).then_some(())
        });
    }
    eprintln!(
        "failover of {} sessions after the node died: {:?} (lease TTL 3s)",
        lost.len(),
        killed.elapsed()
    );
    // Sessions on the survivors never moved.
    for s in SESSIONS.iter().filter(|s| !lost.contains(s)) {
        assert_eq!(f.starts(s).len(), 1, "{s} moved: {:?}", f.starts(s));
    }
    f.assert_no_overlap(&[&victim_name]);
}

#[test]
fn a_controller_restarted_within_the_lease_restarts_no_session() {
    if !have_etcd("a_controller_restarted_within_the_lease_restarts_no_session") {
        return;
    }
    let tmp = tempfile::tempdir().expect("tmp");
    let mut f = started_fleet(tmp.path(), &[]);
    let before = f.journal().len();
    // SIGKILL the controller alone (its keeper keeps the sessions), then
    // start it again at once.
    if let Some(c) = f.nodes[0].controller.as_mut() {
        c.kill();
    }
    f.start(0);
    let node = &f.nodes[0];
    let pid = node.controller.as_ref().map(|c| c.pid()).unwrap_or(0);
    wait("the restarted controller to resume its lease", || {
        node.controller
            .as_ref()
            .is_some_and(|c| c.log().contains("resumed the membership lease"))
            .then_some(())
    });
    common::wait_passes(&node.status, pid, 5);
    let journal = f.journal();
    assert_eq!(
        journal.len(),
        before,
        "no session may stop or start: {:?}",
        &journal[before..]
    );
}

#[test]
fn a_finished_never_session_is_not_run_again_after_its_node_dies() {
    if !have_etcd("a_finished_never_session_is_not_run_again_after_its_node_dies") {
        return;
    }
    let tmp = tempfile::tempdir().expect("tmp");
    let mut f = started_fleet(tmp.path(), &[("once", "once")]);
    let ran_on = wait("the Never session to run", || {
        f.starts("once").first().cloned()
    });
    let i = f
        .nodes
        .iter()
        .position(|n| n.name == ran_on)
        .expect("a node");
    wait("its outcome recorded in etcd", || {
        f.cluster.keys("/t/status/once").filter(|k| !k.is_empty())
    });
    f.kill_node(i);
    wait("the dead node's member key to expire", || {
        f.cluster
            .keys(&format!("/t/members/{ran_on}"))
            .filter(|k| k.is_empty())
    });
    // New sessions, one placed on each survivor: the rounds that claim them
    // see the dead node gone, and would claim `once` too if it were not
    // recorded as finished.
    let survivors: std::collections::BTreeSet<String> = f
        .nodes
        .iter()
        .filter(|n| n.name != ran_on)
        .map(|n| n.name.clone())
        .collect();
    let mut placed = std::collections::BTreeMap::new();
    for k in 0..1000 {
        let name = format!("late-{k}");
        if let Some(n) = sessionlet::core::placement::pick(&name, &survivors) {
            placed.entry(n.to_string()).or_insert(name);
        }
        if placed.len() == survivors.len() {
            break;
        }
    }
    for name in placed.values() {
        f.add(name, "always");
    }
    for (node, name) in &placed {
        wait(&format!("{name} to start on {node}"), || {
            (f.starts(name).first() == Some(node)).then_some(())
        });
    }
    assert_eq!(
        f.starts("once"),
        std::slice::from_ref(&ran_on),
        "a finished Never session ran again"
    );
    // The outcome holds for the spec it finished under: a changed spec runs
    // again, once, as on a single node.
    let (_, text) = f
        .manifests
        .iter()
        .find(|(n, _)| n == "once")
        .cloned()
        .expect("the manifest of once");
    let changed = text.replace(
        "restartPolicy: Never",
        "restartPolicy: Never\n  terminationGracePeriod: 7s",
    );
    assert_ne!(changed, text);
    for n in &f.nodes {
        common::write_file(&n.dir.join("once.yaml"), &changed);
    }
    let again = wait("the changed Never session to run again", || {
        f.starts("once").get(1).cloned()
    });
    assert!(survivors.contains(&again), "ran on {again}");
    wait("its new outcome recorded in etcd", || {
        f.cluster
            .etcdctl(&["get", "/t/status/once", "--print-value-only"])
            .filter(|v| v.contains(&again))
    });
    assert_eq!(f.starts("once").len(), 2, "{:?}", f.journal());
    f.assert_no_overlap(&[&ran_on]);
}

#[test]
fn a_stopped_controllers_keeper_fences_before_another_node_claims() {
    if !have_etcd("a_stopped_controllers_keeper_fences_before_another_node_claims") {
        return;
    }
    let tmp = tempfile::tempdir().expect("tmp");
    let f = started_fleet(tmp.path(), &[]);
    let victim = (0..3)
        .max_by_key(|i| {
            let n = &f.nodes[*i].name;
            SESSIONS
                .iter()
                .filter(|s| f.starts(s).last() == Some(n))
                .count()
        })
        .unwrap_or(0);
    let victim_name = f.nodes[victim].name.clone();
    let lost: Vec<&str> = SESSIONS
        .iter()
        .copied()
        .filter(|s| f.starts(s).last() == Some(&victim_name))
        .collect();
    assert!(!lost.is_empty());
    let controller = f.nodes[victim].controller.as_ref().expect("running");
    controller.signal(nix::sys::signal::Signal::SIGSTOP);
    let stopped = Instant::now();
    let fenced = f.nodes[victim].status.join(".sessionlet/fenced.json");
    wait("the stopped node's keeper to fence", || {
        std::fs::read_to_string(&fenced).ok()
    });
    let fenced_after = stopped.elapsed();
    for s in &lost {
        wait(&format!("{s} to run on another node"), || {
            let starts = f.starts(s);
            (starts.len() == 2 && starts[1] != victim_name).then_some(())
        });
    }
    eprintln!(
        "SIGSTOP: fenced after {fenced_after:?}, {} sessions elsewhere after {:?} (lease TTL 3s, margin 1s)",
        lost.len(),
        stopped.elapsed()
    );
    // The flock detector: no copy ever found another still holding its lock.
    f.assert_no_overlap(&[&victim_name]);

    // Back from SIGSTOP: the node rejoins and restarts nothing it lost.
    let starts_before: usize = SESSIONS.iter().map(|s| f.starts(s).len()).sum();
    let passes = common::controller_status_of(&f.nodes[victim].status)
        .and_then(|c| c["reconcileCount"].as_u64())
        .unwrap_or(0);
    controller.signal(nix::sys::signal::Signal::SIGCONT);
    wait("the node to rejoin with a new lease", || {
        (controller
            .log()
            .matches("fleet: new membership lease")
            .count()
            >= 2)
            .then_some(())
    });
    common::wait_passes(&f.nodes[victim].status, controller.pid(), passes + 3);
    let starts_after: usize = SESSIONS.iter().map(|s| f.starts(s).len()).sum();
    assert_eq!(starts_before, starts_after, "{:?}", f.journal());
    f.assert_no_overlap(&[&victim_name]);
}

#[test]
fn the_etcd_leader_killed_moves_no_session_and_the_fleet_keeps_working() {
    if !have_etcd("the_etcd_leader_killed_moves_no_session_and_the_fleet_keeps_working") {
        return;
    }
    let tmp = tempfile::tempdir().expect("tmp");
    // A lease of 5s (fencing 4s after a renewal): an election with the
    // cluster's 1s election timeout fits; a 3s lease would not (see README).
    let mut f = started_fleet_with(tmp.path(), &[], "5s", true);
    let leader = f.first_member.expect("the leader");
    let before = f.journal();
    f.cluster.members[leader].kill();
    let killed = Instant::now();
    // Three lease lengths with one member down and a new election: a
    // spurious failover would show as a start or a stop in the journal.
    wait(
        "three lease lengths to pass with one etcd member down",
        || {
            assert_eq!(f.journal(), before, "a session moved with the leader gone");
            (killed.elapsed() > std::time::Duration::from_secs(15)).then_some(())
        },
    );
    let mut hit = 0;
    for n in &f.nodes {
        let log = n.controller.as_ref().map(|c| c.log()).unwrap_or_default();
        assert!(!log.contains("fencing"), "{} fenced spuriously", n.name);
        hit += usize::from(log.contains("fleet: round failed") || log.contains("renewal failed"));
    }
    // The nodes were talking to the killed leader: they had to fail over.
    assert!(hit > 0, "no node noticed the leader's death");
    // The controllers keep working: a new session is claimed and runs.
    f.add("after-leader", "always");
    wait("a new session to run with one member down", || {
        (f.starts("after-leader").len() == 1).then_some(())
    });
    f.assert_no_overlap(&[]);
}

#[test]
fn a_node_cut_off_from_etcd_fences_before_another_claims_and_rejoins() {
    if !have_etcd("a_node_cut_off_from_etcd_fences_before_another_claims_and_rejoins") {
        return;
    }
    let tmp = tempfile::tempdir().expect("tmp");
    let all: Vec<(&str, &str)> = SESSIONS.iter().map(|s| (*s, "always")).collect();
    let mut f = Fleet::new(tmp.path(), 3, &all);
    // n1 reaches etcd through one member alone: stopping it cuts n1 off. A
    // follower, so that the others see no election (with a 3s lease an
    // election may outlast the fencing deadline: see the leader test).
    let leader = wait("the etcd leader", || f.cluster.leader());
    let cut_member = (leader + 1) % 3;
    f.only_member.insert(0, cut_member);
    for i in 0..3 {
        f.start(i);
    }
    for s in SESSIONS {
        wait(&format!("{s} to start on some node"), || {
            (!f.starts(s).is_empty()).then_some(())
        });
    }
    // A session placement gives to n1, so that n1 surely runs one.
    let members: std::collections::BTreeSet<String> =
        f.nodes.iter().map(|n| n.name.clone()).collect();
    let mine = (0..1000)
        .map(|k| format!("for-n1-{k}"))
        .find(|s| sessionlet::core::placement::pick(s, &members) == Some("n1"))
        .expect("a name placed on n1");
    f.add(&mine, "always");
    wait(&format!("{mine} to start on n1"), || {
        (f.starts(&mine).first().map(String::as_str) == Some("n1")).then_some(())
    });
    let mut names: Vec<String> = SESSIONS.iter().map(|s| s.to_string()).collect();
    names.push(mine.clone());
    let lost: Vec<String> = names
        .iter()
        .filter(|s| f.starts(s).last().map(String::as_str) == Some("n1"))
        .cloned()
        .collect();

    f.cluster.members[cut_member].kill();
    let cut = Instant::now();
    let fenced = f.nodes[0].status.join(".sessionlet/fenced.json");
    wait("the cut-off node's keeper to fence", || {
        std::fs::read_to_string(&fenced).ok()
    });
    let fenced_after = cut.elapsed();
    for s in &lost {
        wait(&format!("{s} to run on another node"), || {
            let starts = f.starts(s);
            (starts.len() == 2 && starts[1] != "n1").then_some(())
        });
    }
    eprintln!(
        "cut off: fenced after {fenced_after:?}, {} sessions elsewhere after {:?} (lease TTL 3s, margin 1s)",
        lost.len(),
        cut.elapsed()
    );
    f.assert_no_overlap(&["n1"]);

    // etcd back: n1 rejoins with a new lease and restarts nothing it lost.
    let starts_before: usize = names.iter().map(|s| f.starts(s).len()).sum();
    f.cluster.members[cut_member].restart();
    let controller = f.nodes[0].controller.as_ref().expect("running");
    let passes = common::controller_status_of(&f.nodes[0].status)
        .and_then(|c| c["reconcileCount"].as_u64())
        .unwrap_or(0);
    wait("the node to rejoin with a new lease", || {
        (controller
            .log()
            .matches("fleet: new membership lease")
            .count()
            >= 2)
            .then_some(())
    });
    common::wait_passes(&f.nodes[0].status, controller.pid(), passes + 3);
    let starts_after: usize = names.iter().map(|s| f.starts(s).len()).sum();
    assert_eq!(starts_before, starts_after, "{:?}", f.journal());
    f.assert_no_overlap(&["n1"]);
}

#[test]
fn a_node_restarted_without_a_coordinator_is_not_fenced() {
    if !have_etcd("a_node_restarted_without_a_coordinator_is_not_fenced") {
        return;
    }
    let tmp = tempfile::tempdir().expect("tmp");
    let all: Vec<(&str, &str)> = SESSIONS.iter().map(|s| (*s, "always")).collect();
    let mut f = Fleet::new(tmp.path(), 1, &all);
    f.start(0);
    for s in SESSIONS {
        wait(&format!("{s} to start"), || {
            (!f.starts(s).is_empty()).then_some(())
        });
    }
    let before = f.journal();
    // The coordinated controller dies; a plain one takes over the keeper,
    // which holds the last fencing deadline.
    if let Some(c) = f.nodes[0].controller.as_mut() {
        c.kill();
    }
    let node = &mut f.nodes[0];
    node.controller = Some(common::Controller::start_with_status_dir(
        &node.dir,
        Some(&node.status),
        &[],
    ));
    let restarted = Instant::now();
    let fenced = f.nodes[0].status.join(".sessionlet/fenced.json");
    wait("three lease lengths to pass", || {
        assert!(
            !fenced.exists(),
            "the keeper fenced a node that runs alone now"
        );
        (restarted.elapsed() > std::time::Duration::from_secs(9)).then_some(())
    });
    assert_eq!(f.journal(), before, "sessions were stopped or started");
}
