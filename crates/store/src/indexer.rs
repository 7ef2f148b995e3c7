//! The indexer thread: stores the derived indexes (records, claims,
//! positions) in redb, lazily, of synced events only.

use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use chrono::Utc;
use tokio::sync::oneshot;
use youops_core::audit::StoreError;
use youops_core::model::RequestId;

use crate::index::Batch;
use crate::state::{lock, Shared, Stored};

pub(crate) type Reply = oneshot::Sender<Result<(), StoreError>>;

pub(crate) enum IndexMsg {
    /// Many events wait: index now.
    Kick,
    /// Index everything synced, durably, then answer.
    Now(Reply),
    /// The last round, durable, then stop.
    Close,
    /// Stop without another round.
    Stop,
}

/// Stores the derived indexes, lazily, of synced events only: the index never
/// holds what a power cut could take from the log.
pub(crate) struct Indexer {
    pub shared: Arc<Shared>,
    pub interval: Duration,
    pub sync_interval: Duration,
    pub last_durable: Instant,
    /// Commits since the last durable one.
    pub pending_commits: bool,
    pub last_expire: Instant,
}

/// How often expired dedup buckets are removed.
const EXPIRE_EVERY: Duration = Duration::from_secs(60);

impl Indexer {
    pub(crate) fn run(mut self, rx: mpsc::Receiver<IndexMsg>) {
        loop {
            match rx.recv_timeout(self.interval) {
                Ok(IndexMsg::Kick) | Err(mpsc::RecvTimeoutError::Timeout) => {
                    let _ = self.round(false);
                }
                Ok(IndexMsg::Now(reply)) => {
                    let _ = reply.send(self.round(true));
                }
                Ok(IndexMsg::Close) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let _ = self.round(true);
                    return;
                }
                Ok(IndexMsg::Stop) => return,
            }
            if self.last_expire.elapsed() >= EXPIRE_EVERY {
                self.last_expire = Instant::now();
                if let Err(e) = self.shared.index.expire(&self.shared.ttl, Utc::now()) {
                    tracing::error!(error = %e, "audit index: cannot remove expired dedup claims");
                }
            }
        }
    }

    /// Store what changed up to the last sync.
    fn round(&mut self, durable: bool) -> Result<(), StoreError> {
        let durable = durable || self.last_durable.elapsed() >= self.sync_interval;
        let mut snapshot: Vec<(RequestId, Stored)> = Vec::new();
        let mut claims = Vec::new();
        let mut positions = Vec::new();
        let synced;
        let applied;
        {
            let mut m = lock(&self.shared.mem);
            synced = m.durable;
            let mut skipped = u64::MAX;
            for (id, h) in &m.records {
                let Some(from) = h.dirty_from else { continue };
                if h.stored.last_seq() <= synced {
                    snapshot.push((*id, h.stored.clone()));
                } else {
                    // Changed by an event not synced yet: next time.
                    skipped = skipped.min(from);
                }
            }
            claims.extend(
                m.claims
                    .iter()
                    .filter(|(_, c)| c.seq <= synced)
                    .map(|(k, c)| (k.clone(), *c)),
            );
            positions.extend((m.pos_base..=synced).zip(m.positions.iter().copied()));
            applied = synced.min(skipped.saturating_sub(1));
            m.unindexed = 0;
            if let Some(newest) = snapshot.iter().map(|(id, _)| *id).max() {
                m.stored_max = m.stored_max.max(Some(newest));
            }
        }
        let nothing = snapshot.is_empty() && claims.is_empty() && positions.is_empty();
        if nothing && !(durable && self.pending_commits) {
            return Ok(());
        }
        let mut batch = Batch {
            claims: claims.clone(),
            positions,
            applied: Some(applied),
            ..Batch::default()
        };
        batch.records = snapshot.iter().map(|(id, s)| (*id, s.entry())).collect();
        if let Err(e) = self.shared.index.write(&batch, &self.shared.ttl, durable) {
            // The records stay in memory; the next round, or the next open, stores them.
            tracing::error!(error = %e, "audit index: records not stored");
            return Err(e);
        }
        if durable {
            self.last_durable = Instant::now();
            self.pending_commits = false;
        } else {
            self.pending_commits = true;
        }
        let mut m = lock(&self.shared.mem);
        for (id, stored) in snapshot {
            let last = stored.last_seq();
            let drop_it = match m.records.get_mut(&id) {
                Some(h) if h.stored.last_seq() == last => {
                    h.dirty_from = None;
                    h.stored.record.state.is_terminal()
                }
                _ => false,
            };
            if drop_it {
                m.records.remove(&id);
            }
        }
        for (key, claim) in claims {
            if m.claims.get(&key) == Some(&claim) {
                m.claims.remove(&key);
            }
        }
        while m.pos_base <= synced && m.positions.pop_front().is_some() {
            m.pos_base += 1;
        }
        Ok(())
    }
}
