//! What the controller writes: status files, crash dumps, tombstones, the controller status, metrics and health figures.

use super::*;

impl Controller {
    pub(super) fn write_crash_dump(
        &mut self,
        name: &str,
        exit: &core::LastExit,
        now: DateTime<Utc>,
    ) {
        let Some(file) = &exit.crash_dump else {
            return;
        };
        let stem = self.stem_of(name);
        let dir = self.layout.crashes_dir(&stem);
        let live = self.procs.live(name).cloned().unwrap_or_default();
        let spec = self.model.spec(name);
        let uid = self
            .model
            .catalog
            .known("Session", name)
            .map(|k| k.uid.to_string())
            .unwrap_or_default();
        let (stdout_tail, stderr_tail) =
            if exit.started_at.is_some() && !live.stdout.as_os_str().is_empty() {
                (tail_lines(&live.stdout, 100), tail_lines(&live.stderr, 100))
            } else {
                (String::new(), String::new())
            };
        let mut info = render::exit_info(exit, &self.layout.relative(&dir));
        let oom_kills = match (&live.cgroup, &self.memory_mode) {
            (Some(cg), crate::runtime::cgroup::Mode::Cgroup { v2, .. }) => {
                crate::runtime::cgroup::oom_kills(cg, *v2).saturating_sub(live.oom_baseline)
            }
            _ => 0,
        };
        let stop_reason = exit.reason.as_str();
        let facts = crate::analysis::ExitFacts {
            exit_code: info.exit_code,
            signal: match exit.status {
                Some(core::ExitStatus::Signal(s)) => Some(s),
                _ => None,
            },
            stop_reason: (!matches!(
                exit.reason,
                Reason::Error | Reason::Crashed | Reason::Completed
            ))
            .then_some(stop_reason.as_str()),
            spawn_error: matches!(
                exit.reason,
                Reason::CommandNotFound | Reason::PermissionDenied | Reason::SpawnFailed
            )
            .then_some(exit.message.as_str()),
            oom_kills,
            max_memory: spec
                .as_ref()
                .and_then(|s| s.resources.max_memory)
                .map(|q| q.0),
            timeout: spec.as_ref().and_then(|s| s.timeout).map(|t| t.std()),
            stdout_tail: &stdout_tail,
            stderr_tail: &stderr_tail,
        };
        let analysis = serde_json::to_value(crate::analysis::analyze(&facts)).ok();
        if let Some(a) = &analysis {
            self.analyses
                .insert(name.to_string(), (exit.attempt, a.clone()));
        }
        info.analysis = analysis;
        let dump = crash_dump::CrashDump::new(
            name,
            uid,
            format!("{stem}.yaml"),
            if live.argv.is_empty() {
                spec.as_ref()
                    .and_then(|s| s.command.clone())
                    .unwrap_or_default()
            } else {
                live.argv.clone()
            },
            live.cwd.display().to_string(),
            spec.map(|s| s.env.keys().cloned().collect())
                .unwrap_or_default(),
            info,
            stdout_tail,
            stderr_tail,
            now,
        );
        let result = create_dir(&dir).and_then(|()| {
            let text = codec::to_yaml(&dump).map_err(std::io::Error::other)?;
            write_atomic(&dir.join(file), text.as_bytes())
        });
        match result {
            Ok(()) => crash_dump::prune(&dir, name, self.opts.max_crash_dumps),
            Err(e) => self.error(ShellError::CrashDump {
                dir: dir.clone(),
                source: e,
            }),
        }
    }

