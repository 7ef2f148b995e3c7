//! Integration tests of the Slack frontend against a fake Slack Web API (and
//! Socket Mode websocket) on 127.0.0.1, with requests signed the way Slack signs
//! them and fed through the same `FrontendHost` the daemon uses.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use axum::extract::connect_info::{ConnectInfo, Connected};
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State as AxState};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, post};
use axum::serve::{IncomingStream, Listener};
use axum::Router;
use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use youops_core::config::Config;
use youops_core::frontend::conformance::{self, Driver};
use youops_core::frontend::{Frontend, FrontendHost, Frontends, HttpResponse};
use youops_core::{
    Actor, EventBody, Executor, Origin, RequestFilter, RequestId, State, Submission,
};
use youops_frontend_chat::signature::{encode_form, sign};
use youops_frontend_chat::SlackFrontend;
use youops_store::{LogOptions, LogStore};

const SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
const BOT_TOKEN: &str = "xoxb-test-token";
const APP_TOKEN: &str = "xapp-test-token";

// ---------------------------------------------------------------------------
// The fake Slack
// ---------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Call {
    method: String,
    body: serde_json::Value,
    at: Instant,
}

impl Call {
    fn text(&self) -> &str {
        self.body["text"].as_str().unwrap_or("")
    }
    fn channel(&self) -> &str {
        self.body["channel"].as_str().unwrap_or("")
    }
}

/// How the fake Slack misbehaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// Answer with this HTTP status (and an HTML body, as a proxy in front of
    /// Slack does).
    Status(u16),
    /// Slack's rate limit: `429` with `Retry-After: <seconds>` and
    /// `{"ok":false,"error":"ratelimited"}`.
    RateLimited(u64),
    /// Read the request and never answer.
    Hang,
    /// Read the request and close the connection without a byte of answer.
    Drop,
}

/// A fault on every call about one channel: Web API calls whose `channel` is
/// it, and `response_url` posts whose id starts with `{channel}-`. `left`:
/// only that many calls, then Slack is fine again.
#[derive(Debug, Clone)]
struct FaultRule {
    fault: Fault,
    channel: String,
    left: Option<usize>,
}

#[derive(Default)]
struct FakeState {
    calls: Mutex<Vec<Call>>,
    ts: AtomicU64,
    rate_limit_next_post: AtomicBool,
    fault: Mutex<Option<FaultRule>>,
    /// Kill switches of the accepted connections, by peer address.
    conns: Mutex<HashMap<std::net::SocketAddr, Arc<AtomicBool>>>,
    ws_port: AtomicU64,
    ws_out: Mutex<Option<mpsc::UnboundedReceiver<String>>>,
    ws_in: Mutex<Vec<serde_json::Value>>,
    ws_connected: AtomicUsize,
}

#[derive(Clone)]
struct FakeSlack {
    state: Arc<FakeState>,
    base: String,
    ws_tx: mpsc::UnboundedSender<String>,
}

impl FakeSlack {
    async fn start() -> FakeSlack {
        let (ws_tx, ws_rx) = mpsc::unbounded_channel();
        let state = Arc::new(FakeState {
            ts: AtomicU64::new(100),
            ws_out: Mutex::new(Some(ws_rx)),
            ..Default::default()
        });
        let app = Router::new()
            .route("/api/{method}", post(api))
            .route("/respond/{id}", post(respond))
            .route("/link/", any(ws_link))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        state.ws_port.store(addr.port() as u64, Ordering::SeqCst);
        let listener = KillableListener {
            inner: listener,
            state: state.clone(),
        };
        tokio::spawn(async move {
            axum::serve(listener, app.into_make_service_with_connect_info::<Peer>())
                .await
                .unwrap();
        });
        FakeSlack {
            state,
            base: format!("http://{addr}"),
            ws_tx,
        }
    }

    fn api_url(&self) -> String {
        format!("{}/api/", self.base)
    }

    fn calls(&self) -> Vec<Call> {
        self.state.calls.lock().unwrap().clone()
    }

    fn calls_of(&self, method: &str) -> Vec<Call> {
        self.calls()
            .into_iter()
            .filter(|c| c.method == method)
            .collect()
    }

    /// How many `chat.postMessage` calls have `needle` in their text.
    fn posts_mentioning(&self, needle: &str) -> usize {
        self.calls_of("chat.postMessage")
            .iter()
            .filter(|c| c.text().contains(needle))
            .count()
    }

    fn mentioning(&self, needle: &str) -> Vec<Call> {
        self.calls()
            .into_iter()
            .filter(|c| c.text().contains(needle) || c.body.to_string().contains(needle))
            .collect()
    }

    /// Misbehave on calls about `channel` (`left`: only that many).
    fn set_fault(&self, fault: Fault, channel: &str, left: Option<usize>) {
        *self.state.fault.lock().unwrap() = Some(FaultRule {
            fault,
            channel: channel.into(),
            left,
        });
    }

    fn clear_fault(&self) {
        *self.state.fault.lock().unwrap() = None;
    }

    /// Calls that were answered with a fault (method `… (fault)`).
    fn faulted(&self) -> Vec<Call> {
        self.calls()
            .into_iter()
            .filter(|c| c.method.ends_with("(fault)"))
            .collect()
    }
}

impl FakeState {
    /// The fault for this call, if any (counting it down).
    fn fault_for(&self, channel: &str, reply_id: Option<&str>) -> Option<Fault> {
        let mut g = self.fault.lock().unwrap();
        let rule = g.as_mut()?;
        let hit = match reply_id {
            Some(id) => id.starts_with(&format!("{}-", rule.channel)),
            None => channel == rule.channel,
        };
        if !hit {
            return None;
        }
        match &mut rule.left {
            Some(0) => return None,
            Some(n) => *n -= 1,
            None => {}
        }
        Some(rule.fault)
    }

    /// Record the call and misbehave.
    async fn misbehave(
        &self,
        fault: Fault,
        method: &str,
        body: serde_json::Value,
        peer: Peer,
    ) -> Response {
        self.calls.lock().unwrap().push(Call {
            method: format!("{method} (fault)"),
            body,
            at: Instant::now(),
        });
        match fault {
            Fault::Status(s) => (
                StatusCode::from_u16(s).unwrap(),
                [("content-type", "text/html")],
                "<html><body><h1>Internal Server Error</h1></body></html>",
            )
                .into_response(),
            Fault::RateLimited(secs) => (
                StatusCode::TOO_MANY_REQUESTS,
                [
                    ("retry-after", secs.to_string()),
                    (
                        "content-type",
                        "application/json; charset=utf-8".to_string(),
                    ),
                ],
                r#"{"ok":false,"error":"ratelimited"}"#,
            )
                .into_response(),
            Fault::Hang => std::future::pending().await,
            Fault::Drop => {
                // Nothing of the answer is written: the connection's next
                // write fails and hyper closes it.
                if let Some(k) = self.conns.lock().unwrap().get(&peer.0) {
                    k.store(true, Ordering::SeqCst);
                }
                StatusCode::OK.into_response()
            }
        }
    }
}

/// The peer address of a connection to the fake.
#[derive(Debug, Clone, Copy)]
struct Peer(std::net::SocketAddr);

/// A TCP listener whose connections the fake can cut from a handler.
struct KillableListener {
    inner: tokio::net::TcpListener,
    state: Arc<FakeState>,
}

