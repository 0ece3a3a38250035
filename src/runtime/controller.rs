//! The imperative shell: one task owns all state and waits on file events,
//! child exits, the next deadline, a periodic resync and signals. Each wake-up
//! reconciles the keys its triggers named and performs the plan.
//!
//! This file is the loop (`run`, `pass`, `execute`) and how it ends; each
//! concern is in its own file: `model` (the manifest folder and the desired
//! state), `keeper_link` (spawn answers, exits, the keeper's death),
//! `spawner`, `signalling`, `monitoring` (usage, agents, vanished
//! sessions), `statuses` (status files, crash dumps, tombstones, the
//! controller status, metrics), `restore` (adoption at start), `startup`
//! (checks, the lock, the keeper reached), `options`, `health`, `api_link`
//! and `event_hooks`; `tests` drives the routing with a fake keeper client
//! and a paused clock.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use nix::sys::signal::Signal;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;

use super::catalog::{Catalog, Entry, Reloaded};
use super::clock::Clock;
use super::errors::{ShellError, StartError};
use super::files::{create_dir, write_atomic, write_atomic_with};
use super::keeper::{self, Child, ExitRecord, FromKeeper, Identity, Keeper, KeeperClient, Welcome};
use super::layout::{attempt_logs, tail_lines, Layout};
use super::process::{self, SpawnRequest};
use super::render::{self, Extras, Transitions};
use super::{crash_dump, lock, watch};

mod api_link;
mod event_hooks;
mod health;
mod keeper_link;
mod model;
mod monitoring;
mod options;
mod processes;
mod restore;
mod signalling;
mod spawner;
mod startup;
mod status_book;
mod statuses;
#[cfg(test)]
mod tests;
use crate::api::status::{ControllerStatus, LogPaths, SessionStatusDoc};
use crate::core::{self, Action, Desired, DesiredSession, Event, Phase, Reason, Run, State};
use crate::manifest::codec;
use crate::telemetry::metrics::{PhaseLabel, PoolLabel, ReasonLabel, SessionLabel};

/// What a read of the manifest folder changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Read {
    /// Nothing declared changed.
    Unchanged,
    /// Plain sessions changed, patched in place.
    Patched,
    /// The desired state was rebuilt.
    Whole,
}

use crate::core::monitor::Watch;

/// The signals the controller handles, installed before anything else so
/// that a SIGTERM during startup still drains.
pub struct Signals {
    sigterm: tokio::signal::unix::Signal,
    sigint: tokio::signal::unix::Signal,
    sigchld: tokio::signal::unix::Signal,
}

impl Signals {
    /// Installs the handlers; needs a tokio runtime.
    pub fn install() -> std::io::Result<Signals> {
        Ok(Signals {
            sigterm: signal(SignalKind::terminate())?,
            sigint: signal(SignalKind::interrupt())?,
            sigchld: signal(SignalKind::child())?,
        })
    }
}

pub use crate::core::exit::Exit;
use health::Health;
pub use options::Options;
use processes::Live;

