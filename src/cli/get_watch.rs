//! `sessionlet get -w`: after the table, one line per change as it
//! happens. From the controller's stream (`GET /api/v1/watch` on the API
//! socket) when one runs; else from the status files (notify), which a
//! controller started later writes too. Ends on Ctrl-C.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use chrono::Utc;
use serde_json::Value;

use super::get::{phase_column, reason_column, Args, Output};
use super::read::{human_age, read_statuses, Found};
use crate::api::status::{PoolStatusDoc, SessionStatusDoc};
use crate::apiserver::client::{Client, ClientError, SseReader};

/// A watch line's key fields; a line is printed when they change.
type Row = Vec<String>;

/// Runs the watch after the table was printed.
pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(watch(args))
}

async fn watch(args: &Args) -> anyhow::Result<ExitCode> {
    // One handler for the whole watch: a signal between two waits is kept.
    let mut sigint = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    let mut printed = Printed::seed(args);
    let client = Client::for_dir(&args.dir);
    loop {
        match client.send("GET", "/api/v1/watch").await {
            Ok(resp) if resp.status().is_success() => {
                let mut sse = SseReader::new(resp.into_body());
                loop {
                    tokio::select! {
                        ev = sse.next() => match ev {
                            Some((kind, doc)) => printed.on_event(args, &kind, &doc)?,
                            // The controller went away: fall back to the files.
                            None => break,
                        },
                        _ = sigint.recv() => return Ok(ExitCode::SUCCESS),
                    }
                }
            }
            Ok(resp) => anyhow::bail!("the controller's API answered {}", resp.status()),
            Err(ClientError::NoController { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        // No controller: follow the status files until one answers.
        if watch_files(args, &mut printed, &client, &mut sigint).await? {
            return Ok(ExitCode::SUCCESS);
        }
    }
}

/// Follows the status files; returns true on Ctrl-C, false once a
/// controller's socket appears.
async fn watch_files(
    args: &Args,
    printed: &mut Printed,
    client: &Client,
    sigint: &mut tokio::signal::unix::Signal,
) -> anyhow::Result<bool> {
    use notify::Watcher;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let mut watcher = notify::recommended_watcher(move |_e: notify::Result<notify::Event>| {
        let _ = tx.send(());
    })?;
    watcher.watch(&args.dir, notify::RecursiveMode::NonRecursive)?;
    let control = args.dir.join(".sessionlet");
    if control.is_dir() {
        watcher.watch(&control, notify::RecursiveMode::NonRecursive)?;
    }
    loop {
        // A controller answers (a socket left by a dead one refuses).
        if std::os::unix::net::UnixStream::connect(client.socket()).is_ok() {
            return Ok(false);
        }
        printed.read_files(args)?;
        tokio::select! {
            // A safety net for missed file events, bounded.
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            Some(()) = rx.recv() => { while rx.try_recv().is_ok() {} }
            _ = sigint.recv() => return Ok(true),
        }
    }
}

/// What was printed last per object, so that only changes print.
struct Printed {
    rows: BTreeMap<String, Row>,
}

impl Printed {
    /// The rows the table just showed.
    fn seed(args: &Args) -> Printed {
        let mut rows = BTreeMap::new();
        if let Ok(found) = read_statuses(&args.dir) {
            for (_, f) in found {
                match f {
                    Found::Session(s) if wanted(args, &s) => {
                        rows.insert(name_of(&s), key_row(&s));
                    }
                    Found::Pool(p) if wanted_pool(args, &p) => {
                        rows.insert(pool_key(&p), pool_row(&p));
                    }
                    _ => {}
                }
            }
        }
        Printed { rows }
    }

    fn on_event(&mut self, args: &Args, kind: &str, doc: &Value) -> anyhow::Result<()> {
        match kind {
            "session" => {
                if let Ok(s) = serde_json::from_value::<SessionStatusDoc>(doc.clone()) {
                    self.show(args, &s, doc)?;
                }
            }
            "pool" => {
                if let Ok(p) = serde_json::from_value::<PoolStatusDoc>(doc.clone()) {
                    self.show_pool(args, &p, doc)?;
                }
            }
            "deleted" => {
                let name = doc["name"].as_str().unwrap_or_default().to_string();
                if self.rows.remove(&name).is_some() && args.output.is_none() {
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "{name}\tDeleted")?;
                    out.flush()?;
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn read_files(&mut self, args: &Args) -> anyhow::Result<()> {
        let Ok(found) = read_statuses(&args.dir) else {
            return Ok(());
        };
        for (_, f) in found {
            match f {
                Found::Session(s) => {
                    let doc = serde_json::to_value(&s)?;
                    self.show(args, &s, &doc)?;
                }
                Found::Pool(p) => {
                    let doc = serde_json::to_value(&p)?;
                    self.show_pool(args, &p, &doc)?;
                }
            }
        }
        Ok(())
    }

    /// A pool's line when its counts change (READY, RUNNING, QUEUED, CAPACITY).
    fn show_pool(&mut self, args: &Args, p: &PoolStatusDoc, doc: &Value) -> anyhow::Result<()> {
        if !wanted_pool(args, p) {
            return Ok(());
        }
        self.emit(args, pool_key(p), pool_row(p), doc, || pool_line(p))
    }

    fn show(&mut self, args: &Args, s: &SessionStatusDoc, doc: &Value) -> anyhow::Result<()> {
        if !wanted(args, s) {
            return Ok(());
        }
        self.emit(args, name_of(s), key_row(s), doc, || line(s))
    }

    /// Prints one line (or the document with `-o json|yaml`) when the row
    /// of `name` differs from the one printed last.
    fn emit(
        &mut self,
        args: &Args,
        name: String,
        key: Row,
        doc: &Value,
        text: impl FnOnce() -> String,
    ) -> anyhow::Result<()> {
        if self.rows.get(&name) == Some(&key) {
            return Ok(());
        }
        self.rows.insert(name, key);
        let mut out = std::io::stdout().lock();
        match args.output {
            Some(Output::Json) | Some(Output::Yaml) => writeln!(out, "{doc}")?,
            _ => writeln!(out, "{}", text())?,
        }
        // A pipe reader sees each change as it happens.
        out.flush()?;
        Ok(())
    }
}

fn name_of(s: &SessionStatusDoc) -> String {
    if s.metadata.name.is_empty() {
        format!("({})", s.metadata.manifest)
    } else {
        s.metadata.name.clone()
    }
}

fn wanted(args: &Args, s: &SessionStatusDoc) -> bool {
    args.names.is_empty()
        || args
            .names
            .iter()
            .any(|n| *n == s.metadata.name || s.metadata.pool.as_ref() == Some(n))
}

/// The fields whose change is worth a line (not the age, which always moves).
fn key_row(s: &SessionStatusDoc) -> Row {
    let st = &s.status;
    vec![
        st.phase.clone(),
        st.kill_at.is_some().to_string(),
        st.restarts.to_string(),
        st.attempt.to_string(),
        st.pid.map(|p| p.to_string()).unwrap_or_default(),
        reason_column(st),
    ]
}

/// One watch line: the table's columns, tab-free and space-aligned loosely.
fn line(s: &SessionStatusDoc) -> String {
    let st = &s.status;
    let now = Utc::now();
    let since = st
        .started_at
        .or(st.finished_at)
        .or(st.run_started_at)
        .or(st.updated_at);
    format!(
        "{:<24} {:<22} {:<8} {:<6} {:<8} {}",
        name_of(s),
        phase_column(st, now),
        st.restarts,
        since
            .map(|t| human_age(now - t))
            .unwrap_or_else(|| "-".into()),
        st.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
        reason_column(st)
    )
}

/// Pools and sessions share the printed-rows map: pools under `pool/NAME`.
fn pool_key(p: &PoolStatusDoc) -> String {
    format!("pool/{}", p.metadata.name)
}

fn wanted_pool(args: &Args, p: &PoolStatusDoc) -> bool {
    args.names.is_empty() || args.names.contains(&p.metadata.name)
}

/// The pool fields whose change is worth a line.
fn pool_row(p: &PoolStatusDoc) -> Row {
    let st = &p.status;
    vec![
        st.replicas.to_string(),
        st.ready_replicas.to_string(),
        st.running.to_string(),
        st.queued.to_string(),
        format!("{:?}", st.capacity),
    ]
}

/// One watch line of a pool.
fn pool_line(p: &PoolStatusDoc) -> String {
    let st = &p.status;
    format!(
        "pool/{:<19} READY {}/{} RUNNING {} QUEUED {} CAPACITY {}",
        p.metadata.name,
        st.ready_replicas,
        st.replicas,
        st.running,
        st.queued,
        st.capacity
            .map(|c| c.to_string())
            .unwrap_or_else(|| "-".into())
    )
}
