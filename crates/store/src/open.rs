//! Opening the store: the lock, the log's recovery, the index brought up to
//! the log by a replay, and the writer and indexer threads started.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use youops_core::audit::StoreError;
use youops_core::model::{AuditEvent, RequestId};

use crate::format::{line_seq, lines};
use crate::fs::{self, LogFs, StdFs};
use crate::index::{Batch, Claim, Index, Ttl};
use crate::indexer::Indexer;
use crate::log::{self, decode, io_err, Check, Recovered, LOG_DIR};
use crate::state::{claim_in, fold, lock, Mem, Segments, Shared, Stored};
use crate::writer::{Msg, OpenSeg, Writer, WriterOpts};
use crate::{Inner, LogOptions, LogStore};

/// The sled files that mark a directory as a sled store.
fn sled_files(path: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(path) else {
        return Vec::new();
    };
    let mut found: Vec<String> = entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| matches!(n.as_str(), "conf" | "db" | "blobs") || n.starts_with("snap."))
        .collect();
    found.sort();
    found
}

fn lock_dir(path: &Path) -> Result<std::fs::File, StoreError> {
    let lock_path = path.join("LOCK");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| io_err(format!("cannot open {}", lock_path.display()), e))?;
    match f.try_lock() {
        Ok(()) => Ok(f),
        Err(std::fs::TryLockError::WouldBlock) => {
            Err(StoreError::Locked(path.display().to_string()))
        }
        Err(std::fs::TryLockError::Error(e)) => {
            Err(io_err(format!("cannot lock {}", lock_path.display()), e))
        }
    }
}

/// Refuse a directory that holds a sled store.
fn refuse_sled(path: &Path) -> Result<(), StoreError> {
    let sled = sled_files(path);
    if !sled.is_empty() {
        return Err(StoreError::Io(format!(
            "{} holds a sled audit store (found {}), which the log store does not read: \
             copy it into a new store directory with `youops store copy --from sled:{} --to \
             NEW_DIR` (in a youops built with `--features sled`); nothing was changed",
            path.display(),
            sled.join(", "),
            path.display()
        )));
    }
    Ok(())
}

/// [`LogStore::open_with_fs`].
pub(crate) fn open(
    path: PathBuf,
    opts: LogOptions,
    fs: Arc<dyn LogFs>,
) -> Result<LogStore, StoreError> {
    refuse_sled(&path)?;
    fs::create_dir_durably(&StdFs, &path)
        .map_err(|e| io_err(format!("cannot create {}", path.display()), e))?;
    let lock_file = lock_dir(&path)?;
    let index = Index::open(&path.join("index.redb"), opts.index_cache_bytes)?;
    // A new index file's name is durable before anything is stored in it
    // that the log does not hold (claims its events do not carry).
    StdFs
        .sync_dir(&path)
        .map_err(|e| io_err(format!("fsync {}", path.display()), e))?;
    let applied = index.applied()?;
    let log_dir = path.join(LOG_DIR);
    let rec = log::recover(
        &*fs,
        &log_dir,
        Check {
            full: opts.verify_on_open,
            durable: applied,
        },
    )?;
    let open = sync_open_segment(&*fs, &log_dir, &rec)?;
    fs.sync_dir(&log_dir)
        .map_err(|e| io_err(format!("fsync {}", log_dir.display()), e))?;
    let dropped = index.drop_claims_after(rec.tip_seq)?;
    if dropped > 0 {
        tracing::warn!(
            dropped,
            "audit index: dropped dedup claims of events that never reached the log"
        );
    }
    let shared = shared_state(fs, log_dir, index, &opts, &rec)?;
    replay(&shared, &rec, applied)?;
    lock(&shared.mem).stored_max = shared.index.max_record_id()?;
    crate::archive::repair(&shared)?;
    shared.index.expire(&shared.ttl, Utc::now())?;
    let (tx, writer) = start_threads(&shared, &opts, open, rec)?;
    Ok(LogStore {
        inner: Arc::new(Inner {
            path,
            shared,
            tx: Mutex::new(Some(tx)),
            writer: Mutex::new(Some(writer)),
            archiving: tokio::sync::Mutex::new(()),
            _lock: lock_file,
        }),
    })
}

