//! Retention: archive files, checkpoints, removal of archived events, and
//! the recovery of an archive a crash cut short.

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use youops_core::audit::{
    archive_file_name, is_checkpoint_of, recover_archives, AppendOptions, ArchiveRecovery,
    ArchiveReport, AuditStore, ChainVerifier, StoreError,
};
use youops_core::model::{EventBody, NewEvent, RequestId};

use crate::disk::Disk;
use crate::encoding::{bkey, decode, decode_line, idkey, io, lines, seq_of_bkey};
use crate::records::Stored;
use crate::state::{lock, IdSet};
use crate::SledStore;

impl SledStore {
    /// [`AuditStore::archive`] after the checks: write, checkpoint, remove.
    pub(crate) async fn archive_through(
        &self,
        start: u64,
        through: u64,
        dir: &Path,
    ) -> Result<ArchiveReport, StoreError> {
        self.archive_steps(start, through, dir, ArchiveStep::Remove)
            .await
    }

    /// [`archive_through`](Self::archive_through), stopping after step `until`
    /// (tests stop early to leave what a crash there would).
    pub(crate) async fn archive_steps(
        &self,
        start: u64,
        through: u64,
        dir: &Path,
        until: ArchiveStep,
    ) -> Result<ArchiveReport, StoreError> {
        // 1. The archive file, written whole and fsynced before anything changes.
        let tree = self.inner.tree.clone();
        let dir_owned = dir.to_path_buf();
        let (file, bytes, last_hash, touched) =
            tokio::task::spawn_blocking(move || write_archive(&tree, start, through, &dir_owned))
                .await
                .map_err(io)??;
        let mut report = blank_report();
        report.file = file;
        report.first_seq = start;
        report.through_seq = through;
        report.last_hash = last_hash;
        report.bytes = bytes;
        if until == ArchiveStep::File {
            return Ok(report);
        }
        // 2. The checkpoint, durable, in the chain.
        let name = report
            .file
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        let checkpoint = self
            .append(
                vec![NewEvent::global(EventBody::Checkpoint {
                    archived_through_seq: through,
                    archived_last_hash: report.last_hash.clone(),
                    archive: name,
                })],
                AppendOptions::durable(),
            )
            .await?;
        report.checkpoint_seq = checkpoint.first().map_or(0, |e| e.seq);
        if until == ArchiveStep::Checkpoint {
            return Ok(report);
        }
        // 3. Remove the archived events, and the records whose events are all archived.
        report.records_removed = self.remove_through(through, touched).await?;
        Ok(report)
    }

    /// Step 3 of archiving: remove events `..=through`, and the records of
    /// `touched` requests whose events are all archived (except those the writer
    /// holds).
    async fn remove_through(&self, through: u64, touched: IdSet) -> Result<u64, StoreError> {
        let tree = self.inner.tree.clone();
        let db = self.inner.db.clone();
        let held: IdSet = lock(&self.inner.shared.records).keys().copied().collect();
        tokio::task::spawn_blocking(move || remove_archived(&db, &tree, through, &touched, &held))
            .await
            .map_err(io)?
    }

    /// Finish or undo an archive a crash cut short: with its checkpoint in
    /// the chain, finish step 3; without, remove the file (the events stay
    /// here). Also removes half-written files (`.jsonl.tmp`), and refuses an
    /// archive directory that does not agree with this store. The rules
    /// every store that archives into files keeps: [`recover_archives`].
    pub(crate) async fn recover_archive(&self, dir: &Path) -> Result<(), StoreError> {
        recover_archives(dir, &Recovery(self)).await
    }
}

/// The sled store as [`recover_archives`] sees it: a private handle, so that
/// finishing a move is not part of [`SledStore`]'s API.
struct Recovery<'a>(&'a SledStore);

