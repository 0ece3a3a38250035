//! The status directory's lock: one controller per status directory.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use nix::fcntl::{Flock, FlockArg};

/// Held for the controller's life; the kernel releases it when the process dies.
pub struct Lock {
    _file: Flock<std::fs::File>,
}

impl Lock {
    /// Takes the lock in `.sessionlet/`, or explains who holds it.
    pub fn acquire(control_dir: &Path) -> anyhow::Result<Lock> {
        let path = control_dir.join("lock");
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(super::files::FILE_MODE)
            .open(&path)
            .map_err(|e| anyhow::anyhow!("cannot open {}: {e}", path.display()))?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(mut f) => {
                let _ = f.set_len(0);
                let _ = writeln!(f, "{}", std::process::id());
                Ok(Lock { _file: f })
            }
            Err((_, _)) => {
                let holder = std::fs::read_to_string(&path).unwrap_or_default();
                anyhow::bail!(
                    "another sessionlet controller (pid {}) already manages the status directory {}; \
                     stop it first, or give this one another --status-dir",
                    holder.trim(),
                    control_dir.parent().unwrap_or(control_dir).display()
                )
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
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::metadata(control_dir.join("lock")) else {
        return Some(false); // no controller ever ran here
    };
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    let inode = format!(":{}", meta.ino());
    Some(locks.lines().any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // `1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF`; blocked waiters start with `->`.
        fields.get(1) == Some(&"FLOCK") && fields.get(5).is_some_and(|f| f.ends_with(&inode))
    }))
}
