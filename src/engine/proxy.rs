//! A transport that reaches WhatsApp through a session's proxy: HTTP CONNECT
//! (`http://`, or `https://` with TLS to the proxy) or SOCKS5, with optional
//! credentials from the proxy URL; then TLS and the same websocket client
//! every session's connection uses (`super::websocket`).

use std::sync::Arc;

use async_trait::async_trait;
use base64::Engine as _;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use whatsapp_rust::transport::{
    default_tls_connector, Connector, Transport, TransportEvent, TransportFactory,
};

use wasup_actors::model::ProxyType;
use wasup_actors::ports::ProxySpec;

use super::proxy_guard::ProxyAddressPolicy;
use super::websocket::{client_builder, into_transport};

/// Why a session's proxy settings cannot make a transport.
#[derive(Debug, thiserror::Error)]
pub enum ProxySetupError {
    #[error("proxy URL: {0}")]
    ProxyUrl(#[from] url::ParseError),
    #[error("proxy URL has no host")]
    ProxyHost,
    #[error("transport URL {url}: {source}")]
    TargetUrl {
        url: String,
        source: http::uri::InvalidUri,
    },
    #[error("transport URL has no host")]
    TargetHost,
}

/// A parsed proxy: where it is and how to log in to it.
#[derive(Clone)]
struct Proxy {
    kind: ProxyType,
    host: String,
    port: u16,
    user: Option<String>,
    password: Option<String>,
}

/// Debug hides the password (`wasup_actors::redact`).
impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("kind", &self.kind)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("password", &wasup_actors::redact::redacted(&self.password))
            .finish()
    }
}

impl Proxy {
    fn parse(spec: &ProxySpec) -> Result<Proxy, ProxySetupError> {
        let url = url::Url::parse(&spec.url)?;
        let host = url
            .host_str()
            .ok_or(ProxySetupError::ProxyHost)?
            .trim_matches(['[', ']'])
            .to_string();
        let default_port = match spec.kind {
            ProxyType::Http => 80,
            ProxyType::Https => 443,
            ProxyType::Socks5 => 1080,
        };
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        };
        Ok(Proxy {
            kind: spec.kind,
            host,
            port: url.port().unwrap_or(default_port),
            user: (!url.username().is_empty()).then(|| decode(url.username())),
            password: url.password().map(decode),
        })
    }
}

/// One tunnel per connection attempt to `target` (a ws:// or wss:// URL).
pub struct ProxyTransportFactory {
    proxy: Proxy,
    target: http::Uri,
    /// The address policy every dial of the proxy passes (`WASUP_PROXY_ALLOW_PRIVATE`).
    policy: ProxyAddressPolicy,
}

impl ProxyTransportFactory {
    pub fn new(
        spec: &ProxySpec,
        target: &str,
        policy: ProxyAddressPolicy,
    ) -> Result<ProxyTransportFactory, ProxySetupError> {
        let target: http::Uri = target
            .parse()
            .map_err(|source| ProxySetupError::TargetUrl {
                url: target.to_string(),
                source,
            })?;
        target.host().ok_or(ProxySetupError::TargetHost)?;
        Ok(ProxyTransportFactory {
            proxy: Proxy::parse(spec)?,
            target,
            policy,
        })
    }

    fn target_host_port(&self) -> (String, u16) {
        let host = self.target.host().unwrap_or_default().to_string();
        let tls = matches!(self.target.scheme_str(), Some("wss") | Some("https"));
        let port = self.target.port_u16().unwrap_or(if tls { 443 } else { 80 });
        (host, port)
    }
}

