//! Retention: `archive(through, dir)` writes the oldest events to a JSON-lines
//! archive file in `dir` (the log store's names and lines), appends a
//! checkpoint, then moves the events into the `archive` table (where every
//! node reads and verifies them) and drops the records of finished requests
//! archived whole. Events of requests in flight are never archived.
//!
//! One archive at a time in the cluster: a session advisory lock, held on a
//! connection of its own for the whole archive (closing it releases the lock).
//! An archive cut short (a crash between the file and the move) is finished
//! or undone by the next, with the rules of every store that archives into
//! files ([`recover_archives`]): the file is kept and its events moved if its
//! checkpoint is in the chain, removed if not.
//!
//! ## Fenced by the leader's epoch
//!
//! Retention is the cluster leader's work ([`AuditStore::archive_as`]):
//! under an epoch, the checkpoint is a leader write under it (refused by the
//! group commit unless this node holds the lease under that epoch), and the
//! move checks the lease in its own transaction
//! ([`crate::group::leader_term`]), after locking the chain tip as a group
//! commit does and before it removes anything; the lease row stays locked
//! until COMMIT, so the move commits within the term or not at all. A
//! refused checkpoint appended nothing: its file is removed again. A refused
//! move changed nothing: the checkpoint and the file stay, and the next
//! archive into the directory finishes the move (the rules above), under
//! the term it runs in.
//!
//! ## Whole partitions dropped
//!
//! `events` is partitioned by seq ([`crate::partitions`]). The move copies
//! the events into the archive table, deletes row by row only the archived
//! events of the one partition archived in part, then locks the chain tip
//! (appends wait from there until COMMIT, so no group commit is midway
//! between reading a record and writing it while its row goes), checks the
//! lease, deletes the finished records and, last, drops the partitions
//! archived whole. Dropping a partition locks all of `events` exclusively
//! until COMMIT; it waits at most [`DROP_WAIT`] for readers (a long
//! `verify`) to let go, and if they do not, those partitions' rows are
//! deleted instead and the partitions, empty, dropped by a later archive.

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, Transaction};
use youops_core::audit::{
    archive_file_name, is_checkpoint_of, recover_archives, write_archive_file, AppendOptions,
    ArchiveRecovery, ArchiveReport, AuditStore, StoreError,
};
use youops_core::model::{EventBody, NewEvent};

use crate::codec::{self, col, seq_of, seq_sql, EVENT_COLUMNS};
use crate::conn::{Pool, Redactor};
use crate::coord::is_fenced;
use crate::group::{leader_term, not_leading, NodeBinding};
use crate::partitions::{self, Part};
use crate::reads;
use crate::PgStore;

/// The advisory lock key of archiving ("youopsar").
const ARCHIVE_LOCK: i64 = 0x796f_756f_7073_6172;

/// How long dropping partitions waits for the lock on `events` (appends
/// wait meanwhile, behind the tip the move holds).
const DROP_WAIT: &str = "1s";

/// The leader term an archive's writes are fenced by.
#[derive(Debug)]
struct Fence {
    epoch: u64,
    /// The node the store writes as (`None`: no node of a cluster, which
    /// holds no lease).
    node: Option<NodeBinding>,
}

/// Archive through `through_seq` into `dir`; as the leader under
/// `leader_epoch`, if given (see the module docs).
pub(crate) async fn archive(
    store: &PgStore,
    through_seq: u64,
    dir: &Path,
    leader_epoch: Option<u64>,
) -> Result<Option<ArchiveReport>, StoreError> {
    let fence = leader_epoch.map(|epoch| Fence {
        epoch,
        node: store.node_slot().clone(),
    });
    let _one_here = store.inner.archiving.lock().await;
    let lock = store.inner.connector.connect().await?;
    lock.client
        .execute("SELECT pg_advisory_lock($1)", &[&ARCHIVE_LOCK])
        .await
        .map_err(|e| store.redact().io("taking the archive lock", &e))?;
    let result = archive_locked(store, through_seq, dir, fence.as_ref()).await;
    // Closing the session releases the lock.
    drop(lock);
    result
}

