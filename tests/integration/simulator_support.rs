//! Helpers shared by the simulator tests: a real whatsapp-rust client wired
//! to the simulator, and waiting for its events.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use whatsapp_rust::bot::{Bot, BotHandle};
use whatsapp_rust::store::traits::Backend;
use whatsapp_rust::types::events::{Event, EventHandler};
use whatsapp_rust::Client;

pub const VERSION: (u32, u32, u32) = (2, 3000, 1_027_000_000);

struct Fwd(mpsc::UnboundedSender<Arc<Event>>);

impl EventHandler for Fwd {
    fn handle_event(&self, event: Arc<Event>) {
        let _ = self.0.send(event);
    }
}

pub struct TestClient {
    pub events: mpsc::UnboundedReceiver<Arc<Event>>,
    pub handle: Option<BotHandle>,
    pub client: Arc<Client>,
    pub backend: Arc<dyn Backend>,
}

pub fn new_backend() -> Arc<dyn Backend> {
    Arc::new(whatsapp_rust::wacore::store::InMemoryBackend::new())
}

pub fn init_log() {
    let _ = env_logger::builder().is_test(true).try_init();
}

pub async fn start_client<F>(factory: F, backend: Arc<dyn Backend>, push_name: &str) -> TestClient
where
    F: whatsapp_rust::transport::TransportFactory + 'static,
{
    let (tx, rx) = mpsc::unbounded_channel();
    let bot = Bot::builder()
        .with_backend_arc(backend.clone())
        .with_transport_factory(factory)
        .with_version(VERSION)
        .with_push_name(push_name)
        .with_wanted_pre_key_count(10)
        .with_event_handler(Fwd(tx))
        .build()
        .await
        .expect("bot builds");
    let client = bot.client();
    let handle = bot.spawn();
    TestClient {
        events: rx,
        handle: Some(handle),
        client,
        backend,
    }
}

impl TestClient {
    /// Waits until `f` picks an event; panics after `secs` listing what came.
    pub async fn wait_for<T>(&mut self, secs: u64, mut f: impl FnMut(&Event) -> Option<T>) -> T {
        let mut seen = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(e)) => {
                    if let Some(t) = f(&e) {
                        return t;
                    }
                    seen.push(format!("{:?}", e).chars().take(160).collect::<String>());
                }
                Ok(None) => panic!("event channel closed; seen: {seen:#?}"),
                Err(_) => panic!("timed out after {secs}s; seen: {seen:#?}"),
            }
        }
    }

    pub async fn qr(&mut self) -> String {
        self.wait_for(30, |e| match e {
            Event::PairingQrCode(q) => Some(q.code.clone()),
            _ => None,
        })
        .await
    }

    pub async fn connected(&mut self) {
        self.wait_for(30, |e| matches!(e, Event::Connected(_)).then_some(()))
            .await
    }

    pub async fn shutdown(&mut self) {
        if let Some(h) = self.handle.take() {
            h.shutdown().await;
        }
    }
}

/// Starts a client, links it to `phone` by QR and waits for `Connected`.
pub async fn linked_client(
    sim: &wasup::simulator::Simulator,
    phone: &str,
    name: &str,
) -> (TestClient, wasup::simulator::LinkedDevice) {
    let mut c = start_client(sim.transport_factory(), new_backend(), name).await;
    let qr = c.qr().await;
    let dev = sim.scan(&qr, phone, name).await.expect("scan links");
    c.connected().await;
    (c, dev)
}
