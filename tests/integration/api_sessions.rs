//! Session routes over real HTTP (contract §1–4), on every backend.

use crate::common::*;
use serde_json::json;

#[test]
fn create_returns_the_create_shape_and_read_routes_do_not_leak_config() {
    for db in backends() {
        let s = Server::start(&db);
        let (status, body) = s.call(
            "POST",
            "/api/sessions",
            Some(json!({
                "name": "shop-bot",
                "config": {"metadata": {"team": "sales"}, "maxReconnectAttempts": 3, "reconnectBaseDelay": 2000},
                "proxyUrl": "http://bob:hunter2@proxy.example:3128",
                "proxyType": "http"
            })),
        );
        assert_eq!(status, 201, "{}: {body}", db.label());
        assert_eq!(body["name"], "shop-bot");
        assert_eq!(body["status"], "created");
        assert_eq!(body["config"]["metadata"]["team"], "sales");
        assert_eq!(body["config"]["maxReconnectAttempts"], 3);
        assert_eq!(body["proxyUrl"], "http://bob:***@proxy.example:3128");
        assert_eq!(body["proxyType"], "http");
        assert!(body["lastError"].is_null() && body["phone"].is_null());
        assert_eq!(body["lastActiveAt"], body["lastActive"]);
        let created = body["createdAt"].as_str().unwrap();
        assert!(
            created.ends_with('Z') && created.len() == 24,
            "ISO with ms: {created}"
        );
        assert!(!body.to_string().contains("hunter2"));

        let id = body["id"].as_str().unwrap();
        for path in [
            format!("/api/sessions/{id}"),
            "/api/sessions/shop-bot".to_string(),
        ] {
            let (status, got) = s.call("GET", &path, None);
            assert_eq!(status, 200);
            assert_eq!(got["id"], id);
            assert!(got.get("config").is_none() && got.get("proxyUrl").is_none());
            assert!(got.get("proxyType").is_none());
            assert_eq!(got["restarts"], 0);
            assert!(got["nextRetryAt"].is_null());
        }
        let (_, list) = s.call("GET", "/api/sessions", None);
        assert!(list[0].get("config").is_none());
    }
}

#[test]
fn create_validates_every_field_and_changes_nothing_on_error() {
    for db in backends() {
        let s = Server::start(&db);
        let bad = [
            (json!({"name": "ab"}), 400, "validation_failed"),
            (json!({"name": "a".repeat(51)}), 400, "validation_failed"),
            (json!({"name": "has space"}), 400, "validation_failed"),
            (json!({"name": "ünïcode"}), 400, "validation_failed"),
            (
                json!({"name": "8f3c2b1a-9d4e-4c7a-8b2f-1e6d5a4c3b2a"}),
                400,
                "validation_failed",
            ),
            (json!({"name": 42}), 400, "validation_failed"),
            (json!({}), 400, "validation_failed"),
            (
                json!({"name": "okname", "color": "red"}),
                400,
                "unknown_field",
            ),
            (
                json!({"name": "okname", "config": {"nope": 1}}),
                400,
                "unknown_field",
            ),
            (
                json!({"name": "okname", "config": {"maxReconnectAttempts": "x"}}),
                400,
                "validation_failed",
            ),
            (
                json!({"name": "okname", "proxyUrl": "not a url"}),
                400,
                "validation_failed",
            ),
            (
                json!({"name": "okname", "proxyUrl": "ftp://h:1"}),
                400,
                "validation_failed",
            ),
            (
                json!({"name": "okname", "proxyType": "carrier-pigeon"}),
                400,
                "validation_failed",
            ),
            (json!(["name"]), 400, "validation_failed"),
        ];
        for (body, want, code) in bad {
            let (status, got) = s.call("POST", "/api/sessions", Some(body.clone()));
            assert_error(status, &got, want, code);
            if code == "validation_failed"
                && body.get("name").is_some()
                && body.as_object().map(|o| o.len()) == Some(1)
            {
                assert!(got["message"].as_str().unwrap().contains("name"), "{got}");
            }
        }
        // Malformed JSON and a body over the limit.
        let res = s
            .req("POST", "/api/sessions", Some(ADMIN_KEY))
            .header("content-type", "application/json")
            .body("{\"name\": ")
            .send()
            .unwrap();
        let (status, got) = split(res);
        assert_error(status, &got, 400, "invalid_json");
        let huge = format!(
            "{{\"name\":\"big\",\"config\":{{\"metadata\":\"{}\"}}}}",
            "x".repeat(2 << 20)
        );
        let res = s
            .req("POST", "/api/sessions", Some(ADMIN_KEY))
            .header("content-type", "application/json")
            .body(huge)
            .send()
            .unwrap();
        let (status, got) = split(res);
        assert_error(status, &got, 413, "payload_too_large");

        let (_, list) = s.call("GET", "/api/sessions", None);
        assert_eq!(list, json!([]), "{}: nothing was created", db.label());

        s.create_session("taken");
        let (status, got) = s.call("POST", "/api/sessions", Some(json!({"name": "taken"})));
        assert_error(status, &got, 409, "session_name_taken");
    }
}

