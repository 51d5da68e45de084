//! The key ring: every API key, in memory, looked up by the SHA-256 of the
//! presented secret. The database is the source of truth; the ring is loaded
//! at boot and kept in step by the WebActor on create and revoke, so that
//! authenticating a request costs one hash and one map lookup.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use parking_lot::RwLock;
use rand::Rng;
use sha2::{Digest, Sha256};

use crate::error::ErrorCode;
use crate::model::{ApiKeyId, ApiKeyRecord, Caller};

/// The fixed, non-secret start of every generated key.
const KEY_MARKER: &str = "wsp_";
/// Shortest preset admin key accepted (`WASUP_ADMIN_KEY`): a full-power
/// credential should be no easier to guess than a long random one.
pub const MIN_PRESET_KEY_LEN: usize = 32;
/// Secret characters the displayed prefix may show: enough to tell keys
/// apart, too few to help guess the rest.
pub const PREFIX_SECRET_CHARS: usize = 8;
const KEY_BODY_LEN: usize = 40;
const KEY_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("An API key is required: send it in the X-API-Key header")]
    Missing,
    #[error("The API key is not valid")]
    Invalid,
    #[error("The API key has been revoked")]
    Revoked,
    #[error("The API key has expired")]
    Expired,
}

impl AuthError {
    pub fn code(self) -> ErrorCode {
        match self {
            AuthError::Missing => ErrorCode::MissingApiKey,
            AuthError::Invalid => ErrorCode::InvalidApiKey,
            AuthError::Revoked => ErrorCode::ApiKeyRevoked,
            AuthError::Expired => ErrorCode::ApiKeyExpired,
        }
    }
}

