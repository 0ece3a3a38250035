//! The shell's side of agent sessions: launching the CLI (new or resumed
//! conversation), following its stream-json output from the log file it
//! writes, enforcing the token budget and the command policy, and judging
//! how each attempt ended.
//!
//! The output is read from the session's own stdout file, never from a pipe:
//! the agent never blocks on the controller, and a new controller rebuilds the
//! tally by reading the file from the start.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use serde::Serialize;
use uuid::Uuid;

use crate::agent::{self, Conversation, LaunchRequest, Outcome, Policy, Tally};
use crate::api::agent::Constraints;
use crate::api::SessionSpec;
use crate::core::state::Verdict;
use crate::core::Reason;

use super::process::SpawnError;

/// One attempt's conversation, for the status (`agent.attempts`).
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AttemptNote {
    /// The attempt.
    pub attempt: u32,
    /// The conversation it ran.
    pub session_id: Uuid,
    /// True when it continued the conversation of an earlier attempt.
    pub resumed: bool,
}

/// What the controller knows of one agent session.
#[derive(Debug, Default)]
pub struct AgentRun {
    /// The conversation of the current (or last) attempt.
    pub session_id: Option<Uuid>,
    /// The tally of the current (or last) attempt's output.
    pub tally: Tally,
    /// Bytes of stdout already read.
    offset: u64,
    /// An incomplete last line.
    partial: String,
    /// The stdout being followed.
    pub stdout: PathBuf,
    /// Generation of the spec of the last attempt.
    generation: u64,
    /// Every attempt's conversation.
    pub attempts: Vec<AttemptNote>,
    /// The last attempt's outcome, once it ended.
    pub outcome: Option<Outcome>,
    /// True when the last conversation cannot be resumed (the CLI lost it).
    lost: bool,
    /// The next attempt continues this conversation whatever the last
    /// outcome says (restored from the status of a session waiting for quota).
    resume_next: Option<Uuid>,
    /// The next attempt follows a usage-limit reset: its continuation prompt says so.
    after_quota: bool,
    /// Cost and tokens of the earlier attempts of the current conversation.
    prior: Totals,
    /// The last attempt's totals when its tally is gone (restored from a status).
    restored_last: Option<Totals>,
    /// The last time the agent was seen busy without writing (a running
    /// tool call, compacting): silence counts from then, not from its last output.
    busy_seen_at: Option<chrono::DateTime<chrono::Utc>>,
    /// With stream input: when the agent ended its last turn (its `result`),
    /// unless a message was sent since.
    turn_ended_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// Since when an agent counts as silent for `staleAfter`: its last output,
/// or the last time it was seen busy (a tool call running, the context
/// compacting), whichever is later; `now` while it is busy.
pub fn silent_since(
    last_output: chrono::DateTime<chrono::Utc>,
    busy: bool,
    busy_seen_at: Option<chrono::DateTime<chrono::Utc>>,
    now: chrono::DateTime<chrono::Utc>,
) -> chrono::DateTime<chrono::Utc> {
    if busy {
        return now;
    }
    busy_seen_at.map_or(last_output, |b| b.max(last_output))
}

/// Cost and tokens, summed over the attempts of one conversation.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Totals {
    /// USD.
    pub cost_usd: f64,
    /// Input tokens.
    pub input_tokens: u64,
    /// Output tokens.
    pub output_tokens: u64,
}

impl Totals {
    /// A run's figures so far (tokens: [`agent::Tally::spent_tokens`]).
    fn of(tally: &agent::Tally) -> Totals {
        let (input_tokens, output_tokens) = tally.spent_tokens();
        Totals {
            cost_usd: tally.status().cost_usd.unwrap_or(0.0),
            input_tokens,
            output_tokens,
        }
    }
    fn plus(self, o: Totals) -> Totals {
        Totals {
            cost_usd: self.cost_usd + o.cost_usd,
            input_tokens: self.input_tokens.saturating_add(o.input_tokens),
            output_tokens: self.output_tokens.saturating_add(o.output_tokens),
        }
    }
    fn minus(self, o: Totals) -> Totals {
        Totals {
            cost_usd: (self.cost_usd - o.cost_usd).max(0.0),
            input_tokens: self.input_tokens.saturating_sub(o.input_tokens),
            output_tokens: self.output_tokens.saturating_sub(o.output_tokens),
        }
    }
    fn from_json(v: &serde_json::Value, cost: &str, input: &str, output: &str) -> Totals {
        Totals {
            cost_usd: v[cost].as_f64().unwrap_or(0.0),
            input_tokens: v[input].as_u64().unwrap_or(0),
            output_tokens: v[output].as_u64().unwrap_or(0),
        }
    }
}

