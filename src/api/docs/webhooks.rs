//! The `webhooks` section of the OpenAPI document: for every event a
//! receiver may get, the signed request wasup POSTs (Standard Webhooks
//! headers and the JSON envelope of `src/webhooks/render.rs`).

use std::collections::BTreeMap;

use serde::Serialize;
use utoipa::openapi::content::ContentBuilder;
use utoipa::openapi::path::{
    HttpMethod, OperationBuilder, Parameter, ParameterBuilder, ParameterIn, PathItem,
};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::response::{ResponseBuilder, ResponsesBuilder};
use utoipa::openapi::schema::{ObjectBuilder, SchemaFormat, Type};
use utoipa::openapi::{KnownFormat, Ref, Required};
use utoipa::{OpenApi, ToSchema};
use wasup_actors::model::SessionStatus;

/// One event: its name, the schema of its `data`, a summary, a description.
struct Event {
    name: &'static str,
    data: &'static str,
    summary: &'static str,
    description: &'static str,
}

/// Every event a receiver may get: the subscribable ones
/// (`wasup_actors::events::EVENT_NAMES`) and the test delivery.
const EVENTS: &[Event] = &[
    Event {
        name: "session.status",
        data: "SessionStatusData",
        summary: "A session's status changed",
        description: "Sent on every status transition of the session.",
    },
    Event {
        name: "session.qr",
        data: "SessionQrData",
        summary: "A new QR is shown",
        description: "Sent for every QR (they rotate while the session waits in `qr_ready`).",
    },
    Event {
        name: "session.authenticated",
        data: "SessionAuthenticatedData",
        summary: "A phone linked the session",
        description: "Sent when an account links the session (QR scanned or pairing code entered).",
    },
    Event {
        name: "session.disconnected",
        data: "SessionDisconnectedData",
        summary: "The session's connection closed",
        description: "Sent when the session disconnects, on purpose or not; `willRetry` says whether the supervisor restarts it.",
    },
    Event {
        name: "message.received",
        data: "MessageEventData",
        summary: "A message arrived",
        description: "Sent once per inbound message (live or drained after a reconnect), stored once per WhatsApp id. \
            OpenWA's field names; `from`/`chatId` in the `@c.us` form.",
    },
    Event {
        name: "message.sent",
        data: "MessageEventData",
        summary: "The account sent a message from its phone",
        description: "Sent for a message the account itself wrote on another of its devices (`fromMe` is true).",
    },
    Event {
        name: "message.ack",
        data: "MessageAckData",
        summary: "An outbound message moved on",
        description: "Sent when a message sent through wasup is acked by the server (`sent`), reaches the \
            recipient's phone (`delivered`) or is read (`read`); always in that order, a skipped step is sent too.",
    },
    Event {
        name: "message.failed",
        data: "MessageFailedData",
        summary: "An outbound message cannot be sent",
        description: "Sent when a message fails for good: WhatsApp refused it (e.g. the number is not on \
            WhatsApp) or it waited longer than `config.sending.queueTtlSeconds`.",
    },
    Event {
        name: "webhook.test",
        data: "WebhookTestData",
        summary: "A test delivery",
        description: "Sent once by `POST /api/sessions/{id}/webhooks/{wid}/test`, whatever the webhook's `events`; \
            never retried. Its `seq` is 0.",
    },
];

/// `data` of `session.status`.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
pub struct SessionStatusData {
    status: SessionStatus,
    previous_status: SessionStatus,
    /// Why the session failed: set only when `status` is `failed`.
    last_error: Option<String>,
}

/// `data` of `session.qr`.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
pub struct SessionQrData {
    /// The raw QR text; null when `expired`.
    #[schema(example = "2@Xk3…,…")]
    qr: Option<String>,
    /// The QR as a PNG data URL; null when `expired`.
    #[schema(example = "data:image/png;base64,iVBORw0KGgo…")]
    qr_code: Option<String>,
    /// When this QR stops working.
    #[schema(format = DateTime, example = "2026-06-25T09:01:00.000Z")]
    expires_at: String,
    /// The QR's life was over when this was sent (a newer QR or status
    /// superseded it, or `expiresAt` passed): a late delivery or a replay
    /// from the event log, without the QR.
    expired: bool,
}

