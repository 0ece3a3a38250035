//! Restoring at start: the statuses an earlier controller wrote and the keeper's live children, adopted.

use super::*;

impl Controller {
    /// Seeds uids and generations from the status files an earlier controller wrote.
    pub(super) fn remember_previous_statuses(&mut self) {
        let mut to_adopt = Vec::new();
        self.read_previous_statuses(&mut to_adopt);
        // What the manifests declare now, so that adoption decides with the
        // real restart policies (a vanished process must not look deleted).
        if let Some(desired) = self
            .model
            .catalog
            .rescan(&self.layout.manifest_dir, self.clock.now())
        {
            self.set_desired(desired);
        }
        self.book.mark_all(self.model.catalog.views.keys().cloned());
        self.model.catalog_stems = self.model.catalog.views.keys().cloned().collect();
        for (name, stem, doc) in to_adopt {
            self.adopt(&name, &stem, &doc);
        }
        self.restore_from_keeper();
    }

    /// The keeper's registry is the truth about processes: every live child
    /// is supervised (also those no status file names: the controller died
    /// between a spawn and the status write), and every exit not yet saved
    /// is applied, in the order the attempts ran.
    pub(super) fn restore_from_keeper(&mut self) {
        let welcome = std::mem::take(&mut self.link.welcome);
        let mut items: Vec<(Identity, Option<Child>, Option<ExitRecord>)> = Vec::new();
        for e in welcome.exits {
            items.push((e.child.identity.clone(), None, Some(e)));
        }
        for c in welcome.children {
            items.push((c.identity.clone(), Some(c), None));
        }
        items.sort_by(|a, b| {
            (&a.0.session, a.0.generation, a.0.attempt, a.1.is_some()).cmp(&(
                &b.0.session,
                b.0.generation,
                b.0.attempt,
                b.1.is_some(),
            ))
        });
        for (identity, child, exit) in items {
            if let Some(child) = child {
                if !self.procs.tracks(child.pid) {
                    self.adopt_child(&child);
                }
                continue;
            }
            let Some(exit) = exit else { continue };
            let pid = exit.child.pid;
            if !self.procs.tracks(pid) {
                let reflected = self
                    .model
                    .state
                    .sessions
                    .get(&identity.session)
                    .is_some_and(|r| {
                        !matches!(&r.run, Run::Running(run) if run.pid == pid)
                            && r.last_exit.as_ref().is_some_and(|e| {
                                (r.generation, e.attempt) >= (identity.generation, identity.attempt)
                            })
                    });
                if reflected || identity.session.is_empty() {
                    // Already saved by the controller that handled it.
                    self.procs.hold_exit(pid);
                    continue;
                }
                self.adopt_child(&exit.child);
            }
            self.on_exit(exit);
        }
    }

    /// Supervises a child the keeper has: the session's record says it runs.
    pub(super) fn adopt_child(&mut self, child: &Child) {
        let name = child.identity.session.clone();
        if name.is_empty() {
            return;
        }
        let rec = self.model.state.sessions.entry(name.clone()).or_default();
        if let Run::Running(other) = &rec.run {
            if other.pid != child.pid && self.procs.tracks(other.pid) {
                // Two live copies of one session (never made by this
                // version): keep the newer attempt, kill the other.
                let (keep_new, old) = (
                    (child.identity.generation, child.identity.attempt)
                        >= (rec.generation, rec.attempt),
                    other.pid,
                );
                let victim = if keep_new { old } else { child.pid };
                tracing::error!(session = %name, pid = victim, "two live copies of one session: killing one");
                let _ = process::signal_group(victim, Signal::SIGKILL);
                if !keep_new {
                    self.procs.claim_pid(&name, child.pid);
                    return;
                }
            }
        }
        let rec = self.model.state.sessions.entry(name.clone()).or_default();
        rec.run = Run::Running(core::state::Running {
            pid: child.pid,
            started_at: child.started_at,
            stop: None,
            verdict: None,
        });
        if (rec.generation, rec.attempt) < (child.identity.generation, child.identity.attempt) {
            rec.restarts = rec.restarts.max(child.identity.attempt.saturating_sub(1));
        }
        rec.generation = child.identity.generation;
        rec.attempt = child.identity.attempt;
        // The spec it runs, when that is the one declared now (else 0:
        // unknown, and a changed generation restarts it).
        rec.run_hash = self
            .model
            .desired
            .sessions
            .get(&name)
            .filter(|d| d.generation == child.identity.generation)
            .map_or(0, |d| core::change::run_hash(&d.spec));
        rec.series_started_at.get_or_insert(child.started_at);
        let stem = self
            .model
            .catalog
            .session_file
            .get(&name)
            .cloned()
            .unwrap_or_else(|| name.clone());
        self.procs.started(
            &name,
            child.pid,
            Live {
                stem,
                log_dir: child
                    .stdout
                    .parent()
                    .map(Path::to_path_buf)
                    .unwrap_or_default(),
                stdout: child.stdout.clone(),
                stderr: child.stderr.clone(),
                start_ticks: child.start_ticks,
                argv: Vec::new(),
                cwd: PathBuf::new(),
                cgroup: self.session_cgroup(&name),
                oom_baseline: 0,
                join_after_spawn: false,
                uid: child.identity.uid.clone(),
            },
        );
        if self
            .model
            .desired
            .sessions
            .get(&name)
            .is_some_and(|d| d.spec.agent.is_some())
        {
            self.agents
                .adopt(&name, &child.stdout, None, child.identity.generation);
        }
        self.mark_dirty(&name);
        self.adopted_event(&name, child.pid, child.identity.attempt);
        tracing::info!(session = %name, pid = child.pid, attempt = child.identity.attempt, "adopted a running session from the keeper");
    }

