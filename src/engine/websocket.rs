//! The websocket under a session's connection: tokio-websockets, used as
//! whatsapp-rust's own transport uses it (`from_websocket`), with a smaller
//! queue between the socket and the client.
//!
//! whatsapp-rust's transport hands received frames to the client through a
//! bounded queue of 64 slots, and a bounded queue allocates its slots up
//! front: about 3 KiB per connection, idle or not (10,000 sessions: 30 MiB).
//! The client takes frames off the queue as they arrive, so a few slots are
//! enough; while they are full the pump stops reading and the rest waits in
//! the socket (TCP's own flow control).

use std::sync::Arc;

use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{Mutex, Notify};
use tokio_websockets::{ClientBuilder, CloseCode, Message, WebSocketStream};
use whatsapp_rust::bytes::Bytes;
use whatsapp_rust::transport::{
    Connector, DisconnectReason, Transport, TransportEvent, TransportFactory,
};
use whatsapp_rust::wacore::net::WHATSAPP_WEB_ORIGIN;

/// Received frames waiting for the client (see the module). Measured with
/// jemalloc: the queue of 64 slots takes 3,839 bytes, this one 957.
pub const READ_QUEUE: usize = 4;

/// A websocket client for `uri` with the Origin header WhatsApp Web sends
/// (also when the target is a relay, a proxy's tunnel or the simulator).
pub fn client_builder<'a>(uri: http::Uri) -> Result<ClientBuilder<'a>, tokio_websockets::Error> {
    ClientBuilder::from_uri(uri).add_header(
        http::header::ORIGIN,
        http::HeaderValue::from_static(WHATSAPP_WEB_ORIGIN),
    )
}

/// Dials `url` (TLS through `connector` for `wss://`) for every connection.
pub struct WebSocketTransportFactory {
    url: String,
    connector: Connector,
}

impl WebSocketTransportFactory {
    pub fn new(url: impl Into<String>, connector: Connector) -> Self {
        WebSocketTransportFactory {
            url: url.into(),
            connector,
        }
    }
}

#[whatsapp_rust::async_trait]
impl TransportFactory for WebSocketTransportFactory {
    async fn create_transport(
        &self,
    ) -> Result<(Arc<dyn Transport>, async_channel::Receiver<TransportEvent>), anyhow::Error> {
        let uri: http::Uri = self
            .url
            .parse()
            .map_err(|e| anyhow::anyhow!("transport URL {}: {e}", self.url))?;
        let (ws, _) = client_builder(uri)?
            .connector(&self.connector)
            .connect()
            .await
            .map_err(|e| anyhow::anyhow!("WebSocket connect failed: {e}"))?;
        Ok(into_transport(ws))
    }
}

/// An upgraded websocket as a whatsapp-rust transport and its events.
pub fn into_transport<S>(
    ws: WebSocketStream<S>,
) -> (Arc<dyn Transport>, async_channel::Receiver<TransportEvent>)
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (sink, stream) = ws.split();
    let (events, received) = async_channel::bounded(READ_QUEUE);
    // A `Notify` (48 bytes) where whatsapp-rust uses a `watch` (384): its
    // one permit is kept until the pump takes it.
    let stop = Arc::new(Notify::new());
    // Queued before the pump starts, so it comes before any data.
    let _ = events.try_send(TransportEvent::Connected);
    tokio::spawn(pump(stream, events, stop.clone()));
    let transport = WebSocketTransport {
        sink: Mutex::new(Some(sink)),
        stop,
    };
    (Arc::new(transport), received)
}

struct WebSocketTransport<S> {
    /// `None` once disconnected.
    sink: Mutex<Option<SplitSink<WebSocketStream<S>, Message>>>,
    stop: Arc<Notify>,
}

#[whatsapp_rust::async_trait]
impl<S> Transport for WebSocketTransport<S>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    async fn send(&self, data: Bytes) -> Result<(), anyhow::Error> {
        let mut sink = self.sink.lock().await;
        let sink = sink
            .as_mut()
            .ok_or_else(|| anyhow::anyhow!("Socket is closed"))?;
        sink.send(Message::binary(data))
            .await
            .map_err(|e| anyhow::anyhow!("WebSocket send error: {e}"))
    }

    async fn disconnect(&self) {
        self.stop.notify_one();
        if let Some(mut sink) = self.sink.lock().await.take() {
            let _ = sink
                .send(Message::close(Some(CloseCode::NORMAL_CLOSURE), ""))
                .await;
        }
    }
}

