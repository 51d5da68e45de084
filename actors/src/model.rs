//! The records the gateway keeps: sessions and API keys.

use std::collections::HashSet;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub type SessionId = Uuid;
pub type ApiKeyId = Uuid;

/// A session's status, lowercase on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum SessionStatus {
    Created,
    Initializing,
    QrReady,
    Authenticating,
    Ready,
    Disconnected,
    Failed,
}

impl SessionStatus {
    pub const ALL: [SessionStatus; 7] = [
        SessionStatus::Created,
        SessionStatus::Initializing,
        SessionStatus::QrReady,
        SessionStatus::Authenticating,
        SessionStatus::Ready,
        SessionStatus::Disconnected,
        SessionStatus::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SessionStatus::Created => "created",
            SessionStatus::Initializing => "initializing",
            SessionStatus::QrReady => "qr_ready",
            SessionStatus::Authenticating => "authenticating",
            SessionStatus::Ready => "ready",
            SessionStatus::Disconnected => "disconnected",
            SessionStatus::Failed => "failed",
        }
    }
}

impl fmt::Display for SessionStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SessionStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SessionStatus::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| format!("unknown session status '{s}'"))
    }
}

/// What the operator asked for; persisted so that a restart of the gateway
/// brings back exactly the sessions that were running.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DesiredState {
    Running,
    Stopped,
}

impl DesiredState {
    pub fn as_str(self) -> &'static str {
        match self {
            DesiredState::Running => "running",
            DesiredState::Stopped => "stopped",
        }
    }
}

impl FromStr for DesiredState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "running" => Ok(DesiredState::Running),
            "stopped" => Ok(DesiredState::Stopped),
            other => Err(format!("unknown desired state '{other}'")),
        }
    }
}

/// Per-session settings given at create (`config` in the API). Unknown keys
/// are refused by the API layer; `metadata` is the caller's own free JSON.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SessionConfig {
    /// The caller's own JSON, kept and returned as given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<serde_json::Value>,
    /// Restart budget; clamped to 0–20. Default 5.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_reconnect_attempts: Option<u32>,
    /// Base delay of the exponential backoff in ms; clamped to 1000–300000. Default 5000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reconnect_base_delay: Option<u64>,
    /// Reject incoming calls (OpenWA's name). Default false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_reject_calls: Option<bool>,
    /// Outbound pacing and queueing; each field unset takes its default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sending: Option<SendingConfig>,
}

/// How a session's outbound queue paces its sends (`config.sending`). Every
/// field is optional; `None` means the default below. The defaults are
/// deliberately slow: WhatsApp bans accounts that send in machine-like
/// bursts, and a queued message is never refused, only delayed.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SendingConfig {
    /// Least random delay between two sends, ms (0–600000). Default 1500.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_delay_ms: Option<u64>,
    /// Greatest random delay between two sends, ms (≥ minDelayMs). Default 4000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_delay_ms: Option<u64>,
    /// Show "composing" before a send, scaled to the text length. Default true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub typing: Option<bool>,
    /// Sends per rolling minute; excess waits. 0 = no limit. Default 20.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_minute: Option<u32>,
    /// Sends per rolling day; excess waits. 0 = no limit. Default 1000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_day: Option<u32>,
    /// How long a message may wait for a ready session before it is
    /// `failed`, seconds (1–604800). Default 86400.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_ttl_seconds: Option<u64>,
}

/// [`SendingConfig`] with every default applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pacing {
    pub min_delay_ms: u64,
    pub max_delay_ms: u64,
    pub typing: bool,
    pub per_minute: u32,
    pub per_day: u32,
    pub queue_ttl_seconds: u64,
}

impl Pacing {
    pub const DEFAULT: Pacing = Pacing {
        min_delay_ms: 1500,
        max_delay_ms: 4000,
        typing: true,
        per_minute: 20,
        per_day: 1000,
        queue_ttl_seconds: 86_400,
    };
}

impl SendingConfig {
    /// The effective pacing: defaults for unset fields, `max ≥ min`.
    pub fn pacing(&self) -> Pacing {
        let d = Pacing::DEFAULT;
        let min_delay_ms = self.min_delay_ms.unwrap_or(d.min_delay_ms);
        Pacing {
            min_delay_ms,
            max_delay_ms: self
                .max_delay_ms
                .unwrap_or(d.max_delay_ms)
                .max(min_delay_ms),
            typing: self.typing.unwrap_or(d.typing),
            per_minute: self.per_minute.unwrap_or(d.per_minute),
            per_day: self.per_day.unwrap_or(d.per_day),
            queue_ttl_seconds: self.queue_ttl_seconds.unwrap_or(d.queue_ttl_seconds),
        }
    }
}

impl SessionConfig {
    /// The session's effective pacing.
    pub fn pacing(&self) -> Pacing {
        self.sending.clone().unwrap_or_default().pacing()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum ProxyType {
    Http,
    Https,
    Socks5,
}

impl ProxyType {
    pub fn as_str(self) -> &'static str {
        match self {
            ProxyType::Http => "http",
            ProxyType::Https => "https",
            ProxyType::Socks5 => "socks5",
        }
    }
}

impl FromStr for ProxyType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "http" => Ok(ProxyType::Http),
            "https" => Ok(ProxyType::Https),
            "socks5" => Ok(ProxyType::Socks5),
            other => Err(format!("unknown proxy type '{other}'")),
        }
    }
}