/// `data` of `session.authenticated`.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
pub struct SessionAuthenticatedData {
    /// The linked account's number.
    #[schema(example = "628123456789")]
    phone: String,
    #[schema(example = "My Bot")]
    push_name: Option<String>,
}

/// `data` of `session.disconnected`.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
pub struct SessionDisconnectedData {
    /// Why the connection closed.
    #[schema(example = "connection lost")]
    reason: String,
    /// The supervisor will restart the session (at `nextRetryAt`).
    will_retry: bool,
    #[schema(format = DateTime, example = "2026-06-25T09:00:05.000Z")]
    next_retry_at: Option<String>,
}

/// `data` of `message.received` and `message.sent` (OpenWA's names).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
pub struct MessageEventData {
    #[schema(example = "3EB0019A2B3C4D5E6F708192")]
    id: String,
    #[schema(example = "628123456789@c.us")]
    from: String,
    #[schema(example = "628111111111@c.us")]
    to: String,
    #[schema(example = "628123456789@c.us")]
    chat_id: String,
    #[schema(example = "Hello")]
    body: String,
    /// `chat` for text.
    #[serde(rename = "type")]
    #[schema(example = "chat")]
    kind: String,
    /// WhatsApp's time, seconds since the Unix epoch.
    #[schema(example = 1782378000)]
    timestamp: i64,
    from_me: bool,
    is_group: bool,
    /// The participant who wrote it, in a group.
    author: Option<String>,
    push_name: Option<String>,
    /// Contacts the text mentions.
    #[schema(example = json!(["628123456789@c.us"]))]
    mentioned_ids: Vec<String>,
    /// The message this one replies to.
    #[schema(example = "3EB0019A2B3C4D5E6F708191")]
    quoted_message_id: Option<String>,
}

/// `data` of `message.ack`.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
pub struct MessageAckData {
    #[schema(example = "3EB0019A2B3C4D5E6F708192")]
    message_id: String,
    #[schema(example = "628123456789@c.us")]
    chat_id: String,
    /// `sent`, `delivered` or `read`.
    #[schema(example = "delivered")]
    status: String,
    #[schema(format = DateTime, example = "2026-06-25T09:00:01.000Z")]
    at: String,
}

/// `data` of `message.failed`.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
pub struct MessageFailedData {
    #[schema(example = "3EB0019A2B3C4D5E6F708192")]
    message_id: String,
    #[schema(example = "628123456789@c.us")]
    chat_id: String,
    #[schema(example = "the recipient is not on WhatsApp (server error 404)")]
    error: String,
    #[schema(format = DateTime, example = "2026-06-25T09:00:01.000Z")]
    at: String,
}

/// `data` of `webhook.test`.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
pub struct WebhookTestData {
    /// Always true.
    test: bool,
}

/// The data schemas, merged into the document's components.
#[derive(OpenApi)]
#[openapi(components(schemas(
    SessionStatusData,
    SessionQrData,
    SessionAuthenticatedData,
    SessionDisconnectedData,
    MessageEventData,
    MessageAckData,
    MessageFailedData,
    WebhookTestData,
)))]
pub struct Schemas;

/// `session.status` → `SessionStatusEvent`.
fn envelope_name(event: &str) -> String {
    event
        .split(['.', '_'])
        .map(|word| {
            let mut chars = word.chars();
            chars.next().map_or_else(String::new, |first| {
                first.to_uppercase().chain(chars).collect::<String>()
            })
        })
        .chain(["Event".to_string()])
        .collect()
}

fn string(description: &str, example: &str) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(description))
        .examples([example])
}

