//! The node's loop in cluster mode.
//!
//! Every `renew_every` (a third of the lease TTL, ±10 % jitter):
//! 1. **Self-fencing.** When the last successful renewal was sent more than
//!    two thirds of the TTL ago, every engine of this node is aborted and its
//!    leases forgotten, before any other node may claim them (a lease lives
//!    a full TTL from the database's clock, which is later than the send).
//!    The same check also runs every quarter of a renewal period on its own,
//!    so a renewal that hangs until its timeout cannot delay it.
//! 2. **Heartbeat and renewal**: one statement each. A lease missing from
//!    the renewal's answer expired or was taken: its engine is aborted.
//! 3. **Releases**: a held lease whose session has no work here any more
//!    (stopped, failed, deleted) is given up.
//! 4. **Placement**: while not draining, claim running sessions no live
//!    lease holds, up to min(capacity, fair share) where fair share =
//!    ⌈running sessions / live nodes with room⌉; sessions left over after a
//!    tick (other nodes full) may be claimed up to capacity at the next. The
//!    claimed sessions start through the supervisor's restore queue
//!    (`WASUP_RESTORE_CONCURRENCY` at once, with jitter).
//!
//! Reads: every second the registry (what read routes answer from) is
//! refreshed from the database for the sessions this node does not run,
//! and the key ring with keys made on other nodes. Polling, not
//! LISTEN/NOTIFY: it needs no dedicated connection outside the pool, cannot
//! miss a notification across a reconnect, and a second of staleness is
//! fine for reads (commands go to the owner, which is always current).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::Addr;
use parking_lot::Mutex;
use rand::Rng;
use wasup_actors::keys::KeyRing;
use wasup_actors::model::{SessionId, SessionView};
use wasup_actors::registry::SessionRegistry;
use wasup_actors::supervisor::cluster::{ActiveSessions, Fence as FenceMsg, HandOver, StartOwned};
use wasup_actors::supervisor::SessionSupervisor;

use super::settings::ClusterConfig;
use crate::db::cluster::{self as sql, Fence, Lease};
use crate::db::{Db, DbError};

/// How often the registry and the key ring are refreshed from the database.
const SYNC_EVERY: Duration = Duration::from_secs(1);
/// Sessions handed over at once while draining.
const DRAIN_CONCURRENCY: usize = 8;

/// Counters for `/metrics` (per node, no per-session labels).
#[derive(Default)]
pub struct NodeCounters {
    pub renewals: AtomicU64,
    pub renewal_failures: AtomicU64,
    pub claims: AtomicU64,
    pub releases: AtomicU64,
    pub lost: AtomicU64,
    pub self_fenced: AtomicU64,
    /// Statements the lease loop sent (heartbeat, renewal, placement, claim,
    /// release): the lease traffic.
    pub statements: AtomicU64,
}

/// This node in the cluster. Cheap to clone.
#[derive(Clone)]
pub struct ClusterNode {
    inner: Arc<Inner>,
}

struct Inner {
    config: ClusterConfig,
    db: Db,
    fence: Arc<Fence>,
    supervisor: Addr<SessionSupervisor>,
    registry: Arc<SessionRegistry>,
    keys: Arc<KeyRing>,
    draining: AtomicBool,
    /// When each held lease was claimed (a renewal sent before it cannot
    /// have returned it).
    claimed_at: Mutex<HashMap<String, Instant>>,
    last_renewal: Mutex<Instant>,
    counters: NodeCounters,
}

impl ClusterNode {
    /// Register the node (not draining; leases a former process under this
    /// id left are released) and return it; `start` runs its loops.
    pub async fn register(
        config: ClusterConfig,
        db: Db,
        fence: Arc<Fence>,
        supervisor: Addr<SessionSupervisor>,
        registry: Arc<SessionRegistry>,
        keys: Arc<KeyRing>,
    ) -> Result<ClusterNode, DbError> {
        let (id, url, cap) = (
            config.node_id.clone(),
            config.node_url.clone(),
            i64::from(config.capacity),
        );
        db.run(move |c| sql::register_node(c, &id, &url, cap))
            .await?;
        log::info!(
            "cluster node '{}' registered ({}, capacity {}, lease TTL {:?})",
            config.node_id,
            config.node_url,
            config.capacity,
            config.lease_ttl
        );
        Ok(ClusterNode {
            inner: Arc::new(Inner {
                config,
                db,
                fence,
                supervisor,
                registry,
                keys,
                draining: AtomicBool::new(false),
                claimed_at: Mutex::new(HashMap::new()),
                last_renewal: Mutex::new(Instant::now()),
                counters: NodeCounters::default(),
            }),
        })
    }

