//! The log of a full lifecycle at debug level, on every backend: one line
//! per request (method, route, status, latency, request id) and one per
//! session transition; none of the secrets the lifecycle handled: API keys
//! (also a wrong one a caller presented), the webhook secret and header
//! values, QR texts and their key parts, the pairing code, the master key,
//! and the device credentials (sealed rows as stored, and the key material
//! inside them) in any usual spelling (text, hex, base64, byte lists).

use std::collections::{BTreeSet, HashMap};

use crate::common::*;
use crate::receiver::Receiver;
use base64::Engine as _;
use diesel::prelude::*;
use diesel::{PgConnection, SqliteConnection};
use serde_json::{json, Value};
use sha2::Digest;

const MASTER_KEY: &str = "5e1f0a2b3c4d5e6f708192a3b4c5d6e7f80911a2b3c4d5e6f708192a3b4c5d6e";

// ------------------------------------------------------------------ requests

/// Every request this test sends itself carries a known request id, so the
/// log can be checked for exactly one line per request.
struct Client<'a> {
    s: &'a Server,
    sent: Vec<(String, String, u16)>,
}

impl Client<'_> {
    fn call(&mut self, key: &str, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let id = format!("hyg-{}", uuid::Uuid::new_v4().simple());
        let mut rb = self.s.req(method, path, None).header("X-Request-Id", &id);
        rb = if self.sent.len().is_multiple_of(2) {
            rb.header("X-API-Key", key)
        } else {
            rb.header("Authorization", format!("Bearer {key}"))
        };
        if let Some(body) = body {
            rb = rb.json(&body);
        }
        let res = rb.send().expect("request");
        assert_eq!(res.headers()["x-request-id"], id.as_str());
        let (status, body) = split(res);
        self.sent.push((id, method.to_string(), status));
        (status, body)
    }

    fn ok(&mut self, key: &str, method: &str, path: &str, body: Option<Value>) -> Value {
        let (status, got) = self.call(key, method, path, body);
        assert!(
            (200..300).contains(&status),
            "{method} {path}: {status} {got}"
        );
        got
    }
}

// ------------------------------------------------------------------ secrets

/// A secret and the name it is reported under when it leaks.
struct Secrets(Vec<(String, String)>);

impl Secrets {
    fn text(&mut self, what: &str, value: &str) {
        if value.len() >= 6 {
            self.0.push((what.to_string(), value.to_string()));
        }
    }

    /// Bytes in every usual spelling: hex (both cases), base64 (standard and
    /// URL-safe, padded or not), and a Rust/JSON byte list.
    fn bytes(&mut self, what: &str, bytes: &[u8]) {
        if bytes.len() < 16 || bytes.iter().all(|b| *b == bytes[0]) {
            return; // too short, or all one value: not key material
        }
        use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
        let hex = hex::encode(bytes);
        self.text(&format!("{what} (hex)"), &hex);
        self.text(&format!("{what} (HEX)"), &hex.to_uppercase());
        self.text(&format!("{what} (base64)"), &STANDARD_NO_PAD.encode(bytes));
        self.text(
            &format!("{what} (base64url)"),
            &URL_SAFE_NO_PAD.encode(bytes),
        );
        let list = |sep: &str| {
            bytes[..16]
                .iter()
                .map(u8::to_string)
                .collect::<Vec<_>>()
                .join(sep)
        };
        self.text(&format!("{what} (byte list)"), &list(", "));
        self.text(&format!("{what} (byte list)"), &list(","));
    }

