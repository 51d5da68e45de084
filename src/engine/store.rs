//! wacore's storage traits over our database, one `DeviceDb` per session.
//!
//! Every item lives in one generic table, `device_state`, keyed by
//! `(session_id, kind, k, k2, k3)`. `value` is always sealed with the master
//! key (`SecretBox`, bound to the row's key as associated data, so a row
//! copied elsewhere does not open); `n1`/`n2` hold the few numbers a trait
//! filters or sorts on (ids, timestamps, flags). Behaviour follows wacore's
//! `InMemoryBackend` method by method.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use diesel::prelude::*;
use diesel::upsert::excluded;
use whatsapp_rust::bytes::Bytes;
use whatsapp_rust::wacore;
use whatsapp_rust::wacore::appstate::hash::HashState;
use whatsapp_rust::wacore::store::error::{Result, StoreError};
use whatsapp_rust::wacore::store::traits::*;
use whatsapp_rust::wacore::store::Device;

use crate::crypto::SecretBox;
use crate::db::{Db, DbConn, DbError};

use crate::db::schema::device_state;
use device_state::dsl as ds;

#[derive(Clone, Debug, Insertable, Queryable, Selectable)]
#[diesel(table_name = device_state)]
struct Row {
    session_id: String,
    kind: String,
    k: String,
    k2: String,
    k3: String,
    value: Vec<u8>,
    n1: i64,
    n2: Option<i64>,
}

/// Run the same diesel code on whichever backend the connection is.
macro_rules! each_backend {
    ($conn:expr, $c:ident => $body:expr) => {
        match $conn {
            DbConn::Sqlite($c) => $body,
            DbConn::Postgres($c) => $body,
        }
    };
}

// Kinds of items.
const DEVICE: &str = "device";
const IDENTITY: &str = "identity";
const SESSION: &str = "session";
const PREKEY: &str = "prekey";
const SIGNED_PREKEY: &str = "signed_prekey";
const SENDER_KEY: &str = "sender_key";
const SYNC_KEY: &str = "sync_key";
const LATEST_SYNC_KEY: &str = "latest_sync_key";
const APP_VERSION: &str = "app_state_version";
const MUTATION_MAC: &str = "mutation_mac";
const SKD: &str = "sender_key_device";
const LID: &str = "lid_mapping";
const BASE_KEY: &str = "base_key";
const DEVICE_LIST: &str = "device_list";
const GROUP_META: &str = "group_metadata";
const TC_TOKEN: &str = "tc_token";
const SENT_MSG: &str = "sent_message";
const PENDING_IN: &str = "pending_inbound";
const MSG_SECRET: &str = "msg_secret";

fn db_err(e: DbError) -> StoreError {
    StoreError::Database(Box::new(e))
}

fn ser_err(e: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::Serialization(Box::new(e))
}

/// The key of one item (besides the session).
#[derive(Clone, Copy)]
struct Key<'a> {
    kind: &'static str,
    k: &'a str,
    k2: &'a str,
    k3: &'a str,
}

fn key<'a>(kind: &'static str, k: &'a str) -> Key<'a> {
    Key {
        kind,
        k,
        k2: "",
        k3: "",
    }
}

fn key2<'a>(kind: &'static str, k: &'a str, k2: &'a str) -> Key<'a> {
    Key {
        kind,
        k,
        k2,
        k3: "",
    }
}

/// Delete every device row of a session (logout, delete).
pub async fn forget_session(db: &Db, session_id: &str) -> std::result::Result<usize, DbError> {
    let sid = session_id.to_string();
    db.run(move |conn| {
        each_backend!(conn, c => diesel::delete(ds::device_state.filter(ds::session_id.eq(&sid)))
            .execute(c)
            .map_err(DbError::from))
    })
    .await
}

/// The device store of one session.
pub struct DeviceDb {
    db: Db,
    secrets: Arc<SecretBox>,
    sid: String,
    /// Serializes read-modify-write operations the traits require to be
    /// atomic (tc tokens, message secrets). One store serves one client.
    rmw: tokio::sync::Mutex<()>,
}

impl DeviceDb {
    pub fn new(db: Db, secrets: Arc<SecretBox>, session_id: impl Into<String>) -> DeviceDb {
        DeviceDb {
            db,
            secrets,
            sid: session_id.into(),
            rmw: tokio::sync::Mutex::new(()),
        }
    }

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

    fn row(&self, key: Key<'_>, plain: &[u8], n1: i64, n2: Option<i64>) -> Row {
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

    fn open(&self, row: &Row) -> Result<Vec<u8>> {
        let aad = self.aad(&row.kind, &row.k, &row.k2, &row.k3);
        self.secrets
            .open(&aad, &row.value)
            .map_err(|e| StoreError::Validation(format!("device_state {}: {e}", row.kind)))
    }

    async fn upsert(&self, rows: Vec<Row>) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        self.db
            .run(move |conn| upsert_rows(conn, &rows).map_err(DbError::from))
            .await
            .map_err(db_err)
    }

    async fn put(&self, key: Key<'_>, plain: &[u8], n1: i64, n2: Option<i64>) -> Result<()> {
        let row = self.row(key, plain, n1, n2);
        self.upsert(vec![row]).await
    }

