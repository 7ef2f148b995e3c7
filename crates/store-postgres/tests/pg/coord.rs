//! Cluster membership: nodes join with growing incarnations and heartbeat by
//! the database clock; silent nodes are dead; the leader fences a dead
//! incarnation, whose appends are then refused in their own transaction
//! until the node joins again.

use std::time::Duration;

use chrono::{DateTime, Utc};
use youops_core::audit::{AppendOptions, AuditStore};
use youops_store_postgres::coord::{is_fenced, Coordinator};
use youops_testkit::eventually_within;

use crate::support::{
    admin, all_events, cluster, coord_opts, join, leads_within, node, notice, open,
};

async fn heartbeat_at(c: &tokio_postgres::Client, id: &str) -> DateTime<Utc> {
    c.query_one("SELECT heartbeat_at FROM nodes WHERE id = $1", &[&id])
        .await
        .expect("a node row")
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_join_with_new_incarnations_and_heartbeat() {
    let cluster = cluster();
    let url = cluster.create_database();
    let store = open(&url).await;
    let a1 = join(&store, "a").await;
    assert_eq!(a1.incarnation(), 1);
    assert_eq!(a1.node(), &node("a"));
    assert_eq!(store.bound_node(), Some((node("a"), 1)));

    // Heartbeats move forward by the database clock.
    let c = admin(&url).await;
    let first = heartbeat_at(&c, "a").await;
    eventually_within("a heartbeat", 10, || {
        let c = &c;
        async move { (heartbeat_at(c, "a").await > first).then_some(()) }
    })
    .await;

    // The same node id joining again takes the next incarnation, atomically
    // even when several join at once.
    let others: Vec<_> = (0..3)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move {
                let s = open(&url).await;
                join(&s, "b").await.incarnation()
            })
        })
        .collect();
    let mut incs = Vec::new();
    for o in others {
        incs.push(o.await.unwrap());
    }
    incs.sort();
    assert_eq!(incs, [1, 2, 3]);
    let a2 = join(&store, "a").await;
    assert_eq!(a2.incarnation(), 2);
    assert_eq!(store.bound_node(), Some((node("a"), 2)));
    let rows = a2.nodes().await.unwrap();
    let seen: Vec<(String, u64, Option<u64>)> = rows
        .iter()
        .map(|r| (r.node.to_string(), r.incarnation, r.fenced))
        .collect();
    assert_eq!(
        seen,
        [("a".into(), 2, None), ("b".into(), 3, None)],
        "{rows:?}"
    );

    // Incarnation 1 is superseded: its heartbeat finds out, and a store
    // still bound to it may not write.
    tokio::time::timeout(Duration::from_secs(10), a1.fenced().cancelled())
        .await
        .expect("the superseded incarnation learns it");
    let old = open(&url).await;
    old.bind_node(node("a"), 1);
    let err = old
        .append(vec![notice("from incarnation 1")], AppendOptions::durable())
        .await
        .expect_err("a superseded incarnation's append is refused");
    assert!(is_fenced(&err), "{err}");
    assert!(err.to_string().contains("superseded"), "{err}");
    store
        .append(vec![notice("from incarnation 2")], AppendOptions::durable())
        .await
        .expect("the current incarnation appends");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_heartbeats_stop_is_dead_by_the_database_clock() {
    let cluster = cluster();
    let url = cluster.create_database();
    let (sa, sb) = (open(&url).await, open(&url).await);
    let a = join(&sa, "a").await;
    let b = join(&sb, "b").await;
    let ttl = Duration::from_secs(1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(a.dead_nodes(ttl).await.unwrap(), []);

    b.shutdown();
    let stopped = tokio::time::Instant::now();
    let dead = eventually_within("b dead", 15, || {
        let a = &a;
        async move {
            let dead = a.dead_nodes(ttl).await.unwrap();
            (!dead.is_empty()).then_some(dead)
        }
    })
    .await;
    assert!(
        stopped.elapsed() >= ttl - Duration::from_millis(150),
        "dead only once its last heartbeat is a TTL old"
    );
    assert_eq!(dead, [(node("b"), 1)]);

    // Once fenced by the leader, it is no longer listed; joining again it is
    // alive.
    let campaign = a
        .campaign(Duration::from_secs(3), Duration::from_secs(1))
        .unwrap();
    let epoch = leads_within(&campaign.leadership(), 10).await;
    assert!(a.fence_node(epoch, &node("b"), 1).await.unwrap());
    assert_eq!(a.dead_nodes(ttl).await.unwrap(), []);
    let b2 = join(&sb, "b").await;
    assert_eq!(b2.incarnation(), 2);
    let rows = a.nodes().await.unwrap();
    assert_eq!(rows[1].fenced, Some(1));
    assert_eq!(a.dead_nodes(ttl).await.unwrap(), []);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fenced_incarnation_writes_nothing_until_it_joins_again() {
    let cluster = cluster();
    let url = cluster.create_database();
    let (sa, sb) = (open(&url).await, open(&url).await);
    let a = join(&sa, "a").await;
    let b = join(&sb, "b").await;
    let campaign = b
        .campaign(Duration::from_secs(3), Duration::from_secs(1))
        .unwrap();
    let epoch = leads_within(&campaign.leadership(), 10).await;
    sa.append(vec![notice("a before")], AppendOptions::durable())
        .await
        .expect("a appends while alive");

    // Only the leader fences, under its current epoch.
    let err = a
        .fence_node(epoch, &node("b"), 1)
        .await
        .expect_err("a does not lead");
    assert!(is_fenced(&err), "{err}");
    let err = b
        .fence_node(epoch + 1, &node("a"), a.incarnation())
        .await
        .expect_err("not b's epoch");
    assert!(is_fenced(&err), "{err}");
    assert!(b
        .fence_node(epoch, &node("a"), a.incarnation())
        .await
        .unwrap());
    assert!(
        !b.fence_node(epoch, &node("a"), a.incarnation())
            .await
            .unwrap(),
        "fenced already"
    );

    // Every append of a's incarnation is refused, the whole group, and
    // nothing is written.
    let before = all_events(&*sa).await;
    let appends: Vec<_> = (0..8)
        .map(|i| {
            let sa = sa.clone();
            tokio::spawn(async move {
                sa.append(
                    vec![notice(format!("a fenced {i}"))],
                    AppendOptions::durable(),
                )
                .await
            })
        })
        .collect();
    for t in appends {
        let err = t.await.unwrap().expect_err("a fenced append is refused");
        assert!(is_fenced(&err), "{err}");
        assert!(
            err.to_string().starts_with("fenced: node a incarnation 1"),
            "{err}"
        );
    }
    assert_eq!(all_events(&*sb).await, before, "nothing was written");
    let err = a
        .try_lock(
            "k",
            youops_core::model::RequestId::new(),
            Duration::from_secs(3),
        )
        .await
        .expect_err("a fenced incarnation takes no lock");
    assert!(is_fenced(&err), "{err}");
    tokio::time::timeout(Duration::from_secs(10), a.fenced().cancelled())
        .await
        .expect("a's heartbeat learns it is fenced");

    // Joining again: a new incarnation, which writes.
    let a2 = Coordinator::join(&sa, node("a"), coord_opts())
        .await
        .unwrap();
    assert_eq!(a2.incarnation(), 2);
    let got = sa
        .append(vec![notice("a again")], AppendOptions::durable())
        .await
        .expect("the new incarnation appends");
    assert_eq!(got[0].seq, before.len() as u64 + 1);
    assert!(sb.verify().await.unwrap().ok());
}