    /// A base64 text: itself, and its bytes in every spelling.
    fn base64(&mut self, what: &str, value: &str) {
        self.text(what, value);
        use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE_NO_PAD};
        let trimmed = value.trim_end_matches('=');
        if let Ok(bytes) = STANDARD
            .decode(value)
            .or_else(|_| STANDARD_NO_PAD.decode(trimmed))
            .or_else(|_| URL_SAFE_NO_PAD.decode(trimmed))
        {
            self.bytes(what, &bytes);
        }
    }

    /// An API key: itself and the SHA-256 the server stores.
    fn api_key(&mut self, what: &str, key: &str) {
        self.text(what, key);
        let hash = sha2::Sha256::digest(key.as_bytes());
        self.bytes(&format!("{what} SHA-256"), &hash);
    }

    /// A raw QR: the whole text and each part (ref, noise key, identity key,
    /// ADV secret: all base64).
    fn qr(&mut self, qr: &str) {
        self.text("QR text", qr);
        for (i, part) in qr.split(',').enumerate() {
            self.base64(&format!("QR part {i}"), part);
        }
    }

    /// Every byte array and long string inside a device JSON document.
    fn device_json(&mut self, what: &str, v: &Value) {
        match v {
            Value::Array(items) if items.iter().all(|i| i.as_u64().is_some_and(|n| n < 256)) => {
                let bytes: Vec<u8> = items.iter().map(|i| i.as_u64().unwrap() as u8).collect();
                self.bytes(what, &bytes);
            }
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    self.device_json(&format!("{what}[{i}]"), item);
                }
            }
            Value::Object(map) => {
                for (k, item) in map {
                    self.device_json(&format!("{what}.{k}"), item);
                }
            }
            Value::String(s) if s.len() >= 20 && !s.contains('@') => self.base64(what, s),
            _ => {}
        }
    }

    /// What leaked, with the first log line that shows it.
    fn leaks(&self, log: &str) -> Vec<String> {
        self.0
            .iter()
            .filter_map(|(what, v)| {
                let line = log.lines().find(|l| l.contains(v.as_str()))?;
                Some(format!("{what}: {}", &line[..line.len().min(300)]))
            })
            .collect()
    }
}

// ------------------------------------------------------------------ device rows

type DeviceRow = (String, String, String, String, String, Vec<u8>);

