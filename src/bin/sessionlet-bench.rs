//! `sessionlet-bench`: how fast and how cheap sessionlet is, side by side
//! with the raw fork+exec floor, supervisord, runit and s6, in one run.
//!
//! ```text
//! cargo run --release --bin sessionlet-bench -- [--quick] [--out bench/results.json]
//! ```
//!
//! Workloads (issue 8): manifest to running, crash to replacement, cold
//! start of 100 and 1000 sessions, footprint and idle CPU at 1000 sessions,
//! status churn, and reconcile passes over 10,000 manifests. Peers are
//! measured in the same run, alternating with sessionlet; a peer that is not
//! installed is skipped and said so. Every process the benchmark starts is
//! killed by pid at the end and its temporary folder removed.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use serde_json::{json, Value};

#[path = "sessionlet_bench/peers.rs"]
mod peers;
#[path = "sessionlet_bench/procfs.rs"]
mod procfs;
#[path = "sessionlet_bench/scale.rs"]
mod scale;
#[path = "sessionlet_bench/stats.rs"]
mod stats;

use peers::{Peer, Raw, Runit, Sessionlet, Supervisord, S6};
use procfs::Tracker;
use stats::{Figure, Show};

/// Benchmark sessionlet against the raw spawn floor, supervisord and runit.
#[derive(Debug, Parser)]
#[command(name = "sessionlet-bench")]
struct Args {
    /// A shorter run (about 3 minutes): fewer samples, shorter windows.
    #[arg(long)]
    quick: bool,
    /// Where to write the JSON (default: bench/results.json, or
    /// bench/results-quick.json with --quick).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Where temporary folders go (default: the system temporary folder).
    /// Status writes fsync, so the file system matters.
    #[arg(long)]
    workdir: Option<PathBuf>,
    /// The sessionlet binary (default: `sessionlet` next to this binary,
    /// built first with cargo when missing or older).
    #[arg(long)]
    sessionlet: Option<PathBuf>,
    /// Only these workloads (comma-separated): drop, crash, cold, footprint, scale.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Only these peers besides sessionlet (comma-separated): raw, supervisord, runit, s6.
    #[arg(long, value_delimiter = ',')]
    peers: Option<Vec<String>>,
    /// Manifest drops and crashes per peer (default 60; --quick 20).
    #[arg(long)]
    drops: Option<usize>,
    /// Drops for runit, whose 5-second directory scan makes each one slow
    /// (default 12; --quick 3).
    #[arg(long)]
    runit_drops: Option<usize>,
    /// Manifests of the scale workload (default 10000; --quick 2000).
    #[arg(long)]
    scale_sessions: Option<usize>,
    /// Skip the scale workload's start with every manifest already present
    /// (run by default except with --quick).
    #[arg(long)]
    no_scale_at_once: bool,
    /// An extra argument for every `sessionlet run` (repeat it), e.g.
    /// `--sessionlet-arg=--memory-limits --sessionlet-arg=sampled`.
    #[arg(long = "sessionlet-arg", allow_hyphen_values = true)]
    sessionlet_args: Vec<String>,
    /// An older sessionlet build to measure side by side, as the peer
    /// `baseline` (alternated with the others in the same run): how a
    /// change costs, as a ratio, on a machine that may be busy.
    #[arg(long)]
    baseline: Option<PathBuf>,
    /// Also measure holding this many manifests of sessions that exit at
    /// once (the controller's time to finish them all and its memory then);
    /// the full run's point is 100000 (`--held 100000`, about 15 minutes).
    #[arg(long)]
    held: Option<usize>,
    /// How long the held point waits for every session to finish before
    /// it reads the memory all the same (and says how many had), seconds.
    #[arg(long, default_value_t = 1800)]
    held_limit: u64,
    /// Idle window for CPU and status churn, seconds (default 30; --quick 10).
    #[arg(long)]
    idle_seconds: Option<u64>,
}

/// Run sizes.
struct Plan {
    drops: usize,
    runit_drops: usize,
    reps_100: usize,
    reps_1000: usize,
    idle: Duration,
    scale_idle: Duration,
    scale_events: usize,
}

fn log(start: Instant, msg: &str) {
    eprintln!("[{:>6.1}s] {msg}", start.elapsed().as_secs_f64());
}

fn check_interrupt() -> Result<()> {
    if procfs::interrupted() {
        bail!("interrupted");
    }
    Ok(())
}

/// Unique session tags: each session's argv is `sleep TAG`.
struct Tags(u64);

impl Tags {
    fn take(&mut self, n: usize) -> Vec<u64> {
        let v: Vec<u64> = (self.0..self.0 + n as u64).collect();
        self.0 += n as u64;
        v
    }
    fn one(&mut self) -> u64 {
        self.take(1)[0]
    }
}

struct Bench {
    args: Args,
    plan: Plan,
    root: PathBuf,
    started: Instant,
    peers: Vec<Box<dyn Peer>>,
    skipped: Vec<(String, String)>,
    tags: Tags,
    figures: Vec<Figure>,
    peer_info: serde_json::Map<String, Value>,
    sessionlet_bin: PathBuf,
    notes: Vec<String>,
}

/// Polls until `tag` runs (as a pid other than `old`) below the peer's
/// session parents, or below `parents` when given. Returns the detection time.
fn wait_tag(
    peer: &mut dyn Peer,
    tr: &mut Tracker,
    tag: u64,
    old: Option<u32>,
    parents: Option<&[u32]>,
    limit: Duration,
) -> Result<Option<Instant>> {
    let start = Instant::now();
    let mut polls = 0u64;
    loop {
        let ps = match parents {
            Some(p) => p.to_vec(),
            None => peer.session_parents(tr),
        };
        tr.scan(&ps);
        if tr
            .tag_of
            .iter()
            .any(|(pid, t)| *t == tag && Some(*pid) != old)
        {
            return Ok(Some(Instant::now()));
        }
        polls += 1;
        if polls.is_multiple_of(512) {
            check_interrupt()?;
            if !peer.healthy() {
                bail!("{} died", peer.name());
            }
        }
        if start.elapsed() > limit {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_micros(50));
    }
}

