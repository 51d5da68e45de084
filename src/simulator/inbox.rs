//! What virtual phones received from linked clients, decrypted, and which
//! numbers are not on WhatsApp.

use std::collections::{HashMap, HashSet};

/// A message a virtual phone received from a linked client.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PhoneMessage {
    /// The WhatsApp message id the client chose.
    pub id: String,
    /// Sender phone.
    pub from: String,
    pub from_device: u16,
    /// The receiving phone.
    pub to: String,
    pub text: String,
    /// Whom the text mentions, as JIDs.
    pub mentions: Vec<String>,
    /// The message it quotes: its id, author JID and text.
    pub quoted_id: Option<String>,
    pub quoted_author: Option<String>,
    pub quoted_text: Option<String>,
    /// Simulator clock, ms since the Unix epoch.
    pub received_at_ms: u64,
    pub read: bool,
}

/// A call a virtual phone placed to an account, and how it was answered.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PhoneCall {
    pub call_id: String,
    /// The calling phone.
    pub from: String,
    /// The called account's number.
    pub to: String,
    /// The device that declined it, once one did.
    pub rejected_by_device: Option<u16>,
}

#[derive(Default)]
pub(crate) struct Inboxes {
    /// Calls by call id.
    pub calls: HashMap<String, PhoneCall>,
    pub messages: HashMap<String, Vec<PhoneMessage>>,
    /// Deliveries of an id the phone already had (a resend after a crash).
    pub duplicates: HashMap<String, u64>,
    pub unregistered: HashSet<String>,
}

impl Inboxes {
    /// Stores `m` once per id; a repeat only counts as a duplicate.
    /// Returns whether it was new.
    pub fn receive(&mut self, m: PhoneMessage) -> bool {
        let list = self.messages.entry(m.to.clone()).or_default();
        if list.iter().any(|x| x.id == m.id) {
            *self.duplicates.entry(m.to).or_default() += 1;
            return false;
        }
        list.push(m);
        true
    }
}

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_id_is_kept_once_and_counted() {
        let mut ib = Inboxes::default();
        let m = PhoneMessage {
            id: "A".into(),
            from: "1".into(),
            from_device: 1,
            to: "2".into(),
            text: "hi".into(),
            mentions: vec![],
            quoted_id: None,
            quoted_author: None,
            quoted_text: None,
            received_at_ms: 0,
            read: false,
        };
        assert!(ib.receive(m.clone()));
        assert!(!ib.receive(m));
        assert_eq!(ib.messages["2"].len(), 1);
        assert_eq!(ib.duplicates["2"], 1);
    }
}
