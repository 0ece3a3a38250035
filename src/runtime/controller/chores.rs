//! Chores: file work an exit or a spawn makes necessary but that nothing
//! waits for, done once the pass has sent its spawn requests, so that a
//! crashed session's replacement is not queued behind them.

use std::path::PathBuf;

use super::spawner::prune_attempt_logs;
use crate::runtime::log_guard::LogGuard;

/// A session's older attempt logs to remove (see [`prune_attempt_logs`]).
#[derive(Debug)]
struct Prune {
    dir: PathBuf,
    generation: u64,
    attempt: u32,
    keep: u32,
}

/// Work left for the end of the pass.
#[derive(Debug, Default)]
pub(super) struct Chores {
    /// Logs of ended attempts, to stop guarding and cap in place.
    logs_to_cap: Vec<PathBuf>,
    /// Log folders to prune after a new attempt was asked for.
    prunes: Vec<Prune>,
}

impl Chores {
    /// The attempt that wrote `path` ended: its log is final.
    pub(super) fn cap_log(&mut self, path: PathBuf) {
        self.logs_to_cap.push(path);
    }

    /// A new attempt was asked for: the logs of attempts it outdates go.
    pub(super) fn prune_logs(&mut self, dir: PathBuf, generation: u64, attempt: u32, keep: u32) {
        self.prunes.push(Prune {
            dir,
            generation,
            attempt,
            keep,
        });
    }

    /// Does what was left, in the order it was asked.
    pub(super) fn run(&mut self, log_guard: &LogGuard) {
        for path in self.logs_to_cap.drain(..) {
            log_guard.finish(&path);
        }
        for p in self.prunes.drain(..) {
            prune_attempt_logs(&p.dir, p.generation, p.attempt, p.keep);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pruning_waits_for_the_run_and_then_keeps_the_newest_attempts() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        for n in 1..=4 {
            std::fs::write(dir.join(format!("attempt-{n}.stdout.log")), b"x").unwrap();
        }
        let mut chores = Chores::default();
        chores.prune_logs(dir.clone(), 1, 4, 2);
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            4,
            "nothing before the run"
        );
        chores.run(&LogGuard::new(false));
        let mut left: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["attempt-3.stdout.log", "attempt-4.stdout.log"]);
    }
}
