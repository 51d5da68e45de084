//! API keys over real HTTP (contract §5), on every backend.

use crate::common::*;
use serde_json::json;

fn create_key(s: &Server, body: serde_json::Value) -> (String, serde_json::Value) {
    let (status, got) = s.call("POST", "/api/auth/api-keys", Some(body));
    assert_eq!(status, 201, "{got}");
    (got["apiKey"].as_str().unwrap().to_string(), got)
}

#[test]
fn authentication_errors_and_header_forms() {
    for db in backends() {
        let s = Server::start(&db);
        let (status, got) = split(s.req("GET", "/api/sessions", None).send().unwrap());
        assert_error(status, &got, 401, "missing_api_key");
        let (status, got) = split(
            s.req("GET", "/api/sessions", Some("wsp_wrong"))
                .send()
                .unwrap(),
        );
        assert_error(status, &got, 401, "invalid_api_key");
        let res = s
            .req("GET", "/api/sessions", None)
            .header("Authorization", format!("Bearer {ADMIN_KEY}"))
            .send()
            .unwrap();
        assert_eq!(res.status().as_u16(), 200);
        let (status, got) = s.call("POST", "/api/auth/validate", None);
        assert_eq!(
            (status, got),
            (200, json!({"valid": true, "role": "admin"}))
        );
        // Health needs no key.
        assert_eq!(
            s.req("GET", "/api/health", None)
                .send()
                .unwrap()
                .status()
                .as_u16(),
            200
        );
    }
}

#[test]
fn keys_are_shown_once_stored_hashed_and_revocable() {
    for db in backends() {
        let mut s = Server::start(&db);
        let (secret, created) = create_key(&s, json!({"name": "ci"}));
        assert_eq!(created["role"], "operator", "default role");
        assert_eq!(created["keyPrefix"].as_str().unwrap(), &secret[..12]);
        assert!(created["allowedSessions"].is_null() && created["expiresAt"].is_null());
        let id = created["id"].as_str().unwrap().to_string();

        let (status, list) = s.call("GET", "/api/auth/api-keys", None);
        assert_eq!(status, 200);
        assert!(!list.to_string().contains(&secret), "secret never listed");
        assert!(list
            .as_array()
            .unwrap()
            .iter()
            .all(|k| k.get("apiKey").is_none()));
        let (status, one) = s.call("GET", &format!("/api/auth/api-keys/{id}"), None);
        assert_eq!(status, 200);
        assert_eq!(one["name"], "ci");
        assert!(one.get("apiKey").is_none());

        let (status, got) = s.call_as(&secret, "POST", "/api/auth/validate", None);
        assert_eq!((status, &got["role"]), (200, &json!("operator")));

        // Survives a restart (stored), and only as a hash.
        s.restart();
        let (status, _) = s.call_as(&secret, "GET", "/api/sessions", None);
        assert_eq!(status, 200);
        if let TestDb::Sqlite = db {
            let raw = std::fs::read(s.data_path("wasup.db")).unwrap();
            let needle = secret.as_bytes();
            assert!(
                !raw.windows(needle.len()).any(|w| w == needle),
                "plaintext key in the database"
            );
        }

        let res = s
            .req(
                "DELETE",
                &format!("/api/auth/api-keys/{id}"),
                Some(ADMIN_KEY),
            )
            .send()
            .unwrap();
        assert_eq!(res.status().as_u16(), 204);
        let (status, got) = s.call_as(&secret, "GET", "/api/sessions", None);
        assert_error(status, &got, 401, "api_key_revoked");
        s.restart();
        let (status, got) = s.call_as(&secret, "GET", "/api/sessions", None);
        assert_error(status, &got, 401, "api_key_revoked");

        for bad in ["not-a-uuid", "00000000-0000-4000-8000-000000000000"] {
            let (status, got) = s.call("GET", &format!("/api/auth/api-keys/{bad}"), None);
            assert_error(status, &got, 404, "api_key_not_found");
        }
    }
}