    pub fn config(&self) -> &ClusterConfig {
        &self.inner.config
    }
    pub fn node_id(&self) -> &str {
        &self.inner.config.node_id
    }
    pub fn db(&self) -> &Db {
        &self.inner.db
    }
    pub fn counters(&self) -> &NodeCounters {
        &self.inner.counters
    }
    pub fn owned(&self) -> usize {
        self.inner.fence.count()
    }
    pub fn is_draining(&self) -> bool {
        self.inner.draining.load(Ordering::Relaxed)
    }
    fn ttl_ms(&self) -> i64 {
        self.inner.config.lease_ttl.as_millis() as i64
    }
    fn has_room(&self) -> bool {
        !self.is_draining() && (self.owned() as u64) < u64::from(self.inner.config.capacity)
    }

    /// This node's gauges and counters for `/metrics`; the one label is the
    /// node id (one value per process, never a session).
    pub fn encode_metrics(&self, enc: &mut wasup_actors::metrics::TextEncoder) {
        let node = [("node", self.node_id())];
        let c = &self.inner.counters;
        let gauges: [(&str, &str, u64); 3] = [
            (
                "wasup_cluster_sessions_owned",
                "Sessions whose lease this node holds.",
                self.owned() as u64,
            ),
            (
                "wasup_cluster_node_capacity",
                "Sessions this node may run (WASUP_NODE_CAPACITY).",
                u64::from(self.inner.config.capacity),
            ),
            (
                "wasup_cluster_draining",
                "1 while this node hands its sessions over.",
                u64::from(self.is_draining()),
            ),
        ];
        for (name, help, value) in gauges {
            enc.family(name, "gauge", help);
            enc.sample(name, &node, value);
        }
        let counters: [(&str, &str, &AtomicU64); 7] = [
            (
                "wasup_cluster_lease_renewals_total",
                "Successful heartbeat and lease renewal rounds.",
                &c.renewals,
            ),
            (
                "wasup_cluster_lease_renewal_failures_total",
                "Renewal rounds that failed or timed out.",
                &c.renewal_failures,
            ),
            (
                "wasup_cluster_lease_claims_total",
                "Session leases this node claimed.",
                &c.claims,
            ),
            (
                "wasup_cluster_lease_releases_total",
                "Session leases this node gave up.",
                &c.releases,
            ),
            (
                "wasup_cluster_leases_lost_total",
                "Leases that expired or were taken (their engines were stopped).",
                &c.lost,
            ),
            (
                "wasup_cluster_self_fenced_total",
                "Times this node stopped all its engines for want of a renewal.",
                &c.self_fenced,
            ),
            (
                "wasup_cluster_lease_statements_total",
                "Statements the lease loop sent to the database (its traffic).",
                &c.statements,
            ),
        ];
        for (name, help, value) in counters {
            enc.family(name, "counter", help);
            enc.sample(name, &node, value.load(Ordering::Relaxed));
        }
    }

    /// Run the lease loop and the sync loop (in the current actix system).
    pub fn start(&self) {
        let node = self.clone();
        actix_web::rt::spawn(async move { node.lease_loop().await });
        // The self-fencing check runs on its own short period, so a renewal
        // that hangs until its timeout cannot delay it.
        let node = self.clone();
        actix_web::rt::spawn(async move {
            let period = node.inner.config.renew_every() / 4;
            loop {
                tokio::time::sleep(period).await;
                node.self_fence_if_stale();
            }
        });
        let node = self.clone();
        actix_web::rt::spawn(async move {
            loop {
                node.sync().await;
                tokio::time::sleep(SYNC_EVERY).await;
            }
        });
    }

    async fn lease_loop(&self) {
        let every = self.inner.config.renew_every();
        let mut leftover_ticks = 0u32;
        loop {
            self.tick(&mut leftover_ticks).await;
            let jitter = rand::rng().random_range(0.9..1.1);
            tokio::time::sleep(every.mul_f64(jitter)).await;
        }
    }

