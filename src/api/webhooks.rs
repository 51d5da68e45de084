//! Webhook routes (contract §6). Each handler: extract, send one message to
//! the WebhookActor, shape the answer. The secret appears only in the answer
//! to create; header values never appear again.

use std::collections::BTreeMap;

use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use wasup_actors::webhook::*;

use wasup_actors::model::Role;

use super::auth::Auth;
use super::error::ApiError;
use super::json::Body;
use super::sessions::SessionPath;
use super::time::iso;
use super::AppState;

type Data = web::Data<AppState>;

/// A webhook (never its secret or its header values; for viewer keys, the
/// URL's credentials and token-like query values are masked too).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = Webhook)]
pub struct WebhookBody {
    #[schema(format = Uuid)]
    id: String,
    #[schema(format = Uuid)]
    session_id: String,
    /// For viewer keys a password in it shows as `user:***@` and the values
    /// of token-like query keys (`token`, `key`, `secret`, `sig`, …) as `***`;
    /// operators and admins see it whole.
    #[schema(example = "https://example.com/hooks/wasup")]
    url: String,
    /// `["*"]` (every event) or event names.
    #[schema(example = json!(["*"]))]
    events: Vec<String>,
    active: bool,
    #[schema(example = 10)]
    max_attempts: u32,
    /// Custom header names; values are masked (`***`).
    #[schema(value_type = BTreeMap<String, String>, example = json!({"Authorization": "***"}))]
    headers: BTreeMap<String, &'static str>,
    #[schema(format = DateTime, example = "2026-06-25T09:00:00.000Z")]
    created_at: String,
    #[schema(format = DateTime, example = "2026-06-25T09:00:00.000Z")]
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

/// A webhook as created: the only answer that carries its secret.
#[derive(Serialize, ToSchema)]
#[schema(as = CreatedWebhook)]
pub struct CreatedBody {
    #[serde(flatten)]
    webhook: WebhookBody,
    /// The signing secret (Standard Webhooks). Shown only here.
    #[schema(example = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")]
    secret: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(as = CreateWebhookRequest)]
pub struct CreateRequest {
    /// Where deliveries are POSTed: http(s) with a host, at most 2048 characters.
    /// Loopback, private, link-local and metadata addresses are refused unless
    /// the operator allows them.
    #[schema(example = "https://example.com/hooks/wasup")]
    url: String,
    /// `["*"]` (the default: every event) or event names: `session.status`,
    /// `session.qr`, `session.authenticated`, `session.disconnected`,
    /// `message.received`, `message.sent`, `message.ack`, `message.failed`,
    /// or `message.*` for the four.
    #[serde(default)]
    #[schema(example = json!(["session.status", "session.qr"]))]
    events: Option<Vec<String>>,
    /// `whsec_` + base64 of 24–64 bytes; generated when absent.
    #[serde(default)]
    secret: Option<String>,
    /// Extra headers sent with every delivery; they cannot override the
    /// signature or `X-Wasup-*` headers. At most 8 KiB in all.
    #[serde(default)]
    #[schema(example = json!({"Authorization": "Bearer s3cret"}))]
    headers: Option<BTreeMap<String, String>>,
    /// Delivery attempts before an event is dead-lettered: 1–20, default 10.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 20)]
    max_attempts: Option<u32>,
}

/// The fields to change; absent fields keep their value.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(as = UpdateWebhookRequest)]
pub struct UpdateRequest {
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    events: Option<Vec<String>>,
    /// Replaces every custom header.
    #[serde(default)]
    headers: Option<BTreeMap<String, String>>,
    /// An inactive webhook gets no new deliveries.
    #[serde(default)]
    active: Option<bool>,
    #[serde(default)]
    #[schema(minimum = 1, maximum = 20)]
    max_attempts: Option<u32>,
}

/// The `{wid}` of a webhook's routes (after its session's `{id}`).
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
pub struct WebhookPath {
    /// Webhook id
    #[param(format = Uuid)]
    wid: String,
}

impl WebhookBody {
    /// The webhook as a caller of `role` may see it: viewers cannot set a
    /// webhook, so they get its URL without credentials; operators and
    /// admins (who could set it) get it whole.
    fn shown_to(w: &WebhookRecord, role: Role) -> Self {
        let mut body = WebhookBody::from(w);
        if role < Role::Operator {
            body.url = wasup_actors::redact::mask_url(&body.url);
        }
        body
    }
}

fn pairs(h: Option<BTreeMap<String, String>>) -> Option<Vec<(String, String)>> {
    h.map(|m| m.into_iter().collect())
}

/// Create a webhook
///
/// Role: operator. The answer is the only one that carries the secret.
#[utoipa::path(post, path = "/api/sessions/{id}/webhooks", tag = "webhooks", operation_id = "createWebhook",
    params(SessionPath),
    request_body = CreateRequest,
    responses(
        (status = 201, description = "Created", body = CreatedBody),
    )
)]
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

fn list_response(hooks: &[WebhookRecord], role: Role) -> HttpResponse {
    HttpResponse::Ok().json(
        hooks
            .iter()
            .map(|w| WebhookBody::shown_to(w, role))
            .collect::<Vec<_>>(),
    )
}

/// List a session's webhooks
///
/// Any role.
#[utoipa::path(get, path = "/api/sessions/{id}/webhooks", tag = "webhooks", operation_id = "listSessionWebhooks",
    params(SessionPath),
    responses(
        (status = 200, description = "The webhooks", body = Vec<WebhookBody>),
    )
)]
pub async fn list(
    state: Data,
    Auth(caller): Auth,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let role = caller.role;
    let hooks = state
        .webhooks
        .send(ListWebhooks {
            caller,
            session: Some(id.into_inner()),
        })
        .await??;
    Ok(list_response(&hooks, role))
}

