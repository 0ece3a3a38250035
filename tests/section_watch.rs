//! Watching the directory: every real way a manifest file changes is picked
//! up (inotify, editors' temporary files and renames, Vim's backup dance,
//! ConfigMap symlink swaps, git checkouts, half-written files, `--poll`),
//! identity is kind + name rather than the file, and files that are not
//! manifests are left alone.

mod common;
use common::*;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::SystemTime;

use serde_json::Value;

/// A long-running session: a cheap `sleep` that is easy to tell apart by its argument.
fn sleeper(name: &str, secs: u32) -> String {
    session(name, &format!("command: [sleep, '{secs}']"))
}

/// Waits for `STEM` to be Running and returns its pid.
fn running_pid(dir: &Path, stem: &str) -> u32 {
    let s = wait_status(dir, stem, "Running with a pid", |s| {
        s["status"]["phase"] == "Running" && s["status"]["pid"].is_u64()
    });
    s["status"]["pid"].as_u64().expect("pid") as u32
}

/// Drops a one-shot manifest in and waits for it to complete: proof that the
/// controller rescanned the directory after everything done before this call.
fn prove_rescan(dir: &Path, tag: &str) {
    let stem = format!("probe-{tag}");
    write_file(
        &dir.join(format!("{stem}.yaml")),
        &session(&stem, "command: ['true']\nrestartPolicy: Never"),
    );
    wait_phase(dir, &stem, "Completed");
}

/// The argv of a live process.
fn cmdline(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

/// True when the process holds an inotify instance.
fn has_inotify(pid: u32) -> bool {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|entries| {
            entries.flatten().any(|e| {
                std::fs::read_link(e.path())
                    .map(|t| t.to_string_lossy().contains("inotify"))
                    .unwrap_or(false)
            })
        })
        .unwrap_or(false)
}

/// Starts the controller with exactly `args` after `run --dir DIR` (no short
/// resync interval), so that only file events can trigger a rescan.
fn start_without_short_resync(dir: &Path, args: &[&str]) -> Controller {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let log = dir
        .parent()
        .unwrap_or(dir)
        .join(format!("controller-raw-{nanos}.log"));
    let child = Command::new(bin())
        .arg("run")
        .arg("--dir")
        .arg(dir)
        .args(args)
        .env("RUST_LOG", "debug")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("start sessionlet");
    Controller {
        child: Some(child),
        dir: dir.to_path_buf(),
        status_dir: dir.to_path_buf(),
        log,
    }
}

/// `.sessionlet/controller.status.yaml`.
fn controller_status(status_dir: &Path) -> Option<Value> {
    status_docs(&status_dir.join(".sessionlet/controller.status.yaml"))?
        .into_iter()
        .next()
}

/// Runs `git` in `dir` with a fixed identity and no user or system configuration.
fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git")
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_TERMINAL_PROMPT", "0")
        .args([
            "-c",
            "user.email=tests@example.invalid",
            "-c",
            "user.name=sessionlet tests",
            "-c",
            "commit.gpgsign=false",
        ])
        .args(args)
        .output()
        .expect("run git");
    assert!(
        out.status.success(),
        "git {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every error line `FILE:LINE:COL: error: ...` in a status, as (line, col).
fn error_positions(status: &Value, file: &str) -> Vec<(u64, u64)> {
    let re = regex::Regex::new(&format!(r"{}:(\d+):(\d+): error: ", regex::escape(file)))
        .expect("regex");
    status["status"]["errors"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e.as_str())
        .filter_map(|e| {
            let c = re.captures(e)?;
            Some((c[1].parse().ok()?, c[2].parse().ok()?))
        })
        .collect()
}

fn condition<'a>(status: &'a Value, kind: &str) -> Option<&'a Value> {
    status["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind)
}

fn status_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("read dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".status.yaml"))
        .collect();
    names.sort();
    names
}

#[test]
fn a_manifest_dropped_into_the_watched_directory_starts_through_file_events_alone() {
    let (_tmp, dir) = sessions_dir();
    // A resync interval of an hour: only an inotify event can make this session start in time.
    let c = start_without_short_resync(&dir, &["--resync-interval", "1h"]);
    wait_for("the controller status file", || controller_status(&dir));
    assert!(
        has_inotify(c.pid()),
        "the controller watches the directory with inotify"
    );
    write_file(&dir.join("web.yaml"), &sleeper("web", 300));
    let pid = running_pid(&dir, "web");
    assert!(alive(pid));
    assert!(cmdline(pid).contains("sleep 300"), "{}", cmdline(pid));
}

