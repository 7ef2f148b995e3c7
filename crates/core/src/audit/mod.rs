//! The append-only, hash-chained audit log.
//!
//! Every event carries `prev_hash` and `hash = SHA-256(prev_hash ‖ canonical bytes)`,
//! where the canonical bytes are the JSON of `{seq, time, request_id, body}` (struct
//! fields in declaration order, maps sorted). Anyone holding an export can recompute
//! the chain with [`verify_events`]; no key is needed.
//!
//! [`AuditStore`] is the storage trait; [`MemoryStore`] keeps everything in
//! memory. The durable store is `youops_store::LogStore` (crate
//! `youops-store`); `youops-store-sled` is an optional one on sled. Stores
//! also keep per-request records (folded from events with
//! [`RequestRecord::apply`](crate::model::RequestRecord::apply)) and the dedup index.
//! With the `test-util` feature, `conformance` is the suite every backend runs.

mod archive;
#[cfg(feature = "test-util")]
pub mod conformance;
mod import;
mod memory;
mod view;

use std::fmt;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use archive::{
    archive_file_name, archive_files, is_checkpoint_of, parse_archive_file_name, recover_archives,
    write_archive_file, ArchiveRecovery,
};
pub use import::check_import;
pub use memory::MemoryStore;
pub use view::StoreView;

use crate::model::{AuditEvent, EventBody, NewEvent, RequestFilter, RequestId, RequestRecord};

/// `prev_hash` of the first event.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Store errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Another process holds the store open.
    #[error("the audit store at {0} is locked by another process (is `youops serve` running? use --server to talk to it)")]
    Locked(String),
    /// The dedup key was already used by an earlier request.
    #[error("duplicate delivery: already handled as request {0}")]
    Duplicate(RequestId),
    /// Disk or database failure.
    #[error("{0}")]
    Io(String),
    /// Stored data that does not decode.
    #[error("corrupt record: {0}")]
    Corrupt(String),
    /// The store was closed.
    #[error("the audit store is closed")]
    Closed,
    /// A conditional append ([`AppendOptions::expect_last_seq`]) found its
    /// request changed since it was read: nothing was appended or claimed.
    #[error("request {request} changed (it is now at event #{last_seq}); read it again and retry")]
    Stale {
        /// The request of the append's first event.
        request: RequestId,
        /// Its last event now ([`RequestRecord::last_seq`]; `0`: it has no record).
        last_seq: u64,
    },
}

/// How an append is acknowledged.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct AppendOptions {
    /// Wait until the events are on disk (group-committed with concurrent appends).
    pub durable: bool,
    /// Claim this dedup key for the request of the first event; if it was claimed
    /// before, nothing is appended and [`StoreError::Duplicate`] names the earlier request.
    pub dedup_key: Option<String>,
    /// The claim expires after the store's dedup TTL (a delivery id); otherwise
    /// it holds for good. Stores that do not expire claims keep every claim.
    pub dedup_expires: bool,
    /// Append only if the request of the first event still ends at this seq
    /// (its record's [`last_seq`](RequestRecord::last_seq)); otherwise nothing
    /// is appended and the append fails with [`StoreError::Stale`], which
    /// carries the request's last seq now. A compare-and-set for a decision
    /// that reads a record and then appends to it (an approval racing another
    /// approval or a cancel, possibly on another node): of several such
    /// appends that read the same record, exactly one succeeds.
    ///
    /// A request with no record (never received, or removed by retention once
    /// terminal and archived) ends at seq `0`: `Some(0)` appends only if the
    /// request does not exist yet (its first event must then be its
    /// `received`), and any other seq is `Stale` with `last_seq: 0`. The
    /// first event must belong to a request: a global first event is refused
    /// ([`StoreError::Io`]). An append of no events appends nothing and checks
    /// nothing.
    ///
    /// The store checks it where it orders the append, atomically with it,
    /// after the [`dedup_key`](Self::dedup_key): an append whose key is taken
    /// fails with [`StoreError::Duplicate`] whatever it expected, and a stale
    /// append claims no key (its key stays free for a later append).
    pub expect_last_seq: Option<u64>,
    /// A leader's write (approval expiry, a dead node's requests marked
    /// interrupted): append only while this node holds the cluster's leader
    /// lease under this epoch, checked in the transaction that appends, and
    /// fail otherwise ([`StoreError::Io`], a message starting `fenced:`). A
    /// store without leases (one node's: the memory, log and sled stores)
    /// ignores it.
    pub leader_epoch: Option<u64>,
}

