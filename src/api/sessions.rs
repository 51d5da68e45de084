//! Session routes (contract §2–4). Each handler: extract, send one message,
//! shape the answer.

use std::collections::BTreeMap;

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use wasup_actors::model::{
    Overview, ProxyType, SessionConfig, SessionRecord, SessionStatus, SessionView,
};
use wasup_actors::web::*;

use super::auth::Auth;
use super::error::ApiError;
use super::json::Body;
use super::time::{iso, iso_opt};
use super::AppState;
use crate::memory;
use wasup_actors::ErrorCode;

type Data = web::Data<AppState>;
type Id = web::Path<String>;

/// A session (the read shape).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = Session)]
pub struct SessionBody {
    #[schema(format = Uuid, example = "8f3c2b1a-9d4e-4c7a-8b2f-1e6d5a4c3b2a")]
    id: String,
    #[schema(example = "my-bot")]
    name: String,
    status: SessionStatus,
    /// The linked account's number; null until linked and after logout.
    #[schema(example = "628123456789")]
    phone: Option<String>,
    /// The linked account's display name; null until linked and after logout.
    #[schema(example = "My Bot")]
    push_name: Option<String>,
    #[schema(format = DateTime, example = "2026-06-25T09:00:00.000Z")]
    connected_at: Option<String>,
    #[schema(format = DateTime, example = "2026-06-25T09:00:00.000Z")]
    last_active: Option<String>,
    #[schema(format = DateTime, example = "2026-06-25T09:00:00.000Z")]
    created_at: String,
    #[schema(format = DateTime, example = "2026-06-25T09:00:00.000Z")]
    updated_at: String,
    /// Why the session failed: a string only while `status` is `failed`.
    last_error: Option<String>,
    /// Extension: when the supervisor will restart the session, while it waits to.
    #[schema(format = DateTime)]
    next_retry_at: Option<String>,
    /// Extension: restarts since the last stable `ready`.
    restarts: u32,
}

impl From<&SessionView> for SessionBody {
    fn from(view: &SessionView) -> Self {
        let r = &view.record;
        SessionBody {
            id: r.id.to_string(),
            name: r.name.clone(),
            status: r.status,
            phone: r.phone.clone(),
            push_name: r.push_name.clone(),
            connected_at: iso_opt(r.connected_at),
            last_active: iso_opt(r.last_active),
            created_at: iso(r.created_at),
            updated_at: iso(r.updated_at),
            last_error: r
                .last_error
                .clone()
                .filter(|_| r.status == SessionStatus::Failed),
            next_retry_at: iso_opt(view.next_retry_at),
            restarts: view.restarts,
        }
    }
}

/// A session as created: the read shape plus config and (masked) proxy settings.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = CreatedSession)]
pub struct CreatedBody {
    #[serde(flatten)]
    session: SessionBody,
    config: SessionConfig,
    /// The proxy URL with its password masked (`user:***@`).
    #[schema(example = "http://user:***@proxy.example:8080")]
    proxy_url: Option<String>,
    proxy_type: Option<ProxyType>,
    /// Same value as `lastActive`.
    #[schema(format = DateTime)]
    last_active_at: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(as = CreateSessionRequest)]
pub struct CreateRequest {
    /// 3–50 characters of `[A-Za-z0-9-]`, unique, and not a UUID.
    #[schema(
        example = "my-bot",
        min_length = 3,
        max_length = 50,
        pattern = "^[A-Za-z0-9-]+$"
    )]
    name: String,
    #[serde(default)]
    config: Option<SessionConfig>,
    /// `http://`, `https://` or `socks5://` URL of a proxy for this session's
    /// connection to WhatsApp; credentials may be included.
    #[serde(default)]
    #[schema(example = "socks5://user:secret@proxy.example:1080")]
    proxy_url: Option<String>,
    /// The proxy's scheme; when given it must match `proxyUrl`'s.
    #[serde(default)]
    proxy_type: Option<ProxyType>,
}

/// The `{id}` of a session's routes.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
pub struct SessionPath {
    /// Session UUID or name
    id: String,
}

fn view_response(view: &SessionView) -> HttpResponse {
    HttpResponse::Ok().json(SessionBody::from(view))
}

