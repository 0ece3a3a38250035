//! Validation of manifest documents: the JSON Schema first, then the rules a
//! schema cannot express, then the typed conversion.
//!
//! # The rules beyond the schema
//!
//! Everything a field's type says (types, enums, unknown fields, durations,
//! quantities, signals, `minimum`s such as `backoff.multiplier >= 1`) lives in
//! the generated schema ([`super::schema`]). The rules below relate fields to
//! each other, to the file, or to other documents; they are all in this file:
//!
//! 1. `apiVersion` is `sessionlet.dev/v1alpha1` (the schema's `const`; checked
//!    here by hand only when the kind is unknown and there is no schema).
//! 2. `kind` is `Session` or `Pool` (`check_kind`).
//! 3. A Session spec (also a Pool's `template.spec`) has exactly one of
//!    `command` and `agent`; `command[0]` is not empty; an agent has exactly
//!    one of `prompt` and `promptFile`; env names are non-empty and contain
//!    no `=` or NUL; no `envFrom[].file` is empty; every
//!    `charter.constraints.forbiddenPatterns` entry
//!    compiles as a regular expression (`session_spec_rules`).
//! 4. `backoff.initialDelay <= backoff.maxDelay`, defaults included
//!    (`backoff_rule`).
//! 5. A Pool with `replicas > 0` has a `template`; `template.spec.pool` is not
//!    set (`pool_rules`).
//! 6. Without `metadata.name`, the file's stem is the name and must be a
//!    valid name (`resolve_name`).
//! 7. Names are unique per kind within a file (`check_unique_in_file`) and
//!    across a directory ([`mark_duplicate_names`]); a Pool's replicas
//!    (`POOL-0`, `POOL-1`, ...) take Session names.
//! 8. A Pool's last replica name `NAME-(replicas-1)` is at most 63
//!    characters, like every name (`replica_names_rule`).

use std::collections::{BTreeMap, HashMap};

use super::codec::{Key, Node, Pos, Value};
use super::load::{Document, ManifestFile};
use super::schema::{
    compiled_pool, compiled_session, describe_value, did_you_mean, join_index, join_key,
    CompiledSchema, Finding, NAME_RULE,
};
use super::Problem;
use crate::api::{Duration, Object, PoolManifest, SessionManifest, API_VERSION};
use crate::core::names::{self, Claim, NameKey};

/// The kinds this build understands.
pub const KINDS: &[&str] = &["Session", "Pool"];

/// Whether `name` is a valid object name: a DNS-1123 label (lowercase
/// letters, digits and '-', 1 to 63 characters, starting and ending with a
/// letter or digit). Such a name can never form a path or a hidden file.
pub fn is_valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    let inner_ok = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-';
    let edge_ok = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    (1..=63).contains(&b.len())
        && b.iter().all(inner_ok)
        && b.first().is_some_and(edge_ok)
        && b.last().is_some_and(edge_ok)
}

/// The outcome of checking one document.
#[derive(Debug)]
pub(crate) struct Checked {
    /// `Session` or `Pool`, when the document says so.
    pub kind: Option<String>,
    /// The object's name when it could be read and is valid.
    pub name: Option<String>,
    /// Where the name is written (the document's start when defaulted).
    pub name_pos: Pos,
    /// Whether the name came from the file's stem.
    pub name_defaulted: bool,
    /// Every problem found.
    pub findings: Vec<Finding>,
    /// The typed object, when there were no findings.
    pub object: Option<Object>,
}

