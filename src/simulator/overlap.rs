//! Overlapping connections, per device: a login of a device while another
//! connection of the same device is still open (two processes holding one
//! session's credentials at once: what cluster mode must never do). The
//! simulator replaces the older connection, as WhatsApp does; this counts
//! that it had to. Process-wide, so one `wasup-simulator` process serving
//! every node of a cluster counts across them (`GET /overlaps` on its
//! control API).

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::Serialize;

use super::DevKey;

static OVERLAPS: Mutex<BTreeMap<DevKey, u64>> = Mutex::new(BTreeMap::new());

/// A device logged in while `older_open` other connections of it were open.
pub(crate) fn saw(key: &DevKey, older_open: usize) {
    if older_open == 0 {
        return;
    }
    let mut map = OVERLAPS.lock().unwrap_or_else(|e| e.into_inner());
    *map.entry(key.clone()).or_default() += older_open as u64;
}

/// One device's count.
#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
pub struct DeviceOverlaps {
    pub phone: String,
    pub device: u16,
    pub overlaps: u64,
}

/// Every overlap seen since the process started: the total and per device.
#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
pub struct Overlaps {
    pub total: u64,
    pub devices: Vec<DeviceOverlaps>,
}

pub fn snapshot() -> Overlaps {
    let map = OVERLAPS.lock().unwrap_or_else(|e| e.into_inner());
    Overlaps {
        total: map.values().sum(),
        devices: map
            .iter()
            .map(|((phone, device), n)| DeviceOverlaps {
                phone: phone.clone(),
                device: *device,
                overlaps: *n,
            })
            .collect(),
    }
}
