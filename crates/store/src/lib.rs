//! # youops-store
//!
//! The YouOps audit chain as a segmented, append-only log of JSON lines that is
//! `fdatasync`ed before an append is acknowledged, with request records, the
//! active set, dedup claims and read positions derived from it into redb.
//! [`LogStore`] implements [`AuditStore`].
//!
//! ```
//! use youops_core::audit::{AppendOptions, AuditStore};
//! use youops_core::model::{EventBody, NewEvent};
//! use youops_store::{LogOptions, LogStore};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let store = LogStore::open(dir.path().join("store"), LogOptions::default())?;
//! let notice = NewEvent::global(EventBody::Notice {
//!     source: "doc".into(),
//!     kind: "hello".into(),
//!     message: "on disk before this returns".into(),
//!     data: serde_json::Value::Null,
//! });
//! let stored = store.append(vec![notice], AppendOptions::durable()).await?;
//! assert_eq!(stored[0].seq, 1);
//! assert!(store.verify().await?.ok());
//! # Ok(()) }
//! ```
//!
//! ## On-disk layout
//!
//! ```text
//! <store dir>/
//!   LOCK                                     flock()ed while a process has the store open
//!   index.redb                               the derived indexes (redb)
//!   log/
//!     audit-000000000001-000000052113.jsonl  sealed segments: events #1..=#52113
//!     audit-000000052114-000000104530.jsonl
//!     open-000000104531.jsonl                the open segment, appended to
//!     POISONED                               only after a failed write or sync (see Recovery)
//! <archive dir>/                             given to `archive`
//!     audit-…-….jsonl                        sealed segments moved here whole
//! ```
//!
//! Every line of a segment is one event, exactly as `serde_json` encodes an
//! [`AuditEvent`] (its canonical bytes, then
//! `prev_hash` and `hash`): the bytes the sled store writes into its archive
//! files. A sealed segment is named
//! [`archive_file_name`](youops_core::audit::archive_file_name)`(first, last)`,
//! so a sealed segment *is* an archive file: [`AuditStore::verify`] checks
//! segments with [`ChainVerifier::check_json_lines`], the very code
//! [`verify_with_archives`](youops_core::audit::verify_with_archives) checks
//! archives with. The open segment is `open-<first>.jsonl`; it is sealed
//! (synced, renamed, directory synced) once it holds
//! [`LogOptions::segment_bytes`] (64 MiB by default), or when `archive` needs
//! all of it.
//!
//! ## Durability
//!
//! One writer thread owns the chain tip and the open segment. It takes every
//! append waiting in its queue as one group: orders them (seq, `prev_hash`,
//! hash), checks dedup keys and records, writes the group's lines with one
//! `write`, then, if any append of the group is durable
//! ([`AppendOptions::durable`]) or a [`flush`](AuditStore::flush) waits, calls
//! `fdatasync` once ([`File::sync_data`](std::fs::File::sync_data)) and only
//! then answers them. While it syncs, new appends queue up and form the next
//! group, so concurrent requests share one sync. `fdatasync` writes the data
//! and the file size, which is all a reader of the file needs; creating a
//! segment, renaming one when it is sealed and moving one into the archive
//! are each followed by an `fsync` of the directory, so the names are durable
//! too. Buffered appends ([`AppendOptions::buffered`]) are answered once
//! written (ordered, in the page cache), and are durable with the next sync:
//! the next durable append or flush, or at the latest
//! [`LogOptions::sync_interval`] later.
//!
//! An append is therefore acknowledged durable only when its bytes, and every
//! byte before them in the chain, were covered by a successful `fdatasync`
//! (sled's flush, by contrast, is `sync_file_range`, which syncs no metadata
//! and no disk cache). A failed `fdatasync`, or a write that fails (a full
//! disk: `ENOSPC`), fails every caller waiting on it with
//! [`StoreError::Io`] and stops appending for good: the store is *poisoned*,
//! and every later append or flush fails at once. It is never retried: Linux
//! may drop the dirty pages of a failed `fdatasync` and report the next one
//! as successful, so a retry could acknowledge data that is not on disk. The
//! writer cuts the open segment back to its last synced length and records
//! that length in `log/POISONED`; reopening the store (a new process) cuts
//! back to it again if needed and continues from there. (Until then, reads of
//! the poisoned store still answer from what it holds in memory, which may
//! include the appends that failed.)
//!
//! ## Recovery
//!
//! On open, after taking the lock: the segment `log/POISONED` names is cut back
//! to the length it records; the segments' names must form one gapless
//! sequence with at most one open segment, the newest; every line is checked
//! (its shape, its hash over its own bytes, its sequence number and its link to
//! the line before: the hash is computed from the line's bytes without decoding
//! it), or with [`LogOptions::verify_on_open`] off, only the first and last
//! lines of sealed segments the index already covers. Only the tail of the
//! open segment can hold bytes that were never synced (sealed segments were
//! synced before they were renamed), so recovery cuts there, and only there:
//! at the first line that does not check, or at an incomplete last line,
//! provided that nothing after it is a whole event and that the index does not
//! prove it durable (events up to the index's applied seq were synced before
//! they were indexed). Anything else — a bad line followed by good ones, damage
//! in a sealed segment, a gap between segments, a log shorter than its index —
//! refuses to open with [`StoreError::Corrupt`] naming the record (`#seq`) and
//! where it is (`file:line`), and changes nothing. Recovery never cuts what
//! was acknowledged durable. (A damaged last line of the open segment that the
//! index does not cover cannot be told from a torn write, and is cut.)
//!
//! The open segment is then synced once (after a kill its bytes may be in the
//! page cache only), and the indexes are brought up to date by replaying the
//! events after the index's last applied seq.
//!
//! ## Indexes
//!
//! `index.redb` holds, as plain bytes, no copy of what the log says: per
//! request, its state and the `(seq, segment offset)` of each of its events
//! (a few bytes of varints; the record is folded from those events with
//! [`RequestRecord::apply`](youops_core::model::RequestRecord::apply) when it
//! is read), the active (not terminal) set, dedup claims, the offset of one
//! live event in 64 (a read of event `seq` starts at the nearest one before it
//! in its segment, or at the segment's start: segment names carry their
//! ranges), and the last applied seq. That keeps the index at about 5 % of the
//! log (22 bytes per event beside the log's 423 in the core benchmark). An
//! //! indexer thread writes them lazily, of synced events only: every
//! [`LogOptions::index_interval`] or when [`LogOptions::index_max_pending`]
//! events wait, in one redb write transaction, durable (redb's
//! `Durability::Immediate`) at most every
//! [`LogOptions::index_sync_interval`] and on `flush` and close — a crash that
//! loses index writes loses nothing, since they are replayed from the log.
//! Until indexed, records, claims and positions are read from the writer's
//! memory, so a request is readable, and its dedup key refused to a second
//! append, as soon as its append is answered.
//!
//! ## Dedup claims
//!
//! A claim is made by an append with [`AppendOptions::dedup_key`] and belongs to
//! the request of its first event. It holds for good unless the append says
//! it expires ([`AppendOptions::dedup_expires`]: a delivery id, which senders
//! redeliver for days at most). Expiring claims live in time buckets of
//! [`LogOptions::dedup_bucket`] (an hour, or a 24th of the TTL if that is
//! shorter) by the time of that event, and a bucket expires whole
//! [`LogOptions::dedup_ttl`] (7 days) after it ends: such a claim holds for at
//! least the TTL and at most the TTL plus a bucket, then
//! [`find_dedup`](AuditStore::find_dedup) ignores it and the key can be
//! claimed again; the indexer removes expired buckets every minute (and on
//! open). Claims that never expire are kept as compactly, outside any bucket.
//!
//! A claim that the request's `received` event carries (`Request::dedup_key`
//! and `Request::dedup_expires` as the append's, as the executor always
//! writes them) is rebuilt from the log like a record; such an event claims its
//! key (unless it is taken) even when its append did not ask, as a replay of
//! the log would. A claim its events do not carry cannot be rebuilt, so it is
//! stored durably in the index (one more redb commit) before its events are
//! written, and dropped on the next open if they never reached the log.
//!
//! ## Retention
//!
//! [`archive(through, dir)`](AuditStore::archive) works on whole segments:
//! it seals the open segment if every event in it is at or before `through`,
//! picks the sealed segments whose last event is at or before `through`, and
//! moves them into `dir` — a hard link and an unlink (a rename that never
//! replaces a file) on the same file system, else a copy to a temporary name,
//! fsynced and renamed, then the unlink — after appending a checkpoint event
//! (the same body as the sled store's: the last archived seq and hash, and the
//! name of the last segment moved). After `archive(through)` the log holds the
//! events after `through` plus at most one segment's worth before it, and the
//! index only what those events need (positions of archived events are
//! dropped): disk use is bounded by construction by what the caller retains
//! plus a segment. `retain_events` and `audit archive --through` therefore
//! work at segment granularity: fewer events than asked may go, never more,
//! and nothing goes until a segment is sealed (64 MiB by default) unless
//! `through` reaches the tip.
//!
//! Events of requests still in flight may now live in an archive:
//! [`request_events`](AuditStore::request_events) reads them there (the index
//! remembers where each archived segment went); records of finished requests
//! whose events are all archived are removed, as the sled store does. A move
//! is crash-safe: the archive's intent (its segments and directory) is stored
//! durably first, then the checkpoint is appended durably, then the segments
//! move one by one, oldest first, then the index drops their positions, the
//! removed records and the intent. A crash before the checkpoint is durable
//! leaves the segments in the log (the next open forgets the intent); after
//! it, the next open (or archive) finishes the move, accepting a segment found
//! in both places when the bytes are the same. At every point in between,
//! [`verify_with_archives`](youops_core::audit::verify_with_archives) over the
//! archive directory and the store verifies. (`verify` of the store alone may
//! report, while the segments of one archive are moving, that the live log
//! starts at a record no checkpoint accounts for yet: the checkpoint names the
//! last of them.) [`events`](AuditStore::events) serves the live log; a call
//! that a concurrent archive overtakes finishes reading from the archive, so
//! it never returns a gap.
//!
//! The index is derived from the log, with two exceptions: claims that
//! appends made without their events carrying the key, and claims, records
//! and positions of archived events. Moving `index.redb` away rebuilds the
//! rest from the live log.
//!
//! ## One writer, one process
//!
//! The store directory is locked with `flock(2)` on `LOCK` (through
//! `std::fs::File::try_lock`, which is `flock(LOCK_EX | LOCK_NB)` on Linux; no
//! extra crate), held until the store is closed; a second open, in this or
//! another process, fails with [`StoreError::Locked`]. A directory that holds a
//! sled store (`conf`, `db`, `blobs/`, `snap.*`) is refused: copy it into a new
//! store with `youops store copy`.
//!
//! ## The file layer
//!
//! Every operation on the log goes through [`fs::LogFs`]. [`fs::StdFs`] is
//! `std::fs`; with the `test-util` feature, `fs::SimFs` models power cuts,
//! failed syncs and full disks, and `fs::FaultFs` fails operations from the
//! n-th on (the store's tests drive the log through them).

