//! `events` is range-partitioned by seq (schema version 3), so that
//! retention removes archived events by dropping whole partitions instead of
//! deleting them row by row.
//!
//! Partitions are plain ranges `[lo, hi)` named `events_p<lo>`, made one
//! [span](SPAN) at a time upward from the highest existing bound. There is
//! no DEFAULT partition: attaching a partition would have to scan it (under
//! a lock that stops appends) to prove none of its rows belongs to the new
//! range. Instead a partition exists before any append needs it:
//!
//! - ahead of time: a keeper task per store makes sure at least one whole
//!   span of seqs past the chain tip has partitions. It is woken by the
//!   writer after a commit that left less room than that, and checks every
//!   minute on its own (so that the appends of other nodes, or of nodes of
//!   an older version that make no partitions, find room too);
//! - in the hot path only as a safety net: a group commit (or an import)
//!   whose seqs go past the partitions this store knows of reads the
//!   catalog under its tip lock and makes what is missing in its own
//!   transaction. With the keeper ahead this re-reads the catalog about
//!   once per span and makes nothing.
//!
//! A partition is made as `CREATE TABLE … (LIKE events)` then `ALTER TABLE
//! events ATTACH PARTITION`, never `CREATE TABLE … PARTITION OF`: attaching
//! takes a SHARE UPDATE EXCLUSIVE lock on `events`, which appends (ROW
//! EXCLUSIVE) and reads (ACCESS SHARE) do not wait for, where `PARTITION OF`
//! takes ACCESS EXCLUSIVE and would stop both. Attaching an empty table
//! scans nothing; its indexes are made empty by the attach. Makers take a
//! transaction-scoped advisory lock, so that two nodes never make the same
//! partition.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_postgres::Client;
use youops_core::audit::StoreError;

use crate::codec::{col, seq_of, seq_sql};
use crate::conn::{Conn, Connector, Redactor};
use crate::rows::WriteError;

/// Seqs per partition.
///
/// Retention deletes row by row only what it archives of the one partition
/// it archives in part, and drops the others whole: the larger the span,
/// the more of each archive goes row by row (at most one span). The smaller
/// the span, the more partitions: queries that cannot be narrowed by seq (a
/// request's events, by `request_id`; the checkpoints, by `kind`) probe one
/// index per partition, and planning grows with their number. A hundred
/// thousand events (some tens of megabytes) keeps both small: a store
/// retaining a million events has a dozen partitions, an archive deletes at
/// most a hundred thousand rows one by one, and a store without retention
/// reaches a thousand partitions only at a hundred million events.
pub(crate) const SPAN: u64 = 100_000;

/// The advisory lock key of making partitions ("youopspt").
const PARTITION_LOCK: i64 = 0x796f_756f_7073_7074;

/// How often the keeper checks on its own.
const CHECK_EVERY: Duration = Duration::from_secs(60);

/// A partition of `events`: its name as SQL (quoted where needed), and the
/// seqs it holds, `lo..hi`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Part {
    pub(crate) name: String,
    pub(crate) lo: u64,
    pub(crate) hi: u64,
}

/// What a store knows of its partitions, and the keeper's wake-up.
#[derive(Debug)]
pub(crate) struct Partitions {
    span: u64,
    /// Every seq below has a partition, as far as this store knows (0:
    /// nothing known); bounds only grow above the tip, so it never goes
    /// stale the wrong way unless someone drops them by hand.
    ready: Arc<AtomicU64>,
    wake: mpsc::Sender<()>,
}

impl Partitions {
    /// Start the keeper (on connections of its own, made by `connector`)
    /// for a store whose partitions reach `ready`. It stops once this is
    /// dropped.
    pub(crate) fn start(connector: Arc<Connector>, span: u64, ready: u64) -> Partitions {
        let ready = Arc::new(AtomicU64::new(ready));
        let (wake, woken) = mpsc::channel(1);
        tokio::spawn(keeper(connector, span, Arc::clone(&ready), woken));
        Partitions { span, ready, wake }
    }

    /// For a store of a schema without partitions (tests of upgrades): it
    /// never makes any, as the code of those versions.
    #[cfg_attr(not(feature = "test-util"), allow(dead_code))]
    pub(crate) fn none() -> Partitions {
        let (wake, _) = mpsc::channel(1);
        Partitions {
            span: SPAN,
            ready: Arc::new(AtomicU64::new(u64::MAX)),
            wake,
        }
    }

    pub(crate) fn span(&self) -> u64 {
        self.span
    }

    /// Whether every seq through `through` has a partition, as far as known.
    pub(crate) fn covers(&self, through: u64) -> bool {
        through < self.ready.load(Ordering::SeqCst)
    }

    /// Partitions were found or made up to `hi` (exclusive).
    pub(crate) fn note(&self, hi: u64) {
        self.ready.fetch_max(hi, Ordering::SeqCst);
    }

    /// An insert found no partition: what is known is wrong (partitions
    /// dropped by hand); the next group reads the catalog again.
    pub(crate) fn forget(&self) {
        self.ready.store(0, Ordering::SeqCst);
    }

