//! Process memory figures for the overview: what the allocator has handed
//! out, what it holds from the OS, and the resident set.

use std::sync::Once;
use std::time::Duration;

use parking_lot::Mutex;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoryUsage {
    pub heap_used: u64,
    pub heap_total: u64,
    pub rss: u64,
}

/// How often a background thread reads the figures. Reading them refreshes
/// jemalloc's statistics, which merges every arena's counters under the
/// arenas' locks (about a millisecond, contending with allocating threads).
/// Done per request, it made the overview five times slower than a session
/// read; here no request thread ever runs it, requests only copy the last
/// reading.
const REFRESH_EVERY: Duration = Duration::from_millis(500);

static LAST: Mutex<MemoryUsage> = Mutex::new(MemoryUsage {
    heap_used: 0,
    heap_total: 0,
    rss: 0,
});
static REFRESHER: Once = Once::new();

/// Figures in bytes, at most [`REFRESH_EVERY`] old (read now on first use).
pub fn usage() -> MemoryUsage {
    REFRESHER.call_once(|| {
        *LAST.lock() = measure();
        let spawned = std::thread::Builder::new()
            .name("memory-stats".into())
            .spawn(|| loop {
                std::thread::sleep(REFRESH_EVERY);
                let figures = measure();
                *LAST.lock() = figures;
            });
        if let Err(e) = spawned {
            log::warn!("memory figures will not refresh: {e}");
        }
    });
    *LAST.lock()
}

/// Figures in bytes, read now.
fn measure() -> MemoryUsage {
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
        let before = super::measure();
        let block = vec![7u8; 8 << 20];
        let after = super::measure();
        assert!(after.rss > 0 && after.heap_total >= after.heap_used);
        // Other tests allocate and free concurrently, so compare with the
        // block itself rather than with `before`.
        assert!(after.heap_used >= 8 << 20, "{before:?} {after:?}");
        drop(block);
    }

    #[test]
    fn the_figures_refresh_in_the_background() {
        let first = super::usage();
        let block = std::hint::black_box(vec![7u8; 64 << 20]);
        // Within a refresh period the figures may not move; after two they have.
        std::thread::sleep(super::REFRESH_EVERY * 2 + std::time::Duration::from_millis(100));
        let fresh = super::usage();
        assert!(fresh.heap_used >= 64 << 20, "{first:?} {fresh:?}");
        drop(block);
    }
}
