//! Records: sessions, API keys, events. Implements the Store port.
//!
//! Every statement is written once against [`DbConn`] and runs on both
//! backends. The functions taking `&mut DbConn` are the building blocks:
//! they run inside whatever transaction the caller holds, so other parts of
//! `db` (the webhook deliveries) can add their rows to the same transaction
//! as a state change — see [`save_session_in`].
//!
//! Storage conventions (see migrations/*/2026-11-22-000100_records):
//! - timestamps are BIGINT milliseconds since the Unix epoch (UTC), so a
//!   record read back is truncated to the millisecond;
//! - ids are hyphenated lowercase UUID strings;
//! - enums are their lowercase wire names; `config` and `allowed_sessions`
//!   are JSON text (`allowed_sessions`: NULL = none given, `[]` kept as is);
//! - events are prost-encoded `wasup.v1.SessionEvent` in `payload`, with
//!   `seq`, `name` and `created_at` copied out for querying.
//!
//! Errors map to the port as: unique violation → `Conflict`, missing row or
//! a foreign key pointing at a deleted session → `NotFound`, a write the
//! caller got wrong (see [`check_event_batch`]) → `Conflict`, anything else
//! → `Unavailable` (message for logs only).

use chrono::{DateTime, Utc};
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use futures::future::BoxFuture;
use prost::Message;
use uuid::Uuid;
use wasup_actors::events::SessionEvent;
use wasup_actors::model::{
    ApiKeyId, ApiKeyRecord, DesiredState, ProxyType, Role, SessionConfig, SessionId, SessionRecord,
    SessionStatus,
};
use wasup_actors::ports::{Store, StoreError};
use wasup_actors::webhook::WorkSignal;

use crate::crypto::SecretBox;
use crate::events_hub::EventHub;

use std::sync::Arc;

use super::schema::{api_keys, device_state, session_creators, session_events, sessions};
use super::{Db, DbConn, DbError};

impl From<DbError> for StoreError {
    fn from(err: DbError) -> StoreError {
        if err.is_unique_violation() {
            StoreError::Conflict(err.to_string())
        } else if err.is_not_found() || err.is_foreign_key_violation() {
            // The only foreign keys point at sessions: a violation means the
            // session was deleted under the write.
            StoreError::NotFound
        } else if let DbError::Invalid(msg) = err {
            StoreError::Conflict(msg)
        } else if let DbError::Fenced(msg) = err {
            StoreError::Fenced(msg)
        } else {
            StoreError::Unavailable(err.to_string())
        }
    }
}

/// The `Store` port over the database. Cheap to clone.
#[derive(Clone)]
pub struct DbStore {
    db: Db,
    /// Told after a commit that wrote events (and so maybe outbox rows).
    outbox: Option<Arc<WorkSignal>>,
    /// Told the events of every commit, for the live event stream.
    hub: Option<Arc<EventHub>>,
    /// Seals proxy URLs at rest (`db::proxy_seal`); without it they are
    /// written plain (unit tests).
    secrets: Option<Arc<SecretBox>>,
}

impl DbStore {
    pub fn new(db: Db) -> DbStore {
        DbStore {
            db,
            outbox: None,
            hub: None,
            secrets: None,
        }
    }

    /// Seal proxy URLs (their passwords) with the master key at rest.
    pub fn with_secrets(mut self, secrets: Arc<SecretBox>) -> DbStore {
        self.secrets = Some(secrets);
        self
    }

    /// The record as it goes to the database: its proxy URL sealed.
    fn sealed(&self, mut record: SessionRecord) -> SessionRecord {
        if let (Some(url), Some(boxed)) = (&record.proxy_url, &self.secrets) {
            record.proxy_url = Some(super::proxy_seal::seal(boxed, record.id, url));
        }
        record
    }

    /// Wake the webhook deliveries after every commit that wrote events.
    pub fn with_outbox_signal(mut self, signal: Arc<WorkSignal>) -> DbStore {
        self.outbox = Some(signal);
        self
    }

