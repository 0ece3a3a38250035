//! Helpers of the scale-out tests: a real three-member etcd cluster on
//! loopback (free ports, own data dirs, killed by pid on drop), nodes of
//! sessionlet (controller + keeper, own checkout and status folder), and the
//! double-run detector (flock + a shared journal).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::common::{self, Controller, KeeperGuard};

/// True when the etcd binaries are here; else the test prints why it skipped.
pub fn have_etcd(test: &str) -> bool {
    let ok = ["etcd", "etcdctl", "flock"].iter().all(|b| {
        Command::new(b)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok()
    });
    if !ok {
        eprintln!(
            "SKIPPED: {test}: etcd, etcdctl or flock is not on PATH (Debian: etcd-server etcd-client util-linux)"
        );
    }
    ok
}

/// `n` distinct free ports: every listener is held until all are bound, so
/// the kernel cannot hand the same port out twice.
fn free_ports(n: usize) -> Vec<u16> {
    let held: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("a free port"))
        .collect();
    held.iter()
        .map(|l| l.local_addr().expect("a bound port").port())
        .collect()
}

/// One etcd member.
pub struct Member {
    pub name: String,
    pub client_url: String,
    child: Option<Child>,
    args: Vec<String>,
    log: PathBuf,
}

/// A three-member etcd cluster on loopback.
pub struct Cluster {
    pub members: Vec<Member>,
}

impl Cluster {
    /// Starts three members and waits until the cluster answers.
    pub fn start(dir: &Path) -> Cluster {
        let ports: Vec<(u16, u16)> = free_ports(6).chunks(2).map(|p| (p[0], p[1])).collect();
        let initial: Vec<String> = ports
            .iter()
            .enumerate()
            .map(|(i, (_, peer))| format!("e{i}=http://127.0.0.1:{peer}"))
            .collect();
        let members = ports
            .iter()
            .enumerate()
            .map(|(i, (client, peer))| {
                let name = format!("e{i}");
                let client_url = format!("http://127.0.0.1:{client}");
                let peer_url = format!("http://127.0.0.1:{peer}");
                let args = vec![
                    "--name".into(),
                    name.clone(),
                    "--data-dir".into(),
                    dir.join(&name).to_string_lossy().into_owned(),
                    "--listen-client-urls".into(),
                    client_url.clone(),
                    "--advertise-client-urls".into(),
                    client_url.clone(),
                    "--listen-peer-urls".into(),
                    peer_url.clone(),
                    "--initial-advertise-peer-urls".into(),
                    peer_url,
                    "--initial-cluster".into(),
                    initial.join(","),
                    "--initial-cluster-token".into(),
                    format!("t{}", std::process::id()),
                    "--initial-cluster-state".into(),
                    "new".into(),
                    "--heartbeat-interval".into(),
                    "100".into(),
                    "--election-timeout".into(),
                    "1000".into(),
                ];
                let mut m = Member {
                    name: name.clone(),
                    client_url,
                    child: None,
                    args,
                    log: dir.join(format!("{name}.log")),
                };
                m.spawn();
                m
            })
            .collect();
        let c = Cluster { members };
        // Every member answers on its own, not just a quorum: a member still
        // joining refuses connections, and clients balancing over all three
        // would fail one call in three.
        common::wait_for("every etcd member to answer", || {
            c.etcdctl(&["put", "/probe", "x"])?;
            c.members.iter().try_for_each(|m| {
                Command::new("etcdctl")
                    .env("ETCDCTL_API", "3")
                    .arg(format!("--endpoints={}", m.client_url))
                    .args(["--command-timeout=2s", "endpoint", "health"])
                    .output()
                    .ok()
                    .filter(|o| o.status.success())
                    .map(|_| ())
            })
        });
        c
    }