/// List all webhooks
///
/// Any role: every webhook of the sessions the key may see.
#[utoipa::path(get, path = "/api/webhooks", tag = "webhooks", operation_id = "listWebhooks",
    responses(
        (status = 200, description = "The webhooks", body = Vec<WebhookBody>),
    )
)]
pub async fn list_all(state: Data, Auth(caller): Auth) -> Result<HttpResponse, ApiError> {
    let role = caller.role;
    let hooks = state
        .webhooks
        .send(ListWebhooks {
            caller,
            session: None,
        })
        .await??;
    Ok(list_response(&hooks, role))
}

/// Get a webhook
///
/// Any role.
#[utoipa::path(get, path = "/api/sessions/{id}/webhooks/{wid}", tag = "webhooks", operation_id = "getWebhook",
    params(SessionPath, WebhookPath),
    responses(
        (status = 200, description = "The webhook", body = WebhookBody),
    )
)]
pub async fn get(
    state: Data,
    Auth(caller): Auth,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (session, webhook) = path.into_inner();
    let role = caller.role;
    let record = state
        .webhooks
        .send(GetWebhook {
            caller,
            session,
            webhook,
        })
        .await??;
    Ok(HttpResponse::Ok().json(WebhookBody::shown_to(&record, role)))
}

/// Update a webhook
///
/// Role: operator.
#[utoipa::path(patch, path = "/api/sessions/{id}/webhooks/{wid}", tag = "webhooks", operation_id = "updateWebhook",
    params(SessionPath, WebhookPath),
    request_body = UpdateRequest,
    responses(
        (status = 200, description = "The webhook after the change", body = WebhookBody),
    )
)]
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

/// Delete a webhook
///
/// Role: operator. Its pending deliveries are dropped.
#[utoipa::path(delete, path = "/api/sessions/{id}/webhooks/{wid}", tag = "webhooks", operation_id = "deleteWebhook",
    params(SessionPath, WebhookPath),
    responses(
        (status = 204, description = "Deleted"),
    )
)]
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

/// The outcome of a test delivery.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TestResultBody {
    /// The receiver answered 2xx.
    delivered: bool,
    /// The receiver's HTTP status; null when none came (network error, timeout).
    #[schema(example = 200)]
    status_code: Option<u16>,
    #[schema(example = 12)]
    latency_ms: u64,
    /// Why the delivery failed; null when delivered.
    error: Option<String>,
}

/// Send a test delivery
///
/// Role: operator. POSTs a signed `webhook.test` event to the URL once, now
/// (no retries), and reports what the receiver answered.
#[utoipa::path(post, path = "/api/sessions/{id}/webhooks/{wid}/test", tag = "webhooks", operation_id = "testWebhook",
    params(SessionPath, WebhookPath),
    responses(
        (status = 200, description = "What the receiver answered (also when it failed)", body = TestResultBody),
    )
)]
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
    Ok(HttpResponse::Ok().json(TestResultBody {
        delivered: result.delivered(),
        status_code: result.status_code,
        latency_ms: result.latency_ms,
        error: result.error,
    }))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeliveriesQuery {
    /// Only attempts with this outcome: `delivered`, `failed` or `dead`.
    #[param(pattern = "^(delivered|failed|dead)$", example = "failed")]
    status: Option<String>,
    /// At most this many attempts, newest first: 1–500, default 100.
    #[param(value_type = Option<u32>, minimum = 1, maximum = 500)]
    limit: Option<String>,
}

/// One delivery attempt.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = DeliveryAttempt)]
pub struct AttemptBody {
    /// The event's id (its `webhook-id`); redrive takes it.
    #[schema(example = "evt_0197a4f2c1b27e3c9d4a5b6c7d8e9f01")]
    event_id: String,
    #[schema(example = "session.status")]
    event: String,
    /// 1 for the first attempt.
    attempt: u32,
    /// `delivered`, `failed`, or `dead` (this attempt dead-lettered the event).
    #[schema(value_type = String, pattern = "^(delivered|failed|dead)$", example = "failed")]
    status: &'static str,
    /// The receiver's HTTP status; null when none came.
    status_code: Option<u16>,
    /// Why the attempt failed; null when delivered.
    error: Option<String>,
    latency_ms: u64,
    #[schema(format = DateTime, example = "2026-06-25T09:00:00.000Z")]
    at: String,
}

/// The answer to redrive.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RedriveBody {
    event_id: String,
    /// Always true: the event is queued for delivery again.
    queued: bool,
}

/// List delivery attempts
///
/// Any role. The webhook's recent attempts, newest first.
#[utoipa::path(get, path = "/api/sessions/{id}/webhooks/{wid}/deliveries", tag = "webhooks", operation_id = "listWebhookDeliveries",
    params(SessionPath, WebhookPath, DeliveriesQuery),
    responses(
        (status = 200, description = "The attempts", body = Vec<AttemptBody>),
    )
)]
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

/// Redrive a dead-lettered event
///
/// Role: operator. The event is queued for delivery to this webhook again.
#[utoipa::path(post, path = "/api/sessions/{id}/webhooks/{wid}/deliveries/{event_id}/redrive", tag = "webhooks", operation_id = "redriveWebhookDelivery",
    params(SessionPath, WebhookPath, ("event_id" = String, Path, description = "The event's id (`eventId` of a delivery attempt)")),
    responses(
        (status = 202, description = "Queued", body = RedriveBody),
    )
)]
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
    Ok(HttpResponse::Accepted().json(RedriveBody {
        event_id,
        queued: true,
    }))
}
