//! Lock keys: requests on the same target run one at a time, others in parallel.

use std::sync::atomic::Ordering;

use youops_core::{EventBody, State};

use crate::support::*;

// ---------------------------------------------------------------------------
// 8. Lock keys
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_keys_serialize_same_target_only() {
    let ops = r#"
[[ops]]
name = "deploy"
roles = ["ops"]
lock = "deploy:{env}"
runner = { type = "builtin", name = "deploy" }
[[ops.params]]
name = "env"
type = "enum"
values = ["prod", "staging"]

[[ops]]
name = "deploy.strict"
roles = ["ops"]
lock = "strict:{env}"
lock_mode = "refuse"
runner = { type = "builtin", name = "strict" }
[[ops.params]]
name = "env"
type = "enum"
values = ["prod", "staging"]
"#;
    let (queue, mut queue_rx) = Probe::new();
    let (strict, mut strict_rx) = Probe::new();
    let h = start(ops, |b| {
        b.builtin("deploy", queue.builtin())
            .builtin("strict", strict.builtin())
    })
    .await;
    let exec = &h.exec;
    let deploy = |env: &str| sub("deploy", "alice").arg("env", env);

    // Same key: the second waits for the first.
    let r1 = exec.submit(deploy("prod")).await.unwrap().record.request.id;
    assert_eq!(next_start(&mut queue_rx).await, r1);
    let r2 = exec.submit(deploy("prod")).await.unwrap().record.request.id;
    eventually("the second run to queue for the lock", || async {
        labels(exec, r2)
            .await
            .contains(&"notice:lock_wait".to_string())
    })
    .await;
    let notice = exec
        .events(r2)
        .await
        .unwrap()
        .into_iter()
        .find_map(|e| match e.body {
            EventBody::Notice { kind, message, .. } if kind == "lock_wait" => Some(message),
            _ => None,
        })
        .unwrap();
    assert!(
        notice.contains("deploy:prod") && notice.contains(&r1.to_string()),
        "{notice}"
    );
    assert!(queue_rx.try_recv().is_err(), "the second run started early");
    assert_eq!(queue.calls.load(Ordering::SeqCst), 1);
    queue.release(1);
    assert_eq!(next_start(&mut queue_rx).await, r2);
    queue.release(1);
    assert_eq!(done(exec, r1).await.state, State::Succeeded);
    assert_eq!(done(exec, r2).await.state, State::Succeeded);
    let (s1, s2) = (queue.span(r1), queue.span(r2));
    assert!(
        s1.end <= s2.start,
        "runs with the same lock key overlapped: {s1:?} {s2:?}"
    );

    // Different keys: both run at the same time (each started before either
    // was allowed to finish).
    let r3 = exec.submit(deploy("prod")).await.unwrap().record.request.id;
    let r4 = exec
        .submit(deploy("staging"))
        .await
        .unwrap()
        .record
        .request
        .id;
    let mut started = vec![
        next_start(&mut queue_rx).await,
        next_start(&mut queue_rx).await,
    ];
    started.sort();
    let mut want = vec![r3, r4];
    want.sort();
    assert_eq!(started, want);
    queue.release(2);
    assert_eq!(done(exec, r3).await.state, State::Succeeded);
    assert_eq!(done(exec, r4).await.state, State::Succeeded);
    let (s3, s4) = (queue.span(r3), queue.span(r4));
    assert!(s3.start.max(s4.start) < s3.end.min(s4.end), "{s3:?} {s4:?}");

    // lock_mode = "refuse": the second fails at once, naming the lock and holder.
    let strict_sub = |env: &str| sub("deploy.strict", "alice").arg("env", env);
    let r5 = exec
        .submit(strict_sub("prod"))
        .await
        .unwrap()
        .record
        .request
        .id;
    assert_eq!(next_start(&mut strict_rx).await, r5);
    let r6 = exec
        .submit(strict_sub("prod"))
        .await
        .unwrap()
        .record
        .request
        .id;
    let r = done(exec, r6).await;
    assert_eq!(r.state, State::Failed, "{r:#?}");
    let reason = r.reason.unwrap();
    assert!(
        reason.contains("strict:prod") && reason.contains(&r5.to_string()),
        "{reason}"
    );
    let r7 = exec
        .submit(strict_sub("staging"))
        .await
        .unwrap()
        .record
        .request
        .id;
    assert_eq!(next_start(&mut strict_rx).await, r7);
    strict.release(2);
    assert_eq!(done(exec, r5).await.state, State::Succeeded);
    assert_eq!(done(exec, r7).await.state, State::Succeeded);
    assert_eq!(
        strict.calls.load(Ordering::SeqCst),
        2,
        "the refused run never ran"
    );
    assert_chain_ok(&h.store).await;
}
