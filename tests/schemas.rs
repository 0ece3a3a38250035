//! The committed JSON Schemas in `schemas/` match the types, and the README's
//! manifest reference mentions every field they contain.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

use sessionlet::manifest::{pool_schema, schema::render, session_schema};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

const REGENERATE: &str = "run `cargo run -- schema --out schemas` and commit the result";

#[test]
fn committed_schemas_are_up_to_date() {
    for (file, schema) in [
        ("session.schema.json", session_schema()),
        ("pool.schema.json", pool_schema()),
    ] {
        let path = root().join("schemas").join(file);
        let committed = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e}; {REGENERATE}", path.display()));
        assert!(
            committed == render(&schema),
            "schemas/{file} is stale: the manifest types changed; {REGENERATE}"
        );
    }
}

#[test]
fn the_schema_command_writes_both_files() {
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("new");
    let status = Command::new(env!("CARGO_BIN_EXE_sessionlet"))
        .args(["schema", "--out", dir.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(status.success());
    let session = std::fs::read_to_string(dir.join("session.schema.json")).unwrap();
    let pool = std::fs::read_to_string(dir.join("pool.schema.json")).unwrap();
    assert_eq!(session, render(&session_schema()));
    assert_eq!(pool, render(&pool_schema()));
    assert!(session.ends_with("}\n"));
    let parsed: serde_json::Value = serde_json::from_str(&session).unwrap();
    assert_eq!(parsed["title"], "Session");
    assert_eq!(
        parsed["properties"]["apiVersion"]["const"],
        "sessionlet.dev/v1alpha1"
    );
}

/// Every property name anywhere in a schema.
fn property_names(schema: &serde_json::Value, out: &mut BTreeSet<String>) {
    match schema {
        serde_json::Value::Object(o) => {
            if let Some(props) = o.get("properties").and_then(|p| p.as_object()) {
                out.extend(props.keys().cloned());
            }
            o.values().for_each(|v| property_names(v, out));
        }
        serde_json::Value::Array(a) => a.iter().for_each(|v| property_names(v, out)),
        _ => {}
    }
}

/// The text of README.md's "## Manifest reference" section.
fn manifest_reference() -> String {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let start = readme
        .find("\n## Manifest reference\n")
        .expect("README.md has a \"## Manifest reference\" section");
    let body = &readme[start + 1..];
    let end = body[3..].find("\n## ").map_or(body.len(), |i| i + 3);
    body[..end].to_string()
}

#[test]
fn the_readme_reference_documents_every_field() {
    let reference = manifest_reference();
    let mut names = BTreeSet::new();
    property_names(&session_schema(), &mut names);
    property_names(&pool_schema(), &mut names);
    assert!(names.len() > 40, "{names:?}");
    let missing: Vec<&String> = names
        .iter()
        .filter(|n| !reference.contains(&format!("`{n}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "README.md's Manifest reference does not mention these fields (as `name`): {missing:?}"
    );
    assert!(reference.contains("# yaml-language-server: $schema="));
}
