//! The WebSocket twin of the event stream (`GET /api/events/ws`) over real
//! HTTP, every backend: the same envelopes as text frames, auth by key
//! header, ticket or (dashboard_http.rs) cookie, resume by `?after=` with no
//! gap and no duplicate, the per-key limit shared with SSE, the slow
//! consumer cut off and SIGTERM ending the socket with a last `stream.end`
//! message and a close frame naming the reason.
#![cfg_attr(not(feature = "simulator"), allow(dead_code))]

use std::sync::mpsc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::Value;

use crate::common::*;
use crate::events_stream::Sse;

/// What a client reads off the socket.
#[derive(Debug, Clone)]
pub enum Frame {
    /// A text frame's JSON.
    Text(Value),
    /// The close frame: code and reason.
    Close(u16, String),
}

/// An open socket read on its own thread.
pub struct Ws {
    rx: mpsc::Receiver<Frame>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Ws {
    /// Open `/api/events/ws{query}` with these headers; Err(handshake error) when refused.
    pub fn open(s: &Server, query: &str, headers: &[(&str, &str)]) -> Result<Ws, String> {
        let addr = s.base.strip_prefix("http://").unwrap().to_string();
        let uri: http::Uri = format!("ws://{addr}/api/events/ws{query}").parse().unwrap();
        let headers: Vec<(String, String)> = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let (tx, rx) = mpsc::channel();
        let (ready_tx, ready_rx) = mpsc::channel();
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let connect = async {
                    let tcp = tokio::net::TcpStream::connect(&addr)
                        .await
                        .map_err(|e| e.to_string())?;
                    let mut builder = tokio_websockets::ClientBuilder::from_uri(uri);
                    for (k, v) in &headers {
                        builder = builder
                            .add_header(
                                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                                http::HeaderValue::from_str(v).unwrap(),
                            )
                            .map_err(|e| e.to_string())?;
                    }
                    builder.connect_on(tcp).await.map_err(|e| e.to_string())
                };
                let mut ws = match connect.await {
                    Ok((ws, _)) => {
                        let _ = ready_tx.send(Ok(()));
                        ws
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                loop {
                    tokio::select! {
                        _ = &mut stopped => return,
                        msg = ws.next() => {
                            let Some(Ok(msg)) = msg else { return };
                            let frame = if let Some((code, reason)) = msg.as_close() {
                                Frame::Close(code.into(), reason.to_string())
                            } else if let Some(text) = msg.as_text() {
                                Frame::Text(serde_json::from_str(text).expect("JSON text frame"))
                            } else {
                                continue;
                            };
                            let closing = matches!(frame, Frame::Close(..));
                            if tx.send(frame).is_err() {
                                return;
                            }
                            if closing {
                                let _ = SinkExt::close(&mut ws).await;
                                return;
                            }
                        }
                    }
                }
            });
        });
        ready_rx
            .recv_timeout(Duration::from_secs(30))
            .map_err(|e| e.to_string())??;
        Ok(Ws { rx, _stop: stop })
    }

    pub fn next(&self, secs: u64) -> Option<Frame> {
        self.rx.recv_timeout(Duration::from_secs(secs)).ok()
    }

    /// Text frames until `done` holds for one (included); panics after `secs`.
    pub fn until(&self, secs: u64, done: impl Fn(&Value) -> bool) -> Vec<Value> {
        let deadline = std::time::Instant::now() + Duration::from_secs(secs);
        let mut got = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(Frame::Text(v)) => {
                    let stop = done(&v);
                    got.push(v);
                    if stop {
                        return got;
                    }
                }
                other => panic!("socket ended or timed out ({other:?}); got {got:#?}"),
            }
        }
    }
}

#[test]
fn a_websocket_needs_auth_and_counts_in_the_per_key_limit() {
    for db in backends() {
        let s = Server::start_with(
            &db,
            &[
                ("WASUP_ADMIN_KEY", ADMIN_KEY),
                ("WASUP_EVENT_STREAMS_PER_KEY", "2"),
            ],
        );
        // Refused at the handshake: no key, a used ticket.
        assert!(Ws::open(&s, "", &[]).is_err());
        let (status, t) = s.call("POST", "/api/events/ticket", None);
        assert_eq!(status, 201, "{t}");
        let q = format!("?ticket={}", t["ticket"].as_str().unwrap());
        let _by_ticket = Ws::open(&s, &q, &[]).expect("the ticket opens a socket");
        assert!(Ws::open(&s, &q, &[]).is_err(), "a ticket works once");
        // The ticket's socket and one SSE stream fill the key's two places.
        let h = [("X-API-Key", ADMIN_KEY)];
        let _sse = Sse::open(&s, "", &h).unwrap();
        let (status, body) = Sse::open(&s, "", &h).err().unwrap();
        assert_error(status, &body, 429, "too_many_requests");
        assert!(Ws::open(&s, "", &h).is_err(), "{}", db.label());
        // Without an upgrade the route answers 400 in the contract's shape.
        let (status, body) = s.call("GET", "/api/events/ws?events=session.qr", None);
        assert!(status == 400 || status == 429, "{status} {body}");
    }
}

