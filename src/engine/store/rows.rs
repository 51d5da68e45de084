//! The row helpers every trait module shares: the `device_state` row, its
//! key, sealing and opening values, and the get/put/select/delete queries
//! (one `Filter` says which rows).

use diesel::prelude::*;
use diesel::upsert::excluded;
use whatsapp_rust::bytes::Bytes;
use whatsapp_rust::wacore::store::error::{Result, StoreError};

use super::hot::HotRows;
use super::{device_state, ds, DeviceDb};
use crate::db::{DbConn, DbError};

#[derive(Clone, Debug, Insertable, Queryable, Selectable)]
#[diesel(table_name = device_state)]
pub(super) struct Row {
    pub(super) session_id: String,
    pub(super) kind: String,
    pub(super) k: String,
    pub(super) k2: String,
    pub(super) k3: String,
    pub(super) value: Vec<u8>,
    pub(super) n1: i64,
    pub(super) n2: Option<i64>,
}

pub(super) fn db_err(e: DbError) -> StoreError {
    StoreError::Database(Box::new(e))
}

pub(super) fn ser_err(e: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::Serialization(Box::new(e))
}

/// The key of one item (besides the session).
#[derive(Clone, Copy)]
pub(super) struct Key<'a> {
    pub(super) kind: &'static str,
    pub(super) k: &'a str,
    pub(super) k2: &'a str,
    pub(super) k3: &'a str,
}

pub(super) fn key<'a>(kind: &'static str, k: &'a str) -> Key<'a> {
    Key {
        kind,
        k,
        k2: "",
        k3: "",
    }
}

pub(super) fn key2<'a>(kind: &'static str, k: &'a str, k2: &'a str) -> Key<'a> {
    Key {
        kind,
        k,
        k2,
        k3: "",
    }
}

/// Which rows of one kind (of this session) a read or a delete touches;
/// every field left out matches all rows.
#[derive(Clone, Default)]
pub(super) struct Filter {
    k: Option<String>,
    k_in: Option<Vec<String>>,
    k2: Option<String>,
    k2_in: Option<Vec<String>>,
    k3: Option<String>,
    /// `n1 < t`: written before a cutoff.
    n1_before: Option<i64>,
    /// `n1 != 0 && n1 <= t`: an expiry (0 is none) that has passed.
    expired_by: Option<i64>,
    /// Reads only: the highest `n1` first.
    newest_first: bool,
}

impl Filter {
    pub(super) fn all() -> Filter {
        Filter::default()
    }

    /// Exactly the row of `key`.
    fn exact(key: Key<'_>) -> Filter {
        Filter {
            k: Some(key.k.to_string()),
            k2: Some(key.k2.to_string()),
            k3: Some(key.k3.to_string()),
            ..Filter::default()
        }
    }

    pub(super) fn k(mut self, k: &str) -> Filter {
        self.k = Some(k.to_string());
        self
    }

    pub(super) fn k_in(mut self, set: Vec<String>) -> Filter {
        self.k_in = Some(set);
        self
    }

    pub(super) fn k2(mut self, k2: &str) -> Filter {
        self.k2 = Some(k2.to_string());
        self
    }

    pub(super) fn k2_in(mut self, set: Vec<String>) -> Filter {
        self.k2_in = Some(set);
        self
    }

    pub(super) fn n1_before(mut self, cutoff: i64) -> Filter {
        self.n1_before = Some(cutoff);
        self
    }

    pub(super) fn expired_by(mut self, cutoff: i64) -> Filter {
        self.expired_by = Some(cutoff);
        self
    }

    pub(super) fn newest_first(mut self) -> Filter {
        self.newest_first = true;
        self
    }
}

/// Narrows a select or delete of `device_state` to one session, one kind
/// and a `Filter`, boxed so the optional parts can be added one by one.
macro_rules! narrowed {
    ($q:expr, $sid:expr, $kind:expr, $filter:expr) => {{
        let f: &Filter = $filter;
        let mut q = $q
            .filter(ds::session_id.eq($sid.clone()))
            .filter(ds::kind.eq($kind))
            .into_boxed();
        if let Some(v) = &f.k {
            q = q.filter(ds::k.eq(v.clone()));
        }
        if let Some(v) = &f.k_in {
            q = q.filter(ds::k.eq_any(v.clone()));
        }
        if let Some(v) = &f.k2 {
            q = q.filter(ds::k2.eq(v.clone()));
        }
        if let Some(v) = &f.k2_in {
            q = q.filter(ds::k2.eq_any(v.clone()));
        }
        if let Some(v) = &f.k3 {
            q = q.filter(ds::k3.eq(v.clone()));
        }
        if let Some(t) = f.n1_before {
            q = q.filter(ds::n1.lt(t));
        }
        if let Some(t) = f.expired_by {
            q = q.filter(ds::n1.ne(0i64)).filter(ds::n1.le(t));
        }
        q
    }};
}

