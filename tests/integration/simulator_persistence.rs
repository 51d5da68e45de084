//! A simulator reopened from its data dir still knows its linked devices.

use crate::simulator_support::*;
use wasup::simulator::Simulator;
use whatsapp_rust::types::events::Event;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_simulator_recognises_linked_devices() {
    init_log();
    let dir = tempfile::tempdir().unwrap();
    let phone = "15551250001";
    let backend;
    let dev;
    {
        let sim = Simulator::open(dir.path()).unwrap();
        let (mut c, d) = linked_client(&sim, phone, "Dora").await;
        backend = c.backend.clone();
        dev = d;
        c.shutdown().await;
    }
    assert!(dir.path().join(wasup::simulator::STATE_FILE).exists());
    // One file per phone: a change to one phone rewrites that phone only.
    let account = dir.path().join("accounts").join(format!("{phone}.json"));
    assert!(account.exists(), "{}", account.display());
    assert!(
        !std::fs::read_to_string(dir.path().join(wasup::simulator::STATE_FILE))
            .unwrap()
            .contains(phone)
    );

    let sim = Simulator::open(dir.path()).unwrap();
    assert_eq!(sim.phone_devices(phone).unwrap(), vec![dev.clone()]);
    let mut c = start_client(sim.transport_factory(), backend, "Dora").await;
    c.wait_for(30, |e| match e {
        Event::Connected(_) => Some(()),
        Event::PairingQrCode(_) => panic!("a linked client must not get a QR"),
        _ => None,
    })
    .await;
    assert!(sim.is_connected(phone, dev.device));

    // The restarted simulator lost the uploaded prekeys; the digest check
    // makes the client upload them again, so messages still get through.
    sim.send_text("15551259999", phone, "after restart")
        .unwrap();
    c.wait_for(30, |e| match e {
        Event::Messages(b) => b
            .messages
            .iter()
            .any(|m| m.message.conversation.as_deref() == Some("after restart"))
            .then_some(()),
        _ => None,
    })
    .await;
    c.shutdown().await;
    drop(sim);

    // A state kept the old way (every account inside simulator.json) still
    // opens, and is moved into the per-phone layout.
    let state_file = dir.path().join(wasup::simulator::STATE_FILE);
    let mut legacy: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&state_file).unwrap()).unwrap();
    let rec: serde_json::Value = serde_json::from_slice(&std::fs::read(&account).unwrap()).unwrap();
    legacy["accounts"] = serde_json::json!({ phone: rec });
    std::fs::write(&state_file, legacy.to_string()).unwrap();
    std::fs::remove_dir_all(dir.path().join("accounts")).unwrap();
    let sim = Simulator::open(dir.path()).unwrap();
    assert_eq!(sim.phone_devices(phone).unwrap(), vec![dev]);
    assert!(account.exists(), "moved into {}", account.display());
    assert!(!std::fs::read_to_string(&state_file)
        .unwrap()
        .contains(phone));
}

#[test]
fn a_corrupt_state_file_is_an_error_not_a_reset() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(wasup::simulator::STATE_FILE), b"{nope").unwrap();
    assert!(matches!(
        Simulator::open(dir.path()),
        Err(wasup::simulator::SimError::Storage(_))
    ));
}
