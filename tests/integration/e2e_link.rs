//! End to end over HTTP with the real whatsapp-rust client against the
//! embedded simulator: linking, QR, pairing code, restarts, faults, logout.

use crate::common::*;
use serde_json::{json, Value};

fn start_and_wait_qr(s: &Server, name: &str, config: Value) -> (String, Value) {
    let (status, body) = s.call(
        "POST",
        "/api/sessions",
        Some(json!({"name": name, "config": config})),
    );
    assert_eq!(status, 201, "{body}");
    let id = body["id"].as_str().unwrap().to_string();
    let (status, got) = s.call("POST", &format!("/api/sessions/{id}/start"), None);
    assert_eq!(
        (status, &got["status"]),
        (200, &json!("initializing")),
        "{got}"
    );
    let got = s.wait_session(&id, 30, |b| b["status"] == "qr_ready");
    (id, got)
}

fn scan(s: &Server, id: &str, phone: &str, push_name: &str) -> Value {
    let (status, got) = s.call(
        "POST",
        &format!("/api/simulator/sessions/{id}/scan"),
        Some(json!({"phone": phone, "pushName": push_name})),
    );
    assert_eq!(status, 200, "{got}\n{}", s.log());
    got
}

pub fn link(s: &Server, name: &str, phone: &str, config: Value) -> String {
    let (id, _) = start_and_wait_qr(s, name, config);
    scan(s, &id, phone, "Sim Phone");
    s.wait_session(&id, 30, |b| b["status"] == "ready");
    id
}

#[test]
fn qr_link_reaches_ready_and_survives_stop_start_and_gateway_restart() {
    for db in backends() {
        let mut s = Server::start(&db);
        let (id, _) = start_and_wait_qr(&s, "qr-bot", json!({}));

        // The QR, three ways; the PNG decodes to exactly the raw text.
        let (status, raw) = s.call("GET", &format!("/api/sessions/{id}/qr?format=raw"), None);
        assert_eq!(status, 200, "{raw}");
        let text = raw["qr"].as_str().unwrap().to_string();
        assert_eq!(raw["status"], "qr_ready");
        assert!(text.split(',').count() >= 5, "{text}");
        let (_, data) = s.call("GET", &format!("/api/sessions/{id}/qr"), None);
        assert_eq!(decode_qr_data_url(data["qrCode"].as_str().unwrap()), text);
        let res = s
            .req("GET", &format!("/api/sessions/{id}/qr"), Some(ADMIN_KEY))
            .header("Accept", "image/png")
            .send()
            .unwrap();
        assert_eq!(res.headers()["content-type"], "image/png");
        assert_eq!(decode_qr_png(&res.bytes().unwrap()), text);

        let linked = scan(&s, &id, "628123456789", "Sim Phone");
        assert_eq!(linked["phone"], "628123456789");
        let got = s.wait_session(&id, 30, |b| b["status"] == "ready");
        assert_eq!(got["phone"], "628123456789");
        assert_eq!(got["pushName"], "Sim Phone");
        assert!(got["connectedAt"].is_string() && got["lastError"].is_null());
        let (_, me) = s.call("GET", &format!("/api/sessions/{id}/me"), None);
        assert_eq!(
            me,
            json!({"id": "628123456789@c.us", "pushName": "Sim Phone"})
        );
        let (status, got) = s.call("GET", &format!("/api/sessions/{id}/qr"), None);
        assert_error(status, &got, 400, "qr_not_available");
        assert!(got["message"].as_str().unwrap().contains("already linked"));

        // stop → start: ready again with no QR.
        s.call("POST", &format!("/api/sessions/{id}/stop"), None);
        s.wait_session(&id, 10, |b| b["status"] == "disconnected");
        s.call("POST", &format!("/api/sessions/{id}/start"), None);
        let got = s.wait_session(&id, 30, |b| {
            b["status"] == "ready" || b["status"] == "qr_ready"
        });
        assert_eq!(got["status"], "ready", "no new QR after stop/start: {got}");

        // Gateway restart: back to ready by itself, no QR.
        s.restart();
        let got = s.wait_session(&id, 30, |b| {
            b["status"] == "ready" || b["status"] == "qr_ready"
        });
        assert_eq!(
            got["status"], "ready",
            "no new QR after a gateway restart: {got}"
        );
        assert_eq!(got["phone"], "628123456789");
        // Readiness reports the boot restore: one session, done.
        let (status, ready) = s.call("GET", "/api/health/ready", None);
        assert_eq!(status, 200, "{ready}");
        assert_eq!(
            ready["restore"],
            json!({"total": 1, "done": 1, "inProgress": 0, "queued": 0, "complete": true})
        );
    }
}

