//! The SessionActor: the single writer of one session's state while the
//! supervisor has work for it (an engine running, a command in progress).
//!
//! It runs one engine at a time (a fresh generation per start), feeds every
//! engine event and command through the state machine, persists the record
//! and its events in one store call BEFORE publishing to the registry, and
//! ends itself when no engine runs, reporting whether (and when) to restart
//! the session. It reports to a `Recipient<SessionReport>` given at
//! construction (the supervisor, or a test): it never names the supervisor.
//! Commands and events are processed one at a time
//! (`AtomicResponse`/`ctx.wait`), so a session's writes never race.
//!
//! Engine calls run under `catch_unwind` and a timeout: a panicking engine
//! is a crash of that session. If the actor itself panics, its drop guard
//! reports it, and the supervisor recovers the session from the registry.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use actix::fut::LocalBoxActorFuture;
use actix::prelude::*;
use chrono::Utc;
use futures::future::BoxFuture;
use uuid::Uuid;

use crate::backoff::BackoffPolicy;
use crate::error::WebError;
use crate::events::{session_event::Data, SessionEvent};
use crate::metrics::{ExitCause, StartCause, METRICS};
use crate::model::{SessionId, SessionRecord, SessionView};
use crate::ports::{
    EngineError, EngineEvent, EngineEventMsg, EngineEventSink, EngineHandle, EngineSpec, ProxySpec,
    StoreError,
};
use crate::protocol::{
    Deps, PairCode, Report, SessionCommand, SessionReport, SessionRequest, SettingsChange,
};
use crate::state::{
    pairing_allowed, step, Action, Input, PairingUnavailable, SessionState, StepContext,
};

#[derive(Message)]
#[rtype(result = "()")]
struct MaybeEnd;

struct RunningEngine {
    generation: u64,
    /// None while `Engine::start` is still in flight.
    handle: Option<Box<dyn EngineHandle>>,
}

impl Drop for RunningEngine {
    /// An engine nobody stopped (the actor panicked, a terminal event) is aborted.
    fn drop(&mut self) {
        if let Some(handle) = self.handle.take() {
            let _ = std::panic::catch_unwind(AssertUnwindSafe(|| handle.abort()));
        }
    }
}

/// Reports the actor's death when it is dropped by a panic.
struct DeathGuard {
    reports: Recipient<SessionReport>,
    id: SessionId,
    incarnation: u64,
}

impl Drop for DeathGuard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.reports.do_send(SessionReport {
                id: self.id,
                incarnation: self.incarnation,
                report: Report::Died,
            });
        }
    }
}

struct Committed {
    action: Action,
    saved: Result<(), WebError>,
}

pub struct SessionActor {
    id: SessionId,
    incarnation: u64,
    deps: Deps,
    reports: Recipient<SessionReport>,
    policy: BackoffPolicy,
    state: SessionState,
    /// The working record (may hold changes the store refused).
    record: SessionRecord,
    /// The record as last persisted: what the registry shows.
    saved_record: SessionRecord,
    /// Events not yet accepted by the store (kept for the next save).
    unsaved: Vec<SessionEvent>,
    /// Saves handed to the store and not yet answered. A save sends every
    /// unsaved event, so a second one started before the first is answered
    /// would write the same seqs again.
    saves_in_flight: u32,
    /// `MaybeEnd` came while a save was in flight: it runs again after.
    end_deferred: bool,
    engine: Option<RunningEngine>,
    restore_slot: bool,
    /// What the next engine start is for (metrics only).
    start_cause: StartCause,
    deleted: bool,
    ended: bool,
    /// Cluster mode: another node owns the session now; write nothing more,
    /// end without a restart.
    fenced: bool,
    _guard: DeathGuard,
}

impl Actor for SessionActor {
    type Context = Context<Self>;
}

/// Why a guarded port call failed.
enum Guarded {
    Panicked(String),
    TimedOut,
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".to_string()
    }
}

