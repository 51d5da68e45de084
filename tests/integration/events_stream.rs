//! The live event stream (`GET /api/events`) over real HTTP, every backend:
//! auth in the contract's shape, tickets, the per-key stream limit, and
//! (simulator builds) scope filtering, resume with no gap and no duplicate
//! by `seq`, and the clean end on SIGTERM.
// The default build reads no stream body (those tests need the simulator).
#![cfg_attr(not(feature = "simulator"), allow(dead_code))]

use std::io::{BufRead, BufReader};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::common::*;

/// One SSE message.
#[derive(Debug, Clone)]
pub struct Msg {
    pub id: Option<String>,
    pub event: String,
    pub data: Value,
}

/// An open stream read on its own thread.
pub struct Sse {
    rx: mpsc::Receiver<Msg>,
}

impl Sse {
    /// Open `/api/events{query}` with these headers; Err(status, body) when refused.
    pub fn open(s: &Server, query: &str, headers: &[(&str, &str)]) -> Result<Sse, (u16, Value)> {
        let http = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(300))
            .build()
            .unwrap();
        let mut rb = http.get(s.url(&format!("/api/events{query}")));
        for (k, v) in headers {
            rb = rb.header(*k, *v);
        }
        let res = rb.send().expect("request");
        let status = res.status().as_u16();
        if status != 200 {
            return Err(split(res));
        }
        assert_eq!(
            res.headers()["content-type"].to_str().unwrap(),
            "text/event-stream"
        );
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(res);
            let (mut id, mut event, mut data) = (None, String::new(), String::new());
            let mut line = String::new();
            loop {
                line.clear();
                match reader.read_line(&mut line) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
                let l = line.trim_end_matches(['\r', '\n']);
                if l.is_empty() {
                    if !data.is_empty() {
                        let msg = Msg {
                            id: id.take(),
                            event: std::mem::take(&mut event),
                            data: serde_json::from_str(&data).expect("JSON data"),
                        };
                        data.clear();
                        if tx.send(msg).is_err() {
                            return;
                        }
                    }
                } else if let Some(v) = l.strip_prefix("id: ") {
                    id = Some(v.to_string());
                } else if let Some(v) = l.strip_prefix("event: ") {
                    event = v.to_string();
                } else if let Some(v) = l.strip_prefix("data: ") {
                    data.push_str(v);
                }
            }
        });
        Ok(Sse { rx })
    }

    /// The next message within `secs`, or None when the stream ended or stayed silent.
    pub fn next(&self, secs: u64) -> Option<Msg> {
        self.rx.recv_timeout(Duration::from_secs(secs)).ok()
    }

    /// Messages until `done` holds for one (included); panics after `secs`.
    pub fn until(&self, secs: u64, done: impl Fn(&Msg) -> bool) -> Vec<Msg> {
        let deadline = std::time::Instant::now() + Duration::from_secs(secs);
        let mut got = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(m) => {
                    let stop = done(&m);
                    got.push(m);
                    if stop {
                        return got;
                    }
                }
                Err(_) => panic!("stream ended or timed out; got {got:#?}"),
            }
        }
    }
}

fn key_of(s: &Server, body: Value) -> String {
    let (status, key) = s.call("POST", "/api/auth/api-keys", Some(body));
    assert_eq!(status, 201, "{key}");
    key["apiKey"].as_str().unwrap().to_string()
}

#[test]
fn a_stream_needs_a_key_in_the_contracts_shape() {
    for db in backends() {
        let s = Server::start(&db);
        let (status, body) = Sse::open(&s, "", &[]).err().unwrap();
        assert_error(status, &body, 401, "missing_api_key");
        let (status, body) = Sse::open(&s, "", &[("X-API-Key", "wsp_nope")])
            .err()
            .unwrap();
        assert_error(status, &body, 401, "invalid_api_key");
        let (status, body) = Sse::open(&s, "?ticket=est_nope", &[]).err().unwrap();
        assert_error(status, &body, 401, "invalid_stream_ticket");
        // Bad input is a 400, never a 5xx.
        for q in ["?after=42", "?events=nope", "?sessions=", "?colour=red"] {
            let (status, body) = Sse::open(&s, q, &[("X-API-Key", ADMIN_KEY)]).err().unwrap();
            assert_error(status, &body, 400, "validation_failed");
        }
        let (status, body) = Sse::open(&s, "", &[("X-API-Key", ADMIN_KEY), ("Last-Event-ID", "x")])
            .err()
            .unwrap();
        assert_error(status, &body, 400, "validation_failed");
    }
}

