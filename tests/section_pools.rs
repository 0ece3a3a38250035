//! Pools (issue 4): scaling by editing `replicas`, rolling template changes,
//! the concurrency cap with its priority queue, pool status, `get`/`describe`.
//! Every test runs the real binary on a temporary directory and waits on
//! status files (and /proc) with deadlines.

mod common;
use common::*;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use chrono::{DateTime, Utc};
use serde_json::Value;

// ---------------------------------------------------------------------------
// Manifests

/// Indents every line of `text` by `n` spaces.
fn indent(text: &str, n: usize) -> String {
    let pad = " ".repeat(n);
    text.lines().map(|l| format!("{pad}{l}\n")).collect()
}

/// A Pool manifest with the given spec body (YAML, as under `spec:`).
fn pool(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: sessionlet.dev/v1alpha1\nkind: Pool\nmetadata:\n  name: {name}\nspec:\n{}",
        indent(spec, 2)
    )
}

/// A Pool of `replicas` copies of `template` (a Session spec), with `extra` pool fields.
fn pool_of(name: &str, replicas: u32, extra: &str, template: &str) -> String {
    let mut spec = format!("replicas: {replicas}\n");
    if !extra.is_empty() {
        spec.push_str(extra.trim_end());
        spec.push('\n');
    }
    spec.push_str("template:\n  spec:\n");
    spec.push_str(&indent(template, 4));
    pool(name, &spec)
}

/// A unique argv word for this test's replica processes, so /proc can tell
/// them apart from everything else on the machine.
fn marker(tmp: &tempfile::TempDir, version: &str) -> String {
    let tag: String = tmp
        .path()
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect();
    format!("pooltest-{tag}-{version}")
}

/// A long-running replica that exits promptly (code 0) on SIGTERM. `marker`
/// becomes its `$0`, `version` its VERSION variable.
fn server_template(marker: &str, version: &str) -> String {
    format!(
        "command:\n\
         - /bin/sh\n\
         - -c\n\
         - \"trap 'exit 0' TERM; while :; do sleep 600 & wait $!; done\"\n\
         - {marker}\n\
         env:\n  VERSION: {version}\n\
         restartPolicy: Always\n\
         terminationGracePeriod: 20s\n"
    )
}

/// A Session in `pool` that runs until the file `gate` exists, then exits 0.
fn gated(name: &str, pool: &str, priority: &str, gate: &Path) -> String {
    session(
        name,
        &format!(
            "command: [/bin/sh, -c, 'while [ ! -e \"$GATE\" ]; do sleep 0.1; done']\n\
             env: {{GATE: \"{}\"}}\n\
             pool: {pool}\n\
             priority: {priority}",
            gate.display()
        ),
    )
}

/// Opens a gate made with [`gated`].
fn open(gate: &Path) {
    std::fs::write(gate, "").expect("open the gate");
}

/// A folder for gates and other files the sessions write, outside the watched directory.
fn scratch(tmp: &tempfile::TempDir) -> PathBuf {
    let p = tmp.path().join("scratch");
    std::fs::create_dir_all(&p).expect("mkdir scratch");
    p
}

// ---------------------------------------------------------------------------
// Status and processes

/// The PoolStatus document of `STEM.status.yaml`.
fn pool_status(dir: &Path, stem: &str) -> Option<Value> {
    status_docs(&dir.join(format!("{stem}.status.yaml")))?
        .into_iter()
        .find(|d| d["kind"] == "PoolStatus")
}

/// Waits until the PoolStatus of `STEM.status.yaml` satisfies `pred`.
fn wait_pool(dir: &Path, stem: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    wait_for(&format!("pool {stem}: {what}"), || {
        pool_status(dir, stem).filter(|s| pred(s))
    })
}

/// The replicas' own SessionStatus documents in `STEM.status.yaml`, by name.
fn replica_docs(dir: &Path, stem: &str) -> BTreeMap<String, Value> {
    status_docs(&dir.join(format!("{stem}.status.yaml")))
        .unwrap_or_default()
        .into_iter()
        .filter(|d| d["kind"] == "SessionStatus")
        .filter_map(|d| Some((d["metadata"]["name"].as_str()?.to_string(), d)))
        .collect()
}

/// name → pid of the replicas' own status documents (Running ones).
fn replica_pids(dir: &Path, stem: &str) -> BTreeMap<String, u32> {
    replica_docs(dir, stem)
        .into_iter()
        .filter(|(_, d)| d["status"]["phase"] == "Running")
        .filter_map(|(n, d)| Some((n, d["status"]["pid"].as_u64()? as u32)))
        .collect()
}

