//! The supervisors under test, behind one interface: sessionlet, the raw
//! fork+exec floor, supervisord and runit.
//!
//! Every session is `/bin/sleep TAG` with a unique TAG, so the benchmark
//! finds a session's process (and knows it has exec'd) from its argv alone.

use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::procfs::{self, Tracker};

/// One supervisor under test.
pub trait Peer {
    /// Short name used in tables and JSON.
    fn name(&self) -> &'static str;
    /// Writes the configuration of `tags` under `dir` (fresh), without starting anything.
    fn prepare(&mut self, dir: &Path, tags: &[u64]) -> Result<()>;
    /// Starts the supervisor; returns at once.
    fn start(&mut self) -> Result<()>;
    /// Pids whose children are sessions, for a poll (may use the tracker to
    /// skip parents already known).
    fn session_parents(&mut self, tracker: &Tracker) -> Vec<u32>;
    /// Prepares one more session outside the watched place (not timed).
    fn stage(&mut self, tag: u64) -> Result<()>;
    /// The timed action that adds the staged session.
    fn commit(&mut self) -> Result<()>;
    /// Cleanup after a commit was detected (e.g. wait for supervisorctl).
    fn after_commit(&mut self) -> Result<()> {
        Ok(())
    }
    /// Called right after the benchmark SIGKILLed session `pid` (the raw
    /// floor replaces it here; supervisors do it themselves).
    fn on_killed(&mut self, _pid: u32, _tag: u64) -> Result<()> {
        Ok(())
    }
    /// The supervisor's own processes (name, pid), for memory and CPU.
    fn supervisor_pids(&self) -> Vec<(String, u32)>;
    /// True while the supervisor is alive (false for a dead controller).
    fn healthy(&self) -> bool;
    /// A status directory to watch for status writes, if the peer writes any.
    fn status_dir(&self) -> Option<PathBuf> {
        None
    }
    /// Forgets the running instance (after the benchmark killed everything).
    fn reset(&mut self);
    /// Extra arguments for the next start (sessionlet only: e.g. `--usage-interval 0`).
    fn set_extra_args(&mut self, _args: &[&str]) {}
    /// Serve metrics on this port at the next start (sessionlet only).
    fn set_metrics_port(&mut self, _port: Option<u16>) {}
    /// The metrics port, when serving.
    fn metrics_port(&self) -> Option<u16> {
        None
    }
}

/// Writes `text` to `path` (plain write; used for files not yet watched).
fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).with_context(|| format!("write {}", path.display()))
}

fn log_file(path: &Path) -> Result<std::fs::File> {
    std::fs::File::create(path).with_context(|| format!("create {}", path.display()))
}

// ------------------------------------------------------------------ sessionlet

/// sessionlet: `sessionlet run --dir D`, sessions as Session manifests.
pub struct Sessionlet {
    /// The `sessionlet` binary.
    pub bin: PathBuf,
    /// Extra arguments of `run`.
    pub extra_args: Vec<String>,
    /// Arguments given with --sessionlet-arg, kept by `set_extra_args`.
    pub base_args: Vec<String>,
    /// RUST_LOG for the controller.
    pub rust_log: String,
    dir: PathBuf,
    stage_dir: PathBuf,
    staged: Option<(PathBuf, PathBuf)>,
    /// The controller's pid once started.
    pub controller: Option<u32>,
    keeper: Option<u32>,
    /// The controller's stderr.
    pub log: PathBuf,
    /// Serve metrics on 127.0.0.1:PORT (for the benchmark's breakdowns).
    pub metrics_port: Option<u16>,
    /// The peer's name in the results: `sessionlet`, or `baseline` for an
    /// older build compared side by side (`--baseline BIN`).
    pub label: &'static str,
}

