//! Shared helpers: requests signed the way Slack signs them, and the harness
//! (the kit's fake Slack, real executor, real log store, the daemon's
//! `FrontendHost`).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use bytes::Bytes;
use tokio_util::sync::CancellationToken;
use youops_core::config::Config;
use youops_core::frontend::{FrontendHost, Frontends, HttpResponse};
use youops_core::{Executor, RequestFilter, RequestId};
use youops_frontend_chat::slack::signature::{encode_form, sign};
use youops_frontend_chat::SlackFrontend;
use youops_store::{LogOptions, LogStore};

pub(crate) use youops_testkit::eventually;
pub(crate) use youops_testkit::slack::{Call, FakeSlack, APP_TOKEN, BOT_TOKEN};
pub(crate) use youops_testkit::Fault;

pub(crate) const SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";

// ---------------------------------------------------------------------------
// Signed requests, built the way Slack builds them
// ---------------------------------------------------------------------------

pub(crate) fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

pub(crate) fn signed(
    path: &str,
    content_type: &str,
    body: String,
    ts: i64,
    secret: &str,
) -> http::Request<Bytes> {
    let ts = ts.to_string();
    http::Request::builder()
        .method("POST")
        .uri(path)
        .header("content-type", content_type)
        .header("user-agent", "Slackbot 1.0 (+https://api.slack.com/robots)")
        .header("x-slack-request-timestamp", &ts)
        .header("x-slack-signature", sign(secret, &ts, body.as_bytes()))
        .body(Bytes::from(body))
        .unwrap()
}

pub(crate) fn slash_body(
    fake: &FakeSlack,
    user: &str,
    channel: &str,
    text: &str,
    trigger: &str,
) -> String {
    encode_form(&[
        ("token", "gIkuvaNzQIHg97ATvDxqgjtO"),
        ("team_id", "T1"),
        ("team_domain", "acme"),
        ("channel_id", channel),
        ("channel_name", "ops"),
        ("user_id", user),
        ("user_name", "someone"),
        ("command", "/ops"),
        ("text", text),
        ("api_app_id", "A1"),
        ("is_enterprise_install", "false"),
        ("response_url", &format!("{}/respond/{trigger}", fake.base)),
        ("trigger_id", trigger),
    ])
}

pub(crate) fn mention_body(
    user: &str,
    channel: &str,
    text: &str,
    event_id: &str,
    ts: &str,
) -> String {
    serde_json::json!({
        "token": "XXYYZZ",
        "team_id": "T1",
        "api_app_id": "A1",
        "event": {
            "type": "app_mention",
            "user": user,
            "text": format!("<@U0BOT> {text}"),
            "ts": ts,
            "channel": channel,
            "event_ts": ts,
            "client_msg_id": "0c4a2b2e-9a1c-4c27-9b1e-1f1d2c3b4a5e",
            "team": "T1",
            "blocks": []
        },
        "type": "event_callback",
        "event_id": event_id,
        "event_time": 1700000000,
        "authorizations": [{"enterprise_id": null, "team_id": "T1", "user_id": "U0BOT", "is_bot": true, "is_enterprise_install": false}],
        "is_ext_shared_channel": false,
        "event_context": "4-eyJldCI6ImFwcF9tZW50aW9uIiwidGlkIjoiVDEiLCJhaWQiOiJBMSIsImNpZCI6IkMxIn0"
    })
    .to_string()
}

pub(crate) fn block_actions_body(
    fake: &FakeSlack,
    user: &str,
    channel: &str,
    message_ts: &str,
    action: &str,
    value: &str,
) -> String {
    let payload = serde_json::json!({
        "type": "block_actions",
        "user": {"id": user, "username": "approver", "name": "approver", "team_id": "T1"},
        "api_app_id": "A1",
        "token": "XXYYZZ",
        "container": {"type": "message", "message_ts": message_ts, "channel_id": channel, "is_ephemeral": false},
        "trigger_id": "1234567890.123456789.abcdef",
        "team": {"id": "T1", "domain": "acme"},
        "enterprise": null,
        "is_enterprise_install": false,
        "channel": {"id": channel, "name": "ops"},
        "message": {"type": "message", "user": "U0BOT", "ts": message_ts, "bot_id": "B0BOT", "text": "approval", "team": "T1"},
        "state": {"values": {}},
        "response_url": format!("{}/respond/action", fake.base),
        "actions": [{
            "action_id": action,
            "block_id": "youops_decision",
            "text": {"type": "plain_text", "text": "Approve", "emoji": true},
            "value": value,
            "style": "primary",
            "type": "button",
            "action_ts": "1700000001.000300"
        }]
    });
    encode_form(&[("payload", &payload.to_string())])
}

