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

/// Why the controller cannot start (or its loop cannot begin): each names
/// the folder, file or flag at fault.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The manifest folder cannot be resolved.
    #[error("manifest directory {}: {source}", path.display())]
    ManifestDir {
        /// The folder as given.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The status folder cannot be made or resolved.
    #[error("status directory {}: {source}", path.display())]
    StatusDir {
        /// The folder as given.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// As root: a folder others may write (trust::check_folder).
    #[error("{0}")]
    Untrusted(super::trust::Refusal),
    /// The control folder cannot be made.
    #[error("cannot create {}: {source}", path.display())]
    ControlDir {
        /// `.sessionlet/`.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The lock file cannot be opened.
    #[error("cannot open {}: {source}", path.display())]
    LockFile {
        /// `.sessionlet/lock`.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// Another controller holds the status folder's lock.
    #[error(
        "another sessionlet controller (pid {holder}) already manages the status directory {}; \
         stop it first, or give this one another --status-dir",
        dir.display()
    )]
    Locked {
        /// The pid written in the lock file.
        holder: String,
        /// The status folder.
        dir: PathBuf,
    },
    /// `--policy` cannot be read or does not validate.
    #[error("--policy {}: {source}", path.display())]
    Policy {
        /// The policy file.
        path: PathBuf,
        /// What is wrong with it.
        #[source]
        source: crate::agent::PolicyError,
    },
    /// The keeper: the control folder is not private, or the keeper cannot
    /// be reached or started, or its connection cannot be served.
    #[error("{context}{source}")]
    Keeper {
        /// What was being done ("cannot reach or start the keeper: ").
        context: &'static str,
        /// What went wrong.
        #[source]
        source: super::keeper::KeeperError,
    },
    /// `--http-token-file` cannot be read.
    #[error("{0}")]
    Token(String),
    /// `--http-addr` cannot be bound.
    #[error("cannot serve HTTP on {addr}: {source}")]
    Http {
        /// The address asked for.
        addr: std::net::SocketAddr,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
}