#[test]
fn tickets_open_one_stream_once() {
    for db in backends() {
        let s = Server::start(&db);
        let (status, t) = s.call("POST", "/api/events/ticket", None);
        assert_eq!(status, 201, "{t}");
        let ticket = t["ticket"].as_str().unwrap();
        assert!(t["expiresAt"].as_str().unwrap().ends_with('Z'));
        let q = format!("?ticket={ticket}");
        let _open = Sse::open(&s, &q, &[]).expect("the ticket opens a stream");
        let (status, body) = Sse::open(&s, &q, &[]).err().unwrap();
        assert_error(status, &body, 401, "invalid_stream_ticket");
    }
}

#[test]
fn streams_per_key_are_limited() {
    for db in backends() {
        let s = Server::start_with(
            &db,
            &[
                ("WASUP_ADMIN_KEY", ADMIN_KEY),
                ("WASUP_EVENT_STREAMS_PER_KEY", "2"),
            ],
        );
        let h = [("X-API-Key", ADMIN_KEY)];
        let one = Sse::open(&s, "", &h).unwrap();
        let _two = Sse::open(&s, "", &h).unwrap();
        let (status, body) = Sse::open(&s, "", &h).err().unwrap();
        assert_error(status, &body, 429, "too_many_requests");
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .contains("WASUP_EVENT_STREAMS_PER_KEY"),
            "{body}"
        );
        // Another key has its own count.
        let other = key_of(&s, json!({"name": "other", "role": "viewer"}));
        let _three = Sse::open(&s, "", &[("X-API-Key", &other)]).unwrap();
        // A closed stream gives its place back (the server sees the close
        // on its next write: the heartbeat or an event).
        drop(one);
        let id = s.create_session("limit-bot");
        let (status, _) = s.call("POST", &format!("/api/sessions/{id}/start"), None);
        assert!(status == 200 || status == 400, "{status}");
        poll(40, "a freed stream slot", || {
            Sse::open(&s, "", &h)
                .map(|_| ())
                .map_err(|(st, b)| format!("{st} {b}"))
        });
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
    fn a_scoped_key_sees_only_its_sessions() {
        for db in backends() {
            let s = Server::start(&db);
            let mine = s.create_session("mine");
            let theirs = s.create_session("theirs");
            let scoped = key_of(
                &s,
                json!({"name": "scoped", "role": "viewer", "allowedSessions": [mine]}),
            );
            let stream = Sse::open(&s, "", &[("X-API-Key", &scoped)]).unwrap();
            let all = Sse::open(&s, "?events=session.qr", &[("X-API-Key", ADMIN_KEY)]).unwrap();
            start(&s, &theirs);
            start(&s, &mine);
            // The admin stream sees both QRs, and nothing but QRs.
            let qrs = all.until(60, |m| m.data["sessionId"] == mine.as_str());
            assert!(qrs.iter().all(|m| m.event == "session.qr"), "{qrs:#?}");
            // The scoped one sees its session up to the QR, never the other.
            let got = stream.until(60, |m| m.event == "session.qr");
            assert!(
                got.iter().all(|m| m.data["sessionId"] == mine.as_str()),
                "{} saw another session: {got:#?}",
                db.label()
            );
            // Asking for a session out of scope is refused.
            let (status, body) = Sse::open(
                &s,
                &format!("?sessions={theirs}"),
                &[("X-API-Key", &scoped)],
            )
            .err()
            .unwrap();
            assert_error(status, &body, 401, "session_not_in_scope");
        }
    }

    #[test]
    fn resume_after_a_cut_has_no_gap_and_no_duplicate() {
        for db in backends() {
            let s = Server::start(&db);
            let id = s.create_session("resumed");
            let h = [("X-API-Key", ADMIN_KEY)];
            let q = "?sessions=resumed";
            let first = Sse::open(&s, q, &h).unwrap();
            start(&s, &id);
            let mut seen = first.until(60, |m| m.event == "session.qr");
            let cursor = seen.last().unwrap().id.clone().unwrap();
            drop(first);
            // Events while nobody listens.
            stop(&s, &id);
            s.wait_session(&id, 30, |b| b["status"] != "qr_ready");
            start(&s, &id);
            s.wait_session(&id, 60, |b| b["status"] == "qr_ready");
            let again = Sse::open(
                &s,
                q,
                &[("X-API-Key", ADMIN_KEY), ("Last-Event-ID", &cursor)],
            )
            .unwrap();
            seen.extend(again.until(60, |m| m.event == "session.qr"));
            // Same with ?after=: everything after the cursor again.
            let replay = Sse::open(&s, &format!("{q}&after={cursor}"), &h).unwrap();
            let replayed = replay.until(60, |m| m.event == "session.qr");
            let seqs: Vec<u64> = seen
                .iter()
                .map(|m| m.data["seq"].as_u64().unwrap())
                .collect();
            let first_seq = seqs[0];
            assert_eq!(
                seqs,
                (first_seq..first_seq + seqs.len() as u64).collect::<Vec<_>>(),
                "{}: a gap or a duplicate: {seen:#?}",
                db.label()
            );
            let cut = seen
                .iter()
                .position(|m| m.id.as_deref() == Some(cursor.as_str()))
                .unwrap();
            let after: Vec<_> = seen[cut + 1..]
                .iter()
                .map(|m| m.data["seq"].clone())
                .collect();
            let replayed: Vec<_> = replayed.iter().map(|m| m.data["seq"].clone()).collect();
            assert_eq!(after, replayed, "{}", db.label());
            // Each message's id is its event's id.
            assert!(seen
                .iter()
                .all(|m| m.id.as_deref() == m.data["id"].as_str()));
        }
    }

    #[test]
    fn the_admin_cli_prints_one_line_per_event() {
        for db in backends() {
            let s = Server::start(&db);
            let id = s.create_session("cli-events");
            let _other = s.create_session("cli-other");
            start(&s, &id);
            s.wait_session(&id, 60, |b| b["status"] == "qr_ready");
            let out = std::process::Command::new(env!("CARGO_BIN_EXE_wasup-admin"))
                .env_clear()
                .env("WASUP_URL", &s.base)
                .env("WASUP_API_KEY", ADMIN_KEY)
                .args(["events", "--session", "cli-events"])
                .output()
                .unwrap();
            assert!(out.status.success(), "{out:?}");
            let text = String::from_utf8(out.stdout).unwrap();
            let lines: Vec<&str> = text.lines().collect();
            assert!(!lines.is_empty(), "{}: no events", db.label());
            assert!(lines.iter().all(|l| l.contains(" cli-events #")), "{text}");
            assert!(lines.iter().any(|l| l.contains(" session.qr ")), "{text}");
            assert!(
                !text.contains("data:image/png"),
                "the QR image is left out: {text}"
            );
            // In seq order, from 1, each once.
            let seqs: Vec<u64> = lines
                .iter()
                .map(|l| {
                    l.split(" #")
                        .nth(1)
                        .unwrap()
                        .split(' ')
                        .next()
                        .unwrap()
                        .parse()
                        .unwrap()
                })
                .collect();
            assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>(), "{text}");
        }
    }

    /// With room for one event, a stream that is handed two at once (a QR
    /// arrives as `qr_ready` and `session.qr` in one commit) falls behind:
    /// it is cut off with a last message saying why, and resuming from its
    /// last id gets what it missed from the log.
    #[test]
    fn a_consumer_that_falls_behind_is_cut_off_and_resumes_from_the_log() {
        for db in backends() {
            let s = Server::start_with(
                &db,
                &[
                    ("WASUP_ADMIN_KEY", ADMIN_KEY),
                    ("WASUP_EVENT_STREAM_BUFFER", "1"),
                ],
            );
            let id = s.create_session("slow");
            let h = [("X-API-Key", ADMIN_KEY)];
            let stream = Sse::open(&s, "?sessions=slow", &h).unwrap();
            let mut got = Vec::new();
            for _ in 0..10 {
                start(&s, &id);
                s.wait_session(&id, 60, |b| b["status"] == "qr_ready");
                stop(&s, &id);
                s.wait_session(&id, 30, |b| b["status"] != "qr_ready");
                while let Some(m) = stream.next(2) {
                    got.push(m);
                }
                if got.iter().any(|m| m.event == "stream.end") {
                    break;
                }
            }
            let end = got.last().expect("some messages");
            assert_eq!(
                end.event,
                "stream.end",
                "{}: never cut off: {got:#?}",
                db.label()
            );
            assert_eq!(end.data["reason"], "slow_consumer", "{end:?}");
            assert!(stream.next(2).is_none(), "nothing after the end");
            // Resume: every event after the last one received, from seq on.
            let last = got.iter().rev().find_map(|m| m.id.clone());
            let mut seqs: Vec<u64> = got
                .iter()
                .filter(|m| m.id.is_some())
                .map(|m| m.data["seq"].as_u64().unwrap())
                .collect();
            let after = last.unwrap_or_else(|| "evt_00000000000000000000000000000000".into());
            let resumed = Sse::open(&s, &format!("?sessions=slow&after={after}"), &h).unwrap();
            while let Some(m) = resumed.next(2) {
                seqs.push(m.data["seq"].as_u64().unwrap());
            }
            let total = seqs.len() as u64;
            assert_eq!(
                seqs,
                (1..=total).collect::<Vec<_>>(),
                "{}: the cut and the resume together are the whole log",
                db.label()
            );
        }
    }

    /// `?follow=false`: the stored events after the cursor, then the end.
    #[test]
    fn a_finite_stream_sends_the_log_and_ends() {
        for db in backends() {
            let s = Server::start(&db);
            let id = s.create_session("finite");
            start(&s, &id);
            s.wait_session(&id, 60, |b| b["status"] == "qr_ready");
            let zero = "evt_00000000000000000000000000000000";
            let q = format!("?sessions=finite&follow=false&after={zero}");
            let stream = Sse::open(&s, &q, &[("X-API-Key", ADMIN_KEY)]).unwrap();
            let got = stream.until(30, |m| m.event == "stream.end");
            let (end, events) = got.split_last().unwrap();
            assert_eq!(end.data["reason"], "caught_up", "{}", db.label());
            let seqs: Vec<u64> = events
                .iter()
                .map(|m| m.data["seq"].as_u64().unwrap())
                .collect();
            assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
            assert!(events.iter().any(|m| m.event == "session.qr"));
            assert!(stream.next(5).is_none(), "nothing after the end");
            let (status, body) = Sse::open(&s, "?follow=maybe", &[("X-API-Key", ADMIN_KEY)])
                .err()
                .unwrap();
            assert_error(status, &body, 400, "validation_failed");
        }
    }

    #[test]
    fn sigterm_ends_every_stream_with_a_last_message() {
        for db in backends() {
            let mut s = Server::start(&db);
            let stream = Sse::open(&s, "", &[("X-API-Key", ADMIN_KEY)]).unwrap();
            assert_eq!(s.stop(), Some(0), "clean exit");
            let last = stream.until(10, |m| m.event == "stream.end");
            let end = last.last().unwrap();
            assert_eq!(end.data["reason"], "shutting_down", "{end:?}");
            assert!(end.id.is_none());
            assert!(stream.next(5).is_none(), "nothing after the end");
        }
    }
}
