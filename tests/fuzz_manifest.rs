//! Hostile input: a proptest-driven fuzz of the manifest loader
//! (`sessionlet::manifest::load_str`, pure, no I/O). Seeds are the corpus in
//! `tests/fixtures/fuzz/`; each case mutates one (byte flips, insertions,
//! deletions, duplications, truncations) or builds YAML-ish text from
//! scratch. The loader must never panic, must point every problem at a line
//! and column of the file, and must answer within a generous time bound (a
//! safety limit against blow-ups, not a performance test). Alias bombs and
//! absurd nesting are refused with a clear problem.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use sessionlet::manifest::{is_valid_name, load_str, Document, ManifestFile};

/// Longest time one case may take. A safety bound against exponential
/// blow-ups (alias expansion, backtracking), not a performance test: an
/// alias bomb expanded up to the 100,000-value budget costs about 1 s in a
/// debug build on an idle machine, and CI machines are loaded.
const CASE_BOUND: Duration = Duration::from_secs(5);

/// Where problems say they are.
const FUZZ_PATH: &str = "fuzz/input.yaml";

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fuzz")
}

/// The corpus: (file name, text), sorted by name.
fn corpus() -> Vec<(String, String)> {
    let mut files: Vec<(String, String)> = std::fs::read_dir(corpus_dir())
        .expect("the fuzz corpus directory")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml") || n.ends_with(".yml"))
        .map(|n| {
            let text = std::fs::read_to_string(corpus_dir().join(&n))
                .unwrap_or_else(|e| panic!("read {n}: {e}"));
            (n, text)
        })
        .collect();
    files.sort();
    assert!(
        files.len() >= 12,
        "the corpus should hold a dozen seeds, found {}",
        files.len()
    );
    files
}

/// Loads `text` and checks every invariant the loader promises; returns the
/// file for further checks. Panics (failing the case) on a broken invariant.
fn load_checked(text: &str) -> ManifestFile {
    let path = Path::new(FUZZ_PATH);
    let started = Instant::now();
    let file = load_str(path, text);
    let took = started.elapsed();
    assert!(
        took < CASE_BOUND,
        "loading {} bytes took {took:?} (bound {CASE_BOUND:?}):\n{}",
        text.len(),
        preview(text)
    );
    check_invariants(text, &file);
    file
}

fn preview(text: &str) -> String {
    let mut p: String = text.chars().take(600).collect();
    if p.len() < text.len() {
        p.push_str("...");
    }
    format!("{p:?}")
}

fn check_invariants(text: &str, file: &ManifestFile) {
    let ctx = || format!("input {}\nresult {file:#?}", preview(text));
    // The check runs on its own thread; a panic there becomes this problem.
    for p in &file.problems {
        assert!(
            !p.message.contains("internal error"),
            "the loader panicked: {p}\n{}",
            ctx()
        );
        assert_eq!(p.file, Path::new(FUZZ_PATH), "{}", ctx());
        assert!(
            p.line >= 1 && p.col >= 1,
            "problem without a place: {p}\n{}",
            ctx()
        );
        // A position points into the file (or just past its end).
        let lines = text.split('\n').count() as u64;
        assert!(
            p.line <= lines + 1,
            "problem at line {} of a {lines}-line file: {p}\n{}",
            p.line,
            ctx()
        );
        assert!(!p.message.trim().is_empty(), "empty message\n{}", ctx());
        assert!(!p.to_string().is_empty());
    }
    assert_eq!(file.stem, "input", "{}", ctx());
    assert_eq!(
        file.name_positions.len(),
        file.documents.len(),
        "one name position per document\n{}",
        ctx()
    );
    let mut per_document = 0;
    for d in &file.documents {
        match d {
            Document::Valid(o) => {
                assert!(
                    is_valid_name(o.name()),
                    "a valid object has a valid name, not {:?}\n{}",
                    o.name(),
                    ctx()
                );
                assert!(matches!(o.kind(), "Session" | "Pool"), "{}", ctx());
            }
            Document::Invalid { name, problems, .. } => {
                assert!(
                    !problems.is_empty(),
                    "an invalid document says why\n{}",
                    ctx()
                );
                for p in problems {
                    assert!(
                        file.problems.contains(p),
                        "document problems are file problems: {p}\n{}",
                        ctx()
                    );
                }
                per_document += problems.len();
                // A name that could form a path is never reported as the name.
                if let Some(n) = name {
                    assert!(is_valid_name(n), "invalid name {n:?} kept\n{}", ctx());
                }
            }
        }
    }
    assert!(per_document <= file.problems.len(), "{}", ctx());
    // No problem means every document is valid, and the other way round.
    let all_valid = file
        .documents
        .iter()
        .all(|d| matches!(d, Document::Valid(_)));
    if file.problems.is_empty() {
        assert!(all_valid, "invalid documents without problems\n{}", ctx());
    }
    // A file that failed as a whole (syntax, limits) has no documents and one problem.
    if file.documents.is_empty() && !file.problems.is_empty() {
        assert_eq!(
            file.problems.len(),
            1,
            "a file-level failure is one problem\n{}",
            ctx()
        );
    }
}

