//! Cluster coordination in the store's database: who is alive, who leads,
//! who holds which op lock.
//!
//! Several daemons sharing one [`PgStore`] each [`join`](Coordinator::join)
//! as a node: that registers the node in `nodes` and takes a new
//! *incarnation* (one more than the node id's last), binds the store to it
//! ([`PgStore::bind_node`]) and heartbeats every
//! [`heartbeat_every`](CoordOptions::heartbeat_every), by the database
//! clock.
//!
//! - **Leadership** ([`Coordinator::campaign`]): the `leader` row of
//!   `leases` is held for a TTL by the database clock and renewed every
//!   third of it; each new holder takes the next *epoch*. A leader that
//!   cannot renew demotes itself on its own monotonic deadline (the TTL less
//!   a margin, counted from when it sent its last successful renewal), even
//!   if the database never answers; the database lets another node take the
//!   lease only once `expires_at` passed, at least a TTL after that renewal
//!   was sent, so the old leader stopped first.
//! - **Fencing by epoch** ([`Coordinator::fenced_write`]): every leader write
//!   checks, in its own transaction, that its epoch still holds the lease
//!   (`FOR SHARE`: a takeover waits for the write, or the write sees it).
//! - **Fencing of nodes** ([`Coordinator::fence_node`]): the leader declares
//!   a dead node's incarnation ([`Coordinator::dead_nodes`]) fenced; from
//!   then on every group commit of that incarnation is refused in its own
//!   transaction (the error starts `fenced:`, see [`is_fenced`]), until the
//!   node joins again under a new incarnation.
//! - **Op locks** ([`Coordinator::try_lock`]): a lock key is a row of
//!   `locks` held by one request of one node incarnation until `expires_at`
//!   (database clock); a background task renews this node's locks, and a
//!   lock that could not be renewed before its own monotonic deadline is
//!   reported lost ([`Coordinator::lock_lost`], [`LockRenewal::lost`]) while
//!   the database still holds it for this node, so its run can stop before
//!   another node can take the key.
//! - **The leader's state** ([`Coordinator::save_state`],
//!   [`Coordinator::load_state`]): what the leader's work keeps between
//!   terms, saved under the leader's epoch.
//!
//! ```no_run
//! use std::time::Duration;
//! use tokio_util::sync::CancellationToken;
//! use youops_core::cluster::NodeId;
//! use youops_store_postgres::coord::{CoordOptions, Coordinator};
//! use youops_store_postgres::{PgOptions, PgStore};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let store = PgStore::open("postgres://youops@db.example/audit", PgOptions::default()).await?;
//! let coord = Coordinator::join(&store, NodeId::new("node-1")?, CoordOptions::default()).await?;
//! let campaign = coord.campaign(Duration::from_secs(10), Duration::from_secs(2))?;
//! let shutdown = CancellationToken::new();
//! campaign
//!     .leadership()
//!     .run_while_leader(&shutdown, |term, lost| {
//!         let coord = coord.clone();
//!         async move {
//!             // Leader-only work: declare dead nodes' incarnations fenced,
//!             // free their locks; every write fenced by the term's epoch.
//!             for (node, inc) in coord.dead_nodes(Duration::from_secs(30)).await.unwrap_or_default() {
//!                 if coord.fence_node(term.epoch, &node, inc).await.is_ok() {
//!                     let _ = coord.free_locks_of(term.epoch, &node, inc).await;
//!                 }
//!             }
//!             lost.cancelled().await;
//!         }
//!     })
//!     .await;
//! # Ok(()) }
//! ```
//!
//! Every query runs on the coordinator's own connections (never the
//! store's writer), each bounded by
//! [`query_timeout`](CoordOptions::query_timeout); a connection that timed
//! out is dropped. Errors never contain the URL's password.

mod lane;
mod leader;
mod locks;
mod state;

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::Notify;
use tokio_util::sync::{CancellationToken, DropGuard};
use youops_core::audit::StoreError;
use youops_core::cluster::NodeId;

use crate::codec::col;
use crate::PgStore;

use lane::Lane;
use locks::Held;

pub use leader::{Campaign, LeaderRow};
pub use locks::{LockRenewal, LockRow, LostLock, LostReason};

/// How a [`Coordinator`] runs.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct CoordOptions {
    /// How often the node heartbeats (1 s).
    pub heartbeat_every: Duration,
    /// The longest any one coordination query may take, connecting
    /// included (5 s); its connection is dropped after.
    pub query_timeout: Duration,
    /// How much earlier than a lock's TTL this node gives the lock up when
    /// it cannot renew it (1 s): covers the difference between this host's
    /// clock rate and the database's. Lock TTLs must be longer.
    pub lock_margin: Duration,
}

