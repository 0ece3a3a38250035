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
