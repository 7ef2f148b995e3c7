//! The audit store conformance suite (feature `test-util`).
//!
//! Every [`AuditStore`] backend (the in-memory store, the sled store, the log
//! store, a PostgreSQL store) runs it from its own tests with a [`StoreHarness`]:
//! the suite checks the contract the executor relies on, with exact values —
//! one total order of appends with gapless sequence numbers and an intact hash
//! chain, atomic multi-event appends, request records folded from the events,
//! dedup claims that exactly one of many concurrent duplicates wins, the reads'
//! filters, paging and ordering, durability across a crash, retention that
//! verifies together with its archives, and recovery from a torn tail.
//!
//! # The harness
//!
//! A [`StoreHarness`] describes a backend: its name, its [`Capabilities`], and a
//! factory of [`StoreSite`]s. Each case asks for a new site (an empty temporary
//! directory, a fresh database or schema) and drives the store there:
//! [`open`](StoreSite::open) it, [`crash`](StoreSite::crash) it (drop it without
//! a flush or a clean close: a kill, for a server a killed server) and open it
//! again, [`tear_tail`](StoreSite::tear_tail) what the crash left unsynced. What a
//! backend cannot do, its capabilities say; the suite then skips the case, or the
//! part of a case, and says so in the [`Report`].
//!
//! | case | needs | without it |
//! |---|---|---|
//! | [`ReadsAndRecords`](Case::ReadsAndRecords), [`RejectedAppends`](Case::RejectedAppends) | nothing | — |
//! | [`GroupAppends`](Case::GroupAppends), [`DedupRace`](Case::DedupRace) | nothing; their crash part `durable` + `crash_reopen` | the crash part is skipped (a note) |
//! | [`CrashReopen`](Case::CrashReopen) | `durable` + `crash_reopen` | skipped |
//! | [`RetentionVerify`](Case::RetentionVerify) | `archive`; its crash part `durable` + `crash_reopen` | skipped (the crash part: a note) |
//! | [`TornTail`](Case::TornTail) | `crash_reopen` + `torn_tail` | skipped |
//!
//! The torn tail protocol: the suite appends two events durably, then two
//! buffered, [`crash`](StoreSite::crash)es the store, calls
//! [`tear_tail(2)`](StoreSite::tear_tail) (a log harness cuts the last record
//! in its newest segment in half, or appends half a record) and opens the
//! store again. The harness answers with the first event that is not whole
//! any more ([`TornTail`]); the store must come back with exactly the events
//! before it, records folded from those only, and chain the next append on.
//!
//! ```no_run
//! use std::sync::Arc;
//! use async_trait::async_trait;
//! use youops_core::audit::conformance::{self, Capabilities, StoreHarness, StoreSite};
//! use youops_core::audit::{AuditStore, SledStore};
//!
//! struct SledHarness;
//! struct SledSite(tempfile::TempDir);
//!
//! #[async_trait]
//! impl StoreHarness for SledHarness {
//!     fn name(&self) -> String {
//!         "sled".into()
//!     }
//!     fn capabilities(&self) -> Capabilities {
//!         let mut c = Capabilities::all();
//!         c.torn_tail = false; // sled's log is not a file layer we can damage
//!         c
//!     }
//!     async fn site(&self) -> Result<Box<dyn StoreSite>, String> {
//!         Ok(Box::new(SledSite(tempfile::tempdir().map_err(|e| e.to_string())?)))
//!     }
//! }
//!
//! #[async_trait]
//! impl StoreSite for SledSite {
//!     async fn open(&mut self) -> Result<Arc<dyn AuditStore>, String> {
//!         let store = SledStore::open(self.0.path().join("store")).map_err(|e| e.to_string())?;
//!         Ok(Arc::new(store))
//!     }
//!     async fn crash(&mut self, store: Arc<dyn AuditStore>) -> Result<(), String> {
//!         drop(store); // no flush
//!         Ok(())
//!     }
//! }
//!
//! # async fn run() {
//! let report = conformance::run_all(&SledHarness).await;
//! println!("{report}");
//! report.assert_passed();
//! # }
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::Utc;
use futures::FutureExt as _;

use super::{
    archive_file_name, archive_files, expected_hash, verify_with_archives, AppendOptions,
    AuditStore, MemoryStore, StoreError, GENESIS_HASH,
};
use crate::model::{
    Actor, AuditEvent, EventBody, NewEvent, Origin, Request, RequestFilter, RequestId,
    RequestRecord, State, Transition,
};

/// How long one case may take before it fails (a deadlocked store fails, it does
/// not hang the suite).
pub const CASE_TIMEOUT: Duration = Duration::from_secs(180);

/// Concurrent appenders in [`Case::GroupAppends`].
pub const GROUP_TASKS: usize = 64;

/// Concurrent duplicates in each race of [`Case::DedupRace`].
pub const DEDUP_RACERS: usize = 32;

/// Races of [`Case::DedupRace`] for each way of claiming a key (carried by the
/// request, as the executor's are, or only in [`AppendOptions::dedup_key`]).
pub const DEDUP_ROUNDS: usize = 4;

/// What a backend's harness can be asked to do. The suite skips, and reports as
/// skipped with the missing capability, what it cannot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Capabilities {
    /// Every append acknowledged with [`AppendOptions::durable`], and everything
    /// appended before a successful [`AuditStore::flush`], survives
    /// [`StoreSite::crash`] and a reopen. Checked only with `crash_reopen`.
    pub durable: bool,
    /// The site can simulate a crash ([`StoreSite::crash`]) and
    /// [`open`](StoreSite::open) the same store again afterwards.
    pub crash_reopen: bool,
    /// The site can damage the tail a crash left behind
    /// ([`StoreSite::tear_tail`]). Needs `crash_reopen`.
    pub torn_tail: bool,
    /// The store implements retention ([`AuditStore::archive`]).
    pub archive: bool,
}

impl Capabilities {
    /// Nothing beyond the basic reads and appends.
    pub const NONE: Capabilities = Capabilities {
        durable: false,
        crash_reopen: false,
        torn_tail: false,
        archive: false,
    };

    /// Everything: a durable store whose harness can crash it and tear its tail.
    pub fn all() -> Self {
        Capabilities {
            durable: true,
            crash_reopen: true,
            torn_tail: true,
            archive: true,
        }
    }
}

/// A backend under test: its name, what it can do, and where to put its stores.
#[async_trait]
pub trait StoreHarness: Send + Sync {
    /// The backend's name, for the report (`memory`, `sled`, `log`, `postgres`).
    fn name(&self) -> String;

    /// What this backend can be asked to do.
    fn capabilities(&self) -> Capabilities;

    /// A new, empty place for one store: a temporary directory, a fresh database
    /// or schema. Each case asks for its own site (and [`Case::RetentionVerify`]
    /// for a second one); the suite drops the site when the case is over, which
    /// may clean it up.
    async fn site(&self) -> Result<Box<dyn StoreSite>, String>;
}

/// One store's place over a case: open it, crash it, open it again.
///
/// The suite holds no other handle to a store when it hands it to
/// [`crash`](Self::crash) (every task that used it has finished), and never opens
/// a site's store twice at the same time.
#[async_trait]
pub trait StoreSite: Send {
    /// Open the store here: created empty the first time, the same store again
    /// after [`crash`](Self::crash) (and [`tear_tail`](Self::tear_tail)). A
    /// backend that holds a lock until an earlier handle is fully gone should
    /// wait for it here.
    async fn open(&mut self) -> Result<Arc<dyn AuditStore>, String>;

    /// Simulate a crash of `store`: stop it without a flush or a clean close (for
    /// a log, a kill: drop it without flushing; for a server, kill the server).
    /// Only called with [`Capabilities::crash_reopen`]. The default refuses.
    async fn crash(&mut self, store: Arc<dyn AuditStore>) -> Result<(), String> {
        drop(store);
        Err("this harness cannot crash its store".into())
    }

