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

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::Utc;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use youops_core::audit::{
    archive_file_name, archive_files, canonical_bytes_encoded, chain_hash, event_json,
    parse_archive_file_name, AppendOptions, ArchiveReport, AuditStore, Broken, ChainVerifier,
    StoreError, VerifyReport, GENESIS_HASH,
};
use youops_core::model::{
    AuditEvent, EventBody, NewEvent, RequestFilter, RequestId, RequestRecord,
};

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
struct Counters {
    groups: AtomicU64,
    jobs: AtomicU64,
    events: AtomicU64,
    keys: AtomicU64,
    flushes: AtomicU64,
    apply_nanos: AtomicU64,
    flush_nanos: AtomicU64,
    index_nanos: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> SledStats {
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

fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

fn nanos_since(t: Instant) -> u64 {
    u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// A request record as stored: the record and where its events are.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Stored {
    /// Sequence numbers of the request's events, in order.
    seqs: Vec<u64>,
    record: RequestRecord,
}

impl Stored {
    /// Whether the record already includes the event `seq` (its events are
    /// folded in seq order).
    fn holds(&self, seq: u64) -> bool {
        self.seqs.last().is_some_and(|last| *last >= seq)
    }
}

/// State shared by the writer and the readers.
#[derive(Debug)]
struct Shared {
    /// Records of requests changed since they were last stored, and of every
    /// request not terminal. Readers look here before the tree.
    records: Mutex<Ids<Stored>>,
    /// Dedup claims in the chain whose `d` keys the indexer has not stored yet
    /// (see [`Group::derived`]). Readers and the writer look here before the tree.
    claims: Mutex<HashMap<String, RequestId>>,
    /// Seq and hash of the last event applied.
    tip: Mutex<(u64, String)>,
    /// No stored record (`s` key) has an id above this one: the largest at
    /// open, raised by the indexer before it stores more. A `received` event for
    /// a newer id (ids sort by creation time; the indexer runs behind the
    /// writer) cannot be for a stored request, so the writer skips that lookup.
    stored_max: Mutex<Option<RequestId>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A fast hasher for request ids. They are ULIDs the executor makes (80 random
/// bits), never chosen by a client, so SipHash's flood resistance buys nothing on
/// the writer's hot path. (Dedup keys, which clients choose, keep SipHash.)
#[derive(Default, Clone, Copy)]
struct IdHasher(u64);

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

type Ids<V> = HashMap<RequestId, V, std::hash::BuildHasherDefault<IdHasher>>;
type IdSet = HashSet<RequestId, std::hash::BuildHasherDefault<IdHasher>>;

struct Job {
    events: Vec<NewEvent>,
    /// `serde_json::to_vec(&event.body)` of each event, encoded by the caller so
    /// that the single writer thread does not have to.
    bodies: Vec<Vec<u8>>,
    opts: AppendOptions,
    reply: oneshot::Sender<Result<Vec<AuditEvent>, StoreError>>,
}

enum Msg {
    Append(Job),
    Flush(oneshot::Sender<Result<(), StoreError>>),
    /// Stop at once: no last flush, no last records stored (a killed process).
    #[cfg_attr(not(any(test, feature = "test-util")), allow(dead_code))]
    Kill,
}

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

/// The sled-backed [`AuditStore`].
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

/// sled's database and what makes its flushes durable.
#[derive(Debug, Clone)]
struct Disk {
    db: sled::Db,
    sync: Arc<DiskSync>,
}

impl Disk {
    /// `Db::flush`, then [`DiskSync::sync`]: everything applied before the
    /// call is on disk when this returns `Ok`.
    fn flush(&self) -> Result<(), StoreError> {
        self.db.flush().map_err(io)?;
        self.sync.sync()
    }
}

/// `fdatasync` of sled's files after its flush (see the crate documentation):
/// `db`, blob files not synced yet, and the directories whose entries changed.
#[derive(Debug)]
struct DiskSync {
    dir: PathBuf,
    /// sled's data file, opened again (read-only: `fdatasync` needs no write access).
    db: std::fs::File,
    seen: Mutex<Seen>,
    /// A sync failed: every later one fails too. Linux may drop the dirty
    /// pages of a failed `fdatasync` and report the next one as successful,
    /// so a retry could acknowledge what is not on disk.
    failed: Mutex<Option<String>>,
}

/// What the last sync covered.
#[derive(Debug, Default)]
struct Seen {
    /// Blob files synced (names in `blobs/`).
    blobs: HashSet<OsString>,
    /// The store directory's entries.
    entries: Vec<OsString>,
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// The names in `dir` (none if it does not exist).
fn names_in(dir: &Path) -> std::io::Result<Vec<OsString>> {
    match std::fs::read_dir(dir) {
        Ok(entries) => {
            let mut names = entries
                .map(|e| e.map(|e| e.file_name()))
                .collect::<std::io::Result<Vec<_>>>()?;
            names.sort();
            Ok(names)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

impl DiskSync {
    /// Sync what sled just created or opened: `conf` (written without a
    /// sync), `db`, `blobs/`, the store directory and its parent.
    fn open(dir: &Path) -> Result<DiskSync, StoreError> {
        let fail = |what: &str, p: &Path, e: std::io::Error| {
            StoreError::Io(format!("{what} {}: {e}", p.display()))
        };
        let db_path = dir.join("db");
        let db = std::fs::File::open(&db_path).map_err(|e| fail("cannot open", &db_path, e))?;
        let conf = dir.join("conf");
        match std::fs::File::open(&conf) {
            Ok(f) => f.sync_all().map_err(|e| fail("fsync", &conf, e))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(fail("cannot open", &conf, e)),
        }
        let s = DiskSync {
            dir: dir.to_path_buf(),
            db,
            seen: Mutex::new(Seen::default()),
            failed: Mutex::new(None),
        };
        // Nothing seen yet: syncs `db`, every blob, `blobs/` and the directory.
        s.sync()?;
        let blobs = dir.join("blobs");
        sync_dir(&blobs).map_err(|e| fail("fsync", &blobs, e))?;
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            sync_dir(parent).map_err(|e| fail("fsync", parent, e))?;
        }
        Ok(s)
    }

    /// After `Db::flush`: `fdatasync` `db` and every blob file not synced yet,
    /// and `fsync` `blobs/` if it gained one and the store directory if its
    /// entries changed (a snapshot renamed into place).
    fn sync(&self) -> Result<(), StoreError> {
        if let Some(why) = lock(&self.failed).clone() {
            return Err(StoreError::Io(format!(
                "an earlier fdatasync of the sled store failed ({why}); reopen the store"
            )));
        }
        let mut seen = lock(&self.seen);
        match self.sync_locked(&mut seen) {
            Ok(()) => Ok(()),
            Err(why) => {
                tracing::error!(error = %why, "audit store: fdatasync failed; durable appends and flushes fail until the store is reopened");
                *lock(&self.failed) = Some(why.clone());
                Err(StoreError::Io(why))
            }
        }
    }

    fn sync_locked(&self, seen: &mut Seen) -> Result<(), String> {
        let at = |what: &str, p: &Path, e: std::io::Error| format!("{what} {}: {e}", p.display());
        self.db
            .sync_data()
            .map_err(|e| at("fdatasync", &self.dir.join("db"), e))?;
        let blobs = self.dir.join("blobs");
        let names = names_in(&blobs).map_err(|e| at("cannot list", &blobs, e))?;
        let mut added = false;
        for name in &names {
            if seen.blobs.contains(name) {
                continue;
            }
            let path = blobs.join(name);
            match std::fs::File::open(&path) {
                Ok(f) => f.sync_data().map_err(|e| at("fdatasync", &path, e))?,
                // Collected by sled meanwhile: nothing to make durable.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(at("cannot open", &path, e)),
            }
            added = true;
        }
        if added {
            sync_dir(&blobs).map_err(|e| at("fsync", &blobs, e))?;
        }
        seen.blobs = names.into_iter().collect();
        let entries = names_in(&self.dir).map_err(|e| at("cannot list", &self.dir, e))?;
        if entries != seen.entries {
            sync_dir(&self.dir).map_err(|e| at("fsync", &self.dir, e))?;
            seen.entries = entries;
        }
        Ok(())
    }
}

/// An [`AuditEvent`] from its parts (it is `#[non_exhaustive]`: outside core
/// it is built by changing the fields of one decoded once).
fn audit_event(
    seq: u64,
    time: chrono::DateTime<Utc>,
    request_id: Option<RequestId>,
    body: EventBody,
    prev_hash: String,
    hash: String,
) -> AuditEvent {
    static BLANK: std::sync::OnceLock<AuditEvent> = std::sync::OnceLock::new();
    let mut e = BLANK
        .get_or_init(|| {
            serde_json::from_str(
                r#"{"seq":0,"time":"1970-01-01T00:00:00Z","body":{"type":"checkpoint",
                "archived_through_seq":0,"archived_last_hash":"","archive":""},
                "prev_hash":"","hash":""}"#,
            )
            .expect("the blank event decodes")
        })
        .clone();
    e.seq = seq;
    e.time = time;
    e.request_id = request_id;
    e.body = body;
    e.prev_hash = prev_hash;
    e.hash = hash;
    e
}

fn io(e: impl std::fmt::Display) -> StoreError {
    StoreError::Io(e.to_string())
}

const FORMAT_KEY: &[u8] = b"m:format";
const APPLIED_KEY: &[u8] = b"m:applied";
const FORMAT: &[u8] = b"2";

fn bkey(seq: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = b'b';
    k[1..].copy_from_slice(&seq.to_be_bytes());
    k
}

fn seq_of_bkey(k: &[u8]) -> Result<u64, StoreError> {
    k.get(1..)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| StoreError::Corrupt("block key of wrong length".into()))
}

fn idkey(prefix: u8, id: RequestId) -> [u8; 17] {
    let mut k = [0u8; 17];
    k[0] = prefix;
    k[1..].copy_from_slice(&id.0.to_bytes());
    k
}

fn dkey(key: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(key.len() + 1);
    k.push(b'd');
    k.extend_from_slice(key.as_bytes());
    k
}

fn id_from(bytes: &[u8]) -> Result<RequestId, StoreError> {
    let arr: [u8; 16] = bytes
        .try_into()
        .map_err(|_| StoreError::Corrupt("request id of wrong length".into()))?;
    Ok(RequestId(ulid::Ulid::from_bytes(arr)))
}

fn decode<T: serde::de::DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

/// The lines of a block (events never contain a raw newline: JSON escapes it).
fn lines(block: &[u8]) -> impl Iterator<Item = &[u8]> {
    block.split(|b| *b == b'\n').filter(|l| !l.is_empty())
}

/// Decode the event on line `index` of the block starting at `start`.
fn decode_line(start: u64, index: usize, line: &[u8]) -> Result<AuditEvent, StoreError> {
    serde_json::from_slice(line).map_err(|e| {
        StoreError::Corrupt(format!(
            "event #{} (line {} of block #{start}): {e}",
            start + index as u64,
            index + 1
        ))
    })
}

impl SledStore {
    /// Open (or create) the store at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::open_with(path, SledOptions::default())
    }

    /// Open with options.
    pub fn open_with(path: impl AsRef<Path>, opts: SledOptions) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        let db = sled::Config::new()
            .path(&path)
            .cache_capacity(opts.cache_capacity)
            .flush_every_ms(
                opts.gc_interval
                    .map(|d| u64::try_from(d.as_millis().max(1)).unwrap_or(u64::MAX)),
            )
            .open()
            .map_err(|e| {
                let text = e.to_string();
                if text.contains("lock")
                    || text.contains("WouldBlock")
                    || text.contains("Resource temporarily unavailable")
                {
                    StoreError::Locked(path.display().to_string())
                } else {
                    StoreError::Io(format!("cannot open {}: {text}", path.display()))
                }
            })?;
        let db = Disk {
            sync: Arc::new(DiskSync::open(&path)?),
            db,
        };
        let tree = db.db.open_tree("audit").map_err(io)?;
        check_format(&tree, &path)?;
        let (seq, hash) = read_tip(&tree)?;
        let counters = Arc::new(Counters::default());
        let mut active = tree
            .scan_prefix(b"a")
            .keys()
            .map(|k| k.map_err(io).and_then(|k| id_from(&k[1..])))
            .collect::<Result<HashSet<_>, _>>()?;
        recover(&db, &tree, seq, &mut active, &counters)?;
        let stored_max = match tree.scan_prefix(b"s").keys().next_back() {
            Some(k) => Some(id_from(&k.map_err(io)?[1..])?),
            None => None,
        };
        let shared = Arc::new(Shared {
            records: Mutex::new(Ids::default()),
            claims: Mutex::new(HashMap::new()),
            tip: Mutex::new((seq, hash.clone())),
            stored_max: Mutex::new(stored_max),
        });
        let (tx, rx) = mpsc::channel();
        let writer = Writer {
            counters: counters.clone(),
            db: db.clone(),
            tree: tree.clone(),
            shared: shared.clone(),
            seq,
            hash,
            dirty: IdSet::default(),
            dirty_claims: Vec::new(),
            last_index: Instant::now(),
            opts: SledOptions {
                max_batch_events: opts.max_batch_events.max(1),
                block_events: opts.block_events.max(1),
                index_max_dirty: opts.index_max_dirty.max(1),
                ..opts
            },
        };
        let handle = thread::Builder::new()
            .name("youops-audit-writer".into())
            .spawn(move || writer.run(rx, active))
            .map_err(io)?;
        Ok(SledStore {
            inner: Arc::new(Inner {
                db,
                tree,
                path,
                counters,
                shared,
                tx: Mutex::new(Some(tx)),
                writer: Mutex::new(Some(handle)),
                archiving: tokio::sync::Mutex::new(()),
                killed: AtomicBool::new(false),
            }),
        })
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

    /// The block whose first event is the last one at or before `seq`.
    fn block_of(&self, seq: u64) -> Result<Option<(u64, sled::IVec)>, StoreError> {
        match self.inner.tree.range(bkey(0)..=bkey(seq)).next_back() {
            Some(kv) => {
                let (k, v) = kv.map_err(io)?;
                Ok(Some((seq_of_bkey(&k)?, v)))
            }
            None => Ok(None),
        }
    }

    /// Sequence number of the first event still in the store (1 unless archived).
    fn live_start(&self) -> Result<u64, StoreError> {
        match self.inner.tree.scan_prefix(b"b").next() {
            Some(kv) => seq_of_bkey(&kv.map_err(io)?.0),
            None => Ok(1),
        }
    }

    /// [`AuditStore::archive`] after the checks: write, checkpoint, remove.
    async fn archive_through(
        &self,
        start: u64,
        through: u64,
        dir: &Path,
    ) -> Result<ArchiveReport, StoreError> {
        self.archive_steps(start, through, dir, ArchiveStep::Remove)
            .await
    }

    /// [`archive_through`](Self::archive_through), stopping after step `until`
    /// (tests stop early to leave what a crash there would).
    async fn archive_steps(
        &self,
        start: u64,
        through: u64,
        dir: &Path,
        until: ArchiveStep,
    ) -> Result<ArchiveReport, StoreError> {
        // 1. The archive file, written whole and fsynced before anything changes.
        let tree = self.inner.tree.clone();
        let dir_owned = dir.to_path_buf();
        let (file, bytes, last_hash, touched) =
            tokio::task::spawn_blocking(move || write_archive(&tree, start, through, &dir_owned))
                .await
                .map_err(io)??;
        let mut report = blank_report();
        report.file = file;
        report.first_seq = start;
        report.through_seq = through;
        report.last_hash = last_hash;
        report.bytes = bytes;
        if until == ArchiveStep::File {
            return Ok(report);
        }
        // 2. The checkpoint, durable, in the chain.
        let name = report
            .file
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        let checkpoint = self
            .append(
                vec![NewEvent::global(EventBody::Checkpoint {
                    archived_through_seq: through,
                    archived_last_hash: report.last_hash.clone(),
                    archive: name,
                })],
                AppendOptions::durable(),
            )
            .await?;
        report.checkpoint_seq = checkpoint.first().map_or(0, |e| e.seq);
        if until == ArchiveStep::Checkpoint {
            return Ok(report);
        }
        // 3. Remove the archived events, and the records whose events are all archived.
        report.records_removed = self.remove_through(through, touched).await?;
        Ok(report)
    }

    /// Step 3 of archiving: remove events `..=through`, and the records of
    /// `touched` requests whose events are all archived (except those the writer
    /// holds).
    async fn remove_through(&self, through: u64, touched: IdSet) -> Result<u64, StoreError> {
        let tree = self.inner.tree.clone();
        let db = self.inner.db.clone();
        let held: IdSet = lock(&self.inner.shared.records).keys().copied().collect();
        tokio::task::spawn_blocking(move || remove_archived(&db, &tree, through, &touched, &held))
            .await
            .map_err(io)?
    }

    /// Finish or undo an archive a crash cut short. Archiving writes the file,
    /// then appends the checkpoint, then removes the archived events; an
    /// archive file whose events are still in the store was cut short after
    /// step 1 or 2. With its checkpoint in the chain it is committed: finish
    /// step 3. Without, it never happened: remove the file (the events stay
    /// here). Also removes half-written files (`.jsonl.tmp`).
    async fn recover_archive(&self, dir: &Path) -> Result<(), StoreError> {
        let listed = |e: std::io::Error| {
            StoreError::Io(format!("cannot list archives in {}: {e}", dir.display()))
        };
        match std::fs::read_dir(dir) {
            Ok(entries) => {
                for e in entries {
                    let path = e.map_err(listed)?.path();
                    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
                    if name.starts_with("audit-") && name.ends_with(".jsonl.tmp") {
                        std::fs::remove_file(&path).map_err(|e| {
                            StoreError::Io(format!("cannot remove {}: {e}", path.display()))
                        })?;
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(listed(e)),
        }
        for path in archive_files(dir).map_err(listed)? {
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_string();
            let Some((first, through)) = parse_archive_file_name(&name) else {
                continue;
            };
            let live_start = self.live_start()?;
            if through < live_start {
                continue;
            }
            let disagree = |why: String| {
                StoreError::Corrupt(format!(
                    "{} holds events #{first}..=#{through} but {why}: not archiving until the \
                     archive directory and the store agree (nothing was changed)",
                    path.display()
                ))
            };
            if first != live_start {
                return Err(disagree(format!("the store starts at #{live_start}")));
            }
            // The file must end with the store's own event, or it is not this
            // store's archive (say, a new store beside an old archive directory):
            // it is never removed, nor written over.
            let file_last = last_event_in(&path)?;
            let stored = self.events(through - 1, 1).await?;
            match (file_last, stored.first()) {
                (Some(a), Some(b)) if a.seq == through && b.seq == through && a.hash == b.hash => {}
                (_, Some(b)) if b.seq == through => {
                    return Err(disagree(format!(
                        "its last record is not the store's #{through} (hash {})",
                        b.hash.get(..12).unwrap_or(&b.hash)
                    )))
                }
                _ => return Err(disagree(format!("the store has no record #{through}"))),
            }
            if self.has_checkpoint(through, &name).await? {
                let tree = self.inner.tree.clone();
                let touched =
                    tokio::task::spawn_blocking(move || request_ids_in(&tree, first, through))
                        .await
                        .map_err(io)??;
                let removed = self.remove_through(through, touched).await?;
                tracing::warn!(
                    file = %path.display(),
                    through,
                    records_removed = removed,
                    "audit retention: finished an archive cut short (its checkpoint is in the chain)"
                );
            } else {
                std::fs::remove_file(&path).map_err(|e| {
                    StoreError::Io(format!("cannot remove {}: {e}", path.display()))
                })?;
                if let Ok(d) = std::fs::File::open(dir) {
                    let _ = d.sync_all();
                }
                tracing::warn!(
                    file = %path.display(),
                    "audit retention: removed an archive cut short before its checkpoint \
                     (its events are still in the store)"
                );
            }
        }
        Ok(())
    }

    /// Whether the chain after `through` has the checkpoint of archive `name`.
    async fn has_checkpoint(&self, through: u64, name: &str) -> Result<bool, StoreError> {
        let mut after = through;
        loop {
            let batch = self.events(after, 1000).await?;
            let Some(last) = batch.last() else {
                return Ok(false);
            };
            after = last.seq;
            if batch.iter().any(|e| {
                matches!(
                    &e.body,
                    EventBody::Checkpoint { archived_through_seq, archive, .. }
                        if *archived_through_seq == through && archive == name
                )
            }) {
                return Ok(true);
            }
        }
    }

    /// The stored record of a request: the writer's copy if it has one, else the
    /// tree's.
    fn stored(&self, id: RequestId) -> Result<Option<Stored>, StoreError> {
        if let Some(s) = lock(&self.inner.shared.records).get(&id) {
            return Ok(Some(s.clone()));
        }
        match self.inner.tree.get(idkey(b's', id)).map_err(io)? {
            Some(v) => Ok(Some(decode("request record", &v)?)),
            None => Ok(None),
        }
    }
}

fn check_format(tree: &sled::Tree, path: &Path) -> Result<(), StoreError> {
    match tree.get(FORMAT_KEY).map_err(io)? {
        Some(v) if v.as_ref() == FORMAT => Ok(()),
        Some(v) => Err(StoreError::Corrupt(format!(
            "{} has store format {:?}; this YouOps reads format 2",
            path.display(),
            String::from_utf8_lossy(&v)
        ))),
        None if tree.first().map_err(io)?.is_none() => {
            tree.insert(FORMAT_KEY, FORMAT).map_err(io)?;
            Ok(())
        }
        None => Err(StoreError::Corrupt(format!(
            "{} was written by an earlier YouOps (store format 1, one key per event): \
             export it with that version (`youops audit export`) and start a new store",
            path.display()
        ))),
    }
}

/// Seq and hash of the last stored event.
fn read_tip(tree: &sled::Tree) -> Result<(u64, String), StoreError> {
    let Some(kv) = tree.scan_prefix(b"b").next_back() else {
        return Ok((0, GENESIS_HASH.to_string()));
    };
    let (k, v) = kv.map_err(io)?;
    let start = seq_of_bkey(&k)?;
    let last = lines(&v)
        .last()
        .ok_or_else(|| StoreError::Corrupt(format!("block #{start} is empty")))?;
    // The tip must decode; a damaged tip is reported by `verify`, and we still
    // chain onto its stored hash field when it is readable.
    let tip = serde_json::from_slice::<serde_json::Value>(last)
        .ok()
        .and_then(|j| {
            let seq = j.get("seq")?.as_u64()?;
            let hash = j.get("hash")?.as_str()?.to_string();
            Some((seq, hash))
        });
    tip.ok_or_else(|| {
        StoreError::Corrupt(format!(
            "the last event (in block #{start}) does not decode"
        ))
    })
}

/// Fold one event into the record of its request.
fn fold(current: Option<Stored>, ev: &AuditEvent) -> Result<Stored, StoreError> {
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
fn claim_in(ev: &AuditEvent) -> Option<(&str, RequestId)> {
    match &ev.body {
        EventBody::Received { request } => request.dedup_key.as_deref().map(|k| (k, request.id)),
        _ => None,
    }
}

/// Put a request's record into `sink`, with its `a` key when that changes
/// (`active` holds the requests whose `a` key exists); the keys written.
fn put_record(
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
enum RecordError {
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
/// [`Indexer::store`]).
trait RecordSink {
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

/// Rebuild the records changed by events after `m:applied` (written by a process
/// that stopped before storing them).
fn recover(
    db: &Disk,
    tree: &sled::Tree,
    tip: u64,
    active: &mut HashSet<RequestId>,
    counters: &Counters,
) -> Result<(), StoreError> {
    let applied = match tree.get(APPLIED_KEY).map_err(io)? {
        Some(v) => u64::from_be_bytes(
            v.as_ref()
                .try_into()
                .map_err(|_| StoreError::Corrupt("m:applied of wrong length".into()))?,
        ),
        None => 0,
    };
    if applied >= tip {
        return Ok(());
    }
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
    let mut batch = sled::Batch::default();
    let mut keys = 1;
    for (key, owner) in &claims {
        batch.insert(dkey(key), &owner.0.to_bytes()[..]);
        keys += 1;
    }
    for (id, stored) in &touched {
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
    tracing::info!(
        events = replayed,
        requests = touched.len(),
        "audit store: rebuilt request records from events after an unclean stop"
    );
    Ok(())
}

/// Write events `start..=through` to a new archive file in `dir` (through a
/// temporary file, fsynced, renamed, directory fsynced), checking that they chain.
/// Returns the file, its size and the last hash.
fn write_archive(
    tree: &sled::Tree,
    start: u64,
    through: u64,
    dir: &Path,
) -> Result<(PathBuf, u64, String, IdSet), StoreError> {
    use std::io::Write as _;
    std::fs::create_dir_all(dir)
        .map_err(|e| StoreError::Io(format!("cannot create {}: {e}", dir.display())))?;
    let path = dir.join(archive_file_name(start, through));
    let tmp = path.with_extension("jsonl.tmp");
    let f = std::fs::File::create(&tmp)
        .map_err(|e| StoreError::Io(format!("cannot create {}: {e}", tmp.display())))?;
    let mut out = std::io::BufWriter::new(f);
    let mut verifier = ChainVerifier::new();
    let mut last_hash = None;
    let mut bytes = 0u64;
    let mut touched = IdSet::default();
    'blocks: for kv in tree.range(bkey(start)..bkey(u64::MAX)) {
        let (k, v) = kv.map_err(io)?;
        let first = seq_of_bkey(&k)?;
        for (i, line) in lines(&v).enumerate() {
            let ev = decode_line(first, i, line)?;
            if ev.seq > through {
                break 'blocks;
            }
            if let Err(b) = verifier.check(&ev) {
                let _ = std::fs::remove_file(&tmp);
                return Err(StoreError::Corrupt(format!(
                    "not archiving a broken chain: {b} (run `youops audit verify`)"
                )));
            }
            out.write_all(line)
                .and_then(|()| out.write_all(b"\n"))
                .map_err(|e| StoreError::Io(format!("writing {}: {e}", tmp.display())))?;
            bytes += line.len() as u64 + 1;
            if let Some(id) = ev.request_id {
                touched.insert(id);
            }
            last_hash = Some((ev.seq, ev.hash));
        }
    }
    let Some((last_seq, last_hash)) = last_hash.filter(|(s, _)| *s == through) else {
        let _ = std::fs::remove_file(&tmp);
        return Err(StoreError::Corrupt(format!(
            "events {start}..={through} are not all in the store"
        )));
    };
    debug_assert_eq!(last_seq, through);
    let f = out
        .into_inner()
        .map_err(|e| StoreError::Io(format!("writing {}: {e}", tmp.display())))?;
    f.sync_all()
        .map_err(|e| StoreError::Io(format!("fsync {}: {e}", tmp.display())))?;
    drop(f);
    std::fs::rename(&tmp, &path)
        .map_err(|e| StoreError::Io(format!("rename to {}: {e}", path.display())))?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok((path, bytes, last_hash, touched))
}

/// An [`ArchiveReport`] to fill in (it is `#[non_exhaustive]`).
fn blank_report() -> ArchiveReport {
    serde_json::from_value(serde_json::json!({
        "file": "", "first_seq": 0, "through_seq": 0, "last_hash": "",
        "checkpoint_seq": 0, "bytes": 0, "records_removed": 0,
    }))
    .expect("the blank archive report decodes")
}

/// What archiving does, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ArchiveStep {
    /// 1. Write the archive file.
    File,
    /// 2. Append the checkpoint.
    Checkpoint,
    /// 3. Remove the archived events and records.
    Remove,
}

/// The last event of a JSON-lines archive file (`None`: empty or unreadable last
/// line).
fn last_event_in(path: &Path) -> Result<Option<AuditEvent>, StoreError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| StoreError::Io(format!("cannot read {}: {e}", path.display())))?;
    Ok(text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .and_then(|l| serde_json::from_str(l).ok()))
}

/// The requests with an event in `first..=through`.
fn request_ids_in(tree: &sled::Tree, first: u64, through: u64) -> Result<IdSet, StoreError> {
    let mut ids = IdSet::default();
    let from = tree
        .range(bkey(0)..=bkey(first))
        .next_back()
        .transpose()
        .map_err(io)?
        .map_or(Ok(first), |(k, _)| seq_of_bkey(&k))?;
    'blocks: for kv in tree.range(bkey(from)..bkey(u64::MAX)) {
        let (k, v) = kv.map_err(io)?;
        let block_first = seq_of_bkey(&k)?;
        for (i, line) in lines(&v).enumerate() {
            let ev = decode_line(block_first, i, line)?;
            if ev.seq > through {
                break 'blocks;
            }
            if let (true, Some(id)) = (ev.seq >= first, ev.request_id) {
                ids.insert(id);
            }
        }
    }
    Ok(ids)
}

/// Records removed per sled batch when archiving. A sled batch holds its log
/// reservation and an epoch pin until it is done, so every node version it
/// replaces stays in memory until then, and other writers wait for it: one batch
/// removing thousands of records cost the daemon ~120 MiB of resident memory
/// (not given back to the OS) and stalled appends. Small batches avoid both.
const REMOVE_BATCH_KEYS: usize = 128;

/// Remove events `..=through` (rewriting a block that straddles it), then the
/// records of terminal requests whose events are all archived. Only the
/// requests with an event in the archived segment (`touched`) can qualify, so
/// only their records are read, not every record in the store.
///
/// The events go in one batch (one key per up to 128 events): the live chain
/// must start right after the checkpoint's `archived_through_seq` or not move
/// at all. The records go in small batches after it; a crash between them
/// leaves some finished requests' records in the store for good (listed, with
/// their events only in the archive; never taken as in flight).
fn remove_archived(
    db: &Disk,
    tree: &sled::Tree,
    through: u64,
    touched: &IdSet,
    held: &IdSet,
) -> Result<u64, StoreError> {
    let mut batch = sled::Batch::default();
    for kv in tree.range(bkey(0)..=bkey(through)) {
        let (k, v) = kv.map_err(io)?;
        let first = seq_of_bkey(&k)?;
        batch.remove(k);
        let rest: Vec<&[u8]> = lines(&v)
            .enumerate()
            .filter(|(i, _)| first + *i as u64 > through)
            .map(|(_, l)| l)
            .collect();
        if !rest.is_empty() {
            batch.insert(&bkey(through + 1), rest.join(&b'\n'));
        }
    }
    tree.apply_batch(batch).map_err(io)?;
    let mut batch = sled::Batch::default();
    let mut in_batch = 0usize;
    let mut removed = 0u64;
    let mut ids: Vec<RequestId> = touched.iter().copied().collect();
    ids.sort_unstable();
    for id in ids {
        if held.contains(&id) {
            continue;
        }
        let k = idkey(b's', id);
        let Some(v) = tree.get(k).map_err(io)? else {
            continue;
        };
        let stored: Stored = decode("request record", &v)?;
        if stored.record.state.is_terminal() && stored.seqs.last().is_some_and(|s| *s <= through) {
            batch.remove(&k[..]);
            in_batch += 1;
            removed += 1;
            if in_batch >= REMOVE_BATCH_KEYS {
                tree.apply_batch(std::mem::take(&mut batch)).map_err(io)?;
                in_batch = 0;
            }
        }
    }
    if in_batch > 0 {
        tree.apply_batch(batch).map_err(io)?;
    }
    db.flush()?;
    Ok(removed)
}

/// Changed records for the indexer to store.
struct IndexJob {
    records: Vec<(RequestId, Stored)>,
    /// Dedup claims to store (`d` keys).
    claims: Vec<(String, RequestId)>,
    /// The records include every event up to this seq.
    applied: u64,
    /// `flush` calls to answer (through the flusher) once the records are stored.
    then: Durable,
}

/// Stores request records for the writer, so that encoding them and writing
/// them to sled does not hold up the chain.
struct Indexer {
    tree: sled::Tree,
    shared: Arc<Shared>,
    counters: Arc<Counters>,
    /// Requests whose `a` key exists.
    active: HashSet<RequestId>,
}

impl Indexer {
    fn run(mut self, rx: mpsc::Receiver<IndexJob>, flush: impl Fn(Durable)) {
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

    fn store(
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

struct Writer {
    db: Disk,
    tree: sled::Tree,
    shared: Arc<Shared>,
    seq: u64,
    hash: String,
    /// Requests whose records changed since they were last handed to the indexer.
    dirty: IdSet,
    /// Derived dedup claims not yet handed to the indexer.
    dirty_claims: Vec<(String, RequestId)>,
    last_index: Instant,
    opts: SledOptions,
    counters: Arc<Counters>,
}

type AppendReply = oneshot::Sender<Result<Vec<AuditEvent>, StoreError>>;
type FlushReply = oneshot::Sender<Result<(), StoreError>>;

/// Answers that wait for the next fsync.
#[derive(Default)]
struct Durable {
    appends: Vec<(AppendReply, Vec<AuditEvent>)>,
    flushes: Vec<FlushReply>,
}

impl Durable {
    fn is_empty(&self) -> bool {
        self.appends.is_empty() && self.flushes.is_empty()
    }

    fn answer(self, flushed: &Result<(), StoreError>) {
        for (reply, events) in self.appends {
            let _ = reply.send(match flushed {
                Ok(()) => Ok(events),
                Err(e) => Err(StoreError::Io(e.to_string())),
            });
        }
        for f in self.flushes {
            let _ = f.send(clone_result(flushed));
        }
    }
}

fn clone_result(r: &Result<(), StoreError>) -> Result<(), StoreError> {
    match r {
        Ok(()) => Ok(()),
        Err(e) => Err(StoreError::Io(e.to_string())),
    }
}

/// fsyncs for the writer, so the next group is built and applied while the last
/// one is being flushed. Every `Durable` it receives was applied before it calls
/// `Db::flush`, and one flush answers everything that queued up meanwhile.
fn flusher(
    db: Disk,
    counters: Arc<Counters>,
    rx: mpsc::Receiver<Durable>,
    queued: Arc<AtomicUsize>,
) {
    while let Ok(first) = rx.recv() {
        let mut waiting = vec![first];
        while let Ok(more) = rx.try_recv() {
            waiting.push(more);
        }
        let flushed = flush_db(&db, &counters);
        // Idle again before anyone is answered: a caller woken by its answer
        // may append at once, and the writer should then fsync it itself.
        queued.fetch_sub(waiting.len(), Ordering::AcqRel);
        for d in waiting {
            d.answer(&flushed);
        }
    }
}

/// The way to the flusher thread, counting what it has not answered yet.
#[derive(Clone)]
struct ToFlusher {
    tx: mpsc::Sender<Durable>,
    queued: Arc<AtomicUsize>,
}

impl ToFlusher {
    /// Queue `d` for the flusher; gives it back if the flusher is gone.
    fn send(&self, d: Durable) -> Result<(), Durable> {
        self.queued.fetch_add(1, Ordering::AcqRel);
        self.tx.send(d).map_err(|e| {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            e.0
        })
    }

    /// Nothing queued or being flushed.
    fn idle(&self) -> bool {
        self.queued.load(Ordering::Acquire) == 0
    }
}

fn flush_db(db: &Disk, counters: &Counters) -> Result<(), StoreError> {
    let t = Instant::now();
    let flushed = db.flush();
    add(&counters.flush_nanos, nanos_since(t));
    add(&counters.flushes, 1);
    flushed
}

/// What one group changes, before it is applied.
#[derive(Default)]
struct Group {
    /// Stored JSON of each new event, in seq order.
    lines: Vec<Vec<u8>>,
    /// Dedup keys claimed by this group, written with its events in one batch.
    claimed: HashMap<String, RequestId>,
    /// Dedup keys claimed by a `received` event that carries the key itself
    /// (`Request::dedup_key`): the indexer stores these later, like records,
    /// and `open` rebuilds them from the events after `m:applied`. So a group
    /// of one block needs no batch, whose global guard stalls every reader.
    derived: HashMap<String, RequestId>,
    /// Records changed by this group.
    touched: Ids<Stored>,
}

impl Writer {
    fn run(mut self, rx: mpsc::Receiver<Msg>, active: HashSet<RequestId>) {
        let (flush_tx, flush_rx) = mpsc::channel::<Durable>();
        let queued = Arc::new(AtomicUsize::new(0));
        let flush_thread = {
            let db = self.db.clone();
            let counters = self.counters.clone();
            let queued = queued.clone();
            thread::Builder::new()
                .name("youops-audit-flusher".into())
                .spawn(move || flusher(db, counters, flush_rx, queued))
        };
        let mut flush_tx = match &flush_thread {
            Ok(_) => Some(ToFlusher {
                tx: flush_tx,
                queued,
            }),
            Err(e) => {
                tracing::warn!(error = %e, "no flusher thread; the audit writer flushes inline");
                None
            }
        };
        let (index_tx, index_rx) = mpsc::channel::<IndexJob>();
        let index_thread = {
            let indexer = Indexer {
                tree: self.tree.clone(),
                shared: self.shared.clone(),
                counters: self.counters.clone(),
                active,
            };
            let to_flusher = flush_tx.clone();
            let db = self.db.clone();
            let counters = self.counters.clone();
            thread::Builder::new()
                .name("youops-audit-indexer".into())
                .spawn(move || {
                    indexer.run(index_rx, move |d: Durable| {
                        let unsent = match &to_flusher {
                            Some(tx) => tx.send(d).err(),
                            None => Some(d),
                        };
                        if let Some(d) = unsent {
                            d.answer(&flush_db(&db, &counters));
                        }
                    })
                })
        };
        let index_tx = match &index_thread {
            Ok(_) => index_tx,
            Err(e) => {
                // Without an indexer the records cannot be stored: refuse to run.
                tracing::error!(error = %e, "no audit indexer thread; the audit store is closed");
                return;
            }
        };
        // A message taken while deciding where to flush, not yet handled.
        let mut next: Option<Msg> = None;
        let mut killed = false;
        loop {
            // With records waiting to be stored, wake up to store them when idle.
            let first = if let Some(m) = next.take() {
                m
            } else if self.dirty.is_empty() {
                match rx.recv() {
                    Ok(m) => m,
                    Err(_) => break,
                }
            } else {
                let wait = self
                    .opts
                    .index_interval
                    .saturating_sub(self.last_index.elapsed());
                match rx.recv_timeout(wait) {
                    Ok(m) => m,
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        self.hand_over(&index_tx, Durable::default());
                        continue;
                    }
                    Err(mpsc::RecvTimeoutError::Disconnected) => break,
                }
            };
            let mut jobs = Vec::new();
            let mut flushes = Vec::new();
            let mut count = 0usize;
            // `true` for a kill.
            let mut push = |m: Msg, jobs: &mut Vec<Job>, count: &mut usize| match m {
                Msg::Append(j) => {
                    *count += j.events.len();
                    jobs.push(j);
                    false
                }
                Msg::Flush(r) => {
                    flushes.push(r);
                    false
                }
                Msg::Kill => true,
            };
            killed = push(first, &mut jobs, &mut count);
            while count < self.opts.max_batch_events && !killed {
                match rx.try_recv() {
                    Ok(m) => killed = push(m, &mut jobs, &mut count),
                    Err(_) => break,
                }
            }
            if killed {
                // The appends taken with the kill are answered `Closed`.
                break;
            }
            let durable = self.commit(jobs);
            let due = !self.dirty.is_empty()
                && (self.dirty.len() >= self.opts.index_max_dirty
                    || self.last_index.elapsed() >= self.opts.index_interval);
            if !flushes.is_empty() {
                // `flush` also stores every record, so that the tree is complete:
                // the indexer hands these answers to the flusher after it.
                self.hand_over(
                    &index_tx,
                    Durable {
                        appends: Vec::new(),
                        flushes,
                    },
                );
            } else if due {
                self.hand_over(&index_tx, Durable::default());
            }
            if durable.is_empty() {
                continue;
            }
            // With more work waiting, or the flusher busy, hand the fsync to the
            // flusher, so the next group is applied while it runs. Otherwise flush
            // here: one thread hand-off less for the waiting callers, which on a
            // machine with few cores is a scheduling delay less. And flush here
            // if the flusher is gone.
            if let Ok(m) = rx.try_recv() {
                next = Some(m);
            }
            let busy = next.is_some() || flush_tx.as_ref().is_some_and(|tx| !tx.idle());
            let durable = match &flush_tx {
                Some(tx) if busy => match tx.send(durable) {
                    Ok(()) => continue,
                    Err(unsent) => {
                        flush_tx = None;
                        unsent
                    }
                },
                _ => durable,
            };
            durable.answer(&flush_db(&self.db, &self.counters));
        }
        if killed {
            // No last records, no last flush: what a killed process leaves.
            drop(index_tx);
            if let Ok(h) = index_thread {
                let _ = h.join();
            }
            drop(flush_tx);
            if let Ok(h) = flush_thread {
                let _ = h.join();
            }
            return;
        }
        // Closing: store the records, then make everything durable.
        if !self.dirty.is_empty() {
            self.hand_over(&index_tx, Durable::default());
        }
        drop(index_tx);
        if let Ok(h) = index_thread {
            let _ = h.join();
        }
        drop(flush_tx);
        if let Ok(h) = flush_thread {
            let _ = h.join();
        }
        let _ = flush_db(&self.db, &self.counters);
    }

    /// Give the changed records to the indexer (and `then` to answer after it).
    fn hand_over(&mut self, index_tx: &mpsc::Sender<IndexJob>, then: Durable) {
        let records = {
            let held = lock(&self.shared.records);
            self.dirty
                .drain()
                .filter_map(|id| held.get(&id).map(|s| (id, s.clone())))
                .collect()
        };
        self.last_index = Instant::now();
        let job = IndexJob {
            records,
            claims: std::mem::take(&mut self.dirty_claims),
            applied: self.seq,
            then,
        };
        if let Err(mpsc::SendError(job)) = index_tx.send(job) {
            job.then.answer(&Err(StoreError::Closed));
        }
    }

    /// Apply one group. Buffered appends are answered here; the answers that must
    /// wait for an fsync are returned.
    fn commit(&mut self, jobs: Vec<Job>) -> Durable {
        if jobs.is_empty() {
            return Durable::default();
        }
        let started = Instant::now();
        let start = (self.seq, self.hash.clone());
        let mut group = Group::default();
        let mut staged: Vec<(bool, AppendReply, Result<Vec<AuditEvent>, StoreError>)> =
            Vec::with_capacity(jobs.len());
        for job in jobs {
            let Job {
                events,
                bodies,
                opts,
                reply,
            } = job;
            let result = self.stage(events, bodies, &opts, &mut group);
            staged.push((opts.durable, reply, result));
        }

        let mut puts: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        let first_seq = start.0 + 1;
        for (i, chunk) in group.lines.chunks(self.opts.block_events).enumerate() {
            let block = chunk.join(&b'\n');
            let at = first_seq + (i * self.opts.block_events) as u64;
            puts.push((bkey(at).to_vec(), block));
        }
        for (key, id) in &group.claimed {
            puts.push((dkey(key), id.0.to_bytes().to_vec()));
        }
        let keys = puts.len() as u64;
        // One key is written alone; more go in one atomic batch. A batch takes
        // sled's global write guard (every reader waits for it), so a group
        // of a single block, the common case, does without.
        let applied = match puts.len() {
            0 => Ok(()),
            1 => {
                let (k, v) = puts.pop().expect("one put");
                self.tree.insert(k, v).map(drop).map_err(io)
            }
            _ => {
                let mut batch = sled::Batch::default();
                for (k, v) in puts {
                    batch.insert(k, v);
                }
                self.tree.apply_batch(batch).map_err(io)
            }
        };
        add(&self.counters.apply_nanos, nanos_since(started));
        if let Err(e) = applied {
            // Nothing of this group is stored: roll the tip back and fail every job.
            (self.seq, self.hash) = start;
            for (_, reply, _) in staged {
                let _ = reply.send(Err(StoreError::Io(e.to_string())));
            }
            return Durable::default();
        }
        add(&self.counters.keys, keys);

        // Publish: records and claims first, then the tip, then the answers.
        {
            let mut held = lock(&self.shared.records);
            for (id, stored) in group.touched {
                held.insert(id, stored);
                self.dirty.insert(id);
            }
        }
        if !group.derived.is_empty() {
            let mut claims = lock(&self.shared.claims);
            for (key, id) in group.derived {
                claims.insert(key.clone(), id);
                self.dirty_claims.push((key, id));
            }
        }
        *lock(&self.shared.tip) = (self.seq, self.hash.clone());
        if keys > 0 {
            add(&self.counters.groups, 1);
        }
        add(&self.counters.jobs, staged.len() as u64);
        // Answer buffered appends at once; durable ones after the fsync.
        let mut durable = Durable::default();
        for (is_durable, reply, result) in staged {
            if let Ok(events) = &result {
                add(&self.counters.events, events.len() as u64);
            }
            match result {
                Ok(events) if is_durable => durable.appends.push((reply, events)),
                other => {
                    let _ = reply.send(other);
                }
            }
        }
        durable
    }

    /// The current record of a request: as changed by this group, as the writer
    /// holds it, or as stored. For a `received` event (`received`), the tree is
    /// not searched for an id above every stored record's.
    fn current(
        &self,
        id: RequestId,
        group: &Group,
        received: bool,
    ) -> Result<Option<Stored>, StoreError> {
        if let Some(s) = group.touched.get(&id) {
            return Ok(Some(s.clone()));
        }
        if let Some(s) = lock(&self.shared.records).get(&id) {
            return Ok(Some(s.clone()));
        }
        // Read the bound only after the in-memory records: the indexer raises it
        // before it stores a record and drops the record from memory only after,
        // so a record missing from memory here is either never received or
        // already under the bound.
        if received && *lock(&self.shared.stored_max) < Some(id) {
            return Ok(None);
        }
        match self.tree.get(idkey(b's', id)).map_err(io)? {
            Some(v) => Ok(Some(decode("request record", &v)?)),
            None => Ok(None),
        }
    }

    fn stage(
        &mut self,
        events: Vec<NewEvent>,
        bodies: Vec<Vec<u8>>,
        opts: &AppendOptions,
        group: &mut Group,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        if let Some(key) = &opts.dedup_key {
            if let Some(owner) = group.claimed.get(key).or_else(|| group.derived.get(key)) {
                // Claimed by an earlier job of this same group.
                return Err(StoreError::Duplicate(*owner));
            }
            if let Some(owner) = lock(&self.shared.claims).get(key) {
                return Err(StoreError::Duplicate(*owner));
            }
            if let Some(existing) = self.tree.get(dkey(key)).map_err(io)? {
                return Err(StoreError::Duplicate(id_from(&existing)?));
            }
        }
        if bodies.len() != events.len() {
            return Err(StoreError::Io("event bodies were not encoded".into()));
        }
        // Build every event first so a failure leaves the group untouched.
        let mut out = Vec::with_capacity(events.len());
        let mut stored = Vec::with_capacity(events.len());
        let mut seq = self.seq;
        let mut prev = self.hash.clone();
        let mut local: Ids<Stored> = Ids::default();
        for (ne, body_json) in events.into_iter().zip(bodies) {
            seq += 1;
            let time = Utc::now();
            let canonical = canonical_bytes_encoded(seq, &time, &ne.request_id, &body_json);
            let hash = chain_hash(&prev, &canonical);
            stored.push(event_json(canonical, &prev, &hash));
            let ev = audit_event(
                seq,
                time,
                ne.request_id,
                ne.body,
                std::mem::replace(&mut prev, hash.clone()),
                hash,
            );
            if let Some(id) = ev.request_id {
                let current = match local.remove(&id) {
                    Some(s) => Some(s),
                    None => {
                        let received = matches!(ev.body, EventBody::Received { .. });
                        self.current(id, group, received)?
                    }
                };
                local.insert(id, fold(current, &ev)?);
            }
            out.push(ev);
        }
        if let Some(key) = &opts.dedup_key {
            if let Some(first) = out.first() {
                if let Some(id) = first.request_id {
                    if claim_in(first).is_some_and(|(k, owner)| k == key && owner == id) {
                        group.derived.insert(key.clone(), id);
                    } else {
                        group.claimed.insert(key.clone(), id);
                    }
                }
            }
        }
        group.lines.extend(stored);
        group.touched.extend(local);
        self.seq = seq;
        self.hash = prev;
        Ok(out)
    }
}

#[async_trait]
impl AuditStore for SledStore {
    async fn append(
        &self,
        events: Vec<NewEvent>,
        opts: AppendOptions,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let bodies = events
            .iter()
            .map(|e| serde_json::to_vec(&e.body))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| StoreError::Io(format!("cannot encode an audit event: {e}")))?;
        let (reply, rx) = oneshot::channel();
        self.send(Msg::Append(Job {
            events,
            bodies,
            opts,
            reply,
        }))?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    async fn flush(&self) -> Result<(), StoreError> {
        let (reply, rx) = oneshot::channel();
        self.send(Msg::Flush(reply))?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    async fn request(&self, id: RequestId) -> Result<Option<RequestRecord>, StoreError> {
        Ok(self.stored(id)?.map(|s| s.record))
    }

    async fn request_events(&self, id: RequestId) -> Result<Vec<AuditEvent>, StoreError> {
        let Some(stored) = self.stored(id)? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::with_capacity(stored.seqs.len());
        let mut block: Option<(u64, sled::IVec, u64)> = None;
        // Events before the live start were archived (retention).
        let live_start = self.live_start()?;
        for seq in stored.seqs.into_iter().filter(|s| *s >= live_start) {
            // Reuse the block while it covers `seq`.
            let fits = block
                .as_ref()
                .is_some_and(|(start, _, end)| (*start..*end).contains(&seq));
            if !fits {
                block = match self.block_of(seq)? {
                    Some((start, v)) => {
                        let end = start + lines(&v).count() as u64;
                        Some((start, v, end))
                    }
                    None => None,
                };
            }
            let Some((start, v, _)) = &block else {
                return Err(StoreError::Corrupt(format!(
                    "event #{seq} of request {id} is not in the store"
                )));
            };
            let index = usize::try_from(seq - start).unwrap_or(usize::MAX);
            // The line at its position, or (if lines were removed) a search.
            let found = match lines(v).nth(index).map(|l| decode_line(*start, index, l)) {
                Some(Ok(ev)) if ev.seq == seq => Some(ev),
                _ => lines(v)
                    .filter_map(|l| serde_json::from_slice::<AuditEvent>(l).ok())
                    .find(|ev| ev.seq == seq),
            };
            match found {
                Some(ev) => out.push(ev),
                None => {
                    return Err(StoreError::Corrupt(format!(
                        "event #{seq} of request {id} is missing or does not decode"
                    )))
                }
            }
        }
        Ok(out)
    }

    async fn find_dedup(&self, key: &str) -> Result<Option<RequestId>, StoreError> {
        if let Some(id) = lock(&self.inner.shared.claims).get(key) {
            return Ok(Some(*id));
        }
        match self.inner.tree.get(dkey(key)).map_err(io)? {
            Some(v) => Ok(Some(id_from(&v)?)),
            None => Ok(None),
        }
    }

    async fn list_requests(
        &self,
        filter: &RequestFilter,
        before: Option<RequestId>,
        limit: usize,
    ) -> Result<Vec<RequestRecord>, StoreError> {
        // The writer's records supersede the tree's copies of the same requests.
        let (held, mut newer): (HashSet<RequestId>, Vec<RequestRecord>) = {
            let records = lock(&self.inner.shared.records);
            let held = records.keys().copied().collect();
            let newer = records
                .iter()
                .filter(|(id, e)| before.is_none_or(|b| **id < b) && filter.matches(&e.record))
                .map(|(_, e)| e.record.clone())
                .collect();
            (held, newer)
        };
        // Oldest last, so `pop` gives the newest.
        newer.sort_unstable_by_key(|r| r.request.id);
        let end = match before {
            Some(id) => idkey(b's', id).to_vec(),
            None => vec![b't'],
        };
        let mut tree = self.inner.tree.range(&[b's'][..]..&end[..]).rev();
        let mut next_stored = || -> Result<Option<RequestRecord>, StoreError> {
            for kv in tree.by_ref() {
                let (k, v) = kv.map_err(io)?;
                if held.contains(&id_from(&k[1..])?) {
                    continue;
                }
                let stored: Stored = decode("request record", &v)?;
                if filter.matches(&stored.record) {
                    return Ok(Some(stored.record));
                }
            }
            Ok(None)
        };
        let mut out = Vec::new();
        let mut from_tree = next_stored()?;
        while out.len() < limit {
            let take_held = match (newer.last(), &from_tree) {
                (None, None) => break,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (Some(h), Some(t)) => h.request.id > t.request.id,
            };
            if take_held {
                out.extend(newer.pop());
            } else {
                out.extend(from_tree.take());
                from_tree = next_stored()?;
            }
        }
        Ok(out)
    }

    async fn active_requests(&self) -> Result<Vec<RequestRecord>, StoreError> {
        let (held, mut out): (HashSet<RequestId>, Vec<RequestRecord>) = {
            let records = lock(&self.inner.shared.records);
            (
                records.keys().copied().collect(),
                records
                    .values()
                    .filter(|e| !e.record.state.is_terminal())
                    .map(|e| e.record.clone())
                    .collect(),
            )
        };
        for kv in self.inner.tree.scan_prefix(b"a") {
            let (k, _) = kv.map_err(io)?;
            let id = id_from(&k[1..])?;
            if held.contains(&id) {
                continue;
            }
            if let Some(r) = self.request(id).await? {
                if !r.state.is_terminal() {
                    out.push(r);
                }
            }
        }
        out.sort_unstable_by_key(|r| r.request.id);
        Ok(out)
    }

    async fn events(&self, after: u64, limit: usize) -> Result<Vec<AuditEvent>, StoreError> {
        let from = after.saturating_add(1);
        let first = self.block_of(from)?.map_or(0, |(start, _)| start);
        let mut out = Vec::new();
        for kv in self.inner.tree.range(bkey(first)..bkey(u64::MAX)) {
            let (k, v) = kv.map_err(io)?;
            let start = seq_of_bkey(&k)?;
            for (i, line) in lines(&v).enumerate() {
                if out.len() >= limit {
                    return Ok(out);
                }
                if start + (i as u64) < from {
                    continue;
                }
                let ev = decode_line(start, i, line)?;
                if ev.seq >= from {
                    out.push(ev);
                }
            }
        }
        Ok(out)
    }

    async fn head(&self) -> Result<(u64, String), StoreError> {
        Ok(lock(&self.inner.shared.tip).clone())
    }

    async fn verify(&self) -> Result<VerifyReport, StoreError> {
        let tree = self.inner.tree.clone();
        tokio::task::spawn_blocking(move || {
            let mut v = ChainVerifier::new();
            for kv in tree.scan_prefix(b"b") {
                let (k, block) = kv.map_err(io)?;
                let start = seq_of_bkey(&k)?;
                for (i, line) in lines(&block).enumerate() {
                    let ev: AuditEvent = match serde_json::from_slice(line) {
                        Ok(e) => e,
                        Err(e) => {
                            return Ok(v.report(Some(Broken {
                                seq: v.next_seq().unwrap_or(start + i as u64),
                                reason: format!(
                                    "the stored record does not decode ({e}): it was altered or damaged"
                                ),
                            })))
                        }
                    };
                    if let Err(b) = v.check(&ev) {
                        return Ok(v.report(Some(b)));
                    }
                }
            }
            Ok(v.finish())
        })
        .await
        .map_err(io)?
    }

    async fn size_on_disk(&self) -> Result<u64, StoreError> {
        self.inner.db.db.size_on_disk().map_err(io)
    }

    async fn archive(
        &self,
        through_seq: u64,
        dir: &Path,
    ) -> Result<Option<ArchiveReport>, StoreError> {
        let _one = self.inner.archiving.lock().await;
        self.recover_archive(dir).await?;
        // Every record stored first, so the removal below sees them.
        self.flush().await?;
        let start = self.live_start()?;
        let (tip, _) = self.head().await?;
        // Keep every event of requests still in flight, and the tip.
        let mut through = through_seq.min(tip.saturating_sub(1));
        for r in self.active_requests().await? {
            if let Some(first) = self
                .stored(r.request.id)?
                .and_then(|s| s.seqs.first().copied())
            {
                through = through.min(first.saturating_sub(1));
            }
        }
        if through < start {
            return Ok(None);
        }
        self.archive_through(start, through, dir).await.map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use youops_core::model::{Request, State, Transition};

    fn request(op: &str) -> Request {
        // `Request` is `#[non_exhaustive]`: built from its JSON outside core.
        serde_json::from_value(serde_json::json!({
            "id": RequestId::new(),
            "op": op,
            "args": {},
            "actor": {"frontend": "cli", "external_id": "ann"},
            "origin": {"frontend": "cli"},
            "created_at": Utc::now(),
            "digest": "ab".repeat(32),
        }))
        .expect("a request decodes")
    }

    fn received(r: &Request) -> NewEvent {
        NewEvent::request(
            r.id,
            EventBody::Received {
                request: Arc::new(r.clone()),
            },
        )
    }

    fn to(id: RequestId, state: State) -> NewEvent {
        NewEvent::request(id, EventBody::Transition(Transition::to(state)))
    }

    /// Wait until no earlier handle of the store in `dir` holds sled's lock:
    /// sled's IO threads hold it (an flock of `db`) a moment after the last
    /// handle is dropped.
    fn released(dir: &Path) {
        let Ok(f) = std::fs::File::open(dir.join("db")) else {
            return;
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        while f.try_lock().is_err() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Records never stored by the writer within the test (they stay in memory).
    fn lazy() -> SledOptions {
        SledOptions {
            index_interval: Duration::from_secs(3600),
            ..SledOptions::default()
        }
    }

    /// The ids of `active_requests`, in its order.
    async fn active_ids(store: &SledStore) -> Vec<RequestId> {
        store
            .active_requests()
            .await
            .unwrap()
            .iter()
            .map(|r| r.request.id)
            .collect()
    }

    async fn append(store: &SledStore, events: Vec<NewEvent>) -> Vec<AuditEvent> {
        store
            .append(events, AppendOptions::durable())
            .await
            .expect("append")
    }

    #[tokio::test]
    async fn records_in_memory_and_in_the_tree_read_as_one() {
        let dir = tempfile::tempdir().unwrap();
        released(dir.path());
        let store = SledStore::open_with(dir.path(), lazy()).unwrap();
        // Five requests: the first three finished and stored, two in memory only.
        let reqs: Vec<Request> = (0..5).map(|i| request(&format!("op{i}"))).collect();
        for r in &reqs[..3] {
            append(&store, vec![received(r), to(r.id, State::Succeeded)]).await;
        }
        store.flush().await.unwrap();
        assert!(lock(&store.inner.shared.records).is_empty());
        // One stored request changes again (a notice) and stays in memory.
        append(
            &store,
            vec![NewEvent::request(
                reqs[0].id,
                EventBody::Notice {
                    source: "test".into(),
                    kind: "late".into(),
                    message: "after the end".into(),
                    data: serde_json::Value::Null,
                },
            )],
        )
        .await;
        append(
            &store,
            vec![received(&reqs[3]), to(reqs[3].id, State::Running)],
        )
        .await;
        append(&store, vec![received(&reqs[4])]).await;
        assert_eq!(lock(&store.inner.shared.records).len(), 3);

        let all = store
            .list_requests(&RequestFilter::default(), None, 10)
            .await
            .unwrap();
        let ids: Vec<RequestId> = all.iter().map(|r| r.request.id).collect();
        // Ids sort by creation time (to the millisecond; random within one).
        let mut want: Vec<RequestId> = reqs.iter().map(|r| r.id).collect();
        want.sort_unstable_by(|a, b| b.cmp(a));
        assert_eq!(ids, want, "newest first, each once");
        // Paging across the two sources, in every split.
        for split in 1..5 {
            let page = store
                .list_requests(&RequestFilter::default(), Some(want[split - 1]), 2)
                .await
                .unwrap();
            let ids: Vec<RequestId> = page.iter().map(|r| r.request.id).collect();
            assert_eq!(
                ids,
                want[split..(split + 2).min(5)].to_vec(),
                "after {split}"
            );
        }
        let running = RequestFilter {
            states: vec![State::Running],
            ..RequestFilter::default()
        };
        let only = store.list_requests(&running, None, 10).await.unwrap();
        assert_eq!(only.len(), 1);
        assert_eq!(only[0].request.id, reqs[3].id);

        let active = active_ids(&store).await;
        let mut want_active = vec![reqs[3].id, reqs[4].id];
        want_active.sort_unstable();
        assert_eq!(active, want_active);
        let events = store.request_events(reqs[0].id).await.unwrap();
        assert_eq!(events.len(), 3, "{events:?}");
        assert!(matches!(events[2].body, EventBody::Notice { .. }));
        assert_eq!(
            store.request(reqs[3].id).await.unwrap().unwrap().state,
            State::Running
        );
    }

    #[tokio::test]
    async fn a_second_received_for_an_id_is_refused_wherever_its_record_is() {
        let dir = tempfile::tempdir().unwrap();
        let (old, held) = (request("old"), request("held"));
        {
            released(dir.path());
            let store = SledStore::open(dir.path()).unwrap();
            append(&store, vec![received(&old), to(old.id, State::Succeeded)]).await;
            // `flush` waits for the indexer: the record is in the tree only.
            store.flush().await.unwrap();
            assert!(lock(&store.inner.shared.records).is_empty());
            let again = store
                .append(vec![received(&old)], AppendOptions::durable())
                .await;
            assert!(
                matches!(&again, Err(StoreError::Io(m)) if m.contains("already received")),
                "record in the tree: {again:?}"
            );
        }
        // Reopened: the bound on stored ids comes from the tree.
        released(dir.path());
        let store = SledStore::open_with(dir.path(), lazy()).unwrap();
        assert_eq!(*lock(&store.inner.shared.stored_max), Some(old.id));
        let again = store
            .append(vec![received(&old)], AppendOptions::durable())
            .await;
        assert!(
            matches!(&again, Err(StoreError::Io(m)) if m.contains("already received")),
            "after reopen: {again:?}"
        );
        // A newer id held in memory only (not yet stored) is refused too.
        append(&store, vec![received(&held)]).await;
        let again = store
            .append(vec![received(&held)], AppendOptions::durable())
            .await;
        assert!(
            matches!(&again, Err(StoreError::Io(m)) if m.contains("already received")),
            "record in memory: {again:?}"
        );
        // The refusals left the chain intact.
        assert!(store.verify().await.unwrap().broken.is_none());
    }

    #[tokio::test]
    async fn records_lost_in_a_crash_are_rebuilt_from_the_events() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (request("a"), request("b"));
        {
            released(dir.path());
            let store = SledStore::open(dir.path()).unwrap();
            append(&store, vec![received(&a), to(a.id, State::Succeeded)]).await;
            store.flush().await.unwrap();
            append(&store, vec![received(&b), to(b.id, State::Running)]).await;
            append(&store, vec![to(a.id, State::Failed)]).await;
        }
        // What a crash before the records were stored leaves: the events (durable),
        // the records as of an earlier `m:applied`.
        {
            released(dir.path());
            let db = sled::open(dir.path()).unwrap();
            let tree = db.open_tree("audit").unwrap();
            tree.remove(idkey(b's', b.id)).unwrap();
            tree.remove(idkey(b'a', b.id)).unwrap();
            tree.insert(APPLIED_KEY, &2u64.to_be_bytes()[..]).unwrap();
            let stale = Stored {
                seqs: vec![1, 2],
                record: {
                    let evs: Vec<AuditEvent> = lines(&tree.get(bkey(1)).unwrap().unwrap())
                        .map(|l| serde_json::from_slice(l).unwrap())
                        .collect();
                    let mut r = RequestRecord::new(Arc::new(a.clone()), &evs[0]);
                    r.apply(&evs[1]);
                    r
                },
            };
            tree.insert(idkey(b's', a.id), serde_json::to_vec(&stale).unwrap())
                .unwrap();
            db.flush().unwrap();
        }
        released(dir.path());
        let store = SledStore::open(dir.path()).unwrap();
        let rb = store.request(b.id).await.unwrap().expect("rebuilt");
        assert_eq!(rb.state, State::Running);
        let ra = store.request(a.id).await.unwrap().unwrap();
        assert_eq!(ra.state, State::Failed, "the later event was replayed once");
        assert_eq!(store.request_events(a.id).await.unwrap().len(), 3);
        assert_eq!(active_ids(&store).await, vec![b.id]);
        assert!(store.verify().await.unwrap().ok());
    }

    #[tokio::test]
    async fn records_stored_ahead_of_m_applied_are_not_replayed_twice() {
        // The indexer writes records key by key and moves `m:applied` last: a
        // crash in between leaves records that already hold events after it.
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (request("a"), request("b"));
        let (ra, rb) = {
            released(dir.path());
            let store = SledStore::open(dir.path()).unwrap();
            append(&store, vec![received(&a), to(a.id, State::Running)]).await;
            append(&store, vec![received(&b)]).await;
            append(&store, vec![to(a.id, State::Succeeded)]).await;
            store.flush().await.unwrap();
            (
                store.request(a.id).await.unwrap().unwrap(),
                store.request(b.id).await.unwrap().unwrap(),
            )
        };
        {
            released(dir.path());
            let db = sled::open(dir.path()).unwrap();
            let tree = db.open_tree("audit").unwrap();
            // Every record is in, `m:applied` is still before all of it, and b's
            // `a` key did not make it.
            tree.insert(APPLIED_KEY, &0u64.to_be_bytes()[..]).unwrap();
            tree.remove(idkey(b'a', b.id)).unwrap();
            db.flush().unwrap();
        }
        released(dir.path());
        let store = SledStore::open(dir.path()).unwrap();
        let again_a = store.request(a.id).await.unwrap().unwrap();
        let again_b = store.request(b.id).await.unwrap().unwrap();
        assert_eq!(again_a.state, State::Succeeded);
        assert_eq!(
            serde_json::to_value(&again_a).unwrap(),
            serde_json::to_value(&ra).unwrap(),
            "a's events were not folded in a second time"
        );
        assert_eq!(
            serde_json::to_value(&again_b).unwrap(),
            serde_json::to_value(&rb).unwrap()
        );
        assert_eq!(store.request_events(a.id).await.unwrap().len(), 3);
        assert_eq!(active_ids(&store).await, vec![b.id], "b's `a` key is back");
        assert!(store.verify().await.unwrap().ok());
    }

    /// A request as a frontend submits it: the delivery's dedup key on the
    /// request and on the append.
    async fn deliver(store: &SledStore, key: &str) -> Result<RequestId, StoreError> {
        let mut r = request("delivered");
        r.dedup_key = Some(key.to_string());
        let opts = {
            let mut o = AppendOptions::durable();
            o.dedup_key = Some(key.to_string());
            o
        };
        store.append(vec![received(&r)], opts).await.map(|_| r.id)
    }

    #[tokio::test]
    async fn a_claim_carried_by_its_request_holds_before_and_after_it_is_stored() {
        let dir = tempfile::tempdir().unwrap();
        let id = {
            released(dir.path());
            let store = SledStore::open_with(dir.path(), lazy()).unwrap();
            let before = store.stats();
            let id = deliver(&store, "delivery-1").await.unwrap();
            // One block, no batch: the claim waits in memory for the indexer.
            assert_eq!(store.stats().since(&before).keys, 1);
            assert!(store.inner.tree.get(dkey("delivery-1")).unwrap().is_none());
            assert_eq!(store.find_dedup("delivery-1").await.unwrap(), Some(id));
            match deliver(&store, "delivery-1").await {
                Err(StoreError::Duplicate(owner)) => assert_eq!(owner, id),
                other => panic!("a duplicate delivery was not refused: {other:?}"),
            }
            // `flush` stores records and claims.
            store.flush().await.unwrap();
            assert!(store.inner.tree.get(dkey("delivery-1")).unwrap().is_some());
            assert!(lock(&store.inner.shared.claims).is_empty());
            assert!(matches!(
                deliver(&store, "delivery-1").await,
                Err(StoreError::Duplicate(owner)) if owner == id
            ));
            id
        };
        // A crash before the indexer stored it: the event is durable, the claim
        // and `m:applied` are not.
        {
            released(dir.path());
            let db = sled::open(dir.path()).unwrap();
            let tree = db.open_tree("audit").unwrap();
            tree.remove(dkey("delivery-1")).unwrap();
            tree.insert(APPLIED_KEY, &0u64.to_be_bytes()[..]).unwrap();
            db.flush().unwrap();
        }
        released(dir.path());
        let store = SledStore::open(dir.path()).unwrap();
        assert_eq!(store.find_dedup("delivery-1").await.unwrap(), Some(id));
        assert!(matches!(
            deliver(&store, "delivery-1").await,
            Err(StoreError::Duplicate(owner)) if owner == id
        ));
        let other = deliver(&store, "delivery-2").await.unwrap();
        assert_ne!(other, id);
        assert!(store.verify().await.unwrap().ok());
    }

    #[tokio::test]
    async fn a_claim_its_events_do_not_carry_is_stored_with_them() {
        let dir = tempfile::tempdir().unwrap();
        released(dir.path());
        let store = SledStore::open_with(dir.path(), lazy()).unwrap();
        let r = request("plain");
        let opts = {
            let mut o = AppendOptions::durable();
            o.dedup_key = Some("elsewhere".into());
            o
        };
        store.append(vec![received(&r)], opts).await.unwrap();
        // Not rebuildable from the events, so written in the group's batch.
        assert!(store.inner.tree.get(dkey("elsewhere")).unwrap().is_some());
        assert_eq!(store.find_dedup("elsewhere").await.unwrap(), Some(r.id));
    }

    #[tokio::test]
    async fn a_group_is_stored_in_few_keys_and_events_read_back_in_order() {
        let dir = tempfile::tempdir().unwrap();
        released(dir.path());
        let store = SledStore::open_with(
            dir.path(),
            SledOptions {
                block_events: 4,
                ..lazy()
            },
        )
        .unwrap();
        let before = store.stats();
        // 50 requests appended concurrently share groups and blocks.
        let mut tasks = Vec::new();
        for i in 0..50 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let r = request(&format!("op{i}"));
                append(&store, vec![received(&r), to(r.id, State::Succeeded)]).await;
                r.id
            }));
        }
        let mut ids = Vec::new();
        for t in tasks {
            ids.push(t.await.unwrap());
        }
        let stats = store.stats().since(&before);
        assert_eq!(stats.events, 100);
        assert!(stats.keys <= stats.events / 4 + stats.groups, "{stats:?}");
        let events = store.events(0, usize::MAX).await.unwrap();
        assert_eq!(
            events.iter().map(|e| e.seq).collect::<Vec<_>>(),
            (1..=100).collect::<Vec<_>>()
        );
        assert_eq!(store.events(37, 5).await.unwrap()[0].seq, 38);
        assert_eq!(store.head().await.unwrap().0, 100);
        for id in ids {
            let evs = store.request_events(id).await.unwrap();
            assert_eq!(evs.len(), 2);
            assert!(evs.iter().all(|e| e.request_id == Some(id)));
        }
        assert!(store.verify().await.unwrap().ok());
    }

    fn read_jsonl(path: &Path) -> Vec<AuditEvent> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[tokio::test]
    async fn archived_events_leave_a_verifiable_chain_and_a_verifiable_archive() {
        let dir = tempfile::tempdir().unwrap();
        let archive = dir.path().join("archive");
        released(&dir.path().join("store"));
        let store = SledStore::open_with(
            dir.path().join("store"),
            SledOptions {
                block_events: 3,
                ..SledOptions::default()
            },
        )
        .unwrap();
        // 8 finished requests (16 events), then one still running (2 events).
        let done: Vec<Request> = (0..8).map(|i| request(&format!("op{i}"))).collect();
        for r in &done {
            append(&store, vec![received(r)]).await;
            append(&store, vec![to(r.id, State::Succeeded)]).await;
        }
        let running = request("long");
        append(
            &store,
            vec![received(&running), to(running.id, State::Running)],
        )
        .await;
        let all_before = store.events(0, usize::MAX).await.unwrap();

        // Asked for everything: only what precedes the running request goes.
        let report = store
            .archive(u64::MAX, &archive)
            .await
            .unwrap()
            .expect("something to archive");
        assert_eq!((report.first_seq, report.through_seq), (1, 16));
        assert_eq!(report.checkpoint_seq, 19);
        assert_eq!(report.records_removed, 8);
        assert_eq!(report.last_hash, all_before[15].hash);
        let archived = read_jsonl(&report.file);
        assert_eq!(archived, all_before[..16].to_vec(), "byte-exact copy");
        assert!(youops_core::audit::verify_events(archived.clone()).ok());

        // The live chain starts at 17 and its checkpoint accounts for 1..=16.
        let live = store.events(0, usize::MAX).await.unwrap();
        assert_eq!(live.first().map(|e| e.seq), Some(17));
        let v = store.verify().await.unwrap();
        assert!(v.ok(), "{v:?}");
        assert_eq!((v.checked, v.starts_at_checkpoint), (3, Some(17)));
        assert!(youops_core::audit::verify_events(live.clone()).ok());
        // Archive then live verify as one sequence; live alone without its
        // checkpoint does not.
        let whole: Vec<AuditEvent> = archived.iter().chain(&live).cloned().collect();
        assert_eq!(youops_core::audit::verify_events(whole).checked, 19);
        let cut = youops_core::audit::verify_events(live[..2].to_vec());
        assert_eq!(cut.broken.map(|b| b.seq), Some(17));

        // Records: archived requests are gone, the running one is whole.
        assert!(store.request(done[0].id).await.unwrap().is_none());
        assert_eq!(store.request_events(running.id).await.unwrap().len(), 2);
        assert_eq!(store.head().await.unwrap().0, 19);

        // After a reopen, the chain continues and a second archive follows on.
        drop(store);
        released(&dir.path().join("store"));
        let store = SledStore::open(dir.path().join("store")).unwrap();
        append(&store, vec![to(running.id, State::Succeeded)]).await;
        let second = store.archive(u64::MAX, &archive).await.unwrap().unwrap();
        assert_eq!((second.first_seq, second.through_seq), (17, 19));
        let files = youops_core::audit::archive_files(&archive).unwrap();
        assert_eq!(files.len(), 2);
        let mut chain: Vec<AuditEvent> = files.iter().flat_map(|f| read_jsonl(f)).collect();
        chain.extend(store.events(0, usize::MAX).await.unwrap());
        let r = youops_core::audit::verify_events(chain);
        assert!(r.ok(), "{r:?}");
        assert_eq!(r.checked, 21);
        assert!(store.verify().await.unwrap().ok());
        // Nothing before the live start is left to archive.
        assert!(store.archive(19, &archive).await.unwrap().is_none());
    }

    /// A store of `n` finished requests (two events each), blocks of 3 events.
    async fn finished_store(path: &Path, n: usize) -> (SledStore, Vec<Request>) {
        let store = SledStore::open_with(
            path,
            SledOptions {
                block_events: 3,
                ..SledOptions::default()
            },
        )
        .unwrap();
        let done: Vec<Request> = (0..n).map(|i| request(&format!("op{i}"))).collect();
        for r in &done {
            append(&store, vec![received(r)]).await;
            append(&store, vec![to(r.id, State::Succeeded)]).await;
        }
        (store, done)
    }

    /// Verify the archives in `dir` and the store as one chain.
    async fn verify_all(store: &SledStore, dir: &Path) -> youops_core::audit::ArchivesVerdict {
        let files = youops_core::audit::archive_files(dir).unwrap();
        youops_core::audit::verify_with_archives(store, &files)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn an_archive_cut_short_before_its_checkpoint_is_dropped_and_redone() {
        let dir = tempfile::tempdir().unwrap();
        let archive = dir.path().join("archive");
        let (store, done) = finished_store(&dir.path().join("store"), 6).await;
        // A first archive, whole, so the cut one is not at the chain's start.
        let first = store.archive(4, &archive).await.unwrap().unwrap();
        assert_eq!((first.first_seq, first.through_seq), (1, 4));
        // The crash: the file is written (and a temporary one), nothing else.
        let cut = store
            .archive_steps(5, 9, &archive, ArchiveStep::File)
            .await
            .unwrap();
        std::fs::write(
            archive.join("audit-000000000010-000000000012.jsonl.tmp"),
            "half",
        )
        .unwrap();
        drop(store);
        released(&dir.path().join("store"));
        let store = SledStore::open(dir.path().join("store")).unwrap();
        // Meanwhile the archives and the store verify; the overlap is named.
        let v = verify_all(&store, &archive).await;
        assert!(v.report.ok(), "{v:?}");
        assert_eq!((v.archived, v.overlap), (9, 5));
        // The next archive drops the cut file (no checkpoint) and archives anew.
        let again = store.archive(10, &archive).await.unwrap().unwrap();
        assert_eq!((again.first_seq, again.through_seq), (5, 10));
        assert!(!cut.file.exists(), "the cut archive is gone");
        let names: Vec<String> = std::fs::read_dir(&archive)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
        let v = verify_all(&store, &archive).await;
        assert!(v.report.ok(), "{v:?}");
        assert_eq!((v.archived, v.overlap), (10, 0));
        assert!(store.verify().await.unwrap().ok());
        assert!(store.request(done[4].id).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn an_archive_cut_short_after_its_checkpoint_is_finished() {
        let dir = tempfile::tempdir().unwrap();
        let archive = dir.path().join("archive");
        let (store, done) = finished_store(&dir.path().join("store"), 6).await;
        let cut = store
            .archive_steps(1, 8, &archive, ArchiveStep::Checkpoint)
            .await
            .unwrap();
        assert_eq!(cut.checkpoint_seq, 13);
        drop(store);
        released(&dir.path().join("store"));
        let store = SledStore::open(dir.path().join("store")).unwrap();
        let v = verify_all(&store, &archive).await;
        assert!(v.report.ok(), "{v:?}");
        assert_eq!((v.archived, v.overlap), (8, 8));
        assert!(store.request(done[0].id).await.unwrap().is_some());
        // Asked for nothing new, the next archive still finishes the cut one.
        assert!(store.archive(8, &archive).await.unwrap().is_none());
        assert_eq!(store.events(0, 1).await.unwrap()[0].seq, 9);
        assert!(store.request(done[0].id).await.unwrap().is_none());
        assert!(store.request(done[3].id).await.unwrap().is_none());
        assert!(store.request(done[4].id).await.unwrap().is_some());
        let v = verify_all(&store, &archive).await;
        assert!(v.report.ok(), "{v:?}");
        assert_eq!((v.archived, v.overlap), (8, 0));
        assert_eq!(v.report.checked, 13);
        assert!(store.verify().await.unwrap().ok());
        assert_eq!(
            youops_core::audit::archive_files(&archive).unwrap(),
            [cut.file]
        );
    }

    #[tokio::test]
    async fn an_overlap_that_differs_from_the_archive_is_broken_and_a_stray_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let archive = dir.path().join("archive");
        let (store, _) = finished_store(&dir.path().join("store"), 4).await;
        let cut = store
            .archive_steps(1, 4, &archive, ArchiveStep::File)
            .await
            .unwrap();
        // Another chain's records in the archive: each verifies, the junction not.
        let (other, _) = finished_store(&dir.path().join("other"), 2).await;
        let foreign: Vec<String> = other
            .events(0, 4)
            .await
            .unwrap()
            .iter()
            .map(|e| serde_json::to_string(e).unwrap())
            .collect();
        std::fs::write(&cut.file, foreign.join("\n") + "\n").unwrap();
        let v = verify_all(&store, &archive).await;
        let b = v.report.broken.expect("broken");
        assert_eq!(b.seq, 4, "{b}");
        assert!(b.reason.contains("differs from the archived one"), "{b}");
        assert_eq!(v.broken_in, None);
        // A file that claims records the store does not start at is not touched.
        std::fs::remove_file(&cut.file).unwrap();
        let stray = archive.join(youops_core::audit::archive_file_name(3, 5));
        std::fs::write(&stray, "").unwrap();
        let err = store.archive(6, &archive).await.unwrap_err();
        assert!(err.to_string().contains("the store starts at #1"), "{err}");
        assert!(stray.exists());
    }

    #[tokio::test]
    async fn a_new_store_beside_an_old_archive_directory_never_touches_the_archives() {
        let dir = tempfile::tempdir().unwrap();
        let archive = dir.path().join("archive");
        let (old, _) = finished_store(&dir.path().join("old"), 6).await;
        let kept = old.archive(8, &archive).await.unwrap().unwrap();
        let kept_text = std::fs::read_to_string(&kept.file).unwrap();
        drop(old);
        // A new store (its #1.. are other records) pointed at the same directory.
        let (new, _) = finished_store(&dir.path().join("new"), 6).await;
        let err = new.archive(10, &archive).await.unwrap_err();
        assert!(
            err.to_string()
                .contains("its last record is not the store's #8"),
            "{err}"
        );
        assert_eq!(std::fs::read_to_string(&kept.file).unwrap(), kept_text);
        assert_eq!(
            youops_core::audit::archive_files(&archive).unwrap(),
            [kept.file]
        );
        // A shorter new store: no record #8 at all.
        let (short, _) = finished_store(&dir.path().join("short"), 2).await;
        let err = short.archive(2, &archive).await.unwrap_err();
        assert!(
            err.to_string().contains("the store has no record #8"),
            "{err}"
        );
        assert_eq!(new.events(0, 1).await.unwrap()[0].seq, 1, "nothing removed");
    }

    #[test]
    fn archive_file_names_parse_back() {
        use youops_core::audit::{archive_file_name, parse_archive_file_name};
        assert_eq!(
            parse_archive_file_name(&archive_file_name(17, 1_234_567)),
            Some((17, 1_234_567))
        );
        let big = archive_file_name(1, 10_000_000_000_000);
        assert_eq!(parse_archive_file_name(&big), Some((1, 10_000_000_000_000)));
        for bad in [
            "audit-1-2.jsonl",
            "audit-000000000001-000000000002.jsonl.tmp",
            "audit-00000000000x-000000000002.jsonl",
            "audit-000000000001.jsonl",
            "notes.txt",
        ] {
            assert_eq!(parse_archive_file_name(bad), None, "{bad}");
        }
    }

    /// Rounds of traffic, each archived away: sled's log file stops growing,
    /// because its log cleaning (its timer thread, `gc_interval`) moves the
    /// live pages out of mostly-dead segments so their space is reused. Without
    /// the cleaning the file grew by about a round's worth every round.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn archiving_rounds_keep_the_store_file_bounded() {
        use std::os::unix::fs::MetadataExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store");
        let archive = dir.path().join("archive");
        let store = SledStore::open_with(
            &path,
            SledOptions {
                gc_interval: Some(Duration::from_millis(20)),
                cache_capacity: 4 << 20,
                ..SledOptions::default()
            },
        )
        .unwrap();
        // Allocated bytes of sled's log file after each round.
        let mut sizes = Vec::new();
        for _round in 0..12 {
            // As a daemon writes them: each request claims a dedup key (kept
            // forever, so live pages stay spread over the log), then moves on.
            let mut pending = Vec::new();
            for i in 0..1000u32 {
                let mut r = request("round.op");
                r.provenance.insert("pad".into(), "x".repeat(400));
                r.dedup_key = Some(format!("delivery-{}-{i}", r.id));
                let opts = {
                    let mut o = AppendOptions::buffered();
                    o.dedup_key = r.dedup_key.clone();
                    o
                };
                store.append(vec![received(&r)], opts).await.unwrap();
                pending.push(r.id);
                if pending.len() == 50 {
                    let events = pending
                        .drain(..)
                        .flat_map(|id| [to(id, State::Running), to(id, State::Succeeded)])
                        .collect();
                    store
                        .append(events, AppendOptions::buffered())
                        .await
                        .unwrap();
                }
            }
            store.archive(u64::MAX, &archive).await.unwrap().unwrap();
            // Give the cleaning thread a moment, as a daemon's minute would.
            tokio::time::sleep(Duration::from_millis(300)).await;
            sizes.push(std::fs::metadata(path.join("db")).unwrap().blocks() * 512);
        }
        // Each round archives ~2 MB of events (1,000 requests). The file
        // settles at a few rounds' worth of segments and stays there (7–9 MB
        // here); without the cleaning it passed 4× its early size by round 12.
        // The margin of 2×, and taking the smallest of the last rounds, are for
        // a loaded machine, where the cleaning lags a round behind; without
        // cleaning the file only grows, so every late round is over the bound.
        let settled = sizes[..4].iter().max().copied().unwrap_or_default();
        let last = sizes[8..].iter().min().copied().unwrap_or_default();
        assert!(
            last <= settled * 2,
            "the store file kept growing: {sizes:?}"
        );
        assert!(store.verify().await.unwrap().ok());
    }

    #[tokio::test]
    async fn blob_files_sled_writes_for_large_values_are_synced_too() {
        let dir = tempfile::tempdir().unwrap();
        released(dir.path());
        let store = SledStore::open(dir.path()).unwrap();
        // A block far above sled's inline limit (a quarter of its 512 KiB
        // segments) goes to a file of its own in `blobs/`.
        let big = NewEvent::global(EventBody::Notice {
            source: "test".into(),
            kind: "big".into(),
            message: "x".repeat(400 << 10),
            data: serde_json::Value::Null,
        });
        append(&store, vec![big]).await;
        let on_disk = names_in(&dir.path().join("blobs")).unwrap();
        assert!(!on_disk.is_empty(), "sled wrote no blob file");
        let seen = lock(&store.inner.db.sync.seen);
        for name in &on_disk {
            assert!(seen.blobs.contains(name), "{name:?} was not synced");
        }
        assert!(seen.entries.iter().any(|n| n == "db"), "{:?}", seen.entries);
    }

    #[test]
    fn a_store_of_the_earlier_format_is_refused_plainly() {
        let dir = tempfile::tempdir().unwrap();
        {
            released(dir.path());
            let db = sled::open(dir.path()).unwrap();
            let tree = db.open_tree("audit").unwrap();
            tree.insert(b"e\0\0\0\0\0\0\0\x01", &b"{}"[..]).unwrap();
            db.flush().unwrap();
        }
        released(dir.path());
        released(dir.path());
        let err = SledStore::open(dir.path()).unwrap_err();
        assert!(err.to_string().contains("store format 1"), "{err}");
    }
}
