//! `wasup-simulator`: the local WhatsApp simulator as its own process.
//!
//! Serves the chat socket on `ws://127.0.0.1:PORT/ws/chat` and a small JSON
//! control API on loopback:
//!
//! | Route | Body | Answer |
//! |---|---|---|
//! | `GET /health` | | `{"ok":true}` |
//! | `POST /scan` | `{"qr","phone","push_name"}` | the linked device |
//! | `POST /enter-code` | `{"phone","code","push_name"?}` | the linked device |
//! | `GET /phones` | | `["155…", …]` |
//! | `GET /phones/{phone}/devices` | | `[{phone, device, lid, platform, linked_at}]` |
//! | `POST /fault` | `{"phone","device" \| "ref", "kind", "seconds"?, "code"?}` | `{"ok":true}` |
//! | `POST /unban` | `{"phone","device"}` | `{"ok":true}` |
//! | `POST /send-text` | `{"from","to","text"}` | `{"id"}` (a contact writes to every device of `to`) |
//! | `GET /sent` | | messages linked clients sent `[{from_phone, from_device, to, id, enc_count}]` |
//! | `GET /phones/{phone}/inbox` | | what the phone received, decrypted: `{"messages":[{id, from, fromDevice, to, text, receivedAtMs, read}], "duplicates": n}` |
//! | `POST /phones/{phone}/read` | `{"ids"?}` | `{"read": n}` (read receipts to the senders) |
//! | `POST /phones/{phone}/registered` | `{"registered": bool}` | `{"ok":true}` |
//! | `GET /overlaps` | | logins of a device while another connection of it was open: `{total, devices: [{phone, device, overlaps}]}` |
//!
//! Errors are `{"error": "…"}` with a 4xx/5xx status.

use std::net::SocketAddr;

use actix_web::{web, App, HttpResponse, HttpServer};
use clap::Parser;
use serde::Deserialize;
use wasup::simulator::{FaultKind, SimError, Simulator, Target};

#[derive(Parser, Debug)]
#[command(about = "Local WhatsApp simulator for wasup tests, benchmarks and demos")]
struct Args {
    /// Chat websocket address (loopback only).
    #[arg(long, env = "WASUP_SIM_WS", default_value = "127.0.0.1:8761")]
    ws: SocketAddr,
    /// Control API address (loopback only).
    #[arg(long, env = "WASUP_SIM_CONTROL", default_value = "127.0.0.1:8762")]
    control: SocketAddr,
    /// Where accounts and linked devices are kept; in memory when absent.
    #[arg(long, env = "WASUP_SIM_DATA_DIR")]
    data_dir: Option<std::path::PathBuf>,
}

fn err(e: SimError) -> HttpResponse {
    HttpResponse::build(
        actix_web::http::StatusCode::from_u16(e.http_status())
            .unwrap_or(actix_web::http::StatusCode::INTERNAL_SERVER_ERROR),
    )
    .json(serde_json::json!({ "error": e.to_string() }))
}

fn ok() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "ok": true }))
}

#[derive(Deserialize)]
struct ScanReq {
    qr: String,
    phone: String,
    #[serde(default)]
    push_name: String,
}

#[derive(Deserialize)]
struct CodeReq {
    phone: String,
    code: String,
    push_name: Option<String>,
}

#[derive(Deserialize)]
struct FaultReq {
    phone: Option<String>,
    device: Option<u16>,
    r#ref: Option<String>,
    kind: String,
    seconds: Option<u64>,
    code: Option<u32>,
}

#[derive(Deserialize)]
struct DevReq {
    phone: String,
    device: u16,
}

async fn scan(sim: web::Data<Simulator>, req: web::Json<ScanReq>) -> HttpResponse {
    match sim.scan(&req.qr, &req.phone, &req.push_name).await {
        Ok(d) => HttpResponse::Ok().json(d),
        Err(e) => err(e),
    }
}

async fn enter_code(sim: web::Data<Simulator>, req: web::Json<CodeReq>) -> HttpResponse {
    let r = match &req.push_name {
        Some(n) => sim.enter_code_as(&req.phone, &req.code, n).await,
        None => sim.enter_code(&req.phone, &req.code).await,
    };
    match r {
        Ok(d) => HttpResponse::Ok().json(d),
        Err(e) => err(e),
    }
}

async fn phones(sim: web::Data<Simulator>) -> HttpResponse {
    HttpResponse::Ok().json(sim.phones())
}

