//! Workload 6, scale: 10,000 manifests of sessions that exit at once
//! (`/bin/true`, `restartPolicy: Never`). Measures what one reconcile pass
//! costs when nothing changed (the periodic resync: a full rescan), and the
//! work caused by one changed file (its command: the finished session runs
//! again), by one added file and by one file edited in place (a label).
//!
//! Signals used, all from outside the controller:
//! - the controller's CPU time (schedstat of all its threads), sampled every
//!   millisecond: each resync shows as one burst of CPU, whose CPU time and
//!   wall span bound the pass from above (the burst also holds the resync's
//!   housekeeping: reaping, log rotation checks, vanished-process checks);
//! - `lastReconcileMillis` of `.sessionlet/controller.status.yaml`, the
//!   controller's own timing of one pass, when the file is rewritten during
//!   an idle window (counters alone rewrite it at most every 30 s);
//! - debug lines `reconcile pass ... elapsed_us=N` in the controller's log,
//!   if the controller emits them (RUST_LOG=sessionlet::runtime=debug);
//! - inotify on the status folder: the changed session's status write.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use super::procfs::{self, DirWatch};

/// Settings of the scale run.
pub struct Config {
    pub sessions: usize,
    pub resync: Duration,
    pub idle_window: Duration,
    pub events: usize,
    pub start_limit: Duration,
    /// Also start once with every manifest already present.
    pub at_once: bool,
    /// Manifests added per batch for the steady state.
    pub batch: usize,
    /// Extra arguments of `sessionlet run`.
    pub extra_args: Vec<String>,
}

/// What the scale run measured (milliseconds).
#[derive(Default)]
pub struct Outcome {
    /// With every manifest present at start: start until all Completed, seconds.
    pub start_to_done_s: Option<f64>,
    /// CPU time of each resync burst (full pass + housekeeping).
    pub resync_cpu_ms: Vec<f64>,
    /// Wall span of each resync burst.
    pub resync_wall_ms: Vec<f64>,
    /// lastReconcileMillis samples written during idle windows.
    pub reported_full_ms: Vec<f64>,
    /// Controller CPU caused by one changed file (all passes it caused).
    pub changed_cpu_ms: Vec<f64>,
    /// Rename of the changed manifest until its status file is written.
    pub changed_latency_ms: Vec<f64>,
    /// Controller CPU caused by one added file.
    pub added_cpu_ms: Vec<f64>,
    /// Rename of the added manifest until its status file is written.
    pub added_latency_ms: Vec<f64>,
    /// Controller CPU caused by one file edited in place (a label: the
    /// finished session stays finished), so without the session's own run.
    pub inplace_cpu_ms: Vec<f64>,
    /// Rename of the file edited in place until its status is written.
    pub inplace_latency_ms: Vec<f64>,
    /// Pass durations from the controller's debug log, when it logs them.
    pub log_full_ms: Vec<f64>,
    pub log_changed_ms: Vec<f64>,
    pub log_added_ms: Vec<f64>,
    /// Mean pass time from the metrics histogram over the idle window (ms), and passes.
    pub metrics_full_mean_ms: Option<(f64, f64)>,
    /// Mean pass time of the passes one changed file caused (ms), per event.
    pub metrics_changed_ms: Vec<f64>,
    /// Mean pass time of the passes one added file caused (ms), per event.
    pub metrics_added_ms: Vec<f64>,
    /// Sessions stuck Running because exits were no longer reported, and when.
    pub exits_lost: Option<(u64, f64)>,
    /// Controller RSS with every session known, KiB.
    pub rss_kb: Option<u64>,
    pub notes: Vec<String>,
}

