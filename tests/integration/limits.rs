//! Issue 14.3 and 14.6 over real HTTP, on every backend: the failed-auth
//! limiter and the per-tenant limits, each refusal naming its setting.

use crate::common::*;
use serde_json::json;

#[test]
fn invalid_keys_past_the_limit_get_429_even_with_the_right_key() {
    for db in backends() {
        let s = Server::start_with(
            &db,
            &[
                ("WASUP_ADMIN_KEY", ADMIN_KEY),
                ("WASUP_AUTH_FAILURES_PER_MINUTE", "3"),
            ],
        );
        // Valid keys never count.
        for _ in 0..5 {
            assert_eq!(s.call("GET", "/api/sessions", None).0, 200);
        }
        for _ in 0..3 {
            let (status, got) = s.call_as("wsp_wrong", "GET", "/api/sessions", None);
            assert_error(status, &got, 401, "invalid_api_key");
        }
        let res = s
            .req("GET", "/api/sessions", Some("wsp_wrong"))
            .send()
            .unwrap();
        let retry: u64 = res.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(retry >= 1);
        let (status, got) = split(res);
        assert_error(status, &got, 429, "too_many_requests");
        assert!(got["message"]
            .as_str()
            .unwrap()
            .contains("WASUP_AUTH_FAILURES_PER_MINUTE"));
        // Refused before the lookup: a right guess tells nothing now.
        let (status, got) = s.call("GET", "/api/sessions", None);
        assert_error(status, &got, 429, "too_many_requests");
    }
}

#[test]
fn tenant_limits_refuse_with_limit_exceeded_naming_the_setting() {
    for db in backends() {
        let s = Server::start_with(
            &db,
            &[
                ("WASUP_ADMIN_KEY", ADMIN_KEY),
                ("WASUP_MAX_SESSIONS", "2"),
                ("WASUP_MAX_METADATA_BYTES", "64"),
                ("WASUP_MAX_WEBHOOKS_PER_SESSION", "2"),
                ("WASUP_WEBHOOK_ALLOW_PRIVATE", "true"),
            ],
        );
        let refused = |status: u16, got: &serde_json::Value, setting: &str| {
            assert_error(status, got, 422, "limit_exceeded");
            assert!(got["message"].as_str().unwrap().contains(setting), "{got}");
        };
        let big = "x".repeat(100);
        let (status, got) = s.call(
            "POST",
            "/api/sessions",
            Some(json!({"name": "big-meta", "config": {"metadata": {"note": big}}})),
        );
        refused(status, &got, "WASUP_MAX_METADATA_BYTES");

        let first = s.create_session("first");
        s.create_session("second");
        let (status, got) = s.call("POST", "/api/sessions", Some(json!({"name": "third"})));
        refused(status, &got, "WASUP_MAX_SESSIONS");

        let hooks = format!("/api/sessions/{first}/webhooks");
        for _ in 0..2 {
            let (status, got) = s.call(
                "POST",
                &hooks,
                Some(json!({"url": "http://127.0.0.1:9/hook"})),
            );
            assert_eq!(status, 201, "{got}");
        }
        let (status, got) = s.call(
            "POST",
            &hooks,
            Some(json!({"url": "http://127.0.0.1:9/hook"})),
        );
        refused(status, &got, "WASUP_MAX_WEBHOOKS_PER_SESSION");
    }
}
