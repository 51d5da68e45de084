//! The supervisor and session actors against scripted fakes of the ports.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crate::common::*;
use actix::prelude::*;
use parking_lot::Mutex;
use wasup_actors::events::session_event::Data;
use wasup_actors::ports::EngineEvent;
use wasup_actors::protocol::{Deps, Report, SessionReport, SessionRequest};
use wasup_actors::registry::SessionRegistry;
use wasup_actors::session::SessionActor;
use wasup_actors::state::{LOGGED_OUT_ERROR, OUTDATED_ERROR, QR_EXHAUSTED_ERROR, REPLACED_ERROR};
use wasup_actors::supervisor::Shutdown;
use wasup_actors::web::{CheckReady, CreateSession, SessionCommand as Cmd};
use wasup_actors::*;

fn qr(code: &str) -> EngineEvent {
    EngineEvent::Qr {
        code: code.into(),
        timeout: Duration::from_secs(60),
    }
}

/// An engine that connects, then after `after` reports `event`.
fn connect_then(after: Duration, event: EngineEvent) -> Script {
    Script::Events(vec![(ms(2), connected("628")), (after, event)])
}

fn drop_ev(reason: &str) -> EngineEvent {
    EngineEvent::Disconnected {
        reason: reason.into(),
    }
}

#[actix::test]
async fn link_flow_persists_events_with_consecutive_seq_in_each_save() {
    let engine = FakeEngine::default();
    let h = boot(vec![], engine.clone(), fast_options()).await;
    let created =
        h.gw.web
            .send(CreateSession {
                caller: caller(Role::Operator),
                name: "my-bot".into(),
                config: SessionConfig::default(),
                proxy_url: None,
                proxy_type: None,
            })
            .await
            .unwrap()
            .unwrap();
    let id = created.id;
    assert_eq!(created.status, SessionStatus::Created);
    engine.script(
        id,
        vec![Script::Events(vec![
            (ms(5), qr("QR-1")),
            (ms(5), qr("QR-2")),
            (
                ms(5),
                EngineEvent::PairSuccess {
                    phone: "628123".into(),
                    push_name: Some("Bot".into()),
                },
            ),
            (ms(5), connected("628123")),
        ])],
    );

    let view = h.command(id, Cmd::Start).await.unwrap();
    assert_eq!(view.record.status, SessionStatus::Initializing);
    assert_eq!(view.record.desired, DesiredState::Running);
    assert!(view.engine_alive);

    let view = h.wait_status(id, SessionStatus::Ready).await;
    assert_eq!(view.record.phone.as_deref(), Some("628123"));
    assert_eq!(view.record.push_name.as_deref(), Some("Bot"));
    assert!(view.record.connected_at.is_some());
    assert_eq!(view.record.last_error, None);
    assert_eq!(
        (view.restarts, view.next_retry_at, view.engine_alive),
        (0, None, true)
    );

    assert_eq!(
        event_names(&h.store.events(id)),
        vec![
            "status:initializing",
            "status:qr_ready",
            "qr",
            "qr",
            "status:authenticating",
            "authenticated",
            "status:ready"
        ]
    );
    assert_seq_consistent(&h.store, id);
    // The QR and its status change went out in ONE save with the state.
    {
        let saves = h.store.saves.lock();
        let qr_save = saves
            .iter()
            .find(|(r, _)| r.status == SessionStatus::QrReady)
            .unwrap();
        assert_eq!(event_names(&qr_save.1), vec!["status:qr_ready", "qr"]);
    }
    let stored = h.store.record(id).unwrap();
    assert_eq!(
        (stored.status, stored.desired, stored.event_seq),
        (SessionStatus::Ready, DesiredState::Running, 7)
    );
    assert_eq!(h.gw.registry.overview(&caller(Role::Viewer)).active, 1);

    // Starting a started session is refused.
    assert_eq!(
        h.command(id, Cmd::Start).await.unwrap_err(),
        WebError::SessionAlreadyStarted("my-bot".into())
    );
    assert_eq!(engine.starts_of(id), 1);
}