/// Polls until `n` sessions run; the poll interval adapts to the poll's own
/// cost so the benchmark takes at most a third of a core from the peer.
fn wait_count(
    peer: &mut dyn Peer,
    tr: &mut Tracker,
    n: usize,
    limit: Duration,
) -> Result<Option<Instant>> {
    Ok(wait_count_first(peer, tr, n, limit)?.0)
}

/// Like [`wait_count`], also returning when the first session ran.
fn wait_count_first(
    peer: &mut dyn Peer,
    tr: &mut Tracker,
    n: usize,
    limit: Duration,
) -> Result<(Option<Instant>, Option<Instant>)> {
    let start = Instant::now();
    let mut first = None;
    loop {
        let p0 = Instant::now();
        let ps = peer.session_parents(tr);
        tr.scan(&ps);
        if first.is_none() && tr.count() > 0 {
            first = Some(Instant::now());
        }
        if tr.count() >= n {
            return Ok((Some(Instant::now()), first));
        }
        check_interrupt()?;
        if start.elapsed() > limit {
            return Ok((None, first));
        }
        if start.elapsed() > Duration::from_millis(200) && !peer.healthy() {
            bail!("{} died", peer.name());
        }
        let cost = p0.elapsed();
        std::thread::sleep((cost * 2).max(Duration::from_micros(500)));
    }
}

/// Total CPU of the peer's own processes, ns.
fn peer_cpu(peer: &dyn Peer) -> u64 {
    peer.supervisor_pids()
        .iter()
        .filter_map(|(_, p)| procfs::cpu_ns(*p))
        .sum()
}

/// Waits until the peer's processes used under `max_cpu` of CPU during
/// `quiet` (status writes done, spawns settled), at most `limit`.
fn wait_quiet(
    peer: &dyn Peer,
    quiet: Duration,
    max_cpu: Duration,
    limit: Duration,
) -> Result<bool> {
    let start = Instant::now();
    let mut since = Instant::now();
    let mut base = peer_cpu(peer);
    loop {
        check_interrupt()?;
        std::thread::sleep(quiet / 5);
        let now = peer_cpu(peer);
        if now.saturating_sub(base) > max_cpu.as_nanos() as u64 {
            base = now;
            since = Instant::now();
        } else if since.elapsed() >= quiet {
            return Ok(true);
        }
        if start.elapsed() > limit {
            return Ok(false);
        }
    }
}

fn stop_all(peers: &mut [Box<dyn Peer>]) {
    procfs::kill_all_descendants();
    for p in peers.iter_mut() {
        p.reset();
    }
}

impl Bench {
    fn log(&self, msg: &str) {
        log(self.started, msg);
    }

    fn wants(&self, w: &str) -> bool {
        self.args.only.is_empty() || self.args.only.iter().any(|o| o == w)
    }

    fn peer_names(&self) -> Vec<String> {
        self.peers.iter().map(|p| p.name().to_string()).collect()
    }

    /// Alternation: round `r` starts with a different peer each time.
    fn order(&self, r: usize) -> Vec<usize> {
        let n = self.peers.len();
        (0..n).map(|i| (i + r) % n).collect()
    }

    fn fresh_dir(&self, parts: &[&str]) -> Result<PathBuf> {
        let mut d = self.root.clone();
        for p in parts {
            d.push(p);
        }
        if d.exists() {
            std::fs::remove_dir_all(&d)?;
        }
        std::fs::create_dir_all(&d)?;
        Ok(d)
    }

    fn mark_skipped(&self, f: &mut Figure) {
        for (peer, why) in &self.skipped {
            f.skip(peer, why);
        }
    }