    async fn get(&self, key: Key<'_>) -> Result<Option<Row>> {
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

    async fn get_value(&self, key: Key<'_>) -> Result<Option<Vec<u8>>> {
        match self.get(key).await? {
            Some(row) => Ok(Some(self.open(&row)?)),
            None => Ok(None),
        }
    }

    async fn exists(&self, key: Key<'_>) -> Result<bool> {
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

    async fn delete(&self, key: Key<'_>) -> Result<()> {
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
    async fn list(&self, kind: &'static str, k: Option<&str>) -> Result<Vec<Row>> {
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
    async fn delete_where(
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

    fn owned(&self, key: Key<'_>) -> (String, String, String, String, String) {
        (
            self.sid.clone(),
            key.kind.to_string(),
            key.k.to_string(),
            key.k2.to_string(),
            key.k3.to_string(),
        )
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, key: Key<'_>) -> Result<Option<T>> {
        match self.get_value(key).await? {
            Some(bytes) => Ok(Some(serde_json::from_slice(&bytes).map_err(ser_err)?)),
            None => Ok(None),
        }
    }

    fn json<T: serde::Serialize>(value: &T) -> Result<Vec<u8>> {
        serde_json::to_vec(value).map_err(ser_err)
    }
}

/// Insert or replace rows in one transaction. Upserts need the backend's own
/// `ON CONFLICT`, hence the explicit branches.
fn upsert_rows(conn: &mut DbConn, rows: &[Row]) -> QueryResult<()> {
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

fn now_micros() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

fn to_arr32(bytes: Vec<u8>, what: &str) -> Result<[u8; 32]> {
    let len = bytes.len();
    bytes
        .try_into()
        .map_err(|_| StoreError::Validation(format!("{what}: expected 32 bytes, got {len}")))
}

// ------------------------------------------------------------------ SignalStore

#[async_trait]
impl SignalStore for DeviceDb {
    async fn put_identity(&self, address: &str, key_bytes: [u8; 32]) -> Result<()> {
        self.put(key(IDENTITY, address), &key_bytes, 0, None).await
    }

    async fn put_identities_batch(&self, identities: &[(Arc<str>, [u8; 32])]) -> Result<()> {
        let rows = identities
            .iter()
            .map(|(a, kb)| self.row(key(IDENTITY, a), kb, 0, None))
            .collect();
        self.upsert(rows).await
    }

    async fn load_identity(&self, address: &str) -> Result<Option<[u8; 32]>> {
        match self.get_value(key(IDENTITY, address)).await? {
            Some(v) => Ok(Some(to_arr32(v, "identity")?)),
            None => Ok(None),
        }
    }

    async fn delete_identity(&self, address: &str) -> Result<()> {
        self.delete(key(IDENTITY, address)).await
    }

    async fn get_session(&self, address: &str) -> Result<Option<Bytes>> {
        Ok(self
            .get_value(key(SESSION, address))
            .await?
            .map(Bytes::from))
    }

    async fn put_session(&self, address: &str, session: &[u8]) -> Result<()> {
        self.put(key(SESSION, address), session, 0, None).await
    }

    async fn put_sessions_batch(&self, sessions: &[(Arc<str>, Bytes)]) -> Result<()> {
        let rows = sessions
            .iter()
            .map(|(a, s)| self.row(key(SESSION, a), s, 0, None))
            .collect();
        self.upsert(rows).await
    }

    async fn delete_session(&self, address: &str) -> Result<()> {
        self.delete(key(SESSION, address)).await
    }

    async fn has_session(&self, address: &str) -> Result<bool> {
        self.exists(key(SESSION, address)).await
    }

    async fn has_signal_state_for_user(&self, user: &str) -> Result<bool> {
        let sid = self.sid.clone();
        // LIKE narrows the scan; the exact test below decides (and makes any
        // LIKE wildcard inside `user` harmless).
        let pattern = format!("{user}%");
        let keys: Vec<String> = self
            .db
            .run(move |conn| {
                each_backend!(conn, c => ds::device_state
                    .filter(ds::session_id.eq(&sid))
                    .filter(ds::kind.eq_any([IDENTITY, SESSION]))
                    .filter(ds::k.like(&pattern))
                    .select(ds::k)
                    .load::<String>(c)
                    .map_err(DbError::from))
            })
            .await
            .map_err(db_err)?;
        Ok(keys.iter().any(|addr| {
            addr.strip_prefix(user)
                .is_some_and(|rest| rest.starts_with('@') || rest.starts_with(':'))
        }))
    }

    async fn store_prekey(&self, id: u32, record: &[u8], uploaded: bool) -> Result<()> {
        let k = id.to_string();
        self.put(key(PREKEY, &k), record, id as i64, Some(uploaded as i64))
            .await
    }

    async fn store_prekeys_batch(&self, keys: &[(u32, Bytes)], uploaded: bool) -> Result<()> {
        let rows = keys
            .iter()
            .map(|(id, rec)| {
                let k = id.to_string();
                self.row(key(PREKEY, &k), rec, *id as i64, Some(uploaded as i64))
            })
            .collect();
        self.upsert(rows).await
    }

    async fn load_prekey(&self, id: u32) -> Result<Option<Bytes>> {
        let k = id.to_string();
        Ok(self.get_value(key(PREKEY, &k)).await?.map(Bytes::from))
    }

    async fn load_prekeys_batch(&self, ids: &[u32]) -> Result<Vec<(u32, Bytes)>> {
        let sid = self.sid.clone();
        let wanted: Vec<String> = ids.iter().map(|i| i.to_string()).collect();
        let rows: Vec<Row> = self
            .db
            .run(move |conn| {
                each_backend!(conn, c => ds::device_state
                    .filter(ds::session_id.eq(&sid))
                    .filter(ds::kind.eq(PREKEY))
                    .filter(ds::k.eq_any(&wanted))
                    .select(Row::as_select())
                    .load(c)
                    .map_err(DbError::from))
            })
            .await
            .map_err(db_err)?;
        let mut by_id: HashMap<u32, Bytes> = HashMap::with_capacity(rows.len());
        for row in &rows {
            by_id.insert(row.n1 as u32, Bytes::from(self.open(row)?));
        }
        // Same order as asked, only the ones that exist.
        Ok(ids
            .iter()
            .filter_map(|id| by_id.get(id).map(|b| (*id, b.clone())))
            .collect())
    }

    async fn mark_prekeys_uploaded(&self, ids: &[u32]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let sid = self.sid.clone();
        let wanted: Vec<String> = ids.iter().map(|i| i.to_string()).collect();
        // UPDATE only: a key consumed meanwhile stays deleted.
        self.db
            .run(move |conn| {
                each_backend!(conn, c => diesel::update(ds::device_state
                    .filter(ds::session_id.eq(&sid))
                    .filter(ds::kind.eq(PREKEY))
                    .filter(ds::k.eq_any(&wanted)))
                    .set(ds::n2.eq(Some(1i64)))
                    .execute(c)
                    .map_err(DbError::from))
            })
            .await
            .map_err(db_err)?;
        Ok(())
    }

    async fn remove_prekey(&self, id: u32) -> Result<()> {
        let k = id.to_string();
        self.delete(key(PREKEY, &k)).await
    }

    async fn get_max_prekey_id(&self) -> Result<u32> {
        let sid = self.sid.clone();
        let max: Option<i64> = self
            .db
            .run(move |conn| {
                each_backend!(conn, c => ds::device_state
                    .filter(ds::session_id.eq(&sid))
                    .filter(ds::kind.eq(PREKEY))
                    .select(diesel::dsl::max(ds::n1))
                    .first::<Option<i64>>(c)
                    .map_err(DbError::from))
            })
            .await
            .map_err(db_err)?;
        Ok(max.unwrap_or(0) as u32)
    }

    async fn store_signed_prekey(&self, id: u32, record: &[u8]) -> Result<()> {
        let k = id.to_string();
        self.put(key(SIGNED_PREKEY, &k), record, id as i64, None)
            .await
    }

    async fn load_signed_prekey(&self, id: u32) -> Result<Option<Vec<u8>>> {
        let k = id.to_string();
        self.get_value(key(SIGNED_PREKEY, &k)).await
    }

    async fn load_all_signed_prekeys(&self) -> Result<Vec<(u32, Vec<u8>)>> {
        self.list(SIGNED_PREKEY, None)
            .await?
            .iter()
            .map(|row| Ok((row.n1 as u32, self.open(row)?)))
            .collect()
    }

    async fn remove_signed_prekey(&self, id: u32) -> Result<()> {
        let k = id.to_string();
        self.delete(key(SIGNED_PREKEY, &k)).await
    }

    async fn put_sender_key(&self, address: &str, record: &[u8]) -> Result<()> {
        self.put(key(SENDER_KEY, address), record, 0, None).await
    }

    async fn put_sender_keys_batch(&self, sender_keys: &[(Arc<str>, Bytes)]) -> Result<()> {
        let rows = sender_keys
            .iter()
            .map(|(a, r)| self.row(key(SENDER_KEY, a), r, 0, None))
            .collect();
        self.upsert(rows).await
    }

    async fn get_sender_key(&self, address: &str) -> Result<Option<Vec<u8>>> {
        self.get_value(key(SENDER_KEY, address)).await
    }

    async fn delete_sender_key(&self, address: &str) -> Result<()> {
        self.delete(key(SENDER_KEY, address)).await
    }
}

impl DeviceDb {
    /// Delete rows of `kind` whose `n1` (a timestamp) is before `cutoff`.
    async fn delete_older(&self, kind: &'static str, cutoff: i64) -> Result<u32> {
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

// ------------------------------------------------------------------ AppSyncStore

#[async_trait]
impl AppSyncStore for DeviceDb {
    async fn get_sync_key(&self, key_id: &[u8]) -> Result<Option<AppStateSyncKey>> {
        let k = hex::encode(key_id);
        self.get_json(key(SYNC_KEY, &k)).await
    }

    async fn set_sync_key(&self, key_id: &[u8], sync_key: AppStateSyncKey) -> Result<()> {
        let k = hex::encode(key_id);
        let rows = vec![
            self.row(key(SYNC_KEY, &k), &Self::json(&sync_key)?, 0, None),
            self.row(key(LATEST_SYNC_KEY, ""), key_id, 0, None),
        ];
        self.upsert(rows).await
    }

    async fn get_version(&self, name: &str) -> Result<HashState> {
        Ok(self
            .get_json(key(APP_VERSION, name))
            .await?
            .unwrap_or_default())
    }

    async fn set_version(&self, name: &str, state: HashState) -> Result<()> {
        let v = Self::json(&state)?;
        self.put(key(APP_VERSION, name), &v, state.version as i64, None)
            .await
    }

    async fn put_mutation_macs(
        &self,
        name: &str,
        version: u64,
        mutations: &[wacore_appstate_mac::AppStateMutationMAC],
    ) -> Result<()> {
        let rows = mutations
            .iter()
            .map(|m| {
                let k2 = hex::encode(&m.index_mac);
                self.row(
                    key2(MUTATION_MAC, name, &k2),
                    &m.value_mac,
                    version as i64,
                    None,
                )
            })
            .collect();
        self.upsert(rows).await
    }

    async fn get_mutation_mac(&self, name: &str, index_mac: &[u8]) -> Result<Option<Vec<u8>>> {
        let k2 = hex::encode(index_mac);
        self.get_value(key2(MUTATION_MAC, name, &k2)).await
    }

    async fn get_mutation_macs(
        &self,
        name: &str,
        index_macs: &[[u8; 32]],
    ) -> Result<HashMap<[u8; 32], Vec<u8>>> {
        if index_macs.is_empty() {
            return Ok(HashMap::new());
        }
        let sid = self.sid.clone();
        let name_owned = name.to_string();
        let wanted: Vec<String> = index_macs.iter().map(hex::encode).collect();
        let rows: Vec<Row> = self
            .db
            .run(move |conn| {
                each_backend!(conn, c => ds::device_state
                    .filter(ds::session_id.eq(&sid))
                    .filter(ds::kind.eq(MUTATION_MAC))
                    .filter(ds::k.eq(&name_owned))
                    .filter(ds::k2.eq_any(&wanted))
                    .select(Row::as_select())
                    .load(c)
                    .map_err(DbError::from))
            })
            .await
            .map_err(db_err)?;
        let mut out = HashMap::with_capacity(rows.len());
        for row in &rows {
            let Ok(raw) = hex::decode(&row.k2) else {
                continue;
            };
            let Ok(arr) = <[u8; 32]>::try_from(raw) else {
                continue;
            };
            out.insert(arr, self.open(row)?);
        }
        Ok(out)
    }

    async fn delete_mutation_macs(&self, name: &str, index_macs: &[Vec<u8>]) -> Result<()> {
        if index_macs.is_empty() {
            return Ok(());
        }
        let set = index_macs.iter().map(hex::encode).collect();
        self.delete_where(MUTATION_MAC, Some(name), Some(set))
            .await?;
        Ok(())
    }

    async fn clear_mutation_macs(&self, name: &str) -> Result<()> {
        self.delete_where(MUTATION_MAC, Some(name), None).await?;
        Ok(())
    }

    async fn get_latest_sync_key_id(&self) -> Result<Option<Vec<u8>>> {
        self.get_value(key(LATEST_SYNC_KEY, "")).await
    }
}

/// `AppStateMutationMAC` is named in the trait through wacore-appstate.
mod wacore_appstate_mac {
    pub use whatsapp_rust::wacore::appstate::processor::AppStateMutationMAC;
}

// ------------------------------------------------------------------ ProtocolStore

#[async_trait]
impl ProtocolStore for DeviceDb {
    async fn get_sender_key_devices(&self, group_jid: &str) -> Result<Vec<(String, bool)>> {
        Ok(self
            .list(SKD, Some(group_jid))
            .await?
            .into_iter()
            .map(|r| (r.k2, r.n1 != 0))
            .collect())
    }

    async fn set_sender_key_status(&self, group_jid: &str, entries: &[(&str, bool)]) -> Result<()> {
        let rows = entries
            .iter()
            .map(|(dev, has)| self.row(key2(SKD, group_jid, dev), b"", *has as i64, None))
            .collect();
        self.upsert(rows).await
    }

    async fn clear_sender_key_devices(&self, group_jid: &str) -> Result<()> {
        self.delete_where(SKD, Some(group_jid), None).await?;
        Ok(())
    }

    async fn delete_sender_key_device_rows(&self, device_jids: &[&str]) -> Result<()> {
        if device_jids.is_empty() {
            return Ok(());
        }
        let set = device_jids.iter().map(|s| s.to_string()).collect();
        self.delete_where(SKD, None, Some(set)).await?;
        Ok(())
    }

    async fn clear_all_sender_key_devices(&self) -> Result<()> {
        self.delete_where(SKD, None, None).await?;
        Ok(())
    }

    async fn get_lid_mapping(&self, lid: &str) -> Result<Option<LidPnMappingEntry>> {
        let sid = self.sid.clone();
        let lid = lid.to_string();
        let row: Option<Row> = self
            .db
            .run(move |conn| {
                each_backend!(conn, c => ds::device_state
                    .filter(ds::session_id.eq(&sid))
                    .filter(ds::kind.eq(LID))
                    .filter(ds::k.eq(&lid))
                    .select(Row::as_select())
                    .first(c)
                    .optional()
                    .map_err(DbError::from))
            })
            .await
            .map_err(db_err)?;
        self.decode_lid(row)
    }

    async fn get_pn_mapping(&self, phone: &str) -> Result<Option<LidPnMappingEntry>> {
        let sid = self.sid.clone();
        let phone = phone.to_string();
        // The most recently written LID for that phone number.
        let row: Option<Row> = self
            .db
            .run(move |conn| {
                each_backend!(conn, c => ds::device_state
                    .filter(ds::session_id.eq(&sid))
                    .filter(ds::kind.eq(LID))
                    .filter(ds::k2.eq(&phone))
                    .order(ds::n1.desc())
                    .select(Row::as_select())
                    .first(c)
                    .optional()
                    .map_err(DbError::from))
            })
            .await
            .map_err(db_err)?;
        self.decode_lid(row)
    }

    async fn put_lid_mapping(&self, entry: &LidPnMappingEntry) -> Result<()> {
        self.put_lid_mappings(std::slice::from_ref(entry)).await
    }

    async fn put_lid_mappings(&self, entries: &[LidPnMappingEntry]) -> Result<()> {
        let base = now_micros();
        let rows = entries
            .iter()
            .enumerate()
            .map(|(i, e)| {
                Ok(self.row(
                    key2(LID, &e.lid, &e.phone_number),
                    &Self::json(e)?,
                    base + i as i64,
                    None,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        // A LID maps to one phone number: drop its rows under other numbers,
        // in the same transaction as the write.
        let sid = self.sid.clone();
        self.db
            .run(move |conn| {
                conn.transaction(|conn| {
                    each_backend!(&mut *conn, c => {
                        for row in &rows {
                            diesel::delete(ds::device_state
                                .filter(ds::session_id.eq(&sid))
                                .filter(ds::kind.eq(LID))
                                .filter(ds::k.eq(&row.k))
                                .filter(ds::k2.ne(&row.k2)))
                                .execute(c)?;
                        }
                    });
                    upsert_rows(conn, &rows)
                })
                .map_err(DbError::from)
            })
            .await
            .map_err(db_err)
    }

    async fn get_all_lid_mappings(&self) -> Result<Vec<LidPnMappingEntry>> {
        self.list(LID, None)
            .await?
            .iter()
            .map(|row| serde_json::from_slice(&self.open(row)?).map_err(ser_err))
            .collect()
    }

    async fn save_base_key(&self, address: &str, message_id: &str, base_key: &[u8]) -> Result<()> {
        self.put(key2(BASE_KEY, address, message_id), base_key, 0, None)
            .await
    }

    async fn has_same_base_key(
        &self,
        address: &str,
        message_id: &str,
        current_base_key: &[u8],
    ) -> Result<bool> {
        Ok(self
            .get_value(key2(BASE_KEY, address, message_id))
            .await?
            .is_some_and(|stored| stored == current_base_key))
    }

    async fn delete_base_key(&self, address: &str, message_id: &str) -> Result<()> {
        self.delete(key2(BASE_KEY, address, message_id)).await
    }

    async fn update_device_list(&self, record: DeviceListRecord) -> Result<()> {
        self.update_device_lists(vec![record]).await
    }

    async fn update_device_lists(&self, records: Vec<DeviceListRecord>) -> Result<()> {
        let rows = records
            .iter()
            .map(|r| {
                Ok(self.row(
                    key(DEVICE_LIST, &r.user),
                    &Self::json(r)?,
                    r.timestamp,
                    None,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        self.upsert(rows).await
    }

    async fn get_devices(&self, user: &str) -> Result<Option<DeviceListRecord>> {
        self.get_json(key(DEVICE_LIST, user)).await
    }

    async fn delete_devices(&self, user: &str) -> Result<()> {
        self.delete(key(DEVICE_LIST, user)).await
    }

    async fn get_group_metadata(&self, group_jid: &str) -> Result<Option<Vec<u8>>> {
        self.get_value(key(GROUP_META, group_jid)).await
    }

    async fn put_group_metadata(&self, group_jid: &str, blob: &[u8]) -> Result<()> {
        self.put(key(GROUP_META, group_jid), blob, 0, None).await
    }

    async fn delete_group_metadata(&self, group_jid: &str) -> Result<()> {
        self.delete(key(GROUP_META, group_jid)).await
    }

    async fn get_tc_token(&self, jid: &str) -> Result<Option<TcTokenEntry>> {
        self.get_json(key(TC_TOKEN, jid)).await
    }

    async fn put_tc_token(&self, jid: &str, entry: &TcTokenEntry) -> Result<()> {
        let _guard = self.rmw.lock().await;
        self.write_tc(jid, entry).await
    }

    async fn delete_tc_token(&self, jid: &str) -> Result<()> {
        let _guard = self.rmw.lock().await;
        self.delete(key(TC_TOKEN, jid)).await
    }

    async fn get_all_tc_token_jids(&self) -> Result<Vec<String>> {
        Ok(self
            .list(TC_TOKEN, None)
            .await?
            .into_iter()
            .map(|r| r.k)
            .collect())
    }

    async fn delete_expired_tc_tokens(&self, token_cutoff: i64, sender_cutoff: i64) -> Result<u32> {
        let _guard = self.rmw.lock().await;
        let mut dead = Vec::new();
        for row in self.list(TC_TOKEN, None).await? {
            let entry: TcTokenEntry = serde_json::from_slice(&self.open(&row)?).map_err(ser_err)?;
            let token_live = !entry.token.is_empty() && entry.token_timestamp >= token_cutoff;
            let sender_live = entry.sender_timestamp.is_some_and(|ts| ts >= sender_cutoff);
            if !(token_live || sender_live) {
                dead.push(row.k);
            }
        }
        for jid in &dead {
            self.delete(key(TC_TOKEN, jid)).await?;
        }
        Ok(dead.len() as u32)
    }

    async fn touch_tc_token_sender_timestamp(
        &self,
        jid: &str,
        sender_timestamp: i64,
    ) -> Result<()> {
        let _guard = self.rmw.lock().await;
        let entry = match self.get_tc_token(jid).await? {
            Some(existing) => TcTokenEntry {
                sender_timestamp: Some(
                    existing
                        .sender_timestamp
                        .map_or(sender_timestamp, |e| e.max(sender_timestamp)),
                ),
                ..existing
            },
            None => TcTokenEntry {
                token: Vec::new(),
                token_timestamp: sender_timestamp,
                sender_timestamp: Some(sender_timestamp),
            },
        };
        self.write_tc(jid, &entry).await
    }

    async fn store_received_tc_token(
        &self,
        jid: &str,
        token: &[u8],
        token_timestamp: i64,
    ) -> Result<()> {
        let _guard = self.rmw.lock().await;
        let existing = self.get_tc_token(jid).await?;
        if let Some(existing) = &existing {
            if !existing.token.is_empty() && token_timestamp < existing.token_timestamp {
                return Ok(());
            }
        }
        let entry = TcTokenEntry {
            token: token.to_vec(),
            token_timestamp,
            sender_timestamp: existing.and_then(|e| e.sender_timestamp),
        };
        self.write_tc(jid, &entry).await
    }

    async fn store_sent_message(
        &self,
        chat_jid: &str,
        message_id: &str,
        payload: &[u8],
    ) -> Result<()> {
        self.put(
            key2(SENT_MSG, chat_jid, message_id),
            payload,
            wacore::time::now_secs(),
            None,
        )
        .await
    }

    async fn take_sent_message(&self, chat_jid: &str, message_id: &str) -> Result<Option<Vec<u8>>> {
        let (sid, kind, k, k2, k3) = self.owned(key2(SENT_MSG, chat_jid, message_id));
        // Read and delete in one transaction: only one taker gets the payload.
        let row: Option<Row> = self
            .db
            .run(move |conn| {
                each_backend!(conn, c => c.transaction(|c| {
                    let filter = ds::session_id
                        .eq(sid.clone())
                        .and(ds::kind.eq(kind.clone()))
                        .and(ds::k.eq(k.clone()))
                        .and(ds::k2.eq(k2.clone()))
                        .and(ds::k3.eq(k3.clone()));
                    let row = ds::device_state
                        .filter(filter.clone())
                        .select(Row::as_select())
                        .first(c)
                        .optional()?;
                    let deleted = diesel::delete(ds::device_state.filter(filter)).execute(c)?;
                    Ok::<_, diesel::result::Error>(if deleted == 0 { None } else { row })
                }))
                .map_err(DbError::from)
            })
            .await
            .map_err(db_err)?;
        match row {
            Some(row) => Ok(Some(self.open(&row)?)),
            None => Ok(None),
        }
    }

    async fn delete_expired_sent_messages(&self, cutoff_timestamp: i64) -> Result<u32> {
        self.delete_older(SENT_MSG, cutoff_timestamp).await
    }

    async fn store_pending_inbound(
        &self,
        chat: &str,
        sender: &str,
        id: &str,
        message: &[u8],
    ) -> Result<()> {
        let k = Key {
            kind: PENDING_IN,
            k: chat,
            k2: sender,
            k3: id,
        };
        self.put(k, message, wacore::time::now_secs(), None).await
    }

    async fn get_pending_inbound(
        &self,
        chat: &str,
        sender: &str,
        id: &str,
    ) -> Result<Option<Vec<u8>>> {
        self.get_value(Key {
            kind: PENDING_IN,
            k: chat,
            k2: sender,
            k3: id,
        })
        .await
    }

    async fn delete_pending_inbound(&self, chat: &str, sender: &str, id: &str) -> Result<()> {
        self.delete(Key {
            kind: PENDING_IN,
            k: chat,
            k2: sender,
            k3: id,
        })
        .await
    }

    async fn delete_expired_pending_inbound(&self, cutoff_timestamp: i64) -> Result<u32> {
        self.delete_older(PENDING_IN, cutoff_timestamp).await
    }

    async fn store_pending_inbound_batch(&self, rows: &[PendingInboundRow<'_>]) -> Result<()> {
        let now = wacore::time::now_secs();
        let rows = rows
            .iter()
            .map(|r| {
                self.row(
                    Key {
                        kind: PENDING_IN,
                        k: r.chat,
                        k2: r.sender,
                        k3: r.id,
                    },
                    r.message,
                    now,
                    None,
                )
            })
            .collect();
        self.upsert(rows).await
    }
}

impl DeviceDb {
    async fn write_tc(&self, jid: &str, entry: &TcTokenEntry) -> Result<()> {
        self.put(
            key(TC_TOKEN, jid),
            &Self::json(entry)?,
            entry.token_timestamp,
            entry.sender_timestamp,
        )
        .await
    }

    fn decode_lid(&self, row: Option<Row>) -> Result<Option<LidPnMappingEntry>> {
        match row {
            Some(row) => Ok(Some(
                serde_json::from_slice(&self.open(&row)?).map_err(ser_err)?,
            )),
            None => Ok(None),
        }
    }
}

// ------------------------------------------------------------------ MsgSecretStore

#[async_trait]
impl MsgSecretStore for DeviceDb {
    async fn put_msg_secrets(&self, entries: Vec<MsgSecretEntry>) -> Result<usize> {
        let stored = entries.len();
        let _guard = self.rmw.lock().await;
        let mut rows = Vec::with_capacity(entries.len());
        for e in &entries {
            let k = Key {
                kind: MSG_SECRET,
                k: &e.chat,
                k2: &e.sender,
                k3: &e.msg_id,
            };
            let (mut expires_at, mut message_ts) = (e.expires_at, e.message_ts);
            if let Some(old) = self.get(k).await? {
                expires_at = merge_msg_secret_expiry(old.n1, expires_at);
                message_ts = merge_msg_secret_message_ts(old.n2.unwrap_or(0), message_ts);
            }
            rows.push(self.row(k, &e.secret, expires_at, Some(message_ts)));
        }
        self.upsert(rows).await?;
        Ok(stored)
    }

    async fn get_msg_secret(
        &self,
        chat: &str,
        sender: &str,
        msg_id: &str,
    ) -> Result<Option<Vec<u8>>> {
        Ok(self
            .get_msg_secret_with_ts(chat, sender, msg_id)
            .await?
            .map(|(s, _)| s))
    }

    async fn get_msg_secret_with_ts(
        &self,
        chat: &str,
        sender: &str,
        msg_id: &str,
    ) -> Result<Option<(Vec<u8>, i64)>> {
        let k = Key {
            kind: MSG_SECRET,
            k: chat,
            k2: sender,
            k3: msg_id,
        };
        match self.get(k).await? {
            Some(row) => Ok(Some((self.open(&row)?, row.n2.unwrap_or(0)))),
            None => Ok(None),
        }
    }

    async fn delete_expired_msg_secrets(&self, cutoff_timestamp: i64) -> Result<u32> {
        let sid = self.sid.clone();
        let n = self
            .db
            .run(move |conn| {
                each_backend!(conn, c => diesel::delete(ds::device_state
                    .filter(ds::session_id.eq(&sid))
                    .filter(ds::kind.eq(MSG_SECRET))
                    .filter(ds::n1.ne(0i64))
                    .filter(ds::n1.le(cutoff_timestamp)))
                    .execute(c)
                    .map_err(DbError::from))
            })
            .await
            .map_err(db_err)?;
        Ok(n as u32)
    }
}

// ------------------------------------------------------------------ DeviceStore

#[async_trait]
impl DeviceStore for DeviceDb {
    async fn save(&self, device: &Device) -> Result<()> {
        let v = Self::json(device)?;
        self.put(key(DEVICE, ""), &v, 0, None).await
    }

    async fn load(&self) -> Result<Option<Device>> {
        let Some(mut device) = self.get_json::<Device>(key(DEVICE, "")).await? else {
            return Ok(None);
        };
        // Runtime-only fields are skipped by serde; restore what a fresh
        // Device has (as the SQLite reference store does).
        device.device_props = Arc::new(wacore::store::device::DEVICE_PROPS.clone());
        device.client_profile = wacore::client_profile::ClientProfile::web();
        Ok(Some(device))
    }

    async fn exists(&self) -> Result<bool> {
        DeviceDb::exists(self, key(DEVICE, "")).await
    }

    async fn create(&self) -> Result<i32> {
        if !DeviceDb::exists(self, key(DEVICE, "")).await? {
            self.save(&Device::new()).await?;
        }
        Ok(1)
    }

    async fn resource_report(&self) -> wacore::stats::StorageResourceReport {
        wacore::stats::StorageResourceReport {
            memory_bytes: Some(0),
            ..Default::default()
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use diesel::connection::SimpleConnection;

    /// A fresh database of one backend, removed on drop.
    pub(crate) struct TestDb {
        pub db: Db,
        _dir: Option<tempfile::TempDir>,
        pg_drop: Option<(String, String)>,
    }

    impl Drop for TestDb {
        fn drop(&mut self) {
            if let Some((admin_url, name)) = self.pg_drop.take() {
                if let Ok(mut c) = diesel::PgConnection::establish(&admin_url) {
                    let _ =
                        c.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
                }
            }
        }
    }

    pub(crate) fn sqlite_db() -> TestDb {
        let dir = tempfile::tempdir().unwrap();
        let url = dir.path().join("t.db").to_string_lossy().into_owned();
        TestDb {
            db: Db::open(&url).unwrap(),
            _dir: Some(dir),
            pg_drop: None,
        }
    }

    /// A fresh PostgreSQL database, or None (with a note) when
    /// WASUP_TEST_DATABASE_URL is not set.
    pub(crate) fn postgres_db() -> Option<TestDb> {
        let Ok(admin_url) = std::env::var("WASUP_TEST_DATABASE_URL") else {
            println!("skipped: PostgreSQL (set WASUP_TEST_DATABASE_URL to run it)");
            return None;
        };
        let name = format!("wasup_engine_{:016x}", rand::random::<u64>());
        let mut admin = diesel::PgConnection::establish(&admin_url).expect("admin connection");
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .expect("create database");
        let base = admin_url
            .split('?')
            .next()
            .unwrap()
            .rsplit_once('/')
            .unwrap()
            .0
            .to_string();
        let url = format!("{base}/{name}");
        Some(TestDb {
            db: Db::open(&url).unwrap(),
            _dir: None,
            pg_drop: Some((admin_url, name)),
        })
    }

    fn boxed() -> Arc<SecretBox> {
        Arc::new(SecretBox::new(&[9u8; 32]))
    }

    async fn raw_values(db: &Db, sid: &str, kind: &'static str) -> Vec<Vec<u8>> {
        let sid = sid.to_string();
        db.run(move |conn| {
            each_backend!(conn, c => ds::device_state
                .filter(ds::session_id.eq(&sid))
                .filter(ds::kind.eq(kind))
                .select(ds::value)
                .load::<Vec<u8>>(c)
                .map_err(DbError::from))
        })
        .await
        .unwrap()
    }

    async fn count_rows(db: &Db, sid: &str) -> i64 {
        let sid = sid.to_string();
        db.run(move |conn| {
            each_backend!(conn, c => ds::device_state
                .filter(ds::session_id.eq(&sid))
                .count()
                .get_result::<i64>(c)
                .map_err(DbError::from))
        })
        .await
        .unwrap()
    }

    fn contains(hay: &[u8], needle: &[u8]) -> bool {
        hay.windows(needle.len()).any(|w| w == needle)
    }

    async fn exercise(t: &TestDb) {
        let db = &t.db;
        let s = DeviceDb::new(db.clone(), boxed(), "s1");

        // --- device
        assert!(!DeviceStore::exists(&s).await.unwrap());
        assert!(s.load().await.unwrap().is_none());
        assert_eq!(s.create().await.unwrap(), 1);
        assert!(DeviceStore::exists(&s).await.unwrap());
        let created = s.load().await.unwrap().unwrap();
        s.create().await.unwrap(); // keeps the existing device
        let mut dev = s.load().await.unwrap().unwrap();
        assert_eq!(dev.registration_id, created.registration_id);
        dev.push_name = "Alice".into();
        dev.next_pre_key_id = 77;
        s.save(&dev).await.unwrap();
        let back = s.load().await.unwrap().unwrap();
        assert_eq!(back.push_name, "Alice");
        assert_eq!(back.next_pre_key_id, 77);
        assert_eq!(
            back.identity_key.private_key.serialize(),
            dev.identity_key.private_key.serialize()
        );
        assert_eq!(back.adv_secret_key, dev.adv_secret_key);
        assert!(back.device_props.os.is_some(), "device props restored");
        let raw = raw_values(db, "s1", DEVICE).await;
        assert_eq!(raw.len(), 1);
        assert!(!contains(&raw[0], &dev.adv_secret_key));
        assert!(!contains(&raw[0], b"Alice"));
        assert!(!contains(&raw[0], b"registration_id"));

        // --- identities and sessions
        s.put_identity("123@s.whatsapp.net", [1u8; 32])
            .await
            .unwrap();
        s.put_identities_batch(&[("456:2@lid".into(), [2u8; 32])])
            .await
            .unwrap();
        assert_eq!(
            s.load_identity("123@s.whatsapp.net").await.unwrap(),
            Some([1u8; 32])
        );
        assert_eq!(s.load_identity("456:2@lid").await.unwrap(), Some([2u8; 32]));
        s.put_identity("123@s.whatsapp.net", [3u8; 32])
            .await
            .unwrap();
        assert_eq!(
            s.load_identity("123@s.whatsapp.net").await.unwrap(),
            Some([3u8; 32])
        );
        s.delete_identity("123@s.whatsapp.net").await.unwrap();
        assert_eq!(s.load_identity("123@s.whatsapp.net").await.unwrap(), None);

        let secret_session = b"SIGNAL-SESSION-PLAINTEXT-RECORD";
        s.put_session("789:1@s.whatsapp.net", secret_session)
            .await
            .unwrap();
        s.put_sessions_batch(&[
            (
                "789:1@s.whatsapp.net".into(),
                Bytes::from_static(b"updated"),
            ),
            ("790@s.whatsapp.net".into(), Bytes::from_static(b"other")),
        ])
        .await
        .unwrap();
        assert_eq!(
            s.get_session("789:1@s.whatsapp.net")
                .await
                .unwrap()
                .unwrap(),
            Bytes::from_static(b"updated")
        );
        assert!(s.has_session("790@s.whatsapp.net").await.unwrap());
        assert!(!s.has_session("791@s.whatsapp.net").await.unwrap());
        assert!(s.has_signal_state_for_user("789").await.unwrap());
        assert!(s.has_signal_state_for_user("456").await.unwrap());
        assert!(!s.has_signal_state_for_user("78").await.unwrap());
        s.put_session("secret@x", secret_session).await.unwrap();
        for v in raw_values(db, "s1", SESSION).await {
            assert!(!contains(&v, secret_session) && !contains(&v, b"updated"));
        }
        s.delete_session("790@s.whatsapp.net").await.unwrap();
        assert!(s.get_session("790@s.whatsapp.net").await.unwrap().is_none());

        // --- prekeys
        assert_eq!(s.get_max_prekey_id().await.unwrap(), 0);
        s.store_prekey(5, b"pk5", false).await.unwrap();
        s.store_prekeys_batch(
            &[
                (6, Bytes::from_static(b"pk6")),
                (12, Bytes::from_static(b"pk12")),
            ],
            false,
        )
        .await
        .unwrap();
        assert_eq!(s.get_max_prekey_id().await.unwrap(), 12);
        assert_eq!(&s.load_prekey(6).await.unwrap().unwrap()[..], b"pk6");
        let batch = s.load_prekeys_batch(&[12, 99, 5]).await.unwrap();
        assert_eq!(batch.len(), 2);
        assert_eq!(batch[0].0, 12);
        assert_eq!(&batch[1].1[..], b"pk5");
        s.remove_prekey(6).await.unwrap();
        s.mark_prekeys_uploaded(&[5, 6]).await.unwrap();
        assert!(s.load_prekey(6).await.unwrap().is_none(), "not resurrected");
        assert!(s.load_prekey(5).await.unwrap().is_some());

        s.store_signed_prekey(1, b"spk1").await.unwrap();
        s.store_signed_prekey(2, b"spk2").await.unwrap();
        assert_eq!(s.load_signed_prekey(2).await.unwrap().unwrap(), b"spk2");
        let mut all = s.load_all_signed_prekeys().await.unwrap();
        all.sort();
        assert_eq!(all, vec![(1, b"spk1".to_vec()), (2, b"spk2".to_vec())]);
        s.remove_signed_prekey(1).await.unwrap();
        assert!(s.load_signed_prekey(1).await.unwrap().is_none());

        // --- sender keys
        s.put_sender_key("g@g.us:a", b"SENDERKEY").await.unwrap();
        s.put_sender_keys_batch(&[("g@g.us:b".into(), Bytes::from_static(b"sk-b"))])
            .await
            .unwrap();
        assert_eq!(
            s.get_sender_key("g@g.us:a").await.unwrap().unwrap(),
            b"SENDERKEY"
        );
        for v in raw_values(db, "s1", SENDER_KEY).await {
            assert!(!contains(&v, b"SENDERKEY"));
        }
        s.delete_sender_key("g@g.us:a").await.unwrap();
        assert!(s.get_sender_key("g@g.us:a").await.unwrap().is_none());

        // --- app state
        assert!(s.get_latest_sync_key_id().await.unwrap().is_none());
        let ask = AppStateSyncKey {
            key_data: vec![0xAB; 32],
            fingerprint: vec![1, 2],
            timestamp: 42,
        };
        s.set_sync_key(b"kid1", ask.clone()).await.unwrap();
        s.set_sync_key(b"kid2", ask.clone()).await.unwrap();
        assert_eq!(
            s.get_sync_key(b"kid1").await.unwrap().unwrap().key_data,
            vec![0xAB; 32]
        );
        assert_eq!(s.get_latest_sync_key_id().await.unwrap().unwrap(), b"kid2");
        for v in raw_values(db, "s1", SYNC_KEY).await {
            assert!(!contains(&v, &[0xAB; 32]));
        }
        assert_eq!(s.get_version("regular").await.unwrap().version, 0);
        let hs = HashState {
            version: 9,
            ..Default::default()
        };
        s.set_version("regular", hs).await.unwrap();
        assert_eq!(s.get_version("regular").await.unwrap().version, 9);
        use whatsapp_rust::wacore::appstate::processor::AppStateMutationMAC;
        let m = |i: u8, v: u8| AppStateMutationMAC {
            index_mac: vec![i; 32],
            value_mac: vec![v; 32],
        };
        s.put_mutation_macs("regular", 9, &[m(1, 10), m(2, 20)])
            .await
            .unwrap();
        s.put_mutation_macs("other", 1, &[m(1, 30)]).await.unwrap();
        assert_eq!(
            s.get_mutation_mac("regular", &[1; 32])
                .await
                .unwrap()
                .unwrap(),
            vec![10; 32]
        );
        let got = s
            .get_mutation_macs("regular", &[[1; 32], [2; 32], [3; 32]])
            .await
            .unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[&[2; 32]], vec![20; 32]);
        s.delete_mutation_macs("regular", &[vec![1; 32]])
            .await
            .unwrap();
        assert!(s
            .get_mutation_mac("regular", &[1; 32])
            .await
            .unwrap()
            .is_none());
        s.clear_mutation_macs("regular").await.unwrap();
        assert!(s
            .get_mutation_mac("regular", &[2; 32])
            .await
            .unwrap()
            .is_none());
        assert!(s
            .get_mutation_mac("other", &[1; 32])
            .await
            .unwrap()
            .is_some());

        // --- sender key devices
        s.set_sender_key_status("g1", &[("d1", true), ("d2", false)])
            .await
            .unwrap();
        s.set_sender_key_status("g2", &[("d1", true)])
            .await
            .unwrap();
        let mut g1 = s.get_sender_key_devices("g1").await.unwrap();
        g1.sort();
        assert_eq!(g1, vec![("d1".into(), true), ("d2".into(), false)]);
        s.set_sender_key_status("g1", &[("d2", true)])
            .await
            .unwrap();
        s.delete_sender_key_device_rows(&["d1"]).await.unwrap();
        assert_eq!(
            s.get_sender_key_devices("g1").await.unwrap(),
            vec![("d2".into(), true)]
        );
        assert!(s.get_sender_key_devices("g2").await.unwrap().is_empty());
        s.clear_sender_key_devices("g1").await.unwrap();
        assert!(s.get_sender_key_devices("g1").await.unwrap().is_empty());
        s.set_sender_key_status("g3", &[("d3", true)])
            .await
            .unwrap();
        s.clear_all_sender_key_devices().await.unwrap();
        assert!(s.get_sender_key_devices("g3").await.unwrap().is_empty());

        // --- LID mappings
        let lm = |lid: &str, pn: &str| LidPnMappingEntry {
            lid: lid.into(),
            phone_number: pn.into(),
            created_at: 1,
            updated_at: 2,
            learning_source: "usync".into(),
        };
        s.put_lid_mapping(&lm("100", "555")).await.unwrap();
        s.put_lid_mappings(&[lm("200", "666"), lm("300", "777")])
            .await
            .unwrap();
        assert_eq!(
            s.get_lid_mapping("100")
                .await
                .unwrap()
                .unwrap()
                .phone_number,
            "555"
        );
        assert_eq!(s.get_pn_mapping("666").await.unwrap().unwrap().lid, "200");
        // Remap LID 100 to another number: the old number no longer resolves.
        s.put_lid_mapping(&lm("100", "888")).await.unwrap();
        assert!(s.get_pn_mapping("555").await.unwrap().is_none());
        assert_eq!(s.get_pn_mapping("888").await.unwrap().unwrap().lid, "100");
        // Two LIDs for one number: the latest wins.
        s.put_lid_mapping(&lm("400", "888")).await.unwrap();
        assert_eq!(s.get_pn_mapping("888").await.unwrap().unwrap().lid, "400");
        assert_eq!(s.get_all_lid_mappings().await.unwrap().len(), 4);

        // --- base keys
        s.save_base_key("a@x", "m1", b"base").await.unwrap();
        assert!(s.has_same_base_key("a@x", "m1", b"base").await.unwrap());
        assert!(!s.has_same_base_key("a@x", "m1", b"other").await.unwrap());
        s.delete_base_key("a@x", "m1").await.unwrap();
        assert!(!s.has_same_base_key("a@x", "m1", b"base").await.unwrap());

        // --- device lists and group metadata
        let dl = DeviceListRecord {
            user: "555".into(),
            devices: vec![DeviceInfo::new(0, None), DeviceInfo::new(3, Some(1))],
            timestamp: 10,
            phash: Some("h".into()),
            raw_id: Some(7),
        };
        s.update_device_list(dl).await.unwrap();
        let back = s.get_devices("555").await.unwrap().unwrap();
        assert_eq!(back.devices.len(), 2);
        assert_eq!(back.raw_id, Some(7));
        s.delete_devices("555").await.unwrap();
        assert!(s.get_devices("555").await.unwrap().is_none());
        s.put_group_metadata("g@g.us", b"meta").await.unwrap();
        assert_eq!(
            s.get_group_metadata("g@g.us").await.unwrap().unwrap(),
            b"meta"
        );
        s.delete_group_metadata("g@g.us").await.unwrap();
        assert!(s.get_group_metadata("g@g.us").await.unwrap().is_none());

        // --- tc tokens
        s.touch_tc_token_sender_timestamp("j1", 100).await.unwrap();
        let e = s.get_tc_token("j1").await.unwrap().unwrap();
        assert!(e.token.is_empty());
        assert_eq!(e.sender_timestamp, Some(100));
        s.store_received_tc_token("j1", b"tok", 50).await.unwrap();
        let e = s.get_tc_token("j1").await.unwrap().unwrap();
        assert_eq!((e.token.as_slice(), e.token_timestamp), (&b"tok"[..], 50));
        assert_eq!(e.sender_timestamp, Some(100));
        s.store_received_tc_token("j1", b"old", 40).await.unwrap(); // stale: ignored
        assert_eq!(s.get_tc_token("j1").await.unwrap().unwrap().token, b"tok");
        s.touch_tc_token_sender_timestamp("j1", 90).await.unwrap(); // never regresses
        assert_eq!(
            s.get_tc_token("j1")
                .await
                .unwrap()
                .unwrap()
                .sender_timestamp,
            Some(100)
        );
        s.put_tc_token(
            "j2",
            &TcTokenEntry {
                token: b"t2".to_vec(),
                token_timestamp: 10,
                sender_timestamp: None,
            },
        )
        .await
        .unwrap();
        let mut jids = s.get_all_tc_token_jids().await.unwrap();
        jids.sort();
        assert_eq!(jids, vec!["j1", "j2"]);
        assert_eq!(s.delete_expired_tc_tokens(20, 20).await.unwrap(), 1);
        assert!(s.get_tc_token("j2").await.unwrap().is_none());
        s.delete_tc_token("j1").await.unwrap();
        assert!(s.get_tc_token("j1").await.unwrap().is_none());

        // --- sent messages
        s.store_sent_message("c@x", "id1", b"payload")
            .await
            .unwrap();
        assert_eq!(
            s.take_sent_message("c@x", "id1").await.unwrap().unwrap(),
            b"payload"
        );
        assert!(s.take_sent_message("c@x", "id1").await.unwrap().is_none());
        s.store_sent_message("c@x", "id2", b"p2").await.unwrap();
        assert_eq!(s.delete_expired_sent_messages(0).await.unwrap(), 0);
        assert_eq!(s.delete_expired_sent_messages(i64::MAX).await.unwrap(), 1);

        // --- pending inbound
        s.store_pending_inbound("c", "s", "i", b"msg")
            .await
            .unwrap();
        assert_eq!(
            s.get_pending_inbound("c", "s", "i").await.unwrap().unwrap(),
            b"msg"
        );
        s.delete_pending_inbound("c", "s", "i").await.unwrap();
        assert!(s
            .get_pending_inbound("c", "s", "i")
            .await
            .unwrap()
            .is_none());
        s.store_pending_inbound_batch(&[PendingInboundRow {
            chat: "c",
            sender: "s",
            id: "j",
            message: b"m2",
        }])
        .await
        .unwrap();
        assert_eq!(s.delete_expired_pending_inbound(i64::MAX).await.unwrap(), 1);

        // --- message secrets
        let ms = |id: &str, exp: i64, ts: i64| MsgSecretEntry {
            chat: "chat".into(),
            sender: "snd".into(),
            msg_id: id.into(),
            secret: [5u8; 32],
            expires_at: exp,
            message_ts: ts,
        };
        assert_eq!(
            s.put_msg_secrets(vec![ms("m1", 100, 7), ms("m2", 0, 0), ms("m3", 50, 0)])
                .await
                .unwrap(),
            3
        );
        s.put_msg_secrets(vec![ms("m1", 80, 0)]).await.unwrap(); // keeps 100 and 7
        assert_eq!(
            s.get_msg_secret_with_ts("chat", "snd", "m1").await.unwrap(),
            Some((vec![5u8; 32], 7))
        );
        s.put_msg_secret("chat", "snd", "m4", &[6u8; 32])
            .await
            .unwrap();
        assert_eq!(
            s.get_msg_secret("chat", "snd", "m4")
                .await
                .unwrap()
                .unwrap(),
            vec![6u8; 32]
        );
        // m3 (50) and m1 (100) expire at 100; m2 and m4 never.
        assert_eq!(s.delete_expired_msg_secrets(100).await.unwrap(), 2);
        assert!(s
            .get_msg_secret("chat", "snd", "m1")
            .await
            .unwrap()
            .is_none());
        assert!(s
            .get_msg_secret("chat", "snd", "m2")
            .await
            .unwrap()
            .is_some());

        // --- a row moved to another session does not open
        let other = DeviceDb::new(db.clone(), boxed(), "s2");
        other
            .put_session("789:1@s.whatsapp.net", b"s2-session")
            .await
            .unwrap();
        let sealed_s1 = s
            .get(key(SESSION, "789:1@s.whatsapp.net"))
            .await
            .unwrap()
            .unwrap();
        let mut moved = sealed_s1.clone();
        moved.session_id = "s2".into();
        assert!(other.open(&moved).is_err());

        // --- forget wipes one session only
        assert!(count_rows(db, "s1").await > 0);
        let n2 = count_rows(db, "s2").await;
        forget_session(db, "s1").await.unwrap();
        assert_eq!(count_rows(db, "s1").await, 0);
        assert_eq!(count_rows(db, "s2").await, n2);
        assert!(!DeviceStore::exists(&s).await.unwrap());
        assert_eq!(
            &other
                .get_session("789:1@s.whatsapp.net")
                .await
                .unwrap()
                .unwrap()[..],
            b"s2-session"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn device_store_sqlite() {
        exercise(&sqlite_db()).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn device_store_postgres() {
        if let Some(t) = postgres_db() {
            exercise(&t).await;
        }
    }
}
