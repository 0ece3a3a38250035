//! Bounding session logs: `--max-log-size` as a bound, not a periodic check.
//!
//! A session writes straight to its log files (`O_APPEND`; the child holds
//! the descriptor, nothing flows through the controller). The guard is a
//! thread of its own with its own inotify instance, watching `IN_MODIFY` on
//! each running session's stdout and stderr. On an event it `fstat`s the
//! file and, past the cap, rotates it at once: the last `max` bytes (from a
//! line start) are copied into a new file renamed over `NAME.log.1` (older
//! rotated files shift up to `keep`), then the live file is truncated to 0;
//! the writer's `O_APPEND` continues at 0. inotify coalesces repeated
//! events, so a flood costs one check per wake-up, and nothing at all runs
//! while nothing writes (no timer over all sessions).
//!
//! A log's disk use stays within `(keep + 1) × max` plus what the session
//! writes while the guard reacts (milliseconds; the bound promised is about
//! a second of output).
//!
//! - **Full disk.** Rotation copies into a new file first; when that fails
//!   (ENOSPC, or anything else), the live file is truncated in place anyway.
//! - **Dropped bytes.** Output neither kept in the live file nor in a rotated
//!   one is counted per session ([`LogGuard::dropped`], `status.logs.droppedBytes`):
//!   a file truncated in place, the head of a file that grew past the cap
//!   before the guard reacted, what was written during a rotation.
//! - **Finished sessions.** [`LogGuard::finish`] caps a log when its session
//!   ends, and [`cap_existing`] caps every log under the status folder at
//!   start: an oversized file keeps its last `max` bytes in place (no second
//!   file needed, so it works on a full disk too).
//! - **`--poll`** (file systems without inotify): no inotify here either;
//!   logs are checked at each resync ([`LogGuard::check_all`]).
//! - **Links.** Every file is opened relative to its folder's handle with
//!   `O_NOFOLLOW`; the rotated file is created with `O_EXCL` and renamed
//!   over the old name, so a link planted at `NAME.log.1` is replaced, never
//!   written through; a link at the live name is refused.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use nix::fcntl::{renameat, OFlag};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};
use nix::sys::stat::fstat;
use nix::unistd::{unlinkat, UnlinkatFlags};
use tokio::sync::mpsc;

use super::files;

/// How many bytes are moved at a time.
const CHUNK: usize = 1 << 16;

/// One guarded log file. No descriptor is held while nothing writes: the
/// inotify watch is on the file's inode, and each check opens the name
/// again and goes on only while it still holds that inode. (Holding the
/// file and its folder open took four descriptors per session: a burst of
/// thousands of short sessions, whose exits the controller had not handled
/// yet, ran the controller out of descriptors, and every status write then
/// failed.)
struct Guarded {
    session: String,
    path: PathBuf,
    name: OsString,
    /// The guarded file's device and inode number.
    dev: u64,
    ino: u64,
    max: u64,
    keep: u32,
}

/// A guarded file opened for a check: its folder's handle (for the
/// renames) and the file.
struct Opened {
    dir: OwnedFd,
    file: File,
}

impl Guarded {
    /// Opens the file again, never following a link; `None` when the name
    /// no longer holds the guarded inode (it is not this guard's file now)
    /// or cannot be opened (gone).
    fn reopen(&self) -> Option<Opened> {
        let (opened, dev, ino) = open_file(&self.path).ok()?;
        (dev == self.dev && ino == self.ino).then_some(opened)
    }
}

#[derive(Default)]
struct State {
    files: HashMap<WatchDescriptor, Guarded>,
    by_path: HashMap<PathBuf, WatchDescriptor>,
    /// Without inotify: files capped only when watched and finished.
    unwatched: HashMap<PathBuf, Guarded>,
    dropped: HashMap<String, u64>,
    /// Sessions whose count changed since the controller was last told.
    pending: std::collections::BTreeSet<String>,
    /// When the controller was last told (at most once a second: a flood
    /// must not turn into a status write per rotation).
    told_at: Option<Instant>,
}

