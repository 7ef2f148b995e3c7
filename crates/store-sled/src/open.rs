//! Opening the store: sled, its files synced, the format checked, the tip
//! read, records rebuilt, the writer started.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::Instant;

use youops_core::audit::{StoreError, GENESIS_HASH};

use crate::disk::{Disk, DiskSync};
use crate::encoding::{id_from, io, lines, seq_of_bkey, FORMAT, FORMAT_KEY};
use crate::options::SledOptions;
use crate::recover::recover;
use crate::state::{IdSet, Ids, Shared};
use crate::stats::Counters;
use crate::writer::Writer;
use crate::{Inner, SledStore};

/// [`SledStore::open_with`].
pub(crate) fn open(path: PathBuf, opts: SledOptions) -> Result<SledStore, StoreError> {
    let db = sled::Config::new()
        .path(&path)
        .cache_capacity(opts.cache_capacity)
        .flush_every_ms(
            opts.gc_interval
                .map(|d| u64::try_from(d.as_millis().max(1)).unwrap_or(u64::MAX)),
        )
        .open()
        .map_err(|e| {
            let text = e.to_string();
            if text.contains("lock")
                || text.contains("WouldBlock")
                || text.contains("Resource temporarily unavailable")
            {
                StoreError::Locked(path.display().to_string())
            } else {
                StoreError::Io(format!("cannot open {}: {text}", path.display()))
            }
        })?;
    let db = Disk {
        sync: Arc::new(DiskSync::open(&path)?),
        db,
    };
    let tree = db.db.open_tree("audit").map_err(io)?;
    check_format(&tree, &path)?;
    let (seq, hash) = read_tip(&tree)?;
    let counters = Arc::new(Counters::default());
    let mut active = tree
        .scan_prefix(b"a")
        .keys()
        .map(|k| k.map_err(io).and_then(|k| id_from(&k[1..])))
        .collect::<Result<HashSet<_>, _>>()?;
    recover(&db, &tree, seq, &mut active, &counters)?;
    let stored_max = match tree.scan_prefix(b"s").keys().next_back() {
        Some(k) => Some(id_from(&k.map_err(io)?[1..])?),
        None => None,
    };
    let shared = Arc::new(Shared {
        records: Mutex::new(Ids::default()),
        claims: Mutex::new(HashMap::new()),
        tip: Mutex::new((seq, hash.clone())),
        stored_max: Mutex::new(stored_max),
    });
    let (tx, rx) = mpsc::channel();
    let writer = Writer {
        counters: counters.clone(),
        db: db.clone(),
        tree: tree.clone(),
        shared: shared.clone(),
        seq,
        hash,
        dirty: IdSet::default(),
        dirty_claims: Vec::new(),
        last_index: Instant::now(),
        opts: SledOptions {
            max_batch_events: opts.max_batch_events.max(1),
            block_events: opts.block_events.max(1),
            index_max_dirty: opts.index_max_dirty.max(1),
            ..opts
        },
    };
    let handle = thread::Builder::new()
        .name("youops-audit-writer".into())
        .spawn(move || writer.run(rx, active))
        .map_err(io)?;
    Ok(SledStore {
        inner: Arc::new(Inner {
            db,
            tree,
            path,
            counters,
            shared,
            tx: Mutex::new(Some(tx)),
            writer: Mutex::new(Some(handle)),
            archiving: tokio::sync::Mutex::new(()),
            killed: AtomicBool::new(false),
        }),
    })
}

fn check_format(tree: &sled::Tree, path: &Path) -> Result<(), StoreError> {
    match tree.get(FORMAT_KEY).map_err(io)? {
        Some(v) if v.as_ref() == FORMAT => Ok(()),
        Some(v) => Err(StoreError::Corrupt(format!(
            "{} has store format {:?}; this YouOps reads format 2",
            path.display(),
            String::from_utf8_lossy(&v)
        ))),
        None if tree.first().map_err(io)?.is_none() => {
            tree.insert(FORMAT_KEY, FORMAT).map_err(io)?;
            Ok(())
        }
        None => Err(StoreError::Corrupt(format!(
            "{} was written by an earlier YouOps (store format 1, one key per event): \
             export it with that version (`youops audit export`) and start a new store",
            path.display()
        ))),
    }
}

/// Seq and hash of the last stored event.
fn read_tip(tree: &sled::Tree) -> Result<(u64, String), StoreError> {
    let Some(kv) = tree.scan_prefix(b"b").next_back() else {
        return Ok((0, GENESIS_HASH.to_string()));
    };
    let (k, v) = kv.map_err(io)?;
    let start = seq_of_bkey(&k)?;
    let last = lines(&v)
        .last()
        .ok_or_else(|| StoreError::Corrupt(format!("block #{start} is empty")))?;
    // The tip must decode; a damaged tip is reported by `verify`, and we still
    // chain onto its stored hash field when it is readable.
    let tip = serde_json::from_slice::<serde_json::Value>(last)
        .ok()
        .and_then(|j| {
            let seq = j.get("seq")?.as_u64()?;
            let hash = j.get("hash")?.as_str()?.to_string();
            Some((seq, hash))
        });
    tip.ok_or_else(|| {
        StoreError::Corrupt(format!(
            "the last event (in block #{start}) does not decode"
        ))
    })
}
