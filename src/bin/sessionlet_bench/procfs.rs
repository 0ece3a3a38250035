//! Reading /proc quickly, and ending every process the benchmark started.
//!
//! The benchmark makes itself a child subreaper, so every process it starts,
//! and every descendant orphaned on the way (a keeper whose controller was
//! killed, a session whose supervisor was killed), stays below it. Cleanup
//! walks that tree and kills each member by pid.

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Set by SIGINT/SIGTERM: every wait gives up and cleanup runs.
pub static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Subreaper, fine timer slack (tight polls sleep what they ask), signal flag.
pub fn init_process() {
    // SAFETY: plain prctl/signal calls with valid arguments.
    unsafe {
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
        libc::prctl(libc::PR_SET_TIMERSLACK, 1, 0, 0, 0);
        let h = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
        libc::signal(libc::SIGINT, h);
        libc::signal(libc::SIGTERM, h);
    }
}

/// True once the user asked to stop.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// Reads a small /proc file into `buf` (cleared first). False when it is gone.
fn read_into(path: &str, buf: &mut Vec<u8>) -> bool {
    buf.clear();
    match std::fs::File::open(path) {
        Ok(mut f) => f.read_to_end(buf).is_ok(),
        Err(_) => false,
    }
}

/// Children of every thread of `pid` (`/proc/PID/task/*/children`).
pub fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let mut buf = Vec::with_capacity(8192);
    // Fast path: the main thread (every process we look at forks from it).
    if read_into(&format!("/proc/{pid}/task/{pid}/children"), &mut buf) {
        parse_pids(&buf, &mut out);
    }
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in tasks.flatten() {
            let tid = t.file_name().to_string_lossy().into_owned();
            if tid == pid.to_string() {
                continue;
            }
            if read_into(&format!("/proc/{pid}/task/{tid}/children"), &mut buf) {
                parse_pids(&buf, &mut out);
            }
        }
    }
    out
}

/// Children of the main thread only: one read, for tight polls of
/// single-threaded parents (the keeper, supervisord, runsv, this benchmark).
pub fn children_main(pid: u32, out: &mut Vec<u32>, buf: &mut Vec<u8>) {
    out.clear();
    if read_into(&format!("/proc/{pid}/task/{pid}/children"), buf) {
        parse_pids(buf, out);
    }
}

fn parse_pids(buf: &[u8], out: &mut Vec<u32>) {
    for w in buf.split(|b| *b == b' ' || *b == b'\n') {
        if let Some(p) = std::str::from_utf8(w).ok().and_then(|s| s.parse().ok()) {
            out.push(p);
        }
    }
}

/// argv of a process, NUL-separated.
pub fn cmdline(pid: u32) -> Option<Vec<u8>> {
    let mut buf = Vec::with_capacity(128);
    read_into(&format!("/proc/{pid}/cmdline"), &mut buf).then_some(buf)
}

/// The tag of a benchmark session: `sleep TAG` (argv[0] ending in `sleep`,
/// argv[1] all digits). `None` for anything else, e.g. a child that has not
/// exec'd yet and still shows its parent's argv.
pub fn sleep_tag(pid: u32) -> Option<u64> {
    let c = cmdline(pid)?;
    let mut parts = c.split(|b| *b == 0);
    let argv0 = parts.next()?;
    if !argv0.ends_with(b"sleep") {
        return None;
    }
    std::str::from_utf8(parts.next()?).ok()?.parse().ok()
}

/// Fields of /proc/PID/stat after the command name (field 3 is index 0).
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(str::to_string).collect())
}

/// Parent pid.
pub fn ppid(pid: u32) -> Option<u32> {
    stat_fields(pid)?.get(1)?.parse().ok()
}

/// True while the process exists and is not a zombie.
pub fn alive(pid: u32) -> bool {
    stat_fields(pid)
        .and_then(|f| f.first().cloned())
        .is_some_and(|s| s != "Z" && s != "X")
}