mod archive;
mod format;
pub mod fs;
mod index;
mod indexer;
mod log;
mod open;
mod state;
mod writer;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::Duration;

use async_trait::async_trait;
use youops_core::audit::{
    AppendOptions, ArchiveReport, AuditStore, ChainVerifier, StoreError, VerifyReport,
};
use youops_core::model::{AuditEvent, NewEvent, RequestFilter, RequestId, RequestRecord};

use crate::fs::{LogFs, StdFs};
use crate::log::{corrupt, io_err, Seg};
use crate::state::{lock, Shared};
use crate::writer::{Job, Msg};

/// Tuning of the log store.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct LogOptions {
    /// Seal the open segment once it holds this many bytes (64 MiB).
    pub segment_bytes: u64,
    /// Most events in one group commit (8192).
    pub max_batch_events: usize,
    /// Buffered appends are synced at the latest this long after they were
    /// written, when nothing else syncs them first (50 ms).
    pub sync_interval: Duration,
    /// How long records, claims and positions may wait in memory before the
    /// indexer stores them (50 ms).
    pub index_interval: Duration,
    /// Index at the latest when this many events wait (4096).
    pub index_max_pending: usize,
    /// How often index writes are made durable in redb (1 s); they always are
    /// on `flush` and close. The log is the truth: a crash replays what the
    /// index lost.
    pub index_sync_interval: Duration,
    /// redb's cache (64 MiB).
    pub index_cache_bytes: usize,
    /// How long an expiring dedup claim ([`AppendOptions::dedup_expires`])
    /// holds after its time bucket ends (7 days).
    pub dedup_ttl: Duration,
    /// The widest dedup claim bucket (1 hour); a bucket is also at most a
    /// 24th of `dedup_ttl`. Claims expire a bucket at a time.
    pub dedup_bucket: Duration,
    /// Check every line of every segment on open (on). Off, sealed segments
    /// the index covers are checked by their first and last lines only, which
    /// opens a large log faster; `verify` still checks every line.
    pub verify_on_open: bool,
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions {
            segment_bytes: 64 << 20,
            max_batch_events: 8192,
            sync_interval: Duration::from_millis(50),
            index_interval: Duration::from_millis(50),
            index_max_pending: 4096,
            index_sync_interval: Duration::from_secs(1),
            index_cache_bytes: 64 << 20,
            dedup_ttl: Duration::from_secs(7 * 24 * 3600),
            dedup_bucket: Duration::from_secs(3600),
            verify_on_open: true,
        }
    }
}