/// Checks one parsed document. `stem` is the file name without extension,
/// the default name.
pub(crate) fn check_document(doc: &Node, stem: &str) -> Checked {
    let mut checked = Checked {
        kind: None,
        name: None,
        name_pos: doc.pos,
        name_defaulted: false,
        findings: Vec::new(),
        object: None,
    };
    let out = &mut checked.findings;
    if !matches!(doc.value, Value::Map(_)) {
        out.push(finding(
            doc.pos,
            "",
            format!(
                "a manifest document must be a mapping with apiVersion, kind, metadata and spec, found {}",
                describe_value(&doc.value)
            ),
        ));
        return checked;
    }
    let kind = check_kind(doc, out);
    match kind {
        Some(kind) => {
            let schema: &CompiledSchema = if kind == "Pool" {
                compiled_pool()
            } else {
                compiled_session()
            };
            out.extend(schema.check(doc));
            if kind == "Pool" {
                pool_rules(doc, out);
            } else if let Some((key, spec)) = entry(doc, "spec") {
                session_spec_rules(key.pos, spec, "spec", out);
            }
        }
        // Without a kind there is no schema; still say what is wrong with
        // the API version, so one run shows both problems. A misspelt kind
        // is checked as the kind it resembles: its other errors show too.
        None => match guess_kind(doc) {
            Some(guess) => {
                let schema: &CompiledSchema = if guess == "Pool" {
                    compiled_pool()
                } else {
                    compiled_session()
                };
                out.extend(schema.check(doc).into_iter().filter(|f| f.path != "kind"));
                if guess == "Pool" {
                    pool_rules(doc, out);
                } else if let Some((key, spec)) = entry(doc, "spec") {
                    session_spec_rules(key.pos, spec, "spec", out);
                }
            }
            None => check_api_version(doc, out),
        },
    }
    let (name, pos, defaulted) = resolve_name(doc, stem, out);
    if let (Some("Pool"), Some(name)) = (kind, &name) {
        replica_names_rule(doc, name, out);
    }
    checked.name = name;
    checked.name_pos = pos;
    checked.name_defaulted = defaulted;
    checked.kind = kind.map(str::to_string);
    if checked.findings.is_empty() {
        if let (Some(kind), Some(name)) = (kind, &checked.name) {
            match to_object(doc, kind, name) {
                Ok(object) => checked.object = Some(object),
                Err(message) => checked.findings.push(finding(doc.pos, "", message)),
            }
        }
    }
    checked.findings.sort_by_key(|f| f.pos);
    checked
}

fn finding(pos: Pos, path: &str, message: String) -> Finding {
    Finding {
        pos,
        path: path.to_string(),
        message,
    }
}

/// The key and the non-null value under `name` of a mapping.
fn entry<'a>(node: &'a Node, name: &str) -> Option<(&'a Key, &'a Node)> {
    match &node.value {
        Value::Map(entries) => entries
            .iter()
            .find(|(k, v)| k.name == name && v.value != Value::Null)
            .map(|(k, v)| (k, v)),
        _ => None,
    }
}

fn as_str(node: &Node) -> Option<&str> {
    match &node.value {
        Value::Str(s) => Some(s),
        _ => None,
    }
}

/// Rule 2: the kind, when it is one this build knows.
fn check_kind(doc: &Node, out: &mut Vec<Finding>) -> Option<&'static str> {
    let allowed = KINDS.join(", ");
    let Some((_, node)) = entry(doc, "kind") else {
        out.push(finding(
            doc.pos,
            "kind",
            format!("is required; allowed kinds are {allowed}"),
        ));
        return None;
    };
    let Some(kind) = as_str(node) else {
        out.push(finding(
            node.pos,
            "kind",
            format!(
                "expected one of {allowed}, found {}",
                describe_value(&node.value)
            ),
        ));
        return None;
    };
    if let Some(known) = KINDS.iter().find(|k| **k == kind) {
        return Some(known);
    }
    let mut message = format!("unknown kind {kind:?}: allowed kinds are {allowed}");
    if let Some(s) = did_you_mean(kind, KINDS.iter().copied()) {
        message.push_str(&format!("; did you mean {s}?"));
    }
    out.push(finding(node.pos, "kind", message));
    None
}

/// The known kind a misspelt `kind` resembles, if any.
fn guess_kind(doc: &Node) -> Option<&'static str> {
    let kind = entry(doc, "kind").and_then(|(_, n)| as_str(n))?;
    let s = did_you_mean(kind, KINDS.iter().copied())?;
    KINDS.iter().copied().find(|k| *k == s)
}

/// Rule 1, for documents whose kind is unknown (the schema does it otherwise).
fn check_api_version(doc: &Node, out: &mut Vec<Finding>) {
    match entry(doc, "apiVersion") {
        None => out.push(finding(
            doc.pos,
            "apiVersion",
            format!("is required; set it to {API_VERSION}"),
        )),
        Some((_, node)) if as_str(node) != Some(API_VERSION) => out.push(finding(
            node.pos,
            "apiVersion",
            format!(
                "must be {API_VERSION}, found {}",
                describe_value(&node.value)
            ),
        )),
        Some(_) => {}
    }
}

