//! Cluster routes: `GET /api/cluster/nodes` (any role) and
//! `POST /api/cluster/nodes/{id}/drain` (admin). In single-node mode the
//! list has one node, this one, and draining is refused (there is no other
//! node to move sessions to).

use actix_web::{web, HttpResponse};
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::{IntoParams, ToSchema};
use wasup_actors::model::Role;
use wasup_actors::ErrorCode;

use super::auth::Auth;
use super::error::ApiError;
use super::time::iso;
use crate::cluster::forward::ClusterInfo;
use crate::db::cluster as sql;

type Info = web::Data<ClusterInfo>;

/// The nodes of the cluster.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterNodes {
    /// `cluster` (several nodes on one PostgreSQL) or `single`.
    #[schema(example = "cluster")]
    mode: &'static str,
    /// The node that answered.
    #[schema(example = "node-a")]
    node: String,
    nodes: Vec<NodeBody>,
}

/// One node.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeBody {
    #[schema(example = "node-a")]
    id: String,
    /// How other nodes reach it (null in single-node mode).
    #[schema(example = "http://10.0.0.1:2785")]
    url: Option<String>,
    /// Sessions it may run (null: no limit).
    capacity: Option<u64>,
    /// Moving its sessions away; it claims none.
    draining: bool,
    /// Its heartbeat is younger than the lease TTL.
    alive: bool,
    #[schema(format = DateTime)]
    started_at: Option<String>,
    #[schema(format = DateTime)]
    last_heartbeat: Option<String>,
    /// Sessions it owns (those the key may see).
    session_count: usize,
    /// Their ids.
    sessions: Vec<String>,
}

#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
pub struct NodePath {
    /// Node id
    id: String,
}

/// The answer to a drain.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DrainBody {
    node: String,
    draining: bool,
}

fn at(ms: i64) -> Option<String> {
    DateTime::<Utc>::from_timestamp_millis(ms).map(iso)
}

/// List the cluster's nodes
///
/// Any role. Each node with its capacity, last heartbeat and the sessions
/// it owns (only those the key may see).
#[utoipa::path(get, path = "/api/cluster/nodes", tag = "cluster", operation_id = "listClusterNodes",
    responses(
        (status = 200, description = "The nodes", body = ClusterNodes),
    )
)]
pub async fn nodes(info: Info, Auth(caller): Auth) -> Result<HttpResponse, ApiError> {
    let visible = |id: &str| id.parse().is_ok_and(|id| caller.may_see(&id));
    let Some(node) = &info.node else {
        let mut sessions: Vec<String> = info
            .registry
            .all()
            .into_iter()
            .filter(|v| v.engine_alive && caller.may_see(&v.record.id))
            .map(|v| v.record.id.to_string())
            .collect();
        sessions.sort();
        return Ok(HttpResponse::Ok().json(ClusterNodes {
            mode: "single",
            node: info.node_id.clone(),
            nodes: vec![NodeBody {
                id: info.node_id.clone(),
                url: None,
                capacity: None,
                draining: false,
                alive: true,
                started_at: None,
                last_heartbeat: Some(iso(Utc::now())),
                session_count: sessions.len(),
                sessions,
            }],
        }));
    };
    let ttl = node.config().lease_ttl.as_millis() as i64;
    let (rows, mut leases) = node
        .db()
        .run(move |c| Ok((sql::nodes(c, ttl)?, sql::live_leases(c)?)))
        .await
        .map_err(|_| {
            ApiError::new(
                ErrorCode::ServiceUnavailable,
                "The database is unavailable; try again later",
            )
        })?;
    let nodes = rows
        .into_iter()
        .map(|n| {
            let sessions: Vec<String> = leases
                .remove(&n.id)
                .unwrap_or_default()
                .into_iter()
                .filter(|s| visible(s))
                .collect();
            NodeBody {
                url: Some(n.url),
                capacity: (n.capacity < i64::from(u32::MAX)).then_some(n.capacity as u64),
                draining: n.draining,
                alive: n.alive,
                started_at: at(n.started_at),
                last_heartbeat: at(n.heartbeat_at),
                session_count: sessions.len(),
                sessions,
                id: n.id,
            }
        })
        .collect();
    Ok(HttpResponse::Ok().json(ClusterNodes {
        mode: "cluster",
        node: info.node_id.clone(),
        nodes,
    }))
}

/// Drain a node
///
/// Role: admin. The node stops claiming sessions and hands every session it
/// owns over (stops its engine cleanly, releases its lease; other nodes claim
/// it). It stays drained until it restarts. SIGTERM drains a node too.
#[utoipa::path(post, path = "/api/cluster/nodes/{id}/drain", tag = "cluster", operation_id = "drainClusterNode",
    params(NodePath),
    responses(
        (status = 202, description = "Draining", body = DrainBody),
    )
)]
pub async fn drain(
    info: Info,
    Auth(caller): Auth,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Role::Admin)?;
    if caller.scope.is_some() {
        return Err(ApiError::new(
            ErrorCode::ScopeForbidden,
            "Only a key without a session scope may drain a node",
        ));
    }
    let id = id.into_inner();
    let Some(node) = &info.node else {
        if id == info.node_id {
            return Err(ApiError::validation(
                "Cluster mode is off (WASUP_NODE_URL is unset): there is no other node to move sessions to",
            ));
        }
        return Err(ApiError::node_not_found(&id));
    };
    let target = id.clone();
    let found = node
        .db()
        .run(move |c| sql::set_draining(c, &target))
        .await
        .map_err(|_| {
            ApiError::new(
                ErrorCode::ServiceUnavailable,
                "The database is unavailable; try again later",
            )
        })?;
    if !found {
        return Err(ApiError::node_not_found(&id));
    }
    if id == node.node_id() {
        let node = node.clone();
        actix_web::rt::spawn(async move { node.drain().await });
    }
    Ok(HttpResponse::Accepted().json(DrainBody {
        node: id,
        draining: true,
    }))
}

impl ApiError {
    pub fn node_not_found(id: &str) -> ApiError {
        ApiError::new(
            ErrorCode::NodeNotFound,
            format!("No cluster node has the id '{id}'"),
        )
    }
}