    /// Writes the tombstone of a session about to be forgotten; its logs
    /// and crash dumps stay until `--tombstone-ttl` passed.
    pub(super) fn write_tombstone(
        &mut self,
        name: &str,
        record: &core::Record,
        now: DateTime<Utc>,
    ) {
        if self.opts.tombstone_ttl.is_zero() {
            return;
        }
        let Some(live) = self.procs.live(name) else {
            return;
        };
        let (stem, log_dir) = (live.stem.clone(), live.log_dir.clone());
        let extras = self.extras(name, &stem);
        let pool = record.last_spec.as_ref().and_then(|(_, p)| p.clone());
        let mut doc = render::session_status(
            name,
            &format!("{stem}.yaml"),
            None,
            None,
            pool,
            record,
            &extras,
            &[],
            &mut Transitions::default(),
            now,
        );
        let until = core::time::after_std(now, self.opts.tombstone_ttl);
        render::tombstone(&mut doc, until, now);
        let path = crate::runtime::tombstone::path(&self.layout.status_dir, name);
        let written = codec::to_yaml(&doc)
            .map_err(std::io::Error::other)
            .and_then(|text| write_atomic(&path, text.as_bytes()));
        match written {
            Ok(()) => {
                let t = crate::runtime::tombstone::Tombstone {
                    path: path.clone(),
                    log_dir,
                    crashes_dir: self.layout.crashes_dir(&stem),
                    logs_base: self.layout.status_dir.join(format!("{stem}.logs")),
                    until,
                };
                self.tombstones.insert(name.to_string(), t);
                tracing::info!(event = "tombstone", session = name, until = %until, "{name}: tombstone written ({}), kept with its logs until {until}", path.display());
            }
            Err(e) => self.error(ShellError::StatusWrite {
                path: path.clone(),
                source: e,
            }),
        }
    }

    /// Removes tombstones whose time is over (with their logs and crash
    /// dumps) and those of names declared again.
    pub(super) fn expire_tombstones(&mut self, now: DateTime<Utc>) {
        let names: Vec<String> = self.tombstones.keys().cloned().collect();
        for name in names {
            let back = self.model.desired.sessions.contains_key(&name);
            let Some(t) = self.tombstones.get(&name) else {
                continue;
            };
            if back {
                let _ = std::fs::remove_file(&t.path);
            } else if t.until <= now {
                crate::runtime::tombstone::remove(&name, t);
                tracing::info!(event = "tombstone-expired", session = %name, "{name}: tombstone and logs removed (--tombstone-ttl passed)");
            } else {
                continue;
            }
            self.tombstones.remove(&name);
        }
    }

