//! The writer's counters ([`SledStats`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// Counters of the writer thread since the store was opened, for benchmarks and
/// metrics: how well group commit is sharing writes and flushes, and where the
/// time goes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SledStats {
    /// Groups committed (one `apply_batch` each).
    pub groups: u64,
    /// Append calls answered.
    pub jobs: u64,
    /// Events appended.
    pub events: u64,
    /// sled keys written or removed (blocks, records, dedup claims, markers).
    pub keys: u64,
    /// Flushes done (`Db::flush`, then `fdatasync` of its files).
    pub flushes: u64,
    /// Nanoseconds spent building and applying batches (hashing, encoding, sled).
    pub apply_nanos: u64,
    /// Nanoseconds spent in `Db::flush` and the `fdatasync`s after it.
    pub flush_nanos: u64,
    /// Nanoseconds the indexer spent encoding and storing request records.
    pub index_nanos: u64,
}

impl SledStats {
    /// The counters accumulated between `earlier` and `self`.
    pub fn since(&self, earlier: &SledStats) -> SledStats {
        SledStats {
            groups: self.groups - earlier.groups,
            jobs: self.jobs - earlier.jobs,
            events: self.events - earlier.events,
            keys: self.keys - earlier.keys,
            flushes: self.flushes - earlier.flushes,
            apply_nanos: self.apply_nanos - earlier.apply_nanos,
            flush_nanos: self.flush_nanos - earlier.flush_nanos,
            index_nanos: self.index_nanos - earlier.index_nanos,
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) groups: AtomicU64,
    pub(crate) jobs: AtomicU64,
    pub(crate) events: AtomicU64,
    pub(crate) keys: AtomicU64,
    pub(crate) flushes: AtomicU64,
    pub(crate) apply_nanos: AtomicU64,
    pub(crate) flush_nanos: AtomicU64,
    pub(crate) index_nanos: AtomicU64,
}

impl Counters {
    pub(crate) fn snapshot(&self) -> SledStats {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        SledStats {
            groups: g(&self.groups),
            jobs: g(&self.jobs),
            events: g(&self.events),
            keys: g(&self.keys),
            flushes: g(&self.flushes),
            apply_nanos: g(&self.apply_nanos),
            flush_nanos: g(&self.flush_nanos),
            index_nanos: g(&self.index_nanos),
        }
    }
}

pub(crate) fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

pub(crate) fn nanos_since(t: Instant) -> u64 {
    u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX)
}
