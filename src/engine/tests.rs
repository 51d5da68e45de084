//! Engine tests without a route to WhatsApp (this machine has no internet).

use std::time::Duration;

use actix::{Actor, Context, Handler};
use tokio::sync::mpsc;
use tokio::time::Instant;
use wasup_actors::model::ProxyType;
use wasup_actors::ports::{
    Engine, EngineEvent, EngineEventMsg, EngineEventSink, EngineSpec, ProxySpec,
};

use super::*;
use crate::engine::store::tests::sqlite_db;

struct Collector {
    tx: mpsc::UnboundedSender<(Instant, EngineEvent)>,
}

impl Actor for Collector {
    type Context = Context<Self>;
}

impl Handler<EngineEventMsg> for Collector {
    type Result = ();
    fn handle(&mut self, msg: EngineEventMsg, _: &mut Context<Self>) {
        let _ = self.tx.send((Instant::now(), msg.event));
    }
}

fn sink(
    id: uuid::Uuid,
) -> (
    EngineEventSink,
    mpsc::UnboundedReceiver<(Instant, EngineEvent)>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let addr = Collector { tx }.start();
    (
        EngineEventSink {
            session_id: id,
            generation: 1,
            recipient: addr.recipient(),
        },
        rx,
    )
}

fn engine(db: &crate::db::Db, timeout: Duration, version: Option<(u32, u32, u32)>) -> WaEngine {
    WaEngine::new(
        db.clone(),
        Arc::new(SecretBox::new(&[1u8; 32])),
        EngineOptions {
            wa_version: version,
            connect_timeout: timeout,
            transport: TransportChoice::WhatsApp,
            // The proxy tests dial loopback proxies.
            proxy_policy: super::proxy_guard::ProxyAddressPolicy {
                allow_private: true,
            },
        },
    )
    .unwrap()
}

fn spec(id: uuid::Uuid) -> EngineSpec {
    EngineSpec {
        session_id: id,
        proxy: None,
        push_name: Some("Tester".into()),
    }
}

/// Collect events until `quiet` passes without one (or `limit` is reached).
async fn drain(
    rx: &mut mpsc::UnboundedReceiver<(Instant, EngineEvent)>,
    limit: Duration,
) -> Vec<(Instant, EngineEvent)> {
    let mut out = Vec::new();
    let end = Instant::now() + limit;
    while let Ok(Some(ev)) = tokio::time::timeout_at(end, rx.recv()).await {
        out.push(ev);
    }
    out
}

/// Mark the session as linked so the client takes the linked path
/// (auto-reconnect off from the start).
async fn link(engine: &WaEngine, id: uuid::Uuid) {
    use whatsapp_rust::wacore::store::traits::DeviceStore;
    let store = engine.device_store(&id.to_string());
    store.create().await.unwrap();
    let mut dev = store.load().await.unwrap().unwrap();
    dev.pn = Some("15550001111@s.whatsapp.net".parse().unwrap());
    dev.push_name = "Tester".into();
    store.save(&dev).await.unwrap();
}

async fn expect_connect_failed(
    linked: bool,
    version: Option<(u32, u32, u32)>,
    cause_words: &[&str],
) {
    let t = sqlite_db();
    let timeout = Duration::from_secs(3);
    let engine = engine(&t.db, timeout, version);
    let id = uuid::Uuid::new_v4();
    if linked {
        link(&engine, id).await;
    }
    let (sink, mut rx) = sink(id);
    let started = Instant::now();
    let handle = engine.start(spec(id), sink).await.expect("start");
    let events = drain(&mut rx, timeout + Duration::from_secs(8)).await;
    assert_eq!(events.len(), 1, "exactly one event, got {events:?}");
    let (at, event) = &events[0];
    let EngineEvent::ConnectFailed { reason } = event else {
        panic!("expected ConnectFailed, got {event:?}");
    };
    println!(
        "linked={linked} version={version:?}: after {:?}: {reason}",
        *at - started
    );
    assert!(reason.starts_with("could not reach WhatsApp: "), "{reason}");
    assert!(
        cause_words.iter().any(|w| reason.contains(w)),
        "reason should name the cause ({cause_words:?}): {reason}"
    );
    assert!(
        *at - started <= timeout + Duration::from_secs(3),
        "too late"
    );
    // Stopping an ended engine is harmless and silent.
    handle.stop().await;
    assert!(drain(&mut rx, Duration::from_millis(300)).await.is_empty());
}

#[actix::test]
async fn unlinked_without_network_fails_with_the_version_check_cause() {
    expect_connect_failed(false, None, &["version check"]).await;
}

