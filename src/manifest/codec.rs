//! The one place that calls the YAML crate (serde-saphyr).
//!
//! Manifests are parsed into a [`Node`] tree that keeps the line and column of
//! every value, so validation can point at the exact place of each problem and
//! collect them all. Status files are written through [`to_yaml`]. Swapping the
//! YAML crate touches only this file.

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_saphyr::{Budget, Options, Spanned};

/// Input limits for untrusted manifest files.
pub mod limits {
    /// Largest manifest file accepted.
    pub const MAX_FILE_BYTES: usize = 1 << 20;
    /// Deepest nesting accepted.
    pub const MAX_DEPTH: usize = 64;
    /// Most documents in one file.
    pub const MAX_DOCUMENTS: usize = 100;
    /// Most YAML nodes in one file.
    pub const MAX_NODES: usize = 20_000;
    /// Most aliases in one file (alias bombs).
    pub const MAX_ALIASES: usize = 1_000;
}

/// A position in a file, 1-based; 0 means unknown.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Pos {
    /// Line, 1-based.
    pub line: u64,
    /// Column, 1-based.
    pub col: u64,
}

/// A YAML value with its position.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// Where the value starts.
    pub pos: Pos,
    /// The value.
    pub value: Value,
}

/// A YAML value whose children keep their positions.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `~`, `null` or an empty value.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// An unsigned integer too large for i64.
    UInt(u64),
    /// A floating-point number.
    Float(f64),
    /// A string.
    Str(String),
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping, in document order; keys are strings with their positions.
    Map(Vec<(Key, Node)>),
}

/// A mapping key with its position.
#[derive(Debug, Clone, PartialEq)]
pub struct Key {
    /// Where the key is.
    pub pos: Pos,
    /// The key text.
    pub name: String,
}

impl Value {
    /// A short name of the YAML type, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "boolean",
            Value::Int(_) | Value::UInt(_) => "integer",
            Value::Float(_) => "number",
            Value::Str(_) => "string",
            Value::Seq(_) => "list",
            Value::Map(_) => "mapping",
        }
    }

    /// Converts to JSON, dropping positions.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match self {
            Value::Null => J::Null,
            Value::Bool(b) => J::Bool(*b),
            Value::Int(i) => J::from(*i),
            Value::UInt(u) => J::from(*u),
            Value::Float(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
            Value::Str(s) => J::String(s.clone()),
            Value::Seq(items) => J::Array(items.iter().map(|n| n.value.to_json()).collect()),
            Value::Map(entries) => J::Object(
                entries
                    .iter()
                    .map(|(k, v)| (k.name.clone(), v.value.to_json()))
                    .collect(),
            ),
        }
    }

    /// The value under `key` of a mapping.
    pub fn get(&self, key: &str) -> Option<&Node> {
        match self {
            Value::Map(entries) => entries.iter().find(|(k, _)| k.name == key).map(|(_, v)| v),
            _ => None,
        }
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(ValueVisitor)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Int(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(i64::try_from(v).map_or(Value::UInt(v), Value::Int))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::Float(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::Str(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::Str(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Spanned<Value>>()? {
            items.push(spanned_node(item));
        }
        Ok(Value::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<Spanned<KeyText>>()? {
            let value = map.next_value::<Spanned<Value>>()?;
            entries.push((
                Key {
                    pos: pos_of(&key),
                    name: key.value.0,
                },
                spanned_node(value),
            ));
        }
        Ok(Value::Map(entries))
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ValueVisitor)
    }
}

/// A mapping key rendered as text (YAML allows `1: x` or `true: x`).
struct KeyText(String);

impl<'de> Deserialize<'de> for KeyText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        Ok(KeyText(match v {
            Value::Str(s) => s,
            Value::Null => "null".into(),
            Value::Bool(b) => b.to_string(),
            Value::Int(i) => i.to_string(),
            Value::UInt(u) => u.to_string(),
            Value::Float(f) => f.to_string(),
            Value::Seq(_) | Value::Map(_) => {
                return Err(de::Error::custom("a mapping key must be a plain scalar"))
            }
        }))
    }
}

fn pos_of<T>(s: &Spanned<T>) -> Pos {
    Pos {
        line: s.referenced.line(),
        col: s.referenced.column(),
    }
}

fn spanned_node(s: Spanned<Value>) -> Node {
    Node {
        pos: pos_of(&s),
        value: s.value,
    }
}

/// A YAML syntax or budget error, with its position when known.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct SyntaxError {
    /// Where the error is (0:0 when unknown).
    pub pos: Pos,
    /// What is wrong, in one line.
    pub message: String,
}

