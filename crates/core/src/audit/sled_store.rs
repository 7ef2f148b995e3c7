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
//! queue, applies them as one batch, and — if any of them asked for durability —
//! fsyncs once for the whole group before answering. Concurrent requests therefore
//! share flushes instead of paying one each.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;

use async_trait::async_trait;
use chrono::Utc;
use tokio::sync::oneshot;

use super::{
    canonical_bytes, chain_hash, AppendOptions, AuditStore, ChainVerifier, StoreError,
    VerifyReport, GENESIS_HASH,
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

struct Job {
    events: Vec<NewEvent>,
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
        let writer = Writer {
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
                tx: Mutex::new(Some(tx)),
                writer: Mutex::new(Some(handle)),
            }),
        })
    }

    /// Where the store lives.
    pub fn path(&self) -> &Path {
        &self.inner.path
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
    /// Records of requests touched recently (avoids a read per event).
    records: HashMap<RequestId, RequestRecord>,
    max_batch: usize,
}

impl Writer {
    fn run(mut self, rx: mpsc::Receiver<Msg>) {
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
            self.commit(jobs, flushes);
        }
    }

    fn commit(&mut self, jobs: Vec<Job>, flushes: Vec<oneshot::Sender<Result<(), StoreError>>>) {
        let mut batch = sled::Batch::default();
        let mut claimed: HashMap<String, RequestId> = HashMap::new();
        let start = (self.seq, self.hash.clone());
        let mut staged: Vec<(Job, Result<Vec<AuditEvent>, StoreError>)> =
            Vec::with_capacity(jobs.len());
        let mut touched: HashMap<RequestId, RequestRecord> = HashMap::new();
        for job in jobs {
            let result = self.stage(&job, &mut batch, &mut claimed, &mut touched);
            staged.push((job, result));
        }
        for (id, rec) in &touched {
            match serde_json::to_vec(rec) {
                Ok(bytes) => batch.insert(&idkey(b's', *id), bytes),
                Err(e) => {
                    tracing::error!(error = %e, "cannot encode request record");
                }
            }
            if rec.state.is_terminal() {
                batch.remove(&idkey(b'a', *id));
            } else {
                batch.insert(&idkey(b'a', *id), &[][..]);
            }
        }
        let applied = self.tree.apply_batch(batch).map_err(io);
        if let Err(e) = applied {
            // Nothing of this group is stored: roll the tip back and fail every job.
            (self.seq, self.hash) = start;
            self.records.clear();
            for (job, _) in staged {
                let _ = job.reply.send(Err(StoreError::Io(e.to_string())));
            }
            for f in flushes {
                let _ = f.send(Err(StoreError::Io(e.to_string())));
            }
            return;
        }
        for (id, rec) in touched {
            if rec.state.is_terminal() {
                self.records.remove(&id);
            } else {
                self.records.insert(id, rec);
            }
        }
        if self.records.len() > 100_000 {
            self.records.clear();
        }
        let need_flush =
            !flushes.is_empty() || staged.iter().any(|(j, r)| j.opts.durable && r.is_ok());
        // Answer buffered appends at once; durable ones after the fsync.
        let mut durable = Vec::new();
        for (job, result) in staged {
            if job.opts.durable && result.is_ok() {
                durable.push((job, result));
            } else {
                let _ = job.reply.send(result);
            }
        }
        if need_flush {
            let flushed = self.db.flush().map(|_| ()).map_err(io);
            for (job, result) in durable {
                let _ = job.reply.send(match &flushed {
                    Ok(()) => result,
                    Err(e) => Err(StoreError::Io(e.to_string())),
                });
            }
            for f in flushes {
                let _ = f.send(flushed.clone_result());
            }
        }
    }

    fn record(
        &mut self,
        id: RequestId,
        touched: &HashMap<RequestId, RequestRecord>,
    ) -> Result<Option<RequestRecord>, StoreError> {
        if let Some(r) = touched.get(&id) {
            return Ok(Some(r.clone()));
        }
        if let Some(r) = self.records.get(&id) {
            return Ok(Some(r.clone()));
        }
        match self.tree.get(idkey(b's', id)).map_err(io)? {
            Some(v) => Ok(Some(decode("request record", &v)?)),
            None => Ok(None),
        }
    }

    fn stage(
        &mut self,
        job: &Job,
        batch: &mut sled::Batch,
        claimed: &mut HashMap<String, RequestId>,
        touched: &mut HashMap<RequestId, RequestRecord>,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        if let Some(key) = &job.opts.dedup_key {
            if let Some(existing) = self.tree.get(dkey(key)).map_err(io)? {
                return Err(StoreError::Duplicate(id_from(&existing)?));
            }
            if let Some(owner) = claimed.get(key) {
                // Claimed by an earlier job of this same group.
                return Err(StoreError::Duplicate(*owner));
            }
        }
        // Build every event first so a failure leaves the batch untouched.
        let mut out = Vec::with_capacity(job.events.len());
        let mut seq = self.seq;
        let mut prev = self.hash.clone();
        let mut local: HashMap<RequestId, RequestRecord> = HashMap::new();
        for ne in &job.events {
            seq += 1;
            let time = Utc::now();
            let canonical = canonical_bytes(seq, &time, &ne.request_id, &ne.body);
            let hash = chain_hash(&prev, &canonical);
            let ev = AuditEvent {
                seq,
                time,
                request_id: ne.request_id,
                body: ne.body.clone(),
                prev_hash: prev.clone(),
                hash: hash.clone(),
            };
            if let Some(id) = ne.request_id {
                let current = match local.remove(&id) {
                    Some(r) => Some(r),
                    None => self.record(id, touched)?,
                };
                let rec = match (&ev.body, current) {
                    (EventBody::Received { request }, None) => {
                        RequestRecord::new((**request).clone(), &ev)
                    }
                    (EventBody::Received { .. }, Some(_)) => {
                        return Err(StoreError::Io(format!("request {id} was already received")))
                    }
                    (_, Some(mut r)) => {
                        r.apply(&ev);
                        r
                    }
                    (_, None) => {
                        return Err(StoreError::Io(format!(
                            "event for unknown request {id} (its `received` event must come first)"
                        )))
                    }
                };
                local.insert(id, rec);
            }
            prev = hash;
            out.push(ev);
        }
        for ev in &out {
            let bytes = serde_json::to_vec(ev).map_err(|e| StoreError::Io(e.to_string()))?;
            batch.insert(&ekey(ev.seq), bytes);
            if let Some(id) = ev.request_id {
                batch.insert(&rkey(id, ev.seq), &[][..]);
            }
        }
        if let Some(key) = &job.opts.dedup_key {
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
        let (reply, rx) = oneshot::channel();
        self.send(Msg::Append(Job {
            events,
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
                    Err(e) => return Ok(v.report(Some(super::Broken {
                        seq,
                        reason: format!(
                            "the stored record does not decode ({e}): it was altered or damaged"
                        ),
                    }))),
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