    /// A commit moved the tip to `tip`: wake the keeper if less than a
    /// whole span is left ahead of it.
    pub(crate) fn committed(&self, tip: u64) {
        if self.ready.load(Ordering::SeqCst) <= tip.saturating_add(self.span) {
            // Full: a wake-up is pending already.
            let _ = self.wake.try_send(());
        }
    }
}

/// Make partitions ahead (see the module docs) when woken and every
/// minute, until the store is gone.
async fn keeper(
    connector: Arc<Connector>,
    span: u64,
    ready: Arc<AtomicU64>,
    mut woken: mpsc::Receiver<()>,
) {
    let mut conn: Option<Conn> = None;
    loop {
        tokio::select! {
            w = woken.recv() => {
                if w.is_none() {
                    return;
                }
            }
            _ = tokio::time::sleep(CHECK_EVERY) => {}
        }
        if conn.as_ref().is_none_or(|c| c.client.is_closed()) {
            conn = connector.connect().await.ok();
        }
        let Some(c) = conn.as_mut() else {
            continue;
        };
        match ahead(&mut c.client, &connector.redact, span).await {
            Ok(hi) => {
                ready.fetch_max(hi, Ordering::SeqCst);
            }
            Err(error) => {
                conn = None;
                tracing::warn!(%error, "audit store: making partitions of events ahead failed");
            }
        }
    }
}

/// In a transaction of its own: make sure a whole span of seqs past the
/// tip has partitions. The highest bound, exclusive.
pub(crate) async fn ahead(
    client: &mut Client,
    redact: &Redactor,
    span: u64,
) -> Result<u64, StoreError> {
    let what = "making partitions of events ahead of the chain tip";
    let tx = client
        .transaction()
        .await
        .map_err(|e| redact.io(what, &e))?;
    let row = tx
        .query_one("SELECT seq FROM tip WHERE id = 1", &[])
        .await
        .map_err(|e| redact.io(what, &e))?;
    let tip = seq_of(col(&row, 0, "tip.seq")?, "tip.seq")?;
    let hi = cover(tx.client(), tip + 1, tip.saturating_add(span), span)
        .await
        .map_err(|e| e.report(redact, what))?;
    tx.commit().await.map_err(|e| redact.io(what, &e))?;
    Ok(hi)
}

/// Make sure seqs `from..=through` have partitions, in `tx` (under the
/// makers' advisory lock until it ends): the partitions above the highest
/// bound are made, a span each, from that bound (or from `from`, when it is
/// higher: seqs below it are never inserted). The highest bound, exclusive.
pub(crate) async fn cover(
    tx: &Client,
    from: u64,
    through: u64,
    span: u64,
) -> Result<u64, WriteError> {
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&PARTITION_LOCK])
        .await
        .map_err(WriteError::Sql)?;
    let top = list(tx).await?.iter().map(|p| p.hi).max().unwrap_or(0);
    let mut lo = top.max(from);
    let mut hi = top;
    while lo <= through {
        hi = lo.saturating_add(span.max(1));
        let (l, h) = (
            seq_sql(lo).map_err(WriteError::Data)?,
            seq_sql(hi).map_err(WriteError::Data)?,
        );
        tx.batch_execute(&format!(
            "CREATE TABLE events_p{l} (LIKE events INCLUDING DEFAULTS INCLUDING CONSTRAINTS);
             ALTER TABLE events ATTACH PARTITION events_p{l} FOR VALUES FROM ({l}) TO ({h})"
        ))
        .await
        .map_err(WriteError::Sql)?;
        tracing::debug!(lo, hi, "audit store: made a partition of events");
        lo = hi;
    }
    Ok(hi)
}

/// The range partitions of `events`, lowest first (from the catalog; a
/// partition whose bounds are no seqs, such as a DEFAULT one made by hand,
/// is left out).
pub(crate) async fn list(tx: &Client) -> Result<Vec<Part>, WriteError> {
    let rows = tx
        .query(
            r"SELECT name, substring(b FROM 'FROM \(''([0-9]+)''\)')::bigint AS lo,
                     substring(b FROM 'TO \(''([0-9]+)''\)')::bigint AS hi
              FROM (SELECT c.oid::regclass::text AS name, pg_get_expr(c.relpartbound, c.oid) AS b
                    FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
                    WHERE i.inhparent = 'events'::regclass) AS p
              ORDER BY lo",
            &[],
        )
        .await
        .map_err(WriteError::Sql)?;
    let mut parts = Vec::with_capacity(rows.len());
    for row in &rows {
        let bounds = (
            col::<Option<i64>>(row, 1, "partition bound").map_err(WriteError::Data)?,
            col::<Option<i64>>(row, 2, "partition bound").map_err(WriteError::Data)?,
        );
        if let (Some(lo), Some(hi)) = bounds {
            parts.push(Part {
                name: col(row, 0, "partition name").map_err(WriteError::Data)?,
                lo: seq_of(lo, "partition bound").map_err(WriteError::Data)?,
                hi: seq_of(hi, "partition bound").map_err(WriteError::Data)?,
            });
        }
    }
    Ok(parts)
}
