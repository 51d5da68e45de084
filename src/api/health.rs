//! Health routes (no key needed).

use actix_web::{web, HttpResponse};
use serde::Serialize;
use utoipa::ToSchema;
use wasup_actors::web::CheckReady;

use super::AppState;

#[derive(Serialize, ToSchema)]
pub struct HealthBody {
    #[schema(example = "ok")]
    status: &'static str,
    /// The server's version.
    #[schema(example = "0.1.0")]
    version: &'static str,
}

#[derive(Serialize, ToSchema)]
pub struct LiveBody {
    #[schema(example = "ok")]
    status: &'static str,
}

#[derive(Serialize, ToSchema)]
pub struct ReadyBody {
    /// `ok`, `draining` (shutting down) or `unavailable`.
    #[schema(example = "ok")]
    status: &'static str,
    /// `ok`, `unavailable`, or `unknown` while draining.
    #[schema(example = "ok")]
    database: &'static str,
    /// How far the boot restore is (present when the server is ready).
    #[serde(skip_serializing_if = "Option::is_none")]
    restore: Option<RestoreBody>,
}

/// The boot restore: sessions whose desired state is running come back a
/// few at a time while the API already answers.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreBody {
    /// Sessions the restore queued.
    #[schema(example = 1000)]
    total: usize,
    /// Restored (reached a state other than `initializing`).
    #[schema(example = 640)]
    done: usize,
    /// Starting now.
    #[schema(example = 8)]
    in_progress: usize,
    /// Waiting for a slot.
    #[schema(example = 352)]
    queued: usize,
    /// Nothing queued or starting.
    #[schema(example = false)]
    complete: bool,
}
/// Health and version
#[utoipa::path(get, path = "/api/health", tag = "health", operation_id = "health",
    responses((status = 200, description = "The server answers", body = HealthBody))
)]
pub async fn health() -> HttpResponse {
    HttpResponse::Ok().json(HealthBody {
        status: "ok",
        version: env!("CARGO_PKG_VERSION"),
    })
}

/// Liveness
#[utoipa::path(get, path = "/api/health/live", tag = "health", operation_id = "healthLive",
    responses((status = 200, description = "The process is alive", body = LiveBody))
)]
pub async fn live() -> HttpResponse {
    HttpResponse::Ok().json(LiveBody { status: "ok" })
}

/// Readiness
///
/// 200 when the database answers and the server is not draining, else 503.
/// When ready, the body tells how far the boot restore is (the API answers
/// during it; a client waiting for its sessions can poll this).
#[utoipa::path(get, path = "/api/health/ready", tag = "health", operation_id = "healthReady",
    responses(
        (status = 200, description = "Ready", body = ReadyBody),
        (status = 503, description = "Not ready: draining or the database does not answer", body = ReadyBody,
            example = json!({"status": "unavailable", "database": "unavailable"})),
    )
)]
pub async fn ready(state: web::Data<AppState>) -> HttpResponse {
    let body = |status, database| ReadyBody {
        status,
        database,
        restore: None,
    };
    if state.is_draining() {
        return HttpResponse::ServiceUnavailable().json(body("draining", "unknown"));
    }
    match state.web.send(CheckReady).await {
        Ok(Ok(restore)) => HttpResponse::Ok().json(ReadyBody {
            restore: Some(RestoreBody {
                total: restore.total,
                done: restore.done(),
                in_progress: restore.in_progress,
                queued: restore.queued,
                complete: restore.queued + restore.in_progress == 0,
            }),
            ..body("ok", "ok")
        }),
        _ => HttpResponse::ServiceUnavailable().json(body("unavailable", "unavailable")),
    }
}