/// Rules 3 and 4, for the spec at `path` (`spec` or `spec.template.spec`);
/// `spec_key` is where the `spec:` key is, to report missing fields at.
fn session_spec_rules(spec_key: Pos, spec: &Node, path: &str, out: &mut Vec<Finding>) {
    if !matches!(spec.value, Value::Map(_)) {
        return; // the schema reported it
    }
    let command = entry(spec, "command");
    let agent = entry(spec, "agent");
    // A misspelt `comand:` is already reported as an unknown field with a
    // suggestion; saying "command is required" as well would be noise.
    let misspelt = || match &spec.value {
        Value::Map(entries) => entries.iter().any(|(k, _)| {
            k.name != "command"
                && k.name != "agent"
                && did_you_mean(&k.name, ["command", "agent"]).is_some()
        }),
        _ => false,
    };
    match (command, agent) {
        (None, None) if misspelt() => {}
        (None, None) => out.push(finding(
            spec_key,
            &join_key(path, "command"),
            format!(
                "is required unless {path}.agent is set; e.g. command: [/bin/sh, -c, \"echo hello\"]"
            ),
        )),
        (Some((command_key, _)), Some((agent_key, _))) => out.push(finding(
            agent_key.pos,
            &join_key(path, "agent"),
            format!(
                "cannot be combined with {path}.command (line {}); set exactly one of them",
                command_key.pos.line
            ),
        )),
        _ => {}
    }
    if let Some((
        _,
        Node {
            value: Value::Seq(argv),
            ..
        },
    )) = command
    {
        if let Some(first) = argv.first() {
            if as_str(first).is_some_and(|s| s.trim().is_empty()) {
                out.push(finding(
                    first.pos,
                    &join_index(&join_key(path, "command"), 0),
                    "the program to run is empty; name it, e.g. /bin/sh".into(),
                ));
            }
        }
    }
    if let Some((agent_key, agent)) = agent {
        let agent_path = join_key(path, "agent");
        match (entry(agent, "prompt"), entry(agent, "promptFile")) {
            (None, None) if matches!(agent.value, Value::Map(_)) => out.push(finding(
                agent_key.pos,
                &join_key(&agent_path, "prompt"),
                format!("is required unless {agent_path}.promptFile is set"),
            )),
            (Some((prompt_key, _)), Some((file_key, _))) => out.push(finding(
                file_key.pos,
                &join_key(&agent_path, "promptFile"),
                format!(
                    "cannot be combined with {agent_path}.prompt (line {}); set exactly one of them",
                    prompt_key.pos.line
                ),
            )),
            _ => {}
        }
    }
    if let Some((
        _,
        Node {
            value: Value::Map(vars),
            ..
        },
    )) = entry(spec, "env")
    {
        let env_path = join_key(path, "env");
        for (key, _) in vars {
            let problem = if key.name.is_empty() {
                "an environment variable name cannot be empty"
            } else if key.name.contains(['=', '\0']) {
                "an environment variable name cannot contain '=' or a NUL character"
            } else {
                continue;
            };
            out.push(finding(
                key.pos,
                &join_key(&env_path, &key.name),
                problem.into(),
            ));
        }
    }
    if let Some((
        _,
        Node {
            value: Value::Seq(items),
            ..
        },
    )) = entry(spec, "envFrom")
    {
        for (i, item) in items.iter().enumerate() {
            if let Some((_, file)) = entry(item, "file") {
                if as_str(file).is_some_and(|f| f.trim().is_empty()) {
                    out.push(finding(
                        file.pos,
                        &format!("{}.file", join_index(&join_key(path, "envFrom"), i)),
                        "the file name is empty; name a dotenv file, e.g. secrets.env".into(),
                    ));
                }
            }
        }
    }
    workspace_rule(spec, path, out);
    forbidden_patterns_rule(spec, path, out);
    backoff_rule(spec, path, out);
    notify_rule(spec, path, out);
}

