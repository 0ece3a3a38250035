//! The desired state: reading the manifest folder, applying what changed, forgetting and collecting sessions.

use super::*;

/// The model: the manifests (catalog), the desired state they declare and
/// the core's state of every session, with the keys to reconcile. It is the
/// only caller of `core::observe` and `core::reconcile`.
pub(super) struct Model {
    pub(super) catalog: Catalog,
    pub(super) desired: Desired,
    pub(super) state: State,
    /// Sessions collected after ttlAfterFinished whose manifests stay.
    pub(super) collected: core::gc::Collected,
    /// Per-key reconcile: the keys touched since the last pass and each
    /// key's next due time (core::keys).
    pub(super) keys: core::keys::Queue,
    /// The next pass reconciles every session (at start, after a keeper
    /// takeover, at shutdown): the triggers that change many records at
    /// once outside `observe`.
    pub(super) everything: bool,
    /// The manifest paths the watch reported since the last read.
    pub(super) dir_changes: watch::SharedChanges,
    /// The next read of the manifest folder lists it whole (at start; a
    /// resync lists it too, see `resync_catalog`).
    pub(super) relist: bool,
    /// True while the manifest folder is watched (inotify).
    pub(super) watching: bool,
    /// The stems the catalog had views of after the last read.
    pub(super) catalog_stems: BTreeSet<String>,
    /// Manifest files that do not validate, and Invalid or Duplicate
    /// entries, as of the last read that changed something.
    pub(super) invalid_files: usize,
    pub(super) invalid_entries: u64,
}

impl Model {
    /// A model that has read nothing yet: the first pass lists the folder
    /// and reconciles everything.
    pub(super) fn new(collected: core::gc::Collected) -> Model {
        Model {
            catalog: Catalog::default(),
            desired: Desired::default(),
            state: State::default(),
            collected,
            keys: core::keys::Queue::default(),
            everything: true,
            dir_changes: watch::SharedChanges::default(),
            relist: true,
            watching: false,
            catalog_stems: BTreeSet::new(),
            invalid_files: 0,
            invalid_entries: 0,
        }
    }

    /// The spec declared now for session `name`.
    pub(super) fn spec(&self, name: &str) -> Option<std::sync::Arc<crate::api::SessionSpec>> {
        self.desired.sessions.get(name).map(|d| d.spec.clone())
    }

    /// Applies an event to the core state, and queues the keys it touches
    /// (taken before it is observed: an exit frees the slot of the pool the
    /// record counted in).
    pub(super) fn observe(&mut self, event: Event, now: DateTime<Utc>) {
        self.keys.touch_all(core::keys::event_keys(
            &self.desired,
            &self.state,
            event.session(),
        ));
        core::observe(&self.desired, &mut self.state, event, now);
    }

    /// One reconcile: of every session when `everything` is set, else of
    /// the keys touched since the last one and those due by `now`. Each
    /// session looked at is due again at its own next deadline.
    pub(super) fn reconcile(&mut self, now: DateTime<Utc>) -> core::Plan {
        if std::mem::take(&mut self.everything) {
            // Whatever was touched is part of everything.
            self.keys.take(now);
            let plan = core::reconcile(&self.desired, &mut self.state, now);
            let all: BTreeSet<String> = self.state.sessions.keys().cloned().collect();
            self.keys.schedule(&all, &plan.due);
            return plan;
        }
        let keys = self.keys.take(now);
        let (plan, looked_at) =
            core::reconcile::reconcile_keys(&self.desired, &mut self.state, &keys, now);
        self.keys.schedule(&looked_at, &plan.due);
        plan
    }
}

impl Controller {
    /// The stem of the file declaring `name` (its own name when none does).
    pub(super) fn stem_of(&self, name: &str) -> String {
        self.model
            .catalog
            .session_file
            .get(name)
            .cloned()
            .unwrap_or_else(|| name.to_string())
    }

    /// Re-reads the manifest folder (the files the watch reported, or the
    /// whole folder when asked or when no watch runs); true when what it declares changed
    /// (a file appeared, went away or was reloaded, or refusals changed).
    pub(super) fn rescan_catalog(&mut self, now: DateTime<Utc>) -> Read {
        self.read_catalog(now, false)
    }

    /// The periodic resync's read of the manifest folder (the safety net):
    /// while the watch is healthy (running, no error or overflow since the
    /// last read) the folder's names are listed and only a slice of the
    /// files is stat'ed ([`crate::runtime::catalog::Catalog::resync`]);
    /// otherwise every file is.
    pub(super) fn resync_catalog(&mut self, now: DateTime<Utc>) -> Read {
        self.read_catalog(now, true)
    }

