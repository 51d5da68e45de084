//! wacore's `MsgSecretStore`: message secrets (for edits, reactions, polls).

use async_trait::async_trait;
use whatsapp_rust::wacore::store::error::Result;
use whatsapp_rust::wacore::store::traits::*;

use super::rows::{Filter, Key, MergeNumbers};
use super::*;

#[async_trait]
impl MsgSecretStore for DeviceDb {
    async fn put_msg_secrets(&self, entries: Vec<MsgSecretEntry>) -> Result<usize> {
        let stored = entries.len();
        let rows = entries
            .iter()
            .map(|e| {
                let k = Key {
                    kind: MSG_SECRET,
                    k: &e.chat,
                    k2: &e.sender,
                    k3: &e.msg_id,
                };
                self.row(k, &e.secret, e.expires_at, Some(e.message_ts))
            })
            .collect();
        // A secret stored before keeps the later expiry and message time;
        // read and merged in the write's own grouped job, which the writer
        // thread runs one at a time: no lock needed around it.
        let merge: MergeNumbers = |row, (n1, n2)| {
            row.n1 = merge_msg_secret_expiry(n1, row.n1);
            row.n2 = Some(merge_msg_secret_message_ts(
                n2.unwrap_or(0),
                row.n2.unwrap_or(0),
            ));
        };
        self.upsert_merged(rows, Some(merge)).await?;
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
