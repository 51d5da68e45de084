//! A paired device logging in, and an unpaired client registering for QR refs.

use std::time::Instant;

use base64::Engine as _;
use tokio::sync::mpsc;
use wacore_binary::builder::NodeBuilder;
use waproto::whatsapp as wa;
use whatsapp_rust::transport::DisconnectReason;

use super::*;

impl Conn {
    /// A paired device logs in. Returns false when the connection was refused.
    pub(super) fn login(
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
        let older = self.inner.live_conns(&key);
        crate::simulator::overlap::saw(&key, older.len());
        for old in older {
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
    pub(super) fn register(
        &mut self,
        payload: &wa::ClientPayload,
        client_static: [u8; 32],
        cmd_tx: mpsc::UnboundedSender<ConnCmd>,
    ) -> Result<(), ConnError> {
        let reg = payload
            .device_pairing_data
            .as_option()
            .ok_or(ConnError::Registration("payload without pairing data"))?;
        let identity_pub: [u8; 32] = reg
            .e_ident
            .clone()
            .and_then(|v| v.try_into().ok())
            .ok_or(ConnError::Registration("without identity"))?;
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
}
