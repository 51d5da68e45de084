//! Cluster mode's tables (PostgreSQL only): the nodes and the session
//! leases, and the one fencing check every write of a session's owner makes.
//!
//! Design (why single conditional statements, not advisory locks): a lease
//! is a row, so it is visible to every node (who owns what, until when), it
//! survives a connection drop (an advisory lock dies with its connection,
//! and a pooled connection is not tied to the node's liveness), and its
//! `generation` is a fencing token that a write can compare in its own
//! transaction. Claims are one `INSERT … ON CONFLICT DO UPDATE … WHERE the
//! lease is free or expired`: PostgreSQL re-checks the WHERE on the newest
//! row version after a concurrent claim commits, so exactly one node wins.
//! Renewals are one `UPDATE … WHERE node_id = me AND not expired` per node
//! per tick. Every time is the database's clock (`now()`), so node clocks
//! never have to agree; the only node-side clock is the self-fencing timer
//! (src/cluster/node.rs), which is conservative (measured from before the
//! renewal was sent).
//!
//! Fencing: a session's owner holds (node id, generation) in [`Fence`];
//! [`Db::check_fence`] reads the lease row `FOR SHARE` inside the write's
//! transaction and refuses ([`DbError::Fenced`]) unless the row still names
//! this node with this generation (or, for a session nobody owns, unless this
//! node holds nothing for it either). `FOR SHARE` makes a concurrent claim
//! wait for the write to commit, so no write of an old owner lands after a
//! newer owner's claim.

use std::collections::HashMap;

use diesel::prelude::*;
use diesel::sql_types::{BigInt, Bool, Nullable, Text};
use parking_lot::RwLock;

use super::{Db, DbConn, DbError};

/// The database's clock in ms (one transaction's `now()`).
const NOW_MS: &str = "(EXTRACT(EPOCH FROM now()) * 1000)::BIGINT";

/// What this node owns: session id → generation of its lease.
#[derive(Debug)]
pub struct Fence {
    node_id: String,
    held: RwLock<HashMap<String, i64>>,
}

impl Fence {
    pub fn new(node_id: impl Into<String>) -> Fence {
        Fence {
            node_id: node_id.into(),
            held: RwLock::new(HashMap::new()),
        }
    }
    pub fn node_id(&self) -> &str {
        &self.node_id
    }
    pub fn hold(&self, session_id: &str, generation: i64) {
        self.held.write().insert(session_id.to_string(), generation);
    }
    /// Forget a lease (lost or released); returns its generation.
    pub fn drop_lease(&self, session_id: &str) -> Option<i64> {
        self.held.write().remove(session_id)
    }
    pub fn generation(&self, session_id: &str) -> Option<i64> {
        self.held.read().get(session_id).copied()
    }
    pub fn held(&self) -> Vec<(String, i64)> {
        self.held
            .read()
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    }
    pub fn count(&self) -> usize {
        self.held.read().len()
    }
    /// Forget every lease (self-fencing); returns what was held.
    pub fn clear(&self) -> Vec<(String, i64)> {
        self.held.write().drain().collect()
    }
}

fn pg(conn: &mut DbConn) -> Result<&mut PgConnection, DbError> {
    match conn {
        DbConn::Postgres(c) => Ok(c),
        DbConn::Sqlite(_) => Err(DbError::Invalid(
            "cluster mode needs PostgreSQL".to_string(),
        )),
    }
}

#[derive(QueryableByName)]
struct LeaseRow {
    #[diesel(sql_type = Nullable<Text>)]
    node_id: Option<String>,
    #[diesel(sql_type = BigInt)]
    generation: i64,
}

impl Db {
    /// The fencing check of a session-scoped write: call it inside the
    /// write's transaction, before the write. `DbError::Fenced` when another
    /// node owns the session (a newer generation than this node holds); a
    /// session nobody owns may be written by a node that holds nothing for
    /// it (a command on an idle session). A no-op outside cluster mode.
    pub fn check_fence(&self, conn: &mut DbConn, session_id: &str) -> Result<(), DbError> {
        match self.fence() {
            Some(fence) => check_fence(conn, fence, session_id, false),
            None => Ok(()),
        }
    }

    /// The stricter check of a write only a running session's owner makes
    /// (its state while it should run, its device credentials): this node
    /// must hold the session's lease at its current generation.
    pub fn check_owner(&self, conn: &mut DbConn, session_id: &str) -> Result<(), DbError> {
        match self.fence() {
            Some(fence) => check_fence(conn, fence, session_id, true),
            None => Ok(()),
        }
    }
}