/// Webhooks: `url` must be one sessionlet can POST to, and every `on`
/// value a phase or reason it emits (a typo would silently never fire).
fn notify_rule(spec: &Node, path: &str, out: &mut Vec<Finding>) {
    let Some((
        _,
        Node {
            value: Value::Seq(items),
            ..
        },
    )) = entry(spec, "notify")
    else {
        return;
    };
    let accepted = crate::events::webhook::accepted_on();
    for (i, item) in items.iter().enumerate() {
        let item_path = join_index(&join_key(path, "notify"), i);
        if let Some((_, url)) = entry(item, "url") {
            if let Some(u) = as_str(url) {
                if let Err(why) = crate::events::webhook::parse_url(u) {
                    out.push(finding(url.pos, &join_key(&item_path, "url"), why));
                }
            }
        }
        if let Some((
            _,
            Node {
                value: Value::Seq(on),
                ..
            },
        )) = entry(item, "on")
        {
            for (j, v) in on.iter().enumerate() {
                let Some(name) = as_str(v) else { continue };
                if accepted.iter().any(|a| a == name) {
                    continue;
                }
                let hint = did_you_mean(name, accepted.iter().map(String::as_str))
                    .map(|d| format!("did you mean {d:?}? "))
                    .unwrap_or_default();
                out.push(finding(
                    v.pos,
                    &join_index(&join_key(&item_path, "on"), j),
                    format!(
                        "unknown phase or reason {name:?}; {hint}accepted: {}",
                        accepted.join(", ")
                    ),
                ));
            }
        }
    }
}

/// `spec.workspace`: names Git would refuse (or read as options) are
/// reported here, with their line, rather than at the first spawn. Whether
/// `repo` is a repository is checked at spawn time (it may appear later).
fn workspace_rule(spec: &Node, path: &str, out: &mut Vec<Finding>) {
    let Some((_, ws)) = entry(spec, "workspace") else {
        return;
    };
    let ws_path = join_key(path, "workspace");
    if let Some((_, repo)) = entry(ws, "repo") {
        if as_str(repo).is_some_and(|r| r.trim().is_empty()) {
            out.push(finding(
                repo.pos,
                &join_key(&ws_path, "repo"),
                "the repository path is empty; name a Git repository, e.g. repo: ../app".into(),
            ));
        }
    }
    for field in ["branch", "base"] {
        let Some((_, node)) = entry(ws, field) else {
            continue;
        };
        let Some(v) = as_str(node) else { continue };
        if let Some(problem) = crate::runtime::workspace::ref_problem(v) {
            out.push(finding(
                node.pos,
                &join_key(&ws_path, field),
                format!(
                    "{problem}; e.g. {field}: {}",
                    if field == "branch" {
                        "agent/fix-tests"
                    } else {
                        "main"
                    }
                ),
            ));
        }
    }
}

/// Rule 3, last part: forbidden patterns must compile, or the guard built
/// from them would silently not exist.
fn forbidden_patterns_rule(spec: &Node, path: &str, out: &mut Vec<Finding>) {
    let patterns = entry(spec, "charter")
        .and_then(|(_, c)| entry(c, "constraints"))
        .and_then(|(_, c)| entry(c, "forbiddenPatterns"));
    let Some((
        _,
        Node {
            value: Value::Seq(items),
            ..
        },
    )) = patterns
    else {
        return;
    };
    let list_path = format!("{path}.charter.constraints.forbiddenPatterns");
    for (i, item) in items.iter().enumerate() {
        let Some(pattern) = as_str(item) else {
            continue;
        };
        if let Err(e) = regex::RegexBuilder::new(pattern)
            .size_limit(1 << 20)
            .build()
        {
            out.push(finding(
                item.pos,
                &join_index(&list_path, i),
                format!("is not a valid regular expression: {}", regex_error(&e)),
            ));
        }
    }
}

/// The regex crate's syntax errors are multi-line drawings; keep the reason.
fn regex_error(e: &regex::Error) -> String {
    let text = e.to_string();
    text.lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix("error: "))
        .unwrap_or_else(|| text.lines().last().unwrap_or_default())
        .trim()
        .to_string()
}