/// Gives back the memory of a map that a burst of sessions grew (hash maps
/// never shrink on their own): once it holds under a quarter of what it
/// has room for, it keeps room for twice what it holds.
fn release<K: std::hash::Hash + Eq, V>(map: &mut HashMap<K, V>) {
    if map.capacity() > 64 && map.len() < map.capacity() / 4 {
        map.shrink_to(map.len() * 2);
    }
}

/// How often the controller is told at most that counts changed.
const TELL_EVERY: Duration = Duration::from_secs(1);

struct Shared {
    inotify: Option<Inotify>,
    state: Mutex<State>,
    changes: mpsc::UnboundedSender<String>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves counters, never torn files.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Rotates a file past its cap and accounts what was dropped.
    fn check(&self, state: &mut State, g_key: &WatchDescriptor) {
        let Some(g) = state.files.get(g_key) else {
            return;
        };
        let dropped = rotate(g);
        if dropped > 0 {
            let session = g.session.clone();
            *state.dropped.entry(session.clone()).or_default() += dropped;
            state.pending.insert(session);
        }
    }

    /// Tells the controller which counts changed, at most once a second;
    /// returns how long until the rest may be told.
    fn tell(&self, state: &mut State) -> Option<Duration> {
        if state.pending.is_empty() {
            return None;
        }
        let wait = state
            .told_at
            .map_or(Duration::ZERO, |t| TELL_EVERY.saturating_sub(t.elapsed()));
        if !wait.is_zero() {
            return Some(wait);
        }
        for session in std::mem::take(&mut state.pending) {
            let _ = self.changes.send(session);
        }
        state.told_at = Some(Instant::now());
        None
    }
}

/// The log guard of one controller. Dropping it stops its thread.
pub struct LogGuard {
    shared: Arc<Shared>,
    changes: Option<mpsc::UnboundedReceiver<String>>,
    /// Writing to it wakes the thread to exit.
    stop: Option<OwnedFd>,
}

impl Default for LogGuard {
    fn default() -> Self {
        Self::new(true)
    }
}