#[actix::test]
async fn drops_restart_with_backoff_until_the_budget_is_exhausted() {
    let (h, id) = boot_one(
        record("flaky", 2, 3),
        vec![connect_then(ms(5), drop_ev("stream closed"))],
        fast_options(),
    )
    .await;
    let engine = h.engine.clone();
    h.command(id, Cmd::Start).await.unwrap();

    let view = h.wait_status(id, SessionStatus::Failed).await;
    assert_eq!(
        view.record.last_error.as_deref(),
        Some("Reconnection failed after 3 attempts: stream closed")
    );
    assert_eq!(view.next_retry_at, None);
    assert!(!view.engine_alive);
    // 1 start + 3 restarts, never more.
    assert_eq!(engine.starts_of(id), 4);
    tokio::time::sleep(ms(100)).await;
    assert_eq!(engine.starts_of(id), 4);
    assert_eq!(h.stats().await.pending_retries, 0);

    let events = h.store.events(id);
    let names = event_names(&events);
    assert_eq!(
        names.iter().filter(|n| *n == "disconnected:retry").count(),
        3
    );
    assert_eq!(
        names.iter().filter(|n| *n == "disconnected:final").count(),
        1
    );
    assert_eq!(names.last().map(String::as_str), Some("disconnected:final"));
    // Reconnects reuse the credentials: authenticated only once.
    assert_eq!(names.iter().filter(|n| *n == "authenticated").count(), 1);
    let failed = events.iter().rev().find_map(|e| match &e.data {
        Some(Data::Status(s)) if s.status == "failed" => Some(s.clone()),
        _ => None,
    });
    let failed = failed.unwrap();
    assert_eq!(failed.previous_status, "ready");
    assert_eq!(
        failed.last_error.as_deref(),
        Some("Reconnection failed after 3 attempts: stream closed")
    );
    assert_seq_consistent(&h.store, id);
    // Every engine got a fresh generation.
    let gens: Vec<u64> = engine.0.starts.lock().iter().map(|(_, g)| *g).collect();
    assert!(gens.windows(2).all(|w| w[0] < w[1]), "{gens:?}");
    // desired stays running; a failed session is not restored.
    assert_eq!(h.store.record(id).unwrap().desired, DesiredState::Running);
}

#[actix::test]
async fn a_waiting_restart_is_visible_and_cancelled_by_stop() {
    let (h, id) = boot_one(
        record("waiting", 400, 5),
        vec![connect_then(ms(2), drop_ev("network"))],
        fast_options(),
    )
    .await;
    let engine = h.engine.clone();
    h.command(id, Cmd::Start).await.unwrap();
    let reg = h.gw.registry.clone();
    wait_until("a scheduled restart", || {
        reg.get(id).is_some_and(|v| v.next_retry_at.is_some())
    })
    .await;
    let view = h.view(id);
    assert_eq!(view.record.status, SessionStatus::Disconnected);
    assert_eq!(view.restarts, 1);
    assert_eq!(view.record.last_error, None);
    let wait = view.next_retry_at.unwrap() - chrono::Utc::now();
    assert!(wait <= chrono::Duration::milliseconds(480), "{wait:?}");
    assert_eq!(h.stats().await.pending_retries, 1);

    let view = h.command(id, Cmd::Stop).await.unwrap();
    assert_eq!(
        (view.record.status, view.next_retry_at),
        (SessionStatus::Disconnected, None)
    );
    assert_eq!(h.stats().await.pending_retries, 0);
    tokio::time::sleep(ms(600)).await;
    assert_eq!(engine.starts_of(id), 1);
    assert_eq!(h.store.record(id).unwrap().desired, DesiredState::Stopped);
    assert_eq!(
        event_names(&h.store.events(id)).last().map(String::as_str),
        Some("disconnected:final")
    );
}