    /// Stop every engine of this node when the last successful renewal was
    /// sent more than two thirds of the TTL ago.
    fn self_fence_if_stale(&self) {
        let inner = &self.inner;
        let since = inner.last_renewal.lock().elapsed();
        if since > inner.config.fence_after() && inner.fence.count() > 0 {
            let lost = inner.fence.clear();
            log::warn!(
                "cluster: no lease renewal for {since:?}: stopping all {} engines of this node (self-fencing)",
                lost.len()
            );
            inner.counters.self_fenced.fetch_add(1, Ordering::Relaxed);
            self.fence_local(lost.into_iter().map(|(s, _)| s).collect());
        }
    }

    async fn tick(&self, leftover_ticks: &mut u32) {
        let inner = &self.inner;
        // 1. Self-fencing, before anything else (also right after a pause).
        self.self_fence_if_stale();
        // 2. Heartbeat and renewal.
        let sent = Instant::now();
        let (id, ttl) = (inner.config.node_id.clone(), self.ttl_ms());
        let work = inner.db.run(move |c| {
            let draining = sql::heartbeat(c, &id)?;
            let leases = sql::renew(c, &id, ttl)?;
            Ok((draining, leases))
        });
        inner.counters.statements.fetch_add(2, Ordering::Relaxed);
        let (asked_to_drain, renewed) =
            match tokio::time::timeout(inner.config.renew_every(), work).await {
                Ok(Ok(v)) => v,
                Ok(Err(e)) => {
                    inner
                        .counters
                        .renewal_failures
                        .fetch_add(1, Ordering::Relaxed);
                    log::warn!("cluster: lease renewal failed: {e}");
                    return;
                }
                Err(_) => {
                    inner
                        .counters
                        .renewal_failures
                        .fetch_add(1, Ordering::Relaxed);
                    log::warn!("cluster: lease renewal timed out");
                    return;
                }
            };
        *inner.last_renewal.lock() = sent;
        inner.counters.renewals.fetch_add(1, Ordering::Relaxed);
        self.reconcile_renewed(renewed, sent).await;
        if asked_to_drain && !self.is_draining() {
            let node = self.clone();
            actix_web::rt::spawn(async move { node.drain().await });
        }
        // 3. Leases of sessions without work here.
        self.release_idle().await;
        // 4. Placement.
        if self.has_room() {
            self.place(leftover_ticks).await;
        }
    }

    /// Compare what the renewal returned with what this node holds.
    async fn reconcile_renewed(&self, renewed: Vec<Lease>, sent: Instant) {
        let inner = &self.inner;
        let returned: HashMap<String, i64> = renewed
            .into_iter()
            .map(|l| (l.session_id, l.generation))
            .collect();
        let claimed_at = inner.claimed_at.lock().clone();
        let mut lost = Vec::new();
        for (sid, generation) in inner.fence.held() {
            let before = claimed_at.get(&sid).is_none_or(|t| *t < sent);
            if before && returned.get(&sid) != Some(&generation) {
                inner.fence.drop_lease(&sid);
                lost.push(sid);
            }
        }
        if !lost.is_empty() {
            log::warn!(
                "cluster: {} leases expired or were taken: stopping their engines",
                lost.len()
            );
            inner
                .counters
                .lost
                .fetch_add(lost.len() as u64, Ordering::Relaxed);
            self.fence_local(lost);
        }
        // Returned but not held (a claim whose start was refused, a former
        // process's): give them up.
        for (sid, generation) in returned {
            if inner.fence.generation(&sid).is_none() {
                self.release(sid, generation).await;
            }
        }
    }

    fn fence_local(&self, sids: Vec<String>) {
        let mut claimed = self.inner.claimed_at.lock();
        for sid in &sids {
            claimed.remove(sid);
        }
        drop(claimed);
        let ids: Vec<SessionId> = sids.iter().filter_map(|s| s.parse().ok()).collect();
        self.inner.supervisor.do_send(FenceMsg(ids));
    }

