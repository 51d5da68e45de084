//! Phone-number linking (pairing code) end to end.

use std::time::Duration;

use crate::simulator_support::*;
use wasup::simulator::{SimError, Simulator};
use whatsapp_rust::pair_code::PairCodeOptions;
use whatsapp_rust::types::events::Event;

const PHONE: &str = "15551230002";

/// A fresh client that asked to link PHONE by code; the code it was given.
async fn ask_for_code(sim: &Simulator, push_name: &str) -> (TestClient, String) {
    let c = start_client(sim.transport_factory(), new_backend(), push_name).await;
    c.client
        .wait_for_socket(Duration::from_secs(30))
        .await
        .expect("socket up");
    let code = c
        .client
        .pair_with_code(PairCodeOptions {
            phone_number: PHONE.to_string(),
            ..Default::default()
        })
        .await
        .expect("pair_with_code");
    (c, code)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pairing_code_links_and_connects() {
    init_log();
    let sim = Simulator::new();
    assert!(matches!(
        sim.enter_code(PHONE, "ABCD1234").await,
        Err(SimError::NoPendingCode(_))
    ));
    let (mut c, code) = ask_for_code(&sim, "Bob").await;
    let shown = c
        .wait_for(30, |e| match e {
            Event::PairingCode(p) => Some(p.code.clone()),
            _ => None,
        })
        .await;
    assert_eq!(shown, code);

    let dev = sim
        .enter_code_as(PHONE, &code, "Bob")
        .await
        .expect("linked");
    let id = c
        .wait_for(30, |e| match e {
            Event::PairSuccess(p) => Some(p.id.clone()),
            _ => None,
        })
        .await;
    assert_eq!((id.user.as_str(), id.device), (PHONE, dev.device));
    c.connected().await;
    assert_eq!(sim.phone_devices(PHONE).unwrap().len(), 1);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_pairing_code_is_rejected() {
    init_log();
    let sim = Simulator::new();
    let (mut c, code) = ask_for_code(&sim, "Carol").await;
    let wrong = if code.starts_with('A') {
        "BBBBBBBB"
    } else {
        "AAAAAAAA"
    };
    let r = sim.enter_code(PHONE, wrong).await;
    assert!(
        matches!(r, Err(SimError::WrongCode(_)) | Err(SimError::LinkTimeout)),
        "{r:?}"
    );
    assert!(sim
        .phone_devices(PHONE)
        .map(|d| d.is_empty())
        .unwrap_or(true));
    c.shutdown().await;
}