/// [`Db::check_fence`] (`strict`: [`Db::check_owner`]) with an explicit fence.
pub fn check_fence(
    conn: &mut DbConn,
    fence: &Fence,
    session_id: &str,
    strict: bool,
) -> Result<(), DbError> {
    let held = fence.generation(session_id);
    let row: Option<LeaseRow> = diesel::sql_query(
        "SELECT node_id, generation FROM session_leases WHERE session_id = $1 FOR SHARE",
    )
    .bind::<Text, _>(session_id)
    .get_result(pg(conn)?)
    .optional()?;
    let allowed = match (&row, held) {
        (_, None) if strict => false,
        (None, None) => true,
        (Some(r), None) => r.node_id.is_none(),
        (Some(r), Some(g)) => r.node_id.as_deref() == Some(fence.node_id()) && r.generation == g,
        (None, Some(_)) => false,
    };
    if allowed {
        Ok(())
    } else {
        Err(DbError::Fenced(format!(
            "session {session_id}: node {} (generation {held:?}) no longer owns it",
            fence.node_id()
        )))
    }
}

/// A lease this node got.
#[derive(QueryableByName, Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    #[diesel(sql_type = Text)]
    pub session_id: String,
    #[diesel(sql_type = BigInt)]
    pub generation: i64,
}

/// A node's row, as listed.
#[derive(QueryableByName, Debug, Clone)]
pub struct NodeRow {
    #[diesel(sql_type = Text)]
    pub id: String,
    #[diesel(sql_type = Text)]
    pub url: String,
    #[diesel(sql_type = BigInt)]
    pub capacity: i64,
    #[diesel(sql_type = Bool)]
    pub draining: bool,
    #[diesel(sql_type = BigInt)]
    pub started_at: i64,
    #[diesel(sql_type = BigInt)]
    pub heartbeat_at: i64,
    /// Heartbeat within the lease TTL.
    #[diesel(sql_type = Bool)]
    pub alive: bool,
}

/// The numbers placement needs.
#[derive(QueryableByName, Debug, Clone, Copy)]
pub struct Placement {
    /// Sessions that should run (desired running, not failed).
    #[diesel(sql_type = BigInt)]
    pub running: i64,
    /// Of them, owned by no live lease.
    #[diesel(sql_type = BigInt)]
    pub unowned: i64,
    /// Live, not draining nodes with capacity.
    #[diesel(sql_type = BigInt)]
    pub nodes: i64,
}

/// Who owns a session now.
#[derive(QueryableByName, Debug, Clone)]
pub struct Owner {
    #[diesel(sql_type = Nullable<Text>)]
    pub node_id: Option<String>,
    #[diesel(sql_type = BigInt)]
    pub generation: i64,
    #[diesel(sql_type = Bool)]
    pub live: bool,
    #[diesel(sql_type = Nullable<Text>)]
    pub url: Option<String>,
}

/// At boot: register (or re-register) this node, not draining, and release
/// every lease a former process under this node id left (it runs nothing).
pub fn register_node(
    conn: &mut DbConn,
    node_id: &str,
    url: &str,
    capacity: i64,
) -> Result<(), DbError> {
    let c = pg(conn)?;
    diesel::sql_query(format!(
        "INSERT INTO cluster_nodes (id, url, capacity, draining, started_at, heartbeat_at) \
         VALUES ($1, $2, $3, FALSE, {NOW_MS}, {NOW_MS}) \
         ON CONFLICT (id) DO UPDATE SET url = EXCLUDED.url, capacity = EXCLUDED.capacity, \
         draining = FALSE, started_at = EXCLUDED.started_at, heartbeat_at = EXCLUDED.heartbeat_at"
    ))
    .bind::<Text, _>(node_id)
    .bind::<Text, _>(url)
    .bind::<BigInt, _>(capacity)
    .execute(c)?;
    diesel::sql_query("UPDATE session_leases SET node_id = NULL WHERE node_id = $1")
        .bind::<Text, _>(node_id)
        .execute(c)?;
    Ok(())
}

#[derive(QueryableByName)]
struct Draining {
    #[diesel(sql_type = Bool)]
    draining: bool,
}

/// The heartbeat; answers whether this node was asked to drain.
pub fn heartbeat(conn: &mut DbConn, node_id: &str) -> Result<bool, DbError> {
    let row: Option<Draining> = diesel::sql_query(format!(
        "UPDATE cluster_nodes SET heartbeat_at = {NOW_MS} WHERE id = $1 RETURNING draining"
    ))
    .bind::<Text, _>(node_id)
    .get_result(pg(conn)?)
    .optional()?;
    Ok(row.is_some_and(|r| r.draining))
}

