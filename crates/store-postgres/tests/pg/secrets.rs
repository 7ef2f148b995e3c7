//! The password never shows: not in the URL's `Display`/`Debug`, the store's
//! `Debug`, nor any error (a wrong password, an unreachable host).

use youops_core::audit::AuditStore;
use youops_store_postgres::{PgOptions, PgStore, PgUrl};

use crate::support::cluster;

fn assert_hidden(secret: &str, text: &str) {
    assert!(!text.contains(secret), "the password shows in: {text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_password_is_never_shown() {
    let cluster = cluster();
    let url = cluster.create_database();
    let db = url
        .split_once("@/")
        .unwrap()
        .1
        .split('?')
        .next()
        .unwrap()
        .to_string();
    let sock = cluster.socket_dir();
    let right = "right-horse-battery";
    cluster.create_password_role("pw_tester", right).unwrap();

    // A wrong password.
    let wrong = "wrong-staple-7261";
    let bad = format!(
        "postgresql://pw_tester:{wrong}@/{db}?host={}&port=5432",
        sock.display()
    );
    let err = PgStore::open(&bad, PgOptions::default())
        .await
        .expect_err("a wrong password is refused");
    let shown = format!("{err} {err:?}");
    assert_hidden(wrong, &shown);
    assert!(shown.contains("password authentication failed"), "{shown}");

    // The right one: the store and its URL do not show it either.
    let good = format!(
        "postgresql://pw_tester:{right}@/{db}?host={}&port=5432",
        sock.display()
    );
    let store = PgStore::open(&good, PgOptions::default())
        .await
        .expect("the right password");
    assert!(store.verify().await.unwrap().ok());
    let shown = format!("{store:?} {} {:?}", store.url(), store.url());
    assert_hidden(right, &shown);
    assert!(shown.contains("pw_tester:***@"), "{shown}");
    let coord = youops_store_postgres::coord::Coordinator::join(
        &store,
        youops_core::cluster::NodeId::new("n1").unwrap(),
        Default::default(),
    )
    .await
    .expect("join with a password");
    assert_hidden(right, &format!("{coord:?}"));

    // Unreachable hosts, with and without TLS.
    for url in [
        "postgres://someone:unreachable-secret-1@127.0.0.1:1/db?connect_timeout=3&sslmode=disable",
        "postgres://someone:unreachable-secret-1@127.0.0.1:1/db?connect_timeout=3&sslmode=require",
    ] {
        let err = PgStore::open(url, PgOptions::default())
            .await
            .expect_err("nothing listens on port 1");
        assert_hidden("unreachable-secret-1", &format!("{err} {err:?}"));
    }
    // A URL that does not parse.
    let err = PgStore::open(
        "postgres://someone:bad-url-secret-2@127.0.0.1:http/db",
        PgOptions::default(),
    )
    .await
    .expect_err("a bad port");
    assert_hidden("bad-url-secret-2", &format!("{err} {err:?}"));
    let parsed: PgUrl = "postgres://u:query-secret-3@127.0.0.1/db".parse().unwrap();
    assert_hidden("query-secret-3", &format!("{parsed} {parsed:?}"));
}
