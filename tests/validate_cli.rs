//! `sessionlet validate` on the invalid corpus: each `tests/fixtures/invalid/NAME.yaml`
//! (or directory `NAME/`) must print exactly the lines in `NAME.expected`.
//!
//! The binary runs with the crate root as its working directory and the
//! fixture path relative to it, so the printed paths are stable. To update an
//! expectation after an intended change of wording, run
//! `cargo run -- validate tests/fixtures/invalid/NAME.yaml > tests/fixtures/invalid/NAME.expected`
//! and review the diff.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const INVALID: &str = "tests/fixtures/invalid";

fn sessionlet(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sessionlet"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap()
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Fixture names: `NAME.yaml` files and `NAME/` directories of the corpus.
fn fixtures() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(root().join(INVALID))
        .unwrap()
        .map(|e| e.unwrap())
        .filter_map(|e| {
            let name = e.file_name().into_string().unwrap();
            if e.file_type().unwrap().is_dir() {
                Some(name)
            } else {
                name.strip_suffix(".yaml").map(str::to_string)
            }
        })
        .collect();
    names.sort();
    names
}

fn fixture_path(name: &str) -> String {
    let dir = format!("{INVALID}/{name}");
    if root().join(&dir).is_dir() {
        dir
    } else {
        format!("{dir}.yaml")
    }
}

#[test]
fn every_invalid_fixture_prints_exactly_its_expected_lines() {
    let names = fixtures();
    assert!(names.len() >= 30, "the corpus shrank: {names:?}");
    let mut failures = Vec::new();
    for name in &names {
        let expected_file = root().join(INVALID).join(format!("{name}.expected"));
        let Ok(expected) = std::fs::read_to_string(&expected_file) else {
            failures.push(format!("{name}: missing {}", expected_file.display()));
            continue;
        };
        let out = sessionlet(&["validate", &fixture_path(name)]);
        let stdout = String::from_utf8(out.stdout).unwrap();
        if stdout != expected {
            failures.push(format!(
                "{name}:\n--- expected\n{expected}--- got\n{stdout}"
            ));
        }
        if out.status.code() != Some(1) {
            failures.push(format!("{name}: exit {:?}, expected 1", out.status.code()));
        }
        if stdout.lines().count() == 0 {
            failures.push(format!("{name}: no problem reported"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_expectation_has_its_fixture() {
    let names = fixtures();
    for entry in std::fs::read_dir(root().join(INVALID)).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if let Some(stem) = name.strip_suffix(".expected") {
            assert!(names.iter().any(|n| n == stem), "{name} has no fixture");
        }
    }
}

#[test]
fn each_line_names_file_line_column_and_field() {
    let out = sessionlet(&["validate", &fixture_path("bad-duration")]);
    let stdout = String::from_utf8(out.stdout).unwrap();
    let line = stdout.lines().next().unwrap();
    let (location, message) = line.split_once(": error: ").unwrap();
    assert_eq!(location, "tests/fixtures/invalid/bad-duration.yaml:6:12");
    assert!(
        message.starts_with("spec.timeout: invalid duration \"5 minutes\""),
        "{message}"
    );
    assert!(message.contains("e.g. 250ms, 30s, 5m, 1h30m"), "{message}");
}

#[test]
fn a_directory_prints_its_files_in_lexical_order() {
    // The corpus directory itself: every file's lines, in file-name order
    // (subdirectories are not manifests). No two fixtures share a name, so
    // nothing is added across files.
    let out = sessionlet(&["validate", INVALID]);
    let mut expected = String::new();
    for name in fixtures() {
        if !root().join(INVALID).join(&name).is_dir() {
            expected.push_str(
                &std::fs::read_to_string(root().join(INVALID).join(format!("{name}.expected")))
                    .unwrap(),
            );
        }
    }
    assert_eq!(String::from_utf8(out.stdout).unwrap(), expected);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains(" files, "), "{stderr}");
}

#[test]
fn json_output_has_one_object_per_problem() {
    let fixture = fixture_path("multiple-problems");
    let text = sessionlet(&["validate", &fixture]);
    let json = sessionlet(&["validate", "--output", "json", &fixture]);
    assert_eq!(json.status.code(), Some(1));
    let problems: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let problems = problems.as_array().unwrap();
    let lines: Vec<&str> = std::str::from_utf8(&text.stdout).unwrap().lines().collect();
    assert_eq!(problems.len(), lines.len());
    assert!(problems.len() >= 8);
    assert_eq!(
        problems[0],
        serde_json::json!({
            "file": "tests/fixtures/invalid/multiple-problems.yaml",
            "line": 6,
            "column": 3,
            "path": "metadata.lables",
            "message": "unknown field; did you mean labels?"
        })
    );
    for (p, line) in problems.iter().zip(lines) {
        let rebuilt = format!(
            "{}:{}:{}: error: {}: {}",
            p["file"].as_str().unwrap(),
            p["line"],
            p["column"],
            p["path"].as_str().unwrap(),
            p["message"].as_str().unwrap()
        );
        assert_eq!(rebuilt, line);
    }
}

#[test]
fn valid_manifests_exit_zero_with_a_summary() {
    let out = sessionlet(&["validate", "examples/sessions"]);
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "");
    assert_eq!(out.status.code(), Some(0));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.ends_with(", 0 problems\n"), "{stderr}");
    let json = sessionlet(&["validate", "-o", "json", "examples/sessions"]);
    assert_eq!(String::from_utf8(json.stdout).unwrap().trim(), "[]");
    assert_eq!(json.status.code(), Some(0));
}

#[test]
fn a_file_over_one_mebibyte_is_one_problem() {
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.yaml");
    // A valid manifest padded with a comment to one byte over the limit.
    let mut text = String::from(
        "apiVersion: sessionlet.dev/v1alpha1\nkind: Session\nspec:\n  command: [/bin/true]\n# ",
    );
    text.push_str(&"x".repeat((1 << 20) + 1 - text.len()));
    std::fs::write(&big, &text).unwrap();
    let out = sessionlet(&["validate", big.to_str().unwrap()]);
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        format!(
            "{}:1:1: error: the file is larger than 1048576 bytes (1 MiB), the limit for a manifest\n",
            big.display()
        )
    );
    assert_eq!(out.status.code(), Some(1));
    // One byte less is fine.
    text.pop();
    std::fs::write(&big, &text).unwrap();
    assert_eq!(
        sessionlet(&["validate", big.to_str().unwrap()])
            .status
            .code(),
        Some(0)
    );
}