#[actix::test]
async fn the_budget_resets_after_a_stable_ready() {
    let mut options = fast_options();
    options.backoff.stable_reset = ms(100);
    let (h, id) = boot_one(
        record("stable", 1, 1),
        vec![
            connect_then(ms(5), drop_ev("first")),
            // Up longer than stable_reset: the budget is back when it drops.
            connect_then(ms(300), drop_ev("second")),
            Script::Events(vec![(ms(2), connected("628"))]),
        ],
        options,
    )
    .await;
    let engine = h.engine.clone();
    h.command(id, Cmd::Start).await.unwrap();
    let reg = h.gw.registry.clone();
    wait_until("three starts", || engine.starts_of(id) == 3).await;
    wait_until("ready with the budget reset", || {
        reg.get(id)
            .is_some_and(|v| v.record.status == SessionStatus::Ready && v.restarts == 0)
    })
    .await;
    assert_eq!(h.view(id).record.last_error, None);
    assert!(!event_names(&h.store.events(id)).contains(&"status:failed".to_string()));

    // Without the reset the same schedule fails at the second drop.
    let mut options = fast_options();
    options.backoff.stable_reset = ms(100);
    let (h, id) = boot_one(
        record("unstable", 1, 1),
        vec![
            connect_then(ms(5), drop_ev("first")),
            connect_then(ms(5), drop_ev("second")),
        ],
        options,
    )
    .await;
    let engine = h.engine.clone();
    h.command(id, Cmd::Start).await.unwrap();
    let view = h.wait_status(id, SessionStatus::Failed).await;
    assert_eq!(
        view.record.last_error.as_deref(),
        Some("Reconnection failed after 1 attempts: second")
    );
    assert_eq!(engine.starts_of(id), 2);
}

#[actix::test]
async fn terminal_events_fail_without_retry() {
    let cases = vec![
        (EngineEvent::QrExhausted, QR_EXHAUSTED_ERROR.to_string()),
        (
            EngineEvent::LoggedOut {
                reason: "401".into(),
            },
            LOGGED_OUT_ERROR.to_string(),
        ),
        (EngineEvent::Replaced, REPLACED_ERROR.to_string()),
        (EngineEvent::Outdated, OUTDATED_ERROR.to_string()),
        (
            EngineEvent::TemporaryBan {
                code: 402,
                expires_in: Duration::from_secs(3600),
            },
            "temporarily banned by WhatsApp (code 402) until".to_string(),
        ),
    ];
    let engine = FakeEngine::default();
    let mut records = vec![];
    for (i, (event, _)) in cases.iter().enumerate() {
        let rec = record(&format!("term-{i}"), 1, 5);
        engine.script(rec.id, vec![connect_then(ms(2), event.clone())]);
        records.push(rec);
    }
    let ids: Vec<_> = records.iter().map(|r| r.id).collect();
    let h = boot(records, engine.clone(), fast_options()).await;
    for id in &ids {
        h.command(*id, Cmd::Start).await.unwrap();
    }
    for (id, (event, error)) in ids.iter().zip(&cases) {
        let view = h.wait_status(*id, SessionStatus::Failed).await;
        let last_error = view.record.last_error.clone().unwrap();
        assert!(
            last_error.starts_with(error.as_str()),
            "{event:?}: {last_error}"
        );
        assert_eq!(view.next_retry_at, None, "{event:?}");
        assert_eq!(view.restarts, 0, "{event:?}");
        let names = event_names(&h.store.events(*id));
        assert_eq!(
            &names[names.len() - 2..],
            ["status:failed", "disconnected:final"],
            "{event:?}"
        );
    }
    tokio::time::sleep(ms(50)).await;
    for id in &ids {
        assert_eq!(engine.starts_of(*id), 1);
    }
    // The unlinked device: credentials wiped, link cleared.
    assert_eq!(*engine.0.forgotten.lock(), vec![ids[1]]);
    assert_eq!(h.view(ids[1]).record.phone, None);
    assert_eq!(h.view(ids[2]).record.phone.as_deref(), Some("628"));
    assert_eq!(h.stats().await.pending_retries, 0);
}

