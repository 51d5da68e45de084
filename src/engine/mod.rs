//! whatsapp-rust adapter behind the Engine port.
//!
//! PLACEHOLDER until the adapter lands: same public names, every start fails.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use wasup_actors::ports::{Engine, EngineError, EngineEventSink, EngineHandle, EngineSpec};
use wasup_actors::SessionId;

use crate::crypto::SecretBox;
use crate::db::Db;

#[derive(Clone, Debug, Default)]
pub struct EngineOptions {
    pub wa_version: Option<(u32, u32, u32)>,
    pub connect_timeout: Duration,
}

pub struct WaEngine;

impl WaEngine {
    pub fn new(
        _db: Db,
        _secrets: Arc<SecretBox>,
        _options: EngineOptions,
    ) -> Result<WaEngine, String> {
        Ok(WaEngine)
    }
}

impl Engine for WaEngine {
    fn start(
        &self,
        _spec: EngineSpec,
        _sink: EngineEventSink,
    ) -> BoxFuture<'static, Result<Box<dyn EngineHandle>, EngineError>> {
        Box::pin(async { Err(EngineError::Failed("engine not built yet".into())) })
    }
    fn forget(&self, _id: SessionId) -> BoxFuture<'static, Result<(), EngineError>> {
        Box::pin(async { Ok(()) })
    }
}
