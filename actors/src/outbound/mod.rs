//! Messages: the durable, paced outbound queue of every session, the
//! inbound messages and receipts, and the messages of the message routes.
//!
//! One `OutboundActor` per process. The database row is the truth: a send is
//! accepted once its row (`pending`, with the WhatsApp id wasup chose) is
//! committed; the actor only holds, per session with pending messages, a
//! small lane (when it may send next, the send times of the rate windows)
//! and a window of the next [`WINDOW`] pending messages, read from the store
//! together and read again once they are all done. A session
//! sends in acceptance order, one message at a time, only while it is
//! `ready`; a message not sent within `config.sending.queueTtlSeconds` ends
//! `failed`. After a crash the pending rows are found again at start and
//! sent with their ids unchanged, so the recipient sees one message.
//!
//! - `model`: the records, the statuses and the chat id parser;
//! - `ports`: the `MessageStore` port;
//! - `api`: the messages the routes send (send, get, list, cancel, check).

pub mod api;
pub mod model;
pub mod ports;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use chrono::Utc;
use rand::Rng;
use tokio::time::Instant;

pub use model::*;
pub use ports::MessageStore;

use crate::model::{Pacing, SessionId, SessionStatus, SessionView};
use crate::ports::{Engine, EngineError, InboundEvent, InboundMsg, IncomingCall};
use crate::registry::SessionRegistry;

#[derive(Clone, Debug)]
pub struct OutboundOptions {
    /// How often lanes are looked at.
    pub tick: Duration,
    /// How long a lane waits before looking again at a session that is not
    /// ready (or whose client said "not now").
    pub not_ready_wait: Duration,
    /// Upper bound of one engine call (send, presence, check).
    pub engine_timeout: Duration,
    /// Messages older than this are deleted (WASUP_MESSAGE_RETENTION_DAYS).
    pub retention: Duration,
    pub prune_interval: Duration,
    /// Cluster mode: how often the pending queue is read again, so that a
    /// node that took a session over also takes over its pending messages.
    /// `None` on a single node (every pending row is found at start or
    /// accepted here).
    pub rescan: Option<Duration>,
}

impl Default for OutboundOptions {
    fn default() -> Self {
        OutboundOptions {
            tick: Duration::from_millis(50),
            not_ready_wait: Duration::from_millis(500),
            engine_timeout: Duration::from_secs(30),
            retention: Duration::from_secs(30 * 24 * 3600),
            prune_interval: Duration::from_secs(3600),
            rescan: None,
        }
    }
}

/// How long "composing…" shows before a text: 30 ms per character, at most 3 s.
pub fn typing_time(text: &str) -> Duration {
    Duration::from_millis((text.chars().count() as u64 * 30).min(3000))
}

/// May a session take new messages? A linked session the operator wants
/// running does (it queues while reconnecting or starting); one that is not
/// linked, stopped or failed refuses, naming its status.
pub fn accepts_messages(view: &SessionView) -> Result<(), String> {
    let r = &view.record;
    let refuse = |why: &str| {
        Err(format!(
            "Session '{}' is {} ({why}); it cannot send messages",
            r.name, r.status
        ))
    };
    if r.status == SessionStatus::Failed {
        return refuse("start it again");
    }
    if r.phone.is_none() {
        return refuse("not linked to a phone");
    }
    if r.desired == crate::model::DesiredState::Stopped {
        return refuse("stopped; start it first");
    }
    Ok(())
}

/// Pending messages a lane reads from the store at once (and so holds at
/// most): one read serves that many sends instead of one.
const WINDOW: usize = 16;

/// One session's place in the queue (only while it has pending messages).
#[derive(Default)]
struct Lane {
    busy: bool,
    /// Nothing pending, kept only for its rate history: no turns until a
    /// new message wakes it.
    idle: bool,
    /// A message was accepted since the current turn began (its read of the
    /// queue may have missed it).
    woken: bool,
    /// The next pending messages, oldest first; the front is the head. A
    /// message leaves it when it is sent, failed, expired or cancelled.
    window: VecDeque<MessageRecord>,
    /// Not before this instant (pacing, rate windows, waits).
    next_at: Option<Instant>,
    /// When the last sends went, newest last, for the per-minute and per-day windows.
    recent: VecDeque<Instant>,
}

const MINUTE: Duration = Duration::from_secs(60);
const DAY: Duration = Duration::from_secs(24 * 3600);

