//! Fakes of the Store and Engine ports, and helpers, for the actor tests.
#![allow(dead_code)]

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use parking_lot::Mutex;
use uuid::Uuid;

use wasup_actors::backoff::BackoffLimits;
use wasup_actors::events::{session_event::Data, SessionEvent};
use wasup_actors::ports::*;
use wasup_actors::*;

// ------------------------------------------------------------------ store

#[derive(Default)]
pub struct FakeStore {
    pub sessions: Mutex<HashMap<SessionId, SessionRecord>>,
    /// Every accepted save_session call, in order.
    pub saves: Mutex<Vec<(SessionRecord, Vec<SessionEvent>)>>,
    pub keys: Mutex<HashMap<ApiKeyId, ApiKeyRecord>>,
    pub deleted: Mutex<Vec<SessionId>>,
    /// Every call fails with Unavailable while set.
    pub down: AtomicBool,
    /// Panic (once) when saving this session with this status.
    pub panic_on: Mutex<Option<(SessionId, SessionStatus)>>,
    /// Answer each save this many ms after applying it (a database that
    /// committed but has not answered yet).
    pub save_answer_delay_ms: AtomicU64,
}

impl FakeStore {
    pub fn new(records: Vec<SessionRecord>) -> Arc<Self> {
        let store = FakeStore::default();
        for r in records {
            store.sessions.lock().insert(r.id, r);
        }
        Arc::new(store)
    }

    fn check(&self) -> Result<(), StoreError> {
        if self.down.load(Ordering::SeqCst) {
            Err(StoreError::Unavailable("fake store is down".into()))
        } else {
            Ok(())
        }
    }

    pub fn record(&self, id: SessionId) -> Option<SessionRecord> {
        self.sessions.lock().get(&id).cloned()
    }

    /// Every event saved for a session, in order.
    pub fn events(&self, id: SessionId) -> Vec<SessionEvent> {
        self.saves
            .lock()
            .iter()
            .filter(|(r, _)| r.id == id)
            .flat_map(|(_, e)| e.clone())
            .collect()
    }
}

fn ready<T: Send + 'static>(v: T) -> BoxFuture<'static, T> {
    Box::pin(async move { v })
}

impl Store for FakeStore {
    fn load_sessions(&self) -> BoxFuture<'static, Result<Vec<SessionRecord>, StoreError>> {
        ready(
            self.check()
                .map(|()| self.sessions.lock().values().cloned().collect()),
        )
    }

    fn insert_session(&self, record: SessionRecord) -> BoxFuture<'static, Result<(), StoreError>> {
        let res = self.check().and_then(|()| {
            let mut sessions = self.sessions.lock();
            if sessions.values().any(|r| r.name == record.name) {
                return Err(StoreError::Conflict("sessions.name".into()));
            }
            sessions.insert(record.id, record);
            Ok(())
        });
        ready(res)
    }

    fn save_session(
        &self,
        record: SessionRecord,
        events: Vec<SessionEvent>,
    ) -> BoxFuture<'static, Result<(), StoreError>> {
        {
            let mut panic_on = self.panic_on.lock();
            if *panic_on == Some((record.id, record.status)) {
                *panic_on = None;
                drop(panic_on);
                panic!("fake store: injected panic");
            }
        }
        let res = self.check().and_then(|()| {
            let mut sessions = self.sessions.lock();
            if !sessions.contains_key(&record.id) {
                return Err(StoreError::NotFound);
            }
            sessions.insert(record.id, record.clone());
            self.saves.lock().push((record, events));
            Ok(())
        });
        let delay = self.save_answer_delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            return Box::pin(async move {
                tokio::time::sleep(Duration::from_millis(delay)).await;
                res
            });
        }
        ready(res)
    }

    fn delete_session(&self, id: SessionId) -> BoxFuture<'static, Result<(), StoreError>> {
        let res = self.check().and_then(|()| {
            self.sessions
                .lock()
                .remove(&id)
                .ok_or(StoreError::NotFound)?;
            self.deleted.lock().push(id);
            Ok(())
        });
        ready(res)
    }

    fn load_api_keys(&self) -> BoxFuture<'static, Result<Vec<ApiKeyRecord>, StoreError>> {
        ready(
            self.check()
                .map(|()| self.keys.lock().values().cloned().collect()),
        )
    }

    fn insert_api_key(&self, key: ApiKeyRecord) -> BoxFuture<'static, Result<(), StoreError>> {
        ready(self.check().map(|()| {
            self.keys.lock().insert(key.id, key);
        }))
    }

    fn revoke_api_key(
        &self,
        id: ApiKeyId,
        at: DateTime<Utc>,
    ) -> BoxFuture<'static, Result<(), StoreError>> {
        let res = self.check().and_then(|()| {
            let mut keys = self.keys.lock();
            let key = keys.get_mut(&id).ok_or(StoreError::NotFound)?;
            key.revoked_at = Some(at);
            Ok(())
        });
        ready(res)
    }

    fn ping(&self) -> BoxFuture<'static, Result<(), StoreError>> {
        ready(self.check())
    }
}

