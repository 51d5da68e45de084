//! Process wiring: config → data dir and master key → database → actors →
//! HTTP server; then a graceful shutdown on SIGTERM/SIGINT.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix_web::{middleware, web, App, HttpServer};

use crate::api::{self, json::BodyLimit, AppState};
use crate::config::Config;
use crate::db::records::DbStore;
use crate::db::webhooks::DbWebhookStore;
use crate::db::Db;
use crate::engine::{EngineOptions, WaEngine};
use crate::webhooks::HttpSender;

/// How long in-flight requests get to finish after a stop signal.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// How long sessions get to close cleanly before the process exits anyway.
const SESSION_CLOSE_TIMEOUT: Duration = Duration::from_secs(8);
/// How long a cluster node may take to hand its sessions over on SIGTERM.
const CLUSTER_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
enum StartError {
    #[error("cannot use data directory {0}: {1}")]
    DataDir(String, std::io::Error),
    #[error("master key: {0}")]
    MasterKey(String),
    #[error("database: {0}")]
    Database(#[from] crate::db::DbError),
    #[error("database: {0}")]
    Store(#[from] wasup_actors::ports::StoreError),
    #[error("admin key: {0}")]
    AdminKey(std::io::Error),
    #[error("engine: {0}")]
    Engine(String),
    #[error("cannot listen on {0}: {1}")]
    Bind(std::net::SocketAddr, std::io::Error),
    #[error("server: {0}")]
    Serve(std::io::Error),
    #[error("{0}")]
    Lock(#[from] crate::cluster::lock::LockError),
}

pub fn run(config: Config) -> ExitCode {
    let started = (std::time::SystemTime::now(), std::time::Instant::now());
    crate::logging::init();
    #[cfg(feature = "simulator")]
    log::warn!(
        "simulator build: this binary connects only to the wasup simulator, never to WhatsApp"
    );
    let system = actix_web::rt::System::new();
    match system.block_on(serve(config, started)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("wasup: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(
    config: Config,
    started: (std::time::SystemTime, std::time::Instant),
) -> Result<(), StartError> {
    crate::crypto::create_private_dir(&config.data_dir)
        .map_err(|e| StartError::DataDir(config.data_dir.display().to_string(), e))?;
    // One process per data dir, held until the process ends.
    let _lock = crate::cluster::lock::DataDirLock::acquire(&config.data_dir)?;
    let master_key = crate::crypto::load_or_create_master_key(&config.data_dir, config.master_key)
        .map_err(|e| StartError::MasterKey(e.to_string()))?;
    let secrets = Arc::new(crate::crypto::SecretBox::new(&master_key));

    let url = config.database_url.clone();
    let db = web::block(move || Db::open(&url))
        .await
        .map_err(|e| StartError::Engine(e.to_string()))??;
    log::info!("database ready ({:?})", db.backend());
    // Cluster mode: every session-scoped write is fenced by this node's leases.
    let fence = config
        .cluster
        .as_ref()
        .map(|c| Arc::new(crate::db::cluster::Fence::new(c.node_id.clone())));
    let db = match &fence {
        Some(fence) => db.with_fence(fence.clone()),
        None => db,
    };
    let outbox = Arc::new(wasup_actors::webhook::WorkSignal::new());
    let hub =
        crate::events_hub::EventHub::new(config.event_stream_buffer, config.event_streams_per_key);
    let store = Arc::new(
        DbStore::new(db.clone())
            .with_secrets(secrets.clone())
            .with_outbox_signal(outbox.clone())
            .with_event_hub(hub.clone()),
    );
    let events = web::Data::new(api::events::EventsState::new(
        hub.clone(),
        crate::db::event_log::EventLog::new(db.clone()).with_secrets(secrets.clone()),
    ));

    let webhook_store = Arc::new(DbWebhookStore::new(db.clone(), secrets.clone()));
    let simulator = embedded_simulator(&config)?;
    let engine = WaEngine::new(
        db.clone(),
        secrets.clone(),
        engine_options(&config, &simulator),
    )
    .map_err(|e| StartError::Engine(e.to_string()))?;
    let engine: Arc<dyn wasup_actors::ports::Engine> = Arc::new(engine);
    let gateway = wasup_actors::start_system(
        store,
        engine.clone(),
        wasup_actors::SupervisorOptions {
            restore_concurrency: config.restore_concurrency,
            // Cluster mode: a node starts only the sessions it claims.
            restore_at_boot: config.cluster.is_none(),
            ..Default::default()
        },
    )
    .await?;
    bootstrap_admin_key(&gateway, &config).await?;
    // Messages: pending rows of the last run are picked up as it starts.
    let messages = wasup_actors::outbound::start_messaging(
        Arc::new(
            crate::db::messages::DbMessageStore::new(db.clone(), secrets.clone())
                .with_outbox_signal(outbox.clone())
                .with_event_hub(hub.clone()),
        ),
        engine,
        gateway.registry.clone(),
        wasup_actors::outbound::OutboundOptions {
            retention: config.message_retention,
            rescan: config
                .cluster
                .is_some()
                .then_some(std::time::Duration::from_secs(2)),
            ..Default::default()
        },
    );
    let cluster = match (&config.cluster, &fence) {
        (Some(c), Some(fence)) => Some(
            crate::cluster::ClusterNode::register(
                c.clone(),
                db.clone(),
                fence.clone(),
                gateway.supervisor.clone(),
                gateway.registry.clone(),
                gateway.keys.clone(),
            )
            .await?,
        ),
        _ => None,
    };
    let cluster_info = web::Data::new(crate::cluster::forward::ClusterInfo::new(
        config.node_id.clone(),
        cluster.clone(),
        gateway.registry.clone(),
    ));
    let node_header = (crate::cluster::forward::NODE_HEADER, config.node_id.clone());
    if config.webhook_allow_private {
        log::warn!(
            "WASUP_WEBHOOK_ALLOW_PRIVATE=true: webhooks may reach private and loopback addresses"
        );
    }
    let sender = HttpSender::new(config.webhook_allow_private)
        .map_err(|e| StartError::Engine(e.to_string()))?;
    let webhooks = wasup_actors::webhook::start_webhooks(
        webhook_store,
        Arc::new(sender),
        gateway.registry.clone(),
        Some(outbox),
        wasup_actors::webhook::WebhookOptions {
            max_concurrency: config.webhook_concurrency,
            retention: config.webhook_retention,
            dead_letter_retention: config.dead_letter_retention,
            ..Default::default()
        },
    );
    let metrics = web::Data::new(
        crate::metrics::Metrics::new(
            config.metrics_token.as_deref(),
            gateway.registry.clone(),
            webhooks.clone(),
            started.0,
            started.1,
        )
        .with_cluster(cluster.clone()),
    );

    let draining = Arc::new(AtomicBool::new(false));
    let state = web::Data::new(AppState {
        web: gateway.web.clone(),
        webhooks,
        messages,
        keys: gateway.keys.clone(),
        draining: draining.clone(),
        #[cfg(feature = "simulator")]
        simulator,
    });
    let limit = config.body_limit;
    wasup_actors::limits::install(config.limits.tenant);
    wasup_actors::web::install_proxy_guard(Arc::new(
        crate::engine::proxy_guard::ProxyAddressPolicy {
            allow_private: config.limits.proxy_allow_private,
        },
    ));
    // Data<Option<..>>: an absent limiter (0 = off) is still one registered value.
    let auth_failures = web::Data::new(crate::api::auth_limit::AuthFailures::new(
        config.limits.auth_failures_per_minute,
    ));
    let sign_ins = web::Data::new(crate::api::dashboard::signin::SignIns::default());
    let server = HttpServer::new(move || {
        App::new()
            .app_data(sign_ins.clone())
            .app_data(state.clone())
            .app_data(auth_failures.clone())
            .app_data(BodyLimit(limit))
            .app_data(metrics.clone())
            .app_data(events.clone())
            .app_data(cluster_info.clone())
            .wrap(middleware::from_fn(crate::cluster::forward::forward))
            .wrap(middleware::from_fn(api::request_log))
            .wrap(middleware::DefaultHeaders::new().add(node_header.clone()))
            .configure(api::routes)
    })
    .disable_signals()
    .shutdown_timeout(DRAIN_TIMEOUT.as_secs())
    .workers(config.http_workers)
    .bind(config.bind)
    .map_err(|e| StartError::Bind(config.bind, e))?;
    let stop_signal = stop_signal().map_err(StartError::Serve)?;
    for addr in server.addrs() {
        // Tests and scripts read this line to find the port.
        println!("wasup listening on http://{addr}");
    }
    let _ = std::io::stdout().flush();
    let server = server.run();
    let handle = server.handle();
    // Under systemd (Type=notify): ready once migrated and listening.
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
    spawn_watchdog(gateway.web.clone());
    if let Some(node) = &cluster {
        node.start();
    }

    actix_web::rt::spawn(async move {
        stop_signal.await;
        log::info!("stop signal received: draining requests, closing sessions");
        draining.store(true, Ordering::Relaxed);
        // Cluster mode: hand every session over to the other nodes first.
        if let Some(node) = &cluster {
            if tokio::time::timeout(CLUSTER_DRAIN_TIMEOUT, node.drain())
                .await
                .is_err()
            {
                log::warn!("cluster: drain did not finish within {CLUSTER_DRAIN_TIMEOUT:?}");
            }
        }
        // Event streams end now with a last message, instead of holding the
        // drain open until its timeout.
        hub.close();
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
        handle.stop(true).await;
    });
    server.await.map_err(StartError::Serve)?;

    // Close every session cleanly; their desired state stays as it was so
    // the next start brings them back.
    let closing = gateway.supervisor.send(wasup_actors::supervisor::Shutdown);
    if tokio::time::timeout(SESSION_CLOSE_TIMEOUT, closing)
        .await
        .is_err()
    {
        log::warn!("sessions did not all close within {SESSION_CLOSE_TIMEOUT:?}; exiting anyway");
    }
    log::info!("stopped");
    Ok(())
}

/// The embedded simulator of a simulator build (none when the gateway is
/// pointed at a simulator process by URL).
#[cfg(feature = "simulator")]
type EmbeddedSimulator = Option<crate::simulator::Simulator>;
#[cfg(not(feature = "simulator"))]
type EmbeddedSimulator = Option<std::convert::Infallible>;

#[cfg(feature = "simulator")]
fn embedded_simulator(config: &Config) -> Result<EmbeddedSimulator, StartError> {
    if config.simulator_url.is_some() {
        return Ok(None);
    }
    let dir = config.data_dir.join("simulator");
    crate::crypto::create_private_dir(&dir)
        .map_err(|e| StartError::DataDir(dir.display().to_string(), e))?;
    crate::simulator::Simulator::open(&dir)
        .map(Some)
        .map_err(|e| StartError::Engine(format!("simulator: {e}")))
}

#[cfg(not(feature = "simulator"))]
fn embedded_simulator(_: &Config) -> Result<EmbeddedSimulator, StartError> {
    Ok(None)
}

#[cfg_attr(not(feature = "simulator"), allow(unused_variables))]
fn engine_options(config: &Config, simulator: &EmbeddedSimulator) -> EngineOptions {
    #[allow(unused_mut)]
    let mut options = EngineOptions {
        wa_version: config.wa_version,
        connect_timeout: config.connect_timeout,
        proxy_policy: crate::engine::proxy_guard::ProxyAddressPolicy {
            allow_private: config.limits.proxy_allow_private,
        },
        ..Default::default()
    };
    // A simulator build never dials WhatsApp: the embedded simulator, or the
    // simulator process named by WASUP_SIMULATOR_URL.
    #[cfg(feature = "simulator")]
    {
        options.transport = match simulator {
            Some(sim) => crate::engine::TransportChoice::Factory(sim.transport_factory_arc()),
            None => crate::engine::TransportChoice::Url(
                config.simulator_url.clone().unwrap_or_default(),
            ),
        };
    }
    options
}

/// Under systemd with `WatchdogSec=`, ping the watchdog at half the period,
/// but only while a real liveness check passes: the database answers through
/// the WebActor (so the actor system is alive too).
fn spawn_watchdog(web: actix::Addr<wasup_actors::web::WebActor>) {
    let mut usec = 0;
    if !sd_notify::watchdog_enabled(false, &mut usec) || usec == 0 {
        return;
    }
    let period = Duration::from_micros(usec / 2);
    actix_web::rt::spawn(async move {
        loop {
            tokio::time::sleep(period).await;
            let check = web.send(wasup_actors::web::CheckReady);
            match tokio::time::timeout(period, check).await {
                Ok(Ok(Ok(_))) => {
                    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Watchdog]);
                }
                _ => log::warn!("liveness check failed: not pinging the systemd watchdog"),
            }
        }
    });
}

/// Register for SIGTERM and SIGINT now (so a signal that arrives right after
/// the server says it listens is not lost to the default action), and
/// return a future that resolves on the first of them.
fn stop_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {},
            _ = int.recv() => {},
        }
    })
}

