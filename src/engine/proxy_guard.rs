//! The address policy for session proxies: the same classes of address the
//! webhook guard refuses (loopback, private, link-local/cloud metadata,
//! CGNAT, …; `webhooks::guard::refused`), with their own opt-out,
//! `WASUP_PROXY_ALLOW_PRIVATE`. Checked when a `proxyUrl` is set (create,
//! `PATCH …/proxy`) and again at every connect, against the very addresses
//! the tunnel dials, so a DNS answer that changed cannot slip through.
//!
//! A host name that does not resolve when the URL is set is accepted (the
//! proxy may only be reachable later); the connect-time check still applies.

use std::net::{IpAddr, SocketAddr};

use futures::future::BoxFuture;
use wasup_actors::web::ProxyGuard;
use wasup_actors::WebError;

use crate::webhooks::guard::{refused, resolve_within, DNS_TIMEOUT};

/// What a refusal says: the host and the kind of address, never the
/// address a name resolved to (that would map the internal network).
pub fn refusal(host: &str, kind: &str) -> String {
    format!(
        "The proxy URL's host '{host}' is or resolves to a {kind} address; such addresses are refused unless WASUP_PROXY_ALLOW_PRIVATE=true"
    )
}

#[derive(Clone, Copy, Debug)]
pub struct ProxyAddressPolicy {
    pub allow_private: bool,
}

impl ProxyAddressPolicy {
    /// The first refused address among `ips`, as the caller's message.
    fn check_ips(&self, host: &str, ips: impl IntoIterator<Item = IpAddr>) -> Result<(), String> {
        if self.allow_private {
            return Ok(());
        }
        for ip in ips {
            if let Some(kind) = refused(ip) {
                return Err(refusal(host, kind));
            }
        }
        Ok(())
    }

    /// Resolve `host:port` (bounded by the DNS timeout) and check every
    /// address; the addresses to dial.
    pub async fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, String> {
        let lookup = async {
            Ok(tokio::net::lookup_host((host, port))
                .await?
                .collect::<Vec<_>>())
        };
        let addrs = resolve_within(host, DNS_TIMEOUT, lookup)
            .await
            .map_err(|e| format!("proxy {host}:{port} does not resolve: {e}"))?;
        self.check_ips(host, addrs.iter().map(|a| a.ip()))?;
        Ok(addrs)
    }

    /// The check when a URL is set: literal addresses and names that resolve now.
    pub async fn check_url(&self, raw: &str) -> Result<(), String> {
        if self.allow_private {
            return Ok(());
        }
        let Ok(url) = url::Url::parse(raw) else {
            return Ok(()); // the syntax is validated elsewhere
        };
        match url.host() {
            Some(url::Host::Ipv4(ip)) => self.check_ips(&ip.to_string(), [IpAddr::V4(ip)]),
            Some(url::Host::Ipv6(ip)) => self.check_ips(&ip.to_string(), [IpAddr::V6(ip)]),
            Some(url::Host::Domain(name)) => {
                let port = url.port_or_known_default().unwrap_or(1080);
                match self.resolve(name, port).await {
                    Err(why) if why.starts_with("The proxy URL") => Err(why),
                    // Unresolvable now: checked again at connect time.
                    _ => Ok(()),
                }
            }
            None => Ok(()),
        }
    }
}

impl ProxyGuard for ProxyAddressPolicy {
    fn check(&self, url: String) -> BoxFuture<'static, Result<(), WebError>> {
        let policy = *self;
        Box::pin(async move {
            policy
                .check_url(&url)
                .await
                .map_err(WebError::ProxyUrlNotAllowed)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn private_targets_are_refused_unless_allowed() {
        let strict = ProxyAddressPolicy {
            allow_private: false,
        };
        for bad in [
            "http://127.0.0.1:3128",
            "socks5://u:p@[::1]:1080",
            "http://169.254.169.254",
            "http://10.0.0.1:8080",
            "socks5://localhost:1080",
        ] {
            let why = strict.check_url(bad).await.unwrap_err();
            assert!(why.contains("WASUP_PROXY_ALLOW_PRIVATE"), "{bad}: {why}");
            assert!(
                !why.contains("127.0.0.1") || bad.contains("127.0.0.1"),
                "{why}"
            );
        }
        assert_eq!(strict.check_url("http://93.184.216.34:3128").await, Ok(()));
        let open = ProxyAddressPolicy {
            allow_private: true,
        };
        assert_eq!(open.check_url("http://127.0.0.1:3128").await, Ok(()));
        assert!(strict.resolve("127.0.0.1", 80).await.is_err());
        assert_eq!(open.resolve("127.0.0.1", 80).await.unwrap().len(), 1);
    }
}
