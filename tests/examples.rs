//! Every manifest in `examples/sessions` is valid, and points editors at the
//! right schema.

use std::path::PathBuf;

use sessionlet::api::Object;
use sessionlet::manifest::{self, Document};

fn examples() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/sessions")
}

#[test]
fn every_example_validates_with_zero_problems() {
    let listing = manifest::list_manifests(&examples()).unwrap();
    assert!(listing.refused.is_empty(), "{:?}", listing.refused);
    assert!(listing.manifests.len() >= 6, "{:?}", listing.manifests);
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
    // The promised variety: a Pool, an agent, a restartPolicy Always, a timeout.
    let objects: Vec<&Object> = files.iter().flat_map(|f| f.objects()).collect();
    assert!(objects
        .iter()
        .any(|o| matches!(o, Object::Pool(p) if p.spec.replicas == 2)));
    let sessions: Vec<_> = objects
        .iter()
        .filter_map(|o| match o {
            Object::Session(s) => Some(&s.spec),
            Object::Pool(_) => None,
        })
        .collect();
    assert!(sessions
        .iter()
        .any(|s| s.agent.is_some() && s.suspend && s.charter.is_some()));
    assert!(sessions.iter().any(|s| s.timeout.is_some()));
    assert!(sessions
        .iter()
        .any(|s| s.restart_policy == sessionlet::api::RestartPolicy::Always));
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
