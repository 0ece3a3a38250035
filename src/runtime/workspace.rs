//! A Git worktree per session (`spec.workspace`), with the real `git`.
//!
//! Before the first attempt the session's branch is made from `base` when
//! missing, and a worktree for it is added in the status folder
//! (`NAME.workspace/`); every attempt and resume runs there (the agent CLI's
//! conversations are tied to their working directory). `git worktree`
//! handles the locking and the shared object store.
//!
//! When the session is deleted or collected, the worktree is removed only
//! when `git status --porcelain` is empty; a dirty one is kept, and the
//! status (the tombstone) says so. The branch is always kept.
//!
//! Git is slow next to a reconcile pass (a few milliseconds per call): it
//! runs at spawn preparation, only for a worktree not made yet, at an
//! attempt's end (the dirty flag) and at deletion, never on every pass.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};

use super::process::SpawnError;
use crate::api::manifest::Workspace;
use crate::core::Reason;

/// What the status shows of a session's worktree (`status.workspace`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkspaceInfo {
    /// The worktree (absolute).
    pub path: PathBuf,
    /// The repository it belongs to (absolute).
    pub repo: PathBuf,
    /// Its branch.
    pub branch: String,
    /// Uncommitted changes at the last check (an attempt's end, the deletion).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dirty: Option<bool>,
    /// Set once the session was deleted: `removed` (clean) or `kept` (dirty,
    /// or git failed: the message says why).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub released: Option<String>,
    /// For a person.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// The worktrees of every session that has one.
#[derive(Debug, Default)]
pub struct Workspaces {
    by_name: BTreeMap<String, WorkspaceInfo>,
}

/// Why a branch or base name cannot be given to git, if it cannot (a
/// simplified `git check-ref-format`, plus no leading `-`, which git would
/// read as an option).
pub fn ref_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        return Some("is empty");
    }
    if name.starts_with('-') {
        return Some("cannot start with '-'");
    }
    if name.contains("..")
        || name.contains("@{")
        || name.ends_with('/')
        || name.ends_with(".lock")
        || name.ends_with('.')
        || name.chars().any(|c| {
            c.is_whitespace()
                || c.is_control()
                || matches!(c, '~' | '^' | ':' | '?' | '*' | '[' | '\\')
        })
    {
        return Some("is not a valid Git ref name (no spaces, '..', '~', '^', ':', '?', '*', '[', '\\', no trailing '/', '.' or '.lock')");
    }
    None
}

/// The branch of session `name`: the given one (replicas add `-ORDINAL`),
/// else `sessionlet/NAME`.
pub fn branch_of(ws: &Workspace, name: &str, ordinal: Option<u32>) -> String {
    match (&ws.branch, ordinal) {
        (Some(b), Some(i)) => format!("{b}-{i}"),
        (Some(b), None) => b.clone(),
        (None, _) => format!("sessionlet/{name}"),
    }
}

/// Runs git; stdout on success, else a one-line error with git's stderr.
fn git(dir: &Path, args: &[&str]) -> Result<String, String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .stdin(Stdio::null())
        // Never ask for anything (no editor, no credentials, no pager).
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_EDITOR", "true")
        .env("GIT_PAGER", "cat")
        .output()
        .map_err(|e| format!("cannot run git: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        let err = String::from_utf8_lossy(&out.stderr);
        Err(err
            .trim()
            .lines()
            .last()
            .unwrap_or("git failed")
            .to_string())
    }
}

impl Workspaces {
    /// Makes (or finds) the worktree of session `name` and returns it: the
    /// session's working directory.
    pub fn prepare(
        &mut self,
        name: &str,
        ordinal: Option<u32>,
        ws: &Workspace,
        manifest_dir: &Path,
        status_dir: &Path,
    ) -> Result<PathBuf, SpawnError> {
        let fail = |message: String| SpawnError {
            reason: Reason::SpawnFailed,
            message,
        };
        let path = status_dir.join(format!("{name}.workspace"));
        let repo = manifest_dir.join(&ws.repo);
        let branch = branch_of(ws, name, ordinal);
        // Made by an earlier attempt (or controller): reuse it as it is.
        if path.join(".git").exists() {
            let info = self.by_name.entry(name.to_string()).or_default();
            info.path = path.clone();
            info.repo = repo;
            info.branch = branch;
            info.released = None;
            return Ok(path);
        }
        if let Err(e) = git(&repo, &["rev-parse", "--git-dir"]) {
            return Err(fail(format!(
                "spec.workspace.repo: {} is not a Git repository ({e}); point it at a repository (git init it, or fix the path)",
                repo.display()
            )));
        }
        let have_branch = git(
            &repo,
            &[
                "rev-parse",
                "--verify",
                "--quiet",
                &format!("refs/heads/{branch}"),
            ],
        )
        .is_ok();
        if !have_branch {
            let base = ws.base.as_deref().unwrap_or("HEAD");
            git(&repo, &["branch", "--", &branch, base]).map_err(|e| {
                fail(format!(
                    "spec.workspace: cannot make branch {branch} from {base} in {}: {e}",
                    repo.display()
                ))
            })?;
        }
        let p = path
            .to_str()
            .ok_or_else(|| fail(format!("{} is not valid UTF-8", path.display())))?;
        git(&repo, &["worktree", "add", "--", p, &branch]).map_err(|e| {
            fail(format!(
                "spec.workspace: cannot add a worktree for branch {branch} at {p}: {e}"
            ))
        })?;
        self.by_name.insert(
            name.to_string(),
            WorkspaceInfo {
                path: path.clone(),
                repo,
                branch,
                dirty: Some(false),
                released: None,
                message: None,
            },
        );
        Ok(path)
    }

