//! Webhooks, the delivery outbox and the attempt log (migrations/*/
//! 2026-11-22-000300_webhooks). `DbWebhookStore` implements the actors'
//! `WebhookStore` port; [`insert_deliveries`] runs inside
//! `save_session_in`'s transaction so an event and its outbox rows commit
//! together.
//!
//! The secret and the custom headers are sealed with the master key
//! (`SecretBox`), bound to the webhook id: the database never holds them in
//! plaintext.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use uuid::Uuid;
use wasup_actors::events::SessionEvent;
use wasup_actors::model::SessionId;
use wasup_actors::webhook::{
    wants, AfterAttempt, AttemptDone, AttemptFilter, AttemptOutcome, AttemptRecord, DeliveryJob,
    OutboxCounts, StoreFuture, WebhookId, WebhookPatch, WebhookRecord, WebhookStore,
};

use super::records::{count_rows, decode_event, from_ms, seq_to_db, to_ms};
use super::schema::{session_events, webhook_attempts, webhook_deliveries, webhooks};
use super::{Db, DbConn, DbError};
use crate::crypto::SecretBox;

const PENDING: &str = "pending";
const DELIVERED: &str = "delivered";
const DEAD: &str = "dead";

fn aad(webhook: &str, what: &str) -> Vec<u8> {
    format!("wasup/webhook/{webhook}/{what}").into_bytes()
}

// ------------------------------------------------------------ outbox rows

#[derive(Insertable)]
#[diesel(table_name = webhook_deliveries)]
struct DeliveryRow<'a> {
    id: String,
    webhook_id: &'a str,
    session_id: &'a str,
    event_id: &'a str,
    seq: i64,
    event_name: &'a str,
    status: &'a str,
    attempts: i64,
    next_attempt_at: i64,
    created_at: i64,
    updated_at: i64,
}

/// One pending delivery row per (event, active webhook of the session that
/// wants it). Call inside the transaction that inserts the events. Returns
/// how many rows were written.
pub(crate) fn insert_deliveries(
    conn: &mut DbConn,
    session_id: SessionId,
    events: &[SessionEvent],
) -> Result<usize, DbError> {
    if events.is_empty() {
        return Ok(0);
    }
    let session_id = session_id.to_string();
    let hooks: Vec<(String, String)> = webhooks::table
        .filter(webhooks::session_id.eq(&session_id))
        .filter(webhooks::active.eq(1))
        .select((webhooks::id, webhooks::events))
        .load(conn)?;
    if hooks.is_empty() {
        return Ok(0);
    }
    let hooks: Vec<(String, Vec<String>)> = hooks
        .into_iter()
        .map(|(id, events)| {
            let events: Vec<String> = serde_json::from_str(&events)
                .map_err(|e| DbError::Corrupt(format!("webhook {id}: events: {e}")))?;
            Ok((id, events))
        })
        .collect::<Result<_, DbError>>()?;
    let mut n = 0;
    for event in events {
        let name = event.name();
        for (hook, wanted) in &hooks {
            if !wants(wanted, name) {
                continue;
            }
            let row = DeliveryRow {
                id: Uuid::now_v7().to_string(),
                webhook_id: hook,
                session_id: &session_id,
                event_id: &event.id,
                seq: seq_to_db(event.seq)?,
                event_name: name,
                status: PENDING,
                attempts: 0,
                next_attempt_at: event.timestamp_ms,
                created_at: event.timestamp_ms,
                updated_at: event.timestamp_ms,
            };
            diesel::insert_into(webhook_deliveries::table)
                .values(&row)
                .execute(conn)?;
            n += 1;
        }
    }
    Ok(n)
}

// ------------------------------------------------------------ webhooks

#[derive(Queryable, Selectable, Insertable)]
#[diesel(table_name = webhooks)]
struct WebhookRow {
    id: String,
    session_id: String,
    url: String,
    events: String,
    secret: Vec<u8>,
    headers: Vec<u8>,
    active: i64,
    max_attempts: i64,
    created_at: i64,
    updated_at: i64,
}

