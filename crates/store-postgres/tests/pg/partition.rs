//! A node cut off the database (its socket proxy blackholed: nothing
//! answers, nothing closes) stops acting on its own deadline before any
//! other node can start: a leader demotes itself before the next leader is
//! elected, a lock holder learns its lock is lost before another node can
//! take the key, and the old leader's fenced writes are refused once it can
//! talk again.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use youops_core::model::RequestId;
use youops_store_postgres::coord::is_fenced;
use youops_store_postgres::PgStore;
use youops_testkit::sockproxy::SockProxy;

use crate::support::{cluster, db_name, join, leads_within, open};

const TTL: Duration = Duration::from_secs(3);
const MARGIN: Duration = Duration::from_secs(1);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_stops_leading_before_another_starts() {
    let cluster = cluster();
    let url = cluster.create_database();
    let proxy = SockProxy::start(&cluster.socket_dir());
    let via_proxy: Arc<PgStore> = open(&proxy.url(&db_name(&url))).await;
    let a = join(&via_proxy, "a").await;
    let campaign_a = a.campaign(TTL, MARGIN).unwrap();
    let la = campaign_a.leadership();
    let epoch_a = leads_within(&la, 10).await;

    let direct = open(&url).await;
    let b = join(&direct, "b").await;
    let campaign_b = b.campaign(TTL, MARGIN).unwrap();
    let lb = campaign_b.leadership();
    tokio::time::sleep(TTL).await;
    assert_eq!(la.current().map(|t| t.epoch), Some(epoch_a), "a renews");
    assert!(!lb.is_leader(), "b follows");

    // When each side changed, by the monotonic clock.
    let a_stopped: Arc<Mutex<Option<Instant>>> = Arc::default();
    let b_started: Arc<Mutex<Option<(Instant, u64)>>> = Arc::default();
    let watch_a = tokio::spawn({
        let (mut la, at) = (la.clone(), Arc::clone(&a_stopped));
        let term = la.current().unwrap();
        async move {
            la.ended(term).await;
            *at.lock().unwrap() = Some(Instant::now());
        }
    });
    let watch_b = tokio::spawn({
        let (mut lb, at) = (lb.clone(), Arc::clone(&b_started));
        async move {
            let term = lb.acquired().await.expect("b's campaign runs");
            *at.lock().unwrap() = Some((Instant::now(), term.epoch));
        }
    });

    let cut = Instant::now();
    proxy.blackhole();
    tokio::time::timeout(Duration::from_secs(30), watch_b)
        .await
        .expect("b leads within 30 s")
        .unwrap();
    tokio::time::timeout(Duration::from_secs(5), watch_a)
        .await
        .expect("a stopped")
        .unwrap();
    let stopped = a_stopped.lock().unwrap().unwrap();
    let (started, epoch_b) = b_started.lock().unwrap().unwrap();
    println!(
        "cut at 0: a stopped leading at {:?}, b led (epoch {epoch_b}) at {:?}",
        stopped - cut,
        started - cut
    );
    assert!(
        stopped < started,
        "a stopped {:?} after the cut, b started {:?} after it",
        stopped - cut,
        started - cut
    );
    assert!(
        stopped - cut <= TTL - MARGIN + Duration::from_millis(500),
        "a stops on its own deadline, without any answer: {:?}",
        stopped - cut
    );
    assert!(epoch_b > epoch_a, "{epoch_a} then {epoch_b}");
    assert!(!la.is_leader());

    // Back on the network: the old epoch's writes are refused, and b keeps
    // the lease.
    proxy.heal();
    let err = a
        .fenced_write(epoch_a, async |_| Ok(()))
        .await
        .expect_err("the old leader's write is fenced");
    assert!(is_fenced(&err), "{err}");
    b.fenced_write(epoch_b, async |_| Ok(()))
        .await
        .expect("the new leader writes");
    tokio::time::sleep(TTL).await;
    assert!(!la.is_leader());
    assert_eq!(lb.current().map(|t| t.epoch), Some(epoch_b));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_holder_cut_off_learns_it_lost_the_lock_before_another_takes_it() {
    let cluster = cluster();
    let url = cluster.create_database();
    let proxy = SockProxy::start(&cluster.socket_dir());
    let via_proxy = open(&proxy.url(&db_name(&url))).await;
    let a = join(&via_proxy, "a").await;
    let direct = open(&url).await;
    let b = join(&direct, "b").await;
    let (ra, rb) = (RequestId::new(), RequestId::new());
    assert!(a.try_lock("k", ra, TTL).await.unwrap());
    let lost = a.lock_lost("k").unwrap();
    tokio::time::sleep(TTL).await;
    assert!(!lost.is_cancelled(), "renewed while connected");

    let cut = Instant::now();
    proxy.blackhole();
    let watch_a = tokio::spawn(async move {
        lost.cancelled().await;
        Instant::now()
    });
    let took = loop {
        if b.try_lock("k", rb, TTL).await.unwrap() {
            break Instant::now();
        }
        assert!(cut.elapsed() < Duration::from_secs(30), "b never took k");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let learned = tokio::time::timeout(Duration::from_secs(5), watch_a)
        .await
        .expect("a learns it lost k")
        .unwrap();
    println!(
        "cut at 0: a learned it lost k at {:?}, b took k at {:?}",
        learned - cut,
        took - cut
    );
    assert!(
        learned < took,
        "a learned {:?} after the cut, b took k {:?} after it",
        learned - cut,
        took - cut
    );
    assert!(
        learned - cut <= TTL - MARGIN + Duration::from_millis(500),
        "on a's own deadline: {:?}",
        learned - cut
    );
    assert!(a.lock_lost("k").is_none());
    proxy.heal();
    let rows = b.locks().await.unwrap();
    assert_eq!((rows[0].request_id, rows[0].holder.as_str()), (rb, "b"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_forwards_holds_and_heals() {
    let cluster = cluster();
    let url = cluster.create_database();
    let proxy = SockProxy::start(&cluster.socket_dir());
    let c = crate::support::admin(&proxy.url(&db_name(&url))).await;
    let one: i32 = c.query_one("SELECT 1", &[]).await.unwrap().get(0);
    assert_eq!(one, 1);
    proxy.blackhole();
    assert!(!proxy.is_open());
    let q = tokio::spawn(async move {
        let r: i32 = c.query_one("SELECT 2", &[]).await.unwrap().get(0);
        r
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!q.is_finished(), "no answer through a blackhole");
    // A new connection is accepted but goes nowhere.
    let connecting = tokio::spawn({
        let u = proxy.url(&db_name(&url));
        async move { crate::support::admin(&u).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!connecting.is_finished());
    proxy.heal();
    let two = tokio::time::timeout(Duration::from_secs(10), q)
        .await
        .expect("answered after heal")
        .unwrap();
    assert_eq!(two, 2);
    let c2 = tokio::time::timeout(Duration::from_secs(10), connecting)
        .await
        .expect("connected after heal")
        .unwrap();
    c2.query_one("SELECT 1", &[]).await.unwrap();
    drop(proxy);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        c2.query_one("SELECT 1", &[]).await.is_err(),
        "closed with the proxy"
    );
}