#[async_trait]
impl TransportFactory for ProxyTransportFactory {
    async fn create_transport(
        &self,
    ) -> Result<(Arc<dyn Transport>, async_channel::Receiver<TransportEvent>), anyhow::Error> {
        let (host, port) = self.target_host_port();
        let p = &self.proxy;
        // Resolved and checked here, and exactly those addresses dialled.
        let addrs = self
            .policy
            .resolve(&p.host, p.port)
            .await
            .map_err(|why| anyhow::anyhow!("{why}"))?;
        let tcp = TcpStream::connect(&addrs[..])
            .await
            .map_err(|e| anyhow::anyhow!("proxy {}:{} unreachable: {e}", p.host, p.port))?;
        let tls_target = matches!(self.target.scheme_str(), Some("wss") | Some("https"));
        match p.kind {
            ProxyType::Http => {
                let tunnel = http_connect(tcp, p, &host, port).await?;
                websocket(tunnel, &self.target, &host, tls_target).await
            }
            ProxyType::Https => {
                let to_proxy = default_tls_connector()
                    .wrap(&p.host, tcp)
                    .await
                    .map_err(|e| anyhow::anyhow!("TLS to the proxy failed: {e}"))?;
                let tunnel = http_connect(to_proxy, p, &host, port).await?;
                websocket(tunnel, &self.target, &host, tls_target).await
            }
            ProxyType::Socks5 => {
                let tunnel = socks5_connect(tcp, p, &host, port).await?;
                websocket(tunnel, &self.target, &host, tls_target).await
            }
        }
    }
}

/// TLS (for wss) and the websocket upgrade over an established tunnel.
async fn websocket<S>(
    tunnel: S,
    target: &http::Uri,
    host: &str,
    tls: bool,
) -> Result<(Arc<dyn Transport>, async_channel::Receiver<TransportEvent>), anyhow::Error>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let connector = if tls {
        default_tls_connector()
    } else {
        Connector::Plain
    };
    let stream = connector
        .wrap(host, tunnel)
        .await
        .map_err(|e| anyhow::anyhow!("TLS through the proxy failed: {e}"))?;
    let (ws, _) = client_builder(target.clone())?
        .connect_on(stream)
        .await
        .map_err(|e| anyhow::anyhow!("WebSocket through the proxy failed: {e}"))?;
    Ok(into_transport(ws))
}

