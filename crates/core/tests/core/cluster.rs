//! Several executors on one store, as nodes of a cluster: each recovers only
//! its own requests, each sees the others' events, and work that happens once
//! per cluster (the approval-expiry sweeper) runs on the leader only.

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

use youops_core::cluster::{Leadership, NodeId};
use youops_core::{Executor, State};

use crate::support::*;

const OPS: &str = r#"
[[ops]]
name = "hold"
roles = ["ops"]
runner = { type = "builtin", name = "hold" }

[[ops]]
name = "db.drop"
roles = ["ops"]
approvals = 1
approval_ttl = "1s"
runner = { type = "builtin", name = "work" }
"#;

fn node(id: &str) -> NodeId {
    NodeId::new(id).unwrap()
}

/// Another node on the harness's store.
async fn another(h: &Harness, id: &str, probe: &Probe) -> Executor {
    Executor::builder(&config(OPS), h.store.clone())
        .builtin("hold", probe.builtin())
        .builtin("work", counting(Arc::new(AtomicUsize::new(0))))
        .node(node(id))
        .follow_store(Duration::from_millis(20))
        .build()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_starting_node_recovers_only_its_own_requests() {
    let (probe, mut started) = Probe::new();
    let h = start(OPS, |b| {
        b.builtin("hold", probe.builtin())
            .builtin("work", counting(Arc::new(AtomicUsize::new(0))))
            .node(node("a"))
    })
    .await;
    let t = h.exec.submit(sub("hold", "alice")).await.unwrap();
    let id = t.record.request.id;
    assert_eq!(
        t.record.node,
        Some(node("a")),
        "the receiving node is recorded"
    );
    within(10, "the run to start", started.recv())
        .await
        .unwrap();
    let r = running(&h.exec, id).await;
    assert_eq!(r.node, Some(node("a")), "the running node is recorded");

    // Node b starts on the same store: a's running request is not its own.
    let b = another(&h, "b", &probe).await;
    assert_eq!(b.get(id).await.unwrap().state, State::Running);

    // Node a starts again (as after a crash): its request is interrupted,
    // never re-run.
    let a2 = another(&h, "a", &probe).await;
    let r = a2.get(id).await.unwrap();
    assert_eq!(r.state, State::Interrupted, "{r:#?}");
    assert!(r.reason.unwrap().contains("was not re-run"));
    assert_eq!(probe.calls.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert_chain_ok(&h.store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_sees_every_event_once() {
    let (probe, mut started) = Probe::new();
    let h = start(OPS, |b| {
        b.builtin("hold", probe.builtin())
            .node(node("a"))
            .follow_store(Duration::from_millis(20))
    })
    .await;
    let b = another(&h, "b", &probe).await;
    let mut on_a = h.exec.subscribe();
    let mut on_b = b.subscribe();

    // Received on a, waited for on b.
    let id = h
        .exec
        .submit(sub("hold", "alice"))
        .await
        .unwrap()
        .record
        .request
        .id;
    within(10, "the run to start", started.recv())
        .await
        .unwrap();
    let waiter = tokio::spawn({
        let b = b.clone();
        async move { b.wait(id).await }
    });
    probe.gate.add_permits(1);
    let r = within(10, "b's waiter", waiter).await.unwrap().unwrap();
    assert_eq!(r.state, State::Succeeded, "{r:#?}");

    let expected = labels(&h.exec, id).await;
    for (name, rx) in [("a", &mut on_a), ("b", &mut on_b)] {
        let mut seen = Vec::new();
        while seen.len() < expected.len() {
            let ev = within(10, "lifecycle events", rx.recv()).await.unwrap();
            if ev.record.request.id == id {
                assert_eq!(ev.record.last_seq, ev.event.seq, "record as of its event");
                seen.push((ev.event.seq, ev.event.body.label()));
            }
        }
        let labels: Vec<&str> = seen.iter().map(|(_, l)| l.as_str()).collect();
        assert_eq!(
            labels, expected,
            "node {name} sees each event once, in order"
        );
        assert!(seen.windows(2).all(|w| w[0].0 < w[1].0));
    }
    // Nothing more arrives: no event was published twice.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(on_b.try_recv().is_err());
    assert!(on_a.try_recv().is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_leader_expires_approvals() {
    let (lease, leadership) = Leadership::channel();
    let h = start(OPS, |b| {
        b.builtin("work", counting(Arc::new(AtomicUsize::new(0))))
            .expiry_sweep(Duration::from_millis(50))
            .leadership(leadership)
    })
    .await;
    let id = h
        .exec
        .submit(sub("db.drop", "alice"))
        .await
        .unwrap()
        .record
        .request
        .id;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        h.exec.get(id).await.unwrap().state,
        State::PendingApproval,
        "a follower's sweeper expires nothing"
    );
    lease.lead(1);
    let r = within(10, "expiry by the leader", h.exec.wait(id))
        .await
        .unwrap();
    assert_eq!(r.state, State::Expired, "{r:#?}");
}
