//! The SessionSupervisor: owns one SessionActor per session it has work for,
//! routes commands to it, holds the timer of the restart an ended actor
//! left pending (the state machine chose its delay), recovers sessions whose actor panicked, restores the running
//! sessions at boot with bounded concurrency, and stops everything on
//! shutdown. (`actix::Supervisor` is not used: it restarts at once, without
//! backoff, and ignores panics.)

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

use rand::Rng;

use crate::error::WebError;
use crate::model::{SessionId, SessionView};
use crate::ports::{Engine, Store};
pub use crate::protocol::SupervisorOptions;
use crate::protocol::{
    Deps, PairCode, Report, SessionCommand, SessionReport, SessionRequest, SettingsChange,
};
use crate::registry::SessionRegistry;
use crate::session::SessionActor;
use crate::state::{recover_delay, restored_at_boot, PairingUnavailable};

/// Cluster mode's hooks (claimed sessions, fencing, drain).
pub mod cluster;

/// A command for one session (resolved id). Replies with the session's view
/// after the command (for `Delete`: the last view before removal).
#[derive(Message, Clone, Debug)]
#[rtype(result = "Result<SessionView, WebError>")]
pub struct Command {
    pub id: SessionId,
    pub command: SessionCommand,
}

/// Ask a running session's engine for a pairing code.
#[derive(Message, Clone, Debug)]
#[rtype(result = "Result<String, WebError>")]
pub struct RequestPairing {
    pub id: SessionId,
    pub phone: String,
}

/// Change a session's settings through its actor (spawned for the change
/// when it has none). Unlike a `Command`, it leaves a pending restart and the
/// restore queue alone. Replies with the view after the change.
#[derive(Message, Clone, Debug)]
#[rtype(result = "Result<SessionView, WebError>")]
pub struct ChangeSettings {
    pub id: SessionId,
    pub change: SettingsChange,
}

/// Start every session whose desired state is `running` (boot).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Restore;

/// Stop every engine cleanly (desired states unchanged); resolves when done
/// or after `shutdown_timeout`. Commands are refused afterwards.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Shutdown;

/// Introspection for tests and metrics.
#[derive(Message)]
#[rtype(result = "SupervisorStats")]
pub struct GetStats;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SupervisorStats {
    /// Session actors alive.
    pub actors: usize,
    /// Restarts scheduled and not yet due.
    pub pending_retries: usize,
    /// Sessions waiting for a restore slot.
    pub restore_queued: usize,
    /// Restore slots in use.
    pub restoring: usize,
    /// Sessions the boot restore queued in all.
    pub restore_total: usize,
    /// Session actors that died by a panic since boot.
    pub actor_deaths: u64,
}

pub struct SessionSupervisor {
    deps: Deps,
    actors: HashMap<SessionId, (Addr<SessionActor>, u64)>,
    /// The timers of pending restarts and recoveries. The state machine
    /// decides a restart (`next_retry_at`); an ended actor hands it here.
    retries: HashMap<SessionId, SpawnHandle>,
    next_incarnation: u64,
    restore_queue: VecDeque<SessionId>,
    restoring: HashSet<SessionId>,
    restore_total: usize,
    /// Consecutive panics per session (reset when its actor ends normally).
    crashes: HashMap<SessionId, u32>,
    actor_deaths: u64,
    draining: bool,
}

impl Actor for SessionSupervisor {
    type Context = Context<Self>;
}

impl SessionSupervisor {
    pub fn new(
        store: Arc<dyn Store>,
        engine: Arc<dyn Engine>,
        registry: Arc<SessionRegistry>,
        options: SupervisorOptions,
    ) -> Self {
        SessionSupervisor {
            deps: Deps {
                store,
                engine,
                registry,
                options: Arc::new(options),
                generations: Arc::new(AtomicU64::new(0)),
            },
            actors: HashMap::new(),
            retries: HashMap::new(),
            next_incarnation: 0,
            restore_queue: VecDeque::new(),
            restoring: HashSet::new(),
            restore_total: 0,
            crashes: HashMap::new(),
            actor_deaths: 0,
            draining: false,
        }
    }

    /// The session's actor, spawned from its registry view when it has none.
    fn actor(
        &mut self,
        id: SessionId,
        ctx: &mut Context<Self>,
    ) -> Option<(Addr<SessionActor>, u64)> {
        if let Some((addr, inc)) = self.actors.get(&id) {
            if addr.connected() {
                return Some((addr.clone(), *inc));
            }
        }
        let view = self.deps.registry.get(id)?;
        self.next_incarnation += 1;
        let incarnation = self.next_incarnation;
        let reports = ctx.address().recipient();
        let actor = SessionActor::new(&view, incarnation, self.deps.clone(), reports);
        let addr = actor.start();
        self.actors.insert(id, (addr.clone(), incarnation));
        Some((addr, incarnation))
    }

