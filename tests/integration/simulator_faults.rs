//! Each injected fault produces the client event the real server's would.

use std::time::Duration;

use crate::simulator_support::*;
use wasup::simulator::{FaultKind, SimError, Simulator, Target};
use whatsapp_rust::types::events::{ConnectFailureReason, Event};

fn target(d: &wasup::simulator::LinkedDevice) -> Target {
    Target::device(d.phone.clone(), d.device)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_disconnects_and_the_client_comes_back() {
    init_log();
    let sim = Simulator::new();
    let (mut c, d) = linked_client(&sim, "15551240001", "A").await;
    sim.fault(target(&d), FaultKind::Drop).unwrap();
    c.wait_for(10, |e| matches!(e, Event::Disconnected(_)).then_some(()))
        .await;
    c.connected().await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_error_503_disconnects_and_reconnects() {
    init_log();
    let sim = Simulator::new();
    let (mut c, d) = linked_client(&sim, "15551240002", "A").await;
    sim.fault(target(&d), FaultKind::StreamError(503)).unwrap();
    c.wait_for(10, |e| matches!(e, Event::Disconnected(_)).then_some(()))
        .await;
    c.connected().await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_refuses_reconnects_until_it_ends() {
    init_log();
    let sim = Simulator::new();
    let (mut c, d) = linked_client(&sim, "15551240003", "A").await;
    sim.fault(target(&d), FaultKind::Outage(Duration::from_secs(4)))
        .unwrap();
    c.wait_for(10, |e| matches!(e, Event::Disconnected(_)).then_some(()))
        .await;
    // A reconnect during the outage is refused: the client is dropped again.
    c.wait_for(10, |e| matches!(e, Event::Disconnected(_)).then_some(()))
        .await;
    assert!(
        !sim.is_connected(&d.phone, d.device),
        "refused during the outage"
    );
    c.wait_for(60, |e| matches!(e, Event::Connected(_)).then_some(()))
        .await;
    assert!(sim.is_connected(&d.phone, d.device));
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unlink_logs_out_and_the_device_is_forgotten() {
    init_log();
    let sim = Simulator::new();
    let phone = "15551240004";
    let (mut c, d) = linked_client(&sim, phone, "A").await;
    sim.fault(target(&d), FaultKind::Unlink).unwrap();
    c.wait_for(10, |e| matches!(e, Event::LoggedOut(_)).then_some(()))
        .await;
    assert!(sim.phone_devices(phone).unwrap().is_empty());
    assert_eq!(
        sim.fault(target(&d), FaultKind::Drop),
        Err(SimError::NoSuchDevice)
    );
    // The same store logging in again is refused with 401.
    let backend = c.backend.clone();
    c.shutdown().await;
    let mut c2 = start_client(sim.transport_factory(), backend, "A").await;
    let lo = c2
        .wait_for(30, |e| match e {
            Event::LoggedOut(l) => Some((l.on_connect, l.reason)),
            _ => None,
        })
        .await;
    assert_eq!(lo, (true, ConnectFailureReason::LoggedOut));
    c2.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaced_gives_stream_replaced() {
    init_log();
    let sim = Simulator::new();
    let (mut c, d) = linked_client(&sim, "15551240005", "A").await;
    sim.fault(target(&d), FaultKind::Replaced).unwrap();
    c.wait_for(10, |e| matches!(e, Event::StreamReplaced(_)).then_some(()))
        .await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ban_gives_temporary_ban_also_at_next_login() {
    init_log();
    let sim = Simulator::new();
    let (mut c, d) = linked_client(&sim, "15551240006", "A").await;
    sim.fault(
        target(&d),
        FaultKind::Ban {
            code: 101,
            expire: Duration::from_secs(3600),
        },
    )
    .unwrap();
    let expire = c
        .wait_for(10, |e| match e {
            Event::TemporaryBan(b) => Some(b.expire),
            _ => None,
        })
        .await;
    assert!(expire.num_seconds() > 3500, "{expire:?}");
    let backend = c.backend.clone();
    c.shutdown().await;
    let mut c2 = start_client(sim.transport_factory(), backend.clone(), "A").await;
    c2.wait_for(30, |e| matches!(e, Event::TemporaryBan(_)).then_some(()))
        .await;
    c2.shutdown().await;
    sim.unban(&d.phone, d.device).unwrap();
    let mut c3 = start_client(sim.transport_factory(), backend, "A").await;
    c3.connected().await;
    c3.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outdated_gives_client_outdated() {
    init_log();
    let sim = Simulator::new();
    let (mut c, d) = linked_client(&sim, "15551240007", "A").await;
    sim.fault(target(&d), FaultKind::Outdated).unwrap();
    c.wait_for(10, |e| matches!(e, Event::ClientOutdated(_)).then_some(()))
        .await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_logout_removes_the_device_from_the_phone() {
    init_log();
    let sim = Simulator::new();
    let phone = "15551240008";
    let (mut c, d) = linked_client(&sim, phone, "A").await;
    let (mut c2, d2) = linked_client(&sim, phone, "A").await;
    assert_ne!(d.device, d2.device);
    assert_eq!(sim.phone_devices(phone).unwrap().len(), 2);
    c.client.logout().await;
    c.wait_for(10, |e| matches!(e, Event::LoggedOut(_)).then_some(()))
        .await;
    let left: Vec<u16> = sim
        .phone_devices(phone)
        .unwrap()
        .iter()
        .map(|x| x.device)
        .collect();
    assert_eq!(left, vec![d2.device]);
    c.shutdown().await;
    c2.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_of_an_unlinked_connection_by_qr_ref() {
    init_log();
    let sim = Simulator::new();
    let mut c = start_client(sim.transport_factory(), new_backend(), "A").await;
    let qr = c.qr().await;
    sim.fault(Target::PairingRef(qr.clone()), FaultKind::Drop)
        .unwrap();
    c.wait_for(10, |e| matches!(e, Event::Disconnected(_)).then_some(()))
        .await;
    // It reconnects and shows a fresh QR.
    let qr2 = c.qr().await;
    assert_ne!(qr, qr2);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_login_of_the_same_device_replaces_the_first() {
    init_log();
    let sim = Simulator::new();
    let (mut c, d) = linked_client(&sim, "15551240009", "A").await;
    // Another process with the same credentials logs in.
    let mut c2 = start_client(sim.transport_factory(), c.backend.clone(), "A").await;
    c2.connected().await;
    c.wait_for(10, |e| matches!(e, Event::StreamReplaced(_)).then_some(()))
        .await;
    assert!(sim.is_connected(&d.phone, d.device));
    c.shutdown().await;
    c2.shutdown().await;
}
