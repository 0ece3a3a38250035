//! The keeper's stream: spawn answers, exits (acknowledged once saved), reaping, and taking over after the keeper died.

use super::*;

/// The controller's side of the keeper.
pub(super) struct KeeperLink {
    /// The keeper's connection until the loop starts its reader and writer.
    pub(super) conn: Option<Keeper>,
    /// Requests to the keeper, once the loop runs.
    pub(super) tx: Option<Box<dyn KeeperClient>>,
    /// The keeper's pid (our child when we started it).
    pub(super) pid: u32,
    /// What the keeper had when we (re)connected, consumed by restoring.
    pub(super) welcome: Welcome,
    /// False once the keeper's exit reports stopped (it died): then the
    /// resync looks for sessions that ended unreported.
    pub(super) events_open: bool,
}

impl Controller {
    /// Starts talking to the keeper from the loop: requests without
    /// waiting, replies and exits as events.
    pub(super) fn start_keeper_io(
        &mut self,
    ) -> Result<mpsc::UnboundedReceiver<FromKeeper>, StartError> {
        let keeper = self.link.conn.take().ok_or(StartError::Keeper {
            context: "",
            source: keeper::KeeperError::Protocol("no keeper connection".into()),
        })?;
        let (tx, rx) = keeper.start_io().map_err(|source| StartError::Keeper {
            context: "keeper connection: ",
            source,
        })?;
        self.link.tx = Some(Box::new(tx));
        Ok(rx)
    }

    /// One message from the keeper; a new receiver when it had to be reconnected.
    pub(super) fn on_keeper(
        &mut self,
        msg: FromKeeper,
    ) -> Option<mpsc::UnboundedReceiver<FromKeeper>> {
        match msg {
            FromKeeper::Spawned { tag, child } => self.on_spawned(tag, child),
            FromKeeper::SpawnFailed { tag, error } => {
                if let Some(s) = self.procs.answered(tag) {
                    let ev = Event::SpawnFailed {
                        name: s.name,
                        reason: error.reason,
                        message: error.message,
                    };
                    self.model.observe(ev, self.clock.now());
                }
            }
            FromKeeper::Exited(exit) => self.on_exit(exit),
            FromKeeper::Closed => return self.reconnect_keeper(),
        }
        None
    }

    /// The keeper died: start a new one for new spawns. Sessions it left
    /// run on (their exits reach us as their subreaper, or the new keeper
    /// through its registry); spawns it had not answered are settled from
    /// the new keeper's registry.
    pub(super) fn reconnect_keeper(&mut self) -> Option<mpsc::UnboundedReceiver<FromKeeper>> {
        self.link.tx = None;
        self.reap();
        let mut k = match Keeper::connect_or_start(&self.layout.control_dir()) {
            Ok(k) => k,
            Err(e) => {
                self.link.events_open = false;
                self.error(ShellError::Keeper(format!(
                    "the keeper is gone and a new one cannot be started ({e}); looking for sessions that end without a report"
                )));
                return None;
            }
        };
        tracing::warn!(
            pid = k.welcome.keeper_pid,
            "the keeper died; a new keeper took over"
        );
        let welcome = std::mem::take(&mut k.welcome);
        self.link.pid = welcome.keeper_pid;
        for (tag, s) in self.procs.unanswered() {
            let found = welcome.children.iter().find(|c| {
                c.identity.session == s.name
                    && c.identity.attempt == s.attempt
                    && !self.procs.tracks(c.pid)
            });
            match found {
                Some(child) => {
                    self.procs.ask_again(tag, s);
                    self.on_spawned(tag, child.clone());
                }
                None => {
                    let ev = Event::SpawnFailed {
                        name: s.name,
                        reason: Reason::SpawnFailed,
                        message: "the keeper ended before it started the process".into(),
                    };
                    self.model.observe(ev, self.clock.now());
                }
            }
        }
        for child in &welcome.children {
            if !self.procs.tracks(child.pid) {
                self.adopt_child(child);
                // Adoption writes records directly, not through events.
                self.model.everything = true;
            }
        }
        for exit in welcome.exits {
            self.on_exit(exit);
        }
        self.link.conn = Some(k);
        match self.start_keeper_io() {
            Ok(rx) => Some(rx),
            Err(e) => {
                self.link.events_open = false;
                self.error(ShellError::Keeper(format!("{e}")));
                None
            }
        }
    }