impl Default for CoordOptions {
    fn default() -> Self {
        CoordOptions {
            heartbeat_every: Duration::from_secs(1),
            query_timeout: Duration::from_secs(5),
            lock_margin: Duration::from_secs(1),
        }
    }
}

/// A row of `nodes` (for dashboards).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct NodeRow {
    /// The node.
    pub node: NodeId,
    /// Its latest incarnation.
    pub incarnation: u64,
    /// When that incarnation joined (database clock).
    pub started_at: DateTime<Utc>,
    /// Its last heartbeat (database clock).
    pub heartbeat_at: DateTime<Utc>,
    /// The highest incarnation the leader declared dead, if any.
    pub fenced: Option<u64>,
}

/// This node's membership of the cluster (see the [module docs](self)).
/// Clones share it; its heartbeat, lock renewals and campaigns stop at
/// [`shutdown`](Self::shutdown) or when the last clone is dropped.
#[derive(Clone)]
pub struct Coordinator {
    inner: Arc<Handle>,
}

struct Handle {
    shared: Arc<Shared>,
    _stop: DropGuard,
}

/// What the coordinator's tasks share.
pub(crate) struct Shared {
    node: NodeId,
    incarnation: u64,
    lane: Lane,
    opts: CoordOptions,
    /// Cancelled at shutdown: every task stops.
    stop: CancellationToken,
    /// Cancelled once a heartbeat finds this incarnation fenced or superseded.
    fenced: CancellationToken,
    /// The op locks this node holds, by key.
    locks: Mutex<HashMap<String, Held>>,
    /// A lock was taken: the renewing task recomputes its schedule.
    locks_changed: Notify,
}

impl fmt::Debug for Coordinator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.inner.shared;
        f.debug_struct("Coordinator")
            .field("node", &s.node)
            .field("incarnation", &s.incarnation)
            .field("fenced", &s.fenced.is_cancelled())
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("node", &self.node)
            .field("incarnation", &self.incarnation)
            .finish_non_exhaustive()
    }
}

/// Whether `e` is a refusal by fencing: a fenced or superseded incarnation's
/// write, or a leader write under an epoch that no longer holds the lease.
/// Such errors are [`StoreError::Io`] whose text starts `fenced:`.
pub fn is_fenced(e: &StoreError) -> bool {
    matches!(e, StoreError::Io(m) if m.starts_with("fenced:"))
}

/// Why incarnation `incarnation` of `node` may not write, given its `nodes`
/// row (`(incarnation, fenced)`, `None` if missing); `None` if it may.
pub(crate) fn refusal(
    node: &NodeId,
    incarnation: u64,
    row: Option<(i64, Option<i64>)>,
) -> Option<StoreError> {
    let Some((current, fenced)) = row else {
        return Some(StoreError::Io(format!(
            "fenced: node {node} is not registered in the cluster (no row in `nodes`): it must \
             join again before it writes"
        )));
    };
    let mine = i64::try_from(incarnation).ok();
    if mine != Some(current) {
        return Some(StoreError::Io(format!(
            "fenced: node {node} incarnation {incarnation} is superseded: the node id joined \
             again as incarnation {current}"
        )));
    }
    if fenced.is_some_and(|f| f >= current) {
        return Some(StoreError::Io(format!(
            "fenced: node {node} incarnation {incarnation} was declared dead by the cluster \
             leader; its writes are refused until the node joins again"
        )));
    }
    None
}

/// An incarnation or epoch read from the database (never negative).
fn counter(v: i64, what: &str) -> Result<u64, StoreError> {
    u64::try_from(v).map_err(|_| StoreError::Corrupt(format!("{what}: negative value {v}")))
}

