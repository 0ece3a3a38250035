//! Webhooks: an HTTP POST of JSON for the events a session's `spec.notify`
//! (or `sessionlet run --notify`) asks for.
//!
//! Sending never touches the reconcile loop: the loop only pushes a ready
//! body into a bounded queue ([`Notifier::offer`]); a tokio task takes it
//! from there, with a few deliveries in flight at once, each retried with
//! exponential backoff for a bounded total time. When the queue is full the
//! oldest notification is dropped (and counted). A delivery that fails for
//! good becomes a Warning `NotificationFailed` event and a metric.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use serde::Serialize;
use sha2::Sha256;

use super::derive::Snapshot;
use super::{reasons, Event, EventLog, EventType};

/// The header carrying the body's HMAC-SHA256 (`sha256=` and lowercase hex).
pub const SIGNATURE_HEADER: &str = "X-Sessionlet-Signature";

/// What `on:` defaults to: the end of a session, whichever way it ends.
pub const DEFAULT_ON: &[&str] = &["Completed", "Failed", "TimedOut"];

/// Notifications waiting beyond this drop the oldest.
const QUEUE: usize = 256;

/// Deliveries in flight at once (slow receivers hold one each).
const IN_FLIGHT: usize = 8;

/// One webhook: where, and for which events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `http://host:port/path`.
    pub url: String,
    /// Phases (matched when the session enters them) and event reasons;
    /// empty means [`DEFAULT_ON`].
    pub on: Vec<String>,
}

impl Target {
    /// Whether `event` is one this target asks for: a phase name matches
    /// the event that made the object enter that phase, any other name
    /// matches the event's reason.
    pub fn wants(&self, event: &Event) -> bool {
        if event.reason == reasons::NOTIFICATION_FAILED {
            // A failed delivery never triggers another delivery.
            return false;
        }
        let on: Vec<&str> = if self.on.is_empty() {
            DEFAULT_ON.to_vec()
        } else {
            self.on.iter().map(String::as_str).collect()
        };
        on.iter().any(|want| {
            if is_phase(want) {
                event.phase.as_deref() == Some(*want)
            } else {
                event.reason == *want
            }
        })
    }
}

fn is_phase(name: &str) -> bool {
    crate::core::Phase::ALL.iter().any(|p| p.as_str() == name)
}

/// The status reasons ([`crate::core::Reason`]) events carry.
pub const STATUS_REASONS: &[&str] = &[
    "Completed",
    "Error",
    "Crashed",
    "TimedOut",
    "DeadlineExceeded",
    "CommandNotFound",
    "PermissionDenied",
    "SpawnFailed",
    "Suspended",
    "ManifestInvalid",
    "DuplicateName",
    "PoolNotFound",
    "QueueFull",
    "PoolFull",
    "ControllerStopped",
    "MemoryLimitExceeded",
    "OOMKilled",
    "CpuTimeLimitExceeded",
    "Stale",
    "TokenBudgetExceeded",
    "PolicyViolation",
    "SpecChanged",
    "Removed",
    "ExitedWhileAway",
    "AgentAbnormal",
    "AgentFailed",
];

/// Every value `on:` accepts: the phases, the status reasons and the event
/// verbs ([`reasons::ALL`]) but `NotificationFailed`.
pub fn accepted_on() -> Vec<String> {
    let mut all: Vec<String> = crate::core::Phase::ALL
        .iter()
        .map(|p| p.as_str().to_string())
        .collect();
    for r in STATUS_REASONS.iter().chain(reasons::ALL) {
        // A failed delivery never triggers one: not a value to accept.
        if *r != reasons::NOTIFICATION_FAILED && !all.iter().any(|a| a == r) {
            all.push((*r).to_string());
        }
    }
    all
}

/// Checks a webhook URL: `http://HOST[:PORT][/PATH]`. Returns host, port
/// and the path with its query.
pub fn parse_url(url: &str) -> Result<(String, u16, String), String> {
    let rest = url.strip_prefix("http://").ok_or_else(|| {
        if url.starts_with("https://") {
            "https is not supported; use http:// (e.g. to a local relay)".to_string()
        } else {
            "must start with http:// (e.g. http://127.0.0.1:8080/hook)".to_string()
        }
    })?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.contains('@') {
        return Err(
            "must not carry credentials (user@host); sign with --notify-secret-file instead".into(),
        );
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || authority.starts_with('[') => {
            let port = p
                .parse::<u16>()
                .map_err(|_| format!("port {p:?} is not a number from 1 to 65535"))?;
            (h, port)
        }
        _ => (authority, 80),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err("has no host (e.g. http://127.0.0.1:8080/hook)".into());
    }
    if port == 0 {
        return Err("port 0 is not a port".into());
    }
    if path.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("the path must not contain spaces or control characters".into());
    }
    Ok((host.to_string(), port, path.to_string()))
}

