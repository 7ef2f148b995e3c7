//! The fake Slack: Web API, `response_url` posts and the Socket Mode
//! websocket on 127.0.0.1, recording every call and misbehaving on demand.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

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

use super::{APP_TOKEN, BOT_TOKEN};

#[derive(Debug, Clone)]
pub(crate) struct Call {
    pub(crate) method: String,
    pub(crate) body: serde_json::Value,
    pub(crate) at: Instant,
}

impl Call {
    pub(crate) fn text(&self) -> &str {
        self.body["text"].as_str().unwrap_or("")
    }
    pub(crate) fn channel(&self) -> &str {
        self.body["channel"].as_str().unwrap_or("")
    }
}

/// How the fake Slack misbehaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
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
pub(crate) struct FaultRule {
    pub(crate) fault: Fault,
    pub(crate) channel: String,
    pub(crate) left: Option<usize>,
}

#[derive(Default)]
pub(crate) struct FakeState {
    pub(crate) calls: Mutex<Vec<Call>>,
    pub(crate) ts: AtomicU64,
    pub(crate) rate_limit_next_post: AtomicBool,
    pub(crate) fault: Mutex<Option<FaultRule>>,
    /// Kill switches of the accepted connections, by peer address.
    pub(crate) conns: Mutex<HashMap<std::net::SocketAddr, Arc<AtomicBool>>>,
    pub(crate) ws_port: AtomicU64,
    pub(crate) ws_out: Mutex<Option<mpsc::UnboundedReceiver<String>>>,
    pub(crate) ws_in: Mutex<Vec<serde_json::Value>>,
    pub(crate) ws_connected: AtomicUsize,
}

#[derive(Clone)]
pub(crate) struct FakeSlack {
    pub(crate) state: Arc<FakeState>,
    pub(crate) base: String,
    pub(crate) ws_tx: mpsc::UnboundedSender<String>,
}

impl FakeSlack {
    pub(crate) async fn start() -> FakeSlack {
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

    pub(crate) fn api_url(&self) -> String {
        format!("{}/api/", self.base)
    }

    pub(crate) fn calls(&self) -> Vec<Call> {
        self.state.calls.lock().unwrap().clone()
    }

    pub(crate) fn calls_of(&self, method: &str) -> Vec<Call> {
        self.calls()
            .into_iter()
            .filter(|c| c.method == method)
            .collect()
    }

    /// How many `chat.postMessage` calls have `needle` in their text.
    pub(crate) fn posts_mentioning(&self, needle: &str) -> usize {
        self.calls_of("chat.postMessage")
            .iter()
            .filter(|c| c.text().contains(needle))
            .count()
    }

    pub(crate) fn mentioning(&self, needle: &str) -> Vec<Call> {
        self.calls()
            .into_iter()
            .filter(|c| c.text().contains(needle) || c.body.to_string().contains(needle))
            .collect()
    }

    /// Misbehave on calls about `channel` (`left`: only that many).
    pub(crate) fn set_fault(&self, fault: Fault, channel: &str, left: Option<usize>) {
        *self.state.fault.lock().unwrap() = Some(FaultRule {
            fault,
            channel: channel.into(),
            left,
        });
    }

    pub(crate) fn clear_fault(&self) {
        *self.state.fault.lock().unwrap() = None;
    }

    /// Calls that were answered with a fault (method `… (fault)`).
    pub(crate) fn faulted(&self) -> Vec<Call> {
        self.calls()
            .into_iter()
            .filter(|c| c.method.ends_with("(fault)"))
            .collect()
    }
}

impl FakeState {
    /// The fault for this call, if any (counting it down).
    pub(crate) fn fault_for(&self, channel: &str, reply_id: Option<&str>) -> Option<Fault> {
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
    pub(crate) async fn misbehave(
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
pub(crate) struct Peer(pub(crate) std::net::SocketAddr);

/// A TCP listener whose connections the fake can cut from a handler.
pub(crate) struct KillableListener {
    pub(crate) inner: tokio::net::TcpListener,
    pub(crate) state: Arc<FakeState>,
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
pub(crate) struct KillableStream {
    pub(crate) tcp: tokio::net::TcpStream,
    pub(crate) killed: Arc<AtomicBool>,
}

impl KillableStream {
    pub(crate) fn cut(&self) -> Option<std::io::Error> {
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

pub(crate) fn bearer_ok(headers: &HeaderMap, want: &str) -> bool {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == format!("Bearer {want}"))
}

pub(crate) fn slack_json(status: StatusCode, v: serde_json::Value) -> Response {
    (
        status,
        [("content-type", "application/json; charset=utf-8")],
        v.to_string(),
    )
        .into_response()
}

pub(crate) async fn api(
    AxState(st): AxState<Arc<FakeState>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    Path(method): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body_json: serde_json::Value = serde_json::from_slice(&body).unwrap_or_else(|_| {
        let pairs = youops_frontend_chat::slack::signature::parse_form(&body);
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

pub(crate) async fn respond(
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

pub(crate) async fn ws_link(
    AxState(st): AxState<Arc<FakeState>>,
    ws: WebSocketUpgrade,
) -> Response {
    ws.on_upgrade(move |socket| ws_session(st, socket))
}

pub(crate) async fn ws_session(st: Arc<FakeState>, mut socket: WebSocket) {
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
