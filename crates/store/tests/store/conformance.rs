//! The core's audit store conformance suite, run against the log store on
//! real temporary directories.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use youops_core::audit::conformance::{
    self, Capabilities, ClaimTtl, StoreHarness, StoreSite, TornTail,
};
use youops_core::audit::AuditStore;
use youops_store::{KillSwitch, LogOptions, LogStore};

struct LogHarness;

struct LogSite {
    dir: tempfile::TempDir,
    opts: LogOptions,
    kill: Option<KillSwitch>,
}

impl LogSite {
    /// A site in a new temporary directory whose store opens with `opts`.
    fn boxed(opts: LogOptions) -> Result<Box<dyn StoreSite>, String> {
        Ok(Box::new(LogSite {
            dir: tempfile::tempdir().map_err(|e| e.to_string())?,
            opts,
            kill: None,
        }))
    }
}

fn options() -> LogOptions {
    let mut o = LogOptions::default();
    // Buffered appends stay unsynced until a durable append or a flush syncs
    // them, so that a crash leaves them as the tail the suite tears.
    o.sync_interval = Duration::from_secs(3600);
    // Small segments: the suite's stores roll several, and retention (which
    // moves whole sealed segments) can archive part of the retention case's
    // events, as the suite expects.
    o.segment_bytes = 4096;
    o
}

/// Expiring dedup claims hold at least one second and at most two: the TTL
/// and a bucket of a second each (the store counts whole seconds).
const CLAIM_TTL: Duration = Duration::from_secs(1);

#[async_trait]
impl StoreHarness for LogHarness {
    fn name(&self) -> String {
        "log".into()
    }

    fn capabilities(&self) -> Capabilities {
        let mut c = Capabilities::all();
        c.expiring_claims = true;
        c
    }

    async fn site(&self) -> Result<Box<dyn StoreSite>, String> {
        LogSite::boxed(options())
    }

    async fn expiring_claims_site(&self) -> Result<(Box<dyn StoreSite>, ClaimTtl), String> {
        let mut o = options();
        o.dedup_ttl = CLAIM_TTL;
        o.dedup_bucket = CLAIM_TTL;
        let site = LogSite::boxed(o)?;
        Ok((site, ClaimTtl::new(CLAIM_TTL, 2 * CLAIM_TTL)))
    }
}

/// The newest segment file.
fn newest_segment(log: &Path) -> Result<std::path::PathBuf, String> {
    let mut names: Vec<String> = std::fs::read_dir(log)
        .map_err(|e| e.to_string())?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".jsonl"))
        .collect();
    // Sealed segments sort before the open one (`audit-` < `open-`), and by seq.
    names.sort();
    let open = names.iter().rev().find(|n| n.starts_with("open-"));
    let newest = match open {
        Some(n) if std::fs::metadata(log.join(n)).map_or(0, |m| m.len()) > 0 => n,
        _ => names
            .iter()
            .rev()
            .find(|n| n.starts_with("audit-"))
            .ok_or("no segment")?,
    };
    Ok(log.join(newest))
}

#[async_trait]
impl StoreSite for LogSite {
    async fn open(&mut self) -> Result<Arc<dyn AuditStore>, String> {
        let store = LogStore::open(self.dir.path().join("store"), self.opts.clone())
            .map_err(|e| e.to_string())?;
        self.kill = Some(store.kill_switch());
        Ok(Arc::new(store))
    }

    async fn crash(&mut self, store: Arc<dyn AuditStore>) -> Result<(), String> {
        // Killed while the suite's handle still holds it open: dropping that
        // handle then closes it without a last sync.
        if let Some(k) = self.kill.take() {
            k.kill();
        }
        drop(store);
        Ok(())
    }

    async fn tear_tail(&mut self, durable_through: u64) -> Result<TornTail, String> {
        let path = newest_segment(&self.dir.path().join("store").join("log"))?;
        let bytes = std::fs::read(&path).map_err(|e| e.to_string())?;
        let body = bytes
            .strip_suffix(b"\n")
            .ok_or("the segment ends mid-line")?;
        let start = body.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        let last: serde_json::Value =
            serde_json::from_slice(&body[start..]).map_err(|e| e.to_string())?;
        let seq = last["seq"].as_u64().ok_or("no seq")?;
        if seq > durable_through {
            // The last record cut in half.
            let half = start + (body.len() - start) / 2;
            std::fs::write(&path, &bytes[..half]).map_err(|e| e.to_string())?;
            Ok(TornTail::new(seq))
        } else {
            // Half a record after the last whole one.
            let mut torn = bytes.clone();
            torn.extend_from_slice(&body[start..start + (body.len() - start) / 2]);
            std::fs::write(&path, torn).map_err(|e| e.to_string())?;
            Ok(TornTail::new(seq + 1))
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_store_passes_the_audit_store_conformance_suite() {
    let report = conformance::run_all(&LogHarness).await;
    println!("{report}");
    report.assert_passed();
    // Every case runs, the crash parts too.
    assert_eq!(report.skipped(), [], "{report}");
    assert_eq!(report.passed(), conformance::Case::ALL, "{report}");
}
