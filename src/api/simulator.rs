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

// ------------------------------------------------------------ messages

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(as = SimulatorPhoneSendRequest)]
pub struct PhoneSendRequest {
    /// The session to write to (its id or name) or a linked account's number.
    #[schema(example = "shop-bot")]
    to: String,
    /// 1–4096 characters.
    #[schema(example = "Hello, is my order ready?")]
    text: String,
    /// Reply to this message (one the phone received, or sent itself).
    #[serde(default)]
    quoted_message_id: Option<String>,
}

/// The id of a message a virtual phone sent.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = SimulatorPhoneSent)]
pub struct PhoneSentBody {
    #[schema(example = "3EB0A1B2C3D4E5F60718")]
    message_id: String,
}

/// A message a virtual phone received from a linked session, decrypted.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = SimulatorPhoneMessage)]
pub struct PhoneMessageBody {
    /// The WhatsApp message id the sender chose.
    #[schema(example = "3EB0019A2B3C4D5E6F708192")]
    id: String,
    /// The sending account's number.
    #[schema(example = "628111111111")]
    from: String,
    #[schema(example = 1)]
    from_device: u16,
    #[schema(example = "628123456789")]
    to: String,
    text: String,
    /// Whom the text mentions (JIDs).
    mentions: Vec<String>,
    /// The message it quotes: its id, author (a JID) and text.
    quoted_id: Option<String>,
    quoted_author: Option<String>,
    quoted_text: Option<String>,
    /// When the simulator received it, ms since the Unix epoch.
    received_at_ms: u64,
    read: bool,
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(as = SimulatorReadRequest)]
pub struct ReadRequest {
    /// The ids to read; every unread message when absent.
    #[serde(default)]
    ids: Option<Vec<String>>,
}

#[derive(Serialize, ToSchema)]
#[schema(as = SimulatorReadDone)]
pub struct ReadBody {
    /// How many messages were newly read (each sends a read receipt).
    read: usize,
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(as = SimulatorRegisteredRequest)]
pub struct RegisteredRequest {
    /// False: the number is not on WhatsApp (checks say so, sends to it fail).
    registered: bool,
}

#[derive(Serialize, ToSchema)]
#[schema(as = SimulatorRegistered)]
pub struct RegisteredBody {
    #[schema(example = "628123456789")]
    phone: String,
    registered: bool,
}

/// The number a phone writes to or calls: digits as they are, else the
/// linked number of the session named (id or name) `to`.
async fn account_phone(
    state: &Data,
    caller: wasup_actors::model::Caller,
    to: &str,
) -> Result<String, ApiError> {
    if !to.is_empty() && to.bytes().all(|b| b.is_ascii_digit()) {
        return super::sessions::phone_digits("to", to);
    }
    let view = state
        .web
        .send(GetSession {
            caller,
            id: to.to_string(),
        })
        .await??;
    view.record.phone.clone().ok_or_else(|| {
        ApiError::new(
            ErrorCode::SessionNotConnected,
            format!(
                "Session '{}' is not linked to a phone yet",
                view.record.name
            ),
        )
    })
}

/// `POST /api/simulator/phones/{phone}/calls`.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(as = SimulatorPhoneCallRequest)]
pub struct PhoneCallRequest {
    /// The session to call (its id or name) or a linked account's number.
    #[schema(example = "shop-bot")]
    to: String,
}

/// A call a virtual phone placed.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = SimulatorPhoneCall)]
pub struct PhoneCallBody {
    #[schema(example = "4D9A0C1E2F3A4B5C6D7E8F9012345678")]
    call_id: String,
    #[schema(example = "628111111111")]
    from: String,
    #[schema(example = "628123456789")]
    to: String,
    /// The device of the called account that declined it, once one did.
    rejected_by_device: Option<u16>,
}

impl From<crate::simulator::PhoneCall> for PhoneCallBody {
    fn from(c: crate::simulator::PhoneCall) -> Self {
        PhoneCallBody {
            call_id: c.call_id,
            from: c.from,
            to: c.to,
            rejected_by_device: c.rejected_by_device,
        }
    }
}

