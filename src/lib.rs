//! wasup: a self-hosted WhatsApp multi-session gateway.
//!
//! The binary wires real adapters (diesel `db`, whatsapp-rust `engine`) into
//! the actors of `wasup_actors` and serves the HTTP `api`.

/// jemalloc: less fragmentation than glibc's per-thread arenas with many
/// sessions, and real heap figures for the overview (`memory`).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read at its first allocation (`_RJEM_MALLOC_CONF` in
/// the environment still overrides them). Tuned for a small resident set on
/// a process that is idle most of the time:
/// - `narenas:2` instead of 4 per core: fewer arenas hold fewer partly used
///   pages (threads still spread over two locks);
/// - `background_thread` (one thread) with `dirty_decay_ms:1000`,
///   `muzzy_decay_ms:0`: freed pages go back to the system within about a
///   second even when nothing allocates (without it, purging only happens
///   on allocation, so an idle process keeps what it freed);
/// - a smaller per-thread cache (`tcache_max`, `tcache_nslots_*`): each
///   thread keeps fewer freed objects for reuse.
///
/// Measured idle (debug build, no session, fresh data dir): RssAnon 12.0 →
/// 8.9 MiB.
#[used]
#[export_name = "_rjem_malloc_conf"]
static MALLOC_CONF: Option<&'static u8> = Some(&JEMALLOC_OPTIONS[0]);
const JEMALLOC_OPTIONS: &[u8] = b"narenas:2,background_thread:true,max_background_threads:1,\
dirty_decay_ms:1000,muzzy_decay_ms:0,tcache_max:4096,tcache_nslots_small_max:16,\
tcache_nslots_large:4\0";

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
