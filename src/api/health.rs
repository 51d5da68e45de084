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
/// Either way the body tells how far the boot restore is (the API answers
/// during it; a client waiting for its sessions can poll this).
pub async fn ready(state: web::Data<AppState>) -> HttpResponse {
    if state.is_draining() {
        return HttpResponse::ServiceUnavailable()
            .json(json!({"status": "draining", "database": "unknown"}));
    }
    match state.web.send(CheckReady).await {
        Ok(Ok(restore)) => HttpResponse::Ok().json(json!({
            "status": "ok",
            "database": "ok",
            "restore": {
                "total": restore.total,
                "done": restore.done(),
                "inProgress": restore.in_progress,
                "queued": restore.queued,
                "complete": restore.queued + restore.in_progress == 0,
            },
        })),
        _ => HttpResponse::ServiceUnavailable()
            .json(json!({"status": "unavailable", "database": "unavailable"})),
    }
}
