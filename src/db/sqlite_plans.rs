//! SQLite query plans that do not depend on bound values.
//!
//! The bundled SQLite is built with `SQLITE_ENABLE_STAT4`, and with it the
//! planner looks at the value bound to `LIMIT ?` (diesel binds every limit,
//! `.first()` included) and marks the statement as depending on it: each
//! rebind expires the cached statement and the next step parses and plans
//! the SQL again. Under the message load that was about 13 % of the
//! process's CPU, spent re-preparing the queue-head and status queries.
//! The query planner stability guarantee (QPSG) makes SQLite plan once per
//! statement, whatever is bound, so diesel's statement cache holds.
//!
//! diesel does not hand out its raw connection, so the setting is applied
//! by an SQLite auto-extension: a hook SQLite calls for every connection the
//! process opens after it is registered.

use std::os::raw::{c_char, c_int};
use std::sync::Once;

use libsqlite3_sys as ffi;

/// Register the hook (once per process) before the first connection opens.
pub(crate) fn stable_plans_for_new_connections() {
    static REGISTER: Once = Once::new();
    REGISTER.call_once(|| {
        // SAFETY: `enable_qpsg` has the entry-point signature SQLite expects
        // and stays valid for the life of the process.
        let rc = unsafe { ffi::sqlite3_auto_extension(Some(enable_qpsg)) };
        if rc != ffi::SQLITE_OK {
            log::warn!("database: SQLite plans stay value-dependent (auto-extension: {rc})");
        }
    });
}

unsafe extern "C" fn enable_qpsg(
    db: *mut ffi::sqlite3,
    _err: *mut *mut c_char,
    _api: *const ffi::sqlite3_api_routines,
) -> c_int {
    // SAFETY: SQLite calls this with the connection it is opening.
    unsafe {
        ffi::sqlite3_db_config(
            db,
            ffi::SQLITE_DBCONFIG_ENABLE_QPSG,
            1 as c_int,
            std::ptr::null_mut::<c_int>(),
        );
    }
    ffi::SQLITE_OK
}

#[cfg(test)]
mod tests {
    use std::ffi::CString;

    use super::*;

    /// Prepares `SELECT … LIMIT ?` on a fresh raw connection, runs it with
    /// `runs` different limits, and returns how often SQLite re-prepared it.
    unsafe fn reprepares_of_limit_query(qpsg: Option<bool>, runs: i64) -> c_int {
        unsafe {
            let mut db = std::ptr::null_mut();
            let name = CString::new(":memory:").unwrap();
            assert_eq!(ffi::sqlite3_open(name.as_ptr(), &mut db), ffi::SQLITE_OK);
            if let Some(on) = qpsg {
                ffi::sqlite3_db_config(
                    db,
                    ffi::SQLITE_DBCONFIG_ENABLE_QPSG,
                    c_int::from(on),
                    std::ptr::null_mut::<c_int>(),
                );
            }
            let setup = CString::new(
                "CREATE TABLE t (a TEXT, b INTEGER); CREATE INDEX t_a ON t (a, b);\
                 INSERT INTO t VALUES ('x', 1), ('x', 2), ('y', 3);",
            )
            .unwrap();
            let rc = ffi::sqlite3_exec(
                db,
                setup.as_ptr(),
                None,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            );
            assert_eq!(rc, ffi::SQLITE_OK);
            let sql = CString::new("SELECT b FROM t WHERE a = ? ORDER BY b LIMIT ?").unwrap();
            let mut stmt = std::ptr::null_mut();
            let flags = ffi::SQLITE_PREPARE_PERSISTENT;
            let rc = ffi::sqlite3_prepare_v3(
                db,
                sql.as_ptr(),
                -1,
                flags,
                &mut stmt,
                std::ptr::null_mut(),
            );
            assert_eq!(rc, ffi::SQLITE_OK);
            let x = CString::new("x").unwrap();
            for limit in 1..=runs {
                ffi::sqlite3_bind_text(stmt, 1, x.as_ptr(), -1, ffi::SQLITE_TRANSIENT());
                ffi::sqlite3_bind_int64(stmt, 2, limit);
                while ffi::sqlite3_step(stmt) == ffi::SQLITE_ROW {}
                ffi::sqlite3_reset(stmt);
            }
            let n = ffi::sqlite3_stmt_status(stmt, ffi::SQLITE_STMTSTATUS_REPREPARE, 0);
            ffi::sqlite3_finalize(stmt);
            ffi::sqlite3_close(db);
            n
        }
    }

    #[test]
    fn a_rebound_limit_does_not_re_prepare_the_statement() {
        stable_plans_for_new_connections();
        // SAFETY: raw FFI on connections this test owns.
        unsafe {
            // The hook's setting, as every gateway connection gets it.
            assert_eq!(reprepares_of_limit_query(None, 5), 0);
            // The same connection with the guarantee off: each new limit
            // expires the plan (what the hook prevents).
            assert!(reprepares_of_limit_query(Some(false), 5) >= 4);
        }
    }
}
