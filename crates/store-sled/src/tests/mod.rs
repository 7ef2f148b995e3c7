//! Unit tests of the sled store: records and claims in memory and in the
//! tree, their rebuild after a crash, archiving, and the store format.

use std::path::Path;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use youops_core::audit::conformance::build::{received, request, to};
use youops_core::audit::{AppendOptions, AuditStore, StoreError};
use youops_core::model::{
    AuditEvent, EventBody, NewEvent, RequestFilter, RequestId, RequestRecord,
};
use youops_core::model::{Request, State};

use crate::archive::ArchiveStep;
use crate::disk::names_in;
use crate::encoding::{bkey, dkey, idkey, lines, APPLIED_KEY};
use crate::options::SledOptions;
use crate::records::Stored;
use crate::state::lock;
use crate::SledStore;

mod archive;
mod records;

/// Wait until no earlier handle of the store in `dir` holds sled's lock:
/// sled's IO threads hold it (an flock of `db`) a moment after the last
/// handle is dropped.
fn released(dir: &Path) {
    let Ok(f) = std::fs::File::open(dir.join("db")) else {
        return;
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    while f.try_lock().is_err() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
    }
}

/// Records never stored by the writer within the test (they stay in memory).
fn lazy() -> SledOptions {
    SledOptions {
        index_interval: Duration::from_secs(3600),
        ..SledOptions::default()
    }
}

/// The ids of `active_requests`, in its order.
async fn active_ids(store: &SledStore) -> Vec<RequestId> {
    store
        .active_requests()
        .await
        .unwrap()
        .iter()
        .map(|r| r.request.id)
        .collect()
}

async fn append(store: &SledStore, events: Vec<NewEvent>) -> Vec<AuditEvent> {
    store
        .append(events, AppendOptions::durable())
        .await
        .expect("append")
}
