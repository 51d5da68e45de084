//! SQLite WAL checkpoints off the write path.
//!
//! By default SQLite checkpoints inside the commit that pushes the WAL past
//! 1,000 pages: that commit copies the WAL into the database file and syncs
//! it while it still holds the write lock, so every other writer waits for
//! a disk sync (about 6 % of the samples of a send-phase profile, and the
//! stalls around them). The pool's connections now never checkpoint
//! (`wal_autocheckpoint = 0`); one thread per database runs a PASSIVE
//! checkpoint every [`EVERY`] on its own connection instead. PASSIVE takes
//! no write lock: writers go on while it copies. It is the same kind of
//! checkpoint SQLite ran before, so durability is unchanged: SQLite syncs
//! the WAL before it copies and the database file after (`wal_sync` relies
//! on that).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::{Connection, RunQueryDsl, SqliteConnection};

/// How often the WAL is copied into the database file.
const EVERY: Duration = Duration::from_millis(100);

/// The handle a `Db` keeps; the thread ends after the last clone drops it.
pub(crate) struct Checkpointer {
    stop: Arc<AtomicBool>,
    /// Checkpoints that copied at least one frame (read by tests).
    #[cfg_attr(not(test), allow(dead_code))]
    copied: Arc<AtomicU64>,
}

#[derive(diesel::QueryableByName)]
struct CheckpointRow {
    /// Frames in the WAL.
    #[diesel(sql_type = diesel::sql_types::Integer)]
    log: i32,
    /// Frames copied into the database file, this time or before.
    #[diesel(sql_type = diesel::sql_types::Integer)]
    checkpointed: i32,
}

impl Checkpointer {
    /// Starts the thread for the SQLite database at `url`.
    pub(crate) fn start(url: &str) -> std::io::Result<Checkpointer> {
        let stop = Arc::new(AtomicBool::new(false));
        let copied = Arc::new(AtomicU64::new(0));
        let (url, stopped, count) = (url.to_string(), stop.clone(), copied.clone());
        std::thread::Builder::new()
            .name("wal-checkpoint".into())
            .spawn(move || run(&url, &stopped, &count))?;
        Ok(Checkpointer { stop, copied })
    }

    #[cfg(test)]
    pub(crate) fn copied(&self) -> u64 {
        self.copied.load(Ordering::Relaxed)
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn run(url: &str, stop: &AtomicBool, copied: &AtomicU64) {
    let mut conn = match SqliteConnection::establish(url) {
        Ok(c) => c,
        Err(e) => {
            log::error!("database: no checkpoint connection ({e}); the WAL grows until restart");
            return;
        }
    };
    let _ = conn.batch_execute("PRAGMA busy_timeout = 1000;");
    let mut last_failure = None;
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(EVERY);
        match diesel::sql_query("PRAGMA wal_checkpoint(PASSIVE)")
            .get_result::<CheckpointRow>(&mut conn)
        {
            Ok(row) => {
                if row.log > 0 && row.checkpointed > 0 {
                    copied.fetch_add(1, Ordering::Relaxed);
                }
                last_failure = None;
            }
            // Said once per run of failures, not every 100 ms.
            Err(e) => {
                let said = e.to_string();
                if last_failure.as_ref() != Some(&said) {
                    log::warn!("database: WAL checkpoint failed: {said}");
                }
                last_failure = Some(said);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use diesel::connection::SimpleConnection;

    use crate::db::{Db, DbConn};

    #[derive(diesel::QueryableByName)]
    struct Setting {
        #[diesel(sql_type = diesel::sql_types::Integer)]
        wal_autocheckpoint: i32,
    }

    /// Commits never checkpoint themselves; the thread copies the WAL into
    /// the database file.
    #[tokio::test]
    async fn the_wal_is_checkpointed_by_its_own_thread() {
        use diesel::RunQueryDsl;
        let dir = tempfile::tempdir().unwrap();
        let url = dir.path().join("c.db").to_string_lossy().to_string();
        let db = Db::open_with_max_connections(&url, 2).unwrap();
        let setting = db
            .run(|c| match c {
                DbConn::Sqlite(c) => Ok(diesel::sql_query("PRAGMA wal_autocheckpoint")
                    .get_result::<Setting>(c)?
                    .wal_autocheckpoint),
                DbConn::Postgres(_) => unreachable!("a SQLite test database"),
            })
            .await
            .unwrap();
        assert_eq!(setting, 0, "pool connections do not checkpoint");
        db.run(|c| Ok(c.batch_execute("CREATE TABLE t (x INTEGER)")?))
            .await
            .unwrap();
        db.transaction(|c| Ok(c.batch_execute("INSERT INTO t VALUES (1)")?))
            .await
            .unwrap();
        let checkpointer = db.checkpointer.as_ref().expect("SQLite has a checkpointer");
        // A state, polled: the thread runs every 100 ms.
        for _ in 0..300 {
            if checkpointer.copied() > 0 {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        panic!("no checkpoint copied the WAL within 30 s");
    }
}
