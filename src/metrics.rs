//! `GET /metrics`: the whole process in the Prometheus text format.
//!
//! One scrape renders, in this order: build info; process start time,
//! uptime and memory; sessions per status (from the registry, at scrape
//! time); the actors' counters (`wasup_actors::metrics`); the webhook
//! outbox depth (asked of the WebhookActor, which counts over an index at
//! scrape time, so it is right after a restart); HTTP requests per method,
//! route template and status.
//!
//! Every label value comes from a closed set: session statuses, start and
//! exit causes, delivery outcomes, HTTP methods (others become `other`) and
//! the route table's templates (`/api/sessions/{id}`; a path that matches no
//! route is `unmatched`). No session id or name is ever a label value.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use actix::Addr;
use actix_web::http::{header, Method, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use parking_lot::Mutex;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use wasup_actors::metrics::{Histogram, TextEncoder, CONTENT_TYPE, HTTP_BUCKETS, METRICS};
use wasup_actors::registry::SessionRegistry;
use wasup_actors::webhook::{OutboxCounts, OutboxDepth, WebhookActor};

use crate::api::error::ApiError;

/// How long a scrape waits for the outbox counts before leaving them out.
const OUTBOX_TIMEOUT: Duration = Duration::from_secs(2);

/// What `/metrics` reads, and the HTTP request figures `request_log` feeds.
/// Registered once as app data.
pub struct Metrics {
    /// SHA-256 of `WASUP_METRICS_TOKEN` (compared in constant time).
    token: Option<[u8; 32]>,
    registry: Arc<SessionRegistry>,
    webhooks: Addr<WebhookActor>,
    http: HttpMetrics,
    started_at: SystemTime,
    started: Instant,
    /// Cluster mode: this node's gauges and lease counters.
    cluster: Option<crate::cluster::ClusterNode>,
}

impl Metrics {
    /// Cluster mode: add this node's gauges (`wasup_cluster_*`).
    pub fn with_cluster(mut self, node: Option<crate::cluster::ClusterNode>) -> Self {
        self.cluster = node;
        self
    }

    pub fn new(
        token: Option<&str>,
        registry: Arc<SessionRegistry>,
        webhooks: Addr<WebhookActor>,
        started_at: SystemTime,
        started: Instant,
    ) -> Self {
        Metrics {
            token: token.map(|t| Sha256::digest(t.as_bytes()).into()),
            registry,
            webhooks,
            http: HttpMetrics::default(),
            started_at,
            started,
            cluster: None,
        }
    }

    /// Without a configured token anybody may scrape; with one, only a
    /// request bearing it.
    fn authorize(&self, req: &HttpRequest) -> Result<(), ApiError> {
        let Some(want) = &self.token else {
            return Ok(());
        };
        let presented = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                let (scheme, token) = v.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            });
        let Some(presented) = presented else {
            return Err(ApiError::metrics_token(false));
        };
        let got: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        if bool::from(got.ct_eq(want)) {
            Ok(())
        } else {
            Err(ApiError::metrics_token(true))
        }
    }

    async fn render(&self) -> String {
        let mut enc = TextEncoder::new();
        enc.family(
            "wasup_build_info",
            "gauge",
            "Always 1; the version of this wasup binary.",
        );
        enc.sample(
            "wasup_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))],
            1,
        );

        let since_epoch = self
            .started_at
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        enc.family(
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since the Unix epoch, in seconds.",
        );
        enc.sample_f64(
            "process_start_time_seconds",
            &[],
            since_epoch.as_millis() as f64 / 1e3,
        );
        enc.family(
            "wasup_uptime_seconds",
            "gauge",
            "Seconds since the process started.",
        );
        enc.sample_f64(
            "wasup_uptime_seconds",
            &[],
            self.started.elapsed().as_millis() as f64 / 1e3,
        );
        let memory = crate::memory::usage();
        enc.family(
            "process_resident_memory_bytes",
            "gauge",
            "Resident set size of the process, in bytes.",
        );
        enc.sample("process_resident_memory_bytes", &[], memory.rss);
        enc.family(
            "wasup_heap_allocated_bytes",
            "gauge",
            "Bytes the allocator (jemalloc) has handed out to the program.",
        );
        enc.sample("wasup_heap_allocated_bytes", &[], memory.heap_used);

        let (by_status, running) = self.registry.status_counts();
        enc.family(
            "wasup_sessions",
            "gauge",
            "Sessions by status (every status is listed, zeros included).",
        );
        for (status, n) in by_status {
            enc.sample("wasup_sessions", &[("status", status.as_str())], n);
        }
        enc.family(
            "wasup_engines_running",
            "gauge",
            "Sessions with an engine running (starting, waiting for a link or connected).",
        );
        enc.sample("wasup_engines_running", &[], running);

        METRICS.encode(&mut enc);
        if let Some(node) = &self.cluster {
            node.encode_metrics(&mut enc);
        }

        match actix_web::rt::time::timeout(OUTBOX_TIMEOUT, self.webhooks.send(OutboxDepth)).await {
            Ok(Ok(Ok(OutboxCounts { pending, dead }))) => {
                enc.family(
                    "wasup_webhook_outbox_depth",
                    "gauge",
                    "Webhook deliveries waiting to be delivered (pending outbox rows).",
                );
                enc.sample("wasup_webhook_outbox_depth", &[], pending);
                enc.family(
                    "wasup_webhook_dead_letters",
                    "gauge",
                    "Webhook deliveries that ran out of attempts and wait for a redrive.",
                );
                enc.sample("wasup_webhook_dead_letters", &[], dead);
            }
            Ok(Ok(Err(e))) => log::warn!("metrics: reading the webhook outbox failed: {e}"),
            Ok(Err(e)) => log::warn!("metrics: the webhook actor did not answer: {e}"),
            Err(_) => log::warn!("metrics: reading the webhook outbox timed out"),
        }

        self.http.encode(&mut enc);
        enc.finish()
    }
}