async fn archive_locked(
    store: &PgStore,
    through_seq: u64,
    dir: &Path,
    fence: Option<&Fence>,
) -> Result<Option<ArchiveReport>, StoreError> {
    let pool = &store.inner.pool;
    recover_archives(dir, &Recovery { pool, fence }).await?;
    let start = live_start(pool).await?;
    let (tip, _) = reads::head(pool).await?;
    // Keep every event of requests still in flight, and the tip.
    let mut through = through_seq.min(tip.saturating_sub(1));
    let row = pool
        .query_one(
            "finding the requests in flight",
            "SELECT min(first_seq) FROM requests WHERE NOT terminal",
            &[],
        )
        .await?;
    if let Some(first) = col::<Option<i64>>(&row, 0, "requests.first_seq")? {
        through = through.min(seq_of(first, "requests.first_seq")?.saturating_sub(1));
    }
    if through < start {
        return Ok(None);
    }
    let rows = pool
        .query(
            "reading the events to archive",
            &format!(
                "SELECT {EVENT_COLUMNS} FROM events WHERE seq >= $1 AND seq <= $2 ORDER BY seq"
            ),
            &[&seq_sql(start)?, &seq_sql(through)?],
        )
        .await?;
    let events = codec::events(&rows)?;
    let whole = events.len() as u64 == through - start + 1
        && events.last().is_some_and(|e| e.seq == through);
    let last_hash = match events.last() {
        Some(last) if whole => last.hash.clone(),
        _ => {
            return Err(StoreError::Corrupt(format!(
                "events {start}..={through} are not all in the store"
            )))
        }
    };
    // 1. The archive file, written whole and fsynced before anything changes.
    let dir_owned = dir.to_path_buf();
    let (file, bytes) = tokio::task::spawn_blocking(move || {
        write_archive_file(&dir_owned, start, through, &events)
    })
    .await
    .map_err(|e| StoreError::Io(format!("writing the archive: {e}")))??;
    let name = archive_file_name(start, through);
    // 2. The checkpoint, in the chain.
    let body = EventBody::Checkpoint {
        archived_through_seq: through,
        archived_last_hash: last_hash.clone(),
        archive: name.clone(),
    };
    let checkpoint = append_checkpoint(store, body, &file, fence).await?;
    if store.inner.faults.take_cut_archive() {
        return Err(StoreError::Io(
            "the archive was cut short after its checkpoint (an injected fault)".into(),
        ));
    }
    // 3. The events into the archive table, and the records archived whole.
    let records_removed = move_through(pool, through, &name, fence).await?;
    report(
        file,
        start,
        through,
        last_hash,
        checkpoint,
        bytes,
        records_removed,
    )
}

/// Append the checkpoint `body` of archive file `file` (a leader write under
/// the fence's epoch); its seq. Refused by fencing, it appended nothing: the
/// file is removed (as the next archive would remove it).
async fn append_checkpoint(
    store: &PgStore,
    body: EventBody,
    file: &Path,
    fence: Option<&Fence>,
) -> Result<u64, StoreError> {
    let mut opts = AppendOptions::durable();
    if let Some(f) = fence {
        opts = opts.leader_epoch(f.epoch);
    }
    match store.append(vec![NewEvent::global(body)], opts).await {
        Ok(events) => Ok(events.first().map_or(0, |e| e.seq)),
        Err(e) if is_fenced(&e) => {
            if let Err(rm) = tokio::fs::remove_file(file).await {
                tracing::warn!(
                    file = %file.display(),
                    error = %rm,
                    "audit retention: cannot remove the archive of a refused checkpoint \
                     (the next archive removes it)"
                );
            }
            Err(e)
        }
        Err(e) => Err(e),
    }
}

