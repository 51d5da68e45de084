//! A session's settings on a live session (issue 11.3) and the tenant rules
//! around them (issue 14.5, 14.6), over real HTTP on every backend:
//! `GET/PATCH …/config` and `…/proxy`, the paged list, proxy passwords sealed
//! at rest, the proxy address policy, and sessions per key.

use crate::common::*;
use diesel::prelude::*;
use diesel::{PgConnection, SqliteConnection};
use serde_json::{json, Value};

fn key(s: &Server, role: &str, sessions: Option<Vec<&str>>) -> String {
    let mut body = json!({"name": format!("{role}-key"), "role": role});
    if let Some(ids) = sessions {
        body["allowedSessions"] = json!(ids);
    }
    let (status, got) = s.call("POST", "/api/auth/api-keys", Some(body));
    assert_eq!(status, 201, "{got}");
    got["apiKey"].as_str().unwrap().to_string()
}

fn refused(status: u16, got: &Value, want_status: u16, code: &str, names: &str) {
    assert_error(status, got, want_status, code);
    assert!(
        got["message"].as_str().unwrap().contains(names),
        "'{names}' not named: {got}"
    );
}

#[test]
fn config_get_and_patch_with_null_restoring_defaults_and_every_refusal() {
    for db in backends() {
        let mut s = Server::start_with(
            &db,
            &[
                ("WASUP_ADMIN_KEY", ADMIN_KEY),
                ("WASUP_MAX_METADATA_BYTES", "64"),
            ],
        );
        let id = s.create_session("cfg-bot");
        let path = format!("/api/sessions/{id}/config");
        let (status, got) = s.call("GET", &path, None);
        assert_eq!(status, 200, "{got}");
        assert_eq!(
            got,
            json!({"maxReconnectAttempts": 5, "reconnectBaseDelay": 5000, "autoRejectCalls": false,
                   "sending": {"minDelayMs": 1500, "maxDelayMs": 4000, "typing": true,
                               "perMinute": 20, "perDay": 1000, "queueTtlSeconds": 86400},
                   "metadata": null})
        );

        let (status, got) = s.call(
            "PATCH",
            &path,
            Some(
                json!({"maxReconnectAttempts": 3, "reconnectBaseDelay": 2000,
                        "autoRejectCalls": true, "metadata": {"team": "ops"},
                        "sending": {"minDelayMs": 0, "maxDelayMs": 10}}),
            ),
        );
        assert_eq!(status, 200, "{got}");
        assert_eq!(got["reconnectRequired"], false);
        assert_eq!(
            (
                &got["maxReconnectAttempts"],
                &got["reconnectBaseDelay"],
                &got["autoRejectCalls"]
            ),
            (&json!(3), &json!(2000), &json!(true))
        );
        assert_eq!(got["metadata"], json!({"team": "ops"}));
        assert_eq!(
            (&got["sending"]["minDelayMs"], &got["sending"]["maxDelayMs"]),
            (&json!(0), &json!(10))
        );
        // A partial `sending` merges; null restores one field, or all.
        let (_, got) = s.call(
            "PATCH",
            &path,
            Some(json!({"maxReconnectAttempts": null, "sending": {"perMinute": 0}})),
        );
        assert_eq!(got["maxReconnectAttempts"], 5);
        assert_eq!(got["reconnectBaseDelay"], 2000);
        assert_eq!(
            (&got["sending"]["minDelayMs"], &got["sending"]["perMinute"]),
            (&json!(0), &json!(0))
        );
        let (_, got) = s.call(
            "PATCH",
            &path,
            Some(json!({"sending": null, "metadata": null})),
        );
        assert_eq!(got["sending"]["minDelayMs"], 1500);
        assert!(got["metadata"].is_null());
        let (_, got) = s.call("PATCH", &path, Some(json!({"metadata": [1, 2]})));
        assert_eq!(got["metadata"], json!([1, 2]));

        // Every refusal changes nothing.
        let before = s.call("GET", &path, None).1;
        for (body, code, names) in [
            (json!({"nope": 1}), "unknown_field", "nope"),
            (json!({"sending": {"bogus": 1}}), "unknown_field", "bogus"),
            (
                json!({"maxReconnectAttempts": 21}),
                "validation_failed",
                "maxReconnectAttempts",
            ),
            (
                json!({"maxReconnectAttempts": -1}),
                "validation_failed",
                "maxReconnectAttempts",
            ),
            (
                json!({"reconnectBaseDelay": "soon"}),
                "validation_failed",
                "reconnectBaseDelay",
            ),
            (
                json!({"reconnectBaseDelay": 999}),
                "validation_failed",
                "reconnectBaseDelay",
            ),
            (
                json!({"autoRejectCalls": "yes"}),
                "validation_failed",
                "autoRejectCalls",
            ),
            (
                json!({"sending": {"minDelayMs": 500, "maxDelayMs": 100}}),
                "validation_failed",
                "sending.maxDelayMs",
            ),
            (
                json!({"sending": {"queueTtlSeconds": 0}}),
                "validation_failed",
                "sending.queueTtlSeconds",
            ),
            (json!({"sending": 5}), "validation_failed", "sending"),
        ] {
            let (status, got) = s.call("PATCH", &path, Some(body.clone()));
            refused(status, &got, 400, code, names);
        }
        let (status, got) = s.call(
            "PATCH",
            &path,
            Some(json!({"metadata": {"blob": "x".repeat(100)}})),
        );
        refused(
            status,
            &got,
            422,
            "limit_exceeded",
            "WASUP_MAX_METADATA_BYTES",
        );
        let res = s
            .req("PATCH", &path, Some(ADMIN_KEY))
            .header("content-type", "application/json")
            .body("{")
            .send()
            .unwrap();
        let (status, got) = split(res);
        assert_error(status, &got, 400, "invalid_json");
        let viewer = key(&s, "viewer", None);
        let (status, got) = s.call_as(&viewer, "PATCH", &path, Some(json!({})));
        assert_error(status, &got, 403, "insufficient_role");
        let (status, got) = s.call_as(&viewer, "GET", &path, None);
        assert_eq!(status, 200, "{got}");
        let other = s.create_session("other-bot");
        let scoped = key(&s, "operator", Some(vec![other.as_str()]));
        let (status, got) = s.call_as(&scoped, "PATCH", &path, Some(json!({})));
        assert_error(status, &got, 401, "session_not_in_scope");
        let (status, got) = s.call_as(&scoped, "GET", &path, None);
        assert_error(status, &got, 401, "session_not_in_scope");
        let (status, got) = s.call("GET", "/api/sessions/ghost-bot/config", None);
        assert_error(status, &got, 404, "session_not_found");
        let (status, got) = s.call("PATCH", "/api/sessions/ghost-bot/config", Some(json!({})));
        assert_error(status, &got, 404, "session_not_found");
        assert_eq!(s.call("GET", &path, None).1, before);

        // Persisted: a restart reads the same settings; the status never moved.
        s.restart();
        assert_eq!(s.call("GET", &path, None).1, before);
        let (_, session) = s.call("GET", &format!("/api/sessions/{id}"), None);
        assert_eq!(session["status"], "created", "{}", db.label());
    }
}

