//! The error-code table (`ErrorCode`: every code the API answers with, its
//! HTTP status and what it means) and the error enum of the actors layer,
//! whose variants say which code they are. The API layer turns both into the
//! contract's error body in one place (src/api/error.rs) and documents them
//! from the same table (src/api/docs/errors.rs).

use crate::model::Role;

/// Declares `ErrorCode` from its table: variant, HTTP status, stable
/// snake_case name, and what it means (for the OpenAPI document).
macro_rules! error_codes {
    ($($variant:ident => $status:literal, $name:literal, $meaning:literal;)+) => {
        /// A stable error identifier: the `code` of an error body.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum ErrorCode {
            $($variant,)+
        }

        impl ErrorCode {
            /// Every code, in table order.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant,)+];

            /// The snake_case name clients match on.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $name,)+
                }
            }

            /// The HTTP status it is answered with.
            pub const fn status(self) -> u16 {
                match self {
                    $(ErrorCode::$variant => $status,)+
                }
            }

            /// When it is answered, in a few words.
            pub const fn meaning(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $meaning,)+
                }
            }
        }
    };
}

error_codes! {
    // The request itself.
    RouteNotFound => 404, "route_not_found", "no such route";
    MethodNotAllowed => 405, "method_not_allowed", "the route does not take this method";
    InvalidJson => 400, "invalid_json", "the body is not a JSON object";
    InvalidBody => 400, "invalid_body", "the body could not be read";
    UnknownField => 400, "unknown_field", "the body has a field the operation does not take";
    ValidationFailed => 400, "validation_failed", "a field or parameter breaks a rule (the message names it and the rule)";
    PayloadTooLarge => 413, "payload_too_large", "the body is larger than the limit (default 1 MiB)";
    TooManyRequests => 429, "too_many_requests", "too many such requests are in flight; retry after `Retry-After` seconds";
    // Keys and roles.
    MissingApiKey => 401, "missing_api_key", "no API key was sent";
    InvalidApiKey => 401, "invalid_api_key", "no API key has this value";
    ApiKeyRevoked => 401, "api_key_revoked", "the API key was revoked";
    ApiKeyExpired => 401, "api_key_expired", "the API key has expired";
    SessionNotInScope => 401, "session_not_in_scope", "the key is limited to other sessions";
    InsufficientRole => 403, "insufficient_role", "the key's role is below the one the operation needs";
    ScopeForbidden => 403, "scope_forbidden", "a key limited to some sessions asked for what only an unlimited key may do";
    ApiKeyNotFound => 404, "api_key_not_found", "no API key has this id";
    InvalidStreamTicket => 401, "invalid_stream_ticket", "the event-stream ticket is unknown, used or expired";
    DashboardSessionInvalid => 401, "dashboard_session_invalid", "the dashboard's sign-in cookie is unknown, signed out or expired; sign in again";
    CsrfRejected => 403, "csrf_rejected", "a write signed in by the dashboard's cookie came without its CSRF token or from another origin";
    MissingMetricsToken => 401, "missing_metrics_token", "`WASUP_METRICS_TOKEN` is set and no bearer token was sent";
    InvalidMetricsToken => 401, "invalid_metrics_token", "the bearer token is not `WASUP_METRICS_TOKEN`";
    // Sessions.
    SessionNotFound => 404, "session_not_found", "no session has this id or name";
    SessionNameTaken => 409, "session_name_taken", "a session has this name";
    SessionAlreadyStarted => 400, "session_already_started", "the session is running or starting";
    QrNotAvailable => 400, "qr_not_available", "the session is not started, not yet showing a QR, or already linked (the message says which)";
    QrRenderFailed => 503, "qr_render_failed", "the QR could not be drawn";
    PairingCodeNotAvailable => 400, "pairing_code_not_available", "the session is not in `qr_ready` or not connected yet";
    EngineRejected => 409, "engine_rejected", "WhatsApp refused or did not answer; retry";
    ProxyUrlNotAllowed => 400, "proxy_url_not_allowed", "the proxy URL's host is or resolves to a loopback, private, link-local or other refused address (`WASUP_PROXY_ALLOW_PRIVATE`)";
    // Webhooks.
    WebhookNotFound => 404, "webhook_not_found", "the session has no webhook with this id";
    WebhookUrlNotAllowed => 400, "webhook_url_not_allowed", "the URL resolves to a refused address";
    DeliveryNotFound => 404, "delivery_not_found", "this webhook has no delivery of that event";
    DeliveryAlreadyQueued => 409, "delivery_already_queued", "the event is still pending";
    // Per-tenant limits (actors/src/limits.rs).
    LimitExceeded => 422, "limit_exceeded", "a per-tenant limit is reached; the message names the limit and its setting";
    // Messages (issue 11).
    InvalidChatId => 400, "invalid_chat_id", "the chatId is not a phone number, @c.us, @s.whatsapp.net, @g.us or @lid chat";
    SessionNotReady => 409, "session_not_ready", "the session cannot carry messages in its current status (the message names it)";
    MessageNotFound => 404, "message_not_found", "the session has no message with this id";
    MessageNotPending => 409, "message_not_pending", "the message already left the queue (sent or failed)";
    // The gateway.
    ServiceUnavailable => 503, "service_unavailable", "the database or an actor is unavailable; retry shortly";
    ShuttingDown => 503, "shutting_down", "the server is shutting down";
    // Cluster mode (src/cluster).
    OwnerUnavailable => 503, "owner_unavailable", "the node that owns the session did not answer (or no node has room for it); retry after `Retry-After` seconds";
    NodeNotFound => 404, "node_not_found", "no cluster node has this id";
    // The simulator's control routes (simulator builds).
    SimulatorNotEmbedded => 404, "simulator_not_embedded", "the gateway uses a separate simulator process";
    SimulatorUnavailable => 503, "simulator_unavailable", "the simulator's storage failed";
    SessionNotConnected => 409, "session_not_connected", "the session has no connection to the simulator";
    QrMalformed => 400, "qr_malformed", "the QR is not one the simulator can read";
    QrExpired => 404, "qr_expired", "the QR expired or names no pending link";
    PairingCodeRejected => 400, "pairing_code_rejected", "not the code the session showed";
    NoPendingPairingCode => 404, "no_pending_pairing_code", "no session waits for a code from this phone";
    PhoneNotFound => 404, "phone_not_found", "no virtual phone has this number";
    DeviceNotFound => 404, "device_not_found", "the phone has no such linked device";
    LinkRejected => 409, "link_rejected", "the link was refused";
    LinkTimeout => 409, "link_timeout", "the link did not complete in time";
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a session was looked up: the not-found message says which.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LookedUpBy {
    Id,
    Name,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum WebError {
    #[error("Session {} '{key}' not found", match .by { LookedUpBy::Id => "with id", LookedUpBy::Name => "named" })]
    SessionNotFound { key: String, by: LookedUpBy },
    #[error("A session named '{0}' already exists")]
    SessionNameTaken(String),
    #[error("Session '{0}' is already started")]
    SessionAlreadyStarted(String),
    /// The message says why (not started, not yet ready, already linked).
    #[error("{0}")]
    QrNotAvailable(String),
    /// The message says why (session not in qr_ready, engine not connected yet).
    #[error("{0}")]
    PairingCodeNotAvailable(String),
    #[error("This API key may not access session '{0}'")]
    SessionNotInScope(String),
    /// A key limited to some sessions tried what only an unscoped key may do
    /// (create a session, create an unscoped key). HTTP 403.
    #[error("{0}")]
    ScopeForbidden(String),
    #[error("This action requires the '{}' role", .0.as_str())]
    InsufficientRole(Role),
    #[error("API key with id '{0}' not found")]
    ApiKeyNotFound(String),
    /// A rule the body broke; the message names the field and the rule.
    #[error("{0}")]
    Validation(String),
    /// The engine failed an operation (e.g. WhatsApp refused a pairing code).
    #[error("{0}")]
    Engine(String),
    /// The database or an actor is unavailable; the message is safe to show.
    #[error("{0}")]
    Unavailable(String),
    #[error("Webhook with id '{0}' not found")]
    WebhookNotFound(String),
    /// The URL resolves to an address the gateway refuses (SSRF); the message says which.
    #[error("{0}")]
    WebhookUrlNotAllowed(String),
    #[error("No delivery of event '{0}' exists for this webhook")]
    DeliveryNotFound(String),
    #[error("Event '{0}' is already queued for delivery")]
    DeliveryPending(String),
    #[error("The server is shutting down")]
    ShuttingDown,
    #[error("{0}")]
    InvalidChatId(String),
    #[error("{0}")]
    SessionNotReady(String),
    #[error("Message with id '{0}' not found")]
    MessageNotFound(String),
    #[error("{0}")]
    MessageNotPending(String),
    /// A bounded operation is at its limit; the message names the limit.
    /// Answered with `Retry-After: retry_after_secs`.
    #[error("{message}")]
    TooManyRequests {
        message: String,
        retry_after_secs: u64,
    },
    /// A per-tenant limit is reached; the message names it and its setting.
    #[error("{0}")]
    LimitExceeded(String),
    /// The proxy URL's host is or resolves to a refused address; the message
    /// names the kind of address, never the address itself.
    #[error("{0}")]
    ProxyUrlNotAllowed(String),
}

impl WebError {
    /// No session has this id.
    pub fn unknown_session_id(id: impl ToString) -> Self {
        WebError::SessionNotFound {
            key: id.to_string(),
            by: LookedUpBy::Id,
        }
    }

    /// No session has this id or name (`key` as the caller gave it: a
    /// UUID is an id, anything else a name).
    pub fn unknown_session(key: &str) -> Self {
        let by = match uuid::Uuid::parse_str(key) {
            Ok(_) => LookedUpBy::Id,
            Err(_) => LookedUpBy::Name,
        };
        WebError::SessionNotFound {
            key: key.to_string(),
            by,
        }
    }

    pub fn code(&self) -> ErrorCode {
        match self {
            WebError::SessionNotFound { .. } => ErrorCode::SessionNotFound,
            WebError::SessionNameTaken(_) => ErrorCode::SessionNameTaken,
            WebError::SessionAlreadyStarted(_) => ErrorCode::SessionAlreadyStarted,
            WebError::QrNotAvailable(_) => ErrorCode::QrNotAvailable,
            WebError::PairingCodeNotAvailable(_) => ErrorCode::PairingCodeNotAvailable,
            WebError::SessionNotInScope(_) => ErrorCode::SessionNotInScope,
            WebError::ScopeForbidden(_) => ErrorCode::ScopeForbidden,
            WebError::InsufficientRole(_) => ErrorCode::InsufficientRole,
            WebError::ApiKeyNotFound(_) => ErrorCode::ApiKeyNotFound,
            WebError::Validation(_) => ErrorCode::ValidationFailed,
            // WhatsApp refused an operation on a healthy request: the caller
            // can retry, nothing in the gateway broke.
            WebError::Engine(_) => ErrorCode::EngineRejected,
            WebError::Unavailable(_) => ErrorCode::ServiceUnavailable,
            WebError::WebhookNotFound(_) => ErrorCode::WebhookNotFound,
            WebError::WebhookUrlNotAllowed(_) => ErrorCode::WebhookUrlNotAllowed,
            WebError::DeliveryNotFound(_) => ErrorCode::DeliveryNotFound,
            WebError::DeliveryPending(_) => ErrorCode::DeliveryAlreadyQueued,
            WebError::ShuttingDown => ErrorCode::ShuttingDown,
            WebError::InvalidChatId(_) => ErrorCode::InvalidChatId,
            WebError::SessionNotReady(_) => ErrorCode::SessionNotReady,
            WebError::MessageNotFound(_) => ErrorCode::MessageNotFound,
            WebError::MessageNotPending(_) => ErrorCode::MessageNotPending,
            WebError::TooManyRequests { .. } => ErrorCode::TooManyRequests,
            WebError::LimitExceeded(_) => ErrorCode::LimitExceeded,
            WebError::ProxyUrlNotAllowed(_) => ErrorCode::ProxyUrlNotAllowed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_snake_case_with_error_statuses() {
        let mut names = std::collections::HashSet::new();
        for code in ErrorCode::ALL {
            let name = code.as_str();
            assert!(names.insert(name), "{name} twice");
            assert!(
                name.split('_').count() > 1
                    && name
                        .split('_')
                        .all(|w| !w.is_empty() && w.bytes().all(|b| b.is_ascii_lowercase())),
                "{name} is not snake_case"
            );
            assert!((400..600).contains(&code.status()), "{name}");
            assert!(!code.meaning().is_empty(), "{name}");
        }
    }

    #[test]
    fn unknown_session_says_how_it_was_looked_up() {
        let id = "8f3c2b1a-9d4e-4c7a-8b2f-1e6d5a4c3b2a";
        assert_eq!(
            WebError::unknown_session(id).to_string(),
            format!("Session with id '{id}' not found")
        );
        assert_eq!(
            WebError::unknown_session_id("x").to_string(),
            "Session with id 'x' not found"
        );
        assert_eq!(
            WebError::unknown_session("my-bot").to_string(),
            "Session named 'my-bot' not found"
        );
        assert_eq!(
            WebError::unknown_session("my-bot").code(),
            ErrorCode::SessionNotFound
        );
    }
}
