//! The address policy for `proxyUrl` targets, as a port: the binary installs
//! one at boot (DNS and the address classes live there, beside the webhook
//! guard); without one (the actors' own tests) every address passes.

use std::sync::{Arc, OnceLock};

use futures::future::BoxFuture;

use crate::error::WebError;

/// Refuses proxy URLs whose host is, or resolves to, an address the
/// operator did not allow (loopback, private, link-local…).
pub trait ProxyGuard: Send + Sync + 'static {
    /// `Err(WebError::ProxyUrlNotAllowed(why))` when refused.
    fn check(&self, url: String) -> BoxFuture<'static, Result<(), WebError>>;
}

static GUARD: OnceLock<Arc<dyn ProxyGuard>> = OnceLock::new();

/// Set the process's proxy guard; only the first call counts.
pub fn install_proxy_guard(guard: Arc<dyn ProxyGuard>) {
    let _ = GUARD.set(guard);
}

/// Check `url` (when there is one) against the installed guard.
pub fn check_proxy_url(url: Option<String>) -> BoxFuture<'static, Result<(), WebError>> {
    match (url, GUARD.get()) {
        (Some(url), Some(guard)) => guard.check(url),
        _ => Box::pin(async { Ok(()) }),
    }
}
