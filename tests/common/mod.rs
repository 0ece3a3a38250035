//! Shared helpers of the integration tests: run the real `sessionlet` binary
//! on temporary directories and wait for status files with deadlines.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// How long any wait may take before the test fails. CI machines are slow and loaded.
pub const DEADLINE: Duration = Duration::from_secs(120);

/// The binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_sessionlet")
}

/// Polls `f` until it returns `Some`, or panics with `what` after [`DEADLINE`].
pub fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    wait_for_within(DEADLINE, what, &mut f)
}

/// Polls `f` until it returns `Some`, or panics after `deadline`.
pub fn wait_for_within<T>(deadline: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        if start.elapsed() > deadline {
            panic!("timed out after {deadline:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Writes a file atomically (temporary file + rename), the way editors and git do.
pub fn write_file(path: &Path, text: &str) {
    let dir = path.parent().expect("parent");
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name().expect("name").to_string_lossy()
    ));
    std::fs::write(&tmp, text).expect("write tmp");
    std::fs::rename(&tmp, path).expect("rename");
}

/// A Session manifest with the given spec body (YAML, indented by the caller as under `spec:`).
pub fn session(name: &str, spec: &str) -> String {
    let body: String = spec.lines().map(|l| format!("  {l}\n")).collect();
    format!("apiVersion: sessionlet.dev/v1alpha1\nkind: Session\nmetadata:\n  name: {name}\nspec:\n{body}")
}

/// Every document of a status file, as JSON values.
pub fn status_docs(path: &Path) -> Option<Vec<Value>> {
    let text = std::fs::read_to_string(path).ok()?;
    sessionlet::manifest::codec::from_yaml_multi::<Value>(&text).ok()
}

/// The first document of `DIR/STEM.status.yaml`.
pub fn status(dir: &Path, stem: &str) -> Option<Value> {
    status_docs(&dir.join(format!("{stem}.status.yaml")))?
        .into_iter()
        .next()
}

/// `status.phase` of `STEM.status.yaml`.
pub fn phase(dir: &Path, stem: &str) -> Option<String> {
    Some(status(dir, stem)?["status"]["phase"].as_str()?.to_string())
}

/// Waits until `STEM.status.yaml` satisfies `pred`, and returns it.
pub fn wait_status(dir: &Path, stem: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    wait_for(&format!("{stem}: {what}"), || {
        status(dir, stem).filter(|s| pred(s))
    })
}

/// Waits for a phase.
pub fn wait_phase(dir: &Path, stem: &str, phase: &str) -> Value {
    wait_status(dir, stem, &format!("phase {phase}"), |s| {
        s["status"]["phase"] == phase
    })
}

/// True while a process exists (and is not a zombie).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .and_then(|r| r.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// A controller process started by a test.
pub struct Controller {
    /// The child.
    pub child: Option<Child>,
    /// The watched directory.
    pub dir: PathBuf,
    /// The status directory.
    pub status_dir: PathBuf,
    /// The stderr log file.
    pub log: PathBuf,
}

impl Controller {
    /// Starts `sessionlet run --dir DIR` with a short resync and extra args.
    pub fn start(dir: &Path, extra: &[&str]) -> Controller {
        Self::start_with_status_dir(dir, None, extra)
    }

    /// Starts the controller with an explicit status directory.
    pub fn start_with_status_dir(
        dir: &Path,
        status_dir: Option<&Path>,
        extra: &[&str],
    ) -> Controller {
        let log = dir.parent().unwrap_or(dir).join(format!(
            "controller-{}-{}.log",
            dir.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        ));
        let mut cmd = Command::new(bin());
        cmd.arg("run").arg("--dir").arg(dir);
        // A short resync by default; a test that counts listings sets its own.
        if !extra.contains(&"--resync-interval") {
            cmd.args(["--resync-interval", "2s"]);
        }
        if let Some(s) = status_dir {
            cmd.arg("--status-dir").arg(s);
        }
        cmd.args(extra)
            .env("RUST_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"));
        let child = cmd.spawn().expect("start sessionlet");
        Controller {
            child: Some(child),
            dir: dir.to_path_buf(),
            status_dir: status_dir.unwrap_or(dir).to_path_buf(),
            log,
        }
    }

    /// The controller's pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// Sends a signal to the controller.
    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid() as i32), sig);
    }

    /// Waits for the controller to exit.
    pub fn wait(&mut self) -> ExitStatus {
        let child = self.child.as_mut().expect("running");
        let status = wait_for("the controller to exit", || child.try_wait().ok().flatten());
        self.child = None;
        status
    }

    /// SIGTERM, then wait for the drain.
    pub fn stop(&mut self) -> ExitStatus {
        self.signal(nix::sys::signal::Signal::SIGTERM);
        self.wait()
    }

    /// The controller's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Pids of every session in the status files (for cleanup).
    pub fn session_pids(&self) -> Vec<u32> {
        let mut pids = Vec::new();
        if let Ok(entries) = std::fs::read_dir(&self.status_dir) {
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().ends_with(".status.yaml") {
                    for doc in status_docs(&e.path()).unwrap_or_default() {
                        if let Some(p) = doc["status"]["pid"].as_u64() {
                            pids.push(p as u32);
                        }
                        for m in doc["status"]["members"].as_array().into_iter().flatten() {
                            if let Some(p) = m["pid"].as_u64() {
                                pids.push(p as u32);
                            }
                        }
                    }
                }
            }
        }
        pids
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Drain gracefully; if that takes too long, kill the controller and its sessions' groups.
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(20) {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            if let Ok(None) = child.try_wait() {
                for pid in self.session_pids() {
                    let _ = nix::sys::signal::killpg(
                        nix::unistd::Pid::from_raw(pid as i32),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        if std::thread::panicking() {
            eprintln!("--- controller log ---\n{}", self.log());
        }
    }
}

/// A temporary directory holding a `sessions/` folder to watch.
pub fn sessions_dir() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("sessions");
    std::fs::create_dir(&dir).expect("mkdir");
    (tmp, dir)
}

// ---------------------------------------------------------------------------
// Processes outside the controller: the keeper, session trees, SIGKILL.

/// The parent pid of a process (field 4 of /proc/PID/stat).
pub fn ppid(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit(')')
        .next()?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Every process whose parent is `pid`.
pub fn children_of(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for e in entries.flatten() {
            if let Some(p) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) {
                if ppid(p) == Some(pid) {
                    out.push(p);
                }
            }
        }
    }
    out
}

