//! The message store on both backends.

use std::sync::Arc;

use chrono::{Duration, Utc};
use diesel::prelude::*;
use uuid::Uuid;
use wasup_actors::events::{session_event::Data, SessionEvent, StatusChanged};
use wasup_actors::model::SessionRecord;
use wasup_actors::outbound::*;
use wasup_actors::ports::Store;
use wasup_actors::webhook::{generate_secret, WebhookRecord, WebhookStore};

use super::{open_event, DbMessageStore};
use crate::crypto::SecretBox;
use crate::db::records::DbStore;
use crate::db::schema::{messages, session_events, webhook_deliveries};
use crate::db::testing::{both_backends, TestDatabase};
use crate::db::webhooks::DbWebhookStore;

struct Fixture {
    store: DbStore,
    msgs: DbMessageStore,
    hooks: DbWebhookStore,
    session: SessionRecord,
    secrets: Arc<SecretBox>,
}

async fn fixture(t: &TestDatabase, hook_events: &[&str]) -> Fixture {
    let db = t.open();
    let secrets = Arc::new(SecretBox::new(&[9u8; 32]));
    let store = DbStore::new(db.clone());
    let msgs = DbMessageStore::new(db.clone(), secrets.clone());
    let hooks = DbWebhookStore::new(db, secrets.clone());
    let mut session = SessionRecord::new(Uuid::new_v4(), "bot".into(), Utc::now());
    session.phone = Some("15550001111".into());
    store.insert_session(session.clone()).await.unwrap();
    let now = chrono::DateTime::from_timestamp_millis(Utc::now().timestamp_millis()).unwrap();
    if !hook_events.is_empty() {
        let h = WebhookRecord {
            id: Uuid::now_v7(),
            session_id: session.id,
            url: "https://example.com/hook".into(),
            events: hook_events.iter().map(|e| e.to_string()).collect(),
            headers: vec![],
            active: true,
            max_attempts: 3,
            created_at: now,
            updated_at: now,
        };
        hooks.insert_webhook(h, generate_secret()).await.unwrap();
    }
    Fixture {
        store,
        msgs,
        hooks,
        session,
        secrets,
    }
}

fn outbound(f: &Fixture, text: &str, key: Option<&str>, at_ms: i64) -> MessageRecord {
    let at = chrono::DateTime::from_timestamp_millis(at_ms).unwrap();
    MessageRecord {
        session_id: f.session.id,
        id: new_message_id(),
        direction: Direction::Out,
        chat_id: "15550002222@s.whatsapp.net".into(),
        sender: None,
        kind: "chat".into(),
        body: text.into(),
        status: MessageStatus::Pending,
        error: None,
        from_me: true,
        push_name: None,
        idempotency_key: key.map(str::to_string),
        context: MessageContext::default(),
        timestamp: at,
        created_at: at,
        updated_at: at,
    }
}

fn inbound(f: &Fixture, id: &str, text: &str) -> MessageRecord {
    let at = chrono::DateTime::from_timestamp_millis(Utc::now().timestamp_millis()).unwrap();
    MessageRecord {
        session_id: f.session.id,
        id: id.into(),
        direction: Direction::In,
        chat_id: "15550003333@s.whatsapp.net".into(),
        sender: Some("15550003333@s.whatsapp.net".into()),
        kind: "chat".into(),
        body: text.into(),
        status: MessageStatus::Received,
        error: None,
        from_me: false,
        push_name: Some("Ann".into()),
        idempotency_key: None,
        context: MessageContext::default(),
        timestamp: at,
        created_at: at,
        updated_at: at,
    }
}

async fn events(f: &Fixture) -> Vec<SessionEvent> {
    f.store.events(f.session.id).await.unwrap()
}

async fn deliveries(f: &Fixture) -> i64 {
    f.store
        .db()
        .run(|c| Ok(webhook_deliveries::table.count().get_result(c)?))
        .await
        .unwrap()
}

fn ack_statuses(events: &[SessionEvent]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match &e.data {
            Some(Data::MessageAck(a)) => Some(a.status.clone()),
            _ => None,
        })
        .collect()
}

