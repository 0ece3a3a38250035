//! `sessionlet events [NAME]`: the event history, as `kubectl get events`.
//!
//! Reads the events file in the control folder, so it works with or without
//! a running controller; `-w` follows the file (inotify, through `notify`).

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use chrono::{DateTime, Utc};

use super::read::{human_age, print_table};
use crate::events::{self, Event, EventType};

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// A JSON array (with `-w`, one JSON object a line).
    Json,
}

/// Arguments of `events`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  sessionlet events --dir examples/sessions\n  sessionlet events flaky --since 1h --dir examples/sessions\n  sessionlet events -w --dir examples/sessions\n  sessionlet events -o json --dir examples/sessions | jq '.[] | select(.type == \"Warning\")'"
)]
pub struct Args {
    /// Only the events of this session or pool.
    pub name: Option<String>,
    /// Only events last seen within this long (e.g. 30m, 1h, 2d).
    #[arg(long, value_parser = parse_since)]
    pub since: Option<std::time::Duration>,
    /// Keep printing events as they happen (Ctrl-C to stop).
    #[arg(short, long)]
    pub watch: bool,
    /// Output format (default: a table).
    #[arg(short, long, value_enum)]
    pub output: Option<Output>,
    /// The status directory (the watched directory unless --status-dir was given to run).
    #[arg(long, default_value = ".")]
    pub dir: PathBuf,
}

fn parse_since(s: &str) -> Result<std::time::Duration, String> {
    s.parse::<crate::api::Duration>()
        .map(|d| d.std())
        .map_err(|e| e.to_string())
}

/// The control folder of a status directory.
fn control_dir(dir: &Path) -> PathBuf {
    dir.join(".sessionlet")
}

/// Runs `events`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if !args.dir.is_dir() {
        eprintln!(
            "sessionlet events: --dir {}: not a folder (give the status directory `sessionlet run` writes to)",
            args.dir.display()
        );
        return Ok(ExitCode::from(2));
    }
    let control = control_dir(&args.dir);
    let since = args
        .since
        .and_then(|d| chrono::Duration::from_std(d).ok())
        .map(|d| Utc::now() - d);
    let list = events::read_filtered(&control, args.name.as_deref(), since);
    let mut out = std::io::stdout().lock();
    if args.watch {
        return follow(&args, &control, since, list, &mut out);
    }
    match args.output {
        Some(Output::Json) => {
            serde_json::to_writer_pretty(&mut out, &list)?;
            writeln!(out)?;
        }
        None => {
            if list.is_empty() {
                eprintln!("{}", no_events(args.name.as_deref()));
            } else {
                print_table(&mut out, &table(&list, Utc::now()))?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn no_events(name: Option<&str>) -> String {
    match name {
        Some(n) => format!("no events for {n}"),
        None => "no events".into(),
    }
}

/// The table's rows, header first.
pub fn table(list: &[Event], now: DateTime<Utc>) -> Vec<Vec<String>> {
    let mut rows = vec![vec![
        "LAST SEEN".to_string(),
        "TYPE".into(),
        "REASON".into(),
        "OBJECT".into(),
        "COUNT".into(),
        "MESSAGE".into(),
    ]];
    rows.extend(list.iter().map(|e| row(e, now)));
    rows
}

fn row(e: &Event, now: DateTime<Utc>) -> Vec<String> {
    vec![
        human_age(now - e.last_timestamp),
        match e.kind {
            EventType::Normal => "Normal".into(),
            EventType::Warning => "Warning".into(),
        },
        e.reason.clone(),
        format!("{}/{}", e.object.kind.to_lowercase(), e.object.name),
        e.count.to_string(),
        e.message.clone(),
    ]
}

/// Prints what there is, then every new or repeated event as it is
/// written, until interrupted.
fn follow(
    args: &Args,
    control: &Path,
    since: Option<DateTime<Utc>>,
    first: Vec<Event>,
    out: &mut impl Write,
) -> anyhow::Result<ExitCode> {
    use notify::Watcher;
    let (tx, rx) = std::sync::mpsc::channel();
    // Watch the folder (the file may not exist yet, and rotation replaces it).
    let _ = crate::runtime::files::create_dir(control);
    let mut watcher: Box<dyn Watcher> = match notify::recommended_watcher(tx.clone()) {
        Ok(w) => Box::new(w),
        Err(_) => Box::new(notify::PollWatcher::new(
            tx,
            notify::Config::default().with_poll_interval(std::time::Duration::from_secs(1)),
        )?),
    };
    watcher
        .watch(control, notify::RecursiveMode::NonRecursive)
        .map_err(|e| anyhow::anyhow!("cannot watch {}: {e}", control.display()))?;
    let mut printed: HashMap<String, u64> = HashMap::new();
    let key = |e: &Event| {
        format!(
            "{}\u{0}{}\u{0}{}\u{0}{}\u{0}{}",
            e.object.kind, e.object.name, e.reason, e.message, e.first_timestamp
        )
    };
    let json = args.output == Some(Output::Json);
    let mut show = |list: &[Event], out: &mut dyn Write, header: bool| -> anyhow::Result<()> {
        let fresh: Vec<Event> = list
            .iter()
            .filter(|e| printed.get(&key(e)).is_none_or(|c| *c < e.count))
            .cloned()
            .collect();
        for e in &fresh {
            printed.insert(key(e), e.count);
        }
        if json {
            for e in &fresh {
                serde_json::to_writer(&mut *out, e)?;
                writeln!(out)?;
            }
        } else if header || !fresh.is_empty() {
            let mut rows = table(&fresh, Utc::now());
            if !header {
                rows.remove(0);
            }
            // Fixed widths so that lines printed later line up with the first.
            for r in rows {
                writeln!(
                    out,
                    "{:<9}  {:<7}  {:<20}  {:<28}  {:<5}  {}",
                    r[0], r[1], r[2], r[3], r[4], r[5]
                )?;
            }
        }
        out.flush()?;
        Ok(())
    };
    show(&first, out, true)?;
    // Each change to the folder: read again, print what is new.
    for ev in rx {
        // The folder changes often (the controller's own status): only the
        // events files matter.
        let ours = ev.is_ok_and(|e| {
            e.paths.iter().any(|p| {
                p.file_name()
                    .is_some_and(|n| n == events::FILE || n == events::OLD_FILE)
            })
        });
        if !ours {
            continue;
        }
        let list = events::read_filtered(control, args.name.as_deref(), since);
        show(&list, out, false)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Events shown at the end of `describe`.
const RECENT: usize = 15;

/// The `Events:` block `describe` ends with: the object's latest events.
pub fn write_recent(out: &mut impl Write, dir: &Path, name: &str) -> std::io::Result<()> {
    let list = events::read_filtered(&control_dir(dir), Some(name), None);
    writeln!(out, "Events:")?;
    if list.is_empty() {
        writeln!(out, "  <none>")?;
        return Ok(());
    }
    let skip = list.len().saturating_sub(RECENT);
    let rows = table(&list[skip..], Utc::now());
    let mut text = Vec::new();
    print_table(&mut text, &rows)?;
    for line in String::from_utf8_lossy(&text).lines() {
        writeln!(out, "  {line}")?;
    }
    Ok(())
}