/// One edit of a seed's bytes. Positions are fractions of the current length,
/// so they stay meaningful as the text changes.
#[derive(Debug, Clone)]
enum Mutation {
    /// XOR one byte with a mask.
    Flip { at: f64, mask: u8 },
    /// Insert bytes.
    Insert { at: f64, bytes: Vec<u8> },
    /// Delete a run of bytes.
    Delete { at: f64, len: usize },
    /// Copy a run of bytes to another place (repeats structure: keys, anchors, documents).
    Duplicate { from: f64, len: usize, to: f64 },
    /// Cut the text short.
    Truncate { at: f64 },
    /// Swap two lines (reorders indentation levels and documents).
    SwapLines { a: f64, b: f64 },
}

/// Bytes that matter to YAML and to manifests.
fn interesting_bytes() -> impl Strategy<Value = Vec<u8>> {
    let token = prop_oneof![
        Just(b": ".to_vec()),
        Just(b"- ".to_vec()),
        Just(b"\n".to_vec()),
        Just(b"\n  ".to_vec()),
        Just(b"\t".to_vec()),
        Just(b"---\n".to_vec()),
        Just(b"...\n".to_vec()),
        Just(b"&a ".to_vec()),
        Just(b"*a".to_vec()),
        Just(b"<<: *a\n".to_vec()),
        Just(b"!!str ".to_vec()),
        Just(b"!!binary ".to_vec()),
        Just(b"!custom ".to_vec()),
        Just(b"? ".to_vec()),
        Just(b"{".to_vec()),
        Just(b"}".to_vec()),
        Just(b"[".to_vec()),
        Just(b"]".to_vec()),
        Just(b",".to_vec()),
        Just(b"\"".to_vec()),
        Just(b"'".to_vec()),
        Just(b"#".to_vec()),
        Just(b"|".to_vec()),
        Just(b">-".to_vec()),
        Just(b"%YAML 1.1\n".to_vec()),
        Just(b"%TAG ! tag:x,2000:\n".to_vec()),
        Just(b"~".to_vec()),
        Just(b"null".to_vec()),
        Just(b"0x".to_vec()),
        Just(b"1e999".to_vec()),
        Just(b"-9223372036854775809".to_vec()),
        Just(b"18446744073709551616".to_vec()),
        Just(b"\\u0000".to_vec()),
        Just("\u{feff}".as_bytes().to_vec()),
        Just("é✓\u{1F600}".as_bytes().to_vec()),
        Just(b"\r\n".to_vec()),
        Just(vec![0u8]),
        Just(vec![0xff, 0xfe]),
        Just(b"kind: Pool\n".to_vec()),
        Just(b"kind: Session\n".to_vec()),
        Just(b"metadata: {name: x}\n".to_vec()),
        Just(b"spec: {}\n".to_vec()),
        Just(b"replicas: 1000000\n".to_vec()),
        Just(b"timeout: 99999999999999h\n".to_vec()),
        Just(b"maxMemory: 16Ei\n".to_vec()),
        Just(b"name: ../../x\n".to_vec()),
        proptest::collection::vec(any::<u8>(), 1..8),
    ];
    proptest::collection::vec(token, 1..4).prop_map(|v| v.concat())
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let frac = 0.0..1.0f64;
    prop_oneof![
        3 => (frac.clone(), 1u8..=255).prop_map(|(at, mask)| Mutation::Flip { at, mask }),
        4 => (frac.clone(), interesting_bytes()).prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
        3 => (frac.clone(), 1usize..64).prop_map(|(at, len)| Mutation::Delete { at, len }),
        2 => (frac.clone(), 1usize..400, frac.clone())
            .prop_map(|(from, len, to)| Mutation::Duplicate { from, len, to }),
        1 => frac.clone().prop_map(|at| Mutation::Truncate { at }),
        2 => (frac.clone(), frac).prop_map(|(a, b)| Mutation::SwapLines { a, b }),
    ]
}