/// The `WebhookStore` port over the database. Cheap to clone.
#[derive(Clone)]
pub struct DbWebhookStore {
    db: Db,
    secrets: Arc<SecretBox>,
}

impl DbWebhookStore {
    pub fn new(db: Db, secrets: Arc<SecretBox>) -> Self {
        DbWebhookStore { db, secrets }
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

    fn call_in_transaction<T, F>(&self, work: F) -> StoreFuture<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut DbConn, &SecretBox) -> Result<T, DbError> + Send + 'static,
    {
        let db = self.db.clone();
        let secrets = self.secrets.clone();
        Box::pin(async move { Ok(db.transaction(move |c| work(c, &secrets)).await?) })
    }
}

fn seal_row(r: &WebhookRecord, secret: &[u8], boxed: &SecretBox) -> Result<WebhookRow, DbError> {
    let id = r.id.to_string();
    Ok(WebhookRow {
        secret: boxed.seal(&aad(&id, "secret"), secret),
        headers: seal_headers(&id, &r.headers, boxed)?,
        session_id: r.session_id.to_string(),
        url: r.url.clone(),
        events: events_to_db(&r.events)?,
        active: i64::from(r.active),
        max_attempts: i64::from(r.max_attempts),
        created_at: to_ms(r.created_at),
        updated_at: to_ms(r.updated_at),
        id,
    })
}

/// The custom headers as a JSON object, sealed to the webhook `id`.
fn seal_headers(
    id: &str,
    headers: &[(String, String)],
    boxed: &SecretBox,
) -> Result<Vec<u8>, DbError> {
    let map: serde_json::Map<String, serde_json::Value> = headers
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
        .collect();
    let plain =
        serde_json::to_vec(&map).map_err(|e| DbError::Invalid(format!("webhook headers: {e}")))?;
    Ok(boxed.seal(&aad(id, "headers"), &plain))
}

fn events_to_db(events: &[String]) -> Result<String, DbError> {
    serde_json::to_string(events).map_err(|e| DbError::Invalid(format!("webhook events: {e}")))
}

fn open_headers(row: &WebhookRow, boxed: &SecretBox) -> Result<Vec<(String, String)>, DbError> {
    let corrupt =
        |e: &dyn std::fmt::Display| DbError::Corrupt(format!("webhook {}: headers: {e}", row.id));
    let plain = boxed
        .open(&aad(&row.id, "headers"), &row.headers)
        .map_err(|e| corrupt(&e))?;
    let map: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&plain).map_err(|e| corrupt(&e))?;
    Ok(map
        .into_iter()
        .map(|(k, v)| (k, v.as_str().unwrap_or_default().to_string()))
        .collect())
}

fn open_secret(row: &WebhookRow, boxed: &SecretBox) -> Result<String, DbError> {
    let plain = boxed
        .open(&aad(&row.id, "secret"), &row.secret)
        .map_err(|e| DbError::Corrupt(format!("webhook {}: secret: {e}", row.id)))?;
    String::from_utf8(plain)
        .map_err(|_| DbError::Corrupt(format!("webhook {}: secret is not UTF-8", row.id)))
}

fn into_record(row: &WebhookRow, boxed: &SecretBox) -> Result<WebhookRecord, DbError> {
    let corrupt = |what: &str, e: &dyn std::fmt::Display| {
        DbError::Corrupt(format!("webhook {}: {what}: {e}", row.id))
    };
    Ok(WebhookRecord {
        id: Uuid::parse_str(&row.id).map_err(|e| corrupt("id", &e))?,
        session_id: Uuid::parse_str(&row.session_id).map_err(|e| corrupt("session_id", &e))?,
        url: row.url.clone(),
        events: serde_json::from_str(&row.events).map_err(|e| corrupt("events", &e))?,
        headers: open_headers(row, boxed)?,
        active: row.active != 0,
        max_attempts: u32::try_from(row.max_attempts).map_err(|e| corrupt("max_attempts", &e))?,
        created_at: from_ms(row.created_at)?,
        updated_at: from_ms(row.updated_at)?,
    })
}

