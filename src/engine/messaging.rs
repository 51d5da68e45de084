//! The messaging half of the adapter: a `Messenger` over a session's
//! logged-in client (send under wasup's id, "composing", number checks) and
//! the inbound side (messages, receipts and server acks turned into
//! `InboundMsg` for the `OutboundActor`).
//!
//! A send is done when the server acks the message: the ack arrives as
//! `Event::ServerAck` on the client's event thread, so a waiter is put in
//! place before the stanza leaves and the forwarder resolves it. A nack
//! (e.g. 404, the recipient is not on WhatsApp) fails the message for good;
//! no ack in time means "try again" with the same id.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use actix::Recipient;
use chrono::Utc;
use futures::future::BoxFuture;
use futures::FutureExt;
use parking_lot::Mutex;
use tokio::sync::oneshot;
use wasup_actors::model::SessionId;
use wasup_actors::outbound::{
    Direction, MessageContext, MessageRecord, MessageStatus, QuotedMessage,
};
use wasup_actors::ports::{EngineError, InboundEvent, InboundMsg, IncomingCall, Messenger};
use whatsapp_rust::types::events::Event;
use whatsapp_rust::types::presence::ReceiptType;
use whatsapp_rust::wacore::proto_helpers::MessageExt;
use whatsapp_rust::waproto::buffa::MessageField;
use whatsapp_rust::waproto::whatsapp as wa;
use whatsapp_rust::{Client, Jid, SendOptions};

/// How long a sent message waits for the server's ack before it counts as
/// not sent (it is sent again later, under the same id).
const ACK_TIMEOUT: Duration = Duration::from_secs(20);

/// Shared by every session of one `WaEngine`.
pub(crate) struct Messaging {
    rt: tokio::runtime::Handle,
    clients: Mutex<HashMap<SessionId, Weak<Client>>>,
    inbound: OnceLock<Recipient<InboundMsg>>,
    /// Sends waiting for their server ack, by message id: the nack code, if any.
    acks: Mutex<HashMap<String, oneshot::Sender<Option<String>>>>,
}

impl Messaging {
    pub(crate) fn new(rt: tokio::runtime::Handle) -> Arc<Messaging> {
        Arc::new(Messaging {
            rt,
            clients: Mutex::new(HashMap::new()),
            inbound: OnceLock::new(),
            acks: Mutex::new(HashMap::new()),
        })
    }

    pub(crate) fn attach(&self, sink: Recipient<InboundMsg>) {
        let _ = self.inbound.set(sink);
    }

    /// The newest client of a session (a restart replaces it).
    pub(crate) fn register(&self, session_id: SessionId, client: &Arc<Client>) {
        self.clients
            .lock()
            .insert(session_id, Arc::downgrade(client));
    }

    pub(crate) fn forget(&self, session_id: SessionId) {
        self.clients.lock().remove(&session_id);
    }

    pub(crate) fn messenger(self: &Arc<Self>, session_id: SessionId) -> Option<Arc<dyn Messenger>> {
        let client = self.clients.lock().get(&session_id)?.upgrade()?;
        if !(client.is_connected() && client.is_logged_in()) {
            return None;
        }
        Some(Arc::new(WaMessenger {
            client,
            messaging: self.clone(),
        }))
    }