    /// After a [`crash`](Self::crash), and before the next
    /// [`open`](Self::open): damage the tail as a crash in the middle of a
    /// write leaves it (for a log: cut the last record in half, or leave half
    /// a record after the last whole one). Events through `durable_through`
    /// were acknowledged durable and must not be touched. Only called with
    /// [`Capabilities::torn_tail`]. The default refuses.
    async fn tear_tail(&mut self, durable_through: u64) -> Result<TornTail, String> {
        let _ = durable_through;
        Err("this harness cannot tear its store's tail".into())
    }
}

/// What [`StoreSite::tear_tail`] left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct TornTail {
    /// The first event that is not whole in the store's files after the damage
    /// (one past the last event if only a partial record after it was left).
    /// After reopening, the store must hold exactly the events before it, and
    /// chain the next append onto the last of them.
    pub first_torn_seq: u64,
}

impl TornTail {
    /// Events from `first_torn_seq` on are torn.
    pub fn new(first_torn_seq: u64) -> Self {
        TornTail { first_torn_seq }
    }
}

/// The cases of the suite.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Case {
    /// Reads of an empty and of a small store: head, events and their paging,
    /// records folded from the events, `list_requests` (newest first, filters,
    /// paging), `active_requests`, `verify`.
    ReadsAndRecords,
    /// Refused appends leave no trace: an event of an unknown request, a second
    /// `received`, a claimed dedup key; a refused append claims nothing.
    RejectedAppends,
    /// Many tasks append durably at once: unique, gapless sequence numbers, an
    /// intact chain, each caller's events contiguous and in order; with
    /// `durable`, every acknowledged event survives a crash.
    GroupAppends,
    /// Many tasks append a `received` event with the same dedup key at once:
    /// exactly one wins, the others get `Duplicate(winner)` and append nothing;
    /// the claim survives a crash.
    DedupRace,
    /// A crash and a reopen: records, active set, head, events and claims
    /// survive; appends continue the chain; flushed buffered appends survive too.
    CrashReopen,
    /// Retention: archive, then the archives and the store verify as one chain,
    /// events of a request in flight stay readable, a second archive follows
    /// on, a foreign archive directory is left alone.
    RetentionVerify,
    /// A torn tail after a crash: the store opens with exactly the whole events,
    /// records without the torn ones, and appends continue the chain.
    TornTail,
}

impl Case {
    /// Every case, in the order [`run_all`] runs them.
    pub const ALL: [Case; 7] = [
        Case::ReadsAndRecords,
        Case::RejectedAppends,
        Case::GroupAppends,
        Case::DedupRace,
        Case::CrashReopen,
        Case::RetentionVerify,
        Case::TornTail,
    ];

    /// The case's name, snake_case.
    pub fn name(self) -> &'static str {
        match self {
            Case::ReadsAndRecords => "reads_and_records",
            Case::RejectedAppends => "rejected_appends",
            Case::GroupAppends => "group_appends",
            Case::DedupRace => "dedup_race",
            Case::CrashReopen => "crash_reopen",
            Case::RetentionVerify => "retention_verify",
            Case::TornTail => "torn_tail",
        }
    }
}

impl fmt::Display for Case {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How a case ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Every check held.
    Passed,
    /// Not run: the backend lacks a capability it needs (the reason says which).
    Skipped(String),
    /// A check failed (the reason says which, with what was found and expected).
    Failed(String),
}

/// The result of one case.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct CaseReport {
    /// Which case.
    pub case: Case,
    /// How it ended.
    pub outcome: Outcome,
    /// Parts of a passed case that were skipped, and why.
    pub notes: Vec<String>,
    /// How long it ran.
    pub elapsed: Duration,
}

impl CaseReport {
    /// Panic with the reason if the case failed (a skipped case is fine).
    pub fn assert_passed(&self) {
        if let Outcome::Failed(why) = &self.outcome {
            panic!("audit store conformance case {} failed: {why}", self.case);
        }
    }
}

/// What the suite found for one backend.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Report {
    /// The backend ([`StoreHarness::name`]).
    pub backend: String,
    /// Its capabilities.
    pub capabilities: Capabilities,
    /// Every case run, in order.
    pub cases: Vec<CaseReport>,
}

impl Report {
    /// The outcome of `case`, if it was run.
    pub fn outcome(&self, case: Case) -> Option<&Outcome> {
        self.cases
            .iter()
            .find(|c| c.case == case)
            .map(|c| &c.outcome)
    }

    /// The cases that passed.
    pub fn passed(&self) -> Vec<Case> {
        self.with(|o| matches!(o, Outcome::Passed))
    }

    /// The cases that were skipped.
    pub fn skipped(&self) -> Vec<Case> {
        self.with(|o| matches!(o, Outcome::Skipped(_)))
    }

    /// The cases that failed.
    pub fn failed(&self) -> Vec<Case> {
        self.with(|o| matches!(o, Outcome::Failed(_)))
    }

    fn with(&self, f: impl Fn(&Outcome) -> bool) -> Vec<Case> {
        self.cases
            .iter()
            .filter(|c| f(&c.outcome))
            .map(|c| c.case)
            .collect()
    }

    /// Panic with the whole report if any case failed (skipped cases are fine).
    pub fn assert_passed(&self) {
        if !self.failed().is_empty() {
            panic!("{self}");
        }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "audit store conformance, backend `{}` ({:?}): {} passed, {} skipped, {} failed",
            self.backend,
            self.capabilities,
            self.passed().len(),
            self.skipped().len(),
            self.failed().len()
        )?;
        for c in &self.cases {
            let ms = c.elapsed.as_millis();
            match &c.outcome {
                Outcome::Passed => writeln!(f, "  passed   {} ({ms} ms)", c.case)?,
                Outcome::Skipped(why) => writeln!(f, "  skipped  {}: {why}", c.case)?,
                Outcome::Failed(why) => writeln!(f, "  FAILED   {} ({ms} ms): {why}", c.case)?,
            }
            for note in &c.notes {
                writeln!(f, "           note: {note}")?;
            }
        }
        Ok(())
    }
}

/// Run every case ([`Case::ALL`]), one after the other, each on its own site.
pub async fn run_all(harness: &dyn StoreHarness) -> Report {
    let mut cases = Vec::with_capacity(Case::ALL.len());
    for case in Case::ALL {
        cases.push(run_case(harness, case).await);
    }
    Report {
        backend: harness.name(),
        capabilities: harness.capabilities(),
        cases,
    }
}

/// Run one case on a new site. A panic in the store or the harness, or a case
/// running past [`CASE_TIMEOUT`], is a failure.
pub async fn run_case(harness: &dyn StoreHarness, case: Case) -> CaseReport {
    let started = Instant::now();
    let mut cx = Cx {
        harness,
        caps: harness.capabilities(),
        notes: Vec::new(),
    };
    let run = AssertUnwindSafe(cx.run(case)).catch_unwind();
    let outcome = match tokio::time::timeout(CASE_TIMEOUT, run).await {
        Err(_) => Outcome::Failed(format!("did not finish within {CASE_TIMEOUT:?}")),
        Ok(Err(panic)) => Outcome::Failed(format!("panicked: {}", panic_text(&*panic))),
        Ok(Ok(Ok(()))) => Outcome::Passed,
        Ok(Ok(Err(Stop::Skip(why)))) => Outcome::Skipped(why),
        Ok(Ok(Err(Stop::Fail(why)))) => Outcome::Failed(why),
    };
    CaseReport {
        case,
        outcome,
        notes: cx.notes,
        elapsed: started.elapsed(),
    }
}

fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(a panic without a message)".into())
}

/// The harness of [`MemoryStore`]: a site is a new store, opening it again gives
/// the same store. It cannot crash (nothing would survive) nor tear a tail;
/// it archives.
#[derive(Debug, Clone, Copy, Default)]
pub struct MemoryHarness;

#[async_trait]
impl StoreHarness for MemoryHarness {
    fn name(&self) -> String {
        "memory".into()
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            archive: true,
            ..Capabilities::NONE
        }
    }

    async fn site(&self) -> Result<Box<dyn StoreSite>, String> {
        Ok(Box::new(MemorySite(MemoryStore::new())))
    }
}

#[derive(Debug)]
struct MemorySite(MemoryStore);

