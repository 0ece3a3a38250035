//! Crash-safe file writes that never follow a symbolic link, and the private
//! file modes sessionlet uses.
//!
//! Everything sessionlet writes goes under the status folder, which another
//! local user may have been able to write at some point (a shared folder, a
//! folder that was open before StrictModes refused it). A symbolic link
//! planted there must never redirect a write of the controller (often root)
//! to another file. So every path is opened one component at a time,
//! relative to the directory handle above it, with `O_NOFOLLOW`
//! (`O_DIRECTORY|O_NOFOLLOW` for folders): a link anywhere in the path is an
//! error, never followed. The controller's paths are canonical (the folders
//! given on the command line are resolved once at start), so a link in one
//! of them can only have been planted.
//!
//! - [`write_atomic`] writes a temporary file created with `O_EXCL` and
//!   renames it over the target: a link at the target is replaced, never
//!   written through.
//! - [`open_append`] refuses a link, a non-regular file, a file with more
//!   than one name (a hard link to another file) and a file another user owns.
//! - [`create_dir`] refuses a linked component.

use std::ffi::OsStr;
use std::io::{self, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat, renameat, AtFlags, OFlag, AT_FDCWD};
use nix::sys::stat::{fstat, fstatat, mkdirat, Mode, SFlag};
use nix::unistd::{unlinkat, UnlinkatFlags};

/// Mode of files sessionlet writes: owner read/write, group read.
pub const FILE_MODE: u32 = 0o640;
/// Mode of folders sessionlet creates.
pub const DIR_MODE: u32 = 0o750;

/// Flags of a directory handle used only to open what is inside it.
fn dir_flags() -> OFlag {
    OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC
}

/// The error for `path`, which could not be opened through `dir` as `name`:
/// says so plainly when it is a symbolic link.
fn explain(dir: impl AsFd, name: &OsStr, path: &Path, e: Errno) -> io::Error {
    if matches!(e, Errno::ELOOP | Errno::ENOTDIR | Errno::EMLINK) {
        if let Ok(st) = fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            let kind = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
            if kind == SFlag::S_IFLNK {
                return io::Error::other(format!(
                    "{} is a symbolic link; sessionlet never follows a link where it writes \
                     (remove it: rm {})",
                    path.display(),
                    path.display()
                ));
            }
        }
    }
    // The kind is kept: callers test for `NotFound`.
    let plain = io::Error::from(e);
    io::Error::new(plain.kind(), format!("{}: {plain}", path.display()))
}

/// Opens the folder `path`, each component relative to the one above it and
/// none followed if it is a symbolic link. With `create`, missing folders are
/// made with [`DIR_MODE`]. The handle is `O_PATH`: good for `openat`,
/// `mkdirat`, `renameat`, `unlinkat` and `fstat`, not for listing.
fn walk(path: &Path, create: bool) -> io::Result<OwnedFd> {
    let start = if path.is_absolute() { "/" } else { "." };
    let mut so_far = PathBuf::from(start);
    let mut cur = openat(AT_FDCWD, start, dir_flags(), Mode::empty())
        .map_err(|e| explain(AT_FDCWD, OsStr::new(start), &so_far, e))?;
    for component in path.components() {
        let name: &OsStr = match component {
            Component::RootDir | Component::CurDir | Component::Prefix(_) => continue,
            Component::ParentDir => OsStr::new(".."),
            Component::Normal(n) => n,
        };
        so_far.push(name);
        let next = match openat(&cur, name, dir_flags(), Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) if create => {
                match mkdirat(&cur, name, Mode::from_bits_truncate(DIR_MODE)) {
                    Ok(()) | Err(Errno::EEXIST) => {}
                    Err(e) => return Err(explain(&cur, name, &so_far, e)),
                }
                openat(&cur, name, dir_flags(), Mode::empty())
                    .map_err(|e| explain(&cur, name, &so_far, e))?
            }
            Err(e) => return Err(explain(&cur, name, &so_far, e)),
        };
        cur = next;
    }
    Ok(cur)
}

/// Opens the folder `path` without following a symbolic link in any of its
/// components (an `O_PATH` handle, for the `*at` calls).
pub fn open_dir(path: &Path) -> io::Result<OwnedFd> {
    walk(path, false)
}

/// Opens the folder `path` for listing, without following a symbolic link
/// in any of its components.
pub fn open_dir_for_listing(path: &Path) -> io::Result<OwnedFd> {
    let (parent, name) = split(path)?;
    let dir = open_dir(parent)?;
    openat(
        &dir,
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| explain(&dir, name, path, e))
}