/// An [`ArchiveReport`] (it is `#[non_exhaustive]`: built through serde).
fn report(
    file: PathBuf,
    first_seq: u64,
    through_seq: u64,
    last_hash: String,
    checkpoint_seq: u64,
    bytes: u64,
    records_removed: u64,
) -> Result<Option<ArchiveReport>, StoreError> {
    serde_json::from_value(serde_json::json!({
        "file": file, "first_seq": first_seq, "through_seq": through_seq,
        "last_hash": last_hash, "checkpoint_seq": checkpoint_seq, "bytes": bytes,
        "records_removed": records_removed,
    }))
    .map(Some)
    .map_err(|e| StoreError::Io(format!("cannot build the archive report: {e}")))
}

/// The first live seq: one past the archive table's last.
async fn live_start(pool: &Pool) -> Result<u64, StoreError> {
    let row = pool
        .query_one(
            "reading the archive table",
            "SELECT coalesce(max(seq), 0) + 1 FROM archive",
            &[],
        )
        .await?;
    seq_of(col(&row, 0, "archive.seq")?, "archive.seq")
}

/// Move events `..=through` into the archive table (file `file`) and delete
/// the records of finished requests whose last event is among them, in one
/// transaction, fenced by `fence` (see the module docs). How many records
/// went.
async fn move_through(
    pool: &Pool,
    through: u64,
    file: &str,
    fence: Option<&Fence>,
) -> Result<u64, StoreError> {
    let mut conn = pool.get().await?;
    let redact = pool.redact().clone();
    move_in(conn.client()?, &redact, through, file, fence).await
}

async fn move_in(
    client: &mut Client,
    redact: &Redactor,
    through: u64,
    file: &str,
    fence: Option<&Fence>,
) -> Result<u64, StoreError> {
    let err = |what: &str, e: tokio_postgres::Error| redact.io(what, &e);
    let through_sql = seq_sql(through)?;
    let mut tx = client
        .transaction()
        .await
        .map_err(|e| err("archiving: BEGIN", e))?;
    tx.execute(
        "INSERT INTO archive (seq, request_id, kind, canonical, prev_hash, hash, file)
         SELECT seq, request_id, kind, canonical, prev_hash, hash, $2 FROM events
         WHERE seq <= $1 ON CONFLICT (seq) DO NOTHING",
        &[&through_sql, &file],
    )
    .await
    .map_err(|e| err("archiving: copying events into the archive table", e))?;
    // The partitions archived whole go last; of the rest, only the one
    // archived in part has rows to delete.
    let whole: Vec<Part> = partitions::list(tx.client())
        .await
        .map_err(|e| e.report(redact, "archiving: listing the partitions of events"))?
        .into_iter()
        .filter(|p| p.hi <= through.saturating_add(1))
        .collect();
    let cut = seq_sql(whole.iter().map(|p| p.hi).max().unwrap_or(0))?;
    tx.execute(
        "DELETE FROM events WHERE seq >= $1 AND seq <= $2",
        &[&cut, &through_sql],
    )
    .await
    .map_err(|e| err("archiving: deleting archived events", e))?;
    tx.execute("SELECT seq FROM tip WHERE id = 1 FOR UPDATE", &[])
        .await
        .map_err(|e| err("archiving: locking the chain tip", e))?;
    if let Some(fence) = fence {
        check_fence(&tx, fence, redact).await?;
    }
    let removed = tx
        .execute(
            "DELETE FROM requests WHERE terminal AND last_seq <= $1",
            &[&through_sql],
        )
        .await
        .map_err(|e| err("archiving: deleting finished records", e))?;
    drop_whole(&mut tx, &whole, cut, redact).await?;
    tx.commit().await.map_err(|e| err("archiving: COMMIT", e))?;
    Ok(removed)
}

