//! The dashboard over plain HTTP, every backend: the page and its assets
//! with a strict Content-Security-Policy, sign-in (the cookie's flags; a
//! wrong key answers the API's error), the cookie as auth, CSRF-safe writes
//! (a forged cross-site POST with only the cookie is refused), sign-out,
//! a revoked key ending its sign-ins, and a stream without auth.

use reqwest::blocking::{Client, Response};
use serde_json::{json, Value};

use crate::common::*;

fn client() -> Client {
    Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Sign in with `key`: (the cookie pair `wasup_session=…`, the CSRF token).
fn sign_in(s: &Server, key: &str) -> (String, String) {
    let res = client()
        .post(s.url("/api/dashboard/session"))
        .json(&json!({"apiKey": key}))
        .send()
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    let set_cookie = res.headers()["set-cookie"].to_str().unwrap().to_string();
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age="] {
        assert!(set_cookie.contains(flag), "{set_cookie}");
    }
    assert!(!set_cookie.contains(key), "the cookie never holds the key");
    let pair = set_cookie.split(';').next().unwrap().to_string();
    assert!(pair.starts_with("wasup_session=dss_"), "{pair}");
    let body: Value = res.json().unwrap();
    (pair, body["csrfToken"].as_str().unwrap().to_string())
}

fn with_cookie(
    s: &Server,
    method: &str,
    path: &str,
    cookie: &str,
) -> reqwest::blocking::RequestBuilder {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    client()
        .request(method, s.url(path))
        .header("cookie", cookie)
}

fn answer(res: Response) -> (u16, Value) {
    split(res)
}

#[test]
fn the_page_and_its_assets_are_served_with_a_strict_policy() {
    let s = Server::start(&TestDb::Sqlite);
    for (path, kind) in [
        ("/", "text/html"),
        ("/dashboard/app.js", "text/javascript"),
        ("/dashboard/app.css", "text/css"),
    ] {
        let res = client().get(s.url(path)).send().unwrap();
        assert_eq!(res.status().as_u16(), 200, "{path}");
        let h = res.headers();
        assert!(
            h["content-type"].to_str().unwrap().starts_with(kind),
            "{path}"
        );
        let csp = h["content-security-policy"].to_str().unwrap();
        for directive in [
            "default-src 'self'",
            "script-src 'self'",
            "img-src 'self' data:",
            "frame-ancestors 'none'",
        ] {
            assert!(csp.contains(directive), "{path}: {csp}");
        }
        assert!(!csp.contains("unsafe-inline"), "{csp}");
        assert_eq!(h["x-content-type-options"], "nosniff");
        let body = res.text().unwrap();
        assert!(!body.is_empty());
        if path == "/" {
            // No inline script: the page loads its one script by URL, and
            // nothing from another host.
            assert!(body.contains("<script src=\"/dashboard/app.js\""), "{body}");
            assert_eq!(body.matches("<script").count(), 1, "{body}");
            assert!(
                !body.contains("http://") && !body.contains("https://"),
                "{body}"
            );
        }
    }
}

#[test]
fn the_cookie_signs_in_and_writes_need_the_csrf_token() {
    for db in backends() {
        let s = Server::start(&db);
        // A wrong key answers as on any route, and sets no cookie.
        let res = client()
            .post(s.url("/api/dashboard/session"))
            .json(&json!({"apiKey": "wsp_wrong_key_0123456789abcdef0123"}))
            .send()
            .unwrap();
        assert!(res.headers().get("set-cookie").is_none());
        let (status, body) = answer(res);
        assert_error(status, &body, 401, "invalid_api_key");
        // Bad bodies are 4xx, never 5xx.
        for bad in [r#"{"apiKey": 5}"#, r#"{"key": "x"}"#, "[", r#""x""#] {
            let res = client()
                .post(s.url("/api/dashboard/session"))
                .header("content-type", "application/json")
                .body(bad)
                .send()
                .unwrap();
            let status = res.status().as_u16();
            assert!((400..500).contains(&status), "{bad}: {status}");
        }

        let (cookie, csrf) = sign_in(&s, ADMIN_KEY);
        // Reads with the cookie alone.
        let (status, me) = answer(
            with_cookie(&s, "GET", "/api/dashboard/session", &cookie)
                .send()
                .unwrap(),
        );
        assert_eq!(status, 200, "{me}");
        assert_eq!(me["role"], "admin");
        assert_eq!(me["csrfToken"], csrf.as_str());
        let (status, _) = answer(
            with_cookie(&s, "GET", "/api/sessions", &cookie)
                .send()
                .unwrap(),
        );
        assert_eq!(status, 200);

        // A forged cross-site POST: the cookie, no token.
        let forged = with_cookie(&s, "POST", "/api/sessions", &cookie)
            .json(&json!({"name": "forged"}))
            .send()
            .unwrap();
        let (status, body) = answer(forged);
        assert_error(status, &body, 403, "csrf_rejected");
        // The token but a foreign Origin (or a browser saying cross-site).
        for (header, value) in [
            ("origin", "https://evil.example"),
            ("sec-fetch-site", "cross-site"),
        ] {
            let res = with_cookie(&s, "POST", "/api/sessions", &cookie)
                .header("x-csrf-token", &csrf)
                .header(header, value)
                .json(&json!({"name": "forged"}))
                .send()
                .unwrap();
            let (status, body) = answer(res);
            assert_error(status, &body, 403, "csrf_rejected");
        }
        // A wrong token.
        let res = with_cookie(&s, "DELETE", "/api/sessions/forged", &cookie)
            .header("x-csrf-token", "csrf_nope")
            .send()
            .unwrap();
        let (status, body) = answer(res);
        assert_error(status, &body, 403, "csrf_rejected");
        let (_, list) = s.call("GET", "/api/sessions", None);
        assert_eq!(list, json!([]), "{}: nothing was created", db.label());

        // The page's own write: the token, its own origin.
        let origin = s.base.clone();
        let res = with_cookie(&s, "POST", "/api/sessions", &cookie)
            .header("x-csrf-token", &csrf)
            .header("origin", &origin)
            .json(&json!({"name": "made-by-cookie"}))
            .send()
            .unwrap();
        let (status, body) = answer(res);
        assert_eq!(status, 201, "{body}");

        // Sign out: the cookie is cleared and its sign-in forgotten.
        let res = with_cookie(&s, "DELETE", "/api/dashboard/session", &cookie)
            .send()
            .unwrap();
        assert_eq!(res.status().as_u16(), 204);
        let cleared = res.headers()["set-cookie"].to_str().unwrap();
        assert!(
            cleared.starts_with("wasup_session=;") && cleared.contains("Max-Age=0"),
            "{cleared}"
        );
        let (status, body) = answer(
            with_cookie(&s, "GET", "/api/sessions", &cookie)
                .send()
                .unwrap(),
        );
        assert_error(status, &body, 401, "dashboard_session_invalid");
    }
}