/// What to act on after reading new output.
#[derive(Debug, Clone, PartialEq)]
pub enum Act {
    /// Stop the session for this reason.
    Stop(Reason, String),
    /// The status changed.
    Changed,
}

/// All agent sessions.
#[derive(Debug, Default)]
pub struct Agents {
    runs: BTreeMap<String, AgentRun>,
    /// The global `--policy` constraints.
    pub global: Option<Constraints>,
}

/// A launch: the argv, extra environment, stdin text and the charter.
pub struct Launch {
    /// Program and arguments.
    pub argv: Vec<String>,
    /// Variables on top of `spec.env`.
    pub env: Vec<(String, String)>,
    /// Text for stdin.
    pub stdin: Option<String>,
    /// The rendered charter, saved as `charter.md` in the logs folder.
    pub charter: Option<String>,
}

impl Agents {
    /// The policy of a session: its charter's constraints and the global policy.
    pub fn policy(&self, spec: &SessionSpec) -> Policy {
        let mut sets: Vec<&Constraints> = Vec::new();
        if let Some(c) = &spec.charter {
            sets.push(&c.constraints);
        }
        if let Some(g) = &self.global {
            sets.push(g);
        }
        // Patterns were checked by validation (and the policy file at start).
        Policy::new(sets).unwrap_or_default()
    }

    /// Builds the next attempt of an agent session: it resumes the same
    /// conversation after an abnormal end (or after the manifest changed to
    /// approve denied tool calls), else starts a new one.
    pub fn launch(
        &mut self,
        name: &str,
        spec: &SessionSpec,
        generation: u64,
        attempt: u32,
        base_dir: &Path,
        stdout: &Path,
    ) -> Result<Launch, SpawnError> {
        let fail = |reason, message: String| SpawnError { reason, message };
        let Some(agent_spec) = &spec.agent else {
            return Err(fail(Reason::SpawnFailed, "not an agent session".into()));
        };
        let run = self.runs.entry(name.to_string()).or_default();
        let forced = run.resume_next.take().filter(|_| agent_spec.resume);
        let resume = match (run.session_id, &run.outcome) {
            _ if forced.is_some() => forced,
            (Some(id), Some(outcome)) if !run.lost => {
                let approvals_changed = generation != run.generation
                    && !run.tally.status().permission_denials.is_empty();
                let again = agent::should_resume(outcome, run.tally.began(), agent_spec.resume)
                    || (approvals_changed && agent_spec.resume && run.tally.began());
                again.then_some(id)
            }
            _ => None,
        };
        let (conversation, prompt) = match resume {
            Some(session_id) => (
                Conversation::Resume { session_id },
                if run.after_quota {
                    agent::QUOTA_RESUME_PROMPT.to_string()
                } else {
                    agent::RESUME_PROMPT.to_string()
                },
            ),
            None => (
                Conversation::New {
                    session_id: Uuid::new_v4(),
                },
                agent::load_prompt(agent_spec, base_dir)
                    .map_err(|e| fail(Reason::SpawnFailed, e.to_string()))?,
            ),
        };
        let profile = agent::profile(agent_spec.kind);
        let req = LaunchRequest {
            spec: agent_spec,
            prompt: &prompt,
            charter: spec.charter.as_deref(),
            policy: self.global.as_ref(),
            conversation,
            user_env: &spec.env,
            base_dir,
        };
        let inv = profile
            .build(&req)
            .map_err(|e| fail(Reason::SpawnFailed, e.to_string()))?;
        let mut argv = vec![inv.program.clone()];
        argv.extend(inv.args.iter().cloned());
        // The conversation's cost and tokens: a resumed attempt adds to
        // those of the attempts before it, a new conversation starts at 0.
        let last = match run.restored_last.take() {
            Some(t) => t,
            None => Totals::of(&run.tally),
        };
        run.prior = if resume.is_some() {
            run.prior.plus(last)
        } else {
            Totals::default()
        };
        run.after_quota = false;
        run.busy_seen_at = None;
        run.turn_ended_at = None;
        run.session_id = Some(conversation.session_id());
        run.tally = Tally::new();
        run.offset = 0;
        run.partial.clear();
        run.stdout = stdout.to_path_buf();
        run.generation = generation;
        run.outcome = None;
        run.attempts.push(AttemptNote {
            attempt,
            session_id: conversation.session_id(),
            resumed: resume.is_some(),
        });
        // Keep the status short: the last 20 attempts.
        let excess = run.attempts.len().saturating_sub(20);
        run.attempts.drain(..excess);
        Ok(Launch {
            argv,
            env: inv.env,
            stdin: inv.stdin,
            charter: spec.charter.as_deref().map(agent::render_charter),
        })
    }

