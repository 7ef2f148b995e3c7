//! `events` partitioned by seq (schema version 3), with a span of ten seqs:
//! partitions are there before appends need them (a group larger than a
//! span included) and made ahead of the tip; retention drops the partitions
//! it archived whole and deletes row by row only in the one it archived in
//! part; a reader holding the table does not hold retention up, whose
//! emptied partitions a later archive drops; the chain verifies across the
//! archives throughout and keeps growing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use youops_core::audit::{archive_files, verify_with_archives, AppendOptions, AuditStore};
use youops_core::model::{NewEvent, State};
use youops_store_postgres::{PgOptions, PgStore};

use crate::support::{admin, all_events, cluster, notice, received, request, to};

const SPAN: u64 = 10;

/// The partitions of `events`: `(name, lo, hi)`, lowest first.
async fn partitions(c: &tokio_postgres::Client) -> Vec<(String, u64, u64)> {
    c.query(
        r"SELECT c.relname::text,
                 substring(pg_get_expr(c.relpartbound, c.oid) FROM 'FROM \(''([0-9]+)''\)')::bigint,
                 substring(pg_get_expr(c.relpartbound, c.oid) FROM 'TO \(''([0-9]+)''\)')::bigint
          FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
          WHERE i.inhparent = 'events'::regclass ORDER BY 2",
        &[],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| {
        let (lo, hi): (i64, i64) = (r.get(1), r.get(2));
        (r.get(0), lo as u64, hi as u64)
    })
    .collect()
}

async fn count(c: &tokio_postgres::Client, sql: &str) -> i64 {
    c.query_one(sql, &[]).await.unwrap().get(0)
}

async fn notices(store: &PgStore, n: usize) {
    for i in 0..n {
        store
            .append(vec![notice(format!("n{i}"))], AppendOptions::durable())
            .await
            .unwrap();
    }
}

