//! Spawning: everything a new attempt needs, made ready without waiting, then asked of the keeper.

use super::*;

impl Controller {
    /// Everything a spawn needs (log files, stdin, charter, cgroup), made
    /// ready without waiting on anything.
    pub(super) fn prepare_spawn(
        &mut self,
        name: &str,
        attempt: u32,
    ) -> Result<(Identity, SpawnRequest, Live), process::SpawnError> {
        let fail = |message: String| process::SpawnError {
            reason: Reason::SpawnFailed,
            message,
        };
        let d = self
            .model
            .desired
            .sessions
            .get(name)
            .ok_or_else(|| fail("the session is no longer declared".into()))?;
        let stem = self.stem_of(name);
        let shared = self
            .model
            .catalog
            .views
            .get(&stem)
            .is_some_and(|v| v.shared);
        let log_dir = self.layout.logs_dir(&stem, name, shared);
        create_dir(&log_dir)
            .map_err(|e| fail(format!("cannot create {}: {e}", log_dir.display())))?;
        let generation = self
            .model
            .desired
            .sessions
            .get(name)
            .map_or(1, |d| d.generation);
        let (stdout, stderr) = attempt_logs(&log_dir, generation, attempt);
        // Older attempts' logs go once the request is sent.
        self.chores.prune_logs(
            log_dir.clone(),
            generation,
            attempt,
            self.opts.max_attempt_logs,
        );
        let spec = &d.spec;
        let cwd = match &spec.working_dir {
            Some(w) if w.is_absolute() => w.clone(),
            Some(w) => self.layout.manifest_dir.join(w),
            None => self.layout.manifest_dir.clone(),
        };
        let cwd = crate::runtime::workspace::cwd_for(
            &mut self.workspaces,
            d,
            cwd,
            &self.layout.manifest_dir,
            &self.layout.status_dir,
        )?;
        let spec = spec.clone();
        let mut extra_env: Vec<(String, String)> = Vec::new();
        let mut stdin_text = spec
            .stdin
            .as_ref()
            .and_then(|s| s.text())
            .map(str::to_string);
        let argv = if spec.agent.is_some() {
            let launch = self.agents.launch(
                name,
                &spec,
                generation,
                attempt,
                &self.layout.manifest_dir,
                &stdout,
            )?;
            if let Some(charter) = &launch.charter {
                // Not fsynced: it must outlive the controller, not a power
                // cut (which ends the session anyway); no fsync on the spawn path.
                let p = log_dir.join("charter.md");
                crate::runtime::files::write_atomic_with(&p, charter.as_bytes(), false)
                    .map_err(|e| fail(format!("cannot write {}: {e}", p.display())))?;
            }
            extra_env = launch.env;
            if launch.stdin.is_some() {
                stdin_text = launch.stdin;
            }
            if let Some(w) = &self.agent_watcher {
                use notify::Watcher;
                let _ = w
                    .lock()
                    .map(|mut w| w.watch(&log_dir, notify::RecursiveMode::NonRecursive));
            }
            launch.argv
        } else {
            let argv = spec.command.clone().unwrap_or_default();
            // The global policy and the charter's constraints apply to plain commands too.
            if let Some(v) = self.agents.policy(&spec).check_argv(&argv) {
                return Err(process::SpawnError {
                    reason: Reason::PolicyViolation,
                    message: format!("refused before running: {v}"),
                });
            }
            argv
        };
        let stdin = match &stdin_text {
            Some(text) => {
                let p = log_dir.join("stdin");
                crate::runtime::files::write_atomic_with(&p, text.as_bytes(), false)
                    .map_err(|e| fail(format!("cannot write {}: {e}", p.display())))?;
                Some(p)
            }
            None => None,
        };
        let user = resolve_user(spec.user.as_deref(), spec.group.as_deref())?;
        let uid = self
            .model
            .catalog
            .known("Session", name)
            .map(|k| k.uid.to_string())
            .unwrap_or_default();
        // Last, so that nothing in the manifest overrides it: the marker
        // that finds the session's double-forked daemons.
        extra_env.extend(crate::runtime::contain::marker(name, &uid));
        let mut req = SpawnRequest {
            argv: argv.clone(),
            cwd: cwd.clone(),
            env: crate::runtime::session_env::build(
                &spec,
                extra_env,
                &self.opts.pass_env,
                &self.layout.manifest_dir,
            )?,
            stdin,
            stdin_pipe: crate::runtime::inbox::wants_pipe(&spec),
            stdout: stdout.clone(),
            stderr: stderr.clone(),
            user,
            cgroup_procs: None,
        };
        let mut cgroup = None;
        let mut oom_baseline = 0;
        let mut join_after_spawn = false;
        // Every session gets its own cgroup where cgroups are available, so
        // that a stop reaches even daemonized descendants. A session with a
        // memory limit, and every agent, joins it in the child before exec
        // (the limit holds from the first byte). The others join right after
        // they started, from the joiner thread: on cgroup v1 an isolated
        // join waits 10-15 ms for an RCU grace period (BENCHMARK.md), which
        // must not sit on every spawn; the environment marker covers the
        // window.
        let joins_before_exec = spec.resources.max_memory.is_some() || spec.agent.is_some();
        if let crate::runtime::cgroup::Mode::Cgroup { root, v2 } = &self.memory_mode {
            let path = crate::runtime::cgroup::session_path(root, name);
            if !joins_before_exec {
                // Made and joined by the joiner thread: a mkdir in a v1
                // memory hierarchy costs a few hundred microseconds, which
                // must not sit on the spawn path either. The OOM baseline
                // is one read (0 when the cgroup is new), so that a kill
                // counted under an earlier, limited spec is not blamed on
                // this attempt.
                oom_baseline = crate::runtime::cgroup::oom_kills(&path, *v2);
                join_after_spawn = true;
                cgroup = Some(path);
            } else {
                match crate::runtime::cgroup::prepare(
                    &path,
                    *v2,
                    spec.resources.max_memory.map(|q| q.0),
                ) {
                    Ok(()) => {
                        oom_baseline = crate::runtime::cgroup::oom_kills(&path, *v2);
                        req.cgroup_procs = Some(crate::runtime::cgroup::procs_file(&path));
                        cgroup = Some(path);
                    }
                    Err(e) => {
                        let msg = format!("cannot create the memory cgroup {}: {e}; the limit is enforced by sampling", path.display());
                        self.error(ShellError::Cgroup(msg));
                    }
                }
            }
        }
        let identity = Identity {
            session: name.to_string(),
            uid: uid.clone(),
            generation,
            attempt,
        };
        let live = Live {
            stem,
            log_dir,
            stdout,
            stderr,
            start_ticks: None,
            argv,
            cwd,
            cgroup,
            oom_baseline,
            join_after_spawn,
            uid,
        };
        Ok((identity, req, live))
    }

