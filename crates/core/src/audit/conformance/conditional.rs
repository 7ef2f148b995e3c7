//! [`Case::ConditionalAppend`](super::Case::ConditionalAppend): an append
//! conditioned on its request's last seq
//! ([`AppendOptions::expect_last_seq`](crate::audit::AppendOptions::expect_last_seq))
//! goes only if the request still ends there; a stale one leaves no trace and
//! claims nothing; of many racing on the same seq, exactly one goes.

use std::sync::Arc;

use super::build::{notice, notice_on, received, request_via, to};
use super::support::{
    all_events, append_checked, check_chain, ensure, ensure_eq, expected_record, opts,
    verify_intact, Cx, Must, Snapshot, Step,
};
use super::{CAS_RACERS, CAS_ROUNDS};
use crate::audit::{AppendOptions, AuditStore, StoreError, GENESIS_HASH};
use crate::model::{AuditEvent, NewEvent, RequestId, State};

type Appended = Result<Vec<AuditEvent>, StoreError>;

/// Durable, with `key` if given, only if the request ends at `seq`.
fn cond(key: Option<&str>, seq: u64) -> AppendOptions {
    opts(true, key).expect_last_seq(seq)
}

/// `res` is `Stale` for `id`, which is now at `last`.
fn check_stale(res: &Appended, id: RequestId, last: u64, what: &str) -> Step {
    ensure!(
        matches!(res, Err(StoreError::Stale { request, last_seq })
            if *request == id && *last_seq == last),
        "{what} gave {res:?}, expected Stale {{ request: {id}, last_seq: {last} }}"
    );
    Ok(())
}

/// Append `events` with `o`, expecting `Stale` (for `id`, at `last`) and no
/// change at all to what a reader sees of `requests` and `keys`.
async fn refused_stale(
    store: &dyn AuditStore,
    events: Vec<NewEvent>,
    o: AppendOptions,
    (id, last): (RequestId, u64),
    (requests, keys): (&[RequestId], &[&str]),
    what: &str,
) -> Step {
    let before = Snapshot::take(store, requests, keys).await?;
    let res = store.append(events, o).await;
    check_stale(&res, id, last, what)?;
    let after = Snapshot::take(store, requests, keys).await?;
    ensure!(
        after == before,
        "{what} changed the store:\n  before: {before:?}\n  after:  {after:?}"
    );
    Ok(())
}

pub(super) async fn conditional_append(cx: &mut Cx<'_>) -> Step {
    let mut site = cx.site().await?;
    let store = site.open().await.must("harness: open")?;
    let (mut all, r) = single(&*store).await?;
    let key = "conformance-cas-key";
    all.extend(stale_claims_nothing(&*store, r, &all, key).await?);
    let racer = request_via("ops.cas.race", "chat");
    all.extend(
        append_checked(
            &*store,
            vec![received(&racer), to(racer.id, State::PendingApproval)],
            AppendOptions::buffered(),
        )
        .await?,
    );
    for round in 0..CAS_ROUNDS {
        all.extend(race(&store, racer.id, round).await?);
    }
    check_chain(&all, 1, GENESIS_HASH)?;
    ensure_eq!(
        &all_events(&*store).await?,
        &all,
        "events (only the successful appends')"
    );
    for id in [r, racer.id] {
        ensure_eq!(
            store.request(id).await.must("request")?,
            expected_record(&all, id),
            "record of {id} after conditional appends"
        );
    }
    let head = (all.len() as u64, all[all.len() - 1].hash.clone());
    verify_intact(&*store, head.0, &head, None).await?;

    if let Err(why) = cx.crash_check() {
        cx.notes.push(format!(
            "conditional appends after a crash not checked: {why}"
        ));
        return Ok(());
    }
    // After a reopen the store knows where each request ends (the racers'
    // buffered appends are flushed first).
    store.flush().await.must("flush")?;
    let store = cx.crash_and_reopen(&mut site, store).await?;
    ensure_eq!(
        &all_events(&*store).await?,
        &all,
        "events after a flush, a crash and a reopen"
    );
    let last = all.last().map_or(0, |e| e.seq);
    let stale = last - 1;
    refused_stale(
        &*store,
        vec![to(racer.id, State::Cancelled)],
        cond(None, stale),
        (racer.id, last),
        (&[r, racer.id], &[key]),
        "a stale conditional append after a crash",
    )
    .await?;
    append_checked(
        &*store,
        vec![to(racer.id, State::Cancelled)],
        cond(None, last),
    )
    .await?;
    Ok(())
}

