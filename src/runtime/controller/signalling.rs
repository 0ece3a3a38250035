//! Signals to a session's process group and its strays.

use super::*;

impl Controller {
    /// Signals a session's whole tree: its process group, every descendant
    /// (also those that moved to their own group or session, like an agent's
    /// Bash tool), and everything in its cgroup.
    pub(super) fn signal_session(&mut self, name: &str, pid: u32, signal: Signal) {
        // The descendants are listed first: once the leader dies, those in
        // other groups are re-parented and can no longer be found from it.
        // Only while the leader is still the process we started: never a reused pid.
        let ticks = self.procs.live(name).and_then(|l| l.start_ticks);
        let descendants: Vec<u32> = if ticks.is_some() && self.procfs.start_ticks(pid) == ticks {
            crate::runtime::monitor::tree(pid, 4096)
                .into_iter()
                .skip(1)
                .collect()
        } else {
            Vec::new()
        };
        if let Err(e) = process::signal_group(pid, signal) {
            self.error(ShellError::Signal { pid, source: e });
        }
        // An agent's SIGINT (and its stop signal) go to its group only: the
        // CLI must handle the interrupt itself, ending its tool calls and
        // writing its final result; a tool killed under it first would make
        // the CLI skip that. SIGKILL (and the sweep on exit) reach the rest.
        let is_agent = self
            .model
            .desired
            .sessions
            .get(name)
            .is_some_and(|d| d.spec.agent.is_some());
        if is_agent && signal != Signal::SIGKILL {
            return;
        }
        let mut candidates = descendants;
        if let Some(cg) = self.procs.live(name).and_then(|l| l.cgroup.clone()) {
            candidates.extend(crate::runtime::cgroup::procs(&cg));
        }
        candidates.extend(self.strays(name));
        let targets = crate::runtime::contain::targets(
            candidates,
            pid,
            &BTreeSet::new(),
            crate::runtime::contain::live_pgrp,
        );
        crate::runtime::contain::signal_all(&targets, signal);
    }

    /// The session's processes that left its tree (double-forked daemons
    /// re-parented to the keeper or to us), found by their marker.
    pub(super) fn strays(&mut self, name: &str) -> Vec<u32> {
        let uid = self
            .procs
            .live(name)
            .map(|l| l.uid.clone())
            .unwrap_or_default();
        self.procs.census(self.link.pid).strays(name, &uid)
    }

    /// Kills everything left of a session whose leader `pid` ended: its
    /// group, its cgroup and its strays, again until a look finds nothing
    /// new (a process killed while it forked may leave a child behind).
    pub(super) fn sweep_session(&mut self, name: &str, pid: u32) {
        let _ = process::signal_group(pid, Signal::SIGKILL);
        let cgroup = self.procs.live(name).and_then(|l| l.cgroup.clone());
        let mut done = BTreeSet::new();
        for _ in 0..16 {
            let mut candidates = self.strays(name);
            if let Some(cg) = &cgroup {
                candidates.extend(crate::runtime::cgroup::procs(cg));
            }
            let targets = crate::runtime::contain::targets(
                candidates,
                pid,
                &done,
                crate::runtime::contain::live_pgrp,
            );
            if targets.is_empty() {
                break;
            }
            crate::runtime::contain::signal_all(&targets, Signal::SIGKILL);
            done.extend(targets);
            // Look again with a fresh listing: a process killed while it
            // forked may have left a child behind.
            self.procs.drop_census();
        }
    }
}
