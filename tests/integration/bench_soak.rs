//! Soak (a benchmark, not a test: `#[ignore]`, run by `scripts/bench soak`
//! in release): mixed traffic for a while at a fixed number of linked
//! sessions, to show that throughput and memory stay flat and nothing is
//! lost or stuck. The gateway runs as its own process against a
//! `wasup-simulator` process (as in `bench_scale`, whose linking it reuses).
//!
//! `WASUP_SOAK_SESSIONS` (default 1,000) sessions are linked first, and
//! `HOOKED` of them get a webhook (every event, 20 attempts) to a loopback
//! receiver. Then, for `WASUP_SOAK_SECS` (default 300):
//! - readers: `GET /api/sessions/:id`, and every 20th request the session
//!   list or the overview;
//! - a writer: create a session, add a webhook, patch it, delete the
//!   webhook, delete the session;
//! - chaos: the simulator drops a linked session's connection about every
//!   second (half of them hooked sessions, so their reconnects are
//!   delivered), and every 15th round a whole link cycle (create, start,
//!   scan the QR, ready, delete);
//! - the receiver is down (answers 503) 10 s of every 30 s.
//!
//! Afterwards the receiver stays up and the harness waits (bounded) for every
//! linked session to be `ready` and the outbox to drain. Reported per
//! minute: API requests per second, deliveries received, the gateway's RSS,
//! 5xx so far; then the counts of 5xx, lost events (a seq missing between
//! the first and last a webhook received, plus deliveries still pending or
//! dead-lettered at the end) and stuck sessions (not `ready` at the end).
//! Figures go to `$CARGO_TARGET_TMPDIR/bench-soak.md`; it asserts nothing
//! (the report says pass or fail), so a bad run still writes its figures.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use serde_json::{json, Value};

use crate::bench_scale::{mib, rss_kib, verdict, Bench};
use crate::receiver::Receiver;
use crate::common::ADMIN_KEY;

/// Linked sessions that get a webhook (at most all of them).
const HOOKED: usize = 50;
/// The receiver is down for the last `DOWN_SECS` of every `CYCLE_SECS`.
const CYCLE_SECS: u64 = 30;
const DOWN_SECS: u64 = 10;
/// Bounds of the waits after the traffic stops.
const SETTLE_LIMIT: Duration = Duration::from_secs(180);

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

/// What the traffic threads count.
#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    server_errors: AtomicU64,
    /// Requests that got no answer at all (connection refused, timeout).
    no_answer: AtomicU64,
    drops: AtomicU64,
    link_cycles: AtomicU64,
    link_failures: AtomicU64,
}

impl Counters {
    fn count(&self, status: u16) {
        self.requests.fetch_add(1, Relaxed);
        match status {
            0 => {
                self.no_answer.fetch_add(1, Relaxed);
            }
            500.. => {
                self.server_errors.fetch_add(1, Relaxed);
            }
            _ => {}
        }
    }
}

struct Soak<'a> {
    b: &'a Bench,
    counters: &'a Counters,
    stop: &'a AtomicBool,
    receiver_base: String,
}

