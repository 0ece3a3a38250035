//! Watching the manifest directory: which events mean "rescan now", which
//! mean "a file is being written: rescan once it settles".

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use notify::event::{AccessKind, AccessMode, ModifyKind, RenameMode};
use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::mpsc;

/// What an event asks of the controller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// A change is complete (a file closed after writing, renamed into
    /// place, its owner or mode changed): rescan at once.
    Now,
    /// A file is being written (created, or data written and not closed
    /// yet), or a manifest went away (deleted, renamed out), which an editor
    /// does right before writing its replacement: rescan when the next
    /// finished change arrives, or after a short quiet time.
    Settle,
}

/// What `event` asks for; `None` when it cannot change what the directory
/// declares. The controller's own writes (status files, their temporary
/// files) and mere reads (our own rescans open the directory) must not wake
/// it, or it would wake itself forever.
pub fn classify(event: &notify::Result<notify::Event>) -> Option<Wake> {
    let Ok(event) = event else {
        return Some(Wake::Now); // an error (e.g. queue overflow): rescan to be safe
    };
    if event.need_rescan() {
        return Some(Wake::Now);
    }
    let declares = |p: &Path| {
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        name.starts_with("..") || crate::manifest::is_manifest_name(name)
    };
    if !event.paths.iter().any(|p| declares(p)) {
        return None;
    }
    let wake = match event.kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => Wake::Now,
        EventKind::Access(_) => return None,
        EventKind::Create(_) | EventKind::Modify(ModifyKind::Data(_)) => Wake::Settle,
        EventKind::Modify(ModifyKind::Any) | EventKind::Modify(ModifyKind::Other) => Wake::Settle,
        // Vim saves by renaming the manifest to a backup and writing a new
        // one: reading at the rename would stop the session for nothing.
        EventKind::Remove(_) | EventKind::Modify(ModifyKind::Name(RenameMode::From)) => {
            Wake::Settle
        }
        // A rename pair is finished when it lands on a manifest (an atomic
        // save); one that only takes a manifest away waits like a delete.
        EventKind::Modify(ModifyKind::Name(RenameMode::Both)) => match event.paths.last() {
            Some(to) if declares(to) => Wake::Now,
            _ => Wake::Settle,
        },
        _ => Wake::Now,
    };
    Some(wake)
}

/// True when an event may change what the directory declares.
pub fn relevant(event: &notify::Result<notify::Event>) -> bool {
    classify(event).is_some()
}

/// The paths the watch reported since the controller last took them, so
/// that a change re-reads those files alone instead of listing the folder.
#[derive(Debug, Default)]
pub struct Changes {
    paths: BTreeSet<PathBuf>,
    /// Something no path names changed (an error, an overflowed queue, a
    /// ConfigMap's `..data` swap), or too many paths to keep: list the folder.
    relist: bool,
}

/// More paths than this between two passes: listing the folder is cheaper.
const MAX_PATHS: usize = 4096;

impl Changes {
    /// Notes what a relevant event names.
    pub fn note(&mut self, event: &notify::Result<notify::Event>) {
        let Ok(event) = event else {
            self.relist = true;
            return;
        };
        if event.need_rescan() {
            self.relist = true;
        }
        for p in &event.paths {
            let swap = p
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(".."));
            if swap {
                self.relist = true;
            } else {
                self.paths.insert(p.clone());
            }
        }
        if self.paths.len() > MAX_PATHS {
            self.paths.clear();
            self.relist = true;
        }
    }

    /// The paths noted so far, and whether the folder must be listed instead.
    pub fn take(&mut self) -> (BTreeSet<PathBuf>, bool) {
        (
            std::mem::take(&mut self.paths),
            std::mem::take(&mut self.relist),
        )
    }
}

/// The changes a watch shares with the controller.
pub type SharedChanges = Arc<Mutex<Changes>>;