    /// Publish the events of every commit to the live event stream.
    pub fn with_event_hub(mut self, hub: Arc<EventHub>) -> DbStore {
        self.hub = Some(hub);
        self
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    /// One session; `NotFound` when there is none with this id.
    pub async fn load_session(&self, id: SessionId) -> Result<SessionRecord, StoreError> {
        let record = self.db.run(move |c| load_session(c, id)).await?;
        Ok(opened(self.secrets.as_deref(), record)?)
    }

    /// How many API keys exist, revoked and expired ones included (so that
    /// "first boot" means an empty table, not "every key was revoked").
    pub async fn count_api_keys(&self) -> Result<u64, StoreError> {
        Ok(self.db.run(count_api_keys).await?)
    }

    /// Every stored event of a session, in `seq` order.
    pub async fn events(&self, session_id: SessionId) -> Result<Vec<SessionEvent>, StoreError> {
        self.events_after(session_id, 0, usize::MAX).await
    }

    /// At most `limit` events of a session with `seq > after_seq`, in `seq`
    /// order (for delivery and for resuming an event stream).
    pub async fn events_after(
        &self,
        session_id: SessionId,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<SessionEvent>, StoreError> {
        Ok(self
            .db
            .run(move |c| load_events(c, session_id, after_seq, limit))
            .await?)
    }

    fn call<T, F>(&self, work: F) -> BoxFuture<'static, Result<T, StoreError>>
    where
        T: Send + 'static,
        F: FnOnce(&mut DbConn) -> Result<T, DbError> + Send + 'static,
    {
        let db = self.db.clone();
        Box::pin(async move { Ok(db.run(work).await?) })
    }

    fn call_in_transaction<T, F>(&self, work: F) -> BoxFuture<'static, Result<T, StoreError>>
    where
        T: Send + 'static,
        F: FnOnce(&mut DbConn) -> Result<T, DbError> + Send + 'static,
    {
        let db = self.db.clone();
        Box::pin(async move { Ok(db.transaction(work).await?) })
    }
}

impl Store for DbStore {
    fn load_sessions(&self) -> BoxFuture<'static, Result<Vec<SessionRecord>, StoreError>> {
        let secrets = self.secrets.clone();
        self.call(move |c| {
            load_sessions(c)?
                .into_iter()
                .map(|r| opened(secrets.as_deref(), r))
                .collect()
        })
    }

    fn insert_session(&self, record: SessionRecord) -> BoxFuture<'static, Result<(), StoreError>> {
        let record = self.sealed(record);
        self.call_in_transaction(move |c| insert_session(c, &record))
    }

    fn save_session(
        &self,
        record: SessionRecord,
        events: Vec<SessionEvent>,
    ) -> BoxFuture<'static, Result<(), StoreError>> {
        let wake = (!events.is_empty()).then(|| self.outbox.clone()).flatten();
        // Published only once committed: a stream never shows an event the
        // log does not hold.
        let publish = (!events.is_empty()).then(|| self.hub.clone()).flatten();
        let record = self.sealed(record);
        // Cluster mode: only the session's owner writes (the lease's generation).
        let db = self.db.clone();
        let save = self.call_in_transaction(move |c| {
            // A session that should run is written by its owner only.
            let id = record.id.to_string();
            if record.desired == DesiredState::Running {
                db.check_owner(c, &id)?;
            } else {
                db.check_fence(c, &id)?;
            }
            save_session_in(c, &record, &events)
        });
        Box::pin(async move {
            let stored = save.await?;
            if let Some(signal) = wake {
                signal.notify();
            }
            if let Some(hub) = publish {
                hub.publish(&stored);
            }
            Ok(())
        })
    }

    fn delete_session(&self, id: SessionId) -> BoxFuture<'static, Result<(), StoreError>> {
        let db = self.db.clone();
        self.call_in_transaction(move |c| {
            db.check_fence(c, &id.to_string())?;
            delete_session(c, id)
        })
    }

    fn load_api_keys(&self) -> BoxFuture<'static, Result<Vec<ApiKeyRecord>, StoreError>> {
        self.call(load_api_keys)
    }

    fn insert_api_key(&self, key: ApiKeyRecord) -> BoxFuture<'static, Result<(), StoreError>> {
        self.call(move |c| insert_api_key(c, &key))
    }

    fn revoke_api_key(
        &self,
        id: ApiKeyId,
        at: DateTime<Utc>,
    ) -> BoxFuture<'static, Result<(), StoreError>> {
        self.call_in_transaction(move |c| revoke_api_key(c, id, at))
    }

    fn ping(&self) -> BoxFuture<'static, Result<(), StoreError>> {
        self.call(|c| Ok(c.batch_execute("SELECT 1")?))
    }
}

// ------------------------------------------------------------ sessions

