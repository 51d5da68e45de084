//! Benchmark (not a test: `#[ignore]`, run by `scripts/bench` in release):
//! link scale, memory per linked session, restore, shutdown, churn and API
//! latency. The gateway runs as its own process against a `wasup-simulator`
//! process, so the resident set measured is the gateway's alone.
//!
//! `WASUP_BENCH_SIZES` (default `100,1000,10000`) are the cumulative session
//! counts to link; restore, shutdown and churn run at 1,000 (or the largest
//! size below it) and restore again at the largest size. Figures go to
//! `$CARGO_TARGET_TMPDIR/bench-scale.md`, the memory curve to
//! `bench-memory.csv`. Only loss is asserted (every session must come back).

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::*;
use crate::sim_process::SimProcess;
use reqwest::blocking::Client;
use serde_json::{json, Value};

/// Concurrent link pipelines (create → start → QR → scan → ready).
const LINK_WORKERS: usize = 32;
/// Each scenario's bound.
const SCENARIO_LIMIT: Duration = Duration::from_secs(900);

pub(crate) struct Bench {
    pub(crate) server: Server,
    pub(crate) sim: SimProcess,
    pub(crate) http: Client,
    /// (session id, phone) of every linked session, in link order.
    pub(crate) linked: Vec<(String, String)>,
    /// (sessions linked, RSS KiB, phase: `linked` or `restored`) after each settle.
    pub(crate) curve: Vec<(usize, u64, &'static str)>,
    pub(crate) report: String,
}

pub(crate) fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// An error with its causes ("error sending request" alone says little).
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

pub(crate) fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

impl Bench {
    /// A `wasup-simulator` process in `dir` and a gateway on SQLite linked to
    /// it (admin key `ADMIN_KEY`, logs at `warn`), with `env` on top.
    pub(crate) fn start(dir: &std::path::Path, env: &[(&str, &str)]) -> Bench {
        let sim = SimProcess::start(&dir.join("sim"));
        let mut all = vec![
            ("WASUP_ADMIN_KEY", ADMIN_KEY),
            ("WASUP_SIMULATOR_URL", sim.ws.as_str()),
            ("RUST_LOG", "warn"),
        ];
        all.extend_from_slice(env);
        let server = Server::start_with(&TestDb::Sqlite, &all);
        Bench {
            server,
            sim,
            http: Client::builder()
                .timeout(Duration::from_secs(60))
                .pool_max_idle_per_host(LINK_WORKERS)
                // Below the servers' 5 s keep-alive: a pooled connection is
                // never reused just as the server closes it.
                .pool_idle_timeout(Duration::from_secs(3))
                .build()
                .unwrap(),
            linked: Vec::new(),
            curve: Vec::new(),
            report: String::new(),
        }
    }

    pub(crate) fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut rb = self
            .http
            .request(method, self.server.url(path))
            .header("X-API-Key", ADMIN_KEY);
        if let Some(body) = body {
            rb = rb.json(&body);
        }
        match rb.send() {
            Ok(res) => split(res),
            Err(e) => (0, json!({ "error": chain(&e) })),
        }
    }

    pub(crate) fn pid(&self) -> u32 {
        self.server.pid().expect("the gateway runs")
    }

    pub(crate) fn overview(&self) -> Value {
        self.call("GET", "/api/sessions/stats/overview", None).1
    }

