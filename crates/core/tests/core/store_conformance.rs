//! Audit store conformance: every backend runs the same suite.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use youops_core::audit::conformance::{
    self, Capabilities, Case, MemoryHarness, Outcome, Report, StoreHarness, StoreSite,
};
use youops_core::audit::{verify_events, AuditStore, VerifyReport};
use youops_core::audit::{AppendOptions, MemoryStore, StoreError};
use youops_core::NewEvent;
use youops_core::{AuditEvent, Executor, RequestFilter, RequestId, RequestRecord, State};

use crate::support::*;

fn outcomes(report: &Report) -> Vec<(Case, &'static str)> {
    report
        .cases
        .iter()
        .map(|c| {
            let kind = match c.outcome {
                Outcome::Passed => "passed",
                Outcome::Skipped(_) => "skipped",
                Outcome::Failed(_) => "failed",
            };
            (c.case, kind)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_memory_store_passes_the_store_conformance_suite() {
    let report = conformance::run_all(&MemoryHarness).await;
    println!("{report}");
    report.assert_passed();
    // Nothing survives a crash of memory: those cases, and the crash parts
    // of the others, are skipped and say so; so is claim expiry (memory
    // keeps every claim).
    assert_eq!(
        report.skipped(),
        [Case::CrashReopen, Case::TornTail, Case::ClaimExpiry]
    );
    for case in [
        Case::GroupAppends,
        Case::DedupRace,
        Case::RetentionVerify,
        Case::ConditionalAppend,
    ] {
        let c = report.cases.iter().find(|c| c.case == case).unwrap();
        assert_eq!(c.notes.len(), 1, "{case}: {:?}", c.notes);
        assert!(c.notes[0].contains("crash_reopen"), "{:?}", c.notes);
    }
    assert!(matches!(
        report.outcome(Case::TornTail),
        Some(Outcome::Skipped(why)) if why.contains("crash_reopen")
    ));
    assert!(matches!(
        report.outcome(Case::ClaimExpiry),
        Some(Outcome::Skipped(why)) if why.contains("expiring_claims")
    ));
}

/// A store with one deliberate fault, over the memory store.
#[derive(Debug)]
struct Faulty {
    inner: MemoryStore,
    fault: Fault,
    /// `RacyDedup`'s own claims.
    claims: Mutex<std::collections::HashMap<String, RequestId>>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Fault {
    /// Checks the dedup key, then appends: not atomically (as a database
    /// store that reads the claim and writes it in separate statements).
    RacyDedup,
    /// Lists requests oldest first.
    OldestFirst,
    /// Archives the request in flight too.
    ArchivesInFlight,
    /// Reads the record, compares its last seq, then appends: not atomically
    /// (as a database store that checks the condition and writes in
    /// separate statements).
    RacyCondition,
}

#[async_trait]
impl AuditStore for Faulty {
    async fn append(
        &self,
        events: Vec<NewEvent>,
        mut opts: AppendOptions,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        if self.fault == Fault::RacyCondition {
            if let (Some(want), Some(id)) = (
                opts.expect_last_seq,
                events.first().and_then(|e| e.request_id),
            ) {
                if let Some(key) = &opts.dedup_key {
                    if let Some(owner) = self.inner.find_dedup(key).await? {
                        return Err(StoreError::Duplicate(owner));
                    }
                }
                let now = self.inner.request(id).await?.map_or(0, |r| r.last_seq);
                if now != want {
                    return Err(StoreError::Stale {
                        request: id,
                        last_seq: now,
                    });
                }
                // The round trip between the check and the write.
                tokio::time::sleep(Duration::from_millis(1)).await;
                opts.expect_last_seq = None;
            }
            return self.inner.append(events, opts).await;
        }
        if self.fault != Fault::RacyDedup {
            return self.inner.append(events, opts).await;
        }
        let Some(key) = opts.dedup_key.take() else {
            return self.inner.append(events, opts).await;
        };
        if let Some(id) = self.claims.lock().unwrap().get(&key) {
            return Err(StoreError::Duplicate(*id));
        }
        // The round trip between the check and the write.
        tokio::time::sleep(Duration::from_millis(1)).await;
        let stored = self.inner.append(events, opts).await?;
        if let Some(id) = stored.first().and_then(|e| e.request_id) {
            self.claims.lock().unwrap().entry(key).or_insert(id);
        }
        Ok(stored)
    }
    async fn flush(&self) -> Result<(), StoreError> {
        self.inner.flush().await
    }
    async fn request(&self, id: RequestId) -> Result<Option<RequestRecord>, StoreError> {
        self.inner.request(id).await
    }
    async fn request_events(&self, id: RequestId) -> Result<Vec<AuditEvent>, StoreError> {
        self.inner.request_events(id).await
    }
    async fn find_dedup(&self, key: &str) -> Result<Option<RequestId>, StoreError> {
        if self.fault == Fault::RacyDedup {
            return Ok(self.claims.lock().unwrap().get(key).copied());
        }
        self.inner.find_dedup(key).await
    }
    async fn list_requests(
        &self,
        filter: &RequestFilter,
        before: Option<RequestId>,
        limit: usize,
    ) -> Result<Vec<RequestRecord>, StoreError> {
        let mut out = self.inner.list_requests(filter, before, limit).await?;
        if self.fault == Fault::OldestFirst {
            out.reverse();
        }
        Ok(out)
    }
    async fn active_requests(&self) -> Result<Vec<RequestRecord>, StoreError> {
        self.inner.active_requests().await
    }
    async fn events(&self, after: u64, limit: usize) -> Result<Vec<AuditEvent>, StoreError> {
        self.inner.events(after, limit).await
    }
    async fn head(&self) -> Result<(u64, String), StoreError> {
        self.inner.head().await
    }
    async fn verify(&self) -> Result<VerifyReport, StoreError> {
        self.inner.verify().await
    }
    async fn size_on_disk(&self) -> Result<u64, StoreError> {
        self.inner.size_on_disk().await
    }
    async fn archive(
        &self,
        through_seq: u64,
        dir: &Path,
    ) -> Result<Option<youops_core::audit::ArchiveReport>, StoreError> {
        if self.fault == Fault::ArchivesInFlight {
            // Finish every request first, so they all qualify.
            for r in self.inner.active_requests().await? {
                let done = NewEvent::transition(
                    r.request.id,
                    youops_core::Transition::to(State::Cancelled),
                );
                self.inner
                    .append(vec![done], AppendOptions::buffered())
                    .await?;
            }
        }
        self.inner.archive(through_seq, dir).await
    }
}

struct FaultyHarness(Fault);

struct FaultySite(Arc<Faulty>);

#[async_trait]
impl StoreHarness for FaultyHarness {
    fn name(&self) -> String {
        format!("memory with fault {:?}", self.0)
    }
    fn capabilities(&self) -> Capabilities {
        MemoryHarness.capabilities()
    }
    async fn site(&self) -> Result<Box<dyn StoreSite>, String> {
        Ok(Box::new(FaultySite(Arc::new(Faulty {
            inner: MemoryStore::new(),
            fault: self.0,
            claims: Mutex::new(Default::default()),
        }))))
    }
}

#[async_trait]
impl StoreSite for FaultySite {
    async fn open(&mut self) -> Result<Arc<dyn AuditStore>, String> {
        Ok(self.0.clone())
    }
}

/// The suite has teeth: each fault fails the cases that cover it, and only those.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_conformance_suite_fails_a_faulty_store() {
    for (fault, failing) in [
        (Fault::RacyDedup, vec![Case::DedupRace]),
        (
            Fault::OldestFirst,
            vec![Case::ReadsAndRecords, Case::RetentionVerify],
        ),
        (Fault::ArchivesInFlight, vec![Case::RetentionVerify]),
        (Fault::RacyCondition, vec![Case::ConditionalAppend]),
    ] {
        let report = conformance::run_all(&FaultyHarness(fault)).await;
        println!("{report}");
        assert_eq!(report.failed(), failing, "{report}");
        let why = match report.outcome(failing[0]) {
            Some(Outcome::Failed(why)) => why.clone(),
            other => panic!("{other:?}"),
        };
        let expected = match fault {
            Fault::RacyDedup => "racers whose append with dedup key",
            Fault::OldestFirst => "list_requests, no filter (newest id first)",
            Fault::ArchivesInFlight => "archive report",
            Fault::RacyCondition => "racers whose conditional append",
        };
        assert!(why.contains(expected), "{fault:?}: {why}");
        assert!(
            outcomes(&report)
                .iter()
                .all(|(c, kind)| failing.contains(c) || *kind != "failed"),
            "{report}"
        );
    }
}

/// The executor runs on the memory store: requests, dedup, the chain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_executor_runs_on_the_memory_store() {
    let counter = Arc::new(AtomicUsize::new(0));
    let store = Arc::new(MemoryStore::new());
    let exec = Executor::builder(&config(GREET_OPS), store.clone())
        .builtin("greet", counting(counter.clone()))
        .build()
        .await
        .unwrap();
    let s = sub("greet", "alice").arg("who", "mem").dedup("memory-1");
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let exec = exec.clone();
            let s = s.clone();
            tokio::spawn(async move { exec.submit(s).await })
        })
        .collect();
    let mut tickets = Vec::new();
    for t in tasks {
        tickets.push(t.await.unwrap().unwrap());
    }
    let originals: Vec<_> = tickets.iter().filter(|t| !t.duplicate).collect();
    assert_eq!(originals.len(), 1, "exactly one submission is the original");
    let id = originals[0].record.request.id;
    assert!(tickets.iter().all(|t| t.record.request.id == id));
    let r = done(&exec, id).await;
    assert_eq!(r.state, State::Succeeded);
    assert_eq!(counter.load(Ordering::SeqCst), 1, "the work ran once");
    assert_eq!(store.find_dedup("memory-1").await.unwrap(), Some(id));
    let events = store.events(0, usize::MAX).await.unwrap();
    let report = verify_events(events.clone());
    assert!(report.ok(), "{report:?}");
    assert_eq!(store.verify().await.unwrap(), report);
    assert_eq!(
        store.request_events(id).await.unwrap(),
        events
            .into_iter()
            .filter(|e| e.request_id == Some(id))
            .collect::<Vec<_>>()
    );
}
