//! The writer thread: the chain tip, group commit, segments, and a poisoned
//! log's cut back to its last sync.

mod import;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use chrono::Utc;
use tokio::sync::oneshot;
use youops_core::audit::{archive_file_name, chain_hash, AppendOptions, StoreError};
use youops_core::model::{AuditEvent, EventBody, NewEvent, RequestId};

use crate::format::{canonical_encoded, event_line};
use crate::fs::LogFile;
use crate::index::{Batch, Claim};
use crate::indexer::{IndexMsg, Reply};
use crate::log::{open_name, POISON_MARKER};
use crate::state::{claim_in, fold, lock, Held, Shared, Stored};

pub(crate) type AppendReply = oneshot::Sender<Result<Vec<AuditEvent>, StoreError>>;

/// One append call.
pub(crate) struct Job {
    pub events: Vec<NewEvent>,
    /// `serde_json::to_vec(&event.body)` of each event, encoded by the caller so
    /// that the single writer thread does not have to.
    pub bodies: Vec<Vec<u8>>,
    pub opts: AppendOptions,
    pub reply: AppendReply,
}

pub(crate) enum Msg {
    Append(Job),
    /// Sync, then index everything synced.
    Flush(Reply),
    /// Seal the open segment if every event in it is at or before `through`.
    Seal {
        through: u64,
        reply: Reply,
    },
    /// Stop at once: no last sync, no last index round (a killed process).
    #[cfg_attr(not(any(test, feature = "test-util")), allow(dead_code))]
    Kill,
    /// Write events that keep their seq, time and hashes (see
    /// [`LogStore::import`](crate::LogStore::import)).
    Import {
        events: Vec<AuditEvent>,
        reply: Reply,
    },
}

#[derive(Debug, Clone)]
pub(crate) struct WriterOpts {
    pub segment_bytes: u64,
    pub max_batch_events: usize,
    pub sync_interval: Duration,
    pub index_max_pending: usize,
}

/// The open segment.
#[derive(Debug)]
pub(crate) struct OpenSeg {
    pub first: u64,
    pub path: PathBuf,
    pub file: Box<dyn LogFile>,
    /// Bytes written.
    pub len: u64,
    /// Bytes covered by the last successful `fdatasync`.
    pub synced: u64,
}

pub(crate) struct Writer {
    pub shared: Arc<Shared>,
    pub opts: WriterOpts,
    pub open: Option<OpenSeg>,
    pub seq: u64,
    pub hash: String,
    pub poisoned: Option<String>,
    /// Since when written bytes wait for a sync.
    pub unsynced_since: Option<Instant>,
    pub index_tx: mpsc::Sender<IndexMsg>,
}

/// One append's events, numbered, hashed and folded (see [`Writer::chain`]).
struct Chained {
    out: Vec<AuditEvent>,
    /// Their lines, each with its newline.
    lines: Vec<Vec<u8>>,
    /// The seq and hash of the last.
    seq: u64,
    prev: String,
    /// The records they change, and the first of their events in the group.
    local: HashMap<RequestId, (Stored, u64)>,
}

/// What one group appends, before it is published.
#[derive(Default)]
struct Group {
    /// The new lines, each with its newline.
    buf: Vec<u8>,
    /// Offset of each new event in the open segment, in seq order.
    offsets: Vec<u64>,
    /// Claims the group's `received` events carry (rebuildable from the log).
    claims: HashMap<String, Claim>,
    /// Claims its events do not carry: stored in the index before the write.
    explicit: HashMap<String, Claim>,
    /// Records changed by the group, and the first of their events in it.
    touched: HashMap<RequestId, (Stored, u64)>,
}

fn fail_all(
    staged: Vec<(bool, AppendReply, Result<Vec<AuditEvent>, StoreError>)>,
    flushes: Vec<Reply>,
    why: &str,
) {
    for (_, reply, _) in staged {
        let _ = reply.send(Err(StoreError::Io(why.to_string())));
    }
    for f in flushes {
        let _ = f.send(Err(StoreError::Io(why.to_string())));
    }
}