/// After a kill, the open segment's bytes may be in the page cache
/// only: sync them before anything (the index, an answer) depends on them.
fn sync_open_segment(
    fs: &dyn LogFs,
    log_dir: &Path,
    rec: &Recovered,
) -> Result<Option<OpenSeg>, StoreError> {
    Ok(match rec.segments.last() {
        Some(s) if s.last.is_none() => {
            let p = log_dir.join(s.name());
            let mut file = fs
                .open_append(&p)
                .map_err(|e| io_err(format!("cannot open {}", p.display()), e))?;
            file.sync_data()
                .map_err(|e| io_err(format!("fdatasync {}", p.display()), e))?;
            Some(OpenSeg {
                first: s.first,
                path: p,
                file,
                len: rec.open_len,
                synced: rec.open_len,
            })
        }
        _ => None,
    })
}

/// The state the writer, the indexer and the readers share, as recovered.
fn shared_state(
    fs: Arc<dyn LogFs>,
    log_dir: PathBuf,
    index: Index,
    opts: &LogOptions,
    rec: &Recovered,
) -> Result<Arc<Shared>, StoreError> {
    let ttl = Ttl::new(opts.dedup_ttl, opts.dedup_bucket);
    let archived = index
        .archived()?
        .into_iter()
        .map(|(first, last, dir)| (first, (last, dir)))
        .collect();
    Ok(Arc::new(Shared {
        fs,
        log_dir,
        index,
        ttl,
        mem: Mutex::new(Mem {
            tip: (rec.tip_seq, rec.tip_hash.clone()),
            open_len: rec.open_len,
            durable: rec.tip_seq,
            records: HashMap::new(),
            claims: HashMap::new(),
            pos_base: rec.tip_seq + 1,
            positions: VecDeque::new(),
            stored_max: None,
            unindexed: 0,
        }),
        segs: Mutex::new(Segments {
            live: rec.segments.iter().map(|s| (s.first, s.last)).collect(),
            archived,
        }),
        poisoned: Mutex::new(None),
    }))
}

/// Start the indexer thread, then the writer thread (which owns the indexer's
/// handle); the way to the writer and its handle.
fn start_threads(
    shared: &Arc<Shared>,
    opts: &LogOptions,
    open: Option<OpenSeg>,
    rec: Recovered,
) -> Result<(mpsc::Sender<Msg>, thread::JoinHandle<()>), StoreError> {
    let (tx, rx) = mpsc::channel();
    let (index_tx, index_rx) = mpsc::channel();
    let indexer = Indexer {
        shared: shared.clone(),
        interval: opts.index_interval.max(Duration::from_millis(1)),
        sync_interval: opts.index_sync_interval,
        last_durable: Instant::now(),
        pending_commits: false,
        last_expire: Instant::now(),
    };
    let indexer = thread::Builder::new()
        .name("youops-log-indexer".into())
        .spawn(move || indexer.run(index_rx))
        .map_err(|e| io_err("cannot start the indexer thread", e))?;
    let writer = Writer {
        shared: shared.clone(),
        opts: WriterOpts {
            segment_bytes: opts.segment_bytes.max(1),
            max_batch_events: opts.max_batch_events.max(1),
            sync_interval: opts.sync_interval,
            index_max_pending: opts.index_max_pending.max(1),
        },
        open,
        seq: rec.tip_seq,
        hash: rec.tip_hash,
        poisoned: None,
        unsynced_since: None,
        index_tx,
    };
    let writer = thread::Builder::new()
        .name("youops-log-writer".into())
        .spawn(move || writer.run(rx, indexer))
        .map_err(|e| io_err("cannot start the writer thread", e))?;
    Ok((tx, writer))
}

