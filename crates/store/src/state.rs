//! State shared by the writer, the indexer and the readers, and the reads.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use chrono::Utc;
use youops_core::audit::{archive_file_name, StoreError};
use youops_core::model::{AuditEvent, EventBody, RequestId, RequestRecord};

use crate::fs::LogFs;
use crate::index::{Claim, Entry, Index, Ttl};
use crate::log::{corrupt, decode, io_err, read_line_at, LineReader, Seg};

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A request's record and where its events are.
#[derive(Debug, Clone)]
pub(crate) struct Stored {
    /// `(seq, offset in its segment)` of each of the request's events, in order.
    pub events: Vec<(u64, u64)>,
    pub record: RequestRecord,
}

impl Stored {
    pub(crate) fn last_seq(&self) -> u64 {
        self.events.last().map_or(0, |e| e.0)
    }

    /// What the index keeps of it.
    pub(crate) fn entry(&self) -> Entry {
        Entry {
            state: self.record.state,
            events: self.events.clone(),
        }
    }
}

/// Fold one event (at `offset` in its segment) into the record of its request.
pub(crate) fn fold(
    current: Option<Stored>,
    ev: &AuditEvent,
    offset: u64,
) -> Result<Stored, StoreError> {
    let id = ev.request_id.map(|i| i.to_string()).unwrap_or_default();
    match (&ev.body, current) {
        (EventBody::Received { request }, None) => Ok(Stored {
            events: vec![(ev.seq, offset)],
            record: RequestRecord::new(Arc::clone(request), ev),
        }),
        (EventBody::Received { .. }, Some(_)) => {
            Err(StoreError::Io(format!("request {id} was already received")))
        }
        (_, Some(mut s)) => {
            s.record.apply(ev);
            s.events.push((ev.seq, offset));
            Ok(s)
        }
        (_, None) => Err(StoreError::Io(format!(
            "event for unknown request {id} (its `received` event must come first)"
        ))),
    }
}

/// The dedup claim a `received` event carries: its request's key and id, and
/// whether the claim expires.
pub(crate) fn claim_in(ev: &AuditEvent) -> Option<(&str, RequestId, bool)> {
    match &ev.body {
        EventBody::Received { request } => request
            .dedup_key
            .as_deref()
            .map(|k| (k, request.id, request.dedup_expires)),
        _ => None,
    }
}

/// A record the writer holds in memory.
#[derive(Debug, Clone)]
pub(crate) struct Held {
    pub stored: Stored,
    /// The first event of the record that the index does not have yet
    /// (`None`: the index has this version).
    pub dirty_from: Option<u64>,
}

/// What the writer has and the index may not have yet.
#[derive(Debug)]
pub(crate) struct Mem {
    /// Seq and hash of the last event written.
    pub tip: (u64, String),
    /// Bytes of the open segment through the tip.
    pub open_len: u64,
    /// Every event up to this one is synced.
    pub durable: u64,
    /// Records changed since they were indexed, and every active record the
    /// writer touched.
    pub records: HashMap<RequestId, Held>,
    /// Claims the index does not have yet.
    pub claims: HashMap<String, Claim>,
    /// Offsets of events `pos_base..` the index does not have yet.
    pub pos_base: u64,
    pub positions: VecDeque<u64>,
    /// No record in the index has an id above this one (see the writer).
    pub stored_max: Option<RequestId>,
    /// Events written since the indexer was last woken.
    pub unindexed: usize,
}

/// The segments, for readers: where the file of an event is.
#[derive(Debug, Default)]
pub(crate) struct Segments {
    /// Live segments (`first → last`, `None` for the open one).
    pub live: BTreeMap<u64, Option<u64>>,
    /// Archived segments: `first → (last, directory)`.
    pub archived: BTreeMap<u64, (u64, PathBuf)>,
}

impl Segments {
    /// The first live sequence number (the tip's successor if no segment).
    pub(crate) fn live_start(&self, tip: u64) -> u64 {
        self.live.keys().next().copied().unwrap_or(tip + 1)
    }

    /// The live segments in order.
    pub(crate) fn live_segs(&self) -> Vec<Seg> {
        self.live
            .iter()
            .map(|(first, last)| Seg {
                first: *first,
                last: *last,
            })
            .collect()
    }