/// The chain verifies, alone and across the archives in `dir`.
async fn verifies(store: &Arc<PgStore>, dir: &std::path::Path) {
    let v = store.verify().await.unwrap();
    assert!(v.ok(), "{v:?}");
    let files = archive_files(dir).unwrap();
    let all = verify_with_archives(&**store as &dyn AuditStore, &files)
        .await
        .unwrap();
    assert!(all.report.ok(), "{:?}", all.report);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_drops_whole_partitions_and_the_chain_goes_on() {
    let cluster = cluster();
    let url = cluster.create_database();
    let store = Arc::new(
        PgStore::open_with_partition_span(&url, PgOptions::default(), SPAN)
            .await
            .unwrap(),
    );
    let c = admin(&url).await;
    // A new database: the version-2 table, empty, became seqs 0..1; the
    // next span is made on open.
    assert_eq!(
        partitions(&c).await,
        [("events_p0".into(), 0, 1), ("events_p1".into(), 1, 11)]
    );

    // One at a time, a request, then one append larger than two spans (its
    // group makes what it needs).
    notices(&store, 12).await;
    let r = request("ops.done");
    store
        .append(
            vec![received(&r), to(r.id, State::Succeeded)],
            AppendOptions::durable(),
        )
        .await
        .unwrap();
    let big: Vec<NewEvent> = (0..25).map(|i| notice(format!("big {i}"))).collect();
    store.append(big, AppendOptions::durable()).await.unwrap();
    notices(&store, 10).await;
    let tip = store.head().await.unwrap().0;
    assert_eq!(tip, 49);
    assert_eq!(count(&c, "SELECT count(*) FROM events").await, 49);

    // Made ahead: a whole span past the tip, without gaps.
    let deadline = Instant::now() + Duration::from_secs(10);
    let parts = loop {
        let parts = partitions(&c).await;
        if parts.last().unwrap().2 > tip + SPAN {
            break parts;
        }
        assert!(Instant::now() < deadline, "not made ahead: {parts:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(parts.windows(2).all(|w| w[0].2 == w[1].1), "{parts:?}");

    // Archive through #34: the partitions up to #30 go whole, #31..=#34 are
    // deleted from the next one.
    let dir = tempfile::tempdir().unwrap();
    let first = store
        .archive(34, dir.path())
        .await
        .unwrap()
        .expect("archived");
    assert_eq!((first.first_seq, first.through_seq), (1, 34));
    let parts = partitions(&c).await;
    assert_eq!(parts[0], ("events_p31".into(), 31, 41), "{parts:?}");
    for gone in ["events_p0", "events_p1", "events_p11", "events_p21"] {
        let n = count(
            &c,
            &format!("SELECT count(*) FROM pg_class WHERE relname = '{gone}'"),
        )
        .await;
        assert_eq!(n, 0, "{gone} dropped");
    }
    assert_eq!(count(&c, "SELECT count(*) FROM ONLY events_p31").await, 6);
    assert_eq!(store.archived_events(0, 100).await.unwrap().len(), 34);
    assert_eq!(all_events(&*store).await[0].seq, 35);
    assert!(
        store.request(r.id).await.unwrap().is_none(),
        "record removed"
    );
    verifies(&store, dir.path()).await;

    // A reader holds the table: the drop gives up after a second, the rows
    // go one by one and the emptied partitions stay.
    notices(&store, 15).await;
    let reader = admin(&url).await;
    reader
        .batch_execute("BEGIN; SELECT count(*) FROM events")
        .await
        .unwrap();
    let started = Instant::now();
    let second = store
        .archive(52, dir.path())
        .await
        .unwrap()
        .expect("archived");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!((second.first_seq, second.through_seq), (35, 52));
    let parts = partitions(&c).await;
    assert_eq!(parts[0].1, 31, "kept while read: {parts:?}");
    assert_eq!(
        count(&c, "SELECT count(*) FROM events WHERE seq <= 52").await,
        0
    );
    reader.batch_execute("COMMIT").await.unwrap();
    verifies(&store, dir.path()).await;

    // The next archive drops them, and appends go on.
    notices(&store, 10).await;
    let third = store
        .archive(70, dir.path())
        .await
        .unwrap()
        .expect("archived");
    assert_eq!(third.through_seq, 70);
    let parts = partitions(&c).await;
    assert_eq!(parts[0], ("events_p71".into(), 71, 81), "{parts:?}");
    assert_eq!(store.archived_events(0, 100).await.unwrap().len(), 70);
    notices(&store, 3).await;
    verifies(&store, dir.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_dropped_by_hand_are_made_again_by_the_next_group() {
    let cluster = cluster();
    let url = cluster.create_database();
    let store = PgStore::open_with_partition_span(&url, PgOptions::default(), SPAN)
        .await
        .unwrap();
    let c = admin(&url).await;
    // The tip at the end of a partition: the next seq starts another.
    notices(&store, SPAN as usize).await;
    let tip = store.head().await.unwrap().0;
    assert_eq!(tip, SPAN);

    // Someone drops the partitions made ahead of the tip, which the store
    // knows to exist: its next insert finds none for its seq.
    // (Once the store's keeper made them, after the last commit.)
    let deadline = Instant::now() + Duration::from_secs(10);
    let ahead: Vec<String> = loop {
        let ahead: Vec<String> = partitions(&c)
            .await
            .into_iter()
            .filter(|p| p.1 > tip)
            .map(|p| p.0)
            .collect();
        if !ahead.is_empty() {
            break ahead;
        }
        assert!(Instant::now() < deadline, "nothing made ahead of #{tip}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    for name in &ahead {
        c.batch_execute(&format!("DROP TABLE {name}"))
            .await
            .unwrap();
    }
    let parts = partitions(&c).await;
    assert!(
        parts.iter().all(|p| p.2 <= tip + 1),
        "#{} has no partition: {parts:?}",
        tip + 1
    );

    // The group that finds no partition forgets what it knew and runs
    // again, making it: the caller sees a plain success.
    let got = store
        .append(vec![notice("after the drop")], AppendOptions::durable())
        .await
        .expect("an append after its partition was dropped");
    assert_eq!(got[0].seq, tip + 1);
    notices(&store, SPAN as usize).await;
    assert_eq!(store.head().await.unwrap().0, tip + 1 + SPAN);
    let v = store.verify().await.unwrap();
    assert!(v.ok(), "{v:?}");
}
