//! `sessionlet schema --out DIR`

use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `schema`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Example:\n  sessionlet schema --out schemas")]
pub struct Args {
    /// Where to write session.schema.json and pool.schema.json.
    #[arg(long, default_value = "schemas")]
    pub out: PathBuf,
}

/// Runs `schema`.
pub fn run(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not written yet")
}
