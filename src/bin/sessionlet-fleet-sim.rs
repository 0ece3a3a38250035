//! `sessionlet-fleet-sim`: many virtual fleet members in one process against
//! a real three-member etcd cluster on loopback (issue 15's simulation).
//!
//! ```text
//! cargo run --release --features etcd --bin sessionlet-fleet-sim -- \
//!   [--sessions 100000] [--members 10] [--lease-ttl 10] [--kill 1,10] [--out FILE.json]
//! ```
//!
//! Each virtual member is the real coordinator (`fleet::coordinator::start`:
//! membership lease, renewal, placement, claims, fencing) on its own thread
//! and runtime, with no keeper (no `keeper_socket`) and no controller: the
//! manifests are handed to its `Fleet` as a controller would. It measures
//! the time until every session is owned (claim time), the time until every
//! session is owned again after killing members (a killed member's runtime
//! is dropped and its connections close; its lease is left to expire, as a
//! dead node's would), the keys and bytes in etcd, etcd's db size, the bytes
//! per second etcd sends to clients while the fleet is idle, and etcd's CPU.
//! After each phase it checks, from etcd and from the members, that every
//! session is owned by exactly one live member; it exits non-zero if not.
//!
//! Every etcd it starts is killed by pid at exit and its folder removed.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use serde_json::{json, Value};
use sessionlet::core::{Desired, DesiredSession};
use sessionlet::fleet::{coordinator, Config, Fleet};

