//! What the virtual phone computes: ADV identities for `pair-success`, the
//! check of the companion's `pair-device-sign`, the signed key-index list for
//! usync, the pairing-code key exchange and the app-state key share.

use std::sync::Arc;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use wacore::libsignal::protocol::{
    message_encrypt, process_prekey_bundle, CurveError, DeviceId, IdentityKey, KeyPair,
    PreKeyBundle, PreKeyId, PrivateKey, PublicKey, SignalProtocolError, SignedPreKeyId,
    UsePQRatchet,
};
use wacore::types::jid::JidExt;
use waproto::buffa::Message as _;
use waproto::whatsapp as wa;
use whatsapp_rust::Jid;

const PREFIX_ACCOUNT_SIGNATURE: &[u8] = &[6, 0];
const PREFIX_DEVICE_SIGNATURE: &[u8] = &[6, 1];
const PREFIX_KEY_INDEX_LIST: &[u8] = &[6, 2];

pub(crate) fn rng() -> rand_010::rngs::StdRng {
    rand_010::make_rng::<rand_010::rngs::StdRng>()
}

pub(crate) fn random_bytes<const N: usize>() -> [u8; N] {
    use rand_010::RngExt as _;
    let mut out = [0u8; N];
    rng().fill(&mut out);
    out
}

pub(crate) fn new_keypair() -> KeyPair {
    KeyPair::generate(&mut rng())
}

pub(crate) fn keypair_from_private(bytes: &[u8]) -> Option<KeyPair> {
    let private = PrivateKey::deserialize(bytes).ok()?;
    let public = private.public_key().ok()?;
    Some(KeyPair::new(public, private))
}

pub(crate) fn pub32(kp: &KeyPair) -> [u8; 32] {
    kp.public_key
        .public_key_bytes()
        .try_into()
        .expect("X25519 public key is 32 bytes")
}

/// The `<device-identity>` content of a `pair-success`: an
/// `ADVSignedDeviceIdentityHMAC` whose HMAC covers the encoded
/// `ADVSignedDeviceIdentity`, keyed by the ADV secret.
pub(crate) fn build_device_identity(
    account: &KeyPair,
    raw_id: u32,
    key_index: u32,
    companion_identity_pub: &[u8; 32],
    adv_secret: &[u8; 32],
) -> Vec<u8> {
    let details = wa::ADVDeviceIdentity {
        raw_id: Some(raw_id),
        timestamp: Some(now_secs() as u64),
        key_index: Some(key_index),
        account_type: Some(wa::ADVEncryptionType::E2EE),
        device_type: Some(wa::ADVEncryptionType::E2EE),
    }
    .encode_to_vec();
    let mut msg = Vec::with_capacity(2 + details.len() + 32);
    msg.extend_from_slice(PREFIX_ACCOUNT_SIGNATURE);
    msg.extend_from_slice(&details);
    msg.extend_from_slice(companion_identity_pub);
    let sig = account
        .private_key
        .calculate_signature(&msg, &mut rng())
        .expect("XEdDSA signing with a valid key");
    let signed = wa::ADVSignedDeviceIdentity {
        details: Some(details),
        account_signature_key: Some(pub32(account).to_vec()),
        account_signature: Some(sig.to_vec()),
        device_signature: None,
    }
    .encode_to_vec();
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(adv_secret).expect("any key length");
    mac.update(&signed);
    let hmac = mac.finalize().into_bytes().to_vec();
    wa::ADVSignedDeviceIdentityHMAC {
        details: Some(signed),
        hmac: Some(hmac),
        account_type: Some(wa::ADVEncryptionType::E2EE),
    }
    .encode_to_vec()
}

