//! `sessionlet validate PATH...`

use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `validate`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Example:\n  sessionlet validate examples/sessions\n  sessionlet validate --output json deploy/*.yaml"
)]
pub struct Args {
    /// Manifest files or directories.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
}

/// Runs `validate`.
pub fn run(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not written yet")
}
