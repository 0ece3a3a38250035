//! The catalog: what the watched directory declares, rebuilt on every rescan.
//!
//! Files are re-parsed only when their identity or size or mtime changed, so
//! a rescan of an unchanged directory costs one `stat` per file. A file that
//! turns invalid keeps its last good objects in force (the session is not
//! disturbed); its status says why the manifest is invalid.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::api::{Object, PoolManifest, SessionSpec};
use crate::core::names::{Claim, NameKey};
use crate::core::{self, Desired, DesiredPool, DesiredSession, Replica};
use crate::manifest::{self, Document, ManifestFile, Problem};

/// Identity of a file's content, cheap to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fingerprint {
    dev: u64,
    ino: u64,
    len: u64,
    mtime_ns: i128,
    mode: u32,
    /// Owner: a `chown` must be noticed (StrictModes).
    uid: u32,
}

impl Fingerprint {
    fn of(m: &std::fs::Metadata) -> Fingerprint {
        Fingerprint {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
            mode: m.mode(),
            uid: m.uid(),
        }
    }
}

/// What a [`Catalog::resync`] compares a directory entry with.
struct Listed {
    /// The inode number of the file's fingerprint (0: none, so the file is
    /// stat'ed).
    ino: u64,
    /// The entry's own inode number when the listing gave another one.
    dirent_ino: u64,
    /// The resync round that last saw the name.
    round: u64,
    /// The last listing saw a regular file (not a link, whose target may
    /// change while the folder does not).
    plain: bool,
    /// The resync round (modulo [`STAT_ROUNDS`]) that stats the file, from
    /// its name ([`name_slot`]), kept so that a resync hashes no name;
    /// `None` for a name that is not UTF-8, stat'ed at every resync.
    slot: Option<u64>,
}

struct CachedFile {
    fingerprint: Option<Fingerprint>,
    /// The inode number the folder's listing gave for this name when it was
    /// last stat'ed by a [`Catalog::resync`] (0: not seen there yet). Where
    /// the listing's number differs from `stat`'s (overlayfs may), this one
    /// keeps an unchanged file from being stat'ed at every resync.
    dirent_ino: u64,
    loaded: Loaded,
    /// The objects of the last version of this file that had no problem,
    /// each with what is computed once per load (the spec hash, the shared
    /// Session spec), so a rescan of 10,000 unchanged files neither
    /// re-hashes nor copies specs.
    last_good: Vec<Good>,
}

/// What the catalog keeps of the current version of a file: its stem and
/// problems and, only while it has problems, its documents (a valid file's
/// objects are its [`CachedFile::last_good`]; keeping both held every spec
/// twice, the largest memory cost per session).
struct Loaded {
    stem: String,
    problems: Vec<Problem>,
    /// Empty when `problems` is (see above).
    documents: Vec<Document>,
}

impl Loaded {
    fn of(file: ManifestFile) -> Loaded {
        let documents = if file.problems.is_empty() {
            Vec::new()
        } else {
            file.documents
        };
        Loaded {
            stem: file.stem,
            problems: file.problems,
            documents,
        }
    }
}

/// One object of a file's last good version, in the form the desired state
/// takes it: a Session's spec is held once, shared (`Arc`) with the desired
/// state.
#[derive(Clone)]
enum Good {
    Session {
        metadata: crate::api::Metadata,
        spec: Arc<SessionSpec>,
        /// Hash of the spec and the restartedAt annotation.
        hash: u64,
    },
    Pool {
        pool: Box<PoolManifest>,
        /// Hash of the Pool spec.
        hash: u64,
        /// The template's spec.
        template: Option<Arc<SessionSpec>>,
        /// Hash of the template's spec (with the Pool's restartedAt).
        template_hash: u64,
    },
}

impl Good {
    fn of(object: Object) -> Good {
        match object {
            Object::Session(s) => Good::Session {
                hash: session_hash(&s.spec, restarted_at(&s.metadata)),
                metadata: s.metadata,
                spec: Arc::new(s.spec),
            },
            Object::Pool(p) => Good::Pool {
                hash: spec_hash(&p.spec),
                template: p.spec.template.as_ref().map(|t| Arc::new(t.spec.clone())),
                template_hash: p
                    .spec
                    .template
                    .as_ref()
                    .map_or(0, |t| session_hash(&t.spec, restarted_at(&p.metadata))),
                pool: Box::new(p),
            },
        }
    }

    /// Same declaration (what `Object`'s equality compared).
    fn same(&self, other: &Good) -> bool {
        match (self, other) {
            (
                Good::Session { metadata, spec, .. },
                Good::Session {
                    metadata: m2,
                    spec: s2,
                    ..
                },
            ) => metadata == m2 && (Arc::ptr_eq(spec, s2) || spec == s2),
            (Good::Pool { pool, .. }, Good::Pool { pool: p2, .. }) => pool == p2,
            _ => false,
        }
    }

    fn metadata(&self) -> &crate::api::Metadata {
        match self {
            Good::Session { metadata, .. } => metadata,
            Good::Pool { pool, .. } => &pool.metadata,
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Good::Session { .. } => "Session",
            Good::Pool { .. } => "Pool",
        }
    }

    fn name(&self) -> &str {
        self.metadata().name.as_deref().unwrap_or("")
    }
}

/// The `sessionlet.dev/restartedAt` annotation of an object.
fn restarted_at(m: &crate::api::Metadata) -> Option<&str> {
    m.annotations
        .get(core::change::RESTARTED_AT)
        .map(String::as_str)
}

/// What the generation of a session follows: its spec and its
/// `sessionlet.dev/restartedAt` annotation (the spec alone when there is
/// none, so that statuses written before the annotation existed agree).
fn session_hash(spec: &SessionSpec, restarted_at: Option<&str>) -> u64 {
    match restarted_at {
        None => spec_hash(spec),
        Some(at) => spec_hash(&(spec, at)),
    }
}

/// What the controller remembers of each object across rescans (and restarts).
#[derive(Debug, Clone)]
pub struct Known {
    /// Stable id.
    pub uid: Uuid,
    /// Hash of the spec in force.
    pub spec_hash: u64,
    /// Bumped when the spec hash changes.
    pub generation: u64,
    /// First sight (queue order).
    pub first_seen: DateTime<Utc>,
}

/// One document of a status file, in the manifest's order.
#[derive(Debug, Clone, PartialEq)]
pub enum Entry {
    /// A Session in force.
    Session(String),
    /// A Pool in force.
    Pool(String),
    /// A document that does not validate and has no last good version.
    Invalid {
        /// Kind, when readable.
        kind: Option<String>,
        /// Name, when readable.
        name: Option<String>,
        /// What is wrong.
        problems: Vec<String>,
    },
    /// A name another declaration holds or declares first (for a Pool's
    /// replica, a name a Session has).
    Duplicate {
        /// Session or Pool.
        kind: String,
        /// The name.
        name: String,
        /// The file that wins (with the replica and pool when a Pool's
        /// replica wins).
        winner: String,
        /// True when the winner holds the name (it is running or recorded
        /// in the status files); false when it only comes first.
        held: bool,
    },
}

/// Why a declaration lost its name to another file, for statuses and `plan`.
pub fn duplicate_message(kind: &str, name: &str, winner: &str, held: bool) -> String {
    let why = if held {
        "which holds the name"
    } else {
        "which comes first"
    };
    format!("{kind} {name:?} is already declared in {winner}, {why}; rename one of them")
}

/// What [`Catalog::reload`] found.
#[derive(Debug)]
pub enum Reloaded {
    /// Nothing the files declare changed.
    Unchanged,
    /// The desired state, rebuilt whole.
    Whole(Desired),
    /// Only plain sessions changed: these names are no longer declared,
    /// these sessions are declared anew or again (the rest stays as it was).
    Sessions {
        /// Names no longer declared.
        removed: BTreeSet<String>,
        /// Sessions declared anew or again.
        upserted: Vec<DesiredSession>,
    },
}