/// Create a session
///
/// Role: operator; not with a key limited to some sessions. The session is
/// created in status `created`; start it to link it.
#[utoipa::path(post, path = "/api/sessions", tag = "sessions", operation_id = "createSession",
    request_body = CreateRequest,
    responses(
        (status = 201, description = "Created", body = CreatedBody),
    )
)]
pub async fn create(
    state: Data,
    Auth(caller): Auth,
    Body(req): Body<CreateRequest>,
) -> Result<HttpResponse, ApiError> {
    let record: SessionRecord = state
        .web
        .send(CreateSession {
            caller,
            name: req.name,
            config: req.config.unwrap_or_default(),
            proxy_url: req.proxy_url,
            proxy_type: req.proxy_type,
        })
        .await??;
    let view = SessionView {
        record: record.clone(),
        next_retry_at: None,
        restarts: 0,
        engine_alive: false,
        qr: None,
    };
    Ok(HttpResponse::Created().json(CreatedBody {
        session: SessionBody::from(&view),
        config: (*record.config).clone(),
        proxy_url: record.proxy_url.as_deref().map(mask_proxy_url),
        proxy_type: record.proxy_type,
        last_active_at: iso_opt(record.last_active),
    }))
}

/// `GET /api/sessions` paging (extension); without them, the whole list.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// At most this many sessions, 1–1000.
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    limit: Option<String>,
    /// Sessions to skip first, ≥ 0.
    #[param(value_type = Option<u64>, minimum = 0)]
    offset: Option<String>,
    /// Only the session with exactly this name.
    name: Option<String>,
}

/// Largest `limit` of one page.
pub const LIST_LIMIT_MAX: usize = 1000;

fn list_page(query: &str) -> Result<wasup_actors::registry::ListPage, ApiError> {
    let q = web::Query::<ListQuery>::from_query(query).map_err(|_| {
        ApiError::validation(
            "Query parameters 'limit', 'offset' and 'name' (each at most once) are the only ones accepted",
        )
    })?;
    let number = |name: &str, value: &Option<String>, min: usize, max: usize| {
        value
            .as_deref()
            .map(|v| match v.parse::<usize>() {
                Ok(n) if (min..=max).contains(&n) => Ok(n),
                _ if max == usize::MAX => Err(ApiError::validation(format!(
                    "Query parameter '{name}' must be an integer ≥ {min}, not '{v}'"
                ))),
                _ => Err(ApiError::validation(format!(
                    "Query parameter '{name}' must be an integer {min}–{max}, not '{v}'"
                ))),
            })
            .transpose()
    };
    Ok(wasup_actors::registry::ListPage {
        limit: number("limit", &q.limit, 1, LIST_LIMIT_MAX)?,
        offset: number("offset", &q.offset, 0, usize::MAX)?.unwrap_or(0),
        name: q.into_inner().name,
    })
}

/// List sessions
///
/// Any role. Newest first (`createdAt` descending, ties by name); a key
/// limited to some sessions sees only those. Extension: `limit` (1–1000),
/// `offset` and `name` (exact) answer one page; `X-Total-Count` says how
/// many sessions the whole list (with the `name` filter) holds.
#[utoipa::path(get, path = "/api/sessions", tag = "sessions", operation_id = "listSessions",
    params(ListQuery),
    responses(
        (status = 200, description = "The sessions", body = Vec<SessionBody>,
            headers(("X-Total-Count" = u64, description = "Sessions in the whole list"))),
    )
)]
pub async fn list(
    state: Data,
    Auth(caller): Auth,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let page = list_page(req.query_string())?;
    let page = state.web.send(ListSessionsPage { caller, page }).await??;
    Ok(HttpResponse::Ok()
        .insert_header(("X-Total-Count", page.total.to_string()))
        .json(
            page.sessions
                .iter()
                .map(SessionBody::from)
                .collect::<Vec<_>>(),
        ))
}

/// Get a session
///
/// Any role.
#[utoipa::path(get, path = "/api/sessions/{id}", tag = "sessions", operation_id = "getSession",
    params(SessionPath),
    responses(
        (status = 200, description = "The session", body = SessionBody),
    )
)]
pub async fn get(state: Data, Auth(caller): Auth, id: Id) -> Result<HttpResponse, ApiError> {
    let view = state
        .web
        .send(GetSession {
            caller,
            id: id.into_inner(),
        })
        .await??;
    Ok(view_response(&view))
}

/// Delete a session
///
/// Role: operator. Stops the engine and removes the record, its credentials,
/// its webhooks and their pending deliveries.
#[utoipa::path(delete, path = "/api/sessions/{id}", tag = "sessions", operation_id = "deleteSession",
    params(SessionPath),
    responses(
        (status = 204, description = "Deleted"),
    )
)]
pub async fn delete(state: Data, Auth(caller): Auth, id: Id) -> Result<HttpResponse, ApiError> {
    state
        .web
        .send(DeleteSession {
            caller,
            id: id.into_inner(),
        })
        .await??;
    Ok(HttpResponse::NoContent().finish())
}

