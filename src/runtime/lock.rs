//! The status directory's lock: one controller per status directory.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use nix::fcntl::{Flock, FlockArg};

use super::errors::StartError;

/// Held for the controller's life; the kernel releases it when the process dies.
pub struct Lock {
    _file: Flock<std::fs::File>,
}

impl Lock {
    /// Takes the lock in `.sessionlet/`, or explains who holds it.
    pub fn acquire(control_dir: &Path) -> Result<Lock, StartError> {
        let path = control_dir.join("lock");
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(super::files::FILE_MODE)
            .open(&path)
            .map_err(|source| StartError::LockFile {
                path: path.clone(),
                source,
            })?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(mut f) => {
                let _ = f.set_len(0);
                let _ = writeln!(f, "{}", std::process::id());
                Ok(Lock { _file: f })
            }
            Err((_, _)) => {
                let holder = std::fs::read_to_string(&path).unwrap_or_default();
                Err(StartError::Locked {
                    holder: holder.trim().to_string(),
                    dir: control_dir.parent().unwrap_or(control_dir).to_path_buf(),
                })
            }
        }
    }
}

/// Whether a controller holds the lock of `control_dir` now, read without
/// touching the lock (taking it, even briefly, could make a controller
/// starting at that moment fail): the kernel's table of flock locks
/// (`/proc/locks`) is searched for the lock file's inode. `None` when that
/// cannot be told (no `/proc/locks`).
pub fn is_held(control_dir: &Path) -> Option<bool> {
    holders(control_dir).map(|pids| !pids.is_empty())
}

/// The pids the kernel names as holding the lock of `control_dir` now
/// (`/proc/locks`, read without touching the lock); empty when it is free,
/// `None` when that cannot be told.
pub fn holders(control_dir: &Path) -> Option<Vec<u32>> {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::metadata(control_dir.join("lock")) else {
        return Some(Vec::new()); // no controller ever ran here
    };
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    Some(holders_in(&locks, meta.ino()))
}

/// The holders of the flock on inode `ino` in a `/proc/locks` text.
fn holders_in(locks: &str, ino: u64) -> Vec<u32> {
    let inode = format!(":{ino}");
    locks
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // `1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF`; blocked waiters start with `->`.
            (fields.get(1) == Some(&"FLOCK") && fields.get(5).is_some_and(|f| f.ends_with(&inode)))
                .then(|| fields.get(4).and_then(|p| p.parse().ok()))
                .flatten()
        })
        .collect()
}

/// The pid the running controller wrote in `.sessionlet/lock`, when the
/// kernel confirms that this process holds the lock (a stale or forged
/// file names nobody).
pub fn controller_pid(control_dir: &Path) -> Option<u32> {
    let written: u32 = std::fs::read_to_string(control_dir.join("lock"))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    holders(control_dir)?.contains(&written).then_some(written)
}

#[cfg(test)]
mod tests {
    use super::holders_in;

    #[test]
    fn holders_are_read_from_proc_locks_by_inode() {
        let locks = "1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF\n\
                     2: POSIX  ADVISORY  WRITE 99 08:01:5678 0 EOF\n\
                     3: FLOCK  ADVISORY  WRITE 777 08:01:15678 0 EOF\n\
                     3: -> FLOCK  ADVISORY  WRITE 55 08:01:5678 0 EOF\n";
        assert_eq!(holders_in(locks, 5678), vec![1234]);
        assert_eq!(holders_in(locks, 15678), vec![777]);
        assert!(holders_in(locks, 1).is_empty());
    }
}
