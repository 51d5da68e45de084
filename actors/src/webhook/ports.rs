//! The two ports webhooks need: `WebhookStore` (records, the outbox and the
//! attempt log) and `WebhookSender` (signed HTTP POSTs and the address
//! policy), with the request/result types they exchange and the
//! `WorkSignal` that wakes the delivery loop after a commit.

use std::net::IpAddr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;

use super::records::*;
use crate::events::SessionEvent;
use crate::model::SessionId;
use crate::ports::StoreError;

/// What a `WebhookStore` call returns.
pub type StoreFuture<T> = BoxFuture<'static, Result<T, StoreError>>;

/// Webhook records, the outbox and the attempt log. The adapter seals the
/// secret and the custom headers with the master key.
pub trait WebhookStore: Send + Sync + 'static {
    fn insert_webhook(&self, record: WebhookRecord, secret: String) -> StoreFuture<()>;
    /// The webhooks of one session, or of every session (`None`), oldest first.
    fn load_webhooks(&self, session: Option<SessionId>) -> StoreFuture<Vec<WebhookRecord>>;
    fn load_webhook(&self, id: WebhookId) -> StoreFuture<WebhookRecord>;
    /// Set the fields the patch gives, and nothing else, in one statement
    /// (two patches of different fields both stick); returns the record as
    /// it now is. `NotFound` when gone.
    fn update_webhook(&self, id: WebhookId, patch: WebhookPatch) -> StoreFuture<WebhookRecord>;
    /// Delete a webhook with its deliveries and attempts. `NotFound` when gone.
    fn delete_webhook(&self, id: WebhookId) -> StoreFuture<()>;
    fn webhook_secret(&self, id: WebhookId) -> StoreFuture<String>;
    /// The head (lowest pending `seq`) of each active webhook's queue when it
    /// is due, skipping the webhooks in `busy`; at most `limit` jobs.
    fn due_deliveries(
        &self,
        now: DateTime<Utc>,
        busy: Vec<WebhookId>,
        limit: usize,
    ) -> StoreFuture<Vec<DeliveryJob>>;
    /// Log finished attempts and move their rows on, all in one
    /// transaction: the actor hands over whatever finished meanwhile, so a
    /// busy outbox commits many deliveries at once. Rows deleted (or
    /// redriven) while their attempt ran are skipped.
    fn record_attempts(&self, done: Vec<AttemptDone>) -> StoreFuture<()>;
    /// One finished attempt.
    fn record_attempt(
        &self,
        delivery_id: String,
        webhook_id: WebhookId,
        attempt: AttemptRecord,
        next: AfterAttempt,
    ) -> StoreFuture<()> {
        self.record_attempts(vec![AttemptDone {
            delivery_id,
            webhook_id,
            attempt,
            next,
        }])
    }
    /// The most recent attempts of a webhook, newest first.
    fn list_attempts(
        &self,
        webhook: WebhookId,
        filter: Option<AttemptFilter>,
        limit: usize,
    ) -> StoreFuture<Vec<AttemptRecord>>;
    /// Queue an event again (attempts start over). `NotFound` when the
    /// webhook has no such event, `Conflict` when it is still pending.
    fn redrive(&self, webhook: WebhookId, event_id: String, now: DateTime<Utc>) -> StoreFuture<()>;
    /// Delete delivered rows and attempt logs older than `before` (dead
    /// letters and their attempts stay). Returns the rows deleted.
    fn prune(&self, before: DateTime<Utc>) -> StoreFuture<u64>;
    /// Delete dead letters (with their attempts) last touched before
    /// `before`; events no longer referenced go with the next `prune`.
    /// Returns the dead letters deleted.
    fn prune_dead_letters(&self, before: DateTime<Utc>) -> StoreFuture<u64> {
        let _ = before;
        Box::pin(async { Ok(0) })
    }
    /// Pending rows and dead letters, counted now (for `GET /metrics`).
    fn outbox_depth(&self) -> StoreFuture<OutboxCounts>;
}

/// What to POST.
#[derive(Clone, Debug)]
#[allow(clippy::large_enum_variant)] // events are the common case (message events made them larger)
pub enum WebhookPayload {
    Event(SessionEvent),
    /// `POST …/test`: a signed `webhook.test` envelope.
    Test {
        session_id: SessionId,
        session_name: String,
    },
}

#[derive(Clone)]
pub struct WebhookRequest {
    pub url: String,
    pub secret: String,
    pub headers: Vec<(String, String)>,
    pub attempt: u32,
    pub payload: WebhookPayload,
}

// Debug shows no header value, secret or URL credential (`crate::redact`).
impl std::fmt::Debug for WebhookRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookRequest")
            .field("url", &crate::redact::MaskedUrl(&self.url))
            .field("secret", &crate::redact::Redacted)
            .field("headers", &crate::redact::MaskedHeaders(&self.headers))
            .field("attempt", &self.attempt)
            .field("payload", &self.payload)
            .finish()
    }
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct SendResult {
    pub status_code: Option<u16>,
    /// Why it failed (network error, timeout, refused address, non-2xx).
    pub error: Option<String>,
    pub latency_ms: u64,
    /// The receiver's `Retry-After`, when it sent one.
    pub retry_after: Option<Duration>,
}

impl SendResult {
    pub fn delivered(&self) -> bool {
        self.status_code.is_some_and(|c| (200..300).contains(&c))
    }
}

/// Why the address policy refuses a webhook URL. The text is shown to the
/// caller (`ErrorCode::WebhookUrlNotAllowed`) and kept in the deliveries log.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UrlRefused {
    #[error("The webhook URL is not valid")]
    Invalid,
    #[error("The webhook URL has no host")]
    NoHost,
    #[error("The webhook URL's host '{host}' does not resolve: {reason}")]
    Unresolvable { host: String, reason: String },
    #[error(
        "The webhook URL's host '{host}' is or resolves to a {kind} address; such addresses are refused unless WASUP_WEBHOOK_ALLOW_PRIVATE=true"
    )]
    /// The message names the kind of address, never the address a name
    /// resolved to: that would map the internal network for the caller.
    Address {
        host: String,
        /// Kept for logs and tests; never shown to the caller, so a refusal
        /// does not map the internal network for whoever asks.
        ip: IpAddr,
        /// What kind of address it is ("loopback", "private", …).
        kind: &'static str,
    },
}

/// Signed HTTP delivery and the address policy (SSRF).
pub trait WebhookSender: Send + Sync + 'static {
    /// Err(why) when the URL may not be used (it resolves to a refused address).
    fn check_url(&self, url: String) -> BoxFuture<'static, Result<(), UrlRefused>>;
    /// Render, sign and POST; never fails, the result says what happened.
    fn send(&self, request: WebhookRequest) -> BoxFuture<'static, SendResult>;
}

/// Wakes the WebhookActor after outbox rows were committed.
#[derive(Default)]
pub struct WorkSignal(tokio::sync::Notify);

impl WorkSignal {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn notify(&self) {
        self.0.notify_one();
    }
    pub async fn notified(&self) {
        self.0.notified().await
    }
}
