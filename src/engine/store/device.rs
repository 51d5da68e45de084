//! wacore's `DeviceStore`: the device record itself (keys, identity, props).

use std::sync::Arc;

use async_trait::async_trait;
use whatsapp_rust::wacore;
use whatsapp_rust::wacore::store::error::Result;
use whatsapp_rust::wacore::store::traits::*;
use whatsapp_rust::wacore::store::Device;

use super::rows::key;
use super::{DeviceDb, DEVICE};

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
