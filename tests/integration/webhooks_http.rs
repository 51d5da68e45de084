//! Webhooks over real HTTP (contract §6), on every backend: real receivers on
//! loopback, events caused by real state changes (the engine fails to
//! connect here, so start → initializing → disconnected → … → failed).

use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::common::*;
use crate::receiver::{HugeReplyReceiver, Received, Receiver};
use serde_json::{json, Value};
use wasup::db::records::DbStore;
use wasup::db::Db;
use wasup_actors::webhook::MAX_TEST_SENDS;

const MASTER_KEY: &str = "0101010101010101010101010101010101010101010101010101010101010101";

// ------------------------------------------------------------------ helpers

/// Settings shared by every server of a test (so a second server can take
/// over the first one's database and secrets).
fn env_for(db: &TestDb, dir: &std::path::Path, allow_private: bool) -> Vec<(String, String)> {
    let url = match db {
        TestDb::Sqlite => dir.join("shared.db").to_string_lossy().into_owned(),
        TestDb::Postgres(t) => t.url().to_string(),
    };
    vec![
        ("WASUP_ADMIN_KEY".into(), ADMIN_KEY.into()),
        ("WASUP_MASTER_KEY".into(), MASTER_KEY.into()),
        ("WASUP_DATABASE_URL".into(), url),
        ("WASUP_CONNECT_TIMEOUT".into(), "2".into()),
        // These tests need starts that fail to connect. The production build
        // finds WhatsApp unreachable here; a simulator build is pointed at a
        // simulator process that is not there (the production build ignores
        // this setting).
        (
            "WASUP_SIMULATOR_URL".into(),
            "ws://127.0.0.1:9/ws/chat".into(),
        ),
        (
            "WASUP_WEBHOOK_ALLOW_PRIVATE".into(),
            allow_private.to_string(),
        ),
    ]
}

fn start(env: &[(String, String)]) -> Server {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    // The db argument only matters when the env names no database.
    Server::start_with(&TestDb::Sqlite, &env)
}

fn db_url(env: &[(String, String)]) -> String {
    env.iter()
        .find(|(k, _)| k == "WASUP_DATABASE_URL")
        .unwrap()
        .1
        .clone()
}

/// Every event the gateway stored for a session, in seq order: (id, seq, name).
fn stored_events(url: &str, session: &str) -> Vec<(String, u64, String)> {
    let url = url.to_string();
    let id = uuid::Uuid::parse_str(session).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let db = Db::open_with_max_connections(&url, 1).unwrap();
        let store = DbStore::new(db);
        store
            .events(id)
            .await
            .unwrap()
            .into_iter()
            .map(|e| (e.id.clone(), e.seq, e.name().to_string()))
            .collect()
    })
}

/// A session whose engine fails fast: one restart, then `failed`.
fn flaky_session(s: &Server, name: &str, retries: u32) -> String {
    let (status, body) = s.call(
        "POST",
        "/api/sessions",
        Some(json!({"name": name, "config": {"maxReconnectAttempts": retries, "reconnectBaseDelay": 1000}})),
    );
    assert_eq!(status, 201, "{body}");
    body["id"].as_str().unwrap().to_string()
}

fn create_hook(s: &Server, session: &str, body: Value) -> Value {
    let (status, got) = s.call(
        "POST",
        &format!("/api/sessions/{session}/webhooks"),
        Some(body),
    );
    assert_eq!(status, 201, "{got}");
    got
}

/// Poll a webhook's delivery log (`hook`: its API path) filtered by
/// `status` until `done` holds; the entries.
fn wait_deliveries(
    s: &Server,
    hook: &str,
    status: &str,
    secs: u64,
    done: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    poll(secs, &format!("{status} deliveries of {hook}"), || {
        let (code, list) = s.call("GET", &format!("{hook}/deliveries?status={status}"), None);
        assert_eq!(code, 200, "{list}");
        let list = list.as_array().unwrap().clone();
        match done(&list) {
            true => Ok(list),
            false => Err(format!("{list:?}")),
        }
    })
}