impl Outcome {
    pub fn detail(&self) -> Value {
        json!({
            "startToAllCompletedSeconds": self.start_to_done_s,
            "resyncBurstCpuMs": self.resync_cpu_ms,
            "resyncBurstWallMs": self.resync_wall_ms,
            "controllerReportedFullPassMs": self.reported_full_ms,
            "changedFileCpuMs": self.changed_cpu_ms,
            "changedFileToStatusMs": self.changed_latency_ms,
            "addedFileCpuMs": self.added_cpu_ms,
            "addedFileToStatusMs": self.added_latency_ms,
            "inPlaceEditCpuMs": self.inplace_cpu_ms,
            "inPlaceEditToStatusMs": self.inplace_latency_ms,
            "logFullPassMs": self.log_full_ms,
            "logChangedPassMs": self.log_changed_ms,
            "logAddedPassMs": self.log_added_ms,
            "metricsIdleMeanPassMsAndPasses": self.metrics_full_mean_ms,
            "metricsChangedMeanPassMs": self.metrics_changed_ms,
            "metricsAddedMeanPassMs": self.metrics_added_ms,
            "exitsLostStuckRunningAfterSeconds": self.exits_lost,
            "controllerRssKiB": self.rss_kb,
            "notes": self.notes,
        })
    }
}

fn manifest(name: &str, extra_arg: Option<&str>) -> String {
    labelled(name, extra_arg, None)
}

/// A manifest with an optional extra argument (an edit of what runs: the
/// session runs again) and an optional label (an edit in place).
fn labelled(name: &str, extra_arg: Option<&str>, label: Option<&str>) -> String {
    let cmd = match extra_arg {
        Some(a) => format!("[/bin/true, \"{a}\"]"),
        None => "[/bin/true]".to_string(),
    };
    let labels = match label {
        Some(l) => format!("\n  labels:\n    edit: \"{l}\""),
        None => String::new(),
    };
    format!(
        "apiVersion: sessionlet.dev/v1alpha1\nkind: Session\nmetadata:\n  name: {name}{labels}\nspec:\n  command: {cmd}\n  restartPolicy: Never\n"
    )
}

/// `.sessionlet/controller.status.yaml`, as JSON.
fn controller_status(dir: &Path) -> Option<Value> {
    let text = std::fs::read_to_string(dir.join(".sessionlet/controller.status.yaml")).ok()?;
    sessionlet::manifest::codec::from_yaml_multi::<Value>(&text)
        .ok()?
        .into_iter()
        .next()
}

fn check(ctrl: u32) -> Result<()> {
    if procfs::interrupted() {
        bail!("interrupted");
    }
    if !procfs::alive(ctrl) {
        bail!("the controller exited");
    }
    Ok(())
}

/// Every unlabelled sample of the controller's metrics endpoint on 127.0.0.1.
pub fn scrape_all(port: u16) -> Option<std::collections::HashMap<String, f64>> {
    use std::io::{Read, Write};
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    let mut out = std::collections::HashMap::new();
    for l in body.lines() {
        if l.starts_with('#') || l.contains('{') {
            continue;
        }
        let mut it = l.split_whitespace();
        if let (Some(k), Some(v)) = (it.next(), it.next()) {
            if let Ok(v) = v.parse::<f64>() {
                out.insert(k.to_string(), v);
            }
        }
    }
    Some(out)
}

/// `sessionlet_reconcile_duration_seconds` sum and count.
fn scrape(port: u16) -> Option<(f64, f64)> {
    let m = scrape_all(port)?;
    Some((
        *m.get("sessionlet_reconcile_duration_seconds_sum")?,
        *m.get("sessionlet_reconcile_duration_seconds_count")?,
    ))
}

/// Mean pass (ms) between two scrapes, and the number of passes.
fn mean_pass(a: Option<(f64, f64)>, b: Option<(f64, f64)>) -> Option<(f64, f64)> {
    let ((s0, c0), (s1, c1)) = (a?, b?);
    (c1 > c0).then(|| ((s1 - s0) / (c1 - c0) * 1e3, c1 - c0))
}

/// A free TCP port on 127.0.0.1 (bound, read, released).
pub fn free_port() -> Option<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").ok()?;
    Some(l.local_addr().ok()?.port())
}

/// `sessionlet run` on the scale folder. Usage sampling is off so that the
/// only periodic wake-up is the resync (one burst of CPU per full pass).
fn start_controller(
    bin: &Path,
    dir: &Path,
    port: Option<u16>,
    log_path: &Path,
    resync: Duration,
    extra: &[String],
) -> Result<u32> {
    let mut cmd = Command::new(bin);
    cmd.arg("run").arg("--dir").arg(dir).args(extra);
    if let Some(p) = port {
        cmd.arg("--metrics-addr").arg(format!("127.0.0.1:{p}"));
    }
    let child = cmd
        .arg("--resync-interval")
        .arg(format!("{}ms", resync.as_millis()))
        .arg("--usage-interval")
        .arg("0")
        .env("RUST_LOG", "info,sessionlet::runtime=debug")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log_path)?)
        .spawn()
        .context("start sessionlet")?;
    Ok(child.id())
}

