//! An in-memory [`AuditStore`]: the whole chain, the request records and the
//! dedup claims live in one mutex-guarded state.
//!
//! It is a complete store, not a stub: appends are totally ordered (every append
//! runs start to finish under the one lock), atomic (each call is built off to
//! the side and committed only if every event folds), hashed exactly as
//! the durable stores hash them, and a dedup claim is checked and
//! taken under the same lock as the append it belongs to, as is the condition
//! of a conditional append ([`AppendOptions::expect_last_seq`]). Retention writes the
//! same JSON-lines archive files as the sled store and keeps the same rules
//! (see [`AuditStore::archive`]).
//!
//! Nothing survives the process: [`AppendOptions::durable`] and
//! [`AuditStore::flush`] are accepted and trivially honoured, there is nothing to
//! reopen after a crash. For tests, embedding and benchmarks of everything but the
//! disk.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fmt;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use chrono::Utc;

use super::{
    canonical_bytes_encoded, chain_hash, event_json, is_checkpoint_of, recover_archives,
    write_archive_file, AppendOptions, ArchiveRecovery, ArchiveReport, AuditStore, ChainVerifier,
    StoreError, VerifyReport, GENESIS_HASH,
};
use crate::model::{AuditEvent, EventBody, NewEvent, RequestFilter, RequestId, RequestRecord};

/// What [`AuditStore::size_on_disk`] counts for each request record besides its
/// event list (a rough size of a record's JSON).
const RECORD_BYTES: u64 = 512;
/// What it counts per dedup claim besides the key (the request id and a map slot).
const CLAIM_BYTES: u64 = 24;

/// The in-memory [`AuditStore`]. Cloning gives another handle to the same store.
///
/// ```
/// use youops_core::audit::{AppendOptions, AuditStore, MemoryStore, GENESIS_HASH};
/// use youops_core::{EventBody, NewEvent};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let store = MemoryStore::new();
/// assert_eq!(store.head().await?, (0, GENESIS_HASH.to_string()));
/// let notice = NewEvent::global(EventBody::Notice {
///     source: "docs".into(),
///     kind: "hello".into(),
///     message: "first".into(),
///     data: serde_json::Value::Null,
/// });
/// let stored = store.append(vec![notice], AppendOptions::durable()).await?;
/// assert_eq!(stored[0].seq, 1);
/// assert_eq!(stored[0].prev_hash, GENESIS_HASH);
/// assert!(store.verify().await?.ok());
/// # Ok(()) }
/// ```
#[derive(Clone, Default)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    state: Mutex<State>,
    /// One archive at a time (its directory check reads what another would write).
    archiving: tokio::sync::Mutex<()>,
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = lock(&self.inner.state);
        f.debug_struct("MemoryStore")
            .field("live_start", &s.live_start)
            .field("head", &s.tip.0)
            .field("events", &s.events.len())
            .field("records", &s.records.len())
            .field("claims", &s.claims.len())
            .finish()
    }
}

/// A request's record and where its events are.
#[derive(Debug, Clone)]
struct Entry {
    /// Sequence numbers of the request's events, in order (archived ones too).
    seqs: Vec<u64>,
    record: RequestRecord,
}

/// An event held, with the size of its stored JSON line.
#[derive(Debug)]
struct Held {
    event: AuditEvent,
    bytes: u64,
}

#[derive(Debug)]
struct State {
    /// The live events, in seq order: `events[i].seq == live_start + i`.
    events: VecDeque<Held>,
    /// Seq of the first live event (1 until retention archived the beginning).
    live_start: u64,
    /// Seq and hash of the last event appended (`0`, genesis when empty).
    tip: (u64, String),
    /// Every request record (ordered by id, which is creation order).
    records: BTreeMap<RequestId, Entry>,
    /// Requests whose record is not terminal.
    active: BTreeSet<RequestId>,
    /// Dedup key → the request that claimed it.
    claims: HashMap<String, RequestId>,
    /// Approximate bytes held (see [`AuditStore::size_on_disk`]).
    bytes: u64,
}

