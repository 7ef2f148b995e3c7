//! The fake Slack Web API (`chat.postMessage`, `chat.update`,
//! `chat.postEphemeral`) and `response_url`: real envelopes, and a count of
//! every feedback call.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Path as AxPath, State as AxState};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use serde_json::{json, Value};

use super::wire::ulids;
use crate::lock;

#[derive(Debug, Default)]
pub(crate) struct SlackFake {
    ts: AtomicU64,
    /// Calls by method (`chat.postMessage`, `chat.postMessage (thread)`, …).
    pub(crate) calls: Mutex<BTreeMap<String, u64>>,
    /// Requests whose `succeeded` result was posted in a thread.
    pub(crate) results: Mutex<HashSet<String>>,
    /// Requests mentioned in any call.
    pub(crate) mentioned: Mutex<HashSet<String>>,
}

impl SlackFake {
    /// A fake whose message timestamps count from `1700000000.000100`.
    pub(crate) fn new() -> Self {
        SlackFake {
            ts: AtomicU64::new(100),
            ..Default::default()
        }
    }
}

async fn slack_api(
    AxState(st): AxState<Arc<SlackFake>>,
    AxPath(method): AxPath<String>,
    body: Bytes,
) -> Response {
    let v: Value = serde_json::from_slice(&body).unwrap_or_else(|_| {
        // Form-encoded calls: keep the raw text, enough to find ids in it.
        Value::String(String::from_utf8_lossy(&body).into_owned())
    });
    let text = v.to_string();
    let in_thread = v.get("thread_ts").is_some();
    let key = if in_thread {
        format!("{method} (thread)")
    } else {
        method.clone()
    };
    *lock(&st.calls).entry(key).or_default() += 1;
    let ids = ulids(&text);
    if !ids.is_empty() {
        lock(&st.mentioned).extend(ids.iter().cloned());
        if method == "chat.postMessage" && in_thread && text.contains("`succeeded`") {
            lock(&st.results).extend(ids);
        }
    }
    let channel = v["channel"].as_str().unwrap_or("C0").to_string();
    let ts = format!("1700000000.{:06}", st.ts.fetch_add(1, Ordering::Relaxed));
    let answer = match method.as_str() {
        "chat.postMessage" => {
            let mut message = json!({
                "type": "message", "subtype": "bot_message", "text": v["text"], "ts": ts,
                "user": "U0BOT", "bot_id": "B0BOT", "app_id": "A0SOAK", "team": "T0SOAK"
            });
            if let Some(t) = v.get("thread_ts") {
                message["thread_ts"] = t.clone();
            }
            json!({ "ok": true, "channel": channel, "ts": ts, "message": message })
        }
        "chat.update" => json!({
            "ok": true, "channel": channel, "ts": v["ts"], "text": v["text"],
            "message": { "text": v["text"], "user": "U0BOT", "bot_id": "B0BOT" }
        }),
        "chat.postEphemeral" => json!({ "ok": true, "message_ts": ts }),
        _ => json!({ "ok": false, "error": "unknown_method" }),
    };
    (
        StatusCode::OK,
        [("content-type", "application/json; charset=utf-8")],
        answer.to_string(),
    )
        .into_response()
}

async fn slack_respond(AxState(st): AxState<Arc<SlackFake>>, body: Bytes) -> Response {
    *lock(&st.calls).entry("response_url".into()).or_default() += 1;
    let text = String::from_utf8_lossy(&body);
    lock(&st.mentioned).extend(ulids(&text));
    (StatusCode::OK, [("content-type", "text/html")], "ok").into_response()
}

/// The fake's routes (`/api/{method}`, `/respond/{id}`) over `state`.
pub(crate) fn router(state: Arc<SlackFake>) -> Router {
    Router::new()
        .route("/api/{method}", post(slack_api))
        .route("/respond/{id}", post(slack_respond))
        .with_state(state)
}
