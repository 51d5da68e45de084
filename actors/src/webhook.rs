//! Webhooks: the records, the two ports they need (`WebhookStore` for the
//! outbox and the attempt log, `WebhookSender` for signed HTTP POSTs and the
//! address checks), the API's webhook messages, and the WebhookActor that
//! delivers from the outbox.
//!
//! Delivery reads from the database only. The outbox rows are written by
//! `Store::save_session` in the same transaction as the state change that
//! caused the event; the actor is woken by a [`WorkSignal`] after such a
//! commit and also polls, so rows left pending by a crash are picked up at
//! start. Each webhook delivers one event at a time, lowest `seq` first (a
//! receiver sees a session's events in order); different webhooks deliver in
//! parallel up to `max_concurrency`, so a slow receiver only delays itself.
//! Finished attempts are committed together (one transaction for whatever
//! finished while the previous commit ran), and a webhook stays busy until
//! its attempt is committed, so a row is never in flight twice.
//! A row is marked delivered only after a 2xx; other outcomes retry with
//! exponential backoff and full jitter (1 s … 10 min, `Retry-After`
//! honoured) until `max_attempts`, then the row is dead-lettered.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use rand::{Rng, RngCore};
use uuid::Uuid;

use crate::error::WebError;
use crate::events::{SessionEvent, EVENT_NAMES};
use crate::model::{Caller, Role, SessionId, SessionView};
use crate::ports::StoreError;
use crate::registry::SessionRegistry;

pub type WebhookId = Uuid;

pub const DEFAULT_MAX_ATTEMPTS: u32 = 10;
pub const MAX_ATTEMPTS_LIMIT: u32 = 20;
pub const MAX_URL_LEN: usize = 2048;
/// Bound on the custom headers of one webhook (names + values, bytes).
pub const MAX_HEADERS_BYTES: usize = 8 * 1024;
pub const SECRET_PREFIX: &str = "whsec_";

// ====================================================================== records

/// A webhook as stored (the secret is kept apart: it is only ever read to sign).
#[derive(Clone, Debug, PartialEq)]
pub struct WebhookRecord {
    pub id: WebhookId,
    pub session_id: SessionId,
    pub url: String,
    /// `["*"]` or event names.
    pub events: Vec<String>,
    /// Custom headers sent with every delivery (values are never shown again).
    pub headers: Vec<(String, String)>,
    pub active: bool,
    pub max_attempts: u32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl WebhookRecord {
    /// Does this webhook want events named `name`?
    pub fn wants(&self, name: &str) -> bool {
        wants(&self.events, name)
    }
}

/// `["*"]` matches everything, else the exact name.
pub fn wants(events: &[String], name: &str) -> bool {
    events.iter().any(|e| e == "*" || e == name)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// 2xx: the row is delivered.
    Delivered,
    /// Failed; another attempt follows.
    Failed,
    /// Failed, and it was the last attempt: the row is dead-lettered.
    Dead,
}

impl AttemptOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptOutcome::Delivered => "delivered",
            AttemptOutcome::Failed => "failed",
            AttemptOutcome::Dead => "dead",
        }
    }
}

impl std::str::FromStr for AttemptOutcome {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "delivered" => Ok(AttemptOutcome::Delivered),
            "failed" => Ok(AttemptOutcome::Failed),
            "dead" => Ok(AttemptOutcome::Dead),
            other => Err(format!("unknown attempt outcome '{other}'")),
        }
    }
}

/// One delivery attempt, as the attempt log keeps it.
#[derive(Clone, Debug, PartialEq)]
pub struct AttemptRecord {
    pub event_id: String,
    pub event_name: String,
    /// 1-based, counted since the event was queued (or redriven).
    pub attempt: u32,
    pub outcome: AttemptOutcome,
    pub status_code: Option<u16>,
    pub error: Option<String>,
    pub latency_ms: u64,
    pub at: DateTime<Utc>,
}

/// `?status=` of the deliveries listing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttemptFilter {
    Delivered,
    /// Every unsuccessful attempt (failed and dead).
    Failed,
    /// Attempts that dead-lettered their event.
    Dead,
}

impl std::str::FromStr for AttemptFilter {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "delivered" => Ok(AttemptFilter::Delivered),
            "failed" => Ok(AttemptFilter::Failed),
            "dead" => Ok(AttemptFilter::Dead),
            other => Err(format!(
                "Query parameter 'status' must be 'delivered', 'failed' or 'dead', not '{other}'"
            )),
        }
    }
}

