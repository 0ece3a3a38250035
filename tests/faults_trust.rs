//! Another local user must find no way in: a root controller trusts only
//! manifests and folders root owns and no one else may write (StrictModes),
//! and nothing written under the status folder follows a planted link.

mod common;
use common::*;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use serde_json::Value;

const NOBODY: u32 = 65534;

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

fn chown(path: &Path, uid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), Some(uid)).expect("chown");
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

fn text(v: &Value) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

/// A session that proves it ran by creating `marker`.
fn marking(name: &str, marker: &Path) -> String {
    session(
        name,
        &format!(
            "command: [sh, -c, 'touch {}; exec sleep 1000']",
            marker.display()
        ),
    )
}

/// Runs `sessionlet run` expecting it to refuse to start; returns its log.
fn refused_start(dir: &Path, status_dir: Option<&Path>) -> String {
    let mut c = Controller::start_with_status_dir(dir, status_dir, &[]);
    let code = c.wait();
    assert!(!code.success(), "the controller started: {code:?}");
    c.log()
}

// ---------------------------------------------------------------------------
// StrictModes (root only).

#[test]
fn as_root_a_manifest_another_user_owns_is_refused_and_a_root_one_runs() {
    if !is_root() {
        eprintln!("SKIPPED as_root_a_manifest_another_user_owns_is_refused: not root; StrictModes applies to root controllers only");
        return;
    }
    let (tmp, dir) = sessions_dir();
    let _guard = KeeperGuard(dir.clone());
    let theirs = tmp.path().join("theirs-ran");
    let path = dir.join("theirs.yaml");
    write_file(&path, &marking("theirs", &theirs));
    chmod(&path, 0o644);
    chown(&path, NOBODY);
    // A ConfigMap-style link to a file another user owns, inside the folder.
    let data = dir.join("..data");
    std::fs::create_dir(&data).unwrap();
    let linked_ran = tmp.path().join("linked-ran");
    write_file(&data.join("linked.yaml"), &marking("linked", &linked_ran));
    chown(&data.join("linked.yaml"), NOBODY);
    std::os::unix::fs::symlink("..data/linked.yaml", dir.join("linked.yaml")).unwrap();
    // Root's own 0644 file in root's 0755 folder is trusted.
    let ours = tmp.path().join("ours-ran");
    write_file(&dir.join("ours.yaml"), &marking("ours", &ours));
    chmod(&dir.join("ours.yaml"), 0o644);
    chmod(&dir, 0o755);

    let c = Controller::start(&dir, &[]);
    let s = wait_phase(&dir, "theirs", "Invalid");
    let t = text(&s);
    let p = path.display().to_string();
    assert!(t.contains(&p), "names the path: {s:#?}");
    assert!(t.contains("owned by uid 65534"), "names the owner: {s:#?}");
    assert!(t.contains("mode 0644"), "names the mode: {s:#?}");
    assert!(
        t.contains(&format!("chown root:root {p}")),
        "says what to run: {s:#?}"
    );
    let s = wait_phase(&dir, "linked", "Invalid");
    assert!(text(&s).contains("owned by uid 65534"), "{s:#?}");
    let s = wait_status(&dir, "ours", "Running", |s| {
        s["status"]["phase"] == "Running"
    });
    let pid = s["status"]["pid"].as_u64().unwrap() as u32;
    wait_for("the trusted session to run", || ours.exists().then_some(()));
    assert!(!theirs.exists(), "another user's manifest ran as root");
    assert!(
        !linked_ran.exists(),
        "a linked manifest another user owns ran as root"
    );

    // Given back to root, it runs.
    chown(&path, 0);
    wait_for("the fixed manifest to run", || {
        theirs.exists().then_some(())
    });
    drop(c);
    wait_for("the trusted session to end with the drain", || {
        (!alive(pid)).then_some(())
    });
}

#[test]
fn as_root_a_writable_folder_above_the_manifests_or_a_writable_status_folder_stops_run() {
    if !is_root() {
        eprintln!("SKIPPED as_root_a_writable_folder_stops_run: not root; StrictModes applies to root controllers only");
        return;
    }
    // A group-writable folder above the manifest folder.
    let (tmp, dir) = sessions_dir();
    let _guard = KeeperGuard(dir.clone());
    let marker = tmp.path().join("ran");
    write_file(&dir.join("job.yaml"), &marking("job", &marker));
    chmod(tmp.path(), 0o775);
    let log = refused_start(&dir, None);
    let above = tmp.path().display().to_string();
    assert!(
        log.contains(&format!("folder above the manifest folder {above}"))
            && log.contains("writable by its group (mode 0775)")
            && log.contains(&format!("chmod go-w {above}")),
        "the error names the folder, the mode and the fix: {log}"
    );
    chmod(tmp.path(), 0o700);

    // A status folder other users may write.
    let status_dir = tmp.path().join("status");
    std::fs::create_dir(&status_dir).unwrap();
    chmod(&status_dir, 0o757);
    let _guard2 = KeeperGuard(status_dir.clone());
    let log = refused_start(&dir, Some(&status_dir));
    let p = status_dir.display().to_string();
    assert!(
        log.contains(&format!("status folder {p}"))
            && log.contains("writable by other users (mode 0757)")
            && log.contains(&format!("chmod go-w {p}")),
        "the error names the folder, the mode and the fix: {log}"
    );
    // A status folder another user owns.
    chmod(&status_dir, 0o750);
    chown(&status_dir, NOBODY);
    let log = refused_start(&dir, Some(&status_dir));
    assert!(
        log.contains("owned by uid 65534") && log.contains(&format!("chown root:root {p}")),
        "{log}"
    );
    assert!(!marker.exists(), "nothing ran");
    assert!(
        !status_dir.join(".sessionlet").exists(),
        "nothing was written in the refused status folder"
    );
}

