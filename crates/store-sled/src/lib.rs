//! # youops-store-sled
//!
//! The YouOps audit store on sled 0.34 (the crates.io release, 0.34.7): an
//! optional backend, kept for stores written by earlier versions and for
//! comparison. The default store is `youops-store`'s log store; `youops store
//! copy --from sled:PATH --to DIR` moves a sled store into it.
//!
//! **Durability.** sled's own flush (`Db::flush`) ends in `sync_file_range`,
//! which writes the dirty pages of its data file but flushes neither the
//! file's metadata nor the disk's write cache: an acknowledged append could
//! be lost in a power cut. So after every `Db::flush` this store calls
//! `fdatasync` ([`File::sync_data`](std::fs::File::sync_data)) on sled's data
//! file (`<dir>/db`) and on every blob file (`<dir>/blobs/<lsn>`, which sled
//! writes for values too large to go inline and never syncs), and `fsync`s
//! the directories whose entries changed since the last sync (a new blob, a
//! new snapshot `snap.<lsn>`, which sled renames into place without syncing
//! the directory). On open it syncs `conf` (which sled writes without a sync),
//! `db` and both directories, and the store directory's parent. Only then is
//! a durable append, or a flush, answered. A failed sync fails every later
//! durable append and flush until the store is reopened (it is never
//! retried: Linux may drop the pages of a failed `fdatasync` and report the
//! next one as successful). What sled does between two of these flushes
//! (moving live pages out of a segment and reusing it, on its own timer)
//! still relies on sled's own ordering of writes.
//!
//! One sled tree holds everything:
//!
//! | key | value |
//! |---|---|
//! | `b` + first seq (u64 BE) | a block: consecutive events, one JSON object per line |
//! | `s` + request id (16 B) | the request's record and the seqs of its events (JSON) |
//! | `a` + request id | empty: the request was not terminal when its record was stored |
//! | `d` + dedup key | request id (16 B) |
//! | `m:format` | `2` |
//! | `m:applied` | u64 BE: the `s`/`a` keys, and the `d` keys of claims the events carry, include every event up to this seq |
//!
//! **The chain is the log; records are derived.** A single writer thread owns the
//! chain tip. It takes every append waiting in its queue, hashes the events, and
//! stores them as a few blocks (at most [`SledOptions::block_events`] events each).
//! A group of one block is a plain insert; more blocks, or a dedup claim the events
//! do not carry themselves, go in one atomic batch (sled's batches take a global
//! guard that every reader waits for, so the common case avoids them). A claim a
//! `received` event carries (`Request::dedup_key`) is held in memory until it is
//! stored like a record, below. Buffered appends are answered at
//! once; if any append of the group asked for durability, one flush (and the
//! `fdatasync`s above) covers everything applied so far before the rest are
//! answered. When more appends are
//! already waiting, or a flush is in progress, a flusher thread does that fsync, so
//! the next group is hashed and applied while the last one is being flushed; when
//! nothing waits, the writer fsyncs itself, which saves the waiting callers a
//! thread hand-off. Concurrent requests therefore share both the sled writes and
//! the flushes.
//!
//! Request records are folded from the events in memory. An indexer thread stores
//! the changed ones (`s`, `a`) and the held claims (`d`), key by key, then
//! `m:applied`, at most every
//! [`SledOptions::index_interval`] (and on `flush`, when idle, and on close), so a
//! request whose lifecycle fits in one interval costs one record write instead of
//! one per event. Until then readers see the records in memory. After a crash, the
//! events after `m:applied` are replayed on open to rebuild the records they changed
//! and the claims they carry (skipping events a stored record already holds) — the
//! events are the durable truth; nothing acknowledged depends on a record write.

mod archive;
mod disk;
mod encoding;
mod flusher;
mod indexer;
mod open;
mod options;
mod reads;
mod records;
mod recover;
mod state;
mod stats;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;

use youops_core::audit::StoreError;

pub use crate::options::SledOptions;
pub use crate::stats::SledStats;

use crate::disk::Disk;
use crate::state::{lock, Shared};
use crate::stats::Counters;
use crate::writer::Msg;

/// See [`SledStore::kill_switch`].
#[cfg(any(test, feature = "test-util"))]
#[derive(Debug, Clone)]
pub struct KillSwitch(std::sync::Weak<Inner>);

#[cfg(any(test, feature = "test-util"))]
impl KillSwitch {
    /// Kill the store if it is still open (see [`SledStore::kill`]).
    pub fn kill(self) {
        if let Some(inner) = self.0.upgrade() {
            SledStore { inner }.kill();
        }
    }
}

/// The sled-backed [`AuditStore`](youops_core::audit::AuditStore).
#[derive(Debug, Clone)]
pub struct SledStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    db: Disk,
    tree: sled::Tree,
    path: PathBuf,
    counters: Arc<Counters>,
    shared: Arc<Shared>,
    tx: Mutex<Option<mpsc::Sender<Msg>>>,
    writer: Mutex<Option<thread::JoinHandle<()>>>,
    /// One archive at a time (its recovery reads what another would be writing).
    archiving: tokio::sync::Mutex<()>,
    /// Stopped as a killed process would be: no last flush on close.
    killed: AtomicBool,
}

impl Drop for Inner {
    fn drop(&mut self) {
        lock(&self.tx).take();
        if let Some(h) = lock(&self.writer).take() {
            let _ = h.join();
        }
        if self.killed.load(Ordering::Acquire) {
            return;
        }
        if let Err(e) = self.db.flush() {
            tracing::error!(error = %e, "audit store: the last flush on close failed");
        }
    }
}

impl SledStore {
    /// Open (or create) the store at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::open_with(path, SledOptions::default())
    }

    /// Open with options.
    pub fn open_with(path: impl AsRef<Path>, opts: SledOptions) -> Result<Self, StoreError> {
        open::open(path.as_ref().to_path_buf(), opts)
    }

    /// Where the store lives.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Writer counters since the store was opened.
    pub fn stats(&self) -> SledStats {
        self.inner.counters.snapshot()
    }

    /// Stop the store as a killed process would: its writer stops at once,
    /// with no last flush and without storing the request records it holds
    /// (the next open rebuilds them from the events). sled's own `Db` still
    /// flushes its log when its last handle goes: a real kill would lose the
    /// appends nobody flushed, this does not. Other clones then get
    /// [`StoreError::Closed`]. For crash tests.
    #[cfg(any(test, feature = "test-util"))]
    pub fn kill(self) {
        self.inner.killed.store(true, Ordering::Release);
        let _ = self.send(Msg::Kill);
    }

    /// A handle that can [`kill`](Self::kill) the store later without keeping
    /// it open. For crash tests.
    #[cfg(any(test, feature = "test-util"))]
    pub fn kill_switch(&self) -> KillSwitch {
        KillSwitch(Arc::downgrade(&self.inner))
    }

    fn send(&self, msg: Msg) -> Result<(), StoreError> {
        lock(&self.inner.tx)
            .as_ref()
            .ok_or(StoreError::Closed)?
            .send(msg)
            .map_err(|_| StoreError::Closed)
    }
}

#[cfg(test)]
mod tests;