/// Kills a controller and waits for its keeper, which exits once it has
/// neither children nor a controller (or is killed after 10 s).
fn restart(ctrl: u32) {
    let kids = procfs::children(ctrl);
    procfs::kill9(ctrl);
    procfs::wait_child(ctrl, Duration::from_secs(10));
    for k in kids {
        if !procfs::wait_child(k, Duration::from_secs(10)) {
            procfs::kill9(k);
            procfs::wait_child(k, Duration::from_secs(5));
        }
    }
}

/// Sessions known and sessions finished, from the controller's status file.
fn progress(dir: &Path) -> (u64, u64) {
    let Some(s) = controller_status(dir) else {
        return (0, 0);
    };
    let phases = &s["sessionsByPhase"];
    (
        s["totalSessions"].as_u64().unwrap_or(0),
        phases["Completed"].as_u64().unwrap_or(0) + phases["Failed"].as_u64().unwrap_or(0),
    )
}

/// A CPU sample stream of one process.
struct CpuTrace {
    pid: u32,
    samples: Vec<(Instant, u64)>,
}

impl CpuTrace {
    fn sample(&mut self) -> u64 {
        let v = procfs::cpu_ns(self.pid).unwrap_or(0);
        self.samples.push((Instant::now(), v));
        v
    }
}

/// Bursts of CPU in a trace: (cpu ns, wall ns) of each run of increases
/// separated by at least `gap` without any.
fn bursts(samples: &[(Instant, u64)], gap: Duration, min_cpu_ns: u64) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let mut i = 1;
    while i < samples.len() {
        if samples[i].1 > samples[i - 1].1 {
            let (t0, c0) = samples[i - 1];
            let mut last = i;
            let mut j = i + 1;
            while j < samples.len() {
                if samples[j].1 > samples[j - 1].1 {
                    last = j;
                } else if samples[j].0 - samples[last].0 >= gap {
                    break;
                }
                j += 1;
            }
            let (t1, c1) = samples[last];
            if c1 - c0 >= min_cpu_ns {
                out.push((c1 - c0, (t1 - t0).as_nanos() as u64));
            }
            i = j;
        } else {
            i += 1;
        }
    }
    out
}