/// A node id read from column `what`.
fn node_id(id: String, what: &str) -> Result<NodeId, StoreError> {
    NodeId::new(id).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

/// An incarnation or epoch as `bigint`.
fn counter_sql(v: u64, what: &str) -> Result<i64, StoreError> {
    i64::try_from(v).map_err(|_| StoreError::Io(format!("{what} {v} does not fit a bigint")))
}

/// Sleep until `deadline`, or for ever.
async fn until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// A duration as seconds (for `make_interval(secs => …)`).
fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

impl Coordinator {
    /// Join the cluster as `node`, on `store`'s database (the store's URL,
    /// on connections of the coordinator's own): register the node and take
    /// a new incarnation atomically (`INSERT … ON CONFLICT (id) DO UPDATE SET
    /// incarnation = nodes.incarnation + 1 … RETURNING incarnation`), bind
    /// the store to it ([`PgStore::bind_node`]) and start the heartbeat and
    /// the renewal of this node's op locks.
    ///
    /// An earlier incarnation of the same node id still running is
    /// superseded: its store's writes are refused from now on.
    pub async fn join(
        store: &PgStore,
        node: NodeId,
        opts: CoordOptions,
    ) -> Result<Coordinator, StoreError> {
        if opts.heartbeat_every.is_zero() || opts.query_timeout.is_zero() {
            return Err(StoreError::Io(
                "cluster coordination: heartbeat_every and query_timeout must not be zero".into(),
            ));
        }
        let lane = Lane::new(Arc::clone(&store.inner.connector), opts.query_timeout);
        let redact = lane.redact().clone();
        let what = format!("joining the cluster as node {node}");
        let incarnation = lane
            .run(&what, async |c| {
                let row = c
                    .query_one(
                        "INSERT INTO nodes (id, incarnation, started_at, heartbeat_at, fenced)
                         VALUES ($1, 1, clock_timestamp(), clock_timestamp(), NULL)
                         ON CONFLICT (id) DO UPDATE SET
                             incarnation = nodes.incarnation + 1,
                             started_at = EXCLUDED.started_at,
                             heartbeat_at = EXCLUDED.heartbeat_at
                         RETURNING incarnation",
                        &[&node.as_str()],
                    )
                    .await
                    .map_err(|e| redact.io(&what, &e))?;
                counter(col(&row, 0, "nodes.incarnation")?, "nodes.incarnation")
            })
            .await?;
        store.bind_node(node.clone(), incarnation);
        tracing::info!(%node, incarnation, "joined the cluster");
        let stop = CancellationToken::new();
        let shared = Arc::new(Shared {
            node,
            incarnation,
            lane,
            opts,
            stop: stop.clone(),
            fenced: CancellationToken::new(),
            locks: Mutex::new(HashMap::new()),
            locks_changed: Notify::new(),
        });
        tokio::spawn(heartbeat(Arc::clone(&shared)));
        tokio::spawn(locks::keeper(Arc::clone(&shared)));
        Ok(Coordinator {
            inner: Arc::new(Handle {
                shared,
                _stop: stop.drop_guard(),
            }),
        })
    }

    /// This node.
    pub fn node(&self) -> &NodeId {
        &self.inner.shared.node
    }

    /// This node's incarnation, taken by [`join`](Self::join).
    pub fn incarnation(&self) -> u64 {
        self.inner.shared.incarnation
    }

    /// Cancelled once a heartbeat finds this incarnation fenced by the
    /// leader or superseded by a newer one (the heartbeat stops then): the
    /// node should stop and join again.
    pub fn fenced(&self) -> CancellationToken {
        self.inner.shared.fenced.clone()
    }

    /// Stop the heartbeat, the lock renewals and every campaign of this
    /// coordinator (a leader stops leading at once; the lease is left to
    /// expire, see [`Campaign::resign`] to hand it over sooner).
    pub fn shutdown(&self) {
        self.inner.shared.stop.cancel();
    }

    /// The nodes whose last heartbeat is older than `ttl` by the database
    /// clock and whose latest incarnation is not fenced yet:
    /// `(node, incarnation)`, by node id.
    pub async fn dead_nodes(&self, ttl: Duration) -> Result<Vec<(NodeId, u64)>, StoreError> {
        let s = &self.inner.shared;
        let what = "looking for dead nodes";
        let rows = s
            .lane
            .query(
                what,
                "SELECT id, incarnation FROM nodes
                     WHERE heartbeat_at < clock_timestamp() - make_interval(secs => $1)
                       AND (fenced IS NULL OR fenced < incarnation)
                     ORDER BY id",
                &[&secs(ttl)],
            )
            .await?;
        rows.iter()
            .map(|row| {
                let id: String = col(row, 0, "nodes.id")?;
                let node = node_id(id, "nodes.id")?;
                let inc = counter(col(row, 1, "nodes.incarnation")?, "nodes.incarnation")?;
                Ok((node, inc))
            })
            .collect()
    }

    /// Every row of `nodes`, by node id.
    pub async fn nodes(&self) -> Result<Vec<NodeRow>, StoreError> {
        let s = &self.inner.shared;
        let what = "reading the cluster's nodes";
        let rows = s
            .lane
            .query(
                what,
                "SELECT id, incarnation, started_at, heartbeat_at, fenced FROM nodes
                     ORDER BY id",
                &[],
            )
            .await?;
        rows.iter()
            .map(|row| {
                let id: String = col(row, 0, "nodes.id")?;
                Ok(NodeRow {
                    node: node_id(id, "nodes.id")?,
                    incarnation: counter(col(row, 1, "nodes.incarnation")?, "nodes.incarnation")?,
                    started_at: col(row, 2, "nodes.started_at")?,
                    heartbeat_at: col(row, 3, "nodes.heartbeat_at")?,
                    fenced: col::<Option<i64>>(row, 4, "nodes.fenced")?
                        .map(|f| counter(f, "nodes.fenced"))
                        .transpose()?,
                })
            })
            .collect()
    }

    /// As the leader under `epoch` ([`fenced_write`](Self::fenced_write)),
    /// declare incarnation `incarnation` of `node` dead: from the commit of
    /// this on, every write of that incarnation (and older ones) is refused
    /// in its own transaction, and it can no longer take the lease or locks.
    /// A later incarnation (the node joining again) is not affected. Whether
    /// the row changed (`false`: unknown node or incarnation, or fenced
    /// already).
    pub async fn fence_node(
        &self,
        epoch: u64,
        node: &NodeId,
        incarnation: u64,
    ) -> Result<bool, StoreError> {
        let inc = counter_sql(incarnation, "incarnation")?;
        let redact = self.inner.shared.lane.redact().clone();
        let fenced = self
            .fenced_write(epoch, async |tx| {
                tx.query(
                    "UPDATE nodes SET fenced = $2
                     WHERE id = $1 AND incarnation >= $2 AND (fenced IS NULL OR fenced < $2)
                     RETURNING id",
                    &[&node.as_str(), &inc],
                )
                .await
                .map_err(|e| redact.io(&format!("fencing node {node}"), &e))
            })
            .await?;
        if !fenced.is_empty() {
            tracing::warn!(%node, incarnation, epoch, "node incarnation fenced by the leader");
        }
        Ok(!fenced.is_empty())
    }
}

impl Shared {
    /// One heartbeat: `Ok(false)` if this incarnation is fenced or
    /// superseded (the row was not updated).
    async fn beat(&self) -> Result<bool, StoreError> {
        let inc = counter_sql(self.incarnation, "incarnation")?;
        let what = "heartbeat";
        let rows = self
            .lane
            .query(
                what,
                "UPDATE nodes SET heartbeat_at = clock_timestamp()
                     WHERE id = $1 AND incarnation = $2 AND (fenced IS NULL OR fenced < $2)
                     RETURNING id",
                &[&self.node.as_str(), &inc],
            )
            .await?;
        Ok(!rows.is_empty())
    }

    /// The `nodes` check of a write: an error if this incarnation may not
    /// write (its row locked `FOR SHARE` until the transaction ends).
    async fn check_alive(&self, tx: &tokio_postgres::Transaction<'_>) -> Result<(), StoreError> {
        let row = tx
            .query_opt(
                "SELECT incarnation, fenced FROM nodes WHERE id = $1 FOR SHARE",
                &[&self.node.as_str()],
            )
            .await
            .map_err(|e| {
                self.lane
                    .redact()
                    .io("checking this node's incarnation", &e)
            })?;
        let state = match row {
            None => None,
            Some(row) => Some((
                col::<i64>(&row, 0, "nodes.incarnation")?,
                col::<Option<i64>>(&row, 1, "nodes.fenced")?,
            )),
        };
        match refusal(&self.node, self.incarnation, state) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// Heartbeat until shutdown, or until this incarnation is found fenced.
async fn heartbeat(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(shared.opts.heartbeat_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shared.stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let beat = tokio::select! {
            _ = shared.stop.cancelled() => return,
            b = shared.beat() => b,
        };
        match beat {
            Ok(true) => {}
            Ok(false) => {
                tracing::error!(
                    node = %shared.node,
                    incarnation = shared.incarnation,
                    "this node incarnation is fenced or superseded: heartbeats stop; join again"
                );
                shared.fenced.cancel();
                return;
            }
            Err(error) => tracing::warn!(%error, node = %shared.node, "heartbeat failed"),
        }
    }
}
