//! Process memory figures for the overview: what the allocator has handed
//! out, what it holds from the OS, and the resident set.

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoryUsage {
    pub heap_used: u64,
    pub heap_total: u64,
    pub rss: u64,
}

/// Current figures in bytes.
pub fn usage() -> MemoryUsage {
    let (heap_used, heap_total) = heap();
    MemoryUsage {
        heap_used,
        heap_total,
        rss: rss(),
    }
}

/// From jemalloc (the process allocator, see lib.rs): bytes allocated to the
/// program, and bytes of physical memory it holds.
fn heap() -> (u64, u64) {
    use tikv_jemalloc_ctl::{epoch, stats};
    // Statistics are cached; advancing the epoch refreshes them.
    let _ = epoch::advance();
    let used = stats::allocated::read().unwrap_or(0) as u64;
    let total = stats::resident::read().unwrap_or(0) as u64;
    (used, total.max(used))
}

/// Resident set size from /proc/self/statm (0 where unavailable).
pub fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    pages * page.max(0) as u64
}

#[cfg(test)]
mod tests {
    #[test]
    fn figures_are_real_and_consistent() {
        let before = super::usage();
        let block = vec![7u8; 8 << 20];
        let after = super::usage();
        assert!(after.rss > 0 && after.heap_total >= after.heap_used);
        // Other tests allocate and free concurrently, so compare with the
        // block itself rather than with `before`.
        assert!(after.heap_used >= 8 << 20, "{before:?} {after:?}");
        drop(block);
    }
}