    fn read_catalog(&mut self, now: DateTime<Utc>, resync: bool) -> Read {
        let (paths, overflow) = match self.model.dir_changes.lock() {
            Ok(mut c) => c.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        // Without a watch (--poll, or it failed) every read lists the folder.
        let relist = std::mem::take(&mut self.model.relist) || overflow || !self.model.watching;
        // Scale-out filters the whole declared state: no patches there.
        let patch = self.opts.fleet.is_none();
        let reloaded = if relist {
            match self.model.catalog.rescan(&self.layout.manifest_dir, now) {
                Some(d) => Reloaded::Whole(d),
                None => Reloaded::Unchanged,
            }
        } else if resync {
            self.model
                .catalog
                .resync(&self.layout.manifest_dir, &paths, now, patch)
        } else {
            self.model
                .catalog
                .reload(&self.layout.manifest_dir, &paths, now, patch)
        };
        match reloaded {
            Reloaded::Unchanged => {
                // Refusals may have changed alone.
                self.book
                    .mark_all(self.model.catalog.changed.iter().cloned());
                Read::Unchanged
            }
            Reloaded::Whole(desired) => {
                // Files that appeared or went away (a duplicate name may move
                // too: those files are in `changed` as they were reloaded or removed).
                let before: BTreeSet<String> = self.model.catalog_stems.clone();
                self.set_desired(desired);
                self.model.catalog_stems = self.model.catalog.views.keys().cloned().collect();
                self.book.mark_all(
                    before
                        .symmetric_difference(&self.model.catalog_stems)
                        .cloned(),
                );
                self.book
                    .mark_all(self.model.catalog.changed.iter().cloned());
                // A session now declared in another file (a renamed manifest) is reported there.
                for (name, live) in self.procs.lives_mut() {
                    if let Some(stem) = self.model.catalog.session_file.get(name) {
                        if *stem != live.stem {
                            self.book
                                .mark(std::mem::replace(&mut live.stem, stem.clone()));
                        }
                    }
                }
                Read::Whole
            }
            Reloaded::Sessions { removed, upserted } => {
                self.patch_desired(removed, upserted);
                for stem in &self.model.catalog.changed {
                    if self.model.catalog.views.contains_key(stem) {
                        self.model.catalog_stems.insert(stem.clone());
                    } else {
                        self.model.catalog_stems.remove(stem);
                    }
                }
                self.book
                    .mark_all(self.model.catalog.changed.iter().cloned());
                Read::Patched
            }
        }
    }

    /// Applies a change of plain sessions to the desired state in place (what
    /// [`Controller::set_desired`] does for a whole state, for these names
    /// only), and queues their keys.
    pub(super) fn patch_desired(
        &mut self,
        removed: BTreeSet<String>,
        upserted: Vec<DesiredSession>,
    ) {
        for name in removed {
            self.model.desired.sessions.remove(&name);
            self.model.desired.accounts.remove(&name);
            self.model.keys.touch(core::keys::Key::Session(name));
        }
        let mut collected_changed = false;
        for d in upserted {
            let name = d.name.clone();
            self.model
                .keys
                .touch(core::keys::Key::Session(name.clone()));
            if let Some(stem) = self.model.catalog.session_file.get(&name) {
                if let Some(live) = self.procs.live_mut(&name) {
                    if live.stem != *stem {
                        self.book
                            .mark(std::mem::replace(&mut live.stem, stem.clone()));
                    }
                }
            }
            // A collected spec stays collected; a changed one runs (core::gc).
            let hash = self
                .model
                .catalog
                .known("Session", &name)
                .map(|k| k.spec_hash);
            if self
                .model
                .collected
                .get(&name)
                .is_some_and(|h| Some(*h) != hash)
            {
                self.model.collected.remove(&name);
                collected_changed = true;
            }
            if core::gc::is_collected(&self.model.collected, &name, hash) {
                self.model.desired.sessions.remove(&name);
                self.model.desired.accounts.remove(&name);
                continue;
            }
            match crate::runtime::accounts::account_of(
                &d.spec,
                &self.opts.pass_env,
                &self.layout.manifest_dir,
            ) {
                Some(a) => {
                    self.model.desired.accounts.insert(name.clone(), a);
                }
                None => {
                    self.model.desired.accounts.remove(&name);
                }
            }
            self.model.desired.sessions.insert(name, d);
        }
        if collected_changed {
            self.save_collected();
        }
    }

    /// The manifests' desired state, without the sessions collected with
    /// their current spec (core::gc).
    pub(super) fn set_desired(&mut self, mut desired: Desired) {
        crate::runtime::accounts::fill(
            &mut desired,
            &self.opts.pass_env,
            &self.layout.manifest_dir,
        );
        desired.account_budgets = self.opts.account_budgets.iter().cloned().collect();
        // The spend stays known until the next pass recomputes it.
        desired.spend = std::mem::take(&mut self.model.desired.spend);
        desired.account_spend = std::mem::take(&mut self.model.desired.account_spend);
        let catalog = &self.model.catalog;
        let changed = core::gc::apply(&mut desired, &mut self.model.collected, |n| {
            catalog.known("Session", n).map(|k| k.spec_hash)
        });
        if changed {
            self.save_collected();
        }
        // Scale-out: sessions owned by another node are not desired here.
        if let Some(fleet) = &self.opts.fleet {
            desired = fleet.filter(desired);
        }
        self.model
            .keys
            .touch_all(core::keys::changed(&self.model.desired, &desired));
        self.model.desired = desired;
    }

    pub(super) fn save_collected(&mut self) {
        if let Err(e) =
            crate::runtime::collected::save(&self.layout.control_dir(), &self.model.collected)
        {
            self.error(ShellError::Collected(e));
        }
    }

    /// ttlAfterFinished passed. By default the manifest stays (Git may
    /// track it): the spec is recorded as collected, and forgetting the
    /// session removes its status, logs and crash dumps. With
    /// `--gc-delete-manifests` a file declaring only this session is deleted.
    pub(super) fn collect_garbage(&mut self, name: &str) {
        if !self.opts.gc_delete_manifests {
            let Some(hash) = self
                .model
                .catalog
                .known("Session", name)
                .map(|k| k.spec_hash)
            else {
                return;
            };
            self.model.collected.insert(name.to_string(), hash);
            self.save_collected();
            // A copy: set_desired compares the old state with the new one
            // for the keys the change touches.
            let desired = self.model.desired.clone();
            self.set_desired(desired);
            self.mark_dirty(name);
            crate::runtime::story::collected(
                name,
                "status, logs and crash dumps removed; the manifest stays and this spec will not run again",
            );
            self.collected_event(
                name,
                "status, logs and crash dumps removed; the manifest stays",
            );
            return;
        }
        let Some(stem) = self.model.catalog.session_file.get(name).cloned() else {
            return;
        };
        let Some(view) = self.model.catalog.views.get(&stem) else {
            return;
        };
        if view.entries.len() == 1 {
            if let Err(e) = std::fs::remove_file(&view.path) {
                self.error(ShellError::GarbageCollection {
                    path: view.path.clone(),
                    source: e,
                });
                return;
            }
            crate::runtime::story::collected(name, "manifest deleted (--gc-delete-manifests)");
            self.collected_event(name, "manifest deleted (--gc-delete-manifests)");
            // Rescan at once so the session is forgotten in this pass.
            if let Some(desired) = self
                .model
                .catalog
                .rescan(&self.layout.manifest_dir, Utc::now())
            {
                self.set_desired(desired);
            }
            self.book.mark(stem);
        } else {
            tracing::warn!(
                session = name,
                "ttlAfterFinished passed, but {} declares other objects too; not deleted",
                view.path.display()
            );
        }
    }

    pub(super) fn forget(&mut self, name: &str) {
        self.model.keys.forget(name);
        let keep_logs = self.tombstones.contains_key(name);
        self.transitions.forget(name);
        self.removed_event(name);
        self.events.forget("Session", name);
        self.log_guard.forget(name);
        self.usage.forget(name);
        self.analyses.remove(name);
        self.agents.forget(name);
        self.workspaces.release(name);
        self.workspaces.forget(name);
        self.metrics.restarts.remove(&SessionLabel {
            session: name.to_string(),
        });
        if let Some(cg) = self.procs.live(name).and_then(|l| l.cgroup.clone()) {
            crate::runtime::cgroup::remove(&cg);
        }
        if keep_logs {
            // The tombstone keeps them until it expires.
            if let Some(live) = self.procs.forget(name) {
                self.book.mark(live.stem);
            }
            return;
        }
        if let Some(live) = self.procs.forget(name) {
            let base = self.layout.status_dir.join(format!("{}.logs", live.stem));
            let _ = std::fs::remove_dir_all(&live.log_dir);
            // Remove the logs folder of the file once empty.
            let _ = std::fs::remove_dir(&base);
            let crashes = self.layout.crashes_dir(&live.stem);
            crash_dump::prune(&crashes, name, 0);
            let _ = std::fs::remove_dir(&crashes);
            self.book.mark(live.stem);
        } else {
            for stem in self.book.written_stems() {
                let crashes = self.layout.crashes_dir(&stem);
                crash_dump::prune(&crashes, name, 0);
            }
        }
        // A session whose manifest is gone and never ran: its file's folders may be left.
        let stem = name.to_string();
        if !self.model.catalog.views.contains_key(&stem) {
            let _ = std::fs::remove_dir_all(self.layout.status_dir.join(format!("{stem}.logs")));
            let _ = std::fs::remove_dir_all(self.layout.crashes_dir(&stem));
        }
    }

    pub(super) fn mark_dirty(&mut self, name: &str) {
        if let Some(stem) = self.model.catalog.session_file.get(name) {
            self.book.mark(stem.clone());
        } else if let Some(l) = self.procs.live(name) {
            self.book.mark(l.stem.clone());
        }
        if let Some(pool) = self.model.desired.sessions.get(name).and_then(|d| d.pool()) {
            if let Some(stem) = self.model.catalog.pool_file.get(pool) {
                self.book.mark(stem.clone());
            }
        }
    }
}
