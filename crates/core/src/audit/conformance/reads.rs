//! [`Case::ReadsAndRecords`](super::Case::ReadsAndRecords): reads of an empty
//! and of a small store.

use super::build::{notice, notice_on, received, request, request_via, to};
use super::support::{
    all_events, append_checked, check_chain, ensure, ensure_eq, events_of, expected_record, ids,
    opts, verify_intact, Cx, Must, Step,
};
use crate::audit::{AppendOptions, AuditStore, GENESIS_HASH};
use crate::model::{
    AuditEvent, NewEvent, Request, RequestFilter, RequestId, RequestRecord, State, Transition,
};

pub(super) async fn reads_and_records(cx: &mut Cx<'_>) -> Step {
    let mut site = cx.site().await?;
    let store = site.open().await.must("harness: open")?;
    let store = &*store;
    empty_store(store).await?;

    // Five requests and global events, durable and buffered appends mixed.
    let a = request("ops.alpha");
    let b = request("ops.alpha");
    let c = request("ops.alpha");
    let d = request_via("ops.beta", "api");
    let e = request_via("ops.beta", "api");
    let all = append_script(store, [&a, &b, &c, &d, &e]).await?;
    let n = all.len() as u64;
    let head = (n, all[all.len() - 1].hash.clone());
    paging(store, &all).await?;
    let records = records(store, &all, [&a, &b, &c, &d, &e]).await?;
    listing(store, &records, e.id).await?;

    verify_intact(store, n, &head, None).await?;
    store.flush().await.must("flush")?;
    let size = store.size_on_disk().await.must("size_on_disk")?;
    ensure!(size > 0, "size_on_disk is 0 with {n} events stored");
    Ok(())
}

async fn empty_store(store: &dyn AuditStore) -> Step {
    let genesis = (0, GENESIS_HASH.to_string());
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
    Ok(())
}

/// Appends of the five requests' events and global events; every event, read back.
async fn append_script(store: &dyn AuditStore, people: [&Request; 5]) -> Step<Vec<AuditEvent>> {
    let [a, b, c, d, e] = people;
    let script: Vec<(Vec<NewEvent>, bool)> = vec![
        (vec![received(a), to(a.id, State::Running)], true),
        (vec![received(b)], false),
        (vec![notice("a global notice")], true),
        (vec![to(a.id, State::Succeeded), received(c)], true),
        (
            vec![NewEvent::transition(
                b.id,
                Transition::to(State::Failed).reason("exit 1"),
            )],
            false,
        ),
        (
            vec![received(d), received(e), to(c.id, State::Running)],
            true,
        ),
        (
            vec![to(e.id, State::Succeeded), notice_on(d.id, "about d")],
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
    Ok(all)
}

/// Paging through events.
async fn paging(store: &dyn AuditStore, all: &[AuditEvent]) -> Step {
    let n = all.len() as u64;
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
    Ok(())
}

/// Records, folded from the events, and the active ones. The records, in the
/// order of `everyone`.
async fn records(
    store: &dyn AuditStore,
    all: &[AuditEvent],
    everyone: [&Request; 5],
) -> Step<Vec<RequestRecord>> {
    let n = all.len() as u64;
    let mut records = Vec::new();
    for r in everyone {
        let want = expected_record(all, r.id);
        ensure_eq!(
            store.request(r.id).await.must("request")?,
            want,
            "record of request {} ({})",
            r.id,
            r.op
        );
        ensure_eq!(
            store.request_events(r.id).await.must("request_events")?,
            events_of(all, r.id),
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
    Ok(records)
}

/// Listing: newest id first, paged with `before`, then filtered (`e` is the
/// request that succeeded from the api frontend).
async fn listing(store: &dyn AuditStore, records: &[RequestRecord], e: RequestId) -> Step {
    let mut newest_first = records.to_vec();
    newest_first.sort_by_key(|r| std::cmp::Reverse(r.request.id));
    let all_filter = RequestFilter::default();
    let listed = list(store, all_filter.clone(), None, 100).await?;
    ensure_eq!(
        ids(&listed),
        ids(&newest_first),
        "list_requests, no filter (newest id first)"
    );
    ensure_eq!(listed, newest_first, "records listed");
    let mut before = None;
    for (i, want) in newest_first.chunks(2).enumerate() {
        let got = list(store, all_filter.clone(), before, 2).await?;
        ensure_eq!(ids(&got), ids(want), "page {i} of list_requests (limit 2)");
        before = got.last().map(|r| r.request.id);
    }
    ensure_eq!(
        list(store, all_filter.clone(), before, 2).await?,
        [],
        "list_requests before the oldest request"
    );
    ensure_eq!(
        list(store, all_filter, None, 0).await?,
        [],
        "list_requests with limit 0"
    );
    filters(store, &newest_first, e).await
}

async fn filters(store: &dyn AuditStore, newest_first: &[RequestRecord], e: RequestId) -> Step {
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
        ids(&list(store, succeeded.clone(), None, 100).await?),
        only(&|r| r.state == State::Succeeded),
        "list_requests of succeeded requests"
    );
    let beta = RequestFilter {
        op: Some("ops.beta".into()),
        ..RequestFilter::default()
    };
    ensure_eq!(
        ids(&list(store, beta, None, 100).await?),
        only(&|r| r.request.op == "ops.beta"),
        "list_requests of op ops.beta"
    );
    let api_succeeded = RequestFilter {
        frontend: Some("api".into()),
        ..succeeded
    };
    ensure_eq!(
        ids(&list(store, api_succeeded, None, 100).await?),
        [e],
        "list_requests of succeeded requests from the api frontend"
    );
    let newest = newest_first[0].request.id;
    let older_running = RequestFilter {
        states: vec![State::Running, State::Received],
        ..RequestFilter::default()
    };
    ensure_eq!(
        ids(&list(store, older_running, Some(newest), 100).await?),
        only(&|r| r.request.id < newest && !r.state.is_terminal()),
        "list_requests of running or received requests older than the newest"
    );
    Ok(())
}

async fn list(
    store: &dyn AuditStore,
    filter: RequestFilter,
    before: Option<RequestId>,
    limit: usize,
) -> Step<Vec<RequestRecord>> {
    store
        .list_requests(&filter, before, limit)
        .await
        .must("list_requests")
}
