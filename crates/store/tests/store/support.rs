//! Helpers of the store tests: requests, events, options, opening, and
//! reading and damaging segment files.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

pub(crate) use youops_core::audit::conformance::build::{
    delivery, keyed, keyed_request, notice, received, request, to,
};
use youops_core::audit::{AppendOptions, AuditStore, StoreError};
use youops_core::model::{AuditEvent, NewEvent};
use youops_store::fs::SimFs;
use youops_store::{LogOptions, LogStore};

pub(crate) fn open(path: &Path, opts: LogOptions) -> LogStore {
    LogStore::open(path, opts).expect("the store opens")
}

pub(crate) fn sim_open(path: &Path, sim: &SimFs, opts: LogOptions) -> Result<LogStore, StoreError> {
    LogStore::open_with_fs(path, opts, Arc::new(sim.clone()))
}

pub(crate) fn small(segment_bytes: u64) -> LogOptions {
    let mut o = LogOptions::default();
    o.segment_bytes = segment_bytes;
    o
}

/// Records, claims and positions stay in memory (until `flush` or close).
pub(crate) fn lazy() -> LogOptions {
    let mut o = LogOptions::default();
    o.index_interval = Duration::from_secs(3600);
    o.index_sync_interval = Duration::from_secs(3600);
    o.index_max_pending = usize::MAX;
    o
}

pub(crate) async fn all_events(store: &dyn AuditStore) -> Vec<AuditEvent> {
    store.events(0, usize::MAX).await.expect("events")
}

pub(crate) async fn append(store: &dyn AuditStore, events: Vec<NewEvent>) -> Vec<AuditEvent> {
    store
        .append(events, AppendOptions::durable())
        .await
        .expect("append")
}

/// `count` notices, durable, one append each.
pub(crate) async fn notices(store: &dyn AuditStore, count: usize) -> Vec<AuditEvent> {
    let mut out = Vec::new();
    for i in 0..count {
        out.extend(append(store, vec![notice(format!("notice {i}"))]).await);
    }
    out
}

pub(crate) fn log_names(store_dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(store_dir.join("log"))
        .expect("the log directory")
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

pub(crate) fn line_of(e: &AuditEvent) -> String {
    serde_json::to_string(e).unwrap() + "\n"
}

pub(crate) async fn assert_verifies(store: &dyn AuditStore) {
    let v = store.verify().await.expect("verify");
    assert!(v.ok(), "{v:?}");
}

pub(crate) fn flip(path: &Path, at: usize) {
    let mut b = std::fs::read(path).unwrap();
    b[at] ^= 0x04;
    std::fs::write(path, b).unwrap();
}

/// Byte offset of line `n` (1-based) of a file.
pub(crate) fn line_start(bytes: &[u8], n: usize) -> usize {
    let mut at = 0;
    for _ in 1..n {
        at += bytes[at..].iter().position(|b| *b == b'\n').unwrap() + 1;
    }
    at
}

pub(crate) fn corrupt_message(r: Result<LogStore, StoreError>) -> String {
    match r {
        Err(StoreError::Corrupt(m)) => m,
        Err(e) => panic!("expected a corrupt-log error, got {e}"),
        Ok(_) => panic!("expected a corrupt-log error, the store opened"),
    }
}