impl AppendOptions {
    /// Durable, no dedup key, unconditional.
    pub fn durable() -> Self {
        AppendOptions {
            durable: true,
            dedup_key: None,
            dedup_expires: false,
            expect_last_seq: None,
            leader_epoch: None,
        }
    }

    /// Acknowledged once ordered in the chain; flushed with the next group
    /// commit. No dedup key, unconditional.
    pub fn buffered() -> Self {
        AppendOptions::default()
    }

    /// Append only if the request of the first event still ends at `seq`
    /// (see [`expect_last_seq`](Self#structfield.expect_last_seq)).
    ///
    /// ```
    /// use youops_core::audit::AppendOptions;
    ///
    /// let opts = AppendOptions::durable().expect_last_seq(7);
    /// assert_eq!(opts.expect_last_seq, Some(7));
    /// assert!(opts.durable);
    /// ```
    #[must_use]
    pub fn expect_last_seq(mut self, seq: u64) -> Self {
        self.expect_last_seq = Some(seq);
        self
    }

    /// A leader's write under `epoch` (see
    /// [`leader_epoch`](Self#structfield.leader_epoch)).
    #[must_use]
    pub fn leader_epoch(mut self, epoch: u64) -> Self {
        self.leader_epoch = Some(epoch);
        self
    }

    /// [`StoreError::Stale`] unless the request of the first of `events`
    /// ends at the expected seq; `last_seq` is where it ends now, `0` if it
    /// has no record (see [`expect_last_seq`](Self#structfield.expect_last_seq)).
    /// `Ok` for an unconditional append. For a store's writer, which calls it
    /// where it orders the append; `last_seq` is only called for a
    /// conditional append.
    pub fn check_expected(
        &self,
        events: &[NewEvent],
        last_seq: impl FnOnce(RequestId) -> Result<u64, StoreError>,
    ) -> Result<(), StoreError> {
        let Some(want) = self.expect_last_seq else {
            return Ok(());
        };
        let Some(request) = events.first().and_then(|e| e.request_id) else {
            return Err(StoreError::Io(
                "a conditional append (expect_last_seq) must start with an event of a request"
                    .into(),
            ));
        };
        let now = last_seq(request)?;
        if now == want {
            Ok(())
        } else {
            Err(StoreError::Stale {
                request,
                last_seq: now,
            })
        }
    }
}

/// The result of walking the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct VerifyReport {
    /// Events checked.
    pub checked: u64,
    /// Sequence number and hash of the last good event.
    pub head_seq: u64,
    /// Hash of the last good event.
    pub head_hash: String,
    /// The first broken record, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broken: Option<Broken>,
    /// Events before this seq were archived (a checkpoint starts the chain here).
    #[serde(default)]
    pub starts_at_checkpoint: Option<u64>,
}

impl VerifyReport {
    /// Whether the chain is intact.
    pub fn ok(&self) -> bool {
        self.broken.is_none()
    }
}

/// Where and why the chain breaks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Broken {
    /// Sequence number of the first bad record.
    pub seq: u64,
    /// What is wrong with it.
    pub reason: String,
}

impl fmt::Display for Broken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "record #{}: {}", self.seq, self.reason)
    }
}

