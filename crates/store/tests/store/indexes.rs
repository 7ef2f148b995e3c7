//! The indexes (section 7): records, claims and positions, read before and
//! after they are indexed.

use youops_core::audit::{AppendOptions, AuditStore, StoreError};
use youops_core::model::{Request, RequestFilter, RequestId, State};
use youops_store::LogOptions;

use crate::support::{
    all_events, append, assert_verifies, keyed, keyed_request, lazy, notice, open, received,
    request, to,
};
// ------------------------------------------------------------- 7. the indexes

#[tokio::test]
async fn records_and_claims_are_readable_before_they_are_indexed() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), lazy());
    let r = keyed_request("deploy", "delivery-1");
    let stored = store
        .append(
            vec![received(&r), to(r.id, State::Running)],
            keyed("delivery-1"),
        )
        .await
        .unwrap();
    // Nothing is indexed yet (the interval is an hour): all from memory.
    let record = store
        .request(r.id)
        .await
        .unwrap()
        .expect("readable at once");
    assert_eq!((record.state, record.last_seq), (State::Running, 2));
    assert_eq!(store.request_events(r.id).await.unwrap(), stored);
    assert_eq!(store.find_dedup("delivery-1").await.unwrap(), Some(r.id));
    let again = keyed_request("deploy", "delivery-1");
    match store
        .append(vec![received(&again)], keyed("delivery-1"))
        .await
    {
        Err(StoreError::Duplicate(owner)) => assert_eq!(owner, r.id),
        other => panic!("a duplicate was not refused: {other:?}"),
    }
    let listed = store
        .list_requests(&RequestFilter::default(), None, 10)
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(store.active_requests().await.unwrap().len(), 1);
    assert_eq!(store.events(1, 10).await.unwrap(), stored[1..]);
    // A second `received` for the same id is refused too.
    let dup = store
        .append(vec![received(&r)], AppendOptions::durable())
        .await;
    assert!(
        matches!(&dup, Err(StoreError::Io(m)) if m.contains("already received")),
        "{dup:?}"
    );
    // The same after the indexer stored them.
    store.flush().await.unwrap();
    assert_eq!(
        store.request(r.id).await.unwrap().unwrap().state,
        State::Running
    );
    assert_eq!(store.find_dedup("delivery-1").await.unwrap(), Some(r.id));
    assert_eq!(store.request_events(r.id).await.unwrap(), stored);
    assert_verifies(&store).await;
}

#[tokio::test]
async fn the_index_is_rebuilt_from_the_log_after_a_kill() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let store = open(&path, lazy());
    let (a, b) = (keyed_request("a", "key-a"), keyed_request("b", "key-b"));
    store
        .append(vec![received(&a)], keyed("key-a"))
        .await
        .unwrap();
    store.flush().await.unwrap();
    store
        .append(vec![received(&b), to(b.id, State::Running)], keyed("key-b"))
        .await
        .unwrap();
    append(&store, vec![to(a.id, State::Succeeded)]).await;
    store
        .append(
            vec![notice("buffered, then killed")],
            AppendOptions::buffered(),
        )
        .await
        .unwrap();
    let events = all_events(&store).await;
    // Killed: no last sync, no last index writes.
    store.kill();
    let store = open(&path, LogOptions::default());
    assert_eq!(
        all_events(&store).await,
        events,
        "whole lines stay (synced on open)"
    );
    assert_eq!(
        store.request(a.id).await.unwrap().unwrap().state,
        State::Succeeded
    );
    assert_eq!(
        store.request(b.id).await.unwrap().unwrap().state,
        State::Running
    );
    assert_eq!(store.request_events(a.id).await.unwrap().len(), 2);
    assert_eq!(store.find_dedup("key-b").await.unwrap(), Some(b.id));
    let active: Vec<RequestId> = store
        .active_requests()
        .await
        .unwrap()
        .iter()
        .map(|r| r.request.id)
        .collect();
    assert_eq!(active, vec![b.id]);
    assert_verifies(&store).await;
}

#[tokio::test]
async fn list_requests_pages_across_memory_and_index() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), lazy());
    let reqs: Vec<Request> = (0..6).map(|i| request(&format!("op{i}"))).collect();
    for r in &reqs[..3] {
        append(&store, vec![received(r), to(r.id, State::Succeeded)]).await;
    }
    store.flush().await.unwrap();
    append(&store, vec![to(reqs[0].id, State::Failed)]).await;
    append(
        &store,
        vec![received(&reqs[3]), to(reqs[3].id, State::Running)],
    )
    .await;
    append(&store, vec![received(&reqs[4])]).await;
    append(
        &store,
        vec![received(&reqs[5]), to(reqs[5].id, State::Succeeded)],
    )
    .await;
    let mut want: Vec<RequestId> = reqs.iter().map(|r| r.id).collect();
    want.sort_unstable_by(|a, b| b.cmp(a));
    let all = store
        .list_requests(&RequestFilter::default(), None, 100)
        .await
        .unwrap();
    assert_eq!(all.iter().map(|r| r.request.id).collect::<Vec<_>>(), want);
    for split in 1..6 {
        let page = store
            .list_requests(&RequestFilter::default(), Some(want[split - 1]), 2)
            .await
            .unwrap();
        let ids: Vec<RequestId> = page.iter().map(|r| r.request.id).collect();
        assert_eq!(
            ids,
            want[split..(split + 2).min(6)].to_vec(),
            "after {split}"
        );
    }
    let failed = RequestFilter {
        states: vec![State::Failed],
        ..RequestFilter::default()
    };
    let only = store.list_requests(&failed, None, 10).await.unwrap();
    assert_eq!(only.len(), 1);
    assert_eq!(only[0].request.id, reqs[0].id);
    let mut active: Vec<RequestId> = vec![reqs[3].id, reqs[4].id];
    active.sort_unstable();
    let got: Vec<RequestId> = store
        .active_requests()
        .await
        .unwrap()
        .iter()
        .map(|r| r.request.id)
        .collect();
    assert_eq!(got, active);
}