/// This node holds the leader lease under the fence's epoch now (by the
/// database clock), its row locked until the transaction ends; or the
/// refusal (`fenced: …`).
async fn check_fence(
    tx: &Transaction<'_>,
    fence: &Fence,
    redact: &Redactor,
) -> Result<(), StoreError> {
    let Some(node) = &fence.node else {
        return Err(not_leading(fence.epoch));
    };
    let held = leader_term(tx.client(), node)
        .await
        .map_err(|e| e.report(redact, "archiving: checking the leader lease"))?;
    if held == Some(fence.epoch) {
        Ok(())
    } else {
        Err(not_leading(fence.epoch))
    }
}

/// Drop the partitions archived whole (`whole`, every seq below `cut`),
/// waiting at most [`DROP_WAIT`] for the lock on `events`; when it is not
/// had in time, delete their rows instead (the empty partitions are
/// dropped by a later archive).
async fn drop_whole(
    tx: &mut Transaction<'_>,
    whole: &[Part],
    cut: i64,
    redact: &Redactor,
) -> Result<(), StoreError> {
    if whole.is_empty() {
        return Ok(());
    }
    let err = |what: &str, e: tokio_postgres::Error| redact.io(what, &e);
    let names: Vec<&str> = whole.iter().map(|p| p.name.as_str()).collect();
    let sp = tx
        .savepoint("drop_partitions")
        .await
        .map_err(|e| err("archiving: SAVEPOINT", e))?;
    let dropped = sp
        .batch_execute(&format!(
            "SET LOCAL lock_timeout = '{DROP_WAIT}'; DROP TABLE {}",
            names.join(", ")
        ))
        .await;
    match dropped {
        Ok(()) => sp
            .commit()
            .await
            .map_err(|e| err("archiving: RELEASE SAVEPOINT", e)),
        Err(e) if e.code() == Some(&SqlState::LOCK_NOT_AVAILABLE) => {
            sp.rollback()
                .await
                .map_err(|e| err("archiving: ROLLBACK TO SAVEPOINT", e))?;
            tracing::warn!(
                partitions = %names.join(", "),
                "audit retention: readers held the events table for {DROP_WAIT}; deleting the \
                 rows of the partitions archived whole instead (a later archive drops them)"
            );
            tx.execute("DELETE FROM events WHERE seq < $1", &[&cut])
                .await
                .map_err(|e| err("archiving: deleting archived events", e))?;
            Ok(())
        }
        Err(e) => Err(err("archiving: dropping partitions archived whole", e)),
    }
}

/// The store as [`recover_archives`] sees it, to finish or undo an archive
/// cut short and refuse an archive directory that does not agree with this
/// store (the rules of every store that archives into files): a finished
/// move is fenced by `fence`, as the archive's own move is.
struct Recovery<'a> {
    pool: &'a Pool,
    fence: Option<&'a Fence>,
}

#[async_trait]
impl ArchiveRecovery for Recovery<'_> {
    async fn live_start(&self) -> Result<u64, StoreError> {
        live_start(self.pool).await
    }

    async fn event_hash(&self, seq: u64) -> Result<Option<String>, StoreError> {
        self.pool
            .query_opt(
                "reading an event",
                "SELECT hash FROM events WHERE seq = $1",
                &[&seq_sql(seq)?],
            )
            .await?
            .map(|row| col::<String>(&row, 0, "events.hash"))
            .transpose()
    }

    /// Whether a live checkpoint says events `..=through` went to `name`.
    async fn has_checkpoint(&self, through: u64, name: &str) -> Result<bool, StoreError> {
        let rows = self
            .pool
            .query(
                "reading checkpoints",
                &format!(
                    "SELECT {EVENT_COLUMNS} FROM events WHERE kind = 'checkpoint' ORDER BY seq"
                ),
                &[],
            )
            .await?;
        Ok(codec::events(&rows)?
            .iter()
            .any(|e| is_checkpoint_of(&e.body, through, name)))
    }

    async fn finish_move(&self, _: u64, through: u64, name: &str) -> Result<u64, StoreError> {
        move_through(self.pool, through, name, self.fence).await
    }
}