fn load_row(conn: &mut DbConn, id: &str) -> Result<WebhookRow, DbError> {
    Ok(webhooks::table
        .find(id)
        .select(WebhookRow::as_select())
        .first(conn)?)
}

#[derive(QueryableByName)]
pub(crate) struct DueRow {
    #[diesel(sql_type = diesel::sql_types::Text)]
    id: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    webhook_id: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    event_id: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    event_name: String,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    attempts: i64,
}

/// The head of each active webhook's queue (its lowest pending `seq`) when it
/// is due, oldest due first. Driven by the webhooks table, so a poll costs
/// one index probe per webhook however long the queues are (a receiver that
/// was down for an hour leaves a long backlog that must not slow every poll).
pub(crate) const DUE_HEADS: &str = "\
    SELECT d.id AS id, d.webhook_id AS webhook_id, d.event_id AS event_id, \
        d.event_name AS event_name, d.attempts AS attempts \
    FROM webhooks w \
    JOIN webhook_deliveries d ON d.id = ( \
        SELECT q.id FROM webhook_deliveries q \
        WHERE q.webhook_id = w.id AND q.status = 'pending' \
        ORDER BY q.seq LIMIT 1) \
    WHERE w.active = 1 AND d.next_attempt_at <= $1 \
    ORDER BY d.next_attempt_at, d.seq \
    LIMIT $2";

fn due_heads(conn: &mut DbConn, now: i64, limit: i64) -> Result<Vec<DueRow>, DbError> {
    use diesel::sql_types::BigInt;
    Ok(match conn {
        DbConn::Sqlite(c) => diesel::sql_query(DUE_HEADS.replace('$', "?"))
            .bind::<BigInt, _>(now)
            .bind::<BigInt, _>(limit)
            .load(c)?,
        DbConn::Postgres(c) => diesel::sql_query(DUE_HEADS)
            .bind::<BigInt, _>(now)
            .bind::<BigInt, _>(limit)
            .load(c)?,
    })
}

fn due_deliveries(
    conn: &mut DbConn,
    boxed: &SecretBox,
    now: DateTime<Utc>,
    busy: &[WebhookId],
    limit: usize,
    cluster: bool,
) -> Result<Vec<DeliveryJob>, DbError> {
    // Busy webhooks are skipped here rather than in SQL: at most
    // `busy.len()` extra rows, and no statement with a variable bind count.
    let busy: HashSet<String> = busy.iter().map(Uuid::to_string).collect();
    let want = i64::try_from(limit + busy.len()).unwrap_or(i64::MAX);
    // Cluster mode: each head is claimed by one node (FOR UPDATE SKIP LOCKED).
    let heads = match cluster {
        true => super::cluster::claim_due_heads(conn, to_ms(now), want)?,
        false => due_heads(conn, to_ms(now), want)?,
    };
    let heads: Vec<DueRow> = heads
        .into_iter()
        .filter(|h| !busy.contains(&h.webhook_id))
        .take(limit)
        .collect();
    if heads.is_empty() {
        return Ok(Vec::new());
    }
    let hook_ids: Vec<&str> = heads.iter().map(|h| h.webhook_id.as_str()).collect();
    let hooks: HashMap<String, WebhookRow> = webhooks::table
        .filter(webhooks::id.eq_any(&hook_ids))
        .select(WebhookRow::as_select())
        .load(conn)?
        .into_iter()
        .map(|r| (r.id.clone(), r))
        .collect();
    let event_ids: Vec<&str> = heads.iter().map(|h| h.event_id.as_str()).collect();
    let payloads: HashMap<String, Vec<u8>> = session_events::table
        .filter(session_events::id.eq_any(&event_ids))
        .select((session_events::id, session_events::payload))
        .load::<(String, Vec<u8>)>(conn)?
        .into_iter()
        .collect();
    let mut jobs = Vec::with_capacity(heads.len());
    for head in heads {
        let (Some(row), Some(payload)) =
            (hooks.get(&head.webhook_id), payloads.get(&head.event_id))
        else {
            continue; // deleted between the two reads
        };
        let job = (|| {
            let mut event = decode_event(&head.event_id, payload)?;
            super::messages::open_event(&mut event, boxed);
            let record = into_record(row, boxed)?;
            Ok::<_, DbError>(DeliveryJob {
                delivery_id: head.id.clone(),
                webhook_id: record.id,
                url: record.url,
                secret: open_secret(row, boxed)?,
                headers: record.headers,
                max_attempts: record.max_attempts,
                attempt: u32::try_from(head.attempts.max(0)).unwrap_or(u32::MAX - 1) + 1,
                event,
            })
        })();
        match job {
            Ok(job) => jobs.push(job),
            // One bad row must not fail every poll (it is the head of its
            // webhook's queue, so it would be read again each time).
            Err(DbError::Corrupt(why)) => dead_letter_corrupt(conn, &head, &why, now)?,
            Err(e) => return Err(e),
        }
    }
    Ok(jobs)
}

