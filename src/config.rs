//! Settings: one struct from flags and `WASUP_*` environment variables,
//! passed explicitly. `validate` turns raw values into checked settings and
//! names the setting in its one-line error.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use wasup_actors::keys::MIN_PRESET_KEY_LEN;
use wasup_actors::redact::{mask_url, redacted};

/// wasup: a self-hosted WhatsApp multi-session gateway.
///
/// Every flag can also be set by the environment variable shown. A bad value
/// stops the start with one line naming the setting (exit code 2).
#[derive(Parser, Clone)]
#[command(name = "wasup", version, about, long_about = None)]
pub struct Settings {
    /// Address and port the HTTP API listens on (port 0 picks a free port).
    #[arg(long, env = "WASUP_BIND", default_value = "127.0.0.1:2785")]
    pub bind: String,

    /// Directory for the SQLite database, the master key and admin.key.
    #[arg(long, env = "WASUP_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,

    /// Database URL: a file path or sqlite:// URL for SQLite, or a
    /// postgres:// URL for PostgreSQL. Default: SQLite at <data dir>/wasup.db.
    #[arg(long, env = "WASUP_DATABASE_URL")]
    pub database_url: Option<String>,

    /// Value of the first admin key (at least 32 characters), created on first
    /// boot when no key exists (default: a random key, printed once and
    /// written to <data dir>/admin.key).
    #[arg(long, env = "WASUP_ADMIN_KEY", hide_env_values = true)]
    pub admin_key: Option<String>,

    /// Master key encrypting device credentials and secrets at rest: 64 hex
    /// characters or base64 of 32 bytes (default: <data dir>/master.key,
    /// created with mode 0600 on first boot).
    #[arg(long, env = "WASUP_MASTER_KEY", hide_env_values = true)]
    pub master_key: Option<String>,

    /// Pin the WhatsApp Web version as MAJOR.MINOR.PATCH (e.g. 2.3000.1023456789)
    /// instead of fetching the current one from WhatsApp every 24 h.
    #[arg(long, env = "WASUP_WA_VERSION")]
    pub wa_version: Option<String>,

    /// Seconds a starting session may take to reach WhatsApp before the
    /// attempt counts as failed and the supervisor's backoff takes over.
    #[arg(long, env = "WASUP_CONNECT_TIMEOUT", default_value_t = 30)]
    pub connect_timeout: u64,

    /// Sessions restored at the same time at start.
    #[arg(long, env = "WASUP_RESTORE_CONCURRENCY", default_value_t = 8)]
    pub restore_concurrency: usize,

    /// Largest request body accepted, in bytes.
    #[arg(long, env = "WASUP_BODY_LIMIT", default_value_t = 1024 * 1024)]
    pub body_limit: usize,

    /// Allow webhook URLs that resolve to loopback, private, link-local (cloud
    /// metadata), CGNAT or other non-public addresses. Off by default (SSRF).
    #[arg(
        long,
        env = "WASUP_WEBHOOK_ALLOW_PRIVATE",
        default_value_t = false,
        action = clap::ArgAction::Set,
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub webhook_allow_private: bool,

    /// Days delivered webhook events and attempt logs are kept (dead letters
    /// are kept until redriven or their webhook is deleted).
    #[arg(long, env = "WASUP_WEBHOOK_RETENTION_DAYS", default_value_t = 7)]
    pub webhook_retention_days: u64,

    /// Days stored messages are kept (bodies included); pruned hourly.
    /// Messages still waiting to be sent are never pruned.
    #[arg(long, env = "WASUP_MESSAGE_RETENTION_DAYS", default_value_t = 30)]
    pub message_retention_days: u64,

    /// Days a dead letter (a webhook delivery out of attempts) is kept for a
    /// redrive before the hourly prune deletes it with its attempts.
    #[arg(long, env = "WASUP_DEAD_LETTER_RETENTION_DAYS", default_value_t = 30)]
    pub dead_letter_retention_days: u64,

    /// Webhook deliveries in flight at once (each webhook has at most one).
    #[arg(long, env = "WASUP_WEBHOOK_CONCURRENCY", default_value_t = 128)]
    pub webhook_concurrency: usize,

    /// Bearer token required by GET /metrics (`Authorization: Bearer <token>`);
    /// at least 16 visible characters. Unset: /metrics is open.
    #[arg(long, env = "WASUP_METRICS_TOKEN", hide_env_values = true)]
    pub metrics_token: Option<String>,