/// The controller.
pub struct Controller {
    opts: Options,
    /// The manifests, the desired state and the core state (model).
    model: model::Model,
    layout: Layout,
    /// The keeper: its connection, its pid, what it had (keeper_link).
    link: keeper_link::KeeperLink,
    /// Each session's process, by session and by pid (processes).
    procs: processes::Processes,
    /// What was written and what is to be written (status_book).
    book: status_book::StatusBook,
    transitions: Transitions,
    /// The snapshots the controller's log lines are derived from.
    story: super::story::Story,
    /// Tombstones of forgotten sessions, by name.
    tombstones: BTreeMap<String, super::tombstone::Tombstone>,
    boot_id: Option<String>,
    started_at: DateTime<Utc>,
    reconcile_count: u64,
    last_reconcile: Duration,
    last_error: Option<(String, DateTime<Utc>)>,
    /// The time decisions are made at (runtime::clock).
    clock: std::sync::Arc<dyn Clock>,
    /// Where sessions' processes are read (runtime::monitor).
    procfs: std::sync::Arc<dyn super::monitor::Procfs>,
    memory_mode: super::cgroup::Mode,
    /// Moves sessions without a memory limit into their cgroups after they
    /// started (started with the first such spawn).
    joiner: Option<super::contain::Joiner>,
    watches: BTreeMap<String, Watch>,
    /// Sampling rounds so far (core::monitor::read_now spreads the reads).
    usage_round: u64,
    analyses: BTreeMap<String, (u32, serde_json::Value)>,
    metrics: std::sync::Arc<crate::telemetry::Metrics>,
    health: Health,
    agents: super::agents::Agents,
    /// What pools with a budget spent (runtime::budget).
    ledger: super::budget::Ledger,
    /// Sessions' Git worktrees (runtime::workspace).
    workspaces: super::workspace::Workspaces,
    /// Sessions' input (runtime::inbox).
    inputs: super::inbox::Inputs,
    /// A second signal killed every session; the loop waits for their exits.
    forced: bool,
    /// Bounds every session's logs (`--max-log-size`) from its own thread.
    log_guard: super::log_guard::LogGuard,
    agent_watcher: Option<std::sync::Mutex<notify::RecommendedWatcher>>,
    /// Events: derived from status renders, kept in the control folder, live to subscribers.
    pub(crate) events: crate::events::EventLog,
    /// The local API's hub and command channel (api_link).
    api: Option<api_link::ApiLink>,
    _lock: lock::Lock,
}

