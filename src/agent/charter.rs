//! Rendering a [`Charter`] to Markdown.
//!
//! The text is appended to the agent CLI's system prompt and saved as
//! `charter.md` in the session's logs folder. Empty parts are left out, so an
//! empty charter renders to an empty string.

use std::fmt::Write as _;

use crate::api::agent::{Charter, Constraints, Identity, Memory, TaskContext};

/// Renders a charter as Markdown (empty when the charter says nothing).
pub fn render(charter: &Charter) -> String {
    let sections: Vec<String> = [
        charter.identity.as_ref().and_then(identity),
        objectives(&charter.objectives),
        constraints(&charter.constraints),
        charter.resources.as_ref().and_then(|r| {
            let mut items = Vec::new();
            if let Some(t) = r.max_tokens {
                items.push(format!(
                    "Token budget: {t} tokens (input and output together)"
                ));
            }
            if let Some(d) = r.max_execution_time {
                items.push(format!("Time budget: {d}"));
            }
            if !r.allowed_tools.is_empty() {
                let tools: Vec<String> = r.allowed_tools.iter().map(|t| code(t)).collect();
                items.push(format!("Tools you may use: {}", tools.join(", ")));
            }
            section("Resources", None, &items)
        }),
        charter.task_context.as_ref().and_then(task),
        charter.memory.as_ref().and_then(memory),
    ]
    .into_iter()
    .flatten()
    .collect();
    if sections.is_empty() {
        return String::new();
    }
    // Every section ends with a blank line; the document with one newline.
    let mut out = String::from("# Charter\n\n");
    out.push_str(sections.concat().trim_end());
    out.push('\n');
    out
}

fn identity(id: &Identity) -> Option<String> {
    let mut items = Vec::new();
    if let Some(n) = non_blank(&id.name) {
        items.push(format!("Name: {}", inline(n)));
    }
    if let Some(e) = non_blank(&id.email) {
        items.push(format!("Email: {}", inline(e)));
    }
    if let Some(r) = non_blank(&id.role) {
        items.push(format!("Role: {}", inline(r)));
    }
    section("Identity", Some("You act as:"), &items)
}

fn objectives(list: &[String]) -> Option<String> {
    let items: Vec<&String> = list.iter().filter(|o| !o.trim().is_empty()).collect();
    if items.is_empty() {
        return None;
    }
    let mut out = String::from("## Objectives\n\n");
    for (i, o) in items.iter().enumerate() {
        let _ = writeln!(out, "{}. {}", i + 1, indent(o.trim(), "   "));
    }
    out.push('\n');
    Some(out)
}

fn constraints(c: &Constraints) -> Option<String> {
    let mut out = String::new();
    if !c.forbidden_commands.is_empty() {
        out.push_str(
            "Never run these commands (in any form, including inside compound commands); \
             they are blocked and running one stops the session:\n\n",
        );
        list(&mut out, c.forbidden_commands.iter().map(|s| code(s)));
    }
    if !c.forbidden_patterns.is_empty() {
        out.push_str(
            "No shell command may match these regular expressions; \
             one that does stops the session:\n\n",
        );
        list(&mut out, c.forbidden_patterns.iter().map(|s| code(s)));
    }
    if !c.required_approvals.is_empty() {
        out.push_str(
            "These actions need a person's approval first. Do not take them; \
             say what you need and why, then stop:\n\n",
        );
        list(
            &mut out,
            c.required_approvals.iter().map(|s| indent(s, "  ")),
        );
    }
    (!out.is_empty()).then(|| format!("## Constraints\n\n{out}"))
}

fn task(t: &TaskContext) -> Option<String> {
    let mut items = Vec::new();
    if let Some(id) = non_blank(&t.task_id) {
        items.push(format!("Task id: {}", inline(id)));
    }
    if let Some(p) = non_blank(&t.priority) {
        items.push(format!("Priority: {}", inline(p)));
    }
    let mut out = section("Task context", None, &items).unwrap_or_default();
    if let Some(d) = non_blank(&t.description) {
        if out.is_empty() {
            out.push_str("## Task context\n\n");
        }
        let _ = writeln!(out, "{}\n", d.trim());
    }
    (!out.is_empty()).then_some(out)
}

fn memory(m: &Memory) -> Option<String> {
    let mut out = String::new();
    if !m.recent_actions.is_empty() {
        out.push_str("### Recent actions\n\n");
        list(&mut out, m.recent_actions.iter().map(|a| indent(a, "  ")));
    }
    if !m.preferences.is_empty() {
        out.push_str("### Preferences\n\n");
        list(
            &mut out,
            m.preferences
                .iter()
                .map(|(k, v)| format!("{}: {}", inline(k), indent(v, "  "))),
        );
    }
    if let Some(p) = non_blank(&m.project_context) {
        let _ = writeln!(out, "### Project context\n\n{}\n", p.trim());
    }
    (!out.is_empty()).then(|| format!("## Memory\n\n{out}"))
}

