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
    /// Only these sessions and pools (a pool's name also shows its replicas).
    pub names: Vec<String>,
    /// Only objects whose labels match: `key=value`, `key!=value` or `key`
    /// (the label is set), comma-separated, all of them (as kubectl's `-l`).
    #[arg(short = 'l', long = "selector")]
    pub selector: Option<String>,
    /// The status directory (the watched directory unless --status-dir was given to run).
    #[arg(long, default_value = ".")]
    pub dir: PathBuf,
    /// Output format (default: a table).
    #[arg(short, long, value_enum)]
    pub output: Option<Output>,
    /// After the table, print one line per change as it happens (from the
    /// controller's API stream, or the status files when none runs) until Ctrl-C.
    #[arg(short = 'w', long)]
    pub watch: bool,
    /// Scale-out: the whole fleet from etcd, with a NODE column.
    #[command(flatten)]
    pub fleet: crate::fleet::view::ViewFlags,
}

/// Runs `get`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut found = read_statuses(&args.dir)?;
    // Scale-out: the fleet's owners and live statuses laid over the local files.
    let fleet = match crate::fleet::view::fetch(&args.fleet) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("sessionlet: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    if let Some(snap) = &fleet {
        if args.watch {
            eprintln!("sessionlet: -w with --etcd-endpoints: not supported yet (watch one node's statuses without it)");
            return Ok(ExitCode::from(2));
        }
        let declared = crate::fleet::view::declared_here(&args.dir);
        crate::fleet::view::merge(&mut found, snap, &declared);
    }
    // Sessions no live node publishes show this node's view: say when stale.
    warn_if_no_controller(&args.dir);
    let selector = match args.selector.as_deref().map(Selector::parse).transpose() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("sessionlet: -l {}: {e}", args.selector.unwrap_or_default());
            return Ok(ExitCode::from(2));
        }
    };
    let missing: Vec<&String> = args
        .names
        .iter()
        .filter(|n| {
            !found.iter().any(|(_, f)| match f {
                Found::Session(s) => &s.metadata.name == *n,
                Found::Pool(p) => &p.metadata.name == *n,
            })
        })
        .collect();
    for n in &missing {
        eprintln!(
            "sessionlet: no session or pool named {n:?} in {}",
            args.dir.display()
        );
    }
    found.retain(|(_, f)| {
        let (name, pool, labels) = match f {
            Found::Session(s) => (
                &s.metadata.name,
                s.metadata.pool.as_ref(),
                &s.metadata.labels,
            ),
            Found::Pool(p) => (&p.metadata.name, None, &p.metadata.labels),
        };
        let named =
            args.names.is_empty() || args.names.iter().any(|n| n == name || pool == Some(n));
        named && selector.as_ref().is_none_or(|s| s.matches(labels))
    });
    let failed = if missing.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    };
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
            if args.watch {
                drop(out);
                return super::get_watch::run(&args);
            }
            return Ok(failed);
        }
        _ => {}
    }
    let wide = args.output == Some(Output::Wide);
    let now = Utc::now();
    let mut header = ["NAME", "PHASE", "RESTARTS", "AGE", "PID", "REASON"]
        .map(String::from)
        .to_vec();
    if fleet.is_some() {
        header.push("NODE".into());
    }
    if wide {
        header.extend(
            [
                "MEMORY", "CPU", "TURNS", "TOKENS", "COST", "BRANCH", "DIRTY", "MANIFEST",
            ]
            .map(String::from),
        );
    }
    let mut rows = vec![header];
    let mut pools = vec![["POOL", "READY", "RUNNING", "QUEUED", "CAPACITY"]
        .map(String::from)
        .to_vec()];
    for (_, f) in &found {
        match f {
            Found::Session(s) => {
                let st = &s.status;
                // AGE: see the README (Commands): since the attempt started
                // (Running, Terminating), the run began (Recovering), it
                // ended (terminal phases), it joined the queue (Queued).
                let since = st
                    .started_at
                    .or(st.finished_at)
                    .or(st.queue.as_ref().and_then(|q| q.queued_at))
                    .or(st.run_started_at)
                    .or(st.updated_at);
                let mut row = vec![
                    if s.metadata.name.is_empty() {
                        format!("({})", s.metadata.manifest)
                    } else {
                        s.metadata.name.clone()
                    },
                    phase_column(st, now),
                    st.restarts.to_string(),
                    since
                        .map(|t| human_age(now - t))
                        .unwrap_or_else(|| "-".into()),
                    st.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
                    reason_column(st),
                ];
                if fleet.is_some() {
                    row.push(st.node.clone().unwrap_or_else(|| "<none>".into()));
                }
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
                    let ws = st.workspace.as_ref();
                    row.push(
                        ws.and_then(|w| w["branch"].as_str())
                            .unwrap_or("-")
                            .to_string(),
                    );
                    row.push(match ws.map(|w| &w["dirty"]) {
                        Some(serde_json::Value::Bool(true)) => "yes".into(),
                        Some(serde_json::Value::Bool(false)) => "no".into(),
                        _ => "-".into(),
                    });
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
        if !args.names.is_empty() || selector.is_some() {
            if args.names.is_empty() {
                eprintln!("no sessions or pools match");
            }
            return Ok(failed);
        }
        eprintln!(
            "no status files in {} (is `sessionlet run` running on it?)",
            args.dir.display()
        );
        if args.watch {
            drop(out);
            return super::get_watch::run(&args);
        }
        return Ok(ExitCode::SUCCESS);
    }
    print_table(&mut out, &rows)?;
    if pools.len() > 1 {
        writeln!(out)?;
        print_table(&mut out, &pools)?;
    }
    let accounts = account_rows(&args.dir, now);
    if accounts.len() > 1 && args.names.is_empty() && selector.is_none() {
        writeln!(out)?;
        print_table(&mut out, &accounts)?;
    }
    if args.watch {
        drop(out);
        return super::get_watch::run(&args);
    }
    Ok(failed)
}

/// The agent accounts the controller status lists (`extra.accounts`):
/// ACCOUNT, STATE (`WaitingForQuota (resets in 2h)`), SESSIONS, RUNNING, WAITING.
fn account_rows(dir: &std::path::Path, now: chrono::DateTime<Utc>) -> Vec<Vec<String>> {
    let mut rows = vec![["ACCOUNT", "STATE", "SESSIONS", "RUNNING", "WAITING"]
        .map(String::from)
        .to_vec()];
    let path = dir.join(".sessionlet/controller.status.yaml");
    let Some(doc) = std::fs::read_to_string(path)
        .ok()
        .and_then(|t| codec::from_yaml::<serde_json::Value>(&t).ok())
    else {
        return rows;
    };
    let Some(accounts) = doc["extra"]["accounts"].as_object() else {
        return rows;
    };
    for (name, a) in accounts {
        let state = a["state"].as_str().unwrap_or("-");
        let resets = a["resetsAt"]
            .as_str()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc))
            .filter(|t| *t > now);
        let n = |k: &str| a[k].as_u64().unwrap_or(0).to_string();
        rows.push(vec![
            name.clone(),
            match resets {
                Some(t) => format!("{state}(resets-in-{})", human_age(t - now)),
                None => state.to_string(),
            },
            n("sessions"),
            n("running"),
            n("waiting"),
        ]);
    }
    rows
}

