//! DbStore on both backends. Every test below is an `async fn(DbStore)`;
//! `both_backends!` runs it once on a fresh SQLite file (`sqlite::name`) and
//! once on a fresh PostgreSQL database (`postgres::name`, skipped with a
//! note unless WASUP_TEST_DATABASE_URL is set).

use chrono::{DateTime, Duration, Utc};
use diesel::prelude::*;
use uuid::Uuid;
use wasup_actors::events::{
    session_event::Data, Authenticated, QrRotated, SessionEvent, StatusChanged,
};
use wasup_actors::model::*;
use wasup_actors::ports::{Store, StoreError};

use super::DbStore;
use crate::db::schema::session_events;

macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    let t = crate::db::testing::TestDatabase::sqlite();
                    super::$name(super::DbStore::new(t.open())).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    let Some(t) = crate::db::testing::TestDatabase::postgres(
                        concat!("db::records::tests::postgres::", stringify!($name)),
                    ) else {
                        return;
                    };
                    super::$name(super::DbStore::new(t.open())).await;
                }
            )*
        }
    };
}

both_backends!(
    ping_answers,
    session_round_trips_every_field,
    session_name_or_id_taken_is_a_conflict,
    save_session_writes_state_and_events_together,
    save_session_clears_fields_set_to_none,
    duplicate_seq_is_refused_and_state_rolls_back,
    malformed_event_batch_is_refused_before_writing,
    save_session_on_deleted_session_is_not_found,
    delete_session_cascades_to_events,
    events_after_pages_by_seq,
    api_keys_round_trip_and_revoke,
    api_key_hash_is_unique,
    concurrent_saves_all_commit,
    qr_payloads_do_not_outlive_the_qr,
);

/// Now, truncated to what the database keeps (milliseconds).
fn now() -> DateTime<Utc> {
    DateTime::from_timestamp_millis(Utc::now().timestamp_millis()).unwrap()
}

fn minimal_session(name: &str) -> SessionRecord {
    SessionRecord::new(Uuid::new_v4(), name.to_string(), now())
}

fn full_session(name: &str) -> SessionRecord {
    let t = now();
    SessionRecord {
        id: Uuid::new_v4(),
        name: name.to_string(),
        config: std::sync::Arc::new(SessionConfig {
            metadata: Some(serde_json::json!({"team": "ops", "tags": ["a", "b"], "n": 3})),
            max_reconnect_attempts: Some(7),
            reconnect_base_delay: Some(2500),
            auto_reject_calls: Some(true),
            sending: Some(SendingConfig {
                min_delay_ms: Some(0),
                per_minute: Some(0),
                ..Default::default()
            }),
        }),
        proxy_url: Some("socks5://user:secret@10.0.0.1:1080".into()),
        proxy_type: Some(ProxyType::Socks5),
        desired: DesiredState::Running,
        status: SessionStatus::Failed,
        last_error: Some("Reconnection failed after 5 attempts: timeout".into()),
        phone: Some("628123456789".into()),
        push_name: Some("Bot ✓ «ü»".into()),
        connected_at: Some(t - Duration::minutes(5)),
        last_active: Some(t - Duration::seconds(3)),
        created_at: t - Duration::hours(1),
        updated_at: t,
        event_seq: 42,
        created_by: Some(Uuid::new_v4()),
    }
}

fn event(record: &SessionRecord, seq: u64, data: Data) -> SessionEvent {
    SessionEvent {
        id: format!("evt_{}", Uuid::now_v7().simple()),
        session_id: record.id.to_string(),
        session_name: record.name.clone(),
        seq,
        timestamp_ms: now().timestamp_millis(),
        data: Some(data),
    }
}

fn status(to: SessionStatus, from: SessionStatus) -> Data {
    Data::Status(StatusChanged {
        status: to.as_str().into(),
        previous_status: from.as_str().into(),
        last_error: None,
    })
}