async fn accept_replay_list_and_cancel(t: TestDatabase) {
    let f = fixture(&t, &[]).await;
    let base = Utc::now().timestamp_millis();
    let a = outbound(&f, "first", Some("k-1"), base);
    let Accepted::New(stored) = f.msgs.accept(a.clone()).await.unwrap() else {
        panic!("new")
    };
    assert_eq!(stored, a);
    // The same key again: the first message, not a second one.
    let again = outbound(&f, "other text", Some("k-1"), base + 1);
    assert_eq!(
        f.msgs.accept(again).await.unwrap(),
        Accepted::Replayed(a.clone())
    );
    assert_eq!(
        f.msgs
            .by_idempotency_key(f.session.id, "k-1".into())
            .await
            .unwrap(),
        Some(a.clone())
    );
    let b = outbound(&f, "second", None, base + 2);
    let c = outbound(&f, "third", None, base + 3);
    for m in [&b, &c] {
        f.msgs.accept(m.clone()).await.unwrap();
    }
    assert_eq!(
        f.msgs.get(f.session.id, b.id.clone()).await.unwrap(),
        Some(b.clone())
    );
    assert_eq!(f.msgs.get(f.session.id, "nope".into()).await.unwrap(), None);

    // Queue order is acceptance order; the list is newest first, paged.
    let ids = |v: Vec<MessageRecord>| v.into_iter().map(|m| m.id).collect::<Vec<_>>();
    assert_eq!(
        ids(f.msgs.pending(f.session.id, 10).await.unwrap()),
        vec![a.id.clone(), b.id.clone(), c.id.clone()]
    );
    assert_eq!(
        f.msgs.sessions_with_pending().await.unwrap(),
        vec![f.session.id]
    );
    let page = |before: Option<String>| MessageQuery {
        limit: 2,
        before,
        ..Default::default()
    };
    let first = ids(f.msgs.list(f.session.id, page(None)).await.unwrap());
    assert_eq!(first, vec![c.id.clone(), b.id.clone()]);
    let second = ids(f
        .msgs
        .list(f.session.id, page(Some(b.id.clone())))
        .await
        .unwrap());
    assert_eq!(second, vec![a.id.clone()]);
    let inbound_only = MessageQuery {
        direction: Some(Direction::In),
        limit: 10,
        ..Default::default()
    };
    assert!(f
        .msgs
        .list(f.session.id, inbound_only)
        .await
        .unwrap()
        .is_empty());

    // Cancel: pending only.
    assert_eq!(
        f.msgs.cancel(f.session.id, c.id.clone()).await.unwrap(),
        Cancelled::Deleted
    );
    assert_eq!(
        f.msgs.cancel(f.session.id, c.id.clone()).await.unwrap(),
        Cancelled::NotFound
    );
    f.msgs
        .set_status(
            f.session.id,
            b.id.clone(),
            StatusUpdate::now(MessageStatus::Sent, None),
        )
        .await
        .unwrap();
    assert_eq!(
        f.msgs.cancel(f.session.id, b.id.clone()).await.unwrap(),
        Cancelled::NotPending(MessageStatus::Sent)
    );
}