impl Writer {
    pub(crate) fn run(mut self, rx: mpsc::Receiver<Msg>, indexer: thread::JoinHandle<()>) {
        let mut killed = false;
        loop {
            let first = match self.unsynced_since {
                Some(since) if self.poisoned.is_none() => {
                    let wait = self.opts.sync_interval.saturating_sub(since.elapsed());
                    match rx.recv_timeout(wait) {
                        Ok(m) => m,
                        Err(mpsc::RecvTimeoutError::Timeout) => {
                            // Buffered appends wait no longer for a sync.
                            if let Err(why) = self.sync() {
                                self.poison(&why);
                            }
                            continue;
                        }
                        Err(mpsc::RecvTimeoutError::Disconnected) => break,
                    }
                }
                _ => match rx.recv() {
                    Ok(m) => m,
                    Err(_) => break,
                },
            };
            let mut jobs = Vec::new();
            let mut flushes = Vec::new();
            let mut seals = Vec::new();
            let mut import = None;
            let mut count = 0;
            let mut next = Some(first);
            while let Some(m) = next.take() {
                match m {
                    Msg::Append(j) => {
                        count += j.events.len();
                        jobs.push(j);
                    }
                    Msg::Flush(r) => flushes.push(r),
                    Msg::Seal { through, reply } => seals.push((through, reply)),
                    Msg::Kill => {
                        killed = true;
                        break;
                    }
                    // After the appends before it, before those after it.
                    Msg::Import { events, reply } => {
                        import = Some((events, reply));
                        break;
                    }
                }
                if count < self.opts.max_batch_events {
                    next = rx.try_recv().ok();
                }
            }
            if killed {
                break;
            }
            self.commit(jobs, flushes);
            for (through, reply) in seals {
                let _ = reply.send(self.seal_through(through));
            }
            if let Some((events, reply)) = import {
                let _ = reply.send(self.import(events));
            }
        }
        if !killed && self.poisoned.is_none() {
            if let Err(why) = self.sync() {
                self.poison(&why);
            }
        }
        let _ = self.index_tx.send(if killed {
            IndexMsg::Stop
        } else {
            IndexMsg::Close
        });
        let _ = indexer.join();
    }

    fn poison_error(&self) -> Option<String> {
        self.poisoned.clone()
    }

    /// Append one group: order, check, write, then one `fdatasync` for every
    /// durable append and flush in it.
    fn commit(&mut self, jobs: Vec<Job>, flushes: Vec<Reply>) {
        if let Some(why) = self.poison_error() {
            let why = format!("the audit log stopped appending after a failed write or sync ({why}); reopen the store to recover it");
            let staged = jobs
                .into_iter()
                .map(|j| (false, j.reply, Ok(Vec::new())))
                .collect();
            fail_all(staged, flushes, &why);
            return;
        }
        let mut staged = Vec::with_capacity(jobs.len());
        let mut wrote = false;
        if !jobs.is_empty() {
            if let Err(why) = self.prepare_segment() {
                self.poison(&why);
                let staged = jobs
                    .into_iter()
                    .map(|j| (false, j.reply, Ok(Vec::new())))
                    .collect();
                fail_all(staged, flushes, &why);
                return;
            }
            let base = self.open.as_ref().map_or(0, |o| o.len);
            let start = (self.seq, self.hash.clone());
            let mut group = Group::default();
            for job in jobs {
                let result = self.stage(job.events, job.bodies, &job.opts, &mut group, base);
                staged.push((job.opts.durable, job.reply, result));
            }
            if !group.explicit.is_empty() {
                let batch = Batch {
                    claims: group
                        .explicit
                        .iter()
                        .map(|(k, c)| (k.clone(), *c))
                        .collect(),
                    ..Batch::default()
                };
                if let Err(e) = self.shared.index.write(&batch, &self.shared.ttl, true) {
                    // Nothing of the group is written: roll the tip back.
                    (self.seq, self.hash) = start;
                    let why = format!("cannot store a dedup claim: {e}");
                    fail_all(staged, flushes, &why);
                    return;
                }
            }
            if !group.buf.is_empty() {
                let open = self
                    .open
                    .as_mut()
                    .expect("prepare_segment opened a segment");
                if let Err(e) = open.file.append(&group.buf) {
                    let why = format!("cannot write to {}: {e}", open.path.display());
                    self.poison(&why);
                    fail_all(staged, flushes, &why);
                    return;
                }
                open.len += group.buf.len() as u64;
                self.publish(group);
                wrote = true;
            }
        }
        // Buffered appends (and refused ones) are answered once ordered.
        let mut durable = Vec::new();
        for (is_durable, reply, result) in staged {
            match result {
                Ok(events) if is_durable => durable.push((reply, events)),
                other => {
                    let _ = reply.send(other);
                }
            }
        }
        if !durable.is_empty() || !flushes.is_empty() {
            if let Err(why) = self.sync() {
                self.poison(&why);
                let staged = durable.into_iter().map(|(r, e)| (true, r, Ok(e))).collect();
                fail_all(staged, flushes, &why);
                return;
            }
            for (reply, events) in durable {
                let _ = reply.send(Ok(events));
            }
            for f in flushes {
                if let Err(mpsc::SendError(IndexMsg::Now(f))) = self.index_tx.send(IndexMsg::Now(f))
                {
                    let _ = f.send(Err(StoreError::Closed));
                }
            }
        } else if wrote {
            self.unsynced_since.get_or_insert_with(Instant::now);
        }
        if lock(&self.shared.mem).unindexed >= self.opts.index_max_pending {
            let _ = self.index_tx.send(IndexMsg::Kick);
        }
    }

