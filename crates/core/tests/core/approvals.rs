//! Approvals: bound to the request, the approver and the count, and expiring.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use youops_core::{Error, State};

use crate::support::*;

// ---------------------------------------------------------------------------
// 4. Approvals
// ---------------------------------------------------------------------------

const APPROVAL_OPS: &str = r#"
[[ops]]
name = "db.drop"
roles = ["ops"]
approvals = 1
runner = { type = "builtin", name = "work" }
[[ops.params]]
name = "db"
type = "string"

[[ops]]
name = "db.nuke"
roles = ["ops"]
approvals = 2
runner = { type = "builtin", name = "work" }
[[ops.params]]
name = "db"
type = "string"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approvals_are_bound_to_request_approver_and_count() {
    let counter = Arc::new(AtomicUsize::new(0));
    let h = start(APPROVAL_OPS, |b| {
        b.builtin("work", counting(counter.clone()))
    })
    .await;
    let exec = &h.exec;
    let ran = || counter.load(Ordering::SeqCst);

    // One approval needed.
    let t = exec
        .submit(sub("db.drop", "alice").arg("db", "users"))
        .await
        .unwrap();
    let id = t.record.request.id;
    assert_eq!(t.record.state, State::PendingApproval);
    assert_eq!(t.record.approvals_needed, 1);
    let digest = t.record.request.digest.clone();

    match exec.approve(id, &who("alice"), None).await {
        Err(Error::Approval(m)) => assert!(m.contains("alice"), "{m}"),
        other => panic!("requester approved own request: {other:?}"),
    }
    match exec.approve(id, &who("dave"), None).await {
        Err(Error::Approval(m)) => assert!(m.contains("dave") && m.contains("may not"), "{m}"),
        other => panic!("unauthorized approval accepted: {other:?}"),
    }
    match exec.approve(id, &who("mallory"), None).await {
        Err(Error::UnknownIdentity { external_id, .. }) => assert_eq!(external_id, "mallory"),
        other => panic!("unmapped approver accepted: {other:?}"),
    }
    let wrong = "0".repeat(64);
    match exec.approve(id, &who("bob"), Some(&wrong)).await {
        Err(Error::Approval(m)) => assert!(m.contains("digest mismatch"), "{m}"),
        other => panic!("approval of different content accepted: {other:?}"),
    }
    assert_eq!(ran(), 0, "nothing runs before approval");
    assert_eq!(exec.get(id).await.unwrap().state, State::PendingApproval);

    let r = exec.approve(id, &who("bob"), Some(&digest)).await.unwrap();
    assert_eq!(r.state, State::Approved);
    let r = done(exec, id).await;
    assert_eq!(r.state, State::Succeeded, "{r:#?}");
    assert_eq!(ran(), 1);
    assert_eq!(r.approvals.len(), 1);
    assert_eq!(r.approvals[0].by.principal.as_deref(), Some("bob"));
    assert_eq!(r.approvals[0].digest, digest);
    match exec.approve(id, &who("carol"), None).await {
        Err(Error::Conflict(m)) => assert!(m.contains("succeeded"), "{m}"),
        other => panic!("approval of a finished request: {other:?}"),
    }
    assert_eq!(
        labels(exec, id).await,
        [
            "received",
            "pending_approval",
            "approve",
            "approved",
            "running",
            "succeeded"
        ]
    );

    // Two approvals needed: two distinct approvers.
    let t = exec
        .submit(sub("db.nuke", "alice").arg("db", "orders"))
        .await
        .unwrap();
    let id = t.record.request.id;
    assert_eq!(t.record.approvals_needed, 2);
    let r = exec.approve(id, &who("bob"), None).await.unwrap();
    assert_eq!(r.state, State::PendingApproval);
    assert_eq!(r.approvals_needed, 1);
    match exec.approve(id, &who("bob"), None).await {
        Err(Error::Approval(m)) => assert!(m.contains("already approved"), "{m}"),
        other => panic!("the same approver counted twice: {other:?}"),
    }
    assert!(exec.approve(id, &who("alice"), None).await.is_err());
    assert_eq!(ran(), 1, "one approval of two runs nothing");
    let r = exec.approve(id, &who("carol"), None).await.unwrap();
    assert_eq!(r.state, State::Approved);
    let r = done(exec, id).await;
    assert_eq!(r.state, State::Succeeded, "{r:#?}");
    assert_eq!(ran(), 2);
    let approvers: Vec<_> = r
        .approvals
        .iter()
        .map(|a| a.by.principal.clone().unwrap())
        .collect();
    assert_eq!(approvers, ["bob", "carol"]);

    // Denial by an eligible approver.
    let t = exec
        .submit(sub("db.drop", "alice").arg("db", "billing"))
        .await
        .unwrap();
    let id = t.record.request.id;
    assert!(exec
        .deny(id, &who("dave"), Some("no".into()))
        .await
        .is_err());
    let r = exec
        .deny(id, &who("bob"), Some("not on a Friday".into()))
        .await
        .unwrap();
    assert_eq!(r.state, State::Rejected);
    let reason = r.reason.clone().unwrap();
    assert!(
        reason.contains("bob") && reason.contains("not on a Friday"),
        "{reason}"
    );
    assert!(matches!(
        exec.approve(id, &who("carol"), None).await,
        Err(Error::Conflict(_))
    ));
    assert_eq!(done(exec, id).await.state, State::Rejected);
    assert_eq!(ran(), 2, "a rejected request never runs");
    assert_eq!(exec.pending_approvals(), 0);
    assert_chain_ok(&h.store).await;
}