/// Advance `record` to `to`, with one status event per step.
fn transition(record: &mut SessionRecord, to: SessionStatus) -> SessionEvent {
    let from = record.status;
    record.status = to;
    record.event_seq += 1;
    record.updated_at = now();
    event(record, record.event_seq, status(to, from))
}

async fn event_rows(store: &DbStore) -> i64 {
    store
        .db()
        .run(|c| Ok(session_events::table.count().get_result::<i64>(c)?))
        .await
        .unwrap()
}

fn api_key(name: &str, hash_byte: u8) -> ApiKeyRecord {
    ApiKeyRecord {
        id: Uuid::new_v4(),
        name: name.into(),
        key_prefix: "wsp_AbCdEfGh".into(),
        key_hash: [hash_byte; 32],
        role: Role::Operator,
        allowed_sessions: None,
        expires_at: None,
        created_at: now(),
        revoked_at: None,
    }
}

// ------------------------------------------------------------------ tests

fn qr(text: &str, expires_at_ms: i64) -> Data {
    Data::Qr(QrRotated {
        qr: text.into(),
        expires_at_ms,
        expired: false,
    })
}

/// The QR texts still readable in a session's stored events, and how many
/// stored rows hold any of `texts` in their raw bytes.
async fn live_qrs(store: &DbStore, id: SessionId, texts: &[&str]) -> (Vec<String>, usize) {
    let live = store
        .events(id)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|e| match e.data {
            Some(Data::Qr(q)) if !q.expired => Some(q.qr),
            _ => None,
        })
        .collect();
    let texts: Vec<Vec<u8>> = texts.iter().map(|t| t.as_bytes().to_vec()).collect();
    let raw = store
        .db()
        .run(move |c| {
            Ok(session_events::table
                .select(session_events::payload)
                .load::<Vec<u8>>(c)?)
        })
        .await
        .unwrap();
    let holding = raw
        .iter()
        .filter(|p| {
            texts
                .iter()
                .any(|t| p.windows(t.len()).any(|w| w == &t[..]))
        })
        .count();
    (live, holding)
}

/// A QR's text stays in the log only while the QR lives: a newer event of
/// the session (QR or status, in a later batch or the same one) blanks it,
/// and so does the prune once it expired with nothing after it. The
/// blanked event keeps its id, seq and expiry and says `expired`.
async fn qr_payloads_do_not_outlive_the_qr(store: DbStore) {
    let mut record = minimal_session("qr-life");
    store.insert_session(record.clone()).await.unwrap();
    let later = now().timestamp_millis() + 60_000;
    let texts = ["2@first-qr", "2@second-qr", "2@batched-qr", "2@lapsed-qr"];
    let save = |record: &SessionRecord, events: Vec<SessionEvent>| {
        let (store, record) = (store.clone(), record.clone());
        async move { store.save_session(record, events).await.unwrap() }
    };

    let mut batch = vec![transition(&mut record, SessionStatus::QrReady)];
    record.event_seq += 1;
    batch.push(event(&record, record.event_seq, qr(texts[0], later)));
    save(&record, batch).await;
    assert_eq!(
        live_qrs(&store, record.id, &texts).await,
        (vec![texts[0].to_string()], 1)
    );

    // A newer QR supersedes it.
    record.event_seq += 1;
    let second = event(&record, record.event_seq, qr(texts[1], later));
    save(&record, vec![second]).await;
    assert_eq!(
        live_qrs(&store, record.id, &texts).await,
        (vec![texts[1].to_string()], 1)
    );

    // A status change ends it; a QR followed by another event in one batch
    // is stored blanked at once.
    record.event_seq += 1;
    let batched = event(&record, record.event_seq, qr(texts[2], later));
    let status = transition(&mut record, SessionStatus::Disconnected);
    save(&record, vec![batched.clone(), status]).await;
    assert_eq!(live_qrs(&store, record.id, &texts).await, (vec![], 0));
    let stored = store.events(record.id).await.unwrap();
    let Some(Data::Qr(q)) = &stored[3].data else {
        panic!("not a QR: {:?}", stored[3]);
    };
    assert_eq!(stored[3].id, batched.id);
    assert!(q.expired && q.qr.is_empty());
    assert_eq!(q.expires_at_ms, later);

    // The last event is a QR that lapsed (the process stopped while the
    // session waited): the prune blanks it, a live one it keeps.
    record.event_seq += 1;
    let past = now().timestamp_millis() - 1;
    let lapsed = event(&record, record.event_seq, qr(texts[3], past));
    save(&record, vec![lapsed]).await;
    let mut other = minimal_session("qr-live");
    store.insert_session(other.clone()).await.unwrap();
    other.event_seq += 1;
    let live = event(&other, other.event_seq, qr("2@other-live", later));
    store.save_session(other.clone(), vec![live]).await.unwrap();
    let blanked = store
        .db()
        .run(|c| crate::db::qr_log::expire_lapsed(c, now().timestamp_millis() + 1))
        .await
        .unwrap();
    assert_eq!(blanked, 1);
    assert_eq!(live_qrs(&store, record.id, &texts).await, (vec![], 0));
    assert_eq!(
        live_qrs(&store, other.id, &["2@other-live"]).await.1,
        1,
        "a live QR keeps its text"
    );
}