    /// Writes the status file of every dirty manifest whose content changed.
    pub(super) fn write_statuses(&mut self, now: DateTime<Utc>) {
        // Only a status that holds an exit not yet acknowledged must be on
        // disk before the keeper forgets that exit (write-ahead exits): it
        // is flushed. Every other update (Starting, Running, a pool's
        // counts) is atomic but not flushed, so that no fsync sits on the
        // spawn path; what a power cut could roll back there, the keeper's
        // registry of live children holds.
        let must_flush: BTreeSet<String> = self
            .procs
            .held_exits()
            .filter_map(|name| {
                self.model
                    .catalog
                    .session_file
                    .get(name)
                    .or_else(|| self.procs.stem(name))
                    .cloned()
            })
            .collect();
        // A session whose spawn is in flight is written once the keeper
        // answered (microseconds to a few milliseconds later; its answer
        // wakes the loop): its child execs meanwhile without competing with
        // a status render and write, and `Starting` then `Running` become
        // one write. The keeper's registry holds the child in that window.
        // (By the stem each spawn was asked under: a count kept as spawns
        // are asked and answered, not a walk over every spawn in flight.)
        let procs = &self.procs;
        let dirty = self
            .book
            .take_marked(|stem| procs.in_flight(stem) && !must_flush.contains(stem));
        for stem in dirty {
            let path = self.layout.status_file(&stem);
            let Some(view) = self.model.catalog.views.get(&stem).cloned() else {
                // The file is gone: its status goes too, unless a session it
                // declared is still being stopped (its final status is written there).
                let in_use = self
                    .model
                    .state
                    .sessions
                    .iter()
                    .any(|(n, r)| r.run.is_live() && self.procs.stem(n) == Some(&stem));
                if !in_use {
                    self.api_forget(&stem);
                    let _ = std::fs::remove_file(&path);
                    self.book.gone(&stem, &path);
                }
                continue;
            };
            let manifest = view
                .path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let mut docs: Vec<String> = Vec::new();
            let mut session_docs: Vec<SessionStatusDoc> = Vec::new();
            let mut kinds: Vec<bool> = Vec::new();
            let mut pool_docs = Vec::new();
            for entry in &view.entries {
                match entry {
                    Entry::Session(name)
                        if core::gc::is_collected(
                            &self.model.collected,
                            name,
                            self.model
                                .catalog
                                .known("Session", name)
                                .map(|k| k.spec_hash),
                        ) =>
                    {
                        // Collected: no status until its spec changes.
                    }
                    Entry::Session(name) => {
                        let rec = self
                            .model
                            .state
                            .sessions
                            .get(name)
                            .cloned()
                            .unwrap_or_default();
                        let known = self.model.catalog.known("Session", name);
                        let pool = self
                            .model
                            .desired
                            .sessions
                            .get(name)
                            .and_then(|d| d.pool())
                            .map(str::to_string);
                        let extras = self.extras(name, &stem);
                        let mut doc = render::session_status(
                            name,
                            &manifest,
                            known.map(|k| k.uid.to_string()),
                            known.map(|k| k.spec_hash),
                            pool,
                            &rec,
                            &extras,
                            &view.stale_problems,
                            &mut self.transitions,
                            now,
                        );
                        doc.metadata.labels = self
                            .model
                            .catalog
                            .session_labels
                            .get(name)
                            .cloned()
                            .unwrap_or_default();
                        if let Some(fleet) = &self.opts.fleet {
                            fleet.annotate(name, &mut doc.status);
                        }
                        self.session_events(&doc, &path);
                        session_docs.push(doc);
                        kinds.push(true);
                    }
                    Entry::Pool(name) => {
                        let crashes = self.layout.relative(&self.layout.crashes_dir(&stem));
                        let uid = self
                            .model
                            .catalog
                            .known("Pool", name)
                            .map(|k| k.uid.to_string());
                        let mut doc = render::pool_status(
                            name,
                            &manifest,
                            uid,
                            &self.model.desired,
                            &self.model.state,
                            &crashes,
                            &mut self.transitions,
                            now,
                        );
                        doc.status.errors = view.stale_problems.clone();
                        doc.status.agent = self.pool_agent_totals(name);
                        doc.status.budget = crate::runtime::budget::status(
                            &self.ledger,
                            &self.model.desired,
                            name,
                            now,
                        );
                        doc.metadata.labels = self
                            .model
                            .catalog
                            .pool_labels
                            .get(name)
                            .cloned()
                            .unwrap_or_default();
                        self.pool_events(&doc);
                        pool_docs.push(doc);
                        kinds.push(false);
                    }
                    Entry::Invalid {
                        kind: _,
                        name,
                        problems,
                    } => {
                        session_docs.push(render::invalid_status(
                            name.as_deref(),
                            &manifest,
                            Reason::ManifestInvalid,
                            format!("the manifest does not validate ({} problem(s)); fix it and save again", problems.len()),
                            problems.clone(),
                        ));
                        if let Some(doc) = session_docs.last() {
                            self.session_events(doc, &path);
                        }
                        kinds.push(true);
                    }
                    Entry::Duplicate {
                        kind,
                        name,
                        winner,
                        held,
                    } => {
                        session_docs.push(render::invalid_status(
                            Some(name),
                            &manifest,
                            Reason::DuplicateName,
                            crate::runtime::catalog::duplicate_message(kind, name, winner, *held),
                            Vec::new(),
                        ));
                        if let Some(doc) = session_docs.last() {
                            self.session_events(doc, &path);
                        }
                        kinds.push(true);
                    }
                }
            }
            if kinds.is_empty() {
                // Only collected sessions: the file has no status.
                self.api_forget(&stem);
                if path.exists() {
                    let _ = std::fs::remove_file(&path);
                }
                self.book.unwritten(&path);
                continue;
            }
            // The file's YAML, documents in the order of `kinds`.
            let render_all = |session_docs: &[SessionStatusDoc],
                              pool_docs: &[crate::api::status::PoolStatusDoc],
                              docs: &mut Vec<String>|
             -> Result<(), String> {
                docs.clear();
                let (mut si, mut pi) = (0, 0);
                for is_session in &kinds {
                    let text = if *is_session {
                        si += 1;
                        codec::to_yaml(&session_docs[si - 1])
                    } else {
                        pi += 1;
                        codec::to_yaml(&pool_docs[pi - 1])
                    };
                    docs.push(text.map_err(|e| e.to_string())?);
                }
                Ok(())
            };
            // Whether anything changed, from the documents without
            // updatedAt: their JSON costs a fraction of the YAML rendering,
            // which is then done once, for a file that is written.
            let hash = crate::runtime::catalog::spec_hash(&(&session_docs, &pool_docs, &kinds));
            if self.book.holds(&path, hash) {
                continue;
            }
            for d in &mut session_docs {
                d.status.updated_at = Some(now);
            }
            for d in &mut pool_docs {
                d.status.updated_at = Some(now);
            }
            if let Err(e) = render_all(&session_docs, &pool_docs, &mut docs) {
                self.error(ShellError::Render {
                    stem: stem.clone(),
                    message: e,
                });
                continue;
            }
            let flush = must_flush.contains(&stem);
            match write_atomic_with(&path, docs.join("---\n").as_bytes(), flush) {
                Ok(()) => {
                    self.api_publish(&stem, &session_docs, &pool_docs);
                    self.book.wrote(path, hash, stem);
                }
                Err(e) => {
                    let gone = e.kind() == std::io::ErrorKind::NotFound;
                    self.error(ShellError::StatusWrite {
                        path: path.clone(),
                        source: e,
                    });
                    if gone {
                        // The status directory was deleted: make it again.
                        let _ = create_dir(&self.layout.status_dir);
                    }
                    // Try again on the next pass.
                    self.book.mark(stem);
                }
            }
        }
    }