/// The raw `proxy_url` column of every session, as stored.
fn stored_proxy_urls(db: &TestDb, s: &Server) -> Vec<Option<String>> {
    use wasup::db::schema::sessions::dsl as cols;
    let query = cols::sessions.select(cols::proxy_url);
    match db {
        TestDb::Sqlite => {
            let path = s.data_path("wasup.db");
            let mut conn = SqliteConnection::establish(path.to_str().unwrap()).unwrap();
            query.load(&mut conn).unwrap()
        }
        TestDb::Postgres(t) => {
            let mut conn = PgConnection::establish(t.url()).unwrap();
            query.load(&mut conn).unwrap()
        }
    }
}

/// Write a plain (pre-sealing) proxy URL into every session row.
fn store_plain_proxy_url(db: &TestDb, s: &Server, url: &str) {
    use wasup::db::schema::sessions::dsl as cols;
    let update = diesel::update(cols::sessions).set(cols::proxy_url.eq(url));
    match db {
        TestDb::Sqlite => {
            let path = s.data_path("wasup.db");
            let mut conn = SqliteConnection::establish(path.to_str().unwrap()).unwrap();
            update.execute(&mut conn).unwrap();
        }
        TestDb::Postgres(t) => {
            let mut conn = PgConnection::establish(t.url()).unwrap();
            update.execute(&mut conn).unwrap();
        }
    };
}

