//! Watching the manifest directory: every event means "rescan".

use std::path::Path;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

/// Watches `dir` (not recursively) and sends a token on every event. The
/// channel holds one token: a burst of events collapses into one rescan.
/// Errors (an inotify queue overflow among them) also ask for a full rescan.
pub fn watch(dir: &Path, tx: mpsc::Sender<()>) -> notify::Result<notify::RecommendedWatcher> {
    let mut watcher = notify::recommended_watcher(move |_event: notify::Result<notify::Event>| {
        let _ = tx.try_send(());
    })?;
    watcher.watch(dir, RecursiveMode::NonRecursive)?;
    Ok(watcher)
}