/// Why the companion's `pair-device-sign` is refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PairSignError {
    #[error("no pair-device-sign")]
    NoSign,
    #[error("undecodable {what}: {source}")]
    Undecodable {
        what: &'static str,
        source: waproto::buffa::DecodeError,
    },
    /// A part the check needs is absent ("no details").
    #[error("no {0}")]
    Missing(&'static str),
    #[error("account signature key is not the phone's")]
    ForeignAccountKey,
    #[error("bad {which} key: {source}")]
    BadKey {
        which: &'static str,
        source: CurveError,
    },
    /// `device` or `account`.
    #[error("{0} signature does not verify")]
    Signature(&'static str),
    #[error("signed key index {signed}, expected {expected}")]
    KeyIndex { signed: u32, expected: u32 },
}

/// Why the phone cannot finish a code pairing (`companion_finish`).
#[derive(Debug, thiserror::Error)]
pub(crate) enum CodePairingError {
    #[error("wrapped key bundle too short")]
    BundleTooShort,
    #[error("bad {which}: {source}")]
    BadKey {
        which: &'static str,
        source: CurveError,
    },
    #[error("{which} agreement: {source}")]
    Agreement {
        which: &'static str,
        source: CurveError,
    },
    /// `bundle key` or `adv secret`.
    #[error("{0} derivation failed")]
    Derivation(&'static str),
    #[error("the key bundle does not decrypt (wrong pairing code?)")]
    Undecryptable,
    #[error("key bundle has the wrong length")]
    BundleLength,
    /// `companion` or `primary`.
    #[error("key bundle names another {0} identity")]
    ForeignIdentity(&'static str),
}

/// Why a message from the phone to a companion cannot be encrypted.
#[derive(Debug, thiserror::Error)]
pub(crate) enum EncryptError {
    #[error("{0}")]
    Key(#[from] CurveError),
    #[error("{0}")]
    Bundle(SignalProtocolError),
    #[error("process_prekey_bundle: {0}")]
    Session(SignalProtocolError),
    #[error("message_encrypt: {0}")]
    Encrypt(SignalProtocolError),
}

/// Verifies the companion's `pair-device-sign`: its device signature and the
/// echoed account signature. Returns the key index it signed.
pub(crate) fn verify_pair_device_sign(
    account_pub: &[u8; 32],
    companion_identity_pub: &[u8; 32],
    signed_identity: &[u8],
) -> Result<u32, PairSignError> {
    use PairSignError::*;
    let signed =
        wa::ADVSignedDeviceIdentity::decode_from_slice(signed_identity).map_err(|source| {
            Undecodable {
                what: "ADVSignedDeviceIdentity",
                source,
            }
        })?;
    let details = signed.details.as_deref().ok_or(Missing("details"))?;
    let account_key = signed
        .account_signature_key
        .as_deref()
        .ok_or(Missing("account signature key"))?;
    if account_key != account_pub {
        return Err(ForeignAccountKey);
    }
    let companion =
        PublicKey::from_djb_public_key_bytes(companion_identity_pub).map_err(|source| BadKey {
            which: "companion",
            source,
        })?;
    let account = PublicKey::from_djb_public_key_bytes(account_pub).map_err(|source| BadKey {
        which: "account",
        source,
    })?;

    let device_sig = signed
        .device_signature
        .as_deref()
        .ok_or(Missing("device signature"))?;
    let msg = [
        PREFIX_DEVICE_SIGNATURE,
        details,
        companion_identity_pub,
        account_pub,
    ]
    .concat();
    if !companion.verify_signature(&msg, device_sig) {
        return Err(Signature("device"));
    }
    let account_sig = signed
        .account_signature
        .as_deref()
        .ok_or(Missing("account signature"))?;
    let msg = [PREFIX_ACCOUNT_SIGNATURE, details, companion_identity_pub].concat();
    if !account.verify_signature(&msg, account_sig) {
        return Err(Signature("account"));
    }
    let identity =
        wa::ADVDeviceIdentity::decode_from_slice(details).map_err(|source| Undecodable {
            what: "ADVDeviceIdentity",
            source,
        })?;
    identity.key_index.ok_or(Missing("key index"))
}

/// `ADVSignedKeyIndexList` for usync: the account's valid key indexes,
/// signed with the account key over `[6,2] || details`.
pub(crate) fn key_index_list(account: &KeyPair, raw_id: u32, valid: &[u32], ts: u64) -> Vec<u8> {
    let details = wa::ADVKeyIndexList {
        raw_id: Some(raw_id),
        timestamp: Some(ts),
        current_index: Some(valid.iter().copied().max().unwrap_or(0)),
        valid_indexes: valid.to_vec(),
        account_type: Some(wa::ADVEncryptionType::E2EE),
    }
    .encode_to_vec();
    let msg = [PREFIX_KEY_INDEX_LIST, &details[..]].concat();
    let sig = account
        .private_key
        .calculate_signature(&msg, &mut rng())
        .expect("XEdDSA signing with a valid key");
    wa::ADVSignedKeyIndexList {
        details: Some(details),
        account_signature: Some(sig.to_vec()),
        account_signature_key: Some(pub32(account).to_vec()),
    }
    .encode_to_vec()
}

/// Phone side of `companion_finish`: decrypts the wrapped key bundle with the
/// ephemeral DH, checks both identities and derives the ADV secret.
pub(crate) fn finish_code_pairing(
    phone_ephemeral: &KeyPair,
    companion_ephemeral_pub: &[u8; 32],
    account: &KeyPair,
    companion_identity_pub: &[u8; 32],
    wrapped_bundle: &[u8],
) -> Result<[u8; 32], CodePairingError> {
    use CodePairingError::*;
    if wrapped_bundle.len() < 32 + 12 + 16 {
        return Err(BundleTooShort);
    }
    let e_c =
        PublicKey::from_djb_public_key_bytes(companion_ephemeral_pub).map_err(|source| BadKey {
            which: "companion ephemeral",
            source,
        })?;
    let eph_shared = phone_ephemeral
        .private_key
        .calculate_agreement(&e_c)
        .map_err(|source| Agreement {
            which: "ephemeral",
            source,
        })?;
    let salt = &wrapped_bundle[..32];
    let iv: [u8; 12] = wrapped_bundle[32..44].try_into().expect("12 bytes");
    let mut key = [0u8; 32];
    wacore::crypto::hkdf_sha256_into(
        &eph_shared,
        Some(salt),
        b"link_code_pairing_key_bundle_encryption_key",
        &mut key,
    )
    .map_err(|_| Derivation("bundle key"))?;
    let mut bundle = Vec::with_capacity(96);
    wacore::libsignal::crypto::aes_256_gcm_decrypt(
        &key,
        &iv,
        b"",
        &wrapped_bundle[44..],
        &mut bundle,
    )
    .map_err(|_| Undecryptable)?;
    if bundle.len() != 96 {
        return Err(BundleLength);
    }
    if &bundle[..32] != companion_identity_pub {
        return Err(ForeignIdentity("companion"));
    }
    if bundle[32..64] != pub32(account) {
        return Err(ForeignIdentity("primary"));
    }
    let companion =
        PublicKey::from_djb_public_key_bytes(companion_identity_pub).map_err(|source| BadKey {
            which: "companion identity",
            source,
        })?;
    let id_shared = account
        .private_key
        .calculate_agreement(&companion)
        .map_err(|source| Agreement {
            which: "identity",
            source,
        })?;
    let ikm = [&eph_shared[..], &id_shared[..], &bundle[64..96]].concat();
    let mut adv = [0u8; 32];
    wacore::crypto::hkdf_sha256_into(&ikm, None, b"adv_secret", &mut adv)
        .map_err(|_| Derivation("adv secret"))?;
    Ok(adv)
}

/// The companion's uploaded prekey bundle (`<iq xmlns=encrypt type=set>`).
#[derive(Clone, Debug)]
pub(crate) struct UploadedBundle {
    pub registration_id: u32,
    pub identity: [u8; 32],
    pub signed_pre_key_id: u32,
    pub signed_pre_key: [u8; 32],
    pub signed_pre_key_sig: Vec<u8>,
    pub pre_keys: Vec<(u32, [u8; 32])>,
}

impl UploadedBundle {
    /// Spends the oldest one-time prekey (a new Signal session takes one);
    /// None when the device has none left.
    pub fn take_pre_key(&mut self) -> Option<(u32, [u8; 32])> {
        (!self.pre_keys.is_empty()).then(|| self.pre_keys.remove(0))
    }
}

/// Encrypts `plaintext` (an encoded `wa::Message`) from the phone (device 0 of
/// `phone`, identity = the account key) to a companion as a pkmsg. Returns the
/// serialized `PreKeySignalMessage`.
pub(crate) async fn encrypt_from_phone(
    account: &KeyPair,
    phone: &str,
    companion_device: u16,
    bundle: &UploadedBundle,
    pre_key: Option<(u32, [u8; 32])>,
    plaintext: &[u8],
) -> Result<Vec<u8>, EncryptError> {
    use whatsapp_rust::store::signal_adapter::SignalProtocolStoreAdapter;
    use whatsapp_rust::store::signal_cache::SignalStoreCache;

    let mut device =
        whatsapp_rust::store::Device::new(Arc::new(wacore::store::InMemoryBackend::new()));
    device.core.identity_key = account.clone();
    let device = Arc::new(async_lock::RwLock::new(device));
    let mut st = SignalProtocolStoreAdapter::new(device, Arc::new(SignalStoreCache::new()));
    let (_, ct) = encrypt_in(
        &mut st,
        phone,
        companion_device,
        bundle,
        || pre_key,
        plaintext,
    )
    .await?;
    Ok(ct)
}

/// `encrypt_from_phone` in a given store, which keeps the session: the
/// companion's answers on it decrypt there, and the next message to the same
/// device goes out on it (`contacts::Contact` passes its own). A one-time
/// prekey is taken only when a new session starts, as a phone does: a
/// `pkmsg` per message would make the companion archive a Signal state and
/// spend a prekey for every one. Returns the `<enc>` type and the ciphertext.
pub(crate) async fn encrypt_in(
    st: &mut whatsapp_rust::store::signal_adapter::SignalProtocolStoreAdapter,
    phone: &str,
    companion_device: u16,
    bundle: &UploadedBundle,
    take_pre_key: impl FnOnce() -> Option<(u32, [u8; 32])>,
    plaintext: &[u8],
) -> Result<(&'static str, Vec<u8>), EncryptError> {
    use wacore::libsignal::protocol::{CiphertextMessageType, SessionStore as _};

    let pk = |b: &[u8; 32]| PublicKey::from_djb_public_key_bytes(b).map_err(EncryptError::Key);
    let identity = IdentityKey::new(pk(&bundle.identity)?);
    let addr = Jid::pn_device(phone.to_string(), companion_device).to_protocol_address();
    // A session with this very device (a re-linked device has a new
    // identity, and the old session would be one it cannot read).
    let current = st
        .session_store
        .load_session(&addr)
        .await
        .ok()
        .flatten()
        .and_then(|r| r.session_state()?.remote_identity_key().ok().flatten())
        .is_some_and(|k| k == identity);
    if !current {
        let pre_key = match take_pre_key() {
            Some((id, key)) => Some((PreKeyId::from(id), pk(&key)?)),
            None => None,
        };
        let prekey_bundle = PreKeyBundle::new(
            bundle.registration_id,
            DeviceId::new(companion_device as u32),
            pre_key,
            SignedPreKeyId::from(bundle.signed_pre_key_id),
            pk(&bundle.signed_pre_key)?,
            bundle.signed_pre_key_sig.clone(),
            identity,
        )
        .map_err(EncryptError::Bundle)?;
        process_prekey_bundle(
            &addr,
            &mut st.session_store,
            &mut st.identity_store,
            &prekey_bundle,
            &mut rng(),
            UsePQRatchet::No,
        )
        .await
        .map_err(EncryptError::Session)?;
    }
    let padded = wacore::messages::MessageUtils::pad_message_v2(plaintext.to_vec());
    let ct = message_encrypt(
        &padded,
        &addr,
        &mut st.session_store,
        &mut st.identity_store,
    )
    .await
    .map_err(EncryptError::Encrypt)?;
    // `pkmsg` until the companion has answered on the session, then `msg`.
    let kind = match ct.message_type() {
        CiphertextMessageType::PreKey => "pkmsg",
        _ => "msg",
    };
    Ok((kind, ct.serialize().to_vec()))
}

/// The phone's `APP_STATE_SYNC_KEY_SHARE` message for a freshly linked
/// companion: one random app-state key.
pub(crate) fn app_state_key_share(raw_id: u32, key_index: u32) -> Vec<u8> {
    use wa::message::{
        AppStateSyncKey, AppStateSyncKeyData, AppStateSyncKeyFingerprint, AppStateSyncKeyId,
        AppStateSyncKeyShare, ProtocolMessage,
    };
    let key_id = random_bytes::<6>().to_vec();
    let key = AppStateSyncKey {
        key_id: waproto::buffa::MessageField::some(AppStateSyncKeyId {
            key_id: Some(key_id),
        }),
        key_data: waproto::buffa::MessageField::some(AppStateSyncKeyData {
            key_data: Some(random_bytes::<32>().to_vec()),
            fingerprint: waproto::buffa::MessageField::some(AppStateSyncKeyFingerprint {
                raw_id: Some(raw_id),
                current_index: Some(key_index),
                device_indexes: vec![0, key_index],
            }),
            timestamp: Some(now_secs() * 1000),
        }),
    };
    wa::Message {
        protocol_message: waproto::buffa::MessageField::some(ProtocolMessage {
            r#type: Some(wa::message::protocol_message::Type::APP_STATE_SYNC_KEY_SHARE),
            app_state_sync_key_share: waproto::buffa::MessageField::some(AppStateSyncKeyShare {
                keys: vec![key],
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
    .encode_to_vec()
}

pub(crate) fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
