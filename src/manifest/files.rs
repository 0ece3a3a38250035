//! Which files in a manifest directory are manifests.
//!
//! The directory is shared with sessionlet's own status files and with
//! whatever editors and deploy tools leave behind, so the rule is strict:
//! only `*.yaml` / `*.yml` directly in the directory, minus hidden files, the
//! status files sessionlet writes, and editor and backup files.

use std::io;
use std::path::{Path, PathBuf};

use super::Problem;

/// Manifests of one directory, and the entries refused with a reason.
#[derive(Debug, Clone, Default)]
pub struct Listing {
    /// Manifest files (`DIR/NAME`), sorted lexically by file name.
    pub manifests: Vec<PathBuf>,
    /// Each manifest's metadata (of a link's target), in the order of
    /// `manifests`, read while listing: the catalog's fingerprint needs no
    /// second stat.
    pub metadata: Vec<std::fs::Metadata>,
    /// Entries named like manifests that cannot be used: symbolic links
    /// resolving outside the directory, broken links, non-regular files.
    pub refused: Vec<Problem>,
}

/// Suffixes of files sessionlet writes beside manifests.
const STATUS_SUFFIXES: &[&str] = &[".status.yaml", ".status.yml"];
/// Suffixes of manifests.
const MANIFEST_SUFFIXES: &[&str] = &[".yaml", ".yml"];
/// Suffixes of editor swap and backup files.
const BACKUP_SUFFIXES: &[&str] = &["~", ".swp", ".bak", ".orig"];

/// Whether a directory entry's file name names a manifest.
///
/// Yes for `*.yaml` and `*.yml`; no for hidden files (`.x.yaml`, also
/// Kubernetes' `..data`), status files (`*.status.yaml`), editor and backup
/// files (`*~`, `*.swp`, `*.bak`, `*.orig`, Emacs' `#x#`, Vim's probe file
/// `4913`) and everything else.
pub fn is_manifest_name(file_name: &str) -> bool {
    if file_name.starts_with('.') || is_editor_or_backup(file_name) {
        return false;
    }
    if STATUS_SUFFIXES.iter().any(|s| file_name.ends_with(s)) {
        return false;
    }
    MANIFEST_SUFFIXES
        .iter()
        .any(|s| file_name.len() > s.len() && file_name.ends_with(s))
}

/// Editor and backup files. Most of them do not end in `.yaml` anyway, but
/// spelling them out keeps the rule obvious and safe against new suffixes.
fn is_editor_or_backup(file_name: &str) -> bool {
    BACKUP_SUFFIXES.iter().any(|s| file_name.ends_with(s))
        || (file_name.len() >= 2 && file_name.starts_with('#') && file_name.ends_with('#'))
        || file_name == "4913"
}

/// The file name without `.yaml` / `.yml`: the default `metadata.name`.
///
/// A name with neither suffix is returned whole.
pub fn manifest_stem(file_name: &str) -> &str {
    MANIFEST_SUFFIXES
        .iter()
        .find_map(|s| file_name.strip_suffix(s))
        .unwrap_or(file_name)
}

/// Lists the manifests directly in `dir` (not recursive).
///
/// Symbolic links are followed, because Kubernetes ConfigMap volumes are
/// links (`x.yaml -> ..data/x.yaml`), but a link resolving outside `dir` is
/// refused: a manifest directory must not become a way to read arbitrary
/// files. Directories are skipped. Fails only when `dir` itself cannot be
/// read.
pub fn list_manifests(dir: &Path) -> io::Result<Listing> {
    let canonical_dir = fs_err::canonicalize(dir)?;
    let mut listing = Listing::default();
    let mut found: Vec<(String, PathBuf, std::fs::Metadata)> = Vec::new();
    for entry in fs_err::read_dir(dir)? {
        let entry = entry?;
        let file_name = entry.file_name();
        // A name that is not UTF-8 can never yield a valid metadata.name.
        let Ok(name) = file_name.into_string() else {
            continue;
        };
        if !is_manifest_name(&name) {
            continue;
        }
        let path = dir.join(&name);
        let file_type = entry.file_type()?;
        match inspect_entry(&path, &canonical_dir, file_type.is_symlink(), || {
            entry.metadata()
        })? {
            Inspected::Manifest(metadata) => found.push((name, path, metadata)),
            Inspected::Refused(p) => listing.refused.push(p),
            Inspected::Skipped => {}
        }
    }
    // By file name (the names are unique in one folder).
    found.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    listing.manifests.reserve(found.len());
    listing.metadata.reserve(found.len());
    for (_, path, metadata) in found {
        listing.manifests.push(path);
        listing.metadata.push(metadata);
    }
    listing.refused.sort();
    Ok(listing)
}

/// What one path named like a manifest turned out to be.
#[derive(Debug)]
pub enum Inspected {
    /// A manifest (a regular file, or a link to one inside the directory), with its metadata.
    Manifest(std::fs::Metadata),
    /// Named like a manifest but unusable, and why.
    Refused(Problem),
    /// Not there, or a directory: nothing to read.
    Skipped,
}

