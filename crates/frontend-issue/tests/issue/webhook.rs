//! Webhook delivery handling: signatures first, ping, unknown events and bad bodies.

use serde_json::json;
use youops_frontend_issue::webhook::sign;

use crate::support::*;
use youops_testkit::github::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signatures_are_checked_before_anything_else() {
    let h = Harness::new("0s").await;
    let issue = h
        .fake
        .add_issue(1, "alice", &form_body("app.deploy", &[("version", "1")]));
    let payload = issues_event("opened", &issue, "alice", None);
    let body = serde_json::to_vec(&payload).unwrap();
    let build = |sig: Option<(&str, String)>| {
        let mut b = http::Request::builder()
            .method("POST")
            .uri("/github/webhook")
            .header("x-github-event", "issues")
            .header("x-github-delivery", "d-sig");
        if let Some((name, value)) = sig {
            b = b.header(name, value);
        }
        b.body(bytes::Bytes::from(body.clone())).unwrap()
    };
    let (s, text) = send(&h.host, build(None)).await;
    assert_eq!(s, 401);
    assert!(text.contains("missing X-Hub-Signature-256"), "{text}");
    let (s, text) = send(
        &h.host,
        build(Some((
            "x-hub-signature",
            "sha1=0123456789abcdef0123456789abcdef01234567".into(),
        ))),
    )
    .await;
    assert_eq!(s, 401);
    assert!(text.contains("SHA-1"), "{text}");
    let (s, _) = send(
        &h.host,
        build(Some(("x-hub-signature-256", sign(b"wrong secret", &body)))),
    )
    .await;
    assert_eq!(s, 401);
    let (s, _) = send(
        &h.host,
        build(Some(("x-hub-signature-256", "sha256=abc".into()))),
    )
    .await;
    assert_eq!(s, 401);
    // Nothing got through.
    assert!(h.requests().await.is_empty());
    assert!(h.fake.calls().is_empty());
    // The right signature works.
    let (s, _) = send(
        &h.host,
        build(Some((
            "x-hub-signature-256",
            sign(SECRET.as_bytes(), &body),
        ))),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(h.requests().await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_unknown_events_unhandled_actions_and_bad_bodies() {
    let h = Harness::new("0s").await;
    let ping = json!({
        "zen": "Keep it logically awesome.", "hook_id": 123,
        "hook": { "type": "Repository", "id": 123, "name": "web", "active": true,
                  "events": ["issues", "issue_comment"],
                  "config": { "content_type": "json", "insecure_ssl": "0", "url": "https://youops.example/github/webhook" } },
        "repository": repo_json(), "sender": user_json("acme")
    });
    let (s, text) = h.deliver("ping", "d-ping", &ping).await;
    assert_eq!(s, 200);
    assert!(text.contains("logically awesome"));

    let push = json!({ "ref": "refs/heads/main", "repository": repo_json(), "sender": user_json("alice") });
    let (s, text) = h.deliver("push", "d-push", &push).await;
    assert!((200..300).contains(&s), "{s} {text}");
    assert!(text.contains("ignored"));

    let issue = h
        .fake
        .add_issue(2, "alice", &form_body("app.deploy", &[("version", "1")]));
    let (s, text) = h
        .deliver(
            "issues",
            "d-assigned",
            &issues_event("assigned", &issue, "alice", None),
        )
        .await;
    assert!((200..300).contains(&s), "{s} {text}");
    assert!(text.contains("ignored"));

    // Not the event it claims: 400 with the reason.
    let (s, text) = h
        .deliver("issues", "d-bad", &json!({ "action": "opened" }))
        .await;
    assert_eq!(s, 400);
    assert!(text.contains("not a valid `issues` event"), "{text}");
    let (s, text) = h.deliver("issue_comment", "d-bad2", &ping).await;
    assert_eq!(s, 400, "{text}");

    // A repository YouOps does not manage.
    let mut other = issues_event("opened", &issue, "alice", None);
    other["repository"]["full_name"] = json!("someone/else");
    let (s, text) = h.deliver("issues", "d-other", &other).await;
    assert!((200..300).contains(&s));
    assert!(text.contains("not managed"));
    assert!(h.requests().await.is_empty());
}