/// Run a port call (building the future and polling it) under
/// `catch_unwind`, with an optional timeout.
fn guarded<T: Send + 'static>(
    make: impl FnOnce() -> BoxFuture<'static, T>,
    timeout: Option<Duration>,
) -> BoxFuture<'static, Result<T, Guarded>> {
    let fut = std::panic::catch_unwind(AssertUnwindSafe(make));
    Box::pin(async move {
        let fut = fut.map_err(|p| Guarded::Panicked(panic_message(p)))?;
        let fut = futures::FutureExt::catch_unwind(AssertUnwindSafe(fut));
        let res = match timeout {
            Some(t) => tokio::time::timeout(t, fut)
                .await
                .map_err(|_| Guarded::TimedOut)?,
            None => fut.await,
        };
        res.map_err(|p| Guarded::Panicked(panic_message(p)))
    })
}

fn unavailable() -> WebError {
    WebError::Unavailable("The database is unavailable; try again later".to_string())
}

impl SessionActor {
    /// The actor of the session `view` shows; it sends its reports (restore
    /// slot free, ended, died) to `reports`.
    pub fn new(
        view: &SessionView,
        incarnation: u64,
        deps: Deps,
        reports: Recipient<SessionReport>,
    ) -> Self {
        let policy = deps.options.policy(&view.record.config);
        SessionActor {
            id: view.record.id,
            incarnation,
            policy,
            state: SessionState::from_view(view),
            record: view.record.clone(),
            saved_record: view.record.clone(),
            unsaved: Vec::new(),
            saves_in_flight: 0,
            end_deferred: false,
            engine: None,
            restore_slot: false,
            start_cause: StartCause::Start,
            deleted: false,
            ended: false,
            fenced: false,
            _guard: DeathGuard {
                reports: reports.clone(),
                id: view.record.id,
                incarnation,
            },
            deps,
            reports,
        }
    }

    fn view(&self) -> SessionView {
        SessionView {
            record: self.saved_record.clone(),
            next_retry_at: self.state.next_retry_at,
            restarts: self.state.restarts,
            engine_alive: self.engine.is_some(),
            qr: self.state.qr.clone(),
        }
    }

    fn publish(&mut self) {
        if !self.deleted {
            self.deps.registry.upsert(self.view());
        }
        if self.restore_slot && !self.state.is_starting() {
            self.free_restore_slot();
        }
    }

    fn report(&self, report: Report) {
        self.reports.do_send(SessionReport {
            id: self.id,
            incarnation: self.incarnation,
            report,
        });
    }

    /// A save was answered; a `MaybeEnd` that waited for it runs now.
    fn save_answered(&mut self, ctx: &mut Context<Self>) {
        self.saves_in_flight -= 1;
        if self.saves_in_flight == 0 && std::mem::take(&mut self.end_deferred) {
            ctx.notify(MaybeEnd);
        }
    }

    fn free_restore_slot(&mut self) {
        if std::mem::take(&mut self.restore_slot) {
            self.report(Report::RestoreSlotFree);
        }
    }

    fn stamp(
        &self,
        record: &mut SessionRecord,
        data: Data,
        now: chrono::DateTime<Utc>,
    ) -> SessionEvent {
        record.event_seq += 1;
        SessionEvent {
            id: format!("evt_{}", Uuid::now_v7().simple()),
            session_id: self.id.to_string(),
            session_name: record.name.clone(),
            seq: record.event_seq,
            timestamp_ms: now.timestamp_millis(),
            data: Some(data),
        }
    }

