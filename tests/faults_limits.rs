//! Input at the limits, through the real binary: leftover temporary files
//! from interrupted writes, durations too large for a clock, and manifest
//! names that are FIFOs.

mod common;
use common::*;

use std::path::Path;
use std::time::{Duration, SystemTime};

/// Sets a file's modification time `age` into the past.
fn age_file(path: &Path, age: Duration) {
    let when = SystemTime::now() - age;
    std::fs::File::options()
        .write(true)
        .open(path)
        .and_then(|f| f.set_modified(when))
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

/// Drops a one-shot manifest in and waits for it to complete: proof that the
/// controller rescanned and reconciled after everything done before.
fn prove_rescan(dir: &Path, tag: &str) {
    let stem = format!("probe-{tag}");
    write_file(
        &dir.join(format!("{stem}.yaml")),
        &session(&stem, "command: ['true']\nrestartPolicy: Never"),
    );
    wait_phase(dir, &stem, "Completed");
}

// ---------------------------------------------------------------------------
// Leftover temporaries.

#[test]
fn temporaries_left_by_interrupted_writes_are_removed_at_start_and_statuses_kept() {
    let (_tmp, dir) = sessions_dir();
    let _keeper = KeeperGuard(dir.clone());
    write_file(
        &dir.join("job.yaml"),
        &session("job", "command: ['true']\nrestartPolicy: Never"),
    );
    let mut c = Controller::start(&dir, &[]);
    let done = wait_phase(&dir, "job", "Completed");
    assert!(c.stop().success(), "{}", c.log());

    // What SIGKILLs in the middle of writes leave behind: a status, the
    // controller's own status and a crash dump whose writer (a pid above
    // pid_max) is gone, and a keeper exit record older than any write.
    let crashes = dir.join("job.crashes");
    std::fs::create_dir_all(&crashes).unwrap();
    let exits = dir.join(".sessionlet/exits");
    std::fs::create_dir_all(&exits).unwrap();
    let planted = [
        dir.join(".job.status.yaml.tmp-4194305"),
        dir.join(".sessionlet/.controller.status.yaml.tmp-4194305"),
        crashes.join(".job-20260101T000000.000Z-attempt-1.yaml.tmp-4194305"),
        exits.join("4194305.json.tmp"),
    ];
    for p in &planted {
        std::fs::write(p, "half a file").unwrap();
    }
    age_file(&planted[3], Duration::from_secs(3600));
    // No keeper runs now, so no record can be in the middle of a write:
    // the keeper that starts removes even a fresh one.
    let fresh = exits.join("4194306.json.tmp");
    std::fs::write(&fresh, "in progress").unwrap();

    let c = Controller::start(&dir, &[]);
    wait_passes(&dir, c.pid(), 1);
    for p in &planted {
        assert!(!p.exists(), "{} was left", p.display());
    }
    assert!(
        !fresh.exists(),
        "a temporary record of no live keeper was left"
    );
    let after = status(&dir, "job").expect("the status is still there");
    assert_eq!(after["status"]["phase"], "Completed");
    assert_eq!(after["metadata"]["uid"], done["metadata"]["uid"]);
    prove_rescan(&dir, "after-sweep");
}

// ---------------------------------------------------------------------------
// Durations at and past the maximum.

/// Every duration field at the maximum, 3650d.
const AT_MAXIMUM: &str = "timeout: 3650d
activeDeadline: 3650d
terminationGracePeriod: 3650d
ttlAfterFinished: 3650d
staleAfter: 3650d
backoff: {initialDelay: 3650d, maxDelay: 3650d, resetAfter: 3650d}
resources: {maxCpuTime: 3650d}";

#[test]
fn durations_at_the_maximum_run_and_longer_ones_are_invalid_without_crashing_the_controller() {
    let (_tmp, dir) = sessions_dir();
    let _keeper = KeeperGuard(dir.clone());
    // Exits at once under Always: the restart waits initialDelay (3650d).
    write_file(
        &dir.join("again.yaml"),
        &session(
            "again",
            &format!("command: ['true']\nrestartPolicy: Always\n{AT_MAXIMUM}"),
        ),
    );
    // Runs until the drain stops it, which computes kill_at from the grace period.
    write_file(
        &dir.join("long.yaml"),
        &session("long", &format!("command: [sleep, '1000']\n{AT_MAXIMUM}")),
    );
    // Finishes at once: garbage collection is due in 3650d.
    write_file(
        &dir.join("once.yaml"),
        &session(
            "once",
            &format!("command: ['true']\nrestartPolicy: Never\n{AT_MAXIMUM}"),
        ),
    );
    // Past the maximum: the value that used to panic every `run`.
    write_file(
        &dir.join("overflow.yaml"),
        &session("overflow", "command: [sleep, '1000']\ntimeout: 100000000d"),
    );
    let mut c = Controller::start(&dir, &[]);
    let mut pids = Vec::new();
    wait_status(&dir, "again", "waiting to restart", |s| {
        s["status"]["phase"] == "Recovering"
    });
    let long = wait_status(&dir, "long", "Running", |s| {
        s["status"]["phase"] == "Running" && s["status"]["pid"].is_u64()
    });
    pids.extend(long["status"]["pid"].as_u64().map(|p| p as u32));
    wait_phase(&dir, "once", "Completed");
    let invalid = wait_phase(&dir, "overflow", "Invalid");
    let text = serde_json::to_string(&invalid).unwrap();
    assert!(
        text.contains("spec.timeout") && text.contains("longer than the maximum, 3650d"),
        "{invalid:#?}"
    );
    prove_rescan(&dir, "after-maximum");
    assert!(c.exited().is_none(), "the controller died: {}", c.log());
    let exit = c.stop();
    assert!(exit.code().is_some(), "{exit:?}");
    assert_ne!(
        exit.code(),
        Some(101),
        "the controller panicked: {}",
        c.log()
    );
    assert!(!c.log().contains("panicked"), "{}", c.log());
    // Drained like any other session, not after its 3650d grace period.
    let long = status(&dir, "long").expect("status");
    assert_eq!(long["status"]["reason"], "ControllerStopped", "{long:#?}");
    assert!(
        pids.iter().all(|p| !alive(*p)),
        "a session outlived the drain"
    );
}

// ---------------------------------------------------------------------------
// FIFOs under manifest names.

fn mkfifo(path: &Path) {
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o644))
        .unwrap_or_else(|e| panic!("mkfifo {}: {e}", path.display()));
}

