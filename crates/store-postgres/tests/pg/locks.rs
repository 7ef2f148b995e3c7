//! Op lock keys as lease rows: exclusive across nodes, renewed while held,
//! released, taken over once expired, and freed by the leader when their
//! node is dead.

use std::time::Duration;

use youops_core::model::RequestId;
use youops_store_postgres::coord::LostReason;

use crate::support::{cluster, join, leads_within, node, open};

const TTL: Duration = Duration::from_secs(3);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn op_locks_are_exclusive_renewed_released_and_taken_over_when_expired() {
    let cluster = cluster();
    let url = cluster.create_database();
    let (sa, sb, sc) = (open(&url).await, open(&url).await, open(&url).await);
    let a = join(&sa, "a").await;
    let b = join(&sb, "b").await;
    let (r1, r2, r3) = (RequestId::new(), RequestId::new(), RequestId::new());

    assert!(a.try_lock("k", r1, TTL).await.unwrap());
    assert!(!b.try_lock("k", r2, TTL).await.unwrap(), "held by a");
    assert!(
        !a.try_lock("k", r3, TTL).await.unwrap(),
        "held by another request"
    );
    assert!(a.try_lock("k", r1, TTL).await.unwrap(), "the holder again");
    let rows = b.locks().await.unwrap();
    assert_eq!(rows.len(), 1);
    let row = &rows[0];
    assert_eq!(
        (
            row.key.as_str(),
            row.request_id,
            &row.holder,
            row.holder_incarnation,
            row.expired
        ),
        ("k", r1, &node("a"), 1, false)
    );
    assert!(row.expires_at > row.acquired_at);

    // Renewed in the background: still a's after twice the TTL.
    let lost = a.lock_lost("k").expect("a holds k");
    tokio::time::sleep(TTL * 2).await;
    assert!(!b.try_lock("k", r2, TTL).await.unwrap(), "renewed by a");
    assert!(!lost.is_cancelled());
    let renewal = a.renew_locks().await;
    assert_eq!(renewal.renewed, ["k"]);
    assert!(renewal.lost.is_empty() && renewal.error.is_none());

    // Released: its token ends, and b takes it.
    assert!(a.unlock("k", r1).await.unwrap());
    assert!(lost.is_cancelled());
    assert!(a.lock_lost("k").is_none());
    assert!(!a.unlock("k", r1).await.unwrap(), "released already");
    assert!(b.try_lock("k", r2, TTL).await.unwrap());

    // A holder that stops renewing (shut down): its lock is taken over only
    // once expired by the database clock.
    let c = join(&sc, "c").await;
    let r4 = RequestId::new();
    assert!(c.try_lock("k2", r4, TTL).await.unwrap());
    let c_lost = c.lock_lost("k2").unwrap();
    c.shutdown();
    let stopped = tokio::time::Instant::now();
    tokio::time::timeout(Duration::from_secs(5), c_lost.cancelled())
        .await
        .expect("a shut-down coordinator's holds end");
    let r5 = RequestId::new();
    loop {
        if a.try_lock("k2", r5, TTL).await.unwrap() {
            break;
        }
        assert!(
            stopped.elapsed() < TTL + Duration::from_secs(10),
            "the expired lock was never taken over"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        stopped.elapsed() >= TTL - Duration::from_secs(1),
        "taken over before its lease could have expired ({:?})",
        stopped.elapsed()
    );
    let rows = b.locks().await.unwrap();
    let k2 = rows.iter().find(|r| r.key == "k2").unwrap();
    assert_eq!((k2.request_id, &k2.holder), (r5, &node("a")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_frees_the_locks_of_a_fenced_node() {
    let cluster = cluster();
    let url = cluster.create_database();
    let (sa, sb) = (open(&url).await, open(&url).await);
    let a = join(&sa, "a").await;
    let b = join(&sb, "b").await;
    let (r1, r2, r3) = (RequestId::new(), RequestId::new(), RequestId::new());
    assert!(a.try_lock("k1", r1, TTL).await.unwrap());
    assert!(a.try_lock("k2", r2, TTL).await.unwrap());
    let lost = a.lock_lost("k1").unwrap();
    let campaign = b.campaign(TTL, Duration::from_secs(1)).unwrap();
    let epoch = leads_within(&campaign.leadership(), 10).await;

    let err = b
        .free_locks_of(epoch, &node("a"), 1)
        .await
        .expect_err("a is alive");
    assert!(
        err.to_string().contains("neither fenced nor superseded"),
        "{err}"
    );
    let err = a
        .free_locks_of(epoch, &node("a"), 1)
        .await
        .expect_err("a does not lead");
    assert!(youops_store_postgres::coord::is_fenced(&err), "{err}");

    assert!(b.fence_node(epoch, &node("a"), 1).await.unwrap());
    assert_eq!(b.free_locks_of(epoch, &node("a"), 1).await.unwrap(), 2);
    assert!(b.try_lock("k1", r3, TTL).await.unwrap(), "freed");
    // a learns it lost them: its renewal finds them gone.
    let renewal = a.renew_locks().await;
    let mut gone: Vec<(String, LostReason)> = renewal
        .lost
        .iter()
        .map(|l| (l.key.clone(), l.reason))
        .collect();
    gone.sort_by(|x, y| x.0.cmp(&y.0));
    if lost.is_cancelled() && gone.is_empty() {
        // The background renewal got there first.
    } else {
        assert_eq!(
            gone,
            [
                ("k1".to_string(), LostReason::Gone),
                ("k2".to_string(), LostReason::Gone)
            ]
        );
    }
    assert!(lost.is_cancelled());
    assert!(a.lock_lost("k2").is_none());
}
