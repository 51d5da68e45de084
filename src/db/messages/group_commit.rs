//! Accepted messages and outbound status moves are committed in groups. On
//! SQLite every write waits for a sync of the WAL (`db::wal_sync`) and takes
//! the one write lock; with one transaction per `send-text` and one per
//! "sent", the requests and the lanes of every session queue for that lock,
//! and each pays a `BEGIN`, a `COMMIT` and its wake-ups. One task takes every
//! job that is waiting (up to [`MAX_GROUP`]), writes them in one
//! transaction, each in its own savepoint so that a failure fails only its
//! own job, and answers each after the commit: a 201 still means the row is
//! durable, and a lane still hears "sent" only once it is stored. With no
//! queue it is one commit per job, as before.
//!
//! Status jobs lock their session's row (`lock_owned_session`); a group
//! takes those locks in session order, as the inbound batches do, so two
//! writers on PostgreSQL never wait for each other in a circle.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use wasup_actors::events::SessionEvent;
use wasup_actors::model::SessionId;
use wasup_actors::outbound::{Accepted, MessageRecord, StatusUpdate};

use diesel::Connection;

use super::{accept, lock_owned_session, set_status};
use crate::crypto::SecretBox;
use crate::db::{Db, DbConn, DbError};

/// Jobs written in one transaction at most.
const MAX_GROUP: usize = 256;

/// A write the group takes, with where its answer goes.
enum Job {
    Accept(Box<MessageRecord>, Reply<Accepted>),
    /// Move one outbound message on (`set_status`); the answer is the
    /// events the move wrote (none: it did not move).
    Status {
        session_id: SessionId,
        id: String,
        update: StatusUpdate,
        reply: Reply<Vec<SessionEvent>>,
    },
}

type Reply<T> = oneshot::Sender<Result<T, DbError>>;

impl Job {
    fn session_id(&self) -> SessionId {
        match self {
            Job::Accept(m, _) => m.session_id,
            Job::Status { session_id, .. } => *session_id,
        }
    }

    /// Write it inside the group's transaction; the answer waits for the commit.
    fn write(self, conn: &mut DbConn, db: &Db, boxed: &SecretBox) -> Answer {
        match self {
            // `accept` has its own savepoint around the insert.
            Job::Accept(m, reply) => Answer::Accept(Box::new(accept(conn, boxed, &m)), reply),
            Job::Status {
                session_id,
                id,
                update,
                reply,
            } => {
                let moved = conn.transaction(|c| {
                    if !lock_owned_session(c, db, session_id)? {
                        return Ok(Vec::new());
                    }
                    set_status(c, session_id, &id, &update)
                });
                Answer::Status(moved, reply)
            }
        }
    }
}

/// A written job's result and its reply, sent once the group committed.
enum Answer {
    Accept(Box<Result<Accepted, DbError>>, Reply<Accepted>),
    Status(Result<Vec<SessionEvent>, DbError>, Reply<Vec<SessionEvent>>),
}

impl Answer {
    /// Committed: each job hears its own result.
    fn committed(self) {
        match self {
            Answer::Accept(result, reply) => drop(reply.send(*result)),
            Answer::Status(result, reply) => drop(reply.send(result)),
        }
    }

    /// The commit failed: nothing of the group was written.
    fn not_committed(self, why: &str) {
        let err = || DbError::NotCommitted(why.to_string());
        match self {
            Answer::Accept(_, reply) => drop(reply.send(Err(err()))),
            Answer::Status(_, reply) => drop(reply.send(Err(err()))),
        }
    }
}

/// The handle the store keeps; the writer task ends when it is dropped.
pub(super) struct GroupCommit {
    queue: mpsc::UnboundedSender<Job>,
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
            .send(Job::Accept(Box::new(message), reply))
            .map_err(|_| DbError::Cancelled)?;
        answer.await.map_err(|_| DbError::Cancelled)?
    }

    /// The events the move wrote; none when it did not move.
    pub(super) async fn set_status(
        &self,
        session_id: SessionId,
        id: String,
        update: StatusUpdate,
    ) -> Result<Vec<SessionEvent>, DbError> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Job::Status {
                session_id,
                id,
                update,
                reply,
            })
            .map_err(|_| DbError::Cancelled)?;
        answer.await.map_err(|_| DbError::Cancelled)?
    }
}

async fn write_groups(db: Db, secrets: Arc<SecretBox>, mut waiting: mpsc::UnboundedReceiver<Job>) {
    let mut group = Vec::with_capacity(MAX_GROUP);
    // Waits for one, then takes whatever else is waiting.
    while waiting.recv_many(&mut group, MAX_GROUP).await > 0 {
        // Session order (stable: a session's jobs keep their order).
        group.sort_by_key(Job::session_id);
        let jobs = std::mem::take(&mut group);
        let count = jobs.len();
        let (boxed, fenced) = (secrets.clone(), db.clone());
        // The answers leave the transaction with its result, so that every
        // job hears one either way.
        let answers = Arc::new(parking_lot::Mutex::new(Vec::with_capacity(count)));
        let written = answers.clone();
        let result = db
            .transaction(move |c| {
                let mut written = written.lock();
                for job in jobs {
                    written.push(job.write(c, &fenced, &boxed));
                }
                Ok(())
            })
            .await;
        let answers = std::mem::take(&mut *answers.lock());
        match result {
            Ok(()) => answers.into_iter().for_each(Answer::committed),
            Err(err) => {
                log::warn!("messages: committing a group of {count} writes failed: {err}");
                let why = err.to_string();
                answers.into_iter().for_each(|a| a.not_committed(&why));
            }
        }
    }
}
