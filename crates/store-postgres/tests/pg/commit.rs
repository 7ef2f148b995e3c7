//! A COMMIT whose outcome the writer does not know: resolved by its batch
//! id, never by appending again.

use std::sync::Arc;

use youops_core::audit::{AppendOptions, AuditStore};
use youops_core::model::AuditEvent;

use youops_core::audit::StoreError;
use youops_core::model::RequestId;

use crate::support::{
    admin, all_events, claiming, cluster, message, notice, open, received, request,
};

/// The events carrying notice `text`.
fn with_message<'a>(chain: &'a [AuditEvent], text: &str) -> Vec<&'a AuditEvent> {
    chain.iter().filter(|e| message(e) == Some(text)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_commit_answer_is_resolved_by_the_batch_id() {
    let cluster = cluster();
    let url = cluster.create_database();
    let store = open(&url).await;
    store
        .append(vec![notice("before")], AppendOptions::durable())
        .await
        .unwrap();

    // The COMMIT succeeds, its answer is lost: the writer finds the batch.
    store.faults().lose_commit_acks(1);
    let got = store
        .append(vec![notice("ack lost")], AppendOptions::durable())
        .await
        .expect("an append whose COMMIT answer was lost");
    assert_eq!(got[0].seq, 2);

    // The same with a dedup key: appending again would have been refused as
    // a duplicate of itself.
    store.faults().lose_commit_acks(1);
    let r = request("ops.once");
    let opts = claiming("delivery-1", true);
    let got = store
        .append(vec![received(&r)], opts)
        .await
        .expect("a claiming append whose COMMIT answer was lost");
    assert_eq!(got[0].request_id, Some(r.id));
    assert_eq!(store.find_dedup("delivery-1").await.unwrap(), Some(r.id));

    // The session is killed just before COMMIT: nothing committed, the
    // writer finds no batch and runs the group again, once.
    store.faults().kill_session_before_commits(1);
    let got = store
        .append(vec![notice("session killed")], AppendOptions::durable())
        .await
        .expect("an append whose session was killed before COMMIT");
    assert_eq!(got[0].seq, 4);

    // A group of concurrent appends whose COMMIT answer is lost.
    store.faults().lose_commit_acks(1);
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                store
                    .append(vec![notice(format!("group {i}"))], AppendOptions::durable())
                    .await
            })
        })
        .collect();
    let mut returned = Vec::new();
    for t in tasks {
        returned.extend(t.await.unwrap().expect("a grouped append"));
    }

    let chain = all_events(&*store).await;
    assert_eq!(chain.len(), 4 + 16, "every append exactly once");
    for text in ["before", "ack lost", "session killed"] {
        assert_eq!(with_message(&chain, text).len(), 1, "{text}");
    }
    for e in &returned {
        assert_eq!(
            chain.iter().find(|c| c.seq == e.seq),
            Some(e),
            "as answered"
        );
    }
    let v = store.verify().await.unwrap();
    assert!(v.ok() && v.checked == 20, "{v:?}");
}

/// A group that ends without COMMIT (every append refused) rolls its
/// transaction back: the tip is free for the next writer at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_group_leaves_no_transaction_open() {
    let cluster = cluster();
    let url = cluster.create_database();
    let store = open(&url).await;
    let first = request("ops.once");
    store
        .append(vec![received(&first)], claiming("key-1", true))
        .await
        .unwrap();
    let again = request("ops.once");
    let refused = store
        .append(vec![received(&again)], claiming("key-1", true))
        .await;
    assert!(
        matches!(refused, Err(StoreError::Duplicate(id)) if id == first.id),
        "{refused:?}"
    );

    let c = admin(&url).await;
    c.batch_execute("BEGIN; SET LOCAL lock_timeout = '1s'")
        .await
        .unwrap();
    c.query_one("SELECT seq FROM tip WHERE id = 1 FOR UPDATE", &[])
        .await
        .expect("the tip is free: no session holds it in a transaction left open");
    c.batch_execute("ROLLBACK").await.unwrap();
}

/// A dedup key claimed by a session that does not lock the chain tip, after
/// the group read the claims and before it wrote: the group's write
/// conflicts, the group is decided again, and the append is answered as a
/// duplicate of that claim. Nothing of it is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_made_behind_the_tip_lock_decides_the_group_again() {
    let cluster = cluster();
    let url = cluster.create_database();
    let store = open(&url).await;
    let owner = RequestId::new();
    store.faults().claim_behind_the_tip(owner);
    let r = request("ops.once");
    let got = store
        .append(vec![received(&r)], claiming("key-behind", true))
        .await;
    assert!(
        matches!(got, Err(StoreError::Duplicate(id)) if id == owner),
        "{got:?}"
    );
    assert_eq!(store.find_dedup("key-behind").await.unwrap(), Some(owner));
    assert!(all_events(&*store).await.is_empty());
    assert!(store.request(r.id).await.unwrap().is_none());

    let next = request("ops.once");
    let got = store
        .append(vec![received(&next)], claiming("key-other", true))
        .await
        .expect("the next claim");
    assert_eq!(got[0].seq, 1);
}
