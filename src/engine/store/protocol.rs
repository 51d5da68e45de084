//! wacore's `ProtocolStore`: sender-key devices, LID mappings, base keys,
//! device lists, group metadata, tc tokens, sent and pending messages.

use async_trait::async_trait;
use diesel::prelude::*;
use whatsapp_rust::wacore;
use whatsapp_rust::wacore::store::error::Result;
use whatsapp_rust::wacore::store::traits::*;

use super::rows::{db_err, key, key2, now_micros, ser_err, upsert_rows, Filter, Key, Row};
use super::*;

#[async_trait]
impl ProtocolStore for DeviceDb {
    async fn get_sender_key_devices(&self, group_jid: &str) -> Result<Vec<(String, bool)>> {
        Ok(self
            .rows(SKD, Filter::all().k(group_jid))
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
        self.delete_rows(SKD, Filter::all().k(group_jid)).await?;
        Ok(())
    }

    async fn delete_sender_key_device_rows(&self, device_jids: &[&str]) -> Result<()> {
        if device_jids.is_empty() {
            return Ok(());
        }
        let set = device_jids.iter().map(|s| s.to_string()).collect();
        self.delete_rows(SKD, Filter::all().k2_in(set)).await?;
        Ok(())
    }

    async fn clear_all_sender_key_devices(&self) -> Result<()> {
        self.delete_rows(SKD, Filter::all()).await?;
        Ok(())
    }

    async fn get_lid_mapping(&self, lid: &str) -> Result<Option<LidPnMappingEntry>> {
        let row = self.first_row(LID, Filter::all().k(lid)).await?;
        self.decode_lid(row)
    }

    async fn get_pn_mapping(&self, phone: &str) -> Result<Option<LidPnMappingEntry>> {
        // The most recently written LID for that phone number.
        let row = self
            .first_row(LID, Filter::all().k2(phone).newest_first())
            .await?;
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
        let (db, sid) = (self.db.clone(), self.sid.clone());
        self.db
            .run(move |conn| {
                crate::db::transaction_in(conn, |conn| {
                    db.check_owner(conn, &sid)?;
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
                    upsert_rows(conn, &rows).map_err(DbError::from)
                })
            })
            .await
            .map_err(db_err)
    }

    async fn get_all_lid_mappings(&self) -> Result<Vec<LidPnMappingEntry>> {
        self.rows(LID, Filter::all())
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
            .rows(TC_TOKEN, Filter::all())
            .await?
            .into_iter()
            .map(|r| r.k)
            .collect())
    }

    async fn delete_expired_tc_tokens(&self, token_cutoff: i64, sender_cutoff: i64) -> Result<u32> {
        let _guard = self.rmw.lock().await;
        let mut dead = Vec::new();
        for row in self.rows(TC_TOKEN, Filter::all()).await? {
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
        let row: Option<Row> =
            self.db
                .run(move |conn| {
                    crate::db::transaction_in(conn, |conn| each_backend!(conn, c => {
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
        self.delete_rows(SENT_MSG, Filter::all().n1_before(cutoff_timestamp))
            .await
            .map(|n| n as u32)
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
        self.delete_rows(PENDING_IN, Filter::all().n1_before(cutoff_timestamp))
            .await
            .map(|n| n as u32)
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
