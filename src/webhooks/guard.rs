//! The address policy against SSRF: webhook URLs may not reach loopback,
//! private (RFC 1918, ULA), link-local (cloud metadata lives there), CGNAT,
//! unspecified, multicast, broadcast or reserved addresses, unless the
//! operator allows it (`WASUP_WEBHOOK_ALLOW_PRIVATE=true`). Checked at create
//! and update, before every delivery, and again by the HTTP client's DNS
//! resolver at connect time (an answer that changed cannot slip through).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use wasup_actors::webhook::UrlRefused;

pub struct AddressPolicy {
    pub allow_private: bool,
}

/// Why an address is refused, or None when it is a public unicast address.
pub fn refused(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => refused_v4(v4),
        IpAddr::V6(v6) => refused_v6(v6),
    }
}

fn refused_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    Some(match (a, b) {
        (127, _) => "loopback",
        (10, _) | (192, 168) => "private",
        (172, 16..=31) => "private",
        (169, 254) => "link-local (cloud metadata)",
        (100, 64..=127) => "shared address space (CGNAT)",
        (0, _) => "unspecified",
        (224..=239, _) => "multicast",
        (240..=255, _) => "reserved or broadcast",
        (192, 0) if c == 0 => "reserved (IETF protocol assignments)",
        (198, 18..=19) => "reserved (benchmarking)",
        _ => return None,
    })
}

fn refused_v6(ip: Ipv6Addr) -> Option<&'static str> {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return refused_v4(v4);
    }
    let seg = ip.segments();
    // NAT64 (64:ff9b::/96) embeds an IPv4 address.
    if seg[0] == 0x64 && seg[1] == 0xff9b && seg[2..6] == [0, 0, 0, 0] {
        let v4 = Ipv4Addr::new(
            (seg[6] >> 8) as u8,
            seg[6] as u8,
            (seg[7] >> 8) as u8,
            seg[7] as u8,
        );
        return refused_v4(v4);
    }
    Some(if ip.is_loopback() {
        "loopback"
    } else if ip.is_unspecified() {
        "unspecified"
    } else if seg[0] & 0xfe00 == 0xfc00 {
        "private (unique local)"
    } else if seg[0] & 0xffc0 == 0xfe80 || seg[0] & 0xffc0 == 0xfec0 {
        "link-local"
    } else if seg[0] & 0xff00 == 0xff00 {
        "multicast"
    } else if seg[..6] == [0, 0, 0, 0, 0, 0] {
        // IPv4-compatible (deprecated) ::a.b.c.d
        "reserved (IPv4-compatible)"
    } else {
        return None;
    })
}

fn not_allowed(host: &str, ip: IpAddr, kind: &'static str) -> UrlRefused {
    UrlRefused::Address {
        host: host.to_string(),
        ip,
        kind,
    }
}

/// How long a webhook host's DNS lookup may take. The system resolver runs
/// on tokio's blocking pool, which the database shares: a resolver that never
/// answers must not hold it (the lookup thread finishes on its own later).
pub const DNS_TIMEOUT: Duration = Duration::from_secs(3);

/// Runs `lookup` for `host`, failing with an error naming the timeout when it
/// takes longer than `limit`. The lookup is a parameter so a test can pass
/// one that never answers.
pub async fn resolve_within<F>(
    host: &str,
    limit: Duration,
    lookup: F,
) -> std::io::Result<Vec<SocketAddr>>
where
    F: std::future::Future<Output = std::io::Result<Vec<SocketAddr>>>,
{
    match tokio::time::timeout(limit, lookup).await {
        Ok(res) => res,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!(
                "DNS lookup of '{host}' timed out after {} s",
                limit.as_secs_f32()
            ),
        )),
    }
}

async fn system_lookup(host: String, port: u16) -> std::io::Result<Vec<SocketAddr>> {
    Ok(tokio::net::lookup_host((host.as_str(), port))
        .await?
        .collect())
}

