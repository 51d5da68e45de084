//! HTTP API (actix-web). Handlers only parse, authenticate and hand one
//! message to the WebActor; the mapping of errors to the contract's body
//! lives in `error.rs`, the route table (mounted and documented) in
//! `routes.rs`, the request log here.

pub mod auth;
pub mod auth_limit;
pub mod cluster;
pub mod dashboard;
pub mod docs;
pub mod error;
pub mod events;
pub mod health;
pub mod json;
pub mod keys;
pub mod messages;
pub mod routes;
pub mod sessions;
pub mod settings;
#[cfg(feature = "simulator")]
pub mod simulator;
pub mod time;
pub mod webhooks;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use actix::Addr;
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::http::Method;
use actix_web::middleware::Next;
use actix_web::{HttpRequest, HttpResponse};
use wasup_actors::keys::KeyRing;
use wasup_actors::web::WebActor;
use wasup_actors::webhook::WebhookActor;

use error::ApiError;

/// What every handler can reach.
pub struct AppState {
    pub web: Addr<WebActor>,
    pub webhooks: Addr<WebhookActor>,
    pub messages: Addr<wasup_actors::outbound::OutboundActor>,
    pub keys: Arc<KeyRing>,
    /// Set once shutdown began: readiness answers 503.
    pub draining: Arc<AtomicBool>,
    /// The embedded simulator (simulator builds without WASUP_SIMULATOR_URL).
    #[cfg(feature = "simulator")]
    pub simulator: Option<crate::simulator::Simulator>,
}

impl AppState {
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }
}

/// Mount every route of the table (`routes`), with contract errors for
/// unknown routes and wrong methods.
pub fn routes(cfg: &mut actix_web::web::ServiceConfig) {
    routes::mount(cfg);
}

/// Every route the server mounts, as (method, full path template), read
/// from the route table.
pub fn mounted_routes() -> Vec<(Method, String)> {
    routes::table()
        .iter()
        .map(|r| (r.method(), r.path().to_string()))
        .collect()
}

impl actix_web::Responder for ApiError {
    type Body = actix_web::body::BoxBody;
    fn respond_to(self, _: &HttpRequest) -> HttpResponse {
        actix_web::ResponseError::error_response(&self)
    }
}

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The caller's `X-Request-Id` when it is a sane token, else a fresh one.
fn request_id(req: &ServiceRequest) -> HeaderValue {
    req.headers()
        .get(&REQUEST_ID)
        .filter(|v| {
            let b = v.as_bytes();
            !b.is_empty() && b.len() <= 128 && b.iter().all(|c| c.is_ascii_graphic())
        })
        .cloned()
        .unwrap_or_else(|| {
            HeaderValue::from_str(&uuid::Uuid::new_v4().to_string())
                .expect("a UUID is a valid header value")
        })
}

/// Echo or assign `X-Request-Id` and log one line per request: method,
/// route template, status, latency and request id (never headers or bodies).
/// The same figures feed the HTTP metrics of `GET /metrics`.
pub async fn request_log(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let id = request_id(&req);
    let method = req.method().clone();
    let mut res = next.call(req).await?;
    let elapsed = started.elapsed();
    let pattern = res.request().match_pattern();
    crate::metrics::observe_request(
        res.request(),
        &method,
        pattern.as_deref(),
        res.status(),
        elapsed,
    );
    let route = pattern.unwrap_or_else(|| "(unmatched)".to_string());
    log::info!(
        "{} {} {} {:.1}ms request_id={}",
        method,
        route,
        res.status().as_u16(),
        elapsed.as_secs_f64() * 1000.0,
        id.to_str().unwrap_or("-")
    );
    res.headers_mut().insert(REQUEST_ID, id);
    Ok(res)
}