    async fn release(&self, sid: String, generation: i64) {
        let (id, s) = (self.inner.config.node_id.clone(), sid.clone());
        self.inner
            .counters
            .statements
            .fetch_add(1, Ordering::Relaxed);
        match self
            .inner
            .db
            .run(move |c| sql::release(c, &id, &s, generation))
            .await
        {
            Ok(_) => {
                self.inner.counters.releases.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => log::warn!("cluster: releasing session {sid}: {e}"),
        }
        self.inner.fence.drop_lease(&sid);
        self.inner.claimed_at.lock().remove(&sid);
    }

    async fn active(&self) -> Option<HashSet<SessionId>> {
        self.inner.supervisor.send(ActiveSessions).await.ok()
    }

    async fn release_idle(&self) {
        let Some(active) = self.active().await else {
            return;
        };
        let grace = self.inner.config.renew_every();
        let claimed_at = self.inner.claimed_at.lock().clone();
        for (sid, generation) in self.inner.fence.held() {
            let fresh = claimed_at.get(&sid).is_some_and(|t| t.elapsed() < grace);
            let busy = sid.parse().is_ok_and(|id: SessionId| active.contains(&id));
            if !fresh && !busy {
                self.release(sid, generation).await;
            }
        }
    }

    async fn place(&self, leftover_ticks: &mut u32) {
        let inner = &self.inner;
        let ttl = self.ttl_ms();
        inner.counters.statements.fetch_add(1, Ordering::Relaxed);
        let Ok(p) = inner.db.run(move |c| sql::placement(c, ttl)).await else {
            return;
        };
        if p.unowned == 0 {
            *leftover_ticks = 0;
            return;
        }
        let own = inner.fence.count() as i64;
        let capacity = i64::from(inner.config.capacity);
        let fair = (p.running + p.nodes.max(1) - 1) / p.nodes.max(1);
        // Sessions nobody took at the last tick: other nodes are full.
        let limit = if *leftover_ticks >= 1 {
            capacity
        } else {
            capacity.min(fair)
        };
        *leftover_ticks += 1;
        let want = (limit - own).min(p.unowned);
        if want <= 0 {
            return;
        }
        self.claim(want).await;
    }

    async fn claim(&self, want: i64) {
        let inner = &self.inner;
        let (id, ttl) = (inner.config.node_id.clone(), self.ttl_ms());
        inner.counters.statements.fetch_add(1, Ordering::Relaxed);
        let claimed = match inner
            .db
            .run(move |c| sql::claim_unowned(c, &id, want, ttl))
            .await
        {
            Ok(c) => c,
            Err(e) => {
                log::warn!("cluster: claiming sessions failed: {e}");
                return;
            }
        };
        if claimed.is_empty() {
            return;
        }
        log::info!("cluster: claimed {} sessions", claimed.len());
        inner
            .counters
            .claims
            .fetch_add(claimed.len() as u64, Ordering::Relaxed);
        let ids: Vec<SessionId> = claimed
            .iter()
            .filter_map(|l| l.session_id.parse().ok())
            .collect();
        self.adopt(&claimed).await;
        inner.supervisor.do_send(StartOwned(ids));
    }

    /// Hold the claimed leases and load the sessions' current records into
    /// the registry (the actor that starts them begins from there).
    async fn adopt(&self, leases: &[Lease]) {
        let now = Instant::now();
        {
            let mut claimed = self.inner.claimed_at.lock();
            for l in leases {
                self.inner.fence.hold(&l.session_id, l.generation);
                claimed.insert(l.session_id.clone(), now);
            }
        }
        let ids: Vec<SessionId> = leases
            .iter()
            .filter_map(|l| l.session_id.parse().ok())
            .collect();
        let records = self
            .inner
            .db
            .run(move |c| {
                ids.iter()
                    .map(|id| crate::db::records::load_session(c, *id))
                    .filter(|r| !matches!(r, Err(e) if e.is_not_found()))
                    .collect::<Result<Vec<_>, _>>()
            })
            .await;
        match records {
            Ok(records) => {
                for record in records {
                    self.inner.registry.upsert(SessionView {
                        record,
                        next_retry_at: None,
                        restarts: 0,
                        engine_alive: false,
                        qr: None,
                    });
                }
            }
            Err(e) => log::warn!("cluster: loading claimed sessions: {e}"),
        }
    }

    /// A command for a session nobody owns that needs an engine (start,
    /// restart): claim it here when this node has room. Some(generation)
    /// when claimed.
    pub async fn claim_for_command(&self, id: SessionId) -> Result<Option<i64>, DbError> {
        if !self.has_room() {
            return Ok(None);
        }
        let (node, ttl, sid) = (self.node_id().to_string(), self.ttl_ms(), id.to_string());
        self.inner
            .counters
            .statements
            .fetch_add(1, Ordering::Relaxed);
        let got = self
            .inner
            .db
            .run(move |c| sql::claim_one(c, &node, &sid, ttl))
            .await?;
        if let Some(generation) = got {
            self.inner.counters.claims.fetch_add(1, Ordering::Relaxed);
            let lease = Lease {
                session_id: id.to_string(),
                generation,
            };
            self.adopt(&[lease]).await;
        }
        Ok(got)
    }

    /// A session this node's registry does not know yet (made on another
    /// node within the last sync period), read from the database by id or
    /// name and put into the registry.
    pub async fn load_unknown(&self, key: &str) -> Option<SessionView> {
        let key = key.to_string();
        let record = self
            .inner
            .db
            .run(move |c| {
                Ok(crate::db::records::load_sessions(c)?
                    .into_iter()
                    .find(|r| r.id.to_string() == key || r.name == key))
            })
            .await
            .ok()??;
        let view = SessionView {
            record,
            next_retry_at: None,
            restarts: 0,
            engine_alive: false,
            qr: None,
        };
        if self.inner.registry.get(view.record.id).is_none() {
            self.inner.registry.upsert(view.clone());
        }
        self.inner.registry.get(view.record.id)
    }

    /// Refresh the registry from the database for every session this node
    /// does not run, and the key ring.
    async fn sync(&self) {
        let inner = &self.inner;
        // What this node wrote after the snapshot below was read is newer
        // than the snapshot: a session created here a moment ago must not be
        // dropped from the registry (a 404 on the node that just answered
        // 201), nor a change made here reverted, until the next refresh.
        let snapshot_at = chrono::Utc::now() - chrono::Duration::seconds(1);
        let loaded = inner
            .db
            .run(|c| {
                Ok((
                    crate::db::records::load_sessions(c)?,
                    crate::db::records::load_api_keys(c)?,
                ))
            })
            .await;
        let (records, keys) = match loaded {
            Ok(v) => v,
            Err(e) => {
                log::warn!("cluster: refreshing sessions from the database: {e}");
                return;
            }
        };
        for key in keys {
            inner.keys.insert(key);
        }
        let Some(active) = self.active().await else {
            return;
        };
        let local = |id: &SessionId| {
            active.contains(id) || inner.fence.generation(&id.to_string()).is_some()
        };
        let mut seen = HashSet::with_capacity(records.len());
        for record in records {
            seen.insert(record.id);
            if local(&record.id) {
                continue;
            }
            let stale = inner.registry.get(record.id).is_none_or(|v| {
                (v.record != record && v.record.updated_at <= snapshot_at)
                    || v.engine_alive
                    || v.qr.is_some()
            });
            if stale {
                inner.registry.upsert(SessionView {
                    record,
                    next_retry_at: None,
                    restarts: 0,
                    engine_alive: false,
                    qr: None,
                });
            }
        }
        for view in inner.registry.all() {
            let fresh = view.record.created_at.max(view.record.updated_at) > snapshot_at;
            if !seen.contains(&view.record.id) && !local(&view.record.id) && !fresh {
                inner.registry.remove(view.record.id);
            }
        }
    }

    /// Hand every session over: stop claiming, then per session close its
    /// engine cleanly (desired state kept) and release its lease, a few at
    /// a time; other nodes claim them at their next tick.
    pub async fn drain(&self) {
        use futures::StreamExt;
        if self.inner.draining.swap(true, Ordering::SeqCst) {
            return;
        }
        let held = self.inner.fence.held();
        log::info!("cluster: draining {} sessions", held.len());
        futures::stream::iter(held)
            .for_each_concurrent(DRAIN_CONCURRENCY, |(sid, generation)| async move {
                if let Ok(id) = sid.parse() {
                    let _ = self.inner.supervisor.send(HandOver(id)).await;
                }
                self.release(sid, generation).await;
            })
            .await;
        log::info!("cluster: drained");
    }
}
