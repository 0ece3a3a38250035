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
    if let Some(fd) = resolve_at_once(path) {
        return Ok(fd);
    }
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

/// Set once the kernel has said it has no `openat2` (before Linux 5.6, or a
/// seccomp filter that answers `ENOSYS`): the walk alone serves from then on.
static NO_OPENAT2: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// [`walk`]'s fast path: the whole path in one `openat2` with
/// `RESOLVE_NO_SYMLINKS`, which refuses a link in any component as the walk
/// does (and resolves the path atomically), in one system call instead of
/// an open and a close per component. `None` on any failure: the walk then
/// runs and creates what is missing, or names the component at fault, so
/// errors read as they always did.
fn resolve_at_once(path: &Path) -> Option<OwnedFd> {
    use nix::fcntl::{openat2, OpenHow, ResolveFlag};
    use std::sync::atomic::Ordering;
    if NO_OPENAT2.load(Ordering::Relaxed) {
        return None;
    }
    let how = OpenHow::new()
        .flags(dir_flags())
        .resolve(ResolveFlag::RESOLVE_NO_SYMLINKS);
    match openat2(AT_FDCWD, path, how) {
        Ok(fd) => Some(fd),
        Err(Errno::ENOSYS) => {
            NO_OPENAT2.store(true, Ordering::Relaxed);
            None
        }
        Err(_) => None,
    }
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
        super::keeper::crash_point("status-mid-write");
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
    open_append_in(&dir, name, path)
}

