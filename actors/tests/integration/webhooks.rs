//! The WebhookActor against in-memory fakes of its ports: per-webhook order,
//! retries that keep the event, dead letters that stop blocking the queue,
//! and the API messages' roles and scopes.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use parking_lot::Mutex;
use uuid::Uuid;
use wasup_actors::events::{session_event::Data, SessionEvent, StatusChanged};
use wasup_actors::model::*;
use wasup_actors::ports::StoreError;
use wasup_actors::registry::SessionRegistry;
use wasup_actors::webhook::*;
use wasup_actors::WebError;

#[derive(Clone)]
struct Row {
    id: String,
    webhook: WebhookId,
    event: SessionEvent,
    status: &'static str,
    attempts: u32,
    next_at: DateTime<Utc>,
}

#[derive(Default)]
struct Inner {
    hooks: HashMap<WebhookId, (WebhookRecord, String)>,
    rows: Vec<Row>,
    attempts: Vec<(WebhookId, AttemptRecord)>,
}

#[derive(Clone, Default)]
struct FakeStore(Arc<Mutex<Inner>>);

fn ready<T: Send + 'static>(v: T) -> BoxFuture<'static, T> {
    Box::pin(async move { v })
}

impl FakeStore {
    /// Something read from one webhook (record and secret); `NotFound` when gone.
    fn read_hook<T: Send + 'static>(
        &self,
        id: WebhookId,
        read: impl FnOnce(&(WebhookRecord, String)) -> T,
    ) -> StoreFuture<T> {
        ready(
            self.0
                .lock()
                .hooks
                .get(&id)
                .map(read)
                .ok_or(StoreError::NotFound),
        )
    }
}

impl WebhookStore for FakeStore {
    fn insert_webhook(&self, r: WebhookRecord, s: String) -> StoreFuture<()> {
        self.0.lock().hooks.insert(r.id, (r, s));
        ready(Ok(()))
    }
    fn load_webhooks(&self, session: Option<SessionId>) -> StoreFuture<Vec<WebhookRecord>> {
        let all = self
            .0
            .lock()
            .hooks
            .values()
            .map(|(r, _)| r.clone())
            .filter(|r| session.is_none_or(|s| s == r.session_id))
            .collect();
        ready(Ok(all))
    }
    fn load_webhook(&self, id: WebhookId) -> StoreFuture<WebhookRecord> {
        self.read_hook(id, |(r, _)| r.clone())
    }
    fn update_webhook(&self, id: WebhookId, patch: WebhookPatch) -> StoreFuture<WebhookRecord> {
        let mut inner = self.0.lock();
        let res = match inner.hooks.get_mut(&id) {
            Some((record, _)) => {
                patch.apply_to(record);
                Ok(record.clone())
            }
            None => Err(StoreError::NotFound),
        };
        ready(res)
    }
    fn delete_webhook(&self, id: WebhookId) -> StoreFuture<()> {
        let mut inner = self.0.lock();
        inner.rows.retain(|r| r.webhook != id);
        ready(
            inner
                .hooks
                .remove(&id)
                .map(|_| ())
                .ok_or(StoreError::NotFound),
        )
    }
    fn webhook_secret(&self, id: WebhookId) -> StoreFuture<String> {
        self.read_hook(id, |(_, s)| s.clone())
    }
    fn due_deliveries(
        &self,
        now: DateTime<Utc>,
        busy: Vec<WebhookId>,
        limit: usize,
    ) -> StoreFuture<Vec<DeliveryJob>> {
        let inner = self.0.lock();
        let mut heads: HashMap<WebhookId, &Row> = HashMap::new();
        for row in inner
            .rows
            .iter()
            .filter(|r| r.status == "pending" && !busy.contains(&r.webhook))
        {
            let head = heads.entry(row.webhook).or_insert(row);
            if row.event.seq < head.event.seq {
                *head = row;
            }
        }
        let jobs = heads
            .values()
            .filter(|r| r.next_at <= now)
            .take(limit)
            .map(|r| {
                let (hook, secret) = &inner.hooks[&r.webhook];
                DeliveryJob {
                    delivery_id: r.id.clone(),
                    webhook_id: r.webhook,
                    url: hook.url.clone(),
                    secret: secret.clone(),
                    headers: hook.headers.clone(),
                    max_attempts: hook.max_attempts,
                    attempt: r.attempts + 1,
                    event: r.event.clone(),
                }
            })
            .collect();
        ready(Ok(jobs))
    }
    fn record_attempts(&self, done: Vec<AttemptDone>) -> StoreFuture<()> {
        let mut inner = self.0.lock();
        for d in done {
            let Some(row) = inner.rows.iter_mut().find(|r| r.id == d.delivery_id) else {
                continue;
            };
            row.attempts = d.attempt.attempt;
            match d.next {
                AfterAttempt::Delivered => row.status = "delivered",
                AfterAttempt::Dead => row.status = "dead",
                AfterAttempt::RetryAt(at) => row.next_at = at,
            }
            inner.attempts.push((d.webhook_id, d.attempt));
        }
        ready(Ok(()))
    }
    fn list_attempts(
        &self,
        webhook: WebhookId,
        _: Option<AttemptFilter>,
        _: usize,
    ) -> StoreFuture<Vec<AttemptRecord>> {
        let list = self
            .0
            .lock()
            .attempts
            .iter()
            .filter(|(w, _)| *w == webhook)
            .map(|(_, a)| a.clone())
            .rev()
            .collect();
        ready(Ok(list))
    }
    fn redrive(&self, webhook: WebhookId, event_id: String, now: DateTime<Utc>) -> StoreFuture<()> {
        let mut inner = self.0.lock();
        let res = match inner
            .rows
            .iter_mut()
            .find(|r| r.webhook == webhook && r.event.id == event_id)
        {
            None => Err(StoreError::NotFound),
            Some(r) if r.status == "pending" => Err(StoreError::Conflict("pending".into())),
            Some(r) => {
                r.status = "pending";
                r.attempts = 0;
                r.next_at = now;
                Ok(())
            }
        };
        ready(res)
    }
    fn prune(&self, _: DateTime<Utc>) -> StoreFuture<u64> {
        ready(Ok(0))
    }
    fn outbox_depth(&self) -> StoreFuture<OutboxCounts> {
        let inner = self.0.lock();
        let count = |status| inner.rows.iter().filter(|r| r.status == status).count() as u64;
        ready(Ok(OutboxCounts {
            pending: count("pending"),
            dead: count("dead"),
        }))
    }
}