    /// Called on the client's event thread, in order, for every event.
    pub(crate) fn forward(&self, session_id: SessionId, event: &Event) {
        match event {
            Event::ServerAck(ack) if ack.class.as_deref().is_none_or(|c| c == "message") => {
                if let Some(waiter) = self.acks.lock().remove(&ack.id) {
                    let _ = waiter.send(ack.error.clone());
                }
            }
            Event::Messages(batch) => {
                for m in batch.messages.iter() {
                    // Text only; the phone's protocol messages (key shares,
                    // app state) have none and are no chat messages.
                    let Some(text) = m.message.text_content() else {
                        continue;
                    };
                    let info = &m.info;
                    let at = chrono::DateTime::from_timestamp_millis(Utc::now().timestamp_millis())
                        .unwrap_or_else(Utc::now);
                    let from_me = info.source.is_from_me;
                    let record = MessageRecord {
                        session_id,
                        id: info.id.to_string(),
                        direction: Direction::In,
                        chat_id: info.source.chat.to_non_ad_string(),
                        sender: (!from_me).then(|| info.source.sender.to_non_ad_string()),
                        kind: "chat".to_string(),
                        body: text.to_string(),
                        status: MessageStatus::Received,
                        error: None,
                        from_me,
                        push_name: Some(info.push_name.trim().to_string())
                            .filter(|n| !n.is_empty() && !from_me),
                        idempotency_key: None,
                        context: context_of(&m.message, &info.source.chat.to_non_ad_string()),
                        timestamp: info.timestamp,
                        created_at: at,
                        updated_at: at,
                    };
                    self.send_inbound(session_id, InboundEvent::Message(record));
                }
            }
            // A live offer; one replayed from the offline queue is over.
            Event::IncomingCall(call) if !call.offline => {
                use whatsapp_rust::wacore::types::call::CallAction;
                if let CallAction::Offer {
                    call_id,
                    call_creator,
                    ..
                } = &call.action
                {
                    self.send_inbound(
                        session_id,
                        InboundEvent::Call(IncomingCall {
                            call_id: call_id.clone(),
                            from: call.from.to_string(),
                            creator: call_creator.to_string(),
                        }),
                    );
                }
            }
            Event::Receipt(r) => {
                let status = match r.r#type {
                    ReceiptType::Delivered => MessageStatus::Delivered,
                    ReceiptType::Read | ReceiptType::Played => MessageStatus::Read,
                    _ => return,
                };
                let ids = r.message_ids.iter().map(|m| m.to_string()).collect();
                self.send_inbound(
                    session_id,
                    InboundEvent::Receipt {
                        ids,
                        status,
                        at: r.timestamp,
                    },
                );
            }
            _ => {}
        }
    }

    fn send_inbound(&self, session_id: SessionId, event: InboundEvent) {
        if let Some(sink) = self.inbound.get() {
            sink.do_send(InboundMsg { session_id, event });
        }
    }
}

/// The mentions and quote of an inbound text (an extended text's
/// `ContextInfo`); a plain conversation has none.
fn context_of(message: &wa::Message, chat: &str) -> MessageContext {
    let Some(info) = message
        .extended_text_message
        .as_option()
        .and_then(|e| e.context_info.as_option())
    else {
        return MessageContext::default();
    };
    let non_ad = |j: &str| j.parse::<Jid>().map(|j| j.to_non_ad_string()).ok();
    MessageContext {
        mentions: info
            .mentioned_jid
            .iter()
            .filter_map(|j| non_ad(j))
            .collect(),
        quoted: info.stanza_id.as_ref().map(|id| QuotedMessage {
            id: id.clone(),
            chat_id: info
                .remote_jid
                .as_deref()
                .and_then(non_ad)
                .unwrap_or_else(|| chat.to_string()),
            author: info.participant.as_deref().and_then(non_ad),
            body: info
                .quoted_message
                .as_option()
                .and_then(|q| q.text_content())
                .unwrap_or_default()
                .to_string(),
        }),
    }
}

/// What goes on the wire for a text: a plain conversation, or an extended
/// text carrying its mentions and quote. `me` is the account, the author of
/// a quoted message of its own.
fn text_message(m: &MessageRecord, me: Option<&Jid>) -> wa::Message {
    let context = &m.context;
    if context.is_empty() {
        return wa::Message {
            conversation: Some(m.body.clone()),
            ..Default::default()
        };
    }
    let mut info = wa::ContextInfo {
        mentioned_jid: context.mentions.clone(),
        ..Default::default()
    };
    if let Some(q) = &context.quoted {
        info.stanza_id = Some(q.id.clone());
        info.participant = q
            .author
            .clone()
            .or_else(|| me.map(|j| j.to_non_ad_string()));
        info.quoted_message = MessageField::some(wa::Message {
            conversation: Some(q.body.clone()),
            ..Default::default()
        });
        // Quoting a message of another chat ("reply privately").
        info.remote_jid = (q.chat_id != m.chat_id).then(|| q.chat_id.clone());
    }
    wa::Message {
        extended_text_message: MessageField::some(wa::message::ExtendedTextMessage {
            text: Some(m.body.clone()),
            context_info: MessageField::some(info),
            ..Default::default()
        }),
        ..Default::default()
    }
}

struct WaMessenger {
    client: Arc<Client>,
    messaging: Arc<Messaging>,
}