impl DeviceDb {
    /// Associated data binding a sealed value to its row.
    fn aad(&self, kind: &str, k: &str, k2: &str, k3: &str) -> Vec<u8> {
        let parts = [&self.sid[..], kind, k, k2, k3];
        let mut aad = Vec::with_capacity(parts.iter().map(|p| p.len() + 1).sum());
        for part in parts {
            aad.extend_from_slice(part.as_bytes());
            aad.push(0);
        }
        aad
    }

    pub(super) fn row(&self, key: Key<'_>, plain: &[u8], n1: i64, n2: Option<i64>) -> Row {
        Row {
            session_id: self.sid.clone(),
            kind: key.kind.to_string(),
            k: key.k.to_string(),
            k2: key.k2.to_string(),
            k3: key.k3.to_string(),
            value: self
                .secrets
                .seal(&self.aad(key.kind, key.k, key.k2, key.k3), plain),
            n1,
            n2,
        }
    }

    pub(super) fn open(&self, row: &Row) -> Result<Vec<u8>> {
        let aad = self.aad(&row.kind, &row.k, &row.k2, &row.k3);
        self.secrets
            .open(&aad, &row.value)
            .map_err(|e| StoreError::Validation(format!("device_state {}: {e}", row.kind)))
    }

    pub(super) async fn upsert(&self, rows: Vec<Row>) -> Result<()> {
        self.upsert_merged(rows, None).await
    }

    /// `upsert`, where `merge` (if any) first folds the numbers of a row
    /// already stored under the same key into the new row, in the same
    /// transaction: a read-modify-write in one database call.
    pub(super) async fn upsert_merged(
        &self,
        mut rows: Vec<Row>,
        merge: Option<MergeNumbers>,
    ) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        // Cluster mode: only the session's owner writes (the lease's generation).
        // Grouped with the other sessions' writes: a send writes three times.
        let (db, sid) = (self.db.clone(), self.sid.clone());
        self.db
            .write_grouped(self.sid.clone(), move |conn| {
                db.check_owner(conn, &sid)?;
                if let Some(merge) = merge {
                    for row in &mut rows {
                        if let Some(old) = stored_numbers(conn, row)? {
                            merge(row, old);
                        }
                    }
                }
                upsert_rows(conn, &rows).map_err(DbError::from)
            })
            .await
            .map_err(db_err)
    }

    pub(super) async fn put(
        &self,
        key: Key<'_>,
        plain: &[u8],
        n1: i64,
        n2: Option<i64>,
    ) -> Result<()> {
        let row = self.row(key, plain, n1, n2);
        if !self.is_hot(key) {
            return self.upsert(vec![row]).await;
        }
        self.upsert_kept(key.kind, vec![row], vec![(key.k, plain)])
            .await
    }

    /// `upsert` of rows of a kind `hot` keeps, given with their plaintexts:
    /// what is kept follows what was stored.
    pub(super) async fn upsert_kept(
        &self,
        kind: &'static str,
        rows: Vec<Row>,
        plains: Vec<(&str, &[u8])>,
    ) -> Result<()> {
        let keys: Vec<&str> = plains.iter().map(|(k, _)| *k).collect();
        let began = self.hot.writing(kind, &keys);
        let stored = self.upsert(rows).await;
        let values = plains
            .into_iter()
            .map(|(k, plain)| (k, Bytes::copy_from_slice(plain)))
            .collect();
        self.hot.written(began, kind, values, stored.is_ok());
        stored
    }

    /// Is this key's item kept in memory (`hot`)?
    pub(super) fn is_hot(&self, key: Key<'_>) -> bool {
        HotRows::keeps(key.kind) && key.k2.is_empty() && key.k3.is_empty()
    }

    pub(super) async fn get(&self, key: Key<'_>) -> Result<Option<Row>> {
        self.first_row(key.kind, Filter::exact(key)).await
    }

    pub(super) async fn get_value(&self, key: Key<'_>) -> Result<Option<Vec<u8>>> {
        if self.is_hot(key) {
            return Ok(self.get_hot(key).await?.map(|v| v.to_vec()));
        }
        match self.get(key).await? {
            Some(row) => Ok(Some(self.open(&row)?)),
            None => Ok(None),
        }
    }

    /// A `hot` item's plaintext: from memory, or read and kept.
    pub(super) async fn get_hot(&self, key: Key<'_>) -> Result<Option<Bytes>> {
        let generation = match self.hot.get(key.kind, key.k) {
            Ok(known) => return Ok(known),
            Err(generation) => generation,
        };
        let known = match self.get(key).await? {
            Some(row) => Some(Bytes::from(self.open(&row)?)),
            None => None,
        };
        self.hot.fill(generation, key.kind, key.k, known.clone());
        Ok(known)
    }

    pub(super) async fn exists(&self, key: Key<'_>) -> Result<bool> {
        if self.is_hot(key) {
            return Ok(self.get_hot(key).await?.is_some());
        }
        Ok(self.get(key).await?.is_some())
    }

    pub(super) async fn delete(&self, key: Key<'_>) -> Result<()> {
        self.delete_rows(key.kind, Filter::exact(key)).await?;
        Ok(())
    }

    /// The rows of a kind that pass `filter`.
    pub(super) async fn rows(&self, kind: &'static str, filter: Filter) -> Result<Vec<Row>> {
        self.select(kind, filter, None).await
    }

    /// The first row of a kind that passes `filter`.
    pub(super) async fn first_row(
        &self,
        kind: &'static str,
        filter: Filter,
    ) -> Result<Option<Row>> {
        Ok(self.select(kind, filter, Some(1)).await?.pop())
    }

    async fn select(
        &self,
        kind: &'static str,
        filter: Filter,
        limit: Option<i64>,
    ) -> Result<Vec<Row>> {
        let sid = self.sid.clone();
        self.db
            .run(move |conn| {
                each_backend!(conn, c => {
                    let mut q = narrowed!(
                        ds::device_state.select(Row::as_select()),
                        sid,
                        kind,
                        &filter
                    );
                    if filter.newest_first {
                        q = q.order(ds::n1.desc());
                    }
                    if let Some(n) = limit {
                        q = q.limit(n);
                    }
                    q.load(c).map_err(DbError::from)
                })
            })
            .await
            .map_err(db_err)
    }

    /// Delete the rows of a kind that pass `filter`; returns how many.
    pub(super) async fn delete_rows(&self, kind: &'static str, filter: Filter) -> Result<usize> {
        // Kept items of the kind are forgotten before and after (`hot`).
        self.hot.forget_kind(kind);
        let (db, sid) = (self.db.clone(), self.sid.clone());
        let deleted = self
            .db
            .run(move |conn| {
                crate::db::transaction_in(conn, |conn| {
                    db.check_fence(conn, &sid)?;
                    each_backend!(conn, c => {
                        narrowed!(diesel::delete(ds::device_state), sid, kind, &filter)
                            .execute(c)
                            .map_err(DbError::from)
                    })
                })
            })
            .await
            .map_err(db_err);
        self.hot.forget_kind(kind);
        deleted
    }

    pub(super) fn owned(&self, key: Key<'_>) -> (String, String, String, String, String) {
        (
            self.sid.clone(),
            key.kind.to_string(),
            key.k.to_string(),
            key.k2.to_string(),
            key.k3.to_string(),
        )
    }

    pub(super) async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        key: Key<'_>,
    ) -> Result<Option<T>> {
        match self.get_value(key).await? {
            Some(bytes) => Ok(Some(serde_json::from_slice(&bytes).map_err(ser_err)?)),
            None => Ok(None),
        }
    }

    pub(super) fn json<T: serde::Serialize>(value: &T) -> Result<Vec<u8>> {
        serde_json::to_vec(value).map_err(ser_err)
    }
}

