//! Finding the real Claude Code CLI for the agent tests, and skipping
//! visibly without one. Included by path from each agent test file.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// The CLI binary to test: `SESSIONLET_CLAUDE_BIN`, else the one
/// `.ci/install-claude.sh` installs, else `claude` on PATH.
pub fn claude_bin() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("SESSIONLET_CLAUDE_BIN").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        assert!(
            p.is_file(),
            "SESSIONLET_CLAUDE_BIN={} does not exist",
            p.display()
        );
        return Some(p);
    }
    let local = Path::new(env!("CARGO_MANIFEST_DIR")).join(".ci/claude/node_modules/.bin/claude");
    if local.is_file() {
        return Some(local);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("claude"))
        .find(|p| p.is_file())
}

/// The binary, or a visible skip notice (written straight to stderr so that
/// the test harness's output capture does not hide it).
#[macro_export]
macro_rules! require_claude {
    ($test:literal) => {
        match $crate::claude::claude_bin() {
            Some(bin) => bin,
            None => {
                use std::io::Write as _;
                let _ = writeln!(
                    std::io::stderr(),
                    "SKIPPED: no claude binary ({}): run .ci/install-claude.sh or set SESSIONLET_CLAUDE_BIN",
                    $test
                );
                return;
            }
        }
    };
}