    /// Apply `input`, then persist the record and its events in one call
    /// and only then publish to the registry.
    fn commit(&mut self, input: Input) -> LocalBoxActorFuture<Self, Committed> {
        let now = Utc::now();
        let transition = {
            let mut rng = rand::rng();
            let mut ctx = StepContext {
                now,
                policy: &self.policy,
                rng: &mut rng,
            };
            step(&mut self.state, input, &mut ctx)
        };
        let action = transition.action;
        let mut record = self.record.clone();
        self.state.write_record(&mut record);
        let changed = record != self.record;
        for data in transition.events {
            if matches!(data, Data::Qr(_)) {
                METRICS.qr_issued();
            }
            // One log line per transition (never a QR, key or credential).
            if let Data::Status(s) = &data {
                log::info!(
                    "session {} '{}': {} -> {}{}",
                    self.id,
                    record.name,
                    s.previous_status,
                    s.status,
                    s.last_error
                        .as_deref()
                        .map(|e| format!(" ({e})"))
                        .unwrap_or_default()
                );
            }
            let event = self.stamp(&mut record, data, now);
            self.unsaved.push(event);
        }
        if !changed && self.unsaved.is_empty() {
            self.publish();
            return fut::ready(Committed {
                action,
                saved: Ok(()),
            })
            .boxed_local();
        }
        record.updated_at = now;
        self.record = record.clone();
        let events = self.unsaved.clone();
        let count = events.len();
        // A panic of the store is not caught here: it kills this actor and the
        // supervisor recovers the session.
        let save = self.deps.store.save_session(record.clone(), events);
        self.saves_in_flight += 1;
        save.into_actor(self)
            .map(move |res, act, ctx| {
                act.save_answered(ctx);
                let saved = match res {
                    Ok(()) => {
                        act.unsaved.drain(..count);
                        act.saved_record = record;
                        act.publish();
                        Ok(())
                    }
                    Err(StoreError::NotFound) => Err(WebError::unknown_session(&act.record.name)),
                    Err(StoreError::Fenced(why)) => {
                        log::warn!("session {}: fenced ({why}); stopping its engine", act.id);
                        act.fence();
                        Err(WebError::Unavailable(
                            "Another node owns this session now; try again".to_string(),
                        ))
                    }
                    Err(err) => {
                        log::error!("session {}: saving its state failed: {err}", act.id);
                        Err(unavailable())
                    }
                };
                Committed { action, saved }
            })
            .boxed_local()
    }

    /// Commit `input` and carry out the action that follows.
    fn commit_and_act(&mut self, input: Input) -> LocalBoxActorFuture<Self, Result<(), WebError>> {
        self.commit(input)
            .then(|committed, act, ctx| {
                let saved = committed.saved;
                act.act(committed.action, ctx).map(move |(), _, _| saved)
            })
            .boxed_local()
    }

    fn act(&mut self, action: Action, ctx: &mut Context<Self>) -> LocalBoxActorFuture<Self, ()> {
        // A pending restart is `state.next_retry_at`: MaybeEnd hands it on.
        match action {
            Action::Nothing | Action::RestartAfter(_) | Action::GiveUp => {
                fut::ready(()).boxed_local()
            }
            Action::StartEngine => self.start_engine(ctx),
            Action::ForgetAndGiveUp => self.forget().boxed_local(),
            Action::CheckStableAfter(after) => {
                if let Some(generation) = self.engine.as_ref().map(|e| e.generation) {
                    // A little past the threshold, so that the check finds it reached.
                    let after = after + Duration::from_millis(5);
                    ctx.run_later(after, move |act, ctx| act.stable_check(generation, ctx));
                }
                fut::ready(()).boxed_local()
            }
        }
    }

