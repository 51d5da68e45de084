//! The `Caller` extractor: who is calling, from `X-API-Key` or
//! `Authorization: Bearer`. One hash and one map lookup in the key ring,
//! behind the failed-auth limiter (`auth_limit`).

use std::future::{ready, Ready};

use actix_web::dev::Payload;
use actix_web::{web, FromRequest, HttpRequest};
use chrono::Utc;
use wasup_actors::Caller;

use super::auth_limit::AuthFailures;
use super::error::ApiError;
use super::AppState;

pub struct Auth(pub Caller);

/// The key presented with a request, if any.
pub fn presented_key(req: &HttpRequest) -> Option<&str> {
    let headers = req.headers();
    if let Some(key) = headers.get("x-api-key").and_then(|v| v.to_str().ok()) {
        return Some(key);
    }
    headers
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
}

impl FromRequest for Auth {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(caller_of(req).map(Auth))
    }
}

/// The caller of a request, from its `X-API-Key`/bearer key or, when no key
/// is sent, the dashboard's sign-in cookie (the one place either is read).
/// Failed key attempts count against the client address's limit.
pub fn caller_of(req: &HttpRequest) -> Result<Caller, ApiError> {
    let state = req
        .app_data::<web::Data<AppState>>()
        .expect("AppState is registered");
    let limiter = req
        .app_data::<web::Data<Option<AuthFailures>>>()
        .and_then(|l| l.as_ref().as_ref());
    let peer = req.peer_addr().map(|addr| addr.ip());
    // No key sent: the dashboard's sign-in cookie, if any (its own checks:
    // same origin, CSRF token on writes; see dashboard/signin.rs).
    if presented_key(req).is_none() {
        let sign_ins = req.app_data::<web::Data<super::dashboard::signin::SignIns>>();
        if let Some(found) = sign_ins.and_then(|s| s.caller(req, &state.keys)) {
            return found;
        }
    }
    super::auth_limit::authenticate(limiter, peer, || {
        state.keys.authenticate(presented_key(req), Utc::now())
    })
}
