//! `sessionlet logs NAME`: a session's output.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use super::read::{read_statuses, Found};
use crate::runtime::layout::tail_lines;

/// Arguments of `logs`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  sessionlet logs web --dir examples/sessions -f\n  sessionlet logs flaky --dir examples/sessions --previous --stderr --tail 50"
)]
pub struct Args {
    /// The session name.
    pub name: String,
    /// The status directory.
    #[arg(long, default_value = "examples/sessions")]
    pub dir: PathBuf,
    /// Standard error instead of standard output.
    #[arg(long)]
    pub stderr: bool,
    /// The previous attempt's output.
    #[arg(long)]
    pub previous: bool,
    /// Keep printing what is appended.
    #[arg(short, long)]
    pub follow: bool,
    /// Only the last N lines.
    #[arg(long)]
    pub tail: Option<usize>,
}

/// Runs `logs`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let found = read_statuses(&args.dir)?;
    let Some(status) = found.iter().find_map(|(_, f)| match f {
        Found::Session(s) if s.metadata.name == args.name => Some(s),
        _ => None,
    }) else {
        eprintln!("no session named {:?} in {}", args.name, args.dir.display());
        return Ok(ExitCode::from(1));
    };
    let Some(logs) = &status.status.logs else {
        eprintln!("session {:?} has no output yet", args.name);
        return Ok(ExitCode::from(1));
    };
    let mut path = args.dir.join(if args.stderr {
        &logs.stderr
    } else {
        &logs.stdout
    });
    if args.previous {
        let attempt = status.status.attempt;
        if attempt < 2 {
            eprintln!("session {:?} has no previous attempt", args.name);
            return Ok(ExitCode::from(1));
        }
        let file = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        let prev = file.replacen(
            &format!("attempt-{attempt}."),
            &format!("attempt-{}.", attempt - 1),
            1,
        );
        path.set_file_name(prev);
    }
    let mut out = std::io::stdout().lock();
    let mut offset = match args.tail {
        Some(n) => {
            out.write_all(tail_lines(&path, n).as_bytes())?;
            std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0)
        }
        None => 0,
    };
    loop {
        if let Ok(mut f) = std::fs::File::open(&path) {
            let len = f.metadata().map(|m| m.len()).unwrap_or(0);
            if len < offset {
                offset = 0; // rotated (copy-truncate)
            }
            f.seek(SeekFrom::Start(offset))?;
            let mut buf = Vec::new();
            f.read_to_end(&mut buf)?;
            offset += buf.len() as u64;
            out.write_all(&buf)?;
            out.flush()?;
        } else if !args.follow {
            eprintln!("cannot read {}", path.display());
            return Ok(ExitCode::from(1));
        }
        if !args.follow {
            return Ok(ExitCode::SUCCESS);
        }
        // Following a file a person watches: a short wait between reads is fine here.
        std::thread::sleep(Duration::from_millis(250));
    }
}
