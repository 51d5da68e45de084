//! One client connection: Noise responder (XX and IK), framing, and the
//! server's answers to every stanza the client sends.
//!
//! The connection's loop and stanza dispatch live here; the Noise handshake
//! and framing in `noise`, login and registration in `login`, iq answers in
//! `iq`, QR and code pairing in `pairing`, inbound messages in `delivery`.

mod delivery;
mod iq;
mod login;
mod noise;
mod outbound;
mod pairing;

use std::sync::Arc;

use tokio::sync::mpsc;
use wacore::framing::FrameDecoder;
use wacore::handshake::{HandshakeError, NoiseCipher, NoiseError};
use wacore_binary::builder::NodeBuilder;
use wacore_binary::marshal::unmarshal_ref;
use wacore_binary::{BinaryError, Node, NodeContent};
use waproto::buffa::Message as _;
use waproto::whatsapp as wa;
use whatsapp_rust::transport::DisconnectReason;

use super::phone::{self, new_keypair, now_secs, pub32, random_bytes, UploadedBundle};
use super::state::LinkedDeviceRec;
use super::transport::{Input, Output};
use super::{
    ban_failure, remove_device, CodeReg, CodeStage, ConnCmd, ConnEntry, ConnKind, DevKey, Inner,
    LinkedDevice, PendingLink, SimError,
};

const SERVER: &str = "s.whatsapp.net";

fn attr(n: &Node, k: &str) -> Option<String> {
    n.attrs.get(k).map(|v| v.as_str().into_owned())
}

fn content_bytes(n: &Node) -> Option<Vec<u8>> {
    match &n.content {
        Some(NodeContent::Bytes(b)) => Some(b.clone()),
        Some(NodeContent::String(s)) => Some(s.as_bytes().to_vec()),
        _ => None,
    }
}

fn child_bytes(n: &Node, tag: &str) -> Option<Vec<u8>> {
    n.get_optional_child(tag).and_then(content_bytes)
}

fn be_uint(b: &[u8]) -> u32 {
    b.iter().fold(0u32, |acc, x| (acc << 8) | *x as u32)
}

fn result(id: &str, children: Vec<Node>) -> Node {
    let b = NodeBuilder::new("iq")
        .attr("type", "result")
        .attr("id", id.to_string())
        .attr("from", SERVER);
    if children.is_empty() {
        b.build()
    } else {
        b.children(children).build()
    }
}

