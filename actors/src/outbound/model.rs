//! The records of messages and the one parser of chat ids.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};

use crate::model::SessionId;

/// Longest text a send accepts (characters).
pub const MAX_TEXT_CHARS: usize = 4096;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Out,
    In,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Out => "out",
            Direction::In => "in",
        }
    }
}

impl FromStr for Direction {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "out" | "outbound" => Ok(Direction::Out),
            "in" | "inbound" => Ok(Direction::In),
            other => Err(format!("unknown direction '{other}' (in or out)")),
        }
    }
}

/// A message's status. Outbound: `pending → sent → delivered → read`, or
/// `failed`; inbound messages are `received`. Only forward moves are taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum MessageStatus {
    Pending,
    Sent,
    Delivered,
    Read,
    Failed,
    Received,
}

impl MessageStatus {
    pub const ALL: [MessageStatus; 6] = [
        MessageStatus::Pending,
        MessageStatus::Sent,
        MessageStatus::Delivered,
        MessageStatus::Read,
        MessageStatus::Failed,
        MessageStatus::Received,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            MessageStatus::Pending => "pending",
            MessageStatus::Sent => "sent",
            MessageStatus::Delivered => "delivered",
            MessageStatus::Read => "read",
            MessageStatus::Failed => "failed",
            MessageStatus::Received => "received",
        }
    }

    /// May a message in `self` move to `next`? A receipt never moves a
    /// message back (a late "delivered" after "read"), and a failed or
    /// inbound message never changes.
    pub fn may_become(self, next: MessageStatus) -> bool {
        use MessageStatus as S;
        matches!(
            (self, next),
            (S::Pending, S::Sent | S::Delivered | S::Read | S::Failed)
                | (S::Sent, S::Delivered | S::Read)
                | (S::Delivered, S::Read)
        )
    }
}

impl fmt::Display for MessageStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for MessageStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        MessageStatus::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| format!("unknown message status '{s}'"))
    }
}

/// Most contacts one text may mention (a group's size limit).
pub const MAX_MENTIONS: usize = 1024;

/// What a text refers to (WhatsApp's `ContextInfo`): the contacts it
/// mentions and the message it quotes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MessageContext {
    /// Mentioned contacts, as JIDs.
    pub mentions: Vec<String>,
    pub quoted: Option<QuotedMessage>,
}

impl MessageContext {
    pub fn is_empty(&self) -> bool {
        self.mentions.is_empty() && self.quoted.is_none()
    }

    /// The mentions as OpenWA shows them (`mentionedIds`).
    pub fn mentioned_ids(&self) -> Vec<String> {
        self.mentions.iter().map(|j| openwa_id(j)).collect()
    }

    /// The quoted message's id (`quotedMessageId`).
    pub fn quoted_id(&self) -> Option<String> {
        self.quoted.as_ref().map(|q| q.id.clone())
    }
}

/// The message a text replies to, as much of it as the reply carries: the
/// recipient's app shows the quote from this, not from its own history.
#[derive(Clone, PartialEq)]
pub struct QuotedMessage {
    pub id: String,
    /// Its chat (a JID); a reply may go to another chat ("reply privately").
    pub chat_id: String,
    /// Its author (a JID); None when the account wrote it.
    pub author: Option<String>,
    /// Its text (sealed at rest like a body, never logged).
    pub body: String,
}

/// Debug hides the quoted text (`crate::redact`).
impl std::fmt::Debug for QuotedMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuotedMessage")
            .field("id", &self.id)
            .field("chat_id", &self.chat_id)
            .field("author", &self.author)
            .field("body", &crate::redact::Redacted)
            .finish()
    }
}

impl QuotedMessage {
    /// The quote a reply to `m` carries.
    pub fn of(m: &MessageRecord) -> QuotedMessage {
        QuotedMessage {
            id: m.id.clone(),
            chat_id: m.chat_id.clone(),
            author: if m.from_me {
                None
            } else {
                m.sender.clone().or(Some(m.chat_id.clone()))
            },
            body: m.body.clone(),
        }
    }
}

