//! The one helper for showing values that hold secrets: `Debug` output of
//! every type with a secret (keys, webhook secrets and header values, the
//! master key, proxy and database URLs with credentials, QR texts, message
//! bodies) goes through it, and so does the webhook URL a viewer key sees.
//!
//! - [`Redacted`]: prints `***` in place of a value;
//! - [`mask_url`] / [`MaskedUrl`]: a URL with its password (or a lone user
//!   name, often a token) and token-like query values replaced by `***`;
//! - [`MaskedHeaders`]: header names with `***` for every value.

use std::fmt;

/// What a hidden value prints as.
pub const MASK: &str = "***";

/// Prints `***` whatever it wraps: `.field("secret", &Redacted)`, or
/// `&opt.as_ref().map(|_| Redacted)` to keep `None` visible.
#[derive(Clone, Copy)]
pub struct Redacted;

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(MASK)
    }
}

/// `Some(***)` or `None`: whether an optional secret is set, not what it is.
pub fn redacted<T>(value: &Option<T>) -> Option<Redacted> {
    value.as_ref().map(|_| Redacted)
}

/// Query (and fragment) keys whose values are credentials, compared in
/// lowercase: exact names, then any key containing one of the fragments.
const TOKEN_KEYS: &[&str] = &[
    "key", "sig", "code", "pass", "pwd", "jwt", "hmac", "session", "sid",
];
const TOKEN_KEY_PARTS: &[&str] = &[
    "token",
    "secret",
    "password",
    "passwd",
    "signature",
    "auth",
    "apikey",
    "api_key",
    "api-key",
    "credential",
    "access_key",
    "private",
];

fn is_token_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    TOKEN_KEYS.contains(&key.as_str()) || TOKEN_KEY_PARTS.iter().any(|p| key.contains(p))
}

/// `a=1&token=x` → `a=1&token=***`; pairs without `=` are kept as they are.
fn mask_pairs(text: &str) -> String {
    text.split('&')
        .map(|pair| match pair.split_once('=') {
            Some((k, v)) if !v.is_empty() => {
                let key = percent_decode(k);
                if is_token_key(&key) {
                    format!("{k}={MASK}")
                } else {
                    pair.to_string()
                }
            }
            _ => pair.to_string(),
        })
        .collect::<Vec<_>>()
        .join("&")
}

fn percent_decode(text: &str) -> String {
    url::form_urlencoded::parse(format!("k={text}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

/// The URL with its credentials masked: `user:***@` for a password, `***@`
/// for a lone user name, `***` for the value of every token-like query or
/// fragment key (`token`, `key`, `secret`, `sig`, `signature`, `auth`,
/// `access_token`, `api_key`, `password`, …). Text that does not parse as a
/// URL is masked whole: it cannot be told apart.
pub fn mask_url(text: &str) -> String {
    let Ok(mut url) = url::Url::parse(text) else {
        return MASK.to_string();
    };
    if url.password().is_some() {
        let _ = url.set_password(Some(MASK));
    } else if !url.username().is_empty() {
        let _ = url.set_username(MASK);
    }
    if let Some(query) = url.query().map(mask_pairs) {
        url.set_query(Some(&query));
    }
    if let Some(fragment) = url.fragment().map(mask_pairs) {
        url.set_fragment(Some(&fragment));
    }
    url.into()
}

/// Debug-prints a URL as [`mask_url`] shows it.
pub struct MaskedUrl<'a>(pub &'a str);

impl fmt::Debug for MaskedUrl<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&mask_url(self.0), f)
    }
}

/// Debug-prints an optional URL as [`mask_url`] shows it.
pub fn masked_url(url: &Option<String>) -> Option<MaskedUrl<'_>> {
    url.as_deref().map(MaskedUrl)
}

/// Debug-prints custom headers as `[("Authorization", ***)]`: names only.
pub struct MaskedHeaders<'a>(pub &'a [(String, String)]);