/// Where each object's status goes.
#[derive(Debug, Clone)]
pub struct FileView {
    /// The manifest path.
    pub path: PathBuf,
    /// Its stem: `STEM.status.yaml`, `STEM.logs/`, `STEM.crashes/`.
    pub stem: String,
    /// The status documents to write.
    pub entries: Vec<Entry>,
    /// Problems of the current version when a last good version is in force.
    pub stale_problems: Vec<String>,
    /// True when the file declares more than one session (logs go in per-session folders).
    pub shared: bool,
}

/// The directory's declarations and the memory of their identities.
#[derive(Default)]
pub struct Catalog {
    /// Keyed by the path's bytes: comparing `Path`s component by component
    /// dominated a rescan of 10,000 files.
    files: BTreeMap<std::ffi::OsString, CachedFile>,
    known: BTreeMap<(String, String), Known>,
    /// For each kind and name, the stem of the file holding it: the winner
    /// of the last rescan, seeded from the status files at start.
    holders: BTreeMap<NameKey, String>,
    /// File views by stem, rebuilt on each rescan.
    pub views: BTreeMap<String, FileView>,
    /// For each session, the stem of its file.
    pub session_file: BTreeMap<String, String>,
    /// For each pool, the stem of its file.
    pub pool_file: BTreeMap<String, String>,
    /// Labels of each session in force (a replica's: its template's), by name.
    pub session_labels: BTreeMap<String, BTreeMap<String, String>>,
    /// Labels of each pool in force, by name.
    pub pool_labels: BTreeMap<String, BTreeMap<String, String>>,
    /// Problems of the directory itself (refused symlinks, unreadable directory).
    pub refused: Vec<Problem>,
    /// Stems of the files (re)loaded or removed by the last rescan.
    pub changed: BTreeSet<String>,
    /// Names more than one declaration claims (a file's loser, or a replica
    /// name a Session also takes), as of the last whole rebuild: a change
    /// touching one of them needs the whole rebuild.
    contested: BTreeSet<NameKey>,
    /// Files parsed and folder listings so far (for the metrics).
    pub reads: u64,
    /// Folder listings so far (whole ones and a resync's listing of names).
    pub listings: u64,
    /// Manifest entries stat'ed by listings so far: one per entry for a
    /// whole listing, the suspects and the round's slice for a resync's.
    pub stats: u64,
    /// The files by name, for a resync's listing (a hash lookup per entry,
    /// not a walk down `files` comparing whole paths); `None` after any
    /// change to `files`, made again by the next resync.
    index: Option<std::collections::HashMap<std::ffi::OsString, Listed>>,
    /// Resyncs that listed names only so far: the round picks which slice
    /// of the files is stat'ed ([`STAT_ROUNDS`]).
    resync_round: u64,
    /// The manifest folder's (device, inode) at the first listing: the
    /// watch watches that inode, so a folder replaced since (deleted and
    /// made again, a mount over it) is one no watch reports on, and each
    /// resync stats every file again.
    watched_dir: Option<(u64, u64)>,
    /// The folder's stamp taken right before the last resync's listing of
    /// names, when its last change was already [`SETTLED`] old then.
    listed_stamp: Option<FolderStamp>,
    /// True once a desired state was built.
    built: bool,
    /// Why the manifest folder (or a folder above it) is not trusted, when
    /// the controller runs as root (StrictModes).
    dir_refusal: Option<String>,
}

/// A resync while the watch is healthy stats each unchanged file at least
/// once in this many resyncs (see [`Catalog::resync`]): with the default
/// 10 s interval, a file rewritten in place while the watch missed it is
/// found within five minutes. Only a change no watch reports needs this
/// sweep (a write through a shared mapping, a file system that sends no
/// events); a healthy watch reports every other one at once, so the sweep
/// is kept thin: a thirtieth of the files per resync (about 33 `statx` at
/// 1000 manifests), and a settled folder's names listed once in as many.
pub const STAT_ROUNDS: u64 = 30;

/// Which resync round stats the file `name`: stable across rounds and
/// listings (a directory's order changes as entries come and go), spread
/// evenly (FNV-1a).
fn name_slot(name: &str) -> u64 {
    let h = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    h % STAT_ROUNDS
}

/// The folder's (device, inode), following a link; `None` when it cannot
/// be stat'ed.
fn folder_identity(dir: &Path) -> Option<(u64, u64)> {
    std::fs::metadata(dir).ok().map(|m| (m.dev(), m.ino()))
}

/// How old a folder's last change must be, at the start of a listing, for
/// the same stamp later to prove that no name was added, removed or renamed
/// since: a change in the same clock tick as the one before it may leave
/// the folder's times as they were (file system times are coarse), but not
/// one that comes a second later. The same rule as Git's racy index.
const SETTLED: chrono::Duration = chrono::Duration::seconds(1);

/// What changes whenever an entry of a folder is added, removed or
/// renamed: its identity and its modification and change times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FolderStamp {
    dev: u64,
    ino: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

impl FolderStamp {
    fn of(m: &std::fs::Metadata) -> FolderStamp {
        let ns = |s: i64, n: i64| i128::from(s) * 1_000_000_000 + i128::from(n);
        FolderStamp {
            dev: m.dev(),
            ino: m.ino(),
            mtime_ns: ns(m.mtime(), m.mtime_nsec()),
            ctime_ns: ns(m.ctime(), m.ctime_nsec()),
        }
    }

    /// True when the folder's last change is [`SETTLED`] old at `now`.
    fn settled(&self, now: DateTime<Utc>) -> bool {
        let last = self.mtime_ns.max(self.ctime_ns);
        let settled = now
            .checked_sub_signed(SETTLED)
            .and_then(|t| t.timestamp_nanos_opt());
        settled.is_some_and(|t| i128::from(t) > last)
    }
}

/// Like sshd's StrictModes: a controller running as root refuses a manifest
/// another user owns or may write, or one in a folder another user may write,
/// since it would run their commands as root (see [`super::trust`]).
/// `dir_refusal` is the verdict on the manifest folder and the folders above.
fn strict_modes(dir: &Path, path: &Path, dir_refusal: Option<&str>) -> Option<Problem> {
    let message = match dir_refusal {
        Some(m) => m.to_string(),
        None => super::trust::check_manifest(path, dir).err()?.message,
    };
    Some(Problem::file_level(path, message))
}

