//! A daemon as a node of a cluster: several daemons on one PostgreSQL store
//! (`[store] url = "postgres://…"`, `[server] node_id`).
//!
//! On start the node joins (a new incarnation of its node id, heartbeats)
//! and runs for the leader lease; its executor records the node on the
//! requests it receives and runs, recovers only its own on start, and reads
//! the events other nodes append. The leader alone runs what must happen
//! once: the approval-expiry sweeper, retention, the frontends' pollers,
//! reconcilers and Socket Mode, and the dead-node sweep here: a node whose
//! heartbeats stopped for a lease TTL is fenced (its late writes are
//! refused), its requests in flight are marked `interrupted`, its op
//! locks are freed, and the leader renders its requests' feedback from then
//! on. The leader's work keeps its state between terms in the database
//! (`leader_state`), so the next leader goes on from it.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use youops_core::audit::{AuditStore, StoreError};
use youops_core::cluster::{Leadership, NodeId, Term};
use youops_core::config::StoreUrl;
use youops_core::executor::{LeaderState, SharedLocks};
use youops_core::RequestId;
use youops_core::{Executor, ExecutorBuilder};
use youops_store_postgres::coord::{Campaign, CoordOptions, Coordinator};
use youops_store_postgres::{PgOptions, PgStore};

use crate::http::state::{
    ClusterLeader, ClusterLock, ClusterNodeStatus, ClusterStatus, ClusterStatusSource,
};

/// How often a node reads the events other nodes appended, besides when
/// the store's listener wakes it: for a wake-up lost with the listener's
/// connection, and the last groups of a burst (a store notifies for at most
/// one group per 10 ms).
const FOLLOW_EVERY: Duration = Duration::from_millis(200);

/// One daemon's membership of its cluster.
#[derive(Debug)]
pub struct ClusterNode {
    coordinator: Coordinator,
    campaign: Campaign,
    lease_ttl: Duration,
    /// Woken when another node commits ([`PgStore::appended_elsewhere`]).
    appended_elsewhere: Arc<tokio::sync::Notify>,
}

impl ClusterNode {
    /// Open the PostgreSQL store at `url` and join its cluster as `node`,
    /// running for the leader lease of `lease_ttl`.
    pub async fn join(
        url: &StoreUrl,
        dedup_ttl: Duration,
        node: NodeId,
        lease_ttl: Duration,
    ) -> anyhow::Result<(Arc<PgStore>, ClusterNode)> {
        let mut opts = PgOptions::default();
        opts.dedup_ttl = dedup_ttl;
        let store = PgStore::open(url.expose(), opts)
            .await
            .with_context(|| format!("opening the PostgreSQL store {url}"))?;
        let coordinator = Coordinator::join(&store, node.clone(), CoordOptions::default())
            .await
            .with_context(|| format!("joining the cluster as node {node}"))?;
        // The margin covers the two clocks' rates and the time a demoted
        // leader takes to stop: a fifth of the TTL.
        let campaign = coordinator
            .campaign(lease_ttl, lease_ttl / 5)
            .context("running for the leader lease")?;
        tracing::info!(
            node = %node,
            incarnation = coordinator.incarnation(),
            "joined the cluster"
        );
        let appended_elsewhere = store.appended_elsewhere();
        Ok((
            Arc::new(store),
            ClusterNode {
                coordinator,
                campaign,
                lease_ttl,
                appended_elsewhere,
            },
        ))
    }

    /// This node's leadership of the work that happens once per cluster.
    pub fn leadership(&self) -> Leadership {
        self.campaign.leadership()
    }

    /// What the dashboard and the API show of the cluster, read from this
    /// node's coordinator.
    pub fn status_source(&self) -> Arc<dyn ClusterStatusSource> {
        Arc::new(StatusSource {
            coordinator: self.coordinator.clone(),
            leadership: self.leadership(),
        })
    }

    /// An executor builder made a node of this cluster.
    pub fn executor(&self, builder: ExecutorBuilder) -> ExecutorBuilder {
        let locks = LockLeases {
            coordinator: self.coordinator.clone(),
            ttl: self.lease_ttl,
        };
        builder
            .node(self.coordinator.node().clone())
            .leadership(self.leadership())
            .follow_store(FOLLOW_EVERY)
            .follow_wakeups(Arc::clone(&self.appended_elsewhere))
            .shared_locks(Arc::new(locks))
            .leader_state(Arc::new(SavedState(self.coordinator.clone())))
    }

    /// The leader's sweep of dead nodes, every heartbeat, until `stop`.
    pub fn spawn_dead_node_sweep(&self, exec: Executor, stop: CancellationToken) -> JoinHandle<()> {
        let (coord, ttl, leadership) =
            (self.coordinator.clone(), self.lease_ttl, self.leadership());
        tokio::spawn(async move {
            leadership
                .run_while_leader(&stop, |term, lost| {
                    let (coord, exec) = (coord.clone(), exec.clone());
                    async move {
                        tracing::info!(
                            node = %coord.node(),
                            epoch = term.epoch,
                            "this node leads the cluster"
                        );
                        loop {
                            if let Err(e) = sweep(&coord, &exec, term.epoch, ttl).await {
                                tracing::warn!(error = %e, "dead-node sweep");
                            }
                            tokio::select! {
                                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                                _ = lost.cancelled() => break,
                            }
                        }
                        // The next leader adopts the dead nodes' feedback.
                        exec.adopt_feedback(BTreeSet::new());
                    }
                })
                .await
        })
    }

    /// Leave the cluster: give the lease up at once (another node takes
    /// over without waiting for it to expire) and stop heartbeating.
    pub async fn leave(self) {
        if let Err(e) = self.campaign.resign().await {
            tracing::warn!(error = %e, "resigning the leader lease");
        }
        self.coordinator.shutdown();
    }
}

