//! `sessionlet logs NAME`: a session's output.
//!
//! `-f` follows the session across restarts (announcing each new attempt on
//! stderr) and ends once it is finished for good; `--previous` reads the
//! attempt before the current one, also across a spec change; `logs POOL`
//! lists the pool's members. An agent session's stdout is rendered as a
//! readable transcript unless `--raw`.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use super::read::{read_statuses, Found};
use crate::api::status::SessionStatusDoc;
use crate::runtime::layout::{parse_log_name, previous_log, tail_lines};

/// Arguments of `logs`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  sessionlet logs web --dir examples/sessions -f\n  sessionlet logs flaky --dir examples/sessions --previous --stderr --tail 50\n  sessionlet logs reviewer --dir agents --raw"
)]
pub struct Args {
    /// The session name (a pool's name lists its members).
    pub name: String,
    /// The status directory.
    #[arg(long, default_value = "examples/sessions")]
    pub dir: PathBuf,
    /// Standard error instead of standard output.
    #[arg(long)]
    pub stderr: bool,
    /// The previous attempt's output (the last attempt of the previous spec
    /// right after a spec change).
    #[arg(long)]
    pub previous: bool,
    /// Keep printing what is appended, across restarts, until the session is
    /// finished for good.
    #[arg(short, long)]
    pub follow: bool,
    /// Only the last N lines.
    #[arg(long)]
    pub tail: Option<usize>,
    /// An agent session's stream-json as the CLI wrote it, not the transcript.
    #[arg(long)]
    pub raw: bool,
}

/// Longest wait for a file event before looking again anyway (a bounded
/// safety net for missed events; without inotify, the poll interval).
const RECHECK: Duration = Duration::from_millis(500);

/// Runs `logs`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let found = read_statuses(&args.dir)?;
    if let Some(pool) = found.iter().find_map(|(_, f)| match f {
        Found::Pool(p) if p.metadata.name == args.name => Some(p),
        _ => None,
    }) {
        let members = &pool.status.members;
        eprintln!(
            "{:?} is a pool of {} member(s); choose one: sessionlet logs MEMBER --dir {}",
            args.name,
            members.len(),
            args.dir.display()
        );
        for m in members {
            eprintln!("  {}\t{}", m.name, m.phase);
        }
        return Ok(ExitCode::from(1));
    }
    let Some(status) = find_session(&found, &args.name) else {
        eprintln!("no session named {:?} in {}", args.name, args.dir.display());
        return Ok(ExitCode::from(1));
    };
    let Some(path) = log_path(&args, &status) else {
        eprintln!("session {:?} has no output yet", args.name);
        return Ok(ExitCode::from(1));
    };
    let transcript = status.status.agent.is_some() && !args.stderr && !args.raw;
    let path = if args.previous {
        match previous_of(&path, if args.stderr { "stderr" } else { "stdout" }) {
            Some(p) => p,
            None => {
                eprintln!("session {:?} has no previous attempt", args.name);
                return Ok(ExitCode::from(1));
            }
        }
    } else {
        path
    };
    let mut out = Output {
        out: std::io::stdout().lock(),
        transcript,
        partial: Vec::new(),
    };
    let mut offset = match args.tail {
        Some(n) => {
            out.write(tail_lines(&path, n).as_bytes())?;
            std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0)
        }
        None => 0,
    };
    if !args.follow || args.previous {
        if !path.exists() {
            eprintln!("cannot read {}", path.display());
            return Ok(ExitCode::from(1));
        }
        if args.tail.is_none() {
            copy_new(&path, &mut offset, &mut out)?;
        }
        out.finish()?;
        return Ok(ExitCode::SUCCESS);
    }
    follow(&args, path, offset, status.status.attempt, out)
}

/// Follows the session's current attempt, then each next one, until it is
/// finished for good (or its status is gone).
fn follow(
    args: &Args,
    mut path: PathBuf,
    mut offset: u64,
    mut attempt: u32,
    mut out: Output,
) -> anyhow::Result<ExitCode> {
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let mut watcher = notify::recommended_watcher(move |_: notify::Result<notify::Event>| {
        let _ = tx.send(());
    })
    .ok();
    let mut watched: Vec<PathBuf> = Vec::new();
    let mut watch = |dir: &Path, watcher: &mut Option<notify::RecommendedWatcher>| {
        use notify::Watcher;
        if watched.iter().any(|w| w == dir) {
            return;
        }
        if let Some(w) = watcher {
            if w.watch(dir, notify::RecursiveMode::NonRecursive).is_ok() {
                watched.push(dir.to_path_buf());
            }
        }
    };
    watch(&args.dir, &mut watcher);
    loop {
        if let Some(parent) = path.parent() {
            watch(parent, &mut watcher);
        }
        copy_new(&path, &mut offset, &mut out)?;
        let found = read_statuses(&args.dir)?;
        let Some(status) = find_session(&found, &args.name) else {
            out.finish()?;
            eprintln!("--- session {:?} is gone ---", args.name);
            return Ok(ExitCode::SUCCESS);
        };
        if let Some(now) = log_path(args, &status) {
            if now != path {
                // A new attempt: what the old one wrote last is read first,
                // then any attempt that came and went between two looks.
                copy_new(&path, &mut offset, &mut out)?;
                out.finish()?;
                for between in attempts_between(&path, &now, stream(args)) {
                    eprintln!("--- {} of {} ---", attempt_label(&between), args.name);
                    copy_new(&between, &mut 0, &mut out)?;
                    out.finish()?;
                }
                attempt = status.status.attempt;
                eprintln!(
                    "--- {} (restart {}) of {} ---",
                    attempt_label(&now),
                    status.status.restarts,
                    args.name
                );
                path = now;
                offset = 0;
                continue;
            }
        }
        if finished_for_good(&status) {
            copy_new(&path, &mut offset, &mut out)?;
            out.finish()?;
            eprintln!(
                "--- {} is {} after attempt {attempt} ---",
                args.name, status.status.phase
            );
            return Ok(ExitCode::SUCCESS);
        }
        // Bounded: a missed event (or no inotify) costs at most RECHECK.
        let _ = rx.recv_timeout(RECHECK);
        while rx.try_recv().is_ok() {}
    }
}

