//! Session routes (contract §2–4). Each handler: extract, send one message,
//! shape the answer.

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use serde_json::Value;
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

type Data = web::Data<AppState>;
type Id = web::Path<String>;

/// The read shape of a session.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionBody {
    id: String,
    name: String,
    status: SessionStatus,
    phone: Option<String>,
    push_name: Option<String>,
    connected_at: Option<String>,
    last_active: Option<String>,
    created_at: String,
    updated_at: String,
    last_error: Option<String>,
    next_retry_at: Option<String>,
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

/// The create shape: the read shape plus config and (masked) proxy settings.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CreatedBody {
    #[serde(flatten)]
    session: SessionBody,
    config: SessionConfig,
    proxy_url: Option<String>,
    proxy_type: Option<ProxyType>,
    last_active_at: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateRequest {
    name: String,
    #[serde(default)]
    config: Option<SessionConfig>,
    #[serde(default)]
    proxy_url: Option<String>,
    #[serde(default)]
    proxy_type: Option<ProxyType>,
}

fn view_response(view: &SessionView) -> HttpResponse {
    HttpResponse::Ok().json(SessionBody::from(view))
}

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
        config: record.config,
        proxy_url: record.proxy_url.as_deref().map(mask_proxy_url),
        proxy_type: record.proxy_type,
        last_active_at: iso_opt(record.last_active),
    }))
}

pub async fn list(state: Data, Auth(caller): Auth) -> Result<HttpResponse, ApiError> {
    let views = state.web.send(ListSessions { caller }).await??;
    Ok(HttpResponse::Ok().json(views.iter().map(SessionBody::from).collect::<Vec<_>>()))
}

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

async fn command(
    state: Data,
    caller: wasup_actors::Caller,
    id: String,
    kind: SessionCommandKind,
) -> Result<HttpResponse, ApiError> {
    let view = state
        .web
        .send(SessionCommand { caller, id, kind })
        .await??;
    Ok(view_response(&view))
}

pub async fn start(state: Data, Auth(caller): Auth, id: Id) -> Result<HttpResponse, ApiError> {
    command(state, caller, id.into_inner(), SessionCommandKind::Start).await
}

pub async fn stop(state: Data, Auth(caller): Auth, id: Id) -> Result<HttpResponse, ApiError> {
    command(state, caller, id.into_inner(), SessionCommandKind::Stop).await
}

pub async fn force_kill(state: Data, Auth(caller): Auth, id: Id) -> Result<HttpResponse, ApiError> {
    command(
        state,
        caller,
        id.into_inner(),
        SessionCommandKind::ForceKill,
    )
    .await
}

pub async fn restart(state: Data, Auth(caller): Auth, id: Id) -> Result<HttpResponse, ApiError> {
    command(state, caller, id.into_inner(), SessionCommandKind::Restart).await
}

pub async fn logout(state: Data, Auth(caller): Auth, id: Id) -> Result<HttpResponse, ApiError> {
    command(state, caller, id.into_inner(), SessionCommandKind::Logout).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QrQuery {
    format: Option<String>,
}

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
    let render_failed = |e: crate::qr::QrError| {
        ApiError::new(
            actix_web::http::StatusCode::SERVICE_UNAVAILABLE,
            "qr_render_failed",
            e.to_string(),
        )
    };
    if wants_png && !raw {
        let png = crate::qr::png(&qr.text).map_err(render_failed)?;
        return Ok(HttpResponse::Ok().content_type("image/png").body(png));
    }
    let expires_at = iso(qr.expires_at);
    let body = if raw {
        serde_json::json!({"qr": qr.text, "status": status, "expiresAt": expires_at})
    } else {
        let data_url = crate::qr::data_url(&qr.text).map_err(render_failed)?;
        serde_json::json!({"qrCode": data_url, "status": status, "expiresAt": expires_at})
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

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PairingRequest {
    phone_number: String,
}

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
    Ok(HttpResponse::Created().json(serde_json::json!({
        "pairingCode": code.code,
        "status": code.status,
    })))
}

pub async fn me(state: Data, Auth(caller): Auth, id: Id) -> Result<HttpResponse, ApiError> {
    let me = state
        .web
        .send(GetMe {
            caller,
            id: id.into_inner(),
        })
        .await??;
    let body = match me {
        Some(me) => {
            serde_json::json!({"id": format!("{}@c.us", me.phone), "pushName": me.push_name})
        }
        None => Value::Null,
    };
    Ok(HttpResponse::Ok().json(body))
}

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
    let by_status: serde_json::Map<String, Value> = by_status
        .iter()
        .map(|(s, n)| (s.as_str().to_string(), Value::from(*n)))
        .collect();
    let mem = memory::usage();
    let mib = |b: u64| (b as f64 / (1024.0 * 1024.0)).round() as u64;
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "total": total,
        "active": active,
        "ready": count(SessionStatus::Ready),
        "disconnected": count(SessionStatus::Disconnected),
        "byStatus": by_status,
        "memoryUsage": {
            "heapUsed": mib(mem.heap_used),
            "heapTotal": mib(mem.heap_total),
            "rss": mib(mem.rss),
        },
    })))
}