    /// Wait until the overview counts `want` ready sessions; the time it took.
    pub(crate) fn wait_ready(&self, want: usize, limit: Duration) -> Result<Duration, String> {
        let started = Instant::now();
        loop {
            let o = self.overview();
            if o["ready"].as_u64() == Some(want as u64) {
                return Ok(started.elapsed());
            }
            if started.elapsed() > limit {
                return Err(format!("after {limit:?}: {o}"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Let the gateway settle (caches, allocator) and read its RSS.
    fn settle(&mut self, phase: &'static str) -> u64 {
        std::thread::sleep(Duration::from_secs(10));
        let kib = rss_kib(self.pid());
        self.curve.push((self.linked.len(), kib, phase));
        kib
    }

    /// Create, start and link sessions until `target` are linked.
    pub(crate) fn link_to(&mut self, target: usize) -> Duration {
        let from = self.linked.len();
        let queue: Arc<Mutex<VecDeque<usize>>> = Arc::new(Mutex::new((from..target).collect()));
        let done = Arc::new(Mutex::new(Vec::new()));
        let failures = Arc::new(AtomicUsize::new(0));
        let started = Instant::now();
        std::thread::scope(|scope| {
            for _ in 0..LINK_WORKERS {
                let (queue, done, failures) = (queue.clone(), done.clone(), failures.clone());
                let this = &*self;
                scope.spawn(move || loop {
                    let Some(i) = queue.lock().unwrap().pop_front() else {
                        return;
                    };
                    match this.link_one(i) {
                        Ok(pair) => done.lock().unwrap().push((i, pair)),
                        Err(e) => {
                            if failures.fetch_add(1, Ordering::Relaxed) < 5 {
                                eprintln!("session {i}: {e}");
                            }
                        }
                    }
                });
            }
        });
        let took = started.elapsed();
        let mut done = std::mem::take(&mut *done.lock().unwrap());
        done.sort_by_key(|(i, _)| *i);
        self.linked.extend(done.into_iter().map(|(_, pair)| pair));
        assert_eq!(
            failures.load(Ordering::Relaxed),
            0,
            "every session links (see above)"
        );
        took
    }

    pub(crate) fn link_one(&self, i: usize) -> Result<(String, String), String> {
        let (status, got) = self.call(
            "POST",
            "/api/sessions",
            Some(json!({ "name": format!("bench-{i:05}") })),
        );
        if status != 201 {
            return Err(format!("create: {status} {got}"));
        }
        let id = got["id"].as_str().unwrap().to_string();
        let (status, got) = self.call("POST", &format!("/api/sessions/{id}/start"), None);
        if status != 200 {
            return Err(format!("start: {status} {got}"));
        }
        let qr = self.poll(&id, Duration::from_secs(120), |s| {
            if s["status"] != "qr_ready" {
                return None;
            }
            let (status, got) =
                self.call("GET", &format!("/api/sessions/{id}/qr?format=raw"), None);
            (status == 200).then(|| got["qr"].as_str().unwrap_or("").to_string())
        })?;
        let phone = format!("6281{i:08}");
        let res = self
            .http
            .post(format!("{}/scan", self.sim.control))
            .json(&json!({ "qr": qr, "phone": phone, "push_name": format!("Bench {i}") }))
            .send()
            .map_err(|e| format!("scan: {}", chain(&e)))?;
        if !res.status().is_success() {
            return Err(format!(
                "scan: {} {}",
                res.status(),
                res.text().unwrap_or_default()
            ));
        }
        self.poll(&id, Duration::from_secs(120), |s| {
            (s["status"] == "ready").then_some(())
        })?;
        Ok((id, phone))
    }

    fn poll<T>(
        &self,
        id: &str,
        limit: Duration,
        f: impl Fn(&Value) -> Option<T>,
    ) -> Result<T, String> {
        let deadline = Instant::now() + limit;
        loop {
            let (status, s) = self.call("GET", &format!("/api/sessions/{id}"), None);
            if status == 200 {
                if let Some(v) = f(&s) {
                    return Ok(v);
                }
                if s["status"] == "failed" {
                    return Err(format!("failed: {s}"));
                }
            }
            if Instant::now() > deadline {
                return Err(format!("timed out; last: {status} {s}"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGTERM with every session live, then start again: shutdown time and
    /// restore time.
    fn restart(&mut self) -> (Duration, Duration) {
        let n = self.linked.len();
        let started = Instant::now();
        assert_eq!(self.server.stop(), Some(0), "clean exit on SIGTERM");
        let shutdown = started.elapsed();
        let started = Instant::now();
        self.server.restart_stopped();
        let restore = self
            .wait_ready(n, SCENARIO_LIMIT)
            .unwrap_or_else(|e| panic!("restore of {n}: {e}"));
        (shutdown, started.elapsed().max(restore))
    }

    /// Drop every linked session's connection from the simulator, spread
    /// over `spread`; the time until all are ready again.
    fn churn(&self, spread: Duration) -> Result<Duration, String> {
        let n = self.linked.len();
        let started = Instant::now();
        let gap = spread / n.max(1) as u32;
        for (i, (_, phone)) in self.linked.iter().enumerate() {
            let devices: Value = self
                .http
                .get(format!("{}/phones/{phone}/devices", self.sim.control))
                .send()
                .and_then(|r| r.json())
                .map_err(|e| format!("devices of {phone}: {e}"))?;
            let device = devices[0]["device"].as_u64().ok_or("no device")?;
            let res = self
                .http
                .post(format!("{}/fault", self.sim.control))
                .json(&json!({ "phone": phone, "device": device, "kind": "drop" }))
                .send()
                .map_err(|e| format!("fault: {e}"))?;
            if !res.status().is_success() {
                return Err(format!("fault: {}", res.text().unwrap_or_default()));
            }
            let due = gap * (i as u32 + 1);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                std::thread::sleep(wait);
            }
        }
        // Every session must have noticed the drop before "all ready" means
        // anything: wait for the ready count to dip, or 2 s.
        let dip = Instant::now();
        while dip.elapsed() < Duration::from_secs(2)
            && self.overview()["ready"].as_u64() == Some(n as u64)
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        self.wait_ready(n, SCENARIO_LIMIT)?;
        let stuck = self.overview();
        if stuck["ready"].as_u64() != Some(n as u64) {
            return Err(format!("not all ready: {stuck}"));
        }
        Ok(started.elapsed())
    }

    /// `wrk` on one core against the gateway pinned to the other.
    fn api(&self, label: &str, path: &str) -> Option<WrkResult> {
        // wrk abandons its last in-flight requests; at 10,000 sessions the
        // list's take ~0.2 s of the pinned core to finish, and the next
        // route's first requests would wait behind them.
        std::thread::sleep(Duration::from_secs(3));
        let pid = self.pid();
        let pin = |cpus: &str| {
            Command::new("taskset")
                .args(["-a", "-p", "-c", cpus, &pid.to_string()])
                .stdout(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false)
        };
        if !pin("1") {
            eprintln!("taskset failed; API figures not pinned");
        }
        let out = Command::new("taskset")
            .args(["-c", "0", "wrk", "-t1", "-c16", "-d10s", "--latency"])
            .args(["-H", &format!("X-API-Key: {ADMIN_KEY}")])
            .arg(self.server.url(path))
            .output();
        pin("0,1");
        let out = match out {
            Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).to_string(),
            Ok(o) => {
                eprintln!("wrk {label}: {}", String::from_utf8_lossy(&o.stderr));
                return None;
            }
            Err(e) => {
                eprintln!("wrk not available ({e}); skipping {label}");
                return None;
            }
        };
        WrkResult::parse(&out)
    }
}

#[derive(Debug, Clone, Copy)]
struct WrkResult {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: u64,
}

impl WrkResult {
    fn parse(out: &str) -> Option<WrkResult> {
        let ms = |v: &str| -> Option<f64> {
            let v = v.trim();
            if let Some(x) = v.strip_suffix("us") {
                x.parse::<f64>().ok().map(|x| x / 1000.0)
            } else if let Some(x) = v.strip_suffix("ms") {
                x.parse().ok()
            } else if let Some(x) = v.strip_suffix('s') {
                x.parse::<f64>().ok().map(|x| x * 1000.0)
            } else {
                None
            }
        };
        let pct = |p: &str| {
            out.lines()
                .find(|l| l.trim_start().starts_with(p))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(ms)
        };
        let rps = out
            .lines()
            .find_map(|l| l.strip_prefix("Requests/sec:"))?
            .trim()
            .parse()
            .ok()?;
        // "Non-2xx or 3xx responses: N" and socket errors count as errors.
        let errors = out
            .lines()
            .filter_map(|l| {
                l.trim()
                    .strip_prefix("Non-2xx or 3xx responses:")
                    .and_then(|n| n.trim().parse::<u64>().ok())
            })
            .sum();
        Some(WrkResult {
            rps,
            p50_ms: pct("50%")?,
            p99_ms: pct("99%")?,
            errors,
        })
    }
}

pub(crate) fn verdict(ok: bool) -> &'static str {
    if ok {
        "**pass**"
    } else {
        "**fail**"
    }
}

/// `WASUP_BENCH_HOLD_SECS=N`: keep the gateway up with the largest number of
/// sessions for N seconds, to profile it or load it by hand.
fn hold(b: &Bench) {
    let Some(secs) = std::env::var("WASUP_BENCH_HOLD_SECS")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
    else {
        return;
    };
    eprintln!(
        "holding for {secs} s: {} (pid {}, X-API-Key: {ADMIN_KEY})",
        b.server.url("/api"),
        b.pid()
    );
    std::thread::sleep(Duration::from_secs(secs));
}

fn sizes() -> Vec<usize> {
    std::env::var("WASUP_BENCH_SIZES")
        .unwrap_or_else(|_| "100,1000,10000".to_string())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect()
}

#[test]
#[ignore = "benchmark: run by scripts/bench in release"]
fn bench_link_restore_churn_api() {
    let sizes = sizes();
    let dir = tempfile::tempdir().unwrap();
    let mut b = Bench::start(dir.path(), &[]);
    let baseline = b.settle("linked");
    let mut link_rows = String::new();
    let mut api_rows = String::new();
    let mut lifecycle_rows = String::new();
    let mut last_point: Option<(usize, u64)> = None;
    let mut under_1gib = None;
    let mut overview_p50 = Vec::new();
    let lifecycle_at = sizes.iter().copied().filter(|&n| n <= 1000).max();
    let largest = sizes.iter().copied().max().unwrap_or(0);

    for &n in &sizes {
        let before = b.linked.len();
        // Link in steps of at most 1,000 so the memory curve has points.
        let mut link_time = Duration::ZERO;
        while b.linked.len() < n {
            let step = (b.linked.len() + 1000).min(n);
            link_time += b.link_to(step);
            if step < n {
                b.settle("linked");
            }
        }
        let kib = b.settle("linked");
        // Average over every session (fixed costs included) and the
        // marginal cost of the sessions added since the previous size,
        // which is what each further session costs; the goal is judged on
        // the marginal figure.
        let per = (kib.saturating_sub(baseline)) as f64 / n as f64;
        let (prev_n, prev_kib) = last_point.unwrap_or((0, baseline));
        let marginal = kib.saturating_sub(prev_kib) as f64 / (n - prev_n).max(1) as f64;
        last_point = Some((n, kib));
        let rate = (n - before) as f64 / link_time.as_secs_f64().max(0.001);
        let mem = b.overview()["memoryUsage"].clone();
        writeln!(
            link_rows,
            "| {n} | {} linked in {:.1} s ({rate:.0}/s) | {} | {} | {per:.0} KiB | **{marginal:.0} KiB** | {} |",
            n - before,
            link_time.as_secs_f64(),
            mib(kib),
            mem,
            verdict(marginal <= 100.0),
        )
        .unwrap();
        if n >= 10_000 {
            under_1gib = Some((n, kib));
        }

        if n == 100 || n == largest {
            for (label, path) in [
                (
                    "GET /api/sessions/:id",
                    format!("/api/sessions/{}", b.linked[0].0),
                ),
                ("GET /api/sessions", "/api/sessions".to_string()),
                (
                    "GET /api/sessions/stats/overview",
                    "/api/sessions/stats/overview".to_string(),
                ),
            ] {
                if let Some(r) = b.api(label, &path) {
                    if label.ends_with("overview") {
                        overview_p50.push((n, r.p50_ms));
                    }
                    let goal = if label == "GET /api/sessions/:id" {
                        format!(
                            "≥ 20,000 req/s and p99 ≤ 5 ms: {}",
                            verdict(r.rps >= 20_000.0 && r.p99_ms <= 5.0)
                        )
                    } else {
                        "-".to_string()
                    };
                    writeln!(
                        api_rows,
                        "| {n} | `{label}` | {:.0} | {:.2} ms | {:.2} ms | {} | {goal} |",
                        r.rps, r.p50_ms, r.p99_ms, r.errors
                    )
                    .unwrap();
                }
            }
        }

        if n == largest {
            hold(&b);
        }

        if Some(n) == lifecycle_at || (n == largest && Some(n) != lifecycle_at) {
            let (shutdown, restore) = b.restart();
            writeln!(
                lifecycle_rows,
                "| {n} | SIGTERM with every session live → exit 0 | {:.1} s | {} |",
                shutdown.as_secs_f64(),
                if n >= 1000 {
                    format!("≤ 15 s: {}", verdict(shutdown <= Duration::from_secs(15)))
                } else {
                    "-".into()
                }
            )
            .unwrap();
            writeln!(
                lifecycle_rows,
                "| {n} | restore: start until all `ready` | {:.1} s | {} |",
                restore.as_secs_f64(),
                if n == 1000 {
                    format!("≤ 30 s: {}", verdict(restore <= Duration::from_secs(30)))
                } else {
                    "-".into()
                }
            )
            .unwrap();
            let kib = b.settle("restored");
            writeln!(
                lifecycle_rows,
                "| {n} | RSS after restore | {} | - |",
                mib(kib)
            )
            .unwrap();
            if Some(n) == lifecycle_at {
                let churn = b.churn(Duration::from_secs(30));
                let (took, ok) = match &churn {
                    Ok(t) => (format!("{:.1} s", t.as_secs_f64()), true),
                    Err(e) => (format!("not all ready: {e}"), false),
                };
                writeln!(
                    lifecycle_rows,
                    "| {n} | churn: every session dropped by the simulator over 30 s, until all `ready` | {took} | none stuck: {} |",
                    verdict(ok)
                )
                .unwrap();
            }
        }
    }

    let r = &mut b.report;
    writeln!(
        r,
        "### Link scale and memory (goal ≤ 100 KiB per linked idle session)\n"
    )
    .unwrap();
    writeln!(
        r,
        "Gateway RSS with no session: {}, read like every figure here 10 s after the last link. \
         Average = (RSS − that) ÷ sessions; marginal = RSS growth ÷ sessions added since the \
         row above (what one more session costs, without the fixed costs that dominate at \
         small N). The goal is judged on the marginal figure.\n",
        mib(baseline)
    )
    .unwrap();
    writeln!(
        r,
        "| sessions | linking | RSS | overview `memoryUsage` (MiB) | average per session | marginal per session | goal |"
    )
    .unwrap();
    writeln!(r, "|---|---|---|---|---|---|---|").unwrap();
    r.push_str(&link_rows);
    if let Some((n, kib)) = under_1gib {
        writeln!(
            r,
            "\n{n} linked sessions in {} RSS: under 1 GiB {}",
            mib(kib),
            verdict(kib < 1024 * 1024)
        )
        .unwrap();
    }
    writeln!(r, "\n### Shutdown, restore and churn\n").unwrap();
    writeln!(r, "| sessions | scenario | time | goal |").unwrap();
    writeln!(r, "|---|---|---|---|").unwrap();
    r.push_str(&lifecycle_rows);
    writeln!(r, "\n### API (wrk: 1 thread, 16 connections, 10 s; wrk on core 0, the gateway pinned to core 1)\n").unwrap();
    writeln!(
        r,
        "| sessions | route | req/s | p50 | p99 | non-2xx | goal |"
    )
    .unwrap();
    writeln!(r, "|---|---|---|---|---|---|---|").unwrap();
    r.push_str(&api_rows);
    if let (Some(small), Some(big)) = (overview_p50.first(), overview_p50.last()) {
        if small.0 != big.0 {
            // "Independent of N": within 25 % or 0.1 ms of each other.
            let same = (big.1 - small.1).abs() <= (small.1 * 0.25).max(0.1);
            writeln!(
                r,
                "\nstats/overview p50: {:.2} ms at {} sessions, {:.2} ms at {}: independent of N {}",
                small.1, small.0, big.1, big.0, verdict(same)
            )
            .unwrap();
        }
    }
    println!("{}", b.report);
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    std::fs::write(tmp.join("bench-scale.md"), &b.report).unwrap();
    let mut csv = String::from("sessions,rss_kib,phase\n");
    for (n, kib, phase) in &b.curve {
        writeln!(csv, "{n},{kib},{phase}").unwrap();
    }
    std::fs::write(tmp.join("bench-memory.csv"), csv).unwrap();
    println!("written to {}", tmp.join("bench-scale.md").display());
}
