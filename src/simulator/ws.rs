//! `ws://127.0.0.1:PORT/ws/chat` for out-of-process clients.

use std::net::SocketAddr;
use std::sync::Arc;

use futures::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio_websockets::Message;
use whatsapp_rust::bytes::Bytes;

use super::conn;
use super::transport::{Input, Output};
use super::Inner;

/// A running websocket listener; dropping it does not stop it, call
/// [`WsServer::stop`].
pub struct WsServer {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl WsServer {
    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `ws://ADDR/ws/chat`
    pub fn url(&self) -> String {
        format!("ws://{}/ws/chat", self.addr)
    }

    /// Stops accepting connections.
    pub fn stop(&self) {
        self.task.abort();
    }
}

pub(crate) async fn serve(inner: Arc<Inner>, addr: SocketAddr) -> std::io::Result<WsServer> {
    if !addr.ip().is_loopback() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            "the simulator listens on loopback only",
        ));
    }
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        loop {
            let (tcp, peer) = match listener.accept().await {
                Ok(x) => x,
                Err(e) => {
                    log::warn!("simulator: accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            };
            if !peer.ip().is_loopback() {
                continue;
            }
            tokio::spawn(serve_one(inner.clone(), tcp));
        }
    });
    Ok(WsServer { addr, task })
}

async fn serve_one(inner: Arc<Inner>, tcp: tokio::net::TcpStream) {
    let _ = tcp.set_nodelay(true);
    let mut ws = match tokio_websockets::ServerBuilder::new().accept(tcp).await {
        Ok((_req, ws)) => ws,
        Err(e) => {
            log::debug!("simulator: websocket handshake failed: {e}");
            return;
        }
    };
    let (in_tx, in_rx) = mpsc::unbounded_channel();
    let (out_tx, mut out_rx) = mpsc::unbounded_channel();
    tokio::spawn(conn::run(inner, in_rx, out_tx));
    loop {
        tokio::select! {
            msg = ws.next() => match msg {
                Some(Ok(m)) if m.is_binary() || m.is_text() => {
                    let data = Bytes::copy_from_slice(&m.into_payload());
                    if in_tx.send(Input::Data(data)).is_err() {
                        break;
                    }
                }
                Some(Ok(m)) if m.is_close() => {
                    let _ = in_tx.send(Input::Closed);
                    break;
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => {
                    let _ = in_tx.send(Input::Closed);
                    break;
                }
            },
            out = out_rx.recv() => match out {
                Some(Output::Data(b)) => {
                    if ws.send(Message::binary(b)).await.is_err() {
                        let _ = in_tx.send(Input::Closed);
                        break;
                    }
                }
                // A real server recycles a stream by closing the socket without
                // a close frame; a drop looks the same from the client.
                Some(Output::Close(_)) | None => break,
            },
        }
    }
}
