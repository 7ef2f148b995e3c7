//! [`PgStore::import`](crate::PgStore::import): events copied from another
//! store's chain (`youops store copy`), keeping their seqs, times and hashes.
//!
//! Every event is checked before the database is touched (its seq, its link
//! to the one before, its hash over its own content, recomputed from the
//! canonical bytes that are then stored). Then ONE transaction:
//!
//! 1. lock the chain tip (`FOR UPDATE`, as a group commit does: the import
//!    and every node's appends take turns) and check that the first event
//!    continues it (seq = tip + 1, `prev_hash` = tip hash), or that the store
//!    is empty: an empty store also takes a chain that starts after records
//!    the source archived (its checkpoint then follows in the chain);
//! 2. derive what a replay derives: the request records folded from the
//!    events (an event whose `received` event is not in the store derives
//!    nothing: it was archived in the source), and the dedup claims their
//!    `received` events carry: for good, or (`dedup_expires`) until the
//!    event's time plus the store's dedup TTL, not imported once expired;
//! 3. make the partitions of `events` the seqs need, if missing (in the
//!    same transaction), insert the events, upsert the records and claims,
//!    move the tip (its time to the last event's, so later appends keep
//!    times monotonic), COMMIT.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use tokio_postgres::Transaction;
use youops_core::audit::{check_import, StoreError, GENESIS_HASH};
use youops_core::model::{AuditEvent, EventBody, RequestId};

use crate::codec::{self, col, fold, seq_of, seq_sql, Entry};
use crate::conn::{is_connection, Redactor};
use crate::partitions;
use crate::rows::{self, Stored, WriteError};
use crate::PgStore;

/// Import `events` (see the [module](self) documentation).
pub(crate) async fn import(store: &PgStore, events: Vec<AuditEvent>) -> Result<(), StoreError> {
    let (Some(first), Some(last)) = (events.first(), events.last()) else {
        return Ok(());
    };
    let rows = check_events(&events)?;
    let pool = &store.inner.pool;
    let redact = pool.redact();
    let mut conn = pool.get().await?;
    let result = async {
        let tx = conn
            .client()?
            .transaction()
            .await
            .map_err(|e| redact.io("BEGIN", &e))?;
        let (tip, now) = lock_tip(&tx, redact).await?;
        check_start(first, &tip)?;
        let parts = &store.inner.partitions;
        let hi = partitions::cover(tx.client(), first.seq, last.seq, parts.span())
            .await
            .map_err(|e| e.report(redact, "making partitions of events"))?;
        parts.note(hi);
        let known = read_records(&tx, &events, redact).await?;
        let records = fold_records(&events, known);
        let claims = claims(&events, store.inner.dedup_ttl, now);
        write_events(&tx, &rows, redact).await?;
        write_records(&tx, &records, redact).await?;
        write_claims(&tx, &claims, redact).await?;
        tx.execute(
            "UPDATE tip SET seq = $1, hash = $2, time = greatest(time, $3) WHERE id = 1",
            &[&seq_sql(last.seq)?, &last.hash, &last.time],
        )
        .await
        .map_err(|e| redact.io("moving the chain tip", &e))?;
        tx.commit().await.map_err(|e| redact.io("COMMIT", &e))
    }
    .await;
    if result.is_err() {
        // Whatever state the session is in, it does not go back to the pool.
        conn.discard();
    }
    result
}

/// The rows of `events`, each checked: consecutive seqs, each linked to the
/// one before, each hash over its own content; a chain starting at #1 starts
/// from the genesis hash.
fn check_events(events: &[AuditEvent]) -> Result<Vec<Stored>, StoreError> {
    let Some(first) = events.first() else {
        return Ok(Vec::new());
    };
    if first.seq == 0 || (first.seq == 1 && first.prev_hash != GENESIS_HASH) {
        return Err(StoreError::Corrupt(format!(
            "cannot import record #{} first: the chain starts at #1 with the genesis hash",
            first.seq
        )));
    }
    let canonical = check_import(events)?;
    let rows = events
        .iter()
        .zip(canonical)
        .map(|(ev, canonical)| Stored {
            seq: ev.seq,
            request_id: ev.request_id.map(|i| i.to_string()),
            kind: codec::kind(&ev.body),
            canonical,
            prev_hash: ev.prev_hash.clone(),
            hash: ev.hash.clone(),
        })
        .collect();
    Ok(rows)
}

/// Step 1: the locked tip `(seq, hash)` and the database's clock.
async fn lock_tip(
    tx: &Transaction<'_>,
    redact: &Redactor,
) -> Result<((u64, String), DateTime<Utc>), StoreError> {
    let row = tx
        .query_one("SELECT seq, hash FROM tip WHERE id = 1 FOR UPDATE", &[])
        .await
        .map_err(|e| redact.io("locking the chain tip", &e))?;
    let seq = seq_of(col(&row, 0, "tip.seq")?, "tip.seq")?;
    let hash: String = col(&row, 1, "tip.hash")?;
    let row = tx
        .query_one("SELECT clock_timestamp()", &[])
        .await
        .map_err(|e| redact.io("reading the clock", &e))?;
    let now: DateTime<Utc> = col(&row, 0, "clock_timestamp()")?;
    Ok(((seq, hash), now))
}