#[async_trait]
impl StoreSite for MemorySite {
    async fn open(&mut self) -> Result<Arc<dyn AuditStore>, String> {
        Ok(Arc::new(self.0.clone()))
    }
}

// ---------------------------------------------------------------------------
// Plumbing
// ---------------------------------------------------------------------------

/// Why a case stopped early.
#[derive(Debug)]
enum Stop {
    Skip(String),
    Fail(String),
}

type Step<T = ()> = Result<T, Stop>;

/// Fail the case unless `cond` holds.
macro_rules! ensure {
    ($cond:expr, $($what:tt)+) => {
        if !$cond {
            return Err(Stop::Fail(format!(
                "{} (audit/conformance.rs:{})",
                format_args!($($what)+),
                line!()
            )));
        }
    };
}

/// Fail the case unless `got == want`, showing both.
macro_rules! ensure_eq {
    ($got:expr, $want:expr, $($what:tt)+) => {
        match (&$got, &$want) {
            (got, want) => {
                if got != want {
                    return Err(Stop::Fail(format!(
                        "{}:\n  got:      {:?}\n  expected: {:?}\n  (audit/conformance.rs:{})",
                        format_args!($($what)+),
                        got,
                        want,
                        line!()
                    )));
                }
            }
        }
    };
}

/// Turn a store or harness error into a failure naming the call.
trait Must<T> {
    fn must(self, what: &str) -> Step<T>;
}

impl<T, E: fmt::Display> Must<T> for Result<T, E> {
    fn must(self, what: &str) -> Step<T> {
        self.map_err(|e| Stop::Fail(format!("{what}: {e}")))
    }
}

struct Cx<'a> {
    harness: &'a dyn StoreHarness,
    caps: Capabilities,
    notes: Vec<String>,
}

impl Cx<'_> {
    async fn run(&mut self, case: Case) -> Step {
        match case {
            Case::ReadsAndRecords => reads_and_records(self).await,
            Case::RejectedAppends => rejected_appends(self).await,
            Case::GroupAppends => group_appends(self).await,
            Case::DedupRace => dedup_race(self).await,
            Case::CrashReopen => crash_reopen(self).await,
            Case::RetentionVerify => retention_verify(self).await,
            Case::TornTail => torn_tail(self).await,
        }
    }

    async fn site(&self) -> Step<Box<dyn StoreSite>> {
        self.harness.site().await.must("harness: new site")
    }

    /// `Ok` if durable appends can be checked across a crash, else why not.
    fn crash_check(&self) -> Result<(), String> {
        match (self.caps.crash_reopen, self.caps.durable) {
            (true, true) => Ok(()),
            (false, _) => Err(
                "the harness cannot crash and reopen the store (capability `crash_reopen`)".into(),
            ),
            (true, false) => Err(
                "the backend does not promise durability across a crash (capability `durable`)"
                    .into(),
            ),
        }
    }

    /// Crash the store and open it again.
    async fn crash_and_reopen(
        &self,
        site: &mut Box<dyn StoreSite>,
        store: Arc<dyn AuditStore>,
    ) -> Step<Arc<dyn AuditStore>> {
        site.crash(store).await.must("harness: crash")?;
        site.open().await.must("harness: open after a crash")
    }
}

fn request(op: &str, frontend: &str) -> Request {
    Request {
        id: RequestId::new(),
        op: op.into(),
        args: Default::default(),
        raw_args: Vec::new(),
        secret_args: Vec::new(),
        actor: Actor::new(frontend, "conformance"),
        origin: Origin::new(frontend),
        dedup_key: None,
        dedup_expires: false,
        dry_run: false,
        provenance: Default::default(),
        created_at: Utc::now(),
        digest: "ab".repeat(32),
        retry_of: None,
    }
}

fn received(r: &Request) -> NewEvent {
    NewEvent::request(
        r.id,
        EventBody::Received {
            request: Arc::new(r.clone()),
        },
    )
}

fn to(id: RequestId, state: State) -> NewEvent {
    NewEvent::transition(id, Transition::to(state))
}

fn notice(id: Option<RequestId>, message: impl Into<String>) -> NewEvent {
    let body = EventBody::Notice {
        source: "conformance".into(),
        kind: "note".into(),
        message: message.into(),
        data: serde_json::Value::Null,
    };
    match id {
        Some(id) => NewEvent::request(id, body),
        None => NewEvent::global(body),
    }
}

fn opts(durable: bool, dedup_key: Option<&str>) -> AppendOptions {
    AppendOptions {
        durable,
        dedup_key: dedup_key.map(str::to_string),
        dedup_expires: false,
    }
}

/// The record of `id` folded from `events` (as a store must keep it).
fn expected_record(events: &[AuditEvent], id: RequestId) -> Option<RequestRecord> {
    let mut record: Option<RequestRecord> = None;
    for e in events.iter().filter(|e| e.request_id == Some(id)) {
        match (&e.body, &mut record) {
            (EventBody::Received { request }, None) => {
                record = Some(RequestRecord::new(Arc::clone(request), e));
            }
            (_, Some(r)) => r.apply(e),
            (_, None) => {}
        }
    }
    record
}

fn events_of(events: &[AuditEvent], id: RequestId) -> Vec<AuditEvent> {
    events
        .iter()
        .filter(|e| e.request_id == Some(id))
        .cloned()
        .collect()
}

fn ids(records: &[RequestRecord]) -> Vec<RequestId> {
    records.iter().map(|r| r.request.id).collect()
}

/// Every event in the store, read in pages.
async fn all_events(store: &dyn AuditStore) -> Step<Vec<AuditEvent>> {
    let mut out: Vec<AuditEvent> = Vec::new();
    loop {
        let after = out.last().map_or(0, |e| e.seq);
        let page = store.events(after, 257).await.must("events")?;
        if page.is_empty() {
            return Ok(out);
        }
        ensure!(
            page.len() <= 257,
            "events(after {after}, limit 257) returned {} events",
            page.len()
        );
        out.extend(page);
    }
}

/// `got` is what an append of `sent` must return: the same events in order,
/// consecutive seqs (from `first_seq` if given), each chained to the one before
/// (the first to `prev` if given) and hashed by the chain rule.
fn check_appended(
    got: &[AuditEvent],
    sent: &[NewEvent],
    first_seq: Option<u64>,
    prev: Option<&str>,
) -> Step {
    ensure_eq!(got.len(), sent.len(), "events returned by an append");
    for (i, (g, s)) in got.iter().zip(sent).enumerate() {
        ensure!(
            g.request_id == s.request_id && g.body == s.body,
            "event {i} of an append came back as {g:?}, not as sent ({s:?})"
        );
        ensure_eq!(
            g.hash,
            expected_hash(g),
            "hash of appended event #{} (the chain rule)",
            g.seq
        );
    }
    if let (Some(want), Some(first)) = (first_seq, got.first()) {
        ensure_eq!(first.seq, want, "seq of the first event of an append");
    }
    if let (Some(prev), Some(first)) = (prev, got.first()) {
        ensure_eq!(
            first.prev_hash.as_str(),
            prev,
            "prev_hash of appended event #{}",
            first.seq
        );
    }
    for w in got.windows(2) {
        ensure_eq!(
            w[1].seq,
            w[0].seq + 1,
            "seqs within one append (not contiguous)"
        );
        ensure_eq!(
            w[1].prev_hash,
            w[0].hash,
            "prev_hash of event #{}",
            w[1].seq
        );
    }
    Ok(())
}

/// Append and check the answer; the next seq and prev hash are the store's head.
async fn append_checked(
    store: &dyn AuditStore,
    events: Vec<NewEvent>,
    opts: AppendOptions,
) -> Step<Vec<AuditEvent>> {
    let (seq, prev) = store.head().await.must("head")?;
    let sent = events.clone();
    let got = store.append(events, opts).await.must("append")?;
    check_appended(&got, &sent, Some(seq + 1), Some(&prev))?;
    Ok(got)
}