async fn ping_answers(store: DbStore) {
    store.ping().await.unwrap();
}

async fn session_round_trips_every_field(store: DbStore) {
    let full = full_session("full-one");
    let mut minimal = minimal_session("minimal-one");
    minimal.created_at = full.created_at + Duration::minutes(1); // newest first
                                                                 // An empty config object and no proxy: every Option is None.
    store.insert_session(full.clone()).await.unwrap();
    store.insert_session(minimal.clone()).await.unwrap();

    assert_eq!(store.load_session(full.id).await.unwrap(), full);
    assert_eq!(store.load_session(minimal.id).await.unwrap(), minimal);
    assert_eq!(
        store.load_sessions().await.unwrap(),
        vec![minimal.clone(), full.clone()]
    );
    assert!(matches!(
        store.load_session(Uuid::new_v4()).await,
        Err(StoreError::NotFound)
    ));

    // Each proxy type and status survives too.
    for (i, (proxy, status)) in [
        (ProxyType::Http, SessionStatus::Initializing),
        (ProxyType::Https, SessionStatus::QrReady),
        (ProxyType::Socks5, SessionStatus::Authenticating),
        (ProxyType::Http, SessionStatus::Ready),
        (ProxyType::Https, SessionStatus::Disconnected),
    ]
    .into_iter()
    .enumerate()
    {
        let mut r = minimal_session(&format!("variant-{i}"));
        r.proxy_url = Some(format!("{}://proxy.example:8080", proxy.as_str()));
        r.proxy_type = Some(proxy);
        r.status = status;
        store.insert_session(r.clone()).await.unwrap();
        assert_eq!(store.load_session(r.id).await.unwrap(), r);
    }
}

async fn session_name_or_id_taken_is_a_conflict(store: DbStore) {
    let first = minimal_session("taken");
    store.insert_session(first.clone()).await.unwrap();

    let same_name = minimal_session("taken");
    assert!(matches!(
        store.insert_session(same_name).await,
        Err(StoreError::Conflict(_))
    ));
    let mut same_id = minimal_session("other");
    same_id.id = first.id;
    assert!(matches!(
        store.insert_session(same_id).await,
        Err(StoreError::Conflict(_))
    ));
    // Names are case-sensitive on both backends.
    store
        .insert_session(minimal_session("TAKEN"))
        .await
        .unwrap();
    assert_eq!(store.load_sessions().await.unwrap().len(), 2);
    assert_eq!(store.load_session(first.id).await.unwrap(), first);
}