    /// Workloads 1 and 2 on one setup: every peer supervising 100 sessions.
    fn latency(&mut self) -> Result<()> {
        let do_drop = self.wants("drop");
        let do_crash = self.wants("crash");
        if !do_drop && !do_crash {
            return Ok(());
        }
        let n = 100;
        let mut trackers: Vec<Tracker> = Vec::new();
        let mut originals: Vec<Vec<u64>> = Vec::new();
        for i in 0..self.peers.len() {
            let tags = self.tags.take(n);
            let dir = self.fresh_dir(&["latency", self.peers[i].name()])?;
            self.peers[i].set_metrics_port(scale::free_port());
            self.peers[i].prepare(&dir, &tags)?;
            self.peers[i].start()?;
            originals.push(tags);
            trackers.push(Tracker::default());
        }
        for (peer, tracker) in self.peers.iter_mut().zip(trackers.iter_mut()) {
            let ok = wait_count(peer.as_mut(), tracker, n, Duration::from_secs(120))?;
            if ok.is_none() {
                bail!("{}: 100 sessions not running after 120 s", peer.name());
            }
        }
        for p in &self.peers {
            wait_quiet(
                p.as_ref(),
                Duration::from_millis(300),
                Duration::from_millis(3),
                Duration::from_secs(30),
            )?;
        }
        // runsv delays a restart by a second when the service ran less than one.
        std::thread::sleep(Duration::from_millis(1200));
        self.log(&format!(
            "latency: {} peers each supervising {n} sessions",
            self.peers.len()
        ));

        let names = self.peer_names();
        let sidx = names.iter().position(|n| n == "sessionlet");
        let scrape = |peers: &Vec<Box<dyn Peer>>| {
            sidx.and_then(|i| peers[i].metrics_port())
                .and_then(scale::scrape_all)
        };
        // Mean spawn and pass times (the controller's own histograms) between two scrapes.
        let breakdown =
            |a: Option<std::collections::HashMap<String, f64>>,
             b: Option<std::collections::HashMap<String, f64>>| {
                let (Some(a), Some(b)) = (a, b) else {
                    return Value::Null;
                };
                let mean = |k: &str| {
                    let s = b.get(&format!("{k}_sum"))? - a.get(&format!("{k}_sum"))?;
                    let c = b.get(&format!("{k}_count"))? - a.get(&format!("{k}_count"))?;
                    (c > 0.0).then(|| json!({"meanMs": s / c * 1e3, "count": c}))
                };
                json!({
                    "spawn": mean("sessionlet_spawn_duration_seconds"),
                    "reconcilePass": mean("sessionlet_reconcile_duration_seconds"),
                })
            };
        let m0 = scrape(&self.peers);
        if do_drop {
            let drops = self.plan.drops;
            let runit_drops = self.plan.runit_drops.min(drops).max(1);
            let stride = drops.div_ceil(runit_drops);
            let mut samples: Vec<Vec<f64>> = vec![Vec::new(); self.peers.len()];
            let mut timeouts = vec![0usize; self.peers.len()];
            for round in 0..drops {
                for i in self.order(round) {
                    if names[i] == "runit" && round % stride != 0 {
                        continue;
                    }
                    let tag = self.tags.one();
                    let peer = self.peers[i].as_mut();
                    peer.stage(tag)?;
                    let t0 = Instant::now();
                    peer.commit()?;
                    let limit = Duration::from_secs(if names[i] == "runit" { 30 } else { 20 });
                    let got = wait_tag(peer, &mut trackers[i], tag, None, None, limit)?;
                    match got {
                        Some(t) => samples[i].push((t - t0).as_secs_f64() * 1e3),
                        None => timeouts[i] += 1,
                    }
                    peer.after_commit()?;
                    wait_quiet(
                        &*peer,
                        Duration::from_millis(40),
                        Duration::from_micros(500),
                        Duration::from_secs(3),
                    )?;
                }
                if (round + 1) % 10 == 0 {
                    self.log(&format!("drop: {}/{drops} rounds", round + 1));
                }
            }
            let mut p50 = Figure::new(
                "manifest_to_running_p50",
                "Manifest → running, p50",
                "ms",
                Show::P50,
            )
            .goal(3.0, "≤ 3 ms");
            let mut p99 = Figure::new(
                "manifest_to_running_p99",
                "Manifest → running, p99",
                "ms",
                Show::P99,
            )
            .goal(20.0, "≤ 20 ms");
            for (i, name) in names.iter().enumerate() {
                p50.set(name, samples[i].clone(), timeouts[i]);
                p99.set(name, samples[i].clone(), timeouts[i]);
            }
            let m1 = scrape(&self.peers);
            p50.detail = json!({
                "sessionsAlready": n,
                "note": "from the rename into the watched place until the new pid shows `sleep TAG` in /proc (exec done); supervisord includes running `supervisorctl update`; raw-spawn is fork+exec from the benchmark",
                "sessionletOwnTimings": breakdown(m0.clone(), m1),
            });
            self.mark_skipped(&mut p50);
            self.mark_skipped(&mut p99);
            self.figures.push(p50);
            self.figures.push(p99);
        }

        if do_crash {
            let c0 = scrape(&self.peers);
            let kills = self.plan.drops;
            let mut samples: Vec<Vec<f64>> = vec![Vec::new(); self.peers.len()];
            let mut timeouts = vec![0usize; self.peers.len()];
            for round in 0..kills {
                for i in self.order(round) {
                    let tag = originals[i][round % n];
                    let peer = self.peers[i].as_mut();
                    let ps = peer.session_parents(&trackers[i]);
                    trackers[i].scan(&ps);
                    // runit: the victim's runsv is the parent to watch.
                    let Some(victim) = trackers[i]
                        .tag_of
                        .iter()
                        .find(|(p, t)| **t == tag && procfs::alive(**p))
                        .map(|(p, _)| *p)
                    else {
                        timeouts[i] += 1;
                        continue;
                    };
                    let Some(parent) = procfs::ppid(victim) else {
                        continue;
                    };
                    let t0 = Instant::now();
                    procfs::kill9(victim);
                    peer.on_killed(victim, tag)?;
                    let got = wait_tag(
                        peer,
                        &mut trackers[i],
                        tag,
                        Some(victim),
                        Some(&[parent]),
                        Duration::from_secs(20),
                    )?;
                    match got {
                        Some(t) => samples[i].push((t - t0).as_secs_f64() * 1e3),
                        None => timeouts[i] += 1,
                    }
                    wait_quiet(
                        &*peer,
                        Duration::from_millis(40),
                        Duration::from_micros(500),
                        Duration::from_secs(3),
                    )?;
                }
                if (round + 1) % 10 == 0 {
                    self.log(&format!("crash: {}/{kills} rounds", round + 1));
                }
            }
            let mut p50 = Figure::new(
                "crash_to_replacement_p50",
                "Crash → replacement, p50",
                "ms",
                Show::P50,
            )
            .goal(2.0, "≤ 2 ms");
            let mut p99 = Figure::new(
                "crash_to_replacement_p99",
                "Crash → replacement, p99",
                "ms",
                Show::P99,
            );
            for (i, name) in names.iter().enumerate() {
                p50.set(name, samples[i].clone(), timeouts[i]);
                p99.set(name, samples[i].clone(), timeouts[i]);
            }
            let c1 = scrape(&self.peers);
            p50.detail = json!({
                "note": "SIGKILL of a session's pid until a new pid shows the same `sleep TAG`; sessionlet: restartPolicy Always, backoff.initialDelay 0s; supervisord: autorestart=true, startsecs=0; runit: runsv defaults; raw-spawn: blocking waitpid then fork+exec",
                "sessionletOwnTimings": breakdown(c0, c1),
            });
            self.mark_skipped(&mut p50);
            self.mark_skipped(&mut p99);
            self.figures.push(p50);
            self.figures.push(p99);
        }
        stop_all(&mut self.peers);
        for p in self.peers.iter_mut() {
            p.set_metrics_port(None);
        }
        let _ = std::fs::remove_dir_all(self.root.join("latency"));
        Ok(())
    }