/// `events` are the whole chain from `first_seq`, linked and hashed right.
fn check_chain(events: &[AuditEvent], first_seq: u64, first_prev: &str) -> Step {
    let mut prev = first_prev.to_string();
    for (i, e) in events.iter().enumerate() {
        ensure_eq!(
            e.seq,
            first_seq + i as u64,
            "seq at position {i} of the chain"
        );
        ensure_eq!(e.prev_hash, prev, "prev_hash of event #{}", e.seq);
        ensure_eq!(e.hash, expected_hash(e), "hash of event #{}", e.seq);
        prev.clone_from(&e.hash);
    }
    Ok(())
}

/// Everything a reader can see of a store, for before/after comparisons.
#[derive(Debug, PartialEq)]
struct Snapshot {
    head: (u64, String),
    events: Vec<AuditEvent>,
    records: Vec<Option<RequestRecord>>,
    request_events: Vec<Vec<AuditEvent>>,
    active: Vec<RequestRecord>,
    listed: Vec<RequestRecord>,
    claims: Vec<Option<RequestId>>,
}

impl Snapshot {
    async fn take(store: &dyn AuditStore, requests: &[RequestId], keys: &[&str]) -> Step<Self> {
        let mut records = Vec::new();
        let mut request_events = Vec::new();
        for id in requests {
            records.push(store.request(*id).await.must("request")?);
            request_events.push(store.request_events(*id).await.must("request_events")?);
        }
        let mut claims = Vec::new();
        for key in keys {
            claims.push(store.find_dedup(key).await.must("find_dedup")?);
        }
        Ok(Snapshot {
            head: store.head().await.must("head")?,
            events: all_events(store).await?,
            records,
            request_events,
            active: store.active_requests().await.must("active_requests")?,
            listed: store
                .list_requests(&RequestFilter::default(), None, 10_000)
                .await
                .must("list_requests")?,
            claims,
        })
    }
}

/// `store.verify()` is intact with `checked` events, head `head`, starting at
/// checkpoint `starts`.
async fn verify_intact(
    store: &dyn AuditStore,
    checked: u64,
    head: &(u64, String),
    starts: Option<u64>,
) -> Step {
    let v = store.verify().await.must("verify")?;
    ensure!(v.ok(), "verify found a break: {:?}", v.broken);
    ensure_eq!(
        (v.checked, v.head_seq, &v.head_hash, v.starts_at_checkpoint),
        (checked, head.0, &head.1, starts),
        "verify: (checked, head seq, head hash, starts at checkpoint)"
    );
    Ok(())
}

// ---------------------------------------------------------------------------
// The cases
// ---------------------------------------------------------------------------

async fn reads_and_records(cx: &mut Cx<'_>) -> Step {
    let mut site = cx.site().await?;
    let store = site.open().await.must("harness: open")?;
    let store = &*store;
    let genesis = (0, GENESIS_HASH.to_string());

    // An empty store.
    ensure_eq!(
        store.head().await.must("head")?,
        genesis,
        "head of an empty store"
    );
    verify_intact(store, 0, &genesis, None).await?;
    ensure_eq!(
        store.events(0, 10).await.must("events")?,
        [],
        "events of an empty store"
    );
    ensure_eq!(
        store.active_requests().await.must("active_requests")?,
        [],
        "active requests of an empty store"
    );
    ensure_eq!(
        store
            .list_requests(&RequestFilter::default(), None, 10)
            .await
            .must("list_requests")?,
        [],
        "requests of an empty store"
    );
    ensure_eq!(
        store
            .find_dedup("conformance-nobody")
            .await
            .must("find_dedup")?,
        None,
        "find_dedup of an unknown key"
    );
    let stranger = RequestId::new();
    ensure_eq!(
        store.request(stranger).await.must("request")?,
        None,
        "record of an unknown request"
    );
    ensure_eq!(
        store
            .request_events(stranger)
            .await
            .must("request_events")?,
        [],
        "events of an unknown request"
    );
    ensure_eq!(
        store
            .append(Vec::new(), AppendOptions::durable())
            .await
            .must("append of nothing")?,
        [],
        "an append of no events"
    );
    ensure_eq!(
        store.head().await.must("head")?,
        genesis,
        "head after an append of no events"
    );

    // Five requests and global events, durable and buffered appends mixed.
    let a = request("ops.alpha", "cli");
    let b = request("ops.alpha", "cli");
    let c = request("ops.alpha", "cli");
    let d = request("ops.beta", "api");
    let e = request("ops.beta", "api");
    let script: Vec<(Vec<NewEvent>, bool)> = vec![
        (vec![received(&a), to(a.id, State::Running)], true),
        (vec![received(&b)], false),
        (vec![notice(None, "a global notice")], true),
        (vec![to(a.id, State::Succeeded), received(&c)], true),
        (
            vec![NewEvent::transition(
                b.id,
                Transition::to(State::Failed).reason("exit 1"),
            )],
            false,
        ),
        (
            vec![received(&d), received(&e), to(c.id, State::Running)],
            true,
        ),
        (
            vec![to(e.id, State::Succeeded), notice(Some(d.id), "about d")],
            false,
        ),
    ];
    let mut all: Vec<AuditEvent> = Vec::new();
    for (events, durable) in script {
        all.extend(append_checked(store, events, opts(durable, None)).await?);
    }
    let n = all.len() as u64;
    ensure_eq!(n, 12, "events appended");
    check_chain(&all, 1, GENESIS_HASH)?;
    let head = (n, all[all.len() - 1].hash.clone());
    ensure_eq!(store.head().await.must("head")?, head, "head");
    ensure_eq!(all_events(store).await?, all, "every event, read in pages");

    // Paging through events.
    let page = |after: u64, limit: usize| store.events(after, limit);
    ensure_eq!(page(0, 3).await.must("events")?, all[..3], "events(0, 3)");
    ensure_eq!(page(3, 4).await.must("events")?, all[3..7], "events(3, 4)");
    ensure_eq!(page(0, 0).await.must("events")?, [], "events(0, 0)");
    ensure_eq!(
        page(n - 1, 10).await.must("events")?,
        all[11..],
        "events(11, 10)"
    );
    ensure_eq!(
        page(n, 10).await.must("events")?,
        [],
        "events after the head"
    );
    ensure_eq!(
        page(0, usize::MAX).await.must("events")?,
        all,
        "events(0, usize::MAX)"
    );

    // Records, folded from the events.
    let everyone = [&a, &b, &c, &d, &e];
    let mut records = Vec::new();
    for r in everyone {
        let want = expected_record(&all, r.id);
        ensure_eq!(
            store.request(r.id).await.must("request")?,
            want,
            "record of request {} ({})",
            r.id,
            r.op
        );
        ensure_eq!(
            store.request_events(r.id).await.must("request_events")?,
            events_of(&all, r.id),
            "events of request {}",
            r.id
        );
        records.extend(want);
    }
    let states: Vec<(State, Option<&str>)> = records
        .iter()
        .map(|r| (r.state, r.reason.as_deref()))
        .collect();
    ensure_eq!(
        states,
        [
            (State::Succeeded, None),
            (State::Failed, Some("exit 1")),
            (State::Running, None),
            (State::Received, None),
            (State::Succeeded, None),
        ],
        "states and reasons of the records"
    );
    ensure_eq!(
        (records[3].last_seq, records[3].last_hash.as_str()),
        (n, all[11].hash.as_str()),
        "last seq and hash of the record of d (its notice came last)"
    );

    // Active requests: not terminal, oldest id first.
    let mut active: Vec<RequestRecord> = records
        .iter()
        .filter(|r| !r.state.is_terminal())
        .cloned()
        .collect();
    active.sort_by_key(|r| r.request.id);
    ensure_eq!(
        store.active_requests().await.must("active_requests")?,
        active,
        "active requests"
    );

    // Listing: newest id first, filtered, paged with `before`.
    let mut newest_first = records.clone();
    newest_first.sort_by_key(|r| std::cmp::Reverse(r.request.id));
    let list = |filter: RequestFilter, before: Option<RequestId>, limit: usize| async move {
        store.list_requests(&filter, before, limit).await
    };
    let all_filter = RequestFilter::default();
    let listed = list(all_filter.clone(), None, 100)
        .await
        .must("list_requests")?;
    ensure_eq!(
        ids(&listed),
        ids(&newest_first),
        "list_requests, no filter (newest id first)"
    );
    ensure_eq!(listed, newest_first, "records listed");
    let mut before = None;
    for (i, want) in newest_first.chunks(2).enumerate() {
        let got = list(all_filter.clone(), before, 2)
            .await
            .must("list_requests")?;
        ensure_eq!(ids(&got), ids(want), "page {i} of list_requests (limit 2)");
        before = got.last().map(|r| r.request.id);
    }
    ensure_eq!(
        list(all_filter.clone(), before, 2)
            .await
            .must("list_requests")?,
        [],
        "list_requests before the oldest request"
    );
    ensure_eq!(
        list(all_filter.clone(), None, 0)
            .await
            .must("list_requests")?,
        [],
        "list_requests with limit 0"
    );
    let only = |f: &dyn Fn(&RequestRecord) -> bool| -> Vec<RequestId> {
        newest_first
            .iter()
            .filter(|r| f(r))
            .map(|r| r.request.id)
            .collect()
    };
    let succeeded = RequestFilter {
        states: vec![State::Succeeded],
        ..RequestFilter::default()
    };
    ensure_eq!(
        ids(&list(succeeded.clone(), None, 100)
            .await
            .must("list_requests")?),
        only(&|r| r.state == State::Succeeded),
        "list_requests of succeeded requests"
    );
    let beta = RequestFilter {
        op: Some("ops.beta".into()),
        ..RequestFilter::default()
    };
    ensure_eq!(
        ids(&list(beta, None, 100).await.must("list_requests")?),
        only(&|r| r.request.op == "ops.beta"),
        "list_requests of op ops.beta"
    );
    let api_succeeded = RequestFilter {
        frontend: Some("api".into()),
        ..succeeded
    };
    ensure_eq!(
        ids(&list(api_succeeded, None, 100).await.must("list_requests")?),
        [e.id],
        "list_requests of succeeded requests from the api frontend"
    );
    let newest = newest_first[0].request.id;
    let older_running = RequestFilter {
        states: vec![State::Running, State::Received],
        ..RequestFilter::default()
    };
    ensure_eq!(
        ids(&list(older_running, Some(newest), 100)
            .await
            .must("list_requests")?),
        only(&|r| r.request.id < newest && !r.state.is_terminal()),
        "list_requests of running or received requests older than the newest"
    );

    verify_intact(store, n, &head, None).await?;
    store.flush().await.must("flush")?;
    let size = store.size_on_disk().await.must("size_on_disk")?;
    ensure!(size > 0, "size_on_disk is 0 with {n} events stored");
    Ok(())
}

