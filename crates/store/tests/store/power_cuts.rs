//! Random power cuts during concurrent submits (section 12).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use youops_core::audit::{AppendOptions, AuditStore, StoreError, GENESIS_HASH};
use youops_core::model::{AuditEvent, RequestId, State};
use youops_store::fs::SimFs;

use crate::support::{
    all_events, assert_verifies, keyed, keyed_request, received, sim_open, small, to,
};
// ------------------------------------------------- 12. random power cuts

/// ~200 power cuts during concurrent submits: after each, every acknowledged
/// durable event is there, the chain verifies, and the claims of acknowledged
/// requests hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_power_cuts_during_concurrent_submits_lose_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    // YOUOPS_STORE_SEED=n reruns another sequence of cuts.
    let seed: u64 = std::env::var("YOUOPS_STORE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2024);
    let mut sim = SimFs::new(seed);
    sim.set_sync_delay(Duration::from_micros(300));
    let mut rng = seed | 1;
    let (mut lost, mut rounds_with_acks) = (0u64, 0usize);
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let acked: Arc<Mutex<BTreeMap<u64, AuditEvent>>> = Arc::default();
    let claims: Arc<Mutex<Vec<(String, RequestId)>>> = Arc::default();
    let mut submitted = 0u64;
    // YOUOPS_STORE_CUTS=n makes more cuts (a benchmark run); CI makes 200.
    let cuts: u64 = std::env::var("YOUOPS_STORE_CUTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    for round in 0..cuts {
        let mut opts = small(4096);
        opts.index_interval = Duration::from_millis(1 + next() % 20);
        let store = sim_open(&path, &sim, opts).unwrap_or_else(|e| panic!("round {round}: {e}"));
        // Everything acknowledged so far is there, unchanged.
        let events = all_events(&store).await;
        let by_seq: BTreeMap<u64, &AuditEvent> = events.iter().map(|e| (e.seq, e)).collect();
        for (seq, e) in acked.lock().unwrap().iter() {
            assert_eq!(
                by_seq.get(seq),
                Some(&e),
                "seed {seed} round {round}: acknowledged #{seq}"
            );
        }
        let v = store.verify().await.unwrap();
        assert!(v.ok(), "seed {seed} round {round}: {v:?}");
        assert_eq!(v.head_seq, events.last().map_or(0, |e| e.seq));
        let held = claims.lock().unwrap().clone();
        for (key, id) in held.iter().rev().take(20) {
            assert_eq!(
                store.find_dedup(key).await.unwrap(),
                Some(*id),
                "round {round}: {key}"
            );
        }
        if let Some((key, id)) = held.last() {
            let again = keyed_request("again", key);
            assert!(matches!(
                store.append(vec![received(&again)], keyed(key)).await,
                Err(StoreError::Duplicate(owner)) if owner == *id
            ));
        }
        // Concurrent submitters until the power goes.
        let mut tasks = Vec::new();
        for t in 0..4u64 {
            let (store, acked, claims) = (store.clone(), acked.clone(), claims.clone());
            let base = submitted + t * 1_000_000;
            tasks.push(tokio::spawn(async move {
                for i in 0.. {
                    let key = format!("delivery-{base}-{i}");
                    let r = keyed_request("submit", &key);
                    let durable = !(base + i).is_multiple_of(3);
                    let mut opts = if durable {
                        AppendOptions::durable()
                    } else {
                        AppendOptions::buffered()
                    };
                    opts.dedup_key = Some(key.clone());
                    match store
                        .append(vec![received(&r), to(r.id, State::Running)], opts)
                        .await
                    {
                        Ok(events) => {
                            if durable {
                                let mut a = acked.lock().unwrap();
                                for e in events {
                                    a.insert(e.seq, e);
                                }
                                claims.lock().unwrap().push((key, r.id));
                            }
                        }
                        Err(_) => return,
                    }
                    tokio::task::yield_now().await;
                }
            }));
        }
        submitted += 10_000_000;
        let acked_before = acked.lock().unwrap().len();
        tokio::time::sleep(Duration::from_micros(next() % 4000)).await;
        let after = sim.power_cut();
        for t in tasks {
            t.await.unwrap();
        }
        let tip = store.head().await.unwrap().0;
        drop(store);
        sim = after;
        rounds_with_acks += usize::from(acked.lock().unwrap().len() > acked_before);
        let back = sim_open(&path, &sim, small(4096)).unwrap();
        lost += tip.saturating_sub(back.head().await.unwrap().0);
    }
    eprintln!(
        "seed {seed}: {} acknowledged durable events, {rounds_with_acks} of 200 rounds \
         acknowledged some, {lost} events written but not acknowledged durable lost to cuts",
        acked.lock().unwrap().len()
    );
    assert!(rounds_with_acks > 100, "{rounds_with_acks}");
    assert!(lost > 0, "no cut ever lost an unsynced write");
    let store = sim_open(&path, &sim, small(4096)).unwrap();
    let events = all_events(&store).await;
    assert!(events.len() as u64 >= acked.lock().unwrap().len() as u64);
    assert!(
        acked.lock().unwrap().len() > 200,
        "few appends were acknowledged"
    );
    assert_verifies(&store).await;
    assert_eq!(
        events.first().map(|e| e.prev_hash.as_str()),
        Some(GENESIS_HASH)
    );
}
