//! Any node answers any request. Reads answer from this node's registry
//! (refreshed from the database, `node.rs`). A command for a session
//! (start, restart, stop, force-kill, logout, delete, QR, pairing code,
//! messages, number checks, settings, the embedded simulator's scan and
//! faults) goes one hop to the
//! node that owns the session, with the caller's own headers (so the owner
//! authenticates the caller as usual) plus `X-Wasup-Forwarded: <this node>`;
//! a request carrying that header is never forwarded again. Every answer
//! carries `X-Wasup-Node` (the node that served it; a forwarded answer keeps
//! the owner's). An owner that cannot be reached within `CONNECT_TIMEOUT` (or, reached,
//! does not answer within `ANSWER_TIMEOUT`) gives
//! 503 `owner_unavailable` with `Retry-After` (the lease TTL: by then another
//! node owns the session).
//!
//! A start or restart of a session nobody owns goes to the live node with
//! room that owns the fewest sessions (this one on a tie), which claims it
//! before it starts it; no node with room: 503.

use std::sync::Arc;
use std::time::Duration;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::http::Method;
use actix_web::middleware::Next;
use actix_web::{web, HttpResponse, ResponseError};
use wasup_actors::model::SessionId;
use wasup_actors::registry::SessionRegistry;
use wasup_actors::ErrorCode;

use super::node::ClusterNode;
use crate::api::error::ApiError;
use crate::db::cluster::{self as sql, Owner};

pub const NODE_HEADER: &str = "x-wasup-node";
pub const HOP_HEADER: &str = "x-wasup-forwarded";
/// How long a forward may take to reach the owner.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the owner may take to answer a command (a paused owner accepts
/// the connection and never answers: this bounds the wait)…
const ANSWER_TIMEOUT: Duration = Duration::from_secs(15);
/// …and a pairing code, which waits on WhatsApp (the engine's own limit is 60 s).
const PAIRING_ANSWER_TIMEOUT: Duration = Duration::from_secs(65);

/// What the cluster routes and the forwarding need (registered as app data
/// in both modes).
pub struct ClusterInfo {
    pub node_id: String,
    pub node: Option<ClusterNode>,
    pub registry: Arc<SessionRegistry>,
    /// Built at the first forward: its TLS setup initialises OpenSSL (about
    /// 5 MiB of an idle process's RSS), which a single node never needs.
    http: std::sync::OnceLock<Result<reqwest::Client, String>>,
}

impl ClusterInfo {
    pub fn new(
        node_id: String,
        node: Option<ClusterNode>,
        registry: Arc<SessionRegistry>,
    ) -> ClusterInfo {
        ClusterInfo {
            node_id,
            node,
            registry,
            http: std::sync::OnceLock::new(),
        }
    }

    /// The forwarding client, built on first use.
    fn http(&self) -> Result<&reqwest::Client, &str> {
        self.http
            .get_or_init(|| {
                reqwest::Client::builder()
                    .connect_timeout(CONNECT_TIMEOUT)
                    .redirect(reqwest::redirect::Policy::none())
                    .build()
                    .map_err(|e| format!("the forwarding HTTP client could not be set up: {e}"))
            })
            .as_ref()
            .map_err(String::as_str)
    }
}

impl ApiError {
    /// 503 `owner_unavailable`, retry after `retry_after_secs`.
    pub fn owner_unavailable(message: impl Into<String>, retry_after_secs: u64) -> ApiError {
        ApiError {
            retry_after_secs: Some(retry_after_secs),
            ..ApiError::new(ErrorCode::OwnerUnavailable, message)
        }
    }
}

/// The session a command route names, and whether the command needs an
/// engine (start, restart). None: not a command route.
fn command_target(method: &Method, path: &str) -> Option<(String, bool)> {
    let parts: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    match (method, parts.as_slice()) {
        (&Method::DELETE, ["", "api", "sessions", id]) => Some((id.to_string(), false)),
        (&Method::GET, ["", "api", "sessions", id, "qr"]) => Some((id.to_string(), false)),
        (&Method::POST, ["", "api", "sessions", id, verb]) => match *verb {
            "start" | "restart" => Some((id.to_string(), true)),
            "stop" | "force-kill" | "logout" | "pairing-code" | "messages" => {
                Some((id.to_string(), false))
            }
            _ => None,
        },
        (&Method::POST, ["", "api", "sessions", id, "messages", ..]) => {
            Some((id.to_string(), false))
        }
        // Cancelling a pending message races the owner's queue; a number
        // check needs the owner's engine.
        (&Method::DELETE, ["", "api", "sessions", id, "messages", _]) => {
            Some((id.to_string(), false))
        }
        (&Method::GET, ["", "api", "sessions", id, "contacts", "check", _]) => {
            Some((id.to_string(), false))
        }
        // Settings are applied by the session's own actor, on its owner.
        (&Method::PATCH, ["", "api", "sessions", id, "config" | "proxy"]) => {
            Some((id.to_string(), false))
        }
        (&Method::POST, ["", "api", "simulator", "sessions", id, "scan" | "faults"]) => {
            Some((id.to_string(), false))
        }
        _ => None,
    }
}