/// Answers per URL from a script (the last entry repeats); logs every request.
#[derive(Clone, Default)]
struct FakeSender {
    script: Arc<Mutex<HashMap<String, Vec<u16>>>>,
    log: Arc<Mutex<Vec<(String, String, u32)>>>,
    refused: Arc<Mutex<HashSet<String>>>,
}

impl WebhookSender for FakeSender {
    fn check_url(&self, url: String) -> BoxFuture<'static, Result<(), UrlRefused>> {
        let refused = self.refused.lock().contains(&url);
        ready(if refused {
            Err(UrlRefused::Address {
                host: url,
                ip: [10, 0, 0, 1].into(),
                kind: "private",
            })
        } else {
            Ok(())
        })
    }
    fn send(&self, req: WebhookRequest) -> BoxFuture<'static, SendResult> {
        let id = match &req.payload {
            WebhookPayload::Event(e) => e.id.clone(),
            WebhookPayload::Test { .. } => "test".into(),
        };
        self.log.lock().push((req.url.clone(), id, req.attempt));
        let mut script = self.script.lock();
        let answers = script.entry(req.url).or_insert_with(|| vec![200]);
        let code = if answers.len() > 1 {
            answers.remove(0)
        } else {
            answers[0]
        };
        ready(SendResult {
            status_code: Some(code),
            error: (code >= 300).then(|| format!("HTTP {code}")),
            latency_ms: 1,
            retry_after: None,
        })
    }
}

fn options() -> WebhookOptions {
    WebhookOptions {
        poll_interval: Duration::from_millis(10),
        retry_base: Duration::from_millis(5),
        retry_cap: Duration::from_millis(20),
        ..Default::default()
    }
}

fn caller(role: Role) -> Caller {
    Caller {
        key_id: Uuid::new_v4(),
        role,
        scope: None,
    }
}

struct World {
    store: FakeStore,
    sender: FakeSender,
    session: SessionRecord,
    addr: actix::Addr<WebhookActor>,
}

