//! The outbox and the attempt log on both backends.

use std::sync::Arc;

use chrono::{Duration, Utc};
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use uuid::Uuid;
use wasup_actors::events::{session_event::Data, Disconnected, SessionEvent, StatusChanged};
use wasup_actors::model::SessionRecord;
use wasup_actors::ports::{Store, StoreError};
use wasup_actors::webhook::*;

use super::DbWebhookStore;
use crate::crypto::SecretBox;
use crate::db::records::DbStore;
use crate::db::schema::{session_events, webhook_attempts, webhook_deliveries, webhooks};
use crate::db::testing::{both_backends, TestDatabase};

fn stores(t: &TestDatabase) -> (DbStore, DbWebhookStore) {
    let db = t.open();
    (
        DbStore::new(db.clone()),
        DbWebhookStore::new(db, Arc::new(SecretBox::new(&[7u8; 32]))),
    )
}

fn hook(session: &SessionRecord, events: &[&str], active: bool) -> WebhookRecord {
    let now = chrono::DateTime::from_timestamp_millis(Utc::now().timestamp_millis()).unwrap();
    WebhookRecord {
        id: Uuid::now_v7(),
        session_id: session.id,
        url: "https://example.com/hook".into(),
        events: events.iter().map(|e| e.to_string()).collect(),
        headers: vec![("Authorization".into(), "Bearer t0ken".into())],
        active,
        max_attempts: 3,
        created_at: now,
        updated_at: now,
    }
}

fn step(record: &mut SessionRecord, data: Data) -> SessionEvent {
    record.event_seq += 1;
    SessionEvent {
        id: format!("evt_{}", Uuid::now_v7().simple()),
        session_id: record.id.to_string(),
        session_name: record.name.clone(),
        seq: record.event_seq,
        timestamp_ms: Utc::now().timestamp_millis(),
        data: Some(data),
    }
}

fn status() -> Data {
    Data::Status(StatusChanged {
        status: "initializing".into(),
        previous_status: "created".into(),
        last_error: None,
    })
}

fn disconnected() -> Data {
    Data::Disconnected(Disconnected {
        reason: "x".into(),
        will_retry: true,
        next_retry_at_ms: None,
    })
}

async fn count(s: &DbWebhookStore, table: &'static str) -> i64 {
    s.db.run(move |c| {
        Ok(match table {
            "deliveries" => webhook_deliveries::table.count().get_result(c)?,
            "attempts" => webhook_attempts::table.count().get_result(c)?,
            "events" => session_events::table.count().get_result(c)?,
            _ => webhooks::table.count().get_result(c)?,
        })
    })
    .await
    .unwrap()
}

/// A stored session with one active webhook that wants every event, and
/// that webhook's secret.
async fn a_session_with_a_hook(
    t: &TestDatabase,
) -> (
    DbStore,
    DbWebhookStore,
    SessionRecord,
    WebhookRecord,
    String,
) {
    let (store, hooks) = stores(t);
    let session = SessionRecord::new(Uuid::new_v4(), "bot".into(), Utc::now());
    store.insert_session(session.clone()).await.unwrap();
    let h = hook(&session, &["*"], true);
    let secret = generate_secret();
    hooks
        .insert_webhook(h.clone(), secret.clone())
        .await
        .unwrap();
    (store, hooks, session, h, secret)
}

