//! The suite's plumbing: how a case stops, the checks' macros, the case
//! context and the checks the cases share (the builders of requests and
//! events are in [`super::build`]).

use std::fmt;
use std::sync::Arc;

use super::{Capabilities, StoreHarness, StoreSite};
use crate::audit::{expected_hash, AppendOptions, AuditStore};
use crate::model::{AuditEvent, EventBody, NewEvent, RequestFilter, RequestId, RequestRecord};

/// Why a case stopped early.
#[derive(Debug)]
pub(super) enum Stop {
    Skip(String),
    Fail(String),
}

pub(super) type Step<T = ()> = Result<T, Stop>;

/// Fail the case unless `cond` holds.
macro_rules! ensure {
    ($cond:expr, $($what:tt)+) => {
        if !$cond {
            return Err($crate::audit::conformance::support::Stop::Fail(format!(
                "{} ({}:{})",
                format_args!($($what)+),
                file!(),
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
                    return Err($crate::audit::conformance::support::Stop::Fail(format!(
                        "{}:\n  got:      {:?}\n  expected: {:?}\n  ({}:{})",
                        format_args!($($what)+),
                        got,
                        want,
                        file!(),
                        line!()
                    )));
                }
            }
        }
    };
}

pub(super) use {ensure, ensure_eq};

/// Turn a store or harness error into a failure naming the call.
pub(super) trait Must<T> {
    fn must(self, what: &str) -> Step<T>;
}

impl<T, E: fmt::Display> Must<T> for Result<T, E> {
    fn must(self, what: &str) -> Step<T> {
        self.map_err(|e| Stop::Fail(format!("{what}: {e}")))
    }
}

/// What a case runs with: the harness, its capabilities, and the notes the
/// case leaves in its report.
pub(super) struct Cx<'a> {
    pub(super) harness: &'a dyn StoreHarness,
    pub(super) caps: Capabilities,
    pub(super) notes: Vec<String>,
}

impl Cx<'_> {
    pub(super) async fn site(&self) -> Step<Box<dyn StoreSite>> {
        self.harness.site().await.must("harness: new site")
    }

    /// `Ok` if durable appends can be checked across a crash, else why not.
    pub(super) fn crash_check(&self) -> Result<(), String> {
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
    pub(super) async fn crash_and_reopen(
        &self,
        site: &mut Box<dyn StoreSite>,
        store: Arc<dyn AuditStore>,
    ) -> Step<Arc<dyn AuditStore>> {
        site.crash(store).await.must("harness: crash")?;
        site.open().await.must("harness: open after a crash")
    }
}

pub(super) fn opts(durable: bool, dedup_key: Option<&str>) -> AppendOptions {
    AppendOptions {
        durable,
        dedup_key: dedup_key.map(str::to_string),
        dedup_expires: false,
        expect_last_seq: None,
        leader_epoch: None,
    }
}

/// The record of `id` folded from `events` (as a store must keep it).
pub(super) fn expected_record(events: &[AuditEvent], id: RequestId) -> Option<RequestRecord> {
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

pub(super) fn events_of(events: &[AuditEvent], id: RequestId) -> Vec<AuditEvent> {
    events
        .iter()
        .filter(|e| e.request_id == Some(id))
        .cloned()
        .collect()
}

pub(super) fn ids(records: &[RequestRecord]) -> Vec<RequestId> {
    records.iter().map(|r| r.request.id).collect()
}

/// Every event in the store, read in pages.
pub(super) async fn all_events(store: &dyn AuditStore) -> Step<Vec<AuditEvent>> {
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
pub(super) fn check_appended(
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
pub(super) async fn append_checked(
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
pub(super) fn check_chain(events: &[AuditEvent], first_seq: u64, first_prev: &str) -> Step {
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
pub(super) struct Snapshot {
    pub(super) head: (u64, String),
    pub(super) events: Vec<AuditEvent>,
    pub(super) records: Vec<Option<RequestRecord>>,
    pub(super) request_events: Vec<Vec<AuditEvent>>,
    pub(super) active: Vec<RequestRecord>,
    pub(super) listed: Vec<RequestRecord>,
    pub(super) claims: Vec<Option<RequestId>>,
}

impl Snapshot {
    pub(super) async fn take(
        store: &dyn AuditStore,
        requests: &[RequestId],
        keys: &[&str],
    ) -> Step<Self> {
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
pub(super) async fn verify_intact(
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
