//! Migrations: nodes opening an empty database at once migrate it once; a
//! database whose schema is newer than the code is refused; databases made
//! at versions 1 and 2 migrate keeping their chain, version 3 turning
//! `events` into a partitioned table while a version-2 node runs on; a
//! migration that changes what a prepared statement returns costs a node's
//! writer one new connection, not a failed append.

use std::sync::Arc;

use youops_core::audit::{archive_files, verify_with_archives, AppendOptions, AuditStore};
use youops_core::model::{AuditEvent, State};
use youops_store_postgres::{PgOptions, PgStore, SCHEMA_VERSION};

use crate::support::{admin, all_events, cluster, join, notice, open, received, request, to};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_starting_together_migrate_once_and_a_newer_schema_is_refused() {
    let cluster = cluster();
    let url = cluster.create_database();
    let opens: Vec<_> = (0..3)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { PgStore::open(&url, PgOptions::default()).await })
        })
        .collect();
    for o in opens {
        o.await.unwrap().expect("every node opens");
    }
    let c = admin(&url).await;
    let versions: Vec<i32> = c
        .query(
            "SELECT version FROM schema_migrations ORDER BY version",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(versions, (1..=SCHEMA_VERSION).collect::<Vec<_>>());
    let tips: i64 = c
        .query_one("SELECT count(*) FROM tip", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(tips, 1, "the tip row was made once");

    // A node of a newer version migrated further: this one refuses.
    c.execute(
        "INSERT INTO schema_migrations (version) VALUES ($1)",
        &[&(SCHEMA_VERSION + 1)],
    )
    .await
    .unwrap();
    let err = PgStore::open(&url, PgOptions::default())
        .await
        .expect_err("a newer schema is refused");
    let text = err.to_string();
    assert!(
        text.contains(&format!("version {}", SCHEMA_VERSION + 1)),
        "{text}"
    );
    assert!(text.contains("newer"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_1_database_is_migrated_keeping_its_chain() {
    let cluster = cluster();
    let url = cluster.create_database();
    let store = Arc::new(
        PgStore::open_at_schema(&url, PgOptions::default(), 1)
            .await
            .unwrap(),
    );
    store
        .append(vec![notice("at version 1")], AppendOptions::durable())
        .await
        .unwrap();
    let chain = all_events(&*store).await;
    drop(store);

    let store = open(&url).await;
    let c = admin(&url).await;
    assert_eq!(versions(&c).await, (1..=SCHEMA_VERSION).collect::<Vec<_>>());
    assert_eq!(all_events(&*store).await, chain);
    let a = join(&store, "a").await;
    assert_eq!(a.incarnation(), 1);
    store
        .append(vec![notice("at version 4")], AppendOptions::durable())
        .await
        .unwrap();
    assert!(store.verify().await.unwrap().ok());
    assert_eq!(SCHEMA_VERSION, 4);
}

/// Each event's `(seq, hash)`, by seq.
fn seqs(events: &[AuditEvent]) -> Vec<(u64, String)> {
    events.iter().map(|e| (e.seq, e.hash.clone())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_2_database_with_events_is_partitioned_by_the_migration_to_3() {
    let cluster = cluster();
    let url = cluster.create_database();
    let old = Arc::new(
        PgStore::open_at_schema(&url, PgOptions::default(), 2)
            .await
            .unwrap(),
    );
    let mut requests = Vec::new();
    for i in 0..6 {
        let r = request("ops.v2");
        let last = if i % 2 == 0 {
            State::Succeeded
        } else {
            State::Running
        };
        old.append(vec![received(&r), to(r.id, last)], AppendOptions::durable())
            .await
            .unwrap();
        requests.push(r);
    }
    // Archived at version 2: the archive table and a checkpoint in `events`.
    let dir = tempfile::tempdir().unwrap();
    let first = old.archive(2, dir.path()).await.unwrap().expect("archived");
    old.append(vec![notice("last at version 2")], AppendOptions::durable())
        .await
        .unwrap();
    let chain = all_events(&*old).await;
    let c = admin(&url).await;
    assert_eq!(
        relkind(&c, "events").await,
        "r",
        "a plain table at version 2"
    );

    // A node of this version migrates (through 3), while the version-2
    // node runs on.
    let new = open(&url).await;
    assert_eq!(versions(&c).await, (1..=SCHEMA_VERSION).collect::<Vec<_>>());
    assert_eq!(relkind(&c, "events").await, "p", "partitioned");
    let bound: String = c
        .query_one(
            "SELECT pg_get_expr(c.relpartbound, c.oid) FROM pg_class c
             JOIN pg_inherits i ON i.inhrelid = c.oid
             WHERE c.relname = 'events_p0' AND i.inhparent = 'events'::regclass",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let tip = chain.last().unwrap().seq;
    assert_eq!(bound, format!("FOR VALUES FROM ('0') TO ('{}')", tip + 1));
    let kept: i64 = c
        .query_one("SELECT count(*) FROM ONLY events_p0", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        kept as usize,
        chain.len(),
        "every row kept, in the first partition"
    );
    // The indexes: the parent's, each with the old table's index attached.
    let indexes: Vec<(String, String)> = c
        .query(
            "SELECT p.relname::text, c.relname::text FROM pg_inherits i
             JOIN pg_class p ON p.oid = i.inhparent JOIN pg_class c ON c.oid = i.inhrelid
             WHERE p.relkind = 'I' AND c.relname LIKE 'events_p0%' ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let expected = [
        ("events_by_request", "events_p0_by_request"),
        ("events_checkpoints", "events_p0_checkpoints"),
        ("events_pkey", "events_p0_pkey"),
    ];
    assert_eq!(
        indexes,
        expected.map(|(a, b)| (a.to_string(), b.to_string()))
    );

    // Both versions read the same chain, verify it, and append to it (the
    // old one into the partitions the new one made ahead).
    for store in [&old, &new] {
        assert_eq!(seqs(&all_events(&**store).await), seqs(&chain));
        assert!(store.verify().await.unwrap().ok());
    }
    let r = &requests[1];
    assert_eq!(new.request_events(r.id).await.unwrap().len(), 2);
    assert_eq!(
        new.request(r.id).await.unwrap().unwrap().state,
        State::Running
    );
    old.append(vec![to(r.id, State::Succeeded)], AppendOptions::durable())
        .await
        .unwrap();
    new.append(vec![notice("at version 3")], AppendOptions::durable())
        .await
        .unwrap();
    let v = new.verify().await.unwrap();
    assert!(v.ok() && v.head_seq == tip + 2, "{v:?}");
    assert!(new.size_on_disk().await.unwrap() > 0);
    let files = archive_files(dir.path()).unwrap();
    let whole = verify_with_archives(&*new as &dyn AuditStore, &files)
        .await
        .unwrap();
    assert!(whole.report.ok() && whole.archived == first.through_seq);

    // The version-3 node archives on: the first partition goes whole.
    for r in [&requests[3], &requests[5]] {
        new.append(vec![to(r.id, State::Succeeded)], AppendOptions::durable())
            .await
            .unwrap();
    }
    let report = new
        .archive(u64::MAX, dir.path())
        .await
        .unwrap()
        .expect("archived");
    assert!(report.through_seq > tip, "{report:?}");
    assert!(relkind_opt(&c, "events_p0").await.is_none(), "dropped");
    assert!(new.verify().await.unwrap().ok());
}

async fn versions(c: &tokio_postgres::Client) -> Vec<i32> {
    c.query(
        "SELECT version FROM schema_migrations ORDER BY version",
        &[],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

async fn relkind_opt(c: &tokio_postgres::Client, table: &str) -> Option<String> {
    c.query_opt(
        "SELECT relkind::text FROM pg_class WHERE relname = $1",
        &[&table],
    )
    .await
    .unwrap()
    .map(|r| r.get(0))
}

async fn relkind(c: &tokio_postgres::Client, table: &str) -> String {
    relkind_opt(c, table).await.expect("the table exists")
}

/// A newer node's migration changes columns' types under a running node,
/// whose writer and reads prepared their statements before: the server
/// refuses their cached plans, and they are prepared anew (the writer's on
/// a new connection).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migration_that_changes_a_result_type_fails_no_append_nor_read() {
    let cluster = cluster();
    let url = cluster.create_database();
    let store = open(&url).await;
    let r = request("ops.read");
    store
        .append(vec![received(&r)], AppendOptions::durable())
        .await
        .unwrap();
    assert!(store.request(r.id).await.unwrap().is_some());
    let c = admin(&url).await;
    c.batch_execute(
        "ALTER TABLE tip ALTER COLUMN hash TYPE varchar(64);
         ALTER TABLE requests ALTER COLUMN record TYPE varchar",
    )
    .await
    .unwrap();
    let got = store
        .append(vec![notice("after")], AppendOptions::durable())
        .await
        .expect("an append after the column's type changed");
    assert_eq!(got[0].seq, 2);
    let record = store
        .request(r.id)
        .await
        .expect("a read after the column's type changed");
    assert_eq!(
        record.map(|r| r.request.op.clone()),
        Some("ops.read".to_string())
    );
    let chain = all_events(&*store).await;
    assert_eq!(chain.len(), 2, "{chain:?}");
    let v = store.verify().await.unwrap();
    assert!(v.ok(), "{v:?}");
}
