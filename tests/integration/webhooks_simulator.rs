//! Webhooks for a real link: the gateway drives the real whatsapp-rust client
//! against the `wasup-simulator` process; a virtual phone scans the QR taken
//! from the `session.qr` webhook. Every backend.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::*;
use serde_json::{json, Value};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Child(std::process::Child);
impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Every request received: (lowercase headers, body).
type Got = Mutex<Vec<(Vec<(String, String)>, Vec<u8>)>>;

/// Receives webhook POSTs (answers 204) and keeps (headers, JSON body).
fn receiver() -> (String, Arc<Got>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let got: Arc<Got> = Arc::default();
    let sink = got.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().map_while(Result::ok) {
            let sink = sink.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                let mut headers = Vec::new();
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                        break;
                    }
                    if let Some((k, v)) = h.trim_end().split_once(':') {
                        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
                    }
                }
                let len = headers
                    .iter()
                    .find(|(k, _)| k == "content-length")
                    .and_then(|(_, v)| v.parse().ok())
                    .unwrap_or(0);
                let mut body = vec![0; len];
                reader.read_exact(&mut body).unwrap();
                sink.lock().unwrap().push((headers, body));
                let mut stream = stream;
                let _ = stream.write_all(
                    b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
            });
        }
    });
    (url, got)
}

fn bodies(got: &Got) -> Vec<Value> {
    got.lock()
        .unwrap()
        .iter()
        .map(|(_, b)| serde_json::from_slice(b).unwrap())
        .collect()
}

fn wait_for(got: &Got, what: &str, pick: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(v) = bodies(got).into_iter().find(|b| pick(b)) {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "no {what}; got {:?}",
            bodies(got)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn qr_and_authenticated_events_of_a_real_link() {
    for db in backends() {
        let (ws, ctl) = (free_port(), free_port());
        let simdir = tempfile::tempdir().unwrap();
        let _sim = Child(
            std::process::Command::new(env!("CARGO_BIN_EXE_wasup-simulator"))
                .args(["--ws", &format!("127.0.0.1:{ws}")])
                .args(["--control", &format!("127.0.0.1:{ctl}")])
                .arg("--data-dir")
                .arg(simdir.path())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("simulator starts"),
        );
        let control = format!("http://127.0.0.1:{ctl}");
        let http = reqwest::blocking::Client::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        while !http
            .get(format!("{control}/health"))
            .send()
            .is_ok_and(|r| r.status().is_success())
        {
            assert!(Instant::now() < deadline, "simulator control API is up");
            std::thread::sleep(Duration::from_millis(100));
        }

        let sim_url = format!("ws://127.0.0.1:{ws}/ws/chat");
        let s = Server::start_with(
            &db,
            &[
                ("WASUP_ADMIN_KEY", ADMIN_KEY),
                ("WASUP_SIMULATOR_URL", &sim_url),
                ("WASUP_WA_VERSION", "2.3000.1027000000"),
                ("WASUP_WEBHOOK_ALLOW_PRIVATE", "true"),
            ],
        );
        let (url, got) = receiver();
        let session = s.create_session("linked-bot");
        let (status, hook) = s.call(
            "POST",
            &format!("/api/sessions/{session}/webhooks"),
            Some(json!({"url": url})),
        );
        assert_eq!(status, 201, "{hook}");
        let (status, body) = s.call("POST", &format!("/api/sessions/{session}/start"), None);
        assert_eq!(status, 200, "{body}");

        let qr = wait_for(&got, "session.qr", |b| b["event"] == "session.qr");
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

        let auth = wait_for(&got, "session.authenticated", |b| {
            b["event"] == "session.authenticated"
        });
        assert_eq!(auth["data"]["phone"], "15551290001");
        let ready = wait_for(&got, "ready", |b| b["data"]["status"] == "ready");
        assert_eq!(ready["event"], "session.status");
        // In seq order, one per event, none missing.
        let seqs: Vec<u64> = bodies(&got)
            .iter()
            .map(|b| b["seq"].as_u64().unwrap())
            .collect();
        assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
        for (headers, body) in got.lock().unwrap().iter() {
            let secret = hook["secret"].as_str().unwrap();
            let wh = standardwebhooks::Webhook::new(secret).unwrap();
            let mut map = reqwest::header::HeaderMap::new();
            for (k, v) in headers {
                map.insert(
                    reqwest::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    v.parse().unwrap(),
                );
            }
            wh.verify(body, &map).unwrap();
        }
    }
}
