//! Dashboard sign-ins: a key traded for a server-side session. The browser
//! keeps only a random session id, in an `HttpOnly; SameSite=Strict; Path=/`
//! cookie; the server maps it, in memory, to the key's id (never the key)
//! and a CSRF token. Every request authenticated by the cookie is checked
//! here: the key behind it must still be valid (a revoked key signs its
//! sessions out at once), a request with a foreign `Origin` is refused, and
//! a write (any method but GET/HEAD) must carry the CSRF token in
//! `X-CSRF-Token`. A restart forgets every sign-in: the operator signs in
//! again.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use actix_web::http::{header, Method};
use actix_web::HttpRequest;
use chrono::Utc;
use parking_lot::Mutex;
use subtle::ConstantTimeEq;
use wasup_actors::model::ApiKeyId;
use wasup_actors::{Caller, ErrorCode};

use crate::api::error::ApiError;

/// The cookie's name.
pub const COOKIE: &str = "wasup_session";
/// The header a cookie-authenticated write carries its CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// How long a sign-in lasts, used or not.
pub const SIGN_IN_TTL: Duration = Duration::from_secs(8 * 3600);
/// Sign-ins held at once (a bound on memory; the oldest goes first).
const MAX_SIGN_INS: usize = 10_000;

struct SignIn {
    key_id: ApiKeyId,
    csrf: String,
    at: Instant,
}

/// A fresh sign-in, as the sign-in route answers it.
pub struct NewSignIn {
    pub session_id: String,
    pub csrf: String,
}

/// Every sign-in of this process.
#[derive(Default)]
pub struct SignIns {
    by_id: Mutex<HashMap<String, SignIn>>,
}

fn token(prefix: &str) -> String {
    format!("{prefix}{}", hex::encode(rand::random::<[u8; 32]>()))
}

impl SignIns {
    pub fn create(&self, key_id: ApiKeyId) -> NewSignIn {
        let session_id = token("dss_");
        let csrf = token("csrf_");
        let mut by_id = self.by_id.lock();
        let now = Instant::now();
        by_id.retain(|_, s| now.duration_since(s.at) < SIGN_IN_TTL);
        if by_id.len() >= MAX_SIGN_INS {
            if let Some(oldest) = by_id
                .iter()
                .min_by_key(|(_, s)| s.at)
                .map(|(k, _)| k.clone())
            {
                by_id.remove(&oldest);
            }
        }
        by_id.insert(
            session_id.clone(),
            SignIn {
                key_id,
                csrf: csrf.clone(),
                at: now,
            },
        );
        NewSignIn { session_id, csrf }
    }

    /// The key id and CSRF token of a live sign-in.
    fn get(&self, session_id: &str) -> Option<(ApiKeyId, String)> {
        let mut by_id = self.by_id.lock();
        let live = by_id.get(session_id)?.at.elapsed() < SIGN_IN_TTL;
        if !live {
            by_id.remove(session_id);
            return None;
        }
        by_id.get(session_id).map(|s| (s.key_id, s.csrf.clone()))
    }

    /// The CSRF token of the request's sign-in, for the page to send back.
    pub fn csrf_of(&self, req: &HttpRequest) -> Option<String> {
        self.get(&session_cookie(req)?).map(|(_, csrf)| csrf)
    }

    /// Sign out: forget the request's sign-in (if any).
    pub fn remove(&self, req: &HttpRequest) {
        if let Some(id) = session_cookie(req) {
            self.by_id.lock().remove(&id);
        }
    }

    /// The caller behind the request's sign-in cookie: None when the request
    /// carries no such cookie.
    pub fn caller(
        &self,
        req: &HttpRequest,
        keys: &wasup_actors::keys::KeyRing,
    ) -> Option<Result<Caller, ApiError>> {
        let id = session_cookie(req)?;
        Some(self.check(req, &id, keys))
    }

    fn check(
        &self,
        req: &HttpRequest,
        id: &str,
        keys: &wasup_actors::keys::KeyRing,
    ) -> Result<Caller, ApiError> {
        let (key_id, csrf) = self.get(id).ok_or_else(|| {
            ApiError::new(
                ErrorCode::DashboardSessionInvalid,
                "The dashboard sign-in is unknown, signed out or expired; sign in again",
            )
        })?;
        same_origin(req)?;
        let reads = [Method::GET, Method::HEAD];
        if !reads.contains(req.method()) {
            let sent = req
                .headers()
                .get(CSRF_HEADER)
                .map(|v| v.as_bytes())
                .unwrap_or_default();
            if !bool::from(sent.ct_eq(csrf.as_bytes())) {
                return Err(csrf_refused(
                    "A write signed in by the dashboard's cookie must carry its X-CSRF-Token header",
                ));
            }
        }
        keys.caller_by_id(key_id, Utc::now()).map_err(|e| {
            // The key was revoked or expired: its sign-ins end with it.
            self.by_id.lock().remove(id);
            ApiError::from(e)
        })
    }
}