/// A due outbox row with everything needed to send it.
#[derive(Clone, Debug)]
pub struct DeliveryJob {
    pub delivery_id: String,
    pub webhook_id: WebhookId,
    pub url: String,
    pub secret: String,
    pub headers: Vec<(String, String)>,
    pub max_attempts: u32,
    /// The number of this attempt (1-based).
    pub attempt: u32,
    pub event: SessionEvent,
}

/// A finished attempt, waiting to be logged with its row's new state.
#[derive(Clone, Debug)]
pub struct AttemptDone {
    pub delivery_id: String,
    pub webhook_id: WebhookId,
    pub attempt: AttemptRecord,
    pub next: AfterAttempt,
}

/// What becomes of a row after an attempt.
#[derive(Clone, Debug, PartialEq)]
pub enum AfterAttempt {
    Delivered,
    RetryAt(DateTime<Utc>),
    Dead,
}

// ====================================================================== ports

/// Webhook records, the outbox and the attempt log. The adapter seals the
/// secret and the custom headers with the master key.
pub trait WebhookStore: Send + Sync + 'static {
    fn insert_webhook(
        &self,
        record: WebhookRecord,
        secret: String,
    ) -> BoxFuture<'static, Result<(), StoreError>>;
    /// The webhooks of one session, or of every session (`None`), oldest first.
    fn load_webhooks(
        &self,
        session: Option<SessionId>,
    ) -> BoxFuture<'static, Result<Vec<WebhookRecord>, StoreError>>;
    fn load_webhook(&self, id: WebhookId) -> BoxFuture<'static, Result<WebhookRecord, StoreError>>;
    /// Rewrite everything but id, session and created_at. `NotFound` when gone.
    fn update_webhook(&self, record: WebhookRecord) -> BoxFuture<'static, Result<(), StoreError>>;
    /// Delete a webhook with its deliveries and attempts. `NotFound` when gone.
    fn delete_webhook(&self, id: WebhookId) -> BoxFuture<'static, Result<(), StoreError>>;
    fn webhook_secret(&self, id: WebhookId) -> BoxFuture<'static, Result<String, StoreError>>;
    /// The head (lowest pending `seq`) of each active webhook's queue when it
    /// is due, skipping the webhooks in `busy`; at most `limit` jobs.
    fn due_deliveries(
        &self,
        now: DateTime<Utc>,
        busy: Vec<WebhookId>,
        limit: usize,
    ) -> BoxFuture<'static, Result<Vec<DeliveryJob>, StoreError>>;
    /// Log finished attempts and move their rows on, all in one
    /// transaction: the actor hands over whatever finished meanwhile, so a
    /// busy outbox commits many deliveries at once. Rows deleted (or
    /// redriven) while their attempt ran are skipped.
    fn record_attempts(&self, done: Vec<AttemptDone>)
        -> BoxFuture<'static, Result<(), StoreError>>;
    /// One finished attempt.
    fn record_attempt(
        &self,
        delivery_id: String,
        webhook_id: WebhookId,
        attempt: AttemptRecord,
        next: AfterAttempt,
    ) -> BoxFuture<'static, Result<(), StoreError>> {
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
    ) -> BoxFuture<'static, Result<Vec<AttemptRecord>, StoreError>>;
    /// Queue an event again (attempts start over). `NotFound` when the
    /// webhook has no such event, `Conflict` when it is still pending.
    fn redrive(
        &self,
        webhook: WebhookId,
        event_id: String,
        now: DateTime<Utc>,
    ) -> BoxFuture<'static, Result<(), StoreError>>;
    /// Delete delivered rows and attempt logs older than `before` (dead
    /// letters and their attempts stay). Returns the rows deleted.
    fn prune(&self, before: DateTime<Utc>) -> BoxFuture<'static, Result<u64, StoreError>>;
}

/// What to POST.
#[derive(Clone, Debug)]
pub enum WebhookPayload {
    Event(SessionEvent),
    /// `POST …/test`: a signed `webhook.test` envelope.
    Test {
        session_id: SessionId,
        session_name: String,
    },
}