#[test]
fn proxy_is_shown_masked_sealed_at_rest_changed_and_cleared() {
    for db in backends() {
        let mut s = Server::start(&db);
        // Public literal addresses: no DNS needed, the address policy passes.
        let (status, got) = s.call(
            "POST",
            "/api/sessions",
            Some(json!({"name": "px-bot", "proxyUrl": "socks5://alice:s3cret-pw@93.184.216.34:1080"})),
        );
        assert_eq!(status, 201, "{got}");
        let id = got["id"].as_str().unwrap().to_string();
        let path = format!("/api/sessions/{id}/proxy");
        let want = json!({"enabled": true, "proxyType": "socks5",
                          "proxyHost": "93.184.216.34:1080", "hasCredentials": true});
        let viewer = key(&s, "viewer", None);
        let (status, got) = s.call_as(&viewer, "GET", &path, None);
        assert_eq!((status, &got), (200, &want));
        assert!(!got.to_string().contains("s3cret") && !got.to_string().contains("alice"));

        // At rest: sealed, the password nowhere in the row.
        let rows = stored_proxy_urls(&db, &s);
        let stored = rows[0].as_deref().unwrap();
        assert!(stored.starts_with("wasup-sealed:v1:"), "{stored}");
        assert!(
            !stored.contains("s3cret") && !stored.contains("93.184"),
            "{stored}"
        );
        // ... and opened again after a restart.
        s.restart();
        assert_eq!(s.call("GET", &path, None).1, want);

        let (status, got) = s.call(
            "PATCH",
            &path,
            Some(json!({"proxyUrl": "http://93.184.216.35:3128", "proxyType": "http"})),
        );
        assert_eq!(status, 200, "{got}");
        assert_eq!(
            got,
            json!({"enabled": true, "proxyType": "http", "proxyHost": "93.184.216.35:3128",
                   "hasCredentials": false, "reconnectRequired": false})
        );
        for (body, status_want, code, names) in [
            (json!({}), 400, "validation_failed", "proxyUrl"),
            (
                json!({"proxyUrl": "ftp://h.example:1"}),
                400,
                "validation_failed",
                "proxyUrl",
            ),
            (json!({"proxyUrl": 5}), 400, "validation_failed", "proxyUrl"),
            (
                json!({"proxyUrl": "http://93.184.216.34:1", "proxyType": "socks5"}),
                400,
                "validation_failed",
                "proxyType",
            ),
            (
                json!({"proxyType": "http"}),
                400,
                "validation_failed",
                "proxyUrl",
            ),
            (json!({"proxyUrl": null, "x": 1}), 400, "unknown_field", "x"),
            (
                json!({"proxyUrl": "http://127.0.0.1:3128"}),
                400,
                "proxy_url_not_allowed",
                "WASUP_PROXY_ALLOW_PRIVATE",
            ),
            (
                json!({"proxyUrl": "socks5://u:p@169.254.169.254:1080"}),
                400,
                "proxy_url_not_allowed",
                "link-local",
            ),
            (
                json!({"proxyUrl": "http://localhost:3128"}),
                400,
                "proxy_url_not_allowed",
                "loopback",
            ),
        ] {
            let (status, got) = s.call("PATCH", &path, Some(body.clone()));
            refused(status, &got, status_want, code, names);
        }
        let (status, got) = s.call_as(&viewer, "PATCH", &path, Some(json!({"proxyUrl": null})));
        assert_error(status, &got, 403, "insufficient_role");
        let (status, got) = s.call(
            "POST",
            "/api/sessions",
            Some(json!({"name": "private-px", "proxyUrl": "socks5://10.0.0.1:1080"})),
        );
        refused(status, &got, 400, "proxy_url_not_allowed", "private");
        assert_eq!(s.call("GET", "/api/sessions/private-px", None).0, 404);
        assert_eq!(s.call("GET", &path, None).1["proxyType"], "http");

        let (status, got) = s.call("PATCH", &path, Some(json!({"proxyUrl": null})));
        assert_eq!(status, 200, "{got}");
        assert_eq!(
            got,
            json!({"enabled": false, "proxyType": null, "proxyHost": null,
                   "hasCredentials": false, "reconnectRequired": false})
        );
        assert_eq!(stored_proxy_urls(&db, &s), vec![None]);

        // A row from before sealing (plain URL) still loads (read-time fallback).
        s.stop();
        store_plain_proxy_url(&db, &s, "http://bob:old-pw@93.184.216.36:8080");
        s.restart_stopped();
        assert_eq!(
            s.call("GET", &path, None).1,
            json!({"enabled": true, "proxyType": null, "proxyHost": "93.184.216.36:8080",
                   "hasCredentials": true})
        );
    }
}

