//! The dashboard (issue 12): one HTML shell, one script and one style sheet,
//! compiled into the binary and served at `/` on the API port (no CDN, no
//! build step), and the sign-in routes that trade an API key for the
//! dashboard's cookie (`signin.rs`). The page calls the same API as every
//! client, authenticated by that cookie, and follows `GET /api/events`.

pub mod signin;

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::Utc;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use wasup_actors::model::Role;

use super::auth::presented_key;
use super::error::ApiError;
use super::json::Body;
use super::AppState;
use signin::{SignIns, SIGN_IN_TTL};

const PAGE: &str = include_str!("assets/index.html");
const SCRIPT: &str = include_str!("assets/app.js");
const STYLE: &str = include_str!("assets/app.css");

/// The page's Content-Security-Policy: its own script and style only (no
/// inline script), images from itself or `data:` (the QR), connections to
/// itself (the API and the event stream), never framed.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

fn asset(content_type: &'static str, body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(content_type)
        .insert_header((header::CONTENT_SECURITY_POLICY, CSP))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::X_FRAME_OPTIONS, "DENY"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .body(body)
}

/// The dashboard
///
/// No key needed for the page itself: it signs in with
/// `POST /api/dashboard/session`. Served with a strict Content-Security-Policy.
#[utoipa::path(get, path = "/", tag = "dashboard", operation_id = "dashboardPage",
    responses((status = 200, description = "The page", content_type = "text/html", body = String))
)]
pub async fn page() -> HttpResponse {
    asset("text/html; charset=utf-8", PAGE)
}

/// The dashboard's script
#[utoipa::path(get, path = "/dashboard/app.js", tag = "dashboard", operation_id = "dashboardScript",
    responses((status = 200, description = "The script", content_type = "text/javascript", body = String))
)]
pub async fn script() -> HttpResponse {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

/// The dashboard's style sheet
#[utoipa::path(get, path = "/dashboard/app.css", tag = "dashboard", operation_id = "dashboardStyle",
    responses((status = 200, description = "The style sheet", content_type = "text/css", body = String))
)]
pub async fn style() -> HttpResponse {
    asset("text/css; charset=utf-8", STYLE)
}

/// Sign in with a key: in the body, or (non-browser clients) in the usual headers.
#[derive(Deserialize, ToSchema, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SignInRequest {
    /// The API key (the headers' key is used when this is absent).
    #[schema(example = "wsp_3kTq9ZcYh2W8xVbN5mL0pR7sD4fG6jK1aE9uI2oQ")]
    api_key: Option<String>,
}

/// The signed-in dashboard.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SignInBody {
    /// The key's role: the page shows only the buttons it may use.
    role: Role,
    /// The key's name and displayed prefix.
    #[schema(example = "ops")]
    key_name: String,
    #[schema(example = "wsp_3kTq9ZcY")]
    key_prefix: String,
    /// Some sessions only (`allowedSessions` of the key).
    scoped: bool,
    /// Send as `X-CSRF-Token` with every write authenticated by the cookie.
    #[schema(example = "csrf_9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08")]
    csrf_token: String,
    #[schema(format = DateTime, example = "2026-06-25T17:00:00.000Z")]
    expires_at: String,
}

fn body_for(
    state: &AppState,
    caller: &wasup_actors::Caller,
    csrf: String,
) -> Result<SignInBody, ApiError> {
    let key = state
        .keys
        .get(caller.key_id)
        .ok_or_else(|| ApiError::from(wasup_actors::keys::AuthError::Invalid))?;
    Ok(SignInBody {
        role: caller.role,
        key_name: key.name,
        key_prefix: key.key_prefix,
        scoped: caller.scope.is_some(),
        csrf_token: csrf,
        expires_at: super::time::iso(Utc::now() + SIGN_IN_TTL),
    })
}

/// Sign in to the dashboard
///
/// Any role. Trades an API key (body `apiKey`, or the key headers) for the
/// dashboard's session cookie: `wasup_session`, `HttpOnly; SameSite=Strict;
/// Path=/`, valid 8 hours; it holds a random id, never the key. The answer's
/// `csrfToken` must accompany every write made with the cookie
/// (`X-CSRF-Token`). A wrong key answers as on any route.
#[utoipa::path(post, path = "/api/dashboard/session", tag = "dashboard", operation_id = "dashboardSignIn",
    request_body = SignInRequest,
    responses(
        (status = 200, description = "Signed in; the cookie is set", body = SignInBody,
            headers(("Set-Cookie" = String, description = "wasup_session=…; HttpOnly; SameSite=Strict; Path=/"))),
    )
)]
pub async fn sign_in(
    req: HttpRequest,
    state: web::Data<AppState>,
    sign_ins: web::Data<SignIns>,
    Body(body): Body<SignInRequest>,
) -> Result<HttpResponse, ApiError> {
    // Login CSRF: another site may not sign this browser in to its key.
    signin::same_origin(&req)?;
    let limiter = req
        .app_data::<web::Data<Option<super::auth_limit::AuthFailures>>>()
        .and_then(|l| l.as_ref().as_ref());
    let peer = req.peer_addr().map(|addr| addr.ip());
    let key = body.api_key.as_deref().or_else(|| presented_key(&req));
    let caller = super::auth_limit::authenticate(limiter, peer, || {
        state.keys.authenticate(key, Utc::now())
    })?;
    // A new sign-in replaces the one this browser had.
    sign_ins.remove(&req);
    let new = sign_ins.create(caller.key_id);
    let body = body_for(&state, &caller, new.csrf)?;
    Ok(HttpResponse::Ok()
        .insert_header((
            header::SET_COOKIE,
            signin::set_cookie(&req, &new.session_id, SIGN_IN_TTL),
        ))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(body))
}

/// The dashboard's sign-in
///
/// Any role. Who the cookie (or key) signs in as, and the CSRF token for
/// writes made with the cookie (empty when called with a key).
#[utoipa::path(get, path = "/api/dashboard/session", tag = "dashboard", operation_id = "dashboardWhoAmI",
    responses(
        (status = 200, description = "Signed in", body = SignInBody),
    )
)]
pub async fn who_am_i(
    req: HttpRequest,
    state: web::Data<AppState>,
    sign_ins: web::Data<SignIns>,
) -> Result<HttpResponse, ApiError> {
    let caller = super::auth::caller_of(&req)?;
    let csrf = if presented_key(&req).is_some() {
        String::new()
    } else {
        sign_ins.csrf_of(&req).unwrap_or_default()
    };
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(body_for(&state, &caller, csrf)?))
}

/// Sign out of the dashboard
///
/// Forgets the cookie's sign-in and clears the cookie. Answers 204 even when
/// there was none.
#[utoipa::path(delete, path = "/api/dashboard/session", tag = "dashboard", operation_id = "dashboardSignOut",
    responses((status = 204, description = "Signed out; the cookie is cleared")),
)]
pub async fn sign_out(
    req: HttpRequest,
    sign_ins: web::Data<SignIns>,
) -> Result<HttpResponse, ApiError> {
    // A foreign page may not sign the operator out either.
    signin::same_origin(&req)?;
    sign_ins.remove(&req);
    Ok(HttpResponse::NoContent()
        .insert_header((
            header::SET_COOKIE,
            signin::set_cookie(&req, "", std::time::Duration::ZERO),
        ))
        .finish())
}
