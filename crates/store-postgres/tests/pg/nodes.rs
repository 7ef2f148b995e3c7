//! Several stores (nodes) on one database, appending at once: one gapless
//! chain, verified from every node, with monotonic times, and each dedup key
//! claimed by exactly one of the nodes.

use std::collections::HashMap;
use std::sync::Arc;

use youops_core::audit::{AppendOptions, AuditStore, StoreError};
use youops_core::model::{AuditEvent, State};

use crate::support::{all_events, claiming, cluster, open, received, request, to};

const NODES: usize = 3;
const TASKS: usize = 4;
const APPENDS: usize = 15;
const KEYS: usize = 5;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_on_one_database_make_one_gapless_chain() {
    let cluster = cluster();
    let url = cluster.create_database();
    let mut nodes = Vec::new();
    for _ in 0..NODES {
        nodes.push(open(&url).await);
    }
    let start = Arc::new(tokio::sync::Barrier::new(NODES * TASKS));
    let mut tasks = Vec::new();
    for (n, node) in nodes.iter().enumerate() {
        for t in 0..TASKS {
            let node = Arc::clone(node);
            let start = Arc::clone(&start);
            tasks.push(tokio::spawn(async move {
                start.wait().await;
                let mut mine: Vec<Vec<AuditEvent>> = Vec::new();
                let mut dedup: Vec<(usize, Result<Vec<AuditEvent>, StoreError>)> = Vec::new();
                for i in 0..APPENDS {
                    let r = request(&format!("ops.node{n}.task{t}.{i}"));
                    let events = vec![received(&r), to(r.id, State::Succeeded)];
                    mine.push(
                        node.append(events, AppendOptions::durable())
                            .await
                            .expect("append"),
                    );
                    if i < KEYS {
                        // Every task of every node races for the same keys.
                        let r = request("ops.dedup");
                        let opts = claiming(&format!("key-{i}"), false);
                        dedup.push((i, node.append(vec![received(&r)], opts).await));
                    }
                }
                (mine, dedup)
            }));
        }
    }
    let mut appended: Vec<AuditEvent> = Vec::new();
    let mut winners: HashMap<usize, Vec<AuditEvent>> = HashMap::new();
    let mut losers: Vec<(usize, StoreError)> = Vec::new();
    for task in tasks {
        let (mine, dedup) = task.await.expect("task");
        for events in mine {
            assert_eq!(events.len(), 2);
            assert_eq!(
                events[1].seq,
                events[0].seq + 1,
                "one append's events are contiguous"
            );
            appended.extend(events);
        }
        for (key, res) in dedup {
            match res {
                Ok(events) => {
                    winners.entry(key).or_default().extend(events.clone());
                    appended.extend(events);
                }
                Err(e) => losers.push((key, e)),
            }
        }
    }
    let total = (NODES * TASKS * APPENDS * 2 + KEYS) as u64;
    assert_eq!(appended.len() as u64, total);

    // One chain: every event once, seqs 1..=total, each node sees the same.
    let chain = all_events(&*nodes[0]).await;
    assert_eq!(chain.len() as u64, total);
    for (i, e) in chain.iter().enumerate() {
        assert_eq!(e.seq, i as u64 + 1, "gapless");
    }
    appended.sort_by_key(|e| e.seq);
    assert_eq!(appended, chain, "what the appends returned is the chain");
    for w in chain.windows(2) {
        assert!(
            w[1].time >= w[0].time,
            "times are monotonic: #{} then #{}",
            w[0].seq,
            w[1].seq
        );
    }
    for node in &nodes {
        let v = node.verify().await.expect("verify");
        assert!(v.ok(), "{v:?}");
        assert_eq!((v.checked, v.head_seq), (total, total));
        assert_eq!(all_events(&**node).await, chain);
    }

    // Each key: exactly one winner among every node's racers.
    for key in 0..KEYS {
        let won = winners.get(&key).expect("a winner");
        assert_eq!(won.len(), 1, "key-{key} won once");
        let winner = won[0].request_id.expect("a request");
        for node in &nodes {
            assert_eq!(
                node.find_dedup(&format!("key-{key}")).await.unwrap(),
                Some(winner)
            );
        }
        for (k, e) in &losers {
            if *k == key {
                assert!(
                    matches!(e, StoreError::Duplicate(w) if *w == winner),
                    "{e:?}"
                );
            }
        }
    }
    assert_eq!(losers.len(), NODES * TASKS * KEYS - KEYS);
}
