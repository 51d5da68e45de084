//! Control routes of the simulator build (`/api/simulator/…`): a virtual
//! phone scans a session's QR or enters a pairing code, and faults are
//! injected into a session's connection. Operator role, like session writes.

use std::time::Duration;

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use wasup_actors::model::{Role, SessionStatus};
use wasup_actors::web::{GetQr, GetSession};

use super::auth::Auth;
use super::error::ApiError;
use super::json::Body;
use super::AppState;
use crate::simulator::{FaultKind, LinkedDevice, Simulator, Target};

type Data = web::Data<AppState>;

fn simulator(state: &AppState) -> Result<&Simulator, ApiError> {
    state.simulator.as_ref().ok_or_else(|| {
        ApiError::new(
            actix_web::http::StatusCode::NOT_FOUND,
            "simulator_not_embedded",
            "This gateway talks to a simulator process (WASUP_SIMULATOR_URL): use its own control API",
        )
    })
}

fn linked(device: LinkedDevice) -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({
        "phone": device.phone,
        "device": device.device,
        "jid": device.jid(),
    }))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ScanRequest {
    phone: String,
    #[serde(default)]
    push_name: Option<String>,
}

/// The phone scans the QR the session currently shows.
pub async fn scan(
    state: Data,
    Auth(caller): Auth,
    id: web::Path<String>,
    Body(req): Body<ScanRequest>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Role::Operator)?;
    let sim = simulator(&state)?;
    let phone = super::sessions::phone_digits("phone", &req.phone)?;
    let push_name = req.push_name.unwrap_or_else(|| format!("Phone {phone}"));
    if push_name.is_empty() || push_name.chars().count() > 100 {
        return Err(ApiError::validation(
            "Field 'pushName' must be 1–100 characters",
        ));
    }
    let (qr, _) = state
        .web
        .send(GetQr {
            caller,
            id: id.into_inner(),
        })
        .await??;
    Ok(linked(sim.scan(&qr.text, &phone, &push_name).await?))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EnterCodeRequest {
    code: String,
}

/// The phone enters a pairing code.
pub async fn enter_code(
    state: Data,
    Auth(caller): Auth,
    phone: web::Path<String>,
    Body(req): Body<EnterCodeRequest>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Role::Operator)?;
    let sim = simulator(&state)?;
    let phone = super::sessions::phone_digits("phone", &phone)?;
    let code = req.code.trim().to_ascii_uppercase();
    if code.len() != 8 || !code.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(ApiError::validation(
            "Field 'code' must be 8 letters or digits",
        ));
    }
    Ok(linked(sim.enter_code(&phone, &code).await?))
}

/// The devices a phone lists as linked (what "Linked devices" shows on a phone).
pub async fn phone_devices(
    state: Data,
    Auth(_caller): Auth,
    phone: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let sim = simulator(&state)?;
    let phone = super::sessions::phone_digits("phone", &phone)?;
    let devices: Vec<serde_json::Value> = sim
        .phone_devices(&phone)?
        .into_iter()
        .map(|d| serde_json::json!({"phone": d.phone, "device": d.device, "jid": d.jid()}))
        .collect();
    Ok(HttpResponse::Ok().json(devices))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FaultRequest {
    kind: String,
    #[serde(default)]
    duration_ms: Option<u64>,
}

/// Inject a fault into the session's connection (its linked device, or the
/// unlinked connection showing the current QR).
pub async fn fault(
    state: Data,
    Auth(caller): Auth,
    id: web::Path<String>,
    Body(req): Body<FaultRequest>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Role::Operator)?;
    let sim = simulator(&state)?;
    let duration = |default_ms: Option<u64>| -> Result<Duration, ApiError> {
        match req.duration_ms.or(default_ms) {
            Some(ms) if (1..=86_400_000).contains(&ms) => Ok(Duration::from_millis(ms)),
            _ => Err(ApiError::validation(
                "Field 'durationMs' must be 1–86400000 (required for 'outage')",
            )),
        }
    };
    let kind = match req.kind.as_str() {
        "drop" => FaultKind::Drop,
        "outage" => FaultKind::Outage(duration(None)?),
        "unlink" => FaultKind::Unlink,
        "replaced" => FaultKind::Replaced,
        "ban" => FaultKind::Ban {
            code: 101,
            expire: duration(Some(3_600_000))?,
        },
        "outdated" => FaultKind::Outdated,
        other => {
            return Err(ApiError::validation(format!(
                "Field 'kind' must be one of drop, outage, unlink, replaced, ban, outdated (not '{other}')"
            )))
        }
    };
    let id = id.into_inner();
    let view = state
        .web
        .send(GetSession {
            caller: caller.clone(),
            id: id.clone(),
        })
        .await??;
    let targets: Vec<Target> = match &view.record.phone {
        Some(phone) => sim
            .phone_devices(phone)?
            .into_iter()
            .map(|d| Target::device(d.phone, d.device))
            .collect(),
        None if view.record.status == SessionStatus::QrReady => {
            let (qr, _) = state.web.send(GetQr { caller, id }).await??;
            vec![Target::PairingRef(qr.text)]
        }
        None => Vec::new(),
    };
    if targets.is_empty() {
        return Err(ApiError::new(
            actix_web::http::StatusCode::CONFLICT,
            "session_not_connected",
            format!(
                "Session '{}' has no connection to the simulator to fault",
                view.record.name
            ),
        ));
    }
    for target in targets {
        sim.fault(target, kind.clone())?;
    }
    Ok(HttpResponse::Ok().json(serde_json::json!({"applied": req.kind})))
}
