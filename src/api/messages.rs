//! Message and contact routes (issue 11). Each handler: extract, send one
//! message to the `OutboundActor`, shape the answer. A body is returned only
//! to callers that may read the session; it is never logged.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use wasup_actors::outbound::api::*;
use wasup_actors::outbound::{openwa_id, MessageRecord};

use super::auth::Auth;
use super::error::ApiError;
use super::json::Body;
use super::sessions::SessionPath;
use super::time::iso;
use super::AppState;

type Data = web::Data<AppState>;

/// `POST /api/sessions/:id/messages/send-text` (OpenWA's shape).
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(as = SendTextRequest)]
pub struct SendTextRequest {
    /// `<digits>@c.us`, `<digits>@s.whatsapp.net`, `<id>@g.us`, `<digits>@lid`
    /// or the phone number's digits.
    #[schema(example = "628123456789@c.us")]
    chat_id: String,
    /// 1–4096 characters.
    #[schema(example = "Hello from wasup")]
    text: String,
    /// Contacts the text mentions (`<digits>@c.us`, `<digits>@lid` or
    /// digits; at most 1024). WhatsApp highlights them where the text has
    /// `@<digits>`.
    #[serde(default)]
    #[schema(example = json!(["628123456789@c.us"]))]
    mentions: Option<Vec<String>>,
    /// A stored message of this session (either direction) to reply to: the
    /// recipient sees it quoted above the text.
    #[serde(default)]
    #[schema(example = "3EB0019A2B3C4D5E6F708191")]
    quoted_message_id: Option<String>,
}

/// The answer to send-text: what the OpenWA SDK reads.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = SentText)]
pub struct SentBody {
    /// The WhatsApp message id, chosen at acceptance and kept across retries.
    #[schema(example = "3EB0019A2B3C4D5E6F708192")]
    message_id: String,
    /// Acceptance time, seconds since the Unix epoch.
    #[schema(example = 1782378000)]
    timestamp: i64,
}

/// A stored message.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = Message)]
pub struct MessageBody {
    #[schema(example = "3EB0019A2B3C4D5E6F708192")]
    id: String,
    #[schema(format = Uuid)]
    session_id: String,
    /// The chat in OpenWA's form (`<digits>@c.us`, `<id>@g.us`, `<id>@lid`).
    #[schema(example = "628123456789@c.us")]
    chat_id: String,
    /// `out` (sent by wasup) or `in` (received, or sent from the account's phone).
    #[schema(example = "out")]
    direction: &'static str,
    body: String,
    /// `chat` for text.
    #[serde(rename = "type")]
    #[schema(example = "chat")]
    kind: String,
    /// `pending`, `sent`, `delivered`, `read`, `failed` (outbound) or `received`.
    #[schema(example = "delivered")]
    status: &'static str,
    /// Why it failed (`failed` only).
    error: Option<String>,
    from_me: bool,
    /// The author in a group, or the sender of an inbound message.
    author: Option<String>,
    push_name: Option<String>,
    /// Contacts the text mentions.
    #[schema(example = json!(["628123456789@c.us"]))]
    mentioned_ids: Vec<String>,
    /// The message this one replies to.
    quoted_message_id: Option<String>,
    /// WhatsApp's time (inbound) or the acceptance time, epoch seconds.
    timestamp: i64,
    #[schema(format = DateTime, example = "2026-06-25T09:00:00.000Z")]
    created_at: String,
    #[schema(format = DateTime, example = "2026-06-25T09:00:01.000Z")]
    updated_at: String,
}

impl From<&MessageRecord> for MessageBody {
    fn from(m: &MessageRecord) -> Self {
        MessageBody {
            id: m.id.clone(),
            session_id: m.session_id.to_string(),
            chat_id: openwa_id(&m.chat_id),
            direction: m.direction.as_str(),
            body: m.body.clone(),
            kind: m.kind.clone(),
            status: m.status.as_str(),
            error: m.error.clone(),
            from_me: m.from_me,
            author: m.sender.as_deref().map(openwa_id),
            push_name: m.push_name.clone(),
            mentioned_ids: m.context.mentioned_ids(),
            quoted_message_id: m.context.quoted_id(),
            timestamp: m.timestamp.timestamp(),
            created_at: iso(m.created_at),
            updated_at: iso(m.updated_at),
        }
    }
}

/// `GET /api/sessions/:id/contacts/check/:number`.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = NumberCheck)]
pub struct CheckBody {
    /// The digits asked about.
    #[schema(example = "628123456789")]
    number: String,
    exists: bool,
    /// `<digits>@c.us` when it exists, else null.
    #[schema(example = "628123456789@c.us")]
    whatsapp_id: Option<String>,
}

#[derive(Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only this chat (any accepted chat id form).
    chat_id: Option<String>,
    /// `in` or `out`.
    direction: Option<String>,
    /// 1–500, default 50.
    limit: Option<String>,
    /// A message id: only messages older than it (the next page).
    before: Option<String>,
}

/// The `{messageId}` of a message route (after its session's `{id}`).
#[derive(IntoParams)]
#[into_params(parameter_in = Path, rename_all = "camelCase")]
#[allow(dead_code)]
pub struct MessagePath {
    /// WhatsApp message id
    message_id: String,
}