/// Dead-letter a row that cannot become a delivery, with an attempt saying
/// why, so its webhook's queue moves on and it is never retried. The reason
/// names ids and the decoder's complaint, never a secret or a payload.
fn dead_letter_corrupt(
    conn: &mut DbConn,
    head: &DueRow,
    why: &str,
    now: DateTime<Utc>,
) -> Result<(), DbError> {
    log::error!(
        "webhooks: delivery {} (webhook {}, event {}) is corrupt and was dead-lettered: {why}",
        head.id,
        head.webhook_id,
        head.event_id
    );
    wasup_actors::metrics::METRICS.webhook_outbox_corrupt();
    let webhook_id = Uuid::parse_str(&head.webhook_id)
        .map_err(|e| DbError::Corrupt(format!("delivery {}: webhook_id: {e}", head.id)))?;
    let error = format!("corrupt outbox row: {why}");
    let attempt = AttemptRecord {
        event_id: head.event_id.clone(),
        event_name: head.event_name.clone(),
        attempt: u32::try_from(head.attempts.max(0)).unwrap_or(u32::MAX - 1) + 1,
        outcome: AttemptOutcome::Dead,
        status_code: None,
        error: Some(error),
        latency_ms: 0,
        at: now,
    };
    super::transaction_in(conn, |c| {
        record_attempt(c, &head.id, webhook_id, &attempt, &AfterAttempt::Dead)
    })
}

#[derive(Insertable)]
#[diesel(table_name = webhook_attempts)]
struct AttemptRow<'a> {
    id: String,
    delivery_id: &'a str,
    webhook_id: &'a str,
    event_id: &'a str,
    event_name: &'a str,
    attempt: i64,
    outcome: &'a str,
    status_code: Option<i64>,
    error: Option<&'a str>,
    latency_ms: i64,
    at: i64,
}

