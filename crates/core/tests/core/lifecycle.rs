//! The executor's own lifecycle: crash recovery and graceful shutdown.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use youops_core::runner::BuiltinCall;
use youops_core::{Error, Executor, State};
use youops_store::{LogOptions, LogStore};

use crate::support::*;

// ---------------------------------------------------------------------------
// 10. Crash recovery
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_leaves_requests_interrupted_not_rerun() {
    let ops = r#"
[[ops]]
name = "forever"
roles = ["ops"]
runner = { type = "builtin", name = "forever" }

[[ops]]
name = "db.drop"
roles = ["ops"]
approvals = 1
runner = { type = "builtin", name = "work" }
[[ops.params]]
name = "db"
type = "string"

[[ops]]
name = "vault.rotate"
roles = ["ops"]
approvals = 1
runner = { type = "builtin", name = "work" }
[[ops.params]]
name = "token"
type = "secret"
"#;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let (probe, _rx) = Probe::new();
    let work = Arc::new(AtomicUsize::new(0));

    // Process A runs on its own runtime; dropping that runtime mid-run drops
    // every task with no shutdown, as a crash would.
    let ids = {
        let (path, probe, work, ops) = (path.clone(), probe.clone(), work.clone(), ops);
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            let ids = rt.block_on(async move {
                let store = Arc::new(LogStore::open(&path, LogOptions::default()).unwrap());
                let exec = Executor::builder(&config(ops), store)
                    .builtin("forever", probe.builtin())
                    .builtin("work", counting(work))
                    .build()
                    .await
                    .unwrap();
                let run = exec.submit(sub("forever", "alice")).await.unwrap();
                let run = run.record.request.id;
                running(&exec, run).await;
                let plain = exec
                    .submit(sub("db.drop", "alice").arg("db", "users"))
                    .await
                    .unwrap()
                    .record
                    .request
                    .id;
                let secret = exec
                    .submit(sub("vault.rotate", "alice").arg("token", "s3cret-value-xyz"))
                    .await
                    .unwrap()
                    .record
                    .request
                    .id;
                (run, plain, secret)
            });
            drop(rt);
            ids
        })
        .join()
        .unwrap()
    };
    let (run, plain, secret) = ids;
    assert_eq!(probe.calls.load(Ordering::SeqCst), 1);

    // Process B starts on the same store.
    let store = reopen(&path).await;
    let exec = Executor::builder(&config(ops), store.clone())
        .builtin("forever", probe.builtin())
        .builtin("work", counting(work.clone()))
        .build()
        .await
        .unwrap();
    let r = exec.get(run).await.unwrap();
    assert_eq!(r.state, State::Interrupted, "{r:#?}");
    let reason = r.reason.unwrap();
    assert!(
        reason.contains("running") && reason.contains("not re-run"),
        "{reason}"
    );
    assert_eq!(
        labels(&exec, run).await,
        ["received", "running", "interrupted"]
    );
    assert_eq!(probe.calls.load(Ordering::SeqCst), 1, "it was not re-run");

    // A pending approval with no secrets survives and can still be approved.
    assert_eq!(exec.get(plain).await.unwrap().state, State::PendingApproval);
    exec.approve(plain, &who("bob"), None).await.unwrap();
    assert_eq!(done(&exec, plain).await.state, State::Succeeded);
    assert_eq!(work.load(Ordering::SeqCst), 1);

    // One with a secret cannot be run (its value was never stored).
    let r = exec.get(secret).await.unwrap();
    assert_eq!(r.state, State::Interrupted, "{r:#?}");
    assert!(r.reason.unwrap().contains("secret"));

    assert_chain_ok(&store).await;
    exec.shutdown(Duration::from_secs(5)).await.unwrap();
}

// ---------------------------------------------------------------------------
// 15. Graceful shutdown
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_runs_finish_then_interrupts_the_rest() {
    let ops = r#"
[[ops]]
name = "quick"
roles = ["ops"]
runner = { type = "builtin", name = "quick" }

[[ops]]
name = "forever"
roles = ["ops"]
runner = { type = "builtin", name = "forever" }
"#;
    // A run that finishes within the grace period completes.
    let (started_tx, mut started_rx) = mpsc::unbounded_channel();
    let h = start(ops, |b| {
        b.builtin("quick", move |call: BuiltinCall| {
            let tx = started_tx.clone();
            async move {
                let _ = tx.send(call.request_id);
                tokio::time::sleep(Duration::from_millis(300)).await;
                Ok("finished".to_string())
            }
        })
    })
    .await;
    let id = h
        .exec
        .submit(sub("quick", "alice"))
        .await
        .unwrap()
        .record
        .request
        .id;
    assert_eq!(next_start(&mut started_rx).await, id);
    within(10, "shutdown", h.exec.shutdown(Duration::from_secs(5)))
        .await
        .unwrap();
    let r = h.exec.get(id).await.unwrap();
    assert_eq!(r.state, State::Succeeded, "{r:#?}");
    assert_eq!(output(&r), "finished");
    assert!(!h.exec.is_accepting());
    assert!(matches!(
        h.exec.submit(sub("quick", "alice")).await,
        Err(Error::ShuttingDown)
    ));
    assert_chain_ok(&h.store).await;

    // One that never finishes is interrupted when the grace period ends.
    let (probe, mut rx) = Probe::new();
    let h = start(ops, |b| b.builtin("forever", probe.builtin())).await;
    let id = h
        .exec
        .submit(sub("forever", "alice"))
        .await
        .unwrap()
        .record
        .request
        .id;
    assert_eq!(next_start(&mut rx).await, id);
    let began = Instant::now();
    within(10, "shutdown", h.exec.shutdown(Duration::from_millis(200)))
        .await
        .unwrap();
    assert!(began.elapsed() >= Duration::from_millis(200));
    let r = h.exec.get(id).await.unwrap();
    assert_eq!(r.state, State::Interrupted, "{r:#?}");
    assert!(r.reason.unwrap().contains("shut down"));
    assert_eq!(h.exec.running(), 0);
    assert!(matches!(
        h.exec.submit(sub("forever", "alice")).await,
        Err(Error::ShuttingDown)
    ));
    assert_chain_ok(&h.store).await;
}
