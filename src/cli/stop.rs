//! `sessionlet stop NAME…`: stops each session gracefully and holds it in
//! phase Cancelled (reason `StoppedByRequest`) until its spec changes or
//! `sessionlet restart` asks for it; the hold survives a controller restart.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::apiserver::Act;

/// Arguments of `stop`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Example:\n  sessionlet stop web --dir examples/sessions")]
pub struct Args {
    /// The sessions.
    #[arg(required = true)]
    pub names: Vec<String>,
    /// The status directory of the running controller.
    #[arg(long, default_value = ".")]
    pub dir: PathBuf,
}

/// Runs `stop`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    super::restart::act(&args.dir, &args.names, Act::Stop)
}