fn record_attempt(
    conn: &mut DbConn,
    delivery_id: &str,
    webhook_id: WebhookId,
    a: &AttemptRecord,
    next: &AfterAttempt,
) -> Result<(), DbError> {
    let at = to_ms(a.at);
    let target = webhook_deliveries::table
        .find(delivery_id)
        .filter(webhook_deliveries::status.eq(PENDING));
    let attempts = i64::from(a.attempt);
    let updated = match next {
        AfterAttempt::Delivered => diesel::update(target)
            .set((
                webhook_deliveries::status.eq(DELIVERED),
                webhook_deliveries::attempts.eq(attempts),
                webhook_deliveries::updated_at.eq(at),
            ))
            .execute(conn)?,
        AfterAttempt::Dead => diesel::update(target)
            .set((
                webhook_deliveries::status.eq(DEAD),
                webhook_deliveries::attempts.eq(attempts),
                webhook_deliveries::updated_at.eq(at),
            ))
            .execute(conn)?,
        AfterAttempt::RetryAt(when) => diesel::update(target)
            .set((
                webhook_deliveries::attempts.eq(attempts),
                webhook_deliveries::next_attempt_at.eq(to_ms(*when)),
                webhook_deliveries::updated_at.eq(at),
            ))
            .execute(conn)?,
    };
    if updated == 0 {
        // Deleted (webhook or session gone, or redriven) while the attempt ran.
        return Ok(());
    }
    let webhook_id = webhook_id.to_string();
    diesel::insert_into(webhook_attempts::table)
        .values(&AttemptRow {
            id: Uuid::now_v7().to_string(),
            delivery_id,
            webhook_id: &webhook_id,
            event_id: &a.event_id,
            event_name: &a.event_name,
            attempt: attempts,
            outcome: a.outcome.as_str(),
            status_code: a.status_code.map(i64::from),
            error: a.error.as_deref(),
            latency_ms: i64::try_from(a.latency_ms).unwrap_or(i64::MAX),
            at,
        })
        .execute(conn)?;
    Ok(())
}

type AttemptTuple = (
    String,
    String,
    i64,
    String,
    Option<i64>,
    Option<String>,
    i64,
    i64,
);

fn list_attempts(
    conn: &mut DbConn,
    webhook: WebhookId,
    filter: Option<AttemptFilter>,
    limit: usize,
) -> Result<Vec<AttemptRecord>, DbError> {
    let mut q = webhook_attempts::table
        .filter(webhook_attempts::webhook_id.eq(webhook.to_string()))
        .into_boxed();
    q = match filter {
        None => q,
        Some(AttemptFilter::Delivered) => q.filter(webhook_attempts::outcome.eq(DELIVERED)),
        Some(AttemptFilter::Failed) => {
            q.filter(webhook_attempts::outcome.eq_any(vec!["failed", DEAD]))
        }
        Some(AttemptFilter::Dead) => q.filter(webhook_attempts::outcome.eq(DEAD)),
    };
    let rows: Vec<AttemptTuple> = q
        .order((webhook_attempts::at.desc(), webhook_attempts::id.desc()))
        .limit(i64::try_from(limit).unwrap_or(i64::MAX))
        .select((
            webhook_attempts::event_id,
            webhook_attempts::event_name,
            webhook_attempts::attempt,
            webhook_attempts::outcome,
            webhook_attempts::status_code,
            webhook_attempts::error,
            webhook_attempts::latency_ms,
            webhook_attempts::at,
        ))
        .load(conn)?;
    rows.into_iter()
        .map(
            |(event_id, event_name, attempt, outcome, status_code, error, latency, at)| {
                Ok(AttemptRecord {
                    attempt: u32::try_from(attempt).unwrap_or(0),
                    outcome: outcome
                        .parse::<AttemptOutcome>()
                        .map_err(DbError::Corrupt)?,
                    status_code: status_code.and_then(|c| u16::try_from(c).ok()),
                    error,
                    latency_ms: u64::try_from(latency).unwrap_or(0),
                    at: from_ms(at)?,
                    event_id,
                    event_name,
                })
            },
        )
        .collect()
}