    /// Asks the keeper for a spawn; its reply arrives as an event.
    pub(super) fn spawn(&mut self, name: &str, attempt: u32) -> Result<(), process::SpawnError> {
        let (identity, req, live) = self.prepare_spawn(name, attempt)?;
        let Some(tx) = &self.link.tx else {
            return Err(process::SpawnError {
                reason: Reason::SpawnFailed,
                message: "the keeper is not reachable; retrying".into(),
            });
        };
        let tag = self.procs.ask(name, attempt, live);
        if !tx.spawn(tag, identity, req) {
            self.procs.withdraw(tag);
            return Err(process::SpawnError {
                reason: Reason::SpawnFailed,
                message: "the keeper connection closed; retrying".into(),
            });
        }
        Ok(())
    }
}

/// The uid/gid a session runs as: `spec.user` / `spec.group`, which only a
/// controller running as root may grant.
pub(super) fn resolve_user(
    user: Option<&str>,
    group: Option<&str>,
) -> Result<Option<(u32, u32)>, process::SpawnError> {
    if user.is_none() && group.is_none() {
        return Ok(None);
    }
    let fail = |message: String| process::SpawnError {
        reason: Reason::PermissionDenied,
        message,
    };
    if !nix::unistd::geteuid().is_root() {
        return Err(fail(
            "spec.user / spec.group need the controller to run as root; remove them or run sessionlet as root".into(),
        ));
    }
    let (mut uid, mut gid) = (0, 0);
    if let Some(u) = user {
        let found = match u.parse::<u32>() {
            Ok(id) => nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(id)),
            Err(_) => nix::unistd::User::from_name(u),
        };
        let pw = found
            .ok()
            .flatten()
            .ok_or_else(|| fail(format!("spec.user {u:?} does not exist on this machine")))?;
        uid = pw.uid.as_raw();
        gid = pw.gid.as_raw();
    }
    if let Some(g) = group {
        let found = match g.parse::<u32>() {
            Ok(id) => nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(id)),
            Err(_) => nix::unistd::Group::from_name(g),
        };
        gid = found
            .ok()
            .flatten()
            .ok_or_else(|| fail(format!("spec.group {g:?} does not exist on this machine")))?
            .gid
            .as_raw();
    }
    Ok(Some((uid, gid)))
}

/// Keeps the logs of the newest `keep` attempts.
pub(super) fn prune_attempt_logs(dir: &Path, generation: u64, attempt: u32, keep: u32) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some((g, n)) = crate::runtime::layout::parse_log_name(&name) else {
            continue;
        };
        // This run keeps its newest `keep` attempts; the run before it stays
        // readable (`logs --previous`, a changed spec); older runs go.
        let old_attempt = g == generation && n + keep <= attempt;
        let old_run = g + 1 < generation;
        if old_attempt || old_run {
            let _ = std::fs::remove_file(e.path());
        }
    }
}