/// The PHASE column: the phase, `Terminating (kill in 8s)` for a session
/// being stopped (its status phase stays Running, as a pod's does), and
/// `Recovering (next in 16s)` with the next attempt's time.
pub(super) fn phase_column(
    st: &crate::api::status::SessionStatus,
    now: chrono::DateTime<Utc>,
) -> String {
    let until = |t: chrono::DateTime<Utc>, what: &str, due: &str| {
        if t > now {
            format!("{what} in {}", human_age(t - now))
        } else {
            due.to_string()
        }
    };
    match (st.phase.as_str(), st.kill_at, st.next_restart_at) {
        ("Running", Some(kill), _) => {
            format!("Terminating ({})", until(kill, "kill", "killing"))
        }
        ("Recovering", _, Some(next)) => {
            format!("Recovering ({})", until(next, "next", "next due"))
        }
        _ => st.phase.clone(),
    }
}

/// The REASON column; `ManifestInvalid` is added when the manifest no
/// longer validates and the last good spec stays in force.
pub(super) fn reason_column(st: &crate::api::status::SessionStatus) -> String {
    let mut reasons: Vec<String> = st.reason.iter().cloned().collect();
    let stale = st.phase != "Invalid" && !st.errors.is_empty();
    if stale && !reasons.iter().any(|r| r == "ManifestInvalid") {
        reasons.push("ManifestInvalid".into());
    }
    if reasons.is_empty() {
        "-".into()
    } else {
        reasons.join(",")
    }
}

/// A label selector: every requirement must hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selector(Vec<Requirement>);

/// One requirement of a selector.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Requirement {
    /// `key=value` (or `key==value`).
    Equals(String, String),
    /// `key!=value`: the label is missing or has another value.
    NotEquals(String, String),
    /// `key`: the label is set.
    Exists(String),
    /// `!key`: the label is not set.
    Missing(String),
}

impl Selector {
    /// Parses `a=b,c!=d,e,!f`.
    pub fn parse(text: &str) -> Result<Selector, String> {
        let mut reqs = Vec::new();
        for part in text.split(',').map(str::trim) {
            if part.is_empty() {
                return Err("an empty requirement (write key=value, key!=value or key)".into());
            }
            let req = if let Some((k, v)) = part.split_once("!=") {
                Requirement::NotEquals(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
                Requirement::Equals(k.trim().into(), v.trim().into())
            } else if let Some(k) = part.strip_prefix('!') {
                Requirement::Missing(k.trim().into())
            } else {
                Requirement::Exists(part.into())
            };
            let key = match &req {
                Requirement::Equals(k, _)
                | Requirement::NotEquals(k, _)
                | Requirement::Exists(k)
                | Requirement::Missing(k) => k,
            };
            if key.is_empty() {
                return Err(format!("{part:?} has no key"));
            }
            reqs.push(req);
        }
        Ok(Selector(reqs))
    }

    /// True when `labels` meet every requirement.
    pub fn matches(&self, labels: &std::collections::BTreeMap<String, String>) -> bool {
        self.0.iter().all(|r| match r {
            Requirement::Equals(k, v) => labels.get(k) == Some(v),
            Requirement::NotEquals(k, v) => labels.get(k) != Some(v),
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::Missing(k) => !labels.contains_key(k),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_match_as_kubectl_does() {
        let labels: std::collections::BTreeMap<String, String> = [("tier", "web"), ("env", "prod")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        for (sel, want) in [
            ("tier=web", true),
            ("tier==web", true),
            ("tier=db", false),
            ("tier=web,env=prod", true),
            ("tier=web,env=dev", false),
            ("tier!=db", true),
            ("owner!=me", true),
            ("tier", true),
            ("owner", false),
            ("!owner", true),
            ("!tier", false),
        ] {
            let s = Selector::parse(sel).expect(sel);
            assert_eq!(s.matches(&labels), want, "{sel}");
        }
        assert!(Selector::parse("a=b,").is_err());
        assert!(Selector::parse("=b").is_err());
    }
}
