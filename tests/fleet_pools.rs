//! Pools across a fleet over a real three-member etcd cluster (feature
//! `etcd`): a pool's `maxConcurrent` and queue hold fleet-wide (the pool is
//! placed as one unit and its members follow it), a pool without a cap has
//! its replicas placed one by one, and a pool's home that dies hands the
//! pool, queue and all, to another node without breaking the cap.
#![cfg(feature = "etcd")]

mod common;
mod fleet_common;

use std::collections::{BTreeMap, BTreeSet};

use fleet_common::{have_etcd, wait, Fleet};

/// A job of pool `jobs`: journals `run NAME NODE`, works for `secs`
/// seconds, journals `end NAME NODE` and exits 0 (a SIGTERM ends it the
/// same way).
fn job(f: &Fleet, name: &str, secs: u32) -> String {
    let script = format!(
        "echo \"run {name} $SESSIONLET_NODE\" >> \"$JOURNAL\"; \
         trap 'echo \"end {name} $SESSIONLET_NODE\" >> \"$JOURNAL\"; exit 0' TERM; \
         sleep {secs} & wait; echo \"end {name} $SESSIONLET_NODE\" >> \"$JOURNAL\""
    );
    common::session(
        name,
        &format!(
            "command: [/bin/sh, -c, {}]\nrestartPolicy: Never\npool: jobs\nenv: {{JOURNAL: {}}}",
            serde_json::to_string(&script).expect("json"),
            f.journal.display()
        ),
    )
}

fn pool(name: &str, spec: &str) -> String {
    let body: String = spec.lines().map(|l| format!("  {l}\n")).collect();
    format!(
        "apiVersion: sessionlet.dev/v1alpha1\nkind: Pool\nmetadata:\n  name: {name}\nspec:\n{body}"
    )
}

/// Writes `file` with `text` into every node's checkout (as a Git pull would).
fn everywhere(f: &Fleet, file: &str, text: &str) {
    for n in &f.nodes {
        common::write_file(&n.dir.join(file), text);
    }
}

/// The journal's `run`/`end` lines and the test's `dead NODE` marks, in
/// order: the most jobs running at once fleet-wide, the nodes each job ran
/// on, and the jobs that ended.
struct Runs {
    most_at_once: usize,
    nodes: BTreeMap<String, Vec<String>>,
    ended: BTreeSet<String>,
}

fn runs(f: &Fleet) -> Runs {
    let mut running: BTreeMap<String, String> = BTreeMap::new();
    let mut out = Runs {
        most_at_once: 0,
        nodes: BTreeMap::new(),
        ended: BTreeSet::new(),
    };
    for w in f.journal() {
        match (w.first().map(String::as_str), w.get(1), w.get(2)) {
            (Some("run"), Some(job), Some(node)) => {
                running.insert(job.clone(), node.clone());
                out.nodes.entry(job.clone()).or_default().push(node.clone());
                out.most_at_once = out.most_at_once.max(running.len());
            }
            (Some("end"), Some(job), _) => {
                running.remove(job);
                out.ended.insert(job.clone());
            }
            // A node killed whole: its jobs died with it (no `end` line).
            (Some("dead"), Some(node), _) => running.retain(|_, n| n != node),
            _ => {}
        }
    }
    out
}

fn start_all(f: &mut Fleet) {
    for i in 0..f.nodes.len() {
        f.start(i);
    }
}

fn names(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i}")).collect()
}

/// Three started nodes over pool `jobs` (`maxConcurrent: cap`) and `n`
/// jobs of it that work `secs` seconds each.
fn started_jobs(root: &std::path::Path, cap: u32, n: usize, secs: u32) -> (Fleet, Vec<String>) {
    let mut f = Fleet::new(root, 3, &[]);
    let spec = format!("maxConcurrent: {cap}\nmaxQueue: 20");
    everywhere(&f, "jobs.yaml", &pool("jobs", &spec));
    let jobs = names("job", n);
    for j in &jobs {
        everywhere(&f, &format!("{j}.yaml"), &job(&f, j, secs));
    }
    start_all(&mut f);
    (f, jobs)
}

