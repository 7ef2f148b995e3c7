//! The audit endpoints and the offline verification of exports.

use reqwest::StatusCode;
use serde_json::{json, Value};
use youops_core::AuditEvent;

use crate::support::*;

/// Tampering that every verifier must catch: (what, edit of the JSON lines).
type Tamper = (&'static str, fn(&mut Vec<Value>));

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_verify_export_and_offline_verification() {
    let d = Daemon::start(&config("", "")).await;
    let api = &d.api;
    for name in ["a", "b", "c"] {
        let (st, v) = api
            .submit(ALICE, "hello", json!({ "name": name }), Some("10s"))
            .await;
        assert_eq!(st, StatusCode::CREATED, "{v}");
    }
    let (_, v) = api.submit(CAROL, "hello", json!({}), None).await;
    assert_eq!(state_of(&v), "denied");

    let (st, v) = api.get("/api/v1/audit/verify", Some(BOB)).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["ok"], true, "{v}");
    let checked = v["report"]["checked"].as_u64().unwrap();
    assert!(checked >= 11, "{v}");
    let (st, _) = api.get("/api/v1/audit/verify", None).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);

    let resp = api
        .http
        .get(api.url("/api/v1/audit/export"))
        .bearer_auth(ALICE)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.headers()[reqwest::header::CONTENT_TYPE],
        "application/x-ndjson"
    );
    let text = resp.text().await.unwrap();
    let events: Vec<AuditEvent> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(events.len() as u64, checked);
    let report = youops_core::audit::verify_events(events.clone());
    assert!(report.ok(), "{report:?}");
    assert_eq!(report.checked, checked);
    // No secret-free request leaks anything odd: every line is one event, in order.
    assert!(events
        .iter()
        .enumerate()
        .all(|(i, e)| e.seq == i as u64 + 1));

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("export.jsonl");
    std::fs::write(&file, &text).unwrap();
    let out = youops_async(&["audit", "verify", "--file", file.to_str().unwrap()], &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("intact"),
        "{}",
        describe(&out)
    );

    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let tampers: Vec<Tamper> = vec![
        ("an op name rewritten", |ls| {
            ls[0]["body"]["request"]["op"] = json!("rm-rf");
        }),
        ("an actor rewritten", |ls| {
            let i = ls
                .iter()
                .rposition(|l| l["body"]["type"] == "received")
                .unwrap();
            ls[i]["body"]["request"]["actor"]["principal"] = json!("mallory");
        }),
        ("a state rewritten", |ls| {
            let i = ls
                .iter()
                .position(|l| l["body"]["to"] == "succeeded")
                .unwrap();
            ls[i]["body"]["to"] = json!("failed");
        }),
        ("a time rewritten", |ls| {
            ls[2]["time"] = json!("2001-01-01T00:00:00Z");
        }),
        ("a line deleted", |ls| {
            ls.remove(3);
        }),
        ("two lines swapped", |ls| {
            ls.swap(1, 2);
        }),
        ("a line's hash recomputed", |ls| {
            ls[1]["hash"] = json!("ab".repeat(32));
        }),
    ];
    for (what, tamper) in tampers {
        let mut ls = lines.clone();
        tamper(&mut ls);
        let body: String = ls.iter().map(|l| format!("{l}\n")).collect();
        let bad = dir.path().join("tampered.jsonl");
        std::fs::write(&bad, body).unwrap();
        let out = youops_async(&["audit", "verify", "--file", bad.to_str().unwrap()], &[]).await;
        assert_eq!(out.status.code(), Some(1), "{what}: {}", describe(&out));
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("BROKEN"),
            "{what}: {}",
            describe(&out)
        );
    }
    d.stop().await.expect("clean stop");
}
