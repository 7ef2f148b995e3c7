//! Leader election by the `leader` row of `leases`, and writes fenced by
//! the leader's epoch.
//!
//! The campaign loop tries every third of the TTL to take or renew the
//! lease in one statement: it is taken when it expired by the database
//! clock (or this incarnation holds it), with the next epoch unless this
//! loop renews the term it holds, and `expires_at = clock_timestamp() +
//! ttl`. Before sending each try the loop notes the monotonic instant; a
//! successful renewal makes this node lead until that instant plus the TTL
//! less the margin (its *deadline*), and the loop demotes the node at the
//! deadline whatever the query is doing (it may hang forever on a cut
//! network; it is bounded by a timeout too, but the deadline does not wait
//! for it). The database's `expires_at` is at least the TTL after the same
//! instant, so another node can take the lease only after this one stopped,
//! as long as the two clocks' rates differ by less than margin/TTL.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_postgres::Transaction;
use tokio_util::sync::CancellationToken;
use youops_core::audit::StoreError;
use youops_core::cluster::{Leadership, LeaseSignal, NodeId};

use super::{counter, counter_sql, node_id, secs, until, Coordinator, Shared};
use crate::codec::col;

/// One campaign for the `leader` lease ([`Coordinator::campaign`]): its
/// [`Leadership`] and its loop. Dropping it stops the loop (this node stops
/// leading at once; the lease expires by itself).
#[derive(Debug)]
pub struct Campaign {
    leadership: Leadership,
    stop: CancellationToken,
    task: Option<JoinHandle<()>>,
    shared: Arc<Shared>,
}

impl Campaign {
    /// This node's leadership, fed by the campaign: lead under the lease's
    /// epoch, follow when another node holds it or the lease could not be
    /// renewed before the deadline. It ends for good when the campaign stops.
    pub fn leadership(&self) -> Leadership {
        self.leadership.clone()
    }

    /// Stop campaigning: stop leading at once, wait for the loop to end,
    /// then release the lease if this incarnation holds it (its expiry set
    /// to now), so that another node can take it without waiting for the
    /// TTL. Writes fenced by the old epoch are refused from then on.
    pub async fn resign(mut self) -> Result<(), StoreError> {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        let s = &self.shared;
        let inc = counter_sql(s.incarnation, "incarnation")?;
        let what = "releasing the leader lease";
        s.lane
            .execute(
                what,
                "UPDATE leases SET expires_at = clock_timestamp()
                     WHERE name = 'leader' AND holder = $1 AND holder_incarnation = $2
                       AND expires_at > clock_timestamp()",
                &[&s.node.as_str(), &inc],
            )
            .await
            .map(drop)
    }
}

impl Drop for Campaign {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// The `leader` row of `leases` (for dashboards): who holds or last held
/// the lease, under which epoch, until when.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LeaderRow {
    /// The node holding the lease, or that held it last.
    pub holder: NodeId,
    /// The incarnation of that node.
    pub holder_incarnation: u64,
    /// The term's epoch (one per term, only grows).
    pub epoch: u64,
    /// When the lease expires unless renewed (database clock).
    pub expires_at: DateTime<Utc>,
    /// Whether it expired already by the database clock (nobody leads
    /// until a node takes it).
    pub expired: bool,
}

impl Coordinator {
    /// The `leader` row of `leases`: `None` when no node ever held the
    /// lease. An expired row still names its last holder (see
    /// [`LeaderRow::expired`]).
    pub async fn leader(&self) -> Result<Option<LeaderRow>, StoreError> {
        let s = &self.inner.shared;
        let what = "reading the leader lease";
        let row = s
            .lane
            .query(
                what,
                "SELECT holder, holder_incarnation, epoch, expires_at,
                            expires_at <= clock_timestamp()
                     FROM leases WHERE name = 'leader' AND holder IS NOT NULL",
                &[],
            )
            .await?;
        // `name` is the primary key: one row at most.
        let Some(row) = row.into_iter().next() else {
            return Ok(None);
        };
        let holder: String = col(&row, 0, "leases.holder")?;
        let inc: Option<i64> = col(&row, 1, "leases.holder_incarnation")?;
        let inc = inc.ok_or_else(|| {
            StoreError::Corrupt("leases.holder_incarnation: NULL with a holder".into())
        })?;
        Ok(Some(LeaderRow {
            holder: node_id(holder, "leases.holder")?,
            holder_incarnation: counter(inc, "leases.holder_incarnation")?,
            epoch: counter(col(&row, 2, "leases.epoch")?, "leases.epoch")?,
            expires_at: col(&row, 3, "leases.expires_at")?,
            expired: col(&row, 4, "leases.expires_at")?,
        }))
    }

