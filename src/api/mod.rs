//! HTTP API (actix-web). Handlers only parse, authenticate and hand one
//! message to the WebActor; the mapping of errors to the contract's body
//! lives in `error.rs`, the routes in `routes`.

pub mod auth;
pub mod docs;
pub mod error;
pub mod health;
pub mod json;
pub mod keys;
pub mod sessions;
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
use actix_web::{web, HttpRequest, HttpResponse};
use wasup_actors::keys::KeyRing;
use wasup_actors::web::WebActor;
use wasup_actors::webhook::WebhookActor;

use error::ApiError;

/// What every handler can reach.
pub struct AppState {
    pub web: Addr<WebActor>,
    pub webhooks: Addr<WebhookActor>,
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

/// Where the API is mounted.
pub const PREFIX: &str = "/api";

/// Mount every route under `/api`, with contract errors for unknown routes
/// and wrong methods.
pub fn routes(cfg: &mut web::ServiceConfig) {
    let scope = table()
        .into_iter()
        .fold(web::scope(PREFIX), |scope, r| scope.service(r.inner));
    cfg.service(scope).default_service(web::to(route_not_found));
}

/// Every route the server mounts, as (method, full path template), read
/// from the same table `routes` mounts (the OpenAPI test checks that the
/// document covers each one).
pub fn mounted_routes() -> Vec<(Method, String)> {
    table()
        .into_iter()
        .flat_map(|r| {
            let path = format!("{PREFIX}{}", r.path);
            r.methods.into_iter().map(move |m| (m, path.clone()))
        })
        .chain(
            crate::metrics::MOUNTED
                .iter()
                .map(|(m, p)| (m.clone(), p.to_string())),
        )
        .collect()
}

/// The route table: paths under `/api` and their handlers.
fn table() -> Vec<Resource> {
    let mut table = vec![
        resource("/health").get(health::health),
        resource("/health/live").get(health::live),
        resource("/health/ready").get(health::ready),
        resource("/sessions")
            .get(sessions::list)
            .post(sessions::create),
        resource("/sessions/stats/overview").get(sessions::overview),
        resource("/sessions/{id}")
            .get(sessions::get)
            .delete(sessions::delete),
        resource("/sessions/{id}/start").post(sessions::start),
        resource("/sessions/{id}/stop").post(sessions::stop),
        resource("/sessions/{id}/force-kill").post(sessions::force_kill),
        resource("/sessions/{id}/restart").post(sessions::restart),
        resource("/sessions/{id}/logout").post(sessions::logout),
        resource("/sessions/{id}/qr").get(sessions::qr),
        resource("/sessions/{id}/pairing-code").post(sessions::pairing_code),
        resource("/sessions/{id}/me").get(sessions::me),
        resource("/sessions/{id}/webhooks")
            .get(webhooks::list)
            .post(webhooks::create),
        resource("/sessions/{id}/webhooks/{wid}")
            .get(webhooks::get)
            .patch(webhooks::update)
            .delete(webhooks::delete),
        resource("/sessions/{id}/webhooks/{wid}/test").post(webhooks::test),
        resource("/sessions/{id}/webhooks/{wid}/deliveries").get(webhooks::deliveries),
        resource("/sessions/{id}/webhooks/{wid}/deliveries/{event_id}/redrive")
            .post(webhooks::redrive),
        resource("/webhooks").get(webhooks::list_all),
        resource("/auth/api-keys")
            .get(keys::list)
            .post(keys::create),
        resource("/auth/api-keys/{id}")
            .get(keys::get)
            .delete(keys::revoke),
        resource("/auth/validate").post(keys::validate),
        resource("/docs").get(docs::ui),
        resource("/docs-json").get(docs::json),
        resource("/docs/{file}").get(docs::asset),
    ];
    table.extend(simulator_table());
    table
}

#[cfg(feature = "simulator")]
fn simulator_table() -> Vec<Resource> {
    vec![
        resource("/simulator/sessions/{id}/scan").post(simulator::scan),
        resource("/simulator/sessions/{id}/faults").post(simulator::fault),
        resource("/simulator/phones/{phone}/enter-code").post(simulator::enter_code),
        resource("/simulator/phones/{phone}/devices").get(simulator::phone_devices),
    ]
}

#[cfg(not(feature = "simulator"))]
fn simulator_table() -> Vec<Resource> {
    Vec::new()
}

/// A resource whose unmatched methods answer 405 in the contract's shape.
fn resource(path: &'static str) -> Resource {
    Resource {
        path,
        methods: Vec::new(),
        inner: web::resource(path).default_service(web::to(method_not_allowed)),
    }
}

/// Thin builder so the route table above reads as a table, and remembers
/// which methods it mounted.
struct Resource {
    path: &'static str,
    methods: Vec<Method>,
    inner: actix_web::Resource,
}

macro_rules! method {
    ($name:ident, $route:ident, $method:ident) => {
        fn $name<F, Args>(mut self, handler: F) -> Self
        where
            F: actix_web::Handler<Args>,
            Args: actix_web::FromRequest + 'static,
            F::Output: actix_web::Responder + 'static,
        {
            self.methods.push(Method::$method);
            self.inner = self.inner.route(web::$route().to(handler));
            self
        }
    };
}

impl Resource {
    method!(get, get, GET);
    method!(post, post, POST);
    method!(delete, delete, DELETE);
    method!(patch, patch, PATCH);
}

async fn route_not_found(req: HttpRequest) -> ApiError {
    ApiError::route_not_found(req.method().as_str(), req.path())
}

async fn method_not_allowed(req: HttpRequest) -> ApiError {
    ApiError::method_not_allowed(req.method().as_str(), req.path())
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