/// CPU time of every thread of a process, in nanoseconds (schedstat; falls
/// back to utime+stime ticks when schedstat is missing).
pub fn cpu_ns(pid: u32) -> Option<u64> {
    let mut total = 0u64;
    let mut any = false;
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in tasks.flatten() {
            let p = t.path().join("schedstat");
            if let Ok(s) = std::fs::read_to_string(&p) {
                if let Some(ns) = s
                    .split_whitespace()
                    .next()
                    .and_then(|v| v.parse::<u64>().ok())
                {
                    total += ns;
                    any = true;
                }
            }
        }
    }
    if any {
        return Some(total);
    }
    let f = stat_fields(pid)?;
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Some(ticks * 1_000_000_000 / hz)
}

/// A `Key:  N kB` line of a /proc status-like file, in KiB.
fn kb_field(path: &str, key: &str) -> Option<u64> {
    let s = std::fs::read_to_string(path).ok()?;
    s.lines()
        .find(|l| l.starts_with(key))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Resident set size, KiB.
pub fn rss_kb(pid: u32) -> Option<u64> {
    kb_field(&format!("/proc/{pid}/status"), "VmRSS:")
}

/// Proportional set size, KiB (shared pages divided among their users).
pub fn pss_kb(pid: u32) -> Option<u64> {
    kb_field(&format!("/proc/{pid}/smaps_rollup"), "Pss:")
}

/// Every live process: pid -> (ppid, state).
fn all_processes() -> HashMap<u32, (u32, char)> {
    let mut out = HashMap::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for e in entries.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            if let Some(f) = stat_fields(pid) {
                let state = f.first().and_then(|s| s.chars().next()).unwrap_or('?');
                if let Some(pp) = f.get(1).and_then(|s| s.parse().ok()) {
                    out.insert(pid, (pp, state));
                }
            }
        }
    }
    out
}

/// Descendants of `root` (not `root` itself), zombies included.
pub fn descendants(root: u32) -> Vec<(u32, char)> {
    let procs = all_processes();
    let mut kids: HashMap<u32, Vec<u32>> = HashMap::new();
    for (pid, (pp, _)) in &procs {
        kids.entry(*pp).or_default().push(*pid);
    }
    let mut out = Vec::new();
    let mut stack = vec![root];
    let mut seen = HashSet::new();
    while let Some(p) = stack.pop() {
        for c in kids.get(&p).into_iter().flatten() {
            if seen.insert(*c) {
                out.push((*c, procs[c].1));
                stack.push(*c);
            }
        }
    }
    out
}

/// Reaps every exited child without blocking.
pub fn reap_all() {
    loop {
        let mut status = 0;
        // SAFETY: waitpid with a valid status pointer.
        let r = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if r <= 0 {
            break;
        }
    }
}

