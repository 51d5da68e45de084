//! The messages of the message and contact routes, handled by the
//! `OutboundActor`: roles and scopes first, then the rules, then the store.

use actix::prelude::*;
use chrono::Utc;

use super::*;
use crate::error::WebError;
use crate::model::{Caller, Role};
use crate::ports::StoreError;

/// Longest `Idempotency-Key` accepted.
pub const MAX_IDEMPOTENCY_KEY: usize = 200;

fn unavailable(err: StoreError) -> WebError {
    log::error!("messages: store: {err}");
    WebError::Unavailable("The database is unavailable; try again later".to_string())
}

type Reply<T> = ResponseActFuture<OutboundActor, Result<T, WebError>>;

fn done<T: 'static>(res: Result<T, WebError>) -> Reply<T> {
    Box::pin(fut::ready(res))
}

/// `POST /api/sessions/:id/messages/send-text`. The answer is the stored
/// message (the first one when the idempotency key was used before).
#[derive(Message)]
#[rtype(result = "Result<MessageRecord, WebError>")]
pub struct SendText {
    pub caller: Caller,
    pub session: String,
    pub chat_id: String,
    pub text: String,
    /// Contacts the text mentions (raw chat ids, checked here).
    pub mentions: Vec<String>,
    /// A stored message of this session the text replies to.
    pub quoted_message_id: Option<String>,
    pub idempotency_key: Option<String>,
}

#[derive(Message)]
#[rtype(result = "Result<MessageRecord, WebError>")]
pub struct GetMessage {
    pub caller: Caller,
    pub session: String,
    pub id: String,
}

#[derive(Message)]
#[rtype(result = "Result<Vec<MessageRecord>, WebError>")]
pub struct ListMessages {
    pub caller: Caller,
    pub session: String,
    /// Raw filters, checked here.
    pub chat_id: Option<String>,
    pub direction: Option<String>,
    pub limit: Option<usize>,
    pub before: Option<String>,
}

/// `DELETE /api/sessions/:id/messages/:messageId`: cancel a pending message.
#[derive(Message)]
#[rtype(result = "Result<(), WebError>")]
pub struct CancelMessage {
    pub caller: Caller,
    pub session: String,
    pub id: String,
}

/// `GET /api/sessions/:id/contacts/check/:number`.
#[derive(Message)]
#[rtype(result = "Result<NumberCheck, WebError>")]
pub struct CheckNumber {
    pub caller: Caller,
    pub session: String,
    pub number: String,
}

#[derive(Clone, Debug, PartialEq)]
pub struct NumberCheck {
    /// The digits asked about.
    pub number: String,
    /// The account's JID when it exists.
    pub jid: Option<String>,
}

pub const DEFAULT_LIST_LIMIT: usize = 50;
pub const MAX_LIST_LIMIT: usize = 500;

fn validate_text(text: &str) -> Result<(), WebError> {
    let n = text.chars().count();
    if n == 0 || n > MAX_TEXT_CHARS || text.trim().is_empty() {
        return Err(WebError::Validation(format!(
            "text must be 1–{MAX_TEXT_CHARS} characters and not only spaces"
        )));
    }
    Ok(())
}

/// Mentions as JIDs: contacts only (a phone number or a LID), each once.
fn parse_mentions(raw: &[String]) -> Result<Vec<String>, WebError> {
    if raw.len() > MAX_MENTIONS {
        return Err(WebError::Validation(format!(
            "mentions may name at most {MAX_MENTIONS} contacts"
        )));
    }
    let mut jids: Vec<String> = Vec::with_capacity(raw.len());
    for (i, m) in raw.iter().enumerate() {
        let jid = parse_chat_id(m)
            .ok()
            .filter(|j| !j.ends_with("@g.us"))
            .ok_or_else(|| {
                WebError::Validation(format!(
                    "mentions[{i}] '{m}' is not a contact: use <digits>@c.us, <digits>@lid or \
                     the phone number's digits"
                ))
            })?;
        if !jids.contains(&jid) {
            jids.push(jid);
        }
    }
    Ok(jids)
}

fn validate_idempotency_key(key: &str) -> Result<(), WebError> {
    if key.is_empty()
        || key.len() > MAX_IDEMPOTENCY_KEY
        || !key.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(WebError::Validation(format!(
            "Idempotency-Key must be 1–{MAX_IDEMPOTENCY_KEY} visible ASCII characters"
        )));
    }
    Ok(())
}