#[test]
fn list_get_delete_and_not_found() {
    for db in backends() {
        let s = Server::start(&db);
        let a = s.create_session("alpha");
        let b = s.create_session("bravo");
        let (status, list) = s.call("GET", "/api/sessions", None);
        assert_eq!(status, 200);
        let names: Vec<_> = list
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["name"].clone())
            .collect();
        // createdAt descending; bravo was created last.
        assert_eq!(names, vec![json!("bravo"), json!("alpha")], "{list}");

        let (status, got) = s.call("GET", "/api/sessions/nope", None);
        assert_error(status, &got, 404, "session_not_found");
        assert!(got["message"].as_str().unwrap().contains("nope"));
        let (status, got) = s.call(
            "GET",
            "/api/sessions/00000000-0000-4000-8000-000000000000",
            None,
        );
        assert_error(status, &got, 404, "session_not_found");

        let res = s
            .req("DELETE", &format!("/api/sessions/{a}"), Some(ADMIN_KEY))
            .send()
            .unwrap();
        assert_eq!(res.status().as_u16(), 204);
        assert!(res.text().unwrap().is_empty());
        let (status, got) = s.call("GET", &format!("/api/sessions/{a}"), None);
        assert_error(status, &got, 404, "session_not_found");
        let (status, got) = s.call("DELETE", &format!("/api/sessions/{a}"), None);
        assert_error(status, &got, 404, "session_not_found");
        let (_, list) = s.call("GET", "/api/sessions", None);
        assert_eq!(list.as_array().unwrap().len(), 1);
        assert_eq!(list[0]["id"], b.as_str());
        // The name is free again.
        s.create_session("alpha");
    }
}

#[test]
fn lifecycle_commands_and_their_errors() {
    for db in backends() {
        let s = Server::start(&db);
        let id = s.create_session("cmd-bot");
        let path = |action: &str| format!("/api/sessions/{id}/{action}");

        // No QR, no pairing code, no me before anything runs.
        let (status, got) = s.call("GET", &path("qr"), None);
        assert_error(status, &got, 400, "qr_not_available");
        assert!(
            got["message"].as_str().unwrap().contains("not started"),
            "{got}"
        );
        let (status, got) = s.call(
            "POST",
            &path("pairing-code"),
            Some(json!({"phoneNumber": "628123456789"})),
        );
        assert_error(status, &got, 400, "pairing_code_not_available");
        let (status, got) = s.call("GET", &path("me"), None);
        assert_eq!((status, got), (200, serde_json::Value::Null));

        // Start with an empty body although the client says JSON.
        let res = s
            .req("POST", &path("start"), Some(ADMIN_KEY))
            .header("content-type", "application/json")
            .send()
            .unwrap();
        let (status, got) = split(res);
        assert_eq!(status, 200, "{got}");
        assert_eq!(got["status"], "initializing");
        let (status, got) = s.call("POST", &path("start"), None);
        assert_error(status, &got, 400, "session_already_started");

        let (status, got) = s.call("POST", &path("stop"), None);
        assert_eq!(
            (status, &got["status"]),
            (200, &json!("disconnected")),
            "{got}"
        );
        let (status, got) = s.call("POST", &path("stop"), None);
        assert_eq!(
            (status, &got["status"]),
            (200, &json!("disconnected")),
            "stop is idempotent"
        );

        let (status, got) = s.call("POST", &path("restart"), None);
        assert_eq!(
            (status, &got["status"]),
            (200, &json!("initializing")),
            "{got}"
        );
        let (status, got) = s.call("POST", &path("force-kill"), None);
        assert_eq!(
            (status, &got["status"]),
            (200, &json!("disconnected")),
            "{got}"
        );
        let (status, got) = s.call("POST", &path("logout"), None);
        assert_eq!(status, 200, "{got}");
        assert_eq!(got["status"], "disconnected");
        assert!(got["phone"].is_null() && got["pushName"].is_null());

        for action in ["start", "stop", "force-kill", "restart", "logout"] {
            let (status, got) = s.call("POST", &format!("/api/sessions/ghost/{action}"), None);
            assert_error(status, &got, 404, "session_not_found");
        }
        for phone in ["12345", "1234567890123456", "+628123456", "62 812 3456", ""] {
            let (status, got) = s.call(
                "POST",
                &path("pairing-code"),
                Some(json!({"phoneNumber": phone})),
            );
            assert_error(status, &got, 400, "validation_failed");
            assert!(got["message"].as_str().unwrap().contains("phoneNumber"));
        }
        let (status, got) = s.call(
            "POST",
            &path("pairing-code"),
            Some(json!({"phone": "628123456789"})),
        );
        assert_error(status, &got, 400, "unknown_field");
        let (status, got) = s.call("GET", &format!("{}?format=svg", path("qr")), None);
        assert_error(status, &got, 400, "validation_failed");
    }
}