/// Feed one finished request (called by `api::request_log`). `pattern` is
/// the matched route template, None when no route matched.
pub fn observe_request(
    req: &HttpRequest,
    method: &Method,
    pattern: Option<&str>,
    status: StatusCode,
    elapsed: Duration,
) {
    if let Some(metrics) = req.app_data::<web::Data<Metrics>>() {
        metrics
            .http
            .observe(method, pattern, status.as_u16(), elapsed);
    }
}

/// Requests per route template and method: counts per status and a
/// latency histogram. Bounded by the route table, so plain maps under a lock.
#[derive(Default)]
struct HttpMetrics {
    routes: Mutex<HashMap<String, BTreeMap<&'static str, RouteSeries>>>,
}

struct RouteSeries {
    statuses: BTreeMap<u16, u64>,
    duration: Histogram,
}

fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

impl HttpMetrics {
    fn observe(&self, method: &Method, pattern: Option<&str>, status: u16, elapsed: Duration) {
        let route = pattern.unwrap_or("unmatched");
        let mut routes = self.routes.lock();
        // No allocation once the route is known.
        if !routes.contains_key(route) {
            routes.insert(route.to_string(), BTreeMap::new());
        }
        let series = routes
            .get_mut(route)
            .expect("inserted above")
            .entry(method_label(method))
            .or_insert_with(|| RouteSeries {
                statuses: BTreeMap::new(),
                duration: Histogram::new(HTTP_BUCKETS),
            });
        *series.statuses.entry(status).or_insert(0) += 1;
        series.duration.observe(elapsed);
    }

    fn encode(&self, enc: &mut TextEncoder) {
        let routes = self.routes.lock();
        let mut sorted: Vec<(&String, &BTreeMap<&'static str, RouteSeries>)> =
            routes.iter().collect();
        sorted.sort_by_key(|(route, _)| *route);
        enc.family(
            "wasup_http_requests_total",
            "counter",
            "HTTP requests by method, route template and status code.",
        );
        for (route, methods) in &sorted {
            for (method, series) in *methods {
                for (status, n) in &series.statuses {
                    let status = status.to_string();
                    enc.sample(
                        "wasup_http_requests_total",
                        &[("method", method), ("route", route), ("status", &status)],
                        n,
                    );
                }
            }
        }
        enc.family(
            "wasup_http_request_duration_seconds",
            "histogram",
            "HTTP request latency by method and route template.",
        );
        for (route, methods) in &sorted {
            for (method, series) in *methods {
                enc.histogram(
                    "wasup_http_request_duration_seconds",
                    &[("method", method), ("route", route)],
                    &series.duration,
                );
            }
        }
    }
}

/// Prometheus metrics
///
/// Prometheus text format 0.0.4: sessions by status, engine starts and exits
/// by cause, reconnect attempts, QR codes issued, webhook deliveries by
/// outcome with their latency and the outbox depth, HTTP requests by route
/// template and status with their latency, process memory and uptime. No
/// per-session labels. Open unless `WASUP_METRICS_TOKEN` is set; then it
/// needs `Authorization: Bearer <token>` (an API key does not do).
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "metrics",
    operation_id = "metrics",
    security((), ("metrics_token" = [])),
    responses(
        (status = 200, description = "The metrics", content_type = "text/plain; version=0.0.4",
            body = String),
    )
)]
pub async fn scrape(req: HttpRequest, metrics: web::Data<Metrics>) -> HttpResponse {
    if let Err(err) = metrics.authorize(&req) {
        let mut res = err.error_response();
        res.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer realm=\"wasup metrics\""),
        );
        return res;
    }
    HttpResponse::Ok()
        .content_type(CONTENT_TYPE)
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(metrics.render().await)
}
