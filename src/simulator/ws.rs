//! `ws://127.0.0.1:PORT/ws/chat` for out-of-process clients.

use std::net::SocketAddr;
use std::sync::Arc;

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

pub(crate) async fn serve(_inner: Arc<Inner>, addr: SocketAddr) -> std::io::Result<WsServer> {
    if !addr.ip().is_loopback() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            "the simulator listens on loopback only",
        ));
    }
    Err(std::io::Error::other("not implemented yet"))
}
