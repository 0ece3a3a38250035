//! What can go wrong in the shell without stopping it: each kind named, with
//! its cause, logged, kept as the controller status's `lastError`, and
//! counted by kind in `sessionlet_errors_total`.

use std::path::PathBuf;

/// An error the controller survives.
#[derive(Debug, thiserror::Error)]
pub enum ShellError {
    /// The keeper died, or cannot be started or reached.
    #[error("{0}")]
    Keeper(String),
    /// The status directory was deleted (it is made again).
    #[error("the status directory {} was deleted; making it again", .0.display())]
    StatusDirDeleted(PathBuf),
    /// The status directory's lock could not be taken again.
    #[error("cannot take the lock again: {0}")]
    Lock(String),
    /// A signal could not be sent to a session's process group.
    #[error("cannot signal process group {pid}: {source}")]
    Signal {
        /// The group's leader.
        pid: u32,
        /// What the OS said.
        #[source]
        source: nix::Error,
    },
    /// A session's cgroup could not be made or joined.
    #[error("{0}")]
    Cgroup(String),
    /// A crash dump could not be written.
    #[error("cannot write crash dump in {}: {source}", dir.display())]
    CrashDump {
        /// The crash dump folder.
        dir: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// A status (or tombstone) file could not be written.
    #[error("cannot write {}: {source}", path.display())]
    StatusWrite {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// A status could not be rendered.
    #[error("cannot render the status of {stem}: {message}")]
    Render {
        /// The manifest's stem.
        stem: String,
        /// What the encoder said.
        message: String,
    },
    /// The record of collected specs could not be written.
    #[error("cannot write .sessionlet/collected.json: {0}")]
    Collected(#[source] std::io::Error),
    /// ttlAfterFinished could not delete a manifest.
    #[error("ttlAfterFinished: cannot delete {}: {source}", path.display())]
    GarbageCollection {
        /// The manifest.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
}

impl ShellError {
    /// The kind, as the metric's label.
    pub fn kind(&self) -> &'static str {
        match self {
            ShellError::Keeper(_) => "keeper",
            ShellError::StatusDirDeleted(_) => "status_dir",
            ShellError::Lock(_) => "lock",
            ShellError::Signal { .. } => "signal",
            ShellError::Cgroup(_) => "cgroup",
            ShellError::CrashDump { .. } => "crash_dump",
            ShellError::StatusWrite { .. } => "status_write",
            ShellError::Render { .. } => "render",
            ShellError::Collected(_) => "collected",
            ShellError::GarbageCollection { .. } => "garbage_collection",
        }
    }
}
