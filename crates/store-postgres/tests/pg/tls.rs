//! TLS to a real server: a cluster listening on 127.0.0.1 with `ssl = on`
//! and a certificate from a throw-away CA (`PgCluster::start_with_tls`).
//! Whether a session is encrypted is asked of the server (`pg_stat_ssl`),
//! for every session of the store (its `application_name`).

use youops_core::audit::{AppendOptions, AuditStore};
use youops_store_postgres::{PgOptions, PgStore};
use youops_testkit::pg::{PgCluster, TlsFiles};

use crate::support::{admin, db_name, notice};

const USER: &str = "tls_tester";
const PASSWORD: &str = "tls-horse-battery-9137";

/// A TLS cluster, a database and a password role; the socket URL of the
/// database (as the trusted superuser) and its name.
fn setup() -> (PgCluster, TlsFiles, String, String) {
    let (cluster, tls) = PgCluster::start_with_tls()
        .unwrap_or_else(|e| panic!("cannot start PostgreSQL with TLS for the tests: {e}"));
    let admin_url = cluster.create_database();
    let db = db_name(&admin_url);
    cluster.create_password_role(USER, PASSWORD).unwrap();
    (cluster, tls, admin_url, db)
}

fn rootcert(path: &std::path::Path) -> String {
    format!("sslrootcert={}", path.display())
}

async fn open(url: &str) -> Result<PgStore, String> {
    PgStore::open(url, PgOptions::default())
        .await
        .map_err(|e| format!("{e} {e:?}"))
}

/// The error of opening `url`, checked free of the password.
async fn open_fails(url: &str) -> String {
    let err = open(url)
        .await
        .err()
        .unwrap_or_else(|| panic!("{url} opens"));
    assert!(!err.contains(PASSWORD), "the password shows in: {err}");
    err
}

