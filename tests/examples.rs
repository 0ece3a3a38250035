//! Every manifest in `examples/sessions` is valid, and points editors at the
//! right schema.
//!
//! The README invites users to edit the examples (`replicas` of the pool,
//! `suspend` of the agent): these tests check only what holds whatever those
//! values are (every file validates; the promised kinds of object exist), and
//! one of them proves it by applying the README's edits to a copy.

use std::path::{Path, PathBuf};

use sessionlet::api::Object;
use sessionlet::manifest::{self, Document};

fn examples() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/sessions")
}

/// Every file of `dir` validates, and the promised variety is there: a Pool
/// with a template, an agent with a charter, a timeout, a restartPolicy
/// Always. Values the README tells users to change are not looked at.
fn check_examples(dir: &Path) {
    let listing = manifest::list_manifests(dir).expect("list the examples");
    assert!(listing.refused.is_empty(), "{:?}", listing.refused);
    assert!(
        !listing.manifests.is_empty(),
        "no examples in {}",
        dir.display()
    );
    let mut files: Vec<_> = listing
        .manifests
        .iter()
        .map(|p| manifest::load_file(p))
        .collect();
    manifest::mark_duplicate_names(&mut files);
    let problems: Vec<String> = files
        .iter()
        .flat_map(|f| f.problems.iter().map(|p| p.to_string()))
        .collect();
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    for file in &files {
        assert!(
            !file.documents.is_empty(),
            "{} is empty",
            file.path.display()
        );
        assert!(file
            .documents
            .iter()
            .all(|d| matches!(d, Document::Valid(_))));
    }
    let objects: Vec<&Object> = files.iter().flat_map(|f| f.objects()).collect();
    assert!(objects
        .iter()
        .any(|o| matches!(o, Object::Pool(p) if p.spec.template.is_some())));
    let sessions: Vec<_> = objects
        .iter()
        .filter_map(|o| match o {
            Object::Session(s) => Some(&s.spec),
            Object::Pool(_) => None,
        })
        .collect();
    assert!(sessions
        .iter()
        .any(|s| s.agent.is_some() && s.charter.is_some()));
    assert!(sessions.iter().any(|s| s.timeout.is_some()));
    assert!(sessions
        .iter()
        .any(|s| s.restart_policy == sessionlet::api::RestartPolicy::Always));
}

#[test]
fn every_example_validates_with_zero_problems() {
    check_examples(&examples());
}

/// Replaces the first `from` of a copied example by `to`.
fn edit(path: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(path).expect("read a copied example");
    assert!(text.contains(from), "{} has no {from:?}", path.display());
    std::fs::write(path, text.replacen(from, to, 1)).expect("write a copied example");
}

#[test]
fn following_the_readme_keeps_the_example_tests_green() {
    // The Quick start says to edit `replicas` in workers.yaml, and the agent
    // example says to set `suspend: false`.
    let readme =
        std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("README.md"))
            .expect("read the README");
    assert!(readme.contains("Edit `replicas` in `examples/sessions/workers.yaml`"));
    let tmp = tempfile::tempdir().expect("tempdir");
    for e in std::fs::read_dir(examples())
        .expect("read the examples")
        .flatten()
    {
        let name = e.file_name();
        if manifest::list_manifests(&examples())
            .expect("list the examples")
            .manifests
            .iter()
            .any(|m| m.file_name() == Some(&name))
        {
            std::fs::copy(e.path(), tmp.path().join(&name)).expect("copy an example");
        }
    }
    edit(
        &tmp.path().join("workers.yaml"),
        "replicas: 2",
        "replicas: 5",
    );
    edit(
        &tmp.path().join("agent-review.yaml"),
        "suspend: true",
        "suspend: false",
    );
    check_examples(tmp.path());
}

#[test]
fn every_example_names_its_schema_for_editors() {
    for path in manifest::list_manifests(&examples()).unwrap().manifests {
        let text = std::fs::read_to_string(&path).unwrap();
        let file = manifest::load_str(&path, &text);
        let kind = file.objects().next().unwrap().kind().to_lowercase();
        let line = format!("# yaml-language-server: $schema=../../schemas/{kind}.schema.json");
        assert!(
            text.lines().next() == Some(line.as_str()),
            "{} must start with {line}",
            path.display()
        );
    }
}