    /// Tokens and cost summed over a pool's agent members.
    pub(super) fn pool_agent_totals(&self, pool: &str) -> Option<serde_json::Value> {
        let members: Vec<serde_json::Value> = self
            .model
            .desired
            .sessions
            .values()
            .filter(|d| d.pool() == Some(pool))
            .filter_map(|d| self.agents.status(&d.name))
            .collect();
        if members.is_empty() {
            return None;
        }
        let sum = |k: &str| members.iter().filter_map(|m| m[k].as_u64()).sum::<u64>();
        let cost: f64 = members.iter().filter_map(|m| m["costUsd"].as_f64()).sum();
        Some(serde_json::json!({
            "members": members.len(),
            "turns": sum("turns"),
            "inputTokens": sum("inputTokens"),
            "outputTokens": sum("outputTokens"),
            "costUsd": (cost * 1e6).round() / 1e6,
        }))
    }

    /// The controller status's health figures.
    pub(super) fn health_figures(&self) -> BTreeMap<String, serde_json::Value> {
        use serde_json::json;
        // From the kept counts and the monitored sessions: no walk over
        // every record.
        let running = self.book.count(Phase::Running);
        let monitored: Vec<&Watch> = self
            .usage
            .iter()
            .filter(|(n, _)| {
                self.model
                    .state
                    .sessions
                    .get(*n)
                    .is_some_and(|r| matches!(r.run, Run::Running(_)))
            })
            .map(|(_, w)| w)
            .collect();
        let stale = monitored.iter().filter(|w| w.stale).count() as u64;
        let memory: Vec<u64> = monitored.iter().map(|w| w.usage.memory_bytes).collect();
        let h = &self.health;
        let mut m = BTreeMap::new();
        m.insert(
            "healthySessions".into(),
            json!(running.saturating_sub(stale)),
        );
        m.insert("staleSessions".into(), json!(stale));
        m.insert(
            "averageMemoryBytes".into(),
            json!(if memory.is_empty() {
                0
            } else {
                memory.iter().sum::<u64>() / memory.len() as u64
            }),
        );
        m.insert("restartsLastHour".into(), json!(h.restarts.len()));
        m.insert(
            "recoveryRate".into(),
            json!(if h.retried == 0 {
                None
            } else {
                Some((h.recovered as f64 / h.retried as f64 * 1000.0).round() / 1000.0)
            }),
        );
        m.insert(
            "averageRunSeconds".into(),
            json!(if h.runs == 0 {
                None
            } else {
                Some((h.run_seconds / h.runs as f64 * 1000.0).round() / 1000.0)
            }),
        );
        m.insert(
            "reconcileMillis".into(),
            json!({
                "average": if h.passes == 0 { 0.0 } else { (h.pass_sum / h.passes as f64 * 1e6).round() / 1e3 },
                "max": (h.pass_max * 1e6).round() / 1e3,
            }),
        );
        m.insert("memoryLimits".into(), json!(self.memory_mode.describe()));
        m
    }

