//! A Git worktree per session (`spec.workspace`), end to end with the real
//! `git` and `sessionlet run` on temporary folders: two sessions on one
//! repository run in two worktrees on their own branches, a restarted
//! attempt runs in the same worktree, and deleting the sessions removes a
//! clean worktree and keeps a dirty one, the branches staying in both cases.
//!
//! Without `git` the tests print "SKIPPED: no git" and pass.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{session, status, wait_for, wait_status, write_file, Controller, KeeperGuard};

fn have_git() -> bool {
    Command::new("git")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

macro_rules! require_git {
    ($test:literal) => {
        if !have_git() {
            use std::io::Write as _;
            let _ = writeln!(std::io::stderr(), "SKIPPED: no git ({})", $test);
            return;
        }
    };
}

/// Runs git in `dir` with a fixed identity; its stdout.
fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.invalid")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.invalid")
        .output()
        .expect("git");
    assert!(out.status.success(), "git {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A repository with one commit on `main`.
fn repo(root: &Path) -> PathBuf {
    let repo = root.join("repo");
    std::fs::create_dir_all(&repo).expect("mkdir");
    git(&repo, &["init", "-q", "-b", "main"]);
    write_file(&repo.join("README"), "hello\n");
    git(&repo, &["add", "README"]);
    git(&repo, &["commit", "-q", "-m", "first"]);
    repo
}

fn q(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

/// A session in a worktree of `repo` that writes its branch and working
/// directory to `report` (outside the worktree), after `first` (shell).
fn spec(repo: &Path, report: &Path, first: &str) -> String {
    let script = format!(
        "{first} git rev-parse --abbrev-ref HEAD > {r}.tmp; pwd >> {r}.tmp; mv {r}.tmp {r}; exec sleep 600",
        r = report.display()
    );
    format!(
        "command: [/bin/sh, -c, {}]\nworkspace:\n  repo: {}\n  base: main\nrestartPolicy: OnFailure\nbackoff:\n  initialDelay: 1s\nterminationGracePeriod: 5s\n",
        q(&script),
        q(&repo.display().to_string()),
    )
}

fn report(path: &Path) -> Option<(String, String)> {
    let text = std::fs::read_to_string(path).ok()?;
    let mut lines = text.lines();
    Some((lines.next()?.to_string(), lines.next()?.to_string()))
}

fn get_wide(dir: &Path) -> Vec<Vec<String>> {
    let out = Command::new(common::bin())
        .args(["get", "--dir"])
        .arg(dir)
        .args(["-o", "wide"])
        .output()
        .expect("sessionlet get");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .collect()
}

#[test]
fn sessions_get_their_own_worktrees_and_only_clean_ones_are_removed() {
    require_git!("sessions_get_their_own_worktrees_and_only_clean_ones_are_removed");
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().canonicalize().expect("canonical");
    let dir = root.join("sessions");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let repo = repo(&root);
    let _keeper = KeeperGuard(dir.clone());
    // `clean` leaves its worktree alone; `dirty` fails its first attempt
    // after leaving a file behind, and its second attempt must find it.
    let (clean_out, dirty_out) = (root.join("clean.txt"), root.join("dirty.txt"));
    write_file(
        &dir.join("clean.yaml"),
        &session("clean", &spec(&repo, &clean_out, "")),
    );
    write_file(
        &dir.join("dirty.yaml"),
        &session(
            "dirty",
            &spec(
                &repo,
                &dirty_out,
                "if [ ! -f scratch ]; then echo x > scratch; exit 3; fi;",
            ),
        ),
    );
    let _c = Controller::start(&dir, &[]);

    let (clean_branch, clean_cwd) = wait_for("clean's report", || report(&clean_out));
    let (dirty_branch, dirty_cwd) = wait_for("dirty's report", || report(&dirty_out));
    assert_eq!(clean_branch, "sessionlet/clean");
    assert_eq!(dirty_branch, "sessionlet/dirty");
    let clean_ws = dir.join("clean.workspace");
    let dirty_ws = dir.join("dirty.workspace");
    assert_eq!(Path::new(&clean_cwd), clean_ws);
    // The restarted attempt ran in the same worktree (it found its file).
    assert_eq!(Path::new(&dirty_cwd), dirty_ws);
    let s = wait_status(&dir, "dirty", "second attempt running", |s| {
        s["status"]["attempt"] == 2 && s["status"]["phase"] == "Running"
    });
    assert_eq!(
        s["status"]["workspace"]["branch"], "sessionlet/dirty",
        "{s:#}"
    );
    assert_eq!(s["status"]["workspace"]["dirty"], true, "{s:#}");
    let s = status(&dir, "clean").expect("clean's status");
    assert_eq!(s["status"]["workspace"]["dirty"], false, "{s:#}");
    // Both branches come from main; the repository lists both worktrees.
    let list = git(&repo, &["worktree", "list"]);
    assert!(
        list.contains("clean.workspace") && list.contains("dirty.workspace"),
        "{list}"
    );
    // get -o wide shows branch and dirty.
    let rows = get_wide(&dir);
    let col = |n: &str| rows[0].iter().position(|h| h == n).expect(n);
    let row = |name: &str| rows.iter().find(|r| r[0] == name).expect(name).clone();
    assert_eq!(row("clean")[col("BRANCH")], "sessionlet/clean", "{rows:?}");
    assert_eq!(row("clean")[col("DIRTY")], "no", "{rows:?}");
    assert_eq!(row("dirty")[col("DIRTY")], "yes", "{rows:?}");

    // Deleting the manifests: the clean worktree goes, the dirty one stays.
    std::fs::remove_file(dir.join("clean.yaml")).expect("rm");
    std::fs::remove_file(dir.join("dirty.yaml")).expect("rm");
    wait_for("the clean worktree removed", || {
        (!clean_ws.exists()).then_some(())
    });
    let tomb = wait_for("dirty's tombstone", || {
        common::status_docs(&dir.join("dirty.tombstone.status.yaml"))?
            .into_iter()
            .next()
    });
    assert_eq!(tomb["status"]["workspace"]["released"], "kept", "{tomb:#}");
    assert!(
        tomb["status"]["workspace"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("uncommitted")),
        "{tomb:#}"
    );
    assert!(
        dirty_ws.join("scratch").is_file(),
        "the dirty worktree is kept"
    );
    let branches = git(&repo, &["branch", "--list"]);
    assert!(
        branches.contains("sessionlet/clean") && branches.contains("sessionlet/dirty"),
        "branches are kept: {branches}"
    );
    let list = git(&repo, &["worktree", "list"]);
    assert!(!list.contains("clean.workspace"), "{list}");
}

#[test]
fn a_workspace_outside_a_repository_fails_the_spawn_with_a_clear_message() {
    require_git!("a_workspace_outside_a_repository_fails_the_spawn_with_a_clear_message");
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().canonicalize().expect("canonical");
    let dir = root.join("sessions");
    let plain = root.join("not-a-repo");
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::create_dir_all(&plain).expect("mkdir");
    let _keeper = KeeperGuard(dir.clone());
    write_file(
        &dir.join("nowhere.yaml"),
        &session(
            "nowhere",
            &format!(
                "command: [/bin/true]\nworkspace:\n  repo: {}\nrestartPolicy: Never\n",
                q(&plain.display().to_string())
            ),
        ),
    );
    let _c = Controller::start(&dir, &[]);
    let s = wait_status(&dir, "nowhere", "a failed spawn", |s| {
        s["status"]["lastExit"].is_object()
    });
    let message = s["status"]["lastExit"]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(
        message.contains("spec.workspace.repo") && message.contains("is not a Git repository"),
        "{s:#}"
    );
}
