//! Messages (migrations/*/2026-12-02-000100_messages): the outbound queue,
//! inbound messages and receipts. `DbMessageStore` implements the actors'
//! `MessageStore` port.
//!
//! - Bodies are sealed with the master key (`SecretBox`), bound to
//!   (session, message id); the database never holds a text in the clear.
//!   The event of a message carries the same sealed bytes (`sealed_body`),
//!   opened only when a delivery or a stream renders it ([`open_event`]).
//! - Every write that a receiver should hear about appends its event and its
//!   outbox rows in the same transaction as the message row
//!   ([`append_message_event`]), so the outbox delivers it at least once.
//! - Message events share the session's one `seq`: the session row counts
//!   them in `message_events` (the `SessionActor` owns `event_seq`), and a
//!   stored event's seq is `event_seq + message_events` at the time it is
//!   written, under the session row's lock (see `records::save_session_in`).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use uuid::Uuid;
use wasup_actors::events::SessionEvent;
use wasup_actors::events::{session_event::Data, MessageAck, MessageData, MessageFailed};
use wasup_actors::model::SessionId;
use wasup_actors::outbound::ports::StoreFuture;
use wasup_actors::outbound::{
    openwa_id, Accepted, Cancelled, Direction, MessageQuery, MessageRecord, MessageStatus,
    MessageStore, StatusUpdate,
};
use wasup_actors::ports::{InboundEvent, InboundMsg};
use wasup_actors::webhook::WorkSignal;

use super::records::{from_ms, insert_events, to_ms};
use super::schema::{messages, sessions};
use super::{Db, DbConn, DbError};
use crate::crypto::SecretBox;
use crate::events_hub::EventHub;

mod context;

fn body_aad(session_id: &str, id: &str) -> Vec<u8> {
    format!("wasup/message/{session_id}/{id}/body").into_bytes()
}

#[derive(Debug, Queryable, Selectable, Insertable)]
#[diesel(table_name = messages)]
struct MessageRow {
    session_id: String,
    id: String,
    direction: String,
    chat_id: String,
    sender: Option<String>,
    kind: String,
    body: Vec<u8>,
    status: String,
    error: Option<String>,
    from_me: i64,
    push_name: Option<String>,
    idempotency_key: Option<String>,
    wa_timestamp: i64,
    created_at: i64,
    updated_at: i64,
    /// Mentions and the quote, sealed (`context`); NULL when none.
    context: Option<Vec<u8>>,
}

impl MessageRow {
    fn seal(m: &MessageRecord, boxed: &SecretBox) -> MessageRow {
        let session_id = m.session_id.to_string();
        MessageRow {
            body: boxed.seal(&body_aad(&session_id, &m.id), m.body.as_bytes()),
            context: context::seal(boxed, &session_id, &m.id, &m.context),
            session_id,
            id: m.id.clone(),
            direction: m.direction.as_str().to_string(),
            chat_id: m.chat_id.clone(),
            sender: m.sender.clone(),
            kind: m.kind.clone(),
            status: m.status.as_str().to_string(),
            error: m.error.clone(),
            from_me: i64::from(m.from_me),
            push_name: m.push_name.clone(),
            idempotency_key: m.idempotency_key.clone(),
            wa_timestamp: to_ms(m.timestamp),
            created_at: to_ms(m.created_at),
            updated_at: to_ms(m.updated_at),
        }
    }