async fn rejected_appends(cx: &mut Cx<'_>) -> Step {
    let mut site = cx.site().await?;
    let store = site.open().await.must("harness: open")?;
    let store = &*store;
    let genesis = (0, GENESIS_HASH.to_string());
    let ghost = RequestId::new();
    let r = request("ops.reject", "cli");

    // An event of a request never received: the whole call is refused.
    let res = store
        .append(
            vec![received(&r), to(ghost, State::Running)],
            AppendOptions::durable(),
        )
        .await;
    ensure!(
        res.is_err(),
        "an append with an event of an unknown request was accepted: {res:?}"
    );
    ensure_eq!(
        store.head().await.must("head")?,
        genesis,
        "head after a refused append"
    );
    ensure_eq!(
        store.request(r.id).await.must("request")?,
        None,
        "record of a request whose append was refused"
    );
    ensure_eq!(
        all_events(store).await?,
        [],
        "events after a refused append"
    );

    // `received` once per request.
    let first = append_checked(store, vec![received(&r)], AppendOptions::durable()).await?;
    let res = store
        .append(vec![received(&r)], AppendOptions::durable())
        .await;
    ensure!(
        matches!(&res, Err(e) if !matches!(e, StoreError::Duplicate(_))),
        "a second `received` of request {} gave {res:?}, expected an error other than Duplicate",
        r.id
    );
    let head = (1, first[0].hash.clone());
    ensure_eq!(
        store.head().await.must("head")?,
        head,
        "head after a second `received`"
    );

    // A refused event at the end refuses the events before it.
    let r2 = request("ops.reject", "cli");
    let res = store
        .append(
            vec![
                to(r.id, State::Running),
                received(&r2),
                to(ghost, State::Failed),
            ],
            AppendOptions::buffered(),
        )
        .await;
    ensure!(
        res.is_err(),
        "an append ending with an event of an unknown request was accepted: {res:?}"
    );
    ensure_eq!(
        store.head().await.must("head")?,
        head,
        "head after a refused append"
    );
    ensure_eq!(
        store.request(r.id).await.must("request")?,
        expected_record(&first, r.id),
        "record of {} after a refused append of its transition",
        r.id
    );
    ensure_eq!(
        store.request(r2.id).await.must("request")?,
        None,
        "record of a request received in a refused append"
    );
    ensure_eq!(
        ids(&store.active_requests().await.must("active_requests")?),
        [r.id],
        "active requests"
    );

    // A dedup key is claimed once; a claimed key refuses the whole call.
    let key = "conformance-rejected-1";
    let r3 = request("ops.reject", "cli");
    let claimed = append_checked(store, vec![received(&r3)], opts(false, Some(key))).await?;
    ensure_eq!(
        store.find_dedup(key).await.must("find_dedup")?,
        Some(r3.id),
        "find_dedup after a claim"
    );
    let r4 = request("ops.reject", "cli");
    let res = store
        .append(
            vec![received(&r4), to(r4.id, State::Running)],
            opts(true, Some(key)),
        )
        .await;
    ensure!(
        matches!(res, Err(StoreError::Duplicate(id)) if id == r3.id),
        "an append with a claimed dedup key gave {res:?}, expected Duplicate({})",
        r3.id
    );
    let head = (2, claimed[0].hash.clone());
    ensure_eq!(
        store.head().await.must("head")?,
        head,
        "head after a duplicate"
    );
    ensure_eq!(
        store.request(r4.id).await.must("request")?,
        None,
        "record of a duplicate request"
    );

    // A call refused for another reason claims nothing.
    let key5 = "conformance-rejected-5";
    let r5 = request("ops.reject", "cli");
    let res = store
        .append(
            vec![received(&r5), to(ghost, State::Running)],
            opts(true, Some(key5)),
        )
        .await;
    ensure!(res.is_err(), "a refused append was accepted: {res:?}");
    ensure_eq!(
        store.find_dedup(key5).await.must("find_dedup")?,
        None,
        "claim of a refused append"
    );
    let got = append_checked(store, vec![received(&r5)], opts(true, Some(key5))).await?;
    ensure_eq!(
        store.find_dedup(key5).await.must("find_dedup")?,
        Some(r5.id),
        "claim after the refused append"
    );
    let head = (3, got[0].hash.clone());
    verify_intact(store, 3, &head, None).await?;
    Ok(())
}