    /// Re-attaches to a running agent adopted from an earlier controller: the
    /// tally is rebuilt from its output file.
    pub fn adopt(&mut self, name: &str, stdout: &Path, session_id: Option<Uuid>, generation: u64) {
        let run = self.runs.entry(name.to_string()).or_default();
        run.stdout = stdout.to_path_buf();
        run.session_id = session_id.or(run.session_id);
        run.generation = generation;
        run.offset = 0;
        run.tally = Tally::new();
        // Its output file is read again from the start.
        run.restored_last = None;
    }

    /// Restores what an earlier controller's status says of an agent session
    /// that is not running: its conversation (resumed next when it was
    /// waiting for quota) and the cost and tokens of its attempts.
    pub fn restore(&mut self, name: &str, status: &serde_json::Value) {
        let agent = &status["agent"];
        if !agent.is_object() {
            return;
        }
        let run = self.runs.entry(name.to_string()).or_default();
        let sid = agent["sessionId"].as_str().and_then(|s| s.parse().ok());
        run.session_id = sid.or(run.session_id);
        if let Some(a) = agent["attempts"].as_array() {
            run.attempts = a
                .iter()
                .filter_map(|n| {
                    Some(AttemptNote {
                        attempt: u32::try_from(n["attempt"].as_u64()?).ok()?,
                        session_id: n["sessionId"].as_str()?.parse().ok()?,
                        resumed: n["resumed"].as_bool().unwrap_or(false),
                    })
                })
                .collect();
        }
        let prior = Totals::from_json(
            agent,
            "priorCostUsd",
            "priorInputTokens",
            "priorOutputTokens",
        );
        let total = Totals::from_json(agent, "costUsd", "inputTokens", "outputTokens");
        run.prior = prior;
        run.restored_last = Some(total.minus(prior));
        if status["quota"].is_object() {
            run.resume_next = run.session_id;
            run.after_quota = true;
        }
    }

    /// Reads what the agent wrote since the last read, and says what to do.
    pub fn read(&mut self, name: &str, spec: &SessionSpec) -> Vec<Act> {
        let policy = self.policy(spec);
        let Some(run) = self.runs.get_mut(name) else {
            return Vec::new();
        };
        let Ok(mut f) = std::fs::File::open(&run.stdout) else {
            return Vec::new();
        };
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        if len < run.offset {
            run.offset = 0; // rotated
            run.partial.clear();
        }
        if len == run.offset || f.seek(SeekFrom::Start(run.offset)).is_err() {
            return Vec::new();
        }
        let mut buf = Vec::new();
        // At most 8 MiB per read: a flood of output is taken in steps.
        if f.take(8 << 20).read_to_end(&mut buf).is_err() {
            return Vec::new();
        }
        run.offset += buf.len() as u64;
        run.partial.push_str(&String::from_utf8_lossy(&buf));
        let mut acts = vec![Act::Changed];
        let text = std::mem::take(&mut run.partial);
        let mut lines: Vec<&str> = text.split('\n').collect();
        // The last piece has no newline yet: keep it for the next read.
        let rest = lines.pop().unwrap_or_default().to_string();
        for line in lines {
            for signal in run.tally.feed(line) {
                match signal {
                    agent::Signal::BashCommand { command } => {
                        if let Some(v) = policy.check_shell(&command) {
                            acts.push(Act::Stop(
                                Reason::PolicyViolation,
                                format!("the agent ran a forbidden command: {v}"),
                            ));
                        }
                    }
                    agent::Signal::Tokens { total } => {
                        if let Some(max) = spec.agent.as_ref().and_then(|a| a.max_tokens) {
                            if total > max {
                                acts.push(Act::Stop(
                                    Reason::TokenBudgetExceeded,
                                    format!(
                                        "the agent used {total} tokens, over its maxTokens {max}"
                                    ),
                                ));
                            }
                        }
                    }
                    agent::Signal::Finished { .. } => {
                        run.turn_ended_at = Some(chrono::Utc::now());
                    }
                    agent::Signal::Began { .. } => {}
                }
            }
        }
        run.partial = rest;
        acts
    }

    /// Judges an ended attempt from its output.
    pub fn judge(&mut self, name: &str, spec: &SessionSpec, stderr_tail: &str) -> Option<Verdict> {
        let _ = self.read(name, spec);
        let run = self.runs.get_mut(name)?;
        let outcome = run.tally.outcome();
        let profile = agent::profile(spec.agent.as_ref()?.kind);
        if profile.is_unknown_session(stderr_tail) {
            run.lost = true;
        }
        let verdict = crate::core::verdict::of(&run.tally);
        if verdict.quota.is_some() {
            run.after_quota = true;
        }
        run.outcome = Some(outcome);
        Some(verdict)
    }