/// Rule 4: the first delay cannot exceed the cap. Defaults count, so
/// `initialDelay: 10m` alone is refused (the default cap is 5m).
fn backoff_rule(spec: &Node, path: &str, out: &mut Vec<Finding>) {
    let Some((_, backoff)) = entry(spec, "backoff") else {
        return;
    };
    let defaults = crate::api::Backoff::default();
    // A value that is not a valid duration was reported by the schema.
    let read = |name: &str, default: Duration| -> Option<(Duration, Option<&Node>)> {
        match entry(backoff, name) {
            None => Some((default, None)),
            Some((_, node)) => as_str(node)?.parse().ok().map(|d| (d, Some(node))),
        }
    };
    let (Some((initial, initial_node)), Some((max, max_node))) = (
        read("initialDelay", defaults.initial_delay),
        read("maxDelay", defaults.max_delay),
    ) else {
        return;
    };
    if initial <= max {
        return;
    }
    let backoff_path = join_key(path, "backoff");
    let written = |d: Duration, node: Option<&Node>| match node {
        Some(_) => d.to_string(),
        None => format!("{d}, the default"),
    };
    match (initial_node, max_node) {
        (Some(node), _) => out.push(finding(
            node.pos,
            &format!("{backoff_path}.initialDelay"),
            format!(
                "{initial} is longer than {backoff_path}.maxDelay ({}); the first delay cannot exceed the cap",
                written(max, max_node)
            ),
        )),
        (None, Some(node)) => out.push(finding(
            node.pos,
            &format!("{backoff_path}.maxDelay"),
            format!(
                "{max} is shorter than {backoff_path}.initialDelay ({}); the cap cannot be below the first delay",
                written(initial, None)
            ),
        )),
        (None, None) => {}
    }
}

/// Rule 5, and rules 3 and 4 for the template's Session spec.
fn pool_rules(doc: &Node, out: &mut Vec<Finding>) {
    let Some((spec_key, spec)) = entry(doc, "spec") else {
        return; // replicas default to 0: nothing to check
    };
    let replicas = match entry(spec, "replicas") {
        Some((
            _,
            Node {
                value: Value::Int(n),
                ..
            },
        )) => *n,
        _ => 0,
    };
    let Some((_, template)) = entry(spec, "template") else {
        if replicas > 0 {
            out.push(finding(
                spec_key.pos,
                "spec.template",
                format!(
                    "is required when spec.replicas is greater than 0 (it is {replicas}): \
                     the template's spec says what each replica runs"
                ),
            ));
        }
        return;
    };
    let Some((tspec_key, tspec)) = entry(template, "spec") else {
        return; // the schema reported the missing spec
    };
    if let Some((pool_key, _)) = entry(tspec, "pool") {
        out.push(finding(
            pool_key.pos,
            "spec.template.spec.pool",
            "must not be set in a Pool's template: its replicas always run in this pool".into(),
        ));
    }
    session_spec_rules(tspec_key.pos, tspec, "spec.template.spec", out);
}

/// Rule 8: the replicas' names (`NAME-0` ... `NAME-(replicas-1)`) are valid
/// names, so a Pool whose name plus ordinal passes 63 characters is refused
/// up front rather than failing replica by replica.
fn replica_names_rule(doc: &Node, name: &str, out: &mut Vec<Finding>) {
    let Some((_, spec)) = entry(doc, "spec") else {
        return;
    };
    let Some((
        key,
        Node {
            value: Value::Int(replicas),
            ..
        },
    )) = entry(spec, "replicas")
    else {
        return;
    };
    if *replicas < 1 {
        return;
    }
    let last = format!("{name}-{}", replicas - 1);
    if last.len() <= 63 {
        return;
    }
    out.push(finding(
        key.pos,
        "spec.replicas",
        format!(
            "the last replica would be named {last:?} ({} characters), over the 63-character limit of names; \
             shorten metadata.name (to at most {} characters for {replicas} replicas) or lower spec.replicas",
            last.len(),
            63usize.saturating_sub(last.len() - name.len()),
        ),
    ));
}

/// Rule 6: the object's name, where it is written, and whether it came from
/// the file's stem. `None` when there is no valid name (with a finding).
fn resolve_name(doc: &Node, stem: &str, out: &mut Vec<Finding>) -> (Option<String>, Pos, bool) {
    let metadata = entry(doc, "metadata");
    if let Some((_, node)) = metadata.and_then(|(_, m)| entry(m, "name")) {
        // An invalid explicit name was reported by the schema's pattern.
        let name = as_str(node)
            .filter(|n| is_valid_name(n))
            .map(str::to_string);
        return (name, node.pos, false);
    }
    if is_valid_name(stem) {
        return (Some(stem.to_string()), doc.pos, true);
    }
    let pos = metadata.map_or(doc.pos, |(k, _)| k.pos);
    out.push(finding(
        pos,
        "metadata.name",
        format!(
            "is not set, and the file name {stem:?} is not a valid name ({NAME_RULE}); \
             set metadata.name or rename the file"
        ),
    ));
    (None, pos, false)
}

