//! The audit store conformance suite (feature `test-util`).
//!
//! Every [`AuditStore`] backend (the in-memory store, the sled store, the log
//! store, a PostgreSQL store) runs it from its own tests with a [`StoreHarness`]:
//! the suite checks the contract the executor relies on, with exact values —
//! one total order of appends with gapless sequence numbers and an intact hash
//! chain, atomic multi-event appends, request records folded from the events,
//! dedup claims that exactly one of many concurrent duplicates wins, the reads'
//! filters, paging and ordering, durability across a crash, retention that
//! verifies together with its archives, recovery from a torn tail, and dedup
//! claims that expire, and conditional appends
//! ([`expect_last_seq`](super::AppendOptions::expect_last_seq)) of which
//! exactly one of many concurrent decisions on a request wins.
//!
//! The requests, events and append options the cases append are built by
//! [`build`], public for the backends' own tests.
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
//! | [`ConditionalAppend`](Case::ConditionalAppend) | nothing (every backend supports conditional appends); its crash part `durable` + `crash_reopen` | the crash part is skipped (a note) |
//! | [`GroupAppends`](Case::GroupAppends), [`DedupRace`](Case::DedupRace) | nothing; their crash part `durable` + `crash_reopen` | the crash part is skipped (a note) |
//! | [`CrashReopen`](Case::CrashReopen) | `durable` + `crash_reopen` | skipped |
//! | [`RetentionVerify`](Case::RetentionVerify) | `archive`; its crash part `durable` + `crash_reopen` | skipped (the crash part: a note) |
//! | [`TornTail`](Case::TornTail) | `crash_reopen` + `torn_tail` | skipped |
//! | [`ClaimExpiry`](Case::ClaimExpiry) | `expiring_claims` ([`StoreHarness::expiring_claims_site`]); its crash part `durable` + `crash_reopen` | skipped (the crash part: a note) |
//!
//! Retention is checked for what every correct backend promises, not for one
//! backend's cut: `archive(through)` may move fewer events than asked (a log
//! store moves whole segments, a store may keep the events of requests in
//! flight), never more, into one file or several, and the events of a request
//! in flight stay readable through `request_events`, from the store or from
//! the archive. The case asks for an archive through #20 of 24 small events
//! (about 10 KiB) and expects at least one event to go: a backend that archives
//! coarsely must be configured finer by its harness (a log store: small
//! segments).
//!
//! The torn tail protocol: the suite appends two events durably, then two
//! buffered, [`crash`](StoreSite::crash)es the store, calls
//! [`tear_tail(2)`](StoreSite::tear_tail) (a log harness cuts the last record
//! in its newest segment in half, or appends half a record) and opens the
//! store again. The harness answers with the first event that is not whole
//! any more ([`TornTail`]); the store must come back with exactly the events
//! before it, records folded from those only, and chain the next append on.
//!
//! A harness of the log store (`youops-store`; its own tests' harness also
//! kills the store instead of closing it, tears the tail, and gives claims a
//! TTL of a second for [`Case::ClaimExpiry`]):
//!
//! ```no_run
//! use std::sync::Arc;
//! use async_trait::async_trait;
//! use youops_core::audit::conformance::{self, Capabilities, StoreHarness, StoreSite};
//! use youops_core::audit::AuditStore;
//! use youops_store::{LogOptions, LogStore};
//!
//! struct LogHarness;
//! struct LogSite(tempfile::TempDir);
//!
//! #[async_trait]
//! impl StoreHarness for LogHarness {
//!     fn name(&self) -> String {
//!         "log".into()
//!     }
//!     fn capabilities(&self) -> Capabilities {
//!         let mut c = Capabilities::all();
//!         c.torn_tail = false; // this harness does not damage files
//!         c
//!     }
//!     async fn site(&self) -> Result<Box<dyn StoreSite>, String> {
//!         let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
//!         Ok(Box::new(LogSite(dir)))
//!     }
//! }
//!
//! #[async_trait]
//! impl StoreSite for LogSite {
//!     async fn open(&mut self) -> Result<Arc<dyn AuditStore>, String> {
//!         let mut opts = LogOptions::default();
//!         opts.segment_bytes = 4096; // retention moves whole segments: small ones
//!         let store = LogStore::open(self.0.path().join("store"), opts)
//!             .map_err(|e| e.to_string())?;
//!         Ok(Arc::new(store))
//!     }
//!     async fn crash(&mut self, store: Arc<dyn AuditStore>) -> Result<(), String> {
//!         drop(store); // no flush (the store still closes cleanly)
//!         Ok(())
//!     }
//! }
//!
//! # async fn run() {
//! let report = conformance::run_all(&LogHarness).await;
//! println!("{report}");
//! report.assert_passed();
//! # }
//! ```

mod appends;
pub mod build;
mod conditional;
mod crash;
mod dedup;
mod reads;
mod retention;
mod support;

use std::fmt;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::FutureExt as _;

use super::{AuditStore, MemoryStore};
use support::{Cx, Step, Stop};

/// How long one case may take before it fails (a deadlocked store fails, it does
/// not hang the suite).
pub const CASE_TIMEOUT: Duration = Duration::from_secs(180);

/// Concurrent appenders in [`Case::GroupAppends`].
pub const GROUP_TASKS: usize = 64;

/// Concurrent duplicates in each race of [`Case::DedupRace`].
pub const DEDUP_RACERS: usize = 32;

/// Races of [`Case::DedupRace`] for each way of claiming a key (carried by the
/// request, as the executor's are, or only in
/// [`AppendOptions::dedup_key`](super::AppendOptions::dedup_key)).
pub const DEDUP_ROUNDS: usize = 4;

