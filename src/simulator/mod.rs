//! A local WhatsApp server and virtual phones (feature `simulator`).
//!
//! The unmodified whatsapp-rust client links to and logs into it, either
//! in-process ([`Simulator::transport_factory`], no sockets) or over
//! `ws://127.0.0.1:PORT/ws/chat` ([`Simulator::serve_ws`]). The protocol facts
//! it follows are in `shared/notes/simulator.md`.
//!
//! ```ignore
//! let sim = Simulator::new();                 // or Simulator::open(data_dir)?
//! let bot = Bot::builder()
//!     .with_backend(InMemoryBackend::new())
//!     .with_transport_factory(sim.transport_factory())
//!     .with_version((2, 3000, 1_027_000_000)) // pin it: no version fetch
//!     .with_push_name("Alice")
//!     .build().await?;
//! // on Event::PairingQrCode { code, .. }: the phone scans it
//! let dev = sim.scan(&code, "15551234567", "Alice").await?;
//! // or, on Event::PairingCode { code, .. } after client.pair_with_code(..):
//! let dev = sim.enter_code("15551234567", &code).await?;
//! sim.fault(Target::device("15551234567", dev.device), FaultKind::Drop)?;
//! sim.send_text("15559876543", "15551234567", "hello")?;  // inbound message
//! ```
//!
//! Control API (all on [`Simulator`], cheap to clone):
//! - [`Simulator::scan`], [`Simulator::enter_code`] / [`Simulator::enter_code_as`]
//!   return the [`LinkedDevice`] once the client signed the link (its
//!   `PairSuccess`); the client then reconnects and gets `Connected` by itself.
//! - [`Simulator::fault`] with a [`Target`] (linked device, or an unlinked
//!   connection by QR ref) and a [`FaultKind`]; [`Simulator::unban`].
//! - [`Simulator::phone_devices`], [`Simulator::phones`],
//!   [`Simulator::is_connected`].
//! - [`Simulator::send_text`] (a virtual contact writes; queued while the
//!   device is offline) and [`Simulator::sent_messages`] (what clients sent).
//! - [`Simulator::serve_ws`] for out-of-process clients (loopback only); the
//!   `wasup-simulator` binary wraps it with a JSON control API.
//! - [`SimError`] has human messages and [`SimError::http_status`];
//!   [`FaultKind::from_parts`] parses the names a control route uses.
//!
//! Each phone number is an account with its own identity key; each link adds
//! a device (id = ADV key index, 1, 2, …). Accounts, linked devices and the
//! server's static Noise key survive a restart when the simulator was made
//! with [`Simulator::open`]. A new login of a device replaces (kicks) its
//! older connection, like the real server.

mod conn;
mod contacts;
mod inbox;
/// Connections of one device that overlapped in time (cluster tests).
pub mod overlap;
mod phone;
mod state;
mod transport;
mod ws;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};
use wacore::pair_code::PairCodeUtils;
use wacore_binary::builder::NodeBuilder;
use wacore_binary::Node;
use whatsapp_rust::transport::DisconnectReason;

pub use inbox::{PhoneCall, PhoneMessage};
pub use state::STATE_FILE;
pub use transport::{DynTransportFactory, SimTransportFactory};
pub use ws::WsServer;

use phone::{new_keypair, now_secs, pub32, UploadedBundle};
use state::{Account, State};

/// At most this many recorded outbound messages are kept (the oldest half
/// is dropped when full), so long benchmarks do not grow without bound.
pub const SENT_LOG_CAP: usize = 10_000;

/// How long `scan` / `enter_code` wait for the client to finish the link.
const LINK_TIMEOUT: Duration = Duration::from_secs(60);

/// Errors of the simulator's control API.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum SimError {
    #[error("QR code malformed: {0}")]
    QrMalformed(String),
    #[error("QR code expired or unknown")]
    QrExpiredOrUnknown,
    #[error("no pairing code is waiting for phone {0}")]
    NoPendingCode(String),
    #[error("pairing code rejected: {0}")]
    WrongCode(String),
    #[error("no such phone")]
    NoSuchPhone,
    #[error("no such linked device")]
    NoSuchDevice,
    #[error("the device is not connected")]
    NotConnected,
    #[error("the client rejected the link: {0}")]
    LinkRejected(String),
    #[error("the client did not finish linking in time")]
    LinkTimeout,
    #[error("the client connection went away")]
    ConnectionGone,
    #[error("invalid phone number (digits only, 5 to 20 of them)")]
    InvalidPhone,
    #[error("storage: {0}")]
    Storage(String),
    #[error("invalid fault: {0}")]
    InvalidFault(String),
}

impl SimError {
    /// The HTTP status a control API should answer with.
    pub fn http_status(&self) -> u16 {
        match self {
            SimError::QrMalformed(_)
            | SimError::InvalidPhone
            | SimError::InvalidFault(_)
            | SimError::WrongCode(_) => 400,
            SimError::QrExpiredOrUnknown
            | SimError::NoPendingCode(_)
            | SimError::NoSuchPhone
            | SimError::NoSuchDevice => 404,
            SimError::NotConnected | SimError::ConnectionGone | SimError::LinkRejected(_) => 409,
            SimError::LinkTimeout => 504,
            SimError::Storage(_) => 500,
        }
    }
}

/// A device linked to a virtual phone.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LinkedDevice {
    /// The phone number (digits only).
    pub phone: String,
    /// Companion device id (`PHONE:DEVICE@s.whatsapp.net`).
    pub device: u16,
    /// The account's LID user.
    pub lid: String,
    /// Platform reported by the client at registration (e.g. "9").
    pub platform: String,
    /// Unix seconds.
    pub linked_at: i64,
}