/// The typed object, with the name filled in. Errors here mean the schema
/// and the types disagree; they are reported, never panicked on.
fn to_object(doc: &Node, kind: &str, name: &str) -> Result<Object, String> {
    let json = doc.value.to_json();
    let fail = |e: serde_json::Error| format!("cannot be read as a {kind}: {e}");
    Ok(if kind == "Pool" {
        let mut pool: PoolManifest = serde_json::from_value(json).map_err(fail)?;
        pool.metadata.name = Some(name.to_string());
        Object::Pool(pool)
    } else {
        let mut session: SessionManifest = serde_json::from_value(json).map_err(fail)?;
        session.metadata.name = Some(name.to_string());
        Object::Session(session)
    })
}

/// Rule 7, within one file: a later document reusing a kind and name gets a
/// finding naming the line of the first.
pub(crate) fn check_unique_in_file(docs: &mut [Checked]) {
    let mut seen: HashMap<(String, String), Pos> = HashMap::new();
    for doc in docs.iter_mut() {
        let (Some(kind), Some(name)) = (&doc.kind, &doc.name) else {
            continue;
        };
        let key = (kind.clone(), name.clone());
        match seen.get(&key) {
            None => {
                seen.insert(key, doc.name_pos);
            }
            Some(first) => {
                let why = if doc.name_defaulted {
                    " (named after the file, as metadata.name is not set; give each document its own name)"
                } else {
                    ""
                };
                let message = format!(
                    "duplicate name: {kind} {name:?} is already defined at line {} of this file{why}",
                    first.line
                );
                doc.findings
                    .push(finding(doc.name_pos, "metadata.name", message));
                doc.object = None;
            }
        }
    }
}

/// Rule 7, across the files of one directory: names are unique per kind.
///
/// `files` must be the directory's manifests in lexical order of their file
/// names (as [`super::list_manifests`] returns them); an object reusing a
/// kind and name already defined in an earlier file becomes
/// [`Document::Invalid`] with a problem naming the first definition. A
/// Pool's replicas (`POOL-0`, ...) take Session names too.
pub fn mark_duplicate_names(files: &mut [ManifestFile]) {
    mark_duplicate_names_holding(files, &BTreeMap::new());
}

/// Where a name is claimed: a file, a document, and for a Pool's replica
/// its ordinal and the pool's name.
#[derive(Debug, Clone, PartialEq)]
struct Site {
    file: usize,
    doc: usize,
    replica: Option<(u32, String)>,
}

/// The kind and name a document declares, when readable.
fn doc_key(doc: &Document) -> Option<NameKey> {
    match doc {
        Document::Valid(object) => Some((object.kind().to_string(), object.name().to_string())),
        Document::Invalid {
            kind: Some(kind),
            name: Some(name),
            ..
        } => Some((kind.clone(), name.clone())),
        Document::Invalid { .. } => None,
    }
}

