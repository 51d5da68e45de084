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
