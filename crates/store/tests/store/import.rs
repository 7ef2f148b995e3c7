//! `LogStore::import`: events copied from another store's chain keep their
//! seq, time and hashes; only a chain that is whole and continues the tip
//! goes in; records and claims come from the imported `received` events.

use std::path::Path;

use youops_core::audit::{AppendOptions, AuditStore, MemoryStore, StoreError};
use youops_core::model::{AuditEvent, EventBody, NewEvent, Request, State};
use youops_store::{LogOptions, LogStore};

use crate::support::{keyed, keyed_request, received, to};

fn small() -> LogOptions {
    let mut o = LogOptions::default();
    // Several segments, sealed between imports.
    o.segment_bytes = 2048;
    o
}

/// A source of `n` finished requests, each claiming `key-<i>`, and one in flight.
async fn source(n: usize) -> (MemoryStore, Vec<Request>) {
    let src = MemoryStore::new();
    let mut reqs = Vec::new();
    for i in 0..n {
        let key = format!("key-{i}");
        let r = keyed_request(&format!("op{i}"), &key);
        src.append(vec![received(&r)], keyed(&key)).await.unwrap();
        src.append(
            vec![to(r.id, State::Running), to(r.id, State::Succeeded)],
            AppendOptions::durable(),
        )
        .await
        .unwrap();
        reqs.push(r);
    }
    let r = keyed_request("in-flight", "key-live");
    src.append(vec![received(&r)], keyed("key-live"))
        .await
        .unwrap();
    src.append(vec![to(r.id, State::Running)], AppendOptions::durable())
        .await
        .unwrap();
    reqs.push(r);
    (src, reqs)
}

async fn all(store: &dyn AuditStore) -> Vec<AuditEvent> {
    store.events(0, usize::MAX).await.unwrap()
}

/// Import `events` in pages of `page`.
async fn import_pages(dest: &LogStore, events: &[AuditEvent], page: usize) {
    for chunk in events.chunks(page) {
        dest.import(chunk.to_vec()).await.expect("import");
    }
}

async fn assert_same(dest: &dyn AuditStore, src: &dyn AuditStore) {
    assert_eq!(dest.head().await.unwrap(), src.head().await.unwrap());
    assert_eq!(all(dest).await, all(src).await);
    let report = dest.verify().await.unwrap();
    assert!(report.ok(), "{report:?}");
}

fn open(path: &Path) -> LogStore {
    LogStore::open(path, small()).expect("the store opens")
}

#[tokio::test]
async fn an_imported_chain_keeps_its_hashes_and_derives_records_and_claims() {
    let (src, reqs) = source(12).await;
    let events = all(&src).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    {
        let dest = open(&path);
        import_pages(&dest, &events, 7).await;
        assert_same(&dest, &src).await;
        // Readable at once, from the writer's memory.
        for (i, r) in reqs.iter().enumerate() {
            let key = if i == 12 {
                "key-live".to_string()
            } else {
                format!("key-{i}")
            };
            assert_eq!(dest.find_dedup(&key).await.unwrap(), Some(r.id));
            let rec = dest.request(r.id).await.unwrap().expect("a record");
            assert_eq!(rec, src.request(r.id).await.unwrap().unwrap());
        }
        let active = dest.active_requests().await.unwrap();
        assert_eq!(active.len(), 1);
        assert_eq!(active[0].request.id, reqs[12].id);
    }
    // And from the log and the index after a reopen.
    let dest = open(&path);
    assert_same(&dest, &src).await;
    assert_eq!(dest.find_dedup("key-3").await.unwrap(), Some(reqs[3].id));
    assert_eq!(
        dest.request_events(reqs[5].id).await.unwrap(),
        src.request_events(reqs[5].id).await.unwrap()
    );
    // A claim carried over is a claim: a duplicate is refused.
    let dup = keyed_request("again", "key-3");
    match dest.append(vec![received(&dup)], keyed("key-3")).await {
        Err(StoreError::Duplicate(id)) => assert_eq!(id, reqs[3].id),
        other => panic!("{other:?}"),
    }
    // Appends continue the chain.
    let more = dest
        .append(
            vec![to(reqs[12].id, State::Succeeded)],
            AppendOptions::durable(),
        )
        .await
        .unwrap();
    assert_eq!(more[0].seq, events.len() as u64 + 1);
    assert!(dest.verify().await.unwrap().ok());
}