#[derive(Clone, Debug)]
pub struct WebhookRequest {
    pub url: String,
    pub secret: String,
    pub headers: Vec<(String, String)>,
    pub attempt: u32,
    pub payload: WebhookPayload,
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

/// Signed HTTP delivery and the address policy (SSRF).
pub trait WebhookSender: Send + Sync + 'static {
    /// Err(why) when the URL may not be used (it resolves to a refused address).
    fn check_url(&self, url: String) -> BoxFuture<'static, Result<(), String>>;
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

// ====================================================================== validation

/// `whsec_` + base64 of 32 random bytes.
pub fn generate_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!(
        "{SECRET_PREFIX}{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )
}

/// A given secret: `whsec_` + base64 of 24–64 bytes (Standard Webhooks).
pub fn validate_secret(secret: &str) -> Result<(), WebError> {
    let bad = || {
        WebError::Validation(
            "secret must be 'whsec_' followed by base64 of 24–64 bytes (omit it to have one generated)"
                .to_string(),
        )
    };
    let body = secret.strip_prefix(SECRET_PREFIX).ok_or_else(bad)?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(body)
        .map_err(|_| bad())?;
    if !(24..=64).contains(&bytes.len()) {
        return Err(bad());
    }
    Ok(())
}

/// http(s) with a host, at most 2048 characters.
pub fn validate_url(raw: &str) -> Result<(), WebError> {
    let bad = || {
        WebError::Validation(
            "url must be an http:// or https:// URL with a host, e.g. https://example.com/hooks/wasup"
                .to_string(),
        )
    };
    if raw.len() > MAX_URL_LEN {
        return Err(WebError::Validation(format!(
            "url must be at most {MAX_URL_LEN} characters"
        )));
    }
    let url = url::Url::parse(raw).map_err(|_| bad())?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
        return Err(bad());
    }
    Ok(())
}

/// Known names or `*`, at least one; duplicates removed, order kept.
pub fn validate_events(events: &[String]) -> Result<Vec<String>, WebError> {
    if events.is_empty() {
        return Err(WebError::Validation(
            "events must name at least one event, or [\"*\"] for all".to_string(),
        ));
    }
    let mut out: Vec<String> = Vec::new();
    for e in events {
        if e != "*" && !EVENT_NAMES.contains(&e.as_str()) {
            return Err(WebError::Validation(format!(
                "events: unknown event '{e}'; use \"*\" or any of {}",
                EVENT_NAMES.join(", ")
            )));
        }
        if !out.contains(e) {
            out.push(e.clone());
        }
    }
    Ok(out)
}

pub fn validate_max_attempts(n: u32) -> Result<(), WebError> {
    if (1..=MAX_ATTEMPTS_LIMIT).contains(&n) {
        Ok(())
    } else {
        Err(WebError::Validation(format!(
            "maxAttempts must be 1–{MAX_ATTEMPTS_LIMIT}"
        )))
    }
}

fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)
}

/// Header names the gateway sets itself; custom headers may not touch them.
pub fn is_reserved_header(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    n.starts_with("webhook-")
        || n.starts_with("x-wasup-")
        || matches!(
            n.as_str(),
            "content-type" | "content-length" | "host" | "transfer-encoding" | "connection"
        )
}

/// Custom headers: token names, visible-ASCII values, not reserved, at most
/// 8 KiB in all, no name twice.
pub fn validate_headers(headers: &[(String, String)]) -> Result<(), WebError> {
    let mut total = 0;
    let mut seen = HashSet::new();
    for (name, value) in headers {
        if name.is_empty() || !name.chars().all(is_token_char) {
            return Err(WebError::Validation(format!(
                "headers: '{name}' is not a valid header name"
            )));
        }
        if !value.chars().all(|c| c == '\t' || (' '..='~').contains(&c)) {
            return Err(WebError::Validation(format!(
                "headers: the value of '{name}' must be printable ASCII on one line"
            )));
        }
        if is_reserved_header(name) {
            return Err(WebError::Validation(format!(
                "headers: '{name}' is set by the gateway and cannot be overridden"
            )));
        }
        if !seen.insert(name.to_ascii_lowercase()) {
            return Err(WebError::Validation(format!(
                "headers: '{name}' is given twice"
            )));
        }
        total += name.len() + value.len();
    }
    if total > MAX_HEADERS_BYTES {
        return Err(WebError::Validation(format!(
            "headers must be at most {MAX_HEADERS_BYTES} bytes in all"
        )));
    }
    Ok(())
}

/// Delay before attempt `attempt + 1` after attempt `attempt` failed:
/// full jitter over `base · 2^(attempt-1)`, capped; `Retry-After` (capped)
/// replaces it when the receiver sent one.
pub fn retry_delay(
    attempt: u32,
    retry_after: Option<Duration>,
    base: Duration,
    cap: Duration,
    rng: &mut impl Rng,
) -> Duration {
    if let Some(after) = retry_after {
        return after.min(cap);
    }
    let exp = base
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(20))
        .min(cap);
    let ms = exp.as_millis() as u64;
    Duration::from_millis(rng.random_range(0..=ms))
}

// ====================================================================== messages

