//! Slack slash-command acknowledgement latency at fixed offered loads.
//!
//! What Slack sees, on loopback: signed `/slack/commands` requests (a
//! `/ops echo text=…` command) are POSTed over keep-alive HTTP/1.1 to a minimal
//! axum server that does what the daemon does for a frontend route (read the
//! whole body, then `FrontendHost::handle`). Each goes signature check → form
//! parse → grammar → policy → durable (group-committed, fdatasynced) log append →
//! the ephemeral JSON answer. The op (a builtin) runs, and its status/result
//! messages go to a local fake Slack Web API answering `{"ok":true}` during the
//! measurement.
//!
//! Open loop: request *i* of a load is due at `start + i/rate` and is sent then
//! whatever happened to the earlier ones; its latency counts from when it was due
//! to when the whole answer was read, so queueing delay is counted (no
//! coordinated omission). The load generator (`youops_testkit::loadgen`) paces
//! from a plain thread and sends from its own one-worker runtime, with
//! pre-built signed bodies.
//!
//! Run: `cargo bench -p youops-frontend-chat --bench ack` (env
//! `YOUOPS_BENCH_SECS`, or the older `ACK_SECONDS`, default 5 per load). Without
//! `--bench` (under `cargo test`) it runs a 1 s smoke at a low rate and checks
//! every answer is 200.

// The daemon's allocator (the `youops` binary's default `jemalloc` feature), so the
// figures are the daemon's; the same-run baselines share it.
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio_util::sync::CancellationToken;
use youops_core::config::Config;
use youops_core::frontend::{FrontendHost, Frontends};
use youops_core::Executor;
use youops_frontend_chat::slack::signature::{encode_form, sign};
use youops_frontend_chat::SlackFrontend;
use youops_store::{LogOptions, LogStore};
use youops_testkit::loadgen::{bench_rates, measure, run_open_loop, table_header, Prepared};
use youops_testkit::serve_host;
use youops_testkit::slack::{Call, FakeSlack, SlackOptions};

const SECRET: &str = "bench-signing-secret";

/// The fake Slack Web API, answering every call at once and counting it.
async fn fake_slack(calls: Arc<AtomicU64>) -> String {
    let fake = FakeSlack::start_with(SlackOptions {
        bot_token: None,
        app_token: None,
        record: false,
        observe: Some(Arc::new(move |_: &Call| {
            calls.fetch_add(1, Ordering::Relaxed);
        })),
    })
    .await;
    fake.api_url()
}

// ------------------------------------------------------------ payloads

/// A signed slash command, unique by `n`.
fn command(n: u64) -> Prepared {
    let body = encode_form(&[
        ("token", "gIkuvaNzQIHg97ATvDxqgjtO"),
        ("team_id", "T1"),
        ("team_domain", "acme"),
        ("channel_id", &format!("C{}", n % 50)),
        ("channel_name", "ops"),
        ("user_id", &format!("U{:03}", n % PEOPLE)),
        ("user_name", &format!("user{:03}", n % PEOPLE)),
        ("command", "/ops"),
        ("text", &format!("echo text=bench-{n}")),
        ("api_app_id", "A123456"),
        ("is_enterprise_install", "false"),
        (
            "response_url",
            &format!("https://hooks.slack.com/commands/T1/{n}/xXbench"),
        ),
        ("trigger_id", &format!("{n}.1.bench")),
    ]);
    let ts = chrono::Utc::now().timestamp().to_string();
    let headers = vec![
        (
            "content-type",
            "application/x-www-form-urlencoded".to_string(),
        ),
        (
            "user-agent",
            "Slackbot 1.0 (+https://api.slack.com/robots)".to_string(),
        ),
        ("x-slack-signature", sign(SECRET, &ts, body.as_bytes())),
        ("x-slack-request-timestamp", ts),
    ];
    (headers, Bytes::from(body))
}

/// Requesters: the executor limits each principal to 600 requests a minute (the
/// default), so the load is spread over this many people, as it would be.
const PEOPLE: u64 = 100;

fn principals() -> String {
    (0..PEOPLE)
        .map(|i| {
            format!("[principals.p{i:03}]\nroles = [\"ops\"]\nidentities = {{ slack = [\"U{i:03}\"] }}\n")
        })
        .collect()
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        return; // a test runner asking for test names: there are none
    }
    let bench = args.iter().any(|a| a == "--bench");
    let secs: u64 = std::env::var("YOUOPS_BENCH_SECS")
        .or_else(|_| std::env::var("ACK_SECONDS"))
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let (rates, secs): (Vec<u64>, u64) = if bench {
        (bench_rates(&[100, 250, 500]), secs)
    } else {
        (vec![20], 1)
    };
    let calls = Arc::new(AtomicU64::new(0));
    let api = fake_slack(calls.clone()).await;
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

{}
[frontends.slack]
signing_secret = "{SECRET}"
bot_token = "xoxb-bench"
api_base_url = "{api}"
max_messages_per_second_per_channel = 100
"#,
        principals()
    );
    let cfg = Config::parse(&text, dir.path(), "bench", &|_| None).unwrap();
    let store = Arc::new(LogStore::open(dir.path().join("store"), LogOptions::default()).unwrap());
    let exec = Executor::builder(&cfg, store.clone())
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
    let addr = serve_host(&host).await;
    let url = format!("http://{addr}/slack/commands");
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(1024)
        .pool_idle_timeout(Duration::from_secs(90))
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap();
    let size = command(0).1.len();
    println!(
        "Slack slash-command acknowledgement over loopback HTTP, open loop, {secs} s per load; \
         signed `/slack/commands` forms of {size} bytes; log store in {}\n",
        dir.path().display()
    );
    let mut n = 1u64;
    let mut batch = |count: u64| -> Vec<Prepared> {
        (0..count)
            .map(|_| {
                n += 1;
                command(n)
            })
            .collect()
    };
    // Warm-up (connections, caches, the store); not reported.
    let warm = run_open_loop(&client, &url, 100, batch(if bench { 200 } else { 10 }));
    assert_eq!(
        warm.statuses.get("200"),
        Some(&warm.sent),
        "warm-up: {:?}",
        warm.statuses
    );
    tokio::time::sleep(Duration::from_millis(500)).await;

    println!("{}", table_header("Slack"));
    for rate in rates {
        let (r, row) = measure(&client, &url, rate, batch(rate * secs), &calls);
        println!("{row}");
        if !bench {
            assert_eq!(r.statuses.get("200"), Some(&r.sent), "{:?}", r.statuses);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    shutdown.cancel();
    let _ = exec.shutdown(Duration::from_secs(5)).await;
}