impl Default for State {
    fn default() -> Self {
        State {
            events: VecDeque::new(),
            live_start: 1,
            tip: (0, GENESIS_HASH.to_string()),
            records: BTreeMap::new(),
            active: BTreeSet::new(),
            claims: HashMap::new(),
            bytes: 0,
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Fold one event into the record of its request (the sled store's rules and
/// messages: `received` first and once).
fn fold(current: Option<Entry>, ev: &AuditEvent) -> Result<Entry, StoreError> {
    let id = ev.request_id.map(|i| i.to_string()).unwrap_or_default();
    match (&ev.body, current) {
        (EventBody::Received { request }, None) => Ok(Entry {
            seqs: vec![ev.seq],
            record: RequestRecord::new(Arc::clone(request), ev),
        }),
        (EventBody::Received { .. }, Some(_)) => {
            Err(StoreError::Io(format!("request {id} was already received")))
        }
        (_, Some(mut e)) => {
            e.record.apply(ev);
            e.seqs.push(ev.seq);
            Ok(e)
        }
        (_, None) => Err(StoreError::Io(format!(
            "event for unknown request {id} (its `received` event must come first)"
        ))),
    }
}

impl State {
    /// The live event `seq`, if held.
    fn event(&self, seq: u64) -> Option<&AuditEvent> {
        let index = usize::try_from(seq.checked_sub(self.live_start)?).ok()?;
        self.events
            .get(index)
            .map(|h| &h.event)
            .filter(|e| e.seq == seq)
    }

    /// Live events with `seq > after`, at most `limit`.
    fn events_after(&self, after: u64, limit: usize) -> Vec<AuditEvent> {
        let from = after.saturating_add(1).saturating_sub(self.live_start);
        let from = usize::try_from(from).unwrap_or(usize::MAX);
        if from >= self.events.len() {
            return Vec::new();
        }
        self.events
            .range(from..)
            .take(limit)
            .map(|h| h.event.clone())
            .collect()
    }

    /// Append `events` (their bodies already encoded) as one atomic step: built
    /// first, committed only if the dedup key is free, the request is where
    /// the append expects it ([`AppendOptions::expect_last_seq`], checked
    /// after the key) and every event folds.
    fn append(
        &mut self,
        events: Vec<NewEvent>,
        bodies: Vec<Vec<u8>>,
        opts: &AppendOptions,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        if let Some(key) = &opts.dedup_key {
            if let Some(owner) = self.claims.get(key) {
                return Err(StoreError::Duplicate(*owner));
            }
        }
        opts.check_expected(&events, |id| {
            Ok(self.records.get(&id).map_or(0, |e| e.record.last_seq))
        })?;
        let mut out = Vec::with_capacity(events.len());
        let mut sizes = Vec::with_capacity(events.len());
        let mut local: HashMap<RequestId, Entry> = HashMap::new();
        let (mut seq, mut prev) = self.tip.clone();
        for (ne, body_json) in events.into_iter().zip(bodies) {
            seq += 1;
            let time = Utc::now();
            let canonical = canonical_bytes_encoded(seq, &time, &ne.request_id, &body_json);
            let hash = chain_hash(&prev, &canonical);
            // The JSON line the sled store would store (and an archive holds).
            sizes.push(event_json(canonical, &prev, &hash).len() as u64 + 1);
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
                    Some(e) => Some(e),
                    None => self.records.get(&id).cloned(),
                };
                local.insert(id, fold(current, &ev)?);
            }
            out.push(ev);
        }
        // Commit: nothing above changed the state.
        for (id, entry) in local {
            if entry.record.state.is_terminal() {
                self.active.remove(&id);
            } else {
                self.active.insert(id);
            }
            let added = entry.seqs.len() as u64 * 8;
            match self.records.insert(id, entry) {
                Some(old) => self.bytes -= old.seqs.len() as u64 * 8,
                None => self.bytes += RECORD_BYTES,
            }
            self.bytes += added;
        }
        if let (Some(key), Some(id)) = (
            &opts.dedup_key,
            out.first().and_then(|first| first.request_id),
        ) {
            self.bytes += key.len() as u64 + CLAIM_BYTES;
            self.claims.insert(key.clone(), id);
        }
        for (ev, bytes) in out.iter().zip(sizes) {
            self.bytes += bytes;
            self.events.push_back(Held {
                event: ev.clone(),
                bytes,
            });
        }
        self.tip = (seq, prev);
        Ok(out)
    }

    /// Step 3 of archiving: drop events `..=through`, and the records of the
    /// `touched` requests that are terminal with every event archived. Returns
    /// how many records went.
    fn remove_through(&mut self, through: u64, touched: &BTreeSet<RequestId>) -> u64 {
        while self.events.front().is_some_and(|h| h.event.seq <= through) {
            if let Some(h) = self.events.pop_front() {
                self.bytes -= h.bytes;
            }
        }
        self.live_start = self.live_start.max(through + 1);
        let mut removed = 0;
        for id in touched {
            let gone = self.records.get(id).is_some_and(|e| {
                e.record.state.is_terminal() && e.seqs.last().is_some_and(|s| *s <= through)
            });
            if gone {
                if let Some(e) = self.records.remove(id) {
                    self.bytes -= RECORD_BYTES + e.seqs.len() as u64 * 8;
                }
                self.active.remove(id);
                removed += 1;
            }
        }
        removed
    }

    /// The requests with an event in `first..=through` (live events only).
    fn request_ids_in(&self, first: u64, through: u64) -> BTreeSet<RequestId> {
        self.events
            .iter()
            .map(|h| &h.event)
            .filter(|e| (first..=through).contains(&e.seq))
            .filter_map(|e| e.request_id)
            .collect()
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.inner.state)
    }
}

/// The memory store as [`recover_archives`] sees it, to finish or undo an
/// archive cut short: a private handle, so that finishing a move is not
/// part of [`MemoryStore`]'s API.
struct Recovery<'a>(&'a MemoryStore);

