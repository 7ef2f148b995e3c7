//! The `http` runner against a real local HTTP server.

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use youops_core::State;

use crate::support::*;

// ---------------------------------------------------------------------------
// 11. http runner
// ---------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

/// A tiny HTTP/1.1 server: `/fail...` answers 500, anything else 200 with
/// `{"echo": <request body>}`. Every request is recorded.
async fn http_server() -> (std::net::SocketAddr, Arc<Mutex<Vec<Seen>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let log = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let log = log.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let head_end = loop {
                    if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        break p + 4;
                    }
                    match sock.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                };
                let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
                let mut lines = head.split("\r\n");
                let mut first = lines.next().unwrap_or("").split(' ');
                let method = first.next().unwrap_or("").to_string();
                let path = first.next().unwrap_or("").to_string();
                let headers: Vec<(String, String)> = lines
                    .filter_map(|l| l.split_once(':'))
                    .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                    .collect();
                let len: usize = headers
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                    .and_then(|(_, v)| v.parse().ok())
                    .unwrap_or(0);
                while buf.len() < head_end + len {
                    match sock.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let body = buf[head_end..head_end + len].to_vec();
                let (status, reply) = if path.starts_with("/fail") {
                    (
                        "500 Internal Server Error",
                        "boom: database on fire".to_string(),
                    )
                } else {
                    let echoed = if body.is_empty() {
                        "null".to_string()
                    } else {
                        String::from_utf8_lossy(&body).into_owned()
                    };
                    ("200 OK", format!("{{\"echo\":{echoed}}}"))
                };
                log.lock().unwrap().push(Seen {
                    method,
                    path,
                    headers,
                    body,
                });
                let resp = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{reply}",
                    reply.len()
                );
                let _ = sock.write_all(resp.as_bytes()).await;
                let _ = sock.shutdown().await;
            });
        }
    });
    (addr, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_runner_sends_typed_json_and_judges_status() {
    let (addr, seen) = http_server().await;
    let ops = r#"
[[ops]]
name = "svc.scale"
roles = ["ops"]
runner = { type = "http", url = "http://ADDR/ok/{name}" }
[[ops.params]]
name = "name"
type = "string"
[[ops.params]]
name = "count"
type = "int"
[[ops.params]]
name = "force"
type = "bool"

[[ops]]
name = "svc.templated"
roles = ["ops"]
runner = { type = "http", url = "http://ADDR/ok", method = "put", body = { amount = "{count}", label = "n={count}", fixed = 7 } }
[[ops.params]]
name = "count"
type = "int"

[[ops]]
name = "svc.broken"
roles = ["ops"]
runner = { type = "http", url = "http://ADDR/fail" }
[[ops.params]]
name = "name"
type = "string"
"#
    .replace("ADDR", &addr.to_string());
    let h = start(&ops, |b| b).await;
    let exec = &h.exec;

    let t = exec
        .submit(
            sub("svc.scale", "alice")
                .arg("name", "web api")
                .arg("count", "3")
                .arg("force", "yes"),
        )
        .await
        .unwrap();
    let id = t.record.request.id;
    let r = done(exec, id).await;
    assert_eq!(r.state, State::Succeeded, "{r:#?}");
    let o = r.outcome.as_ref().unwrap();
    assert_eq!(o.exit_code, Some(200));
    assert!(o.output.starts_with("HTTP 200 OK\n"), "{}", o.output);
    let echoed: serde_json::Value =
        serde_json::from_str(o.output.strip_prefix("HTTP 200 OK\n").unwrap()).unwrap();
    assert_eq!(
        echoed,
        serde_json::json!({"echo": {"name": "web api", "count": 3, "force": true}})
    );
    let got = seen.lock().unwrap()[0].clone();
    assert_eq!(got.method, "POST");
    assert_eq!(got.path, "/ok/web%20api");
    assert_eq!(
        got.header("x-youops-request-id"),
        Some(id.to_string().as_str())
    );
    assert!(got
        .header("content-type")
        .unwrap()
        .starts_with("application/json"));
    let body = got.json();
    assert!(body["count"].is_i64(), "int args are JSON numbers: {body}");
    assert_eq!(body["count"], 3);
    assert_eq!(body["force"], true);
    assert_eq!(body["name"], "web api");

    let t = exec
        .submit(sub("svc.templated", "alice").arg("count", "42"))
        .await
        .unwrap();
    let r = done(exec, t.record.request.id).await;
    assert_eq!(r.state, State::Succeeded, "{r:#?}");
    let got = seen.lock().unwrap()[1].clone();
    assert_eq!(got.method, "PUT");
    assert_eq!(
        got.json(),
        serde_json::json!({"amount": 42, "label": "n=42", "fixed": 7})
    );

    let t = exec
        .submit(sub("svc.broken", "alice").arg("name", "x"))
        .await
        .unwrap();
    let r = done(exec, t.record.request.id).await;
    assert_eq!(r.state, State::Failed, "{r:#?}");
    assert!(r.reason.as_deref().unwrap().contains("500"), "{r:#?}");
    assert_eq!(r.outcome.as_ref().unwrap().exit_code, Some(500));
    assert!(output(&r).contains("boom: database on fire"));
    assert_eq!(seen.lock().unwrap().len(), 3);
    assert_chain_ok(&h.store).await;
}
