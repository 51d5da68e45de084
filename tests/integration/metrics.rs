//! `GET /metrics` over real HTTP on every backend: the scrape is valid
//! Prometheus text, the figures move with real sessions, requests and
//! webhook deliveries, labels never carry a session's id or name, the
//! outbox depth is right after a restart, and the optional bearer token.

use std::collections::{BTreeMap, HashMap};

use crate::common::*;
use crate::receiver::Receiver;
use serde_json::json;

const TOKEN: &str = "scrape-token-0123456789abcdef";

// ------------------------------------------------------------------ parser

#[derive(Clone, Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

#[derive(Debug, Default)]
struct Scrape {
    types: HashMap<String, String>,
    samples: Vec<Sample>,
}

fn is_name(s: &str, colon: bool) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || (colon && c == ':'))
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || (colon && c == ':'))
}

fn parse_value(v: &str) -> Option<f64> {
    match v {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        v => v.parse().ok(),
    }
}

/// `{a="x",b="y\"z"}` → labels, and the rest of the line after `}`.
fn parse_labels(s: &str, line: &str) -> (BTreeMap<String, String>, String) {
    let mut labels = BTreeMap::new();
    let mut rest = s;
    loop {
        rest = rest.trim_start();
        if let Some(r) = rest.strip_prefix('}') {
            return (labels, r.to_string());
        }
        let (name, r) = rest
            .split_once('=')
            .unwrap_or_else(|| panic!("label without '=': {line}"));
        assert!(is_name(name.trim(), false), "bad label name in: {line}");
        let mut chars = r
            .strip_prefix('"')
            .unwrap_or_else(|| panic!("unquoted label value: {line}"))
            .chars();
        let mut value = String::new();
        loop {
            match chars.next() {
                Some('\\') => match chars.next() {
                    Some('\\') => value.push('\\'),
                    Some('"') => value.push('"'),
                    Some('n') => value.push('\n'),
                    other => panic!("bad escape {other:?} in: {line}"),
                },
                Some('"') => break,
                Some(c) => value.push(c),
                None => panic!("unterminated label value: {line}"),
            }
        }
        assert!(
            labels.insert(name.trim().to_string(), value).is_none(),
            "label given twice: {line}"
        );
        rest = chars.as_str();
        rest = rest.strip_prefix(',').unwrap_or(rest);
    }
}

/// The family a sample belongs to, given the declared types.
fn family_of<'a>(name: &'a str, types: &HashMap<String, String>) -> &'a str {
    if types.contains_key(name) {
        return name;
    }
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix) {
            if types.get(base).is_some_and(|t| t == "histogram") {
                return base;
            }
        }
    }
    panic!("sample {name} has no # TYPE line before it")
}

/// Parse the text exposition format strictly enough to catch what a
/// Prometheus server would reject: names, label syntax and escapes, values,
/// one TYPE per family before its samples, families not interleaved, no
/// series twice, histograms cumulative and ending in `+Inf` == `_count`.
fn parse(text: &str) -> Scrape {
    assert!(text.ends_with('\n'), "the last line ends with a newline");
    let mut scrape = Scrape::default();
    let mut seen_series = std::collections::HashSet::new();
    let mut finished_families = std::collections::HashSet::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            let mut parts = comment.trim_start().splitn(3, ' ');
            match (parts.next(), parts.next(), parts.next()) {
                (Some("TYPE"), Some(name), Some(kind)) => {
                    assert!(is_name(name, true), "bad name: {line}");
                    assert!(
                        ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                        "bad type: {line}"
                    );
                    assert!(
                        scrape
                            .types
                            .insert(name.to_string(), kind.to_string())
                            .is_none(),
                        "TYPE given twice: {line}"
                    );
                }
                (Some("HELP"), Some(name), _) => assert!(is_name(name, true), "{line}"),
                _ => {}
            }
            continue;
        }
        let split = line.find(['{', ' ']).expect("a sample has a value");
        let name = &line[..split];
        assert!(is_name(name, true), "bad metric name: {line}");
        let (labels, rest) = if line[split..].starts_with('{') {
            parse_labels(&line[split + 1..], line)
        } else {
            (BTreeMap::new(), line[split..].to_string())
        };
        let mut fields = rest.split_whitespace();
        let value = fields
            .next()
            .and_then(parse_value)
            .unwrap_or_else(|| panic!("bad value: {line}"));
        if let Some(ts) = fields.next() {
            ts.parse::<i64>()
                .unwrap_or_else(|_| panic!("bad timestamp: {line}"));
        }
        assert!(fields.next().is_none(), "trailing garbage: {line}");
        let family = family_of(name, &scrape.types).to_string();
        if current.as_deref() != Some(family.as_str()) {
            if let Some(prev) = current.replace(family.clone()) {
                finished_families.insert(prev);
            }
            assert!(
                !finished_families.contains(&family),
                "family {family} is interleaved with another"
            );
        }
        assert!(
            seen_series.insert(format!("{name}{labels:?}")),
            "series twice: {line}"
        );
        scrape.samples.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    check_histograms(&scrape);
    scrape
}

