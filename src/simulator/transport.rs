//! The in-process transport: a client built with this factory talks to the
//! simulator through channels, no sockets.

use std::sync::Arc;

use tokio::sync::mpsc;
use whatsapp_rust::async_channel;
use whatsapp_rust::bytes::Bytes;
use whatsapp_rust::transport::{DisconnectReason, Transport, TransportEvent, TransportFactory};

use super::conn;
use super::Inner;

/// Client bytes into a connection task.
pub(crate) enum Input {
    Data(Bytes),
    Closed,
}

/// Server output of a connection task.
pub(crate) enum Output {
    Data(Vec<u8>),
    Close(DisconnectReason),
}

/// `TransportFactory` for `BotBuilder::with_transport_factory`; every
/// `create_transport` is one new connection to the simulator.
#[derive(Clone)]
pub struct SimTransportFactory {
    inner: Arc<Inner>,
}

impl SimTransportFactory {
    pub(crate) fn new(inner: Arc<Inner>) -> Self {
        SimTransportFactory { inner }
    }
}

struct SimTransport {
    input: mpsc::UnboundedSender<Input>,
}

#[whatsapp_rust::async_trait]
impl Transport for SimTransport {
    async fn send(&self, data: Bytes) -> Result<(), whatsapp_rust::anyhow::Error> {
        self.input
            .send(Input::Data(data))
            .map_err(|_| whatsapp_rust::anyhow::anyhow!("simulator connection closed"))
    }

    async fn disconnect(&self) {
        let _ = self.input.send(Input::Closed);
    }
}

#[whatsapp_rust::async_trait]
impl TransportFactory for SimTransportFactory {
    async fn create_transport(
        &self,
    ) -> Result<
        (Arc<dyn Transport>, async_channel::Receiver<TransportEvent>),
        whatsapp_rust::anyhow::Error,
    > {
        let (ev_tx, ev_rx) = async_channel::unbounded();
        let (in_tx, in_rx) = mpsc::unbounded_channel();
        let (out_tx, mut out_rx) = mpsc::unbounded_channel();
        let _ = ev_tx.send(TransportEvent::Connected).await;
        tokio::spawn(conn::run(self.inner.clone(), in_rx, out_tx));
        tokio::spawn(async move {
            while let Some(o) = out_rx.recv().await {
                match o {
                    Output::Data(b) => {
                        if ev_tx
                            .send(TransportEvent::DataReceived(Bytes::from(b)))
                            .await
                            .is_err()
                        {
                            break;
                        }
                    }
                    Output::Close(reason) => {
                        let _ = ev_tx.send(TransportEvent::Disconnected(reason)).await;
                        break;
                    }
                }
            }
        });
        Ok((Arc::new(SimTransport { input: in_tx }), ev_rx))
    }
}

/// Wraps an `Arc<dyn TransportFactory>` so it can be handed to
/// `BotBuilder::with_transport_factory`, which takes a concrete factory.
#[derive(Clone)]
pub struct DynTransportFactory(pub Arc<dyn TransportFactory>);

#[whatsapp_rust::async_trait]
impl TransportFactory for DynTransportFactory {
    async fn create_transport(
        &self,
    ) -> Result<
        (Arc<dyn Transport>, async_channel::Receiver<TransportEvent>),
        whatsapp_rust::anyhow::Error,
    > {
        self.0.create_transport().await
    }
}