async fn save_session_writes_state_and_events_together(store: DbStore) {
    let mut record = minimal_session("saver");
    store.insert_session(record.clone()).await.unwrap();

    // One save with three events: initializing → qr_ready (+ a QR).
    let mut events = vec![transition(&mut record, SessionStatus::Initializing)];
    events.push(transition(&mut record, SessionStatus::QrReady));
    record.event_seq += 1;
    events.push(event(
        &record,
        record.event_seq,
        Data::Qr(QrRotated {
            qr: "2@abc,def,ghi".into(),
            expires_at_ms: now().timestamp_millis() + 60_000,
            expired: false,
        }),
    ));
    record.desired = DesiredState::Running;
    store
        .save_session(record.clone(), events.clone())
        .await
        .unwrap();
    assert_eq!(store.load_session(record.id).await.unwrap(), record);
    assert_eq!(store.events(record.id).await.unwrap(), events);

    // A second save continues the sequence.
    let mut more = vec![transition(&mut record, SessionStatus::Authenticating)];
    record.phone = Some("628111".into());
    record.push_name = Some("Me".into());
    record.event_seq += 1;
    more.push(event(
        &record,
        record.event_seq,
        Data::Authenticated(Authenticated {
            phone: "628111".into(),
            push_name: Some("Me".into()),
        }),
    ));
    more.push(transition(&mut record, SessionStatus::Ready));
    record.connected_at = Some(now());
    store
        .save_session(record.clone(), more.clone())
        .await
        .unwrap();

    assert_eq!(store.load_session(record.id).await.unwrap(), record);
    let stored = store.events(record.id).await.unwrap();
    assert_eq!(stored.len(), 6);
    assert_eq!(
        stored.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5, 6]
    );
    // The QR's life ended with the next event: the log keeps it blanked.
    let mut first = events.clone();
    if let Some(Data::Qr(q)) = &mut first[2].data {
        q.expire();
    }
    assert_eq!(&stored[..3], &first[..]);
    assert_eq!(&stored[3..], &more[..]);
    assert_eq!(record.event_seq, 6);

    // A save without events (e.g. last_active moved) writes the state only.
    record.last_active = Some(now() + Duration::seconds(1));
    store.save_session(record.clone(), vec![]).await.unwrap();
    assert_eq!(store.load_session(record.id).await.unwrap(), record);
    assert_eq!(store.events(record.id).await.unwrap().len(), 6);
}

async fn save_session_clears_fields_set_to_none(store: DbStore) {
    let mut record = full_session("clearer");
    store.insert_session(record.clone()).await.unwrap();
    // A logout: phone, push name, error, proxy and timestamps cleared.
    record.phone = None;
    record.push_name = None;
    record.last_error = None;
    record.connected_at = None;
    record.last_active = None;
    record.proxy_url = None;
    record.proxy_type = None;
    record.config = Default::default();
    record.desired = DesiredState::Stopped;
    let e = transition(&mut record, SessionStatus::Disconnected);
    store.save_session(record.clone(), vec![e]).await.unwrap();
    assert_eq!(store.load_session(record.id).await.unwrap(), record);
}