fn check_histograms(scrape: &Scrape) {
    for (family, kind) in &scrape.types {
        if kind != "histogram" {
            continue;
        }
        let bucket = format!("{family}_bucket");
        let mut series: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
        for s in scrape.samples.iter().filter(|s| s.name == bucket) {
            let mut labels = s.labels.clone();
            let le = labels.remove("le").expect("a bucket has an le label");
            let le = parse_value(&le).expect("le is a number");
            series
                .entry(format!("{labels:?}"))
                .or_default()
                .push((le, s.value));
        }
        for (labels, buckets) in series {
            for pair in buckets.windows(2) {
                assert!(pair[0].0 < pair[1].0, "{family}{labels}: le not increasing");
                assert!(pair[0].1 <= pair[1].1, "{family}{labels}: not cumulative");
            }
            let last = buckets.last().unwrap();
            assert!(last.0.is_infinite(), "{family}{labels}: no +Inf bucket");
            let count = scrape
                .samples
                .iter()
                .find(|s| {
                    s.name == format!("{family}_count") && format!("{:?}", s.labels) == labels
                })
                .unwrap_or_else(|| panic!("{family}{labels}: no _count"));
            assert_eq!(count.value, last.1, "{family}{labels}: +Inf != _count");
            assert!(
                scrape
                    .samples
                    .iter()
                    .any(|s| s.name == format!("{family}_sum")
                        && format!("{:?}", s.labels) == labels),
                "{family}{labels}: no _sum"
            );
        }
    }
}

impl Scrape {
    /// The sample with exactly these labels.
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let want: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.samples
            .iter()
            .find(|s| s.name == name && s.labels == want)
            .map(|s| s.value)
    }

    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels)
            .unwrap_or_else(|| panic!("no sample {name}{labels:?}"))
    }

    /// The sum over every sample of `name` carrying these labels (and any others).
    fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples
            .iter()
            .filter(|s| {
                s.name == name
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|s| s.value)
            .sum()
    }

    fn kind(&self, family: &str) -> &str {
        self.types
            .get(family)
            .unwrap_or_else(|| panic!("no family {family}"))
    }
}

// ------------------------------------------------------------------ helpers

fn scrape_with(s: &Server, bearer: Option<&str>) -> reqwest::blocking::Response {
    let mut rb = s.req("GET", "/metrics", None);
    if let Some(token) = bearer {
        rb = rb.header("Authorization", format!("Bearer {token}"));
    }
    rb.send().expect("scrape")
}

fn scrape(s: &Server) -> Scrape {
    let res = scrape_with(s, None);
    assert_eq!(res.status().as_u16(), 200);
    let ct = res.headers()["content-type"].to_str().unwrap().to_string();
    assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
    parse(&res.text().unwrap())
}

/// Scrape until `done` holds (or panic after `secs`).
fn scrape_until(s: &Server, secs: u64, what: &str, done: impl Fn(&Scrape) -> bool) -> Scrape {
    poll(secs, what, || {
        let got = scrape(s);
        match done(&got) {
            true => Ok(got),
            false => Err(format!("{got:#?}")),
        }
    })
}

/// Settings for starts that fail to connect: the production build finds
/// WhatsApp unreachable here; a simulator build is pointed at a simulator
/// process that is not there (the production build ignores the setting).
fn failing_env(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
    let mut env = vec![
        ("WASUP_ADMIN_KEY", ADMIN_KEY),
        ("WASUP_CONNECT_TIMEOUT", "2"),
        ("WASUP_SIMULATOR_URL", "ws://127.0.0.1:9/ws/chat"),
        ("WASUP_WEBHOOK_ALLOW_PRIVATE", "true"),
    ];
    env.extend_from_slice(extra);
    env
}