/// `POST /api/simulator/sessions/{id}/phone-messages`.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(as = SimulatorAccountSendRequest)]
pub struct AccountSendRequest {
    /// The number the account writes to.
    #[schema(example = "628111111111")]
    to: String,
    /// 1–4096 characters.
    #[schema(example = "Your order left the shop")]
    text: String,
}

/// The account writes from its own phone
///
/// Role: operator. Simulator builds only. The owner of the session's
/// account writes `text` to `to` on the phone itself; the session's device
/// gets the phone's copy, as WhatsApp's linked devices do (a
/// `message.sent` event, `fromMe: true`).
#[utoipa::path(post, path = "/api/simulator/sessions/{id}/phone-messages", tag = "simulator", operation_id = "simulatorAccountSend",
    params(SessionPath),
    request_body = AccountSendRequest,
    responses(
        (status = 201, description = "Sent", body = PhoneSentBody),
    )
)]
pub async fn account_send(
    state: Data,
    Auth(caller): Auth,
    id: web::Path<String>,
    Body(req): Body<AccountSendRequest>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Role::Operator)?;
    let sim = simulator(&state)?;
    valid_text(&req.text)?;
    let to = super::sessions::phone_digits("to", &req.to)?;
    let account = account_phone(&state, caller, &id).await?;
    let id = sim.send_from_account(&account, &to, &req.text)?;
    Ok(HttpResponse::Created().json(PhoneSentBody { message_id: id }))
}

fn valid_text(text: &str) -> Result<(), ApiError> {
    let n = text.chars().count();
    if n == 0 || n > wasup_actors::outbound::MAX_TEXT_CHARS {
        return Err(ApiError::validation(
            "Field 'text' must be 1–4096 characters",
        ));
    }
    Ok(())
}

/// A virtual phone calls a session
///
/// Role: operator. Simulator builds only. Every connected device of the
/// session's account gets an audio call offer; nobody can pick it up here,
/// but a device may decline it (`autoRejectCalls`), which
/// `GET …/calls` shows.
#[utoipa::path(post, path = "/api/simulator/phones/{phone}/calls", tag = "simulator", operation_id = "simulatorPhoneCall",
    params(("phone" = String, Path, description = "The calling phone's number: 6–15 digits")),
    request_body = PhoneCallRequest,
    responses(
        (status = 201, description = "Ringing", body = PhoneCallBody),
    )
)]
pub async fn phone_call(
    state: Data,
    Auth(caller): Auth,
    phone: web::Path<String>,
    Body(req): Body<PhoneCallRequest>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Role::Operator)?;
    let sim = simulator(&state)?;
    let phone = super::sessions::phone_digits("phone", &phone)?;
    let to = account_phone(&state, caller, &req.to).await?;
    let call_id = sim.call(&phone, &to)?;
    Ok(HttpResponse::Created().json(PhoneCallBody {
        call_id,
        from: phone,
        to,
        rejected_by_device: None,
    }))
}

/// The calls a virtual phone placed
///
/// Any role. Simulator builds only. Ordered by call id.
#[utoipa::path(get, path = "/api/simulator/phones/{phone}/calls", tag = "simulator", operation_id = "simulatorPhoneCalls",
    params(("phone" = String, Path, description = "The calling phone's number: 6–15 digits")),
    responses(
        (status = 200, description = "Its calls", body = Vec<PhoneCallBody>),
    )
)]
pub async fn phone_calls(
    state: Data,
    Auth(_caller): Auth,
    phone: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let sim = simulator(&state)?;
    let phone = super::sessions::phone_digits("phone", &phone)?;
    let calls: Vec<PhoneCallBody> = sim.calls(&phone).into_iter().map(Into::into).collect();
    Ok(HttpResponse::Ok().json(calls))
}

