//! A session's settings on a live session (`GET/PATCH /api/sessions/:id/config`
//! and `…/proxy`): the partial updates callers send, their rules, the
//! effective values shown back, and the masked view of a proxy. Pure
//! functions; the session's own actor applies a change (it is the one writer
//! of its record), so two PATCHes of different fields never lose each other.

use serde::{Deserialize, Deserializer};

use crate::backoff::{DEFAULT_BASE_DELAY_MS, DEFAULT_MAX_ATTEMPTS, MAX_ATTEMPTS_LIMIT};
use crate::error::WebError;
use crate::model::{Pacing, ProxyType, SendingConfig, SessionConfig};

/// `reconnectBaseDelay` bounds (ms), as the contract clamps them.
pub const BASE_DELAY_MIN_MS: u64 = 1_000;
pub const BASE_DELAY_MAX_MS: u64 = 300_000;
/// `sending` bounds.
pub const DELAY_MAX_MS: u64 = 600_000;
pub const PER_MINUTE_MAX: u32 = 1_000;
pub const PER_DAY_MAX: u32 = 100_000;
pub const QUEUE_TTL_MAX_SECONDS: u64 = 604_800;

/// Absent → `None`; `null` → `Some(None)` (restore the default); a value →
/// `Some(Some(v))`.
fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// `PATCH /api/sessions/:id/config`: only the fields present change; `null`
/// restores a field's default.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConfigPatch {
    /// Restart budget, 0–20 (null: 5).
    #[serde(default, deserialize_with = "present")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<u32>, minimum = 0, maximum = 20))]
    pub max_reconnect_attempts: Option<Option<u32>>,
    /// Base backoff delay in ms, 1000–300000 (null: 5000).
    #[serde(default, deserialize_with = "present")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<u64>, minimum = 1000, maximum = 300000))]
    pub reconnect_base_delay: Option<Option<u64>>,
    /// Reject incoming calls (null: false).
    #[serde(default, deserialize_with = "present")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<bool>))]
    pub auto_reject_calls: Option<Option<bool>>,
    /// Pacing: merged field by field (null: every pacing default).
    #[serde(default, deserialize_with = "present")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<SendingPatch>))]
    pub sending: Option<Option<SendingPatch>>,
    /// Replaced as a whole (null: none). At most `WASUP_MAX_METADATA_BYTES`.
    #[serde(default, deserialize_with = "present")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<serde_json::Value>))]
    pub metadata: Option<Option<serde_json::Value>>,
}

/// The `sending` part of a [`ConfigPatch`]; `null` restores a field's default.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SendingPatch {
    /// 0–600000 ms.
    #[serde(default, deserialize_with = "present")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<u64>))]
    pub min_delay_ms: Option<Option<u64>>,
    /// 0–600000 ms, at least `minDelayMs`.
    #[serde(default, deserialize_with = "present")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<u64>))]
    pub max_delay_ms: Option<Option<u64>>,
    #[serde(default, deserialize_with = "present")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<bool>))]
    pub typing: Option<Option<bool>>,
    /// 0–1000 (0: no limit).
    #[serde(default, deserialize_with = "present")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<u32>))]
    pub per_minute: Option<Option<u32>>,
    /// 0–100000 (0: no limit).
    #[serde(default, deserialize_with = "present")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<u32>))]
    pub per_day: Option<Option<u32>>,
    /// 1–604800 s.
    #[serde(default, deserialize_with = "present")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<u64>))]
    pub queue_ttl_seconds: Option<Option<u64>>,
}

fn set<T>(slot: &mut Option<T>, change: Option<Option<T>>) {
    if let Some(value) = change {
        *slot = value;
    }
}

fn range_u64(field: &str, value: Option<u64>, min: u64, max: u64) -> Result<(), WebError> {
    match value {
        Some(v) if !(min..=max).contains(&v) => Err(WebError::Validation(format!(
            "Field '{field}' must be {min}–{max}, not {v}"
        ))),
        _ => Ok(()),
    }
}

