//! Validation of what the API gives for a webhook (URL, events, secret,
//! custom headers, max attempts) and the generation of secrets.

use std::collections::HashSet;

use base64::Engine as _;
use rand::RngCore;

use crate::error::WebError;
use crate::events::{EVENT_NAMES, EVENT_PREFIXES};

pub const DEFAULT_MAX_ATTEMPTS: u32 = 10;
pub const MAX_ATTEMPTS_LIMIT: u32 = 20;
pub const MAX_URL_LEN: usize = 2048;
/// Bound on the custom headers of one webhook (names + values, bytes).
pub const MAX_HEADERS_BYTES: usize = 8 * 1024;
pub const SECRET_PREFIX: &str = "whsec_";

/// `whsec_` + base64 of 32 random bytes.
pub fn generate_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!(
        "{SECRET_PREFIX}{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )
}

/// A given secret: `whsec_` + base64 of 24–64 bytes (Standard Webhooks).
pub fn validate_secret(secret: &str) -> Result<(), WebError> {
    let bad = || {
        WebError::Validation(
            "secret must be 'whsec_' followed by base64 of 24–64 bytes (omit it to have one generated)"
                .to_string(),
        )
    };
    let body = secret.strip_prefix(SECRET_PREFIX).ok_or_else(bad)?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(body)
        .map_err(|_| bad())?;
    if !(24..=64).contains(&bytes.len()) {
        return Err(bad());
    }
    Ok(())
}

/// http(s) with a host, at most 2048 characters.
pub fn validate_url(raw: &str) -> Result<(), WebError> {
    let bad = || {
        WebError::Validation(
            "url must be an http:// or https:// URL with a host, e.g. https://example.com/hooks/wasup"
                .to_string(),
        )
    };
    if raw.len() > MAX_URL_LEN {
        return Err(WebError::Validation(format!(
            "url must be at most {MAX_URL_LEN} characters"
        )));
    }
    let url = url::Url::parse(raw).map_err(|_| bad())?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
        return Err(bad());
    }
    Ok(())
}

/// Known names or `*`, at least one; duplicates removed, order kept.
pub fn validate_events(events: &[String]) -> Result<Vec<String>, WebError> {
    if events.is_empty() {
        return Err(WebError::Validation(
            "events must name at least one event, or [\"*\"] for all".to_string(),
        ));
    }
    let mut out: Vec<String> = Vec::new();
    for e in events {
        if e != "*" && !EVENT_NAMES.contains(&e.as_str()) && !EVENT_PREFIXES.contains(&e.as_str()) {
            return Err(WebError::Validation(format!(
                "events: unknown event '{e}'; use \"*\", {} or any of {}",
                EVENT_PREFIXES.join(", "),
                EVENT_NAMES.join(", ")
            )));
        }
        if !out.contains(e) {
            out.push(e.clone());
        }
    }
    Ok(out)
}

pub fn validate_max_attempts(n: u32) -> Result<(), WebError> {
    if (1..=MAX_ATTEMPTS_LIMIT).contains(&n) {
        Ok(())
    } else {
        Err(WebError::Validation(format!(
            "maxAttempts must be 1–{MAX_ATTEMPTS_LIMIT}"
        )))
    }
}

fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)
}

/// Header names the gateway sets itself; custom headers may not touch them.
pub fn is_reserved_header(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    n.starts_with("webhook-")
        || n.starts_with("x-wasup-")
        || matches!(
            n.as_str(),
            "content-type" | "content-length" | "host" | "transfer-encoding" | "connection"
        )
}

/// Custom headers: token names, visible-ASCII values, not reserved, at most
/// 8 KiB in all, no name twice.
pub fn validate_headers(headers: &[(String, String)]) -> Result<(), WebError> {
    let mut total = 0;
    let mut seen = HashSet::new();
    for (name, value) in headers {
        if name.is_empty() || !name.chars().all(is_token_char) {
            return Err(WebError::Validation(format!(
                "headers: '{name}' is not a valid header name"
            )));
        }
        if !value.chars().all(|c| c == '\t' || (' '..='~').contains(&c)) {
            return Err(WebError::Validation(format!(
                "headers: the value of '{name}' must be printable ASCII on one line"
            )));
        }
        if is_reserved_header(name) {
            return Err(WebError::Validation(format!(
                "headers: '{name}' is set by the gateway and cannot be overridden"
            )));
        }
        if !seen.insert(name.to_ascii_lowercase()) {
            return Err(WebError::Validation(format!(
                "headers: '{name}' is given twice"
            )));
        }
        total += name.len() + value.len();
    }
    if total > MAX_HEADERS_BYTES {
        return Err(WebError::Validation(format!(
            "headers must be at most {MAX_HEADERS_BYTES} bytes in all"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::webhook::records::wants;

    #[test]
    fn secrets() {
        let s = generate_secret();
        assert!(s.starts_with("whsec_"));
        assert_eq!(validate_secret(&s), Ok(()));
        let raw = base64::engine::general_purpose::STANDARD
            .decode(&s["whsec_".len()..])
            .unwrap();
        assert_eq!(raw.len(), 32);
        for bad in ["nope", "whsec_", "whsec_!!!", "whsec_AAAA"] {
            assert!(validate_secret(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn urls_events_attempts() {
        assert_eq!(validate_url("https://example.com/x?y=1"), Ok(()));
        assert_eq!(validate_url("http://127.0.0.1:9/x"), Ok(()));
        for bad in [
            "ftp://example.com",
            "example.com",
            "http://",
            "",
            "mailto:a@b.c",
        ] {
            assert!(validate_url(bad).is_err(), "{bad}");
        }
        assert_eq!(
            validate_events(&["session.qr".into(), "session.qr".into()]),
            Ok(vec!["session.qr".to_string()])
        );
        assert!(validate_events(&["message.new".into()]).is_err());
        assert!(validate_events(&[]).is_err());
        assert!(validate_max_attempts(0).is_err());
        assert!(validate_max_attempts(21).is_err());
        assert_eq!(validate_max_attempts(20), Ok(()));
        assert!(wants(&["*".into()], "session.qr"));
        assert!(!wants(&["session.status".into()], "session.qr"));
    }

    #[test]
    fn headers() {
        let h = |n: &str, v: &str| vec![(n.to_string(), v.to_string())];
        assert_eq!(validate_headers(&h("Authorization", "Bearer x")), Ok(()));
        for bad in [
            h("bad name", "x"),
            h("X-Ok", "line\nbreak"),
            h("Webhook-Id", "x"),
            h("X-Wasup-Attempt", "9"),
            h("Content-Type", "text/plain"),
            h("host", "evil"),
            h("Content-Length", "1"),
            h("X-Big", &"a".repeat(MAX_HEADERS_BYTES)),
        ] {
            assert!(validate_headers(&bad).is_err(), "{bad:?}");
        }
    }
}