    fn open(self, boxed: &SecretBox) -> Result<MessageRecord, DbError> {
        let corrupt = |what: &str, e: &dyn std::fmt::Display| {
            DbError::Corrupt(format!(
                "message {}/{}: {what}: {e}",
                self.session_id, self.id
            ))
        };
        let body = boxed
            .open(&body_aad(&self.session_id, &self.id), &self.body)
            .map_err(|e| corrupt("body", &e))?;
        let context = context::open(boxed, &self.session_id, &self.id, self.context.as_deref())
            .map_err(|e| corrupt("context", &e))?;
        Ok(MessageRecord {
            context,
            session_id: Uuid::parse_str(&self.session_id).map_err(|e| corrupt("session", &e))?,
            direction: self
                .direction
                .parse::<Direction>()
                .map_err(|e| corrupt("direction", &e))?,
            status: self
                .status
                .parse::<MessageStatus>()
                .map_err(|e| corrupt("status", &e))?,
            body: String::from_utf8(body).map_err(|e| corrupt("body", &e))?,
            timestamp: from_ms(self.wa_timestamp)?,
            created_at: from_ms(self.created_at)?,
            updated_at: from_ms(self.updated_at)?,
            from_me: self.from_me != 0,
            id: self.id,
            chat_id: self.chat_id,
            sender: self.sender,
            kind: self.kind,
            error: self.error,
            push_name: self.push_name,
            idempotency_key: self.idempotency_key,
        })
    }
}

// ------------------------------------------------------------ events

/// Append one message event to a session's log with the session's next seq
/// and fan it out to the session's webhooks that want it, inside the
/// caller's transaction. `data` gets the session's name and number through
/// `fill` (the number is needed for `to`/`from`). `NotFound` when the
/// session is gone.
pub(crate) fn append_message_event(
    conn: &mut DbConn,
    session_id: SessionId,
    at: DateTime<Utc>,
    fill: impl FnOnce(Option<&str>) -> Data,
) -> Result<SessionEvent, DbError> {
    let sid = session_id.to_string();
    // The update first: it takes the row lock (the write lock on SQLite)
    // that also serializes `save_session_in`, so the seq below is unique.
    let updated = diesel::update(sessions::table.find(&sid))
        .set(sessions::message_events.eq(sessions::message_events + 1))
        .execute(conn)?;
    if updated == 0 {
        return Err(DbError::Query(diesel::result::Error::NotFound));
    }
    let (name, phone, event_seq, message_events): (String, Option<String>, i64, i64) =
        sessions::table
            .find(&sid)
            .select((
                sessions::name,
                sessions::phone,
                sessions::event_seq,
                sessions::message_events,
            ))
            .first(conn)?;
    let seq = u64::try_from(event_seq + message_events)
        .map_err(|e| DbError::Corrupt(format!("session {sid}: seq: {e}")))?;
    let event = SessionEvent {
        id: format!("evt_{}", Uuid::now_v7().simple()),
        session_id: sid,
        session_name: name,
        seq,
        timestamp_ms: to_ms(at),
        data: Some(fill(phone.as_deref())),
    };
    let events = std::slice::from_ref(&event);
    insert_events(conn, session_id, events)?;
    super::webhooks::insert_deliveries(conn, session_id, events)?;
    Ok(event)
}

/// How many message events a session has written (the shift of the seqs the
/// `SessionActor` hands in).
pub(crate) fn message_event_count(
    conn: &mut DbConn,
    session_id: SessionId,
) -> Result<u64, DbError> {
    let n: i64 = sessions::table
        .find(session_id.to_string())
        .select(sessions::message_events)
        .first(conn)?;
    Ok(n.max(0) as u64)
}

/// Fill `body` of a message event from its sealed copy (and drop the sealed
/// bytes), for a delivery or a stream. Other events are left as they are. A
/// body that does not open (another master key) is delivered empty.
pub fn open_event(event: &mut SessionEvent, boxed: &SecretBox) {
    if let Some(Data::MessageReceived(m) | Data::MessageSent(m)) = &mut event.data {
        if m.sealed_body.is_empty() {
            return;
        }
        let sealed = std::mem::take(&mut m.sealed_body);
        match boxed.open(&body_aad(&event.session_id, &m.id), &sealed) {
            Ok(body) => m.body = String::from_utf8_lossy(&body).into_owned(),
            Err(e) => log::warn!(
                "event {}: the message body does not open ({e}); delivered without it",
                event.id
            ),
        }
    }
}