#[actix::test]
async fn events_of_a_replaced_engine_are_ignored() {
    let (h, id) = boot_one(
        record("stale", 1, 5),
        vec![Script::Events(vec![(ms(2), connected("628"))])],
        fast_options(),
    )
    .await;
    let engine = h.engine.clone();
    h.command(id, Cmd::Start).await.unwrap();
    h.wait_status(id, SessionStatus::Ready).await;
    let view = h.command(id, Cmd::Restart).await.unwrap();
    assert_eq!(view.record.status, SessionStatus::Initializing);
    h.wait_status(id, SessionStatus::Ready).await;
    let sinks = engine.sinks_of(id);
    assert_eq!(sinks.len(), 2);
    assert_ne!(sinks[0].generation, sinks[1].generation);
    let seq_before = h.store.record(id).unwrap().event_seq;

    // The first engine speaks up after it was replaced.
    sinks[0].emit(qr("OLD"));
    sinks[0].emit(drop_ev("old engine"));
    sinks[0].emit(EngineEvent::LoggedOut {
        reason: "old".into(),
    });
    tokio::time::sleep(ms(50)).await;
    let view = h.view(id);
    assert_eq!(
        (view.record.status, view.restarts, view.next_retry_at),
        (SessionStatus::Ready, 0, None)
    );
    assert_eq!(h.store.record(id).unwrap().event_seq, seq_before);
    assert_eq!(engine.starts_of(id), 2);
    assert_eq!(
        engine.0.stops.load(Ordering::SeqCst),
        1,
        "restart stopped the first engine cleanly"
    );

    // The current engine is still heard.
    sinks[1].emit(drop_ev("current"));
    let reg = h.gw.registry.clone();
    wait_until("restart after the current drop", || {
        engine.starts_of(id) == 3
    })
    .await;
    wait_until("ready again", || {
        reg.get(id)
            .is_some_and(|v| v.record.status == SessionStatus::Ready)
    })
    .await;
    assert_eq!(h.view(id).restarts, 1);
}

#[actix::test]
async fn a_panicking_engine_crashes_only_its_session() {
    let engine = FakeEngine::default();
    let a = record("panicky", 1, 5);
    let b = record("calm", 1, 5);
    let (ida, idb) = (a.id, b.id);
    engine.script(
        ida,
        vec![
            Script::Panic,
            Script::Events(vec![(ms(2), connected("628"))]),
        ],
    );
    engine.script(idb, vec![Script::Events(vec![(ms(2), connected("629"))])]);
    let h = boot(vec![a, b], engine.clone(), fast_options()).await;
    h.command(idb, Cmd::Start).await.unwrap();
    h.wait_status(idb, SessionStatus::Ready).await;
    h.command(ida, Cmd::Start).await.unwrap();
    let reg = h.gw.registry.clone();
    wait_until("panicky recovered", || engine.starts_of(ida) == 2).await;
    wait_until("panicky ready", || {
        reg.get(ida)
            .is_some_and(|v| v.record.status == SessionStatus::Ready)
    })
    .await;
    assert_eq!(h.view(ida).restarts, 1);
    let disconnected = h.store.events(ida).into_iter().find_map(|e| match e.data {
        Some(Data::Disconnected(d)) => Some(d),
        _ => None,
    });
    let disconnected = disconnected.unwrap();
    assert!(
        disconnected
            .reason
            .starts_with("engine panicked: fake engine: injected panic"),
        "{}",
        disconnected.reason
    );
    assert!(disconnected.will_retry);
    // The other session never noticed.
    assert_eq!(
        (h.status(idb), engine.starts_of(idb), h.view(idb).restarts),
        (SessionStatus::Ready, 1, 0)
    );
    assert_eq!(
        h.stats().await.actor_deaths,
        0,
        "an engine panic is caught inside the actor"
    );
}

#[actix::test]
async fn a_panicking_session_actor_is_recovered_and_isolated() {
    let engine = FakeEngine::default();
    let a = record("doomed", 1, 5);
    let b = record("bystander", 1, 5);
    let (ida, idb) = (a.id, b.id);
    engine.script(ida, vec![Script::Events(vec![(ms(2), connected("628"))])]);
    engine.script(idb, vec![Script::Events(vec![(ms(2), connected("629"))])]);
    let h = boot(vec![a, b], engine.clone(), fast_options()).await;
    h.command(idb, Cmd::Start).await.unwrap();
    h.wait_status(idb, SessionStatus::Ready).await;

    // The store panics (once) inside doomed's actor when it saves `ready`.
    *h.store.panic_on.lock() = Some((ida, SessionStatus::Ready));
    h.command(ida, Cmd::Start).await.unwrap();
    let reg = h.gw.registry.clone();
    wait_until("doomed restarted", || engine.starts_of(ida) == 2).await;
    wait_until("doomed ready", || {
        reg.get(ida)
            .is_some_and(|v| v.record.status == SessionStatus::Ready)
    })
    .await;
    let stats = h.stats().await;
    assert_eq!(stats.actor_deaths, 1);
    assert_eq!(h.view(ida).restarts, 1);
    // The engine of the dead actor was aborted, not leaked.
    assert_eq!(engine.0.aborts.load(Ordering::SeqCst), 1);
    let names = event_names(&h.store.events(ida));
    assert_eq!(
        names,
        vec![
            "status:initializing",
            "status:disconnected",
            "disconnected:retry",
            "status:initializing",
            "status:ready",
            "authenticated"
        ]
    );
    assert_seq_consistent(&h.store, ida);
    // The bystander is untouched and still commands.
    assert_eq!(
        (h.status(idb), engine.starts_of(idb)),
        (SessionStatus::Ready, 1)
    );
    let view = h.command(idb, Cmd::Stop).await.unwrap();
    assert_eq!(view.record.status, SessionStatus::Disconnected);
}