// ------------------------------------------------------------------ engine

/// What one start of a session's engine does.
#[derive(Clone, Debug)]
pub enum Script {
    /// Emit these events, each after its delay; nothing after a terminal one.
    Events(Vec<(Duration, EngineEvent)>),
    /// `start` returns this error.
    Fail(String),
    /// `start` panics.
    Panic,
}

pub fn connected(phone: &str) -> EngineEvent {
    EngineEvent::Connected {
        phone: phone.into(),
        push_name: Some("Bot".into()),
    }
}

pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[derive(Default)]
pub struct EngineInner {
    /// Scripts per session, one per start; the last one repeats.
    pub scripts: Mutex<HashMap<SessionId, VecDeque<Script>>>,
    /// Every start: (session, generation).
    pub starts: Mutex<Vec<(SessionId, u64)>>,
    /// Every sink handed out, in order.
    pub sinks: Mutex<Vec<EngineEventSink>>,
    pub forgotten: Mutex<Vec<SessionId>>,
    pub stops: AtomicUsize,
    pub aborts: AtomicUsize,
    pub logouts: AtomicUsize,
    /// Engines started and not yet past their first event.
    pub connecting: AtomicUsize,
    pub max_connecting: AtomicUsize,
    /// `start` answers this many ms late (its events may come first, as
    /// from a real engine that fails while it is being set up).
    pub start_answer_delay_ms: AtomicU64,
}

#[derive(Clone, Default)]
pub struct FakeEngine(pub Arc<EngineInner>);

impl FakeEngine {
    pub fn script(&self, id: SessionId, scripts: Vec<Script>) {
        self.0.scripts.lock().insert(id, scripts.into());
    }

    pub fn starts_of(&self, id: SessionId) -> usize {
        self.0
            .starts
            .lock()
            .iter()
            .filter(|(s, _)| *s == id)
            .count()
    }

    pub fn sinks_of(&self, id: SessionId) -> Vec<EngineEventSink> {
        self.0
            .sinks
            .lock()
            .iter()
            .filter(|s| s.session_id == id)
            .cloned()
            .collect()
    }

    fn next_script(&self, id: SessionId) -> Script {
        let mut scripts = self.0.scripts.lock();
        match scripts.get_mut(&id) {
            Some(q) if q.len() > 1 => q.pop_front().unwrap(),
            Some(q) if q.len() == 1 => q[0].clone(),
            _ => Script::Events(vec![(ms(1), connected("628000"))]),
        }
    }
}

struct FakeHandle {
    engine: Arc<EngineInner>,
    cancelled: Arc<AtomicBool>,
    first_pending: Arc<AtomicBool>,
}