/// A record as read: its proxy URL opened (plain rows pass as they are).
fn opened(
    secrets: Option<&SecretBox>,
    mut record: SessionRecord,
) -> Result<SessionRecord, DbError> {
    if let Some(stored) = &record.proxy_url {
        record.proxy_url = Some(super::proxy_seal::open(secrets, record.id, stored)?);
    }
    Ok(record)
}

// No Debug: the row holds the proxy URL with its credentials.
#[derive(Queryable, Selectable, Insertable)]
#[diesel(table_name = sessions)]
struct SessionRow {
    id: String,
    name: String,
    config: String,
    proxy_url: Option<String>,
    proxy_type: Option<String>,
    desired: String,
    status: String,
    last_error: Option<String>,
    phone: Option<String>,
    push_name: Option<String>,
    connected_at: Option<i64>,
    last_active: Option<i64>,
    created_at: i64,
    updated_at: i64,
    event_seq: i64,
}

/// What `save_session` rewrites: everything but `id` and `created_at`
/// (`created_by` lives in `session_creators`, written once).
/// `None` writes NULL (a logout clears `phone`).
#[derive(AsChangeset)]
#[diesel(table_name = sessions, treat_none_as_null = true)]
struct SessionChanges<'a> {
    name: &'a str,
    config: &'a str,
    proxy_url: Option<&'a str>,
    proxy_type: Option<&'a str>,
    desired: &'a str,
    status: &'a str,
    last_error: Option<&'a str>,
    phone: Option<&'a str>,
    push_name: Option<&'a str>,
    connected_at: Option<i64>,
    last_active: Option<i64>,
    updated_at: i64,
    event_seq: i64,
}

impl SessionRow {
    fn from_record(r: &SessionRecord) -> Result<SessionRow, DbError> {
        Ok(SessionRow {
            id: r.id.to_string(),
            name: r.name.clone(),
            config: serde_json::to_string(&*r.config)
                .map_err(|e| DbError::Invalid(format!("session config: {e}")))?,
            proxy_url: r.proxy_url.clone(),
            proxy_type: r.proxy_type.map(|t| t.as_str().to_string()),
            desired: r.desired.as_str().to_string(),
            status: r.status.as_str().to_string(),
            last_error: r.last_error.clone(),
            phone: r.phone.clone(),
            push_name: r.push_name.clone(),
            connected_at: r.connected_at.map(to_ms),
            last_active: r.last_active.map(to_ms),
            created_at: to_ms(r.created_at),
            updated_at: to_ms(r.updated_at),
            event_seq: seq_to_db(r.event_seq)?,
        })
    }

    fn changes(&self) -> SessionChanges<'_> {
        SessionChanges {
            name: &self.name,
            config: &self.config,
            proxy_url: self.proxy_url.as_deref(),
            proxy_type: self.proxy_type.as_deref(),
            desired: &self.desired,
            status: &self.status,
            last_error: self.last_error.as_deref(),
            phone: self.phone.as_deref(),
            push_name: self.push_name.as_deref(),
            connected_at: self.connected_at,
            last_active: self.last_active,
            updated_at: self.updated_at,
            event_seq: self.event_seq,
        }
    }

    fn into_record(self) -> Result<SessionRecord, DbError> {
        let corrupt = |what: &str, e: &dyn std::fmt::Display| {
            DbError::Corrupt(format!("session {}: {what}: {e}", self.id))
        };
        let config: SessionConfig =
            serde_json::from_str(&self.config).map_err(|e| corrupt("config", &e))?;
        let config = Arc::new(config);
        Ok(SessionRecord {
            id: Uuid::parse_str(&self.id).map_err(|e| corrupt("id", &e))?,
            config,
            proxy_type: self
                .proxy_type
                .as_deref()
                .map(str::parse::<ProxyType>)
                .transpose()
                .map_err(|e| corrupt("proxy_type", &e))?,
            desired: self
                .desired
                .parse::<DesiredState>()
                .map_err(|e| corrupt("desired", &e))?,
            status: self
                .status
                .parse::<SessionStatus>()
                .map_err(|e| corrupt("status", &e))?,
            connected_at: self.connected_at.map(from_ms).transpose()?,
            last_active: self.last_active.map(from_ms).transpose()?,
            created_at: from_ms(self.created_at)?,
            updated_at: from_ms(self.updated_at)?,
            event_seq: u64::try_from(self.event_seq).map_err(|e| corrupt("event_seq", &e))?,
            created_by: None,
            name: self.name,
            proxy_url: self.proxy_url,
            last_error: self.last_error,
            phone: self.phone,
            push_name: self.push_name,
        })
    }
}