/// Storage of the audit log, request records and dedup keys.
///
/// Implementations must append in one total order, make each append atomic (all
/// events of one call or none), and never rewrite an appended event.
#[async_trait]
pub trait AuditStore: Send + Sync + fmt::Debug + 'static {
    /// Append events in order; returns them as stored (with seq and hashes).
    async fn append(
        &self,
        events: Vec<NewEvent>,
        opts: AppendOptions,
    ) -> Result<Vec<AuditEvent>, StoreError>;
    /// Make everything appended so far durable.
    async fn flush(&self) -> Result<(), StoreError>;
    /// The current record of a request.
    async fn request(&self, id: RequestId) -> Result<Option<RequestRecord>, StoreError>;
    /// Every event of a request, in order.
    async fn request_events(&self, id: RequestId) -> Result<Vec<AuditEvent>, StoreError>;
    /// Every event of each of `ids`, in order, by request; a request with no
    /// event is left out. A node that follows a shared store reads the
    /// histories of a page of other nodes' events at once: a store that
    /// answers over a network does it in one read.
    async fn requests_events(
        &self,
        ids: &[RequestId],
    ) -> Result<std::collections::HashMap<RequestId, Vec<AuditEvent>>, StoreError> {
        let mut out = std::collections::HashMap::new();
        for id in ids {
            let events = self.request_events(*id).await?;
            if !events.is_empty() {
                out.insert(*id, events);
            }
        }
        Ok(out)
    }
    /// The request that claimed a dedup key.
    async fn find_dedup(&self, key: &str) -> Result<Option<RequestId>, StoreError>;
    /// Requests newest first, matching `filter`, older than `before` (for paging).
    async fn list_requests(
        &self,
        filter: &RequestFilter,
        before: Option<RequestId>,
        limit: usize,
    ) -> Result<Vec<RequestRecord>, StoreError>;
    /// Requests not in a terminal state.
    async fn active_requests(&self) -> Result<Vec<RequestRecord>, StoreError>;
    /// Events with `seq > after`, at most `limit`, in order.
    async fn events(&self, after: u64, limit: usize) -> Result<Vec<AuditEvent>, StoreError>;
    /// Sequence number and hash of the last event (`0`, genesis when empty).
    async fn head(&self) -> Result<(u64, String), StoreError>;
    /// Walk the whole chain.
    async fn verify(&self) -> Result<VerifyReport, StoreError>;
    /// Approximate bytes on disk.
    async fn size_on_disk(&self) -> Result<u64, StoreError>;
    /// Retention: move the oldest events, through `through_seq` at most, to a
    /// JSON-lines archive file in `dir`, and append a checkpoint event that carries
    /// the last archived hash, so that the remaining chain still proves
    /// continuity and the archive verifies in front of it. Events of requests not
    /// yet terminal stay. `Ok(None)` when there is nothing to archive.
    async fn archive(
        &self,
        through_seq: u64,
        dir: &std::path::Path,
    ) -> Result<Option<ArchiveReport>, StoreError> {
        let _ = (through_seq, dir);
        Err(StoreError::Io("this audit store does not archive".into()))
    }
    /// [`archive`](Self::archive) as the cluster's leader under
    /// `leader_epoch`: retention is leader-only work, so a store shared by
    /// several nodes refuses the archive's writes (its checkpoint, moving
    /// and removing the archived events) once this node no longer holds the
    /// leader lease under that epoch, as it refuses any write under
    /// [`AppendOptions::leader_epoch()`]. `None`: no leader (one machine).
    /// The default archives unfenced: a store of one machine has no leader.
    async fn archive_as(
        &self,
        through_seq: u64,
        dir: &std::path::Path,
        leader_epoch: Option<u64>,
    ) -> Result<Option<ArchiveReport>, StoreError> {
        let _ = leader_epoch;
        self.archive(through_seq, dir).await
    }
}

/// What [`AuditStore::archive`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ArchiveReport {
    /// The archive file written.
    pub file: std::path::PathBuf,
    /// First and last sequence numbers in it.
    pub first_seq: u64,
    /// Last archived event.
    pub through_seq: u64,
    /// Hash of the last archived event (the checkpoint carries it).
    pub last_hash: String,
    /// Sequence number of the checkpoint event appended.
    pub checkpoint_seq: u64,
    /// Bytes written to the archive.
    pub bytes: u64,
    /// Request records removed from the store (terminal, every event archived).
    pub records_removed: u64,
}

#[derive(Serialize)]
struct Canonical<'a> {
    seq: u64,
    time: &'a DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    request_id: &'a Option<RequestId>,
    body: &'a EventBody,
}

