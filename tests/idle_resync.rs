//! The periodic resync as the safety net behind the watch: while the watch
//! runs, a resync lists the folder's names and stats a slice of the files
//! (see `Catalog::resync`); a change the watch cannot see must still be
//! found within a few resyncs.
//!
//! Every test runs the real binary on a temporary directory and waits on
//! status files with deadlines.

mod common;
use common::*;

use std::path::Path;

/// The command line of a process, its arguments joined by spaces.
fn cmdline(pid: u64) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            b.split(|c| *c == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}

/// A file's bytes mapped shared and writable, held until dropped. A write
/// through the mapping is one inotify never reports (inotify(7): changes
/// through mmap are not reported), and the file's close is reported only
/// when the mapping goes, so while this lives the watch knows nothing of
/// what was written.
struct Mapped {
    ptr: *mut u8,
    len: usize,
}

impl Mapped {
    fn open(path: &Path) -> Mapped {
        use std::os::fd::AsRawFd;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .expect("open rw");
        let len = usize::try_from(file.metadata().expect("stat").len()).expect("len");
        // SAFETY: a fresh shared mapping of a file this test owns, of its
        // whole length; nothing else maps it, and it is unmapped in drop.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        assert_ne!(ptr, libc::MAP_FAILED, "mmap");
        // The mapping keeps the file open: closing the descriptor now
        // reports nothing.
        drop(file);
        Mapped {
            ptr: ptr.cast(),
            len,
        }
    }

    /// Replaces the first `from` with `to` (same length), in place.
    fn replace(&mut self, from: &str, to: &str) {
        assert_eq!(from.len(), to.len());
        // SAFETY: the mapping is `len` bytes long and lives as long as self.
        let bytes = unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) };
        let at = bytes
            .windows(from.len())
            .position(|w| w == from.as_bytes())
            .expect("text to replace");
        bytes[at..at + to.len()].copy_from_slice(to.as_bytes());
    }
}

impl Drop for Mapped {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `open`, unmapped once.
        unsafe {
            libc::munmap(self.ptr.cast(), self.len);
        }
    }
}

/// A manifest rewritten in place (same inode, same size) in a way the
/// watch never reports is found by the resync's slice of stats within a
/// few resyncs, and its session runs the new spec. The other files'
/// sessions are left alone.
#[test]
fn a_manifest_rewritten_behind_the_watch_is_found_by_the_resync() {
    let (_tmp, dir) = sessions_dir();
    let names: Vec<String> = (0..12).map(|i| format!("s{i:02}")).collect();
    for n in &names {
        write_file(
            &dir.join(format!("{n}.yaml")),
            &session(n, "command: [sleep, '1000']"),
        );
    }
    let _c = Controller::start(
        &dir,
        &["--resync-interval", "200ms", "--usage-interval", "0"],
    );
    let pids: Vec<u64> = names
        .iter()
        .map(|n| {
            wait_phase(&dir, n, "Running")["status"]["pid"]
                .as_u64()
                .expect("pid")
        })
        .collect();
    let mut mapped = Mapped::open(&dir.join("s05.yaml"));
    mapped.replace("'1000'", "'1001'");
    let s = wait_status(&dir, "s05", "the rewritten spec running", |s| {
        s["status"]["phase"] == "Running" && s["status"]["pid"].as_u64() != Some(pids[5])
    });
    let pid = s["status"]["pid"].as_u64().expect("pid");
    assert!(
        cmdline(pid).contains("1001"),
        "the new spec runs: {}",
        cmdline(pid)
    );
    drop(mapped);
    for (n, pid) in names.iter().zip(&pids).filter(|(n, _)| n.as_str() != "s05") {
        let s = status(&dir, n).expect("status");
        assert_eq!(s["status"]["pid"].as_u64(), Some(*pid), "{n} left alone");
    }
}