/// A session whose engine fails fast: one automatic restart, then `failed`.
fn flaky_session(s: &Server, name: &str) -> String {
    let (status, body) = s.call(
        "POST",
        "/api/sessions",
        Some(json!({"name": name, "config": {"maxReconnectAttempts": 1, "reconnectBaseDelay": 1000}})),
    );
    assert_eq!(status, 201, "{body}");
    body["id"].as_str().unwrap().to_string()
}

fn create_hook(s: &Server, session: &str, url: &str, max_attempts: u32) {
    let (status, got) = s.call(
        "POST",
        &format!("/api/sessions/{session}/webhooks"),
        Some(json!({"url": url, "events": ["*"], "maxAttempts": max_attempts})),
    );
    assert_eq!(status, 201, "{got}");
}

fn start_and_fail(s: &Server, session: &str) {
    let (status, body) = s.call("POST", &format!("/api/sessions/{session}/start"), None);
    assert_eq!(status, 200, "{body}");
    s.wait_session(session, 60, |b| b["status"] == "failed");
}

/// No label value of the scrape mentions any of `secrets`.
fn assert_no_label_contains(scrape: &Scrape, secrets: &[&str]) {
    for s in &scrape.samples {
        for (k, v) in &s.labels {
            for secret in secrets {
                assert!(
                    !v.contains(secret),
                    "{}{{{k}=\"{v}\"}} carries '{secret}'",
                    s.name
                );
            }
        }
    }
}

// ------------------------------------------------------------------ tests

#[test]
fn the_scrape_is_prometheus_text_and_moves_with_sessions_requests_and_webhooks() {
    for db in backends() {
        let s = Server::start_with(&db, &failing_env(&[]));
        let first = scrape(&s);
        for (family, kind) in [
            ("wasup_build_info", "gauge"),
            ("process_start_time_seconds", "gauge"),
            ("wasup_uptime_seconds", "gauge"),
            ("process_resident_memory_bytes", "gauge"),
            ("wasup_heap_allocated_bytes", "gauge"),
            ("wasup_sessions", "gauge"),
            ("wasup_engines_running", "gauge"),
            ("wasup_engine_starts_total", "counter"),
            ("wasup_engine_exits_total", "counter"),
            ("wasup_reconnect_attempts_total", "counter"),
            ("wasup_qr_codes_total", "counter"),
            ("wasup_webhook_deliveries_total", "counter"),
            ("wasup_webhook_delivery_duration_seconds", "histogram"),
            ("wasup_webhook_outbox_depth", "gauge"),
            ("wasup_webhook_dead_letters", "gauge"),
            ("wasup_webhook_outbox_corrupt_total", "counter"),
            ("wasup_http_requests_total", "counter"),
            ("wasup_http_request_duration_seconds", "histogram"),
        ] {
            assert_eq!(first.kind(family), kind, "{family}");
        }
        for status in [
            "created",
            "initializing",
            "qr_ready",
            "authenticating",
            "ready",
            "disconnected",
            "failed",
        ] {
            assert_eq!(first.value("wasup_sessions", &[("status", status)]), 0.0);
        }
        assert!(first.value("process_resident_memory_bytes", &[]) > 1e6);
        assert!(first.value("process_start_time_seconds", &[]) > 1.7e9);
        assert_eq!(first.value("wasup_webhook_outbox_depth", &[]), 0.0);
        let delivered = &[("outcome", "delivered")];
        assert_eq!(
            first.value("wasup_webhook_deliveries_total", delivered),
            0.0
        );

        // A session, read by id and by name; a webhook to a loopback receiver.
        let name = "metrics-bot-7f3a";
        let id = flaky_session(&s, name);
        let receiver = Receiver::ok();
        create_hook(&s, &id, &receiver.url(), 10);
        let created = scrape(&s);
        assert_eq!(
            created.value("wasup_sessions", &[("status", "created")]),
            1.0
        );
        assert_eq!(s.call("GET", &format!("/api/sessions/{id}"), None).0, 200);
        assert_eq!(s.call("GET", &format!("/api/sessions/{name}"), None).0, 200);
        assert_eq!(s.call("GET", "/api/sessions/no-such-one", None).0, 404);
        assert_eq!(s.call("GET", "/no/such/route", None).0, 404);

        // start → initializing → disconnected → initializing → failed: each
        // status change is an event, delivered to the receiver.
        start_and_fail(&s, &id);
        let got = scrape_until(&s, 60, "every event delivered", |m| {
            m.value("wasup_webhook_outbox_depth", &[]) == 0.0
                && m.value("wasup_webhook_deliveries_total", delivered) >= 4.0
        });
        assert!(receiver.count() >= 4, "{}", receiver.count());
        assert_eq!(got.value("wasup_sessions", &[("status", "failed")]), 1.0);
        assert_eq!(got.value("wasup_sessions", &[("status", "created")]), 0.0);
        assert_eq!(got.value("wasup_engines_running", &[]), 0.0);
        assert_eq!(
            got.value("wasup_engine_starts_total", &[("cause", "start")]),
            1.0
        );
        assert_eq!(
            got.value("wasup_engine_starts_total", &[("cause", "reconnect")]),
            1.0
        );
        assert_eq!(got.sum("wasup_engine_exits_total", &[]), 2.0);
        assert_eq!(got.sum("wasup_reconnect_attempts_total", &[]), 1.0);
        assert_eq!(
            got.value("wasup_webhook_deliveries_total", &[("outcome", "dead")]),
            0.0
        );
        assert_eq!(
            got.value("wasup_webhook_delivery_duration_seconds_count", &[]),
            got.sum("wasup_webhook_deliveries_total", &[])
        );
        assert!(got.value("wasup_webhook_delivery_duration_seconds_count", &[]) >= 4.0);

        // HTTP: the route template, never the id or the name.
        let by_template = [
            ("method", "GET"),
            ("route", "/api/sessions/{id}"),
            ("status", "200"),
        ];
        assert!(got.value("wasup_http_requests_total", &by_template) >= 2.0);
        assert!(
            got.value(
                "wasup_http_requests_total",
                &[
                    ("method", "GET"),
                    ("route", "/api/sessions/{id}"),
                    ("status", "404")
                ]
            ) >= 1.0
        );
        assert!(
            got.value(
                "wasup_http_request_duration_seconds_count",
                &[("method", "GET"), ("route", "/api/sessions/{id}")]
            ) >= 3.0
        );
        assert_eq!(
            got.value(
                "wasup_http_requests_total",
                &[("method", "GET"), ("route", "unmatched"), ("status", "404")]
            ),
            1.0
        );
        assert!(
            got.value(
                "wasup_http_requests_total",
                &[("method", "GET"), ("route", "/metrics"), ("status", "200")]
            ) >= 2.0
        );
        assert_no_label_contains(&got, &[&id, name, "no-such-one", "/no/such"]);

        // Only GET.
        let (status, body) = split(s.req("POST", "/metrics", None).send().unwrap());
        assert_error(status, &body, 405, "method_not_allowed");
        let (status, body) = split(s.req("DELETE", "/metrics", None).send().unwrap());
        assert_error(status, &body, 405, "method_not_allowed");
        let after = scrape(&s);
        assert_eq!(
            after.value(
                "wasup_http_requests_total",
                &[("method", "POST"), ("route", "/metrics"), ("status", "405")]
            ),
            1.0
        );
    }
}