/// A stored creator key id as a record's `created_by`.
fn creator(session: &str, key: &str) -> Result<ApiKeyId, DbError> {
    Uuid::parse_str(key)
        .map_err(|e| DbError::Corrupt(format!("session {session}: creator key id: {e}")))
}

/// Every session, newest first (ties: name ascending).
pub(crate) fn load_sessions(conn: &mut DbConn) -> Result<Vec<SessionRecord>, DbError> {
    let creators: std::collections::HashMap<String, String> = session_creators::table
        .select((session_creators::session_id, session_creators::api_key_id))
        .load::<(String, String)>(conn)?
        .into_iter()
        .collect();
    sessions::table
        .select(SessionRow::as_select())
        .order((sessions::created_at.desc(), sessions::name.asc()))
        .load(conn)?
        .into_iter()
        .map(|row| {
            let key = creators
                .get(&row.id)
                .map(|k| creator(&row.id, k))
                .transpose()?;
            let mut record = row.into_record()?;
            record.created_by = key;
            Ok(record)
        })
        .collect()
}

pub(crate) fn load_session(conn: &mut DbConn, id: SessionId) -> Result<SessionRecord, DbError> {
    let id = id.to_string();
    let mut record = sessions::table
        .find(&id)
        .select(SessionRow::as_select())
        .first(conn)?
        .into_record()?;
    let key: Option<String> = session_creators::table
        .find(&id)
        .select(session_creators::api_key_id)
        .first(conn)
        .optional()?;
    record.created_by = key.map(|k| creator(&id, &k)).transpose()?;
    Ok(record)
}

/// Insert a session and (when known) the key that created it. Call it in a
/// transaction (`DbStore::insert_session` does): both rows or neither.
pub(crate) fn insert_session(conn: &mut DbConn, record: &SessionRecord) -> Result<(), DbError> {
    let row = SessionRow::from_record(record)?;
    diesel::insert_into(sessions::table)
        .values(&row)
        .execute(conn)?;
    if let Some(key) = record.created_by {
        diesel::insert_into(session_creators::table)
            .values((
                session_creators::session_id.eq(&row.id),
                session_creators::api_key_id.eq(key.to_string()),
            ))
            .execute(conn)?;
    }
    Ok(())
}

/// A session's new state and the events it caused. Call it inside a
/// transaction (as `DbStore::save_session` does): the state and the events
/// are written together or not at all. Rows that must commit with the events
/// (webhook deliveries) belong here, after `insert_events`.
///
/// Returns the events as stored: their seqs are shifted by the session's
/// message events (`db::messages`), which share the one sequence.
pub(crate) fn save_session_in(
    conn: &mut DbConn,
    record: &SessionRecord,
    events: &[SessionEvent],
) -> Result<Vec<SessionEvent>, DbError> {
    check_event_batch(record, events)?;
    // The update comes first: it takes the write lock (SQLite) or the row
    // lock (PostgreSQL) before anything is read, and tells a deleted session.
    update_session(conn, record)?;
    let mut events = events.to_vec();
    if !events.is_empty() {
        let shift = super::messages::message_event_count(conn, record.id)?;
        for e in &mut events {
            e.seq += shift;
        }
    }
    if let Some(first) = events.first() {
        super::qr_log::expire_superseded(conn, record.id, seq_to_db(first.seq)?)?;
    }
    insert_events(conn, record.id, &super::qr_log::as_stored(&events))?;
    super::webhooks::insert_deliveries(conn, record.id, &events)?;
    Ok(events)
}

/// Rewrite a session row from its record; `NotFound` when the row is gone.
pub(crate) fn update_session(conn: &mut DbConn, record: &SessionRecord) -> Result<(), DbError> {
    let row = SessionRow::from_record(record)?;
    let updated = diesel::update(sessions::table.find(&row.id))
        .set(row.changes())
        .execute(conn)?;
    if updated == 0 {
        return Err(DbError::Query(diesel::result::Error::NotFound));
    }
    Ok(())
}

