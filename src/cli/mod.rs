//! The command line: one module per command.

use std::process::ExitCode;

use std::path::PathBuf;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

pub mod describe;
pub mod down;
pub mod events;
pub mod extras;
pub mod get;
pub mod get_watch;
pub mod logs;
pub mod plan;
pub mod read;
pub mod restart;
pub mod run;
pub mod schema;
pub mod send;
pub mod status;
pub mod stop;
pub mod validate;

/// A Kubernetes-style reconciling controller for long-running sessions.
///
/// Declare `Session` and `Pool` manifests as YAML files in a directory;
/// `sessionlet run` keeps the processes matching them and writes a status file
/// beside each manifest.
#[derive(Debug, Parser)]
#[command(name = "sessionlet", version, propagate_version = true)]
#[command(
    after_help = "Example:\n  sessionlet run --dir examples/sessions\n  sessionlet get --dir examples/sessions"
)]
pub struct Cli {
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the controller on a directory of manifests.
    Run(Box<run::Args>),
    /// List sessions and pools from their status files.
    Get(get::Args),
    /// Show everything about one session or pool.
    Describe(describe::Args),
    /// Print a session's output.
    Logs(logs::Args),
    /// List events (spawned, exited, restarts, timeouts...), as `kubectl get events`.
    Events(events::Args),
    /// The long-lived parent of all sessions (started by `run`; not for people).
    #[command(hide = true)]
    Keeper(KeeperArgs),
    /// Check manifests without running anything (for pre-commit hooks and CI).
    Validate(validate::Args),
    /// Write the JSON Schemas of the Session and Pool manifests.
    Schema(schema::Args),
    /// What the controller would do with the manifests as they are now, without running anything.
    Plan(plan::Args),
    /// Stop every session gracefully and end the keeper, with or without a running controller.
    Down(down::Args),
    /// Restart sessions now through the running controller (not counted as a failure).
    Restart(restart::Args),
    /// Stop sessions through the running controller until their spec changes or a restart.
    Stop(stop::Args),
    /// The running controller's own status and health.
    Status(status::Args),
    /// Send a message to a running session's input (`agent.input: stream`).
    Send(send::Args),
    /// Print a shell completion script (bash, zsh or fish).
    Completion(extras::CompletionArgs),
    /// Print the man page, or write every man page in a folder.
    Man(extras::ManArgs),
}

/// Arguments of the hidden `keeper` command.
#[derive(Debug, clap::Args)]
pub struct KeeperArgs {
    /// The controller's `.sessionlet/` folder.
    #[arg(long)]
    pub control_dir: std::path::PathBuf,
}

/// The environment variable that names the default manifest directory.
pub const DIR_ENV: &str = "SESSIONLET_DIR";

/// The manifest directory when none is given: `$SESSIONLET_DIR`, else the
/// current directory.
pub fn default_dir() -> PathBuf {
    std::env::var_os(DIR_ENV)
        .filter(|d| !d.is_empty())
        .map_or_else(|| PathBuf::from("."), PathBuf::from)
}

/// The command line's definition: the derived one, with every command's
/// `--dir` defaulting to `$SESSIONLET_DIR`, else the current directory (one
/// place for every command, so they all agree).
pub fn command() -> clap::Command {
    let mut cmd = Cli::command();
    let with_dir: Vec<String> = cmd
        .get_subcommands()
        .filter(|s| s.get_arguments().any(|a| a.get_id() == "dir"))
        .map(|s| s.get_name().to_string())
        .collect();
    for name in with_dir {
        cmd = cmd.mut_subcommand(name, |s| {
            s.mut_arg("dir", |a| a.env(DIR_ENV).default_value("."))
        });
    }
    cmd
}

/// Parses the process's arguments with [`command`]; on an error (or
/// `--help`) clap prints and exits.
pub fn parse() -> Cli {
    let matches = command().get_matches();
    Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

/// Runs the chosen command; the exit code is the command's.
pub fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Run(args) => {
            init_tracing(args.log_format);
            // Named crash points armed by the FAILPOINTS variable (tests only).
            #[cfg(feature = "failpoints")]
            let _failpoints = fail::FailScenario::setup();
            run::run(*args)
        }
        Command::Get(args) => get::run(args),
        Command::Describe(args) => describe::run(args),
        Command::Logs(args) => logs::run(args),
        Command::Events(args) => events::run(args),
        Command::Keeper(args) => {
            crate::runtime::keeper::serve(&args.control_dir)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Validate(args) => validate::run(args),
        Command::Schema(args) => schema::run(args),
        Command::Plan(args) => plan::run(args),
        Command::Down(args) => {
            init_tracing_with("warn");
            down::run(args)
        }
        Command::Restart(args) => restart::run(args),
        Command::Stop(args) => stop::run(args),
        Command::Status(args) => status::run(args),
        Command::Send(args) => send::run(args),
        Command::Completion(args) => extras::completion(args),
        Command::Man(args) => extras::man(args),
    }
}

/// True when the error is a write to a closed stdout (`sessionlet get | head`):
/// the reader has seen enough, so the command ends quietly with status 0, as
/// `ls | head` does. (Rust ignores SIGPIPE, so such a write fails with
/// `BrokenPipe` instead of killing the process.)
pub fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        e.downcast_ref::<std::io::Error>()
            .map(std::io::Error::kind)
            .or_else(|| {
                e.downcast_ref::<serde_json::Error>()
                    .and_then(serde_json::Error::io_error_kind)
            })
            == Some(std::io::ErrorKind::BrokenPipe)
    })
}

/// The controller's log goes to stderr in `format`; `RUST_LOG` filters it (default: info).
fn init_tracing(format: run::LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        run::LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
        run::LogFormat::Text => builder.with_ansi(use_colour()).try_init(),
    };
}

/// Colours only on a terminal, and never when `NO_COLOR` is set (to anything
/// but the empty string, see no-color.org).
fn use_colour() -> bool {
    use std::io::IsTerminal;
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    !no_color && std::io::stderr().is_terminal()
}

/// Logs go to stderr; `RUST_LOG` filters them (default: `default`).
fn init_tracing_with(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(use_colour())
        .try_init();
}