fn world() -> World {
    let store = FakeStore::default();
    let sender = FakeSender::default();
    let registry = Arc::new(SessionRegistry::new());
    let session = SessionRecord::new(Uuid::new_v4(), "bot".into(), Utc::now());
    registry.upsert(SessionView {
        record: session.clone(),
        next_retry_at: None,
        restarts: 0,
        engine_alive: false,
        qr: None,
    });
    let addr = start_webhooks(
        Arc::new(store.clone()),
        Arc::new(sender.clone()),
        registry,
        None,
        options(),
    );
    World {
        store,
        sender,
        session,
        addr,
    }
}

impl World {
    async fn hook(&self, url: &str, max_attempts: u32) -> WebhookId {
        let (record, secret) = self
            .addr
            .send(CreateWebhook {
                caller: caller(Role::Operator),
                session: "bot".into(),
                url: url.into(),
                events: None,
                secret: None,
                headers: None,
                max_attempts: Some(max_attempts),
            })
            .await
            .unwrap()
            .unwrap();
        assert!(secret.starts_with("whsec_"));
        record.id
    }

    /// Queue events 1..=n for every webhook, as `save_session` would.
    fn emit(&self, n: u64) -> Vec<String> {
        let mut inner = self.store.0.lock();
        let hooks: Vec<WebhookId> = inner.hooks.keys().copied().collect();
        let mut ids = Vec::new();
        for seq in 1..=n {
            let event = SessionEvent {
                id: format!("evt_{seq}"),
                session_id: self.session.id.to_string(),
                session_name: "bot".into(),
                seq,
                timestamp_ms: 0,
                data: Some(Data::Status(StatusChanged::default())),
            };
            for h in &hooks {
                inner.rows.push(Row {
                    id: Uuid::new_v4().to_string(),
                    webhook: *h,
                    event: event.clone(),
                    status: "pending",
                    attempts: 0,
                    next_at: Utc::now(),
                });
            }
            ids.push(event.id);
        }
        self.addr.do_send(Wake);
        ids
    }

    async fn settle(&self) {
        for _ in 0..500 {
            if self
                .store
                .0
                .lock()
                .rows
                .iter()
                .all(|r| r.status != "pending")
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("rows still pending");
    }

    fn requests(&self, url: &str) -> Vec<(String, u32)> {
        self.sender
            .log
            .lock()
            .iter()
            .filter(|(u, _, _)| u == url)
            .map(|(_, id, a)| (id.clone(), *a))
            .collect()
    }
}

#[actix::test]
async fn each_webhook_gets_its_events_in_order_and_retries_keep_the_event() {
    let w = world();
    w.sender
        .script
        .lock()
        .insert("https://a.example/".into(), vec![500, 503, 200]);
    w.hook("https://a.example/", 10).await;
    w.hook("https://b.example/", 10).await;
    w.emit(3);
    w.settle().await;
    let s = |id: &str, a: u32| (id.to_string(), a);
    assert_eq!(
        w.requests("https://a.example/"),
        vec![
            s("evt_1", 1),
            s("evt_1", 2),
            s("evt_1", 3),
            s("evt_2", 1),
            s("evt_3", 1)
        ]
    );
    assert_eq!(
        w.requests("https://b.example/"),
        vec![s("evt_1", 1), s("evt_2", 1), s("evt_3", 1)]
    );
    assert!(w
        .store
        .0
        .lock()
        .rows
        .iter()
        .all(|r| r.status == "delivered"));
}

#[actix::test]
async fn a_dead_letter_stops_blocking_and_can_be_redriven() {
    let w = world();
    w.sender
        .script
        .lock()
        .insert("https://a.example/".into(), vec![500, 500, 500, 500, 200]);
    let hook = w.hook("https://a.example/", 2).await;
    w.emit(2);
    w.settle().await;
    let s = |id: &str, a: u32| (id.to_string(), a);
    assert_eq!(
        w.requests("https://a.example/"),
        vec![s("evt_1", 1), s("evt_1", 2), s("evt_2", 1), s("evt_2", 2)]
    );
    let statuses: Vec<_> = w.store.0.lock().rows.iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec!["dead", "dead"]);
    let redrive = |event: &str, role| RedriveDelivery {
        caller: caller(role),
        session: "bot".into(),
        webhook: hook.to_string(),
        event_id: event.into(),
    };
    assert_eq!(
        w.addr.send(redrive("evt_1", Role::Viewer)).await.unwrap(),
        Err(WebError::InsufficientRole(Role::Operator))
    );
    assert_eq!(
        w.addr.send(redrive("evt_1", Role::Operator)).await.unwrap(),
        Ok(())
    );
    w.settle().await;
    assert_eq!(
        w.requests("https://a.example/").last(),
        Some(&s("evt_1", 1))
    );
    assert_eq!(w.store.0.lock().rows[0].status, "delivered");
    assert_eq!(
        w.addr.send(redrive("evt_9", Role::Operator)).await.unwrap(),
        Err(WebError::DeliveryNotFound("evt_9".into()))
    );
}