// ---------------------------------------------------------------------------
// Harness: real executor, real log store, the daemon's FrontendHost
// ---------------------------------------------------------------------------

pub(crate) const OPS: &str = r#"
[[ops]]
name = "echo"
description = "say something"
roles = ["ops", "viewer"]
runner = { type = "builtin", name = "echo" }
[[ops.params]]
name = "text"
type = "string"

[[ops]]
name = "slow"
description = "takes thirty seconds"
roles = ["ops"]
timeout = "60s"
runner = { type = "builtin", name = "slow" }

[[ops]]
name = "big"
description = "prints a lot"
roles = ["ops"]
runner = { type = "builtin", name = "big" }

[[ops]]
name = "gated"
description = "runs until the test opens the gate"
roles = ["ops"]
runner = { type = "builtin", name = "gated" }

[[ops]]
name = "db.drop"
description = "drop a database"
roles = ["ops"]
approvals = 1
runner = { type = "builtin", name = "echo" }
[[ops.params]]
name = "text"
type = "string"

[[ops]]
name = "db.wipe"
description = "wipe a database"
roles = ["ops"]
approvals = 2
runner = { type = "builtin", name = "echo" }
[[ops.params]]
name = "text"
type = "string"

[principals.alice]
roles = ["ops"]
identities = { slack = ["U_ALICE"] }

[principals.bob]
roles = ["ops"]
identities = { slack = ["U_BOB"] }

[principals.erin]
roles = ["ops"]
identities = { slack = ["U_ERIN"] }

[principals.carol]
roles = ["viewer"]
identities = { slack = ["U_CAROL"] }

[principals.dave]
roles = ["ops"]
identities = { cli = ["dave"] }
"#;

pub(crate) struct Harness {
    pub(crate) fake: FakeSlack,
    pub(crate) exec: Executor,
    pub(crate) host: FrontendHost,
    pub(crate) shutdown: CancellationToken,
    pub(crate) runs: Arc<AtomicUsize>,
    pub(crate) gate: Arc<AtomicBool>,
    pub(crate) tasks:
        Mutex<Vec<tokio::task::JoinHandle<Result<(), youops_core::frontend::FrontendError>>>>,
    pub(crate) _dir: tempfile::TempDir,
    /// The config section's extra lines, for [`Harness::restart`].
    extra: String,
    /// Stops the frontend when the harness goes.
    _stop: tokio_util::sync::DropGuard,
}

pub(crate) fn section(fake: &FakeSlack, extra: &str) -> String {
    let pace = if extra.contains("max_messages_per_second_per_channel") {
        ""
    } else {
        "max_messages_per_second_per_channel = 20\n"
    };
    format!(
        "signing_secret = {SECRET:?}\nbot_token = {BOT_TOKEN:?}\napi_base_url = {:?}\n{pace}{extra}\n",
        fake.api_url()
    )
}

pub(crate) async fn harness(extra: &str) -> Harness {
    let fake = FakeSlack::start().await;
    let dir = tempfile::tempdir().unwrap();
    harness_on(fake, dir, extra).await
}

