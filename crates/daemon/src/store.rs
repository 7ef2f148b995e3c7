//! The daemon's audit store: the embedded log store (`youops-store`) at
//! `[store] path`, with its options from `[store]`. `youops serve` and the
//! local CLI open it the same way.

use std::sync::Arc;

use youops_core::audit::{AuditStore, StoreError};
use youops_core::config::Config;
use youops_store::{LogOptions, LogStore};

/// redb's page cache of the store's indexes. Requests are read mostly while
/// they are recent (and then from memory), so a small cache serves a daemon;
/// redb's default (64 MiB) would be most of its memory.
const INDEX_CACHE_BYTES: usize = 16 << 20;

/// The smallest `[store] segment_size` accepted (small segments suit tests;
/// a busy daemon wants the default).
pub const MIN_SEGMENT_BYTES: u64 = 4 << 10;

/// The log store's options from `[store]`.
pub fn options(cfg: &Config) -> LogOptions {
    let mut o = LogOptions::default();
    o.segment_bytes = cfg.store.segment_size.0.max(MIN_SEGMENT_BYTES);
    o.dedup_ttl = cfg.store.dedup_ttl.0;
    o.index_cache_bytes = INDEX_CACHE_BYTES;
    o
}

/// Problems with `[store]` that the config's types do not catch.
pub fn check(cfg: &Config) -> Vec<String> {
    let mut out = Vec::new();
    if cfg.store.segment_size.0 < MIN_SEGMENT_BYTES {
        out.push(format!(
            "store.segment_size: {} bytes is below the smallest segment, 4KiB",
            cfg.store.segment_size.0
        ));
    }
    if cfg.store.dedup_ttl.0 < std::time::Duration::from_secs(60) {
        out.push(format!(
            "store.dedup_ttl: {} is under a minute; senders redeliver for days (GitHub for 3)",
            cfg.store.dedup_ttl
        ));
    }
    out
}

/// Open the store of `cfg`, creating its directory.
pub fn open(cfg: &Config) -> Result<Arc<dyn AuditStore>, StoreError> {
    let path = cfg.store_path();
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| StoreError::Io(format!("creating {}: {e}", parent.display())))?;
    }
    Ok(Arc::new(LogStore::open(&path, options(cfg))?))
}
