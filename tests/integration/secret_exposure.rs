//! What the API shows of secrets, over real HTTP on every backend: a viewer
//! key sees webhook URLs without their credentials (userinfo, token-like
//! query values); operators and admins, who could set them, see them whole.

use serde_json::{json, Value};

use crate::common::*;

const URL: &str =
    "http://hook-user:hunter2-pass@127.0.0.1:9/hook?v=2&token=tok-secret&sig=sig-secret&api_key=ak-secret";
const SECRETS: &[&str] = &["hunter2-pass", "tok-secret", "sig-secret", "ak-secret"];

fn key(s: &Server, role: &str) -> String {
    let (status, body) = s.call(
        "POST",
        "/api/auth/api-keys",
        Some(json!({"name": format!("{role}-key"), "role": role})),
    );
    assert_eq!(status, 201, "{body}");
    body["apiKey"].as_str().unwrap().to_string()
}

/// Every `url` in a webhook answer (one webhook or a list).
fn urls(body: &Value) -> Vec<String> {
    match body {
        Value::Array(items) => items.iter().flat_map(urls).collect(),
        other => other["url"]
            .as_str()
            .map(String::from)
            .into_iter()
            .collect(),
    }
}

#[test]
fn viewer_keys_see_webhook_urls_without_credentials() {
    for db in backends() {
        let s = Server::start_with(
            &db,
            &[
                ("WASUP_ADMIN_KEY", ADMIN_KEY),
                ("WASUP_WEBHOOK_ALLOW_PRIVATE", "true"),
            ],
        );
        let session = s.create_session("masked");
        let (status, created) = s.call(
            "POST",
            &format!("/api/sessions/{session}/webhooks"),
            Some(json!({"url": URL, "events": ["session.status"]})),
        );
        assert_eq!(status, 201, "{created}");
        assert_eq!(created["url"], URL, "the creator sees what it set");
        let wid = created["id"].as_str().unwrap().to_string();
        let routes = [
            format!("/api/sessions/{session}/webhooks"),
            "/api/webhooks".to_string(),
            format!("/api/sessions/{session}/webhooks/{wid}"),
        ];

        let viewer = key(&s, "viewer");
        for route in &routes {
            let (status, body) = s.call_as(&viewer, "GET", route, None);
            assert_eq!(status, 200, "{route}: {body}");
            let text = body.to_string();
            for secret in SECRETS {
                assert!(!text.contains(secret), "{} {route}: {text}", db.label());
            }
            let shown = urls(&body);
            assert_eq!(shown.len(), 1, "{route}: {body}");
            assert_eq!(
                shown[0], "http://hook-user:***@127.0.0.1:9/hook?v=2&token=***&sig=***&api_key=***",
                "{route}"
            );
        }

        let operator = key(&s, "operator");
        for k in [operator.as_str(), ADMIN_KEY] {
            for route in &routes {
                let (status, body) = s.call_as(k, "GET", route, None);
                assert_eq!(status, 200, "{route}: {body}");
                assert_eq!(urls(&body), vec![URL.to_string()], "{route}");
            }
        }
    }
}
