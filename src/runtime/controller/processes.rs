//! The process table: each session's current (or last) process, the spawns
//! asked of the keeper and not answered yet, and the exits handled but not
//! yet saved. Only this table maps pids to sessions.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::time::Instant;

use crate::runtime::contain::Census;

/// What the shell knows of a session's current (or last) process.
#[derive(Debug, Clone, Default)]
pub(super) struct Live {
    pub(super) stem: String,
    pub(super) log_dir: PathBuf,
    pub(super) stdout: PathBuf,
    pub(super) stderr: PathBuf,
    pub(super) start_ticks: Option<u64>,
    pub(super) argv: Vec<String>,
    pub(super) cwd: PathBuf,
    /// The session's cgroup, where cgroups are available.
    pub(super) cgroup: Option<PathBuf>,
    /// The cgroup's OOM kill count when the attempt started.
    pub(super) oom_baseline: u64,
    /// The leader joins its cgroup after it started (from the joiner
    /// thread), not in the child before `exec`.
    pub(super) join_after_spawn: bool,
    /// The session's uid when the attempt started (its marker's value).
    pub(super) uid: String,
}

/// A spawn asked of the keeper, not answered yet.
#[derive(Debug)]
pub(super) struct Spawning {
    pub(super) name: String,
    pub(super) attempt: u32,
    pub(super) live: Live,
    pub(super) asked_at: Instant,
}

/// Every process the controller tracks, by session and by pid.
pub(super) struct Processes {
    /// Each session's current (or last) process.
    live: BTreeMap<String, Live>,
    /// The sessions' live pids.
    pids: HashMap<u32, String>,
    /// Spawns asked of the keeper and not answered yet, by tag.
    spawning: HashMap<u64, Spawning>,
    /// How many spawns in flight each file stem has: the status writer
    /// asks for each stem it renders, and a burst of thousands of spawns
    /// must not cost a walk over all of them per pass.
    in_flight_stems: HashMap<String, u32>,
    next_tag: u64,
    /// Exits handled but not yet saved in a status: acknowledged to the
    /// keeper only once saved (pid, session; no session for an exit that
    /// was not a session's, or was saved already).
    unacked: Vec<(u32, String)>,
    /// Exit records this controller wrote itself (orphans it reaped).
    reaped_by_us: BTreeSet<u32>,
    /// Pids found gone without an exit report at the last resync.
    suspects: BTreeSet<u32>,
    /// The orphans of the keeper and of the controller, listed once for
    /// the sweeps of one batch of exits (see `contain::Census`).
    census: Option<Census>,
}

impl Processes {
    /// An empty table; spawn tags start at 1.
    pub(super) fn new() -> Processes {
        Processes {
            live: BTreeMap::new(),
            pids: HashMap::new(),
            spawning: HashMap::new(),
            in_flight_stems: HashMap::new(),
            next_tag: 1,
            unacked: Vec::new(),
            reaped_by_us: BTreeSet::new(),
            suspects: BTreeSet::new(),
            census: None,
        }
    }
}

/// The processes: what is known of each session's process.
impl Processes {
    /// The session's current (or last) process.
    pub(super) fn live(&self, name: &str) -> Option<&Live> {
        self.live.get(name)
    }

    /// The session's current (or last) process, to update.
    pub(super) fn live_mut(&mut self, name: &str) -> Option<&mut Live> {
        self.live.get_mut(name)
    }

    /// Every session's current (or last) process.
    pub(super) fn lives_mut(&mut self) -> impl Iterator<Item = (&String, &mut Live)> {
        self.live.iter_mut()
    }

    /// Every session's current (or last) process.
    pub(super) fn lives(&self) -> impl Iterator<Item = &Live> {
        self.live.values()
    }

    /// The file stem the session's process was started from.
    pub(super) fn stem(&self, name: &str) -> Option<&String> {
        self.live.get(name).map(|l| &l.stem)
    }

    /// Remembers a session's last process (its logs) without a live pid.
    pub(super) fn remember(&mut self, name: &str, live: Live) {
        self.live.insert(name.to_string(), live);
    }

    /// Forgets a session's process; returns what was known.
    pub(super) fn forget(&mut self, name: &str) -> Option<Live> {
        self.live.remove(name)
    }
}

/// The pids: which session each live process is.
impl Processes {
    /// The session whose process `pid` is.
    pub(super) fn session_of(&self, pid: u32) -> Option<&String> {
        self.pids.get(&pid)
    }

    /// True when `pid` is a session's live process.
    pub(super) fn tracks(&self, pid: u32) -> bool {
        self.pids.contains_key(&pid)
    }

    /// True when the session has a live process.
    pub(super) fn is_running(&self, name: &str) -> bool {
        self.pids.values().any(|n| n == name)
    }