/// [`mark_duplicate_names`], where `holders` maps names to the stem of the
/// file holding them (running, or recorded in the status files): as the
/// controller decides, the holder keeps its name and the other file is
/// blamed, whatever the order ([`crate::core::names::winners`]).
pub fn mark_duplicate_names_holding(
    files: &mut [ManifestFile],
    holders: &BTreeMap<NameKey, String>,
) {
    // Pools first: a Pool that loses its own name claims no replica names.
    let mut claims = Vec::new();
    let mut sites = Vec::new();
    for (fi, file) in files.iter().enumerate() {
        for (di, doc) in file.documents.iter().enumerate() {
            if let Some(key) = doc_key(doc).filter(|k| k.0 == "Pool") {
                claims.push(Claim {
                    key,
                    stem: file.stem.clone(),
                });
                sites.push(Site {
                    file: fi,
                    doc: di,
                    replica: None,
                });
            }
        }
    }
    let pool_winners = names::winners(&claims, holders);
    let pool_sites = sites.clone();
    for (fi, file) in files.iter().enumerate() {
        for (di, doc) in file.documents.iter().enumerate() {
            let Some(key) = doc_key(doc) else {
                continue;
            };
            let site = Site {
                file: fi,
                doc: di,
                replica: None,
            };
            if key.0 != "Pool" {
                claims.push(Claim {
                    key,
                    stem: file.stem.clone(),
                });
                sites.push(site);
                continue;
            }
            let Document::Valid(Object::Pool(pool)) = doc else {
                continue;
            };
            let won = pool_winners
                .get(&key)
                .is_some_and(|w| pool_sites[w.index] == site);
            if !won || pool.spec.template.is_none() {
                continue;
            }
            for ordinal in 0..pool.spec.replicas {
                claims.push(Claim {
                    key: ("Session".into(), names::replica_name(&key.1, ordinal)),
                    stem: file.stem.clone(),
                });
                sites.push(Site {
                    replica: Some((ordinal, key.1.clone())),
                    ..site.clone()
                });
            }
        }
    }
    let winners = names::winners(&claims, holders);
    let pos_of = |files: &[ManifestFile], site: &Site| {
        files[site.file]
            .name_positions
            .get(site.doc)
            .copied()
            .unwrap_or_default()
    };
    let mut found: Vec<(usize, usize, Problem)> = Vec::new();
    for (index, claim) in claims.iter().enumerate() {
        let Some(w) = winners.get(&claim.key).filter(|w| w.index != index) else {
            continue;
        };
        let (lost, won) = (&sites[index], &sites[w.index]);
        // Two documents of one file are already checked by check_unique_in_file.
        if lost.file == won.file && lost.replica.is_none() && won.replica.is_none() {
            continue;
        }
        let (kind, name) = &claim.key;
        let at = pos_of(files, won);
        let first = format!(
            "{}:{}:{}",
            files[won.file].path.display(),
            at.line.max(1),
            at.col.max(1)
        );
        let holds = if w.held {
            ", which holds it (its status file records it)"
        } else {
            ""
        };
        let message = match (&lost.replica, &won.replica) {
            (None, None) => format!(
                "duplicate name: {kind} {name:?} is already defined in {first}{holds}; names are unique per kind across the directory"
            ),
            (None, Some((n, pool))) => format!(
                "duplicate name: Session {name:?} is the name of replica {n} of Pool {pool:?} defined in {first}{holds}; a pool's replicas take the names POOL-0, POOL-1, ...; rename the session"
            ),
            (Some((n, pool)), _) => format!(
                "duplicate name: replica {n} of Pool {pool:?} would be named {name:?}, already defined as a Session in {first}{holds}; rename the pool or the session"
            ),
        };
        let pos = pos_of(files, lost);
        found.push((
            lost.file,
            lost.doc,
            Problem {
                file: files[lost.file].path.clone(),
                line: pos.line.max(1),
                col: pos.col.max(1),
                path: "metadata.name".into(),
                message,
            },
        ));
    }
    for (fi, di, problem) in found {
        let file = &mut files[fi];
        let doc = &mut file.documents[di];
        match doc {
            Document::Invalid { problems, .. } => problems.push(problem.clone()),
            Document::Valid(object) => {
                *doc = Document::Invalid {
                    kind: Some(object.kind().to_string()),
                    name: Some(object.name().to_string()),
                    problems: vec![problem.clone()],
                }
            }
        }
        file.problems.push(problem);
        file.problems.sort_by_key(|p| (p.line, p.col));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_dns_labels() {
        for ok in ["a", "web-1", "0", &"a".repeat(63)] {
            assert!(is_valid_name(ok), "{ok}");
        }
        for bad in [
            "",
            "-a",
            "a-",
            "A",
            "a_b",
            "a.b",
            "../x",
            &"a".repeat(64),
            "é",
        ] {
            assert!(!is_valid_name(bad), "{bad}");
        }
    }

    fn check(yaml: &str, stem: &str) -> Checked {
        let docs = crate::manifest::codec::parse_documents(yaml).unwrap();
        check_document(&docs[0], stem)
    }

    fn messages(c: &Checked) -> Vec<String> {
        c.findings
            .iter()
            .map(|f| format!("{}:{} {}: {}", f.pos.line, f.pos.col, f.path, f.message))
            .collect()
    }

    #[test]
    fn notify_urls_and_on_values_are_checked() {
        let c = check(
            "apiVersion: sessionlet.dev/v1alpha1\nkind: Session\nmetadata: {name: a}\nspec:\n  command: [/bin/true]\n  notify:\n  - url: https://x/\n    on: [Failed, Faild]\n  - url: http://127.0.0.1:9/ok\n",
            "a",
        );
        let m = messages(&c);
        assert_eq!(m.len(), 2, "{m:#?}");
        assert!(
            m[0].starts_with("7:10 spec.notify[0].url: https is not supported"),
            "{m:#?}"
        );
        assert!(m[1].starts_with("8:18 spec.notify[0].on[1]: unknown phase or reason \"Faild\"; did you mean \"Failed\"?"), "{m:#?}");
        assert!(m[1].contains("accepted: Pending, Queued"), "{m:#?}");
    }

    #[test]
    fn an_unknown_kind_still_reports_the_api_version() {
        let c = check("apiVersion: v1\nkind: Job\nspec: {}\n", "x");
        assert_eq!(
            messages(&c),
            [
                "1:13 apiVersion: must be sessionlet.dev/v1alpha1, found the string \"v1\"",
                "2:7 kind: unknown kind \"Job\": allowed kinds are Session, Pool",
            ]
        );
        assert_eq!((c.kind, c.name.as_deref()), (None, Some("x")));
    }

    #[test]
    fn a_pool_becomes_a_typed_object_with_defaults() {
        let c = check(
            "apiVersion: sessionlet.dev/v1alpha1\nkind: Pool\nspec:\n  replicas: 2\n  \
             template:\n    spec:\n      command: [/bin/true]\n",
            "workers",
        );
        assert_eq!(messages(&c), Vec::<String>::new());
        let Some(Object::Pool(pool)) = c.object else {
            panic!("{c:?}")
        };
        assert_eq!(pool.metadata.name.as_deref(), Some("workers"));
        assert_eq!(pool.spec.replicas, 2);
        assert_eq!(pool.spec.max_queue, 100);
        let template = pool.spec.template.unwrap();
        assert_eq!(
            template.spec.termination_grace_period,
            Duration::from_secs(10)
        );
    }

    #[test]
    fn an_invalid_name_is_never_handed_out() {
        let c = check(
            "apiVersion: sessionlet.dev/v1alpha1\nkind: Session\nmetadata: {name: ../../etc}\n\
             spec: {command: [x]}\n",
            "fine",
        );
        assert_eq!(c.name, None);
        assert!(c.object.is_none());
        assert!(
            messages(&c)[0].starts_with("3:18 metadata.name: invalid name \"../../etc\""),
            "{:?}",
            messages(&c)
        );
    }

    #[test]
    fn null_sections_are_type_errors() {
        let c = check(
            "apiVersion: sessionlet.dev/v1alpha1\nkind: Session\nspec:\n",
            "x",
        );
        assert_eq!(
            messages(&c),
            ["3:5 spec: expected a mapping, found nothing (null)"]
        );
    }

    #[test]
    fn workspace_names_git_would_refuse_are_reported_with_their_line() {
        let c = check(
            "apiVersion: sessionlet.dev/v1alpha1\nkind: Session\nspec:\n  command: [x]\n  workspace:\n    repo: \"\"\n    branch: -f\n    base: a..b\n",
            "x",
        );
        let m = messages(&c);
        assert_eq!(m.len(), 3, "{m:?}");
        assert!(
            m[0].starts_with("6:11 spec.workspace.repo: the repository path is empty"),
            "{m:?}"
        );
        assert!(
            m[1].starts_with("7:13 spec.workspace.branch: cannot start with '-'"),
            "{m:?}"
        );
        assert!(
            m[2].starts_with("8:11 spec.workspace.base: is not a valid Git ref name"),
            "{m:?}"
        );
    }

    #[test]
    #[allow(clippy::invalid_regex)] // the invalid pattern is the point
    fn regex_errors_are_one_line() {
        let e = regex::Regex::new("(unclosed").unwrap_err();
        assert_eq!(regex_error(&e), "unclosed group");
    }
}
