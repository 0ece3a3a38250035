//! Reading a manifest file into checked documents.
//!
//! Manifests are untrusted input: a file is read only up to the size limit,
//! must be UTF-8, and is parsed with the codec's budgets (nesting depth,
//! documents, nodes, aliases). Any of these failing is one clear problem for
//! the whole file, never a panic.

use std::path::{Path, PathBuf};

use super::codec::{self, limits, Pos};
use super::files::manifest_stem;
use super::schema::Finding;
use super::validate::{check_document, check_unique_in_file, Checked};
use super::Problem;
use crate::api::Object;

/// Stack for the thread that parses and checks one file. The YAML parser
/// and serde recurse once per nesting level; at the depth limit that takes
/// about 2-3 MiB in a debug build, more than a default 2 MiB thread (tokio's
/// workers, test threads) has. The memory is reserved, not committed, until
/// used.
const PARSE_STACK_BYTES: usize = 16 << 20;

/// One manifest file, loaded and checked.
#[derive(Debug, Clone, PartialEq)]
pub struct ManifestFile {
    /// The file, as given.
    pub path: PathBuf,
    /// The file name without `.yaml` / `.yml`: the default `metadata.name`.
    pub stem: String,
    /// One per non-empty YAML document, in order; empty when the whole file
    /// failed (too big, not UTF-8, a syntax error).
    pub documents: Vec<Document>,
    /// Every problem of the file, file-level and per document, in order of
    /// position.
    pub problems: Vec<Problem>,
    /// Where each document's name is written, parallel to `documents` (the
    /// document's start when the name comes from the file's stem); used to
    /// point at duplicate names across files.
    pub name_positions: Vec<Pos>,
}

impl ManifestFile {
    /// The valid objects of the file.
    pub fn objects(&self) -> impl Iterator<Item = &Object> {
        self.documents.iter().filter_map(|d| match d {
            Document::Valid(o) => Some(o),
            Document::Invalid { .. } => None,
        })
    }

    /// Whether the file has no problems at all.
    pub fn is_valid(&self) -> bool {
        self.problems.is_empty()
    }

    fn failed(path: &Path, problem: Problem) -> Self {
        ManifestFile {
            path: path.to_path_buf(),
            stem: stem_of(path),
            documents: Vec::new(),
            problems: vec![problem],
            name_positions: Vec::new(),
        }
    }
}

/// One document of a manifest file.
// Boxing the object would save little (a file has a handful of documents)
// and make every user of the API unbox it.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Document {
    /// A document without problems; `metadata.name` is always filled in.
    Valid(Object),
    /// A document with problems.
    Invalid {
        /// `Session` or `Pool`, when the document names a known kind.
        kind: Option<String>,
        /// The name, when it could be read and is a valid name (explicit, or
        /// the file's stem); never something that could form a path.
        name: Option<String>,
        /// This document's problems.
        problems: Vec<Problem>,
    },
}

thread_local! {
    /// True on a [`load_files`] worker, which runs on a [`PARSE_STACK_BYTES`]
    /// stack: [`load_str`] checks there instead of starting a thread.
    static ON_PARSE_STACK: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Files per worker below which [`load_files`] starts no more workers.
const FILES_PER_WORKER: usize = 16;

/// [`load_file`] of every path, in order, on up to one worker thread per
/// CPU (at most 4), each with the parse stack: a start with 1,000
/// manifests spent half its time before the first spawn starting and
/// joining one thread per file, one file after another.
pub fn load_files(paths: &[PathBuf]) -> Vec<ManifestFile> {
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    let workers = cpus.min(4).min(paths.len().div_ceil(FILES_PER_WORKER));
    if workers <= 1 {
        return paths.iter().map(|p| load_file(p)).collect();
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let work = || {
        ON_PARSE_STACK.with(|f| f.set(true));
        let mut done = Vec::new();
        loop {
            let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let Some(path) = paths.get(i) else {
                return done;
            };
            done.push((i, load_file(path)));
        }
    };
    let mut out: Vec<Option<ManifestFile>> = Vec::new();
    out.resize_with(paths.len(), || None);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .filter_map(|_| {
                std::thread::Builder::new()
                    .name("manifest-check".into())
                    .stack_size(PARSE_STACK_BYTES)
                    .spawn_scoped(scope, work)
                    .ok()
            })
            .collect();
        for h in handles {
            // A worker catches the panics of each file: join fails only
            // for a panic outside them, whose files are read again below.
            if let Ok(done) = h.join() {
                for (i, f) in done {
                    if let Some(slot) = out.get_mut(i) {
                        *slot = Some(f);
                    }
                }
            }
        }
    });
    // What no worker did (none could start): here, one by one.
    out.into_iter()
        .zip(paths)
        .map(|(f, p)| f.unwrap_or_else(|| load_file(p)))
        .collect()
}

