//! The HTTP endpoints: signatures, Slack's SSL checks, URL verification,
//! and what the crate exposes for the daemon.

use std::collections::HashMap;

use axum::http::StatusCode;
use bytes::Bytes;
use youops_frontend_chat::SlackFrontend;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_and_stale_requests_get_401_and_nothing_is_recorded() {
    let h = harness("").await;
    let body = slash_body(&h.fake, "U_ALICE", "C1", "echo text=hi", "trig-forged");
    for req in [
        // Signed with the wrong secret.
        signed(
            "/slack/commands",
            "application/x-www-form-urlencoded",
            body.clone(),
            now(),
            "not-the-secret",
        ),
        // Right secret, timestamp six minutes old.
        signed(
            "/slack/commands",
            "application/x-www-form-urlencoded",
            body.clone(),
            now() - 360,
            SECRET,
        ),
        // Right secret, timestamp six minutes ahead.
        signed(
            "/slack/events",
            "application/json",
            mention_body("U_ALICE", "C1", "echo text=x", "Ev1", "1.1"),
            now() + 360,
            SECRET,
        ),
    ] {
        let res = h.post(req).await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    }
    // Body changed after signing.
    let mut req = signed(
        "/slack/commands",
        "application/x-www-form-urlencoded",
        body.clone(),
        now(),
        SECRET,
    );
    *req.body_mut() = Bytes::from(body.replace("echo", "db.drop"));
    assert_eq!(h.post(req).await.status(), StatusCode::UNAUTHORIZED);
    // No signature headers at all.
    let req = http::Request::builder()
        .method("POST")
        .uri("/slack/interactions")
        .body(Bytes::from("payload=%7B%7D"))
        .unwrap();
    assert_eq!(h.post(req).await.status(), StatusCode::UNAUTHORIZED);
    assert!(h.requests().await.is_empty());
    assert!(h.exec.store().verify().await.unwrap().ok());
    assert!(
        h.exec.store().events(0, 10).await.unwrap().is_empty(),
        "nothing reached the audit log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slack_ssl_checks_of_the_command_url_get_200_and_do_nothing() {
    let h = harness("").await;
    let body = "ssl_check=1&token=gIkuvaNzQIHg97ATvDxqgjtO".to_string();
    let unsigned = http::Request::builder()
        .method("POST")
        .uri("/slack/commands")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Bytes::from(body.clone()))
        .unwrap();
    let signed_check = signed(
        "/slack/commands",
        "application/x-www-form-urlencoded",
        body,
        now(),
        SECRET,
    );
    for req in [unsigned, signed_check] {
        let res = h.post(req).await;
        assert_eq!(res.status(), StatusCode::OK);
        assert!(res.body().is_empty(), "{:?}", res.body());
    }
    // Only on the command URL.
    let unsigned_elsewhere = http::Request::builder()
        .method("POST")
        .uri("/slack/interactions")
        .body(Bytes::from("ssl_check=1"))
        .unwrap();
    assert_eq!(
        h.post(unsigned_elsewhere).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert!(h.exec.store().events(0, 10).await.unwrap().is_empty());
    assert!(h.fake.calls().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn url_verification_is_answered() {
    let h = harness("").await;
    let body = serde_json::json!({"token": "Jhj5dZrVaK7ZwHHjRyZWjbDl", "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P", "type": "url_verification"}).to_string();
    let res = h
        .post(signed(
            "/slack/events",
            "application/json",
            body,
            now(),
            SECRET,
        ))
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let v: serde_json::Value = serde_json::from_slice(res.body()).unwrap();
    assert_eq!(
        v["challenge"],
        "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"
    );
}

#[test]
fn manifest_and_config_check_are_exposed() {
    let t: toml::Table = "signing_secret = \"s\"\nbot_token = \"b\"\ncommand = \"/ops\""
        .parse()
        .unwrap();
    let m = youops_frontend_chat::manifest("https://ops.example.com", &t);
    assert!(m.contains("https://ops.example.com/slack/interactions"));
    let bad: toml::Table = "bot_token = \"\"\ntransport = \"socket\"".parse().unwrap();
    let errs = SlackFrontend::from_config(&bad).unwrap_err();
    assert_eq!(errs.len(), 3, "{errs:?}");
    let _unused: HashMap<(), ()> = HashMap::new();
}