impl Sessionlet {
    /// A peer using `bin`.
    pub fn new(bin: PathBuf) -> Self {
        Sessionlet {
            bin,
            extra_args: Vec::new(),
            base_args: Vec::new(),
            rust_log: "info".into(),
            dir: PathBuf::new(),
            stage_dir: PathBuf::new(),
            staged: None,
            controller: None,
            keeper: None,
            log: PathBuf::new(),
            metrics_port: None,
            label: "sessionlet",
        }
    }

    /// The Session manifest of one benchmark session.
    pub fn manifest(name: &str, tag: u64) -> String {
        format!(
            "apiVersion: sessionlet.dev/v1alpha1\nkind: Session\nmetadata:\n  name: {name}\nspec:\n  command: [/bin/sleep, \"{tag}\"]\n  restartPolicy: Always\n  backoff:\n    initialDelay: 0s\n"
        )
    }

    /// The keeper's pid (found among the controller's children once it exec'd).
    pub fn keeper(&mut self) -> Option<u32> {
        if self.keeper.is_none() {
            let ctrl = self.controller?;
            for c in procfs::children(ctrl) {
                let is_keeper = procfs::cmdline(c)
                    .is_some_and(|cl| cl.split(|b| *b == 0).any(|a| a == b"keeper"));
                if is_keeper {
                    self.keeper = Some(c);
                }
            }
        }
        self.keeper
    }
}

/// Removes the memory cgroups a killed controller left (it removes them
/// itself only when it drains): the root is in its log line
/// `memory limits: cgroup ... under ROOT (...)`. Only empty cgroups go.
pub fn remove_cgroups(log: &Path) {
    let Ok(text) = std::fs::read_to_string(log) else {
        return;
    };
    for line in text.lines().filter(|l| l.contains("memory limits: cgroup")) {
        let Some(root) = line
            .split_once(" under ")
            .and_then(|(_, r)| r.split(" (").next())
            .map(PathBuf::from)
        else {
            continue;
        };
        if !root.starts_with("/sys/fs/cgroup") {
            continue;
        }
        if let Ok(entries) = std::fs::read_dir(&root) {
            for e in entries.flatten() {
                if e.path().is_dir() {
                    let _ = std::fs::remove_dir(e.path());
                }
            }
        }
        let _ = std::fs::remove_dir(&root);
    }
}

fn session_name(tag: u64) -> String {
    format!("s{tag}")
}

impl Peer for Sessionlet {
    fn name(&self) -> &'static str {
        self.label
    }
    fn prepare(&mut self, dir: &Path, tags: &[u64]) -> Result<()> {
        self.dir = dir.join("sessions");
        self.stage_dir = dir.join("stage");
        std::fs::create_dir_all(&self.dir)?;
        std::fs::create_dir_all(&self.stage_dir)?;
        for &t in tags {
            let name = session_name(t);
            write(
                &self.dir.join(format!("{name}.yaml")),
                &Self::manifest(&name, t),
            )?;
        }
        self.log = dir.join("controller.log");
        Ok(())
    }
    fn start(&mut self) -> Result<()> {
        let mut cmd = Command::new(&self.bin);
        cmd.arg("run")
            .arg("--dir")
            .arg(&self.dir)
            .args(&self.extra_args)
            .args(
                self.metrics_port
                    .map(|p| vec!["--metrics-addr".to_string(), format!("127.0.0.1:{p}")])
                    .unwrap_or_default(),
            )
            .env("RUST_LOG", &self.rust_log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file(&self.log)?);
        let child = cmd
            .spawn()
            .with_context(|| format!("start {}", self.bin.display()))?;
        self.controller = Some(child.id());
        self.keeper = None;
        Ok(())
    }
    fn session_parents(&mut self, _: &Tracker) -> Vec<u32> {
        self.keeper().into_iter().collect()
    }
    fn stage(&mut self, tag: u64) -> Result<()> {
        let name = session_name(tag);
        let staged = self.stage_dir.join(format!("{name}.yaml"));
        write(&staged, &Self::manifest(&name, tag))?;
        self.staged = Some((staged, self.dir.join(format!("{name}.yaml"))));
        Ok(())
    }
    fn commit(&mut self) -> Result<()> {
        let (from, to) = self.staged.take().context("nothing staged")?;
        std::fs::rename(&from, &to)?;
        Ok(())
    }
    fn supervisor_pids(&self) -> Vec<(String, u32)> {
        let mut v = Vec::new();
        if let Some(c) = self.controller {
            v.push(("controller".to_string(), c));
        }
        if let Some(k) = self.keeper {
            v.push(("keeper".to_string(), k));
        }
        v
    }
    fn healthy(&self) -> bool {
        self.controller.is_some_and(procfs::alive)
    }
    fn status_dir(&self) -> Option<PathBuf> {
        Some(self.dir.clone())
    }
    fn reset(&mut self) {
        self.controller = None;
        self.keeper = None;
        remove_cgroups(&self.log);
    }
    fn set_extra_args(&mut self, args: &[&str]) {
        self.extra_args = self.base_args.clone();
        self.extra_args.extend(args.iter().map(|a| a.to_string()));
    }
    fn set_metrics_port(&mut self, port: Option<u16>) {
        self.metrics_port = port;
    }
    fn metrics_port(&self) -> Option<u16> {
        self.metrics_port
    }
}

