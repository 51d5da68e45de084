//! The SessionSupervisor: owns one SessionActor per session it has work for,
//! routes commands to it, schedules restarts with backoff after an engine
//! ended, recovers sessions whose actor panicked, restores the running
//! sessions at boot with bounded concurrency, and stops everything on
//! shutdown. (`actix::Supervisor` is not used: it restarts at once, without
//! backoff, and ignores panics.)

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

use rand::Rng;

use crate::backoff::BackoffLimits;
use crate::error::WebError;
use crate::model::{DesiredState, SessionId, SessionStatus, SessionView};
use crate::ports::{Engine, Store};
use crate::registry::SessionRegistry;
use crate::session::{ActorOp, Deps, Op, PairCode, SessionActor, SessionOp};

#[derive(Clone, Debug)]
pub struct SupervisorOptions {
    /// At most this many sessions are starting (status `initializing`) at a
    /// time during the boot restore. Default 8.
    pub restore_concurrency: usize,
    /// Bounds of the per-session backoff settings (the contract's by default;
    /// tests shrink them).
    pub backoff: BackoffLimits,
    /// How long `Engine::start` (and a pairing-code request) may take.
    pub engine_start_timeout: Duration,
    /// How long a clean engine stop (or logout) may take before it is aborted.
    pub stop_timeout: Duration,
    /// How long `Shutdown` waits for every session.
    pub shutdown_timeout: Duration,
    /// Each boot-restore start waits a random delay up to this, so the
    /// sessions sharing a wave do not dial at the same instant.
    pub restore_jitter: Duration,
}

impl Default for SupervisorOptions {
    fn default() -> Self {
        SupervisorOptions {
            restore_concurrency: 8,
            backoff: BackoffLimits::default(),
            engine_start_timeout: Duration::from_secs(60),
            stop_timeout: Duration::from_secs(10),
            shutdown_timeout: Duration::from_secs(20),
            restore_jitter: Duration::from_millis(20),
        }
    }
}

/// A command for one session (resolved id). Replies with the session's view
/// after the command (for `Delete`: the last view before removal).
#[derive(Message, Clone, Debug)]
#[rtype(result = "Result<SessionView, WebError>")]
pub struct Control {
    pub id: SessionId,
    pub op: SessionOp,
}

/// Ask a running session's engine for a pairing code.
#[derive(Message, Clone, Debug)]
#[rtype(result = "Result<String, WebError>")]
pub struct RequestPairing {
    pub id: SessionId,
    pub phone: String,
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

// ---- messages from session actors

#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Ended {
    pub id: SessionId,
    pub incarnation: u64,
    pub retry: Option<Duration>,
}

#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct ActorDied {
    pub id: SessionId,
    pub incarnation: u64,
}

#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct RestoreSlotFree {
    pub id: SessionId,
}

pub struct SessionSupervisor {
    deps: Deps,
    actors: HashMap<SessionId, (Addr<SessionActor>, u64)>,
    retries: HashMap<SessionId, SpawnHandle>,
    next_incarnation: u64,
    restore_queue: VecDeque<SessionId>,
    restoring: HashSet<SessionId>,
    restore_total: usize,
    /// Consecutive panics per session (reset when its actor ends normally).
    crashes: HashMap<SessionId, u32>,
    actor_deaths: u64,
    shutting_down: bool,
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
            shutting_down: false,
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
        let actor = SessionActor::new(&view, incarnation, self.deps.clone(), ctx.address());
        let addr = actor.start();
        self.actors.insert(id, (addr.clone(), incarnation));
        Some((addr, incarnation))
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

