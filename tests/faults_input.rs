//! Hostile input reaching the controller: symbolic links out of the watched
//! directory, names and file names that try to make it write elsewhere,
//! manifests other users may write (refused when running as root, like
//! sshd's StrictModes), and `spec.user`.

mod common;
use common::*;

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nix::sys::signal::Signal;
use serde_json::Value;

fn pid_of(s: &Value) -> u32 {
    s["status"]["pid"]
        .as_u64()
        .unwrap_or_else(|| panic!("no pid: {s:#?}")) as u32
}

fn wait_running(dir: &Path, stem: &str) -> Value {
    wait_status(dir, stem, "Running with a pid", |s| {
        s["status"]["phase"] == "Running" && s["status"]["pid"].is_u64()
    })
}

/// Kills the given pids (and their process groups) on drop.
struct KillOnDrop(Vec<u32>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        for &pid in &self.0 {
            let p = nix::unistd::Pid::from_raw(pid as i32);
            let _ = nix::sys::signal::killpg(p, Signal::SIGKILL);
            let _ = nix::sys::signal::kill(p, Signal::SIGKILL);
        }
    }
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

/// Every path under `root` (itself excluded), minus the subtree `skip`.
fn listing(root: &Path, skip: &Path) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p == skip {
                continue;
            }
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(p.clone());
            }
            out.insert(p);
        }
    }
    out
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Everything the controller says about one manifest file: its status file
/// (every document), its log and its controller status.
fn everything_said(dir: &Path, stem: &str, c: &Controller) -> String {
    let status =
        std::fs::read_to_string(dir.join(format!("{stem}.status.yaml"))).unwrap_or_default();
    let controller =
        std::fs::read_to_string(dir.join(".sessionlet/controller.status.yaml")).unwrap_or_default();
    format!("{status}\n{controller}\n{}", c.log())
}

// ---------------------------------------------------------------------------

#[test]
fn symlinks_resolving_outside_the_watched_directory_are_refused_and_reported() {
    let (tmp, dir) = sessions_dir();
    let _guard = KeeperGuard(dir.clone());
    let outside = tmp.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    let marker = tmp.path().join("evil-ran");
    let evil = session(
        "evil",
        &format!(
            "command: [touch, '{}']\nrestartPolicy: Never",
            marker.display()
        ),
    );
    std::fs::write(outside.join("evil.yaml"), &evil).unwrap();
    std::os::unix::fs::symlink(outside.join("evil.yaml"), dir.join("evil.yaml")).unwrap();
    // A relative link climbing out is refused just the same.
    std::os::unix::fs::symlink("../outside/evil.yaml", dir.join("climber.yaml")).unwrap();
    // A link to a file inside the directory (a ConfigMap's layout) is followed.
    std::fs::create_dir(dir.join("..data")).unwrap();
    std::fs::write(
        dir.join("..data/inside.yaml"),
        session("inside", "command: ['true']\nrestartPolicy: Never"),
    )
    .unwrap();
    std::os::unix::fs::symlink("..data/inside.yaml", dir.join("inside.yaml")).unwrap();

    let c = Controller::start(&dir, &[]);
    wait_phase(&dir, "inside", "Completed");
    prove_rescan(&dir, "after-links");
    wait_passes(&dir, c.pid(), 4);
    assert!(!marker.exists(), "the manifest behind the link ran");
    for stem in ["evil", "climber"] {
        if let Some(s) = status(&dir, stem) {
            assert_ne!(s["status"]["phase"], "Running", "{stem}: {s:#?}");
            assert!(s["status"]["pid"].is_null(), "{stem}: {s:#?}");
        }
        // The status or the log says why, naming the link.
        let said = everything_said(&dir, stem, &c);
        assert!(
            said.contains(&format!("{stem}.yaml")) && said.contains("outside the directory"),
            "nothing says that {stem}.yaml was refused as a link out of the directory:\n{said}"
        );
    }
}

