//! The imperative shell: one task owns all state and waits on file events,
//! child exits, the next deadline, a periodic resync and signals. Each wake-up
//! runs the pure decision functions and performs their plan.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use nix::sys::signal::Signal;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;

use super::catalog::{Catalog, Entry, Reloaded};
use super::errors::ShellError;
use super::files::{create_dir, write_atomic, write_atomic_with};
use super::keeper::{self, Child, ExitRecord, FromKeeper, Identity, Keeper, KeeperTx, Welcome};
use super::layout::{attempt_logs, tail_lines, Layout};
use super::process::{self, SpawnRequest};
use super::render::{self, Extras, Transitions};
use super::{crash_dump, lock, watch};

mod api_link;
mod event_hooks;
use crate::api::status::{ControllerStatus, LogPaths, SessionStatusDoc};
use crate::core::{self, Action, Desired, DesiredSession, Event, Phase, Reason, Run, State};
use crate::manifest::codec;
use crate::telemetry::metrics::{PhaseLabel, PoolLabel, ReasonLabel, SessionLabel};

/// How the controller runs (from `sessionlet run`).
#[derive(Debug, Clone)]
pub struct Options {
    /// The watched manifest directory.
    pub dir: PathBuf,
    /// Where statuses go (default: `dir`).
    pub status_dir: Option<PathBuf>,
    /// Full rescan interval, the safety net for missed events.
    pub resync_interval: Duration,
    /// Rescan periodically instead of watching (file systems without inotify).
    pub poll: bool,
    /// Exit once every session is terminal.
    pub exit_when_done: bool,
    /// SIGTERM exits without stopping sessions.
    pub keep_sessions: bool,
    /// Rotate a log file past this size.
    pub max_log_size: u64,
    /// Crash dumps kept per session.
    pub max_crash_dumps: usize,
    /// Attempts whose logs are kept per session.
    pub max_attempt_logs: u32,
    /// How long a manifest being written (created or modified, not closed
    /// yet) may stay quiet before it is read anyway. A finished change is
    /// read at once.
    pub debounce: Duration,
    /// How often running sessions' memory, CPU and output are sampled (zero: never).
    pub usage_interval: Duration,
    /// Enforce memory limits by sampling even where cgroups are available.
    pub force_sampled_limits: bool,
    /// Serve Prometheus metrics and health checks here.
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// `--http-token-file`: the token acting (and reading) over TCP needs.
    pub http_token_file: Option<PathBuf>,
    /// Constraints applied to every session (same shape as a charter's).
    pub policy: Option<PathBuf>,
    /// Variables of the controller's environment passed to every session
    /// (`--pass-env`, names or `*` globs).
    pub pass_env: Vec<String>,
    /// Budgets of agent accounts (`--account-budget`).
    pub account_budgets: Vec<(String, crate::api::manifest::Budget)>,
    /// Drain from the first pass: stop every session (those adopted from
    /// the keeper included), start nothing, and exit (`sessionlet down`).
    pub drain: bool,
    /// ttlAfterFinished deletes a manifest declaring only the session
    /// (opt-in: by default the manifest stays and the spec is recorded as collected).
    pub gc_delete_manifests: bool,
    /// How long a forgotten session's tombstone status and logs are kept (0: not at all).
    pub tombstone_ttl: Duration,
    /// Scale-out: the sessions this node owns (`--coordinator etcd`); `None`
    /// runs every declared session.
    pub fleet: Option<crate::fleet::Fleet>,
    /// Webhooks every session gets (`--notify`).
    pub notify: Vec<String>,
    /// Signs webhook bodies (`--notify-secret-file`, its content).
    pub notify_secret: Option<Vec<u8>>,
    /// How long a webhook delivery is retried in total.
    pub notify_retry_for: Duration,
    /// The events file is rotated past this size (`--max-events-size`).
    pub max_events_size: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            dir: PathBuf::from("."),
            status_dir: None,
            resync_interval: Duration::from_secs(10),
            poll: false,
            exit_when_done: false,
            keep_sessions: false,
            max_log_size: 10 << 20,
            max_crash_dumps: 10,
            max_attempt_logs: 5,
            debounce: Duration::from_millis(50),
            usage_interval: Duration::from_secs(5),
            force_sampled_limits: false,
            metrics_addr: None,
            http_token_file: None,
            policy: None,
            pass_env: Vec::new(),
            account_budgets: Vec::new(),
            drain: false,
            gc_delete_manifests: false,
            tombstone_ttl: Duration::from_secs(3600),
            fleet: None,
            notify: Vec::new(),
            notify_secret: None,
            notify_retry_for: Duration::from_secs(60),
            max_events_size: crate::events::DEFAULT_MAX_BYTES,
        }
    }
}

/// What the shell knows of a session's current (or last) process.
#[derive(Debug, Clone, Default)]
struct Live {
    stem: String,
    log_dir: PathBuf,
    stdout: PathBuf,
    stderr: PathBuf,
    start_ticks: Option<u64>,
    argv: Vec<String>,
    cwd: PathBuf,
    /// The session's cgroup, where cgroups are available.
    cgroup: Option<PathBuf>,
    /// The cgroup's OOM kill count when the attempt started.
    oom_baseline: u64,
    /// The leader joins its cgroup after it started (from the joiner
    /// thread), not in the child before `exec`.
    join_after_spawn: bool,
    /// The session's uid when the attempt started (its marker's value).
    uid: String,
}

/// A spawn asked of the keeper, not answered yet.
#[derive(Debug)]
struct Spawning {
    name: String,
    attempt: u32,
    live: Live,
    asked_at: Instant,
}

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

/// What monitoring knows of a running session.
#[derive(Debug, Clone, Default, PartialEq)]
struct Watch {
    usage: crate::api::status::Usage,
    last_activity: Option<DateTime<Utc>>,
    stale: bool,
}

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

/// The controller.
pub struct Controller {
    opts: Options,
    layout: Layout,
    catalog: Catalog,
    desired: Desired,
    state: State,
    live: BTreeMap<String, Live>,
    pids: HashMap<u32, String>,
    written: HashMap<PathBuf, u64>,
    written_stems: BTreeSet<String>,
    dirty_stems: BTreeSet<String>,
    transitions: Transitions,
    /// The snapshots the controller's log lines are derived from.
    story: super::story::Story,
    /// Sessions collected after ttlAfterFinished whose manifests stay.
    collected: core::gc::Collected,
    /// Tombstones of forgotten sessions, by name.
    tombstones: BTreeMap<String, super::tombstone::Tombstone>,
    boot_id: Option<String>,
    started_at: DateTime<Utc>,
    reconcile_count: u64,
    last_reconcile: Duration,
    last_error: Option<(String, DateTime<Utc>)>,
    controller_status_hash: u64,
    controller_status_at: Option<Instant>,
    /// The keeper's connection until the loop starts its reader and writer.
    keeper: Option<Keeper>,
    /// Requests to the keeper, once the loop runs.
    keeper_tx: Option<KeeperTx>,
    /// The keeper's pid (our child when we started it).
    keeper_pid: u32,
    /// What the keeper had when we (re)connected, consumed by restoring.
    welcome: Welcome,
    /// Spawns asked of the keeper and not answered yet, by tag.
    spawning: HashMap<u64, Spawning>,
    next_tag: u64,
    /// Exits handled but not yet saved in a status: acknowledged to the
    /// keeper only once saved (pid, session).
    unacked: Vec<(u32, String)>,
    /// Exit records this controller wrote itself (orphans it reaped).
    reaped_by_us: BTreeSet<u32>,
    memory_mode: super::cgroup::Mode,
    /// Moves sessions without a memory limit into their cgroups after they
    /// started (started with the first such spawn).
    joiner: Option<super::contain::Joiner>,
    watches: BTreeMap<String, Watch>,
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
    /// Pids found gone without an exit report at the last resync.
    suspects: BTreeSet<u32>,
    /// Bounds every session's logs (`--max-log-size`) from its own thread.
    log_guard: super::log_guard::LogGuard,
    /// False once the keeper's exit reports stopped (it died): then the
    /// resync looks for sessions that ended unreported.
    keeper_events_open: bool,
    agent_watcher: Option<std::sync::Mutex<notify::RecommendedWatcher>>,
    /// Events: derived from status renders, kept in the control folder, live to subscribers.
    pub(crate) events: crate::events::EventLog,
    /// The local API's hub and command channel (api_link).
    api: Option<api_link::ApiLink>,
    /// The orphans of the keeper and of the controller, listed once for
    /// the sweeps of one batch of exits (see `contain::Census`).
    census: Option<super::contain::Census>,
    /// Per-key reconcile: the keys touched since the last pass and each
    /// key's next due time (core::keys).
    keys: core::keys::Queue,
    /// The next pass reconciles every session (at start, after a keeper
    /// takeover, at shutdown): the triggers that change many records at
    /// once outside `observe`.
    everything: bool,
    /// The manifest paths the watch reported since the last read.
    dir_changes: watch::SharedChanges,
    /// The next read of the manifest folder lists it whole (at start, and
    /// at each resync: the safety net for missed events).
    relist: bool,
    /// True while the manifest folder is watched (inotify).
    watching: bool,
    /// The stems the catalog had views of after the last read.
    catalog_stems: BTreeSet<String>,
    /// Each session's phase as last counted, and the counts by phase.
    phases: HashMap<String, Phase>,
    phase_counts: BTreeMap<Phase, u64>,
    /// Manifest files that do not validate, and Invalid or Duplicate
    /// entries, as of the last read that changed something.
    invalid_files: usize,
    invalid_entries: u64,
    _lock: lock::Lock,
}