/// The message an idempotency key was first answered with, if any.
async fn first_answer(
    store: &dyn MessageStore,
    session_id: crate::model::SessionId,
    key: Option<String>,
) -> Result<Option<MessageRecord>, WebError> {
    match key {
        Some(key) => store
            .by_idempotency_key(session_id, key)
            .await
            .map_err(unavailable),
        None => Ok(None),
    }
}

impl Handler<SendText> for OutboundActor {
    type Result = Reply<MessageRecord>;

    fn handle(&mut self, msg: SendText, _: &mut Context<Self>) -> Self::Result {
        let checked = (|| {
            msg.caller.require(Role::Operator)?;
            let view = self.registry.resolve_for(&msg.caller, &msg.session)?;
            let chat_id = parse_chat_id(&msg.chat_id).map_err(WebError::InvalidChatId)?;
            validate_text(&msg.text)?;
            let mentions = parse_mentions(&msg.mentions)?;
            if let Some(key) = &msg.idempotency_key {
                validate_idempotency_key(key)?;
            }
            Ok::<_, WebError>((view, chat_id, mentions))
        })();
        let (view, chat_id, mentions) = match checked {
            Ok(v) => v,
            Err(e) => return done(Err(e)),
        };
        let session_id = view.record.id;
        let refusal = accepts_messages(&view).err();
        let now = chrono::DateTime::from_timestamp_millis(Utc::now().timestamp_millis())
            .unwrap_or_else(Utc::now);
        let key = msg.idempotency_key;
        let mut record = MessageRecord {
            session_id,
            id: new_message_id(),
            direction: Direction::Out,
            chat_id,
            sender: None,
            kind: "chat".to_string(),
            body: msg.text,
            status: MessageStatus::Pending,
            error: None,
            from_me: true,
            push_name: None,
            idempotency_key: key.clone(),
            context: MessageContext {
                mentions,
                quoted: None,
            },
            timestamp: now,
            created_at: now,
            updated_at: now,
        };
        let quoted_id = msg.quoted_message_id;
        let store = self.store.clone();
        Box::pin(
            async move {
                // A retry of a request answered before gets that answer,
                // whatever the session's state (or the quoted message) now.
                if let Some(why) = refusal {
                    if let Some(m) = first_answer(&*store, session_id, key).await? {
                        return Ok((m, false));
                    }
                    return Err(WebError::SessionNotReady(why));
                }
                if let Some(quoted_id) = quoted_id {
                    let quoted = store
                        .get(session_id, quoted_id.clone())
                        .await
                        .map_err(unavailable)?;
                    match quoted {
                        Some(q) => record.context.quoted = Some(QuotedMessage::of(&q)),
                        None => {
                            if let Some(m) = first_answer(&*store, session_id, key).await? {
                                return Ok((m, false));
                            }
                            return Err(WebError::Validation(format!(
                                "quotedMessageId '{quoted_id}' is not a message of this session"
                            )));
                        }
                    }
                }
                match store.accept(record).await.map_err(unavailable)? {
                    Accepted::New(m) => Ok((m, true)),
                    Accepted::Replayed(m) => Ok((m, false)),
                }
            }
            .into_actor(self)
            .map(move |res, act, _| {
                let (m, new) = res?;
                if new {
                    act.wake(session_id);
                }
                Ok(m)
            }),
        )
    }
}

impl Handler<GetMessage> for OutboundActor {
    type Result = Reply<MessageRecord>;

    fn handle(&mut self, msg: GetMessage, _: &mut Context<Self>) -> Self::Result {
        let view = match self.registry.resolve_for(&msg.caller, &msg.session) {
            Ok(v) => v,
            Err(e) => return done(Err(e)),
        };
        let get = self.store.get(view.record.id, msg.id.clone());
        let id = msg.id;
        Box::pin(
            async move {
                get.await
                    .map_err(unavailable)?
                    .ok_or(WebError::MessageNotFound(id))
            }
            .into_actor(self),
        )
    }
}

impl Handler<ListMessages> for OutboundActor {
    type Result = Reply<Vec<MessageRecord>>;