/// One stored message (either direction).
#[derive(Clone, PartialEq)]
pub struct MessageRecord {
    pub session_id: SessionId,
    /// The WhatsApp message id (wasup's choice for outbound messages).
    pub id: String,
    pub direction: Direction,
    /// The chat as a JID (`…@s.whatsapp.net`, `…@g.us`, `…@lid`).
    pub chat_id: String,
    /// Who wrote it, as a JID, when not us (inbound).
    pub sender: Option<String>,
    /// OpenWA's `type`: "chat" for text.
    pub kind: String,
    pub body: String,
    pub status: MessageStatus,
    pub error: Option<String>,
    pub from_me: bool,
    pub push_name: Option<String>,
    pub idempotency_key: Option<String>,
    /// Mentions and the quoted message, if any.
    pub context: MessageContext,
    /// WhatsApp's timestamp (inbound) or the acceptance time (outbound).
    pub timestamp: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Debug hides the body (`crate::redact`).
impl std::fmt::Debug for MessageRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MessageRecord")
            .field("session_id", &self.session_id)
            .field("id", &self.id)
            .field("direction", &self.direction)
            .field("chat_id", &self.chat_id)
            .field("sender", &self.sender)
            .field("kind", &self.kind)
            .field("body", &crate::redact::Redacted)
            .field("status", &self.status)
            .field("error", &self.error)
            .field("from_me", &self.from_me)
            .field("push_name", &self.push_name)
            .field("idempotency_key", &self.idempotency_key)
            .field("context", &self.context)
            .field("timestamp", &self.timestamp)
            .field("created_at", &self.created_at)
            .field("updated_at", &self.updated_at)
            .finish_non_exhaustive()
    }
}

impl MessageRecord {
    pub fn is_group(&self) -> bool {
        self.chat_id.ends_with("@g.us")
    }
}

/// `GET /messages` filters; newest first.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MessageQuery {
    pub chat_id: Option<String>,
    pub direction: Option<Direction>,
    pub limit: usize,
    /// Only messages older than this one (a message id), for paging.
    pub before: Option<String>,
}

/// What `accept` did.
#[derive(Clone, Debug, PartialEq)]
pub enum Accepted {
    New(MessageRecord),
    /// The idempotency key was used before: the first message, unchanged.
    Replayed(MessageRecord),
}

/// What `cancel` did.
#[derive(Clone, Debug, PartialEq)]
pub enum Cancelled {
    Deleted,
    NotFound,
    /// Too late: it left the queue already.
    NotPending(MessageStatus),
}

/// A status change to record, with its event.
#[derive(Clone, Debug, PartialEq)]
pub struct StatusUpdate {
    pub status: MessageStatus,
    pub error: Option<String>,
    pub at: DateTime<Utc>,
}

/// A chat id in the form WhatsApp (and the engine) wants: `user@server`.
/// Accepted: `<digits>@c.us` (OpenWA's form, mapped to `@s.whatsapp.net`),
/// `<digits>@s.whatsapp.net`, `<id>@g.us`, `<digits>@lid`, bare digits
/// (a leading `+`, spaces and dashes are dropped).
pub fn parse_chat_id(raw: &str) -> Result<String, String> {
    let raw = raw.trim();
    let bad = || {
        format!(
            "chatId '{raw}' is not a chat: use <digits>@c.us, <digits>@s.whatsapp.net, \
             <id>@g.us, <digits>@lid or the phone number's digits"
        )
    };
    let digits_ok = |d: &str| (5..=20).contains(&d.len()) && d.bytes().all(|b| b.is_ascii_digit());
    match raw.split_once('@') {
        None => {
            let d: String = raw
                .trim_start_matches('+')
                .chars()
                .filter(|c| !matches!(c, ' ' | '-'))
                .collect();
            digits_ok(&d)
                .then(|| format!("{d}@s.whatsapp.net"))
                .ok_or_else(bad)
        }
        Some((user, server)) => match server {
            "c.us" | "s.whatsapp.net" if digits_ok(user) => Ok(format!("{user}@s.whatsapp.net")),
            "lid" if digits_ok(user) => Ok(format!("{user}@lid")),
            // Groups: "<creator>-<time>" (legacy) or digits.
            "g.us"
                if (5..=40).contains(&user.len())
                    && user.bytes().all(|b| b.is_ascii_digit() || b == b'-') =>
            {
                Ok(format!("{user}@g.us"))
            }
            _ => Err(bad()),
        },
    }
}