/// The `data` of a `message.received` / `message.sent` event.
fn message_data(m: &MessageRecord, sealed_body: Vec<u8>, me: Option<&str>) -> MessageData {
    let me = me.map(|p| format!("{p}@c.us")).unwrap_or_default();
    let chat = openwa_id(&m.chat_id);
    let (from, to) = if m.from_me {
        (me, chat.clone())
    } else if m.is_group() {
        (chat.clone(), me)
    } else {
        (
            m.sender.as_deref().map(openwa_id).unwrap_or(chat.clone()),
            me,
        )
    };
    MessageData {
        id: m.id.clone(),
        from,
        to,
        chat_id: chat,
        sealed_body,
        r#type: m.kind.clone(),
        timestamp: m.timestamp.timestamp(),
        from_me: m.from_me,
        is_group: m.is_group(),
        author: m
            .is_group()
            .then(|| m.sender.as_deref().map(openwa_id))
            .flatten(),
        push_name: m.push_name.clone(),
        body: String::new(),
        mentioned_ids: m.context.mentioned_ids(),
        quoted_message_id: m.context.quoted_id(),
    }
}

// ------------------------------------------------------------ statements

/// Take the session row's lock before anything is read: on SQLite a
/// transaction that reads first and writes later fails with "database is
/// locked" when another writer committed in between (the busy timeout does
/// not cover that upgrade); on PostgreSQL it serializes the session's
/// message writes, so the read-then-update below cannot race. False when the
/// session is gone.
fn lock_session(conn: &mut DbConn, session_id: SessionId) -> Result<bool, DbError> {
    let n = diesel::update(sessions::table.find(session_id.to_string()))
        .set(sessions::message_events.eq(sessions::message_events))
        .execute(conn)?;
    Ok(n > 0)
}

/// `lock_session`, then (cluster mode) the check that this node owns the
/// session: only its owner moves its messages on. False when it is gone.
fn lock_owned_session(conn: &mut DbConn, db: &Db, session_id: SessionId) -> Result<bool, DbError> {
    if !lock_session(conn, session_id)? {
        return Ok(false);
    }
    db.check_owner(conn, &session_id.to_string())?;
    Ok(true)
}

fn load(conn: &mut DbConn, session_id: &str, id: &str) -> Result<Option<MessageRow>, DbError> {
    Ok(messages::table
        .find((session_id, id))
        .select(MessageRow::as_select())
        .first(conn)
        .optional()?)
}

fn by_key(conn: &mut DbConn, session_id: &str, key: &str) -> Result<Option<MessageRow>, DbError> {
    Ok(messages::table
        .filter(messages::session_id.eq(session_id))
        .filter(messages::idempotency_key.eq(key))
        .select(MessageRow::as_select())
        .first(conn)
        .optional()?)
}

/// Store one accepted message. Runs as one job of a group
/// (`Db::write_grouped`, which gives each job its own savepoint); the insert
/// has a savepoint of its own too, so that after a unique violation the
/// first answer can still be read (PostgreSQL refuses every statement after
/// an error until its savepoint is rolled back).
fn accept(conn: &mut DbConn, boxed: &SecretBox, m: &MessageRecord) -> Result<Accepted, DbError> {
    let sid = m.session_id.to_string();
    if let Some(key) = &m.idempotency_key {
        if let Some(first) = by_key(conn, &sid, key)? {
            return Ok(Accepted::Replayed(first.open(boxed)?));
        }
    }
    let row = MessageRow::seal(m, boxed);
    match conn.transaction(|c| {
        diesel::insert_into(messages::table)
            .values(&row)
            .execute(c)
            .map_err(DbError::from)
    }) {
        Ok(_) => Ok(Accepted::New(m.clone())),
        // Two requests with one key at once: the other one won.
        Err(e) if e.is_unique_violation() && m.idempotency_key.is_some() => {
            let key = m.idempotency_key.as_deref().unwrap_or_default();
            match by_key(conn, &sid, key)? {
                Some(first) => Ok(Accepted::Replayed(first.open(boxed)?)),
                None => Err(e),
            }
        }
        Err(e) => Err(e),
    }
}