/// `POST /api/sessions/:id/webhooks`; returns the record and its secret (shown once).
#[derive(Message)]
#[rtype(result = "Result<(WebhookRecord, String), WebError>")]
pub struct CreateWebhook {
    pub caller: Caller,
    pub session: String,
    pub url: String,
    pub events: Option<Vec<String>>,
    pub secret: Option<String>,
    pub headers: Option<Vec<(String, String)>>,
    pub max_attempts: Option<u32>,
}

/// `GET /api/sessions/:id/webhooks` (`session: Some`) or `GET /api/webhooks` (`None`).
#[derive(Message)]
#[rtype(result = "Result<Vec<WebhookRecord>, WebError>")]
pub struct ListWebhooks {
    pub caller: Caller,
    pub session: Option<String>,
}

/// `GET /api/sessions/:id/webhooks/:wid`
#[derive(Message)]
#[rtype(result = "Result<WebhookRecord, WebError>")]
pub struct GetWebhook {
    pub caller: Caller,
    pub session: String,
    pub webhook: String,
}

/// `PATCH /api/sessions/:id/webhooks/:wid`
#[derive(Message)]
#[rtype(result = "Result<WebhookRecord, WebError>")]
pub struct UpdateWebhook {
    pub caller: Caller,
    pub session: String,
    pub webhook: String,
    pub url: Option<String>,
    pub events: Option<Vec<String>>,
    pub headers: Option<Vec<(String, String)>>,
    pub active: Option<bool>,
    pub max_attempts: Option<u32>,
}

/// `DELETE /api/sessions/:id/webhooks/:wid`
#[derive(Message)]
#[rtype(result = "Result<(), WebError>")]
pub struct DeleteWebhook {
    pub caller: Caller,
    pub session: String,
    pub webhook: String,
}

/// `POST /api/sessions/:id/webhooks/:wid/test`
#[derive(Message)]
#[rtype(result = "Result<SendResult, WebError>")]
pub struct TestWebhook {
    pub caller: Caller,
    pub session: String,
    pub webhook: String,
}

/// `GET /api/sessions/:id/webhooks/:wid/deliveries`
#[derive(Message)]
#[rtype(result = "Result<Vec<AttemptRecord>, WebError>")]
pub struct ListDeliveries {
    pub caller: Caller,
    pub session: String,
    pub webhook: String,
    pub filter: Option<AttemptFilter>,
    pub limit: usize,
}

/// `POST /api/sessions/:id/webhooks/:wid/deliveries/:eventId/redrive`
#[derive(Message)]
#[rtype(result = "Result<(), WebError>")]
pub struct RedriveDelivery {
    pub caller: Caller,
    pub session: String,
    pub webhook: String,
    pub event_id: String,
}

/// New work may be due: poll the outbox now.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Wake;

// ====================================================================== the actor

#[derive(Clone, Debug)]
pub struct WebhookOptions {
    /// Deliveries in flight at once, over all webhooks (each webhook has at most one).
    pub max_concurrency: usize,
    /// How often the outbox is polled besides the wake-ups.
    pub poll_interval: Duration,
    /// Delivered rows and attempt logs older than this are pruned.
    pub retention: Duration,
    pub prune_interval: Duration,
    pub retry_base: Duration,
    pub retry_cap: Duration,
}

impl Default for WebhookOptions {
    fn default() -> Self {
        WebhookOptions {
            max_concurrency: 32,
            poll_interval: Duration::from_millis(500),
            retention: Duration::from_secs(7 * 24 * 3600),
            prune_interval: Duration::from_secs(3600),
            retry_base: Duration::from_secs(1),
            retry_cap: Duration::from_secs(600),
        }
    }
}

fn store_unavailable(err: StoreError) -> WebError {
    log::error!("webhook store: {err}");
    WebError::Unavailable("The database is unavailable; try again later".to_string())
}

pub struct WebhookActor {
    store: Arc<dyn WebhookStore>,
    sender: Arc<dyn WebhookSender>,
    registry: Arc<SessionRegistry>,
    signal: Option<Arc<WorkSignal>>,
    options: WebhookOptions,
    /// Webhooks with a delivery in flight (one each).
    busy: HashSet<WebhookId>,
    /// Attempts that finished and wait for the next commit.
    finished: Vec<AttemptDone>,
    flushing: bool,
    polling: bool,
    poll_again: bool,
}

impl WebhookActor {
    pub fn new(
        store: Arc<dyn WebhookStore>,
        sender: Arc<dyn WebhookSender>,
        registry: Arc<SessionRegistry>,
        signal: Option<Arc<WorkSignal>>,
        options: WebhookOptions,
    ) -> Self {
        WebhookActor {
            store,
            sender,
            registry,
            signal,
            options,
            busy: HashSet::new(),
            finished: Vec::new(),
            flushing: false,
            polling: false,
            poll_again: false,
        }
    }

