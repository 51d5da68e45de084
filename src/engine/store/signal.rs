//! wacore's `SignalStore`: identities, Signal sessions, prekeys, signed
//! prekeys and sender keys.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use diesel::prelude::*;
use whatsapp_rust::bytes::Bytes;
use whatsapp_rust::wacore::store::error::Result;
use whatsapp_rust::wacore::store::traits::*;

use super::hot::HotRows;
use super::rows::{db_err, key, to_arr32, Filter};
use super::*;

#[async_trait]
impl SignalStore for DeviceDb {
    async fn put_identity(&self, address: &str, key_bytes: [u8; 32]) -> Result<()> {
        self.put(key(IDENTITY, address), &key_bytes, 0, None).await
    }

    async fn put_identities_batch(&self, identities: &[(Arc<str>, [u8; 32])]) -> Result<()> {
        self.put_by_address(IDENTITY, identities).await
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
        self.get_hot(key(SESSION, address)).await
    }

    async fn put_session(&self, address: &str, session: &[u8]) -> Result<()> {
        self.put(key(SESSION, address), session, 0, None).await
    }

    async fn put_sessions_batch(&self, sessions: &[(Arc<str>, Bytes)]) -> Result<()> {
        self.put_by_address(SESSION, sessions).await
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
        let wanted: Vec<String> = ids.iter().map(|i| i.to_string()).collect();
        let rows = self.rows(PREKEY, Filter::all().k_in(wanted)).await?;
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
        self.rows(SIGNED_PREKEY, Filter::all())
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
        self.put_by_address(SENDER_KEY, sender_keys).await
    }

    async fn get_sender_key(&self, address: &str) -> Result<Option<Vec<u8>>> {
        self.get_value(key(SENDER_KEY, address)).await
    }

    async fn delete_sender_key(&self, address: &str) -> Result<()> {
        self.delete(key(SENDER_KEY, address)).await
    }
}

impl DeviceDb {
    /// Writes `(address, value)` items of one kind in one transaction.
    async fn put_by_address<V: AsRef<[u8]>>(
        &self,
        kind: &'static str,
        items: &[(Arc<str>, V)],
    ) -> Result<()> {
        let rows = items
            .iter()
            .map(|(address, value)| self.row(key(kind, address), value.as_ref(), 0, None))
            .collect();
        if !HotRows::keeps(kind) {
            return self.upsert(rows).await;
        }
        let plains = items
            .iter()
            .map(|(address, value)| (&**address, value.as_ref()))
            .collect();
        self.upsert_kept(kind, rows, plains).await
    }
}