    pub(super) fn extras(&self, name: &str, stem: &str) -> Extras {
        let live = self.procs.live(name);
        let watch = self.usage.watch(name);
        let spec = self.model.spec(name);
        Extras {
            logs: live.map(|l| LogPaths {
                stdout: self.layout.relative(&l.stdout),
                stderr: self.layout.relative(&l.stderr),
                dropped_bytes: self.log_guard.dropped(name),
            }),
            start_ticks: live.and_then(|l| l.start_ticks),
            boot_id: self.boot_id.clone(),
            crashes_dir: self.layout.relative(&self.layout.crashes_dir(stem)),
            usage: watch.map(|w| w.usage.clone()),
            last_activity: watch.and_then(|w| w.last_activity),
            stale_after: spec.and_then(|s| s.stale_after),
            stale: watch.is_some_and(|w| w.stale),
            analysis: self.analyses.get(name).cloned(),
            agent: self.agents.status(name),
            workspace: self.workspaces.status(name),
        }
    }

    /// Refreshes the gauges that describe the whole state (cheap: one walk).
    pub(super) fn update_metrics(&mut self) {
        // Restart gauges are set when a session spawns; here only counts.
        for phase in Phase::ALL {
            let n = self.book.count(phase);
            self.metrics
                .sessions
                .get_or_create(&PhaseLabel {
                    phase: phase.as_str().to_string(),
                })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
        for pool in self.model.desired.pools.keys() {
            let queued = self
                .model
                .desired
                .sessions
                .values()
                .filter(|d| d.pool() == Some(pool))
                .filter_map(|d| self.model.state.sessions.get(&d.name))
                .filter(|r| r.wait().is_some_and(|w| w.phase == Phase::Queued))
                .count();
            self.metrics
                .queue_length
                .get_or_create(&PoolLabel { pool: pool.clone() })
                .set(i64::try_from(queued).unwrap_or(i64::MAX));
        }
        self.metrics
            .invalid_manifests
            .set(i64::try_from(self.model.invalid_files).unwrap_or(i64::MAX));
        self.count_catalog_work();
        self.metrics.pass_done(self.last_reconcile.as_secs_f64());
    }

    /// Adds what the catalog read and listed since the last count to the
    /// metrics' counters.
    pub(super) fn count_catalog_work(&mut self) {
        let (reads, listings) = (self.model.catalog.reads, self.model.catalog.listings);
        self.metrics
            .manifest_reads
            .inc_by(reads.saturating_sub(self.metrics.manifest_reads.get()));
        self.metrics
            .manifest_listings
            .inc_by(listings.saturating_sub(self.metrics.manifest_listings.get()));
    }

    pub(super) fn write_controller_status(&mut self, force: bool) {
        let mut by_phase: BTreeMap<String, u64> = self
            .book
            .counts()
            .map(|(p, n)| (p.as_str().to_string(), n))
            .collect();
        if self.model.invalid_entries > 0 {
            *by_phase.entry("Invalid".into()).or_default() += self.model.invalid_entries;
        }
        let mut status = ControllerStatus {
            api_version: crate::api::API_VERSION.into(),
            kind: "ControllerStatus".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            pid: std::process::id(),
            started_at: Some(self.started_at),
            manifest_dir: self.layout.manifest_dir.display().to_string(),
            status_dir: self.layout.status_dir.display().to_string(),
            total_sessions: self.model.state.sessions.len() as u64,
            sessions_by_phase: by_phase,
            reconcile_count: 0,
            last_reconcile_millis: 0.0,
            last_error: self.last_error.as_ref().map(|e| e.0.clone()),
            last_error_at: self.last_error.as_ref().map(|e| e.1),
            extra: self.health_figures(),
            updated_at: None,
        };
        crate::runtime::accounts::add_to_status(
            &mut status.extra,
            &self.model.desired,
            &self.model.state,
            Utc::now(),
        );
        crate::runtime::budget::add_account_budgets(
            &mut status.extra,
            &self.ledger,
            &self.model.desired,
            Utc::now(),
        );
        // Scale-out: the `Owned` condition (sessions no live node owns).
        if let Some(fleet) = &self.opts.fleet {
            fleet.add_to_status(&mut status.extra);
        }
        // Counters alone rewrite the file at most once a resync interval.
        let mut for_hash = status.clone();
        for_hash.extra.remove("reconcileMillis");
        let hash = crate::runtime::catalog::spec_hash(&for_hash);
        self.api_controller(&status);
        let refresh = self.opts.resync_interval.max(Duration::from_secs(30));
        if !self.book.controller_status_due(hash, force, refresh) {
            return;
        }
        status.reconcile_count = self.reconcile_count;
        status.last_reconcile_millis = (self.last_reconcile.as_secs_f64() * 1e6).round() / 1e3;
        status.updated_at = Some(Utc::now());
        let path = self.layout.controller_status();
        let result = create_dir(&self.layout.control_dir()).and_then(|()| {
            let text = codec::to_yaml(&status).map_err(std::io::Error::other)?;
            // Figures for people and probes, rewritten at every change:
            // atomic, never flushed (nothing is acknowledged on it).
            write_atomic_with(&path, text.as_bytes(), false)
        });
        match result {
            Ok(()) => {
                self.book.wrote_controller_status(hash);
            }
            Err(e) => tracing::error!("cannot write {}: {e}", path.display()),
        }
    }

    /// Keeps the sessions-by-phase counts of the controller status and the
    /// metrics: recounted whole after a pass over everything, else moved
    /// for the sessions the pass `touched` (the only records that changed).
    pub(super) fn count_phases(&mut self, touched: &BTreeSet<String>, whole: bool) {
        if whole {
            let phases = self
                .model
                .state
                .sessions
                .iter()
                .map(|(n, r)| (n.clone(), r.phase()));
            self.book.recount(phases);
            return;
        }
        for name in touched {
            let now = self.model.state.sessions.get(name).map(core::Record::phase);
            self.book.moved(name, now);
        }
    }

    /// Recounts the manifests that do not validate (after a read that
    /// changed something).
    pub(super) fn count_invalid(&mut self) {
        self.model.invalid_files = self.model.catalog.invalid_files();
        self.model.invalid_entries = self
            .model
            .catalog
            .views
            .values()
            .flat_map(|v| v.entries.iter())
            .filter(|e| matches!(e, Entry::Invalid { .. } | Entry::Duplicate { .. }))
            .count() as u64;
    }

    /// Guards the logs of sessions adopted from an earlier controller, and
    /// caps every other log under the status folder (finished sessions,
    /// files an older version left oversized).
    pub(super) fn guard_logs_at_start(&mut self) {
        let mut active = Vec::new();
        for (name, _) in self.procs.running() {
            if let Some(l) = self.procs.live(&name) {
                for p in [&l.stdout, &l.stderr] {
                    self.log_guard
                        .watch(&name, p, self.opts.max_log_size, ROTATED_LOGS);
                    active.push(p.clone());
                }
            }
        }
        crate::runtime::log_guard::cap_existing(
            &self.layout.status_dir,
            self.opts.max_log_size,
            &active,
        );
    }
}
