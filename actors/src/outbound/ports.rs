//! What the outbound queue and the message routes need from the database.
//! Every write that changes what a receiver should hear (a new message, a
//! status change) writes its event in the same transaction.

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;

use super::model::*;
use crate::model::SessionId;
use crate::ports::StoreError;

pub type StoreFuture<T> = BoxFuture<'static, Result<T, StoreError>>;

pub trait MessageStore: Send + Sync + 'static {
    /// Store a new outbound message (`pending`). With an idempotency key
    /// already used in this session, the first message is returned instead.
    fn accept(&self, message: MessageRecord) -> StoreFuture<Accepted>;
    /// The message an idempotency key was first used for.
    fn by_idempotency_key(
        &self,
        session_id: SessionId,
        key: String,
    ) -> StoreFuture<Option<MessageRecord>>;
    fn get(&self, session_id: SessionId, id: String) -> StoreFuture<Option<MessageRecord>>;
    /// Newest first.
    fn list(&self, session_id: SessionId, query: MessageQuery) -> StoreFuture<Vec<MessageRecord>>;
    /// Delete a message that is still pending.
    fn cancel(&self, session_id: SessionId, id: String) -> StoreFuture<Cancelled>;
    /// The oldest pending outbound messages of a session, in acceptance order.
    fn pending(&self, session_id: SessionId, limit: usize) -> StoreFuture<Vec<MessageRecord>>;
    /// Every session with a pending outbound message (at start).
    fn sessions_with_pending(&self) -> StoreFuture<Vec<SessionId>>;
    /// Move an outbound message to `update.status` (when that is a forward
    /// move) and write its `message.ack` / `message.failed` event. False when
    /// nothing changed.
    fn set_status(
        &self,
        session_id: SessionId,
        id: String,
        update: StatusUpdate,
    ) -> StoreFuture<bool>;
    /// A receipt for several messages at once; how many changed.
    fn receipt(
        &self,
        session_id: SessionId,
        ids: Vec<String>,
        update: StatusUpdate,
    ) -> StoreFuture<usize>;
    /// Store an inbound message (or our own, sent from the phone) once, with
    /// its `message.received` / `message.sent` event. False when it was
    /// stored before (a redelivery).
    fn store_inbound(&self, message: MessageRecord) -> StoreFuture<bool>;
    /// Inbound messages and receipts as they arrived, in one transaction:
    /// each applied as `store_inbound` / `receipt` would, in order, in its
    /// own savepoint (one that cannot apply, e.g. its session is gone, is
    /// skipped and the rest stay). An error means none was stored; the
    /// batch may be given again (both kinds are idempotent).
    fn record_inbound(&self, batch: Vec<crate::ports::InboundMsg>) -> StoreFuture<()>;
    /// Delete messages older than `before`; how many went.
    fn prune_messages(&self, before: DateTime<Utc>) -> StoreFuture<u64>;
}
