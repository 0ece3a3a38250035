//! `sessionlet schema --out DIR`

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use crate::manifest::schema;

/// Arguments of `schema`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Example:\n  sessionlet schema --out schemas")]
pub struct Args {
    /// Where to write session.schema.json and pool.schema.json.
    #[arg(long, default_value = "schemas")]
    pub out: PathBuf,
}

/// Runs `schema`: writes both schemas into `--out`, creating it if needed.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    fs_err::create_dir_all(&args.out)?;
    for (file, value) in [
        ("session.schema.json", schema::session_schema()),
        ("pool.schema.json", schema::pool_schema()),
    ] {
        let path = args.out.join(file);
        fs_err::write(&path, schema::render(&value))
            .with_context(|| format!("writing the schema {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}
