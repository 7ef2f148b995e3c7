//! Op lock keys as cluster-wide lease rows (`locks`).
//!
//! [`Coordinator::try_lock`] takes a key for a request when nobody holds it
//! or its lease expired by the database clock; the row says which request of
//! which node incarnation holds it until `expires_at`. This node remembers
//! each lock it holds with a monotonic *deadline*: the instant it sent the
//! last successful take or renewal, plus the TTL less
//! [`lock_margin`](super::CoordOptions::lock_margin). A background task
//! renews every held lock every third of the shortest TTL; a lock whose
//! renewal does not succeed before its deadline (the database does not
//! answer), or that the database no longer gives to this node (taken after
//! expiry, freed by the leader, this incarnation fenced), is lost: it is
//! forgotten, its [`lock_lost`](Coordinator::lock_lost) token is cancelled,
//! and [`renew_locks`](Coordinator::renew_locks) lists it. A deadline comes
//! before the database's `expires_at`, so a run that stops when its lock is
//! lost has stopped before another node can take the key.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use youops_core::audit::StoreError;
use youops_core::cluster::NodeId;
use youops_core::model::RequestId;

use super::{counter, counter_sql, node_id, secs, Coordinator, Shared};
use crate::codec::{self, col};

/// A lock this node holds.
#[derive(Debug)]
pub(crate) struct Held {
    request_id: RequestId,
    ttl: Duration,
    /// When this node stops counting on the lock (see the module docs).
    deadline: Instant,
    /// Cancelled when the hold ends.
    lost: CancellationToken,
}

/// A row of `locks` (for the dashboard).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LockRow {
    /// The op lock key.
    pub key: String,
    /// The request holding it.
    pub request_id: RequestId,
    /// The node holding it.
    pub holder: NodeId,
    /// The incarnation of that node.
    pub holder_incarnation: u64,
    /// When the request took it (database clock).
    pub acquired_at: DateTime<Utc>,
    /// When its lease expires unless renewed (database clock).
    pub expires_at: DateTime<Utc>,
    /// Whether it expired already (any request may take it).
    pub expired: bool,
}

/// Why this node lost a lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LostReason {
    /// Not renewed before this node's own deadline (the database did not
    /// answer in time).
    Deadline,
    /// The database no longer gives the key to this node: it expired and was
    /// taken, the leader freed it, or this incarnation is fenced.
    Gone,
}

/// A lock this node lost.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LostLock {
    /// The op lock key.
    pub key: String,
    /// The request that held it.
    pub request_id: RequestId,
    /// Why.
    pub reason: LostReason,
}

/// What [`Coordinator::renew_locks`] did.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct LockRenewal {
    /// The keys renewed.
    pub renewed: Vec<String>,
    /// The locks lost (their tokens cancelled).
    pub lost: Vec<LostLock>,
    /// Why the renewal query failed, if it did (the locks not renewed are
    /// kept until their deadlines).
    pub error: Option<StoreError>,
}

