//! [`Case::RejectedAppends`](super::Case::RejectedAppends) and
//! [`Case::GroupAppends`](super::Case::GroupAppends): refused appends leave no
//! trace; concurrent appends form one gapless chain.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::build::{notice_on, received, request, to};
use super::support::{
    all_events, append_checked, check_appended, check_chain, ensure, ensure_eq, expected_record,
    ids, opts, verify_intact, Cx, Must, Step, Stop,
};
use super::GROUP_TASKS;
use crate::audit::{AppendOptions, AuditStore, StoreError, GENESIS_HASH};
use crate::model::{AuditEvent, RequestId, State};

pub(super) async fn rejected_appends(cx: &mut Cx<'_>) -> Step {
    let mut site = cx.site().await?;
    let store = site.open().await.must("harness: open")?;
    let store = &*store;
    let genesis = (0, GENESIS_HASH.to_string());
    let ghost = RequestId::new();
    let r = request("ops.reject");

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
    let r2 = request("ops.reject");
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
    refused_claims(store, ghost).await
}

/// A dedup key is claimed once; a claimed key refuses the whole call; a call
/// refused for another reason claims nothing. Two events are stored before.
async fn refused_claims(store: &dyn AuditStore, ghost: RequestId) -> Step {
    // A dedup key is claimed once; a claimed key refuses the whole call.
    let key = "conformance-rejected-1";
    let r3 = request("ops.reject");
    let claimed = append_checked(store, vec![received(&r3)], opts(false, Some(key))).await?;
    ensure_eq!(
        store.find_dedup(key).await.must("find_dedup")?,
        Some(r3.id),
        "find_dedup after a claim"
    );
    let r4 = request("ops.reject");
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
    let r5 = request("ops.reject");
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

pub(super) async fn group_appends(cx: &mut Cx<'_>) -> Step {
    let mut site = cx.site().await?;
    let store = site.open().await.must("harness: open")?;
    let per_task = append_in_groups(&store).await?;
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
    check_group_records(&*store, &per_task).await?;

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
    check_group_records(&*store, &per_task).await
}

/// Each task's request and the events each of its appends returned.
type TaskAnswers = (RequestId, Vec<Vec<AuditEvent>>);

/// `GROUP_TASKS` tasks, started at once, each append the events of its own
/// request durably, in several calls.
async fn append_in_groups(store: &Arc<dyn AuditStore>) -> Step<Vec<TaskAnswers>> {
    const ROUNDS: usize = 4;
    let start = Arc::new(tokio::sync::Barrier::new(GROUP_TASKS));
    let mut tasks = Vec::with_capacity(GROUP_TASKS);
    for t in 0..GROUP_TASKS {
        let store = Arc::clone(store);
        let start = Arc::clone(&start);
        tasks.push(tokio::spawn(async move {
            let r = request(&format!("ops.group.{t}"));
            let id = r.id;
            let mut calls = vec![vec![received(&r), to(id, State::Running)]];
            for round in 1..ROUNDS - 1 {
                let n = (t + round) % 3 + 1;
                calls.push(
                    (0..n)
                        .map(|i| notice_on(id, format!("task {t} round {round} #{i}")))
                        .collect(),
                );
            }
            calls.push(vec![
                notice_on(id, format!("task {t} done")),
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
    Ok(per_task)
}

/// Each task's request: its record, succeeded, and its events; none active.
async fn check_group_records(store: &dyn AuditStore, per_task: &[TaskAnswers]) -> Step {
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
    // The same histories read at once, an unknown request left out.
    let mut ids: Vec<RequestId> = per_task.iter().map(|(id, _)| *id).collect();
    ids.push(RequestId::new());
    let all = store.requests_events(&ids).await.must("requests_events")?;
    ensure_eq!(
        all.len(),
        per_task.len(),
        "requests with events read at once"
    );
    for (id, answers) in per_task {
        let mine: Vec<AuditEvent> = answers.iter().flatten().cloned().collect();
        ensure_eq!(
            all.get(id),
            Some(&mine),
            "events of request {id}, read at once"
        );
    }
    ensure_eq!(
        store.active_requests().await.must("active_requests")?,
        [],
        "active requests after every task finished"
    );
    Ok(())
}
