//! wasup: a self-hosted WhatsApp multi-session gateway.
//!
//! The binary wires real adapters (diesel `db`, whatsapp-rust `engine`) into
//! the actors of `wasup_actors` and serves the HTTP `api`.

/// jemalloc: less fragmentation than glibc's per-thread arenas with many
/// sessions, and real heap figures for the overview (`memory`).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

pub mod api;
pub mod cluster;
pub mod config;
pub mod crypto;
pub mod db;
pub mod engine;
pub mod events_hub;
pub mod limits;
pub mod logging;
pub mod memory;
pub mod metrics;
pub mod qr;
pub mod server;
#[cfg(feature = "simulator")]
pub mod simulator;
pub mod webhooks;