impl Coordinator {
    /// Take op lock `key` for `request_id` for `ttl` (database clock):
    /// `true` if it is this request's now (taken, or renewed if it held it
    /// already), `false` if another request holds an unexpired lease on it.
    /// This node renews it until [`unlock`](Self::unlock), or loses it (see
    /// [`lock_lost`](Self::lock_lost)). Refused (`fenced:`) if this
    /// incarnation is fenced or superseded. `ttl` must be longer than
    /// [`lock_margin`](super::CoordOptions::lock_margin).
    pub async fn try_lock(
        &self,
        key: &str,
        request_id: RequestId,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let s = &self.inner.shared;
        let margin = s.opts.lock_margin;
        if ttl <= margin {
            return Err(StoreError::Io(format!(
                "op lock {key}: the TTL ({ttl:?}) must be longer than the lock margin ({margin:?})"
            )));
        }
        let inc = counter_sql(s.incarnation, "incarnation")?;
        let id = request_id.to_string();
        let what = format!("taking op lock {key}");
        let sent = Instant::now();
        let taken = s
            .lane
            .run(&what, async |c| {
                let redact = s.lane.redact();
                let tx = c.transaction().await.map_err(|e| redact.io(&what, &e))?;
                s.check_alive(&tx).await?;
                let rows = tx
                    .query(
                        "INSERT INTO locks AS l
                             (key, request_id, holder, holder_incarnation, acquired_at, expires_at)
                         VALUES ($1, $2, $3, $4, clock_timestamp(),
                                 clock_timestamp() + make_interval(secs => $5))
                         ON CONFLICT (key) DO UPDATE SET
                             acquired_at = CASE
                                 WHEN l.request_id = EXCLUDED.request_id
                                  AND l.holder = EXCLUDED.holder
                                  AND l.holder_incarnation = EXCLUDED.holder_incarnation
                                 THEN l.acquired_at ELSE EXCLUDED.acquired_at END,
                             request_id = EXCLUDED.request_id,
                             holder = EXCLUDED.holder,
                             holder_incarnation = EXCLUDED.holder_incarnation,
                             expires_at = EXCLUDED.expires_at
                         WHERE l.expires_at <= clock_timestamp()
                            OR (l.request_id = EXCLUDED.request_id
                                AND l.holder = EXCLUDED.holder
                                AND l.holder_incarnation = EXCLUDED.holder_incarnation)
                         RETURNING key",
                        &[&key, &id, &s.node.as_str(), &inc, &secs(ttl)],
                    )
                    .await
                    .map_err(|e| redact.io(&what, &e))?;
                tx.commit().await.map_err(|e| redact.io(&what, &e))?;
                Ok(!rows.is_empty())
            })
            .await?;
        if !taken {
            return Ok(false);
        }
        let deadline = sent + (ttl - margin);
        if Instant::now() >= deadline {
            tracing::warn!(key, "op lock taken too late to count on: it will expire");
            return Ok(false);
        }
        let mut locks = s.held();
        match locks.get_mut(key) {
            Some(h) if h.request_id == request_id => {
                h.ttl = ttl;
                h.deadline = h.deadline.max(deadline);
            }
            _ => {
                let held = Held {
                    request_id,
                    ttl,
                    deadline,
                    lost: CancellationToken::new(),
                };
                if let Some(old) = locks.insert(key.to_string(), held) {
                    old.lost.cancel();
                }
            }
        }
        drop(locks);
        s.locks_changed.notify_one();
        Ok(true)
    }

    /// The token of this node's hold on `key`, if it holds it: cancelled
    /// when the hold ends, by [`unlock`](Self::unlock) or because the lock
    /// is lost (not renewed before its deadline, or no longer this node's):
    /// a run under the lock stops when it is cancelled.
    pub fn lock_lost(&self, key: &str) -> Option<CancellationToken> {
        self.inner.shared.held().get(key).map(|h| h.lost.clone())
    }

    /// Renew every lock this node holds now (a background task does it
    /// every third of the shortest TTL; this is the same, on demand). Locks
    /// whose deadline passes, even while the query waits, are lost at once.
    pub async fn renew_locks(&self) -> LockRenewal {
        self.inner.shared.renew_locks().await
    }

