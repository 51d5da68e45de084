//! whatsapp-rust adapter behind the Engine port.
//!
//! One `WaEngine` per process owns a tokio multi-thread runtime (2 workers)
//! on which every client is built and run, a `Db` holding the device state of
//! every session (`store`), and the `SecretBox` that seals it.
//!
//! Per started session:
//! - a **fresh client** is built (never reconnected after a disconnect: #1264);
//! - the client's auto-reconnect is **off** once the device is linked, so the
//!   supervisor owns the restart policy. While the device is not linked yet it
//!   stays on until the first `Connected`, because the stream error 515 that
//!   follows `PairSuccess` is only followed by the re-login when auto-reconnect
//!   is on (`Client::run`: "Auto-reconnect disabled, shutting down" comes
//!   before the "expected disconnect, reconnecting immediately" branch);
//! - events are forwarded in order by a synchronous `EventHandler`;
//! - a monitor task enforces `connect_timeout` (a connect that fails emits no
//!   event upstream), turns the end of the run loop (or a panic) into a
//!   terminal event, and tears the client down after any terminal event.
//!
//! Exactly one terminal event is sent per start, nothing after it, and
//! nothing at all after `stop`/`abort`/`logout`.

mod messaging;
pub mod proxy;
pub mod proxy_guard;
pub mod store;
pub mod websocket;

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use parking_lot::Mutex;
use tokio::sync::{oneshot, Notify};
use tokio::time::Instant;
use wasup_actors::ports::{
    Engine, EngineError, EngineEvent, EngineEventSink, EngineHandle, EngineSpec, InboundMsg,
    Messenger,
};

use whatsapp_rust::bot::Bot;
use whatsapp_rust::http::{HttpClient, HttpRequest, HttpResponse, UreqHttpClient};
use whatsapp_rust::transport::{
    default_tls_connector, Transport, TransportEvent, TransportFactory,
};
use whatsapp_rust::types::events::{Event, EventHandler, EventInterest, EventKind};
use whatsapp_rust::wacore;
use whatsapp_rust::{Client, TokioRuntime};

use crate::crypto::SecretBox;
use crate::db::Db;
pub use store::{forget_session, DeviceDb};

/// One-time prekeys generated and uploaded per batch. The client's default is
/// WA Web's 812; whatsmeow runs production fleets with 50, and the server asks
/// for more when it runs low. Fewer keys mean a faster first login (key
/// generation dominates its CPU), fewer rows per session, and a smaller upload.
pub const PRE_KEY_COUNT: usize = 50;

/// Chats with a live receive lane per client. whatsapp-rust gives every chat
/// that sends a message its own worker task (about 10 KiB, measured with a
/// jemalloc size-class dump: one 8,832-byte task per lane) and keeps it until
/// the connection ends, up to 5,000 chats: a session that hears from many
/// chats would grow by 10 KiB per chat for as long as it stays connected.
/// Past this bound the oldest idle lane is dropped (its worker ends) and
/// rebuilt if that chat writes again; a lane with a message in flight is
/// never dropped, so each chat's order holds.
pub const CHAT_LANES: u64 = 8;

/// WhatsApp Web version used when talking to the simulator without a pinned
/// version (no HTTPS fetch then): the default of wacore 0.7.0's `Device`.
#[cfg(any(test, feature = "simulator"))]
pub const SIMULATOR_WA_VERSION: (u32, u32, u32) = (2, 3000, 1042742319);

/// Extra time after `PairSuccess` for the 515 re-login and the first sync.
const POST_PAIR_GRACE: Duration = Duration::from_secs(15);
/// How often a connected client is checked for a silently lost login.
const WATCH_INTERVAL: Duration = Duration::from_secs(5);
/// Upper bound for a clean close before the run loop is aborted.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

/// Where clients connect.
#[derive(Clone, Default)]
pub enum TransportChoice {
    /// The real WhatsApp Web websocket (wss://web.whatsapp.com/ws/chat).
    #[default]
    WhatsApp,
    /// An in-process transport (the simulator's `TransportFactory`; tests).
    #[cfg(any(test, feature = "simulator"))]
    Factory(Arc<dyn TransportFactory>),
    /// A websocket URL, e.g. `ws://127.0.0.1:PORT/ws/chat` (the simulator process).
    #[cfg(feature = "simulator")]
    Url(String),
}

