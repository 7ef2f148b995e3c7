//! Records and dedup claims, in memory and in the tree; their rebuild after
//! a crash; the store format.

use super::*;

#[tokio::test]
async fn records_in_memory_and_in_the_tree_read_as_one() {
    let dir = tempfile::tempdir().unwrap();
    released(dir.path());
    let store = SledStore::open_with(dir.path(), lazy()).unwrap();
    // Five requests: the first three finished and stored, two in memory only.
    let reqs: Vec<Request> = (0..5).map(|i| request(&format!("op{i}"))).collect();
    for r in &reqs[..3] {
        append(&store, vec![received(r), to(r.id, State::Succeeded)]).await;
    }
    store.flush().await.unwrap();
    assert!(lock(&store.inner.shared.records).is_empty());
    // One stored request changes again (a notice) and stays in memory.
    append(
        &store,
        vec![NewEvent::request(
            reqs[0].id,
            EventBody::Notice {
                source: "test".into(),
                kind: "late".into(),
                message: "after the end".into(),
                data: serde_json::Value::Null,
            },
        )],
    )
    .await;
    append(
        &store,
        vec![received(&reqs[3]), to(reqs[3].id, State::Running)],
    )
    .await;
    append(&store, vec![received(&reqs[4])]).await;
    assert_eq!(lock(&store.inner.shared.records).len(), 3);

    let all = store
        .list_requests(&RequestFilter::default(), None, 10)
        .await
        .unwrap();
    let ids: Vec<RequestId> = all.iter().map(|r| r.request.id).collect();
    // Ids sort by creation time (to the millisecond; random within one).
    let mut want: Vec<RequestId> = reqs.iter().map(|r| r.id).collect();
    want.sort_unstable_by(|a, b| b.cmp(a));
    assert_eq!(ids, want, "newest first, each once");
    // Paging across the two sources, in every split.
    for split in 1..5 {
        let page = store
            .list_requests(&RequestFilter::default(), Some(want[split - 1]), 2)
            .await
            .unwrap();
        let ids: Vec<RequestId> = page.iter().map(|r| r.request.id).collect();
        assert_eq!(
            ids,
            want[split..(split + 2).min(5)].to_vec(),
            "after {split}"
        );
    }
    let running = RequestFilter {
        states: vec![State::Running],
        ..RequestFilter::default()
    };
    let only = store.list_requests(&running, None, 10).await.unwrap();
    assert_eq!(only.len(), 1);
    assert_eq!(only[0].request.id, reqs[3].id);

    let active = active_ids(&store).await;
    let mut want_active = vec![reqs[3].id, reqs[4].id];
    want_active.sort_unstable();
    assert_eq!(active, want_active);
    let events = store.request_events(reqs[0].id).await.unwrap();
    assert_eq!(events.len(), 3, "{events:?}");
    assert!(matches!(events[2].body, EventBody::Notice { .. }));
    assert_eq!(
        store.request(reqs[3].id).await.unwrap().unwrap().state,
        State::Running
    );
}

#[tokio::test]
async fn a_second_received_for_an_id_is_refused_wherever_its_record_is() {
    let dir = tempfile::tempdir().unwrap();
    let (old, held) = (request("old"), request("held"));
    {
        released(dir.path());
        let store = SledStore::open(dir.path()).unwrap();
        append(&store, vec![received(&old), to(old.id, State::Succeeded)]).await;
        // `flush` waits for the indexer: the record is in the tree only.
        store.flush().await.unwrap();
        assert!(lock(&store.inner.shared.records).is_empty());
        let again = store
            .append(vec![received(&old)], AppendOptions::durable())
            .await;
        assert!(
            matches!(&again, Err(StoreError::Io(m)) if m.contains("already received")),
            "record in the tree: {again:?}"
        );
    }
    // Reopened: the bound on stored ids comes from the tree.
    released(dir.path());
    let store = SledStore::open_with(dir.path(), lazy()).unwrap();
    assert_eq!(*lock(&store.inner.shared.stored_max), Some(old.id));
    let again = store
        .append(vec![received(&old)], AppendOptions::durable())
        .await;
    assert!(
        matches!(&again, Err(StoreError::Io(m)) if m.contains("already received")),
        "after reopen: {again:?}"
    );
    // A newer id held in memory only (not yet stored) is refused too.
    append(&store, vec![received(&held)]).await;
    let again = store
        .append(vec![received(&held)], AppendOptions::durable())
        .await;
    assert!(
        matches!(&again, Err(StoreError::Io(m)) if m.contains("already received")),
        "record in memory: {again:?}"
    );
    // The refusals left the chain intact.
    assert!(store.verify().await.unwrap().broken.is_none());
}