    /// The current record of a request: as changed by this group, as the
    /// writer holds it, or as indexed. A `received` event's id above every
    /// indexed one (ids sort by creation time) is not looked up.
    fn current(
        &self,
        id: RequestId,
        group: &Group,
        received: bool,
    ) -> Result<Option<Stored>, StoreError> {
        if let Some((s, _)) = group.touched.get(&id) {
            return Ok(Some(s.clone()));
        }
        {
            let m = lock(&self.shared.mem);
            if let Some(h) = m.records.get(&id) {
                return Ok(Some(h.stored.clone()));
            }
            // The indexer raises the bound before it stores a record, and
            // drops a record from memory only after.
            if received && m.stored_max < Some(id) {
                return Ok(None);
            }
        }
        self.shared.indexed(id)
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
        base: u64,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        if let Some(key) = &opts.dedup_key {
            let in_group = group.claims.get(key).or_else(|| group.explicit.get(key));
            if let Some(owner) = in_group {
                return Err(StoreError::Duplicate(owner.id));
            }
            if let Some(owner) = self.shared.claim(key)? {
                return Err(StoreError::Duplicate(owner.id));
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
        let Chained {
            out,
            lines,
            seq,
            prev,
            local,
        } = self.chain(events, bodies, group, base)?;
        let carried_claims = self.carried_claims(&out, opts, group)?;
        self.own_claim(&out, opts, group);
        group.claims.extend(carried_claims);
        for line in lines {
            group.offsets.push(base + group.buf.len() as u64);
            group.buf.extend_from_slice(&line);
        }
        group.touched.extend(local);
        self.seq = seq;
        self.hash = prev;
        Ok(out)
    }

    /// Number, hash and fold the events of one append after the group's
    /// (at `base` in the open segment); the tip is not moved yet.
    fn chain(
        &self,
        events: Vec<NewEvent>,
        bodies: Vec<Vec<u8>>,
        group: &Group,
        base: u64,
    ) -> Result<Chained, StoreError> {
        let mut out = Vec::with_capacity(events.len());
        let mut lines = Vec::with_capacity(events.len());
        let mut seq = self.seq;
        let mut prev = self.hash.clone();
        let mut local: HashMap<RequestId, (Stored, u64)> = HashMap::new();
        let mut offset = base + group.buf.len() as u64;
        for (ne, body_json) in events.into_iter().zip(bodies) {
            seq += 1;
            let time = Utc::now();
            let canonical = canonical_encoded(seq, &time, &ne.request_id, &body_json);
            let hash = chain_hash(&prev, &canonical);
            let mut line = event_line(canonical, &prev, &hash);
            line.push(b'\n');
            let ev = AuditEvent::from_parts(
                seq,
                time,
                ne.request_id,
                ne.body,
                std::mem::replace(&mut prev, hash.clone()),
                hash,
            );
            if let Some(id) = ev.request_id {
                let (current, first) = match local.remove(&id) {
                    Some((s, first)) => (Some(s), first),
                    None => {
                        let received = matches!(ev.body, EventBody::Received { .. });
                        let first = group.touched.get(&id).map_or(seq, |t| t.1);
                        (self.current(id, group, received)?, first)
                    }
                };
                local.insert(id, (fold(current, &ev, offset)?, first));
            }
            offset += line.len() as u64;
            lines.push(line);
            out.push(ev);
        }
        Ok(Chained {
            out,
            lines,
            seq,
            prev,
            local,
        })
    }

    /// A `received` event that carries a key its append did not claim
    /// claims it too, unless it is taken: as a replay of the log would.
    fn carried_claims(
        &self,
        out: &[AuditEvent],
        opts: &AppendOptions,
        group: &Group,
    ) -> Result<Vec<(String, Claim)>, StoreError> {
        let mut carried_claims: Vec<(String, Claim)> = Vec::new();
        for ev in out {
            let Some((key, id, expires)) = claim_in(ev) else {
                continue;
            };
            if opts.dedup_key.as_deref() == Some(key)
                || group.claims.contains_key(key)
                || group.explicit.contains_key(key)
                || carried_claims.iter().any(|(k, _)| k == key)
                || self.shared.claim(key)?.is_some()
            {
                continue;
            }
            let claim = Claim {
                id,
                seq: ev.seq,
                bucket: self.shared.ttl.bucket_of(expires, ev.time),
                explicit: false,
            };
            carried_claims.push((key.to_string(), claim));
        }
        Ok(carried_claims)
    }

    /// The claim the append asks for ([`AppendOptions::dedup_key`]), into the
    /// group: with the claims the log rebuilds if its first event carries it,
    /// else with those stored in the index before the write.
    fn own_claim(&self, out: &[AuditEvent], opts: &AppendOptions, group: &mut Group) {
        if let (Some(key), Some(first)) = (&opts.dedup_key, out.first()) {
            if let Some(id) = first.request_id {
                let bucket = self.shared.ttl.bucket_of(opts.dedup_expires, first.time);
                // Rebuildable from the log only if the event carries the same
                // claim: the key, the request, and whether it expires.
                let carried = claim_in(first).is_some_and(|(k, owner, expires)| {
                    k == key && owner == id && expires == opts.dedup_expires
                });
                let claim = Claim {
                    id,
                    seq: first.seq,
                    bucket,
                    explicit: !carried,
                };
                if carried {
                    group.claims.insert(key.clone(), claim);
                } else {
                    group.explicit.insert(key.clone(), claim);
                }
            }
        }
    }

    /// Make the group visible to readers: records, claims, positions, tip.
    fn publish(&mut self, group: Group) {
        let open_len = self.open.as_ref().map_or(0, |o| o.len);
        let mut m = lock(&self.shared.mem);
        for (id, (stored, first)) in group.touched {
            match m.records.get_mut(&id) {
                Some(h) => {
                    h.stored = stored;
                    h.dirty_from.get_or_insert(first);
                }
                None => {
                    m.records.insert(
                        id,
                        Held {
                            stored,
                            dirty_from: Some(first),
                        },
                    );
                }
            }
        }
        m.claims.extend(group.claims);
        m.unindexed += group.offsets.len();
        m.positions.extend(group.offsets);
        m.tip = (self.seq, self.hash.clone());
        m.open_len = open_len;
    }

    /// `fdatasync` what was written since the last sync.
    fn sync(&mut self) -> Result<(), String> {
        if let Some(open) = self.open.as_mut() {
            if open.synced < open.len {
                open.file
                    .sync_data()
                    .map_err(|e| format!("fdatasync {}: {e}", open.path.display()))?;
                open.synced = open.len;
            }
        }
        self.unsynced_since = None;
        lock(&self.shared.mem).durable = self.seq;
        Ok(())
    }

    /// Roll the open segment if it is full; open one if there is none.
    fn prepare_segment(&mut self) -> Result<(), String> {
        if self
            .open
            .as_ref()
            .is_some_and(|o| o.len >= self.opts.segment_bytes)
        {
            self.seal()?;
        }
        if self.open.is_none() {
            let first = self.seq + 1;
            let dir = &self.shared.log_dir;
            let path = dir.join(open_name(first));
            let file = self
                .shared
                .fs
                .create(&path)
                .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
            self.open = Some(OpenSeg {
                first,
                path: path.clone(),
                file,
                len: 0,
                synced: 0,
            });
            lock(&self.shared.segs).live.insert(first, None);
            lock(&self.shared.mem).open_len = 0;
            self.shared
                .fs
                .sync_dir(dir)
                .map_err(|e| format!("fsync {}: {e}", dir.display()))?;
        }
        Ok(())
    }

    /// Seal the open segment: sync it, rename it to its archive name, sync
    /// the directory. The next append opens a new one.
    fn seal(&mut self) -> Result<(), String> {
        if self.open.as_ref().is_none_or(|o| o.len == 0) {
            return Ok(());
        }
        self.sync()?;
        let Some(open) = self.open.as_ref() else {
            return Ok(());
        };
        let dir = &self.shared.log_dir;
        let sealed = dir.join(archive_file_name(open.first, self.seq));
        {
            let mut segs = lock(&self.shared.segs);
            self.shared
                .fs
                .rename(&open.path, &sealed)
                .map_err(|e| format!("cannot rename {}: {e}", open.path.display()))?;
            segs.live.insert(open.first, Some(self.seq));
        }
        self.open = None;
        lock(&self.shared.mem).open_len = 0;
        self.shared
            .fs
            .sync_dir(dir)
            .map_err(|e| format!("fsync {}: {e}", dir.display()))
    }

    /// [`Msg::Seal`].
    fn seal_through(&mut self, through: u64) -> Result<(), StoreError> {
        if let Some(why) = self.poison_error() {
            return Err(StoreError::Io(why));
        }
        if self.open.as_ref().is_some_and(|o| o.len > 0) && self.seq <= through {
            if let Err(why) = self.seal() {
                self.poison(&why);
                return Err(StoreError::Io(why));
            }
        }
        Ok(())
    }

    /// Stop appending for good. Linux may drop the pages of a failed
    /// `fdatasync` from the page cache while still showing them: nothing is
    /// retried, and what was written after the last good sync is cut (and its
    /// durable length recorded for the next open) so that no later read or
    /// open takes it for durable.
    fn poison(&mut self, why: &str) {
        tracing::error!(error = %why, "audit log: appending stopped; reopen the store to recover");
        self.poisoned = Some(why.to_string());
        *lock(&self.shared.poisoned) = Some(why.to_string());
        self.unsynced_since = None;
        let Some(open) = self.open.take() else {
            return;
        };
        let fs = &self.shared.fs;
        let OpenSeg {
            path, file, synced, ..
        } = open;
        let len = file.len().unwrap_or(u64::MAX);
        drop(file);
        if len <= synced {
            return;
        }
        if let Err(e) = fs.truncate(&path, synced) {
            tracing::error!(error = %e, file = %path.display(), "audit log: cannot cut what was written after the last good sync");
        }
        // Written whole or not at all: a temporary file, synced, renamed.
        let marker = self.shared.log_dir.join(POISON_MARKER);
        let tmp = self.shared.log_dir.join(format!("{POISON_MARKER}.tmp"));
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let written = (|| -> std::io::Result<()> {
            let _ = fs.remove(&tmp);
            let mut f = fs.create(&tmp)?;
            f.append(format!("{name} {synced}\n").as_bytes())?;
            f.sync_data()?;
            drop(f);
            fs.rename(&tmp, &marker)?;
            fs.sync_dir(&self.shared.log_dir)
        })();
        if let Err(e) = written {
            tracing::error!(error = %e, "audit log: cannot record the last durable length");
        }
    }
}
