//! The `sessionlet` binary: parse the command line and dispatch. No logic here.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = sessionlet::cli::Cli::parse();
    match sessionlet::cli::dispatch(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("sessionlet: error: {err:#}");
            std::process::ExitCode::from(2)
        }
    }
}
