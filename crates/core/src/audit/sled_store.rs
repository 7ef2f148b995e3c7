//! The embedded audit store on sled 0.34, with group commit.
//!
//! One sled tree holds everything, so that one `apply_batch` is atomic across the
//! event, its indexes and the request record:
//!
//! | key | value |
//! |---|---|
//! | `e` + seq (u64 BE) | event JSON |
//! | `r` + request id (16 B) + seq | empty (events of a request) |
//! | `s` + request id | request record JSON |
//! | `a` + request id | empty (request not terminal yet) |
//! | `d` + dedup key | request id (16 B) |
//!
//! A single writer thread owns the chain tip. It takes every append waiting in its
//! queue, applies them as one batch, answers the buffered ones, and — if any of them
//! asked for durability — hands the rest to a flusher thread, which fsyncs once for
//! everything applied so far before answering them. Concurrent requests therefore
//! share flushes instead of paying one each, and the next group is hashed and
//! applied while the last one is being flushed. Callers encode event bodies
//! (`append` runs on their threads), so the writer only frames, hashes and stores
//! them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::Instant;

use async_trait::async_trait;
use chrono::Utc;
use tokio::sync::oneshot;

use super::{
    canonical_bytes_encoded, chain_hash, event_json, AppendOptions, AuditStore, ChainVerifier,
    StoreError, VerifyReport, GENESIS_HASH,
};
use crate::model::{AuditEvent, EventBody, NewEvent, RequestFilter, RequestId, RequestRecord};

/// Tuning of the sled store.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SledOptions {
    /// Most events applied in one group.
    pub max_batch_events: usize,
    /// sled page cache size in bytes.
    pub cache_capacity: u64,
}

impl Default for SledOptions {
    fn default() -> Self {
        SledOptions {
            max_batch_events: 8192,
            cache_capacity: 64 << 20,
        }
    }
}

/// Counters of the writer thread since the store was opened, for benchmarks and
/// metrics: how well group commit is sharing flushes, and where the time goes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SledStats {
    /// Groups committed (one `apply_batch` each).
    pub groups: u64,
    /// Append calls answered.
    pub jobs: u64,
    /// Events appended.
    pub events: u64,
    /// fsyncs (`Db::flush`) done.
    pub flushes: u64,
    /// Nanoseconds spent building and applying batches (hashing, encoding, sled).
    pub apply_nanos: u64,
    /// Nanoseconds spent in `Db::flush`.
    pub flush_nanos: u64,
}

impl SledStats {
    /// The counters accumulated between `earlier` and `self`.
    pub fn since(&self, earlier: &SledStats) -> SledStats {
        SledStats {
            groups: self.groups - earlier.groups,
            jobs: self.jobs - earlier.jobs,
            events: self.events - earlier.events,
            flushes: self.flushes - earlier.flushes,
            apply_nanos: self.apply_nanos - earlier.apply_nanos,
            flush_nanos: self.flush_nanos - earlier.flush_nanos,
        }
    }
}

#[derive(Debug, Default)]
struct Counters {
    groups: AtomicU64,
    jobs: AtomicU64,
    events: AtomicU64,
    flushes: AtomicU64,
    apply_nanos: AtomicU64,
    flush_nanos: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> SledStats {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        SledStats {
            groups: g(&self.groups),
            jobs: g(&self.jobs),
            events: g(&self.events),
            flushes: g(&self.flushes),
            apply_nanos: g(&self.apply_nanos),
            flush_nanos: g(&self.flush_nanos),
        }
    }
}

fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

fn nanos_since(t: Instant) -> u64 {
    u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

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
}

/// The sled-backed [`AuditStore`].
#[derive(Debug, Clone)]
pub struct SledStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    db: sled::Db,
    tree: sled::Tree,
    path: PathBuf,
    counters: Arc<Counters>,
    tx: Mutex<Option<mpsc::Sender<Msg>>>,
    writer: Mutex<Option<thread::JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Ok(mut tx) = self.tx.lock() {
            tx.take();
        }
        if let Ok(mut w) = self.writer.lock() {
            if let Some(h) = w.take() {
                let _ = h.join();
            }
        }
        let _ = self.db.flush();
    }
}

fn io(e: impl std::fmt::Display) -> StoreError {
    StoreError::Io(e.to_string())
}

