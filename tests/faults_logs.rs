//! `--max-log-size` is a bound: during a flood, after the session finished,
//! at the next start and on a full disk.

mod common;
use common::*;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use serde_json::Value;

const MI: u64 = 1 << 20;

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Disk used by the files of a folder tree (allocated blocks, not lengths).
fn disk_use(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let Ok(m) = e.metadata() else { continue };
            if m.is_dir() {
                stack.push(e.path());
            } else {
                total += m.blocks() * 512;
            }
        }
    }
    total
}

fn dropped(s: &Value) -> u64 {
    s["status"]["logs"]["droppedBytes"].as_u64().unwrap_or(0)
}

fn len(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

/// Unmounts (lazily) on drop.
struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Mounts a tmpfs of `size` (mode 0750) on `dir`, when root and mount(8) allow.
fn tmpfs(dir: &Path, size: &str) -> Option<Mount> {
    let ok = is_root()
        && Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0750"),
                "tmpfs",
            ])
            .arg(dir)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
    ok.then(|| Mount(dir.to_path_buf()))
}

#[test]
fn a_yes_flood_keeps_its_logs_within_the_bound() {
    let (tmp, dir) = sessions_dir();
    let status_dir = tmp.path().join("status");
    std::fs::create_dir(&status_dir).unwrap();
    // On a tmpfs when possible: a regression must not fill the real disk.
    let _mount = tmpfs(&status_dir, "1g");
    let _guard = KeeperGuard(status_dir.clone());
    // `head` bounds the damage of a regression on a real disk.
    write_file(
        &dir.join("flood.yaml"),
        &session(
            "flood",
            "command: [sh, -c, 'yes | head -c 4G; exec sleep 1000']",
        ),
    );
    let c = Controller::start_with_status_dir(&dir, Some(&status_dir), &["--max-log-size", "1Mi"]);
    let s = wait_status(&status_dir, "flood", "Running", |s| {
        s["status"]["phase"] == "Running" && s["status"]["logs"]["stdout"].is_string()
    });
    let live = status_dir.join(s["status"]["logs"]["stdout"].as_str().unwrap());
    let logs = live.parent().unwrap().to_path_buf();
    let rotated = live.with_extension("log.1");
    // Kept files: stdout and stderr, each live + one rotated.
    let bound = 4 * MI;
    let slack = 256 * MI;
    let started = Instant::now();
    let mut peak = 0;
    let mut samples = 0u64;
    // Until the flood wrote far more than the bound (the status counts it).
    let s = wait_for("the flood to run well past the cap", || {
        let used = disk_use(&logs);
        peak = peak.max(used);
        samples += 1;
        assert!(
            used <= bound + slack,
            "the logs use {used} bytes, over {bound} + {slack}"
        );
        status(&status_dir, "flood").filter(|s| rotated.is_file() && dropped(s) > 512 * MI)
    });
    let elapsed = started.elapsed().as_secs_f64();
    let written = dropped(&s) + len(&live) + len(&rotated);
    eprintln!(
        "flood: about {} MiB written in {elapsed:.1} s ({:.0} MiB/s); the logs folder peaked at \
         {} KiB over {samples} samples (bound {} KiB + slack)",
        written / MI,
        written as f64 / MI as f64 / elapsed,
        peak / 1024,
        bound / 1024
    );
    assert!(len(&rotated) <= MI, "{}", len(&rotated));
    assert_eq!(
        s["status"]["phase"], "Running",
        "the session is undisturbed"
    );
    drop(c);
}