/// Every device_state row of the server's database, as stored (sealed).
fn device_rows(db: &TestDb, s: &Server) -> Vec<DeviceRow> {
    use wasup::db::schema::device_state::dsl as ds;
    let query =
        ds::device_state.select((ds::session_id, ds::kind, ds::k, ds::k2, ds::k3, ds::value));
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

/// The plaintext of a sealed device_state row (as `DeviceDb` seals it).
fn unseal(row: &DeviceRow) -> Vec<u8> {
    let key: [u8; 32] = hex::decode(MASTER_KEY).unwrap().try_into().unwrap();
    let (sid, kind, k, k2, k3, value) = row;
    let mut aad = Vec::new();
    for part in [sid, kind, k, k2, k3] {
        aad.extend_from_slice(part.as_bytes());
        aad.push(0);
    }
    wasup::crypto::SecretBox::new(&key)
        .open(&aad, value)
        .expect("a device row opens with the master key")
}

// ------------------------------------------------------------------ the test

#[test]
fn a_full_lifecycle_logs_requests_and_transitions_but_no_secret() {
    for db in backends() {
        lifecycle(&db);
    }
}

fn lifecycle(db: &TestDb) {
    // debug: every line wasup and the engine write below trace (set
    // LOG_HYGIENE_LEVEL=trace to look further; slower, far more output).
    let level = std::env::var("LOG_HYGIENE_LEVEL").unwrap_or("debug".into());
    let mut s = Server::start_with(
        db,
        &[
            ("WASUP_ADMIN_KEY", ADMIN_KEY),
            ("WASUP_MASTER_KEY", MASTER_KEY),
            ("WASUP_WEBHOOK_ALLOW_PRIVATE", "true"),
            ("RUST_LOG", &level),
        ],
    );
    let mut secrets = Secrets(Vec::new());
    secrets.api_key("admin key", ADMIN_KEY);
    secrets.bytes("master key", &hex::decode(MASTER_KEY).unwrap());
    let rx = Receiver::ok();
    let mut c = Client {
        s: &s,
        sent: Vec::new(),
    };

    // An operator key does the session work; a wrong key is refused.
    let key = c.ok(
        ADMIN_KEY,
        "POST",
        "/api/auth/api-keys",
        Some(json!({"name": "hygiene", "role": "operator"})),
    );
    let op = key["apiKey"].as_str().unwrap().to_string();
    secrets.api_key("operator key", &op);
    let wrong = "wsp_not_a_key_of_this_server_7f3a9c";
    secrets.text("a presented wrong key", wrong);
    assert_eq!(c.call(wrong, "GET", "/api/sessions", None).0, 401);

    // Sessions with a webhook each (generated secret, a secret header).
    let header_secret = "hdr-secret-6b0d1e2f3a4b5c6d";
    secrets.text("webhook header value", header_secret);
    let mut ids = Vec::new();
    for name in ["hyg-qr", "hyg-code"] {
        let created = c.ok(&op, "POST", "/api/sessions", Some(json!({"name": name})));
        let id = created["id"].as_str().unwrap().to_string();
        let hook = c.ok(
            &op,
            "POST",
            &format!("/api/sessions/{id}/webhooks"),
            Some(json!({"url": rx.url(), "headers": {"X-Token": header_secret}})),
        );
        let whsec = hook["secret"].as_str().unwrap();
        secrets.text("webhook secret", whsec);
        secrets.base64("webhook secret key", &whsec["whsec_".len()..]);
        let hid = hook["id"].as_str().unwrap();
        let tested = c.ok(
            &op,
            "POST",
            &format!("/api/sessions/{id}/webhooks/{hid}/test"),
            None,
        );
        assert_eq!(tested["delivered"], true, "{tested}");
        c.ok(&op, "POST", &format!("/api/sessions/{id}/start"), None);
        ids.push(id);
    }
    let (qr_id, code_id) = (ids[0].clone(), ids[1].clone());
    for id in &ids {
        s.wait_session(id, 30, |b| b["status"] == "qr_ready");
    }

    // QR (raw, data URL, PNG) and a link by scanning it.
    let raw = c.ok(
        &op,
        "GET",
        &format!("/api/sessions/{qr_id}/qr?format=raw"),
        None,
    );
    secrets.qr(raw["qr"].as_str().unwrap());
    let image = c.ok(&op, "GET", &format!("/api/sessions/{qr_id}/qr"), None);
    let data_url = image["qrCode"].as_str().unwrap();
    secrets.text("QR PNG", &data_url["data:image/png;base64,".len()..][..64]);
    c.ok(
        &op,
        "POST",
        &format!("/api/simulator/sessions/{qr_id}/scan"),
        Some(json!({"phone": "628123459001", "pushName": "Hygiene Phone"})),
    );
    s.wait_session(&qr_id, 30, |b| b["status"] == "ready");

    // A pairing code, entered on the phone.
    let code = c.ok(
        &op,
        "POST",
        &format!("/api/sessions/{code_id}/pairing-code"),
        Some(json!({"phoneNumber": "628123459002"})),
    );
    let code = code["pairingCode"].as_str().unwrap().to_string();
    secrets.text("pairing code", &code);
    secrets.text("pairing code", &format!("{}-{}", &code[..4], &code[4..]));
    c.ok(
        &op,
        "POST",
        "/api/simulator/phones/628123459002/enter-code",
        Some(json!({"code": code})),
    );
    s.wait_session(&code_id, 60, |b| b["status"] == "ready");
    for id in &ids {
        c.ok(&op, "GET", &format!("/api/sessions/{id}"), None);
        c.ok(&op, "GET", &format!("/api/sessions/{id}/me"), None);
    }
    c.ok(&op, "GET", "/api/sessions/stats/overview", None);

    // Every QR the sessions showed reached the receiver: none may be logged.
    let events = rx.wait_bodies(30, "session.authenticated of both", |got| {
        got.iter()
            .filter(|e| e["event"] == "session.authenticated")
            .count()
            == 2
    });
    let qrs: BTreeSet<&str> = events
        .iter()
        .filter(|e| e["event"] == "session.qr")
        // A QR delivered after its life is over carries no text (expired).
        .filter_map(|e| e["data"]["qr"].as_str())
        .collect();
    assert!(qrs.len() >= 2, "a QR per session: {qrs:?}");
    for qr in qrs {
        secrets.qr(qr);
    }

    // Credentials at rest: the sealed rows and what they hold.
    let rows = device_rows(db, &s);
    assert!(
        rows.iter().any(|r| r.1 == "device" && r.0 == qr_id),
        "{:?}",
        rows.iter().map(|r| (&r.0, &r.1)).collect::<Vec<_>>()
    );
    for row in &rows {
        let what = format!("device_state {} {}", row.1, row.2);
        secrets.bytes(&format!("{what} sealed"), &row.5[..row.5.len().min(30)]);
        let plain = unseal(row);
        match serde_json::from_slice::<Value>(&plain) {
            Ok(v) => secrets.device_json(&what, &v),
            Err(_) => secrets.bytes(&what, &plain),
        }
    }

    // The code-linked session goes; the QR one is restarted three ways (each
    // reads its credentials back), then logged out (which wipes them).
    c.ok(&op, "DELETE", &format!("/api/sessions/{code_id}"), None);
    c.ok(&op, "POST", &format!("/api/sessions/{qr_id}/stop"), None);
    c.ok(&op, "POST", &format!("/api/sessions/{qr_id}/start"), None);
    s.wait_session(&qr_id, 30, |b| b["status"] == "ready");
    c.ok(&op, "POST", &format!("/api/sessions/{qr_id}/restart"), None);
    s.wait_session(&qr_id, 30, |b| b["status"] == "ready");
    let sent_before_restart = std::mem::take(&mut c.sent);
    drop(c);
    s.restart();
    let mut c = Client {
        s: &s,
        sent: sent_before_restart,
    };
    s.wait_session(&qr_id, 30, |b| b["status"] == "ready");
    c.ok(&op, "POST", &format!("/api/sessions/{qr_id}/logout"), None);
    let listed = c.ok(ADMIN_KEY, "GET", "/api/auth/api-keys", None);
    let key_id = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "hygiene")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    c.ok(
        ADMIN_KEY,
        "DELETE",
        &format!("/api/auth/api-keys/{key_id}"),
        None,
    );
    assert_eq!(c.call(&op, "GET", "/api/sessions", None).0, 401);
    let sent = std::mem::take(&mut c.sent);
    drop(c);
    assert_eq!(s.stop(), Some(0));
    let log = s.log();

    // The log was verbose (debug from the engine too), and holds no secret.
    assert!(log.lines().count() > 100, "a debug log: {log}");
    let marker = format!(" {} ", level.to_uppercase());
    assert!(log.contains(&marker), "{level} lines reached the log");
    let leaks = secrets.leaks(&log);
    assert!(
        leaks.is_empty(),
        "{}: the log holds {} of {} secret spellings:\n{}",
        db.label(),
        leaks.len(),
        secrets.0.len(),
        leaks.join("\n")
    );

    // One request line per request: method, route template, status,
    // latency and the request id.
    for (id, method, status) in &sent {
        let lines: Vec<&str> = log.lines().filter(|l| l.contains(id.as_str())).collect();
        assert_eq!(lines.len(), 1, "request {id}: {lines:?}");
        let line = lines[0];
        let tail = line
            .split_once(&format!(" {method} /api"))
            .unwrap_or_else(|| panic!("method and route in {line}"))
            .1;
        let words: Vec<&str> = tail.split(' ').collect();
        assert_eq!(words[1], status.to_string(), "{line}");
        assert!(
            words[2].ends_with("ms") && words[2].trim_end_matches("ms").parse::<f64>().is_ok(),
            "{line}"
        );
        assert_eq!(words[3], format!("request_id={id}"), "{line}");
        for session in &ids {
            assert!(
                !line.contains(session.as_str()),
                "a route, not a path: {line}"
            );
        }
    }

    // One line per session transition: every session.status event the
    // receiver got has its line.
    let mut want: HashMap<(String, String, String), usize> = HashMap::new();
    for e in rx.bodies() {
        if e["event"] == "session.status" {
            let key = (
                e["sessionId"].as_str().unwrap().to_string(),
                e["data"]["previousStatus"].as_str().unwrap().to_string(),
                e["data"]["status"].as_str().unwrap().to_string(),
            );
            *want.entry(key).or_default() += 1;
        }
    }
    assert!(want.len() >= 4, "{want:?}");
    for ((sid, from, to), n) in &want {
        let needle = format!("{from} -> {to}");
        let got = log
            .lines()
            .filter(|l| l.contains(&format!("session {sid} ")) && l.contains(&needle))
            .count();
        assert!(got >= *n, "{n} × {sid} {needle}, {got} log lines");
    }
    for (from, to) in [
        ("created", "initializing"),
        ("initializing", "qr_ready"),
        ("ready", "disconnected"),
    ] {
        let line = format!("session {qr_id} 'hyg-qr': {from} -> {to}");
        assert!(log.contains(&line), "{line}");
    }
}