#[tokio::test]
async fn a_chain_that_starts_after_archived_records_imports_into_an_empty_store() {
    let (src, reqs) = source(10).await;
    let archive = tempfile::tempdir().unwrap();
    // Archive the first five requests (15 events): the live chain starts at
    // #16 and a checkpoint further on accounts for the rest.
    let report = src.archive(15, archive.path()).await.unwrap().unwrap();
    assert_eq!(report.through_seq, 15);
    let events = all(&src).await;
    assert_eq!(events[0].seq, 16);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    {
        let dest = open(&path);
        import_pages(&dest, &events, 4).await;
        assert_same(&dest, &src).await;
        let v = dest.verify().await.unwrap();
        assert_eq!(v.starts_at_checkpoint, Some(16));
    }
    let dest = open(&path);
    assert_same(&dest, &src).await;
    // Claims of requests received after the cut came along; the archived
    // ones did not (their `received` events are in the archive only).
    assert_eq!(dest.find_dedup("key-7").await.unwrap(), Some(reqs[7].id));
    assert_eq!(dest.find_dedup("key-2").await.unwrap(), None);
    assert!(dest.request(reqs[2].id).await.unwrap().is_none());
    assert!(dest.request(reqs[7].id).await.unwrap().is_some());
}

#[tokio::test]
async fn an_import_that_does_not_continue_the_tip_or_does_not_check_writes_nothing() {
    let (src, _) = source(4).await;
    let events = all(&src).await;
    let dir = tempfile::tempdir().unwrap();
    let dest = open(&dir.path().join("store"));
    let refused = |r: Result<(), StoreError>, want: &str| match r {
        Err(e) => assert!(e.to_string().contains(want), "`{e}` should say `{want}`"),
        Ok(()) => panic!("imported; expected `{want}`"),
    };
    // An empty store takes #1 only with the genesis hash.
    let mut bad = events[0].clone();
    bad.prev_hash = "ab".repeat(32);
    refused(dest.import(vec![bad]).await, "genesis");
    // A record altered after it was hashed.
    let mut altered = events[..3].to_vec();
    if let EventBody::Transition(t) = &mut altered[2].body {
        t.reason = Some("forged".into());
    }
    refused(dest.import(altered).await, "does not match its hash");
    // A gap, and a broken link.
    let gap = vec![events[0].clone(), events[2].clone()];
    refused(dest.import(gap).await, "where #2 was expected");
    let mut relinked = events[..2].to_vec();
    relinked[1].prev_hash = "cd".repeat(32);
    refused(dest.import(relinked).await, "is not the hash");
    assert_eq!(dest.head().await.unwrap().0, 0, "nothing was written");
    // Now the first half, then not the event after the tip.
    dest.import(events[..5].to_vec()).await.unwrap();
    refused(dest.import(events[6..].to_vec()).await, "ends at #5");
    refused(dest.import(events[..5].to_vec()).await, "ends at #5");
    // A store with appends of its own takes no import but its own next event.
    dest.import(events[5..].to_vec()).await.unwrap();
    assert_same(&dest, &src).await;
    let n = NewEvent::global(EventBody::Notice {
        source: "test".into(),
        kind: "k".into(),
        message: "m".into(),
        data: serde_json::Value::Null,
    });
    let own = dest
        .append(vec![n], AppendOptions::durable())
        .await
        .unwrap();
    refused(
        dest.import(all(&src).await[..1].to_vec()).await,
        &format!("ends at #{}", own[0].seq),
    );
    assert!(dest.verify().await.unwrap().ok());
}
