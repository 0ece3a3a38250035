//! Watching the manifest directory: every relevant event means "rescan".

use std::path::Path;

use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::mpsc;

/// True when an event may change what the directory declares. The
/// controller's own writes (status files, their temporary files) and mere
/// reads (our own rescans open the directory) must not wake it, or it would
/// wake itself forever.
pub fn relevant(event: &notify::Result<notify::Event>) -> bool {
    let Ok(event) = event else {
        return true; // an error (e.g. queue overflow): rescan to be safe
    };
    if event.need_rescan() {
        return true;
    }
    if matches!(event.kind, EventKind::Access(_)) {
        return false;
    }
    event.paths.iter().any(|p| {
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        // Kubernetes ConfigMap volumes swap the `..data` symlink.
        name.starts_with("..") || crate::manifest::is_manifest_name(name)
    })
}

/// Watches `dir` (not recursively) and sends a token on every relevant
/// event. The channel holds one token: a burst of events collapses into one
/// rescan. Errors (an inotify queue overflow among them) also ask for a full
/// rescan.
pub fn watch(dir: &Path, tx: mpsc::Sender<()>) -> notify::Result<notify::RecommendedWatcher> {
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if relevant(&event) {
            tracing::trace!(?event, "directory event");
            let _ = tx.try_send(());
        }
    })?;
    watcher.watch(dir, RecursiveMode::NonRecursive)?;
    Ok(watcher)
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{AccessKind, CreateKind, ModifyKind, RenameMode};

    fn ev(kind: EventKind, path: &str) -> notify::Result<notify::Event> {
        Ok(notify::Event::new(kind).add_path(path.into()))
    }

    #[test]
    fn the_controllers_own_writes_and_reads_do_not_wake_it() {
        assert!(!relevant(&ev(EventKind::Access(AccessKind::Any), "/d")));
        assert!(!relevant(&ev(
            EventKind::Create(CreateKind::File),
            "/d/.a.status.yaml.tmp-1"
        )));
        assert!(!relevant(&ev(
            EventKind::Modify(ModifyKind::Name(RenameMode::To)),
            "/d/a.status.yaml"
        )));
        assert!(!relevant(&ev(
            EventKind::Create(CreateKind::Folder),
            "/d/a.logs"
        )));
    }

    #[test]
    fn manifest_changes_and_configmap_swaps_wake_it() {
        assert!(relevant(&ev(
            EventKind::Modify(ModifyKind::Name(RenameMode::To)),
            "/d/a.yaml"
        )));
        assert!(relevant(&ev(
            EventKind::Create(CreateKind::Any),
            "/d/..data"
        )));
        assert!(relevant(&Err(notify::Error::generic("queue overflow"))));
    }
}
