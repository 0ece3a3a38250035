//! `sessionlet completion` and `sessionlet man`: shell completions and man
//! pages generated from the command-line definitions, so they never drift.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `completion`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  sessionlet completion bash > ~/.local/share/bash-completion/completions/sessionlet\n  sessionlet completion zsh > \"${fpath[1]}/_sessionlet\"\n  sessionlet completion fish > ~/.config/fish/completions/sessionlet.fish"
)]
pub struct CompletionArgs {
    /// The shell.
    #[arg(value_enum)]
    pub shell: Shell,
}

/// The shells completions are written for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Shell {
    /// Bash.
    Bash,
    /// Zsh.
    Zsh,
    /// Fish.
    Fish,
}

/// Writes the completion script of `shell` to stdout.
pub fn completion(args: CompletionArgs) -> anyhow::Result<ExitCode> {
    let mut cmd = super::command();
    let shell = match args.shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut cmd, "sessionlet", &mut buf);
    let mut out = std::io::stdout().lock();
    out.write_all(&buf)?;
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// Arguments of `man`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  sessionlet man | man -l -\n  sessionlet man --out-dir /usr/local/share/man/man1"
)]
pub struct ManArgs {
    /// Write `sessionlet.1` and one `sessionlet-COMMAND.1` per command in
    /// this folder (default: print `sessionlet.1` to stdout).
    #[arg(long)]
    pub out_dir: Option<PathBuf>,
}

/// Writes the man pages.
pub fn man(args: ManArgs) -> anyhow::Result<ExitCode> {
    let cmd = super::command();
    match args.out_dir {
        None => {
            let mut buf = Vec::new();
            clap_mangen::Man::new(cmd).render(&mut buf)?;
            let mut out = std::io::stdout().lock();
            out.write_all(&buf)?;
            out.flush()?;
        }
        Some(dir) => {
            std::fs::create_dir_all(&dir)
                .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
            clap_mangen::generate_to(cmd, &dir)
                .map_err(|e| anyhow::anyhow!("cannot write man pages in {}: {e}", dir.display()))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
