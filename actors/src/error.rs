//! The error enum of the actors layer. The API layer maps each variant to
//! the contract's error body in exactly one place (src/api/error.rs).

use crate::model::Role;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum WebError {
    #[error("Session with id '{0}' not found")]
    SessionNotFound(String),
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
}