// ------------------------------------------------------------------ raw floor

/// The floor: this process fork+execs `/bin/sleep` itself, no supervisor.
pub struct Raw {
    tags: Vec<u64>,
    staged: Option<u64>,
    spawned: Vec<u32>,
}

impl Raw {
    /// A raw spawn loop.
    pub fn new() -> Self {
        Raw {
            tags: Vec::new(),
            staged: None,
            spawned: Vec::new(),
        }
    }
}

/// fork + execv `/bin/sleep TAG` in its own process group, as a supervisor would.
pub fn fork_exec_sleep(tag: u64) -> Result<u32> {
    let path = CString::new("/bin/sleep")?;
    let arg = CString::new(tag.to_string())?;
    let argv = [path.as_ptr(), arg.as_ptr(), std::ptr::null()];
    // SAFETY: the benchmark is single-threaded; the child only calls
    // async-signal-safe functions before exec.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        unsafe {
            libc::setpgid(0, 0);
            libc::execv(path.as_ptr(), argv.as_ptr());
            libc::_exit(127);
        }
    }
    if pid < 0 {
        bail!("fork: {}", std::io::Error::last_os_error());
    }
    Ok(pid as u32)
}

impl Peer for Raw {
    fn name(&self) -> &'static str {
        "raw-spawn"
    }
    fn prepare(&mut self, _dir: &Path, tags: &[u64]) -> Result<()> {
        self.tags = tags.to_vec();
        Ok(())
    }
    fn start(&mut self) -> Result<()> {
        for &t in &self.tags {
            let pid = fork_exec_sleep(t)?;
            self.spawned.push(pid);
        }
        Ok(())
    }
    fn session_parents(&mut self, _: &Tracker) -> Vec<u32> {
        vec![std::process::id()]
    }
    fn stage(&mut self, tag: u64) -> Result<()> {
        self.staged = Some(tag);
        Ok(())
    }
    fn commit(&mut self) -> Result<()> {
        let tag = self.staged.take().context("nothing staged")?;
        self.spawned.push(fork_exec_sleep(tag)?);
        Ok(())
    }
    fn on_killed(&mut self, pid: u32, tag: u64) -> Result<()> {
        // A blocking wait, then the replacement: the shortest possible path.
        let mut status = 0;
        // SAFETY: waitpid on our own child.
        unsafe { libc::waitpid(pid as i32, &mut status, 0) };
        self.spawned.push(fork_exec_sleep(tag)?);
        Ok(())
    }
    fn supervisor_pids(&self) -> Vec<(String, u32)> {
        Vec::new()
    }
    fn healthy(&self) -> bool {
        true
    }
    fn reset(&mut self) {
        self.spawned.clear();
    }
}

