//! The database: diesel over SQLite (bundled, the default) or PostgreSQL,
//! chosen by the URL scheme. One r2d2 pool; every call runs on tokio's
//! blocking pool, or for grouped writes on the writer thread
//! (`write_group`), never on an actor or HTTP thread. Migrations for each
//! backend are embedded and applied at start.

use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::r2d2::{self, ManageConnection};
use diesel::{Connection, PgConnection, SqliteConnection};
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};

const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");
const POSTGRES_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgres");

/// One connection to whichever backend the URL chose.
#[derive(diesel::MultiConnection)]
pub enum DbConn {
    Sqlite(SqliteConnection),
    Postgres(PgConnection),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn of_url(url: &str) -> Backend {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres
        } else {
            Backend::Sqlite
        }
    }
}

/// The error enum of the database layer. Messages are for logs; the API
/// never shows them.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("could not connect to the database: {0}")]
    Connect(String),
    #[error("migration failed: {0}")]
    Migration(String),
    #[error("database pool: {0}")]
    Pool(#[from] r2d2::PoolError),
    #[error(transparent)]
    Query(#[from] diesel::result::Error),
    #[error("database task was cancelled")]
    Cancelled,
    /// A group commit failed: this write was in the group, so it is not stored.
    #[error("not committed: {0}")]
    NotCommitted(String),
    /// A stored row that does not parse (unknown status, bad JSON, …).
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// The caller handed in data that breaks an invariant; nothing was written.
    #[error("invalid write: {0}")]
    Invalid(String),
    /// Cluster mode: a newer owner holds the session's lease; nothing was
    /// written (see `cluster::check_fence`).
    #[error("fenced: {0}")]
    Fenced(String),
}

impl DbError {
    pub fn is_unique_violation(&self) -> bool {
        matches!(
            self,
            DbError::Query(diesel::result::Error::DatabaseError(
                diesel::result::DatabaseErrorKind::UniqueViolation,
                _
            ))
        )
    }
    pub fn is_not_found(&self) -> bool {
        matches!(self, DbError::Query(diesel::result::Error::NotFound))
    }
    pub fn is_foreign_key_violation(&self) -> bool {
        matches!(
            self,
            DbError::Query(diesel::result::Error::DatabaseError(
                diesel::result::DatabaseErrorKind::ForeignKeyViolation,
                _
            ))
        )
    }
}

/// Opens connections of the backend the URL names. (The derived
/// `MultiConnection::establish` would try every backend in turn and treat a
/// postgres URL as an SQLite file name.)
pub struct ConnectionManager {
    url: String,
    backend: Backend,
}

impl ManageConnection for ConnectionManager {
    type Connection = DbConn;
    type Error = r2d2::Error;

    fn connect(&self) -> Result<DbConn, r2d2::Error> {
        let conn = match self.backend {
            Backend::Postgres => DbConn::Postgres(
                PgConnection::establish(&self.url).map_err(r2d2::Error::ConnectionError)?,
            ),
            Backend::Sqlite => {
                sqlite_plans::stable_plans_for_new_connections();
                let mut conn =
                    SqliteConnection::establish(&self.url).map_err(r2d2::Error::ConnectionError)?;
                // WAL lets readers run beside the writer; synchronous NORMAL
                // commits without syncing the WAL, and `Db::run` answers
                // no write before a shared sync covers it (`wal_sync`), so an
                // acknowledged write survives power loss as with FULL; the
                // busy timeout makes concurrent writers wait instead of
                // failing; foreign keys make deletes cascade as on PostgreSQL;
                // statement journals (a savepoint's undo pages, one per
                // accepted message in a group commit) stay in memory instead
                // of a temp file written page by page.
                // A checkpoint runs in the commit that passes
                // `wal_autocheckpoint` pages; at SQLite's 1,000 (4 MiB) the
                // writer spent about a third of its time checkpointing
                // during sends (reading WAL frames back, writing them to the
                // database, two fsyncs), and the same hot pages were copied
                // again every few hundred milliseconds. At 8,192 (32 MiB of
                // WAL at most) a page rewritten many times is copied once
                // per checkpoint: sends 1,294/s → about 1,500/s.
                conn.batch_execute(
                    "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                     PRAGMA busy_timeout = 10000; PRAGMA foreign_keys = ON; \
                     PRAGMA temp_store = MEMORY; PRAGMA wal_autocheckpoint = 8192;",
                )
                .map_err(r2d2::Error::QueryError)?;
                DbConn::Sqlite(conn)
            }
        };
        Ok(conn)
    }

    fn is_valid(&self, conn: &mut DbConn) -> Result<(), r2d2::Error> {
        conn.batch_execute("SELECT 1")
            .map_err(r2d2::Error::QueryError)
    }

    fn has_broken(&self, _conn: &mut DbConn) -> bool {
        false
    }
}

pub type Pool = r2d2::Pool<ConnectionManager>;

/// The database handle shared by the whole process. Cheap to clone.
#[derive(Clone)]
pub struct Db {
    pool: Pool,
    backend: Backend,
    /// Cluster mode: the leases this node holds (`cluster::check_fence`).
    fence: Option<std::sync::Arc<cluster::Fence>>,
    /// SQLite: the one write lock, taken in this process (see [`WriteGate`]).
    writer: WriteGate,
    /// SQLite: the shared WAL syncs that make a write durable (`wal_sync`).
    wal: Option<std::sync::Arc<wal_sync::WalSync>>,
    /// `write_grouped`'s writer thread, shared by every clone.
    group: std::sync::Arc<std::sync::OnceLock<write_group::WriteGroup>>,
}

/// SQLite lets one transaction write at a time, and a writer that finds the
/// lock taken polls for it, sleeping 1–100 ms between tries (the busy
/// handler): under load the lock sits idle between a commit and the next
/// sleeper's wake-up, and commits per second collapse. The gateway is the
/// only process on its database file (the data-dir lock), so its write
/// transactions queue on this in-process lock instead and each starts the
/// moment the previous one ends. [`Db::run`] hands it to the blocking
/// thread; [`transaction_in`] holds it from `BEGIN IMMEDIATE` to the end.
/// Reentrant, so a nested call fails in SQLite as before instead of hanging.
#[derive(Clone, Default)]
struct WriteGate(std::sync::Arc<parking_lot::ReentrantMutex<()>>);

thread_local! {
    /// The gate of the `Db` whose work this blocking thread is running.
    static WRITE_GATE: std::cell::RefCell<Option<WriteGate>> = const { std::cell::RefCell::new(None) };
}

impl Db {
    /// Connect, apply the embedded migrations of the backend, and build the
    /// pool (at most 4 connections on SQLite, 16 on PostgreSQL).
    pub fn open(url: &str) -> Result<Db, DbError> {
        let max_size = match Backend::of_url(url) {
            // SQLite has one writer at a time; a few connections serve readers.
            Backend::Sqlite => 4,
            Backend::Postgres => 16,
        };
        Db::open_with_max_connections(url, max_size)
    }

    /// `open` with a chosen pool size. The pool keeps one idle connection
    /// and opens more on demand, up to `max_size` (tests use small pools so
    /// that many test databases fit in the server's connection limit).
    pub fn open_with_max_connections(url: &str, max_size: u32) -> Result<Db, DbError> {
        let backend = Backend::of_url(url);
        let manager = ConnectionManager {
            url: url.to_string(),
            backend,
        };
        let mut conn = manager
            .connect()
            .map_err(|e| DbError::Connect(e.to_string()))?;
        let migrations = match backend {
            Backend::Sqlite => SQLITE_MIGRATIONS,
            Backend::Postgres => POSTGRES_MIGRATIONS,
        };
        match &mut conn {
            DbConn::Sqlite(c) => c.run_pending_migrations(migrations).map(|_| ()),
            DbConn::Postgres(c) => c.run_pending_migrations(migrations).map(|_| ()),
        }
        .map_err(|e| DbError::Migration(e.to_string()))?;
        drop(conn);
        let pool = r2d2::Pool::builder()
            .max_size(max_size.max(1))
            .min_idle(Some(1))
            // A SQLite connection is a file handle that cannot go stale; a
            // check per checkout was a parsed `SELECT 1` on every `Db::run`.
            // A PostgreSQL connection can (a server restart), so it is
            // checked before use.
            .test_on_check_out(backend == Backend::Postgres)
            .connection_timeout(Duration::from_secs(10))
            .build(manager)
            .map_err(|e| DbError::Connect(e.to_string()))?;
        Ok(Db {
            pool,
            backend,
            fence: None,
            writer: WriteGate::default(),
            wal: (backend == Backend::Sqlite)
                .then(|| std::sync::Arc::new(wal_sync::WalSync::new(url))),
            group: Default::default(),
        })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Cluster mode: fence the session-scoped writes with this node's leases.
    pub fn with_fence(mut self, fence: std::sync::Arc<cluster::Fence>) -> Db {
        self.fence = Some(fence);
        self
    }

    pub fn fence(&self) -> Option<&cluster::Fence> {
        self.fence.as_deref()
    }

    /// Run `work` with a pooled connection on the blocking pool. On SQLite,
    /// work that changed rows returns only once the WAL holds them on disk
    /// (`wal_sync`): a write is never answered before it is durable.
    pub async fn run<T, F>(&self, work: F) -> Result<T, DbError>
    where
        T: Send + 'static,
        F: FnOnce(&mut DbConn) -> Result<T, DbError> + Send + 'static,
    {
        let db = self.clone();
        tokio::task::spawn_blocking(move || db.run_here(work))
            .await
            .map_err(|_| DbError::Cancelled)?
    }

    /// `run`'s work on the calling thread (a blocking one).
    fn run_here<T>(
        &self,
        work: impl FnOnce(&mut DbConn) -> Result<T, DbError>,
    ) -> Result<T, DbError> {
        let (result, unsynced) = self.run_unsynced(work)?;
        if unsynced {
            self.sync()?;
        }
        result
    }

    /// `run_here` up to the commit, without the sync: the result, and
    /// whether it changed rows that must be synced before it is answered.
    fn run_unsynced<T>(
        &self,
        work: impl FnOnce(&mut DbConn) -> Result<T, DbError>,
    ) -> Result<(Result<T, DbError>, bool), DbError> {
        let mut conn = self.pool.get()?;
        let gate = (self.backend == Backend::Sqlite).then(|| self.writer.clone());
        WRITE_GATE.with(|g| *g.borrow_mut() = gate);
        let before = self.wal.as_ref().map(|_| total_changes(&mut conn));
        let result = work(&mut conn);
        WRITE_GATE.with(|g| g.borrow_mut().take());
        let changed = before.is_some_and(|before| total_changes(&mut conn) != before);
        // The connection goes back to the pool before the sync: the
        // commit is in the WAL already, and a connection held through
        // the sync would cap the commits one sync covers at the pool size.
        drop(conn);
        Ok((result, changed))
    }

    /// SQLite: return once the WAL is on disk up to every commit made so
    /// far (`wal_sync`). PostgreSQL syncs in its own commit.
    fn sync(&self) -> Result<(), DbError> {
        let Some(wal) = &self.wal else {
            return Ok(());
        };
        wal.wait_durable().map_err(|e| {
            log::error!("database: the WAL sync failed: {e}");
            DbError::NotCommitted(format!("the disk did not confirm the write: {e}"))
        })
    }

    /// The group commit of `write_grouped`, started on first use.
    fn write_group(&self) -> &write_group::WriteGroup {
        self.group.get_or_init(|| {
            // The thread's handle has a group of its own (never started),
            // so that dropping the last `Db` ends the thread.
            let mut db = self.clone();
            db.group = Default::default();
            write_group::WriteGroup::start(db)
        })
    }

    /// Run `work` inside one transaction (see [`transaction_in`]).
    pub async fn transaction<T, F>(&self, work: F) -> Result<T, DbError>
    where
        T: Send + 'static,
        F: FnOnce(&mut DbConn) -> Result<T, DbError> + Send + 'static,
    {
        self.run(move |conn| transaction_in(conn, work)).await
    }
}

diesel::define_sql_function! {
    /// SQLite's count of rows changed on this connection.
    #[sql_name = "total_changes"]
    fn sqlite_total_changes() -> diesel::sql_types::BigInt;
}

/// Rows changed on this SQLite connection since it opened (committed or
/// not); a failed read counts as a change, so the write is synced anyway.
/// Asked twice per `Db::run`, as a typed query so that diesel prepares it
/// once per connection.
fn total_changes(conn: &mut DbConn) -> i64 {
    use diesel::RunQueryDsl;
    match conn {
        DbConn::Sqlite(c) => diesel::select(sqlite_total_changes())
            .get_result::<i64>(c)
            .unwrap_or(-1),
        DbConn::Postgres(_) => 0,
    }
}

/// Run `work` inside one transaction on `conn`: the one place transactions
/// start. On SQLite it begins with `BEGIN IMMEDIATE`, taking the write lock
/// up front: a deferred transaction that reads and then writes fails with
/// "database is locked" (SQLITE_BUSY, which the busy timeout cannot wait
/// out) when another writer committed after its read. PostgreSQL begins as
/// usual. Inside `work`, `conn.transaction` nests as a savepoint.
pub fn transaction_in<T, E, F>(conn: &mut DbConn, work: F) -> Result<T, E>
where
    F: FnOnce(&mut DbConn) -> Result<T, E>,
    E: From<diesel::result::Error>,
{
    use diesel::connection::{AnsiTransactionManager, TransactionManager};
    let gate = WRITE_GATE.with(|g| g.borrow().clone());
    let _writing = gate.as_ref().map(|g| g.0.lock());
    match conn {
        DbConn::Sqlite(c) => AnsiTransactionManager::begin_transaction_sql(c, "BEGIN IMMEDIATE")?,
        DbConn::Postgres(_) => <DbConn as TransactionManager<DbConn>>::begin_transaction(conn)?,
    }
    match work(conn) {
        Ok(value) => {
            <DbConn as TransactionManager<DbConn>>::commit_transaction(conn)?;
            Ok(value)
        }
        Err(err) => match <DbConn as TransactionManager<DbConn>>::rollback_transaction(conn) {
            // The caller's error says more than a failed rollback (the pool
            // discards a connection whose transaction manager broke).
            Ok(()) | Err(diesel::result::Error::BrokenTransactionManager) => Err(err),
            Err(rollback) => Err(rollback.into()),
        },
    }
}
/// Cluster mode: nodes, session leases and the fencing check.
pub mod cluster;
/// The session event log across sessions, by cursor (the event stream).
pub mod event_log;
/// Messages (outbound queue, inbound, receipts); `DbMessageStore`
/// implements the actors' `MessageStore` port.
pub mod messages;
/// A session's proxy URL sealed at rest (plain rows still read).
pub mod proxy_seal;
/// QR payloads in the event log last only as long as the QR.
pub mod qr_log;
/// Sessions, API keys and the session event log; `DbStore` implements the
/// actors' `Store` port.
pub mod records;
/// The `table!`s of the records tables, shared by both backends.
pub mod schema;
/// SQLite plans a statement once, whatever values are bound.
mod sqlite_plans;
/// Fresh throw-away databases on both backends, for unit and integration
/// tests (`TestDatabase::all`); unused by the gateway itself.
pub mod testing;
/// SQLite: shared WAL syncs, so every write is durable before it is answered.
mod wal_sync;
/// Webhooks, the delivery outbox and the attempt log; `DbWebhookStore`
/// implements the actors' `WebhookStore` port.
pub mod webhooks;
mod write_group;

#[cfg(test)]
mod tests {
    use diesel::{QueryableByName, RunQueryDsl};

    use super::DbConn;

    #[derive(QueryableByName)]
    struct Synchronous {
        #[diesel(sql_type = diesel::sql_types::Integer)]
        synchronous: i32,
    }

    /// Every pooled SQLite connection commits with `synchronous = NORMAL`
    /// (1), and `Db::run` answers a write only after a WAL sync covers it: a
    /// read syncs nothing, every write (in a transaction or not) one.
    #[tokio::test]
    async fn sqlite_writes_are_synced_before_they_are_answered() {
        use diesel::connection::SimpleConnection;
        let t = super::testing::TestDatabase::sqlite();
        let db = t.open();
        let level = db
            .run(|conn| match conn {
                DbConn::Sqlite(c) => Ok(diesel::sql_query("PRAGMA synchronous")
                    .get_result::<Synchronous>(c)?
                    .synchronous),
                DbConn::Postgres(_) => unreachable!("a SQLite test database"),
            })
            .await
            .unwrap();
        assert_eq!(level, 1, "PRAGMA synchronous: 1 is NORMAL");
        let wal = db.wal.clone().expect("SQLite has a WAL sync");
        let syncs = wal.syncs();
        db.run(|c| Ok(c.batch_execute("SELECT 1")?)).await.unwrap();
        assert_eq!(wal.syncs(), syncs, "a read");
        db.transaction(|c| Ok(c.batch_execute("CREATE TABLE t (x INTEGER)")?))
            .await
            .unwrap();
        db.transaction(|c| Ok(c.batch_execute("INSERT INTO t VALUES (1)")?))
            .await
            .unwrap();
        assert_eq!(
            wal.syncs(),
            syncs + 1,
            "DDL changes no rows; an insert does"
        );
        db.run(|c| Ok(c.batch_execute("DELETE FROM t")?))
            .await
            .unwrap();
        assert_eq!(wal.syncs(), syncs + 2, "an autocommit write");
    }

    /// A transaction that reads, then writes after another writer committed,
    /// must not fail: on SQLite a deferred transaction gets "database is
    /// locked" at its first write (its read snapshot is stale, and the busy
    /// timeout cannot wait that out); `BEGIN IMMEDIATE` makes the other
    /// writer wait for it instead.
    #[tokio::test]
    async fn sqlite_read_then_write_transactions_do_not_fail_on_a_concurrent_writer() {
        use diesel::connection::SimpleConnection;
        let t = super::testing::TestDatabase::sqlite();
        let db = t.open();
        db.run(|c| Ok(c.batch_execute("CREATE TABLE t (x BIGINT NOT NULL)")?))
            .await
            .unwrap();
        let (read_tx, read_rx) = std::sync::mpsc::channel::<()>();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let reader = db.transaction(move |c| {
            c.batch_execute("SELECT count(*) FROM t")?;
            read_tx.send(()).unwrap();
            // Give the other writer its chance to commit first (with BEGIN
            // IMMEDIATE it cannot: it waits for this transaction).
            let _ = done_rx.recv_timeout(std::time::Duration::from_secs(2));
            c.batch_execute("INSERT INTO t VALUES (1)")?;
            Ok(())
        });
        let writer_db = db.clone();
        let writer = async move {
            tokio::task::spawn_blocking(move || read_rx.recv().unwrap())
                .await
                .unwrap();
            let res = writer_db
                .transaction(|c| Ok(c.batch_execute("INSERT INTO t VALUES (2)")?))
                .await;
            let _ = done_tx.send(());
            res
        };
        let (reader, writer) = tokio::join!(reader, writer);
        assert!(reader.is_ok(), "the reading transaction failed: {reader:?}");
        assert!(writer.is_ok(), "the other writer failed: {writer:?}");
        #[derive(QueryableByName)]
        struct Count {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            n: i64,
        }
        let n = db
            .run(|c| match c {
                DbConn::Sqlite(c) => Ok(diesel::sql_query("SELECT count(*) AS n FROM t")
                    .get_result::<Count>(c)?
                    .n),
                DbConn::Postgres(_) => unreachable!("a SQLite test database"),
            })
            .await
            .unwrap();
        assert_eq!(n, 2);
    }
}
