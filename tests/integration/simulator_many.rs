//! Many clients link and log in concurrently on one simulator.

use crate::simulator_support::*;
use wasup::simulator::Simulator;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_clients_link_concurrently() {
    init_log();
    let sim = Simulator::new();
    let mut tasks = Vec::new();
    for i in 0..20u32 {
        let sim = sim.clone();
        tasks.push(tokio::spawn(async move {
            // Two devices on each of ten phones.
            let phone = format!("1555129{:04}", i / 2);
            let (mut c, d) = linked_client(&sim, &phone, "Many").await;
            (c.shutdown().await, phone, d.device)
        }));
    }
    let mut linked = Vec::new();
    for t in tasks {
        let ((), phone, dev) = t.await.unwrap();
        linked.push((phone, dev));
    }
    assert_eq!(sim.phones().len(), 10);
    for phone in sim.phones() {
        let devs = sim.phone_devices(&phone).unwrap();
        assert_eq!(devs.len(), 2, "{phone}: {devs:?}");
        assert_ne!(devs[0].device, devs[1].device);
    }
}