#[test]
fn a_fifo_under_a_manifest_name_is_refused_and_never_blocks_the_controller() {
    let (_tmp, dir) = sessions_dir();
    let _keeper = KeeperGuard(dir.clone());
    // There from the start; nothing ever writes to it.
    mkfifo(&dir.join("pipe.yaml"));
    let mut c = Controller::start(&dir, &[]);
    prove_rescan(&dir, "with-a-fifo");
    let log = c.log();
    assert!(
        log.contains("pipe.yaml") && log.contains("not a regular file"),
        "nothing says pipe.yaml was refused:\n{log}"
    );

    // Swapped back and forth by rename with a valid manifest for a while,
    // the controller rescanning at every change: whichever it finds when it
    // opens the name (a FIFO can arrive between its stat and its open), it
    // must never wait for a writer.
    let flipper = {
        let dir = dir.clone();
        std::thread::spawn(move || {
            let flip = dir.join("flip.yaml");
            let manifest = session("flip", "command: ['true']\nrestartPolicy: Never");
            let fifo = dir.join(".flip.fifo");
            let regular = dir.join(".flip.yaml");
            let until = std::time::Instant::now() + Duration::from_secs(3);
            let mut swaps = 0u32;
            while std::time::Instant::now() < until {
                mkfifo(&fifo);
                std::fs::rename(&fifo, &flip).unwrap();
                std::fs::write(&regular, &manifest).unwrap();
                std::fs::rename(&regular, &flip).unwrap();
                swaps += 1;
            }
            mkfifo(&fifo);
            std::fs::rename(&fifo, &flip).unwrap();
            swaps
        })
    };
    let swaps = flipper.join().expect("the swapping thread");
    assert!(swaps > 100, "only {swaps} swaps");

    // Still responsive: a manifest added afterwards starts and completes,
    // and the controller drains at once when asked.
    prove_rescan(&dir, "after-the-swaps");
    wait_passes(&dir, c.pid(), 3);
    assert!(c.exited().is_none(), "the controller died: {}", c.log());
    assert!(
        c.log().contains("flip.yaml") && c.log().contains("not a regular file"),
        "nothing says flip.yaml was refused"
    );
    let exit = c.stop();
    assert_eq!(exit.code(), Some(0), "{}", c.log());
}