impl LogGuard {
    /// Starts the guard's thread. Without inotify (`use_inotify` false, for
    /// `--poll`, or none available), logs are capped when watched, at each
    /// [`LogGuard::check_all`] and when their session ends.
    pub fn new(use_inotify: bool) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let inotify = if use_inotify {
            Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK)
                .map_err(|e| {
                    tracing::warn!("log guard: no inotify ({e}); logs are checked at each resync")
                })
                .ok()
        } else {
            None
        };
        let shared = Arc::new(Shared {
            inotify,
            state: Mutex::new(State::default()),
            changes: tx,
        });
        let mut stop = None;
        if shared.inotify.is_some() {
            match nix::unistd::pipe() {
                Ok((read, write)) => {
                    let s = shared.clone();
                    let spawned = std::thread::Builder::new()
                        .name("log-guard".into())
                        .spawn(move || run(&s, &read));
                    match spawned {
                        Ok(_) => stop = Some(write),
                        Err(e) => tracing::warn!("log guard: cannot start its thread: {e}"),
                    }
                }
                Err(e) => tracing::warn!("log guard: cannot make its wake-up pipe: {e}"),
            }
        }
        LogGuard {
            shared,
            changes: Some(rx),
            stop,
        }
    }

    /// The names of sessions whose dropped-byte count changed, once (the
    /// controller rewrites their statuses).
    pub fn changes(&mut self) -> Option<mpsc::UnboundedReceiver<String>> {
        self.changes.take()
    }

    /// Guards the log `path` of `session`: rotated past `max` bytes, with
    /// `keep` rotated files (`.log.1` newest). Checked at once, then on
    /// every write. Errors (a planted link, an unreadable file) are logged:
    /// the session is not disturbed.
    pub fn watch(&self, session: &str, path: &Path, max: u64, keep: u32) {
        self.unwatch(path);
        let (g, opened) = match open_guarded(session, path, max, keep.max(1)) {
            Ok(g) => g,
            Err(e) => {
                tracing::warn!(session, "log guard: cannot guard {}: {e}", path.display());
                return;
            }
        };
        let mut state = self.shared.lock();
        let wd = self.shared.inotify.as_ref().and_then(|i| {
            // The descriptor's inode itself, whatever its name points to now.
            let fd_path = format!("/proc/self/fd/{}", opened.file.as_raw_fd());
            i.add_watch(fd_path.as_str(), AddWatchFlags::IN_MODIFY)
                .or_else(|_| {
                    i.add_watch(
                        path,
                        AddWatchFlags::IN_MODIFY | AddWatchFlags::IN_DONT_FOLLOW,
                    )
                })
                .map_err(|e| {
                    tracing::warn!(session, "log guard: cannot watch {}: {e}", path.display())
                })
                .ok()
        });
        drop(opened);
        match wd {
            Some(wd) => {
                state.by_path.insert(path.to_path_buf(), wd);
                state.files.insert(wd, g);
                self.shared.check(&mut state, &wd);
                for session in std::mem::take(&mut state.pending) {
                    let _ = self.shared.changes.send(session);
                }
            }
            None => {
                let dropped = rotate(&g);
                if dropped > 0 {
                    *state.dropped.entry(session.to_string()).or_default() += dropped;
                }
                state.unwatched.insert(path.to_path_buf(), g);
            }
        }
    }

    fn unwatch(&self, path: &Path) -> Option<Guarded> {
        let mut state = self.shared.lock();
        if let Some(g) = state.unwatched.remove(path) {
            release(&mut state.unwatched);
            return Some(g);
        }
        let wd = state.by_path.remove(path)?;
        if let Some(i) = &self.shared.inotify {
            let _ = i.rm_watch(wd);
        }
        let g = state.files.remove(&wd);
        release(&mut state.by_path);
        release(&mut state.files);
        g
    }

    /// The session of `path` ended: stops guarding it and caps it in place
    /// (its last `max` bytes stay readable).
    pub fn finish(&self, path: &Path) {
        let Some(g) = self.unwatch(path) else {
            return;
        };
        let Some(opened) = g.reopen() else {
            return;
        };
        match cap_in_place(&opened.file, g.max) {
            Ok(0) => {}
            Ok(dropped) => {
                let mut state = self.shared.lock();
                *state.dropped.entry(g.session.clone()).or_default() += dropped;
            }
            Err(e) => tracing::warn!(
                session = g.session,
                "log guard: cannot cap {}: {e}",
                path.display()
            ),
        }
    }

    /// Checks the logs guarded without inotify (one `fstat` each); with
    /// inotify there are none. Returns the sessions whose count changed.
    pub fn check_all(&self) -> Vec<String> {
        let mut state = self.shared.lock();
        let mut changed = Vec::new();
        let dropped: Vec<(String, u64)> = state
            .unwatched
            .values()
            .map(|g| (g.session.clone(), rotate(g)))
            .filter(|(_, n)| *n > 0)
            .collect();
        for (session, n) in dropped {
            *state.dropped.entry(session.clone()).or_default() += n;
            changed.push(session);
        }
        changed
    }

    /// Bytes of `session`'s output dropped so far (over all its attempts).
    pub fn dropped(&self, session: &str) -> u64 {
        self.shared
            .lock()
            .dropped
            .get(session)
            .copied()
            .unwrap_or(0)
    }

    /// Starts the count of `session` from what an earlier controller recorded.
    pub fn seed(&self, session: &str, dropped: u64) {
        if dropped > 0 {
            let mut state = self.shared.lock();
            let n = state.dropped.entry(session.to_string()).or_default();
            *n = (*n).max(dropped);
        }
    }

    /// Forgets a deleted session's count.
    pub fn forget(&self, session: &str) {
        self.shared.lock().dropped.remove(session);
    }
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        if let Some(w) = self.stop.take() {
            let _ = nix::unistd::write(&w, b"x");
        }
    }
}

