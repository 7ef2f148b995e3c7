//! Dedup claims (section 8).

use std::sync::Arc;
use std::time::Duration;

use youops_core::audit::{AuditStore, StoreError};
use youops_store::fs::SimFs;
use youops_store::LogOptions;

use crate::support::{
    all_events, append, delivery, keyed, keyed_request, lazy, open, received, request, sim_open,
};
// ------------------------------------------------------------ 8. dedup claims

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_duplicate_claims_have_exactly_one_winner() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let store = open(&path, LogOptions::default());
    for round in 0..3 {
        let key = format!("delivery-{round}");
        let start = Arc::new(tokio::sync::Barrier::new(64));
        let mut tasks = Vec::new();
        for _ in 0..64 {
            let (store, key, start) = (store.clone(), key.clone(), start.clone());
            tasks.push(tokio::spawn(async move {
                let r = keyed_request("deliver", &key);
                start.wait().await;
                (r.id, store.append(vec![received(&r)], keyed(&key)).await)
            }));
        }
        let mut winners = Vec::new();
        let mut losers = Vec::new();
        for t in tasks {
            match t.await.unwrap() {
                (id, Ok(_)) => winners.push(id),
                (_, Err(StoreError::Duplicate(owner))) => losers.push(owner),
                (_, Err(e)) => panic!("{e}"),
            }
        }
        assert_eq!(winners.len(), 1, "round {round}");
        assert_eq!(losers.len(), 63);
        assert!(losers.iter().all(|o| *o == winners[0]));
        assert_eq!(store.find_dedup(&key).await.unwrap(), Some(winners[0]));
    }
    assert_eq!(
        all_events(&store).await.len(),
        3,
        "the losers appended nothing"
    );
    drop(store);
    let store = open(&path, LogOptions::default());
    for round in 0..3 {
        assert!(store
            .find_dedup(&format!("delivery-{round}"))
            .await
            .unwrap()
            .is_some());
    }
}

#[tokio::test]
async fn expiring_dedup_claims_expire_by_bucket_and_the_others_hold() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let mut opts = lazy();
    opts.dedup_ttl = Duration::from_secs(1);
    opts.dedup_bucket = Duration::from_secs(1);
    let store = open(&path, opts.clone());
    let (indexed, claim) = delivery("a", "slack:1");
    store.append(vec![received(&indexed)], claim).await.unwrap();
    store.flush().await.unwrap();
    let (in_memory, claim) = delivery("b", "slack:2");
    store
        .append(vec![received(&in_memory)], claim)
        .await
        .unwrap();
    // Not marked as expiring: held for good.
    let forever = keyed_request("c", "git:abc");
    store
        .append(vec![received(&forever)], keyed("git:abc"))
        .await
        .unwrap();
    // A claim its event does not carry, expiring.
    let plain = request("d");
    let mut elsewhere = keyed("api:1");
    elsewhere.dedup_expires = true;
    store
        .append(vec![received(&plain)], elsewhere)
        .await
        .unwrap();
    // Killed before slack:2 was indexed: rebuilt from its event, still expiring.
    store.kill();
    let store = open(&path, opts.clone());
    let (held, claim) = delivery("e", "slack:3");
    store.append(vec![received(&held)], claim).await.unwrap();
    assert_eq!(store.find_dedup("slack:1").await.unwrap(), Some(indexed.id));
    assert_eq!(
        store.find_dedup("slack:2").await.unwrap(),
        Some(in_memory.id)
    );
    assert_eq!(store.find_dedup("slack:3").await.unwrap(), Some(held.id));
    assert_eq!(store.find_dedup("api:1").await.unwrap(), Some(plain.id));
    // A bucket of one second expires whole one second after it ends.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    for key in ["slack:1", "slack:2", "slack:3", "api:1"] {
        assert_eq!(store.find_dedup(key).await.unwrap(), None, "{key}");
    }
    assert_eq!(store.find_dedup("git:abc").await.unwrap(), Some(forever.id));
    // An expired key can be claimed again; the other cannot.
    let (again, claim) = delivery("a2", "slack:1");
    store.append(vec![received(&again)], claim).await.unwrap();
    assert_eq!(store.find_dedup("slack:1").await.unwrap(), Some(again.id));
    let twice = keyed_request("c2", "git:abc");
    assert!(matches!(
        store.append(vec![received(&twice)], keyed("git:abc")).await,
        Err(StoreError::Duplicate(id)) if id == forever.id
    ));
    drop(store);
    // After a reopen (which also removes expired buckets) the same holds.
    let store = open(&path, opts);
    assert_eq!(store.find_dedup("slack:1").await.unwrap(), Some(again.id));
    assert_eq!(store.find_dedup("slack:2").await.unwrap(), None);
    assert_eq!(store.find_dedup("api:1").await.unwrap(), None);
    assert_eq!(store.find_dedup("git:abc").await.unwrap(), Some(forever.id));
}

#[tokio::test]
async fn a_claim_its_events_do_not_carry_is_stored_before_them() {
    let dir = tempfile::tempdir().unwrap();
    let sim = SimFs::new(12);
    let store = sim_open(dir.path(), &sim, lazy()).unwrap();
    // The received event carries no key: the claim is not in the log.
    let r = request("plain");
    store
        .append(vec![received(&r)], keyed("elsewhere"))
        .await
        .unwrap();
    store.kill();
    let store = sim_open(dir.path(), &sim, lazy()).unwrap();
    assert_eq!(store.find_dedup("elsewhere").await.unwrap(), Some(r.id));
    // A claim whose events never reach the log is dropped on the next open.
    sim.fill_disk_after(10);
    let lost = request("lost");
    assert!(store
        .append(vec![received(&lost)], keyed("never-written"))
        .await
        .is_err());
    drop(store);
    sim.free_disk();
    let store = sim_open(dir.path(), &sim, lazy()).unwrap();
    assert_eq!(store.find_dedup("never-written").await.unwrap(), None);
    assert_eq!(store.find_dedup("elsewhere").await.unwrap(), Some(r.id));
    let r2 = request("retry");
    store
        .append(vec![received(&r2)], keyed("never-written"))
        .await
        .unwrap();
    assert_eq!(
        store.find_dedup("never-written").await.unwrap(),
        Some(r2.id)
    );
}

#[tokio::test]
async fn a_key_its_received_event_carries_is_claimed_as_a_replay_would() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let store = open(&path, lazy());
    // Appended without asking for the claim: the event carries the key.
    let first = keyed_request("a", "carried");
    append(&store, vec![received(&first)]).await;
    assert_eq!(store.find_dedup("carried").await.unwrap(), Some(first.id));
    // A later request carrying it does not take it over.
    let second = keyed_request("b", "carried");
    append(&store, vec![received(&second)]).await;
    assert_eq!(store.find_dedup("carried").await.unwrap(), Some(first.id));
    store.kill();
    // Rebuilt from the log: the same owner.
    let store = open(&path, lazy());
    assert_eq!(store.find_dedup("carried").await.unwrap(), Some(first.id));
}