#[actix::test]
async fn desired_state_is_persisted_and_honoured_by_restore() {
    let engine = FakeEngine::default();
    let mut was_ready = record("was-ready", 1, 5);
    was_ready.desired = DesiredState::Running;
    was_ready.status = SessionStatus::Ready;
    was_ready.phone = Some("628".into());
    let mut was_down = record("was-down", 1, 5);
    was_down.desired = DesiredState::Running;
    was_down.status = SessionStatus::Disconnected;
    let mut stopped = record("stopped", 1, 5);
    stopped.desired = DesiredState::Stopped;
    stopped.status = SessionStatus::Disconnected;
    let mut failed = record("failed", 1, 5);
    failed.desired = DesiredState::Running;
    failed.status = SessionStatus::Failed;
    failed.last_error = Some("QR code was never scanned".into());
    let created = record("fresh", 1, 5);
    let ids = [was_ready.id, was_down.id, stopped.id, failed.id, created.id];
    let h = boot(
        vec![was_ready, was_down, stopped, failed, created],
        engine.clone(),
        fast_options(),
    )
    .await;

    h.wait_status(ids[0], SessionStatus::Ready).await;
    h.wait_status(ids[1], SessionStatus::Ready).await;
    tokio::time::sleep(ms(50)).await;
    let starts: Vec<usize> = ids.iter().map(|id| engine.starts_of(*id)).collect();
    assert_eq!(starts, vec![1, 1, 0, 0, 0]);
    assert_eq!(h.status(ids[2]), SessionStatus::Disconnected);
    assert_eq!(h.status(ids[3]), SessionStatus::Failed);
    assert_eq!(h.status(ids[4]), SessionStatus::Created);

    // Commands persist the desired state.
    h.command(ids[0], Cmd::Stop).await.unwrap();
    assert_eq!(
        h.store.record(ids[0]).unwrap().desired,
        DesiredState::Stopped
    );
    h.command(ids[1], Cmd::ForceKill).await.unwrap();
    assert_eq!(
        h.store.record(ids[1]).unwrap().desired,
        DesiredState::Stopped
    );
    h.command(ids[2], Cmd::Start).await.unwrap();
    assert_eq!(
        h.store.record(ids[2]).unwrap().desired,
        DesiredState::Running
    );
    h.command(ids[4], Cmd::Restart).await.unwrap();
    h.wait_status(ids[4], SessionStatus::Ready).await;
    h.command(ids[4], Cmd::Logout).await.unwrap();
    assert_eq!(
        h.store.record(ids[4]).unwrap().desired,
        DesiredState::Stopped
    );
    h.wait_status(ids[2], SessionStatus::Ready).await;

    // A second boot over the same records restores exactly the running one.
    let records: Vec<_> = h.store.sessions.lock().values().cloned().collect();
    h.gw.shutdown().await;
    let engine2 = FakeEngine::default();
    let h2 = boot(records, engine2.clone(), fast_options()).await;
    h2.wait_status(ids[2], SessionStatus::Ready).await;
    tokio::time::sleep(ms(50)).await;
    let starts: Vec<usize> = ids.iter().map(|id| engine2.starts_of(*id)).collect();
    assert_eq!(starts, vec![0, 0, 1, 0, 0]);
}