    /// The sessions with a live process (unordered).
    pub(super) fn live_names(&self) -> impl Iterator<Item = &String> {
        self.pids.values()
    }

    /// How many live processes there are.
    pub(super) fn live_count(&self) -> usize {
        self.pids.len()
    }

    /// Every live process, as (session, pid).
    pub(super) fn running(&self) -> Vec<(String, u32)> {
        self.pids.iter().map(|(p, n)| (n.clone(), *p)).collect()
    }

    /// A session's process runs: known by session and by pid.
    pub(super) fn started(&mut self, name: &str, pid: u32, live: Live) {
        self.live.insert(name.to_string(), live);
        self.pids.insert(pid, name.to_string());
    }

    /// A live pid belongs to a session (its process details come apart).
    pub(super) fn claim_pid(&mut self, name: &str, pid: u32) {
        self.pids.insert(pid, name.to_string());
    }

    /// The live processes whose leader is no longer the one started,
    /// as told by `gone(pid, start ticks)`: (pid, session).
    pub(super) fn gone(&self, gone: impl Fn(u32, Option<u64>) -> bool) -> Vec<(u32, String)> {
        self.pids
            .iter()
            .filter(|(pid, name)| {
                let ticks = self.live.get(*name).and_then(|l| l.start_ticks);
                ticks.is_some() && gone(**pid, ticks)
            })
            .map(|(p, n)| (*p, n.clone()))
            .collect()
    }

    /// Of the processes found gone now, those found gone at the last look
    /// too: they vanished, and are no longer tracked. The rest are the
    /// suspects of the next look (an exit report may be on its way).
    pub(super) fn vanished(&mut self, gone: Vec<(u32, String)>) -> Vec<(u32, String)> {
        let seen: BTreeSet<u32> = gone.iter().map(|(p, _)| *p).collect();
        let suspects = std::mem::replace(&mut self.suspects, seen);
        let mut vanished = Vec::new();
        for (pid, name) in gone {
            if suspects.contains(&pid) {
                self.suspects.remove(&pid);
                self.pids.remove(&pid);
                vanished.push((pid, name));
            }
        }
        vanished
    }
}

/// Gives back what a burst of spawns grew a map to once the burst is
/// answered (hash maps never shrink on their own; at 1000 sessions started
/// at once, the spawns in flight held about 640 KB for good). Small maps
/// keep their room, so a steady trickle of spawns does not reallocate.
fn release<K: std::hash::Hash + Eq, V>(map: &mut HashMap<K, V>) {
    if map.capacity() > 64 {
        map.shrink_to(map.len() * 2);
    }
}

/// The spawns asked of the keeper and not answered yet.
impl Processes {
    /// Records a spawn about to be asked; returns its tag.
    pub(super) fn ask(&mut self, name: &str, attempt: u32, live: Live) -> u64 {
        let tag = self.next_tag;
        self.next_tag = self.next_tag.wrapping_add(1).max(1);
        self.ask_again(
            tag,
            Spawning {
                name: name.to_string(),
                attempt,
                live,
                asked_at: Instant::now(),
            },
        );
        tag
    }

    /// A spawn the keeper could not be asked after all.
    pub(super) fn withdraw(&mut self, tag: u64) {
        self.answered(tag);
    }

    /// The spawn a reply answers.
    pub(super) fn answered(&mut self, tag: u64) -> Option<Spawning> {
        let s = self.spawning.remove(&tag)?;
        if let Some(n) = self.in_flight_stems.get_mut(&s.live.stem) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.in_flight_stems.remove(&s.live.stem);
            }
        }
        if self.spawning.is_empty() {
            let burst = self.spawning.capacity() > crate::runtime::heap::BURST;
            release(&mut self.spawning);
            release(&mut self.in_flight_stems);
            if burst {
                crate::runtime::heap::give_back();
            }
        }
        Some(s)
    }

    /// Every spawn not answered (the keeper died).
    pub(super) fn unanswered(&mut self) -> Vec<(u64, Spawning)> {
        self.in_flight_stems.clear();
        release(&mut self.in_flight_stems);
        std::mem::take(&mut self.spawning).into_iter().collect()
    }

    /// Puts back a spawn to be answered from a registry.
    pub(super) fn ask_again(&mut self, tag: u64, spawning: Spawning) {
        *self
            .in_flight_stems
            .entry(spawning.live.stem.clone())
            .or_default() += 1;
        if let Some(old) = self.spawning.insert(tag, spawning) {
            // Never expected (tags are unique): keep the count right.
            if let Some(n) = self.in_flight_stems.get_mut(&old.live.stem) {
                *n = n.saturating_sub(1);
            }
        }
    }

    /// True while a spawn of a session of file `stem` is in flight (the
    /// stem it was asked under).
    pub(super) fn in_flight(&self, stem: &str) -> bool {
        self.in_flight_stems.get(stem).is_some_and(|n| *n > 0)
    }

    /// True while spawns are in flight.
    pub(super) fn spawns_in_flight(&self) -> bool {
        !self.spawning.is_empty()
    }
}

