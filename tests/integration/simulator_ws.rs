//! The simulator over ws:// on loopback, with the client's own websocket
//! transport.

use crate::simulator_support::*;
use wasup::simulator::{FaultKind, Simulator, Target};
use whatsapp_rust::transport::TokioWebSocketTransportFactory;
use whatsapp_rust::types::events::Event;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qr_link_over_websocket_then_drop_and_reconnect() {
    init_log();
    let sim = Simulator::new();
    let server = sim
        .serve_ws("127.0.0.1:0".parse().unwrap())
        .await
        .expect("listens");
    let factory = TokioWebSocketTransportFactory::new().with_url(server.url());
    let mut c = start_client(factory, new_backend(), "Eve").await;
    let qr = c.qr().await;
    let d = sim.scan(&qr, "15551260001", "Eve").await.expect("linked");
    c.connected().await;
    sim.fault(Target::device(d.phone.clone(), d.device), FaultKind::Drop)
        .unwrap();
    c.wait_for(10, |e| matches!(e, Event::Disconnected(_)).then_some(()))
        .await;
    c.connected().await;
    c.shutdown().await;
    server.stop();
}

#[tokio::test]
async fn refuses_non_loopback() {
    let sim = Simulator::new();
    assert!(sim.serve_ws("0.0.0.0:0".parse().unwrap()).await.is_err());
}
