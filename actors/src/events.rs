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
];
