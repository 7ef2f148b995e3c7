//! A Slack request whose node dies (SIGKILL) in a cluster of three: the
//! leader that fences the node adopts the request's feedback and tells the
//! interruption in the channel, once, by editing the status message the dead
//! node posted (the audit log recorded where it is), with the result in its
//! thread.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;
use youops_testkit::pg::PgCluster;
use youops_testkit::sign::slack_signature;
use youops_testkit::slack::{Call, FakeSlack, BOT_TOKEN};

use crate::cluster::{count_events, three_nodes};
use crate::support::*;

/// The Slack app's signing secret in every node's config.
const SIGNING_SECRET: &str = "cluster-slack-signing-secret";
/// The Slack member id mapped to principal `sam` (role ops).
const SLACK_USER: &str = "U0SAM";
/// The channel the slash command is typed in.
const CHANNEL: &str = "C0OPS";

/// Principal `sam` and a `[frontends.slack]` section (HTTP transport) talking
/// to the fake Slack at `api`, posting a run's status at once.
fn slack_section(api: &str) -> String {
    format!(
        r#"
[principals.sam]
roles = ["ops"]
identities = {{ slack = ["{SLACK_USER}"] }}

[frontends.slack]
signing_secret = "{SIGNING_SECRET}"
bot_token = "{BOT_TOKEN}"
api_base_url = "{api}"
status_delay = "0s"
max_messages_per_second_per_channel = 20
"#
    )
}

