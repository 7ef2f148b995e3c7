//! Several executors on one store, as nodes of a cluster: each recovers only
//! its own requests, each sees the others' events, and work that happens once
//! per cluster (the approval-expiry sweeper) runs on the leader only.

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

use youops_core::audit::AuditStore as _;
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

/// Submit `sub` on `exec`: the new request's id.
async fn submitted(exec: &Executor, sub: youops_core::Submission) -> youops_core::RequestId {
    exec.submit(sub).await.unwrap().record.request.id
}

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
    let id = submitted(&h.exec, sub("hold", "alice")).await;
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

/// The seqs of the next `n` lifecycle events `rx` publishes.
async fn collect(
    rx: &mut tokio::sync::broadcast::Receiver<youops_core::Lifecycle>,
    n: usize,
) -> Vec<u64> {
    let mut seen = Vec::with_capacity(n);
    while seen.len() < n {
        let ev = within(20, "lifecycle events", rx.recv()).await.unwrap();
        seen.push(ev.event.seq);
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_concurrent_appends_each_node_publishes_each_event_once() {
    // Both nodes append while they read each other's events every few
    // milliseconds: a node's own event read back from the store must not
    // be published again, another's must be published once.
    let (probe, _started) = Probe::new();
    let h = start(OPS, |b| {
        b.builtin("hold", probe.builtin())
            .node(node("a"))
            .follow_store(Duration::from_millis(2))
    })
    .await;
    let b = another(&h, "b", &probe).await;
    let (start, _) = h.store.head().await.unwrap();
    let mut on_a = h.exec.subscribe();
    let mut on_b = b.subscribe();
    let mut tasks = Vec::new();
    for exec in [h.exec.clone(), b.clone(), h.exec.clone(), b.clone()] {
        tasks.push(tokio::spawn(async move {
            for _ in 0..50 {
                exec.submit(sub("db.drop", "alice")).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let all: Vec<u64> = h
        .store
        .events(start, 10_000)
        .await
        .unwrap()
        .iter()
        .filter(|e| e.request_id.is_some())
        .map(|e| e.seq)
        .collect();
    assert_eq!(all.len(), 400, "200 requests, received and pending each");
    for (name, rx) in [("a", &mut on_a), ("b", &mut on_b)] {
        let mut seen = collect(rx, all.len()).await;
        seen.sort_unstable();
        assert_eq!(seen, all, "node {name} publishes each event once");
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        on_a.try_recv().is_err() && on_b.try_recv().is_err(),
        "nothing twice"
    );
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
    let id = submitted(&h.exec, sub("db.drop", "alice")).await;
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

const DECIDED: &str = r#"
[[ops]]
name = "deploy"
roles = ["ops"]
approvals = 1
runner = { type = "builtin", name = "work" }

[[ops]]
name = "vault.rotate"
roles = ["ops"]
approvals = 1
approval_ttl = "1s"
runner = { type = "builtin", name = "work" }
[[ops.params]]
name = "token"
type = "secret"

[[ops]]
name = "hold"
roles = ["ops"]
runner = { type = "builtin", name = "hold" }
"#;

/// A builtin that records what it saw: (op, the `token` argument).
fn recording(
    seen: Arc<std::sync::Mutex<Vec<(String, String)>>>,
) -> impl youops_core::runner::Builtin {
    move |call: youops_core::runner::BuiltinCall| {
        let seen = seen.clone();
        async move {
            let token = call
                .args
                .get("token")
                .map(|v| v.as_text())
                .unwrap_or_default();
            seen.lock().unwrap().push((call.op.clone(), token));
            Ok("done".to_string())
        }
    }
}

type Seen = Arc<std::sync::Mutex<Vec<(String, String)>>>;

/// Nodes a and b on one store, each with its own record of what it ran.
async fn two_nodes(probe: &Probe, leader_b: bool) -> (Harness, Seen, Executor, Seen) {
    let (seen_a, seen_b): (Seen, Seen) = Default::default();
    // With `leader_b`, a never leads (its lease signal is dropped unused).
    let (_, follower) = Leadership::channel();
    let h = start(DECIDED, |b| {
        b.builtin("work", recording(seen_a.clone()))
            .builtin("hold", probe.builtin())
            .node(node("a"))
            .follow_store(Duration::from_millis(20))
            .expiry_sweep(Duration::from_millis(50))
            .leadership(if leader_b {
                follower
            } else {
                Leadership::solo()
            })
    })
    .await;
    let b = Executor::builder(&config(DECIDED), h.store.clone())
        .builtin("work", recording(seen_b.clone()))
        .builtin("hold", probe.builtin())
        .node(node("b"))
        .follow_store(Duration::from_millis(20))
        .expiry_sweep(Duration::from_millis(50))
        .leadership(Leadership::solo())
        .build()
        .await
        .unwrap();
    (h, seen_a, b, seen_b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_on_another_node_runs_the_request_once_where_it_can() {
    let (probe, _started) = Probe::new();
    let (h, seen_a, b, seen_b) = two_nodes(&probe, false).await;

    // No secret: the node that records the approval runs it.
    let id = submitted(&h.exec, sub("deploy", "alice")).await;
    reaches(&b, id, State::PendingApproval).await;
    b.approve(id, &who("bob"), None).await.unwrap();
    let r = within(10, "the run", h.exec.wait(id)).await.unwrap();
    assert_eq!(r.state, State::Succeeded, "{r:#?}");

    // A secret: it is only in a's memory, so a runs it when it reads b's approval.
    let sub = sub("vault.rotate", "alice").arg("token", "s3cr3t");
    let id2 = submitted(&h.exec, sub).await;
    within(
        10,
        "b to see it",
        b.wait_for(id2, |r| r.state == State::PendingApproval),
    )
    .await
    .unwrap();
    b.approve(id2, &who("bob"), None).await.unwrap();
    let r = within(10, "the run on a", b.wait(id2)).await.unwrap();
    assert_eq!(r.state, State::Succeeded, "{r:#?}");
    assert_eq!(
        r.node,
        Some(node("a")),
        "the node holding the secret ran it"
    );

    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        *seen_a.lock().unwrap(),
        vec![("vault.rotate".to_string(), "s3cr3t".to_string())]
    );
    assert_eq!(
        *seen_b.lock().unwrap(),
        vec![("deploy".to_string(), String::new())]
    );
    assert_chain_ok(&h.store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_on_another_node_stops_the_run_where_it_runs() {
    let (probe, mut started) = Probe::new();
    let (h, _, b, _) = two_nodes(&probe, false).await;
    let id = submitted(&h.exec, sub("hold", "alice")).await;
    within(10, "the run to start", started.recv())
        .await
        .unwrap();
    reaches(&b, id, State::Running).await;
    let r = within(10, "the cancel", b.cancel(id, &who("alice")))
        .await
        .unwrap();
    assert_eq!(r.state, State::Cancelled, "{r:#?}");
    assert_eq!(r.node, Some(node("a")));
    let on_a = h.exec.get(id).await.unwrap();
    assert_eq!(on_a.state, State::Cancelled);
    assert_eq!(probe.calls.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_expires_approvals_received_on_other_nodes() {
    let (probe, _started) = Probe::new();
    let (h, _, _b, _) = two_nodes(&probe, true).await;
    // Received on a (never the leader), with a secret b never holds.
    let sub = sub("vault.rotate", "alice").arg("token", "s3cr3t");
    let id = submitted(&h.exec, sub).await;
    let r = within(10, "expiry by b", h.exec.wait(id)).await.unwrap();
    assert_eq!(r.state, State::Expired, "{r:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approvals_racing_on_two_nodes_run_each_request_once() {
    let (probe, _started) = Probe::new();
    let (h, seen_a, b, seen_b) = two_nodes(&probe, false).await;
    const N: usize = 20;
    for i in 0..N {
        let id = submitted(&h.exec, sub("deploy", "alice")).await;
        reaches(&b, id, State::PendingApproval).await;
        let (bob, carol) = (who("bob"), who("carol"));
        let (on_a, on_b) =
            tokio::join!(h.exec.approve(id, &bob, None), b.approve(id, &carol, None));
        assert!(
            on_a.is_ok() != on_b.is_ok(),
            "round {i}: exactly one approval wins: {on_a:?} / {on_b:?}"
        );
        let r = within(10, "the run", h.exec.wait(id)).await.unwrap();
        assert_eq!(r.state, State::Succeeded, "{r:#?}");
        assert_eq!(r.approvals.len(), 1, "{r:#?}");
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let runs = seen_a.lock().unwrap().len() + seen_b.lock().unwrap().len();
    assert_eq!(runs, N, "each request ran once");
    assert_chain_ok(&h.store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_interrupts_what_a_dead_node_had_in_flight() {
    let (probe, mut started) = Probe::new();
    let (h, _, b, _) = two_nodes(&probe, false).await;
    let running = submitted(&h.exec, sub("hold", "alice")).await;
    within(10, "the run to start", started.recv())
        .await
        .unwrap();
    let open = submitted(&h.exec, sub("deploy", "alice")).await;
    let secret = sub("vault.rotate", "alice").arg("token", "s3cr3t");
    let secret = submitted(&h.exec, secret).await;

    // Node a is dead (and fenced, in a real cluster): b, the leader, takes stock.
    assert_eq!(b.recover_node(&node("a")).await.unwrap(), 2);
    let r = b.get(running).await.unwrap();
    assert_eq!(r.state, State::Interrupted, "{r:#?}");
    assert!(r.reason.unwrap().contains("node a stopped"));
    assert_eq!(b.get(secret).await.unwrap().state, State::Interrupted);
    assert_eq!(
        b.get(open).await.unwrap().state,
        State::PendingApproval,
        "any node can still run it"
    );
    assert_eq!(b.recover_node(&node("a")).await.unwrap(), 0, "done once");
    assert_eq!(b.recover_node(&node("b")).await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_request_is_rendered_by_the_node_that_received_it() {
    use youops_core::frontend::FrontendContext;
    let (probe, _started) = Probe::new();
    let (h, _, b, _) = two_nodes(&probe, false).await;
    let ctx = |exec: &Executor| {
        FrontendContext::new(
            "cli",
            exec.clone(),
            Default::default(),
            None,
            tokio_util::sync::CancellationToken::new(),
        )
    };
    let (on_a, on_b) = (ctx(&h.exec), ctx(&b));
    let (mut stream_a, mut stream_b) = (on_a.lifecycle(), on_b.lifecycle());
    let id = submitted(&h.exec, sub("deploy", "alice")).await;
    reaches(&b, id, State::PendingApproval).await;
    let ev = within(5, "a's frontend", stream_a.recv()).await.unwrap();
    assert_eq!(ev.record.request.id, id);
    let none = tokio::time::timeout(Duration::from_millis(300), stream_b.recv()).await;
    assert!(
        none.is_err(),
        "b's frontend renders nothing of a's request: {none:?}"
    );

    // Unless b's frontend watches it (an approval given there, say).
    on_b.watch(id);
    b.approve(id, &who("bob"), None).await.unwrap();
    let ev = within(5, "b's watched request", stream_b.recv())
        .await
        .unwrap();
    assert_eq!(ev.record.request.id, id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_never_goes_back_to_an_older_record_read_late_from_another_node() {
    let seen: Seen = Default::default();
    let h = start(DECIDED, |b| {
        b.builtin("work", recording(seen.clone()))
            .node(node("a"))
            .follow_store(Duration::from_millis(20))
    })
    .await;
    // b reads the others' events slowly.
    let b = Executor::builder(&config(DECIDED), h.store.clone())
        .builtin("work", recording(seen.clone()))
        .node(node("b"))
        .follow_store(Duration::from_millis(700))
        .build()
        .await
        .unwrap();
    for _ in 0..3 {
        let id = submitted(&h.exec, sub("deploy", "alice")).await;
        // Approved on b before b has read a's events about it.
        b.approve(id, &who("bob"), None).await.unwrap();
        let r = within(
            10,
            "b's waiter",
            b.wait_for(id, |r| r.state == State::PendingApproval),
        )
        .await
        .unwrap();
        assert_ne!(
            r.state,
            State::PendingApproval,
            "went back to an older record: {r:#?}"
        );
    }
}

/// The next lifecycle event of request `id` that `rx` sees.
async fn next_of(
    rx: &mut tokio::sync::broadcast::Receiver<youops_core::Lifecycle>,
    id: youops_core::RequestId,
) -> youops_core::Lifecycle {
    loop {
        let ev = rx.recv().await.expect("the lifecycle stream");
        if ev.record.request.id == id {
            return ev;
        }
    }
}

/// A node that polls the store seldom still sees another node's events at
/// once when woken (as PostgreSQL's listener wakes it): the wake-up reads
/// the store, not the next poll.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wake_up_reads_other_nodes_events_before_the_next_poll() {
    let (probe, _started) = Probe::new();
    let h = start(OPS, |b| {
        b.builtin("hold", probe.builtin())
            .builtin("work", counting(Arc::new(AtomicUsize::new(0))))
            .node(node("a"))
    })
    .await;
    let wake = Arc::new(tokio::sync::Notify::new());
    let b = Executor::builder(&config(OPS), h.store.clone())
        .builtin("hold", probe.builtin())
        .builtin("work", counting(Arc::new(AtomicUsize::new(0))))
        .node(node("b"))
        .follow_store(Duration::from_secs(3600))
        .follow_wakeups(Arc::clone(&wake))
        .build()
        .await
        .unwrap();
    let mut seen = b.subscribe();
    // Once b has read a first request of a's when woken, its first poll (as
    // it started) is behind it too, and the next is an hour away.
    let first = submitted(&h.exec, sub("db.drop", "alice")).await;
    wake.notify_one();
    within(10, "b to read a's first request", pending(&mut seen, first)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let id = submitted(&h.exec, sub("db.drop", "alice")).await;
    assert!(
        tokio::time::timeout(Duration::from_millis(500), next_of(&mut seen, id))
            .await
            .is_err(),
        "b published a's event before it was woken"
    );
    wake.notify_one();
    within(
        10,
        "b to read a's events once woken",
        pending(&mut seen, id),
    )
    .await;
}

/// The lifecycle event that shows request `id` pending approval.
async fn pending(
    rx: &mut tokio::sync::broadcast::Receiver<youops_core::Lifecycle>,
    id: youops_core::RequestId,
) -> youops_core::Lifecycle {
    loop {
        let ev = next_of(rx, id).await;
        if ev.record.state == State::PendingApproval {
            return ev;
        }
    }
}
