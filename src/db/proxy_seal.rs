//! Proxy URLs at rest: a session's `proxy_url` column holds the URL sealed
//! with the master key (the password is a secret, issue 14.5), bound to the
//! session id, as `wasup-sealed:v1:<base64>`. Rows written before sealing
//! hold the plain URL: they are read as they are (a read-time fallback, no
//! migration) and sealed at the row's next write.

use base64::Engine as _;
use uuid::Uuid;

use crate::crypto::SecretBox;

use super::DbError;

const PREFIX: &str = "wasup-sealed:v1:";

fn aad(session: Uuid) -> Vec<u8> {
    format!("session:{session}\0proxy_url").into_bytes()
}

/// The column value for `url`.
pub fn seal(boxed: &SecretBox, session: Uuid, url: &str) -> String {
    let sealed = boxed.seal(&aad(session), url.as_bytes());
    format!(
        "{PREFIX}{}",
        base64::engine::general_purpose::STANDARD.encode(sealed)
    )
}

/// The URL a column value holds: opened when sealed, as is when plain.
pub fn open(boxed: Option<&SecretBox>, session: Uuid, stored: &str) -> Result<String, DbError> {
    let Some(encoded) = stored.strip_prefix(PREFIX) else {
        return Ok(stored.to_string());
    };
    let corrupt = |why: String| DbError::Corrupt(format!("session {session}: proxy_url: {why}"));
    let boxed = boxed.ok_or_else(|| corrupt("sealed, and no master key to open it".into()))?;
    let sealed = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|e| corrupt(e.to_string()))?;
    let plain = boxed
        .open(&aad(session), &sealed)
        .map_err(|e| corrupt(e.to_string()))?;
    String::from_utf8(plain).map_err(|e| corrupt(e.to_string()))
}

/// Is a column value sealed?
pub fn is_sealed(stored: &str) -> bool {
    stored.starts_with(PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_plain_ones_pass_through() {
        let boxed = SecretBox::new(&[7; 32]);
        let id = Uuid::new_v4();
        let url = "socks5://alice:s3cret@proxy.example:1080";
        let stored = seal(&boxed, id, url);
        assert!(is_sealed(&stored) && !stored.contains("s3cret") && !stored.contains("alice"));
        assert_eq!(open(Some(&boxed), id, &stored).unwrap(), url);
        assert_eq!(open(Some(&boxed), id, url).unwrap(), url);
        assert_eq!(open(None, id, url).unwrap(), url);
        // Bound to its session: a value copied to another row does not open.
        assert!(open(Some(&boxed), Uuid::new_v4(), &stored).is_err());
        assert!(open(None, id, &stored).is_err());
    }
}