/// Looks at one path of the directory the way [`list_manifests`] does
/// (without listing the rest): what a watched change of that one file needs.
/// `canonical_dir` is the directory's canonical path.
pub fn inspect(path: &Path, canonical_dir: &Path) -> Inspected {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return Inspected::Skipped;
    };
    if !is_manifest_name(name) {
        return Inspected::Skipped;
    }
    let Ok(link) = std::fs::symlink_metadata(path) else {
        return Inspected::Skipped; // gone
    };
    match inspect_entry(path, canonical_dir, link.file_type().is_symlink(), || {
        Ok(link)
    }) {
        Ok(i) => i,
        Err(_) => Inspected::Skipped,
    }
}

fn inspect_entry(
    path: &Path,
    canonical_dir: &Path,
    is_symlink: bool,
    metadata: impl FnOnce() -> io::Result<std::fs::Metadata>,
) -> io::Result<Inspected> {
    let refuse =
        |message: String| Inspected::Refused(Problem::file_level(path.to_path_buf(), message));
    let metadata = if is_symlink {
        let target = match std::fs::canonicalize(path) {
            Ok(t) => t,
            Err(e) => return Ok(refuse(format!("cannot follow the symbolic link: {e}"))),
        };
        if !target.starts_with(canonical_dir) {
            return Ok(refuse(format!(
                "the symbolic link resolves to {}, outside the directory {}; \
                 only links to files inside the directory are followed",
                target.display(),
                canonical_dir.display()
            )));
        }
        match std::fs::metadata(&target) {
            Ok(m) => m,
            Err(e) => return Ok(refuse(format!("cannot read the link's target: {e}"))),
        }
    } else {
        metadata()?
    };
    if metadata.is_dir() {
        return Ok(Inspected::Skipped);
    }
    if !metadata.is_file() {
        // A FIFO or device would block or never end when read.
        return Ok(refuse(
            "not a regular file; a manifest must be a regular file or a link to one".into(),
        ));
    }
    Ok(Inspected::Manifest(metadata))
}

/// Why [`read_regular`] read nothing.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// Opening, inspecting or reading failed.
    #[error("cannot read the file: {0}")]
    Io(#[from] io::Error),
    /// A directory.
    #[error("is a directory, not a file")]
    Directory,
    /// A FIFO, socket or device: reading could block forever or never end.
    #[error("not a regular file (it is a {0}); only regular files (or links to one) are read")]
    NotRegular(&'static str),
    /// Longer than the limit.
    #[error("the file is larger than {0} bytes")]
    TooLarge(u64),
}

/// What kind of file a mode is, for messages.
fn file_kind(mode: nix::sys::stat::SFlag) -> &'static str {
    use nix::sys::stat::SFlag;
    match mode & SFlag::S_IFMT {
        SFlag::S_IFIFO => "FIFO",
        SFlag::S_IFSOCK => "socket",
        SFlag::S_IFCHR => "character device",
        SFlag::S_IFBLK => "block device",
        SFlag::S_IFDIR => "directory",
        SFlag::S_IFLNK => "symbolic link",
        _ => "special file",
    }
}

