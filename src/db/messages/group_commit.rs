//! Accepted messages are committed in groups. On SQLite every write waits
//! for a sync of the WAL (`db::wal_sync`) and takes the one write lock, and
//! with one commit per `send-text` the requests queue for that lock. One task takes every accept that is waiting (up to
//! [`MAX_GROUP`]), writes them in one transaction, each in its own savepoint
//! so that a failure fails only its own request, and answers each after the
//! commit: a 201 still means the row is durable. With no queue it is one
//! commit per request, as before.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use wasup_actors::outbound::{Accepted, MessageRecord};

use super::accept;
use crate::crypto::SecretBox;
use crate::db::{Db, DbError};

/// Accepts written in one transaction at most.
const MAX_GROUP: usize = 256;

type Reply = oneshot::Sender<Result<Accepted, DbError>>;

/// The handle the store keeps; the writer task ends when it is dropped.
pub(super) struct GroupCommit {
    queue: mpsc::UnboundedSender<(MessageRecord, Reply)>,
}

impl GroupCommit {
    /// Starts the writer task on the current tokio runtime.
    pub(super) fn start(db: Db, secrets: Arc<SecretBox>) -> GroupCommit {
        let (queue, waiting) = mpsc::unbounded_channel();
        tokio::spawn(write_groups(db, secrets, waiting));
        GroupCommit { queue }
    }

    pub(super) async fn accept(&self, message: MessageRecord) -> Result<Accepted, DbError> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send((message, reply))
            .map_err(|_| DbError::Cancelled)?;
        answer.await.map_err(|_| DbError::Cancelled)?
    }
}

async fn write_groups(
    db: Db,
    secrets: Arc<SecretBox>,
    mut waiting: mpsc::UnboundedReceiver<(MessageRecord, Reply)>,
) {
    let mut group = Vec::with_capacity(MAX_GROUP);
    // Waits for one, then takes whatever else is waiting.
    while waiting.recv_many(&mut group, MAX_GROUP).await > 0 {
        let (messages, replies): (Vec<_>, Vec<_>) = group.drain(..).unzip();
        let boxed = secrets.clone();
        let written = db
            .transaction(move |c| {
                Ok(messages
                    .iter()
                    .map(|m| accept(c, &boxed, m))
                    .collect::<Vec<_>>())
            })
            .await;
        match written {
            Ok(results) => {
                for (result, reply) in results.into_iter().zip(replies) {
                    let _ = reply.send(result);
                }
            }
            // The commit failed: nothing of the group was written.
            Err(err) => {
                log::warn!(
                    "messages: committing {} accepted messages failed: {err}",
                    replies.len()
                );
                for reply in replies {
                    let _ = reply.send(Err(DbError::NotCommitted(err.to_string())));
                }
            }
        }
    }
}
