//! [`Case::CrashReopen`](super::Case::CrashReopen) and
//! [`Case::TornTail`](super::Case::TornTail): what survives a crash, and a
//! crash in the middle of a write.

use chrono::Utc;

use super::build::{notice, notice_on, received, request, request_via, to};
use super::support::{
    all_events, append_checked, ensure, ensure_eq, events_of, expected_record, ids, opts,
    verify_intact, Cx, Must, Snapshot, Step, Stop,
};
use crate::audit::{AppendOptions, AuditStore, StoreError};
use crate::model::{AuditEvent, NewEvent, Request, State, Transition};

pub(super) async fn crash_reopen(cx: &mut Cx<'_>) -> Step {
    cx.crash_check().map_err(Stop::Skip)?;
    let mut site = cx.site().await?;
    let store = site.open().await.must("harness: open")?;
    let key = "conformance-crash-1";
    let [a, b, c, d] = crash_script(&*store, key).await?;
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

    continue_after_reopen(&*store, [&a, &c, &d], key).await?;

    // Buffered appends, then a flush: durable too.
    for i in 0..3 {
        append_checked(
            &*store,
            vec![notice_on(b.id, format!("buffered #{i}"))],
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

/// Durable appends of four requests (`d` claims `key`) and a global notice:
/// nine events.
async fn crash_script(store: &dyn AuditStore, key: &str) -> Step<[Request; 4]> {
    let a = request("ops.crash");
    let b = request("ops.crash");
    let c = request_via("ops.crash", "api");
    let mut d = request_via("ops.crash", "api");
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
        (vec![notice("before the crash")], None),
        (vec![to(a.id, State::Succeeded)], None),
        (vec![received(&d)], Some(key)),
        (vec![to(c.id, State::Running)], None),
    ];
    for (events, key) in script {
        append_checked(store, events, opts(true, key)).await?;
    }
    Ok([a, b, c, d])
}

/// Appends continue the chain; records survived, so `received` is refused;
/// so does `d`'s claim of `key`.
async fn continue_after_reopen(
    store: &dyn AuditStore,
    [a, c, d]: [&Request; 3],
    key: &str,
) -> Step {
    append_checked(
        store,
        vec![to(c.id, State::Succeeded)],
        AppendOptions::durable(),
    )
    .await?;
    let res = store
        .append(vec![received(a)], AppendOptions::durable())
        .await;
    ensure!(
        res.is_err(),
        "a second `received` of {} after the reopen was accepted: {res:?}",
        a.id
    );
    let res = store
        .append(vec![received(&request("ops.crash"))], opts(true, Some(key)))
        .await;
    ensure!(
        matches!(res, Err(StoreError::Duplicate(w)) if w == d.id),
        "a duplicate of key {key:?} after the reopen gave {res:?}, expected Duplicate({})",
        d.id
    );
    Ok(())
}

pub(super) async fn torn_tail(cx: &mut Cx<'_>) -> Step {
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
    let r = request("ops.torn");
    let durable_through = 2;
    let before = two_durable_two_buffered(&*store, &r).await?;
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

/// Two durable events (`r` received, a notice), then two buffered ones of
/// `r`. Every event.
async fn two_durable_two_buffered(store: &dyn AuditStore, r: &Request) -> Step<Vec<AuditEvent>> {
    append_checked(store, vec![received(r)], AppendOptions::durable()).await?;
    append_checked(store, vec![notice("durable")], AppendOptions::durable()).await?;
    append_checked(
        store,
        vec![to(r.id, State::Running)],
        AppendOptions::buffered(),
    )
    .await?;
    append_checked(
        store,
        vec![notice_on(r.id, "the tail")],
        AppendOptions::buffered(),
    )
    .await?;
    all_events(store).await
}
