//! Webhook routes (contract §6). Each handler: extract, send one message to
//! the WebhookActor, shape the answer. The secret appears only in the answer
//! to create; header values never appear again.

use std::collections::BTreeMap;

use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use wasup_actors::webhook::*;

use super::auth::Auth;
use super::error::ApiError;
use super::json::Body;
use super::time::iso;
use super::AppState;

type Data = web::Data<AppState>;

/// The read shape of a webhook.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookBody {
    id: String,
    session_id: String,
    url: String,
    events: Vec<String>,
    active: bool,
    max_attempts: u32,
    /// Custom header names; values are masked.
    headers: BTreeMap<String, &'static str>,
    created_at: String,
    updated_at: String,
}

impl From<&WebhookRecord> for WebhookBody {
    fn from(w: &WebhookRecord) -> Self {
        WebhookBody {
            id: w.id.to_string(),
            session_id: w.session_id.to_string(),
            url: w.url.clone(),
            events: w.events.clone(),
            active: w.active,
            max_attempts: w.max_attempts,
            headers: w.headers.iter().map(|(k, _)| (k.clone(), "***")).collect(),
            created_at: iso(w.created_at),
            updated_at: iso(w.updated_at),
        }
    }
}

#[derive(Serialize)]
struct CreatedBody {
    #[serde(flatten)]
    webhook: WebhookBody,
    secret: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateRequest {
    url: String,
    #[serde(default)]
    events: Option<Vec<String>>,
    #[serde(default)]
    secret: Option<String>,
    #[serde(default)]
    headers: Option<BTreeMap<String, String>>,
    #[serde(default)]
    max_attempts: Option<u32>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateRequest {
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    events: Option<Vec<String>>,
    #[serde(default)]
    headers: Option<BTreeMap<String, String>>,
    #[serde(default)]
    active: Option<bool>,
    #[serde(default)]
    max_attempts: Option<u32>,
}

fn pairs(h: Option<BTreeMap<String, String>>) -> Option<Vec<(String, String)>> {
    h.map(|m| m.into_iter().collect())
}

pub async fn create(
    state: Data,
    Auth(caller): Auth,
    id: web::Path<String>,
    Body(req): Body<CreateRequest>,
) -> Result<HttpResponse, ApiError> {
    let (record, secret) = state
        .webhooks
        .send(CreateWebhook {
            caller,
            session: id.into_inner(),
            url: req.url,
            events: req.events,
            secret: req.secret,
            headers: pairs(req.headers),
            max_attempts: req.max_attempts,
        })
        .await??;
    Ok(HttpResponse::Created().json(CreatedBody {
        webhook: WebhookBody::from(&record),
        secret,
    }))
}

fn list_response(hooks: &[WebhookRecord]) -> HttpResponse {
    HttpResponse::Ok().json(hooks.iter().map(WebhookBody::from).collect::<Vec<_>>())
}

pub async fn list(
    state: Data,
    Auth(caller): Auth,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let hooks = state
        .webhooks
        .send(ListWebhooks {
            caller,
            session: Some(id.into_inner()),
        })
        .await??;
    Ok(list_response(&hooks))
}

pub async fn list_all(state: Data, Auth(caller): Auth) -> Result<HttpResponse, ApiError> {
    let hooks = state
        .webhooks
        .send(ListWebhooks {
            caller,
            session: None,
        })
        .await??;
    Ok(list_response(&hooks))
}

pub async fn get(
    state: Data,
    Auth(caller): Auth,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (session, webhook) = path.into_inner();
    let record = state
        .webhooks
        .send(GetWebhook {
            caller,
            session,
            webhook,
        })
        .await??;
    Ok(HttpResponse::Ok().json(WebhookBody::from(&record)))
}

pub async fn update(
    state: Data,
    Auth(caller): Auth,
    path: web::Path<(String, String)>,
    Body(req): Body<UpdateRequest>,
) -> Result<HttpResponse, ApiError> {
    let (session, webhook) = path.into_inner();
    let record = state
        .webhooks
        .send(UpdateWebhook {
            caller,
            session,
            webhook,
            url: req.url,
            events: req.events,
            headers: pairs(req.headers),
            active: req.active,
            max_attempts: req.max_attempts,
        })
        .await??;
    Ok(HttpResponse::Ok().json(WebhookBody::from(&record)))
}

pub async fn delete(
    state: Data,
    Auth(caller): Auth,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (session, webhook) = path.into_inner();
    state
        .webhooks
        .send(DeleteWebhook {
            caller,
            session,
            webhook,
        })
        .await??;
    Ok(HttpResponse::NoContent().finish())
}

pub async fn test(
    state: Data,
    Auth(caller): Auth,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (session, webhook) = path.into_inner();
    let result = state
        .webhooks
        .send(TestWebhook {
            caller,
            session,
            webhook,
        })
        .await??;
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "delivered": result.delivered(),
        "statusCode": result.status_code,
        "latencyMs": result.latency_ms,
        "error": result.error,
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveriesQuery {
    status: Option<String>,
    limit: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct AttemptBody {
    event_id: String,
    event: String,
    attempt: u32,
    /// delivered | failed | dead (this attempt dead-lettered the event)
    status: &'static str,
    status_code: Option<u16>,
    error: Option<String>,
    latency_ms: u64,
    at: String,
}

pub async fn deliveries(
    state: Data,
    Auth(caller): Auth,
    path: web::Path<(String, String)>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let query = web::Query::<DeliveriesQuery>::from_query(req.query_string()).map_err(|_| {
        ApiError::validation("Query parameters 'status' and 'limit' are the only ones accepted")
    })?;
    let filter = query
        .status
        .as_deref()
        .map(str::parse::<AttemptFilter>)
        .transpose()
        .map_err(ApiError::validation)?;
    let limit = match query.limit.as_deref() {
        None => 100,
        Some(n) => n
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=500).contains(n))
            .ok_or_else(|| ApiError::validation("Query parameter 'limit' must be 1–500"))?,
    };
    let (session, webhook) = path.into_inner();
    let attempts = state
        .webhooks
        .send(ListDeliveries {
            caller,
            session,
            webhook,
            filter,
            limit,
        })
        .await??;
    Ok(HttpResponse::Ok().json(
        attempts
            .into_iter()
            .map(|a| AttemptBody {
                event_id: a.event_id,
                event: a.event_name,
                attempt: a.attempt,
                status: a.outcome.as_str(),
                status_code: a.status_code,
                error: a.error,
                latency_ms: a.latency_ms,
                at: iso(a.at),
            })
            .collect::<Vec<_>>(),
    ))
}

pub async fn redrive(
    state: Data,
    Auth(caller): Auth,
    path: web::Path<(String, String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (session, webhook, event_id) = path.into_inner();
    state
        .webhooks
        .send(RedriveDelivery {
            caller,
            session,
            webhook,
            event_id: event_id.clone(),
        })
        .await??;
    Ok(HttpResponse::Accepted().json(serde_json::json!({"eventId": event_id, "queued": true})))
}
