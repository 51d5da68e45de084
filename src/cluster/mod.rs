//! Cluster mode: several wasup nodes on one PostgreSQL, each session owned
//! by exactly one node (see the README's "Cluster" section).
//!
//! - `settings`: `WASUP_NODE_URL` (turns it on), `WASUP_NODE_ID`,
//!   `WASUP_NODE_CAPACITY`, `WASUP_LEASE_TTL_MS`.
//! - `lock`: one process per data dir (`<data dir>/wasup.lock`, both modes).
//! - `node`: the node's loop: heartbeat, lease renewal (one statement per
//!   tick), self-fencing, placement (claims), registry and key sync, drain.
//! - `forward`: commands for a session go one hop to its owner.
//!
//! The leases, claims and the fencing check are SQL in src/db/cluster.rs.

pub mod forward;
pub mod lock;
pub mod node;
pub mod settings;

pub use node::ClusterNode;
pub use settings::ClusterConfig;