    /// Release `key` if `request_id` of this node holds it; whether it did.
    /// The hold's token is cancelled.
    pub async fn unlock(&self, key: &str, request_id: RequestId) -> Result<bool, StoreError> {
        let s = &self.inner.shared;
        let inc = counter_sql(s.incarnation, "incarnation")?;
        let id = request_id.to_string();
        let what = format!("releasing op lock {key}");
        let removed = s
            .lane
            .execute(&what, "DELETE FROM locks
                     WHERE key = $1 AND request_id = $2 AND holder = $3 AND holder_incarnation = $4", &[&key, &id, &s.node.as_str(), &inc])
            .await?;
        let mut locks = s.held();
        if locks.get(key).is_some_and(|h| h.request_id == request_id) {
            if let Some(h) = locks.remove(key) {
                h.lost.cancel();
            }
        }
        Ok(removed > 0)
    }

    /// Every row of `locks`, by key (expired ones included, marked).
    pub async fn locks(&self) -> Result<Vec<LockRow>, StoreError> {
        let s = &self.inner.shared;
        let what = "reading op locks";
        let rows = s
            .lane
            .query(
                what,
                "SELECT key, request_id, holder, holder_incarnation, acquired_at, expires_at,
                            expires_at <= clock_timestamp()
                     FROM locks ORDER BY key",
                &[],
            )
            .await?;
        rows.iter()
            .map(|row| {
                let id: String = col(row, 1, "locks.request_id")?;
                let holder: String = col(row, 2, "locks.holder")?;
                Ok(LockRow {
                    key: col(row, 0, "locks.key")?,
                    request_id: codec::request_id(&id, "locks.request_id")?,
                    holder: node_id(holder, "locks.holder")?,
                    holder_incarnation: counter(
                        col(row, 3, "locks.holder_incarnation")?,
                        "locks.holder_incarnation",
                    )?,
                    acquired_at: col(row, 4, "locks.acquired_at")?,
                    expires_at: col(row, 5, "locks.expires_at")?,
                    expired: col(row, 6, "locks.expires_at")?,
                })
            })
            .collect()
    }

    /// As the leader under `epoch` ([`fenced_write`](Self::fenced_write)),
    /// free every lock held by `node` at `incarnation` or an older one: how
    /// many. Refused unless that incarnation is fenced
    /// ([`fence_node`](Self::fence_node)) or superseded, so that a live node
    /// never loses a lock it still renews.
    pub async fn free_locks_of(
        &self,
        epoch: u64,
        node: &NodeId,
        incarnation: u64,
    ) -> Result<u64, StoreError> {
        let inc = counter_sql(incarnation, "incarnation")?;
        let redact = self.inner.shared.lane.redact().clone();
        let what = format!("freeing the op locks of node {node} incarnation {incarnation}");
        let freed = self
            .fenced_write(epoch, async |tx| {
                let dead = tx
                    .query_opt(
                        "SELECT 1 FROM nodes
                         WHERE id = $1 AND (incarnation > $2 OR fenced >= $2) FOR SHARE",
                        &[&node.as_str(), &inc],
                    )
                    .await
                    .map_err(|e| redact.io(&what, &e))?;
                if dead.is_none() {
                    return Err(StoreError::Io(format!(
                        "{what}: that incarnation is neither fenced nor superseded (fence it \
                         first)"
                    )));
                }
                tx.execute(
                    "DELETE FROM locks WHERE holder = $1 AND holder_incarnation <= $2",
                    &[&node.as_str(), &inc],
                )
                .await
                .map_err(|e| redact.io(&what, &e))
            })
            .await?;
        if freed > 0 {
            tracing::warn!(%node, incarnation, freed, "freed the op locks of a dead node");
        }
        Ok(freed)
    }
}

impl Shared {
    fn held(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, Held>> {
        self.locks.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Forget the locks whose deadline passed; cancel their tokens.
    fn expire_due(&self) -> Vec<LostLock> {
        let now = Instant::now();
        let mut locks = self.held();
        let due: Vec<String> = locks
            .iter()
            .filter(|(_, h)| h.deadline <= now)
            .map(|(k, _)| k.clone())
            .collect();
        due.into_iter()
            .filter_map(|key| {
                let h = locks.remove(&key)?;
                h.lost.cancel();
                tracing::warn!(%key, request = %h.request_id, "op lock lost: not renewed in time");
                Some(LostLock {
                    key,
                    request_id: h.request_id,
                    reason: LostReason::Deadline,
                })
            })
            .collect()
    }

    /// The earliest deadline of the held locks.
    fn earliest(&self) -> Option<Instant> {
        self.held().values().map(|h| h.deadline).min()
    }

    /// See [`Coordinator::renew_locks`].
    async fn renew_locks(&self) -> LockRenewal {
        let mut out = LockRenewal {
            lost: self.expire_due(),
            ..LockRenewal::default()
        };
        let batch: Vec<(String, RequestId, Duration, Instant)> = self
            .held()
            .iter()
            .map(|(k, h)| (k.clone(), h.request_id, h.ttl, h.deadline))
            .collect();
        if batch.is_empty() {
            return out;
        }
        let sent = Instant::now();
        let result = {
            let query = self.renew_query(&batch);
            tokio::pin!(query);
            loop {
                let earliest = self.earliest();
                tokio::select! {
                    r = &mut query => break r,
                    _ = super::until(earliest) => out.lost.extend(self.expire_due()),
                }
            }
        };
        let renewed = match result {
            Ok(renewed) => renewed,
            Err(error) => {
                out.error = Some(error);
                return out;
            }
        };
        let mut locks = self.held();
        for (key, request_id, ttl, before) in batch {
            let Some(h) = locks.get_mut(&key) else {
                continue;
            };
            if h.request_id != request_id {
                continue;
            }
            if renewed.contains(&key) {
                h.deadline = h.deadline.max(sent + (ttl - self.opts.lock_margin));
                out.renewed.push(key);
            } else if h.deadline <= before {
                // Not taken again meanwhile: the database gave it away.
                if let Some(h) = locks.remove(&key) {
                    h.lost.cancel();
                    tracing::warn!(%key, request = %request_id, "op lock lost: no longer this node's");
                    out.lost.push(LostLock {
                        key,
                        request_id,
                        reason: LostReason::Gone,
                    });
                }
            }
        }
        out
    }

    /// Renew the locks of `batch` that are still this incarnation's: their
    /// keys.
    async fn renew_query(
        &self,
        batch: &[(String, RequestId, Duration, Instant)],
    ) -> Result<HashSet<String>, StoreError> {
        let inc = counter_sql(self.incarnation, "incarnation")?;
        let keys: Vec<&str> = batch.iter().map(|b| b.0.as_str()).collect();
        let ids: Vec<String> = batch.iter().map(|b| b.1.to_string()).collect();
        let ttls: Vec<f64> = batch.iter().map(|b| secs(b.2)).collect();
        let what = "renewing op locks";
        let rows = self
            .lane
            .query(
                what,
                "UPDATE locks AS l
                     SET expires_at = clock_timestamp() + make_interval(secs => t.ttl)
                     FROM unnest($3::text[], $4::text[], $5::float8[]) AS t(key, request_id, ttl)
                     WHERE l.key = t.key AND l.request_id = t.request_id
                       AND l.holder = $1 AND l.holder_incarnation = $2
                       AND EXISTS (SELECT 1 FROM nodes WHERE id = $1 AND incarnation = $2
                                   AND (fenced IS NULL OR fenced < $2))
                     RETURNING l.key",
                &[&self.node.as_str(), &inc, &keys, &ids, &ttls],
            )
            .await?;
        rows.iter().map(|r| col(r, 0, "locks.key")).collect()
    }
}

/// Renew this node's locks every third of the shortest TTL held, and at
/// each deadline, until shutdown.
/// At shutdown every hold ends: its token is cancelled (the rows expire by
/// themselves).
pub(crate) async fn keeper(shared: Arc<Shared>) {
    keep(&shared).await;
    for (_, h) in shared.held().drain() {
        h.lost.cancel();
    }
}

async fn keep(shared: &Shared) {
    loop {
        let next = {
            let locks = shared.held();
            let every = locks.values().map(|h| h.ttl / 3).min();
            let earliest = locks.values().map(|h| h.deadline).min();
            match (every, earliest) {
                (Some(every), Some(earliest)) => Some((Instant::now() + every).min(earliest)),
                _ => None,
            }
        };
        tokio::select! {
            _ = shared.stop.cancelled() => return,
            _ = shared.locks_changed.notified() => continue,
            _ = super::until(next) => {}
        }
        let renewal = tokio::select! {
            _ = shared.stop.cancelled() => return,
            r = shared.renew_locks() => r,
        };
        if let Some(error) = renewal.error {
            tracing::warn!(%error, node = %shared.node, "renewing op locks failed");
        }
    }
}