/// Reads and checks a manifest file, reading at most the size limit.
pub fn load_file(path: &Path) -> ManifestFile {
    match read_limited(path) {
        Ok(bytes) => match String::from_utf8(bytes) {
            Ok(text) => load_str(path, &text),
            Err(e) => {
                let bytes = e.as_bytes();
                let valid = e.utf8_error().valid_up_to();
                let bad = bytes.get(valid).copied().unwrap_or_default();
                // valid_up_to is a char boundary of a valid prefix.
                let prefix = String::from_utf8_lossy(&bytes[..valid]);
                let pos = end_of(&prefix);
                let mut problem = Problem::file_level(
                    path,
                    format!("the file is not valid UTF-8 text (byte 0x{bad:02X}); manifests must be UTF-8"),
                );
                problem.line = pos.line;
                problem.col = pos.col;
                ManifestFile::failed(path, problem)
            }
        },
        Err(problem) => ManifestFile::failed(path, problem),
    }
}

/// The position just after `text`: where a problem starting there is.
fn end_of(text: &str) -> Pos {
    let line = text.matches('\n').count() as u64 + 1;
    let last = text.rsplit('\n').next().unwrap_or_default();
    Pos {
        line,
        col: last.chars().count() as u64 + 1,
    }
}

fn too_big(path: &Path) -> Problem {
    Problem::file_level(
        path,
        format!(
            "the file is larger than {} bytes (1 MiB), the limit for a manifest",
            limits::MAX_FILE_BYTES
        ),
    )
}

/// Reads at most `MAX_FILE_BYTES + 1` bytes: enough to tell a too-big file
/// without holding all of it. Never blocks: see [`super::files::read_regular`].
fn read_limited(path: &Path) -> Result<Vec<u8>, Problem> {
    use super::files::{read_regular, ReadError};
    read_regular(path, limits::MAX_FILE_BYTES as u64).map_err(|e| match e {
        ReadError::TooLarge(_) => too_big(path),
        ReadError::Directory => Problem::file_level(path, "is a directory, not a manifest file"),
        ReadError::NotRegular(kind) => Problem::file_level(
            path,
            format!("not a regular file (it is a {kind}); a manifest must be a regular file"),
        ),
        ReadError::Io(e) => Problem::file_level(path, format!("cannot read the file: {e}")),
    })
}

fn stem_of(path: &Path) -> String {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    manifest_stem(&name).to_string()
}

/// Checks manifest text as if read from `path` (used for the stem and in
/// problems). Pure: no I/O. Also the fuzzing entry point.
pub fn load_str(path: &Path, text: &str) -> ManifestFile {
    if text.len() > limits::MAX_FILE_BYTES {
        return ManifestFile::failed(path, too_big(path));
    }
    let stem = stem_of(path);
    const PANICKED: &str =
        "internal error: checking this file panicked; please report it with the file";
    let result = if ON_PARSE_STACK.with(std::cell::Cell::get) {
        // A worker of `load_files`: its stack is already the big one.
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check_text(text, &stem)))
            .map_err(|_| PANICKED.to_string())
    } else {
        std::thread::scope(|scope| {
            let worker = std::thread::Builder::new()
                .name("manifest-check".into())
                .stack_size(PARSE_STACK_BYTES)
                .spawn_scoped(scope, || check_text(text, &stem));
            match worker {
                Ok(handle) => handle.join().map_err(|_| PANICKED.to_string()),
                Err(e) => Err(format!("cannot start a thread to check the file: {e}")),
            }
        })
    };
    let (docs, file_level) = match result {
        Ok(Ok(docs)) => (docs, None),
        Ok(Err(syntax)) => (Vec::new(), Some(syntax)),
        Err(message) => (
            Vec::new(),
            Some(Finding {
                pos: Pos::default(),
                path: String::new(),
                message,
            }),
        ),
    };
    let to_problem = |f: Finding| Problem {
        file: path.to_path_buf(),
        line: f.pos.line.max(1),
        col: f.pos.col.max(1),
        path: f.path,
        message: f.message,
    };
    let mut file = ManifestFile {
        path: path.to_path_buf(),
        stem: stem.clone(),
        documents: Vec::with_capacity(docs.len()),
        problems: Vec::new(),
        name_positions: Vec::with_capacity(docs.len()),
    };
    if let Some(f) = file_level {
        file.problems.push(to_problem(f));
    }
    for doc in docs {
        file.name_positions.push(doc.name_pos);
        let problems: Vec<Problem> = doc.findings.into_iter().map(to_problem).collect();
        file.problems.extend(problems.iter().cloned());
        file.documents.push(match doc.object {
            Some(object) if problems.is_empty() => Document::Valid(object),
            _ => Document::Invalid {
                kind: doc.kind,
                name: doc.name,
                problems,
            },
        });
    }
    file
}

