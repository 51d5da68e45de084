//! wasup's core: the session state machine, the backoff policy, the actors
//! (SessionSupervisor, SessionActor, WebActor, WebhookActor) and the ports they need
//! (`Engine`, `Store`). No diesel, whatsapp-rust or actix-web in here: the
//! `wasup` binary crate plugs real adapters into the ports.

pub mod backoff;
pub mod error;
pub mod events;
pub mod gateway;
pub mod keys;
pub mod model;
pub mod ports;
pub mod registry;
pub mod session;
pub mod state;
pub mod supervisor;
pub mod web;
pub mod webhook;

pub use error::WebError;
pub use gateway::{start_system, Gateway};
pub use model::*;
pub use supervisor::SupervisorOptions;
