//! Settings changes on a live session (issue 11.3) through the WebActor, the
//! supervisor and the session's own actor, against fakes: the status, the
//! engine and a waiting restart are left alone, and concurrent changes of
//! different fields both land.

use crate::common::*;
use wasup_actors::ports::EngineEvent;
use wasup_actors::web::{
    ConfigPatch, ProxyPatch, SessionCommand as Cmd, UpdateSessionConfig, UpdateSessionProxy,
};
use wasup_actors::*;

fn patch(json: serde_json::Value) -> ConfigPatch {
    serde_json::from_value(json).unwrap()
}

fn update(id: SessionId, json: serde_json::Value) -> UpdateSessionConfig {
    UpdateSessionConfig {
        caller: caller(Role::Operator),
        id: id.to_string(),
        patch: patch(json),
    }
}

fn stay_connected() -> Script {
    Script::Events(vec![(ms(1), connected("628"))])
}

#[actix::test]
async fn a_ready_session_keeps_its_engine_and_status_through_a_config_change() {
    let (h, id) = boot_one(
        record("live", 1000, 5),
        vec![stay_connected()],
        fast_options(),
    )
    .await;
    h.command(id, Cmd::Start).await.unwrap();
    h.wait_status(id, SessionStatus::Ready).await;
    let events = h.store.events(id).len();
    let changed =
        h.gw.web
            .send(update(
                id,
                serde_json::json!({"maxReconnectAttempts": 2, "sending": {"minDelayMs": 0}}),
            ))
            .await
            .unwrap()
            .unwrap();
    assert!(!changed.reconnect_required);
    assert_eq!(changed.settings.max_reconnect_attempts, 2);
    let view = h.view(id);
    assert_eq!(
        (view.record.status, view.engine_alive, view.restarts),
        (SessionStatus::Ready, true, 0)
    );
    assert_eq!(view.record.config.pacing().min_delay_ms, 0);
    assert_eq!(h.engine.starts_of(id), 1);
    let stopped = h.engine.0.stops.load(std::sync::atomic::Ordering::SeqCst)
        + h.engine.0.aborts.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(stopped, 0);
    // Stored, and no event: a settings change is not a transition.
    let stored = h.store.record(id).unwrap();
    assert_eq!(stored.config.max_reconnect_attempts, Some(2));
    assert_eq!(stored.status, SessionStatus::Ready);
    assert_eq!(h.store.events(id).len(), events);

    // A proxy change is stored too, and says the engine must reconnect.
    let changed =
        h.gw.web
            .send(UpdateSessionProxy {
                caller: caller(Role::Operator),
                id: id.to_string(),
                patch: serde_json::from_value::<ProxyPatch>(
                    serde_json::json!({"proxyUrl": "socks5://u:p@proxy.example:1080"}),
                )
                .unwrap(),
            })
            .await
            .unwrap()
            .unwrap();
    assert!(changed.reconnect_required && changed.settings.has_credentials);
    assert_eq!(h.status(id), SessionStatus::Ready);
    assert_eq!(
        h.store.record(id).unwrap().proxy_type,
        Some(ProxyType::Socks5)
    );
}

#[actix::test]
async fn a_waiting_restart_survives_a_settings_change() {
    let drop_then = Script::Events(vec![
        (ms(2), connected("628")),
        (
            ms(2),
            EngineEvent::Disconnected {
                reason: "network".into(),
            },
        ),
    ]);
    let (h, id) = boot_one(
        record("waiting", 1000, 5),
        vec![drop_then, stay_connected()],
        fast_options(),
    )
    .await;
    h.command(id, Cmd::Start).await.unwrap();
    let reg = h.gw.registry.clone();
    wait_until("a scheduled restart", || {
        reg.get(id).is_some_and(|v| v.next_retry_at.is_some())
    })
    .await;
    let before = h.view(id);
    h.gw.web
        .send(update(id, serde_json::json!({"reconnectBaseDelay": 1000})))
        .await
        .unwrap()
        .unwrap();
    let after = h.view(id);
    assert_eq!(
        (after.record.status, after.next_retry_at, after.restarts),
        (before.record.status, before.next_retry_at, before.restarts)
    );
    assert_eq!(after.record.config.reconnect_base_delay, Some(1000));
    // The restart still happens, once.
    h.wait_status(id, SessionStatus::Ready).await;
    assert_eq!(h.engine.starts_of(id), 2);
}

#[actix::test]
async fn concurrent_changes_of_different_fields_both_land() {
    let (h, id) = boot_one(
        record("racy", 1000, 5),
        vec![stay_connected()],
        fast_options(),
    )
    .await;
    let a =
        h.gw.web
            .send(update(id, serde_json::json!({"maxReconnectAttempts": 9})));
    let b =
        h.gw.web
            .send(update(id, serde_json::json!({"metadata": {"k": "v"}})));
    let (a, b) = futures::join!(a, b);
    a.unwrap().unwrap();
    b.unwrap().unwrap();
    let stored = h.store.record(id).unwrap();
    assert_eq!(stored.config.max_reconnect_attempts, Some(9));
    assert_eq!(stored.config.metadata, Some(serde_json::json!({"k": "v"})));
    assert_eq!(h.status(id), SessionStatus::Created);
    // A refused change changes nothing.
    let err =
        h.gw.web
            .send(update(id, serde_json::json!({"maxReconnectAttempts": 99})))
            .await
            .unwrap()
            .unwrap_err();
    assert!(matches!(err, WebError::Validation(ref m) if m.contains("maxReconnectAttempts")));
    assert_eq!(h.store.record(id).unwrap(), stored);
}