enum Route {
    Here,
    To(String),
    Nowhere(String),
}

/// Middleware: forward a session command to its owner.
pub async fn forward(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let info = req.app_data::<web::Data<ClusterInfo>>().cloned();
    let target = match &info {
        Some(info) if info.node.is_some() => command_target(req.method(), req.path()),
        _ => None,
    };
    let (Some(info), Some((key, needs_engine))) = (info, target) else {
        return next.call(req).await.map(|r| r.map_into_boxed_body());
    };
    let node = info.node.clone().expect("checked above");
    let view = match info.registry.resolve(&key) {
        Some(view) => Some(view),
        None => node.load_unknown(&key).await,
    };
    let Some(view) = view else {
        return next.call(req).await.map(|r| r.map_into_boxed_body());
    };
    let hop = req.headers().contains_key(HOP_HEADER);
    let retry = node.config().lease_ttl.as_secs().max(1);
    match route(&node, view.record.id, needs_engine, !hop).await {
        Route::Here => next.call(req).await.map(|r| r.map_into_boxed_body()),
        Route::Nowhere(why) => {
            let res = ApiError::owner_unavailable(why, retry).error_response();
            Ok(req.into_response(res))
        }
        Route::To(url) => {
            let (req, res) = relay(&info, req, &url).await;
            let res = res.unwrap_or_else(|()| {
                ApiError::owner_unavailable(
                    format!(
                        "The node that owns this session ({url}) did not answer; retry shortly"
                    ),
                    retry,
                )
                .error_response()
            });
            Ok(req.into_response(res))
        }
    }
}

/// Where a command for `id` is served. A forwarded request (`may_forward`
/// false) is always served here; a start of a session nobody owns is
/// claimed here first.
async fn route(node: &ClusterNode, id: SessionId, needs_engine: bool, may_forward: bool) -> Route {
    let sid = id.to_string();
    let lookup = |sid: String| node.db().run(move |c| sql::owner(c, &sid));
    let owner = match lookup(sid.clone()).await {
        Ok(o) => o,
        // The database is down: serve here (any write is fenced anyway).
        Err(_) => return Route::Here,
    };
    if let Some(o) = owner.as_ref().filter(|o| o.live) {
        return match (o.node_id.as_deref(), &o.url) {
            (Some(n), _) if n == node.node_id() => Route::Here,
            _ if !may_forward => Route::Here,
            (_, Some(url)) => Route::To(url.clone()),
            _ => Route::Nowhere("The session's owner is not registered; retry shortly".into()),
        };
    }
    if !needs_engine {
        return Route::Here;
    }
    if may_forward {
        match least_loaded_node(node).await {
            Some(Some(url)) => return Route::To(url),
            Some(None) => {}
            None => return Route::Nowhere("No node has room for this session; retry later".into()),
        }
    }
    // This node: claim it (a start without the lease is refused by the fence).
    match node.claim_for_command(id).await {
        Ok(Some(_)) | Err(_) => Route::Here,
        Ok(None) if !may_forward => Route::Here,
        // Claimed by another node meanwhile.
        Ok(None) => match lookup(sid).await {
            Ok(Some(Owner {
                live: true,
                url: Some(url),
                ..
            })) => Route::To(url),
            _ => Route::Nowhere("No node has room for this session; retry later".into()),
        },
    }
}