fn start_and_fail(s: &Server, session: &str) {
    let (status, body) = s.call("POST", &format!("/api/sessions/{session}/start"), None);
    assert_eq!(status, 200, "{body}");
    s.wait_session(session, 60, |b| b["status"] == "failed");
}

/// The distinct event ids in first-arrival order.
fn distinct(got: &[Received]) -> Vec<String> {
    let mut ids: Vec<String> = Vec::new();
    for r in got {
        let id = r.header("webhook-id").to_string();
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    ids
}

// ------------------------------------------------------------------ tests

#[test]
fn events_arrive_signed_in_seq_order_and_filtered() {
    for db in backends() {
        let dir = tempfile::tempdir().unwrap();
        let env = env_for(&db, dir.path(), true);
        let s = start(&env);
        let all = Receiver::ok();
        let some = Receiver::ok();
        let session = flaky_session(&s, "hooked", 1);
        let hook = create_hook(&s, &session, json!({"url": all.url()}));
        assert_eq!(hook["events"], json!(["*"]), "{}", db.label());
        assert_eq!(hook["active"], true);
        assert_eq!(hook["maxAttempts"], 10);
        assert_eq!(hook["sessionId"], session.as_str());
        let secret = hook["secret"].as_str().unwrap().to_string();
        let filtered = create_hook(
            &s,
            "hooked",
            json!({"url": some.url(), "events": ["session.disconnected"], "maxAttempts": 3}),
        );
        let fsecret = filtered["secret"].as_str().unwrap().to_string();

        start_and_fail(&s, &session);
        let stored = stored_events(&db_url(&env), &session);
        assert!(stored.len() >= 5, "{stored:?}");
        let got = all.wait(60, "every event", |g| distinct(g).len() >= stored.len());
        // Nothing was retried: exactly one request per event, in seq order.
        assert_eq!(got.len(), stored.len(), "{}", db.label());
        for (i, (r, (id, seq, name))) in got.iter().zip(&stored).enumerate() {
            r.assert_signed_by(&secret);
            let body = r.json();
            assert_eq!(r.header("webhook-id"), id);
            assert_eq!(body["id"], id.as_str());
            assert_eq!(body["seq"], *seq);
            assert_eq!(*seq, i as u64 + 1);
            assert_eq!(body["event"], name.as_str());
            assert_eq!(r.header("x-wasup-event"), name);
            assert_eq!(r.header("x-wasup-attempt"), "1");
            assert_eq!(r.header("content-type"), "application/json");
            assert_eq!(body["sessionId"], session.as_str());
            assert_eq!(body["sessionName"], "hooked");
            let ts = body["timestamp"].as_str().unwrap();
            assert!(ts.ends_with('Z') && ts.len() == 24, "{ts}");
            let wts: i64 = r.header("webhook-timestamp").parse().unwrap();
            assert!((wts - chrono::Utc::now().timestamp()).abs() < 120);
        }
        let first = got[0].json();
        assert_eq!(
            first["data"],
            json!({"status": "initializing", "previousStatus": "created", "lastError": null})
        );
        let last_status = got
            .iter()
            .map(Received::json)
            .rfind(|b| b["event"] == "session.status")
            .unwrap();
        assert_eq!(last_status["data"]["status"], "failed");
        assert!(last_status["data"]["lastError"]
            .as_str()
            .unwrap()
            .starts_with("Reconnection failed after 1 attempts"));

        // The filtered webhook got exactly the disconnected events, signed with its own secret.
        let want: Vec<&String> = stored
            .iter()
            .filter(|(_, _, n)| n == "session.disconnected")
            .map(|(id, _, _)| id)
            .collect();
        assert!(!want.is_empty());
        let got_f = some.wait(30, "disconnected events", |g| g.len() >= want.len());
        s.wait_no_pending_deliveries(30);
        assert_eq!(some.count(), want.len());
        for (r, id) in got_f.iter().zip(&want) {
            r.assert_signed_by(&fsecret);
            assert_eq!(r.header("webhook-id"), id.as_str());
            let body = r.json();
            assert_eq!(body["event"], "session.disconnected");
            assert!(body["data"]["willRetry"].is_boolean());
            assert!(body["data"]["reason"].is_string());
        }

        // The attempt log lists every delivery.
        let hid = hook["id"].as_str().unwrap();
        let (status, list) = s.call(
            "GET",
            &format!("/api/sessions/{session}/webhooks/{hid}/deliveries"),
            None,
        );
        assert_eq!(status, 200);
        let list = list.as_array().unwrap();
        assert_eq!(list.len(), stored.len());
        for entry in list {
            assert_eq!(entry["status"], "delivered");
            assert_eq!(entry["statusCode"], 200);
            assert_eq!(entry["attempt"], 1);
            assert!(entry["error"].is_null());
            assert!(stored
                .iter()
                .any(|(id, _, n)| entry["eventId"] == id.as_str() && entry["event"] == n.as_str()));
        }
        let (_, failed) = s.call(
            "GET",
            &format!("/api/sessions/{session}/webhooks/{hid}/deliveries?status=failed"),
            None,
        );
        assert_eq!(failed, json!([]));
    }
}

#[test]
fn a_failing_receiver_gets_the_same_event_again_with_the_attempt_number() {
    for db in backends() {
        let dir = tempfile::tempdir().unwrap();
        let env = env_for(&db, dir.path(), true);
        let s = start(&env);
        let rx = Receiver::start(Arc::new(|n| {
            (if n < 2 { 500 } else { 200 }, Duration::ZERO)
        }));
        let session = flaky_session(&s, "retry-me", 0);
        let hook = create_hook(
            &s,
            &session,
            json!({"url": rx.url(), "events": ["session.status"]}),
        );
        let secret = hook["secret"].as_str().unwrap();
        start_and_fail(&s, &session);
        let got = rx.wait(60, "three attempts", |g| g.len() >= 3);
        let id = got[0].header("webhook-id").to_string();
        for (i, r) in got[..3].iter().enumerate() {
            r.assert_signed_by(secret);
            assert_eq!(r.header("webhook-id"), id, "{}", db.label());
            assert_eq!(r.header("x-wasup-attempt"), (i + 1).to_string());
            assert_eq!(r.json()["seq"], 1);
        }
        let hid = hook["id"].as_str().unwrap();
        let path = format!("/api/sessions/{session}/webhooks/{hid}/deliveries?status=failed");
        let (_, failed) = s.call("GET", &path, None);
        let failed = failed.as_array().unwrap().clone();
        assert_eq!(failed.len(), 2, "{failed:?}");
        for f in &failed {
            assert_eq!(f["eventId"], id.as_str());
            assert_eq!(f["statusCode"], 500);
            assert_eq!(f["status"], "failed");
            assert_eq!(f["error"], "receiver answered HTTP 500");
        }
        let attempts: Vec<u64> = failed
            .iter()
            .map(|f| f["attempt"].as_u64().unwrap())
            .collect();
        assert_eq!(attempts, vec![2, 1], "newest first");
    }
}

#[test]
fn a_receiver_outage_and_a_gateway_crash_lose_nothing() {
    for db in backends() {
        let dir = tempfile::tempdir().unwrap();
        let env = env_for(&db, dir.path(), true);
        // A closed port for the receiver that is down. It is chosen below the
        // kernel's ephemeral range, so no bind(0) and no outgoing connection
        // of a parallel test can take it before the receiver comes back.
        let port = (0..1000)
            .map(|_| 20_000 + (uuid::Uuid::new_v4().as_u128() % 12_000) as u16)
            .find(|p| TcpListener::bind(("127.0.0.1", *p)).is_ok())
            .expect("a free port below the ephemeral range");
        let url = format!("http://127.0.0.1:{port}/hook");
        let s = start(&env);
        let session = flaky_session(&s, "crashy", 1);
        let hook = create_hook(&s, &session, json!({"url": url, "maxAttempts": 20}));
        let secret = hook["secret"].as_str().unwrap().to_string();
        start_and_fail(&s, &session);
        // More events: a stop after the failure.
        let (status, _) = s.call("POST", &format!("/api/sessions/{session}/stop"), None);
        assert_eq!(status, 200);
        let stored = stored_events(&db_url(&env), &session);
        assert!(stored.len() >= 5, "{stored:?}");
        // Failed attempts were made and logged while the receiver was down.
        let hid = hook["id"].as_str().unwrap().to_string();
        let failed = wait_deliveries(
            &s,
            &format!("/api/sessions/{session}/webhooks/{hid}"),
            "failed",
            20,
            |d| !d.is_empty(),
        );
        assert!(failed[0]["statusCode"].is_null());
        assert!(failed[0]["error"]
            .as_str()
            .unwrap()
            .starts_with("connection failed"));
        // SIGKILL (Server's drop kills the process).
        drop(s);

        let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
        let rx = Receiver::start_on(
            listener,
            Arc::new(|_| (200, Duration::ZERO)),
            Arc::default(),
            false,
        );
        let _s2 = start(&env);
        let got = rx.wait(120, "every event after the crash", |g| {
            distinct(g).len() >= stored.len()
        });
        let ids = distinct(&got);
        let want: Vec<String> = stored.iter().map(|(id, _, _)| id.clone()).collect();
        assert_eq!(ids, want, "{}: every event, in seq order", db.label());
        for r in &got {
            r.assert_signed_by(&secret);
        }
        let seqs: Vec<u64> = got
            .iter()
            .map(|r| r.json()["seq"].as_u64().unwrap())
            .collect();
        let mut sorted = seqs.clone();
        sorted.dedup();
        assert_eq!(sorted, (1..=stored.len() as u64).collect::<Vec<_>>());
    }
}

#[test]
fn dead_letters_are_listed_and_redriven() {
    for db in backends() {
        let dir = tempfile::tempdir().unwrap();
        let env = env_for(&db, dir.path(), true);
        let s = start(&env);
        let healthy = Arc::new(AtomicBool::new(false));
        let h = healthy.clone();
        let rx = Receiver::start(Arc::new(move |_| {
            (
                if h.load(Ordering::SeqCst) { 200 } else { 503 },
                Duration::ZERO,
            )
        }));
        let session = flaky_session(&s, "deadly", 0);
        let hook = create_hook(
            &s,
            &session,
            json!({"url": rx.url(), "events": ["session.status"], "maxAttempts": 2}),
        );
        let hid = hook["id"].as_str().unwrap().to_string();
        start_and_fail(&s, &session);
        let stored: Vec<_> = stored_events(&db_url(&env), &session)
            .into_iter()
            .filter(|(_, _, n)| n == "session.status")
            .collect();
        let base = format!("/api/sessions/{session}/webhooks/{hid}");
        let dead = wait_deliveries(&s, &base, "dead", 60, |d| d.len() == stored.len());
        for d in &dead {
            assert_eq!(d["attempt"], 2, "{}", db.label());
            assert_eq!(d["statusCode"], 503);
            assert_eq!(d["status"], "dead");
        }
        assert_eq!(rx.received().len(), 2 * stored.len());
        // Dead letters stay dead: none is waiting for another attempt.
        assert_eq!(s.pending_deliveries(), 0);
        assert_eq!(rx.count(), 2 * stored.len());

        healthy.store(true, Ordering::SeqCst);
        let first = &stored[0].0;
        let (status, body) = s.call("POST", &format!("{base}/deliveries/{first}/redrive"), None);
        assert_eq!(status, 202, "{body}");
        let got = rx.wait(30, "the redriven event", |g| g.len() > 2 * stored.len());
        let last = got.last().unwrap();
        assert_eq!(last.header("webhook-id"), first);
        assert_eq!(last.header("x-wasup-attempt"), "1");
        last.assert_signed_by(hook["secret"].as_str().unwrap());
        let ok = wait_deliveries(&s, &base, "delivered", 10, |d| d.len() == 1);
        assert_eq!(ok[0]["eventId"], first.as_str());
        assert_eq!(ok[0]["statusCode"], 200);
        // Only that one was redriven: nothing else is queued.
        assert_eq!(s.pending_deliveries(), 0);
        assert_eq!(rx.count(), 2 * stored.len() + 1);

        let (status, body) = s.call("POST", &format!("{base}/deliveries/evt_nope/redrive"), None);
        assert_error(status, &body, 404, "delivery_not_found");
        let (status, body) = s.call("GET", &format!("{base}/deliveries?status=bogus"), None);
        assert_error(status, &body, 400, "validation_failed");
    }
}

#[test]
fn private_addresses_are_refused_unless_allowed() {
    for db in backends() {
        let dir = tempfile::tempdir().unwrap();
        let env = env_for(&db, dir.path(), false);
        let s = start(&env);
        let session = flaky_session(&s, "guarded", 0);
        let path = format!("/api/sessions/{session}/webhooks");
        for url in [
            "http://127.0.0.1:9/x",
            "http://localhost:9/x",
            "http://[::1]:9/x",
            "http://10.1.2.3/x",
            "http://192.168.0.10/x",
            "http://169.254.169.254/latest/meta-data/",
            "http://100.64.0.1/x",
            "http://0.0.0.0/x",
            "http://[fd00::1]/x",
            "http://[::ffff:127.0.0.1]/x",
        ] {
            let (status, body) = s.call("POST", &path, Some(json!({"url": url})));
            assert_error(status, &body, 400, "webhook_url_not_allowed");
            assert!(
                body["message"]
                    .as_str()
                    .unwrap()
                    .contains("WASUP_WEBHOOK_ALLOW_PRIVATE"),
                "{body}"
            );
        }
        let (_, list) = s.call("GET", &path, None);
        assert_eq!(list, json!([]), "{}", db.label());

        // Allowed, created, then refused at delivery once the setting is off.
        drop(s);
        let rx = Receiver::ok();
        let s = start(&env_for(&db, dir.path(), true));
        let hook = create_hook(
            &s,
            &session,
            json!({"url": rx.url(), "events": ["session.status"]}),
        );
        let hid = hook["id"].as_str().unwrap().to_string();
        drop(s);
        let s = start(&env);
        let (status, body) = s.call(
            "PATCH",
            &format!("{path}/{hid}"),
            Some(json!({"url": "http://localhost:1/x"})),
        );
        assert_error(status, &body, 400, "webhook_url_not_allowed");
        start_and_fail(&s, &session);
        let failed = wait_deliveries(&s, &format!("{path}/{hid}"), "failed", 20, |d| {
            !d.is_empty()
        });
        let error = failed[0]["error"].as_str().unwrap();
        assert!(
            error.contains("127.0.0.1") && error.contains("loopback"),
            "{error}"
        );
        assert!(failed[0]["statusCode"].is_null());
        assert_eq!(
            rx.received().len(),
            0,
            "nothing reached the private receiver"
        );
    }
}

#[test]
fn webhook_bodies_are_validated() {
    let db = TestDb::Sqlite;
    let dir = tempfile::tempdir().unwrap();
    let s = start(&env_for(&db, dir.path(), true));
    let session = flaky_session(&s, "strict", 0);
    let path = format!("/api/sessions/{session}/webhooks");
    let url = "http://127.0.0.1:9/x";
    let cases = [
        (json!({"url": "ftp://example.com/x"}), "validation_failed"),
        (json!({"url": "not a url"}), "validation_failed"),
        (
            json!({"url": url, "events": ["session.nope"]}),
            "validation_failed",
        ),
        (json!({"url": url, "events": []}), "validation_failed"),
        (json!({"url": url, "maxAttempts": 0}), "validation_failed"),
        (json!({"url": url, "maxAttempts": 21}), "validation_failed"),
        (
            json!({"url": url, "headers": {"Webhook-Id": "x"}}),
            "validation_failed",
        ),
        (
            json!({"url": url, "headers": {"X-Wasup-Event": "x"}}),
            "validation_failed",
        ),
        (
            json!({"url": url, "headers": {"content-type": "text/plain"}}),
            "validation_failed",
        ),
        (
            json!({"url": url, "headers": {"Host": "evil"}}),
            "validation_failed",
        ),
        (
            json!({"url": url, "headers": {"bad name": "x"}}),
            "validation_failed",
        ),
        (
            json!({"url": url, "headers": {"X-Big": "a".repeat(9000)}}),
            "validation_failed",
        ),
        (
            json!({"url": url, "headers": {"X-N": 5}}),
            "validation_failed",
        ),
        (json!({"url": url, "secret": "plain"}), "validation_failed"),
        (json!({"url": url, "color": "red"}), "unknown_field"),
        (json!({}), "validation_failed"),
    ];
    for (body, code) in cases {
        let (status, got) = s.call("POST", &path, Some(body.clone()));
        assert_error(status, &got, 400, code);
        assert!(!got.to_string().contains("aaaaaaaa"), "{body}");
    }
    let (_, list) = s.call("GET", &path, None);
    assert_eq!(list, json!([]));
    let (status, body) = s.call(
        "GET",
        &format!("{path}/8f3c2b1a-9d4e-4c7a-8b2f-1e6d5a4c3b2a"),
        None,
    );
    assert_error(status, &body, 404, "webhook_not_found");
    let (status, body) = s.call("GET", "/api/sessions/nope-nope/webhooks", None);
    assert_error(status, &body, 404, "session_not_found");

    // PATCH changes only what it names.
    let hook = create_hook(&s, &session, json!({"url": url, "maxAttempts": 4}));
    let hid = hook["id"].as_str().unwrap();
    let (status, got) = s.call(
        "PATCH",
        &format!("{path}/{hid}"),
        Some(json!({"events": ["session.qr"], "active": false})),
    );
    assert_eq!(status, 200, "{got}");
    assert_eq!(got["events"], json!(["session.qr"]));
    assert_eq!(got["active"], false);
    assert_eq!(got["maxAttempts"], 4);
    assert_eq!(got["url"], url);
    assert!(got.get("secret").is_none());
    let (status, got) = s.call(
        "PATCH",
        &format!("{path}/{hid}"),
        Some(json!({"maxAttempts": 99})),
    );
    assert_error(status, &got, 400, "validation_failed");
    let (status, _) = s.call("DELETE", &format!("{path}/{hid}"), None);
    assert_eq!(status, 204);
    let (status, body) = s.call("GET", &format!("{path}/{hid}"), None);
    assert_error(status, &body, 404, "webhook_not_found");
}

#[test]
fn a_slow_receiver_does_not_delay_another() {
    for db in backends() {
        let dir = tempfile::tempdir().unwrap();
        let env = env_for(&db, dir.path(), true);
        let s = start(&env);
        // The slow receiver holds its first request until released.
        let release = Arc::new(AtomicBool::new(false));
        let slow = Receiver::held_until(release.clone());
        let fast = Receiver::ok();
        let session = flaky_session(&s, "speedy", 0);
        create_hook(&s, &session, json!({"url": slow.url()}));
        create_hook(&s, &session, json!({"url": fast.url()}));
        start_and_fail(&s, &session);
        let stored = stored_events(&db_url(&env), &session);
        assert!(stored.len() >= 3, "{stored:?}");
        fast.wait(60, "every event at the fast receiver", |g| {
            g.len() >= stored.len()
        });
        // Every event reached the fast receiver while the slow one still
        // held its first request: nothing queued behind it.
        assert_eq!(
            slow.count(),
            1,
            "{}: the slow receiver's first request is still open",
            db.label()
        );
        release.store(true, Ordering::Relaxed);
    }
}

#[test]
fn secrets_are_shown_once_and_never_stored_or_logged_in_clear() {
    let db = TestDb::Sqlite;
    let dir = tempfile::tempdir().unwrap();
    let env = env_for(&db, dir.path(), true);
    let s = start(&env);
    let rx = Receiver::ok();
    let session = flaky_session(&s, "secretive", 0);
    let other = flaky_session(&s, "other-one", 0);
    let hook = create_hook(
        &s,
        &session,
        json!({"url": rx.url(), "headers": {"Authorization": "Bearer hunter2-token-xyz"}}),
    );
    let secret = hook["secret"].as_str().unwrap().to_string();
    assert!(secret.starts_with("whsec_"));
    use base64::Engine as _;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(&secret["whsec_".len()..])
        .unwrap();
    assert_eq!(raw.len(), 32);
    assert_eq!(hook["headers"], json!({"Authorization": "***"}));
    let given = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let second = create_hook(&s, &other, json!({"url": rx.url(), "secret": given}));
    assert_eq!(second["secret"], given);

    let hid = hook["id"].as_str().unwrap();
    for path in [
        format!("/api/sessions/{session}/webhooks"),
        format!("/api/sessions/{session}/webhooks/{hid}"),
        "/api/webhooks".to_string(),
    ] {
        let (status, body) = s.call("GET", &path, None);
        assert_eq!(status, 200, "{path}");
        let text = body.to_string();
        assert!(
            !text.contains("whsec_") && !text.contains("hunter2"),
            "{path}: {text}"
        );
        assert!(!text.contains("\"secret\""), "{path}: {text}");
    }
    let (_, all) = s.call("GET", "/api/webhooks", None);
    assert_eq!(all.as_array().unwrap().len(), 2);

    // A key scoped to one session sees only its webhooks; a viewer cannot write.
    let (status, key) = s.call(
        "POST",
        "/api/auth/api-keys",
        Some(json!({"name": "scoped", "role": "viewer", "allowedSessions": [other]})),
    );
    assert_eq!(status, 201, "{key}");
    let scoped = key["apiKey"].as_str().unwrap();
    let (_, mine) = s.call_as(scoped, "GET", "/api/webhooks", None);
    assert_eq!(mine.as_array().unwrap().len(), 1);
    assert_eq!(mine[0]["sessionId"], other.as_str());
    let (status, body) = s.call_as(
        scoped,
        "GET",
        &format!("/api/sessions/{session}/webhooks"),
        None,
    );
    assert_error(status, &body, 401, "session_not_in_scope");
    let (status, body) = s.call_as(
        scoped,
        "POST",
        &format!("/api/sessions/{other}/webhooks"),
        Some(json!({"url": rx.url()})),
    );
    assert_error(status, &body, 403, "insufficient_role");

    // The test delivery is signed and carries the custom header.
    let (status, result) = s.call(
        "POST",
        &format!("/api/sessions/{session}/webhooks/{hid}/test"),
        None,
    );
    assert_eq!(status, 200, "{result}");
    assert_eq!(result["delivered"], true);
    assert_eq!(result["statusCode"], 200);
    assert!(result["latencyMs"].is_u64());
    let got = rx.wait(10, "the test delivery", |g| !g.is_empty());
    got[0].assert_signed_by(&secret);
    assert_eq!(got[0].header("x-wasup-event"), "webhook.test");
    assert_eq!(got[0].header("authorization"), "Bearer hunter2-token-xyz");
    assert_eq!(got[0].json()["event"], "webhook.test");

    start_and_fail(&s, &session);
    rx.wait(30, "events", |g| g.len() >= 3);

    // Neither the secret nor the header value is in the database file or the log.
    let db_path = db_url(&env);
    for file in [db_path.clone(), format!("{db_path}-wal")] {
        let bytes = std::fs::read(&file).unwrap_or_default();
        let hay = String::from_utf8_lossy(&bytes);
        assert!(!hay.contains(&secret[6..]), "{file} holds the secret");
        assert!(!hay.contains(&given[6..]), "{file} holds the given secret");
        assert!(
            !hay.contains("hunter2-token-xyz"),
            "{file} holds a header value"
        );
    }
    let log = s.log();
    assert!(!log.is_empty());
    assert!(
        !log.contains(&secret[6..]) && !log.contains("hunter2"),
        "{log}"
    );

    // Deleting a session deletes its webhooks.
    let (status, _) = s.call("DELETE", &format!("/api/sessions/{session}"), None);
    assert_eq!(status, 204);
    let (_, all) = s.call("GET", "/api/webhooks", None);
    assert_eq!(all.as_array().unwrap().len(), 1);
    assert_eq!(all[0]["sessionId"], other.as_str());
}

#[test]
fn a_huge_reply_is_dropped_after_a_prefix_not_buffered() {
    let dir = tempfile::tempdir().unwrap();
    let env = env_for(&TestDb::Sqlite, dir.path(), true);
    let s = start(&env);
    const REPLY: usize = 64 << 20;
    let rx = HugeReplyReceiver::start(REPLY);
    let session = flaky_session(&s, "chatty", 0);
    let hook = create_hook(&s, &session, json!({"url": rx.url()}));
    let path = format!(
        "/api/sessions/{session}/webhooks/{}",
        hook["id"].as_str().unwrap()
    );
    // The test route and the outbox both count the 2xx as delivered.
    let (status, result) = s.call("POST", &format!("{path}/test"), None);
    assert_eq!(status, 200, "{result}");
    assert_eq!(result["delivered"], true, "{result}");
    assert_eq!(result["statusCode"], 200, "{result}");
    start_and_fail(&s, &session);
    wait_deliveries(&s, &path, "delivered", 60, |list| !list.is_empty());
    // The gateway hung up each time long before the body ended (what the
    // socket buffers took is all the receiver could write).
    let written = poll(30, "the receiver's connections to end", || {
        let written = rx.written();
        match written.len() >= 2 {
            true => Ok(written),
            false => Err(format!("{written:?}")),
        }
    });
    assert!(written.iter().all(|&n| n < REPLY / 4), "{written:?}");
}

#[test]
fn test_sends_past_the_limit_get_429_with_retry_after() {
    let dir = tempfile::tempdir().unwrap();
    let env = env_for(&TestDb::Sqlite, dir.path(), true);
    let s = start(&env);
    // The receiver holds every request until released, so the permits stay taken.
    let release = Arc::new(AtomicBool::new(false));
    let rx = Receiver::held_until(release.clone());
    let session = s.create_session("tester");
    let hook = create_hook(&s, &session, json!({"url": rx.url()}));
    let test = format!(
        "/api/sessions/{session}/webhooks/{}/test",
        hook["id"].as_str().unwrap()
    );
    std::thread::scope(|scope| {
        let sends: Vec<_> = (0..MAX_TEST_SENDS)
            .map(|_| scope.spawn(|| s.call("POST", &test, None)))
            .collect();
        rx.wait(30, "every permitted test send held open", |got| {
            got.len() == MAX_TEST_SENDS
        });
        let res = s.req("POST", &test, Some(ADMIN_KEY)).send().unwrap();
        let retry_after = res
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let (status, body) = split(res);
        release.store(true, Ordering::Relaxed);
        assert_error(status, &body, 429, "too_many_requests");
        assert!(retry_after.is_some_and(|secs| secs > 0), "{retry_after:?}");
        for send in sends {
            let (status, result) = send.join().unwrap();
            assert_eq!(status, 200, "{result}");
            assert_eq!(result["delivered"], true, "{result}");
        }
    });
    // The permits came back with the answers.
    let (status, result) = s.call("POST", &test, None);
    assert_eq!(status, 200, "{result}");
    assert_eq!(rx.count(), MAX_TEST_SENDS + 1);
}
