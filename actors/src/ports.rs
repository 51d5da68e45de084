//! The ports the actors need from the outside world. The `wasup` crate
//! implements them over diesel (`Store`) and whatsapp-rust (`Engine`); tests
//! implement them with fakes.

use std::sync::Arc;
use std::time::Duration;

use actix::{Message, Recipient};
use chrono::{DateTime, Utc};
use futures::future::BoxFuture;

use crate::events::SessionEvent;
use crate::model::{ApiKeyId, ApiKeyRecord, ProxyType, SessionId, SessionRecord};

// ---------------------------------------------------------------- Store

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A unique constraint refused the write (e.g. a session name taken).
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("not found")]
    NotFound,
    /// The database could not be reached or failed; the message is for logs only.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// Cluster mode: another node owns the session now (a newer lease
    /// generation); nothing was written. The writer must stop its engine.
    #[error("fenced: {0}")]
    Fenced(String),
}

/// Durable records. Every call runs off the caller's thread (the adapter
/// uses the blocking pool) and returns an owned future the actors can await.
pub trait Store: Send + Sync + 'static {
    /// Every session, for the registry at boot.
    fn load_sessions(&self) -> BoxFuture<'static, Result<Vec<SessionRecord>, StoreError>>;
    /// Insert a new session; `Conflict` when the name is taken.
    fn insert_session(&self, record: SessionRecord) -> BoxFuture<'static, Result<(), StoreError>>;
    /// Write a session's new state and the events it caused in one
    /// transaction (events carry consecutive `seq` values, the last one equal
    /// to `record.event_seq`). `NotFound` when the session was deleted.
    fn save_session(
        &self,
        record: SessionRecord,
        events: Vec<SessionEvent>,
    ) -> BoxFuture<'static, Result<(), StoreError>>;
    /// Delete a session with everything that hangs off it (device
    /// credentials, webhooks, pending deliveries).
    fn delete_session(&self, id: SessionId) -> BoxFuture<'static, Result<(), StoreError>>;

    fn load_api_keys(&self) -> BoxFuture<'static, Result<Vec<ApiKeyRecord>, StoreError>>;
    fn insert_api_key(&self, key: ApiKeyRecord) -> BoxFuture<'static, Result<(), StoreError>>;
    fn revoke_api_key(
        &self,
        id: ApiKeyId,
        at: DateTime<Utc>,
    ) -> BoxFuture<'static, Result<(), StoreError>>;
    /// Is the database answering? (readiness)
    fn ping(&self) -> BoxFuture<'static, Result<(), StoreError>>;
}

// ---------------------------------------------------------------- Engine

#[derive(Clone, PartialEq)]
pub struct ProxySpec {
    pub url: String,
    pub kind: ProxyType,
}

/// Debug masks the proxy URL's credentials (`crate::redact`).
impl std::fmt::Debug for ProxySpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxySpec")
            .field("url", &crate::redact::MaskedUrl(&self.url))
            .field("kind", &self.kind)
            .finish()
    }
}

/// What the engine needs to start one session.
#[derive(Clone, Debug)]
pub struct EngineSpec {
    pub session_id: SessionId,
    pub proxy: Option<ProxySpec>,
    /// Known once linked; the engine gives it to the client at login.
    pub push_name: Option<String>,
}

/// What an engine reports about its connection. A started engine ends with
/// exactly one terminal event (every variant from `Disconnected` down) and
/// sends nothing after it.
#[derive(Clone, PartialEq)]
pub enum EngineEvent {
    /// Not linked: a QR to show. Rotates; each one replaces the last.
    Qr { code: String, timeout: Duration },
    /// The phone accepted the link; the login is finishing.
    PairSuccess {
        phone: String,
        push_name: Option<String>,
    },
    /// Logged in and connected.
    Connected {
        phone: String,
        push_name: Option<String>,
    },

    // --- terminal: the engine is gone after these ---
    /// The connection dropped; a restart may heal it.
    Disconnected { reason: String },
    /// The connection never came up before the engine's deadline; a restart may heal it.
    ConnectFailed { reason: String },
    /// Every QR timed out unscanned. Needs a person.
    QrExhausted,
    /// The phone removed this device (or WhatsApp logged it out). Needs a person.
    LoggedOut { reason: String },
    /// Another connection took over this device. Needs a person.
    Replaced,
    /// Temporarily banned. Needs a person.
    TemporaryBan { code: i32, expires_in: Duration },
    /// WhatsApp refuses this client version. Needs a person.
    Outdated,
    /// The engine itself died (run loop ended unexpectedly, panic).
    Crashed { cause: String },
}

/// Debug hides the QR text (it links a phone to the session).
impl std::fmt::Debug for EngineEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use crate::redact::Redacted;
        match self {
            EngineEvent::Qr { timeout, .. } => f
                .debug_struct("Qr")
                .field("code", &Redacted)
                .field("timeout", timeout)
                .finish(),
            EngineEvent::PairSuccess { phone, push_name } => f
                .debug_struct("PairSuccess")
                .field("phone", phone)
                .field("push_name", push_name)
                .finish(),
            EngineEvent::Connected { phone, push_name } => f
                .debug_struct("Connected")
                .field("phone", phone)
                .field("push_name", push_name)
                .finish(),
            EngineEvent::Disconnected { reason } => f
                .debug_struct("Disconnected")
                .field("reason", reason)
                .finish(),
            EngineEvent::ConnectFailed { reason } => f
                .debug_struct("ConnectFailed")
                .field("reason", reason)
                .finish(),
            EngineEvent::QrExhausted => f.write_str("QrExhausted"),
            EngineEvent::LoggedOut { reason } => {
                f.debug_struct("LoggedOut").field("reason", reason).finish()
            }
            EngineEvent::Replaced => f.write_str("Replaced"),
            EngineEvent::TemporaryBan { code, expires_in } => f
                .debug_struct("TemporaryBan")
                .field("code", code)
                .field("expires_in", expires_in)
                .finish(),
            EngineEvent::Outdated => f.write_str("Outdated"),
            EngineEvent::Crashed { cause } => {
                f.debug_struct("Crashed").field("cause", cause).finish()
            }
        }
    }
}

