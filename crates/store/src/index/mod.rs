//! The derived indexes, in redb (`index.redb`). Everything here can be rebuilt
//! from the log, except claims its events do not carry (see
//! [`Claim::explicit`]) and claims of archived events.
//!
//! Tables (keys and values are plain bytes, numbers big-endian):
//!
//! | table | key | value |
//! |---|---|---|
//! | `meta` | `format`, `applied`, `archive_dir`, `archive_intent` | `2`; u64: every event up to it is indexed; path; JSON |
//! | `records` | request id (16 B) | [`Entry`]: the request's state and where its events are |
//! | `active` | request id | empty: the record is not terminal |
//! | `dedup` | dedup key (UTF-8) | bucket (u32) ‖ request id ‖ seq (u64) ‖ flags (u8) |
//! | `dedup_expiry` | bucket (u32) ‖ dedup key | empty |
//! | `dedup_explicit` | seq (u64) | dedup key: the claims stored ahead of their events |
//! | `positions` | seq (u64), every [`POSITION_EVERY`]th | offset of the event in its segment (u64) |
//! | `archived` | first seq (u64) | last seq (u64) ‖ archive directory (path bytes) |
//!
//! The index holds no copy of what the log says: a request's record is
//! folded from its events, read at their offsets, and an event is found by
//! reading on from the nearest position stored before it (or from its
//! segment's start). This keeps the index near 15 % of the log's size.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use youops_core::audit::StoreError;
use youops_core::model::{RequestId, State};

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const RECORDS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("records");
const ACTIVE: TableDefinition<&[u8], ()> = TableDefinition::new("active");
const DEDUP: TableDefinition<&str, &[u8]> = TableDefinition::new("dedup");
const DEDUP_EXPIRY: TableDefinition<&[u8], ()> = TableDefinition::new("dedup_expiry");
const EXPLICIT: TableDefinition<u64, &str> = TableDefinition::new("dedup_explicit");
const POSITIONS: TableDefinition<u64, u64> = TableDefinition::new("positions");
const ARCHIVED: TableDefinition<u64, &[u8]> = TableDefinition::new("archived");

const FORMAT: &[u8] = b"2";
/// Format 1 kept a JSON copy of each record; it is converted on open.
const FORMAT_1: &[u8] = b"1";

/// One event in this many has its offset in `positions`.
pub(crate) const POSITION_EVERY: u64 = 64;
const APPLIED: &str = "applied";
const ARCHIVE_DIR: &str = "archive_dir";
const INTENT: &str = "archive_intent";

fn ix(e: impl std::fmt::Display) -> StoreError {
    StoreError::Io(format!("audit index: {e}"))
}

pub(crate) fn id_bytes(id: RequestId) -> [u8; 16] {
    id.0.to_bytes()
}

pub(crate) fn id_from(bytes: &[u8]) -> Result<RequestId, StoreError> {
    let arr: [u8; 16] = bytes
        .try_into()
        .map_err(|_| StoreError::Corrupt("request id of wrong length in the index".into()))?;
    Ok(RequestId(ulid::Ulid::from_bytes(arr)))
}

fn u64_from(bytes: &[u8]) -> Result<u64, StoreError> {
    bytes
        .try_into()
        .map(u64::from_be_bytes)
        .map_err(|_| StoreError::Corrupt("number of wrong length in the index".into()))
}

/// The bucket of claims that never expire.
pub(crate) const PERMANENT: u32 = u32::MAX;

/// A dedup claim: the request that claimed a key, by the event that claimed
/// it, in the time bucket of that event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Claim {
    pub id: RequestId,
    pub seq: u64,
    pub bucket: u32,
    /// Claimed by an append whose first event does not carry the key (a
    /// `received` event with that `dedup_key`): not rebuildable from the log,
    /// so stored before the events are written.
    pub explicit: bool,
}

