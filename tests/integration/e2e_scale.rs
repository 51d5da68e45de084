//! End to end at scale and over time: QR rotation, and 50 sessions linked at
//! once, each to its own virtual phone.

use std::time::{Duration, Instant};

use crate::common::*;
use serde_json::json;

fn raw_qr(s: &Server, id: &str) -> String {
    let (status, got) = s.call("GET", &format!("/api/sessions/{id}/qr?format=raw"), None);
    assert_eq!(status, 200, "{got}");
    got["qr"].as_str().unwrap().to_string()
}

#[test]
fn the_qr_rotates_after_it_times_out_and_the_status_stays_qr_ready() {
    let db = TestDb::Sqlite;
    let s = Server::start(&db);
    let id = s.create_session("rotating");
    s.call("POST", &format!("/api/sessions/{id}/start"), None);
    s.wait_session(&id, 30, |b| b["status"] == "qr_ready");
    let first = raw_qr(&s, &id);
    let (_, got) = s.call("GET", &format!("/api/sessions/{id}/qr?format=raw"), None);
    let expires: chrono::DateTime<chrono::Utc> =
        got["expiresAt"].as_str().unwrap().parse().unwrap();
    assert!(
        expires > chrono::Utc::now(),
        "expiresAt is in the future: {expires}"
    );
    // WhatsApp's first code lasts 60 s; wait for the next one.
    let deadline = Instant::now() + Duration::from_secs(90);
    let second = loop {
        let (_, view) = s.call("GET", &format!("/api/sessions/{id}"), None);
        assert_eq!(view["status"], "qr_ready", "{view}");
        let now = raw_qr(&s, &id);
        if now != first {
            break now;
        }
        assert!(Instant::now() < deadline, "the QR never rotated");
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_ne!(
        first.split(',').next(),
        second.split(',').next(),
        "a new ref"
    );
    // The new code links.
    let (status, got) = s.call(
        "POST",
        &format!("/api/simulator/sessions/{id}/scan"),
        Some(json!({"phone": "628900000001", "pushName": "Rotated"})),
    );
    assert_eq!(status, 200, "{got}");
    s.wait_session(&id, 30, |b| b["status"] == "ready");
}

#[test]
fn fifty_sessions_link_at_once_each_to_its_own_phone() {
    const N: usize = 50;
    let db = TestDb::Sqlite;
    let s = Server::start(&db);
    let ids: Vec<String> = (0..N)
        .map(|i| s.create_session(&format!("bulk-{i:02}")))
        .collect();
    for id in &ids {
        let (status, got) = s.call("POST", &format!("/api/sessions/{id}/start"), None);
        assert_eq!(status, 200, "{got}");
    }
    for id in &ids {
        s.wait_session(id, 120, |b| b["status"] == "qr_ready");
    }
    // Every phone scans at the same time.
    let base = s.base.clone();
    let threads: Vec<_> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let url = format!("{base}/api/simulator/sessions/{id}/scan");
            std::thread::spawn(move || {
                let res = reqwest::blocking::Client::builder()
                    .timeout(Duration::from_secs(120))
                    .build()
                    .unwrap()
                    .post(url)
                    .header("X-API-Key", ADMIN_KEY)
                    .json(&json!({"phone": format!("62870000{i:04}"), "pushName": format!("Bulk {i}")}))
                    .send()
                    .unwrap();
                split(res)
            })
        })
        .collect();
    for t in threads {
        let (status, got) = t.join().unwrap();
        assert_eq!(status, 200, "{got}");
    }
    for (i, id) in ids.iter().enumerate() {
        let got = s.wait_session(id, 120, |b| b["status"] == "ready");
        assert_eq!(got["phone"], format!("62870000{i:04}"));
    }
    let (_, stats) = s.call("GET", "/api/sessions/stats/overview", None);
    assert_eq!(stats["total"], N);
    assert_eq!(stats["ready"], N);
    assert_eq!(stats["active"], N);
    assert_eq!(stats["byStatus"], json!({"ready": N}));
}
