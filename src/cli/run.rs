//! `sessionlet run`: the controller daemon.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use crate::runtime::{Controller, Exit, Options, Signals};

/// Arguments of `run`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  sessionlet run --dir examples/sessions\n  sessionlet run --dir /etc/sessionlet --status-dir /var/lib/sessionlet --keep-sessions\n  sessionlet run --dir jobs --exit-when-done\n  sessionlet run --dir agents --pass-env ANTHROPIC_API_KEY --pass-env 'AWS_*'"
)]
pub struct Args {
    /// The directory of Session and Pool manifests to watch.
    #[arg(long, default_value = ".")]
    pub dir: PathBuf,
    /// Where status files, logs and crash dumps go (default: the watched directory).
    #[arg(long)]
    pub status_dir: Option<PathBuf>,
    /// Full rescan interval, the safety net for missed file events (e.g. 10s).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub resync_interval: Duration,
    /// Don't watch with inotify; rescan every --resync-interval (file systems without inotify).
    #[arg(long)]
    pub poll: bool,
    /// Exit once every session is in a terminal phase: 0 when all Completed, 1 otherwise.
    #[arg(long)]
    pub exit_when_done: bool,
    /// On SIGTERM, exit without stopping sessions (for upgrades); the default is a graceful drain.
    #[arg(long)]
    pub keep_sessions: bool,
    /// Rotate a session's log file once it passes this size (e.g. 10Mi).
    #[arg(long, default_value = "10Mi", value_parser = parse_quantity)]
    pub max_log_size: u64,
    /// Crash dumps kept per session.
    #[arg(long, default_value_t = 10)]
    pub max_crash_dumps: usize,
    /// How often running sessions' memory, CPU and output are sampled (0 turns sampling off).
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub usage_interval: Duration,
    /// How memory limits are enforced: `auto` uses a memory cgroup per limited session
    /// where the controller may create one, `sampled` always stops sessions from sampled usage.
    #[arg(long, value_enum, default_value_t = MemoryLimits::Auto)]
    pub memory_limits: MemoryLimits,
    /// Serve HTTP at this address (e.g. 127.0.0.1:9464): Prometheus metrics on
    /// /metrics, health on /healthz and /readyz, the web dashboard on / and the
    /// API on /api/v1 (reads only, unless --http-token-file). Off by default.
    /// `--metrics-addr` is the old name.
    #[arg(
        long = "http-addr",
        visible_alias = "metrics-addr",
        value_name = "ADDR"
    )]
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// A file whose first line is the token every request over --http-addr must
    /// send (`Authorization: Bearer TOKEN`); it also turns acting (restart,
    /// stop) over TCP on. The Unix socket needs no token.
    #[arg(long, value_name = "FILE")]
    pub http_token_file: Option<PathBuf>,
    /// A policy file applied to every session: `constraints:` with `forbiddenCommands`
    /// and `forbiddenPatterns`, the same shape as a charter's.
    #[arg(long)]
    pub policy: Option<PathBuf>,
    /// Pass this variable of the controller's environment to every session
    /// (repeatable; `*` matches any run of characters, e.g. 'AWS_*'). Sessions
    /// otherwise get only PATH, HOME, LANG, TZ and USER, `spec.envFrom` and `spec.env`.
    #[arg(long = "pass-env", value_name = "NAME", value_parser = parse_pass_env)]
    pub pass_env: Vec<String>,
    /// A budget of an agent account (repeatable), as
    /// `ACCOUNT:maxCostUsd=5,maxTokens=1000000,per=day` (`per`: day or total,
    /// default day): at it, the account's running sessions are stopped
    /// (BudgetExceeded) and none starts until the period rolls over.
    #[arg(long = "account-budget", value_name = "ACCOUNT:LIMITS", value_parser = parse_account_budget)]
    pub account_budgets: Vec<(String, crate::api::manifest::Budget)>,
    /// The controller's log on stderr: `text` for people (colours only on a
    /// terminal, never with NO_COLOR set), `json` for one JSON object a line.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// After ttlAfterFinished, also delete the manifest (when it declares only
    /// that session). Off by default: Git may track it, and a pull would bring
    /// it back; the collected spec is recorded instead so it does not run again.
    #[arg(long)]
    pub gc_delete_manifests: bool,
    /// How long a deleted session or scaled-down replica keeps a tombstone
    /// status (`NAME.tombstone.status.yaml`: phase, last exit, when and why it
    /// stopped) and its logs (0 removes them at once).
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    pub tombstone_ttl: Duration,
    /// Scale-out over etcd (`--coordinator etcd`); boxed, as the rarely used part.
    #[command(flatten)]
    pub fleet: Box<crate::fleet::Flags>,
    /// POST a JSON notification to this URL (http://HOST:PORT/PATH) when any
    /// session ends (Completed, Failed, TimedOut); repeatable. Sessions add
    /// their own with `spec.notify`.
    #[arg(long = "notify", value_name = "URL", value_parser = parse_notify_url)]
    pub notify: Vec<String>,
    /// Sign every notification: the header `X-Sessionlet-Signature:
    /// sha256=HEX` is the HMAC-SHA256 of the body with this file's content
    /// (trailing newline removed) as the key.
    #[arg(long, value_name = "FILE")]
    pub notify_secret_file: Option<PathBuf>,
    /// How long a notification is retried (exponential backoff) before it
    /// counts as failed.
    #[arg(long, default_value = "1m", value_parser = parse_duration)]
    pub notify_retry_for: Duration,
    /// Rotate the events file (.sessionlet/events.jsonl) past this size; one
    /// older file is kept.
    #[arg(long, default_value = "1Mi", value_parser = parse_quantity)]
    pub max_events_size: u64,
}