impl fmt::Debug for MaskedHeaders<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|(name, _)| (name, Redacted)))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_passwords_lone_users_and_token_values() {
        assert_eq!(
            mask_url("http://bob:hunter2@proxy.example:8080"),
            "http://bob:***@proxy.example:8080/"
        );
        assert_eq!(
            mask_url("https://ghp_abc123@example.com/hook"),
            "https://***@example.com/hook"
        );
        let masked = mask_url(
            "https://example.com/h?a=1&token=t0k&KEY=k3y&sig=s1g&signature=s2&auth=a&\
             access_token=at&api_key=ak&password=pw&secret=sc&x-api-key=xk&page=2#access_token=ft",
        );
        for secret in [
            "t0k", "k3y", "s1g", "s2", "=a&", "at&", "ak", "pw", "sc", "xk", "ft",
        ] {
            assert!(!masked.contains(secret), "{secret} in {masked}");
        }
        assert!(masked.contains("a=1&token=***"), "{masked}");
        assert!(masked.contains("page=2"), "{masked}");
        assert!(masked.ends_with("#access_token=***"), "{masked}");
        assert_eq!(
            mask_url("https://example.com/hooks/wasup?v=2"),
            "https://example.com/hooks/wasup?v=2"
        );
        assert_eq!(mask_url("not a url with s3cret"), MASK);
    }

    #[test]
    fn debug_helpers_hide_values() {
        let headers = vec![("Authorization".to_string(), "Bearer s3cret".to_string())];
        let text = format!(
            "{:?} {:?} {:?} {:?}",
            Redacted,
            redacted(&Some("s3cret")),
            MaskedHeaders(&headers),
            masked_url(&Some("socks5://u:s3cret@h:1".into()))
        );
        assert!(!text.contains("s3cret"), "{text}");
        assert!(text.contains("Authorization"), "{text}");
        assert_eq!(format!("{:?}", redacted::<String>(&None)), "None");
    }

    const SECRET: &str = "s3cr3t-value";

    fn assert_hidden(what: &str, text: String) {
        assert!(!text.contains(SECRET), "{what} shows the secret: {text}");
    }

    fn event(data: crate::events::session_event::Data) -> crate::events::SessionEvent {
        crate::events::SessionEvent {
            id: "evt_1".into(),
            session_id: "s".into(),
            session_name: "bot".into(),
            seq: 1,
            timestamp_ms: 0,
            data: Some(data),
        }
    }

    #[test]
    fn webhook_types_debug_without_secrets() {
        use crate::webhook::*;
        let now = chrono::Utc::now();
        let url = format!("https://u:{SECRET}@example.com/h?token={SECRET}");
        let headers = vec![("Authorization".to_string(), SECRET.to_string())];
        let record = WebhookRecord {
            id: uuid::Uuid::nil(),
            session_id: uuid::Uuid::nil(),
            url: url.clone(),
            events: vec!["*".into()],
            headers: headers.clone(),
            active: true,
            max_attempts: 3,
            created_at: now,
            updated_at: now,
        };
        assert_hidden("WebhookRecord", format!("{record:?}"));
        let patch = WebhookPatch {
            url: Some(url.clone()),
            events: None,
            headers: Some(headers.clone()),
            active: None,
            max_attempts: None,
            updated_at: now,
        };
        assert_hidden("WebhookPatch", format!("{patch:?}"));
        let status = crate::events::session_event::Data::Status(Default::default());
        let job = DeliveryJob {
            delivery_id: "d".into(),
            webhook_id: uuid::Uuid::nil(),
            url: url.clone(),
            secret: SECRET.into(),
            headers: headers.clone(),
            max_attempts: 3,
            attempt: 1,
            event: event(status.clone()),
        };
        assert_hidden("DeliveryJob", format!("{job:?}"));
        let request = WebhookRequest {
            url,
            secret: SECRET.into(),
            headers,
            attempt: 1,
            payload: WebhookPayload::Event(event(status)),
        };
        let text = format!("{request:?}");
        assert_hidden("WebhookRequest", text.clone());
        assert!(text.contains("Authorization") && text.contains("example.com"));
    }

    #[test]
    fn session_engine_and_event_types_debug_without_secrets() {
        use crate::events::{session_event::Data, MessageData, QrRotated};
        use crate::model::{ProxyType, QrCode, SessionRecord};
        use crate::ports::{EngineEvent, ProxySpec};
        let now = chrono::Utc::now();
        let proxy_url = format!("socks5://user:{SECRET}@proxy.example:1080");
        let mut record = SessionRecord::new(uuid::Uuid::nil(), "bot".into(), now);
        record.proxy_url = Some(proxy_url.clone());
        let text = format!("{record:?}");
        assert_hidden("SessionRecord", text.clone());
        assert!(text.contains("proxy.example"), "{text}");
        let spec = ProxySpec {
            url: proxy_url,
            kind: ProxyType::Socks5,
        };
        assert_hidden("ProxySpec", format!("{spec:?}"));
        let qr = EngineEvent::Qr {
            code: SECRET.into(),
            timeout: std::time::Duration::from_secs(20),
        };
        assert_hidden("EngineEvent::Qr", format!("{qr:?}"));
        let code = QrCode {
            text: SECRET.into(),
            expires_at: now,
        };
        assert_hidden("QrCode", format!("{code:?}"));
        let rotated = event(Data::Qr(QrRotated {
            qr: SECRET.into(),
            expires_at_ms: 1,
            expired: false,
        }));
        assert_hidden("SessionEvent (session.qr)", format!("{rotated:?}"));
        let message = event(Data::MessageReceived(MessageData {
            id: "m".into(),
            body: SECRET.into(),
            ..Default::default()
        }));
        assert_hidden("SessionEvent (message.received)", format!("{message:?}"));
    }

    #[test]
    fn message_records_debug_without_the_body() {
        use crate::outbound::{
            Direction, MessageContext, MessageRecord, MessageStatus, QuotedMessage,
        };
        let now = chrono::Utc::now();
        let record = MessageRecord {
            session_id: uuid::Uuid::nil(),
            id: "m".into(),
            direction: Direction::Out,
            chat_id: "1@s.whatsapp.net".into(),
            sender: None,
            kind: "chat".into(),
            body: SECRET.into(),
            status: MessageStatus::Pending,
            error: None,
            from_me: true,
            push_name: None,
            idempotency_key: None,
            // The quoted text is a body too.
            context: MessageContext {
                mentions: vec![],
                quoted: Some(QuotedMessage {
                    id: "q".into(),
                    chat_id: "1@s.whatsapp.net".into(),
                    author: None,
                    body: SECRET.into(),
                }),
            },
            timestamp: now,
            created_at: now,
            updated_at: now,
        };
        assert_hidden("MessageRecord", format!("{record:?}"));
    }
}
