//! Issue forms: a request from a filled-in form, an unreadable one, and the
//! generated templates.

use serde_json::json;
use youops_core::config::Config;
use youops_core::model::State;
use youops_frontend_issue::issue_forms;

use crate::support::*;
use youops_testkit::github::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_form_runs_once_with_feedback_edited_in_place() {
    let h = Harness::new("0s").await;
    let body = form_body(
        "user.create",
        &[
            ("username", "jdoe"),
            ("email", "jdoe@example.com"),
            ("team", "data"),
            ("admin", "- [X] yes"),
            ("quota", "_No response_"),
            (
                "note",
                "Hello, world, with commas\r\n### not a field\r\nsecond line",
            ),
        ],
    );
    let issue = h.fake.add_issue(10, "alice", &body);
    let (s, text) = h
        .deliver(
            "issues",
            "d-open-10",
            &issues_event("opened", &issue, "alice", None),
        )
        .await;
    assert_eq!(s, 200, "{text}");
    let rec = h.requests().await.pop().unwrap();
    let id = rec.request.id;
    assert_eq!(rec.request.op, "user.create");
    assert_eq!(rec.request.actor.principal.as_deref(), Some("alice"));
    assert_eq!(rec.request.origin.location, REPO);
    h.wait_state(id, State::Succeeded).await;
    let args = h.runs.lock().unwrap()[0].clone();
    assert_eq!(args["username"], "jdoe");
    assert_eq!(args["team"], "data");
    assert_eq!(args["admin"], "true");
    assert_eq!(
        args["note"],
        "Hello, world, with commas\n### not a field\nsecond line"
    );
    assert!(!args.contains_key("quota"));

    // Redelivery, and a `labeled` event for the same body: nothing new.
    let (s, text) = h
        .deliver(
            "issues",
            "d-open-10",
            &issues_event("opened", &issue, "alice", None),
        )
        .await;
    assert_eq!(s, 200);
    assert!(text.contains("duplicate delivery"));
    let mut labeled = issues_event("labeled", &issue, "alice", None);
    labeled["label"] = label_json("youops");
    let (s, text) = h.deliver("issues", "d-label-10", &labeled).await;
    assert_eq!(s, 200);
    assert!(text.contains("already handled"), "{text}");

    let (cid, status) = h.wait_status(10, id, State::Succeeded).await;
    assert!(status.contains("jdoe@example.com"));
    assert!(status.contains(&rec.request.id.to_string()));
    assert!(status.contains("http://youops.test/requests/"));
    assert!(
        status.contains("user.create done"),
        "output shown: {status}"
    );
    // Close on success, labels and reactions.
    eventually("issue closed", || {
        (h.fake.issue(10)["state"] == "closed").then_some(())
    })
    .await;
    assert_eq!(h.fake.labels(10), vec!["youops", "youops:succeeded"]);
    let reactions = h.fake.reactions("issue:10");
    assert!(reactions.contains(&"eyes".to_string()), "{reactions:?}");
    assert!(reactions.contains(&"rocket".to_string()), "{reactions:?}");
    assert!(!reactions.contains(&"-1".to_string()));
    assert_eq!(h.runs(), 1);
    // ONE status comment, created once and edited in place.
    assert_eq!(h.fake.bot_comments(10).len(), 1);
    let calls = h.fake.calls();
    let posts = calls
        .iter()
        .filter(|c| c.method == "POST" && c.path.ends_with("/issues/10/comments"))
        .count();
    assert_eq!(posts, 1);
    let patches: Vec<&Call> = calls
        .iter()
        .filter(|c| c.method == "PATCH" && c.path.ends_with(&format!("/comments/{cid}")))
        .collect();
    assert!(!patches.is_empty());
    assert!(
        calls.iter().all(|c| c.authorized),
        "every call carries the token"
    );
    // The last status shows the last audit hash of the request.
    let rec = h.exec.get(id).await.unwrap();
    assert!(h.fake.bot_comments(10)[0].1.contains(&rec.last_hash));
    h.shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_form_gets_one_comment_with_every_problem_then_an_edit_fixes_it() {
    let h = Harness::new("0s").await;
    let bad = form_body(
        "user.create",
        &[
            ("username", "_No response_"),
            ("email", "not-an-email"),
            ("quota", "500"),
        ],
    );
    let issue = h.fake.add_issue(11, "alice", &bad);
    let (s, _) = h
        .deliver(
            "issues",
            "d-open-11",
            &issues_event("opened", &issue, "alice", None),
        )
        .await;
    assert_eq!(s, 200);
    let first = h.requests().await.pop().unwrap();
    assert_eq!(first.state, State::Invalid);
    let (cid, text) = h.wait_status(11, first.request.id, State::Invalid).await;
    for problem in [
        "missing parameter `username`",
        "not an e-mail address",
        "above the maximum",
    ] {
        assert!(text.contains(problem), "{problem} missing in {text}");
    }
    eventually("failed label", || {
        h.fake
            .labels(11)
            .contains(&"youops:failed".to_string())
            .then_some(())
    })
    .await;
    assert!(h.fake.reactions("issue:11").contains(&"-1".to_string()));
    assert!(!h.fake.reactions("issue:11").contains(&"eyes".to_string()));
    assert_eq!(h.runs(), 0);

    // A title-only edit does nothing.
    let mut title_edit = issues_event("edited", &issue, "alice", None);
    title_edit["changes"] = json!({ "title": { "from": "old" } });
    let (s, _) = h.deliver("issues", "d-title-11", &title_edit).await;
    assert_eq!(s, 200);
    assert_eq!(h.requests().await.len(), 1);

    let good = form_body(
        "user.create",
        &[
            ("username", "jdoe"),
            ("email", "jdoe@example.com"),
            ("quota", "5"),
        ],
    );
    let edited = h.fake.edit_issue_body(11, &good);
    let (s, _) = h
        .deliver(
            "issues",
            "d-edit-11",
            &issues_event("edited", &edited, "alice", Some(&bad)),
        )
        .await;
    assert_eq!(s, 200);
    let all = h.requests().await;
    assert_eq!(all.len(), 2);
    let second = all[0].request.id;
    h.wait_state(second, State::Succeeded).await;
    let (cid2, _) = h.wait_status(11, second, State::Succeeded).await;
    assert_eq!(cid, cid2, "the same comment is edited");
    assert_eq!(h.fake.bot_comments(11).len(), 1);
    assert_eq!(h.runs(), 1);
    eventually("succeeded label", || {
        let l = h.fake.labels(11);
        (l.contains(&"youops:succeeded".to_string()) && !l.contains(&"youops:failed".to_string()))
            .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_forms_are_generated_for_the_catalog() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = Config::parse(OPS, dir.path(), "t", &|_| None).unwrap();
    let forms = issue_forms(&cfg.catalog());
    let names: Vec<&str> = forms.iter().map(|(n, _)| n.as_str()).collect();
    // db.rotate needs a secret: no form.
    assert_eq!(
        names,
        vec!["app.deploy.yml", "db.migrate.yml", "user.create.yml"]
    );
    let uc: serde_yaml::Value = serde_yaml::from_str(&forms[2].1).unwrap();
    assert_eq!(uc["name"].as_str(), Some("user.create"));
    assert!(uc["labels"]
        .as_sequence()
        .unwrap()
        .iter()
        .any(|l| l.as_str() == Some("youops")));
    let types: Vec<&str> = uc["body"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        vec![
            "markdown",
            "dropdown",
            "input",
            "input",
            "dropdown",
            "checkboxes",
            "input",
            "input"
        ]
    );
}
