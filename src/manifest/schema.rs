//! The JSON Schemas of the manifests, generated from the API types, and a
//! checker that walks a parsed YAML [`Node`] tree against them.
//!
//! The same schemas drive validation and are written to `schemas/` for
//! editors (`# yaml-language-server: $schema=...`), so what the editor
//! suggests and what the loader accepts cannot drift apart. The checker knows
//! only the JSON Schema keywords schemars emits for our types (`$ref`,
//! `type`, `properties`, `additionalProperties`, `required`, `const`, `enum`,
//! `oneOf`, `anyOf`, `minimum`, `maximum`, `exclusiveMinimum`,
//! `exclusiveMaximum`, `minItems`, `maxItems`, `pattern`, `items` and the
//! `format`s below); unlike a general validator it keeps the
//! position of every value and says what is allowed instead of only "invalid".
//!
//! Formats: `duration`, `quantity` and `signal` are checked by parsing with the
//! API's own `FromStr` implementations, whose errors say what is allowed;
//! schemars' integer formats (`uint32`, ...) are checked as ranges, so a value
//! that would overflow its field is reported at its position rather than as a
//! position-less deserialization error later.

use std::collections::HashMap;
use std::sync::OnceLock;

use regex::Regex;
use serde_json::{Map, Value as J};

use super::codec::{Node, Pos, Value};
use crate::api::{Duration, PoolManifest, Quantity, SessionManifest, SignalName};

/// The JSON Schema of a `kind: Session` document.
pub fn session_schema() -> J {
    schemars::schema_for!(SessionManifest).to_value()
}

/// The JSON Schema of a `kind: Pool` document.
pub fn pool_schema() -> J {
    schemars::schema_for!(PoolManifest).to_value()
}

/// Renders a schema the way the files in `schemas/` are written: pretty JSON
/// with a trailing newline.
pub fn render(schema: &J) -> String {
    // Serializing a `Value` cannot fail (its map keys are strings); the
    // fallback only keeps this function total.
    let mut text = serde_json::to_string_pretty(schema).unwrap_or_default();
    text.push('\n');
    text
}

/// The pattern schemars emits for names (`metadata.name`, `spec.pool`).
pub(crate) const NAME_PATTERN: &str = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$";

/// What a valid name looks like, in words (used wherever a name is refused).
pub(crate) const NAME_RULE: &str = "a name has only lowercase letters, digits and '-', \
     at most 63 characters, and starts and ends with a letter or digit";

/// One schema violation: where, which field, what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Finding {
    /// Where to point the user.
    pub pos: Pos,
    /// The field path (`spec.backoff.maxDelay`), empty for the document.
    pub path: String,
    /// What is wrong and what is allowed.
    pub message: String,
}

/// A generated schema with its `pattern`s compiled once.
pub(crate) struct CompiledSchema {
    root: J,
    patterns: HashMap<String, Regex>,
}

/// The Session schema, generated and compiled on first use.
pub(crate) fn compiled_session() -> &'static CompiledSchema {
    static SCHEMA: OnceLock<CompiledSchema> = OnceLock::new();
    SCHEMA.get_or_init(|| CompiledSchema::new(session_schema()))
}

/// The Pool schema, generated and compiled on first use.
pub(crate) fn compiled_pool() -> &'static CompiledSchema {
    static SCHEMA: OnceLock<CompiledSchema> = OnceLock::new();
    SCHEMA.get_or_init(|| CompiledSchema::new(pool_schema()))
}

impl CompiledSchema {
    /// Compiles every `pattern` in the schema. A pattern the regex crate
    /// rejects is left out; values are then reported against it by
    /// `Walker::pattern` as an internal error rather than silently passing.
    pub(crate) fn new(root: J) -> Self {
        let mut patterns = HashMap::new();
        collect_patterns(&root, &mut patterns);
        CompiledSchema { root, patterns }
    }

    /// Every violation of the schema in `doc`, in no particular order.
    pub(crate) fn check(&self, doc: &Node) -> Vec<Finding> {
        let mut walker = Walker {
            schema: self,
            out: Vec::new(),
        };
        walker.walk(&self.root, doc, "", doc.pos);
        walker.out
    }
}

fn collect_patterns(schema: &J, out: &mut HashMap<String, Regex>) {
    match schema {
        J::Object(o) => {
            if let Some(p) = o.get("pattern").and_then(J::as_str) {
                if let Ok(re) = Regex::new(p) {
                    out.insert(p.to_string(), re);
                }
            }
            o.values().for_each(|v| collect_patterns(v, out));
        }
        J::Array(a) => a.iter().for_each(|v| collect_patterns(v, out)),
        _ => {}
    }
}