#[test]
fn private_proxies_pass_when_opted_in() {
    for db in backends() {
        let s = Server::start_with(
            &db,
            &[
                ("WASUP_ADMIN_KEY", ADMIN_KEY),
                ("WASUP_PROXY_ALLOW_PRIVATE", "true"),
            ],
        );
        let (status, got) = s.call(
            "POST",
            "/api/sessions",
            Some(json!({"name": "lan-px", "proxyUrl": "http://127.0.0.1:3128"})),
        );
        assert_eq!(status, 201, "{got}");
        let (status, got) = s.call(
            "PATCH",
            "/api/sessions/lan-px/proxy",
            Some(json!({"proxyUrl": "socks5://u:p@10.0.0.1:1080"})),
        );
        assert_eq!(status, 200, "{got}");
        assert_eq!(got["proxyHost"], "10.0.0.1:1080");
    }
}

fn names(list: &Value) -> Vec<&str> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect()
}

#[test]
fn the_list_pages_by_limit_offset_and_name() {
    for db in backends() {
        let s = Server::start(&db);
        let mut ids = Vec::new();
        for i in 0..5 {
            ids.push(s.create_session(&format!("page-{i}")));
        }
        let (status, all) = s.call("GET", "/api/sessions", None);
        assert_eq!(status, 200);
        let order = names(&all);
        assert_eq!(order.len(), 5);
        let page = |query: &str| {
            let res = s
                .req("GET", &format!("/api/sessions{query}"), Some(ADMIN_KEY))
                .send()
                .unwrap();
            let total: u64 = res.headers()["x-total-count"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            let (status, body) = split(res);
            assert_eq!(status, 200, "{query}: {body}");
            (total, body)
        };
        let (total, got) = page("?limit=2");
        assert_eq!((total, names(&got)), (5, order[..2].to_vec()));
        let (_, got) = page("?limit=2&offset=2");
        assert_eq!(names(&got), order[2..4].to_vec());
        let (_, got) = page("?offset=4");
        assert_eq!(names(&got), order[4..].to_vec());
        let (total, got) = page("?offset=10&limit=1000");
        assert_eq!((total, names(&got)), (5, vec![]));
        let (total, got) = page("?name=page-3");
        assert_eq!((total, names(&got)), (1, vec!["page-3"]));
        assert_eq!(got[0]["id"], ids[3].as_str());
        let (total, got) = page("?name=page-3&offset=1");
        assert_eq!((total, names(&got)), (1, vec![]));
        let (total, got) = page("?name=nobody");
        assert_eq!((total, names(&got)), (0, vec![]));
        let (total, got) = page("");
        assert_eq!((total, names(&got)), (5, order.clone()));

        // A scoped key pages through its own sessions only.
        let scoped = key(&s, "viewer", Some(vec![ids[1].as_str(), ids[3].as_str()]));
        let res = s
            .req("GET", "/api/sessions?limit=1", Some(&scoped))
            .send()
            .unwrap();
        assert_eq!(res.headers()["x-total-count"], "2");
        let (_, got) = split(res);
        assert_eq!(names(&got), vec!["page-3"]);
        let (_, got) = s.call_as(&scoped, "GET", "/api/sessions?name=page-4", None);
        assert_eq!(got, json!([]));

        for (query, names_) in [
            ("?limit=0", "limit"),
            ("?limit=1001", "limit"),
            ("?limit=abc", "limit"),
            ("?limit=", "limit"),
            ("?offset=-1", "offset"),
            ("?offset=1.5", "offset"),
            ("?sort=name", "limit"),
            ("?limit=1&limit=2", "limit"),
        ] {
            let (status, got) = s.call("GET", &format!("/api/sessions{query}"), None);
            refused(status, &got, 400, "validation_failed", names_);
        }
    }
}

#[test]
fn sessions_per_key_are_limited_and_counted_across_restarts() {
    for db in backends() {
        let mut s = Server::start_with(
            &db,
            &[
                ("WASUP_ADMIN_KEY", ADMIN_KEY),
                ("WASUP_MAX_SESSIONS_PER_KEY", "2"),
            ],
        );
        let first = s.create_session("mine-1");
        s.create_session("mine-2");
        let create = |s: &Server, key: &str, name: &str| {
            s.call_as(key, "POST", "/api/sessions", Some(json!({"name": name})))
        };
        let (status, got) = create(&s, ADMIN_KEY, "mine-3");
        refused(
            status,
            &got,
            422,
            "limit_exceeded",
            "WASUP_MAX_SESSIONS_PER_KEY",
        );
        // Another key has its own count.
        let operator = key(&s, "operator", None);
        assert_eq!(create(&s, &operator, "theirs-1").0, 201);
        assert_eq!(create(&s, &operator, "theirs-2").0, 201);
        let (status, got) = create(&s, &operator, "theirs-3");
        refused(
            status,
            &got,
            422,
            "limit_exceeded",
            "WASUP_MAX_SESSIONS_PER_KEY",
        );

        // The creator is stored: a restart counts the same.
        s.restart();
        let (status, got) = create(&s, ADMIN_KEY, "mine-3");
        refused(
            status,
            &got,
            422,
            "limit_exceeded",
            "WASUP_MAX_SESSIONS_PER_KEY",
        );
        // A deleted session frees its slot.
        assert_eq!(
            s.call("DELETE", &format!("/api/sessions/{first}"), None).0,
            204
        );
        assert_eq!(create(&s, ADMIN_KEY, "mine-3").0, 201);
        let (status, all) = s.call("GET", "/api/sessions", None);
        assert_eq!((status, all.as_array().unwrap().len()), (200, 4));
    }
}

/// Sum of a counter over all its label values.
#[cfg(feature = "simulator")]
fn counter(s: &Server, name: &str) -> f64 {
    let text = s
        .req("GET", "/metrics", None)
        .send()
        .unwrap()
        .text()
        .unwrap();
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Simulator build: a linked session takes every config change and a proxy
/// change without leaving `ready`, without a restart and without a new
/// engine start, read from its state and the counters (not from time).
#[cfg(feature = "simulator")]
#[test]
fn a_linked_session_stays_ready_through_settings_changes() {
    for db in backends() {
        let s = Server::start(&db);
        let id = crate::e2e_link::link(&s, "live-bot", "628123450001", json!({}));
        let before = s.call("GET", &format!("/api/sessions/{id}"), None).1;
        let starts = counter(&s, "wasup_engine_starts_total");
        let exits = counter(&s, "wasup_engine_exits_total");
        assert!(starts >= 1.0);

        let (status, got) = s.call(
            "PATCH",
            &format!("/api/sessions/{id}/config"),
            Some(
                json!({"maxReconnectAttempts": 2, "reconnectBaseDelay": 1000,
                        "sending": {"minDelayMs": 0, "maxDelayMs": 0, "typing": false},
                        "metadata": {"tier": "gold"}}),
            ),
        );
        assert_eq!(status, 200, "{got}");
        assert_eq!(got["reconnectRequired"], false);
        // A proxy applies from the next start: the answer says a reconnect is needed.
        let (status, got) = s.call(
            "PATCH",
            &format!("/api/sessions/{id}/proxy"),
            Some(json!({"proxyUrl": "socks5://u:pw@93.184.216.34:1080"})),
        );
        assert_eq!(status, 200, "{got}");
        assert_eq!(got["reconnectRequired"], true);
        let (status, got) = s.call(
            "PATCH",
            &format!("/api/sessions/{id}/proxy"),
            Some(json!({"proxyUrl": null})),
        );
        assert_eq!((status, &got["reconnectRequired"]), (200, &json!(true)));

        let after = s.call("GET", &format!("/api/sessions/{id}"), None).1;
        for field in ["status", "connectedAt", "restarts", "phone", "nextRetryAt"] {
            assert_eq!(after[field], before[field], "{field}: {after}");
        }
        assert_eq!(after["status"], "ready");
        assert_eq!(counter(&s, "wasup_engine_starts_total"), starts);
        assert_eq!(counter(&s, "wasup_engine_exits_total"), exits);
        let (_, me) = s.call("GET", &format!("/api/sessions/{id}/me"), None);
        assert_eq!(me["id"], "628123450001@c.us");
        let (_, config) = s.call("GET", &format!("/api/sessions/{id}/config"), None);
        assert_eq!(config["metadata"], json!({"tier": "gold"}));
        assert_eq!(config["sending"]["minDelayMs"], 0);
    }
}