impl EngineEvent {
    pub fn is_terminal(&self) -> bool {
        !matches!(
            self,
            EngineEvent::Qr { .. }
                | EngineEvent::PairSuccess { .. }
                | EngineEvent::Connected { .. }
        )
    }
}

/// An engine event addressed to the session that owns the engine. The
/// `generation` tells apart events of an engine that was already replaced.
#[derive(Clone, Debug, Message)]
#[rtype(result = "()")]
pub struct EngineEventMsg {
    pub session_id: SessionId,
    pub generation: u64,
    pub event: EngineEvent,
}

/// Where an engine sends its events: ordered, never blocking.
#[derive(Clone)]
pub struct EngineEventSink {
    pub session_id: SessionId,
    pub generation: u64,
    pub recipient: Recipient<EngineEventMsg>,
}

impl EngineEventSink {
    pub fn emit(&self, event: EngineEvent) {
        self.recipient.do_send(EngineEventMsg {
            session_id: self.session_id,
            generation: self.generation,
            event,
        });
    }
}

#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum EngineError {
    /// The operation needs a state the engine is not in (e.g. no socket yet).
    #[error("{0}")]
    NotReady(String),
    #[error("{0}")]
    Failed(String),
}

/// The WhatsApp engine: starts one client per session and owns the device
/// credentials (keys, Signal sessions, app state) of every session.
pub trait Engine: Send + Sync + 'static {
    /// Build a fresh client and start connecting. Events go to `sink`.
    fn start(
        &self,
        spec: EngineSpec,
        sink: EngineEventSink,
    ) -> BoxFuture<'static, Result<Box<dyn EngineHandle>, EngineError>>;
    /// Wipe a session's device credentials (logout, delete). The next start needs a new link.
    fn forget(&self, session_id: SessionId) -> BoxFuture<'static, Result<(), EngineError>>;
    /// The messaging of a session's client while it is logged in; `None`
    /// otherwise (no engine, not connected yet, gone).
    fn messenger(&self, _session_id: SessionId) -> Option<Arc<dyn Messenger>> {
        None
    }
    /// Where inbound messages and receipts of every session go (set once at wiring).
    fn attach_inbound(&self, _sink: Recipient<InboundMsg>) {}
}

// ---------------------------------------------------------------- Messaging

/// What a logged-in client does for the outbound queue and the contact check.
pub trait Messenger: Send + Sync {
    /// Send an outbound message's text (with its mentions and quote) to its
    /// chat under its id (chosen by wasup, so a resend is the same message).
    /// Ok once WhatsApp took it. `NotReady`: try again later; `Failed`: this
    /// message cannot go.
    fn send_text(
        &self,
        message: &crate::outbound::MessageRecord,
    ) -> BoxFuture<'static, Result<(), EngineError>>;
    /// Show (`true`) or clear "composing…" in `chat`.
    fn composing(&self, chat: String, on: bool) -> BoxFuture<'static, Result<(), EngineError>>;
    /// Decline an incoming call (`InboundEvent::Call`).
    fn reject_call(&self, call: IncomingCall) -> BoxFuture<'static, Result<(), EngineError>>;
    /// Is `phone` (digits) on WhatsApp? Its JID when it is.
    fn is_on_whatsapp(
        &self,
        phone: String,
    ) -> BoxFuture<'static, Result<Option<String>, EngineError>>;
}

/// A call offer as the engine saw it: enough to decline it.
#[derive(Clone, Debug, PartialEq)]
pub struct IncomingCall {
    pub call_id: String,
    /// Who rings (a JID), the target of a reject.
    pub from: String,
    /// Who started the call (a JID).
    pub creator: String,
}

/// An inbound message or a receipt, from a session's client.
#[derive(Clone, Debug, PartialEq)]
#[allow(clippy::large_enum_variant)] // a message is the common case
pub enum InboundEvent {
    /// A message in a chat: another person's, or the account's own sent
    /// from its phone (`from_me`).
    Message(crate::outbound::MessageRecord),
    /// Someone is calling the account (an offer, not a replay from the
    /// offline queue: that call is over).
    Call(IncomingCall),
    /// The recipient's phone got (or read) our messages.
    Receipt {
        ids: Vec<String>,
        status: crate::outbound::MessageStatus,
        at: DateTime<Utc>,
    },
}

#[derive(Clone, Debug, Message)]
#[rtype(result = "()")]
pub struct InboundMsg {
    pub session_id: SessionId,
    pub event: InboundEvent,
}

/// One running client.
pub trait EngineHandle: Send + Sync {
    /// Close cleanly and wait for the run loop to end. Sends no further events.
    fn stop(&self) -> BoxFuture<'static, ()>;
    /// Abort at once without waiting for a clean close. Sends no further events.
    fn abort(&self);
    /// Ask for a pairing code for `phone` (digits only). Returns the 8-character code.
    fn pair_with_code(&self, phone: String) -> BoxFuture<'static, Result<String, EngineError>>;
    /// Unlink the device at WhatsApp (when connected) and close. Sends no further events.
    fn logout(&self) -> BoxFuture<'static, Result<(), EngineError>>;
}