async fn statuses_move_forward_with_their_events(t: TestDatabase) {
    let f = fixture(&t, &["message.*"]).await;
    let m = outbound(&f, "hello", None, Utc::now().timestamp_millis());
    f.msgs.accept(m.clone()).await.unwrap();
    let set = |s: MessageStatus| {
        f.msgs
            .set_status(f.session.id, m.id.clone(), StatusUpdate::now(s, None))
    };
    assert!(set(MessageStatus::Sent).await.unwrap());
    assert!(!set(MessageStatus::Sent).await.unwrap(), "no second sent");
    assert_eq!(
        f.msgs
            .receipt(
                f.session.id,
                vec![m.id.clone(), "unknown".into()],
                StatusUpdate::now(MessageStatus::Read, None)
            )
            .await
            .unwrap(),
        1
    );
    // A late "delivered" after "read" changes nothing.
    assert!(!set(MessageStatus::Delivered).await.unwrap());
    let got = f
        .msgs
        .get(f.session.id, m.id.clone())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.status, MessageStatus::Read);
    // "read" skipped "delivered": both are told, in order.
    let evs = events(&f).await;
    assert_eq!(ack_statuses(&evs), vec!["sent", "delivered", "read"]);
    assert_eq!(deliveries(&f).await, 3);
    let seqs: Vec<u64> = evs.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, vec![1, 2, 3]);

    // A failure: one message.failed with the reason.
    let n = outbound(&f, "to nobody", None, Utc::now().timestamp_millis());
    f.msgs.accept(n.clone()).await.unwrap();
    f.msgs
        .set_status(
            f.session.id,
            n.id.clone(),
            StatusUpdate::now(MessageStatus::Failed, Some("not on WhatsApp".into())),
        )
        .await
        .unwrap();
    let last = events(&f).await.pop().unwrap();
    match last.data {
        Some(Data::MessageFailed(x)) => {
            assert_eq!(
                (x.message_id.as_str(), x.error.as_str()),
                (n.id.as_str(), "not on WhatsApp")
            );
            assert_eq!(x.chat_id, "15550002222@c.us");
        }
        other => panic!("{other:?}"),
    }
    assert!(f.msgs.pending(f.session.id, 10).await.unwrap().is_empty());
}

async fn session_and_message_events_share_one_sequence(t: TestDatabase) {
    let f = fixture(&t, &["*"]).await;
    let mut session = f.session.clone();
    let step = |r: &mut SessionRecord| {
        r.event_seq += 1;
        SessionEvent {
            id: format!("evt_{}", Uuid::now_v7().simple()),
            session_id: r.id.to_string(),
            session_name: r.name.clone(),
            seq: r.event_seq,
            timestamp_ms: Utc::now().timestamp_millis(),
            data: Some(Data::Status(StatusChanged {
                status: "initializing".into(),
                previous_status: "created".into(),
                last_error: None,
            })),
        }
    };
    let e = step(&mut session);
    f.store
        .save_session(session.clone(), vec![e])
        .await
        .unwrap();
    assert!(f
        .msgs
        .store_inbound(inbound(&f, "IN1", "hi"))
        .await
        .unwrap());
    assert!(f
        .msgs
        .store_inbound(inbound(&f, "IN2", "there"))
        .await
        .unwrap());
    let e = step(&mut session);
    f.store
        .save_session(session.clone(), vec![e])
        .await
        .unwrap();
    let evs = events(&f).await;
    let seqs: Vec<u64> = evs.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, vec![1, 2, 3, 4]);
    assert_eq!(
        evs.iter().map(|e| e.name()).collect::<Vec<_>>(),
        vec![
            "session.status",
            "message.received",
            "message.received",
            "session.status"
        ]
    );
    assert_eq!(deliveries(&f).await, 4);
}