/// Declares the handler of one session command, `POST
/// /api/sessions/{id}/<segment>`: it sends the command and answers the
/// session as it is after it.
macro_rules! command_route {
    ($(#[doc = $doc:tt])* $name:ident, $segment:tt, $operation_id:tt, $kind:ident) => {
        $(#[doc = $doc])*
        #[utoipa::path(post, path = concat!("/api/sessions/{id}/", $segment), tag = "sessions", operation_id = $operation_id,
            params(SessionPath),
            responses((status = 200, description = "The session after the command", body = SessionBody))
        )]
        pub async fn $name(state: Data, Auth(caller): Auth, id: Id) -> Result<HttpResponse, ApiError> {
            let command = RunCommand {
                caller,
                id: id.into_inner(),
                command: SessionCommand::$kind,
            };
            Ok(view_response(&state.web.send(command).await??))
        }
    };
}

command_route!(
    /// Start a session
    ///
    /// Role: operator. The session goes `initializing`, then `qr_ready` (unlinked) or `ready` (linked).
    start,
    "start",
    "startSession",
    Start
);

command_route!(
    /// Stop a session
    ///
    /// Role: operator. The session goes `disconnected`; its credentials are kept. Idempotent.
    stop,
    "stop",
    "stopSession",
    Stop
);

command_route!(
    /// Force-kill a session
    ///
    /// Role: operator. The engine is aborted without waiting for a clean close; the session goes `disconnected`.
    force_kill,
    "force-kill",
    "forceKillSession",
    ForceKill
);

command_route!(
    /// Restart a session
    ///
    /// Role: operator. Extension: stop then start, from any state.
    restart,
    "restart",
    "restartSession",
    Restart
);

command_route!(
    /// Log a session out
    ///
    /// Role: operator. Extension: unlinks the device at WhatsApp when connected, wipes the credentials; the session goes `disconnected` with `phone` and `pushName` null.
    logout,
    "logout",
    "logoutSession",
    Logout
);

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct QrQuery {
    /// `image` (default): a PNG data URL in `qrCode`; `raw` (extension): the QR text in `qr`.
    #[param(pattern = "^(image|raw)$", example = "raw")]
    format: Option<String>,
}

/// The current QR as a PNG data URL.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct QrImage {
    #[schema(example = "data:image/png;base64,iVBORw0KGgo…")]
    qr_code: String,
    status: SessionStatus,
    #[schema(format = DateTime, example = "2026-06-25T09:01:00.000Z")]
    expires_at: String,
}

/// Extension (`?format=raw`): the current QR's text.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct QrRaw {
    #[schema(example = "2@Xk3…,…")]
    qr: String,
    status: SessionStatus,
    #[schema(format = DateTime, example = "2026-06-25T09:01:00.000Z")]
    expires_at: String,
}

#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum QrBody {
    Image(QrImage),
    Raw(QrRaw),
}

/// Get the QR to link a session
///
/// Role: operator. The QR rotates (each rotation also emits `session.qr`);
/// `expiresAt` says when this one stops working. With `Accept: image/png`
/// (extension) the answer is the PNG itself.
#[utoipa::path(get, path = "/api/sessions/{id}/qr", tag = "sessions", operation_id = "getSessionQr",
    params(SessionPath, QrQuery),
    responses(
        (status = 200, description = "The current QR", content(
            (QrBody = "application/json"),
            ("image/png"),
        )),
    )
)]
pub async fn qr(
    state: Data,
    Auth(caller): Auth,
    id: Id,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let query = web::Query::<QrQuery>::from_query(req.query_string())
        .map_err(|_| ApiError::validation("Query parameter 'format' is the only one accepted"))?;
    let raw = match query.format.as_deref() {
        None | Some("image") => false,
        Some("raw") => true,
        Some(other) => {
            return Err(ApiError::validation(format!(
                "Query parameter 'format' must be 'raw' or 'image', not '{other}'"
            )))
        }
    };
    let (qr, status) = state
        .web
        .send(GetQr {
            caller,
            id: id.into_inner(),
        })
        .await??;
    let wants_png = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("image/png"));
    let render_failed =
        |e: crate::qr::QrError| ApiError::new(ErrorCode::QrRenderFailed, e.to_string());
    if wants_png && !raw {
        let png = crate::qr::png(&qr.text).map_err(render_failed)?;
        return Ok(HttpResponse::Ok().content_type("image/png").body(png));
    }
    let expires_at = iso(qr.expires_at);
    let body = if raw {
        QrBody::Raw(QrRaw {
            qr: qr.text,
            status,
            expires_at,
        })
    } else {
        QrBody::Image(QrImage {
            qr_code: crate::qr::data_url(&qr.text).map_err(render_failed)?,
            status,
            expires_at,
        })
    };
    Ok(HttpResponse::Ok().json(body))
}