/// The guard's thread: waits for inotify events (or the stop pipe).
fn run(shared: &Shared, stop: &OwnedFd) {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let Some(inotify) = &shared.inotify else {
        return;
    };
    // Only while a change waits to be told: no timer otherwise.
    let mut timeout = PollTimeout::NONE;
    loop {
        let mut fds = [
            PollFd::new(inotify.as_fd(), PollFlags::POLLIN),
            PollFd::new(stop.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, timeout) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => {
                tracing::error!(
                    "log guard: poll failed ({e}); logs are capped only when sessions end"
                );
                return;
            }
        }
        if fds[1].any().unwrap_or(true) {
            return;
        }
        let mut wds = std::collections::HashSet::new();
        let mut ignored = Vec::new();
        let mut overflow = false;
        while let Ok(events) = inotify.read_events() {
            if events.is_empty() {
                break;
            }
            for e in events {
                if e.mask.contains(AddWatchFlags::IN_Q_OVERFLOW) {
                    overflow = true;
                } else if e.mask.contains(AddWatchFlags::IN_MODIFY) {
                    wds.insert(e.wd);
                } else if e.mask.contains(AddWatchFlags::IN_IGNORED) {
                    // The file is gone (nothing holds it open here): its
                    // watch went with it.
                    ignored.push(e.wd);
                }
            }
        }
        let mut state = shared.lock();
        for wd in ignored {
            wds.remove(&wd);
            if let Some(g) = state.files.remove(&wd) {
                if state.by_path.get(&g.path) == Some(&wd) {
                    state.by_path.remove(&g.path);
                }
            }
        }
        if overflow {
            wds.extend(state.files.keys().copied());
        }
        for wd in wds {
            shared.check(&mut state, &wd);
        }
        timeout = match shared.tell(&mut state) {
            Some(wait) => {
                PollTimeout::try_from(wait.as_millis().max(1)).unwrap_or(PollTimeout::MAX)
            }
            None => PollTimeout::NONE,
        };
    }
}

/// Opens a log file and its folder, never following a link; with the
/// file's device and inode number.
fn open_file(path: &Path) -> io::Result<(Opened, u64, u64)> {
    let (parent, name) = files::split(path)?;
    let dir = files::open_dir(parent)?;
    let fd = files::open_in(
        &dir,
        name,
        path,
        OFlag::O_RDWR | OFlag::O_NONBLOCK | OFlag::O_NOCTTY,
    )?;
    files::check_own_regular(&fd, path)?;
    let st = fstat(fd.as_fd())?;
    Ok((
        Opened {
            dir,
            file: fd.into(),
        },
        st.st_dev,
        st.st_ino,
    ))
}

/// Opens a log file to guard, never following a link.
fn open_guarded(session: &str, path: &Path, max: u64, keep: u32) -> io::Result<(Guarded, Opened)> {
    let (opened, dev, ino) = open_file(path)?;
    let name = files::split(path)?.1.to_os_string();
    Ok((
        Guarded {
            session: session.to_string(),
            path: path.to_path_buf(),
            name,
            dev,
            ino,
            max,
            keep,
        },
        opened,
    ))
}

/// A guarded log file (tests: the handles are closed at once).
#[cfg(test)]
fn open(session: &str, path: &Path, max: u64, keep: u32) -> io::Result<Guarded> {
    open_guarded(session, path, max, keep).map(|(g, _)| g)
}

fn size_of(file: &File) -> io::Result<u64> {
    Ok(u64::try_from(fstat(file.as_fd())?.st_size).unwrap_or(0))
}

fn rotated_name(name: &OsStr, n: u32) -> OsString {
    let mut s = name.to_os_string();
    s.push(format!(".{n}"));
    s
}

/// Where to start keeping the last part of a file: `start`, moved forward
/// to just after the next newline (within one chunk) so a kept file begins
/// with a whole line.
fn line_start(file: &File, start: u64, end: u64) -> u64 {
    if start == 0 {
        return 0;
    }
    let mut buf = vec![0u8; CHUNK.min(usize::try_from(end - start + 1).unwrap_or(CHUNK))];
    let Ok(n) = file.read_at(&mut buf, start - 1) else {
        return start;
    };
    match buf[..n].iter().position(|b| *b == b'\n') {
        Some(i) => (start - 1 + i as u64 + 1).min(end),
        None => start,
    }
}

/// Copies tried before a rotation accepts losing what is written during it.
const ROTATION_TRIES: u32 = 3;

/// Rotates `g` when it is past its cap; returns the bytes dropped.
///
/// The copy is retried while the writer appended during it (up to
/// [`ROTATION_TRIES`]), so what a session wrote last before it went quiet
/// or ended is kept; during a flood the last try's stragglers are dropped
/// (and counted).
fn rotate(g: &Guarded) -> u64 {
    match g.reopen() {
        Some(opened) => rotate_opened(g, &opened),
        None => 0,
    }
}