/// Append, verify, and the server's word on each of the store's sessions:
/// whether it is encrypted.
async fn use_and_inspect(store: &PgStore, admin_url: &str) -> Vec<bool> {
    store
        .append(vec![notice("over TCP")], AppendOptions::durable())
        .await
        .expect("append");
    let report = store.verify().await.expect("verify");
    assert!(report.ok(), "{report:?}");
    let c = admin(admin_url).await;
    let rows = c
        .query(
            "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
             WHERE a.application_name = $1",
            &[&store.session_name()],
        )
        .await
        .expect("pg_stat_ssl");
    let ssl: Vec<bool> = rows.iter().map(|r| r.get(0)).collect();
    assert!(!ssl.is_empty(), "no session of {}", store.session_name());
    ssl
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_full_with_a_private_ca_encrypts_every_session() {
    let (cluster, tls, admin_url, db) = setup();
    for mode in ["verify-full", "verify-ca", "require"] {
        let params = format!("sslmode={mode}&{}", rootcert(&tls.ca_pem));
        let url = cluster.tcp_url(USER, PASSWORD, &db, &params);
        let store = open(&url)
            .await
            .unwrap_or_else(|e| panic!("sslmode={mode}: {e}"));
        let ssl = use_and_inspect(&store, &admin_url).await;
        assert!(ssl.iter().all(|s| *s), "sslmode={mode}: sessions {ssl:?}");
        drop(store);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_ca_skips_the_host_name_verify_full_and_require_do_not() {
    let (cluster, tls, admin_url, db) = setup();
    // 127.0.0.2 reaches the same server; its certificate does not name it.
    let at_other_name = |mode: &str, ca: &std::path::Path| {
        let params = format!("sslmode={mode}&{}", rootcert(ca));
        cluster
            .tcp_url(USER, PASSWORD, &db, &params)
            .replace("@127.0.0.1:", "@127.0.0.2:")
    };
    for mode in ["verify-full", "require"] {
        let err = open_fails(&at_other_name(mode, &tls.ca_pem)).await;
        assert!(
            err.contains("certificate not valid for name \"127.0.0.2\""),
            "sslmode={mode}: {err}"
        );
    }
    let store = open(&at_other_name("verify-ca", &tls.ca_pem))
        .await
        .expect("sslmode=verify-ca ignores the host name");
    let ssl = use_and_inspect(&store, &admin_url).await;
    assert!(
        ssl.iter().all(|s| *s),
        "sslmode=verify-ca: sessions {ssl:?}"
    );
    drop(store);
    // The chain still counts.
    let err = open_fails(&at_other_name("verify-ca", &tls.other_ca_pem)).await;
    assert!(err.contains("UnknownIssuer"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_ca_or_a_bad_root_file_is_refused_without_the_password() {
    let (cluster, tls, _admin_url, db) = setup();
    for mode in ["verify-full", "verify-ca", "require", "prefer"] {
        let params = format!("sslmode={mode}&{}", rootcert(&tls.other_ca_pem));
        let err = open_fails(&cluster.tcp_url(USER, PASSWORD, &db, &params)).await;
        assert!(
            err.contains("certificate") && err.contains("UnknownIssuer"),
            "sslmode={mode}: {err}"
        );
    }

    let missing = tls.ca_pem.with_file_name("no-such-ca.pem");
    let params = format!("sslmode=verify-full&{}", rootcert(&missing));
    let err = open_fails(&cluster.tcp_url(USER, PASSWORD, &db, &params)).await;
    assert!(
        err.contains(&format!(
            "sslrootcert {}: cannot read it",
            missing.display()
        )),
        "{err}"
    );

    let empty = tls.ca_pem.with_file_name("empty.pem");
    std::fs::write(&empty, "no certificate here\n").unwrap();
    for mode in ["verify-full", "prefer"] {
        let params = format!("sslmode={mode}&{}", rootcert(&empty));
        let err = open_fails(&cluster.tcp_url(USER, PASSWORD, &db, &params)).await;
        assert!(
            err.contains(&format!(
                "sslrootcert {}: holds no certificate",
                empty.display()
            )),
            "sslmode={mode}: {err}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disable_and_the_socket_go_without_tls() {
    let (cluster, tls, admin_url, db) = setup();

    let url = cluster.tcp_url(USER, PASSWORD, &db, "sslmode=disable");
    let store = open(&url).await.expect("sslmode=disable opens");
    let ssl = use_and_inspect(&store, &admin_url).await;
    assert!(ssl.iter().all(|s| !*s), "sslmode=disable: sessions {ssl:?}");
    drop(store);

    // A Unix socket: no TLS, whatever the mode (as libpq).
    let socket = format!(
        "postgresql://{USER}:{PASSWORD}@/{db}?host={}&port={}&sslmode=require&{}",
        cluster.socket_dir().display(),
        tls.port,
        rootcert(&tls.ca_pem)
    );
    let store = open(&socket)
        .await
        .expect("sslmode=require on the socket opens");
    let ssl = use_and_inspect(&store, &admin_url).await;
    assert!(ssl.iter().all(|s| !*s), "the socket: sessions {ssl:?}");
    drop(store);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_refuses_a_server_without_tls_and_prefer_does_without() {
    let (cluster, tls, admin_url, db) = setup();
    cluster
        .psql("postgres", "ALTER SYSTEM SET ssl = off")
        .unwrap();
    cluster.psql("postgres", "SELECT pg_reload_conf()").unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;

    for mode in ["require", "verify-ca", "verify-full"] {
        let params = format!("sslmode={mode}&{}", rootcert(&tls.ca_pem));
        let err = open_fails(&cluster.tcp_url(USER, PASSWORD, &db, &params)).await;
        assert!(
            err.contains("server does not support TLS"),
            "sslmode={mode}: {err}"
        );
    }

    let params = format!("sslmode=prefer&{}", rootcert(&tls.ca_pem));
    let url = cluster.tcp_url(USER, PASSWORD, &db, &params);
    let store = open(&url).await.expect("sslmode=prefer opens");
    let ssl = use_and_inspect(&store, &admin_url).await;
    assert!(
        ssl.iter().all(|s| !*s),
        "sslmode=prefer, ssl off: sessions {ssl:?}"
    );
    drop(store);
}
