//! SQLite durability with shared syncs (group commit for every write).
//!
//! With `synchronous = FULL` each commit syncs the WAL itself, inside the
//! write lock: about 0.2 ms on this kind of disk, so one writer managed a few
//! thousand commits a second whatever the CPU had left, and a message (its
//! acceptance, the engine's Signal state, `sent`, `delivered`, `read`) paid
//! that five times in a row. Connections now commit with `synchronous =
//! NORMAL` (the commit writes its WAL frames without syncing them), and
//! [`Db::run`](super::Db::run) does not return from work that changed
//! anything until a sync of the WAL file covers it. Callers that commit
//! together share one sync: the first to arrive syncs, the others wait for
//! it and find themselves covered.
//!
//! Why this is as durable as FULL: an answer (a 201, an ack to the actors)
//! is only given after the WAL holds the commit on disk. Recovery reads the
//! WAL up to the last frame whose checksum chain holds, so a commit whose
//! frames were synced survives power loss, and one not yet synced was not
//! answered. SQLite itself syncs the WAL before every checkpoint and its
//! header when the WAL starts over (NORMAL's rules), so checkpoints never
//! depend on this module.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::{Condvar, Mutex};

/// One per SQLite database file.
pub(crate) struct WalSync {
    wal: PathBuf,
    /// Commits that asked to be covered, counted.
    requested: AtomicU64,
    state: Mutex<SyncState>,
    synced_cv: Condvar,
    /// Syncs done (for tests).
    syncs: AtomicU64,
    /// Tests hold this to keep a sync from finishing.
    #[cfg(test)]
    hold: parking_lot::RwLock<()>,
}

#[derive(Default)]
struct SyncState {
    /// Every request up to this count is on disk.
    synced: u64,
    /// A sync is running (its caller will wake the others).
    syncing: bool,
}

impl WalSync {
    /// For the database file at `db_path` (its WAL is `<path>-wal`).
    pub(crate) fn new(db_path: &str) -> WalSync {
        WalSync {
            wal: PathBuf::from(format!("{db_path}-wal")),
            requested: AtomicU64::new(0),
            state: Mutex::new(SyncState::default()),
            synced_cv: Condvar::new(),
            syncs: AtomicU64::new(0),
            #[cfg(test)]
            hold: parking_lot::RwLock::new(()),
        }
    }

    /// Return once the WAL is on disk up to at least the commits made
    /// before this call. Blocking: runs on the blocking pool.
    pub(crate) fn wait_durable(&self) -> std::io::Result<()> {
        let ticket = self.requested.fetch_add(1, Ordering::AcqRel) + 1;
        let mut state = self.state.lock();
        loop {
            if state.synced >= ticket {
                return Ok(());
            }
            if state.syncing {
                self.synced_cv.wait(&mut state);
                continue;
            }
            // Lead a sync: it covers every request made before it starts.
            state.syncing = true;
            let covers = self.requested.load(Ordering::Acquire);
            drop(state);
            let result = self.sync_wal();
            state = self.state.lock();
            state.syncing = false;
            if result.is_ok() {
                state.synced = state.synced.max(covers);
            }
            self.synced_cv.notify_all();
            result?;
        }
    }

    fn sync_wal(&self) -> std::io::Result<()> {
        #[cfg(test)]
        let _held = self.hold.read();
        self.syncs.fetch_add(1, Ordering::Relaxed);
        // Opened each time: SQLite may remove the WAL when its last
        // connection closes, and a kept descriptor would sync a dead file.
        match std::fs::File::open(&self.wal) {
            Ok(f) => f.sync_data(),
            // No WAL yet: nothing was committed through one.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    #[cfg(test)]
    pub(crate) fn syncs(&self) -> u64 {
        self.syncs.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    /// Callers that arrive while a sync runs are covered together by the next
    /// one: 1 + 10 callers, 2 syncs. Ordered by the counters, not by time.
    #[test]
    fn callers_during_a_sync_share_the_next_one() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("x.db");
        std::fs::write(format!("{}-wal", db.display()), b"frames").unwrap();
        let wal = Arc::new(WalSync::new(&db.to_string_lossy()));
        let held = wal.hold.write();
        let first = {
            let wal = wal.clone();
            std::thread::spawn(move || wal.wait_durable().unwrap())
        };
        while !wal.state.lock().syncing {
            std::thread::yield_now();
        }
        let others: Vec<_> = (0..10)
            .map(|_| {
                let wal = wal.clone();
                std::thread::spawn(move || wal.wait_durable().unwrap())
            })
            .collect();
        while wal.requested.load(Ordering::Acquire) < 11 {
            std::thread::yield_now();
        }
        drop(held);
        first.join().unwrap();
        for t in others {
            t.join().unwrap();
        }
        assert_eq!(wal.syncs(), 2);
        assert_eq!(wal.state.lock().synced, 11);
        // Covered already: no sync needed for what came before.
        let before = wal.syncs();
        wal.wait_durable().unwrap();
        assert_eq!(wal.syncs(), before + 1, "a new caller needs its own sync");
    }
}
