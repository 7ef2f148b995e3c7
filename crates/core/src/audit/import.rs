//! Events copied from another store's chain (`youops store copy`): every
//! store that imports checks them the same way before it writes them.

use super::{canonical_bytes_encoded, chain_hash, StoreError};
use crate::model::AuditEvent;

/// Check that `events` are the next part of a chain, in order: consecutive
/// seqs from the first one's, each `prev_hash` the hash of the one before
/// (the first one's is taken as given: the store checks it against its tip),
/// and each hash the hash of the event's own content. Returns each event's
/// canonical bytes (what its hash covers, for the store to keep), or a
/// [`StoreError::Corrupt`] naming the first record that does not chain.
pub fn check_import(events: &[AuditEvent]) -> Result<Vec<Vec<u8>>, StoreError> {
    let Some(first) = events.first() else {
        return Ok(Vec::new());
    };
    let mut out = Vec::with_capacity(events.len());
    let mut prev = first.prev_hash.clone();
    for (next, ev) in (first.seq..).zip(events) {
        if ev.seq != next {
            return Err(StoreError::Corrupt(format!(
                "cannot import record #{} where #{next} was expected",
                ev.seq
            )));
        }
        if ev.prev_hash != prev {
            return Err(StoreError::Corrupt(format!(
                "cannot import record #{}: its prev_hash {} is not the hash {} of the record \
                 before",
                ev.seq,
                short(&ev.prev_hash),
                short(&prev)
            )));
        }
        let body = serde_json::to_vec(&ev.body)
            .map_err(|e| StoreError::Io(format!("cannot encode record #{}: {e}", ev.seq)))?;
        let canonical = canonical_bytes_encoded(ev.seq, &ev.time, &ev.request_id, &body);
        let hash = chain_hash(&prev, &canonical);
        if hash != ev.hash {
            return Err(StoreError::Corrupt(format!(
                "cannot import record #{}: its content does not match its hash (stored {}, \
                 computed {})",
                ev.seq,
                short(&ev.hash),
                short(&hash)
            )));
        }
        out.push(canonical);
        prev = hash;
    }
    Ok(out)
}

fn short(h: &str) -> &str {
    h.get(..12).unwrap_or(h)
}