/// The start time of a process in clock ticks since boot (field 22 of /proc/PID/stat).
pub fn start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit(')')
        .next()?
        .split_whitespace()
        .nth(19)?
        .parse()
        .ok()
}

/// The pid of the keeper serving `status_dir`, found by its exact
/// `--control-dir` argument (the keeper of another test never matches).
pub fn keeper_of(status_dir: &Path) -> Option<u32> {
    let control = std::fs::canonicalize(status_dir)
        .unwrap_or_else(|_| status_dir.to_path_buf())
        .join(".sessionlet");
    let control = control.to_string_lossy().into_owned();
    let entries = std::fs::read_dir("/proc").ok()?;
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if args.get(1).map(String::as_str) == Some("keeper")
            && args.contains(&control)
            && alive(pid)
        {
            return Some(pid);
        }
    }
    None
}

/// SIGKILLs a keeper and everything it is the parent of (sessions and the
/// orphans it adopted as subreaper), each with its process group.
pub fn kill_keeper_tree(keeper: u32) {
    use nix::sys::signal::{kill, killpg, Signal};
    use nix::unistd::Pid;
    for child in children_of(keeper) {
        let _ = killpg(Pid::from_raw(child as i32), Signal::SIGKILL);
        let _ = kill(Pid::from_raw(child as i32), Signal::SIGKILL);
    }
    let _ = kill(Pid::from_raw(keeper as i32), Signal::SIGKILL);
}

/// Kills a keeper and its sessions so that it records nothing: the keeper
/// is stopped first (a stopped process reaps nothing), then its children
/// and it are killed. `kill_keeper_tree` lets a keeper scheduled between
/// the kills reap a child and record its exit.
#[allow(dead_code)]
pub fn kill_keeper_tree_silently(keeper: u32) {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    let _ = kill(Pid::from_raw(keeper as i32), Signal::SIGSTOP);
    kill_keeper_tree(keeper);
}

/// Kills, on drop, the keeper of a status directory and its sessions: the
/// safety net of tests that SIGKILL controllers (a passing test ends them
/// gracefully itself).
pub struct KeeperGuard(pub PathBuf);

impl Drop for KeeperGuard {
    fn drop(&mut self) {
        // A controller may still be starting one: look twice.
        for _ in 0..2 {
            if let Some(k) = keeper_of(&self.0) {
                kill_keeper_tree(k);
            }
        }
    }
}

impl Controller {
    /// SIGKILLs the controller (no drain, no last write) and reaps it; the
    /// keeper and the sessions stay.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The exit status if the controller has exited on its own.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }
}

/// The controller's own status file, `.sessionlet/controller.status.yaml`.
pub fn controller_status_of(status_dir: &Path) -> Option<Value> {
    status_docs(&status_dir.join(".sessionlet/controller.status.yaml"))?
        .into_iter()
        .next()
}

/// Waits until the controller with `pid` has written its status after at
/// least `passes` reconcile passes (proof that it looked at everything).
pub fn wait_passes(status_dir: &Path, pid: u32, passes: u64) -> Value {
    wait_for(&format!("controller {pid} to make {passes} passes"), || {
        controller_status_of(status_dir).filter(|c| {
            c["pid"].as_u64() == Some(u64::from(pid))
                && c["reconcileCount"].as_u64().is_some_and(|n| n >= passes)
        })
    })
}

/// Live process-group leaders whose environment carries `TAG=tag`: one
/// per running copy of a session (its shell's children are not leaders).
pub fn live_copies(tag: &str) -> Vec<u32> {
    let needle = format!("SESSION_TAG={tag}");
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        if !env.split(|b| *b == 0).any(|v| v == needle.as_bytes()) {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // fields[0] is the state, fields[2] the process group.
        if fields.first() != Some(&"Z") && fields.get(2) == Some(&pid.to_string().as_str()) {
            out.push(pid);
        }
    }
    out
}

/// The events kept for `name` (both files of the rotated log, oldest first).
#[allow(dead_code)]
pub fn events_of(status_dir: &Path, name: &str) -> Vec<Value> {
    let control = status_dir.join(".sessionlet");
    let mut out = Vec::new();
    for f in ["events.1.jsonl", "events.jsonl"] {
        let text = std::fs::read_to_string(control.join(f)).unwrap_or_default();
        out.extend(
            text.lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .filter(|e| e["object"]["name"] == name),
        );
    }
    out
}

/// Waits until `name` has an event with `reason`; returns it.
#[allow(dead_code)]
pub fn wait_event(status_dir: &Path, name: &str, reason: &str) -> Value {
    wait_for(&format!("{name}: a {reason} event"), || {
        events_of(status_dir, name)
            .into_iter()
            .find(|e| e["reason"] == reason)
    })
}