async fn outbox_rows_follow_the_state_change(t: TestDatabase) {
    let (store, hooks) = stores(&t);
    let mut session = SessionRecord::new(Uuid::new_v4(), "bot".into(), Utc::now());
    store.insert_session(session.clone()).await.unwrap();
    let all = hook(&session, &["*"], true);
    let only = hook(&session, &["session.disconnected"], true);
    let paused = hook(&session, &["*"], false);
    for h in [&all, &only, &paused] {
        hooks
            .insert_webhook(h.clone(), generate_secret())
            .await
            .unwrap();
    }
    let e1 = step(&mut session, status());
    let e2 = step(&mut session, disconnected());
    store
        .save_session(session.clone(), vec![e1.clone(), e2.clone()])
        .await
        .unwrap();
    // "*" gets both, the filtered one only e2, the paused one nothing.
    assert_eq!(count(&hooks, "deliveries").await, 3);

    // A refused save (seq taken) writes no outbox rows either.
    let stale = session.clone();
    let dup = SessionEvent {
        id: "evt_dup".into(),
        ..e2.clone()
    };
    assert!(store.save_session(stale, vec![dup]).await.is_err());
    assert_eq!(count(&hooks, "deliveries").await, 3);

    // Heads only, in seq order, skipping busy webhooks.
    let jobs = hooks.due_deliveries(Utc::now(), vec![], 10).await.unwrap();
    let mut heads: Vec<_> = jobs
        .iter()
        .map(|j| (j.webhook_id, j.event.id.clone()))
        .collect();
    heads.sort();
    let mut want = vec![(all.id, e1.id.clone()), (only.id, e2.id.clone())];
    want.sort();
    assert_eq!(heads, want);
    let job = jobs.iter().find(|j| j.webhook_id == all.id).unwrap();
    assert_eq!(job.attempt, 1);
    assert_eq!(job.headers, all.headers);
    assert!(job.secret.starts_with("whsec_"));
    let busy = hooks
        .due_deliveries(Utc::now(), vec![all.id], 10)
        .await
        .unwrap();
    assert_eq!(busy.len(), 1);
    assert_eq!(busy[0].webhook_id, only.id);

    // A retry later keeps the head; then a dead letter moves the queue on.
    let attempt = |n, outcome| AttemptRecord {
        event_id: e1.id.clone(),
        event_name: "session.status".into(),
        attempt: n,
        outcome,
        status_code: Some(500),
        error: Some("receiver answered HTTP 500".into()),
        latency_ms: 3,
        at: Utc::now(),
    };
    let later = Utc::now() + Duration::seconds(60);
    hooks
        .record_attempt(
            job.delivery_id.clone(),
            all.id,
            attempt(1, AttemptOutcome::Failed),
            AfterAttempt::RetryAt(later),
        )
        .await
        .unwrap();
    let jobs = hooks
        .due_deliveries(Utc::now(), vec![only.id], 10)
        .await
        .unwrap();
    assert!(jobs.is_empty(), "the head waits, and nothing overtakes it");
    let jobs = hooks
        .due_deliveries(later, vec![only.id], 10)
        .await
        .unwrap();
    assert_eq!(
        (jobs[0].event.id.clone(), jobs[0].attempt),
        (e1.id.clone(), 2)
    );
    hooks
        .record_attempt(
            job.delivery_id.clone(),
            all.id,
            attempt(2, AttemptOutcome::Dead),
            AfterAttempt::Dead,
        )
        .await
        .unwrap();
    let jobs = hooks
        .due_deliveries(later, vec![only.id], 10)
        .await
        .unwrap();
    assert_eq!(jobs[0].event.id, e2.id);
    let dead = hooks
        .list_attempts(all.id, Some(AttemptFilter::Dead), 10)
        .await
        .unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(
        hooks.outbox_depth().await.unwrap(),
        OutboxCounts {
            pending: 2,
            dead: 1
        }
    );
    assert_eq!(
        hooks
            .list_attempts(all.id, Some(AttemptFilter::Failed), 10)
            .await
            .unwrap()
            .len(),
        2
    );

    // Redrive: dead → pending with a fresh budget; pending → Conflict; unknown → NotFound.
    hooks
        .redrive(all.id, e1.id.clone(), Utc::now())
        .await
        .unwrap();
    assert!(matches!(
        hooks.redrive(all.id, e1.id.clone(), Utc::now()).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        hooks.redrive(all.id, "evt_nope".into(), Utc::now()).await,
        Err(StoreError::NotFound)
    ));
    let jobs = hooks
        .due_deliveries(Utc::now(), vec![only.id], 10)
        .await
        .unwrap();
    assert_eq!(
        (jobs[0].event.id.clone(), jobs[0].attempt),
        (e1.id.clone(), 1)
    );

    // Deleting a webhook removes its rows; deleting the session removes the rest.
    hooks.delete_webhook(all.id).await.unwrap();
    assert_eq!(count(&hooks, "deliveries").await, 1);
    assert_eq!(count(&hooks, "attempts").await, 0);
    store.delete_session(session.id).await.unwrap();
    assert_eq!(count(&hooks, "deliveries").await, 0);
    assert_eq!(count(&hooks, "webhooks").await, 0);
}

/// Take the head of the outbox (it must be `e`) and record its first
/// attempt, made at `at`, as ending in `next`.
async fn attempt_head(
    hooks: &DbWebhookStore,
    h: &WebhookRecord,
    e: &SessionEvent,
    next: AfterAttempt,
    at: chrono::DateTime<Utc>,
) {
    let job = hooks
        .due_deliveries(Utc::now(), vec![], 1)
        .await
        .unwrap()
        .remove(0);
    assert_eq!(job.event.id, e.id);
    let (outcome, status_code) = match next {
        AfterAttempt::Delivered => (AttemptOutcome::Delivered, 200),
        AfterAttempt::Dead => (AttemptOutcome::Dead, 500),
        AfterAttempt::RetryAt(_) => (AttemptOutcome::Failed, 500),
    };
    let attempt = AttemptRecord {
        event_id: e.id.clone(),
        event_name: e.name().into(),
        attempt: 1,
        outcome,
        status_code: Some(status_code),
        error: None,
        latency_ms: 1,
        at,
    };
    hooks
        .record_attempt(job.delivery_id, h.id, attempt, next)
        .await
        .unwrap();
}