// ------------------------------------------------------------------ supervisord

/// supervisord 4: one `[program:x]` file per session in conf.d; added with
/// `supervisorctl update`.
pub struct Supervisord {
    /// supervisord.
    pub supervisord: PathBuf,
    /// supervisorctl.
    pub supervisorctl: PathBuf,
    dir: PathBuf,
    staged: Option<(PathBuf, PathBuf)>,
    pid: Option<u32>,
    ctl: Option<u32>,
}

impl Supervisord {
    /// A peer using these binaries.
    pub fn new(supervisord: PathBuf, supervisorctl: PathBuf) -> Self {
        Supervisord {
            supervisord,
            supervisorctl,
            dir: PathBuf::new(),
            staged: None,
            pid: None,
            ctl: None,
        }
    }

    fn conf(&self) -> PathBuf {
        self.dir.join("supervisord.conf")
    }

    fn program(tag: u64) -> String {
        // startsecs=0: no start probation, so a killed program restarts at
        // once (supervisord's closest setting to a zero backoff).
        format!(
            "[program:{}]\ncommand=/bin/sleep {tag}\nautostart=true\nautorestart=true\nstartsecs=0\n",
            session_name(tag)
        )
    }
}

impl Peer for Supervisord {
    fn name(&self) -> &'static str {
        "supervisord"
    }
    fn prepare(&mut self, dir: &Path, tags: &[u64]) -> Result<()> {
        self.dir = dir.to_path_buf();
        for d in ["conf.d", "logs", "stage"] {
            std::fs::create_dir_all(dir.join(d))?;
        }
        let d = dir.display();
        write(
            &self.conf(),
            &format!(
                "[unix_http_server]\nfile={d}/supervisor.sock\n\n\
                 [supervisord]\nnodaemon=true\nlogfile={d}/supervisord.log\npidfile={d}/supervisord.pid\n\
                 childlogdir={d}/logs\nminfds=8192\nminprocs=200\n\n\
                 [rpcinterface:supervisor]\nsupervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n\n\
                 [supervisorctl]\nserverurl=unix://{d}/supervisor.sock\n\n\
                 [include]\nfiles = {d}/conf.d/*.conf\n"
            ),
        )?;
        for &t in tags {
            write(
                &dir.join("conf.d").join(format!("{}.conf", session_name(t))),
                &Self::program(t),
            )?;
        }
        Ok(())
    }
    fn start(&mut self) -> Result<()> {
        let child = Command::new(&self.supervisord)
            .arg("-n")
            .arg("-c")
            .arg(self.conf())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file(&self.dir.join("stderr.log"))?)
            .spawn()
            .context("start supervisord")?;
        self.pid = Some(child.id());
        Ok(())
    }
    fn session_parents(&mut self, _: &Tracker) -> Vec<u32> {
        self.pid.into_iter().collect()
    }
    fn stage(&mut self, tag: u64) -> Result<()> {
        let name = format!("{}.conf", session_name(tag));
        let staged = self.dir.join("stage").join(&name);
        write(&staged, &Self::program(tag))?;
        self.staged = Some((staged, self.dir.join("conf.d").join(name)));
        Ok(())
    }
    fn commit(&mut self) -> Result<()> {
        let (from, to) = self.staged.take().context("nothing staged")?;
        std::fs::rename(&from, &to)?;
        let child = Command::new(&self.supervisorctl)
            .arg("-c")
            .arg(self.conf())
            .arg("update")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("supervisorctl update")?;
        self.ctl = Some(child.id());
        Ok(())
    }
    fn after_commit(&mut self) -> Result<()> {
        if let Some(pid) = self.ctl.take() {
            if !procfs::wait_child(pid, Duration::from_secs(60)) {
                procfs::kill9(pid);
                procfs::wait_child(pid, Duration::from_secs(5));
                bail!("supervisorctl update took over 60 s");
            }
        }
        Ok(())
    }
    fn supervisor_pids(&self) -> Vec<(String, u32)> {
        self.pid
            .map(|p| vec![("supervisord".to_string(), p)])
            .unwrap_or_default()
    }
    fn healthy(&self) -> bool {
        self.pid.is_some_and(procfs::alive)
    }
    fn reset(&mut self) {
        self.pid = None;
        self.ctl = None;
    }
}