impl std::fmt::Debug for TransportChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TransportChoice::WhatsApp => f.write_str("WhatsApp"),
            #[cfg(any(test, feature = "simulator"))]
            TransportChoice::Factory(_) => f.write_str("Factory(..)"),
            #[cfg(feature = "simulator")]
            TransportChoice::Url(u) => write!(f, "Url({u})"),
        }
    }
}

#[derive(Clone, Debug)]
pub struct EngineOptions {
    /// Pin the WhatsApp Web version (WASUP_WA_VERSION); `None` fetches the
    /// current one over HTTPS (every 24 h per device).
    pub wa_version: Option<(u32, u32, u32)>,
    /// How long a start may take to log in (or to show a QR) before it ends
    /// with `ConnectFailed` (WASUP_CONNECT_TIMEOUT).
    pub connect_timeout: Duration,
    pub transport: TransportChoice,
    /// The address policy of session proxies (`WASUP_PROXY_ALLOW_PRIVATE`).
    pub proxy_policy: proxy_guard::ProxyAddressPolicy,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            wa_version: None,
            connect_timeout: Duration::from_secs(30),
            transport: TransportChoice::WhatsApp,
            proxy_policy: proxy_guard::ProxyAddressPolicy {
                allow_private: false,
            },
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EngineSetupError {
    #[error("could not start the engine runtime: {0}")]
    Runtime(#[from] std::io::Error),
}

/// The whatsapp-rust engine. Cheap to share behind an `Arc`.
pub struct WaEngine {
    rt: Option<tokio::runtime::Runtime>,
    handle: tokio::runtime::Handle,
    db: Db,
    secrets: Arc<SecretBox>,
    options: EngineOptions,
    /// Shared by every client: one TLS configuration and one HTTP pool per
    /// process instead of one per session (memory).
    transport: Arc<dyn TransportFactory>,
    transport_target: String,
    /// The websocket URL dialled (None for an in-process transport), for
    /// sessions that go through a proxy.
    ws_url: Option<String>,
    http: UreqHttpClient,
    /// Live clients for the outbound queue, and where inbound messages go.
    messaging: Arc<messaging::Messaging>,
}

impl Drop for WaEngine {
    fn drop(&mut self) {
        // Never block (we may be dropped inside another runtime).
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

impl WaEngine {
    pub fn new(
        db: Db,
        secrets: Arc<SecretBox>,
        options: EngineOptions,
    ) -> Result<WaEngine, EngineSetupError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("wasup-engine")
            .enable_all()
            .build()?;
        let handle = rt.handle().clone();
        let (transport, transport_target): (Arc<dyn TransportFactory>, String) =
            match &options.transport {
                TransportChoice::WhatsApp => (
                    Arc::new(websocket::WebSocketTransportFactory::new(
                        wacore::net::WHATSAPP_WEB_WS_URL,
                        default_tls_connector(),
                    )),
                    "WhatsApp (wss://web.whatsapp.com)".to_string(),
                ),
                #[cfg(any(test, feature = "simulator"))]
                TransportChoice::Factory(f) => (f.clone(), "the in-process transport".to_string()),
                #[cfg(feature = "simulator")]
                TransportChoice::Url(url) => (
                    Arc::new(websocket::WebSocketTransportFactory::new(
                        url.clone(),
                        default_tls_connector(),
                    )),
                    url.clone(),
                ),
            };
        let ws_url = match &options.transport {
            TransportChoice::WhatsApp => Some(wacore::net::WHATSAPP_WEB_WS_URL.to_string()),
            #[cfg(any(test, feature = "simulator"))]
            TransportChoice::Factory(_) => None,
            #[cfg(feature = "simulator")]
            TransportChoice::Url(url) => Some(url.clone()),
        };
        Ok(WaEngine {
            messaging: messaging::Messaging::new(handle.clone()),
            ws_url,
            rt: Some(rt),
            handle,
            db,
            secrets,
            options,
            transport,
            transport_target,
            http: UreqHttpClient::new(),
        })
    }

    /// `Engine::start` with the concrete handle.
    pub fn start_typed(
        &self,
        spec: EngineSpec,
        sink: EngineEventSink,
    ) -> BoxFuture<'static, Result<WaEngineHandle, EngineError>> {
        // A session with a proxy dials through its own tunnel.
        let (transport, transport_target) = match (&spec.proxy, &self.ws_url) {
            (None, _) => (self.transport.clone(), self.transport_target.clone()),
            (Some(proxy), Some(url)) => {
                match proxy::ProxyTransportFactory::new(proxy, url, self.options.proxy_policy) {
                    Ok(f) => (
                        Arc::new(f) as Arc<dyn TransportFactory>,
                        format!(
                            "{} through the {} proxy",
                            self.transport_target,
                            proxy.kind.as_str()
                        ),
                    ),
                    Err(e) => {
                        return futures::future::ready(Err(EngineError::Failed(format!(
                            "proxy settings are unusable: {e}"
                        ))))
                        .boxed()
                    }
                }
            }
            (Some(_), None) => {
                return futures::future::ready(Err(EngineError::Failed(
                    "a proxy does not apply to the in-process simulator transport".to_string(),
                )))
                .boxed()
            }
        };
        let ctx = StartCtx {
            store: self.device_store(&spec.session_id.to_string()),
            options: self.options.clone(),
            push_name: spec.push_name.filter(|n| !n.trim().is_empty()),
            sink,
            rt: self.handle.clone(),
            transport,
            transport_target,
            http: self.http.clone(),
            messaging: self.messaging.clone(),
        };
        let started = on_runtime(&self.handle, start_session(ctx));
        async move {
            match started.await {
                Ok(result) => result,
                Err(panic) => Err(EngineError::Failed(format!(
                    "engine start crashed: {panic}"
                ))),
            }
        }
        .boxed()
    }

    /// The device store of one session (e.g. for tools and tests).
    pub fn device_store(&self, session_id: &str) -> DeviceDb {
        DeviceDb::new(self.db.clone(), self.secrets.clone(), session_id)
    }
}

/// Why a task on the engine runtime gave no value.
#[derive(Debug, thiserror::Error)]
enum TaskError {
    /// The task panicked; the text is `panic_message`'s.
    #[error("{0}")]
    Panicked(String),
    /// The runtime dropped or cancelled the task.
    #[error(transparent)]
    Lost(#[from] tokio::task::JoinError),
}

/// Run `fut` on the engine runtime and await it from any executor.
fn on_runtime<T: Send + 'static>(
    handle: &tokio::runtime::Handle,
    fut: impl Future<Output = T> + Send + 'static,
) -> impl Future<Output = Result<T, TaskError>> + Send + 'static {
    let task = handle.spawn(AssertUnwindSafe(fut).catch_unwind());
    async move {
        match task.await? {
            Ok(v) => Ok(v),
            Err(panic) => Err(TaskError::Panicked(panic_message(&*panic))),
        }
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        format!("panic: {s}")
    } else if let Some(s) = panic.downcast_ref::<String>() {
        format!("panic: {s}")
    } else {
        "panic".to_string()
    }
}

impl Engine for WaEngine {
    fn start(
        &self,
        spec: EngineSpec,
        sink: EngineEventSink,
    ) -> BoxFuture<'static, Result<Box<dyn EngineHandle>, EngineError>> {
        self.start_typed(spec, sink)
            .map(|r| r.map(|h| Box::new(h) as Box<dyn EngineHandle>))
            .boxed()
    }