fn index(len: usize, at: f64) -> usize {
    ((len as f64) * at).floor().min(len as f64) as usize
}

fn apply(bytes: &mut Vec<u8>, m: &Mutation) {
    match m {
        Mutation::Flip { at, mask } => {
            if !bytes.is_empty() {
                let i = index(bytes.len() - 1, *at);
                bytes[i] ^= mask;
            }
        }
        Mutation::Insert { at, bytes: new } => {
            let i = index(bytes.len(), *at);
            bytes.splice(i..i, new.iter().copied());
        }
        Mutation::Delete { at, len } => {
            let i = index(bytes.len(), *at);
            let end = (i + len).min(bytes.len());
            bytes.drain(i..end);
        }
        Mutation::Duplicate { from, len, to } => {
            let i = index(bytes.len(), *from);
            let end = (i + len).min(bytes.len());
            let run: Vec<u8> = bytes[i..end].to_vec();
            let j = index(bytes.len(), *to);
            bytes.splice(j..j, run);
        }
        Mutation::Truncate { at } => {
            let i = index(bytes.len(), *at);
            bytes.truncate(i);
        }
        Mutation::SwapLines { a, b } => {
            let text = String::from_utf8_lossy(bytes).into_owned();
            let mut lines: Vec<&str> = text.split('\n').collect();
            let n = lines.len();
            if n > 1 {
                let (i, j) = (index(n - 1, *a), index(n - 1, *b));
                lines.swap(i, j);
                *bytes = lines.join("\n").into_bytes();
            }
        }
    }
}

/// YAML-ish text built from tokens that reach past the parser into validation.
fn yamlish() -> impl Strategy<Value = String> {
    let part = prop_oneof![
        Just("apiVersion: sessionlet.dev/v1alpha1\n"),
        Just("kind: Session\n"),
        Just("kind: Pool\n"),
        Just("metadata:\n"),
        Just("  name: a-1\n"),
        Just("  name: ../x\n"),
        Just("  labels: &l {a: b}\n"),
        Just("  labels: *l\n"),
        Just("spec:\n"),
        Just("  command: [sleep, '1']\n"),
        Just("  command: &c [x]\n"),
        Just("  command: *c\n"),
        Just("  command:\n    - a\n    - b\n"),
        Just("  agent: {prompt: x}\n"),
        Just("  agent:\n    prompt: |\n      text\n"),
        Just("  charter: {constraints: {forbiddenPatterns: ['(']}}\n"),
        Just("  replicas: 3\n"),
        Just("  template:\n    spec: {command: [a]}\n"),
        Just("  pool: p\n"),
        Just("  backoff: {initialDelay: 9m, maxDelay: 1s}\n"),
        Just("  env: {A: '1', 'B C': 2}\n"),
        Just("  timeout: 0\n"),
        Just("  timeout: 1y\n"),
        Just("  maxRetries: -5\n"),
        Just("  resources: {maxMemory: 1Gi}\n"),
        Just("  user: nobody\n"),
        Just("<<: *l\n"),
        Just("? complex\n: key\n"),
        Just("- item\n"),
        Just("---\n"),
        Just("...\n"),
        Just("# comment\n"),
        Just("\n"),
        Just("  \n"),
        Just("\t\n"),
        Just("x: !!binary aGVsbG8=\n"),
        Just("y: !local thing\n"),
        Just("%YAML 1.2\n"),
        Just("z: \"unterminated\n"),
        Just("{a: [b, {c: d}]}\n"),
    ];
    proptest::collection::vec(part, 0..16).prop_map(|parts| parts.concat())
}