#[actix::test]
async fn linked_without_network_fails_at_once_with_the_version_check_cause() {
    expect_connect_failed(true, None, &["version check"]).await;
}

#[actix::test]
async fn pinned_version_without_network_names_the_websocket_cause() {
    expect_connect_failed(
        true,
        Some((2, 3000, 1042742319)),
        &["wss://web.whatsapp.com"],
    )
    .await;
    expect_connect_failed(
        false,
        Some((2, 3000, 1042742319)),
        &["wss://web.whatsapp.com"],
    )
    .await;
}

#[actix::test]
async fn stop_before_the_deadline_is_silent() {
    let t = sqlite_db();
    let timeout = Duration::from_secs(3);
    let engine = engine(&t.db, timeout, None);
    let id = uuid::Uuid::new_v4();
    let (sink, mut rx) = sink(id);
    let handle = engine.start(spec(id), sink).await.expect("start");
    tokio::time::sleep(Duration::from_millis(300)).await;
    tokio::time::timeout(Duration::from_secs(15), handle.stop())
        .await
        .expect("stop returns");
    let events = drain(&mut rx, timeout + Duration::from_secs(2)).await;
    assert!(events.is_empty(), "no events after stop: {events:?}");
}

#[actix::test]
async fn abort_and_logout_are_silent() {
    let t = sqlite_db();
    let timeout = Duration::from_secs(2);
    let engine = engine(&t.db, timeout, None);
    let (id1, id2) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    let (sink1, mut rx1) = sink(id1);
    let (sink2, mut rx2) = sink(id2);
    let h1 = engine.start(spec(id1), sink1).await.expect("start");
    let h2 = engine.start(spec(id2), sink2).await.expect("start");
    h1.abort();
    tokio::time::timeout(Duration::from_secs(15), h2.logout())
        .await
        .expect("logout returns")
        .expect("logout ok");
    let (e1, e2) = tokio::join!(
        drain(&mut rx1, timeout + Duration::from_secs(2)),
        drain(&mut rx2, Duration::from_millis(500))
    );
    assert!(e1.is_empty() && e2.is_empty(), "{e1:?} {e2:?}");
}

#[actix::test]
async fn a_session_proxy_is_dialled_and_its_failure_named_without_the_password() {
    let t = sqlite_db();
    let timeout = Duration::from_secs(3);
    let engine = engine(&t.db, timeout, Some((2, 3000, 1042742319)));
    let id = uuid::Uuid::new_v4();
    link(&engine, id).await;
    // A loopback port nobody listens on: the proxy is down.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (sink, mut rx) = sink(id);
    let mut s = spec(id);
    s.proxy = Some(ProxySpec {
        url: format!("socks5://bob:hunter2@127.0.0.1:{port}"),
        kind: ProxyType::Socks5,
    });
    let handle = engine.start(s, sink).await.expect("start");
    let events = drain(&mut rx, timeout + Duration::from_secs(8)).await;
    let [(_, EngineEvent::ConnectFailed { reason })] = events.as_slice() else {
        panic!("expected one ConnectFailed, got {events:?}");
    };
    assert!(
        reason.contains(&format!("proxy 127.0.0.1:{port} unreachable")),
        "{reason}"
    );
    assert!(reason.contains("socks5 proxy"), "{reason}");
    assert!(!reason.contains("hunter2"), "password leaked: {reason}");
    handle.stop().await;
}

#[actix::test]
async fn forget_wipes_the_device() {
    use whatsapp_rust::wacore::store::traits::DeviceStore;
    let t = sqlite_db();
    let engine = engine(&t.db, Duration::from_secs(2), None);
    let (a, b) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    link(&engine, a).await;
    link(&engine, b).await;
    engine.forget(a).await.unwrap();
    assert!(!engine.device_store(&a.to_string()).exists().await.unwrap());
    assert!(engine.device_store(&b.to_string()).exists().await.unwrap());
}

#[actix::test]
async fn pair_code_without_socket_is_not_ready() {
    let t = sqlite_db();
    let engine = engine(&t.db, Duration::from_secs(1), Some((2, 3000, 1042742319)));
    let id = uuid::Uuid::new_v4();
    let (sink, _rx) = sink(id);
    let h = engine.start(spec(id), sink).await.expect("start");
    let err = h.pair_with_code("15550001111".into()).await.unwrap_err();
    assert!(matches!(err, EngineError::NotReady(_)), "{err:?}");
    h.stop().await;
}