    fn forget(
        &self,
        session_id: wasup_actors::model::SessionId,
    ) -> BoxFuture<'static, Result<(), EngineError>> {
        self.messaging.forget(session_id);
        let db = self.db.clone();
        let sid = session_id.to_string();
        async move {
            forget_session(&db, &sid).await.map(|_| ()).map_err(|e| {
                EngineError::Failed(format!("could not wipe the device credentials: {e}"))
            })
        }
        .boxed()
    }

    fn messenger(&self, session_id: wasup_actors::model::SessionId) -> Option<Arc<dyn Messenger>> {
        self.messaging.messenger(session_id)
    }

    fn attach_inbound(&self, sink: actix::Recipient<InboundMsg>) {
        self.messaging.attach(sink);
    }
}

// ------------------------------------------------------------------ one session

struct StartCtx {
    store: DeviceDb,
    options: EngineOptions,
    push_name: Option<String>,
    sink: EngineEventSink,
    rt: tokio::runtime::Handle,
    transport: Arc<dyn TransportFactory>,
    transport_target: String,
    http: UreqHttpClient,
    messaging: Arc<messaging::Messaging>,
}

/// What the monitor and the event handler share about one started client.
struct Shared {
    sink: EngineEventSink,
    /// True once a terminal event was sent or the owner stopped the engine:
    /// nothing may be emitted after. Held while emitting, so no event can
    /// slip in behind a terminal one.
    closed: Mutex<bool>,
    progress: Mutex<Progress>,
    client: OnceLock<Weak<Client>>,
    /// Wakes the monitor when the handler sent a terminal event, progress
    /// changed or a command came.
    wake: Notify,
    /// Stop and logout requests for the monitor, in order; `None` once the
    /// monitor ended (a request then finds no one to answer it). A slot and
    /// `wake` rather than a channel: a tokio channel takes about 1.1 KiB per
    /// session, idle or not.
    commands: Mutex<Option<Vec<Command>>>,
    /// The last connect error seen by the transport and version fetch.
    transport_error: Mutex<Option<String>>,
    version_error: Mutex<Option<String>>,
}

