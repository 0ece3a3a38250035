//! `sessionlet describe NAME`: everything about one session or pool.

use std::path::PathBuf;
use std::process::ExitCode;

use chrono::Utc;

use super::read::{human_age, read_statuses, Found};

/// Arguments of `describe`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Example:\n  sessionlet describe flaky --dir examples/sessions")]
pub struct Args {
    /// The session or pool name.
    pub name: String,
    /// The status directory.
    #[arg(long, default_value = "examples/sessions")]
    pub dir: PathBuf,
}

/// Runs `describe`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let found = read_statuses(&args.dir)?;
    let now = Utc::now();
    let when = |t: Option<chrono::DateTime<Utc>>| {
        t.map(|t| format!("{} ({} ago)", t.to_rfc3339(), human_age(now - t)))
            .unwrap_or_else(|| "-".into())
    };
    for (path, f) in &found {
        match f {
            Found::Session(s) if s.metadata.name == args.name => {
                let st = &s.status;
                println!("Name:          {}", s.metadata.name);
                println!("Manifest:      {}", s.metadata.manifest);
                println!("Status file:   {}", path.display());
                if let Some(uid) = &s.metadata.uid {
                    println!("UID:           {uid}");
                }
                if let Some(pool) = &s.metadata.pool {
                    println!("Pool:          {pool}");
                }
                println!("Phase:         {}", st.phase);
                println!("Reason:        {}", st.reason.as_deref().unwrap_or("-"));
                println!("Message:       {}", st.message.as_deref().unwrap_or("-"));
                println!("Generation:    {}", st.observed_generation);
                println!("Attempt:       {}", st.attempt);
                println!("Restarts:      {}", st.restarts);
                println!(
                    "PID:           {}",
                    st.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into())
                );
                println!("Started:       {}", when(st.started_at));
                if st.next_restart_at.is_some() {
                    println!("Next restart:  {}", when(st.next_restart_at));
                }
                if st.finished_at.is_some() {
                    println!("Finished:      {}", when(st.finished_at));
                }
                if let Some(q) = &st.queue {
                    println!(
                        "Queue:         position {} in pool {}{}",
                        q.position,
                        q.pool,
                        q.estimated_wait_seconds
                            .map(|s| format!(", about {s}s to wait"))
                            .unwrap_or_default()
                    );
                }
                if let Some(u) = &st.usage {
                    println!(
                        "Usage:         memory {} MiB (peak {} MiB), cpu {:.1}s",
                        u.memory_bytes >> 20,
                        u.peak_memory_bytes >> 20,
                        u.cpu_seconds
                    );
                }
                if let Some(agent) = &st.agent {
                    println!("Agent:         {agent}");
                }
                if !st.errors.is_empty() {
                    println!("Errors:");
                    for e in &st.errors {
                        println!("  {e}");
                    }
                }
                println!("Conditions:");
                for c in &st.conditions {
                    println!(
                        "  {:<14} {:<6} {:<20} {}",
                        c.kind, c.status, c.reason, c.message
                    );
                }
                if let Some(e) = &st.last_exit {
                    println!("Last exit:");
                    println!("  attempt {}: {} ({})", e.attempt, e.reason, e.message);
                    if let Some(c) = e.exit_code {
                        println!("  exit code {c}");
                    }
                    if let Some(s) = &e.signal {
                        println!("  signal {s}");
                    }
                    println!("  finished {}", when(Some(e.finished_at)));
                    if let Some(a) = &e.analysis {
                        println!("  analysis: {a}");
                    }
                    if let Some(d) = &e.crash_dump {
                        println!("  crash dump: {d}");
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
                        println!("Crash dumps:");
                        for d in dumps {
                            println!("  {}", crashes_dir.join(d).display());
                        }
                    }
                }
                if let Some(l) = &st.logs {
                    println!("Logs:");
                    println!("  stdout: {}", args.dir.join(&l.stdout).display());
                    println!("  stderr: {}", args.dir.join(&l.stderr).display());
                }
                return Ok(ExitCode::SUCCESS);
            }
            Found::Pool(p) if p.metadata.name == args.name => {
                let st = &p.status;
                println!("Name:          {}", p.metadata.name);
                println!("Kind:          Pool");
                println!("Manifest:      {}", p.metadata.manifest);
                println!("Generation:    {}", st.observed_generation);
                println!(
                    "Replicas:      {} desired, {} ready",
                    st.replicas, st.ready_replicas
                );
                println!("Running:       {}", st.running);
                println!(
                    "Capacity:      {}",
                    st.capacity
                        .map(|c| c.to_string())
                        .unwrap_or_else(|| "unlimited".into())
                );
                if let Some(u) = st.utilization {
                    println!("Utilization:   {u}%");
                }
                println!("Members:");
                for m in &st.members {
                    println!(
                        "  {:<20} {:<11} pid {:<8} restarts {}",
                        m.name,
                        m.phase,
                        m.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
                        m.restarts
                    );
                }
                println!("Queue:");
                if st.queue.is_empty() {
                    println!("  (empty)");
                }
                for q in &st.queue {
                    println!(
                        "  {}. {} ({}){}",
                        q.position,
                        q.name,
                        q.priority,
                        q.estimated_wait_seconds
                            .map(|s| format!(", about {s}s"))
                            .unwrap_or_default()
                    );
                }
                let m = &st.metrics;
                println!(
                    "Metrics:       {} started, {} completed, {} failed, {} crashed, average run {}",
                    m.total_sessions,
                    m.completed,
                    m.failed,
                    m.crashed,
                    m.average_run_seconds.map(|s| format!("{s:.1}s")).unwrap_or_else(|| "-".into())
                );
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