#[test]
fn a_finished_sessions_log_is_capped_at_its_exit_and_every_log_at_the_next_start() {
    let (tmp, dir) = sessions_dir();
    let _guard = KeeperGuard(dir.clone());
    // About 2.9 MB, written faster than any periodic check.
    write_file(
        &dir.join("burst.yaml"),
        &session(
            "burst",
            "command: [seq, '1', '400000']\nrestartPolicy: Never",
        ),
    );
    let mut c = Controller::start(&dir, &["--max-log-size", "1Mi"]);
    let s = wait_phase(&dir, "burst", "Completed");
    let live = dir.join(s["status"]["logs"]["stdout"].as_str().unwrap());
    assert!(len(&live) <= MI, "capped at exit: {}", len(&live));
    // Whole lines are kept (a rotation racing the writer may drop the lines
    // written during it: copy-truncate; see the README).
    let rotated = std::fs::read_to_string(live.with_extension("log.1")).unwrap_or_default();
    let text = rotated + &std::fs::read_to_string(&live).unwrap();
    assert!(
        text.lines()
            .next()
            .is_some_and(|l| l.parse::<u32>().is_ok()),
        "whole lines"
    );
    assert!(len(&live.with_extension("log.1")) <= MI);
    assert!(dropped(&s) > 0, "{s:#?}");
    assert!(c.stop().success());

    // Oversized logs left by an older version (or a bigger --max-log-size):
    // the finished session's, and one of a manifest that is gone.
    let big: String = (1..=400_000).map(|i| format!("{i}\n")).collect();
    std::fs::write(&live, &big).unwrap();
    let gone = dir.join("gone.logs");
    std::fs::create_dir(&gone).unwrap();
    let orphan = gone.join("attempt-3.stderr.log");
    std::fs::write(&orphan, &big).unwrap();
    let _c = Controller::start(&dir, &["--max-log-size", "1Mi"]);
    for p in [&live, &orphan] {
        wait_for(&format!("{} capped at start", p.display()), || {
            (len(p) <= MI).then_some(())
        });
        let text = std::fs::read_to_string(p).unwrap();
        assert!(text.ends_with("400000\n"), "the end is kept");
    }
    let _ = tmp;
}

#[test]
fn on_a_full_disk_a_flood_is_truncated_in_place_and_the_status_counts_the_dropped_bytes() {
    let (tmp, dir) = sessions_dir();
    let status_dir = tmp.path().join("small");
    std::fs::create_dir(&status_dir).unwrap();
    let Some(_mount) = tmpfs(&status_dir, "8m") else {
        eprintln!(
            "SKIPPED on_a_full_disk_a_flood_is_truncated_in_place: cannot mount an 8m tmpfs \
             (needs root and mount(8))"
        );
        return;
    };
    let _guard = KeeperGuard(status_dir.clone());
    write_file(
        &dir.join("flood.yaml"),
        &session(
            "flood",
            "command: [sh, -c, 'head -c 6291456 /dev/zero | tr \"\\\\0\" y; exec sleep 1000']",
        ),
    );
    // 6 MiB fit on the 8 MiB disk, but past the 5 MiB cap a rotation's copy
    // of the last 5 MiB cannot: the file is truncated in place.
    let mut c =
        Controller::start_with_status_dir(&dir, Some(&status_dir), &["--max-log-size", "5Mi"]);
    let s = wait_status(&status_dir, "flood", "output dropped", |s| dropped(s) > 0);
    assert!(dropped(&s) >= 5 * MI, "{s:#?}");
    assert!(
        c.log().contains("truncated it in place"),
        "the controller says why"
    );
    let live = status_dir.join(s["status"]["logs"]["stdout"].as_str().unwrap());
    assert!(len(&live) < MI, "truncated: {}", len(&live));
    assert_eq!(
        s["status"]["phase"], "Running",
        "the session is undisturbed"
    );
    // The controller keeps working: a new session starts.
    write_file(
        &dir.join("after.yaml"),
        &session("after", "command: [sleep, '1000']"),
    );
    wait_phase(&status_dir, "after", "Running");
    assert!(
        c.child.as_mut().unwrap().try_wait().unwrap().is_none(),
        "the controller is still running"
    );
    assert!(c.stop().success());
}

#[test]
fn with_poll_logs_are_rotated_at_each_resync_without_inotify() {
    let (_tmp, dir) = sessions_dir();
    let _guard = KeeperGuard(dir.clone());
    write_file(
        &dir.join("chatty.yaml"),
        &session(
            "chatty",
            "command: [sh, -c, 'sleep 1; seq 1 1000; exec sleep 1000']",
        ),
    );
    let _c = Controller::start(&dir, &["--poll", "--max-log-size", "1Ki"]);
    let s = wait_status(&dir, "chatty", "Running", |s| {
        s["status"]["phase"] == "Running" && s["status"]["logs"]["stdout"].is_string()
    });
    let live = dir.join(s["status"]["logs"]["stdout"].as_str().unwrap());
    wait_for("a rotation at a resync", || {
        (len(&live) == 0 && len(&live.with_extension("log.1")) > 0).then_some(())
    });
    let rotated = std::fs::read_to_string(live.with_extension("log.1")).unwrap();
    assert!(
        rotated.len() <= 1024 && rotated.ends_with("1000\n"),
        "{rotated}"
    );
    wait_status(&dir, "chatty", "the dropped bytes", |s| dropped(s) > 0);
}
