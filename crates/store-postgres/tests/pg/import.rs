//! `PgStore::import` (what `youops store copy` writes with): a chain copied
//! page by page keeps its seqs and hashes and derives the records and dedup
//! claims of its `received` events; a page that does not chain is refused,
//! naming the record, and writes nothing; an empty store takes a chain that
//! starts after a checkpoint.

use std::time::Duration;

use youops_core::audit::{AppendOptions, AuditStore, StoreError};
use youops_core::model::{AuditEvent, EventBody, Request, RequestFilter, State};
use youops_store_postgres::{PgOptions, PgStore};

use crate::support::{
    all_events, claiming, cluster, keyed, keyed_request, notice, open, received, to,
};

/// `n` requests claiming `key-<i>` (odd ones expiring), all finished but
/// the last, and a notice between each; their requests.
async fn fill(store: &dyn AuditStore, n: usize) -> Vec<Request> {
    let mut reqs = Vec::new();
    for i in 0..n {
        let (key, expires) = (format!("key-{i}"), i % 2 == 1);
        let mut r = keyed_request(&format!("op{i}"), &key);
        r.dedup_expires = expires;
        store
            .append(vec![received(&r)], claiming(&key, expires))
            .await
            .unwrap();
        let last = if i + 1 == n {
            State::Running
        } else {
            State::Succeeded
        };
        store
            .append(
                vec![
                    to(r.id, State::Running),
                    to(r.id, last),
                    notice(format!("{i}")),
                ],
                AppendOptions::durable(),
            )
            .await
            .unwrap();
        reqs.push(r);
    }
    reqs
}

async fn import_pages(dest: &PgStore, events: &[AuditEvent], page: usize) {
    for chunk in events.chunks(page) {
        dest.import(chunk.to_vec()).await.expect("import a page");
    }
}

