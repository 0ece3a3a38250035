//! `sessionlet validate PATH...`

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::manifest::{self, ManifestFile, Problem};

/// Arguments of `validate`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Example:\n  sessionlet validate examples/sessions\n  sessionlet validate --output json deploy/*.yaml"
)]
pub struct Args {
    /// Manifest files or directories (default: `$SESSIONLET_DIR`, else the
    /// current directory).
    pub paths: Vec<PathBuf>,
    /// How to print problems: one `FILE:LINE:COL: error: ...` line each, or
    /// a JSON array of {file, line, column, path, message}.
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

/// Output formats of `validate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// One line per problem, like a compiler.
    Text,
    /// A JSON array, for tools.
    Json,
}

/// Files of one directory, checked together for duplicate names.
struct Group {
    /// The directory, canonical when possible, to merge files given one by one.
    dir: PathBuf,
    files: Vec<PathBuf>,
    /// Problems that are not about a loaded file (refused links, unreadable paths).
    refused: Vec<Problem>,
}

/// Runs `validate`: exit 0 when every manifest is valid, 1 otherwise.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let paths = if args.paths.is_empty() {
        vec![super::default_dir()]
    } else {
        args.paths.clone()
    };
    let groups = collect(&paths);
    let mut problems = Vec::new();
    let (mut file_count, mut object_count) = (0usize, 0usize);
    for group in groups {
        // As root, the same StrictModes checks as `sessionlet run`.
        let dir_refusal = crate::runtime::trust::check_folder("manifest folder", &group.dir).err();
        let mut files: Vec<ManifestFile> = group
            .files
            .iter()
            .map(|f| {
                let mut loaded = manifest::load_file(f);
                let refusal = match &dir_refusal {
                    Some(r) => Some(r.clone()),
                    None => crate::runtime::trust::check_manifest(f, &group.dir).err(),
                };
                if let Some(r) = refusal {
                    loaded.problems.insert(0, Problem::file_level(f, r.message));
                }
                loaded
            })
            .collect();
        files.sort_by(|a, b| a.path.file_name().cmp(&b.path.file_name()));
        // Status files beside the manifests say which file holds a name
        // (a running session): the other one is blamed, as the controller does.
        let holders = crate::runtime::catalog::recorded_holders(&group.dir);
        manifest::mark_duplicate_names_holding(&mut files, &holders);
        file_count += files.len();
        object_count += files.iter().map(|f| f.documents.len()).sum::<usize>();
        let mut group_problems: Vec<Problem> = group.refused;
        group_problems.extend(files.into_iter().flat_map(|f| f.problems));
        // Stable: problems of one file stay in position order.
        group_problems.sort_by(|a, b| a.file.file_name().cmp(&b.file.file_name()));
        problems.extend(group_problems);
    }
    let mut out = std::io::stdout().lock();
    match args.output {
        Output::Text => {
            for p in &problems {
                writeln!(out, "{p}")?;
            }
        }
        Output::Json => {
            serde_json::to_writer_pretty(&mut out, &problems)?;
            writeln!(out)?;
        }
    }
    out.flush()?;
    eprintln!(
        "{}, {}, {}",
        plural(file_count, "file"),
        plural(object_count, "object"),
        plural(problems.len(), "problem")
    );
    Ok(if problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn plural(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// Sorts the arguments into per-directory groups, in the order the
/// directories first appear. A file given twice (or as itself and inside a
/// given directory) is checked once, so it is not its own duplicate.
fn collect(paths: &[PathBuf]) -> Vec<Group> {
    let mut groups: Vec<Group> = Vec::new();
    let mut seen: HashSet<PathBuf> = HashSet::new();
    let group_for = |groups: &mut Vec<Group>, dir: &Path| -> usize {
        let key = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
        match groups.iter().position(|g| g.dir == key) {
            Some(i) => i,
            None => {
                groups.push(Group {
                    dir: key,
                    files: Vec::new(),
                    refused: Vec::new(),
                });
                groups.len() - 1
            }
        }
    };
    for path in paths {
        if path.is_dir() {
            let index = group_for(&mut groups, path);
            match manifest::list_manifests(path) {
                Ok(listing) => {
                    groups[index].refused.extend(listing.refused);
                    for file in listing.manifests {
                        if seen
                            .insert(std::fs::canonicalize(&file).unwrap_or_else(|_| file.clone()))
                        {
                            groups[index].files.push(file);
                        }
                    }
                }
                Err(e) => groups[index].refused.push(Problem::file_level(
                    path,
                    format!("cannot read the directory: {e}"),
                )),
            }
        } else {
            let parent = match path.parent() {
                Some(p) if !p.as_os_str().is_empty() => p,
                _ => Path::new("."),
            };
            let index = group_for(&mut groups, parent);
            // A missing file is loaded anyway: loading reports it as a problem.
            if seen.insert(std::fs::canonicalize(path).unwrap_or_else(|_| path.clone())) {
                groups[index].files.push(path.clone());
            }
        }
    }
    groups
}