    fn forget(&mut self) -> impl ActorFuture<Self, Output = ()> + 'static {
        let engine = self.deps.engine.clone();
        let id = self.id;
        guarded(
            move || engine.forget(id),
            Some(self.deps.options.stop_timeout),
        )
        .into_actor(self)
        .map(move |res, _, _| match res {
            Ok(Ok(())) => {}
            Ok(Err(err)) => log::warn!("session {id}: wiping its credentials failed: {err}"),
            Err(Guarded::Panicked(p)) => {
                log::error!("session {id}: engine panicked wiping credentials: {p}")
            }
            Err(Guarded::TimedOut) => log::warn!("session {id}: wiping its credentials timed out"),
        })
    }

    fn start_engine(&mut self, ctx: &mut Context<Self>) -> LocalBoxActorFuture<Self, ()> {
        METRICS.engine_started(self.start_cause);
        let generation = self.deps.generations.fetch_add(1, Ordering::Relaxed) + 1;
        // Replacing a running engine aborts it (RunningEngine::drop).
        self.engine = Some(RunningEngine {
            generation,
            handle: None,
        });
        self.publish();
        let spec = EngineSpec {
            session_id: self.id,
            proxy: match (&self.record.proxy_url, self.record.proxy_type) {
                (Some(url), Some(kind)) => Some(ProxySpec {
                    url: url.clone(),
                    kind,
                }),
                _ => None,
            },
            push_name: self.state.push_name.clone(),
        };
        let sink = EngineEventSink {
            session_id: self.id,
            generation,
            recipient: ctx.address().recipient(),
        };
        let engine = self.deps.engine.clone();
        let timeout = self.deps.options.engine_start_timeout;
        guarded(move || engine.start(spec, sink), Some(timeout))
            .into_actor(self)
            .then(move |res, act, ctx| {
                let current = act
                    .engine
                    .as_ref()
                    .is_some_and(|e| e.generation == generation);
                let failure = match res {
                    Ok(Ok(handle)) if current => {
                        if let Some(e) = act.engine.as_mut() {
                            e.handle = Some(handle);
                        }
                        return fut::ready(()).boxed_local();
                    }
                    Ok(Ok(handle)) => {
                        let _ = std::panic::catch_unwind(AssertUnwindSafe(|| handle.abort()));
                        return fut::ready(()).boxed_local();
                    }
                    Ok(Err(err)) => EngineEvent::ConnectFailed {
                        reason: err.to_string(),
                    },
                    Err(Guarded::TimedOut) => EngineEvent::ConnectFailed {
                        reason: "the engine did not start in time".to_string(),
                    },
                    Err(Guarded::Panicked(p)) => EngineEvent::Crashed {
                        cause: format!("engine panicked: {p}"),
                    },
                };
                if !current {
                    return fut::ready(()).boxed_local();
                }
                act.engine_ended(failure, ctx)
            })
            .boxed_local()
    }

    /// The engine is gone (terminal event, failed start, crash).
    fn engine_ended(
        &mut self,
        event: EngineEvent,
        ctx: &mut Context<Self>,
    ) -> LocalBoxActorFuture<Self, ()> {
        self.engine = None;
        ctx.notify(MaybeEnd);
        let cause = ExitCause::of(&event).unwrap_or(ExitCause::Crashed);
        self.commit_exit(event, cause)
            .map(|_, _, _| ())
            .boxed_local()
    }

    /// Commit an engine's unrequested end, count it (and the restart it
    /// leads to, if any), and carry out what follows.
    fn commit_exit(
        &mut self,
        event: EngineEvent,
        cause: ExitCause,
    ) -> LocalBoxActorFuture<Self, Result<(), WebError>> {
        METRICS.engine_exited(cause);
        self.commit(Input::Engine(event))
            .then(move |committed, act, ctx| {
                if matches!(committed.action, Action::RestartAfter(_)) {
                    METRICS.reconnect_scheduled(cause);
                }
                let saved = committed.saved;
                act.act(committed.action, ctx).map(move |(), _, _| saved)
            })
            .boxed_local()
    }

    /// Take the running engine's handle out of the actor (dropping an engine
    /// still starting aborts it).
    fn take_handle(&mut self) -> Option<Arc<dyn EngineHandle>> {
        let handle = self.engine.take()?.handle.take()?;
        Some(Arc::from(handle))
    }

    /// Close the engine cleanly (bounded; aborted when it takes too long).
    fn stop_engine(&mut self) -> LocalBoxActorFuture<Self, ()> {
        let Some(handle) = self.take_handle() else {
            return fut::ready(()).boxed_local();
        };
        let h = handle.clone();
        let id = self.id;
        guarded(move || h.stop(), Some(self.deps.options.stop_timeout))
            .into_actor(self)
            .map(move |res, _, _| {
                if let Err(why) = res {
                    match why {
                        Guarded::TimedOut => {
                            log::warn!("session {id}: engine did not stop in time; aborting")
                        }
                        Guarded::Panicked(p) => {
                            log::error!("session {id}: engine panicked while stopping: {p}")
                        }
                    }
                    let _ = std::panic::catch_unwind(AssertUnwindSafe(|| handle.abort()));
                }
            })
            .boxed_local()
    }

    /// Another node owns the session: abort the engine (a clean close would
    /// still talk to WhatsApp), drop what is unsaved, end without a restart.
    fn fence(&mut self) {
        self.fenced = true;
        self.abort_engine();
        self.unsaved.clear();
    }

    fn abort_engine(&mut self) {
        // RunningEngine::drop aborts.
        self.engine = None;
    }

    /// Unlink at WhatsApp when connected, else just close.
    fn logout_engine(&mut self) -> LocalBoxActorFuture<Self, ()> {
        if !self.state.is_connected() {
            return self.stop_engine();
        }
        let Some(handle) = self.take_handle() else {
            return fut::ready(()).boxed_local();
        };
        let h = handle.clone();
        let id = self.id;
        guarded(move || h.logout(), Some(self.deps.options.stop_timeout))
            .into_actor(self)
            .map(move |res, _, _| {
                if !matches!(res, Ok(Ok(()))) {
                    log::warn!("session {id}: unlinking at WhatsApp failed; aborting the engine");
                    let _ = std::panic::catch_unwind(AssertUnwindSafe(|| handle.abort()));
                }
            })
            .boxed_local()
    }

    fn reply(&self, saved: Result<(), WebError>) -> Result<SessionView, WebError> {
        saved.map(|()| self.view())
    }

    fn run(
        &mut self,
        request: SessionRequest,
        ctx: &mut Context<Self>,
    ) -> LocalBoxActorFuture<Self, Result<SessionView, WebError>> {
        use SessionCommand as C;
        ctx.notify(MaybeEnd);
        self.start_cause = match request {
            SessionRequest::Command(C::Restart) => StartCause::Restart,
            SessionRequest::RestoreStart => StartCause::Restore,
            SessionRequest::RetryDue => StartCause::Reconnect,
            _ => StartCause::Start,
        };
        let command = match request {
            SessionRequest::Command(command) => command,
            SessionRequest::RestoreStart => {
                if self.engine.is_some() {
                    return fut::ready(Ok(self.view())).boxed_local();
                }
                self.restore_slot = true;
                return self.start(C::Start);
            }
            SessionRequest::RetryDue => {
                if self.engine.is_some() {
                    return fut::ready(Ok(self.view())).boxed_local();
                }
                return self.commit_and_reply(Input::RetryDue);
            }
            SessionRequest::Recover { cause } => {
                if !self.state.is_running() || self.engine.is_some() {
                    // Clear what the dead actor left in the registry (engine_alive).
                    self.publish();
                    return fut::ready(Ok(self.view())).boxed_local();
                }
                return self
                    .commit_exit(EngineEvent::Crashed { cause }, ExitCause::ActorPanicked)
                    .map(|saved, act, _| act.reply(saved))
                    .boxed_local();
            }
            SessionRequest::Settings(change) => return self.change_settings(change),
            SessionRequest::Fenced => {
                self.fence();
                return fut::ready(Ok(self.view())).boxed_local();
            }
            SessionRequest::Shutdown => {
                if self.engine.is_none() {
                    return fut::ready(Ok(self.view())).boxed_local();
                }
                return self
                    .stop_engine()
                    .then(|(), act, _| act.commit_and_reply(Input::Shutdown))
                    .boxed_local();
            }
        };
        let input = Input::Command(command);
        match command {
            C::Start if self.engine.is_some() => fut::ready(Err(WebError::SessionAlreadyStarted(
                self.record.name.clone(),
            )))
            .boxed_local(),
            C::Start | C::Restart => self.start(command),
            C::Stop => self
                .stop_engine()
                .then(move |(), act, _| act.commit_and_reply(input))
                .boxed_local(),
            C::ForceKill => {
                self.abort_engine();
                self.commit_and_reply(input)
            }
            C::Logout => self
                .logout_engine()
                .then(|(), act, _| act.forget())
                .then(move |(), act, _| act.commit_and_reply(input))
                .boxed_local(),
            C::Delete => self
                .stop_engine()
                .then(|(), act, _| act.forget())
                .then(|(), act, _| {
                    let store = act.deps.store.clone();
                    let id = act.id;
                    async move { store.delete_session(id).await }.into_actor(act)
                })
                .then(move |res, act, _| match res {
                    Ok(()) | Err(StoreError::NotFound) => {
                        act.deleted = true;
                        act.deps.registry.remove(act.id);
                        fut::ready(Ok(act.view())).boxed_local()
                    }
                    Err(err) => {
                        // The session stays, stopped.
                        log::error!("session {}: deleting it failed: {err}", act.id);
                        act.commit_and_act(input)
                            .map(|_, _, _| Err(unavailable()))
                            .boxed_local()
                    }
                })
                .boxed_local(),
        }
    }

    fn commit_and_reply(
        &mut self,
        input: Input,
    ) -> LocalBoxActorFuture<Self, Result<SessionView, WebError>> {
        self.commit_and_act(input)
            .map(|saved, act, _| act.reply(saved))
            .boxed_local()
    }

    /// A person's start (or restart): when the store refuses the new state
    /// (desired `running`), nothing starts and the state is left as it was,
    /// so that the caller's error tells the truth.
    ///
    /// A restart persists first and only then replaces the running engine:
    /// when the store refuses, the old engine keeps running.
    fn start(
        &mut self,
        command: SessionCommand,
    ) -> LocalBoxActorFuture<Self, Result<SessionView, WebError>> {
        let restart = command == SessionCommand::Restart;
        let before = (self.state.clone(), self.record.clone(), self.unsaved.len());
        self.commit(Input::Command(command))
            .then(move |committed, act, _| match committed.saved {
                Ok(()) => {
                    let stop = if restart {
                        act.stop_engine()
                    } else {
                        fut::ready(()).boxed_local()
                    };
                    stop.then(move |(), act, ctx| act.act(committed.action, ctx))
                        .map(|(), act, _| Ok(act.view()))
                        .boxed_local()
                }
                Err(err) => {
                    let (state, record, unsaved) = before;
                    act.state = state;
                    act.record = record;
                    act.unsaved.truncate(unsaved);
                    fut::ready(Err(err)).boxed_local()
                }
            })
            .boxed_local()
    }

    /// Change the record's settings and persist them (with any events the
    /// store refused before); no state-machine input, so the status, the
    /// engine and a pending restart stay as they are. The backoff policy is
    /// read again at once; the proxy is used from the next engine start.
    fn change_settings(
        &mut self,
        change: SettingsChange,
    ) -> LocalBoxActorFuture<Self, Result<SessionView, WebError>> {
        let mut record = self.record.clone();
        match change {
            SettingsChange::Config(patch) => {
                match crate::web::apply_config_patch(&record.config, patch) {
                    Ok(config) => record.config = Arc::new(config),
                    Err(e) => return fut::ready(Err(e)).boxed_local(),
                }
            }
            SettingsChange::Proxy { url, kind } => {
                record.proxy_url = url;
                record.proxy_type = kind;
            }
        }
        record.updated_at = Utc::now();
        let events = self.unsaved.clone();
        let count = events.len();
        self.saves_in_flight += 1;
        self.deps
            .store
            .save_session(record.clone(), events)
            .into_actor(self)
            .map(move |res, act, ctx| {
                act.save_answered(ctx);
                match res {
                    Ok(()) => {
                        act.unsaved.drain(..count);
                        act.policy = act.deps.options.policy(&record.config);
                        act.record = record.clone();
                        act.saved_record = record;
                        act.publish();
                        Ok(act.view())
                    }
                    Err(StoreError::NotFound) => Err(WebError::unknown_session(&act.record.name)),
                    Err(err) => {
                        log::error!("session {}: saving its settings failed: {err}", act.id);
                        Err(unavailable())
                    }
                }
            })
            .boxed_local()
    }

    fn stable_check(&mut self, generation: u64, ctx: &mut Context<Self>) {
        if self
            .engine
            .as_ref()
            .is_some_and(|e| e.generation == generation)
        {
            ctx.wait(self.commit(Input::StableElapsed).map(|_, _, _| ()));
        }
    }
}

