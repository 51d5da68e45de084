//! The `wasup-simulator` binary: chat socket plus JSON control API.

use crate::sim_process::SimProcess;
use crate::simulator_support::*;
use serde_json::{json, Value};
use whatsapp_rust::transport::TokioWebSocketTransportFactory;
use whatsapp_rust::types::events::Event;

async fn call(method: &'static str, url: String, body: Option<Value>) -> (u16, Value) {
    tokio::task::spawn_blocking(move || {
        let c = reqwest::blocking::Client::new();
        let rb = match method {
            "GET" => c.get(&url),
            _ => c.post(&url).json(&body.unwrap_or(json!({}))),
        };
        let r = rb.send().expect("control API answers");
        let status = r.status().as_u16();
        (status, r.json().unwrap_or(Value::Null))
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_links_a_client_and_injects_faults() {
    init_log();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    // Blocking (it polls the control API): off the test's runtime.
    let sim = tokio::task::spawn_blocking(move || SimProcess::start(&path))
        .await
        .unwrap();
    let base = sim.control.clone();

    let factory = TokioWebSocketTransportFactory::new().with_url(sim.ws.clone());
    let mut c = start_client(factory, new_backend(), "Fay").await;
    let qr = c.qr().await;
    let (st, dev) = call(
        "POST",
        format!("{base}/scan"),
        Some(json!({"qr": qr, "phone": "15551270001", "push_name": "Fay"})),
    )
    .await;
    assert_eq!(st, 200, "{dev}");
    c.connected().await;
    let (st, list) = call("GET", format!("{base}/phones/15551270001/devices"), None).await;
    assert_eq!(st, 200);
    assert_eq!(list[0]["device"], dev["device"]);

    let (st, _) = call(
        "POST",
        format!("{base}/fault"),
        Some(json!({"phone": "15551270001", "device": dev["device"], "kind": "drop"})),
    )
    .await;
    assert_eq!(st, 200);
    c.wait_for(10, |e| matches!(e, Event::Disconnected(_)).then_some(()))
        .await;
    c.connected().await;

    let (st, body) = call(
        "POST",
        format!("{base}/send-text"),
        Some(json!({"from": "15551279999", "to": "15551270001", "text": "via control API"})),
    )
    .await;
    assert_eq!(st, 200, "{body}");
    c.wait_for(20, |e| match e {
        Event::Messages(b) => b
            .messages
            .iter()
            .any(|m| m.message.conversation.as_deref() == Some("via control API"))
            .then_some(()),
        _ => None,
    })
    .await;
    let (st, sent) = call("GET", format!("{base}/sent"), None).await;
    assert_eq!(st, 200);
    assert!(sent.is_array());

    let (st, body) = call(
        "POST",
        format!("{base}/scan"),
        Some(json!({"qr": "2@x,AAAA,AAAA,AAAA", "phone": "15551270001"})),
    )
    .await;
    assert_eq!(st, 400, "{body}");
    let (st, body) = call("GET", format!("{base}/phones/999999/devices"), None).await;
    assert_eq!((st, body["error"].as_str()), (404, Some("no such phone")));
    c.shutdown().await;
}