/// [`rotate`] of the file `o` holds.
fn rotate_opened(g: &Guarded, o: &Opened) -> u64 {
    let Ok(mut size) = size_of(&o.file) else {
        return 0;
    };
    if size <= g.max {
        return 0;
    }
    for n in (1..g.keep).rev() {
        let _ = renameat(
            &o.dir,
            rotated_name(&g.name, n).as_os_str(),
            &o.dir,
            rotated_name(&g.name, n + 1).as_os_str(),
        );
    }
    let mut tries = 0;
    let (from, copied, now) = loop {
        tries += 1;
        let from = line_start(&o.file, size.saturating_sub(g.max), size);
        let copied = copy_to_rotated(g, o, from, size);
        let now = size_of(&o.file).unwrap_or(size);
        if copied.is_err() || now == size || tries >= ROTATION_TRIES {
            break (from, copied, now);
        }
        size = now;
    };
    if let Err(e) = nix::unistd::ftruncate(&o.file, 0) {
        tracing::warn!(
            session = g.session,
            "log guard: cannot truncate {}: {e}",
            g.path.display()
        );
        return 0;
    }
    match copied {
        Ok(()) => from + now.saturating_sub(size),
        Err(e) => {
            tracing::warn!(
                session = g.session,
                "log guard: cannot rotate {} ({e}); truncated it in place, dropping {now} bytes",
                g.path.display()
            );
            now
        }
    }
}

/// Copies `[from, to)` of the live file into a new file renamed over `NAME.1`.
fn copy_to_rotated(g: &Guarded, o: &Opened, from: u64, to: u64) -> io::Result<()> {
    let tmp = OsString::from(format!(
        ".{}.1.tmp-{}",
        g.name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let mut out = files::create_new(&o.dir, &tmp, &g.path.with_file_name(&tmp))?;
        let mut buf = vec![0u8; CHUNK];
        let mut at = from;
        while at < to {
            let want = usize::try_from(to - at).unwrap_or(CHUNK).min(CHUNK);
            let n = o.file.read_at(&mut buf[..want], at)?;
            if n == 0 {
                break;
            }
            out.write_all(&buf[..n])?;
            at += n as u64;
        }
        renameat(
            &o.dir,
            tmp.as_os_str(),
            &o.dir,
            rotated_name(&g.name, 1).as_os_str(),
        )
        .map_err(io::Error::from)
    })();
    if result.is_err() {
        let _ = unlinkat(&o.dir, tmp.as_os_str(), UnlinkatFlags::NoRemoveDir);
    }
    result
}

/// Keeps the last `max` bytes of a file no one writes any more, in place
/// (no second file: works on a full disk); returns the bytes dropped.
pub fn cap_in_place(file: &File, max: u64) -> io::Result<u64> {
    let size = size_of(file)?;
    if size <= max {
        return Ok(0);
    }
    let from = line_start(file, size - max, size);
    // Forward copy to a lower offset: never overwrites what is still to be read.
    let mut buf = vec![0u8; CHUNK];
    let (mut src, mut dst) = (from, 0u64);
    while src < size {
        let want = usize::try_from(size - src).unwrap_or(CHUNK).min(CHUNK);
        let n = file.read_at(&mut buf[..want], src)?;
        if n == 0 {
            break;
        }
        file.write_all_at(&buf[..n], dst)?;
        src += n as u64;
        dst += n as u64;
    }
    nix::unistd::ftruncate(file, i64::try_from(dst).unwrap_or(i64::MAX))?;
    Ok(from)
}

/// Whether a file name is a log sessionlet writes: `*.log` or `*.log.N`.
fn is_log_name(name: &str) -> bool {
    if name.starts_with('.') {
        return false;
    }
    if name.ends_with(".log") {
        return true;
    }
    match name.rsplit_once(".log.") {
        Some((_, n)) => !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()),
        None => false,
    }
}

