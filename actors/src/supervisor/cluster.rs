//! Cluster mode's hooks into the SessionSupervisor (src/cluster in the
//! binary drives them): start the sessions this node just claimed (by the
//! restore rules: a few at a time, with jitter), stop at once the sessions
//! whose lease this node lost (self-fencing: no write, no retry), hand a
//! session over cleanly (drain), and tell which sessions have work here.

use std::collections::HashSet;

use actix::prelude::*;

use super::SessionSupervisor;
use crate::model::SessionId;
use crate::protocol::SessionRequest;
use crate::state::restored_at_boot;

/// Start these sessions (this node now owns them), through the restore
/// queue: at most `restore_concurrency` starting at once, each after a
/// random jitter. Sessions already active here are left alone.
#[derive(Message)]
#[rtype(result = "()")]
pub struct StartOwned(pub Vec<SessionId>);

/// This node lost these sessions' leases: abort their engines now, write
/// nothing, schedule no restart.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Fence(pub Vec<SessionId>);

/// Close this session's engine cleanly, keeping its desired state (drain:
/// another node takes it once the lease is released). Resolves when closed.
#[derive(Message)]
#[rtype(result = "()")]
pub struct HandOver(pub SessionId);

/// The sessions with work on this node: an actor, a pending restart, or a
/// place in the restore queue.
#[derive(Message)]
#[rtype(result = "HashSet<SessionId>")]
pub struct ActiveSessions;

impl Handler<StartOwned> for SessionSupervisor {
    type Result = ();

    fn handle(&mut self, msg: StartOwned, ctx: &mut Context<Self>) {
        if self.draining {
            return;
        }
        let mut queued = 0;
        for id in msg.0 {
            let restorable = self
                .deps
                .registry
                .get(id)
                .is_some_and(|v| restored_at_boot(&v.record));
            if restorable
                && !self.actors.contains_key(&id)
                && !self.retries.contains_key(&id)
                && !self.restore_queue.contains(&id)
            {
                self.restore_queue.push_back(id);
                queued += 1;
            }
        }
        self.restore_total += queued;
        self.pump_restore(ctx);
    }
}

impl Handler<Fence> for SessionSupervisor {
    type Result = ();

    fn handle(&mut self, msg: Fence, ctx: &mut Context<Self>) {
        for id in msg.0 {
            self.cancel_retry(id, ctx);
            self.restore_queue.retain(|q| *q != id);
            self.restoring.remove(&id);
            if let Some((addr, _)) = self.actors.get(&id) {
                addr.do_send(SessionRequest::Fenced);
            }
        }
        self.pump_restore(ctx);
    }
}

impl Handler<HandOver> for SessionSupervisor {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, msg: HandOver, ctx: &mut Context<Self>) -> Self::Result {
        let id = msg.0;
        self.cancel_retry(id, ctx);
        self.restore_queue.retain(|q| *q != id);
        let addr = self.actors.get(&id).map(|(a, _)| a.clone());
        let timeout = self.deps.options.stop_timeout * 2;
        Box::pin(async move {
            if let Some(addr) = addr {
                let _ = tokio::time::timeout(timeout, addr.send(SessionRequest::Shutdown)).await;
            }
        })
    }
}

impl Handler<ActiveSessions> for SessionSupervisor {
    type Result = MessageResult<ActiveSessions>;

    fn handle(&mut self, _: ActiveSessions, _: &mut Context<Self>) -> Self::Result {
        let mut ids: HashSet<SessionId> = self
            .actors
            .iter()
            .filter(|(_, (a, _))| a.connected())
            .map(|(id, _)| *id)
            .collect();
        ids.extend(self.retries.keys().copied());
        ids.extend(self.restore_queue.iter().copied());
        MessageResult(ids)
    }
}