// ---------------------------------------------------------------------------
// 5. Approval expiry
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_approvals_expire() {
    let ops = r#"
[[ops]]
name = "db.drop"
roles = ["ops"]
approvals = 1
approval_ttl = "1s"
runner = { type = "builtin", name = "work" }
"#;
    // The sweeper expires it.
    let counter = Arc::new(AtomicUsize::new(0));
    let h = start(ops, |b| {
        b.builtin("work", counting(counter.clone()))
            .expiry_sweep(Duration::from_millis(100))
    })
    .await;
    let t = h.exec.submit(sub("db.drop", "alice")).await.unwrap();
    let id = t.record.request.id;
    assert_eq!(t.record.state, State::PendingApproval);
    let r = within(10, "expiry", h.exec.wait(id)).await.unwrap();
    assert_eq!(r.state, State::Expired, "{r:#?}");
    assert!(r.reason.unwrap().contains("did not arrive"));
    assert!(h.exec.approve(id, &who("bob"), None).await.is_err());
    assert_eq!(h.exec.get(id).await.unwrap().state, State::Expired);
    assert_eq!(h.exec.pending_approvals(), 0);

    // Before the sweeper comes round, approving an overdue request is refused
    // (and expires it).
    let counter2 = Arc::new(AtomicUsize::new(0));
    let h2 = start(ops, |b| {
        b.builtin("work", counting(counter2.clone()))
            .expiry_sweep(Duration::from_secs(3600))
    })
    .await;
    let t = h2.exec.submit(sub("db.drop", "alice")).await.unwrap();
    let id = t.record.request.id;
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert_eq!(
        h2.exec.get(id).await.unwrap().state,
        State::PendingApproval,
        "the sweeper must not have run yet"
    );
    match h2.exec.approve(id, &who("bob"), None).await {
        Err(Error::Approval(m)) => assert!(m.contains("expired"), "{m}"),
        other => panic!("late approval accepted: {other:?}"),
    }
    assert_eq!(h2.exec.get(id).await.unwrap().state, State::Expired);
    assert_eq!(counter.load(Ordering::SeqCst), 0);
    assert_eq!(counter2.load(Ordering::SeqCst), 0);
    assert_chain_ok(&h.store).await;
    assert_chain_ok(&h2.store).await;
}