impl Controller {
    /// Runs until drained (or done, with `--exit-when-done`).
    pub async fn run(mut self, signals: Signals) -> Result<Exit, StartError> {
        let Signals {
            mut sigterm,
            mut sigint,
            mut sigchld,
        } = signals;
        if let Err(e) = process::become_subreaper() {
            tracing::warn!("cannot become child subreaper ({e}); grandchildren that leave their group are not tracked");
        }
        let mut from_keeper = self.start_keeper_io()?;
        let (agent_tx, mut agent_rx) = mpsc::unbounded_channel::<PathBuf>();
        let agent_watcher = if self.opts.poll {
            // No inotify here: agent output is read at each usage sample and resync.
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
        self.watch_adopted_agents();
        // `sessionlet send` drops messages in the inbox: watching it wakes
        // the loop, whose pass hands them to the keeper at once.
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
        self.guard_logs_at_start();
        let mut log_changes = self
            .log_guard
            .changes()
            .unwrap_or_else(|| mpsc::unbounded_channel().1);
        let mut api_rx = self.api_start().await?;
        let (watch_tx, mut watch_rx) = mpsc::channel::<watch::Wake>(8);
        let _watcher = if self.opts.poll {
            None
        } else {
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
        };
        self.model.watching = _watcher.is_some();
        let sampling = !self.opts.usage_interval.is_zero();
        let mut usage_tick = tokio::time::interval(if sampling {
            self.opts.usage_interval
        } else {
            Duration::from_secs(86_400)
        });
        usage_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        usage_tick.tick().await;
        let mut resync = tokio::time::interval(self.opts.resync_interval);
        resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        resync.tick().await;
        tracing::info!(
            dir = %self.layout.manifest_dir.display(),
            status_dir = %self.layout.status_dir.display(),
            "sessionlet controller started"
        );
        // `sessionlet down`: a drain from the start, as if SIGINT had come.
        self.model.state.shutting_down |= self.opts.drain;
        self.story
            .seed(&self.model.state, &self.model.desired, &self.model.catalog);
        self.tombstones = super::tombstone::scan(&self.layout.status_dir, self.opts.tombstone_ttl);
        let mut rescan = true;
        // When a file being written is read anyway (its writer keeps it open).
        let mut settle_at: Option<tokio::time::Instant> = None;
        // The periodic resync's tick (handled by `quiet_resync` first).
        let mut resync_due = false;
        let mut last_wake: Option<DateTime<Utc>> = None;
        let fleet = self.opts.fleet.clone();
        loop {
            if rescan {
                // This rescan reads every write so far.
                settle_at = None;
            }
            let wake_at = if std::mem::take(&mut resync_due) && !rescan && self.quiet_resync() {
                last_wake
            } else {
                self.pass(rescan)
            };
            last_wake = wake_at;
            rescan = false;
            if let Some(f) = &fleet {
                f.note_state(&self.model.state);
            }
            if let Some(exit) = self.finished() {
                if matches!(exit, Exit::SomeFailed) {
                    super::story::failures(
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
                            super::cgroup::remove(cg);
                        }
                    }
                    super::cgroup::remove_root(&self.memory_mode);
                }
                return Ok(exit);
            }
            let sleep = wake_at
                .map(|t| (t - self.clock.now()).to_std().unwrap_or(Duration::ZERO))
                .unwrap_or(Duration::from_secs(3600));
            tokio::select! {
                Some(wake) = watch_rx.recv() => {
                    // A finished change (closed, renamed, deleted) is read at
                    // once; a file still being written waits for its close,
                    // or for a quiet `debounce` if its writer keeps it open.
                    let mut now = wake == watch::Wake::Now;
                    while let Ok(w) = watch_rx.try_recv() {
                        now |= w == watch::Wake::Now;
                    }
                    if now {
                        rescan = true;
                    } else {
                        settle_at.get_or_insert_with(|| tokio::time::Instant::now() + self.opts.debounce);
                    }
                }
                _ = tokio::time::sleep_until(settle_at.unwrap_or_else(tokio::time::Instant::now)), if settle_at.is_some() => {
                    rescan = true;
                }
                Some(path) = agent_rx.recv() => {
                    let mut paths = BTreeSet::from([path]);
                    while let Ok(p) = agent_rx.try_recv() {
                        paths.insert(p);
                    }
                    for p in paths {
                        if let Some(name) = self.agents.by_stdout(&p) {
                            self.read_agent(&name);
                        }
                    }
                }
                msg = from_keeper.recv(), if self.link.events_open => {
                    let mut batch = vec![msg.unwrap_or(FromKeeper::Closed)];
                    while let Ok(m) = from_keeper.try_recv() {
                        batch.push(m);
                    }
                    for m in batch {
                        if let Some(rx) = self.on_keeper(m) {
                            from_keeper = rx;
                        }
                    }
                }
                // The keeper and, when we are PID 1, orphans are our children.
                _ = sigchld.recv() => self.reap(),
                Some(cmd) = api_rx.recv() => self.on_api(cmd),
                // The log guard dropped output: the status says how much.
                Some(name) = log_changes.recv() => {
                    self.mark_dirty(&name);
                    while let Ok(name) = log_changes.try_recv() {
                        self.mark_dirty(&name);
                    }
                }
                _ = tokio::time::sleep(sleep) => {}
                // Scale-out: this node gained or lost sessions.
                _ = crate::fleet::changed(fleet.as_ref()) => {
                    if let Some(desired) = fleet.as_ref().and_then(crate::fleet::Fleet::declared_state) {
                        self.set_desired(desired);
                        self.book.mark_all(self.model.catalog.views.keys().cloned());
                    }
                }
                _ = usage_tick.tick(), if sampling => {
                    self.read_agents();
                    self.sample_usage();
                }
                _ = resync.tick() => {
                    resync_due = true;
                    self.reap();
                    if self.link.tx.is_none() {
                        // A keeper that could not be started (or reached)
                        // after the last one died: try again at each resync,
                        // so that spawning works again once it can.
                        if let Some(rx) = self.reconnect_keeper() {
                            from_keeper = rx;
                            self.link.events_open = true;
                        }
                    }
                    self.check_status_dir();
                    // Only logs guarded without inotify (--poll).
                    for name in self.log_guard.check_all() {
                        self.mark_dirty(&name);
                    }
                    self.check_vanished();
                    self.read_agents();
                }
                _ = sigterm.recv() => { if let Some(exit) = self.on_signal(Signal::SIGTERM) { return Ok(exit); } }
                _ = sigint.recv() => { if let Some(exit) = self.on_signal(Signal::SIGINT) { return Ok(exit); } }
            }
        }
    }