impl Controller {
    /// Takes the status directory's lock and prepares the controller.
    pub fn new(opts: Options) -> anyhow::Result<Self> {
        let dir = std::fs::canonicalize(&opts.dir)
            .map_err(|e| anyhow::anyhow!("manifest directory {}: {e}", opts.dir.display()))?;
        let status_dir = match &opts.status_dir {
            Some(s) => {
                super::files::create_operator_dir(s)
                    .map_err(|e| anyhow::anyhow!("status directory {}: {e}", s.display()))?;
                std::fs::canonicalize(s)?
            }
            None => dir.clone(),
        };
        let layout = Layout {
            manifest_dir: dir,
            status_dir,
        };
        // As root, folders other users may write would hand them root.
        super::trust::check_folder("manifest folder", &layout.manifest_dir)
            .and_then(|()| super::trust::check_folder("status folder", &layout.status_dir))
            .map_err(|r| anyhow::anyhow!("{r}"))?;
        create_dir(&layout.control_dir()).map_err(|e| {
            anyhow::anyhow!("cannot create {}: {e}", layout.control_dir().display())
        })?;
        // Before anything is opened in it: only we may write there.
        keeper::check_private_dir(&layout.control_dir()).map_err(|e| anyhow::anyhow!("{e}"))?;
        let lock = lock::Lock::acquire(&layout.control_dir())?;
        super::files::sweep_status_dir(&layout.status_dir);
        let resync_interval = opts.resync_interval;
        let poll = opts.poll;
        let global_policy = match &opts.policy {
            Some(p) => Some(
                crate::agent::load_policy_file(p)
                    .map_err(|e| anyhow::anyhow!("--policy {}: {e}", p.display()))?,
            ),
            None => None,
        };
        let mut keeper = Keeper::connect_or_start(&layout.control_dir())
            .map_err(|e| anyhow::anyhow!("cannot reach or start the keeper: {e}"))?;
        let welcome = std::mem::take(&mut keeper.welcome);
        let keeper_pid = welcome.keeper_pid;
        let collected = super::collected::load(&layout.control_dir());
        let events =
            crate::events::EventLog::with_bound(&layout.control_dir(), opts.max_events_size);
        let mut c = Controller {
            opts,
            layout,
            catalog: Catalog::default(),
            desired: Desired::default(),
            state: State::default(),
            live: BTreeMap::new(),
            pids: HashMap::new(),
            written: HashMap::new(),
            written_stems: BTreeSet::new(),
            dirty_stems: BTreeSet::new(),
            transitions: Transitions::default(),
            story: super::story::Story::default(),
            collected,
            tombstones: BTreeMap::new(),
            boot_id: process::boot_id(),
            started_at: Utc::now(),
            reconcile_count: 0,
            last_reconcile: Duration::ZERO,
            last_error: None,
            controller_status_hash: 0,
            controller_status_at: None,
            keeper: Some(keeper),
            keeper_tx: None,
            keeper_pid,
            welcome,
            spawning: HashMap::new(),
            next_tag: 1,
            unacked: Vec::new(),
            reaped_by_us: BTreeSet::new(),
            memory_mode: super::cgroup::Mode::Sampled {
                why: "not detected yet".into(),
            },
            joiner: None,
            watches: BTreeMap::new(),
            analyses: BTreeMap::new(),
            metrics: std::sync::Arc::new(crate::telemetry::Metrics::new(resync_interval)),
            health: Health::default(),
            agents: super::agents::Agents::default(),
            ledger: Default::default(),
            workspaces: Default::default(),
            inputs: Default::default(),
            forced: false,
            suspects: BTreeSet::new(),
            log_guard: super::log_guard::LogGuard::new(!poll),
            keeper_events_open: true,
            agent_watcher: None,
            events,
            api: None,
            census: None,
            keys: core::keys::Queue::default(),
            everything: true,
            dir_changes: watch::SharedChanges::default(),
            relist: true,
            watching: false,
            catalog_stems: BTreeSet::new(),
            phases: HashMap::new(),
            phase_counts: BTreeMap::new(),
            invalid_files: 0,
            invalid_entries: 0,
            _lock: lock,
        };
        c.agents.global = global_policy;
        c.start_events();
        let key = format!(
            "{:016x}",
            super::catalog::spec_hash(&c.layout.control_dir().to_string_lossy())
        );
        c.memory_mode = super::cgroup::detect(c.opts.force_sampled_limits, &key);
        tracing::info!("memory limits: {}", c.memory_mode.describe());
        tracing::info!("containment: {}", containment(&c.memory_mode));
        c.remember_previous_statuses();
        if let Some(fleet) = &c.opts.fleet {
            fleet.register_metrics(&c.metrics);
        }
        c.api_init();
        Ok(c)
    }

    /// Seeds uids and generations from the status files an earlier controller wrote.
    fn remember_previous_statuses(&mut self) {
        let mut to_adopt = Vec::new();
        self.read_previous_statuses(&mut to_adopt);
        // What the manifests declare now, so that adoption decides with the
        // real restart policies (a vanished process must not look deleted).
        if let Some(desired) = self.catalog.rescan(&self.layout.manifest_dir, Utc::now()) {
            self.set_desired(desired);
        }
        self.dirty_stems.extend(self.catalog.views.keys().cloned());
        self.catalog_stems = self.catalog.views.keys().cloned().collect();
        for (name, stem, doc) in to_adopt {
            self.adopt(&name, &stem, &doc);
        }
        self.restore_from_keeper();
    }

