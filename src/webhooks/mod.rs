//! Webhook delivery over HTTP: the JSON envelope rendered from the stored
//! proto, Standard Webhooks signatures, the address policy against SSRF, and
//! `HttpSender`, the reqwest implementation of the actors' `WebhookSender`
//! port (one client per process, 10 s timeout, no redirects).

pub mod guard;
pub mod render;
pub mod sign;

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE, RETRY_AFTER, USER_AGENT};
use wasup_actors::webhook::{SendResult, UrlRefused, WebhookRequest, WebhookSender};

use guard::AddressPolicy;

/// How long one delivery may take, connect to last byte.
pub const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);

pub struct HttpSender {
    /// Built at the first delivery: the TLS setup loads the system's CA
    /// store (about 2 MiB of OpenSSL objects), which a gateway without
    /// webhooks never needs.
    client: Arc<OnceLock<Result<reqwest::Client, String>>>,
    policy: Arc<AddressPolicy>,
}

impl HttpSender {
    pub fn new(allow_private: bool) -> Result<HttpSender, reqwest::Error> {
        let policy = Arc::new(AddressPolicy { allow_private });
        Ok(HttpSender {
            client: Arc::new(OnceLock::new()),
            policy,
        })
    }
}

/// The process's one webhook client, built on first use.
fn client(
    cell: &OnceLock<Result<reqwest::Client, String>>,
    policy: &Arc<AddressPolicy>,
) -> Result<reqwest::Client, String> {
    cell.get_or_init(|| {
        reqwest::Client::builder()
            .timeout(DELIVERY_TIMEOUT)
            .connect_timeout(DELIVERY_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            // Every name is resolved through the policy, so a DNS answer that
            // changed since the check cannot reach a refused address.
            .dns_resolver(Arc::new(guard::GuardedResolver(policy.clone())))
            .no_proxy()
            .build()
            .map_err(|e| format!("the HTTP client could not be set up: {}", describe(&e)))
    })
    .clone()
}

/// Why a delivery failed; its text is the deliveries log's `error`.
#[derive(Debug, thiserror::Error)]
enum DeliveryFailure {
    #[error(transparent)]
    Refused(#[from] UrlRefused),
    #[error("rendering the event failed: {0}")]
    Render(crate::qr::QrError),
    #[error(transparent)]
    Sign(#[from] sign::MalformedSecret),
    #[error("{}", describe(.0))]
    Transport(reqwest::Error),
    #[error("receiver answered HTTP {0}")]
    Status(u16),
    #[error("{0}")]
    Setup(String),
}

/// An error with its causes, without the URL (it may carry a token).
fn describe(err: &reqwest::Error) -> String {
    let mut text = if err.is_timeout() {
        format!("timed out after {}s", DELIVERY_TIMEOUT.as_secs())
    } else if err.is_connect() {
        "connection failed".to_string()
    } else {
        "request failed".to_string()
    };
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// How much of a receiver's reply is read. Nothing of it is kept (the status
/// is the outcome), and a receiver may answer gigabytes: reading this much
/// lets a short reply finish so the connection can be reused, and past it
/// the connection is dropped instead of buffered.
pub const REPLY_READ_LIMIT: usize = 4 * 1024;

/// Reads at most [`REPLY_READ_LIMIT`] bytes of the reply, then drops it
/// (closing the connection if more was coming).
async fn read_prefix(mut res: reqwest::Response) {
    let mut read = 0;
    while read < REPLY_READ_LIMIT {
        match res.chunk().await {
            Ok(Some(chunk)) => read += chunk.len(),
            Ok(None) | Err(_) => return,
        }
    }
}

fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let secs = (at.timestamp() - chrono::Utc::now().timestamp()).max(0);
    Some(Duration::from_secs(secs as u64))
}

impl WebhookSender for HttpSender {
    fn check_url(&self, url: String) -> BoxFuture<'static, Result<(), UrlRefused>> {
        let policy = self.policy.clone();
        Box::pin(async move { policy.check_url(&url).await })
    }

    fn send(&self, request: WebhookRequest) -> BoxFuture<'static, SendResult> {
        let cell = self.client.clone();
        let policy = self.policy.clone();
        Box::pin(async move {
            let started = Instant::now();
            let failed = |error: DeliveryFailure, started: Instant| SendResult {
                status_code: None,
                error: Some(error.to_string()),
                latency_ms: started.elapsed().as_millis() as u64,
                retry_after: None,
            };
            if let Err(why) = policy.check_url(&request.url).await {
                return failed(why.into(), started);
            }
            let envelope = match render::envelope(&request.payload) {
                Ok(e) => e,
                Err(e) => return failed(DeliveryFailure::Render(e), started),
            };
            let timestamp = chrono::Utc::now().timestamp();
            let signature =
                match sign::signature(&request.secret, &envelope.id, timestamp, &envelope.body) {
                    Ok(s) => s,
                    Err(e) => return failed(e.into(), started),
                };
            let mut headers = HeaderMap::new();
            let mut put = |name: &str, value: &str| {
                if let (Ok(n), Ok(v)) = (
                    HeaderName::from_bytes(name.as_bytes()),
                    HeaderValue::from_str(value),
                ) {
                    headers.insert(n, v);
                }
            };
            // Custom headers first, so that ours (inserted after) always win.
            for (name, value) in &request.headers {
                put(name, value);
            }
            put("webhook-id", &envelope.id);
            put("webhook-timestamp", &timestamp.to_string());
            put("webhook-signature", &signature);
            put("x-wasup-event", &envelope.event);
            put("x-wasup-attempt", &request.attempt.to_string());
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            if !headers.contains_key(USER_AGENT) {
                headers.insert(
                    USER_AGENT,
                    HeaderValue::from_static(concat!("wasup/", env!("CARGO_PKG_VERSION"))),
                );
            }
            let client = match client(&cell, &policy) {
                Ok(c) => c,
                Err(e) => return failed(DeliveryFailure::Setup(e), started),
            };
            let res = client
                .post(&request.url)
                .headers(headers)
                .body(envelope.body)
                .send()
                .await;
            match res {
                Ok(res) => {
                    let status = res.status().as_u16();
                    let retry_after = retry_after(res.headers());
                    read_prefix(res).await;
                    SendResult {
                        status_code: Some(status),
                        error: (!(200..300).contains(&status))
                            .then(|| DeliveryFailure::Status(status).to_string()),
                        latency_ms: started.elapsed().as_millis() as u64,
                        retry_after,
                    }
                }
                Err(e) => failed(DeliveryFailure::Transport(e), started),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_takes_seconds_or_an_http_date() {
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert(RETRY_AFTER, HeaderValue::from_static("7"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        let at = chrono::Utc::now() + chrono::Duration::seconds(120);
        let date = at.format("%a, %d %b %Y %H:%M:%S GMT").to_string();
        h.insert(RETRY_AFTER, HeaderValue::from_str(&date).unwrap());
        let got = retry_after(&h).unwrap().as_secs();
        assert!((118..=120).contains(&got), "{got}");
        h.insert(RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&h), None);
    }
}
