//! What wakes the loop, wired up before it starts (the keeper's stream, the
//! watches on manifests, agent output and the inbox, the log guard, the API,
//! the timers), and the loop's own housekeeping: its periodic resync and its
//! end.

use super::*;
use crate::apiserver::Command;

/// Every source of wake-ups the loop selects on.
pub(super) struct Wakers {
    /// Spawn answers and exits, in order.
    pub(super) from_keeper: mpsc::UnboundedReceiver<FromKeeper>,
    /// Agent output files that changed.
    pub(super) agent_rx: mpsc::UnboundedReceiver<PathBuf>,
    /// Sessions whose logs the guard cut.
    pub(super) log_changes: mpsc::UnboundedReceiver<String>,
    /// Restarts and stops from the API.
    pub(super) api_rx: mpsc::Receiver<Command>,
    /// The manifest folder changed.
    pub(super) watch_rx: mpsc::Receiver<watch::Wake>,
    /// The manifest folder's watch, kept for the loop's life.
    pub(super) _watcher: Option<notify::RecommendedWatcher>,
    /// Usage sampling (`--usage-interval`; never fires when it is 0).
    pub(super) usage_tick: tokio::time::Interval,
    /// The periodic resync, the safety net.
    pub(super) resync: tokio::time::Interval,
    /// False with `--usage-interval 0`.
    pub(super) sampling: bool,
}

impl Controller {
    /// Wires every source of wake-ups, then seeds what the first pass needs.
    pub(super) async fn wire(&mut self) -> Result<Wakers, StartError> {
        if let Err(e) = process::become_subreaper() {
            tracing::warn!("cannot become child subreaper ({e}); grandchildren that leave their group are not tracked");
        }
        let from_keeper = self.start_keeper_io()?;
        let agent_rx = self.watch_agent_output();
        self.watch_adopted_agents();
        self.watch_inbox();
        self.guard_logs_at_start();
        let log_changes = self
            .log_guard
            .changes()
            .unwrap_or_else(|| mpsc::unbounded_channel().1);
        let api_rx = self.api_start().await?;
        let (watch_tx, watch_rx) = mpsc::channel::<watch::Wake>(8);
        let watcher = self.watch_manifests(watch_tx);
        self.model.watching = watcher.is_some();
        let sampling = !self.opts.usage_interval.is_zero();
        let usage_tick = ticker(if sampling {
            self.opts.usage_interval
        } else {
            Duration::from_secs(86_400)
        })
        .await;
        let resync = ticker(self.opts.resync_interval).await;
        tracing::info!(
            dir = %self.layout.manifest_dir.display(),
            status_dir = %self.layout.status_dir.display(),
            "sessionlet controller started"
        );
        // `sessionlet down`: a drain from the start, as if SIGINT had come.
        self.model.state.shutting_down |= self.opts.drain;
        self.story
            .seed(&self.model.state, &self.model.desired, &self.model.catalog);
        self.tombstones =
            crate::runtime::tombstone::scan(&self.layout.status_dir, self.opts.tombstone_ttl);
        Ok(Wakers {
            from_keeper,
            agent_rx,
            log_changes,
            api_rx,
            watch_rx,
            _watcher: watcher,
            usage_tick,
            resync,
            sampling,
        })
    }