/// `stdout` or `stderr`.
fn stream(args: &Args) -> &'static str {
    if args.stderr {
        "stderr"
    } else {
        "stdout"
    }
}

/// `attempt N` (with `of spec generation G` after a spec change), from a log file name.
fn attempt_label(path: &Path) -> String {
    match path
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(parse_log_name)
    {
        Some((g, a)) if g > 1 => format!("attempt {a} of spec generation {g}"),
        Some((_, a)) => format!("attempt {a}"),
        None => "a new attempt".to_string(),
    }
}

/// The log files of the same folder and stream strictly between `from` and
/// `to`, oldest first.
fn attempts_between(from: &Path, to: &Path, stream: &str) -> Vec<PathBuf> {
    let key = |p: &Path| {
        p.file_name()
            .and_then(|n| n.to_str())
            .and_then(parse_log_name)
    };
    let (Some(lo), Some(hi), Some(dir)) = (key(from), key(to), to.parent()) else {
        return Vec::new();
    };
    if from.parent() != Some(dir) {
        return Vec::new();
    }
    let suffix = format!(".{stream}.log");
    let mut found: Vec<((u64, u32), PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(&suffix))
        .filter_map(|n| Some((parse_log_name(&n)?, dir.join(n))))
        .filter(|(k, _)| lo < *k && *k < hi)
        .collect();
    found.sort();
    found.into_iter().map(|(_, p)| p).collect()
}

/// True when the session will not run again without a new spec: a terminal
/// phase and no process.
fn finished_for_good(s: &SessionStatusDoc) -> bool {
    let terminal = crate::core::Phase::ALL
        .iter()
        .find(|p| p.as_str() == s.status.phase)
        .is_some_and(|p| p.is_terminal());
    terminal && s.status.pid.is_none()
}

fn find_session(found: &[(PathBuf, Found)], name: &str) -> Option<SessionStatusDoc> {
    found.iter().find_map(|(_, f)| match f {
        Found::Session(s) if s.metadata.name == name => Some((**s).clone()),
        _ => None,
    })
}

/// The current attempt's log file of the chosen stream.
fn log_path(args: &Args, s: &SessionStatusDoc) -> Option<PathBuf> {
    let logs = s.status.logs.as_ref()?;
    Some(args.dir.join(if args.stderr {
        &logs.stderr
    } else {
        &logs.stdout
    }))
}

/// The previous attempt's file beside `current`, from the folder's names.
fn previous_of(current: &Path, stream: &str) -> Option<PathBuf> {
    let dir = current.parent()?;
    let name = current.file_name()?.to_str()?;
    let names: Vec<String> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    let prev = previous_log(names.iter().map(String::as_str), name, stream)?;
    Some(dir.join(prev))
}

/// Copies what was appended to `path` since `offset`.
fn copy_new(path: &Path, offset: &mut u64, out: &mut Output) -> anyhow::Result<()> {
    let Ok(mut f) = std::fs::File::open(path) else {
        return Ok(());
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    if len < *offset {
        *offset = 0; // rotated (copy-truncate)
    }
    f.seek(SeekFrom::Start(*offset))?;
    let mut buf = Vec::new();
    f.read_to_end(&mut buf)?;
    *offset += buf.len() as u64;
    out.write(&buf)
}

/// Standard output, raw or as an agent transcript (rendered line by line).
struct Output {
    out: std::io::StdoutLock<'static>,
    transcript: bool,
    /// An incomplete last line, kept until its end arrives.
    partial: Vec<u8>,
}

impl Output {
    fn write(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        if !self.transcript {
            self.out.write_all(bytes)?;
            self.out.flush()?;
            return Ok(());
        }
        self.partial.extend_from_slice(bytes);
        let Some(end) = self.partial.iter().rposition(|b| *b == b'\n') else {
            return Ok(());
        };
        let rest = self.partial.split_off(end + 1);
        let complete = std::mem::replace(&mut self.partial, rest);
        self.render(&complete)
    }

    /// Renders what is left (a last line without its newline).
    fn finish(&mut self) -> anyhow::Result<()> {
        let rest = std::mem::take(&mut self.partial);
        self.render(&rest)
    }

    fn render(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        for line in String::from_utf8_lossy(bytes).lines() {
            for l in crate::agent::transcript::render_line(line) {
                writeln!(self.out, "{l}")?;
            }
        }
        self.out.flush()?;
        Ok(())
    }
}