fn list(
    conn: &mut DbConn,
    boxed: &SecretBox,
    session_id: SessionId,
    q: &MessageQuery,
) -> Result<Vec<MessageRecord>, DbError> {
    let sid = session_id.to_string();
    let mut query = messages::table
        .filter(messages::session_id.eq(&sid))
        .select(MessageRow::as_select())
        .into_boxed();
    if let Some(chat) = &q.chat_id {
        query = query.filter(messages::chat_id.eq(chat.clone()));
    }
    if let Some(d) = q.direction {
        query = query.filter(messages::direction.eq(d.as_str()));
    }
    if let Some(before) = &q.before {
        let Some(anchor) = load(conn, &sid, before)? else {
            return Ok(Vec::new());
        };
        query = query.filter(
            messages::created_at
                .lt(anchor.created_at)
                .or(messages::created_at
                    .eq(anchor.created_at)
                    .and(messages::id.lt(anchor.id))),
        );
    }
    let limit = i64::try_from(q.limit).unwrap_or(i64::MAX);
    query
        .order((messages::created_at.desc(), messages::id.desc()))
        .limit(limit)
        .load(conn)?
        .into_iter()
        .map(|r| r.open(boxed))
        .collect()
}

fn cancel(conn: &mut DbConn, session_id: SessionId, id: &str) -> Result<Cancelled, DbError> {
    let sid = session_id.to_string();
    let deleted = diesel::delete(
        messages::table
            .find((&sid, id))
            .filter(messages::status.eq(MessageStatus::Pending.as_str()))
            .filter(messages::direction.eq(Direction::Out.as_str())),
    )
    .execute(conn)?;
    if deleted > 0 {
        return Ok(Cancelled::Deleted);
    }
    let status: Option<String> = messages::table
        .find((&sid, id))
        .select(messages::status)
        .first(conn)
        .optional()?;
    Ok(match status {
        None => Cancelled::NotFound,
        Some(s) => Cancelled::NotPending(
            s.parse()
                .map_err(|e: String| DbError::Corrupt(format!("message {sid}/{id}: {e}")))?,
        ),
    })
}

/// The next pending outbound messages of one session, in acceptance order.
/// The one query that picks the queue head (a cluster of gateways would add
/// `FOR UPDATE SKIP LOCKED` here on PostgreSQL).
pub(crate) fn next_pending(
    conn: &mut DbConn,
    boxed: &SecretBox,
    session_id: SessionId,
    limit: usize,
) -> Result<Vec<MessageRecord>, DbError> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    messages::table
        .filter(messages::status.eq(MessageStatus::Pending.as_str()))
        .filter(messages::session_id.eq(session_id.to_string()))
        .filter(messages::direction.eq(Direction::Out.as_str()))
        .order((messages::created_at.asc(), messages::id.asc()))
        .limit(limit)
        .select(MessageRow::as_select())
        .load(conn)?
        .into_iter()
        .map(|r| r.open(boxed))
        .collect()
}

fn sessions_with_pending(conn: &mut DbConn) -> Result<Vec<SessionId>, DbError> {
    let ids: Vec<String> = messages::table
        .filter(messages::status.eq(MessageStatus::Pending.as_str()))
        .select(messages::session_id)
        .distinct()
        .load(conn)?;
    ids.iter()
        .map(|s| {
            Uuid::parse_str(s).map_err(|e| DbError::Corrupt(format!("message session {s}: {e}")))
        })
        .collect()
}

