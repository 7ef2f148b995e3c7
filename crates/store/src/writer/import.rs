//! [`Msg::Import`](super::Msg::Import): events copied from another store's
//! chain (`youops store copy`), checked, written as one group and synced.

use chrono::Utc;
use youops_core::audit::{StoreError, GENESIS_HASH};
use youops_core::model::{AuditEvent, EventBody};

use super::{Group, OpenSeg, Writer};
use crate::format::event_line;
use crate::index::Claim;
use crate::indexer::IndexMsg;
use crate::state::{claim_in, fold, lock};

/// The lines of checked events, the hash of the last and the seq after it.
struct Lines {
    lines: Vec<Vec<u8>>,
    prev: String,
    next: u64,
}

impl Writer {
    /// [`Msg::Import`](super::Msg::Import): check every event (its hash over
    /// its own content and its link to the one before, and that the first
    /// continues the tip, or starts an empty store), then write them as one
    /// group, `fdatasync`, and publish the records and claims they derive, as
    /// a replay would.
    pub(super) fn import(&mut self, events: Vec<AuditEvent>) -> Result<(), StoreError> {
        if let Some(why) = self.poison_error() {
            return Err(StoreError::Io(format!(
                "the audit log stopped appending after a failed write or sync ({why}); reopen \
                 the store to recover it"
            )));
        }
        let Some(first) = events.first() else {
            return Ok(());
        };
        let empty = self.import_starts(first)?;
        // Every line is built and checked before anything is written.
        let Lines { lines, prev, next } = import_lines(first, &events)?;
        if empty && first.seq > 1 {
            self.start_at(first)?;
        }
        if let Err(why) = self.prepare_segment() {
            self.poison(&why);
            return Err(StoreError::Io(why));
        }
        let base = self.open.as_ref().map_or(0, |o| o.len);
        let group = self.import_group(&events, lines, base)?;
        self.write_import(group, next, prev)
    }

    /// Whether the store is empty; an error unless the first event starts an
    /// empty store or continues exactly at the tip.
    fn import_starts(&self, first: &AuditEvent) -> Result<bool, StoreError> {
        let empty = self.seq == 0;
        if empty {
            if first.seq == 0 || (first.seq == 1 && first.prev_hash != GENESIS_HASH) {
                return Err(StoreError::Corrupt(format!(
                    "cannot import record #{} first: the chain starts at #1 with the genesis hash",
                    first.seq
                )));
            }
        } else if first.seq != self.seq + 1 || first.prev_hash != self.hash {
            return Err(StoreError::Io(format!(
                "cannot import record #{} (prev_hash {}) into a store that ends at #{} (hash {}): \
                 an import starts an empty store or continues exactly at its tip",
                first.seq,
                short(&first.prev_hash),
                self.seq,
                short(&self.hash)
            )));
        }
        Ok(empty)
    }

    /// The source's chain starts after records it archived: so does
    /// this log, at the first event's seq (its checkpoint comes later).
    fn start_at(&mut self, first: &AuditEvent) -> Result<(), StoreError> {
        if let Some(open) = self.open.take_if(|o| o.len == 0 && o.first != first.seq) {
            // Opened for an append that was refused: it holds nothing.
            let OpenSeg {
                path, file, first, ..
            } = open;
            drop(file);
            lock(&self.shared.segs).live.remove(&first);
            self.shared
                .fs
                .remove(&path)
                .map_err(|e| StoreError::Io(format!("cannot remove {}: {e}", path.display())))?;
        }
        self.seq = first.seq - 1;
        self.hash = first.prev_hash.clone();
        let mut m = lock(&self.shared.mem);
        m.tip = (self.seq, self.hash.clone());
        m.durable = self.seq;
        m.pos_base = first.seq;
        m.positions.clear();
        Ok(())
    }

    /// The group the imported events make at `base` in the open segment: their
    /// lines, positions, records and claims, derived as a replay derives them.
    fn import_group(
        &self,
        events: &[AuditEvent],
        lines: Vec<Vec<u8>>,
        base: u64,
    ) -> Result<Group, StoreError> {
        let now = Utc::now();
        let mut group = Group::default();
        let mut orphans = 0u64;
        for (ev, line) in events.iter().zip(lines) {
            let offset = base + group.buf.len() as u64;
            if let Some(id) = ev.request_id {
                let received = matches!(ev.body, EventBody::Received { .. });
                let first_seq = group.touched.get(&id).map_or(ev.seq, |t| t.1);
                let current = self.current(id, &group, received)?;
                // As a replay: an event whose request is not here (its
                // `received` event was archived in the source) derives nothing.
                match fold(current, ev, offset) {
                    Ok(s) => {
                        group.touched.insert(id, (s, first_seq));
                    }
                    Err(_) => orphans += 1,
                }
            }
            if let Some((key, owner, expires)) = claim_in(ev) {
                let bucket = self.shared.ttl.bucket_of(expires, ev.time);
                if !self.shared.ttl.expired(bucket, now) {
                    let claim = Claim {
                        id: owner,
                        seq: ev.seq,
                        bucket,
                        explicit: false,
                    };
                    group.claims.insert(key.to_string(), claim);
                }
            }
            group.offsets.push(offset);
            group.buf.extend_from_slice(&line);
        }
        if orphans > 0 {
            tracing::warn!(
                events = orphans,
                "audit import: events of requests whose `received` event is not in the imported \
                 chain derive no record"
            );
        }
        Ok(group)
    }

    /// Write the imported group, publish it with the tip `next - 1` and `prev`,
    /// then `fdatasync`.
    fn write_import(&mut self, group: Group, next: u64, prev: String) -> Result<(), StoreError> {
        let open = self
            .open
            .as_mut()
            .expect("prepare_segment opened a segment");
        if let Err(e) = open.file.append(&group.buf) {
            let why = format!("cannot write to {}: {e}", open.path.display());
            self.poison(&why);
            return Err(StoreError::Io(why));
        }
        open.len += group.buf.len() as u64;
        self.seq = next - 1;
        self.hash = prev;
        self.publish(group);
        if let Err(why) = self.sync() {
            self.poison(&why);
            return Err(StoreError::Io(why));
        }
        if lock(&self.shared.mem).unindexed >= self.opts.index_max_pending {
            let _ = self.index_tx.send(IndexMsg::Kick);
        }
        Ok(())
    }
}

/// Build the line of every event, checking its seq, its link to the one
/// before and its hash over its own content.
/// `first` is the first of `events`.
fn import_lines(first: &AuditEvent, events: &[AuditEvent]) -> Result<Lines, StoreError> {
    let canonical = youops_core::audit::check_import(events)?;
    let mut lines = Vec::with_capacity(events.len());
    for (ev, canonical) in events.iter().zip(canonical) {
        let mut line = event_line(canonical, &ev.prev_hash, &ev.hash);
        line.push(b'\n');
        lines.push(line);
    }
    let prev = events
        .last()
        .map_or_else(|| first.prev_hash.clone(), |e| e.hash.clone());
    let next = first.seq + events.len() as u64;
    Ok(Lines { lines, prev, next })
}

fn short(h: &str) -> &str {
    h.get(..12).unwrap_or(h)
}