impl LinkedDevice {
    /// `PHONE:DEVICE@s.whatsapp.net`
    pub fn jid(&self) -> String {
        format!("{}:{}@s.whatsapp.net", self.phone, self.device)
    }
}

/// What a fault applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A linked device, as the client learnt it from `PairSuccess` (`id`).
    Device { phone: String, device: u16 },
    /// An unlinked connection, by one of the refs of its QR codes (the text
    /// before the first comma of the QR string, or the whole QR string).
    PairingRef(String),
}

impl Target {
    pub fn device(phone: impl Into<String>, device: u16) -> Self {
        Target::Device {
            phone: phone.into(),
            device,
        }
    }

    /// From a JID such as `15551234567:3@s.whatsapp.net`.
    pub fn from_jid(jid: &str) -> Option<Self> {
        let (user, _) = jid.split_once('@')?;
        let (phone, dev) = user.split_once(':')?;
        Some(Target::device(phone, dev.parse().ok()?))
    }
}

/// Injected faults; the comment says which client event each one causes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FaultKind {
    /// Close the transport → `Disconnected`, then the client reconnects.
    Drop,
    /// Close the transport and refuse the device's connections for this long
    /// → `Disconnected`, reconnect attempts fail until the outage ends.
    Outage(Duration),
    /// The phone removes the device → `LoggedOut`; later logins get
    /// `<failure reason=401>` (`LoggedOut { on_connect: true }`).
    Unlink,
    /// Another session took over → `StreamReplaced`.
    Replaced,
    /// Temporary ban → `TemporaryBan { code, expire }`; logins during the
    /// ban get the same failure.
    Ban { code: u32, expire: Duration },
    /// `<failure reason=405>` → `ClientOutdated` (on the live connection,
    /// or at the next login when none is live).
    Outdated,
    /// `<stream:error code=N/>`; the transport is closed for codes the client
    /// does not close itself (503, 429, 500 …).
    StreamError(u16),
}

impl FaultKind {
    /// From the names a control API uses: `drop`, `outage` (`seconds`),
    /// `unlink`, `replaced`, `ban` (`code`, default 101; `seconds`, default
    /// 3600), `outdated`, `stream_error` (`code`).
    pub fn from_parts(
        kind: &str,
        seconds: Option<u64>,
        code: Option<u32>,
    ) -> Result<Self, SimError> {
        let need = |what: &str| SimError::InvalidFault(format!("`{kind}` needs `{what}`"));
        Ok(match kind {
            "drop" => FaultKind::Drop,
            "outage" => {
                FaultKind::Outage(Duration::from_secs(seconds.ok_or_else(|| need("seconds"))?))
            }
            "unlink" => FaultKind::Unlink,
            "replaced" => FaultKind::Replaced,
            "ban" => FaultKind::Ban {
                code: code.unwrap_or(101),
                expire: Duration::from_secs(seconds.unwrap_or(3600)),
            },
            "outdated" => FaultKind::Outdated,
            "stream_error" => {
                let c = code.ok_or_else(|| need("code"))?;
                FaultKind::StreamError(
                    u16::try_from(c)
                        .map_err(|_| SimError::InvalidFault("code out of range".into()))?,
                )
            }
            other => return Err(SimError::InvalidFault(format!("unknown kind `{other}`"))),
        })
    }
}

pub(crate) type DevKey = (String, u16);

/// A pending link: the conn waits for the client's `pair-device-sign`.
pub(crate) struct PendingLink {
    pub iq_id: String,
    pub phone: String,
    pub device: u16,
    pub key_index: u32,
    pub companion_identity: [u8; 32],
    pub noise_pub: [u8; 32],
    pub platform: String,
    pub push_name: String,
    pub reply: oneshot::Sender<Result<LinkedDevice, SimError>>,
}

/// Phone side of a pairing-code link between primary_hello and companion_finish.
pub(crate) struct CodeStage {
    pub phone: String,
    pub push_name: String,
    pub phone_ephemeral: wacore::libsignal::protocol::KeyPair,
    pub companion_ephemeral_pub: [u8; 32],
    pub reply: oneshot::Sender<Result<LinkedDevice, SimError>>,
}

pub(crate) enum ConnCmd {
    /// Send `pair-success` and wait for `pair-device-sign`.
    PairSuccess { node: Node, link: PendingLink },
    /// Send `primary_hello` and wait for `companion_finish`.
    PrimaryHello { node: Node, stage: CodeStage },
    /// Deliver an inbound message from a simulated contact.
    Deliver(QueuedMsg),
    /// Send these stanzas, then optionally close the transport.
    Fault {
        nodes: Vec<Node>,
        close: Option<DisconnectReason>,
    },
}

/// An inbound text waiting for delivery to one device.
#[derive(Clone, Debug)]
pub(crate) struct QueuedMsg {
    pub from: String,
    pub notify: String,
    pub id: String,
    pub t: i64,
    pub text: String,
    /// The message it replies to: (id, author phone, text).
    pub quoted: Option<(String, String, String)>,
    /// Set when the account wrote this from its own phone to that number:
    /// the linked devices get the phone's copy (a `message.sent`).
    pub recipient: Option<String>,
}

/// The device numbers linked to `phone`'s account.
fn account_devices(st: &State, phone: &str) -> Result<Vec<u16>, SimError> {
    let account = st.accounts.get(phone).ok_or(SimError::NoSuchPhone)?;
    Ok(account.rec.devices.keys().copied().collect())
}

