//! Input to a running session: `sessionlet send NAME TEXT`.
//!
//! A message is a file in `.sessionlet/inbox/NAME/` (written atomically by
//! [`deliver`], which the local API can call as well); the controller takes
//! the files in order at each pass and hands their text to the keeper, which
//! holds the write end of the session's stdin pipe (so a controller restart
//! does not close a session's input, and a message written while no
//! controller runs is delivered by the next one).
//!
//! An agent with `agent.input: stream` gets each message as a stream-json
//! user message; a command with `stdin: {pipe: true}` gets the text as a line.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::layout::Layout;
use crate::api::agent::AgentInput;
use crate::api::SessionSpec;

/// Largest message accepted (bytes of text).
pub const MAX_MESSAGE_BYTES: usize = 1 << 20;

/// One message waiting in the inbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Message {
    /// The text.
    pub text: String,
    /// When it was sent.
    pub sent_at: DateTime<Utc>,
}

/// Errors delivering a message.
#[derive(Debug, thiserror::Error)]
pub enum DeliverError {
    /// The name cannot be a session's.
    #[error("{0:?} is not a valid session name (lowercase letters, digits and '-')")]
    BadName(String),
    /// The text is empty or too long.
    #[error("the message {0}")]
    BadText(&'static str),
    /// The file could not be written.
    #[error("cannot write {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// Whether a session's stdin is a pipe held by the keeper: an agent with
/// `input: stream`, or a command with `stdin: {pipe: true}`.
pub fn wants_pipe(spec: &SessionSpec) -> bool {
    spec.agent
        .as_ref()
        .is_some_and(|a| a.input == AgentInput::Stream)
        || (spec.agent.is_none() && spec.stdin.as_ref().is_some_and(|s| s.pipe()))
}

/// A message as the session reads it: a stream-json user message for an
/// agent, the text and a newline for a command.
pub fn encode(spec: &SessionSpec, text: &str) -> String {
    if spec.agent.is_some() {
        crate::agent::argv::stream_user_message(text)
    } else if text.ends_with('\n') {
        text.to_string()
    } else {
        format!("{text}\n")
    }
}

/// The inbox folder of `name`.
pub fn dir(layout: &Layout, name: &str) -> PathBuf {
    layout.control_dir().join("inbox").join(name)
}

/// Queues `text` for session `name`; returns the message's file. The
/// controller delivers it at its next pass (or when it starts).
pub fn deliver(layout: &Layout, name: &str, text: &str) -> Result<PathBuf, DeliverError> {
    if !crate::manifest::is_valid_name(name) {
        return Err(DeliverError::BadName(name.to_string()));
    }
    if text.trim().is_empty() {
        return Err(DeliverError::BadText("is empty"));
    }
    if text.len() > MAX_MESSAGE_BYTES {
        return Err(DeliverError::BadText("is longer than 1 MiB"));
    }
    let folder = dir(layout, name);
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| DeliverError::Io { path, source }
    };
    std::fs::create_dir_all(&folder).map_err(io(&folder))?;
    let now = Utc::now();
    // Sorted by name = sent order; the random part keeps two senders apart.
    let file = folder.join(format!(
        "{:020}-{}.json",
        now.timestamp_nanos_opt().unwrap_or_default(),
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    ));
    let body = serde_json::to_vec(&Message {
        text: text.to_string(),
        sent_at: now,
    })
    .map_err(|e| DeliverError::Io {
        path: file.clone(),
        source: std::io::Error::other(e),
    })?;
    super::files::write_atomic(&file, &body).map_err(io(&file))?;
    Ok(file)
}

/// The messages waiting for `name`, oldest first.
pub fn waiting(layout: &Layout, name: &str) -> Vec<(PathBuf, Message)> {
    let Ok(entries) = std::fs::read_dir(dir(layout, name)) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    files
        .into_iter()
        .filter_map(|p| {
            let text = std::fs::read(&p).ok()?;
            match serde_json::from_slice::<Message>(&text) {
                Ok(m) => Some((p, m)),
                Err(_) => {
                    // Not ours (or torn by hand): set aside, never retried forever.
                    let _ = std::fs::rename(&p, p.with_extension("bad"));
                    None
                }
            }
        })
        .collect()
}

/// The running sessions (not being stopped) that take input on a pipe.
/// `live` names the sessions with a process (`live_count` of them): with
/// fewer live sessions than declared ones (10,000 finished, say) only those
/// are looked up; otherwise the declarations are walked, a look-up by name
/// only for the few that take input. Either way a pass costs the smaller.
pub fn running<'a>(
    live: impl IntoIterator<Item = &'a String>,
    live_count: usize,
    state: &crate::core::State,
    desired: &crate::core::Desired,
) -> Vec<(String, u32, std::sync::Arc<SessionSpec>)> {
    let entry =
        |name: &String, spec: &std::sync::Arc<SessionSpec>| match &state.sessions.get(name)?.run {
            crate::core::Run::Running(r) if r.stop.is_none() => {
                Some((name.clone(), r.pid, spec.clone()))
            }
            _ => None,
        };
    if live_count >= desired.sessions.len() {
        return desired
            .sessions
            .iter()
            .filter(|(_, d)| wants_pipe(&d.spec))
            .filter_map(|(name, d)| entry(name, &d.spec))
            .collect();
    }
    let mut out: Vec<(String, u32, std::sync::Arc<SessionSpec>)> = live
        .into_iter()
        .filter_map(|name| {
            let d = desired.sessions.get(name).filter(|d| wants_pipe(&d.spec))?;
            entry(name, &d.spec)
        })
        .collect();
    // In name order, as the declarations are kept, whatever order `live` has.
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out.dedup_by(|a, b| a.0 == b.0);
    out
}