// ------------------------------------------------------------------ runit

/// runit: `runsvdir` on a service folder, one `runsv` per service; a
/// service is added by renaming a prepared service folder into it.
pub struct Runit {
    /// runsvdir.
    pub runsvdir: PathBuf,
    dir: PathBuf,
    staged: Option<(PathBuf, PathBuf)>,
    pid: Option<u32>,
}

impl Runit {
    /// A peer using this runsvdir.
    pub fn new(runsvdir: PathBuf) -> Self {
        Runit {
            runsvdir,
            dir: PathBuf::new(),
            staged: None,
            pid: None,
        }
    }

    fn service(dir: &Path, tag: u64) -> Result<()> {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir_all(dir)?;
        let run = dir.join("run");
        write(&run, &format!("#!/bin/sh\nexec /bin/sleep {tag}\n"))?;
        std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o755))?;
        Ok(())
    }
}

impl Peer for Runit {
    fn name(&self) -> &'static str {
        "runit"
    }
    fn prepare(&mut self, dir: &Path, tags: &[u64]) -> Result<()> {
        self.dir = dir.to_path_buf();
        std::fs::create_dir_all(dir.join("service"))?;
        std::fs::create_dir_all(dir.join("stage"))?;
        for &t in tags {
            Self::service(&dir.join("service").join(session_name(t)), t)?;
        }
        Ok(())
    }
    fn start(&mut self) -> Result<()> {
        let child = Command::new(&self.runsvdir)
            .arg(self.dir.join("service"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file(&self.dir.join("stderr.log"))?)
            .spawn()
            .context("start runsvdir")?;
        self.pid = Some(child.id());
        Ok(())
    }
    fn session_parents(&mut self, tracker: &Tracker) -> Vec<u32> {
        // Sessions are grandchildren: runsvdir -> runsv -> sleep.
        idle_supervisors(self.pid, tracker)
    }
    fn stage(&mut self, tag: u64) -> Result<()> {
        let name = session_name(tag);
        let staged = self.dir.join("stage").join(&name);
        Self::service(&staged, tag)?;
        self.staged = Some((staged, self.dir.join("service").join(name)));
        Ok(())
    }
    fn commit(&mut self) -> Result<()> {
        let (from, to) = self.staged.take().context("nothing staged")?;
        std::fs::rename(&from, &to)?;
        Ok(())
    }
    fn supervisor_pids(&self) -> Vec<(String, u32)> {
        scanner_tree(self.pid, "runsvdir", "runsv")
    }
    fn healthy(&self) -> bool {
        self.pid.is_some_and(procfs::alive)
    }
    fn reset(&mut self) {
        self.pid = None;
    }
}

/// s6: `s6-svscan` on a scan folder, one `s6-supervise` per service; a
/// service is added by renaming a prepared service folder into the scan
/// folder, then `s6-svscanctl -a` (rescan now), which the commit times.
pub struct S6 {
    /// s6-svscan.
    pub svscan: PathBuf,
    /// s6-svscanctl.
    pub svscanctl: PathBuf,
    dir: PathBuf,
    staged: Option<(PathBuf, PathBuf)>,
    pid: Option<u32>,
}

impl S6 {
    /// A peer using these binaries.
    pub fn new(svscan: PathBuf, svscanctl: PathBuf) -> Self {
        S6 {
            svscan,
            svscanctl,
            dir: PathBuf::new(),
            staged: None,
            pid: None,
        }
    }
}