    /// Find a session by id or name, then check the caller may see it.
    fn resolve(&self, caller: &Caller, id: &str) -> Result<SessionView, WebError> {
        self.registry.resolve_for(caller, id)
    }

    /// The webhook `wid` of session `session` (resolved and in scope).
    fn find(
        &self,
        caller: &Caller,
        session: &str,
        wid: &str,
    ) -> Result<
        (
            SessionView,
            BoxFuture<'static, Result<WebhookRecord, WebError>>,
        ),
        WebError,
    > {
        let view = self.resolve(caller, session)?;
        let wid_owned = wid.to_string();
        let not_found = move || WebError::WebhookNotFound(wid_owned.clone());
        let id = Uuid::parse_str(wid).map_err(|_| WebError::WebhookNotFound(wid.to_string()))?;
        let load = self.store.load_webhook(id);
        let session_id = view.record.id;
        let fut: BoxFuture<'static, Result<WebhookRecord, WebError>> = Box::pin(async move {
            match load.await {
                Ok(w) if w.session_id == session_id => Ok(w),
                Ok(_) | Err(StoreError::NotFound) => Err(not_found()),
                Err(e) => Err(store_unavailable(e)),
            }
        });
        Ok((view, fut))
    }

    fn poll(&mut self, ctx: &mut Context<Self>) {
        if self.polling {
            self.poll_again = true;
            return;
        }
        let room = self.options.max_concurrency.saturating_sub(self.busy.len());
        if room == 0 {
            return;
        }
        self.polling = true;
        let busy: Vec<WebhookId> = self.busy.iter().copied().collect();
        let due = self.store.due_deliveries(Utc::now(), busy, room);
        ctx.spawn(due.into_actor(self).map(|res, act, ctx| {
            act.polling = false;
            match res {
                Ok(jobs) => {
                    for job in jobs {
                        if act.busy.len() >= act.options.max_concurrency {
                            break;
                        }
                        if act.busy.insert(job.webhook_id) {
                            act.deliver(job, ctx);
                        }
                    }
                }
                Err(e) => log::warn!("webhooks: reading the outbox failed: {e}"),
            }
            if std::mem::take(&mut act.poll_again) {
                act.poll(ctx);
            }
        }));
    }

    fn deliver(&mut self, job: DeliveryJob, ctx: &mut Context<Self>) {
        let sender = self.sender.clone();
        let options = self.options.clone();
        let webhook_id = job.webhook_id;
        let work = async move {
            let event_id = job.event.id.clone();
            let event_name = job.event.name().to_string();
            let result = sender
                .send(WebhookRequest {
                    url: job.url,
                    secret: job.secret,
                    headers: job.headers,
                    attempt: job.attempt,
                    payload: WebhookPayload::Event(job.event),
                })
                .await;
            let now = Utc::now();
            let (outcome, next) = if result.delivered() {
                (AttemptOutcome::Delivered, AfterAttempt::Delivered)
            } else if job.attempt >= job.max_attempts {
                (AttemptOutcome::Dead, AfterAttempt::Dead)
            } else {
                let delay = retry_delay(
                    job.attempt,
                    result.retry_after,
                    options.retry_base,
                    options.retry_cap,
                    &mut rand::rng(),
                );
                let at = now + chrono::Duration::from_std(delay).unwrap_or_default();
                (AttemptOutcome::Failed, AfterAttempt::RetryAt(at))
            };
            crate::metrics::METRICS.webhook_attempt(outcome, result.latency_ms);
            match outcome {
                AttemptOutcome::Delivered => {}
                AttemptOutcome::Failed => log::info!(
                    "webhook {webhook_id}: event {event_id} attempt {} failed: {}",
                    job.attempt,
                    result.error.as_deref().unwrap_or("-")
                ),
                AttemptOutcome::Dead => log::warn!(
                    "webhook {webhook_id}: event {event_id} dead-lettered after {} attempts: {}",
                    job.attempt,
                    result.error.as_deref().unwrap_or("-")
                ),
            }
            AttemptDone {
                delivery_id: job.delivery_id,
                webhook_id,
                attempt: AttemptRecord {
                    event_id,
                    event_name,
                    attempt: job.attempt,
                    outcome,
                    status_code: result.status_code,
                    error: result.error,
                    latency_ms: result.latency_ms,
                    at: now,
                },
                next,
            }
        };
        ctx.spawn(work.into_actor(self).map(|done, act, ctx| {
            act.finished.push(done);
            act.flush(ctx);
        }));
    }

    /// Commit what finished, in one transaction. The webhooks stay busy
    /// until then, so a row is never sent again while its outcome is being
    /// written; whatever finishes meanwhile goes in the next commit.
    fn flush(&mut self, ctx: &mut Context<Self>) {
        if self.flushing || self.finished.is_empty() {
            return;
        }
        self.flushing = true;
        let done = std::mem::take(&mut self.finished);
        let hooks: Vec<WebhookId> = done.iter().map(|d| d.webhook_id).collect();
        let record = self.store.record_attempts(done);
        ctx.spawn(record.into_actor(self).map(move |res, act, ctx| {
            act.flushing = false;
            match res {
                Ok(()) | Err(StoreError::NotFound) => {
                    for hook in &hooks {
                        act.busy.remove(hook);
                    }
                    act.flush(ctx);
                    act.poll(ctx);
                }
                Err(e) => {
                    // The rows stay pending and are sent again: at least once.
                    log::error!("webhooks: recording {} attempts failed: {e}", hooks.len());
                    ctx.run_later(Duration::from_secs(5), move |act, ctx| {
                        for hook in &hooks {
                            act.busy.remove(hook);
                        }
                        act.flush(ctx);
                        act.poll(ctx);
                    });
                }
            }
        }));
    }

    fn prune(&mut self, ctx: &mut Context<Self>) {
        let retention = chrono::Duration::from_std(self.options.retention)
            .unwrap_or_else(|_| chrono::Duration::days(7));
        let prune = self.store.prune(Utc::now() - retention);
        ctx.spawn(
            async move {
                match prune.await {
                    Ok(0) => {}
                    Ok(n) => log::info!("webhooks: pruned {n} old delivery rows"),
                    Err(e) => log::warn!("webhooks: pruning failed: {e}"),
                }
            }
            .into_actor(self),
        );
    }
}

