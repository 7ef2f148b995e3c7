//! Comment commands: approvals, edits and deletes that void, refusals, and a
//! lost answer from GitHub.

use youops_core::model::{Actor, EventBody, State};

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approvals_in_comments_requester_refused_other_login_approves() {
    let h = Harness::new("0s").await;
    let issue = h
        .fake
        .add_issue(12, "alice", &form_body("app.deploy", &[("version", "2.0")]));
    h.deliver(
        "issues",
        "d-open-12",
        &issues_event("opened", &issue, "alice", None),
    )
    .await;
    let id = h.requests().await[0].request.id;
    h.wait_state(id, State::PendingApproval).await;
    let (_, status) = h.wait_status(12, id, State::PendingApproval).await;
    assert!(status.contains(&format!("/ops approve {id}")));
    eventually("pending label and eyes", || {
        (h.fake
            .labels(12)
            .contains(&"youops:pending-approval".to_string())
            && h.fake.reactions("issue:12").contains(&"eyes".to_string()))
        .then_some(())
    })
    .await;

    // The requester cannot approve.
    let c1 = h
        .fake
        .add_comment(12, "alice", &format!("LGTM\n/ops approve {id}"));
    let (s, text) = h
        .deliver(
            "issue_comment",
            "d-c1",
            &comment_event("created", &issue, &c1, "alice"),
        )
        .await;
    assert_eq!(s, 200);
    assert!(text.contains("approver ≠ requester"), "{text}");
    let reply = eventually("reply to alice", || {
        h.fake
            .bot_comments(12)
            .into_iter()
            .find(|(_, b)| b.contains(&format!("comment={}", c1["id"])))
    })
    .await;
    assert!(reply.1.contains("someone else must approve"), "{}", reply.1);
    assert_eq!(h.exec.get(id).await.unwrap().state, State::PendingApproval);

    // Another login approves: it runs.
    let c2 = h.fake.add_comment(12, "bob", &format!("/ops approve {id}"));
    let (s, _) = h
        .deliver(
            "issue_comment",
            "d-c2",
            &comment_event("created", &issue, &c2, "bob"),
        )
        .await;
    assert_eq!(s, 200);
    h.wait_state(id, State::Succeeded).await;
    let (_, status) = h.wait_status(12, id, State::Succeeded).await;
    assert!(status.contains("bob"), "approver shown: {status}");
    assert_eq!(h.runs(), 1);
    // The approval is in the audit with where it came from.
    let events = h.exec.events(id).await.unwrap();
    assert!(events
        .iter()
        .any(|e| matches!(&e.body, EventBody::Approval(a) if a.by.external_id == "bob")));
    assert!(events
        .iter()
        .any(|e| matches!(&e.body, EventBody::Notice { kind, .. } if kind == "comment_command")));
    // A redelivery of bob's comment does nothing more.
    let (s, text) = h
        .deliver(
            "issue_comment",
            "d-c2-again",
            &comment_event("created", &issue, &c2, "bob"),
        )
        .await;
    assert_eq!(s, 200);
    assert!(text.contains("already"), "{text}");
    assert_eq!(h.runs(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approval_given_elsewhere_reaches_the_issue() {
    let h = Harness::new("0s").await;
    let issue = h
        .fake
        .add_issue(13, "alice", &form_body("app.deploy", &[("version", "3")]));
    h.deliver(
        "issues",
        "d-open-13",
        &issues_event("opened", &issue, "alice", None),
    )
    .await;
    let id = h.requests().await[0].request.id;
    h.wait_state(id, State::PendingApproval).await;
    // Carol approves in Slack (through the executor, as the chat frontend does).
    h.exec
        .approve(id, &Actor::new("slack", "U_CAROL"), None)
        .await
        .unwrap();
    h.wait_state(id, State::Succeeded).await;
    let (_, status) = h.wait_status(13, id, State::Succeeded).await;
    assert!(status.contains("carol"), "{status}");
    eventually("rocket", || {
        h.fake
            .reactions("issue:13")
            .contains(&"rocket".to_string())
            .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edits_void_pending_requests_and_approvals() {
    let h = Harness::new("0s").await;
    // 1. An edit of the issue body after a partial approval voids that request.
    let body = form_body("db.migrate", &[("target", "users")]);
    let issue = h.fake.add_issue(14, "alice", &body);
    h.deliver(
        "issues",
        "d-open-14",
        &issues_event("opened", &issue, "alice", None),
    )
    .await;
    let first = h.requests().await[0].request.id;
    let c = h
        .fake
        .add_comment(14, "bob", &format!("/ops approve {first}"));
    h.deliver(
        "issue_comment",
        "d-14-approve",
        &comment_event("created", &issue, &c, "bob"),
    )
    .await;
    assert_eq!(h.exec.get(first).await.unwrap().approvals_needed, 1);
    let changed = form_body("db.migrate", &[("target", "everything")]);
    let edited = h.fake.edit_issue_body(14, &changed);
    let (s, text) = h
        .deliver(
            "issues",
            "d-edit-14",
            &issues_event("edited", &edited, "alice", Some(&body)),
        )
        .await;
    assert_eq!(s, 200, "{text}");
    let old = h.exec.get(first).await.unwrap();
    assert_eq!(old.state, State::Cancelled);
    assert!(old.reason.unwrap().contains("voided"));
    let events = h.exec.events(first).await.unwrap();
    assert!(events
        .iter()
        .any(|e| matches!(&e.body, EventBody::Notice { kind, .. } if kind == "edit")));
    let all = h.requests().await;
    assert_eq!(all.len(), 2);
    let second = all[0].request.id;
    let rec = h.exec.get(second).await.unwrap();
    assert_eq!(rec.state, State::PendingApproval);
    assert_eq!(
        rec.approvals_needed, 2,
        "bob's approval does not carry over"
    );
    assert_eq!(rec.request.args["target"].as_text(), "everything");
    h.wait_status(14, second, State::PendingApproval).await;

    // 2. Editing an approval comment voids the request it approved.
    let c2 = h
        .fake
        .add_comment(14, "bob", &format!("/ops approve {second}"));
    h.deliver(
        "issue_comment",
        "d-14-approve2",
        &comment_event("created", &issue, &c2, "bob"),
    )
    .await;
    assert_eq!(h.exec.get(second).await.unwrap().approvals_needed, 1);
    let c2e = h
        .fake
        .edit_comment(c2["id"].as_u64().unwrap(), "never mind");
    let (s, text) = h
        .deliver(
            "issue_comment",
            "d-14-edit2",
            &comment_event("edited", &issue, &c2e, "bob"),
        )
        .await;
    assert_eq!(s, 200);
    assert!(text.contains("voided"), "{text}");
    assert_eq!(h.exec.get(second).await.unwrap().state, State::Cancelled);
    h.wait_status(14, second, State::Cancelled).await;

    // 3. Deleting the comment a request came from voids it.
    let c3 = h.fake.add_comment(14, "alice", "/ops app.deploy version=9");
    h.deliver(
        "issue_comment",
        "d-14-run",
        &comment_event("created", &issue, &c3, "alice"),
    )
    .await;
    let third = h.requests().await[0].request.id;
    assert_eq!(
        h.exec.get(third).await.unwrap().state,
        State::PendingApproval
    );
    let (s, _) = h
        .deliver(
            "issue_comment",
            "d-14-del",
            &comment_event("deleted", &issue, &c3, "alice"),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(h.exec.get(third).await.unwrap().state, State::Cancelled);
    assert_eq!(h.runs(), 0);
    assert!(h.exec.store().verify().await.unwrap().ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unmapped_logins_get_a_reply_and_nothing_runs_secrets_are_refused() {
    let h = Harness::new("0s").await;
    let issue = h
        .fake
        .add_issue(15, "alice", "Just a discussion, not a form.");
    let (s, text) = h
        .deliver(
            "issues",
            "d-open-15",
            &issues_event("opened", &issue, "alice", None),
        )
        .await;
    assert_eq!(s, 200);
    assert!(text.contains("not a YouOps request"));
    let c = h
        .fake
        .add_comment(15, "mallory", "/ops app.deploy version=1");
    h.deliver(
        "issue_comment",
        "d-15-m",
        &comment_event("created", &issue, &c, "mallory"),
    )
    .await;
    let rec = h.requests().await[0].clone();
    assert_eq!(rec.state, State::Denied);
    let (_, status) = h.wait_status(15, rec.request.id, State::Denied).await;
    assert!(status.contains("not mapped"), "{status}");
    let c2 = h
        .fake
        .add_comment(15, "mallory", &format!("/ops approve {}", rec.request.id));
    let (_, text) = h
        .deliver(
            "issue_comment",
            "d-15-m2",
            &comment_event("created", &issue, &c2, "mallory"),
        )
        .await;
    assert!(text.contains("not mapped"), "{text}");
    // A secret typed in a public comment is refused, and the value never stored.
    let c3 = h
        .fake
        .add_comment(15, "alice", "/ops db.rotate password=hunter22");
    let (_, text) = h
        .deliver(
            "issue_comment",
            "d-15-secret",
            &comment_event("created", &issue, &c3, "alice"),
        )
        .await;
    assert!(text.contains("secret"), "{text}");
    assert_eq!(h.requests().await.len(), 1);
    let dump: Vec<String> = h
        .exec
        .store()
        .events(0, 1000)
        .await
        .unwrap()
        .iter()
        .map(|e| serde_json::to_string(e).unwrap())
        .collect();
    assert!(!dump.join("\n").contains("hunter22"));
    // help and a parse error get replies too.
    let c4 = h.fake.add_comment(
        15,
        "alice",
        "/ops help\n/ops app.deploy version=\"unbalanced",
    );
    let (_, text) = h
        .deliver(
            "issue_comment",
            "d-15-help",
            &comment_event("created", &issue, &c4, "alice"),
        )
        .await;
    assert!(text.contains("app.deploy"), "{text}");
    let reply = eventually("help reply", || {
        h.fake
            .bot_comments(15)
            .into_iter()
            .find(|(_, b)| b.contains(&format!("comment={}", c4["id"])))
    })
    .await;
    assert!(reply.1.contains("Ops you may run here"));
    assert!(reply.1.contains("❌"));
    assert_eq!(h.runs(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_comment_answer_is_not_posted_twice() {
    let h = Harness::new("0s").await;
    h.fake.st().lose_next_comment_answer = true;
    let issue = h
        .fake
        .add_issue(16, "alice", &form_body("app.deploy", &[("version", "1")]));
    h.deliver(
        "issues",
        "d-open-16",
        &issues_event("opened", &issue, "alice", None),
    )
    .await;
    let id = h.requests().await[0].request.id;
    h.exec
        .approve(id, &Actor::new("github", "bob"), None)
        .await
        .unwrap();
    h.wait_state(id, State::Succeeded).await;
    h.wait_status(16, id, State::Succeeded).await;
    // GitHub created the comment but the answer was a 502: no automatic retry
    // re-posted it, and the next update found it by its marker.
    assert_eq!(h.fake.bot_comments(16).len(), 1);
}

/// A comment line's claim expires with the dedup window; the comment is then
/// older than the window and never runs again, by the webhook or the poller.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_comment_whose_claim_expired_is_not_run_again() {
    let h = Harness::new_with_store("dedup_ttl = \"2s\"", |base| section(base, "0s")).await;
    let issue = h.fake.add_issue(30, "alice", "plain issue");
    let c = h.fake.add_comment(
        30,
        "alice",
        "/ops user.create username=abc email=a@example.com",
    );
    let (s, text) = h
        .deliver(
            "issue_comment",
            "d-run",
            &comment_event("created", &issue, &c, "alice"),
        )
        .await;
    assert_eq!(s, 200, "{text}");
    eventually("the run", || (h.runs() == 1).then_some(())).await;
    let key = format!("github:acme/ops:comment:{}:0", c["id"]);
    assert!(h.exec.store().find_dedup(&key).await.unwrap().is_some());
    // The claim expires: within the TTL plus one (1 s) bucket.
    tokio::time::sleep(std::time::Duration::from_millis(3_500)).await;
    assert_eq!(
        h.exec.store().find_dedup(&key).await.unwrap(),
        None,
        "expired"
    );
    // A redelivery (a new delivery id, so the webhook seen-set lets it in)
    // finds no claim, and the comment is older than the window: nothing runs.
    let (s, text) = h
        .deliver(
            "issue_comment",
            "d-again",
            &comment_event("created", &issue, &c, "alice"),
        )
        .await;
    assert_eq!(s, 200, "{text}");
    assert!(text.contains("older than the dedup window"), "{text}");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(h.runs(), 1);
    assert_eq!(h.requests().await.len(), 1);
}

/// An issue body's claim never expires: an old request issue is not run again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_issue_body_claim_outlives_the_dedup_window() {
    let h = Harness::new_with_store("dedup_ttl = \"1s\"", |base| section(base, "0s")).await;
    let issue = h.fake.add_issue(
        31,
        "alice",
        &form_body(
            "user.create",
            &[("username", "abc"), ("email", "a@example.com")],
        ),
    );
    h.deliver(
        "issues",
        "d-open-31",
        &issues_event("opened", &issue, "alice", None),
    )
    .await;
    eventually("the run", || (h.runs() == 1).then_some(())).await;
    tokio::time::sleep(std::time::Duration::from_millis(2_500)).await;
    let (s, text) = h
        .deliver(
            "issues",
            "d-label-31",
            &issues_event("labeled", &issue, "alice", None),
        )
        .await;
    assert_eq!(s, 200, "{text}");
    assert!(text.contains("already handled"), "{text}");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(h.runs(), 1);
}