impl QueuedMsg {
    /// A plain text from `from` under a fresh id (like WA's "3EB0…").
    fn text(from: &str, notify: String, text: &str) -> QueuedMsg {
        QueuedMsg {
            from: from.to_string(),
            notify,
            id: format!(
                "3EB0{:016X}",
                u64::from_le_bytes(phone::random_bytes::<8>())
            ),
            t: now_secs(),
            text: text.to_string(),
            quoted: None,
            recipient: None,
        }
    }
}

/// A message a linked client sent (recorded, not decrypted).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct SentMessage {
    /// Sender phone and device.
    pub from_phone: String,
    pub from_device: u16,
    /// The `to` of the stanza (a user JID or group).
    pub to: String,
    /// The message id the client chose (what `send_*` returned).
    pub id: String,
    /// Number of per-device `<enc>` payloads it carried.
    pub enc_count: usize,
}

/// A companion's `companion_hello`, waiting for the phone to enter the code.
#[derive(Clone)]
pub(crate) struct CodeReg {
    pub phone: String,
    pub wrapped_companion_ephemeral: Vec<u8>,
    pub pairing_ref: String,
    pub at: Instant,
}

pub(crate) enum ConnKind {
    Unpaired {
        refs: Vec<String>,
        refs_issued: Instant,
        noise_pub: [u8; 32],
        identity_pub: [u8; 32],
        platform: String,
        code: Option<CodeReg>,
    },
    LoggedIn(DevKey),
}

pub(crate) struct ConnEntry {
    pub cmd: mpsc::UnboundedSender<ConnCmd>,
    pub kind: ConnKind,
}

pub(crate) struct Inner {
    pub state: Mutex<State>,
    pub cert_chain: Vec<u8>,
    pub conns: Mutex<HashMap<u64, ConnEntry>>,
    pub next_id: AtomicU64,
    pub bundles: Mutex<HashMap<DevKey, UploadedBundle>>,
    pub key_share_due: Mutex<HashSet<DevKey>>,
    pub outages: Mutex<HashMap<DevKey, Instant>>,
    pub pending_failures: Mutex<HashMap<DevKey, Node>>,
    pub offline: Mutex<HashMap<DevKey, Vec<QueuedMsg>>>,
    pub sent: Mutex<Vec<SentMessage>>,
    pub contacts: Mutex<HashMap<String, contacts::Contact>>,
    pub inbox: Mutex<inbox::Inboxes>,
}

impl Inner {
    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Spends one of `key`'s uploaded one-time prekeys.
    pub fn take_pre_key(&self, key: &DevKey) -> Option<(u32, [u8; 32])> {
        self.bundles.lock().get_mut(key)?.take_pre_key()
    }

    pub(crate) fn live_conns(&self, key: &DevKey) -> Vec<mpsc::UnboundedSender<ConnCmd>> {
        self.conns
            .lock()
            .values()
            .filter(|c| matches!(&c.kind, ConnKind::LoggedIn(k) if k == key))
            .map(|c| c.cmd.clone())
            .collect()
    }

    /// Allocates a device on `phone` (creating the account) and builds the
    /// `pair-success` iq for a companion with `companion_identity`.
    pub fn prepare_link(
        &self,
        phone: &str,
        push_name: &str,
        companion_identity: &[u8; 32],
        adv_secret: &[u8; 32],
    ) -> (Node, String, u16, u32) {
        let mut st = self.state.lock();
        let acct = st
            .accounts
            .entry(phone.to_string())
            .or_insert_with(|| Account::new(phone, push_name));
        if !push_name.is_empty() {
            acct.rec.push_name = push_name.to_string();
        }
        let key_index = acct.rec.next_key_index;
        acct.rec.next_key_index += 1;
        let device = key_index as u16;
        let identity = phone::build_device_identity(
            &acct.identity,
            acct.rec.raw_id,
            key_index,
            companion_identity,
            adv_secret,
        );
        let lid = acct.rec.lid.clone();
        let name = acct.rec.push_name.clone();
        st.save_account_logged(phone);
        drop(st);
        let iq_id = format!("sim-ps-{}", self.next_id());
        let node = NodeBuilder::new("iq")
            .attr("from", "s.whatsapp.net")
            .attr("type", "set")
            .attr("id", iq_id.clone())
            .attr("xmlns", "md")
            .attr("t", now_secs().to_string())
            .children([NodeBuilder::new("pair-success")
                .children([
                    NodeBuilder::new("device-identity").bytes(identity).build(),
                    NodeBuilder::new("platform").attr("name", "android").build(),
                    NodeBuilder::new("biz").attr("name", name).build(),
                    NodeBuilder::new("device")
                        .attr("jid", format!("{phone}:{device}@s.whatsapp.net"))
                        .attr("lid", format!("{lid}:{device}@lid"))
                        .build(),
                ])
                .build()])
            .build();
        (node, iq_id, device, key_index)
    }
}

/// The simulator: shared state plus the control API. Cheap to clone.
#[derive(Clone)]
pub struct Simulator {
    pub(crate) inner: Arc<Inner>,
}

impl Default for Simulator {
    fn default() -> Self {
        Self::new()
    }
}