/// A `## title` section with an optional lead line and a bullet list.
fn section(title: &str, lead: Option<&str>, items: &[String]) -> Option<String> {
    if items.is_empty() {
        return None;
    }
    let mut out = format!("## {title}\n\n");
    if let Some(l) = lead {
        let _ = writeln!(out, "{l}\n");
    }
    list(&mut out, items.iter().cloned());
    Some(out)
}

fn list(out: &mut String, items: impl Iterator<Item = String>) {
    for item in items {
        let _ = writeln!(out, "- {item}");
    }
    out.push('\n');
}

fn non_blank(s: &Option<String>) -> Option<&str> {
    s.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

/// Keeps a multi-line value inside its list item.
fn indent(s: &str, pad: &str) -> String {
    s.trim()
        .lines()
        .collect::<Vec<_>>()
        .join(&format!("\n{pad}"))
}

/// A one-line value (a name, an id): newlines folded into spaces.
fn inline(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// An inline code span that survives backticks in the text.
fn code(s: &str) -> String {
    let s = inline(s);
    // The fence must be longer than any run of backticks inside.
    let longest = s.split(|c| c != '`').map(str::len).max().unwrap_or(0);
    let fence = "`".repeat(longest + 1);
    if longest > 0 || s.starts_with('`') || s.ends_with('`') {
        format!("{fence} {s} {fence}")
    } else {
        format!("{fence}{s}{fence}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::agent::CharterResources;
    use crate::api::Duration;

    #[test]
    fn empty_charter_renders_nothing() {
        assert_eq!(render(&Charter::default()), "");
        let blank = Charter {
            identity: Some(Identity::default()),
            objectives: vec!["  ".into()],
            resources: Some(CharterResources::default()),
            task_context: Some(TaskContext::default()),
            memory: Some(Memory::default()),
            ..Charter::default()
        };
        assert_eq!(render(&blank), "");
    }

    #[test]
    fn full_charter() {
        let charter = Charter {
            identity: Some(Identity {
                name: Some("Release Bot".into()),
                email: Some("bot@example.com".into()),
                role: Some("release engineer".into()),
            }),
            objectives: vec!["Cut the release".into(), "Write notes\nfor users".into()],
            constraints: Constraints {
                forbidden_commands: vec!["rm -rf".into(), "git push --force".into()],
                forbidden_patterns: vec![r"curl .*\| *sh".into()],
                required_approvals: vec!["Publishing to crates.io".into()],
            },
            resources: Some(CharterResources {
                max_tokens: Some(200_000),
                max_execution_time: Some(Duration::from_secs(3600)),
                allowed_tools: vec!["Bash".into(), "Edit".into()],
            }),
            task_context: Some(TaskContext {
                task_id: Some("REL-42".into()),
                description: Some("Release 1.2.0.".into()),
                priority: Some("high".into()),
            }),
            memory: Some(Memory {
                recent_actions: vec!["Bumped the version".into()],
                preferences: [("style".to_string(), "terse".to_string())].into(),
                project_context: Some("A Rust workspace.".into()),
            }),
        };
        let md = render(&charter);
        let expected = "\
# Charter

## Identity

You act as:

- Name: Release Bot
- Email: bot@example.com
- Role: release engineer

## Objectives

1. Cut the release
2. Write notes
   for users

## Constraints

Never run these commands (in any form, including inside compound commands); they are blocked and running one stops the session:

- `rm -rf`
- `git push --force`

No shell command may match these regular expressions; one that does stops the session:

- `curl .*\\| *sh`

These actions need a person's approval first. Do not take them; say what you need and why, then stop:

- Publishing to crates.io

## Resources

- Token budget: 200000 tokens (input and output together)
- Time budget: 1h
- Tools you may use: `Bash`, `Edit`

## Task context

- Task id: REL-42
- Priority: high

Release 1.2.0.

## Memory

### Recent actions

- Bumped the version

### Preferences

- style: terse

### Project context

A Rust workspace.
";
        assert_eq!(md, expected);
    }

    #[test]
    fn only_set_parts_appear() {
        let md = render(&Charter {
            objectives: vec!["One thing".into()],
            ..Charter::default()
        });
        assert_eq!(md, "# Charter\n\n## Objectives\n\n1. One thing\n");
        assert!(!md.contains("Identity"));
    }

    #[test]
    fn code_spans_survive_backticks() {
        assert_eq!(code("ls"), "`ls`");
        assert_eq!(code("echo `id`"), "`` echo `id` ``");
    }
}
