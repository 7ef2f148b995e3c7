//! Requests on their way in: dedup, invalid and denied requests recorded, dry
//! runs, and the executor as a `tower::Service`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use youops_core::audit::AuditStore;
use youops_core::{Error, RequestFilter, State, Submission};

use crate::support::*;

// ---------------------------------------------------------------------------
// 3. Dedup
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dedup_key_runs_the_work_once() {
    let counter = Arc::new(AtomicUsize::new(0));
    let h = start(GREET_OPS, |b| b.builtin("greet", counting(counter.clone()))).await;

    // Sequential redelivery.
    let first = h
        .exec
        .submit(sub("greet", "alice").arg("who", "a").dedup("delivery-1"))
        .await
        .unwrap();
    assert!(!first.duplicate);
    let id = first.record.request.id;
    done(&h.exec, id).await;
    let again = h
        .exec
        .submit(sub("greet", "bob").arg("who", "other").dedup("delivery-1"))
        .await
        .unwrap();
    assert!(again.duplicate);
    assert_eq!(again.record.request.id, id);
    assert_eq!(again.record.state, State::Succeeded);

    // Concurrent redelivery: 16 at once.
    let s = sub("greet", "alice").arg("who", "b").dedup("delivery-2");
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let exec = h.exec.clone();
            let s = s.clone();
            tokio::spawn(async move { exec.submit(s).await })
        })
        .collect();
    let mut tickets = Vec::new();
    for t in tasks {
        tickets.push(t.await.unwrap().unwrap());
    }
    let originals: Vec<_> = tickets.iter().filter(|t| !t.duplicate).collect();
    assert_eq!(originals.len(), 1, "exactly one submission is the original");
    let id2 = originals[0].record.request.id;
    assert!(tickets.iter().all(|t| t.record.request.id == id2));
    assert_eq!(tickets.iter().filter(|t| t.duplicate).count(), 15);
    assert_eq!(done(&h.exec, id2).await.state, State::Succeeded);

    let all = h
        .exec
        .list(&RequestFilter::default(), None, 1000)
        .await
        .unwrap();
    for (key, want) in [("delivery-1", id), ("delivery-2", id2)] {
        let with_key: Vec<_> = all
            .iter()
            .filter(|r| r.request.dedup_key.as_deref() == Some(key))
            .collect();
        assert_eq!(with_key.len(), 1, "{key}: {with_key:#?}");
        assert_eq!(with_key[0].request.id, want);
        assert_eq!(h.store.find_dedup(key).await.unwrap(), Some(want));
    }
    assert_eq!(all.len(), 2, "no other request was recorded");
    assert_eq!(
        counter.load(Ordering::SeqCst),
        2,
        "the work ran once per key"
    );
    assert_chain_ok(&h.store).await;
}

// ---------------------------------------------------------------------------
// 12. Invalid and denied requests are recorded
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_and_denied_requests_are_recorded_with_reasons() {
    const SECRET: &str = "pa55-word-never-stored";
    let ops = format!(
        "{GREET_OPS}\n{}",
        r#"
[[ops]]
name = "vault.login"
roles = ["ops"]
runner = { type = "builtin", name = "greet" }
[[ops.params]]
name = "token"
type = "secret"
"#
    );
    let counter = Arc::new(AtomicUsize::new(0));
    let h = start(&ops, |b| b.builtin("greet", counting(counter.clone()))).await;

    struct Case {
        sub: Submission,
        state: State,
        reason: &'static [&'static str],
    }
    let cases = [
        Case {
            sub: sub("greeet", "alice").arg("who", "x"),
            state: State::Invalid,
            reason: &["unknown op `greeet`", "did you mean `greet`"],
        },
        Case {
            sub: sub("greet", "mallory").arg("who", "x"),
            state: State::Denied,
            reason: &["mallory", "not mapped"],
        },
        Case {
            sub: sub("greet", "dave").arg("who", "x"),
            state: State::Denied,
            reason: &["`dave`", "may not run `greet`", "granted to ops"],
        },
        Case {
            sub: sub("greet", "alice").arg("times", "many"),
            state: State::Invalid,
            reason: &["missing parameter `who`", "expected an integer"],
        },
        Case {
            sub: sub("vault.login", "alice")
                .arg("token", SECRET)
                .arg("tokn", "x"),
            state: State::Invalid,
            reason: &["unknown parameter `tokn`", "did you mean `token`"],
        },
        Case {
            sub: sub("vault.logn", "alice").arg("token", SECRET),
            state: State::Invalid,
            reason: &["did you mean `vault.login`"],
        },
    ];
    for c in cases {
        let what = format!("{} by {}", c.sub.op, c.sub.actor.external_id);
        let t = h.exec.submit(c.sub).await.unwrap();
        let id = t.record.request.id;
        assert_eq!(t.record.state, c.state, "{what}: {:#?}", t.record);
        let reason = t.record.reason.clone().unwrap_or_default();
        for part in c.reason {
            assert!(reason.contains(part), "{what}: `{reason}` lacks `{part}`");
        }
        let stored = h.exec.get(id).await.unwrap();
        assert_eq!(stored, t.record, "{what}");
        assert_eq!(
            labels(&h.exec, id).await,
            ["received", c.state.as_str()],
            "{what}"
        );
    }
    let events = all_events(&h.store).await;
    assert!(!serde_json::to_string(&events).unwrap().contains(SECRET));
    assert_eq!(counter.load(Ordering::SeqCst), 0);
    assert_chain_ok(&h.store).await;
}

