//! Validation of what a caller sends (session names, proxies) and the masking
//! of a proxy URL for display. Pure functions; the WebActor calls them.

use uuid::Uuid;

use crate::error::WebError;
use crate::model::ProxyType;

pub const SESSION_NAME_MIN: usize = 3;
pub const SESSION_NAME_MAX: usize = 50;
pub const API_KEY_NAME_MAX: usize = 100;

/// `name`: 3–50 characters of `[A-Za-z0-9-]`, and not a UUID (a name that
/// parses as one could never be told from an id in a path).
pub fn validate_session_name(name: &str) -> Result<(), WebError> {
    let len = name.chars().count();
    if !(SESSION_NAME_MIN..=SESSION_NAME_MAX).contains(&len)
        || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    {
        return Err(WebError::Validation(format!(
            "name must be {SESSION_NAME_MIN}–{SESSION_NAME_MAX} characters of letters, digits and '-'"
        )));
    }
    if Uuid::parse_str(name).is_ok() {
        return Err(WebError::Validation("name must not be a UUID".to_string()));
    }
    Ok(())
}

/// `proxyUrl` must be an http, https or socks5 URL with a host; `proxyType`,
/// when given, must match its scheme and needs a `proxyUrl`. Returns the
/// proxy type (inferred from the scheme when not given).
pub fn validate_proxy(
    url: Option<&str>,
    kind: Option<ProxyType>,
) -> Result<Option<ProxyType>, WebError> {
    let Some(raw) = url else {
        return match kind {
            Some(_) => Err(WebError::Validation(
                "proxyType requires proxyUrl".to_string(),
            )),
            None => Ok(None),
        };
    };
    let invalid = || {
        WebError::Validation(
            "proxyUrl must be an http://, https:// or socks5:// URL with a host, e.g. socks5://user:pass@proxy.example:1080"
                .to_string(),
        )
    };
    let parsed = url::Url::parse(raw).map_err(|_| invalid())?;
    let scheme: ProxyType = parsed.scheme().parse().map_err(|_| invalid())?;
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(invalid());
    }
    match kind {
        Some(k) if k != scheme => Err(WebError::Validation(format!(
            "proxyType '{}' does not match the proxyUrl scheme '{}'",
            k.as_str(),
            scheme.as_str()
        ))),
        _ => Ok(Some(scheme)),
    }
}

/// A proxy URL fit to show: any password replaced by `***` (`user:***@host`).
pub fn mask_proxy_url(raw: &str) -> String {
    let Some(scheme_end) = raw.find("://") else {
        return raw.to_string();
    };
    let rest = &raw[scheme_end + 3..];
    let authority_len = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_len];
    let Some(at) = authority.rfind('@') else {
        return raw.to_string();
    };
    let user = authority[..at].split(':').next().unwrap_or_default();
    format!("{}://{user}:***@{}", &raw[..scheme_end], &rest[at + 1..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_names() {
        for ok in ["abc", "my-bot", "A-1", &"x".repeat(50)] {
            assert_eq!(validate_session_name(ok), Ok(()), "{ok}");
        }
        for bad in ["ab", "", "with space", "émoji", "a_b", &"x".repeat(51)] {
            assert!(
                matches!(validate_session_name(bad), Err(WebError::Validation(m)) if m.starts_with("name must be 3–50")),
                "{bad}"
            );
        }
        let uuid = "8f3c2b1a-9d4e-4c7a-8b2f-1e6d5a4c3b2a";
        assert_eq!(
            validate_session_name(uuid),
            Err(WebError::Validation("name must not be a UUID".into()))
        );
    }

    #[test]
    fn proxies() {
        assert_eq!(validate_proxy(None, None), Ok(None));
        assert_eq!(
            validate_proxy(Some("http://p.example:8080"), None),
            Ok(Some(ProxyType::Http))
        );
        assert_eq!(
            validate_proxy(Some("socks5://u:p@10.0.0.1:1080"), Some(ProxyType::Socks5)),
            Ok(Some(ProxyType::Socks5))
        );
        assert_eq!(
            validate_proxy(Some("https://p.example"), None),
            Ok(Some(ProxyType::Https))
        );
        for bad in [
            "ftp://p.example",
            "p.example:8080",
            "http://",
            "socks5://:1080",
            "not a url",
        ] {
            assert!(
                matches!(validate_proxy(Some(bad), None), Err(WebError::Validation(m)) if m.starts_with("proxyUrl must be")),
                "{bad}"
            );
        }
        assert!(
            matches!(validate_proxy(Some("http://p.example"), Some(ProxyType::Socks5)), Err(WebError::Validation(m)) if m.contains("does not match"))
        );
        assert_eq!(
            validate_proxy(None, Some(ProxyType::Http)),
            Err(WebError::Validation("proxyType requires proxyUrl".into()))
        );
    }

    #[test]
    fn masking() {
        assert_eq!(
            mask_proxy_url("socks5://user:secret@p.example:1080"),
            "socks5://user:***@p.example:1080"
        );
        assert_eq!(
            mask_proxy_url("http://p.example:8080"),
            "http://p.example:8080"
        );
        assert_eq!(
            mask_proxy_url("http://u:p@w@p.example/x?a=b@c"),
            "http://u:***@p.example/x?a=b@c"
        );
        assert_eq!(
            mask_proxy_url("http://user@p.example"),
            "http://user:***@p.example"
        );
    }
}