#[test]
fn nothing_in_a_manifest_makes_the_controller_write_outside_its_status_directory() {
    let tmp = tempfile::tempdir().unwrap();
    // Deep enough that every `..` of the names below still lands inside `tmp`.
    let dir = tmp.path().join("a/b/c/sessions");
    std::fs::create_dir_all(&dir).unwrap();
    let _guard = KeeperGuard(dir.clone());
    let before = listing(tmp.path(), &dir);

    let named = |name: &str| {
        format!(
            "apiVersion: sessionlet.dev/v1alpha1\nkind: Session\nmetadata:\n  name: {name:?}\nspec:\n  command: ['true']\n  restartPolicy: Never\n"
        )
    };
    // Names that would form paths: rejected by validation.
    let hostile_names = [
        ("up", "../escape"),
        ("up2", "../../../escape"),
        ("absolute", "/tmp/escape"),
        ("dots", ".."),
        ("hidden", ".sessionlet"),
        ("nul", "a\u{0}b"),
        ("newline", "a\nb"),
    ];
    for (stem, name) in hostile_names {
        write_file(&dir.join(format!("{stem}.yaml")), &named(name));
    }
    write_file(
        &dir.join("pool-up.yaml"),
        "apiVersion: sessionlet.dev/v1alpha1\nkind: Pool\nmetadata:\n  name: ../pool\nspec:\n  replicas: 1\n  template:\n    spec:\n      command: ['true']\n",
    );
    // Odd file names: the stem names the status, inside the directory.
    let odd_files = [
        "odd name;$(touch pwned).yaml",
        "ünïcödé.yaml",
        "-rf.yaml",
        "line\nbreak.yaml",
        "back\\slash.yaml",
        "x.status.yaml.yaml",
    ];
    for f in odd_files {
        std::fs::write(
            dir.join(f),
            session("odd", "command: ['true']\nrestartPolicy: Never"),
        )
        .unwrap();
    }
    // A stem so long that STEM.status.yaml exceeds the file name limit.
    let long = format!("{}.yaml", "l".repeat(245));
    std::fs::write(dir.join(&long), named("long")).unwrap();
    // A valid session with stdin (written beside its logs) to show writes do happen.
    write_file(
        &dir.join("fine.yaml"),
        &session(
            "fine",
            "command: [cat]\nstdin: 'hello'\nrestartPolicy: Never",
        ),
    );

    let mut c = Controller::start(&dir, &[]);
    wait_phase(&dir, "fine", "Completed");
    for (stem, name) in hostile_names {
        let s = wait_phase(&dir, stem, "Invalid");
        let text = serde_json::to_string(&s).unwrap();
        assert!(
            text.contains("metadata.name"),
            "{stem}: the problem is the name {name:?}: {s:#?}"
        );
    }
    wait_phase(&dir, "pool-up", "Invalid");
    prove_rescan(&dir, "after-odd-names");
    wait_passes(&dir, c.pid(), 4);
    assert!(
        c.exited().is_none(),
        "the controller survives odd names:\n{}",
        c.log()
    );

    let after = listing(tmp.path(), &dir);
    let new: Vec<&PathBuf> = after
        .difference(&before)
        .filter(|p| p.parent() != dir.parent() || !p.to_string_lossy().ends_with(".log"))
        .collect();
    assert!(
        new.is_empty(),
        "the controller wrote outside its status directory: {new:#?}"
    );
    // Inside, the odd names became status files beside their manifests.
    for f in odd_files {
        let stem = f.strip_suffix(".yaml").unwrap();
        assert!(
            status(&dir, stem).is_some(),
            "{f:?} has its status in the directory"
        );
    }
    assert!(
        !dir.join("pwned").exists(),
        "a file name was run as a command"
    );
}