impl AddressPolicy {
    /// Err(a sentence for the caller) when the URL's host is, or resolves
    /// to, a refused address, or does not resolve at all.
    pub async fn check_url(&self, raw: &str) -> Result<(), UrlRefused> {
        if self.allow_private {
            return Ok(());
        }
        let url = url::Url::parse(raw).map_err(|_| UrlRefused::Invalid)?;
        let port = url.port_or_known_default().unwrap_or(80);
        let (label, ips): (String, Vec<IpAddr>) = match url.host() {
            Some(url::Host::Ipv4(ip)) => (ip.to_string(), vec![IpAddr::V4(ip)]),
            Some(url::Host::Ipv6(ip)) => (ip.to_string(), vec![IpAddr::V6(ip)]),
            Some(url::Host::Domain(name)) => {
                let addrs =
                    resolve_within(name, DNS_TIMEOUT, system_lookup(name.to_string(), port))
                        .await
                        .map_err(|e| UrlRefused::Unresolvable {
                            host: name.to_string(),
                            reason: e.to_string(),
                        })?;
                (name.to_string(), addrs.iter().map(|a| a.ip()).collect())
            }
            None => return Err(UrlRefused::NoHost),
        };
        for ip in ips {
            if let Some(why) = refused(ip) {
                return Err(not_allowed(&label, ip, why));
            }
        }
        Ok(())
    }
}

/// reqwest's resolver: the system's answers, each checked by the policy.
pub struct GuardedResolver(pub Arc<AddressPolicy>);

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow_private = self.0.allow_private;
        Box::pin(async move {
            let host = name.as_str().to_string();
            let addrs = resolve_within(&host, DNS_TIMEOUT, system_lookup(host.clone(), 0)).await?;
            if !allow_private {
                for a in &addrs {
                    if let Some(why) = refused(a.ip()) {
                        return Err(not_allowed(&host, a.ip(), why).into());
                    }
                }
            }
            let addrs: reqwest::dns::Addrs = Box::new(addrs.into_iter());
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification() {
        for bad in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.100.100.200",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fc00::1",
            "fd00:ec2::254",
            "fe80::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::a9fe:a9fe",
        ] {
            assert!(refused(bad.parse().unwrap()).is_some(), "{bad}");
        }
        for ok in [
            "93.184.216.34",
            "8.8.8.8",
            "172.32.0.1",
            "2606:4700::1111",
            "100.128.0.1",
        ] {
            assert_eq!(refused(ok.parse().unwrap()), None, "{ok}");
        }
    }

    #[tokio::test]
    async fn a_resolver_that_never_answers_times_out() {
        let never = std::future::pending::<std::io::Result<Vec<SocketAddr>>>();
        let e = resolve_within("hang.example", Duration::from_millis(20), never)
            .await
            .unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::TimedOut);
        assert!(e.to_string().contains("timed out"), "{e}");
        assert!(e.to_string().contains("hang.example"), "{e}");
    }

    #[tokio::test]
    async fn refusals_do_not_echo_the_resolved_address() {
        let p = AddressPolicy {
            allow_private: false,
        };
        let e = p.check_url("http://localhost:9/x").await.unwrap_err();
        let shown = e.to_string();
        assert!(
            !shown.contains("127.0.0.1") && !shown.contains("::1"),
            "{shown}"
        );
        assert!(shown.contains("loopback"), "{shown}");
    }

    #[tokio::test]
    async fn urls_are_checked_after_resolution() {
        let p = AddressPolicy {
            allow_private: false,
        };
        for bad in [
            "http://127.0.0.1:8080/x",
            "http://[::1]/x",
            "http://localhost:9/x",
            "http://169.254.169.254/latest/meta-data",
            "http://0x7f000001/",
        ] {
            let e = p.check_url(bad).await.unwrap_err().to_string();
            assert!(e.contains("WASUP_WEBHOOK_ALLOW_PRIVATE"), "{bad}: {e}");
        }
        let open = AddressPolicy {
            allow_private: true,
        };
        assert_eq!(open.check_url("http://127.0.0.1:8080/x").await, Ok(()));
    }
}