/// The body of a delivery of `event` (its `event` and `data` made precise).
fn envelope(event: &Event) -> utoipa::openapi::Schema {
    ObjectBuilder::new()
        .description(Some(format!("The body of a `{}` delivery.", event.name)))
        .property(
            "id",
            string(
                "The event's id (also `webhook-id`): time-ordered, stable across retries. Deduplicate on it.",
                "evt_0197a4f2c1b27e3c9d4a5b6c7d8e9f01",
            ),
        )
        .required("id")
        .property(
            "event",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some([event.name])),
        )
        .required("event")
        .property(
            "timestamp",
            string("When the event happened.", "2026-06-25T09:00:00.000Z")
                .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime))),
        )
        .required("timestamp")
        .property(
            "sessionId",
            string("The session's id.", "8f3c2b1a-9d4e-4c7a-8b2f-1e6d5a4c3b2a")
                .format(Some(SchemaFormat::KnownFormat(KnownFormat::Uuid))),
        )
        .required("sessionId")
        .property("sessionName", string("The session's name.", "my-bot"))
        .required("sessionName")
        .property(
            "seq",
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
                .minimum(Some(0))
                .description(Some(
                    "Increases by one per event of the session: order and deduplicate on it.",
                ))
                .examples([17]),
        )
        .required("seq")
        .property("data", Ref::from_schema_name(event.data))
        .required("data")
        .into()
}

/// Add one envelope schema per event to the document's components.
pub fn add_envelope_schemas(doc: &mut utoipa::openapi::OpenApi) {
    let components = doc.components.get_or_insert_with(Default::default);
    for event in EVENTS {
        components
            .schemas
            .insert(envelope_name(event.name), envelope(event).into());
    }
}

fn header(name: &str, description: &str, schema: ObjectBuilder) -> Parameter {
    ParameterBuilder::new()
        .name(name)
        .parameter_in(ParameterIn::Header)
        .required(Required::True)
        .description(Some(description))
        .schema(Some(schema))
        .build()
}

/// The headers of every delivery (Standard Webhooks, plus two of wasup's).
fn headers(event: &Event) -> Vec<Parameter> {
    vec![
        header(
            "webhook-id",
            "The event's id (`id` in the body), the same on every attempt.",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .examples(["evt_0197a4f2c1b27e3c9d4a5b6c7d8e9f01"]),
        ),
        header(
            "webhook-timestamp",
            "When this attempt was signed, in Unix seconds. Refuse ones too far from now.",
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
                .examples([1_782_378_000]),
        ),
        header(
            "webhook-signature",
            "`v1,` then the base64 HMAC-SHA256 of `{webhook-id}.{webhook-timestamp}.{body}`, keyed \
             with the base64-decoded part of the webhook's `whsec_…` secret (Standard Webhooks).",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some("^v1,[A-Za-z0-9+/]+=*$"))
                .examples(["v1,K5oZfzN95Z9UVu1EsfQmfVNQhnkZ2pj9o9NDN/H/pI4="]),
        ),
        header(
            "X-Wasup-Event",
            "The event's name (`event` in the body).",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some([event.name])),
        ),
        header(
            "X-Wasup-Attempt",
            "Which attempt this is, from 1.",
            ObjectBuilder::new().schema_type(Type::Integer).minimum(Some(1)),
        ),
    ]
}

const DELIVERY: &str =
    "\n\nwasup POSTs the event, signed per the Standard Webhooks specification, \
to the webhook's `url`, with its custom `headers` (which never override these). Any answer \
but 2xx, a timeout (10 s) or a network error is retried with exponential backoff from 1 s \
(full jitter, at most 10 min apart, `Retry-After` honoured) up to the webhook's `maxAttempts`; \
then the event is dead-lettered (listed in its deliveries, redrivable). Redirects are not \
followed. Delivery is at least once: deduplicate on `webhook-id`, order on `seq`.";