/// FNV-1a over the spec's JSON: stable across builds, unlike `DefaultHasher`.
pub fn spec_hash<T: serde::Serialize>(spec: &T) -> u64 {
    let bytes = serde_json::to_vec(spec).unwrap_or_default();
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

impl Catalog {
    /// Seeds the memory of an object from a status file written by an earlier controller.
    pub fn remember(&mut self, kind: &str, name: &str, known: Known) {
        self.known
            .insert((kind.to_string(), name.to_string()), known);
    }

    /// Records, from a status file written by an earlier controller, that
    /// the file `stem` holds a name: a newcomer declaring it loses.
    pub fn remember_holder(&mut self, kind: &str, name: &str, stem: &str) {
        self.holders
            .insert((kind.to_string(), name.to_string()), stem.to_string());
    }

    /// How many manifest files do not validate: refused, holding a name
    /// another file holds, or running on their last good spec.
    pub fn invalid_files(&self) -> usize {
        let views = self
            .views
            .values()
            .filter(|v| {
                !v.stale_problems.is_empty()
                    || v.entries
                        .iter()
                        .any(|e| matches!(e, Entry::Invalid { .. } | Entry::Duplicate { .. }))
            })
            .count();
        // Refused files without a view of their own (a link that leaves the folder).
        views
            + self
                .refused
                .iter()
                .filter(|p| !self.views.values().any(|v| v.path == p.file))
                .count()
    }

    /// What is known of an object.
    pub fn known(&self, kind: &str, name: &str) -> Option<&Known> {
        self.known.get(&(kind.to_string(), name.to_string()))
    }

    /// Rescans the directory and returns the desired state.
    /// `None` when nothing changed since the last rescan.
    pub fn rescan(&mut self, dir: &Path, now: DateTime<Utc>) -> Option<Desired> {
        self.listings = self.listings.saturating_add(1);
        let listing = match manifest::list_manifests(dir) {
            Ok(l) => l,
            Err(e) => {
                // Keep what we had: an unreadable directory must not stop sessions.
                self.refused = vec![Problem {
                    file: dir.to_path_buf(),
                    line: 0,
                    col: 0,
                    path: String::new(),
                    message: format!("cannot read the manifest directory: {e}"),
                }];
                return Some(self.desired(now));
            }
        };
        self.stats = self
            .stats
            .saturating_add(u64::try_from(listing.metadata.len()).unwrap_or(u64::MAX));
        if self.watched_dir.is_none() {
            self.watched_dir = folder_identity(dir);
        }
        self.changed.clear();
        if self.refused != listing.refused {
            for p in &listing.refused {
                tracing::warn!("refused {}", p);
            }
            self.changed.insert(String::new());
        }
        self.refused = listing.refused;
        // A few stats: the folder's owner and mode can change without any
        // manifest changing. A new verdict re-judges every file (each keeps
        // its last good version in force).
        let dir_refusal = super::trust::check_folder("manifest folder", dir)
            .err()
            .map(|r| r.message);
        if dir_refusal != self.dir_refusal {
            for c in self.files.values_mut() {
                c.fingerprint = None;
            }
            self.index = None;
            self.dir_refusal = dir_refusal;
        }
        let present: std::collections::HashSet<&std::ffi::OsStr> =
            listing.manifests.iter().map(|p| p.as_os_str()).collect();
        // Files may go: the resync's index is made again.
        self.index = None;
        let changed = &mut self.changed;
        self.files.retain(|p, c| {
            let keep = present.contains(p.as_os_str());
            if !keep {
                changed.insert(c.loaded.stem.clone());
            }
            keep
        });
        // The files to read, read side by side, then taken in in order.
        let stale: Vec<(PathBuf, Fingerprint)> = listing
            .manifests
            .iter()
            .zip(&listing.metadata)
            .map(|(path, metadata)| (path.clone(), Fingerprint::of(metadata)))
            .filter(|(path, fp)| !self.is_cached(path, Some(*fp)))
            .collect();
        let paths: Vec<PathBuf> = stale.iter().map(|(p, _)| p.clone()).collect();
        let read = manifest::load_files(&paths);
        for ((path, fp), loaded) in stale.into_iter().zip(read) {
            self.take_in(dir, &path, Some(fp), loaded);
        }
        if self.changed.is_empty() && self.built {
            // Nothing was (re)loaded or removed: the desired state is the same.
            return None;
        }
        self.built = true;
        Some(self.desired(now))
    }

    /// Reads `path` again unless its fingerprint `fp` is the one cached;
    /// notes its stem as changed when it was read.
    fn refresh(&mut self, dir: &Path, path: &Path, fp: Option<Fingerprint>) -> bool {
        if self.is_cached(path, fp) {
            return false;
        }
        let loaded = manifest::load_file(path);
        self.take_in(dir, path, fp, loaded);
        true
    }

    /// True when `path` was read with the fingerprint `fp` (known).
    fn is_cached(&self, path: &Path, fp: Option<Fingerprint>) -> bool {
        fp.is_some()
            && self
                .files
                .get(path.as_os_str())
                .is_some_and(|c| c.fingerprint == fp)
    }

    /// Takes in `loaded`, just read from `path` (fingerprint `fp`); notes
    /// its stem as changed.
    fn take_in(
        &mut self,
        dir: &Path,
        path: &Path,
        fp: Option<Fingerprint>,
        mut loaded: manifest::ManifestFile,
    ) {
        let path = &path.to_path_buf();
        self.reads = self.reads.saturating_add(1);
        if let Some(problem) = strict_modes(dir, path, self.dir_refusal.as_deref()) {
            loaded.documents.clear();
            loaded.problems = vec![problem];
        } else if loaded.documents.is_empty() && loaded.problems.is_empty() {
            // An empty file is most often one being rewritten: keep the
            // last good spec. Deleting the file is how sessions are removed.
            loaded.problems = vec![Problem {
                file: path.clone(),
                line: 1,
                col: 1,
                path: String::new(),
                message: "the file declares nothing (it is empty or holds only comments); delete it to remove its sessions".into(),
            }];
        }
        self.changed.insert(loaded.stem.clone());
        if !loaded.problems.is_empty() {
            let keeps = self
                .files
                .get(path.as_os_str())
                .is_some_and(|c| !c.last_good.is_empty());
            for p in &loaded.problems {
                if keeps {
                    tracing::warn!("manifest invalid: {p} (the last good spec stays in force)");
                } else {
                    tracing::warn!("manifest invalid: {p}");
                }
            }
        }
        let valid = loaded.problems.is_empty();
        // A valid file's documents are all Valid: they move into `last_good`.
        let documents = if valid {
            std::mem::take(&mut loaded.documents)
        } else {
            Vec::new()
        };
        let loaded = Loaded::of(loaded);
        let last_good: Vec<Good> = if valid {
            // A new vector, not one collected in place: that would keep the
            // documents' buffer (a `Document` is ten times a `Good`).
            let mut fresh: Vec<Good> = Vec::with_capacity(documents.len());
            for d in documents {
                if let Document::Valid(o) = d {
                    fresh.push(Good::of(o));
                }
            }
            // The same declarations as before keep their shared specs.
            match self.files.get(path.as_os_str()) {
                Some(c)
                    if c.last_good.len() == fresh.len()
                        && c.last_good.iter().zip(&fresh).all(|(a, b)| a.same(b)) =>
                {
                    c.last_good.clone()
                }
                _ => fresh,
            }
        } else {
            self.files
                .get(path.as_os_str())
                .map(|c| c.last_good.clone())
                .unwrap_or_default()
        };
        self.index = None;
        self.files.insert(
            path.as_os_str().to_os_string(),
            CachedFile {
                fingerprint: fp,
                dirent_ino: 0,
                loaded,
                last_good,
            },
        );
    }

    /// Re-reads only `paths` (the files a watch reported), without listing
    /// the directory: a file gone or no longer a manifest is dropped, one
    /// refused is refused, any other is read if its fingerprint changed.
    /// Returns the desired state, `None` when nothing changed. The periodic
    /// [`Catalog::rescan`] stays the safety net for missed events.
    pub fn reload(
        &mut self,
        dir: &Path,
        paths: &BTreeSet<PathBuf>,
        now: DateTime<Utc>,
        patch: bool,
    ) -> Reloaded {
        let paths: Vec<PathBuf> = paths.iter().cloned().collect();
        self.reload_paths(dir, &paths, now, patch)
    }

    /// [`Catalog::reload`] of `paths`, each once.
    fn reload_paths(
        &mut self,
        dir: &Path,
        paths: &[PathBuf],
        now: DateTime<Utc>,
        patch: bool,
    ) -> Reloaded {
        let whole = |d: Option<Desired>| d.map_or(Reloaded::Unchanged, Reloaded::Whole);
        if !self.built {
            return whole(self.rescan(dir, now));
        }
        let Ok(canonical) = std::fs::canonicalize(dir) else {
            return whole(self.rescan(dir, now));
        };
        // A few stats: a folder whose owner or mode changed re-judges every
        // file, which the whole listing does.
        let dir_refusal = super::trust::check_folder("manifest folder", dir)
            .err()
            .map(|r| r.message);
        if dir_refusal != self.dir_refusal {
            return whole(self.rescan(dir, now));
        }
        self.changed.clear();
        // The files read again or dropped, with their stems before.
        let mut touched: Vec<(PathBuf, Option<String>)> = Vec::new();
        for path in paths {
            if path.parent() != Some(dir) {
                continue;
            }
            let was_refused = self.refused.iter().any(|p| p.file == *path);
            self.refused.retain(|p| p.file != *path);
            match manifest::inspect(path, &canonical) {
                manifest::Inspected::Manifest(m) => {
                    if was_refused {
                        self.changed.insert(String::new());
                    }
                    let stem = self
                        .files
                        .get(path.as_os_str())
                        .map(|c| c.loaded.stem.clone());
                    if self.refresh(dir, path, Some(Fingerprint::of(&m))) {
                        touched.push((path.clone(), stem));
                    }
                }
                manifest::Inspected::Refused(problem) => {
                    tracing::warn!("refused {}", problem);
                    self.refused.push(problem);
                    self.refused.sort();
                    self.changed.insert(String::new());
                    if let Some(c) = self.files.remove(path.as_os_str()) {
                        self.index = None;
                        self.changed.insert(c.loaded.stem.clone());
                    }
                }
                manifest::Inspected::Skipped => {
                    if was_refused {
                        self.changed.insert(String::new());
                    }
                    if let Some(c) = self.files.remove(path.as_os_str()) {
                        self.index = None;
                        self.changed.insert(c.loaded.stem.clone());
                        touched.push((path.clone(), Some(c.loaded.stem)));
                    }
                }
            }
        }
        if self.changed.is_empty() {
            return Reloaded::Unchanged;
        }
        if patch {
            if let Some((removed, upserted)) = self.patch(&touched, now) {
                return Reloaded::Sessions { removed, upserted };
            }
        }
        Reloaded::Whole(self.desired(now))
    }

    /// The periodic resync while the watch is healthy (it reported no
    /// error or overflow, and watches the folder that is there): lists the
    /// folder's names, with the inode number each directory entry carries,
    /// but stats only what the listing cannot vouch for: a new name, a name
    /// gone, an entry whose inode number changed (a file replaced by a
    /// rename, the common atomic save), an entry that is not a plain regular
    /// file (a link: its target may have changed), the refused entries, the
    /// paths the watch reported, and the round's slice of the other files
    /// (those whose name hashes to `round % STAT_ROUNDS`). So a file
    /// created, deleted, renamed or replaced behind the watch's back is
    /// found at this resync, and one rewritten in place (same inode, which
    /// only a `stat` tells) within [`STAT_ROUNDS`] resyncs. A folder whose
    /// own stamp (identity, modification and change times) is the one taken
    /// before the last listing, when its last change was [`SETTLED`] old,
    /// has the same names: those resyncs skip the listing and stat the
    /// links and the slice alone, except one in [`STAT_ROUNDS`], which lists
    /// the names all the same. Whatever needs
    /// more (the first listing, an unreadable folder, the folder's
    /// ownership changed, a folder not the one first listed) is a whole
    /// [`Catalog::rescan`]. Returns what [`Catalog::reload`] returns.
    pub fn resync(
        &mut self,
        dir: &Path,
        reported: &BTreeSet<PathBuf>,
        now: DateTime<Utc>,
        patch: bool,
    ) -> Reloaded {
        let whole = |d: Option<Desired>| d.map_or(Reloaded::Unchanged, Reloaded::Whole);
        // A problem of the folder itself (it could not be read) is cleared
        // by a whole listing only.
        let folder_problem = self.refused.iter().any(|p| p.file.parent() != Some(dir));
        let stamp = std::fs::metadata(dir).ok().map(|m| FolderStamp::of(&m));
        let identity = stamp.map(|s| (s.dev, s.ino));
        if !self.built || folder_problem || identity != self.watched_dir {
            return whole(self.rescan(dir, now));
        }
        let round = self.resync_round.saturating_add(1);
        let slice = round % STAT_ROUNDS;
        // The folder unchanged since a listing that started after its last
        // change had settled: the names are the ones listed then, so only
        // the round's slice and the links are stat'ed. Every STAT_ROUNDS
        // resyncs the names are listed all the same, which bounds what a
        // clock set back could hide.
        if slice != 0 && self.index.is_some() && stamp.is_some() && stamp == self.listed_stamp {
            return self.resync_known(dir, reported, now, patch, round);
        }
        self.listed_stamp = stamp.filter(|s| s.settled(now));
        use nix::dir::{Dir, Type};
        use nix::fcntl::OFlag;
        // nix's entries lend their names: no allocation per entry, which
        // std's make twice (the folder also holds every status file).
        let Ok(mut listing) = Dir::open(
            dir,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        ) else {
            return whole(self.rescan(dir, now));
        };
        self.listings = self.listings.saturating_add(1);
        self.resync_round = round;
        let files = &self.files;
        let index = self.index.get_or_insert_with(|| {
            files
                .iter()
                .filter_map(|(p, c)| {
                    let name = Path::new(p).file_name()?.to_os_string();
                    let ino = c.fingerprint.map_or(0, |f| f.ino);
                    let slot = name.to_str().map(name_slot);
                    Some((
                        name,
                        Listed {
                            ino,
                            dirent_ino: if ino == 0 { 0 } else { c.dirent_ino },
                            round: 0,
                            plain: false,
                            slot,
                        },
                    ))
                })
                .collect()
        });
        // The suspects, with the inode number their entry gave.
        let mut suspects: Vec<(PathBuf, u64)> = Vec::new();
        let mut seen: usize = 0;
        let mut broken = false;
        for entry in listing.iter() {
            let Ok(entry) = entry else {
                broken = true;
                break;
            };
            let name = std::ffi::OsStr::from_bytes(entry.file_name().to_bytes());
            let Some(text) = name.to_str() else {
                continue; // never a manifest, as in a whole listing
            };
            if !manifest::is_manifest_name(text) {
                continue;
            }
            let ino = entry.ino();
            // From the entry's type byte (`None`: the file system gives none).
            let file_type = entry.file_type();
            let suspect = match index.get_mut(name) {
                None => file_type != Some(Type::Directory),
                Some(l) => {
                    seen = seen.saturating_add(1);
                    l.round = round;
                    l.plain = file_type == Some(Type::File);
                    let same_inode = ino != 0 && (l.ino == ino || l.dirent_ino == ino);
                    !same_inode || file_type != Some(Type::File) || l.slot == Some(slice)
                }
            };
            if suspect {
                suspects.push((dir.join(name), ino));
            }
        }
        if broken {
            // A listing broken off cannot say what is gone.
            return whole(self.rescan(dir, now));
        }
        if seen < index.len() {
            // Some names went away: each is looked at, and found gone.
            for (name, l) in index.iter() {
                if l.round != round {
                    suspects.push((dir.join(name), 0));
                }
            }
        }
        self.look_at(dir, reported, suspects, now, patch)
    }

    /// A resync without listing the folder (see [`Catalog::resync`]): the
    /// names known, links and the round's slice stat'ed.
    fn resync_known(
        &mut self,
        dir: &Path,
        reported: &BTreeSet<PathBuf>,
        now: DateTime<Utc>,
        patch: bool,
        round: u64,
    ) -> Reloaded {
        self.resync_round = round;
        let slice = round % STAT_ROUNDS;
        let suspects: Vec<(PathBuf, u64)> = self
            .index
            .iter()
            .flatten()
            .filter(|(_, l)| !l.plain || l.slot.is_none_or(|n| n == slice))
            .map(|(name, l)| (dir.join(name), l.dirent_ino))
            .collect();
        self.look_at(dir, reported, suspects, now, patch)
    }

    /// Reloads the `suspects` of a resync (each with the inode number its
    /// directory entry gave), the paths the watch `reported` and the
    /// refused entries.
    fn look_at(
        &mut self,
        dir: &Path,
        reported: &BTreeSet<PathBuf>,
        suspects: Vec<(PathBuf, u64)>,
        now: DateTime<Utc>,
        patch: bool,
    ) -> Reloaded {
        self.stats = self
            .stats
            .saturating_add(u64::try_from(suspects.len()).unwrap_or(u64::MAX));
        let mut paths: Vec<PathBuf> = reported.iter().cloned().collect();
        paths.extend(suspects.iter().map(|(p, _)| p.clone()));
        // A refused entry gone, or no longer refused, changes what is refused.
        paths.extend(self.refused.iter().map(|p| p.file.clone()));
        // By bytes: cheaper than `Path`'s order by components.
        paths.sort_unstable_by(|a, b| a.as_os_str().cmp(b.as_os_str()));
        paths.dedup();
        let reloaded = self.reload_paths(dir, &paths, now, patch);
        for (p, ino) in suspects {
            if let Some(c) = self.files.get_mut(p.as_os_str()) {
                c.dirent_ino = ino;
            }
            if let (Some(index), Some(name)) = (self.index.as_mut(), p.file_name()) {
                if let Some(l) = index.get_mut(name) {
                    l.dirent_ino = ino;
                }
            }
        }
        reloaded
    }

    /// The common change, applied without rebuilding every file's view: the
    /// `touched` files (path, stem before) declared, and now declare, valid
    /// Sessions only, under names no other file declares. Returns the names
    /// no longer declared and the sessions declared anew or again; `None`
    /// (nothing changed here) when the change needs the whole rebuild
    /// (pools, problems, a name contested or moving between files, a refusal).
    fn patch(
        &mut self,
        touched: &[(PathBuf, Option<String>)],
        now: DateTime<Utc>,
    ) -> Option<(BTreeSet<String>, Vec<DesiredSession>)> {
        if self.changed.contains("") {
            return None;
        }
        let session_key = |n: &str| ("Session".to_string(), n.to_string());
        // Check everything first: a refusal must leave the catalog untouched.
        for (path, old_stem) in touched {
            if let Some(stem) = old_stem {
                if let Some(view) = self.views.get(stem) {
                    let plain = view.path == *path
                        && view.stale_problems.is_empty()
                        && view.entries.iter().all(|e| match e {
                            Entry::Session(n) => !self.contested.contains(&session_key(n)),
                            _ => false,
                        });
                    if !plain {
                        return None;
                    }
                }
            }
            let Some(cached) = self.files.get(path.as_os_str()) else {
                continue; // removed
            };
            let stem = &cached.loaded.stem;
            if old_stem.as_ref() != Some(stem) && self.views.contains_key(stem) {
                return None; // another file (x.yml beside x.yaml) has this stem
            }
            if !cached.loaded.problems.is_empty() {
                return None;
            }
            for good in &cached.last_good {
                let Good::Session { metadata, .. } = good else {
                    return None;
                };
                let name = obj_name(metadata);
                if self.contested.contains(&session_key(&name))
                    || self.session_file.get(&name).is_some_and(|s| s != stem)
                    || self.pool_file.contains_key(&name)
                {
                    return None;
                }
            }
        }
        let mut removed: BTreeSet<String> = BTreeSet::new();
        let mut upserted: Vec<DesiredSession> = Vec::new();
        for (path, old_stem) in touched {
            if let Some(view) = old_stem.as_ref().and_then(|s| self.views.remove(s)) {
                for e in view.entries {
                    if let Entry::Session(n) = e {
                        self.session_file.remove(&n);
                        self.session_labels.remove(&n);
                        self.holders.remove(&session_key(&n));
                        removed.insert(n);
                    }
                }
            }
            let Some(cached) = self.files.get(path.as_os_str()) else {
                continue;
            };
            let stem = cached.loaded.stem.clone();
            let mut view = FileView {
                path: path.clone(),
                stem: stem.clone(),
                entries: Vec::new(),
                stale_problems: Vec::new(),
                shared: cached.last_good.len() > 1,
            };
            let mut wanted = Vec::new();
            for good in &cached.last_good {
                let Good::Session {
                    metadata,
                    spec,
                    hash,
                } = good
                else {
                    continue;
                };
                let name = obj_name(metadata);
                view.entries.push(Entry::Session(name.clone()));
                wanted.push((
                    name,
                    spec.clone(),
                    *hash,
                    metadata.labels.clone(),
                    restarted_at(metadata).map(str::to_string),
                ));
            }
            // Pushing one entry reserves four (an `Entry` is 80 bytes).
            view.entries.shrink_to_fit();
            self.views.insert(stem.clone(), view);
            for (name, spec, hash, labels, restarted_at) in wanted {
                removed.remove(&name);
                self.session_file.insert(name.clone(), stem.clone());
                self.holders.insert(session_key(&name), stem.clone());
                if !labels.is_empty() {
                    self.session_labels.insert(name.clone(), labels);
                }
                let k = self.identify("Session", &name, hash, now);
                upserted.push(DesiredSession {
                    name,
                    spec,
                    generation: k.generation,
                    first_seen: k.first_seen,
                    replica: None,
                    restarted_at,
                });
            }
        }
        Some((removed, upserted))
    }

    fn desired(&mut self, now: DateTime<Utc>) -> Desired {
        let mut desired = Desired::default();
        self.views.clear();
        self.session_file.clear();
        self.pool_file.clear();
        self.session_labels.clear();
        self.pool_labels.clear();
        let files: Vec<(&Path, &CachedFile)> =
            self.files.iter().map(|(k, c)| (Path::new(k), c)).collect();
        let names = NameClaims::decide(&files, &self.holders);
        /// Name, spec, generation hash, replica, restartedAt annotation.
        type Wanted = (
            String,
            Arc<SessionSpec>,
            u64,
            Option<Replica>,
            Option<String>,
        );
        let mut sessions: Vec<Wanted> = Vec::new();
        let mut pools: Vec<(String, PoolManifest, u64)> = Vec::new();
        for (file_index, (path, cached)) in files.iter().enumerate() {
            let stem = cached.loaded.stem.clone();
            let mut view = FileView {
                path: path.to_path_buf(),
                stem: stem.clone(),
                entries: Vec::new(),
                stale_problems: Vec::new(),
                shared: false,
            };
            // The objects in force: the current ones, or the last good ones with the current problems noted.
            let in_force: Vec<&Good> = if cached.loaded.problems.is_empty() {
                cached.last_good.iter().collect()
            } else if !cached.last_good.is_empty() {
                view.stale_problems = cached
                    .loaded
                    .problems
                    .iter()
                    .map(|p| p.to_string())
                    .collect();
                cached.last_good.iter().collect()
            } else {
                for doc in &cached.loaded.documents {
                    if let Document::Invalid {
                        kind,
                        name,
                        problems,
                    } = doc
                    {
                        view.entries.push(Entry::Invalid {
                            kind: kind.clone(),
                            name: name.clone(),
                            problems: problems.iter().map(|p| p.to_string()).collect(),
                        });
                    } else if let Document::Valid(o) = doc {
                        // Valid documents of a file with problems elsewhere wait for the file to be fixed.
                        view.entries.push(Entry::Invalid {
                            kind: Some(o.kind().to_string()),
                            name: Some(o.name().to_string()),
                            problems: vec!["another document of this file is invalid; the file is applied only as a whole".into()],
                        });
                    }
                }
                if cached.loaded.documents.is_empty() {
                    view.entries.push(Entry::Invalid {
                        kind: None,
                        name: None,
                        problems: cached
                            .loaded
                            .problems
                            .iter()
                            .map(|p| p.to_string())
                            .collect(),
                    });
                }
                Vec::new()
            };
            let mut session_count = 0;
            for (object_index, obj) in in_force.into_iter().enumerate() {
                let origin = Origin {
                    file: file_index,
                    object: object_index,
                    ordinal: None,
                };
                if let Some((winner, held)) = names.loser(obj.kind(), obj.name(), origin) {
                    view.entries.push(Entry::Duplicate {
                        kind: obj.kind().to_string(),
                        name: obj.name().to_string(),
                        winner,
                        held,
                    });
                    continue;
                }
                match obj {
                    Good::Session {
                        metadata,
                        spec,
                        hash,
                    } => {
                        let name = obj_name(metadata);
                        session_count += 1;
                        view.entries.push(Entry::Session(name.clone()));
                        self.session_file.insert(name.clone(), stem.clone());
                        if !metadata.labels.is_empty() {
                            self.session_labels
                                .insert(name.clone(), metadata.labels.clone());
                        }
                        sessions.push((
                            name,
                            spec.clone(),
                            *hash,
                            None,
                            restarted_at(metadata).map(str::to_string),
                        ));
                    }
                    Good::Pool {
                        pool: p,
                        hash,
                        template,
                        template_hash,
                    } => {
                        let name = obj_name(&p.metadata);
                        session_count += 2;
                        view.entries.push(Entry::Pool(name.clone()));
                        self.pool_file.insert(name.clone(), stem.clone());
                        if !p.metadata.labels.is_empty() {
                            self.pool_labels
                                .insert(name.clone(), p.metadata.labels.clone());
                        }
                        if let Some(spec) = template {
                            for ordinal in 0..p.spec.replicas {
                                let rname = core::names::replica_name(&name, ordinal);
                                let origin = Origin {
                                    ordinal: Some(ordinal),
                                    ..origin
                                };
                                // A replica name another declaration holds
                                // (or declares first) is not the pool's.
                                if let Some((winner, held)) = names.loser("Session", &rname, origin)
                                {
                                    view.entries.push(Entry::Duplicate {
                                        kind: "Session".into(),
                                        name: rname,
                                        winner,
                                        held,
                                    });
                                    continue;
                                }
                                // Each replica's own status follows the PoolStatus in the pool's file.
                                view.entries.push(Entry::Session(rname.clone()));
                                self.session_file.insert(rname.clone(), stem.clone());
                                if let Some(t) = p
                                    .spec
                                    .template
                                    .as_ref()
                                    .filter(|t| !t.metadata.labels.is_empty())
                                {
                                    self.session_labels
                                        .insert(rname.clone(), t.metadata.labels.clone());
                                }
                                let replica = Replica {
                                    pool: name.clone(),
                                    ordinal,
                                };
                                sessions.push((
                                    rname,
                                    spec.clone(),
                                    *template_hash,
                                    Some(replica),
                                    restarted_at(&p.metadata).map(str::to_string),
                                ));
                            }
                        }
                        pools.push((name, (**p).clone(), *hash));
                    }
                }
            }
            view.shared = session_count > 1;
            view.entries.shrink_to_fit();
            self.views.insert(stem, view);
        }
        let sessions_declared: std::collections::HashSet<&str> = sessions
            .iter()
            .filter(|w| w.3.is_none())
            .map(|w| w.0.as_str())
            .collect();
        // What holds each name from now on: the winners.
        self.holders = names.holders();
        self.contested = self
            .views
            .values()
            .flat_map(|v| v.entries.iter())
            .filter_map(|e| match e {
                Entry::Duplicate { kind, name, .. } => Some((kind.clone(), name.clone())),
                _ => None,
            })
            .collect();
        for (name, _, _, replica, _) in &sessions {
            if replica.is_some() && sessions_declared.contains(name.as_str()) {
                self.contested.insert(("Session".to_string(), name.clone()));
            }
        }
        // Refused files (a symlink that leaves the directory) get an Invalid
        // status saying why, so the refusal is visible.
        for p in &self.refused {
            let Some(file_name) = p.file.file_name().map(|n| n.to_string_lossy().into_owned())
            else {
                continue;
            };
            let stem = manifest::manifest_stem(&file_name).to_string();
            if stem.is_empty() || self.views.contains_key(&stem) {
                continue;
            }
            self.views.insert(
                stem.clone(),
                FileView {
                    path: p.file.clone(),
                    stem,
                    entries: vec![Entry::Invalid {
                        kind: None,
                        name: None,
                        problems: vec![p.to_string()],
                    }],
                    stale_problems: Vec::new(),
                    shared: false,
                },
            );
        }
        for (name, pool, hash) in pools {
            let k = self.identify("Pool", &name, hash, now);
            if let Some(b) = &pool.spec.budget {
                desired.budgets.insert(name.clone(), b.clone());
            }
            desired.pools.insert(
                name.clone(),
                DesiredPool {
                    name,
                    replicas: pool.spec.replicas,
                    max_concurrent: pool.spec.max_concurrent,
                    max_queue: pool.spec.max_queue,
                    generation: k.generation,
                },
            );
        }
        for (name, spec, hash, replica, restarted_at) in sessions {
            if desired.sessions.contains_key(&name) {
                continue; // a replica name taken by a Session declared earlier
            }
            let k = self.identify("Session", &name, hash, now);
            desired.sessions.insert(
                name.clone(),
                DesiredSession {
                    name,
                    spec,
                    generation: k.generation,
                    first_seen: k.first_seen,
                    replica,
                    restarted_at,
                },
            );
        }
        desired
    }

    fn identify(&mut self, kind: &str, name: &str, hash: u64, now: DateTime<Utc>) -> Known {
        let k = self
            .known
            .entry((kind.to_string(), name.to_string()))
            .or_insert_with(|| Known {
                uid: Uuid::new_v4(),
                spec_hash: hash,
                generation: 1,
                first_seen: now,
            });
        if k.spec_hash != hash {
            k.spec_hash = hash;
            k.generation += 1;
        }
        k.clone()
    }
}

/// The names the status files in `status_dir` record as declared (not
/// Invalid), each with the stem of the manifest holding it: what
/// `validate` needs to blame the file that would lose, as the controller
/// does. Unreadable files say nothing.
pub fn recorded_holders(status_dir: &Path) -> BTreeMap<NameKey, String> {
    let mut holders = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(status_dir) else {
        return holders;
    };
    for e in entries.flatten() {
        let file = e.file_name().to_string_lossy().into_owned();
        let Some(stem) = file.strip_suffix(".status.yaml") else {
            continue;
        };
        // A tombstone (runtime::tombstone) holds no name: the session is gone.
        if file.starts_with('.') || file.ends_with(".tombstone.status.yaml") {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(e.path()) else {
            continue;
        };
        let Ok(docs) = crate::manifest::codec::from_yaml_multi::<serde_json::Value>(&text) else {
            continue;
        };
        for doc in docs {
            let kind = match doc["kind"].as_str() {
                Some("SessionStatus") => "Session",
                Some("PoolStatus") => "Pool",
                _ => continue,
            };
            if doc["status"]["phase"] == "Invalid" {
                continue;
            }
            if let Some(name) = doc["metadata"]["name"].as_str().filter(|n| !n.is_empty()) {
                holders.insert((kind.to_string(), name.to_string()), stem.to_string());
            }
        }
    }
    holders
}

/// Where a claim comes from: a file, an object in force in it, and for a
/// Pool's replica its ordinal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Origin {
    file: usize,
    object: usize,
    ordinal: Option<u32>,
}

/// The names claimed by the objects in force and who wins each
/// ([`core::names::winners`]). Pools are decided first: a Pool that loses
/// its own name claims no replica names.
struct NameClaims {
    claims: Vec<Claim>,
    origins: Vec<Origin>,
    /// File names, by file index (to say who wins).
    file_names: Vec<String>,
    /// Pool names, by origin of the pool (for replica winners).
    pool_names: BTreeMap<(usize, usize), String>,
    winners: BTreeMap<NameKey, core::names::Winner>,
}

impl NameClaims {
    fn decide(files: &[(&Path, &CachedFile)], holders: &BTreeMap<NameKey, String>) -> NameClaims {
        let file_names: Vec<String> = files
            .iter()
            .map(|(p, _)| {
                p.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default()
            })
            .collect();
        let mut pool_claims = Vec::new();
        let mut pool_origins = Vec::new();
        for (file, (_, cached)) in files.iter().enumerate() {
            for (object, obj) in cached.last_good.iter().enumerate() {
                if let Good::Pool { pool: p, .. } = obj {
                    pool_claims.push(Claim {
                        key: ("Pool".into(), obj_name(&p.metadata)),
                        stem: cached.loaded.stem.clone(),
                    });
                    pool_origins.push(Origin {
                        file,
                        object,
                        ordinal: None,
                    });
                }
            }
        }
        let pool_winners = core::names::winners(&pool_claims, holders);
        let mut claims = pool_claims.clone();
        let mut origins = pool_origins.clone();
        let mut pool_names = BTreeMap::new();
        for (file, (_, cached)) in files.iter().enumerate() {
            for (object, obj) in cached.last_good.iter().enumerate() {
                let origin = Origin {
                    file,
                    object,
                    ordinal: None,
                };
                let stem = cached.loaded.stem.clone();
                match obj {
                    Good::Session { metadata, .. } => {
                        claims.push(Claim {
                            key: ("Session".into(), obj_name(metadata)),
                            stem,
                        });
                        origins.push(origin);
                    }
                    Good::Pool { pool: p, .. } => {
                        let name = obj_name(&p.metadata);
                        let won = pool_winners
                            .get(&("Pool".to_string(), name.clone()))
                            .is_some_and(|w| pool_origins[w.index] == origin);
                        if !won || p.spec.template.is_none() {
                            continue;
                        }
                        for ordinal in 0..p.spec.replicas {
                            claims.push(Claim {
                                key: ("Session".into(), core::names::replica_name(&name, ordinal)),
                                stem: stem.clone(),
                            });
                            origins.push(Origin {
                                ordinal: Some(ordinal),
                                ..origin
                            });
                        }
                        pool_names.insert((file, object), name);
                    }
                }
            }
        }
        let winners = core::names::winners(&claims, holders);
        NameClaims {
            claims,
            origins,
            file_names,
            pool_names,
            winners,
        }
    }

    /// `None` when the claim from `origin` wins `kind`/`name`; otherwise who
    /// wins it and whether it holds the name.
    fn loser(&self, kind: &str, name: &str, origin: Origin) -> Option<(String, bool)> {
        let w = self.winners.get(&(kind.to_string(), name.to_string()))?;
        let won = self.origins[w.index];
        if won == origin {
            return None;
        }
        let file = self.file_names.get(won.file).cloned().unwrap_or_default();
        let who = match (won.ordinal, self.pool_names.get(&(won.file, won.object))) {
            (Some(n), Some(pool)) => format!("{file} (replica {n} of Pool {pool:?})"),
            _ => file,
        };
        Some((who, w.held))
    }

    /// The stem holding each name.
    fn holders(&self) -> BTreeMap<NameKey, String> {
        self.winners
            .iter()
            .map(|(k, w)| (k.clone(), self.claims[w.index].stem.clone()))
            .collect()
    }
}

fn obj_name(m: &crate::api::Metadata) -> String {
    m.name.clone().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(name: &str, cmd: &str) -> String {
        format!(
            "apiVersion: sessionlet.dev/v1alpha1\nkind: Session\nmetadata:\n  name: {name}\nspec:\n  command: [{cmd}]\n"
        )
    }

    fn pool(name: &str, replicas: u32) -> String {
        format!(
            "apiVersion: sessionlet.dev/v1alpha1\nkind: Pool\nmetadata:\n  name: {name}\nspec:\n  replicas: {replicas}\n  template:\n    spec:\n      command: [/bin/true]\n"
        )
    }

    /// What a desired state and the catalog's indexes say, without the
    /// identities (a fresh catalog numbers generations anew).
    fn summary(c: &Catalog, d: &Desired) -> String {
        let sessions: Vec<String> = d
            .sessions
            .values()
            .map(|s| {
                format!(
                    "{} {:?} {:?} {:?}",
                    s.name, s.spec.command, s.replica, s.restarted_at
                )
            })
            .collect();
        let views: Vec<String> = c
            .views
            .values()
            .map(|v| {
                format!(
                    "{} {:?} {:?} {}",
                    v.stem, v.entries, v.stale_problems, v.shared
                )
            })
            .collect();
        // `held` says the winner held the name before: history a fresh
        // catalog does not have.
        let views: Vec<String> = views
            .into_iter()
            .map(|v| {
                v.replace("held: true", "held: _")
                    .replace("held: false", "held: _")
            })
            .collect();
        format!(
            "{sessions:#?}\n{:?}\n{views:#?}\n{:?}\n{:?}\n{:?}",
            d.pools.keys().collect::<Vec<_>>(),
            c.session_file,
            c.pool_file,
            c.session_labels
        )
    }

    /// Reloading only the changed files reaches what a whole rescan of the
    /// folder builds, and the common change (plain sessions edited, added,
    /// removed) takes the patch, not the rebuild.
    #[test]
    fn a_reload_of_the_changed_files_matches_a_whole_rescan() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = std::fs::canonicalize(tmp.path()).expect("canonical");
        let now = Utc::now();
        let write = |f: &str, text: &str| std::fs::write(dir.join(f), text).expect("write");
        write("a.yaml", &session("a", "/bin/true"));
        write("b.yaml", &session("b", "/bin/true"));
        write(
            "two.yaml",
            &format!(
                "{}---\n{}",
                session("c", "/bin/true"),
                session("d", "/bin/true")
            ),
        );
        write("p.yaml", &pool("p", 2));
        let mut live = Catalog::default();
        let mut desired = live.rescan(&dir, now).expect("first read");
        // (files to write or delete, whether the patch may apply)
        type Step<'a> = (Vec<(&'a str, Option<String>)>, bool);
        let steps: Vec<Step> = vec![
            (vec![("a.yaml", Some(session("a", "/bin/false")))], true),
            (vec![("b.yaml", None)], true),
            (vec![("e.yaml", Some(session("e", "/bin/true")))], true),
            (vec![("two.yaml", Some(session("c", "/bin/echo")))], true),
            // A name another file declares: the whole rebuild decides.
            (vec![("dup.yaml", Some(session("a", "/bin/sh")))], false),
            (vec![("dup.yaml", None)], false),
            (vec![("p.yaml", Some(pool("p", 3)))], false),
            // A replica's name taken by a Session.
            (vec![("p0.yaml", Some(session("p-0", "/bin/true")))], false),
            (vec![("p0.yaml", None)], false),
            (vec![("bad.yaml", Some("kind: [".into()))], false),
            (vec![("bad.yaml", Some(session("bad", "/bin/true")))], false),
            (
                vec![
                    ("e.yaml", None),
                    ("f.yaml", Some(session("f", "/bin/true"))),
                ],
                true,
            ),
            // A session moving to another file.
            (
                vec![
                    ("f.yaml", None),
                    ("g.yaml", Some(session("f", "/bin/true"))),
                ],
                false,
            ),
        ];
        for (i, (changes, patchable)) in steps.into_iter().enumerate() {
            let mut paths = BTreeSet::new();
            for (f, text) in changes {
                match text {
                    Some(t) => write(f, &t),
                    None => std::fs::remove_file(dir.join(f)).expect("remove"),
                }
                paths.insert(dir.join(f));
            }
            match live.reload(&dir, &paths, now, true) {
                Reloaded::Unchanged => panic!("step {i}: a change went unseen"),
                Reloaded::Whole(d) => {
                    assert!(!patchable, "step {i}: the patch should have applied");
                    desired = d;
                }
                Reloaded::Sessions { removed, upserted } => {
                    for n in removed {
                        desired.sessions.remove(&n);
                    }
                    for d in upserted {
                        desired.sessions.insert(d.name.clone(), d);
                    }
                }
            }
            let mut fresh = Catalog::default();
            let whole = fresh.rescan(&dir, now).expect("fresh read");
            assert_eq!(
                summary(&live, &desired),
                summary(&fresh, &whole),
                "step {i}"
            );
        }
    }

    /// Applies what a reload or resync found to `desired`.
    fn apply(desired: &mut Desired, r: Reloaded) -> bool {
        match r {
            Reloaded::Unchanged => return false,
            Reloaded::Whole(d) => *desired = d,
            Reloaded::Sessions { removed, upserted } => {
                for n in removed {
                    desired.sessions.remove(&n);
                }
                for d in upserted {
                    desired.sessions.insert(d.name.clone(), d);
                }
            }
        }
        true
    }

    /// A resync while the watch is healthy stats a slice of the files (each
    /// one within `STAT_ROUNDS` resyncs) and reads none of them again, yet
    /// finds at once a file created, deleted, renamed or replaced behind the
    /// watch's back, and within `STAT_ROUNDS` resyncs one rewritten in place;
    /// what it builds is what a whole listing builds.
    #[test]
    fn a_resync_stats_a_slice_and_still_finds_what_the_watch_missed() {
        // The folder's last change just now (its names are listed at each
        // resync), and long settled (they are listed once in STAT_ROUNDS).
        for settled in [false, true] {
            resync_finds_what_the_watch_missed(settled);
        }
    }

    fn resync_finds_what_the_watch_missed(settled: bool) {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = std::fs::canonicalize(tmp.path()).expect("canonical");
        let now = if settled {
            Utc::now() + chrono::Duration::seconds(10)
        } else {
            Utc::now()
        };
        let write = |f: &str, text: &str| std::fs::write(dir.join(f), text).expect("write");
        let files = 60u64;
        for i in 0..files {
            write(
                &format!("s{i:02}.yaml"),
                &session(&format!("s{i:02}"), "/bin/true"),
            );
        }
        let mut live = Catalog::default();
        let mut desired = live.rescan(&dir, now).expect("first read");
        assert_eq!(live.stats, files, "a whole listing stats every file");
        let none = BTreeSet::new();
        let (reads, listings) = (live.reads, live.listings);
        let mut per_round = Vec::new();
        for _ in 0..STAT_ROUNDS {
            let before = live.stats;
            assert!(matches!(
                live.resync(&dir, &none, now, true),
                Reloaded::Unchanged
            ));
            per_round.push(live.stats - before);
        }
        assert_eq!(
            per_round.iter().sum::<u64>(),
            files,
            "each file stat'ed once in {STAT_ROUNDS} resyncs: {per_round:?}"
        );
        assert!(
            per_round.iter().all(|n| *n < files / 2),
            "a slice, not every file: {per_round:?}"
        );
        assert_eq!(live.reads, reads, "nothing read again");
        let listed = live.listings - listings;
        if settled {
            assert!(
                listed <= 2,
                "a settled folder's names listed once in {STAT_ROUNDS} resyncs, not {listed} times"
            );
        } else {
            assert_eq!(listed, STAT_ROUNDS, "names listed at each resync");
        }

        let same_as_fresh = |live: &Catalog, desired: &Desired, what: &str| {
            let mut fresh = Catalog::default();
            let whole = fresh.rescan(&dir, now).expect("fresh read");
            assert_eq!(summary(live, desired), summary(&fresh, &whole), "{what}");
        };
        // Found by the next resync.
        type Change<'a> = (&'a str, Box<dyn Fn() + 'a>);
        let at_once: Vec<Change> = vec![
            (
                "created",
                Box::new(|| write("new.yaml", &session("new", "/bin/true"))),
            ),
            (
                "deleted",
                Box::new(|| std::fs::remove_file(dir.join("s03.yaml")).expect("rm")),
            ),
            (
                "renamed",
                Box::new(|| {
                    std::fs::rename(dir.join("s04.yaml"), dir.join("moved.yaml")).expect("mv")
                }),
            ),
            (
                // An atomic save: a new inode, the same size.
                "replaced",
                Box::new(|| {
                    write(".tmp", &session("s06", "/bin/echo"));
                    std::fs::rename(dir.join(".tmp"), dir.join("s06.yaml")).expect("mv");
                }),
            ),
        ];
        for (what, change) in at_once {
            change();
            let r = live.resync(&dir, &none, now, true);
            assert!(apply(&mut desired, r), "{what}: found by the next resync");
            same_as_fresh(&live, &desired, what);
        }
        // Rewritten in place: the same inode, which only a stat tells.
        let ino = |f: &str| std::fs::metadata(dir.join(f)).expect("stat").ino();
        let before = ino("s07.yaml");
        std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(dir.join("s07.yaml"))
            .and_then(|mut f| {
                std::io::Write::write_all(&mut f, session("s07", "/bin/false").as_bytes())
            })
            .expect("rewrite");
        assert_eq!(ino("s07.yaml"), before, "rewritten in place");
        let found = (0..STAT_ROUNDS).any(|_| {
            let r = live.resync(&dir, &none, now, true);
            apply(&mut desired, r)
        });
        assert!(found, "found within {STAT_ROUNDS} resyncs");
        same_as_fresh(&live, &desired, "rewritten in place");
    }

    /// The sweep is thin while the watch is healthy: a settled folder's
    /// resyncs stat about one file in [`STAT_ROUNDS`] (under 5 % of them
    /// on average), and list its names about once in as many.
    #[test]
    fn a_settled_folders_resyncs_stat_a_thin_slice() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = std::fs::canonicalize(tmp.path()).expect("canonical");
        let files = 300u64;
        for i in 0..files {
            std::fs::write(
                dir.join(format!("s{i:03}.yaml")),
                session(&format!("s{i:03}"), "/bin/true"),
            )
            .expect("write");
        }
        let now = Utc::now() + chrono::Duration::seconds(10);
        let mut c = Catalog::default();
        c.rescan(&dir, now).expect("first read");
        let none = BTreeSet::new();
        let (stats, listings) = (c.stats, c.listings);
        let rounds = 20u64;
        for _ in 0..rounds {
            assert!(matches!(
                c.resync(&dir, &none, now, true),
                Reloaded::Unchanged
            ));
        }
        let stated = c.stats - stats;
        assert!(
            stated * 20 <= files * rounds,
            "{stated} stats in {rounds} resyncs of {files} files"
        );
        assert!(
            c.listings - listings <= 2,
            "names listed {} times",
            c.listings - listings
        );
    }

    /// A folder replaced since the first listing is one the watch does not
    /// watch: each resync stats every file there.
    #[test]
    fn a_resync_of_a_replaced_folder_stats_every_file() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = std::fs::canonicalize(tmp.path())
            .expect("canonical")
            .join("m");
        std::fs::create_dir(&dir).expect("mkdir");
        for i in 0..12 {
            std::fs::write(
                dir.join(format!("s{i}.yaml")),
                session(&format!("s{i}"), "/bin/true"),
            )
            .expect("write");
        }
        let now = Utc::now();
        let mut c = Catalog::default();
        c.rescan(&dir, now).expect("first read");
        let none = BTreeSet::new();
        let before = c.stats;
        let _ = c.resync(&dir, &none, now, true);
        assert!(
            c.stats - before < 12,
            "a slice while the folder is the same"
        );
        std::fs::rename(&dir, dir.with_file_name("old")).expect("mv");
        std::fs::create_dir(&dir).expect("mkdir");
        for i in 0..12 {
            std::fs::rename(
                dir.with_file_name("old").join(format!("s{i}.yaml")),
                dir.join(format!("s{i}.yaml")),
            )
            .expect("mv");
        }
        for _ in 0..2 {
            let before = c.stats;
            let _ = c.resync(&dir, &none, now, true);
            assert_eq!(c.stats - before, 12, "every file stat'ed");
        }
    }
}