/// A virtual phone sends a text to a session
///
/// Role: operator. Simulator builds only. The phone (created on first use)
/// writes to every device of the session's account; a device that is not
/// connected gets it at its next login.
#[utoipa::path(post, path = "/api/simulator/phones/{phone}/messages", tag = "simulator", operation_id = "simulatorPhoneSend",
    params(("phone" = String, Path, description = "The sending phone's number: 6–15 digits")),
    request_body = PhoneSendRequest,
    responses(
        (status = 201, description = "Sent", body = PhoneSentBody),
    )
)]
pub async fn phone_send(
    state: Data,
    Auth(caller): Auth,
    phone: web::Path<String>,
    Body(req): Body<PhoneSendRequest>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Role::Operator)?;
    let sim = simulator(&state)?;
    let phone = super::sessions::phone_digits("phone", &phone)?;
    valid_text(&req.text)?;
    let to = account_phone(&state, caller, &req.to).await?;
    let id = sim.send_reply(&phone, &to, &req.text, req.quoted_message_id.as_deref())?;
    Ok(HttpResponse::Created().json(PhoneSentBody { message_id: id }))
}

/// What a virtual phone received
///
/// Any role. Simulator builds only. Messages linked sessions sent to the
/// phone, decrypted, oldest first, one per message id. The header
/// `X-Simulator-Duplicates` counts deliveries of an id the phone already had.
#[utoipa::path(get, path = "/api/simulator/phones/{phone}/messages", tag = "simulator", operation_id = "simulatorPhoneMessages",
    params(("phone" = String, Path, description = "The virtual phone's number: 6–15 digits")),
    responses(
        (status = 200, description = "The messages", body = Vec<PhoneMessageBody>,
            headers(("X-Simulator-Duplicates" = u64, description = "Repeated deliveries of one id"))),
    )
)]
pub async fn phone_messages(
    state: Data,
    Auth(_caller): Auth,
    phone: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let sim = simulator(&state)?;
    let phone = super::sessions::phone_digits("phone", &phone)?;
    let list: Vec<PhoneMessageBody> = sim
        .phone_messages(&phone)
        .into_iter()
        .map(|m| PhoneMessageBody {
            id: m.id,
            from: m.from,
            from_device: m.from_device,
            to: m.to,
            text: m.text,
            mentions: m.mentions,
            quoted_id: m.quoted_id,
            quoted_author: m.quoted_author,
            quoted_text: m.quoted_text,
            received_at_ms: m.received_at_ms,
            read: m.read,
        })
        .collect();
    Ok(HttpResponse::Ok()
        .insert_header((
            "X-Simulator-Duplicates",
            sim.duplicate_deliveries(&phone).to_string(),
        ))
        .json(list))
}

/// A virtual phone reads its messages
///
/// Role: operator. Simulator builds only. Sends a read receipt for each
/// message newly read to the device that sent it.
#[utoipa::path(post, path = "/api/simulator/phones/{phone}/read", tag = "simulator", operation_id = "simulatorPhoneRead",
    params(("phone" = String, Path, description = "The virtual phone's number: 6–15 digits")),
    request_body = ReadRequest,
    responses(
        (status = 200, description = "Read", body = ReadBody),
    )
)]
pub async fn phone_read(
    state: Data,
    Auth(caller): Auth,
    phone: web::Path<String>,
    Body(req): Body<ReadRequest>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Role::Operator)?;
    let sim = simulator(&state)?;
    let phone = super::sessions::phone_digits("phone", &phone)?;
    let read = sim.read(&phone, req.ids)?;
    Ok(HttpResponse::Ok().json(ReadBody { read }))
}

/// Put a number on or off WhatsApp
///
/// Role: operator. Simulator builds only.
#[utoipa::path(post, path = "/api/simulator/phones/{phone}/registered", tag = "simulator", operation_id = "simulatorPhoneRegistered",
    params(("phone" = String, Path, description = "The number: 6–15 digits")),
    request_body = RegisteredRequest,
    responses(
        (status = 200, description = "Done", body = RegisteredBody),
    )
)]
pub async fn phone_registered(
    state: Data,
    Auth(caller): Auth,
    phone: web::Path<String>,
    Body(req): Body<RegisteredRequest>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Role::Operator)?;
    let sim = simulator(&state)?;
    let phone = super::sessions::phone_digits("phone", &phone)?;
    sim.set_registered(&phone, req.registered)?;
    Ok(HttpResponse::Ok().json(RegisteredBody {
        phone,
        registered: req.registered,
    }))
}