// ---------------------------------------------------------------------------
// 13. Dry run
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_runs_nothing_and_masks_secrets() {
    const SECRET: &str = "dry-run-secret-4242";
    let ops = format!(
        "{GREET_OPS}\n{}",
        r#"
[[ops]]
name = "file.touch"
roles = ["ops"]
approvals = 1
runner = { type = "exec", argv = ["/bin/sh", "-c", 'touch "$1"', "sh", "{path}", "--token={token}"] }
[[ops.params]]
name = "path"
type = "string"
[[ops.params]]
name = "token"
type = "secret"
"#
    );
    let counter = Arc::new(AtomicUsize::new(0));
    let h = start(&ops, |b| b.builtin("greet", counting(counter.clone()))).await;

    let t = h
        .exec
        .submit(sub("greet", "alice").arg("who", "x").dry_run(true))
        .await
        .unwrap();
    assert!(t.record.request.dry_run);
    let r = done(&h.exec, t.record.request.id).await;
    assert_eq!(r.state, State::Succeeded);
    assert_eq!(output(&r), "dry run: would builtin: greet");
    assert_eq!(
        counter.load(Ordering::SeqCst),
        0,
        "the builtin was not called"
    );

    let target = h.dir.path().join("touched");
    let t = h
        .exec
        .submit(
            sub("file.touch", "alice")
                .arg("path", target.display().to_string())
                .arg("token", SECRET)
                .dry_run(true),
        )
        .await
        .unwrap();
    let id = t.record.request.id;
    let r = done(&h.exec, id).await;
    assert_eq!(r.state, State::Succeeded, "{r:#?}");
    let out = output(&r);
    assert!(out.starts_with("dry run: would exec: /bin/sh -c"), "{out}");
    assert!(out.contains(&target.display().to_string()), "{out}");
    assert!(out.contains("'--token=********'"), "{out}");
    assert!(out.contains("after 1 approval(s)"), "{out}");
    assert!(!out.contains(SECRET), "{out}");
    assert!(!target.exists(), "a dry run ran the program");
    assert_eq!(labels(&h.exec, id).await, ["received", "succeeded"]);
    assert_eq!(h.exec.pending_approvals(), 0);
    assert_chain_ok(&h.store).await;
}

// ---------------------------------------------------------------------------
// 14. tower::Service
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_executor_is_a_tower_service() {
    use tower::ServiceExt;
    let counter = Arc::new(AtomicUsize::new(0));
    let h = start(GREET_OPS, |b| b.builtin("greet", counting(counter.clone()))).await;

    let ticket = h
        .exec
        .clone()
        .oneshot(sub("greet", "alice").arg("who", "tower"))
        .await
        .unwrap();
    assert!(!ticket.duplicate);
    assert_eq!(
        done(&h.exec, ticket.record.request.id).await.state,
        State::Succeeded
    );

    // Ordinary layers compose with it.
    let svc = tower::ServiceBuilder::new()
        .concurrency_limit(1)
        .service(h.exec.clone());
    let ticket = svc
        .oneshot(sub("greet", "alice").arg("who", "layered"))
        .await
        .unwrap();
    assert_eq!(
        done(&h.exec, ticket.record.request.id).await.state,
        State::Succeeded
    );
    assert_eq!(counter.load(Ordering::SeqCst), 2);

    h.exec.shutdown(Duration::from_secs(5)).await.unwrap();
    let err = h
        .exec
        .clone()
        .oneshot(sub("greet", "alice").arg("who", "late"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::ShuttingDown), "{err:?}");
    assert_eq!(counter.load(Ordering::SeqCst), 2);
}
