//! The daemon's integration tests: real listeners on 127.0.0.1:0, real log
//! stores in temp dirs, the real `youops` binary for lifecycle and CLI, and a
//! real headless Chromium for the dashboard.
//!
//! The sections follow issue 3: health/metrics, API, CLI against a daemon,
//! dashboard, lifecycle.

mod support;

use std::collections::BTreeSet;
use std::io::{Read as _, Write as _};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};
use support::*;
use youops_core::AuditEvent;

// --- health, readiness, metrics -----------------------------------------------

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

// --- JSON API -----------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_refuses_bad_input_with_a_4xx_that_says_why() {
    let d = Daemon::start(&config("", "")).await;
    let api = &d.api;
    let missing = ulid_like();

    struct Case {
        name: &'static str,
        method: &'static str,
        path: String,
        auth: Option<&'static str>,
        content_type: Option<&'static str>,
        body: &'static str,
        status: u16,
        code: &'static str,
        says: &'static [&'static str],
    }
    let post = |name, path: &str, auth, body, status, code, says| Case {
        name,
        method: "POST",
        path: path.to_string(),
        auth,
        content_type: Some("application/json"),
        body,
        status,
        code,
        says,
    };
    let get = |name, path: String, auth, status, code, says| Case {
        name,
        method: "GET",
        path,
        auth,
        content_type: None,
        body: "",
        status,
        code,
        says,
    };
    let ok_body = r#"{"op":"hello","args":{"name":"x"}}"#;
    let cases = vec![
        post(
            "no token",
            "/api/v1/requests",
            None,
            ok_body,
            401,
            "unauthorized",
            &["Authorization"],
        ),
        post(
            "bad token",
            "/api/v1/requests",
            Some("Bearer nope"),
            ok_body,
            401,
            "unauthorized",
            &["not valid"],
        ),
        post(
            "not a bearer token",
            "/api/v1/requests",
            Some("Basic YWxpY2U6eA=="),
            ok_body,
            401,
            "unauthorized",
            &[],
        ),
        get(
            "no token on a read",
            "/api/v1/ops".into(),
            None,
            401,
            "unauthorized",
            &[],
        ),
        post(
            "not granted",
            "/api/v1/requests",
            Some("Bearer carol-test-token"),
            ok_body,
            403,
            "denied",
            &["`carol`", "may not run `hello`", "granted to ops"],
        ),
        post(
            "bad JSON",
            "/api/v1/requests",
            Some("Bearer alice-test-token"),
            r#"{"op": "hello","#,
            400,
            "bad_request",
            &["JSON"],
        ),
        post(
            "empty body",
            "/api/v1/requests",
            Some("Bearer alice-test-token"),
            "",
            400,
            "bad_request",
            &["JSON"],
        ),
        post(
            "unknown field",
            "/api/v1/requests",
            Some("Bearer alice-test-token"),
            r#"{"op":"hello","argz":{}}"#,
            400,
            "bad_request",
            &["argz"],
        ),
        post(
            "args is an array",
            "/api/v1/requests",
            Some("Bearer alice-test-token"),
            r#"{"op":"hello","args":["name=x"]}"#,
            400,
            "bad_request",
            &["args"],
        ),
        post(
            "an arg is an array",
            "/api/v1/requests",
            Some("Bearer alice-test-token"),
            r#"{"op":"hello","args":{"name":["x"]}}"#,
            400,
            "bad_request",
            &["args.name", "array"],
        ),
        post(
            "op is a number",
            "/api/v1/requests",
            Some("Bearer alice-test-token"),
            r#"{"op":42}"#,
            400,
            "bad_request",
            &["op"],
        ),
        post(
            "unknown op",
            "/api/v1/requests",
            Some("Bearer alice-test-token"),
            r#"{"op":"helo"}"#,
            400,
            "invalid",
            &["unknown op `helo`", "did you mean `hello`"],
        ),
        post(
            "deeply nested JSON",
            "/api/v1/requests",
            Some("Bearer alice-test-token"),
            Box::leak(
                format!(r#"{{"op":"hello","args":{{"name":{}"#, "[".repeat(100_000))
                    .into_boxed_str(),
            ),
            400,
            "bad_request",
            &["JSON", "recursion limit"],
        ),
        post(
            "a NUL byte in an argument",
            "/api/v1/requests",
            Some("Bearer alice-test-token"),
            r#"{"op":"hello","args":{"name":"a\u0000b"}}"#,
            400,
            "invalid",
            &["name", "control character U+0000"],
        ),
        post(
            "bad arg value",
            "/api/v1/requests",
            Some("Bearer alice-test-token"),
            r#"{"op":"hello","args":{"name":"<script>"}}"#,
            400,
            "invalid",
            &["name"],
        ),
        post(
            "missing arg",
            "/api/v1/requests",
            Some("Bearer alice-test-token"),
            r#"{"op":"cache.flush"}"#,
            400,
            "invalid",
            &["region"],
        ),
        post(
            "bad wait",
            "/api/v1/requests?wait=soon",
            Some("Bearer alice-test-token"),
            ok_body,
            400,
            "bad_request",
            &["wait"],
        ),
        post(
            "approve a non-id",
            "/api/v1/requests/xyz/approve",
            Some("Bearer bob-test-token"),
            "{}",
            400,
            "bad_request",
            &["request id"],
        ),
        get(
            "get a non-id",
            "/api/v1/requests/xyz".into(),
            Some("Bearer alice-test-token"),
            400,
            "bad_request",
            &["request id"],
        ),
        get(
            "get an unknown id",
            format!("/api/v1/requests/{missing}"),
            Some("Bearer alice-test-token"),
            404,
            "not_found",
            &[],
        ),
        get(
            "bad state filter",
            "/api/v1/requests?state=sleepy".into(),
            Some("Bearer alice-test-token"),
            400,
            "bad_request",
            &["sleepy"],
        ),
        get(
            "bad since filter",
            "/api/v1/requests?since=yesterday".into(),
            Some("Bearer alice-test-token"),
            400,
            "bad_request",
            &["since"],
        ),
        get(
            "bad limit",
            "/api/v1/requests?limit=many".into(),
            Some("Bearer alice-test-token"),
            400,
            "bad_request",
            &["limit"],
        ),
        get(
            "unknown list param",
            "/api/v1/requests?colour=red".into(),
            Some("Bearer alice-test-token"),
            400,
            "bad_request",
            &["colour"],
        ),
        get(
            "unknown op page",
            "/api/v1/ops/nope".into(),
            Some("Bearer alice-test-token"),
            404,
            "not_found",
            &["nope"],
        ),
        get(
            "audit of a non-id",
            "/api/v1/audit?request=xyz".into(),
            Some("Bearer alice-test-token"),
            400,
            "bad_request",
            &[],
        ),
    ];
    let mut failures = Vec::new();
    for c in &cases {
        let mut rb = match c.method {
            "GET" => api.http.get(api.url(&c.path)),
            _ => api.http.post(api.url(&c.path)),
        };
        if let Some(a) = c.auth {
            rb = rb.header(reqwest::header::AUTHORIZATION, a);
        }
        if let Some(ct) = c.content_type {
            rb = rb.header(reqwest::header::CONTENT_TYPE, ct);
        }
        if c.method == "POST" {
            rb = rb.body(c.body);
        }
        let resp = rb.send().await.expect("send");
        let status = resp.status().as_u16();
        let www = resp
            .headers()
            .get(reqwest::header::WWW_AUTHENTICATE)
            .map(|v| v.to_str().unwrap_or("").to_string());
        let text = resp.text().await.unwrap_or_default();
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let msg = v["error"]["message"].as_str().unwrap_or("");
        let mut wrong = Vec::new();
        if status >= 500 {
            wrong.push("a 5xx for user input".to_string());
        }
        if status != c.status {
            wrong.push(format!("status {status}, want {}", c.status));
        }
        if v["error"]["code"] != c.code {
            wrong.push(format!("code {}, want {}", v["error"]["code"], c.code));
        }
        if msg.trim().is_empty() {
            wrong.push("no error message".into());
        }
        for s in c.says {
            if !msg.contains(s) {
                wrong.push(format!("message does not say {s:?}"));
            }
        }
        if status == 401 && !www.as_deref().unwrap_or("").starts_with("Bearer") {
            wrong.push(format!("401 without `WWW-Authenticate: Bearer` ({www:?})"));
        }
        if !wrong.is_empty() {
            failures.push(format!(
                "{}: {}\n    body: {text}",
                c.name,
                wrong.join("; ")
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));

    // Bytes that are not UTF-8 get a 400 that says why, not a 5xx.
    let resp = api
        .http
        .post(api.url("/api/v1/requests"))
        .header(reqwest::header::AUTHORIZATION, "Bearer alice-test-token")
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(b"{\"op\":\"hello\",\"args\":{\"name\":\"\xff\xfe\"}}".to_vec())
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status().as_u16(), 400);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "bad_request", "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("JSON"),
        "{v}"
    );

    // The denied request is on the record, with the explanation.
    let (st, v) = api.get("/api/v1/requests?state=denied", Some(ALICE)).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let denied = v["requests"].as_array().unwrap();
    assert_eq!(denied.len(), 1, "{v:#}");
    assert_eq!(denied[0]["request"]["actor"]["principal"], "carol");
    d.stop().await.expect("clean stop");
}