/// A JID as OpenWA shows it: phone numbers as `<digits>@c.us`, the rest as is
/// (a device suffix `:N` dropped).
pub fn openwa_id(jid: &str) -> String {
    let Some((user, server)) = jid.split_once('@') else {
        return jid.to_string();
    };
    let user = user.split(':').next().unwrap_or(user);
    match server {
        "s.whatsapp.net" | "c.us" => format!("{user}@c.us"),
        _ => format!("{user}@{server}"),
    }
}

/// A phone number (digits, `+`, spaces, dashes) as bare digits.
pub fn phone_digits(raw: &str) -> Result<String, String> {
    let d: String = raw
        .trim()
        .trim_start_matches('+')
        .trim_end_matches("@c.us")
        .trim_end_matches("@s.whatsapp.net")
        .chars()
        .filter(|c| !matches!(c, ' ' | '-'))
        .collect();
    if (5..=20).contains(&d.len()) && d.bytes().all(|b| b.is_ascii_digit()) {
        Ok(d)
    } else {
        Err(format!(
            "'{raw}' is not a phone number (digits with country code)"
        ))
    }
}

/// A fresh WhatsApp message id: "3EB0" and 16 upper-case hex digits, like WA
/// Web's, chosen by wasup at acceptance so a resend keeps it.
pub fn new_message_id() -> String {
    let hex = uuid::Uuid::now_v7().simple().to_string().to_uppercase();
    // Time (12 digits) then 8 random ones: ordered and unique enough per session.
    format!("3EB0{}{}", &hex[..12], &hex[hex.len() - 8..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_ids() {
        assert_eq!(
            parse_chat_id("628123456789@c.us").unwrap(),
            "628123456789@s.whatsapp.net"
        );
        assert_eq!(
            parse_chat_id("628123456789@s.whatsapp.net").unwrap(),
            "628123456789@s.whatsapp.net"
        );
        assert_eq!(
            parse_chat_id("+62 812-345-6789").unwrap(),
            "628123456789@s.whatsapp.net"
        );
        assert_eq!(
            parse_chat_id("120363025246125486@g.us").unwrap(),
            "120363025246125486@g.us"
        );
        assert_eq!(
            parse_chat_id("100000001234@lid").unwrap(),
            "100000001234@lid"
        );
        for bad in [
            "",
            "abc",
            "12@c.us",
            "x@c.us",
            "1234567@example.com",
            "@g.us",
        ] {
            assert!(parse_chat_id(bad).is_err(), "{bad}");
        }
        assert_eq!(
            openwa_id("628123456789:3@s.whatsapp.net"),
            "628123456789@c.us"
        );
        assert_eq!(openwa_id("1203@g.us"), "1203@g.us");
    }

    #[test]
    fn statuses_only_move_forward() {
        use MessageStatus as S;
        assert!(S::Pending.may_become(S::Sent));
        assert!(S::Sent.may_become(S::Read));
        assert!(!S::Read.may_become(S::Delivered));
        assert!(!S::Failed.may_become(S::Sent));
        assert!(!S::Sent.may_become(S::Failed));
    }
}
