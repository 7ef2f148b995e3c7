//! [`Case::DedupRace`](super::Case::DedupRace) and
//! [`Case::ClaimExpiry`](super::Case::ClaimExpiry): exactly one of many
//! concurrent duplicates wins, and claims hold for good unless they expire.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::build::{delivery, received, request, request_via, to};
use super::support::{
    all_events, append_checked, check_chain, ensure, ensure_eq, expected_record, opts,
    verify_intact, Cx, Must, Step, Stop,
};
use super::{DEDUP_RACERS, DEDUP_ROUNDS};
use crate::audit::{AuditStore, StoreError, GENESIS_HASH};
use crate::model::{AuditEvent, Request, RequestId, State};

/// The longest [`ClaimTtl::at_most`](super::ClaimTtl::at_most) [`claim_expiry`] waits for.
const CLAIM_TTL_LIMIT: Duration = Duration::from_secs(60);

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
            let mut r = request("ops.dedup");
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

pub(super) async fn dedup_race(cx: &mut Cx<'_>) -> Step {
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
            let mut late = request("ops.dedup");
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

pub(super) async fn claim_expiry(cx: &mut Cx<'_>) -> Step {
    if !cx.caps.expiring_claims {
        return Err(Stop::Skip(
            "the backend keeps every dedup claim for good, or its harness cannot make claims \
             expire soon (capability `expiring_claims`)"
                .into(),
        ));
    }
    let (mut site, ttl) = cx
        .harness
        .expiring_claims_site()
        .await
        .must("harness: a site whose dedup claims expire soon")?;
    ensure!(
        ttl.at_least <= ttl.at_most && ttl.at_most <= CLAIM_TTL_LIMIT,
        "the harness says its claims hold {ttl:?}: `at_least` may not exceed `at_most`, nor \
         `at_most` {CLAIM_TTL_LIMIT:?}"
    );
    let store = site.open().await.must("harness: open")?;
    let (fleeting, lasting) = ("conformance-expiring-1", "conformance-lasting-1");
    let started = Instant::now();
    let (a, claim) = delivery("ops.delivery", fleeting);
    let mut all = append_checked(&*store, vec![received(&a)], claim).await?;
    let claimed = Instant::now();
    let mut b = request_via("ops.push", "git");
    b.dedup_key = Some(lasting.to_string());
    all.extend(append_checked(&*store, vec![received(&b)], opts(true, Some(lasting))).await?);

    // Within the TTL, the expiring claim holds (checked if read in time: the
    // claim was made after `started`).
    let found = store.find_dedup(fleeting).await.must("find_dedup")?;
    if started.elapsed() < ttl.at_least {
        ensure_eq!(found, Some(a.id), "find_dedup({fleeting:?}) within the TTL");
    } else {
        cx.notes.push(format!(
            "the claim within its TTL not checked: {:?} passed before it was read",
            started.elapsed()
        ));
    }

    // Past it, only the claim that does not expire holds.
    tokio::time::sleep_until((claimed + ttl.at_most + Duration::from_millis(200)).into()).await;
    ensure_eq!(
        store.find_dedup(fleeting).await.must("find_dedup")?,
        None,
        "find_dedup({fleeting:?}) after the TTL ({ttl:?})"
    );
    let (c, claim) = delivery("ops.delivery", fleeting);
    let reclaimed = Instant::now();
    all.extend(append_checked(&*store, vec![received(&c)], claim).await?);
    ensure_eq!(
        store.find_dedup(fleeting).await.must("find_dedup")?,
        Some(c.id),
        "find_dedup({fleeting:?}) claimed again after the TTL"
    );
    lasting_claim_holds(&*store, &b, lasting).await?;
    ensure_eq!(
        store.request(a.id).await.must("request")?,
        expected_record(&all, a.id),
        "record of the request whose claim expired"
    );
    let head = (3, all[2].hash.clone());
    verify_intact(&*store, 3, &head, None).await?;

    if let Err(why) = cx.crash_check() {
        cx.notes
            .push(format!("claims after a crash not checked: {why}"));
        return Ok(());
    }
    let store = cx.crash_and_reopen(&mut site, store).await?;
    let found = store.find_dedup(fleeting).await.must("find_dedup")?;
    // `c`'s claim was made after `reclaimed`: it must hold if read within the TTL.
    let young = reclaimed.elapsed() < ttl.at_least;
    ensure!(
        found == Some(c.id) || (found.is_none() && !young),
        "find_dedup({fleeting:?}) after a crash gave {found:?}, expected Some({}){}",
        c.id,
        if young { "" } else { " or, its TTL past, None" }
    );
    lasting_claim_holds(&*store, &b, lasting).await?;
    verify_intact(&*store, 3, &head, None).await
}

/// `b`'s claim of `key`, which does not expire, still holds and refuses a
/// duplicate.
async fn lasting_claim_holds(store: &dyn AuditStore, b: &Request, key: &str) -> Step {
    ensure_eq!(
        store.find_dedup(key).await.must("find_dedup")?,
        Some(b.id),
        "find_dedup({key:?}) of a claim that does not expire, after the TTL"
    );
    let mut late = request_via("ops.push", "git");
    late.dedup_key = Some(key.to_string());
    let res = store
        .append(vec![received(&late)], opts(true, Some(key)))
        .await;
    ensure!(
        matches!(res, Err(StoreError::Duplicate(w)) if w == b.id),
        "a duplicate of {key:?}, a claim that does not expire, after the TTL gave {res:?}, \
         expected Duplicate({})",
        b.id
    );
    Ok(())
}
