//! Crash analysis: why an attempt ended, in plain words.
//!
//! Pure code, no I/O. The caller gathers what is known about an ended attempt
//! ([`ExitFacts`]: exit code or signal, the controller's stop reason, the
//! cgroup's OOM counter, the limits and the tails of stdout and stderr) and
//! [`analyze`] returns an [`Analysis`] for the crash dump and the status's
//! `lastExit`.
//!
//! The rules are data: one ordered table in `rules.rs`, first match wins.
//! Facts come before text (an OOM counter or a stop reason is certain, a line
//! of output is only a hint), and within the text rules the more specific
//! ones come first. Root causes quote the output line that matched so the
//! reader sees the evidence, not just our verdict.

mod rules;
#[cfg(test)]
mod tests;

use std::fmt;
use std::sync::LazyLock;
use std::time::Duration;

use regex::{Regex, RegexBuilder};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use rules::{Matcher, Rule, RULES};

/// What is known about one ended attempt.
///
/// Everything is optional except the tails (empty when nothing was captured):
/// the analysis uses what it gets and lowers its confidence when it has to
/// fall back on the text.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExitFacts<'a> {
    /// The exit code, when the process exited by itself.
    pub exit_code: Option<i32>,
    /// The number of the signal that killed the process.
    pub signal: Option<i32>,
    /// Set when the controller stopped the attempt: `TimedOut`,
    /// `DeadlineExceeded`, `MemoryLimitExceeded`, `OOMKilled`,
    /// `CpuTimeLimitExceeded`, `Stale`, `TokenBudgetExceeded`,
    /// `PolicyViolation`, or any other reason it stopped it for.
    pub stop_reason: Option<&'a str>,
    /// Set when the process could not be started: the reason
    /// (`CommandNotFound`, `PermissionDenied`, `SpawnFailed`) and the message.
    pub spawn_error: Option<&'a str>,
    /// How much the cgroup's `oom_kill` counter went up during the attempt
    /// (0 when unknown, e.g. without a cgroup).
    pub oom_kills: u64,
    /// The configured memory limit, in bytes.
    pub max_memory: Option<u64>,
    /// The configured timeout of one attempt.
    pub timeout: Option<Duration>,
    /// The last lines of stdout.
    pub stdout_tail: &'a str,
    /// The last lines of stderr.
    pub stderr_tail: &'a str,
}

/// The kind of failure, as written in status files and crash dumps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
// The variant names are the wire names fixed by the status format (`OOM`).
#[allow(clippy::upper_case_acronyms)]
pub enum AnalysisType {
    /// Ran out of memory: the kernel OOM killer, the memory limit, or an
    /// allocation failure reported by the program.
    OOM,
    /// Ran out of time: the attempt's timeout, the session's deadline, the
    /// CPU time limit, a silent (stale) session, or a timeout it reported.
    Timeout,
    /// Crashed on an invalid memory access (SIGSEGV, SIGBUS).
    Segfault,
    /// Aborted itself (SIGABRT: a failed assertion, an uncaught C++
    /// exception, heap corruption) or hit a CPU trap.
    Abort,
    /// Ended by a signal from outside, or stopped by the controller for a
    /// reason other than a limit on memory or time.
    Killed,
    /// The command, or a file it needs, does not exist.
    NotFound,
    /// Not allowed to execute or access something.
    Permission,
    /// A network failure: connection refused, DNS, TLS, unreachable, or an
    /// error from the remote server.
    Network,
    /// Credentials were missing or rejected (HTTP 401/403, invalid API key).
    Auth,
    /// Rate limited or the remote API was over capacity (HTTP 429/529).
    RateLimited,
    /// No rule matched.
    Unknown,
}

impl AnalysisType {
    /// Every type, in declaration order (for metrics labels and docs).
    pub const ALL: [AnalysisType; 11] = [
        AnalysisType::OOM,
        AnalysisType::Timeout,
        AnalysisType::Segfault,
        AnalysisType::Abort,
        AnalysisType::Killed,
        AnalysisType::NotFound,
        AnalysisType::Permission,
        AnalysisType::Network,
        AnalysisType::Auth,
        AnalysisType::RateLimited,
        AnalysisType::Unknown,
    ];