async fn records(store: &dyn AuditStore) -> Vec<youops_core::model::RequestRecord> {
    store
        .list_requests(&RequestFilter::default(), None, 1000)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_imports_page_by_page_and_refuses_what_does_not_chain() {
    let cluster = cluster();
    let src = open(&cluster.create_database()).await;
    let reqs = fill(&*src, 12).await;
    let events = all_events(&*src).await;
    assert_eq!(events.len(), 48);

    let dest = open(&cluster.create_database()).await;
    import_pages(&dest, &events[..20], 7).await;
    assert_eq!(dest.head().await.unwrap(), (20, events[19].hash.clone()));

    // A gap, a wrong prev_hash, altered content, a page that is not next:
    // refused, naming the record, and nothing written.
    let gap = vec![events[20].clone(), events[22].clone()];
    let e = dest.import(gap).await.unwrap_err().to_string();
    assert!(e.contains("#23 where #22 was expected"), "{e}");
    let mut wrong = events[20..23].to_vec();
    wrong[1].prev_hash = "ab".repeat(32);
    let e = dest.import(wrong).await.unwrap_err().to_string();
    assert!(e.contains("record #22: its prev_hash"), "{e}");
    let mut altered = events[20..24].to_vec();
    let EventBody::Notice { message, .. } = &mut altered[3].body else {
        panic!("#24 is a notice");
    };
    message.push('!');
    let e = dest.import(altered).await.unwrap_err().to_string();
    assert!(e.contains("record #24: its content does not match"), "{e}");
    let e = dest.import(events[21..25].to_vec()).await.unwrap_err();
    assert!(e.to_string().contains("cannot import record #22"), "{e}");
    let e = dest.import(events[..3].to_vec()).await.unwrap_err();
    assert!(e.to_string().contains("record #1 (prev_hash"), "{e}");
    assert_eq!(dest.head().await.unwrap(), (20, events[19].hash.clone()));
    let mut first = events[..1].to_vec();
    first[0].prev_hash = "ab".repeat(32);
    let fresh = open(&cluster.create_database()).await;
    let e = fresh.import(first).await.unwrap_err();
    assert!(matches!(e, StoreError::Corrupt(_)), "{e}");
    assert_eq!(fresh.head().await.unwrap().0, 0);

    // The rest follows on; the copy is the source.
    import_pages(&dest, &events[20..], 7).await;
    assert_eq!(dest.head().await.unwrap(), src.head().await.unwrap());
    assert_eq!(all_events(&*dest).await, events);
    let v = dest.verify().await.unwrap();
    assert!(v.ok() && v.checked == 48, "{v:?}");
    assert_eq!(records(&*dest).await, records(&*src).await);
    for r in &reqs {
        let key = r.dedup_key.as_deref().unwrap();
        assert_eq!(dest.find_dedup(key).await.unwrap(), Some(r.id), "{key}");
        assert_eq!(
            dest.request(r.id).await.unwrap(),
            src.request(r.id).await.unwrap()
        );
    }
    let active = dest.active_requests().await.unwrap();
    assert_eq!(active.len(), 1);
    assert_eq!(active[0].request.id, reqs[11].id);

    // Appends go on from the imported tip, and see the imported claims.
    let again = keyed_request("again", "key-0");
    let e = dest
        .append(vec![received(&again)], keyed("key-0"))
        .await
        .unwrap_err();
    assert!(
        matches!(e, StoreError::Duplicate(id) if id == reqs[0].id),
        "{e}"
    );
    let next = dest
        .append(vec![notice("after")], AppendOptions::durable())
        .await
        .unwrap();
    assert_eq!(next[0].seq, 49);
    assert!(next[0].time >= events[47].time);
    assert!(dest.verify().await.unwrap().ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_claims_are_left_out() {
    let cluster = cluster();
    let src = open(&cluster.create_database()).await;
    let reqs = fill(&*src, 4).await;
    let events = all_events(&*src).await;
    let mut opts = PgOptions::default();
    opts.dedup_ttl = Duration::from_millis(1);
    let dest = PgStore::open(&cluster.create_database(), opts)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    dest.import(events).await.unwrap();
    for (i, r) in reqs.iter().enumerate() {
        let want = (i % 2 == 0).then_some(r.id);
        assert_eq!(dest.find_dedup(&format!("key-{i}")).await.unwrap(), want);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_store_takes_a_chain_that_starts_after_a_checkpoint() {
    let cluster = cluster();
    let src = open(&cluster.create_database()).await;
    let reqs = fill(&*src, 6).await;
    let dir = tempfile::tempdir().unwrap();
    let report = src
        .archive(12, dir.path())
        .await
        .unwrap()
        .expect("archived");
    assert_eq!((report.first_seq, report.through_seq), (1, 12));
    let events = all_events(&*src).await;
    assert_eq!(events[0].seq, 13);

    // Not after the start of a store that holds events.
    let other = open(&cluster.create_database()).await;
    other
        .append(vec![notice("mine")], AppendOptions::durable())
        .await
        .unwrap();
    let e = other.import(events.clone()).await.unwrap_err().to_string();
    assert!(
        e.contains("cannot import record #13") && e.contains("ends at #1"),
        "{e}"
    );

    let dest = open(&cluster.create_database()).await;
    import_pages(&dest, &events, 5).await;
    assert_eq!(dest.head().await.unwrap(), src.head().await.unwrap());
    let v = dest.verify().await.unwrap();
    assert!(v.ok(), "{v:?}");
    assert_eq!(v.starts_at_checkpoint, Some(13));
    // Requests received in the archived part derive nothing here.
    for (i, r) in reqs.iter().enumerate() {
        let claim = dest.find_dedup(&format!("key-{i}")).await.unwrap();
        let record = dest.request(r.id).await.unwrap();
        if i < 3 {
            assert_eq!((claim, record), (None, None), "{i}");
        } else {
            assert_eq!(claim, Some(r.id), "{i}");
            assert_eq!(record, src.request(r.id).await.unwrap(), "{i}");
        }
    }
}
