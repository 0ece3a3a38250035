//! The `sessionlet` binary: parse the command line and dispatch. No logic here.

fn main() -> std::process::ExitCode {
    let cli = sessionlet::cli::parse();
    match sessionlet::cli::dispatch(cli) {
        Ok(code) => code,
        // A closed stdout (`| head`) is not an error of the command.
        Err(err) if sessionlet::cli::is_broken_pipe(&err) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("sessionlet: error: {err:#}");
            std::process::ExitCode::from(2)
        }
    }
}