    /// Campaign for the `leader` lease with `ttl` (by the database clock) and
    /// `margin`: take it when it is free or expired, renew it every `ttl / 3`
    /// while held (the same epoch), and feed the returned campaign's
    /// [`Leadership`] (`lead(epoch)` / `follow()`). A leader that cannot
    /// renew demotes itself `ttl - margin` after it sent its last successful
    /// renewal, even if the database never answers (see the module docs).
    /// `margin` must be shorter than `ttl`, and cover the difference of
    /// clock rates over a TTL plus scheduling delays (a tenth or more of the
    /// TTL, at least tens of milliseconds).
    pub fn campaign(&self, ttl: Duration, margin: Duration) -> Result<Campaign, StoreError> {
        if margin.is_zero() || margin >= ttl {
            return Err(StoreError::Io(format!(
                "leader lease: the margin ({margin:?}) must be above zero and shorter than the \
                 TTL ({ttl:?})"
            )));
        }
        let shared = Arc::clone(&self.inner.shared);
        let (signal, leadership) = Leadership::channel();
        let stop = shared.stop.child_token();
        let task = tokio::spawn(campaign_loop(
            Arc::clone(&shared),
            ttl,
            margin,
            signal,
            stop.clone(),
        ));
        Ok(Campaign {
            leadership,
            stop,
            task: Some(task),
            shared,
        })
    }