/// Renew every live lease of this node in one statement; answers the leases
/// still held (a lease missing from the answer expired or was taken).
pub fn renew(conn: &mut DbConn, node_id: &str, ttl_ms: i64) -> Result<Vec<Lease>, DbError> {
    Ok(diesel::sql_query(format!(
        "UPDATE session_leases SET expires_at = {NOW_MS} + $2 \
         WHERE node_id = $1 AND expires_at > {NOW_MS} RETURNING session_id, generation"
    ))
    .bind::<Text, _>(node_id)
    .bind::<BigInt, _>(ttl_ms)
    .load(pg(conn)?)?)
}

const FREE_LEASE: &str = "session_leases.node_id IS NULL OR session_leases.expires_at <= ";

/// Claim up to `limit` running sessions that no live lease holds, at random
/// (so nodes claiming at once rarely collide), in one statement. The rows
/// are written in id order: two nodes whose random picks overlap then take
/// their row locks in the same order and one waits for the other, where in
/// random order each could hold a row the other needs (PostgreSQL's
/// "deadlock detected", seen in `two_nodes_claiming_at_once_…`).
pub fn claim_unowned(
    conn: &mut DbConn,
    node_id: &str,
    limit: i64,
    ttl_ms: i64,
) -> Result<Vec<Lease>, DbError> {
    Ok(diesel::sql_query(format!(
        "WITH candidates AS ( \
           SELECT s.id FROM sessions s LEFT JOIN session_leases l ON l.session_id = s.id \
           WHERE s.desired = 'running' AND s.status <> 'failed' \
             AND (l.session_id IS NULL OR l.node_id IS NULL OR l.expires_at <= {NOW_MS}) \
           ORDER BY random() LIMIT $2) \
         INSERT INTO session_leases (session_id, node_id, generation, expires_at) \
         SELECT id, $1, 1, {NOW_MS} + $3 FROM candidates ORDER BY id \
         ON CONFLICT (session_id) DO UPDATE SET node_id = EXCLUDED.node_id, \
           generation = session_leases.generation + 1, expires_at = EXCLUDED.expires_at \
         WHERE {FREE_LEASE}{NOW_MS} \
         RETURNING session_id, generation"
    ))
    .bind::<Text, _>(node_id)
    .bind::<BigInt, _>(limit)
    .bind::<BigInt, _>(ttl_ms)
    .load(pg(conn)?)?)
}

/// Claim one session (a start command on a session nobody owns). None when
/// a live lease of another node holds it (or the session is gone).
pub fn claim_one(
    conn: &mut DbConn,
    node_id: &str,
    session_id: &str,
    ttl_ms: i64,
) -> Result<Option<i64>, DbError> {
    let row: Option<Lease> = diesel::sql_query(format!(
        "INSERT INTO session_leases (session_id, node_id, generation, expires_at) \
         SELECT id, $1, 1, {NOW_MS} + $3 FROM sessions WHERE id = $2 \
         ON CONFLICT (session_id) DO UPDATE SET node_id = EXCLUDED.node_id, \
           generation = session_leases.generation + 1, expires_at = EXCLUDED.expires_at \
         WHERE {FREE_LEASE}{NOW_MS} \
         RETURNING session_id, generation"
    ))
    .bind::<Text, _>(node_id)
    .bind::<Text, _>(session_id)
    .bind::<BigInt, _>(ttl_ms)
    .get_result(pg(conn)?)
    .optional()?;
    Ok(row.map(|l| l.generation))
}

/// Give a lease up (its engine is stopped); only this node's, at this
/// generation. The generation stays, so the next claim is newer.
pub fn release(
    conn: &mut DbConn,
    node_id: &str,
    session_id: &str,
    generation: i64,
) -> Result<bool, DbError> {
    let n = diesel::sql_query(
        "UPDATE session_leases SET node_id = NULL \
         WHERE session_id = $1 AND node_id = $2 AND generation = $3",
    )
    .bind::<Text, _>(session_id)
    .bind::<Text, _>(node_id)
    .bind::<BigInt, _>(generation)
    .execute(pg(conn)?)?;
    Ok(n == 1)
}

/// The numbers placement decides on; a node is alive while its heartbeat
/// is younger than `ttl_ms`.
pub fn placement(conn: &mut DbConn, ttl_ms: i64) -> Result<Placement, DbError> {
    Ok(diesel::sql_query(format!(
        "SELECT \
           (SELECT COUNT(*) FROM sessions WHERE desired = 'running' AND status <> 'failed') AS running, \
           (SELECT COUNT(*) FROM sessions s LEFT JOIN session_leases l ON l.session_id = s.id \
             WHERE s.desired = 'running' AND s.status <> 'failed' \
             AND (l.session_id IS NULL OR l.node_id IS NULL OR l.expires_at <= {NOW_MS})) AS unowned, \
           (SELECT COUNT(*) FROM cluster_nodes WHERE heartbeat_at > {NOW_MS} - $1 \
             AND NOT draining AND capacity > 0) AS nodes"
    ))
    .bind::<BigInt, _>(ttl_ms)
    .get_result(pg(conn)?)?)
}