#[test]
fn a_revoked_key_ends_its_sign_ins_and_roles_still_apply() {
    for db in backends() {
        let s = Server::start(&db);
        let (status, key) = s.call(
            "POST",
            "/api/auth/api-keys",
            Some(json!({"name": "viewer", "role": "viewer"})),
        );
        assert_eq!(status, 201);
        let secret = key["apiKey"].as_str().unwrap();
        let (cookie, csrf) = sign_in(&s, secret);
        // A viewer's cookie is a viewer.
        let res = with_cookie(&s, "POST", "/api/sessions", &cookie)
            .header("x-csrf-token", &csrf)
            .json(&json!({"name": "nope"}))
            .send()
            .unwrap();
        let (status, body) = answer(res);
        assert_error(status, &body, 403, "insufficient_role");
        let (status, _) = s.call(
            "DELETE",
            &format!("/api/auth/api-keys/{}", key["id"].as_str().unwrap()),
            None,
        );
        assert_eq!(status, 204, "{}", db.label());
        let (status, body) = answer(
            with_cookie(&s, "GET", "/api/sessions", &cookie)
                .send()
                .unwrap(),
        );
        assert_error(status, &body, 401, "api_key_revoked");
        let (status, body) = answer(
            with_cookie(&s, "GET", "/api/sessions", &cookie)
                .send()
                .unwrap(),
        );
        assert_error(status, &body, 401, "dashboard_session_invalid");
    }
}

#[test]
fn streams_accept_the_cookie_and_refuse_no_auth() {
    for db in backends() {
        let s = Server::start(&db);
        // No auth at all: 401 in the contract's shape, for both transports.
        for path in ["/api/events", "/api/events/ws"] {
            let (status, body) = answer(client().get(s.url(path)).send().unwrap());
            assert_error(status, &body, 401, "missing_api_key");
        }
        let (cookie, _) = sign_in(&s, ADMIN_KEY);
        let res = with_cookie(&s, "GET", "/api/events", &cookie)
            .send()
            .unwrap();
        assert_eq!(res.status().as_u16(), 200, "{}", db.label());
        assert_eq!(res.headers()["content-type"], "text/event-stream");
        drop(res);
        // …but not from another origin.
        let res = with_cookie(&s, "GET", "/api/events", &cookie)
            .header("origin", "https://evil.example")
            .send()
            .unwrap();
        let (status, body) = answer(res);
        assert_error(status, &body, 403, "csrf_rejected");
        // The WebSocket twin: the cookie from the page's own origin opens
        // it; from another origin (cross-site WebSocket hijacking) it is refused.
        let own = s.base.clone();
        let ws = crate::events_ws::Ws::open(&s, "", &[("cookie", &cookie), ("origin", &own)]);
        assert!(ws.is_ok(), "{}: {:?}", db.label(), ws.err());
        let evil = crate::events_ws::Ws::open(
            &s,
            "",
            &[("cookie", &cookie), ("origin", "https://evil.example")],
        );
        assert!(evil.is_err(), "{}", db.label());
        // The cookie trades for a ticket too (a write: it needs the token).
        let (status, body) = answer(
            with_cookie(&s, "POST", "/api/events/ticket", &cookie)
                .send()
                .unwrap(),
        );
        assert_error(status, &body, 403, "csrf_rejected");
    }
}
