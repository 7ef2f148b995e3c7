//! Every documented event and action.
//!
//! Payloads with only what GitHub's "Webhook events and payloads" documents as
//! always present for each event and action (its webhook schemas), so nothing
//! that GitHub may leave out is relied on: an `issue` there has no `state`,
//! `labels`, `locked` or `assignee` unless the action's own schema requires
//! them. Every delivery goes signed over HTTP to a real listener.

use std::time::Duration;

use serde_json::{json, Value};
use youops_core::model::State;

use crate::support::*;
use youops_testkit::github::*;

/// The fields GitHub's webhook schemas require of an `issue` (`webhooks_issue`,
/// and `webhooks_issue_2`, the reduced one `pinned` and `unpinned` carry).
const ISSUE_REQUIRED: &[&str] = &[
    "active_lock_reason",
    "assignees",
    "author_association",
    "body",
    "closed_at",
    "comments",
    "comments_url",
    "created_at",
    "events_url",
    "html_url",
    "id",
    "labels_url",
    "milestone",
    "node_id",
    "number",
    "reactions",
    "repository_url",
    "title",
    "updated_at",
    "url",
    "user",
];

/// `v` with only the keys `keys` (and `extra`).
fn pick(v: &Value, keys: &[&str], extra: &[&str]) -> Value {
    let o = v.as_object().unwrap();
    Value::Object(
        o.iter()
            .filter(|(k, _)| keys.contains(&k.as_str()) || extra.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    )
}

/// `issue` as an `issues` action documents it: the required fields, plus
/// `extra` ones the action's schema also requires.
fn documented_issue(issue: &Value, extra: &[(&str, Value)]) -> Value {
    let mut v = pick(issue, ISSUE_REQUIRED, &[]);
    for (k, x) in extra {
        v[*k] = x.clone();
    }
    v
}

/// `issue` as `issue_comment` documents it: GitHub's schema for that event
/// also requires `labels`, `state`, `locked` and `assignee`.
fn documented_comment_issue(issue: &Value) -> Value {
    pick(
        issue,
        ISSUE_REQUIRED,
        &["labels", "state", "locked", "assignee"],
    )
}

/// An `issues` delivery: `action`, `issue`, `repository`, `sender`, plus `extra`.
fn documented_issues(action: &str, issue: Value, sender: &str, extra: &[(&str, Value)]) -> Value {
    let mut v = json!({
        "action": action, "issue": issue, "repository": repo_json(), "sender": user_json(sender)
    });
    for (k, x) in extra {
        v[*k] = x.clone();
    }
    v
}

/// An `issue_comment` delivery (`changes` for `edited`, as documented).
fn documented_comment(action: &str, issue: &Value, comment: &Value, sender: &str) -> Value {
    let keys = [
        "author_association",
        "body",
        "created_at",
        "html_url",
        "id",
        "issue_url",
        "node_id",
        "performed_via_github_app",
        "reactions",
        "updated_at",
        "url",
        "user",
    ];
    let mut v = json!({
        "action": action, "issue": documented_comment_issue(issue),
        "comment": pick(comment, &keys, &[]), "repository": repo_json(), "sender": user_json(sender)
    });
    if action == "edited" {
        v["changes"] = json!({ "body": { "from": "/ops old text" } });
    }
    v
}

fn milestone_json() -> Value {
    json!({
        "url": format!("https://api.github.com/repos/{REPO}/milestones/1"),
        "html_url": format!("https://github.com/{REPO}/milestone/1"),
        "labels_url": format!("https://api.github.com/repos/{REPO}/milestones/1/labels"),
        "id": 1, "node_id": "MI_1", "number": 1, "title": "v1", "description": null,
        "creator": user_json("acme"), "open_issues": 1, "closed_issues": 0, "state": "open",
        "created_at": now(), "updated_at": now(), "due_on": null, "closed_at": null
    })
}

fn issue_type_json() -> Value {
    json!({
        "id": 3, "node_id": "IT_1", "name": "Bug", "description": "Something is broken",
        "color": "red", "created_at": now(), "updated_at": now(), "is_enabled": true
    })
}

fn installation_json(suspended: bool) -> Value {
    json!({
        "id": 77, "account": user_json("acme"), "repository_selection": "selected",
        "access_tokens_url": "https://api.github.com/app/installations/77/access_tokens",
        "repositories_url": "https://api.github.com/installation/repositories",
        "html_url": "https://github.com/settings/installations/77", "app_id": 4242,
        "app_slug": "youops", "target_id": 1004, "target_type": "Organization",
        "permissions": { "issues": "write", "metadata": "read" },
        "events": ["issues", "issue_comment"], "created_at": now(), "updated_at": now(),
        "single_file_name": null,
        "suspended_by": if suspended { user_json("acme") } else { Value::Null },
        "suspended_at": if suspended { json!(now()) } else { Value::Null }
    })
}

fn documented_installation(action: &str) -> Value {
    let mut v = json!({
        "action": action, "installation": installation_json(action == "suspend"),
        "sender": user_json("acme")
    });
    if matches!(action, "created" | "new_permissions_accepted") {
        v["repositories"] = json!([{ "id": 4242, "node_id": "R_kgDOA", "name": "ops", "full_name": REPO, "private": false }]);
        v["requester"] = Value::Null;
    }
    v
}

fn documented_label(action: &str) -> Value {
    let mut v = json!({
        "action": action, "label": label_json("youops"), "repository": repo_json(),
        "sender": user_json("acme")
    });
    if action == "edited" {
        v["changes"] = json!({ "name": { "from": "ops" } });
    }
    v
}

fn documented_push() -> Value {
    let (before, after) = (
        "6113728f27ae82c7b1a177c8d03f9e96e0adf246",
        "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c",
    );
    json!({
        "ref": "refs/heads/main", "before": before, "after": after, "base_ref": null,
        "created": false, "deleted": false, "forced": false,
        "compare": format!("https://github.com/{REPO}/compare/{before}...{after}"),
        "commits": [], "head_commit": null,
        "pusher": { "name": "alice", "email": "alice@example.com" },
        "repository": repo_json(), "sender": user_json("alice")
    })
}

fn documented_ping() -> Value {
    json!({
        "zen": "Design for failure.", "hook_id": 123,
        "hook": {
            "type": "Repository", "id": 123, "name": "web", "active": true,
            "events": ["issues", "issue_comment"],
            "config": { "content_type": "json", "insecure_ssl": "0", "url": "https://youops.example/github/webhook" },
            "updated_at": now(), "created_at": now(),
            "url": format!("https://api.github.com/repos/{REPO}/hooks/123"),
            "test_url": format!("https://api.github.com/repos/{REPO}/hooks/123/test"),
            "ping_url": format!("https://api.github.com/repos/{REPO}/hooks/123/pings"),
            "deliveries_url": format!("https://api.github.com/repos/{REPO}/hooks/123/deliveries"),
            "last_response": { "code": null, "status": "unused", "message": null }
        },
        "repository": repo_json(), "sender": user_json("acme")
    })
}

/// Every `issues` action YouOps does not act on, with its documented payload,
/// for an issue that is a valid YouOps request form (so acting on it by mistake
/// would show).
fn ignored_issues_deliveries(issue: &Value) -> Vec<(&'static str, Value)> {
    let doc = |extra: &[(&str, Value)]| documented_issue(issue, extra);
    let bob = || user_json("bob");
    let closed_at = json!(now());
    vec![
        (
            "pinned",
            documented_issues("pinned", doc(&[]), "alice", &[]),
        ),
        (
            "unpinned",
            documented_issues("unpinned", doc(&[]), "alice", &[]),
        ),
        (
            "closed",
            documented_issues(
                "closed",
                doc(&[("state", json!("closed")), ("closed_at", closed_at)]),
                "alice",
                &[],
            ),
        ),
        (
            "assigned",
            documented_issues("assigned", doc(&[]), "alice", &[("assignee", bob())]),
        ),
        (
            "unassigned",
            documented_issues("unassigned", doc(&[]), "alice", &[("assignee", bob())]),
        ),
        (
            "unlabeled",
            documented_issues(
                "unlabeled",
                doc(&[]),
                "alice",
                &[("label", label_json("youops"))],
            ),
        ),
        (
            "locked",
            documented_issues(
                "locked",
                doc(&[
                    ("locked", json!(true)),
                    ("active_lock_reason", json!("resolved")),
                ]),
                "alice",
                &[],
            ),
        ),
        (
            "unlocked",
            documented_issues("unlocked", doc(&[("locked", json!(false))]), "alice", &[]),
        ),
        (
            "transferred",
            documented_issues(
                "transferred",
                doc(&[]),
                "alice",
                &[(
                    "changes",
                    json!({ "new_issue": doc(&[]), "new_repository": repo_json() }),
                )],
            ),
        ),
        (
            "milestoned",
            documented_issues(
                "milestoned",
                doc(&[("milestone", milestone_json())]),
                "alice",
                &[("milestone", milestone_json())],
            ),
        ),
        (
            "demilestoned",
            documented_issues(
                "demilestoned",
                doc(&[]),
                "alice",
                &[("milestone", milestone_json())],
            ),
        ),
        (
            "typed",
            documented_issues("typed", doc(&[]), "alice", &[("type", issue_type_json())]),
        ),
        (
            "untyped",
            documented_issues("untyped", doc(&[]), "alice", &[("type", issue_type_json())]),
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_delivery_youops_does_not_act_on_gets_a_2xx_and_does_nothing() {
    let h = Harness::new("0s").await;
    let issue = h.fake.add_issue(
        30,
        "alice",
        &form_body(
            "user.create",
            &[("username", "jdoe"), ("email", "j@example.com")],
        ),
    );
    let head = h.exec.store().head().await.unwrap();

    // (event, payload, status, what the answer says)
    let mut table: Vec<(&str, Value, u16, String)> = Vec::new();
    for (action, payload) in ignored_issues_deliveries(&issue) {
        table.push(("issues", payload, 202, format!("ignored: issues/{action}")));
    }
    for action in [
        "created",
        "deleted",
        "suspend",
        "unsuspend",
        "new_permissions_accepted",
    ] {
        table.push((
            "installation",
            documented_installation(action),
            202,
            format!("ignored: installation/{action}"),
        ));
    }
    for action in ["created", "edited", "deleted"] {
        table.push((
            "label",
            documented_label(action),
            202,
            format!("ignored: label/{action}"),
        ));
    }
    table.push(("push", documented_push(), 202, "ignored: push".into()));
    // Event types and actions GitHub may add later.
    table.push((
        "youops_future_event",
        json!({ "action": "created", "sender": user_json("acme") }),
        202,
        "ignored: youops_future_event/created".into(),
    ));
    table.push((
        "issues",
        json!({ "action": "archived", "issue": { "number": 30 } }),
        202,
        "ignored: issues/archived".into(),
    ));
    table.push((
        "issue_comment",
        json!({ "action": "pinned", "comment": "not even an object" }),
        202,
        "ignored: issue_comment/pinned".into(),
    ));
    table.push(("ping", documented_ping(), 200, "Design for failure.".into()));

    for (i, (event, payload, status, says)) in table.iter().enumerate() {
        let delivery = format!("d-ignored-{i}");
        let (s, text) = h.post(event, &delivery, payload).await;
        assert_eq!(s, *status, "{event} {says}: {text}");
        assert!(text.contains(says.as_str()), "{event}: {text}");
        if *status == 202 {
            let v: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(v["delivery"], json!(delivery), "{text}");
            assert_eq!(v["event"], json!(event), "{text}");
        }
        // The same delivery again: still ignored, not a "duplicate" (no id was kept).
        let (s, again) = h.post(event, &delivery, payload).await;
        assert_eq!(s, *status, "{again}");
        assert!(again.contains(says.as_str()), "{again}");
    }
    let ping: Value =
        serde_json::from_str(&h.post("ping", "d-ping-2", &documented_ping()).await.1).unwrap();
    assert_eq!(ping["hook_id"], json!(123));

    // Nothing ran, nothing was recorded, GitHub was not called.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(h.requests().await.is_empty());
    assert_eq!(h.runs(), 0);
    assert_eq!(h.exec.store().head().await.unwrap(), head);
    assert!(h.fake.calls().is_empty(), "{:?}", h.fake.calls());
    h.shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_bodies_get_a_400_with_the_reason_and_do_nothing() {
    let h = Harness::new("0s").await;
    let issue = h
        .fake
        .add_issue(31, "alice", &form_body("app.deploy", &[("version", "1")]));
    let head = h.exec.store().head().await.unwrap();
    let mut no_number = documented_issue(&issue, &[]);
    no_number.as_object_mut().unwrap().remove("number");
    let comment = h.fake.add_comment(31, "bob", "/ops help");
    let mut no_comment = documented_comment("created", &issue, &comment, "bob");
    no_comment.as_object_mut().unwrap().remove("comment");
    // (event, body, what the 400 says)
    let table: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "issues",
            br#"{"action":"opened""#.to_vec(),
            "not a valid `issues` event",
        ),
        ("push", b"not json".to_vec(), "the body is not JSON"),
        (
            "installation",
            b"{\"action\":\"created\",\"x\":\"\xff\"}".to_vec(),
            "not UTF-8",
        ),
        (
            "issues",
            br#"{"issue":{"number":31}}"#.to_vec(),
            "missing field `action`",
        ),
        (
            "issue_comment",
            br#"{"action":5}"#.to_vec(),
            "`action` is not a string",
        ),
        (
            "issues",
            serde_json::to_vec(&documented_issues("opened", no_number, "alice", &[])).unwrap(),
            "not a valid `issues` event (action `opened`): missing field `number`",
        ),
        (
            "issue_comment",
            serde_json::to_vec(&no_comment).unwrap(),
            "not a valid `issue_comment` event (action `created`): missing field `comment`",
        ),
        (
            "ping",
            br#"{"hook":{}}"#.to_vec(),
            "not a valid `ping` event",
        ),
    ];
    for (i, (event, body, says)) in table.into_iter().enumerate() {
        let (s, text) = h.post_raw(event, &format!("d-bad-{i}"), body).await;
        assert_eq!(s, 400, "{event}: {text}");
        assert!(text.contains(says), "{event}: {text}");
    }
    assert!(h.requests().await.is_empty());
    assert_eq!(h.exec.store().head().await.unwrap(), head);
    assert!(h.fake.calls().is_empty());
    h.shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handled_actions_act_on_the_payloads_github_documents() {
    let h = Harness::new("0s").await;
    let body = form_body("app.deploy", &[("version", "1")]);
    let issue = h.fake.add_issue(40, "alice", &body);
    let get_issue = |h: &Harness| {
        h.fake
            .calls()
            .iter()
            .filter(|c| c.method == "GET" && c.path == format!("/repos/{REPO}/issues/40"))
            .count()
    };

    // issues/opened without `state` (documented as optional): opening implies it.
    let opened = documented_issues("opened", documented_issue(&issue, &[]), "alice", &[]);
    let (s, text) = h.post("issues", "d-40-opened", &opened).await;
    assert_eq!(s, 200, "{text}");
    assert!(text.contains("pending_approval"), "{text}");
    let first = h.requests().await[0].request.id;
    h.wait_state(first, State::PendingApproval).await;
    assert_eq!(get_issue(&h), 0, "no need to ask GitHub");

    // issues/labeled and issues/reopened of the same body: nothing new.
    let labeled = documented_issues(
        "labeled",
        documented_issue(&issue, &[]),
        "alice",
        &[("label", label_json("youops"))],
    );
    let reopened = documented_issues(
        "reopened",
        documented_issue(&issue, &[("state", json!("open"))]),
        "alice",
        &[],
    );
    for (action, payload) in [("labeled", &labeled), ("reopened", &reopened)] {
        let (s, text) = h.post("issues", &format!("d-40-{action}"), payload).await;
        assert_eq!(s, 200, "{action}: {text}");
        assert!(
            text.contains(&format!("already handled as request {first}")),
            "{action}: {text}"
        );
    }

    // issues/edited without `state`: GitHub is asked, the pending request is
    // voided and the new body is a new request.
    let edited_issue = h
        .fake
        .edit_issue_body(40, &form_body("app.deploy", &[("version", "2")]));
    let edited = documented_issues(
        "edited",
        documented_issue(&edited_issue, &[]),
        "alice",
        &[("changes", json!({ "body": { "from": body } }))],
    );
    let (s, text) = h.post("issues", "d-40-edited", &edited).await;
    assert_eq!(s, 200, "{text}");
    assert_eq!(get_issue(&h), 1, "the state was asked for once");
    assert_eq!(h.exec.get(first).await.unwrap().state, State::Cancelled);
    let all = h.requests().await;
    assert_eq!(all.len(), 2);
    let second = all[0].request.id;
    assert_eq!(
        h.exec.get(second).await.unwrap().request.args["version"].as_text(),
        "2"
    );

    // issue_comment/created: bob approves, it runs.
    let approve = h
        .fake
        .add_comment(40, "bob", &format!("/ops approve {second}"));
    let (s, text) = h
        .post(
            "issue_comment",
            "d-40-c1",
            &documented_comment("created", &edited_issue, &approve, "bob"),
        )
        .await;
    assert_eq!(s, 200, "{text}");
    h.wait_state(second, State::Succeeded).await;
    assert_eq!(h.runs(), 1);

    // issue_comment/edited after it ran: recorded, nothing voided, nothing runs.
    let approve_edited = h
        .fake
        .edit_comment(approve["id"].as_u64().unwrap(), "never mind");
    let (s, text) = h
        .post(
            "issue_comment",
            "d-40-c1-edited",
            &documented_comment("edited", &edited_issue, &approve_edited, "bob"),
        )
        .await;
    assert_eq!(s, 200, "{text}");
    assert!(text.contains("nothing pending to void"), "{text}");
    assert_eq!(h.exec.get(second).await.unwrap().state, State::Succeeded);

    // A command comment makes a pending request; deleting the issue voids it.
    let run = h.fake.add_comment(40, "alice", "/ops app.deploy version=3");
    let (s, text) = h
        .post(
            "issue_comment",
            "d-40-c2",
            &documented_comment("created", &edited_issue, &run, "alice"),
        )
        .await;
    assert_eq!(s, 200, "{text}");
    let third = h.requests().await[0].request.id;
    assert_eq!(
        h.exec.get(third).await.unwrap().state,
        State::PendingApproval
    );
    let deleted = documented_issues(
        "deleted",
        documented_issue(&edited_issue, &[]),
        "alice",
        &[],
    );
    let (s, text) = h.post("issues", "d-40-deleted", &deleted).await;
    assert_eq!(s, 200, "{text}");
    assert!(text.contains("voided 1 pending request(s)"), "{text}");
    assert_eq!(h.exec.get(third).await.unwrap().state, State::Cancelled);

    // issue_comment/deleted of a comment whose request is already void.
    let (s, text) = h
        .post(
            "issue_comment",
            "d-40-c2-deleted",
            &documented_comment("deleted", &edited_issue, &run, "alice"),
        )
        .await;
    assert_eq!(s, 200, "{text}");
    assert!(text.contains("nothing pending to void"), "{text}");
    assert_eq!(h.runs(), 1);
    assert!(h.exec.store().verify().await.unwrap().ok());
    h.shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_without_state_of_a_closed_issue_is_not_submitted() {
    let h = Harness::new("0s").await;
    let body = form_body("app.deploy", &[("version", "1")]);
    h.fake.add_issue(41, "alice", "Just a discussion.");
    let issue = h.fake.edit_issue_body(41, &body);
    h.fake.st().issues.get_mut(&(REPO.to_string(), 41)).unwrap()["state"] = json!("closed");
    let edited = documented_issues(
        "edited",
        documented_issue(&issue, &[]),
        "alice",
        &[(
            "changes",
            json!({ "body": { "from": "Just a discussion." } }),
        )],
    );
    let (s, text) = h.post("issues", "d-41-edited", &edited).await;
    assert_eq!(s, 200, "{text}");
    assert!(text.contains("closed issue: not submitted"), "{text}");
    assert!(h.requests().await.is_empty());
    h.shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_issue_whose_author_is_null_is_opened_by_the_sender_and_otherwise_not_submitted() {
    let h = Harness::new("0s").await;
    // `user` is `null` in GitHub's schema for a deleted account.
    let issue = h
        .fake
        .add_issue(42, "alice", &form_body("app.deploy", &[("version", "1")]));
    let opened = documented_issues(
        "opened",
        documented_issue(&issue, &[("user", Value::Null)]),
        "alice",
        &[],
    );
    let (s, text) = h.post("issues", "d-42-opened", &opened).await;
    assert_eq!(s, 200, "{text}");
    let rec = h.requests().await.pop().unwrap();
    assert_eq!(rec.request.actor.principal.as_deref(), Some("alice"));

    let other = h
        .fake
        .add_issue(43, "bob", &form_body("app.deploy", &[("version", "2")]));
    let labeled = documented_issues(
        "labeled",
        documented_issue(&other, &[("user", Value::Null)]),
        "alice",
        &[("label", label_json("youops"))],
    );
    let (s, text) = h.post("issues", "d-43-labeled", &labeled).await;
    assert_eq!(s, 200, "{text}");
    assert!(text.contains("issue #43 has no author"), "{text}");
    assert_eq!(h.requests().await.len(), 1);
    h.shutdown.cancel();
}