fn cert_chain(server_static_pub: &[u8; 32]) -> Vec<u8> {
    use waproto::buffa::Message as _;
    use waproto::whatsapp::{self as wa, cert_chain::noise_certificate};
    let details = |serial, issuer, key: Vec<u8>| {
        noise_certificate::Details {
            serial: Some(serial),
            issuer_serial: Some(issuer),
            key: Some(key),
            not_before: Some(1_700_000_000),
            not_after: Some(4_000_000_000),
        }
        .encode_to_vec()
    };
    wa::CertChain {
        intermediate: waproto::buffa::MessageField::some(wa::cert_chain::NoiseCertificate {
            details: Some(details(7, 0, vec![0xCC; 32])),
            signature: Some(vec![0u8; 64]),
        }),
        leaf: waproto::buffa::MessageField::some(wa::cert_chain::NoiseCertificate {
            details: Some(details(8, 7, server_static_pub.to_vec())),
            signature: Some(vec![0u8; 64]),
        }),
    }
    .encode_to_vec()
}

pub(crate) fn valid_phone(phone: &str) -> Result<(), SimError> {
    if (5..=20).contains(&phone.len()) && phone.bytes().all(|b| b.is_ascii_digit()) {
        Ok(())
    } else {
        Err(SimError::InvalidPhone)
    }
}

impl Simulator {
    /// An in-memory simulator: nothing is written to disk.
    pub fn new() -> Self {
        Self::from_state(State::new_ephemeral())
    }