/// Who owns `session_id` (None: no lease row).
pub fn owner(conn: &mut DbConn, session_id: &str) -> Result<Option<Owner>, DbError> {
    Ok(diesel::sql_query(format!(
        "SELECT l.node_id, l.generation, (l.node_id IS NOT NULL AND l.expires_at > {NOW_MS}) AS live, n.url \
         FROM session_leases l LEFT JOIN cluster_nodes n ON n.id = l.node_id \
         WHERE l.session_id = $1"
    ))
    .bind::<Text, _>(session_id)
    .get_result(pg(conn)?)
    .optional()?)
}

/// Every node, oldest first.
pub fn nodes(conn: &mut DbConn, ttl_ms: i64) -> Result<Vec<NodeRow>, DbError> {
    Ok(diesel::sql_query(format!(
        "SELECT id, url, capacity, draining, started_at, heartbeat_at, \
           heartbeat_at > {NOW_MS} - $1 AS alive \
         FROM cluster_nodes ORDER BY started_at, id"
    ))
    .bind::<BigInt, _>(ttl_ms)
    .load(pg(conn)?)?)
}

#[derive(QueryableByName)]
struct Held {
    #[diesel(sql_type = Text)]
    node_id: String,
    #[diesel(sql_type = Text)]
    session_id: String,
}

/// The live leases: node id → its session ids.
pub fn live_leases(conn: &mut DbConn) -> Result<HashMap<String, Vec<String>>, DbError> {
    let rows: Vec<Held> = diesel::sql_query(format!(
        "SELECT node_id, session_id FROM session_leases \
         WHERE node_id IS NOT NULL AND expires_at > {NOW_MS} ORDER BY session_id"
    ))
    .load(pg(conn)?)?;
    let mut map: HashMap<String, Vec<String>> = HashMap::new();
    for r in rows {
        map.entry(r.node_id).or_default().push(r.session_id);
    }
    Ok(map)
}

/// Ask a node to drain (any node may write it; the node reads it at its
/// next heartbeat). False when there is no such node.
pub fn set_draining(conn: &mut DbConn, node_id: &str) -> Result<bool, DbError> {
    let n = diesel::sql_query("UPDATE cluster_nodes SET draining = TRUE WHERE id = $1")
        .bind::<Text, _>(node_id)
        .execute(pg(conn)?)?;
    Ok(n == 1)
}

/// How long a node holds a webhook delivery it claimed before another node
/// may try it (longer than a delivery's 10 s timeout). The attempt's outcome
/// overwrites it (delivered, dead, or the next retry time).
pub const WEBHOOK_CLAIM_MS: i64 = 30_000;

/// Cluster mode's `due_heads`: the due head of each webhook's queue, each
/// claimed by exactly one node. The heads are locked `FOR UPDATE SKIP
/// LOCKED` (a head another node is claiming is skipped, not waited for) and
/// their `next_attempt_at` pushed `WEBHOOK_CLAIM_MS` ahead, in one statement:
/// no other node finds them due until the claim lapses (a node that died
/// mid-delivery), and since only a webhook's head is ever claimed, the next
/// event of a webhook waits for the head's outcome: per-webhook order holds.
pub(crate) fn claim_due_heads(
    conn: &mut DbConn,
    now: i64,
    limit: i64,
) -> Result<Vec<super::webhooks::DueRow>, DbError> {
    Ok(diesel::sql_query(format!(
        "WITH heads AS ({heads}),          claimed AS (SELECT d.id FROM webhook_deliveries d            WHERE d.id IN (SELECT id FROM heads) FOR UPDATE SKIP LOCKED)          UPDATE webhook_deliveries w SET next_attempt_at = $1 + {WEBHOOK_CLAIM_MS}          FROM claimed WHERE w.id = claimed.id AND w.status = 'pending' AND w.next_attempt_at <= $1          RETURNING w.id AS id, w.webhook_id AS webhook_id, w.event_id AS event_id, w.event_name AS event_name, w.attempts AS attempts",
        heads = super::webhooks::DUE_HEADS
    ))
    .bind::<BigInt, _>(now)
    .bind::<BigInt, _>(limit)
    .load(pg(conn)?)?)
}

#[cfg(test)]
mod tests;
