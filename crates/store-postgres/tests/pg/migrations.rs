//! Migrations: nodes opening an empty database at once migrate it once; a
//! database whose schema is newer than the code is refused.

use youops_store_postgres::{PgOptions, PgStore, SCHEMA_VERSION};

use crate::support::{admin, cluster};

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
async fn a_version_1_database_is_migrated_to_version_2_keeping_its_chain() {
    use youops_core::audit::{AppendOptions, AuditStore};

    use crate::support::{all_events, join, notice, open};

    let cluster = cluster();
    let url = cluster.create_database();
    let store = open(&url).await;
    store
        .append(vec![notice("at version 1")], AppendOptions::durable())
        .await
        .unwrap();
    let chain = all_events(&*store).await;
    drop(store);
    // Back to what version 1 left: version 2 only added these tables.
    let c = admin(&url).await;
    c.batch_execute(
        "DROP TABLE nodes, leases, locks; DELETE FROM schema_migrations WHERE version = 2",
    )
    .await
    .unwrap();

    let store = open(&url).await;
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
    assert_eq!(versions, [1, 2]);
    assert_eq!(all_events(&*store).await, chain);
    let a = join(&store, "a").await;
    assert_eq!(a.incarnation(), 1);
    store
        .append(vec![notice("at version 2")], AppendOptions::durable())
        .await
        .unwrap();
    assert!(store.verify().await.unwrap().ok());
    assert_eq!(SCHEMA_VERSION, 2);
}
