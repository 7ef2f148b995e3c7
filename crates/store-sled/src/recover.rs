//! Rebuilding the records and claims of events after `m:applied` on open.

use std::collections::{HashMap, HashSet};

use youops_core::audit::StoreError;
use youops_core::model::RequestId;

use crate::disk::Disk;
use crate::encoding::{
    bkey, decode, decode_line, dkey, idkey, io, lines, seq_of_bkey, APPLIED_KEY,
};
use crate::records::{claim_in, fold, put_record, RecordError, Stored};
use crate::stats::{add, Counters};

/// Rebuild the records changed by events after `m:applied` (written by a process
/// that stopped before storing them).
pub(crate) fn recover(
    db: &Disk,
    tree: &sled::Tree,
    tip: u64,
    active: &mut HashSet<RequestId>,
    counters: &Counters,
) -> Result<(), StoreError> {
    let applied = read_applied(tree)?;
    if applied >= tip {
        return Ok(());
    }
    let Rebuilt {
        touched,
        claims,
        replayed,
    } = replay(tree, applied)?;
    store_rebuilt(db, tree, tip, active, counters, &touched, &claims)?;
    tracing::info!(
        events = replayed,
        requests = touched.len(),
        "audit store: rebuilt request records from events after an unclean stop"
    );
    Ok(())
}

/// `m:applied`: every event up to it is in the stored records (0 if unset).
fn read_applied(tree: &sled::Tree) -> Result<u64, StoreError> {
    Ok(match tree.get(APPLIED_KEY).map_err(io)? {
        Some(v) => u64::from_be_bytes(
            v.as_ref()
                .try_into()
                .map_err(|_| StoreError::Corrupt("m:applied of wrong length".into()))?,
        ),
        None => 0,
    })
}

/// What the events after `m:applied` rebuild.
struct Rebuilt {
    /// The records they change.
    touched: HashMap<RequestId, Stored>,
    /// The claims their `received` events carry.
    claims: Vec<(String, RequestId)>,
    /// Events folded into a record.
    replayed: u64,
}

/// Fold the events after `applied` into the records they change.
fn replay(tree: &sled::Tree, applied: u64) -> Result<Rebuilt, StoreError> {
    let started = tree
        .range(bkey(0)..=bkey(applied + 1))
        .next_back()
        .transpose()
        .map_err(io)?
        .map(|(k, _)| seq_of_bkey(&k))
        .transpose()?
        .unwrap_or(0);
    let mut touched: HashMap<RequestId, Stored> = HashMap::new();
    let mut claims: Vec<(String, RequestId)> = Vec::new();
    let mut replayed = 0u64;
    for kv in tree.range(bkey(started)..bkey(u64::MAX)) {
        let (k, v) = kv.map_err(io)?;
        let start = seq_of_bkey(&k)?;
        for (i, line) in lines(&v).enumerate() {
            let ev = match decode_line(start, i, line) {
                Ok(ev) => ev,
                Err(e) => {
                    tracing::warn!(error = %e, "audit store: skipping an event that does not decode while rebuilding records (run `youops audit verify`)");
                    continue;
                }
            };
            let Some(id) = ev.request_id.filter(|_| ev.seq > applied) else {
                continue;
            };
            // Claims carried by `received` events are stored by the indexer
            // before `m:applied` moves past them: put them back (again, if the
            // indexer got that far).
            if let Some((key, owner)) = claim_in(&ev) {
                claims.push((key.to_string(), owner));
            }
            let current = match touched.remove(&id) {
                Some(s) => Some(s),
                None => match tree.get(idkey(b's', id)).map_err(io)? {
                    Some(v) => Some(decode::<Stored>("request record", &v)?),
                    None => None,
                },
            };
            // The indexer stores records one key at a time before it moves
            // `m:applied`, so a record may already hold events after it.
            let current = match current {
                Some(held) if held.holds(ev.seq) => {
                    touched.insert(id, held);
                    continue;
                }
                other => other,
            };
            match fold(current, &ev) {
                Ok(stored) => {
                    touched.insert(id, stored);
                    replayed += 1;
                }
                Err(e) => {
                    tracing::warn!(error = %e, seq = ev.seq, "audit store: event skipped while rebuilding records");
                }
            }
        }
    }
    Ok(Rebuilt {
        touched,
        claims,
        replayed,
    })
}

/// Store the rebuilt records and claims, and `m:applied` at `tip`, in one
/// batch, then flush.
fn store_rebuilt(
    db: &Disk,
    tree: &sled::Tree,
    tip: u64,
    active: &mut HashSet<RequestId>,
    counters: &Counters,
    touched: &HashMap<RequestId, Stored>,
    claims: &[(String, RequestId)],
) -> Result<(), StoreError> {
    let mut batch = sled::Batch::default();
    let mut keys = 1;
    for (key, owner) in claims {
        batch.insert(dkey(key), &owner.0.to_bytes()[..]);
        keys += 1;
    }
    for (id, stored) in touched {
        keys += put_record(&mut batch, active, *id, stored).map_err(|e| match e {
            RecordError::Encode(e) => {
                StoreError::Io(format!("cannot encode request record {id}: {e}"))
            }
            RecordError::Store(e) => e,
        })?;
    }
    batch.insert(APPLIED_KEY, &tip.to_be_bytes()[..]);
    tree.apply_batch(batch).map_err(io)?;
    db.flush()?;
    add(&counters.keys, keys);
    Ok(())
}