/// Caps every log file in the `*.logs/` folders of `status_dir` (and their
/// per-session subfolders) to `max` bytes in place, except the files in
/// `skip` (running sessions' logs, guarded instead). Never follows a link.
/// Returns the total bytes dropped.
pub fn cap_existing(status_dir: &Path, max: u64, skip: &[PathBuf]) -> u64 {
    let mut dropped = 0;
    let mut folders: Vec<PathBuf> = list(status_dir)
        .into_iter()
        .filter(|(n, is_dir)| *is_dir && n.ends_with(".logs"))
        .map(|(n, _)| status_dir.join(n))
        .collect();
    let mut i = 0;
    while i < folders.len() {
        let folder = folders[i].clone();
        let top = folder.parent() == Some(status_dir);
        for (name, is_dir) in list(&folder) {
            let path = folder.join(&name);
            if is_dir {
                if top {
                    folders.push(path);
                }
                continue;
            }
            if !is_log_name(&name) || skip.contains(&path) {
                continue;
            }
            match open_file(&path).and_then(|(o, _, _)| cap_in_place(&o.file, max)) {
                Ok(0) => {}
                Ok(n) => {
                    tracing::info!(
                        "capped {} to --max-log-size, dropping {n} bytes",
                        path.display()
                    );
                    dropped += n;
                }
                Err(e) => tracing::warn!("cannot cap {}: {e}", path.display()),
            }
        }
        i += 1;
    }
    dropped
}

