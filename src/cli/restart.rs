//! `sessionlet restart NAME…`: a new attempt of each session now, through
//! the controller's API socket. Not counted as a failure: the backoff and
//! `maxRetries` count stay as they were.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::apiserver::client::Client;
use crate::apiserver::Act;

/// Arguments of `restart`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Example:\n  sessionlet restart web worker-2 --dir examples/sessions")]
pub struct Args {
    /// The sessions.
    #[arg(required = true)]
    pub names: Vec<String>,
    /// The status directory of the running controller.
    #[arg(long, default_value = ".")]
    pub dir: PathBuf,
}

/// Runs `restart`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    act(&args.dir, &args.names, Act::Restart)
}

/// Asks the controller for `act` on each of `names`; exits 1 when any was
/// refused, and says why for each.
pub(super) fn act(dir: &Path, names: &[String], act: Act) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let client = Client::for_dir(dir);
        let mut failed = false;
        for name in names {
            let path = format!("/api/v1/sessions/{}/{}", escape(name), act.as_str());
            let (code, v) = client.json("POST", &path).await?;
            if (200..300).contains(&code) {
                println!(
                    "{name}: {} asked ({})",
                    act.as_str(),
                    v["message"].as_str().unwrap_or("accepted")
                );
            } else {
                failed = true;
                eprintln!(
                    "sessionlet: {name}: {} (hint: {})",
                    v["error"].as_str().unwrap_or("refused"),
                    v["hint"].as_str().unwrap_or("-")
                );
            }
        }
        Ok(if failed {
            ExitCode::from(1)
        } else {
            ExitCode::SUCCESS
        })
    })
}

/// Percent-encodes what is not a plain name character.
fn escape(name: &str) -> String {
    name.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