    /// A simulator that keeps its accounts, linked devices and server key in
    /// `dir/simulator.json`, so linked clients log back in after a restart.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, SimError> {
        let st = State::open(dir.as_ref()).map_err(|e| SimError::Storage(e.to_string()))?;
        Ok(Self::from_state(st))
    }

    fn from_state(st: State) -> Self {
        let chain = cert_chain(&pub32(&st.server_static));
        Simulator {
            inner: Arc::new(Inner {
                state: Mutex::new(st),
                cert_chain: chain,
                conns: Mutex::new(HashMap::new()),
                next_id: AtomicU64::new(1),
                bundles: Mutex::new(HashMap::new()),
                key_share_due: Mutex::new(HashSet::new()),
                outages: Mutex::new(HashMap::new()),
                pending_failures: Mutex::new(HashMap::new()),
                offline: Mutex::new(HashMap::new()),
                sent: Mutex::new(Vec::new()),
                contacts: Mutex::new(HashMap::new()),
                inbox: Mutex::new(inbox::Inboxes::default()),
            }),
        }
    }

    /// The in-process transport for `BotBuilder::with_transport_factory`.
    pub fn transport_factory(&self) -> SimTransportFactory {
        SimTransportFactory::new(self.inner.clone())
    }

    /// The same factory as a trait object, for code that stores factories as
    /// `Arc<dyn TransportFactory>` (wrap it in [`DynTransportFactory`] to
    /// give it back to `with_transport_factory`).
    pub fn transport_factory_arc(&self) -> Arc<dyn whatsapp_rust::transport::TransportFactory> {
        Arc::new(self.transport_factory())
    }

    /// Serves `ws://ADDR/ws/chat` (any path is accepted). `addr` must be a
    /// loopback address; use port 0 for an ephemeral port.
    pub async fn serve_ws(&self, addr: std::net::SocketAddr) -> std::io::Result<WsServer> {
        ws::serve(self.inner.clone(), addr).await
    }

    /// The phone `phone` scans `qr_text` (the `PairingQrCode` code). Returns
    /// once the client has signed the link (its `PairSuccess`); the client
    /// then reconnects and logs in by itself.
    pub async fn scan(
        &self,
        qr_text: &str,
        phone: &str,
        push_name: &str,
    ) -> Result<LinkedDevice, SimError> {
        valid_phone(phone)?;
        let parts: Vec<&str> = qr_text.trim().split(',').collect();
        if parts.len() < 4 {
            return Err(SimError::QrMalformed(
                "expected ref,noise,identity,secret".into(),
            ));
        }
        let dec = |s: &str| -> Result<[u8; 32], SimError> {
            base64::engine::general_purpose::STANDARD
                .decode(s)
                .ok()
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| SimError::QrMalformed("bad base64 key".into()))
        };
        let (pref, noise, identity, adv) =
            (parts[0], dec(parts[1])?, dec(parts[2])?, dec(parts[3])?);
        let (cmd, platform) = {
            let conns = self.inner.conns.lock();
            let found = conns.values().find_map(|c| match &c.kind {
                ConnKind::Unpaired {
                    refs,
                    refs_issued,
                    noise_pub,
                    identity_pub,
                    platform,
                    ..
                } => {
                    let i = refs.iter().position(|r| r == pref)?;
                    let deadline = *refs_issued + Duration::from_secs(62 + 20 * i as u64);
                    Some((
                        c.cmd.clone(),
                        Instant::now() <= deadline
                            && *noise_pub == noise
                            && *identity_pub == identity,
                        platform.clone(),
                    ))
                }
                _ => None,
            });
            match found {
                Some((cmd, true, platform)) => (cmd, platform),
                _ => return Err(SimError::QrExpiredOrUnknown),
            }
        };
        let (node, iq_id, device, key_index) =
            self.inner.prepare_link(phone, push_name, &identity, &adv);
        let (tx, rx) = oneshot::channel();
        let link = PendingLink {
            iq_id,
            phone: phone.to_string(),
            device,
            key_index,
            companion_identity: identity,
            noise_pub: noise,
            platform,
            push_name: push_name.to_string(),
            reply: tx,
        };
        cmd.send(ConnCmd::PairSuccess { node, link })
            .map_err(|_| SimError::ConnectionGone)?;
        match tokio::time::timeout(LINK_TIMEOUT, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(SimError::ConnectionGone),
            Err(_) => Err(SimError::LinkTimeout),
        }
    }

    /// The phone `phone` enters the pairing `code` the client showed
    /// (`PairingCode`) after `pair_with_code`. Returns once linked.
    pub async fn enter_code(&self, phone: &str, code: &str) -> Result<LinkedDevice, SimError> {
        let name = self
            .inner
            .state
            .lock()
            .accounts
            .get(phone)
            .map(|a| a.rec.push_name.clone())
            .unwrap_or_default();
        self.enter_code_as(phone, code, &name).await
    }

    /// [`Self::enter_code`], naming the phone's owner (the client's push name)
    /// if the account is new.
    pub async fn enter_code_as(
        &self,
        phone: &str,
        code: &str,
        push_name: &str,
    ) -> Result<LinkedDevice, SimError> {
        valid_phone(phone)?;
        let code = code.trim().replace('-', "").to_uppercase();
        let (cmd, reg) = {
            let conns = self.inner.conns.lock();
            conns
                .values()
                .filter_map(|c| match &c.kind {
                    ConnKind::Unpaired {
                        code: Some(reg), ..
                    } if reg.phone == phone && reg.at.elapsed() < Duration::from_secs(180) => {
                        Some((c.cmd.clone(), reg.clone()))
                    }
                    _ => None,
                })
                .max_by_key(|(_, r)| r.at)
                .ok_or_else(|| SimError::NoPendingCode(phone.to_string()))?
        };
        let phone_eph = new_keypair();
        let eph_pub = pub32(&phone_eph);
        let wrapped_c = reg.wrapped_companion_ephemeral.clone();
        let code2 = code.clone();
        let (e_c, wrapped_p) = tokio::task::spawn_blocking(move || {
            let e_c = PairCodeUtils::decrypt_primary_ephemeral_pub(&wrapped_c, &code2);
            let wrapped_p = PairCodeUtils::encrypt_ephemeral_pub(&eph_pub, &code2);
            (e_c, wrapped_p)
        })
        .await
        .map_err(|e| SimError::WrongCode(e.to_string()))?;
        let e_c = e_c.map_err(|e| SimError::WrongCode(e.to_string()))?;
        let account_pub = {
            let mut st = self.inner.state.lock();
            let acct = st
                .accounts
                .entry(phone.to_string())
                .or_insert_with(|| Account::new(phone, push_name));
            let p = acct.identity_pub();
            st.save_account_logged(phone);
            p
        };
        let id = format!("sim-lc-{}", self.inner.next_id());
        let node = NodeBuilder::new("notification")
            .attr("type", "link_code_companion_reg")
            .attr("from", "s.whatsapp.net")
            .attr("id", id)
            .attr("t", now_secs().to_string())
            .children([NodeBuilder::new("link_code_companion_reg")
                .attr("stage", "primary_hello")
                .children([
                    NodeBuilder::new("link_code_pairing_wrapped_primary_ephemeral_pub")
                        .bytes(wrapped_p.to_vec())
                        .build(),
                    NodeBuilder::new("primary_identity_pub")
                        .bytes(account_pub.to_vec())
                        .build(),
                    NodeBuilder::new("link_code_pairing_ref")
                        .bytes(reg.pairing_ref.as_bytes().to_vec())
                        .build(),
                ])
                .build()])
            .build();
        let (tx, rx) = oneshot::channel();
        let stage = CodeStage {
            phone: phone.to_string(),
            push_name: push_name.to_string(),
            phone_ephemeral: phone_eph,
            companion_ephemeral_pub: e_c,
            reply: tx,
        };
        cmd.send(ConnCmd::PrimaryHello { node, stage })
            .map_err(|_| SimError::ConnectionGone)?;
        match tokio::time::timeout(LINK_TIMEOUT, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(SimError::ConnectionGone),
            Err(_) => Err(SimError::LinkTimeout),
        }
    }

    /// The devices `phone` lists under "Linked devices".
    pub fn phone_devices(&self, phone: &str) -> Result<Vec<LinkedDevice>, SimError> {
        let st = self.inner.state.lock();
        let acct = st.accounts.get(phone).ok_or(SimError::NoSuchPhone)?;
        Ok(acct
            .rec
            .devices
            .values()
            .map(|d| LinkedDevice {
                phone: phone.to_string(),
                device: d.id,
                lid: acct.rec.lid.clone(),
                platform: d.platform.clone(),
                linked_at: d.linked_at,
            })
            .collect())
    }

    /// Phone numbers that have an account (linked at least once).
    pub fn phones(&self) -> Vec<String> {
        self.inner.state.lock().accounts.keys().cloned().collect()
    }

    /// Whether the device currently has a logged-in connection.
    pub fn is_connected(&self, phone: &str, device: u16) -> bool {
        !self
            .inner
            .live_conns(&(phone.to_string(), device))
            .is_empty()
    }

    /// Injects a fault. See [`FaultKind`] for the client event each causes.
    pub fn fault(&self, target: Target, kind: FaultKind) -> Result<(), SimError> {
        let key = match target {
            Target::Device { phone, device } => (phone, device),
            Target::PairingRef(r) => return self.fault_unpaired(&r, kind),
        };
        let exists = {
            let st = self.inner.state.lock();
            let acct = st.accounts.get(&key.0).ok_or(SimError::NoSuchPhone)?;
            acct.rec.devices.contains_key(&key.1)
        };
        if !exists {
            return Err(SimError::NoSuchDevice);
        }
        let live = self.inner.live_conns(&key);
        let send_all = |nodes: Vec<Node>, close: Option<DisconnectReason>| {
            for c in &live {
                let _ = c.send(ConnCmd::Fault {
                    nodes: nodes.clone(),
                    close: close.clone(),
                });
            }
        };
        let stream_error = |child: Node| NodeBuilder::new("stream:error").children([child]).build();
        match kind {
            FaultKind::Drop => {
                if live.is_empty() {
                    return Err(SimError::NotConnected);
                }
                send_all(
                    vec![],
                    Some(DisconnectReason::ReadError("simulated drop".into())),
                );
            }
            FaultKind::Outage(d) => {
                self.inner
                    .outages
                    .lock()
                    .insert(key.clone(), Instant::now() + d);
                send_all(
                    vec![],
                    Some(DisconnectReason::ReadError("simulated outage".into())),
                );
            }
            FaultKind::Unlink => {
                self.remove_device(&key);
                send_all(
                    vec![stream_error(
                        NodeBuilder::new("conflict")
                            .attr("type", "device_removed")
                            .build(),
                    )],
                    Some(DisconnectReason::StreamEnded),
                );
            }
            FaultKind::Replaced => {
                if live.is_empty() {
                    return Err(SimError::NotConnected);
                }
                send_all(
                    vec![stream_error(
                        NodeBuilder::new("conflict")
                            .attr("type", "replaced")
                            .build(),
                    )],
                    Some(DisconnectReason::StreamEnded),
                );
            }
            FaultKind::Ban { code, expire } => {
                {
                    let mut st = self.inner.state.lock();
                    if let Some(d) = st
                        .accounts
                        .get_mut(&key.0)
                        .and_then(|a| a.rec.devices.get_mut(&key.1))
                    {
                        d.banned_until = Some(now_secs() + expire.as_secs() as i64);
                        d.ban_code = code;
                    }
                    st.save_account_logged(&key.0);
                }
                send_all(
                    vec![ban_failure(code, expire.as_secs())],
                    Some(DisconnectReason::StreamEnded),
                );
            }
            FaultKind::Outdated => {
                let node = NodeBuilder::new("failure").attr("reason", "405").build();
                if live.is_empty() {
                    self.inner.pending_failures.lock().insert(key, node);
                } else {
                    send_all(vec![node], Some(DisconnectReason::StreamEnded));
                }
            }
            FaultKind::StreamError(code) => {
                if live.is_empty() {
                    return Err(SimError::NotConnected);
                }
                let node = NodeBuilder::new("stream:error")
                    .attr("code", code.to_string())
                    .build();
                let close = (!matches!(code, 401 | 409 | 515 | 516))
                    .then_some(DisconnectReason::StreamEnded);
                send_all(vec![node], close);
            }
        }
        Ok(())
    }

    /// A contact `from_phone` (a virtual phone, created if new) sends `text`
    /// to `to_phone`: every device linked to `to_phone` gets it, Signal
    /// encrypted, as `Event::Messages`. Devices not connected get it at their
    /// next login (before the offline marker). Returns the message id.
    pub fn send_text(
        &self,
        from_phone: &str,
        to_phone: &str,
        text: &str,
    ) -> Result<String, SimError> {
        self.send_reply(from_phone, to_phone, text, None)
    }

    /// `send_text` as a reply to `quoted_id`: a message the phone received
    /// (quoted with its author and text) or one it sent itself.
    pub fn send_reply(
        &self,
        from_phone: &str,
        to_phone: &str,
        text: &str,
        quoted_id: Option<&str>,
    ) -> Result<String, SimError> {
        valid_phone(from_phone)?;
        let quoted = quoted_id.map(|q| {
            // Looked up in place: the phone's whole inbox is not copied.
            let inbox = self.inner.inbox.lock();
            let received = inbox
                .messages
                .get(from_phone)
                .and_then(|list| list.iter().find(|m| m.id == q));
            match received {
                Some(m) => (q.to_string(), m.from.clone(), m.text.clone()),
                None => (q.to_string(), from_phone.to_string(), String::new()),
            }
        });
        let (notify, devices) = {
            let mut st = self.inner.state.lock();
            let to = account_devices(&st, to_phone)?;
            // A phone first seen here gets an account, written once; a
            // message changes nothing of it.
            let new_account = !st.accounts.contains_key(from_phone);
            let from = st
                .accounts
                .entry(from_phone.to_string())
                .or_insert_with(|| Account::new(from_phone, ""));
            let notify = if from.rec.push_name.is_empty() {
                format!("+{from_phone}")
            } else {
                from.rec.push_name.clone()
            };
            if new_account {
                st.save_account_logged(from_phone);
            }
            (notify, to)
        };
        let msg = QueuedMsg {
            quoted,
            ..QueuedMsg::text(from_phone, notify, text)
        };
        let id = msg.id.clone();
        self.queue_for_devices(to_phone, devices, msg);
        Ok(id)
    }

    /// The owner of `account_phone` writes `text` to `to_phone` from the
    /// phone itself: every device linked to the account gets the phone's
    /// copy (WhatsApp's `DeviceSentMessage`), as `Event::Messages` with
    /// `is_from_me`. Returns the message id.
    pub fn send_from_account(
        &self,
        account_phone: &str,
        to_phone: &str,
        text: &str,
    ) -> Result<String, SimError> {
        valid_phone(to_phone)?;
        let (notify, devices) = {
            let st = self.inner.state.lock();
            let devices = account_devices(&st, account_phone)?;
            (st.accounts[account_phone].rec.push_name.clone(), devices)
        };
        let msg = QueuedMsg {
            recipient: Some(to_phone.to_string()),
            ..QueuedMsg::text(account_phone, notify, text)
        };
        let id = msg.id.clone();
        self.queue_for_devices(account_phone, devices, msg);
        Ok(id)
    }

    /// Hand `msg` to every device of `phone`: live ones now, the others at
    /// their next login.
    fn queue_for_devices(&self, phone: &str, devices: Vec<u16>, msg: QueuedMsg) {
        for dev in devices {
            let key = (phone.to_string(), dev);
            let live = self.inner.live_conns(&key);
            match live.first() {
                Some(c) if c.send(ConnCmd::Deliver(msg.clone())).is_ok() => {}
                _ => self
                    .inner
                    .offline
                    .lock()
                    .entry(key)
                    .or_default()
                    .push(msg.clone()),
            }
        }
    }

    /// What `phone` received from linked clients, decrypted, oldest first;
    /// one entry per message id.
    pub fn phone_messages(&self, phone: &str) -> Vec<PhoneMessage> {
        self.inner
            .inbox
            .lock()
            .messages
            .get(phone)
            .cloned()
            .unwrap_or_default()
    }

    /// How many times `phone` was sent an id it already had.
    pub fn duplicate_deliveries(&self, phone: &str) -> u64 {
        self.inner
            .inbox
            .lock()
            .duplicates
            .get(phone)
            .copied()
            .unwrap_or(0)
    }

    /// One-time prekeys the device of `phone` has uploaded and no phone has
    /// spent yet (a new Signal session spends one).
    pub fn pre_keys_left(&self, phone: &str, device: u16) -> Option<usize> {
        let bundles = self.inner.bundles.lock();
        Some(bundles.get(&(phone.to_string(), device))?.pre_keys.len())
    }

    /// `from_phone` calls `to_phone`: every connected device of it gets a
    /// call offer (audio, no media: nobody can pick it up here). Returns
    /// the call id; `calls` tells whether a device declined it.
    pub fn call(&self, from_phone: &str, to_phone: &str) -> Result<String, SimError> {
        valid_phone(from_phone)?;
        let devices = account_devices(&self.inner.state.lock(), to_phone)?;
        let call_id = format!("{:032X}", u128::from_le_bytes(phone::random_bytes::<16>()));
        let caller = format!("{from_phone}@s.whatsapp.net");
        let offer = NodeBuilder::new("call")
            .attr("from", caller.as_str())
            .attr(
                "id",
                format!("SIM{:016X}", u64::from_le_bytes(phone::random_bytes::<8>())),
            )
            .attr("t", now_secs().to_string())
            .attr("notify", format!("+{from_phone}"))
            .children([NodeBuilder::new("offer")
                .attr("call-id", call_id.as_str())
                .attr("call-creator", caller.as_str())
                .children([NodeBuilder::new("audio")
                    .attr("enc", "opus")
                    .attr("rate", "16000")
                    .build()])
                .build()])
            .build();
        self.inner.inbox.lock().calls.insert(
            call_id.clone(),
            PhoneCall {
                call_id: call_id.clone(),
                from: from_phone.to_string(),
                to: to_phone.to_string(),
                rejected_by_device: None,
            },
        );
        for dev in devices {
            for conn in self.inner.live_conns(&(to_phone.to_string(), dev)) {
                let _ = conn.send(ConnCmd::Fault {
                    nodes: vec![offer.clone()],
                    close: None,
                });
            }
        }
        Ok(call_id)
    }

    /// The calls `phone` placed (ordered by call id).
    pub fn calls(&self, phone: &str) -> Vec<PhoneCall> {
        let mut calls: Vec<PhoneCall> = self
            .inner
            .inbox
            .lock()
            .calls
            .values()
            .filter(|c| c.from == phone)
            .cloned()
            .collect();
        calls.sort_by(|a, b| a.call_id.cmp(&b.call_id));
        calls
    }

    /// `phone` reads messages (all unread when `ids` is `None`): a read
    /// receipt goes to each sender device. Returns how many were marked.
    pub fn read(&self, phone: &str, ids: Option<Vec<String>>) -> Result<usize, SimError> {
        valid_phone(phone)?;
        let newly: Vec<(String, u16, String)> = {
            let mut ib = self.inner.inbox.lock();
            let Some(list) = ib.messages.get_mut(phone) else {
                return Ok(0);
            };
            list.iter_mut()
                .filter(|m| !m.read && ids.as_ref().is_none_or(|ids| ids.contains(&m.id)))
                .map(|m| {
                    m.read = true;
                    (m.from.clone(), m.from_device, m.id.clone())
                })
                .collect()
        };
        for (from, dev, id) in &newly {
            let node = conn::receipt(phone, id, Some("read"));
            for c in self.inner.live_conns(&(from.clone(), *dev)) {
                let _ = c.send(ConnCmd::Fault {
                    nodes: vec![node.clone()],
                    close: None,
                });
            }
        }
        Ok(newly.len())
    }

    /// Marks `phone` as (not) on WhatsApp. An unregistered number answers
    /// usync with `<contact type="out"/>` and no devices, so
    /// `Client::is_on_whatsapp` says `is_registered: false`; a message a
    /// client still sends to it is answered with
    /// `<ack class="message" error="404"/>` and never stored.
    /// Any other valid number is a virtual phone, created on demand.
    pub fn set_registered(&self, phone: &str, registered: bool) -> Result<(), SimError> {
        valid_phone(phone)?;
        let mut ib = self.inner.inbox.lock();
        if registered {
            ib.unregistered.remove(phone);
        } else {
            ib.unregistered.insert(phone.to_string());
        }
        Ok(())
    }

    /// Messages linked clients have sent, oldest first (the last
    /// [`SENT_LOG_CAP`] at most).
    pub fn sent_messages(&self) -> Vec<SentMessage> {
        self.inner.sent.lock().clone()
    }

    /// Lifts a ban early.
    pub fn unban(&self, phone: &str, device: u16) -> Result<(), SimError> {
        let mut st = self.inner.state.lock();
        let d = st
            .accounts
            .get_mut(phone)
            .ok_or(SimError::NoSuchPhone)?
            .rec
            .devices
            .get_mut(&device)
            .ok_or(SimError::NoSuchDevice)?;
        d.banned_until = None;
        st.save_account_logged(phone);
        Ok(())
    }

    fn fault_unpaired(&self, pref: &str, kind: FaultKind) -> Result<(), SimError> {
        let pref = pref.split(',').next().unwrap_or_default();
        let cmd = self
            .inner
            .conns
            .lock()
            .values()
            .find_map(|c| match &c.kind {
                ConnKind::Unpaired { refs, .. } if refs.iter().any(|r| r == pref) => {
                    Some(c.cmd.clone())
                }
                _ => None,
            })
            .ok_or(SimError::QrExpiredOrUnknown)?;
        let (nodes, close) = match kind {
            FaultKind::Drop | FaultKind::Outage(_) => (
                vec![],
                Some(DisconnectReason::ReadError("simulated drop".into())),
            ),
            FaultKind::Outdated => (
                vec![NodeBuilder::new("failure").attr("reason", "405").build()],
                Some(DisconnectReason::StreamEnded),
            ),
            FaultKind::StreamError(code) => (
                vec![NodeBuilder::new("stream:error")
                    .attr("code", code.to_string())
                    .build()],
                Some(DisconnectReason::StreamEnded),
            ),
            _ => return Err(SimError::NoSuchDevice),
        };
        cmd.send(ConnCmd::Fault { nodes, close })
            .map_err(|_| SimError::ConnectionGone)
    }

    pub(crate) fn remove_device(&self, key: &DevKey) {
        remove_device(&self.inner, key)
    }
}