/// The JSON a webhook receives.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Payload<'a> {
    /// The event.
    pub event: &'a Event,
    /// What it is about: `kind`, `name`, `uid`.
    pub object: &'a super::ObjectRef,
    /// The session's phase after the event.
    pub phase: &'a str,
    /// The status reason.
    pub reason: Option<&'a str>,
    /// The status message.
    pub message: Option<&'a str>,
    /// When the event (last) happened.
    pub time: chrono::DateTime<chrono::Utc>,
    /// The attempt.
    pub attempt: u32,
    /// The status document, relative to the status folder.
    pub status_path: &'a str,
}

/// The body's signature header value: `sha256=` and the lowercase hex HMAC.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    // HMAC takes a key of any length: new_from_slice cannot fail for it.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return String::new();
    };
    mac.update(body);
    let bytes = mac.finalize().into_bytes();
    let mut hex = String::with_capacity(7 + bytes.len() * 2);
    hex.push_str("sha256=");
    for b in bytes {
        hex.push_str(&format!("{b:02x}"));
    }
    hex
}

/// How deliveries behave.
#[derive(Debug, Clone)]
pub struct Config {
    /// Signs every body when set.
    pub secret: Option<Vec<u8>>,
    /// Webhooks every session gets (`--notify`).
    pub global: Vec<Target>,
    /// Retries stop after this long in total.
    pub retry_for: Duration,
    /// One try's limit (connect, send, answer).
    pub try_timeout: Duration,
}

struct Job {
    url: String,
    body: Bytes,
    event: Event,
}

struct Queue {
    jobs: Mutex<VecDeque<Job>>,
    ready: tokio::sync::Notify,
}

/// Counters the metrics show.
#[derive(Debug, Default)]
pub struct Counts {
    /// Delivered (a 2xx answer).
    pub sent: AtomicU64,
    /// Given up after retries.
    pub failed: AtomicU64,
    /// Dropped from a full queue.
    pub dropped: AtomicU64,
}

/// The loop's side of the webhooks: cheap to clone, never blocks.
#[derive(Clone)]
pub struct Notifier {
    queue: Arc<Queue>,
    config: Arc<Config>,
    /// What happened to notifications so far.
    pub counts: Arc<Counts>,
    metrics: Option<Arc<crate::telemetry::Metrics>>,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier").finish_non_exhaustive()
    }
}

impl Notifier {
    /// Starts the sending task on the current tokio runtime; failures are
    /// recorded in `log`.
    pub fn start(
        config: Config,
        log: EventLog,
        metrics: Option<Arc<crate::telemetry::Metrics>>,
    ) -> Notifier {
        let n = Notifier {
            queue: Arc::new(Queue {
                jobs: Mutex::new(VecDeque::new()),
                ready: tokio::sync::Notify::new(),
            }),
            config: Arc::new(config),
            counts: Arc::new(Counts::default()),
            metrics,
        };
        let task = n.clone();
        tokio::spawn(async move { task.dispatch(log).await });
        n
    }

    /// Queues the notifications `event` matches (the object's own webhooks
    /// and the global ones). Never waits.
    pub fn offer(&self, event: &Event, snap: &Snapshot, ctx: &super::Context) {
        let targets: Vec<&Target> = ctx
            .notify
            .iter()
            .chain(self.config.global.iter())
            .filter(|t| t.wants(event))
            .collect();
        if targets.is_empty() || snap.kind != "Session" {
            return;
        }
        let payload = Payload {
            event,
            object: &event.object,
            phase: &snap.phase,
            reason: snap.reason.as_deref(),
            message: snap.message.as_deref(),
            time: event.last_timestamp,
            attempt: event.attempt.unwrap_or(snap.attempt),
            status_path: &ctx.status_path,
        };
        let Ok(body) = serde_json::to_vec(&payload) else {
            return;
        };
        let body = Bytes::from(body);
        let mut seen: Vec<&str> = Vec::new();
        let mut jobs = self.queue.jobs.lock().unwrap_or_else(|e| e.into_inner());
        for t in targets {
            // The same URL twice (spec and --notify) gets one POST.
            if seen.contains(&t.url.as_str()) {
                continue;
            }
            seen.push(&t.url);
            if jobs.len() >= QUEUE {
                jobs.pop_front();
                self.counts.dropped.fetch_add(1, Ordering::Relaxed);
                self.count("dropped");
            }
            jobs.push_back(Job {
                url: t.url.clone(),
                body: body.clone(),
                event: event.clone(),
            });
        }
        drop(jobs);
        self.queue.ready.notify_one();
    }