#[test]
fn an_editor_save_through_a_temporary_file_with_identical_content_does_not_restart_the_session() {
    let (_tmp, dir) = sessions_dir();
    let text = sleeper("web", 300);
    write_file(&dir.join("web.yaml"), &text);
    let _c = Controller::start(&dir, &[]);
    let pid = running_pid(&dir, "web");
    let inode = std::fs::metadata(dir.join("web.yaml")).unwrap().ino();

    // Write a temporary file, then rename it over the manifest (a new inode, same bytes).
    let tmp = dir.join(".web.yaml.swx-tmp");
    std::fs::write(&tmp, &text).unwrap();
    std::fs::rename(&tmp, dir.join("web.yaml")).unwrap();
    assert_ne!(
        std::fs::metadata(dir.join("web.yaml")).unwrap().ino(),
        inode,
        "the save replaced the file"
    );
    prove_rescan(&dir, "after-save");

    let s = status(&dir, "web").unwrap();
    assert_eq!(s["status"]["phase"], "Running", "{s:#?}");
    assert_eq!(s["status"]["pid"], pid, "same process: {s:#?}");
    assert_eq!(s["status"]["observedGeneration"], 1, "{s:#?}");
    assert_eq!(s["status"]["restarts"], 0, "{s:#?}");
    assert!(alive(pid));
}

#[test]
fn a_vim_style_save_with_identical_content_does_not_restart_the_session() {
    let (_tmp, dir) = sessions_dir();
    let text = sleeper("web", 300);
    let manifest = dir.join("web.yaml");
    write_file(&manifest, &text);
    let _c = Controller::start(&dir, &[]);
    let pid = running_pid(&dir, "web");

    // Vim (backupcopy=no): rename the original to a backup, write a new file, delete the backup.
    let backup = dir.join("web.yaml~");
    std::fs::rename(&manifest, &backup).unwrap();
    std::fs::write(&manifest, &text).unwrap();
    std::fs::remove_file(&backup).unwrap();
    prove_rescan(&dir, "after-vim");

    let s = status(&dir, "web").unwrap();
    assert_eq!(s["status"]["phase"], "Running", "{s:#?}");
    assert_eq!(s["status"]["pid"], pid, "same process: {s:#?}");
    assert_eq!(s["status"]["observedGeneration"], 1, "{s:#?}");
    assert!(alive(pid));
}

#[test]
fn renaming_a_manifest_keeps_the_session_running_and_moves_its_status_file() {
    let (_tmp, dir) = sessions_dir();
    // metadata.name is explicit, so the session's identity does not depend on the file name.
    write_file(&dir.join("a.yaml"), &sleeper("web", 300));
    let _c = Controller::start(&dir, &[]);
    let pid = running_pid(&dir, "a");
    let uid = status(&dir, "a").unwrap()["metadata"]["uid"].clone();

    std::fs::rename(dir.join("a.yaml"), dir.join("b.yaml")).unwrap();

    let s = wait_status(&dir, "b", "the moved status", |s| {
        s["status"]["phase"] == "Running"
    });
    assert_eq!(s["metadata"]["name"], "web");
    assert_eq!(s["metadata"]["manifest"], "b.yaml");
    assert_eq!(s["metadata"]["uid"], uid, "same identity: {s:#?}");
    assert_eq!(s["status"]["pid"], pid, "same process: {s:#?}");
    assert_eq!(s["status"]["observedGeneration"], 1, "{s:#?}");
    assert!(alive(pid));
    wait_for("a.status.yaml to be removed once a.yaml is gone", || {
        (!dir.join("a.status.yaml").exists()).then_some(())
    });
    // Still the same process after the move settled.
    assert_eq!(status(&dir, "b").unwrap()["status"]["pid"], pid);
}