#[actix::test]
async fn restore_starts_at_most_n_sessions_at_a_time() {
    let engine = FakeEngine::default();
    let mut records = vec![];
    for i in 0..10 {
        let mut r = record(&format!("bulk-{i}"), 1, 5);
        r.desired = DesiredState::Running;
        r.status = SessionStatus::Disconnected;
        engine.script(r.id, vec![Script::Events(vec![(ms(30), connected("628"))])]);
        records.push(r);
    }
    let ids: Vec<_> = records.iter().map(|r| r.id).collect();
    let mut options = fast_options();
    options.restore_concurrency = 3;
    let h = boot(records, engine.clone(), options).await;
    let reg = h.gw.registry.clone();
    wait_until("all restored", || {
        ids.iter().all(|id| {
            reg.get(*id)
                .is_some_and(|v| v.record.status == SessionStatus::Ready)
        })
    })
    .await;
    assert_eq!(engine.0.starts.lock().len(), 10);
    assert_eq!(engine.0.max_connecting.load(Ordering::SeqCst), 3);
    let stats = h.stats().await;
    assert_eq!((stats.restore_queued, stats.restoring), (0, 0));
    assert_eq!(stats.restore_total, 10);
    let progress = h.gw.web.send(CheckReady).await.unwrap().unwrap();
    assert_eq!((progress.total, progress.done()), (10, 10));
}

#[actix::test]
async fn shutdown_stops_every_engine_and_keeps_desired_state() {
    let engine = FakeEngine::default();
    let a = record("one", 1, 5);
    let b = record("two", 1, 5);
    let (ida, idb) = (a.id, b.id);
    let h = boot(vec![a, b], engine.clone(), fast_options()).await;
    h.command(ida, Cmd::Start).await.unwrap();
    h.command(idb, Cmd::Start).await.unwrap();
    h.wait_status(ida, SessionStatus::Ready).await;
    h.wait_status(idb, SessionStatus::Ready).await;
    h.gw.supervisor.send(Shutdown).await.unwrap();
    assert_eq!(engine.0.stops.load(Ordering::SeqCst), 2);
    assert_eq!(engine.0.aborts.load(Ordering::SeqCst), 0);
    for id in [ida, idb] {
        let r = h.store.record(id).unwrap();
        assert_eq!(
            (r.status, r.desired),
            (SessionStatus::Disconnected, DesiredState::Running)
        );
        assert!(!h.view(id).engine_alive);
    }
    assert_eq!(
        h.command(ida, Cmd::Start).await.unwrap_err(),
        WebError::ShuttingDown
    );
}

#[actix::test]
async fn logout_force_kill_and_delete() {
    let engine = FakeEngine::default();
    let a = record("logout-me", 1, 5);
    let b = record("kill-me", 1, 5);
    let c = record("delete-me", 1, 5);
    let (ida, idb, idc) = (a.id, b.id, c.id);
    let h = boot(vec![a, b, c], engine.clone(), fast_options()).await;
    for id in [ida, idb, idc] {
        h.command(id, Cmd::Start).await.unwrap();
        h.wait_status(id, SessionStatus::Ready).await;
    }

    let view = h.command(ida, Cmd::Logout).await.unwrap();
    assert_eq!(view.record.status, SessionStatus::Disconnected);
    assert_eq!((view.record.phone, view.record.push_name), (None, None));
    assert_eq!(engine.0.logouts.load(Ordering::SeqCst), 1);
    assert_eq!(*engine.0.forgotten.lock(), vec![ida]);
    let stored = h.store.record(ida).unwrap();
    assert_eq!(
        (stored.phone, stored.desired),
        (None, DesiredState::Stopped)
    );

    let view = h.command(idb, Cmd::ForceKill).await.unwrap();
    assert_eq!(view.record.status, SessionStatus::Disconnected);
    assert!(!view.engine_alive);
    assert_eq!(engine.0.aborts.load(Ordering::SeqCst), 1);
    assert_eq!(
        h.view(idb).record.phone.as_deref(),
        Some("628000"),
        "stop keeps the link"
    );
    // Stop is idempotent.
    let again = h.command(idb, Cmd::Stop).await.unwrap();
    assert_eq!(again.record.status, SessionStatus::Disconnected);
    assert_eq!(
        again.record.event_seq, view.record.event_seq,
        "no change, no events"
    );

    let deleted =
        h.gw.web
            .send(wasup_actors::web::DeleteSession {
                caller: caller(Role::Operator),
                id: "delete-me".into(),
            })
            .await
            .unwrap();
    assert_eq!(deleted, Ok(()));
    assert!(h.gw.registry.get(idc).is_none());
    assert!(h.store.record(idc).is_none());
    assert_eq!(*engine.0.forgotten.lock(), vec![ida, idc]);
    assert_eq!(engine.0.stops.load(Ordering::SeqCst), 1);
    assert_eq!(
        h.command(idc, Cmd::Start).await.unwrap_err(),
        WebError::unknown_session_id(idc)
    );
    tokio::time::sleep(ms(20)).await;
    assert_eq!(h.stats().await.actors, 0, "idle sessions hold no actor");
}

