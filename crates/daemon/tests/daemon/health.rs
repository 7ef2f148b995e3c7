//! Health, readiness and metrics endpoints, and draining on shutdown.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;

use crate::support::*;

/// The value of the first metrics line that starts with `prefix` (a full series
/// name with labels, followed by a space).
fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_and_metrics() {
    let d = Daemon::start(&config("", "")).await;
    let api = &d.api;

    let (st, body) = api.get_text("/healthz", None).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let (st, ready) = api.get("/readyz", None).await;
    assert_eq!(st, StatusCode::OK, "{ready}");
    assert_eq!(ready["ready"], true, "{ready}");

    // One request that succeeds, one that waits for approval.
    let (st, v) = api
        .submit(ALICE, "hello", json!({ "name": "metrics" }), Some("10s"))
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let (st, v) = api
        .submit(
            ALICE,
            "deploy",
            json!({ "service": "api", "version": "v1.2.3" }),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::ACCEPTED, "{v}");
    assert_eq!(state_of(&v), "pending_approval", "{v}");

    // Counters are fed by lifecycle events, asynchronously: poll briefly.
    let series = r#"youops_requests_total{frontend="api",op="hello",outcome="succeeded"}"#;
    let deadline = Instant::now() + Duration::from_secs(5);
    let text = loop {
        let (st, text) = api.get_text("/metrics", None).await;
        assert_eq!(st, StatusCode::OK);
        // The counter and the histogram are updated one after the other.
        let count = r#"youops_request_duration_seconds_count{frontend="api"}"#;
        if metric(&text, series) == Some(1.0) && metric(&text, count) == Some(1.0) {
            break text;
        }
        assert!(Instant::now() < deadline, "no {series} 1 in:\n{text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    for needle in [
        "# TYPE youops_requests_total counter",
        "# TYPE youops_request_duration_seconds histogram",
        r#"youops_request_duration_seconds_bucket{frontend="api",le="+Inf"} 1"#,
        "# TYPE youops_audit_append_seconds histogram",
        "# TYPE youops_pending_approvals gauge",
    ] {
        assert!(text.contains(needle), "no `{needle}` in:\n{text}");
    }
    assert_eq!(
        metric(
            &text,
            r#"youops_request_duration_seconds_count{frontend="api"}"#
        ),
        Some(1.0),
        "{text}"
    );
    let appends = metric(&text, "youops_audit_append_seconds_count").unwrap_or(0.0);
    assert!(appends >= 3.0, "audit appends were not timed:\n{text}");
    assert_eq!(
        metric(&text, "youops_pending_approvals"),
        Some(1.0),
        "{text}"
    );
    // The pending deploy is not an end state: it is not counted as finished.
    assert!(!text.contains(r#"op="deploy""#), "{text}");

    d.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draining_refuses_new_work_and_interrupts_what_outlives_the_grace() {
    let mut d = Daemon::start(&config(r#"shutdown_grace = "2s""#, "")).await;
    let api = d.api.clone();
    let (st, v) = api
        .submit(ALICE, "nap", json!({ "seconds": 30 }), None)
        .await;
    assert_eq!(st, StatusCode::ACCEPTED, "{v}");
    let nap = id_of(&v);
    api.wait_state(ALICE, &nap, "running").await;

    d.begin_shutdown();
    // While the nap holds the drain open: not ready, no new requests, still alive.
    let deadline = Instant::now() + Duration::from_millis(1500);
    let ready = loop {
        let (st, ready) = api.get("/readyz", None).await;
        if st == StatusCode::SERVICE_UNAVAILABLE {
            break ready;
        }
        assert!(
            Instant::now() < deadline,
            "/readyz stayed {st} while draining"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(ready["ready"], false, "{ready}");
    assert_eq!(ready["accepting"], false, "{ready}");
    let (st, v) = api.submit(ALICE, "hello", json!({}), None).await;
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert_eq!(v["error"]["code"], "shutting_down", "{v}");
    let (st, _) = api.get_text("/healthz", None).await;
    assert_eq!(st, StatusCode::OK, "liveness holds while draining");
    let (st, v) = api
        .get(&format!("/api/v1/requests/{nap}"), Some(ALICE))
        .await;
    assert_eq!(st, StatusCode::OK, "reads still work while draining: {v}");

    let store_path = d.dir.path().join("store");
    let dir = tempfile::tempdir().unwrap();
    let _keep = std::mem::replace(&mut d.dir, dir);
    let started = Instant::now();
    d.stop().await.expect("clean stop");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "stop took {:?}",
        started.elapsed()
    );

    // `run` returned: the store is flushed and released; the nap was interrupted.
    let store = youops_store::LogStore::open(&store_path, youops_store::LogOptions::default())
        .expect("the store is released once run() returns");
    use youops_core::audit::AuditStore as _;
    let rec = store
        .request(nap.parse().unwrap())
        .await
        .unwrap()
        .expect("nap recorded");
    assert_eq!(rec.state, youops_core::State::Interrupted, "{rec:?}");
    assert!(
        rec.reason
            .as_deref()
            .unwrap_or("")
            .contains("shut down before the run finished"),
        "{rec:?}"
    );
}