/// Waits (up to `limit`) for one child to exit, reaping it.
pub fn wait_child(pid: u32, limit: Duration) -> bool {
    let start = Instant::now();
    loop {
        let mut status = 0;
        // SAFETY: waitpid with a valid status pointer.
        let r = unsafe { libc::waitpid(pid as i32, &mut status, libc::WNOHANG) };
        if r == pid as i32 || r < 0 {
            return true;
        }
        if start.elapsed() > limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// SIGKILL to one pid.
pub fn kill9(pid: u32) {
    // SAFETY: kill(2) on a pid we started (or our descendant).
    unsafe {
        libc::kill(pid as i32, libc::SIGKILL);
    }
}

/// Kills every descendant of this process by pid, supervisors and sessions
/// together, until none is left, and reaps them.
pub fn kill_all_descendants() {
    let me = std::process::id();
    let start = Instant::now();
    loop {
        let live: Vec<u32> = descendants(me)
            .into_iter()
            .filter(|(_, s)| *s != 'Z' && *s != 'X')
            .map(|(p, _)| p)
            .collect();
        if live.is_empty() {
            break;
        }
        for p in &live {
            kill9(*p);
        }
        std::thread::sleep(Duration::from_millis(20));
        reap_all();
        if start.elapsed() > Duration::from_secs(60) {
            eprintln!(
                "warning: {} processes still alive after 60 s of cleanup",
                live.len()
            );
            break;
        }
    }
    // Orphans killed above were reparented to us: reap what is left.
    std::thread::sleep(Duration::from_millis(10));
    reap_all();
}

/// A non-blocking inotify watch counting files renamed or written into a folder.
pub struct DirWatch {
    fd: i32,
    buf: Vec<u8>,
}

impl DirWatch {
    /// Watches `dir` for IN_MOVED_TO and IN_CLOSE_WRITE.
    pub fn new(dir: &Path) -> std::io::Result<DirWatch> {
        use std::os::unix::ffi::OsStrExt;
        // SAFETY: plain syscalls; the path is NUL-terminated.
        let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let c = std::ffi::CString::new(dir.as_os_str().as_bytes())?;
        let wd = unsafe {
            libc::inotify_add_watch(fd, c.as_ptr(), libc::IN_MOVED_TO | libc::IN_CLOSE_WRITE)
        };
        if wd < 0 {
            let e = std::io::Error::last_os_error();
            unsafe { libc::close(fd) };
            return Err(e);
        }
        Ok(DirWatch {
            fd,
            buf: vec![0u8; 64 * 1024],
        })
    }

    /// File names written since the last call (one entry per event).
    pub fn drain(&mut self) -> Vec<String> {
        let mut names = Vec::new();
        loop {
            // SAFETY: reading into our own buffer.
            let n = unsafe {
                libc::read(
                    self.fd,
                    self.buf.as_mut_ptr() as *mut libc::c_void,
                    self.buf.len(),
                )
            };
            if n <= 0 {
                break;
            }
            let mut off = 0usize;
            let n = n as usize;
            let header = std::mem::size_of::<libc::inotify_event>();
            while off + header <= n {
                // SAFETY: the kernel wrote a whole event at `off`.
                let ev: libc::inotify_event = unsafe {
                    std::ptr::read_unaligned(self.buf[off..].as_ptr() as *const libc::inotify_event)
                };
                let len = ev.len as usize;
                let raw = &self.buf[off + header..(off + header + len).min(n)];
                let name = raw.split(|b| *b == 0).next().unwrap_or_default();
                names.push(String::from_utf8_lossy(name).into_owned());
                off += header + len;
            }
        }
        names
    }
}

impl Drop for DirWatch {
    fn drop(&mut self) {
        // SAFETY: our own fd.
        unsafe { libc::close(self.fd) };
    }
}

/// Sessions found running below some parents, by their `sleep TAG` argv.
///
/// Once a pid has exec'd `sleep TAG` its argv never changes, so only pids
/// not seen before are read: a poll of a parent with 1000 children costs
/// one read of its `children` file plus one read per new child.
#[derive(Default)]
pub struct Tracker {
    /// Running sessions: pid -> tag.
    pub tag_of: HashMap<u32, u64>,
    /// Running sessions per parent.
    pub by_parent: HashMap<u32, HashSet<u32>>,
    kids: Vec<u32>,
    buf: Vec<u8>,
}

impl Tracker {
    /// Scans the children of `parents` (single-threaded parents).
    pub fn scan(&mut self, parents: &[u32]) {
        for &p in parents {
            let mut kids = std::mem::take(&mut self.kids);
            children_main(p, &mut kids, &mut self.buf);
            // Forget sessions of this parent that are gone (their pid may be reused).
            if let Some(set) = self.by_parent.get_mut(&p) {
                if !set.is_empty() {
                    let now: HashSet<u32> = kids.iter().copied().collect();
                    let tag_of = &mut self.tag_of;
                    set.retain(|g| {
                        let keep = now.contains(g);
                        if !keep {
                            tag_of.remove(g);
                        }
                        keep
                    });
                }
            }
            for &k in &kids {
                if self.tag_of.contains_key(&k) {
                    continue;
                }
                if let Some(tag) = sleep_tag(k) {
                    self.tag_of.insert(k, tag);
                    self.by_parent.entry(p).or_default().insert(k);
                }
            }
            self.kids = kids;
        }
    }

    /// Number of running sessions.
    pub fn count(&self) -> usize {
        self.tag_of.len()
    }
}
