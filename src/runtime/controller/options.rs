//! How the controller runs: the options of `sessionlet run`.

use super::*;

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
