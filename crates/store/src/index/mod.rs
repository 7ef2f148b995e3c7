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
//! | `claims`, `claim_expiry`, `claim_explicit` | see [`claims`] | |
//! | `positions` | seq (u64), every [`POSITION_EVERY`]th | offset of the event in its segment (u64) |
//! | `archived` | first seq (u64) | last seq (u64) ‖ archive directory (path bytes) |
//!
//! The index holds no copy of what the log says: a request's record is
//! folded from its events, read at their offsets, and an event is found by
//! reading on from the nearest position stored before it (or from its
//! segment's start). Claims are kept under a hash of their key. This keeps
//! the index near 5 % of the log's size.

mod claims;
mod entry;

pub(crate) use claims::{Claim, Ttl};
pub(crate) use entry::Entry;

use std::path::{Path, PathBuf};

use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use youops_core::audit::StoreError;
use youops_core::model::RequestId;

const META: TableDefinition<'static, &str, &[u8]> = TableDefinition::new("meta");
const RECORDS: TableDefinition<'static, &[u8], &[u8]> = TableDefinition::new("records");
const ACTIVE: TableDefinition<'static, &[u8], ()> = TableDefinition::new("active");
const POSITIONS: TableDefinition<'static, u64, u64> = TableDefinition::new("positions");
const ARCHIVED: TableDefinition<'static, u64, &[u8]> = TableDefinition::new("archived");

const FORMAT: &[u8] = b"2";
/// Format 1 kept a JSON copy of each record and claims under their whole
/// key; it is converted on open.
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
    pub(crate) fn through(&self) -> u64 {
        self.segments.last().map_or(0, |s| s.1)
    }
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
    pub(crate) fn open(path: &Path, cache_bytes: usize) -> Result<Index, StoreError> {
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
            txn.open_table(claims::CLAIMS).map_err(ix)?;
            txn.open_table(claims::CLAIM_EXPIRY).map_err(ix)?;
            txn.open_table(claims::CLAIM_EXPLICIT).map_err(ix)?;
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
    pub(crate) fn applied(&self) -> Result<u64, StoreError> {
        self.meta_get(APPLIED)?.map_or(Ok(0), |v| u64_from(&v))
    }

    /// The archive directory last used.
    pub(crate) fn archive_dir(&self) -> Result<Option<PathBuf>, StoreError> {
        Ok(self.meta_get(ARCHIVE_DIR)?.map(path_from))
    }

    pub(crate) fn intent(&self) -> Result<Option<Intent>, StoreError> {
        match self.meta_get(INTENT)? {
            Some(v) => serde_json::from_slice(&v)
                .map(Some)
                .map_err(|e| StoreError::Corrupt(format!("archive intent in the index: {e}"))),
            None => Ok(None),
        }
    }

    /// Record an archive's intent, its directory and where its segments
    /// will be, durably.
    pub(crate) fn begin_archive(&self, intent: &Intent) -> Result<(), StoreError> {
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
    pub(crate) fn abandon_archive(&self, intent: &Intent) -> Result<(), StoreError> {
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
    pub(crate) fn end_archive(&self, through: u64, remove: &[RequestId]) -> Result<(), StoreError> {
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
    pub(crate) fn archived(&self) -> Result<Vec<(u64, u64, PathBuf)>, StoreError> {
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
    pub(crate) fn write(&self, b: &Batch, ttl: &Ttl, durable: bool) -> Result<(), StoreError> {
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
            claims::write_claims(&txn, &b.claims, ttl)?;
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

    pub(crate) fn entry(&self, id: RequestId) -> Result<Option<Entry>, StoreError> {
        let txn = self.db.begin_read().map_err(ix)?;
        let t = txn.open_table(RECORDS).map_err(ix)?;
        let v = t.get(id_bytes(id).as_slice()).map_err(ix)?;
        v.map(|v| Entry::decode(v.value())).transpose()
    }

    /// The largest request id with a stored record.
    pub(crate) fn max_record_id(&self) -> Result<Option<RequestId>, StoreError> {
        let txn = self.db.begin_read().map_err(ix)?;
        let t = txn.open_table(RECORDS).map_err(ix)?;
        let last = t.last().map_err(ix)?.map(|(k, _)| k.value().to_vec());
        last.map(|k| id_from(&k)).transpose()
    }

    /// Request entries, newest first, below `before`: `f` returns whether to go on.
    pub(crate) fn entries_rev(
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

    pub(crate) fn active_ids(&self) -> Result<Vec<RequestId>, StoreError> {
        let txn = self.db.begin_read().map_err(ix)?;
        let t = txn.open_table(ACTIVE).map_err(ix)?;
        let mut out = Vec::new();
        for item in t.range(..).map_err(ix)? {
            out.push(id_from(item.map_err(ix)?.0.value())?);
        }
        Ok(out)
    }

    /// The last stored position in `from..=seq`: `(seq, offset)`.
    pub(crate) fn position_before(
        &self,
        from: u64,
        seq: u64,
    ) -> Result<Option<(u64, u64)>, StoreError> {
        let txn = self.db.begin_read().map_err(ix)?;
        let t = txn.open_table(POSITIONS).map_err(ix)?;
        let last = t.range(from..=seq).map_err(ix)?.next_back();
        last.map(|item| item.map(|(k, v)| (k.value(), v.value())).map_err(ix))
            .transpose()
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
    drop(records);
    let claims = claims::convert_old_claims(txn)?;
    tracing::info!(
        records = converted.len(),
        claims,
        "audit index: converted format 1 to format 2"
    );
    Ok(())
}

fn path_bytes(p: &Path) -> Vec<u8> {
    use std::os::unix::ffi::OsStrExt as _;
    p.as_os_str().as_bytes().to_vec()
}

fn path_from(b: Vec<u8>) -> PathBuf {
    use std::os::unix::ffi::OsStringExt as _;
    PathBuf::from(std::ffi::OsString::from_vec(b))
}