/// Names in a folder and whether each is a real folder (links are neither
/// followed nor listed as folders).
fn list(dir: &Path) -> Vec<(String, bool)> {
    let Ok(fd) = files::open_dir_for_listing(dir) else {
        return Vec::new();
    };
    let Ok(mut d) = nix::dir::Dir::from_fd(fd) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in d.iter().flatten() {
        let Ok(name) = e.file_name().to_str() else {
            continue;
        };
        if name == "." || name == ".." {
            continue;
        }
        let is_dir = matches!(e.file_type(), Some(nix::dir::Type::Directory));
        out.push((name.to_string(), is_dir));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &Path, bytes: &[u8]) {
        std::fs::write(path, bytes).unwrap();
    }

    fn lines(n: usize) -> Vec<u8> {
        (0..n)
            .flat_map(|i| format!("line {i:06}\n").into_bytes())
            .collect()
    }

    #[test]
    fn a_file_past_its_cap_is_rotated_from_a_line_start_and_truncated() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("attempt-1.stdout.log");
        write(&p, &lines(1000)); // 12 bytes a line
        let g = open("s", &p, 1000, 1).unwrap();
        let dropped = rotate(&g);
        let rotated = std::fs::read(dir.path().join("attempt-1.stdout.log.1")).unwrap();
        assert!(
            rotated.len() <= 1000 && rotated.len() > 980,
            "{}",
            rotated.len()
        );
        assert!(rotated.starts_with(b"line "), "a whole first line");
        assert!(rotated.ends_with(b"line 000999\n"));
        assert_eq!(std::fs::metadata(&p).unwrap().len(), 0);
        assert_eq!(dropped, 12_000 - rotated.len() as u64);
    }

    #[test]
    fn older_rotated_files_shift_up_to_keep() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.log");
        let g = open_after(&p, b"first\n".repeat(100).as_slice(), 100, 2);
        rotate(&g);
        write(&p, &b"second\n".repeat(100));
        rotate(&g);
        write(&p, &b"third\n".repeat(100));
        rotate(&g);
        let read = |n: u32| std::fs::read_to_string(dir.path().join(format!("a.log.{n}")));
        assert!(read(1).unwrap().starts_with("third"));
        assert!(read(2).unwrap().starts_with("second"));
        assert!(read(3).is_err(), "only `keep` rotated files");
    }

    fn open_after(p: &Path, bytes: &[u8], max: u64, keep: u32) -> Guarded {
        write(p, bytes);
        open("s", p, max, keep).unwrap()
    }

    #[test]
    fn a_file_under_its_cap_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.log");
        let g = open_after(&p, b"small\n", 100, 1);
        assert_eq!(rotate(&g), 0);
        assert_eq!(std::fs::read(&p).unwrap(), b"small\n");
        assert!(!dir.path().join("a.log.1").exists());
    }

    #[test]
    fn capping_in_place_keeps_the_last_bytes_from_a_line_start() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.log");
        write(&p, &lines(100_000)); // 1.2 MB: overlapping moves across chunks
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&p)
            .unwrap();
        let dropped = cap_in_place(&f, 500_000).unwrap();
        let kept = std::fs::read(&p).unwrap();
        assert!(kept.len() <= 500_000 && kept.len() > 499_980);
        assert_eq!(dropped, 1_200_000 - kept.len() as u64);
        let all = lines(100_000);
        assert_eq!(kept, all[all.len() - kept.len()..]);
        assert!(kept.starts_with(b"line "));
    }

    #[test]
    fn a_link_at_the_rotated_name_is_replaced_and_its_target_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        write(&secret, b"root only\n");
        let p = dir.path().join("a.log");
        std::os::unix::fs::symlink(&secret, dir.path().join("a.log.1")).unwrap();
        let g = open_after(&p, &lines(100), 200, 1);
        rotate(&g);
        assert_eq!(std::fs::read(&secret).unwrap(), b"root only\n");
        let m = std::fs::symlink_metadata(dir.path().join("a.log.1")).unwrap();
        assert!(m.is_file());
    }

    #[test]
    fn existing_logs_are_capped_except_the_skipped_ones_and_links_are_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let status = dir.path();
        let logs = status.join("a.logs");
        std::fs::create_dir_all(logs.join("member")).unwrap();
        write(&logs.join("attempt-1.stdout.log"), &lines(1000));
        write(&logs.join("attempt-1.stdout.log.1"), &lines(1000));
        write(&logs.join("member/attempt-2.stderr.log"), &lines(1000));
        write(&logs.join("attempt-2.stdout.log"), &lines(1000));
        write(&logs.join("charter.md"), &lines(1000));
        let secret = status.join("secret.log");
        write(&secret, &lines(1000));
        std::os::unix::fs::symlink(&secret, logs.join("attempt-3.stdout.log")).unwrap();
        let skip = [logs.join("attempt-2.stdout.log")];
        let dropped = cap_existing(status, 100, &skip);
        let len = |p: PathBuf| std::fs::metadata(p).unwrap().len();
        assert!(len(logs.join("attempt-1.stdout.log")) <= 100);
        assert!(len(logs.join("attempt-1.stdout.log.1")) <= 100);
        assert!(len(logs.join("member/attempt-2.stderr.log")) <= 100);
        assert_eq!(len(logs.join("attempt-2.stdout.log")), 12_000, "skipped");
        assert_eq!(len(logs.join("charter.md")), 12_000, "not a log");
        assert_eq!(len(secret), 12_000, "a link is not followed");
        assert!(dropped >= 3 * 11_900);
    }

    #[test]
    fn a_watched_flood_stays_near_its_cap() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.log");
        let mut writer = files::open_append(&p).unwrap();
        let guard = LogGuard::new(true);
        guard.watch("s", &p, 64 * 1024, 1);
        let line = [b'y'; 1023];
        let mut largest = 0;
        for _ in 0..20_000 {
            writer.write_all(&line).unwrap();
            writer.write_all(b"\n").unwrap();
            largest = largest.max(std::fs::metadata(&p).unwrap().len());
        }
        // 20 MiB written: the guard's pending event rotates what is left.
        let start = std::time::Instant::now();
        while !(dir.path().join("a.log.1").exists()
            && std::fs::metadata(&p).unwrap().len() <= 64 * 1024)
        {
            assert!(start.elapsed().as_secs() < 120, "never rotated");
            std::thread::yield_now();
        }
        assert!(guard.dropped("s") > 0);
        eprintln!("largest live size seen: {largest} bytes (cap 65536)");
        guard.finish(&p);
        assert!(std::fs::metadata(&p).unwrap().len() <= 64 * 1024);
    }

    #[test]
    fn log_names() {
        for n in [
            "attempt-1.stdout.log",
            "gen2.attempt-3.stderr.log",
            "x.log.1",
            "x.log.12",
        ] {
            assert!(is_log_name(n), "{n}");
        }
        for n in [
            "charter.md",
            "stdin",
            ".x.log.1.tmp-5",
            "x.log.",
            "x.log.1a",
            "x.logs",
        ] {
            assert!(!is_log_name(n), "{n}");
        }
    }
}