/// `status.members`.
fn members(s: &Value) -> Vec<Value> {
    s["status"]["members"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Member names, in the status's order.
fn member_names(s: &Value) -> Vec<String> {
    members(s)
        .iter()
        .map(|m| m["name"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// name → pid of the members whose phase is Running.
fn running(s: &Value) -> BTreeMap<String, u32> {
    members(s)
        .iter()
        .filter(|m| m["phase"] == "Running")
        .filter_map(|m| Some((m["name"].as_str()?.to_string(), m["pid"].as_u64()? as u32)))
        .collect()
}

/// The member called `name`.
fn member(s: &Value, name: &str) -> Value {
    members(s)
        .into_iter()
        .find(|m| m["name"] == name)
        .unwrap_or_else(|| panic!("no member {name} in {s:#?}"))
}

/// Live (not zombie) processes with `marker` as one of their argv words, sorted.
fn marked(marker: &str) -> Vec<u32> {
    let mut pids = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        if cmdline.split(|b| *b == 0).any(|w| w == marker.as_bytes()) && alive(pid) {
            pids.push(pid);
        }
    }
    pids.sort_unstable();
    pids
}

fn sorted(pids: impl IntoIterator<Item = u32>) -> Vec<u32> {
    let mut v: Vec<u32> = pids.into_iter().collect();
    v.sort_unstable();
    v
}

fn time(v: &Value) -> DateTime<Utc> {
    v.as_str()
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("not a timestamp: {v:?}"))
}

/// Waits until the controller knows exactly `n` sessions (replicas included):
/// stopped ones have been seen to exit and are forgotten.
fn wait_known_sessions(dir: &Path, n: u64) {
    let path = dir.join(".sessionlet").join("controller.status.yaml");
    wait_for(&format!("the controller to know {n} sessions"), || {
        let doc = status_docs(&path)?.into_iter().next()?;
        (doc["totalSessions"].as_u64() == Some(n)).then_some(())
    });
}

/// Runs a `sessionlet` subcommand and returns its stdout.
fn cli(args: &[&str], dir: &Path) -> String {
    let out = Command::new(bin())
        .args(args)
        .arg("--dir")
        .arg(dir)
        .output()
        .expect("run sessionlet");
    assert!(
        out.status.success(),
        "sessionlet {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

// ---------------------------------------------------------------------------
// Replicas

#[test]
fn scaling_3_to_1_to_2_keeps_the_lowest_ordinals_and_starts_only_the_missing_one() {
    let (tmp, dir) = sessions_dir();
    let mark = marker(&tmp, "v1");
    let manifest = |n: u32| pool_of("web", n, "", &server_template(&mark, "v1"));
    write_file(&dir.join("web.yaml"), &manifest(3));
    let _c = Controller::start(&dir, &[]);

    let s = wait_pool(&dir, "web", "3 replicas running", |s| {
        running(s).len() == 3 && s["status"]["readyReplicas"] == 3
    });
    let three = running(&s);
    assert_eq!(member_names(&s), ["web-0", "web-1", "web-2"], "{s:#?}");
    assert_eq!(s["status"]["replicas"], 3);
    let (p0, p1, p2) = (three["web-0"], three["web-1"], three["web-2"]);
    assert_eq!(
        wait_for("the three replica processes", || {
            let m = marked(&mark);
            (m.len() == 3).then_some(m)
        }),
        sorted([p0, p1, p2])
    );

    // 3 → 1: the highest ordinals go, web-0 is untouched.
    write_file(&dir.join("web.yaml"), &manifest(1));
    let s = wait_pool(&dir, "web", "only web-0 left", |s| {
        s["status"]["replicas"] == 1 && member_names(s) == ["web-0"]
    });
    wait_for("web-1 and web-2 to be gone", || {
        (!alive(p1) && !alive(p2)).then_some(())
    });
    assert_eq!(running(&s).get("web-0"), Some(&p0), "web-0 kept: {s:#?}");
    assert_eq!(member(&s, "web-0")["restarts"], 0);
    assert!(alive(p0), "web-0 must not be stopped by a scale down");
    assert_eq!(marked(&mark), [p0], "exactly one replica process is left");
    wait_known_sessions(&dir, 1);
    assert_eq!(
        replica_pids(&dir, "web"),
        BTreeMap::from([("web-0".to_string(), p0)]),
        "the replicas' own statuses: only web-0's is left"
    );

    // 1 → 2: only web-1 starts, web-0 keeps its process.
    write_file(&dir.join("web.yaml"), &manifest(2));
    let s = wait_pool(&dir, "web", "web-0 and web-1 running", |s| {
        s["status"]["replicas"] == 2 && running(s).len() == 2
    });
    assert_eq!(member_names(&s), ["web-0", "web-1"], "{s:#?}");
    let two = running(&s);
    assert_eq!(two["web-0"], p0, "web-0 kept its pid: {s:#?}");
    let new1 = two["web-1"];
    assert_ne!(new1, p1, "web-1 is a new process");
    assert!(alive(p0) && alive(new1));
    assert!(!alive(p1) && !alive(p2));
    assert_eq!(marked(&mark), sorted([p0, new1]));
    assert_eq!(s["status"]["readyReplicas"], 2);
    let own = replica_docs(&dir, "web");
    assert_eq!(
        replica_pids(&dir, "web"),
        BTreeMap::from([("web-0".to_string(), p0), ("web-1".to_string(), new1)]),
        "the replicas' own statuses: {own:#?}"
    );
    assert!(own.values().all(|d| d["metadata"]["pool"] == "web"));
    assert_eq!(
        s["status"]["observedGeneration"], 3,
        "each edit of replicas is a new pool generation"
    );
}

#[test]
fn scaling_down_stops_the_replica_with_the_templates_stop_signal() {
    let (tmp, dir) = sessions_dir();
    let mark = marker(&tmp, "v1");
    let stops = scratch(&tmp).join("stops.txt");
    // Ignores SIGTERM; SIGINT (the template's stopSignal) makes it record its pid and exit.
    let template = format!(
        "command:\n\
         - /bin/sh\n\
         - -c\n\
         - |\n\
         \x20 trap '' TERM\n\
         \x20 trap 'echo \"$$ INT\" >> \"$STOPS\"; exit 0' INT\n\
         \x20 while :; do sleep 1 & wait $!; done\n\
         - {mark}\n\
         env:\n  STOPS: \"{}\"\n\
         stopSignal: SIGINT\n\
         terminationGracePeriod: 30s\n\
         restartPolicy: Always\n",
        stops.display()
    );
    write_file(&dir.join("web.yaml"), &pool_of("web", 2, "", &template));
    let _c = Controller::start(&dir, &[]);
    let s = wait_pool(&dir, "web", "2 replicas running", |s| running(s).len() == 2);
    let pids = running(&s);

    write_file(&dir.join("web.yaml"), &pool_of("web", 1, "", &template));
    let s = wait_pool(&dir, "web", "web-1 stopped", |s| {
        member_names(s) == ["web-0"]
    });
    wait_for("web-1's process to end", || {
        (!alive(pids["web-1"])).then_some(())
    });
    let recorded = std::fs::read_to_string(&stops).unwrap_or_default();
    assert_eq!(
        recorded.lines().collect::<Vec<_>>(),
        [format!("{} INT", pids["web-1"])],
        "scale down must stop web-1 with the template's stopSignal (SIGINT) and \
         leave web-0 alone; recorded stops: {recorded:?}"
    );
    assert_eq!(running(&s).get("web-0"), Some(&pids["web-0"]));
}

#[test]
fn replicas_follow_the_templates_restart_policy_and_max_retries() {
    let (_tmp, dir) = sessions_dir();
    let failing =
        "command: [/bin/sh, -c, 'exit 3']\nbackoff: {initialDelay: 200ms, multiplier: 1.0}";
    write_file(
        &dir.join("crashy.yaml"),
        &pool_of(
            "crashy",
            1,
            "",
            &format!("{failing}\nrestartPolicy: OnFailure\nmaxRetries: 2"),
        ),
    );
    write_file(
        &dir.join("once.yaml"),
        &pool_of("once", 1, "", &format!("{failing}\nrestartPolicy: Never")),
    );
    let _c = Controller::start(&dir, &[]);

    let s = wait_pool(&dir, "crashy", "a restart", |s| {
        members(s)
            .first()
            .is_some_and(|m| m["restarts"].as_u64() >= Some(1))
    });
    assert_eq!(member(&s, "crashy-0")["lastExit"]["exitCode"], 3, "{s:#?}");
    let s = wait_pool(&dir, "crashy", "crashy-0 Failed", |s| {
        member(s, "crashy-0")["phase"] == "Failed"
    });
    let m = member(&s, "crashy-0");
    assert_eq!(m["restarts"], 2, "maxRetries 2 allows two restarts: {s:#?}");
    assert_eq!(m["lastExit"]["exitCode"], 3);
    assert_eq!(s["status"]["metrics"]["failed"], 3, "{s:#?}");

    let s = wait_pool(&dir, "once", "once-0 Failed", |s| {
        member(s, "once-0")["phase"] == "Failed"
    });
    let m = member(&s, "once-0");
    assert_eq!(m["restarts"], 0, "restartPolicy Never: no restart: {s:#?}");
    assert_eq!(m["lastExit"]["exitCode"], 3);
    assert_eq!(s["status"]["readyReplicas"], 0);
}

#[test]
fn a_template_change_rolls_the_replicas_one_at_a_time_and_never_takes_them_all_down() {
    let (tmp, dir) = sessions_dir();
    let (old_mark, new_mark) = (marker(&tmp, "v1"), marker(&tmp, "v2"));
    write_file(
        &dir.join("web.yaml"),
        &pool_of("web", 3, "", &server_template(&old_mark, "v1")),
    );
    let _c = Controller::start(&dir, &[]);
    let s = wait_pool(&dir, "web", "3 replicas ready", |s| {
        running(s).len() == 3 && s["status"]["readyReplicas"] == 3
    });
    let old = running(&s);
    assert_eq!(marked(&old_mark), sorted(old.values().copied()));

    write_file(
        &dir.join("web.yaml"),
        &pool_of("web", 3, "", &server_template(&new_mark, "v2")),
    );
    let mut samples = 0u32;
    let done = wait_for("all three replicas on the new template", || {
        // Processes first, old before new: both counts only grow during the roll,
        // so reading them in this order never overstates how many are down.
        let old_alive = old.values().filter(|p| alive(**p)).count();
        let new_alive = marked(&new_mark).len();
        let s = pool_status(&dir, "web")?;
        samples += 1;
        assert!(
            old_alive + new_alive >= 2,
            "fewer than 2 replica processes alive ({old_alive} old, {new_alive} new) in sample {samples}"
        );
        let down = old.len() - old_alive;
        assert!(
            down <= new_alive + 1,
            "{down} old replicas ended but only {new_alive} replacements run: \
             more than one replica was stopped at once (sample {samples})"
        );
        assert!(
            running(&s).len() >= 2,
            "fewer than 2 members Running in sample {samples}: {s:#?}"
        );
        let now = running(&s);
        let all_new = now.len() == 3
            && now.values().all(|p| !old.values().any(|o| o == p))
            && s["status"]["readyReplicas"] == 3;
        all_new.then_some(s)
    });
    assert!(samples > 0);
    let new = running(&done);
    assert_eq!(member_names(&done), ["web-0", "web-1", "web-2"]);
    for p in old.values() {
        assert!(!alive(*p), "old replica {p} still alive");
    }
    assert!(marked(&old_mark).is_empty());
    assert_eq!(marked(&new_mark), sorted(new.values().copied()));
    // Each old replica was stopped for the spec change only after its
    // predecessor's replacement had started.
    for m in members(&done) {
        assert_eq!(m["lastExit"]["reason"], "SpecChanged", "{done:#?}");
    }
    for i in 1..3 {
        let prev = member(&done, &format!("web-{}", i - 1));
        let this = member(&done, &format!("web-{i}"));
        assert!(
            time(&this["lastExit"]["finishedAt"]) >= time(&prev["startedAt"]),
            "the old web-{i} ended before the new web-{} started: {done:#?}",
            i - 1
        );
    }
}

// ---------------------------------------------------------------------------
// Capacity and queue

#[test]
fn a_cap_of_1_starts_queued_sessions_in_priority_order() {
    let (tmp, dir) = sessions_dir();
    let scratch = scratch(&tmp);
    let order = scratch.join("order.txt");
    let gate = scratch.join("blocker");
    write_file(&dir.join("web.yaml"), &pool("web", "maxConcurrent: 1"));
    write_file(
        &dir.join("blocker.yaml"),
        &gated("blocker", "web", "medium", &gate),
    );
    let _c = Controller::start(&dir, &[]);
    wait_phase(&dir, "blocker", "Running");

    // Declared in this order, each seen before the next.
    for (name, priority) in [
        ("low", "low"),
        ("crit", "critical"),
        ("med", "medium"),
        ("high", "high"),
    ] {
        write_file(
            &dir.join(format!("{name}.yaml")),
            &session(
                name,
                &format!(
                    "command: [/bin/sh, -c, 'echo \"$NAME\" >> \"$ORDER\"; sleep 1']\n\
                     env: {{NAME: {name}, ORDER: \"{}\"}}\n\
                     pool: web\n\
                     priority: {priority}",
                    order.display()
                ),
            ),
        );
        wait_phase(&dir, name, "Queued");
    }
    let s = wait_pool(&dir, "web", "4 queued", |s| s["status"]["queued"] == 4);
    let queue: Vec<(String, String, u64)> = s["status"]["queue"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| {
            (
                q["name"].as_str().unwrap().to_string(),
                q["priority"].as_str().unwrap().to_string(),
                q["position"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        queue,
        [
            ("crit".to_string(), "critical".to_string(), 1),
            ("high".into(), "high".into(), 2),
            ("med".into(), "medium".into(), 3),
            ("low".into(), "low".into(), 4),
        ],
        "{s:#?}"
    );
    assert!(
        !order.exists(),
        "nothing ran while the blocker held the slot"
    );

    open(&gate);
    for name in ["crit", "high", "med", "low"] {
        wait_phase(&dir, name, "Completed");
    }
    let ran = std::fs::read_to_string(&order).unwrap();
    assert_eq!(
        ran.lines().collect::<Vec<_>>(),
        ["crit", "high", "med", "low"],
        "run order"
    );
    let s = wait_pool(&dir, "web", "5 completed", |s| {
        s["status"]["metrics"]["completed"] == 5
    });
    assert_eq!(s["status"]["queued"], 0);
}

#[test]
fn queued_sessions_show_their_position_and_once_a_run_finished_an_estimated_wait() {
    let (tmp, dir) = sessions_dir();
    let scratch = scratch(&tmp);
    let gates: BTreeMap<&str, PathBuf> = ["a", "q1", "q2"]
        .into_iter()
        .map(|n| (n, scratch.join(n)))
        .collect();
    write_file(&dir.join("web.yaml"), &pool("web", "maxConcurrent: 1"));
    write_file(
        &dir.join("a.yaml"),
        &gated("a", "web", "medium", &gates["a"]),
    );
    let _c = Controller::start(&dir, &[]);
    wait_phase(&dir, "a", "Running");
    write_file(
        &dir.join("q1.yaml"),
        &gated("q1", "web", "medium", &gates["q1"]),
    );
    wait_phase(&dir, "q1", "Queued");
    write_file(
        &dir.join("q2.yaml"),
        &gated("q2", "web", "medium", &gates["q2"]),
    );

    let q2 = wait_phase(&dir, "q2", "Queued");
    let q1 = wait_phase(&dir, "q1", "Queued");
    for (s, position) in [(&q1, 1), (&q2, 2)] {
        assert_eq!(s["status"]["reason"], "PoolFull", "{s:#?}");
        assert_eq!(s["status"]["queue"]["pool"], "web", "{s:#?}");
        assert_eq!(s["status"]["queue"]["position"], position, "{s:#?}");
        assert!(s["status"]["queue"]["queuedAt"].is_string(), "{s:#?}");
        assert!(
            s["status"]["queue"]["estimatedWaitSeconds"].is_null(),
            "no estimate before any run finished: {s:#?}"
        );
    }

    // a finishes: q1 takes the slot, q2 moves up and gets an estimate.
    open(&gates["a"]);
    wait_phase(&dir, "a", "Completed");
    wait_phase(&dir, "q1", "Running");
    let q2 = wait_status(&dir, "q2", "position 1 with an estimate", |s| {
        s["status"]["queue"]["position"] == 1
            && s["status"]["queue"]["estimatedWaitSeconds"].is_u64()
    });
    assert_eq!(q2["status"]["phase"], "Queued");
    let p = wait_pool(&dir, "web", "q2 queued with an estimate", |s| {
        s["status"]["queue"][0]["estimatedWaitSeconds"].is_u64()
    });
    assert_eq!(p["status"]["queue"][0]["name"], "q2", "{p:#?}");
    assert_eq!(p["status"]["queue"][0]["position"], 1);
    assert_eq!(p["status"]["queued"], 1);
    assert_eq!(p["status"]["running"], 1);
    assert_eq!(p["status"]["capacity"], 1);
    assert!(
        p["status"]["metrics"]["averageRunSeconds"].is_number(),
        "{p:#?}"
    );
}

#[test]
fn past_max_queue_the_newest_session_fails_with_queue_full() {
    let (tmp, dir) = sessions_dir();
    let scratch = scratch(&tmp);
    write_file(
        &dir.join("web.yaml"),
        &pool("web", "maxConcurrent: 1\nmaxQueue: 2"),
    );
    write_file(
        &dir.join("blocker.yaml"),
        &gated("blocker", "web", "medium", &scratch.join("blocker")),
    );
    let _c = Controller::start(&dir, &[]);
    wait_phase(&dir, "blocker", "Running");
    for name in ["w1", "w2"] {
        write_file(
            &dir.join(format!("{name}.yaml")),
            &gated(name, "web", "medium", &scratch.join(name)),
        );
        wait_phase(&dir, name, "Queued");
    }
    // The third to wait is the newest, even with a higher priority.
    write_file(
        &dir.join("w3.yaml"),
        &gated("w3", "web", "high", &scratch.join("w3")),
    );
    let s = wait_phase(&dir, "w3", "Failed");
    assert_eq!(s["status"]["reason"], "QueueFull", "{s:#?}");
    let message = s["status"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("maxQueue 2"),
        "the message names the limit: {message:?}"
    );
    for (name, position) in [("w1", 1), ("w2", 2)] {
        let s = status(&dir, name).unwrap();
        assert_eq!(s["status"]["phase"], "Queued", "{s:#?}");
        assert_eq!(s["status"]["queue"]["position"], position, "{s:#?}");
    }
    let p = wait_pool(&dir, "web", "2 queued", |s| s["status"]["queued"] == 2);
    assert_eq!(p["status"]["running"], 1);
}

#[test]
fn a_session_naming_a_missing_pool_waits_with_pool_not_found_and_starts_when_it_appears() {
    let (tmp, dir) = sessions_dir();
    let gate = scratch(&tmp).join("s");
    write_file(&dir.join("s.yaml"), &gated("s", "web", "medium", &gate));
    let _c = Controller::start(&dir, &[]);
    let s = wait_status(&dir, "s", "Pending PoolNotFound", |s| {
        s["status"]["phase"] == "Pending" && s["status"]["reason"] == "PoolNotFound"
    });
    assert!(
        s["status"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("web")),
        "the message names the pool: {s:#?}"
    );
    assert!(s["status"]["pid"].is_null());

    write_file(&dir.join("web.yaml"), &pool("web", "maxConcurrent: 2"));
    let s = wait_phase(&dir, "s", "Running");
    let pid = s["status"]["pid"].as_u64().unwrap() as u32;
    assert!(alive(pid));
    let p = wait_pool(&dir, "web", "s running", |s| s["status"]["running"] == 1);
    assert_eq!(p["status"]["queued"], 0);
}

#[test]
fn editing_max_concurrent_applies_at_once_raising_starts_queued_lowering_kills_nothing() {
    let (tmp, dir) = sessions_dir();
    let scratch = scratch(&tmp);
    let gate = |n: &str| scratch.join(n);
    let pid_of = |n: &str| {
        let s = status(&dir, n).unwrap();
        assert_eq!(s["status"]["phase"], "Running", "{s:#?}");
        s["status"]["pid"].as_u64().unwrap() as u32
    };
    write_file(&dir.join("web.yaml"), &pool("web", "maxConcurrent: 1"));
    write_file(
        &dir.join("a.yaml"),
        &gated("a", "web", "medium", &gate("a")),
    );
    let _c = Controller::start(&dir, &[]);
    wait_phase(&dir, "a", "Running");
    for n in ["b", "c"] {
        write_file(
            &dir.join(format!("{n}.yaml")),
            &gated(n, "web", "medium", &gate(n)),
        );
        wait_phase(&dir, n, "Queued");
    }
    let a = pid_of("a");

    // Raised: the queue starts at once.
    write_file(&dir.join("web.yaml"), &pool("web", "maxConcurrent: 3"));
    wait_phase(&dir, "b", "Running");
    wait_phase(&dir, "c", "Running");
    assert_eq!(pid_of("a"), a, "a is untouched");
    let p = wait_pool(&dir, "web", "3 running", |s| s["status"]["running"] == 3);
    assert_eq!(p["status"]["capacity"], 3);
    let pids: BTreeMap<&str, u32> = ["a", "b", "c"]
        .into_iter()
        .map(|n| (n, pid_of(n)))
        .collect();

    // Lowered to 1 with 3 running: nobody is stopped, a newcomer waits.
    write_file(&dir.join("web.yaml"), &pool("web", "maxConcurrent: 1"));
    wait_pool(&dir, "web", "capacity 1", |s| s["status"]["capacity"] == 1);
    write_file(
        &dir.join("d.yaml"),
        &gated("d", "web", "medium", &gate("d")),
    );
    let d = wait_phase(&dir, "d", "Queued");
    assert_eq!(d["status"]["queue"]["position"], 1);
    for (n, pid) in &pids {
        assert_eq!(pid_of(n), *pid, "{n} keeps its process");
        assert!(alive(*pid), "{n} was killed by the lowered cap");
    }
    let p = pool_status(&dir, "web").unwrap();
    assert_eq!(p["status"]["running"], 3, "{p:#?}");
    assert_eq!(p["status"]["utilization"], 300.0, "{p:#?}");

    // Finishing one by one: d waits until the pool is under its cap of 1.
    for (done, finished) in [("a", 1), ("b", 2)] {
        open(&gate(done));
        let p = wait_pool(&dir, "web", &format!("{done} finished"), |s| {
            s["status"]["metrics"]["completed"] == finished
        });
        assert_eq!(p["status"]["running"], 3 - finished, "{p:#?}");
        assert_eq!(p["status"]["queued"], 1, "d still waits: {p:#?}");
        assert_eq!(phase(&dir, "d").as_deref(), Some("Queued"));
    }
    open(&gate("c"));
    wait_phase(&dir, "d", "Running");
    let p = wait_pool(&dir, "web", "d running", |s| {
        s["status"]["metrics"]["completed"] == 3 && s["status"]["running"] == 1
    });
    assert_eq!(p["status"]["queued"], 0);
}

#[test]
fn a_deleted_pool_stops_its_replicas_sends_its_queue_back_to_pool_not_found_and_starts_again_when_re_created(
) {
    let (tmp, dir) = sessions_dir();
    let mark = marker(&tmp, "v1");
    let scratch = scratch(&tmp);
    let manifest = pool_of("web", 2, "maxConcurrent: 2", &server_template(&mark, "v1"));
    write_file(&dir.join("web.yaml"), &manifest);
    write_file(
        &dir.join("q.yaml"),
        &gated("q", "web", "high", &scratch.join("q")),
    );
    let _c = Controller::start(&dir, &[]);
    let s = wait_pool(&dir, "web", "2 replicas and q queued", |s| {
        running(s).len() == 2 && s["status"]["queued"] == 1
    });
    let old = running(&s);
    wait_phase(&dir, "q", "Queued");

    std::fs::remove_file(dir.join("web.yaml")).unwrap();
    wait_for("the replicas' processes to end", || {
        (old.values().all(|p| !alive(*p)) && marked(&mark).is_empty()).then_some(())
    });
    let s = wait_status(&dir, "q", "Pending PoolNotFound", |s| {
        s["status"]["phase"] == "Pending" && s["status"]["reason"] == "PoolNotFound"
    });
    assert!(
        s["status"]["queue"].is_null(),
        "no longer in a queue: {s:#?}"
    );
    wait_known_sessions(&dir, 1);
    wait_for("the pool's status file to go", || {
        (!dir.join("web.status.yaml").exists()).then_some(())
    });

    // Re-created: replicas start again (before the queued Session, which waits again).
    write_file(&dir.join("web.yaml"), &manifest);
    let s = wait_pool(&dir, "web", "2 replicas running again", |s| {
        running(s).len() == 2
    });
    let new = running(&s);
    assert_eq!(member_names(&s), ["web-0", "web-1"]);
    for (name, pid) in &new {
        assert_ne!(Some(pid), old.get(name), "{name} is a new process");
        assert!(alive(*pid));
    }
    assert_eq!(marked(&mark), sorted(new.values().copied()));
    let q = wait_phase(&dir, "q", "Queued");
    assert_eq!(q["status"]["queue"]["position"], 1, "{q:#?}");
}

#[test]
fn a_replica_being_scaled_down_holds_its_slot_until_it_has_stopped() {
    let (tmp, dir) = sessions_dir();
    let mark = marker(&tmp, "v1");
    let scratch = scratch(&tmp);
    let drained = scratch.join("drained");
    // On SIGTERM, web-0 shuts down gracefully: it exits once the test opens its gate.
    let template = format!(
        "command:\n\
         - /bin/sh\n\
         - -c\n\
         - |\n\
         \x20 trap 'while [ ! -e \"$GATE\" ]; do sleep 0.1; done; exit 0' TERM\n\
         \x20 while :; do sleep 600 & wait $!; done\n\
         - {mark}\n\
         env:\n  GATE: \"{}\"\n\
         terminationGracePeriod: 50s\n\
         restartPolicy: Always\n",
        drained.display()
    );
    write_file(
        &dir.join("web.yaml"),
        &pool_of("web", 1, "maxConcurrent: 1", &template),
    );
    write_file(
        &dir.join("q.yaml"),
        &gated("q", "web", "medium", &scratch.join("q")),
    );
    let _c = Controller::start(&dir, &[]);
    let s = wait_pool(&dir, "web", "web-0 running and q queued", |s| {
        running(s).len() == 1 && s["status"]["queued"] == 1
    });
    let p0 = running(&s)["web-0"];
    wait_phase(&dir, "q", "Queued");

    // Scaled to 0: web-0 is told to stop but is still running, so the pool is still full.
    write_file(
        &dir.join("web.yaml"),
        &pool_of("web", 0, "maxConcurrent: 1", &template),
    );
    wait_pool(&dir, "web", "replicas 0", |s| s["status"]["replicas"] == 0);
    assert!(alive(p0), "web-0 shuts down only once its gate opens");
    let q = status(&dir, "q").unwrap();
    assert_eq!(
        q["status"]["phase"], "Queued",
        "q started while the stopping web-0 still ran: 2 running members with maxConcurrent 1: {q:#?}"
    );

    open(&drained);
    wait_for("web-0 to end", || (!alive(p0)).then_some(()));
    let q = wait_phase(&dir, "q", "Running");
    assert!(q["status"]["pid"].is_u64());
    assert!(marked(&mark).is_empty());
}

// ---------------------------------------------------------------------------
// What a person sees

#[test]
fn get_shows_the_pool_line_and_describe_shows_members_and_queue() {
    let (tmp, dir) = sessions_dir();
    let mark = marker(&tmp, "v1");
    write_file(
        &dir.join("web.yaml"),
        &pool_of("web", 2, "maxConcurrent: 2", &server_template(&mark, "v1")),
    );
    write_file(
        &dir.join("q.yaml"),
        &gated("q", "web", "high", &scratch(&tmp).join("q")),
    );
    let _c = Controller::start(&dir, &[]);
    let s = wait_pool(&dir, "web", "2 ready and 1 queued", |s| {
        s["status"]["readyReplicas"] == 2 && s["status"]["queued"] == 1
    });
    let pids = running(&s);

    let get = cli(&["get"], &dir);
    let rows: Vec<Vec<&str>> = get
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    let header = rows
        .iter()
        .position(|r| r.first() == Some(&"POOL"))
        .unwrap_or_else(|| panic!("no pool table in:\n{get}"));
    assert_eq!(
        rows[header],
        ["POOL", "READY", "RUNNING", "QUEUED", "CAPACITY"]
    );
    assert!(
        rows[header + 1..].contains(&vec!["web", "2/2", "2", "1", "2"]),
        "pool line in:\n{get}"
    );
    assert!(
        rows.iter()
            .any(|r| r.first() == Some(&"q") && r.get(1) == Some(&"Queued")),
        "session line in:\n{get}"
    );

    let describe = cli(&["describe", "web"], &dir);
    let lines: Vec<&str> = describe.lines().collect();
    let at = |title: &str| {
        lines
            .iter()
            .position(|l| l.starts_with(title))
            .unwrap_or_else(|| panic!("no {title} in:\n{describe}"))
    };
    let (members_at, queue_at) = (at("Members:"), at("Queue:"));
    assert!(members_at < queue_at);
    for (name, pid) in &pids {
        let line = lines[members_at + 1..queue_at]
            .iter()
            .find(|l| l.split_whitespace().next() == Some(name.as_str()))
            .unwrap_or_else(|| panic!("no member {name} in:\n{describe}"));
        assert!(line.contains("Running"), "{line}");
        assert!(
            line.split_whitespace()
                .collect::<Vec<_>>()
                .windows(2)
                .any(|w| w == ["pid", pid.to_string().as_str()]),
            "{name}'s pid {pid} in {line:?}"
        );
    }
    assert_eq!(
        lines.get(queue_at + 1).map(|l| l.trim()),
        Some("1. q (high)"),
        "queue in:\n{describe}"
    );
}

#[test]
fn replica_logs_go_under_the_pools_logs_folder_per_replica_and_crash_dumps_under_its_crashes() {
    let (_tmp, dir) = sessions_dir();
    write_file(
        &dir.join("web.yaml"),
        &pool_of(
            "web",
            2,
            "",
            "command: [/bin/sh, -c, 'echo \"out of $$\"; echo oops >&2; exit 3']\n\
             restartPolicy: OnFailure\n\
             maxRetries: 1\n\
             backoff: {initialDelay: 200ms}",
        ),
    );
    let _c = Controller::start(&dir, &[]);
    let s = wait_pool(&dir, "web", "both replicas Failed", |s| {
        members(s).len() == 2 && members(s).iter().all(|m| m["phase"] == "Failed")
    });
    let crashes: Vec<String> = std::fs::read_dir(dir.join("web.crashes"))
        .expect("web.crashes/")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    for name in ["web-0", "web-1"] {
        let logs = dir.join("web.logs").join(name);
        for attempt in [1, 2] {
            let out = std::fs::read_to_string(logs.join(format!("attempt-{attempt}.stdout.log")))
                .unwrap_or_else(|e| panic!("{name} attempt {attempt} stdout: {e}"));
            assert!(out.starts_with("out of "), "{out:?}");
            let err = std::fs::read_to_string(logs.join(format!("attempt-{attempt}.stderr.log")))
                .unwrap_or_else(|e| panic!("{name} attempt {attempt} stderr: {e}"));
            assert_eq!(err, "oops\n");
        }
        let dumps = crashes
            .iter()
            .filter(|f| f.starts_with(&format!("{name}-")))
            .count();
        assert_eq!(
            dumps, 2,
            "one crash dump per failed attempt of {name}: {crashes:?}"
        );
        let m = member(&s, name);
        let dump = m["lastExit"]["crashDump"]
            .as_str()
            .unwrap_or_else(|| panic!("{name} has no crashDump: {s:#?}"));
        assert!(dump.starts_with("web.crashes/"), "{dump}");
        let text = std::fs::read_to_string(dir.join(dump)).unwrap();
        assert!(text.contains("oops"), "stderr tail in the dump: {text}");
        let own = &replica_docs(&dir, "web")[name];
        let stdout = own["status"]["logs"]["stdout"].as_str().unwrap_or_default();
        assert_eq!(
            stdout,
            format!("web.logs/{name}/attempt-2.stdout.log"),
            "{own:#?}"
        );
        assert_eq!(own["status"]["lastExit"]["crashDump"], dump, "{own:#?}");
    }
    assert!(
        !dir.join("web.logs").join("attempt-1.stdout.log").exists(),
        "replicas never share the pool's logs folder"
    );
}
