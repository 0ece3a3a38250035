//! The command line: one module per command.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub mod schema;
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
    /// Check manifests without running anything (for pre-commit hooks and CI).
    Validate(validate::Args),
    /// Write the JSON Schemas of the Session and Pool manifests.
    Schema(schema::Args),
}

/// Runs the chosen command; the exit code is the command's.
pub fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Validate(args) => validate::run(args),
        Command::Schema(args) => schema::run(args),
    }
}