/// The JSON of each event's body, encoded by the caller of an append before
/// its events reach a store's writer (which then only splices them into
/// canonical bytes: [`canonical_bytes_encoded`]).
pub fn encode_bodies(events: &[NewEvent]) -> Result<Vec<Vec<u8>>, StoreError> {
    events
        .iter()
        .map(|e| serde_json::to_vec(&e.body))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| StoreError::Io(format!("cannot encode an audit event: {e}")))
}

/// The canonical bytes of an event (everything but its hashes).
pub fn canonical_bytes(
    seq: u64,
    time: &DateTime<Utc>,
    request_id: &Option<RequestId>,
    body: &EventBody,
) -> Vec<u8> {
    serde_json::to_vec(&Canonical {
        seq,
        time,
        request_id,
        body,
    })
    .expect("audit events always serialize")
}

/// [`canonical_bytes`] from a body already encoded as JSON (`serde_json::to_vec(body)`),
/// byte for byte the same. Lets a store encode bodies off its writer thread.
///
/// The head is written by hand: it is on the writer's hot path, and serde's
/// `collect_str` escapes chrono's RFC 3339 output piece by piece. None of the
/// three fields can need escaping (digits, RFC 3339 and Crockford base 32); the
/// tests compare against serde.
pub fn canonical_bytes_encoded(
    seq: u64,
    time: &DateTime<Utc>,
    request_id: &Option<RequestId>,
    body_json: &[u8],
) -> Vec<u8> {
    use std::io::Write as _;
    let mut out = Vec::with_capacity(body_json.len() + 112);
    // Writing into a Vec cannot fail.
    let _ = write!(
        out,
        "{{\"seq\":{seq},\"time\":\"{}\"",
        time.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
    );
    if let Some(id) = request_id {
        let mut buf = [0u8; ulid::ULID_LEN];
        let _ = write!(out, ",\"request_id\":\"{}\"", id.0.array_to_str(&mut buf));
    }
    out.extend_from_slice(b",\"body\":");
    out.extend_from_slice(body_json);
    out.push(b'}');
    out
}

/// The stored JSON of an event (`serde_json::to_vec` of the [`AuditEvent`], byte
/// for byte) from its canonical bytes and hashes, without encoding the body again.
pub fn event_json(mut canonical: Vec<u8>, prev_hash: &str, hash: &str) -> Vec<u8> {
    canonical.reserve(prev_hash.len() + hash.len() + 28);
    canonical.pop();
    canonical.extend_from_slice(b",\"prev_hash\":");
    serde_json::to_writer(&mut canonical, prev_hash).expect("strings serialize");
    canonical.extend_from_slice(b",\"hash\":");
    serde_json::to_writer(&mut canonical, hash).expect("strings serialize");
    canonical.push(b'}');
    canonical
}

/// `SHA-256(prev_hash ‖ canonical)`, hex.
pub fn chain_hash(prev_hash: &str, canonical: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(prev_hash.as_bytes());
    h.update(canonical);
    let digest = h.finalize();
    // `hex::encode` goes through a char iterator; this is on the writer's hot path.
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(64);
    for b in digest {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0x0f)]));
    }
    out
}

/// Recompute the hash an event should have.
pub fn expected_hash(e: &AuditEvent) -> String {
    chain_hash(
        &e.prev_hash,
        &canonical_bytes(e.seq, &e.time, &e.request_id, &e.body),
    )
}

/// Incremental chain verification, for stores and for exported JSON lines.
///
/// A chain normally starts at record 1. After retention archived its beginning, the
/// live log starts later, at record `N + 1`: then a [`EventBody::Checkpoint`]
/// event further on in the same chain must account for the missing part (its
/// `archived_through_seq` is `N` and its `archived_last_hash` is the first record's
/// `prev_hash`), and the archive itself verifies separately, or in front of the
/// live log as one sequence. [`finish`](Self::finish) reports a start that no
/// checkpoint accounts for.
#[derive(Debug, Clone)]
pub struct ChainVerifier {
    expected_seq: Option<u64>,
    prev_hash: String,
    checked: u64,
    starts_at_checkpoint: Option<u64>,
    /// `(N, hash of N)` of a chain that starts at `N + 1`, until a checkpoint
    /// accounts for it.
    unaccounted: Option<(u64, String)>,
}