async fn inbound_is_stored_once_and_sealed(t: TestDatabase) {
    let f = fixture(&t, &["message.received"]).await;
    let m = inbound(&f, "3A0000000000000001", "a secret text");
    assert!(f.msgs.store_inbound(m.clone()).await.unwrap());
    assert!(
        !f.msgs.store_inbound(m.clone()).await.unwrap(),
        "a redelivery"
    );
    assert_eq!(deliveries(&f).await, 1);
    assert_eq!(
        f.msgs.get(f.session.id, m.id.clone()).await.unwrap(),
        Some(m.clone())
    );

    // At rest: neither the row nor the event holds the text.
    let (body, payloads): (Vec<u8>, Vec<Vec<u8>>) = f
        .store
        .db()
        .run(|c| {
            let body = messages::table.select(messages::body).first::<Vec<u8>>(c)?;
            let p = session_events::table
                .select(session_events::payload)
                .load::<Vec<u8>>(c)?;
            Ok((body, p))
        })
        .await
        .unwrap();
    let needle = b"a secret text";
    assert!(!body.windows(needle.len()).any(|w| w == needle));
    for p in &payloads {
        assert!(!p.windows(needle.len()).any(|w| w == needle));
    }

    // A delivery opens it, with OpenWA's fields.
    let jobs = f
        .hooks
        .due_deliveries(Utc::now(), vec![], 10)
        .await
        .unwrap();
    assert_eq!(jobs.len(), 1);
    match &jobs[0].event.data {
        Some(Data::MessageReceived(d)) => {
            assert_eq!(d.body, "a secret text");
            assert!(d.sealed_body.is_empty());
            assert_eq!(
                (d.from.as_str(), d.to.as_str(), d.chat_id.as_str()),
                ("15550003333@c.us", "15550001111@c.us", "15550003333@c.us")
            );
            assert_eq!(d.push_name.as_deref(), Some("Ann"));
            assert!(!d.from_me && !d.is_group);
        }
        other => panic!("{other:?}"),
    }
    // With another key the body stays closed (and nothing panics).
    let mut e = events(&f).await.pop().unwrap();
    open_event(&mut e, &SecretBox::new(&[1u8; 32]));
    let _ = &f.secrets;
}

async fn retention_prunes_old_messages_but_not_pending(t: TestDatabase) {
    let f = fixture(&t, &[]).await;
    let old = (Utc::now() - Duration::days(40)).timestamp_millis();
    let sent = outbound(&f, "old and sent", None, old);
    let waiting = outbound(&f, "old and waiting", None, old + 1);
    let fresh = outbound(&f, "fresh", None, Utc::now().timestamp_millis());
    for m in [&sent, &waiting, &fresh] {
        f.msgs.accept(m.clone()).await.unwrap();
    }
    f.msgs
        .set_status(
            f.session.id,
            sent.id.clone(),
            StatusUpdate::now(MessageStatus::Sent, None),
        )
        .await
        .unwrap();
    let n = f
        .msgs
        .prune_messages(Utc::now() - Duration::days(30))
        .await
        .unwrap();
    assert_eq!(n, 1);
    assert_eq!(f.msgs.get(f.session.id, sent.id).await.unwrap(), None);
    assert!(f
        .msgs
        .get(f.session.id, waiting.id)
        .await
        .unwrap()
        .is_some());
    assert!(f.msgs.get(f.session.id, fresh.id).await.unwrap().is_some());
    // A deleted session takes its messages with it.
    f.store.delete_session(f.session.id).await.unwrap();
    assert!(f.msgs.sessions_with_pending().await.unwrap().is_empty());
}

/// Accepts that arrive together are committed as one group: every request
/// gets its own answer, a key used twice in one group stores one message,
/// and every new message is stored once.
async fn concurrent_accepts_are_grouped_and_each_answered(t: TestDatabase) {
    let f = fixture(&t, &[]).await;
    let base = Utc::now().timestamp_millis();
    let sends: Vec<MessageRecord> = (0..120)
        .map(|i| {
            // Every tenth request reuses one key.
            let key = (i % 10 == 0).then_some("same-key");
            outbound(&f, &format!("text {i}"), key, base + i)
        })
        .collect();
    let answers = futures::future::join_all(sends.iter().map(|m| f.msgs.accept(m.clone()))).await;
    let mut new = 0;
    let mut replayed = Vec::new();
    for answer in answers {
        match answer.unwrap() {
            Accepted::New(_) => new += 1,
            Accepted::Replayed(m) => replayed.push(m.id),
        }
    }
    // 108 without a key, plus the first of the 12 with it.
    assert_eq!(new, 109);
    assert_eq!(replayed.len(), 11);
    let first_keyed = replayed[0].clone();
    assert!(replayed.iter().all(|id| *id == first_keyed));
    let stored: i64 = f
        .store
        .db()
        .run(|c| Ok(messages::table.count().get_result(c)?))
        .await
        .unwrap();
    assert_eq!(stored, 109);
}