#[actix::test]
async fn a_failed_engine_start_is_a_connect_failure() {
    let (h, id) = boot_one(
        record("nostart", 1, 2),
        vec![Script::Fail("no route to WhatsApp".into())],
        fast_options(),
    )
    .await;
    let engine = h.engine.clone();
    let view = h.command(id, Cmd::Start).await.unwrap();
    // The reply already reflects the failed start.
    assert_eq!(view.record.status, SessionStatus::Disconnected);
    assert!(view.next_retry_at.is_some());
    let view = h.wait_status(id, SessionStatus::Failed).await;
    assert_eq!(
        view.record.last_error.as_deref(),
        Some("Reconnection failed after 2 attempts: no route to WhatsApp")
    );
    assert_eq!(engine.starts_of(id), 3);
}

/// An engine that fails while it is being started, with a store slow to
/// answer: the end check (`MaybeEnd`) the start request queued runs while
/// the save of the failure is in flight, and must not save the same events
/// again (on a database, a seq conflict and a failed save; seen when
/// WhatsApp went away under 100 linked sessions).
#[actix::test]
async fn no_event_is_saved_twice_while_a_save_is_in_flight() {
    let (h, id) = boot_one(
        record("slow-db", 1, 2),
        (0..3)
            .map(|_| {
                Script::Events(vec![(
                    ms(0),
                    EngineEvent::ConnectFailed {
                        reason: "failed to open transport".into(),
                    },
                )])
            })
            .collect(),
        fast_options(),
    )
    .await;
    h.store.save_answer_delay_ms.store(30, Ordering::SeqCst);
    h.engine.0.start_answer_delay_ms.store(20, Ordering::SeqCst);
    h.command(id, Cmd::Start).await.unwrap();
    h.wait_status(id, SessionStatus::Failed).await;
    tokio::time::sleep(ms(100)).await;
    let seqs: Vec<u64> = h.store.events(id).iter().map(|e| e.seq).collect();
    assert_eq!(
        seqs,
        (1..=seqs.len() as u64).collect::<Vec<_>>(),
        "each event saved once, in order"
    );
    assert_eq!(h.stats().await.actors, 0, "the actor still ends");
}

#[actix::test]
async fn events_the_store_refused_go_out_with_the_next_save() {
    let (h, id) = boot_one(
        record("shaky-db", 1, 5),
        vec![Script::Events(vec![
            (ms(50), qr("QR-1")),
            (
                ms(100),
                EngineEvent::PairSuccess {
                    phone: "628".into(),
                    push_name: None,
                },
            ),
        ])],
        fast_options(),
    )
    .await;
    let engine = h.engine.clone();

    // A start the store refuses starts nothing and changes nothing.
    h.store.down.store(true, Ordering::SeqCst);
    let err = h.command(id, Cmd::Start).await.unwrap_err();
    assert_eq!(
        err,
        WebError::Unavailable("The database is unavailable; try again later".into())
    );
    assert_eq!(engine.starts_of(id), 0);
    assert_eq!(h.status(id), SessionStatus::Created);
    h.store.down.store(false, Ordering::SeqCst);

    h.command(id, Cmd::Start).await.unwrap();
    // The store goes down while the QR arrives: the registry keeps the last
    // persisted state.
    h.store.down.store(true, Ordering::SeqCst);
    tokio::time::sleep(ms(100)).await;
    assert_eq!(h.status(id), SessionStatus::Initializing);
    h.store.down.store(false, Ordering::SeqCst);
    let view = h.wait_status(id, SessionStatus::Authenticating).await;
    assert_eq!(view.record.phone.as_deref(), Some("628"));
    // Nothing lost, nothing reordered: the QR events came with the next save.
    assert_eq!(
        event_names(&h.store.events(id)),
        vec![
            "status:initializing",
            "status:qr_ready",
            "qr",
            "status:authenticating",
            "authenticated"
        ]
    );
    assert_seq_consistent(&h.store, id);
    let saves = h
        .store
        .saves
        .lock()
        .iter()
        .filter(|(r, _)| r.id == id)
        .count();
    assert_eq!(saves, 2);

    // A restart the store refuses leaves the running engine alone.
    h.store.down.store(true, Ordering::SeqCst);
    let err = h.command(id, Cmd::Restart).await.unwrap_err();
    assert_eq!(
        err,
        WebError::Unavailable("The database is unavailable; try again later".into())
    );
    h.store.down.store(false, Ordering::SeqCst);
    assert_eq!(
        (engine.starts_of(id), engine.0.stops.load(Ordering::SeqCst)),
        (1, 0)
    );
    let view = h.view(id);
    assert_eq!(
        (view.record.status, view.engine_alive),
        (SessionStatus::Authenticating, true)
    );
    engine.sinks_of(id)[0].emit(connected("628"));
    h.wait_status(id, SessionStatus::Ready).await;
}

