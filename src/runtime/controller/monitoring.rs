//! Watching running sessions: usage samples, agent output, the status folder, sessions gone unreported.

use super::*;
use std::sync::Arc;

/// What usage sampling judged of each session (its last reading's
/// verdict: usage, limits, staleness), and how many rounds it made
/// (`core::monitor::read_now` spreads the reads of plain sessions).
#[derive(Default)]
pub(super) struct Usage {
    watches: BTreeMap<String, Watch>,
    round: u64,
}

impl Usage {
    /// The round about to be sampled.
    pub(super) fn next_round(&mut self) -> u64 {
        let round = self.round;
        self.round = round.wrapping_add(1);
        round
    }

    /// True when the session has been judged (a reading is due each round).
    pub(super) fn watched(&self, name: &str) -> bool {
        self.watches.contains_key(name)
    }

    /// What the last reading of the session judged.
    pub(super) fn watch(&self, name: &str) -> Option<&Watch> {
        self.watches.get(name)
    }

    /// Keeps the latest judgement of the session.
    pub(super) fn set(&mut self, name: &str, watch: Watch) {
        self.watches.insert(name.to_string(), watch);
    }

    /// The session's process is gone: its judgement goes too.
    pub(super) fn forget(&mut self, name: &str) {
        self.watches.remove(name);
    }

    /// Every judged session.
    pub(super) fn iter(&self) -> impl Iterator<Item = (&String, &Watch)> {
        self.watches.iter()
    }
}

impl Controller {
    /// The cgroup of a session adopted from an earlier controller, when it has one.
    pub(super) fn session_cgroup(&self, name: &str) -> Option<PathBuf> {
        match &self.memory_mode {
            crate::runtime::cgroup::Mode::Cgroup { root, .. } => {
                let p = crate::runtime::cgroup::session_path(root, name);
                p.is_dir().then_some(p)
            }
            crate::runtime::cgroup::Mode::Sampled { .. } => None,
        }
    }

    /// A deleted status directory is made again, with the lock and the
    /// keeper's exits folder, and every status is rewritten.
    pub(super) fn check_status_dir(&mut self) {
        if self.layout.control_dir().is_dir() {
            return;
        }
        self.error(ShellError::StatusDirDeleted(self.layout.status_dir.clone()));
        let control = self.layout.control_dir();
        if create_dir(&control.join("exits")).is_err()
            || create_dir(&control.join("children")).is_err()
        {
            return; // retried at the next resync
        }
        match lock::Lock::acquire(&control) {
            Ok(l) => self._lock = l,
            Err(e) => self.error(ShellError::Lock(e.to_string())),
        }
        self.book.forget_written();
        self.book.mark_all(self.model.catalog.views.keys().cloned());
    }

    /// Reads new output of an agent session and acts on it.
    pub(super) fn read_agent(&mut self, name: &str) {
        let Some(spec) = self.model.spec(name) else {
            return;
        };
        let running = self
            .model
            .state
            .sessions
            .get(name)
            .is_some_and(|r| matches!(&r.run, Run::Running(run) if run.stop.is_none()));
        for act in self.agents.read(name, &spec) {
            match act {
                crate::runtime::agents::Act::Changed => self.mark_dirty(name),
                crate::runtime::agents::Act::Stop(reason, message) if running => {
                    tracing::warn!(session = name, "{message}");
                    let ev = Event::StopRequested {
                        name: name.to_string(),
                        reason,
                        message,
                    };
                    self.model.observe(ev, self.clock.now());
                }
                crate::runtime::agents::Act::Stop(..) => {}
            }
        }
    }

    /// Reads every running agent's new output (the safety net for missed events).
    pub(super) fn read_agents(&mut self) {
        let names: Vec<String> = self
            .agents
            .names()
            .filter(|n| self.procs.is_running(n))
            .map(str::to_string)
            .collect();
        for name in names {
            self.read_agent(&name);
        }
    }

    /// Follows the output of agent sessions adopted from an earlier controller.
    pub(super) fn watch_adopted_agents(&mut self) {
        let names: Vec<String> = self.procs.running().into_iter().map(|(n, _)| n).collect();
        for name in names {
            let Some(stdout) = self.agents.stdout_of(&name).map(Path::to_path_buf) else {
                continue;
            };
            if let (Some(w), Some(dir)) = (&self.agent_watcher, stdout.parent()) {
                use notify::Watcher;
                let _ = w
                    .lock()
                    .map(|mut w| w.watch(dir, notify::RecursiveMode::NonRecursive));
            }
            self.read_agent(&name);
        }
    }