    pub(super) fn read_previous_statuses(
        &mut self,
        to_adopt: &mut Vec<(String, String, serde_json::Value)>,
    ) {
        self.ledger.restore_kept(&self.layout.control_dir());
        for p in crate::runtime::adopt::previous_statuses(&self.layout.status_dir, self.clock.now())
        {
            self.seed_events(p.kind, &p.doc);
            if !p.invalid {
                // The file this status belongs to holds the name: a newcomer loses.
                self.model.catalog.remember_holder(p.kind, &p.name, &p.stem);
            }
            self.model.catalog.remember(p.kind, &p.name, p.known);
            if p.kind == "Session" {
                to_adopt.push((p.name, p.stem, p.doc));
            }
        }
    }

    /// Restores what an earlier controller knew of a session and, when its
    /// process is still the keeper's child (same pid, start time and boot),
    /// adopts it: same pid, no restart.
    pub(super) fn adopt(&mut self, name: &str, stem: &str, doc: &serde_json::Value) {
        let Some((status, mut rec)) = crate::runtime::adopt::restore_record(doc) else {
            return;
        };
        self.agents.restore(name, &doc["status"]);
        self.workspaces.restore(name, &doc["status"]);
        if let Some(e) = &status.last_exit {
            if let Some(a) = &e.analysis {
                self.analyses
                    .insert(name.to_string(), (e.attempt, a.clone()));
            }
        }
        if let Some(logs) = &status.logs {
            self.log_guard.seed(name, logs.dropped_bytes);
            // The last attempt's output stays where `logs` and crash dumps find it.
            let stdout = self.layout.status_dir.join(&logs.stdout);
            self.procs.remember(
                name,
                Live {
                    stem: stem.to_string(),
                    log_dir: stdout.parent().map(Path::to_path_buf).unwrap_or_default(),
                    stderr: self.layout.status_dir.join(&logs.stderr),
                    stdout,
                    ..Live::default()
                },
            );
        }
        if let Run::Running(r) = &rec.run {
            let pid = r.pid;
            let same_boot = status.boot_id.is_some() && status.boot_id == self.boot_id;
            let is_child = self.link.welcome.children.iter().any(|c| {
                c.pid == pid && c.start_ticks.is_some() && c.start_ticks == status.pid_start_ticks
            });
            let exited = self.link.welcome.exits.iter().any(|e| {
                e.child.pid == pid
                    && e.child.start_ticks.is_some()
                    && e.child.start_ticks == status.pid_start_ticks
            });
            // The keeper knows a later attempt (the status was not written
            // after its spawn): restoring from the keeper takes it from here.
            let keeper_knows = self
                .link
                .welcome
                .children
                .iter()
                .map(|c| &c.identity)
                .chain(self.link.welcome.exits.iter().map(|e| &e.child.identity))
                .any(|i| i.session == name);
            if same_boot && (is_child || exited) {
                let logs = status.logs.clone().unwrap_or_default();
                self.procs.started(
                    name,
                    pid,
                    Live {
                        stem: stem.to_string(),
                        log_dir: self
                            .layout
                            .status_dir
                            .join(&logs.stdout)
                            .parent()
                            .map(Path::to_path_buf)
                            .unwrap_or_default(),
                        stdout: self.layout.status_dir.join(&logs.stdout),
                        stderr: self.layout.status_dir.join(&logs.stderr),
                        start_ticks: status.pid_start_ticks,
                        argv: Vec::new(),
                        cwd: PathBuf::new(),
                        // A session's cgroup keeps its name across controllers.
                        cgroup: self.session_cgroup(name),
                        oom_baseline: 0,
                        join_after_spawn: false,
                        uid: doc["metadata"]["uid"]
                            .as_str()
                            .unwrap_or_default()
                            .to_string(),
                    },
                );
                if doc["status"]["agent"].is_object() {
                    let sid = doc["status"]["agent"]["sessionId"]
                        .as_str()
                        .and_then(|s| s.parse().ok());
                    self.agents.adopt(
                        name,
                        &self.layout.status_dir.join(&logs.stdout),
                        sid,
                        status.observed_generation,
                    );
                }
                self.adopted_event(name, pid, rec.attempt);
                tracing::info!(session = name, pid, "adopted a running session");
            } else if keeper_knows {
                rec.run = Run::Idle(None);
                self.model.state.sessions.insert(name.to_string(), rec);
                return;
            } else {
                // Gone while nobody watched (or a reused pid that is not ours): never signal it.
                self.model.state.sessions.insert(name.to_string(), rec);
                self.model.observe(
                    Event::Vanished {
                        name: name.to_string(),
                        pid,
                    },
                    self.clock.now(),
                );
                return;
            }
        }
        if let Run::Idle(wait) = &mut rec.run {
            *wait = None;
        }
        self.model
            .state
            .sessions
            .insert(name.to_string(), std::mem::take(&mut rec));
    }
}
