//! wasup: a self-hosted WhatsApp multi-session gateway.
//!
//! The binary wires real adapters (diesel `db`, whatsapp-rust `engine`) into
//! the actors of `wasup_actors` and serves the HTTP `api`.

pub mod api;
pub mod config;
pub mod crypto;
pub mod db;
pub mod engine;
pub mod memory;
pub mod qr;
pub mod server;
#[cfg(feature = "simulator")]
pub mod simulator;
pub mod webhooks;