    /// The live segment holding `seq`.
    pub(crate) fn live_of(&self, seq: u64) -> Option<Seg> {
        let (first, last) = self.live.range(..=seq).next_back()?;
        last.is_none_or(|l| l >= seq).then_some(Seg {
            first: *first,
            last: *last,
        })
    }

    /// Where event `seq` may be: in the log, else in an archive.
    pub(crate) fn files_of(&self, log_dir: &Path, seq: u64) -> Vec<PathBuf> {
        let mut out = Vec::new();
        if let Some(s) = self.live_of(seq) {
            out.push(log_dir.join(s.name()));
        }
        if let Some((first, (last, dir))) = self.archived.range(..=seq).next_back() {
            if *last >= seq {
                out.push(dir.join(archive_file_name(*first, *last)));
            }
        }
        out
    }
}

/// Everything the threads of one store share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub fs: Arc<dyn LogFs>,
    pub log_dir: PathBuf,
    pub index: Index,
    pub ttl: Ttl,
    pub mem: Mutex<Mem>,
    pub segs: Mutex<Segments>,
    /// Why appending stopped, once it did.
    pub poisoned: Mutex<Option<String>>,
}

impl Shared {
    pub(crate) fn poisoned(&self) -> Result<(), StoreError> {
        match &*lock(&self.poisoned) {
            Some(why) => Err(StoreError::Io(format!(
                "the audit log stopped appending after a failed write or sync ({why}); reopen \
                 the store to recover it"
            ))),
            None => Ok(()),
        }
    }

    /// The claim on `key` that has not expired.
    pub(crate) fn claim(&self, key: &str) -> Result<Option<Claim>, StoreError> {
        let now = Utc::now();
        if let Some(c) = lock(&self.mem).claims.get(key) {
            if !self.ttl.expired(c.bucket, now) {
                return Ok(Some(*c));
            }
        }
        Ok(self
            .index
            .claim(key)?
            .filter(|c| !self.ttl.expired(c.bucket, now)))
    }

    /// The record of a request: the writer's copy if it holds one, else
    /// folded from the events the index lists.
    pub(crate) fn stored(&self, id: RequestId) -> Result<Option<Stored>, StoreError> {
        if let Some(h) = lock(&self.mem).records.get(&id) {
            return Ok(Some(h.stored.clone()));
        }
        self.indexed(id)
    }

    /// The record of a request as indexed, folded from its events.
    pub(crate) fn indexed(&self, id: RequestId) -> Result<Option<Stored>, StoreError> {
        self.index.entry(id)?.map(|e| self.load(&e)).transpose()
    }

    /// Fold a record from the events an index entry lists.
    pub(crate) fn load(&self, entry: &Entry) -> Result<Stored, StoreError> {
        let mut stored = None;
        for (seq, offset) in &entry.events {
            let ev = self.event_at(*seq, *offset)?;
            stored = Some(fold(stored, &ev, *offset)?);
        }
        stored.ok_or_else(|| corrupt("a request entry in the index lists no event".into()))
    }

    /// The event `seq` at `offset` in its segment, wherever the segment is now.
    pub(crate) fn event_at(&self, seq: u64, offset: u64) -> Result<AuditEvent, StoreError> {
        let mut last_err = None;
        // A segment may be renamed (sealed) or moved (archived) while we read:
        // look it up again.
        for _ in 0..3 {
            let files = lock(&self.segs).files_of(&self.log_dir, seq);
            if files.is_empty() {
                break;
            }
            for path in files {
                match read_line_at(&*self.fs, &path, offset) {
                    Ok(Some(line)) => {
                        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("?");
                        let ev = decode(name, None, &line)?;
                        if ev.seq != seq {
                            return Err(corrupt(format!(
                                "{name} has record #{} at byte {offset} where #{seq} should be",
                                ev.seq
                            )));
                        }
                        return Ok(ev);
                    }
                    Ok(None) => {
                        last_err = Some(corrupt(format!(
                            "record #{seq} is missing from {} (at byte {offset})",
                            path.display()
                        )));
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        last_err = Some(io_err(format!("cannot read {}", path.display()), e));
                    }
                    Err(e) => return Err(io_err(format!("cannot read {}", path.display()), e)),
                }
            }
        }
        Err(last_err.unwrap_or_else(|| {
            corrupt(format!(
                "record #{seq} is in no segment of the log or of its archives"
            ))
        }))
    }

