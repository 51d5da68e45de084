//! Encryption of secrets at rest under the master key.
//!
//! `SecretBox` seals blobs with AES-256-CTR and authenticates them with
//! HMAC-SHA256 (encrypt-then-MAC). Sealed layout:
//!
//! ```text
//! version (1 byte, = 1) || iv (16 random bytes) || ciphertext || mac (32 bytes)
//! mac = HMAC-SHA256(mac_key, version || iv || len(aad) as u64 BE || aad || ciphertext)
//! ```
//!
//! The encryption and MAC keys are derived from the 32-byte master key with
//! HMAC-SHA256 under distinct labels, so the master key itself never keys a
//! primitive directly. `aad` binds a blob to where it is stored (session,
//! kind, key): a row copied to another place fails authentication.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use aes::cipher::{KeyIvInit, StreamCipher};
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

type Aes256Ctr = ctr::Ctr128BE<aes::Aes256>;
type HmacSha256 = Hmac<Sha256>;

const VERSION: u8 = 1;
const IV_LEN: usize = 16;
const MAC_LEN: usize = 32;
const OVERHEAD: usize = 1 + IV_LEN + MAC_LEN;

const ENC_LABEL: &[u8] = b"wasup/v1/secretbox/aes-256-ctr";
const MAC_LABEL: &[u8] = b"wasup/v1/secretbox/hmac-sha256";

/// The file name of the master key inside the data directory.
pub const MASTER_KEY_FILE: &str = "master.key";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CryptoError {
    #[error("sealed blob is too short")]
    TooShort,
    #[error("sealed blob has unknown version {0}")]
    UnknownVersion(u8),
    #[error("sealed blob failed authentication (wrong master key or tampered data)")]
    BadMac,
}

/// Seals and opens secret blobs under keys derived from the master key.
pub struct SecretBox {
    enc_key: [u8; 32],
    mac_key: [u8; 32],
}

impl fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretBox(..)")
    }
}

fn derive(master: &[u8; 32], label: &[u8]) -> [u8; 32] {
    let mut mac = <HmacSha256 as Mac>::new_from_slice(master).expect("HMAC takes any key length");
    mac.update(label);
    mac.finalize().into_bytes().into()
}

impl SecretBox {
    pub fn new(master_key: &[u8; 32]) -> SecretBox {
        SecretBox {
            enc_key: derive(master_key, ENC_LABEL),
            mac_key: derive(master_key, MAC_LABEL),
        }
    }

    fn mac(&self, header_iv: &[u8], aad: &[u8], ciphertext: &[u8]) -> HmacSha256 {
        let mut mac =
            <HmacSha256 as Mac>::new_from_slice(&self.mac_key).expect("HMAC takes any key length");
        mac.update(header_iv);
        mac.update(&(aad.len() as u64).to_be_bytes());
        mac.update(aad);
        mac.update(ciphertext);
        mac
    }

    /// Encrypt `plaintext`, binding it to `aad` (not stored, must be given again to open).
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let mut iv = [0u8; IV_LEN];
        rand::rng().fill_bytes(&mut iv);
        let mut out = Vec::with_capacity(plaintext.len() + OVERHEAD);
        out.push(VERSION);
        out.extend_from_slice(&iv);
        out.extend_from_slice(plaintext);
        let mut cipher = Aes256Ctr::new((&self.enc_key).into(), (&iv).into());
        cipher.apply_keystream(&mut out[1 + IV_LEN..]);
        let tag = self
            .mac(&out[..1 + IV_LEN], aad, &out[1 + IV_LEN..])
            .finalize()
            .into_bytes();
        out.extend_from_slice(&tag);
        out
    }

    /// `seal` without associated data.
    pub fn encrypt(&self, plaintext: &[u8]) -> Vec<u8> {
        self.seal(b"", plaintext)
    }

    /// `open` without associated data.
    pub fn decrypt(&self, sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
        self.open(b"", sealed)
    }

    /// Check and decrypt a blob made by [`SecretBox::seal`] with the same `aad`.
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
        if sealed.len() < OVERHEAD {
            return Err(CryptoError::TooShort);
        }
        if sealed[0] != VERSION {
            return Err(CryptoError::UnknownVersion(sealed[0]));
        }
        let (body, tag) = sealed.split_at(sealed.len() - MAC_LEN);
        let (header_iv, ciphertext) = body.split_at(1 + IV_LEN);
        // verify_slice compares in constant time.
        self.mac(header_iv, aad, ciphertext)
            .verify_slice(tag)
            .map_err(|_| CryptoError::BadMac)?;
        let iv: [u8; IV_LEN] = header_iv[1..].try_into().expect("16 bytes");
        let mut plain = ciphertext.to_vec();
        let mut cipher = Aes256Ctr::new((&self.enc_key).into(), (&iv).into());
        cipher.apply_keystream(&mut plain);
        Ok(plain)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MasterKeyError {
    #[error("could not create the data directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("could not read the master key file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("could not write the master key file {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the master key file {path} is invalid: {reason}; it must hold exactly 64 hex characters \
         (32 bytes). Restore the right file or set WASUP_MASTER_KEY; do not delete it unless you \
         accept losing every linked session"
    )]
    Invalid { path: PathBuf, reason: String },
}