/// Why a connection ended, for the debug log.
#[derive(Debug, thiserror::Error)]
enum ConnError {
    #[error("client closed")]
    ClientClosed,
    #[error("bad connection header")]
    BadHeader,
    /// A protobuf the client sent does not decode.
    #[error("bad {what}: {source}")]
    Undecodable {
        what: &'static str,
        source: waproto::buffa::DecodeError,
    },
    /// A part the handshake needs is absent ("no client hello").
    #[error("no {0}")]
    Missing(&'static str),
    /// A key that is not 32 bytes.
    #[error("bad {0}")]
    BadKey(&'static str),
    #[error("{0}")]
    Noise(#[from] HandshakeError),
    #[error("decrypt: {0}")]
    Decrypt(NoiseError),
    #[error("compressed frames are not supported")]
    Compressed,
    #[error("unmarshal: {0}")]
    Unmarshal(BinaryError),
    /// A registration payload without a part it needs.
    #[error("registration {0}")]
    Registration(&'static str),
}

struct Conn {
    inner: Arc<Inner>,
    id: u64,
    input: mpsc::UnboundedReceiver<Input>,
    out: mpsc::UnboundedSender<Output>,
    raw: Vec<u8>,
    dec: FrameDecoder,
    write: Option<NoiseCipher>,
    read: Option<NoiseCipher>,
    wctr: u32,
    rctr: u32,
    registered: bool,
    login: Option<DevKey>,
    pending_link: Option<PendingLink>,
    code_stage: Option<CodeStage>,
    closed: bool,
}

/// Runs one connection until either side closes it.
pub(crate) use outbound::receipt;

pub(crate) async fn run(
    inner: Arc<Inner>,
    input: mpsc::UnboundedReceiver<Input>,
    out: mpsc::UnboundedSender<Output>,
) {
    let id = inner.next_id();
    let mut c = Conn {
        inner,
        id,
        input,
        out,
        raw: Vec::new(),
        dec: FrameDecoder::new(),
        write: None,
        read: None,
        wctr: 0,
        rctr: 0,
        registered: false,
        login: None,
        pending_link: None,
        code_stage: None,
        closed: false,
    };
    if let Err(e) = c.serve().await {
        log::debug!("simulator: connection {id} ended: {e}");
    }
    c.inner.conns.lock().remove(&id);
    if let Some(link) = c.pending_link.take() {
        let _ = link.reply.send(Err(SimError::ConnectionGone));
    }
}

impl Conn {
    fn close(&mut self, reason: DisconnectReason) {
        let _ = self.out.send(Output::Close(reason));
        self.closed = true;
    }

    async fn serve(&mut self) -> Result<(), ConnError> {
        let (payload, client_static) = self.handshake().await?;
        let payload = wa::ClientPayload::decode_from_slice(&payload).map_err(|source| {
            ConnError::Undecodable {
                what: "client payload",
                source,
            }
        })?;
        let (cmd_tx, mut cmd_rx) = mpsc::unbounded_channel();
        match payload.username {
            Some(user) => {
                if !self.login(
                    user.to_string(),
                    payload.device.unwrap_or(0) as u16,
                    &client_static,
                    cmd_tx,
                ) {
                    return Ok(());
                }
            }
            None => self.register(&payload, client_static, cmd_tx)?,
        }
        loop {
            if self.closed {
                return Ok(());
            }
            tokio::select! {
                inp = self.input.recv() => match inp {
                    Some(Input::Data(b)) => {
                        self.dec.feed(&b);
                        while let Some(f) = self.dec.decode_frame() {
                            let mut buf = f.to_vec();
                            let Some(r) = &self.read else { break };
                            r.decrypt_in_place_with_counter(self.rctr, &mut buf)
                                .map_err(ConnError::Decrypt)?;
                            self.rctr = self.rctr.wrapping_add(1);
                            if buf.is_empty() {
                                continue;
                            }
                            if buf[0] & 0x02 != 0 {
                                return Err(ConnError::Compressed);
                            }
                            let node = unmarshal_ref(&buf[1..])
                                .map_err(ConnError::Unmarshal)?
                                .to_owned();
                            self.handle(node).await;
                            if self.closed {
                                return Ok(());
                            }
                        }
                    }
                    Some(Input::Closed) | None => return Ok(()),
                },
                cmd = cmd_rx.recv() => match cmd {
                    Some(c) => self.command(c).await,
                    None => return Ok(()),
                },
            }
        }
    }

    async fn command(&mut self, cmd: ConnCmd) {
        match cmd {
            ConnCmd::PairSuccess { node, link } => {
                self.send(&node);
                if let Some(old) = self.pending_link.replace(link) {
                    let _ = old
                        .reply
                        .send(Err(SimError::LinkRejected("superseded".into())));
                }
            }
            ConnCmd::PrimaryHello { node, stage } => {
                self.send(&node);
                if let Some(old) = self.code_stage.replace(stage) {
                    let _ = old
                        .reply
                        .send(Err(SimError::WrongCode("superseded".into())));
                }
            }
            ConnCmd::Deliver(m) => self.deliver(m).await,
            ConnCmd::Fault { nodes, close } => {
                for n in &nodes {
                    self.send(n);
                }
                if let Some(r) = close {
                    self.close(r);
                }
            }
        }
    }

    async fn handle(&mut self, node: Node) {
        match node.tag.as_ref() {
            "iq" => self.handle_iq(node).await,
            "message" => {
                if let (Some(key), Some(id), Some(to)) =
                    (self.login.clone(), attr(&node, "id"), attr(&node, "to"))
                {
                    let enc_count = node
                        .get_optional_child("participants")
                        .map(|p| p.get_children_by_tag("to").count())
                        .unwrap_or(0)
                        + node.get_children_by_tag("enc").count();
                    let mut sent = self.inner.sent.lock();
                    if sent.len() >= super::SENT_LOG_CAP {
                        sent.drain(..super::SENT_LOG_CAP / 2);
                    }
                    sent.push(super::SentMessage {
                        from_phone: key.0,
                        from_device: key.1,
                        to,
                        id,
                        enc_count,
                    });
                }
                let (refused, delivered) = self.take_outbound(&node).await;
                if let Some(id) = attr(&node, "id") {
                    let mut b = NodeBuilder::new("ack")
                        .attr("class", "message")
                        .attr("id", id)
                        .attr("t", now_secs().to_string());
                    if let Some(to) = attr(&node, "to") {
                        b = b.attr("from", to);
                    }
                    if refused {
                        b = b.attr("error", "404");
                    }
                    self.send(&b.build());
                }
                if let Some(r) = delivered {
                    self.send(&r);
                }
            }
            // A companion declines a call a phone placed (`Simulator::call`).
            "call" => {
                let (Some(key), Some(reject)) =
                    (self.login.clone(), node.get_optional_child("reject"))
                else {
                    return;
                };
                if let Some(call_id) = attr(reject, "call-id") {
                    if let Some(c) = self.inner.inbox.lock().calls.get_mut(&call_id) {
                        c.rejected_by_device.get_or_insert(key.1);
                    }
                }
            }
            _ => {}
        }
    }
}