pub fn hash_key(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// A fresh random key: `wsp_` and 40 base62 characters (about 238 bits).
pub fn generate_key() -> String {
    let mut rng = rand::rng();
    let body: String = (0..KEY_BODY_LEN)
        .map(|_| KEY_ALPHABET[rng.random_range(0..KEY_ALPHABET.len())] as char)
        .collect();
    format!("{KEY_MARKER}{body}")
}

/// The part of a key shown in listings: the `wsp_` marker, if the key has
/// one, and the next `PREFIX_SECRET_CHARS` characters. A preset key without
/// the marker shows only those eight. Only the display depends on this:
/// keys are found by the hash of the whole secret.
pub fn key_prefix(secret: &str) -> String {
    let marker = if secret.starts_with(KEY_MARKER) {
        KEY_MARKER
    } else {
        ""
    };
    let shown: String = secret[marker.len()..]
        .chars()
        .take(PREFIX_SECRET_CHARS)
        .collect();
    format!("{marker}{shown}")
}

#[derive(Default)]
pub struct KeyRing {
    by_hash: RwLock<HashMap<[u8; 32], ApiKeyRecord>>,
}

impl KeyRing {
    pub fn new(keys: Vec<ApiKeyRecord>) -> Self {
        let ring = KeyRing::default();
        for key in keys {
            ring.insert(key);
        }
        ring
    }

    pub fn insert(&self, key: ApiKeyRecord) {
        self.by_hash.write().insert(key.key_hash, key);
    }

    pub fn is_empty(&self) -> bool {
        self.by_hash.read().is_empty()
    }

    pub fn revoke(&self, id: ApiKeyId, at: DateTime<Utc>) -> bool {
        let mut keys = self.by_hash.write();
        match keys
            .values_mut()
            .find(|k| k.id == id && k.revoked_at.is_none())
        {
            Some(key) => {
                key.revoked_at = Some(at);
                true
            }
            None => false,
        }
    }

    pub fn get(&self, id: ApiKeyId) -> Option<ApiKeyRecord> {
        self.by_hash.read().values().find(|k| k.id == id).cloned()
    }

    /// Every key, newest first.
    pub fn list(&self) -> Vec<ApiKeyRecord> {
        let mut keys: Vec<_> = self.by_hash.read().values().cloned().collect();
        keys.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(a.name.cmp(&b.name)));
        keys
    }

    /// Who is calling with this secret, as of `now`.
    pub fn authenticate(
        &self,
        secret: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Caller, AuthError> {
        let secret = secret
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .ok_or(AuthError::Missing)?;
        let keys = self.by_hash.read();
        let key = keys.get(&hash_key(secret)).ok_or(AuthError::Invalid)?;
        caller_of_key(key, now)
    }

    /// Who is calling as the key `id` (a dashboard sign-in remembers the
    /// key's id, never its secret), as of `now`: revocation and expiry
    /// count at once.
    pub fn caller_by_id(&self, id: ApiKeyId, now: DateTime<Utc>) -> Result<Caller, AuthError> {
        let keys = self.by_hash.read();
        let key = keys
            .values()
            .find(|k| k.id == id)
            .ok_or(AuthError::Invalid)?;
        caller_of_key(key, now)
    }
}

/// The caller a key makes, unless it is revoked or expired at `now`.
fn caller_of_key(key: &ApiKeyRecord, now: DateTime<Utc>) -> Result<Caller, AuthError> {
    if key.revoked_at.is_some() {
        return Err(AuthError::Revoked);
    }
    if key.expires_at.is_some_and(|at| at <= now) {
        return Err(AuthError::Expired);
    }
    Ok(Caller {
        key_id: key.id,
        role: key.role,
        scope: key
            .allowed_sessions
            .as_ref()
            .filter(|ids| !ids.is_empty())
            .map(|ids| ids.iter().copied().collect()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Role;
    use uuid::Uuid;

    fn record(secret: &str, role: Role) -> ApiKeyRecord {
        ApiKeyRecord {
            id: Uuid::new_v4(),
            name: "k".into(),
            key_prefix: key_prefix(secret),
            key_hash: hash_key(secret),
            role,
            allowed_sessions: None,
            expires_at: None,
            created_at: Utc::now(),
            revoked_at: None,
        }
    }

    #[test]
    fn generated_keys_are_distinct_and_well_formed() {
        let a = generate_key();
        assert!(a.starts_with("wsp_") && a.len() == 44);
        assert_ne!(a, generate_key());
        assert_eq!(key_prefix(&a), a[..12]);
    }

    #[test]
    fn prefix_shows_at_most_eight_secret_characters() {
        let secret_chars = |key: &str| {
            let prefix = key_prefix(key);
            assert!(key.starts_with(&prefix), "{key:?} -> {prefix:?}");
            prefix
                .strip_prefix(KEY_MARKER)
                .unwrap_or(&prefix)
                .chars()
                .count()
        };
        assert_eq!(secret_chars(&generate_key()), PREFIX_SECRET_CHARS);
        // Preset keys, with and without the marker, and short ones.
        assert_eq!(secret_chars("wsp_test_admin_key_0123456789abcdef"), 8);
        assert_eq!(secret_chars("0123456789abcdefghijklmnopqrstuvwxyz"), 8);
        assert_eq!(secret_chars("wsp_abc"), 3);
        assert_eq!(secret_chars("ünïcödé-kéy-ünïcödé-kéy-ünïcödé-kéy"), 8);
    }

    #[test]
    fn authenticate_checks_presence_validity_revocation_expiry() {
        let now = Utc::now();
        let secret = generate_key();
        let key = record(&secret, Role::Operator);
        let id = key.id;
        let ring = KeyRing::new(vec![key]);
        assert_eq!(ring.authenticate(None, now), Err(AuthError::Missing));
        assert_eq!(
            ring.authenticate(Some("nope"), now),
            Err(AuthError::Invalid)
        );
        assert_eq!(
            ring.authenticate(Some(&secret), now).unwrap().role,
            Role::Operator
        );
        ring.revoke(id, now);
        assert_eq!(
            ring.authenticate(Some(&secret), now),
            Err(AuthError::Revoked)
        );

        let secret = generate_key();
        let mut key = record(&secret, Role::Viewer);
        key.expires_at = Some(now - chrono::Duration::seconds(1));
        ring.insert(key);
        assert_eq!(
            ring.authenticate(Some(&secret), now),
            Err(AuthError::Expired)
        );
    }
}
