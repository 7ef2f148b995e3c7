//! Slash-command acknowledgement latency at fixed offered loads.
//!
//! Open loop: requests are started on a fixed schedule (not when the previous one
//! returns), each a signed `/slack/commands` request through the daemon's
//! `FrontendHost` → signature check → form parse → grammar → policy → durable
//! (fsynced, group-committed) audit append → ephemeral JSON answer. Slack's Web
//! API is a local fake answering `{"ok":true}` so the renderer's traffic is real
//! but cheap.
//!
//! Run: `cargo bench -p youops-frontend-chat --bench ack` (env `ACK_SECONDS`,
//! default 5 per load).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::routing::post;
use bytes::Bytes;
use tokio_util::sync::CancellationToken;
use youops_core::audit::SledStore;
use youops_core::config::Config;
use youops_core::frontend::{FrontendHost, Frontends};
use youops_core::Executor;
use youops_frontend_chat::signature::{encode_form, sign};
use youops_frontend_chat::SlackFrontend;

const SECRET: &str = "bench-signing-secret";

async fn fake_slack() -> String {
    async fn ok(body: Bytes) -> ([(&'static str, &'static str); 1], String) {
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        let ch = v["channel"].as_str().unwrap_or("C1");
        (
            [("content-type", "application/json")],
            serde_json::json!({"ok": true, "channel": ch, "ts": "1700000000.000100",
                "message": {"text": "x", "user": "U0BOT", "ts": "1700000000.000100"}})
            .to_string(),
        )
    }
    let app = axum::Router::new().route("/api/{method}", post(ok));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    format!("http://{addr}/api/")
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let secs: u64 = std::env::var("ACK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let api = fake_slack().await;
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        r#"
[[ops]]
name = "echo"
roles = ["ops"]
runner = {{ type = "builtin", name = "echo" }}
[[ops.params]]
name = "text"
type = "string"

[principals.alice]
roles = ["ops"]
identities = {{ slack = ["U_ALICE"] }}

[frontends.slack]
signing_secret = "{SECRET}"
bot_token = "xoxb-bench"
api_base_url = "{api}"
max_messages_per_second_per_channel = 100
"#
    );
    let cfg = Config::parse(&text, dir.path(), "bench", &|_| None).unwrap();
    let store = Arc::new(SledStore::open(dir.path().join("store")).unwrap());
    let exec = Executor::builder(&cfg, store)
        .builtin("echo", |c: youops_core::runner::BuiltinCall| async move {
            Ok(c.args.get("text").map(|v| v.as_text()).unwrap_or_default())
        })
        .build()
        .await
        .unwrap();
    let slack = SlackFrontend::from_config(cfg.frontend("slack").unwrap()).unwrap();
    let shutdown = CancellationToken::new();
    let host = Arc::new(FrontendHost::new(
        &Frontends::new().with(slack),
        &exec,
        Some("https://youops.example".into()),
        &shutdown,
        |n| cfg.frontend(n).cloned().unwrap_or_default(),
    ));
    host.spawn();
    let idx = host
        .routes()
        .into_iter()
        .find(|(r, _)| r.path == "/slack/commands")
        .unwrap()
        .1;
    println!(
        "slash-command ack latency, open loop, {secs}s per load, sled store in {}",
        dir.path().display()
    );
    println!(
        "{:>10} {:>8} {:>10} {:>10} {:>10} {:>8}",
        "offered/s", "sent", "p50", "p99", "max", "non-200"
    );
    let mut n = 0u64;
    for rate in [100u64, 250, 500] {
        let total = rate * secs;
        let gap = Duration::from_secs_f64(1.0 / rate as f64);
        let start = Instant::now();
        let mut handles = Vec::with_capacity(total as usize);
        for i in 0..total {
            let due = start + gap * i as u32;
            tokio::time::sleep_until(due.into()).await;
            n += 1;
            let body = encode_form(&[
                ("team_id", "T1"),
                ("channel_id", &format!("C{}", n % 50)),
                ("user_id", "U_ALICE"),
                ("command", "/ops"),
                ("text", &format!("echo text=bench-{n}")),
                ("response_url", "https://hooks.slack.com/commands/T1/1/x"),
                ("trigger_id", &format!("bench.{n}")),
            ]);
            let host = host.clone();
            handles.push(tokio::spawn(async move {
                let ts = chrono::Utc::now().timestamp().to_string();
                let req = http::Request::builder()
                    .method("POST")
                    .uri("/slack/commands")
                    .header("content-type", "application/x-www-form-urlencoded")
                    .header("x-slack-request-timestamp", &ts)
                    .header("x-slack-signature", sign(SECRET, &ts, body.as_bytes()))
                    .body(Bytes::from(body))
                    .unwrap();
                let t = Instant::now();
                let res = host.handle(idx, req).await;
                // Latency from the scheduled start, so queueing delay counts.
                (due.elapsed().max(t.elapsed()), res.status().as_u16())
            }));
        }
        let mut lat = Vec::with_capacity(handles.len());
        let mut bad = 0;
        for h in handles {
            let (d, s) = h.await.unwrap();
            if s != 200 {
                bad += 1;
            }
            lat.push(d);
        }
        lat.sort();
        println!(
            "{:>10} {:>8} {:>10.2?} {:>10.2?} {:>10.2?} {:>8}",
            rate,
            lat.len(),
            percentile(&lat, 0.50),
            percentile(&lat, 0.99),
            lat.last().copied().unwrap_or_default(),
            bad
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    shutdown.cancel();
    let _ = exec.shutdown(Duration::from_secs(5)).await;
}
