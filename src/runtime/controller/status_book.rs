//! The status book: which status files were written with what content, which
//! are to be written, and the figures kept from one pass to the next (the
//! controller status's hash, each session's phase as counted).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::core::Phase;

/// What the status writer remembers between passes.
#[derive(Default)]
pub(super) struct StatusBook {
    /// The hash of each status file's content as last written.
    written: HashMap<PathBuf, u64>,
    /// The stems that have a status file.
    written_stems: BTreeSet<String>,
    /// The stems whose status must be rendered at the end of this pass.
    dirty_stems: BTreeSet<String>,
    /// The controller status as last written (its hash, when).
    controller_status_hash: u64,
    controller_status_at: Option<Instant>,
    /// Each session's phase as last counted, and the counts by phase.
    phases: HashMap<String, Phase>,
    phase_counts: BTreeMap<Phase, u64>,
}

/// The stems to render.
impl StatusBook {
    /// The status of file `stem` is to be rendered.
    pub(super) fn mark(&mut self, stem: String) {
        self.dirty_stems.insert(stem);
    }

    /// The statuses of these files are to be rendered.
    pub(super) fn mark_all(&mut self, stems: impl IntoIterator<Item = String>) {
        self.dirty_stems.extend(stems);
    }

    /// True when the status of `stem` waits to be rendered.
    pub(super) fn is_marked(&self, stem: &str) -> bool {
        self.dirty_stems.contains(stem)
    }

    /// True when no status waits to be rendered.
    pub(super) fn nothing_marked(&self) -> bool {
        self.dirty_stems.is_empty()
    }

    /// Takes the stems to render now; those `wait` holds back stay marked.
    pub(super) fn take_marked(&mut self, wait: impl Fn(&str) -> bool) -> BTreeSet<String> {
        let (held, ready): (BTreeSet<String>, BTreeSet<String>) =
            std::mem::take(&mut self.dirty_stems)
                .into_iter()
                .partition(|s| wait(s));
        self.dirty_stems = held;
        ready
    }
}

/// The status files as written.
impl StatusBook {
    /// True when `path` holds content of this hash already.
    pub(super) fn holds(&self, path: &PathBuf, hash: u64) -> bool {
        self.written.get(path) == Some(&hash)
    }

    /// `path`, the status of `stem`, was written with content of this hash.
    pub(super) fn wrote(&mut self, path: PathBuf, hash: u64, stem: String) {
        self.written.insert(path, hash);
        self.written_stems.insert(stem);
    }

    /// `path` no longer holds a status written by us.
    pub(super) fn unwritten(&mut self, path: &PathBuf) {
        self.written.remove(path);
    }

    /// The file `stem` has no status any more.
    pub(super) fn gone(&mut self, stem: &str, path: &PathBuf) {
        self.written_stems.remove(stem);
        self.written.remove(path);
    }

    /// The stems that have a status file.
    pub(super) fn written_stems(&self) -> Vec<String> {
        self.written_stems.iter().cloned().collect()
    }

    /// Nothing on disk can be trusted to be as written (the status folder
    /// was replaced): everything is written again.
    pub(super) fn forget_written(&mut self) {
        self.written.clear();
        self.written_stems.clear();
        self.controller_status_hash = 0;
    }
}

/// The controller status as written.
impl StatusBook {
    /// True when the controller status must be written: `force`, changed
    /// content, or not written for `refresh`.
    pub(super) fn controller_status_due(&self, hash: u64, force: bool, refresh: Duration) -> bool {
        force
            || hash != self.controller_status_hash
            || self
                .controller_status_at
                .is_none_or(|t| t.elapsed() >= refresh)
    }

    /// The controller status was written with this content.
    pub(super) fn wrote_controller_status(&mut self, hash: u64) {
        self.controller_status_hash = hash;
        self.controller_status_at = Some(Instant::now());
    }

    /// True when the controller status was written less than `within` ago.
    pub(super) fn controller_status_recent(&self, within: Duration) -> bool {
        self.controller_status_at
            .is_some_and(|t| t.elapsed() < within)
    }
}

/// The sessions by phase, kept rather than recounted.
impl StatusBook {
    /// Counts every session's phase afresh.
    pub(super) fn recount(&mut self, phases: impl IntoIterator<Item = (String, Phase)>) {
        self.phases = phases.into_iter().collect();
        self.phase_counts.clear();
        for p in self.phases.values() {
            *self.phase_counts.entry(*p).or_default() += 1;
        }
    }

    /// Moves one session's count to its phase now (`None`: it is gone).
    pub(super) fn moved(&mut self, name: &str, now: Option<Phase>) {
        let was = match now {
            Some(p) => self.phases.insert(name.to_string(), p),
            None => self.phases.remove(name),
        };
        if was == now {
            return;
        }
        if let Some(c) = was.and_then(|p| self.phase_counts.get_mut(&p)) {
            *c = c.saturating_sub(1);
        }
        if let Some(p) = now {
            *self.phase_counts.entry(p).or_default() += 1;
        }
    }

    /// How many sessions are in `phase`.
    pub(super) fn count(&self, phase: Phase) -> u64 {
        self.phase_counts.get(&phase).copied().unwrap_or(0)
    }

    /// The counts by phase, without empty phases.
    pub(super) fn counts(&self) -> impl Iterator<Item = (Phase, u64)> + '_ {
        self.phase_counts
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(p, n)| (*p, *n))
    }
}