async fn retention_prunes_delivered_rows_and_keeps_dead_letters(t: TestDatabase) {
    let (store, hooks, mut session, h, _) = a_session_with_a_hook(&t).await;
    let (e1, e2) = (
        step(&mut session, status()),
        step(&mut session, disconnected()),
    );
    store
        .save_session(session.clone(), vec![e1.clone(), e2.clone()])
        .await
        .unwrap();
    let old = Utc::now() - Duration::days(8);
    attempt_head(&hooks, &h, &e1, AfterAttempt::Delivered, old).await;
    attempt_head(&hooks, &h, &e2, AfterAttempt::Dead, old).await;
    // Nothing is older than 30 days yet.
    assert_eq!(
        hooks.prune(Utc::now() - Duration::days(30)).await.unwrap(),
        0
    );
    let pruned = hooks.prune(Utc::now() - Duration::days(7)).await.unwrap();
    assert!(pruned >= 1);
    assert_eq!(
        count(&hooks, "deliveries").await,
        1,
        "the dead letter stays"
    );
    let left = hooks.list_attempts(h.id, None, 10).await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].event_id, e2.id);
    // The event log: both events are younger than 7 days, so both stay;
    // past the cut-off the delivered (and pruned) one goes, the dead
    // letter's stays, and the session's seq goes on from where it was.
    assert_eq!(count(&hooks, "events").await, 2);
    hooks
        .prune(Utc::now() + Duration::seconds(1))
        .await
        .unwrap();
    assert_eq!(count(&hooks, "events").await, 1);
    assert_eq!(
        store.events_after(session.id, 0, 10).await.unwrap(),
        vec![e2.clone()]
    );
    let e3 = step(&mut session, status());
    assert_eq!(e3.seq, e2.seq + 1);
    store.save_session(session.clone(), vec![e3]).await.unwrap();
    hooks
        .redrive(h.id, e2.id.clone(), Utc::now())
        .await
        .unwrap();
}

/// More dead letters than SQLite takes bound variables in one statement
/// (32,766): the prune must not send their ids.
const MANY_DEAD_LETTERS: usize = 40_000;

/// `MANY_DEAD_LETTERS` copies of a queued row, its event and its attempt,
/// each copy a dead letter; written by the database itself so the test
/// stays fast.
async fn copy_as_dead_letters(hooks: &DbWebhookStore, delivery_id: String) {
    hooks
        .db
        .run(move |c| {
            let numbers = format!(
                "WITH RECURSIVE n(i) AS \
                 (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {MANY_DEAD_LETTERS})"
            );
            let from = format!("FROM n, webhook_deliveries d WHERE d.id = '{delivery_id}'");
            c.batch_execute(&format!(
                "{numbers} INSERT INTO session_events \
                 (id, session_id, seq, name, payload, created_at) \
                 SELECT 'evt-dead-' || n.i, e.session_id, e.seq + n.i, e.name, e.payload, \
                 e.created_at FROM n, session_events e, webhook_deliveries d \
                 WHERE d.id = '{delivery_id}' AND e.id = d.event_id;\
                 {numbers} INSERT INTO webhook_deliveries \
                 (id, webhook_id, session_id, event_id, seq, event_name, status, attempts, \
                 next_attempt_at, created_at, updated_at) \
                 SELECT 'dead-' || n.i, d.webhook_id, d.session_id, 'evt-dead-' || n.i, \
                 d.seq + n.i, d.event_name, 'dead', d.attempts, d.next_attempt_at, \
                 d.created_at, d.updated_at {from};\
                 {numbers} INSERT INTO webhook_attempts \
                 (id, delivery_id, webhook_id, event_id, event_name, attempt, outcome, \
                 status_code, error, latency_ms, at) \
                 SELECT 'att-dead-' || n.i, 'dead-' || n.i, a.webhook_id, 'evt-dead-' || n.i, \
                 a.event_name, a.attempt, 'dead', a.status_code, a.error, a.latency_ms, a.at \
                 FROM n, webhook_attempts a WHERE a.delivery_id = '{delivery_id}';"
            ))?;
            Ok(())
        })
        .await
        .unwrap();
}