/// Generates the cases of one strategy and checks each (a panic fails the case).
fn fuzz<S: Strategy>(name: &str, cases: u32, strategy: S, check: impl Fn(S::Value))
where
    S::Value: std::fmt::Debug,
{
    let config = Config {
        cases,
        // Regressions are reported in the failure message; nothing is written
        // beside the test sources.
        failure_persistence: None,
        // Shrinking re-runs the loader many times; keep a failure's report quick.
        max_shrink_iters: 200,
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    let result = runner.run(&strategy, |value| {
        check(value);
        Ok(())
    });
    if let Err(e) = result {
        panic!("fuzz {name}: {e}");
    }
}

#[test]
fn every_corpus_seed_means_what_its_name_says() {
    for (name, text) in corpus() {
        let file = load_checked(&text);
        if name.starts_with("valid-") {
            assert!(
                file.problems.is_empty() && !file.documents.is_empty(),
                "{name} should be valid: {:#?}",
                file.problems
            );
        } else {
            assert!(
                name.starts_with("invalid-"),
                "seed {name} is named valid-* or invalid-*"
            );
            assert!(!file.problems.is_empty(), "{name} should have problems");
        }
    }
}

#[test]
fn mutated_corpus_files_never_panic_and_every_problem_has_a_place() {
    let seeds = corpus();
    // Seeds that expand up to the parser's budgets cost up to a second each
    // in a debug build: mutate them rarely, so the run stays quick.
    let (costly, cheap): (Vec<usize>, Vec<usize>) =
        (0..seeds.len()).partition(|&i| seeds[i].0.contains("alias-bomb"));
    let seed_index = prop_oneof![
        300 => proptest::sample::select(cheap),
        1 => proptest::sample::select(costly),
    ];
    let strategy = (
        seed_index,
        proptest::collection::vec(mutation(), 1..8),
        any::<bool>(),
    );
    let started = Instant::now();
    fuzz("mutations", 1500, strategy, |(seed, mutations, twice)| {
        let mut bytes = seeds[seed].1.clone().into_bytes();
        for m in &mutations {
            apply(&mut bytes, m);
        }
        let text = String::from_utf8_lossy(&bytes);
        let file = load_checked(&text);
        if twice {
            // The loader is a function of its input: no hidden state, no
            // iteration order of hash maps in the answer.
            let again = load_str(Path::new(FUZZ_PATH), &text);
            assert_eq!(file, again, "two loads of the same text differ");
        }
    });
    eprintln!("1500 mutated seeds in {:?}", started.elapsed());
}

#[test]
fn random_yaml_ish_text_never_panics() {
    let started = Instant::now();
    fuzz("token soup", 400, yamlish(), |text| {
        load_checked(&text);
    });
    // Raw character soup over YAML's punctuation, and anything at all.
    fuzz(
        "punctuation",
        200,
        "[-:{}\\[\\],&*!|>'\"#%@`?~ \\ta-z0-9\\n]{0,300}",
        |text| {
            load_checked(&text);
        },
    );
    fuzz("any text", 100, "\\PC{0,300}", |text| {
        load_checked(&text);
    });
    eprintln!("700 generated texts in {:?}", started.elapsed());
}

fn single_problem(file: &ManifestFile) -> &sessionlet::manifest::Problem {
    assert!(
        file.documents.is_empty(),
        "refused as a whole, no documents: {file:#?}"
    );
    assert_eq!(file.problems.len(), 1, "{:#?}", file.problems);
    &file.problems[0]
}

#[test]
fn an_alias_bomb_is_refused_with_a_clear_problem() {
    // "Billion laughs": 9 levels of 9 aliases expand to 9^9 strings.
    let mut text = String::from(
        "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
    );
    let levels = ["a", "b", "c", "d", "e", "f", "g", "h", "i"];
    for w in levels.windows(2) {
        let items = vec![format!("*{}", w[0]); 9].join(",");
        text.push_str(&format!("{}: &{} [{items}]\n", w[1], w[1]));
    }
    text.push_str("apiVersion: sessionlet.dev/v1alpha1\nkind: Session\nspec:\n  command: *i\n");
    let file = load_checked(&text);
    let p = single_problem(&file);
    assert!(
        p.message.contains("the limit for a manifest"),
        "the problem names the limit: {p}"
    );

    // The same bomb as the corpus seed, and a flat one with more aliases than allowed.
    let seed = std::fs::read_to_string(corpus_dir().join("invalid-alias-bomb.yaml")).unwrap();
    let p = single_problem(&load_checked(&seed)).clone();
    assert!(p.message.contains("the limit for a manifest"), "{p}");

    let many: String = std::iter::once("x: &x [1, 2, 3]\ny: [".to_string())
        .chain((0..5000).map(|_| "*x, ".to_string()))
        .chain(std::iter::once("*x]\n".to_string()))
        .collect();
    let file = load_checked(&many);
    let p = single_problem(&file);
    assert!(
        p.message.contains("aliases") || p.message.contains("values"),
        "the problem says what was too many: {p}"
    );
    assert!(p.message.contains("the limit for a manifest"), "{p}");
}

#[test]
fn ten_thousand_levels_of_nesting_are_refused_with_a_clear_problem() {
    let depth = 10_000;
    let cases = [
        (
            "flow sequences",
            format!("a: {}1{}\n", "[".repeat(depth), "]".repeat(depth)),
        ),
        (
            "flow mappings",
            format!("a: {}1{}\n", "{a: ".repeat(depth), "}".repeat(depth)),
        ),
        ("block sequences", format!("{}x\n", "- ".repeat(depth))),
        (
            "unclosed flow sequences",
            format!("spec: {}\n", "[".repeat(depth)),
        ),
    ];
    for (what, text) in cases {
        // On a small stack, as a tokio worker or a test thread would have.
        let file = std::thread::Builder::new()
            .stack_size(256 << 10)
            .spawn(move || load_checked(&text))
            .expect("thread")
            .join()
            .unwrap_or_else(|_| panic!("{what}: the loader panicked or overflowed"));
        let p = single_problem(&file);
        assert!(
            p.message.contains("nesting is deeper than 64 levels")
                || (what.starts_with("unclosed") && p.message.contains("YAML syntax error")),
            "{what}: {p}"
        );
        assert!(p.line >= 1 && p.col >= 1, "{what}: {p}");
    }
}

#[test]
fn fuzzing_stays_within_a_bounded_amount_of_memory() {
    // The biggest inputs the loader accepts, repeated: its memory must not
    // grow with them (it reads at most 1 MiB and parses within budgets).
    let big_scalar = format!("a: \"{}\"\n", "x".repeat(1 << 19));
    let many_keys: String = (0..20_000).map(|i| format!("k{i}: v\n")).collect();
    let many_docs = "a: 1\n---\n".repeat(150);
    for text in [big_scalar, many_keys, many_docs] {
        for _ in 0..3 {
            load_checked(&text);
        }
    }
    let hwm_kib = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        });
    if let Some(kib) = hwm_kib {
        // A safety bound for the whole test binary (other tests run alongside).
        assert!(
            kib < 1 << 20,
            "the test process peaked at {} MiB",
            kib >> 10
        );
    }
}
