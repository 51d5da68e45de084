//! Accounts (virtual phones) and their linked devices, persisted as JSON.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use wacore::libsignal::protocol::KeyPair;

use super::phone::{keypair_from_private, new_keypair, now_secs, pub32, random_bytes};

/// File name of the persisted state under the data directory.
pub const STATE_FILE: &str = "simulator.json";

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

fn unb64(s: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::STANDARD.decode(s).ok()
}

#[derive(Serialize, Deserialize, Clone, Debug)]
pub(crate) struct LinkedDeviceRec {
    pub id: u16,
    pub key_index: u32,
    pub noise_pub: String,
    pub identity_pub: String,
    pub platform: String,
    pub push_name: String,
    pub linked_at: i64,
    /// Unix seconds until which logins get `<failure reason=402>`.
    #[serde(default)]
    pub banned_until: Option<i64>,
    #[serde(default)]
    pub ban_code: u32,
}

#[derive(Serialize, Deserialize, Clone, Debug)]
pub(crate) struct AccountRec {
    pub phone: String,
    pub lid: String,
    pub push_name: String,
    pub identity_private: String,
    pub raw_id: u32,
    pub next_key_index: u32,
    pub devices: BTreeMap<u16, LinkedDeviceRec>,
}

#[derive(Serialize, Deserialize, Default)]
struct FileState {
    server_static_private: String,
    accounts: BTreeMap<String, AccountRec>,
}

/// In-memory account, with its decoded identity key.
pub(crate) struct Account {
    pub rec: AccountRec,
    pub identity: KeyPair,
}

impl Account {
    pub fn new(phone: &str, push_name: &str) -> Self {
        let identity = new_keypair();
        let r = random_bytes::<8>();
        let lid = format!("1{:014}", u64::from_le_bytes(r) % 100_000_000_000_000);
        let raw_id = u32::from_le_bytes(random_bytes::<4>()) & 0x7fff_ffff;
        Account {
            rec: AccountRec {
                phone: phone.to_string(),
                lid,
                push_name: push_name.to_string(),
                identity_private: b64(identity.private_key.serialize()),
                raw_id,
                next_key_index: 1,
                devices: BTreeMap::new(),
            },
            identity,
        }
    }

    pub fn identity_pub(&self) -> [u8; 32] {
        pub32(&self.identity)
    }

    pub fn valid_key_indexes(&self) -> Vec<u32> {
        self.rec.devices.values().map(|d| d.key_index).collect()
    }
}

impl LinkedDeviceRec {
    pub fn new(
        id: u16,
        key_index: u32,
        noise_pub: &[u8],
        identity_pub: &[u8],
        platform: &str,
        push_name: &str,
    ) -> Self {
        LinkedDeviceRec {
            id,
            key_index,
            noise_pub: b64(noise_pub),
            identity_pub: b64(identity_pub),
            platform: platform.to_string(),
            push_name: push_name.to_string(),
            linked_at: now_secs(),
            banned_until: None,
            ban_code: 0,
        }
    }

    pub fn noise_pub_bytes(&self) -> Vec<u8> {
        unb64(&self.noise_pub).unwrap_or_default()
    }
}

/// Everything the simulator keeps across restarts.
pub(crate) struct State {
    pub server_static: KeyPair,
    pub accounts: BTreeMap<String, Account>,
    pub file: Option<PathBuf>,
}

impl State {
    pub fn new_ephemeral() -> Self {
        State {
            server_static: new_keypair(),
            accounts: BTreeMap::new(),
            file: None,
        }
    }

    pub fn open(dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let file = dir.join(STATE_FILE);
        let bad =
            |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string());
        if !file.exists() {
            let st = State {
                file: Some(file),
                ..State::new_ephemeral()
            };
            st.save()?;
            return Ok(st);
        }
        let raw = std::fs::read(&file)?;
        let fs: FileState =
            serde_json::from_slice(&raw).map_err(|e| bad(&format!("{}: {e}", file.display())))?;
        let server_static = unb64(&fs.server_static_private)
            .and_then(|b| keypair_from_private(&b))
            .ok_or_else(|| bad("bad server static key"))?;
        let mut accounts = BTreeMap::new();
        for (phone, rec) in fs.accounts {
            let identity = unb64(&rec.identity_private)
                .and_then(|b| keypair_from_private(&b))
                .ok_or_else(|| bad("bad account identity key"))?;
            accounts.insert(phone, Account { rec, identity });
        }
        Ok(State {
            server_static,
            accounts,
            file: Some(file),
        })
    }

    /// Writes the state file (atomically: temp file, then rename). A no-op
    /// for an in-memory simulator.
    pub fn save(&self) -> std::io::Result<()> {
        let Some(file) = &self.file else {
            return Ok(());
        };
        let fs = FileState {
            server_static_private: b64(self.server_static.private_key.serialize()),
            accounts: self
                .accounts
                .iter()
                .map(|(k, a)| (k.clone(), a.rec.clone()))
                .collect(),
        };
        let json = serde_json::to_vec_pretty(&fs).map_err(std::io::Error::other)?;
        let tmp = file.with_extension("json.tmp");
        std::fs::write(&tmp, json)?;
        std::fs::rename(&tmp, file)
    }

    pub fn save_logged(&self) {
        if let Err(e) = self.save() {
            log::error!("simulator: cannot save its state: {e}");
        }
    }
}