async fn duplicate_seq_is_refused_and_state_rolls_back(store: DbStore) {
    let mut record = minimal_session("dupe");
    store.insert_session(record.clone()).await.unwrap();
    let first = vec![
        transition(&mut record, SessionStatus::Initializing),
        transition(&mut record, SessionStatus::QrReady),
    ];
    store
        .save_session(record.clone(), first.clone())
        .await
        .unwrap();
    let saved = record.clone();

    // A well-formed batch (2, 3) whose seq 2 is already stored: the whole
    // write is refused, the new status included.
    let mut stale = saved.clone();
    stale.event_seq = 1;
    let replay = vec![
        transition(&mut stale, SessionStatus::Authenticating),
        transition(&mut stale, SessionStatus::Ready),
    ];
    assert_eq!(stale.event_seq, 3);
    assert!(matches!(
        store.save_session(stale, replay).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(store.load_session(record.id).await.unwrap(), saved);
    assert_eq!(store.events(record.id).await.unwrap(), first);

    // A retry of an event already written (same id, new seq) is refused too.
    let mut again = saved.clone();
    let mut e = transition(&mut again, SessionStatus::Ready);
    e.id = first[1].id.clone();
    assert!(matches!(
        store.save_session(again, vec![e]).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(store.load_session(record.id).await.unwrap(), saved);
    assert_eq!(event_rows(&store).await, 2);
}

async fn malformed_event_batch_is_refused_before_writing(store: DbStore) {
    let mut record = minimal_session("malformed");
    store.insert_session(record.clone()).await.unwrap();
    let saved = record.clone();

    // Gap in seqs.
    let a = transition(&mut record, SessionStatus::Initializing);
    record.event_seq += 1;
    let b = transition(&mut record, SessionStatus::QrReady);
    assert!(matches!(
        store.save_session(record.clone(), vec![a, b]).await,
        Err(StoreError::Conflict(_))
    ));

    // Last seq differs from the record's event_seq.
    let mut r = saved.clone();
    let e = transition(&mut r, SessionStatus::Initializing);
    r.event_seq = 5;
    assert!(matches!(
        store.save_session(r, vec![e]).await,
        Err(StoreError::Conflict(_))
    ));

    // An event of another session.
    let mut r = saved.clone();
    let mut e = transition(&mut r, SessionStatus::Initializing);
    e.session_id = Uuid::new_v4().to_string();
    assert!(matches!(
        store.save_session(r, vec![e]).await,
        Err(StoreError::Conflict(_))
    ));

    assert_eq!(store.load_session(saved.id).await.unwrap(), saved);
    assert_eq!(event_rows(&store).await, 0);
}

async fn save_session_on_deleted_session_is_not_found(store: DbStore) {
    let mut record = minimal_session("ghost");
    // Never inserted.
    let e = transition(&mut record, SessionStatus::Initializing);
    assert!(matches!(
        store.save_session(record.clone(), vec![e.clone()]).await,
        Err(StoreError::NotFound)
    ));
    // Inserted, then deleted.
    let mut record = minimal_session("ghost");
    store.insert_session(record.clone()).await.unwrap();
    store.delete_session(record.id).await.unwrap();
    let e = transition(&mut record, SessionStatus::Initializing);
    assert!(matches!(
        store.save_session(record.clone(), vec![e]).await,
        Err(StoreError::NotFound)
    ));
    assert!(store.load_sessions().await.unwrap().is_empty());
    assert_eq!(event_rows(&store).await, 0);
}

async fn delete_session_cascades_to_events(store: DbStore) {
    let mut gone = minimal_session("gone");
    let mut kept = minimal_session("kept");
    store.insert_session(gone.clone()).await.unwrap();
    store.insert_session(kept.clone()).await.unwrap();
    let e = vec![
        transition(&mut gone, SessionStatus::Initializing),
        transition(&mut gone, SessionStatus::QrReady),
    ];
    store.save_session(gone.clone(), e).await.unwrap();
    let k = vec![transition(&mut kept, SessionStatus::Initializing)];
    store.save_session(kept.clone(), k.clone()).await.unwrap();
    assert_eq!(event_rows(&store).await, 3);

    store.delete_session(gone.id).await.unwrap();
    assert!(store.events(gone.id).await.unwrap().is_empty());
    assert_eq!(event_rows(&store).await, 1);
    assert_eq!(store.events(kept.id).await.unwrap(), k);
    assert_eq!(store.load_sessions().await.unwrap(), vec![kept]);
    assert!(matches!(
        store.delete_session(gone.id).await,
        Err(StoreError::NotFound)
    ));
    // The name is free again.
    store.insert_session(minimal_session("gone")).await.unwrap();
}

async fn events_after_pages_by_seq(store: DbStore) {
    let mut record = minimal_session("pager");
    store.insert_session(record.clone()).await.unwrap();
    let mut all = Vec::new();
    for to in [
        SessionStatus::Initializing,
        SessionStatus::QrReady,
        SessionStatus::Authenticating,
        SessionStatus::Ready,
        SessionStatus::Disconnected,
    ] {
        let e = transition(&mut record, to);
        store
            .save_session(record.clone(), vec![e.clone()])
            .await
            .unwrap();
        all.push(e);
    }
    let page = store.events_after(record.id, 1, 2).await.unwrap();
    assert_eq!(page, all[1..3].to_vec());
    let rest = store.events_after(record.id, 3, 100).await.unwrap();
    assert_eq!(rest, all[3..].to_vec());
    assert!(store
        .events_after(record.id, 5, 10)
        .await
        .unwrap()
        .is_empty());
    assert!(store.events(Uuid::new_v4()).await.unwrap().is_empty());
}

async fn api_keys_round_trip_and_revoke(store: DbStore) {
    assert_eq!(store.count_api_keys().await.unwrap(), 0);
    let t = now();
    let mut admin = api_key("admin", 1);
    admin.role = Role::Admin;
    admin.created_at = t - Duration::hours(2);
    let scoped = ApiKeyRecord {
        role: Role::Viewer,
        allowed_sessions: Some(vec![Uuid::new_v4(), Uuid::new_v4()]),
        expires_at: Some(t + Duration::days(30)),
        created_at: t - Duration::hours(1),
        ..api_key("scoped", 2)
    };
    let empty_scope = ApiKeyRecord {
        allowed_sessions: Some(vec![]),
        revoked_at: Some(t),
        created_at: t,
        ..api_key("empty-scope", 3)
    };
    for k in [&admin, &scoped, &empty_scope] {
        store.insert_api_key(k.clone()).await.unwrap();
    }
    assert_eq!(
        store.load_api_keys().await.unwrap(),
        vec![empty_scope.clone(), scoped.clone(), admin.clone()]
    );
    assert_eq!(store.count_api_keys().await.unwrap(), 3);

    // Revoke: set once, idempotent, NotFound for an unknown id.
    let at = t + Duration::seconds(5);
    store.revoke_api_key(scoped.id, at).await.unwrap();
    store
        .revoke_api_key(scoped.id, at + Duration::seconds(10))
        .await
        .unwrap();
    assert!(matches!(
        store.revoke_api_key(Uuid::new_v4(), at).await,
        Err(StoreError::NotFound)
    ));
    let keys = store.load_api_keys().await.unwrap();
    let revoked = keys.iter().find(|k| k.id == scoped.id).unwrap();
    assert_eq!(
        revoked,
        &ApiKeyRecord {
            revoked_at: Some(at),
            ..scoped.clone()
        }
    );
    assert_eq!(keys.iter().find(|k| k.id == admin.id).unwrap(), &admin);
    // Revoked keys still count: "first boot" means no key ever.
    assert_eq!(store.count_api_keys().await.unwrap(), 3);
}

async fn api_key_hash_is_unique(store: DbStore) {
    store.insert_api_key(api_key("one", 9)).await.unwrap();
    assert!(matches!(
        store.insert_api_key(api_key("two", 9)).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(store.count_api_keys().await.unwrap(), 1);
}

/// Sessions saved concurrently (more writers than pooled connections) all
/// commit: SQLite writers wait for the lock instead of failing, and each
/// session's log stays gapless.
async fn concurrent_saves_all_commit(store: DbStore) {
    const SESSIONS: usize = 12;
    const SAVES: u64 = 8;
    let mut records = Vec::new();
    for i in 0..SESSIONS {
        let r = minimal_session(&format!("busy-{i}"));
        store.insert_session(r.clone()).await.unwrap();
        records.push(r);
    }
    let writers = records.iter().cloned().map(|mut record| {
        let store = store.clone();
        async move {
            for i in 0..SAVES {
                let to = if i % 2 == 0 {
                    SessionStatus::Initializing
                } else {
                    SessionStatus::QrReady
                };
                let e = transition(&mut record, to);
                store.save_session(record.clone(), vec![e]).await.unwrap();
                // Readers run beside the writers.
                store.load_sessions().await.unwrap();
            }
            record
        }
    });
    let finished = futures::future::join_all(writers).await;
    for record in finished {
        assert_eq!(store.load_session(record.id).await.unwrap(), record);
        let seqs: Vec<u64> = store
            .events(record.id)
            .await
            .unwrap()
            .iter()
            .map(|e| e.seq)
            .collect();
        assert_eq!(seqs, (1..=SAVES).collect::<Vec<_>>());
    }
    assert_eq!(event_rows(&store).await, (SESSIONS as u64 * SAVES) as i64);
}

// ------------------------------------------------------- whole-database tests

/// Reopening a database applies no migration twice and keeps the records.
#[tokio::test]
async fn reopen_keeps_records() {
    for t in crate::db::testing::TestDatabase::all("db::records::tests::reopen_keeps_records") {
        let mut record = full_session("survivor");
        let key = api_key("k", 4);
        {
            let store = DbStore::new(t.open());
            store.insert_session(record.clone()).await.unwrap();
            let e = transition(&mut record, SessionStatus::Ready);
            store.save_session(record.clone(), vec![e]).await.unwrap();
            store.insert_api_key(key.clone()).await.unwrap();
        }
        let store = DbStore::new(t.open());
        assert_eq!(store.load_sessions().await.unwrap(), vec![record.clone()]);
        assert_eq!(store.load_api_keys().await.unwrap(), vec![key]);
        assert_eq!(store.events(record.id).await.unwrap().len(), 1);
    }
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord, QueryableByName)]
struct ColumnInfo {
    #[diesel(sql_type = diesel::sql_types::Text)]
    table_name: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    column_name: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    data_type: String,
    #[diesel(sql_type = diesel::sql_types::Bool)]
    not_null: bool,
}

async fn columns(db: &crate::db::Db) -> Vec<ColumnInfo> {
    use crate::db::DbConn;
    let mut cols = db
        .run(|conn| {
            Ok(match conn {
                DbConn::Sqlite(c) => diesel::sql_query(
                    "SELECT m.name AS table_name, p.name AS column_name, \
                            lower(p.type) AS data_type, p.\"notnull\" <> 0 AS not_null \
                     FROM sqlite_master m JOIN pragma_table_info(m.name) p \
                     WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite_%' \
                       AND m.name <> '__diesel_schema_migrations'",
                )
                .load::<ColumnInfo>(c)?,
                DbConn::Postgres(c) => diesel::sql_query(
                    "SELECT table_name::text AS table_name, column_name::text AS column_name, \
                            data_type::text AS data_type, is_nullable = 'NO' AS not_null \
                     FROM information_schema.columns \
                     WHERE table_schema = current_schema() \
                       AND table_name <> '__diesel_schema_migrations'",
                )
                .load::<ColumnInfo>(c)?,
            })
        })
        .await
        .unwrap();
    for c in &mut cols {
        // The same logical type, spelled per backend.
        if c.data_type == "bytea" {
            c.data_type = "blob".into();
        }
    }
    cols.sort();
    cols
}

/// The two migration folders must describe one logical schema: the same
/// tables, columns, types and nullability (this covers every migration,
/// not only the records one).
#[tokio::test]
async fn both_backends_have_the_same_columns() {
    let Some(pg) = crate::db::testing::TestDatabase::postgres(
        "db::records::tests::both_backends_have_the_same_columns",
    ) else {
        return;
    };
    let lite = crate::db::testing::TestDatabase::sqlite();
    let (lite_cols, pg_cols) = (columns(&lite.open()).await, columns(&pg.open()).await);
    assert!(lite_cols.iter().any(|c| c.table_name == "session_events"));
    assert_eq!(lite_cols, pg_cols);
}
