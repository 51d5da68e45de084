//! Small writes from many callers committed together, on one writer thread.
//!
//! The engine writes a session's Signal state, its retry copy and its
//! message secret before every send, each a transaction of its own. On
//! SQLite every transaction holds the one write lock from `BEGIN IMMEDIATE`
//! to `COMMIT`, so with many sessions sending, those small transactions
//! queue for the lock one by one and cap the sends a second (measured: about
//! 700/s across 100 sessions, one core idle). [`Db::write_grouped`] hands its
//! work to this thread instead: it takes every job that is waiting (up to
//! [`MAX_GROUP`]), runs each in its own savepoint inside one transaction (a
//! failure undoes only its own job), and answers each once the commit is
//! durable, exactly as `Db::run` would have. With nothing else waiting it is
//! one transaction per job, as before.
//!
//! The writer does not wait for the disk: once a group is committed it hands
//! the group to a second thread, which waits for the WAL sync (shared, see
//! `wal_sync`) and then answers, while the writer already writes the next
//! group. Groups are answered in commit order.
//!
//! Jobs run in the order of their `order` key (a session id), so on
//! PostgreSQL a group takes its row locks in the same order as every other
//! group and two writers never wait for each other in a circle.

use std::sync::mpsc;

use diesel::Connection;

use super::{transaction_in, Db, DbConn, DbError};

/// Jobs written in one transaction at most.
const MAX_GROUP: usize = 256;

/// Called once the group's commit is known: delivers the job's own result,
/// or the group's failure.
type Finish = Box<dyn FnOnce(Result<(), &DbError>) + Send>;

struct Job {
    order: String,
    write: Box<dyn FnOnce(&mut DbConn) -> Finish + Send>,
}

/// The queue to the writer thread; the thread ends when this is dropped.
pub(super) struct WriteGroup {
    queue: mpsc::Sender<Job>,
}

impl WriteGroup {
    /// `db` must not hold this group (the thread would keep itself alive).
    pub(super) fn start(db: Db) -> WriteGroup {
        let (queue, waiting) = mpsc::channel();
        let (committed, to_answer) = mpsc::channel();
        let syncer = db.clone();
        std::thread::Builder::new()
            .name("wasup-db-writer".into())
            .spawn(move || write_groups(db, waiting, committed))
            .expect("start the database writer thread");
        std::thread::Builder::new()
            .name("wasup-db-sync".into())
            .spawn(move || answer_groups(syncer, to_answer))
            .expect("start the database sync thread");
        WriteGroup { queue }
    }
}

impl Db {
    /// Run `work` as one job of a group commit (see the module): same
    /// answer and durability as `self.transaction(work)`, far fewer
    /// transactions when many callers write at once. For short writes
    /// only: a slow job holds up its whole group.
    pub async fn write_grouped<T, F>(&self, order: String, work: F) -> Result<T, DbError>
    where
        T: Send + 'static,
        F: FnOnce(&mut DbConn) -> Result<T, DbError> + Send + 'static,
    {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let write = Box::new(move |conn: &mut DbConn| -> Finish {
            // Its own savepoint: an error rolls back this job only.
            let result = conn.transaction(work);
            Box::new(move |group: Result<(), &DbError>| {
                let _ = reply.send(match group {
                    Ok(()) => result,
                    Err(e) => Err(DbError::NotCommitted(e.to_string())),
                });
            })
        });
        self.write_group()
            .queue
            .send(Job { order, write })
            .map_err(|_| DbError::Cancelled)?;
        answer.await.map_err(|_| DbError::Cancelled)?
    }
}

/// A committed group on its way to be answered.
struct Committed {
    finishes: Vec<Finish>,
    result: Result<(), DbError>,
    /// It changed rows: the WAL must be synced before anyone hears of it.
    unsynced: bool,
}

fn write_groups(db: Db, waiting: mpsc::Receiver<Job>, committed: mpsc::Sender<Committed>) {
    while let Ok(first) = waiting.recv() {
        let mut jobs = vec![first];
        jobs.extend(waiting.try_iter().take(MAX_GROUP - 1));
        // Stable: one caller's jobs keep their order.
        jobs.sort_by(|a, b| a.order.cmp(&b.order));
        let mut finishes = Vec::with_capacity(jobs.len());
        // A panicking job drops its group's replies (callers hear
        // `Cancelled`); the thread goes on with the next group.
        let group = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            db.run_unsynced(|conn| {
                transaction_in(conn, |conn| {
                    for job in jobs {
                        finishes.push((job.write)(conn));
                    }
                    Ok::<_, DbError>(())
                })
            })
        }));
        let (result, unsynced) = match group {
            Ok(Ok((result, unsynced))) => (result, unsynced),
            Ok(Err(err)) => (Err(err), false),
            Err(_) => {
                log::error!("database: a grouped write panicked; its group is not stored");
                continue;
            }
        };
        if let Err(err) = &result {
            log::warn!(
                "database: a group of {} writes failed: {err}",
                finishes.len()
            );
        }
        let group = Committed {
            finishes,
            result,
            unsynced,
        };
        if committed.send(group).is_err() {
            return;
        }
    }
}

/// Answers committed groups in order, each once the WAL holding it is synced.
fn answer_groups(db: Db, committed: mpsc::Receiver<Committed>) {
    while let Ok(group) = committed.recv() {
        let mut result = group.result;
        if group.unsynced && result.is_ok() {
            result = db.sync();
        }
        for finish in group.finishes {
            finish(result.as_ref().map(|_| ()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::testing::{current_test, TestDatabase};

    /// Jobs from many callers at once: each hears its own answer, a failing
    /// job changes nothing and fails alone, and the others are stored.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn each_job_hears_its_own_answer_and_fails_alone() {
        for database in TestDatabase::all(&current_test()) {
            each_job_on(database.open()).await;
        }
    }

    async fn each_job_on(db: Db) {
        db.run(|c| {
            use diesel::connection::SimpleConnection;
            c.batch_execute("CREATE TABLE grouped (n BIGINT PRIMARY KEY)")
                .map_err(DbError::from)
        })
        .await
        .unwrap();
        let calls = (0..50).map(|n: i64| {
            let db = db.clone();
            async move {
                db.write_grouped(format!("s{}", n % 7), move |c| {
                    use diesel::connection::SimpleConnection;
                    c.batch_execute(&format!("INSERT INTO grouped VALUES ({n})"))?;
                    if n % 10 == 3 {
                        return Err(DbError::Invalid(format!("job {n} refuses")));
                    }
                    Ok(n)
                })
                .await
            }
        });
        let answers = futures::future::join_all(calls).await;
        for (n, answer) in answers.iter().enumerate() {
            match answer {
                Ok(got) => assert_eq!(*got, n as i64),
                Err(DbError::Invalid(_)) => assert_eq!(n % 10, 3),
                Err(e) => panic!("job {n}: {e}"),
            }
        }
        let stored: i64 = db
            .run(|c| {
                use diesel::RunQueryDsl;
                diesel::sql_query("SELECT COUNT(*) AS n FROM grouped")
                    .get_result::<Count>(c)
                    .map(|r| r.n)
                    .map_err(DbError::from)
            })
            .await
            .unwrap();
        assert_eq!(stored, 45, "the 5 refusing jobs left no row");
    }

    #[derive(diesel::QueryableByName)]
    struct Count {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
}
