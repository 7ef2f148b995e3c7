//! The [`AuditStore`] implementation: appends and flushes go to the writer;
//! reads answer from the writer's memory and the tree.

use std::collections::HashSet;
use std::path::Path;

use async_trait::async_trait;
use tokio::sync::oneshot;
use youops_core::audit::{
    AppendOptions, ArchiveReport, AuditStore, Broken, ChainVerifier, StoreError, VerifyReport,
};
use youops_core::model::{AuditEvent, NewEvent, RequestFilter, RequestId, RequestRecord};

use crate::encoding::{bkey, decode, decode_line, dkey, id_from, idkey, io, lines, seq_of_bkey};
use crate::records::Stored;
use crate::state::lock;
use crate::writer::{Job, Msg};
use crate::SledStore;

impl SledStore {
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
    pub(crate) fn live_start(&self) -> Result<u64, StoreError> {
        match self.inner.tree.scan_prefix(b"b").next() {
            Some(kv) => seq_of_bkey(&kv.map_err(io)?.0),
            None => Ok(1),
        }
    }

    /// The stored record of a request: the writer's copy if it has one, else the
    /// tree's.
    pub(crate) fn stored(&self, id: RequestId) -> Result<Option<Stored>, StoreError> {
        if let Some(s) = lock(&self.inner.shared.records).get(&id) {
            return Ok(Some(s.clone()));
        }
        match self.inner.tree.get(idkey(b's', id)).map_err(io)? {
            Some(v) => Ok(Some(decode("request record", &v)?)),
            None => Ok(None),
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
        let bodies = youops_core::audit::encode_bodies(&events)?;
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