/// First start with no key: the WebActor creates one admin key. Its value
/// comes from `WASUP_ADMIN_KEY` or is random; a random one is written to
/// `<data dir>/admin.key` (mode 0600) and printed once on stdout BEFORE it is
/// committed, so a failed write stops the start with no key in the database
/// (the next start tries again) instead of locking the operator out. Never
/// again after.
async fn bootstrap_admin_key(
    gateway: &wasup_actors::Gateway,
    config: &Config,
) -> Result<(), StartError> {
    if !gateway.keys.is_empty() {
        return Ok(());
    }
    let from_env = config.admin_key.is_some();
    let secret = match config.admin_key.clone() {
        Some(preset) => preset,
        None => {
            let secret = wasup_actors::keys::generate_key();
            let path = config.data_dir.join("admin.key");
            write_admin_key(&path, &format!("{secret}\n")).map_err(StartError::AdminKey)?;
            println!(
                "wasup: created the first admin API key (shown once; also saved to {}):\n{secret}",
                path.display()
            );
            secret
        }
    };
    let created = gateway
        .web
        .send(wasup_actors::web::BootstrapAdminKey {
            preset: Some(secret),
        })
        .await
        .map_err(|e| StartError::AdminKey(std::io::Error::other(e.to_string())))?
        .map_err(|e| StartError::AdminKey(std::io::Error::other(e.to_string())))?;
    if created.is_some() && from_env {
        log::info!("created the first admin API key from WASUP_ADMIN_KEY");
    }
    Ok(())
}

/// Write admin.key as a new file only its owner can read. A key is only
/// made when the database has none, so an admin.key already there is stale:
/// it is removed (a symlink is removed itself, never its target) and the file
/// created anew with `create_new` and `O_NOFOLLOW`, so nothing planted at the
/// path (a symlink, a file of another mode or owner) is written through; if
/// something reappears in between, the start fails rather than follow it.
fn write_admin_key(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    file.write_all(contents.as_bytes())?;
    file.sync_all()
}