#[test]
fn pairing_code_links_without_a_qr_scan() {
    for db in backends() {
        let s = Server::start(&db);
        let (id, _) = start_and_wait_qr(&s, "code-bot", json!({}));
        let (status, got) = s.call(
            "POST",
            &format!("/api/sessions/{id}/pairing-code"),
            Some(json!({"phoneNumber": "628111222333"})),
        );
        assert_eq!(status, 201, "{got}");
        let code = got["pairingCode"].as_str().unwrap().to_string();
        assert_eq!(code.len(), 8, "{code}");
        assert!(
            code.bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit()),
            "{code}"
        );
        assert_eq!(got["status"], "qr_ready");
        let (status, got) = s.call(
            "POST",
            "/api/simulator/phones/628111222333/enter-code",
            Some(json!({"code": code})),
        );
        assert_eq!(status, 200, "{got}");
        let got = s.wait_session(&id, 60, |b| b["status"] == "ready");
        assert_eq!(got["phone"], "628111222333");
    }
}

#[test]
fn a_dropped_connection_heals_by_itself() {
    let db = TestDb::Sqlite;
    let s = Server::start(&db);
    let id = link(
        &s,
        "drop-bot",
        "628100000001",
        json!({"reconnectBaseDelay": 1000}),
    );
    let (status, got) = s.call(
        "POST",
        &format!("/api/simulator/sessions/{id}/faults"),
        Some(json!({"kind": "drop"})),
    );
    assert_eq!(status, 200, "{got}");
    let got = s.wait_session(&id, 10, |b| {
        b["status"] == "disconnected" || b["restarts"].as_u64() > Some(0)
    });
    let _ = got;
    let got = s.wait_session(&id, 30, |b| b["status"] == "ready");
    assert!(got["lastError"].is_null());
}

#[test]
fn terminal_faults_end_failed_and_are_not_retried() {
    let db = TestDb::Sqlite;
    let s = Server::start(&db);
    let cases = [
        ("unlink", "unlinked"),
        ("replaced", "replaced"),
        ("ban", "ban"),
        ("outdated", "version"),
    ];
    for (i, (kind, words)) in cases.iter().enumerate() {
        let id = link(
            &s,
            &format!("fault-{kind}"),
            &format!("62810000010{i}"),
            json!({"reconnectBaseDelay": 1000}),
        );
        let (status, got) = s.call(
            "POST",
            &format!("/api/simulator/sessions/{id}/faults"),
            Some(json!({"kind": kind})),
        );
        assert_eq!(status, 200, "{got}");
        let got = s.wait_session(&id, 30, |b| b["status"] == "failed");
        let err = got["lastError"].as_str().unwrap().to_lowercase();
        assert!(err.contains(words), "{kind}: {err}");
        // Terminal: no retry is scheduled.
        assert!(
            got["nextRetryAt"].is_null(),
            "{kind} will be retried: {got}"
        );
    }
}