impl Soak<'_> {
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let (status, body) = self.b.call(method, path, body);
        self.counters.count(status);
        (status, body)
    }

    fn running(&self) -> bool {
        !self.stop.load(Relaxed)
    }

    fn reader(&self) {
        let mut rng = rand::rng();
        let mut n = 0u64;
        while self.running() {
            n += 1;
            let path = match n % 20 {
                0 => "/api/sessions".to_string(),
                10 => "/api/sessions/stats/overview".to_string(),
                _ => {
                    let (id, _) = &self.b.linked[rng.random_range(0..self.b.linked.len())];
                    format!("/api/sessions/{id}")
                }
            };
            self.call("GET", &path, None);
        }
    }

    fn writer(&self) {
        let mut n = 0u64;
        while self.running() {
            n += 1;
            let (status, got) = self.call(
                "POST",
                "/api/sessions",
                Some(json!({ "name": format!("soak-write-{n}") })),
            );
            if status != 201 {
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
            let id = got["id"].as_str().unwrap_or_default().to_string();
            let (status, hook) = self.call(
                "POST",
                &format!("/api/sessions/{id}/webhooks"),
                Some(json!({ "url": format!("{}/churn/{n}", self.receiver_base) })),
            );
            if status == 201 {
                let wid = hook["id"].as_str().unwrap_or_default();
                let path = format!("/api/sessions/{id}/webhooks/{wid}");
                self.call("PATCH", &path, Some(json!({ "active": false })));
                self.call("GET", &format!("/api/sessions/{id}/webhooks"), None);
                self.call("DELETE", &path, None);
            }
            self.call("DELETE", &format!("/api/sessions/{id}"), None);
        }
    }

    /// Drop the connection of `phone`'s linked device in the simulator.
    fn drop_connection(&self, phone: &str) {
        let sim = &self.b.sim.control;
        let devices: Option<Value> = self
            .b
            .http
            .get(format!("{sim}/phones/{phone}/devices"))
            .send()
            .and_then(|r| r.json())
            .ok();
        let Some(device) = devices.as_ref().and_then(|d| d[0]["device"].as_u64()) else {
            return;
        };
        let dropped = self
            .b
            .http
            .post(format!("{sim}/fault"))
            .json(&json!({ "phone": phone, "device": device, "kind": "drop" }))
            .send()
            .is_ok_and(|r| r.status().is_success());
        if dropped {
            self.counters.drops.fetch_add(1, Relaxed);
        }
    }

    fn chaos(&self) {
        let mut rng = rand::rng();
        let linked = &self.b.linked;
        let hooked = HOOKED.min(linked.len());
        let mut round = 0usize;
        while self.running() {
            round += 1;
            let pick = if round.is_multiple_of(2) && hooked > 0 {
                rng.random_range(0..hooked)
            } else {
                rng.random_range(0..linked.len())
            };
            self.drop_connection(&linked[pick].1);
            if round.is_multiple_of(15) {
                // A whole link cycle on a fresh session and phone, then gone.
                match self.b.link_one(900_000 + round) {
                    Ok((id, _)) => {
                        self.counters.link_cycles.fetch_add(1, Relaxed);
                        self.call("DELETE", &format!("/api/sessions/{id}"), None);
                    }
                    Err(e) => {
                        if self.counters.link_failures.fetch_add(1, Relaxed) < 3 {
                            eprintln!("link cycle {round}: {e}");
                        }
                    }
                }
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    }
}

fn scrape(b: &Bench, metric: &str) -> Option<f64> {
    let text = b
        .http
        .get(b.server.url("/metrics"))
        .send()
        .ok()?
        .text()
        .ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(metric)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// Wait until `done` or `limit`; whether it held.
fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let started = Instant::now();
    while started.elapsed() < limit {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    done()
}

/// Seqs missing per webhook between the first and the last it received.
fn missing_seqs(receiver: &Receiver) -> (u64, usize) {
    let mut per_hook: BTreeMap<String, BTreeSet<u64>> = BTreeMap::new();
    let mut deliveries = 0;
    for r in receiver.received() {
        if !r.path.starts_with("/hook/") {
            continue;
        }
        let seq = serde_json::from_slice::<Value>(&r.body)
            .ok()
            .and_then(|v| v["seq"].as_u64());
        if let Some(seq) = seq {
            per_hook.entry(r.path.clone()).or_default().insert(seq);
            deliveries += 1;
        }
    }
    let missing = per_hook
        .values()
        .map(|seqs| {
            let (first, last) = (seqs.first().unwrap(), seqs.last().unwrap());
            (last - first + 1) - seqs.len() as u64
        })
        .sum();
    (missing, deliveries)
}

#[test]
#[ignore = "benchmark: run by scripts/bench soak in release"]
fn bench_soak_mixed_traffic() {
    let secs: u64 = env_or("WASUP_SOAK_SECS", 300);
    let sessions: usize = env_or("WASUP_SOAK_SESSIONS", 1000).max(1);
    let dir = tempfile::tempdir().unwrap();
    let mut b = Bench::start(dir.path(), &[("WASUP_WEBHOOK_ALLOW_PRIVATE", "true")]);
    let link_time = b.link_to(sessions);
    eprintln!("{sessions} sessions linked in {link_time:?}");

    let down = Arc::new(AtomicBool::new(false));
    let receiver = {
        let down = down.clone();
        Receiver::start(Arc::new(move |_| {
            let status = if down.load(Relaxed) { 503 } else { 200 };
            (status, Duration::ZERO)
        }))
    };
    let base = receiver.base();
    let hooked = HOOKED.min(b.linked.len());
    for (i, (id, _)) in b.linked.iter().take(hooked).enumerate() {
        let (status, got) = b.call(
            "POST",
            &format!("/api/sessions/{id}/webhooks"),
            Some(json!({ "url": format!("{base}/hook/{i}"), "events": ["*"], "maxAttempts": 20 })),
        );
        assert_eq!(status, 201, "{got}");
    }

    let counters = Counters::default();
    let stop = AtomicBool::new(false);
    let soak = Soak {
        b: &b,
        counters: &counters,
        stop: &stop,
        receiver_base: base.clone(),
    };
    // (minute, requests/s, deliveries received, RSS KiB, 5xx so far)
    let mut minutes: Vec<(u64, f64, usize, u64, u64)> = Vec::new();
    std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| soak.reader());
        }
        scope.spawn(|| soak.writer());
        scope.spawn(|| soak.chaos());
        let started = Instant::now();
        let (mut last_requests, mut last_received) = (0u64, 0usize);
        let mut minute_started = Instant::now();
        while started.elapsed() < Duration::from_secs(secs) {
            std::thread::sleep(Duration::from_secs(1));
            let t = started.elapsed().as_secs();
            down.store(t % CYCLE_SECS >= CYCLE_SECS - DOWN_SECS, Relaxed);
            let whole = minute_started.elapsed() >= Duration::from_secs(60);
            if whole || started.elapsed() >= Duration::from_secs(secs) {
                let requests = counters.requests.load(Relaxed);
                let received = receiver.count();
                let span = minute_started.elapsed().as_secs_f64();
                minutes.push((
                    minutes.len() as u64 + 1,
                    (requests - last_requests) as f64 / span,
                    received - last_received,
                    rss_kib(b.pid()),
                    counters.server_errors.load(Relaxed),
                ));
                (last_requests, last_received) = (requests, received);
                minute_started = Instant::now();
            }
        }
        stop.store(true, Relaxed);
        down.store(false, Relaxed);
    });

    // Afterwards: every linked session back to ready, the outbox drained.
    let n = b.linked.len() as u64;
    // Link cycles cut short may leave an extra session: at least n ready.
    wait_until(SETTLE_LIMIT, || {
        b.overview()["ready"].as_u64().is_some_and(|r| r >= n)
    });
    let ready = b.overview()["ready"].as_u64().unwrap_or(0);
    let stuck = n.saturating_sub(ready);
    // Which ones, and why: the report names them.
    let mut stuck_detail = String::new();
    if stuck > 0 {
        let list: Value = b
            .http
            .get(b.server.url("/api/sessions"))
            .header("X-API-Key", ADMIN_KEY)
            .send()
            .and_then(|r| r.json())
            .unwrap_or(Value::Null);
        for v in list.as_array().into_iter().flatten() {
            if v["status"] != "ready" {
                let line = format!(
                    "- `{}`: status `{}`, lastError {}, nextRetryAt {}, desiredState {}\n",
                    v["name"].as_str().unwrap_or("?"),
                    v["status"].as_str().unwrap_or("?"),
                    v["lastError"],
                    v["nextRetryAt"],
                    v["desiredState"],
                );
                eprint!("stuck: {line}");
                stuck_detail.push_str(&line);
            }
        }
    }
    wait_until(SETTLE_LIMIT, || {
        scrape(&b, "wasup_webhook_outbox_depth") == Some(0.0)
    });
    let pending = scrape(&b, "wasup_webhook_outbox_depth").unwrap_or(f64::NAN);
    let dead = scrape(&b, "wasup_webhook_dead_letters").unwrap_or(f64::NAN);
    let (gaps, deliveries) = missing_seqs(&receiver);
    let lost = gaps as f64 + pending + dead;
    let errors = counters.server_errors.load(Relaxed);
    let no_answer = counters.no_answer.load(Relaxed);

    let mut r = String::new();
    writeln!(
        r,
        "{sessions} linked sessions ({hooked} with a webhook to a loopback receiver that answers \
         503 for {DOWN_SECS} s of every {CYCLE_SECS} s), {secs} s of mixed traffic: 2 reader \
         threads, 1 writer thread (create session → webhook → patch → delete → delete session), \
         chaos (a simulator drop about every second, a full link cycle every 15th round).\n"
    )
    .unwrap();
    writeln!(
        r,
        "| minute | API requests/s | webhook requests received | gateway RSS | 5xx so far |"
    )
    .unwrap();
    writeln!(r, "|---|---|---|---|---|").unwrap();
    for (minute, rps, received, kib, errs) in &minutes {
        writeln!(r, "| {minute} | {rps:.0} | {received} | {} | {errs} |", mib(*kib)).unwrap();
    }
    let flat = |first: f64, last: f64| last <= first * 1.25;
    let (rss_first, rss_last) = (
        minutes.first().map_or(0, |m| m.3) as f64,
        minutes.last().map_or(0, |m| m.3) as f64,
    );
    writeln!(
        r,
        "\n| count | value | goal |\n|---|---|---|\n\
         | 5xx answers | {errors} | 0: {} |\n\
         | requests without an answer | {no_answer} | 0: {} |\n\
         | lost events (seq gaps {gaps}, still pending {pending}, dead-lettered {dead}) | {lost} | 0: {} |\n\
         | stuck sessions (not `ready` within {} s after the traffic) | {stuck} | 0: {} |\n\
         | RSS, first → last minute | {} → {} | flat (≤ +25 %): {} |\n\
         | drops / link cycles (failed) / requests to the hooked sessions' webhooks (drain included) | {} / {} ({}) / {deliveries} | - |",
        verdict(errors == 0),
        verdict(no_answer == 0),
        verdict(lost == 0.0),
        SETTLE_LIMIT.as_secs(),
        verdict(stuck == 0),
        mib(rss_first as u64),
        mib(rss_last as u64),
        verdict(flat(rss_first, rss_last)),
        counters.drops.load(Relaxed),
        counters.link_cycles.load(Relaxed),
        counters.link_failures.load(Relaxed),
    )
    .unwrap();
    if !stuck_detail.is_empty() {
        writeln!(r, "\nNot `ready` at the end:\n\n{stuck_detail}").unwrap();
    }
    println!("{r}");
    let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("bench-soak.md");
    std::fs::write(&out, &r).unwrap();
    println!("written to {}", out.display());
}