#[test]
fn as_root_a_manifest_or_directory_writable_by_others_is_refused_and_the_status_says_why() {
    if !is_root() {
        eprintln!(
            "SKIPPED as_root_a_manifest_writable_by_others_is_refused: the controller does not run as \
             root here, and StrictModes applies to root controllers only"
        );
        return;
    }
    let (tmp, dir) = sessions_dir();
    let _guard = KeeperGuard(dir.clone());
    let marker = tmp.path().join("shared-ran");
    let path = dir.join("shared.yaml");
    write_file(
        &path,
        &session(
            "shared",
            &format!(
                "command: [sh, -c, 'touch {}; exec sleep 1000']",
                marker.display()
            ),
        ),
    );
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
    let mut c = Controller::start(&dir, &[]);
    let s = wait_phase(&dir, "shared", "Invalid");
    let text = serde_json::to_string(&s).unwrap();
    assert!(
        text.contains("writable by other users"),
        "the status says why: {s:#?}"
    );
    prove_rescan(&dir, "strict");
    assert!(
        !marker.exists(),
        "a manifest others may write was run as root"
    );

    // Fixed: it runs.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let s = wait_running(&dir, "shared");
    let _kill = KillOnDrop(vec![pid_of(&s)]);
    let code = c.stop();
    assert!(code.success(), "{code:?}");

    // A directory others may write (without the sticky bit) is refused too:
    // at start the controller stops with the path and the fix ...
    let (tmp2, dir2) = sessions_dir();
    let _guard2 = KeeperGuard(dir2.clone());
    let marker2 = tmp2.path().join("open-dir-ran");
    write_file(
        &dir2.join("open.yaml"),
        &session(
            "open",
            &format!(
                "command: [touch, '{}']\nrestartPolicy: Never",
                marker2.display()
            ),
        ),
    );
    std::fs::set_permissions(&dir2, std::fs::Permissions::from_mode(0o777)).unwrap();
    let mut c2 = Controller::start(&dir2, &[]);
    let code = c2.wait();
    assert!(!code.success(), "{code:?}");
    let log = c2.log();
    assert!(
        log.contains("manifest folder") && log.contains(&format!("chmod go-w {}", dir2.display())),
        "the error names the folder and the fix: {log}"
    );
    assert!(!marker2.exists());

    // ... and once it runs, a folder turned writable makes its manifests Invalid.
    std::fs::set_permissions(&dir2, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::remove_file(dir2.join("open.yaml")).unwrap();
    let c3 = Controller::start(&dir2, &[]);
    prove_rescan(&dir2, "before");
    std::fs::set_permissions(&dir2, std::fs::Permissions::from_mode(0o777)).unwrap();
    write_file(
        &dir2.join("open.yaml"),
        &session(
            "open",
            &format!(
                "command: [touch, '{}']\nrestartPolicy: Never",
                marker2.display()
            ),
        ),
    );
    let s = wait_phase(&dir2, "open", "Invalid");
    let text = serde_json::to_string(&s).unwrap();
    assert!(
        text.contains("writable by other users") && text.contains("manifest folder"),
        "the status says why: {s:#?}"
    );
    assert!(!marker2.exists());
    std::fs::set_permissions(&dir2, std::fs::Permissions::from_mode(0o755)).unwrap();
    drop(c3);
}

/// The `Uid:`, `Gid:` and `Groups:` lines of a process.
fn ids(pid: u32) -> (Vec<u32>, Vec<u32>, Vec<u32>) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let field = |name: &str| -> Vec<u32> {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|v| v.parse().ok())
            .collect()
    };
    (field("Uid:"), field("Gid:"), field("Groups:"))
}

#[test]
fn as_root_spec_user_and_group_run_the_process_as_that_user() {
    if !is_root() {
        eprintln!(
            "SKIPPED as_root_spec_user_runs_the_process_as_that_user: the controller does not run \
             as root here; only a root controller may run sessions as another user"
        );
        return;
    }
    let Ok(Some(nobody)) = nix::unistd::User::from_name("nobody") else {
        eprintln!("SKIPPED as_root_spec_user_runs_the_process_as_that_user: no user `nobody`");
        return;
    };
    let daemon = nix::unistd::Group::from_name("daemon").ok().flatten();
    let (_tmp, dir) = sessions_dir();
    let _guard = KeeperGuard(dir.clone());
    // The working directory must be reachable by the user: the test's
    // temporary directory is private to root.
    write_file(
        &dir.join("unprivileged.yaml"),
        &session(
            "unprivileged",
            "command: [sleep, '1000']\nuser: nobody\nworkingDir: /",
        ),
    );
    if let Some(g) = &daemon {
        write_file(
            &dir.join("grouped.yaml"),
            &session(
                "grouped",
                &format!(
                    "command: [sleep, '1000']\nuser: '{}'\ngroup: {}\nworkingDir: /",
                    nobody.uid.as_raw(),
                    g.name
                ),
            ),
        );
    }
    let c = Controller::start(&dir, &[]);
    let s = wait_running(&dir, "unprivileged");
    let pid = pid_of(&s);
    let mut kill = KillOnDrop(vec![pid]);
    let (uid, gid, groups) = ids(pid);
    let u = nobody.uid.as_raw();
    let g = nobody.gid.as_raw();
    assert_eq!(
        uid,
        [u, u, u, u],
        "real, effective, saved and fs uid are nobody's"
    );
    assert_eq!(gid, [g, g, g, g], "nobody's primary group");
    assert!(
        groups.is_empty() || groups == [g],
        "root's supplementary groups are dropped: {groups:?}"
    );
    if let Some(dg) = &daemon {
        let s = wait_running(&dir, "grouped");
        let pid = pid_of(&s);
        kill.0.push(pid);
        let (uid, gid, _) = ids(pid);
        assert_eq!(uid[0], u, "a numeric spec.user");
        assert_eq!(
            gid,
            vec![dg.gid.as_raw(); 4],
            "spec.group overrides the user's primary group"
        );
    } else {
        eprintln!("(no group `daemon`: spec.group is not checked)");
    }
    drop(c);
}
