//! The Prometheus metrics the controller exports (names in the README).

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// A label set with one `phase`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabel {
    /// The phase.
    pub phase: String,
}

/// A label set with one `reason`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// The reason.
    pub reason: String,
}

/// A label set with one `session`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SessionLabel {
    /// The session.
    pub session: String,
}

/// A label set with one `pool`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PoolLabel {
    /// The pool.
    pub pool: String,
}

/// A label set with one `kind` (the shell's errors).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    /// The kind.
    pub kind: String,
}

/// A label set with one `result` (webhooks: `sent`, `failed`, `dropped`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    /// The result.
    pub result: String,
}

/// Every metric, plus the liveness facts `/healthz` needs.
pub struct Metrics {
    registry: Mutex<Registry>,
    /// Sessions by phase.
    pub sessions: Family<PhaseLabel, Gauge>,
    /// Restarts of each session.
    pub restarts: Family<SessionLabel, Gauge>,
    /// Ended attempts by reason.
    pub exits: Family<ReasonLabel, Counter>,
    /// Resident memory of each running session's tree.
    pub memory: Family<SessionLabel, Gauge>,
    /// CPU seconds of each running session's tree.
    pub cpu: Family<SessionLabel, Gauge<f64, AtomicU64>>,
    /// Time to start a process.
    pub spawn_seconds: Histogram,
    /// Time of a reconcile pass.
    pub reconcile_seconds: Histogram,
    /// Reconcile passes.
    pub reconciles: Counter,
    /// Sessions queued per pool.
    pub queue_length: Family<PoolLabel, Gauge>,
    /// Manifest files that do not validate (refused, or running on their
    /// last good spec).
    pub invalid_manifests: Gauge,
    /// Manifest files parsed (each read of a new or changed file).
    pub manifest_reads: Counter,
    /// Listings of the whole manifest folder (at start, at each resync, and
    /// when a watch cannot name what changed).
    pub manifest_listings: Counter,
    /// Errors the controller survived, by kind.
    pub errors: Family<KindLabel, Counter>,
    /// Webhook notifications by result (sent, failed, dropped).
    pub notifications: Family<ResultLabel, Counter>,
    /// Events recorded, by type (Normal, Warning).
    pub events: Family<ResultLabel, Counter>,
    /// Unix time (ms) of the last completed pass.
    pub last_pass_ms: AtomicI64,
    /// True once the first pass completed.
    pub ready: AtomicBool,
    /// The resync interval (ms): `/healthz` fails after two without a pass.
    pub resync_ms: i64,
}

impl Metrics {
    /// Registers every metric.
    pub fn new(resync: std::time::Duration) -> Metrics {
        let mut registry = Registry::with_prefix("sessionlet");
        let sessions = Family::<PhaseLabel, Gauge>::default();
        registry.register("sessions", "Sessions by phase", sessions.clone());
        let restarts = Family::<SessionLabel, Gauge>::default();
        registry.register(
            "session_restarts",
            "Restarts of each session since its spec last changed",
            restarts.clone(),
        );
        let exits = Family::<ReasonLabel, Counter>::default();
        registry.register("exits", "Ended attempts by reason", exits.clone());
        let memory = Family::<SessionLabel, Gauge>::default();
        registry.register(
            "session_memory_bytes",
            "Resident memory of each running session's process tree",
            memory.clone(),
        );
        let cpu = Family::<SessionLabel, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "session_cpu_seconds",
            "CPU time of each running session's process tree",
            cpu.clone(),
        );
        let spawn_seconds = Histogram::new(exponential_buckets(0.000_25, 2.0, 14));
        registry.register(
            "spawn_duration_seconds",
            "Time to start a session's process",
            spawn_seconds.clone(),
        );
        let reconcile_seconds = Histogram::new(exponential_buckets(0.000_05, 2.0, 16));
        registry.register(
            "reconcile_duration_seconds",
            "Time of one reconcile pass",
            reconcile_seconds.clone(),
        );
        let reconciles = Counter::default();
        registry.register("reconciles", "Reconcile passes", reconciles.clone());
        let queue_length = Family::<PoolLabel, Gauge>::default();
        registry.register(
            "pool_queue_length",
            "Sessions waiting for room in each pool",
            queue_length.clone(),
        );
        let invalid_manifests = Gauge::default();
        registry.register(
            "invalid_manifests",
            "Manifest files that do not validate (refused, or kept running on their last good spec)",
            invalid_manifests.clone(),
        );
        let manifest_reads = Counter::default();
        registry.register(
            "manifest_reads",
            "Manifest files parsed: each new or changed file is read once",
            manifest_reads.clone(),
        );
        let manifest_listings = Counter::default();
        registry.register(
            "manifest_listings",
            "Listings of the whole manifest folder: at start, at each resync, and when a watch cannot name what changed",
            manifest_listings.clone(),
        );
        let errors = Family::<KindLabel, Counter>::default();
        registry.register(
            "errors",
            "Errors the controller survived, by kind (keeper, status_write, crash_dump, cgroup, signal, render, ...)",
            errors.clone(),
        );
        let notifications = Family::<ResultLabel, Counter>::default();
        registry.register(
            "notifications",
            "Webhook notifications by result: sent, failed (after retries), dropped (queue full)",
            notifications.clone(),
        );
        let events = Family::<ResultLabel, Counter>::default();
        registry.register(
            "events",
            "Events recorded, by result: the event type (Normal, Warning) or write_error",
            events.clone(),
        );
        Metrics {
            registry: Mutex::new(registry),
            notifications,
            events,
            sessions,
            restarts,
            exits,
            memory,
            cpu,
            spawn_seconds,
            reconcile_seconds,
            reconciles,
            queue_length,
            invalid_manifests,
            manifest_reads,
            manifest_listings,
            errors,
            last_pass_ms: AtomicI64::new(0),
            ready: AtomicBool::new(false),
            resync_ms: i64::try_from(resync.as_millis()).unwrap_or(i64::MAX),
        }
    }

    /// Registers a metric owned elsewhere (the scale-out coordinator's).
    pub fn register_extra(
        &self,
        name: &str,
        help: &str,
        metric: impl prometheus_client::registry::Metric,
    ) {
        if let Ok(mut r) = self.registry.lock() {
            r.register(name, help, metric);
        }
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Ok(registry) = self.registry.lock() {
            let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        }
        out
    }

    /// Records a completed pass.
    pub fn pass_done(&self, seconds: f64) {
        self.reconcile_seconds.observe(seconds);
        self.reconciles.inc();
        self.last_pass_ms
            .store(chrono::Utc::now().timestamp_millis(), Ordering::Relaxed);
        self.ready.store(true, Ordering::Relaxed);
    }

    /// True while the loop completed a pass within two resync intervals.
    pub fn healthy(&self) -> bool {
        let last = self.last_pass_ms.load(Ordering::Relaxed);
        last > 0 && chrono::Utc::now().timestamp_millis() - last <= 2 * self.resync_ms
    }
}
