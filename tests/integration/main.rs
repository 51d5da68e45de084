//! The black-box tests, one binary: each module is one former `tests/X.rs`.
//! The real `wasup` (and `wasup-simulator`) binaries run as child processes,
//! so the tests share no process state with the servers they drive; modules
//! marked `simulator` need `--features simulator`. The `bench_*` modules are
//! benchmarks (`#[ignore]`, run by `scripts/bench` in release).

mod common;
mod receiver;
#[cfg(feature = "simulator")]
mod sim_process;
#[cfg(feature = "simulator")]
mod simulator_support;

mod admin_cli;
mod api_docs;
mod api_keys;
mod api_robustness;
mod api_sessions;
mod db_store;
mod metrics;
mod server_lifecycle;
mod webhooks_http;

#[cfg(feature = "simulator")]
mod e2e_link;
#[cfg(feature = "simulator")]
mod e2e_scale;
#[cfg(feature = "simulator")]
mod log_hygiene;
#[cfg(feature = "simulator")]
mod simulator_bin;
#[cfg(feature = "simulator")]
mod simulator_faults;
#[cfg(feature = "simulator")]
mod simulator_many;
#[cfg(feature = "simulator")]
mod simulator_messages;
#[cfg(feature = "simulator")]
mod simulator_pair_code;
#[cfg(feature = "simulator")]
mod simulator_persistence;
#[cfg(feature = "simulator")]
mod simulator_qr;
#[cfg(feature = "simulator")]
mod simulator_ws;
#[cfg(feature = "simulator")]
mod webhooks_simulator;

#[cfg(feature = "simulator")]
mod bench_scale;
mod bench_webhooks;