    /// A spawn's reply: the session runs.
    pub(super) fn on_spawned(&mut self, tag: u64, child: Child) {
        let Some(s) = self.procs.answered(tag) else {
            return;
        };
        self.metrics
            .spawn_seconds
            .observe(s.asked_at.elapsed().as_secs_f64());
        if self
            .model
            .state
            .sessions
            .get(&s.name)
            .is_some_and(core::reconcile::is_restart)
        {
            self.health.restarts.push_back(self.clock.now());
        }
        let restarts = self
            .model
            .state
            .sessions
            .get(&s.name)
            .map_or(0, |r| r.restarts);
        self.metrics
            .restarts
            .get_or_create(&SessionLabel {
                session: s.name.clone(),
            })
            .set(i64::from(restarts));
        let mut live = s.live;
        live.start_ticks = child.start_ticks;
        for p in [&live.stdout, &live.stderr] {
            self.log_guard
                .watch(&s.name, p, self.opts.max_log_size, ROTATED_LOGS);
        }
        if let (true, Some(cg)) = (live.join_after_spawn, &live.cgroup) {
            self.join_cgroup(cg, child.pid, child.start_ticks);
        }
        self.procs.started(&s.name, child.pid, live);
        let ev = Event::Spawned {
            name: s.name.clone(),
            pid: child.pid,
        };
        self.model.observe(ev, self.clock.now());
        let runs = self
            .model
            .state
            .sessions
            .get(&s.name)
            .is_some_and(|r| matches!(&r.run, Run::Running(run) if run.pid == child.pid));
        if runs {
            let attempt = self
                .model
                .state
                .sessions
                .get(&s.name)
                .map_or(0, |r| r.attempt);
            crate::runtime::story::spawned(&s.name, child.pid, attempt);
        } else {
            // Nobody wants it any more: its exit comes and is acknowledged.
            self.signal_session(&s.name, child.pid, Signal::SIGKILL);
        }
    }

    /// Acknowledges the exits whose statuses are saved.
    pub(super) fn ack_saved(&mut self) {
        let control = self.layout.control_dir();
        let Some(tx) = &self.link.tx else {
            return;
        };
        let (catalog, book) = (&self.model.catalog, &self.book);
        let saved = self.procs.take_saved(|name, stem| {
            catalog
                .session_file
                .get(name)
                .or(stem)
                .is_some_and(|s| book.is_marked(s))
        });
        for (pid, recorded_by_us) in saved {
            tx.ack(pid);
            if recorded_by_us {
                keeper::remove_exit_record(&control, pid);
            }
        }
    }

