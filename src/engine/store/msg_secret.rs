//! wacore's `MsgSecretStore`: message secrets (for edits, reactions, polls).

use async_trait::async_trait;
use whatsapp_rust::wacore::store::error::Result;
use whatsapp_rust::wacore::store::traits::*;

use super::rows::{Filter, Key};
use super::*;

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
        let n = self
            .delete_rows(MSG_SECRET, Filter::all().expired_by(cutoff_timestamp))
            .await?;
        Ok(n as u32)
    }
}