impl Claim {
    fn encode(&self) -> [u8; 29] {
        let mut out = [0u8; 29];
        out[..4].copy_from_slice(&self.bucket.to_be_bytes());
        out[4..20].copy_from_slice(&id_bytes(self.id));
        out[20..28].copy_from_slice(&self.seq.to_be_bytes());
        out[28] = u8::from(self.explicit);
        out
    }

    fn decode(b: &[u8]) -> Result<Claim, StoreError> {
        if b.len() != 29 {
            return Err(StoreError::Corrupt("dedup claim of wrong length".into()));
        }
        Ok(Claim {
            bucket: u32::from_be_bytes(b[..4].try_into().unwrap_or_default()),
            id: id_from(&b[4..20])?,
            seq: u64_from(&b[20..28])?,
            explicit: b[28] & 1 == 1,
        })
    }
}

/// When claims expire: a claim that expires lives in the bucket of its
/// event's time, and a bucket expires whole `ttl` after it ends.
#[derive(Debug, Clone)]
pub(crate) struct Ttl {
    pub bucket_secs: u64,
    pub ttl_secs: u64,
}

impl Ttl {
    /// The bucket of a claim made at `time` ([`PERMANENT`] unless it `expires`).
    pub fn bucket_of(&self, expires: bool, time: DateTime<Utc>) -> u32 {
        if !expires {
            return PERMANENT;
        }
        let secs = u64::try_from(time.timestamp()).unwrap_or(0);
        u32::try_from(secs / self.bucket_secs.max(1)).unwrap_or(PERMANENT - 1)
    }

    /// The first bucket not expired at `now`.
    pub fn first_live(&self, now: DateTime<Utc>) -> u32 {
        let now = u64::try_from(now.timestamp()).unwrap_or(0);
        u32::try_from(now.saturating_sub(self.ttl_secs) / self.bucket_secs.max(1))
            .unwrap_or(PERMANENT - 1)
    }

    pub fn expired(&self, bucket: u32, now: DateTime<Utc>) -> bool {
        bucket != PERMANENT && bucket < self.first_live(now)
    }
}

/// What an archive is doing, stored before its checkpoint is appended, so
/// that a crash at any later point is finished on the next open.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Intent {
    /// The segments to move, `(first, last)`, oldest first.
    pub segments: Vec<(u64, u64)>,
    /// Where to.
    pub dir: PathBuf,
    /// Hash of the last event archived.
    pub last_hash: String,
}

impl Intent {
    pub fn through(&self) -> u64 {
        self.segments.last().map_or(0, |s| s.1)
    }
}

/// A request's entry in `records`: its state (for filters and the active
/// set) and the `(seq, offset in its segment)` of each of its events, in
/// order. The record itself is folded from those events when it is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    pub state: State,
    pub events: Vec<(u64, u64)>,
}

impl Entry {
    pub fn last_seq(&self) -> u64 {
        self.events.last().map_or(0, |e| e.0)
    }

    /// State code, then varints: the number of events, then per event its
    /// seq (the first whole, then the step from the one before) and offset.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(2 + self.events.len() * 6);
        out.push(state_code(self.state));
        put_varint(&mut out, self.events.len() as u64);
        let mut prev = 0;
        for (seq, offset) in &self.events {
            put_varint(&mut out, seq.saturating_sub(prev));
            put_varint(&mut out, *offset);
            prev = *seq;
        }
        out
    }

    pub fn decode(b: &[u8]) -> Result<Entry, StoreError> {
        let bad = || StoreError::Corrupt("request entry in the index is malformed".into());
        let (&code, mut rest) = b.split_first().ok_or_else(bad)?;
        let state = state_from(code).ok_or_else(bad)?;
        let n = take_varint(&mut rest).ok_or_else(bad)?;
        let mut events = Vec::with_capacity(usize::try_from(n.min(1024)).unwrap_or(0));
        let mut seq = 0u64;
        for _ in 0..n {
            seq = seq
                .checked_add(take_varint(&mut rest).ok_or_else(bad)?)
                .ok_or_else(bad)?;
            events.push((seq, take_varint(&mut rest).ok_or_else(bad)?));
        }
        if !rest.is_empty() {
            return Err(bad());
        }
        Ok(Entry { state, events })
    }

    /// Format 1: a JSON copy of the stored record (only its state and
    /// positions are kept).
    fn from_format_1(b: &[u8]) -> Result<Entry, StoreError> {
        #[derive(Deserialize)]
        struct V1 {
            events: Vec<(u64, u64)>,
            record: V1Record,
        }
        #[derive(Deserialize)]
        struct V1Record {
            state: State,
        }
        let v: V1 = serde_json::from_slice(b)
            .map_err(|e| StoreError::Corrupt(format!("request record in the index: {e}")))?;
        Ok(Entry {
            state: v.record.state,
            events: v.events,
        })
    }
}