fn parse_notify_url(s: &str) -> Result<String, String> {
    crate::events::webhook::parse_url(s).map(|_| s.to_string())
}

/// The key in a `--notify-secret-file`: its content without the trailing newline.
fn read_secret(path: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    let mut key = std::fs::read(path).map_err(|e| {
        anyhow::anyhow!(
            "--notify-secret-file {}: {e}; give a file holding the shared secret",
            path.display()
        )
    })?;
    while key.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        key.pop();
    }
    if key.is_empty() {
        anyhow::bail!(
            "--notify-secret-file {}: the file is empty; put the shared secret in it",
            path.display()
        );
    }
    Ok(key)
}

/// The format of the controller's log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// A line for people.
    Text,
    /// One JSON object a line (`timestamp`, `level`, `message`, `event`, `session`, ...).
    Json,
}

/// How memory limits are enforced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum MemoryLimits {
    /// cgroups where possible, else sampling.
    Auto,
    /// Always sampling.
    Sampled,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    s.parse::<crate::api::Duration>()
        .map(|d| d.std())
        .map_err(|e| e.to_string())
}

fn parse_quantity(s: &str) -> Result<u64, String> {
    s.parse::<crate::api::Quantity>()
        .map(|q| q.0)
        .map_err(|e| e.to_string())
}

fn parse_account_budget(s: &str) -> Result<(String, crate::api::manifest::Budget), String> {
    crate::runtime::budget::parse_account_budget(s)
}

fn parse_pass_env(s: &str) -> Result<String, String> {
    crate::runtime::session_env::check_pass_env_pattern(s).map(|()| s.to_string())
}

/// Runs the controller until it is drained.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    one_malloc_arena();
    // A bad token file is refused before anything starts (the keeper included).
    if let Some(f) = &args.http_token_file {
        crate::apiserver::auth::load_token(f).map_err(|e| anyhow::anyhow!(e))?;
    }
    // Bad scale-out flags are refused before anything starts, too.
    let mut fleet_config = crate::fleet::validate(&args.fleet).map_err(|e| anyhow::anyhow!(e))?;
    let keeper_socket = crate::runtime::keeper::socket_path(
        &args
            .status_dir
            .as_ref()
            .unwrap_or(&args.dir)
            .join(".sessionlet"),
    );
    if let Some(c) = fleet_config.as_mut() {
        c.keeper_socket = Some(keeper_socket.clone());
    }
    let alone = fleet_config.is_none();
    let opts = Options {
        dir: args.dir,
        status_dir: args.status_dir,
        resync_interval: args.resync_interval.max(Duration::from_millis(100)),
        poll: args.poll,
        exit_when_done: args.exit_when_done,
        keep_sessions: args.keep_sessions,
        max_log_size: args.max_log_size,
        max_crash_dumps: args.max_crash_dumps,
        usage_interval: args.usage_interval,
        force_sampled_limits: args.memory_limits == MemoryLimits::Sampled,
        metrics_addr: args.metrics_addr,
        http_token_file: args.http_token_file,
        policy: args.policy,
        pass_env: args.pass_env,
        account_budgets: args.account_budgets,
        gc_delete_manifests: args.gc_delete_manifests,
        tombstone_ttl: args.tombstone_ttl,
        notify: args.notify,
        notify_secret: args
            .notify_secret_file
            .as_deref()
            .map(read_secret)
            .transpose()?,
        notify_retry_for: args.notify_retry_for,
        max_events_size: args.max_events_size,
        ..Options::default()
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let exit = runtime.block_on(async {
        // Handlers first: a SIGTERM during startup still means a drain.
        let signals = Signals::install()?;
        let mut opts = opts;
        // Joins the fleet (etcd) before the controller starts anything.
        opts.fleet = crate::fleet::start(fleet_config).await?;
        let controller = Controller::new(opts)?;
        if alone {
            // A fencing deadline left by an earlier `--coordinator etcd`
            // run must not kill this node's sessions (its keeper is up now).
            let _ = crate::runtime::fence::disarm(&keeper_socket);
        }
        anyhow::Ok(controller.run(signals).await?)
    })?;
    Ok(match exit {
        Exit::Clean => ExitCode::SUCCESS,
        Exit::SomeFailed | Exit::Forced => ExitCode::from(1),
    })
}

/// Keeps the controller's allocations in one malloc arena. glibc gives each
/// thread that allocates an arena of its own (up to 8 per core); the
/// controller's helper threads (the manifest watch, the log guard, the
/// cgroup joiner, each manifest check) allocate little and seldom at the
/// same time as the loop, yet each arena they made kept 130-530 KB
/// resident: one arena was 0.4 MB less PSS at 1000 running sessions.
fn one_malloc_arena() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter (thread-safe); a
    // refusal (0) leaves the default, which is only more memory.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}