/// Step 1: the first event continues the tip exactly, or starts an empty
/// store (at #1, or later after records the source archived).
fn check_start(first: &AuditEvent, tip: &(u64, String)) -> Result<(), StoreError> {
    let empty = tip.0 == 0;
    if empty || (first.seq == tip.0 + 1 && first.prev_hash == tip.1) {
        return Ok(());
    }
    Err(StoreError::Io(format!(
        "cannot import record #{} (prev_hash {}) into a store that ends at #{} (hash {}): an \
         import starts an empty store or continues exactly at its tip",
        first.seq,
        short(&first.prev_hash),
        tip.0,
        short(&tip.1)
    )))
}

/// Step 2: the stored records of the events' requests.
async fn read_records(
    tx: &Transaction<'_>,
    events: &[AuditEvent],
    redact: &Redactor,
) -> Result<HashMap<RequestId, Entry>, StoreError> {
    let ids = events.iter().filter_map(|e| e.request_id).collect();
    rows::read_records(tx.client(), rows::READ_RECORDS, ids)
        .await
        .map_err(|e| match e {
            WriteError::Data(d) => d,
            WriteError::Sql(e) => redact.io("reading request records", &e),
        })
}

/// Step 2: the records the events change, folded as a replay folds them: an
/// event that does not fold (its request's `received` event is not in the
/// store) derives nothing.
fn fold_records(events: &[AuditEvent], mut known: HashMap<RequestId, Entry>) -> Vec<Entry> {
    let mut changed = BTreeSet::new();
    let mut orphans = 0u64;
    for ev in events {
        let Some(id) = ev.request_id else { continue };
        match fold(known.get(&id).cloned(), ev) {
            Ok(entry) => {
                known.insert(id, entry);
                changed.insert(id);
            }
            Err(_) => orphans += 1,
        }
    }
    if orphans > 0 {
        tracing::warn!(
            events = orphans,
            "audit import: events of requests whose `received` event is not in the imported \
             chain derive no record"
        );
    }
    changed.iter().filter_map(|id| known.remove(id)).collect()
}

/// A dedup claim to write: `(request id, expires_at)`.
type Claim = (String, Option<DateTime<Utc>>);

/// Step 2: the claims the `received` events carry, by key (a later claim of
/// a key replaces an earlier one, as in a replay); expiring claims hold
/// until the event's time plus `ttl`, and those expired by `now` are left out.
fn claims(
    events: &[AuditEvent],
    ttl: chrono::Duration,
    now: DateTime<Utc>,
) -> BTreeMap<String, Claim> {
    let mut out = BTreeMap::new();
    for ev in events {
        let EventBody::Received { request } = &ev.body else {
            continue;
        };
        let Some(key) = &request.dedup_key else {
            continue;
        };
        let expires = if request.dedup_expires {
            let at = ev
                .time
                .checked_add_signed(ttl)
                .unwrap_or(DateTime::<Utc>::MAX_UTC);
            if at <= now {
                continue;
            }
            Some(at)
        } else {
            None
        };
        out.insert(key.clone(), (request.id.to_string(), expires));
    }
    out
}

/// Step 3: the events.
async fn write_events(
    tx: &Transaction<'_>,
    events: &[Stored],
    redact: &Redactor,
) -> Result<(), StoreError> {
    rows::insert_events(tx.client(), events)
        .await
        .map_err(|e| match e {
            WriteError::Data(d) => d,
            WriteError::Sql(e) => insert_err(redact, "inserting events", &e),
        })
}

/// Step 3: the records, whole (the columns a group commit writes).
async fn write_records(
    tx: &Transaction<'_>,
    records: &[Entry],
    redact: &Redactor,
) -> Result<(), StoreError> {
    rows::upsert_records(tx.client(), records)
        .await
        .map_err(|e| match e {
            WriteError::Data(d) => d,
            WriteError::Sql(e) => redact.io("writing request records", &e),
        })
}

/// Step 3: the claims (one per key: a key claimed again in the chain is the
/// later claim's).
async fn write_claims(
    tx: &Transaction<'_>,
    claims: &BTreeMap<String, Claim>,
    redact: &Redactor,
) -> Result<(), StoreError> {
    if claims.is_empty() {
        return Ok(());
    }
    let keys: Vec<&str> = claims.keys().map(String::as_str).collect();
    let ids: Vec<&str> = claims.values().map(|c| c.0.as_str()).collect();
    let expires: Vec<Option<DateTime<Utc>>> = claims.values().map(|c| c.1).collect();
    tx.execute(
        "INSERT INTO claims (key, request_id, expires_at)
         SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[])
         ON CONFLICT (key) DO UPDATE SET request_id = excluded.request_id,
             expires_at = excluded.expires_at",
        &[&keys, &ids, &expires],
    )
    .await
    .map_err(|e| redact.io("writing dedup claims", &e))?;
    Ok(())
}

/// An insert that failed: a seq already stored means the events overlap the
/// store (which the tip check rules out, unless the tables disagree with it).
fn insert_err(redact: &Redactor, what: &str, e: &tokio_postgres::Error) -> StoreError {
    let unique = e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION);
    if unique && !is_connection(e) {
        return StoreError::Corrupt(redact.clean(format!(
            "{what}: a record with one of these seqs is already stored, beyond the chain tip"
        )));
    }
    redact.io(what, e)
}

fn short(h: &str) -> &str {
    h.get(..12).unwrap_or(h)
}