/// Move one outbound message forward and write its events. A receipt may
/// skip a step (a "read" for a message still `pending` here, because the
/// server ack raced it): the steps skipped are emitted too, so a receiver
/// always hears `sent`, `delivered`, `read` in that order.
fn set_status(
    conn: &mut DbConn,
    session_id: SessionId,
    id: &str,
    update: &StatusUpdate,
) -> Result<Vec<SessionEvent>, DbError> {
    let sid = session_id.to_string();
    let row: Option<(String, String, String)> = messages::table
        .find((&sid, id))
        .select((messages::status, messages::direction, messages::chat_id))
        .first(conn)
        .optional()?;
    let Some((status, direction, chat_id)) = row else {
        return Ok(Vec::new());
    };
    if direction != Direction::Out.as_str() {
        return Ok(Vec::new());
    }
    let current: MessageStatus = status
        .parse()
        .map_err(|e: String| DbError::Corrupt(format!("message {sid}/{id}: {e}")))?;
    if !current.may_become(update.status) {
        return Ok(Vec::new());
    }
    let changed = diesel::update(
        messages::table
            .find((&sid, id))
            .filter(messages::status.eq(&status)),
    )
    .set((
        messages::status.eq(update.status.as_str()),
        messages::error.eq(update.error.as_deref()),
        messages::updated_at.eq(to_ms(update.at)),
    ))
    .execute(conn)?;
    if changed == 0 {
        return Ok(Vec::new());
    }
    let chat = openwa_id(&chat_id);
    let mut events = Vec::new();
    if update.status == MessageStatus::Failed {
        let error = update.error.clone().unwrap_or_default();
        events.push(append_message_event(conn, session_id, update.at, |_| {
            Data::MessageFailed(MessageFailed {
                message_id: id.to_string(),
                chat_id: chat.clone(),
                error,
                at_ms: to_ms(update.at),
            })
        })?);
        return Ok(events);
    }
    use MessageStatus as S;
    for step in [S::Sent, S::Delivered, S::Read] {
        if step <= current || step > update.status {
            continue;
        }
        events.push(append_message_event(conn, session_id, update.at, |_| {
            Data::MessageAck(MessageAck {
                message_id: id.to_string(),
                chat_id: chat.clone(),
                status: step.as_str().to_string(),
                at_ms: to_ms(update.at),
            })
        })?);
    }
    Ok(events)
}

/// Store an inbound message (or the account's own, sent from its phone) once,
/// with its event. None when it was stored before.
fn store_inbound(
    conn: &mut DbConn,
    boxed: &SecretBox,
    m: &MessageRecord,
) -> Result<Option<SessionEvent>, DbError> {
    let sid = m.session_id.to_string();
    // Looked up rather than caught: a failed insert would abort the whole
    // transaction on PostgreSQL. Inbound writes are serial per process.
    if load(conn, &sid, &m.id)?.is_some() {
        return Ok(None);
    }
    let row = MessageRow::seal(m, boxed);
    diesel::insert_into(messages::table)
        .values(&row)
        .execute(conn)?;
    let sealed = row.body;
    let event = append_message_event(conn, m.session_id, m.created_at, |me| {
        let data = message_data(m, sealed, me);
        if m.from_me {
            Data::MessageSent(data)
        } else {
            Data::MessageReceived(data)
        }
    })?;
    Ok(Some(event))
}

/// One inbound message or receipt, as `store_inbound` / `receipt` apply it.
fn record_one(
    conn: &mut DbConn,
    db: &Db,
    boxed: &SecretBox,
    msg: &InboundMsg,
) -> Result<Vec<SessionEvent>, DbError> {
    if !lock_owned_session(conn, db, msg.session_id)? {
        return Ok(Vec::new());
    }
    match &msg.event {
        InboundEvent::Message(m) => Ok(store_inbound(conn, boxed, m)?.into_iter().collect()),
        InboundEvent::Receipt { ids, status, at } => {
            let update = StatusUpdate {
                status: *status,
                error: None,
                at: *at,
            };
            Ok(receipt(conn, msg.session_id, ids, &update)?.1)
        }
        InboundEvent::Call(_) => Ok(Vec::new()),
    }
}