    /// Hand `request` to the session's actor (started when it has none) and
    /// answer its reply. An actor that ended (or died) before it read the
    /// request (an idle session's actor ends after each request) is
    /// forgotten, and its successor, started from the registry, takes it.
    fn ask_session(
        &mut self,
        id: SessionId,
        request: SessionRequest,
        ctx: &mut Context<Self>,
    ) -> ResponseActFuture<Self, Result<SessionView, WebError>> {
        let Some((addr, incarnation)) = self.actor(id, ctx) else {
            return Box::pin(fut::ready(Err(WebError::unknown_session_id(id))));
        };
        Box::pin(
            addr.send(request.clone())
                .into_actor(self)
                .then(move |res, act, ctx| match res {
                    Ok(reply) => fut::ready(reply).boxed_local(),
                    Err(_) => {
                        act.forget_actor(id, incarnation);
                        match act.actor(id, ctx) {
                            Some((addr, _)) => addr
                                .send(request)
                                .into_actor(act)
                                .map(|res, _, _| {
                                    res.unwrap_or_else(|_| {
                                        Err(WebError::Unavailable(
                                            "The session is restarting; try again".to_string(),
                                        ))
                                    })
                                })
                                .boxed_local(),
                            None => fut::ready(Err(WebError::unknown_session_id(id))).boxed_local(),
                        }
                    }
                }),
        )
    }

    fn forget_actor(&mut self, id: SessionId, incarnation: u64) -> bool {
        if self
            .actors
            .get(&id)
            .is_some_and(|(_, inc)| *inc == incarnation)
        {
            self.actors.remove(&id);
            true
        } else {
            false
        }
    }

    fn cancel_retry(&mut self, id: SessionId, ctx: &mut Context<Self>) {
        if let Some(handle) = self.retries.remove(&id) {
            ctx.cancel_future(handle);
        }
    }

    fn schedule(
        &mut self,
        id: SessionId,
        delay: Duration,
        request: SessionRequest,
        ctx: &mut Context<Self>,
    ) {
        self.cancel_retry(id, ctx);
        let handle = ctx.run_later(delay, move |act, ctx| {
            act.retries.remove(&id);
            if act.draining {
                return;
            }
            if let Some((addr, _)) = act.actor(id, ctx) {
                addr.do_send(request);
            }
        });
        self.retries.insert(id, handle);
    }

    fn free_slot(&mut self, id: SessionId, ctx: &mut Context<Self>) {
        if self.restoring.remove(&id) {
            self.pump_restore(ctx);
        }
    }

    fn pump_restore(&mut self, ctx: &mut Context<Self>) {
        let limit = self.deps.options.restore_concurrency.max(1);
        while self.restoring.len() < limit && !self.draining {
            let Some(id) = self.restore_queue.pop_front() else {
                break;
            };
            let Some((addr, _)) = self.actor(id, ctx) else {
                continue;
            };
            self.restoring.insert(id);
            let max = self.deps.options.restore_jitter.as_millis() as u64;
            let jitter = Duration::from_millis(rand::rng().random_range(0..=max));
            ctx.run_later(jitter, move |_, _| {
                addr.do_send(SessionRequest::RestoreStart)
            });
        }
    }
}

impl Handler<Command> for SessionSupervisor {
    type Result = ResponseActFuture<Self, Result<SessionView, WebError>>;

    fn handle(&mut self, msg: Command, ctx: &mut Context<Self>) -> Self::Result {
        if self.draining {
            return Box::pin(fut::ready(Err(WebError::ShuttingDown)));
        }
        let id = msg.id;
        // Any command supersedes a pending restart.
        self.cancel_retry(id, ctx);
        self.restore_queue.retain(|q| *q != id);
        self.ask_session(id, SessionRequest::Command(msg.command), ctx)
    }
}

impl Handler<ChangeSettings> for SessionSupervisor {
    type Result = ResponseActFuture<Self, Result<SessionView, WebError>>;

    fn handle(&mut self, msg: ChangeSettings, ctx: &mut Context<Self>) -> Self::Result {
        if self.draining {
            return Box::pin(fut::ready(Err(WebError::ShuttingDown)));
        }
        let id = msg.id;
        self.ask_session(id, SessionRequest::Settings(msg.change), ctx)
    }
}

impl Handler<RequestPairing> for SessionSupervisor {
    type Result = ResponseFuture<Result<String, WebError>>;

