//! Per-session cgroups: a hard memory limit for sessions that have one, the
//! kernel's OOM counter, and for every session a whole-tree kill that no
//! grandchild escapes (see [`super::contain`]).
//!
//! Used where the controller may create cgroups under its own (cgroup v2 with
//! the memory controller delegated, else the v1 memory hierarchy). Elsewhere
//! the sampled usage enforces limits; [`Mode`] says which, and why.

use std::path::{Path, PathBuf};

/// How memory limits are enforced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// One cgroup per limited session under `root`.
    Cgroup {
        /// The folder holding the sessions' cgroups.
        root: PathBuf,
        /// cgroup v2 (else v1).
        v2: bool,
    },
    /// The usage sampler stops sessions over their limit.
    Sampled {
        /// Why cgroups are not used.
        why: String,
    },
}

impl Mode {
    /// A one-line description for the controller status.
    pub fn describe(&self) -> String {
        match self {
            Mode::Cgroup { root, v2 } => format!(
                "cgroup {} under {} (kernel-enforced limits, OOM kills reported)",
                if *v2 { "v2" } else { "v1 memory" },
                root.display()
            ),
            Mode::Sampled { why } => format!("sampled usage ({why})"),
        }
    }
}

/// Finds where this process may create memory cgroups. `key` names the
/// controller's folder; it is the same for every controller of one status
/// directory, so a restarted controller finds its sessions' cgroups.
pub fn detect(force_sampled: bool, key: &str) -> Mode {
    if force_sampled {
        return Mode::Sampled {
            why: "--memory-limits sampled was given".into(),
        };
    }
    let Ok(own) = std::fs::read_to_string("/proc/self/cgroup") else {
        return Mode::Sampled {
            why: "/proc/self/cgroup is unreadable".into(),
        };
    };
    let root_name = format!("sessionlet-{key}");
    // v2: our own cgroup must let us enable the memory controller for children.
    if let Some(path) = own.lines().find_map(|l| l.strip_prefix("0::")) {
        let base = Path::new("/sys/fs/cgroup").join(path.trim_start_matches('/'));
        let controllers =
            std::fs::read_to_string(base.join("cgroup.controllers")).unwrap_or_default();
        if controllers.split_whitespace().any(|c| c == "memory") {
            let root = base.join(&root_name);
            if std::fs::create_dir_all(&root).is_ok()
                && std::fs::write(base.join("cgroup.subtree_control"), "+memory").is_ok()
                && std::fs::write(root.join("cgroup.subtree_control"), "+memory").is_ok()
            {
                return Mode::Cgroup { root, v2: true };
            }
            let _ = std::fs::remove_dir(&root);
        }
    }
    // v1: the memory hierarchy.
    if let Some(path) = own.lines().find_map(|l| {
        let mut parts = l.splitn(3, ':');
        let (_, ctrls, path) = (parts.next()?, parts.next()?, parts.next()?);
        ctrls.split(',').any(|c| c == "memory").then_some(path)
    }) {
        let base = Path::new("/sys/fs/cgroup/memory").join(path.trim_start_matches('/'));
        let root = base.join(&root_name);
        if std::fs::create_dir_all(&root).is_ok() && root.join("memory.limit_in_bytes").exists() {
            return Mode::Cgroup { root, v2: false };
        }
        let _ = std::fs::remove_dir(&root);
        return Mode::Sampled {
            why: format!("cannot create a memory cgroup under {}", base.display()),
        };
    }
    Mode::Sampled {
        why: "no memory cgroup controller is available to this process".into(),
    }
}

/// The cgroup folder of a session.
pub fn session_path(root: &Path, session: &str) -> PathBuf {
    root.join(session)
}

/// Creates a session's cgroup, with a memory limit or none. A cgroup kept
/// from an attempt that had a limit loses it when the spec no longer has one.
pub fn prepare(path: &Path, v2: bool, limit: Option<u64>) -> std::io::Result<()> {
    let existed = path.is_dir();
    std::fs::create_dir_all(path)?;
    let Some(limit) = limit else {
        if existed && limited(path, v2) {
            if v2 {
                let _ = std::fs::write(path.join("memory.swap.max"), "max");
                let _ = std::fs::write(path.join("memory.max"), "max");
            } else {
                // memsw may never be below the limit: raise it first.
                let _ = std::fs::write(path.join("memory.memsw.limit_in_bytes"), "-1");
                let _ = std::fs::write(path.join("memory.limit_in_bytes"), "-1");
            }
        }
        return Ok(());
    };
    if v2 {
        std::fs::write(path.join("memory.max"), limit.to_string())?;
        // No swap, so the limit means what it says.
        let _ = std::fs::write(path.join("memory.swap.max"), "0");
    } else {
        // memsw may never be below the limit: lift it, set the limit, lower it.
        let _ = std::fs::write(path.join("memory.memsw.limit_in_bytes"), "-1");
        std::fs::write(path.join("memory.limit_in_bytes"), limit.to_string())?;
        let _ = std::fs::write(path.join("memory.memsw.limit_in_bytes"), limit.to_string());
    }
    Ok(())
}

/// True when a session's cgroup has a memory limit (one read).
fn limited(path: &Path, v2: bool) -> bool {
    let file = if v2 {
        "memory.max"
    } else {
        "memory.limit_in_bytes"
    };
    match std::fs::read_to_string(path.join(file)) {
        // v1 shows "no limit" as the largest page-aligned value.
        Ok(text) => text.trim() != "max" && text.trim().parse::<u64>().is_ok_and(|v| v < 1 << 62),
        Err(_) => false,
    }
}

/// The file a child writes `0` to in order to join the cgroup.
pub fn procs_file(path: &Path) -> PathBuf {
    path.join("cgroup.procs")
}

/// The kernel's count of OOM kills in the cgroup.
pub fn oom_kills(path: &Path, v2: bool) -> u64 {
    let file = if v2 {
        "memory.events"
    } else {
        "memory.oom_control"
    };
    std::fs::read_to_string(path.join(file))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("oom_kill ")?.trim().parse().ok())
        .unwrap_or(0)
}

/// Every process in the cgroup.
pub fn procs(path: &Path) -> Vec<u32> {
    std::fs::read_to_string(procs_file(path))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// Removes an empty session cgroup (after its last process exited).
pub fn remove(path: &Path) {
    let _ = std::fs::remove_dir(path);
}

/// Removes the controller's cgroup root (when every session is gone).
pub fn remove_root(mode: &Mode) {
    if let Mode::Cgroup { root, .. } = mode {
        if let Ok(entries) = std::fs::read_dir(root) {
            for e in entries.flatten() {
                if e.path().is_dir() {
                    let _ = std::fs::remove_dir(e.path());
                }
            }
        }
        let _ = std::fs::remove_dir(root);
    }
}
