//! State shared by the writer, the indexer and the readers.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};

use youops_core::model::RequestId;

use crate::records::Stored;

/// State shared by the writer and the readers.
#[derive(Debug)]
pub(crate) struct Shared {
    /// Records of requests changed since they were last stored, and of every
    /// request not terminal. Readers look here before the tree.
    pub(crate) records: Mutex<Ids<Stored>>,
    /// Dedup claims in the chain whose `d` keys the indexer has not stored yet
    /// (see [`Group::derived`](crate::writer::Group::derived)). Readers and the
    /// writer look here before the tree.
    pub(crate) claims: Mutex<HashMap<String, RequestId>>,
    /// Seq and hash of the last event applied.
    pub(crate) tip: Mutex<(u64, String)>,
    /// No stored record (`s` key) has an id above this one: the largest at
    /// open, raised by the indexer before it stores more. A `received` event for
    /// a newer id (ids sort by creation time; the indexer runs behind the
    /// writer) cannot be for a stored request, so the writer skips that lookup.
    pub(crate) stored_max: Mutex<Option<RequestId>>,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A fast hasher for request ids. They are ULIDs the executor makes (80 random
/// bits), never chosen by a client, so SipHash's flood resistance buys nothing on
/// the writer's hot path. (Dedup keys, which clients choose, keep SipHash.)
#[derive(Default, Clone, Copy)]
pub(crate) struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(word))
                .wrapping_mul(0x517c_c1b7_2722_0a95);
        }
    }
}

pub(crate) type Ids<V> = HashMap<RequestId, V, std::hash::BuildHasherDefault<IdHasher>>;
pub(crate) type IdSet = HashSet<RequestId, std::hash::BuildHasherDefault<IdHasher>>;
