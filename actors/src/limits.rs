//! Per-tenant limits (issue 14.6): how much one caller may make the gateway
//! hold, so that no tenant can starve the others. One value per process, set
//! once at boot by the binary (`install`); until then (and in tests that do
//! not set it) the defaults apply. Each refusal is `limit_exceeded`, naming
//! the limit and its setting.

use std::sync::OnceLock;

use crate::error::WebError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Webhooks one session may have (`WASUP_MAX_WEBHOOKS_PER_SESSION`).
    pub webhooks_per_session: usize,
    /// Largest `config.metadata`, serialized as JSON (`WASUP_MAX_METADATA_BYTES`).
    pub metadata_bytes: usize,
    /// Sessions in all; `None`: unlimited (`WASUP_MAX_SESSIONS`).
    pub sessions: Option<usize>,
    /// Sessions one API key may have created (and not deleted); `None`:
    /// unlimited (`WASUP_MAX_SESSIONS_PER_KEY`).
    pub sessions_per_key: Option<usize>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            webhooks_per_session: 10,
            metadata_bytes: 16 * 1024,
            sessions: None,
            sessions_per_key: None,
        }
    }
}

static LIMITS: OnceLock<Limits> = OnceLock::new();

/// Set the process's limits; only the first call counts.
pub fn install(limits: Limits) {
    let _ = LIMITS.set(limits);
}

pub fn get() -> Limits {
    LIMITS.get().copied().unwrap_or_default()
}

impl Limits {
    pub fn check_webhooks(&self, existing: usize) -> Result<(), WebError> {
        if existing >= self.webhooks_per_session {
            return Err(WebError::LimitExceeded(format!(
                "A session may have at most {} webhooks (WASUP_MAX_WEBHOOKS_PER_SESSION)",
                self.webhooks_per_session
            )));
        }
        Ok(())
    }

    pub fn check_metadata(&self, metadata: Option<&serde_json::Value>) -> Result<(), WebError> {
        let size = metadata.map_or(0, |m| m.to_string().len());
        if size > self.metadata_bytes {
            return Err(WebError::LimitExceeded(format!(
                "config.metadata is {size} bytes serialized; at most {} are allowed (WASUP_MAX_METADATA_BYTES)",
                self.metadata_bytes
            )));
        }
        Ok(())
    }

    pub fn check_sessions(&self, existing: usize) -> Result<(), WebError> {
        match self.sessions {
            Some(max) if existing >= max => Err(WebError::LimitExceeded(format!(
                "The gateway holds at most {max} sessions (WASUP_MAX_SESSIONS)"
            ))),
            _ => Ok(()),
        }
    }

    /// `existing`: sessions this key created (and not deleted), pending
    /// creations included.
    pub fn check_sessions_per_key(&self, existing: usize) -> Result<(), WebError> {
        match self.sessions_per_key {
            Some(max) if existing >= max => Err(WebError::LimitExceeded(format!(
                "An API key may create at most {max} sessions (WASUP_MAX_SESSIONS_PER_KEY)"
            ))),
            _ => Ok(()),
        }
    }
}
