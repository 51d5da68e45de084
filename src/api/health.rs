//! Health routes (no key needed).

use actix_web::{web, HttpResponse};
use serde_json::json;
use wasup_actors::web::CheckReady;

use super::AppState;

pub async fn health() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok", "version": env!("CARGO_PKG_VERSION")}))
}

pub async fn live() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// 200 when the database answers and the server is not draining, else 503.
pub async fn ready(state: web::Data<AppState>) -> HttpResponse {
    if state.is_draining() {
        return HttpResponse::ServiceUnavailable()
            .json(json!({"status": "draining", "database": "unknown"}));
    }
    match state.web.send(CheckReady).await {
        Ok(Ok(())) => HttpResponse::Ok().json(json!({"status": "ok", "database": "ok"})),
        _ => HttpResponse::ServiceUnavailable()
            .json(json!({"status": "unavailable", "database": "unavailable"})),
    }
}