/// The live, not draining node with room that owns the fewest sessions
/// (this one on a tie): Some(None) for this node, Some(Some(url)) for
/// another, None when no node has room.
async fn least_loaded_node(node: &ClusterNode) -> Option<Option<String>> {
    let ttl = node.config().lease_ttl.as_millis() as i64;
    let me = node.node_id().to_string();
    let Ok((nodes, leases)) = node
        .db()
        .run(move |c| Ok((sql::nodes(c, ttl)?, sql::live_leases(c)?)))
        .await
    else {
        return Some(None);
    };
    nodes
        .into_iter()
        .filter(|n| n.alive && !n.draining)
        .map(|n| {
            let used = leases.get(&n.id).map_or(0, Vec::len) as i64;
            (used, n.id != me, n.capacity - used, n)
        })
        .filter(|(_, _, room, _)| *room > 0)
        .min_by_key(|(used, not_me, _, _)| (*used, *not_me))
        .map(|(_, not_me, _, n)| not_me.then_some(n.url))
}

struct Parts {
    method: reqwest::Method,
    path_and_query: String,
    headers: Vec<(String, Vec<u8>)>,
}

fn req_parts(req: &ServiceRequest) -> Parts {
    let skip = [
        "host",
        "connection",
        "content-length",
        "transfer-encoding",
        HOP_HEADER,
    ];
    Parts {
        method: reqwest::Method::from_bytes(req.method().as_str().as_bytes())
            .unwrap_or(reqwest::Method::GET),
        path_and_query: req
            .uri()
            .path_and_query()
            .map_or_else(|| req.path().to_string(), |p| p.as_str().to_string()),
        headers: req
            .headers()
            .iter()
            .filter(|(name, _)| !skip.contains(&name.as_str()))
            .map(|(n, v)| (n.as_str().to_string(), v.as_bytes().to_vec()))
            .collect(),
    }
}

/// Send the request to `url` (the owner) and turn its answer into ours;
/// Err when the owner could not be reached or broke off.
async fn relay(
    info: &ClusterInfo,
    mut req: ServiceRequest,
    url: &str,
) -> (ServiceRequest, Result<HttpResponse, ()>) {
    let parts = req_parts(&req);
    let body = match req.extract::<web::Bytes>().await {
        Ok(b) => b,
        Err(_) => web::Bytes::new(),
    };
    let timeout = if parts.path_and_query.contains("/pairing-code") {
        PAIRING_ANSWER_TIMEOUT
    } else {
        ANSWER_TIMEOUT
    };
    let http = match info.http() {
        Ok(http) => http,
        Err(e) => {
            log::warn!("cluster: forwarding to {url} failed: {e}");
            return (req, Err(()));
        }
    };
    let mut out = http
        .request(parts.method, format!("{url}{}", parts.path_and_query))
        .timeout(timeout)
        .header(HOP_HEADER, info.node_id.as_str())
        .body(body);
    for (name, value) in parts.headers {
        out = out.header(name, value);
    }
    let answer = match out.send().await {
        Ok(a) => a,
        Err(e) => {
            log::warn!("cluster: forwarding to {url} failed: {e}");
            return (req, Err(()));
        }
    };
    let status = actix_web::http::StatusCode::from_u16(answer.status().as_u16())
        .unwrap_or(actix_web::http::StatusCode::BAD_GATEWAY);
    let mut res = HttpResponse::build(status);
    for (name, value) in answer.headers() {
        let n = name.as_str();
        if matches!(n, "connection" | "transfer-encoding" | "content-length") {
            continue;
        }
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(n.as_bytes()),
            HeaderValue::from_bytes(value.as_bytes()),
        ) {
            res.append_header((n, v));
        }
    }
    match answer.bytes().await {
        Ok(bytes) => (req, Ok(res.body(bytes))),
        Err(e) => {
            log::warn!("cluster: reading the answer of {url} failed: {e}");
            (req, Err(()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_routes_are_recognised() {
        let t = |m: Method, p: &str| command_target(&m, p);
        assert_eq!(
            t(Method::POST, "/api/sessions/a/start"),
            Some(("a".into(), true))
        );
        assert_eq!(
            t(Method::POST, "/api/sessions/a/restart"),
            Some(("a".into(), true))
        );
        assert_eq!(
            t(Method::POST, "/api/sessions/a/stop"),
            Some(("a".into(), false))
        );
        assert_eq!(
            t(Method::GET, "/api/sessions/a/qr"),
            Some(("a".into(), false))
        );
        assert_eq!(
            t(Method::DELETE, "/api/sessions/a"),
            Some(("a".into(), false))
        );
        assert_eq!(t(Method::GET, "/api/sessions/a"), None);
        assert_eq!(t(Method::GET, "/api/sessions/a/webhooks"), None);
        assert_eq!(t(Method::POST, "/api/sessions"), None);
    }
}