#[test]
fn the_outbox_depth_is_read_from_the_database_and_right_after_a_restart() {
    for db in backends() {
        let mut s = Server::start_with(&db, &failing_env(&[]));
        let id = flaky_session(&s, "outbox-bot");
        // Nothing listens on the discard port: every attempt fails.
        create_hook(&s, &id, "http://127.0.0.1:9/hook", 20);
        start_and_fail(&s, &id);
        let before = scrape_until(&s, 30, "a failed delivery", |m| {
            m.value("wasup_webhook_deliveries_total", &[("outcome", "failed")]) >= 1.0
        });
        let depth = before.value("wasup_webhook_outbox_depth", &[]);
        assert!(depth >= 4.0, "every event is still pending: {depth}");
        assert_eq!(before.value("wasup_webhook_dead_letters", &[]), 0.0);

        s.restart();
        let after = scrape(&s);
        assert_eq!(after.value("wasup_webhook_outbox_depth", &[]), depth);
        assert_eq!(after.value("wasup_sessions", &[("status", "failed")]), 1.0);
        // Counters are the process's own: they start over.
        assert_eq!(
            after.value("wasup_engine_starts_total", &[("cause", "start")]),
            0.0
        );
    }
}

#[test]
fn a_configured_token_is_required_as_a_bearer() {
    for db in backends() {
        let s = Server::start_with(&db, &failing_env(&[("WASUP_METRICS_TOKEN", TOKEN)]));
        let res = scrape_with(&s, None);
        assert_eq!(
            res.headers()["www-authenticate"].to_str().unwrap(),
            "Bearer realm=\"wasup metrics\""
        );
        let (status, body) = split(res);
        assert_error(status, &body, 401, "missing_metrics_token");
        let (status, body) = split(scrape_with(&s, Some("scrape-token-0123456789abcdeX")));
        assert_error(status, &body, 401, "invalid_metrics_token");
        // An API key, even the admin's, is not the metrics token.
        let (status, body) = split(s.req("GET", "/metrics", Some(ADMIN_KEY)).send().unwrap());
        assert_error(status, &body, 401, "missing_metrics_token");
        let (status, body) = split(scrape_with(&s, Some(ADMIN_KEY)));
        assert_error(status, &body, 401, "invalid_metrics_token");

        let res = scrape_with(&s, Some(TOKEN));
        assert_eq!(res.status().as_u16(), 200);
        let got = parse(&res.text().unwrap());
        assert_eq!(got.value("wasup_sessions", &[("status", "ready")]), 0.0);
        let res = s
            .req("GET", "/metrics", None)
            .header("Authorization", format!("bearer {TOKEN}"))
            .send()
            .unwrap();
        assert_eq!(res.status().as_u16(), 200, "the scheme is case-insensitive");
        assert!(!s.log().contains(TOKEN), "the token appeared in the log");
    }
}