/// Appends a mapping key to a field path: `spec.env` + `HOME` is
/// `spec.env.HOME`; keys that are not plain words are quoted in brackets
/// (`metadata.labels["app.kubernetes.io/name"]`) so the path stays unambiguous.
pub(crate) fn join_key(path: &str, key: &str) -> String {
    let plain = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    match (path.is_empty(), plain) {
        (true, true) => key.to_string(),
        (false, true) => format!("{path}.{key}"),
        (_, false) => format!("{path}[{key:?}]"),
    }
}

/// Appends a list index to a field path: `spec.command[0]`.
pub(crate) fn join_index(path: &str, index: usize) -> String {
    format!("{path}[{index}]")
}

/// The closest candidate to a misspelt `input`, if one is close enough to be
/// a plausible typo: same letters in another case, a missing prefix
/// (`TERM` for `SIGTERM`), or a small edit distance.
pub(crate) fn did_you_mean<'c>(
    input: &str,
    candidates: impl IntoIterator<Item = &'c str>,
) -> Option<&'c str> {
    let lower = input.to_lowercase();
    let mut best: Option<(usize, &str)> = None;
    for c in candidates {
        let cl = c.to_lowercase();
        // Allow about one typo per three letters, at least one.
        let limit = (c.chars().count() / 3).max(1);
        let distance = if cl == lower {
            0
        } else if lower.len() >= 3 && cl.ends_with(&lower) {
            1
        } else if cl.len().abs_diff(lower.len()) > limit {
            // Cannot be within the limit; skip the costlier distance.
            continue;
        } else {
            strsim::damerau_levenshtein(&lower, &cl)
        };
        if distance <= limit && best.is_none_or(|(d, _)| distance < d) {
            best = Some((distance, c));
        }
    }
    best.map(|(_, c)| c)
}

/// A short description of a YAML value for messages: `the string "abc"`.
pub(crate) fn describe_value(v: &Value) -> String {
    fn clip(s: &str) -> String {
        const MAX: usize = 40;
        if s.chars().count() <= MAX {
            format!("{s:?}")
        } else {
            let head: String = s.chars().take(MAX).collect();
            format!("{head:?}...")
        }
    }
    match v {
        Value::Null => "nothing (null)".into(),
        Value::Bool(b) => format!("the boolean {b}"),
        Value::Int(i) => format!("the integer {i}"),
        Value::UInt(u) => format!("the integer {u}"),
        Value::Float(f) => format!("the number {f}"),
        Value::Str(s) => format!("the string {}", clip(s)),
        Value::Seq(_) => "a list".into(),
        Value::Map(_) => "a mapping".into(),
    }
}

/// Whether `path` is a Session spec's `env` (a Session's, or a Pool
/// template's), whose values are never quoted in messages.
pub(crate) fn is_env_path(path: &str) -> bool {
    path == "spec.env" || path == "spec.template.spec.env"
}

/// The type of a YAML value with its article, without the value:
/// `an integer`, `a mapping`.
fn type_phrase(v: &Value) -> &'static str {
    match v {
        Value::Null => "nothing (null)",
        Value::Bool(_) => "a boolean",
        Value::Int(_) | Value::UInt(_) => "an integer",
        Value::Float(_) => "a number",
        Value::Str(_) => "a string",
        Value::Seq(_) => "a list",
        Value::Map(_) => "a mapping",
    }
}