impl Lane {
    /// May a turn start now?
    fn due(&self, now: Instant) -> bool {
        !self.busy && !self.idle && self.next_at.is_none_or(|t| t <= now)
    }

    /// Is `id` the head a turn is working on now (a cancel of it is refused)?
    fn is_in_flight(&self, id: &str) -> bool {
        self.busy && self.window.front().is_some_and(|m| m.id == id)
    }

    /// Does a rate window still count one of its sends? (An idle lane that
    /// no longer does is closed.)
    fn counts_sends(&self, now: Instant) -> bool {
        self.recent
            .back()
            .is_some_and(|t| now.duration_since(*t) < DAY)
    }

    /// When the rate windows allow the next send (None: now).
    fn rate_wait(&mut self, now: Instant, pacing: &Pacing) -> Option<Instant> {
        while self
            .recent
            .front()
            .is_some_and(|t| now.duration_since(*t) >= DAY)
        {
            self.recent.pop_front();
        }
        let window_full = |limit: u32, window: Duration, recent: &VecDeque<Instant>| {
            let limit = limit as usize;
            if limit == 0 {
                return None;
            }
            let inside: Vec<&Instant> = recent
                .iter()
                .rev()
                .take_while(|t| now.duration_since(**t) < window)
                .collect();
            (inside.len() >= limit).then(|| *inside[limit - 1] + window)
        };
        [
            window_full(pacing.per_minute, MINUTE, &self.recent),
            window_full(pacing.per_day, DAY, &self.recent),
        ]
        .into_iter()
        .flatten()
        .max()
    }
}

/// What one turn of a lane came to.
enum Turn {
    /// Nothing pending: the lane closes.
    Empty,
    /// A message went out (or failed for good): pace before the next.
    Sent,
    Failed,
    /// A message expired: look at the next one now.
    Expired,
    /// Not now; look again after this.
    Wait(Duration),
}

pub struct OutboundActor {
    store: Arc<dyn MessageStore>,
    engine: Arc<dyn Engine>,
    registry: Arc<SessionRegistry>,
    options: OutboundOptions,
    lanes: HashMap<SessionId, Lane>,
    /// Inbound events are written one after another, in arrival order.
    inbound: Option<tokio::sync::mpsc::UnboundedSender<InboundMsg>>,
}

impl OutboundActor {
    pub fn new(
        store: Arc<dyn MessageStore>,
        engine: Arc<dyn Engine>,
        registry: Arc<SessionRegistry>,
        options: OutboundOptions,
    ) -> Self {
        OutboundActor {
            store,
            engine,
            registry,
            options,
            lanes: HashMap::new(),
            inbound: None,
        }
    }

    /// A session has (maybe) pending messages: open its lane.
    fn wake(&mut self, id: SessionId) {
        let lane = self.lanes.entry(id).or_default();
        lane.idle = false;
        lane.woken = true;
    }

    /// Give every session with a pending message a lane.
    fn find_pending(&mut self, ctx: &mut Context<Self>) {
        let pending = self.store.sessions_with_pending();
        ctx.spawn(pending.into_actor(self).map(|res, act, _| match res {
            Ok(ids) => {
                let new = ids.iter().filter(|id| !act.lanes.contains_key(id)).count();
                if new > 0 {
                    log::info!("messages: {new} more sessions have pending messages");
                }
                for id in ids {
                    act.wake(id);
                }
            }
            Err(err) => log::error!("messages: could not read the pending queue: {err}"),
        }));
    }