    #[command(flatten)]
    pub limits: crate::limits::LimitSettings,
    /// Concurrent event streams (`GET /api/events`) one API key may hold open.
    #[arg(long, env = "WASUP_EVENT_STREAMS_PER_KEY", default_value_t = 8)]
    pub event_streams_per_key: usize,

    /// Events an event stream may fall behind the live feed before it is cut
    /// off (it resumes from the log with `Last-Event-ID`).
    #[arg(long, env = "WASUP_EVENT_STREAM_BUFFER", default_value_t = 1024)]
    pub event_stream_buffer: usize,

    /// Threads serving HTTP requests. One by default: request handling is
    /// light (session work runs on the actors and the engine, database work
    /// on the blocking pool) and each worker costs about 1 MiB resident even
    /// when idle; raise it when the API itself is the bottleneck.
    #[arg(long, env = "WASUP_HTTP_WORKERS", default_value_t = 1)]
    pub http_workers: usize,

    /// Connect sessions to a simulator at this ws:// URL instead of WhatsApp
    /// (only in builds with the `simulator` feature).
    #[cfg(feature = "simulator")]
    #[arg(long, env = "WASUP_SIMULATOR_URL")]
    pub simulator_url: Option<String>,

    #[command(flatten)]
    pub cluster: crate::cluster::settings::ClusterSettings,
}

/// Settings after validation.
#[derive(Clone)]
pub struct Config {
    pub bind: SocketAddr,
    pub data_dir: PathBuf,
    pub database_url: String,
    pub admin_key: Option<String>,
    pub master_key: Option<[u8; 32]>,
    pub wa_version: Option<(u32, u32, u32)>,
    pub connect_timeout: Duration,
    pub restore_concurrency: usize,
    pub body_limit: usize,
    pub webhook_allow_private: bool,
    pub webhook_retention: Duration,
    pub dead_letter_retention: Duration,
    pub webhook_concurrency: usize,
    pub message_retention: Duration,
    pub metrics_token: Option<String>,
    pub limits: crate::limits::LimitConfig,
    pub event_streams_per_key: usize,
    pub event_stream_buffer: usize,
    pub http_workers: usize,
    #[cfg(feature = "simulator")]
    pub simulator_url: Option<String>,
    /// Cluster mode (None: a single node).
    pub cluster: Option<crate::cluster::settings::ClusterConfig>,
    /// This node's id (`X-Wasup-Node`): the cluster's, else host name and port.
    pub node_id: String,
}

/// A setting that cannot be used; the message names it.
#[derive(Debug, thiserror::Error)]
#[error("invalid {setting}: {reason}")]
pub struct ConfigError {
    pub setting: &'static str,
    pub reason: String,
}

fn invalid(setting: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        setting,
        reason: reason.into(),
    }
}