#[tokio::test]
async fn records_lost_in_a_crash_are_rebuilt_from_the_events() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (request("a"), request("b"));
    {
        released(dir.path());
        let store = SledStore::open(dir.path()).unwrap();
        append(&store, vec![received(&a), to(a.id, State::Succeeded)]).await;
        store.flush().await.unwrap();
        append(&store, vec![received(&b), to(b.id, State::Running)]).await;
        append(&store, vec![to(a.id, State::Failed)]).await;
    }
    // What a crash before the records were stored leaves: the events (durable),
    // the records as of an earlier `m:applied`.
    {
        released(dir.path());
        let db = sled::open(dir.path()).unwrap();
        let tree = db.open_tree("audit").unwrap();
        tree.remove(idkey(b's', b.id)).unwrap();
        tree.remove(idkey(b'a', b.id)).unwrap();
        tree.insert(APPLIED_KEY, &2u64.to_be_bytes()[..]).unwrap();
        let stale = Stored {
            seqs: vec![1, 2],
            record: {
                let evs: Vec<AuditEvent> = lines(&tree.get(bkey(1)).unwrap().unwrap())
                    .map(|l| serde_json::from_slice(l).unwrap())
                    .collect();
                let mut r = RequestRecord::new(Arc::new(a.clone()), &evs[0]);
                r.apply(&evs[1]);
                r
            },
        };
        tree.insert(idkey(b's', a.id), serde_json::to_vec(&stale).unwrap())
            .unwrap();
        db.flush().unwrap();
    }
    released(dir.path());
    let store = SledStore::open(dir.path()).unwrap();
    let rb = store.request(b.id).await.unwrap().expect("rebuilt");
    assert_eq!(rb.state, State::Running);
    let ra = store.request(a.id).await.unwrap().unwrap();
    assert_eq!(ra.state, State::Failed, "the later event was replayed once");
    assert_eq!(store.request_events(a.id).await.unwrap().len(), 3);
    assert_eq!(active_ids(&store).await, vec![b.id]);
    assert!(store.verify().await.unwrap().ok());
}

#[tokio::test]
async fn records_stored_ahead_of_m_applied_are_not_replayed_twice() {
    // The indexer writes records key by key and moves `m:applied` last: a
    // crash in between leaves records that already hold events after it.
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (request("a"), request("b"));
    let (ra, rb) = {
        released(dir.path());
        let store = SledStore::open(dir.path()).unwrap();
        append(&store, vec![received(&a), to(a.id, State::Running)]).await;
        append(&store, vec![received(&b)]).await;
        append(&store, vec![to(a.id, State::Succeeded)]).await;
        store.flush().await.unwrap();
        (
            store.request(a.id).await.unwrap().unwrap(),
            store.request(b.id).await.unwrap().unwrap(),
        )
    };
    {
        released(dir.path());
        let db = sled::open(dir.path()).unwrap();
        let tree = db.open_tree("audit").unwrap();
        // Every record is in, `m:applied` is still before all of it, and b's
        // `a` key did not make it.
        tree.insert(APPLIED_KEY, &0u64.to_be_bytes()[..]).unwrap();
        tree.remove(idkey(b'a', b.id)).unwrap();
        db.flush().unwrap();
    }
    released(dir.path());
    let store = SledStore::open(dir.path()).unwrap();
    let again_a = store.request(a.id).await.unwrap().unwrap();
    let again_b = store.request(b.id).await.unwrap().unwrap();
    assert_eq!(again_a.state, State::Succeeded);
    assert_eq!(
        serde_json::to_value(&again_a).unwrap(),
        serde_json::to_value(&ra).unwrap(),
        "a's events were not folded in a second time"
    );
    assert_eq!(
        serde_json::to_value(&again_b).unwrap(),
        serde_json::to_value(&rb).unwrap()
    );
    assert_eq!(store.request_events(a.id).await.unwrap().len(), 3);
    assert_eq!(active_ids(&store).await, vec![b.id], "b's `a` key is back");
    assert!(store.verify().await.unwrap().ok());
}

