//! Messages the phone sends the device: queued inbound messages and the
//! app-state key share after linking.

use wacore_binary::builder::NodeBuilder;
use waproto::buffa::Message as _;
use waproto::whatsapp as wa;

use super::*;
use crate::simulator::QueuedMsg;

impl Conn {
    /// After the first post-link prekey upload, the phone shares an app-state
    /// key, so the client need not wait out its 10 s grace.
    pub(super) async fn maybe_share_app_state_key(&mut self) {
        let Some(key) = self.login.clone() else {
            return;
        };
        if !self.inner.key_share_due.lock().remove(&key) {
            return;
        }
        let Some(bundle) = self.inner.bundles.lock().get(&key).cloned() else {
            return;
        };
        let acct = {
            let st = self.inner.state.lock();
            st.accounts.get(&key.0).and_then(|a| {
                let d = a.rec.devices.get(&key.1)?;
                Some((a.identity.clone(), a.rec.raw_id, d.key_index))
            })
        };
        let Some((account, raw_id, key_index)) = acct else {
            return;
        };
        let pre_key = self.inner.take_pre_key(&key);
        let plain = phone::app_state_key_share(raw_id, key_index);
        match phone::encrypt_from_phone(&account, &key.0, key.1, &bundle, pre_key, &plain).await {
            Ok(ct) => {
                let id = format!("SIM{:016X}", u64::from_le_bytes(random_bytes::<8>()));
                let t = now_secs().to_string();
                let peer = ("category", "peer".into());
                self.send(&text_message(&key.0, id, t, peer, ("pkmsg", ct)));
            }
            Err(e) => log::warn!("simulator: app-state key share failed: {e}"),
        }
    }

    /// Sends the messages queued for this device while it was away, marked
    /// `offline="1"` as WhatsApp marks its offline delivery; returns how
    /// many were sent (the count of the `<ib><offline count/>` that ends it).
    pub(super) async fn deliver_queued(&mut self) -> usize {
        let queued = self
            .login
            .as_ref()
            .and_then(|k| self.inner.offline.lock().remove(k))
            .unwrap_or_default();
        let mut sent = 0;
        for m in queued {
            if self.deliver_marked(m, true).await {
                sent += 1;
            }
        }
        sent
    }

    /// Encrypts and sends an inbound message live; without the device's
    /// prekey bundle it stays queued for the next login.
    pub(super) async fn deliver(&mut self, m: QueuedMsg) {
        self.deliver_marked(m, false).await;
    }

    /// `deliver`, as an offline delivery or not; true when it was sent.
    async fn deliver_marked(&mut self, m: QueuedMsg, offline: bool) -> bool {
        let Some(key) = self.login.clone() else {
            return false;
        };
        let bundle = self.inner.bundles.lock().get(&key).cloned();
        let Some(bundle) = bundle else {
            self.inner.offline.lock().entry(key).or_default().push(m);
            return false;
        };
        // The sending phone's own store (created on demand like any phone).
        let Some(sender) = self.phone_contact(&m.from) else {
            return false;
        };
        let text = phone_text(&m);
        // The phone's copy of what its owner wrote goes to the linked devices
        // wrapped, with the chat it went to.
        let plain = match &m.recipient {
            None => text,
            Some(to) => wa::Message {
                device_sent_message: waproto::buffa::MessageField::some(
                    wa::message::DeviceSentMessage {
                        destination_jid: Some(format!("{to}@s.whatsapp.net")),
                        message: waproto::buffa::MessageField::some(text),
                        ..Default::default()
                    },
                ),
                ..Default::default()
            },
        }
        .encode_to_vec();
        // A new session spends one of the device's one-time prekeys.
        match sender
            .encrypt(
                &key.0,
                key.1,
                &bundle,
                || self.inner.take_pre_key(&key),
                &plain,
            )
            .await
        {
            Ok((kind, ct)) => {
                let t = m.t.to_string();
                let mut node = text_message(&m.from, m.id, t, ("notify", m.notify), (kind, ct));
                if let Some(to) = &m.recipient {
                    node.attrs
                        .insert("recipient", format!("{to}@s.whatsapp.net"));
                }
                if offline {
                    node.attrs.insert("offline", "1");
                }
                self.send(&node);
                true
            }
            Err(e) => {
                log::warn!("simulator: cannot encrypt to {key:?}: {e}");
                false
            }
        }
    }
}

/// What a phone's app puts in a text: a conversation, or an extended text
/// quoting the message it replies to.
fn phone_text(m: &QueuedMsg) -> wa::Message {
    let Some((id, author, text)) = &m.quoted else {
        return wa::Message {
            conversation: Some(m.text.clone()),
            ..Default::default()
        };
    };
    wa::Message {
        extended_text_message: waproto::buffa::MessageField::some(
            wa::message::ExtendedTextMessage {
                text: Some(m.text.clone()),
                context_info: waproto::buffa::MessageField::some(wa::ContextInfo {
                    stanza_id: Some(id.clone()),
                    participant: Some(format!("{author}@s.whatsapp.net")),
                    quoted_message: waproto::buffa::MessageField::some(wa::Message {
                        conversation: Some(text.clone()),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            },
        ),
        ..Default::default()
    }
}

/// A text message from a virtual phone as the server relays it: one `<enc>`
/// (`pkmsg` or `msg`), with the one attribute its kind adds (`notify` or
/// `category`).
fn text_message(
    from_phone: &str,
    id: String,
    t: String,
    extra: (&'static str, String),
    (enc_type, ct): (&'static str, Vec<u8>),
) -> Node {
    NodeBuilder::new("message")
        .attr("from", format!("{from_phone}@s.whatsapp.net"))
        .attr("type", "text")
        .attr("id", id)
        .attr("t", t)
        .attr(extra.0, extra.1)
        .children([NodeBuilder::new("enc")
            .attr("v", "2")
            .attr("type", enc_type)
            .bytes(ct)
            .build()])
        .build()
}