    fn handle(&mut self, msg: RequestPairing, _: &mut Context<Self>) -> Self::Result {
        let not_started = |id: SessionId| {
            WebError::from(PairingUnavailable::NotStarted {
                session: id.to_string(),
            })
        };
        let Some((addr, _)) = self.actors.get(&msg.id).cloned() else {
            return Box::pin(async move { Err(not_started(msg.id)) });
        };
        Box::pin(async move {
            addr.send(PairCode { phone: msg.phone })
                .await
                .unwrap_or_else(|_| Err(not_started(msg.id)))
        })
    }
}

impl Handler<Restore> for SessionSupervisor {
    type Result = ();

    fn handle(&mut self, _: Restore, ctx: &mut Context<Self>) {
        let mut views = self.deps.registry.all();
        // Oldest first: the order sessions were created in.
        views.sort_by(|a, b| {
            a.record
                .created_at
                .cmp(&b.record.created_at)
                .then(a.record.name.cmp(&b.record.name))
        });
        for view in views {
            let id = view.record.id;
            if restored_at_boot(&view.record)
                && !self.actors.contains_key(&id)
                && !self.retries.contains_key(&id)
                && !self.restore_queue.contains(&id)
            {
                self.restore_queue.push_back(id);
            }
        }
        self.restore_total += self.restore_queue.len();
        log::info!("restoring {} sessions", self.restore_queue.len());
        self.pump_restore(ctx);
    }
}

impl Handler<Shutdown> for SessionSupervisor {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _: Shutdown, ctx: &mut Context<Self>) -> Self::Result {
        self.draining = true;
        self.restore_queue.clear();
        let ids: Vec<_> = self.retries.keys().copied().collect();
        for id in ids {
            self.cancel_retry(id, ctx);
        }
        let stops: Vec<_> = self
            .actors
            .values()
            .map(|(addr, _)| addr.send(SessionRequest::Shutdown))
            .collect();
        let timeout = self.deps.options.shutdown_timeout;
        Box::pin(
            async move {
                if tokio::time::timeout(timeout, futures::future::join_all(stops))
                    .await
                    .is_err()
                {
                    log::warn!("shutdown: some sessions did not stop within {timeout:?}");
                }
            }
            .into_actor(self),
        )
    }
}

impl Handler<GetStats> for SessionSupervisor {
    type Result = MessageResult<GetStats>;

    fn handle(&mut self, _: GetStats, _: &mut Context<Self>) -> Self::Result {
        MessageResult(SupervisorStats {
            actors: self.actors.values().filter(|(a, _)| a.connected()).count(),
            pending_retries: self.retries.len(),
            restore_queued: self.restore_queue.len(),
            restoring: self.restoring.len(),
            restore_total: self.restore_total,
            actor_deaths: self.actor_deaths,
        })
    }
}

impl Handler<SessionReport> for SessionSupervisor {
    type Result = ();

    fn handle(&mut self, msg: SessionReport, ctx: &mut Context<Self>) {
        match msg.report {
            Report::RestoreSlotFree => self.free_slot(msg.id, ctx),
            Report::Ended { retry } => self.ended(msg.id, msg.incarnation, retry, ctx),
            Report::Died => self.died(msg.id, msg.incarnation, ctx),
        }
    }
}

impl SessionSupervisor {
    fn ended(
        &mut self,
        id: SessionId,
        incarnation: u64,
        retry: Option<Duration>,
        ctx: &mut Context<Self>,
    ) {
        if !self.forget_actor(id, incarnation) {
            return;
        }
        self.crashes.remove(&id);
        self.free_slot(id, ctx);
        if let (Some(delay), false) = (retry, self.draining) {
            self.schedule(id, delay, SessionRequest::RetryDue, ctx);
        }
    }

    fn died(&mut self, id: SessionId, incarnation: u64, ctx: &mut Context<Self>) {
        self.actor_deaths += 1;
        // A command that was in flight already gave the session a successor.
        if !self.forget_actor(id, incarnation) {
            return;
        }
        log::error!("session {id}: its actor panicked; recovering it");
        self.free_slot(id, ctx);
        if self.draining {
            return;
        }
        let Some(view) = self.deps.registry.get(id) else {
            return;
        };
        let deaths = self.crashes.entry(id).or_insert(0);
        *deaths += 1;
        let policy = self.deps.options.policy(&view.record.config);
        let delay = recover_delay(&policy, *deaths, &mut rand::rng());
        let cause = "the session actor panicked".to_string();
        self.schedule(id, delay, SessionRequest::Recover { cause }, ctx);
    }
}