impl Handler<SessionRequest> for SessionActor {
    type Result = AtomicResponse<Self, Result<SessionView, WebError>>;

    fn handle(&mut self, request: SessionRequest, ctx: &mut Context<Self>) -> Self::Result {
        AtomicResponse::new(self.run(request, ctx))
    }
}

impl Handler<EngineEventMsg> for SessionActor {
    type Result = ();

    fn handle(&mut self, msg: EngineEventMsg, ctx: &mut Context<Self>) {
        let generation = msg.generation;
        if msg.session_id != self.id
            || self
                .engine
                .as_ref()
                .is_none_or(|e| e.generation != generation)
        {
            log::debug!(
                "session {}: ignoring an event of a stale engine (generation {generation})",
                self.id
            );
            return;
        }
        if msg.event.is_terminal() {
            let fut = self.engine_ended(msg.event, ctx);
            ctx.wait(fut);
            return;
        }
        let fut = self
            .commit_and_act(Input::Engine(msg.event))
            .map(|_, _, _| ());
        ctx.wait(fut);
    }
}

impl Handler<PairCode> for SessionActor {
    type Result = ResponseFuture<Result<String, WebError>>;

    fn handle(&mut self, msg: PairCode, _: &mut Context<Self>) -> Self::Result {
        let name = &self.record.name;
        if let Err(why) = pairing_allowed(name, self.state.status) {
            return Box::pin(async move { Err(why.into()) });
        }
        let Some(handle) = self.engine.as_ref().and_then(|e| e.handle.as_ref()) else {
            let why = PairingUnavailable::NotConnectedYet {
                session: name.clone(),
            };
            return Box::pin(async move { Err(why.into()) });
        };
        let fut = guarded(
            || handle.pair_with_code(msg.phone),
            Some(self.deps.options.engine_start_timeout),
        );
        Box::pin(async move {
            match fut.await {
                Ok(Ok(code)) => Ok(code),
                Ok(Err(EngineError::NotReady(m))) => Err(WebError::PairingCodeNotAvailable(m)),
                Ok(Err(EngineError::Failed(m))) => Err(WebError::Engine(m)),
                Err(Guarded::TimedOut) => Err(WebError::Engine(
                    "WhatsApp did not answer in time".to_string(),
                )),
                Err(Guarded::Panicked(_)) => Err(WebError::Engine("The engine failed".to_string())),
            }
        })
    }
}

