//! Leader election by the `leader` lease: one leader at a time among three
//! nodes, epochs that only grow, another node taking over when the leader
//! stops (within the TTL when it simply vanishes, at once when it resigns),
//! and writes fenced by the epoch.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use youops_core::audit::StoreError;
use youops_core::cluster::Leadership;
use youops_store_postgres::coord::{is_fenced, Campaign, Coordinator};

use crate::support::{cluster, join, leads_within, open};

const TTL: Duration = Duration::from_secs(2);
const MARGIN: Duration = Duration::from_millis(500);

/// The index and epoch of the one leader among `ls` (panics if several).
fn leader(ls: &[Option<Leadership>]) -> Option<(usize, u64)> {
    let leading: Vec<(usize, u64)> = ls
        .iter()
        .enumerate()
        .filter_map(|(i, l)| Some((i, l.as_ref()?.current()?.epoch)))
        .collect();
    assert!(leading.len() <= 1, "several leaders at once: {leading:?}");
    leading.first().copied()
}

/// Wait until a leader other than `not` leads (at most `secs`).
async fn next_leader(ls: &[Option<Leadership>], not: Option<usize>, secs: u64) -> (usize, u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some((i, e)) = leader(ls) {
            if Some(i) != not {
                return (i, e);
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no new leader within {secs}s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A probe that samples every leadership every 5 ms and records the most
/// leaders seen at once and every epoch seen, in order.
fn watch_leaders(
    ls: Vec<Leadership>,
    done: Arc<AtomicBool>,
) -> (Arc<AtomicUsize>, Arc<Mutex<Vec<u64>>>) {
    let most = Arc::new(AtomicUsize::new(0));
    let epochs = Arc::new(Mutex::new(Vec::new()));
    let (m, e) = (Arc::clone(&most), Arc::clone(&epochs));
    tokio::spawn(async move {
        while !done.load(Ordering::SeqCst) {
            let now: Vec<u64> = ls.iter().filter_map(|l| Some(l.current()?.epoch)).collect();
            m.fetch_max(now.len(), Ordering::SeqCst);
            {
                let mut seen = e.lock().unwrap();
                for epoch in now {
                    if seen.last() != Some(&epoch) {
                        seen.push(epoch);
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    (most, epochs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leader_at_a_time_and_another_takes_over() {
    let cluster = cluster();
    let url = cluster.create_database();
    let mut coords: Vec<Coordinator> = Vec::new();
    for name in ["n0", "n1", "n2"] {
        let store = open(&url).await;
        coords.push(join(&store, name).await);
    }
    let mut campaigns: Vec<Option<Campaign>> = coords
        .iter()
        .map(|c| Some(c.campaign(TTL, MARGIN).unwrap()))
        .collect();
    let ls = |cs: &[Option<Campaign>]| -> Vec<Option<Leadership>> {
        cs.iter()
            .map(|c| c.as_ref().map(Campaign::leadership))
            .collect()
    };
    let done = Arc::new(AtomicBool::new(false));
    let all: Vec<Leadership> = campaigns
        .iter()
        .flatten()
        .map(Campaign::leadership)
        .collect();
    let (most, epochs) = watch_leaders(all, Arc::clone(&done));

    let (first, e1) = next_leader(&ls(&campaigns), None, 10).await;
    // The lease is renewed: the same leader, the same epoch, for several TTLs.
    tokio::time::sleep(TTL * 2).await;
    assert_eq!(leader(&ls(&campaigns)), Some((first, e1)), "renewed");

    // Leader-only writes: the leader's pass, a follower's under the same
    // epoch are refused.
    let wrote = coords[first]
        .fenced_write(e1, async |tx| {
            tx.execute("SELECT 1", &[])
                .await
                .map_err(|e| StoreError::Io(e.to_string()))
        })
        .await;
    assert!(wrote.is_ok(), "{wrote:?}");
    let follower = (first + 1) % 3;
    let err = coords[follower]
        .fenced_write(e1, async |_| Ok(()))
        .await
        .expect_err("a follower's write is fenced");
    assert!(is_fenced(&err), "{err}");
    // The leader's state: saved by the leader, never by a follower.
    assert_eq!(coords[follower].load_state("git").await.unwrap(), None);
    coords[first].save_state(e1, "git", b"one").await.unwrap();
    let err = coords[follower]
        .save_state(e1, "git", b"not mine")
        .await
        .expect_err("a follower's save is fenced");
    assert!(is_fenced(&err), "{err}");

    // The leader vanishes (its campaign dropped, the lease left to expire):
    // another takes over within the TTL and a few renewal periods.
    let gone = tokio::time::Instant::now();
    campaigns[first] = None;
    let (second, e2) = next_leader(&ls(&campaigns), Some(first), 2 * TTL.as_secs() + 5).await;
    let took = gone.elapsed();
    assert!(e2 > e1, "epochs grow: {e1} then {e2}");
    assert!(
        took <= TTL + Duration::from_secs(5),
        "took over after {took:?}"
    );
    let err = coords[first]
        .fenced_write(e1, async |_| Ok(()))
        .await
        .expect_err("the old epoch is fenced");
    assert!(is_fenced(&err), "{err}");
    // The next leader goes on from what the last one saved; the deposed
    // one can no longer overwrite it.
    assert_eq!(
        coords[second].load_state("git").await.unwrap().as_deref(),
        Some(&b"one"[..])
    );
    let err = coords[first]
        .save_state(e1, "git", b"stale")
        .await
        .expect_err("a deposed leader's save is fenced");
    assert!(is_fenced(&err), "{err}");
    coords[second].save_state(e2, "git", b"two").await.unwrap();
    assert_eq!(
        coords[first].load_state("git").await.unwrap().as_deref(),
        Some(&b"two"[..])
    );

    // The second resigns: the third takes over without waiting for the TTL.
    let resigned = tokio::time::Instant::now();
    let c = campaigns[second].take().unwrap();
    c.resign().await.unwrap();
    let (third, e3) = next_leader(&ls(&campaigns), Some(second), 10).await;
    assert!(third != first && third != second);
    assert!(e3 > e2, "epochs grow: {e2} then {e3}");
    assert!(
        resigned.elapsed() < TTL,
        "a resigned lease is taken at once, not after its TTL ({:?})",
        resigned.elapsed()
    );

    done.store(true, Ordering::SeqCst);
    assert_eq!(most.load(Ordering::SeqCst), 1, "never two leaders at once");
    let seen = epochs.lock().unwrap().clone();
    assert!(
        seen.windows(2).all(|w| w[0] < w[1]),
        "epochs only grow: {seen:?}"
    );
    // The probe samples: it may miss a short term, never see another.
    assert!(
        seen.iter().all(|e| [e1, e2, e3].contains(e)) && seen.contains(&e1),
        "{seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shut_down_coordinator_stops_leading_and_its_leadership_ends() {
    let cluster = cluster();
    let url = cluster.create_database();
    let (sa, sb) = (open(&url).await, open(&url).await);
    let a = join(&sa, "a").await;
    let ca = a.campaign(TTL, MARGIN).unwrap();
    let la = ca.leadership();
    let e1 = leads_within(&la, 10).await;
    let b = join(&sb, "b").await;
    let cb = b.campaign(TTL, MARGIN).unwrap();
    tokio::time::sleep(TTL).await;
    assert!(!cb.leadership().is_leader());

    let term = la.current().expect("a leads");
    a.shutdown();
    let mut ended = la.clone();
    tokio::time::timeout(Duration::from_secs(5), ended.ended(term))
        .await
        .expect("a stops leading with its coordinator");
    let end = tokio::time::timeout(Duration::from_secs(5), ended.acquired())
        .await
        .expect("the campaign stops with its coordinator");
    assert!(end.is_none(), "leadership ends for good");
    let e2 = leads_within(&cb.leadership(), 2 * TTL.as_secs() + 5).await;
    assert!(e2 > e1);
    assert!(
        TTL > MARGIN && !la.is_leader(),
        "a stopped at once, b only after the lease expired"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_row_names_the_holder_and_its_epoch() {
    let cluster = cluster();
    let url = cluster.create_database();
    let store = open(&url).await;
    let a = join(&store, "a").await;
    assert_eq!(a.leader().await.unwrap(), None, "nobody ever held it");

    let campaign = a.campaign(TTL, MARGIN).unwrap();
    let epoch = leads_within(&campaign.leadership(), 10).await;
    let row = a.leader().await.unwrap().expect("a leader row");
    assert_eq!(row.holder.as_str(), "a");
    assert_eq!(row.holder_incarnation, a.incarnation());
    assert_eq!(row.epoch, epoch);
    assert!(!row.expired, "{row:?}");
    assert!(row.expires_at > chrono::Utc::now() - chrono::Duration::seconds(60));

    // Resigned: the row still names its last holder, expired.
    campaign.resign().await.unwrap();
    let row = a.leader().await.unwrap().expect("the last holder");
    assert_eq!((row.holder.as_str(), row.epoch), ("a", epoch));
    assert!(row.expired, "{row:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_append_holds_only_under_the_lease_it_names() {
    use youops_core::audit::{AppendOptions, AuditStore};
    let pg = cluster();
    let url = pg.create_database();
    let store = open(&url).await;
    let a = join(&store, "a").await;
    let campaign = a.campaign(TTL, MARGIN).unwrap();
    let epoch = leads_within(&campaign.leadership(), 10).await;
    let write = |epoch: u64| {
        let store = Arc::clone(&store);
        async move {
            store
                .append(
                    vec![crate::support::notice("leader work")],
                    AppendOptions::durable().leader_epoch(epoch),
                )
                .await
        }
    };
    write(epoch)
        .await
        .expect("the leader's write under its epoch");
    let head = store.head().await.unwrap().0;
    let refused = write(epoch + 1).await.unwrap_err();
    assert!(is_fenced(&refused), "{refused}");
    campaign.resign().await.unwrap();
    let refused = write(epoch).await.unwrap_err();
    assert!(is_fenced(&refused), "after resigning: {refused}");
    assert_eq!(
        store.head().await.unwrap().0,
        head,
        "refused writes wrote nothing"
    );
    // A store that is no node of a cluster holds no lease.
    let plain = open(&url).await;
    let refused = plain
        .append(
            vec![crate::support::notice("x")],
            AppendOptions::durable().leader_epoch(epoch),
        )
        .await
        .unwrap_err();
    assert!(is_fenced(&refused), "{refused}");
}
