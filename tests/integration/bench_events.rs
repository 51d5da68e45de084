//! Benchmark (not a test: `#[ignore]`, run by `scripts/bench` in release):
//! the live event stream. (1) The RSS cost of an open stream: the gateway's
//! RSS before and after opening `CLIENTS` idle SSE streams. (2) Fan-out:
//! `SESSIONS` sessions are started at once (each goes initializing →
//! qr_ready and shows a QR: their events are the load) while `CLIENTS`
//! streams follow every event; events per second delivered to all clients
//! together, from the first start to the last arrival. (3) The latency from
//! a state change (the event's `timestamp`, taken when it is committed) to a
//! client reading it, p50/p99 over every (status event, client) pair. It
//! reports; it asserts only that every client got every event.
//!
//! Sizes: `WASUP_BENCH_EVENT_CLIENTS` (default 100) and
//! `WASUP_BENCH_EVENT_SESSIONS` (default 1000); a debug run with tiny
//! numbers checks that the harness works.

use std::io::{BufRead, BufReader};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::common::*;

fn size(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// One received event: when, and the envelope's event name and timestamp.
struct Got {
    at: SystemTime,
    event: String,
    timestamp: String,
}

/// An SSE client on its own thread, sending what it reads to `tx`.
fn follow(s: &Server, tx: mpsc::Sender<(usize, Got)>, n: usize) -> std::thread::JoinHandle<()> {
    let res = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(3600))
        .build()
        .unwrap()
        .get(s.url("/api/events"))
        .header("X-API-Key", ADMIN_KEY)
        .send()
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    std::thread::spawn(move || {
        let mut reader = BufReader::new(res);
        let mut line = String::new();
        loop {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            let Some(data) = line.strip_prefix("data: ") else {
                continue;
            };
            let at = SystemTime::now();
            let v: Value = serde_json::from_str(data.trim_end()).unwrap_or(Value::Null);
            let got = Got {
                at,
                event: v["event"].as_str().unwrap_or_default().to_string(),
                timestamp: v["timestamp"].as_str().unwrap_or_default().to_string(),
            };
            if tx.send((n, got)).is_err() {
                return;
            }
        }
    })
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

#[test]
#[ignore = "benchmark: run by scripts/bench in release"]
fn bench_event_stream_fan_out_latency_and_rss() {
    let clients = size("WASUP_BENCH_EVENT_CLIENTS", 100);
    let sessions = size("WASUP_BENCH_EVENT_SESSIONS", 1000);
    let per_key = (clients + 4).to_string();
    let s = Server::start_with(
        &TestDb::Sqlite,
        &[
            ("WASUP_ADMIN_KEY", ADMIN_KEY),
            ("WASUP_EVENT_STREAMS_PER_KEY", &per_key),
            // Room for a burst of every session's events: the benchmark
            // measures delivery, not the slow-consumer cut-off.
            ("WASUP_EVENT_STREAM_BUFFER", "1000000"),
            ("RUST_LOG", "warn"),
        ],
    );
    let pid = s.pid().expect("server pid");
    let ids: Vec<String> = (0..sessions)
        .map(|i| s.create_session(&format!("ev-{i:05}")))
        .collect();

    // (1) RSS per open stream.
    std::thread::sleep(Duration::from_secs(1));
    let before = rss_kib(pid);
    let (tx, rx) = mpsc::channel();
    let readers: Vec<_> = (0..clients).map(|n| follow(&s, tx.clone(), n)).collect();
    drop(tx);
    std::thread::sleep(Duration::from_secs(2));
    let after = rss_kib(pid);
    let per_stream_kib = after.saturating_sub(before) as f64 / clients.max(1) as f64;

    // (2) and (3): start every session; follow until every client has every event.
    let started = Instant::now();
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(300))
        .build()
        .unwrap();
    for id in &ids {
        // A pooled connection the loaded server has just closed is reset:
        // send again on a fresh one (a start that did land answers 400
        // session_already_started).
        let mut tries = 0;
        let status = loop {
            match http
                .post(s.url(&format!("/api/sessions/{id}/start")))
                .header("X-API-Key", ADMIN_KEY)
                .send()
            {
                Ok(res) => break res.status().as_u16(),
                Err(e) if tries < 5 => {
                    tries += 1;
                    eprintln!("bench_events: start {id}: {e}; again");
                }
                Err(e) => panic!("start {id}: {e}"),
            }
        };
        assert!(status == 200 || (tries > 0 && status == 400), "start {id}: {status}");
    }
    let starts_done = started.elapsed();
    // Each session: initializing, qr_ready (status) and one QR, at least.
    let want_per_client = sessions * 3;
    let mut counts = vec![0usize; clients];
    let mut latencies_ms = Vec::new();
    let mut last_arrival = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(600);
    while counts.iter().any(|c| *c < want_per_client) && Instant::now() < deadline {
        let Ok((n, got)) = rx.recv_timeout(Duration::from_secs(30)) else {
            break;
        };
        last_arrival = Instant::now();
        counts[n] += 1;
        if got.event == "session.status" {
            if let Ok(at) = DateTime::parse_from_rfc3339(&got.timestamp) {
                let sent: SystemTime = at.with_timezone(&Utc).into();
                if let Ok(d) = got.at.duration_since(sent) {
                    latencies_ms.push(d.as_secs_f64() * 1000.0);
                }
            }
        }
    }
    let delivered: usize = counts.iter().sum();
    let span = last_arrival.duration_since(started).as_secs_f64();
    latencies_ms.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let p50 = percentile(&latencies_ms, 0.50);
    let p99 = percentile(&latencies_ms, 0.99);
    let complete = counts.iter().all(|c| *c >= want_per_client);

    let report = format!(
        "| figure | value |\n|---|---|\n\
         | open streams | {clients} |\n\
         | RSS per open stream | {per_stream_kib:.1} KiB (RSS {before} → {after} KiB) |\n\
         | sessions started at once | {sessions} (starts sent in {:.1} s) |\n\
         | events delivered to all clients | {delivered} in {span:.1} s |\n\
         | fan-out rate | {:.0} events/s |\n\
         | state change → client, p50 | {p50:.1} ms |\n\
         | state change → client, p99 | {p99:.1} ms |\n\
         | every client got every event | {} |\n",
        starts_done.as_secs_f64(),
        delivered as f64 / span.max(0.001),
        if complete { "yes" } else { "NO" },
    );
    println!("bench-events:\n{report}");
    let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("bench-events.md");
    std::fs::write(&out, &report).unwrap();
    drop(readers);
    assert!(complete, "a client missed events: {counts:?} (want {want_per_client} each)");
}