#[test]
fn a_link_out_of_the_directory_is_refused() {
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(
        outside.path().join("elsewhere.yaml"),
        "apiVersion: sessionlet.dev/v1alpha1\nkind: Session\nspec:\n  command: [/bin/true]\n",
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(
        outside.path().join("elsewhere.yaml"),
        dir.path().join("link.yaml"),
    )
    .unwrap();
    let out = sessionlet(&["validate", dir.path().to_str().unwrap()]);
    let stdout = String::from_utf8(out.stdout).unwrap();
    let prefix = format!(
        "{}:1:1: error: the symbolic link resolves to ",
        dir.path().join("link.yaml").display()
    );
    assert!(stdout.starts_with(&prefix), "{stdout}");
    assert!(stdout.contains("outside the directory"), "{stdout}");
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn a_file_given_twice_is_not_its_own_duplicate() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("once.yaml");
    std::fs::write(
        &file,
        "apiVersion: sessionlet.dev/v1alpha1\nkind: Session\nspec:\n  command: [/bin/true]\n",
    )
    .unwrap();
    let f = file.to_str().unwrap();
    let d = dir.path().to_str().unwrap();
    let out = sessionlet(&["validate", f, f, d]);
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "");
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        String::from_utf8(out.stderr).unwrap(),
        "1 file, 1 object, 0 problems\n"
    );
}

#[test]
fn files_of_one_directory_given_one_by_one_are_checked_together() {
    let dir = Path::new(INVALID).join("duplicate-across-files");
    let a = dir.join("a.yaml");
    let b = dir.join("b.yaml");
    // Given in reverse order: still reported for the later file by name.
    let out = sessionlet(&["validate", b.to_str().unwrap(), a.to_str().unwrap()]);
    let expected =
        std::fs::read_to_string(root().join(INVALID).join("duplicate-across-files.expected"))
            .unwrap();
    assert_eq!(String::from_utf8(out.stdout).unwrap(), expected);
}

#[test]
fn a_missing_path_is_a_problem_not_a_crash() {
    let out = sessionlet(&["validate", "tests/fixtures/no-such-file.yaml"]);
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        stdout.starts_with("tests/fixtures/no-such-file.yaml:1:1: error: cannot read the file: "),
        "{stdout}"
    );
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn help_shows_an_example() {
    for command in ["validate", "schema"] {
        let out = sessionlet(&[command, "--help"]);
        assert!(out.status.success());
        let help = String::from_utf8(out.stdout).unwrap();
        assert!(help.contains("Example:"), "{command}: {help}");
        assert!(
            help.contains(&format!("sessionlet {command} ")),
            "{command}: {help}"
        );
    }
}
