//! Conditional appends (`AppendOptions::expect_last_seq`) against a record
//! wherever the writer finds it: changed in the same group, held in memory,
//! or only in the index (a finished request after a flush, or any request
//! after a reopen).

use youops_core::audit::{AppendOptions, AuditStore, StoreError};
use youops_core::model::{RequestId, State};

use crate::support::*;

fn expecting(seq: u64) -> AppendOptions {
    AppendOptions::durable().expect_last_seq(seq)
}

fn assert_stale<T: std::fmt::Debug>(res: Result<T, StoreError>, id: RequestId, last: u64) {
    match res {
        Err(StoreError::Stale { request, last_seq }) => {
            assert_eq!((request, last_seq), (id, last));
        }
        other => panic!("expected Stale({id}, {last}), got {other:?}"),
    }
}

#[tokio::test]
async fn the_condition_is_checked_against_the_indexed_record() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let store = open(&path, small(4096));
    let done = request("op.done");
    let live = request("op.live");
    append(&store, vec![received(&done), to(done.id, State::Succeeded)]).await;
    append(&store, vec![received(&live), to(live.id, State::Running)]).await;
    // A flush indexes everything: the finished request's record leaves the
    // writer's memory, and is read back from the index.
    store.flush().await.unwrap();
    let head = store.head().await.unwrap();
    assert_stale(
        store
            .append(vec![to(done.id, State::Cancelled)], expecting(1))
            .await,
        done.id,
        2,
    );
    assert_eq!(store.head().await.unwrap(), head, "a stale append appended");
    let got = store
        .append(vec![to(done.id, State::Cancelled)], expecting(2))
        .await
        .unwrap();
    assert_eq!(got[0].seq, 5);

    // After a clean reopen, every record comes from the index.
    drop(store);
    let store = open(&path, small(4096));
    assert_stale(
        store
            .append(vec![to(live.id, State::Succeeded)], expecting(3))
            .await,
        live.id,
        4,
    );
    assert_stale(
        store
            .append(vec![to(done.id, State::Failed)], expecting(2))
            .await,
        done.id,
        5,
    );
    // A request never received is at 0; `received` expecting 0 creates it.
    let fresh = request("op.fresh");
    assert_stale(
        store
            .append(vec![to(fresh.id, State::Running)], expecting(4))
            .await,
        fresh.id,
        0,
    );
    assert_stale(
        store.append(vec![received(&live)], expecting(0)).await,
        live.id,
        4,
    );
    store
        .append(vec![received(&fresh)], expecting(0))
        .await
        .unwrap();
    let got = store
        .append(vec![to(live.id, State::Succeeded)], expecting(4))
        .await
        .unwrap();
    assert_eq!(got[0].seq, 7);
    assert_eq!(store.request(live.id).await.unwrap().unwrap().last_seq, 7);
    assert_verifies(&store).await;
}

#[tokio::test]
async fn a_stale_append_claims_no_key_even_in_a_group_that_claims_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir.path().join("store"), lazy());
    let r = request("op");
    append(&store, vec![received(&r)]).await;
    // One group: the right seq goes, the same seq again is stale (against
    // the record as the group left it) and does not claim its key.
    let mut right = keyed("k-right");
    right.expect_last_seq = Some(1);
    let mut stale = keyed("k-stale");
    stale.durable = false;
    stale.expect_last_seq = Some(1);
    let (a, b) = tokio::join!(
        store.append(vec![to(r.id, State::Running)], right),
        store.append(vec![to(r.id, State::Cancelled)], stale),
    );
    let (won, lost) = match (a, b) {
        (Ok(_), b) => (0, b.map(|_| ())),
        (a, Ok(_)) => (1, a.map(|_| ())),
        other => panic!("neither went: {other:?}"),
    };
    assert_stale(lost, r.id, 2);
    let keys = ["k-right", "k-stale"];
    assert_eq!(
        store.find_dedup(keys[won]).await.unwrap(),
        Some(r.id),
        "the winner's key"
    );
    assert_eq!(
        store.find_dedup(keys[1 - won]).await.unwrap(),
        None,
        "the stale append's key"
    );
    assert_eq!(store.head().await.unwrap().0, 2);
    assert_verifies(&store).await;
}