/// The `{number}` of the number check.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
pub struct NumberPath {
    /// A phone number with country code (digits; `+`, spaces and dashes are dropped)
    number: String,
}

/// Send a text message
///
/// Role: operator. A 201 means the message is stored and queued: it goes out
/// paced (`config.sending`) while the session is ready, keeps its id across
/// retries and restarts, and its progress shows in `GET …/messages/{messageId}`
/// and the `message.ack` / `message.failed` events. With an `Idempotency-Key`
/// header (1–200 visible characters), a repeat of the request answers the
/// first message and sends nothing.
#[utoipa::path(post, path = "/api/sessions/{id}/messages/send-text", tag = "messages", operation_id = "sendText",
    params(SessionPath,
        ("Idempotency-Key" = Option<String>, Header, description = "Makes a retried request return the first answer")),
    request_body = SendTextRequest,
    responses(
        (status = 201, description = "Accepted and queued", body = SentBody),
    )
)]
pub async fn send_text(
    state: Data,
    Auth(caller): Auth,
    id: web::Path<String>,
    req: HttpRequest,
    Body(body): Body<SendTextRequest>,
) -> Result<HttpResponse, ApiError> {
    let idempotency_key = match req.headers().get("idempotency-key") {
        None => None,
        Some(v) => Some(
            v.to_str()
                .map_err(|_| ApiError::validation("Idempotency-Key must be visible ASCII"))?
                .to_string(),
        ),
    };
    let m = state
        .messages
        .send(SendText {
            caller,
            session: id.into_inner(),
            chat_id: body.chat_id,
            text: body.text,
            mentions: body.mentions.unwrap_or_default(),
            quoted_message_id: body.quoted_message_id,
            idempotency_key,
        })
        .await??;
    Ok(HttpResponse::Created().json(SentBody {
        message_id: m.id,
        timestamp: m.created_at.timestamp(),
    }))
}

/// List messages
///
/// Any role. Newest first; page with `before` (the last id of a page).
#[utoipa::path(get, path = "/api/sessions/{id}/messages", tag = "messages", operation_id = "listMessages",
    params(SessionPath, ListQuery),
    responses(
        (status = 200, description = "The messages", body = Vec<MessageBody>),
    )
)]
pub async fn list(
    state: Data,
    Auth(caller): Auth,
    id: web::Path<String>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let query = web::Query::<ListQuery>::from_query(req.query_string()).map_err(|_| {
        ApiError::validation(
            "Query parameters 'chatId', 'direction', 'limit' and 'before' are the only ones accepted",
        )
    })?;
    let query = query.into_inner();
    let limit = query
        .limit
        .as_deref()
        .map(|n| {
            n.parse::<usize>()
                .map_err(|_| ApiError::validation("Query parameter 'limit' must be 1–500"))
        })
        .transpose()?;
    let messages = state
        .messages
        .send(ListMessages {
            caller,
            session: id.into_inner(),
            chat_id: query.chat_id,
            direction: query.direction,
            limit,
            before: query.before,
        })
        .await??;
    Ok(HttpResponse::Ok().json(messages.iter().map(MessageBody::from).collect::<Vec<_>>()))
}

/// Get a message
///
/// Any role. Its status: `pending → sent → delivered → read`, or `failed` with `error`.
#[utoipa::path(get, path = "/api/sessions/{id}/messages/{messageId}", tag = "messages", operation_id = "getMessage",
    params(SessionPath, MessagePath),
    responses(
        (status = 200, description = "The message", body = MessageBody),
    )
)]
pub async fn get(
    state: Data,
    Auth(caller): Auth,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (session, id) = path.into_inner();
    let m = state
        .messages
        .send(GetMessage {
            caller,
            session,
            id,
        })
        .await??;
    Ok(HttpResponse::Ok().json(MessageBody::from(&m)))
}

/// Cancel a pending message
///
/// Role: operator. Only a message still waiting in the queue; 409 once it is sent.
#[utoipa::path(delete, path = "/api/sessions/{id}/messages/{messageId}", tag = "messages", operation_id = "cancelMessage",
    params(SessionPath, MessagePath),
    responses(
        (status = 204, description = "Cancelled: it will not be sent"),
    )
)]
pub async fn cancel(
    state: Data,
    Auth(caller): Auth,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (session, id) = path.into_inner();
    state
        .messages
        .send(CancelMessage {
            caller,
            session,
            id,
        })
        .await??;
    Ok(HttpResponse::NoContent().finish())
}

/// Check a number
///
/// Role: operator. Asks WhatsApp whether the number has an account; the
/// session must be ready.
#[utoipa::path(get, path = "/api/sessions/{id}/contacts/check/{number}", tag = "messages", operation_id = "checkNumber",
    params(SessionPath, NumberPath),
    responses(
        (status = 200, description = "The answer", body = CheckBody),
    )
)]
pub async fn check_number(
    state: Data,
    Auth(caller): Auth,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (session, number) = path.into_inner();
    let c = state
        .messages
        .send(CheckNumber {
            caller,
            session,
            number,
        })
        .await??;
    Ok(HttpResponse::Ok().json(CheckBody {
        number: c.number,
        exists: c.jid.is_some(),
        whatsapp_id: c.jid.as_deref().map(openwa_id),
    }))
}
