//! The imperative shell: one task owns all state and waits on file events,
//! child exits, the next deadline, a periodic resync and signals. Each wake-up
//! reconciles the keys its triggers named and performs the plan.
//!
//! This file is the loop (`run`, `pass`, `execute`) and how it ends: it
//! routes wake-ups to the components and a plan's actions to their owners.
//! Each component owns its state, in its own file: `model` (the manifests,
//! the desired state, the core state and the keys to reconcile: the only
//! caller of `core::observe` and `core::reconcile`), `processes` (which pid
//! is which session, spawns in flight, exits held until saved),
//! `status_book` (what was written, what is to be written, phase counts),
//! `keeper_link` (the keeper's stream: spawn answers, exits, its death),
//! `spawner`, `signalling`, `monitoring` (usage, agents, vanished
//! sessions), `statuses` (status files, crash dumps, tombstones, the
//! controller status, metrics), `restore` (adoption at start), `startup`
//! (checks, the lock, the keeper reached), `wiring` (what wakes the loop),
//! `options`, `health`, `api_link` and `event_hooks`; `tests` drives the
//! routing with a fake keeper client and a paused clock.

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
mod chores;
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
mod wiring;
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
use wiring::Wakers;

/// The controller.
pub struct Controller {
    /// The command line.
    opts: Options,
    /// The manifests, the desired state and the core state (model).
    model: model::Model,
    /// Where manifests, statuses, logs and the control folder are.
    layout: Layout,
    /// The keeper: its connection, its pid, what it had (keeper_link).
    link: keeper_link::KeeperLink,
    /// Each session's process, by session and by pid (processes).
    procs: processes::Processes,
    /// What was written and what is to be written (status_book).
    book: status_book::StatusBook,
    /// When each status condition last changed (render).
    transitions: Transitions,
    /// The snapshots the controller's log lines are derived from.
    story: super::story::Story,
    /// Tombstones of forgotten sessions, by name.
    tombstones: BTreeMap<String, super::tombstone::Tombstone>,
    /// This boot's id: a pid recorded under another boot is not ours.
    boot_id: Option<String>,
    /// When this controller started (the controller status).
    started_at: DateTime<Utc>,
    /// Passes so far and the last one's duration (the controller status).
    reconcile_count: u64,
    last_reconcile: Duration,
    /// The last error survived, and when (`lastError`).
    last_error: Option<(String, DateTime<Utc>)>,
    /// The time decisions are made at (runtime::clock).
    clock: std::sync::Arc<dyn Clock>,
    /// Where sessions' processes are read (runtime::monitor).
    procfs: std::sync::Arc<dyn super::monitor::Procfs>,
    /// Where sessions' cgroups are made, or why none can be.
    memory_mode: super::cgroup::Mode,
    /// Moves sessions without a memory limit into their cgroups after they
    /// started (started with the first such spawn).
    joiner: Option<super::contain::Joiner>,
    /// What usage sampling judged of each session, and its rounds (monitoring).
    usage: monitoring::Usage,
    /// Each session's last crash analysis, by attempt (crash dumps).
    analyses: BTreeMap<String, (u32, serde_json::Value)>,
    /// The Prometheus registry `/metrics` serves.
    metrics: std::sync::Arc<crate::telemetry::Metrics>,
    /// The figures `/healthz` and the controller status report.
    health: Health,
    /// Agent sessions' parsed output (runtime::agents).
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
    /// Log caps and prunes left for the end of the pass (after its spawns).
    chores: chores::Chores,
    /// Watches agents' output files and the inbox (wiring).
    agent_watcher: Option<std::sync::Mutex<notify::RecommendedWatcher>>,
    /// Events: derived from status renders, kept in the control folder, live to subscribers.
    pub(crate) events: crate::events::EventLog,
    /// The local API's hub and command channel (api_link).
    api: Option<api_link::ApiLink>,
    /// The status folder's lock, held for the controller's life.
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
        let Wakers {
            mut from_keeper,
            mut agent_rx,
            mut log_changes,
            mut api_rx,
            mut watch_rx,
            _watcher,
            mut usage_tick,
            mut resync,
            sampling,
        } = self.wire().await?;
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
                self.end(exit).await;
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
                    self.on_agent_output(paths);
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
                    if let Some(rx) = self.on_resync_tick() {
                        from_keeper = rx;
                    }
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
            let running = super::inbox::running(
                self.procs.live_names(),
                self.procs.live_count(),
                &self.model.state,
                &self.model.desired,
            );
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
            let running = super::inbox::running(
                self.procs.live_names(),
                self.procs.live_count(),
                &self.model.state,
                &self.model.desired,
            );
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
        // The spawns are asked for: now the ended attempts' logs are capped
        // (before the statuses, which report what capping dropped).
        self.chores.run(&self.log_guard);
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