/// Concurrent conditional appends in each race of [`Case::ConditionalAppend`],
/// all expecting the same last seq of the same request.
pub const CAS_RACERS: usize = 32;

/// Races of [`Case::ConditionalAppend`], one after the other on one request.
pub const CAS_ROUNDS: usize = 4;

/// What a backend's harness can be asked to do. The suite skips, and reports as
/// skipped with the missing capability, what it cannot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Capabilities {
    /// Every append acknowledged with
    /// [`AppendOptions::durable`](super::AppendOptions::durable), and
    /// everything appended before a successful [`AuditStore::flush`], survives
    /// [`StoreSite::crash`] and a reopen. Checked only with `crash_reopen`.
    pub durable: bool,
    /// The site can simulate a crash ([`StoreSite::crash`]) and
    /// [`open`](StoreSite::open) the same store again afterwards.
    pub crash_reopen: bool,
    /// The site can damage the tail a crash left behind
    /// ([`StoreSite::tear_tail`]). Needs `crash_reopen`.
    pub torn_tail: bool,
    /// The store implements retention ([`AuditStore::archive`]), fine-grained
    /// enough in this harness to archive some of the retention case's events
    /// (see the [module docs](self)).
    pub archive: bool,
    /// Dedup claims appended with
    /// [`AppendOptions::dedup_expires`](super::AppendOptions::dedup_expires)
    /// expire after the store's TTL, and the harness can make a store whose
    /// TTL is a matter of seconds ([`StoreHarness::expiring_claims_site`]).
    /// Not in [`all`](Self::all): it needs that hook, which a harness
    /// implements on purpose.
    pub expiring_claims: bool,
}

impl Capabilities {
    /// Nothing beyond the basic reads and appends.
    pub const NONE: Capabilities = Capabilities {
        durable: false,
        crash_reopen: false,
        torn_tail: false,
        archive: false,
        expiring_claims: false,
    };

    /// Everything but `expiring_claims`: a durable, archiving store whose
    /// harness can crash it and tear its tail.
    pub fn all() -> Self {
        Capabilities {
            durable: true,
            crash_reopen: true,
            torn_tail: true,
            archive: true,
            expiring_claims: false,
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

    /// A new site, as [`site`](Self::site), whose store lets expiring dedup
    /// claims expire within seconds (say, a TTL of a second), and how long
    /// they hold there. Only called with [`Capabilities::expiring_claims`], by
    /// [`Case::ClaimExpiry`]. The default refuses.
    async fn expiring_claims_site(&self) -> Result<(Box<dyn StoreSite>, ClaimTtl), String> {
        Err("this harness has no store whose dedup claims expire soon".into())
    }
}

/// How long an expiring dedup claim holds in the store of a
/// [`StoreHarness::expiring_claims_site`], counted from its append: at least
/// `at_least` (it blocks duplicates that long), and at most `at_most` (then
/// its key is free again). The case waits `at_most`: keep it to seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClaimTtl {
    /// A claim blocks at least this long.
    pub at_least: Duration,
    /// A claim blocks at most this long.
    pub at_most: Duration,
}

impl ClaimTtl {
    /// Claims hold at least `at_least` and at most `at_most`.
    pub fn new(at_least: Duration, at_most: Duration) -> Self {
        ClaimTtl { at_least, at_most }
    }
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
    /// Retention: an archive writes files that hold exactly the events it
    /// reports, byte for byte, and appends a checkpoint; the archives and the
    /// store verify as one chain; events of a request in flight stay readable;
    /// a second archive follows on; a foreign archive directory is left alone.
    RetentionVerify,
    /// A torn tail after a crash: the store opens with exactly the whole events,
    /// records without the torn ones, and appends continue the chain.
    TornTail,
    /// An expiring dedup claim stops blocking once its TTL has passed, and its
    /// key can be claimed again; a claim that does not expire still blocks.
    ClaimExpiry,
    /// Conditional appends
    /// ([`AppendOptions::expect_last_seq`](super::AppendOptions::expect_last_seq)):
    /// one expecting the request's last seq goes; a stale one (or one
    /// expecting a request that has no record) fails with
    /// [`StoreError::Stale`](super::StoreError::Stale) carrying the actual
    /// last seq, appends nothing and claims no dedup key; a taken key is
    /// `Duplicate` whatever the append expected; of many concurrent ones
    /// expecting the same seq exactly one goes; with `durable`, the store
    /// still knows where the request ends after a crash.
    ConditionalAppend,
}

impl Case {
    /// Every case, in the order [`run_all`] runs them.
    pub const ALL: [Case; 9] = [
        Case::ReadsAndRecords,
        Case::RejectedAppends,
        Case::GroupAppends,
        Case::DedupRace,
        Case::CrashReopen,
        Case::RetentionVerify,
        Case::TornTail,
        Case::ClaimExpiry,
        Case::ConditionalAppend,
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
            Case::ClaimExpiry => "claim_expiry",
            Case::ConditionalAppend => "conditional_append",
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
    let run = AssertUnwindSafe(run_steps(&mut cx, case)).catch_unwind();
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

async fn run_steps(cx: &mut Cx<'_>, case: Case) -> Step {
    match case {
        Case::ReadsAndRecords => reads::reads_and_records(cx).await,
        Case::RejectedAppends => appends::rejected_appends(cx).await,
        Case::GroupAppends => appends::group_appends(cx).await,
        Case::DedupRace => dedup::dedup_race(cx).await,
        Case::CrashReopen => crash::crash_reopen(cx).await,
        Case::RetentionVerify => retention::retention_verify(cx).await,
        Case::TornTail => crash::torn_tail(cx).await,
        Case::ClaimExpiry => dedup::claim_expiry(cx).await,
        Case::ConditionalAppend => conditional::conditional_append(cx).await,
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
