//! The API's one error type, and the one place where every lower-layer error
//! becomes the contract's error body:
//! `{"statusCode":404,"error":"Not Found","code":"session_not_found","message":"…"}`.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;
use wasup_actors::keys::AuthError;
use wasup_actors::WebError;

#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

/// The body of every error answer.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({"statusCode": 404, "error": "Not Found", "code": "session_not_found",
    "message": "Session with id 'x' not found"}))]
pub struct ErrorBody<'a> {
    /// The HTTP status.
    status_code: u16,
    /// The HTTP reason phrase.
    error: &'a str,
    /// Stable snake_case identifier of the error.
    code: &'a str,
    /// One sentence a person can act on; validation errors name the field and the rule.
    message: &'a str,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn validation(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "validation_failed", message)
    }

    pub fn route_not_found(method: &str, path: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "route_not_found",
            format!("Route {method} {path} does not exist"),
        )
    }

    pub fn method_not_allowed(method: &str, path: &str) -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("Method {method} is not allowed on {path}"),
        )
    }

    /// `GET /metrics` without the `WASUP_METRICS_TOKEN` bearer (`presented`:
    /// whether some other token was sent).
    pub fn metrics_token(presented: bool) -> Self {
        if presented {
            Self::new(
                StatusCode::UNAUTHORIZED,
                "invalid_metrics_token",
                "The metrics token is not valid",
            )
        } else {
            Self::new(
                StatusCode::UNAUTHORIZED,
                "missing_metrics_token",
                "A metrics token is required: send Authorization: Bearer <WASUP_METRICS_TOKEN>",
            )
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.code,
            self.message
        )
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        HttpResponse::build(self.status).json(ErrorBody {
            status_code: self.status.as_u16(),
            error: self.status.canonical_reason().unwrap_or("Error"),
            code: self.code,
            message: &self.message,
        })
    }
}

impl From<WebError> for ApiError {
    fn from(err: WebError) -> Self {
        let message = err.to_string();
        let (status, code) = match err {
            WebError::SessionNotFound(_) => (StatusCode::NOT_FOUND, "session_not_found"),
            WebError::SessionNameTaken(_) => (StatusCode::CONFLICT, "session_name_taken"),
            WebError::SessionAlreadyStarted(_) => {
                (StatusCode::BAD_REQUEST, "session_already_started")
            }
            WebError::QrNotAvailable(_) => (StatusCode::BAD_REQUEST, "qr_not_available"),
            WebError::PairingCodeNotAvailable(_) => {
                (StatusCode::BAD_REQUEST, "pairing_code_not_available")
            }
            WebError::SessionNotInScope(_) => (StatusCode::UNAUTHORIZED, "session_not_in_scope"),
            WebError::InsufficientRole(_) => (StatusCode::FORBIDDEN, "insufficient_role"),
            WebError::ScopeForbidden(_) => (StatusCode::FORBIDDEN, "scope_forbidden"),
            WebError::ApiKeyNotFound(_) => (StatusCode::NOT_FOUND, "api_key_not_found"),
            WebError::Validation(_) => (StatusCode::BAD_REQUEST, "validation_failed"),
            // WhatsApp refused an operation on a healthy request: the caller
            // can retry, nothing in the gateway broke.
            WebError::Engine(_) => (StatusCode::CONFLICT, "engine_rejected"),
            WebError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "service_unavailable"),
            WebError::WebhookNotFound(_) => (StatusCode::NOT_FOUND, "webhook_not_found"),
            WebError::WebhookUrlNotAllowed(_) => {
                (StatusCode::BAD_REQUEST, "webhook_url_not_allowed")
            }
            WebError::DeliveryNotFound(_) => (StatusCode::NOT_FOUND, "delivery_not_found"),
            WebError::DeliveryPending(_) => (StatusCode::CONFLICT, "delivery_already_queued"),
            WebError::ShuttingDown => (StatusCode::SERVICE_UNAVAILABLE, "shutting_down"),
        };
        ApiError::new(status, code, message)
    }
}

impl From<AuthError> for ApiError {
    fn from(err: AuthError) -> Self {
        let code = match err {
            AuthError::Missing => "missing_api_key",
            AuthError::Invalid => "invalid_api_key",
            AuthError::Revoked => "api_key_revoked",
            AuthError::Expired => "api_key_expired",
        };
        ApiError::new(StatusCode::UNAUTHORIZED, code, err.to_string())
    }
}

impl From<actix::MailboxError> for ApiError {
    fn from(_: actix::MailboxError) -> Self {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "service_unavailable",
            "The gateway is not accepting work right now; retry shortly",
        )
    }
}

#[cfg(feature = "simulator")]
impl From<crate::simulator::SimError> for ApiError {
    fn from(err: crate::simulator::SimError) -> Self {
        use crate::simulator::SimError::*;
        let (status, code) = match &err {
            QrMalformed(_) => (StatusCode::BAD_REQUEST, "qr_malformed"),
            InvalidPhone | InvalidFault(_) => (StatusCode::BAD_REQUEST, "validation_failed"),
            WrongCode(_) => (StatusCode::BAD_REQUEST, "pairing_code_rejected"),
            QrExpiredOrUnknown => (StatusCode::NOT_FOUND, "qr_expired"),
            NoPendingCode(_) => (StatusCode::NOT_FOUND, "no_pending_pairing_code"),
            NoSuchPhone => (StatusCode::NOT_FOUND, "phone_not_found"),
            NoSuchDevice => (StatusCode::NOT_FOUND, "device_not_found"),
            NotConnected | ConnectionGone => (StatusCode::CONFLICT, "session_not_connected"),
            LinkRejected(_) => (StatusCode::CONFLICT, "link_rejected"),
            LinkTimeout => (StatusCode::CONFLICT, "link_timeout"),
            Storage(_) => (StatusCode::SERVICE_UNAVAILABLE, "simulator_unavailable"),
        };
        ApiError::new(status, code, err.to_string())
    }
}
