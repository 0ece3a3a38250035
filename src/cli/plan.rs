//! `sessionlet plan`: what the controller would do with the manifests as
//! they are now, against the recorded statuses, without running anything.
//!
//! The desired state is the catalog's (as a starting controller builds it,
//! remembering identities and generations from the status files), the
//! state is restored from the status files as a starting controller
//! restores it (a session they say runs is taken as running: the keeper is
//! not asked), and the decisions are one [`crate::core::reconcile()`]
//! ([`crate::core::preview`]).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use chrono::Utc;
use serde::Serialize;

use crate::core::preview::{self, Change};
use crate::core::State;
use crate::runtime::adopt;
use crate::runtime::catalog::{Catalog, Entry};

/// Output formats of `plan`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// One line per change.
    Text,
    /// One JSON object: `changes`, `refused`, `kept`.
    Json,
}

/// Arguments of `plan`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Exit status: 0 when nothing would change, 2 when something would, 1 on an error.\n\nExamples:\n  sessionlet plan --dir examples/sessions\n  sessionlet plan --dir deploy/sessions --status-dir /var/lib/sessionlet -o json"
)]
pub struct Args {
    /// The directory of manifests.
    #[arg(long, default_value = ".")]
    pub dir: PathBuf,
    /// Where the controller writes statuses (default: the manifest directory).
    #[arg(long)]
    pub status_dir: Option<PathBuf>,
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

/// A manifest the controller would refuse.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Refusal {
    /// The manifest file, relative to the manifest directory.
    pub file: String,
    /// `FILE:LINE:COL: error: ...`, or why the name is taken.
    pub message: String,
}

/// A running session whose manifest is invalid: the last good spec stays in force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Kept {
    /// The session.
    pub name: String,
    /// The manifest file.
    pub file: String,
}

/// Everything `plan` reports.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    /// What the controller would do to sessions.
    pub changes: Vec<Change>,
    /// Manifests it would refuse.
    pub refused: Vec<Refusal>,
    /// Sessions it would keep running on their last good spec.
    pub kept: Vec<Kept>,
}

impl Report {
    /// True when the controller would change something (a refusal counts:
    /// it writes an Invalid status).
    pub fn changes_anything(&self) -> bool {
        !self.changes.is_empty() || !self.refused.is_empty()
    }
}

/// Runs `plan`: exit 0 when nothing would change, 2 when something would.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let dir = std::fs::canonicalize(&args.dir)
        .map_err(|e| anyhow::anyhow!("manifest directory {}: {e}", args.dir.display()))?;
    let status_dir = match &args.status_dir {
        Some(s) => std::fs::canonicalize(s)
            .map_err(|e| anyhow::anyhow!("status directory {}: {e}", s.display()))?,
        None => dir.clone(),
    };
    let report = compute(&dir, &status_dir);
    let mut out = std::io::stdout().lock();
    match args.output {
        Output::Json => writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?,
        Output::Text => write!(out, "{}", render(&report))?,
    }
    Ok(if report.changes_anything() {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}

/// The report for the manifests in `dir` against the statuses in `status_dir`.
pub fn compute(dir: &Path, status_dir: &Path) -> Report {
    let now = Utc::now();
    let previous = adopt::previous_statuses(status_dir, now);
    let mut catalog = Catalog::default();
    for p in &previous {
        if !p.invalid {
            catalog.remember_holder(p.kind, &p.name, &p.stem);
        }
        catalog.remember(p.kind, &p.name, p.known.clone());
    }
    let desired = catalog.rescan(dir, now).unwrap_or_default();
    let mut state = State::default();
    let mut stems = std::collections::BTreeMap::new();
    for p in previous.iter().filter(|p| p.kind == "Session") {
        if let Some((_, rec)) = adopt::restore_record(&p.doc) {
            state.sessions.insert(p.name.clone(), rec);
            stems.insert(p.name.clone(), p.stem.clone());
        }
    }
    let mut report = Report::default();
    let file_of = |path: &Path| {
        path.strip_prefix(dir)
            .unwrap_or(path)
            .to_string_lossy()
            .into_owned()
    };
    // Problems name files relative to the manifest directory, as `validate DIR` does.
    let prefix = format!("{}/", dir.display());
    let relative = |m: &str| m.strip_prefix(&prefix).unwrap_or(m).to_string();
    for p in &catalog.refused {
        report.refused.push(Refusal {
            file: file_of(&p.file),
            message: relative(&p.to_string()),
        });
    }
    for view in catalog.views.values() {
        let file = file_of(&view.path);
        let mut invalid_names = Vec::new();
        let mut whole_file_invalid = false;
        for entry in &view.entries {
            match entry {
                Entry::Invalid { name, problems, .. } => {
                    match name {
                        Some(n) => invalid_names.push(n.clone()),
                        None => whole_file_invalid = true,
                    }
                    for message in problems {
                        report.refused.push(Refusal {
                            file: file.clone(),
                            message: relative(message),
                        });
                    }
                }
                Entry::Duplicate {
                    kind,
                    name,
                    winner,
                    held,
                } => {
                    report.refused.push(Refusal {
                        file: file.clone(),
                        message: format!(
                            "{file}: {}",
                            crate::runtime::catalog::duplicate_message(kind, name, winner, *held)
                        ),
                    });
                }
                Entry::Session(_) | Entry::Pool(_) => {}
            }
        }
        // A running session whose file turned invalid keeps its last good
        // spec: it is neither stopped nor restarted.
        let kept: Vec<String> = state
            .sessions
            .keys()
            .filter(|n| !desired.sessions.contains_key(*n))
            .filter(|n| {
                invalid_names.contains(n)
                    || (whole_file_invalid && stems.get(*n) == Some(&view.stem))
            })
            .cloned()
            .collect();
        for name in kept {
            state.sessions.remove(&name);
            report.kept.push(Kept {
                name,
                file: file.clone(),
            });
        }
    }
    report.changes = preview::preview(&desired, &state, now);
    report
}

/// The text form: one line per change, refusal and kept session.
pub fn render(report: &Report) -> String {
    let mut text = String::new();
    for c in &report.changes {
        text.push_str(c.verb.as_str());
        text.push(' ');
        text.push_str(&c.name);
        if !c.why.is_empty() {
            text.push_str(&format!(" ({})", c.why));
        }
        text.push('\n');
    }
    for k in &report.kept {
        text.push_str(&format!(
            "keep {} (its manifest {} is invalid; the last good spec stays in force)\n",
            k.name, k.file
        ));
    }
    for r in &report.refused {
        text.push_str(&format!("refuse {}\n", r.message));
    }
    if !report.changes_anything() {
        text.push_str("nothing to do: every session matches its manifest\n");
    }
    text
}