/// A request as a frontend submits it: the delivery's dedup key on the
/// request and on the append.
async fn deliver(store: &SledStore, key: &str) -> Result<RequestId, StoreError> {
    let mut r = request("delivered");
    r.dedup_key = Some(key.to_string());
    let opts = {
        let mut o = AppendOptions::durable();
        o.dedup_key = Some(key.to_string());
        o
    };
    store.append(vec![received(&r)], opts).await.map(|_| r.id)
}

#[tokio::test]
async fn a_claim_carried_by_its_request_holds_before_and_after_it_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let id = {
        released(dir.path());
        let store = SledStore::open_with(dir.path(), lazy()).unwrap();
        let before = store.stats();
        let id = deliver(&store, "delivery-1").await.unwrap();
        // One block, no batch: the claim waits in memory for the indexer.
        assert_eq!(store.stats().since(&before).keys, 1);
        assert!(store.inner.tree.get(dkey("delivery-1")).unwrap().is_none());
        assert_eq!(store.find_dedup("delivery-1").await.unwrap(), Some(id));
        match deliver(&store, "delivery-1").await {
            Err(StoreError::Duplicate(owner)) => assert_eq!(owner, id),
            other => panic!("a duplicate delivery was not refused: {other:?}"),
        }
        // `flush` stores records and claims.
        store.flush().await.unwrap();
        assert!(store.inner.tree.get(dkey("delivery-1")).unwrap().is_some());
        assert!(lock(&store.inner.shared.claims).is_empty());
        assert!(matches!(
            deliver(&store, "delivery-1").await,
            Err(StoreError::Duplicate(owner)) if owner == id
        ));
        id
    };
    // A crash before the indexer stored it: the event is durable, the claim
    // and `m:applied` are not.
    {
        released(dir.path());
        let db = sled::open(dir.path()).unwrap();
        let tree = db.open_tree("audit").unwrap();
        tree.remove(dkey("delivery-1")).unwrap();
        tree.insert(APPLIED_KEY, &0u64.to_be_bytes()[..]).unwrap();
        db.flush().unwrap();
    }
    released(dir.path());
    let store = SledStore::open(dir.path()).unwrap();
    assert_eq!(store.find_dedup("delivery-1").await.unwrap(), Some(id));
    assert!(matches!(
        deliver(&store, "delivery-1").await,
        Err(StoreError::Duplicate(owner)) if owner == id
    ));
    let other = deliver(&store, "delivery-2").await.unwrap();
    assert_ne!(other, id);
    assert!(store.verify().await.unwrap().ok());
}

#[tokio::test]
async fn a_claim_its_events_do_not_carry_is_stored_with_them() {
    let dir = tempfile::tempdir().unwrap();
    released(dir.path());
    let store = SledStore::open_with(dir.path(), lazy()).unwrap();
    let r = request("plain");
    let opts = {
        let mut o = AppendOptions::durable();
        o.dedup_key = Some("elsewhere".into());
        o
    };
    store.append(vec![received(&r)], opts).await.unwrap();
    // Not rebuildable from the events, so written in the group's batch.
    assert!(store.inner.tree.get(dkey("elsewhere")).unwrap().is_some());
    assert_eq!(store.find_dedup("elsewhere").await.unwrap(), Some(r.id));
}

