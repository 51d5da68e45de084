//! wacore's `AppSyncStore`: app-state sync keys, versions and mutation MACs.

use std::collections::HashMap;

use async_trait::async_trait;
use whatsapp_rust::wacore::appstate::hash::HashState;
use whatsapp_rust::wacore::store::error::Result;
use whatsapp_rust::wacore::store::traits::*;

use super::rows::{key, key2, Filter};
use super::*;

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
        let wanted: Vec<String> = index_macs.iter().map(hex::encode).collect();
        let rows = self
            .rows(MUTATION_MAC, Filter::all().k(name).k2_in(wanted))
            .await?;
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
        self.delete_rows(MUTATION_MAC, Filter::all().k(name).k2_in(set))
            .await?;
        Ok(())
    }

    async fn clear_mutation_macs(&self, name: &str) -> Result<()> {
        self.delete_rows(MUTATION_MAC, Filter::all().k(name))
            .await?;
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