    fn tick(&mut self, ctx: &mut Context<Self>) {
        let now = Instant::now();
        // An idle lane closes once no rate window counts its sends any more.
        self.lanes.retain(|_, l| !l.idle || l.counts_sends(now));
        let due: Vec<SessionId> = self
            .lanes
            .iter()
            .filter(|(_, l)| l.due(now))
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            self.turn(id, now, ctx);
        }
    }

    fn turn(&mut self, id: SessionId, now: Instant, ctx: &mut Context<Self>) {
        let Some(view) = self.registry.get(id) else {
            self.lanes.remove(&id); // deleted: its rows went with it
            return;
        };
        let pacing = view.record.config.pacing();
        let Some(lane) = self.lanes.get_mut(&id) else {
            return;
        };
        lane.busy = true;
        lane.woken = false;
        let Some(head) = lane.window.front().cloned() else {
            self.refill(id, pacing, ctx);
            return;
        };
        let rate_wait = lane.rate_wait(now, &pacing);
        let store = self.store.clone();
        let ready = view.record.status == SessionStatus::Ready;
        let messenger = if ready {
            self.engine.messenger(id)
        } else {
            None
        };
        let status = view.record.status;
        let options = self.options.clone();
        let work = async move {
            let age = Utc::now() - head.created_at;
            if age.num_seconds() >= pacing.queue_ttl_seconds as i64 {
                let error = format!(
                    "not sent within queueTtlSeconds ({} s); the session was {status}",
                    pacing.queue_ttl_seconds
                );
                store
                    .set_status(
                        id,
                        head.id.clone(),
                        StatusUpdate::now(MessageStatus::Failed, Some(error)),
                    )
                    .await?;
                return Ok((Turn::Expired, None));
            }
            let Some(messenger) = messenger else {
                return Ok((Turn::Wait(options.not_ready_wait), None));
            };
            if let Some(at) = rate_wait {
                return Ok((
                    Turn::Wait(at.saturating_duration_since(Instant::now())),
                    None,
                ));
            }
            Ok((Turn::Wait(Duration::ZERO), Some((head, messenger))))
        };
        work.into_actor(self)
            .map(move |res, act, ctx| match res {
                Ok((_, Some((head, messenger)))) => act.send(id, head, messenger, pacing, ctx),
                Ok((turn, None)) => act.finish_turn(id, turn, pacing, ctx),
                Err(err) => act.store_failed(id, err, pacing, ctx),
            })
            .spawn(ctx);
    }

    /// A turn found the window empty: read the next pending messages, then
    /// take the head (or close the turn: nothing is pending).
    fn refill(&mut self, id: SessionId, pacing: Pacing, ctx: &mut Context<Self>) {
        self.store
            .pending(id, WINDOW)
            .into_actor(self)
            .map(move |res, act, ctx| match res {
                Ok(window) if window.is_empty() => act.finish_turn(id, Turn::Empty, pacing, ctx),
                Ok(window) => {
                    if let Some(lane) = act.lanes.get_mut(&id) {
                        lane.window = window.into();
                        lane.busy = false;
                        act.turn(id, Instant::now(), ctx);
                    }
                }
                Err(err) => act.store_failed(id, err, pacing, ctx),
            })
            .spawn(ctx);
    }

    /// A turn's read or write failed.
    fn store_failed(
        &mut self,
        id: SessionId,
        err: crate::ports::StoreError,
        pacing: Pacing,
        ctx: &mut Context<Self>,
    ) {
        match err {
            // Another node owns the session: its queue is that node's.
            crate::ports::StoreError::Fenced(_) => {
                self.lanes.remove(&id);
            }
            err => {
                log::error!("session {id}: outbound queue: the store failed: {err}");
                self.finish_turn(id, Turn::Wait(Duration::from_secs(1)), pacing, ctx);
            }
        }
    }

    /// Second half of a turn: the head is known and marked in flight (a
    /// cancel of it is refused).
    fn send(
        &mut self,
        id: SessionId,
        head: MessageRecord,
        messenger: Arc<dyn crate::ports::Messenger>,
        pacing: Pacing,
        ctx: &mut Context<Self>,
    ) {
        let store = self.store.clone();
        let options = self.options.clone();
        send_head(store, id, head, messenger, pacing.typing, options)
            .into_actor(self)
            .map(move |res, act, ctx| {
                let turn = res.unwrap_or_else(|err| {
                    log::error!("session {id}: outbound queue: the store failed: {err}");
                    Turn::Wait(Duration::from_secs(1))
                });
                act.finish_turn(id, turn, pacing, ctx);
            })
            .spawn(ctx);
    }

    fn finish_turn(&mut self, id: SessionId, turn: Turn, pacing: Pacing, ctx: &mut Context<Self>) {
        let Some(lane) = self.lanes.get_mut(&id) else {
            return;
        };
        lane.busy = false;
        // The head is done with (a cancel cannot take it while it is in
        // flight): the next one is the new head.
        if matches!(turn, Turn::Sent | Turn::Failed | Turn::Expired) {
            lane.window.pop_front();
        }
        let now = Instant::now();
        match turn {
            // A message came while the queue was read: read it again.
            Turn::Empty if lane.woken => lane.next_at = None,
            // Kept for its rate history until the next message (its pacing
            // delay stays as it was); the tick closes it when that is old.
            Turn::Empty if lane.counts_sends(now) => lane.idle = true,
            Turn::Empty => {
                self.lanes.remove(&id);
            }
            Turn::Sent | Turn::Failed => {
                if matches!(turn, Turn::Sent) {
                    lane.recent.push_back(now);
                    // Only as many as the largest window can count.
                    let keep = pacing.per_day.max(pacing.per_minute) as usize;
                    while lane.recent.len() > keep {
                        lane.recent.pop_front();
                    }
                }
                let delay = if pacing.max_delay_ms > pacing.min_delay_ms {
                    rand::rng().random_range(pacing.min_delay_ms..=pacing.max_delay_ms)
                } else {
                    pacing.min_delay_ms
                };
                lane.next_at = Some(now + Duration::from_millis(delay));
            }
            Turn::Expired => lane.next_at = None,
            Turn::Wait(d) => lane.next_at = Some(now + d),
        }
        // Due now (no pacing): the next turn starts without waiting for the tick.
        if self.lanes.get(&id).is_some_and(|l| l.due(now)) {
            self.turn(id, now, ctx);
        }
    }

    fn prune(&mut self, ctx: &mut Context<Self>) {
        let Ok(retention) = chrono::Duration::from_std(self.options.retention) else {
            return;
        };
        let prune = self.store.prune_messages(Utc::now() - retention);
        ctx.spawn(
            async move {
                match prune.await {
                    Ok(0) => {}
                    Ok(n) => log::info!("messages: pruned {n} messages past retention"),
                    Err(err) => log::warn!("messages: pruning failed: {err}"),
                }
            }
            .into_actor(self),
        );
    }
}

