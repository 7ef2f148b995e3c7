//! The JSON API: refusals that say why, submit/list/get, idempotency,
//! approvals, and the body limit.

use std::collections::BTreeSet;
use std::io::{Read as _, Write as _};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};
use youops_core::AuditEvent;

use crate::support::*;

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