/// A harness on `fake` and the store in `dir` (kept from an earlier one).
async fn harness_on(fake: FakeSlack, dir: tempfile::TempDir, extra: &str) -> Harness {
    let text = format!("{OPS}\n[frontends.slack]\n{}", section(&fake, extra));
    let cfg = Config::parse(&text, dir.path(), "test", &|_| None).unwrap();
    // A store closed a moment ago may still hold its lock while its last
    // handles go.
    let store = eventually("the store to open", || async {
        LogStore::open(dir.path().join("store"), LogOptions::default()).ok()
    })
    .await;
    let store = Arc::new(store);
    let runs = Arc::new(AtomicUsize::new(0));
    let (r1, r2) = (runs.clone(), runs.clone());
    let gate = Arc::new(AtomicBool::new(false));
    let g1 = gate.clone();
    let exec = Executor::builder(&cfg, store)
        .builtin("echo", move |call: youops_core::runner::BuiltinCall| {
            let r = r1.clone();
            async move {
                r.fetch_add(1, Ordering::SeqCst);
                Ok(call
                    .args
                    .get("text")
                    .map(|v| v.as_text())
                    .unwrap_or_default())
            }
        })
        .builtin("slow", move |_call: youops_core::runner::BuiltinCall| {
            let r = r2.clone();
            async move {
                r.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_secs(30)).await;
                Ok("slept".to_string())
            }
        })
        .builtin("gated", move |_call: youops_core::runner::BuiltinCall| {
            let g = g1.clone();
            async move {
                let deadline = Instant::now() + Duration::from_secs(20);
                while !g.load(Ordering::SeqCst) && Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Ok("through the gate".to_string())
            }
        })
        .builtin(
            "big",
            |_call: youops_core::runner::BuiltinCall| async move {
                let mut s = String::from("HEAD-MARKER\n");
                for i in 0..2000 {
                    s.push_str(&format!("line {i:05} of a long output\n"));
                }
                s.push_str("TAIL-MARKER");
                Ok(s)
            },
        )
        .build()
        .await
        .unwrap();
    let slack = SlackFrontend::from_config(cfg.frontend("slack").unwrap()).expect("valid config");
    let shutdown = CancellationToken::new();
    let set = Frontends::new().with(slack);
    let host = FrontendHost::new(
        &set,
        &exec,
        Some("https://youops.example".into()),
        &shutdown,
        |n| cfg.frontend(n).cloned().unwrap_or_default(),
    );
    let tasks = Mutex::new(host.spawn());
    let h = Harness {
        fake,
        exec,
        host,
        _stop: shutdown.clone().drop_guard(),
        shutdown,
        runs,
        gate,
        tasks,
        _dir: dir,
        extra: extra.to_string(),
    };
    eventually("the frontend to be ready", || async {
        h.host.readiness().iter().all(|(_, r)| *r).then_some(())
    })
    .await;
    h
}

impl Harness {
    pub(crate) async fn post(&self, req: http::Request<Bytes>) -> HttpResponse {
        post_to(&self.host, req).await
    }

    pub(crate) async fn slash(
        &self,
        user: &str,
        text: &str,
        trigger: &str,
    ) -> (StatusCode, serde_json::Value) {
        self.slash_in("C1", user, text, trigger).await
    }

    pub(crate) async fn slash_in(
        &self,
        channel: &str,
        user: &str,
        text: &str,
        trigger: &str,
    ) -> (StatusCode, serde_json::Value) {
        let body = slash_body(&self.fake, user, channel, text, trigger);
        let res = self
            .post(signed(
                "/slack/commands",
                "application/x-www-form-urlencoded",
                body,
                now(),
                SECRET,
            ))
            .await;
        let status = res.status();
        (
            status,
            serde_json::from_slice(res.body()).unwrap_or(serde_json::Value::Null),
        )
    }

    pub(crate) async fn requests(&self) -> Vec<youops_core::RequestRecord> {
        self.exec
            .list(&RequestFilter::default(), None, 100)
            .await
            .unwrap()
    }
}

impl Harness {
    /// Stop the frontend and the executor, as a daemon stops, and start them
    /// again on the same store and fake Slack.
    pub(crate) async fn restart(self) -> Harness {
        self.shutdown.cancel();
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap());
        for t in tasks {
            let _ = t.await;
        }
        self.exec
            .shutdown(Duration::from_secs(5))
            .await
            .expect("the executor stops");
        let Harness {
            fake,
            exec,
            host,
            _dir,
            extra,
            ..
        } = self;
        // Their store handles go now, not when this function returns.
        drop(host);
        drop(exec);
        harness_on(fake, _dir, &extra).await
    }
}

pub(crate) async fn post_to(host: &FrontendHost, req: http::Request<Bytes>) -> HttpResponse {
    youops_testkit::handle_route(host, req).await
}

pub(crate) fn id_in(text: &str) -> RequestId {
    let start = text.find("equest `").expect("a request id in the reply") + "equest `".len();
    text[start..start + 26].parse().unwrap()
}