    /// Watches agent output files (and, with the same watcher, the inbox);
    /// without inotify (`--poll`) they are read at each sample and resync.
    fn watch_agent_output(&mut self) -> mpsc::UnboundedReceiver<PathBuf> {
        let (agent_tx, agent_rx) = mpsc::unbounded_channel::<PathBuf>();
        let agent_watcher = if self.opts.poll {
            Err(notify::Error::generic("--poll"))
        } else {
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                if let Ok(event) = event {
                    if matches!(
                        event.kind,
                        notify::EventKind::Modify(_) | notify::EventKind::Create(_)
                    ) {
                        for p in event.paths {
                            let _ = agent_tx.send(p);
                        }
                    }
                }
            })
        };
        match agent_watcher {
            Ok(w) => self.agent_watcher = Some(std::sync::Mutex::new(w)),
            Err(e) => {
                tracing::warn!("cannot watch agent output ({e}); it is read at each usage sample")
            }
        }
        agent_rx
    }

    /// `sessionlet send` drops messages in the inbox: watching it wakes
    /// the loop, whose pass hands them to the keeper at once.
    fn watch_inbox(&self) {
        let inbox = self.layout.control_dir().join("inbox");
        if let (Some(w), Ok(())) = (&self.agent_watcher, create_dir(&inbox)) {
            use notify::Watcher;
            if let Err(e) = w
                .lock()
                .map_err(|_| notify::Error::generic("watcher lock poisoned"))
                .and_then(|mut w| w.watch(&inbox, notify::RecursiveMode::Recursive))
            {
                tracing::warn!(
                    "cannot watch {} ({e}); messages are delivered at each resync",
                    inbox.display()
                );
            }
        }
    }

    /// Watches the manifest folder; without a watch the resync rescans.
    fn watch_manifests(
        &mut self,
        watch_tx: mpsc::Sender<watch::Wake>,
    ) -> Option<notify::RecommendedWatcher> {
        if self.opts.poll {
            return None;
        }
        match watch::watch(
            &self.layout.manifest_dir,
            watch_tx,
            self.model.dir_changes.clone(),
        ) {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(
                    "cannot watch {} ({e}); falling back to rescans every {:?}",
                    self.layout.manifest_dir.display(),
                    self.opts.resync_interval
                );
                None
            }
        }
    }

    /// Agent output files changed: their sessions' new output is read.
    pub(super) fn on_agent_output(&mut self, paths: BTreeSet<PathBuf>) {
        for p in paths {
            if let Some(name) = self.agents.by_stdout(&p) {
                self.read_agent(&name);
            }
        }
    }

    /// The periodic resync's housekeeping (its relist runs in the loop, as
    /// `quiet_resync` or a pass); a new keeper stream when one had to be
    /// started.
    pub(super) fn on_resync_tick(&mut self) -> Option<mpsc::UnboundedReceiver<FromKeeper>> {
        self.reap();
        let mut reconnected = None;
        if self.link.tx.is_none() {
            // A keeper that could not be started (or reached) after the
            // last one died: try again at each resync, so that spawning
            // works again once it can.
            if let Some(rx) = self.reconnect_keeper() {
                self.link.events_open = true;
                reconnected = Some(rx);
            }
        }
        self.check_status_dir();
        // Only logs guarded without inotify (--poll).
        for name in self.log_guard.check_all() {
            self.mark_dirty(&name);
        }
        self.check_vanished();
        self.read_agents();
        reconnected
    }

    /// The loop ends: the final controller status, and when nothing is
    /// left to keep, the keeper told to go and the cgroups removed.
    pub(super) async fn end(&mut self, exit: Exit) {
        // Whatever the last exits left (their passes normally do it).
        self.chores.run(&self.log_guard);
        if matches!(exit, Exit::SomeFailed) {
            crate::runtime::story::failures(
                &self.model.desired,
                &self.model.state,
                &self.model.catalog,
            );
        }
        self.write_controller_status(true);
        if self.model.state.all_stopped() {
            // Nothing left to keep: the keeper exits after its last child.
            if let Some(tx) = &self.link.tx {
                tx.shutdown().await;
            }
            for live in self.procs.lives() {
                if let Some(cg) = &live.cgroup {
                    crate::runtime::cgroup::remove(cg);
                }
            }
            crate::runtime::cgroup::remove_root(&self.memory_mode);
        }
    }
}

/// A timer whose first tick is consumed now and whose missed ticks are
/// delayed, not bunched.
async fn ticker(period: Duration) -> tokio::time::Interval {
    let mut t = tokio::time::interval(period);
    t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    t.tick().await;
    t
}