/// Create `dir` (and any missing parent) with mode 0700: the data directory
/// holds the keys and the database. An existing directory keeps its mode.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// The master key: `from_env` (WASUP_MASTER_KEY, already parsed) wins;
/// otherwise `<data_dir>/master.key` is read, or created on first boot with
/// 32 random bytes (hex, mode 0600, written atomically).
pub fn load_or_create_master_key(
    data_dir: &Path,
    from_env: Option<[u8; 32]>,
) -> Result<[u8; 32], MasterKeyError> {
    if let Some(key) = from_env {
        return Ok(key);
    }
    create_private_dir(data_dir).map_err(|source| MasterKeyError::CreateDir {
        path: data_dir.to_path_buf(),
        source,
    })?;
    let path = data_dir.join(MASTER_KEY_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => parse_key_file(&path, &bytes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => create_key_file(&path),
        Err(source) => Err(MasterKeyError::Read { path, source }),
    }
}

fn parse_key_file(path: &Path, bytes: &[u8]) -> Result<[u8; 32], MasterKeyError> {
    let invalid = |reason: &str| MasterKeyError::Invalid {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    };
    let text = std::str::from_utf8(bytes).map_err(|_| invalid("not text"))?;
    let text = text.trim();
    if text.len() != 64 {
        return Err(invalid(&format!("{} characters instead of 64", text.len())));
    }
    let raw = hex::decode(text).map_err(|_| invalid("not hexadecimal"))?;
    raw.try_into().map_err(|_| invalid("not 32 bytes"))
}

fn create_key_file(path: &Path) -> Result<[u8; 32], MasterKeyError> {
    let write_err = |source| MasterKeyError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut key = [0u8; 32];
    rand::rng().fill_bytes(&mut key);
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{MASTER_KEY_FILE}.tmp-{}-{:x}",
        std::process::id(),
        rand::rng().next_u64()
    ));
    let result = (|| {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options.open(&tmp)?;
        file.write_all(hex::encode(key).as_bytes())?;
        file.write_all(b"\n")?;
        file.sync_all()?;
        drop(file);
        // hard_link fails if the target exists: a concurrent first boot keeps
        // the key that won, and we read that one back.
        match std::fs::hard_link(&tmp, path) {
            Ok(()) => Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(Some(())),
            Err(e) => Err(e),
        }
    })();
    let _ = std::fs::remove_file(&tmp);
    match result.map_err(write_err)? {
        None => {
            if let Ok(d) = std::fs::File::open(dir) {
                let _ = d.sync_all();
            }
            log::info!("created a new master key at {}", path.display());
            Ok(key)
        }
        Some(()) => {
            let bytes = std::fs::read(path).map_err(|source| MasterKeyError::Read {
                path: path.to_path_buf(),
                source,
            })?;
            parse_key_file(path, &bytes)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sb() -> SecretBox {
        SecretBox::new(&[7u8; 32])
    }

    #[test]
    fn round_trip() {
        let b = sb();
        for plain in [
            &b""[..],
            b"x",
            b"a longer secret than one block of sixteen bytes",
        ] {
            let sealed = b.seal(b"ctx", plain);
            assert_eq!(sealed.len(), plain.len() + OVERHEAD);
            assert_eq!(b.open(b"ctx", &sealed).unwrap(), plain);
            assert_eq!(b.decrypt(&b.encrypt(plain)).unwrap(), plain);
        }
    }

    #[test]
    fn ciphertext_hides_plaintext_and_ivs_differ() {
        let b = sb();
        let plain = b"identical plaintext, identical plaintext";
        let s1 = b.seal(b"", plain);
        let s2 = b.seal(b"", plain);
        assert_ne!(s1[1..17], s2[1..17], "IVs must differ");
        assert_ne!(s1, s2);
        assert!(!s1.windows(plain.len()).any(|w| w == plain));
    }

    #[test]
    fn tampering_is_detected() {
        let b = sb();
        let sealed = b.seal(b"ctx", b"secret value here");
        // version, IV, ciphertext, MAC
        for idx in [0, 1, 10, 17, 20, sealed.len() - 32, sealed.len() - 1] {
            let mut t = sealed.clone();
            t[idx] ^= 0x01;
            assert!(b.open(b"ctx", &t).is_err(), "flip at {idx} not detected");
        }
        assert_eq!(b.open(b"other", &sealed), Err(CryptoError::BadMac));
        assert_eq!(b.open(b"ctx", &sealed[..20]), Err(CryptoError::TooShort));
        assert_eq!(
            SecretBox::new(&[8u8; 32]).open(b"ctx", &sealed),
            Err(CryptoError::BadMac)
        );
    }

    #[test]
    fn master_key_file_created_0600_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("nested/data");
        let k1 = load_or_create_master_key(&data, None).unwrap();
        let path = data.join(MASTER_KEY_FILE);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let k2 = load_or_create_master_key(&data, None).unwrap();
        assert_eq!(k1, k2);
        assert_eq!(
            std::fs::read_to_string(&path).unwrap().trim(),
            hex::encode(k1)
        );
        // The environment wins over the file.
        assert_eq!(
            load_or_create_master_key(&data, Some([3u8; 32])).unwrap(),
            [3u8; 32]
        );
        // No temp files left behind.
        let names: Vec<_> = std::fs::read_dir(&data).unwrap().collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn bad_master_key_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(MASTER_KEY_FILE);
        for bad in [
            &b"abcd"[..],
            &[b'z'; 64][..],
            &[0xffu8; 64][..],
            &[b'a'; 66][..],
        ] {
            std::fs::write(&path, bad).unwrap();
            let err = load_or_create_master_key(dir.path(), None).unwrap_err();
            assert!(matches!(err, MasterKeyError::Invalid { .. }), "{err}");
            assert!(err.to_string().contains("master.key"));
        }
        // Untouched: a bad file is never overwritten.
        assert_eq!(std::fs::read(&path).unwrap(), vec![b'a'; 66]);
    }
}
