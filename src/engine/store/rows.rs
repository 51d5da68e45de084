//! The row helpers every trait module shares: the `device_state` row, its
//! key, sealing and opening values, and the get/put/list/delete queries.

use diesel::prelude::*;
use diesel::upsert::excluded;
use whatsapp_rust::wacore::store::error::{Result, StoreError};

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
        if rows.is_empty() {
            return Ok(());
        }
        self.db
            .run(move |conn| upsert_rows(conn, &rows).map_err(DbError::from))
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
        self.upsert(vec![row]).await
    }

    pub(super) async fn get(&self, key: Key<'_>) -> Result<Option<Row>> {
        let (sid, kind, k, k2, k3) = self.owned(key);
        self.db
            .run(move |conn| {
                each_backend!(conn, c => ds::device_state
                    .filter(ds::session_id.eq(&sid))
                    .filter(ds::kind.eq(&kind))
                    .filter(ds::k.eq(&k))
                    .filter(ds::k2.eq(&k2))
                    .filter(ds::k3.eq(&k3))
                    .select(Row::as_select())
                    .first(c)
                    .optional()
                    .map_err(DbError::from))
            })
            .await
            .map_err(db_err)
    }

    pub(super) async fn get_value(&self, key: Key<'_>) -> Result<Option<Vec<u8>>> {
        match self.get(key).await? {
            Some(row) => Ok(Some(self.open(&row)?)),
            None => Ok(None),
        }
    }

    pub(super) async fn exists(&self, key: Key<'_>) -> Result<bool> {
        let (sid, kind, k, k2, k3) = self.owned(key);
        self.db
            .run(move |conn| {
                each_backend!(conn, c => diesel::select(diesel::dsl::exists(ds::device_state
                    .filter(ds::session_id.eq(&sid))
                    .filter(ds::kind.eq(&kind))
                    .filter(ds::k.eq(&k))
                    .filter(ds::k2.eq(&k2))
                    .filter(ds::k3.eq(&k3))))
                    .get_result::<bool>(c)
                    .map_err(DbError::from))
            })
            .await
            .map_err(db_err)
    }

    pub(super) async fn delete(&self, key: Key<'_>) -> Result<()> {
        let (sid, kind, k, k2, k3) = self.owned(key);
        self.db
            .run(move |conn| {
                each_backend!(conn, c => diesel::delete(ds::device_state
                    .filter(ds::session_id.eq(&sid))
                    .filter(ds::kind.eq(&kind))
                    .filter(ds::k.eq(&k))
                    .filter(ds::k2.eq(&k2))
                    .filter(ds::k3.eq(&k3)))
                    .execute(c)
                    .map_err(DbError::from))
            })
            .await
            .map_err(db_err)?;
        Ok(())
    }

    /// Every row of a kind, optionally only those with `k`.
    pub(super) async fn list(&self, kind: &'static str, k: Option<&str>) -> Result<Vec<Row>> {
        let sid = self.sid.clone();
        let k = k.map(str::to_string);
        self.db
            .run(move |conn| {
                each_backend!(conn, c => {
                    let mut q = ds::device_state
                        .filter(ds::session_id.eq(&sid))
                        .filter(ds::kind.eq(kind))
                        .select(Row::as_select())
                        .into_boxed();
                    if let Some(k) = &k {
                        q = q.filter(ds::k.eq(k.clone()));
                    }
                    q.load(c).map_err(DbError::from)
                })
            })
            .await
            .map_err(db_err)
    }

    /// Delete rows of a kind: all, or those with `k`, or those with `k` and `k2` in a set.
    pub(super) async fn delete_where(
        &self,
        kind: &'static str,
        k: Option<&str>,
        k2_in: Option<Vec<String>>,
    ) -> Result<usize> {
        let sid = self.sid.clone();
        let k = k.map(str::to_string);
        self.db
            .run(move |conn| {
                each_backend!(conn, c => {
                    let mut q = diesel::delete(ds::device_state)
                        .filter(ds::session_id.eq(&sid))
                        .filter(ds::kind.eq(kind))
                        .into_boxed();
                    if let Some(k) = &k {
                        q = q.filter(ds::k.eq(k.clone()));
                    }
                    if let Some(set) = &k2_in {
                        q = q.filter(ds::k2.eq_any(set.clone()));
                    }
                    q.execute(c).map_err(DbError::from)
                })
            })
            .await
            .map_err(db_err)
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

    /// Delete rows of `kind` whose `n1` (a timestamp) is before `cutoff`.
    pub(super) async fn delete_older(&self, kind: &'static str, cutoff: i64) -> Result<u32> {
        let sid = self.sid.clone();
        let n = self
            .db
            .run(move |conn| {
                each_backend!(conn, c => diesel::delete(ds::device_state
                    .filter(ds::session_id.eq(&sid))
                    .filter(ds::kind.eq(kind))
                    .filter(ds::n1.lt(cutoff)))
                    .execute(c)
                    .map_err(DbError::from))
            })
            .await
            .map_err(db_err)?;
        Ok(n as u32)
    }
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