/// `CONNECT host:port` and a 2xx answer.
async fn http_connect<S>(mut s: S, p: &Proxy, host: &str, port: u16) -> anyhow::Result<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let authority = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let mut req = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n");
    if let Some(user) = &p.user {
        let creds = format!("{user}:{}", p.password.as_deref().unwrap_or(""));
        let token = base64::engine::general_purpose::STANDARD.encode(creds);
        req.push_str(&format!("Proxy-Authorization: Basic {token}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await?;
    // Read the answer head byte by byte: nothing past it may be consumed.
    let mut head = Vec::with_capacity(256);
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > 8192 {
            anyhow::bail!("proxy answer too long");
        }
        let mut byte = [0u8; 1];
        if s.read(&mut byte).await? == 0 {
            anyhow::bail!("proxy closed the connection during CONNECT");
        }
        head.push(byte[0]);
    }
    let status_line = String::from_utf8_lossy(&head);
    let status_line = status_line.lines().next().unwrap_or_default();
    let code = status_line.split_whitespace().nth(1).unwrap_or_default();
    if !code.starts_with('2') {
        // Only a well-formed status code is named: the reason text is the
        // proxy's to choose and would land in `lastError` (issue 14.8).
        match code.parse::<u16>() {
            Ok(code) if (100..=599).contains(&code) => {
                anyhow::bail!("proxy refused CONNECT (status {code})")
            }
            _ => anyhow::bail!("proxy refused CONNECT (malformed answer)"),
        }
    }
    Ok(s)
}

/// RFC 1928 CONNECT by domain name, with RFC 1929 user/password when given.
async fn socks5_connect<S>(mut s: S, p: &Proxy, host: &str, port: u16) -> anyhow::Result<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let method = if p.user.is_some() { 0x02 } else { 0x00 };
    s.write_all(&[0x05, 0x01, method]).await?;
    let mut reply = [0u8; 2];
    s.read_exact(&mut reply).await?;
    if reply[0] != 0x05 || reply[1] != method {
        anyhow::bail!("SOCKS5 proxy refused the authentication method");
    }
    if let Some(user) = &p.user {
        let pass = p.password.as_deref().unwrap_or("");
        if user.len() > 255 || pass.len() > 255 {
            anyhow::bail!("SOCKS5 credentials are longer than 255 bytes");
        }
        let mut auth = vec![0x01, user.len() as u8];
        auth.extend_from_slice(user.as_bytes());
        auth.push(pass.len() as u8);
        auth.extend_from_slice(pass.as_bytes());
        s.write_all(&auth).await?;
        s.read_exact(&mut reply).await?;
        if reply[1] != 0x00 {
            anyhow::bail!("SOCKS5 proxy rejected the credentials");
        }
    }
    if host.len() > 255 {
        anyhow::bail!("host name too long for SOCKS5");
    }
    let mut req = vec![0x05, 0x01, 0x00, 0x03, host.len() as u8];
    req.extend_from_slice(host.as_bytes());
    req.extend_from_slice(&port.to_be_bytes());
    s.write_all(&req).await?;
    let mut head = [0u8; 4];
    s.read_exact(&mut head).await?;
    if head[1] != 0x00 {
        anyhow::bail!("SOCKS5 proxy refused CONNECT (reply code {})", head[1]);
    }
    // Skip the bound address.
    let skip = match head[3] {
        0x01 => 4,
        0x04 => 16,
        0x03 => {
            let mut len = [0u8; 1];
            s.read_exact(&mut len).await?;
            len[0] as usize
        }
        other => anyhow::bail!("SOCKS5 proxy sent address type {other}"),
    };
    let mut rest = vec![0u8; skip + 2];
    s.read_exact(&mut rest).await?;
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    fn proxy(kind: ProxyType, url: &str) -> Proxy {
        Proxy::parse(&ProxySpec {
            url: url.to_string(),
            kind,
        })
        .unwrap()
    }

    #[test]
    fn debug_hides_the_password() {
        let p = proxy(ProxyType::Http, "http://bob:s3cr3t-pw@proxy.example:3128");
        let text = format!("{p:?}");
        assert!(!text.contains("s3cr3t-pw"), "{text}");
        assert!(
            text.contains("bob") && text.contains("proxy.example"),
            "{text}"
        );
    }

    /// A CONNECT proxy that records the request head, answers `status`,
    /// then echoes what comes through the tunnel.
    async fn connect_proxy(status: &'static str) -> (u16, tokio::task::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                s.read_exact(&mut byte).await.unwrap();
                head.push(byte[0]);
            }
            s.write_all(format!("HTTP/1.1 {status}\r\n\r\n").as_bytes())
                .await
                .unwrap();
            let mut buf = [0u8; 5];
            if s.read_exact(&mut buf).await.is_ok() {
                s.write_all(&buf).await.unwrap();
            }
            String::from_utf8(head).unwrap()
        });
        (port, task)
    }

    #[tokio::test]
    async fn http_connect_sends_credentials_and_tunnels_bytes() {
        let (port, seen) = connect_proxy("200 Connection established").await;
        let p = proxy(
            ProxyType::Http,
            &format!("http://bob:p%40ss@127.0.0.1:{port}"),
        );
        assert_eq!(
            (p.user.as_deref(), p.password.as_deref()),
            (Some("bob"), Some("p@ss"))
        );
        let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let mut tunnel = http_connect(tcp, &p, "web.whatsapp.com", 443)
            .await
            .unwrap();
        tunnel.write_all(b"hello").await.unwrap();
        let mut back = [0u8; 5];
        tunnel.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"hello");
        let head = seen.await.unwrap();
        assert!(
            head.starts_with("CONNECT web.whatsapp.com:443 HTTP/1.1\r\n"),
            "{head}"
        );
        let token = base64::engine::general_purpose::STANDARD.encode("bob:p@ss");
        assert!(
            head.contains(&format!("Proxy-Authorization: Basic {token}\r\n")),
            "{head}"
        );
    }

    #[tokio::test]
    async fn http_connect_refusal_is_an_error_naming_the_answer() {
        let (port, _seen) = connect_proxy("407 Proxy Authentication Required").await;
        let p = proxy(ProxyType::Http, &format!("http://127.0.0.1:{port}"));
        let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let err = http_connect(tcp, &p, "web.whatsapp.com", 443)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("407"), "{err}");
        // The proxy's own reason text is never echoed.
        let (port, _seen) = connect_proxy("403 <script>leaked-reason</script>").await;
        let p = proxy(ProxyType::Http, &format!("http://127.0.0.1:{port}"));
        let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let err = http_connect(tcp, &p, "web.whatsapp.com", 443)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("403"), "{err}");
        assert!(!err.to_string().contains("leaked-reason"), "{err}");
    }

    #[tokio::test]
    async fn socks5_authenticates_connects_by_name_and_tunnels_bytes() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut greet = [0u8; 3];
            s.read_exact(&mut greet).await.unwrap();
            assert_eq!(greet, [5, 1, 2], "user/password method offered");
            s.write_all(&[5, 2]).await.unwrap();
            let mut ver_ulen = [0u8; 2];
            s.read_exact(&mut ver_ulen).await.unwrap();
            let mut user = vec![0u8; ver_ulen[1] as usize];
            s.read_exact(&mut user).await.unwrap();
            let mut plen = [0u8; 1];
            s.read_exact(&mut plen).await.unwrap();
            let mut pass = vec![0u8; plen[0] as usize];
            s.read_exact(&mut pass).await.unwrap();
            s.write_all(&[1, 0]).await.unwrap();
            let mut req = [0u8; 5];
            s.read_exact(&mut req).await.unwrap();
            assert_eq!(&req[..4], &[5, 1, 0, 3], "CONNECT by domain name");
            let mut host = vec![0u8; req[4] as usize + 2];
            s.read_exact(&mut host).await.unwrap();
            s.write_all(&[5, 0, 0, 1, 127, 0, 0, 1, 0, 80])
                .await
                .unwrap();
            let mut buf = [0u8; 5];
            s.read_exact(&mut buf).await.unwrap();
            s.write_all(&buf).await.unwrap();
            (
                String::from_utf8(user).unwrap(),
                String::from_utf8(pass).unwrap(),
                host,
            )
        });
        let p = proxy(
            ProxyType::Socks5,
            &format!("socks5://alice:secret@127.0.0.1:{port}"),
        );
        let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let mut tunnel = socks5_connect(tcp, &p, "web.whatsapp.com", 443)
            .await
            .unwrap();
        tunnel.write_all(b"olleh").await.unwrap();
        let mut back = [0u8; 5];
        tunnel.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"olleh");
        let (user, pass, host) = server.await.unwrap();
        assert_eq!((user.as_str(), pass.as_str()), ("alice", "secret"));
        assert_eq!(&host[..host.len() - 2], b"web.whatsapp.com");
        assert_eq!(&host[host.len() - 2..], &443u16.to_be_bytes());
    }

    #[tokio::test]
    async fn an_unreachable_proxy_fails_the_connect_with_its_address() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let factory = ProxyTransportFactory::new(
            &ProxySpec {
                url: format!("http://127.0.0.1:{port}"),
                kind: ProxyType::Http,
            },
            "wss://web.whatsapp.com/ws/chat",
            ProxyAddressPolicy {
                allow_private: true,
            },
        )
        .unwrap();
        let err = factory.create_transport().await.err().unwrap();
        assert!(
            err.to_string().contains(&format!("127.0.0.1:{port}")),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_private_proxy_is_refused_at_connect_unless_allowed() {
        let factory = ProxyTransportFactory::new(
            &ProxySpec {
                url: "http://127.0.0.1:9".to_string(),
                kind: ProxyType::Http,
            },
            "wss://web.whatsapp.com/ws/chat",
            ProxyAddressPolicy {
                allow_private: false,
            },
        )
        .unwrap();
        let err = factory.create_transport().await.err().unwrap().to_string();
        assert!(err.contains("WASUP_PROXY_ALLOW_PRIVATE"), "{err}");
    }
}
