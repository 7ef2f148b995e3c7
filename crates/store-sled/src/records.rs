//! Request records: folded from their events, and written to the tree.

use std::collections::HashSet;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use youops_core::audit::StoreError;
use youops_core::model::{AuditEvent, EventBody, RequestId, RequestRecord};

use crate::encoding::{idkey, io};

/// A request record as stored: the record and where its events are.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Stored {
    /// Sequence numbers of the request's events, in order.
    pub(crate) seqs: Vec<u64>,
    pub(crate) record: RequestRecord,
}

impl Stored {
    /// Whether the record already includes the event `seq` (its events are
    /// folded in seq order).
    pub(crate) fn holds(&self, seq: u64) -> bool {
        self.seqs.last().is_some_and(|last| *last >= seq)
    }
}

/// Fold one event into the record of its request.
pub(crate) fn fold(current: Option<Stored>, ev: &AuditEvent) -> Result<Stored, StoreError> {
    let id = ev.request_id.map(|i| i.to_string()).unwrap_or_default();
    match (&ev.body, current) {
        (EventBody::Received { request }, None) => Ok(Stored {
            seqs: vec![ev.seq],
            record: RequestRecord::new(Arc::clone(request), ev),
        }),
        (EventBody::Received { .. }, Some(_)) => {
            Err(StoreError::Io(format!("request {id} was already received")))
        }
        (_, Some(mut s)) => {
            s.record.apply(ev);
            s.seqs.push(ev.seq);
            Ok(s)
        }
        (_, None) => Err(StoreError::Io(format!(
            "event for unknown request {id} (its `received` event must come first)"
        ))),
    }
}

/// The dedup claim a `received` event carries: its request's key and id.
pub(crate) fn claim_in(ev: &AuditEvent) -> Option<(&str, RequestId)> {
    match &ev.body {
        EventBody::Received { request } => request.dedup_key.as_deref().map(|k| (k, request.id)),
        _ => None,
    }
}

/// Put a request's record into `sink`, with its `a` key when that changes
/// (`active` holds the requests whose `a` key exists); the keys written.
pub(crate) fn put_record(
    sink: &mut impl RecordSink,
    active: &mut HashSet<RequestId>,
    id: RequestId,
    stored: &Stored,
) -> Result<u64, RecordError> {
    let value = serde_json::to_vec(stored).map_err(RecordError::Encode)?;
    sink.put(&idkey(b's', id), value)?;
    let terminal = stored.record.state.is_terminal();
    if !terminal && !active.contains(&id) {
        sink.put(&idkey(b'a', id), Vec::new())?;
        active.insert(id);
        Ok(2)
    } else if terminal && active.contains(&id) {
        sink.remove(&idkey(b'a', id))?;
        active.remove(&id);
        Ok(2)
    } else {
        Ok(1)
    }
}

/// Why a record was not put.
pub(crate) enum RecordError {
    /// It does not encode: not stored, the next open rebuilds it from its events.
    Encode(serde_json::Error),
    /// sled failed.
    Store(StoreError),
}

impl From<StoreError> for RecordError {
    fn from(e: StoreError) -> Self {
        RecordError::Store(e)
    }
}

impl std::fmt::Display for RecordError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RecordError::Encode(e) => write!(f, "cannot encode: {e}"),
            RecordError::Store(e) => e.fmt(f),
        }
    }
}

/// Where record writes go: one atomic batch (recovery), or the tree key by key
/// (the indexer, which must not hold sled's global batch guard: see
/// [`Indexer::store`](crate::indexer::Indexer::store)).
pub(crate) trait RecordSink {
    fn put(&mut self, key: &[u8], value: Vec<u8>) -> Result<(), StoreError>;
    fn remove(&mut self, key: &[u8]) -> Result<(), StoreError>;
}

impl RecordSink for sled::Batch {
    fn put(&mut self, key: &[u8], value: Vec<u8>) -> Result<(), StoreError> {
        self.insert(key, value);
        Ok(())
    }

    fn remove(&mut self, key: &[u8]) -> Result<(), StoreError> {
        sled::Batch::remove(self, key);
        Ok(())
    }
}

impl RecordSink for &sled::Tree {
    fn put(&mut self, key: &[u8], value: Vec<u8>) -> Result<(), StoreError> {
        self.insert(key, value).map(drop).map_err(io)
    }

    fn remove(&mut self, key: &[u8]) -> Result<(), StoreError> {
        sled::Tree::remove(self, key).map(drop).map_err(io)
    }
}