/// `Executor::handle` claims the delivery's key with the first event of every
/// command: a redelivered approval, denial or cancel does nothing and says so,
/// also after a restart, and a different delivery still gets the rules.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_is_deduplicated_by_its_delivery_key_across_a_restart() {
    use youops_core::{DedupKey, Inbound, Origin, Reply};

    let counter = Arc::new(AtomicUsize::new(0));
    let h = start(APPROVAL_OPS, |b| {
        b.builtin("work", counting(counter.clone()))
    })
    .await;
    let cmd = |text: &str, user: &str, key: &str| {
        Inbound::parse(text, who(user), Origin::new("cli"))
            .unwrap()
            .dedup(DedupKey::delivery(key))
    };
    let nuke = match h.exec.handle(cmd("db.nuke db=a", "alice", "d-run")).await {
        Ok(Reply::Submitted(t)) => t.record.request.id,
        other => panic!("{other:?}"),
    };
    let again = h.exec.handle(cmd("db.nuke db=a", "alice", "d-run")).await;
    assert!(
        matches!(&again, Ok(Reply::Submitted(t)) if t.duplicate && t.record.request.id == nuke),
        "{again:?}"
    );
    let approve = format!("approve {nuke}");
    match h.exec.handle(cmd(&approve, "bob", "d-bob")).await {
        Ok(Reply::Record(r)) => assert_eq!(r.approvals_needed, 1),
        other => panic!("{other:?}"),
    }
    // The same delivery again: nothing more, not even "already approved".
    match h.exec.handle(cmd(&approve, "bob", "d-bob")).await {
        Ok(Reply::Duplicate(r)) => {
            assert_eq!(r.request.id, nuke);
            assert_eq!(r.approvals.len(), 1);
        }
        other => panic!("{other:?}"),
    }
    // A new delivery of the same words is a new command, and the rules apply.
    match h.exec.handle(cmd(&approve, "bob", "d-bob-2")).await {
        Err(Error::Approval(m)) => assert!(m.contains("already approved"), "{m}"),
        other => panic!("{other:?}"),
    }

    // After a restart the claims still hold.
    let Harness {
        dir,
        path,
        exec,
        store,
    } = h;
    exec.shutdown(Duration::from_secs(5)).await.unwrap();
    drop((exec, store));
    let store = reopen(&path).await;
    let exec = youops_core::Executor::builder(&config(APPROVAL_OPS), store.clone())
        .builtin("work", counting(counter.clone()))
        .build()
        .await
        .unwrap();
    match exec.handle(cmd(&approve, "bob", "d-bob")).await {
        Ok(Reply::Duplicate(r)) => assert_eq!(r.approvals.len(), 1),
        other => panic!("{other:?}"),
    }
    let cancel = format!("cancel {nuke}");
    match exec.handle(cmd(&cancel, "alice", "d-cancel")).await {
        Ok(Reply::Record(r)) => assert_eq!(r.state, State::Cancelled),
        other => panic!("{other:?}"),
    }
    match exec.handle(cmd(&cancel, "alice", "d-cancel")).await {
        Ok(Reply::Duplicate(r)) => assert_eq!(r.state, State::Cancelled),
        other => panic!("{other:?}"),
    }
    // A denial of an ended request is refused, not a duplicate.
    let deny = format!("deny {nuke}");
    assert!(matches!(
        exec.handle(cmd(&deny, "bob", "d-deny")).await,
        Err(Error::Conflict(_))
    ));
    assert_eq!(counter.load(Ordering::SeqCst), 0, "nothing ran");
    assert_chain_ok(&store).await;
    drop(dir);
}

/// A reload does not change the claims TTL frontends judge ages by: the store
/// keeps the one it was opened with.
#[tokio::test]
async fn a_reload_keeps_the_dedup_window_of_the_open_store() {
    let h = start(APPROVAL_OPS, |b| b).await;
    let week = Duration::from_secs(7 * 86_400);
    assert_eq!(h.exec.loaded().dedup_ttl, week);
    let longer = format!("[store]\ndedup_ttl = \"30d\"\n{APPROVAL_OPS}");
    h.exec.reload(&config(&longer));
    assert_eq!(h.exec.loaded().dedup_ttl, week);
    assert_eq!(
        config(&longer).store.dedup_ttl.0,
        Duration::from_secs(30 * 86_400)
    );
}