impl Actor for WebhookActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(self.options.poll_interval, |act, ctx| act.poll(ctx));
        ctx.run_interval(self.options.prune_interval, |act, ctx| act.prune(ctx));
        self.prune(ctx);
        self.poll(ctx);
        if let Some(signal) = self.signal.clone() {
            let addr = ctx.address();
            actix::spawn(async move {
                loop {
                    signal.notified().await;
                    if addr.try_send(Wake).is_err() && !addr.connected() {
                        break;
                    }
                }
            });
        }
    }
}

impl Handler<Wake> for WebhookActor {
    type Result = ();
    fn handle(&mut self, _: Wake, ctx: &mut Context<Self>) {
        self.poll(ctx);
    }
}

type Reply<T> = ResponseFuture<Result<T, WebError>>;

fn fail<T: 'static>(e: WebError) -> Reply<T> {
    Box::pin(async move { Err(e) })
}

impl Handler<CreateWebhook> for WebhookActor {
    type Result = Reply<(WebhookRecord, String)>;

    fn handle(&mut self, msg: CreateWebhook, _: &mut Context<Self>) -> Self::Result {
        let check = (|| {
            msg.caller.require(Role::Operator)?;
            let view = self.resolve(&msg.caller, &msg.session)?;
            validate_url(&msg.url)?;
            let events = validate_events(msg.events.as_deref().unwrap_or(&["*".to_string()]))?;
            let max_attempts = msg.max_attempts.unwrap_or(DEFAULT_MAX_ATTEMPTS);
            validate_max_attempts(max_attempts)?;
            let headers = msg.headers.clone().unwrap_or_default();
            validate_headers(&headers)?;
            let secret = match &msg.secret {
                Some(s) => {
                    validate_secret(s)?;
                    s.clone()
                }
                None => generate_secret(),
            };
            let now = Utc::now();
            Ok((
                WebhookRecord {
                    id: Uuid::now_v7(),
                    session_id: view.record.id,
                    url: msg.url.clone(),
                    events,
                    headers,
                    active: true,
                    max_attempts,
                    created_at: now,
                    updated_at: now,
                },
                secret,
            ))
        })();
        let (record, secret) = match check {
            Ok(v) => v,
            Err(e) => return fail(e),
        };
        let guard = self.sender.check_url(record.url.clone());
        let store = self.store.clone();
        Box::pin(async move {
            guard.await.map_err(WebError::WebhookUrlNotAllowed)?;
            store
                .insert_webhook(record.clone(), secret.clone())
                .await
                .map_err(|e| match e {
                    StoreError::NotFound => WebError::unknown_session_id(record.session_id),
                    e => store_unavailable(e),
                })?;
            Ok((record, secret))
        })
    }
}

impl Handler<ListWebhooks> for WebhookActor {
    type Result = Reply<Vec<WebhookRecord>>;