    /// Notifications waiting to be sent.
    pub fn queued(&self) -> usize {
        self.queue
            .jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    fn count(&self, result: &str) {
        if let Some(m) = &self.metrics {
            m.notifications
                .get_or_create(&crate::telemetry::metrics::ResultLabel {
                    result: result.to_string(),
                })
                .inc();
        }
    }

    async fn dispatch(self, log: EventLog) {
        let slots = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
        loop {
            let job = self
                .queue
                .jobs
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .pop_front();
            let Some(job) = job else {
                self.queue.ready.notified().await;
                continue;
            };
            let Ok(slot) = slots.clone().acquire_owned().await else {
                return;
            };
            let (config, counts, log, me) = (
                self.config.clone(),
                self.counts.clone(),
                log.clone(),
                self.clone(),
            );
            tokio::spawn(async move {
                let _slot = slot;
                match deliver(&config, &job).await {
                    Ok(()) => {
                        counts.sent.fetch_add(1, Ordering::Relaxed);
                        me.count("sent");
                    }
                    Err(why) => {
                        counts.failed.fetch_add(1, Ordering::Relaxed);
                        me.count("failed");
                        tracing::warn!(url = %job.url, "webhook not delivered: {why}");
                        log.record(Event::new(
                            chrono::Utc::now(),
                            job.event.object.clone(),
                            EventType::Warning,
                            reasons::NOTIFICATION_FAILED,
                            format!(
                                "{} for {} not delivered to {}: {why}",
                                job.event.reason, job.event.object.name, job.url
                            ),
                            job.event.attempt,
                        ));
                    }
                }
            });
        }
    }
}

/// Sends one notification, retrying with exponential backoff until
/// `retry_for` has passed. A 4xx answer other than 408 and 429 is final.
async fn deliver(config: &Config, job: &Job) -> Result<(), String> {
    let started = tokio::time::Instant::now();
    let mut delay = Duration::from_millis(500);
    loop {
        let why = match tokio::time::timeout(config.try_timeout, post(config, job)).await {
            Ok(Ok(status)) if (200..300).contains(&status) => return Ok(()),
            Ok(Ok(status)) if (400..500).contains(&status) && status != 408 && status != 429 => {
                return Err(format!("the receiver answered {status}"));
            }
            Ok(Ok(status)) => format!("the receiver answered {status}"),
            Ok(Err(e)) => e,
            Err(_) => format!("no answer within {:?}", config.try_timeout),
        };
        let left = config.retry_for.saturating_sub(started.elapsed());
        if left.is_zero() {
            return Err(format!("{why} (gave up after {:?})", config.retry_for));
        }
        tokio::time::sleep(delay.min(left)).await;
        delay = (delay * 2).min(Duration::from_secs(30));
    }
}

async fn post(config: &Config, job: &Job) -> Result<u16, String> {
    let (host, port, path) = parse_url(&job.url)?;
    let stream = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| format!("cannot connect: {e}"))?;
    let io = hyper_util::rt::TokioIo::new(stream);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let authority = if port == 80 {
        host.clone()
    } else {
        format!("{host}:{port}")
    };
    let mut req = hyper::Request::post(path)
        .header(hyper::header::HOST, authority)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .header(
            hyper::header::USER_AGENT,
            concat!("sessionlet/", env!("CARGO_PKG_VERSION")),
        );
    if let Some(secret) = &config.secret {
        req = req.header(SIGNATURE_HEADER, sign(secret, &job.body));
    }
    let req = req
        .body(Full::new(job.body.clone()))
        .map_err(|e| format!("request: {e}"))?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| format!("send: {e}"))?;
    let status = resp.status().as_u16();
    // Read (and discard) the answer so the receiver sees a clean close.
    let _ = resp.into_body().collect().await;
    Ok(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            parse_url("http://127.0.0.1:8080/hook?x=1").unwrap(),
            ("127.0.0.1".into(), 8080, "/hook?x=1".into())
        );
        assert_eq!(
            parse_url("http://example.test").unwrap(),
            ("example.test".into(), 80, "/".into())
        );
        assert_eq!(
            parse_url("http://[::1]:9000/").unwrap(),
            ("::1".into(), 9000, "/".into())
        );
        assert!(parse_url("https://x/").unwrap_err().contains("https"));
        assert!(parse_url("ftp://x/").unwrap_err().contains("http://"));
        assert!(parse_url("http://:80/").is_err());
        assert!(parse_url("http://h:99999/").is_err());
        assert!(parse_url("http://u:p@h/")
            .unwrap_err()
            .contains("credentials"));
    }

    #[test]
    fn signature_is_hmac_sha256_hex() {
        // RFC 4231 test case 2.
        assert_eq!(
            sign(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    fn ev(reason: &str, phase: Option<&str>) -> Event {
        let mut e = Event::new(
            chrono::Utc::now(),
            super::super::ObjectRef {
                kind: "Session".into(),
                name: "a".into(),
                uid: None,
            },
            EventType::Warning,
            reason,
            String::new(),
            Some(1),
        );
        e.phase = phase.map(str::to_string);
        e
    }

    #[test]
    fn on_matches_entered_phases_and_reasons() {
        let t = Target {
            url: "http://127.0.0.1:1/".into(),
            on: vec!["Failed".into(), "BackOff".into()],
        };
        assert!(t.wants(&ev("Failed", Some("Failed"))));
        assert!(t.wants(&ev("BackOff", None)));
        // A phase name needs the phase entered, not the reason.
        assert!(!t.wants(&ev("Failed", None)));
        assert!(!t.wants(&ev("Error", None)));
        let d = Target {
            url: "http://127.0.0.1:1/".into(),
            on: vec![],
        };
        assert!(d.wants(&ev("Completed", Some("Completed"))));
        assert!(d.wants(&ev("TimedOut", Some("TimedOut"))));
        assert!(!d.wants(&ev("Completed", None)));
        let all = Target {
            url: "http://127.0.0.1:1/".into(),
            on: vec!["NotificationFailed".into()],
        };
        assert!(!all.wants(&ev("NotificationFailed", None)));
    }

    fn config(global: &[&str]) -> Config {
        Config {
            secret: None,
            global: global
                .iter()
                .map(|u| Target {
                    url: (*u).to_string(),
                    on: vec!["BackOff".into()],
                })
                .collect(),
            retry_for: Duration::from_secs(1),
            try_timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn a_full_queue_drops_the_oldest_and_one_url_gets_one_post() {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let url = "http://127.0.0.1:9/hook";
            let n = Notifier::start(config(&[url]), EventLog::new(dir.path()), None);
            let ctx = super::super::Context {
                notify: vec![Target {
                    url: url.into(),
                    on: vec!["BackOff".into()],
                }],
                status_path: "a.status.yaml".into(),
            };
            let snap = Snapshot {
                kind: "Session".into(),
                phase: "Recovering".into(),
                ..Snapshot::default()
            };
            // Nothing awaits here, so the sending task never runs: all queue up.
            n.offer(&ev("BackOff", None), &snap, &ctx);
            assert_eq!(n.queued(), 1, "the spec's URL and --notify's are one POST");
            n.offer(&ev("Spawned", None), &snap, &ctx);
            assert_eq!(n.queued(), 1, "not asked for");
            for _ in 0..QUEUE + 9 {
                n.offer(&ev("BackOff", None), &snap, &ctx);
            }
            assert_eq!(n.queued(), QUEUE);
            assert_eq!(n.counts.dropped.load(Ordering::Relaxed), 10);
        });
    }

    #[test]
    fn accepted_values_cover_phases_reasons_and_verbs() {
        let a = accepted_on();
        for v in [
            "Failed",
            "Running",
            "OOMKilled",
            "Error",
            "Spawned",
            "BackOff",
        ] {
            assert!(a.iter().any(|x| x == v), "{v}");
        }
    }
}