/// [`open_append`] of `name` in the folder `dir` already opened (`path`
/// names the file in errors): a session's two logs share one walk of
/// their folder, which is six opens on the keeper's spawn path.
pub fn open_append_in(dir: &OwnedFd, name: &OsStr, path: &Path) -> io::Result<std::fs::File> {
    let fd = open_in(
        dir,
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

/// A temporary file younger than this may still be in the middle of its
/// write (the keeper outlives controllers and writes exit records at any
/// time), so it is left alone unless its writer is known to be dead.
pub const STALE_TEMPORARY_AGE: std::time::Duration = std::time::Duration::from_secs(60);

/// Whether `file_name` is a temporary file sessionlet writes on its way to a
/// rename, and the pid of its writer when the name carries one:
/// `.NAME.tmp-PID` ([`write_atomic`], and the keeper's records) or
/// `PID.json.tmp` (the records of an older keeper).
fn temporary_writer(file_name: &str) -> Option<Option<i32>> {
    if let Some(rest) = file_name.strip_prefix('.') {
        let (stem, pid) = rest.rsplit_once(".tmp-")?;
        if stem.is_empty() || pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        return Some(pid.parse().ok());
    }
    let stem = file_name.strip_suffix(".json.tmp")?;
    (!stem.is_empty() && stem.bytes().all(|b| b.is_ascii_digit())).then_some(None)
}

/// Whether a process with `pid` exists (a zombie counts: it may not have
/// been reaped yet, but it writes nothing more).
fn process_exists(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    !matches!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
        Err(nix::errno::Errno::ESRCH)
    )
}

/// Removes the temporary files an interrupted write left in `dir` (not
/// recursive): `.NAME.tmp-PID` whose writer is gone (or which is older than
/// [`STALE_TEMPORARY_AGE`]), and `PID.json.tmp` older than that age. Only
/// regular files are removed, never followed links. Returns how many were
/// removed; an unreadable folder removes nothing.
pub fn remove_stale_temporaries(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let own = i32::try_from(std::process::id()).unwrap_or(0);
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(writer) = name.to_str().and_then(temporary_writer) else {
            continue;
        };
        // The entry itself, not what a link points to.
        let Ok(meta) = std::fs::symlink_metadata(entry.path()) else {
            continue;
        };
        if !meta.file_type().is_file() {
            continue;
        }
        let old = meta
            .modified()
            .ok()
            .and_then(|m| m.elapsed().ok())
            .is_some_and(|age| age >= STALE_TEMPORARY_AGE);
        let writer_gone = writer.is_some_and(|pid| pid != own && !process_exists(pid));
        if (old || writer_gone) && std::fs::remove_file(entry.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// Removes stale temporaries (see [`remove_stale_temporaries`]) from every
/// folder sessionlet writes under a status directory: the folder itself,
/// `.sessionlet/`, `.sessionlet/exits/`, and each `*.crashes/` and
/// `*.logs/` folder (with the per-session folders of shared logs).
pub fn sweep_status_dir(status_dir: &Path) -> usize {
    let control = status_dir.join(".sessionlet");
    let mut dirs = vec![status_dir.to_path_buf(), control.join("exits"), control];
    if let Ok(entries) = std::fs::read_dir(status_dir) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
            if !is_dir || name.starts_with('.') {
                continue;
            }
            if name.ends_with(".crashes") {
                dirs.push(entry.path());
            } else if name.ends_with(".logs") {
                if let Ok(inner) = std::fs::read_dir(entry.path()) {
                    dirs.extend(
                        inner
                            .flatten()
                            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                            .map(|e| e.path()),
                    );
                }
                dirs.push(entry.path());
            }
        }
    }
    dirs.iter().map(|d| remove_stale_temporaries(d)).sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn temporary_names_are_recognised_strictly() {
        assert_eq!(
            temporary_writer(".web.status.yaml.tmp-123"),
            Some(Some(123))
        );
        assert_eq!(temporary_writer("77.json.tmp"), Some(None));
        for not in [
            "web.status.yaml",
            ".web.status.yaml",
            ".web.tmp-",
            ".web.tmp-12x",
            ".tmp-12",
            "x.json.tmp",
            ".json.tmp",
            "77.json",
            "web.yaml",
        ] {
            assert_eq!(temporary_writer(not), None, "{not}");
        }
    }

    #[test]
    fn stale_temporaries_go_and_everything_else_stays() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        // A pid that cannot be alive: above the kernel's pid_max limit.
        let dead = ".web.status.yaml.tmp-4194305";
        let own = format!(".mine.status.yaml.tmp-{}", std::process::id());
        for name in [
            dead,
            own.as_str(),
            "web.status.yaml",
            "5.json.tmp",
            "5.json",
        ] {
            std::fs::write(d.join(name), "x").unwrap();
        }
        // A link named like a temporary is not a regular file: left alone.
        std::os::unix::fs::symlink("web.status.yaml", d.join(".l.tmp-4194306")).unwrap();
        assert_eq!(remove_stale_temporaries(d), 1);
        assert!(!d.join(dead).exists());
        // Fresh and without a dead writer: possibly still being written.
        assert!(d.join(&own).exists() && d.join("5.json.tmp").exists());
        assert!(d.join("web.status.yaml").exists() && d.join("5.json").exists());
        assert!(d.join(".l.tmp-4194306").symlink_metadata().is_ok());
        assert_eq!(remove_stale_temporaries(&d.join("missing")), 0);
    }

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
    fn the_one_call_resolution_refuses_a_link_in_any_component() {
        let tmp = tempfile::tempdir().unwrap();
        let real = tmp.path().join("real");
        std::fs::create_dir_all(real.join("inner")).unwrap();
        std::os::unix::fs::symlink(&real, tmp.path().join("link")).unwrap();
        assert!(resolve_at_once(&tmp.path().join("link/inner")).is_none());
        assert!(resolve_at_once(&tmp.path().join("link")).is_none());
        match resolve_at_once(&real.join("inner")) {
            Some(fd) => {
                let st = fstat(&fd).unwrap();
                let kind = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
                assert_eq!(kind, SFlag::S_IFDIR);
            }
            None => eprintln!("SKIPPED: this kernel has no openat2; the walk serves alone"),
        }
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