    fn schedule(&mut self, id: SessionId, delay: Duration, op: ActorOp, ctx: &mut Context<Self>) {
        self.cancel_retry(id, ctx);
        let handle = ctx.run_later(delay, move |act, ctx| {
            act.retries.remove(&id);
            if act.shutting_down {
                return;
            }
            if let Some((addr, _)) = act.actor(id, ctx) {
                addr.do_send(Op(op));
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
        while self.restoring.len() < limit && !self.shutting_down {
            let Some(id) = self.restore_queue.pop_front() else {
                break;
            };
            let Some((addr, _)) = self.actor(id, ctx) else {
                continue;
            };
            self.restoring.insert(id);
            let max = self.deps.options.restore_jitter.as_millis() as u64;
            let jitter = Duration::from_millis(rand::rng().random_range(0..=max));
            ctx.run_later(jitter, move |_, _| addr.do_send(Op(ActorOp::RestoreStart)));
        }
    }
}

impl Handler<Control> for SessionSupervisor {
    type Result = ResponseActFuture<Self, Result<SessionView, WebError>>;

    fn handle(&mut self, msg: Control, ctx: &mut Context<Self>) -> Self::Result {
        if self.shutting_down {
            return Box::pin(fut::ready(Err(WebError::ShuttingDown)));
        }
        let id = msg.id;
        // Any command supersedes a pending restart.
        self.cancel_retry(id, ctx);
        self.restore_queue.retain(|q| *q != id);
        let Some((addr, incarnation)) = self.actor(id, ctx) else {
            return Box::pin(fut::ready(Err(WebError::unknown_session_id(id))));
        };
        let op = ActorOp::Command(msg.op);
        let retry_op = op.clone();
        Box::pin(
            addr.send(Op(op))
                .into_actor(self)
                .then(move |res, act, ctx| match res {
                    Ok(reply) => fut::ready(reply).boxed_local(),
                    // The actor ended (or died) before it read the command: its
                    // successor starts from the registry and takes the command.
                    Err(_) => {
                        act.forget_actor(id, incarnation);
                        match act.actor(id, ctx) {
                            Some((addr, _)) => addr
                                .send(Op(retry_op))
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
}

impl Handler<RequestPairing> for SessionSupervisor {
    type Result = ResponseFuture<Result<String, WebError>>;

    fn handle(&mut self, msg: RequestPairing, _: &mut Context<Self>) -> Self::Result {
        let not_started = |id: SessionId| {
            WebError::PairingCodeNotAvailable(format!(
                "Session '{id}' is not started: start it first"
            ))
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
            let wanted = view.record.desired == DesiredState::Running
                && view.record.status != SessionStatus::Failed;
            if wanted
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
        self.shutting_down = true;
        self.restore_queue.clear();
        let ids: Vec<_> = self.retries.keys().copied().collect();
        for id in ids {
            self.cancel_retry(id, ctx);
        }
        let stops: Vec<_> = self
            .actors
            .values()
            .map(|(addr, _)| addr.send(Op(ActorOp::Shutdown)))
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

impl Handler<Ended> for SessionSupervisor {
    type Result = ();

    fn handle(&mut self, msg: Ended, ctx: &mut Context<Self>) {
        if !self.forget_actor(msg.id, msg.incarnation) {
            return;
        }
        self.crashes.remove(&msg.id);
        self.free_slot(msg.id, ctx);
        if let (Some(delay), false) = (msg.retry, self.shutting_down) {
            self.schedule(msg.id, delay, ActorOp::RetryDue, ctx);
        }
    }
}

impl Handler<ActorDied> for SessionSupervisor {
    type Result = ();

    fn handle(&mut self, msg: ActorDied, ctx: &mut Context<Self>) {
        self.actor_deaths += 1;
        // A command that was in flight already gave the session a successor.
        if !self.forget_actor(msg.id, msg.incarnation) {
            return;
        }
        log::error!("session {}: its actor panicked; recovering it", msg.id);
        self.free_slot(msg.id, ctx);
        if self.shutting_down {
            return;
        }
        // Recover after a growing delay so that a session that panics on
        // every attempt cannot spin.
        let n = self.crashes.entry(msg.id).or_insert(0);
        *n += 1;
        let limits = &self.deps.options.backoff;
        let delay = limits
            .min_base
            .saturating_mul(1u32 << (*n - 1).min(16))
            .min(limits.cap);
        self.schedule(
            msg.id,
            delay,
            ActorOp::Recover {
                cause: "the session actor panicked".to_string(),
            },
            ctx,
        );
    }
}

impl Handler<RestoreSlotFree> for SessionSupervisor {
    type Result = ();

    fn handle(&mut self, msg: RestoreSlotFree, ctx: &mut Context<Self>) {
        self.free_slot(msg.id, ctx);
    }
}
