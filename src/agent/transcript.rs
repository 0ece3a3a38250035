//! A readable transcript of an agent run from its stream-json output
//! (`sessionlet logs` of an agent session): the assistant's text, tool calls
//! and their results, denied calls and the final result. Pure: one stream
//! line in, zero or more text lines out.

use serde_json::Value;

/// Longest tool input or result shown, in characters (the rest is elided).
pub const SHOWN_CHARS: usize = 400;

/// The transcript lines of one stream-json line. A line that is not JSON
/// (the CLI's own messages) is shown as it is; events a person does not
/// need (partial-message deltas, retries' bookkeeping) give nothing.
pub fn render_line(line: &str) -> Vec<String> {
    let line = line.trim_end_matches(['\r', '\n']);
    if line.trim().is_empty() {
        return Vec::new();
    }
    let Ok(v) = serde_json::from_str::<Value>(line) else {
        return vec![line.to_string()];
    };
    let sub = v["parent_tool_use_id"].is_string();
    let who = if sub { "  [sub-agent] " } else { "" };
    match v["type"].as_str() {
        Some("system") if v["subtype"] == "init" => vec![format!(
            "=== session {} (model {}) ===",
            v["session_id"].as_str().unwrap_or("?"),
            v["model"].as_str().unwrap_or("?")
        )],
        Some("system") if v["subtype"] == "api_retry" => vec![format!(
            "... API request retried ({})",
            v["error"].as_str().unwrap_or("error")
        )],
        Some("assistant") => content(&v["message"]["content"])
            .filter_map(|c| match c["type"].as_str() {
                Some("text") => c["text"]
                    .as_str()
                    .filter(|t| !t.trim().is_empty())
                    .map(|t| format!("{who}assistant: {}", t.trim())),
                Some("tool_use") => Some(format!(
                    "{who}-> {}: {}",
                    c["name"].as_str().unwrap_or("tool"),
                    tool_input(&c["input"])
                )),
                _ => None,
            })
            .collect(),
        Some("user") => content(&v["message"]["content"])
            .filter(|c| c["type"] == "tool_result")
            .map(|c| {
                let text = result_text(&c["content"]);
                if c["is_error"] == true {
                    format!("{who}<- error: {}", shorten(&text))
                } else {
                    format!("{who}<- {}", shorten(&text))
                }
            })
            .collect(),
        Some("result") => {
            let mut out = Vec::new();
            for d in v["permission_denials"].as_array().into_iter().flatten() {
                out.push(format!(
                    "!! denied {}: {}",
                    d["tool_name"].as_str().unwrap_or("tool"),
                    tool_input(&d["tool_input"])
                ));
            }
            let mut head = format!("=== result: {}", v["subtype"].as_str().unwrap_or("unknown"));
            if let Some(n) = v["num_turns"].as_u64() {
                head.push_str(&format!(", {n} turn(s)"));
            }
            if let Some(c) = v["total_cost_usd"].as_f64() {
                head.push_str(&format!(", ${c:.4}"));
            }
            head.push_str(" ===");
            out.push(head);
            if let Some(t) = v["result"].as_str().filter(|t| !t.trim().is_empty()) {
                out.push(t.trim().to_string());
            }
            for e in v["errors"].as_array().into_iter().flatten() {
                if let Some(e) = e.as_str() {
                    out.push(format!("error: {e}"));
                }
            }
            out
        }
        _ => Vec::new(),
    }
}

fn content(v: &Value) -> impl Iterator<Item = &Value> {
    v.as_array().into_iter().flatten()
}

/// A tool's input for a person: the command of Bash, the path of file
/// tools, else the input as compact JSON.
fn tool_input(input: &Value) -> String {
    for key in [
        "command",
        "file_path",
        "notebook_path",
        "pattern",
        "url",
        "prompt",
    ] {
        if let Some(s) = input[key].as_str() {
            return shorten(s);
        }
    }
    shorten(&input.to_string())
}

/// A tool result's text: a string, or the text blocks of a list.
fn result_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(items) => items
            .iter()
            .filter_map(|i| i["text"].as_str())
            .collect::<Vec<_>>()
            .join("\n"),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// At most [`SHOWN_CHARS`] characters, on one line.
fn shorten(s: &str) -> String {
    let one = s.trim().replace('\n', " ⏎ ");
    let mut out: String = one.chars().take(SHOWN_CHARS).collect();
    if one.chars().count() > SHOWN_CHARS {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> String {
        let path = format!(
            "{}/tests/fixtures/claude/{name}.stream-json.jsonl",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    fn transcript(name: &str) -> Vec<String> {
        fixture(name).lines().flat_map(render_line).collect()
    }

    #[test]
    fn a_bash_run_shows_text_the_call_its_result_and_the_final_result() {
        let t = transcript("ok_bash_tool");
        let text = t.join("\n");
        assert!(t[0].starts_with("=== session "), "{text}");
        assert!(text.contains("assistant: Calling Bash."), "{text}");
        assert!(
            text.contains("-> Bash: echo hello-from-fake > fake_out.txt"),
            "{text}"
        );
        assert!(text.contains("<- hello-from-fake"), "{text}");
        assert!(text.contains("=== result: success, 2 turn(s)"), "{text}");
        assert!(text.ends_with("Done: the command ran."), "{text}");
        assert!(!text.contains("{\"type\""), "no raw JSON: {text}");
    }

    #[test]
    fn a_denied_call_is_marked() {
        let text = transcript("denied_bash_default_mode").join("\n");
        assert!(
            text.contains("!! denied Bash: echo hello-from-fake"),
            "{text}"
        );
    }

    #[test]
    fn partial_messages_and_unknown_events_give_nothing_and_plain_lines_stay() {
        assert!(render_line(r#"{"type":"stream_event","event":{}}"#).is_empty());
        assert!(render_line(r#"{"type":"brand_new"}"#).is_empty());
        assert_eq!(render_line("plain words"), ["plain words"]);
        let t = transcript("ok_partial_messages");
        assert!(t.iter().any(|l| l.starts_with("=== result")));
    }
}
