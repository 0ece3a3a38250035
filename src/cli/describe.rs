//! `sessionlet describe NAME`: everything about one session or pool.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use chrono::Utc;

use super::read::{read_statuses, relative_time, warn_if_no_controller, Found};

/// Arguments of `describe`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Example:\n  sessionlet describe flaky --dir examples/sessions")]
pub struct Args {
    /// The session or pool name.
    pub name: String,
    /// The status directory.
    #[arg(long, default_value = "examples/sessions")]
    pub dir: PathBuf,
    /// Scale-out: the session as the fleet sees it in etcd (its node).
    #[command(flatten)]
    pub fleet: crate::fleet::view::ViewFlags,
}

/// Runs `describe`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut found = read_statuses(&args.dir)?;
    match crate::fleet::view::fetch(&args.fleet) {
        Ok(Some(snap)) => {
            let declared = crate::fleet::view::declared_here(&args.dir);
            crate::fleet::view::merge(&mut found, &snap, &declared);
        }
        Ok(None) => {}
        Err(e) => {
            eprintln!("sessionlet: {e}");
            return Ok(ExitCode::from(2));
        }
    }
    warn_if_no_controller(&args.dir);
    let mut out = std::io::stdout().lock();
    let now = Utc::now();
    let when = |t: Option<chrono::DateTime<Utc>>| {
        t.map(|t| format!("{} ({})", t.to_rfc3339(), relative_time(now, t)))
            .unwrap_or_else(|| "-".into())
    };
    for (path, f) in &found {
        match f {
            Found::Session(s) if s.metadata.name == args.name => {
                let st = &s.status;
                writeln!(out, "Name:          {}", s.metadata.name)?;
                writeln!(out, "Manifest:      {}", s.metadata.manifest)?;
                if path.as_os_str().is_empty() {
                    // Known from etcd alone (this checkout is behind).
                    writeln!(out, "Status file:   - (none on this node)")?;
                } else {
                    writeln!(out, "Status file:   {}", path.display())?;
                }
                if let Some(node) = &st.node {
                    writeln!(out, "Node:          {node}")?;
                } else if args.fleet.endpoints.is_some() {
                    writeln!(out, "Node:          <none>")?;
                }
                if let Some(uid) = &s.metadata.uid {
                    writeln!(out, "UID:           {uid}")?;
                }
                if let Some(pool) = &s.metadata.pool {
                    writeln!(out, "Pool:          {pool}")?;
                }
                writeln!(out, "Phase:         {}", st.phase)?;
                writeln!(
                    out,
                    "Reason:        {}",
                    st.reason.as_deref().unwrap_or("-")
                )?;
                writeln!(
                    out,
                    "Message:       {}",
                    st.message.as_deref().unwrap_or("-")
                )?;
                writeln!(out, "Generation:    {}", st.observed_generation)?;
                writeln!(out, "Attempt:       {}", st.attempt)?;
                writeln!(out, "Restarts:      {}", st.restarts)?;
                writeln!(
                    out,
                    "PID:           {}",
                    st.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into())
                )?;
                writeln!(out, "Started:       {}", when(st.started_at))?;
                if st.next_restart_at.is_some() {
                    writeln!(out, "Next restart:  {}", when(st.next_restart_at))?;
                }
                if st.finished_at.is_some() {
                    writeln!(out, "Finished:      {}", when(st.finished_at))?;
                }
                if let Some(q) = &st.queue {
                    writeln!(
                        out,
                        "Queue:         position {} in pool {}{}",
                        q.position,
                        q.pool,
                        q.estimated_wait_seconds
                            .map(|s| format!(", about {s}s to wait"))
                            .unwrap_or_default()
                    )?;
                }
                if let Some(u) = &st.usage {
                    writeln!(
                        out,
                        "Usage:         memory {} MiB (peak {} MiB), cpu {:.1}s",
                        u.memory_bytes >> 20,
                        u.peak_memory_bytes >> 20,
                        u.cpu_seconds
                    )?;
                }
                if let Some(agent) = &st.agent {
                    writeln!(out, "Agent:")?;
                    write_yaml(&mut out, agent)?;
                    if let Some(note) = denials(agent) {
                        writeln!(out, "Denied:        {note}")?;
                    }
                }
                if !st.errors.is_empty() {
                    writeln!(out, "Errors:")?;
                    for e in &st.errors {
                        writeln!(out, "  {e}")?;
                    }
                }
                writeln!(out, "Conditions:")?;
                for c in &st.conditions {
                    writeln!(
                        out,
                        "  {:<14} {:<6} {:<20} {}",
                        c.kind, c.status, c.reason, c.message
                    )?;
                }
                if let Some(e) = &st.last_exit {
                    writeln!(out, "Last exit:")?;
                    writeln!(out, "  attempt {}: {} ({})", e.attempt, e.reason, e.message)?;
                    if let Some(c) = e.exit_code {
                        writeln!(out, "  exit code {c}")?;
                    }
                    if let Some(s) = &e.signal {
                        writeln!(out, "  signal {s}")?;
                    }
                    writeln!(out, "  finished {}", when(Some(e.finished_at)))?;
                    if let Some(a) = &e.analysis {
                        writeln!(out, "  analysis:")?;
                        write_yaml(&mut out, a)?;
                    }
                    if let Some(d) = &e.crash_dump {
                        writeln!(out, "  crash dump: {d}")?;
                    }
                }
                let crashes_dir = args.dir.join(format!(
                    "{}.crashes",
                    s.metadata
                        .manifest
                        .trim_end_matches(".yaml")
                        .trim_end_matches(".yml")
                ));
                if let Ok(entries) = std::fs::read_dir(&crashes_dir) {
                    let mut dumps: Vec<String> = entries
                        .filter_map(|e| e.ok()?.file_name().into_string().ok())
                        .filter(|n| n.starts_with(&format!("{}-", s.metadata.name)))
                        .collect();
                    dumps.sort();
                    if !dumps.is_empty() {
                        writeln!(out, "Crash dumps:")?;
                        for d in dumps {
                            writeln!(out, "  {}", crashes_dir.join(d).display())?;
                        }
                    }
                }
                if let Some(l) = &st.logs {
                    writeln!(out, "Logs:")?;
                    writeln!(out, "  stdout: {}", args.dir.join(&l.stdout).display())?;
                    writeln!(out, "  stderr: {}", args.dir.join(&l.stderr).display())?;
                }
                super::events::write_recent(&mut out, &args.dir, &s.metadata.name)?;
                return Ok(ExitCode::SUCCESS);
            }
            Found::Pool(p) if p.metadata.name == args.name => {
                let st = &p.status;
                writeln!(out, "Name:          {}", p.metadata.name)?;
                writeln!(out, "Kind:          Pool")?;
                writeln!(out, "Manifest:      {}", p.metadata.manifest)?;
                writeln!(out, "Generation:    {}", st.observed_generation)?;
                writeln!(
                    out,
                    "Replicas:      {} desired, {} ready",
                    st.replicas, st.ready_replicas
                )?;
                writeln!(out, "Running:       {}", st.running)?;
                writeln!(
                    out,
                    "Capacity:      {}",
                    st.capacity
                        .map(|c| c.to_string())
                        .unwrap_or_else(|| "unlimited".into())
                )?;
                if let Some(u) = st.utilization {
                    writeln!(out, "Utilization:   {u}%")?;
                }
                writeln!(out, "Members:")?;
                for m in &st.members {
                    writeln!(
                        out,
                        "  {:<20} {:<11} pid {:<8} restarts {}",
                        m.name,
                        m.phase,
                        m.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
                        m.restarts
                    )?;
                }
                writeln!(out, "Queue:")?;
                if st.queue.is_empty() {
                    writeln!(out, "  (empty)")?;
                }
                for q in &st.queue {
                    writeln!(
                        out,
                        "  {}. {} ({}){}",
                        q.position,
                        q.name,
                        q.priority,
                        q.estimated_wait_seconds
                            .map(|s| format!(", about {s}s"))
                            .unwrap_or_default()
                    )?;
                }
                let m = &st.metrics;
                writeln!(out,
                    "Metrics:       {} started, {} completed, {} failed, {} crashed, average run {}",
                    m.total_sessions,
                    m.completed,
                    m.failed,
                    m.crashed,
                    m.average_run_seconds.map(|s| format!("{s:.1}s")).unwrap_or_else(|| "-".into())
                )?;
                super::events::write_recent(&mut out, &args.dir, &p.metadata.name)?;
                return Ok(ExitCode::SUCCESS);
            }
            _ => {}
        }
    }
    eprintln!(
        "no session or pool named {:?} in {}",
        args.name,
        args.dir.display()
    );
    Ok(ExitCode::from(1))
}

/// A JSON value as readable YAML, indented under its heading.
fn write_yaml(out: &mut impl Write, value: &serde_json::Value) -> anyhow::Result<()> {
    let text = crate::manifest::codec::to_yaml(value)
        .map_err(|e| anyhow::anyhow!("cannot render YAML: {e}"))?;
    for line in text.lines().filter(|l| *l != "---") {
        writeln!(out, "    {line}")?;
    }
    Ok(())
}

/// The denied tool calls of an agent block, with the rule that allows them.
fn denials(agent: &serde_json::Value) -> Option<String> {
    let list: Vec<crate::agent::PermissionDenial> =
        serde_json::from_value(agent.get("permissionDenials")?.clone()).ok()?;
    let omitted = agent
        .get("permissionDenialsOmitted")
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(0);
    crate::agent::stream::denial_note(&list, omitted)
}