#[async_trait]
impl ArchiveRecovery for Recovery<'_> {
    async fn live_start(&self) -> Result<u64, StoreError> {
        Ok(self.0.state().live_start)
    }

    async fn event_hash(&self, seq: u64) -> Result<Option<String>, StoreError> {
        Ok(self.0.state().event(seq).map(|e| e.hash.clone()))
    }

    async fn has_checkpoint(&self, through: u64, name: &str) -> Result<bool, StoreError> {
        let s = self.0.state();
        Ok(s.events
            .iter()
            .any(|h| is_checkpoint_of(&h.event.body, through, name)))
    }

    async fn finish_move(&self, first: u64, through: u64, _: &str) -> Result<u64, StoreError> {
        let mut s = self.0.state();
        let touched = s.request_ids_in(first, through);
        Ok(s.remove_through(through, &touched))
    }
}

#[async_trait]
impl AuditStore for MemoryStore {
    async fn append(
        &self,
        events: Vec<NewEvent>,
        opts: AppendOptions,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        // Encoded before taking the lock, as the sled store encodes them before
        // handing them to its writer.
        let bodies = super::encode_bodies(&events)?;
        self.state().append(events, bodies, &opts)
    }

    async fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }

    async fn request(&self, id: RequestId) -> Result<Option<RequestRecord>, StoreError> {
        Ok(self.state().records.get(&id).map(|e| e.record.clone()))
    }

    async fn request_events(&self, id: RequestId) -> Result<Vec<AuditEvent>, StoreError> {
        let s = self.state();
        let Some(entry) = s.records.get(&id) else {
            return Ok(Vec::new());
        };
        // Events before the live start were archived (retention).
        entry
            .seqs
            .iter()
            .filter(|seq| **seq >= s.live_start)
            .map(|seq| {
                s.event(*seq).cloned().ok_or_else(|| {
                    StoreError::Corrupt(format!("event #{seq} of request {id} is not in the store"))
                })
            })
            .collect()
    }

    async fn find_dedup(&self, key: &str) -> Result<Option<RequestId>, StoreError> {
        Ok(self.state().claims.get(key).copied())
    }

    async fn list_requests(
        &self,
        filter: &RequestFilter,
        before: Option<RequestId>,
        limit: usize,
    ) -> Result<Vec<RequestRecord>, StoreError> {
        let s = self.state();
        let range = match before {
            Some(b) => s.records.range(..b),
            None => s.records.range(..),
        };
        Ok(range
            .rev()
            .map(|(_, e)| &e.record)
            .filter(|r| filter.matches(r))
            .take(limit)
            .cloned()
            .collect())
    }

    async fn active_requests(&self) -> Result<Vec<RequestRecord>, StoreError> {
        let s = self.state();
        Ok(s.active
            .iter()
            .filter_map(|id| s.records.get(id))
            .map(|e| e.record.clone())
            .filter(|r| !r.state.is_terminal())
            .collect())
    }

    async fn events(&self, after: u64, limit: usize) -> Result<Vec<AuditEvent>, StoreError> {
        Ok(self.state().events_after(after, limit))
    }

    async fn head(&self) -> Result<(u64, String), StoreError> {
        Ok(self.state().tip.clone())
    }

    async fn verify(&self) -> Result<VerifyReport, StoreError> {
        // In chunks, so appends are not held up for the whole walk.
        let mut v = ChainVerifier::new();
        let mut after = 0;
        loop {
            let batch = self.state().events_after(after, 1024);
            let Some(last) = batch.last() else {
                break;
            };
            after = last.seq;
            for e in &batch {
                if let Err(b) = v.check(e) {
                    return Ok(v.report(Some(b)));
                }
            }
        }
        Ok(v.finish())
    }

    /// Approximate bytes held in memory: the events' JSON lines, a rough size
    /// per request record and the dedup claims.
    async fn size_on_disk(&self) -> Result<u64, StoreError> {
        Ok(self.state().bytes)
    }

    async fn archive(
        &self,
        through_seq: u64,
        dir: &Path,
    ) -> Result<Option<ArchiveReport>, StoreError> {
        let _one = self.inner.archiving.lock().await;
        // Finish or undo an archive cut short, and refuse an archive
        // directory that does not agree with this store: the rules of every
        // store that archives into files, so that all behave alike.
        recover_archives(dir, &Recovery(self)).await?;
        let (start, through, events) = {
            let s = self.state();
            let start = s.live_start;
            // Keep every event of requests still in flight, and the tip.
            let mut through = through_seq.min(s.tip.0.saturating_sub(1));
            for id in &s.active {
                if let Some(first) = s.records.get(id).and_then(|e| e.seqs.first()) {
                    through = through.min(first.saturating_sub(1));
                }
            }
            if through < start {
                return Ok(None);
            }
            let count = usize::try_from(through - start + 1).unwrap_or(usize::MAX);
            (start, through, s.events_after(start - 1, count))
        };
        let last_hash = match events.last() {
            Some(last) if last.seq == through => last.hash.clone(),
            _ => {
                return Err(StoreError::Corrupt(format!(
                    "events {start}..={through} are not all in the store"
                )))
            }
        };
        let touched: BTreeSet<RequestId> = events.iter().filter_map(|e| e.request_id).collect();
        // 1. The archive file, written whole and fsynced before anything changes.
        let dir_owned = dir.to_path_buf();
        let (file, bytes) = tokio::task::spawn_blocking(move || {
            write_archive_file(&dir_owned, start, through, &events)
        })
        .await
        .map_err(|e| StoreError::Io(e.to_string()))??;
        // 2. The checkpoint, in the chain.
        let name = file
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        let checkpoint = self
            .append(
                vec![NewEvent::global(EventBody::Checkpoint {
                    archived_through_seq: through,
                    archived_last_hash: last_hash.clone(),
                    archive: name,
                })],
                AppendOptions::durable(),
            )
            .await?;
        // 3. The archived events, and the records whose events are all archived.
        let records_removed = self.state().remove_through(through, &touched);
        Ok(Some(ArchiveReport {
            file,
            first_seq: start,
            through_seq: through,
            last_hash,
            checkpoint_seq: checkpoint.first().map_or(0, |e| e.seq),
            bytes,
            records_removed,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::conformance::build::{received, request, to};
    use crate::model::State;

    #[tokio::test]
    async fn appends_chain_and_fold_like_a_durable_store() {
        // (youops-store-sled's tests compare this store with the sled store
        // event by event.)
        let mem = MemoryStore::new();
        let r = request("op");
        let script = [
            vec![received(&r), to(r.id, State::Running)],
            vec![to(r.id, State::Succeeded)],
        ];
        let mut seq = 0;
        for events in script {
            let m = mem.append(events, AppendOptions::durable()).await.unwrap();
            // Each hashed by the chain rule over its canonical bytes.
            for m in &m {
                seq += 1;
                assert_eq!(m.seq, seq);
                assert_eq!(m.hash, super::super::expected_hash(m));
            }
        }
        let m = mem.request(r.id).await.unwrap().unwrap();
        assert_eq!((m.state, m.last_seq), (State::Succeeded, 3));
        assert_eq!(m.last_hash, mem.head().await.unwrap().1);
        // What `size_on_disk` counts for an event is the line a durable store
        // stores (and an archive holds).
        let first = mem.events(0, 1).await.unwrap();
        let held = mem.state().events[0].bytes;
        assert_eq!(
            held,
            serde_json::to_vec(&first[0]).unwrap().len() as u64 + 1
        );
    }

    #[tokio::test]
    async fn size_follows_what_is_held() {
        let dir = tempfile::tempdir().unwrap();
        let store = MemoryStore::new();
        assert_eq!(store.size_on_disk().await.unwrap(), 0);
        let r = request("op");
        let opts = AppendOptions {
            durable: false,
            dedup_key: Some("k".into()),
            dedup_expires: false,
            expect_last_seq: None,
            leader_epoch: None,
        };
        store
            .append(vec![received(&r), to(r.id, State::Succeeded)], opts)
            .await
            .unwrap();
        let lines: u64 = store
            .events(0, 10)
            .await
            .unwrap()
            .iter()
            .map(|e| serde_json::to_vec(e).unwrap().len() as u64 + 1)
            .sum();
        let claim = 1 + CLAIM_BYTES;
        assert_eq!(
            store.size_on_disk().await.unwrap(),
            lines + RECORD_BYTES + 16 + claim
        );
        let notice = NewEvent::global(EventBody::Notice {
            source: "t".into(),
            kind: "k".into(),
            message: "m".into(),
            data: serde_json::Value::Null,
        });
        store
            .append(vec![notice], AppendOptions::buffered())
            .await
            .unwrap();
        let report = store.archive(2, dir.path()).await.unwrap().unwrap();
        assert_eq!(report.records_removed, 1);
        // Left: the notice, the checkpoint and the claim.
        let left: u64 = store
            .events(0, 10)
            .await
            .unwrap()
            .iter()
            .map(|e| serde_json::to_vec(e).unwrap().len() as u64 + 1)
            .sum();
        assert_eq!(store.size_on_disk().await.unwrap(), left + claim);
    }
}
