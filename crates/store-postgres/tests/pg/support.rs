//! What the tests share: a cluster, an admin connection, killing a store's
//! sessions, the builders of events to append.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_postgres::NoTls;
pub(crate) use youops_core::audit::conformance::build::{
    claiming, keyed, keyed_request, notice, received, request, to,
};
use youops_core::audit::AuditStore;
use youops_core::cluster::{Leadership, NodeId};
use youops_core::model::{AuditEvent, EventBody};
use youops_store_postgres::coord::{CoordOptions, Coordinator};
use youops_store_postgres::{PgOptions, PgStore, PgUrl};
use youops_testkit::pg::PgCluster;

/// A new cluster; fails (never skips) when PostgreSQL is missing.
pub(crate) fn cluster() -> PgCluster {
    PgCluster::start().unwrap_or_else(|e| panic!("cannot start PostgreSQL for the tests: {e}"))
}

/// A plain connection to `url` (a socket URL of the test cluster).
pub(crate) async fn admin(url: &str) -> tokio_postgres::Client {
    let config = PgUrl::parse(url).expect("a test URL").config().clone();
    let (client, connection) = config.connect(NoTls).await.expect("admin connection");
    tokio::spawn(connection);
    client
}

/// Terminate every session of the store named `session` (its
/// `application_name`), and wait until they are gone.
pub(crate) async fn kill_sessions(url: &str, session: &str) -> Result<(), String> {
    let c = admin(url).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let rows = c
            .query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
                &[&session],
            )
            .await
            .map_err(|e| e.to_string())?;
        if rows.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("sessions of {session} still alive"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub(crate) async fn open(url: &str) -> Arc<PgStore> {
    Arc::new(
        PgStore::open(url, PgOptions::default())
            .await
            .expect("open the store"),
    )
}

/// The message of a notice.
pub(crate) fn message(e: &AuditEvent) -> Option<&str> {
    match &e.body {
        EventBody::Notice { message, .. } => Some(message),
        _ => None,
    }
}

/// Every live event.
pub(crate) async fn all_events(store: &dyn AuditStore) -> Vec<AuditEvent> {
    let mut out: Vec<AuditEvent> = Vec::new();
    loop {
        let after = out.last().map_or(0, |e| e.seq);
        let page = store.events(after, 500).await.expect("events");
        if page.is_empty() {
            return out;
        }
        out.extend(page);
    }
}

/// The database name of a test URL (`postgresql://postgres@/<db>?…`).
pub(crate) fn db_name(url: &str) -> String {
    let rest = url.split_once("@/").expect("a socket URL").1;
    rest.split('?').next().expect("a database").to_string()
}

pub(crate) fn node(name: &str) -> NodeId {
    NodeId::new(name).expect("a node id")
}

/// Coordination with quick heartbeats.
pub(crate) fn coord_opts() -> CoordOptions {
    let mut o = CoordOptions::default();
    o.heartbeat_every = Duration::from_millis(100);
    o.query_timeout = Duration::from_secs(5);
    o.lock_margin = Duration::from_secs(1);
    o
}

/// `store` joins the cluster as `name`.
pub(crate) async fn join(store: &PgStore, name: &str) -> Coordinator {
    Coordinator::join(store, node(name), coord_opts())
        .await
        .expect("join the cluster")
}

/// Wait (at most `secs`) until `leadership` leads; its epoch.
pub(crate) async fn leads_within(leadership: &Leadership, secs: u64) -> u64 {
    let mut l = leadership.clone();
    tokio::time::timeout(Duration::from_secs(secs), l.acquired())
        .await
        .unwrap_or_else(|_| panic!("no leadership within {secs}s"))
        .expect("the campaign is running")
        .epoch
}
