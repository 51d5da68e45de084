//! Session events, generated from proto/wasup/v1/events.proto.

include!(concat!(env!("OUT_DIR"), "/wasup.v1.rs"));

impl SessionEvent {
    /// The webhook event name of this event ("session.status", …).
    pub fn name(&self) -> &'static str {
        match &self.data {
            Some(session_event::Data::Status(_)) => "session.status",
            Some(session_event::Data::Qr(_)) => "session.qr",
            Some(session_event::Data::Authenticated(_)) => "session.authenticated",
            Some(session_event::Data::Disconnected(_)) => "session.disconnected",
            Some(session_event::Data::MessageReceived(_)) => "message.received",
            Some(session_event::Data::MessageSent(_)) => "message.sent",
            Some(session_event::Data::MessageAck(_)) => "message.ack",
            Some(session_event::Data::MessageFailed(_)) => "message.failed",
            None => "session.unknown",
        }
    }
}

/// Debug hides the QR text: it links a phone to the session.
impl std::fmt::Debug for QrRotated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QrRotated")
            .field("qr", &crate::redact::Redacted)
            .field("expires_at_ms", &self.expires_at_ms)
            .field("expired", &self.expired)
            .finish()
    }
}

/// Debug hides the body (the sealed copy shows only its length).
impl std::fmt::Debug for MessageData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MessageData")
            .field("id", &self.id)
            .field("from", &self.from)
            .field("to", &self.to)
            .field("chat_id", &self.chat_id)
            .field(
                "sealed_body",
                &format_args!("<{} bytes>", self.sealed_body.len()),
            )
            .field("type", &self.r#type)
            .field("timestamp", &self.timestamp)
            .field("from_me", &self.from_me)
            .field("is_group", &self.is_group)
            .field("author", &self.author)
            .field("push_name", &self.push_name)
            .field("body", &crate::redact::Redacted)
            .finish()
    }
}

impl QrRotated {
    /// This QR's text as the event log keeps it after its life: dropped,
    /// with `expired` set; `expires_at_ms` stays.
    pub fn expire(&mut self) {
        self.qr.clear();
        self.expired = true;
    }
}

/// Every event name a webhook may subscribe to (besides "*").
pub const EVENT_NAMES: &[&str] = &[
    "session.status",
    "session.qr",
    "session.authenticated",
    "session.disconnected",
    "message.received",
    "message.sent",
    "message.ack",
    "message.failed",
];

/// Prefix subscriptions a webhook may name besides the exact names (`message.*`).
pub const EVENT_PREFIXES: &[&str] = &["message.*"];
