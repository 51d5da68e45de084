//! QR linking end to end against the simulator, and an IK re-login.

use crate::simulator_support::*;
use wasup::simulator::{SimError, Simulator};
use whatsapp_rust::types::events::Event;

const PHONE: &str = "15551230001";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qr_link_then_connected_then_ik_relogin() {
    init_log();
    let sim = Simulator::new();
    let backend = new_backend();
    let mut c = start_client(sim.transport_factory(), backend.clone(), "Alice").await;
    let qr = c.qr().await;

    // A made-up ref is refused.
    let bogus = format!("2@nope{}", &qr[qr.find(',').unwrap()..]);
    assert_eq!(
        sim.scan(&bogus, PHONE, "Alice").await,
        Err(SimError::QrExpiredOrUnknown)
    );

    let linked = sim.scan(&qr, PHONE, "Alice").await.expect("scan links");
    assert_eq!(linked.phone, PHONE);
    let id = c
        .wait_for(10, |e| match e {
            Event::PairSuccess(p) => Some(p.id.clone()),
            _ => None,
        })
        .await;
    assert_eq!(id.user, PHONE);
    assert_eq!(id.device, linked.device);
    c.connected().await;
    // The phone shared an app-state key before Connected: the client did
    // not have to wait out its 10 s grace for one.
    assert!(
        backend.get_latest_sync_key_id().await.unwrap().is_some(),
        "Connected came without the shared app-state key"
    );
    assert_eq!(sim.phone_devices(PHONE).unwrap(), vec![linked.clone()]);
    assert!(sim.is_connected(PHONE, linked.device));
    c.shutdown().await;

    // "Process restart": a new client on the same store logs in (IK) without a QR.
    let mut c2 = start_client(sim.transport_factory(), backend, "Alice").await;
    c2.wait_for(30, |e| match e {
        Event::Connected(_) => Some(()),
        Event::PairingQrCode(_) => panic!("a linked client must not get a QR"),
        _ => None,
    })
    .await;
    c2.shutdown().await;
}

#[tokio::test]
async fn scan_errors_are_clear() {
    let sim = Simulator::new();
    assert_eq!(
        sim.scan("garbage", PHONE, "x").await,
        Err(SimError::QrMalformed(
            "expected ref,noise,identity,secret".into()
        ))
    );
    assert_eq!(sim.phone_devices(PHONE), Err(SimError::NoSuchPhone));
    assert_eq!(
        sim.scan("a,b,c,d", "12", "x").await,
        Err(SimError::InvalidPhone)
    );
}