/// The config after `patch`, checked (every rule, and the metadata limit).
pub fn apply_config_patch(
    current: &SessionConfig,
    patch: ConfigPatch,
) -> Result<SessionConfig, WebError> {
    let mut next = current.clone();
    range_u64(
        "maxReconnectAttempts",
        patch.max_reconnect_attempts.flatten().map(u64::from),
        0,
        u64::from(MAX_ATTEMPTS_LIMIT),
    )?;
    range_u64(
        "reconnectBaseDelay",
        patch.reconnect_base_delay.flatten(),
        BASE_DELAY_MIN_MS,
        BASE_DELAY_MAX_MS,
    )?;
    set(
        &mut next.max_reconnect_attempts,
        patch.max_reconnect_attempts,
    );
    set(&mut next.reconnect_base_delay, patch.reconnect_base_delay);
    set(&mut next.auto_reject_calls, patch.auto_reject_calls);
    set(&mut next.metadata, patch.metadata);
    match patch.sending {
        None => {}
        Some(None) => next.sending = None,
        Some(Some(s)) => {
            let mut sending = next.sending.take().unwrap_or_default();
            set(&mut sending.min_delay_ms, s.min_delay_ms);
            set(&mut sending.max_delay_ms, s.max_delay_ms);
            set(&mut sending.typing, s.typing);
            set(&mut sending.per_minute, s.per_minute);
            set(&mut sending.per_day, s.per_day);
            set(&mut sending.queue_ttl_seconds, s.queue_ttl_seconds);
            next.sending = (sending != SendingConfig::default()).then_some(sending);
        }
    }
    validate_sending(next.sending.as_ref())?;
    crate::limits::get().check_metadata(next.metadata.as_ref())?;
    Ok(next)
}

/// The rules of `config.sending` (at create and on every change).
pub fn validate_sending(sending: Option<&SendingConfig>) -> Result<(), WebError> {
    let Some(s) = sending else {
        return Ok(());
    };
    range_u64("sending.minDelayMs", s.min_delay_ms, 0, DELAY_MAX_MS)?;
    range_u64("sending.maxDelayMs", s.max_delay_ms, 0, DELAY_MAX_MS)?;
    let min = s.pacing().min_delay_ms;
    if s.max_delay_ms.is_some_and(|max| max < min) {
        return Err(WebError::Validation(format!(
            "Field 'sending.maxDelayMs' must be at least sending.minDelayMs ({min})"
        )));
    }
    range_u64(
        "sending.perMinute",
        s.per_minute.map(u64::from),
        0,
        u64::from(PER_MINUTE_MAX),
    )?;
    range_u64(
        "sending.perDay",
        s.per_day.map(u64::from),
        0,
        u64::from(PER_DAY_MAX),
    )?;
    range_u64(
        "sending.queueTtlSeconds",
        s.queue_ttl_seconds,
        1,
        QUEUE_TTL_MAX_SECONDS,
    )?;
    Ok(())
}

/// A session's settings with every default applied (what GET shows).
#[derive(Clone, Debug, PartialEq)]
pub struct EffectiveConfig {
    pub max_reconnect_attempts: u32,
    pub reconnect_base_delay: u64,
    pub auto_reject_calls: bool,
    pub sending: Pacing,
    pub metadata: Option<serde_json::Value>,
}

impl EffectiveConfig {
    pub fn of(config: &SessionConfig) -> Self {
        EffectiveConfig {
            max_reconnect_attempts: config
                .max_reconnect_attempts
                .unwrap_or(DEFAULT_MAX_ATTEMPTS)
                .min(MAX_ATTEMPTS_LIMIT),
            reconnect_base_delay: config
                .reconnect_base_delay
                .unwrap_or(DEFAULT_BASE_DELAY_MS)
                .clamp(BASE_DELAY_MIN_MS, BASE_DELAY_MAX_MS),
            auto_reject_calls: config.auto_reject_calls.unwrap_or(false),
            sending: config.pacing(),
            metadata: config.metadata.clone(),
        }
    }
}

/// `PATCH /api/sessions/:id/proxy`: `proxyUrl` is required (`null` clears).
/// `Debug` masks the password.
#[derive(Clone, Default, PartialEq, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProxyPatch {
    /// `http://`, `https://` or `socks5://` URL, credentials allowed; null clears.
    #[serde(default, deserialize_with = "present")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, example = "socks5://user:secret@proxy.example:1080"))]
    pub proxy_url: Option<Option<String>>,
    /// When given, it must match the URL's scheme.
    #[serde(default)]
    pub proxy_type: Option<ProxyType>,
}

impl std::fmt::Debug for ProxyPatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let url = self
            .proxy_url
            .as_ref()
            .map(|u| u.as_deref().map(super::mask_proxy_url));
        f.debug_struct("ProxyPatch")
            .field("proxy_url", &url)
            .field("proxy_type", &self.proxy_type)
            .finish()
    }
}

/// What may be shown of a session's proxy: never the password, nor the user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxyView {
    pub enabled: bool,
    pub proxy_type: Option<ProxyType>,
    /// `host` or `host:port` as the URL gives them.
    pub proxy_host: Option<String>,
    pub has_credentials: bool,
}

