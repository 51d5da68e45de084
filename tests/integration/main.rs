//! The black-box tests, one binary: each module is one former `tests/X.rs`.
//! The real `wasup` (and `wasup-simulator`) binaries run as child processes,
//! so the tests share no process state with the servers they drive. The
//! `bench_*` modules are benchmarks (`#[ignore]`, run by `scripts/bench` in
//! release).

// Helpers.
mod common;
mod receiver;
mod webdriver;

// Both builds.
mod admin_cli;
mod api_docs;
mod api_keys;
mod api_robustness;
mod api_sessions;
mod bench_webhooks;
mod cluster;
mod dashboard_http;
mod db_store;
mod events_stream;
mod events_ws;
mod limits;
mod metrics;
mod secret_exposure;
mod server_lifecycle;
mod session_settings;
mod webhooks_http;

/// Modules that need `--features simulator` (the simulator, in process or
/// as the `wasup-simulator` binary).
macro_rules! simulator_only {
    ($($module:ident),* $(,)?) => {
        $(#[cfg(feature = "simulator")] mod $module;)*
    };
}

simulator_only!(
    sim_process,
    simulator_support,
    bench_cluster,
    bench_scale,
    bench_soak,
    cluster_failover,
    e2e_link,
    e2e_scale,
    log_hygiene,
    simulator_bin,
    simulator_faults,
    simulator_many,
    simulator_messages,
    simulator_pair_code,
    simulator_persistence,
    simulator_qr,
    simulator_ws,
    webhooks_simulator,
    messages_e2e,
    bench_messages,
    dashboard_browser,
    bench_events,
);
