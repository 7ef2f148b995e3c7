//! The writer thread: owns the chain tip, takes appends in groups and
//! applies each group to the tree (group commit).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::AtomicUsize;
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::Instant;

use chrono::Utc;
use tokio::sync::oneshot;
use youops_core::audit::{
    canonical_bytes_encoded, chain_hash, event_json, AppendOptions, StoreError,
};
use youops_core::model::{AuditEvent, EventBody, NewEvent, RequestId};

use crate::disk::Disk;
use crate::encoding::{bkey, decode, dkey, id_from, idkey, io};
use crate::flusher::{flush_db, flusher, AppendReply, Durable, FlushReply, ToFlusher};
use crate::indexer::{IndexJob, Indexer};
use crate::options::SledOptions;
use crate::records::{claim_in, fold, Stored};
use crate::state::{lock, IdSet, Ids, Shared};
use crate::stats::{add, nanos_since, Counters};

/// One append call.
pub(crate) struct Job {
    pub(crate) events: Vec<NewEvent>,
    /// `serde_json::to_vec(&event.body)` of each event, encoded by the caller so
    /// that the single writer thread does not have to.
    pub(crate) bodies: Vec<Vec<u8>>,
    pub(crate) opts: AppendOptions,
    pub(crate) reply: oneshot::Sender<Result<Vec<AuditEvent>, StoreError>>,
}

/// What the writer thread is asked to do.
pub(crate) enum Msg {
    Append(Job),
    Flush(oneshot::Sender<Result<(), StoreError>>),
    /// Stop at once: no last flush, no last records stored (a killed process).
    #[cfg_attr(not(any(test, feature = "test-util")), allow(dead_code))]
    Kill,
}

pub(crate) struct Writer {
    pub(crate) db: Disk,
    pub(crate) tree: sled::Tree,
    pub(crate) shared: Arc<Shared>,
    pub(crate) seq: u64,
    pub(crate) hash: String,
    /// Requests whose records changed since they were last handed to the indexer.
    pub(crate) dirty: IdSet,
    /// Derived dedup claims not yet handed to the indexer.
    pub(crate) dirty_claims: Vec<(String, RequestId)>,
    pub(crate) last_index: Instant,
    pub(crate) opts: SledOptions,
    pub(crate) counters: Arc<Counters>,
}