#[derive(Default, Clone, Copy)]
struct Progress {
    qr_shown: bool,
    paired: bool,
    connected: bool,
}

impl Shared {
    fn new(sink: EngineEventSink) -> Shared {
        Shared {
            sink,
            closed: Mutex::new(false),
            progress: Mutex::new(Progress::default()),
            client: OnceLock::new(),
            wake: Notify::new(),
            commands: Mutex::new(Some(Vec::new())),
            transport_error: Mutex::new(None),
            version_error: Mutex::new(None),
        }
    }

    /// Send `event` unless the engine is closed; a terminal event closes it.
    fn emit(&self, event: EngineEvent) -> bool {
        let mut closed = self.closed.lock();
        if *closed {
            return false;
        }
        if event.is_terminal() {
            *closed = true;
        }
        self.sink.emit(event);
        true
    }

    /// Close without sending anything (stop, abort, logout).
    fn silence(&self) {
        *self.closed.lock() = true;
    }

    fn is_closed(&self) -> bool {
        *self.closed.lock()
    }

    fn client(&self) -> Option<Arc<Client>> {
        self.client.get().and_then(Weak::upgrade)
    }

    /// Hand `command` to the monitor; false when the monitor has ended.
    fn command(&self, command: Command) -> bool {
        match self.commands.lock().as_mut() {
            Some(waiting) => waiting.push(command),
            None => return false,
        }
        self.wake.notify_one();
        true
    }

    fn next_command(&self) -> Option<Command> {
        let mut commands = self.commands.lock();
        let waiting = commands.as_mut()?;
        (!waiting.is_empty()).then(|| waiting.remove(0))
    }

    fn terminal(&self, event: EngineEvent) {
        if self.emit(event) {
            self.wake.notify_one();
        }
    }

    /// Why the connection never came up, in words a person can act on.
    /// `ended`: the run loop gave up by itself (rather than the deadline passing).
    fn connect_failure_reason(&self, timeout: Duration, ended: bool) -> String {
        let causes: Vec<String> = [
            self.version_error.lock().clone(),
            self.transport_error.lock().clone(),
        ]
        .into_iter()
        .flatten()
        .collect();
        if !causes.is_empty() {
            return format!("could not reach WhatsApp: {}", causes.join("; "));
        }
        let connected = self.client().is_some_and(|c| c.is_connected());
        if ended {
            "could not connect to WhatsApp: the connection closed during the handshake or login"
                .to_string()
        } else if connected {
            format!(
                "connected to WhatsApp but the login did not complete within {}s",
                timeout.as_secs()
            )
        } else {
            format!(
                "could not connect to WhatsApp within {}s (handshake failed or no answer)",
                timeout.as_secs()
            )
        }
    }
}

/// Forwards client events, in order, on the dispatching thread.
struct Forwarder {
    shared: Arc<Shared>,
    messaging: Arc<messaging::Messaging>,
}

impl EventHandler for Forwarder {
    fn handle_event(&self, event: Arc<Event>) {
        // A bug here must not unwind into the client's read loop.
        if let Err(panic) = std::panic::catch_unwind(AssertUnwindSafe(|| self.forward(&event))) {
            log::error!(
                "session {}: event handler panicked: {}",
                self.shared.sink.session_id,
                panic_message(&*panic)
            );
            self.shared.terminal(EngineEvent::Crashed {
                cause: format!("event handler {}", panic_message(&*panic)),
            });
        }
    }

