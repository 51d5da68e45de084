//! A session's settings on a live session (issue 11.3; the routes the newer
//! OpenWA SDK calls): `GET/PATCH /api/sessions/:id/config` and
//! `GET/PATCH /api/sessions/:id/proxy`. Thin handlers: extract, send one
//! message, shape the answer.

use actix_web::{web, HttpResponse};
use serde::Serialize;
use utoipa::ToSchema;
use wasup_actors::model::{Pacing, ProxyType};
use wasup_actors::web::*;

use super::auth::Auth;
use super::error::ApiError;
use super::json::Body;
use super::sessions::SessionPath;
use super::AppState;

type Data = web::Data<AppState>;
type Id = web::Path<String>;

/// A session's settings, every default applied.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = SessionSettings)]
pub struct ConfigBody {
    /// Restarts after a drop before the session is `failed` (0–20).
    #[schema(example = 5)]
    max_reconnect_attempts: u32,
    /// Base delay of the exponential backoff, ms (1000–300000).
    #[schema(example = 5000)]
    reconnect_base_delay: u64,
    /// Decline incoming calls (read at each call, no reconnect needed).
    auto_reject_calls: bool,
    sending: SendingBody,
    /// Your own JSON, as given; null when none.
    metadata: Option<serde_json::Value>,
}

/// The outbound pacing in effect.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = SendingSettings)]
pub struct SendingBody {
    #[schema(example = 1500)]
    min_delay_ms: u64,
    #[schema(example = 4000)]
    max_delay_ms: u64,
    typing: bool,
    /// 0: no limit.
    #[schema(example = 20)]
    per_minute: u32,
    /// 0: no limit.
    #[schema(example = 1000)]
    per_day: u32,
    #[schema(example = 86400)]
    queue_ttl_seconds: u64,
}

impl From<EffectiveConfig> for ConfigBody {
    fn from(c: EffectiveConfig) -> Self {
        let Pacing {
            min_delay_ms,
            max_delay_ms,
            typing,
            per_minute,
            per_day,
            queue_ttl_seconds,
        } = c.sending;
        ConfigBody {
            max_reconnect_attempts: c.max_reconnect_attempts,
            reconnect_base_delay: c.reconnect_base_delay,
            auto_reject_calls: c.auto_reject_calls,
            sending: SendingBody {
                min_delay_ms,
                max_delay_ms,
                typing,
                per_minute,
                per_day,
                queue_ttl_seconds,
            },
            metadata: c.metadata,
        }
    }
}

/// The settings after a change.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = SessionSettingsChanged)]
pub struct ConfigChangedBody {
    #[serde(flatten)]
    settings: ConfigBody,
    /// Whether the running engine must reconnect (restart) before the change
    /// takes effect. Always false here: every config field is read live.
    reconnect_required: bool,
}

/// Get a session's settings
///
/// Any role. The effective values: defaults filled in.
#[utoipa::path(get, path = "/api/sessions/{id}/config", tag = "sessions", operation_id = "getSessionConfig",
    params(SessionPath),
    responses((status = 200, description = "The settings", body = ConfigBody))
)]
pub async fn config_get(state: Data, Auth(caller): Auth, id: Id) -> Result<HttpResponse, ApiError> {
    let config = state
        .web
        .send(GetSessionConfig {
            caller,
            id: id.into_inner(),
        })
        .await??;
    Ok(HttpResponse::Ok().json(ConfigBody::from(config)))
}

/// Change a session's settings
///
/// Role: operator. Only the fields sent change; `null` restores a field's
/// default; `sending` is merged field by field, `metadata` replaced whole.
/// Applied to a live session without a reconnect: the backoff at the next
/// restart decision, the pacing at the next send. The status never changes.
#[utoipa::path(patch, path = "/api/sessions/{id}/config", tag = "sessions", operation_id = "updateSessionConfig",
    params(SessionPath),
    request_body = ConfigPatch,
    responses((status = 200, description = "The settings after the change", body = ConfigChangedBody))
)]
pub async fn config_update(
    state: Data,
    Auth(caller): Auth,
    id: Id,
    Body(patch): Body<ConfigPatch>,
) -> Result<HttpResponse, ApiError> {
    let changed = state
        .web
        .send(UpdateSessionConfig {
            caller,
            id: id.into_inner(),
            patch,
        })
        .await??;
    Ok(HttpResponse::Ok().json(ConfigChangedBody {
        settings: changed.settings.into(),
        reconnect_required: changed.reconnect_required,
    }))
}

/// A session's proxy, without its credentials.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = SessionProxy)]
pub struct ProxyBody {
    enabled: bool,
    proxy_type: Option<ProxyType>,
    /// `host` or `host:port`; never the user or password.
    #[schema(example = "proxy.example:1080")]
    proxy_host: Option<String>,
    /// The URL carries a user or password (never shown).
    has_credentials: bool,
}

impl From<ProxyView> for ProxyBody {
    fn from(v: ProxyView) -> Self {
        ProxyBody {
            enabled: v.enabled,
            proxy_type: v.proxy_type,
            proxy_host: v.proxy_host,
            has_credentials: v.has_credentials,
        }
    }
}

/// The proxy after a change.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = SessionProxyChanged)]
pub struct ProxyChangedBody {
    #[serde(flatten)]
    proxy: ProxyBody,
    /// True when an engine is running: it keeps its old route until the
    /// session restarts (`POST …/restart`, or the next reconnect).
    reconnect_required: bool,
}

/// Get a session's proxy
///
/// Any role. Never the password.
#[utoipa::path(get, path = "/api/sessions/{id}/proxy", tag = "sessions", operation_id = "getSessionProxy",
    params(SessionPath),
    responses((status = 200, description = "The proxy", body = ProxyBody))
)]
pub async fn proxy_get(state: Data, Auth(caller): Auth, id: Id) -> Result<HttpResponse, ApiError> {
    let proxy = state
        .web
        .send(GetSessionProxy {
            caller,
            id: id.into_inner(),
        })
        .await??;
    Ok(HttpResponse::Ok().json(ProxyBody::from(proxy)))
}

/// Set or clear a session's proxy
///
/// Role: operator. `{"proxyUrl": "socks5://user:pass@host:1080"}` sets it
/// (checked as at create, and against the address policy), `{"proxyUrl": null}`
/// clears it. Used from the session's next start.
#[utoipa::path(patch, path = "/api/sessions/{id}/proxy", tag = "sessions", operation_id = "updateSessionProxy",
    params(SessionPath),
    request_body = ProxyPatch,
    responses((status = 200, description = "The proxy after the change", body = ProxyChangedBody))
)]
pub async fn proxy_update(
    state: Data,
    Auth(caller): Auth,
    id: Id,
    Body(patch): Body<ProxyPatch>,
) -> Result<HttpResponse, ApiError> {
    let changed = state
        .web
        .send(UpdateSessionProxy {
            caller,
            id: id.into_inner(),
            patch,
        })
        .await??;
    Ok(HttpResponse::Ok().json(ProxyChangedBody {
        proxy: changed.settings.into(),
        reconnect_required: changed.reconnect_required,
    }))
}
