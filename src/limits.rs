//! The limit settings (issue 14.3 and 14.6), flattened into `Settings`:
//! one place for every `WASUP_*` knob that bounds what a caller may cost.

use clap::Args;
use wasup_actors::limits::Limits;

use crate::config::ConfigError;

#[derive(Args, Debug, Clone)]
pub struct LimitSettings {
    /// Invalid API keys one client address may present per minute before it
    /// gets 429 for every key (0: no limit).
    #[arg(long, env = "WASUP_AUTH_FAILURES_PER_MINUTE", default_value_t = 30)]
    pub auth_failures_per_minute: u32,

    /// Webhooks one session may have.
    #[arg(long, env = "WASUP_MAX_WEBHOOKS_PER_SESSION", default_value_t = 10)]
    pub max_webhooks_per_session: usize,

    /// Largest `config.metadata` of a session, in bytes of serialized JSON.
    #[arg(long, env = "WASUP_MAX_METADATA_BYTES", default_value_t = 16 * 1024)]
    pub max_metadata_bytes: usize,

    /// Sessions the gateway holds in all (default: unlimited).
    #[arg(long, env = "WASUP_MAX_SESSIONS")]
    pub max_sessions: Option<usize>,

    /// Sessions one API key may have created and not deleted (default: unlimited).
    #[arg(long, env = "WASUP_MAX_SESSIONS_PER_KEY")]
    pub max_sessions_per_key: Option<usize>,

    /// Allow session proxy URLs that resolve to loopback, private, link-local
    /// (cloud metadata), CGNAT or other non-public addresses. Off by default.
    #[arg(
        long,
        env = "WASUP_PROXY_ALLOW_PRIVATE",
        default_value_t = false,
        action = clap::ArgAction::Set,
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub proxy_allow_private: bool,
}

/// The limits after validation.
#[derive(Debug, Clone, Copy)]
pub struct LimitConfig {
    pub auth_failures_per_minute: u32,
    pub tenant: Limits,
    /// `WASUP_PROXY_ALLOW_PRIVATE`.
    pub proxy_allow_private: bool,
}

impl LimitSettings {
    pub fn validate(self) -> Result<LimitConfig, ConfigError> {
        let bad = |setting, reason: &str| ConfigError {
            setting,
            reason: reason.to_string(),
        };
        if !(1..=10_000).contains(&self.max_webhooks_per_session) {
            return Err(bad("WASUP_MAX_WEBHOOKS_PER_SESSION", "must be 1–10000"));
        }
        if !(2..=1024 * 1024).contains(&self.max_metadata_bytes) {
            return Err(bad("WASUP_MAX_METADATA_BYTES", "must be 2 B–1 MiB"));
        }
        if self.max_sessions == Some(0) {
            return Err(bad(
                "WASUP_MAX_SESSIONS",
                "must be at least 1 (unset it for no limit)",
            ));
        }
        if self.max_sessions_per_key == Some(0) {
            return Err(bad(
                "WASUP_MAX_SESSIONS_PER_KEY",
                "must be at least 1 (unset it for no limit)",
            ));
        }
        Ok(LimitConfig {
            auth_failures_per_minute: self.auth_failures_per_minute,
            tenant: Limits {
                webhooks_per_session: self.max_webhooks_per_session,
                metadata_bytes: self.max_metadata_bytes,
                sessions: self.max_sessions,
                sessions_per_key: self.max_sessions_per_key,
            },
            proxy_allow_private: self.proxy_allow_private,
        })
    }
}