impl Settings {
    pub fn validate(self) -> Result<Config, ConfigError> {
        let bind: SocketAddr = self.bind.parse().map_err(|_| {
            invalid(
                "WASUP_BIND",
                format!("'{}' is not an address like 127.0.0.1:2785", self.bind),
            )
        })?;
        if self.data_dir.as_os_str().is_empty() {
            return Err(invalid("WASUP_DATA_DIR", "must not be empty"));
        }
        let database_url = match self.database_url.filter(|u| !u.trim().is_empty()) {
            None => self
                .data_dir
                .join("wasup.db")
                .to_string_lossy()
                .into_owned(),
            Some(url) => parse_database_url(&url)?,
        };
        let admin_key = match self.admin_key {
            Some(key)
                if key.chars().count() < MIN_PRESET_KEY_LEN
                    || key.chars().any(char::is_whitespace) =>
            {
                return Err(invalid(
                    "WASUP_ADMIN_KEY",
                    format!("must be at least {MIN_PRESET_KEY_LEN} characters without spaces"),
                ))
            }
            other => other,
        };
        let master_key = self
            .master_key
            .map(|k| parse_master_key(&k))
            .transpose()
            .map_err(|reason| invalid("WASUP_MASTER_KEY", reason.to_string()))?;
        let wa_version = self
            .wa_version
            .map(|v| parse_wa_version(&v))
            .transpose()
            .map_err(|reason| invalid("WASUP_WA_VERSION", reason.to_string()))?;
        if !(1..=600).contains(&self.connect_timeout) {
            return Err(invalid("WASUP_CONNECT_TIMEOUT", "must be 1–600 seconds"));
        }
        if !(1..=256).contains(&self.restore_concurrency) {
            return Err(invalid("WASUP_RESTORE_CONCURRENCY", "must be 1–256"));
        }
        if !(1024..=64 * 1024 * 1024).contains(&self.body_limit) {
            return Err(invalid("WASUP_BODY_LIMIT", "must be 1 KiB–64 MiB"));
        }
        if !(1..=3650).contains(&self.webhook_retention_days) {
            return Err(invalid(
                "WASUP_WEBHOOK_RETENTION_DAYS",
                "must be 1–3650 days",
            ));
        }
        if !(1..=3650).contains(&self.message_retention_days) {
            return Err(invalid(
                "WASUP_MESSAGE_RETENTION_DAYS",
                "must be 1–3650 days",
            ));
        }
        if !(1..=3650).contains(&self.dead_letter_retention_days) {
            return Err(invalid(
                "WASUP_DEAD_LETTER_RETENTION_DAYS",
                "must be 1–3650 days",
            ));
        }
        if !(1..=1024).contains(&self.webhook_concurrency) {
            return Err(invalid("WASUP_WEBHOOK_CONCURRENCY", "must be 1–1024"));
        }
        if let Some(token) = &self.metrics_token {
            if token.len() < 16 || !token.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(invalid(
                    "WASUP_METRICS_TOKEN",
                    "must be at least 16 visible ASCII characters without spaces (unset it to leave /metrics open)",
                ));
            }
        }
        if !(1..=10_000).contains(&self.event_streams_per_key) {
            return Err(invalid("WASUP_EVENT_STREAMS_PER_KEY", "must be 1–10000"));
        }
        if !(1..=1_000_000).contains(&self.event_stream_buffer) {
            return Err(invalid("WASUP_EVENT_STREAM_BUFFER", "must be 1–1000000"));
        }
        if !(1..=256).contains(&self.http_workers) {
            return Err(invalid("WASUP_HTTP_WORKERS", "must be 1–256"));
        }
        #[cfg(feature = "simulator")]
        if let Some(url) = &self.simulator_url {
            if !url.starts_with("ws://") {
                return Err(invalid("WASUP_SIMULATOR_URL", "must be a ws:// URL"));
            }
        }
        let cluster = self.cluster.validate(
            bind.port(),
            crate::db::Backend::of_url(&database_url) == crate::db::Backend::Postgres,
        )?;
        let node_id = cluster.as_ref().map_or_else(
            || crate::cluster::settings::default_node_id(bind.port()),
            |c| c.node_id.clone(),
        );
        Ok(Config {
            bind,
            data_dir: self.data_dir,
            database_url,
            admin_key,
            master_key,
            wa_version,
            connect_timeout: Duration::from_secs(self.connect_timeout),
            restore_concurrency: self.restore_concurrency,
            body_limit: self.body_limit,
            webhook_allow_private: self.webhook_allow_private,
            webhook_retention: Duration::from_secs(self.webhook_retention_days * 24 * 3600),
            dead_letter_retention: Duration::from_secs(self.dead_letter_retention_days * 24 * 3600),
            webhook_concurrency: self.webhook_concurrency,
            message_retention: Duration::from_secs(self.message_retention_days * 24 * 3600),
            metrics_token: self.metrics_token,
            limits: self.limits.validate()?,
            event_streams_per_key: self.event_streams_per_key,
            event_stream_buffer: self.event_stream_buffer,
            http_workers: self.http_workers,
            #[cfg(feature = "simulator")]
            simulator_url: self.simulator_url,
            cluster,
            node_id,
        })
    }
}

fn parse_database_url(url: &str) -> Result<String, ConfigError> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok(url.to_string());
    }
    if let Some(path) = url.strip_prefix("sqlite://") {
        if path.is_empty() {
            return Err(invalid("WASUP_DATABASE_URL", "sqlite:// needs a file path"));
        }
        return Ok(path.to_string());
    }
    if url.contains("://") {
        return Err(invalid(
            "WASUP_DATABASE_URL",
            "use a file path, sqlite://PATH or postgres://…",
        ));
    }
    Ok(url.to_string())
}