/// Reads a file that must be regular, at most `limit` bytes, without ever
/// blocking on what the path turns out to be.
///
/// The path is opened with `O_NONBLOCK` (a FIFO opens at once instead of
/// waiting for a writer) and `O_NOCTTY` (a terminal never becomes the
/// controller's), close-on-exec; the type is then checked with `fstat` on
/// the opened handle, so a FIFO renamed onto the name after a `stat` is still
/// caught. Symbolic links are followed: callers that must keep links inside a
/// folder check them first ([`list_manifests`]). At most `limit + 1` bytes are
/// read, enough to tell a file over the limit without holding all of it.
pub fn read_regular(path: &Path, limit: u64) -> Result<Vec<u8>, ReadError> {
    use std::io::Read;
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let file = std::fs::OpenOptions::new()
        .read(true)
        // std adds O_CLOEXEC itself.
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    let meta = file.metadata()?;
    if meta.is_dir() {
        return Err(ReadError::Directory);
    }
    if !meta.is_file() {
        return Err(ReadError::NotRegular(file_kind(
            nix::sys::stat::SFlag::from_bits_truncate(meta.mode()),
        )));
    }
    let mut bytes = Vec::with_capacity(meta.len().min(limit.saturating_add(1)) as usize);
    file.take(limit.saturating_add(1)).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(ReadError::TooLarge(limit));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reading_a_fifo_never_blocks_and_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("pipe.yaml");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        // No writer: a blocking open would wait forever.
        let e = read_regular(&fifo, 100).unwrap_err();
        assert_eq!(
            e.to_string(),
            "not a regular file (it is a FIFO); only regular files (or links to one) are read"
        );
        assert!(matches!(
            read_regular(dir.path(), 100),
            Err(ReadError::Directory)
        ));
        let file = dir.path().join("f.yaml");
        std::fs::write(&file, "12345").unwrap();
        assert_eq!(read_regular(&file, 5).unwrap(), b"12345");
        assert!(matches!(
            read_regular(&file, 4),
            Err(ReadError::TooLarge(4))
        ));
        let link = dir.path().join("link.yaml");
        std::os::unix::fs::symlink("f.yaml", &link).unwrap();
        assert_eq!(read_regular(&link, 5).unwrap(), b"12345");
        assert!(matches!(
            read_regular(&dir.path().join("missing"), 5),
            Err(ReadError::Io(_))
        ));
    }

    #[test]
    fn yaml_and_yml_files_are_manifests() {
        for name in ["a.yaml", "a.yml", "web-1.yaml", "My_Task.yaml", "a.b.yaml"] {
            assert!(is_manifest_name(name), "{name}");
        }
    }

    #[test]
    fn hidden_status_editor_and_other_files_are_not() {
        for name in [
            ".a.yaml",
            "..data",
            ".#a.yaml",
            "a.status.yaml",
            "a.status.yml",
            "a.yaml~",
            "a.yaml.swp",
            ".a.yaml.swp",
            "a.yaml.bak",
            "a.yaml.orig",
            "#a.yaml#",
            "4913",
            "a.json",
            "a.yaml.txt",
            "a.YAML",
            "yaml",
            ".yaml",
            "",
            "README.md",
        ] {
            assert!(!is_manifest_name(name), "{name}");
        }
    }

    #[test]
    fn stems_drop_the_extension_only() {
        assert_eq!(manifest_stem("web.yaml"), "web");
        assert_eq!(manifest_stem("web.yml"), "web");
        assert_eq!(manifest_stem("a.b.yaml"), "a.b");
        assert_eq!(manifest_stem("web"), "web");
    }

    #[test]
    fn listing_is_sorted_not_recursive_and_skips_non_manifests() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "b.yaml",
            "a.yml",
            "c.status.yaml",
            "notes.txt",
            ".hidden.yaml",
        ] {
            std::fs::write(dir.path().join(name), "x: 1\n").unwrap();
        }
        std::fs::create_dir(dir.path().join("sub.yaml")).unwrap();
        std::fs::write(dir.path().join("sub.yaml/inner.yaml"), "x: 1\n").unwrap();
        let listing = list_manifests(dir.path()).unwrap();
        let names: Vec<_> = listing
            .manifests
            .iter()
            .map(|p| p.file_name().unwrap().to_str().unwrap().to_string())
            .collect();
        assert_eq!(names, ["a.yml", "b.yaml"]);
        assert_eq!(listing.manifests[0], dir.path().join("a.yml"));
        assert!(listing.refused.is_empty());
    }

    #[test]
    fn configmap_style_links_inside_the_directory_are_followed() {
        // Kubernetes mounts ConfigMaps as x.yaml -> ..data/x.yaml, ..data -> ..2026_11_21/.
        let dir = tempfile::tempdir().unwrap();
        let versioned = dir.path().join("..2026_11_21_10_00_00.1");
        std::fs::create_dir(&versioned).unwrap();
        std::fs::write(versioned.join("job.yaml"), "x: 1\n").unwrap();
        std::os::unix::fs::symlink("..2026_11_21_10_00_00.1", dir.path().join("..data")).unwrap();
        std::os::unix::fs::symlink("..data/job.yaml", dir.path().join("job.yaml")).unwrap();
        let listing = list_manifests(dir.path()).unwrap();
        assert_eq!(listing.manifests, [dir.path().join("job.yaml")]);
        assert!(listing.refused.is_empty(), "{:?}", listing.refused);
    }

    #[test]
    fn links_resolving_outside_the_directory_are_refused() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret.yaml"), "x: 1\n").unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(
            outside.path().join("secret.yaml"),
            dir.path().join("evil.yaml"),
        )
        .unwrap();
        // A relative link climbing out is refused just the same.
        std::os::unix::fs::symlink("../../../etc/hostname", dir.path().join("up.yaml")).unwrap();
        std::os::unix::fs::symlink("missing.yaml", dir.path().join("broken.yaml")).unwrap();
        let listing = list_manifests(dir.path()).unwrap();
        assert!(listing.manifests.is_empty(), "{:?}", listing.manifests);
        let refused: Vec<_> = listing.refused.iter().map(|p| p.to_string()).collect();
        assert_eq!(refused.len(), 3, "{refused:?}");
        assert!(refused[0].contains("broken.yaml:1:1: error: cannot follow the symbolic link"));
        assert!(refused[1].contains("evil.yaml:1:1: error: the symbolic link resolves to"));
        assert!(refused[1].contains("outside the directory"));
        // /etc/hostname may not exist everywhere: then the link is broken instead.
        assert!(refused[2].contains("up.yaml:1:1: error:"), "{refused:?}");
    }

    #[test]
    fn a_missing_directory_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        assert!(list_manifests(&dir.path().join("nope")).is_err());
    }
}