    /// Samples every running session: usage, limits, staleness.
    pub(super) fn sample_usage(&mut self) {
        let now = self.clock.now();
        let round = self.usage.next_round();
        let mut events = Vec::new();
        // Only the sessions due this round are copied out: most plain
        // sessions are not (`read_now`), and this runs at every round.
        let (desired, usage) = (&self.model.desired, &self.usage);
        let due: Vec<(
            String,
            u32,
            DateTime<Utc>,
            Arc<crate::api::manifest::SessionSpec>,
        )> = self
            .model
            .state
            .sessions
            .iter()
            .filter_map(|(n, r)| match &r.run {
                Run::Running(run) if run.stop.is_none() => {
                    let spec = &desired.sessions.get(n)?.spec;
                    core::monitor::read_now(spec, n, round, usage.watched(n))
                        .then(|| (n.clone(), run.pid, run.started_at, spec.clone()))
                }
                _ => None,
            })
            .collect();
        for (name, pid, started_at, spec) in due {
            let spec = spec.as_ref();
            let Some(sample) = self.procfs.sample(pid) else {
                continue;
            };
            let live = self.procs.live(&name);
            let activity = live
                .and_then(|l| check_output(&l.stdout, &l.stderr))
                .filter(|t| *t >= started_at)
                .unwrap_or(started_at);
            // A running tool call or compaction is not silence (agents only).
            let activity = self.agents.silent_since(&name, activity, now);
            let before = self.usage.watch(&name).cloned().unwrap_or_default();
            let reading = core::monitor::Reading {
                memory_bytes: sample.memory_bytes,
                cpu_seconds: sample.cpu_seconds,
                activity,
                memory_enforced: live.is_some_and(|l| l.cgroup.is_some()),
            };
            let (w, asked) = core::monitor::judge(&name, spec, &reading, &before, now);
            if w.stale && !before.stale {
                tracing::warn!(session = %name, "stale: no output since {activity}");
            }
            events.extend(asked);
            if w.usage != before.usage {
                let label = SessionLabel {
                    session: name.clone(),
                };
                self.metrics
                    .memory
                    .get_or_create(&label)
                    .set(i64::try_from(sample.memory_bytes).unwrap_or(i64::MAX));
                self.metrics
                    .cpu
                    .get_or_create(&label)
                    .set(sample.cpu_seconds);
            }
            if w != before {
                self.usage.set(&name, w);
                self.mark_dirty(&name);
            }
        }
        for e in events {
            self.model.observe(e, now);
        }
    }

    pub(super) fn check_vanished(&mut self) {
        if self.link.events_open {
            return; // the keeper reports every exit
        }
        let control = self.layout.control_dir();
        let procfs = &self.procfs;
        let gone = self.procs.gone(|pid, ticks| {
            procfs.start_ticks(pid) != ticks
                && !crate::runtime::adopt::recorded_exit(&control, pid, ticks)
        });
        // The keeper reaps, then records and reports: a process seen gone
        // once may have an exit report on its way. Only one still missing at
        // the next resync vanished (the keeper itself is gone).
        for (pid, name) in self.procs.vanished(gone) {
            self.model
                .observe(Event::Vanished { name, pid }, self.clock.now());
        }
    }

    /// Moves a started session into its cgroup, off the spawn path.
    pub(super) fn join_cgroup(&mut self, cgroup: &Path, pid: u32, start_ticks: Option<u64>) {
        if self.joiner.is_none() {
            match crate::runtime::contain::Joiner::start() {
                Ok(j) => self.joiner = Some(j),
                Err(e) => {
                    self.error(ShellError::Cgroup(format!(
                        "cannot start the cgroup joiner thread: {e}"
                    )));
                    return;
                }
            }
        }
        let create = match &self.memory_mode {
            crate::runtime::cgroup::Mode::Cgroup { v2, .. } => Some(*v2),
            _ => None,
        };
        let join = crate::runtime::contain::Join {
            procs: crate::runtime::cgroup::procs_file(cgroup),
            pid,
            start_ticks,
            create,
        };
        if !self.joiner.as_ref().is_some_and(|j| j.join(join)) {
            self.joiner = None;
            self.error(ShellError::Cgroup(format!(
                "the cgroup joiner thread ended; {pid} stays outside its cgroup"
            )));
        }
    }
}

/// The last write time of a session's output: one `stat` per file (the log
/// guard bounds the files).
pub(super) fn check_output(stdout: &Path, stderr: &Path) -> Option<DateTime<Utc>> {
    let mut last = None;
    for p in [stdout, stderr] {
        let Ok(meta) = std::fs::metadata(p) else {
            continue;
        };
        if let Ok(t) = meta.modified() {
            let t = DateTime::<Utc>::from(t);
            last = Some(last.map_or(t, |l: DateTime<Utc>| l.max(t)));
        }
    }
    last
}
