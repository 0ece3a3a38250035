//! `.sessionlet/collected.json`: the sessions garbage-collected after
//! `ttlAfterFinished` while their manifests stay (see [`crate::core::gc`]),
//! `{"NAME": SPEC_HASH, ...}`.

use std::path::{Path, PathBuf};

use crate::core::gc::Collected;

/// The file's path in the control folder.
pub fn path(control_dir: &Path) -> PathBuf {
    control_dir.join("collected.json")
}

/// Reads the collected sessions; a missing or unreadable file is empty
/// (the worst case is a collected session running once more).
pub fn load(control_dir: &Path) -> Collected {
    std::fs::read(path(control_dir))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// Writes the collected sessions atomically.
pub fn save(control_dir: &Path, collected: &Collected) -> std::io::Result<()> {
    let text = serde_json::to_vec_pretty(collected).map_err(std::io::Error::other)?;
    super::files::write_atomic(&path(control_dir), &text)
}
