//! The cluster settings, flattened into `Settings`. Cluster mode is on when
//! `WASUP_NODE_URL` is set (a node other nodes cannot reach cannot take
//! forwarded commands); it needs PostgreSQL. Every other cluster setting
//! without `WASUP_NODE_URL`, or any of them on SQLite, is refused with one
//! line (exit 2).

use std::time::Duration;

use clap::Args;

use crate::config::ConfigError;

#[derive(Args, Debug, Clone)]
pub struct ClusterSettings {
    /// How other nodes reach this one (http://host:port); setting it turns
    /// cluster mode on (PostgreSQL only).
    #[arg(long, env = "WASUP_NODE_URL")]
    pub node_url: Option<String>,

    /// This node's id in the cluster (default: host name and port).
    #[arg(long, env = "WASUP_NODE_ID")]
    pub node_id: Option<String>,

    /// Sessions this node may run (default: no limit).
    #[arg(long, env = "WASUP_NODE_CAPACITY")]
    pub node_capacity: Option<u32>,

    /// Lifetime of a session lease in ms; renewed every third of it, and a
    /// node stops its engines once two thirds passed without a renewal.
    #[arg(long, env = "WASUP_LEASE_TTL_MS")]
    pub lease_ttl_ms: Option<u64>,
}

/// The cluster settings after validation (cluster mode on).
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    pub node_id: String,
    pub node_url: String,
    pub capacity: u32,
    pub lease_ttl: Duration,
}

impl ClusterConfig {
    /// Leases are renewed this often.
    pub fn renew_every(&self) -> Duration {
        self.lease_ttl / 3
    }
    /// A node that has not renewed for this long stops its engines: a third
    /// of the TTL before any other node may claim its sessions.
    pub fn fence_after(&self) -> Duration {
        self.lease_ttl * 2 / 3
    }
}

pub const DEFAULT_LEASE_TTL_MS: u64 = 15_000;

fn bad(setting: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        setting,
        reason: reason.into(),
    }
}

/// `host:port`: the default node id.
pub fn default_node_id(port: u16) -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates
    // within it or truncates.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let host = if rc == 0 {
        let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
        String::from_utf8_lossy(&buf[..end]).into_owned()
    } else {
        "localhost".to_string()
    };
    format!("{host}:{port}")
}

fn valid_node_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
}

impl ClusterSettings {
    /// None: single-node mode. `postgres`: the database URL is PostgreSQL.
    pub fn validate(self, port: u16, postgres: bool) -> Result<Option<ClusterConfig>, ConfigError> {
        let named = [
            ("WASUP_NODE_URL", self.node_url.is_some()),
            ("WASUP_NODE_ID", self.node_id.is_some()),
            ("WASUP_NODE_CAPACITY", self.node_capacity.is_some()),
            ("WASUP_LEASE_TTL_MS", self.lease_ttl_ms.is_some()),
        ];
        let Some((first, _)) = named.iter().find(|(_, set)| *set) else {
            return Ok(None);
        };
        if !postgres {
            return Err(bad(
                first,
                "cluster mode needs PostgreSQL (WASUP_DATABASE_URL=postgres://…); on SQLite one process serves one data dir",
            ));
        }
        let Some(url) = self.node_url else {
            return Err(bad(
                "WASUP_NODE_URL",
                format!("{first} is a cluster setting: set WASUP_NODE_URL (how other nodes reach this one) to turn cluster mode on"),
            ));
        };
        let url = url.trim_end_matches('/').to_string();
        let parsed = url::Url::parse(&url)
            .map_err(|_| bad("WASUP_NODE_URL", "must be an http:// or https:// URL"))?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
            return Err(bad("WASUP_NODE_URL", "must be an http:// or https:// URL"));
        }
        let node_id = self.node_id.unwrap_or_else(|| default_node_id(port));
        if !valid_node_id(&node_id) {
            return Err(bad(
                "WASUP_NODE_ID",
                "must be 1–64 characters of letters, digits, '-', '_', '.' and ':'",
            ));
        }
        let ttl = self.lease_ttl_ms.unwrap_or(DEFAULT_LEASE_TTL_MS);
        if !(1_000..=600_000).contains(&ttl) {
            return Err(bad("WASUP_LEASE_TTL_MS", "must be 1000–600000"));
        }
        Ok(Some(ClusterConfig {
            node_id,
            node_url: url,
            capacity: self.node_capacity.unwrap_or(u32::MAX),
            lease_ttl: Duration::from_millis(ttl),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(url: Option<&str>, id: Option<&str>, cap: Option<u32>) -> ClusterSettings {
        ClusterSettings {
            node_url: url.map(str::to_string),
            node_id: id.map(str::to_string),
            node_capacity: cap,
            lease_ttl_ms: None,
        }
    }

    #[test]
    fn off_without_settings_and_refused_on_sqlite() {
        assert!(s(None, None, None).validate(1, false).unwrap().is_none());
        let e = s(None, None, Some(3)).validate(1, false).unwrap_err();
        assert_eq!(e.setting, "WASUP_NODE_CAPACITY");
        assert!(e.reason.contains("PostgreSQL"), "{e}");
        let e = s(Some("http://a:1"), None, None)
            .validate(1, false)
            .unwrap_err();
        assert_eq!(e.setting, "WASUP_NODE_URL");
    }

    #[test]
    fn needs_a_node_url_and_defaults_the_id() {
        let e = s(None, Some("n1"), None).validate(1, true).unwrap_err();
        assert_eq!(e.setting, "WASUP_NODE_URL");
        let c = s(Some("http://10.0.0.1:2785/"), None, None)
            .validate(2785, true)
            .unwrap()
            .unwrap();
        assert!(c.node_id.ends_with(":2785"), "{}", c.node_id);
        assert_eq!(c.node_url, "http://10.0.0.1:2785");
        assert_eq!(c.capacity, u32::MAX);
        assert_eq!(c.renew_every(), Duration::from_secs(5));
        assert_eq!(c.fence_after(), Duration::from_secs(10));
        let e = s(Some("ftp://x"), None, None)
            .validate(1, true)
            .unwrap_err();
        assert_eq!(e.setting, "WASUP_NODE_URL");
        let e = s(Some("http://x"), Some("a b"), None)
            .validate(1, true)
            .unwrap_err();
        assert_eq!(e.setting, "WASUP_NODE_ID");
    }
}