    fn interest(&self) -> EventInterest {
        EventInterest::of(&[
            EventKind::PairingQrCode,
            EventKind::PairingQrCodesExhausted,
            EventKind::PairSuccess,
            EventKind::PairError,
            EventKind::Connected,
            EventKind::Disconnected,
            EventKind::LoggedOut,
            EventKind::StreamReplaced,
            EventKind::TemporaryBan,
            EventKind::ClientOutdated,
            EventKind::ConnectFailure,
            // Messaging (`messaging.rs`).
            EventKind::Messages,
            EventKind::Receipt,
            EventKind::IncomingCall,
            EventKind::ServerAck,
        ])
    }
}

fn non_empty(s: &str) -> Option<String> {
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_string())
}

impl Forwarder {
    fn forward(&self, event: &Event) {
        let shared = &self.shared;
        match event {
            Event::PairingQrCode(qr) => {
                shared.progress.lock().qr_shown = true;
                shared.emit(EngineEvent::Qr {
                    code: qr.code.clone(),
                    timeout: qr.timeout,
                });
            }
            Event::PairingQrCodesExhausted(_) => shared.terminal(EngineEvent::QrExhausted),
            Event::PairSuccess(ps) => {
                // The 515 that follows must reconnect (see the module doc).
                if let Some(client) = shared.client() {
                    client
                        .enable_auto_reconnect
                        .store(true, std::sync::atomic::Ordering::SeqCst);
                }
                shared.progress.lock().paired = true;
                shared.emit(EngineEvent::PairSuccess {
                    phone: ps.id.user.to_string(),
                    push_name: non_empty(&ps.business_name),
                });
                shared.wake.notify_one();
            }
            Event::PairError(e) => {
                log::warn!(
                    "session {}: pairing failed: {}",
                    shared.sink.session_id,
                    e.error
                );
            }
            Event::Connected(_) => {
                let (phone, push_name) = match shared.client() {
                    Some(client) => {
                        // From now on the supervisor owns reconnects.
                        client
                            .enable_auto_reconnect
                            .store(false, std::sync::atomic::Ordering::SeqCst);
                        (
                            client.pn().map(|j| j.user.to_string()).unwrap_or_default(),
                            non_empty(&client.push_name()),
                        )
                    }
                    None => (String::new(), None),
                };
                shared.progress.lock().connected = true;
                shared.emit(EngineEvent::Connected { phone, push_name });
                shared.wake.notify_one();
            }
            Event::Disconnected(d) => shared.terminal(EngineEvent::Disconnected {
                reason: format!("connection to WhatsApp lost: {}", d.reason),
            }),
            Event::LoggedOut(l) => shared.terminal(EngineEvent::LoggedOut {
                reason: format!(
                    "logged out by WhatsApp ({:?}, code {}{})",
                    l.reason,
                    l.reason.code(),
                    if l.on_connect { ", at login" } else { "" }
                ),
            }),
            Event::StreamReplaced(_) => shared.terminal(EngineEvent::Replaced),
            Event::TemporaryBan(b) => shared.terminal(EngineEvent::TemporaryBan {
                code: b.code.code(),
                expires_in: b.expire.to_std().unwrap_or(Duration::ZERO),
            }),
            Event::ClientOutdated(_) => shared.terminal(EngineEvent::Outdated),
            Event::ConnectFailure(f) => {
                let detail = match &f.message {
                    Some(m) => format!("{:?} (code {}): {m}", f.reason, f.reason.code()),
                    None => format!("{:?} (code {})", f.reason, f.reason.code()),
                };
                let connected = shared.progress.lock().connected;
                shared.terminal(if connected {
                    EngineEvent::Disconnected {
                        reason: format!("WhatsApp refused the connection: {detail}"),
                    }
                } else {
                    EngineEvent::ConnectFailed {
                        reason: format!("WhatsApp refused the login: {detail}"),
                    }
                });
            }
            Event::Messages(_)
            | Event::Receipt(_)
            | Event::ServerAck(_)
            | Event::IncomingCall(_) => self.messaging.forward(shared.sink.session_id, event),
            _ => {}
        }
    }
}

/// Wraps the transport factory to keep the cause of a failed connect (the
/// client only logs it).
struct RecordingTransport {
    inner: Arc<dyn TransportFactory>,
    shared: Arc<Shared>,
    target: String,
}