impl Handler<MaybeEnd> for SessionActor {
    type Result = ();

    /// No engine runs and nothing is in progress: the session needs no actor.
    fn handle(&mut self, _: MaybeEnd, ctx: &mut Context<Self>) {
        if self.engine.is_some() || self.ended {
            return;
        }
        if self.saves_in_flight > 0 {
            // A MaybeEnd queued earlier (by the request that started the
            // engine) can run after the engine failed, while the save of that
            // failure is in flight: flushing its events now would write them
            // twice (a seq conflict). Decide once the save is answered.
            self.end_deferred = true;
            return;
        }
        if !self.unsaved.is_empty() && !self.deleted && !self.fenced {
            // One more try to persist what the store refused before.
            let fut = self.commit(Input::Flush).map(|c, act, ctx| {
                if c.saved.is_err() {
                    log::error!(
                        "session {}: {} events could not be saved",
                        act.id,
                        act.unsaved.len()
                    );
                    act.unsaved.clear();
                }
                ctx.notify(MaybeEnd);
            });
            ctx.wait(fut);
            return;
        }
        self.ended = true;
        self.free_restore_slot();
        let retry = if self.deleted || self.fenced {
            None
        } else {
            self.state.retry_in(Utc::now())
        };
        self.report(Report::Ended { retry });
        ctx.stop();
    }
}