/// A JSON value as a user writes it in YAML: strings unquoted.
fn show(v: &J) -> String {
    match v {
        J::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn type_admits(ty: &str, v: &Value) -> bool {
    match ty {
        "null" => matches!(v, Value::Null),
        "boolean" => matches!(v, Value::Bool(_)),
        // Floats are not integers here even when whole (2.0): the typed
        // loader would refuse them, and the schema must not promise more.
        "integer" => matches!(v, Value::Int(_) | Value::UInt(_)),
        "number" => matches!(v, Value::Int(_) | Value::UInt(_) | Value::Float(_)),
        "string" => matches!(v, Value::Str(_)),
        "array" => matches!(v, Value::Seq(_)),
        "object" => matches!(v, Value::Map(_)),
        _ => true,
    }
}

fn types_of(schema: &Map<String, J>) -> Option<Vec<&str>> {
    match schema.get("type")? {
        J::String(s) => Some(vec![s.as_str()]),
        J::Array(a) => Some(a.iter().filter_map(J::as_str).collect()),
        _ => None,
    }
}

fn as_f64(v: &Value) -> Option<f64> {
    match v {
        Value::Int(i) => Some(*i as f64),
        Value::UInt(u) => Some(*u as f64),
        Value::Float(f) => Some(*f),
        _ => None,
    }
}

fn as_i128(v: &Value) -> Option<i128> {
    match v {
        Value::Int(i) => Some(i128::from(*i)),
        Value::UInt(u) => Some(i128::from(*u)),
        _ => None,
    }
}

/// Checks a string against a value `format`; `Err` says what is allowed.
fn check_string_format(format: &str, s: &str) -> Result<(), String> {
    match format {
        "duration" => s.parse::<Duration>().map(drop).map_err(|e| e.to_string()),
        "quantity" => s.parse::<Quantity>().map(drop).map_err(|e| e.to_string()),
        "signal" => s.parse::<SignalName>().map(drop).map_err(|e| e.to_string()),
        _ => Ok(()),
    }
}

/// The range of schemars' integer formats.
fn integer_format_range(format: &str) -> Option<(i128, i128)> {
    Some(match format {
        "uint8" => (0, u8::MAX.into()),
        "uint16" => (0, u16::MAX.into()),
        "uint32" | "uint" => (0, u32::MAX.into()),
        "uint64" => (0, u64::MAX.into()),
        "int8" => (i8::MIN.into(), i8::MAX.into()),
        "int16" => (i16::MIN.into(), i16::MAX.into()),
        "int32" | "int" => (i32::MIN.into(), i32::MAX.into()),
        "int64" => (i64::MIN.into(), i64::MAX.into()),
        _ => return None,
    })
}

/// Walks a node tree against a schema, collecting findings.
struct Walker<'s> {
    schema: &'s CompiledSchema,
    out: Vec<Finding>,
}

impl<'s> Walker<'s> {
    fn push(&mut self, pos: Pos, path: &str, message: String) {
        self.out.push(Finding {
            pos,
            path: path.to_string(),
            message,
        });
    }

    /// Follows a local `$ref` (`#/$defs/X`).
    fn resolve(&self, reference: &str) -> Option<&'s J> {
        let pointer = reference.strip_prefix('#')?;
        self.schema.root.pointer(pointer)
    }

    /// The schema itself, or what its top-level `$ref` points to.
    fn deref(&self, schema: &'s J) -> &'s J {
        let mut s = schema;
        // Bounded: a cycle of pure references would otherwise loop forever.
        for _ in 0..16 {
            match s
                .get("$ref")
                .and_then(J::as_str)
                .and_then(|r| self.resolve(r))
            {
                Some(target) => s = target,
                None => break,
            }
        }
        s
    }

    /// Whether the schema's type (looking through `$ref`, `const`, `enum`
    /// and alternatives) admits the value's type, ignoring everything else:
    /// used to pick the alternative the user most likely meant.
    fn admits_type(&self, schema: &'s J, v: &Value) -> bool {
        let s = self.deref(schema);
        let Some(o) = s.as_object() else {
            return s.as_bool().unwrap_or(true);
        };
        if let Some(types) = types_of(o) {
            return types.iter().any(|t| type_admits(t, v));
        }
        if let Some(c) = o.get("const") {
            return same_json_type(c, &v.to_json());
        }
        if let Some(values) = o.get("enum").and_then(J::as_array) {
            let j = v.to_json();
            return values.iter().any(|e| same_json_type(e, &j));
        }
        if let Some(alts) = o
            .get("oneOf")
            .or_else(|| o.get("anyOf"))
            .and_then(J::as_array)
        {
            return alts.iter().any(|a| self.admits_type(a, v));
        }
        true
    }

    /// The allowed values when every alternative is a constant (how
    /// schemars renders a unit-variant enum).
    fn constants(&self, alts: &'s [J]) -> Option<Vec<&'s J>> {
        let mut values = Vec::new();
        for a in alts {
            let a = self.deref(a);
            if let Some(c) = a.get("const") {
                values.push(c);
            } else if let Some(e) = a.get("enum").and_then(J::as_array) {
                values.extend(e.iter());
            } else {
                return None;
            }
        }
        Some(values)
    }

    /// What a schema accepts, in words: `a duration such as 30s`, `a list of strings`.
    fn describe(&self, schema: &'s J) -> String {
        let s = self.deref(schema);
        let Some(o) = s.as_object() else {
            return "anything".into();
        };
        match o.get("format").and_then(J::as_str) {
            Some("duration") => return "a duration such as 30s, 5m or 1h30m".into(),
            Some("quantity") => return "a quantity such as 512Mi or 2Gi".into(),
            Some("signal") => return "a signal name such as SIGTERM".into(),
            _ => {}
        }
        if let Some(c) = o.get("const") {
            return show(c);
        }
        if let Some(e) = o.get("enum").and_then(J::as_array) {
            return format!("one of {}", list(e.iter()));
        }
        if let Some(alts) = o
            .get("oneOf")
            .or_else(|| o.get("anyOf"))
            .and_then(J::as_array)
        {
            if let Some(values) = self.constants(alts) {
                return format!("one of {}", list(values.into_iter()));
            }
            let parts: Vec<String> = alts
                .iter()
                .filter(|a| self.deref(a).get("type") != Some(&J::from("null")))
                .map(|a| self.describe(a))
                .collect();
            return parts.join(" or ");
        }
        let Some(types) = types_of(o) else {
            return "anything".into();
        };
        let non_null: Vec<&str> = types.iter().copied().filter(|t| *t != "null").collect();
        let shown = if non_null.is_empty() { types } else { non_null };
        shown
            .iter()
            .map(|t| match *t {
                "string" => "a string".to_string(),
                "integer" => "an integer".into(),
                "number" => "a number".into(),
                "boolean" => "true or false".into(),
                "null" => "nothing (null)".into(),
                "array" => match o.get("items") {
                    Some(items) if self.deref(items).get("type") == Some(&J::from("string")) => {
                        "a list of strings".into()
                    }
                    _ => "a list".into(),
                },
                "object" => match o.get("additionalProperties") {
                    Some(J::Object(v)) if v.get("type") == Some(&J::from("string")) => {
                        "a mapping of names to strings".into()
                    }
                    _ => "a mapping".into(),
                },
                other => other.to_string(),
            })
            .collect::<Vec<_>>()
            .join(" or ")
    }

    fn type_error(&mut self, schema: &'s J, node: &Node, path: &str) {
        let expected = self.describe(schema);
        let mut message = format!("expected {expected}, found {}", describe_value(&node.value));
        let wants_string = self.admits_type(schema, &Value::Str(String::new()));
        if let Some(hint) = hint(&expected, &node.value, path) {
            message.push_str(&hint);
        } else if wants_string
            && matches!(
                node.value,
                Value::Int(_) | Value::UInt(_) | Value::Float(_) | Value::Bool(_)
            )
        {
            message.push_str("; put the value in quotes to make it a string");
        }
        self.push(node.pos, path, message);
    }

    /// Checks `node` at `path` against `schema`. `anchor` is where a missing
    /// child is reported: the key naming this node, or the node itself.
    fn walk(&mut self, schema: &'s J, node: &Node, path: &str, anchor: Pos) {
        if is_env_path(path) {
            self.env(node, path);
            return;
        }
        let o = match schema {
            J::Object(o) => o,
            J::Bool(false) => {
                self.push(node.pos, path, "no value is allowed here".into());
                return;
            }
            _ => return,
        };
        if let Some(reference) = o.get("$ref").and_then(J::as_str) {
            match self.resolve(reference) {
                Some(target) => self.walk(target, node, path, anchor),
                None => self.push(
                    node.pos,
                    path,
                    format!("internal error: the schema reference {reference} is missing"),
                ),
            }
        }
        let one_of = o.get("oneOf").and_then(J::as_array);
        if let Some(alts) = one_of.or_else(|| o.get("anyOf").and_then(J::as_array)) {
            self.alternatives(alts, one_of.is_some(), node, path, anchor);
        }
        if let Some(types) = types_of(o) {
            if !types.iter().any(|t| type_admits(t, &node.value)) {
                self.type_error(schema, node, path);
                return;
            }
        }
        if node.value == Value::Null {
            return;
        }
        if let Some(c) = o.get("const") {
            if node.value.to_json() != *c {
                self.push(
                    node.pos,
                    path,
                    format!("must be {}, found {}", show(c), describe_value(&node.value)),
                );
                return;
            }
        }
        if let Value::Str(s) = &node.value {
            if let Some(format) = o.get("format").and_then(J::as_str) {
                if let Err(message) = check_string_format(format, s) {
                    // The parser's message is the precise one; enum and
                    // pattern would only repeat it less clearly.
                    self.push(node.pos, path, message);
                    return;
                }
            }
        }
        if let Some(values) = o.get("enum").and_then(J::as_array) {
            if !values.contains(&node.value.to_json()) {
                self.enum_error(values.iter(), node, path);
                return;
            }
        }
        match &node.value {
            Value::Str(s) => self.pattern(o, s, node, path),
            Value::Int(_) | Value::UInt(_) | Value::Float(_) => self.number(o, node, path),
            Value::Seq(items) => self.seq(o, items, node, path),
            Value::Map(entries) => self.map(o, entries, path, anchor),
            Value::Null | Value::Bool(_) => {}
        }
    }

    /// A Session spec's `env`: a mapping of names to strings. Its values may
    /// be secrets, so a problem names the key and the expected type, never
    /// the value (whatever its type).
    fn env(&mut self, node: &Node, path: &str) {
        const HIDDEN: &str = "environment values are never shown";
        let Value::Map(entries) = &node.value else {
            self.push(
                node.pos,
                path,
                format!(
                    "expected a mapping of names to strings, found {} ({HIDDEN})",
                    type_phrase(&node.value)
                ),
            );
            return;
        };
        for (key, value) in entries {
            if matches!(value.value, Value::Str(_)) {
                continue;
            }
            let mut message = format!(
                "expected a string, found {} ({HIDDEN})",
                type_phrase(&value.value)
            );
            if matches!(
                value.value,
                Value::Int(_) | Value::UInt(_) | Value::Float(_) | Value::Bool(_)
            ) {
                message.push_str("; put the value in quotes to make it a string");
            }
            self.push(value.pos, &join_key(path, &key.name), message);
        }
    }

    fn enum_error<'v>(
        &mut self,
        values: impl Iterator<Item = &'v J> + Clone,
        node: &Node,
        path: &str,
    ) {
        let mut message = format!(
            "invalid value {}: allowed values are {}",
            match &node.value {
                Value::Str(s) => format!("{s:?}"),
                other => describe_value(other),
            },
            list(values.clone())
        );
        if let Value::Str(s) = &node.value {
            if let Some(m) = did_you_mean(s, values.filter_map(J::as_str)) {
                message.push_str(&format!("; did you mean {m}?"));
            }
        }
        self.push(node.pos, path, message);
    }

    fn alternatives(&mut self, alts: &'s [J], one_of: bool, node: &Node, path: &str, anchor: Pos) {
        if let Some(values) = self.constants(alts) {
            if !values.contains(&&node.value.to_json()) {
                self.enum_error(values.into_iter(), node, path);
            }
            return;
        }
        let mut results = Vec::with_capacity(alts.len());
        for alt in alts {
            let mut sub = Walker {
                schema: self.schema,
                out: Vec::new(),
            };
            sub.walk(alt, node, path, anchor);
            results.push(sub.out);
        }
        let passed = results.iter().filter(|r| r.is_empty()).count();
        if passed == 1 || (passed > 1 && !one_of) {
            return;
        }
        if passed > 1 {
            self.push(
                node.pos,
                path,
                "the value matches more than one of the allowed forms".into(),
            );
            return;
        }
        // Nothing matched: report the findings of the alternative the user
        // most likely meant (the one whose type fits), so the message is
        // "invalid duration" rather than "matches none of 2 schemas".
        let best = results
            .into_iter()
            .zip(alts)
            .filter(|(_, alt)| self.admits_type(alt, &node.value))
            .min_by_key(|(findings, _)| findings.len());
        match best {
            Some((findings, _)) => self.out.extend(findings),
            None => {
                let expected: Vec<String> = alts
                    .iter()
                    .filter(|a| self.deref(a).get("type") != Some(&J::from("null")))
                    .map(|a| self.describe(a))
                    .collect();
                let mut message = format!(
                    "expected {}, found {}",
                    expected.join(" or "),
                    describe_value(&node.value)
                );
                if let Some(hint) = hint(&expected.join(" or "), &node.value, path) {
                    message.push_str(&hint);
                } else if alts
                    .iter()
                    .any(|a| self.admits_type(a, &Value::Str(String::new())))
                    && matches!(
                        node.value,
                        Value::Int(_) | Value::UInt(_) | Value::Float(_) | Value::Bool(_)
                    )
                {
                    message.push_str("; put the value in quotes to make it a string");
                }
                self.push(node.pos, path, message);
            }
        }
    }

    fn pattern(&mut self, o: &Map<String, J>, s: &str, node: &Node, path: &str) {
        let Some(pattern) = o.get("pattern").and_then(J::as_str) else {
            return;
        };
        let message = match self.schema.patterns.get(pattern) {
            Some(re) if re.is_match(s) => return,
            Some(_) if pattern == NAME_PATTERN => format!("invalid name {s:?}: {NAME_RULE}"),
            Some(_) => format!("{s:?} does not match the pattern {pattern}"),
            None => format!("internal error: the schema pattern {pattern} does not compile"),
        };
        self.push(node.pos, path, message);
    }

    fn number(&mut self, o: &Map<String, J>, node: &Node, path: &str) {
        let Some(x) = as_f64(&node.value) else {
            return;
        };
        let shown = show(&node.value.to_json());
        if let Some(min) = o.get("minimum").and_then(J::as_f64) {
            if x < min {
                let min = show(&o["minimum"]);
                self.push(
                    node.pos,
                    path,
                    format!("must be at least {min}, found {shown}"),
                );
                return;
            }
        }
        if let Some(min) = o.get("exclusiveMinimum").and_then(J::as_f64) {
            if x <= min {
                let min = show(&o["exclusiveMinimum"]);
                self.push(
                    node.pos,
                    path,
                    format!("must be greater than {min}, found {shown}"),
                );
                return;
            }
        }
        if let Some(max) = o.get("exclusiveMaximum").and_then(J::as_f64) {
            if x >= max {
                let max = show(&o["exclusiveMaximum"]);
                self.push(
                    node.pos,
                    path,
                    format!("must be less than {max}, found {shown}"),
                );
                return;
            }
        }
        if let Some(max) = o.get("maximum").and_then(J::as_f64) {
            if x > max {
                let max = show(&o["maximum"]);
                self.push(
                    node.pos,
                    path,
                    format!("must be at most {max}, found {shown}"),
                );
                return;
            }
        }
        let range = o
            .get("format")
            .and_then(J::as_str)
            .and_then(integer_format_range);
        if let (Some((lo, hi)), Some(i)) = (range, as_i128(&node.value)) {
            if i < lo || i > hi {
                self.push(
                    node.pos,
                    path,
                    format!("{shown} is out of range: allowed are {lo} to {hi}"),
                );
            }
        }
    }

    fn seq(&mut self, o: &'s Map<String, J>, items: &[Node], node: &Node, path: &str) {
        if let Some(min) = o.get("minItems").and_then(J::as_u64) {
            if (items.len() as u64) < min {
                let noun = if min == 1 { "item" } else { "items" };
                self.push(
                    node.pos,
                    path,
                    format!("must have at least {min} {noun}, found {}", items.len()),
                );
            }
        }
        if let Some(max) = o.get("maxItems").and_then(J::as_u64) {
            if items.len() as u64 > max {
                self.push(
                    node.pos,
                    path,
                    format!("must have at most {max} items, found {}", items.len()),
                );
            }
        }
        if let Some(item_schema) = o.get("items") {
            for (i, item) in items.iter().enumerate() {
                self.walk(item_schema, item, &join_index(path, i), item.pos);
            }
        }
    }

    fn map(
        &mut self,
        o: &'s Map<String, J>,
        entries: &[(super::codec::Key, Node)],
        path: &str,
        anchor: Pos,
    ) {
        let properties = o.get("properties").and_then(J::as_object);
        let additional = o.get("additionalProperties");
        // Suggestions made for unknown keys: a missing required field that
        // was merely misspelt is then not reported a second time.
        let mut suggested: Vec<&str> = Vec::new();
        // Built once per mapping: a file of many unknown keys stays cheap.
        let mut allowed_list: Option<String> = None;
        for (key, value) in entries {
            let child = join_key(path, &key.name);
            if let Some(prop) = properties.and_then(|p| p.get(&key.name)) {
                self.walk(prop, value, &child, key.pos);
                continue;
            }
            match additional {
                Some(J::Bool(false)) => {
                    let known = properties.map(|p| p.keys().map(String::as_str));
                    let suggestion = known.clone().and_then(|k| did_you_mean(&key.name, k));
                    let message = match suggestion {
                        Some(s) => {
                            suggested.push(s);
                            format!("unknown field; did you mean {s}?")
                        }
                        None => format!(
                            "unknown field; allowed fields here: {}",
                            allowed_list.get_or_insert_with(|| known
                                .map(|k| k.collect::<Vec<_>>().join(", "))
                                .unwrap_or_default())
                        ),
                    };
                    self.push(key.pos, &child, message);
                }
                Some(schema @ J::Object(_)) => self.walk(schema, value, &child, key.pos),
                _ => {}
            }
        }
        for required in o
            .get("required")
            .and_then(J::as_array)
            .into_iter()
            .flatten()
        {
            let Some(name) = required.as_str() else {
                continue;
            };
            if entries.iter().any(|(k, _)| k.name == name) || suggested.contains(&name) {
                continue;
            }
            let prop = properties.and_then(|p| p.get(name));
            let hint = match prop.map(|p| self.deref(p)).and_then(|p| p.get("const")) {
                Some(c) => format!("; set it to {}", show(c)),
                None => match prop {
                    Some(p) => format!("; expected {}", self.describe(p)),
                    None => String::new(),
                },
            };
            self.push(anchor, &join_key(path, name), format!("is required{hint}"));
        }
    }
}

/// `A, B, C` for a list of allowed JSON values.
fn list<'v>(values: impl Iterator<Item = &'v J>) -> String {
    values.map(show).collect::<Vec<_>>().join(", ")
}

