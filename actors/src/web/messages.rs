//! The messages the WebActor answers: one per use case of the HTTP API, with
//! the result each one replies. Handlers parse and authenticate, then send one.

use actix::Message;
use chrono::{DateTime, Utc};

use crate::error::WebError;
use crate::model::*;
pub use crate::state::SessionCommand;

/// `POST /api/sessions`
#[derive(Message)]
#[rtype(result = "Result<SessionRecord, WebError>")]
pub struct CreateSession {
    pub caller: Caller,
    pub name: String,
    pub config: SessionConfig,
    pub proxy_url: Option<String>,
    pub proxy_type: Option<ProxyType>,
}

/// `GET /api/sessions`
#[derive(Message)]
#[rtype(result = "Result<Vec<SessionView>, WebError>")]
pub struct ListSessions {
    pub caller: Caller,
}

/// `GET /api/sessions/:id` (id or name)
#[derive(Message)]
#[rtype(result = "Result<SessionView, WebError>")]
pub struct GetSession {
    pub caller: Caller,
    pub id: String,
}

/// `DELETE /api/sessions/:id`
#[derive(Message)]
#[rtype(result = "Result<(), WebError>")]
pub struct DeleteSession {
    pub caller: Caller,
    pub id: String,
}

/// `POST /api/sessions/:id/{start,stop,force-kill,restart,logout}`
#[derive(Message)]
#[rtype(result = "Result<SessionView, WebError>")]
pub struct RunCommand {
    pub caller: Caller,
    pub id: String,
    pub command: SessionCommand,
}

/// `GET /api/sessions/:id/qr`
#[derive(Message)]
#[rtype(result = "Result<(QrCode, SessionStatus), WebError>")]
pub struct GetQr {
    pub caller: Caller,
    pub id: String,
}

/// `POST /api/sessions/:id/pairing-code` (phone already checked: 6–15 digits)
#[derive(Message)]
#[rtype(result = "Result<PairingCode, WebError>")]
pub struct RequestPairingCode {
    pub caller: Caller,
    pub id: String,
    pub phone: String,
}

/// `GET /api/sessions/:id/me`
#[derive(Message)]
#[rtype(result = "Result<Option<Me>, WebError>")]
pub struct GetMe {
    pub caller: Caller,
    pub id: String,
}

/// `GET /api/sessions/stats/overview`
#[derive(Message)]
#[rtype(result = "Result<Overview, WebError>")]
pub struct GetOverview {
    pub caller: Caller,
}

/// `POST /api/auth/api-keys`; returns the record and the secret (shown once).
#[derive(Message)]
#[rtype(result = "Result<(ApiKeyRecord, String), WebError>")]
pub struct CreateApiKey {
    pub caller: Caller,
    pub name: String,
    pub role: Role,
    pub allowed_sessions: Option<Vec<SessionId>>,
    pub expires_at: Option<DateTime<Utc>>,
}

/// `GET /api/auth/api-keys`
#[derive(Message)]
#[rtype(result = "Result<Vec<ApiKeyRecord>, WebError>")]
pub struct ListApiKeys {
    pub caller: Caller,
}

/// `GET /api/auth/api-keys/:id`
#[derive(Message)]
#[rtype(result = "Result<ApiKeyRecord, WebError>")]
pub struct GetApiKey {
    pub caller: Caller,
    pub id: ApiKeyId,
}

/// `DELETE /api/auth/api-keys/:id`
#[derive(Message)]
#[rtype(result = "Result<(), WebError>")]
pub struct RevokeApiKey {
    pub caller: Caller,
    pub id: ApiKeyId,
}

/// `GET /api/health/ready`: is the database answering, and how far is the
/// boot restore?
#[derive(Message)]
#[rtype(result = "Result<RestoreProgress, WebError>")]
pub struct CheckReady;

/// Progress of the boot restore (`/api/health/ready` reports it; the API
/// answers throughout).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RestoreProgress {
    /// Sessions the restore queued.
    pub total: usize,
    /// Waiting for a slot.
    pub queued: usize,
    /// Starting now.
    pub in_progress: usize,
}

impl RestoreProgress {
    pub fn done(&self) -> usize {
        self.total.saturating_sub(self.queued + self.in_progress)
    }
}

/// First boot: when no API key exists at all, create one admin key (named
/// "admin") with the `preset` secret (`WASUP_ADMIN_KEY`) or a fresh one, and
/// return the secret so the binary can print it once and write admin.key.
/// `None` when keys already exist.
#[derive(Message)]
#[rtype(result = "Result<Option<String>, WebError>")]
pub struct BootstrapAdminKey {
    pub preset: Option<String>,
}

/// `GET /api/sessions?limit=&offset=&name=`: one page of the list.
#[derive(Message)]
#[rtype(result = "Result<SessionPage, WebError>")]
pub struct ListSessionsPage {
    pub caller: Caller,
    pub page: crate::registry::ListPage,
}

/// One page of the session list.
#[derive(Clone, Debug, PartialEq)]
pub struct SessionPage {
    /// Sessions in the whole list (the caller's scope, the `name` filter).
    pub total: usize,
    pub sessions: Vec<SessionView>,
}

/// `GET /api/sessions/:id/config`
#[derive(Message)]
#[rtype(result = "Result<super::EffectiveConfig, WebError>")]
pub struct GetSessionConfig {
    pub caller: Caller,
    pub id: String,
}

/// `PATCH /api/sessions/:id/config` (operator)
#[derive(Message)]
#[rtype(result = "Result<SettingsChanged<super::EffectiveConfig>, WebError>")]
pub struct UpdateSessionConfig {
    pub caller: Caller,
    pub id: String,
    pub patch: super::ConfigPatch,
}

/// `GET /api/sessions/:id/proxy`
#[derive(Message)]
#[rtype(result = "Result<super::ProxyView, WebError>")]
pub struct GetSessionProxy {
    pub caller: Caller,
    pub id: String,
}

/// `PATCH /api/sessions/:id/proxy` (operator)
#[derive(Message)]
#[rtype(result = "Result<SettingsChanged<super::ProxyView>, WebError>")]
pub struct UpdateSessionProxy {
    pub caller: Caller,
    pub id: String,
    pub patch: super::ProxyPatch,
}

/// Settings after a change, and whether the running engine must reconnect
/// before the change takes effect.
#[derive(Clone, Debug, PartialEq)]
pub struct SettingsChanged<T> {
    pub settings: T,
    pub reconnect_required: bool,
}