/// The port's promise about a batch: every event belongs to the record's
/// session, seqs are consecutive, and the last one is `record.event_seq`.
/// A broken batch is a caller bug; it is refused before anything is written.
pub(crate) fn check_event_batch(
    record: &SessionRecord,
    events: &[SessionEvent],
) -> Result<(), DbError> {
    let Some(last) = events.last() else {
        return Ok(());
    };
    if last.seq != record.event_seq {
        return Err(DbError::Invalid(format!(
            "session {}: last event seq {} differs from the record's event_seq {}",
            record.id, last.seq, record.event_seq
        )));
    }
    let session_id = record.id.to_string();
    for (i, event) in events.iter().enumerate() {
        if event.session_id != session_id {
            return Err(DbError::Invalid(format!(
                "event {} belongs to session '{}', not {session_id}",
                event.id, event.session_id
            )));
        }
        if i > 0 && event.seq != events[i - 1].seq + 1 {
            return Err(DbError::Invalid(format!(
                "session {session_id}: event seqs not consecutive ({} after {})",
                event.seq,
                events[i - 1].seq
            )));
        }
    }
    Ok(())
}

/// Delete a session; its events (and every other row with a foreign key to
/// it) go with it through `ON DELETE CASCADE`. `NotFound` when there was none.
pub(crate) fn delete_session(conn: &mut DbConn, id: SessionId) -> Result<(), DbError> {
    // Device credentials carry no foreign key (their table belongs to the
    // engine); they go in the same transaction as the record.
    diesel::delete(device_state::table.filter(device_state::session_id.eq(id.to_string())))
        .execute(conn)?;
    let deleted = diesel::delete(sessions::table.find(id.to_string())).execute(conn)?;
    if deleted == 0 {
        return Err(DbError::Query(diesel::result::Error::NotFound));
    }
    Ok(())
}

// ------------------------------------------------------------ events

#[derive(Insertable)]
#[diesel(table_name = session_events)]
struct EventRow<'a> {
    id: &'a str,
    session_id: &'a str,
    seq: i64,
    name: &'a str,
    payload: Vec<u8>,
    created_at: i64,
}

/// Append events to a session's log (no checks beyond the constraints:
/// a seq taken already is a unique violation, a deleted session a foreign
/// key violation).
pub(crate) fn insert_events(
    conn: &mut DbConn,
    session_id: SessionId,
    events: &[SessionEvent],
) -> Result<(), DbError> {
    let session_id = session_id.to_string();
    // One statement per event: batches are one to three events, and a
    // multi-row insert is not available through the MultiConnection derive.
    for event in events {
        let row = EventRow {
            id: &event.id,
            session_id: &session_id,
            seq: seq_to_db(event.seq)?,
            name: event.name(),
            payload: event.encode_to_vec(),
            created_at: event.timestamp_ms,
        };
        diesel::insert_into(session_events::table)
            .values(&row)
            .execute(conn)?;
    }
    Ok(())
}

/// At most `limit` events of a session with `seq > after_seq`, by seq.
pub(crate) fn load_events(
    conn: &mut DbConn,
    session_id: SessionId,
    after_seq: u64,
    limit: usize,
) -> Result<Vec<SessionEvent>, DbError> {
    let after = i64::try_from(after_seq).unwrap_or(i64::MAX);
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let payloads: Vec<(String, Vec<u8>)> = session_events::table
        .filter(session_events::session_id.eq(session_id.to_string()))
        .filter(session_events::seq.gt(after))
        .order(session_events::seq.asc())
        .limit(limit)
        .select((session_events::id, session_events::payload))
        .load(conn)?;
    payloads
        .into_iter()
        .map(|(id, bytes)| decode_event(&id, &bytes))
        .collect()
}

// ------------------------------------------------------------ API keys

#[derive(Debug, Queryable, Selectable, Insertable)]
#[diesel(table_name = api_keys)]
struct ApiKeyRow {
    id: String,
    name: String,
    key_prefix: String,
    key_hash: Vec<u8>,
    role: String,
    allowed_sessions: Option<String>,
    expires_at: Option<i64>,
    created_at: i64,
    revoked_at: Option<i64>,
}