#[async_trait]
impl ArchiveRecovery for Recovery<'_> {
    async fn live_start(&self) -> Result<u64, StoreError> {
        self.0.live_start()
    }

    async fn event_hash(&self, seq: u64) -> Result<Option<String>, StoreError> {
        let stored = self.0.events(seq.saturating_sub(1), 1).await?;
        Ok(stored.into_iter().find(|e| e.seq == seq).map(|e| e.hash))
    }

    /// Whether the chain after `through` has the checkpoint of archive `name`.
    async fn has_checkpoint(&self, through: u64, name: &str) -> Result<bool, StoreError> {
        let mut after = through;
        loop {
            let batch = self.0.events(after, 1000).await?;
            let Some(last) = batch.last() else {
                return Ok(false);
            };
            after = last.seq;
            if batch
                .iter()
                .any(|e| is_checkpoint_of(&e.body, through, name))
            {
                return Ok(true);
            }
        }
    }

    async fn finish_move(&self, first: u64, through: u64, _: &str) -> Result<u64, StoreError> {
        let tree = self.0.inner.tree.clone();
        let touched = tokio::task::spawn_blocking(move || request_ids_in(&tree, first, through))
            .await
            .map_err(io)??;
        self.0.remove_through(through, touched).await
    }
}

/// Write events `start..=through` to a new archive file in `dir` (through a
/// temporary file, fsynced, renamed, directory fsynced), checking that they chain.
/// Returns the file, its size and the last hash.
fn write_archive(
    tree: &sled::Tree,
    start: u64,
    through: u64,
    dir: &Path,
) -> Result<(PathBuf, u64, String, IdSet), StoreError> {
    use std::io::Write as _;
    std::fs::create_dir_all(dir)
        .map_err(|e| StoreError::Io(format!("cannot create {}: {e}", dir.display())))?;
    let path = dir.join(archive_file_name(start, through));
    let tmp = path.with_extension("jsonl.tmp");
    let f = std::fs::File::create(&tmp)
        .map_err(|e| StoreError::Io(format!("cannot create {}: {e}", tmp.display())))?;
    let mut out = std::io::BufWriter::new(f);
    let mut verifier = ChainVerifier::new();
    let mut last_hash = None;
    let mut bytes = 0u64;
    let mut touched = IdSet::default();
    'blocks: for kv in tree.range(bkey(start)..bkey(u64::MAX)) {
        let (k, v) = kv.map_err(io)?;
        let first = seq_of_bkey(&k)?;
        for (i, line) in lines(&v).enumerate() {
            let ev = decode_line(first, i, line)?;
            if ev.seq > through {
                break 'blocks;
            }
            if let Err(b) = verifier.check(&ev) {
                let _ = std::fs::remove_file(&tmp);
                return Err(StoreError::Corrupt(format!(
                    "not archiving a broken chain: {b} (run `youops audit verify`)"
                )));
            }
            out.write_all(line)
                .and_then(|()| out.write_all(b"\n"))
                .map_err(|e| StoreError::Io(format!("writing {}: {e}", tmp.display())))?;
            bytes += line.len() as u64 + 1;
            if let Some(id) = ev.request_id {
                touched.insert(id);
            }
            last_hash = Some((ev.seq, ev.hash));
        }
    }
    let Some((last_seq, last_hash)) = last_hash.filter(|(s, _)| *s == through) else {
        let _ = std::fs::remove_file(&tmp);
        return Err(StoreError::Corrupt(format!(
            "events {start}..={through} are not all in the store"
        )));
    };
    debug_assert_eq!(last_seq, through);
    let f = out
        .into_inner()
        .map_err(|e| StoreError::Io(format!("writing {}: {e}", tmp.display())))?;
    f.sync_all()
        .map_err(|e| StoreError::Io(format!("fsync {}: {e}", tmp.display())))?;
    drop(f);
    std::fs::rename(&tmp, &path)
        .map_err(|e| StoreError::Io(format!("rename to {}: {e}", path.display())))?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok((path, bytes, last_hash, touched))
}

/// An [`ArchiveReport`] to fill in (it is `#[non_exhaustive]`).
fn blank_report() -> ArchiveReport {
    serde_json::from_value(serde_json::json!({
        "file": "", "first_seq": 0, "through_seq": 0, "last_hash": "",
        "checkpoint_seq": 0, "bytes": 0, "records_removed": 0,
    }))
    .expect("the blank archive report decodes")
}

