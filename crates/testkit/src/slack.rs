//! The fake Slack: Web API (`chat.postMessage`, `chat.update`,
//! `chat.postEphemeral`, `apps.connections.open`), `response_url` posts and the
//! Socket Mode websocket on 127.0.0.1, recording every call and misbehaving on
//! demand.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::connect_info::ConnectInfo;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State as AxState};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, post};
use axum::Router;
use bytes::Bytes;
use tokio::sync::mpsc;

use crate::fault::{serve_killable, Conns, Fault, Observer, Peer};
use crate::github::percent_decode;

/// The bot token [`SlackOptions::default`] expects.
pub const BOT_TOKEN: &str = "xoxb-test-token";
/// The app-level (Socket Mode) token [`SlackOptions::default`] expects.
pub const APP_TOKEN: &str = "xapp-test-token";

/// One call to the fake: a Web API method or a `response_url` post.
#[derive(Debug, Clone)]
pub struct Call {
    /// The Web API method, `response_url/{id}`, or either with ` (fault)` or
    /// ` (429)` when it was answered so.
    pub method: String,
    /// The body as JSON (a form-encoded one as an object of its fields; `null`
    /// for a `response_url` post that is not JSON).
    pub body: serde_json::Value,
    /// When the fake recorded it.
    pub at: Instant,
}

impl Call {
    /// The `text` of the body (empty when there is none).
    pub fn text(&self) -> &str {
        self.body["text"].as_str().unwrap_or("")
    }
    /// The `channel` of the body (empty when there is none).
    pub fn channel(&self) -> &str {
        self.body["channel"].as_str().unwrap_or("")
    }
}

/// A fault on every call about one channel: Web API calls whose `channel` is
/// it, and `response_url` posts whose id starts with `{channel}-`. `left`:
/// only that many calls, then Slack is fine again.
#[derive(Debug, Clone)]
pub struct FaultRule {
    /// How the calls fail.
    pub fault: Fault,
    /// The channel the calls are about.
    pub channel: String,
    /// How many calls the fault still applies to (`None`: all).
    pub left: Option<usize>,
}

/// How the fake is set up.
#[derive(Clone)]
pub struct SlackOptions {
    /// The `Bearer` tokens the Web API (`bot`) and `apps.connections.open`
    /// (`app`) accept; `None`: any token, or none.
    pub bot_token: Option<String>,
    /// The `Bearer` token `apps.connections.open` accepts (`None`: any, or
    /// none).
    pub app_token: Option<String>,
    /// Keep every call for [`FakeSlack::calls`] (a long soak counts them
    /// through `observe` instead).
    pub record: bool,
    /// Called with every call.
    pub observe: Option<Observer<Call>>,
}

impl Default for SlackOptions {
    fn default() -> Self {
        SlackOptions {
            bot_token: Some(BOT_TOKEN.into()),
            app_token: Some(APP_TOKEN.into()),
            record: true,
            observe: None,
        }
    }
}

impl std::fmt::Debug for SlackOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlackOptions")
            .field("bot_token", &self.bot_token)
            .field("app_token", &self.app_token)
            .field("record", &self.record)
            .field("observe", &self.observe.is_some())
            .finish()
    }
}

/// What the fake holds and how it is set up, shared by its handlers and
/// [`FakeSlack`].
#[derive(Debug, Default)]
pub struct FakeState {
    /// How the fake is set up.
    pub options: SlackOptions,
    /// The recorded calls, oldest first (when [`SlackOptions::record`]).
    pub calls: Mutex<Vec<Call>>,
    /// The counter behind the message timestamps the fake hands out
    /// (`1700000000.NNNNNN`).
    pub ts: AtomicU64,
    /// Answer the next `chat.postMessage` with `429` (see
    /// [`FakeSlack::rate_limit_next_post`]).
    pub rate_limit_next_post: AtomicBool,
    /// The fault rule in force, if any.
    pub fault: Mutex<Option<FaultRule>>,
    /// The accepted connections, so that a [`Fault::Drop`] can cut one.
    pub conns: Conns,
    /// The port `apps.connections.open` points the Socket Mode websocket at
    /// (the fake's own).
    pub ws_port: AtomicU64,
    /// The receiving end of [`FakeSlack::ws_tx`], taken by the websocket
    /// session while one is connected.
    pub ws_out: Mutex<Option<mpsc::UnboundedReceiver<String>>>,
    /// The JSON frames the client sent up the websocket (its acks), oldest
    /// first.
    pub ws_in: Mutex<Vec<serde_json::Value>>,
    /// How many websocket sessions have been opened (counted once the `hello`
    /// is sent).
    pub ws_connected: AtomicUsize,
}