    fn handle(&mut self, msg: ListWebhooks, _: &mut Context<Self>) -> Self::Result {
        let session = match &msg.session {
            Some(s) => match self.resolve(&msg.caller, s) {
                Ok(v) => Some(v.record.id),
                Err(e) => return fail(e),
            },
            None => None,
        };
        let load = self.store.load_webhooks(session);
        let caller = msg.caller;
        Box::pin(async move {
            let all = load.await.map_err(store_unavailable)?;
            Ok(all
                .into_iter()
                .filter(|w| caller.may_see(&w.session_id))
                .collect())
        })
    }
}

impl Handler<GetWebhook> for WebhookActor {
    type Result = Reply<WebhookRecord>;

    fn handle(&mut self, msg: GetWebhook, _: &mut Context<Self>) -> Self::Result {
        match self.find(&msg.caller, &msg.session, &msg.webhook) {
            Ok((_, load)) => load,
            Err(e) => fail(e),
        }
    }
}

impl Handler<UpdateWebhook> for WebhookActor {
    type Result = Reply<WebhookRecord>;

    fn handle(&mut self, msg: UpdateWebhook, ctx: &mut Context<Self>) -> Self::Result {
        let caller = msg.caller.clone();
        let check = (|| {
            caller.require(Role::Operator)?;
            if let Some(url) = &msg.url {
                validate_url(url)?;
            }
            let events = msg.events.as_deref().map(validate_events).transpose()?;
            if let Some(n) = msg.max_attempts {
                validate_max_attempts(n)?;
            }
            if let Some(h) = &msg.headers {
                validate_headers(h)?;
            }
            let (_, load) = self.find(&caller, &msg.session, &msg.webhook)?;
            Ok((events, load))
        })();
        let (events, load) = match check {
            Ok(v) => v,
            Err(e) => return fail(e),
        };
        let guard = msg.url.clone().map(|u| self.sender.check_url(u));
        let store = self.store.clone();
        let addr = ctx.address();
        Box::pin(async move {
            let mut record = load.await?;
            if let Some(guard) = guard {
                guard.await.map_err(WebError::WebhookUrlNotAllowed)?;
            }
            if let Some(url) = msg.url {
                record.url = url;
            }
            if let Some(events) = events {
                record.events = events;
            }
            if let Some(headers) = msg.headers {
                record.headers = headers;
            }
            if let Some(active) = msg.active {
                record.active = active;
            }
            if let Some(n) = msg.max_attempts {
                record.max_attempts = n;
            }
            record.updated_at = Utc::now();
            store
                .update_webhook(record.clone())
                .await
                .map_err(|e| match e {
                    StoreError::NotFound => WebError::WebhookNotFound(record.id.to_string()),
                    e => store_unavailable(e),
                })?;
            // Re-activated: its queue may be due.
            addr.do_send(Wake);
            Ok(record)
        })
    }
}

impl Handler<DeleteWebhook> for WebhookActor {
    type Result = Reply<()>;

    fn handle(&mut self, msg: DeleteWebhook, _: &mut Context<Self>) -> Self::Result {
        let load = match msg
            .caller
            .require(Role::Operator)
            .and_then(|()| self.find(&msg.caller, &msg.session, &msg.webhook))
        {
            Ok((_, load)) => load,
            Err(e) => return fail(e),
        };
        let store = self.store.clone();
        Box::pin(async move {
            let record = load.await?;
            match store.delete_webhook(record.id).await {
                Ok(()) | Err(StoreError::NotFound) => Ok(()),
                Err(e) => Err(store_unavailable(e)),
            }
        })
    }
}

impl Handler<TestWebhook> for WebhookActor {
    type Result = Reply<SendResult>;

    fn handle(&mut self, msg: TestWebhook, _: &mut Context<Self>) -> Self::Result {
        let (view, load) = match msg
            .caller
            .require(Role::Operator)
            .and_then(|()| self.find(&msg.caller, &msg.session, &msg.webhook))
        {
            Ok(v) => v,
            Err(e) => return fail(e),
        };
        let store = self.store.clone();
        let sender = self.sender.clone();
        Box::pin(async move {
            let record = load.await?;
            let secret = store
                .webhook_secret(record.id)
                .await
                .map_err(store_unavailable)?;
            Ok(sender
                .send(WebhookRequest {
                    url: record.url,
                    secret,
                    headers: record.headers,
                    attempt: 1,
                    payload: WebhookPayload::Test {
                        session_id: view.record.id,
                        session_name: view.record.name,
                    },
                })
                .await)
        })
    }
}

impl Handler<ListDeliveries> for WebhookActor {
    type Result = Reply<Vec<AttemptRecord>>;