/// Watches `dir`: notes the paths of each relevant event in `changes`, then
/// sends what the event asks for. The channel is small: a burst collapses
/// into the wake-ups already queued (the paths are kept all the same).
pub fn watch(
    dir: &Path,
    tx: mpsc::Sender<Wake>,
    changes: SharedChanges,
) -> notify::Result<notify::RecommendedWatcher> {
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Some(wake) = classify(&event) {
            tracing::trace!(?event, ?wake, "directory event");
            match changes.lock() {
                Ok(mut c) => c.note(&event),
                Err(poisoned) => poisoned.into_inner().note(&event),
            }
            let _ = tx.try_send(wake);
        }
    })?;
    watcher.watch(dir, RecursiveMode::NonRecursive)?;
    Ok(watcher)
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{AccessKind, AccessMode, CreateKind, ModifyKind};

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

    #[test]
    fn a_finished_change_wakes_at_once_and_a_write_in_progress_settles() {
        let close = EventKind::Access(AccessKind::Close(AccessMode::Write));
        assert_eq!(classify(&ev(close, "/d/a.yaml")), Some(Wake::Now));
        let moved = EventKind::Modify(ModifyKind::Name(RenameMode::To));
        assert_eq!(classify(&ev(moved, "/d/a.yaml")), Some(Wake::Now));
        let removed = EventKind::Remove(notify::event::RemoveKind::File);
        assert_eq!(classify(&ev(removed, "/d/a.yaml")), Some(Wake::Settle));
        let moved_out = EventKind::Modify(ModifyKind::Name(RenameMode::From));
        assert_eq!(classify(&ev(moved_out, "/d/a.yaml")), Some(Wake::Settle));
        let pair = |from: &str, to: &str| {
            Ok(
                notify::Event::new(EventKind::Modify(ModifyKind::Name(RenameMode::Both)))
                    .add_path(from.into())
                    .add_path(to.into()),
            )
        };
        assert_eq!(
            classify(&pair("/d/.a.yaml.swp", "/d/a.yaml")),
            Some(Wake::Now)
        );
        assert_eq!(
            classify(&pair("/d/a.yaml", "/d/a.yaml~")),
            Some(Wake::Settle)
        );
        let chmod = EventKind::Modify(ModifyKind::Metadata(notify::event::MetadataKind::Any));
        assert_eq!(classify(&ev(chmod, "/d/a.yaml")), Some(Wake::Now));
        let created = EventKind::Create(CreateKind::File);
        assert_eq!(classify(&ev(created, "/d/a.yaml")), Some(Wake::Settle));
        let written = EventKind::Modify(ModifyKind::Data(notify::event::DataChange::Any));
        assert_eq!(classify(&ev(written, "/d/a.yaml")), Some(Wake::Settle));
        let read_closed = EventKind::Access(AccessKind::Close(AccessMode::Read));
        assert_eq!(classify(&ev(read_closed, "/d/a.yaml")), None);
    }

    #[test]
    fn changes_keep_the_paths_and_ask_for_a_listing_when_no_path_can_say() {
        let mut c = Changes::default();
        c.note(&ev(EventKind::Create(CreateKind::File), "/m/a.yaml"));
        c.note(&ev(EventKind::Create(CreateKind::File), "/m/a.yaml"));
        c.note(&ev(EventKind::Create(CreateKind::File), "/m/b.yaml"));
        let (paths, relist) = c.take();
        assert_eq!(paths.len(), 2);
        assert!(!relist);
        assert_eq!(c.take(), (BTreeSet::new(), false), "taken once");
        c.note(&ev(EventKind::Create(CreateKind::File), "/m/..data"));
        assert!(c.take().1, "a ConfigMap swap lists the folder");
        c.note(&Err(notify::Error::generic("queue overflow")));
        assert!(c.take().1, "an error lists the folder");
        for i in 0..=MAX_PATHS {
            c.note(&ev(
                EventKind::Create(CreateKind::File),
                &format!("/m/{i}.yaml"),
            ));
        }
        let (paths, relist) = c.take();
        assert!(paths.is_empty() && relist, "too many paths: one listing");
    }
}
