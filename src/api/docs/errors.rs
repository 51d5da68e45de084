//! The error responses of the OpenAPI document, generated from the code
//! table (`wasup_actors::ErrorCode`): an operation names the codes it may
//! answer (in the route table, `super::super::routes`); each status becomes
//! one response that names its codes and what they mean, with an example
//! body per code built from a real error. No code is spelled here.

use serde_json::json;
use utoipa::openapi::content::ContentBuilder;
use utoipa::openapi::example::ExampleBuilder;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::Ref;
use wasup_actors::keys::AuthError;
use wasup_actors::model::Role;
use wasup_actors::{ErrorCode, WebError};

use crate::api::error::ApiError;
use ErrorCode::*;

/// No usable API key.
/// `TooManyRequests`: the address presented too many invalid keys (auth_limit.rs).
/// The last two: the dashboard's cookie instead of a key (dashboard/signin.rs).
pub const KEY: &[ErrorCode] = &[
    MissingApiKey,
    InvalidApiKey,
    ApiKeyRevoked,
    ApiKeyExpired,
    TooManyRequests,
    DashboardSessionInvalid,
    CsrfRejected,
];
/// A route on one session: the key may not reach it, or it does not exist.
pub const SESSION: &[ErrorCode] = &[SessionNotInScope, SessionNotFound];
/// A webhook of a session (besides `SESSION`).
pub const WEBHOOK: &[ErrorCode] = &[WebhookNotFound];
/// An operation that needs more than the viewer role.
pub const ROLE: &[ErrorCode] = &[InsufficientRole];
/// A JSON body.
pub const BODY: &[ErrorCode] = &[
    InvalidJson,
    InvalidBody,
    UnknownField,
    ValidationFailed,
    PayloadTooLarge,
];
/// Anything that reaches the actors.
pub const UNAVAILABLE: &[ErrorCode] = &[ServiceUnavailable, ShuttingDown, OwnerUnavailable];

/// An error of each code, as the gateway would answer it (the examples).
fn samples() -> Vec<ApiError> {
    let key = "0197a4f2-c1b2-7e3c-9d4a-5b6c7d8e9f01";
    let web = [
        WebError::unknown_session("my-bot"),
        WebError::SessionNameTaken("my-bot".into()),
        WebError::SessionAlreadyStarted("my-bot".into()),
        WebError::SessionNotInScope("my-bot".into()),
        WebError::InsufficientRole(Role::Operator),
        WebError::ApiKeyNotFound(key.into()),
        WebError::WebhookNotFound(key.into()),
        WebError::DeliveryNotFound("evt_0197a4f2c1b27e3c9d4a5b6c7d8e9f01".into()),
        WebError::DeliveryPending("evt_0197a4f2c1b27e3c9d4a5b6c7d8e9f01".into()),
        WebError::Unavailable("The database is unavailable; try again later".into()),
        WebError::ShuttingDown,
        wasup_actors::webhook::too_many_test_sends(),
        wasup_actors::limits::Limits::default()
            .check_webhooks(10)
            .expect_err("at the limit"),
    ];
    let auth = [
        AuthError::Missing,
        AuthError::Invalid,
        AuthError::Revoked,
        AuthError::Expired,
    ];
    let mut samples: Vec<ApiError> = web.into_iter().map(ApiError::from).collect();
    samples.extend(auth.into_iter().map(ApiError::from));
    samples.extend([
        crate::api::json::parse::<serde_json::Map<String, serde_json::Value>>(b"{")
            .expect_err("not JSON"),
        crate::api::json::parse::<Sample>(br#"{"nmae":"my-bot"}"#).expect_err("unknown field"),
        crate::api::json::parse::<Sample>(b"{}").expect_err("no name"),
        ApiError::body_too_large(1024 * 1024),
        ApiError::unknown_route("GET", "/api/docs/nope.js"),
        ApiError::metrics_token(false),
        ApiError::metrics_token(true),
    ]);
    samples.extend(crate::api::dashboard::signin::error_samples());
    samples.push(ApiError::owner_unavailable(
        "The node that owns this session (http://10.0.0.2:2785) did not answer; retry shortly",
        15,
    ));
    samples.push(ApiError::node_not_found("node-b"));
    #[cfg(feature = "simulator")]
    samples.push(ApiError::no_embedded_simulator());
    samples
}

/// A body with one field, to show serde's complaints.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct Sample {
    name: String,
}

/// The error responses of an operation that may answer `codes`: one per
/// status, in status order.
pub fn responses(codes: &[ErrorCode]) -> Vec<(String, Response)> {
    let samples = samples();
    let mut statuses: Vec<u16> = codes.iter().map(|c| c.status()).collect();
    statuses.sort_unstable();
    statuses.dedup();
    statuses
        .into_iter()
        .map(|status| {
            let these: Vec<ErrorCode> = codes
                .iter()
                .copied()
                .filter(|c| c.status() == status)
                .collect();
            (status.to_string(), response(&these, &samples))
        })
        .collect()
}

/// One status's response: the error body, its codes described, examples.
fn response(codes: &[ErrorCode], samples: &[ApiError]) -> Response {
    let described: Vec<String> = codes
        .iter()
        .map(|c| format!("`{}`: {}", c.as_str(), c.meaning()))
        .collect();
    let examples = codes.iter().filter_map(|&code| {
        let sample = samples.iter().find(|s| s.code == code)?;
        let status = sample.status();
        let body = json!({
            "statusCode": status.as_u16(),
            "error": status.canonical_reason().unwrap_or("Error"),
            "code": code.as_str(),
            "message": sample.message,
        });
        Some((
            code.as_str(),
            ExampleBuilder::new().value(Some(body)).build(),
        ))
    });
    let mut builder = ResponseBuilder::new();
    if codes
        .iter()
        .any(|c| c.status() == 429 || *c == OwnerUnavailable)
    {
        builder = builder.header(
            "Retry-After",
            HeaderBuilder::new()
                .schema(ObjectBuilder::new().schema_type(Type::Integer))
                .description(Some("Seconds to wait before retrying"))
                .build(),
        );
    }
    builder
        .description(described.join("; "))
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorBody")))
                .examples_from_iter(examples)
                .build(),
        )
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_lists_its_codes_with_their_meaning() {
        let responses = responses(&[SessionNotFound, MissingApiKey, WebhookNotFound]);
        let statuses: Vec<&str> = responses.iter().map(|(s, _)| s.as_str()).collect();
        assert_eq!(statuses, ["401", "404"]);
        let not_found = &responses[1].1;
        assert_eq!(
            not_found.description,
            format!(
                "`{}`: {}; `{}`: {}",
                SessionNotFound.as_str(),
                SessionNotFound.meaning(),
                WebhookNotFound.as_str(),
                WebhookNotFound.meaning()
            )
        );
    }

    #[test]
    fn samples_have_the_code_they_show() {
        // Each sample is the first of its code, and the body parses that
        // intended: the JSON samples are what json.rs answers.
        let samples = samples();
        let codes: Vec<ErrorCode> = samples.iter().map(|s| s.code).collect();
        for code in [InvalidJson, UnknownField, ValidationFailed, MissingApiKey] {
            assert_eq!(codes.iter().filter(|c| **c == code).count(), 1, "{code}");
        }
    }
}