/// The log store: an [`AuditStore`] (see the [crate documentation](crate)).
///
/// Clones share the store; it closes (a last sync, the last index writes)
/// when the last clone is dropped.
#[derive(Debug, Clone)]
pub struct LogStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    path: PathBuf,
    shared: Arc<Shared>,
    tx: Mutex<Option<mpsc::Sender<Msg>>>,
    writer: Mutex<Option<thread::JoinHandle<()>>>,
    /// One archive at a time.
    archiving: tokio::sync::Mutex<()>,
    /// Dropped last: the lock is held until everything is closed.
    _lock: std::fs::File,
}

impl Drop for Inner {
    fn drop(&mut self) {
        lock(&self.tx).take();
        if let Some(h) = lock(&self.writer).take() {
            let _ = h.join();
        }
    }
}

impl LogStore {
    /// Open (or create) the store in directory `path`.
    pub fn open(path: impl AsRef<Path>, opts: LogOptions) -> Result<LogStore, StoreError> {
        Self::open_with_fs(path, opts, Arc::new(StdFs))
    }

    /// [`open`](Self::open), with the log's files behind `fs` (the lock file
    /// and the index are always real files in `path`).
    pub fn open_with_fs(
        path: impl AsRef<Path>,
        opts: LogOptions,
        fs: Arc<dyn LogFs>,
    ) -> Result<LogStore, StoreError> {
        open::open(path.as_ref().to_path_buf(), opts, fs)
    }

