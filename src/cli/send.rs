//! `sessionlet send NAME TEXT`: a message to a running session's input
//! (`agent.input: stream`). It is queued in `.sessionlet/inbox/NAME/`
//! (runtime::inbox) and delivered by the controller at its next pass.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::runtime::inbox;
use crate::runtime::layout::Layout;

/// Arguments of `send`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  sessionlet send --dir examples/sessions chat \"Now add tests for it.\""
)]
pub struct Args {
    /// The session (its `agent.input` must be `stream`).
    pub name: String,
    /// The message.
    pub text: String,
    /// The directory of manifests the controller watches.
    #[arg(long, default_value = ".")]
    pub dir: PathBuf,
    /// Where the controller writes statuses (default: the watched directory).
    #[arg(long)]
    pub status_dir: Option<PathBuf>,
}

/// Queues the message; fails when the session is unknown or takes no input.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let status_dir = args.status_dir.clone().unwrap_or_else(|| args.dir.clone());
    let layout = Layout {
        manifest_dir: args.dir.clone(),
        status_dir,
    };
    // The session must exist and take input: its status says so.
    let status = crate::cli::read::read_statuses(&layout.status_dir)?
        .into_iter()
        .find_map(|(_, f)| match f {
            crate::cli::read::Found::Session(s) if s.metadata.name == args.name => Some(s),
            _ => None,
        });
    match status {
        Some(s)
            if !crate::core::Phase::ALL
                .iter()
                .any(|p| p.is_terminal() && p.as_str() == s.status.phase) => {}
        Some(s) => anyhow::bail!(
            "session {} is {}: nothing reads its input any more; edit its manifest to run it again",
            args.name,
            s.status.phase
        ),
        None => anyhow::bail!(
            "no session named {} in {} (see `sessionlet get --dir {}`)",
            args.name,
            layout.status_dir.display(),
            args.dir.display()
        ),
    }
    let file = inbox::deliver(&layout, &args.name, &args.text)?;
    println!(
        "queued for {} ({}); the controller delivers it at its next pass",
        args.name,
        file.display()
    );
    Ok(ExitCode::SUCCESS)
}
