//! The API's one error type, and the one place where every lower-layer error
//! becomes the contract's error body: `{"statusCode":404,"error":"Not Found",
//! "code":…,"message":"…"}`. The code (and so the status) comes from the
//! table `wasup_actors::ErrorCode`; the lower layers say which code they are.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;
use wasup_actors::keys::AuthError;
use wasup_actors::{ErrorCode, WebError};

#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    /// Sent as `Retry-After` (seconds): when the caller may try again.
    pub retry_after_secs: Option<u64>,
}

/// The body of every error answer.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({"statusCode": ErrorCode::SessionNotFound.status(), "error": "Not Found",
    "code": ErrorCode::SessionNotFound.as_str(), "message": WebError::unknown_session_id("x").to_string()}))]
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
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
            retry_after_secs: None,
        }
    }

    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.code.status()).expect("the code table holds HTTP statuses")
    }

    pub fn validation(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::ValidationFailed, message)
    }

    pub fn unknown_route(method: &str, path: &str) -> Self {
        Self::new(
            ErrorCode::RouteNotFound,
            format!("Route {method} {path} does not exist"),
        )
    }

    pub fn wrong_method(method: &str, path: &str) -> Self {
        Self::new(
            ErrorCode::MethodNotAllowed,
            format!("Method {method} is not allowed on {path}"),
        )
    }

    pub fn body_too_large(limit: usize) -> Self {
        Self::new(
            ErrorCode::PayloadTooLarge,
            format!("The request body is larger than the limit of {limit} bytes"),
        )
    }

    /// `GET /metrics` without the `WASUP_METRICS_TOKEN` bearer (`presented`:
    /// whether some other token was sent).
    pub fn metrics_token(presented: bool) -> Self {
        if presented {
            Self::new(
                ErrorCode::InvalidMetricsToken,
                "The metrics token is not valid",
            )
        } else {
            Self::new(
                ErrorCode::MissingMetricsToken,
                "A metrics token is required: send Authorization: Bearer <WASUP_METRICS_TOKEN>",
            )
        }
    }

    /// The embedded simulator's control routes, on a gateway that talks to
    /// a simulator process instead.
    #[cfg(feature = "simulator")]
    pub fn no_embedded_simulator() -> Self {
        Self::new(
            ErrorCode::SimulatorNotEmbedded,
            "This gateway talks to a simulator process (WASUP_SIMULATOR_URL): use its own control API",
        )
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.code.status(), self.code, self.message)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status()
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status();
        let mut response = HttpResponse::build(status);
        if let Some(secs) = self.retry_after_secs {
            response.insert_header((actix_web::http::header::RETRY_AFTER, secs));
        }
        response.json(ErrorBody {
            status_code: status.as_u16(),
            error: status.canonical_reason().unwrap_or("Error"),
            code: self.code.as_str(),
            message: &self.message,
        })
    }
}

impl From<WebError> for ApiError {
    fn from(err: WebError) -> Self {
        let retry_after_secs = match err {
            WebError::TooManyRequests {
                retry_after_secs, ..
            } => Some(retry_after_secs),
            _ => None,
        };
        ApiError {
            retry_after_secs,
            ..ApiError::new(err.code(), err.to_string())
        }
    }
}

impl From<AuthError> for ApiError {
    fn from(err: AuthError) -> Self {
        ApiError::new(err.code(), err.to_string())
    }
}

impl From<actix::MailboxError> for ApiError {
    fn from(_: actix::MailboxError) -> Self {
        ApiError::new(
            ErrorCode::ServiceUnavailable,
            "The gateway is not accepting work right now; retry shortly",
        )
    }
}

#[cfg(feature = "simulator")]
impl From<crate::simulator::SimError> for ApiError {
    fn from(err: crate::simulator::SimError) -> Self {
        use crate::simulator::SimError::*;
        let code = match &err {
            QrMalformed(_) => ErrorCode::QrMalformed,
            InvalidPhone | InvalidFault(_) => ErrorCode::ValidationFailed,
            WrongCode(_) => ErrorCode::PairingCodeRejected,
            QrExpiredOrUnknown => ErrorCode::QrExpired,
            NoPendingCode(_) => ErrorCode::NoPendingPairingCode,
            NoSuchPhone => ErrorCode::PhoneNotFound,
            NoSuchDevice => ErrorCode::DeviceNotFound,
            NotConnected | ConnectionGone => ErrorCode::SessionNotConnected,
            LinkRejected(_) => ErrorCode::LinkRejected,
            LinkTimeout => ErrorCode::LinkTimeout,
            Storage(_) => ErrorCode::SimulatorUnavailable,
        };
        ApiError::new(code, err.to_string())
    }
}