/// Op lock keys as lease rows in the database, held for the lease TTL and
/// renewed by the coordinator while the run goes on.
#[derive(Debug)]
struct LockLeases {
    coordinator: Coordinator,
    ttl: Duration,
}

#[async_trait::async_trait]
impl SharedLocks for LockLeases {
    async fn try_take(&self, key: &str, id: RequestId) -> Result<Option<String>, StoreError> {
        if self.coordinator.try_lock(key, id, self.ttl).await? {
            return Ok(None);
        }
        let holder = self
            .coordinator
            .locks()
            .await?
            .into_iter()
            .find(|l| l.key == key && !l.expired)
            .map(|l| format!("{} (node {})", l.request_id, l.holder))
            .unwrap_or_else(|| "of another node".into());
        Ok(Some(holder))
    }

    fn lost(&self, key: &str) -> Option<CancellationToken> {
        self.coordinator.lock_lost(key)
    }

    async fn release(&self, key: &str, id: RequestId) -> Result<(), StoreError> {
        self.coordinator.unlock(key, id).await.map(|_| ())
    }
}

/// Reads the cluster's status for the HTTP side.
struct StatusSource {
    coordinator: Coordinator,
    leadership: Leadership,
}

#[async_trait::async_trait]
impl ClusterStatusSource for StatusSource {
    async fn status(&self) -> anyhow::Result<ClusterStatus> {
        let c = &self.coordinator;
        let (leader, nodes, locks) = tokio::try_join!(c.leader(), c.nodes(), c.locks())
            .context("reading the cluster's status")?;
        Ok(ClusterStatus {
            node: c.node().to_string(),
            incarnation: c.incarnation(),
            leading: self.leadership.current().map(|t| t.epoch),
            leader: leader.map(|l| ClusterLeader {
                holder: l.holder.to_string(),
                holder_incarnation: l.holder_incarnation,
                epoch: l.epoch,
                expires_at: l.expires_at,
                expired: l.expired,
            }),
            nodes: nodes
                .into_iter()
                .map(|n| ClusterNodeStatus {
                    node: n.node.to_string(),
                    incarnation: n.incarnation,
                    started_at: n.started_at,
                    heartbeat_at: n.heartbeat_at,
                    fenced: n.fenced,
                })
                .collect(),
            locks: locks
                .into_iter()
                .map(|l| ClusterLock {
                    key: l.key,
                    request_id: l.request_id.to_string(),
                    holder: l.holder.to_string(),
                    holder_incarnation: l.holder_incarnation,
                    acquired_at: l.acquired_at,
                    expires_at: l.expires_at,
                    expired: l.expired,
                })
                .collect(),
            checked_at: chrono::Utc::now(),
        })
    }
}

/// The leader's state between terms, in the cluster's database.
#[derive(Debug)]
struct SavedState(Coordinator);

#[async_trait::async_trait]
impl LeaderState for SavedState {
    async fn load(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.0.load_state(name).await
    }

    async fn save(&self, name: &str, state: &[u8], term: Term) -> Result<(), StoreError> {
        self.0.save_state(term.epoch, name, state).await
    }
}

/// One sweep: fence each node dead for `ttl`, interrupt what it had in
/// flight, free its locks. Each fencing write checks `epoch`.
async fn sweep(
    coord: &Coordinator,
    exec: &Executor,
    epoch: u64,
    ttl: Duration,
) -> anyhow::Result<()> {
    for (node, incarnation) in coord.dead_nodes(ttl).await? {
        if !coord.fence_node(epoch, &node, incarnation).await? {
            continue;
        }
        // Adopted before the interruptions are written, so that they are
        // rendered here.
        exec.adopt_feedback(adoptable(coord).await?);
        let interrupted = exec.recover_node(&node).await?;
        let freed = coord.free_locks_of(epoch, &node, incarnation).await?;
        tracing::warn!(
            node = %node,
            incarnation,
            interrupted,
            locks_freed = freed,
            "a node stopped heartbeating: fenced, its requests in flight interrupted"
        );
    }
    exec.adopt_feedback(adoptable(coord).await?);
    Ok(())
}

/// Whose requests' feedback the leader renders besides its own: the nodes
/// whose latest incarnation is fenced (dead, not rejoined), and requests
/// received before the store was shared (no node).
async fn adoptable(coord: &Coordinator) -> anyhow::Result<BTreeSet<Option<NodeId>>> {
    let mut out: BTreeSet<Option<NodeId>> = coord
        .nodes()
        .await?
        .into_iter()
        .filter(|n| n.fenced.is_some_and(|f| f >= n.incarnation))
        .map(|n| Some(n.node))
        .collect();
    out.insert(None);
    Ok(out)
}

/// Open the store of `cfg`: with a PostgreSQL store, as node
/// `[server] node_id` of its cluster.
pub async fn open(
    cfg: &youops_core::config::Config,
    server: &crate::server_config::ServerConfig,
) -> anyhow::Result<(Arc<dyn AuditStore>, Option<ClusterNode>)> {
    let location = crate::store::location(cfg).map_err(anyhow::Error::msg)?;
    let crate::store::StoreLocation::Postgres(url) = location else {
        let store = crate::store::open(cfg)
            .await
            .context("opening the audit store")?;
        return Ok((store, None));
    };
    let node = server.node_id.clone().context(
        "server.node_id: a daemon on a shared PostgreSQL store is a node of a cluster and needs a stable node id",
    )?;
    let (store, cluster) =
        ClusterNode::join(&url, cfg.store.dedup_ttl.0, node, server.lease_ttl.0).await?;
    Ok((store, Some(cluster)))
}