/// Why a master key or a WhatsApp version does not parse (the reason part
/// of a `ConfigError`).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    #[error("must be 64 hex characters or base64 of 32 bytes")]
    MasterKeyEncoding,
    #[error("must be exactly 32 bytes (64 hex characters)")]
    MasterKeyLength,
    #[error("'{0}' is not MAJOR.MINOR.PATCH, e.g. 2.3000.1023456789")]
    WaVersion(String),
}

/// 64 hex characters or standard base64 of exactly 32 bytes.
pub fn parse_master_key(text: &str) -> Result<[u8; 32], ValueError> {
    use base64::Engine as _;
    let text = text.trim();
    let bytes = if text.len() == 64 && text.chars().all(|c| c.is_ascii_hexdigit()) {
        hex::decode(text).map_err(|_| ValueError::MasterKeyEncoding)?
    } else {
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(|_| ValueError::MasterKeyEncoding)?
    };
    bytes.try_into().map_err(|_| ValueError::MasterKeyLength)
}

fn parse_wa_version(text: &str) -> Result<(u32, u32, u32), ValueError> {
    let parts: Vec<&str> = text.trim().split('.').collect();
    let nums: Result<Vec<u32>, _> = parts.iter().map(|p| p.parse::<u32>()).collect();
    match nums.as_deref() {
        Ok([a, b, c]) => Ok((*a, *b, *c)),
        _ => Err(ValueError::WaVersion(text.to_string())),
    }
}

/// A database URL as Debug shows it: a PostgreSQL URL without its password,
/// an SQLite path as it is.
fn database_url_shown(url: &str) -> String {
    match crate::db::Backend::of_url(url) {
        crate::db::Backend::Postgres => mask_url(url),
        crate::db::Backend::Sqlite => url.to_string(),
    }
}

