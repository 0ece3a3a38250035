//! `sessionlet get`: one line per session and pool, kubectl style.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use chrono::Utc;

use super::read::{
    human_age, natural_cmp, print_table, read_statuses, warn_if_no_controller, Found,
};
use crate::manifest::codec;

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// More columns.
    Wide,
    /// The status documents as YAML.
    Yaml,
    /// The status documents as JSON.
    Json,
}

/// Arguments of `get`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  sessionlet get --dir examples/sessions\n  sessionlet get --dir examples/sessions -o wide\n  sessionlet get --dir examples/sessions -o json | jq '.[].status.phase'"
)]
pub struct Args {
    /// The status directory (the watched directory unless --status-dir was given to run).
    #[arg(long, default_value = "examples/sessions")]
    pub dir: PathBuf,
    /// Output format (default: a table).
    #[arg(short, long, value_enum)]
    pub output: Option<Output>,
}

/// Runs `get`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut found = read_statuses(&args.dir)?;
    warn_if_no_controller(&args.dir);
    // By object name, as people count: job-2 before job-10.
    let key = |f: &Found| match f {
        Found::Session(s) if s.metadata.name.is_empty() => format!("({})", s.metadata.manifest),
        Found::Session(s) => s.metadata.name.clone(),
        Found::Pool(p) => p.metadata.name.clone(),
    };
    found.sort_by(|(_, a), (_, b)| natural_cmp(&key(a), &key(b)));
    let mut out = std::io::stdout().lock();
    match args.output {
        Some(Output::Json) | Some(Output::Yaml) => {
            let values: Vec<serde_json::Value> = found
                .iter()
                .filter_map(|(_, f)| match f {
                    Found::Session(s) => serde_json::to_value(s).ok(),
                    Found::Pool(p) => serde_json::to_value(p).ok(),
                })
                .collect();
            if args.output == Some(Output::Json) {
                writeln!(out, "{}", serde_json::to_string_pretty(&values)?)?;
            } else {
                write!(out, "{}", codec::to_yaml_multi(&values)?)?;
            }
            return Ok(ExitCode::SUCCESS);
        }
        _ => {}
    }
    let wide = args.output == Some(Output::Wide);
    let now = Utc::now();
    let mut rows = vec![if wide {
        [
            "NAME", "PHASE", "RESTARTS", "AGE", "PID", "REASON", "MEMORY", "CPU", "TURNS",
            "TOKENS", "COST", "MANIFEST",
        ]
        .map(String::from)
        .to_vec()
    } else {
        ["NAME", "PHASE", "RESTARTS", "AGE", "PID", "REASON"]
            .map(String::from)
            .to_vec()
    }];
    let mut pools = vec![["POOL", "READY", "RUNNING", "QUEUED", "CAPACITY"]
        .map(String::from)
        .to_vec()];
    for (_, f) in &found {
        match f {
            Found::Session(s) => {
                let st = &s.status;
                let since = st
                    .started_at
                    .or(st.finished_at)
                    .or(st.run_started_at)
                    .or(st.updated_at);
                let mut row = vec![
                    if s.metadata.name.is_empty() {
                        format!("({})", s.metadata.manifest)
                    } else {
                        s.metadata.name.clone()
                    },
                    st.phase.clone(),
                    st.restarts.to_string(),
                    since
                        .map(|t| human_age(now - t))
                        .unwrap_or_else(|| "-".into()),
                    st.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
                    st.reason.clone().unwrap_or_else(|| "-".into()),
                ];
                if wide {
                    let usage = st.usage.as_ref();
                    let agent = st.agent.as_ref();
                    let num = |k: &str| agent.and_then(|a| a.get(k)).and_then(|v| v.as_f64());
                    row.push(
                        usage
                            .map(|u| format!("{}Mi", u.memory_bytes >> 20))
                            .unwrap_or_else(|| "-".into()),
                    );
                    row.push(
                        usage
                            .map(|u| format!("{:.1}s", u.cpu_seconds))
                            .unwrap_or_else(|| "-".into()),
                    );
                    row.push(
                        num("turns")
                            .map(|v| format!("{v}"))
                            .unwrap_or_else(|| "-".into()),
                    );
                    row.push(match (num("inputTokens"), num("outputTokens")) {
                        (Some(i), Some(o)) => format!("{}", i + o),
                        _ => "-".into(),
                    });
                    row.push(
                        num("costUsd")
                            .map(|v| format!("${v:.4}"))
                            .unwrap_or_else(|| "-".into()),
                    );
                    row.push(s.metadata.manifest.clone());
                }
                rows.push(row);
            }
            Found::Pool(p) => {
                let st = &p.status;
                pools.push(vec![
                    p.metadata.name.clone(),
                    format!("{}/{}", st.ready_replicas, st.replicas),
                    st.running.to_string(),
                    st.queued.to_string(),
                    st.capacity
                        .map(|c| c.to_string())
                        .unwrap_or_else(|| "-".into()),
                ]);
            }
        }
    }
    if rows.len() == 1 && pools.len() == 1 {
        eprintln!(
            "no status files in {} (is `sessionlet run` running on it?)",
            args.dir.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    print_table(&mut out, &rows)?;
    if pools.len() > 1 {
        writeln!(out)?;
        print_table(&mut out, &pools)?;
    }
    Ok(ExitCode::SUCCESS)
}