/// Stable one-byte codes of the states (never reuse one).
fn state_code(s: State) -> u8 {
    match s {
        State::Received => 1,
        State::Invalid => 2,
        State::Denied => 3,
        State::PendingApproval => 4,
        State::Approved => 5,
        State::Rejected => 6,
        State::Expired => 7,
        State::Running => 8,
        State::Succeeded => 9,
        State::Failed => 10,
        State::TimedOut => 11,
        State::Cancelled => 12,
        State::Interrupted => 13,
    }
}

fn state_from(code: u8) -> Option<State> {
    State::ALL.into_iter().find(|s| state_code(*s) == code)
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn take_varint(b: &mut &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for (i, byte) in b.iter().enumerate().take(10) {
        let bits = u64::from(byte & 0x7f);
        let shift = 7 * i as u32;
        if shift == 63 && bits > 1 {
            return None;
        }
        v |= bits << shift;
        if byte & 0x80 == 0 {
            *b = &b[i + 1..];
            return Some(v);
        }
    }
    None
}

/// One indexer batch.
#[derive(Debug, Default)]
pub(crate) struct Batch {
    pub records: Vec<(RequestId, Entry)>,
    pub claims: Vec<(String, Claim)>,
    pub positions: Vec<(u64, u64)>,
    pub applied: Option<u64>,
}

/// The redb database of the derived indexes.
#[derive(Debug)]
pub(crate) struct Index {
    db: Database,
}

impl Index {
    pub fn open(path: &Path, cache_bytes: usize) -> Result<Index, StoreError> {
        let db = Database::builder()
            .set_cache_size(cache_bytes)
            .create(path)
            .map_err(|e| {
                StoreError::Io(format!(
                    "cannot open the audit index {}: {e} (it is derived from the log: moving it \
                     away rebuilds it on the next open, except the dedup claims of archived \
                     events and of appends whose events do not carry their key)",
                    path.display()
                ))
            })?;
        let txn = db.begin_write().map_err(ix)?;
        {
            let mut meta = txn.open_table(META).map_err(ix)?;
            let format = meta.get("format").map_err(ix)?.map(|v| v.value().to_vec());
            match format {
                None => {
                    meta.insert("format", FORMAT).map_err(ix)?;
                }
                Some(f) if f == FORMAT => {}
                Some(f) if f == FORMAT_1 => {
                    convert_format_1(&txn)?;
                    meta.insert("format", FORMAT).map_err(ix)?;
                }
                Some(f) => {
                    return Err(StoreError::Corrupt(format!(
                        "the audit index {} has format {:?}; this YouOps reads formats 1 and 2",
                        path.display(),
                        String::from_utf8_lossy(&f)
                    )))
                }
            }
            txn.open_table(RECORDS).map_err(ix)?;
            txn.open_table(ACTIVE).map_err(ix)?;
            txn.open_table(DEDUP).map_err(ix)?;
            txn.open_table(DEDUP_EXPIRY).map_err(ix)?;
            txn.open_table(EXPLICIT).map_err(ix)?;
            txn.open_table(POSITIONS).map_err(ix)?;
            txn.open_table(ARCHIVED).map_err(ix)?;
        }
        txn.commit().map_err(ix)?;
        Ok(Index { db })
    }

    fn meta_get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let txn = self.db.begin_read().map_err(ix)?;
        let meta = txn.open_table(META).map_err(ix)?;
        let v = meta.get(key).map_err(ix)?.map(|v| v.value().to_vec());
        Ok(v)
    }

    /// Every event up to this one is indexed.
    pub fn applied(&self) -> Result<u64, StoreError> {
        self.meta_get(APPLIED)?.map_or(Ok(0), |v| u64_from(&v))
    }

    /// The archive directory last used.
    pub fn archive_dir(&self) -> Result<Option<PathBuf>, StoreError> {
        Ok(self.meta_get(ARCHIVE_DIR)?.map(path_from))
    }

    pub fn intent(&self) -> Result<Option<Intent>, StoreError> {
        match self.meta_get(INTENT)? {
            Some(v) => serde_json::from_slice(&v)
                .map(Some)
                .map_err(|e| StoreError::Corrupt(format!("archive intent in the index: {e}"))),
            None => Ok(None),
        }
    }

    /// Record an archive's intent, its directory and where its segments
    /// will be, durably.
    pub fn begin_archive(&self, intent: &Intent) -> Result<(), StoreError> {
        let json = serde_json::to_vec(intent).map_err(ix)?;
        let dir = path_bytes(&intent.dir);
        let txn = self.db.begin_write().map_err(ix)?;
        {
            let mut meta = txn.open_table(META).map_err(ix)?;
            meta.insert(INTENT, json.as_slice()).map_err(ix)?;
            meta.insert(ARCHIVE_DIR, dir.as_slice()).map_err(ix)?;
            let mut archived = txn.open_table(ARCHIVED).map_err(ix)?;
            for (first, last) in &intent.segments {
                let mut v = last.to_be_bytes().to_vec();
                v.extend_from_slice(&dir);
                archived.insert(*first, v.as_slice()).map_err(ix)?;
            }
        }
        txn.commit().map_err(ix)
    }

    /// Forget an archive that never got its checkpoint: its segments stay live.
    pub fn abandon_archive(&self, intent: &Intent) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(ix)?;
        {
            let mut archived = txn.open_table(ARCHIVED).map_err(ix)?;
            for (first, _) in &intent.segments {
                archived.remove(*first).map_err(ix)?;
            }
            txn.open_table(META)
                .map_err(ix)?
                .remove(INTENT)
                .map_err(ix)?;
        }
        txn.commit().map_err(ix)
    }

    /// Finish an archive's bookkeeping: drop the positions of the archived
    /// events and the records `remove`, and the intent.
    pub fn end_archive(&self, through: u64, remove: &[RequestId]) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(ix)?;
        {
            let mut positions = txn.open_table(POSITIONS).map_err(ix)?;
            positions.retain_in(..=through, |_, _| false).map_err(ix)?;
            let mut records = txn.open_table(RECORDS).map_err(ix)?;
            let mut active = txn.open_table(ACTIVE).map_err(ix)?;
            for id in remove {
                records.remove(id_bytes(*id).as_slice()).map_err(ix)?;
                active.remove(id_bytes(*id).as_slice()).map_err(ix)?;
            }
            txn.open_table(META)
                .map_err(ix)?
                .remove(INTENT)
                .map_err(ix)?;
        }
        txn.commit().map_err(ix)
    }

    /// Archived segments: `(first, last, directory)`.
    pub fn archived(&self) -> Result<Vec<(u64, u64, PathBuf)>, StoreError> {
        let txn = self.db.begin_read().map_err(ix)?;
        let t = txn.open_table(ARCHIVED).map_err(ix)?;
        let mut out = Vec::new();
        for item in t.range(..).map_err(ix)? {
            let (k, v) = item.map_err(ix)?;
            let v = v.value();
            if v.len() < 8 {
                return Err(StoreError::Corrupt(
                    "archived segment of wrong length".into(),
                ));
            }
            out.push((k.value(), u64_from(&v[..8])?, path_from(v[8..].to_vec())));
        }
        Ok(out)
    }

    /// Store a batch; `durable`: fsynced before this returns (else with the
    /// next durable commit: the log is the truth, a crash replays it).
    pub fn write(&self, b: &Batch, ttl: &Ttl, durable: bool) -> Result<(), StoreError> {
        let mut txn = self.db.begin_write().map_err(ix)?;
        txn.set_durability(if durable {
            Durability::Immediate
        } else {
            Durability::None
        })
        .map_err(ix)?;
        {
            let mut records = txn.open_table(RECORDS).map_err(ix)?;
            let mut active = txn.open_table(ACTIVE).map_err(ix)?;
            for (id, entry) in &b.records {
                let k = id_bytes(*id);
                records
                    .insert(k.as_slice(), entry.encode().as_slice())
                    .map_err(ix)?;
                if !entry.state.is_terminal() {
                    active.insert(k.as_slice(), ()).map_err(ix)?;
                } else {
                    active.remove(k.as_slice()).map_err(ix)?;
                }
            }
            let mut dedup = txn.open_table(DEDUP).map_err(ix)?;
            let mut expiry = txn.open_table(DEDUP_EXPIRY).map_err(ix)?;
            let mut explicit = txn.open_table(EXPLICIT).map_err(ix)?;
            let now = Utc::now();
            for (key, claim) in &b.claims {
                let held = match dedup.get(key.as_str()).map_err(ix)? {
                    Some(v) => Some(Claim::decode(v.value())?),
                    None => None,
                };
                // The first claim holds until it expires.
                if held.is_some_and(|h| h.id != claim.id && !ttl.expired(h.bucket, now)) {
                    continue;
                }
                dedup
                    .insert(key.as_str(), claim.encode().as_slice())
                    .map_err(ix)?;
                if claim.bucket != PERMANENT {
                    expiry
                        .insert(expiry_key(claim.bucket, key).as_slice(), ())
                        .map_err(ix)?;
                }
                if claim.explicit {
                    explicit.insert(claim.seq, key.as_str()).map_err(ix)?;
                }
            }
            let mut positions = txn.open_table(POSITIONS).map_err(ix)?;
            for (seq, offset) in b.positions.iter().filter(|p| p.0 % POSITION_EVERY == 0) {
                positions.insert(*seq, *offset).map_err(ix)?;
            }
            if let Some(applied) = b.applied {
                txn.open_table(META)
                    .map_err(ix)?
                    .insert(APPLIED, applied.to_be_bytes().as_slice())
                    .map_err(ix)?;
            }
        }
        txn.commit().map_err(ix)
    }

    pub fn entry(&self, id: RequestId) -> Result<Option<Entry>, StoreError> {
        let txn = self.db.begin_read().map_err(ix)?;
        let t = txn.open_table(RECORDS).map_err(ix)?;
        let v = t.get(id_bytes(id).as_slice()).map_err(ix)?;
        v.map(|v| Entry::decode(v.value())).transpose()
    }

    /// The largest request id with a stored record.
    pub fn max_record_id(&self) -> Result<Option<RequestId>, StoreError> {
        let txn = self.db.begin_read().map_err(ix)?;
        let t = txn.open_table(RECORDS).map_err(ix)?;
        let last = t.last().map_err(ix)?.map(|(k, _)| k.value().to_vec());
        last.map(|k| id_from(&k)).transpose()
    }

    /// Request entries, newest first, below `before`: `f` returns whether to go on.
    pub fn entries_rev(
        &self,
        before: Option<RequestId>,
        mut f: impl FnMut(RequestId, Entry) -> Result<bool, StoreError>,
    ) -> Result<(), StoreError> {
        let txn = self.db.begin_read().map_err(ix)?;
        let t = txn.open_table(RECORDS).map_err(ix)?;
        let range = match before {
            Some(b) => t.range(..id_bytes(b).as_slice()),
            None => t.range(..),
        }
        .map_err(ix)?;
        for item in range.rev() {
            let (k, v) = item.map_err(ix)?;
            if !f(id_from(k.value())?, Entry::decode(v.value())?)? {
                break;
            }
        }
        Ok(())
    }

    pub fn active_ids(&self) -> Result<Vec<RequestId>, StoreError> {
        let txn = self.db.begin_read().map_err(ix)?;
        let t = txn.open_table(ACTIVE).map_err(ix)?;
        let mut out = Vec::new();
        for item in t.range(..).map_err(ix)? {
            out.push(id_from(item.map_err(ix)?.0.value())?);
        }
        Ok(out)
    }

    pub fn claim(&self, key: &str) -> Result<Option<Claim>, StoreError> {
        let txn = self.db.begin_read().map_err(ix)?;
        let t = txn.open_table(DEDUP).map_err(ix)?;
        let v = t.get(key).map_err(ix)?.map(|v| v.value().to_vec());
        v.map(|v| Claim::decode(&v)).transpose()
    }

    /// The last stored position in `from..=seq`: `(seq, offset)`.
    pub fn position_before(&self, from: u64, seq: u64) -> Result<Option<(u64, u64)>, StoreError> {
        let txn = self.db.begin_read().map_err(ix)?;
        let t = txn.open_table(POSITIONS).map_err(ix)?;
        let last = t.range(from..=seq).map_err(ix)?.next_back();
        last.map(|item| item.map(|(k, v)| (k.value(), v.value())).map_err(ix))
            .transpose()
    }

    /// Drop the claims stored ahead of their events (explicit claims) whose
    /// events never reached the log: those of events after `tip`.
    pub fn drop_claims_after(&self, tip: u64) -> Result<u64, StoreError> {
        let txn = self.db.begin_write().map_err(ix)?;
        let mut dropped = 0;
        {
            let mut explicit = txn.open_table(EXPLICIT).map_err(ix)?;
            let mut stale = Vec::new();
            for item in explicit.range(tip.saturating_add(1)..).map_err(ix)? {
                let (k, v) = item.map_err(ix)?;
                stale.push((k.value(), v.value().to_string()));
            }
            let mut dedup = txn.open_table(DEDUP).map_err(ix)?;
            let mut expiry = txn.open_table(DEDUP_EXPIRY).map_err(ix)?;
            for (seq, key) in stale {
                explicit.remove(seq).map_err(ix)?;
                let held = match dedup.get(key.as_str()).map_err(ix)? {
                    Some(v) => Some(Claim::decode(v.value())?),
                    None => None,
                };
                if let Some(c) = held.filter(|c| c.seq == seq) {
                    dedup.remove(key.as_str()).map_err(ix)?;
                    expiry
                        .remove(expiry_key(c.bucket, &key).as_slice())
                        .map_err(ix)?;
                    dropped += 1;
                }
            }
        }
        txn.commit().map_err(ix)?;
        Ok(dropped)
    }

    /// Remove every claim in an expired bucket; the number removed.
    pub fn expire(&self, ttl: &Ttl, now: DateTime<Utc>) -> Result<u64, StoreError> {
        let cutoff = ttl.first_live(now).to_be_bytes();
        let mut removed = 0;
        loop {
            let txn = self.db.begin_write().map_err(ix)?;
            let done;
            {
                let mut expiry = txn.open_table(DEDUP_EXPIRY).map_err(ix)?;
                let mut keys = Vec::new();
                for item in expiry.range(..cutoff.as_slice()).map_err(ix)?.take(10_000) {
                    keys.push(item.map_err(ix)?.0.value().to_vec());
                }
                done = keys.len() < 10_000;
                let mut dedup = txn.open_table(DEDUP).map_err(ix)?;
                let mut explicit = txn.open_table(EXPLICIT).map_err(ix)?;
                for k in keys {
                    expiry.remove(k.as_slice()).map_err(ix)?;
                    let bucket = u32::from_be_bytes(k[..4].try_into().unwrap_or_default());
                    let key = String::from_utf8_lossy(&k[4..]).into_owned();
                    let held = match dedup.get(key.as_str()).map_err(ix)? {
                        Some(v) => Some(Claim::decode(v.value())?),
                        None => None,
                    };
                    if let Some(c) = held.filter(|c| c.bucket == bucket) {
                        dedup.remove(key.as_str()).map_err(ix)?;
                        if c.explicit {
                            explicit.remove(c.seq).map_err(ix)?;
                        }
                        removed += 1;
                    }
                }
            }
            txn.commit().map_err(ix)?;
            if done {
                return Ok(removed);
            }
        }
    }
}