/// Simulate a fleet of sessionlet nodes against a real local etcd cluster.
#[derive(Debug, Parser)]
#[command(name = "sessionlet-fleet-sim")]
struct Args {
    /// Sessions declared (the same manifests on every member).
    #[arg(long, default_value_t = 100_000)]
    sessions: usize,
    /// Virtual members (nodes).
    #[arg(long, default_value_t = 10)]
    members: usize,
    /// The membership lease, in whole seconds (as `run --lease-ttl`).
    #[arg(long, default_value_t = 10)]
    lease_ttl: u64,
    /// The fence margin, in whole seconds (as `run --fence-margin`); at most
    /// half the lease.
    #[arg(long, default_value_t = 2)]
    fence_margin: u64,
    /// Members killed in each reclaim phase, in order (a phase that would
    /// leave no member alive kills one fewer than all that are left).
    #[arg(long, value_delimiter = ',', default_value = "1,10")]
    kill: Vec<usize>,
    /// Seconds of idle load measured once every session is owned.
    #[arg(long, default_value_t = 10)]
    idle_secs: u64,
    /// Give up a phase after this many seconds.
    #[arg(long, default_value_t = 1800)]
    phase_limit: u64,
    /// Write the figures as JSON here.
    #[arg(long)]
    out: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    // The coordinators' own logs (round failures, fences), only when asked:
    // RUST_LOG=warn, for instance.
    if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_default_env() {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init();
    }
    match run(&args) {
        Ok(ok) => {
            if ok {
                ExitCode::SUCCESS
            } else {
                eprintln!("fleet-sim: a check failed (see `checks` above)");
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("fleet-sim: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// A three-member etcd cluster on loopback, killed by pid on drop.
struct Cluster {
    children: Vec<Child>,
    urls: Vec<String>,
    dir: PathBuf,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `n` distinct free ports: every listener is held until all are bound, so
/// the kernel cannot hand the same port out twice.
fn free_ports(n: usize) -> Result<Vec<u16>> {
    let held = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()?;
    held.iter().map(|l| Ok(l.local_addr()?.port())).collect()
}

impl Cluster {
    fn start(dir: &Path) -> Result<Cluster> {
        std::fs::create_dir_all(dir)?;
        let free = free_ports(6)?;
        let ports: Vec<(u16, u16)> = free.chunks(2).map(|p| (p[0], p[1])).collect();
        let initial: Vec<String> = ports
            .iter()
            .enumerate()
            .map(|(i, (_, peer))| format!("e{i}=http://127.0.0.1:{peer}"))
            .collect();
        let mut c = Cluster {
            children: Vec::new(),
            urls: Vec::new(),
            dir: dir.to_path_buf(),
        };
        for (i, (client, peer)) in ports.iter().enumerate() {
            let url = format!("http://127.0.0.1:{client}");
            let log = std::fs::File::create(dir.join(format!("e{i}.log")))?;
            let child = Command::new("etcd")
                .args(["--name", &format!("e{i}")])
                .arg("--data-dir")
                .arg(dir.join(format!("e{i}")))
                .args(["--listen-client-urls", &url])
                .args(["--advertise-client-urls", &url])
                .args(["--listen-peer-urls", &format!("http://127.0.0.1:{peer}")])
                .args([
                    "--initial-advertise-peer-urls",
                    &format!("http://127.0.0.1:{peer}"),
                ])
                .args(["--initial-cluster", &initial.join(",")])
                .args([
                    "--initial-cluster-token",
                    &format!("sim{}", std::process::id()),
                ])
                .args(["--initial-cluster-state", "new"])
                .args(["--heartbeat-interval", "100", "--election-timeout", "1000"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .context("starting etcd (Debian: etcd-server)")?;
            c.children.push(child);
            c.urls.push(url);
        }
        Ok(c)
    }

    /// Whether a member has exited; if one has, its log's last lines.
    fn died(&mut self) -> Option<String> {
        for (i, c) in self.children.iter_mut().enumerate() {
            if let Ok(Some(status)) = c.try_wait() {
                let log =
                    std::fs::read_to_string(self.dir.join(format!("e{i}.log"))).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(5).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                return Some(format!("etcd e{i} exited ({status}): {}", tail.join(" | ")));
            }
        }
        None
    }

    fn pids(&self) -> Vec<u32> {
        self.children.iter().map(Child::id).collect()
    }
}

/// One virtual member: the real coordinator on its own thread and runtime.
struct Member {
    name: String,
    fleet: Fleet,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Member {
    fn start(cfg: Config) -> Result<Member> {
        let name = cfg.node.clone();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (fleet_tx, fleet_rx) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name(name.clone())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = fleet_tx.send(Err(anyhow::anyhow!("runtime: {e}")));
                        return;
                    }
                };
                rt.block_on(async move {
                    let started = coordinator::start(cfg).await;
                    let ok = started.is_ok();
                    let _ = fleet_tx.send(started.map_err(anyhow::Error::from));
                    if ok {
                        let _ = stop_rx.await;
                    }
                });
                // Dropping the runtime ends the member's tasks and closes its
                // connections: to etcd it is a node that died.
            })?;
        let fleet = fleet_rx
            .recv()
            .map_err(|_| anyhow::anyhow!("{name}: its thread ended"))??;
        Ok(Member {
            name,
            fleet,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    fn kill(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    fn alive(&self) -> bool {
        self.stop.is_some()
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.kill();
    }
}

/// CPU time (user + system) of process `pid` so far.
fn cpu(pid: u32) -> Duration {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return Duration::ZERO;
    };
    // The fields after the command (which may hold spaces) in parentheses.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return Duration::ZERO;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // utime and stime are fields 14 and 15; `rest` starts at field 3.
    let total = ticks(11).saturating_add(ticks(12));
    // SAFETY: sysconf has no preconditions.
    let hz = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) })
        .unwrap_or(100)
        .max(1);
    Duration::from_millis(total.saturating_mul(1000) / hz)
}

fn cpu_of(pids: &[u32]) -> Duration {
    pids.iter().map(|p| cpu(*p)).sum()
}

/// One counter from etcd's `/metrics` at `url` (HTTP/1.0: no chunking).
fn etcd_metric(url: &str, name: &str) -> f64 {
    let addr = url.trim_start_matches("http://");
    let read = || -> Option<f64> {
        let mut s = std::net::TcpStream::connect(addr).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
        write!(s, "GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
        let mut text = String::new();
        s.read_to_string(&mut text).ok()?;
        Some(
            text.lines()
                .filter(|l| !l.starts_with('#'))
                .filter_map(|l| {
                    let (k, v) = l.rsplit_once(' ')?;
                    let k = k.split('{').next()?;
                    (k == name).then(|| v.trim().parse::<f64>().ok()).flatten()
                })
                .sum(),
        )
    };
    read().unwrap_or(0.0)
}

/// Bytes etcd has sent to its clients, over the cluster.
fn sent_bytes(urls: &[String]) -> f64 {
    urls.iter()
        .map(|u| etcd_metric(u, "etcd_network_client_grpc_sent_bytes_total"))
        .sum()
}

/// The sessions every live member owns: session → owners (should be one).
fn owned(members: &[Member]) -> BTreeMap<String, Vec<String>> {
    let mut all: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for m in members.iter().filter(|m| m.alive()) {
        for s in m.fleet.owned().into_keys() {
            all.entry(s).or_default().push(m.name.clone());
        }
    }
    all
}

/// Waits until the live members together own all `n` sessions; the time it took.
fn wait_all_owned(
    members: &[Member],
    n: usize,
    since: Instant,
    limit: Duration,
) -> Result<Duration> {
    loop {
        let count: usize = members
            .iter()
            .filter(|m| m.alive())
            .map(|m| m.fleet.owned().len())
            .sum();
        if count >= n && owned(members).len() == n {
            return Ok(since.elapsed());
        }
        if since.elapsed() > limit {
            bail!("after {limit:?} the live members own {count} of {n} sessions");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// [`check`], tried again with a new connection when etcd fails a call (an
/// endpoint that refuses for a moment is not a finding of the simulation):
/// the last error once 30 s have passed.
async fn check_patiently(
    client: &mut etcd_client::Client,
    urls: &[String],
    prefix: &str,
    declared: &BTreeSet<String>,
    members: &[Member],
) -> Result<Value> {
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        match check(client, prefix, declared, members).await {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() < until => {
                eprintln!("fleet-sim: the check's read failed ({e:#}); trying again");
                tokio::time::sleep(Duration::from_millis(200)).await;
                if let Ok(c) = etcd_client::Client::connect(urls, None).await {
                    *client = c;
                }
            }
            Err(e) => return Err(e),
        }
    }
}

/// What etcd holds under the prefix, and whether every declared session is
/// owned by exactly one live member (in etcd and in the members' views).
async fn check(
    client: &mut etcd_client::Client,
    prefix: &str,
    declared: &BTreeSet<String>,
    members: &[Member],
) -> Result<Value> {
    let call = Duration::from_secs(30);
    let mut rev = 0;
    let member_kvs =
        coordinator::read_prefix(client, &format!("{prefix}members/"), &mut rev, call).await?;
    let owner_kvs =
        coordinator::read_prefix(client, &format!("{prefix}owners/"), &mut rev, call).await?;
    let all = coordinator::read_prefix(client, prefix, &mut rev, call).await?;
    let leases: BTreeMap<String, i64> = member_kvs
        .iter()
        .filter_map(|kv| Some((kv.value_str().ok()?.to_string(), kv.lease())))
        .collect();
    let live: BTreeSet<&str> = members
        .iter()
        .filter(|m| m.alive())
        .map(|m| m.name.as_str())
        .collect();
    let views = owned(members);
    let mut problems = Vec::new();
    let owner_prefix = format!("{prefix}owners/");
    let mut etcd_owner: BTreeMap<String, String> = BTreeMap::new();
    for kv in &owner_kvs {
        let (Ok(k), Ok(v)) = (kv.key_str(), kv.value_str()) else {
            continue;
        };
        let name = k.strip_prefix(owner_prefix.as_str()).unwrap_or(k);
        if !live.contains(v) || leases.get(v) != Some(&kv.lease()) {
            problems.push(format!(
                "{name}: owner key names {v}, not a live member's lease"
            ));
        }
        etcd_owner.insert(name.to_string(), v.to_string());
    }
    for s in declared {
        match (etcd_owner.get(s), views.get(s).map(Vec::as_slice)) {
            (Some(o), Some([v])) if o == v => {}
            (o, v) => problems.push(format!("{s}: etcd says {o:?}, members say {v:?}")),
        }
    }
    if leases.keys().any(|m| !live.contains(m.as_str())) {
        problems.push("a dead member's key is still in etcd".to_string());
    }
    let mut by_kind: BTreeMap<String, (u64, u64, u64)> = BTreeMap::new();
    for kv in &all {
        let key = kv.key_str().unwrap_or("");
        let kind = key
            .strip_prefix(prefix)
            .and_then(|r| r.split('/').next())
            .unwrap_or("?")
            .to_string();
        let e = by_kind.entry(kind).or_default();
        e.0 = e.0.saturating_add(1);
        e.1 = e.1.saturating_add(kv.key().len() as u64);
        e.2 = e.2.saturating_add(kv.value().len() as u64);
    }
    let (keys, key_bytes, value_bytes) = by_kind.values().fold((0u64, 0u64, 0u64), |a, b| {
        (
            a.0.saturating_add(b.0),
            a.1.saturating_add(b.1),
            a.2.saturating_add(b.2),
        )
    });
    let shown: Vec<&String> = problems.iter().take(5).collect();
    Ok(json!({
        "ok": problems.is_empty(),
        "problems": problems.len(),
        "first_problems": shown,
        "owners": owner_kvs.len(),
        "live_members": live.len(),
        "keys": keys,
        "key_bytes": key_bytes,
        "value_bytes": value_bytes,
        "by_kind": by_kind.iter().map(|(k, (n, kb, vb))| (k.clone(), json!({"keys": n, "key_bytes": kb, "value_bytes": vb}))).collect::<serde_json::Map<_, _>>(),
        "revision": rev,
    }))
}

/// etcd's db size per member, from `etcdctl endpoint status -w json`.
fn db_sizes(urls: &[String]) -> Value {
    let out = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={}", urls.join(",")))
        .args(["endpoint", "status", "-w", "json"])
        .output();
    let Ok(out) = out else {
        return Value::Null;
    };
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    let sizes: Vec<Value> = v
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| {
                    json!({
                        "endpoint": e["Endpoint"],
                        "db_size": e["Status"]["dbSize"],
                        "db_size_in_use": e["Status"]["dbSizeInUse"],
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    Value::Array(sizes)
}

fn machine() -> Value {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_default();
    let etcd = Command::new("etcd")
        .arg("--version")
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or("")
                .to_string()
        })
        .unwrap_or_default();
    json!({"cpus": cpus, "cpu_model": model, "etcd": etcd})
}

/// Bytes in KiB or MiB, whichever reads better.
fn mib(b: f64) -> String {
    if b < 1_048_576.0 {
        format!("{:.1} KiB", b / 1024.0)
    } else {
        format!("{:.1} MiB", b / 1_048_576.0)
    }
}

fn run(args: &Args) -> Result<bool> {
    if args.members == 0 || args.sessions == 0 {
        bail!("--members and --sessions must be at least 1");
    }
    if args.lease_ttl < 2
        || args.fence_margin == 0
        || args.fence_margin.saturating_mul(2) > args.lease_ttl
    {
        bail!("--lease-ttl at least 2, --fence-margin above 0 and at most half of it");
    }
    for b in ["etcd", "etcdctl"] {
        if Command::new(b)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_err()
        {
            bail!("{b} is not on PATH (Debian: etcd-server etcd-client)");
        }
    }
    let dir = std::env::temp_dir().join(format!("sessionlet-fleet-sim-{}", std::process::id()));
    let mut cluster = Cluster::start(&dir)?;
    let etcd_pids = cluster.pids();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let prefix = "/sim/".to_string();
    // The cluster is ready once it has a leader and every member answers on
    // its own: a member still joining refuses connections, and a client
    // balancing over all three would then fail one call in three.
    let until = Instant::now() + Duration::from_secs(60);
    let mut client = loop {
        if let Some(why) = cluster.died() {
            bail!("the etcd cluster did not start: {why}");
        }
        let urls = cluster.urls.clone();
        let tried = rt.block_on(async {
            let one = async {
                for url in &urls {
                    let mut c = etcd_client::Client::connect([url.as_str()], None).await?;
                    c.status().await?;
                }
                let mut c = etcd_client::Client::connect(urls.clone(), None).await?;
                c.put("/sim-probe", "x", None).await?;
                anyhow::Ok(c)
            };
            tokio::time::timeout(Duration::from_secs(5), one).await
        });
        match tried {
            Ok(Ok(c)) => break c,
            _ if Instant::now() < until => std::thread::sleep(Duration::from_millis(200)),
            Ok(Err(e)) => bail!("the etcd cluster does not answer: {e}"),
            Err(_) => bail!("the etcd cluster does not answer"),
        }
    };

    // The manifests: one small spec shared by every session.
    let spec: sessionlet::api::SessionSpec =
        serde_json::from_value(json!({"command": ["true"]})).context("spec")?;
    let spec = Arc::new(spec);
    let now = chrono::Utc::now();
    let width = args.sessions.to_string().len();
    let mut desired = Desired::default();
    for i in 0..args.sessions {
        let name = format!("s{i:0width$}");
        desired.sessions.insert(
            name.clone(),
            DesiredSession {
                name,
                spec: spec.clone(),
                generation: 1,
                first_seen: now,
                replica: None,
                restarted_at: None,
            },
        );
    }
    let declared: BTreeSet<String> = desired.sessions.keys().cloned().collect();

    eprintln!(
        "fleet-sim: {} members, {} sessions, lease {} s",
        args.members, args.sessions, args.lease_ttl
    );
    let mut members = Vec::new();
    let mwidth = args.members.to_string().len();
    for i in 0..args.members {
        members.push(Member::start(Config {
            endpoints: cluster.urls.clone(),
            node: format!("m{i:0mwidth$}"),
            lease_ttl: Duration::from_secs(args.lease_ttl),
            fence_margin: Duration::from_secs(args.fence_margin),
            prefix: prefix.clone(),
            keeper_socket: None,
        })?);
    }
    let limit = Duration::from_secs(args.phase_limit);
    let mut checks = Vec::new();
    let mut all_ok = true;

    // Claim: every member reads the same manifests at once (a Git pull).
    let cpu0 = cpu_of(&etcd_pids);
    let self0 = cpu(std::process::id());
    let t0 = Instant::now();
    for m in &members {
        m.fleet.filter(desired.clone());
    }
    let claim = wait_all_owned(&members, args.sessions, t0, limit)?;
    let claim_cpu = cpu_of(&etcd_pids).saturating_sub(cpu0);
    let claim_self = cpu(std::process::id()).saturating_sub(self0);
    eprintln!("fleet-sim: every session owned after {claim:.1?}");
    let after_claim = rt.block_on(check_patiently(
        &mut client,
        &cluster.urls,
        &prefix,
        &declared,
        &members,
    ))?;
    all_ok &= after_claim["ok"] == true;
    checks.push(json!({"phase": "claim", "check": after_claim.clone()}));
    let per_member: Vec<usize> = members.iter().map(|m| m.fleet.owned().len()).collect();

    // Idle: nothing changes; what does the fleet cost etcd?
    let idle = Duration::from_secs(args.idle_secs);
    let (b0, c0, s0) = (
        sent_bytes(&cluster.urls),
        cpu_of(&etcd_pids),
        cpu(std::process::id()),
    );
    let ti = Instant::now();
    std::thread::sleep(idle);
    let idle_elapsed = ti.elapsed().as_secs_f64();
    let idle_sent = (sent_bytes(&cluster.urls) - b0).max(0.0) / idle_elapsed;
    let idle_cpu = cpu_of(&etcd_pids).saturating_sub(c0).as_secs_f64() / idle_elapsed;
    let idle_self = cpu(std::process::id()).saturating_sub(s0).as_secs_f64() / idle_elapsed;
    let db = db_sizes(&cluster.urls);

    // Reclaim: kill members, leave their leases to expire.
    let mut reclaims = Vec::new();
    for &want in &args.kill {
        let alive: Vec<usize> = (0..members.len()).filter(|i| members[*i].alive()).collect();
        let k = want.min(alive.len().saturating_sub(1));
        if k == 0 {
            eprintln!(
                "fleet-sim: cannot kill {want} of {} live members; skipped",
                alive.len()
            );
            continue;
        }
        let victims: Vec<usize> = alive.iter().copied().take(k).collect();
        let moved: usize = victims
            .iter()
            .map(|i| members[*i].fleet.owned().len())
            .sum();
        let c0 = cpu_of(&etcd_pids);
        let t = Instant::now();
        for i in &victims {
            members[*i].kill();
        }
        let took = wait_all_owned(&members, args.sessions, t, limit)?;
        let cpu_used = cpu_of(&etcd_pids).saturating_sub(c0);
        eprintln!("fleet-sim: killed {k} members ({moved} sessions): every session owned again after {took:.1?}");
        let c = rt.block_on(check_patiently(
            &mut client,
            &cluster.urls,
            &prefix,
            &declared,
            &members,
        ))?;
        all_ok &= c["ok"] == true;
        checks.push(json!({"phase": format!("kill {k}"), "check": c}));
        reclaims.push(json!({
            "asked": want,
            "killed": k,
            "sessions_moved": moved,
            "seconds": took.as_secs_f64(),
            "etcd_cpu_seconds": cpu_used.as_secs_f64(),
        }));
    }

    let result = json!({
        "machine": machine(),
        "sessions": args.sessions,
        "members": args.members,
        "lease_ttl_s": args.lease_ttl,
        "fence_margin_s": args.fence_margin,
        "claim": {
            "seconds": claim.as_secs_f64(),
            "etcd_cpu_seconds": claim_cpu.as_secs_f64(),
            "members_cpu_seconds": claim_self.as_secs_f64(),
            "per_member_min": per_member.iter().min(),
            "per_member_max": per_member.iter().max(),
        },
        "etcd": {
            "keys": after_claim["keys"],
            "key_bytes": after_claim["key_bytes"],
            "value_bytes": after_claim["value_bytes"],
            "by_kind": after_claim["by_kind"],
            "db": db,
        },
        "idle": {
            "seconds": idle_elapsed,
            "sent_bytes_per_s": idle_sent,
            "etcd_cpu_cores": idle_cpu,
            "members_cpu_cores": idle_self,
        },
        "reclaim": reclaims,
        "checks": checks,
        "ok": all_ok,
    });
    print_table(&result);
    if let Some(out) = &args.out {
        std::fs::write(out, serde_json::to_string_pretty(&result)? + "\n")
            .with_context(|| format!("writing {}", out.display()))?;
    }
    // The members end before the cluster they talk to.
    drop(members);
    drop(client);
    drop(cluster);
    Ok(all_ok)
}

fn print_table(r: &Value) {
    let f = |v: &Value| v.as_f64().unwrap_or(0.0);
    let db_max = r["etcd"]["db"]
        .as_array()
        .map(|a| a.iter().map(|e| f(&e["db_size"])).fold(0.0, f64::max))
        .unwrap_or(0.0);
    println!(
        "\n{} sessions over {} members, lease {} s\n",
        r["sessions"], r["members"], r["lease_ttl_s"]
    );
    println!("| figure | value |\n| --- | --- |");
    println!(
        "| claim time (all owned) | {:.1} s (etcd CPU {:.1} s, members' CPU {:.1} s) |",
        f(&r["claim"]["seconds"]),
        f(&r["claim"]["etcd_cpu_seconds"]),
        f(&r["claim"]["members_cpu_seconds"])
    );
    println!(
        "| sessions per member | {}–{} |",
        r["claim"]["per_member_min"], r["claim"]["per_member_max"]
    );
    for x in r["reclaim"].as_array().into_iter().flatten() {
        println!(
            "| reclaim after killing {} member(s) ({} sessions) | {:.1} s |",
            x["killed"],
            x["sessions_moved"],
            f(&x["seconds"])
        );
    }
    println!(
        "| keys in etcd | {} ({} of keys, {} of values) |",
        r["etcd"]["keys"],
        mib(f(&r["etcd"]["key_bytes"])),
        mib(f(&r["etcd"]["value_bytes"]))
    );
    println!("| etcd db size (largest member) | {} |", mib(db_max));
    println!(
        "| idle: etcd sends to clients | {}/s |",
        mib(f(&r["idle"]["sent_bytes_per_s"]))
    );
    println!(
        "| idle: etcd CPU (3 members) | {:.0}% of a core |",
        f(&r["idle"]["etcd_cpu_cores"]) * 100.0
    );
    println!(
        "| idle: members' CPU (this process) | {:.0}% of a core |",
        f(&r["idle"]["members_cpu_cores"]) * 100.0
    );
    println!(
        "| every session owned by exactly one live member | {} |",
        if r["ok"] == true { "yes" } else { "NO" }
    );
}