#[test]
fn roles_are_enforced() {
    for db in backends() {
        let s = Server::start(&db);
        let (viewer, _) = create_key(&s, json!({"name": "v", "role": "viewer"}));
        let (operator, _) = create_key(&s, json!({"name": "o", "role": "operator"}));
        let id = s.create_session("roles-bot");

        // Viewers read.
        for path in [
            "/api/sessions".to_string(),
            format!("/api/sessions/{id}"),
            "/api/sessions/stats/overview".into(),
            format!("/api/sessions/{id}/me"),
        ] {
            let (status, _) = s.call_as(&viewer, "GET", &path, None);
            assert_eq!(status, 200, "{path}");
        }
        // …but write nothing.
        let (status, got) = s.call_as(
            &viewer,
            "POST",
            "/api/sessions",
            Some(json!({"name": "nope"})),
        );
        assert_error(status, &got, 403, "insufficient_role");
        assert!(
            got["message"].as_str().unwrap().contains("operator"),
            "{got}"
        );
        for action in ["start", "stop", "logout", "restart", "force-kill"] {
            let (status, got) = s.call_as(
                &viewer,
                "POST",
                &format!("/api/sessions/{id}/{action}"),
                None,
            );
            assert_error(status, &got, 403, "insufficient_role");
        }
        let (status, got) = s.call_as(&viewer, "GET", &format!("/api/sessions/{id}/qr"), None);
        assert_error(status, &got, 403, "insufficient_role");
        let (status, got) = s.call_as(&viewer, "DELETE", &format!("/api/sessions/{id}"), None);
        assert_error(status, &got, 403, "insufficient_role");

        // Operators manage sessions but not keys.
        let (status, _) = s.call_as(
            &operator,
            "POST",
            "/api/sessions",
            Some(json!({"name": "by-operator"})),
        );
        assert_eq!(status, 201);
        for (method, path) in [
            ("GET", "/api/auth/api-keys"),
            ("POST", "/api/auth/api-keys"),
        ] {
            let body = (method == "POST").then(|| json!({"name": "x"}));
            let (status, got) = s.call_as(&operator, method, path, body);
            assert_error(status, &got, 403, "insufficient_role");
            assert!(got["message"].as_str().unwrap().contains("admin"));
        }
    }
}

#[test]
fn scoped_keys_see_only_their_sessions() {
    for db in backends() {
        let s = Server::start(&db);
        let mine = s.create_session("mine");
        let other = s.create_session("other");
        let (scoped, got) = create_key(&s, json!({"name": "scoped", "allowedSessions": [mine]}));
        assert_eq!(got["allowedSessions"], json!([mine]));

        let (status, list) = s.call_as(&scoped, "GET", "/api/sessions", None);
        assert_eq!(status, 200);
        assert_eq!(list.as_array().unwrap().len(), 1);
        assert_eq!(list[0]["id"], mine.as_str());
        let (_, stats) = s.call_as(&scoped, "GET", "/api/sessions/stats/overview", None);
        assert_eq!(stats["total"], 1);
        let (status, _) = s.call_as(&scoped, "GET", "/api/sessions/mine", None);
        assert_eq!(status, 200);
        for path in [
            format!("/api/sessions/{other}"),
            "/api/sessions/other".to_string(),
        ] {
            let (status, got) = s.call_as(&scoped, "GET", &path, None);
            assert_error(status, &got, 401, "session_not_in_scope");
        }
        let (status, got) = s.call_as(
            &scoped,
            "POST",
            &format!("/api/sessions/{other}/start"),
            None,
        );
        assert_error(status, &got, 401, "session_not_in_scope");
        // A key scoped to sessions may not create sessions.
        let (status, got) = s.call_as(
            &scoped,
            "POST",
            "/api/sessions",
            Some(json!({"name": "more"})),
        );
        assert_error(status, &got, 403, "scope_forbidden");
    }
}