/// The folder and the file name of `path`.
pub fn split(path: &Path) -> io::Result<(&Path, &OsStr)> {
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} does not name a file", path.display()),
        )
    })?;
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    Ok((parent, name))
}

/// Opens `name` in the folder `dir` with `flags | O_NOFOLLOW | O_CLOEXEC`
/// (creating it with [`FILE_MODE`] when `flags` has `O_CREAT`); `path` is
/// the full path, for messages.
pub fn open_in(dir: &OwnedFd, name: &OsStr, path: &Path, flags: OFlag) -> io::Result<OwnedFd> {
    openat(
        dir,
        name,
        flags | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(FILE_MODE),
    )
    .map_err(|e| explain(dir, name, path, e))
}

/// Creates `name` in `dir` for writing; it must not exist (`O_EXCL`: never a
/// link, never someone else's file). A leftover of ours is removed first.
pub fn create_new(dir: &OwnedFd, name: &OsStr, path: &Path) -> io::Result<std::fs::File> {
    let flags = OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL;
    match open_in(dir, name, path, flags) {
        Ok(fd) => Ok(fd.into()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            unlinkat(dir, name, UnlinkatFlags::NoRemoveDir).map_err(io::Error::from)?;
            Ok(open_in(dir, name, path, flags)?.into())
        }
        Err(e) => Err(e),
    }
}

/// Writes `bytes` to `path` atomically: a temporary file in the same folder,
/// fsync, rename. A reader sees the old content or the new, never a part.
///
/// No symbolic link in the folder's path is followed; a link at `path`
/// itself is replaced by the new file (the rename never writes through it).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_atomic_with(path, bytes, true)
}

/// [`write_atomic`], optionally without the fsync (for records that must
/// outlive the controller, not the machine).
pub fn write_atomic_with(path: &Path, bytes: &[u8], sync: bool) -> io::Result<()> {
    let (parent, name) = split(path)?;
    let dir = open_dir(parent)?;
    // A dot name is never taken for a manifest or a status by readers.
    let tmp = format!(".{}.tmp-{}", name.to_string_lossy(), std::process::id());
    let tmp = OsStr::new(&tmp);
    let result = (|| {
        let mut f = create_new(&dir, tmp, &parent.join(tmp))?;
        f.write_all(bytes)?;
        if sync {
            f.sync_data()?;
        }
        renameat(&dir, tmp, &dir, name).map_err(io::Error::from)
    })();
    if result.is_err() {
        let _ = unlinkat(&dir, tmp, UnlinkatFlags::NoRemoveDir);
    }
    result
}

/// Creates a folder (and its parents) with [`DIR_MODE`], refusing a symbolic
/// link in any component.
pub fn create_dir(path: &Path) -> io::Result<()> {
    walk(path, true).map(drop)
}

/// Creates a folder the operator named on the command line (and its parents)
/// with [`DIR_MODE`], following links in it as the operator meant them. Only
/// for paths typed by the operator; everything else uses [`create_dir`].
pub fn create_operator_dir(path: &Path) -> io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(path)
}

/// Checks that an opened file is one sessionlet may write to: a regular file
/// with one name, owned by the controller's user.
pub fn check_own_regular(fd: impl AsFd, path: &Path) -> io::Result<nix::sys::stat::FileStat> {
    let st = fstat(fd).map_err(io::Error::from)?;
    let kind = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
    let refuse = |why: String| {
        Err(io::Error::other(format!(
            "{} {why}; sessionlet writes only regular files of its own (remove it)",
            path.display()
        )))
    };
    if kind != SFlag::S_IFREG {
        return refuse("is not a regular file".into());
    }
    if st.st_nlink != 1 {
        return refuse(format!(
            "has {} names (a hard link to another file)",
            st.st_nlink
        ));
    }
    let me = nix::unistd::geteuid().as_raw();
    if st.st_uid != me {
        return refuse(format!("is owned by uid {}, not {me}", st.st_uid));
    }
    Ok(st)
}

