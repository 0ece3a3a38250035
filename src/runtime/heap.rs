//! Giving a burst's memory back to the system.

/// Spawns in flight at once from which their end counts as a burst.
pub const BURST: usize = 64;

/// Returns the allocator's free memory to the system (glibc's
/// `malloc_trim`, which also releases free pages inside the heap, not
/// only at its top). After a burst (a cold start of 1000 sessions), the
/// freed requests, replies and exec arguments otherwise stay resident for
/// the rest of the process's life. It gives back only whole free pages:
/// in the keeper, the children's registry entries allocated between the
/// freed exec arguments keep most of them (BENCHMARK.md, 2026-12-08).
/// Costs a walk of the free chunks, so it is called once per burst, not
/// per spawn.
pub fn give_back() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: a plain call into the allocator, safe at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}