    /// Every member's client URL, comma-separated.
    pub fn endpoints(&self) -> String {
        self.members
            .iter()
            .map(|m| m.client_url.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Runs etcdctl against the cluster; its stdout when it succeeded.
    pub fn etcdctl(&self, args: &[&str]) -> Option<String> {
        let out = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", self.endpoints()))
            .arg("--command-timeout=2s")
            .args(args)
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The index of the member that leads, from `etcdctl endpoint status`.
    pub fn leader(&self) -> Option<usize> {
        let out = self.etcdctl(&["endpoint", "status", "-w", "json"])?;
        let v: serde_json::Value = serde_json::from_str(&out).ok()?;
        let leader_url = v.as_array()?.iter().find_map(|e| {
            let s = &e["Status"];
            (s["leader"] == s["header"]["member_id"] && !s["leader"].is_null())
                .then(|| e["Endpoint"].as_str().map(str::to_string))
                .flatten()
        })?;
        self.members.iter().position(|m| m.client_url == leader_url)
    }

    /// The keys under `prefix` (keys only).
    pub fn keys(&self, prefix: &str) -> Option<Vec<String>> {
        let out = self.etcdctl(&["get", "--prefix", "--keys-only", prefix])?;
        Some(
            out.lines()
                .filter(|l| !l.is_empty())
                .map(str::to_string)
                .collect(),
        )
    }
}

impl Member {
    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("etcd log");
        self.child = Some(
            Command::new("etcd")
                .args(&self.args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("start etcd"),
        );
    }

    /// SIGKILLs this member (the pid the test started).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts this member again on its data dir.
    pub fn restart(&mut self) {
        self.kill();
        // A restarted member rejoins the existing cluster from its data dir.
        self.spawn();
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The shell script every test session runs: holds `flock -n` on its lock
/// for as long as it runs and writes `start`/`stop` lines to the journal; a
/// second copy finding the lock taken writes `overlap`.
pub const WORK: &str = r#"
name="$1"
exec 9>"$LOCKS/$name.lock"
if ! flock -n 9; then echo "overlap $name $SESSIONLET_NODE" >> "$JOURNAL"; exit 3; fi
echo "start $name $SESSIONLET_NODE $SESSIONLET_FENCING_TOKEN" >> "$JOURNAL"
trap 'echo "stop $name $SESSIONLET_NODE" >> "$JOURNAL"; exit 0' TERM
if [ "$2" = once ]; then echo "stop $name $SESSIONLET_NODE" >> "$JOURNAL"; exit 0; fi
sleep 3600 9>&- &
wait
"#;

/// The test's shared folder: the manifests (copied to each node's
/// checkout), the locks and the journal.
pub struct Fleet {
    // Fields drop in order: the nodes before the cluster they talk to.
    pub nodes: Vec<Node>,
    pub root: PathBuf,
    pub cluster: Cluster,
    pub journal: PathBuf,
    pub manifests: Vec<(String, String)>,
    /// `--lease-ttl` of the nodes started from now on.
    pub lease_ttl: String,
    /// Put this etcd member where each node starts talking (a node uses
    /// its endpoints from a position its name hashes to), so that killing
    /// it surely hits every node.
    pub first_member: Option<usize>,
    /// Nodes (by index) that may talk to one etcd member only (by index).
    pub only_member: std::collections::BTreeMap<usize, usize>,
}

/// One node: its checkout, status folder and controller.
pub struct Node {
    pub name: String,
    pub dir: PathBuf,
    pub status: PathBuf,
    pub controller: Option<Controller>,
    _guard: KeeperGuard,
}

impl Fleet {
    /// A cluster and `n` nodes (not started) over the same `sessions`
    /// (name, `always` or `once`).
    pub fn new(root: &Path, n: usize, sessions: &[(&str, &str)]) -> Fleet {
        let cluster = Cluster::start(root);
        let locks = root.join("locks");
        std::fs::create_dir_all(&locks).expect("locks");
        let journal = root.join("journal");
        std::fs::write(&journal, "").expect("journal");
        let work = root.join("work.sh");
        std::fs::write(&work, WORK).expect("work.sh");
        let manifests = sessions
            .iter()
            .map(|(name, kind)| {
                let policy = if *kind == "once" { "Never" } else { "Always" };
                (
                    name.to_string(),
                    common::session(
                        name,
                        &format!(
                            "command: [/bin/sh, {}, {name}, {kind}]\nrestartPolicy: {policy}\nenv: {{JOURNAL: {}, LOCKS: {}}}",
                            work.display(),
                            journal.display(),
                            locks.display()
                        ),
                    ),
                )
            })
            .collect::<Vec<_>>();
        let nodes = (1..=n)
            .map(|i| {
                let name = format!("n{i}");
                let dir = root.join(&name).join("sessions");
                let status = root.join(&name).join("status");
                std::fs::create_dir_all(&dir).expect("checkout");
                std::fs::create_dir_all(&status).expect("status");
                for (s, text) in &manifests {
                    common::write_file(&dir.join(format!("{s}.yaml")), text);
                }
                Node {
                    name,
                    _guard: KeeperGuard(status.clone()),
                    dir,
                    status,
                    controller: None,
                }
            })
            .collect();
        Fleet {
            root: root.to_path_buf(),
            cluster,
            nodes,
            journal,
            manifests,
            lease_ttl: "3s".to_string(),
            first_member: None,
            only_member: Default::default(),
        }
    }

    /// Starts node `i`'s controller (its keeper comes with it).
    pub fn start(&mut self, i: usize) {
        self.start_with(i, &[]);
    }

    /// Starts node `i`'s controller with extra flags.
    pub fn start_with(&mut self, i: usize, extra: &[&str]) {
        let mut endpoints = self.cluster.endpoints();
        if let Some(k) = self.first_member {
            let n = self.cluster.members.len();
            let name = &self.nodes[i].name;
            let pos = (sessionlet::core::placement::weight(name, "etcd") % n as u64) as usize;
            let mut urls: Vec<String> = self
                .cluster
                .members
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != k)
                .map(|(_, m)| m.client_url.clone())
                .collect();
            urls.insert(pos, self.cluster.members[k].client_url.clone());
            endpoints = urls.join(",");
        }
        if let Some(k) = self.only_member.get(&i) {
            endpoints = self.cluster.members[*k].client_url.clone();
        }
        let ttl = self.lease_ttl.clone();
        let node = &mut self.nodes[i];
        node.controller = Some(Controller::start_with_status_dir(
            &node.dir,
            Some(&node.status),
            &[
                "--coordinator",
                "etcd",
                "--etcd-endpoints",
                &endpoints,
                "--node",
                &node.name,
                "--lease-ttl",
                &ttl,
                "--fence-margin",
                "1s",
                "--etcd-prefix",
                "/t/",
            ]
            .iter()
            .copied()
            .chain(extra.iter().copied())
            .collect::<Vec<_>>(),
        ));
    }

    /// Adds a manifest to every node's checkout (as a Git pull would).
    pub fn add(&mut self, name: &str, kind: &str) {
        let work = self.root.join("work.sh");
        let policy = if kind == "once" { "Never" } else { "Always" };
        let text = common::session(
            name,
            &format!(
                "command: [/bin/sh, {}, {name}, {kind}]\nrestartPolicy: {policy}\nenv: {{JOURNAL: {}, LOCKS: {}}}",
                work.display(),
                self.journal.display(),
                self.root.join("locks").display()
            ),
        );
        for n in &self.nodes {
            common::write_file(&n.dir.join(format!("{name}.yaml")), &text);
        }
        self.manifests.push((name.to_string(), text));
    }

    /// SIGKILLs node `i` whole: controller, keeper and its sessions.
    pub fn kill_node(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        if let Some(c) = node.controller.as_mut() {
            c.kill();
        }
        node.controller = None;
        for _ in 0..2 {
            if let Some(k) = common::keeper_of(&node.status) {
                common::kill_keeper_tree(k);
            }
        }
    }

    /// The journal's lines, split in words.
    pub fn journal(&self) -> Vec<Vec<String>> {
        std::fs::read_to_string(&self.journal)
            .unwrap_or_default()
            .lines()
            .map(|l| l.split_whitespace().map(str::to_string).collect())
            .collect()
    }

    /// Node names of each `start` of `session`, in order.
    pub fn starts(&self, session: &str) -> Vec<String> {
        self.journal()
            .into_iter()
            .filter(|w| w.len() >= 3 && w[0] == "start" && w[1] == session)
            .map(|w| w[2].clone())
            .collect()
    }

    /// The double-run detector: no copy found another's lock taken, and
    /// in the journal each session's runs never overlap (a start only after
    /// the previous run's stop or its node's death, `dead`).
    pub fn assert_no_overlap(&self, dead: &[&str]) {
        let journal = self.journal();
        assert!(
            !journal
                .iter()
                .any(|w| w.first().map(String::as_str) == Some("overlap")),
            "a session ran twice at once:\n{journal:?}"
        );
        let mut running: std::collections::BTreeMap<String, String> = Default::default();
        for w in &journal {
            match (w.first().map(String::as_str), w.get(1), w.get(2)) {
                (Some("start"), Some(s), Some(n)) => {
                    if let Some(prev) = running.get(s) {
                        assert!(
                            dead.contains(&prev.as_str()),
                            "{s} started on {n} while running on {prev}:\n{journal:?}"
                        );
                    }
                    running.insert(s.clone(), n.clone());
                }
                (Some("stop"), Some(s), _) => {
                    running.remove(s);
                }
                _ => {}
            }
        }
    }
}

/// One metric's value from `/metrics` at `addr` (HTTP/1.0: no chunking).
pub fn metric(addr: &str, name: &str) -> Option<f64> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(s, "GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == name).then(|| v.trim().parse().ok()).flatten()
    })
}

/// Waits for `what`; the deadline is the tests' common one (no timing
/// threshold: figures are printed, not asserted).
pub fn wait<T>(what: &str, f: impl FnMut() -> Option<T>) -> T {
    common::wait_for_within(Duration::from_secs(120), what, f)
}