/// A running fake Slack; its clones share it.
#[derive(Debug, Clone)]
pub struct FakeSlack {
    /// What the fake holds, shared with its handlers.
    pub state: Arc<FakeState>,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// Frames to send down the Socket Mode websocket.
    pub ws_tx: mpsc::UnboundedSender<String>,
}

impl FakeSlack {
    /// On 127.0.0.1, with [`SlackOptions::default`].
    pub async fn start() -> FakeSlack {
        Self::start_with(SlackOptions::default()).await
    }

    /// On 127.0.0.1, set up by `options`.
    pub async fn start_with(options: SlackOptions) -> FakeSlack {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::serve(listener, options)
    }

    /// On `listener` (served on the current runtime).
    pub fn serve(listener: tokio::net::TcpListener, options: SlackOptions) -> FakeSlack {
        let (ws_tx, ws_rx) = mpsc::unbounded_channel();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(FakeState {
            options,
            ts: AtomicU64::new(100),
            ws_port: AtomicU64::new(addr.port() as u64),
            ws_out: Mutex::new(Some(ws_rx)),
            ..Default::default()
        });
        let app = Router::new()
            .route("/api/{method}", post(api))
            .route("/respond/{id}", post(respond))
            .route("/link/", any(ws_link))
            .with_state(state.clone());
        serve_killable(listener, state.conns.clone(), app);
        FakeSlack {
            state,
            base: format!("http://{addr}"),
            ws_tx,
        }
    }

    /// The Web API's base URL, `{base}/api/`.
    pub fn api_url(&self) -> String {
        format!("{}/api/", self.base)
    }

    /// The recorded calls, oldest first.
    pub fn calls(&self) -> Vec<Call> {
        self.state.calls.lock().unwrap().clone()
    }

    /// The recorded calls whose method is exactly `method`.
    pub fn calls_of(&self, method: &str) -> Vec<Call> {
        self.calls()
            .into_iter()
            .filter(|c| c.method == method)
            .collect()
    }

    /// How many `chat.postMessage` calls have `needle` in their text.
    pub fn posts_mentioning(&self, needle: &str) -> usize {
        self.calls_of("chat.postMessage")
            .iter()
            .filter(|c| c.text().contains(needle))
            .count()
    }

    /// The recorded calls with `needle` in their text or anywhere in their
    /// body.
    pub fn mentioning(&self, needle: &str) -> Vec<Call> {
        self.calls()
            .into_iter()
            .filter(|c| c.text().contains(needle) || c.body.to_string().contains(needle))
            .collect()
    }

    /// Misbehave on calls about `channel` (`left`: only that many).
    pub fn set_fault(&self, fault: Fault, channel: &str, left: Option<usize>) {
        *self.state.fault.lock().unwrap() = Some(FaultRule {
            fault,
            channel: channel.into(),
            left,
        });
    }

    /// Stop misbehaving: drop the fault rule.
    pub fn clear_fault(&self) {
        *self.state.fault.lock().unwrap() = None;
    }

    /// Answer the next `chat.postMessage` with `429`, `Retry-After: 1`.
    pub fn rate_limit_next_post(&self) {
        self.state
            .rate_limit_next_post
            .store(true, Ordering::SeqCst);
    }

    /// Calls that were answered with a fault (method `… (fault)`).
    pub fn faulted(&self) -> Vec<Call> {
        self.calls()
            .into_iter()
            .filter(|c| c.method.ends_with("(fault)"))
            .collect()
    }
}

impl FakeState {
    /// Keep (when recording) and show (to the observer) a call.
    pub fn record(&self, method: String, body: serde_json::Value) {
        let call = Call {
            method,
            body,
            at: Instant::now(),
        };
        if let Some(observe) = &self.options.observe {
            observe(&call);
        }
        if self.options.record {
            self.calls.lock().unwrap().push(call);
        }
    }