impl Default for ChainVerifier {
    fn default() -> Self {
        Self::new()
    }
}

impl ChainVerifier {
    /// A verifier expecting the chain from its start (or from a checkpoint).
    pub fn new() -> Self {
        ChainVerifier {
            expected_seq: None,
            prev_hash: GENESIS_HASH.to_string(),
            checked: 0,
            starts_at_checkpoint: None,
            unaccounted: None,
        }
    }

    /// A verifier continuing after `seq` with hash `hash` (e.g. after an archive).
    pub fn after(seq: u64, hash: &str) -> Self {
        ChainVerifier {
            expected_seq: Some(seq + 1),
            prev_hash: hash.to_string(),
            checked: 0,
            starts_at_checkpoint: None,
            unaccounted: None,
        }
    }

    /// The sequence number the next record must have, once one was seen.
    pub fn next_seq(&self) -> Option<u64> {
        self.expected_seq
    }

    /// Check the next event.
    pub fn check(&mut self, e: &AuditEvent) -> Result<(), Broken> {
        let broken = |reason: String| Broken { seq: e.seq, reason };
        match self.expected_seq {
            Some(want) if e.seq != want => {
                return Err(broken(format!(
                    "sequence number {} where {want} was expected (a record is missing or out of place)",
                    e.seq
                )))
            }
            None if e.seq == 0 => return Err(broken("sequence number 0".into())),
            None if e.seq != 1 => {
                // The chain starts after archived records: a checkpoint must
                // account for them (checked as it comes, and by `finish`).
                self.prev_hash.clone_from(&e.prev_hash);
                self.starts_at_checkpoint = Some(e.seq);
                self.unaccounted = Some((e.seq - 1, e.prev_hash.clone()));
            }
            _ => {}
        }
        if e.prev_hash != self.prev_hash {
            return Err(broken(format!(
                "prev_hash {} does not match the previous record's hash {}",
                short(&e.prev_hash),
                short(&self.prev_hash)
            )));
        }
        let want = expected_hash(e);
        if want != e.hash {
            return Err(broken(format!(
                "content does not match its hash (stored {}, computed {}): the record was altered",
                short(&e.hash),
                short(&want)
            )));
        }
        if let (
            Some((through, last)),
            EventBody::Checkpoint {
                archived_through_seq,
                archived_last_hash,
                ..
            },
        ) = (&self.unaccounted, &e.body)
        {
            if archived_through_seq == through && archived_last_hash == last {
                self.unaccounted = None;
            }
        }
        self.prev_hash.clone_from(&e.hash);
        self.expected_seq = Some(e.seq + 1);
        self.checked += 1;
        Ok(())
    }

    /// Check the events of a JSON-lines text (an export, an archive) in order;
    /// blank lines are skipped, and a line that is not an event is broken.
    pub fn check_json_lines(&mut self, text: &str) -> Result<(), Broken> {
        let lines = text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty());
        for (i, line) in lines {
            match serde_json::from_str::<AuditEvent>(line) {
                Ok(e) => self.check(&e)?,
                Err(e) => {
                    return Err(Broken {
                        seq: self.next_seq().unwrap_or(1),
                        reason: format!("line {} is not an audit event: {e}", i + 1),
                    })
                }
            }
        }
        Ok(())
    }

    /// The report so far.
    pub fn report(&self, broken: Option<Broken>) -> VerifyReport {
        VerifyReport {
            checked: self.checked,
            head_seq: self.expected_seq.map_or(0, |s| s - 1),
            head_hash: self.prev_hash.clone(),
            broken,
            starts_at_checkpoint: self.starts_at_checkpoint,
        }
    }

    /// The report at the end of the chain: broken if it starts after archived
    /// records that no checkpoint in it accounts for.
    pub fn finish(&self) -> VerifyReport {
        let broken = self.unaccounted.as_ref().map(|(through, last)| Broken {
            seq: through + 1,
            reason: format!(
                "the log starts at record {} and no checkpoint in it accounts for the records \
                 before (archived through #{through} with last hash {})",
                through + 1,
                short(last)
            ),
        });
        self.report(broken)
    }
}

