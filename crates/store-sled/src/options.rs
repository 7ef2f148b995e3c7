//! Tuning of the sled store ([`SledOptions`]).

use std::time::Duration;

/// Tuning of the sled store.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SledOptions {
    /// Most events applied in one group.
    pub max_batch_events: usize,
    /// Most events in one stored block (a group is split into blocks of this size).
    pub block_events: usize,
    /// How long changed request records may stay in memory only (their events are
    /// stored and, if asked, durable; a crash replays them).
    pub index_interval: Duration,
    /// Store changed request records at the latest when this many are waiting.
    pub index_max_dirty: usize,
    /// sled page cache size in bytes.
    pub cache_capacity: u64,
    /// How often sled's own background thread runs. Besides an fsync (which the
    /// writer already does for every durable group), it is the only place sled
    /// 0.34 cleans its log: it moves the live pages out of mostly-dead segments
    /// so their space can be reused. Without it (`None`) the file only ever
    /// grows, even when retention removes old events.
    pub gc_interval: Option<Duration>,
}

impl Default for SledOptions {
    fn default() -> Self {
        SledOptions {
            max_batch_events: 8192,
            block_events: 128,
            index_interval: Duration::from_millis(50),
            index_max_dirty: 4096,
            cache_capacity: 64 << 20,
            gc_interval: Some(Duration::from_secs(1)),
        }
    }
}
