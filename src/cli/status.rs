//! `sessionlet status`: the controller's own status and health, from its
//! API socket (`GET /api/v1/controller`).

use std::path::PathBuf;
use std::process::ExitCode;

use crate::apiserver::client::Client;

/// Arguments of `status`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Example:\n  sessionlet status --dir examples/sessions\n  sessionlet status -o json"
)]
pub struct Args {
    /// The status directory of the running controller.
    #[arg(long, default_value = ".")]
    pub dir: PathBuf,
    /// `json` for the document as the API serves it.
    #[arg(short, long)]
    pub output: Option<String>,
}

/// Runs `status`: exit 0 when healthy, 1 when not, 2 on bad usage.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if args.output.as_deref().is_some_and(|o| o != "json") {
        eprintln!(
            "sessionlet: -o {}: only `json` is known (or no -o for text)",
            args.output.unwrap_or_default()
        );
        return Ok(ExitCode::from(2));
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (_, v) = runtime.block_on(Client::for_dir(&args.dir).json("GET", "/api/v1/controller"))?;
    let healthy = v["healthy"].as_bool().unwrap_or(false);
    if args.output.is_some() {
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        let s = |k: &str| {
            v[k].as_str()
                .map(str::to_string)
                .unwrap_or_else(|| "-".into())
        };
        println!("controller:  pid {} (version {})", v["pid"], s("version"));
        println!("started:     {}", s("startedAt"));
        println!("manifests:   {}", s("manifestDir"));
        println!("statuses:    {}", s("statusDir"));
        println!("api socket:  {}", s("apiSocket"));
        println!(
            "health:      {} · {}",
            if healthy {
                "healthy"
            } else {
                "UNHEALTHY (no reconcile pass within two resync intervals)"
            },
            if v["ready"].as_bool().unwrap_or(false) {
                "ready"
            } else {
                "not ready"
            }
        );
        println!("sessions:    {}", v["totalSessions"]);
        if let Some(by) = v["sessionsByPhase"].as_object() {
            for (phase, n) in by {
                println!("  {phase:<12} {n}");
            }
        }
        if let Some(e) = v["lastError"].as_str() {
            println!("last error:  {e} (at {})", s("lastErrorAt"));
        }
        if let Some(extra) = v["extra"].as_object() {
            for (k, x) in extra {
                println!("{:<12} {x}", format!("{k}:"));
            }
        }
    }
    Ok(if healthy {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
