//! Process memory figures for the overview: what the allocator has handed
//! out, what it holds from the OS, and the resident set.

use std::time::{Duration, Instant};

use parking_lot::Mutex;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoryUsage {
    pub heap_used: u64,
    pub heap_total: u64,
    pub rss: u64,
}

/// How long figures are served from the last reading. Refreshing jemalloc's
/// statistics merges every arena's counters under the arenas' locks (about a
/// millisecond, and it stalls allocating threads): per request, it made the
/// overview five times slower than a session read and its p99 reach 190 ms
/// at 10,000 sessions.
const FRESH_FOR: Duration = Duration::from_millis(500);

static LAST: Mutex<Option<(Instant, MemoryUsage)>> = Mutex::new(None);

/// Figures in bytes, at most [`FRESH_FOR`] old.
pub fn usage() -> MemoryUsage {
    let mut last = LAST.lock();
    match *last {
        Some((at, figures)) if at.elapsed() < FRESH_FOR => figures,
        _ => {
            let figures = measure();
            *last = Some((Instant::now(), figures));
            figures
        }
    }
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
    fn readings_are_reused_briefly_then_refreshed() {
        let pause = super::FRESH_FOR + std::time::Duration::from_millis(50);
        std::thread::sleep(pause);
        let first = super::usage();
        assert_eq!(super::usage(), first, "served from the last reading");
        std::thread::sleep(pause);
        let block = vec![7u8; 64 << 20];
        let fresh = super::usage();
        assert!(fresh.heap_used >= 64 << 20, "{first:?} {fresh:?}");
        drop(block);
    }
}
