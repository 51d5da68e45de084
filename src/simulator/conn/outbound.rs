//! What a linked client sends to a virtual phone: decrypted with the phone's
//! Signal identity, put in its inbox once per id, and answered with a
//! delivery receipt.

use super::*;
use crate::simulator::contacts::text_of;
use crate::simulator::inbox::{now_ms, PhoneMessage};

/// `<receipt from="PHONE@s.whatsapp.net" id t [type]/>`; no type is a
/// delivery receipt, `read` a read receipt.
pub(crate) fn receipt(phone: &str, id: &str, typ: Option<&str>) -> Node {
    let mut b = NodeBuilder::new("receipt")
        .attr("from", format!("{phone}@s.whatsapp.net"))
        .attr("id", id.to_string())
        .attr("t", now_secs().to_string());
    if let Some(t) = typ {
        b = b.attr("type", t.to_string());
    }
    b.build()
}

impl Conn {
    /// Handles a `<message to="PHONE@s.whatsapp.net">` from this device.
    /// Returns whether the server refuses it (the number is not on
    /// WhatsApp) and the delivery receipt to send after the server ack.
    pub(super) async fn take_outbound(&mut self, node: &Node) -> (bool, Option<Node>) {
        let (Some(key), Some(id), Some(to)) =
            (self.login.clone(), attr(node, "id"), attr(node, "to"))
        else {
            return (false, None);
        };
        let Some(phone) = to.strip_suffix("@s.whatsapp.net") else {
            return (false, None);
        };
        if phone.contains(':') || phone == key.0 {
            return (false, None);
        }
        if self.inner.inbox.lock().unregistered.contains(phone) {
            return (true, None);
        }
        // The phone's own copy: a direct <enc>, or <participants><to jid>.
        let mine = |j: &str| j == to || j == format!("{phone}:0@s.whatsapp.net");
        let enc = node.get_optional_child("enc").cloned().or_else(|| {
            node.get_optional_child("participants").and_then(|p| {
                p.get_children_by_tag("to")
                    .find(|t| attr(t, "jid").is_some_and(|j| mine(&j)))
                    .and_then(|t| t.get_optional_child("enc").cloned())
            })
        });
        let Some(enc) = enc else { return (false, None) };
        let (Some(typ), Some(ct)) = (attr(&enc, "type"), content_bytes(&enc)) else {
            return (false, None);
        };
        let Some(contact) = self.phone_contact(phone) else {
            return (false, None);
        };
        let Some(msg) = contact.decrypt(&key.0, key.1, &typ, &ct).await else {
            return (false, None);
        };
        let Some(text) = text_of(&msg) else {
            return (false, None);
        };
        let context = msg
            .extended_text_message
            .as_option()
            .and_then(|e| e.context_info.as_option());
        let quoted = context.filter(|c| c.stanza_id.is_some());
        self.inner.inbox.lock().receive(PhoneMessage {
            id: id.clone(),
            from: key.0.clone(),
            from_device: key.1,
            to: phone.to_string(),
            text,
            mentions: context.map(|c| c.mentioned_jid.clone()).unwrap_or_default(),
            quoted_id: quoted.and_then(|c| c.stanza_id.clone()),
            quoted_author: quoted.and_then(|c| c.participant.clone()),
            quoted_text: quoted
                .and_then(|c| c.quoted_message.as_option())
                .and_then(text_of),
            received_at_ms: now_ms(),
            read: false,
        });
        // Delivered (again, for a resend), like a phone that is online.
        (false, Some(receipt(phone, &id, None)))
    }
}