/// Opens a log file for appending, creating it with [`FILE_MODE`].
///
/// Refuses a symbolic link at `path` or in its folders, a FIFO or device
/// (opened without blocking, then checked on the handle), a file with more
/// than one name and a file another user owns.
pub fn open_append(path: &Path) -> io::Result<std::fs::File> {
    let (parent, name) = split(path)?;
    let dir = open_dir(parent)?;
    let fd = open_in(
        &dir,
        name,
        path,
        OFlag::O_WRONLY | OFlag::O_APPEND | OFlag::O_CREAT | OFlag::O_NONBLOCK | OFlag::O_NOCTTY,
    )?;
    check_own_regular(&fd, path)?;
    // Back to blocking writes (no effect on regular files, but the child inherits it).
    nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_SETFL(OFlag::O_APPEND))
        .map_err(io::Error::from)?;
    Ok(fd.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn atomic_writes_replace_content_and_keep_private_modes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.status.yaml");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, FILE_MODE);
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temporary file left"
        );
    }

    /// A folder with a file `secret` outside it and links pointing at it.
    fn planted() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let tmp = tempfile::tempdir().unwrap();
        let secret = tmp.path().join("secret");
        std::fs::write(&secret, b"root only\n").unwrap();
        let status = tmp.path().join("status");
        std::fs::create_dir(&status).unwrap();
        (tmp, status, secret)
    }

    #[test]
    fn an_atomic_write_replaces_a_link_at_the_target_and_never_writes_through_it() {
        let (_tmp, status, secret) = planted();
        let p = status.join("x.status.yaml");
        std::os::unix::fs::symlink(&secret, &p).unwrap();
        write_atomic(&p, b"status").unwrap();
        assert_eq!(std::fs::read(&secret).unwrap(), b"root only\n");
        assert!(!std::fs::symlink_metadata(&p).unwrap().is_symlink());
        assert_eq!(std::fs::read(&p).unwrap(), b"status");
    }

    #[test]
    fn a_link_at_the_temporary_name_is_never_written_through() {
        let (_tmp, status, secret) = planted();
        let p = status.join("x.status.yaml");
        let tmp = status.join(format!(".x.status.yaml.tmp-{}", std::process::id()));
        std::os::unix::fs::symlink(&secret, &tmp).unwrap();
        write_atomic(&p, b"status").unwrap();
        assert_eq!(std::fs::read(&secret).unwrap(), b"root only\n");
        assert_eq!(std::fs::read(&p).unwrap(), b"status");
    }

    #[test]
    fn a_linked_folder_in_the_path_is_refused_by_every_writer() {
        let (tmp, status, secret) = planted();
        let elsewhere = tmp.path().join("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();
        std::os::unix::fs::symlink(&elsewhere, status.join("x.logs")).unwrap();
        let p = status.join("x.logs/attempt-1.stdout.log");
        let e = open_append(&p).unwrap_err();
        assert!(e.to_string().contains("is a symbolic link"), "{e}");
        assert!(e.to_string().contains("x.logs"), "{e}");
        let e = write_atomic(&status.join("x.logs/charter.md"), b"x").unwrap_err();
        assert!(e.to_string().contains("is a symbolic link"), "{e}");
        let e = create_dir(&status.join("x.logs/sub")).unwrap_err();
        assert!(e.to_string().contains("is a symbolic link"), "{e}");
        assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);
        assert_eq!(std::fs::read(&secret).unwrap(), b"root only\n");
    }

    #[test]
    fn appending_refuses_a_link_a_fifo_and_a_hard_link() {
        let (_tmp, status, secret) = planted();
        let link = status.join("attempt-1.stdout.log");
        std::os::unix::fs::symlink(&secret, &link).unwrap();
        let e = open_append(&link).unwrap_err();
        assert!(e.to_string().contains("is a symbolic link"), "{e}");

        let fifo = status.join("attempt-2.stdout.log");
        nix::unistd::mkfifo(&fifo, Mode::from_bits_truncate(0o600)).unwrap();
        let e = open_append(&fifo).unwrap_err();
        // No reader: ENXIO without blocking; with one it would be "not a regular file".
        assert!(!e.to_string().is_empty());

        let hard = status.join("attempt-3.stdout.log");
        std::fs::hard_link(&secret, &hard).unwrap();
        let e = open_append(&hard).unwrap_err();
        assert!(e.to_string().contains("2 names"), "{e}");
        assert_eq!(std::fs::read(&secret).unwrap(), b"root only\n");
    }

    #[test]
    fn appending_creates_and_appends_to_a_regular_file() {
        let (_tmp, status, _secret) = planted();
        let p = status.join("a.logs/attempt-1.stdout.log");
        create_dir(p.parent().unwrap()).unwrap();
        open_append(&p).unwrap().write_all(b"one\n").unwrap();
        open_append(&p).unwrap().write_all(b"two\n").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"one\ntwo\n");
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode & !FILE_MODE, 0);
    }

    #[test]
    fn missing_folders_are_created_and_not_found_stays_not_found() {
        let (_tmp, status, _secret) = planted();
        create_dir(&status.join("a/b/c")).unwrap();
        assert!(status.join("a/b/c").is_dir());
        let e = write_atomic(&status.join("gone/x"), b"x").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound, "{e}");
    }
}