#[tokio::test]
async fn a_group_is_stored_in_few_keys_and_events_read_back_in_order() {
    let dir = tempfile::tempdir().unwrap();
    released(dir.path());
    let store = SledStore::open_with(
        dir.path(),
        SledOptions {
            block_events: 4,
            ..lazy()
        },
    )
    .unwrap();
    let before = store.stats();
    // 50 requests appended concurrently share groups and blocks.
    let mut tasks = Vec::new();
    for i in 0..50 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let r = request(&format!("op{i}"));
            append(&store, vec![received(&r), to(r.id, State::Succeeded)]).await;
            r.id
        }));
    }
    let mut ids = Vec::new();
    for t in tasks {
        ids.push(t.await.unwrap());
    }
    let stats = store.stats().since(&before);
    assert_eq!(stats.events, 100);
    assert!(stats.keys <= stats.events / 4 + stats.groups, "{stats:?}");
    let events = store.events(0, usize::MAX).await.unwrap();
    assert_eq!(
        events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (1..=100).collect::<Vec<_>>()
    );
    assert_eq!(store.events(37, 5).await.unwrap()[0].seq, 38);
    assert_eq!(store.head().await.unwrap().0, 100);
    for id in ids {
        let evs = store.request_events(id).await.unwrap();
        assert_eq!(evs.len(), 2);
        assert!(evs.iter().all(|e| e.request_id == Some(id)));
    }
    assert!(store.verify().await.unwrap().ok());
}

#[test]
fn a_store_of_the_earlier_format_is_refused_plainly() {
    let dir = tempfile::tempdir().unwrap();
    {
        released(dir.path());
        let db = sled::open(dir.path()).unwrap();
        let tree = db.open_tree("audit").unwrap();
        tree.insert(b"e\0\0\0\0\0\0\0\x01", &b"{}"[..]).unwrap();
        db.flush().unwrap();
    }
    released(dir.path());
    released(dir.path());
    let err = SledStore::open(dir.path()).unwrap_err();
    assert!(err.to_string().contains("store format 1"), "{err}");
}

#[tokio::test]
async fn conditional_appends_check_the_record_in_the_tree() {
    let dir = tempfile::tempdir().unwrap();
    released(dir.path());
    let store = SledStore::open_with(dir.path(), lazy()).unwrap();
    let r = request("op");
    append(&store, vec![received(&r), to(r.id, State::Succeeded)]).await;
    store.flush().await.unwrap();
    // The record is only in the tree now.
    assert!(lock(&store.inner.shared.records).is_empty());
    let head = store.head().await.unwrap();
    let mut stale = AppendOptions::durable().expect_last_seq(1);
    stale.dedup_key = Some("k".into());
    let res = store
        .append(vec![to(r.id, State::Cancelled)], stale.clone())
        .await;
    assert!(
        matches!(res, Err(StoreError::Stale { request, last_seq: 2 }) if request == r.id),
        "{res:?}"
    );
    assert_eq!(store.head().await.unwrap(), head);
    assert_eq!(store.find_dedup("k").await.unwrap(), None);
    let right = stale.expect_last_seq(2);
    let got = store
        .append(vec![to(r.id, State::Cancelled)], right.clone())
        .await
        .unwrap();
    assert_eq!(got[0].seq, 3);
    assert_eq!(store.find_dedup("k").await.unwrap(), Some(r.id));
    // The key is checked first: a duplicate is a duplicate whatever it expected.
    let res = store.append(vec![to(r.id, State::Failed)], right).await;
    assert!(
        matches!(res, Err(StoreError::Duplicate(id)) if id == r.id),
        "{res:?}"
    );
}