    /// Checks whether the worktree has uncommitted changes (an attempt ended).
    pub fn check(&mut self, name: &str) {
        if let Some(info) = self.by_name.get_mut(name) {
            info.dirty = git(&info.path, &["status", "--porcelain"])
                .ok()
                .map(|s| !s.trim().is_empty());
        }
    }

    /// The session is deleted: removes a clean worktree, keeps a dirty one
    /// (the branch stays in both cases). Once per session.
    pub fn release(&mut self, name: &str) {
        let Some(info) = self.by_name.get_mut(name) else {
            return;
        };
        if info.released.is_some() {
            return;
        }
        match git(&info.path, &["status", "--porcelain"]) {
            Ok(s) if s.trim().is_empty() => {
                let p = info.path.to_string_lossy().into_owned();
                match git(&info.repo, &["worktree", "remove", "--", &p]) {
                    Ok(_) => {
                        info.dirty = Some(false);
                        info.released = Some("removed".into());
                        info.message = Some(format!(
                            "the worktree was clean and is removed; branch {} is kept",
                            info.branch
                        ));
                    }
                    Err(e) => {
                        info.released = Some("kept".into());
                        info.message = Some(format!(
                            "the worktree is kept: git worktree remove failed: {e}"
                        ));
                    }
                }
            }
            Ok(_) => {
                info.dirty = Some(true);
                info.released = Some("kept".into());
                info.message = Some(format!(
                    "the worktree has uncommitted changes and is kept at {}; branch {} is kept",
                    info.path.display(),
                    info.branch
                ));
            }
            Err(e) => {
                info.released = Some("kept".into());
                info.message = Some(format!("the worktree is kept: git status failed: {e}"));
            }
        }
        tracing::info!(
            session = name,
            "workspace: {}",
            info.message.as_deref().unwrap_or_default()
        );
    }

    /// The status's `workspace` block.
    pub fn status(&self, name: &str) -> Option<serde_json::Value> {
        serde_json::to_value(self.by_name.get(name)?).ok()
    }

    /// Restores what an earlier controller's status says.
    pub fn restore(&mut self, name: &str, status: &serde_json::Value) {
        if let Ok(info) = serde_json::from_value::<WorkspaceInfo>(status["workspace"].clone()) {
            self.by_name.insert(name.to_string(), info);
        }
    }

    /// Forgets a session (after its release).
    pub fn forget(&mut self, name: &str) {
        self.by_name.remove(name);
    }
}

/// The working directory of an attempt of `d`: its worktree (made if
/// needed; a relative `workingDir` is inside it), or `cwd` without
/// `spec.workspace`.
pub fn cwd_for(
    workspaces: &mut Workspaces,
    d: &crate::core::DesiredSession,
    cwd: PathBuf,
    manifest_dir: &Path,
    status_dir: &Path,
) -> Result<PathBuf, SpawnError> {
    let Some(ws) = &d.spec.workspace else {
        return Ok(cwd);
    };
    let ordinal = d.replica.as_ref().map(|r| r.ordinal);
    let root = workspaces.prepare(&d.name, ordinal, ws, manifest_dir, status_dir)?;
    Ok(match &d.spec.working_dir {
        Some(w) if w.is_relative() => root.join(w),
        _ => root,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ref_names() {
        assert_eq!(ref_problem("agent/fix-1"), None);
        assert_eq!(ref_problem("main"), None);
        assert!(ref_problem("-f").is_some());
        assert!(ref_problem("a b").is_some());
        assert!(ref_problem("a..b").is_some());
        assert!(ref_problem("a/").is_some());
        assert!(ref_problem("x.lock").is_some());
        assert!(ref_problem("").is_some());
    }

    #[test]
    fn branches() {
        let ws = Workspace {
            repo: "r".into(),
            ..Workspace::default()
        };
        assert_eq!(branch_of(&ws, "fix", None), "sessionlet/fix");
        assert_eq!(branch_of(&ws, "pool-1", Some(1)), "sessionlet/pool-1");
        let ws = Workspace {
            branch: Some("agent/x".into()),
            ..ws
        };
        assert_eq!(branch_of(&ws, "pool-1", Some(1)), "agent/x-1");
        assert_eq!(branch_of(&ws, "s", None), "agent/x");
    }
}
