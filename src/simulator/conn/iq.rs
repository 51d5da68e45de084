//! The server's answers to the iq stanzas a client sends: presence, props,
//! usync, prekey upload and fetch, app-state sync, device removal.

use wacore_binary::builder::NodeBuilder;
use wacore_binary::Node;

use super::*;

impl Conn {
    pub(super) async fn handle_iq(&mut self, node: Node) {
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
                    // What arrived while the device was away, then the
                    // marker that ends the offline delivery.
                    let count = self.deliver_queued().await;
                    let ib = NodeBuilder::new("ib")
                        .attr("from", SERVER)
                        .children([NodeBuilder::new("offline")
                            .attr("count", count.to_string())
                            .build()])
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
                let _ = self.deliver_queued().await;
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

    pub(super) fn store_prekeys(&mut self, node: &Node) {
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

    /// Answers a prekey fetch: companions' uploaded bundles, and a bundle
    /// for each virtual phone (device 0) signed with its account key.
    pub(super) fn key_bundles(&self, key: Option<&Node>) -> Node {
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
                    (dev == 0 || st.accounts.contains_key(user)).then(|| user.to_string())
                }
            };
            let bundle = phone.and_then(|p| {
                if dev == 0 {
                    self.phone_bundle(&p).map(|b| (b, None))
                } else {
                    let mut all = self.inner.bundles.lock();
                    all.get_mut(&(p, dev)).map(|b| {
                        let pk = b.take_pre_key();
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
    pub(super) fn phone_bundle(&self, phone: &str) -> Option<UploadedBundle> {
        self.phone_contact(phone).map(|c| c.bundle)
    }

    /// The phone's Signal identity (device 0), made once per run.
    pub(super) fn phone_contact(&self, phone: &str) -> Option<crate::simulator::contacts::Contact> {
        if let Some(c) = self.inner.contacts.lock().get(phone) {
            return Some(c.clone());
        }
        // Any valid number is a virtual phone, created on demand.
        crate::simulator::valid_phone(phone).ok()?;
        let account = {
            let mut st = self.inner.state.lock();
            let id = st
                .accounts
                .entry(phone.to_string())
                .or_insert_with(|| crate::simulator::state::Account::new(phone, ""))
                .identity
                .clone();
            st.save_account_logged(phone);
            id
        };
        let c = crate::simulator::contacts::Contact::new(&account)?;
        Some(
            self.inner
                .contacts
                .lock()
                .entry(phone.to_string())
                .or_insert(c)
                .clone(),
        )
    }

    pub(super) fn usync(&self, id: &str, usync: Option<&Node>) -> Node {
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
        // A user is named by `jid`, or (`is_on_whatsapp`) by its number:
        // `<user><contact>+NUMBER</contact></user>`.
        let users: Vec<(String, bool)> = usync
            .get_optional_child("list")
            .map(|l| {
                l.get_children_by_tag("user")
                    .filter_map(|u| match attr(u, "jid") {
                        Some(jid) => Some((jid, false)),
                        None => queried_number(u).map(|n| (format!("{n}@{SERVER}"), true)),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let wants_contact = usync
            .get_optional_child("query")
            .and_then(|q| q.get_optional_child("contact"))
            .is_some();
        let unregistered = self.inner.inbox.lock().unregistered.clone();
        let st = self.inner.state.lock();
        let ts = now_secs() as u64;
        let user_nodes: Vec<Node> = users
            .into_iter()
            .map(|(jid, by_number)| {
                let (user, server) = jid.split_once('@').unwrap_or((&jid, "s.whatsapp.net"));
                let user = user.split(':').next().unwrap_or(user);
                let acct = if server == "lid" {
                    st.accounts.values().find(|a| a.rec.lid == user)
                } else {
                    st.accounts.get(user)
                };
                // Any valid number is a virtual phone; a number asked for
                // that is not one is not on WhatsApp.
                let out = unregistered.contains(user)
                    || (by_number && crate::simulator::valid_phone(user).is_err());
                let acct = acct.filter(|_| !out);
                let mut children = Vec::new();
                if wants_contact {
                    let t = if out { "out" } else { "in" };
                    children.push(NodeBuilder::new("contact").attr("type", t).build());
                }
                if wants_devices && out {
                    children.push(
                        NodeBuilder::new("devices")
                            .children([NodeBuilder::new("device-list")
                                .attr("hash", "2:sim0")
                                .build()])
                            .build(),
                    );
                } else if wants_devices {
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

/// The number a usync `<user>` asks for by `<contact>+NUMBER</contact>`,
/// without its `+` (digits only: anything else would make a bad jid).
fn queried_number(user: &Node) -> Option<String> {
    let raw = child_bytes(user, "contact")?;
    let text = String::from_utf8(raw).ok()?;
    let number = text.trim().trim_start_matches('+');
    (!number.is_empty() && number.bytes().all(|b| b.is_ascii_digit())).then(|| number.to_string())
}
