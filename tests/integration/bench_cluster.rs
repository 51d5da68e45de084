//! Benchmark (not a test: `#[ignore]`, run by `scripts/bench` in release with
//! `WASUP_TEST_DATABASE_URL`): cluster mode on PostgreSQL. For 100 and 1,000
//! sessions (`WASUP_BENCH_CLUSTER_SIZES`) on three nodes with the default
//! lease TTL (15 s): failover time (kill -9 of the node owning the most
//! sessions → every session `ready` on the survivors), the lease statements
//! per node per second, and the cost of cluster mode on `GET
//! /api/sessions/:id` against a single node (mean latency ratio, one run).
//! Writes `target/tmp/bench-cluster.md`; asserts only that every session
//! came back.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::json;
use wasup::db::testing::TestDatabase;

use crate::common::*;
use crate::sim_process::SimProcess;

const MASTER_KEY: &str = "4242424242424242424242424242424242424242424242424242424242424242";
const LINK_THREADS: usize = 16;

fn node(db: &TestDb, sim: &SimProcess, id: &str) -> Server {
    let port = free_port();
    let bind = format!("127.0.0.1:{port}");
    let url = format!("http://127.0.0.1:{port}");
    Server::start_with(
        db,
        &[
            ("WASUP_ADMIN_KEY", ADMIN_KEY),
            ("WASUP_MASTER_KEY", MASTER_KEY),
            ("WASUP_SIMULATOR_URL", sim.ws.as_str()),
            ("WASUP_BIND", bind.as_str()),
            ("WASUP_NODE_URL", url.as_str()),
            ("WASUP_NODE_ID", id),
            ("RUST_LOG", "warn"),
        ],
    )
}

fn owners(s: &Server) -> HashMap<String, Vec<String>> {
    let (_, body) = s.call("GET", "/api/cluster/nodes", None);
    body["nodes"]
        .as_array()
        .map(|nodes| {
            nodes
                .iter()
                .map(|n| {
                    let ids = n["sessions"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|v| v.as_str().unwrap().to_string())
                        .collect();
                    (n["id"].as_str().unwrap().to_string(), ids)
                })
                .collect()
        })
        .unwrap_or_default()
}

fn ready_count(s: &Server) -> usize {
    let (_, list) = s.call("GET", "/api/sessions", None);
    list.as_array()
        .map(|a| a.iter().filter(|v| v["status"] == "ready").count())
        .unwrap_or(0)
}

fn link_all(s: &Server, sim: &SimProcess, ids: &[String]) {
    let chunks: Vec<Vec<(usize, String)>> = {
        let mut c = vec![Vec::new(); LINK_THREADS];
        for (i, id) in ids.iter().enumerate() {
            c[i % LINK_THREADS].push((i, id.clone()));
        }
        c
    };
    std::thread::scope(|scope| {
        for chunk in chunks {
            scope.spawn(move || {
                let http = reqwest::blocking::Client::new();
                for (i, id) in chunk {
                    let qr = poll(120, "a QR", || {
                        let (status, got) =
                            s.call("GET", &format!("/api/sessions/{id}/qr?format=raw"), None);
                        match (status, got["qr"].as_str()) {
                            (200, Some(qr)) => Ok(qr.to_string()),
                            _ => Err(format!("{status} {got}")),
                        }
                    });
                    let res = http
                        .post(format!("{}/scan", sim.control))
                        .json(&json!({"qr": qr, "phone": format!("6283{i:08}"), "push_name": "Bench"}))
                        .send()
                        .unwrap();
                    assert!(res.status().is_success());
                }
            });
        }
    });
}