    /// The name as written in status files.
    pub fn as_str(self) -> &'static str {
        match self {
            AnalysisType::OOM => "OOM",
            AnalysisType::Timeout => "Timeout",
            AnalysisType::Segfault => "Segfault",
            AnalysisType::Abort => "Abort",
            AnalysisType::Killed => "Killed",
            AnalysisType::NotFound => "NotFound",
            AnalysisType::Permission => "Permission",
            AnalysisType::Network => "Network",
            AnalysisType::Auth => "Auth",
            AnalysisType::RateLimited => "RateLimited",
            AnalysisType::Unknown => "Unknown",
        }
    }
}

impl fmt::Display for AnalysisType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why an attempt ended, for people: what happened, what to do about it, and
/// how sure we are.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Analysis {
    /// The kind of failure.
    #[serde(rename = "type")]
    pub kind: AnalysisType,
    /// What happened, quoting the output line that shows it when there is one.
    pub root_cause: String,
    /// What to do about it, in one or two sentences.
    pub recommendation: String,
    /// How sure the rule is, from 0 to 1: facts (an OOM counter, a stop
    /// reason, a signal) score high, patterns in the output lower, and no
    /// match at all very low.
    pub confidence: f64,
    /// Concrete changes that would likely fix it.
    pub suggested_fixes: Vec<String>,
}

/// Explains why an attempt ended.
///
/// Meant for attempts that did not succeed; it never fails and always
/// returns an analysis (`Unknown`, with low confidence and the last line of
/// output quoted, when no rule matches).
pub fn analyze(facts: &ExitFacts) -> Analysis {
    match classify(facts) {
        Some(found) => render(found.rule, facts, found.evidence.as_ref()),
        None => unknown(facts),
    }
}

/// The most characters of one output line quoted in a root cause.
const EVIDENCE_MAX_CHARS: usize = 200;
/// How many characters before the match to keep when a line is cut, so the
/// quote shows what led up to it.
const EVIDENCE_LEAD_CHARS: usize = 60;
/// The most characters of a spawn error message quoted in a root cause.
const SPAWN_ERROR_MAX_CHARS: usize = 300;

/// The rule that explains an attempt, and the output line that shows it.
#[derive(Debug)]
struct Found {
    rule: &'static Rule,
    evidence: Option<Evidence>,
}

/// An excerpt of the output line a rule matched, ready to quote.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Evidence {
    stream: &'static str,
    excerpt: String,
}

/// A rule's regular expressions, compiled once, in the same order as [`RULES`].
struct Compiled {
    /// The regex of an [`Matcher::Output`] or [`Matcher::SpawnError`] rule.
    matcher: Option<Regex>,
    /// The regex that picks the line to quote for a fact rule.
    evidence: Option<Regex>,
}

static COMPILED: LazyLock<Vec<Compiled>> = LazyLock::new(|| {
    RULES
        .iter()
        .map(|rule| {
            let matcher = match rule.matcher {
                Matcher::Output(pattern) | Matcher::SpawnError(pattern) => {
                    Some(compile(rule.id, pattern))
                }
                _ => None,
            };
            Compiled {
                matcher,
                evidence: rule.evidence.map(|pattern| compile(rule.id, pattern)),
            }
        })
        .collect()
});

/// Compiles a rule's pattern, case-insensitively. The patterns are literals
/// in the rule table, so a bad one is a programming error (and a unit test
/// compiles them all).
fn compile(id: &str, pattern: &str) -> Regex {
    RegexBuilder::new(pattern)
        .case_insensitive(true)
        .build()
        .unwrap_or_else(|e| panic!("analysis rule {id}: invalid regex: {e}"))
}