/// A transport that panics (a bug in one client) or closes at once.
struct OddTransport {
    panic: bool,
}

struct ClosedPipe;

#[async_trait::async_trait]
impl whatsapp_rust::transport::Transport for ClosedPipe {
    async fn send(
        &self,
        _data: whatsapp_rust::bytes::Bytes,
    ) -> Result<(), whatsapp_rust::anyhow::Error> {
        Ok(())
    }
    async fn disconnect(&self) {}
}

#[async_trait::async_trait]
impl TransportFactory for OddTransport {
    async fn create_transport(
        &self,
    ) -> Result<
        (
            Arc<dyn whatsapp_rust::transport::Transport>,
            whatsapp_rust::async_channel::Receiver<whatsapp_rust::transport::TransportEvent>,
        ),
        whatsapp_rust::anyhow::Error,
    > {
        if self.panic {
            panic!("transport exploded");
        }
        let (tx, rx) = whatsapp_rust::async_channel::bounded(4);
        let _ = tx
            .send(whatsapp_rust::transport::TransportEvent::Disconnected(
                whatsapp_rust::transport::DisconnectReason::StreamEnded,
            ))
            .await;
        Ok((Arc::new(ClosedPipe), rx))
    }
}

fn odd_engine(db: &crate::db::Db, panic: bool) -> WaEngine {
    WaEngine::new(
        db.clone(),
        Arc::new(SecretBox::new(&[1u8; 32])),
        EngineOptions {
            wa_version: None, // a custom transport pins the version itself
            connect_timeout: Duration::from_secs(3),
            transport: TransportChoice::Factory(Arc::new(OddTransport { panic })),
            ..Default::default()
        },
    )
    .unwrap()
}

#[actix::test]
async fn a_panicking_client_crashes_alone() {
    let t = sqlite_db();
    let bad = odd_engine(&t.db, true);
    let good = engine(&t.db, Duration::from_secs(2), Some((2, 3000, 1042742319)));
    let (id1, id2) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    link(&bad, id1).await;
    let (sink1, mut rx1) = sink(id1);
    let (sink2, mut rx2) = sink(id2);
    let _h1 = bad.start(spec(id1), sink1).await.expect("start");
    let _h2 = good.start(spec(id2), sink2).await.expect("start");
    let e1 = drain(&mut rx1, Duration::from_secs(5)).await;
    assert_eq!(e1.len(), 1, "{e1:?}");
    match &e1[0].1 {
        EngineEvent::Crashed { cause } => assert!(cause.contains("transport exploded"), "{cause}"),
        other => panic!("expected Crashed, got {other:?}"),
    }
    // The same runtime still runs other clients: a second start works...
    let id3 = uuid::Uuid::new_v4();
    let (sink3, mut rx3) = sink(id3);
    let h3 = bad
        .start(spec(id3), sink3)
        .await
        .expect("start after a crash");
    assert!(matches!(
        drain(&mut rx3, Duration::from_secs(5)).await.first(),
        Some((_, EngineEvent::Crashed { .. }))
    ));
    h3.stop().await;
    // ...and the other engine's session ends on its own terms.
    let e2 = drain(&mut rx2, Duration::from_secs(6)).await;
    assert!(
        matches!(e2.as_slice(), [(_, EngineEvent::ConnectFailed { .. })]),
        "{e2:?}"
    );
}

#[actix::test]
async fn a_connection_closed_in_the_handshake_is_a_connect_failure() {
    let t = sqlite_db();
    let engine = odd_engine(&t.db, false);
    let id = uuid::Uuid::new_v4();
    link(&engine, id).await;
    let (sink, mut rx) = sink(id);
    let _h = engine.start(spec(id), sink).await.expect("start");
    let events = drain(&mut rx, Duration::from_secs(6)).await;
    assert_eq!(events.len(), 1, "{events:?}");
    let EngineEvent::ConnectFailed { reason } = &events[0].1 else {
        panic!("expected ConnectFailed, got {events:?}");
    };
    assert!(reason.contains("handshake"), "{reason}");
}

fn shared_for(sink: EngineEventSink) -> Arc<Shared> {
    Arc::new(Shared::new(sink))
}