impl FakeHandle {
    fn cancel(&self) {
        self.cancelled.store(true, Ordering::SeqCst);
        if self.first_pending.swap(false, Ordering::SeqCst) {
            self.engine.connecting.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

impl EngineHandle for FakeHandle {
    fn stop(&self) -> BoxFuture<'static, ()> {
        self.cancel();
        self.engine.stops.fetch_add(1, Ordering::SeqCst);
        Box::pin(async {})
    }

    fn abort(&self) {
        if !self.cancelled.load(Ordering::SeqCst) {
            self.engine.aborts.fetch_add(1, Ordering::SeqCst);
        }
        self.cancel();
    }

    fn pair_with_code(&self, phone: String) -> BoxFuture<'static, Result<String, EngineError>> {
        Box::pin(async move {
            if phone.starts_with('0') {
                Err(EngineError::Failed("WhatsApp refused the number".into()))
            } else {
                Ok("ABCD1234".to_string())
            }
        })
    }

    fn logout(&self) -> BoxFuture<'static, Result<(), EngineError>> {
        self.cancel();
        self.engine.logouts.fetch_add(1, Ordering::SeqCst);
        Box::pin(async { Ok(()) })
    }
}

impl Engine for FakeEngine {
    fn start(
        &self,
        spec: EngineSpec,
        sink: EngineEventSink,
    ) -> BoxFuture<'static, Result<Box<dyn EngineHandle>, EngineError>> {
        let inner = self.0.clone();
        inner.starts.lock().push((spec.session_id, sink.generation));
        inner.sinks.lock().push(sink.clone());
        match self.next_script(spec.session_id) {
            Script::Panic => panic!("fake engine: injected panic"),
            Script::Fail(reason) => Box::pin(async move { Err(EngineError::Failed(reason)) }),
            Script::Events(events) => {
                let now = inner.connecting.fetch_add(1, Ordering::SeqCst) + 1;
                inner.max_connecting.fetch_max(now, Ordering::SeqCst);
                let cancelled = Arc::new(AtomicBool::new(false));
                let first_pending = Arc::new(AtomicBool::new(true));
                let handle = FakeHandle {
                    engine: inner.clone(),
                    cancelled: cancelled.clone(),
                    first_pending: first_pending.clone(),
                };
                let engine = inner.clone();
                actix::spawn(async move {
                    for (delay, event) in events {
                        tokio::time::sleep(delay).await;
                        if cancelled.load(Ordering::SeqCst) {
                            return;
                        }
                        if first_pending.swap(false, Ordering::SeqCst) {
                            engine.connecting.fetch_sub(1, Ordering::SeqCst);
                        }
                        let terminal = event.is_terminal();
                        sink.emit(event);
                        if terminal {
                            cancelled.store(true, Ordering::SeqCst);
                            return;
                        }
                    }
                });
                let delay = inner.start_answer_delay_ms.load(Ordering::SeqCst);
                Box::pin(async move {
                    tokio::time::sleep(Duration::from_millis(delay)).await;
                    Ok(Box::new(handle) as Box<dyn EngineHandle>)
                })
            }
        }
    }

    fn forget(&self, session_id: SessionId) -> BoxFuture<'static, Result<(), EngineError>> {
        self.0.forgotten.lock().push(session_id);
        Box::pin(async { Ok(()) })
    }
}

// ------------------------------------------------------------------ helpers

pub fn fast_options() -> SupervisorOptions {
    SupervisorOptions {
        restore_concurrency: 8,
        backoff: BackoffLimits {
            min_base: ms(1),
            max_base: ms(1_000),
            cap: ms(1_000),
            stable_reset: ms(60_000),
        },
        engine_start_timeout: Duration::from_secs(5),
        stop_timeout: Duration::from_secs(1),
        shutdown_timeout: Duration::from_secs(2),
        restore_jitter: Duration::from_millis(5),
        ..SupervisorOptions::default()
    }
}

pub fn record(name: &str, base_ms: u64, attempts: u32) -> SessionRecord {
    let mut r = SessionRecord::new(Uuid::new_v4(), name.into(), Utc::now());
    let config = std::sync::Arc::make_mut(&mut r.config);
    config.reconnect_base_delay = Some(base_ms);
    config.max_reconnect_attempts = Some(attempts);
    r
}

