//! The protocol between the SessionSupervisor and its SessionActors: what the
//! supervisor hands every actor ([`Deps`], [`SupervisorOptions`]), what it
//! asks of one ([`SessionRequest`], [`PairCode`]), and what an actor reports
//! back ([`SessionReport`], sent to a `Recipient` so that an actor can run
//! without a supervisor).

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use actix::Message;

use crate::backoff::{BackoffLimits, BackoffPolicy};
use crate::error::WebError;
use crate::model::{ProxyType, SessionConfig, SessionId, SessionView};
use crate::ports::{Engine, Store};
use crate::registry::SessionRegistry;
pub use crate::state::SessionCommand;

#[derive(Clone, Debug)]
pub struct SupervisorOptions {
    /// At most this many sessions are starting (status `initializing`) at a
    /// time during the boot restore. Default 8.
    pub restore_concurrency: usize,
    /// Bounds of the per-session backoff settings (the contract's by default;
    /// tests shrink them).
    pub backoff: BackoffLimits,
    /// How long `Engine::start` (and a pairing-code request) may take.
    pub engine_start_timeout: Duration,
    /// How long a clean engine stop (or logout) may take before it is aborted.
    pub stop_timeout: Duration,
    /// How long `Shutdown` waits for every session.
    pub shutdown_timeout: Duration,
    /// Each boot-restore start waits a random delay up to this, so the
    /// sessions sharing a wave do not dial at the same instant.
    pub restore_jitter: Duration,
    /// Restore every running session at boot (single node). Cluster mode
    /// turns it off: a node starts only the sessions it claimed.
    pub restore_at_boot: bool,
}

impl Default for SupervisorOptions {
    fn default() -> Self {
        SupervisorOptions {
            restore_concurrency: 8,
            backoff: BackoffLimits::default(),
            engine_start_timeout: Duration::from_secs(60),
            stop_timeout: Duration::from_secs(10),
            shutdown_timeout: Duration::from_secs(20),
            restore_jitter: Duration::from_millis(20),
            restore_at_boot: true,
        }
    }
}

impl SupervisorOptions {
    /// The restart policy of a session with this config, for drops and
    /// panics alike.
    pub fn policy(&self, config: &SessionConfig) -> BackoffPolicy {
        BackoffPolicy::from_config_with(config, &self.backoff)
    }
}

/// What the supervisor shares with every session actor.
#[derive(Clone)]
pub struct Deps {
    pub store: Arc<dyn Store>,
    pub engine: Arc<dyn Engine>,
    pub registry: Arc<SessionRegistry>,
    pub options: Arc<SupervisorOptions>,
    /// Engine generations are unique in the process.
    pub generations: Arc<AtomicU64>,
}

/// Everything the supervisor asks of a session actor. Replies with the
/// session's view afterwards (for `Delete`: the last view before removal).
#[derive(Message, Clone, Debug, PartialEq)]
#[rtype(result = "Result<SessionView, WebError>")]
pub enum SessionRequest {
    Command(SessionCommand),
    /// Boot restore: start unless already started; frees a restore slot once
    /// the session leaves `initializing`.
    RestoreStart,
    /// The backoff delay is over.
    RetryDue,
    /// The previous actor of this session died: treat as an engine crash.
    Recover {
        cause: String,
    },
    /// The gateway stops: close the engine, keep the desired state.
    Shutdown,
    /// Change the session's settings; never its status (only the state
    /// machine writes a status).
    Settings(SettingsChange),
    /// Cluster mode: another node owns the session now. Abort the engine,
    /// write nothing, end without a restart.
    Fenced,
}

/// A change of a session's settings, applied by its actor to its own record.
/// `Debug` masks a proxy password.
#[derive(Clone, PartialEq)]
pub enum SettingsChange {
    /// Merge a partial config (checked against the current one).
    Config(crate::web::ConfigPatch),
    /// Replace the proxy (already checked); `None` clears it. Used from the
    /// next engine start on.
    Proxy {
        url: Option<String>,
        kind: Option<ProxyType>,
    },
}

impl std::fmt::Debug for SettingsChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SettingsChange::Config(patch) => f.debug_tuple("Config").field(patch).finish(),
            SettingsChange::Proxy { url, kind } => f
                .debug_struct("Proxy")
                .field("url", &url.as_deref().map(crate::web::mask_proxy_url))
                .field("kind", kind)
                .finish(),
        }
    }
}

/// Ask the session's engine for a pairing code for `phone`.
#[derive(Message)]
#[rtype(result = "Result<String, WebError>")]
pub struct PairCode {
    pub phone: String,
}

/// What a session actor tells its owner about itself. `incarnation` tells an
/// actor from the one that replaced it.
#[derive(Message, Clone, Debug, PartialEq)]
#[rtype(result = "()")]
pub struct SessionReport {
    pub id: SessionId,
    pub incarnation: u64,
    pub report: Report,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Report {
    /// The boot-restore start is over (the session left `initializing`).
    RestoreSlotFree,
    /// No engine runs and nothing is in progress: the actor stopped. Start
    /// the session again after `retry`, when set.
    Ended { retry: Option<Duration> },
    /// The actor was dropped by a panic.
    Died,
}