fn short(h: &str) -> &str {
    h.get(..12).unwrap_or(h)
}

/// What [`verify_with_archives`] found.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ArchivesVerdict {
    /// The walk over the archives and then the store, as one chain.
    pub report: VerifyReport,
    /// Records checked in the archive files.
    pub archived: u64,
    /// The archive file the break is in (`None`: none, or in the store).
    pub broken_in: Option<std::path::PathBuf>,
    /// Records at the start of the store that the archives hold too: an archive
    /// cut short by a crash, between writing its file and removing the records
    /// from the store. The store's next [`AuditStore::archive`] finishes it (or
    /// drops the file if its checkpoint was never appended).
    pub overlap: u64,
}

/// Verify archive files (in chain order, as [`archive_files`] lists them) and then
/// the store as one chain.
///
/// Records at the start of the store that the last archive also holds are
/// accepted when they chain among themselves and the last of them has the
/// archived hash (so, by the chain, every one of them is the archived record).
pub async fn verify_with_archives(
    store: &dyn AuditStore,
    archives: &[std::path::PathBuf],
) -> Result<ArchivesVerdict, StoreError> {
    let mut v = ChainVerifier::new();
    for path in archives {
        let text = tokio::fs::read_to_string(path)
            .await
            .map_err(|e| StoreError::Io(format!("cannot read {}: {e}", path.display())))?;
        if let Err(b) = v.check_json_lines(&text) {
            return Ok(ArchivesVerdict {
                archived: v.checked,
                report: v.report(Some(b)),
                broken_in: Some(path.clone()),
                overlap: 0,
            });
        }
    }
    let archived = v.checked;
    let (archived_head, archived_hash) = (v.next_seq().map_or(0, |n| n - 1), v.prev_hash.clone());
    // The store's records the archives hold too, checked among themselves.
    let mut overlap: Option<ChainVerifier> = None;
    let mut after = 0;
    let verdict = |v: &ChainVerifier, overlap: &Option<ChainVerifier>, broken| ArchivesVerdict {
        report: match broken {
            Some(b) => v.report(Some(b)),
            None => v.finish(),
        },
        archived,
        broken_in: None,
        overlap: overlap.as_ref().map_or(0, |o| o.checked),
    };
    loop {
        let batch = store.events(after, 1000).await?;
        if batch.is_empty() {
            break;
        }
        for e in &batch {
            after = e.seq;
            let checked = if e.seq <= archived_head {
                let ov =
                    overlap.get_or_insert_with(|| ChainVerifier::after(e.seq - 1, &e.prev_hash));
                ov.check(e).and_then(|()| {
                    if e.seq == archived_head && e.hash != archived_hash {
                        Err(Broken {
                            seq: e.seq,
                            reason: format!(
                                "the store's record differs from the archived one (hash {}, archived {})",
                                short(&e.hash),
                                short(&archived_hash)
                            ),
                        })
                    } else {
                        Ok(())
                    }
                })
            } else {
                v.check(e)
            };
            if let Err(b) = checked {
                return Ok(verdict(&v, &overlap, Some(b)));
            }
        }
    }
    if overlap.is_some() && after < archived_head {
        let b = Broken {
            seq: after + 1,
            reason: format!(
                "the store ends inside the archived records (at #{after}, archived through #{archived_head})"
            ),
        };
        return Ok(verdict(&v, &overlap, Some(b)));
    }
    Ok(verdict(&v, &overlap, None))
}

/// Verify a sequence of events (e.g. a JSON-lines export), stopping at the first
/// broken one.
pub fn verify_events<I: IntoIterator<Item = AuditEvent>>(events: I) -> VerifyReport {
    let mut v = ChainVerifier::new();
    for e in events {
        if let Err(b) = v.check(&e) {
            return v.report(Some(b));
        }
    }
    v.finish()
}

#[cfg(test)]
mod tests;