async fn prune_keeps_many_dead_letters_history(t: TestDatabase) {
    let (store, hooks, mut session, h, _) = a_session_with_a_hook(&t).await;
    let queued = step(&mut session, status());
    store
        .save_session(session.clone(), vec![queued.clone()])
        .await
        .unwrap();
    let job = hooks
        .due_deliveries(Utc::now(), vec![], 1)
        .await
        .unwrap()
        .remove(0);
    let old_failure = AttemptRecord {
        event_id: queued.id.clone(),
        event_name: queued.name().into(),
        attempt: 1,
        outcome: AttemptOutcome::Failed,
        status_code: Some(500),
        error: None,
        latency_ms: 1,
        at: Utc::now() - Duration::days(8),
    };
    let retry = AfterAttempt::RetryAt(Utc::now() + Duration::hours(1));
    hooks
        .record_attempt(job.delivery_id.clone(), h.id, old_failure, retry)
        .await
        .unwrap();
    copy_as_dead_letters(&hooks, job.delivery_id).await;
    let dead = MANY_DEAD_LETTERS as i64;
    assert_eq!(count(&hooks, "attempts").await, dead + 1);

    // The queued row's old attempt goes; every dead letter keeps its own.
    let pruned = hooks.prune(Utc::now() - Duration::days(7)).await.unwrap();
    assert_eq!(pruned, 1);
    assert_eq!(count(&hooks, "attempts").await, dead);
    assert_eq!(count(&hooks, "deliveries").await, dead + 1);
    assert_eq!(count(&hooks, "events").await, dead + 1);
}

async fn secrets_and_headers_are_sealed(t: TestDatabase) {
    let (_store, hooks, session, h, secret) = a_session_with_a_hook(&t).await;
    assert_eq!(hooks.webhook_secret(h.id).await.unwrap(), secret);
    assert_eq!(hooks.load_webhook(h.id).await.unwrap(), h);
    let raw: (Vec<u8>, Vec<u8>) = hooks
        .db
        .run(|c| {
            Ok(webhooks::table
                .select((webhooks::secret, webhooks::headers))
                .first(c)?)
        })
        .await
        .unwrap();
    let hay = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    assert!(!hay(&raw.0).contains(&secret[6..]));
    assert!(!hay(&raw.1).contains("t0ken"));
    let mut changed = h.clone();
    let patch = WebhookPatch {
        active: Some(false),
        events: Some(vec!["session.qr".into()]),
        ..no_change(h.updated_at)
    };
    patch.apply_to(&mut changed);
    assert_eq!(hooks.update_webhook(h.id, patch).await.unwrap(), changed);
    assert_eq!(hooks.load_webhook(h.id).await.unwrap(), changed);
    assert_eq!(
        hooks.webhook_secret(h.id).await.unwrap(),
        secret,
        "update keeps the secret"
    );
    assert_eq!(
        hooks.load_webhooks(Some(session.id)).await.unwrap(),
        vec![changed]
    );
    assert_eq!(
        hooks.load_webhooks(Some(Uuid::new_v4())).await.unwrap(),
        vec![]
    );
    assert!(matches!(
        hooks
            .insert_webhook(
                hook(
                    &SessionRecord::new(Uuid::new_v4(), "gone".into(), Utc::now()),
                    &["*"],
                    true
                ),
                secret
            )
            .await,
        Err(StoreError::NotFound)
    ));
}

fn no_change(updated_at: chrono::DateTime<Utc>) -> WebhookPatch {
    WebhookPatch {
        url: None,
        events: None,
        headers: None,
        active: None,
        max_attempts: None,
        updated_at,
    }
}

/// Two PATCHes of different fields, run at once, both stick: each writes
/// only its own fields.
async fn concurrent_patches_of_different_fields_both_stick(t: TestDatabase) {
    let (_store, hooks, _, h, _) = a_session_with_a_hook(&t).await;
    let later = h.updated_at + Duration::seconds(1);
    let url = WebhookPatch {
        url: Some("https://example.com/moved".into()),
        ..no_change(later)
    };
    let headers = WebhookPatch {
        headers: Some(vec![("X-Team".into(), "ops".into())]),
        max_attempts: Some(7),
        ..no_change(later)
    };
    let active = WebhookPatch {
        active: Some(false),
        ..no_change(later)
    };
    let (a, b, c) = futures::join!(
        hooks.update_webhook(h.id, url.clone()),
        hooks.update_webhook(h.id, headers.clone()),
        hooks.update_webhook(h.id, active.clone()),
    );
    a.unwrap();
    b.unwrap();
    c.unwrap();
    let mut want = h.clone();
    for patch in [url, headers, active] {
        patch.apply_to(&mut want);
    }
    assert_eq!(hooks.load_webhook(h.id).await.unwrap(), want);
    assert!(matches!(
        hooks.update_webhook(Uuid::new_v4(), no_change(later)).await,
        Err(StoreError::NotFound)
    ));
}