    /// Workloads 3, 4 and 5: cold starts; at the last start of 1000 the
    /// footprint, idle CPU and status churn.
    fn cold(&mut self) -> Result<()> {
        let do_cold = self.wants("cold");
        let do_foot = self.wants("footprint");
        if !do_cold && !do_foot {
            return Ok(());
        }
        let names = self.peer_names();
        let mut cold_figs = Vec::new();
        let mut foot: Vec<Option<Value>> = vec![None; self.peers.len()];
        for &n in &[100usize, 1000] {
            let reps = if n == 100 {
                if do_cold {
                    self.plan.reps_100
                } else {
                    0
                }
            } else if do_cold {
                self.plan.reps_1000
            } else {
                1
            };
            let mut samples: Vec<Vec<f64>> = vec![Vec::new(); self.peers.len()];
            let mut timeouts = vec![0usize; self.peers.len()];
            let mut firsts: Vec<Vec<f64>> = vec![Vec::new(); self.peers.len()];
            for rep in 0..reps {
                for i in self.order(rep) {
                    if n == 1000 && timeouts[i] > 0 {
                        // A peer that could not start 1000 within the limit
                        // once is not made to time out again (5 minutes each).
                        self.log(&format!(
                            "cold start {n}: {} rep {}: skipped (timed out before)",
                            names[i],
                            rep + 1
                        ));
                        continue;
                    }
                    let tags = self.tags.take(n);
                    let dir = self.fresh_dir(&["cold", names[i].as_str()])?;
                    let mut tr = Tracker::default();
                    let peer = self.peers[i].as_mut();
                    peer.prepare(&dir, &tags)?;
                    let t0 = Instant::now();
                    peer.start()?;
                    let (got, first) =
                        wait_count_first(peer, &mut tr, n, Duration::from_secs(300))?;
                    match got {
                        Some(t) => samples[i].push((t - t0).as_secs_f64()),
                        None => timeouts[i] += 1,
                    }
                    if let Some(f) = first {
                        firsts[i].push((f - t0).as_secs_f64());
                    }
                    self.log(&format!(
                        "cold start {n}: {} rep {}: {}",
                        names[i],
                        rep + 1,
                        got.map(|t| format!("{:.3} s", (t - t0).as_secs_f64()))
                            .unwrap_or_else(|| "timed out".into())
                    ));
                    if n == 1000 && rep + 1 == reps && do_foot && got.is_some() {
                        // sessionlet: let the first usage samples and the first
                        // resync (10 s) pass, so the window sees the steady state.
                        let warm = if names[i] == "sessionlet" { 11 } else { 1 };
                        foot[i] = Some(self.footprint(i, Duration::from_secs(warm))?);
                    }
                    stop_all(&mut self.peers);
                    let _ = std::fs::remove_dir_all(&dir);
                }
            }
            if do_cold && reps > 0 {
                let mut f = Figure::new(
                    &format!("cold_start_{n}"),
                    &format!("Cold start, {n} sessions (median of {reps})"),
                    "s",
                    Show::Median,
                );
                if n == 1000 {
                    f = f.goal(1.0, "≤ 1.0 s");
                }
                for (i, name) in names.iter().enumerate() {
                    f.set(name, samples[i].clone(), timeouts[i]);
                }
                let first: serde_json::Map<String, Value> = names
                    .iter()
                    .zip(&firsts)
                    .map(|(n, v)| (n.clone(), json!(v)))
                    .collect();
                f.detail = json!({
                    "note": "from starting the supervisor (manifests already present) until all N pids show their `sleep TAG`",
                    "firstRunningSeconds": first,
                });
                self.mark_skipped(&mut f);
                cold_figs.push(f);
            }
        }
        self.figures.extend(cold_figs);
        if do_foot {
            // sessionlet once more, usage sampling off: the 0.05% goal.
            let mut off = None;
            if let Some(i) = names.iter().position(|n| n == "sessionlet") {
                let tags = self.tags.take(1000);
                let dir = self.fresh_dir(&["cold", "sessionlet-nousage"])?;
                let mut tr = Tracker::default();
                self.peers[i].set_extra_args(&["--usage-interval", "0"]);
                let peer = self.peers[i].as_mut();
                peer.prepare(&dir, &tags)?;
                peer.start()?;
                let got = wait_count(peer, &mut tr, 1000, Duration::from_secs(300))?;
                self.log("footprint: sessionlet with --usage-interval 0");
                if got.is_some() {
                    off = Some(self.footprint(i, Duration::from_secs(2))?);
                }
                self.peers[i].set_extra_args(&[]);
                stop_all(&mut self.peers);
                let _ = std::fs::remove_dir_all(&dir);
            }
            self.footprint_figures(&names, &foot, off);
        }
        Ok(())
    }

    /// Memory, idle CPU and status writes of peer `i`, running 1000 sessions.
    fn footprint(&mut self, i: usize, warm: Duration) -> Result<Value> {
        let idle = self.plan.idle;
        let started = self.started;
        let peer = self.peers[i].as_mut();
        if peer.supervisor_pids().is_empty() {
            return Ok(json!({"none": true}));
        }
        // Let start-up work (status writes, first samples) finish first.
        let w0 = Instant::now();
        while w0.elapsed() < warm {
            check_interrupt()?;
            std::thread::sleep(Duration::from_millis(100));
        }
        // Status writes block in fsync without using CPU: wait until none
        // happened for a second, then until the CPU is quiet.
        if let Some(d) = peer.status_dir() {
            let mut w = procfs::DirWatch::new(&d)?;
            let (t0, mut last) = (Instant::now(), Instant::now());
            while last.elapsed() < Duration::from_secs(1) && t0.elapsed() < Duration::from_secs(120)
            {
                check_interrupt()?;
                std::thread::sleep(Duration::from_millis(50));
                if !w.drain().is_empty() {
                    last = Instant::now();
                }
            }
        }
        let settled = wait_quiet(
            &*peer,
            Duration::from_millis(500),
            Duration::from_millis(5),
            Duration::from_secs(60),
        )?;
        let pids = peer.supervisor_pids();
        let mut procs = Vec::new();
        let (mut pss, mut rss) = (0u64, 0u64);
        let (mut main_rss, mut main_pss) = (None, None);
        for (role, p) in &pids {
            let r = procfs::rss_kb(*p).unwrap_or(0);
            let s = procfs::pss_kb(*p).unwrap_or(0);
            pss += s;
            rss += r;
            if main_rss.is_none() {
                main_rss = Some(r);
                main_pss = Some(s);
            }
            procs.push(json!({"role": role, "pid": p, "rssKiB": r, "pssKiB": s}));
        }
        log(
            started,
            &format!(
                "footprint {}: PSS {:.1} MB over {} processes; idle window {:?}",
                peer.name(),
                pss as f64 * 1024.0 / 1e6,
                pids.len(),
                idle
            ),
        );
        let mut watch = match peer.status_dir() {
            Some(d) => Some(procfs::DirWatch::new(&d)?),
            None => None,
        };
        let mut control_watch = match peer.status_dir() {
            Some(d) => procfs::DirWatch::new(&d.join(".sessionlet")).ok(),
            None => None,
        };
        if let Some(w) = watch.as_mut() {
            w.drain();
        }
        let per_proc0: Vec<u64> = pids
            .iter()
            .map(|(_, p)| procfs::cpu_ns(*p).unwrap_or(0))
            .collect();
        let t0 = Instant::now();
        let mut writes = 0usize;
        let mut control_writes = 0usize;
        while t0.elapsed() < idle {
            check_interrupt()?;
            std::thread::sleep(Duration::from_millis(100));
            if let Some(w) = watch.as_mut() {
                writes += w
                    .drain()
                    .iter()
                    .filter(|n| n.ends_with(".status.yaml") && !n.starts_with('.'))
                    .count();
            }
            if let Some(w) = control_watch.as_mut() {
                control_writes += w.drain().iter().filter(|n| !n.starts_with('.')).count();
            }
        }
        let secs = t0.elapsed().as_secs_f64();
        let per_proc1: Vec<u64> = pids
            .iter()
            .map(|(_, p)| procfs::cpu_ns(*p).unwrap_or(0))
            .collect();
        let cpu_ns: u64 = per_proc1
            .iter()
            .zip(&per_proc0)
            .map(|(a, b)| a.saturating_sub(*b))
            .sum();
        let main_cpu_ns = per_proc1
            .first()
            .copied()
            .unwrap_or(0)
            .saturating_sub(per_proc0.first().copied().unwrap_or(0));
        let cpu_pct = cpu_ns as f64 / (secs * 1e9) * 100.0;
        Ok(json!({
            "settledBeforeMeasuring": settled,
            "processes": pids.len(),
            "pssKiB": pss,
            "rssKiB": rss,
            "mainRssKiB": main_rss,
            "mainPssKiB": main_pss,
            "perProcess": if procs.len() <= 4 { Value::Array(procs) } else { json!(format!("{} processes", procs.len())) },
            "idleSeconds": secs,
            "idleCpuPercent": cpu_pct,
            "mainIdleCpuPercent": main_cpu_ns as f64 / (secs * 1e9) * 100.0,
            "statusWrites": watch.as_ref().map(|_| writes),
            "controllerStatusWrites": control_watch.as_ref().map(|_| control_writes),
            "statusWritesPerSessionPerMinute": watch.as_ref().map(|_| writes as f64 / 1000.0 / (secs / 60.0)),
        }))
    }