pub fn caller(role: Role) -> Caller {
    Caller {
        key_id: Uuid::new_v4(),
        role,
        scope: None,
    }
}

pub fn scoped(role: Role, ids: &[SessionId]) -> Caller {
    Caller {
        key_id: Uuid::new_v4(),
        role,
        scope: Some(ids.iter().copied().collect::<HashSet<_>>()),
    }
}

pub struct Harness {
    pub gw: Gateway,
    pub store: Arc<FakeStore>,
    pub engine: FakeEngine,
}

pub async fn boot(
    records: Vec<SessionRecord>,
    engine: FakeEngine,
    options: SupervisorOptions,
) -> Harness {
    let store = FakeStore::new(records);
    let gw = start_system(store.clone(), Arc::new(engine.clone()), options)
        .await
        .expect("boot");
    Harness { gw, store, engine }
}

/// Boot with the one session `rec`, whose engine follows `scripts`.
pub async fn boot_one(
    rec: SessionRecord,
    scripts: Vec<Script>,
    options: SupervisorOptions,
) -> (Harness, SessionId) {
    let engine = FakeEngine::default();
    let id = rec.id;
    engine.script(id, scripts);
    (boot(vec![rec], engine, options).await, id)
}

impl Harness {
    pub fn view(&self, id: SessionId) -> SessionView {
        self.gw.registry.get(id).expect("session in registry")
    }

    pub fn status(&self, id: SessionId) -> SessionStatus {
        self.view(id).record.status
    }

    pub async fn command(
        &self,
        id: SessionId,
        command: SessionCommand,
    ) -> Result<SessionView, WebError> {
        self.gw
            .web
            .send(wasup_actors::web::RunCommand {
                caller: caller(Role::Admin),
                id: id.to_string(),
                command,
            })
            .await
            .expect("web actor")
    }

    pub async fn stats(&self) -> wasup_actors::supervisor::SupervisorStats {
        self.gw
            .supervisor
            .send(wasup_actors::supervisor::GetStats)
            .await
            .unwrap()
    }

    /// Wait (up to 5 s) until the session reaches `status` with no actor work pending.
    pub async fn wait_status(&self, id: SessionId, status: SessionStatus) -> SessionView {
        let reg = self.gw.registry.clone();
        wait_until(&format!("{id} to be {status}"), || {
            reg.get(id).is_some_and(|v| v.record.status == status)
        })
        .await;
        self.view(id)
    }
}

/// Poll `cond` every 2 ms for up to 5 s; panic with `what` on timeout.
pub async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..2500 {
        if cond() {
            return;
        }
        tokio::time::sleep(ms(2)).await;
    }
    panic!("timed out waiting for {what}");
}

/// The names of events, e.g. "status:ready", "qr", "authenticated", "disconnected:retry".
pub fn event_names(events: &[SessionEvent]) -> Vec<String> {
    events
        .iter()
        .map(|e| match &e.data {
            Some(Data::Status(s)) => format!("status:{}", s.status),
            Some(Data::Qr(_)) => "qr".to_string(),
            Some(Data::Authenticated(_)) => "authenticated".to_string(),
            Some(Data::Disconnected(d)) => {
                format!(
                    "disconnected:{}",
                    if d.will_retry { "retry" } else { "final" }
                )
            }
            Some(_) => e.name().to_string(),
            None => "none".to_string(),
        })
        .collect()
}

/// Every save carries consecutive seqs ending at the record's event_seq, and
/// seqs increase by one across saves.
pub fn assert_seq_consistent(store: &FakeStore, id: SessionId) {
    let mut last = 0u64;
    for (record, events) in store.saves.lock().iter().filter(|(r, _)| r.id == id) {
        for e in events {
            assert_eq!(e.seq, last + 1, "seq must increase by one: {events:?}");
            assert_eq!(e.session_id, id.to_string());
            assert_eq!(e.session_name, record.name);
            assert!(e.id.starts_with("evt_"));
            last = e.seq;
        }
        assert_eq!(
            record.event_seq, last,
            "record.event_seq is the last seq used"
        );
    }
}
