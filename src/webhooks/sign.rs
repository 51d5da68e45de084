//! Standard Webhooks signatures: `v1,<base64 HMAC-SHA256(key, id.timestamp.body)>`
//! with key = the base64-decoded part of `whsec_…`.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The stored secret is not `whsec_` + base64 (it was validated when given,
/// so this means a damaged record).
#[derive(Debug, thiserror::Error)]
#[error("the webhook secret is malformed")]
pub struct MalformedSecret;

pub fn signature(
    secret: &str,
    id: &str,
    timestamp: i64,
    body: &[u8],
) -> Result<String, MalformedSecret> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let key = secret
        .strip_prefix("whsec_")
        .and_then(|k| b64.decode(k).ok())
        .ok_or(MalformedSecret)?;
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&key).expect("HMAC takes any key length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    Ok(format!("v1,{}", b64.encode(mac.finalize().into_bytes())))
}

#[cfg(test)]
mod tests {
    /// The example of the Standard Webhooks specification.
    #[test]
    fn matches_the_specification_example() {
        let sig = super::signature(
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        )
        .unwrap();
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }
}
