//! API key routes (contract §5).

use actix_web::{web, HttpResponse};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;
use wasup_actors::model::{ApiKeyRecord, Role};
use wasup_actors::web::{CreateApiKey, GetApiKey, ListApiKeys, RevokeApiKey};

use super::auth::Auth;
use super::error::ApiError;
use super::json::Body;
use super::time::{iso, iso_opt};
use super::AppState;

type Data = web::Data<AppState>;

/// An API key (never the key itself).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = ApiKey)]
pub struct KeyBody {
    #[schema(format = Uuid)]
    id: String,
    #[schema(example = "ci-bot")]
    name: String,
    /// The key's first 12 characters.
    #[schema(example = "wsp_3f9a1c2b")]
    key_prefix: String,
    role: Role,
    /// Session ids the key is limited to; null: all sessions.
    allowed_sessions: Option<Vec<String>>,
    #[schema(format = DateTime)]
    expires_at: Option<String>,
    #[schema(format = DateTime, example = "2026-06-25T09:00:00.000Z")]
    created_at: String,
    /// Extension: when the key was revoked (revoked keys stay listed for audit).
    #[schema(format = DateTime)]
    revoked_at: Option<String>,
}

/// An API key as created: the only answer that carries the key.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = CreatedApiKey)]
pub struct CreatedKeyBody {
    #[serde(flatten)]
    key: KeyBody,
    /// The key. Shown only here: store it now.
    #[schema(example = "wsp_3f9a1c2b…")]
    api_key: String,
}

impl KeyBody {
    fn new(key: ApiKeyRecord) -> Self {
        KeyBody {
            id: key.id.to_string(),
            name: key.name,
            key_prefix: key.key_prefix,
            role: key.role,
            allowed_sessions: key
                .allowed_sessions
                .map(|ids| ids.iter().map(Uuid::to_string).collect()),
            expires_at: iso_opt(key.expires_at),
            created_at: iso(key.created_at),
            revoked_at: iso_opt(key.revoked_at),
        }
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(as = CreateApiKeyRequest)]
pub struct CreateRequest {
    /// 1–100 characters.
    #[schema(example = "ci-bot")]
    name: String,
    /// Default `operator`.
    #[serde(default)]
    role: Option<Role>,
    /// Session ids (UUIDs) the key is limited to; null or empty: all sessions.
    /// A key that is itself limited may only create keys limited to its own sessions.
    #[serde(default)]
    allowed_sessions: Option<Vec<String>>,
    /// When the key stops working; must be in the future. Null: never.
    #[serde(default)]
    #[schema(value_type = Option<String>, format = DateTime, example = "2027-01-01T00:00:00.000Z")]
    expires_at: Option<DateTime<Utc>>,
}

/// Create an API key
///
/// Role: admin. The answer is the only one that carries the key.
#[utoipa::path(post, path = "/api/auth/api-keys", tag = "api-keys", operation_id = "createApiKey",
    request_body = CreateRequest,
    responses(
        (status = 201, description = "Created", body = CreatedKeyBody),
    )
)]
pub async fn create(
    state: Data,
    Auth(caller): Auth,
    Body(req): Body<CreateRequest>,
) -> Result<HttpResponse, ApiError> {
    let allowed_sessions = req
        .allowed_sessions
        .map(|ids| {
            ids.iter()
                .enumerate()
                .map(|(i, id)| {
                    Uuid::parse_str(id).map_err(|_| {
                        ApiError::validation(format!(
                            "Field 'allowedSessions[{i}]' must be a session id (UUID)"
                        ))
                    })
                })
                .collect::<Result<Vec<_>, _>>()
        })
        .transpose()?;
    let (key, secret) = state
        .web
        .send(CreateApiKey {
            caller,
            name: req.name,
            role: req.role.unwrap_or(Role::Operator),
            allowed_sessions,
            expires_at: req.expires_at,
        })
        .await??;
    Ok(HttpResponse::Created().json(CreatedKeyBody {
        key: KeyBody::new(key),
        api_key: secret,
    }))
}

/// List API keys
///
/// Role: admin. Revoked keys stay listed (`revokedAt`).
#[utoipa::path(get, path = "/api/auth/api-keys", tag = "api-keys", operation_id = "listApiKeys",
    responses(
        (status = 200, description = "The keys", body = Vec<KeyBody>),
    )
)]
pub async fn list(state: Data, Auth(caller): Auth) -> Result<HttpResponse, ApiError> {
    let keys = state.web.send(ListApiKeys { caller }).await??;
    let body: Vec<KeyBody> = keys.into_iter().map(KeyBody::new).collect();
    Ok(HttpResponse::Ok().json(body))
}

/// The `{id}` of an API key's routes.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
pub struct KeyPath {
    /// API key id
    #[param(format = Uuid)]
    id: String,
}

/// An id that is not a UUID names no key: 404, like an unknown one.
fn key_id(id: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(id).map_err(|_| wasup_actors::WebError::ApiKeyNotFound(id.to_string()).into())
}

/// Get an API key
///
/// Role: admin.
#[utoipa::path(get, path = "/api/auth/api-keys/{id}", tag = "api-keys", operation_id = "getApiKey",
    params(KeyPath),
    responses(
        (status = 200, description = "The key", body = KeyBody),
    )
)]
pub async fn get(
    state: Data,
    Auth(caller): Auth,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = key_id(&id)?;
    let key = state.web.send(GetApiKey { caller, id }).await??;
    Ok(HttpResponse::Ok().json(KeyBody::new(key)))
}

/// Revoke an API key
///
/// Role: admin. The key stops working at once.
#[utoipa::path(delete, path = "/api/auth/api-keys/{id}", tag = "api-keys", operation_id = "revokeApiKey",
    params(KeyPath),
    responses(
        (status = 204, description = "Revoked"),
    )
)]
pub async fn revoke(
    state: Data,
    Auth(caller): Auth,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = key_id(&id)?;
    state.web.send(RevokeApiKey { caller, id }).await??;
    Ok(HttpResponse::NoContent().finish())
}

/// The answer to validate.
#[derive(Serialize, ToSchema)]
pub struct ValidBody {
    /// Always true (an unusable key gets 401).
    valid: bool,
    role: Role,
}

/// Validate the API key
///
/// Any role: says which role the presented key has.
#[utoipa::path(post, path = "/api/auth/validate", tag = "api-keys", operation_id = "validateApiKey",
    responses(
        (status = 200, description = "The key is valid", body = ValidBody),
    )
)]
pub async fn validate(Auth(caller): Auth) -> HttpResponse {
    HttpResponse::Ok().json(ValidBody {
        valid: true,
        role: caller.role,
    })
}