/// A replay in progress: what it has folded and not stored yet.
struct Replay<'a> {
    shared: &'a Shared,
    now: DateTime<Utc>,
    touched: HashMap<RequestId, Stored>,
    batch: Batch,
    replayed: u64,
}

impl Replay<'_> {
    /// Store what was folded so far, with `applied` as the last applied seq.
    fn flush(&mut self, applied: u64, durable: bool) -> Result<(), StoreError> {
        self.batch
            .records
            .extend(self.touched.drain().map(|(id, s)| (id, s.entry())));
        self.batch.applied = Some(applied);
        self.shared
            .index
            .write(&std::mem::take(&mut self.batch), &self.shared.ttl, durable)
    }

    /// Replay event `seq` at `off` in its segment: its position, the claim it
    /// carries, its record. `false` when its record already holds it (the
    /// next line follows at once).
    fn event(&mut self, seq: u64, off: u64, ev: &AuditEvent) -> Result<bool, StoreError> {
        let shared = self.shared;
        self.batch.positions.push((seq, off));
        if let Some((key, owner, expires)) = claim_in(ev) {
            let bucket = shared.ttl.bucket_of(expires, ev.time);
            if !shared.ttl.expired(bucket, self.now) {
                let claim = Claim {
                    id: owner,
                    seq,
                    bucket,
                    explicit: false,
                };
                self.batch.claims.push((key.to_string(), claim));
            }
        }
        if let Some(id) = ev.request_id {
            let current = match self.touched.remove(&id) {
                Some(s) => Some(s),
                None => match shared.index.entry(id)? {
                    // Stored ahead of `applied` by an indexer round that did
                    // not move it (a record still changing): not folded twice.
                    Some(e) if e.last_seq() >= seq => {
                        self.touched.insert(id, shared.load(&e)?);
                        return Ok(false);
                    }
                    Some(e) => Some(shared.load(&e)?),
                    None => None,
                },
            };
            match current {
                Some(s) if s.last_seq() >= seq => {
                    self.touched.insert(id, s);
                }
                other => match fold(other, ev, off) {
                    Ok(s) => {
                        self.touched.insert(id, s);
                        self.replayed += 1;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, seq, "audit index: event skipped while rebuilding records");
                    }
                },
            }
        }
        Ok(true)
    }
}

/// Bring the index up to the log: replay the events after `applied`.
fn replay(shared: &Shared, rec: &Recovered, applied: u64) -> Result<(), StoreError> {
    let tip = rec.tip_seq;
    let from = applied.saturating_add(1).max(rec.live_start());
    if from > tip {
        return Ok(());
    }
    if applied + 1 < rec.live_start() {
        tracing::warn!(
            applied,
            live_start = rec.live_start(),
            "audit index: behind the live log; records whose events were archived are not rebuilt"
        );
    }
    let mut r = Replay {
        shared,
        now: Utc::now(),
        touched: HashMap::new(),
        batch: Batch::default(),
        replayed: 0,
    };
    for seg in &rec.segments {
        if seg.last.is_some_and(|l| l < from) {
            continue;
        }
        let name = seg.name();
        let path = shared.log_dir.join(&name);
        let mut bytes = shared
            .fs
            .read(&path)
            .map_err(|e| io_err(format!("cannot read {}", path.display()), e))?;
        if seg.last.is_none() {
            bytes.truncate(usize::try_from(rec.open_len).unwrap_or(usize::MAX));
        }
        let (ls, _) = lines(&bytes);
        for (i, (off, line)) in ls.into_iter().enumerate() {
            let Some(seq) = line_seq(line).filter(|s| *s >= from) else {
                continue;
            };
            let ev = decode(&name, Some(i + 1), line)?;
            if !r.event(seq, off as u64, &ev)? {
                continue;
            }
            if r.batch.positions.len() >= 20_000 {
                r.flush(seq, false)?;
            }
        }
    }
    r.flush(tip, true)?;
    tracing::info!(
        from,
        tip,
        events = r.replayed,
        "audit index: replayed the log after the last indexed event"
    );
    Ok(())
}
