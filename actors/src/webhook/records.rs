//! The webhook records: a webhook as stored, its delivery attempts, the
//! `?status=` filter of the deliveries log, and the outbox jobs the delivery
//! loop hands around.

use std::fmt;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::events::SessionEvent;
use crate::model::SessionId;
use crate::redact::{masked_url, MaskedHeaders, MaskedUrl, Redacted};

pub type WebhookId = Uuid;

/// A webhook as stored (the secret is kept apart: it is only ever read to sign).
#[derive(Clone, PartialEq)]
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

/// The fields a `PATCH` sets; `None` leaves a field as it is.
#[derive(Clone, PartialEq)]
pub struct WebhookPatch {
    pub url: Option<String>,
    pub events: Option<Vec<String>>,
    pub headers: Option<Vec<(String, String)>>,
    pub active: Option<bool>,
    pub max_attempts: Option<u32>,
    pub updated_at: DateTime<Utc>,
}

impl WebhookPatch {
    /// The patch applied to a record in memory (what the store does in SQL).
    pub fn apply_to(&self, record: &mut WebhookRecord) {
        if let Some(url) = &self.url {
            record.url = url.clone();
        }
        if let Some(events) = &self.events {
            record.events = events.clone();
        }
        if let Some(headers) = &self.headers {
            record.headers = headers.clone();
        }
        if let Some(active) = self.active {
            record.active = active;
        }
        if let Some(n) = self.max_attempts {
            record.max_attempts = n;
        }
        record.updated_at = self.updated_at;
    }
}

/// `["*"]` matches everything, `"message.*"` every message event, else the exact name.
pub fn wants(events: &[String], name: &str) -> bool {
    events.iter().any(|e| {
        e == "*"
            || e == name
            || e.strip_suffix('*')
                .is_some_and(|prefix| prefix.ends_with('.') && name.starts_with(prefix))
    })
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
#[derive(Clone)]
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

// Debug shows no header value, secret or URL credential (`crate::redact`).
impl fmt::Debug for WebhookRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookRecord")
            .field("id", &self.id)
            .field("session_id", &self.session_id)
            .field("url", &MaskedUrl(&self.url))
            .field("events", &self.events)
            .field("headers", &MaskedHeaders(&self.headers))
            .field("active", &self.active)
            .field("max_attempts", &self.max_attempts)
            .field("created_at", &self.created_at)
            .field("updated_at", &self.updated_at)
            .finish()
    }
}

impl fmt::Debug for WebhookPatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookPatch")
            .field("url", &masked_url(&self.url))
            .field("events", &self.events)
            .field("headers", &self.headers.as_deref().map(MaskedHeaders))
            .field("active", &self.active)
            .field("max_attempts", &self.max_attempts)
            .field("updated_at", &self.updated_at)
            .finish()
    }
}

impl fmt::Debug for DeliveryJob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeliveryJob")
            .field("delivery_id", &self.delivery_id)
            .field("webhook_id", &self.webhook_id)
            .field("url", &MaskedUrl(&self.url))
            .field("secret", &Redacted)
            .field("headers", &MaskedHeaders(&self.headers))
            .field("max_attempts", &self.max_attempts)
            .field("attempt", &self.attempt)
            .field("event", &self.event)
            .finish()
    }
}

/// A finished attempt, waiting to be logged with its row's new state.
#[derive(Clone, Debug)]
pub struct AttemptDone {
    pub delivery_id: String,
    pub webhook_id: WebhookId,
    pub attempt: AttemptRecord,
    pub next: AfterAttempt,
}

/// The outbox at a glance, for `GET /metrics`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OutboxCounts {
    /// Rows waiting to be delivered.
    pub pending: u64,
    /// Rows that ran out of attempts and wait for a redrive.
    pub dead: u64,
}

/// What becomes of a row after an attempt.
#[derive(Clone, Debug, PartialEq)]
pub enum AfterAttempt {
    Delivered,
    RetryAt(DateTime<Utc>),
    Dead,
}