#[test]
fn a_short_token_stops_the_start_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wasup"))
        .env_clear()
        .env("WASUP_DATA_DIR", dir.path())
        .env("WASUP_METRICS_TOKEN", "short")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("WASUP_METRICS_TOKEN"), "{err}");
    assert!(!err.contains("short"), "the value is not echoed: {err}");
}

/// Linking through the embedded simulator: a QR is issued, the engine
/// starts, the session is `ready`; a gateway restart restores it.
#[cfg(feature = "simulator")]
#[test]
fn linking_a_session_moves_ready_qr_and_engine_starts() {
    for db in backends() {
        let mut s = Server::start(&db);
        let name = "linked-metrics-bot";
        let id = s.create_session(name);
        let (status, got) = s.call("POST", &format!("/api/sessions/{id}/start"), None);
        assert_eq!(status, 200, "{got}");
        s.wait_session(&id, 30, |b| b["status"] == "qr_ready");
        let waiting = scrape(&s);
        assert_eq!(
            waiting.value("wasup_sessions", &[("status", "qr_ready")]),
            1.0
        );
        assert!(waiting.value("wasup_qr_codes_total", &[]) >= 1.0);
        let (status, got) = s.call(
            "POST",
            &format!("/api/simulator/sessions/{id}/scan"),
            Some(json!({"phone": "628123450001", "pushName": "Sim Phone"})),
        );
        assert_eq!(status, 200, "{got}");
        s.wait_session(&id, 30, |b| b["status"] == "ready");
        let linked = scrape(&s);
        assert_eq!(linked.value("wasup_sessions", &[("status", "ready")]), 1.0);
        assert_eq!(linked.value("wasup_engines_running", &[]), 1.0);
        assert!(linked.value("wasup_qr_codes_total", &[]) >= 1.0);
        assert!(linked.value("wasup_engine_starts_total", &[("cause", "start")]) >= 1.0);
        assert_no_label_contains(&linked, &[&id, name, "628123450001"]);

        s.restart();
        s.wait_session(&id, 30, |b| b["status"] == "ready");
        let restored = scrape_until(&s, 10, "the restore", |m| {
            m.value("wasup_sessions", &[("status", "ready")]) == 1.0
        });
        assert_eq!(
            restored.value("wasup_engine_starts_total", &[("cause", "restore")]),
            1.0
        );
        assert_eq!(restored.value("wasup_qr_codes_total", &[]), 0.0);
    }
}

#[test]
fn the_parser_rejects_what_prometheus_would() {
    let ok = "# HELP a x\n# TYPE a counter\na{l=\"v\\\"\"} 1\n";
    assert_eq!(parse(ok).value("a", &[("l", "v\"")]), 1.0);
    for bad in [
        "a 1\n",                        // no TYPE
        "# TYPE a counter\na{l=v} 1\n", // unquoted
        "# TYPE a counter\na one\n",    // not a number
        "# TYPE a counter\na 1\na 2\n", // series twice
        "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n",
        "# TYPE a counter\n# TYPE b counter\na 1\nb 1\na{x=\"1\"} 1\n", // interleaved
    ] {
        let res = std::panic::catch_unwind(|| parse(bad));
        assert!(res.is_err(), "accepted: {bad:?}");
    }
}
