//! Accounts (virtual phones) and their linked devices, persisted as JSON:
//! the server's key in `simulator.json`, one file per account under
//! `accounts/`, so a change to one phone writes that phone only (a single
//! file of every account made linking O(N) per link: 20 links/s at 10,000).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use wacore::libsignal::protocol::KeyPair;

use super::phone::{keypair_from_private, new_keypair, now_secs, pub32, random_bytes};

/// File name of the persisted state under the data directory.
pub const STATE_FILE: &str = "simulator.json";
/// Folder of the account files, beside `STATE_FILE`.
const ACCOUNTS_DIR: &str = "accounts";

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
    /// Accounts as older versions kept them (in this file); read, never written.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    accounts: BTreeMap<String, AccountRec>,
}

/// An account's file name: the phone when it is plain, else its hex.
fn account_file(dir: &Path, phone: &str) -> PathBuf {
    let stem = if !phone.is_empty() && phone.bytes().all(|b| b.is_ascii_alphanumeric()) {
        phone.to_string()
    } else {
        format!("x{}", hex::encode(phone))
    };
    dir.join(ACCOUNTS_DIR).join(format!("{stem}.json"))
}

/// Write a file whole or not at all: a temp file, then rename.
fn write_atomic(file: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = file.with_extension("json.tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, file)
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
        let accounts_dir = dir.join(ACCOUNTS_DIR);
        std::fs::create_dir_all(&accounts_dir)?;
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
        let legacy = !fs.accounts.is_empty();
        let mut recs = fs.accounts;
        for entry in std::fs::read_dir(&accounts_dir)? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "json") {
                let raw = std::fs::read(&path)?;
                let rec: AccountRec = serde_json::from_slice(&raw)
                    .map_err(|e| bad(&format!("{}: {e}", path.display())))?;
                recs.insert(rec.phone.clone(), rec);
            }
        }
        let mut accounts = BTreeMap::new();
        for (phone, rec) in recs {
            let identity = unb64(&rec.identity_private)
                .and_then(|b| keypair_from_private(&b))
                .ok_or_else(|| bad("bad account identity key"))?;
            accounts.insert(phone, Account { rec, identity });
        }
        let st = State {
            server_static,
            accounts,
            file: Some(file),
        };
        if legacy {
            st.save()?; // into the per-account layout
        }
        Ok(st)
    }

    /// Writes the state file (the server's key) and every account file,
    /// each atomically. A no-op for an in-memory simulator.
    pub fn save(&self) -> std::io::Result<()> {
        let Some(file) = &self.file else {
            return Ok(());
        };
        let fs = FileState {
            server_static_private: b64(self.server_static.private_key.serialize()),
            accounts: BTreeMap::new(),
        };
        let json = serde_json::to_vec_pretty(&fs).map_err(std::io::Error::other)?;
        write_atomic(file, &json)?;
        for phone in self.accounts.keys() {
            self.save_account(phone)?;
        }
        Ok(())
    }

    /// Writes one account's file (accounts are never removed, only their
    /// devices). The folder was made by `open`.
    pub fn save_account(&self, phone: &str) -> std::io::Result<()> {
        let (Some(dir), Some(acct)) = (
            self.file.as_deref().and_then(Path::parent),
            self.accounts.get(phone),
        ) else {
            return Ok(());
        };
        let json = serde_json::to_vec_pretty(&acct.rec).map_err(std::io::Error::other)?;
        write_atomic(&account_file(dir, phone), &json)
    }

    /// Persist one account after a change to it; failures are logged.
    pub fn save_account_logged(&self, phone: &str) {
        if let Err(e) = self.save_account(phone) {
            log::error!("simulator: cannot save account {phone}: {e}");
        }
    }
}