/// A receipt for several messages: how many moved, and their events.
fn receipt(
    conn: &mut DbConn,
    session_id: SessionId,
    ids: &[String],
    update: &StatusUpdate,
) -> Result<(usize, Vec<SessionEvent>), DbError> {
    let mut changed = 0;
    let mut events = Vec::new();
    for id in ids {
        let e = set_status(conn, session_id, id, update)?;
        changed += usize::from(!e.is_empty());
        events.extend(e);
    }
    Ok((changed, events))
}

/// Messages older than `before`, except those still waiting to be sent.
fn prune(conn: &mut DbConn, before: DateTime<Utc>) -> Result<u64, DbError> {
    let n = diesel::delete(
        messages::table
            .filter(messages::created_at.lt(to_ms(before)))
            .filter(messages::status.ne(MessageStatus::Pending.as_str())),
    )
    .execute(conn)?;
    Ok(n as u64)
}

// ------------------------------------------------------------ the port

/// The `MessageStore` port over the database. Cheap to clone.
#[derive(Clone)]
pub struct DbMessageStore {
    db: Db,
    secrets: Arc<SecretBox>,
    /// Told after a commit that wrote events (and so maybe outbox rows).
    outbox: Option<Arc<WorkSignal>>,
    /// Told the events of every commit, for the live event stream.
    hub: Option<Arc<EventHub>>,
}

impl DbMessageStore {
    pub fn new(db: Db, secrets: Arc<SecretBox>) -> DbMessageStore {
        DbMessageStore {
            db,
            secrets,
            outbox: None,
            hub: None,
        }
    }

    pub fn with_outbox_signal(mut self, signal: Arc<WorkSignal>) -> DbMessageStore {
        self.outbox = Some(signal);
        self
    }

    pub fn with_event_hub(mut self, hub: Arc<EventHub>) -> DbMessageStore {
        self.hub = Some(hub);
        self
    }

    fn call<T, F>(&self, work: F) -> StoreFuture<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut DbConn, &SecretBox) -> Result<T, DbError> + Send + 'static,
    {
        let db = self.db.clone();
        let secrets = self.secrets.clone();
        Box::pin(async move { Ok(db.run(move |c| work(c, &secrets)).await?) })
    }

    /// One transaction that writes events; after the commit the outbox is
    /// woken and the events (bodies opened) go to the live stream.
    fn write<T, F>(&self, work: F) -> StoreFuture<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut DbConn, &SecretBox) -> Result<(T, Vec<SessionEvent>), DbError>
            + Send
            + 'static,
    {
        let db = self.db.clone();
        let secrets = self.secrets.clone();
        let outbox = self.outbox.clone();
        let hub = self.hub.clone();
        Box::pin(async move {
            let boxed = secrets.clone();
            let (value, events) = db.transaction(move |c| work(c, &boxed)).await?;
            published(events, outbox.as_deref(), hub.as_deref(), &secrets);
            Ok(value)
        })
    }
}

/// After a commit that wrote events: wake the outbox and show the events
/// (bodies opened) on the live stream.
fn published(
    mut events: Vec<SessionEvent>,
    outbox: Option<&WorkSignal>,
    hub: Option<&EventHub>,
    secrets: &SecretBox,
) {
    if events.is_empty() {
        return;
    }
    if let Some(signal) = outbox {
        signal.notify();
    }
    if let Some(hub) = hub {
        for e in &mut events {
            open_event(e, secrets);
        }
        hub.publish(&events);
    }
}

impl MessageStore for DbMessageStore {
    fn accept(&self, message: MessageRecord) -> StoreFuture<Accepted> {
        // Committed with whatever else is being written (`Db::write_grouped`):
        // a 201 still waits for its row to be durable.
        let (db, secrets) = (self.db.clone(), self.secrets.clone());
        Box::pin(async move {
            let order = message.session_id.to_string();
            Ok(db
                .write_grouped(order, move |c| accept(c, &secrets, &message))
                .await?)
        })
    }