/// Send the head of a lane: "composing" first when asked, then the text under
/// its id; record the outcome.
async fn send_head(
    store: Arc<dyn MessageStore>,
    id: SessionId,
    head: MessageRecord,
    messenger: Arc<dyn crate::ports::Messenger>,
    typing: bool,
    options: OutboundOptions,
) -> Result<Turn, crate::ports::StoreError> {
    let timeout = options.engine_timeout;
    let bounded = |f: futures::future::BoxFuture<'static, Result<(), EngineError>>| async move {
        tokio::time::timeout(timeout, f).await.unwrap_or_else(|_| {
            Err(EngineError::NotReady(
                "WhatsApp did not answer in time".into(),
            ))
        })
    };
    if typing {
        let _ = bounded(messenger.composing(head.chat_id.clone(), true)).await;
        tokio::time::sleep(typing_time(&head.body)).await;
        let _ = bounded(messenger.composing(head.chat_id.clone(), false)).await;
    }
    let sent = bounded(messenger.send_text(&head)).await;
    match sent {
        Ok(()) => {
            // It is out: a failed write here must not send it again, so
            // the write is retried (a resend would keep the id, but the
            // recipient's phone would see a second delivery).
            let mut tries = 0;
            loop {
                let update = StatusUpdate::now(MessageStatus::Sent, None);
                match store.set_status(id, head.id.clone(), update).await {
                    Ok(_) => break,
                    Err(err) if tries < 20 => {
                        tries += 1;
                        log::warn!(
                            "session {id}: recording message {} as sent failed ({err}); retrying",
                            head.id
                        );
                        tokio::time::sleep(Duration::from_millis(250)).await;
                    }
                    Err(err) => return Err(err),
                }
            }
            Ok(Turn::Sent)
        }
        Err(EngineError::NotReady(why)) => {
            log::info!("session {id}: message {} waits: {why}", head.id);
            Ok(Turn::Wait(options.not_ready_wait))
        }
        Err(EngineError::Failed(why)) => {
            store
                .set_status(
                    id,
                    head.id.clone(),
                    StatusUpdate::now(MessageStatus::Failed, Some(why)),
                )
                .await?;
            Ok(Turn::Failed)
        }
    }
}

impl StatusUpdate {
    pub fn now(status: MessageStatus, error: Option<String>) -> Self {
        StatusUpdate {
            status,
            error,
            at: Utc::now(),
        }
    }
}

impl OutboundActor {
    /// `config.autoRejectCalls` (read live, like pacing): decline the call.
    /// Otherwise it rings on the phone as usual.
    fn answer_call(&mut self, id: SessionId, call: IncomingCall, ctx: &mut Context<Self>) {
        let Some(view) = self.registry.get(id) else {
            return;
        };
        if !view.record.config.auto_reject_calls.unwrap_or(false) {
            return;
        }
        let Some(messenger) = self.engine.messenger(id) else {
            log::warn!(
                "session {id}: call {} not rejected: the session is not connected",
                call.call_id
            );
            return;
        };
        let call_id = call.call_id.clone();
        ctx.spawn(
            async move {
                match messenger.reject_call(call).await {
                    Ok(()) => log::info!("session {id}: call {call_id} rejected (autoRejectCalls)"),
                    Err(e) => log::warn!("session {id}: call {call_id} not rejected: {e}"),
                }
            }
            .into_actor(self),
        );
    }
}