/// Finds the first rule, in table order, that matches the facts.
fn classify(facts: &ExitFacts) -> Option<Found> {
    RULES
        .iter()
        .zip(COMPILED.iter())
        .find_map(|(rule, compiled)| {
            let matched = match rule.matcher {
                Matcher::SpawnError(_) => facts
                    .spawn_error
                    .zip(compiled.matcher.as_ref())
                    .is_some_and(|(message, re)| re.is_match(message)),
                Matcher::AnySpawnError => facts.spawn_error.is_some(),
                Matcher::OomKilled => facts.oom_kills > 0,
                Matcher::StopReason(reasons) => facts
                    .stop_reason
                    .is_some_and(|reason| reasons.iter().any(|r| r.eq_ignore_ascii_case(reason))),
                Matcher::AnyStopReason => facts.stop_reason.is_some(),
                Matcher::Signal(signals) => facts.signal.is_some_and(|s| signals.contains(&s)),
                Matcher::AnySignal => facts.signal.is_some(),
                Matcher::ExitCode(codes) => facts.exit_code.is_some_and(|c| codes.contains(&c)),
                Matcher::Output(_) => {
                    // Text rules must find their evidence; that is the match.
                    let re = compiled.matcher.as_ref()?;
                    let evidence = find_evidence(facts, re)?;
                    return Some(Found {
                        rule,
                        evidence: Some(evidence),
                    });
                }
            };
            matched.then(|| Found {
                rule,
                evidence: compiled
                    .evidence
                    .as_ref()
                    .and_then(|re| find_evidence(facts, re)),
            })
        })
}

/// The last line matching `re`, stderr first (where programs report errors)
/// and then stdout (where the Claude Code CLI reports API errors).
fn find_evidence(facts: &ExitFacts, re: &Regex) -> Option<Evidence> {
    [("stderr", facts.stderr_tail), ("stdout", facts.stdout_tail)]
        .into_iter()
        .find_map(|(stream, text)| {
            // The last match is the one closest to the end of the attempt,
            // but a field of a dumped error object (`  code: 'ECONNREFUSED',`)
            // only repeats the message line above it, which reads better.
            let mut field = None;
            for line in lines(text).rev().filter(|line| !is_agent_chatter(line)) {
                let Some(m) = re.find(line) else { continue };
                if is_error_field(line) {
                    field.get_or_insert((line, m.start()));
                    continue;
                }
                return Some(quote(stream, line, m.start(), re));
            }
            field.map(|(line, start)| quote(stream, line, start, re))
        })
}

/// The evidence for a match at byte `start` of `line`.
fn quote(stream: &'static str, line: &str, start: usize, re: &Regex) -> Evidence {
    // A Claude Code `result` line is JSON; its message is the readable part,
    // so quote that when it shows the match.
    let excerpt = agent_result_text(line)
        .and_then(|text| re.find(&text).map(|inner| excerpt(&text, inner.start())))
        .unwrap_or_else(|| excerpt(line, start));
    Evidence { stream, excerpt }
}

/// A `key: value,` line of an error object as Node prints it
/// (`  code: 'ENOTFOUND',`, `  errno: -3008,`).
fn is_error_field(line: &str) -> bool {
    static FIELD: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r"^\s+[A-Za-z_]+: (?:'[^']*'|-?\d+),?\s*$")
            .expect("the error field pattern is a valid regex")
    });
    FIELD.is_match(line)
}

/// The message of a Claude Code `stream-json` `result` line: its `result`
/// text, or its `errors` joined, or `None` for any other line.
fn agent_result_text(line: &str) -> Option<String> {
    let line = line.trim();
    if !line.starts_with(r#"{"type":"result""#) {
        return None;
    }
    let value: serde_json::Value = serde_json::from_str(line).ok()?;
    if let Some(text) = value.get("result").and_then(|r| r.as_str()) {
        return Some(text.to_string());
    }
    let errors: Vec<&str> = value
        .get("errors")?
        .as_array()?
        .iter()
        .filter_map(|e| e.as_str())
        .collect();
    (!errors.is_empty()).then(|| errors.join("; "))
}