    fn footprint_figures(&mut self, names: &[String], foot: &[Option<Value>], off: Option<Value>) {
        let mb = |kib: f64| kib * 1024.0 / 1e6;
        let mut pss = Figure::new(
            "pss_1000",
            "PSS at 1000 sessions: controller + helpers (supervisor processes summed)",
            "MB",
            Show::Single,
        )
        .goal(25.0, "≤ 25 MB");
        let mut rss = Figure::new(
            "main_rss_1000",
            "RSS of the controller (main supervisor process) at 1000",
            "MB",
            Show::Single,
        );
        let mut cpu = Figure::new(
            "idle_cpu_1000",
            &format!(
                "Idle CPU at 1000 sessions, % of one core ({} s)",
                self.plan.idle.as_secs()
            ),
            "%",
            Show::Single,
        )
        .goal(0.3, "≤ 0.3% (default settings)");
        let mut churn = Figure::new(
            "status_churn",
            "Status file writes per session per idle minute (default settings)",
            "",
            Show::Single,
        )
        .goal(12.0, "≤ 1 per usage interval (5 s: 12)");
        let mut cpu_off = Figure::new(
            "idle_cpu_1000_sampling_off",
            &format!(
                "Idle CPU at 1000 sessions, usage sampling off, % of one core ({} s)",
                self.plan.idle.as_secs()
            ),
            "%",
            Show::Single,
        )
        .goal(0.05, "≤ 0.05%");
        let mut churn_off = Figure::new(
            "status_churn_sampling_off",
            "Status file writes per session per idle minute, usage sampling off",
            "",
            Show::Single,
        )
        .goal(0.0, "0");
        let mut detail = serde_json::Map::new();
        for (i, name) in names.iter().enumerate() {
            match &foot[i] {
                Some(v) if v.get("none").is_some() => {
                    for f in [&mut pss, &mut rss, &mut cpu, &mut churn] {
                        f.skip(name, "n/a (no supervisor)");
                    }
                }
                Some(v) => {
                    pss.set(name, vec![mb(v["pssKiB"].as_f64().unwrap_or(f64::NAN))], 0);
                    rss.set(
                        name,
                        vec![mb(v["mainRssKiB"].as_f64().unwrap_or(f64::NAN))],
                        0,
                    );
                    cpu.set(
                        name,
                        vec![v["idleCpuPercent"].as_f64().unwrap_or(f64::NAN)],
                        0,
                    );
                    match v["statusWritesPerSessionPerMinute"].as_f64() {
                        Some(c) => churn.set(name, vec![c], 0),
                        None => churn.skip(name, "n/a (no status files)"),
                    }
                    detail.insert(name.clone(), v.clone());
                }
                None => {
                    for f in [&mut pss, &mut rss, &mut cpu, &mut churn] {
                        f.skip(name, "not measured");
                    }
                }
            }
        }
        for (i, name) in names.iter().enumerate() {
            if name == "sessionlet" {
                match &off {
                    Some(v) => {
                        cpu_off.set(
                            name,
                            vec![v["idleCpuPercent"].as_f64().unwrap_or(f64::NAN)],
                            0,
                        );
                        match v["statusWritesPerSessionPerMinute"].as_f64() {
                            Some(c) => churn_off.set(name, vec![c], 0),
                            None => churn_off.skip(name, "not measured"),
                        }
                        detail.insert("sessionlet (--usage-interval 0)".into(), v.clone());
                    }
                    None => {
                        cpu_off.skip(name, "not measured");
                        churn_off.skip(name, "not measured");
                    }
                }
            } else {
                // The peers have no usage sampling: the same window applies.
                match cpu.results.get(name).cloned() {
                    Some(o) => {
                        cpu_off.results.insert(name.clone(), o);
                    }
                    None => cpu_off.skip(name, "not measured"),
                }
                match churn.results.get(name).cloned() {
                    Some(o) => {
                        churn_off.results.insert(name.clone(), o);
                    }
                    None => churn_off.skip(name, "n/a"),
                }
                let _ = i;
            }
        }
        pss.detail = Value::Object(detail);
        for f in [
            &mut pss,
            &mut rss,
            &mut cpu,
            &mut cpu_off,
            &mut churn,
            &mut churn_off,
        ] {
            self.mark_skipped(f);
        }
        self.figures
            .extend([pss, rss, cpu, cpu_off, churn, churn_off]);
    }