#[cfg(feature = "simulator")]
mod simulator {
    use super::*;

    fn start(s: &Server, id: &str) {
        let (status, body) = s.call("POST", &format!("/api/sessions/{id}/start"), None);
        assert_eq!(status, 200, "{body}");
    }

    fn stop(s: &Server, id: &str) {
        let (status, body) = s.call("POST", &format!("/api/sessions/{id}/stop"), None);
        assert_eq!(status, 200, "{body}");
    }

    #[test]
    fn the_socket_carries_the_sse_envelopes_and_resumes_without_gap() {
        for db in backends() {
            let s = Server::start(&db);
            let id = s.create_session("ws-bot");
            let h = [("X-API-Key", ADMIN_KEY)];
            let ws = Ws::open(&s, "?sessions=ws-bot", &h).unwrap();
            let sse = Sse::open(&s, "?sessions=ws-bot", &h).unwrap();
            start(&s, &id);
            let by_ws = ws.until(60, |v| v["event"] == "session.qr");
            let by_sse = sse.until(60, |m| m.event == "session.qr");
            // The same envelopes, in the same order.
            let sse_data: Vec<Value> = by_sse.iter().map(|m| m.data.clone()).collect();
            assert_eq!(by_ws, sse_data, "{}", db.label());
            for v in &by_ws {
                for field in [
                    "id",
                    "event",
                    "timestamp",
                    "sessionId",
                    "sessionName",
                    "seq",
                    "data",
                ] {
                    assert!(!v[field].is_null(), "{field}: {v}");
                }
            }
            // Resume after the first event: the rest, then the live ones.
            let first = by_ws[0]["id"].as_str().unwrap().to_string();
            drop(ws);
            stop(&s, &id);
            s.wait_session(&id, 30, |b| b["status"] != "qr_ready");
            let again = Ws::open(&s, &format!("?sessions=ws-bot&after={first}"), &h).unwrap();
            let mut seen = vec![by_ws[0].clone()];
            seen.extend(again.until(60, |v| {
                v["event"] == "session.status" && v["data"]["status"] == "disconnected"
            }));
            let seqs: Vec<u64> = seen.iter().map(|v| v["seq"].as_u64().unwrap()).collect();
            assert_eq!(
                seqs,
                (1..=seqs.len() as u64).collect::<Vec<_>>(),
                "{}: a gap or a duplicate: {seen:#?}",
                db.label()
            );
        }
    }

    #[test]
    fn a_slow_socket_is_cut_off_with_a_reason() {
        for db in backends() {
            let s = Server::start_with(
                &db,
                &[
                    ("WASUP_ADMIN_KEY", ADMIN_KEY),
                    ("WASUP_EVENT_STREAM_BUFFER", "1"),
                ],
            );
            let id = s.create_session("slow-ws");
            let ws = Ws::open(&s, "?sessions=slow-ws", &[("X-API-Key", ADMIN_KEY)]).unwrap();
            let mut got = Vec::new();
            for _ in 0..10 {
                start(&s, &id);
                s.wait_session(&id, 60, |b| b["status"] == "qr_ready");
                stop(&s, &id);
                s.wait_session(&id, 30, |b| b["status"] != "qr_ready");
                while let Some(f) = ws.next(2) {
                    got.push(f);
                }
                if got.iter().any(|f| matches!(f, Frame::Close(..))) {
                    break;
                }
            }
            let n = got.len();
            assert!(n >= 2, "{}: never cut off: {got:#?}", db.label());
            match (&got[n - 2], &got[n - 1]) {
                (Frame::Text(end), Frame::Close(code, reason)) => {
                    assert_eq!(end["event"], "stream.end", "{end}");
                    assert_eq!(end["data"]["reason"], "slow_consumer", "{end}");
                    assert_eq!((*code, reason.as_str()), (1008, "slow_consumer"));
                }
                other => panic!("{}: {other:?}", db.label()),
            }
        }
    }

    #[test]
    fn sigterm_ends_a_socket_with_a_last_message_and_a_close_frame() {
        for db in backends() {
            let mut s = Server::start(&db);
            let ws =
                Ws::open(&s, "", &[("Authorization", &format!("Bearer {ADMIN_KEY}"))]).unwrap();
            assert_eq!(s.stop(), Some(0), "clean exit");
            let end = ws.until(10, |v| v["event"] == "stream.end");
            assert_eq!(end.last().unwrap()["data"]["reason"], "shutting_down");
            match ws.next(10) {
                Some(Frame::Close(code, reason)) => {
                    assert_eq!((code, reason.as_str()), (1001, "shutting_down"))
                }
                other => panic!("{}: no close frame: {other:?}", db.label()),
            }
        }
    }
}