    fn handle(&mut self, msg: ListMessages, _: &mut Context<Self>) -> Self::Result {
        let checked = (|| {
            let view = self.registry.resolve_for(&msg.caller, &msg.session)?;
            let chat_id = msg
                .chat_id
                .as_deref()
                .map(parse_chat_id)
                .transpose()
                .map_err(WebError::InvalidChatId)?;
            let direction = msg
                .direction
                .as_deref()
                .map(str::parse::<Direction>)
                .transpose()
                .map_err(WebError::Validation)?;
            let limit = msg.limit.unwrap_or(DEFAULT_LIST_LIMIT);
            if !(1..=MAX_LIST_LIMIT).contains(&limit) {
                return Err(WebError::Validation(format!(
                    "limit must be 1–{MAX_LIST_LIMIT}"
                )));
            }
            Ok((
                view.record.id,
                MessageQuery {
                    chat_id,
                    direction,
                    limit,
                    before: msg.before.clone(),
                },
            ))
        })();
        let (id, query) = match checked {
            Ok(v) => v,
            Err(e) => return done(Err(e)),
        };
        let list = self.store.list(id, query);
        Box::pin(async move { list.await.map_err(unavailable) }.into_actor(self))
    }
}

impl Handler<CancelMessage> for OutboundActor {
    type Result = Reply<()>;

    fn handle(&mut self, msg: CancelMessage, _: &mut Context<Self>) -> Self::Result {
        let view = match msg
            .caller
            .require(Role::Operator)
            .and_then(|()| self.registry.resolve_for(&msg.caller, &msg.session))
        {
            Ok(v) => v,
            Err(e) => return done(Err(e)),
        };
        let session_id = view.record.id;
        let in_flight = self
            .lanes
            .get(&session_id)
            .is_some_and(|l| l.is_in_flight(&msg.id));
        if in_flight {
            return done(Err(WebError::MessageNotPending(format!(
                "Message '{}' is being sent now; it can no longer be cancelled",
                msg.id
            ))));
        }
        // Out of the lane's window first, so that it is never sent; the
        // store then says whether it was still pending.
        if let Some(lane) = self.lanes.get_mut(&session_id) {
            lane.window.retain(|m| m.id != msg.id);
        }
        let cancel = self.store.cancel(session_id, msg.id.clone());
        let id = msg.id;
        Box::pin(
            async move {
                match cancel.await.map_err(unavailable)? {
                    Cancelled::Deleted => Ok(()),
                    Cancelled::NotFound => Err(WebError::MessageNotFound(id)),
                    Cancelled::NotPending(status) => Err(WebError::MessageNotPending(format!(
                        "Message '{id}' is {status}: only a pending message can be cancelled"
                    ))),
                }
            }
            .into_actor(self),
        )
    }
}

impl Handler<CheckNumber> for OutboundActor {
    type Result = Reply<NumberCheck>;

    fn handle(&mut self, msg: CheckNumber, _: &mut Context<Self>) -> Self::Result {
        let checked = (|| {
            msg.caller.require(Role::Operator)?;
            let view = self.registry.resolve_for(&msg.caller, &msg.session)?;
            let number = phone_digits(&msg.number).map_err(WebError::Validation)?;
            let r = &view.record;
            let messenger = (r.status == SessionStatus::Ready)
                .then(|| self.engine.messenger(r.id))
                .flatten()
                .ok_or_else(|| {
                    WebError::SessionNotReady(format!(
                        "Session '{}' is {}; checking a number needs it ready",
                        r.name, r.status
                    ))
                })?;
            Ok((number, messenger))
        })();
        let (number, messenger) = match checked {
            Ok(v) => v,
            Err(e) => return done(Err(e)),
        };
        let timeout = self.options.engine_timeout;
        Box::pin(
            async move {
                let asked = tokio::time::timeout(timeout, messenger.is_on_whatsapp(number.clone()))
                    .await
                    .map_err(|_| WebError::Engine("WhatsApp did not answer in time".into()))?;
                match asked {
                    Ok(jid) => Ok(NumberCheck { number, jid }),
                    Err(EngineError::NotReady(m)) => Err(WebError::SessionNotReady(m)),
                    Err(EngineError::Failed(m)) => Err(WebError::Engine(m)),
                }
            }
            .into_actor(self),
        )
    }
}
