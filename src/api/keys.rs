//! API key routes (contract §5).

use actix_web::{web, HttpResponse};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;
use wasup_actors::model::{ApiKeyRecord, Role};
use wasup_actors::web::{CreateApiKey, GetApiKey, ListApiKeys, RevokeApiKey};

use super::auth::Auth;
use super::error::ApiError;
use super::json::Body;
use super::time::{iso, iso_opt};
use super::AppState;

type Data = web::Data<AppState>;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct KeyBody {
    id: String,
    name: String,
    key_prefix: String,
    role: Role,
    allowed_sessions: Option<Vec<String>>,
    expires_at: Option<String>,
    created_at: String,
    /// Extension: when the key was revoked (revoked keys stay listed for audit).
    revoked_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    api_key: Option<String>,
}

impl KeyBody {
    fn new(key: ApiKeyRecord, secret: Option<String>) -> Self {
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
            api_key: secret,
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateRequest {
    name: String,
    #[serde(default)]
    role: Option<Role>,
    #[serde(default)]
    allowed_sessions: Option<Vec<String>>,
    #[serde(default)]
    expires_at: Option<DateTime<Utc>>,
}

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
    Ok(HttpResponse::Created().json(KeyBody::new(key, Some(secret))))
}

pub async fn list(state: Data, Auth(caller): Auth) -> Result<HttpResponse, ApiError> {
    let keys = state.web.send(ListApiKeys { caller }).await??;
    let body: Vec<KeyBody> = keys.into_iter().map(|k| KeyBody::new(k, None)).collect();
    Ok(HttpResponse::Ok().json(body))
}

/// An id that is not a UUID names no key: 404, like an unknown one.
fn key_id(id: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(id).map_err(|_| wasup_actors::WebError::ApiKeyNotFound(id.to_string()).into())
}

pub async fn get(
    state: Data,
    Auth(caller): Auth,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = key_id(&id)?;
    let key = state.web.send(GetApiKey { caller, id }).await??;
    Ok(HttpResponse::Ok().json(KeyBody::new(key, None)))
}

pub async fn revoke(
    state: Data,
    Auth(caller): Auth,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = key_id(&id)?;
    state.web.send(RevokeApiKey { caller, id }).await??;
    Ok(HttpResponse::NoContent().finish())
}

/// Any valid key: which role it has.
pub async fn validate(Auth(caller): Auth) -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"valid": true, "role": caller.role}))
}
