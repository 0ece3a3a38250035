//! Starting up: the folders checked and locked, the keeper reached, the
//! controller assembled (and, for the routing tests, assembled over parts).

use super::*;

impl Controller {
    /// Takes the status directory's lock, reaches (or starts) the keeper
    /// and prepares the controller.
    pub fn new(opts: Options) -> Result<Self, StartError> {
        Self::assemble(
            opts,
            std::sync::Arc::new(crate::runtime::clock::SystemClock),
            |layout| {
                let mut keeper =
                    Keeper::connect_or_start(&layout.control_dir()).map_err(|source| {
                        StartError::Keeper {
                            context: "cannot reach or start the keeper: ",
                            source,
                        }
                    })?;
                let welcome = std::mem::take(&mut keeper.welcome);
                Ok((Some(keeper), welcome))
            },
        )
    }

    /// A controller over a keeper client and a clock the caller holds,
    /// for the routing tests: nothing is started, the loop does not run,
    /// and the test plays the keeper's replies.
    #[cfg(test)]
    pub(crate) fn with_parts(
        opts: Options,
        keeper: Box<dyn KeeperClient>,
        clock: std::sync::Arc<dyn Clock>,
    ) -> Result<Self, StartError> {
        let mut c = Self::assemble(opts, clock, |_| Ok((None, Welcome::default())))?;
        c.link.tx = Some(keeper);
        Ok(c)
    }

    /// Prepares the controller; `connect` gives the keeper's connection
    /// (if any) and what it holds, once the control folder is trusted.
    fn assemble(
        opts: Options,
        clock: std::sync::Arc<dyn Clock>,
        connect: impl FnOnce(&Layout) -> Result<(Option<Keeper>, Welcome), StartError>,
    ) -> Result<Self, StartError> {
        let dir = std::fs::canonicalize(&opts.dir).map_err(|source| StartError::ManifestDir {
            path: opts.dir.clone(),
            source,
        })?;
        let status_dir = match &opts.status_dir {
            Some(s) => {
                let status_dir = |source| StartError::StatusDir {
                    path: s.clone(),
                    source,
                };
                crate::runtime::files::create_operator_dir(s).map_err(status_dir)?;
                std::fs::canonicalize(s).map_err(status_dir)?
            }
            None => dir.clone(),
        };
        let layout = Layout {
            manifest_dir: dir,
            status_dir,
        };
        // As root, folders other users may write would hand them root.
        crate::runtime::trust::check_folder("manifest folder", &layout.manifest_dir)
            .and_then(|()| crate::runtime::trust::check_folder("status folder", &layout.status_dir))
            .map_err(StartError::Untrusted)?;
        create_dir(&layout.control_dir()).map_err(|source| StartError::ControlDir {
            path: layout.control_dir(),
            source,
        })?;
        // Before anything is opened in it: only we may write there.
        keeper::check_private_dir(&layout.control_dir()).map_err(|source| StartError::Keeper {
            context: "",
            source,
        })?;
        let lock = lock::Lock::acquire(&layout.control_dir())?;
        crate::runtime::files::sweep_status_dir(&layout.status_dir);
        let resync_interval = opts.resync_interval;
        let poll = opts.poll;
        let global_policy =
            match &opts.policy {
                Some(p) => Some(crate::agent::load_policy_file(p).map_err(|source| {
                    StartError::Policy {
                        path: p.clone(),
                        source,
                    }
                })?),
                None => None,
            };
        let (keeper, welcome) = connect(&layout)?;
        let keeper_pid = welcome.keeper_pid;
        let collected = crate::runtime::collected::load(&layout.control_dir());
        let events =
            crate::events::EventLog::with_bound(&layout.control_dir(), opts.max_events_size);
        let mut c = Controller {
            opts,
            model: model::Model::new(collected),
            layout,
            procs: processes::Processes::new(),
            book: status_book::StatusBook::default(),
            transitions: Transitions::default(),
            story: crate::runtime::story::Story::default(),
            tombstones: BTreeMap::new(),
            boot_id: process::boot_id(),
            started_at: clock.now(),
            reconcile_count: 0,
            last_reconcile: Duration::ZERO,
            last_error: None,
            link: keeper_link::KeeperLink {
                conn: keeper,
                tx: None,
                pid: keeper_pid,
                welcome,
                events_open: true,
            },
            clock,
            procfs: std::sync::Arc::new(crate::runtime::monitor::SystemProcfs),
            memory_mode: crate::runtime::cgroup::Mode::Sampled {
                why: "not detected yet".into(),
            },
            joiner: None,
            usage: monitoring::Usage::default(),
            analyses: BTreeMap::new(),
            metrics: std::sync::Arc::new(crate::telemetry::Metrics::new(resync_interval)),
            health: Health::default(),
            agents: crate::runtime::agents::Agents::default(),
            ledger: Default::default(),
            workspaces: Default::default(),
            inputs: Default::default(),
            forced: false,
            log_guard: crate::runtime::log_guard::LogGuard::new(!poll),
            chores: Default::default(),
            agent_watcher: None,
            events,
            api: None,
            _lock: lock,
        };
        c.agents.global = global_policy;
        c.start_events();
        let key = format!(
            "{:016x}",
            crate::runtime::catalog::spec_hash(&c.layout.control_dir().to_string_lossy())
        );
        c.memory_mode = crate::runtime::cgroup::detect(c.opts.force_sampled_limits, &key);
        tracing::info!("memory limits: {}", c.memory_mode.describe());
        tracing::info!("containment: {}", containment(&c.memory_mode));
        c.remember_previous_statuses();
        if let Some(fleet) = &c.opts.fleet {
            fleet.register_metrics(&c.metrics);
        }
        c.api_init();
        Ok(c)
    }
}

/// What stops a session's whole tree under `mode`, for the startup log.
pub(super) fn containment(mode: &crate::runtime::cgroup::Mode) -> String {
    match mode {
        crate::runtime::cgroup::Mode::Cgroup { root, .. } => format!(
            "every session runs in its own cgroup under {} (sessions without a memory limit join it right after they start); \
             double-forked daemons are also found by the SESSIONLET_SESSION marker in their environment",
            root.display()
        ),
        crate::runtime::cgroup::Mode::Sampled { why } => format!(
            "no cgroup ({why}): a session's tree is its process group, its descendants and the processes \
             re-parented to the keeper that carry its SESSIONLET_SESSION marker; a process that clears its \
             environment and leaves its parent escapes"
        ),
    }
}