    /// Run `write` in a transaction that first checks that `epoch` is this
    /// node incarnation's current, unexpired term of the `leader` lease
    /// (`SELECT … FROM leases WHERE name = 'leader' AND epoch = $1 AND holder
    /// = $me … FOR SHARE`), and commit it. Refused (an error starting
    /// `fenced:`, see [`super::is_fenced`]) if another node took the lease
    /// or it expired; a takeover waits for a write in flight, so every write
    /// under an epoch commits before the next epoch begins, or not at all.
    ///
    /// For the daemon's leader-only writes that go straight to the database.
    /// `write` gets the transaction; its error rolls back. The whole runs
    /// within [`query_timeout`](super::CoordOptions::query_timeout).
    pub async fn fenced_write<T>(
        &self,
        epoch: u64,
        write: impl AsyncFnOnce(&Transaction<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let s = &self.inner.shared;
        let epoch_sql = counter_sql(epoch, "epoch")?;
        let inc = counter_sql(s.incarnation, "incarnation")?;
        let redact = s.lane.redact();
        let what = format!("a leader write under epoch {epoch}");
        let what = what.as_str();
        s.lane
            .run(what, async move |c| {
                let tx = c
                    .transaction()
                    .await
                    .map_err(|e| redact.io(&format!("{what}: BEGIN"), &e))?;
                let term = tx
                    .query_opt(
                        "SELECT epoch FROM leases
                         WHERE name = 'leader' AND epoch = $1 AND holder = $2
                           AND holder_incarnation = $3 AND expires_at > clock_timestamp()
                         FOR SHARE",
                        &[&epoch_sql, &s.node.as_str(), &inc],
                    )
                    .await
                    .map_err(|e| redact.io(&format!("{what}: checking the lease"), &e))?;
                if term.is_none() {
                    return Err(StoreError::Io(format!(
                        "fenced: epoch {epoch} is not the current leader term of node {} \
                         incarnation {}: another node leads, or the lease expired",
                        s.node, s.incarnation
                    )));
                }
                let out = write(&tx).await?;
                tx.commit()
                    .await
                    .map_err(|e| redact.io(&format!("{what}: COMMIT"), &e))?;
                Ok(out)
            })
            .await
    }
}

impl Shared {
    /// Take or renew the `leader` lease: its epoch if this incarnation holds
    /// it now, `None` if another does. `held`: the epoch of the term this
    /// loop holds (kept on renewal; otherwise the epoch moves on).
    async fn try_lead(
        &self,
        ttl: Duration,
        limit: Duration,
        held: Option<u64>,
    ) -> Result<Option<u64>, StoreError> {
        let inc = counter_sql(self.incarnation, "incarnation")?;
        let held = held.map(|e| counter_sql(e, "epoch")).transpose()?;
        let what = "taking or renewing the leader lease";
        let row = self
            .lane
            .run_within(what, limit, async |c| {
                c.query_opt(
                    "UPDATE leases SET
                         epoch = CASE WHEN holder = $1 AND holder_incarnation = $2 AND epoch = $4
                                      THEN epoch ELSE epoch + 1 END,
                         holder = $1,
                         holder_incarnation = $2,
                         expires_at = clock_timestamp() + make_interval(secs => $3)
                     WHERE name = 'leader'
                       AND (expires_at <= clock_timestamp()
                            OR (holder = $1 AND holder_incarnation = $2))
                       AND EXISTS (SELECT 1 FROM nodes WHERE id = $1 AND incarnation = $2
                                   AND (fenced IS NULL OR fenced < $2))
                     RETURNING epoch",
                    &[&self.node.as_str(), &inc, &secs(ttl), &held],
                )
                .await
                .map_err(|e| self.lane.redact().io(what, &e))
            })
            .await?;
        row.map(|r| counter(col(&r, 0, "leases.epoch")?, "leases.epoch"))
            .transpose()
    }
}

/// The term this loop holds, and when it must stop leading.
#[derive(Debug, Clone, Copy)]
struct Held {
    epoch: u64,
    deadline: Instant,
}

fn demote(shared: &Shared, signal: &LeaseSignal, held: &mut Option<Held>, why: &str) {
    if let Some(h) = held.take() {
        tracing::warn!(node = %shared.node, epoch = h.epoch, "no longer leading: {why}");
    }
    signal.follow();
}

/// The campaign (see the module docs), until `stop`.
async fn campaign_loop(
    shared: Arc<Shared>,
    ttl: Duration,
    margin: Duration,
    signal: LeaseSignal,
    stop: CancellationToken,
) {
    let every = ttl / 3;
    let limit = shared.lane.timeout().min(ttl - margin);
    let mut held: Option<Held> = None;
    loop {
        let sent = Instant::now();
        let attempt = shared.try_lead(ttl, limit, held.map(|h| h.epoch));
        tokio::pin!(attempt);
        let result = loop {
            tokio::select! {
                r = &mut attempt => break r,
                _ = until(held.map(|h| h.deadline)) => {
                    demote(&shared, &signal, &mut held, "the lease was not renewed in time");
                }
                _ = stop.cancelled() => {
                    demote(&shared, &signal, &mut held, "the campaign stopped");
                    return;
                }
            }
        };
        match result {
            Ok(Some(epoch)) => {
                let deadline = sent + (ttl - margin);
                if Instant::now() < deadline {
                    if held.is_none_or(|h| h.epoch != epoch) {
                        tracing::info!(node = %shared.node, epoch, "leading");
                    }
                    held = Some(Held { epoch, deadline });
                    signal.lead(epoch);
                } else {
                    demote(
                        &shared,
                        &signal,
                        &mut held,
                        "the lease was renewed too late",
                    );
                }
            }
            Ok(None) => demote(&shared, &signal, &mut held, "another node holds the lease"),
            // Still leading until the deadline, if it was.
            Err(error) => tracing::warn!(%error, node = %shared.node, "leader lease"),
        }
        let next = sent + every;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(next) => break,
                _ = until(held.map(|h| h.deadline)) => {
                    demote(&shared, &signal, &mut held, "the lease was not renewed in time");
                }
                _ = stop.cancelled() => {
                    demote(&shared, &signal, &mut held, "the campaign stopped");
                    return;
                }
            }
        }
    }
}