/// A reply's mentions and quote come back as stored, and the quoted text is
/// sealed like a body.
async fn context_round_trips_sealed(t: TestDatabase) {
    let f = fixture(&t, &[]).await;
    let quoted = inbound(&f, "3A0000000000000009", "the quoted secret");
    f.msgs.store_inbound(quoted.clone()).await.unwrap();
    let mut reply = outbound(&f, "a reply", None, Utc::now().timestamp_millis());
    reply.context = MessageContext {
        mentions: vec![
            "15550003333@s.whatsapp.net".into(),
            "100000001234@lid".into(),
        ],
        quoted: Some(QuotedMessage::of(&quoted)),
    };
    f.msgs.accept(reply.clone()).await.unwrap();
    let back = f.msgs.get(f.session.id, reply.id.clone()).await.unwrap();
    assert_eq!(back, Some(reply.clone()));
    let q = back.unwrap().context.quoted.unwrap();
    assert_eq!(
        (q.id.as_str(), q.author.as_deref()),
        ("3A0000000000000009", Some("15550003333@s.whatsapp.net"))
    );
    // The queue head carries it too (the send reads it from there).
    let head = f.msgs.pending(f.session.id, 1).await.unwrap();
    assert_eq!(head[0].context, reply.context);

    let contexts: Vec<Option<Vec<u8>>> = f
        .store
        .db()
        .run(|c| Ok(messages::table.select(messages::context).load(c)?))
        .await
        .unwrap();
    let needle = b"the quoted secret";
    let sealed: Vec<&Vec<u8>> = contexts.iter().flatten().collect();
    assert_eq!(sealed.len(), 1, "only the reply has a context");
    assert!(!sealed[0].windows(needle.len()).any(|w| w == needle));
}

/// A burst of inbound messages and receipts is one transaction: each is
/// applied as on its own (a repeated message once, receipts forward with
/// their events), and one for a session that is gone is skipped without
/// undoing the rest.
async fn inbound_batches_apply_each_item_in_order(t: TestDatabase) {
    use wasup_actors::ports::{InboundEvent, InboundMsg};
    let f = fixture(&t, &["message.*"]).await;
    let out = outbound(&f, "to be read", None, Utc::now().timestamp_millis());
    f.msgs.accept(out.clone()).await.unwrap();
    let m = inbound(&f, "3A00000000000000B1", "hello");
    let at = Utc::now();
    let receipt = |status| InboundMsg {
        session_id: f.session.id,
        event: InboundEvent::Receipt {
            ids: vec![out.id.clone()],
            status,
            at,
        },
    };
    let batch = vec![
        InboundMsg {
            session_id: f.session.id,
            event: InboundEvent::Message(m.clone()),
        },
        InboundMsg {
            session_id: Uuid::now_v7(),
            event: InboundEvent::Message(m.clone()),
        },
        receipt(MessageStatus::Delivered),
        InboundMsg {
            session_id: f.session.id,
            event: InboundEvent::Message(m.clone()),
        },
        receipt(MessageStatus::Read),
    ];
    f.msgs.record_inbound(batch.clone()).await.unwrap();
    // Given again (a retry after an error): nothing changes.
    f.msgs.record_inbound(batch).await.unwrap();
    let got = f
        .msgs
        .get(f.session.id, out.id.clone())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.status, MessageStatus::Read);
    let names: Vec<&str> = events(&f).await.iter().map(|e| e.name()).collect();
    assert_eq!(
        names,
        [
            "message.received",
            "message.ack",
            "message.ack",
            "message.ack"
        ],
        "received once; sent, delivered, read in order"
    );
    let stored = f
        .msgs
        .list(
            f.session.id,
            MessageQuery {
                limit: 10,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(stored.len(), 2);
}

both_backends!(
    inbound_batches_apply_each_item_in_order,
    context_round_trips_sealed,
    accept_replay_list_and_cancel,
    statuses_move_forward_with_their_events,
    session_and_message_events_share_one_sequence,
    inbound_is_stored_once_and_sealed,
    retention_prunes_old_messages_but_not_pending,
    concurrent_accepts_are_grouped_and_each_answered,
);
