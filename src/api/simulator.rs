//! Control routes of the simulator build (`/api/simulator/…`): a virtual
//! phone scans a session's QR or enters a pairing code, and faults are
//! injected into a session's connection. Operator role, like session writes.

use std::time::Duration;

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use wasup_actors::model::Role;
use wasup_actors::web::{GetQr, GetSession};
use wasup_actors::ErrorCode;

use super::auth::Auth;
use super::error::ApiError;
use super::json::Body;
use super::sessions::SessionPath;
use super::AppState;
use crate::simulator::{FaultKind, LinkedDevice, Simulator, Target};

type Data = web::Data<AppState>;

fn simulator(state: &AppState) -> Result<&Simulator, ApiError> {
    state
        .simulator
        .as_ref()
        .ok_or_else(ApiError::no_embedded_simulator)
}

/// A device linked to a virtual phone.
#[derive(Serialize, ToSchema)]
#[schema(as = SimulatorDevice)]
pub struct DeviceBody {
    #[schema(example = "628123456789")]
    phone: String,
    /// Companion device number.
    #[schema(example = 1)]
    device: u16,
    #[schema(example = "628123456789:1@s.whatsapp.net")]
    jid: String,
}

impl From<LinkedDevice> for DeviceBody {
    fn from(device: LinkedDevice) -> Self {
        DeviceBody {
            jid: device.jid(),
            phone: device.phone,
            device: device.device,
        }
    }
}

fn linked(device: LinkedDevice) -> HttpResponse {
    HttpResponse::Ok().json(DeviceBody::from(device))
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(as = SimulatorScanRequest)]
pub struct ScanRequest {
    /// The virtual phone's number (created on first use): 6–15 digits.
    #[schema(example = "628123456789", pattern = "^[0-9]{6,15}$")]
    phone: String,
    /// 1–100 characters; default `Phone <phone>`.
    #[serde(default)]
    push_name: Option<String>,
}

/// A virtual phone scans the session's QR
///
/// Role: operator. Simulator builds only. The phone scans the QR the
/// session currently shows and the link completes.
#[utoipa::path(post, path = "/api/simulator/sessions/{id}/scan", tag = "simulator", operation_id = "simulatorScan",
    params(SessionPath),
    request_body = ScanRequest,
    responses(
        (status = 200, description = "Linked", body = DeviceBody),
    )
)]
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

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(as = SimulatorEnterCodeRequest)]
pub struct EnterCodeRequest {
    /// The pairing code: 8 letters or digits.
    #[schema(example = "ABCD1234")]
    code: String,
}

/// A virtual phone enters a pairing code
///
/// Role: operator. Simulator builds only.
#[utoipa::path(post, path = "/api/simulator/phones/{phone}/enter-code", tag = "simulator", operation_id = "simulatorEnterCode",
    params(("phone" = String, Path, description = "The virtual phone's number: 6–15 digits")),
    request_body = EnterCodeRequest,
    responses(
        (status = 200, description = "Linked", body = DeviceBody),
    )
)]
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

/// A virtual phone's linked devices
///
/// Any role. Simulator builds only. What "Linked devices" shows on the phone.
#[utoipa::path(get, path = "/api/simulator/phones/{phone}/devices", tag = "simulator", operation_id = "simulatorPhoneDevices",
    params(("phone" = String, Path, description = "The virtual phone's number: 6–15 digits")),
    responses(
        (status = 200, description = "The devices", body = Vec<DeviceBody>),
    )
)]
pub async fn phone_devices(
    state: Data,
    Auth(_caller): Auth,
    phone: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let sim = simulator(&state)?;
    let phone = super::sessions::phone_digits("phone", &phone)?;
    let devices: Vec<DeviceBody> = sim
        .phone_devices(&phone)?
        .into_iter()
        .map(DeviceBody::from)
        .collect();
    Ok(HttpResponse::Ok().json(devices))
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(as = SimulatorFaultRequest)]
pub struct FaultRequest {
    /// `drop` (connection closed), `outage` (connections refused for
    /// `durationMs`), `unlink` (device removed on the phone), `replaced`
    /// (another connection took over), `ban` (temporary ban, `durationMs`
    /// default 1 h), `outdated` (client version refused).
    #[schema(
        pattern = "^(drop|outage|unlink|replaced|ban|outdated)$",
        example = "drop"
    )]
    kind: String,
    /// 1–86400000; required for `outage`.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 86400000)]
    duration_ms: Option<u64>,
}

/// The answer to a fault.
#[derive(Serialize, ToSchema)]
#[schema(as = SimulatorFaultApplied)]
pub struct FaultBody {
    /// The fault's kind.
    #[schema(example = "drop")]
    applied: String,
}

/// Inject a fault into a session's connection
///
/// Role: operator. Simulator builds only. Applies to the session's linked
/// device, or to the unlinked connection showing the current QR.
#[utoipa::path(post, path = "/api/simulator/sessions/{id}/faults", tag = "simulator", operation_id = "simulatorFault",
    params(SessionPath),
    request_body = FaultRequest,
    responses(
        (status = 200, description = "Applied", body = FaultBody),
    )
)]
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
    let view = state
        .web
        .send(GetSession {
            caller,
            id: id.into_inner(),
        })
        .await??;
    let targets: Vec<Target> = match &view.record.phone {
        Some(phone) => sim
            .phone_devices(phone)?
            .into_iter()
            .map(|d| Target::device(d.phone, d.device))
            .collect(),
        // Not linked yet: the fault goes to the pairing connection of the QR it shows.
        None => wasup_actors::state::shown_qr(&view)
            .map(|qr| vec![Target::PairingRef(qr.text.clone())])
            .unwrap_or_default(),
    };
    if targets.is_empty() {
        return Err(ApiError::new(
            ErrorCode::SessionNotConnected,
            format!(
                "Session '{}' has no connection to the simulator to fault",
                view.record.name
            ),
        ));
    }
    for target in targets {
        sim.fault(target, kind.clone())?;
    }
    Ok(HttpResponse::Ok().json(FaultBody { applied: req.kind }))
}