/// Issue 14.2: a scoped admin key sees, reads and revokes only keys whose
/// scope lies inside its own; unscoped keys and keys reaching other sessions
/// answer 404 as if they did not exist, and it cannot mint a broader key.
#[test]
fn scoped_admin_keys_manage_only_keys_inside_their_scope() {
    for db in backends() {
        let s = Server::start(&db);
        let a = s.create_session("sess-a");
        let b = s.create_session("sess-b");
        let (admin_a, _) = create_key(
            &s,
            json!({"name": "admin-a", "role": "admin", "allowedSessions": [a]}),
        );
        let (_, inner) = create_key(&s, json!({"name": "inner", "allowedSessions": [a]}));
        let (_, wide) = create_key(&s, json!({"name": "wide", "allowedSessions": [a, b]}));
        let (_, other) = create_key(&s, json!({"name": "other", "allowedSessions": [b]}));
        let (_, unscoped) = create_key(&s, json!({"name": "unscoped"}));
        let (_, all) = s.call("GET", "/api/auth/api-keys", None);
        let bootstrap = all
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["name"] == "admin")
            .unwrap()
            .clone();

        let (status, list) = s.call_as(&admin_a, "GET", "/api/auth/api-keys", None);
        assert_eq!(status, 200);
        let mut names: Vec<_> = list
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["name"].as_str().unwrap().to_string())
            .collect();
        names.sort();
        assert_eq!(names, ["admin-a", "inner"]);

        for key in [&wide, &other, &unscoped, &bootstrap] {
            let path = format!("/api/auth/api-keys/{}", key["id"].as_str().unwrap());
            let (status, got) = s.call_as(&admin_a, "GET", &path, None);
            assert_error(status, &got, 404, "api_key_not_found");
            let (status, got) = s.call_as(&admin_a, "DELETE", &path, None);
            assert_error(status, &got, 404, "api_key_not_found");
        }
        // The bootstrap key still works.
        let (status, _) = s.call("GET", "/api/auth/api-keys", None);
        assert_eq!(status, 200);

        let path = format!("/api/auth/api-keys/{}", inner["id"].as_str().unwrap());
        let (status, _) = s.call_as(&admin_a, "DELETE", &path, None);
        assert_eq!(status, 204);

        // No key broader than its own scope.
        let (status, got) = s.call_as(
            &admin_a,
            "POST",
            "/api/auth/api-keys",
            Some(json!({"name": "x", "allowedSessions": [a, b]})),
        );
        assert_error(status, &got, 401, "session_not_in_scope");
        let (status, got) = s.call_as(
            &admin_a,
            "POST",
            "/api/auth/api-keys",
            Some(json!({"name": "x"})),
        );
        assert_error(status, &got, 403, "scope_forbidden");
    }
}

#[test]
fn key_creation_is_validated_and_expiry_enforced() {
    for db in backends() {
        let s = Server::start(&db);
        let bad = [
            (json!({}), "validation_failed"),
            (json!({"name": ""}), "validation_failed"),
            (json!({"name": "x", "role": "root"}), "validation_failed"),
            (
                json!({"name": "x", "allowedSessions": ["nope"]}),
                "validation_failed",
            ),
            (
                json!({"name": "x", "allowedSessions": ["00000000-0000-4000-8000-000000000000"]}),
                "validation_failed",
            ),
            (
                json!({"name": "x", "expiresAt": "yesterday"}),
                "validation_failed",
            ),
            (
                json!({"name": "x", "expiresAt": "2001-01-01T00:00:00.000Z"}),
                "validation_failed",
            ),
            (json!({"name": "x", "colour": "blue"}), "unknown_field"),
        ];
        for (body, code) in bad {
            let (status, got) = s.call("POST", "/api/auth/api-keys", Some(body.clone()));
            assert_error(status, &got, 400, code);
        }
        let (_, list) = s.call("GET", "/api/auth/api-keys", None);
        assert_eq!(
            list.as_array().unwrap().len(),
            1,
            "only the admin key: {list}"
        );

        let soon = (chrono::Utc::now() + chrono::Duration::seconds(2)).to_rfc3339();
        let (secret, got) = create_key(&s, json!({"name": "brief", "expiresAt": soon}));
        assert!(got["expiresAt"].as_str().unwrap().ends_with('Z'));
        assert_eq!(s.call_as(&secret, "GET", "/api/sessions", None).0, 200);
        // Refused from its expiry on (polled: the clock is the subject here).
        let (status, got) = poll(10, "the key's expiry", || {
            match s.call_as(&secret, "GET", "/api/sessions", None) {
                (200, got) => Err(got.to_string()),
                refused => Ok(refused),
            }
        });
        assert_error(status, &got, 401, "api_key_expired");
    }
}