fn ekey(seq: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = b'e';
    k[1..].copy_from_slice(&seq.to_be_bytes());
    k
}

fn rkey(id: RequestId, seq: u64) -> [u8; 25] {
    let mut k = [0u8; 25];
    k[0] = b'r';
    k[1..17].copy_from_slice(&id.0.to_bytes());
    k[17..].copy_from_slice(&seq.to_be_bytes());
    k
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
        let tree = db.open_tree("audit").map_err(io)?;
        let (seq, hash) = read_head(&tree)?;
        let (tx, rx) = mpsc::channel();
        let counters = Arc::new(Counters::default());
        let writer = Writer {
            counters: counters.clone(),
            db: db.clone(),
            tree: tree.clone(),
            seq,
            hash,
            records: HashMap::new(),
            max_batch: opts.max_batch_events.max(1),
        };
        let handle = thread::Builder::new()
            .name("youops-audit-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(io)?;
        Ok(SledStore {
            inner: Arc::new(Inner {
                db,
                tree,
                path,
                counters,
                tx: Mutex::new(Some(tx)),
                writer: Mutex::new(Some(handle)),
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

    /// The raw sled tree, for tools and tests that inspect stored bytes.
    pub fn raw_tree(&self) -> &sled::Tree {
        &self.inner.tree
    }

    /// The key under which event `seq` is stored in [`raw_tree`](Self::raw_tree).
    pub fn event_key(seq: u64) -> Vec<u8> {
        ekey(seq).to_vec()
    }

    fn send(&self, msg: Msg) -> Result<(), StoreError> {
        let guard = self.inner.tx.lock().map_err(|_| StoreError::Closed)?;
        guard
            .as_ref()
            .ok_or(StoreError::Closed)?
            .send(msg)
            .map_err(|_| StoreError::Closed)
    }

    fn event(&self, seq: u64) -> Result<Option<AuditEvent>, StoreError> {
        match self.inner.tree.get(ekey(seq)).map_err(io)? {
            Some(v) => Ok(Some(decode(&format!("event #{seq}"), &v)?)),
            None => Ok(None),
        }
    }
}

fn read_head(tree: &sled::Tree) -> Result<(u64, String), StoreError> {
    match tree.scan_prefix(b"e").next_back() {
        None => Ok((0, GENESIS_HASH.to_string())),
        Some(kv) => {
            let (k, v) = kv.map_err(io)?;
            let seq = u64::from_be_bytes(
                k[1..]
                    .try_into()
                    .map_err(|_| StoreError::Corrupt("event key".into()))?,
            );
            // The tip must decode; a damaged tip is reported by `verify`, and we
            // still chain onto its stored hash field when it is readable.
            let hash = serde_json::from_slice::<serde_json::Value>(&v)
                .ok()
                .and_then(|j| j.get("hash").and_then(|h| h.as_str()).map(String::from))
                .ok_or_else(|| {
                    StoreError::Corrupt(format!("event #{seq} (the tip) does not decode"))
                })?;
            Ok((seq, hash))
        }
    }
}

struct Writer {
    db: sled::Db,
    tree: sled::Tree,
    seq: u64,
    hash: String,
    /// Records of requests not terminal yet, as last committed (avoids a read and a
    /// decode per event).
    records: HashMap<RequestId, RequestRecord>,
    max_batch: usize,
    counters: Arc<Counters>,
}

/// A request record changed by the group being built.
struct Touched {
    rec: RequestRecord,
    /// Its `a` key exists already (the record was stored before, not terminal).
    indexed_active: bool,
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
            let _ = f.send(flushed.clone_result());
        }
    }
}

/// fsyncs for the writer, so the next group is built and applied while the last
/// one is being flushed. Every `Durable` it receives was applied before it calls
/// `Db::flush`, and one flush answers everything that queued up meanwhile.
fn flusher(db: sled::Db, counters: Arc<Counters>, rx: mpsc::Receiver<Durable>) {
    while let Ok(first) = rx.recv() {
        let mut waiting = vec![first];
        while let Ok(more) = rx.try_recv() {
            waiting.push(more);
        }
        let flushed = flush_db(&db, &counters);
        for d in waiting {
            d.answer(&flushed);
        }
    }
}

fn flush_db(db: &sled::Db, counters: &Counters) -> Result<(), StoreError> {
    let t = Instant::now();
    let flushed = db.flush().map(|_| ()).map_err(io);
    add(&counters.flush_nanos, nanos_since(t));
    add(&counters.flushes, 1);
    flushed
}

impl Writer {
    fn run(mut self, rx: mpsc::Receiver<Msg>) {
        let (flush_tx, flush_rx) = mpsc::channel::<Durable>();
        let flush_thread = {
            let db = self.db.clone();
            let counters = self.counters.clone();
            thread::Builder::new()
                .name("youops-audit-flusher".into())
                .spawn(move || flusher(db, counters, flush_rx))
        };
        let mut flush_tx = match &flush_thread {
            Ok(_) => Some(flush_tx),
            Err(e) => {
                tracing::warn!(error = %e, "no flusher thread; the audit writer flushes inline");
                None
            }
        };
        while let Ok(first) = rx.recv() {
            let mut jobs = Vec::new();
            let mut flushes = Vec::new();
            let mut count = 0usize;
            let mut push = |m: Msg, jobs: &mut Vec<Job>, count: &mut usize| match m {
                Msg::Append(j) => {
                    *count += j.events.len();
                    jobs.push(j);
                }
                Msg::Flush(r) => flushes.push(r),
            };
            push(first, &mut jobs, &mut count);
            while count < self.max_batch {
                match rx.try_recv() {
                    Ok(m) => push(m, &mut jobs, &mut count),
                    Err(_) => break,
                }
            }
            let durable = self.commit(jobs, flushes);
            if durable.is_empty() {
                continue;
            }
            // Hand the fsync to the flusher; flush here only if it is gone.
            let unsent = match &flush_tx {
                Some(tx) => tx.send(durable).err().map(|e| e.0),
                None => Some(durable),
            };
            if let Some(durable) = unsent {
                flush_tx = None;
                durable.answer(&flush_db(&self.db, &self.counters));
            }
        }
        drop(flush_tx);
        if let Ok(h) = flush_thread {
            let _ = h.join();
        }
    }

    /// Apply one group. Buffered appends are answered here; the answers that must
    /// wait for an fsync are returned.
    fn commit(&mut self, jobs: Vec<Job>, flushes: Vec<FlushReply>) -> Durable {
        let started = Instant::now();
        let mut batch = sled::Batch::default();
        let mut claimed: HashMap<String, RequestId> = HashMap::new();
        let start = (self.seq, self.hash.clone());
        let mut staged: Vec<(bool, AppendReply, Result<Vec<AuditEvent>, StoreError>)> =
            Vec::with_capacity(jobs.len());
        let mut touched: HashMap<RequestId, Touched> = HashMap::new();
        for job in jobs {
            let Job {
                events,
                bodies,
                opts,
                reply,
            } = job;
            let result = self.stage(
                events,
                bodies,
                &opts,
                &mut batch,
                &mut claimed,
                &mut touched,
            );
            staged.push((opts.durable, reply, result));
        }
        for (id, t) in &touched {
            match serde_json::to_vec(&t.rec) {
                Ok(bytes) => batch.insert(&idkey(b's', *id), bytes),
                Err(e) => {
                    tracing::error!(error = %e, "cannot encode request record");
                }
            }
            match (t.indexed_active, t.rec.state.is_terminal()) {
                (false, false) => batch.insert(&idkey(b'a', *id), &[][..]),
                (true, true) => batch.remove(&idkey(b'a', *id)),
                _ => {}
            }
        }
        let applied = self.tree.apply_batch(batch).map_err(io);
        add(&self.counters.apply_nanos, nanos_since(started));
        if let Err(e) = applied {
            // Nothing of this group is stored: roll the tip back and fail every job.
            (self.seq, self.hash) = start;
            self.records.clear();
            for (_, reply, _) in staged {
                let _ = reply.send(Err(StoreError::Io(e.to_string())));
            }
            for f in flushes {
                let _ = f.send(Err(StoreError::Io(e.to_string())));
            }
            return Durable::default();
        }
        for (id, t) in touched {
            if !t.rec.state.is_terminal() {
                self.records.insert(id, t.rec);
            }
        }
        if self.records.len() > 100_000 {
            self.records.clear();
        }
        add(&self.counters.groups, 1);
        add(&self.counters.jobs, staged.len() as u64);
        // Answer buffered appends at once; durable ones after the fsync.
        let mut durable = Durable {
            appends: Vec::new(),
            flushes,
        };
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

    /// The current record of a request and whether its `a` key exists, taking it
    /// out of the group's or the writer's cache (the caller puts it back).
    fn take_record(
        &mut self,
        id: RequestId,
        touched: &HashMap<RequestId, Touched>,
    ) -> Result<Option<Touched>, StoreError> {
        if let Some(t) = touched.get(&id) {
            // Changed by an earlier job of this group, which must stay intact should
            // this job fail.
            return Ok(Some(Touched {
                rec: t.rec.clone(),
                indexed_active: t.indexed_active,
            }));
        }
        // Taking it out of the cache is safe even if this job then fails: the
        // record is also in the tree, as committed.
        let rec = match self.records.remove(&id) {
            Some(r) => Some(r),
            None => match self.tree.get(idkey(b's', id)).map_err(io)? {
                Some(v) => Some(decode::<RequestRecord>("request record", &v)?),
                None => None,
            },
        };
        Ok(rec.map(|rec| Touched {
            indexed_active: !rec.state.is_terminal(),
            rec,
        }))
    }

    fn stage(
        &mut self,
        events: Vec<NewEvent>,
        bodies: Vec<Vec<u8>>,
        opts: &AppendOptions,
        batch: &mut sled::Batch,
        claimed: &mut HashMap<String, RequestId>,
        touched: &mut HashMap<RequestId, Touched>,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        if let Some(key) = &opts.dedup_key {
            if let Some(existing) = self.tree.get(dkey(key)).map_err(io)? {
                return Err(StoreError::Duplicate(id_from(&existing)?));
            }
            if let Some(owner) = claimed.get(key) {
                // Claimed by an earlier job of this same group.
                return Err(StoreError::Duplicate(*owner));
            }
        }
        if bodies.len() != events.len() {
            return Err(StoreError::Io("event bodies were not encoded".into()));
        }
        // Build every event first so a failure leaves the batch untouched.
        let mut out = Vec::with_capacity(events.len());
        let mut stored = Vec::with_capacity(events.len());
        let mut seq = self.seq;
        let mut prev = self.hash.clone();
        let mut local: HashMap<RequestId, Touched> = HashMap::new();
        for (ne, body_json) in events.into_iter().zip(bodies) {
            seq += 1;
            let time = Utc::now();
            let canonical = canonical_bytes_encoded(seq, &time, &ne.request_id, &body_json);
            let hash = chain_hash(&prev, &canonical);
            stored.push(event_json(canonical, &prev, &hash));
            let ev = AuditEvent {
                seq,
                time,
                request_id: ne.request_id,
                body: ne.body,
                prev_hash: std::mem::replace(&mut prev, hash.clone()),
                hash,
            };
            if let Some(id) = ev.request_id {
                let current = match local.remove(&id) {
                    Some(t) => Some(t),
                    None => self.take_record(id, touched)?,
                };
                let t = match (&ev.body, current) {
                    (EventBody::Received { request }, None) => Touched {
                        rec: RequestRecord::new((**request).clone(), &ev),
                        indexed_active: false,
                    },
                    (EventBody::Received { .. }, Some(_)) => {
                        return Err(StoreError::Io(format!("request {id} was already received")))
                    }
                    (_, Some(mut t)) => {
                        t.rec.apply(&ev);
                        t
                    }
                    (_, None) => {
                        return Err(StoreError::Io(format!(
                            "event for unknown request {id} (its `received` event must come first)"
                        )))
                    }
                };
                local.insert(id, t);
            }
            out.push(ev);
        }
        for (ev, bytes) in out.iter().zip(stored) {
            batch.insert(&ekey(ev.seq), bytes);
            if let Some(id) = ev.request_id {
                batch.insert(&rkey(id, ev.seq), &[][..]);
            }
        }
        if let Some(key) = &opts.dedup_key {
            if let Some(id) = out.first().and_then(|e| e.request_id) {
                batch.insert(dkey(key), &id.0.to_bytes()[..]);
                claimed.insert(key.clone(), id);
            }
        }
        touched.extend(local);
        self.seq = seq;
        self.hash = prev;
        Ok(out)
    }
}

trait CloneResult {
    fn clone_result(&self) -> Result<(), StoreError>;
}

impl CloneResult for Result<(), StoreError> {
    fn clone_result(&self) -> Result<(), StoreError> {
        match self {
            Ok(()) => Ok(()),
            Err(e) => Err(StoreError::Io(e.to_string())),
        }
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
        match self.inner.tree.get(idkey(b's', id)).map_err(io)? {
            Some(v) => Ok(Some(decode("request record", &v)?)),
            None => Ok(None),
        }
    }

    async fn request_events(&self, id: RequestId) -> Result<Vec<AuditEvent>, StoreError> {
        let mut out = Vec::new();
        for kv in self.inner.tree.scan_prefix(idkey(b'r', id)) {
            let (k, _) = kv.map_err(io)?;
            let seq = u64::from_be_bytes(
                k[17..]
                    .try_into()
                    .map_err(|_| StoreError::Corrupt("request index key".into()))?,
            );
            if let Some(e) = self.event(seq)? {
                out.push(e);
            }
        }
        Ok(out)
    }

    async fn find_dedup(&self, key: &str) -> Result<Option<RequestId>, StoreError> {
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
        let end = match before {
            Some(id) => idkey(b's', id).to_vec(),
            None => vec![b't'],
        };
        let mut out = Vec::new();
        for kv in self.inner.tree.range(&[b's'][..]..&end[..]).rev() {
            if out.len() >= limit {
                break;
            }
            let (_, v) = kv.map_err(io)?;
            let rec: RequestRecord = decode("request record", &v)?;
            if filter.matches(&rec) {
                out.push(rec);
            }
        }
        Ok(out)
    }

    async fn active_requests(&self) -> Result<Vec<RequestRecord>, StoreError> {
        let mut out = Vec::new();
        for kv in self.inner.tree.scan_prefix(b"a") {
            let (k, _) = kv.map_err(io)?;
            let id = id_from(&k[1..])?;
            if let Some(r) = self.request(id).await? {
                if !r.state.is_terminal() {
                    out.push(r);
                }
            }
        }
        Ok(out)
    }

    async fn events(&self, after: u64, limit: usize) -> Result<Vec<AuditEvent>, StoreError> {
        let mut out = Vec::new();
        for kv in self
            .inner
            .tree
            .range(ekey(after.saturating_add(1))..ekey(u64::MAX))
        {
            if out.len() >= limit {
                break;
            }
            let (k, v) = kv.map_err(io)?;
            let seq = u64::from_be_bytes(
                k[1..]
                    .try_into()
                    .map_err(|_| StoreError::Corrupt("event key".into()))?,
            );
            out.push(decode(&format!("event #{seq}"), &v)?);
        }
        Ok(out)
    }

    async fn head(&self) -> Result<(u64, String), StoreError> {
        read_head(&self.inner.tree)
    }

    async fn verify(&self) -> Result<VerifyReport, StoreError> {
        let tree = self.inner.tree.clone();
        tokio::task::spawn_blocking(move || {
            let mut v = ChainVerifier::new();
            for kv in tree.scan_prefix(b"e") {
                let (k, bytes) = kv.map_err(io)?;
                let seq = u64::from_be_bytes(
                    k[1..]
                        .try_into()
                        .map_err(|_| StoreError::Corrupt("event key".into()))?,
                );
                let ev: AuditEvent = match serde_json::from_slice(&bytes) {
                    Ok(e) => e,
                    Err(e) => {
                        return Ok(v.report(Some(super::Broken {
                            seq,
                            reason: format!(
                            "the stored record does not decode ({e}): it was altered or damaged"
                        ),
                        })))
                    }
                };
                if ev.seq != seq {
                    return Ok(v.report(Some(super::Broken {
                        seq,
                        reason: format!("stored under #{seq} but says it is #{}", ev.seq),
                    })));
                }
                if let Err(b) = v.check(&ev) {
                    return Ok(v.report(Some(b)));
                }
            }
            Ok(v.report(None))
        })
        .await
        .map_err(io)?
    }

    async fn size_on_disk(&self) -> Result<u64, StoreError> {
        self.inner.db.size_on_disk().map_err(io)
    }
}