fn same_json_type(a: &J, b: &J) -> bool {
    std::mem::discriminant(a) == std::mem::discriminant(b)
}

/// A hint naming the fix for two common slips: a duration without its unit
/// (`timeout: 30`), and a command written as one string (`command: "sleep 10"`).
fn hint(expected: &str, value: &Value, path: &str) -> Option<String> {
    if expected.contains("a duration") {
        let n = match value {
            Value::Int(n) => n.to_string(),
            Value::UInt(n) => n.to_string(),
            _ => return None,
        };
        return Some(format!(
            "; a duration needs its unit: write {n}s for {n} seconds (or {n}m, {n}h)"
        ));
    }
    if path.ends_with("command") && expected.contains("a list of strings") {
        let Value::Str(text) = value else {
            return None;
        };
        let words: Vec<String> = text
            .split_whitespace()
            .map(|w| serde_json::Value::String(w.to_string()).to_string())
            .collect();
        let shell = serde_json::Value::String(text.clone()).to_string();
        return Some(format!(
            "; write the argv as a list, [{}], or run it through a shell: [/bin/sh, -c, {shell}]",
            words.join(", ")
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::codec::parse_documents;

    fn check(schema: &CompiledSchema, yaml: &str) -> Vec<String> {
        let docs = parse_documents(yaml).unwrap();
        let mut findings = schema.check(&docs[0]);
        findings.sort_by_key(|f| f.pos);
        findings
            .into_iter()
            .map(|f| format!("{}:{} {}: {}", f.pos.line, f.pos.col, f.path, f.message))
            .collect()
    }

    const HEAD: &str = "apiVersion: sessionlet.dev/v1alpha1\nkind: Session\n";

    #[test]
    fn a_valid_session_has_no_findings() {
        let yaml = format!(
            "{HEAD}metadata:\n  name: a\n  labels: {{app: x}}\nspec:\n  command: [/bin/sh, -c, 'true']\n  \
             timeout: 5m\n  stopSignal: SIGINT\n  resources: {{maxMemory: 512Mi, maxCpuTime: 1h}}\n  \
             backoff: {{multiplier: 3}}\n  maxRetries: 0\n  restartPolicy: Never\n"
        );
        assert_eq!(check(compiled_session(), &yaml), Vec::<String>::new());
    }

    #[test]
    fn enum_values_get_a_suggestion() {
        let yaml = format!("{HEAD}spec:\n  command: [x]\n  restartPolicy: Alwayz\n");
        assert_eq!(
            check(compiled_session(), &yaml),
            ["5:18 spec.restartPolicy: invalid value \"Alwayz\": allowed values are Always, OnFailure, Never; did you mean Always?"]
        );
    }

    #[test]
    fn unknown_fields_get_a_suggestion_and_missing_fields_are_reported_at_the_parent() {
        let yaml = "apiVersion: sessionlet.dev/v1alpha1\nkind: Session\nspec:\n  comand: [x]\n  bogus: 1\nmetadata:\n  nmae: x\n";
        let got = check(compiled_session(), yaml);
        assert_eq!(
            got[0],
            "4:3 spec.comand: unknown field; did you mean command?"
        );
        assert!(got[1].starts_with("5:3 spec.bogus: unknown field; allowed fields here: "));
        assert_eq!(
            got[2],
            "7:3 metadata.nmae: unknown field; did you mean name?"
        );
        assert_eq!(got.len(), 3);
        let got = check(compiled_session(), "kind: Session\nspce: {}\n");
        assert_eq!(
            got,
            [
                "1:1 apiVersion: is required; set it to sessionlet.dev/v1alpha1",
                "2:1 spce: unknown field; did you mean spec?"
            ]
        );
    }

    #[test]
    fn optional_values_report_the_inner_problem() {
        let yaml =
            format!("{HEAD}spec:\n  command: [x]\n  timeout: 5 minutes\n  activeDeadline: 3\n");
        let got = check(compiled_session(), &yaml);
        assert!(
            got[0].starts_with("5:12 spec.timeout: invalid duration \"5 minutes\""),
            "{got:?}"
        );
        assert_eq!(
            got[1],
            "6:19 spec.activeDeadline: expected a duration such as 30s, 5m or 1h30m, found the integer 3; a duration needs its unit: write 3s for 3 seconds (or 3m, 3h)"
        );
    }

    #[test]
    fn integers_are_range_checked() {
        let yaml = format!("{HEAD}spec:\n  command: [x]\n  maxRetries: 4294967296\n");
        assert_eq!(
            check(compiled_session(), &yaml),
            ["5:15 spec.maxRetries: 4294967296 is out of range: allowed are 0 to 4294967295"]
        );
        let yaml = format!("{HEAD}spec:\n  command: [x]\n  maxRetries: -1\n");
        assert_eq!(
            check(compiled_session(), &yaml),
            ["5:15 spec.maxRetries: must be at least 0, found -1"]
        );
    }

    #[test]
    fn suggestions_tolerate_case_typos_and_missing_prefixes() {
        let signals = ["SIGTERM", "SIGINT"];
        assert_eq!(did_you_mean("TERM", signals), Some("SIGTERM"));
        assert_eq!(did_you_mean("sigint", signals), Some("SIGINT"));
        assert_eq!(
            did_you_mean("restartPolicyy", ["restartPolicy", "stdin"]),
            Some("restartPolicy")
        );
        assert_eq!(did_you_mean("zzz", ["restartPolicy", "stdin"]), None);
    }

    /// Keywords the walker understands, or that assert nothing.
    const UNDERSTOOD: &[&str] = &[
        "$schema",
        "$ref",
        "$defs",
        "title",
        "description",
        "default",
        "examples",
        "type",
        "properties",
        "additionalProperties",
        "required",
        "const",
        "enum",
        "oneOf",
        "anyOf",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "minItems",
        "maxItems",
        "pattern",
        "items",
        "format",
    ];
    /// Formats the walker checks, or that only describe the Rust type.
    const FORMATS: &[&str] = &[
        "duration", "quantity", "signal", "uint8", "uint16", "uint32", "uint64", "uint", "int8",
        "int16", "int32", "int64", "int", "double", "float",
    ];

    fn keywords(schema: &J, found: &mut Vec<String>) {
        let Some(o) = schema.as_object() else { return };
        for (k, v) in o {
            found.push(k.clone());
            match k.as_str() {
                "properties" | "$defs" => v
                    .as_object()
                    .into_iter()
                    .flat_map(|m| m.values())
                    .for_each(|s| keywords(s, found)),
                "oneOf" | "anyOf" => v
                    .as_array()
                    .into_iter()
                    .flatten()
                    .for_each(|s| keywords(s, found)),
                "items" | "additionalProperties" => keywords(v, found),
                "format" => found.push(format!("format:{}", v.as_str().unwrap_or("?"))),
                _ => {}
            }
        }
    }

    #[test]
    fn the_walker_understands_every_keyword_the_types_generate() {
        // A keyword the walker ignored would be enforced by editors but not
        // by `sessionlet validate`: the two must not drift apart.
        for schema in [session_schema(), pool_schema()] {
            let mut found = Vec::new();
            keywords(&schema, &mut found);
            for k in found {
                match k.strip_prefix("format:") {
                    Some(f) => assert!(FORMATS.contains(&f), "format {f} is not checked"),
                    None => assert!(
                        UNDERSTOOD.contains(&k.as_str()),
                        "keyword {k} is not checked"
                    ),
                }
            }
        }
    }

    #[test]
    fn exclusive_minimums_are_checked() {
        let yaml = format!("{HEAD}spec:\n  agent: {{prompt: hi, maxBudgetUsd: 0}}\n");
        assert_eq!(
            check(compiled_session(), &yaml),
            ["4:37 spec.agent.maxBudgetUsd: must be greater than 0, found 0"]
        );
    }

    #[test]
    fn paths_quote_keys_that_are_not_words() {
        assert_eq!(join_key("", "spec"), "spec");
        assert_eq!(join_key("spec", "env"), "spec.env");
        assert_eq!(
            join_key("metadata.labels", "app.kubernetes.io/name"),
            "metadata.labels[\"app.kubernetes.io/name\"]"
        );
        assert_eq!(join_index("spec.command", 0), "spec.command[0]");
    }
}