/// `s` percent-encoded for a form body (every byte but the unreserved ones).
fn form_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// POST `/ops {text}` as Slack sends a slash command (signed form) to `api`;
/// the status and the answer.
async fn slash_command(
    api: &Api,
    fake: &FakeSlack,
    text: &str,
    trigger: &str,
) -> (StatusCode, String) {
    let respond = format!("{}/respond/{trigger}", fake.base);
    let fields = [
        ("token", "gIkuvaNzQIHg97ATvDxqgjtO"),
        ("team_id", "T1"),
        ("team_domain", "acme"),
        ("channel_id", CHANNEL),
        ("channel_name", "ops"),
        ("user_id", SLACK_USER),
        ("user_name", "sam"),
        ("command", "/ops"),
        ("text", text),
        ("api_app_id", "A1"),
        ("response_url", &respond),
        ("trigger_id", trigger),
    ];
    let body = fields
        .iter()
        .map(|(k, v)| format!("{}={}", form_encode(k), form_encode(v)))
        .collect::<Vec<_>>()
        .join("&");
    let ts = chrono::Utc::now().timestamp().to_string();
    let resp = api
        .http
        .post(api.url("/slack/commands"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-slack-request-timestamp", &ts)
        .header(
            "x-slack-signature",
            slack_signature(SIGNING_SECRET, &ts, body.as_bytes()),
        )
        .body(body)
        .send()
        .await
        .expect("POST /slack/commands");
    let status = resp.status();
    (status, resp.text().await.unwrap_or_default())
}

/// The ids of the requests asked in Slack, as `api` lists them.
async fn slack_requests(api: &Api) -> Vec<String> {
    api.list_all("frontend=slack")
        .await
        .iter()
        .filter_map(|r| r["request"]["id"].as_str().map(str::to_string))
        .collect()
}

/// Poll `done` until it holds; panic after `limit`, with what `fake` saw.
async fn wait_until(limit: Duration, fake: &FakeSlack, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "not within {limit:?}; the fake Slack saw {:#?}",
            summary(&fake.calls())
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The record of request `id` once one of `apis` says it is `state` (polled;
/// panics after `limit`).
async fn wait_state_on(apis: &[&Api], id: &str, state: &str, limit: Duration) -> Value {
    let deadline = Instant::now() + limit;
    loop {
        for api in apis {
            let (st, v) = api
                .get(&format!("/api/v1/requests/{id}"), Some(ALICE))
                .await;
            if st == StatusCode::OK && v["request"]["state"] == state {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "request {id} never became {state}: {v:#}"
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The ts of the status message request `id`'s node recorded posting (its
/// `chat_status_message` notice, appended once the post returned), as `api`
/// shows the request's events; waits for it (at most 20 s).
async fn status_message(api: &Api, id: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (st, v) = api
            .get(&format!("/api/v1/requests/{id}"), Some(ALICE))
            .await;
        assert_eq!(st, StatusCode::OK, "{v}");
        let notes: Vec<&Value> = v["events"]
            .as_array()
            .unwrap_or_else(|| panic!("no events in {v:#}"))
            .iter()
            .filter(|e| e["body"]["type"] == "notice" && e["body"]["kind"] == "chat_status_message")
            .collect();
        assert!(notes.len() <= 1, "one status message recorded: {v:#}");
        if let Some(note) = notes.first() {
            let data = &note["body"]["data"];
            assert_eq!(data["channel"], CHANNEL, "{v:#}");
            return data["message"]
                .as_str()
                .unwrap_or_else(|| panic!("no message ts in {v:#}"))
                .to_string();
        }
        assert!(
            Instant::now() < deadline,
            "no status message recorded: {v:#}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Method, text and thread of each call, for failure messages.
fn summary(calls: &[Call]) -> Vec<(&str, &str, &Value)> {
    calls
        .iter()
        .map(|c| (c.method.as_str(), c.text(), &c.body["thread_ts"]))
        .collect()
}

/// Whether `c` is a status message of request `id` in `state` (posted or
/// edited): `<icon> `nap seconds=120` by <@U0SAM> — request `ID` — state: `STATE``.
fn is_status(c: &Call, id: &str, state: &str) -> bool {
    let head = format!("`nap seconds=120` by <@{SLACK_USER}> — request `{id}` — state: `{state}`");
    c.channel() == CHANNEL && c.text().contains(&head)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_nodes_slack_request_is_told_interrupted_by_the_leader_once() {
    let pg = PgCluster::start().unwrap();
    let url = pg.create_database();
    let fake = FakeSlack::start().await;
    let dir = tempfile::tempdir().unwrap();
    // a leads: b and c only follow.
    let [mut a, b, c] = three_nodes(dir.path(), &url, &slack_section(&fake.api_url())).await;

    // A long run asked in Slack, received by a: a posts its running status.
    let (st, ack) = slash_command(&a.api, &fake, "nap seconds=120", "trig-nap-1").await;
    assert_eq!(st, StatusCode::OK, "{ack}");
    let ids = slack_requests(&b.api).await;
    assert_eq!(ids.len(), 1, "one Slack request: {ids:?}; ack {ack}");
    let id = ids[0].clone();
    assert!(ack.contains(&format!("Accepted: request `{id}`")), "{ack}");
    wait_until(Duration::from_secs(20), &fake, || {
        fake.calls_of("chat.postMessage")
            .iter()
            .any(|c| is_status(c, &id, "running"))
    })
    .await;
    // a recorded where its status message is.
    let posted_ts = status_message(&b.api, &id).await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    let killed = Instant::now();
    a.signal(nix::sys::signal::Signal::SIGKILL);
    a.wait_exit(Duration::from_secs(10)).await;

    // b or c takes the lease, fences a and interrupts its run.
    let r = wait_state_on(
        &[&b.api, &c.api],
        &id,
        "interrupted",
        Duration::from_secs(30),
    )
    .await;
    let reason = r["request"]["reason"].as_str().unwrap_or_default();
    assert!(reason.starts_with("node a stopped"), "{r:#}");

    // The new leader tells it in the channel: it edits a's status message,
    // then posts the result in its thread. Wait a few seconds more, so that
    // a second renderer (on the node that does not lead) would be caught.
    let interrupted = |calls: &[Call]| -> Vec<Call> {
        calls
            .iter()
            .filter(|c| c.at > killed && is_status(c, &id, "interrupted"))
            .cloned()
            .collect()
    };
    wait_until(Duration::from_secs(20), &fake, || {
        !interrupted(&fake.calls()).is_empty()
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let calls = fake.calls();
    let after: Vec<&Call> = calls.iter().filter(|c| c.at > killed).collect();
    let shown = summary(&calls);
    assert_eq!(
        after.len(),
        2,
        "a status edit and a result after the kill: {shown:#?}"
    );
    let (status, result) = (after[0], after[1]);

    assert_eq!(
        interrupted(&calls).len(),
        1,
        "one interrupted status: {shown:#?}"
    );
    assert_eq!(status.method, "chat.update", "{shown:#?}");
    assert_eq!(status.body["ts"], posted_ts, "a's message: {shown:#?}");
    assert_eq!(status.channel(), CHANNEL, "{shown:#?}");
    assert!(status.text().starts_with(":x: "), "{}", status.text());
    assert!(
        status
            .text()
            .contains(&format!("\n_{}_", reason.replace('_', "\\_"))),
        "the status tells why: {}",
        status.text()
    );

    assert_eq!(result.method, "chat.postMessage", "{shown:#?}");
    assert_eq!(result.channel(), CHANNEL, "{shown:#?}");
    assert!(
        result
            .text()
            .starts_with(&format!(":x: `nap` request `{id}` — state: `interrupted`")),
        "{}",
        result.text()
    );
    assert_eq!(
        result.body["thread_ts"], posted_ts,
        "in the thread of a's status message: {shown:#?}"
    );

    // a posted the one running status; nobody posted another, or re-ran it.
    let running: Vec<&Call> = calls
        .iter()
        .filter(|c| c.method == "chat.postMessage" && is_status(c, &id, "running"))
        .collect();
    assert_eq!(running.len(), 1, "{shown:#?}");
    assert!(running[0].at < killed, "{shown:#?}");
    assert_eq!(count_events(&b.api, &id, "running").await, 1, "ran once");
    let (st, v) = b.api.get("/api/v1/audit/verify", Some(ALICE)).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["ok"], true, "{v:#}");
}