/// The `webhooks` section: one POST per event.
pub fn section() -> BTreeMap<String, PathItem> {
    EVENTS
        .iter()
        .map(|event| {
            let body = RequestBodyBuilder::new()
                .required(Some(Required::True))
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name(envelope_name(event.name))))
                        .build(),
                )
                .build();
            let responses = ResponsesBuilder::new()
                .response(
                    "2XX",
                    ResponseBuilder::new().description("Received: the event is delivered."),
                )
                .response(
                    "default",
                    ResponseBuilder::new()
                        .description("Anything else: the attempt failed and is retried."),
                )
                .build();
            let operation = OperationBuilder::new()
                .tag("webhook events")
                .summary(Some(event.summary))
                .description(Some(format!("{}{DELIVERY}", event.description)))
                .operation_id(Some(format!("on_{}", event.name.replace('.', "_"))))
                .parameters(Some(headers(event)))
                .request_body(Some(body))
                .responses(responses)
                .build();
            (
                event.name.to_string(),
                PathItem::new(HttpMethod::Post, operation),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::webhooks::render;
    use serde_json::Value;
    use wasup_actors::events::{self, session_event::Data, SessionEvent};
    use wasup_actors::webhook::WebhookPayload;

    #[test]
    fn every_subscribable_event_is_described() {
        for name in events::EVENT_NAMES {
            assert!(
                EVENTS.iter().any(|e| e.name == *name),
                "{name} has no entry"
            );
        }
        assert_eq!(envelope_name("session.status"), "SessionStatusEvent");
        assert_eq!(envelope_name("webhook.test"), "WebhookTestEvent");
    }

    fn keys(value: &Value) -> Vec<String> {
        let mut keys: Vec<String> = value.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        keys
    }

    fn schema_keys(doc: &Value, name: &str) -> Vec<String> {
        keys(&doc["components"]["schemas"][name]["properties"])
    }

    /// The schemas name exactly the fields render.rs sends.
    #[test]
    fn schemas_match_the_rendered_bodies() {
        let doc: Value = serde_json::to_value(crate::api::docs::openapi()).unwrap();
        let event = |data| {
            WebhookPayload::Event(SessionEvent {
                id: "evt_1".into(),
                session_id: "s-1".into(),
                session_name: "bot".into(),
                seq: 1,
                timestamp_ms: 1_750_842_000_000,
                data: Some(data),
            })
        };
        let payloads = [
            event(Data::Status(events::StatusChanged {
                status: "ready".into(),
                previous_status: "authenticating".into(),
                last_error: None,
            })),
            event(Data::Qr(events::QrRotated {
                qr: "2@abc".into(),
                expires_at_ms: 1_750_842_060_000,
                expired: false,
            })),
            event(Data::Authenticated(events::Authenticated {
                phone: "628123456789".into(),
                push_name: None,
            })),
            event(Data::Disconnected(events::Disconnected {
                reason: "drop".into(),
                will_retry: true,
                next_retry_at_ms: None,
            })),
            event(Data::MessageReceived(events::MessageData {
                id: "3EB0".into(),
                r#type: "chat".into(),
                ..Default::default()
            })),
            event(Data::MessageAck(events::MessageAck {
                message_id: "3EB0".into(),
                chat_id: "1@c.us".into(),
                status: "read".into(),
                at_ms: 1,
            })),
            event(Data::MessageFailed(events::MessageFailed {
                message_id: "3EB0".into(),
                chat_id: "1@c.us".into(),
                error: "x".into(),
                at_ms: 1,
            })),
            WebhookPayload::Test {
                session_id: uuid::Uuid::nil(),
                session_name: "bot".into(),
            },
        ];
        for payload in payloads {
            let rendered = render::envelope(&payload).unwrap();
            let body: Value = serde_json::from_slice(&rendered.body).unwrap();
            let described = EVENTS.iter().find(|e| e.name == rendered.event).unwrap();
            let envelope = envelope_name(described.name);
            assert_eq!(keys(&body), schema_keys(&doc, &envelope), "{envelope}");
            assert_eq!(
                keys(&body["data"]),
                schema_keys(&doc, described.data),
                "{}",
                described.data
            );
        }
    }
}