    /// SIGTERM or SIGINT. `--keep-sessions` applies to SIGTERM only (an
    /// upgrade); Ctrl-C always drains.
    fn on_signal(&mut self, signal: Signal) -> Option<Exit> {
        if core::keeps_sessions(
            self.opts.keep_sessions,
            signal == Signal::SIGTERM,
            self.model.state.shutting_down,
        ) {
            tracing::info!(
                "SIGTERM received: exiting and leaving sessions running (--keep-sessions)"
            );
            self.write_controller_status(true);
            return Some(Exit::Clean);
        }
        if self.forced {
            tracing::warn!("third signal: exiting without waiting for the killed sessions");
            self.write_controller_status(true);
            return Some(Exit::Forced);
        }
        if self.model.state.shutting_down {
            tracing::warn!("second signal: killing every session now");
            let running = self.procs.running();
            for (name, pid) in running {
                self.signal_session(&name, pid, Signal::SIGKILL);
            }
            // Their exits still arrive: the final statuses say how each ended.
            self.forced = true;
            return None;
        }
        tracing::info!(
            "signal received: stopping every session gracefully (send it again to kill)"
        );
        self.model.state.shutting_down = true;
        self.model.everything = true;
        None
    }

    fn finished(&self) -> Option<Exit> {
        core::exit::decide(
            &self.model.desired,
            &self.model.state,
            core::exit::Ending {
                exit_when_done: self.opts.exit_when_done,
                forced: self.forced,
                any_invalid: self.model.invalid_entries > 0,
            },
        )
    }

    /// The periodic resync: a relist (of names and a slice of the files'
    /// stats while the watch is healthy, `resync_catalog`) that finds
    /// nothing changed and no event waiting costs the listing alone, not a reconcile pass over
    /// every session (timers wake the loop on their own). Returns false
    /// when a full pass is needed.
    fn quiet_resync(&mut self) -> bool {
        let started = Instant::now();
        let now = self.clock.now();
        let read = self.resync_catalog(now);
        if read == Read::Whole {
            self.count_invalid();
        }
        if read != Read::Unchanged
            || !self.book.nothing_marked()
            || !self.model.state.dirty.is_empty()
            || !self.model.state.outbox.is_empty()
            || self.procs.holds_exits()
            || !self.model.keys.is_quiet()
            || self.model.everything
        {
            return false;
        }
        // Messages for running sessions' input are delivered at each pass.
        if let Some(tx) = &self.link.tx {
            let running = super::inbox::running(&self.model.state, &self.model.desired);
            self.inputs
                .pump(&self.layout, &running, tx.as_ref(), &mut self.agents, now);
        }
        self.expire_tombstones(now);
        // `sessionlet_manifest_listings_total` counts the resyncs' listings too.
        self.count_catalog_work();
        // A resync that found nothing to do still counts as a pass of the
        // loop (for /healthz and `reconcileCount`).
        self.reconcile_count += 1;
        self.last_reconcile = started.elapsed();
        self.health.pass(self.last_reconcile);
        self.write_controller_status(false);
        true
    }