fn redrive(
    conn: &mut DbConn,
    webhook: WebhookId,
    event_id: &str,
    now: DateTime<Utc>,
) -> Result<(), DbError> {
    let webhook = webhook.to_string();
    let status: Option<String> = webhook_deliveries::table
        .filter(webhook_deliveries::webhook_id.eq(&webhook))
        .filter(webhook_deliveries::event_id.eq(event_id))
        .select(webhook_deliveries::status)
        .first(conn)
        .optional()?;
    match status.as_deref() {
        None => Err(DbError::Query(diesel::result::Error::NotFound)),
        Some(PENDING) => Err(DbError::Invalid(format!(
            "event {event_id} is already pending"
        ))),
        Some(_) => {
            diesel::update(
                webhook_deliveries::table
                    .filter(webhook_deliveries::webhook_id.eq(&webhook))
                    .filter(webhook_deliveries::event_id.eq(event_id)),
            )
            .set((
                webhook_deliveries::status.eq(PENDING),
                webhook_deliveries::attempts.eq(0),
                webhook_deliveries::next_attempt_at.eq(to_ms(now)),
                webhook_deliveries::updated_at.eq(to_ms(now)),
            ))
            .execute(conn)?;
            Ok(())
        }
    }
}

fn prune(conn: &mut DbConn, before: DateTime<Utc>) -> Result<u64, DbError> {
    // QRs that lapsed with nothing written after them lose their text.
    super::qr_log::expire_lapsed(conn, Utc::now().timestamp_millis())?;
    let before = to_ms(before);
    // Delivered rows (their attempts go with them).
    let rows = diesel::delete(
        webhook_deliveries::table
            .filter(webhook_deliveries::status.eq(DELIVERED))
            .filter(webhook_deliveries::updated_at.lt(before)),
    )
    .execute(conn)?;
    // Old attempts of rows still queued; a dead letter keeps its history.
    // A subquery, not a list of dead ids: SQLite binds at most 32,766.
    let attempts = diesel::delete(
        webhook_attempts::table
            .filter(webhook_attempts::at.lt(before))
            .filter(diesel::dsl::not(diesel::dsl::exists(
                webhook_deliveries::table
                    .filter(webhook_deliveries::id.eq(webhook_attempts::delivery_id))
                    .filter(webhook_deliveries::status.eq(DEAD)),
            ))),
    )
    .execute(conn)?;
    // The event log: an event that no outbox row refers to any more (its
    // deliveries are done and pruned, or nobody subscribed) goes too. The
    // session keeps its `event_seq`, so seqs never restart.
    let events = diesel::delete(
        session_events::table
            .filter(session_events::created_at.lt(before))
            .filter(diesel::dsl::not(diesel::dsl::exists(
                webhook_deliveries::table
                    .filter(webhook_deliveries::event_id.eq(session_events::id)),
            ))),
    )
    .execute(conn)?;
    Ok((rows + attempts + events) as u64)
}

/// Dead letters last touched before `before`; their attempts go with them
/// (ON DELETE CASCADE), their events with the next `prune`.
fn prune_dead_letters(conn: &mut DbConn, before: DateTime<Utc>) -> Result<u64, DbError> {
    let rows = diesel::delete(
        webhook_deliveries::table
            .filter(webhook_deliveries::status.eq(DEAD))
            .filter(webhook_deliveries::updated_at.lt(to_ms(before))),
    )
    .execute(conn)?;
    Ok(rows as u64)
}

impl WebhookStore for DbWebhookStore {
    fn insert_webhook(&self, record: WebhookRecord, secret: String) -> StoreFuture<()> {
        self.call(move |c, boxed| {
            let row = seal_row(&record, secret.as_bytes(), boxed)?;
            diesel::insert_into(webhooks::table)
                .values(&row)
                .execute(c)?;
            Ok(())
        })
    }

    fn load_webhooks(&self, session: Option<SessionId>) -> StoreFuture<Vec<WebhookRecord>> {
        self.call(move |c, boxed| {
            let mut q = webhooks::table.select(WebhookRow::as_select()).into_boxed();
            if let Some(s) = session {
                q = q.filter(webhooks::session_id.eq(s.to_string()));
            }
            q.order((webhooks::created_at.asc(), webhooks::id.asc()))
                .load(c)?
                .iter()
                .map(|r| into_record(r, boxed))
                .collect()
        })
    }

    fn load_webhook(&self, id: WebhookId) -> StoreFuture<WebhookRecord> {
        self.call(move |c, boxed| into_record(&load_row(c, &id.to_string())?, boxed))
    }