/// Runs the scale workload.
pub fn run(bin: &Path, root: &Path, cfg: &Config, log: &dyn Fn(&str)) -> Result<Outcome> {
    let mut out = Outcome::default();
    let width = cfg.sessions.to_string().len().max(5);
    let name = |i: usize| format!("s{i:0width$}");
    let port = free_port();

    // 1. All manifests present when the controller starts.
    if cfg.at_once {
        let dir = root.join("at-once");
        std::fs::create_dir_all(&dir)?;
        for i in 0..cfg.sessions {
            let n = name(i);
            std::fs::write(dir.join(format!("{n}.yaml")), manifest(&n, None))?;
        }
        let log_path = root.join("at-once.log");
        let t0 = Instant::now();
        let ctrl = start_controller(bin, &dir, port, &log_path, cfg.resync, &cfg.extra_args)?;
        log(&format!(
            "scale: controller started with {} manifests present",
            cfg.sessions
        ));
        let mut last_report = Instant::now();
        loop {
            check(ctrl)?;
            let (total, done) = progress(&dir);
            if total == cfg.sessions as u64 && done == total {
                out.start_to_done_s = Some(t0.elapsed().as_secs_f64());
                break;
            }
            let lost = std::fs::read_to_string(&log_path)
                .is_ok_and(|l| l.contains("exits are no longer reported"));
            if lost {
                // Let the pass in progress end, to count what is stuck.
                std::thread::sleep(Duration::from_secs(3));
                let (total, done) = progress(&dir);
                out.exits_lost = Some((cfg.sessions as u64 - done, t0.elapsed().as_secs_f64()));
                out.notes.push(format!(
                    "BUG: with {} manifests present at start, the keeper dropped the events connection after {:.0} s \
                     (log: \"the connection to the keeper closed; exits are no longer reported\"): \
                     the controller was busy in one long pass and did not read exits for 5 s; \
                     at that time {done} of {total} sessions were Completed, the rest stay Running forever",
                    cfg.sessions,
                    t0.elapsed().as_secs_f64()
                ));
                log("scale: exits lost (keeper dropped the events connection); populating in batches instead");
                break;
            }
            if last_report.elapsed() > Duration::from_secs(15) {
                log(&format!("scale: {done}/{total} finished so far"));
                last_report = Instant::now();
            }
            if t0.elapsed() > cfg.start_limit {
                out.notes.push(format!(
                    "with {} manifests present at start, not all Completed within {:?}",
                    cfg.sessions, cfg.start_limit
                ));
                break;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        restart(ctrl);
        procfs::kill_all_descendants();
        super::peers::remove_cgroups(&log_path);
        let _ = std::fs::remove_dir_all(&dir);
    }

    // 2. The steady state: manifests added in batches, each run to completion.
    let dir = root.join("sessions");
    let stage = root.join("stage");
    std::fs::create_dir_all(&dir)?;
    std::fs::create_dir_all(&stage)?;
    let log_path = root.join("controller.log");
    let t0 = Instant::now();
    let ctrl = start_controller(bin, &dir, port, &log_path, cfg.resync, &cfg.extra_args)?;
    let mut written = 0usize;
    while written < cfg.sessions {
        let upto = (written + cfg.batch).min(cfg.sessions);
        for i in written..upto {
            let n = name(i);
            let staged = stage.join(format!("{n}.yaml"));
            std::fs::write(&staged, manifest(&n, None))?;
            std::fs::rename(&staged, dir.join(format!("{n}.yaml")))?;
        }
        written = upto;
        let b0 = Instant::now();
        loop {
            check(ctrl)?;
            let (total, done) = progress(&dir);
            if total == written as u64 && done == total {
                break;
            }
            if std::fs::read_to_string(&log_path)
                .is_ok_and(|l| l.contains("exits are no longer reported"))
            {
                bail!("exits lost while adding batches of {} manifests (keeper dropped the events connection)", cfg.batch);
            }
            if b0.elapsed() > Duration::from_secs(180) {
                bail!("{done} of {total} sessions Completed 180 s after adding a batch");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        if written.is_multiple_of(cfg.batch * 20) || written == cfg.sessions {
            log(&format!(
                "scale: {written} manifests, all Completed ({:.0} s)",
                t0.elapsed().as_secs_f64()
            ));
        }
    }
    log(&format!(
        "scale: measuring idle resync passes for {:?}",
        cfg.idle_window
    ));
    std::thread::sleep(Duration::from_millis(1500));
    out.rss_kb = procfs::rss_kb(ctrl);

    // Full passes: the periodic resync over an unchanged directory.
    let before = controller_status(&dir);
    let m_before = port.and_then(scrape);
    std::thread::sleep(Duration::from_millis(100));
    let window_start_wall = SystemTime::now();
    let mut trace = CpuTrace {
        pid: ctrl,
        samples: Vec::new(),
    };
    let w0 = Instant::now();
    while w0.elapsed() < cfg.idle_window {
        check(ctrl)?;
        trace.sample();
        std::thread::sleep(Duration::from_micros(1000));
    }
    out.metrics_full_mean_ms = mean_pass(m_before, port.and_then(scrape));
    for (cpu, wall) in bursts(&trace.samples, Duration::from_millis(20), 300_000) {
        out.resync_cpu_ms.push(cpu as f64 / 1e6);
        out.resync_wall_ms.push(wall as f64 / 1e6);
    }
    if let Some(s) = controller_status(&dir) {
        let changed = before.as_ref().map(|b| &b["updatedAt"]) != Some(&s["updatedAt"]);
        if changed {
            if let Some(ms) = s["lastReconcileMillis"].as_f64() {
                out.reported_full_ms.push(ms);
            }
        }
    }
    let window_end_wall = SystemTime::now();

    // One changed file, then one added file, then one file edited in
    // place, between resyncs.
    let mut watch = DirWatch::new(&dir)?;
    let mut event_windows: Vec<(bool, SystemTime, SystemTime)> = Vec::new();
    for round in 0..cfg.events * 3 {
        let added = round >= cfg.events && round < cfg.events * 2;
        let in_place = round >= cfg.events * 2;
        let k = round % cfg.events.max(1);
        check(ctrl)?;
        wait_after_burst(&mut trace, ctrl)?;
        let m0 = port.and_then(scrape);
        std::thread::sleep(Duration::from_millis(150));
        let (stem, text) = if added {
            let n = format!("zz-added-{k}");
            let t = manifest(&n, None);
            (n, t)
        } else if in_place {
            // Sessions the changed-file rounds did not touch.
            let n = name((k * 997 + 501) % cfg.sessions);
            let t = labelled(&n, None, Some(&format!("edit-{k}")));
            (n, t)
        } else {
            let n = name((k * 997 + 13) % cfg.sessions);
            let t = manifest(&n, Some(&format!("changed-{k}")));
            (n, t)
        };
        let staged = stage.join(format!("{stem}.yaml"));
        std::fs::write(&staged, text)?;
        watch.drain();
        let target = format!("{stem}.status.yaml");
        let wall0 = SystemTime::now();
        let cpu0 = procfs::cpu_ns(ctrl).unwrap_or(0);
        let e0 = Instant::now();
        std::fs::rename(&staged, dir.join(format!("{stem}.yaml")))?;
        let mut status_at: Option<Instant> = None;
        let mut last_cpu = cpu0;
        let mut last_change = Instant::now();
        loop {
            if status_at.is_none() && watch.drain().contains(&target) {
                status_at = Some(Instant::now());
            }
            let c = procfs::cpu_ns(ctrl).unwrap_or(last_cpu);
            if c > last_cpu {
                last_cpu = c;
                last_change = Instant::now();
            }
            let quiet = last_change.elapsed() >= Duration::from_millis(60);
            if (status_at.is_some() && quiet) || e0.elapsed() > Duration::from_millis(1700) {
                break;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        let cpu_ms = (last_cpu - cpu0) as f64 / 1e6;
        if let Some((ms, _)) = mean_pass(m0, port.and_then(scrape)) {
            if in_place {
                // (Not a pass figure the tables report.)
            } else if added {
                out.metrics_added_ms.push(ms);
            } else {
                out.metrics_changed_ms.push(ms);
            }
        }
        match status_at {
            Some(t) => {
                let lat = (t - e0).as_secs_f64() * 1e3;
                if in_place {
                    out.inplace_cpu_ms.push(cpu_ms);
                    out.inplace_latency_ms.push(lat);
                } else if added {
                    out.added_cpu_ms.push(cpu_ms);
                    out.added_latency_ms.push(lat);
                } else {
                    out.changed_cpu_ms.push(cpu_ms);
                    out.changed_latency_ms.push(lat);
                }
            }
            None => out.notes.push(format!(
                "{} file {stem}: no status write seen within 1.7 s",
                if added {
                    "added"
                } else if in_place {
                    "edited in place"
                } else {
                    "changed"
                }
            )),
        }
        if !in_place {
            event_windows.push((added, wall0, SystemTime::now()));
        }
    }
    // Debug lines, if the controller writes them.
    if let Ok(text) = std::fs::read_to_string(&log_path) {
        for line in text.lines().filter(|l| l.contains("reconcile pass")) {
            let Some(ms) = pass_millis(line) else {
                continue;
            };
            let Some(at) = line_time(line) else {
                continue;
            };
            if at >= window_start_wall && at <= window_end_wall {
                out.log_full_ms.push(ms);
            }
            for (added, a, b) in &event_windows {
                if at >= *a && at <= *b && line.contains("rescan=true") {
                    if *added {
                        out.log_added_ms.push(ms);
                    } else {
                        out.log_changed_ms.push(ms);
                    }
                }
            }
        }
    }
    procfs::kill9(ctrl);
    procfs::kill_all_descendants();
    super::peers::remove_cgroups(&log_path);
    Ok(out)
}

/// Waits until a CPU burst (a resync) has ended: CPU rose, then stayed
/// flat for 30 ms. Gives up after 3 resync periods.
fn wait_after_burst(trace: &mut CpuTrace, ctrl: u32) -> Result<()> {
    let start = Instant::now();
    let mut last = trace.sample();
    let mut rose = false;
    let mut flat_since = Instant::now();
    loop {
        check(ctrl)?;
        std::thread::sleep(Duration::from_micros(1000));
        let c = trace.sample();
        if c > last {
            rose = rose || c - last > 200_000;
            flat_since = Instant::now();
            last = c;
        } else if rose && flat_since.elapsed() >= Duration::from_millis(30) {
            return Ok(());
        }
        if start.elapsed() > Duration::from_secs(8) {
            return Ok(());
        }
    }
}

/// `elapsed_us=N` or `elapsed_ms=N` of a log line, in milliseconds.
fn pass_millis(line: &str) -> Option<f64> {
    for tok in line.split_whitespace() {
        if let Some(v) = tok.strip_prefix("elapsed_us=") {
            return v
                .trim_matches(|c: char| !c.is_ascii_digit() && c != '.')
                .parse::<f64>()
                .ok()
                .map(|u| u / 1e3);
        }
        if let Some(v) = tok.strip_prefix("elapsed_ms=") {
            return v
                .trim_matches(|c: char| !c.is_ascii_digit() && c != '.')
                .parse::<f64>()
                .ok();
        }
    }
    None
}

/// The RFC 3339 timestamp tracing puts first on a line.
fn line_time(line: &str) -> Option<SystemTime> {
    let first = line.split_whitespace().next()?;
    // Strip ANSI colour codes, if any.
    let clean: String = first
        .split('\u{1b}')
        .map(|s| s.split_once('m').map(|x| x.1).unwrap_or(s))
        .collect();
    let t = chrono::DateTime::parse_from_rfc3339(clean.trim()).ok()?;
    Some(SystemTime::from(t.with_timezone(&chrono::Utc)))
}

/// What holding many manifests costs (the 100,000-manifest point).
pub struct Held {
    /// Manifests written before the controller started.
    pub sessions: usize,
    /// Controller start until every session Completed, seconds (`None`: not within the limit).
    pub start_to_done_s: Option<f64>,
    /// Sessions finished (Completed or Failed) when the memory was read.
    pub done: u64,
    /// Seconds from the controller's start to the memory reading.
    pub elapsed_s: f64,
    /// The controller's RSS and PSS once every session finished, KiB.
    pub rss_kb: Option<u64>,
    pub pss_kb: Option<u64>,
    /// The keeper's PSS then, KiB.
    pub keeper_pss_kb: Option<u64>,
}

/// Starts a controller on `sessions` manifests of sessions that exit at once
/// and measures the time until all Completed and the memory it then holds.
pub fn held(
    bin: &Path,
    root: &Path,
    sessions: usize,
    limit: Duration,
    extra: &[String],
    log: &dyn Fn(&str),
) -> Result<Held> {
    let width = sessions.to_string().len().max(5);
    let dir = root.join("held");
    std::fs::create_dir_all(&dir)?;
    for i in 0..sessions {
        let n = format!("h{i:0width$}");
        std::fs::write(dir.join(format!("{n}.yaml")), manifest(&n, None))?;
    }
    let log_path = root.join("held.log");
    let t0 = Instant::now();
    let ctrl = start_controller(bin, &dir, None, &log_path, Duration::from_secs(10), extra)?;
    log(&format!(
        "scale: controller started with {sessions} manifests present (memory point)"
    ));
    let mut out = Held {
        sessions,
        start_to_done_s: None,
        done: 0,
        elapsed_s: 0.0,
        rss_kb: None,
        pss_kb: None,
        keeper_pss_kb: None,
    };
    let mut last_report = Instant::now();
    while t0.elapsed() < limit {
        check(ctrl)?;
        let (total, done) = progress(&dir);
        out.done = done;
        if total == sessions as u64 && done == total {
            out.start_to_done_s = Some(t0.elapsed().as_secs_f64());
            break;
        }
        if last_report.elapsed() > Duration::from_secs(30) {
            log(&format!(
                "scale: {done}/{total} of {sessions} finished so far"
            ));
            last_report = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    out.elapsed_s = t0.elapsed().as_secs_f64();
    out.rss_kb = procfs::rss_kb(ctrl);
    out.pss_kb = procfs::pss_kb(ctrl);
    out.keeper_pss_kb = procfs::children(ctrl)
        .first()
        .and_then(|k| procfs::pss_kb(*k));
    restart(ctrl);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(out)
}
