//! Wake-ups across stores on one database (`LISTEN`/`NOTIFY`): another
//! store's commit wakes a store's listener, its own commits do not, and a
//! listener whose session is killed listens again.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use youops_core::audit::{AppendOptions, AuditStore};
use youops_core::model::State;
use youops_store_postgres::PgStore;

use crate::support::{admin, cluster, open, received, request, to};

/// Wait (at most 10 s) for a wake-up.
async fn woken(wake: &Notify, what: &str) {
    tokio::time::timeout(Duration::from_secs(10), wake.notified())
        .await
        .unwrap_or_else(|_| panic!("no wake-up: {what}"));
}

/// No wake-up within a second.
async fn not_woken(wake: &Notify, what: &str) {
    let r = tokio::time::timeout(Duration::from_secs(1), wake.notified()).await;
    assert!(r.is_err(), "woken: {what}");
}

async fn append_one(store: &PgStore) {
    let r = request("ops.listen");
    store
        .append(
            vec![received(&r), to(r.id, State::Succeeded)],
            AppendOptions::durable(),
        )
        .await
        .expect("append");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_stores_commit_wakes_the_listener_and_its_own_does_not() {
    let cluster = cluster();
    let url = cluster.create_database();
    let (a, b) = (open(&url).await, open(&url).await);
    let wake = b.appended_elsewhere();
    woken(&wake, "the one after LISTEN").await;

    append_one(&b).await;
    not_woken(&wake, "by the store's own commit").await;
    append_one(&a).await;
    woken(&wake, "by another store's commit").await;
    // The same listener for every caller.
    assert!(Arc::ptr_eq(&wake, &b.appended_elsewhere()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_whose_session_ends_listens_again() {
    let cluster = cluster();
    let url = cluster.create_database();
    let (a, b) = (open(&url).await, open(&url).await);
    let wake = b.appended_elsewhere();
    woken(&wake, "the one after LISTEN").await;

    // Terminate the listener's session only (b's others stay), as a
    // restart or a network cut would end it.
    let admin = admin(&url).await;
    let killed = admin
        .query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE application_name = $1 AND query = 'LISTEN youops_appends'",
            &[&b.session_name()],
        )
        .await
        .expect("terminating the listener");
    assert_eq!(killed.len(), 1, "one listening session");
    // It connects again and listens: a wake-up for what it may have missed.
    woken(&wake, "the one after listening again").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let n = admin
            .query(
                "SELECT 1 FROM pg_stat_activity \
                 WHERE application_name = $1 AND query = 'LISTEN youops_appends'",
                &[&b.session_name()],
            )
            .await
            .expect("reading sessions")
            .len();
        if n == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "no listening session again");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    append_one(&a).await;
    woken(&wake, "by another store's commit, after listening again").await;
}