fn metric(s: &Server, prefix: &str) -> f64 {
    let text = s.req("GET", "/metrics", None).send().unwrap().text().unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Mean latency of `n` sequential `GET /api/sessions/:id`.
fn mean_get(s: &Server, id: &str, n: usize) -> Duration {
    let started = Instant::now();
    for _ in 0..n {
        let res = s
            .req("GET", &format!("/api/sessions/{id}"), Some(ADMIN_KEY))
            .send()
            .unwrap();
        assert!(res.status().is_success());
        let _ = res.bytes();
    }
    started.elapsed() / n as u32
}

fn run(size: usize, report: &mut String) {
    let Some(pg) = TestDatabase::postgres("bench_cluster") else {
        return;
    };
    let db = TestDb::Postgres(pg);
    let dir = tempfile::tempdir().unwrap();
    let sim = SimProcess::start(&dir.path().join("sim"));
    let a = node(&db, &sim, "node-a");
    let b = node(&db, &sim, "node-b");
    let c = node(&db, &sim, "node-c");
    let servers: HashMap<&str, &Server> = [("node-a", &a), ("node-b", &b), ("node-c", &c)].into();
    let ids: Vec<String> = (0..size).map(|i| a.create_session(&format!("bench-{i:05}"))).collect();
    for id in &ids {
        let (status, got) = a.call("POST", &format!("/api/sessions/{id}/start"), None);
        assert_eq!(status, 200, "{got}");
    }
    link_all(&a, &sim, &ids);
    poll(600, "every session ready", || match ready_count(&a) {
        n if n == size => Ok(()),
        n => Err(format!("{n} ready")),
    });

    // Lease traffic: statements per node per second over 20 s.
    let counter = |s: &Server, id: &str| {
        metric(s, &format!("wasup_cluster_lease_statements_total{{node=\"{id}\"}} "))
    };
    let before = counter(&a, "node-a");
    std::thread::sleep(Duration::from_secs(20));
    let per_sec = (counter(&a, "node-a") - before) / 20.0;

    // Overhead of cluster mode on a read, against a single node.
    let probe = &ids[0];
    let cluster_mean = mean_get(&b, probe, 2000);
    let single = Server::start_with(&TestDb::Sqlite, &[("WASUP_ADMIN_KEY", ADMIN_KEY), ("RUST_LOG", "warn")]);
    let one = single.create_session("single-probe");
    let single_mean = mean_get(&single, &one, 2000);
    drop(single);

    // Failover: kill -9 the node owning the most sessions.
    let owned = owners(&a);
    let (victim, lost) = owned
        .iter()
        .max_by_key(|(_, ids)| ids.len())
        .map(|(n, ids)| (n.clone(), ids.len()))
        .unwrap();
    let survivor = servers
        .iter()
        .find(|(n, _)| **n != victim.as_str())
        .map(|(_, s)| *s)
        .unwrap();
    let killed = Instant::now();
    unsafe { libc::kill(servers[victim.as_str()].pid().unwrap() as i32, libc::SIGKILL) };
    poll(600, "every session ready on the survivors", || {
        let owned = owners(survivor);
        let held: usize = owned
            .iter()
            .filter(|(n, _)| **n != victim)
            .map(|(_, ids)| ids.len())
            .sum();
        match (held, ready_count(survivor)) {
            (h, r) if h == size && r == size => Ok(()),
            (h, r) => Err(format!("{h} owned by survivors, {r} ready")),
        }
    });
    let failover = killed.elapsed();
    let line = format!(
        "| {size} | {lost} | {:.1} s | {per_sec:.2} | {:.3} ms | {:.3} ms | {:.2} |\n",
        failover.as_secs_f64(),
        cluster_mean.as_secs_f64() * 1e3,
        single_mean.as_secs_f64() * 1e3,
        cluster_mean.as_secs_f64() / single_mean.as_secs_f64()
    );
    println!("cluster: {line}");
    report.push_str(&line);
}

#[test]
#[ignore = "benchmark: run by scripts/bench in release"]
fn bench_cluster_failover() {
    if std::env::var(wasup::db::testing::POSTGRES_URL_VAR).is_err() {
        eprintln!("bench_cluster: skipped: WASUP_TEST_DATABASE_URL is unset");
        return;
    }
    let sizes: Vec<usize> = std::env::var("WASUP_BENCH_CLUSTER_SIZES")
        .unwrap_or_else(|_| "100,1000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let mut report = String::from(
        "| sessions | on the killed node | kill → all ready | lease statements/s (one node) | GET /api/sessions/:id cluster | single node | ratio |\n|---|---|---|---|---|---|---|\n",
    );
    for size in sizes {
        run(size, &mut report);
    }
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
    std::fs::write(dir.join("bench-cluster.md"), &report).unwrap();
    println!("{report}");
}