async fn devices(sim: web::Data<Simulator>, phone: web::Path<String>) -> HttpResponse {
    match sim.phone_devices(&phone) {
        Ok(d) => HttpResponse::Ok().json(d),
        Err(e) => err(e),
    }
}

async fn fault(sim: web::Data<Simulator>, req: web::Json<FaultReq>) -> HttpResponse {
    let kind = match FaultKind::from_parts(&req.kind, req.seconds, req.code) {
        Ok(k) => k,
        Err(e) => return err(e),
    };
    let target = match (&req.phone, req.device, &req.r#ref) {
        (Some(p), Some(d), _) => Target::device(p.clone(), d),
        (_, _, Some(r)) => Target::PairingRef(r.clone()),
        _ => {
            return err(SimError::InvalidFault(
                "give `phone` and `device`, or `ref`".into(),
            ))
        }
    };
    match sim.fault(target, kind) {
        Ok(()) => ok(),
        Err(e) => err(e),
    }
}

#[derive(Deserialize)]
struct TextReq {
    from: String,
    to: String,
    text: String,
}

async fn send_text(sim: web::Data<Simulator>, req: web::Json<TextReq>) -> HttpResponse {
    match sim.send_text(&req.from, &req.to, &req.text) {
        Ok(id) => HttpResponse::Ok().json(serde_json::json!({ "id": id })),
        Err(e) => err(e),
    }
}

async fn sent(sim: web::Data<Simulator>) -> HttpResponse {
    HttpResponse::Ok().json(sim.sent_messages())
}

async fn inbox(sim: web::Data<Simulator>, phone: web::Path<String>) -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({
        "messages": sim.phone_messages(&phone),
        "duplicates": sim.duplicate_deliveries(&phone),
    }))
}

#[derive(Deserialize)]
struct ReadReq {
    ids: Option<Vec<String>>,
}

async fn read(
    sim: web::Data<Simulator>,
    phone: web::Path<String>,
    req: web::Json<ReadReq>,
) -> HttpResponse {
    match sim.read(&phone, req.into_inner().ids) {
        Ok(n) => HttpResponse::Ok().json(serde_json::json!({ "read": n })),
        Err(e) => err(e),
    }
}

#[derive(Deserialize)]
struct RegisteredReq {
    registered: bool,
}

async fn registered(
    sim: web::Data<Simulator>,
    phone: web::Path<String>,
    req: web::Json<RegisteredReq>,
) -> HttpResponse {
    match sim.set_registered(&phone, req.registered) {
        Ok(()) => ok(),
        Err(e) => err(e),
    }
}

async fn overlaps() -> HttpResponse {
    HttpResponse::Ok().json(wasup::simulator::overlap::snapshot())
}

async fn unban(sim: web::Data<Simulator>, req: web::Json<DevReq>) -> HttpResponse {
    match sim.unban(&req.phone, req.device) {
        Ok(()) => ok(),
        Err(e) => err(e),
    }
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    log::warn!(
        "wasup-simulator: this is a local WhatsApp SIMULATOR for tests and demos; it talks only to clients on this machine and never to WhatsApp"
    );
    let args = Args::parse();
    if !args.control.ip().is_loopback() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            "the control API listens on loopback only",
        ));
    }
    let sim = match &args.data_dir {
        Some(dir) => Simulator::open(dir).map_err(std::io::Error::other)?,
        None => Simulator::new(),
    };
    let ws = sim.serve_ws(args.ws).await?;
    log::info!("chat socket: {}", ws.url());
    log::info!("control API: http://{}", args.control);
    let data = web::Data::new(sim);
    HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .app_data(web::JsonConfig::default().limit(64 * 1024))
            .route("/health", web::get().to(|| async { ok() }))
            .route("/scan", web::post().to(scan))
            .route("/enter-code", web::post().to(enter_code))
            .route("/phones", web::get().to(phones))
            .route("/phones/{phone}/devices", web::get().to(devices))
            .route("/fault", web::post().to(fault))
            .route("/unban", web::post().to(unban))
            .route("/send-text", web::post().to(send_text))
            .route("/sent", web::get().to(sent))
            .route("/phones/{phone}/inbox", web::get().to(inbox))
            .route("/phones/{phone}/read", web::post().to(read))
            .route("/phones/{phone}/registered", web::post().to(registered))
            .route("/overlaps", web::get().to(overlaps))
    })
    .workers(1)
    .bind(args.control)?
    .run()
    .await
}
