//! wasup's core: the session state machine, the backoff policy, the actors
//! (SessionSupervisor, SessionActor, WebActor, WebhookActor) and the ports they need
//! (`Engine`, `Store`). No diesel, whatsapp-rust or actix-web in here: the
//! `wasup` binary crate plugs real adapters into the ports.
//!
//! Wiring (inside an actix System):
//! ```ignore
//! let gw = wasup_actors::start_system(store, engine, SupervisorOptions::default()).await?;
//! // first boot: the binary writes and prints a new key first, then stores it
//! gw.web.send(BootstrapAdminKey { preset: Some(secret) }).await??;
//! // handlers: gw.keys.authenticate(..) then gw.web.send(<message from `web`>)
//! // on SIGTERM: gw.shutdown().await
//! ```
//! - `state`: the one state machine (`step`) and every rule read from a
//!   status (restore, QR, pairing code); `backoff`: the restart policy.
//! - `session`/`supervisor`: one SessionActor per session with work (engine
//!   running or command in flight); restarts, panics, restore, shutdown.
//!   `protocol`: the messages between them.
//! - `web`: one message per use case, roles, scopes and validation.
//! - `error`: the one error-code table (`ErrorCode`) and the domain errors.
//! - `metrics`: the counters the actors bump, and the Prometheus text encoder.
//! - `redact`: how values holding secrets are shown (`Debug`, masked URLs).

pub mod backoff;
pub mod error;
pub mod events;
pub mod gateway;
pub mod keys;
pub mod limits;
pub mod metrics;
pub mod model;
pub mod outbound;
pub mod ports;
pub mod protocol;
pub mod redact;
pub mod registry;
pub mod session;
pub mod state;
pub mod supervisor;
pub mod web;
pub mod webhook;

pub use error::{ErrorCode, WebError};
pub use gateway::{start_system, Gateway};
pub use model::*;
pub use state::SessionCommand;
pub use supervisor::SupervisorOptions;
