//! No input produces a 5xx: every route, every method, hostile bodies,
//! paths and headers. Each error keeps the contract's four fields.

use crate::common::*;
use serde_json::Value;

const PATHS: &[&str] = &[
    "/api/sessions",
    "/api/sessions/{id}",
    "/api/sessions/{name}",
    "/api/sessions/stats/overview",
    "/api/sessions/{id}/start",
    "/api/sessions/{id}/stop",
    "/api/sessions/{id}/force-kill",
    "/api/sessions/{id}/restart",
    "/api/sessions/{id}/logout",
    "/api/sessions/{id}/qr",
    "/api/sessions/{id}/qr?format=raw",
    "/api/sessions/{id}/qr?format=%00",
    "/api/sessions/{id}/pairing-code",
    "/api/sessions/{id}/me",
    "/api/sessions/%2e%2e/start",
    "/api/sessions/..%2F..%2Fetc%2Fpasswd",
    "/api/sessions/%00",
    "/api/sessions/' OR 1=1 --",
    "/api/auth/api-keys",
    "/api/auth/api-keys/{id}",
    "/api/auth/api-keys/%ff%fe",
    "/api/auth/validate",
    "/api/health",
    "/api/health/ready",
    "/api//sessions",
    "/api/sessions/{id}/qr/extra",
];

fn bodies() -> Vec<Vec<u8>> {
    let deep = "[".repeat(10_000) + &"]".repeat(10_000);
    vec![
        b"".to_vec(),
        b"null".to_vec(),
        b"{}".to_vec(),
        b"[]".to_vec(),
        b"\"string\"".to_vec(),
        b"{\"name\":null}".to_vec(),
        b"{\"name\":\"\\u0000\\u0000\\u0000\"}".to_vec(),
        b"{\"name\":\"ok-name\",\"config\":{\"maxReconnectAttempts\":99999999999999999999}}"
            .to_vec(),
        b"{\"name\":\"ok-name\",\"config\":{\"reconnectBaseDelay\":-1}}".to_vec(),
        b"{\"name\":\"ok-name\",\"config\":{\"metadata\":{\"a\":[1,{\"b\":null}]}}}".to_vec(),
        b"{\"phoneNumber\":12345678}".to_vec(),
        b"{\"name\":\"k\",\"role\":\"admin\",\"expiresAt\":\"9999-99-99\"}".to_vec(),
        b"{\"name\":\"k\",\"allowedSessions\":[null]}".to_vec(),
        deep.into_bytes(),
        vec![0xff, 0xfe, 0x00, 0x7b],
        b"{\"a\":1,\"a\":2}".to_vec(),
    ]
}

#[test]
fn no_input_produces_a_server_error() {
    let db = TestDb::Sqlite;
    let s = Server::start(&db);
    let id = s.create_session("robust");
    let client = reqwest::blocking::Client::new();
    let methods = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];
    let mut checked = 0;
    for path in PATHS {
        let path = path.replace("{id}", &id).replace("{name}", "robust");
        for method in methods {
            for body in bodies() {
                for content_type in ["application/json", "text/plain"] {
                    let url = format!("{}{}", s.base, path);
                    let Ok(url) = reqwest::Url::parse(&url) else {
                        continue;
                    };
                    let res = client
                        .request(reqwest::Method::from_bytes(method.as_bytes()).unwrap(), url)
                        .header("X-API-Key", ADMIN_KEY)
                        .header("content-type", content_type)
                        .body(body.clone())
                        .send()
                        .expect("the server answers");
                    let status = res.status().as_u16();
                    let text = res.text().unwrap_or_default();
                    assert!(status < 500, "{method} {path} → {status}: {text}");
                    if status >= 400 && method != "OPTIONS" {
                        let got: Value = serde_json::from_str(&text).unwrap_or_else(|_| {
                            panic!("{method} {path} → {status} not JSON: {text:?}")
                        });
                        for field in ["statusCode", "error", "code", "message"] {
                            assert!(
                                !got[field].is_null(),
                                "{method} {path} → {got} lacks {field}"
                            );
                        }
                    }
                    checked += 1;
                }
            }
        }
    }
    assert!(checked > 1000, "{checked}");
    // Hostile headers.
    for key in ["", " ", "Bearer", "\u{7f}", &"k".repeat(8000)] {
        let res = client
            .get(format!("{}/api/sessions", s.base))
            .header("X-API-Key", key.as_bytes())
            .send();
        if let Ok(res) = res {
            assert!(res.status().as_u16() < 500);
        }
    }
    let (status, _) = s.call("GET", "/api/health/ready", None);
    assert_eq!(status, 200, "still healthy");
}