/// A phone number as WhatsApp wants it: 6–15 digits, country code first.
pub fn phone_digits(field: &str, value: &str) -> Result<String, ApiError> {
    let phone = value.trim();
    if (6..=15).contains(&phone.len()) && phone.bytes().all(|b| b.is_ascii_digit()) {
        Ok(phone.to_string())
    } else {
        Err(ApiError::validation(format!(
            "Field '{field}' must be 6–15 digits (country code and number, no '+' or spaces)"
        )))
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(as = PairingCodeRequest)]
pub struct PairingRequest {
    /// The phone number of the account to link: 6–15 digits, country code first.
    #[schema(example = "628123456789", pattern = "^[0-9]{6,15}$")]
    phone_number: String,
}

/// A pairing code to enter on the phone (Linked devices → Link with phone number).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PairingCodeBody {
    #[schema(example = "ABCD1234")]
    pairing_code: String,
    status: SessionStatus,
}

/// Request a pairing code
///
/// Role: operator. Links by code instead of QR; the session must be in `qr_ready`.
#[utoipa::path(post, path = "/api/sessions/{id}/pairing-code", tag = "sessions", operation_id = "requestPairingCode",
    params(SessionPath),
    request_body = PairingRequest,
    responses(
        (status = 201, description = "The code", body = PairingCodeBody),
    )
)]
pub async fn pairing_code(
    state: Data,
    Auth(caller): Auth,
    id: Id,
    Body(req): Body<PairingRequest>,
) -> Result<HttpResponse, ApiError> {
    let phone = phone_digits("phoneNumber", &req.phone_number)?;
    let code = state
        .web
        .send(RequestPairingCode {
            caller,
            id: id.into_inner(),
            phone,
        })
        .await??;
    Ok(HttpResponse::Created().json(PairingCodeBody {
        pairing_code: code.code,
        status: code.status,
    }))
}

/// The linked account
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MeBody {
    /// The account's chat id.
    #[schema(example = "628123456789@c.us")]
    id: String,
    #[schema(example = "My Bot")]
    push_name: Option<String>,
}

/// Get the linked account
///
/// Any role. Extension: `null` while the session is not linked.
#[utoipa::path(get, path = "/api/sessions/{id}/me", tag = "sessions", operation_id = "getSessionMe",
    params(SessionPath),
    responses(
        (status = 200, description = "The linked account, or null", body = Option<MeBody>),
    )
)]
pub async fn me(state: Data, Auth(caller): Auth, id: Id) -> Result<HttpResponse, ApiError> {
    let me = state
        .web
        .send(GetMe {
            caller,
            id: id.into_inner(),
        })
        .await??;
    Ok(HttpResponse::Ok().json(me.map(|me| MeBody {
        id: format!("{}@c.us", me.phone),
        push_name: me.push_name,
    })))
}

/// Session counts and the process's memory
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OverviewBody {
    /// Sessions the key may see.
    #[schema(example = 4)]
    total: usize,
    /// Sessions with a live engine.
    #[schema(example = 2)]
    active: usize,
    #[schema(example = 2)]
    ready: usize,
    #[schema(example = 1)]
    disconnected: usize,
    /// Sessions per status; only statuses that occur are listed.
    #[schema(example = json!({"ready": 2, "disconnected": 1, "created": 1}))]
    by_status: BTreeMap<SessionStatus, usize>,
    memory_usage: MemoryUsage,
}

/// The whole process's memory, in MiB.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MemoryUsage {
    /// Bytes the allocator has handed out.
    #[schema(example = 142)]
    heap_used: u64,
    /// Bytes the allocator holds from the OS.
    #[schema(example = 210)]
    heap_total: u64,
    /// Resident set.
    #[schema(example = 318)]
    rss: u64,
}

/// Get the sessions overview
///
/// Any role. Counts cover the sessions the key may see.
#[utoipa::path(get, path = "/api/sessions/stats/overview", tag = "sessions", operation_id = "getSessionsOverview",
    responses(
        (status = 200, description = "The overview", body = OverviewBody),
    )
)]
pub async fn overview(state: Data, Auth(caller): Auth) -> Result<HttpResponse, ApiError> {
    let Overview {
        total,
        active,
        by_status,
    } = state.web.send(GetOverview { caller }).await??;
    let count = |s: SessionStatus| {
        by_status
            .iter()
            .find(|(st, _)| *st == s)
            .map_or(0, |(_, n)| *n)
    };
    let mem = memory::usage();
    let mib = |b: u64| (b as f64 / (1024.0 * 1024.0)).round() as u64;
    Ok(HttpResponse::Ok().json(OverviewBody {
        total,
        active,
        ready: count(SessionStatus::Ready),
        disconnected: count(SessionStatus::Disconnected),
        by_status: by_status.iter().copied().collect(),
        memory_usage: MemoryUsage {
            heap_used: mib(mem.heap_used),
            heap_total: mib(mem.heap_total),
            rss: mib(mem.rss),
        },
    }))
}
