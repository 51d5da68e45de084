//! The Noise responder (XX and IK handshakes) and the encrypted framing.

use wacore::framing::encode_frame;
use wacore::handshake::NoiseHandshake;
use wacore_binary::consts::{NOISE_PATTERN_IK, NOISE_PATTERN_XX, WA_CONN_HEADER};
use wacore_binary::marshal::marshal;
use wacore_binary::Node;
use waproto::buffa::Message as _;
use waproto::whatsapp as wa;

use super::*;

impl Conn {
    /// Reads client bytes until one full frame is available.
    pub(super) async fn next_frame(&mut self) -> Result<Vec<u8>, ConnError> {
        loop {
            if let Some(f) = self.dec.decode_frame() {
                return Ok(f.to_vec());
            }
            match self.input.recv().await {
                Some(Input::Data(b)) => self.dec.feed(&b),
                Some(Input::Closed) | None => return Err(ConnError::ClientClosed),
            }
        }
    }

    /// Strips the optional edge-routing pre-intro and the WA header.
    pub(super) async fn read_preamble(&mut self) -> Result<(), ConnError> {
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
                    return Err(ConnError::BadHeader);
                }
                let rest = buf[off + 4..].to_vec();
                self.raw.clear();
                self.dec.feed(&rest);
                return Ok(());
            }
            match self.input.recv().await {
                Some(Input::Data(b)) => self.raw.extend_from_slice(&b),
                Some(Input::Closed) | None => return Err(ConnError::ClientClosed),
            }
        }
    }

    pub(super) fn send_raw_frame(&mut self, payload: &[u8]) {
        if let Ok(f) = encode_frame(payload, None) {
            let _ = self.out.send(Output::Data(f));
        }
    }

    pub(super) fn send(&mut self, node: &Node) {
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

    /// The next frame as a `HandshakeMessage`; `what` names it in errors.
    async fn next_handshake_message(
        &mut self,
        what: &'static str,
    ) -> Result<wa::HandshakeMessage, ConnError> {
        let frame = self.next_frame().await?;
        wa::HandshakeMessage::decode_from_slice(&frame)
            .map_err(|source| ConnError::Undecodable { what, source })
    }

    pub(super) async fn handshake(&mut self) -> Result<(Vec<u8>, [u8; 32]), ConnError> {
        self.read_preamble().await?;
        let msg = self.next_handshake_message("handshake message").await?;
        let ch = msg
            .client_hello
            .into_option()
            .ok_or(ConnError::Missing("client hello"))?;
        let e_c: [u8; 32] = ch
            .ephemeral
            .ok_or(ConnError::Missing("ephemeral"))?
            .try_into()
            .map_err(|_| ConnError::BadKey("ephemeral"))?;
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
            let mut n = NoiseHandshake::new(NOISE_PATTERN_IK, &WA_CONN_HEADER)?;
            n.authenticate(&s_pub);
            n.authenticate(&e_c);
            n.mix_shared_secret(&s_priv, &e_c)?;
            let s_c: [u8; 32] = n
                .decrypt(&enc_static)?
                .try_into()
                .map_err(|_| ConnError::BadKey("client static"))?;
            n.mix_shared_secret(&s_priv, &s_c)?;
            let payload = n.decrypt(&enc_payload)?;
            n.authenticate(&e_s_pub);
            n.mix_shared_secret(&e_s_priv, &e_c)?;
            n.mix_shared_secret(&e_s_priv, &s_c)?;
            let enc_cert = n.encrypt(&self.inner.cert_chain)?;
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
            let (k1, k2) = n.finish()?;
            self.read = Some(k1);
            self.write = Some(k2);
            Ok((payload, s_c))
        } else {
            // XX
            let mut n = NoiseHandshake::new(NOISE_PATTERN_XX, &WA_CONN_HEADER)?;
            n.authenticate(&e_c);
            n.authenticate(&e_s_pub);
            n.mix_shared_secret(&e_s_priv, &e_c)?;
            let enc_static = n.encrypt(&s_pub)?;
            n.mix_shared_secret(&s_priv, &e_c)?;
            let enc_cert = n.encrypt(&self.inner.cert_chain)?;
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
            let msg = self.next_handshake_message("client finish").await?;
            let cf = msg
                .client_finish
                .into_option()
                .ok_or(ConnError::Missing("client finish"))?;
            let s_c: [u8; 32] = n
                .decrypt(&cf.r#static.ok_or(ConnError::Missing("client static"))?)?
                .try_into()
                .map_err(|_| ConnError::BadKey("client static"))?;
            n.mix_shared_secret(&e_s_priv, &s_c)?;
            let payload = n.decrypt(&cf.payload.ok_or(ConnError::Missing("client payload"))?)?;
            let (k1, k2) = n.finish()?;
            self.read = Some(k1);
            self.write = Some(k2);
            Ok((payload, s_c))
        }
    }
}