/// A syntactically valid request id that no request has.
fn ulid_like() -> String {
    youops_core::RequestId::new().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_list_get_and_idempotency() {
    let d = Daemon::start(&config("", "")).await;
    let api = &d.api;

    let (st, first) = api
        .submit(ALICE, "hello", json!({ "name": "a" }), Some("10s"))
        .await;
    assert_eq!(st, StatusCode::CREATED, "{first}");
    assert_eq!(state_of(&first), "succeeded", "{first}");
    assert_eq!(first["duplicate"], false);
    assert!(
        first["request"]["outcome"]["output"]
            .as_str()
            .unwrap_or("")
            .contains("name=a"),
        "{first}"
    );
    let r1 = id_of(&first);
    let submissions = [
        (BOB, "hello", json!({ "name": "b" }), StatusCode::CREATED),
        (
            ALICE,
            "cache.flush",
            json!({ "region": "eu" }),
            StatusCode::CREATED,
        ),
        (BOB, "nap", json!({ "seconds": 0 }), StatusCode::CREATED),
        (
            CAROL,
            "hello",
            json!({ "name": "c" }),
            StatusCode::FORBIDDEN,
        ),
    ];
    let mut ids = vec![r1.clone()];
    let mut created = vec![first["request"]["request"]["created_at"].clone()];
    for (token, op, args, want) in submissions {
        let (st, v) = api.submit(token, op, args, Some("10s")).await;
        assert_eq!(st, want, "{op}: {v}");
        ids.push(id_of(&v));
        created.push(v["request"]["request"]["created_at"].clone());
    }
    let [r1, r2, r3, r4, r5] = <[String; 5]>::try_from(ids.clone()).unwrap();
    let since_r3 = chrono::DateTime::parse_from_rfc3339(created[2].as_str().unwrap())
        .unwrap()
        .with_timezone(&chrono::Utc)
        .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
    let future = (chrono::Utc::now() + chrono::Duration::hours(1))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);

    let set = |xs: &[&String]| xs.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    let filters: Vec<(String, BTreeSet<String>)> = vec![
        ("".into(), set(&[&r1, &r2, &r3, &r4, &r5])),
        ("state=succeeded".into(), set(&[&r1, &r2, &r3, &r4])),
        ("state=denied".into(), set(&[&r5])),
        (
            "state=denied,succeeded".into(),
            set(&[&r1, &r2, &r3, &r4, &r5]),
        ),
        ("state=running".into(), set(&[])),
        ("op=hello".into(), set(&[&r1, &r2, &r5])),
        ("op=cache.flush".into(), set(&[&r3])),
        ("principal=bob".into(), set(&[&r2, &r4])),
        ("principal=carol".into(), set(&[&r5])),
        ("frontend=api".into(), set(&[&r1, &r2, &r3, &r4, &r5])),
        ("frontend=slack".into(), set(&[])),
        (format!("since={since_r3}"), set(&[&r3, &r4, &r5])),
        (format!("since={future}"), set(&[])),
        (format!("until={since_r3}"), set(&[&r1, &r2])),
        ("op=hello&principal=alice".into(), set(&[&r1])),
        ("op=hello&state=succeeded&principal=bob".into(), set(&[&r2])),
    ];
    let mut failures = Vec::new();
    for (q, want) in &filters {
        let (st, v) = api.get(&format!("/api/v1/requests?{q}"), Some(ALICE)).await;
        assert_eq!(st, StatusCode::OK, "?{q}: {v}");
        let got: BTreeSet<String> = v["requests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["request"]["id"].as_str().unwrap().to_string())
            .collect();
        if &got != want {
            failures.push(format!("?{q}: got {got:?}, want {want:?}"));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));

    // Paging: newest first, `next_before` until the last page.
    let mut pages = Vec::new();
    let mut before: Option<String> = None;
    for _ in 0..5 {
        let q = match &before {
            Some(b) => format!("/api/v1/requests?limit=2&before={b}"),
            None => "/api/v1/requests?limit=2".to_string(),
        };
        let (st, v) = api.get(&q, Some(ALICE)).await;
        assert_eq!(st, StatusCode::OK, "{v}");
        let page: Vec<String> = v["requests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["request"]["id"].as_str().unwrap().to_string())
            .collect();
        pages.push(page);
        match v["next_before"].as_str() {
            Some(n) => before = Some(n.to_string()),
            None => break,
        }
    }
    assert_eq!(
        pages,
        vec![
            vec![r5.clone(), r4.clone()],
            vec![r3.clone(), r2.clone()],
            vec![r1.clone()]
        ]
    );

    // One request with its events.
    let (st, v) = api.get(&format!("/api/v1/requests/{r1}"), Some(BOB)).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(state_of(&v), "succeeded");
    let events: Vec<AuditEvent> = serde_json::from_value(v["events"].clone()).expect("events");
    let labels: Vec<String> = events.iter().map(|e| e.body.label()).collect();
    assert_eq!(labels, ["received", "running", "succeeded"], "{v:#}");
    assert!(events.windows(2).all(|w| w[0].seq < w[1].seq));
    assert_eq!(v["request"]["last_hash"], json!(events[2].hash));

    // Idempotency-Key: the same key twice is one request.
    let body = json!({ "op": "hello", "args": { "name": "once" } });
    let send = |token: &'static str| {
        api.http
            .post(api.url("/api/v1/requests?wait=10s"))
            .bearer_auth(token)
            .header("Idempotency-Key", "deploy-42")
            .json(&body)
            .send()
    };
    let a = send(ALICE).await.unwrap();
    assert_eq!(a.status(), StatusCode::CREATED);
    let a: Value = a.json().await.unwrap();
    let b = send(ALICE).await.unwrap();
    assert_eq!(b.status(), StatusCode::OK, "a repeated key answers 200");
    let b: Value = b.json().await.unwrap();
    assert_eq!(b["duplicate"], true, "{b}");
    assert_eq!(id_of(&a), id_of(&b));
    // Keys are per principal: bob's same key is bob's own request.
    let c: Value = send(BOB).await.unwrap().json().await.unwrap();
    assert_eq!(c["duplicate"], false, "{c}");
    assert_ne!(id_of(&c), id_of(&a));
    let (_, v) = api
        .get("/api/v1/requests?op=hello&principal=alice", Some(ALICE))
        .await;
    let onces = v["requests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["request"]["args"]["name"] == "once")
        .count();
    assert_eq!(onces, 1, "{v:#}");
    d.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approvals_deny_cancel_and_retry_through_the_api() {
    let d = Daemon::start(&config("", "")).await;
    let api = &d.api;
    let deploy = json!({ "service": "web", "version": "v2.0.0" });

    // Approve: not by the requester, then by a lead; it runs.
    let (st, v) = api.submit(ALICE, "deploy", deploy.clone(), None).await;
    assert_eq!(st, StatusCode::ACCEPTED, "{v}");
    assert_eq!(state_of(&v), "pending_approval");
    let id = id_of(&v);
    let approve = format!("/api/v1/requests/{id}/approve");
    let (st, v) = api.post(&approve, Some(ALICE), &json!({})).await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{v}");
    assert_eq!(v["error"]["code"], "approval_refused", "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("someone else"),
        "{v}"
    );
    // A digest that is not the request's is refused too.
    let (st, v) = api
        .post(&approve, Some(BOB), &json!({ "digest": "00".repeat(32) }))
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{v}");
    assert_eq!(v["error"]["code"], "approval_refused", "{v}");
    let (st, v) = api.post(&approve, Some(BOB), &json!({})).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let done = api.wait_state(ALICE, &id, "succeeded").await;
    assert!(done["request"]["outcome"]["output"]
        .as_str()
        .unwrap()
        .contains("version=v2.0.0"));
    assert_eq!(done["request"]["approvals"][0]["by"]["principal"], "bob");
    // Approving twice is a conflict, not a second run.
    let (st, v) = api.post(&approve, Some(BOB), &json!({})).await;
    assert_eq!(st, StatusCode::CONFLICT, "{v}");

    // Deny → rejected, with the reason.
    let (_, v) = api.submit(ALICE, "deploy", deploy.clone(), None).await;
    let denied = id_of(&v);
    let (st, v) = api
        .post(
            &format!("/api/v1/requests/{denied}/deny"),
            Some(BOB),
            &json!({ "reason": "freeze week" }),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(state_of(&v), "rejected", "{v}");
    assert!(v["request"]["reason"]
        .as_str()
        .unwrap()
        .contains("freeze week"));

    // Cancel a running op.
    let (st, v) = api
        .submit(ALICE, "nap", json!({ "seconds": 30 }), None)
        .await;
    assert_eq!(st, StatusCode::ACCEPTED, "{v}");
    let nap = id_of(&v);
    api.wait_state(ALICE, &nap, "running").await;
    let started = Instant::now();
    let (st, v) = api
        .post(
            &format!("/api/v1/requests/{nap}/cancel"),
            Some(ALICE),
            &json!({}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(state_of(&v), "cancelled", "{v}");
    assert!(started.elapsed() < Duration::from_secs(5));
    // carol may neither cancel nor approve.
    let (_, v) = api.submit(ALICE, "deploy", deploy.clone(), None).await;
    let pending = id_of(&v);
    let (st, v) = api
        .post(
            &format!("/api/v1/requests/{pending}/cancel"),
            Some(CAROL),
            &json!({}),
        )
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{v}");
    let (st, v) = api
        .post(
            &format!("/api/v1/requests/{pending}/approve"),
            Some(CAROL),
            &json!({}),
        )
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{v}");

    // Retry → a new request, linked to the old one.
    let (_, v) = api
        .submit(BOB, "hello", json!({ "name": "again" }), Some("10s"))
        .await;
    let old = id_of(&v);
    let (st, v) = api
        .post(
            &format!("/api/v1/requests/{old}/retry"),
            Some(ALICE),
            &json!({}),
        )
        .await;
    assert_eq!(st, StatusCode::ACCEPTED, "{v}");
    let new = id_of(&v);
    assert_ne!(new, old);
    assert_eq!(v["request"]["request"]["retry_of"], json!(old));
    let v = api.wait_state(ALICE, &new, "succeeded").await;
    assert_eq!(v["request"]["request"]["actor"]["principal"], "alice");
    // A retried deploy needs its approval again.
    let (st, v) = api
        .post(
            &format!("/api/v1/requests/{id}/retry"),
            Some(ALICE),
            &json!({}),
        )
        .await;
    assert_eq!(st, StatusCode::ACCEPTED, "{v}");
    assert_eq!(state_of(&v), "pending_approval", "{v}");
    // A request still pending cannot be retried.
    let (st, v) = api
        .post(
            &format!("/api/v1/requests/{pending}/retry"),
            Some(ALICE),
            &json!({}),
        )
        .await;
    assert_eq!(st, StatusCode::CONFLICT, "{v}");
    d.stop().await.expect("clean stop");
}

// --- audit ----------------------------------------------------------------------

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

// --- body limit ---------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_get_413_not_500() {
    let d = Daemon::start(&config(r#"body_limit = "1KiB""#, "")).await;
    let api = &d.api;
    let padding = "x".repeat(4096);
    let big = json!({ "op": "hello", "args": { "name": padding } }).to_string();
    assert!(big.len() > 4096);

    // With a Content-Length.
    for path in [
        "/api/v1/requests",
        "/api/v1/commands",
        "/api/v1/requests/01J00000000000000000000000/deny",
    ] {
        let (st, _, body) = api
            .post_raw(path, Some(ALICE), "application/json", big.clone())
            .await;
        assert_eq!(st, StatusCode::PAYLOAD_TOO_LARGE, "{path}: {body}");
    }

    // Chunked, without a Content-Length: the limit trips while reading.
    let addr = d.addr;
    let big2 = big.clone();
    let status_line = tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let head = format!(
            "POST /api/v1/requests HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {ALICE}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        );
        let _ = s.write_all(head.as_bytes());
        for chunk in big2.as_bytes().chunks(512) {
            let _ = s.write_all(format!("{:x}\r\n", chunk.len()).as_bytes());
            let _ = s.write_all(chunk);
            let _ = s.write_all(b"\r\n");
        }
        let _ = s.write_all(b"0\r\n\r\n");
        let mut resp = Vec::new();
        let _ = s.read_to_end(&mut resp);
        String::from_utf8_lossy(&resp).lines().next().unwrap_or("").to_string()
    })
    .await
    .unwrap();
    assert!(
        status_line.starts_with("HTTP/1.1 413"),
        "chunked oversized body: {status_line:?}"
    );

    // A body under the limit still works.
    let (st, v) = api
        .submit(ALICE, "hello", json!({ "name": "small" }), Some("10s"))
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    d.stop().await.expect("clean stop");
}

// --- lifecycle of the real binary ----------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_finishes_short_runs_and_interrupts_long_ones() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("youops.toml");
    let ops = format!(
        "{}\n{}",
        exec_op("sleep.short", &["sleep", "2"]),
        exec_op("sleep.long", &["sleep", "60"])
    );
    std::fs::write(&cfg, config(r#"shutdown_grace = "3s""#, &ops)).unwrap();
    let mut served = Served::spawn(&cfg, dir.path().join("serve.log")).await;
    let api = served.api.clone();

    let (st, v) = api.submit(ALICE, "sleep.short", json!({}), None).await;
    assert_eq!(st, StatusCode::ACCEPTED, "{v}");
    let short = id_of(&v);
    let (st, v) = api.submit(ALICE, "sleep.long", json!({}), None).await;
    assert_eq!(st, StatusCode::ACCEPTED, "{v}");
    let long = id_of(&v);
    api.wait_state(ALICE, &short, "running").await;
    api.wait_state(ALICE, &long, "running").await;

    let t0 = Instant::now();
    served.signal(nix::sys::signal::Signal::SIGTERM);
    // Right after SIGTERM: new work gets 503 (or, at the very end, no connection).
    let mut refused = 0;
    let mut other = Vec::new();
    while t0.elapsed() < Duration::from_millis(2500) && refused < 3 {
        match api
            .http
            .post(api.url("/api/v1/requests"))
            .bearer_auth(ALICE)
            .json(&json!({ "op": "hello" }))
            .send()
            .await
        {
            Ok(r) if r.status() == StatusCode::SERVICE_UNAVAILABLE => {
                assert!(r.headers().contains_key(reqwest::header::RETRY_AFTER));
                refused += 1;
            }
            Ok(r) => other.push(r.status()),
            Err(_) => {}
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(refused >= 1, "no 503 while draining (got {other:?})");
    // At most a request that raced the signal itself was accepted.
    assert!(other.len() <= 1, "accepted while draining: {other:?}");

    let code = served.wait_exit(Duration::from_secs(15)).await;
    assert_eq!(code, Some(0), "exit status; log:\n{}", served.log_text());
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(8),
        "drain took {took:?}: it should wait for the grace period, then stop"
    );

    // The store is unlocked and tells what happened.
    let cfg_s = cfg.to_str().unwrap();
    for (id, want, why) in [
        (&short, "succeeded", None),
        (
            &long,
            "interrupted",
            Some("shut down before the run finished"),
        ),
    ] {
        let out = youops_async(&["status", id, "--json", "--config", cfg_s], &[]).await;
        assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
        let rec: Value = serde_json::from_slice(&out.stdout).expect("status --json");
        assert_eq!(rec["state"], want, "{rec:#}");
        if let Some(why) = why {
            assert!(rec["reason"].as_str().unwrap().contains(why), "{rec:#}");
        }
    }
    let out = youops_async(&["audit", "verify", "--config", cfg_s], &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_config_at_start_exits_64_listing_every_problem() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("youops.toml");
    let text = format!(
        "{}\n[[ops]]\nname = \"broken\"\nrunner = {{ type = \"teleport\" }}\n",
        config(r#"colour = "blue""#, "")
    )
    .replace(
        "roles = [\"viewer\"]",
        "roles = [\"viewer\"]\nshoe_size = 42",
    );
    std::fs::write(&cfg, text).unwrap();
    let port = free_port().to_string();
    let out = youops_async(
        &[
            "serve",
            "--config",
            cfg.to_str().unwrap(),
            "--listen",
            &format!("127.0.0.1:{port}"),
        ],
        &[],
    )
    .await;
    assert_eq!(out.status.code(), Some(64), "{}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    for needle in ["colour", "teleport", "shoe_size", "3 problems"] {
        assert!(
            err.contains(needle),
            "no {needle:?} in:\n{}",
            describe(&out)
        );
    }
    // Nothing was listening, and no store was created.
    assert!(std::net::TcpStream::connect(format!("127.0.0.1:{port}")).is_err());
    assert!(!dir.path().join("store").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_keeps_the_old_catalog_on_a_bad_config_and_loads_a_good_one() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("youops.toml");
    let good = config("", "");
    std::fs::write(&cfg, &good).unwrap();
    let mut served = Served::spawn(&cfg, dir.path().join("serve.log")).await;
    let api = served.api.clone();

    // A broken file: refused, the running catalog stays, and every problem
    // is in the log (as `config check` reports them), without colour codes.
    std::fs::write(
        &cfg,
        format!("{good}\n[[ops]]\nname = 7\n")
            .replace("[server]", "[server]\ncolour = \"blue\"")
            .replace(
                "roles = [\"viewer\"]",
                "roles = [\"viewer\"]\nshoe_size = 42",
            ),
    )
    .unwrap();
    served.signal(nix::sys::signal::Signal::SIGHUP);
    served.wait_log("config reload refused").await;
    let log = served.log_text();
    for needle in ["colour", "shoe_size", "problems=3"] {
        assert!(log.contains(needle), "no {needle:?} in:\n{log}");
    }
    assert!(
        !log.contains('\x1b'),
        "colour codes in a log file:\n{log:?}"
    );
    // A builtin this daemon does not have: refused too.
    std::fs::write(
        &cfg,
        config(
            "",
            "[[ops]]\nname = \"ghost\"\nrunner = { type = \"builtin\", name = \"nope\" }\n",
        ),
    )
    .unwrap();
    served.signal(nix::sys::signal::Signal::SIGHUP);
    served.wait_log("no builtin named `nope`").await;
    let (st, v) = api
        .submit(ALICE, "hello", json!({ "name": "still" }), Some("10s"))
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    assert_eq!(state_of(&v), "succeeded", "{v}");

    // A good file with a new op: visible and runnable after SIGHUP.
    let ops = exec_op("greet.new", &["echo", "fresh"]);
    std::fs::write(&cfg, config("", &ops)).unwrap();
    served.signal(nix::sys::signal::Signal::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (st, v) = api.get("/api/v1/ops", Some(ALICE)).await;
        assert_eq!(st, StatusCode::OK, "{v}");
        let names: Vec<&str> = v["ops"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|o| o["name"].as_str())
            .collect();
        if names.contains(&"greet.new") {
            assert!(names.contains(&"hello"), "{names:?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "new op never appeared: {names:?}\n{}",
            served.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (st, v) = api.submit(BOB, "greet.new", json!({}), Some("10s")).await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    assert!(v["request"]["outcome"]["output"]
        .as_str()
        .unwrap()
        .contains("fresh"));
    served.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(served.wait_exit(Duration::from_secs(10)).await, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_builtin_is_a_config_error_naming_the_builtins_there_are() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("youops.toml");
    let ops = "[[ops]]\nname = \"ghost\"\nrunner = { type = \"builtin\", name = \"nope\" }\n";
    std::fs::write(&cfg, config("", ops)).unwrap();
    let check = youops_async(&["config", "check", cfg.to_str().unwrap()], &[]).await;
    let port = free_port().to_string();
    let serve = youops_async(
        &[
            "serve",
            "--config",
            cfg.to_str().unwrap(),
            "--listen",
            &format!("127.0.0.1:{port}"),
        ],
        &[],
    )
    .await;
    for out in [&check, &serve] {
        assert_eq!(out.status.code(), Some(64), "{}", describe(out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("ops `ghost`: runner: no builtin named `nope` (this program has: echo, noop, sleep)"),
            "{}",
            describe(out)
        );
    }
    assert!(!dir.path().join("store").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_503s_of_a_shutdown_are_logged_at_info() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("youops.toml");
    std::fs::write(&cfg, config("shutdown_grace = \"20s\"", "")).unwrap();
    let mut served = Served::spawn(&cfg, dir.path().join("serve.log")).await;
    let api = served.api.clone();
    // A run that keeps the daemon draining while we knock.
    let (st, v) = api
        .submit(ALICE, "nap", json!({ "seconds": "3" }), None)
        .await;
    assert_eq!(st, StatusCode::ACCEPTED, "{v}");
    served.signal(nix::sys::signal::Signal::SIGTERM);
    served.wait_log("shutting down").await;
    let (st, v) = api.submit(ALICE, "hello", json!({}), None).await;
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert_eq!(served.wait_exit(Duration::from_secs(20)).await, Some(0));
    let log = served.log_text();
    let answered: Vec<&str> = log.lines().filter(|l| l.contains("answered 503")).collect();
    assert!(!answered.is_empty(), "{log}");
    assert!(answered.iter().all(|l| l.contains(" INFO ")), "{log}");
    assert!(!log.contains("ERROR"), "{log}");
}

// --- CLI --------------------------------------------------------------------------

fn quickstart() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/quickstart/youops.toml")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_config_check() {
    let qs = quickstart();
    let out = youops_async(&["config", "check", qs.to_str().unwrap()], &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok"));

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        config("", "")
            .replace("default_timeout = \"2m\"", "default_timeout = \"soon\"")
            .replace(
                "values = [\"eu\", \"us\", \"ap\"]",
                "values = []\nflavour = 1",
            ),
    )
    .unwrap();
    // Through the positional FILE and through --config alike.
    for args in [
        vec!["config", "check", bad.to_str().unwrap()],
        vec!["config", "check", "--config", bad.to_str().unwrap()],
    ] {
        let out = youops_async(&args, &[]).await;
        assert_eq!(out.status.code(), Some(64), "{}", describe(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        for needle in ["soon", "flavour"] {
            assert!(err.contains(needle), "no {needle:?}: {}", describe(&out));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_local_mode_maps_the_os_user() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("youops.toml");
    std::fs::write(&cfg, config("", "")).unwrap();
    let c = cfg.to_str().unwrap();

    let out = youops_async(
        &["run", "hello", "name=x", "--config", c],
        &[("USER", CLI_USER)],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("succeeded") && stdout.contains("name=x"),
        "{}",
        describe(&out)
    );
    assert!(
        stdout.contains("by:      alice via cli"),
        "{}",
        describe(&out)
    );

    let out = youops_async(
        &["run", "hello", "name=x", "--config", c],
        &[("USER", "mallory")],
    )
    .await;
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    let all = describe(&out);
    assert!(
        all.contains("`mallory` is not mapped to a YouOps principal"),
        "{all}"
    );

    // The environment variable names the config too, like every flag.
    let out = youops_async(
        &["ops", "list"],
        &[("USER", CLI_USER), ("YOUOPS_CONFIG", c)],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("deploy"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_against_a_running_daemon() {
    let d = Daemon::start(&config("", "")).await;
    let base = d.base().to_string();
    let c = d.config_path.to_str().unwrap().to_string();
    let remote = |args: &[&str]| {
        let mut v: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        v.extend([
            "--server".into(),
            base.clone(),
            "--token".into(),
            ALICE.into(),
        ]);
        v
    };
    let run = |v: Vec<String>| async move {
        let a: Vec<&str> = v.iter().map(String::as_str).collect();
        youops_async(&a, &[]).await
    };

    let out = run(remote(&["run", "hello", "name=remote", "--json"])).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let rec: Value = serde_json::from_slice(&out.stdout).expect("run --json");
    assert_eq!(rec["state"], "succeeded");
    assert_eq!(rec["request"]["actor"]["principal"], "alice");
    let id = rec["request"]["id"].as_str().unwrap().to_string();

    let out = run(remote(&["status", &id])).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(s.contains(&id) && s.contains("succeeded"), "{s}");

    let out = run(remote(&["audit", "list", "--request", &id])).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let s = String::from_utf8_lossy(&out.stdout);
    assert_eq!(s.lines().count(), 3, "{s}");
    assert!(s.contains("received") && s.contains("succeeded"), "{s}");

    let out = run(remote(&["audit", "verify"])).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("intact"));

    let out = run(remote(&["ops", "list"])).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let s = String::from_utf8_lossy(&out.stdout);
    for op in ["hello", "deploy", "nap", "cache.flush"] {
        assert!(s.contains(op), "{s}");
    }

    // Remote failures keep their exit codes: a bad token, an op not granted.
    let mut bad = remote(&["status", &id]);
    *bad.last_mut().unwrap() = "wrong".into();
    let out = run(bad).await;
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    let mut carol = remote(&["run", "hello"]);
    *carol.last_mut().unwrap() = CAROL.into();
    let out = run(carol).await;
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert!(
        describe(&out).contains("may not run `hello`"),
        "{}",
        describe(&out)
    );

    // Env vars work like the flags.
    let out = youops_async(
        &["status", &id],
        &[("YOUOPS_SERVER", base.as_str()), ("YOUOPS_TOKEN", BOB)],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));

    // Local mode while the daemon holds the store: a plain "locked", exit 69.
    let out = youops_async(&["status", &id, "--config", &c], &[("USER", CLI_USER)]).await;
    assert_eq!(out.status.code(), Some(69), "{}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("locked") && err.contains("--server"), "{err}");
    d.stop().await.expect("clean stop");
}

// --- dashboard in a real headless Chromium ----------------------------------------

const CHROMIUM: &str = "/usr/bin/chromium";

/// Run headless Chromium with `args`; its stdout.
async fn chromium(profile: &Path, args: &[&str]) -> String {
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: the dashboard test needs a real browser. Install it with \
         `apt-get install -y chromium` (.ci/run installs it)"
    );
    let mut cmd = tokio::process::Command::new(CHROMIUM);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .args(args)
    .stdin(std::process::Stdio::null())
    .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("chromium finished within 60s")
        .expect("run chromium");
    assert!(
        out.status.success(),
        "chromium {args:?} failed: {}",
        describe(&out)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_in_headless_chromium() {
    let d = Daemon::start(&config("", "")).await;
    let api = &d.api;
    let secret = "correct-horse-battery-staple";
    let (st, v) = api
        .submit(
            ALICE,
            "db.rotate-password",
            json!({ "db_user": "billing", "password": secret }),
            Some("10s"),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let id = id_of(&v);
    for (token, op, args) in [
        (BOB, "hello", json!({ "name": "dashboard" })),
        (ALICE, "cache.flush", json!({ "region": "eu" })),
        (
            CAROL,
            "deploy",
            json!({ "service": "api", "version": "v1.0.0" }),
        ),
    ] {
        api.submit(token, op, args, Some("10s")).await;
    }
    let (st, _) = api
        .submit(
            ALICE,
            "deploy",
            json!({ "service": "web", "version": "v3.1.4" }),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::ACCEPTED);
    let (st, _) = api
        .submit(ALICE, "helo", json!({ "name": "typo" }), None)
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);

    let profile = tempfile::tempdir().unwrap();
    let base = d.base().to_string();

    // The index lists the request with its op and a state badge.
    let dom = chromium(profile.path(), &["--dump-dom", &format!("{base}/")]).await;
    let row_start = dom
        .find(&format!("data-request-id=\"{id}\""))
        .unwrap_or_else(|| panic!("no row for {id} in:\n{dom}"));
    let row = &dom[row_start..];
    let row = &row[..row.find("</tr>").unwrap()];
    assert!(row.contains("db.rotate-password"), "{row}");
    assert!(
        row.contains("class=\"badge s-succeeded\""),
        "no state badge in the row: {row}"
    );
    assert!(
        dom.contains("id=\"pending\""),
        "pending approvals section: {dom}"
    );
    assert!(
        dom.contains("data-ok=\"true\""),
        "audit chain status: {dom}"
    );
    assert!(!dom.contains(secret), "the secret leaked into the index");

    // The request page: arguments with the secret masked, and every event.
    let dom = chromium(
        profile.path(),
        &["--dump-dom", &format!("{base}/requests/{id}")],
    )
    .await;
    assert!(
        !dom.contains(secret),
        "the secret leaked into the request page"
    );
    let args_start = dom.find("id=\"args\"").expect("args");
    let args = &dom[args_start..];
    let args = &args[..args.find("</dd>").unwrap()];
    assert!(args.contains("db_user=billing"), "{args}");
    assert!(args.contains("password=********"), "{args}");
    let events_start = dom.find("id=\"events\"").expect("events table");
    let events = &dom[events_start..];
    let events = &events[..events.find("</table>").unwrap()];
    assert_eq!(
        events.matches("<tr").count(),
        4,
        "header + 3 events: {events}"
    );
    for s in ["received", "running", "succeeded"] {
        assert!(events.contains(s), "no {s} in events: {events}");
    }
    assert!(dom.contains("id=\"output\""), "output: {dom}");

    // A screenshot a person can look at.
    let png = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/dashboard.png");
    std::fs::create_dir_all(png.parent().unwrap()).unwrap();
    let _ = std::fs::remove_file(&png);
    chromium(
        profile.path(),
        &[
            &format!("--screenshot={}", png.display()),
            "--window-size=1280,900",
            &format!("{base}/"),
        ],
    )
    .await;
    let bytes = std::fs::read(&png).expect("screenshot written");
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    assert!(
        bytes.len() > 10 * 1024,
        "screenshot is only {} bytes",
        bytes.len()
    );
    let page = png.with_file_name("dashboard-request.png");
    chromium(
        profile.path(),
        &[
            &format!("--screenshot={}", page.display()),
            "--window-size=1280,900",
            &format!("{base}/requests/{id}"),
        ],
    )
    .await;
    d.stop().await.expect("clean stop");
}

// --- retention (issue 7) --------------------------------------------------------

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_archives_old_events_and_every_part_still_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("youops.toml");
    // Retention moves whole segments: small ones, so a few requests fill some.
    let small = |text: String| {
        text.replace(
            "path = \"store\"",
            "path = \"store\"\nsegment_size = \"4KiB\"",
        )
    };
    std::fs::write(&cfg, small(config("", ""))).unwrap();
    let c = cfg.to_str().unwrap();
    let user = [("USER", CLI_USER)];
    for i in 0..5 {
        let name = format!("name=n{i}");
        let out = youops_async(&["run", "hello", &name, "--config", c], &user).await;
        assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    }

    // By hand: keep the newest 4 events.
    let out = youops_async(&["audit", "archive", "--keep", "4", "--config", c], &user).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(
        stdout(&out).starts_with("archived events #1..#"),
        "{}",
        describe(&out)
    );
    let archive_dir = dir.path().join("youops-archive");
    let archives = youops_core::audit::archive_files(&archive_dir).unwrap();
    assert_eq!(archives.len(), 1, "{archives:?}");

    // The store verifies with its archive in front, and alone.
    let out = youops_async(&["audit", "verify", "--config", c], &user).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(
        stdout(&out).contains("archived in 1 file(s)"),
        "{}",
        describe(&out)
    );
    let out = youops_async(&["audit", "export", "--config", c], &user).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let live = dir.path().join("live.jsonl");
    std::fs::write(&live, &out.stdout).unwrap();
    let first_live: AuditEvent =
        serde_json::from_str(stdout(&out).lines().next().unwrap()).unwrap();
    assert!(first_live.seq > 1);
    let (a, l) = (archives[0].to_str().unwrap(), live.to_str().unwrap());
    for files in [vec![l], vec![a], vec![a, l]] {
        let mut args = vec!["audit", "verify"];
        for f in &files {
            args.extend(["--file", f]);
        }
        let out = youops_async(&args, &[]).await;
        assert_eq!(out.status.code(), Some(0), "{files:?}: {}", describe(&out));
    }
    // Out of order, the pieces do not chain.
    let out = youops_async(&["audit", "verify", "--file", l, "--file", a], &[]).await;
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));

    // A record altered inside the archive is found, and the file named.
    let original = std::fs::read_to_string(&archives[0]).unwrap();
    std::fs::write(&archives[0], original.replacen("n1", "n9", 1)).unwrap();
    let out = youops_async(&["audit", "verify", "--config", c], &user).await;
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        stdout(&out).contains("BROKEN") && stdout(&out).contains("audit-000000000001-"),
        "{}",
        describe(&out)
    );
    std::fs::write(&archives[0], original).unwrap();

    // The daemon archives by itself past `retain_events` (at start, then every
    // minute), whole segments: enough requests to seal some past the newest 2.
    for i in 5..15 {
        let name = format!("name=n{i}");
        let out = youops_async(&["run", "hello", &name, "--config", c], &user).await;
        assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    }
    let text =
        small(config("", "")).replace("path = \"store\"", "path = \"store\"\nretain_events = 2");
    std::fs::write(&cfg, text).unwrap();
    let served = Served::spawn(&cfg, dir.path().join("daemon.log")).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while youops_core::audit::archive_files(&archive_dir)
        .unwrap()
        .len()
        < 2
    {
        assert!(
            Instant::now() < deadline,
            "the daemon did not archive: {}",
            std::fs::read_to_string(dir.path().join("daemon.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Killed (SIGKILL), perhaps in the middle of moving a segment: the chain
    // still verifies with its archives (the store's tests cut every step).
    drop(served);
    let files = youops_core::audit::archive_files(&archive_dir)
        .unwrap()
        .len();
    let out = youops_async(&["audit", "verify", "--config", c], &user).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(
        stdout(&out).contains(&format!("archived in {files} file(s)")),
        "{}",
        describe(&out)
    );
}

// --- GitOps plans against a running daemon ----------------------------------------

/// Run git in `dir` (a real repository; committer identity given inline).
fn git(dir: &Path, args: &[&str]) {
    let out = std::process::Command::new("git")
        .args([
            "-c",
            "user.name=Stranger",
            "-c",
            "user.email=stranger@example.com",
        ])
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run git");
    assert!(out.status.success(), "git {args:?}: {}", describe(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_dry_run_through_the_server_plans_on_the_daemons_state() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    std::fs::create_dir_all(repo.join("state")).unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    std::fs::write(
        repo.join("state/users.toml"),
        "[[resource]]\nkind = \"user\"\nname = \"ada\"\nemail = \"ada@example.com\"\n",
    )
    .unwrap();
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "-q", "-m", "ada"]);
    // The commit's author maps to no principal: its request is denied, so
    // the plan stays `+ user/ada` however far the daemon's own pass got.
    let ops = format!(
        r#"[[ops]]
name = "user.apply"
runner = {{ type = "builtin", name = "echo" }}
[[ops.params]]
name = "name"
type = "string"
[[ops.params]]
name = "email"
type = "email"

[frontends.git]
repo = "{}"
branch = "main"
path = "state"
interval = "1h"

[[kinds]]
name = "user"
apply = "user.apply"
"#,
        repo.display()
    );
    let cfg = dir.path().join("youops.toml");
    std::fs::write(&cfg, config("", &ops)).unwrap();
    let c = cfg.to_str().unwrap();
    let mut served = Served::spawn(&cfg, dir.path().join("serve.log")).await;
    let server = served.api.base.clone();
    let plan = |token: &'static str, extra: &'static [&'static str]| {
        let server = server.clone();
        async move {
            let mut args = vec![
                "--config",
                c,
                "--server",
                &server,
                "--token",
                token,
                "reconcile",
                "--once",
            ];
            args.extend_from_slice(extra);
            youops_async(&args, &[]).await
        }
    };

    let remote = plan(ALICE, &["--dry-run"]).await;
    assert_eq!(remote.status.code(), Some(0), "{}", describe(&remote));
    let remote_text = stdout(&remote);
    assert!(
        remote_text.starts_with("plan for main at "),
        "{remote_text}"
    );
    assert!(remote_text.contains("+ user/ada"), "{remote_text}");

    // Who may not run the kind's ops may not see its plan.
    let carol = plan(CAROL, &["--dry-run"]).await;
    assert_eq!(carol.status.code(), Some(2), "{}", describe(&carol));
    assert!(
        String::from_utf8_lossy(&carol.stderr).contains("may not run `user.apply`"),
        "{}",
        describe(&carol)
    );
    // Applying through the server is the daemon's job; the advice works.
    let apply = plan(ALICE, &[]).await;
    assert_eq!(apply.status.code(), Some(2), "{}", describe(&apply));
    assert!(
        String::from_utf8_lossy(&apply.stderr).contains("--dry-run` with --server"),
        "{}",
        describe(&apply)
    );
    // Locally, the store is the daemon's: the message points at --server.
    let local = youops_async(&["--config", c, "reconcile", "--once", "--dry-run"], &[]).await;
    assert_eq!(local.status.code(), Some(69), "{}", describe(&local));
    assert!(
        String::from_utf8_lossy(&local.stderr).contains("--server"),
        "{}",
        describe(&local)
    );

    served.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(served.wait_exit(Duration::from_secs(10)).await, Some(0));
    // With the daemon stopped, the local plan reads the same.
    let local = youops_async(&["--config", c, "reconcile", "--once", "--dry-run"], &[]).await;
    assert_eq!(local.status.code(), Some(0), "{}", describe(&local));
    assert_eq!(stdout(&local), remote_text);
}

// --- Durability, checked at the syscalls ---------------------------------------------

/// Under `strace -f`, 100 sequential API requests to `youops serve` make at
/// least one `fdatasync`/`fsync` each (every request is acknowledged only
/// after its `received` group is synced), and no `sync_file_range` (what
/// sled's flush was: it syncs neither metadata nor the disk's cache).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_request_is_fdatasynced_under_strace() {
    let strace = ["/usr/bin/strace", "/bin/strace"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("strace is missing: scripts/test.sh installs it (apt-get install strace)");
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("youops.toml");
    std::fs::write(&cfg, config("", "")).unwrap();
    let trace = dir.path().join("strace.out");
    let port = free_port();
    let log = std::fs::File::create(dir.path().join("serve.log")).unwrap();
    let mut child = std::process::Command::new(strace)
        .args([
            "-f",
            "-qq",
            "-e",
            "trace=fdatasync,fsync,sync_file_range",
            "-o",
        ])
        .arg(&trace)
        .arg(bin())
        .args(["serve", "--config"])
        .arg(&cfg)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .process_group(0)
        .spawn()
        .expect("spawn strace");
    let api = Api::new(format!("http://127.0.0.1:{port}"));
    wait_healthy(&api).await;
    let count = |name: &str| {
        std::fs::read_to_string(&trace)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(&format!(" {name}(")) || l.starts_with(&format!("{name}(")))
            .count()
    };
    let before = count("fdatasync") + count("fsync");
    for i in 0..100 {
        let (st, v) = api
            .submit(
                ALICE,
                "hello",
                json!({ "name": format!("n{i}") }),
                Some("10s"),
            )
            .await;
        assert_eq!(st, StatusCode::CREATED, "{v}");
        assert_eq!(state_of(&v), "succeeded", "{v}");
    }
    let syncs = count("fdatasync") + count("fsync") - before;
    // strace and the daemon it traces share a process group: stop both.
    let _ = nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = child.wait();
    let text = std::fs::read_to_string(&trace).unwrap_or_default();
    assert!(
        syncs >= 100,
        "{syncs} syncs for 100 acknowledged requests:\n{text}"
    );
    assert_eq!(count("sync_file_range"), 0, "sync_file_range in:\n{text}");
}

/// A `[store] path` that holds a sled store of an earlier version is refused
/// with the command that moves it, and never started again at genesis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_sled_store_is_refused_with_the_copy_command() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("youops.toml");
    std::fs::write(&cfg, config("", "")).unwrap();
    let store = dir.path().join("store");
    std::fs::create_dir_all(store.join("blobs")).unwrap();
    std::fs::write(store.join("conf"), "segment_size: 524288\n").unwrap();
    std::fs::write(store.join("db"), [0u8; 64]).unwrap();
    let port = free_port().to_string();
    let c = cfg.to_str().unwrap();
    let listen = format!("127.0.0.1:{port}");
    for args in [
        vec!["serve", "--config", c, "--listen", &listen],
        vec!["--config", c, "audit", "list"],
    ] {
        let out = youops_async(&args, &[]).await;
        assert_ne!(out.status.code(), Some(0), "{}", describe(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("holds a sled audit store"),
            "{}",
            describe(&out)
        );
        assert!(
            err.contains("youops store copy --from sled:"),
            "{}",
            describe(&out)
        );
    }
    // Nothing of a new store was written beside the old one.
    let mut names: Vec<String> = std::fs::read_dir(&store)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["blobs", "conf", "db"]);
}