async fn group_appends(cx: &mut Cx<'_>) -> Step {
    const ROUNDS: usize = 4;
    let mut site = cx.site().await?;
    let store = site.open().await.must("harness: open")?;
    let start = Arc::new(tokio::sync::Barrier::new(GROUP_TASKS));
    let mut tasks = Vec::with_capacity(GROUP_TASKS);
    for t in 0..GROUP_TASKS {
        let store = Arc::clone(&store);
        let start = Arc::clone(&start);
        tasks.push(tokio::spawn(async move {
            let r = request(&format!("ops.group.{t}"), "cli");
            let id = r.id;
            let mut calls = vec![vec![received(&r), to(id, State::Running)]];
            for round in 1..ROUNDS - 1 {
                let n = (t + round) % 3 + 1;
                calls.push(
                    (0..n)
                        .map(|i| notice(Some(id), format!("task {t} round {round} #{i}")))
                        .collect(),
                );
            }
            calls.push(vec![
                notice(Some(id), format!("task {t} done")),
                to(id, State::Succeeded),
            ]);
            start.wait().await;
            let mut answers: Vec<Vec<AuditEvent>> = Vec::with_capacity(calls.len());
            for call in calls {
                let sent = call.clone();
                let got = store
                    .append(call, AppendOptions::durable())
                    .await
                    .must(&format!("task {t}: append"))?;
                check_appended(&got, &sent, None, None)?;
                if let (Some(last), Some(first)) =
                    (answers.last().and_then(|a| a.last()), got.first())
                {
                    ensure!(
                        first.seq > last.seq,
                        "task {t}: a later append got #{} after an earlier one got #{}",
                        first.seq,
                        last.seq
                    );
                }
                answers.push(got);
            }
            Ok::<_, Stop>((id, answers))
        }));
    }
    let mut per_task = Vec::with_capacity(GROUP_TASKS);
    for task in tasks {
        per_task.push(task.await.must("an appending task")??);
    }
    // Every seq once, from 1 without a gap, one chain.
    let mut by_seq: BTreeMap<u64, AuditEvent> = BTreeMap::new();
    for (_, answers) in &per_task {
        for e in answers.iter().flatten() {
            if let Some(other) = by_seq.insert(e.seq, e.clone()) {
                return Err(Stop::Fail(format!(
                    "seq #{} was returned twice: {other:?} and {e:?}",
                    e.seq
                )));
            }
        }
    }
    let total = by_seq.len() as u64;
    let chain: Vec<AuditEvent> = by_seq.into_values().collect();
    check_chain(&chain, 1, GENESIS_HASH)?;
    let head = (total, chain[chain.len() - 1].hash.clone());
    ensure_eq!(store.head().await.must("head")?, head, "head");
    ensure_eq!(
        all_events(&*store).await?,
        chain,
        "the stored events against the acknowledged ones"
    );
    verify_intact(&*store, total, &head, None).await?;
    let check_records = |store: Arc<dyn AuditStore>| {
        let per_task = &per_task;
        async move {
            for (id, answers) in per_task {
                let mine: Vec<AuditEvent> = answers.iter().flatten().cloned().collect();
                let record = store.request(*id).await.must("request")?;
                ensure_eq!(
                    record,
                    expected_record(&mine, *id),
                    "record of request {id}"
                );
                ensure_eq!(
                    record.map(|r| r.state),
                    Some(State::Succeeded),
                    "state of request {id}"
                );
                ensure_eq!(
                    store.request_events(*id).await.must("request_events")?,
                    mine,
                    "events of request {id}"
                );
            }
            ensure_eq!(
                store.active_requests().await.must("active_requests")?,
                [],
                "active requests after every task finished"
            );
            Ok::<_, Stop>(())
        }
    };
    check_records(Arc::clone(&store)).await?;

    // Acknowledged durable means it survives a crash.
    if let Err(why) = cx.crash_check() {
        cx.notes
            .push(format!("durability after a crash not checked: {why}"));
        return Ok(());
    }
    let store = cx.crash_and_reopen(&mut site, store).await?;
    ensure_eq!(
        all_events(&*store).await?,
        chain,
        "events after a crash (every acknowledged durable event must survive)"
    );
    ensure_eq!(store.head().await.must("head")?, head, "head after a crash");
    verify_intact(&*store, total, &head, None).await?;
    check_records(store).await
}

/// `DEDUP_RACERS` tasks append `received` + `running` of their own request with
/// the same dedup key at once (`carried`: the request carries the key too, as
/// the executor's do). Returns the winner and its events.
async fn race(
    store: &Arc<dyn AuditStore>,
    key: &str,
    carried: bool,
) -> Step<(RequestId, Vec<AuditEvent>)> {
    let before = store.head().await.must("head")?;
    let start = Arc::new(tokio::sync::Barrier::new(DEDUP_RACERS));
    let mut tasks = Vec::with_capacity(DEDUP_RACERS);
    for _ in 0..DEDUP_RACERS {
        let store = Arc::clone(store);
        let start = Arc::clone(&start);
        let key = key.to_string();
        tasks.push(tokio::spawn(async move {
            let mut r = request("ops.dedup", "cli");
            if carried {
                r.dedup_key = Some(key.clone());
            }
            let events = vec![received(&r), to(r.id, State::Running)];
            start.wait().await;
            let res = store.append(events, opts(true, Some(&key))).await;
            (r.id, res)
        }));
    }
    let mut winners = Vec::new();
    let mut losers = Vec::new();
    for task in tasks {
        match task.await.must("a racing task")? {
            (id, Ok(events)) => winners.push((id, events)),
            (id, Err(e)) => losers.push((id, e)),
        }
    }
    ensure_eq!(
        winners.len(),
        1,
        "racers whose append with dedup key {key:?} succeeded"
    );
    let (winner, events) = winners.remove(0);
    for (id, e) in &losers {
        ensure!(
            matches!(e, StoreError::Duplicate(w) if *w == winner),
            "racer {id} got `{e}` ({e:?}), expected Duplicate({winner})"
        );
        ensure_eq!(
            store.request(*id).await.must("request")?,
            None,
            "record of losing racer {id}"
        );
    }
    let want: Vec<u64> = vec![before.0 + 1, before.0 + 2];
    ensure_eq!(
        events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        want,
        "seqs of the winner's events"
    );
    ensure_eq!(
        events[0].prev_hash,
        before.1,
        "prev_hash of the winner's first event"
    );
    ensure_eq!(
        store.head().await.must("head")?,
        (before.0 + 2, events[1].hash.clone()),
        "head after the race (only the winner appended)"
    );
    ensure_eq!(
        store.find_dedup(key).await.must("find_dedup")?,
        Some(winner),
        "find_dedup({key:?}) after the race"
    );
    Ok((winner, events))
}

async fn dedup_race(cx: &mut Cx<'_>) -> Step {
    let mut site = cx.site().await?;
    let store = site.open().await.must("harness: open")?;
    // Several races per way of claiming, each with its own key: a claim that is
    // checked apart from its append loses some race, if not every one.
    let mut won: Vec<(String, bool, RequestId)> = Vec::new();
    let mut all: Vec<AuditEvent> = Vec::new();
    for round in 0..DEDUP_ROUNDS {
        for carried in [true, false] {
            let way = if carried { "carried" } else { "plain" };
            let key = format!("conformance-dedup-{way}-{round}");
            let (winner, events) = race(&store, &key, carried).await?;
            won.push((key, carried, winner));
            all.extend(events);
        }
    }
    let n = all.len() as u64;
    let head = (n, all[all.len() - 1].hash.clone());
    check_chain(&all, 1, GENESIS_HASH)?;

    let (all, head, won) = (&all, &head, &won);
    let late_duplicates = |store: Arc<dyn AuditStore>| async move {
        for (key, carried, winner) in won {
            let mut late = request("ops.dedup", "cli");
            if *carried {
                late.dedup_key = Some(key.clone());
            }
            let res = store
                .append(vec![received(&late)], opts(true, Some(key)))
                .await;
            ensure!(
                matches!(res, Err(StoreError::Duplicate(w)) if w == *winner),
                "a later duplicate with key {key:?} gave {res:?}, expected Duplicate({winner})"
            );
            ensure_eq!(
                store.find_dedup(key).await.must("find_dedup")?,
                Some(*winner),
                "find_dedup({key:?})"
            );
            ensure_eq!(
                store.request(*winner).await.must("request")?,
                expected_record(all, *winner),
                "record of the winner with key {key:?}"
            );
        }
        ensure_eq!(
            &store.head().await.must("head")?,
            head,
            "head after later duplicates"
        );
        ensure_eq!(
            &all_events(&*store).await?,
            all,
            "events (only the winners')"
        );
        verify_intact(&*store, n, head, None).await
    };
    late_duplicates(Arc::clone(&store)).await?;

    if let Err(why) = cx.crash_check() {
        cx.notes
            .push(format!("claims after a crash not checked: {why}"));
        return Ok(());
    }
    let store = cx.crash_and_reopen(&mut site, store).await?;
    late_duplicates(store).await
}