#[test]
fn a_long_outage_exhausts_the_budget_and_a_short_one_heals() {
    let db = TestDb::Sqlite;
    let s = Server::start(&db);
    let long = link(
        &s,
        "long-outage",
        "628100000201",
        json!({"reconnectBaseDelay": 1000, "maxReconnectAttempts": 2}),
    );
    let short = link(
        &s,
        "short-outage",
        "628100000202",
        json!({"reconnectBaseDelay": 1000, "maxReconnectAttempts": 5}),
    );
    for (id, ms) in [(&long, 120_000), (&short, 1_500)] {
        let (status, got) = s.call(
            "POST",
            &format!("/api/simulator/sessions/{id}/faults"),
            Some(json!({"kind": "outage", "durationMs": ms})),
        );
        assert_eq!(status, 200, "{got}");
    }
    let got = s.wait_session(&short, 60, |b| {
        b["status"] == "ready" && b["restarts"].as_u64() > Some(0) || b["status"] == "failed"
    });
    assert_eq!(got["status"], "ready", "{got}");
    let got = s.wait_session(&long, 90, |b| b["status"] == "failed");
    let err = got["lastError"].as_str().unwrap();
    assert!(
        err.starts_with("Reconnection failed after 2 attempts"),
        "{err}"
    );
}

#[test]
fn logout_unlinks_the_device_and_the_next_start_needs_a_qr() {
    let db = TestDb::Sqlite;
    let s = Server::start(&db);
    let id = link(&s, "logout-bot", "628100000301", json!({}));
    let devices = "/api/simulator/phones/628100000301/devices";
    let (status, listed) = s.call("GET", devices, None);
    assert_eq!(status, 200, "{listed}");
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    let (status, got) = s.call("POST", &format!("/api/sessions/{id}/logout"), None);
    assert_eq!(status, 200, "{got}");
    assert_eq!(got["status"], "disconnected");
    assert!(got["phone"].is_null() && got["pushName"].is_null());
    let (_, me) = s.call("GET", &format!("/api/sessions/{id}/me"), None);
    assert!(me.is_null());
    let (_, listed) = s.call("GET", devices, None);
    assert_eq!(listed, json!([]), "the phone no longer lists the device");
    s.call("POST", &format!("/api/sessions/{id}/start"), None);
    let got = s.wait_session(&id, 30, |b| {
        b["status"] == "qr_ready" || b["status"] == "ready"
    });
    assert_eq!(
        got["status"], "qr_ready",
        "a logged-out session needs a new link: {got}"
    );
}

#[test]
fn simulator_routes_validate_their_input() {
    let db = TestDb::Sqlite;
    let s = Server::start(&db);
    let id = s.create_session("sim-input");
    for (path, body, status, code) in [
        (
            format!("/api/simulator/sessions/{id}/scan"),
            json!({"phone": "12"}),
            400,
            "validation_failed",
        ),
        (
            format!("/api/simulator/sessions/{id}/scan"),
            json!({"phone": "628123456789", "x": 1}),
            400,
            "unknown_field",
        ),
        (
            format!("/api/simulator/sessions/{id}/scan"),
            json!({"phone": "628123456789"}),
            400,
            "qr_not_available",
        ),
        (
            "/api/simulator/sessions/ghost/scan".to_string(),
            json!({"phone": "628123456789"}),
            404,
            "session_not_found",
        ),
        (
            format!("/api/simulator/sessions/{id}/faults"),
            json!({"kind": "meteor"}),
            400,
            "validation_failed",
        ),
        (
            format!("/api/simulator/sessions/{id}/faults"),
            json!({"kind": "outage"}),
            400,
            "validation_failed",
        ),
        (
            format!("/api/simulator/sessions/{id}/faults"),
            json!({"kind": "drop"}),
            409,
            "session_not_connected",
        ),
        (
            "/api/simulator/phones/628123456789/enter-code".to_string(),
            json!({"code": "short"}),
            400,
            "validation_failed",
        ),
        (
            "/api/simulator/phones/628123456789/enter-code".to_string(),
            json!({"code": "ABCD1234"}),
            404,
            "no_pending_pairing_code",
        ),
    ] {
        let (got_status, got) = s.call("POST", &path, Some(body));
        assert_error(got_status, &got, status, code);
    }
}