impl Actor for OutboundActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // Inbound writes: one task, in arrival order (a read receipt never
        // overtakes the delivery receipt before it), whatever is waiting
        // written together: one commit and one disk sync for a burst of
        // receipts instead of one each.
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<InboundMsg>();
        self.inbound = Some(tx);
        let store = self.store.clone();
        ctx.spawn(
            async move {
                let mut batch = Vec::with_capacity(INBOUND_BATCH);
                while rx.recv_many(&mut batch, INBOUND_BATCH).await > 0 {
                    record_inbound(&*store, std::mem::take(&mut batch)).await;
                }
            }
            .into_actor(self),
        );
        // Sessions with messages left pending by the last run.
        self.find_pending(ctx);
        if let Some(every) = self.options.rescan {
            ctx.run_interval(every, |act, ctx| act.find_pending(ctx));
        }
        ctx.run_interval(self.options.tick, |act, ctx| act.tick(ctx));
        ctx.run_interval(self.options.prune_interval, |act, ctx| act.prune(ctx));
        self.prune(ctx);
    }
}

/// Inbound messages and receipts written in one transaction at most.
const INBOUND_BATCH: usize = 256;

/// Write what arrived (everything waiting, up to `INBOUND_BATCH`) in one
/// transaction; a failed write is tried again a few times (the client will
/// not send it again).
async fn record_inbound(store: &dyn MessageStore, batch: Vec<InboundMsg>) {
    for attempt in 0..5u64 {
        match store.record_inbound(batch.clone()).await {
            Ok(()) => return,
            Err(err) => {
                log::error!(
                    "storing {} inbound messages or receipts failed (attempt {}): {err}",
                    batch.len(),
                    attempt + 1
                );
                tokio::time::sleep(Duration::from_millis(200 * (attempt + 1))).await;
            }
        }
    }
}

impl Handler<InboundMsg> for OutboundActor {
    type Result = ();

    fn handle(&mut self, msg: InboundMsg, ctx: &mut Context<Self>) {
        if let InboundEvent::Call(call) = msg.event {
            self.answer_call(msg.session_id, call, ctx);
            return;
        }
        if let Some(tx) = &self.inbound {
            let _ = tx.send(msg);
        }
    }
}

/// Start the actor and route every engine's inbound messages to it.
pub fn start_messaging(
    store: Arc<dyn MessageStore>,
    engine: Arc<dyn Engine>,
    registry: Arc<SessionRegistry>,
    options: OutboundOptions,
) -> Addr<OutboundActor> {
    let addr = OutboundActor::new(store, engine.clone(), registry, options).start();
    engine.attach_inbound(addr.clone().recipient());
    addr
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pacing(per_minute: u32, per_day: u32) -> Pacing {
        Pacing {
            per_minute,
            per_day,
            ..Pacing::DEFAULT
        }
    }

    #[test]
    fn rate_windows_hold_excess_until_the_oldest_send_leaves_them() {
        let t0 = Instant::now();
        let mut lane = Lane::default();
        assert_eq!(lane.rate_wait(t0, &pacing(2, 0)), None, "nothing sent yet");
        lane.recent.push_back(t0);
        lane.recent.push_back(t0 + Duration::from_secs(10));
        let now = t0 + Duration::from_secs(20);
        // Two sends in the last minute with perMinute 2: wait for the first to age out.
        assert_eq!(lane.rate_wait(now, &pacing(2, 0)), Some(t0 + MINUTE));
        assert_eq!(lane.rate_wait(now, &pacing(3, 0)), None);
        // 0 means no limit; the day window counts the same sends.
        assert_eq!(lane.rate_wait(now, &pacing(0, 0)), None);
        assert_eq!(lane.rate_wait(now, &pacing(0, 2)), Some(t0 + DAY));
        // After the minute, only the day window can hold it.
        let later = t0 + Duration::from_secs(75);
        assert_eq!(lane.rate_wait(later, &pacing(2, 0)), None);
    }

    #[test]
    fn typing_scales_with_the_text_and_is_capped() {
        assert_eq!(typing_time("hi"), Duration::from_millis(60));
        assert_eq!(typing_time(&"x".repeat(1000)), Duration::from_secs(3));
    }
}
