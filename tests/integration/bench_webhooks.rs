//! Benchmark (not a test: `#[ignore]`, run by `scripts/bench` in release):
//! signed webhook deliveries per second to a local receiver, with 1,000
//! webhooks. It measures and reports; it asserts only that nothing was lost.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use crate::common::*;
use crate::receiver::Receiver;
use serde_json::{json, Value};

const SESSIONS: usize = 10;
const HOOKS_PER_SESSION: usize = 100;
const CYCLES: usize = 10;

#[test]
#[ignore = "benchmark: run by scripts/bench in release"]
fn bench_signed_webhook_deliveries() {
    let db = TestDb::Sqlite;
    let s = Server::start_with(
        &db,
        &[
            ("WASUP_ADMIN_KEY", ADMIN_KEY),
            ("WASUP_WEBHOOK_ALLOW_PRIVATE", "true"),
            // 100 webhooks per session, past the default limit of 10.
            ("WASUP_MAX_WEBHOOKS_PER_SESSION", "100"),
            ("RUST_LOG", "warn"),
        ],
    );
    let mut secrets = HashMap::new();
    let rx = Receiver::keep_alive();
    let base = rx.base();

    let mut sessions = Vec::new();
    for i in 0..SESSIONS {
        let id = s.create_session(&format!("bench-{i:02}"));
        for h in 0..HOOKS_PER_SESSION {
            let n = i * HOOKS_PER_SESSION + h;
            let (status, got) = s.call(
                "POST",
                &format!("/api/sessions/{id}/webhooks"),
                Some(json!({"url": format!("{base}/hook/{n}"), "events": ["session.status"]})),
            );
            assert_eq!(status, 201, "{got}");
            secrets.insert(n, got["secret"].as_str().unwrap().to_string());
        }
        sessions.push(id);
    }

    // Events: start and stop every session CYCLES times (each a few status
    // changes), fanned out to its 100 webhooks.
    let started = Instant::now();
    for _ in 0..CYCLES {
        for id in &sessions {
            s.call("POST", &format!("/api/sessions/{id}/start"), None);
            s.call("POST", &format!("/api/sessions/{id}/stop"), None);
        }
    }
    let events_done = started.elapsed();
    // Wait until deliveries stop arriving.
    let mut last = 0;
    let mut quiet_since = Instant::now();
    while quiet_since.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(200));
        let n = rx.count();
        if n != last {
            last = n;
            quiet_since = Instant::now();
        }
    }
    let received = rx.received();
    let first = received.iter().map(|r| r.at).min().unwrap();
    let end = received.iter().map(|r| r.at).max().unwrap();
    // (webhook path index, session id, seq) of every delivery.
    let mut bad = 0;
    let mut seen = Vec::new();
    for r in &received {
        let hook: usize = r
            .path
            .rsplit('/')
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or(usize::MAX);
        if !secrets
            .get(&hook)
            .is_some_and(|secret| r.is_signed_by(secret))
        {
            bad += 1;
        }
        let v: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
        seen.push((
            hook,
            v["sessionId"].as_str().unwrap_or("").to_string(),
            v["seq"].as_u64().unwrap_or(0),
        ));
    }
    let window = end.duration_since(first).as_secs_f64();
    // Every webhook must have every seq of its session, 1..=max.
    let mut per_hook: HashMap<usize, (String, HashSet<u64>)> = HashMap::new();
    for (hook, session, seq) in &seen {
        per_hook
            .entry(*hook)
            .or_insert_with(|| (session.clone(), HashSet::new()))
            .1
            .insert(*seq);
    }
    let distinct: usize = per_hook.values().map(|(_, seqs)| seqs.len()).sum();
    let duplicates = seen.len() - distinct;
    // Every webhook of a session subscribes to the same events, so each must
    // hold every seq any of its siblings got: a shortfall is a lost delivery.
    let mut per_session: HashMap<&str, HashSet<u64>> = HashMap::new();
    for (session, seqs) in per_hook.values() {
        per_session
            .entry(session.as_str())
            .or_default()
            .extend(seqs);
    }
    let missing: usize = per_hook
        .values()
        .map(|(session, seqs)| per_session[session.as_str()].len() - seqs.len())
        .sum();
    let rate = seen.len() as f64 / window.max(0.001);
    let report = format!(
        "| webhooks | deliveries | signature failures | duplicates | missing | events generated in | delivery window | deliveries/s |\n|---|---|---|---|---|---|---|---|\n| {} | {} | {} | {} | {} | {:.1} s | {:.2} s | **{:.0}** |\n",
        SESSIONS * HOOKS_PER_SESSION,
        seen.len(),
        bad,
        duplicates,
        missing,
        events_done.as_secs_f64(),
        window,
        rate,
    );
    println!("{report}");
    let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("bench-webhooks.md");
    std::fs::write(&out, &report).unwrap();
    println!("written to {}", out.display());
    assert_eq!(bad, 0, "every delivery is signed");
    assert_eq!(missing, 0, "no delivery lost");
    assert_eq!(
        per_hook.len(),
        SESSIONS * HOOKS_PER_SESSION,
        "every webhook got events"
    );
}
