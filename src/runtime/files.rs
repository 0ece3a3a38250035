//! Crash-safe file writes and the private file modes sessionlet uses.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

/// Mode of files sessionlet writes: owner read/write, group read.
pub const FILE_MODE: u32 = 0o640;
/// Mode of folders sessionlet creates.
pub const DIR_MODE: u32 = 0o750;

/// Writes `bytes` to `path` atomically: a temporary file in the same folder,
/// fsync, rename. A reader sees the old content or the new, never a part.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // A dot name is never taken for a manifest or a status by readers.
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(FILE_MODE)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_data()?;
        super::keeper::crash_point("status-mid-write");
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Creates a folder (and its parents) with [`DIR_MODE`].
pub fn create_dir(path: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(path)
}

/// Opens a log file for appending, creating it with [`FILE_MODE`].
pub fn open_append(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(FILE_MODE)
        .open(path)
}

/// A temporary file younger than this may still be in the middle of its
/// write (the keeper outlives controllers and writes exit records at any
/// time), so it is left alone unless its writer is known to be dead.
pub const STALE_TEMPORARY_AGE: std::time::Duration = std::time::Duration::from_secs(60);

/// Whether `file_name` is a temporary file sessionlet writes on its way to a
/// rename, and the pid of its writer when the name carries one:
/// `.NAME.tmp-PID` ([`write_atomic`]) or `PID.json.tmp` (the keeper's exit
/// records).
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
}