/// Splits output into lines; a carriage return also ends a line because
/// progress bars redraw with `\r` and the last redraw is what was seen.
fn lines(text: &str) -> impl DoubleEndedIterator<Item = &str> {
    text.split(['\n', '\r'])
        .filter(|line| !line.trim().is_empty())
}

/// Lines of a Claude Code `stream-json` transcript that carry what the
/// agent saw or said (tool results, model text), not why the CLI stopped.
///
/// An agent routinely runs commands that fail with "Permission denied" or
/// "Connection refused"; quoting those as the session's own failure would
/// be wrong. The CLI reports its own failures in `result` lines, `system`
/// retry lines and `assistant` lines from the `<synthetic>` model, which
/// are kept.
fn is_agent_chatter(line: &str) -> bool {
    let line = line.trim_start();
    line.starts_with(r#"{"type":"user""#)
        || line.starts_with(r#"{"type":"stream_event""#)
        || (line.starts_with(r#"{"type":"system","subtype":"init""#))
        || (line.starts_with(r#"{"type":"assistant""#)
            && !line.contains(r#""model":"<synthetic>""#))
}

/// Cuts a line down to at most [`EVIDENCE_MAX_CHARS`] characters around the
/// match at byte offset `start`, marking cuts with `…`, and makes it safe to
/// quote (no terminal escapes or control characters).
fn excerpt(line: &str, start: usize) -> String {
    let clean = |s: &str| -> String {
        strip_ansi(s)
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect()
    };
    // `start` was found in the untrimmed line: shift it by what the trim removes.
    let start = start.saturating_sub(line.len() - line.trim_start().len());
    let line = line.trim();
    let total = line.chars().count();
    if total <= EVIDENCE_MAX_CHARS {
        return clean(line);
    }
    let match_char = line.char_indices().take_while(|(i, _)| *i < start).count();
    let from = match_char
        .saturating_sub(EVIDENCE_LEAD_CHARS)
        .min(total - EVIDENCE_MAX_CHARS);
    let window: String = line.chars().skip(from).take(EVIDENCE_MAX_CHARS).collect();
    let mut out = String::new();
    if from > 0 {
        out.push('…');
    }
    out.push_str(&clean(&window));
    if from + EVIDENCE_MAX_CHARS < total {
        out.push('…');
    }
    out
}

/// Removes ANSI terminal escape sequences (colours, cursor moves).
fn strip_ansi(s: &str) -> std::borrow::Cow<'_, str> {
    static ANSI: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[@-Z\\-_]")
            .expect("the ANSI escape pattern is a valid regex")
    });
    ANSI.replace_all(s, "")
}

/// Builds the analysis for a matched rule.
fn render(rule: &Rule, facts: &ExitFacts, evidence: Option<&Evidence>) -> Analysis {
    let mut root_cause = fill(rule.root_cause, facts);
    if let Some(evidence) = evidence {
        root_cause.push_str(&format!(
            " Evidence ({}): \"{}\"",
            evidence.stream, evidence.excerpt
        ));
    }
    Analysis {
        kind: rule.kind,
        root_cause,
        recommendation: fill(rule.recommendation, facts),
        confidence: rule.confidence,
        suggested_fixes: rule.fixes.iter().map(|fix| fill(fix, facts)).collect(),
    }
}

/// The analysis when no rule matched: say what is known, quote the last line
/// of output, and admit we do not know.
fn unknown(facts: &ExitFacts) -> Analysis {
    let ended = match (facts.signal, facts.exit_code) {
        (Some(signal), _) => format!("was killed by {}", signal_name(signal)),
        (None, Some(code)) => format!("exited with code {code}"),
        (None, None) => "ended".to_string(),
    };
    let mut root_cause =
        format!("The session {ended}; its output matches no known failure pattern.");
    let last_line = [("stderr", facts.stderr_tail), ("stdout", facts.stdout_tail)]
        .into_iter()
        .find_map(|(stream, text)| {
            lines(text)
                .rev()
                .find(|line| !is_agent_chatter(line))
                .map(|line| {
                    let quoted = match agent_result_text(line) {
                        Some(text) => excerpt(&text, 0),
                        None => excerpt(line, 0),
                    };
                    (stream, quoted)
                })
        });
    match last_line {
        Some((stream, line)) => {
            root_cause.push_str(&format!(" Last output line ({stream}): \"{line}\""))
        }
        // Every line was agent chatter: a transcript with no result line.
        None if lines(facts.stdout_tail)
            .chain(lines(facts.stderr_tail))
            .next()
            .is_some() =>
        {
            root_cause.push_str(
                " Its output is only the agent's transcript, with no error from the agent \
                 CLI (no result line: it was interrupted).",
            )
        }
        None => root_cause.push_str(" It wrote no output."),
    }
    Analysis {
        kind: AnalysisType::Unknown,
        root_cause,
        recommendation:
            "Read the full stdout and stderr in the crash dump; run the command by hand \
                         with the same environment to reproduce it."
                .to_string(),
        confidence: 0.1,
        suggested_fixes: vec![
            "Make the program print a clear error message before it exits non-zero.".to_string(),
        ],
    }
}

/// Replaces the `{placeholders}` of a rule's text with the facts.
///
/// `{memory_limit}` and `{timeout}` render as " (512 MiB)" / " (30m)" or as
/// nothing when the limit is not known, so the sentence reads either way.
fn fill(template: &str, facts: &ExitFacts) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let Some(close) = after.find('}') else {
            out.push_str(&rest[open..]);
            return out;
        };
        match placeholder(&after[..close], facts) {
            Some(value) => out.push_str(&value),
            None => out.push_str(&rest[open..open + close + 2]),
        }
        rest = &after[close + 1..];
    }
    out.push_str(rest);
    out
}

/// The names [`fill`] knows; a unit test checks the rule table uses no other.
#[cfg(test)]
const PLACEHOLDERS: [&str; 7] = [
    "signal",
    "exit_code",
    "stop_reason",
    "spawn_error",
    "memory_limit",
    "timeout",
    "oom_kills",
];

fn placeholder(name: &str, facts: &ExitFacts) -> Option<String> {
    Some(match name {
        "signal" => facts
            .signal
            .map_or_else(|| "a signal".to_string(), signal_name),
        "exit_code" => facts
            .exit_code
            .map_or_else(|| "unknown".to_string(), |c| c.to_string()),
        "stop_reason" => facts.stop_reason.unwrap_or("unknown").to_string(),
        "spawn_error" => {
            let message = facts.spawn_error.unwrap_or("unknown error");
            let mut cut: String = message.chars().take(SPAWN_ERROR_MAX_CHARS).collect();
            if cut.len() < message.len() {
                cut.push('…');
            }
            cut
        }
        "memory_limit" => facts
            .max_memory
            .map_or_else(String::new, |b| format!(" ({})", format_bytes(b))),
        "timeout" => facts
            .timeout
            .map_or_else(String::new, |d| format!(" ({})", format_duration(d))),
        "oom_kills" => facts.oom_kills.to_string(),
        _ => return None,
    })
}

/// "SIGSEGV (signal 11)", or "signal 64" for numbers without a name here.
fn signal_name(signal: i32) -> String {
    match nix::sys::signal::Signal::try_from(signal) {
        Ok(sig) => format!("{} (signal {signal})", sig.as_str()),
        Err(_) => format!("signal {signal}"),
    }
}

/// Bytes in binary units: "512 MiB", "1.5 GiB", "900 bytes".
fn format_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} bytes");
    }
    // Precision loss in the cast only affects digits we do not print.
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if value.fract() < 0.05 {
        format!("{value:.0} {}", UNITS[unit])
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// A duration the way manifests write it: "90s" → "1m30s", "2h", "250ms".
fn format_duration(d: Duration) -> String {
    let secs = d.as_secs();
    if secs == 0 {
        return format!("{}ms", d.as_millis());
    }
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if s > 0 {
        out.push_str(&format!("{s}s"));
    }
    out
}