    /// The fault for this call, if any (counting it down).
    pub fn fault_for(&self, channel: &str, reply_id: Option<&str>) -> Option<Fault> {
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
    pub async fn misbehave(
        &self,
        fault: Fault,
        method: &str,
        body: serde_json::Value,
        peer: Peer,
    ) -> Response {
        self.record(format!("{method} (fault)"), body);
        match fault {
            Fault::Status(s) => (
                StatusCode::from_u16(s).unwrap(),
                [("content-type", "text/html")],
                "<html><body><h1>Internal Server Error</h1></body></html>",
            )
                .into_response(),
            Fault::RateLimited(secs) => rate_limited(secs),
            Fault::Hang => std::future::pending().await,
            Fault::Drop => {
                // Nothing of the answer is written: the connection's next
                // write fails and hyper closes it.
                self.conns.cut(peer);
                StatusCode::OK.into_response()
            }
        }
    }
}

/// Slack's rate limit: `429` with `Retry-After: <seconds>` and
/// `{"ok":false,"error":"ratelimited"}`.
fn rate_limited(secs: u64) -> Response {
    (
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
        .into_response()
}

fn bearer_ok(headers: &HeaderMap, want: Option<&str>) -> bool {
    let Some(want) = want else { return true };
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == format!("Bearer {want}"))
}

fn slack_json(v: serde_json::Value) -> Response {
    (
        StatusCode::OK,
        [("content-type", "application/json; charset=utf-8")],
        v.to_string(),
    )
        .into_response()
}

/// A form-encoded body as a JSON object of its fields.
fn form_json(body: &[u8]) -> serde_json::Value {
    let text = String::from_utf8_lossy(body);
    let pairs = text.split('&').filter(|kv| !kv.is_empty()).map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        let de = |s: &str| percent_decode(&s.replace('+', " "));
        (de(k), serde_json::Value::String(de(v)))
    });
    serde_json::Value::Object(pairs.collect())
}

fn next_ts(st: &FakeState) -> String {
    format!("1700000000.{:06}", st.ts.fetch_add(1, Ordering::SeqCst))
}

async fn api(
    AxState(st): AxState<Arc<FakeState>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    Path(method): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body_json: serde_json::Value =
        serde_json::from_slice(&body).unwrap_or_else(|_| form_json(&body));
    if method == "apps.connections.open" {
        if !bearer_ok(&headers, st.options.app_token.as_deref()) {
            return slack_json(serde_json::json!({"ok": false, "error": "invalid_auth"}));
        }
        let port = st.ws_port.load(Ordering::SeqCst);
        return slack_json(
            serde_json::json!({"ok": true, "url": format!("ws://127.0.0.1:{port}/link/?ticket=t-1&app_id=A1")}),
        );
    }
    if !bearer_ok(&headers, st.options.bot_token.as_deref()) {
        return slack_json(serde_json::json!({"ok": false, "error": "not_authed"}));
    }
    if method.starts_with("chat.") {
        let channel = body_json["channel"].as_str().unwrap_or("");
        if let Some(f) = st.fault_for(channel, None) {
            return st.misbehave(f, &method, body_json, peer).await;
        }
    }
    if method == "chat.postMessage" && st.rate_limit_next_post.swap(false, Ordering::SeqCst) {
        st.record(format!("{method} (429)"), body_json);
        return rate_limited(1);
    }
    st.record(method.clone(), body_json.clone());
    let channel = body_json["channel"].as_str().unwrap_or("C0").to_string();
    if method == "chat.postMessage" && channel.starts_with("CPRIV") {
        // The bot was never invited to this private channel.
        return slack_json(serde_json::json!({"ok": false, "error": "not_in_channel"}));
    }
    let text = body_json["text"].clone();
    slack_json(match method.as_str() {
        "chat.postMessage" => {
            let ts = next_ts(&st);
            let mut message = serde_json::json!({
                "type": "message", "subtype": "bot_message", "text": text, "ts": ts,
                "user": "U0BOT", "bot_id": "B0BOT", "app_id": "A1", "team": "T1"
            });
            if let Some(t) = body_json.get("thread_ts") {
                message["thread_ts"] = t.clone();
            }
            serde_json::json!({"ok": true, "channel": channel, "ts": ts, "message": message})
        }
        "chat.update" => {
            serde_json::json!({"ok": true, "channel": channel, "ts": body_json["ts"], "text": text,
                "message": {"text": text, "user": "U0BOT", "bot_id": "B0BOT"}})
        }
        "chat.postEphemeral" => serde_json::json!({"ok": true, "message_ts": next_ts(&st)}),
        _ => serde_json::json!({"ok": false, "error": "unknown_method"}),
    })
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
    st.record(format!("response_url/{id}"), body);
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
