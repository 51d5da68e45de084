//! Wiring: what the binary calls to bring the actors up.

use std::sync::Arc;

use actix::prelude::*;

use crate::keys::KeyRing;
use crate::model::SessionView;
use crate::ports::{Engine, Store, StoreError};
use crate::registry::SessionRegistry;
use crate::supervisor::{Restore, SessionSupervisor, Shutdown, SupervisorOptions};
use crate::web::WebActor;

/// The running actors and the shared in-memory state the API layer reads.
#[derive(Clone)]
pub struct Gateway {
    pub web: Addr<WebActor>,
    pub supervisor: Addr<SessionSupervisor>,
    pub registry: Arc<SessionRegistry>,
    pub keys: Arc<KeyRing>,
}

/// Load every session and key from the store, fill the registry and the key
/// ring, start the supervisor and the WebActor, and start restoring the
/// sessions whose desired state is `running` in the background. Call it from
/// inside an actix System (e.g. in `actix_web::rt::System::new().block_on`).
pub async fn start_system(
    store: Arc<dyn Store>,
    engine: Arc<dyn Engine>,
    options: SupervisorOptions,
) -> Result<Gateway, StoreError> {
    let (sessions, keys) = futures::try_join!(store.load_sessions(), store.load_api_keys())?;
    let registry = Arc::new(SessionRegistry::new());
    for record in sessions {
        registry.upsert(SessionView {
            record,
            next_retry_at: None,
            restarts: 0,
            engine_alive: false,
            qr: None,
        });
    }
    let keys = Arc::new(KeyRing::new(keys));
    let restore_at_boot = options.restore_at_boot;
    let supervisor =
        SessionSupervisor::new(store.clone(), engine, registry.clone(), options).start();
    let web = WebActor::new(store, registry.clone(), keys.clone(), supervisor.clone()).start();
    if restore_at_boot {
        supervisor.do_send(Restore);
    }
    Ok(Gateway {
        web,
        supervisor,
        registry,
        keys,
    })
}

impl Gateway {
    /// Stop every engine cleanly (desired states unchanged); bounded by
    /// `SupervisorOptions::shutdown_timeout`.
    pub async fn shutdown(&self) {
        if self.supervisor.send(Shutdown).await.is_err() {
            log::warn!("shutdown: the session supervisor is already gone");
        }
    }
}