/// What the controller tracks of each session's input.
#[derive(Debug, Default)]
pub struct Inputs {
    /// Sessions whose stdin was closed, by pid.
    closed: BTreeMap<String, u32>,
}

impl Inputs {
    /// Delivers waiting messages to running sessions with a stdin pipe, and
    /// closes the stdin of stream agents idle for `closeAfterIdle`.
    /// `running` gives (name, pid, spec) of the sessions running now.
    pub fn pump(
        &mut self,
        layout: &Layout,
        running: &[(String, u32, std::sync::Arc<SessionSpec>)],
        keeper: &dyn super::keeper::KeeperClient,
        agents: &mut super::agents::Agents,
        now: DateTime<Utc>,
    ) {
        self.closed
            .retain(|n, pid| running.iter().any(|(r, p, _)| r == n && p == pid));
        for (name, pid, spec) in running {
            if !wants_pipe(spec) || self.closed.get(name) == Some(pid) {
                continue;
            }
            let messages = waiting(layout, name);
            let had_messages = !messages.is_empty();
            for (path, m) in messages {
                let line = encode(spec, &m.text);
                if !keeper.write_stdin(*pid, line) {
                    return; // the keeper is away: the files wait
                }
                let _ = std::fs::remove_file(&path);
                agents.message_sent(name);
                tracing::info!(session = %name, "delivered a message ({} bytes)", m.text.len());
            }
            if had_messages {
                continue;
            }
            let idle = spec.agent.as_ref().and_then(|a| a.close_after_idle);
            if let (Some(after), Some(since)) = (idle, agents.idle_since(name)) {
                if crate::core::time::after(since, after) <= now && keeper.close_stdin(*pid) {
                    self.closed.insert(name.clone(), *pid);
                    tracing::info!(session = %name, "no message for closeAfterIdle {after}: closing its input");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_wait_in_order_and_bad_input_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let layout = Layout {
            manifest_dir: tmp.path().to_path_buf(),
            status_dir: tmp.path().to_path_buf(),
        };
        deliver(&layout, "chat", "first").unwrap();
        deliver(&layout, "chat", "second").unwrap();
        let texts: Vec<String> = waiting(&layout, "chat")
            .into_iter()
            .map(|(_, m)| m.text)
            .collect();
        assert_eq!(texts, ["first", "second"]);
        assert!(matches!(
            deliver(&layout, "Bad/Name", "x"),
            Err(DeliverError::BadName(_))
        ));
        assert!(matches!(
            deliver(&layout, "chat", "  "),
            Err(DeliverError::BadText(_))
        ));
        std::fs::write(dir(&layout, "chat").join("zz.json"), "not json").unwrap();
        assert_eq!(
            waiting(&layout, "chat").len(),
            2,
            "a torn file is set aside"
        );
    }
}