#[async_trait::async_trait]
impl TransportFactory for RecordingTransport {
    async fn create_transport(
        &self,
    ) -> Result<
        (
            Arc<dyn Transport>,
            async_channel_rx::Receiver<TransportEvent>,
        ),
        anyhow_err::Error,
    > {
        let result = self.inner.create_transport().await;
        *self.shared.transport_error.lock() = match &result {
            Ok(_) => None,
            Err(e) => Some(format!("connection to {} failed: {e:#}", self.target)),
        };
        result
    }
}

mod async_channel_rx {
    pub use whatsapp_rust::async_channel::Receiver;
}
mod anyhow_err {
    pub use whatsapp_rust::anyhow::Error;
}

/// Wraps the HTTP client to keep the cause of a failed version fetch.
struct RecordingHttp {
    inner: UreqHttpClient,
    shared: Arc<Shared>,
}

#[async_trait::async_trait]
impl HttpClient for RecordingHttp {
    async fn execute(&self, request: HttpRequest) -> Result<HttpResponse, anyhow_err::Error> {
        let is_version_check = request.url.contains("web.whatsapp.com");
        let url = request.url.clone();
        let result = self.inner.execute(request).await;
        if is_version_check {
            *self.shared.version_error.lock() = match &result {
                Ok(r) if (200..300).contains(&r.status_code) => None,
                Ok(r) => Some(format!(
                    "version check at {} answered HTTP {} (pin WASUP_WA_VERSION to skip it)",
                    host_of(&url),
                    r.status_code
                )),
                Err(e) => Some(format!(
                    "version check over HTTPS to {} failed: {e:#} (pin WASUP_WA_VERSION to skip it)",
                    host_of(&url)
                )),
            };
        }
        result
    }

    fn supports_streaming(&self) -> bool {
        self.inner.supports_streaming()
    }

    fn execute_streaming(
        &self,
        request: HttpRequest,
    ) -> Result<wacore::net::StreamingHttpResponse, anyhow_err::Error> {
        self.inner.execute_streaming(request)
    }

    fn supports_upload_streaming(&self) -> bool {
        self.inner.supports_upload_streaming()
    }

    fn execute_upload(
        &self,
        request: HttpRequest,
        body: wacore::net::UploadBody,
        content_length: u64,
    ) -> Result<HttpResponse, anyhow_err::Error> {
        self.inner.execute_upload(request, body, content_length)
    }

    fn resource_report(&self) -> Option<wacore::stats::HttpResourceReport> {
        self.inner.resource_report()
    }
}

fn host_of(url: &str) -> &str {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    rest.split(['/', '?']).next().unwrap_or(rest)
}

enum Command {
    Stop(oneshot::Sender<()>),
    Logout(oneshot::Sender<()>),
}

/// The handle the session actor holds.
pub struct WaEngineHandle {
    shared: Arc<Shared>,
    client: Arc<Client>,
    monitor: tokio::task::AbortHandle,
    run: tokio::task::AbortHandle,
    rt: tokio::runtime::Handle,
    connect_timeout: Duration,
}

async fn start_session(ctx: StartCtx) -> Result<WaEngineHandle, EngineError> {
    let StartCtx {
        store,
        options,
        push_name,
        sink,
        rt,
        transport,
        transport_target,
        http,
        messaging,
    } = ctx;
    let shared = Arc::new(Shared::new(sink));

    #[allow(unused_mut)]
    let mut version = options.wa_version;
    #[cfg(any(test, feature = "simulator"))]
    if version.is_none() && !matches!(options.transport, TransportChoice::WhatsApp) {
        version = Some(SIMULATOR_WA_VERSION);
    }

    let mut builder = Bot::builder()
        .with_backend(store)
        .with_transport_factory(RecordingTransport {
            inner: transport,
            shared: shared.clone(),
            target: transport_target,
        })
        .with_http_client(RecordingHttp {
            inner: http,
            shared: shared.clone(),
        })
        .with_runtime(TokioRuntime)
        .with_event_handler(Forwarder {
            shared: shared.clone(),
            messaging: messaging.clone(),
        })
        .with_wanted_pre_key_count(PRE_KEY_COUNT)
        .with_cache_config(whatsapp_rust::CacheConfig {
            chat_lanes_capacity: CHAT_LANES,
            ..Default::default()
        })
        // wasup exposes no chat history: acknowledge the phone's history
        // uploads without downloading them (each can be many MB per link).
        .skip_history_sync();
    if let Some(v) = version {
        builder = builder.with_version(v);
    }
    if let Some(name) = push_name {
        builder = builder.with_push_name(name);
    }
    let bot = builder
        .build()
        .await
        .map_err(|e| EngineError::Failed(format!("could not set up the WhatsApp client: {e:#}")))?;
    let client = bot.client();
    let _ = shared.client.set(Arc::downgrade(&client));
    messaging.register(shared.sink.session_id, &client);
    // A linked device never reconnects by itself; a new one must survive the
    // 515 after pairing (the handler turns it off at Connected).
    let linked = client.pn().is_some();
    client
        .enable_auto_reconnect
        .store(!linked, std::sync::atomic::Ordering::SeqCst);

    let run = tokio::spawn(AssertUnwindSafe(bot.run()).catch_unwind());
    let run_abort = run.abort_handle();
    let monitor = tokio::spawn(monitor(
        shared.clone(),
        client.clone(),
        run,
        options.connect_timeout,
    ));
    Ok(WaEngineHandle {
        shared,
        client,
        monitor: monitor.abort_handle(),
        run: run_abort,
        rt,
        connect_timeout: options.connect_timeout,
    })
}