async fn crash_reopen(cx: &mut Cx<'_>) -> Step {
    cx.crash_check().map_err(Stop::Skip)?;
    let mut site = cx.site().await?;
    let store = site.open().await.must("harness: open")?;
    let key = "conformance-crash-1";
    let a = request("ops.crash", "cli");
    let b = request("ops.crash", "cli");
    let c = request("ops.crash", "api");
    let mut d = request("ops.crash", "api");
    d.dedup_key = Some(key.to_string());
    let pending = Transition {
        approvals_needed: Some(2),
        expires_at: Some(Utc::now() + chrono::Duration::hours(1)),
        ..Transition::to(State::PendingApproval)
    };
    let script: Vec<(Vec<NewEvent>, Option<&str>)> = vec![
        (vec![received(&a), to(a.id, State::Running)], None),
        (
            vec![received(&b), NewEvent::transition(b.id, pending)],
            None,
        ),
        (vec![received(&c)], None),
        (vec![notice(None, "before the crash")], None),
        (vec![to(a.id, State::Succeeded)], None),
        (vec![received(&d)], Some(key)),
        (vec![to(c.id, State::Running)], None),
    ];
    for (events, key) in script {
        append_checked(&*store, events, opts(true, key)).await?;
    }
    let everyone = [a.id, b.id, c.id, d.id];
    let keys = [key, "conformance-crash-unclaimed"];
    let before = Snapshot::take(&*store, &everyone, &keys).await?;
    let n = before.head.0;
    ensure_eq!(n, 9, "events appended");
    ensure_eq!(
        ids(&before.active),
        {
            let mut v = vec![b.id, c.id, d.id];
            v.sort();
            v
        },
        "active requests before the crash"
    );

    let store = cx.crash_and_reopen(&mut site, store).await?;
    let after = Snapshot::take(&*store, &everyone, &keys).await?;
    ensure_eq!(
        after,
        before,
        "what a reader sees, after a crash and a reopen"
    );
    verify_intact(&*store, n, &before.head, None).await?;

    // Appends continue the chain; records survived, so `received` is refused.
    append_checked(
        &*store,
        vec![to(c.id, State::Succeeded)],
        AppendOptions::durable(),
    )
    .await?;
    let res = store
        .append(vec![received(&a)], AppendOptions::durable())
        .await;
    ensure!(
        res.is_err(),
        "a second `received` of {} after the reopen was accepted: {res:?}",
        a.id
    );
    let res = store
        .append(
            vec![received(&request("ops.crash", "cli"))],
            opts(true, Some(key)),
        )
        .await;
    ensure!(
        matches!(res, Err(StoreError::Duplicate(w)) if w == d.id),
        "a duplicate of key {key:?} after the reopen gave {res:?}, expected Duplicate({})",
        d.id
    );

    // Buffered appends, then a flush: durable too.
    for i in 0..3 {
        append_checked(
            &*store,
            vec![notice(Some(b.id), format!("buffered #{i}"))],
            AppendOptions::buffered(),
        )
        .await?;
    }
    store.flush().await.must("flush")?;
    let before = Snapshot::take(&*store, &everyone, &keys).await?;
    ensure_eq!(before.head.0, n + 4, "head after the buffered appends");
    let store = cx.crash_and_reopen(&mut site, store).await?;
    let after = Snapshot::take(&*store, &everyone, &keys).await?;
    ensure_eq!(
        after,
        before,
        "what a reader sees after a flush, a crash and a reopen"
    );
    let mut active = vec![b.id, d.id];
    active.sort();
    ensure_eq!(
        ids(&after.active),
        active,
        "active requests after the second reopen"
    );
    verify_intact(&*store, n + 4, &before.head, None).await
}