#[test]
fn overview_counts_and_memory() {
    for db in backends() {
        let s = Server::start(&db);
        s.create_session("one");
        s.create_session("two");
        let id = s.create_session("three");
        s.call("POST", &format!("/api/sessions/{id}/stop"), None);
        let (status, got) = s.call("GET", "/api/sessions/stats/overview", None);
        assert_eq!(status, 200, "{got}");
        assert_eq!(got["total"], 3);
        assert_eq!(got["active"], 0);
        assert_eq!(got["ready"], 0);
        assert_eq!(got["disconnected"], 1);
        assert_eq!(got["byStatus"], json!({"created": 2, "disconnected": 1}));
        let mem = &got["memoryUsage"];
        assert!(mem["rss"].as_u64().unwrap() >= 1, "{mem}");
        assert!(mem["heapTotal"].as_u64().unwrap() >= mem["heapUsed"].as_u64().unwrap());
    }
}

#[test]
fn conventions_request_id_unknown_route_wrong_method() {
    let db = TestDb::Sqlite;
    let s = Server::start(&db);
    let res = s
        .req("GET", "/api/health", None)
        .header("X-Request-Id", "abc-123")
        .send()
        .unwrap();
    assert_eq!(res.headers()["x-request-id"], "abc-123");
    let res = s
        .req("GET", "/api/sessions", Some(ADMIN_KEY))
        .send()
        .unwrap();
    let generated = res.headers()["x-request-id"].to_str().unwrap().to_string();
    assert!(uuid::Uuid::parse_str(&generated).is_ok());
    let res = s.req("GET", "/api/nowhere", None).send().unwrap();
    assert!(res.headers().contains_key("x-request-id"));
    let (status, got) = split(res);
    assert_error(status, &got, 404, "route_not_found");
    let (status, got) = s.call("PUT", "/api/sessions", None);
    assert_error(status, &got, 405, "method_not_allowed");
    let (status, got) = s.call("PATCH", "/api/sessions/x/start", None);
    assert_error(status, &got, 405, "method_not_allowed");

    let (status, got) = split(s.req("GET", "/api/health", None).send().unwrap());
    assert_eq!(status, 200);
    assert_eq!(got["status"], "ok");
    assert_eq!(got["version"], env!("CARGO_PKG_VERSION"));
    let (status, got) = split(s.req("GET", "/api/health/live", None).send().unwrap());
    assert_eq!((status, got), (200, json!({"status": "ok"})));
    let (status, got) = split(s.req("GET", "/api/health/ready", None).send().unwrap());
    assert_eq!(status, 200);
    assert_eq!(got["database"], "ok");
    assert_eq!(got["restore"]["total"], 0, "nothing to restore: {got}");
    assert_eq!(got["restore"]["complete"], true, "{got}");
}