fn options() -> Options {
    // Both types are non-exhaustive: start from the defaults and tighten.
    let mut budget = Budget::default();
    budget.max_depth = limits::MAX_DEPTH;
    budget.max_documents = limits::MAX_DOCUMENTS;
    budget.max_nodes = limits::MAX_NODES;
    budget.max_aliases = limits::MAX_ALIASES;
    budget.max_total_scalar_bytes = limits::MAX_FILE_BYTES * 2;
    let mut options = Options::default();
    options.budget = Some(budget);
    options.with_snippet = false;
    // YAML 1.2 booleans only: `y`, `yes`, `on` stay strings.
    options.strict_booleans = true;
    options
}

/// Parses every document of a YAML stream into position-keeping trees.
///
/// Empty documents (a lone `---`, comments only) are dropped.
pub fn parse_documents(text: &str) -> Result<Vec<Node>, SyntaxError> {
    let docs: Vec<Spanned<Value>> = serde_saphyr::from_multiple_with_options(text, options())
        .map_err(|e| {
            let pos = e
                .location()
                .map(|l| Pos {
                    line: l.line(),
                    col: l.column(),
                })
                .unwrap_or_default();
            let message = e
                .without_snippet()
                .to_string()
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect::<Vec<_>>()
                .join("; ");
            SyntaxError { pos, message }
        })?;
    Ok(docs
        .into_iter()
        .map(spanned_node)
        .filter(|n| n.value != Value::Null)
        .collect())
}

/// Serializes a value as YAML (status files, `-o yaml`).
pub fn to_yaml<T: Serialize>(value: &T) -> Result<String, serde_saphyr::SerializeError> {
    serde_saphyr::to_string(value)
}

/// Serializes several values as one multi-document YAML stream.
pub fn to_yaml_multi<T: Serialize>(values: &[T]) -> Result<String, serde_saphyr::SerializeError> {
    let mut out = String::new();
    for (i, v) in values.iter().enumerate() {
        if i > 0 {
            out.push_str("---\n");
        }
        out.push_str(&serde_saphyr::to_string(v)?);
    }
    Ok(out)
}

/// Parses a YAML document straight into a type (status files read back by the CLI).
pub fn from_yaml<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, SyntaxError> {
    serde_saphyr::from_str_with_options(text, options()).map_err(|e| SyntaxError {
        pos: Pos::default(),
        message: e.without_snippet().to_string(),
    })
}

/// Parses every document of a YAML stream straight into a type.
pub fn from_yaml_multi<T: serde::de::DeserializeOwned>(text: &str) -> Result<Vec<T>, SyntaxError> {
    serde_saphyr::from_multiple_with_options(text, options()).map_err(|e| SyntaxError {
        pos: Pos::default(),
        message: e.without_snippet().to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_kept_for_keys_and_values() {
        let docs = parse_documents("a: 1\nb:\n  - x\n  - {c: true}\n---\nd: ~\n").unwrap();
        assert_eq!(docs.len(), 2);
        let Value::Map(entries) = &docs[0].value else {
            panic!("not a map")
        };
        assert_eq!(entries[1].0.name, "b");
        assert_eq!(entries[1].0.pos, Pos { line: 2, col: 1 });
        let Value::Seq(items) = &entries[1].1.value else {
            panic!("not a seq")
        };
        assert_eq!(items[1].pos.line, 4);
        assert_eq!(items[0].value, Value::Str("x".into()));
    }

    #[test]
    fn syntax_errors_carry_a_position() {
        let err = parse_documents("a: [1, 2\nb: 3\n").unwrap_err();
        assert!(err.pos.line >= 1, "{err:?}");
    }

    #[test]
    fn deep_nesting_is_refused_not_a_stack_overflow() {
        let text = "[".repeat(10_000);
        assert!(parse_documents(&text).is_err());
    }
}