impl ApiKeyRow {
    fn from_record(k: &ApiKeyRecord) -> Result<ApiKeyRow, DbError> {
        Ok(ApiKeyRow {
            id: k.id.to_string(),
            name: k.name.clone(),
            key_prefix: k.key_prefix.clone(),
            key_hash: k.key_hash.to_vec(),
            role: k.role.as_str().to_string(),
            allowed_sessions: k
                .allowed_sessions
                .as_ref()
                .map(serde_json::to_string)
                .transpose()
                .map_err(|e| DbError::Invalid(format!("allowed_sessions: {e}")))?,
            expires_at: k.expires_at.map(to_ms),
            created_at: to_ms(k.created_at),
            revoked_at: k.revoked_at.map(to_ms),
        })
    }

    fn into_record(self) -> Result<ApiKeyRecord, DbError> {
        let corrupt = |what: &str, e: &dyn std::fmt::Display| {
            DbError::Corrupt(format!("api key {}: {what}: {e}", self.id))
        };
        Ok(ApiKeyRecord {
            id: Uuid::parse_str(&self.id).map_err(|e| corrupt("id", &e))?,
            key_hash: self
                .key_hash
                .as_slice()
                .try_into()
                .map_err(|e| corrupt("key_hash", &e))?,
            role: self.role.parse::<Role>().map_err(|e| corrupt("role", &e))?,
            allowed_sessions: self
                .allowed_sessions
                .as_deref()
                .map(serde_json::from_str::<Vec<SessionId>>)
                .transpose()
                .map_err(|e| corrupt("allowed_sessions", &e))?,
            expires_at: self.expires_at.map(from_ms).transpose()?,
            created_at: from_ms(self.created_at)?,
            revoked_at: self.revoked_at.map(from_ms).transpose()?,
            name: self.name,
            key_prefix: self.key_prefix,
        })
    }
}

/// Every API key, newest first (ties: name ascending).
pub(crate) fn load_api_keys(conn: &mut DbConn) -> Result<Vec<ApiKeyRecord>, DbError> {
    api_keys::table
        .select(ApiKeyRow::as_select())
        .order((api_keys::created_at.desc(), api_keys::name.asc()))
        .load(conn)?
        .into_iter()
        .map(ApiKeyRow::into_record)
        .collect()
}

pub(crate) fn insert_api_key(conn: &mut DbConn, key: &ApiKeyRecord) -> Result<(), DbError> {
    let row = ApiKeyRow::from_record(key)?;
    diesel::insert_into(api_keys::table)
        .values(&row)
        .execute(conn)?;
    Ok(())
}

/// Mark a key revoked. Idempotent: a key revoked already keeps its first
/// `revoked_at`. `NotFound` when there is no such key.
pub(crate) fn revoke_api_key(
    conn: &mut DbConn,
    id: ApiKeyId,
    at: DateTime<Utc>,
) -> Result<(), DbError> {
    let id = id.to_string();
    let updated = diesel::update(
        api_keys::table
            .find(&id)
            .filter(api_keys::revoked_at.is_null()),
    )
    .set(api_keys::revoked_at.eq(Some(to_ms(at))))
    .execute(conn)?;
    if updated == 0 {
        let exists: i64 = api_keys::table.find(&id).count().get_result(conn)?;
        if exists == 0 {
            return Err(DbError::Query(diesel::result::Error::NotFound));
        }
    }
    Ok(())
}

/// Every key ever created, revoked and expired ones included.
pub(crate) fn count_api_keys(conn: &mut DbConn) -> Result<u64, DbError> {
    Ok(count_rows(api_keys::table.count().get_result(conn)?))
}

// ------------------------------------------------------------ conversions
// Shared with `db::webhooks`, which stores the same kinds of columns.

pub(super) fn to_ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

pub(super) fn from_ms(ms: i64) -> Result<DateTime<Utc>, DbError> {
    DateTime::from_timestamp_millis(ms)
        .ok_or_else(|| DbError::Corrupt(format!("timestamp {ms} ms out of range")))
}

pub(super) fn seq_to_db(seq: u64) -> Result<i64, DbError> {
    i64::try_from(seq).map_err(|_| DbError::Invalid(format!("seq {seq} exceeds i64")))
}

/// A `COUNT(*)` (a BIGINT, never negative) as a count.
pub(super) fn count_rows(n: i64) -> u64 {
    n.max(0) as u64
}

/// A stored `wasup.v1.SessionEvent` (the `payload` column).
pub(crate) fn decode_event(id: &str, bytes: &[u8]) -> Result<SessionEvent, DbError> {
    SessionEvent::decode(bytes).map_err(|e| DbError::Corrupt(format!("event {id}: {e}")))
}

#[cfg(test)]
mod tests;