#[actix::test]
async fn a_command_whose_actor_panics_is_retried_once_on_a_fresh_actor() {
    let engine = FakeEngine::default();
    let rec = record("retry-cmd", 1, 5);
    let id = rec.id;
    let h = boot(vec![rec], engine.clone(), fast_options()).await;
    *h.store.panic_on.lock() = Some((id, SessionStatus::Initializing));
    let view = h.command(id, Cmd::Start).await.unwrap();
    assert_eq!(view.record.status, SessionStatus::Initializing);
    h.wait_status(id, SessionStatus::Ready).await;
    assert_eq!(engine.starts_of(id), 1);
    tokio::time::sleep(ms(20)).await;
    let stats = h.stats().await;
    assert_eq!((stats.actor_deaths, stats.actors), (1, 1));
    assert_eq!(
        event_names(&h.store.events(id)),
        vec!["status:initializing", "status:ready", "authenticated"]
    );
}

/// Collects the reports a session actor sends (in place of a supervisor).
#[derive(Default)]
struct Reports(Arc<Mutex<Vec<SessionReport>>>);

impl Actor for Reports {
    type Context = Context<Self>;
}

impl Handler<SessionReport> for Reports {
    type Result = ();

    fn handle(&mut self, report: SessionReport, _: &mut Context<Self>) {
        self.0.lock().push(report);
    }
}

#[actix::test]
async fn a_session_actor_runs_and_reports_without_a_supervisor() {
    let engine = FakeEngine::default();
    let rec = record("alone", 400, 5);
    let id = rec.id;
    engine.script(id, vec![connect_then(ms(2), drop_ev("gone"))]);
    let view = SessionView {
        record: rec.clone(),
        next_retry_at: None,
        restarts: 0,
        engine_alive: false,
        qr: None,
    };
    let registry = Arc::new(SessionRegistry::new());
    registry.upsert(view.clone());
    let deps = Deps {
        store: FakeStore::new(vec![rec]),
        engine: Arc::new(engine.clone()),
        registry: registry.clone(),
        options: Arc::new(fast_options()),
        generations: Default::default(),
    };
    let reports = Reports::default();
    let seen = reports.0.clone();
    let actor = SessionActor::new(&view, 7, deps, reports.start().recipient()).start();
    let started = actor
        .send(SessionRequest::Command(SessionCommand::Start))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(started.record.status, SessionStatus::Initializing);
    wait_until("the actor to report its end", || !seen.lock().is_empty()).await;
    let report = seen.lock()[0].clone();
    assert_eq!((report.id, report.incarnation), (id, 7));
    // The drop left a restart pending: the report hands it on, and the
    // registry shows the same one.
    let Report::Ended { retry: Some(retry) } = report.report else {
        panic!("{report:?}")
    };
    assert!(retry <= Duration::from_millis(480), "{retry:?}");
    let shown = registry.get(id).unwrap();
    assert_eq!(shown.record.status, SessionStatus::Disconnected);
    assert!(shown.next_retry_at.is_some());
    assert_eq!(engine.starts_of(id), 1);
}