/// What archiving does, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ArchiveStep {
    /// 1. Write the archive file.
    File,
    /// 2. Append the checkpoint.
    Checkpoint,
    /// 3. Remove the archived events and records.
    Remove,
}

/// The requests with an event in `first..=through`.
fn request_ids_in(tree: &sled::Tree, first: u64, through: u64) -> Result<IdSet, StoreError> {
    let mut ids = IdSet::default();
    let from = tree
        .range(bkey(0)..=bkey(first))
        .next_back()
        .transpose()
        .map_err(io)?
        .map_or(Ok(first), |(k, _)| seq_of_bkey(&k))?;
    'blocks: for kv in tree.range(bkey(from)..bkey(u64::MAX)) {
        let (k, v) = kv.map_err(io)?;
        let block_first = seq_of_bkey(&k)?;
        for (i, line) in lines(&v).enumerate() {
            let ev = decode_line(block_first, i, line)?;
            if ev.seq > through {
                break 'blocks;
            }
            if let (true, Some(id)) = (ev.seq >= first, ev.request_id) {
                ids.insert(id);
            }
        }
    }
    Ok(ids)
}

/// Records removed per sled batch when archiving. A sled batch holds its log
/// reservation and an epoch pin until it is done, so every node version it
/// replaces stays in memory until then, and other writers wait for it: one batch
/// removing thousands of records cost the daemon ~120 MiB of resident memory
/// (not given back to the OS) and stalled appends. Small batches avoid both.
const REMOVE_BATCH_KEYS: usize = 128;

/// Remove events `..=through` (rewriting a block that straddles it), then the
/// records of terminal requests whose events are all archived. Only the
/// requests with an event in the archived segment (`touched`) can qualify, so
/// only their records are read, not every record in the store.
///
/// The events go in one batch (one key per up to 128 events): the live chain
/// must start right after the checkpoint's `archived_through_seq` or not move
/// at all. The records go in small batches after it; a crash between them
/// leaves some finished requests' records in the store for good (listed, with
/// their events only in the archive; never taken as in flight).
fn remove_archived(
    db: &Disk,
    tree: &sled::Tree,
    through: u64,
    touched: &IdSet,
    held: &IdSet,
) -> Result<u64, StoreError> {
    let mut batch = sled::Batch::default();
    for kv in tree.range(bkey(0)..=bkey(through)) {
        let (k, v) = kv.map_err(io)?;
        let first = seq_of_bkey(&k)?;
        batch.remove(k);
        let rest: Vec<&[u8]> = lines(&v)
            .enumerate()
            .filter(|(i, _)| first + *i as u64 > through)
            .map(|(_, l)| l)
            .collect();
        if !rest.is_empty() {
            batch.insert(&bkey(through + 1), rest.join(&b'\n'));
        }
    }
    tree.apply_batch(batch).map_err(io)?;
    let mut batch = sled::Batch::default();
    let mut in_batch = 0usize;
    let mut removed = 0u64;
    let mut ids: Vec<RequestId> = touched.iter().copied().collect();
    ids.sort_unstable();
    for id in ids {
        if held.contains(&id) {
            continue;
        }
        let k = idkey(b's', id);
        let Some(v) = tree.get(k).map_err(io)? else {
            continue;
        };
        let stored: Stored = decode("request record", &v)?;
        if stored.record.state.is_terminal() && stored.seqs.last().is_some_and(|s| *s <= through) {
            batch.remove(&k[..]);
            in_batch += 1;
            removed += 1;
            if in_batch >= REMOVE_BATCH_KEYS {
                tree.apply_batch(std::mem::take(&mut batch)).map_err(io)?;
                in_batch = 0;
            }
        }
    }
    if in_batch > 0 {
        tree.apply_batch(batch).map_err(io)?;
    }
    db.flush()?;
    Ok(removed)
}