async fn retention_verify(cx: &mut Cx<'_>) -> Step {
    if !cx.caps.archive {
        return Err(Stop::Skip(
            "the backend does not archive (capability `archive`)".into(),
        ));
    }
    let mut site = cx.site().await?;
    let mut store = site.open().await.must("harness: open")?;
    let archive = tempfile::tempdir().must("a temporary archive directory")?;
    let dir = archive.path().join("archive");

    // #1..=12: six finished requests; #13, #14: one in flight; #15..=18: two
    // more finished; #19: a global notice.
    let done: Vec<Request> = (0..6).map(|_| request("ops.old", "cli")).collect();
    for r in &done {
        append_checked(&*store, vec![received(r)], AppendOptions::durable()).await?;
        append_checked(
            &*store,
            vec![to(r.id, State::Succeeded)],
            AppendOptions::buffered(),
        )
        .await?;
    }
    let flight = request("ops.long", "cli");
    append_checked(
        &*store,
        vec![received(&flight), to(flight.id, State::Running)],
        AppendOptions::durable(),
    )
    .await?;
    let late: Vec<Request> = (0..2).map(|_| request("ops.new", "cli")).collect();
    for r in &late {
        append_checked(
            &*store,
            vec![received(r), to(r.id, State::Succeeded)],
            AppendOptions::durable(),
        )
        .await?;
    }
    append_checked(
        &*store,
        vec![notice(None, "before retention")],
        AppendOptions::durable(),
    )
    .await?;
    let before = all_events(&*store).await?;
    ensure_eq!(before.len(), 19, "events appended");

    // Asked for everything: only what precedes the request in flight goes.
    let report = store
        .archive(u64::MAX, &dir)
        .await
        .must("archive")?
        .ok_or_else(|| Stop::Fail("archive found nothing to archive".into()))?;
    let file = dir.join(archive_file_name(1, 12));
    ensure_eq!(
        (
            &report.file,
            report.first_seq,
            report.through_seq,
            report.checkpoint_seq,
            report.records_removed,
            &report.last_hash
        ),
        (&file, 1, 12, 20, 6, &before[11].hash),
        "archive report (file, first, through, checkpoint seq, records removed, last hash)"
    );
    let text = std::fs::read_to_string(&file).must("reading the archive file")?;
    ensure_eq!(report.bytes, text.len() as u64, "bytes of the archive file");
    let want_lines: Vec<String> = before[..12]
        .iter()
        .map(|e| serde_json::to_string(e).map(|l| l + "\n"))
        .collect::<Result<_, _>>()
        .must("encoding events")?;
    ensure_eq!(
        text,
        want_lines.concat(),
        "the archive file (one JSON line per event, in order)"
    );

    // The live chain starts at #13 and its checkpoint accounts for #1..=#12.
    let live = all_events(&*store).await?;
    ensure_eq!(
        live.first().map(|e| e.seq),
        Some(13),
        "first live event after the archive"
    );
    ensure_eq!(live[..7], before[12..], "live events after the archive");
    let checkpoint = EventBody::Checkpoint {
        archived_through_seq: 12,
        archived_last_hash: before[11].hash.clone(),
        archive: archive_file_name(1, 12),
    };
    ensure_eq!(live.len(), 8, "live events after the archive");
    ensure_eq!(
        (live[7].seq, &live[7].request_id, &live[7].body),
        (20, &None, &checkpoint),
        "the checkpoint event"
    );
    check_chain(&live, 13, &before[11].hash)?;
    let head = (20, live[7].hash.clone());
    ensure_eq!(
        store.head().await.must("head")?,
        head,
        "head after the archive"
    );
    verify_intact(&*store, 8, &head, Some(13)).await?;

    let check_live = |store: Arc<dyn AuditStore>| {
        let (dir, before, flight, done, late) = (&dir, &before, &flight, &done, &late);
        async move {
            let files = archive_files(dir).must("listing archives")?;
            let v = verify_with_archives(&*store, &files)
                .await
                .must("verify_with_archives")?;
            ensure!(
                v.report.ok(),
                "archives + store do not verify: {:?} (in {:?})",
                v.report.broken,
                v.broken_in
            );
            ensure_eq!(
                (v.archived, v.overlap, v.report.checked, v.report.head_seq),
                (12, 0, 20, 20),
                "verify_with_archives (archived, overlap, checked, head seq)"
            );
            ensure_eq!(
                store
                    .request_events(flight.id)
                    .await
                    .must("request_events")?,
                before[12..14],
                "events of the request in flight after the archive"
            );
            ensure_eq!(
                store.request(flight.id).await.must("request")?,
                expected_record(before, flight.id),
                "record of the request in flight"
            );
            for r in done {
                ensure_eq!(
                    store.request(r.id).await.must("request")?,
                    None,
                    "record of archived request {}",
                    r.id
                );
            }
            let mut listed = vec![flight.id, late[0].id, late[1].id];
            listed.sort_by(|x, y| y.cmp(x));
            ensure_eq!(
                ids(&store
                    .list_requests(&RequestFilter::default(), None, 100)
                    .await
                    .must("list_requests")?),
                listed,
                "requests listed after the archive"
            );
            ensure_eq!(
                ids(&store.active_requests().await.must("active_requests")?),
                [flight.id],
                "active requests after the archive"
            );
            Ok::<_, Stop>(())
        }
    };
    check_live(Arc::clone(&store)).await?;

    // Nothing more goes while the request is in flight.
    ensure_eq!(
        store.archive(12, &dir).await.must("archive")?,
        None,
        "archive(12) once #1..=#12 are archived"
    );
    ensure_eq!(
        store.archive(u64::MAX, &dir).await.must("archive")?,
        None,
        "archive(everything) while #13 is in flight"
    );
    ensure_eq!(
        store.head().await.must("head")?,
        head,
        "head after archives with nothing to do"
    );

    match cx.crash_check() {
        Ok(()) => {
            store = cx.crash_and_reopen(&mut site, store).await?;
            check_live(Arc::clone(&store)).await?;
            ensure_eq!(store.head().await.must("head")?, head, "head after a crash");
        }
        Err(why) => cx
            .notes
            .push(format!("retention after a crash not checked: {why}")),
    }

    // The request finishes; a second archive follows on.
    let fin = append_checked(
        &*store,
        vec![to(flight.id, State::Succeeded)],
        AppendOptions::durable(),
    )
    .await?;
    let second = store
        .archive(u64::MAX, &dir)
        .await
        .must("archive")?
        .ok_or_else(|| Stop::Fail("the second archive found nothing to archive".into()))?;
    ensure_eq!(
        (
            second.first_seq,
            second.through_seq,
            second.checkpoint_seq,
            second.records_removed,
            &second.last_hash
        ),
        (13, 20, 22, 2, &head.1),
        "second archive report (first, through, checkpoint seq, records removed, last hash)"
    );
    let files = archive_files(&dir).must("listing archives")?;
    ensure_eq!(
        files,
        [file.clone(), dir.join(archive_file_name(13, 20))],
        "archive files"
    );
    let v = verify_with_archives(&*store, &files)
        .await
        .must("verify_with_archives")?;
    ensure!(
        v.report.ok(),
        "archives + store do not verify after the second archive: {:?}",
        v.report.broken
    );
    ensure_eq!(
        (v.archived, v.overlap, v.report.checked, v.report.head_seq),
        (20, 0, 22, 22),
        "verify_with_archives after the second archive (archived, overlap, checked, head seq)"
    );
    let live = all_events(&*store).await?;
    ensure_eq!(
        live.iter().map(|e| e.seq).collect::<Vec<_>>(),
        [21, 22],
        "live events after the second archive"
    );
    ensure_eq!(live[0], fin[0], "the last transition, still live");
    verify_intact(&*store, 2, &(22, live[1].hash.clone()), Some(21)).await?;
    // The request that finished last keeps its record: its last event is live.
    let mut finished = expected_record(&before, flight.id)
        .ok_or_else(|| Stop::Fail(format!("no `received` of {}", flight.id)))?;
    finished.apply(&fin[0]);
    ensure_eq!(
        store
            .list_requests(&RequestFilter::default(), None, 100)
            .await
            .must("list_requests")?,
        [finished],
        "requests listed after the second archive"
    );
    ensure_eq!(
        store
            .request_events(flight.id)
            .await
            .must("request_events")?,
        fin,
        "live events of the request that finished last"
    );

    // A new store beside the old archive directory never touches the archives.
    let texts: Vec<String> = files
        .iter()
        .map(std::fs::read_to_string)
        .collect::<Result<_, _>>()
        .must("reading the archives")?;
    let mut other_site = cx.site().await?;
    let other = other_site
        .open()
        .await
        .must("harness: open a second store")?;
    for _ in 0..8 {
        let r = request("ops.other", "cli");
        append_checked(
            &*other,
            vec![received(&r), to(r.id, State::Succeeded)],
            AppendOptions::durable(),
        )
        .await?;
    }
    let res = other.archive(u64::MAX, &dir).await;
    ensure!(
        res.is_err(),
        "another store archived into a directory holding this store's archives: {res:?}"
    );
    ensure_eq!(
        archive_files(&dir).must("listing archives")?,
        files,
        "archive files after the other store's attempt"
    );
    for (f, t) in files.iter().zip(&texts) {
        ensure_eq!(
            &std::fs::read_to_string(f).must("reading an archive")?,
            t,
            "{} after the other store's attempt",
            f.display()
        );
    }
    ensure_eq!(
        other
            .events(0, 1)
            .await
            .must("events")?
            .first()
            .map(|e| e.seq),
        Some(1),
        "first event of the other store (nothing removed)"
    );
    Ok(())
}

async fn torn_tail(cx: &mut Cx<'_>) -> Step {
    if !cx.caps.crash_reopen {
        return Err(Stop::Skip(
            "the harness cannot crash and reopen the store (capability `crash_reopen`)".into(),
        ));
    }
    if !cx.caps.torn_tail {
        return Err(Stop::Skip(
            "the harness cannot tear the store's tail (capability `torn_tail`)".into(),
        ));
    }
    let mut site = cx.site().await?;
    let store = site.open().await.must("harness: open")?;
    let r = request("ops.torn", "cli");
    append_checked(&*store, vec![received(&r)], AppendOptions::durable()).await?;
    append_checked(
        &*store,
        vec![notice(None, "durable")],
        AppendOptions::durable(),
    )
    .await?;
    let durable_through = 2;
    append_checked(
        &*store,
        vec![to(r.id, State::Running)],
        AppendOptions::buffered(),
    )
    .await?;
    append_checked(
        &*store,
        vec![notice(Some(r.id), "the tail")],
        AppendOptions::buffered(),
    )
    .await?;
    let before = all_events(&*store).await?;
    let n = before.len() as u64;

    site.crash(store).await.must("harness: crash")?;
    let torn = site
        .tear_tail(durable_through)
        .await
        .must("harness: tear_tail")?;
    ensure!(
        torn.first_torn_seq > durable_through && torn.first_torn_seq <= n + 1,
        "the harness reports a tear from #{}, outside the unsynced tail #{}..=#{}",
        torn.first_torn_seq,
        durable_through + 1,
        n + 1
    );
    let store = site.open().await.must("harness: open after a torn tail")?;
    let kept = usize::try_from(torn.first_torn_seq - 1).unwrap_or(usize::MAX);
    let whole = &before[..kept];
    ensure_eq!(
        all_events(&*store).await?,
        whole,
        "events after reopening a torn tail (exactly the whole ones)"
    );
    let head = (kept as u64, whole[kept - 1].hash.clone());
    ensure_eq!(
        store.head().await.must("head")?,
        head,
        "head after reopening a torn tail"
    );
    verify_intact(&*store, kept as u64, &head, None).await?;
    ensure_eq!(
        store.request(r.id).await.must("request")?,
        expected_record(whole, r.id),
        "record of {} (without its torn events)",
        r.id
    );
    ensure_eq!(
        store.request_events(r.id).await.must("request_events")?,
        events_of(whole, r.id),
        "events of {} after reopening a torn tail",
        r.id
    );
    ensure_eq!(
        ids(&store.active_requests().await.must("active_requests")?),
        [r.id],
        "active requests after reopening a torn tail"
    );
    let next = append_checked(
        &*store,
        vec![to(r.id, State::Succeeded)],
        AppendOptions::durable(),
    )
    .await?;
    let head = (kept as u64 + 1, next[0].hash.clone());
    verify_intact(&*store, kept as u64 + 1, &head, None).await?;
    ensure_eq!(
        store.request(r.id).await.must("request")?.map(|x| x.state),
        Some(State::Succeeded),
        "state of {} after the next append",
        r.id
    );
    if torn.first_torn_seq > n {
        cx.notes.push(
            "the harness tore no whole event, only left a partial record after the last one".into(),
        );
    }
    Ok(())
}
