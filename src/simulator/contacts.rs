//! A virtual phone's own Signal identity (device 0): the bundle served to a
//! client's prekey fetch and the store that decrypts what the client sends.
//! One store per phone, because the Signal sessions live in its cache.

use std::sync::Arc;

use wacore::libsignal::protocol::{
    message_decrypt_prekey, message_decrypt_signal, KeyPair, PreKeySignalMessage, SignalMessage,
    UsePQRatchet,
};
use wacore::types::jid::JidExt;
use waproto::buffa::Message as _;
use waproto::whatsapp as wa;
use whatsapp_rust::store::signal_adapter::SignalProtocolStoreAdapter;
use whatsapp_rust::store::signal_cache::SignalStoreCache;
use whatsapp_rust::Jid;

use super::phone::{self, pub32, UploadedBundle};

/// The phone's Signal side: its served bundle and its decrypting store.
#[derive(Clone)]
pub(crate) struct Contact {
    pub bundle: UploadedBundle,
    store: Arc<tokio::sync::Mutex<SignalProtocolStoreAdapter>>,
}

impl Contact {
    /// A store whose identity is the account key (so the sessions match
    /// what the phone itself encrypts with) and whose signed prekey is
    /// re-signed with that key; no one-time prekeys are served.
    pub fn new(account: &KeyPair) -> Option<Self> {
        let mut device =
            whatsapp_rust::store::Device::new(Arc::new(wacore::store::InMemoryBackend::new()));
        device.core.identity_key = account.clone();
        let spk = device.core.signed_pre_key.clone();
        let sig = account
            .private_key
            .calculate_signature(&spk.public_key.serialize(), &mut phone::rng())
            .ok()?;
        let bundle = UploadedBundle {
            registration_id: device.core.registration_id,
            identity: pub32(account),
            signed_pre_key_id: device.core.signed_pre_key_id,
            signed_pre_key: pub32(&spk),
            signed_pre_key_sig: sig.to_vec(),
            pre_keys: vec![],
        };
        let device = Arc::new(async_lock::RwLock::new(device));
        let store = SignalProtocolStoreAdapter::new(device, Arc::new(SignalStoreCache::new()));
        Some(Contact {
            bundle,
            store: Arc::new(tokio::sync::Mutex::new(store)),
        })
    }

    /// Encrypts a message of this phone to a companion device: `pkmsg` on a
    /// new session (taking a one-time prekey then), `msg` on one the
    /// companion has answered. The session is kept here, where the
    /// companion's replies on it are decrypted.
    pub async fn encrypt(
        &self,
        phone: &str,
        companion_device: u16,
        bundle: &UploadedBundle,
        take_pre_key: impl FnOnce() -> Option<(u32, [u8; 32])>,
        plaintext: &[u8],
    ) -> Result<(&'static str, Vec<u8>), phone::EncryptError> {
        let mut guard = self.store.lock().await;
        phone::encrypt_in(
            &mut guard,
            phone,
            companion_device,
            bundle,
            take_pre_key,
            plaintext,
        )
        .await
    }

    /// Decrypts one `<enc>` from `sender_phone:sender_device` (`pkmsg` or
    /// `msg`) and decodes the padded `wa::Message`.
    pub async fn decrypt(
        &self,
        sender_phone: &str,
        sender_device: u16,
        enc_type: &str,
        ct: &[u8],
    ) -> Option<wa::Message> {
        let addr = Jid::pn_device(sender_phone.to_string(), sender_device).to_protocol_address();
        let mut guard = self.store.lock().await;
        let st = &mut *guard;
        let res = match enc_type {
            "pkmsg" => {
                let m = PreKeySignalMessage::try_from(ct).ok()?;
                message_decrypt_prekey(
                    &m,
                    &addr,
                    &mut st.session_store,
                    &mut st.identity_store,
                    &mut st.pre_key_store,
                    &st.signed_pre_key_store,
                    &mut phone::rng(),
                    UsePQRatchet::No,
                )
                .await
            }
            "msg" => {
                let m = SignalMessage::try_from(ct).ok()?;
                message_decrypt_signal(
                    &m,
                    &addr,
                    &mut st.session_store,
                    &mut st.identity_store,
                    &mut phone::rng(),
                )
                .await
            }
            _ => return None,
        };
        let plain = match res {
            Ok(r) => r.plaintext,
            Err(e) => {
                log::warn!(
                    "simulator: phone cannot decrypt from {sender_phone}:{sender_device}: {e}"
                );
                return None;
            }
        };
        let unpadded = wacore::messages::MessageUtils::unpad_message_ref(&plain, 2).ok()?;
        wa::Message::decode_from_slice(unpadded).ok()
    }
}

/// The text of a message as a phone shows it (plain or extended text).
pub(crate) fn text_of(m: &wa::Message) -> Option<String> {
    m.conversation.clone().or_else(|| {
        m.extended_text_message
            .as_option()
            .and_then(|e| e.text.clone())
    })
}