#[test]
fn as_root_validate_applies_the_same_checks() {
    if !is_root() {
        eprintln!("SKIPPED as_root_validate_applies_the_same_checks: not root; StrictModes applies to root only");
        return;
    }
    let (_tmp, dir) = sessions_dir();
    let path = dir.join("theirs.yaml");
    write_file(&path, &session("theirs", "command: ['true']"));
    chown(&path, NOBODY);
    write_file(
        &dir.join("ours.yaml"),
        &session("ours", "command: ['true']"),
    );
    chmod(&dir, 0o755);
    let out = Command::new(bin())
        .arg("validate")
        .arg(&dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains(&format!("{}:1:1: error:", path.display()))
            && stdout.contains("owned by uid 65534")
            && stdout.contains(&format!("chown root:root {}", path.display())),
        "{stdout}"
    );
    assert!(!stdout.contains("ours.yaml"), "{stdout}");

    // A group-writable manifest folder: every file in it is refused.
    chown(&path, 0);
    chmod(&dir, 0o775);
    let out = Command::new(bin())
        .arg("validate")
        .arg(&dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("manifest folder")
            && stdout.contains(&format!("chmod go-w {}", dir.display())),
        "{stdout}"
    );
    chmod(&dir, 0o755);
    let out = Command::new(bin())
        .arg("validate")
        .arg(&dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

// ---------------------------------------------------------------------------
// Planted links in the status folder (any user).

/// A file only its owner may read, outside the status folder.
fn secret(tmp: &Path) -> std::path::PathBuf {
    let p = tmp.join("secret");
    std::fs::write(&p, "root only\n").unwrap();
    chmod(&p, 0o600);
    p
}

fn assert_untouched(secret: &Path) {
    assert_eq!(
        std::fs::read_to_string(secret).unwrap(),
        "root only\n",
        "the link's target was written or truncated"
    );
}

#[test]
fn a_link_planted_at_a_log_file_is_refused_and_never_written_through() {
    let (tmp, dir) = sessions_dir();
    let _guard = KeeperGuard(dir.clone());
    let secret = secret(tmp.path());
    let logs = dir.join("planted.logs");
    std::fs::create_dir(&logs).unwrap();
    std::os::unix::fs::symlink(&secret, logs.join("attempt-1.stdout.log")).unwrap();
    write_file(
        &dir.join("planted.yaml"),
        &session(
            "planted",
            "command: [sh, -c, 'echo session output']\nrestartPolicy: Never",
        ),
    );
    let _c = Controller::start(&dir, &[]);
    let s = wait_phase(&dir, "planted", "Failed");
    let t = text(&s);
    assert!(
        t.contains("is a symbolic link") && t.contains("attempt-1.stdout.log"),
        "the status says which link: {s:#?}"
    );
    assert_untouched(&secret);
}

#[test]
fn a_linked_logs_folder_is_refused_and_nothing_is_written_in_its_target() {
    let (tmp, dir) = sessions_dir();
    let _guard = KeeperGuard(dir.clone());
    let elsewhere = tmp.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, dir.join("folder.logs")).unwrap();
    write_file(
        &dir.join("folder.yaml"),
        &session("folder", "command: [echo, hi]\nrestartPolicy: Never"),
    );
    let _c = Controller::start(&dir, &[]);
    let s = wait_phase(&dir, "folder", "Failed");
    assert!(text(&s).contains("is a symbolic link"), "{s:#?}");
    assert_eq!(
        std::fs::read_dir(&elsewhere).unwrap().count(),
        0,
        "something was written through the linked folder"
    );
}
#[test]
fn links_planted_at_the_rotated_log_and_the_status_file_are_replaced_never_written_through() {
    let (tmp, dir) = sessions_dir();
    let _guard = KeeperGuard(dir.clone());
    let secret = secret(tmp.path());
    let logs = dir.join("chatty.logs");
    std::fs::create_dir(&logs).unwrap();
    let rotated = logs.join("attempt-1.stdout.log.1");
    std::os::unix::fs::symlink(&secret, &rotated).unwrap();
    std::os::unix::fs::symlink(&secret, dir.join("chatty.status.yaml")).unwrap();
    write_file(
        &dir.join("chatty.yaml"),
        &session(
            "chatty",
            "command: [sh, -c, 'while :; do echo 0123456789012345678901234567890123456789; sleep 0.01; done']",
        ),
    );
    let _c = Controller::start(&dir, &["--max-log-size", "1Ki"]);
    let s = wait_status(&dir, "chatty", "Running", |s| {
        s["status"]["phase"] == "Running"
    });
    let pid = s["status"]["pid"].as_u64().unwrap() as u32;
    wait_for("a rotation into a regular .log.1", || {
        let m = std::fs::symlink_metadata(&rotated).ok()?;
        (m.is_file() && m.len() > 0).then_some(())
    });
    assert!(std::fs::symlink_metadata(dir.join("chatty.status.yaml"))
        .unwrap()
        .is_file());
    assert_untouched(&secret);
    let s = status(&dir, "chatty").unwrap();
    assert_eq!(
        s["status"]["pid"].as_u64(),
        Some(u64::from(pid)),
        "undisturbed"
    );
}