    /// Where to start reading for live event `seq`: `(seq, offset)` of it
    /// or of an event before it in its segment.
    fn position(&self, seq: u64) -> Result<(u64, u64), StoreError> {
        {
            let m = lock(&self.mem);
            if seq >= m.pos_base {
                if let Some(off) = usize::try_from(seq - m.pos_base)
                    .ok()
                    .and_then(|i| m.positions.get(i))
                {
                    return Ok((seq, *off));
                }
            }
        }
        let Some((seg, _)) = self.locate(seq) else {
            return Err(corrupt(format!(
                "record #{seq} is in no segment of the log or of its archives"
            )));
        };
        Ok(self
            .index
            .position_before(seg.first, seq)?
            .unwrap_or((seg.first, 0)))
    }

    /// The segment holding `seq` and its file: in the log, else (moved by a
    /// concurrent archive) in the archive directory.
    fn locate(&self, seq: u64) -> Option<(Seg, PathBuf)> {
        let segs = lock(&self.segs);
        if let Some(s) = segs.live_of(seq) {
            return Some((s, self.log_dir.join(s.name())));
        }
        let (first, (last, dir)) = segs.archived.range(..=seq).next_back()?;
        (*last >= seq).then(|| {
            let s = Seg {
                first: *first,
                last: Some(*last),
            };
            (s, dir.join(s.name()))
        })
    }

    /// Live events with `seq > after`, at most `limit`, in order, without a
    /// gap (a segment archived while it is read is read from the archive).
    pub(crate) fn events(&self, after: u64, limit: usize) -> Result<Vec<AuditEvent>, StoreError> {
        let (tip, open_len) = {
            let m = lock(&self.mem);
            (m.tip.0, m.open_len)
        };
        let mut out = Vec::new();
        if limit == 0 {
            return Ok(out);
        }
        // Where to start reading for the first one (its position may go with
        // an archive that moves the live start past it meanwhile: then start
        // there). Events before `from` are read and skipped.
        let mut attempts = 0;
        let (from, mut next, mut offset) = loop {
            let from = after
                .saturating_add(1)
                .max(lock(&self.segs).live_start(tip));
            if from > tip {
                return Ok(out);
            }
            match self.position(from) {
                Ok((start, offset)) => break (from, start, offset),
                Err(e) => {
                    attempts += 1;
                    if attempts >= 3 || lock(&self.segs).live_start(tip) <= from {
                        return Err(e);
                    }
                }
            }
        };
        // Renames (sealing) and moves (archiving) while we read, per event.
        let mut tries = 0;
        'segments: while out.len() < limit && next <= tip {
            let Some((seg, path)) = self.locate(next) else {
                return Err(corrupt(format!(
                    "record #{next} is in no segment of the log or of its archives"
                )));
            };
            let limit_bytes = if seg.last.is_none() {
                open_len
            } else {
                u64::MAX
            };
            let mut reader = LineReader::new(path.clone(), offset, limit_bytes);
            loop {
                if out.len() >= limit || next > tip {
                    break 'segments;
                }
                let line = match reader.next_line(&*self.fs) {
                    Ok(Some((_, line))) => line,
                    Ok(None) if seg.last.is_some_and(|l| l < next) => {
                        // The end of a sealed segment: on to the next.
                        offset = 0;
                        continue 'segments;
                    }
                    Ok(None) => {
                        return Err(corrupt(format!(
                            "record #{next} is missing from {}",
                            path.display()
                        )))
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound && tries < 5 => {
                        // Renamed or moved: find it again, at the same place
                        // if `next` is in it, else at the start of the next.
                        tries += 1;
                        offset = if seg.last.is_some_and(|l| l < next) {
                            0
                        } else {
                            reader.offset()
                        };
                        continue 'segments;
                    }
                    Err(e) => return Err(io_err(format!("cannot read {}", path.display()), e)),
                };
                let name = seg.name();
                let ev = decode(&name, None, &line)?;
                if ev.seq != next {
                    return Err(corrupt(format!(
                        "{name} has record #{} where #{next} should be",
                        ev.seq
                    )));
                }
                next += 1;
                tries = 0;
                if ev.seq >= from {
                    out.push(ev);
                }
            }
        }
        Ok(out)
    }
}