    /// The keeper's registry is the truth about processes: every live child
    /// is supervised (also those no status file names: the controller died
    /// between a spawn and the status write), and every exit not yet saved
    /// is applied, in the order the attempts ran.
    fn restore_from_keeper(&mut self) {
        let welcome = std::mem::take(&mut self.welcome);
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
                if !self.pids.contains_key(&child.pid) {
                    self.adopt_child(&child);
                }
                continue;
            }
            let Some(exit) = exit else { continue };
            let pid = exit.child.pid;
            if !self.pids.contains_key(&pid) {
                let reflected = self.state.sessions.get(&identity.session).is_some_and(|r| {
                    !matches!(&r.run, Run::Running(run) if run.pid == pid)
                        && r.last_exit.as_ref().is_some_and(|e| {
                            (r.generation, e.attempt) >= (identity.generation, identity.attempt)
                        })
                });
                if reflected || identity.session.is_empty() {
                    // Already saved by the controller that handled it.
                    self.unacked.push((pid, String::new()));
                    continue;
                }
                self.adopt_child(&exit.child);
            }
            self.on_exit(exit);
        }
    }

    /// Supervises a child the keeper has: the session's record says it runs.
    fn adopt_child(&mut self, child: &Child) {
        let name = child.identity.session.clone();
        if name.is_empty() {
            return;
        }
        let rec = self.state.sessions.entry(name.clone()).or_default();
        if let Run::Running(other) = &rec.run {
            if other.pid != child.pid && self.pids.contains_key(&other.pid) {
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
                    self.pids.insert(child.pid, name);
                    return;
                }
            }
        }
        let rec = self.state.sessions.entry(name.clone()).or_default();
        rec.run = Run::Running(core::state::Running {
            pid: child.pid,
            started_at: child.started_at,
            stop: None,
        });
        if (rec.generation, rec.attempt) < (child.identity.generation, child.identity.attempt) {
            rec.restarts = rec.restarts.max(child.identity.attempt.saturating_sub(1));
        }
        rec.generation = child.identity.generation;
        rec.attempt = child.identity.attempt;
        // The spec it runs, when that is the one declared now (else 0:
        // unknown, and a changed generation restarts it).
        rec.run_hash = self
            .desired
            .sessions
            .get(&name)
            .filter(|d| d.generation == child.identity.generation)
            .map_or(0, |d| core::change::run_hash(&d.spec));
        rec.outcome = None;
        rec.wait = None;
        rec.series_started_at.get_or_insert(child.started_at);
        self.pids.insert(child.pid, name.clone());
        let stem = self
            .catalog
            .session_file
            .get(&name)
            .cloned()
            .unwrap_or_else(|| name.clone());
        self.live.insert(
            name.clone(),
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

    fn read_previous_statuses(&mut self, to_adopt: &mut Vec<(String, String, serde_json::Value)>) {
        self.ledger.restore_kept(&self.layout.control_dir());
        for p in super::adopt::previous_statuses(&self.layout.status_dir, Utc::now()) {
            self.seed_events(p.kind, &p.doc);
            if !p.invalid {
                // The file this status belongs to holds the name: a newcomer loses.
                self.catalog.remember_holder(p.kind, &p.name, &p.stem);
            }
            self.catalog.remember(p.kind, &p.name, p.known);
            if p.kind == "Session" {
                to_adopt.push((p.name, p.stem, p.doc));
            }
        }
    }

    /// Restores what an earlier controller knew of a session and, when its
    /// process is still the keeper's child (same pid, start time and boot),
    /// adopts it: same pid, no restart.
    fn adopt(&mut self, name: &str, stem: &str, doc: &serde_json::Value) {
        let Some((status, mut rec)) = super::adopt::restore_record(doc) else {
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
            self.live.insert(
                name.to_string(),
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
            let is_child = self.welcome.children.iter().any(|c| {
                c.pid == pid && c.start_ticks.is_some() && c.start_ticks == status.pid_start_ticks
            });
            let exited = self.welcome.exits.iter().any(|e| {
                e.child.pid == pid
                    && e.child.start_ticks.is_some()
                    && e.child.start_ticks == status.pid_start_ticks
            });
            // The keeper knows a later attempt (the status was not written
            // after its spawn): restoring from the keeper takes it from here.
            let keeper_knows = self
                .welcome
                .children
                .iter()
                .map(|c| &c.identity)
                .chain(self.welcome.exits.iter().map(|e| &e.child.identity))
                .any(|i| i.session == name);
            if same_boot && (is_child || exited) {
                self.pids.insert(pid, name.to_string());
                let logs = status.logs.clone().unwrap_or_default();
                self.live.insert(
                    name.to_string(),
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
                rec.run = Run::Idle;
                self.state.sessions.insert(name.to_string(), rec);
                return;
            } else {
                // Gone while nobody watched (or a reused pid that is not ours): never signal it.
                self.state.sessions.insert(name.to_string(), rec);
                self.observe(
                    Event::Vanished {
                        name: name.to_string(),
                        pid,
                    },
                    Utc::now(),
                );
                return;
            }
        }
        rec.wait = None;
        self.state
            .sessions
            .insert(name.to_string(), std::mem::take(&mut rec));
    }

    /// Runs until drained (or done, with `--exit-when-done`).
    pub async fn run(mut self, signals: Signals) -> anyhow::Result<Exit> {
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
                self.dir_changes.clone(),
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
        self.watching = _watcher.is_some();
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
        self.state.shutting_down |= self.opts.drain;
        self.story.seed(&self.state, &self.desired, &self.catalog);
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
                f.note_state(&self.state);
            }
            if let Some(exit) = self.finished() {
                if matches!(exit, Exit::SomeFailed) {
                    super::story::failures(&self.desired, &self.state, &self.catalog);
                }
                self.write_controller_status(true);
                if self.state.all_stopped() {
                    // Nothing left to keep: the keeper exits after its last child.
                    if let Some(tx) = &self.keeper_tx {
                        tx.shutdown().await;
                    }
                    for live in self.live.values() {
                        if let Some(cg) = &live.cgroup {
                            super::cgroup::remove(cg);
                        }
                    }
                    super::cgroup::remove_root(&self.memory_mode);
                }
                return Ok(exit);
            }
            let sleep = wake_at
                .map(|t| (t - Utc::now()).to_std().unwrap_or(Duration::ZERO))
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
                msg = from_keeper.recv(), if self.keeper_events_open => {
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
                        self.dirty_stems.extend(self.catalog.views.keys().cloned());
                    }
                }
                _ = usage_tick.tick(), if sampling => {
                    self.read_agents();
                    self.sample_usage();
                }
                _ = resync.tick() => {
                    resync_due = true;
                    self.reap();
                    if self.keeper_tx.is_none() {
                        // A keeper that could not be started (or reached)
                        // after the last one died: try again at each resync,
                        // so that spawning works again once it can.
                        if let Some(rx) = self.reconnect_keeper() {
                            from_keeper = rx;
                            self.keeper_events_open = true;
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
            self.state.shutting_down,
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
        if self.state.shutting_down {
            tracing::warn!("second signal: killing every session now");
            let running: Vec<(String, u32)> =
                self.pids.iter().map(|(p, n)| (n.clone(), *p)).collect();
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
        self.state.shutting_down = true;
        self.everything = true;
        None
    }

    fn finished(&self) -> Option<Exit> {
        core::exit::decide(
            &self.desired,
            &self.state,
            core::exit::Ending {
                exit_when_done: self.opts.exit_when_done,
                forced: self.forced,
                any_invalid: self.invalid_entries > 0,
            },
        )
    }

    /// Reaps our own children: the keeper we started, sessions whose keeper
    /// died (we are their subreaper: their exit codes are kept, recorded
    /// like the keeper's), and orphans when we are PID 1.
    fn reap(&mut self) {
        for (pid, status) in process::reap() {
            if pid == self.keeper_pid {
                self.error(ShellError::Keeper(
                    "the keeper exited; starting a new one".into(),
                ));
                continue;
            }
            let Some(name) = self.pids.get(&pid).cloned() else {
                continue;
            };
            let child = self.child_of(&name, pid);
            keeper::record_reaped_exit(&self.layout.control_dir(), child.clone(), status);
            self.reaped_by_us.insert(pid);
            self.on_exit(ExitRecord {
                child,
                status: Some(status),
                at: Utc::now(),
            });
        }
    }

    /// What the registry would say of a session's process.
    fn child_of(&self, name: &str, pid: u32) -> Child {
        let rec = self.state.sessions.get(name);
        let live = self.live.get(name);
        Child {
            pid,
            start_ticks: live.and_then(|l| l.start_ticks),
            boot_id: self.boot_id.clone(),
            identity: Identity {
                session: name.to_string(),
                uid: self
                    .catalog
                    .known("Session", name)
                    .map(|k| k.uid.to_string())
                    .unwrap_or_default(),
                generation: rec.map_or(0, |r| r.generation),
                attempt: rec.map_or(0, |r| r.attempt),
            },
            started_at: match rec.map(|r| &r.run) {
                Some(Run::Running(r)) => r.started_at,
                _ => Utc::now(),
            },
            stdout: live.map(|l| l.stdout.clone()).unwrap_or_default(),
            stderr: live.map(|l| l.stderr.clone()).unwrap_or_default(),
            orphan: false,
        }
    }

    /// Starts talking to the keeper from the loop: requests without
    /// waiting, replies and exits as events.
    fn start_keeper_io(&mut self) -> anyhow::Result<mpsc::UnboundedReceiver<FromKeeper>> {
        let keeper = self
            .keeper
            .take()
            .ok_or_else(|| anyhow::anyhow!("no keeper connection"))?;
        let (tx, rx) = keeper
            .start_io()
            .map_err(|e| anyhow::anyhow!("keeper connection: {e}"))?;
        self.keeper_tx = Some(tx);
        Ok(rx)
    }

    /// One message from the keeper; a new receiver when it had to be reconnected.
    fn on_keeper(&mut self, msg: FromKeeper) -> Option<mpsc::UnboundedReceiver<FromKeeper>> {
        match msg {
            FromKeeper::Spawned { tag, child } => self.on_spawned(tag, child),
            FromKeeper::SpawnFailed { tag, error } => {
                if let Some(s) = self.spawning.remove(&tag) {
                    let ev = Event::SpawnFailed {
                        name: s.name,
                        reason: error.reason,
                        message: error.message,
                    };
                    self.observe(ev, Utc::now());
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
    fn reconnect_keeper(&mut self) -> Option<mpsc::UnboundedReceiver<FromKeeper>> {
        self.keeper_tx = None;
        self.reap();
        let mut k = match Keeper::connect_or_start(&self.layout.control_dir()) {
            Ok(k) => k,
            Err(e) => {
                self.keeper_events_open = false;
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
        self.keeper_pid = welcome.keeper_pid;
        for (tag, s) in std::mem::take(&mut self.spawning) {
            let found = welcome.children.iter().find(|c| {
                c.identity.session == s.name
                    && c.identity.attempt == s.attempt
                    && !self.pids.contains_key(&c.pid)
            });
            match found {
                Some(child) => {
                    self.spawning.insert(tag, s);
                    self.on_spawned(tag, child.clone());
                }
                None => {
                    let ev = Event::SpawnFailed {
                        name: s.name,
                        reason: Reason::SpawnFailed,
                        message: "the keeper ended before it started the process".into(),
                    };
                    self.observe(ev, Utc::now());
                }
            }
        }
        for child in &welcome.children {
            if !self.pids.contains_key(&child.pid) {
                self.adopt_child(child);
                // Adoption writes records directly, not through events.
                self.everything = true;
            }
        }
        for exit in welcome.exits {
            self.on_exit(exit);
        }
        self.keeper = Some(k);
        match self.start_keeper_io() {
            Ok(rx) => Some(rx),
            Err(e) => {
                self.keeper_events_open = false;
                self.error(ShellError::Keeper(format!("{e}")));
                None
            }
        }
    }

    /// A spawn's reply: the session runs.
    fn on_spawned(&mut self, tag: u64, child: Child) {
        let Some(s) = self.spawning.remove(&tag) else {
            return;
        };
        self.metrics
            .spawn_seconds
            .observe(s.asked_at.elapsed().as_secs_f64());
        if self
            .state
            .sessions
            .get(&s.name)
            .is_some_and(core::reconcile::is_restart)
        {
            self.health.restarts.push_back(Utc::now());
        }
        let restarts = self.state.sessions.get(&s.name).map_or(0, |r| r.restarts);
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
        self.live.insert(s.name.clone(), live);
        self.pids.insert(child.pid, s.name.clone());
        let ev = Event::Spawned {
            name: s.name.clone(),
            pid: child.pid,
        };
        self.observe(ev, Utc::now());
        let runs = self
            .state
            .sessions
            .get(&s.name)
            .is_some_and(|r| matches!(&r.run, Run::Running(run) if run.pid == child.pid));
        if runs {
            let attempt = self.state.sessions.get(&s.name).map_or(0, |r| r.attempt);
            super::story::spawned(&s.name, child.pid, attempt);
        } else {
            // Nobody wants it any more: its exit comes and is acknowledged.
            self.signal_session(&s.name, child.pid, Signal::SIGKILL);
        }
    }

    /// Acknowledges the exits whose statuses are saved.
    fn ack_saved(&mut self) {
        let control = self.layout.control_dir();
        let mut still = Vec::new();
        for (pid, name) in std::mem::take(&mut self.unacked) {
            let stem = self
                .catalog
                .session_file
                .get(&name)
                .or_else(|| self.live.get(&name).map(|l| &l.stem));
            if stem.is_some_and(|s| self.dirty_stems.contains(s)) {
                still.push((pid, name));
                continue;
            }
            let Some(tx) = &self.keeper_tx else {
                still.push((pid, name));
                continue;
            };
            tx.ack(pid);
            if self.reaped_by_us.remove(&pid) {
                keeper::remove_exit_record(&control, pid);
            }
        }
        self.unacked = still;
    }

    /// An exit reported by the keeper.
    fn on_exit(&mut self, exit: ExitRecord) {
        keeper::crash_point("controller-after-exit-received");
        let pid = exit.child.pid;
        if exit.status.is_none() {
            // An orphan of a dead keeper: if we are its subreaper, its
            // zombie holds the real exit code.
            self.reap();
        }
        if let Some(name) = self.pids.remove(&pid) {
            self.unacked.push((pid, name.clone()));
            // The main process is gone: nothing it left in its process group,
            // its cgroup or anywhere else may outlive the attempt (the group id
            // cannot be reused while members remain, and we act right after
            // the reap).
            self.sweep_session(&name, pid);
            if let Some(live) = self.live.get(&name) {
                if let (Some(cg), super::cgroup::Mode::Cgroup { v2, .. }) =
                    (&live.cgroup, &self.memory_mode)
                {
                    let kills = super::cgroup::oom_kills(cg, *v2);
                    if kills > live.oom_baseline {
                        let limit = self
                            .desired
                            .sessions
                            .get(&name)
                            .and_then(|d| d.spec.resources.max_memory);
                        let message = format!(
                            "the kernel killed it for using more than its memory limit{}",
                            limit.map(|l| format!(" ({l})")).unwrap_or_default()
                        );
                        let ev = Event::Killed {
                            name: name.clone(),
                            pid,
                            reason: Reason::OOMKilled,
                            message,
                        };
                        self.observe(ev, Utc::now());
                    }
                }
            }
            self.watches.remove(&name);
            self.workspaces.check(&name);
            if let Some(spec) = self
                .desired
                .sessions
                .get(&name)
                .map(|d| d.spec.clone())
                .filter(|s| s.agent.is_some())
            {
                let stderr_tail = self
                    .live
                    .get(&name)
                    .map(|l| tail_lines(&l.stderr, 50))
                    .unwrap_or_default();
                let verdict = self.agents.judge(&name, &spec, &stderr_tail);
                super::budget::charge(
                    &mut self.ledger,
                    &self.desired,
                    &self.agents,
                    &name,
                    Utc::now(),
                );
                if let Some(verdict) = verdict {
                    let ev = Event::Judged {
                        name: name.clone(),
                        pid,
                        verdict,
                    };
                    self.observe(ev, Utc::now());
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
            self.observe(event, Utc::now());
            if let Some(e) = self
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
            if let Some(l) = self.live.get(&name_for_stats) {
                self.log_guard.finish(&l.stdout);
                self.log_guard.finish(&l.stderr);
            }
        } else if !self.unacked.iter().any(|(p, _)| *p == pid) {
            // Not a session's (a killed duplicate, or already saved).
            self.unacked.push((pid, String::new()));
        }
    }

    /// The cgroup of a session adopted from an earlier controller, when it has one.
    fn session_cgroup(&self, name: &str) -> Option<PathBuf> {
        match &self.memory_mode {
            super::cgroup::Mode::Cgroup { root, .. } => {
                let p = super::cgroup::session_path(root, name);
                p.is_dir().then_some(p)
            }
            super::cgroup::Mode::Sampled { .. } => None,
        }
    }

    /// A deleted status directory is made again, with the lock and the
    /// keeper's exits folder, and every status is rewritten.
    fn check_status_dir(&mut self) {
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
        self.written.clear();
        self.written_stems.clear();
        self.dirty_stems.extend(self.catalog.views.keys().cloned());
        self.controller_status_hash = 0;
    }

    /// Reads new output of an agent session and acts on it.
    fn read_agent(&mut self, name: &str) {
        let Some(spec) = self.desired.sessions.get(name).map(|d| d.spec.clone()) else {
            return;
        };
        let running = self
            .state
            .sessions
            .get(name)
            .is_some_and(|r| matches!(&r.run, Run::Running(run) if run.stop.is_none()));
        for act in self.agents.read(name, &spec) {
            match act {
                super::agents::Act::Changed => self.mark_dirty(name),
                super::agents::Act::Stop(reason, message) if running => {
                    tracing::warn!(session = name, "{message}");
                    let ev = Event::StopRequested {
                        name: name.to_string(),
                        reason,
                        message,
                    };
                    self.observe(ev, Utc::now());
                }
                super::agents::Act::Stop(..) => {}
            }
        }
    }

    /// Reads every running agent's new output (the safety net for missed events).
    fn read_agents(&mut self) {
        let names: Vec<String> = self
            .agents
            .names()
            .filter(|n| self.pids.values().any(|p| p == *n))
            .map(str::to_string)
            .collect();
        for name in names {
            self.read_agent(&name);
        }
    }

    /// Follows the output of agent sessions adopted from an earlier controller.
    fn watch_adopted_agents(&mut self) {
        let names: Vec<String> = self.pids.values().cloned().collect();
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

    /// Signals a session's whole tree: its process group, every descendant
    /// (also those that moved to their own group or session, like an agent's
    /// Bash tool), and everything in its cgroup.
    fn signal_session(&mut self, name: &str, pid: u32, signal: Signal) {
        // The descendants are listed first: once the leader dies, those in
        // other groups are re-parented and can no longer be found from it.
        // Only while the leader is still the process we started: never a reused pid.
        let ticks = self.live.get(name).and_then(|l| l.start_ticks);
        let descendants: Vec<u32> = if ticks.is_some() && process::start_ticks(pid) == ticks {
            super::monitor::tree(pid, 4096)
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
            .desired
            .sessions
            .get(name)
            .is_some_and(|d| d.spec.agent.is_some());
        if is_agent && signal != Signal::SIGKILL {
            return;
        }
        let mut candidates = descendants;
        if let Some(cg) = self.live.get(name).and_then(|l| l.cgroup.clone()) {
            candidates.extend(super::cgroup::procs(&cg));
        }
        candidates.extend(self.strays(name));
        let targets =
            super::contain::targets(candidates, pid, &BTreeSet::new(), super::contain::live_pgrp);
        super::contain::signal_all(&targets, signal);
    }

    /// The session's processes that left its tree (double-forked daemons
    /// re-parented to the keeper or to us), found by their marker.
    fn strays(&mut self, name: &str) -> Vec<u32> {
        let keeper = self.keeper_pid;
        if self.census.is_none() {
            let pids = &self.pids;
            self.census = Some(super::contain::Census::take(
                &[keeper, std::process::id()],
                |p| p == keeper || pids.contains_key(&p),
            ));
        }
        let uid = self.live.get(name).map(|l| l.uid.as_str()).unwrap_or("");
        self.census
            .as_ref()
            .map(|c| c.strays(name, uid))
            .unwrap_or_default()
    }

    /// Kills everything left of a session whose leader `pid` ended: its
    /// group, its cgroup and its strays, again until a look finds nothing
    /// new (a process killed while it forked may leave a child behind).
    fn sweep_session(&mut self, name: &str, pid: u32) {
        let _ = process::signal_group(pid, Signal::SIGKILL);
        let cgroup = self.live.get(name).and_then(|l| l.cgroup.clone());
        let mut done = BTreeSet::new();
        for _ in 0..16 {
            let mut candidates = self.strays(name);
            if let Some(cg) = &cgroup {
                candidates.extend(super::cgroup::procs(cg));
            }
            let targets =
                super::contain::targets(candidates, pid, &done, super::contain::live_pgrp);
            if targets.is_empty() {
                break;
            }
            super::contain::signal_all(&targets, Signal::SIGKILL);
            done.extend(targets);
            // Look again with a fresh listing: a process killed while it
            // forked may have left a child behind.
            self.census = None;
        }
    }

    /// Moves a started session into its cgroup, off the spawn path.
    fn join_cgroup(&mut self, cgroup: &Path, pid: u32, start_ticks: Option<u64>) {
        if self.joiner.is_none() {
            match super::contain::Joiner::start() {
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
            super::cgroup::Mode::Cgroup { v2, .. } => Some(*v2),
            _ => None,
        };
        let join = super::contain::Join {
            procs: super::cgroup::procs_file(cgroup),
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

    /// Samples every running session: usage, limits, staleness.
    fn sample_usage(&mut self) {
        let now = Utc::now();
        let mut events = Vec::new();
        let running: Vec<(String, u32, DateTime<Utc>)> = self
            .state
            .sessions
            .iter()
            .filter_map(|(n, r)| match &r.run {
                Run::Running(run) if run.stop.is_none() => {
                    Some((n.clone(), run.pid, run.started_at))
                }
                _ => None,
            })
            .collect();
        for (name, pid, started_at) in running {
            let Some(d) = self.desired.sessions.get(&name) else {
                continue;
            };
            let spec = d.spec.clone();
            let Some(sample) = super::monitor::sample(pid) else {
                continue;
            };
            let live = self.live.get(&name);
            let activity = live
                .and_then(|l| check_output(&l.stdout, &l.stderr))
                .filter(|t| *t >= started_at)
                .unwrap_or(started_at);
            // A running tool call or compaction is not silence (agents only).
            let activity = self.agents.silent_since(&name, activity, now);
            let before = self.watches.get(&name).cloned().unwrap_or_default();
            let mut w = before.clone();
            w.usage.memory_bytes = sample.memory_bytes;
            w.usage.peak_memory_bytes = w.usage.peak_memory_bytes.max(sample.memory_bytes);
            w.usage.cpu_seconds = (sample.cpu_seconds * 100.0).round() / 100.0;
            w.last_activity = Some(activity);
            w.stale = spec
                .stale_after
                .is_some_and(|t| now - activity >= t.chrono());
            let cgroup_enforced = live.is_some_and(|l| l.cgroup.is_some());
            if let Some(limit) = spec.resources.max_memory {
                if !cgroup_enforced && sample.memory_bytes > limit.0 {
                    events.push(Event::StopRequested {
                        name: name.clone(),
                        reason: Reason::MemoryLimitExceeded,
                        message: format!(
                            "its processes used {} MiB, over the memory limit {limit}",
                            sample.memory_bytes >> 20
                        ),
                    });
                }
            }
            if let Some(limit) = spec.resources.max_cpu_time {
                if sample.cpu_seconds > limit.std().as_secs_f64() {
                    events.push(Event::StopRequested {
                        name: name.clone(),
                        reason: Reason::CpuTimeLimitExceeded,
                        message: format!(
                            "its processes used {:.1}s of CPU time, over the limit {limit}",
                            sample.cpu_seconds
                        ),
                    });
                }
            }
            if w.stale && !before.stale {
                tracing::warn!(session = %name, "stale: no output since {activity}");
                if spec.on_stale == crate::api::OnStale::Restart {
                    events.push(Event::StopRequested {
                        name: name.clone(),
                        reason: Reason::Stale,
                        message: format!(
                            "no output since {} (staleAfter {})",
                            activity.to_rfc3339(),
                            spec.stale_after.unwrap_or_default()
                        ),
                    });
                }
            }
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
                self.watches.insert(name.clone(), w);
                self.mark_dirty(&name);
            }
        }
        for e in events {
            self.observe(e, now);
        }
    }

    /// Safety net: a tracked process that is gone without an exit report.
    /// Applies an event to the core state, and queues the keys it touches
    /// (taken before it is observed: an exit frees the slot of the pool the
    /// record counted in).
    fn observe(&mut self, event: Event, now: DateTime<Utc>) {
        self.keys.touch_all(core::keys::event_keys(
            &self.desired,
            &self.state,
            event.session(),
        ));
        core::observe(&self.desired, &mut self.state, event, now);
    }

    fn check_vanished(&mut self) {
        if self.keeper_events_open {
            return; // the keeper reports every exit
        }
        let control = self.layout.control_dir();
        let gone: Vec<(u32, String)> = self
            .pids
            .iter()
            .filter(|(pid, name)| {
                let ticks = self.live.get(*name).and_then(|l| l.start_ticks);
                ticks.is_some()
                    && process::start_ticks(**pid) != ticks
                    && !super::adopt::recorded_exit(&control, **pid, ticks)
            })
            .map(|(p, n)| (*p, n.clone()))
            .collect();
        // The keeper reaps, then records and reports: a process seen gone
        // once may have an exit report on its way. Only one still missing at
        // the next resync vanished (the keeper itself is gone).
        let seen: BTreeSet<u32> = gone.iter().map(|(p, _)| *p).collect();
        let suspects = std::mem::replace(&mut self.suspects, seen);
        for (pid, name) in gone {
            if !suspects.contains(&pid) {
                continue;
            }
            self.suspects.remove(&pid);
            self.pids.remove(&pid);
            self.observe(Event::Vanished { name, pid }, Utc::now());
        }
    }

    /// Re-reads the manifest folder (the files the watch reported, or the
    /// whole folder when asked or when no watch runs); true when what it declares changed
    /// (a file appeared, went away or was reloaded, or refusals changed).
    fn rescan_catalog(&mut self, now: DateTime<Utc>) -> Read {
        let (paths, overflow) = match self.dir_changes.lock() {
            Ok(mut c) => c.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        // Without a watch (--poll, or it failed) every read lists the folder.
        let relist = std::mem::take(&mut self.relist) || overflow || !self.watching;
        let reloaded = if relist {
            match self.catalog.rescan(&self.layout.manifest_dir, now) {
                Some(d) => Reloaded::Whole(d),
                None => Reloaded::Unchanged,
            }
        } else {
            // Scale-out filters the whole declared state: no patches there.
            let patch = self.opts.fleet.is_none();
            self.catalog
                .reload(&self.layout.manifest_dir, &paths, now, patch)
        };
        match reloaded {
            Reloaded::Unchanged => {
                // Refusals may have changed alone.
                self.dirty_stems
                    .extend(self.catalog.changed.iter().cloned());
                Read::Unchanged
            }
            Reloaded::Whole(desired) => {
                // Files that appeared or went away (a duplicate name may move
                // too: those files are in `changed` as they were reloaded or removed).
                let before: BTreeSet<String> = self.catalog_stems.clone();
                self.set_desired(desired);
                self.catalog_stems = self.catalog.views.keys().cloned().collect();
                self.dirty_stems
                    .extend(before.symmetric_difference(&self.catalog_stems).cloned());
                self.dirty_stems
                    .extend(self.catalog.changed.iter().cloned());
                // A session now declared in another file (a renamed manifest) is reported there.
                for (name, live) in self.live.iter_mut() {
                    if let Some(stem) = self.catalog.session_file.get(name) {
                        if *stem != live.stem {
                            self.dirty_stems
                                .insert(std::mem::replace(&mut live.stem, stem.clone()));
                        }
                    }
                }
                Read::Whole
            }
            Reloaded::Sessions { removed, upserted } => {
                self.patch_desired(removed, upserted);
                for stem in &self.catalog.changed {
                    if self.catalog.views.contains_key(stem) {
                        self.catalog_stems.insert(stem.clone());
                    } else {
                        self.catalog_stems.remove(stem);
                    }
                }
                self.dirty_stems
                    .extend(self.catalog.changed.iter().cloned());
                Read::Patched
            }
        }
    }

    /// Applies a change of plain sessions to the desired state in place (what
    /// [`Controller::set_desired`] does for a whole state, for these names
    /// only), and queues their keys.
    fn patch_desired(&mut self, removed: BTreeSet<String>, upserted: Vec<DesiredSession>) {
        for name in removed {
            self.desired.sessions.remove(&name);
            self.desired.accounts.remove(&name);
            self.keys.touch(core::keys::Key::Session(name));
        }
        let mut collected_changed = false;
        for d in upserted {
            let name = d.name.clone();
            self.keys.touch(core::keys::Key::Session(name.clone()));
            if let Some(stem) = self.catalog.session_file.get(&name) {
                if let Some(live) = self.live.get_mut(&name) {
                    if live.stem != *stem {
                        self.dirty_stems
                            .insert(std::mem::replace(&mut live.stem, stem.clone()));
                    }
                }
            }
            // A collected spec stays collected; a changed one runs (core::gc).
            let hash = self.catalog.known("Session", &name).map(|k| k.spec_hash);
            if self.collected.get(&name).is_some_and(|h| Some(*h) != hash) {
                self.collected.remove(&name);
                collected_changed = true;
            }
            if core::gc::is_collected(&self.collected, &name, hash) {
                self.desired.sessions.remove(&name);
                self.desired.accounts.remove(&name);
                continue;
            }
            match super::accounts::account_of(
                &d.spec,
                &self.opts.pass_env,
                &self.layout.manifest_dir,
            ) {
                Some(a) => {
                    self.desired.accounts.insert(name.clone(), a);
                }
                None => {
                    self.desired.accounts.remove(&name);
                }
            }
            self.desired.sessions.insert(name, d);
        }
        if collected_changed {
            self.save_collected();
        }
    }

    /// The periodic resync: a relist that finds nothing changed and no
    /// event waiting costs the listing alone, not a reconcile pass over
    /// every session (timers wake the loop on their own). Returns false
    /// when a full pass is needed.
    fn quiet_resync(&mut self) -> bool {
        let started = Instant::now();
        let now = Utc::now();
        self.relist = true;
        let read = self.rescan_catalog(now);
        if read == Read::Whole {
            self.count_invalid();
        }
        if read != Read::Unchanged
            || !self.dirty_stems.is_empty()
            || !self.state.dirty.is_empty()
            || !self.state.outbox.is_empty()
            || !self.unacked.is_empty()
            || !self.keys.is_quiet()
            || self.everything
        {
            return false;
        }
        // Messages for running sessions' input are delivered at each pass.
        if let Some(tx) = &self.keeper_tx {
            let running = super::inbox::running(&self.state, &self.desired);
            self.inputs
                .pump(&self.layout, &running, tx, &mut self.agents, now);
        }
        self.expire_tombstones(now);
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
        self.census = None;
        let started = Instant::now();
        let now = Utc::now();
        let read = if rescan {
            self.rescan_catalog(now)
        } else {
            Read::Unchanged
        };
        let catalog_changed = read == Read::Whole;
        // A patch changes valid files of plain sessions only: the invalid
        // figures stay.
        if read == Read::Whole || self.everything {
            self.count_invalid();
        }
        let recount = self.everything;
        let spending = core::keys::Spending::of(&self.desired);
        super::budget::fill(
            &self.ledger,
            &mut self.desired,
            &self.state,
            &self.agents,
            now,
        );
        self.keys.touch_all(core::keys::spend_moved(
            &spending,
            &core::keys::Spending::of(&self.desired),
            &self.desired.accounts,
            &self.desired.accounts,
        ));
        if let Some(tx) = &self.keeper_tx {
            let running = super::inbox::running(&self.state, &self.desired);
            self.inputs
                .pump(&self.layout, &running, tx, &mut self.agents, now);
        }
        // The sessions the plans act on: the only records that can have
        // changed (every change of a record ends in a status write).
        let mut touched: BTreeSet<String> = BTreeSet::new();
        for _ in 0..8 {
            let plan = self.reconcile(now);
            if plan.is_idle() {
                break;
            }
            touched.extend(plan.actions.iter().map(|a| a.session().to_string()));
            if !self.execute(plan.actions, now) {
                break;
            }
        }
        self.story.tell(
            &self.state,
            &self.desired,
            &self.catalog,
            &touched,
            catalog_changed,
            Utc::now(),
        );
        self.expire_tombstones(Utc::now());
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
        let recent = self
            .controller_status_at
            .is_some_and(|t| t.elapsed() < Duration::from_secs(1));
        if self.spawning.is_empty() || !recent {
            self.write_controller_status(false);
        }
        // A census taken during this pass (stops) must not serve an exit
        // handled later.
        self.census = None;
        self.keys.next_due()
    }

    /// Keeps the sessions-by-phase counts of the controller status and the
    /// metrics: recounted whole after a pass over everything, else moved
    /// for the sessions the pass `touched` (the only records that changed).
    fn count_phases(&mut self, touched: &BTreeSet<String>, whole: bool) {
        if whole {
            self.phases = self
                .state
                .sessions
                .iter()
                .map(|(n, r)| (n.clone(), r.phase()))
                .collect();
            self.phase_counts.clear();
            for p in self.phases.values() {
                *self.phase_counts.entry(*p).or_default() += 1;
            }
            return;
        }
        for name in touched {
            let now = self.state.sessions.get(name).map(core::Record::phase);
            let was = match now {
                Some(p) => self.phases.insert(name.clone(), p),
                None => self.phases.remove(name),
            };
            if was == now {
                continue;
            }
            if let Some(c) = was.and_then(|p| self.phase_counts.get_mut(&p)) {
                *c = c.saturating_sub(1);
            }
            if let Some(p) = now {
                *self.phase_counts.entry(p).or_default() += 1;
            }
        }
    }

    /// Recounts the manifests that do not validate (after a read that
    /// changed something).
    fn count_invalid(&mut self) {
        self.invalid_files = self.catalog.invalid_files();
        self.invalid_entries = self
            .catalog
            .views
            .values()
            .flat_map(|v| v.entries.iter())
            .filter(|e| matches!(e, Entry::Invalid { .. } | Entry::Duplicate { .. }))
            .count() as u64;
    }

    /// One reconcile: of every session when `everything` is set, else of
    /// the keys touched since the last one and those due by `now`. Each
    /// session looked at is due again at its own next deadline.
    fn reconcile(&mut self, now: DateTime<Utc>) -> core::Plan {
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
                        self.observe(event, now);
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

    fn mark_dirty(&mut self, name: &str) {
        if let Some(stem) = self.catalog.session_file.get(name) {
            self.dirty_stems.insert(stem.clone());
        } else if let Some(l) = self.live.get(name) {
            self.dirty_stems.insert(l.stem.clone());
        }
        if let Some(pool) = self.desired.sessions.get(name).and_then(|d| d.pool()) {
            if let Some(stem) = self.catalog.pool_file.get(pool) {
                self.dirty_stems.insert(stem.clone());
            }
        }
    }

    /// Everything a spawn needs (log files, stdin, charter, cgroup), made
    /// ready without waiting on anything.
    fn prepare_spawn(
        &mut self,
        name: &str,
        attempt: u32,
    ) -> Result<(Identity, SpawnRequest, Live), process::SpawnError> {
        let fail = |message: String| process::SpawnError {
            reason: Reason::SpawnFailed,
            message,
        };
        let d = self
            .desired
            .sessions
            .get(name)
            .ok_or_else(|| fail("the session is no longer declared".into()))?;
        let stem = self
            .catalog
            .session_file
            .get(name)
            .cloned()
            .unwrap_or_else(|| name.to_string());
        let shared = self.catalog.views.get(&stem).is_some_and(|v| v.shared);
        let log_dir = self.layout.logs_dir(&stem, name, shared);
        create_dir(&log_dir)
            .map_err(|e| fail(format!("cannot create {}: {e}", log_dir.display())))?;
        let generation = self.desired.sessions.get(name).map_or(1, |d| d.generation);
        let (stdout, stderr) = attempt_logs(&log_dir, generation, attempt);
        prune_attempt_logs(&log_dir, generation, attempt, self.opts.max_attempt_logs);
        let spec = &d.spec;
        let cwd = match &spec.working_dir {
            Some(w) if w.is_absolute() => w.clone(),
            Some(w) => self.layout.manifest_dir.join(w),
            None => self.layout.manifest_dir.clone(),
        };
        let cwd = super::workspace::cwd_for(
            &mut self.workspaces,
            d,
            cwd,
            &self.layout.manifest_dir,
            &self.layout.status_dir,
        )?;
        let spec = spec.clone();
        let mut extra_env: Vec<(String, String)> = Vec::new();
        let mut stdin_text = spec
            .stdin
            .as_ref()
            .and_then(|s| s.text())
            .map(str::to_string);
        let argv = if spec.agent.is_some() {
            let launch = self.agents.launch(
                name,
                &spec,
                generation,
                attempt,
                &self.layout.manifest_dir,
                &stdout,
            )?;
            if let Some(charter) = &launch.charter {
                // Not fsynced: it must outlive the controller, not a power
                // cut (which ends the session anyway); no fsync on the spawn path.
                let p = log_dir.join("charter.md");
                super::files::write_atomic_with(&p, charter.as_bytes(), false)
                    .map_err(|e| fail(format!("cannot write {}: {e}", p.display())))?;
            }
            extra_env = launch.env;
            if launch.stdin.is_some() {
                stdin_text = launch.stdin;
            }
            if let Some(w) = &self.agent_watcher {
                use notify::Watcher;
                let _ = w
                    .lock()
                    .map(|mut w| w.watch(&log_dir, notify::RecursiveMode::NonRecursive));
            }
            launch.argv
        } else {
            let argv = spec.command.clone().unwrap_or_default();
            // The global policy and the charter's constraints apply to plain commands too.
            if let Some(v) = self.agents.policy(&spec).check_argv(&argv) {
                return Err(process::SpawnError {
                    reason: Reason::PolicyViolation,
                    message: format!("refused before running: {v}"),
                });
            }
            argv
        };
        let stdin = match &stdin_text {
            Some(text) => {
                let p = log_dir.join("stdin");
                super::files::write_atomic_with(&p, text.as_bytes(), false)
                    .map_err(|e| fail(format!("cannot write {}: {e}", p.display())))?;
                Some(p)
            }
            None => None,
        };
        let user = resolve_user(spec.user.as_deref(), spec.group.as_deref())?;
        let uid = self
            .catalog
            .known("Session", name)
            .map(|k| k.uid.to_string())
            .unwrap_or_default();
        // Last, so that nothing in the manifest overrides it: the marker
        // that finds the session's double-forked daemons.
        extra_env.extend(super::contain::marker(name, &uid));
        let mut req = SpawnRequest {
            argv: argv.clone(),
            cwd: cwd.clone(),
            env: super::session_env::build(
                &spec,
                extra_env,
                &self.opts.pass_env,
                &self.layout.manifest_dir,
            )?,
            stdin,
            stdin_pipe: super::inbox::wants_pipe(&spec),
            stdout: stdout.clone(),
            stderr: stderr.clone(),
            user,
            cgroup_procs: None,
        };
        let mut cgroup = None;
        let mut oom_baseline = 0;
        let mut join_after_spawn = false;
        // Every session gets its own cgroup where cgroups are available, so
        // that a stop reaches even daemonized descendants. A session with a
        // memory limit, and every agent, joins it in the child before exec
        // (the limit holds from the first byte). The others join right after
        // they started, from the joiner thread: on cgroup v1 an isolated
        // join waits 10-15 ms for an RCU grace period (BENCHMARK.md), which
        // must not sit on every spawn; the environment marker covers the
        // window.
        let joins_before_exec = spec.resources.max_memory.is_some() || spec.agent.is_some();
        if let super::cgroup::Mode::Cgroup { root, v2 } = &self.memory_mode {
            let path = super::cgroup::session_path(root, name);
            if !joins_before_exec {
                // Made and joined by the joiner thread: a mkdir in a v1
                // memory hierarchy costs a few hundred microseconds, which
                // must not sit on the spawn path either. The OOM baseline
                // is one read (0 when the cgroup is new), so that a kill
                // counted under an earlier, limited spec is not blamed on
                // this attempt.
                oom_baseline = super::cgroup::oom_kills(&path, *v2);
                join_after_spawn = true;
                cgroup = Some(path);
            } else {
                match super::cgroup::prepare(&path, *v2, spec.resources.max_memory.map(|q| q.0)) {
                    Ok(()) => {
                        oom_baseline = super::cgroup::oom_kills(&path, *v2);
                        req.cgroup_procs = Some(super::cgroup::procs_file(&path));
                        cgroup = Some(path);
                    }
                    Err(e) => {
                        let msg = format!("cannot create the memory cgroup {}: {e}; the limit is enforced by sampling", path.display());
                        self.error(ShellError::Cgroup(msg));
                    }
                }
            }
        }
        let identity = Identity {
            session: name.to_string(),
            uid: uid.clone(),
            generation,
            attempt,
        };
        let live = Live {
            stem,
            log_dir,
            stdout,
            stderr,
            start_ticks: None,
            argv,
            cwd,
            cgroup,
            oom_baseline,
            join_after_spawn,
            uid,
        };
        Ok((identity, req, live))
    }

    /// Asks the keeper for a spawn; its reply arrives as an event.
    fn spawn(&mut self, name: &str, attempt: u32) -> Result<(), process::SpawnError> {
        let (identity, req, live) = self.prepare_spawn(name, attempt)?;
        let Some(tx) = &self.keeper_tx else {
            return Err(process::SpawnError {
                reason: Reason::SpawnFailed,
                message: "the keeper is not reachable; retrying".into(),
            });
        };
        let tag = self.next_tag;
        self.next_tag += 1;
        if !tx.spawn(tag, identity, req) {
            return Err(process::SpawnError {
                reason: Reason::SpawnFailed,
                message: "the keeper connection closed; retrying".into(),
            });
        }
        self.spawning.insert(
            tag,
            Spawning {
                name: name.to_string(),
                attempt,
                live,
                asked_at: Instant::now(),
            },
        );
        Ok(())
    }

    fn write_crash_dump(&mut self, name: &str, exit: &core::LastExit, now: DateTime<Utc>) {
        let Some(file) = &exit.crash_dump else {
            return;
        };
        let stem = self
            .catalog
            .session_file
            .get(name)
            .cloned()
            .unwrap_or_else(|| name.to_string());
        let dir = self.layout.crashes_dir(&stem);
        let live = self.live.get(name).cloned().unwrap_or_default();
        let spec = self.desired.sessions.get(name).map(|d| d.spec.clone());
        let uid = self
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
            (Some(cg), super::cgroup::Mode::Cgroup { v2, .. }) => {
                super::cgroup::oom_kills(cg, *v2).saturating_sub(live.oom_baseline)
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
    fn write_tombstone(&mut self, name: &str, record: &core::Record, now: DateTime<Utc>) {
        if self.opts.tombstone_ttl.is_zero() {
            return;
        }
        let Some(live) = self.live.get(name) else {
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
        let path = super::tombstone::path(&self.layout.status_dir, name);
        let written = codec::to_yaml(&doc)
            .map_err(std::io::Error::other)
            .and_then(|text| write_atomic(&path, text.as_bytes()));
        match written {
            Ok(()) => {
                let t = super::tombstone::Tombstone {
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
    fn expire_tombstones(&mut self, now: DateTime<Utc>) {
        let names: Vec<String> = self.tombstones.keys().cloned().collect();
        for name in names {
            let back = self.desired.sessions.contains_key(&name);
            let Some(t) = self.tombstones.get(&name) else {
                continue;
            };
            if back {
                let _ = std::fs::remove_file(&t.path);
            } else if t.until <= now {
                super::tombstone::remove(&name, t);
                tracing::info!(event = "tombstone-expired", session = %name, "{name}: tombstone and logs removed (--tombstone-ttl passed)");
            } else {
                continue;
            }
            self.tombstones.remove(&name);
        }
    }

    fn forget(&mut self, name: &str) {
        self.keys.forget(name);
        let keep_logs = self.tombstones.contains_key(name);
        self.transitions.forget(name);
        self.removed_event(name);
        self.events.forget("Session", name);
        self.log_guard.forget(name);
        self.watches.remove(name);
        self.analyses.remove(name);
        self.agents.forget(name);
        self.workspaces.release(name);
        self.workspaces.forget(name);
        self.metrics.restarts.remove(&SessionLabel {
            session: name.to_string(),
        });
        if let Some(cg) = self.live.get(name).and_then(|l| l.cgroup.clone()) {
            super::cgroup::remove(&cg);
        }
        if keep_logs {
            // The tombstone keeps them until it expires.
            if let Some(live) = self.live.remove(name) {
                self.dirty_stems.insert(live.stem);
            }
            return;
        }
        if let Some(live) = self.live.remove(name) {
            let base = self.layout.status_dir.join(format!("{}.logs", live.stem));
            let _ = std::fs::remove_dir_all(&live.log_dir);
            // Remove the logs folder of the file once empty.
            let _ = std::fs::remove_dir(&base);
            let crashes = self.layout.crashes_dir(&live.stem);
            crash_dump::prune(&crashes, name, 0);
            let _ = std::fs::remove_dir(&crashes);
            self.dirty_stems.insert(live.stem);
        } else {
            for stem in self.written_stems.clone() {
                let crashes = self.layout.crashes_dir(&stem);
                crash_dump::prune(&crashes, name, 0);
            }
        }
        // A session whose manifest is gone and never ran: its file's folders may be left.
        let stem = name.to_string();
        if !self.catalog.views.contains_key(&stem) {
            let _ = std::fs::remove_dir_all(self.layout.status_dir.join(format!("{stem}.logs")));
            let _ = std::fs::remove_dir_all(self.layout.crashes_dir(&stem));
        }
    }

    /// The manifests' desired state, without the sessions collected with
    /// their current spec (core::gc).
    fn set_desired(&mut self, mut desired: Desired) {
        super::accounts::fill(&mut desired, &self.opts.pass_env, &self.layout.manifest_dir);
        desired.account_budgets = self.opts.account_budgets.iter().cloned().collect();
        // The spend stays known until the next pass recomputes it.
        desired.spend = std::mem::take(&mut self.desired.spend);
        desired.account_spend = std::mem::take(&mut self.desired.account_spend);
        let catalog = &self.catalog;
        let changed = core::gc::apply(&mut desired, &mut self.collected, |n| {
            catalog.known("Session", n).map(|k| k.spec_hash)
        });
        if changed {
            self.save_collected();
        }
        // Scale-out: sessions owned by another node are not desired here.
        if let Some(fleet) = &self.opts.fleet {
            desired = fleet.filter(desired);
        }
        self.keys
            .touch_all(core::keys::changed(&self.desired, &desired));
        self.desired = desired;
    }

    fn save_collected(&mut self) {
        if let Err(e) = super::collected::save(&self.layout.control_dir(), &self.collected) {
            self.error(ShellError::Collected(e));
        }
    }

    /// ttlAfterFinished passed. By default the manifest stays (Git may
    /// track it): the spec is recorded as collected, and forgetting the
    /// session removes its status, logs and crash dumps. With
    /// `--gc-delete-manifests` a file declaring only this session is deleted.
    fn collect_garbage(&mut self, name: &str) {
        if !self.opts.gc_delete_manifests {
            let Some(hash) = self.catalog.known("Session", name).map(|k| k.spec_hash) else {
                return;
            };
            self.collected.insert(name.to_string(), hash);
            self.save_collected();
            // A copy: set_desired compares the old state with the new one
            // for the keys the change touches.
            let desired = self.desired.clone();
            self.set_desired(desired);
            self.mark_dirty(name);
            super::story::collected(
                name,
                "status, logs and crash dumps removed; the manifest stays and this spec will not run again",
            );
            self.collected_event(
                name,
                "status, logs and crash dumps removed; the manifest stays",
            );
            return;
        }
        let Some(stem) = self.catalog.session_file.get(name).cloned() else {
            return;
        };
        let Some(view) = self.catalog.views.get(&stem) else {
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
            super::story::collected(name, "manifest deleted (--gc-delete-manifests)");
            self.collected_event(name, "manifest deleted (--gc-delete-manifests)");
            // Rescan at once so the session is forgotten in this pass.
            if let Some(desired) = self.catalog.rescan(&self.layout.manifest_dir, Utc::now()) {
                self.set_desired(desired);
            }
            self.dirty_stems.insert(stem);
        } else {
            tracing::warn!(
                session = name,
                "ttlAfterFinished passed, but {} declares other objects too; not deleted",
                view.path.display()
            );
        }
    }

    /// Writes the status file of every dirty manifest whose content changed.
    fn write_statuses(&mut self, now: DateTime<Utc>) {
        // Only a status that holds an exit not yet acknowledged must be on
        // disk before the keeper forgets that exit (write-ahead exits): it
        // is flushed. Every other update (Starting, Running, a pool's
        // counts) is atomic but not flushed, so that no fsync sits on the
        // spawn path; what a power cut could roll back there, the keeper's
        // registry of live children holds.
        let must_flush: BTreeSet<String> = self
            .unacked
            .iter()
            .filter_map(|(_, name)| {
                self.catalog
                    .session_file
                    .get(name)
                    .or_else(|| self.live.get(name).map(|l| &l.stem))
                    .cloned()
            })
            .collect();
        // A session whose spawn is in flight is written once the keeper
        // answered (microseconds to a few milliseconds later; its answer
        // wakes the loop): its child execs meanwhile without competing with
        // a status render and write, and `Starting` then `Running` become
        // one write. The keeper's registry holds the child in that window.
        let in_flight: BTreeSet<&str> = self
            .spawning
            .values()
            .filter_map(|s| {
                self.catalog
                    .session_file
                    .get(&s.name)
                    .map(String::as_str)
                    .or(Some(s.live.stem.as_str()))
            })
            .collect();
        let (held, dirty): (BTreeSet<String>, BTreeSet<String>) =
            std::mem::take(&mut self.dirty_stems)
                .into_iter()
                .partition(|stem| in_flight.contains(stem.as_str()) && !must_flush.contains(stem));
        self.dirty_stems = held;
        for stem in dirty {
            let path = self.layout.status_file(&stem);
            let Some(view) = self.catalog.views.get(&stem).cloned() else {
                // The file is gone: its status goes too, unless a session it
                // declared is still being stopped (its final status is written there).
                let in_use = self.state.sessions.iter().any(|(n, r)| {
                    r.run.is_live() && self.live.get(n).is_some_and(|l| l.stem == stem)
                });
                if !in_use {
                    self.api_forget(&stem);
                    self.written_stems.remove(&stem);
                    let _ = std::fs::remove_file(&path);
                    self.written.remove(&path);
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
                            &self.collected,
                            name,
                            self.catalog.known("Session", name).map(|k| k.spec_hash),
                        ) =>
                    {
                        // Collected: no status until its spec changes.
                    }
                    Entry::Session(name) => {
                        let rec = self.state.sessions.get(name).cloned().unwrap_or_default();
                        let known = self.catalog.known("Session", name);
                        let pool = self
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
                        let uid = self.catalog.known("Pool", name).map(|k| k.uid.to_string());
                        let mut doc = render::pool_status(
                            name,
                            &manifest,
                            uid,
                            &self.desired,
                            &self.state,
                            &crashes,
                            &mut self.transitions,
                            now,
                        );
                        doc.status.errors = view.stale_problems.clone();
                        doc.status.agent = self.pool_agent_totals(name);
                        doc.status.budget =
                            super::budget::status(&self.ledger, &self.desired, name, now);
                        doc.metadata.labels = self
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
                            super::catalog::duplicate_message(kind, name, winner, *held),
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
                self.written.remove(&path);
                continue;
            }
            // Render without updatedAt to tell whether anything changed.
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
            if let Err(e) = render_all(&session_docs, &pool_docs, &mut docs) {
                self.error(ShellError::Render {
                    stem: stem.clone(),
                    message: e,
                });
                continue;
            }
            let hash = super::catalog::spec_hash(&docs);
            if self.written.get(&path) == Some(&hash) {
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
                    self.written.insert(path, hash);
                    self.written_stems.insert(stem);
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
                    self.dirty_stems.insert(stem);
                }
            }
        }
    }

    /// Tokens and cost summed over a pool's agent members.
    fn pool_agent_totals(&self, pool: &str) -> Option<serde_json::Value> {
        let members: Vec<serde_json::Value> = self
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
    fn health_figures(&self) -> BTreeMap<String, serde_json::Value> {
        use serde_json::json;
        // From the kept counts and the monitored sessions: no walk over
        // every record.
        let running = self.phase_counts.get(&Phase::Running).copied().unwrap_or(0);
        let monitored: Vec<&Watch> = self
            .watches
            .iter()
            .filter(|(n, _)| {
                self.state
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

    fn extras(&self, name: &str, stem: &str) -> Extras {
        let live = self.live.get(name);
        let watch = self.watches.get(name);
        let spec = self.desired.sessions.get(name).map(|d| d.spec.clone());
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
        self.last_error = Some((message, Utc::now()));
    }

    /// Refreshes the gauges that describe the whole state (cheap: one walk).
    fn update_metrics(&mut self) {
        // Restart gauges are set when a session spawns; here only counts.
        for phase in Phase::ALL {
            let n = self.phase_counts.get(&phase).copied().unwrap_or(0);
            self.metrics
                .sessions
                .get_or_create(&PhaseLabel {
                    phase: phase.as_str().to_string(),
                })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
        for pool in self.desired.pools.keys() {
            let queued = self
                .desired
                .sessions
                .values()
                .filter(|d| d.pool() == Some(pool))
                .filter_map(|d| self.state.sessions.get(&d.name))
                .filter(|r| {
                    r.wait.as_ref().is_some_and(|w| w.phase == Phase::Queued)
                        && matches!(r.run, Run::Idle)
                })
                .count();
            self.metrics
                .queue_length
                .get_or_create(&PoolLabel { pool: pool.clone() })
                .set(i64::try_from(queued).unwrap_or(i64::MAX));
        }
        self.metrics
            .invalid_manifests
            .set(i64::try_from(self.invalid_files).unwrap_or(i64::MAX));
        // Counters: add what the catalog did since the last pass.
        let (reads, listings) = (self.catalog.reads, self.catalog.listings);
        self.metrics
            .manifest_reads
            .inc_by(reads.saturating_sub(self.metrics.manifest_reads.get()));
        self.metrics
            .manifest_listings
            .inc_by(listings.saturating_sub(self.metrics.manifest_listings.get()));
        self.metrics.pass_done(self.last_reconcile.as_secs_f64());
    }

    fn write_controller_status(&mut self, force: bool) {
        let mut by_phase: BTreeMap<String, u64> = self
            .phase_counts
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(p, n)| (p.as_str().to_string(), *n))
            .collect();
        if self.invalid_entries > 0 {
            *by_phase.entry("Invalid".into()).or_default() += self.invalid_entries;
        }
        let mut status = ControllerStatus {
            api_version: crate::api::API_VERSION.into(),
            kind: "ControllerStatus".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            pid: std::process::id(),
            started_at: Some(self.started_at),
            manifest_dir: self.layout.manifest_dir.display().to_string(),
            status_dir: self.layout.status_dir.display().to_string(),
            total_sessions: self.state.sessions.len() as u64,
            sessions_by_phase: by_phase,
            reconcile_count: 0,
            last_reconcile_millis: 0.0,
            last_error: self.last_error.as_ref().map(|e| e.0.clone()),
            last_error_at: self.last_error.as_ref().map(|e| e.1),
            extra: self.health_figures(),
            updated_at: None,
        };
        super::accounts::add_to_status(&mut status.extra, &self.desired, &self.state, Utc::now());
        super::budget::add_account_budgets(
            &mut status.extra,
            &self.ledger,
            &self.desired,
            Utc::now(),
        );
        // Scale-out: the `Owned` condition (sessions no live node owns).
        if let Some(fleet) = &self.opts.fleet {
            fleet.add_to_status(&mut status.extra);
        }
        // Counters alone rewrite the file at most once a resync interval.
        let mut for_hash = status.clone();
        for_hash.extra.remove("reconcileMillis");
        let hash = super::catalog::spec_hash(&for_hash);
        self.api_controller(&status);
        let due = self
            .controller_status_at
            .is_none_or(|t| t.elapsed() >= self.opts.resync_interval.max(Duration::from_secs(30)));
        if !force && hash == self.controller_status_hash && !due {
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
                self.controller_status_hash = hash;
                self.controller_status_at = Some(Instant::now());
            }
            Err(e) => tracing::error!("cannot write {}: {e}", path.display()),
        }
    }

    /// Guards the logs of sessions adopted from an earlier controller, and
    /// caps every other log under the status folder (finished sessions,
    /// files an older version left oversized).
    fn guard_logs_at_start(&mut self) {
        let mut active = Vec::new();
        for name in self.pids.values() {
            if let Some(l) = self.live.get(name) {
                for p in [&l.stdout, &l.stderr] {
                    self.log_guard
                        .watch(name, p, self.opts.max_log_size, ROTATED_LOGS);
                    active.push(p.clone());
                }
            }
        }
        super::log_guard::cap_existing(&self.layout.status_dir, self.opts.max_log_size, &active);
    }
}

/// Rotated files kept per log (`NAME.log.1`).
const ROTATED_LOGS: u32 = 1;

/// The last write time of a session's output: one `stat` per file (the log
/// guard bounds the files).
fn check_output(stdout: &Path, stderr: &Path) -> Option<DateTime<Utc>> {
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

/// The uid/gid a session runs as: `spec.user` / `spec.group`, which only a
/// controller running as root may grant.
fn resolve_user(
    user: Option<&str>,
    group: Option<&str>,
) -> Result<Option<(u32, u32)>, process::SpawnError> {
    if user.is_none() && group.is_none() {
        return Ok(None);
    }
    let fail = |message: String| process::SpawnError {
        reason: Reason::PermissionDenied,
        message,
    };
    if !nix::unistd::geteuid().is_root() {
        return Err(fail(
            "spec.user / spec.group need the controller to run as root; remove them or run sessionlet as root".into(),
        ));
    }
    let (mut uid, mut gid) = (0, 0);
    if let Some(u) = user {
        let found = match u.parse::<u32>() {
            Ok(id) => nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(id)),
            Err(_) => nix::unistd::User::from_name(u),
        };
        let pw = found
            .ok()
            .flatten()
            .ok_or_else(|| fail(format!("spec.user {u:?} does not exist on this machine")))?;
        uid = pw.uid.as_raw();
        gid = pw.gid.as_raw();
    }
    if let Some(g) = group {
        let found = match g.parse::<u32>() {
            Ok(id) => nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(id)),
            Err(_) => nix::unistd::Group::from_name(g),
        };
        gid = found
            .ok()
            .flatten()
            .ok_or_else(|| fail(format!("spec.group {g:?} does not exist on this machine")))?
            .gid
            .as_raw();
    }
    Ok(Some((uid, gid)))
}

/// Figures for the controller status's health section.
#[derive(Debug, Default)]
struct Health {
    /// Start times of restarts (the last hour's are counted).
    restarts: std::collections::VecDeque<DateTime<Utc>>,
    /// Sessions whose last attempt failed.
    failed_last: BTreeSet<String>,
    /// Failed attempts that were retried.
    retried: u64,
    /// Of those, the ones whose next attempt succeeded.
    recovered: u64,
    /// Sum and count of run times, seconds.
    run_seconds: f64,
    runs: u64,
    /// Reconcile pass durations: sum, max, count.
    pass_sum: f64,
    pass_max: f64,
    passes: u64,
}

impl Health {
    fn ended(&mut self, name: &str, exit: &core::LastExit) {
        let failed = exit.failed();
        if self.failed_last.contains(name) {
            self.retried += 1;
            if !failed {
                self.recovered += 1;
            }
        }
        if failed {
            self.failed_last.insert(name.to_string());
        } else {
            self.failed_last.remove(name);
        }
        self.run_seconds += exit.duration().num_milliseconds() as f64 / 1000.0;
        self.runs += 1;
    }

    fn pass(&mut self, d: Duration) {
        let s = d.as_secs_f64();
        self.pass_sum += s;
        self.pass_max = self.pass_max.max(s);
        self.passes += 1;
        let hour_ago = Utc::now() - chrono::Duration::hours(1);
        while self.restarts.front().is_some_and(|t| *t < hour_ago) {
            self.restarts.pop_front();
        }
    }
}

/// Keeps the logs of the newest `keep` attempts.
fn prune_attempt_logs(dir: &Path, generation: u64, attempt: u32, keep: u32) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some((g, n)) = super::layout::parse_log_name(&name) else {
            continue;
        };
        // This run keeps its newest `keep` attempts; the run before it stays
        // readable (`logs --previous`, a changed spec); older runs go.
        let old_attempt = g == generation && n + keep <= attempt;
        let old_run = g + 1 < generation;
        if old_attempt || old_run {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// What stops a session's whole tree under `mode`, for the startup log.
fn containment(mode: &super::cgroup::Mode) -> String {
    match mode {
        super::cgroup::Mode::Cgroup { root, .. } => format!(
            "every session runs in its own cgroup under {} (sessions without a memory limit join it right after they start); \
             double-forked daemons are also found by the SESSIONLET_SESSION marker in their environment",
            root.display()
        ),
        super::cgroup::Mode::Sampled { why } => format!(
            "no cgroup ({why}): a session's tree is its process group, its descendants and the processes \
             re-parented to the keeper that carry its SESSIONLET_SESSION marker; a process that clears its \
             environment and leaves its parent escapes"
        ),
    }
}