    /// An exit reported by the keeper.
    pub(super) fn on_exit(&mut self, exit: ExitRecord) {
        keeper::crash_point("controller-after-exit-received");
        let pid = exit.child.pid;
        if exit.status.is_none() {
            // An orphan of a dead keeper: if we are its subreaper, its
            // zombie holds the real exit code.
            self.reap();
        }
        if let Some(name) = self.procs.exited(pid) {
            // The main process is gone: nothing it left in its process group,
            // its cgroup or anywhere else may outlive the attempt (the group id
            // cannot be reused while members remain, and we act right after
            // the reap).
            self.sweep_session(&name, pid);
            if let Some(live) = self.procs.live(&name) {
                if let (Some(cg), crate::runtime::cgroup::Mode::Cgroup { v2, .. }) =
                    (&live.cgroup, &self.memory_mode)
                {
                    let kills = crate::runtime::cgroup::oom_kills(cg, *v2);
                    let spec = self.model.desired.sessions.get(&name).map(|d| &*d.spec);
                    if let Some(ev) =
                        core::monitor::oom_killed(&name, pid, spec, kills, live.oom_baseline)
                    {
                        self.model.observe(ev, self.clock.now());
                    }
                }
            }
            self.usage.forget(&name);
            self.workspaces.check(&name);
            if let Some(spec) = self.model.spec(&name).filter(|s| s.agent.is_some()) {
                let stderr_tail = self
                    .procs
                    .live(&name)
                    .map(|l| tail_lines(&l.stderr, 50))
                    .unwrap_or_default();
                let verdict = self.agents.judge(&name, &spec, &stderr_tail);
                crate::runtime::budget::charge(
                    &mut self.ledger,
                    &self.model.desired,
                    &self.agents,
                    &name,
                    self.clock.now(),
                );
                if let Some(verdict) = verdict {
                    let ev = Event::Judged {
                        name: name.clone(),
                        pid,
                        verdict,
                    };
                    self.model.observe(ev, self.clock.now());
                }
                self.mark_dirty(&name);
            }
            self.metrics.memory.remove(&SessionLabel {
                session: name.clone(),
            });
            self.metrics.cpu.remove(&SessionLabel {
                session: name.clone(),
            });
            let name_for_stats = name.clone();
            let event = match exit.status {
                Some(status) => Event::Exited { name, pid, status },
                // It ended while no process able to reap it was recording.
                None => Event::Vanished { name, pid },
            };
            self.model.observe(event, self.clock.now());
            if let Some(e) = self
                .model
                .state
                .sessions
                .get(&name_for_stats)
                .and_then(|r| r.last_exit.clone())
            {
                self.metrics
                    .exits
                    .get_or_create(&ReasonLabel {
                        reason: e.reason.as_str(),
                    })
                    .inc();
                self.health.ended(&name_for_stats, &e);
            }
            // Its logs are final: capped now, not at the next start.
            // (At the end of the pass, once a replacement is asked for.)
            if let Some(l) = self.procs.live(&name_for_stats) {
                self.chores.cap_log(l.stdout.clone());
                self.chores.cap_log(l.stderr.clone());
            }
        } else {
            // Not a session's (a killed duplicate, or already saved).
            self.procs.hold_exit(pid);
        }
    }

    /// What the registry would say of a session's process.
    pub(super) fn child_of(&self, name: &str, pid: u32) -> Child {
        let rec = self.model.state.sessions.get(name);
        let live = self.procs.live(name);
        Child {
            pid,
            start_ticks: live.and_then(|l| l.start_ticks),
            boot_id: self.boot_id.clone(),
            identity: Identity {
                session: name.to_string(),
                uid: self
                    .model
                    .catalog
                    .known("Session", name)
                    .map(|k| k.uid.to_string())
                    .unwrap_or_default(),
                generation: rec.map_or(0, |r| r.generation),
                attempt: rec.map_or(0, |r| r.attempt),
            },
            started_at: match rec.map(|r| &r.run) {
                Some(Run::Running(r)) => r.started_at,
                _ => self.clock.now(),
            },
            stdout: live.map(|l| l.stdout.clone()).unwrap_or_default(),
            stderr: live.map(|l| l.stderr.clone()).unwrap_or_default(),
            orphan: false,
        }
    }

    /// Reaps our own children: the keeper we started, sessions whose keeper
    /// died (we are their subreaper: their exit codes are kept, recorded
    /// like the keeper's), and orphans when we are PID 1.
    pub(super) fn reap(&mut self) {
        for (pid, status) in process::reap() {
            if pid == self.link.pid {
                self.error(ShellError::Keeper(
                    "the keeper exited; starting a new one".into(),
                ));
                continue;
            }
            let Some(name) = self.procs.session_of(pid).cloned() else {
                continue;
            };
            let child = self.child_of(&name, pid);
            keeper::record_reaped_exit(&self.layout.control_dir(), child.clone(), status);
            self.procs.reaped_by_us(pid);
            self.on_exit(ExitRecord {
                child,
                status: Some(status),
                at: self.clock.now(),
            });
        }
    }
}