    /// Workload 6: sessionlet alone (the peers are not reconcilers of a directory).
    fn scale(&mut self) -> Result<()> {
        if self.args.held.is_some() {
            let root = self.fresh_dir(&["held"])?;
            let started = self.started;
            if let Some(n) = self.args.held {
                let held = scale::held(
                    &self.sessionlet_bin,
                    &root,
                    n,
                    Duration::from_secs(self.args.held_limit),
                    &self.args.sessionlet_args,
                    &|m| log(started, m),
                )?;
                // Said plainly when not every session finished in time:
                // the memory is then read with sessions still to run.
                let when = match held.start_to_done_s {
                    Some(_) => "all Completed".to_string(),
                    None => format!(
                        "NOT all finished: {} of {n} after {:.0} s",
                        held.done, held.elapsed_s
                    ),
                };
                let mut t = Figure::new(
                    "held_manifests_start_to_done",
                    &format!("{n} manifests present at start: controller start → all Completed"),
                    "s",
                    Show::Single,
                );
                match held.start_to_done_s {
                    Some(s) => t.set("sessionlet", vec![s], 0),
                    None => t.set("sessionlet", Vec::new(), 1),
                }
                self.figures.push(t);
                let mut f = Figure::new(
                    "held_manifests_pss",
                    &format!("{n} manifests held ({when}): controller PSS"),
                    "MB",
                    Show::Single,
                )
                .goal(150.0, "≤ 150 MB");
                match held.pss_kb {
                    Some(kb) => f.set("sessionlet", vec![kb as f64 / 1024.0], 0),
                    None => f.skip("sessionlet", "not measured"),
                }
                f.detail = json!({
                    "sessions": held.sessions,
                    "startToAllCompletedSeconds": held.start_to_done_s,
                    "finishedWhenRead": held.done,
                    "secondsWhenRead": held.elapsed_s,
                    "controllerRssKiB": held.rss_kb,
                    "controllerPssKiB": held.pss_kb,
                    "keeperPssKiB": held.keeper_pss_kb,
                });
                self.figures.push(f);
            }
        }
        if !self.wants("scale") {
            return Ok(());
        }
        let root = self.fresh_dir(&["scale"])?;
        let quick = self.args.quick;
        let cfg = scale::Config {
            sessions: self
                .args
                .scale_sessions
                .unwrap_or(if quick { 2000 } else { 10_000 }),
            at_once: !quick && !self.args.no_scale_at_once,
            batch: 100,
            extra_args: self.args.sessionlet_args.clone(),
            resync: Duration::from_secs(2),
            idle_window: self.plan.scale_idle,
            events: self.plan.scale_events,
            start_limit: Duration::from_secs(if quick { 240 } else { 300 }),
        };
        let started = self.started;
        let out = scale::run(&self.sessionlet_bin, &root, &cfg, &|m| log(started, m));
        stop_all(&mut self.peers);
        let _ = std::fs::remove_dir_all(&root);
        let out = out?;
        let n = cfg.sessions;
        let others: Vec<String> = self
            .peer_names()
            .into_iter()
            .chain(self.skipped.iter().map(|s| s.0.clone()))
            .filter(|p| p != "sessionlet")
            .collect();
        let mut figs = Vec::new();
        let goals_apply = n == 10_000;
        let mut add =
            |id: &str, title: String, unit: &str, samples: &[f64], goal: Option<(f64, &str)>| {
                let mut f = Figure::new(id, &title, unit, Show::Median);
                if let Some((g, t)) = goal.filter(|_| goals_apply || id == "scale_exits_lost") {
                    f = f.goal(g, t);
                }
                if samples.is_empty() {
                    f.skip("sessionlet", "not measured");
                } else {
                    f.set("sessionlet", samples.to_vec(), 0);
                }
                for p in &others {
                    f.skip(p, "n/a");
                }
                figs.push(f);
            };
        add(
            "scale_full_pass_cpu",
            format!("{n} manifests: idle resync pass (full rescan + housekeeping), controller CPU"),
            "ms",
            &out.resync_cpu_ms,
            Some((20.0, "≤ 20 ms")),
        );
        if let Some((ms, _passes)) = out.metrics_full_mean_ms {
            add(
                "scale_full_pass_metrics",
                format!("{n} manifests: idle resync pass, controller's own timing (metrics histogram mean)"),
                "ms",
                &[ms],
                Some((20.0, "≤ 20 ms")),
            );
        }
        if !out.reported_full_ms.is_empty() {
            add(
                "scale_full_pass_reported",
                format!("{n} manifests: full pass, controller's lastReconcileMillis"),
                "ms",
                &out.reported_full_ms,
                Some((20.0, "≤ 20 ms")),
            );
        }
        if !out.log_full_ms.is_empty() {
            add(
                "scale_full_pass_log",
                format!("{n} manifests: full pass, controller's debug log"),
                "ms",
                &out.log_full_ms,
                Some((20.0, "≤ 20 ms")),
            );
        }
        add(
            "scale_changed_cpu",
            format!("{n} manifests: one changed file (its command: the session runs again), controller CPU (all passes it causes)"),
            "ms",
            &out.changed_cpu_ms,
            Some((2.0, "≤ 2 ms")),
        );
        add(
            "scale_changed_latency",
            format!("{n} manifests: one changed file, rename → its status written"),
            "ms",
            &out.changed_latency_ms,
            None,
        );
        add(
            "scale_added_cpu",
            format!("{n} manifests: one added file, controller CPU"),
            "ms",
            &out.added_cpu_ms,
            Some((2.0, "≤ 2 ms")),
        );
        add(
            "scale_inplace_cpu",
            format!("{n} manifests: one file edited in place (a label; no run), controller CPU"),
            "ms",
            &out.inplace_cpu_ms,
            None,
        );
        if !out.metrics_changed_ms.is_empty() {
            add(
                "scale_changed_pass_metrics",
                format!("{n} manifests: passes after one changed file, controller's own timing (mean per pass)"),
                "ms",
                &out.metrics_changed_ms,
                Some((2.0, "≤ 2 ms")),
            );
        }
        if !out.metrics_added_ms.is_empty() {
            add(
                "scale_added_pass_metrics",
                format!("{n} manifests: passes after one added file, controller's own timing (mean per pass)"),
                "ms",
                &out.metrics_added_ms,
                Some((2.0, "≤ 2 ms")),
            );
        }
        if !out.log_changed_ms.is_empty() {
            add(
                "scale_changed_log",
                format!("{n} manifests: pass after one changed file, controller's debug log"),
                "ms",
                &out.log_changed_ms,
                Some((2.0, "≤ 2 ms")),
            );
        }
        if let Some(s) = out.start_to_done_s {
            add(
                "scale_start_to_completed",
                format!("{n} manifests present at start: controller start → all Completed"),
                "s",
                &[s],
                None,
            );
        }
        if let Some((stuck, _)) = out.exits_lost {
            add(
                "scale_exits_lost",
                format!("{n} manifests present at start: sessions left Running after their process exited"),
                "",
                &[stuck as f64],
                Some((0.0, "0")),
            );
        }
        self.notes.extend(out.notes.iter().cloned());
        if let Some(last) = figs.first_mut() {
            last.detail = out.detail();
        }
        self.figures.extend(figs);
        Ok(())
    }
}