/// Dead letters untouched past their retention go, with their attempts;
/// younger ones stay; their events go with the next `prune`.
async fn dead_letters_age_out(t: TestDatabase) {
    let (store, hooks, mut session, h, _) = a_session_with_a_hook(&t).await;
    let (e1, e2) = (
        step(&mut session, status()),
        step(&mut session, disconnected()),
    );
    store
        .save_session(session.clone(), vec![e1.clone(), e2.clone()])
        .await
        .unwrap();
    for (e, days) in [(&e1, 40), (&e2, 10)] {
        let at = Utc::now() - Duration::days(days);
        attempt_head(&hooks, &h, e, AfterAttempt::Dead, at).await;
    }
    assert_eq!(hooks.outbox_depth().await.unwrap().dead, 2);
    // The usual prune keeps both; past 30 days the older one goes.
    hooks.prune(Utc::now() - Duration::days(7)).await.unwrap();
    assert_eq!(hooks.outbox_depth().await.unwrap().dead, 2);
    assert_eq!(
        hooks
            .prune_dead_letters(Utc::now() - Duration::days(30))
            .await
            .unwrap(),
        1
    );
    assert_eq!(hooks.outbox_depth().await.unwrap().dead, 1);
    let left = hooks.list_attempts(h.id, None, 10).await.unwrap();
    assert_eq!(left.len(), 1, "the aged-out letter's attempt went with it");
    assert_eq!(left[0].event_id, e2.id);
    // Its event is no longer referenced: the next prune takes it.
    hooks
        .prune(Utc::now() + Duration::seconds(1))
        .await
        .unwrap();
    assert_eq!(
        store.events_after(session.id, 0, 10).await.unwrap(),
        vec![e2.clone()]
    );
}

/// A stored event that no longer decodes must not block its webhook (nor
/// fail every poll): it is dead-lettered with an error that says corrupt,
/// counted, and the queue moves on.
async fn a_corrupt_outbox_row_is_dead_lettered_not_retried(t: TestDatabase) {
    let (store, hooks, mut session, h, _) = a_session_with_a_hook(&t).await;
    let (e1, e2) = (
        step(&mut session, status()),
        step(&mut session, disconnected()),
    );
    store
        .save_session(session.clone(), vec![e1.clone(), e2.clone()])
        .await
        .unwrap();
    let bad = e1.id.clone();
    hooks
        .db
        .run(move |c| {
            diesel::update(session_events::table.find(bad))
                .set(session_events::payload.eq(vec![0x0au8, 0x05, 0x01]))
                .execute(c)?;
            Ok(())
        })
        .await
        .unwrap();
    let corrupt_before = wasup_actors::metrics::METRICS.webhook_outbox_corrupt_rows();

    let first = hooks.due_deliveries(Utc::now(), vec![], 10).await;
    assert!(first.is_ok(), "one corrupt row failed the poll: {first:?}");
    let counts = hooks.outbox_depth().await.unwrap();
    assert_eq!((counts.pending, counts.dead), (1, 1));
    let attempts = hooks
        .list_attempts(h.id, Some(AttemptFilter::Dead), 10)
        .await
        .unwrap();
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].event_id, e1.id);
    let error = attempts[0].error.as_deref().unwrap_or_default();
    assert!(error.starts_with("corrupt outbox row"), "{error}");
    assert!(wasup_actors::metrics::METRICS.webhook_outbox_corrupt_rows() > corrupt_before);

    // The next poll delivers the good row behind it; the corrupt one is
    // never handed out again.
    let jobs = hooks.due_deliveries(Utc::now(), vec![], 10).await.unwrap();
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].event.id, e2.id);
}

both_backends!(
    outbox_rows_follow_the_state_change,
    retention_prunes_delivered_rows_and_keeps_dead_letters,
    prune_keeps_many_dead_letters_history,
    secrets_and_headers_are_sealed,
    concurrent_patches_of_different_fields_both_stick,
    dead_letters_age_out,
    a_corrupt_outbox_row_is_dead_lettered_not_retried,
);