/// Folds a stored row's `(n1, n2)` into the row about to replace it.
pub(super) type MergeNumbers = fn(&mut Row, (i64, Option<i64>));

/// The `(n1, n2)` stored under `row`'s key, if a row is.
fn stored_numbers(conn: &mut DbConn, row: &Row) -> QueryResult<Option<(i64, Option<i64>)>> {
    each_backend!(conn, c => ds::device_state
        .filter(ds::session_id.eq(&row.session_id))
        .filter(ds::kind.eq(&row.kind))
        .filter(ds::k.eq(&row.k))
        .filter(ds::k2.eq(&row.k2))
        .filter(ds::k3.eq(&row.k3))
        .select((ds::n1, ds::n2))
        .first(c)
        .optional())
}

/// Insert or replace rows in one transaction. Upserts need the backend's own
/// `ON CONFLICT`, hence the explicit branches.
pub(super) fn upsert_rows(conn: &mut DbConn, rows: &[Row]) -> QueryResult<()> {
    each_backend!(conn, c => c.transaction(|c| {
        for row in rows {
            diesel::insert_into(ds::device_state)
                .values(row)
                .on_conflict((ds::session_id, ds::kind, ds::k, ds::k2, ds::k3))
                .do_update()
                .set((
                    ds::value.eq(excluded(ds::value)),
                    ds::n1.eq(excluded(ds::n1)),
                    ds::n2.eq(excluded(ds::n2)),
                ))
                .execute(c)?;
        }
        Ok(())
    }))
}

pub(super) fn now_micros() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

pub(super) fn to_arr32(bytes: Vec<u8>, what: &str) -> Result<[u8; 32]> {
    let len = bytes.len();
    bytes
        .try_into()
        .map_err(|_| StoreError::Validation(format!("{what}: expected 32 bytes, got {len}")))
}