#[test]
fn a_half_written_manifest_keeps_the_session_running_and_reports_the_error_until_fixed() {
    let (_tmp, dir) = sessions_dir();
    let text = sleeper("web", 300);
    let manifest = dir.join("web.yaml");
    write_file(&manifest, &text);
    let _c = Controller::start(&dir, &[]);
    let pid = running_pid(&dir, "web");

    // Truncate in place and write only the beginning, like a slow writer caught midway.
    std::fs::write(&manifest, "apiVersion: sessionlet.dev/v1alpha1\nkind: Sess").unwrap();
    let s = wait_status(&dir, "web", "ManifestValid False", |s| {
        condition(s, "ManifestValid").is_some_and(|c| c["status"] == "False")
    });
    assert_eq!(s["status"]["phase"], "Running", "{s:#?}");
    assert_eq!(
        s["status"]["pid"], pid,
        "the session is not disturbed: {s:#?}"
    );
    assert_eq!(s["status"]["observedGeneration"], 1, "{s:#?}");
    let c = condition(&s, "ManifestValid").unwrap();
    assert_eq!(c["reason"], "ManifestInvalid", "{s:#?}");
    let positions = error_positions(&s, "web.yaml");
    assert!(
        !positions.is_empty() && positions.iter().all(|&(l, c)| l >= 1 && c >= 1),
        "the error names the file, line and column: {s:#?}"
    );
    assert!(alive(pid));

    // Fixing the file clears the condition and the errors, still without a restart.
    write_file(&manifest, &text);
    let s = wait_status(&dir, "web", "ManifestValid True", |s| {
        condition(s, "ManifestValid").is_some_and(|c| c["status"] == "True")
    });
    assert!(
        s["status"]["errors"]
            .as_array()
            .is_none_or(|e| e.is_empty()),
        "{s:#?}"
    );
    assert_eq!(s["status"]["phase"], "Running", "{s:#?}");
    assert_eq!(s["status"]["pid"], pid, "{s:#?}");
    assert_eq!(s["status"]["observedGeneration"], 1, "{s:#?}");
    assert!(alive(pid));
}

#[test]
fn a_manifest_emptied_while_it_is_being_rewritten_keeps_the_session_running() {
    let (_tmp, dir) = sessions_dir();
    let text = sleeper("web", 300);
    let manifest = dir.join("web.yaml");
    write_file(&manifest, &text);
    let _c = Controller::start(&dir, &[]);
    let pid = running_pid(&dir, "web");

    // A slow writer (`cat > web.yaml`, an upload, an editor writing in place) first truncates the file.
    std::fs::File::create(&manifest).unwrap();
    prove_rescan(&dir, "while-empty");
    assert!(
        alive(pid),
        "the session was stopped while its manifest was empty"
    );
    let raw = std::fs::read_to_string(dir.join("web.status.yaml")).unwrap_or_default();
    let s = status(&dir, "web")
        .unwrap_or_else(|| panic!("web.status.yaml holds no status document: {raw:?}"));
    assert_eq!(s["status"]["phase"], "Running", "{s:#?}");
    assert_eq!(
        s["status"]["pid"], pid,
        "the session is not disturbed: {s:#?}"
    );

    // The write completes: still the same process.
    std::fs::write(&manifest, &text).unwrap();
    prove_rescan(&dir, "after-write");
    let s = status(&dir, "web").unwrap();
    assert_eq!(s["status"]["pid"], pid, "{s:#?}");
    assert_eq!(s["status"]["observedGeneration"], 1, "{s:#?}");
}