fn jid(chat: &str) -> Result<Jid, EngineError> {
    chat.parse::<Jid>()
        .map_err(|e| EngineError::Failed(format!("'{chat}' is not a chat: {e}")))
}

/// Run on the engine runtime; a panic there is a failure, not a crash here.
fn on_engine<T: Send + 'static>(
    rt: &tokio::runtime::Handle,
    fut: impl std::future::Future<Output = Result<T, EngineError>> + Send + 'static,
) -> BoxFuture<'static, Result<T, EngineError>> {
    let task = super::on_runtime(rt, fut);
    async move {
        task.await
            .unwrap_or_else(|e| Err(EngineError::Failed(format!("engine task failed: {e}"))))
    }
    .boxed()
}

fn nack_reason(code: &str) -> String {
    match code {
        "404" => "the recipient is not on WhatsApp (server error 404)".to_string(),
        other => format!("WhatsApp refused the message (server error {other})"),
    }
}

impl Messenger for WaMessenger {
    fn send_text(&self, m: &MessageRecord) -> BoxFuture<'static, Result<(), EngineError>> {
        let client = self.client.clone();
        let messaging = self.messaging.clone();
        let message = text_message(m, self.client.pn().as_ref());
        let (chat, id) = (m.chat_id.clone(), m.id.clone());
        on_engine(&self.messaging.rt.clone(), async move {
            let to = jid(&chat)?;
            // In place before the stanza leaves: the ack may beat the return.
            let (tx, rx) = oneshot::channel();
            messaging.acks.lock().insert(id.clone(), tx);
            let sent = client
                .send_message_with_options(
                    to,
                    message,
                    SendOptions::default().with_message_id(id.clone()),
                )
                .await;
            if let Err(e) = sent {
                messaging.acks.lock().remove(&id);
                use whatsapp_rust::send::SendError as E;
                return Err(match e {
                    E::NotLoggedIn | E::Client(_) | E::Iq(_) => {
                        EngineError::NotReady(format!("not sent yet: {e}"))
                    }
                    other => EngineError::Failed(format!("could not send: {other}")),
                });
            }
            match tokio::time::timeout(ACK_TIMEOUT, rx).await {
                Ok(Ok(None)) => Ok(()),
                Ok(Ok(Some(code))) => Err(EngineError::Failed(nack_reason(&code))),
                Ok(Err(_)) | Err(_) => {
                    messaging.acks.lock().remove(&id);
                    Err(EngineError::NotReady(
                        "WhatsApp did not acknowledge the message".into(),
                    ))
                }
            }
        })
    }

    fn composing(&self, chat: String, on: bool) -> BoxFuture<'static, Result<(), EngineError>> {
        let client = self.client.clone();
        on_engine(&self.messaging.rt.clone(), async move {
            let to = jid(&chat)?;
            let chatstate = client.chatstate();
            let res = if on {
                chatstate.send_composing(&to).await
            } else {
                chatstate.send_paused(&to).await
            };
            res.map_err(|e| EngineError::NotReady(format!("presence not sent: {e}")))
        })
    }

    fn reject_call(&self, call: IncomingCall) -> BoxFuture<'static, Result<(), EngineError>> {
        let client = self.client.clone();
        on_engine(&self.messaging.rt.clone(), async move {
            let (from, creator) = (jid(&call.from)?, jid(&call.creator)?);
            client
                .voip()
                .reject_call(&call.call_id, &from, &creator)
                .await
                .map_err(|e| EngineError::NotReady(format!("the call was not rejected: {e}")))
        })
    }

    fn is_on_whatsapp(
        &self,
        phone: String,
    ) -> BoxFuture<'static, Result<Option<String>, EngineError>> {
        let client = self.client.clone();
        on_engine(&self.messaging.rt.clone(), async move {
            let asked = Jid::pn(phone.as_str());
            let results = client
                .contacts()
                .is_on_whatsapp(std::slice::from_ref(&asked))
                .await
                .map_err(|e| EngineError::Failed(format!("the number check failed: {e}")))?;
            Ok(results
                .into_iter()
                .find(|r| {
                    r.is_registered
                        && (r.jid.user == asked.user
                            || r.pn_jid.as_ref().is_some_and(|p| p.user == asked.user))
                })
                .map(|r| r.pn_jid.unwrap_or(r.jid).to_non_ad_string()))
        })
    }
}
