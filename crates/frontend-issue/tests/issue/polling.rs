//! Polling catches up after downtime without running anything twice.

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use youops_core::config::Config;
use youops_core::model::State;
use youops_frontend_issue::webhook::sign;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_catches_up_after_downtime_without_running_twice() {
    let h = Harness::new("0s").await;
    // Before the "downtime": one form issue handled by webhook.
    let issue = h
        .fake
        .add_issue(20, "alice", &form_body("app.deploy", &[("version", "1")]));
    h.deliver(
        "issues",
        "d-open-20",
        &issues_event("opened", &issue, "alice", None),
    )
    .await;
    let first = h.requests().await[0].request.id;
    let c = h
        .fake
        .add_comment(20, "bob", &format!("/ops approve {first}"));
    h.deliver(
        "issue_comment",
        "d-20-ok",
        &comment_event("created", &issue, &c, "bob"),
    )
    .await;
    h.wait_state(first, State::Succeeded).await;
    h.wait_status(20, first, State::Succeeded).await;
    let help = h.fake.add_comment(20, "alice", "/ops help");
    h.deliver(
        "issue_comment",
        "d-20-help",
        &comment_event("created", &issue, &help, "alice"),
    )
    .await;
    let help_marker = format!("comment={} ", help["id"]);
    eventually("help reply", || {
        h.fake
            .bot_comments(20)
            .into_iter()
            .find(|(_, b)| b.contains(&help_marker))
    })
    .await;
    // #20's status, the reply to bob's approval, the help reply.
    assert_eq!(h.fake.bot_comments(20).len(), 3);
    // The frontend goes down; webhooks sent meanwhile are lost.
    h.shutdown.cancel();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let i2 = h.fake.add_issue(
        21,
        "dave",
        &form_body(
            "user.create",
            &[("username", "newbie"), ("email", "n@example.com")],
        ),
    );
    let _ = i2;
    let c2 = h.fake.add_comment(20, "dave", "/ops app.deploy version=2");
    // It comes back (fresh memory, same audit store) and polls.
    let text = format!("{OPS}\n[frontends.github]\n{}", section(&h.base, "100ms"));
    let cfg = Config::parse(&text, h._dir.path(), "test", &|_| None).unwrap();
    let shutdown2 = CancellationToken::new();
    let host2 = Harness::start_host(&h.exec, &cfg, &shutdown2).await;
    let runs = h.runs.clone();
    eventually("the missed issue to run", || {
        (runs.lock().unwrap().len() == 2).then_some(())
    })
    .await;
    let start = Instant::now();
    let all = loop {
        let all = h.requests().await;
        if all.len() >= 3 {
            break all;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "the missed comment was not picked up"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let from_comment = all
        .iter()
        .find(|r| {
            r.request
                .dedup_key
                .as_deref()
                .is_some_and(|k| k.contains(&format!(":comment:{}:", c2["id"])))
        })
        .expect("a request from the missed comment")
        .request
        .id;
    assert_eq!(
        h.exec.get(from_comment).await.unwrap().state,
        State::PendingApproval
    );
    // Several more polls: nothing new, no duplicate comments.
    let polls_before = h
        .fake
        .calls()
        .iter()
        .filter(|c| c.path.ends_with("/issues/comments"))
        .count();
    eventually("three more polls", || {
        (h.fake
            .calls()
            .iter()
            .filter(|c| c.path.ends_with("/issues/comments"))
            .count()
            >= polls_before + 3)
            .then_some(())
    })
    .await;
    assert_eq!(h.runs(), 2);
    assert_eq!(h.requests().await.len(), 3);
    // The feedback loop posts statuses on its own time: wait for them, then
    // check there are no more than expected.
    eventually("the missed comment's request's status comment", || {
        (h.fake.bot_comments(20).len() >= 4 && !h.fake.bot_comments(21).is_empty()).then_some(())
    })
    .await;
    let bot20 = h.fake.bot_comments(20);
    assert_eq!(
        bot20.len(),
        4,
        "one more: the status of the missed comment's request: {bot20:?}"
    );
    assert_eq!(h.fake.bot_comments(21).len(), 1);
    // The poll used `since`.
    assert!(h.fake.calls().iter().any(|c| c.query.contains("since=")));
    // A late webhook redelivery of the missed comment does not run it again.
    let (s, text) = send(&host2, {
        let payload = comment_event("created", &h.fake.issue(20), &c2, "dave");
        let body = serde_json::to_vec(&payload).unwrap();
        http::Request::builder()
            .method("POST")
            .uri("/github/webhook")
            .header("x-github-event", "issue_comment")
            .header("x-github-delivery", "d-late")
            .header("x-hub-signature-256", sign(SECRET.as_bytes(), &body))
            .body(bytes::Bytes::from(body))
            .unwrap()
    })
    .await;
    assert_eq!(s, 200);
    assert!(text.contains("already"), "{text}");
    assert_eq!(h.requests().await.len(), 3);
    shutdown2.cancel();
}