impl ProxyView {
    pub fn of(url: Option<&str>, kind: Option<ProxyType>) -> Self {
        let parsed = url.and_then(|u| url::Url::parse(u).ok());
        ProxyView {
            enabled: url.is_some(),
            proxy_type: kind,
            proxy_host: parsed.as_ref().and_then(|u| {
                let host = u.host_str()?;
                Some(match u.port() {
                    Some(port) => format!("{host}:{port}"),
                    None => host.to_string(),
                })
            }),
            has_credentials: parsed
                .as_ref()
                .is_some_and(|u| !u.username().is_empty() || u.password().is_some()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn patch(json: serde_json::Value) -> ConfigPatch {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn absent_null_and_values_differ() {
        let base = SessionConfig {
            max_reconnect_attempts: Some(3),
            reconnect_base_delay: Some(2_000),
            ..Default::default()
        };
        let next = apply_config_patch(
            &base,
            patch(serde_json::json!({"maxReconnectAttempts": null, "autoRejectCalls": true})),
        )
        .unwrap();
        assert_eq!(next.max_reconnect_attempts, None);
        assert_eq!(next.reconnect_base_delay, Some(2_000));
        assert_eq!(next.auto_reject_calls, Some(true));
        let e = EffectiveConfig::of(&next);
        assert_eq!(
            (e.max_reconnect_attempts, e.reconnect_base_delay),
            (5, 2_000)
        );
    }

    #[test]
    fn sending_merges_by_field_and_null_restores() {
        let base = SessionConfig::default();
        let next = apply_config_patch(
            &base,
            patch(serde_json::json!({"sending": {"minDelayMs": 0, "maxDelayMs": 10}})),
        )
        .unwrap();
        let next = apply_config_patch(
            &next,
            patch(serde_json::json!({"sending": {"perMinute": 0}})),
        )
        .unwrap();
        let p = next.pacing();
        assert_eq!((p.min_delay_ms, p.max_delay_ms, p.per_minute), (0, 10, 0));
        let next = apply_config_patch(&next, patch(serde_json::json!({"sending": null}))).unwrap();
        assert_eq!(next.sending, None);
        assert_eq!(next.pacing(), Pacing::DEFAULT);
    }

    #[test]
    fn rules_name_the_field() {
        let base = SessionConfig::default();
        for (body, field) in [
            (
                serde_json::json!({"maxReconnectAttempts": 21}),
                "maxReconnectAttempts",
            ),
            (
                serde_json::json!({"reconnectBaseDelay": 999}),
                "reconnectBaseDelay",
            ),
            (
                serde_json::json!({"sending": {"minDelayMs": 600001}}),
                "sending.minDelayMs",
            ),
            (
                serde_json::json!({"sending": {"minDelayMs": 500, "maxDelayMs": 100}}),
                "sending.maxDelayMs",
            ),
            (
                serde_json::json!({"sending": {"queueTtlSeconds": 0}}),
                "sending.queueTtlSeconds",
            ),
            (
                serde_json::json!({"sending": {"perMinute": 1001}}),
                "sending.perMinute",
            ),
        ] {
            match apply_config_patch(&base, patch(body.clone())) {
                Err(WebError::Validation(m)) => assert!(m.contains(field), "{body}: {m}"),
                other => panic!("{body}: {other:?}"),
            }
        }
        assert!(serde_json::from_value::<ConfigPatch>(serde_json::json!({"nope": 1})).is_err());
    }

    #[test]
    fn debug_masks_proxy_passwords() {
        let url = "socks5://alice:s3cret@proxy.example:1080".to_string();
        let mut record =
            crate::model::SessionRecord::new(uuid::Uuid::new_v4(), "x".into(), chrono::Utc::now());
        record.proxy_url = Some(url.clone());
        let spec = crate::ports::ProxySpec {
            url: url.clone(),
            kind: ProxyType::Socks5,
        };
        let patch = ProxyPatch {
            proxy_url: Some(Some(url.clone())),
            proxy_type: None,
        };
        let change = crate::protocol::SettingsChange::Proxy {
            url: Some(url),
            kind: None,
        };
        for shown in [
            format!("{record:?}"),
            format!("{spec:?}"),
            format!("{patch:?}"),
            format!("{change:?}"),
        ] {
            assert!(!shown.contains("s3cret"), "{shown}");
            assert!(shown.contains("proxy.example"), "{shown}");
        }
    }

    #[test]
    fn proxy_view_hides_credentials() {
        let v = ProxyView::of(
            Some("socks5://alice:secret@proxy.example:1080"),
            Some(ProxyType::Socks5),
        );
        assert_eq!(
            v,
            ProxyView {
                enabled: true,
                proxy_type: Some(ProxyType::Socks5),
                proxy_host: Some("proxy.example:1080".into()),
                has_credentials: true,
            }
        );
        let v = ProxyView::of(None, None);
        assert!(!v.enabled && !v.has_credentials && v.proxy_host.is_none());
    }
}