/// One request's conditional appends, one at a time: one that expects the
/// request not to exist yet (`0`), the right seq, a stale seq, an unknown
/// request, a global first event. Returns the events appended and the request.
async fn single(store: &dyn AuditStore) -> Step<(Vec<AuditEvent>, RequestId)> {
    let r = request_via("ops.cas", "chat");
    let mut all = append_checked(
        store,
        vec![received(&r), to(r.id, State::PendingApproval)],
        cond(None, 0),
    )
    .await?;
    ensure_eq!(
        store
            .request(r.id)
            .await
            .must("request")?
            .map(|x| x.last_seq),
        Some(2),
        "last_seq of a request created by an append expecting 0"
    );
    // A second `received` expecting 0: the request exists now.
    let again = store.append(vec![received(&r)], cond(None, 0)).await;
    check_stale(
        &again,
        r.id,
        2,
        "an append expecting 0 of an existing request",
    )?;

    // The right seq: the decision goes.
    all.extend(append_checked(store, vec![to(r.id, State::Approved)], cond(None, 2)).await?);
    // The seq it read before: stale, and nothing of it is appended, not even
    // the events of another request after the first.
    let other = request_via("ops.cas.other", "chat");
    refused_stale(
        store,
        vec![to(r.id, State::Cancelled), received(&other)],
        cond(None, 2),
        (r.id, 3),
        (&[r.id, other.id], &[]),
        "an append expecting #2 of a request at #3",
    )
    .await?;
    // A seq ahead of the request's is stale too.
    refused_stale(
        store,
        vec![notice_on(r.id, "ahead")],
        cond(None, 4),
        (r.id, 3),
        (&[r.id], &[]),
        "an append expecting #4 of a request at #3",
    )
    .await?;
    // A request with no record ends at 0.
    let ghost = RequestId::new();
    refused_stale(
        store,
        vec![notice_on(ghost, "ghost")],
        cond(None, 3),
        (ghost, 0),
        (&[r.id, ghost], &[]),
        "an append expecting #3 of a request never received",
    )
    .await?;
    // A condition needs a request to check.
    let head = store.head().await.must("head")?;
    let res = store.append(vec![notice("global")], cond(None, 3)).await;
    ensure!(
        matches!(&res, Err(e) if !matches!(e, StoreError::Duplicate(_))),
        "a conditional append whose first event is global gave {res:?}, expected an error"
    );
    ensure_eq!(
        store.head().await.must("head")?,
        head,
        "head after a refused conditional append of a global event"
    );
    Ok((all, r.id))
}

/// A stale append with a dedup key claims nothing: the key is free after it,
/// and a later append (right seq) claims it. A taken key is `Duplicate`
/// whatever the append expected (the key is checked first).
async fn stale_claims_nothing(
    store: &dyn AuditStore,
    r: RequestId,
    all: &[AuditEvent],
    key: &str,
) -> Step<Vec<AuditEvent>> {
    let last = all.last().map_or(0, |e| e.seq);
    refused_stale(
        store,
        vec![notice_on(r, "stale, with a key")],
        cond(Some(key), last - 1),
        (r, last),
        (&[r], &[key]),
        "a stale conditional append with a dedup key",
    )
    .await?;
    ensure_eq!(
        store.find_dedup(key).await.must("find_dedup")?,
        None,
        "find_dedup({key:?}) after a stale append with it"
    );
    let got = append_checked(
        store,
        vec![notice_on(r, "right, with a key")],
        cond(Some(key), last),
    )
    .await?;
    ensure_eq!(
        store.find_dedup(key).await.must("find_dedup")?,
        Some(r),
        "find_dedup({key:?}) after a conditional append claimed it"
    );
    let now = last + 1;
    for (expect, what) in [(now, "the right seq"), (last, "a stale seq")] {
        let res = store
            .append(vec![notice_on(r, "again")], cond(Some(key), expect))
            .await;
        ensure!(
            matches!(res, Err(StoreError::Duplicate(w)) if w == r),
            "a conditional append expecting {what} with the taken key {key:?} gave {res:?}, \
             expected Duplicate({r})"
        );
    }
    ensure_eq!(
        store.head().await.must("head")?,
        (now, got[0].hash.clone()),
        "head after duplicates of a conditional append"
    );
    Ok(got)
}

/// `CAS_RACERS` tasks append a decision on request `id` at once, each
/// expecting the seq it ends at: exactly one goes, the others get `Stale`
/// with the winner's last seq. Half durable, half buffered. Returns the
/// winner's events.
async fn race(store: &Arc<dyn AuditStore>, id: RequestId, round: usize) -> Step<Vec<AuditEvent>> {
    let before = store.head().await.must("head")?;
    let record = store.request(id).await.must("request")?;
    let expect = record.map_or(0, |x| x.last_seq);
    let start = Arc::new(tokio::sync::Barrier::new(CAS_RACERS));
    let mut tasks = Vec::with_capacity(CAS_RACERS);
    for i in 0..CAS_RACERS {
        let store = Arc::clone(store);
        let start = Arc::clone(&start);
        tasks.push(tokio::spawn(async move {
            let events = vec![
                notice_on(id, format!("round {round}, racer {i}")),
                to(id, State::PendingApproval),
            ];
            let o = opts(i % 2 == 0, None).expect_last_seq(expect);
            start.wait().await;
            store.append(events, o).await
        }));
    }
    let mut winners = Vec::new();
    let mut losers = Vec::new();
    for task in tasks {
        match task.await.must("a racing task")? {
            Ok(events) => winners.push(events),
            Err(e) => losers.push(e),
        }
    }
    ensure_eq!(
        winners.len(),
        1,
        "racers whose conditional append (expecting #{expect} of {id}) succeeded"
    );
    let events = winners.remove(0);
    let want = vec![before.0 + 1, before.0 + 2];
    ensure_eq!(
        events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        want,
        "seqs of the winning conditional append"
    );
    ensure_eq!(
        events[0].prev_hash,
        before.1,
        "prev_hash of the winner's first event"
    );
    for e in losers {
        check_stale(
            &Err(e),
            id,
            before.0 + 2,
            "a losing racer's conditional append",
        )?;
    }
    ensure_eq!(
        store.head().await.must("head")?,
        (before.0 + 2, events[1].hash.clone()),
        "head after the race (only the winner appended)"
    );
    Ok(events)
}