type RunTask = tokio::task::JoinHandle<Result<(), Box<dyn std::any::Any + Send>>>;

/// Close the client cleanly and wait for its run loop, aborting it if that hangs.
///
/// Boxed: the client's logout and disconnect futures are large, and an
/// unboxed close would make every session's monitor task that large for
/// its whole life, though it closes once.
fn close<'a>(client: &'a Arc<Client>, run: &'a mut RunTask, logout: bool) -> BoxFuture<'a, ()> {
    Box::pin(async move {
        let graceful = async {
            if logout && client.is_connected() {
                client.logout().await;
            } else {
                client.disconnect().await;
            }
            let _ = (&mut *run).await;
        };
        if tokio::time::timeout(CLOSE_TIMEOUT, graceful).await.is_err() {
            log::warn!("WhatsApp client did not close within {CLOSE_TIMEOUT:?}; aborting it");
            run.abort();
        }
    })
}

async fn monitor(
    shared: Arc<Shared>,
    client: Arc<Client>,
    mut run: RunTask,
    connect_timeout: Duration,
) {
    /// However the monitor ends (aborted too), commands waiting are dropped
    /// (their callers hear it) and later ones are refused.
    struct EndCommands(Arc<Shared>);
    impl Drop for EndCommands {
        fn drop(&mut self) {
            self.0.commands.lock().take();
        }
    }
    let _end_commands = EndCommands(shared.clone());
    let mut deadline = Instant::now() + connect_timeout;
    let mut lost_since: Option<Instant> = None;
    loop {
        tokio::select! {
            ended = &mut run => {
                if !shared.is_closed() {
                    let event = match ended {
                        Ok(Err(panic)) => EngineEvent::Crashed { cause: panic_message(&*panic) },
                        Err(e) if e.is_panic() => EngineEvent::Crashed { cause: "panic".into() },
                        Err(e) => EngineEvent::Crashed { cause: e.to_string() },
                        Ok(Ok(())) => {
                            if shared.progress.lock().connected {
                                EngineEvent::Disconnected {
                                    reason: "connection to WhatsApp closed".into(),
                                }
                            } else {
                                EngineEvent::ConnectFailed {
                                    reason: shared.connect_failure_reason(connect_timeout, true),
                                }
                            }
                        }
                    };
                    shared.emit(event);
                }
                // Make sure the client's own tasks stop too (boxed, as `close`).
                let _ = tokio::time::timeout(CLOSE_TIMEOUT, Box::pin(client.disconnect())).await;
                return;
            }
            _ = shared.wake.notified() => {
                if let Some(command) = shared.next_command() {
                    let (logout, reply) = match command {
                        Command::Stop(reply) => (false, reply),
                        Command::Logout(reply) => (true, reply),
                    };
                    shared.silence();
                    close(&client, &mut run, logout).await;
                    let _ = reply.send(());
                    return;
                }
                if shared.is_closed() {
                    // The handler sent a terminal event: tear the client down.
                    close(&client, &mut run, false).await;
                    return;
                }
                let p = *shared.progress.lock();
                if p.paired && !p.connected {
                    deadline = Instant::now() + connect_timeout + POST_PAIR_GRACE;
                }
                if p.connected {
                    deadline = Instant::now() + WATCH_INTERVAL;
                }
            }
            _ = tokio::time::sleep_until(deadline) => {
                if shared.is_closed() {
                    close(&client, &mut run, false).await;
                    return;
                }
                let p = *shared.progress.lock();
                let now = Instant::now();
                if p.connected {
                    // Stream errors 503/429 without a close leave the client
                    // logged out on a live socket with no event: watch for it.
                    if client.is_connected() && client.is_logged_in() {
                        lost_since = None;
                    } else {
                        let since = *lost_since.get_or_insert(now);
                        if now.duration_since(since) >= connect_timeout {
                            shared.emit(EngineEvent::Disconnected {
                                reason: "connection to WhatsApp lost (no longer logged in)".into(),
                            });
                            close(&client, &mut run, false).await;
                            return;
                        }
                    }
                    deadline = now + WATCH_INTERVAL;
                } else if p.qr_shown && !p.paired && client.is_connected() {
                    // Waiting for someone to scan: healthy, the QR rotation
                    // ends it (QrExhausted).
                    deadline = now + connect_timeout;
                } else {
                    shared.emit(EngineEvent::ConnectFailed {
                        reason: shared.connect_failure_reason(connect_timeout, false),
                    });
                    close(&client, &mut run, false).await;
                    return;
                }
            }
        }
    }
}