/// Parses and checks every document; a syntax or budget error fails the
/// whole file.
fn check_text(text: &str, stem: &str) -> Result<Vec<Checked>, Finding> {
    let nodes = codec::parse_documents(text).map_err(|e| Finding {
        pos: e.pos,
        path: String::new(),
        message: syntax_message(&e.message),
    })?;
    let mut docs: Vec<Checked> = nodes.iter().map(|n| check_document(n, stem)).collect();
    check_unique_in_file(&mut docs);
    Ok(docs)
}

/// Turns the parser's message into one for people: the position is already
/// in the problem, and budget breaches are named after the limit.
fn syntax_message(raw: &str) -> String {
    // "... at line 2, column 4 (defined at ...)": the position is printed
    // in front of the problem already.
    let mut text = raw;
    let mut search = 0;
    while let Some(i) = text[search..].find(" at line ") {
        let at = search + i;
        if text[at + 9..].starts_with(|c: char| c.is_ascii_digit()) {
            text = &text[..at];
            break;
        }
        search = at + 1;
    }
    let text = text.trim();
    let limit = |what: String| format!("{what}, the limit for a manifest");
    if let Some(breach) = text.strip_prefix("budget breached: ") {
        return match breach.split([' ', '{']).next().unwrap_or_default() {
            "Depth" => limit(format!(
                "nesting is deeper than {} levels",
                limits::MAX_DEPTH
            )),
            "Documents" => limit(format!(
                "the file has more than {} documents",
                limits::MAX_DOCUMENTS
            )),
            "Nodes" => limit(format!(
                "the file has more than {} values",
                limits::MAX_NODES
            )),
            "Aliases" => limit(format!(
                "the file has more than {} aliases",
                limits::MAX_ALIASES
            )),
            "ScalarBytes" => limit(format!(
                "the values hold more than {} bytes of text once aliases are expanded",
                limits::MAX_FILE_BYTES * 2
            )),
            _ => format!("the file exceeds the parser's limits ({breach})"),
        };
    }
    if let Some(rest) = text.strip_prefix("duplicate mapping key: ") {
        // The parser's hint names its own options; say what to do instead.
        let key = rest
            .split(", set DuplicateKeyPolicy")
            .next()
            .unwrap_or(rest);
        return format!("duplicate key {key:?}: a key may appear only once in a mapping");
    }
    if text.starts_with("recursion limit exceeded") {
        return limit(format!(
            "nesting is deeper than {} levels",
            limits::MAX_DEPTH
        ));
    }
    // The parser's wording for a key indented more or less than its
    // neighbours, or a value on a key's line and below it.
    let indentation = ["did not find expected key", "did not find expected '-'"]
        .iter()
        .any(|p| text.contains(p));
    if indentation {
        return format!(
            "YAML syntax error: {text} (hint: check the indentation here and on the line above: the keys of one mapping must start in the same column, and YAML indents with spaces, never tabs)"
        );
    }
    format!("YAML syntax error: {text}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(file: &ManifestFile) -> Vec<String> {
        file.problems.iter().map(|p| p.to_string()).collect()
    }

    const SESSION: &str =
        "apiVersion: sessionlet.dev/v1alpha1\nkind: Session\nspec:\n  command: [/bin/true]\n";

    #[test]
    fn many_files_load_side_by_side_in_order_each_as_alone() {
        let dir = tempfile::tempdir().unwrap();
        let deep = format!("a: {}1{}\n", "[".repeat(500), "]".repeat(500));
        let mut paths = Vec::new();
        for i in 0..100 {
            let path = dir.path().join(format!("f{i:03}.yaml"));
            match i % 4 {
                0 => std::fs::write(&path, SESSION).unwrap(),
                1 => std::fs::write(&path, "spec: [unclosed\n").unwrap(),
                2 => std::fs::write(&path, &deep).unwrap(),
                _ => {} // missing
            }
            paths.push(path);
        }
        let together = load_files(&paths);
        assert_eq!(together.len(), paths.len());
        for (path, file) in paths.iter().zip(&together) {
            assert_eq!(file, &load_file(path), "{}", path.display());
        }
        // Each kind of file gave its own outcome (the comparison above is
        // not between two empty results).
        assert!(together[0].is_valid() && together[0].stem == "f000");
        assert!(lines(&together[2])[0].contains("nesting is deeper than 64 levels"));
        assert!(!together[1].is_valid() && !together[3].is_valid());
    }

    #[test]
    fn a_valid_file_gives_typed_objects_named_after_the_file() {
        let file = load_str(Path::new("dir/job-1.yaml"), SESSION);
        assert_eq!(lines(&file), Vec::<String>::new());
        assert_eq!(file.stem, "job-1");
        let [Document::Valid(Object::Session(s))] = file.documents.as_slice() else {
            panic!("{file:?}")
        };
        assert_eq!(s.metadata.name.as_deref(), Some("job-1"));
        assert_eq!(
            s.spec.command.as_deref(),
            Some(&["/bin/true".to_string()][..])
        );
    }

    #[test]
    fn every_document_is_checked_and_problems_collected() {
        let text = format!(
            "{SESSION}metadata: {{name: a}}\n---\n{SESSION}  timeout: soon\n  bogus: 1\nmetadata: {{name: b}}\n"
        );
        let file = load_str(Path::new("x.yaml"), &text);
        assert_eq!(file.documents.len(), 2);
        assert!(matches!(file.documents[0], Document::Valid(_)));
        let Document::Invalid {
            kind,
            name,
            problems,
        } = &file.documents[1]
        else {
            panic!("{file:?}")
        };
        assert_eq!(
            (kind.as_deref(), name.as_deref()),
            (Some("Session"), Some("b"))
        );
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert_eq!(file.problems, *problems);
        assert!(
            lines(&file)[0].starts_with("x.yaml:11:12: error: spec.timeout: invalid duration"),
            "{:?}",
            lines(&file)
        );
    }

    #[test]
    fn deep_nesting_is_one_problem_even_on_a_small_stack() {
        let text = format!("a: {}1{}\n", "[".repeat(500), "]".repeat(500));
        // Run on a thread with a typical small stack, as a tokio worker would.
        let file = std::thread::Builder::new()
            .stack_size(256 << 10)
            .spawn(move || load_str(Path::new("deep.yaml"), &text))
            .unwrap()
            .join()
            .unwrap();
        let lines = lines(&file);
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(lines[0].starts_with("deep.yaml:1:"), "{lines:?}");
        assert!(
            lines[0]
                .ends_with(": error: nesting is deeper than 64 levels, the limit for a manifest"),
            "{lines:?}"
        );
    }

    #[test]
    fn too_many_documents_is_one_problem() {
        let text = "a: 1\n---\n".repeat(limits::MAX_DOCUMENTS + 5);
        let file = load_str(Path::new("many.yaml"), &text);
        assert_eq!(file.problems.len(), 1);
        assert!(
            file.problems[0].message.contains("more than 100 documents"),
            "{file:?}"
        );
        assert!(file.documents.is_empty());
    }

    #[test]
    fn too_big_text_is_refused_before_parsing() {
        let text = " ".repeat(limits::MAX_FILE_BYTES + 1);
        let file = load_str(Path::new("big.yaml"), &text);
        assert_eq!(
            lines(&file),
            ["big.yaml:1:1: error: the file is larger than 1048576 bytes (1 MiB), the limit for a manifest"]
        );
    }

    #[test]
    fn load_file_reads_at_most_the_limit_and_checks_utf8() {
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big.yaml");
        std::fs::write(&big, vec![b'#'; limits::MAX_FILE_BYTES + 10]).unwrap();
        assert!(load_file(&big).problems[0].message.contains("larger than"));
        let exact = dir.path().join("exact.yaml");
        std::fs::write(&exact, vec![b'#'; limits::MAX_FILE_BYTES]).unwrap();
        assert!(load_file(&exact).problems.is_empty());
        let latin1 = dir.path().join("latin1.yaml");
        std::fs::write(&latin1, b"a: 1\nb: caf\xe9\n").unwrap();
        let file = load_file(&latin1);
        assert_eq!(file.problems.len(), 1);
        assert_eq!((file.problems[0].line, file.problems[0].col), (2, 7));
        assert!(file.problems[0]
            .message
            .contains("not valid UTF-8 text (byte 0xE9)"));
        let missing = load_file(&dir.path().join("missing.yaml"));
        assert!(missing.problems[0]
            .message
            .starts_with("cannot read the file: "));
        assert!(load_file(dir.path()).problems[0]
            .message
            .contains("directory"));
    }

    #[test]
    fn empty_files_have_no_documents_and_no_problems() {
        let file = load_str(Path::new("e.yaml"), "# nothing yet\n---\n");
        assert!(file.documents.is_empty() && file.problems.is_empty());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(200))]

        /// Arbitrary text never panics (a panic would surface as an
        /// "internal error" problem, as the check runs on its own thread).
        #[test]
        fn arbitrary_text_never_panics(text in "\\PC{0,200}") {
            let file = load_str(Path::new("fuzz.yaml"), &text);
            proptest::prop_assert!(file.problems.iter().all(|p| !p.message.contains("internal error")));
        }

        /// Manifest-shaped text built from manifest tokens, to get past the
        /// parser into validation.
        #[test]
        fn manifest_shaped_text_never_panics(
            parts in proptest::collection::vec(proptest::sample::select(vec![
                "apiVersion: sessionlet.dev/v1alpha1\n", "kind: Session\n", "kind: Pool\n",
                "spec:\n", "  command: [a, 1]\n", "  agent: {prompt: x}\n", "  replicas: 3\n",
                "  template:\n", "    spec: {pool: p}\n", "  backoff: {initialDelay: 9m}\n",
                "  env: {\"=\": 1}\n", "metadata: {name: Ab}\n", "---\n", "- x\n", "  timeout: 0\n",
                "  charter: {constraints: {forbiddenPatterns: ['(']}}\n", "  maxRetries: -5\n",
            ]), 0..12)
        ) {
            let text: String = parts.concat();
            let file = load_str(Path::new("shaped.yaml"), &text);
            proptest::prop_assert!(file.problems.iter().all(|p| !p.message.contains("internal error")));
            let doc_problems: usize = file.documents.iter().map(|d| match d {
                Document::Invalid { problems, .. } => problems.len(),
                Document::Valid(_) => 0,
            }).sum();
            proptest::prop_assert!(doc_problems <= file.problems.len());
        }
    }

    #[test]
    fn an_indentation_error_gets_a_hint() {
        let m = syntax_message(
            "while parsing a block mapping, did not find expected key at line 7, column 4",
        );
        assert!(m.contains("hint: check the indentation"), "{m}");
    }

    #[test]
    fn syntax_messages_drop_the_position_and_name_the_limit() {
        assert_eq!(
            syntax_message("mapping values are not allowed in this context at line 2, column 4"),
            "YAML syntax error: mapping values are not allowed in this context"
        );
        assert_eq!(
            syntax_message("budget breached: Nodes { nodes: 20001 } at line 1, column 18 (defined at line 5, column 7)"),
            "the file has more than 20000 values, the limit for a manifest"
        );
        assert_eq!(
            syntax_message("duplicate mapping key: kind, set DuplicateKeyPolicy in Options if acceptable at line 2, column 1"),
            "duplicate key \"kind\": a key may appear only once in a mapping"
        );
    }
}