/// The sessionlet binary next to this one, built with cargo when missing or stale.
fn find_sessionlet(explicit: Option<PathBuf>) -> Result<PathBuf> {
    if let Some(p) = explicit {
        return Ok(p);
    }
    let me = std::env::current_exe()?;
    let sibling = me.with_file_name("sessionlet");
    let stale = |p: &Path| -> bool {
        let mt = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        match (mt(p), mt(&me)) {
            (Some(a), Some(b)) => a < b,
            _ => true,
        }
    };
    if stale(&sibling) {
        if let (Ok(cargo), Ok(manifest_dir)) =
            (std::env::var("CARGO"), std::env::var("CARGO_MANIFEST_DIR"))
        {
            let release = me
                .parent()
                .and_then(|d| d.file_name())
                .is_some_and(|n| n == "release");
            eprintln!("building the sessionlet binary next to the benchmark ...");
            let mut cmd = std::process::Command::new(cargo);
            cmd.arg("build")
                .arg("--bin")
                .arg("sessionlet")
                .arg("--manifest-path")
                .arg(Path::new(&manifest_dir).join("Cargo.toml"));
            if release {
                cmd.arg("--release");
            }
            let st = cmd.status().context("cargo build --bin sessionlet")?;
            if !st.success() {
                bail!("cargo build --bin sessionlet failed");
            }
        }
    }
    if !sibling.is_file() {
        bail!(
            "{} not found: run `cargo build --release --bins` first, or pass --sessionlet PATH",
            sibling.display()
        );
    }
    Ok(sibling)
}

fn machine() -> Value {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let cpuinfo = read("/proc/cpuinfo");
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map(|s| s.trim().to_string());
    let mem_kb = read("/proc/meminfo")
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| {
            l.split_whitespace()
                .nth(1)
                .and_then(|v| v.parse::<u64>().ok())
        });
    let nproc = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    json!({
        "nproc": nproc,
        "cpuModel": model,
        "kernel": read("/proc/sys/kernel/osrelease").trim(),
        "memTotalMiB": mem_kb.map(|k| k / 1024),
        "loadavgAtStart": read("/proc/loadavg").trim(),
    })
}

fn fs_type(p: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(p.as_os_str().as_bytes()) else {
        return "unknown".into();
    };
    // SAFETY: statfs into a zeroed struct.
    let mut s: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c.as_ptr(), &mut s) } != 0 {
        return "unknown".into();
    }
    match s.f_type as i64 {
        0xEF53 => "ext4".into(),
        0x01021994 => "tmpfs".into(),
        0x58465342 => "xfs".into(),
        0x9123683E => "btrfs".into(),
        0x794c7630 => "overlayfs".into(),
        other => format!("0x{other:x}"),
    }
}