#[actix::test]
async fn events_map_in_order_and_nothing_follows_a_terminal_one() {
    use whatsapp_rust::types::events as ev;
    let id = uuid::Uuid::new_v4();
    let (sink, mut rx) = sink(id);
    let shared = shared_for(sink);
    let fwd = Forwarder {
        shared: shared.clone(),
        messaging: super::messaging::Messaging::new(tokio::runtime::Handle::current()),
    };
    let send = |e: Event| fwd.handle_event(Arc::new(e));
    let jid: whatsapp_rust::Jid = "15550001111@s.whatsapp.net".parse().unwrap();
    let lid: whatsapp_rust::Jid = "100000012345678@lid".parse().unwrap();
    send(Event::PairingQrCode(
        ev::PairingQrCode::builder()
            .code("ref,a,b,c,d".into())
            .timeout(Duration::from_secs(60))
            .build(),
    ));
    send(Event::PairSuccess(
        ev::PairSuccess::builder()
            .id(jid)
            .lid(lid)
            .business_name("Shop".into())
            .platform("android".into())
            .build(),
    ));
    send(Event::Connected(ev::Connected::builder().build()));
    send(Event::StreamReplaced(ev::StreamReplaced::builder().build()));
    // After the terminal event: nothing more.
    send(Event::PairingQrCodesExhausted(
        ev::PairingQrCodesExhausted::builder()
            .disconnected(true)
            .build(),
    ));
    send(Event::Connected(ev::Connected::builder().build()));
    let events: Vec<EngineEvent> = drain(&mut rx, Duration::from_millis(300))
        .await
        .into_iter()
        .map(|(_, e)| e)
        .collect();
    assert_eq!(
        events,
        vec![
            EngineEvent::Qr {
                code: "ref,a,b,c,d".into(),
                timeout: Duration::from_secs(60)
            },
            EngineEvent::PairSuccess {
                phone: "15550001111".into(),
                push_name: Some("Shop".into())
            },
            EngineEvent::Connected {
                phone: String::new(), // no client in this test
                push_name: None
            },
            EngineEvent::Replaced,
        ]
    );
    assert!(shared.is_closed());
}

#[actix::test]
async fn connect_failure_before_login_is_connect_failed() {
    use whatsapp_rust::types::events as ev;
    let id = uuid::Uuid::new_v4();
    let (sink, mut rx) = sink(id);
    let fwd = Forwarder {
        shared: shared_for(sink),
        messaging: super::messaging::Messaging::new(tokio::runtime::Handle::current()),
    };
    fwd.handle_event(Arc::new(Event::ConnectFailure(
        ev::ConnectFailure::builder()
            .reason(ev::ConnectFailureReason::ServiceUnavailable)
            .build(),
    )));
    let events = drain(&mut rx, Duration::from_millis(300)).await;
    match events.as_slice() {
        [(_, EngineEvent::ConnectFailed { reason })] => {
            assert!(reason.contains("503"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
}

/// Every restart builds a new client: the old one must be freed entirely
/// (its background tasks end), or memory grows with each restart.
#[actix::test]
async fn a_stopped_or_failed_client_is_freed() {
    let t = sqlite_db();
    let engine = engine(&t.db, Duration::from_secs(2), Some((2, 3000, 1042742319)));
    // Stopped while connecting (unlinked: retrying).
    let id = uuid::Uuid::new_v4();
    let (s, _rx) = sink(id);
    let h = engine.start_typed(spec(id), s).await.expect("start");
    let weak = Arc::downgrade(&h.client);
    h.stop().await;
    drop(h);
    // Failed by itself (linked: the run loop ends at once).
    let id2 = uuid::Uuid::new_v4();
    link(&engine, id2).await;
    let (s2, mut rx2) = sink(id2);
    let h2 = engine.start_typed(spec(id2), s2).await.expect("start");
    let weak2 = Arc::downgrade(&h2.client);
    assert!(!drain(&mut rx2, Duration::from_secs(2)).await.is_empty());
    drop(h2);
    let deadline = Instant::now() + Duration::from_secs(10);
    while (weak.strong_count() > 0 || weak2.strong_count() > 0) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(weak.strong_count(), 0, "stopped client still referenced");
    assert_eq!(weak2.strong_count(), 0, "failed client still referenced");
}

#[actix::test]
async fn a_wrong_master_key_fails_the_start_clearly() {
    let t = sqlite_db();
    let id = uuid::Uuid::new_v4();
    link(&engine(&t.db, Duration::from_secs(1), None), id).await;
    let other_key = WaEngine::new(
        t.db.clone(),
        Arc::new(SecretBox::new(&[2u8; 32])),
        EngineOptions::default(),
    )
    .unwrap();
    let (s, mut rx) = sink(id);
    let err = other_key.start(spec(id), s).await.err().expect("refused");
    assert!(err.to_string().contains("wrong master key"), "{err}");
    assert!(drain(&mut rx, Duration::from_millis(300)).await.is_empty());
}