// Debug shows no key, token or database password (`wasup_actors::redact`).
impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("Settings");
        d.field("bind", &self.bind)
            .field("data_dir", &self.data_dir)
            .field(
                "database_url",
                &self.database_url.as_deref().map(database_url_shown),
            )
            .field("admin_key", &redacted(&self.admin_key))
            .field("master_key", &redacted(&self.master_key))
            .field("wa_version", &self.wa_version)
            .field("connect_timeout", &self.connect_timeout)
            .field("restore_concurrency", &self.restore_concurrency)
            .field("body_limit", &self.body_limit)
            .field("webhook_allow_private", &self.webhook_allow_private)
            .field("webhook_retention_days", &self.webhook_retention_days)
            .field(
                "dead_letter_retention_days",
                &self.dead_letter_retention_days,
            )
            .field("webhook_concurrency", &self.webhook_concurrency)
            .field("metrics_token", &redacted(&self.metrics_token))
            .field("limits", &self.limits)
            .field("event_streams_per_key", &self.event_streams_per_key)
            .field("event_stream_buffer", &self.event_stream_buffer);
        #[cfg(feature = "simulator")]
        d.field("simulator_url", &self.simulator_url);
        d.finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("Config");
        d.field("bind", &self.bind)
            .field("data_dir", &self.data_dir)
            .field("database_url", &database_url_shown(&self.database_url))
            .field("admin_key", &redacted(&self.admin_key))
            .field("master_key", &redacted(&self.master_key))
            .field("wa_version", &self.wa_version)
            .field("connect_timeout", &self.connect_timeout)
            .field("restore_concurrency", &self.restore_concurrency)
            .field("body_limit", &self.body_limit)
            .field("webhook_allow_private", &self.webhook_allow_private)
            .field("webhook_retention", &self.webhook_retention)
            .field("dead_letter_retention", &self.dead_letter_retention)
            .field("webhook_concurrency", &self.webhook_concurrency)
            .field("metrics_token", &redacted(&self.metrics_token))
            .field("limits", &self.limits)
            .field("event_streams_per_key", &self.event_streams_per_key)
            .field("event_stream_buffer", &self.event_stream_buffer);
        #[cfg(feature = "simulator")]
        d.field("simulator_url", &self.simulator_url);
        d.finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(args: &[&str]) -> Result<Config, ConfigError> {
        let mut all = vec!["wasup"];
        all.extend_from_slice(args);
        Settings::try_parse_from(all).unwrap().validate()
    }

    #[test]
    fn defaults_are_sqlite_in_data_dir() {
        let c = settings(&[]).unwrap();
        assert_eq!(c.bind.to_string(), "127.0.0.1:2785");
        assert!(c.database_url.ends_with("wasup.db"));
        assert!(!c.webhook_allow_private);
        assert_eq!(c.webhook_retention, Duration::from_secs(7 * 24 * 3600));
    }

    #[test]
    fn webhook_settings() {
        let c = settings(&["--webhook-allow-private", "true"]).unwrap();
        assert!(c.webhook_allow_private);
        let e = settings(&["--webhook-retention-days", "0"]).unwrap_err();
        assert_eq!(e.setting, "WASUP_WEBHOOK_RETENTION_DAYS");
        let c = settings(&[]).unwrap();
        assert_eq!(c.dead_letter_retention, Duration::from_secs(30 * 24 * 3600));
        let c = settings(&["--dead-letter-retention-days", "3"]).unwrap();
        assert_eq!(c.dead_letter_retention, Duration::from_secs(3 * 24 * 3600));
        let e = settings(&["--dead-letter-retention-days", "0"]).unwrap_err();
        assert_eq!(e.setting, "WASUP_DEAD_LETTER_RETENTION_DAYS");
    }

    #[test]
    fn bad_values_name_their_setting() {
        let e = settings(&["--bind", "nowhere"]).unwrap_err();
        assert_eq!(e.setting, "WASUP_BIND");
        let e = settings(&["--master-key", "short"]).unwrap_err();
        assert_eq!(e.setting, "WASUP_MASTER_KEY");
        let e = settings(&["--wa-version", "2.x"]).unwrap_err();
        assert_eq!(e.setting, "WASUP_WA_VERSION");
        let e = settings(&["--database-url", "mysql://x"]).unwrap_err();
        assert_eq!(e.setting, "WASUP_DATABASE_URL");
    }

    #[test]
    fn debug_hides_keys_tokens_and_the_database_password() {
        let admin = "a".repeat(40) + "-s3cr3t-admin";
        let master = "ab".repeat(32);
        let args = [
            "wasup",
            "--admin-key",
            &admin,
            "--master-key",
            &master,
            "--metrics-token",
            "s3cr3t-metrics-token",
            "--database-url",
            "postgres://wasup:s3cr3t-db@127.0.0.1/wasup",
        ];
        let raw = Settings::try_parse_from(args).unwrap();
        let valid = raw.clone().validate().unwrap();
        for text in [format!("{raw:?}"), format!("{valid:?}")] {
            for secret in ["s3cr3t-admin", &master, "s3cr3t-metrics", "s3cr3t-db"] {
                assert!(!text.contains(secret), "{secret} in {text}");
            }
            assert!(text.contains("127.0.0.1/wasup"), "{text}");
        }
        // The master key as bytes must not show either.
        let bytes = format!("{:?}", valid.master_key.unwrap());
        assert!(!format!("{valid:?}").contains(&bytes[1..20]));
    }

    #[test]
    fn admin_key_needs_32_characters() {
        let e = settings(&["--admin-key", &"k".repeat(31)]).unwrap_err();
        assert_eq!(e.setting, "WASUP_ADMIN_KEY");
        let key = "k".repeat(32);
        let c = settings(&["--admin-key", &key]).unwrap();
        assert_eq!(c.admin_key.as_deref(), Some(key.as_str()));
    }

    #[test]
    fn metrics_token() {
        assert_eq!(settings(&[]).unwrap().metrics_token, None);
        let c = settings(&["--metrics-token", "scrape-me-0123456789"]).unwrap();
        assert_eq!(c.metrics_token.as_deref(), Some("scrape-me-0123456789"));
        for bad in ["short", "has a space in it, long enough", ""] {
            let e = settings(&["--metrics-token", bad]).unwrap_err();
            assert_eq!(e.setting, "WASUP_METRICS_TOKEN", "{bad:?}");
        }
    }

    #[test]
    fn master_key_accepts_hex_and_base64() {
        let hex = "00".repeat(32);
        assert_eq!(parse_master_key(&hex).unwrap(), [0u8; 32]);
        let b64 = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
        assert_eq!(parse_master_key(b64).unwrap(), [0u8; 32]);
        assert_eq!(
            parse_master_key(&"00".repeat(16)),
            Err(ValueError::MasterKeyLength)
        );
        assert_eq!(parse_master_key("no!"), Err(ValueError::MasterKeyEncoding));
    }
}