fn run(args: Args, root: PathBuf, started: Instant) -> Result<Value> {
    let load_at_start = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let quick = args.quick;
    let plan = Plan {
        drops: args.drops.unwrap_or(if quick { 20 } else { 60 }),
        runit_drops: args.runit_drops.unwrap_or(if quick { 3 } else { 12 }),
        reps_100: if quick { 3 } else { 5 },
        reps_1000: if quick { 1 } else { 3 },
        idle: Duration::from_secs(args.idle_seconds.unwrap_or(if quick { 10 } else { 30 })),
        scale_idle: Duration::from_secs(if quick { 6 } else { 34 }),
        scale_events: if quick { 2 } else { 8 },
    };
    let bin = find_sessionlet(args.sessionlet.clone())?;
    let version = peers::first_line(&bin, &["--version"]).unwrap_or_default();
    let wanted = |p: &str| args.peers.as_ref().is_none_or(|v| v.iter().any(|x| x == p));
    let mut me = Sessionlet::new(bin.clone());
    me.base_args = args.sessionlet_args.clone();
    me.extra_args = args.sessionlet_args.clone();
    let mut peer_list: Vec<Box<dyn Peer>> = vec![Box::new(me)];
    let mut skipped = Vec::new();
    let mut info = serde_json::Map::new();
    info.insert(
        "sessionlet".into(),
        json!({"path": bin, "version": version}),
    );
    if let Some(old) = &args.baseline {
        let mut base = Sessionlet::new(old.clone());
        base.label = "baseline";
        base.base_args = args.sessionlet_args.clone();
        base.extra_args = args.sessionlet_args.clone();
        let v = peers::first_line(old, &["--version"]).unwrap_or_default();
        info.insert("baseline".into(), json!({"path": old, "version": v}));
        peer_list.push(Box::new(base));
    }
    if wanted("raw") {
        peer_list.push(Box::new(Raw::new()));
        info.insert(
            "raw-spawn".into(),
            json!({"what": "fork+execv of /bin/sleep from the benchmark process"}),
        );
    }
    if wanted("supervisord") {
        match (peers::which("supervisord"), peers::which("supervisorctl")) {
            (Some(d), Some(c)) => {
                let v = peers::first_line(&d, &["--version"]);
                info.insert("supervisord".into(), json!({"path": d, "version": v}));
                peer_list.push(Box::new(Supervisord::new(d, c)));
            }
            _ => {
                skipped.push((
                    "supervisord".to_string(),
                    "skipped: not installed".to_string(),
                ));
                info.insert(
                    "supervisord".into(),
                    json!({"skipped": "not installed (pip install supervisor)"}),
                );
            }
        }
    }
    if wanted("runit") {
        match peers::which("runsvdir") {
            Some(r) => {
                let v = std::process::Command::new("dpkg-query")
                    .args(["-W", "-f", "${Version}", "runit"])
                    .output()
                    .ok()
                    .filter(|o| o.status.success())
                    .map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
                info.insert("runit".into(), json!({"path": r, "version": v}));
                peer_list.push(Box::new(Runit::new(r)));
            }
            None => {
                skipped.push(("runit".to_string(), "skipped: not installed".to_string()));
                info.insert(
                    "runit".into(),
                    json!({"skipped": "not installed (apt-get install runit)"}),
                );
            }
        }
    }
    if wanted("s6") {
        match (peers::which("s6-svscan"), peers::which("s6-svscanctl")) {
            (Some(scan), Some(ctl)) => {
                let v = std::process::Command::new("dpkg-query")
                    .args(["-W", "-f", "${Version}", "s6"])
                    .output()
                    .ok()
                    .filter(|o| o.status.success())
                    .map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
                info.insert("s6".into(), json!({"path": scan, "version": v}));
                peer_list.push(Box::new(S6::new(scan, ctl)));
            }
            _ => {
                skipped.push(("s6".to_string(), "skipped: not installed".to_string()));
                info.insert(
                    "s6".into(),
                    json!({"skipped": "not installed (apt-get install s6)"}),
                );
            }
        }
    }
    for (p, why) in &skipped {
        log(started, &format!("{p}: {why}"));
    }
    let mut bench = Bench {
        plan,
        root: root.clone(),
        started,
        peers: peer_list,
        skipped,
        tags: Tags(100_000_000),
        figures: Vec::new(),
        peer_info: info,
        sessionlet_bin: bin,
        notes: Vec::new(),
        args,
    };
    log(
        started,
        &format!(
            "peers: {}; work folder {} ({})",
            bench.peer_names().join(", "),
            root.display(),
            fs_type(&root)
        ),
    );
    bench.latency()?;
    bench.cold()?;
    bench.scale()?;

    let mut all_peers: Vec<String> = bench.peer_names();
    for (p, _) in &bench.skipped {
        all_peers.push(p.clone());
    }
    let order = [
        "sessionlet",
        "baseline",
        "raw-spawn",
        "supervisord",
        "runit",
        "s6",
    ];
    all_peers.sort_by_key(|p| order.iter().position(|o| o == p).unwrap_or(99));
    let refs: Vec<&str> = all_peers.iter().map(String::as_str).collect();
    let table = stats::markdown(&bench.figures, &refs);
    let mut m = machine();
    m["workdirFs"] = json!(fs_type(&root));
    m["loadavgAtStart"] = json!(load_at_start.trim());
    m["loadavgAtEnd"] = json!(std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .trim());
    Ok(json!({
        "schema": 1,
        "mode": if bench.args.quick { "quick" } else { "full" },
        "command": std::env::args().collect::<Vec<_>>().join(" "),
        "date": chrono::Utc::now().to_rfc3339(),
        "durationSeconds": started.elapsed().as_secs_f64(),
        "machine": m,
        "peers": Value::Object(bench.peer_info.clone()),
        "figures": bench.figures.iter().map(Figure::to_json).collect::<Vec<_>>(),
        "markdown": table,
        "notes": bench.notes,
    }))
}

fn main() -> ExitCode {
    let args = Args::parse();
    procfs::init_process();
    let started = Instant::now();
    let base = args.workdir.clone().unwrap_or_else(std::env::temp_dir);
    let root = base.join(format!("sessionlet-bench-{}", std::process::id()));
    if let Err(e) = std::fs::create_dir_all(&root) {
        eprintln!("sessionlet-bench: cannot create {}: {e}", root.display());
        return ExitCode::from(2);
    }
    let root = std::fs::canonicalize(&root).unwrap_or(root);
    let out = args.out.clone().unwrap_or_else(|| {
        PathBuf::from(if args.quick {
            "bench/results-quick.json"
        } else {
            "bench/results.json"
        })
    });
    let quick = args.quick;
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        run(args, root.clone(), started)
    }));
    // Whatever happened: every process we started, by pid; then the folder.
    procfs::kill_all_descendants();
    let _ = std::fs::remove_dir_all(&root);
    let report = match result {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            eprintln!("sessionlet-bench: error: {e:#}");
            return ExitCode::from(1);
        }
        Err(_) => {
            eprintln!("sessionlet-bench: panicked; processes and temporary files cleaned up");
            return ExitCode::from(101);
        }
    };
    let m = &report["machine"];
    println!(
        "\n## sessionlet benchmark ({})\n\nMachine: {} × {}, Linux {}, {} MiB RAM; work folder on {}; load average at start {}.\n",
        if quick { "quick" } else { "full" },
        m["nproc"],
        m["cpuModel"].as_str().unwrap_or("?"),
        m["kernel"].as_str().unwrap_or("?"),
        m["memTotalMiB"],
        m["workdirFs"].as_str().unwrap_or("?"),
        m["loadavgAtStart"].as_str().unwrap_or("?"),
    );
    println!("{}", report["markdown"].as_str().unwrap_or(""));
    println!("Cells: p50 [p10–p90] for latencies, median [min–max] of repetitions; ratio = sessionlet ÷ peer (below 1: sessionlet is faster or smaller).");
    for n in report["notes"].as_array().into_iter().flatten() {
        println!("\nNote: {}", n.as_str().unwrap_or(""));
    }
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        let _ = std::fs::create_dir_all(dir);
    }
    match serde_json::to_string_pretty(&report)
        .map_err(anyhow::Error::from)
        .and_then(|t| std::fs::write(&out, t + "\n").map_err(anyhow::Error::from))
    {
        Ok(()) => eprintln!("wrote {}", out.display()),
        Err(e) => eprintln!("sessionlet-bench: cannot write {}: {e}", out.display()),
    }
    ExitCode::SUCCESS
}
