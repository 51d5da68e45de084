//! Webhooks for a real link: the gateway drives the real whatsapp-rust client
//! against the `wasup-simulator` process; a virtual phone scans the QR taken
//! from the `session.qr` webhook. Every backend.

use std::sync::Arc;
use std::time::Duration;

use crate::common::*;
use crate::receiver::Receiver;
use crate::sim_process::SimProcess;
use serde_json::json;

#[test]
fn qr_and_authenticated_events_of_a_real_link() {
    for db in backends() {
        let simdir = tempfile::tempdir().unwrap();
        let sim = SimProcess::start(simdir.path());
        let (sim_url, control) = (&sim.ws, &sim.control);
        let http = reqwest::blocking::Client::new();
        let s = Server::start_with(
            &db,
            &[
                ("WASUP_ADMIN_KEY", ADMIN_KEY),
                ("WASUP_SIMULATOR_URL", sim_url),
                ("WASUP_WA_VERSION", "2.3000.1027000000"),
                ("WASUP_WEBHOOK_ALLOW_PRIVATE", "true"),
            ],
        );
        let rx = Receiver::start(Arc::new(|_| (204, Duration::ZERO)));
        let session = s.create_session("linked-bot");
        let (status, hook) = s.call(
            "POST",
            &format!("/api/sessions/{session}/webhooks"),
            Some(json!({"url": rx.url()})),
        );
        assert_eq!(status, 201, "{hook}");
        let (status, body) = s.call("POST", &format!("/api/sessions/{session}/start"), None);
        assert_eq!(status, 200, "{body}");

        let qr = rx.wait_for(60, "session.qr", |b| b["event"] == "session.qr");
        let raw = qr["data"]["qr"].as_str().unwrap().to_string();
        assert_eq!(
            decode_qr_data_url(qr["data"]["qrCode"].as_str().unwrap()),
            raw
        );
        assert!(qr["data"]["expiresAt"].as_str().unwrap().ends_with('Z'));

        let res = http
            .post(format!("{control}/scan"))
            .json(&json!({"qr": raw, "phone": "15551290001", "push_name": "Hooked"}))
            .send()
            .unwrap();
        assert_eq!(res.status().as_u16(), 200, "{}", db.label());
        s.wait_session(&session, 60, |b| b["status"] == "ready");

        let auth = rx.wait_for(60, "session.authenticated", |b| {
            b["event"] == "session.authenticated"
        });
        assert_eq!(auth["data"]["phone"], "15551290001");
        let ready = rx.wait_for(60, "ready", |b| b["data"]["status"] == "ready");
        assert_eq!(ready["event"], "session.status");
        // In seq order, one per event, none missing.
        let seqs: Vec<u64> = rx
            .bodies()
            .iter()
            .map(|b| b["seq"].as_u64().unwrap())
            .collect();
        assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
        let secret = hook["secret"].as_str().unwrap();
        for r in rx.received() {
            r.assert_signed_by(secret);
        }
    }
}