impl Peer for S6 {
    fn name(&self) -> &'static str {
        "s6"
    }
    fn prepare(&mut self, dir: &Path, tags: &[u64]) -> Result<()> {
        self.dir = dir.to_path_buf();
        std::fs::create_dir_all(dir.join("scan"))?;
        std::fs::create_dir_all(dir.join("stage"))?;
        for &t in tags {
            Runit::service(&dir.join("scan").join(session_name(t)), t)?;
        }
        Ok(())
    }
    fn start(&mut self) -> Result<()> {
        let child = Command::new(&self.svscan)
            .arg(self.dir.join("scan"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file(&self.dir.join("stderr.log"))?)
            .spawn()
            .context("start s6-svscan")?;
        self.pid = Some(child.id());
        Ok(())
    }
    fn session_parents(&mut self, tracker: &Tracker) -> Vec<u32> {
        // s6-svscan -> s6-supervise -> sleep, as runit.
        idle_supervisors(self.pid, tracker)
    }
    fn stage(&mut self, tag: u64) -> Result<()> {
        let name = session_name(tag);
        let staged = self.dir.join("stage").join(&name);
        Runit::service(&staged, tag)?;
        self.staged = Some((staged, self.dir.join("scan").join(name)));
        Ok(())
    }
    fn commit(&mut self) -> Result<()> {
        let (from, to) = self.staged.take().context("nothing staged")?;
        std::fs::rename(&from, &to)?;
        let status = Command::new(&self.svscanctl)
            .arg("-a")
            .arg(self.dir.join("scan"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .context("run s6-svscanctl -a")?;
        if !status.success() {
            anyhow::bail!("s6-svscanctl -a failed: {status}");
        }
        Ok(())
    }
    fn supervisor_pids(&self) -> Vec<(String, u32)> {
        scanner_tree(self.pid, "s6-svscan", "s6-supervise")
    }
    fn healthy(&self) -> bool {
        self.pid.is_some_and(procfs::alive)
    }
    fn reset(&mut self) {
        self.pid = None;
    }
}

/// The per-service supervisors (children of a directory scanner such as
/// runsvdir or s6-svscan) that have no running session yet: only those are
/// read for new sessions.
fn idle_supervisors(scanner: Option<u32>, tracker: &Tracker) -> Vec<u32> {
    let Some(p) = scanner else {
        return Vec::new();
    };
    procfs::children(p)
        .into_iter()
        .filter(|r| tracker.by_parent.get(r).is_none_or(|s| s.is_empty()))
        .collect()
}

/// A scanner and its per-service supervisors, named, for memory and CPU.
fn scanner_tree(scanner: Option<u32>, top: &str, each: &str) -> Vec<(String, u32)> {
    let Some(p) = scanner else {
        return Vec::new();
    };
    let mut v = vec![(top.to_string(), p)];
    for c in procfs::children(p) {
        v.push((each.to_string(), c));
    }
    v
}

// ------------------------------------------------------------------ detection

/// Finds an executable on PATH.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    for dir in std::env::split_paths(&path) {
        let p = dir.join(name);
        if let Ok(m) = std::fs::metadata(&p) {
            use std::os::unix::fs::PermissionsExt;
            if m.is_file() && m.permissions().mode() & 0o111 != 0 {
                return Some(resolve_shim(name, p));
            }
        }
    }
    None
}

/// A pyenv shim costs a bash and a pyenv run per start; use the real script.
fn resolve_shim(name: &str, p: PathBuf) -> PathBuf {
    let is_shim = std::fs::read(&p)
        .map(|b| b.starts_with(b"#!") && b.len() < 4096 && b.windows(5).any(|w| w == b"pyenv"))
        .unwrap_or(false);
    if !is_shim {
        return p;
    }
    Command::new("pyenv")
        .args(["which", name])
        .stderr(Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
        .filter(|r| r.is_file())
        .unwrap_or(p)
}

/// The first line of `cmd args` (for versions).
pub fn first_line(cmd: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new(cmd)
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .next()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
}