#[actix::test]
async fn the_api_messages_check_roles_scopes_and_urls() {
    let w = world();
    w.sender.refused.lock().insert("http://10.0.0.1/".into());
    let create = |caller: Caller, url: &str| CreateWebhook {
        caller,
        session: "bot".into(),
        url: url.into(),
        events: Some(vec!["session.qr".into()]),
        secret: None,
        headers: None,
        max_attempts: None,
    };
    let res = w
        .addr
        .send(create(caller(Role::Viewer), "https://a.example/"))
        .await
        .unwrap();
    assert_eq!(res, Err(WebError::InsufficientRole(Role::Operator)));
    let res = w
        .addr
        .send(create(caller(Role::Operator), "http://10.0.0.1/"))
        .await
        .unwrap();
    assert_eq!(
        res,
        Err(WebError::WebhookUrlNotAllowed(
            "The webhook URL's host 'http://10.0.0.1/' is or resolves to a private address; \
             such addresses are refused unless WASUP_WEBHOOK_ALLOW_PRIVATE=true"
                .into()
        ))
    );
    let mut scoped = caller(Role::Admin);
    scoped.scope = Some(HashSet::from([Uuid::new_v4()]));
    let res = w
        .addr
        .send(create(scoped.clone(), "https://a.example/"))
        .await
        .unwrap();
    assert_eq!(res, Err(WebError::SessionNotInScope("bot".into())));
    let (record, _) = w
        .addr
        .send(create(caller(Role::Operator), "https://a.example/"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.max_attempts, DEFAULT_MAX_ATTEMPTS);
    assert_eq!(record.events, vec!["session.qr".to_string()]);
    let all = w
        .addr
        .send(ListWebhooks {
            caller: scoped,
            session: None,
        })
        .await
        .unwrap()
        .unwrap();
    assert!(
        all.is_empty(),
        "a scoped key sees only its sessions' webhooks"
    );
    let all = w
        .addr
        .send(ListWebhooks {
            caller: caller(Role::Viewer),
            session: None,
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(all, vec![record.clone()]);
    let res = w
        .addr
        .send(GetWebhook {
            caller: caller(Role::Viewer),
            session: "bot".into(),
            webhook: "nope".into(),
        })
        .await
        .unwrap();
    assert_eq!(res, Err(WebError::WebhookNotFound("nope".into())));
}

#[actix::test]
async fn concurrent_patches_of_different_fields_both_stick() {
    let w = world();
    let hook = w.hook("https://a.example/", 10).await;
    let patch = |url: Option<&str>, active: Option<bool>| UpdateWebhook {
        caller: caller(Role::Operator),
        session: "bot".into(),
        webhook: hook.to_string(),
        url: url.map(str::to_string),
        events: None,
        headers: None,
        active,
        max_attempts: None,
    };
    // Both are in flight before either is written.
    let (a, b) = futures::join!(
        w.addr.send(patch(Some("https://b.example/"), None)),
        w.addr.send(patch(None, Some(false))),
    );
    a.unwrap().unwrap();
    b.unwrap().unwrap();
    let (record, _) = w.store.0.lock().hooks[&hook].clone();
    assert_eq!(record.url, "https://b.example/");
    assert!(!record.active);
    let depth = w.addr.send(OutboxDepth).await.unwrap().unwrap();
    assert_eq!(depth, OutboxCounts::default());
}
