//! A full disk when an exit arrives: the exit stays unacknowledged until its
//! status is saved, so a controller killed meanwhile loses nothing and a
//! job that completed is never run again.

mod common;
use common::*;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn tag(dir: &Path, name: &str) -> String {
    format!("{}-{name}", dir.display())
}

/// A session that journals its start, waits for `go` to exist, then exits `code`.
fn waiting(dir: &Path, journal: &Path, go: &Path, name: &str, policy: &str, code: u8) -> String {
    format!(
        "apiVersion: sessionlet.dev/v1alpha1\nkind: Session\nmetadata:\n  name: {name}\nspec:\n  restartPolicy: {policy}\n  env:\n    SESSION_TAG: \"{}\"\n  command: [\"/bin/sh\", \"-c\", \"echo start {name} $$ >> {}; while [ ! -e {} ]; do sleep 0.05; done; exit {code}\"]\n",
        tag(dir, name),
        journal.display(),
        go.display()
    )
}

fn starts(journal: &Path, name: &str) -> usize {
    std::fs::read_to_string(journal)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.split_whitespace().nth(1) == Some(name))
        .count()
}

#[test]
fn an_exit_during_a_full_disk_survives_a_controller_kill_and_is_applied_once() {
    let (tmp, dir) = sessions_dir();
    let status_dir = tmp.path().join("small");
    std::fs::create_dir(&status_dir).expect("status dir");
    let mounted = nix::unistd::geteuid().is_root()
        && Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=512k,mode=0750", "tmpfs"])
            .arg(&status_dir)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("SKIPPED: cannot mount a small tmpfs (needs root and mount(8))");
        return;
    }
    let _mount = Mount(status_dir.clone());
    let _guard = KeeperGuard(status_dir.clone());
    let journal = tmp.path().join("journal");
    let go = tmp.path().join("go");
    write_file(
        &dir.join("bad.yaml"),
        &waiting(&dir, &journal, &go, "bad", "Never", 7),
    );
    write_file(
        &dir.join("job.yaml"),
        &waiting(&dir, &journal, &go, "job", "OnFailure", 0),
    );
    let mut c = Controller::start_with_status_dir(&dir, Some(&status_dir), &[]);
    for n in ["bad", "job"] {
        wait_status(&status_dir, n, "Running", |s| {
            s["status"]["phase"] == "Running"
        });
    }
    // Fill the disk, then let both sessions end.
    let filler = status_dir.join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).expect("filler");
        let chunk = vec![b'x'; 4096];
        while f.write_all(&chunk).is_ok() {}
    }
    std::fs::write(&go, "").expect("go");
    wait_for("both sessions to end", || {
        (live_copies(&tag(&dir, "bad")).is_empty() && live_copies(&tag(&dir, "job")).is_empty())
            .then_some(())
    });
    wait_for("the failed status write", || {
        c.log()
            .contains("bad.status.yaml: No space left on device")
            .then_some(())
    });
    // The status on disk still says Running; the exits are held unacknowledged.
    c.kill();
    std::fs::remove_file(&filler).expect("free the disk");
    let mut c = Controller::start_with_status_dir(&dir, Some(&status_dir), &[]);
    let bad = wait_phase(&status_dir, "bad", "Failed");
    assert_eq!(
        bad["status"]["lastExit"]["exitCode"], 7,
        "the real code: {bad:#?}"
    );
    assert_eq!(bad["status"]["lastExit"]["reason"], "Error", "{bad:#?}");
    let job = wait_phase(&status_dir, "job", "Completed");
    assert_eq!(job["status"]["lastExit"]["exitCode"], 0, "{job:#?}");
    wait_passes(&status_dir, c.pid(), 3);
    assert_eq!(
        starts(&journal, "job"),
        1,
        "a completed job is not run again"
    );
    assert_eq!(starts(&journal, "bad"), 1);
    assert!(c.stop().success(), "{}", c.log());
}
