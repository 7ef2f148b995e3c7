//! The webhook: triggers a pass; bad signatures and tokens are refused.

use tokio_util::sync::CancellationToken;
use youops_core::frontend::{Frontend, FrontendHost, Frontends};

use crate::support::*;

#[tokio::test]
async fn webhook_triggers_reconcile_and_bad_signature_is_401() {
    let secret = "webhook-secret-123";
    let h = H::local(
        &format!("interval = \"1h\"\nwebhook_secret = \"{secret}\"\nwebhook_token = \"plain-trigger-token\""),
        false,
    )
    .await;
    let repo = h.repo();
    commit(
        &repo,
        &[(
            "state/users.toml",
            Some(&users_file(&[("alice", "a@x.example")])),
        )],
        "one",
        "alice@example.com",
    );
    let shutdown = CancellationToken::new();
    let host = FrontendHost::new(
        &Frontends::new().with(h.git.clone()),
        &h.exec,
        None,
        &shutdown,
        |_| toml::Table::new(),
    );
    let routes = host.routes();
    assert_eq!(routes.len(), 1);
    assert_eq!(routes[0].0.path, "/git/webhook");
    let index = routes[0].1;
    let handles = host.spawn();
    eventually("ready", 10, || async { h.git.is_ready().then_some(()) }).await;
    assert!(
        h.world.user("alice").is_some(),
        "the first pass ran at start"
    );

    let c2 = commit(
        &repo,
        &[(
            "state/users.toml",
            Some(&users_file(&[
                ("alice", "a@x.example"),
                ("bob", "b@x.example"),
            ])),
        )],
        "two",
        "alice@example.com",
    );
    let push = serde_json::json!({
        "ref": "refs/heads/main",
        "before": "0000000000000000000000000000000000000000",
        "after": c2.to_string(),
        "repository": { "full_name": "acme/desired-state" },
        "pusher": { "name": "alice", "email": "alice@example.com" },
    });
    let body = serde_json::to_vec(&push).unwrap();
    let headers = |sig: String| {
        vec![
            ("x-github-event", "push".to_string()),
            (
                "x-github-delivery",
                "72d3162e-cc78-11e3-81ab-4c9367dc0958".to_string(),
            ),
            ("content-type", "application/json".to_string()),
            ("x-hub-signature-256", sig),
        ]
    };
    // Bad signature, missing signature, wrong token: 401, nothing happens.
    let r = host
        .handle(
            index,
            webhook_request(&headers(github_signature("not-the-secret", &body)), &body),
        )
        .await;
    assert_eq!(r.status(), 401);
    let r = host
        .handle(
            index,
            webhook_request(&[("x-github-event", "push".into())], &body),
        )
        .await;
    assert_eq!(r.status(), 401);
    let r = host
        .handle(
            index,
            webhook_request(&[("authorization", "Bearer wrong-token-xyz".into())], b""),
        )
        .await;
    assert_eq!(r.status(), 401);
    // The tampered body with the original signature is refused too.
    let mut tampered = body.clone();
    tampered.extend_from_slice(b" ");
    let r = host
        .handle(
            index,
            webhook_request(&headers(github_signature(secret, &body)), &tampered),
        )
        .await;
    assert_eq!(r.status(), 401);
    assert!(h.world.user("bob").is_none());
    assert_eq!(h.metrics.counter("youops_git_webhooks_rejected_total"), 4);

    // A signed push event triggers an immediate pass.
    let r = host
        .handle(
            index,
            webhook_request(&headers(github_signature(secret, &body)), &body),
        )
        .await;
    assert_eq!(r.status(), 202, "{:?}", r.body());
    eventually("bob to be applied after the webhook", 10, || async {
        h.world.user("bob").map(|_| ())
    })
    .await;

    // The plain bearer trigger works as well.
    commit(
        &repo,
        &[(
            "state/users.toml",
            Some(&users_file(&[
                ("alice", "a@x.example"),
                ("bob", "b@x.example"),
                ("carol", "c@x.example"),
            ])),
        )],
        "three",
        "alice@example.com",
    );
    let r = host
        .handle(
            index,
            webhook_request(
                &[("authorization", "Bearer plain-trigger-token".into())],
                b"",
            ),
        )
        .await;
    assert_eq!(r.status(), 202);
    eventually("carol to be applied after the trigger", 10, || async {
        h.world.user("carol").map(|_| ())
    })
    .await;
    shutdown.cancel();
    for j in handles {
        j.await.unwrap().unwrap();
    }
}