/// Received binary frames to the client until the socket ends or the
/// transport is disconnected; then one `Disconnected` with the reason.
async fn pump<S>(
    mut stream: SplitStream<WebSocketStream<S>>,
    events: async_channel::Sender<TransportEvent>,
    stop: Arc<Notify>,
) where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    // Our own disconnect: the client knows why.
    let mut reason = DisconnectReason::Unknown;
    loop {
        let next = tokio::select! {
            biased;
            _ = stop.notified() => break,
            next = stream.next() => next,
        };
        let frame = match next {
            Some(Ok(msg)) if msg.is_binary() => msg.into_payload(),
            Some(Ok(msg)) if msg.is_close() => {
                let (code, text) = msg.as_close().unzip();
                reason = DisconnectReason::ServerClose {
                    code: code.map(u16::from),
                    reason: text.unwrap_or_default().to_owned(),
                };
                break;
            }
            // Ping, pong and text: tokio-websockets answers pings itself.
            Some(Ok(_)) => continue,
            Some(Err(e)) => {
                reason = DisconnectReason::ReadError(e.to_string());
                break;
            }
            None => {
                reason = DisconnectReason::StreamEnded;
                break;
            }
        };
        let delivered = tokio::select! {
            biased;
            _ = stop.notified() => break,
            sent = events.send(TransportEvent::DataReceived(Bytes::from(frame))) => sent,
        };
        if delivered.is_err() {
            // The client is gone.
            break;
        }
    }
    let _ = events.send(TransportEvent::Disconnected(reason)).await;
}

// The test server needs tokio-websockets' `server`, a simulator feature.
#[cfg(all(test, feature = "simulator"))]
mod tests {
    use super::*;

    /// A websocket server on a local port that sends `frames` binary frames
    /// to its one client and then closes with code 4000.
    async fn server(frames: usize) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}/ws", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let (_, mut ws) = tokio_websockets::ServerBuilder::new()
                .accept(tcp)
                .await
                .unwrap();
            for i in 0..frames {
                ws.send(Message::binary(vec![i as u8; 3])).await.unwrap();
            }
            ws.send(Message::close(
                Some(CloseCode::try_from(4000).unwrap()),
                "bye",
            ))
            .await
            .unwrap();
            while ws.next().await.is_some() {}
        });
        url
    }

    /// More frames than the queue holds all arrive, in order, then the
    /// server's close with its code.
    #[tokio::test]
    async fn every_frame_arrives_in_order_then_the_close() {
        let frames = READ_QUEUE * 5;
        let url = server(frames).await;
        let factory = WebSocketTransportFactory::new(url, Connector::Plain);
        let (_transport, events) = factory.create_transport().await.unwrap();
        assert!(matches!(events.recv().await, Ok(TransportEvent::Connected)));
        for i in 0..frames {
            match events.recv().await {
                Ok(TransportEvent::DataReceived(data)) => assert_eq!(&data[..], &[i as u8; 3]),
                _ => panic!("frame {i} missing"),
            }
        }
        match events.recv().await {
            Ok(TransportEvent::Disconnected(DisconnectReason::ServerClose { code, reason })) => {
                assert_eq!(code, Some(4000));
                assert_eq!(reason, "bye");
            }
            _ => panic!("no close"),
        }
    }

    /// After `disconnect` a send fails and the events end with one
    /// `Disconnected`.
    #[tokio::test]
    async fn a_disconnected_transport_refuses_sends() {
        let url = server(0).await;
        let factory = WebSocketTransportFactory::new(url, Connector::Plain);
        let (transport, events) = factory.create_transport().await.unwrap();
        transport.disconnect().await;
        assert!(transport.send(Bytes::from_static(b"x")).await.is_err());
        let mut disconnects = 0;
        while let Ok(e) = events.recv().await {
            if matches!(e, TransportEvent::Disconnected(_)) {
                disconnects += 1;
            }
        }
        assert_eq!(disconnects, 1);
    }
}