    /// Where the store lives.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Write events copied from another store's chain (`youops store copy`),
    /// keeping their sequence numbers, times, `prev_hash` and hash
    /// ([`append`](AuditStore::append) would number and hash them anew).
    ///
    /// Only into an empty store, or one whose tip is exactly the event before
    /// the first of `events`: an empty store takes a chain that starts at #1,
    /// or later, after records the source archived (its checkpoint must then
    /// follow, or [`verify`](AuditStore::verify) reports the start). Every
    /// event is checked first (its hash over its own content, its seq and its
    /// link to the one before); nothing is written unless all are good. Then
    /// they are written as lines of the open segment, with one `fdatasync`
    /// before this returns, and records, dedup claims and positions are
    /// derived from them as a replay of the log derives them: a `received`
    /// event claims the key it carries (unless that claim has expired), and
    /// events of a request whose `received` event is not among the imported
    /// ones derive no record. Claims that no imported event carries (made by
    /// an append whose events do not carry the key) are not imported.
    pub async fn import(&self, events: Vec<AuditEvent>) -> Result<(), StoreError> {
        if events.is_empty() {
            return Ok(());
        }
        self.inner.shared.poisoned()?;
        let (reply, rx) = tokio::sync::oneshot::channel();
        self.send(Msg::Import { events, reply })?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// The directory the last archive moved segments to, if any.
    pub fn archive_dir(&self) -> Result<Option<PathBuf>, StoreError> {
        self.inner.shared.index.archive_dir()
    }

    /// Stop the store as a killed process would: no last sync, no last index
    /// writes (what was written stays in the files). Other clones then get
    /// [`StoreError::Closed`]. For crash tests.
    #[cfg(any(test, feature = "test-util"))]
    pub fn kill(self) {
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

/// See [`LogStore::kill_switch`].
#[cfg(any(test, feature = "test-util"))]
#[derive(Debug, Clone)]
pub struct KillSwitch(std::sync::Weak<Inner>);

#[cfg(any(test, feature = "test-util"))]
impl KillSwitch {
    /// Kill the store if it is still open: it stops at once, and closes
    /// (without a last sync) when its last handle is dropped. A store whose
    /// last handle is already gone was closed cleanly, not killed.
    pub fn kill(self) {
        if let Some(inner) = self.0.upgrade() {
            LogStore { inner }.kill();
        }
    }
}

/// The bytes of a live segment (of the open one, through the tip), wherever it is.
fn read_segment(shared: &Shared, seg: Seg, open_len: u64) -> Result<Vec<u8>, StoreError> {
    let mut last_err = None;
    for _ in 0..3 {
        let candidates = {
            let segs = lock(&shared.segs);
            let mut c = segs.files_of(&shared.log_dir, seg.first);
            if c.is_empty() {
                c.push(shared.log_dir.join(seg.name()));
            }
            c
        };
        for path in candidates {
            match shared.fs.read(&path) {
                Ok(mut bytes) => {
                    if seg.last.is_none() {
                        // Through the tip as it was (sealing a segment does
                        // not change its bytes).
                        bytes.truncate(usize::try_from(open_len).unwrap_or(usize::MAX));
                    }
                    return Ok(bytes);
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    last_err = Some(io_err(format!("cannot read {}", path.display()), e));
                }
                Err(e) => return Err(io_err(format!("cannot read {}", path.display()), e)),
            }
        }
    }
    Err(last_err.unwrap_or_else(|| corrupt(format!("segment {} is missing", seg.name()))))
}

fn verify_live(shared: &Shared) -> Result<VerifyReport, StoreError> {
    let (segs, open_len) = {
        let m = lock(&shared.mem);
        (lock(&shared.segs).live_segs(), m.open_len)
    };
    let mut v = ChainVerifier::new();
    for seg in segs {
        let bytes = read_segment(shared, seg, open_len)?;
        let text = String::from_utf8_lossy(&bytes);
        if let Err(mut b) = v.check_json_lines(&text) {
            b.reason = format!("{} (in {})", b.reason, seg.name());
            return Ok(v.report(Some(b)));
        }
    }
    Ok(v.finish())
}

#[async_trait]
impl AuditStore for LogStore {
    async fn append(
        &self,
        events: Vec<NewEvent>,
        opts: AppendOptions,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        self.inner.shared.poisoned()?;
        let bodies = youops_core::audit::encode_bodies(&events)?;
        let (reply, rx) = tokio::sync::oneshot::channel();
        self.send(Msg::Append(Job {
            events,
            bodies,
            opts,
            reply,
        }))?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    async fn flush(&self) -> Result<(), StoreError> {
        self.inner.shared.poisoned()?;
        let (reply, rx) = tokio::sync::oneshot::channel();
        self.send(Msg::Flush(reply))?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    async fn request(&self, id: RequestId) -> Result<Option<RequestRecord>, StoreError> {
        Ok(self.inner.shared.stored(id)?.map(|s| s.record))
    }

    async fn request_events(&self, id: RequestId) -> Result<Vec<AuditEvent>, StoreError> {
        let shared = &self.inner.shared;
        let Some(stored) = shared.stored(id)? else {
            return Ok(Vec::new());
        };
        stored
            .events
            .iter()
            .map(|(seq, offset)| shared.event_at(*seq, *offset))
            .collect()
    }

    async fn find_dedup(&self, key: &str) -> Result<Option<RequestId>, StoreError> {
        Ok(self.inner.shared.claim(key)?.map(|c| c.id))
    }

    async fn list_requests(
        &self,
        filter: &RequestFilter,
        before: Option<RequestId>,
        limit: usize,
    ) -> Result<Vec<RequestRecord>, StoreError> {
        let shared = &self.inner.shared;
        // The writer's records supersede the index's copies of the same requests.
        let (held, mut newer): (HashSet<RequestId>, Vec<RequestRecord>) = {
            let m = lock(&shared.mem);
            (
                m.records.keys().copied().collect(),
                m.records
                    .iter()
                    .filter(|(id, h)| {
                        before.is_none_or(|b| **id < b) && filter.matches(&h.stored.record)
                    })
                    .map(|(_, h)| h.stored.record.clone())
                    .collect(),
            )
        };
        newer.sort_unstable_by_key(|r| std::cmp::Reverse(r.request.id));
        newer.truncate(limit);
        let mut indexed = Vec::new();
        if limit > 0 {
            shared.index.entries_rev(before, |id, entry| {
                if held.contains(&id)
                    || !(filter.states.is_empty() || filter.states.contains(&entry.state))
                {
                    return Ok(true);
                }
                let s = shared.load(&entry)?;
                if filter.matches(&s.record) {
                    indexed.push(s.record);
                }
                Ok(indexed.len() < limit)
            })?;
        }
        let mut out = Vec::with_capacity(limit.min(newer.len() + indexed.len()));
        let (mut a, mut b) = (newer.into_iter().peekable(), indexed.into_iter().peekable());
        while out.len() < limit {
            let take_a = match (a.peek(), b.peek()) {
                (None, None) => break,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (Some(x), Some(y)) => x.request.id > y.request.id,
            };
            out.extend(if take_a { a.next() } else { b.next() });
        }
        Ok(out)
    }

    async fn active_requests(&self) -> Result<Vec<RequestRecord>, StoreError> {
        let shared = &self.inner.shared;
        let (held, mut out): (HashSet<RequestId>, Vec<RequestRecord>) = {
            let m = lock(&shared.mem);
            (
                m.records.keys().copied().collect(),
                m.records
                    .values()
                    .filter(|h| !h.stored.record.state.is_terminal())
                    .map(|h| h.stored.record.clone())
                    .collect(),
            )
        };
        for id in shared.index.active_ids()? {
            if held.contains(&id) {
                continue;
            }
            if let Some(s) = shared.stored(id)? {
                if !s.record.state.is_terminal() {
                    out.push(s.record);
                }
            }
        }
        out.sort_unstable_by_key(|r| r.request.id);
        out.dedup_by_key(|r| r.request.id);
        Ok(out)
    }

    async fn events(&self, after: u64, limit: usize) -> Result<Vec<AuditEvent>, StoreError> {
        self.inner.shared.events(after, limit)
    }

    async fn head(&self) -> Result<(u64, String), StoreError> {
        Ok(lock(&self.inner.shared.mem).tip.clone())
    }

    async fn verify(&self) -> Result<VerifyReport, StoreError> {
        let shared = self.inner.shared.clone();
        tokio::task::spawn_blocking(move || verify_live(&shared))
            .await
            .map_err(|e| StoreError::Io(format!("verify task: {e}")))?
    }

    async fn size_on_disk(&self) -> Result<u64, StoreError> {
        let shared = &self.inner.shared;
        let segs = lock(&shared.segs).live_segs();
        let mut total = 0;
        for s in segs {
            // A segment sealed or archived meanwhile is counted as it was.
            total += shared.fs.len(&shared.log_dir.join(s.name())).unwrap_or(0);
        }
        let index = self.inner.path.join("index.redb");
        total += std::fs::metadata(&index).map_or(0, |m| m.len());
        Ok(total)
    }

    async fn archive(
        &self,
        through_seq: u64,
        dir: &Path,
    ) -> Result<Option<ArchiveReport>, StoreError> {
        archive::archive(self, through_seq, dir).await
    }
}