#[test]
fn a_configmap_style_data_symlink_swap_applies_the_new_spec() {
    let (_tmp, dir) = sessions_dir();
    let old = dir.join("..2026_a");
    std::fs::create_dir(&old).unwrap();
    std::fs::write(old.join("x.yaml"), sleeper("x", 301)).unwrap();
    std::os::unix::fs::symlink("..2026_a", dir.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/x.yaml", dir.join("x.yaml")).unwrap();
    let _c = Controller::start(&dir, &[]);
    let pid = running_pid(&dir, "x");
    assert!(cmdline(pid).contains("sleep 301"), "{}", cmdline(pid));

    // What the kubelet does: a new timestamped folder, a new link, renamed over `..data`, the old folder removed.
    let new = dir.join("..2026_b");
    std::fs::create_dir(&new).unwrap();
    std::fs::write(new.join("x.yaml"), sleeper("x", 302)).unwrap();
    std::os::unix::fs::symlink("..2026_b", dir.join("..data_tmp")).unwrap();
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    std::fs::remove_dir_all(&old).unwrap();

    let s = wait_status(&dir, "x", "generation 2 running", |s| {
        s["status"]["observedGeneration"] == 2
            && s["status"]["phase"] == "Running"
            && s["status"]["pid"].is_u64()
    });
    let new_pid = s["status"]["pid"].as_u64().unwrap() as u32;
    assert_ne!(new_pid, pid, "restarted with the new spec: {s:#?}");
    assert!(
        cmdline(new_pid).contains("sleep 302"),
        "{}",
        cmdline(new_pid)
    );
    wait_for("the old process to be stopped", || {
        (!alive(pid)).then_some(())
    });
    // Kubernetes' own entries are not manifests.
    assert!(!dir.join("..data.status.yaml").exists());
}

#[test]
fn a_git_checkout_in_the_watched_directory_applies_the_changes() {
    let (_tmp, dir) = sessions_dir();
    git(&dir, &["init", "-q", "-b", "v1"]);
    write_file(&dir.join("keep.yaml"), &sleeper("keep", 300));
    write_file(&dir.join("gone.yaml"), &sleeper("gone", 300));
    write_file(&dir.join("edit.yaml"), &sleeper("edit", 301));
    git(&dir, &["add", "-A"]);
    git(&dir, &["commit", "-q", "-m", "v1"]);
    git(&dir, &["checkout", "-q", "-b", "v2"]);
    std::fs::remove_file(dir.join("gone.yaml")).unwrap();
    write_file(&dir.join("new.yaml"), &sleeper("new", 300));
    write_file(&dir.join("edit.yaml"), &sleeper("edit", 302));
    git(&dir, &["add", "-A"]);
    git(&dir, &["commit", "-q", "-m", "v2"]);
    git(&dir, &["checkout", "-q", "v1"]);
    assert!(!dir.join("new.yaml").exists());

    let _c = Controller::start(&dir, &[]);
    let keep = running_pid(&dir, "keep");
    let gone = running_pid(&dir, "gone");
    let edit = running_pid(&dir, "edit");

    git(&dir, &["checkout", "-q", "v2"]);
    let new = running_pid(&dir, "new");
    assert!(cmdline(new).contains("sleep 300"));
    let s = wait_status(&dir, "edit", "the edited spec running", |s| {
        s["status"]["observedGeneration"] == 2
            && s["status"]["phase"] == "Running"
            && s["status"]["pid"].is_u64()
    });
    let edit2 = s["status"]["pid"].as_u64().unwrap() as u32;
    assert_ne!(edit2, edit);
    assert!(cmdline(edit2).contains("sleep 302"), "{}", cmdline(edit2));
    wait_for("the removed session to stop", || {
        (!alive(gone)).then_some(())
    });
    wait_for("the removed session's status file to go", || {
        (!dir.join("gone.status.yaml").exists()).then_some(())
    });
    assert_eq!(
        status(&dir, "keep").unwrap()["status"]["pid"],
        keep,
        "an unchanged file leaves its session alone"
    );

    // And back: the removed session comes back, the added one stops.
    git(&dir, &["checkout", "-q", "v1"]);
    running_pid(&dir, "gone");
    wait_for("the session of the branch we left to stop", || {
        (!alive(new)).then_some(())
    });
    wait_for("new.status.yaml to go", || {
        (!dir.join("new.status.yaml").exists()).then_some(())
    });
    assert_eq!(status(&dir, "keep").unwrap()["status"]["pid"], keep);
    assert!(alive(keep));
}

#[test]
fn a_name_declared_in_two_files_runs_from_the_lexically_first_and_the_other_is_invalid() {
    let (_tmp, dir) = sessions_dir();
    // Written in reverse order, so neither creation time nor inode order picks the winner.
    write_file(&dir.join("b.yaml"), &sleeper("dup", 302));
    write_file(&dir.join("a.yaml"), &sleeper("dup", 301));
    let _c = Controller::start(&dir, &[]);
    let pid = running_pid(&dir, "a");
    assert!(
        cmdline(pid).contains("sleep 301"),
        "a.yaml's spec runs: {}",
        cmdline(pid)
    );
    let b = wait_phase(&dir, "b", "Invalid");
    assert_eq!(b["status"]["reason"], "DuplicateName", "{b:#?}");
    assert_eq!(b["metadata"]["name"], "dup", "{b:#?}");
    let message = b["status"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("a.yaml"), "names the winner: {b:#?}");
    assert!(b["status"]["pid"].is_null(), "{b:#?}");
    let c = wait_for("one session in the controller status", || {
        controller_status(&dir).filter(|c| c["sessionsByPhase"]["Running"] == 1)
    });
    assert_eq!(c["totalSessions"], 1, "{c:#?}");
}

#[test]
fn a_symlink_resolving_outside_the_directory_is_refused() {
    let (tmp, dir) = sessions_dir();
    let outside = tmp.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    let marker = tmp.path().join("evil-ran");
    std::fs::write(
        outside.join("evil.yaml"),
        session(
            "evil",
            &format!(
                "command: [/bin/sh, -c, 'touch {}; exec sleep 300']",
                marker.display()
            ),
        ),
    )
    .unwrap();
    std::os::unix::fs::symlink("../outside/evil.yaml", dir.join("evil.yaml")).unwrap();
    write_file(&dir.join("ok.yaml"), &sleeper("ok", 300));
    let _c = Controller::start(&dir, &[]);
    running_pid(&dir, "ok");
    prove_rescan(&dir, "after-start");
    assert!(!marker.exists(), "the linked manifest ran");
    assert!(
        status(&dir, "evil")
            .is_none_or(|s| s["status"]["phase"] != "Running" && s["status"]["pid"].is_null()),
        "{:#?}",
        status(&dir, "evil")
    );
    let c = wait_for("the controller status", || {
        controller_status(&dir).filter(|c| c["sessionsByPhase"]["Completed"] == 1)
    });
    assert_eq!(c["sessionsByPhase"]["Running"], 1, "{c:#?}");
    assert_eq!(c["totalSessions"], 2, "ok and the probe only: {c:#?}");
}

#[test]
fn poll_mode_picks_up_a_new_manifest_without_inotify() {
    let (_tmp, dir) = sessions_dir();
    let c = Controller::start(&dir, &["--poll"]);
    wait_for("the controller status file", || controller_status(&dir));
    assert!(!has_inotify(c.pid()), "--poll must not use inotify");
    write_file(&dir.join("web.yaml"), &sleeper("web", 300));
    let pid = running_pid(&dir, "web");
    assert!(alive(pid));
}

#[test]
fn an_invalid_manifest_gets_an_invalid_status_with_the_line_and_column_of_the_error() {
    let (_tmp, dir) = sessions_dir();
    // An unclosed flow sequence: the parser trips on line 6, column 16.
    write_file(
        &dir.join("broken.yaml"),
        "# An unclosed flow sequence.\napiVersion: sessionlet.dev/v1alpha1\nkind: Session\nspec:\n  command: [/bin/sh, -c, \"echo hi\"\n  restartPolicy: Never\n",
    );
    let _c = Controller::start(&dir, &[]);
    let s = wait_phase(&dir, "broken", "Invalid");
    assert_eq!(s["apiVersion"], "sessionlet.dev/v1alpha1");
    assert_eq!(s["kind"], "SessionStatus");
    assert_eq!(s["metadata"]["manifest"], "broken.yaml");
    assert_eq!(s["status"]["reason"], "ManifestInvalid", "{s:#?}");
    assert!(s["status"]["pid"].is_null());
    assert_eq!(error_positions(&s, "broken.yaml"), vec![(6, 16)], "{s:#?}");
    let errors = s["status"]["errors"].to_string();
    assert!(errors.contains("YAML syntax error"), "{s:#?}");
    assert!(!dir.join("broken.logs").exists(), "nothing ran");
}

#[test]
fn files_that_are_not_manifests_are_ignored() {
    let (_tmp, dir) = sessions_dir();
    let ignored: Vec<(PathBuf, String)> = [
        ("x.yaml~", "backup"),
        (".hidden.yaml", "hidden"),
        ("x.swp", "swap"),
        ("notes.txt", "notes"),
        ("x.status.yaml", "status"),
    ]
    .iter()
    .map(|(file, name)| (dir.join(file), sleeper(name, 300)))
    .collect();
    for (path, text) in &ignored {
        std::fs::write(path, text).unwrap();
    }
    write_file(&dir.join("real.yaml"), &sleeper("real", 300));
    let _c = Controller::start(&dir, &[]);
    running_pid(&dir, "real");
    prove_rescan(&dir, "after-start");

    assert_eq!(
        status_files(&dir),
        vec![
            "probe-after-start.status.yaml".to_string(),
            "real.status.yaml".into(),
            "x.status.yaml".into()
        ],
        "status files only for the manifests"
    );
    for (path, text) in &ignored {
        assert_eq!(
            &std::fs::read_to_string(path).unwrap(),
            text,
            "{} untouched",
            path.display()
        );
    }
    let c = wait_for("the controller status", || {
        controller_status(&dir).filter(|c| c["sessionsByPhase"]["Completed"] == 1)
    });
    assert_eq!(c["totalSessions"], 2, "real and the probe only: {c:#?}");
    assert_eq!(c["sessionsByPhase"]["Running"], 1, "{c:#?}");
    assert!(
        c["sessionsByPhase"].get("Invalid").is_none(),
        "nothing reported invalid: {c:#?}"
    );
}