impl Listener for KillableListener {
    type Io = KillableStream;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            if let Ok((tcp, addr)) = self.inner.accept().await {
                let killed = Arc::new(AtomicBool::new(false));
                self.state
                    .conns
                    .lock()
                    .unwrap()
                    .insert(addr, killed.clone());
                return (KillableStream { tcp, killed }, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

impl Connected<IncomingStream<'_, KillableListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, KillableListener>) -> Self {
        Peer(*stream.remote_addr())
    }
}

/// A connection that, once killed, neither reads nor writes another byte.
struct KillableStream {
    tcp: tokio::net::TcpStream,
    killed: Arc<AtomicBool>,
}

impl KillableStream {
    fn cut(&self) -> Option<std::io::Error> {
        self.killed
            .load(Ordering::SeqCst)
            .then(|| std::io::Error::new(std::io::ErrorKind::ConnectionReset, "cut by the fake"))
    }
}

impl AsyncRead for KillableStream {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if let Some(e) = self.cut() {
            return std::task::Poll::Ready(Err(e));
        }
        std::pin::Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for KillableStream {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        if let Some(e) = self.cut() {
            return std::task::Poll::Ready(Err(e));
        }
        std::pin::Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if let Some(e) = self.cut() {
            return std::task::Poll::Ready(Err(e));
        }
        std::pin::Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

fn bearer_ok(headers: &HeaderMap, want: &str) -> bool {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == format!("Bearer {want}"))
}

fn slack_json(status: StatusCode, v: serde_json::Value) -> Response {
    (
        status,
        [("content-type", "application/json; charset=utf-8")],
        v.to_string(),
    )
        .into_response()
}

async fn api(
    AxState(st): AxState<Arc<FakeState>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    Path(method): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body_json: serde_json::Value = serde_json::from_slice(&body).unwrap_or_else(|_| {
        let pairs = youops_frontend_chat::signature::parse_form(&body);
        serde_json::Value::Object(pairs.into_iter().map(|(k, v)| (k, v.into())).collect())
    });
    if method == "apps.connections.open" {
        if !bearer_ok(&headers, APP_TOKEN) {
            return slack_json(
                StatusCode::OK,
                serde_json::json!({"ok": false, "error": "invalid_auth"}),
            );
        }
        let port = st.ws_port.load(Ordering::SeqCst);
        return slack_json(
            StatusCode::OK,
            serde_json::json!({"ok": true, "url": format!("ws://127.0.0.1:{port}/link/?ticket=t-1&app_id=A1")}),
        );
    }
    if !bearer_ok(&headers, BOT_TOKEN) {
        return slack_json(
            StatusCode::OK,
            serde_json::json!({"ok": false, "error": "not_authed"}),
        );
    }
    if method.starts_with("chat.") {
        let channel = body_json["channel"].as_str().unwrap_or("");
        if let Some(f) = st.fault_for(channel, None) {
            return st.misbehave(f, &method, body_json, peer).await;
        }
    }
    if method == "chat.postMessage" && st.rate_limit_next_post.swap(false, Ordering::SeqCst) {
        st.calls.lock().unwrap().push(Call {
            method: format!("{method} (429)"),
            body: body_json,
            at: Instant::now(),
        });
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [
                ("retry-after", "1"),
                ("content-type", "application/json; charset=utf-8"),
            ],
            r#"{"ok":false,"error":"ratelimited"}"#,
        )
            .into_response();
    }
    st.calls.lock().unwrap().push(Call {
        method: method.clone(),
        body: body_json.clone(),
        at: Instant::now(),
    });
    let channel = body_json["channel"].as_str().unwrap_or("C0").to_string();
    if method == "chat.postMessage" && channel.starts_with("CPRIV") {
        // The bot was never invited to this private channel.
        return slack_json(
            StatusCode::OK,
            serde_json::json!({"ok": false, "error": "not_in_channel"}),
        );
    }
    let text = body_json["text"].clone();
    match method.as_str() {
        "chat.postMessage" => {
            let ts = format!("1700000000.{:06}", st.ts.fetch_add(1, Ordering::SeqCst));
            let mut message = serde_json::json!({
                "type": "message", "subtype": "bot_message", "text": text, "ts": ts,
                "user": "U0BOT", "bot_id": "B0BOT", "app_id": "A1", "team": "T1"
            });
            if let Some(t) = body_json.get("thread_ts") {
                message["thread_ts"] = t.clone();
            }
            slack_json(
                StatusCode::OK,
                serde_json::json!({"ok": true, "channel": channel, "ts": ts, "message": message}),
            )
        }
        "chat.update" => slack_json(
            StatusCode::OK,
            serde_json::json!({"ok": true, "channel": channel, "ts": body_json["ts"], "text": text,
                "message": {"text": text, "user": "U0BOT", "bot_id": "B0BOT"}}),
        ),
        "chat.postEphemeral" => slack_json(
            StatusCode::OK,
            serde_json::json!({"ok": true, "message_ts": format!("1700000000.{:06}", st.ts.fetch_add(1, Ordering::SeqCst))}),
        ),
        _ => slack_json(
            StatusCode::OK,
            serde_json::json!({"ok": false, "error": "unknown_method"}),
        ),
    }
}

async fn respond(
    AxState(st): AxState<Arc<FakeState>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let body = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    if let Some(f) = st.fault_for("", Some(&id)) {
        return st
            .misbehave(f, &format!("response_url/{id}"), body, peer)
            .await;
    }
    st.calls.lock().unwrap().push(Call {
        method: format!("response_url/{id}"),
        body,
        at: Instant::now(),
    });
    (StatusCode::OK, [("content-type", "text/html")], "ok").into_response()
}

async fn ws_link(AxState(st): AxState<Arc<FakeState>>, ws: WebSocketUpgrade) -> Response {
    ws.on_upgrade(move |socket| ws_session(st, socket))
}

async fn ws_session(st: Arc<FakeState>, mut socket: WebSocket) {
    let Some(mut out) = st.ws_out.lock().unwrap().take() else {
        return;
    };
    let hello = serde_json::json!({"type": "hello", "num_connections": 1,
        "debug_info": {"host": "applink-fake", "build_number": 1, "approximate_connection_time": 18060},
        "connection_info": {"app_id": "A1"}});
    if socket
        .send(Message::Text(hello.to_string().into()))
        .await
        .is_err()
    {
        return;
    }
    st.ws_connected.fetch_add(1, Ordering::SeqCst);
    loop {
        tokio::select! {
            m = out.recv() => match m {
                Some(text) => if socket.send(Message::Text(text.into())).await.is_err() { break },
                None => break,
            },
            m = socket.recv() => match m {
                Some(Ok(Message::Text(t))) => {
                    if let Ok(v) = serde_json::from_str::<serde_json::Value>(t.as_str()) {
                        st.ws_in.lock().unwrap().push(v);
                    }
                }
                Some(Ok(_)) => {}
                _ => break,
            },
        }
    }
    *st.ws_out.lock().unwrap() = Some(out);
}

// ---------------------------------------------------------------------------
// Signed requests, built the way Slack builds them
// ---------------------------------------------------------------------------

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn signed(
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

fn slash_body(fake: &FakeSlack, user: &str, channel: &str, text: &str, trigger: &str) -> String {
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

fn mention_body(user: &str, channel: &str, text: &str, event_id: &str, ts: &str) -> String {
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

fn block_actions_body(
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

const OPS: &str = r#"
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

struct Harness {
    fake: FakeSlack,
    exec: Executor,
    host: FrontendHost,
    shutdown: CancellationToken,
    runs: Arc<AtomicUsize>,
    gate: Arc<AtomicBool>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<Result<(), youops_core::frontend::FrontendError>>>>,
    _dir: tempfile::TempDir,
}

fn section(fake: &FakeSlack, extra: &str) -> String {
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

async fn harness(extra: &str) -> Harness {
    let fake = FakeSlack::start().await;
    let dir = tempfile::tempdir().unwrap();
    let text = format!("{OPS}\n[frontends.slack]\n{}", section(&fake, extra));
    let cfg = Config::parse(&text, dir.path(), "test", &|_| None).unwrap();
    let store = Arc::new(LogStore::open(dir.path().join("store"), LogOptions::default()).unwrap());
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
        shutdown,
        runs,
        gate,
        tasks,
        _dir: dir,
    };
    eventually("the frontend to be ready", || async {
        h.host.readiness().iter().all(|(_, r)| *r).then_some(())
    })
    .await;
    h
}

impl Harness {
    async fn post(&self, req: http::Request<Bytes>) -> HttpResponse {
        post_to(&self.host, req).await
    }

    async fn slash(
        &self,
        user: &str,
        text: &str,
        trigger: &str,
    ) -> (StatusCode, serde_json::Value) {
        self.slash_in("C1", user, text, trigger).await
    }

    async fn slash_in(
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

    async fn requests(&self) -> Vec<youops_core::RequestRecord> {
        self.exec
            .list(&RequestFilter::default(), None, 100)
            .await
            .unwrap()
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn post_to(host: &FrontendHost, req: http::Request<Bytes>) -> HttpResponse {
    let path = req.uri().path().to_string();
    let (_, idx) = host
        .routes()
        .into_iter()
        .find(|(r, _)| r.path == path)
        .unwrap_or_else(|| panic!("no route {path}"));
    host.handle(idx, req).await
}

async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn id_in(text: &str) -> RequestId {
    let start = text.find("equest `").expect("a request id in the reply") + "equest `".len();
    text[start..start + 26].parse().unwrap()
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_and_stale_requests_get_401_and_nothing_is_recorded() {
    let h = harness("").await;
    let body = slash_body(&h.fake, "U_ALICE", "C1", "echo text=hi", "trig-forged");
    for req in [
        // Signed with the wrong secret.
        signed(
            "/slack/commands",
            "application/x-www-form-urlencoded",
            body.clone(),
            now(),
            "not-the-secret",
        ),
        // Right secret, timestamp six minutes old.
        signed(
            "/slack/commands",
            "application/x-www-form-urlencoded",
            body.clone(),
            now() - 360,
            SECRET,
        ),
        // Right secret, timestamp six minutes ahead.
        signed(
            "/slack/events",
            "application/json",
            mention_body("U_ALICE", "C1", "echo text=x", "Ev1", "1.1"),
            now() + 360,
            SECRET,
        ),
    ] {
        let res = h.post(req).await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    }
    // Body changed after signing.
    let mut req = signed(
        "/slack/commands",
        "application/x-www-form-urlencoded",
        body.clone(),
        now(),
        SECRET,
    );
    *req.body_mut() = Bytes::from(body.replace("echo", "db.drop"));
    assert_eq!(h.post(req).await.status(), StatusCode::UNAUTHORIZED);
    // No signature headers at all.
    let req = http::Request::builder()
        .method("POST")
        .uri("/slack/interactions")
        .body(Bytes::from("payload=%7B%7D"))
        .unwrap();
    assert_eq!(h.post(req).await.status(), StatusCode::UNAUTHORIZED);
    assert!(h.requests().await.is_empty());
    assert!(h.exec.store().verify().await.unwrap().ok());
    assert!(
        h.exec.store().events(0, 10).await.unwrap().is_empty(),
        "nothing reached the audit log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slack_ssl_checks_of_the_command_url_get_200_and_do_nothing() {
    let h = harness("").await;
    let body = "ssl_check=1&token=gIkuvaNzQIHg97ATvDxqgjtO".to_string();
    let unsigned = http::Request::builder()
        .method("POST")
        .uri("/slack/commands")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Bytes::from(body.clone()))
        .unwrap();
    let signed_check = signed(
        "/slack/commands",
        "application/x-www-form-urlencoded",
        body,
        now(),
        SECRET,
    );
    for req in [unsigned, signed_check] {
        let res = h.post(req).await;
        assert_eq!(res.status(), StatusCode::OK);
        assert!(res.body().is_empty(), "{:?}", res.body());
    }
    // Only on the command URL.
    let unsigned_elsewhere = http::Request::builder()
        .method("POST")
        .uri("/slack/interactions")
        .body(Bytes::from("ssl_check=1"))
        .unwrap();
    assert_eq!(
        h.post(unsigned_elsewhere).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert!(h.exec.store().events(0, 10).await.unwrap().is_empty());
    assert!(h.fake.calls().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn url_verification_is_answered() {
    let h = harness("").await;
    let body = serde_json::json!({"token": "Jhj5dZrVaK7ZwHHjRyZWjbDl", "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P", "type": "url_verification"}).to_string();
    let res = h
        .post(signed(
            "/slack/events",
            "application/json",
            body,
            now(),
            SECRET,
        ))
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let v: serde_json::Value = serde_json::from_slice(res.body()).unwrap();
    assert_eq!(
        v["challenge"],
        "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slash_command_is_acked_then_result_posted_in_a_thread() {
    // `status_delay = "0s"`: the status message goes out as soon as the op runs,
    // and is then updated in place to the end state.
    let h = harness("status_delay = \"0s\"").await;
    let (status, v) = h
        .slash("U_ALICE", "echo text=\"hello world\"", "trig-1")
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["response_type"], "ephemeral");
    let text = v["text"].as_str().unwrap();
    assert!(text.contains("Accepted"), "{text}");
    assert!(
        text.contains("https://youops.example/requests/"),
        "dashboard link: {text}"
    );
    let id = id_in(text);
    let done = h.exec.wait(id).await.unwrap();
    assert_eq!(done.state, State::Succeeded);
    assert_eq!(done.request.actor.principal.as_deref(), Some("alice"));
    assert_eq!(done.request.origin.location, "C1");
    // Status message at the channel's top level, result in its thread.
    let result = eventually("the result in the thread", || async {
        h.fake
            .calls_of("chat.postMessage")
            .into_iter()
            .find(|c| c.text().contains("hello world") && c.body.get("thread_ts").is_some())
    })
    .await;
    let status_msg = h
        .fake
        .calls_of("chat.postMessage")
        .into_iter()
        .find(|c| c.text().contains(&id.to_string()) && c.body.get("thread_ts").is_none())
        .expect("a status message");
    assert_eq!(status_msg.channel(), "C1");
    assert!(
        result.text().contains("state: `succeeded`"),
        "{}",
        result.text()
    );
    assert!(result.text().contains("duration"), "{}", result.text());
    assert_eq!(
        h.fake.posts_mentioning(&id.to_string()),
        2,
        "one status message and one result, no spam"
    );

    // A run the renderer sees running: its status message is updated in place
    // to the end state, not re-posted. (An echo may end before the renderer
    // looks, and is then posted in its end state at once.)
    let (status, v) = h.slash("U_ALICE", "gated", "trig-gated").await;
    assert_eq!(status, StatusCode::OK);
    let id = id_in(v["text"].as_str().unwrap());
    eventually("the status message showing running", || async {
        h.fake
            .calls_of("chat.postMessage")
            .into_iter()
            .find(|c| c.text().contains(&id.to_string()) && c.text().contains("state: `running`"))
    })
    .await;
    h.gate.store(true, Ordering::SeqCst);
    eventually("the status message updated to succeeded", || async {
        h.fake
            .calls_of("chat.update")
            .into_iter()
            .find(|c| c.text().contains(&id.to_string()) && c.text().contains("state: `succeeded`"))
    })
    .await;
    eventually("the gated result in the thread", || async {
        h.fake
            .calls_of("chat.postMessage")
            .into_iter()
            .find(|c| c.text().contains("through the gate") && c.body.get("thread_ts").is_some())
    })
    .await;
    assert_eq!(
        h.fake.posts_mentioning(&id.to_string()),
        2,
        "one status message and one result, no spam"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_shorter_than_the_status_delay_gets_one_status_message_in_its_end_state() {
    // A delay (10 s) an echo ends long before, even on a loaded machine.
    let h = harness("status_delay = \"10s\"").await;
    let (status, v) = h.slash("U_ALICE", "echo text=quick", "trig-quick").await;
    assert_eq!(status, StatusCode::OK);
    let id = id_in(v["text"].as_str().unwrap());
    assert_eq!(h.exec.wait(id).await.unwrap().state, State::Succeeded);
    let result = eventually("the result in the thread", || async {
        h.fake
            .calls_of("chat.postMessage")
            .into_iter()
            .find(|c| c.text().contains("quick") && c.body.get("thread_ts").is_some())
    })
    .await;
    assert!(
        result.text().contains("state: `succeeded`"),
        "{}",
        result.text()
    );
    let about_id = h.fake.mentioning(&id.to_string());
    let status_msgs: Vec<_> = about_id
        .iter()
        .filter(|c| c.method == "chat.postMessage" && c.body.get("thread_ts").is_none())
        .collect();
    assert_eq!(status_msgs.len(), 1, "{about_id:?}");
    assert!(
        status_msgs[0].text().contains("state: `succeeded`"),
        "posted in its end state, never as running: {}",
        status_msgs[0].text()
    );
    assert!(
        about_id.iter().all(|c| c.method != "chat.update"),
        "nothing to update: {about_id:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thirty_second_op_is_still_acknowledged_within_three_seconds() {
    let h = harness("progress_every = \"1s\"").await;
    let start = Instant::now();
    let (status, v) = h.slash("U_ALICE", "slow", "trig-slow").await;
    let took = start.elapsed();
    assert_eq!(status, StatusCode::OK);
    assert!(took < Duration::from_secs(3), "ack took {took:?}");
    let id = id_in(v["text"].as_str().unwrap());
    let rec = h
        .exec
        .wait_for(id, |r| r.state == State::Running)
        .await
        .unwrap();
    assert_eq!(rec.state, State::Running, "still running after the ack");
    // Progress: the status message is refreshed in place with the elapsed time.
    let upd = eventually("a progress update", || async {
        h.fake
            .calls_of("chat.update")
            .into_iter()
            .find(|c| c.text().contains(&id.to_string()) && c.text().contains("running for 0m0"))
    })
    .await;
    assert!(upd.text().contains("state: `running`"), "{}", upd.text());
    let posts = h.fake.mentioning(&id.to_string());
    assert_eq!(
        posts
            .iter()
            .filter(|c| c.method == "chat.postMessage")
            .count(),
        1,
        "progress is not spammed as new messages"
    );
    h.exec
        .cancel(id, &Actor::new("slack", "U_ALICE"))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_reach_a_channel_the_bot_is_not_in_through_response_url() {
    let h = harness("").await;
    let body = slash_body(
        &h.fake,
        "U_ALICE",
        "CPRIVATE",
        "echo text=private-result",
        "trig-priv",
    );
    let res = h
        .post(signed(
            "/slack/commands",
            "application/x-www-form-urlencoded",
            body,
            now(),
            SECRET,
        ))
        .await;
    let v: serde_json::Value = serde_json::from_slice(res.body()).unwrap();
    let id = id_in(v["text"].as_str().unwrap());
    assert_eq!(h.exec.wait(id).await.unwrap().state, State::Succeeded);
    let got = eventually("the result through response_url", || async {
        h.fake
            .calls_of("response_url/trig-priv")
            .into_iter()
            .find(|c| c.text().contains("private-result"))
    })
    .await;
    assert_eq!(got.body["response_type"], "in_channel");
    assert!(got.text().contains("state: `succeeded`"));
    let failed = h
        .exec
        .events(id)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| matches!(&e.body, EventBody::Notice { kind, message, .. } if kind == "chat_failed" && message.contains("not_in_channel")))
        .count();
    assert_eq!(failed, 1, "the failed post is on the record, once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn help_and_errors_are_precise_and_filtered_by_permission() {
    let h = harness("").await;
    let (_, v) = h.slash("U_ALICE", "help", "trig-h1").await;
    let alice = v["text"].as_str().unwrap().to_string();
    for op in ["echo", "slow", "big", "db.drop"] {
        assert!(alice.contains(op), "{op} in {alice}");
    }
    let (_, v) = h.slash("U_CAROL", "", "trig-h2").await;
    let carol = v["text"].as_str().unwrap().to_string();
    assert!(carol.contains("echo"), "{carol}");
    for op in ["slow", "big", "db.drop"] {
        assert!(!carol.contains(op), "carol must not see {op}: {carol}");
    }
    // A parse error says where and why.
    let (status, v) = h.slash("U_ALICE", "echo text=\"unclosed", "trig-h3").await;
    assert_eq!(status, StatusCode::OK);
    let t = v["text"].as_str().unwrap();
    assert!(
        t.contains("could not read") && t.to_lowercase().contains("quote"),
        "{t}"
    );
    // An unknown op suggests the right one.
    let (_, v) = h.slash("U_ALICE", "ecko text=x", "trig-h4").await;
    let t = v["text"].as_str().unwrap();
    assert!(t.contains("invalid") && t.contains("echo"), "{t}");
    // Permission denied explains itself.
    let (_, v) = h.slash("U_CAROL", "slow", "trig-h5").await;
    let t = v["text"].as_str().unwrap();
    assert!(t.contains("denied"), "{t}");
    assert_eq!(h.runs.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unmapped_user_gets_a_clear_reply_and_nothing_runs() {
    let h = harness("").await;
    let (status, v) = h.slash("U_STRANGER", "echo text=hi", "trig-u1").await;
    assert_eq!(status, StatusCode::OK);
    let t = v["text"].as_str().unwrap();
    assert!(
        t.contains("not mapped to a YouOps principal") && t.contains("U_STRANGER"),
        "{t}"
    );
    let (_, v) = h.slash("U_STRANGER", "help", "trig-u2").await;
    assert!(v["text"].as_str().unwrap().contains("not mapped"));
    let reqs = h.requests().await;
    assert_eq!(reqs.len(), 1);
    assert_eq!(
        reqs[0].state,
        State::Denied,
        "recorded as denied by the executor"
    );
    assert_eq!(h.runs.load(Ordering::SeqCst), 0);
    // Nothing public was posted about it.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(h.fake.calls_of("chat.postMessage").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_mention_runs_once_and_is_answered_in_its_thread() {
    let h = harness("").await;
    let body = mention_body(
        "U_ALICE",
        "C1",
        "echo text=from-mention",
        "Ev0LAN670R",
        "1515449522.000016",
    );
    let res = h
        .post(signed(
            "/slack/events",
            "application/json",
            body.clone(),
            now(),
            SECRET,
        ))
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let reply = eventually("the reply in the mention's thread", || async {
        h.fake
            .calls_of("chat.postMessage")
            .into_iter()
            .find(|c| c.text().contains("Accepted"))
    })
    .await;
    assert_eq!(reply.body["thread_ts"], "1515449522.000016");
    let id = id_in(reply.text());
    h.exec.wait(id).await.unwrap();
    // Slack retries the same event (it thought we were too slow).
    for n in 1..=2 {
        let mut req = signed(
            "/slack/events",
            "application/json",
            body.clone(),
            now(),
            SECRET,
        );
        req.headers_mut()
            .insert("x-slack-retry-num", n.to_string().parse().unwrap());
        req.headers_mut()
            .insert("x-slack-retry-reason", "http_timeout".parse().unwrap());
        assert_eq!(h.post(req).await.status(), StatusCode::OK);
    }
    let notices = eventually("the retries to be recorded", || async {
        let n: Vec<_> = h
            .exec
            .events(id)
            .await
            .unwrap()
            .into_iter()
            .filter(
                |e| matches!(&e.body, EventBody::Notice { kind, .. } if kind == "delivery_retry"),
            )
            .collect();
        (n.len() == 2).then_some(n)
    })
    .await;
    assert!(format!("{:?}", notices[0].body).contains("http_timeout"));
    assert_eq!(h.requests().await.len(), 1);
    assert_eq!(h.runs.load(Ordering::SeqCst), 1);
    // All answers went to the mention's thread, and the retries were not answered again.
    let result = eventually("the result in the thread", || async {
        h.fake
            .calls_of("chat.postMessage")
            .into_iter()
            .find(|c| c.text().contains("state: `succeeded`") && c.text().contains("from-mention"))
    })
    .await;
    assert_eq!(result.body["thread_ts"], "1515449522.000016");
    assert_eq!(
        h.fake
            .calls_of("chat.postMessage")
            .iter()
            .filter(|c| c.text().contains("Accepted"))
            .count(),
        1
    );
}

async fn approval_message(h: &Harness, id: RequestId, channel: &str) -> (String, String) {
    eventually("the approval prompt", || async {
        h.fake
            .calls_of("chat.postMessage")
            .into_iter()
            .find_map(|c| {
                let blocks = c.body.get("blocks")?.as_array()?.clone();
                if c.channel() != channel || !c.text().contains(&id.to_string()) {
                    return None;
                }
                let actions = blocks.iter().find(|b| b["type"] == "actions")?;
                let value = actions["elements"][0]["value"].as_str()?.to_string();
                // Where it was posted: the fake assigned the ts in its response; find it by order.
                Some((
                    value,
                    c.body["thread_ts"].as_str().unwrap_or("").to_string(),
                ))
            })
    })
    .await
}

fn posted_ts(h: &Harness, channel: &str, needle: &str) -> String {
    // The fake numbers ts sequentially in the order of successful posts and ephemerals.
    let mut n = 100;
    for c in h.fake.calls() {
        match c.method.as_str() {
            "chat.postMessage" => {
                if c.channel() == channel
                    && c.body.get("blocks").is_some()
                    && c.text().contains(needle)
                {
                    return format!("1700000000.{n:06}");
                }
                n += 1;
            }
            "chat.postEphemeral" => n += 1,
            _ => {}
        }
    }
    panic!("no post with {needle}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approve_button_by_requester_is_refused_and_by_another_approver_succeeds() {
    let h = harness("approvals_channel = \"CAPPROVE\"").await;
    let (_, v) = h.slash("U_ALICE", "db.drop text=users", "trig-a1").await;
    let t = v["text"].as_str().unwrap();
    let id = id_in(t);
    assert!(
        t.starts_with(&format!(
            ":raised_hand: Request `{id}` (`db.drop`) needs 1 approval from role ops (not the requester). Approvers can click Approve"
        )),
        "{t}"
    );
    let (value, _) = approval_message(&h, id, "C1").await;
    let prompt = h.fake.calls_of("chat.postMessage");
    let prompt = prompt
        .iter()
        .find(|c| c.channel() == "C1" && c.body.get("blocks").is_some())
        .expect("the prompt");
    assert!(
        prompt.text().contains("\nNeeds 1 approval; expires "),
        "{}",
        prompt.text()
    );
    assert!(
        value.starts_with(&format!("{id}:")),
        "the button carries id and digest: {value}"
    );
    let rec = h.exec.get(id).await.unwrap();
    assert_eq!(value, format!("{id}:{}", rec.request.digest));
    // Also posted to the approvals channel.
    approval_message(&h, id, "CAPPROVE").await;
    let ts = posted_ts(&h, "C1", &id.to_string());

    // The requester clicks Approve: refused, told privately, still pending.
    let res = h
        .post(signed(
            "/slack/interactions",
            "application/x-www-form-urlencoded",
            block_actions_body(&h.fake, "U_ALICE", "C1", &ts, "youops_approve", &value),
            now(),
            SECRET,
        ))
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let eph = eventually("the refusal", || async {
        h.fake.calls_of("chat.postEphemeral").into_iter().next()
    })
    .await;
    assert_eq!(eph.body["user"], "U_ALICE");
    assert!(
        eph.text().contains("approver ≠ requester"),
        "{}",
        eph.text()
    );
    assert_eq!(h.exec.get(id).await.unwrap().state, State::PendingApproval);

    // A forged digest (content changed since the prompt) is refused too.
    let res = h
        .post(signed(
            "/slack/interactions",
            "application/x-www-form-urlencoded",
            block_actions_body(
                &h.fake,
                "U_BOB",
                "C1",
                &ts,
                "youops_approve",
                &format!("{id}:{}", "0".repeat(64)),
            ),
            now(),
            SECRET,
        ))
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    eventually("the digest refusal", || async {
        h.fake
            .calls_of("chat.postEphemeral")
            .into_iter()
            .find(|c| c.text().contains("digest mismatch"))
    })
    .await;
    assert_eq!(h.exec.get(id).await.unwrap().state, State::PendingApproval);

    // Bob clicks Approve: it runs, and the clicked message is updated in place.
    let res = h
        .post(signed(
            "/slack/interactions",
            "application/x-www-form-urlencoded",
            block_actions_body(&h.fake, "U_BOB", "C1", &ts, "youops_approve", &value),
            now(),
            SECRET,
        ))
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let done = h.exec.wait(id).await.unwrap();
    assert_eq!(done.state, State::Succeeded);
    assert_eq!(done.approvals[0].by.principal.as_deref(), Some("bob"));
    let decided = format!(
        ":raised_hand: *Approval* for `db.drop text=users` requested by <@U_ALICE> (via slack) — request `{id}`\n:white_check_mark: Approved by <@U_BOB>\n<https://youops.example/requests/{id}|details on the dashboard>"
    );
    eventually("chat.update of the clicked message", || async {
        h.fake
            .calls_of("chat.update")
            .into_iter()
            .find(|c| c.body["ts"] == ts.as_str() && c.text().contains("Approved by <@U_BOB>"))
    })
    .await;
    // The approvals-channel copy is updated too.
    eventually("the approvals channel copy updated", || async {
        h.fake
            .calls_of("chat.update")
            .into_iter()
            .find(|c| c.channel() == "CAPPROVE" && c.text().contains("Approved by"))
    })
    .await;
    // Both prompts end saying who approved, and without buttons: Slack keeps
    // a message's previous blocks (its old text and buttons) when `chat.update`
    // leaves `blocks` out, so the update clears them.
    for channel in ["C1", "CAPPROVE"] {
        let last = settled_prompt(&h, id, channel).await;
        assert_eq!(last.text(), decided, "{channel}");
        assert_eq!(last.body["blocks"], serde_json::json!([]), "{channel}");
    }
    assert_no_stale_approval_text(&h, id);
}

/// The last `chat.update` of request `id`'s approval prompt in `channel`, once
/// the updates have settled.
async fn settled_prompt(h: &Harness, id: RequestId, channel: &str) -> Call {
    let last = || {
        h.fake
            .calls_of("chat.update")
            .into_iter()
            .rfind(|c| {
                c.channel() == channel
                    && c.text().starts_with(":raised_hand: *Approval*")
                    && c.text().contains(&id.to_string())
            })
            .map(|c| c.body)
    };
    let mut seen = eventually("an update of the prompt", || async { last() }).await;
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = last();
        if now.as_ref() == Some(&seen) {
            break;
        }
        seen = now.expect("still there");
    }
    Call {
        method: "chat.update".into(),
        body: seen,
        at: Instant::now(),
    }
}

/// Nothing posted or updated about request `id` ever showed a count of 0
/// approvals, an `approval(s)` count, or said the same thing twice.
fn assert_no_stale_approval_text(h: &Harness, id: RequestId) {
    for c in h.fake.calls() {
        let body = c.body.to_string();
        if !body.contains(&id.to_string()) {
            continue;
        }
        for bad in [
            "0 approval",
            "approval(s)",
            "it is now approved",
            "needs approval: needs",
        ] {
            assert!(!body.contains(bad), "{bad:?} in {} {body}", c.method);
        }
    }
}

/// The first line of a reply (the rest is the dashboard link).
fn first_line(v: &serde_json::Value) -> String {
    let t = v["text"].as_str().unwrap_or("");
    t.lines().next().unwrap_or("").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_approvals_are_counted_and_each_reply_says_what_happened_once() {
    let h = harness("approvals_channel = \"CAPPROVE\"").await;
    let (_, v) = h.slash("U_ALICE", "db.wipe text=users", "trig-w1").await;
    let t = v["text"].as_str().unwrap();
    let id = id_in(t);
    assert_eq!(
        first_line(&v),
        format!(":raised_hand: Request `{id}` (`db.wipe`) needs 2 approvals from role ops (not the requester). Approvers can click Approve, or type `approve {id}`.")
    );
    let (value, _) = approval_message(&h, id, "C1").await;
    approval_message(&h, id, "CAPPROVE").await;
    let head = format!(
        ":raised_hand: *Approval* for `db.wipe text=users` requested by <@U_ALICE> (via slack) — request `{id}`"
    );
    let link = format!("<https://youops.example/requests/{id}|details on the dashboard>");
    let expires = |text: &str| {
        let i = text.find("; expires <!date^").expect("the expiry");
        let j = text[i..].find('>').expect("its end") + i + 1;
        text[i..j].to_string()
    };
    let posted = h.fake.mentioning(&id.to_string());
    let prompt = posted
        .iter()
        .find(|c| c.channel() == "CAPPROVE")
        .expect("the prompt");
    let exp = expires(prompt.text());
    assert_eq!(
        prompt.text(),
        format!("{head}\nNeeds 2 approvals{exp}\n{link}")
    );

    // Bob types `approve ID`: one of two; the reply says so, once.
    let (_, v) = h.slash("U_BOB", &format!("approve {id}"), "trig-w2").await;
    assert_eq!(
        first_line(&v),
        format!(":white_check_mark: Approved by <@U_BOB> (1 of 2 approvals); request `{id}` (`db.wipe`) needs 1 more approval from role ops (not the requester).")
    );
    assert_eq!(h.exec.get(id).await.unwrap().state, State::PendingApproval);
    // The prompts still have their buttons, and say who approved so far.
    for channel in ["C1", "CAPPROVE"] {
        let upd = eventually("the prompt counting one approval", || async {
            h.fake.calls_of("chat.update").into_iter().find(|c| {
                c.channel() == channel
                    && c.text().starts_with(":raised_hand: *Approval*")
                    && c.text().contains("needs 1 more approval")
            })
        })
        .await;
        assert_eq!(
            upd.text(),
            format!("{head}\nApproved by <@U_BOB>; needs 1 more approval{exp}\n{link}")
        );
        assert!(
            upd.body.to_string().contains("youops_approve"),
            "still has buttons: {}",
            upd.body
        );
    }

    // Erin clicks Approve on the approvals-channel copy: it runs.
    let ts = posted_ts(&h, "CAPPROVE", &id.to_string());
    h.post(signed(
        "/slack/interactions",
        "application/x-www-form-urlencoded",
        block_actions_body(&h.fake, "U_ERIN", "CAPPROVE", &ts, "youops_approve", &value),
        now(),
        SECRET,
    ))
    .await;
    let done = h.exec.wait(id).await.unwrap();
    assert_eq!(done.state, State::Succeeded);
    for channel in ["C1", "CAPPROVE"] {
        let last = settled_prompt(&h, id, channel).await;
        assert_eq!(
            last.text(),
            format!("{head}\n:white_check_mark: Approved by <@U_BOB>, <@U_ERIN>\n{link}"),
            "{channel}"
        );
        assert_eq!(last.body["blocks"], serde_json::json!([]), "{channel}");
    }
    // The status message never said "approved" twice either.
    for c in h.fake.mentioning(&id.to_string()) {
        assert!(
            !c.text().contains("`approved`\n_approved by"),
            "{}",
            c.text()
        );
    }
    assert_no_stale_approval_text(&h, id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_approve_deny_cancel_and_retry_replies_say_what_happened_once() {
    let h = harness("").await;
    // approve: it runs.
    let (_, v) = h.slash("U_ALICE", "db.drop text=a", "trig-t1").await;
    let id = id_in(v["text"].as_str().unwrap());
    let (_, v) = h.slash("U_BOB", &format!("approve {id}"), "trig-t2").await;
    assert_eq!(
        first_line(&v),
        format!(":white_check_mark: Approved by <@U_BOB>; request `{id}` (`db.drop`) is starting.")
    );
    assert_eq!(
        v["text"].as_str().unwrap().lines().nth(1),
        Some(format!("<https://youops.example/requests/{id}|follow it on the dashboard>").as_str())
    );
    assert_eq!(h.exec.wait(id).await.unwrap().state, State::Succeeded);
    let last = settled_prompt(&h, id, "C1").await;
    assert!(
        last.text()
            .contains("\n:white_check_mark: Approved by <@U_BOB>\n"),
        "{}",
        last.text()
    );
    assert_eq!(last.body["blocks"], serde_json::json!([]));
    assert_no_stale_approval_text(&h, id);

    // deny, with a reason.
    let (_, v) = h.slash("U_ALICE", "db.drop text=b", "trig-t3").await;
    let id = id_in(v["text"].as_str().unwrap());
    approval_message(&h, id, "C1").await;
    let (_, v) = h
        .slash("U_BOB", &format!("deny {id} too risky"), "trig-t4")
        .await;
    assert_eq!(
        first_line(&v),
        format!(":no_entry_sign: Denied by <@U_BOB> (too risky); request `{id}` (`db.drop`) will not run.")
    );
    let last = settled_prompt(&h, id, "C1").await;
    assert!(
        last.text()
            .contains("\n:no_entry_sign: Denied by <@U_BOB>: too risky\n"),
        "{}",
        last.text()
    );
    assert_eq!(last.body["blocks"], serde_json::json!([]));

    // cancel, by the requester.
    let (_, v) = h.slash("U_ALICE", "db.drop text=c", "trig-t5").await;
    let id = id_in(v["text"].as_str().unwrap());
    approval_message(&h, id, "C1").await;
    let (_, v) = h.slash("U_ALICE", &format!("cancel {id}"), "trig-t6").await;
    assert_eq!(
        first_line(&v),
        format!(
            ":no_entry_sign: Cancelled by <@U_ALICE>; request `{id}` (`db.drop`) will not run."
        )
    );
    let last = settled_prompt(&h, id, "C1").await;
    assert!(
        last.text()
            .contains("\n:no_entry_sign: Cancelled by alice\n"),
        "{}",
        last.text()
    );
    assert_eq!(last.body["blocks"], serde_json::json!([]));
    assert_no_stale_approval_text(&h, id);

    // retry of a finished request: a new request, said once.
    let (_, v) = h.slash("U_ALICE", "echo text=again", "trig-t7").await;
    let old = id_in(v["text"].as_str().unwrap());
    h.exec.wait(old).await.unwrap();
    let (_, v) = h.slash("U_ALICE", &format!("retry {old}"), "trig-t8").await;
    let new = id_in(v["text"].as_str().unwrap());
    assert_ne!(new, old);
    assert_eq!(
        first_line(&v),
        format!(":ok: Accepted: request `{new}` (`echo`), a retry of `{old}`. Progress and the result will be posted in this channel.")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_from_other_frontends_can_be_approved_from_the_approvals_channel() {
    let h = harness("approvals_channel = \"CAPPROVE\"").await;
    let t = h
        .exec
        .submit(
            Submission::new("db.drop", Actor::new("cli", "dave"), Origin::new("cli"))
                .arg("text", "orders"),
        )
        .await
        .unwrap();
    let id = t.record.request.id;
    let (value, _) = approval_message(&h, id, "CAPPROVE").await;
    let ts = posted_ts(&h, "CAPPROVE", &id.to_string());
    let prompt = h.fake.mentioning(&id.to_string());
    assert!(prompt[0].text().contains("via cli"), "{}", prompt[0].text());
    // Deny it from Slack.
    h.post(signed(
        "/slack/interactions",
        "application/x-www-form-urlencoded",
        block_actions_body(&h.fake, "U_BOB", "CAPPROVE", &ts, "youops_deny", &value),
        now(),
        SECRET,
    ))
    .await;
    let done = h.exec.wait(id).await.unwrap();
    assert_eq!(done.state, State::Rejected);
    eventually("the prompt updated with who denied", || async {
        h.fake
            .calls_of("chat.update")
            .into_iter()
            .find(|c| c.channel() == "CAPPROVE" && c.text().contains("Denied by <@U_BOB>"))
    })
    .await;
    // Typed `approve ID` works too (here: it is no longer pending, and says so).
    let (_, v) = h.slash("U_BOB", &format!("approve {id}"), "trig-o1").await;
    assert!(v["text"].as_str().unwrap().contains("not pending"), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_output_shows_head_tail_and_a_link() {
    let h = harness("").await;
    let (_, v) = h.slash("U_ALICE", "big", "trig-big").await;
    let id = id_in(v["text"].as_str().unwrap());
    let done = h.exec.wait(id).await.unwrap();
    assert!(done.outcome.as_ref().unwrap().output.len() > 50_000);
    let result = eventually("the result", || async {
        h.fake
            .calls_of("chat.postMessage")
            .into_iter()
            .find(|c| c.text().contains("state: `succeeded`") && c.body.get("thread_ts").is_some())
    })
    .await;
    let t = result.text();
    assert!(
        t.contains("HEAD-MARKER") && t.contains("TAIL-MARKER"),
        "head and tail shown"
    );
    assert!(t.contains("characters omitted"), "the cut is said");
    assert!(
        t.contains(&format!("https://youops.example/requests/{id}")),
        "link to the full output"
    );
    assert!(
        t.chars().count() <= 4000,
        "within Slack's message text limit: {}",
        t.chars().count()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_is_honoured_and_the_retry_recorded() {
    let h = harness("").await;
    h.fake
        .state
        .rate_limit_next_post
        .store(true, Ordering::SeqCst);
    let (_, v) = h.slash("U_ALICE", "echo text=after-429", "trig-429").await;
    let id = id_in(v["text"].as_str().unwrap());
    let result = eventually("the result despite the 429", || async {
        h.fake
            .calls_of("chat.postMessage")
            .into_iter()
            .find(|c| c.text().contains("after-429") && c.body.get("thread_ts").is_some())
    })
    .await;
    assert!(result.text().contains("succeeded"));
    let calls = h.fake.calls();
    let limited = calls
        .iter()
        .position(|c| c.method == "chat.postMessage (429)")
        .expect("a 429 was served");
    assert!(
        calls[limited + 1..]
            .iter()
            .any(|c| c.method == "chat.postMessage"),
        "retried after"
    );
    let ev = h.exec.events(id).await.unwrap();
    let retry = ev
        .iter()
        .find_map(|e| match &e.body {
            EventBody::Notice { kind, message, .. } if kind == "chat_retry" => {
                Some(message.clone())
            }
            _ => None,
        })
        .expect("the retry is in the audit log");
    assert!(
        retry.contains("rate limited") && retry.contains("1000 ms"),
        "{retry}"
    );
    assert!(
        !format!("{ev:?}").contains(BOT_TOKEN),
        "no token in the audit log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_channel_pace_is_about_one_message_per_second() {
    // Two messages per second per channel: consecutive writes to one channel are
    // at least ~0.5 s apart, while another channel is not held up by it.
    let h = harness("max_messages_per_second_per_channel = 2").await;
    let mut ids = Vec::new();
    for i in 0..2 {
        let (_, v) = h
            .slash(
                "U_ALICE",
                &format!("echo text=paced-{i}"),
                &format!("trig-p{i}"),
            )
            .await;
        ids.push(id_in(v["text"].as_str().unwrap()));
    }
    for id in &ids {
        h.exec.wait(*id).await.unwrap();
    }
    eventually("both results", || async {
        let n = h
            .fake
            .calls_of("chat.postMessage")
            .into_iter()
            .filter(|c| c.text().contains("paced-") && c.body.get("thread_ts").is_some())
            .count();
        (n == 2).then_some(())
    })
    .await;
    let writes: Vec<Call> = h
        .fake
        .calls()
        .into_iter()
        .filter(|c| c.channel() == "C1" && c.method.starts_with("chat."))
        .collect();
    assert!(writes.len() >= 4, "{} writes", writes.len());
    // Slots are 500 ms apart when reserved; what the fake sees also varies by
    // each send's own delay (the first opens a connection), so a pair may land
    // a little closer, but never near back to back, and the whole span holds.
    for pair in writes.windows(2) {
        let gap = pair[1].at.duration_since(pair[0].at);
        assert!(
            gap >= Duration::from_millis(250),
            "two writes to C1 only {gap:?} apart"
        );
    }
    let span = writes[writes.len() - 1].at.duration_since(writes[0].at);
    let least = Duration::from_millis(500 * (writes.len() as u64 - 1) - 150);
    assert!(
        span >= least,
        "{} writes to C1 within {span:?} (at least {least:?} when paced)",
        writes.len()
    );
}

// ---------------------------------------------------------------------------
// Faults of the outside world: Slack answering 500, 429, hanging, dropping
// ---------------------------------------------------------------------------

/// The channel Slack misbehaves about.
const FAULTY: &str = "CF";

/// Short delivery timings (production defaults: 8 attempts, 500 ms, 10 s), so a
/// fault plays out in about a second. The timeout is long enough that a healthy
/// call on a loaded machine is never taken for a fault.
const FAST: &str = "max_delivery_attempts = 2\nretry_backoff = \"50ms\"\nrequest_timeout = \"3s\"";

/// [`FAST`] with a shorter timeout, for a Slack that hangs.
const FAST_HANG: &str =
    "max_delivery_attempts = 2\nretry_backoff = \"50ms\"\nrequest_timeout = \"1s\"";

/// The notices of `kind` on a request's audit trail.
async fn notices_on(h: &Harness, id: RequestId, kind: &str) -> Vec<String> {
    h.exec
        .events(id)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|e| match e.body {
            EventBody::Notice {
                kind: k, message, ..
            } if k == kind => Some(message),
            _ => None,
        })
        .collect()
}

/// Slack misbehaves (`fault`) on every call about channel [`FAULTY`] — or,
/// unless `lasting`, only on the first. A slash command there and one in C1
/// both run and are stored as succeeded whatever Slack does; C1's result
/// reaches Slack meanwhile, and the frontend stays ready. Returns the harness
/// and the faulty channel's request.
async fn slack_fault(fault: Fault, lasting: bool) -> (Harness, RequestId) {
    let h = harness(if fault == Fault::Hang {
        FAST_HANG
    } else {
        FAST
    })
    .await;
    h.fake.set_fault(fault, FAULTY, (!lasting).then_some(1));
    let t0 = Instant::now();
    let (status, v) = h
        .slash_in(FAULTY, "U_ALICE", "echo text=faulty-result", "CF-1")
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        t0.elapsed() < Duration::from_secs(3),
        "the ack (in the HTTP answer) took {:?}",
        t0.elapsed()
    );
    let id = id_in(v["text"].as_str().unwrap());
    // The result is in the audit log whatever Slack does.
    let rec = h.exec.wait(id).await.unwrap();
    assert_eq!(rec.state, State::Succeeded);
    assert_eq!(rec.outcome.as_ref().unwrap().output, "faulty-result");
    // The frontend did try to tell Slack, and Slack misbehaved.
    eventually("a call Slack misbehaved on", || async {
        (!h.fake.faulted().is_empty()).then_some(())
    })
    .await;
    // Meanwhile another channel works end to end.
    let (_, v) = h.slash("U_ALICE", "echo text=healthy-result", "C1-1").await;
    let other = id_in(v["text"].as_str().unwrap());
    let posted = eventually("the other channel's result", || async {
        h.fake.calls_of("chat.postMessage").into_iter().find(|c| {
            c.channel() == "C1"
                && c.text().contains("healthy-result")
                && c.body.get("thread_ts").is_some()
        })
    })
    .await;
    assert!(posted.text().contains("succeeded"), "{}", posted.text());
    for kind in ["chat_retry", "chat_failed", "chat_undelivered"] {
        assert!(
            notices_on(&h, other, kind).await.is_empty(),
            "{kind} on the healthy channel's request"
        );
    }
    assert!(h.host.readiness().iter().all(|(_, r)| *r), "still ready");
    (h, id)
}

/// The result of `id` reached Slack in the faulty channel's thread, once, and
/// exactly one retry is on the record (saying `why`); nothing failed.
async fn assert_recovered(h: &Harness, id: RequestId, why: &str) {
    let result = eventually("the result despite the fault", || async {
        h.fake.calls_of("chat.postMessage").into_iter().find(|c| {
            c.channel() == FAULTY
                && c.text().contains("faulty-result")
                && c.body.get("thread_ts").is_some()
        })
    })
    .await;
    assert!(result.text().contains("succeeded"), "{}", result.text());
    let retries = notices_on(h, id, "chat_retry").await;
    assert_eq!(retries.len(), 1, "{retries:?}");
    assert!(retries[0].contains(why), "{retries:?}");
    assert!(notices_on(h, id, "chat_failed").await.is_empty());
    assert!(notices_on(h, id, "chat_undelivered").await.is_empty());
    let statuses = h
        .fake
        .calls_of("chat.postMessage")
        .into_iter()
        .filter(|c| c.text().contains(&id.to_string()) && c.body.get("thread_ts").is_none())
        .count();
    assert_eq!(statuses, 1, "one status message, not one per attempt");
    assert!(h.exec.store().verify().await.unwrap().ok());
}

/// Slack kept failing: every route was tried, each retry and give-up is on the
/// record (saying `why`), the undelivered result is named, and no secret (bot
/// token, response_url) reached the audit log.
async fn assert_given_up(h: &Harness, id: RequestId, why: &str) {
    let undelivered = eventually("the chat_undelivered notice", || async {
        notices_on(h, id, "chat_undelivered").await.pop()
    })
    .await;
    assert!(
        undelivered.contains("succeeded") && undelivered.contains(FAULTY),
        "{undelivered}"
    );
    let retries = notices_on(h, id, "chat_retry").await;
    assert!(retries.len() >= 2, "{retries:?}");
    assert!(retries.iter().all(|r| r.contains(why)), "{retries:?}");
    let failed = notices_on(h, id, "chat_failed").await;
    for route in [
        "chat.postMessage (status)",
        "response_url (result)",
        "chat.postMessage (result, no status message)",
    ] {
        assert!(
            failed
                .iter()
                .any(|f| f.contains(route) && f.contains("failed 2 times")),
            "{route} gave up: {failed:?}"
        );
    }
    // Nothing about it got through (every call about CF was a fault).
    assert!(
        h.fake
            .calls()
            .iter()
            .filter(|c| c.text().contains("faulty-result"))
            .all(|c| c.method.ends_with("(fault)")),
        "{:?}",
        h.fake.calls()
    );
    let all = format!("{:?}", h.exec.events(id).await.unwrap());
    assert!(!all.contains(BOT_TOKEN), "no token in the audit log");
    assert!(
        !all.contains("/respond/"),
        "no response_url in the audit log"
    );
    assert!(h.exec.store().verify().await.unwrap().ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slack_answering_500_keeps_the_result_and_the_frontend_healthy() {
    // A passing 500: the retry posts the status, and the result follows.
    let (h, id) = slack_fault(Fault::Status(500), false).await;
    assert_recovered(&h, id, "HTTP 500").await;
    drop(h);
    // A lasting 500: bounded retries on every route, then the audit says so.
    let (h, id) = slack_fault(Fault::Status(500), true).await;
    assert_given_up(&h, id, "HTTP 500").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slack_answering_429_is_waited_out_per_retry_after() {
    let (h, id) = slack_fault(Fault::RateLimited(1), false).await;
    assert_recovered(&h, id, "rate limited (429)); retrying in 1000 ms").await;
    // The retry came no sooner than Retry-After said.
    let calls: Vec<Call> = h
        .fake
        .calls()
        .into_iter()
        .filter(|c| c.channel() == FAULTY)
        .collect();
    let limited = calls
        .iter()
        .position(|c| c.method.ends_with("(fault)"))
        .unwrap();
    let gap = calls[limited + 1].at.duration_since(calls[limited].at);
    assert!(gap >= Duration::from_millis(950), "retried after {gap:?}");
    drop(h);
    let (h, id) = slack_fault(Fault::RateLimited(1), true).await;
    assert_given_up(&h, id, "rate limited (429)); retrying in 1000 ms").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slack_hanging_is_cut_by_the_client_timeout_and_retried() {
    let (h, id) = slack_fault(Fault::Hang, false).await;
    assert_recovered(&h, id, "no answer within 1000 ms").await;
    drop(h);
    let (h, id) = slack_fault(Fault::Hang, true).await;
    let t0 = Instant::now();
    assert_given_up(&h, id, "no answer within 1000 ms").await;
    // Six attempts of at most 1 s each, and short backoffs; not the 10 s
    // production timeout.
    assert!(t0.elapsed() < Duration::from_secs(12), "{:?}", t0.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slack_dropping_connections_is_retried() {
    let (h, id) = slack_fault(Fault::Drop, false).await;
    assert_recovered(&h, id, "connection failed").await;
    drop(h);
    let (h, id) = slack_fault(Fault::Drop, true).await;
    assert_given_up(&h, id, "connection failed").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_whose_status_message_was_lost_reaches_the_thread_once_slack_recovers() {
    let h = harness(FAST).await;
    h.fake.set_fault(Fault::Status(500), FAULTY, None);
    // A mention (no response_url) of an op that runs until the gate opens.
    let res = h
        .post(signed(
            "/slack/events",
            "application/json",
            mention_body("U_ALICE", FAULTY, "gated", "Ev0FAULT1", "1700000100.000100"),
            now(),
            SECRET,
        ))
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let id = eventually("the request", || async {
        h.requests()
            .await
            .into_iter()
            .find(|r| r.request.op == "gated")
    })
    .await
    .request
    .id;
    // While it runs, Slack fails: the reply and the status message are given up.
    let failed = eventually("the status post given up", || async {
        let f = notices_on(&h, id, "chat_failed").await;
        f.iter()
            .any(|m| m.contains("chat.postMessage (status)"))
            .then_some(f)
    })
    .await;
    assert!(
        failed
            .iter()
            .any(|m| m.contains("chat.postMessage (reply)")),
        "{failed:?}"
    );
    assert_eq!(h.exec.get(id).await.unwrap().state, State::Running);
    // Slack recovers; the op ends: the result is posted in the mention's thread.
    h.fake.clear_fault();
    h.gate.store(true, Ordering::SeqCst);
    let result = eventually("the result in the thread", || async {
        h.fake
            .calls_of("chat.postMessage")
            .into_iter()
            .find(|c| c.channel() == FAULTY && c.text().contains("through the gate"))
    })
    .await;
    assert_eq!(result.body["thread_ts"], "1700000100.000100");
    assert!(result.text().contains("succeeded"), "{}", result.text());
    assert!(notices_on(&h, id, "chat_undelivered").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_slack_does_not_hold_up_shutdown_and_the_cut_delivery_is_audited() {
    // A client timeout long enough that the delivery is still hanging at shutdown.
    let h =
        harness("max_delivery_attempts = 2\nretry_backoff = \"50ms\"\nrequest_timeout = \"1s\"")
            .await;
    h.fake.set_fault(Fault::Hang, FAULTY, None);
    let (_, v) = h
        .slash_in(FAULTY, "U_ALICE", "echo text=cut-short", "CF-cut")
        .await;
    let id = id_in(v["text"].as_str().unwrap());
    assert_eq!(h.exec.wait(id).await.unwrap().state, State::Succeeded);
    eventually("a hanging call", || async {
        (!h.fake.faulted().is_empty()).then_some(())
    })
    .await;
    let t0 = Instant::now();
    h.shutdown.cancel();
    let tasks: Vec<_> = std::mem::take(&mut *h.tasks.lock().unwrap());
    for t in tasks {
        let r = tokio::time::timeout(Duration::from_secs(10), t)
            .await
            .expect("the frontend stops");
        assert!(matches!(r, Ok(Ok(()))), "{r:?}");
    }
    // One request timeout of grace (1 s), then the deliveries are cut and the
    // cut is audited: well short of every attempt on every route (6 s).
    assert!(
        t0.elapsed() < Duration::from_millis(4000),
        "stop took {:?} (a hanging Slack must not hold up shutdown)",
        t0.elapsed()
    );
    let failed = notices_on(&h, id, "chat_failed").await;
    assert!(
        failed.iter().any(|m| m.contains("abandoned at shutdown")),
        "{failed:?}"
    );
    let undelivered = notices_on(&h, id, "chat_undelivered").await;
    assert_eq!(undelivered.len(), 1, "{undelivered:?} {failed:?}");
    assert!(h.exec.store().verify().await.unwrap().ok());
}

// ---------------------------------------------------------------------------
// Socket Mode
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_mode_takes_slash_commands_over_the_websocket() {
    let h = harness(&format!(
        "transport = \"socket\"\napp_token = {APP_TOKEN:?}"
    ))
    .await;
    assert!(h.host.routes().is_empty(), "no HTTP routes in Socket Mode");
    eventually("the websocket to connect", || async {
        (h.fake.state.ws_connected.load(Ordering::SeqCst) > 0).then_some(())
    })
    .await;
    let payload = serde_json::json!({
        "token": "gIkuvaNzQIHg97ATvDxqgjtO", "team_id": "T1", "team_domain": "acme",
        "channel_id": "C1", "channel_name": "ops", "user_id": "U_ALICE", "user_name": "alice",
        "command": "/ops", "text": "echo text=over-socket", "api_app_id": "A1",
        "is_enterprise_install": "false",
        "response_url": format!("{}/respond/sock", h.fake.base),
        "trigger_id": "sock-trigger-1"
    });
    let envelope = serde_json::json!({"envelope_id": "env-1", "type": "slash_commands",
        "accepts_response_payload": true, "payload": payload});
    h.fake.ws_tx.send(envelope.to_string()).unwrap();
    let ack = eventually("the envelope ack", || async {
        h.fake
            .state
            .ws_in
            .lock()
            .unwrap()
            .iter()
            .find(|v| v["envelope_id"] == "env-1")
            .cloned()
    })
    .await;
    let text = ack["payload"]["text"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(text.contains("Accepted"), "{ack}");
    let id = id_in(&text);
    assert_eq!(h.exec.wait(id).await.unwrap().state, State::Succeeded);
    eventually("the result posted through the Web API", || async {
        h.fake
            .calls_of("chat.postMessage")
            .into_iter()
            .find(|c| c.text().contains("over-socket") && c.body.get("thread_ts").is_some())
    })
    .await;
    // A mention over the socket, delivered twice (Slack redelivers unacked envelopes): one run.
    for env in ["env-2", "env-3"] {
        let ev: serde_json::Value = serde_json::from_str(&mention_body(
            "U_ALICE",
            "C1",
            "echo text=sock-mention",
            "EvSOCK1",
            "1700000100.000001",
        ))
        .unwrap();
        let envelope = serde_json::json!({"envelope_id": env, "type": "events_api",
            "accepts_response_payload": false, "retry_attempt": 0, "retry_reason": "", "payload": ev});
        h.fake.ws_tx.send(envelope.to_string()).unwrap();
    }
    eventually("both envelopes acked", || async {
        let acks = h.fake.state.ws_in.lock().unwrap().clone();
        (acks.iter().any(|v| v["envelope_id"] == "env-2")
            && acks.iter().any(|v| v["envelope_id"] == "env-3"))
        .then_some(())
    })
    .await;
    let reply = eventually("the mention answered in its thread", || async {
        h.fake
            .calls_of("chat.postMessage")
            .into_iter()
            .find(|c| c.body["thread_ts"] == "1700000100.000001" && c.text().contains("Accepted"))
    })
    .await;
    let mid = id_in(reply.text());
    h.exec.wait(mid).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ops: Vec<_> = h
        .requests()
        .await
        .into_iter()
        .filter(|r| r.request.dedup_key.as_deref() == Some("slack:event:EvSOCK1"))
        .collect();
    assert_eq!(ops.len(), 1);
}

// ---------------------------------------------------------------------------
// The frontend conformance suite, through signed slash commands
// ---------------------------------------------------------------------------

struct SlackDriver {
    fake: FakeSlack,
}

#[async_trait]
impl Driver for SlackDriver {
    fn frontend(&self) -> Arc<dyn Frontend> {
        let t: toml::Table = self.config_section().parse().unwrap();
        Arc::new(SlackFrontend::from_config(&t).unwrap())
    }

    fn user_id(&self) -> String {
        "U_CONFORMANCE".into()
    }

    fn config_section(&self) -> String {
        section(&self.fake, "")
    }

    async fn deliver(
        &self,
        host: &FrontendHost,
        command: &str,
        delivery: &str,
    ) -> Result<(), String> {
        // Slack never redelivers a slash command; each invocation has a unique
        // trigger_id, which is the dedup key. A redelivery is the same request again.
        let body = slash_body(&self.fake, "U_CONFORMANCE", "C1", command, delivery);
        let res = post_to(
            host,
            signed(
                "/slack/commands",
                "application/x-www-form-urlencoded",
                body,
                now(),
                SECRET,
            ),
        )
        .await;
        if res.status() != StatusCode::OK {
            return Err(format!("slash command got {}", res.status()));
        }
        Ok(())
    }

    async fn rendered(&self, id: RequestId) -> Vec<State> {
        let mut out = Vec::new();
        for c in self.fake.calls() {
            if !(c.method == "chat.postMessage" || c.method == "chat.update") {
                continue;
            }
            let t = c.text();
            if !t.contains(&id.to_string()) {
                continue;
            }
            if let Some(i) = t.find("state: `") {
                let rest = &t[i + 8..];
                if let Some(end) = rest.find('`') {
                    if let Ok(s) = serde_json::from_value::<State>(serde_json::Value::String(
                        rest[..end].into(),
                    )) {
                        out.push(s);
                    }
                }
            }
        }
        out
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_suite_through_signed_slash_commands() {
    let driver = SlackDriver {
        fake: FakeSlack::start().await,
    };
    let report = conformance::run_suite(&driver).await.expect("conformance");
    assert_eq!(report.record.state, State::Succeeded);
    assert!(report.rendered.contains(&State::Succeeded));
    assert!(report
        .record
        .request
        .dedup_key
        .as_deref()
        .unwrap()
        .starts_with("slack:command:T1:"));
}

#[test]
fn manifest_and_config_check_are_exposed() {
    let t: toml::Table = "signing_secret = \"s\"\nbot_token = \"b\"\ncommand = \"/ops\""
        .parse()
        .unwrap();
    let m = youops_frontend_chat::manifest("https://ops.example.com", &t);
    assert!(m.contains("https://ops.example.com/slack/interactions"));
    let bad: toml::Table = "bot_token = \"\"\ntransport = \"socket\"".parse().unwrap();
    let errs = SlackFrontend::from_config(&bad).unwrap_err();
    assert_eq!(errs.len(), 3, "{errs:?}");
    let _unused: HashMap<(), ()> = HashMap::new();
}