/// The exits handled and not yet acknowledged.
impl Processes {
    /// A session's process ended: no longer live; its exit is held until
    /// the status holding it is saved. Returns the session.
    pub(super) fn exited(&mut self, pid: u32) -> Option<String> {
        let name = self.pids.remove(&pid)?;
        self.unacked.push((pid, name.clone()));
        Some(name)
    }

    /// An exit that is no session's (a killed duplicate, or one saved
    /// already): acknowledged at the next chance.
    pub(super) fn hold_exit(&mut self, pid: u32) {
        if !self.unacked.iter().any(|(p, _)| *p == pid) {
            self.unacked.push((pid, String::new()));
        }
    }

    /// The sessions whose exits wait to be acknowledged.
    pub(super) fn held_exits(&self) -> impl Iterator<Item = &String> {
        self.unacked.iter().map(|(_, name)| name)
    }

    /// True while exits wait to be acknowledged.
    pub(super) fn holds_exits(&self) -> bool {
        !self.unacked.is_empty()
    }

    /// An exit this controller reaped and recorded itself.
    pub(super) fn reaped_by_us(&mut self, pid: u32) {
        self.reaped_by_us.insert(pid);
    }

    /// Takes the exits `unsaved(session, stem of its process)` does not
    /// hold back, as (pid, recorded by us); the rest stay held.
    pub(super) fn take_saved(
        &mut self,
        unsaved: impl Fn(&str, Option<&String>) -> bool,
    ) -> Vec<(u32, bool)> {
        let mut saved = Vec::new();
        let mut still = Vec::new();
        for (pid, name) in std::mem::take(&mut self.unacked) {
            if unsaved(&name, self.live.get(&name).map(|l| &l.stem)) {
                still.push((pid, name));
            } else {
                saved.push((pid, self.reaped_by_us.remove(&pid)));
            }
        }
        self.unacked = still;
        saved
    }
}

/// The census of orphans, shared by the sweeps of one batch of exits.
impl Processes {
    /// The census, taken now unless one is current.
    pub(super) fn census(&mut self, keeper: u32) -> &Census {
        let pids = &self.pids;
        self.census.get_or_insert_with(|| {
            Census::take(&[keeper, std::process::id()], |p| {
                p == keeper || pids.contains_key(&p)
            })
        })
    }

    /// The census is stale from here on.
    pub(super) fn drop_census(&mut self) {
        self.census = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live(stem: &str) -> Live {
        Live {
            stem: stem.to_string(),
            ..Live::default()
        }
    }

    #[test]
    fn a_stem_is_in_flight_until_its_last_spawn_is_answered() {
        let mut p = Processes::new();
        let a = p.ask("a-0", 1, live("a"));
        let b = p.ask("a-1", 1, live("a"));
        let c = p.ask("c", 1, live("c"));
        assert!(p.in_flight("a") && p.in_flight("c") && !p.in_flight("x"));
        assert_eq!(p.answered(a).map(|s| s.name), Some("a-0".to_string()));
        assert!(p.in_flight("a"), "a-1 is still in flight");
        p.withdraw(b);
        assert!(!p.in_flight("a"));
        // Answered twice (a reply after a takeover settled it): counted once.
        assert!(p.answered(a).is_none());
        assert!(!p.in_flight("a") && p.in_flight("c"));
        let back = p.unanswered();
        assert_eq!(back.len(), 1);
        assert!(!p.in_flight("c") && !p.spawns_in_flight());
        for (tag, s) in back {
            p.ask_again(tag, s);
        }
        assert!(p.in_flight("c"));
        assert_eq!(p.answered(c).map(|s| s.attempt), Some(1));
        assert!(!p.in_flight("c"));
    }

    #[test]
    fn an_exit_is_held_until_saved_and_a_pid_is_forgotten_at_its_exit() {
        let mut p = Processes::new();
        p.started("a", 10, live("a"));
        assert!(p.tracks(10) && p.is_running("a"));
        assert_eq!(p.exited(10), Some("a".to_string()));
        assert!(!p.tracks(10) && p.holds_exits());
        assert_eq!(p.exited(10), None, "one exit per pid");
        p.hold_exit(11);
        p.hold_exit(11);
        p.reaped_by_us(11);
        // The status of "a" is not saved yet: only the stranger's goes.
        let saved = p.take_saved(|name, _| name == "a");
        assert_eq!(saved, vec![(11, true)]);
        let saved = p.take_saved(|_, _| false);
        assert_eq!(saved, vec![(10, false)]);
        assert!(!p.holds_exits());
    }
}