    /// The status's `agent` block.
    pub fn status(&self, name: &str) -> Option<serde_json::Value> {
        let run = self.runs.get(name)?;
        let mut v = serde_json::to_value(run.tally.status()).ok()?;
        if let Some(obj) = v.as_object_mut() {
            if let Some(id) = run.session_id {
                obj.insert("sessionId".into(), serde_json::json!(id));
            }
            obj.insert("attempts".into(), serde_json::json!(run.attempts));
            // costUsd and tokens cover every attempt of the conversation;
            // the prior* figures let a new controller add up the same way.
            let this = Totals::of(&run.tally);
            let this = run.restored_last.map_or(this, |r| r.plus(this));
            let sum = run.prior.plus(this);
            if run.prior != Totals::default() || run.restored_last.is_some() {
                obj.insert("costUsd".into(), serde_json::json!(sum.cost_usd));
                obj.insert("inputTokens".into(), serde_json::json!(sum.input_tokens));
                obj.insert("outputTokens".into(), serde_json::json!(sum.output_tokens));
                obj.insert("attemptCostUsd".into(), serde_json::json!(this.cost_usd));
                obj.insert("priorCostUsd".into(), serde_json::json!(run.prior.cost_usd));
                obj.insert(
                    "priorInputTokens".into(),
                    serde_json::json!(run.prior.input_tokens),
                );
                obj.insert(
                    "priorOutputTokens".into(),
                    serde_json::json!(run.prior.output_tokens),
                );
            }
            if let Some(o) = &run.outcome {
                obj.insert("outcome".into(), serde_json::json!(format!("{o:?}")));
            }
        }
        Some(v)
    }

    /// Since when `name` counts as silent (see [`silent_since`]); plain
    /// commands and unknown sessions: their last output.
    pub fn silent_since(
        &mut self,
        name: &str,
        last_output: chrono::DateTime<chrono::Utc>,
        now: chrono::DateTime<chrono::Utc>,
    ) -> chrono::DateTime<chrono::Utc> {
        let Some(run) = self.runs.get_mut(name) else {
            return last_output;
        };
        let busy = run.tally.busy();
        if busy {
            run.busy_seen_at = Some(now);
        }
        silent_since(last_output, busy, run.busy_seen_at, now)
    }

    /// When `name` ended its last turn with no message sent since (stream input).
    pub fn idle_since(&self, name: &str) -> Option<chrono::DateTime<chrono::Utc>> {
        self.runs.get(name)?.turn_ended_at
    }

    /// A message was written to `name`'s input: it works on a new turn.
    pub fn message_sent(&mut self, name: &str) {
        if let Some(run) = self.runs.get_mut(name) {
            run.turn_ended_at = None;
        }
    }

    /// The cost and tokens of `name`'s current (or last) attempt alone.
    pub fn attempt_totals(&self, name: &str) -> Option<Totals> {
        self.runs.get(name).map(|r| Totals::of(&r.tally))
    }

    /// The stdout file followed for `name`.
    pub fn stdout_of(&self, name: &str) -> Option<&Path> {
        self.runs.get(name).map(|r| r.stdout.as_path())
    }

    /// The session whose stdout is `path`.
    pub fn by_stdout(&self, path: &Path) -> Option<String> {
        self.runs
            .iter()
            .find(|(_, r)| r.stdout == path)
            .map(|(n, _)| n.clone())
    }

    /// The agent sessions known.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.runs.keys().map(String::as_str)
    }

    /// Forgets a session.
    pub fn forget(&mut self, name: &str) {
        self.runs.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};

    #[test]
    fn busy_time_is_not_silence() {
        let t = |s| Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, s).unwrap();
        // Busy now: not silent at all.
        assert_eq!(silent_since(t(0), true, None, t(50)), t(50));
        // Idle after a tool call that ended (was last seen) at 40: silent since 40.
        assert_eq!(silent_since(t(0), false, Some(t(40)), t(50)), t(40));
        // Output after the busy time: the output counts.
        assert_eq!(silent_since(t(45), false, Some(t(40)), t(50)), t(45));
        // Never busy: the last output.
        assert_eq!(silent_since(t(10), false, None, t(50)), t(10));
    }

    #[test]
    fn a_running_tool_keeps_an_agent_from_going_silent() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out.log");
        std::fs::write(
            &out,
            concat!(
                r#"{"type":"assistant","message":{"id":"m","model":"x","content":[{"type":"tool_use","id":"t","name":"Bash","input":{"command":"sleep 600"}}]}}"#,
                "\n"
            ),
        )
        .unwrap();
        let mut agents = Agents::default();
        agents.adopt("a", &out, None, 1);
        let spec = SessionSpec {
            agent: Some(Default::default()),
            ..SessionSpec::default()
        };
        agents.read("a", &spec);
        let t = |s| Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, s).unwrap();
        assert_eq!(agents.silent_since("a", t(0), t(30)), t(30));
        assert_eq!(agents.silent_since("plain", t(0), t(30)), t(0));
    }
}
