//! The indexer thread: stores changed request records and derived claims.

use std::collections::{HashMap, HashSet};
use std::sync::{mpsc, Arc};
use std::time::Instant;

use youops_core::audit::StoreError;
use youops_core::model::RequestId;

use crate::encoding::{dkey, APPLIED_KEY};
use crate::flusher::Durable;
use crate::records::{put_record, RecordError, RecordSink, Stored};
use crate::state::{lock, Shared};
use crate::stats::{add, nanos_since, Counters};

/// Changed records for the indexer to store.
pub(crate) struct IndexJob {
    pub(crate) records: Vec<(RequestId, Stored)>,
    /// Dedup claims to store (`d` keys).
    pub(crate) claims: Vec<(String, RequestId)>,
    /// The records include every event up to this seq.
    pub(crate) applied: u64,
    /// `flush` calls to answer (through the flusher) once the records are stored.
    pub(crate) then: Durable,
}

/// Stores request records for the writer, so that encoding them and writing
/// them to sled does not hold up the chain.
pub(crate) struct Indexer {
    pub(crate) tree: sled::Tree,
    pub(crate) shared: Arc<Shared>,
    pub(crate) counters: Arc<Counters>,
    /// Requests whose `a` key exists.
    pub(crate) active: HashSet<RequestId>,
}

impl Indexer {
    pub(crate) fn run(mut self, rx: mpsc::Receiver<IndexJob>, flush: impl Fn(Durable)) {
        while let Ok(first) = rx.recv() {
            // Take every job waiting: a later copy of a record replaces an earlier one.
            let mut applied = first.applied;
            let mut then = vec![first.then];
            let mut records: HashMap<RequestId, Stored> = first.records.into_iter().collect();
            let mut claims = first.claims;
            while let Ok(more) = rx.try_recv() {
                applied = applied.max(more.applied);
                then.push(more.then);
                records.extend(more.records);
                claims.extend(more.claims);
            }
            let stored = self.store(&records, &claims, applied);
            for d in then {
                if d.is_empty() {
                    continue;
                }
                match &stored {
                    Ok(()) => flush(d),
                    Err(e) => d.answer(&Err(StoreError::Io(e.to_string()))),
                }
            }
        }
    }

    pub(crate) fn store(
        &mut self,
        records: &HashMap<RequestId, Stored>,
        claims: &[(String, RequestId)],
        applied: u64,
    ) -> Result<(), StoreError> {
        // Key by key, not in one `apply_batch`: a batch takes sled's global
        // write guard, which every reader, the writer's next group and every
        // flush wait for, and a batch of ~50 records sometimes held it for
        // 10-15 ms (measured: the HTTP benchmark's latency stalls). Atomicity
        // is not needed here: `m:applied` moves only after every record is in,
        // sled's log is recovered as a prefix, and `recover` skips events a
        // record already holds.
        let started = Instant::now();
        if let Some(newest) = records.keys().max() {
            let mut max = lock(&self.shared.stored_max);
            *max = (*max).max(Some(*newest));
        }
        let mut tree = &self.tree;
        let mut keys = 0u64;
        let mut complete = true;
        let mut result = Ok(());
        for (key, id) in claims {
            if let Err(e) = tree.put(&dkey(key), id.0.to_bytes().to_vec()) {
                result = Err(e);
                break;
            }
            keys += 1;
        }
        for (id, stored) in records.iter().filter(|_| result.is_ok()) {
            match put_record(&mut tree, &mut self.active, *id, stored) {
                Ok(n) => keys += n,
                Err(RecordError::Encode(e)) => {
                    // Not marked applied: the next open rebuilds it from its events.
                    tracing::error!(error = %e, request = %id, "audit store: cannot encode a request record");
                    complete = false;
                }
                Err(RecordError::Store(e)) => {
                    result = Err(e);
                    break;
                }
            }
        }
        if complete && result.is_ok() {
            result = tree.put(APPLIED_KEY, applied.to_be_bytes().to_vec());
            keys += 1;
        }
        add(&self.counters.index_nanos, nanos_since(started));
        if let Err(e) = &result {
            // The writer keeps serving these records from memory; the next open
            // rebuilds them from their events.
            tracing::error!(error = %e, "audit store: request records not stored");
            return result;
        }
        add(&self.counters.keys, keys);
        // Terminal records are in the tree now: readers find them there, unless
        // the writer changed them again meanwhile.
        let mut held = lock(&self.shared.records);
        for (id, stored) in records {
            if stored.record.state.is_terminal()
                && held
                    .get(id)
                    .is_some_and(|h| h.seqs.len() == stored.seqs.len())
            {
                held.remove(id);
            }
        }
        drop(held);
        // The claims are in the tree now too.
        let mut pending = lock(&self.shared.claims);
        for (key, id) in claims {
            if pending.get(key) == Some(id) {
                pending.remove(key);
            }
        }
        Ok(())
    }
}