    fn by_idempotency_key(
        &self,
        session_id: SessionId,
        key: String,
    ) -> StoreFuture<Option<MessageRecord>> {
        self.call(move |c, boxed| {
            by_key(c, &session_id.to_string(), &key)?
                .map(|r| r.open(boxed))
                .transpose()
        })
    }

    fn get(&self, session_id: SessionId, id: String) -> StoreFuture<Option<MessageRecord>> {
        self.call(move |c, boxed| {
            load(c, &session_id.to_string(), &id)?
                .map(|r| r.open(boxed))
                .transpose()
        })
    }

    fn list(&self, session_id: SessionId, query: MessageQuery) -> StoreFuture<Vec<MessageRecord>> {
        self.call(move |c, boxed| list(c, boxed, session_id, &query))
    }

    fn cancel(&self, session_id: SessionId, id: String) -> StoreFuture<Cancelled> {
        self.call(move |c, _| cancel(c, session_id, &id))
    }

    fn pending(&self, session_id: SessionId, limit: usize) -> StoreFuture<Vec<MessageRecord>> {
        self.call(move |c, boxed| next_pending(c, boxed, session_id, limit))
    }

    fn sessions_with_pending(&self) -> StoreFuture<Vec<SessionId>> {
        self.call(|c, _| sessions_with_pending(c))
    }

    fn set_status(
        &self,
        session_id: SessionId,
        id: String,
        update: StatusUpdate,
    ) -> StoreFuture<bool> {
        let store = self.clone();
        Box::pin(async move {
            // Grouped, like accepts: the lane hears "sent" once it is stored.
            let fenced = store.db.clone();
            let events = store
                .db
                .write_grouped(session_id.to_string(), move |c| {
                    if !lock_owned_session(c, &fenced, session_id)? {
                        return Ok(Vec::new());
                    }
                    set_status(c, session_id, &id, &update)
                })
                .await?;
            let moved = !events.is_empty();
            published(
                events,
                store.outbox.as_deref(),
                store.hub.as_deref(),
                &store.secrets,
            );
            Ok(moved)
        })
    }

    fn receipt(
        &self,
        session_id: SessionId,
        ids: Vec<String>,
        update: StatusUpdate,
    ) -> StoreFuture<usize> {
        let db = self.db.clone();
        self.write(move |c, _| {
            if !lock_owned_session(c, &db, session_id)? {
                return Ok((0, Vec::new()));
            }
            receipt(c, session_id, &ids, &update)
        })
    }

    fn store_inbound(&self, message: MessageRecord) -> StoreFuture<bool> {
        let db = self.db.clone();
        self.write(move |c, boxed| {
            if !lock_owned_session(c, &db, message.session_id)? {
                return Ok((false, Vec::new()));
            }
            let event = store_inbound(c, boxed, &message)?;
            Ok((event.is_some(), event.into_iter().collect()))
        })
    }

    fn record_inbound(&self, batch: Vec<InboundMsg>) -> StoreFuture<()> {
        let db = self.db.clone();
        self.write(move |c, boxed| {
            let mut events = Vec::new();
            for msg in &batch {
                // A savepoint each: one that fails leaves the others.
                match c.transaction(|c| record_one(c, &db, boxed, msg)) {
                    Ok(e) => events.extend(e),
                    Err(e) => log::warn!(
                        "session {}: an inbound message or receipt was not stored: {e}",
                        msg.session_id
                    ),
                }
            }
            Ok(((), events))
        })
    }

    fn prune_messages(&self, before: DateTime<Utc>) -> StoreFuture<u64> {
        self.call(move |c, _| prune(c, before))
    }
}

#[cfg(test)]
mod tests;
