//! One client connection: Noise responder (XX and IK), framing, and the
//! server's answers to every stanza the client sends.

use std::sync::Arc;
use std::time::Instant;

use base64::Engine as _;
use tokio::sync::mpsc;
use wacore::framing::{encode_frame, FrameDecoder};
use wacore::handshake::{NoiseCipher, NoiseHandshake};
use wacore_binary::builder::NodeBuilder;
use wacore_binary::consts::{NOISE_PATTERN_IK, NOISE_PATTERN_XX, WA_CONN_HEADER};
use wacore_binary::marshal::{marshal, unmarshal_ref};
use wacore_binary::{Node, NodeContent};
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

fn err<E: std::fmt::Display>(e: E) -> String {
    e.to_string()
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
    /// Reads client bytes until one full frame is available.
    async fn next_frame(&mut self) -> Result<Vec<u8>, String> {
        loop {
            if let Some(f) = self.dec.decode_frame() {
                return Ok(f.to_vec());
            }
            match self.input.recv().await {
                Some(Input::Data(b)) => self.dec.feed(&b),
                Some(Input::Closed) | None => return Err("client closed".into()),
            }
        }
    }

    /// Strips the optional edge-routing pre-intro and the WA header.
    async fn read_preamble(&mut self) -> Result<(), String> {
        loop {
            let buf = &self.raw;
            let mut off = 0;
            if buf.len() >= 2 && &buf[..2] == b"ED" {
                if buf.len() < 7 {
                    off = usize::MAX;
                } else {
                    let len =
                        ((buf[4] as usize) << 16) | ((buf[5] as usize) << 8) | buf[6] as usize;
                    off = 7 + len;
                }
            }
            if off != usize::MAX && buf.len() >= off + 4 {
                if buf[off..off + 4] != WA_CONN_HEADER {
                    return Err("bad connection header".into());
                }
                let rest = buf[off + 4..].to_vec();
                self.raw.clear();
                self.dec.feed(&rest);
                return Ok(());
            }
            match self.input.recv().await {
                Some(Input::Data(b)) => self.raw.extend_from_slice(&b),
                Some(Input::Closed) | None => return Err("client closed".into()),
            }
        }
    }

    fn send_raw_frame(&mut self, payload: &[u8]) {
        if let Ok(f) = encode_frame(payload, None) {
            let _ = self.out.send(Output::Data(f));
        }
    }

    fn send(&mut self, node: &Node) {
        let Some(w) = &self.write else { return };
        let plain = match marshal(node) {
            Ok(p) => p,
            Err(e) => {
                log::error!("simulator: cannot marshal {}: {e}", node.tag);
                return;
            }
        };
        let ct = match w.encrypt_with_counter(self.wctr, &plain) {
            Ok(c) => c,
            Err(e) => {
                log::error!("simulator: encrypt: {e}");
                return;
            }
        };
        self.wctr = self.wctr.wrapping_add(1);
        self.send_raw_frame(&ct);
    }

    fn close(&mut self, reason: DisconnectReason) {
        let _ = self.out.send(Output::Close(reason));
        self.closed = true;
    }

    async fn handshake(&mut self) -> Result<(Vec<u8>, [u8; 32]), String> {
        self.read_preamble().await?;
        let hello = self.next_frame().await?;
        let msg = wa::HandshakeMessage::decode_from_slice(&hello)
            .map_err(|e| format!("bad handshake message: {e}"))?;
        let ch = msg.client_hello.into_option().ok_or("no client hello")?;
        let e_c: [u8; 32] = ch
            .ephemeral
            .ok_or("no ephemeral")?
            .try_into()
            .map_err(|_| "bad ephemeral")?;
        let s = {
            let st = self.inner.state.lock();
            st.server_static.clone()
        };
        let s_pub = pub32(&s);
        let s_priv = s.private_key.serialize().to_vec();
        let e_s = new_keypair();
        let e_s_pub = pub32(&e_s);
        let e_s_priv = e_s.private_key.serialize().to_vec();

        if let (Some(enc_static), Some(enc_payload)) = (ch.r#static, ch.payload) {
            // IK
            let mut n = NoiseHandshake::new(NOISE_PATTERN_IK, &WA_CONN_HEADER).map_err(err)?;
            n.authenticate(&s_pub);
            n.authenticate(&e_c);
            n.mix_shared_secret(&s_priv, &e_c).map_err(err)?;
            let s_c: [u8; 32] = n
                .decrypt(&enc_static)
                .map_err(err)?
                .try_into()
                .map_err(|_| "bad client static")?;
            n.mix_shared_secret(&s_priv, &s_c).map_err(err)?;
            let payload = n.decrypt(&enc_payload).map_err(err)?;
            n.authenticate(&e_s_pub);
            n.mix_shared_secret(&e_s_priv, &e_c).map_err(err)?;
            n.mix_shared_secret(&e_s_priv, &s_c).map_err(err)?;
            let enc_cert = n.encrypt(&self.inner.cert_chain).map_err(err)?;
            let hello = wa::HandshakeMessage {
                server_hello: waproto::buffa::MessageField::some(
                    wa::handshake_message::ServerHello {
                        ephemeral: Some(e_s_pub.to_vec()),
                        r#static: None,
                        payload: Some(enc_cert),
                        ..Default::default()
                    },
                ),
                ..Default::default()
            };
            self.send_raw_frame(&hello.encode_to_vec());
            let (k1, k2) = n.finish().map_err(err)?;
            self.read = Some(k1);
            self.write = Some(k2);
            Ok((payload, s_c))
        } else {
            // XX
            let mut n = NoiseHandshake::new(NOISE_PATTERN_XX, &WA_CONN_HEADER).map_err(err)?;
            n.authenticate(&e_c);
            n.authenticate(&e_s_pub);
            n.mix_shared_secret(&e_s_priv, &e_c).map_err(err)?;
            let enc_static = n.encrypt(&s_pub).map_err(err)?;
            n.mix_shared_secret(&s_priv, &e_c).map_err(err)?;
            let enc_cert = n.encrypt(&self.inner.cert_chain).map_err(err)?;
            let hello = wa::HandshakeMessage {
                server_hello: waproto::buffa::MessageField::some(
                    wa::handshake_message::ServerHello {
                        ephemeral: Some(e_s_pub.to_vec()),
                        r#static: Some(enc_static),
                        payload: Some(enc_cert),
                        ..Default::default()
                    },
                ),
                ..Default::default()
            };
            self.send_raw_frame(&hello.encode_to_vec());
            let finish = self.next_frame().await?;
            let msg = wa::HandshakeMessage::decode_from_slice(&finish)
                .map_err(|e| format!("bad client finish: {e}"))?;
            let cf = msg.client_finish.into_option().ok_or("no client finish")?;
            let s_c: [u8; 32] = n
                .decrypt(&cf.r#static.ok_or("no client static")?)
                .map_err(err)?
                .try_into()
                .map_err(|_| "bad client static")?;
            n.mix_shared_secret(&e_s_priv, &s_c).map_err(err)?;
            let payload = n
                .decrypt(&cf.payload.ok_or("no client payload")?)
                .map_err(err)?;
            let (k1, k2) = n.finish().map_err(err)?;
            self.read = Some(k1);
            self.write = Some(k2);
            Ok((payload, s_c))
        }
    }

    async fn serve(&mut self) -> Result<(), String> {
        let (payload, client_static) = self.handshake().await?;
        let payload = wa::ClientPayload::decode_from_slice(&payload)
            .map_err(|e| format!("bad client payload: {e}"))?;
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
                                .map_err(|e| format!("decrypt: {e}"))?;
                            self.rctr = self.rctr.wrapping_add(1);
                            if buf.is_empty() {
                                continue;
                            }
                            if buf[0] & 0x02 != 0 {
                                return Err("compressed frames are not supported".into());
                            }
                            let node = unmarshal_ref(&buf[1..])
                                .map_err(|e| format!("unmarshal: {e}"))?
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

    /// A paired device logs in. Returns false when the connection was refused.
    fn login(
        &mut self,
        phone: String,
        device: u16,
        client_static: &[u8; 32],
        cmd_tx: mpsc::UnboundedSender<ConnCmd>,
    ) -> bool {
        let key = (phone.clone(), device);
        let failure = |reason: &str| {
            NodeBuilder::new("failure")
                .attr("reason", reason.to_string())
                .attr("location", "sim")
                .build()
        };
        let outage = self.inner.outages.lock().get(&key).copied();
        if let Some(until) = outage {
            if Instant::now() < until {
                self.close(DisconnectReason::ReadError("simulated outage".into()));
                return false;
            }
        }
        let (lid, rec) = {
            let st = self.inner.state.lock();
            let acct = st.accounts.get(&phone);
            (
                acct.map(|a| a.rec.lid.clone()),
                acct.and_then(|a| a.rec.devices.get(&device).cloned()),
            )
        };
        let (Some(lid), Some(rec)) = (lid, rec) else {
            self.send(&failure("401"));
            self.close(DisconnectReason::StreamEnded);
            return false;
        };
        if rec.noise_pub_bytes() != client_static {
            self.send(&failure("401"));
            self.close(DisconnectReason::StreamEnded);
            return false;
        }
        if let Some(until) = rec.banned_until {
            let left = until - now_secs();
            if left > 0 {
                self.send(&ban_failure(rec.ban_code, left as u64));
                self.close(DisconnectReason::StreamEnded);
                return false;
            }
        }
        let pending = self.inner.pending_failures.lock().remove(&key);
        if let Some(node) = pending {
            self.send(&node);
            self.close(DisconnectReason::StreamEnded);
            return false;
        }
        // Like the real server: a new login of the same device replaces the
        // older connection (another process holding the same credentials).
        for old in self.inner.live_conns(&key) {
            let _ = old.send(ConnCmd::Fault {
                nodes: vec![NodeBuilder::new("stream:error")
                    .children([NodeBuilder::new("conflict")
                        .attr("type", "replaced")
                        .build()])
                    .build()],
                close: Some(DisconnectReason::StreamEnded),
            });
        }
        self.inner.conns.lock().insert(
            self.id,
            ConnEntry {
                cmd: cmd_tx,
                kind: ConnKind::LoggedIn(key.clone()),
            },
        );
        self.registered = true;
        self.login = Some(key);
        let success = NodeBuilder::new("success")
            .attr("t", now_secs().to_string())
            .attr("lid", format!("{lid}:{device}@lid"))
            .attr("props", "1")
            .attr("location", "sim")
            .build();
        self.send(&success);
        true
    }

    /// An unpaired client registers: hand out six QR refs.
    fn register(
        &mut self,
        payload: &wa::ClientPayload,
        client_static: [u8; 32],
        cmd_tx: mpsc::UnboundedSender<ConnCmd>,
    ) -> Result<(), String> {
        let reg = payload
            .device_pairing_data
            .as_option()
            .ok_or("registration payload without pairing data")?;
        let identity_pub: [u8; 32] = reg
            .e_ident
            .clone()
            .and_then(|v| v.try_into().ok())
            .ok_or("registration without identity")?;
        let refs: Vec<String> = (0..6)
            .map(|_| {
                format!(
                    "2@{}",
                    base64::engine::general_purpose::STANDARD.encode(random_bytes::<24>())
                )
            })
            .collect();
        let platform = payload
            .user_agent
            .as_option()
            .and_then(|ua| ua.platform)
            .map(|p| format!("{p:?}"))
            .unwrap_or_default();
        self.inner.conns.lock().insert(
            self.id,
            ConnEntry {
                cmd: cmd_tx,
                kind: ConnKind::Unpaired {
                    refs: refs.clone(),
                    refs_issued: Instant::now(),
                    noise_pub: client_static,
                    identity_pub,
                    platform,
                    code: None,
                },
            },
        );
        self.registered = true;
        let node = NodeBuilder::new("iq")
            .attr("from", SERVER)
            .attr("type", "set")
            .attr("id", format!("sim-pd-{}", self.id))
            .attr("xmlns", "md")
            .children([NodeBuilder::new("pair-device")
                .children(
                    refs.into_iter()
                        .map(|r| NodeBuilder::new("ref").bytes(r.into_bytes()).build()),
                )
                .build()])
            .build();
        self.send(&node);
        Ok(())
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
                if let Some(id) = attr(&node, "id") {
                    let mut b = NodeBuilder::new("ack")
                        .attr("class", "message")
                        .attr("id", id)
                        .attr("t", now_secs().to_string());
                    if let Some(to) = attr(&node, "to") {
                        b = b.attr("from", to);
                    }
                    self.send(&b.build());
                }
            }
            _ => {}
        }
    }

    async fn handle_iq(&mut self, node: Node) {
        let id = attr(&node, "id").unwrap_or_default();
        let typ = attr(&node, "type").unwrap_or_default();
        let xmlns = attr(&node, "xmlns").unwrap_or_default();
        if typ == "result" || typ == "error" {
            self.handle_iq_response(&id, &typ, &node);
            return;
        }
        let first = node.children().and_then(|c| c.first()).cloned();
        let first_tag = first
            .as_ref()
            .map(|c| c.tag.to_string())
            .unwrap_or_default();
        match (xmlns.as_str(), first_tag.as_str()) {
            ("passive", _) => {
                self.send(&result(&id, vec![]));
                if first_tag == "active" {
                    let queued = self
                        .login
                        .as_ref()
                        .and_then(|k| self.inner.offline.lock().remove(k))
                        .unwrap_or_default();
                    for m in queued {
                        self.deliver(m).await;
                    }
                    let ib = NodeBuilder::new("ib")
                        .attr("from", SERVER)
                        .children([NodeBuilder::new("offline").attr("count", "0").build()])
                        .build();
                    self.send(&ib);
                }
            }
            ("abt", _) => {
                let props = NodeBuilder::new("props")
                    .attr("protocol", "1")
                    .attr("hash", "sim")
                    .attr("refresh", "86400")
                    .build();
                self.send(&result(&id, vec![props]));
            }
            ("blocklist", _) => self.send(&result(&id, vec![NodeBuilder::new("list").build()])),
            ("privacy", "privacy") => {
                self.send(&result(&id, vec![NodeBuilder::new("privacy").build()]))
            }
            ("usync", _) => {
                let resp = self.usync(&id, first.as_ref());
                self.send(&resp);
            }
            ("encrypt", "registration") | ("encrypt", _) if typ == "set" => {
                self.store_prekeys(&node);
                self.send(&result(&id, vec![]));
                self.maybe_share_app_state_key().await;
                // Messages that waited for this device's bundle.
                let queued = self
                    .login
                    .as_ref()
                    .and_then(|k| self.inner.offline.lock().remove(k))
                    .unwrap_or_default();
                for m in queued {
                    self.deliver(m).await;
                }
            }
            ("encrypt", "key") => {
                let resp = self.key_bundles(first.as_ref());
                self.send(&result(&id, vec![resp]));
            }
            ("encrypt", "digest") => {
                // Without the device's bundle (e.g. after a simulator restart)
                // a 404 makes the client upload its prekeys again.
                let known = self
                    .login
                    .as_ref()
                    .is_some_and(|k| self.inner.bundles.lock().contains_key(k));
                if known {
                    self.send(&result(&id, vec![]));
                } else {
                    let e = NodeBuilder::new("iq")
                        .attr("type", "error")
                        .attr("id", id)
                        .attr("from", SERVER)
                        .children([NodeBuilder::new("error")
                            .attr("code", "404")
                            .attr("text", "item-not-found")
                            .build()])
                        .build();
                    self.send(&e);
                }
            }
            ("w:sync:app:state", "sync") => {
                let cols: Vec<Node> = first
                    .as_ref()
                    .map(|s| {
                        s.get_children_by_tag("collection")
                            .filter_map(|c| attr(c, "name"))
                            .map(|name| {
                                NodeBuilder::new("collection")
                                    .attr("name", name)
                                    .attr("version", "0")
                                    .build()
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                let sync = NodeBuilder::new("sync").children(cols).build();
                self.send(&result(&id, vec![sync]));
            }
            ("w:p", _) => {
                let r = NodeBuilder::new("iq")
                    .attr("type", "result")
                    .attr("id", id)
                    .attr("from", SERVER)
                    .attr("t", now_secs().to_string())
                    .build();
                self.send(&r);
            }
            ("md", "remove-companion-device") => {
                self.send(&result(&id, vec![]));
                if let Some(key) = self.login.clone() {
                    remove_device(&self.inner, &key);
                }
            }
            ("md", "link_code_companion_reg") => {
                if let Some(reg) = first {
                    self.link_code(&id, &reg);
                }
            }
            _ => self.send(&result(&id, vec![])),
        }
    }

    fn handle_iq_response(&mut self, id: &str, typ: &str, node: &Node) {
        let Some(link) = self.pending_link.take_if(|l| l.iq_id == id) else {
            return;
        };
        if typ == "error" {
            let text = node
                .get_optional_child("error")
                .and_then(|e| attr(e, "text"))
                .unwrap_or_else(|| "error".into());
            let _ = link.reply.send(Err(SimError::LinkRejected(text)));
            return;
        }
        let signed = node
            .get_optional_child_by_tag(&["pair-device-sign", "device-identity"])
            .and_then(content_bytes);
        let account_pub = {
            let st = self.inner.state.lock();
            st.accounts.get(&link.phone).map(|a| a.identity_pub())
        };
        let verdict = match (signed, account_pub) {
            (Some(s), Some(a)) => phone::verify_pair_device_sign(&a, &link.companion_identity, &s)
                .and_then(|ki| {
                    if ki == link.key_index {
                        Ok(())
                    } else {
                        Err(format!(
                            "signed key index {ki}, expected {}",
                            link.key_index
                        ))
                    }
                }),
            _ => Err("no pair-device-sign".into()),
        };
        if let Err(e) = verdict {
            log::warn!("simulator: pair-device-sign rejected: {e}");
            let _ = link.reply.send(Err(SimError::LinkRejected(e)));
            return;
        }
        let rec = LinkedDeviceRec::new(
            link.device,
            link.key_index,
            &link.noise_pub,
            &link.companion_identity,
            &link.platform,
            &link.push_name,
        );
        let linked_at = rec.linked_at;
        let lid = {
            let mut st = self.inner.state.lock();
            let lid = match st.accounts.get_mut(&link.phone) {
                Some(acct) => {
                    acct.rec.devices.insert(link.device, rec);
                    acct.rec.lid.clone()
                }
                None => String::new(),
            };
            st.save_account_logged(&link.phone);
            lid
        };
        self.inner
            .key_share_due
            .lock()
            .insert((link.phone.clone(), link.device));
        let dev = LinkedDevice {
            phone: link.phone.clone(),
            device: link.device,
            lid,
            platform: link.platform.clone(),
            linked_at,
        };
        let _ = link.reply.send(Ok(dev));
        self.inner.conns.lock().remove(&self.id);
        self.send(&NodeBuilder::new("stream:error").attr("code", "515").build());
    }

    /// `link_code_companion_reg`: companion_hello and companion_finish.
    fn link_code(&mut self, id: &str, reg: &Node) {
        let stage = attr(reg, "stage").unwrap_or_default();
        match stage.as_str() {
            "companion_hello" => {
                let phone = attr(reg, "jid")
                    .map(|j| j.split(['@', ':']).next().unwrap_or_default().to_string())
                    .unwrap_or_default();
                let wrapped = child_bytes(reg, "link_code_pairing_wrapped_companion_ephemeral_pub")
                    .unwrap_or_default();
                let pairing_ref = format!(
                    "3@{}",
                    base64::engine::general_purpose::STANDARD.encode(random_bytes::<18>())
                );
                if let Some(ConnEntry {
                    kind: ConnKind::Unpaired { code, .. },
                    ..
                }) = self.inner.conns.lock().get_mut(&self.id)
                {
                    *code = Some(CodeReg {
                        phone,
                        wrapped_companion_ephemeral: wrapped,
                        pairing_ref: pairing_ref.clone(),
                        at: Instant::now(),
                    });
                }
                let resp = NodeBuilder::new("link_code_companion_reg")
                    .children([NodeBuilder::new("link_code_pairing_ref")
                        .bytes(pairing_ref.into_bytes())
                        .build()])
                    .build();
                self.send(&result(id, vec![resp]));
            }
            "companion_finish" => {
                self.send(&result(id, vec![]));
                let Some(stage) = self.code_stage.take() else {
                    return;
                };
                let bundle =
                    child_bytes(reg, "link_code_pairing_wrapped_key_bundle").unwrap_or_default();
                let companion_identity: Option<[u8; 32]> =
                    child_bytes(reg, "companion_identity_public").and_then(|v| v.try_into().ok());
                let (noise_pub, platform) = match self.inner.conns.lock().get(&self.id) {
                    Some(ConnEntry {
                        kind:
                            ConnKind::Unpaired {
                                noise_pub,
                                identity_pub,
                                platform,
                                ..
                            },
                        ..
                    }) if Some(*identity_pub) == companion_identity => {
                        (*noise_pub, platform.clone())
                    }
                    _ => {
                        let _ = stage.reply.send(Err(SimError::LinkRejected(
                            "companion identity does not match the registration".into(),
                        )));
                        return;
                    }
                };
                let companion_identity = companion_identity.expect("checked above");
                let account = {
                    let st = self.inner.state.lock();
                    st.accounts.get(&stage.phone).map(|a| a.identity.clone())
                };
                let Some(account) = account else {
                    let _ = stage.reply.send(Err(SimError::NoSuchPhone));
                    return;
                };
                let adv = match phone::finish_code_pairing(
                    &stage.phone_ephemeral,
                    &stage.companion_ephemeral_pub,
                    &account,
                    &companion_identity,
                    &bundle,
                ) {
                    Ok(a) => a,
                    Err(e) => {
                        let _ = stage.reply.send(Err(SimError::WrongCode(e)));
                        return;
                    }
                };
                let (node, iq_id, device, key_index) = self.inner.prepare_link(
                    &stage.phone,
                    &stage.push_name,
                    &companion_identity,
                    &adv,
                );
                self.send(&node);
                self.pending_link = Some(PendingLink {
                    iq_id,
                    phone: stage.phone,
                    device,
                    key_index,
                    companion_identity,
                    noise_pub,
                    platform,
                    push_name: stage.push_name,
                    reply: stage.reply,
                });
            }
            _ => self.send(&result(id, vec![])),
        }
    }

    fn store_prekeys(&mut self, node: &Node) {
        let Some(key) = self.login.clone() else {
            return;
        };
        let Some(identity) = child_bytes(node, "identity").and_then(|v| v.try_into().ok()) else {
            return;
        };
        let Some(skey) = node.get_optional_child("skey") else {
            return;
        };
        let (Some(spk_id), Some(spk), Some(sig)) = (
            child_bytes(skey, "id"),
            child_bytes(skey, "value").and_then(|v| <[u8; 32]>::try_from(v).ok()),
            child_bytes(skey, "signature"),
        ) else {
            return;
        };
        let pre_keys = node
            .get_optional_child("list")
            .map(|l| {
                l.get_children_by_tag("key")
                    .filter_map(|k| {
                        let id = child_bytes(k, "id")?;
                        let v: [u8; 32] = child_bytes(k, "value")?.try_into().ok()?;
                        Some((be_uint(&id), v))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let bundle = UploadedBundle {
            registration_id: child_bytes(node, "registration")
                .map(|b| be_uint(&b))
                .unwrap_or(0),
            identity,
            signed_pre_key_id: be_uint(&spk_id),
            signed_pre_key: spk,
            signed_pre_key_sig: sig,
            pre_keys,
        };
        self.inner.bundles.lock().insert(key, bundle);
    }

    /// After the first post-link prekey upload, the phone shares an app-state
    /// key, so the client need not wait out its 10 s grace.
    async fn maybe_share_app_state_key(&mut self) {
        let Some(key) = self.login.clone() else {
            return;
        };
        if !self.inner.key_share_due.lock().remove(&key) {
            return;
        }
        let Some(mut bundle) = self.inner.bundles.lock().get(&key).cloned() else {
            return;
        };
        let acct = {
            let st = self.inner.state.lock();
            st.accounts.get(&key.0).and_then(|a| {
                let d = a.rec.devices.get(&key.1)?;
                Some((a.identity.clone(), a.rec.raw_id, d.key_index))
            })
        };
        let Some((account, raw_id, key_index)) = acct else {
            return;
        };
        let pre_key = if bundle.pre_keys.is_empty() {
            None
        } else {
            Some(bundle.pre_keys.remove(0))
        };
        if let Some(b) = self.inner.bundles.lock().get_mut(&key) {
            b.pre_keys = bundle.pre_keys.clone();
        }
        let plain = phone::app_state_key_share(raw_id, key_index);
        match phone::encrypt_from_phone(&account, &key.0, key.1, &bundle, pre_key, &plain).await {
            Ok(ct) => {
                let msg = NodeBuilder::new("message")
                    .attr("from", format!("{}@s.whatsapp.net", key.0))
                    .attr("type", "text")
                    .attr(
                        "id",
                        format!("SIM{:016X}", u64::from_le_bytes(random_bytes::<8>())),
                    )
                    .attr("t", now_secs().to_string())
                    .attr("category", "peer")
                    .children([NodeBuilder::new("enc")
                        .attr("v", "2")
                        .attr("type", "pkmsg")
                        .bytes(ct)
                        .build()])
                    .build();
                self.send(&msg);
            }
            Err(e) => log::warn!("simulator: app-state key share failed: {e}"),
        }
    }

    /// Answers a prekey fetch: companions' uploaded bundles, and a bundle
    /// for each virtual phone (device 0) signed with its account key.
    fn key_bundles(&self, key: Option<&Node>) -> Node {
        let users: Vec<String> = key
            .map(|k| {
                k.get_children_by_tag("user")
                    .filter_map(|u| attr(u, "jid"))
                    .collect()
            })
            .unwrap_or_default();
        let mut out = Vec::new();
        for jid in users {
            let (user, server) = jid.split_once('@').unwrap_or((&jid, "s.whatsapp.net"));
            let (user, dev) = match user.split_once(':') {
                Some((u, d)) => (u, d.parse::<u16>().unwrap_or(0)),
                None => (user, 0),
            };
            let phone = {
                let st = self.inner.state.lock();
                if server == "lid" {
                    st.accounts
                        .values()
                        .find(|a| a.rec.lid == user)
                        .map(|a| a.rec.phone.clone())
                } else {
                    st.accounts.contains_key(user).then(|| user.to_string())
                }
            };
            let bundle = phone.and_then(|p| {
                if dev == 0 {
                    self.phone_bundle(&p).map(|b| (b, None))
                } else {
                    let mut all = self.inner.bundles.lock();
                    all.get_mut(&(p, dev)).map(|b| {
                        let pk = (!b.pre_keys.is_empty()).then(|| b.pre_keys.remove(0));
                        (b.clone(), pk)
                    })
                }
            });
            let node = match bundle {
                Some((b, pk)) => {
                    let mut ch = vec![
                        NodeBuilder::new("registration")
                            .bytes(b.registration_id.to_be_bytes().to_vec())
                            .build(),
                        NodeBuilder::new("type").bytes(vec![5u8]).build(),
                        NodeBuilder::new("identity")
                            .bytes(b.identity.to_vec())
                            .build(),
                        NodeBuilder::new("skey")
                            .children([
                                NodeBuilder::new("id")
                                    .bytes(b.signed_pre_key_id.to_be_bytes()[1..].to_vec())
                                    .build(),
                                NodeBuilder::new("value")
                                    .bytes(b.signed_pre_key.to_vec())
                                    .build(),
                                NodeBuilder::new("signature")
                                    .bytes(b.signed_pre_key_sig.clone())
                                    .build(),
                            ])
                            .build(),
                    ];
                    if let Some((id, v)) = pk {
                        ch.push(
                            NodeBuilder::new("key")
                                .children([
                                    NodeBuilder::new("id")
                                        .bytes(id.to_be_bytes()[1..].to_vec())
                                        .build(),
                                    NodeBuilder::new("value").bytes(v.to_vec()).build(),
                                ])
                                .build(),
                        );
                    }
                    NodeBuilder::new("user")
                        .attr("jid", jid.clone())
                        .children(ch)
                        .build()
                }
                None => NodeBuilder::new("user")
                    .attr("jid", jid.clone())
                    .children([NodeBuilder::new("error")
                        .attr("code", "404")
                        .attr("text", "item-not-found")
                        .build()])
                    .build(),
            };
            out.push(node);
        }
        NodeBuilder::new("list").children(out).build()
    }

    /// The virtual phone's own prekey bundle (made once per run).
    fn phone_bundle(&self, phone: &str) -> Option<UploadedBundle> {
        if let Some(b) = self.inner.phone_prekeys.lock().get(phone) {
            return Some(b.clone());
        }
        let account = {
            let st = self.inner.state.lock();
            st.accounts.get(phone).map(|a| a.identity.clone())?
        };
        let spk = new_keypair();
        let sig = account
            .private_key
            .calculate_signature(&spk.public_key.serialize(), &mut phone::rng())
            .ok()?;
        let b = UploadedBundle {
            registration_id: u32::from_le_bytes(random_bytes::<4>()) & 0x3fff,
            identity: pub32(&account),
            signed_pre_key_id: 1,
            signed_pre_key: pub32(&spk),
            signed_pre_key_sig: sig.to_vec(),
            pre_keys: vec![],
        };
        self.inner
            .phone_prekeys
            .lock()
            .insert(phone.to_string(), b.clone());
        Some(b)
    }

    /// Encrypts and sends a queued inbound message; without the device's
    /// prekey bundle it stays queued for the next login.
    async fn deliver(&mut self, m: super::QueuedMsg) {
        let Some(key) = self.login.clone() else {
            return;
        };
        let taken = {
            let mut b = self.inner.bundles.lock();
            b.get_mut(&key).map(|b| {
                let pk = (!b.pre_keys.is_empty()).then(|| b.pre_keys.remove(0));
                (b.clone(), pk)
            })
        };
        let Some((bundle, pre_key)) = taken else {
            self.inner.offline.lock().entry(key).or_default().push(m);
            return;
        };
        let sender = {
            let st = self.inner.state.lock();
            st.accounts.get(&m.from).map(|a| a.identity.clone())
        };
        let Some(sender) = sender else { return };
        let plain = wa::Message {
            conversation: Some(m.text.clone()),
            ..Default::default()
        }
        .encode_to_vec();
        match phone::encrypt_from_phone(&sender, &key.0, key.1, &bundle, pre_key, &plain).await {
            Ok(ct) => {
                let node = NodeBuilder::new("message")
                    .attr("from", format!("{}@s.whatsapp.net", m.from))
                    .attr("type", "text")
                    .attr("id", m.id)
                    .attr("t", m.t.to_string())
                    .attr("notify", m.notify)
                    .children([NodeBuilder::new("enc")
                        .attr("v", "2")
                        .attr("type", "pkmsg")
                        .bytes(ct)
                        .build()])
                    .build();
                self.send(&node);
            }
            Err(e) => log::warn!("simulator: cannot encrypt to {key:?}: {e}"),
        }
    }

    fn usync(&self, id: &str, usync: Option<&Node>) -> Node {
        let Some(usync) = usync else {
            return result(id, vec![]);
        };
        let wants_lid = usync
            .get_optional_child("query")
            .and_then(|q| q.get_optional_child("lid"))
            .is_some();
        let wants_devices = usync
            .get_optional_child("query")
            .and_then(|q| q.get_optional_child("devices"))
            .is_some();
        let users: Vec<String> = usync
            .get_optional_child("list")
            .map(|l| {
                l.get_children_by_tag("user")
                    .filter_map(|u| attr(u, "jid"))
                    .collect()
            })
            .unwrap_or_default();
        let st = self.inner.state.lock();
        let ts = now_secs() as u64;
        let user_nodes: Vec<Node> = users
            .into_iter()
            .map(|jid| {
                let (user, server) = jid.split_once('@').unwrap_or((&jid, "s.whatsapp.net"));
                let user = user.split(':').next().unwrap_or(user);
                let acct = if server == "lid" {
                    st.accounts.values().find(|a| a.rec.lid == user)
                } else {
                    st.accounts.get(user)
                };
                let mut children = Vec::new();
                if wants_devices {
                    let mut devs = vec![NodeBuilder::new("device").attr("id", "0").build()];
                    let mut dev_children = Vec::new();
                    if let Some(a) = acct {
                        for d in a.rec.devices.values() {
                            devs.push(
                                NodeBuilder::new("device")
                                    .attr("id", d.id.to_string())
                                    .attr("key-index", d.key_index.to_string())
                                    .build(),
                            );
                        }
                        dev_children.push(
                            NodeBuilder::new("device-list")
                                .attr("hash", format!("2:sim{}", a.rec.devices.len()))
                                .children(devs)
                                .build(),
                        );
                        dev_children.push(
                            NodeBuilder::new("key-index-list")
                                .attr("ts", ts.to_string())
                                .bytes(phone::key_index_list(
                                    &a.identity,
                                    a.rec.raw_id,
                                    &a.valid_key_indexes(),
                                    ts,
                                ))
                                .build(),
                        );
                    } else {
                        dev_children.push(
                            NodeBuilder::new("device-list")
                                .attr("hash", "2:sim0")
                                .children(devs)
                                .build(),
                        );
                    }
                    children.push(NodeBuilder::new("devices").children(dev_children).build());
                }
                if wants_lid {
                    if let Some(a) = acct {
                        children.push(
                            NodeBuilder::new("lid")
                                .attr("val", format!("{}@lid", a.rec.lid))
                                .build(),
                        );
                    }
                }
                let b = NodeBuilder::new("user").attr("jid", jid.clone());
                if children.is_empty() {
                    b.build()
                } else {
                    b.children(children).build()
                }
            })
            .collect();
        let mut u = NodeBuilder::new("usync");
        for k in ["sid", "mode", "context", "index", "last"] {
            if let Some(v) = attr(usync, k) {
                u = u.attr(k, v);
            }
        }
        let usync_node = u
            .children([
                NodeBuilder::new("result")
                    .children([NodeBuilder::new("devices").build()])
                    .build(),
                NodeBuilder::new("list").children(user_nodes).build(),
            ])
            .build();
        result(id, vec![usync_node])
    }
}