/// A session as stored in the database: the source of truth.
#[derive(Clone, PartialEq)]
pub struct SessionRecord {
    pub id: SessionId,
    pub name: String,
    /// Behind an `Arc`: registry reads clone the record, never the caller's
    /// metadata (a settings change swaps in a new `Arc`).
    pub config: Arc<SessionConfig>,
    /// Full proxy URL including credentials; never returned unmasked.
    pub proxy_url: Option<String>,
    pub proxy_type: Option<ProxyType>,
    pub desired: DesiredState,
    pub status: SessionStatus,
    pub last_error: Option<String>,
    pub phone: Option<String>,
    pub push_name: Option<String>,
    pub connected_at: Option<DateTime<Utc>>,
    pub last_active: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The `seq` of the last event emitted for this session (0 = none yet).
    pub event_seq: u64,
    /// The API key that created the session (`WASUP_MAX_SESSIONS_PER_KEY`
    /// counts by it); None for sessions created before it was recorded.
    pub created_by: Option<ApiKeyId>,
}

// Debug masks the proxy URL's credentials (`crate::redact`).
impl std::fmt::Debug for SessionRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionRecord")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("config", &self.config)
            .field("proxy_url", &crate::redact::masked_url(&self.proxy_url))
            .field("proxy_type", &self.proxy_type)
            .field("desired", &self.desired)
            .field("status", &self.status)
            .field("last_error", &self.last_error)
            .field("phone", &self.phone)
            .field("push_name", &self.push_name)
            .field("connected_at", &self.connected_at)
            .field("last_active", &self.last_active)
            .field("created_at", &self.created_at)
            .field("updated_at", &self.updated_at)
            .field("event_seq", &self.event_seq)
            .field("created_by", &self.created_by)
            .finish()
    }
}

impl SessionRecord {
    pub fn new(id: SessionId, name: String, now: DateTime<Utc>) -> Self {
        SessionRecord {
            id,
            name,
            config: Arc::default(),
            proxy_url: None,
            proxy_type: None,
            desired: DesiredState::Stopped,
            status: SessionStatus::Created,
            last_error: None,
            phone: None,
            push_name: None,
            connected_at: None,
            last_active: None,
            created_at: now,
            updated_at: now,
            event_seq: 0,
            created_by: None,
        }
    }
}

/// What read routes show of a session: the record plus the live supervision
/// facts (`nextRetryAt`, `restarts`) that only the supervisor knows.
#[derive(Clone, Debug, PartialEq)]
pub struct SessionView {
    pub record: SessionRecord,
    pub next_retry_at: Option<DateTime<Utc>>,
    pub restarts: u32,
    /// True while an engine is alive for this session.
    pub engine_alive: bool,
    /// The current QR, while `status == qr_ready`.
    pub qr: Option<QrCode>,
}

#[derive(Clone, PartialEq)]
pub struct QrCode {
    /// Raw QR text, exactly what a phone must read.
    pub text: String,
    pub expires_at: DateTime<Utc>,
}

/// The QR text links a phone to the session: Debug hides it.
impl std::fmt::Debug for QrCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QrCode")
            .field("text", &crate::redact::Redacted)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// Who the session is linked to (`GET /me`).
#[derive(Clone, Debug, PartialEq)]
pub struct Me {
    pub phone: String,
    pub push_name: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct PairingCode {
    pub code: String,
    pub status: SessionStatus,
}

/// Roles are ordered: viewer < operator < admin.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Viewer,
    Operator,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "viewer" => Ok(Role::Viewer),
            "operator" => Ok(Role::Operator),
            "admin" => Ok(Role::Admin),
            other => Err(format!("unknown role '{other}'")),
        }
    }
}

/// An API key as stored: only the SHA-256 of the secret, and its prefix.
#[derive(Clone, Debug, PartialEq)]
pub struct ApiKeyRecord {
    pub id: ApiKeyId,
    pub name: String,
    /// First 12 characters of the key, the only part ever shown again.
    pub key_prefix: String,
    pub key_hash: [u8; 32],
    pub role: Role,
    /// None or empty = every session.
    pub allowed_sessions: Option<Vec<SessionId>>,
    pub expires_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// The authenticated caller of a request.
#[derive(Clone, Debug, PartialEq)]
pub struct Caller {
    pub key_id: ApiKeyId,
    pub role: Role,
    /// None = every session.
    pub scope: Option<HashSet<SessionId>>,
}

impl Caller {
    /// The caller's role is at least `role`.
    pub fn require(&self, role: Role) -> Result<(), crate::WebError> {
        if self.role >= role {
            Ok(())
        } else {
            Err(crate::WebError::InsufficientRole(role))
        }
    }

    pub fn may_see(&self, id: &SessionId) -> bool {
        self.scope.as_ref().is_none_or(|s| s.contains(id))
    }
}

/// Counts behind `GET /api/sessions/stats/overview` (memory is added by the
/// API layer, which knows the process).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Overview {
    pub total: usize,
    pub active: usize,
    pub by_status: Vec<(SessionStatus, usize)>,
}