    fn update_webhook(&self, id: WebhookId, patch: WebhookPatch) -> StoreFuture<WebhookRecord> {
        self.call_in_transaction(move |c, boxed| {
            let id = id.to_string();
            let events = patch.events.as_deref().map(events_to_db).transpose()?;
            let headers = patch
                .headers
                .as_deref()
                .map(|h| seal_headers(&id, h, boxed))
                .transpose()?;
            // One UPDATE of the fields sent (a `None` sets nothing), so a
            // concurrent patch of other fields is not reverted.
            let n = diesel::update(webhooks::table.find(&id))
                .set((
                    patch.url.map(|u| webhooks::url.eq(u)),
                    events.map(|e| webhooks::events.eq(e)),
                    headers.map(|h| webhooks::headers.eq(h)),
                    patch.active.map(|a| webhooks::active.eq(i64::from(a))),
                    patch
                        .max_attempts
                        .map(|n| webhooks::max_attempts.eq(i64::from(n))),
                    webhooks::updated_at.eq(to_ms(patch.updated_at)),
                ))
                .execute(c)?;
            if n == 0 {
                return Err(DbError::Query(diesel::result::Error::NotFound));
            }
            into_record(&load_row(c, &id)?, boxed)
        })
    }

    fn delete_webhook(&self, id: WebhookId) -> StoreFuture<()> {
        self.call(move |c, _| {
            let n = diesel::delete(webhooks::table.find(id.to_string())).execute(c)?;
            if n == 0 {
                return Err(DbError::Query(diesel::result::Error::NotFound));
            }
            Ok(())
        })
    }

    fn webhook_secret(&self, id: WebhookId) -> StoreFuture<String> {
        self.call(move |c, boxed| open_secret(&load_row(c, &id.to_string())?, boxed))
    }

    fn due_deliveries(
        &self,
        now: DateTime<Utc>,
        busy: Vec<WebhookId>,
        limit: usize,
    ) -> StoreFuture<Vec<DeliveryJob>> {
        let cluster = self.db.fence().is_some();
        self.call(move |c, boxed| due_deliveries(c, boxed, now, &busy, limit, cluster))
    }

    fn record_attempts(&self, done: Vec<AttemptDone>) -> StoreFuture<()> {
        self.call_in_transaction(move |c, _| {
            for d in &done {
                record_attempt(c, &d.delivery_id, d.webhook_id, &d.attempt, &d.next)?;
            }
            Ok(())
        })
    }

    fn list_attempts(
        &self,
        webhook: WebhookId,
        filter: Option<AttemptFilter>,
        limit: usize,
    ) -> StoreFuture<Vec<AttemptRecord>> {
        self.call(move |c, _| list_attempts(c, webhook, filter, limit))
    }

    fn redrive(&self, webhook: WebhookId, event_id: String, now: DateTime<Utc>) -> StoreFuture<()> {
        self.call_in_transaction(move |c, _| redrive(c, webhook, &event_id, now))
    }

    fn prune(&self, before: DateTime<Utc>) -> StoreFuture<u64> {
        self.call_in_transaction(move |c, _| prune(c, before))
    }

    fn prune_dead_letters(&self, before: DateTime<Utc>) -> StoreFuture<u64> {
        self.call(move |c, _| prune_dead_letters(c, before))
    }

    /// Two counts over the `(status, updated_at)` index.
    fn outbox_depth(&self) -> StoreFuture<OutboxCounts> {
        self.call(|c, _| {
            let count = |c: &mut DbConn, status: &str| -> Result<u64, DbError> {
                Ok(count_rows(
                    webhook_deliveries::table
                        .filter(webhook_deliveries::status.eq(status))
                        .count()
                        .get_result(c)?,
                ))
            };
            Ok(OutboxCounts {
                pending: count(c, PENDING)?,
                dead: count(c, DEAD)?,
            })
        })
    }
}

#[cfg(test)]
mod tests;
