//! Benchmark (not a test: `#[ignore]`, run by `scripts/bench` in release):
//! messages with pacing off, on linked sessions of the embedded simulator.
//!
//! - accepted/s: `send-text` requests over HTTP from client threads, each
//!   waiting for its answer; one round per client count
//!   (`WASUP_BENCH_MSG_CLIENTS`, default `8,64`): with few clients the figure
//!   is their round trip, with many it is what the gateway can take;
//! - delivered/s: from the first acceptance until every phone holds every
//!   message (read from the simulator);
//! - inbound → signed webhook latency: phones write to sessions at about
//!   100 messages/s; time from the request to the simulator until the
//!   `message.received` delivery arrives at a local receiver (p50/p99).
//!
//! Sizes: `WASUP_BENCH_MSG_SESSIONS` (default 100), `WASUP_BENCH_MSG_PER_SESSION`
//! (default 100, each round), `WASUP_BENCH_MSG_INBOUND` (default 1000),
//! `WASUP_BENCH_MSG_STORED` (default 1000; 0 skips the memory part). It asserts only
//! that nothing was lost or repeated.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::*;
use crate::receiver::Receiver;
use serde_json::{json, Value};

fn size(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The phone session `i`'s messages go to.
fn friend(i: usize) -> String {
    format!("1555400{i:04}")
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[test]
#[ignore = "benchmark: run by scripts/bench in release"]
fn bench_messages() {
    let sessions = size("WASUP_BENCH_MSG_SESSIONS", 100);
    let per_session = size("WASUP_BENCH_MSG_PER_SESSION", 100);
    let inbound = size("WASUP_BENCH_MSG_INBOUND", 1000);
    let db = TestDb::Sqlite;
    let s = Server::start_with(
        &db,
        &[
            ("WASUP_ADMIN_KEY", ADMIN_KEY),
            ("WASUP_WEBHOOK_ALLOW_PRIVATE", "true"),
            ("WASUP_CONNECT_TIMEOUT", "60"),
            (
                "RUST_LOG",
                &std::env::var("WASUP_BENCH_LOG").unwrap_or("warn".into()),
            ),
        ],
    );
    let config = json!({"sending": {"minDelayMs": 0, "maxDelayMs": 0, "typing": false,
                                    "perMinute": 0, "perDay": 0}});
    // Link every session to its own phone; each writes to its own friend.
    let mut ids = Vec::new();
    for i in 0..sessions {
        let (status, body) = s.call(
            "POST",
            "/api/sessions",
            Some(json!({"name": format!("msg-{i:04}"), "config": config})),
        );
        assert_eq!(status, 201, "{body}");
        let id = body["id"].as_str().unwrap().to_string();
        s.call("POST", &format!("/api/sessions/{id}/start"), None);
        ids.push(id);
    }
    for (i, id) in ids.iter().enumerate() {
        s.wait_session(id, 120, |b| b["status"] == "qr_ready");
        let (status, got) = s.call(
            "POST",
            &format!("/api/simulator/sessions/{id}/scan"),
            Some(json!({"phone": format!("1555300{i:04}"), "pushName": "Bench"})),
        );
        assert_eq!(status, 200, "{got}");
    }
    for id in &ids {
        s.wait_session(id, 120, |b| b["status"] == "ready");
    }

    // ---- outbound: accepted/s over HTTP, delivered/s to the phones, one
    // round of `total` messages per client count
    let total = sessions * per_session;
    let mut rounds = Vec::new();
    for (round, clients) in client_counts().into_iter().enumerate() {
        let (accepted, delivered) = send_round(&s, &ids, total, clients, round * total);
        rounds.push((clients, accepted, delivered));
    }
    // ---- inbound: phone → signed message.received webhook
    let rx = Receiver::keep_alive();
    let mut secrets = HashMap::new();
    for id in &ids {
        let (status, hook) = s.call(
            "POST",
            &format!("/api/sessions/{id}/webhooks"),
            Some(json!({"url": rx.url(), "events": ["message.received"]})),
        );
        assert_eq!(status, 201, "{hook}");
        secrets.insert(id.clone(), hook["secret"].as_str().unwrap().to_string());
    }
    let sent_at: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let tick = Duration::from_millis(10); // about 100 messages/s
    let start = Instant::now();
    for n in 0..inbound {
        let i = n % sessions;
        let t0 = Instant::now();
        let (status, got) = s.call(
            "POST",
            &format!("/api/simulator/phones/{}/messages", friend(i)),
            Some(json!({"to": ids[i], "text": format!("inbound {n}")})),
        );
        assert_eq!(status, 201, "{got}");
        sent_at
            .lock()
            .unwrap()
            .insert(got["messageId"].as_str().unwrap().to_string(), t0);
        let due = start + tick * (n as u32 + 1);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    let got = rx.wait(300, "every message.received", |r| r.len() >= inbound);
    let sent_at = sent_at.lock().unwrap();
    let mut latencies = Vec::new();
    let mut unsigned = 0;
    for r in &got {
        let b = r.json();
        let session = b["sessionId"].as_str().unwrap_or("");
        if !secrets.get(session).is_some_and(|k| r.is_signed_by(k)) {
            unsigned += 1;
        }
        if let Some(t0) = sent_at.get(b["data"]["id"].as_str().unwrap_or("")) {
            latencies.push(r.at.saturating_duration_since(*t0));
        }
    }
    latencies.sort();

    // ---- memory: RSS per linked session once each holds `stored` messages.
    // Inbound messages fill the store (the embedded simulator keeps no copy
    // of what phones send, so the process's growth is the gateway's).
    // 0: not measured.
    let stored = size("WASUP_BENCH_MSG_STORED", 1000);
    let have = rounds.len() * per_session + inbound / sessions;
    let memory = if stored > have {
        stored_messages_memory(&s, &ids, stored, have)
    } else {
        String::new()
    };

    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let mut report = String::from(
        "| sessions | messages | clients | accepted/s (HTTP) | delivered/s (to phones) | delivered | repeated |\n\
         |---|---|---|---|---|---|---|\n",
    );
    for (clients, accepted, delivered) in &rounds {
        report.push_str(&format!(
            "| {sessions} | {total} | {clients} | **{:.0}** | **{:.0}** | {} | {} |\n",
            accepted, delivered.rate, delivered.count, delivered.repeated
        ));
    }
    report.push_str(&format!(
        "\n| inbound | webhook p50 | webhook p99 | unsigned |\n\
         |---|---|---|---|\n\
         | {} | {:.1} ms | **{:.1} ms** | {unsigned} |\n",
        latencies.len(),
        ms(percentile(&latencies, 0.50)),
        ms(percentile(&latencies, 0.99)),
    ));
    let report = format!("{report}\n{memory}");
    println!("{report}");
    let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("bench-messages.md");
    std::fs::write(&out, &report).unwrap();
    println!("written to {}", out.display());
    for (round, (_, _, delivered)) in rounds.iter().enumerate() {
        assert_eq!(
            delivered.count,
            (round + 1) * total,
            "every accepted message reached its phone"
        );
        assert_eq!(delivered.repeated, 0, "no phone got a message twice");
    }
    assert_eq!(latencies.len(), inbound, "every inbound message was delivered");
    assert_eq!(unsigned, 0);
}

/// The client counts of the send rounds: `WASUP_BENCH_MSG_CLIENTS`, a
/// comma-separated list (default `8,64`).
fn client_counts() -> Vec<usize> {
    let raw = std::env::var("WASUP_BENCH_MSG_CLIENTS").unwrap_or_else(|_| "8,64".into());
    raw.split(',')
        .map(|c| c.trim().parse().expect("WASUP_BENCH_MSG_CLIENTS: numbers"))
        .collect()
}

struct Delivered {
    rate: f64,
    /// Messages the phones hold in all (every round so far).
    count: usize,
    repeated: u64,
}

/// One round: `total` `send-text` requests from `clients` threads, each
/// waiting for its answer (session `n % sessions` writes to its friend);
/// then until the phones hold `before + total` messages. Both rates count
/// from the first request.
fn send_round(
    s: &Server,
    ids: &[String],
    total: usize,
    clients: usize,
    before: usize,
) -> (f64, Delivered) {
    let sessions = ids.len();
    let next = Arc::new(AtomicUsize::new(0));
    // Every client is a task on one harness thread (async HTTP): the
    // harness shares the 2 cores with the gateway, and a thread and a
    // runtime per client took about 0.8 of a core at 64 clients.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let http = reqwest::Client::new();
    let started = Instant::now();
    rt.block_on(async {
        let tasks: Vec<_> = (0..clients)
            .map(|_| {
                let (next, ids, http) = (next.clone(), ids.to_vec(), http.clone());
                let base = s.base.clone();
                tokio::spawn(async move {
                    loop {
                        let n = next.fetch_add(1, Ordering::Relaxed);
                        if n >= total {
                            break;
                        }
                        let i = n % ids.len();
                        let res = http
                            .post(format!(
                                "{base}/api/sessions/{}/messages/send-text",
                                ids[i]
                            ))
                            .header("X-API-Key", ADMIN_KEY)
                            .json(&json!({"chatId": format!("{}@c.us", friend(i)),
                                          "text": format!("bench {} {n}", before + n)}))
                            .send()
                            .await
                            .expect("send-text");
                        assert_eq!(res.status().as_u16(), 201);
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
    });
    let accept_time = started.elapsed();
    let mut count = 0;
    let mut repeated = 0;
    let deadline = Instant::now() + Duration::from_secs(600);
    while Instant::now() < deadline {
        count = 0;
        repeated = 0;
        for i in 0..sessions {
            let res = s
                .req(
                    "GET",
                    &format!("/api/simulator/phones/{}/messages", friend(i)),
                    Some(ADMIN_KEY),
                )
                .send()
                .unwrap();
            repeated += res
                .headers()
                .get("x-simulator-duplicates")
                .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
                .unwrap_or(0);
            let list: Value = res.json().unwrap();
            count += list.as_array().map_or(0, Vec::len);
        }
        if count >= before + total {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let deliver_time = started.elapsed();
    (
        total as f64 / accept_time.as_secs_f64().max(0.001),
        Delivered {
            rate: count.saturating_sub(before) as f64 / deliver_time.as_secs_f64().max(0.001),
            count,
            repeated,
        },
    )
}

/// Phones write to every session until each holds `stored` messages (it
/// holds `have` already); the gateway's RSS before and after, settled. The
/// report's rows.
fn stored_messages_memory(s: &Server, ids: &[String], stored: usize, have: usize) -> String {
    let pid = s.pid().expect("the gateway runs");
    let heap = || {
        let (_, o) = s.call("GET", "/api/sessions/stats/overview", None);
        o["memoryUsage"]["heapUsed"].as_u64().unwrap_or(0)
    };
    std::thread::sleep(Duration::from_secs(10));
    let before = crate::bench_scale::rss_kib(pid);
    let heap_before = heap();
    let more = stored.saturating_sub(have);
    let total = more * ids.len();
    let next = Arc::new(AtomicUsize::new(0));
    let last: Arc<Mutex<HashMap<usize, String>>> = Arc::default();
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let (next, last, ids) = (next.clone(), last.clone(), ids.to_vec());
            let base = s.base.clone();
            std::thread::spawn(move || {
                let http = reqwest::blocking::Client::new();
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= total {
                        break;
                    }
                    let i = n % ids.len();
                    let res: Value = http
                        .post(format!("{base}/api/simulator/phones/1555500{i:04}/messages"))
                        .header("X-API-Key", ADMIN_KEY)
                        .json(&json!({"to": ids[i], "text": format!("stored {n}")}))
                        .send()
                        .expect("phone send")
                        .json()
                        .unwrap();
                    if n + ids.len() >= total {
                        let id = res["messageId"].as_str().unwrap().to_string();
                        last.lock().unwrap().insert(i, id);
                    }
                }
            })
        })
        .collect();
    let started = Instant::now();
    for t in threads {
        t.join().unwrap();
    }
    // Stored once every session's last message is.
    let last = last.lock().unwrap().clone();
    for (i, id) in &last {
        poll(600, &format!("message {id} stored"), || {
            let (status, m) = s.call("GET", &format!("/api/sessions/{}/messages/{id}", ids[*i]), None);
            if status == 200 { Ok(m) } else { Err(format!("{status}")) }
        });
    }
    let fill = started.elapsed();
    std::thread::sleep(Duration::from_secs(10));
    let after = crate::bench_scale::rss_kib(pid);
    let heap_after = heap();
    let per_session = after.saturating_sub(before) as f64 / ids.len() as f64;
    format!(
        "| sessions | stored per session | inbound stored/s | RSS before | RSS after | jemalloc heap in use (MiB) | RSS growth per session |\n\
         |---|---|---|---|---|---|---|\n\
         | {} | {have} → {stored} | {:.0} | {} | {} | {heap_before} → {heap_after} | **{per_session:.1} KiB** |\n",
        ids.len(),
        total as f64 / fill.as_secs_f64().max(0.001),
        crate::bench_scale::mib(before),
        crate::bench_scale::mib(after),
    )
}
