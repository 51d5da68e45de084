//! Pairing: the client's answer to pair-success (QR and code), and the
//! link-code registration stages of code pairing.

use std::time::Instant;

use base64::Engine as _;
use wacore_binary::builder::NodeBuilder;
use wacore_binary::Node;

use super::*;

impl Conn {
    pub(super) fn handle_iq_response(&mut self, id: &str, typ: &str, node: &Node) {
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
                        Err(phone::PairSignError::KeyIndex {
                            signed: ki,
                            expected: link.key_index,
                        })
                    }
                }),
            _ => Err(phone::PairSignError::NoSign),
        };
        if let Err(e) = verdict {
            log::warn!("simulator: pair-device-sign rejected: {e}");
            let _ = link.reply.send(Err(SimError::LinkRejected(e.to_string())));
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
    pub(super) fn link_code(&mut self, id: &str, reg: &Node) {
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
                        let _ = stage.reply.send(Err(SimError::WrongCode(e.to_string())));
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
}