pub fn csrf_refused(message: &str) -> ApiError {
    ApiError::new(ErrorCode::CsrfRejected, message)
}

/// A request that says where it comes from (`Origin`, or `Sec-Fetch-Site`)
/// must come from this server's own origin.
pub fn same_origin(req: &HttpRequest) -> Result<(), ApiError> {
    let headers = req.headers();
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        if site == "cross-site" || site == "same-site" {
            return Err(csrf_refused(
                "A request from another site may not use the dashboard's cookie",
            ));
        }
    }
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(());
    };
    let origin_host = origin
        .to_str()
        .ok()
        .and_then(|o| o.split_once("://"))
        .map(|(_, rest)| rest);
    // This server's host as the browser addressed it: the Host header, or
    // what a reverse proxy says it forwarded (Forwarded / X-Forwarded-Host;
    // a cross-site page cannot set those without a CORS preflight, which
    // this server never grants).
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    let info = req.connection_info();
    let ours = |o: &str| {
        host.is_some_and(|h| o.eq_ignore_ascii_case(h)) || o.eq_ignore_ascii_case(info.host())
    };
    match origin_host {
        Some(o) if ours(o) => Ok(()),
        _ => Err(csrf_refused(
            "A request from another origin may not use the dashboard's cookie",
        )),
    }
}

/// The sign-in cookie's value, if the request has one.
pub fn session_cookie(req: &HttpRequest) -> Option<String> {
    req.headers()
        .get_all(header::COOKIE)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, value)| *name == COOKIE && !value.is_empty())
        .map(|(_, value)| value.to_string())
}

/// The `Set-Cookie` value of a sign-in (`Secure` when the request came over
/// HTTPS, as seen by the server or said by a proxy's forwarded headers).
pub fn set_cookie(req: &HttpRequest, session_id: &str, max_age: Duration) -> String {
    let secure = if req.connection_info().scheme() == "https" {
        "; Secure"
    } else {
        ""
    };
    format!(
        "{COOKIE}={session_id}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}{secure}",
        max_age.as_secs()
    )
}

/// Examples of this module's errors, for the OpenAPI document.
pub fn error_samples() -> Vec<ApiError> {
    vec![
        ApiError::new(
            ErrorCode::DashboardSessionInvalid,
            "The dashboard sign-in is unknown, signed out or expired; sign in again",
        ),
        csrf_refused(
            "A write signed in by the dashboard's cookie must carry its X-CSRF-Token header",
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    #[test]
    fn sign_ins_are_found_and_forgotten() {
        let sign_ins = SignIns::default();
        let key = uuid::Uuid::new_v4();
        let new = sign_ins.create(key);
        assert!(new.session_id.starts_with("dss_") && new.csrf.starts_with("csrf_"));
        assert_eq!(sign_ins.get(&new.session_id), Some((key, new.csrf.clone())));
        let req = TestRequest::default()
            .insert_header(("cookie", format!("a=b; {COOKIE}={}", new.session_id)))
            .to_http_request();
        sign_ins.remove(&req);
        assert_eq!(sign_ins.get(&new.session_id), None);
    }

    #[test]
    fn foreign_origins_are_refused() {
        let req = |headers: &[(&str, &str)]| {
            let mut r = TestRequest::default().insert_header(("host", "127.0.0.1:2785"));
            for h in headers {
                r = r.insert_header(*h);
            }
            same_origin(&r.to_http_request())
        };
        assert!(req(&[]).is_ok());
        assert!(req(&[("origin", "http://127.0.0.1:2785")]).is_ok());
        assert!(req(&[("origin", "http://evil.example")]).is_err());
        assert!(req(&[("origin", "null")]).is_err());
        assert!(req(&[("sec-fetch-site", "cross-site")]).is_err());
        assert!(req(&[("sec-fetch-site", "same-origin")]).is_ok());
        // Behind a proxy that rewrites Host but says what it forwarded.
        assert!(req(&[
            ("origin", "https://wasup.example"),
            ("x-forwarded-host", "wasup.example")
        ])
        .is_ok());
    }
}
