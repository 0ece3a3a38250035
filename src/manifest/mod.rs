//! Loading manifests: which files count, the YAML codec, validation.
//!
//! The pipeline for one file is: [`files`] decides whether a directory entry
//! is a manifest at all; [`load`] reads it within the size limit and splits it
//! into documents with [`codec`]; [`validate`] checks each document against
//! the JSON Schema generated from the API types ([`schema`]) and against the
//! rules a schema cannot express, then turns it into a typed
//! [`crate::api::Object`]. Every problem found on the way becomes a
//! [`Problem`] with a file, a line, a column and a field path.

pub mod codec;
pub mod files;
pub mod load;
pub mod schema;
pub mod validate;

use std::fmt;
use std::path::PathBuf;

pub use files::{inspect, is_manifest_name, list_manifests, manifest_stem, Inspected, Listing};
pub use load::{load_file, load_files, load_str, Document, ManifestFile};
pub use schema::{pool_schema, session_schema};
pub use validate::{is_valid_name, mark_duplicate_names, mark_duplicate_names_holding};

/// One thing wrong with a manifest file, with where it is.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub struct Problem {
    /// The file, as it was given (not canonicalized), so messages match what
    /// the user typed.
    pub file: PathBuf,
    /// Line, 1-based (1 for problems of the whole file).
    pub line: u64,
    /// Column, 1-based (1 for problems of the whole file).
    #[serde(rename = "column")]
    pub col: u64,
    /// The field path, e.g. `spec.backoff.maxDelay` or `spec.command[0]`;
    /// empty when the problem is about the whole file or document.
    pub path: String,
    /// What is wrong and what is allowed, without the path.
    pub message: String,
}

impl Problem {
    /// A problem of the whole file (line 1, column 1, no field path).
    pub fn file_level(file: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Problem {
            file: file.into(),
            line: 1,
            col: 1,
            path: String::new(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    /// `FILE:LINE:COL: error: PATH: MESSAGE`, the format compilers use, so
    /// editors and CI annotate the right line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: error: ",
            self.file.display(),
            self.line,
            self.col
        )?;
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_display_like_compiler_errors() {
        let p = Problem {
            file: "a/b.yaml".into(),
            line: 3,
            col: 5,
            path: "spec.timeout".into(),
            message: "bad".into(),
        };
        assert_eq!(p.to_string(), "a/b.yaml:3:5: error: spec.timeout: bad");
        let p = Problem::file_level("a/b.yaml", "too big");
        assert_eq!(p.to_string(), "a/b.yaml:1:1: error: too big");
    }
}