pub(crate) fn remove_device(inner: &Inner, key: &DevKey) {
    let mut st = inner.state.lock();
    if let Some(a) = st.accounts.get_mut(&key.0) {
        a.rec.devices.remove(&key.1);
    }
    st.save_account_logged(&key.0);
    drop(st);
    inner.bundles.lock().remove(key);
    inner.key_share_due.lock().remove(key);
}

pub(crate) fn ban_failure(code: u32, expire_secs: u64) -> Node {
    NodeBuilder::new("failure")
        .attr("reason", "402")
        .attr("code", code.to_string())
        .attr("expire", expire_secs.to_string())
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_from_jid() {
        assert_eq!(
            Target::from_jid("15551234567:3@s.whatsapp.net"),
            Some(Target::device("15551234567", 3))
        );
        assert_eq!(Target::from_jid("15551234567@s.whatsapp.net"), None);
    }

    #[test]
    fn fault_kind_from_parts() {
        assert_eq!(
            FaultKind::from_parts("drop", None, None),
            Ok(FaultKind::Drop)
        );
        assert_eq!(
            FaultKind::from_parts("outage", Some(5), None),
            Ok(FaultKind::Outage(Duration::from_secs(5)))
        );
        assert!(FaultKind::from_parts("outage", None, None).is_err());
        assert_eq!(
            FaultKind::from_parts("ban", None, None),
            Ok(FaultKind::Ban {
                code: 101,
                expire: Duration::from_secs(3600)
            })
        );
        assert_eq!(
            FaultKind::from_parts("stream_error", None, Some(503)),
            Ok(FaultKind::StreamError(503))
        );
        assert!(FaultKind::from_parts("nope", None, None).is_err());
    }

    #[test]
    fn errors_map_to_http_statuses() {
        assert_eq!(SimError::QrExpiredOrUnknown.http_status(), 404);
        assert_eq!(SimError::InvalidPhone.http_status(), 400);
        assert_eq!(SimError::NotConnected.http_status(), 409);
        assert_eq!(
            SimError::QrExpiredOrUnknown.to_string(),
            "QR code expired or unknown"
        );
    }

    #[test]
    fn signed_link_verifies_and_tampering_does_not() {
        let account = phone::new_keypair();
        let companion = phone::new_keypair();
        let companion_pub = pub32(&companion);
        let container = phone::build_device_identity(&account, 7, 3, &companion_pub, &[9u8; 32]);
        // What the client does with it (wacore's own pairing code).
        let state = wacore::pair::DeviceState {
            identity_key: companion.clone(),
            noise_key: phone::new_keypair(),
            adv_secret_key: [9u8; 32],
        };
        let (signed, key_index) =
            wacore::pair::PairUtils::do_pair_crypto(&state, &container).expect("client accepts");
        assert_eq!(key_index, 3);
        assert_eq!(
            phone::verify_pair_device_sign(&pub32(&account), &companion_pub, &signed).unwrap(),
            3
        );
        let mut bad = signed.clone();
        let n = bad.len();
        bad[n - 1] ^= 1;
        assert!(phone::verify_pair_device_sign(&pub32(&account), &companion_pub, &bad).is_err());
        let wrong_secret = wacore::pair::DeviceState {
            adv_secret_key: [8u8; 32],
            ..state
        };
        assert!(wacore::pair::PairUtils::do_pair_crypto(&wrong_secret, &container).is_err());
    }
}