impl WaEngineHandle {
    async fn command(shared: Arc<Shared>, make: impl FnOnce(oneshot::Sender<()>) -> Command) {
        let (tx, rx) = oneshot::channel();
        if shared.command(make(tx)) {
            let _ = rx.await;
        }
    }
}

impl EngineHandle for WaEngineHandle {
    fn stop(&self) -> BoxFuture<'static, ()> {
        self.shared.silence();
        let shared = self.shared.clone();
        // Waits for the monitor (which closes the client); if the monitor
        // already ended, the client is closed already.
        async move { Self::command(shared, Command::Stop).await }.boxed()
    }

    fn abort(&self) {
        self.shared.silence();
        self.monitor.abort();
        self.run.abort();
        let client = self.client.clone();
        self.rt.spawn(async move {
            // Close the socket without waiting for anything else.
            let _ = tokio::time::timeout(Duration::from_secs(2), client.disconnect()).await;
        });
    }

    fn pair_with_code(&self, phone: String) -> BoxFuture<'static, Result<String, EngineError>> {
        let client = self.client.clone();
        let wait = self.connect_timeout;
        let fut = on_runtime(&self.rt, async move {
            let digits: String = phone.chars().filter(|c| c.is_ascii_digit()).collect();
            if digits.len() < 6 {
                return Err(EngineError::Failed(format!(
                    "'{phone}' is not a phone number (digits with country code)"
                )));
            }
            if client.pn().is_some() {
                return Err(EngineError::NotReady(
                    "this session is already linked".into(),
                ));
            }
            client.wait_for_socket(wait).await.map_err(|e| {
                EngineError::NotReady(format!("not connected to WhatsApp yet: {e}"))
            })?;
            client
                .pair_with_code(whatsapp_rust::pair_code::PairCodeOptions {
                    phone_number: digits,
                    ..Default::default()
                })
                .await
                .map_err(|e| EngineError::Failed(format!("pairing code request failed: {e}")))
        });
        async move {
            fut.await.unwrap_or_else(|panic| {
                Err(EngineError::Failed(format!("pairing crashed: {panic}")))
            })
        }
        .boxed()
    }

    fn logout(&self) -> BoxFuture<'static, Result<(), EngineError>> {
        self.shared.silence();
        let shared = self.shared.clone();
        let client = self.client.clone();
        let rt = self.rt.clone();
        async move {
            let (tx, rx) = oneshot::channel();
            if shared.command(Command::Logout(tx)) && rx.await.is_ok() {
                return Ok(());
            }
            // The monitor is gone (the engine already ended): unlink if we still can.
            on_runtime(&rt, async move {
                if client.is_connected() {
                    client.logout().await;
                }
            })
            .await
            .map_err(|e| EngineError::Failed(format!("logout crashed: {e}")))
        }
        .boxed()
    }
}

impl Drop for WaEngineHandle {
    fn drop(&mut self) {
        // A dropped handle must not leave a client running unsupervised.
        if !self.monitor.is_finished() {
            self.shared.silence();
            self.shared.command(Command::Stop(oneshot::channel().0));
        }
    }
}

#[cfg(test)]
mod tests;