/// Rewrite format 1's records as entries (state and positions only).
fn convert_format_1(txn: &redb::WriteTransaction) -> Result<(), StoreError> {
    let mut records = txn.open_table(RECORDS).map_err(ix)?;
    let mut converted = Vec::new();
    for item in records.iter().map_err(ix)? {
        let (k, v) = item.map_err(ix)?;
        converted.push((
            k.value().to_vec(),
            Entry::from_format_1(v.value())?.encode(),
        ));
    }
    for (k, v) in &converted {
        records.insert(k.as_slice(), v.as_slice()).map_err(ix)?;
    }
    tracing::info!(
        records = converted.len(),
        "audit index: converted format 1 to format 2"
    );
    Ok(())
}

fn expiry_key(bucket: u32, key: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(4 + key.len());
    k.extend_from_slice(&bucket.to_be_bytes());
    k.extend_from_slice(key.as_bytes());
    k
}

fn path_bytes(p: &Path) -> Vec<u8> {
    use std::os::unix::ffi::OsStrExt as _;
    p.as_os_str().as_bytes().to_vec()
}

fn path_from(b: Vec<u8>) -> PathBuf {
    use std::os::unix::ffi::OsStringExt as _;
    PathBuf::from(std::ffi::OsString::from_vec(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_reject_bad_bytes() {
        for state in State::ALL {
            assert_eq!(state_from(state_code(state)), Some(state));
        }
        let e = Entry {
            state: State::Running,
            events: vec![(1, 0), (2, 431), (900_000_000_000, u64::MAX), (u64::MAX, 7)],
        };
        let b = e.encode();
        assert_eq!(Entry::decode(&b).unwrap(), e);
        for cut in 0..b.len() {
            assert!(Entry::decode(&b[..cut]).is_err(), "cut at {cut}");
        }
        let mut long = b.clone();
        long.push(0);
        assert!(Entry::decode(&long).is_err());
        assert!(Entry::decode(&[0, 0]).is_err(), "no state has code 0");
        assert!(Entry::decode(&[
            9, 1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, 0
        ])
        .is_err());
        let small = Entry {
            state: State::Succeeded,
            events: vec![
                (1_000_000, 40_000_000),
                (1_000_002, 40_000_860),
                (1_000_090, 40_038_000),
            ],
        };
        assert!(small.encode().len() <= 20, "{} bytes", small.encode().len());
    }

    #[test]
    fn format_1_records_convert() {
        let json =
            br#"{"events":[[5,0],[6,420]],"record":{"state":"succeeded","request":{"op":"x"}}}"#;
        assert_eq!(
            Entry::from_format_1(json).unwrap(),
            Entry {
                state: State::Succeeded,
                events: vec![(5, 0), (6, 420)]
            }
        );
    }

    #[test]
    fn claims_round_trip_and_buckets_expire_whole() {
        let c = Claim {
            id: RequestId::new(),
            seq: 77,
            bucket: 12,
            explicit: true,
        };
        assert_eq!(Claim::decode(&c.encode()).unwrap(), c);
        let ttl = Ttl {
            bucket_secs: 3600,
            ttl_secs: 7 * 86400,
        };
        let t0 = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let b = ttl.bucket_of(true, t0);
        assert_eq!(ttl.bucket_of(false, t0), PERMANENT);
        // Alive for at least the TTL, gone by TTL + one bucket.
        assert!(!ttl.expired(b, t0 + chrono::Duration::days(7)));
        assert!(ttl.expired(
            b,
            t0 + chrono::Duration::days(7) + chrono::Duration::hours(1)
        ));
        assert!(!ttl.expired(PERMANENT, t0 + chrono::Duration::days(10_000)));
    }
}