/// What one group changes, before it is applied.
#[derive(Default)]
pub(crate) struct Group {
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
    pub(crate) fn run(mut self, rx: mpsc::Receiver<Msg>, active: HashSet<RequestId>) {
        let (flush_thread, mut flush_tx) = self.start_flusher();
        let (index_tx, index_rx) = mpsc::channel::<IndexJob>();
        let index_thread = self.start_indexer(index_rx, active, flush_tx.clone());
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
            let Some((jobs, flushes)) = self.take_group(first, &rx) else {
                // The appends taken with the kill are answered `Closed`.
                killed = true;
                break;
            };
            let durable = self.commit(jobs);
            self.index_after(&index_tx, flushes);
            if durable.is_empty() {
                continue;
            }
            self.flush_durable(durable, &rx, &mut next, &mut flush_tx);
        }
        if killed {
            // No last records, no last flush: what a killed process leaves.
            join_threads(index_tx, index_thread, flush_tx, flush_thread);
            return;
        }
        // Closing: store the records, then make everything durable.
        if !self.dirty.is_empty() {
            self.hand_over(&index_tx, Durable::default());
        }
        join_threads(index_tx, index_thread, flush_tx, flush_thread);
        let _ = flush_db(&self.db, &self.counters);
    }

    /// Start the flusher thread, and the way to it (`None` if it could not
    /// start: the writer then flushes inline).
    fn start_flusher(&self) -> (std::io::Result<thread::JoinHandle<()>>, Option<ToFlusher>) {
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
        let flush_tx = match &flush_thread {
            Ok(_) => Some(ToFlusher {
                tx: flush_tx,
                queued,
            }),
            Err(e) => {
                tracing::warn!(error = %e, "no flusher thread; the audit writer flushes inline");
                None
            }
        };
        (flush_thread, flush_tx)
    }

    /// Start the indexer thread. It hands the answers of `flush` calls to the
    /// flusher (`to_flusher`) once the records are stored, or flushes itself
    /// without one.
    fn start_indexer(
        &self,
        index_rx: mpsc::Receiver<IndexJob>,
        active: HashSet<RequestId>,
        to_flusher: Option<ToFlusher>,
    ) -> std::io::Result<thread::JoinHandle<()>> {
        let indexer = Indexer {
            tree: self.tree.clone(),
            shared: self.shared.clone(),
            counters: self.counters.clone(),
            active,
        };
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
    }

    /// Take `first` and the messages waiting after it, up to
    /// [`SledOptions::max_batch_events`] events: the appends and flushes of
    /// one group. `None` for a kill.
    fn take_group(
        &self,
        first: Msg,
        rx: &mpsc::Receiver<Msg>,
    ) -> Option<(Vec<Job>, Vec<FlushReply>)> {
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
        let mut killed = push(first, &mut jobs, &mut count);
        while count < self.opts.max_batch_events && !killed {
            match rx.try_recv() {
                Ok(m) => killed = push(m, &mut jobs, &mut count),
                Err(_) => break,
            }
        }
        if killed {
            return None;
        }
        Some((jobs, flushes))
    }

    /// After a group: hand the changed records to the indexer when `flush`
    /// was called (with its answers) or when they are due.
    fn index_after(&mut self, index_tx: &mpsc::Sender<IndexJob>, flushes: Vec<FlushReply>) {
        let due = !self.dirty.is_empty()
            && (self.dirty.len() >= self.opts.index_max_dirty
                || self.last_index.elapsed() >= self.opts.index_interval);
        if !flushes.is_empty() {
            // `flush` also stores every record, so that the tree is complete:
            // the indexer hands these answers to the flusher after it.
            self.hand_over(
                index_tx,
                Durable {
                    appends: Vec::new(),
                    flushes,
                },
            );
        } else if due {
            self.hand_over(index_tx, Durable::default());
        }
    }

    /// With more work waiting, or the flusher busy, hand the fsync to the
    /// flusher, so the next group is applied while it runs. Otherwise flush
    /// here: one thread hand-off less for the waiting callers, which on a
    /// machine with few cores is a scheduling delay less. And flush here
    /// if the flusher is gone.
    fn flush_durable(
        &self,
        durable: Durable,
        rx: &mpsc::Receiver<Msg>,
        next: &mut Option<Msg>,
        flush_tx: &mut Option<ToFlusher>,
    ) {
        if let Ok(m) = rx.try_recv() {
            *next = Some(m);
        }
        let busy = next.is_some() || flush_tx.as_ref().is_some_and(|tx| !tx.idle());
        let durable = match &*flush_tx {
            Some(tx) if busy => match tx.send(durable) {
                Ok(()) => return,
                Err(unsent) => {
                    *flush_tx = None;
                    unsent
                }
            },
            _ => durable,
        };
        durable.answer(&flush_db(&self.db, &self.counters));
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

    /// Order one append into the group; nothing of it on error: a duplicate
    /// key, a stale condition ([`AppendOptions::expect_last_seq`]), an event
    /// that does not fold.
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
        // The condition of a conditional append, after the key (a duplicate
        // is a duplicate whatever it expected) and before anything is claimed
        // or ordered: against the record as this group leaves it, so that of
        // two appends in one group expecting the same seq only the first goes.
        opts.check_expected(&events, |id| {
            let received = matches!(
                events.first().map(|e| &e.body),
                Some(EventBody::Received { .. })
            );
            Ok(self
                .current(id, group, received)?
                .map_or(0, |s| s.record.last_seq))
        })?;
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
            let ev = AuditEvent::from_parts(
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

/// Stop the indexer, then the flusher: each finishes what it was given.
fn join_threads(
    index_tx: mpsc::Sender<IndexJob>,
    index_thread: std::io::Result<thread::JoinHandle<()>>,
    flush_tx: Option<ToFlusher>,
    flush_thread: std::io::Result<thread::JoinHandle<()>>,
) {
    drop(index_tx);
    if let Ok(h) = index_thread {
        let _ = h.join();
    }
    drop(flush_tx);
    if let Ok(h) = flush_thread {
        let _ = h.join();
    }
}