    fn handle(&mut self, msg: ListDeliveries, _: &mut Context<Self>) -> Self::Result {
        let load = match self.find(&msg.caller, &msg.session, &msg.webhook) {
            Ok((_, load)) => load,
            Err(e) => return fail(e),
        };
        let store = self.store.clone();
        Box::pin(async move {
            let record = load.await?;
            store
                .list_attempts(record.id, msg.filter, msg.limit)
                .await
                .map_err(store_unavailable)
        })
    }
}

impl Handler<RedriveDelivery> for WebhookActor {
    type Result = Reply<()>;

    fn handle(&mut self, msg: RedriveDelivery, ctx: &mut Context<Self>) -> Self::Result {
        let load = match msg
            .caller
            .require(Role::Operator)
            .and_then(|()| self.find(&msg.caller, &msg.session, &msg.webhook))
        {
            Ok((_, load)) => load,
            Err(e) => return fail(e),
        };
        let store = self.store.clone();
        let addr = ctx.address();
        Box::pin(async move {
            let record = load.await?;
            let event_id = msg.event_id;
            match store.redrive(record.id, event_id.clone(), Utc::now()).await {
                Ok(()) => {
                    addr.do_send(Wake);
                    Ok(())
                }
                Err(StoreError::NotFound) => Err(WebError::DeliveryNotFound(event_id)),
                Err(StoreError::Conflict(_)) => Err(WebError::DeliveryPending(event_id)),
                Err(e) => Err(store_unavailable(e)),
            }
        })
    }
}

/// Start the WebhookActor (inside an actix System).
pub fn start_webhooks(
    store: Arc<dyn WebhookStore>,
    sender: Arc<dyn WebhookSender>,
    registry: Arc<SessionRegistry>,
    signal: Option<Arc<WorkSignal>>,
    options: WebhookOptions,
) -> Addr<WebhookActor> {
    WebhookActor::new(store, sender, registry, signal, options).start()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets() {
        let s = generate_secret();
        assert!(s.starts_with("whsec_"));
        assert_eq!(validate_secret(&s), Ok(()));
        let raw = base64::engine::general_purpose::STANDARD
            .decode(&s["whsec_".len()..])
            .unwrap();
        assert_eq!(raw.len(), 32);
        for bad in ["nope", "whsec_", "whsec_!!!", "whsec_AAAA"] {
            assert!(validate_secret(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn urls_events_attempts() {
        assert_eq!(validate_url("https://example.com/x?y=1"), Ok(()));
        assert_eq!(validate_url("http://127.0.0.1:9/x"), Ok(()));
        for bad in [
            "ftp://example.com",
            "example.com",
            "http://",
            "",
            "mailto:a@b.c",
        ] {
            assert!(validate_url(bad).is_err(), "{bad}");
        }
        assert_eq!(
            validate_events(&["session.qr".into(), "session.qr".into()]),
            Ok(vec!["session.qr".to_string()])
        );
        assert!(validate_events(&["message.new".into()]).is_err());
        assert!(validate_events(&[]).is_err());
        assert!(validate_max_attempts(0).is_err());
        assert!(validate_max_attempts(21).is_err());
        assert_eq!(validate_max_attempts(20), Ok(()));
        assert!(wants(&["*".into()], "session.qr"));
        assert!(!wants(&["session.status".into()], "session.qr"));
    }

    #[test]
    fn headers() {
        let h = |n: &str, v: &str| vec![(n.to_string(), v.to_string())];
        assert_eq!(validate_headers(&h("Authorization", "Bearer x")), Ok(()));
        for bad in [
            h("bad name", "x"),
            h("X-Ok", "line\nbreak"),
            h("Webhook-Id", "x"),
            h("X-Wasup-Attempt", "9"),
            h("Content-Type", "text/plain"),
            h("host", "evil"),
            h("Content-Length", "1"),
            h("X-Big", &"a".repeat(MAX_HEADERS_BYTES)),
        ] {
            assert!(validate_headers(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn backoff_is_full_jitter_capped_and_honours_retry_after() {
        let mut rng = rand::rng();
        let base = Duration::from_secs(1);
        let cap = Duration::from_secs(600);
        for attempt in 1..=20 {
            let d = retry_delay(attempt, None, base, cap, &mut rng);
            let bound = base.saturating_mul(1 << (attempt - 1).min(20)).min(cap);
            assert!(d <= bound, "{attempt}: {d:?} > {bound:?}");
        }
        assert_eq!(
            retry_delay(3, Some(Duration::from_secs(7)), base, cap, &mut rng),
            Duration::from_secs(7)
        );
        assert_eq!(
            retry_delay(3, Some(Duration::from_secs(7200)), base, cap, &mut rng),
            cap
        );
    }
}
