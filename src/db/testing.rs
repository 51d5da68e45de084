//! Throw-away databases for tests, on both backends.
//!
//! Compiled into the product (integration tests in `tests/` cannot see
//! `#[cfg(test)]` items) but only ever creates and drops databases of its
//! own, named `wasup_test_<random>`; nothing in the gateway calls it.
//!
//! ```ignore
//! use wasup::db::testing::TestDatabase;
//!
//! for t in TestDatabase::all("my_test") {
//!     let db = t.open();            // migrated, empty
//!     // … or hand t.url() to a server under test …
//! }                                 // dropped here: file removed / DROP DATABASE
//! ```
//!
//! - SQLite: a fresh file in a fresh directory under the system temp dir.
//! - PostgreSQL: only when `WASUP_TEST_DATABASE_URL` names a server
//!   (e.g. `postgres://postgres@127.0.0.1:5432/test`). The helper connects to
//!   that URL, runs `CREATE DATABASE wasup_test_<random>`, points the URL at
//!   it and drops it (`WITH (FORCE)`, so open pools do not block) when the
//!   [`TestDatabase`] is dropped, also when the test panics. Without the
//!   variable [`TestDatabase::postgres`] returns None and says so on stderr
//!   ("<test>: postgres half skipped: …"), uncaptured, so every run shows it.

use std::path::PathBuf;

use diesel::connection::SimpleConnection;
use diesel::{Connection, PgConnection};

use super::{Backend, Db};

/// The environment variable naming the PostgreSQL server tests may use.
pub const POSTGRES_URL_VAR: &str = "WASUP_TEST_DATABASE_URL";

/// A fresh, empty database that is removed when this value is dropped.
pub struct TestDatabase {
    url: String,
    backend: Backend,
    cleanup: Cleanup,
}

enum Cleanup {
    /// Remove this directory (the SQLite file and its -wal/-shm).
    Dir(PathBuf),
    /// `DROP DATABASE name` through a connection to `admin_url`.
    Postgres { admin_url: String, name: String },
}

impl TestDatabase {
    /// A fresh SQLite database file. Panics when the temp dir is unusable.
    pub fn sqlite() -> TestDatabase {
        let dir =
            std::env::temp_dir().join(format!("wasup-test-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        let url = dir.join("wasup.db").to_string_lossy().into_owned();
        TestDatabase {
            url,
            backend: Backend::Sqlite,
            cleanup: Cleanup::Dir(dir),
        }
    }

    /// A fresh PostgreSQL database on the server `WASUP_TEST_DATABASE_URL`
    /// names, or None (with a line on stderr naming `test`) when the
    /// variable is unset.
    /// Panics when the variable is set but the server refuses: a configured
    /// backend that silently skips would hide failures.
    pub fn postgres(test: &str) -> Option<TestDatabase> {
        let admin_url = match std::env::var(POSTGRES_URL_VAR) {
            Ok(url) if !url.trim().is_empty() => url.trim().to_string(),
            _ => {
                say_skipped(test);
                return None;
            }
        };
        let name = format!("wasup_test_{}", uuid::Uuid::new_v4().simple());
        let mut admin = PgConnection::establish(&admin_url)
            .unwrap_or_else(|e| panic!("{POSTGRES_URL_VAR}: cannot connect: {e}"));
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
        Some(TestDatabase {
            url: with_database(&admin_url, &name),
            backend: Backend::Postgres,
            cleanup: Cleanup::Postgres { admin_url, name },
        })
    }

    /// SQLite always, PostgreSQL when configured.
    pub fn all(test: &str) -> Vec<TestDatabase> {
        let mut dbs = vec![TestDatabase::sqlite()];
        dbs.extend(TestDatabase::postgres(test));
        dbs
    }

    /// The URL to hand to `Db::open` or to a server under test.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Open (and migrate) the database with a small pool (up to 4
    /// connections, opened on demand), so that many tests running at once
    /// stay within the server's connection limit. Panics on failure.
    pub fn open(&self) -> Db {
        Db::open_with_max_connections(&self.url, 4)
            .unwrap_or_else(|e| panic!("{:?} test database: {e}", self.backend))
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        match &self.cleanup {
            Cleanup::Dir(dir) => {
                let _ = std::fs::remove_dir_all(dir);
            }
            Cleanup::Postgres { admin_url, name } => {
                let dropped = PgConnection::establish(admin_url)
                    .map_err(|e| e.to_string())
                    .and_then(|mut c| {
                        // FORCE (PostgreSQL 13+) closes connections a pool
                        // still holds; older servers get the plain form.
                        c.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                            .or_else(|_| {
                                c.batch_execute(&format!("DROP DATABASE IF EXISTS {name}"))
                            })
                            .map_err(|e| e.to_string())
                    });
                if let Err(e) = dropped {
                    eprintln!("could not drop test database {name}: {e}");
                }
            }
        }
    }
}

/// One line per skipping test, written to the process's stderr itself: the
/// test harness captures `eprintln!` of passing tests, and a skipped half
/// must show in every run's output, not only with `--nocapture`.
fn say_skipped(test: &str) {
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "{test}: postgres half skipped: {POSTGRES_URL_VAR} is not set \
         (e.g. postgres://postgres@127.0.0.1:5432/postgres)"
    );
}

/// The running test's name (the harness names each test's thread after it).
pub fn current_test() -> String {
    std::thread::current()
        .name()
        .unwrap_or("a test")
        .to_string()
}

/// `url` with its database name replaced by `name` (query string kept).
pub fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.find('?') {
        Some(i) => (&url[..i], &url[i..]),
        None => (url, ""),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let base = match base[authority_start..].find('/') {
        Some(i) => &base[..authority_start + i],
        None => base,
    };
    format!("{base}/{name}{query}")
}

/// Unit tests of a store on both backends: every `async fn(TestDatabase)`
/// named runs once on a fresh SQLite file (`sqlite::name`) and once on a
/// fresh PostgreSQL database (`postgres::name`, skipped with a note unless
/// `WASUP_TEST_DATABASE_URL` is set).
#[cfg(test)]
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(crate::db::testing::TestDatabase::sqlite()).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    let Some(t) = crate::db::testing::TestDatabase::postgres(stringify!($name)) else {
                        return;
                    };
                    super::$name(t).await;
                }
            )*
        }
    };
}
#[cfg(test)]
pub(crate) use both_backends;

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn with_database_replaces_or_adds_the_path() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/test", "x"),
            "postgres://postgres@127.0.0.1:5432/x"
        );
        assert_eq!(
            with_database("postgresql://u:p@h/db?sslmode=disable", "x"),
            "postgresql://u:p@h/x?sslmode=disable"
        );
        assert_eq!(
            with_database("postgres://h:5432", "x"),
            "postgres://h:5432/x"
        );
        assert_eq!(with_database("postgres://h/", "x"), "postgres://h/x");
    }
}