#[test]
fn a_pools_max_concurrent_and_queue_hold_across_the_fleet() {
    if !have_etcd("a_pools_max_concurrent_and_queue_hold_across_the_fleet") {
        return;
    }
    let tmp = tempfile::tempdir().expect("tmp");
    let (f, jobs) = started_jobs(tmp.path(), 2, 9, 1);
    let r = wait("every job to end", || {
        let r = runs(&f);
        (r.ended.len() == jobs.len()).then_some(r)
    });
    // Placed one by one, nine jobs over three nodes would run up to six at
    // once (two per node); as one unit, never more than the pool's cap.
    assert!(
        r.most_at_once <= 2,
        "{} jobs ran at once fleet-wide (maxConcurrent 2): {:?}",
        r.most_at_once,
        f.journal()
    );
    let homes: BTreeSet<&String> = r.nodes.values().flatten().collect();
    assert_eq!(
        homes.len(),
        1,
        "the pool's jobs ran on one node: {:?}",
        r.nodes
    );
    for j in &jobs {
        assert_eq!(r.nodes[j].len(), 1, "{j} ran once: {:?}", r.nodes);
    }
    // The others say where the jobs run instead of looking stuck.
    let home = homes.iter().next().map(|s| s.as_str()).unwrap_or_default();
    let other = f
        .nodes
        .iter()
        .find(|n| n.name != home)
        .expect("another node");
    let s = wait("another node's status of job-0 to name its owner", || {
        common::status(&other.status, "job-0").filter(|s| s["status"]["node"] == home)
    });
    assert_eq!(s["status"]["node"], home, "{s:#?}");
}

#[test]
fn a_pool_without_a_cap_has_its_replicas_placed_one_by_one() {
    if !have_etcd("a_pool_without_a_cap_has_its_replicas_placed_one_by_one") {
        return;
    }
    let tmp = tempfile::tempdir().expect("tmp");
    let mut f = Fleet::new(tmp.path(), 3, &[]);
    let work = tmp.path().join("work.sh");
    let web = format!(
        "replicas: 6\ntemplate:\n  spec:\n    command: [/bin/sh, -c, {}]\n    env: {{JOURNAL: {}, LOCKS: {}}}",
        serde_json::to_string(&format!(
            "exec /bin/sh {} \"$SESSIONLET_SESSION\" always",
            work.display()
        ))
        .expect("json"),
        f.journal.display(),
        tmp.path().join("locks").display()
    );
    everywhere(&f, "web.yaml", &pool("web", &web));
    start_all(&mut f);
    let placed = wait("six replicas to start", || {
        let nodes: BTreeMap<String, String> = f
            .journal()
            .into_iter()
            .filter(|w| w.len() >= 3 && w[0] == "start")
            .map(|w| (w[1].clone(), w[2].clone()))
            .collect();
        (nodes.len() == 6).then_some(nodes)
    });
    let used: BTreeSet<&String> = placed.values().collect();
    assert!(used.len() > 1, "replicas spread over the nodes: {placed:?}");
    f.assert_no_overlap(&[]);
}

#[test]
fn a_pools_home_node_dying_moves_the_pool_and_keeps_the_cap() {
    if !have_etcd("a_pools_home_node_dying_moves_the_pool_and_keeps_the_cap") {
        return;
    }
    let tmp = tempfile::tempdir().expect("tmp");
    // Long enough that the home dies with one running and the rest queued.
    let (mut f, jobs) = started_jobs(tmp.path(), 1, 4, 600);
    let home = wait("the first job to run", || {
        runs(&f)
            .nodes
            .into_values()
            .next()
            .and_then(|n| n.first().cloned())
    });
    let i = f
        .nodes
        .iter()
        .position(|n| n.name == home)
        .expect("the home is a node");
    f.kill_node(i);
    std::fs::OpenOptions::new()
        .append(true)
        .open(&f.journal)
        .and_then(|mut j| std::io::Write::write_all(&mut j, format!("dead {home}\n").as_bytes()))
        .expect("journal");
    let (again, new_home) = wait("a job to run on another node", || {
        runs(&f).nodes.into_iter().find_map(|(j, n)| {
            let last = n.last()?.clone();
            (last != home).then_some((j, last))
        })
    });
    let r = runs(&f);
    assert!(
        r.most_at_once <= 1,
        "{} jobs ran at once (maxConcurrent 1): {:?}",
        r.most_at_once,
        f.journal()
    );
    assert_ne!(new_home, home);
    // Every other job waits in the new home's queue, fleet-wide.
    let others: Vec<&String> = jobs.iter().filter(|j| **j != again).collect();
    let new = f
        .nodes
        .iter()
        .find(|n| n.name == new_home)
        .expect("the new home");
    for j in others {
        wait(&format!("{j} queued on {new_home}"), || {
            common::status(&new.status, j).filter(|s| s["status"]["phase"] == "Queued")
        });
    }
    assert_eq!(runs(&f).most_at_once, 1, "{:?}", f.journal());
}
