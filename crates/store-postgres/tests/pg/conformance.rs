//! The core's audit store conformance suite against the PostgreSQL store:
//! each case on a database of its own in one cluster.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use youops_core::audit::conformance::{
    self, Capabilities, Case, ClaimTtl, StoreHarness, StoreSite,
};
use youops_core::audit::AuditStore;
use youops_store_postgres::{PgOptions, PgStore};
use youops_testkit::pg::PgCluster;

use crate::support::{cluster, kill_sessions};

struct PgHarness {
    cluster: PgCluster,
}

struct PgSite {
    url: String,
    opts: PgOptions,
    session: Option<String>,
}

/// Expiring claims hold a second (by the database clock, from the append).
const CLAIM_TTL: Duration = Duration::from_secs(1);

impl PgHarness {
    fn site_with(&self, opts: PgOptions) -> Result<Box<dyn StoreSite>, String> {
        Ok(Box::new(PgSite {
            url: self.cluster.try_create_database()?,
            opts,
            session: None,
        }))
    }
}

#[async_trait]
impl StoreHarness for PgHarness {
    fn name(&self) -> String {
        "postgres".into()
    }

    fn capabilities(&self) -> Capabilities {
        let mut c = Capabilities::all();
        // A server keeps no torn tail to damage: PostgreSQL's WAL recovery
        // replays whole transactions or none, which is what `crash` checks.
        c.torn_tail = false;
        c.expiring_claims = true;
        c
    }

    async fn site(&self) -> Result<Box<dyn StoreSite>, String> {
        self.site_with(PgOptions::default())
    }

    async fn expiring_claims_site(&self) -> Result<(Box<dyn StoreSite>, ClaimTtl), String> {
        let mut opts = PgOptions::default();
        opts.dedup_ttl = CLAIM_TTL;
        let site = self.site_with(opts)?;
        // The claim's time is read inside the append's transaction, after the
        // case's `started` and before the append returns.
        Ok((
            site,
            ClaimTtl::new(CLAIM_TTL, CLAIM_TTL + Duration::from_millis(500)),
        ))
    }
}

#[async_trait]
impl StoreSite for PgSite {
    async fn open(&mut self) -> Result<Arc<dyn AuditStore>, String> {
        let store = PgStore::open(&self.url, self.opts.clone())
            .await
            .map_err(|e| e.to_string())?;
        self.session = Some(store.session_name().to_string());
        Ok(Arc::new(store))
    }

    /// Dropped without a flush, and every session of it terminated from the
    /// server side.
    async fn crash(&mut self, store: Arc<dyn AuditStore>) -> Result<(), String> {
        drop(store);
        match self.session.take() {
            Some(s) => kill_sessions(&self.url, &s).await,
            None => Err("crash before open".into()),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_postgres_store_passes_the_audit_store_conformance_suite() {
    let harness = PgHarness { cluster: cluster() };
    let report = conformance::run_all(&harness).await;
    println!("{report}");
    report.assert_passed();
    assert_eq!(report.skipped(), [Case::TornTail], "{report}");
}