    /// One wake-up: rescan if asked, reconcile until the plan is empty, write statuses.
    fn pass(&mut self, rescan: bool) -> Option<DateTime<Utc>> {
        // The orphans listed for the sweeps of the exits just handled are
        // stale from here on.
        self.procs.drop_census();
        let started = Instant::now();
        let now = self.clock.now();
        let read = if rescan {
            self.rescan_catalog(now)
        } else {
            Read::Unchanged
        };
        let catalog_changed = read == Read::Whole;
        // A patch changes valid files of plain sessions only: the invalid
        // figures stay.
        if read == Read::Whole || self.model.everything {
            self.count_invalid();
        }
        let recount = self.model.everything;
        let spending = core::keys::Spending::of(&self.model.desired);
        super::budget::fill(
            &self.ledger,
            &mut self.model.desired,
            &self.model.state,
            &self.agents,
            now,
        );
        self.model.keys.touch_all(core::keys::spend_moved(
            &spending,
            &core::keys::Spending::of(&self.model.desired),
            &self.model.desired.accounts,
            &self.model.desired.accounts,
        ));
        if let Some(tx) = &self.link.tx {
            let running = super::inbox::running(&self.model.state, &self.model.desired);
            self.inputs
                .pump(&self.layout, &running, tx.as_ref(), &mut self.agents, now);
        }
        // The sessions the plans act on: the only records that can have
        // changed (every change of a record ends in a status write).
        let mut touched: BTreeSet<String> = BTreeSet::new();
        for _ in 0..8 {
            let plan = self.model.reconcile(now);
            if plan.is_idle() {
                break;
            }
            touched.extend(plan.actions.iter().map(|a| a.session().to_string()));
            if !self.execute(plan.actions, now) {
                break;
            }
        }
        self.story.tell(
            &self.model.state,
            &self.model.desired,
            &self.model.catalog,
            &touched,
            catalog_changed,
            self.clock.now(),
        );
        self.expire_tombstones(self.clock.now());
        self.write_statuses(now);
        self.api_save_stopped();
        self.ack_saved();
        self.reconcile_count += 1;
        self.last_reconcile = started.elapsed();
        self.health.pass(self.last_reconcile);
        self.count_phases(&touched, recount);
        self.update_metrics();
        // With spawns in flight, the answers' pass writes it; during a long
        // burst of spawns (a cold start) at most once a second.
        let recent = self.book.controller_status_recent(Duration::from_secs(1));
        if !self.procs.spawns_in_flight() || !recent {
            self.write_controller_status(false);
        }
        // A census taken during this pass (stops) must not serve an exit
        // handled later.
        self.procs.drop_census();
        self.model.keys.next_due()
    }

    /// Performs a plan; returns true when it produced events to reconcile again.
    fn execute(&mut self, actions: Vec<Action>, now: DateTime<Utc>) -> bool {
        let mut fed = false;
        // Crash dumps last: a replacement must not wait for the analysis
        // and the fsync of its predecessor's dump (the dump reads the old
        // attempt's logs, which the new attempt does not touch).
        let (dumps, rest): (Vec<Action>, Vec<Action>) = actions
            .into_iter()
            .partition(|a| matches!(a, Action::WriteCrashDump { .. }));
        for action in rest.into_iter().chain(dumps) {
            match action {
                Action::Spawn { name, attempt } => {
                    // The reply comes as an event; a failure to ask is a new fact now.
                    if let Err(e) = self.spawn(&name, attempt) {
                        fed = true;
                        let event = Event::SpawnFailed {
                            name,
                            reason: e.reason,
                            message: e.message,
                        };
                        self.model.observe(event, now);
                    }
                }
                Action::Signal { name, pid, signal } => self.signal_session(&name, pid, signal),
                Action::WriteCrashDump { name, exit } => self.write_crash_dump(&name, &exit, now),
                Action::WriteStatus { name } => self.mark_dirty(&name),
                Action::Tombstone { name, record } => {
                    // Before the tombstone, which then says what became of the worktree.
                    self.workspaces.release(&name);
                    self.write_tombstone(&name, &record, now)
                }
                Action::Forget { name } => self.forget(&name),
                Action::CollectGarbage { name } => {
                    self.collect_garbage(&name);
                    fed = true;
                }
            }
        }
        fed
    }

    /// An error the controller survives: logged, kept as `lastError`,
    /// counted by kind.
    fn error(&mut self, error: ShellError) {
        let message = error.to_string();
        tracing::error!(kind = error.kind(), "{message}");
        self.metrics
            .errors
            .get_or_create(&crate::telemetry::metrics::KindLabel {
                kind: error.kind().to_string(),
            })
            .inc();
        self.last_error = Some((message, self.clock.now()));
    }
}

/// Rotated files kept per log (`NAME.log.1`).
const ROTATED_LOGS: u32 = 1;
