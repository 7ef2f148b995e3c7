//! The core's audit store conformance suite, run against the sled store on
//! real temporary directories (the crates.io sled 0.34.7, with this crate's
//! `fdatasync` after every flush).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use youops_core::audit::conformance::{self, Capabilities, Case, Outcome, StoreHarness, StoreSite};
use youops_core::audit::AuditStore;
use youops_store_sled::{KillSwitch, SledStore};

/// The sled store: a site is a temporary directory. A crash kills the store
/// (its writer stops with no last flush and without storing the request
/// records it holds, so the reopen rebuilds them from the events) and drops
/// the last handle; sled's own `Db` still flushes its log when it goes, so a
/// crash here loses no buffered append (durability against a power cut rests
/// on the `fdatasync` after each flush, which `strace` shows). sled's log is
/// no file layer to tear.
struct SledHarness;

struct SledSite {
    dir: tempfile::TempDir,
    kill: Option<KillSwitch>,
}

#[async_trait]
impl StoreHarness for SledHarness {
    fn name(&self) -> String {
        "sled".into()
    }

    fn capabilities(&self) -> Capabilities {
        let mut c = Capabilities::all();
        c.torn_tail = false;
        c
    }

    async fn site(&self) -> Result<Box<dyn StoreSite>, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        Ok(Box::new(SledSite { dir, kill: None }))
    }
}

/// Open a store, retrying while an earlier handle in this process is still
/// being torn down (sled holds a file lock until its last handle drops).
async fn reopen(path: &Path) -> Result<SledStore, String> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match SledStore::open(path) {
            Ok(s) => return Ok(s),
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => return Err(format!("cannot reopen {}: {e}", path.display())),
        }
    }
}

#[async_trait]
impl StoreSite for SledSite {
    async fn open(&mut self) -> Result<Arc<dyn AuditStore>, String> {
        let store = reopen(&self.dir.path().join("store")).await?;
        self.kill = Some(store.kill_switch());
        Ok(Arc::new(store))
    }

    async fn crash(&mut self, store: Arc<dyn AuditStore>) -> Result<(), String> {
        if let Some(k) = self.kill.take() {
            k.kill();
        }
        drop(store);
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sled_store_passes_the_store_conformance_suite() {
    let report = conformance::run_all(&SledHarness).await;
    println!("{report}");
    report.assert_passed();
    // What it cannot be asked to do, and nothing else, is skipped.
    for case in report.skipped() {
        assert!(
            matches!(case, Case::TornTail | Case::ClaimExpiry),
            "{case} skipped: {report}"
        );
    }
    assert!(matches!(
        report.outcome(Case::TornTail),
        Some(Outcome::Skipped(why)) if why.contains("torn_tail")
    ));
    for case in [
        Case::GroupAppends,
        Case::DedupRace,
        Case::CrashReopen,
        Case::RetentionVerify,
    ] {
        assert_eq!(
            report.outcome(case),
            Some(&Outcome::Passed),
            "{case}: {report}"
        );
    }
    assert!(report.cases.iter().all(|c| c.notes.is_empty()), "{report}");
}
