//! The Slack frontend: HTTP endpoints (slash commands, Events API,
//! interactivity) and Socket Mode, both turning `slack-morphism` payload types into
//! the chat logic's [`Inbound`] / [`Action`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http::StatusCode;
use slack_morphism::prelude::*;
use youops_core::frontend::{
    json_response, simple_response, Frontend, FrontendContext, FrontendError, HttpRequest,
    HttpResponse, HttpRoute,
};

use crate::adapter::{ActionKind, ChatMessage, MessageRef};
use crate::chat::{Action, ChatCore, ChatSettings, Inbound, InboundKind};
use crate::config::{SlackConfig, Transport};
use crate::signature::{self, form_field, parse_form};
use crate::slack_adapter::{build_client, SlackAdapter, SlackHttpClient};

/// Path of the slash command endpoint.
pub const COMMANDS_PATH: &str = "/slack/commands";
/// Path of the Events API endpoint.
pub const EVENTS_PATH: &str = "/slack/events";
/// Path of the interactivity endpoint.
pub const INTERACTIONS_PATH: &str = "/slack/interactions";

/// How long a slash command may take before Slack gets a "working on it" answer
/// (Slack gives up at 3 s).
const ACK_BUDGET: Duration = Duration::from_millis(2500);

/// The Slack frontend (name `slack`).
#[derive(Debug)]
pub struct SlackFrontend {
    config: SlackConfig,
    client: Arc<SlackHttpClient>,
    core: Arc<ChatCore>,
    ready: Arc<AtomicBool>,
}

impl SlackFrontend {
    /// The frontend name: `[frontends.slack]`, actors `slack:Uxxxx`.
    pub const NAME: &'static str = "slack";

    /// Build from the `[frontends.slack]` section; every config problem at once.
    pub fn from_config(section: &toml::Table) -> Result<SlackFrontend, Vec<String>> {
        let config = SlackConfig::from_table(section)?;
        let client = build_client(&config.api_base_url).map_err(|e| vec![e])?;
        let adapter = Arc::new(SlackAdapter::new(client.clone(), &config.bot_token.0));
        let core = Arc::new(ChatCore::new(
            ChatSettings {
                name: Self::NAME.into(),
                command: config.command.clone(),
                approvals_channel: config.approvals_channel.clone(),
                channel_interval: config.channel_interval(),
                max_attempts: config.max_delivery_attempts,
                backoff: config.retry_backoff,
                request_timeout: config.request_timeout,
                progress_every: config.progress_every,
                status_delay: config.status_delay,
            },
            adapter,
        ));
        Ok(SlackFrontend {
            config,
            client,
            core,
            ready: Arc::new(AtomicBool::new(false)),
        })
    }

    /// The validated config.
    pub fn config(&self) -> &SlackConfig {
        &self.config
    }

    /// The chat logic (for embedders adding transports).
    pub fn core(&self) -> &Arc<ChatCore> {
        &self.core
    }

    fn unauthorized(&self, path: &str, why: &signature::SignatureError) -> HttpResponse {
        // Audit-free: forged requests must not be able to fill the audit log.
        tracing::warn!(path, reason = %why, "refused a Slack request with a bad signature");
        simple_response(StatusCode::UNAUTHORIZED, "invalid Slack signature")
    }

    async fn commands(&self, ctx: &FrontendContext, body: &[u8]) -> HttpResponse {
        let form = parse_form(body);
        let ev = match command_event_from_form(&form) {
            Ok(ev) => ev,
            Err(missing) => {
                return simple_response(
                    StatusCode::BAD_REQUEST,
                    &format!("slash command payload lacks `{missing}`"),
                )
            }
        };
        let msg = self.ack_command(ctx, &ev).await;
        json_response(
            StatusCode::OK,
            &serde_json::json!({ "response_type": "ephemeral", "text": msg.text }),
        )
    }

    /// Answer a slash command within Slack's 3-second window; work that takes
    /// longer goes on, and its answer follows through `response_url`.
    async fn ack_command(&self, ctx: &FrontendContext, ev: &SlackCommandEvent) -> ChatMessage {
        SlackFrontendRef {
            core: self.core.clone(),
        }
        .ack(ctx, ev)
        .await
    }

    fn events(&self, ctx: &FrontendContext, req: &HttpRequest) -> HttpResponse {
        let body = req.body();
        let v: serde_json::Value = match serde_json::from_slice(body) {
            Ok(v) => v,
            Err(_) => return simple_response(StatusCode::BAD_REQUEST, "body is not JSON"),
        };
        match v.get("type").and_then(|t| t.as_str()) {
            Some("url_verification") => {
                let challenge = v.get("challenge").and_then(|c| c.as_str()).unwrap_or("");
                json_response(
                    StatusCode::OK,
                    &serde_json::json!({ "challenge": challenge }),
                )
            }
            Some("event_callback") => {
                let cb: SlackPushEventCallback = match serde_json::from_value(v) {
                    Ok(cb) => cb,
                    Err(e) => {
                        tracing::warn!(error = %e, "unreadable event_callback");
                        return simple_response(
                            StatusCode::BAD_REQUEST,
                            "unreadable event_callback",
                        );
                    }
                };
                let retry = req
                    .headers()
                    .get("x-slack-retry-num")
                    .and_then(|h| h.to_str().ok())
                    .map(|n| {
                        let reason = req
                            .headers()
                            .get("x-slack-retry-reason")
                            .and_then(|h| h.to_str().ok())
                            .unwrap_or("unknown");
                        format!("X-Slack-Retry-Num {n}, reason {reason}")
                    });
                self.push_event(ctx, &cb, retry);
                ok_empty()
            }
            _ => ok_empty(),
        }
    }

    fn push_event(
        &self,
        ctx: &FrontendContext,
        cb: &SlackPushEventCallback,
        retry: Option<String>,
    ) {
        if let Some(inb) = mention_inbound(cb, retry) {
            let core = self.core.clone();
            let ctx = ctx.clone();
            self.core
                .tasks()
                .spawn(async move { core.handle_mention(&ctx, inb).await });
        }
    }

    fn interactions(&self, ctx: &FrontendContext, body: &[u8]) -> HttpResponse {
        let form = parse_form(body);
        let Some(payload) = form_field(&form, "payload") else {
            return simple_response(StatusCode::BAD_REQUEST, "interaction lacks `payload`");
        };
        let ev: SlackInteractionEvent = match serde_json::from_str(payload) {
            Ok(ev) => ev,
            Err(e) => {
                tracing::debug!(error = %e, "interaction payload not understood");
                return ok_empty();
            }
        };
        self.interaction(ctx, &ev);
        ok_empty()
    }

    fn interaction(&self, ctx: &FrontendContext, ev: &SlackInteractionEvent) {
        for act in actions_from(ev) {
            let core = self.core.clone();
            let ctx = ctx.clone();
            self.core
                .tasks()
                .spawn(async move { core.handle_action(&ctx, act).await });
        }
    }

    async fn run_socket_mode(&self, ctx: &FrontendContext) -> Result<(), FrontendError> {
        let app_token = self
            .config
            .app_token
            .clone()
            .map(|s| s.0)
            .unwrap_or_default();
        let state = SocketState {
            core: self.core.clone(),
            ctx: ctx.clone(),
        };
        let env = Arc::new(
            SlackClientEventsListenerEnvironment::new(self.client.clone())
                .with_error_handler(socket_error_handler)
                .with_user_state(state),
        );
        let callbacks = SlackSocketModeListenerCallbacks::new()
            .with_command_events(socket_command)
            .with_push_events(socket_push)
            .with_interaction_events(socket_interaction);
        let listener = SlackClientSocketModeListener::new(
            &SlackClientSocketModeConfig::new()
                .with_max_connections_count(1)
                .with_initial_backoff_in_seconds(1),
            env,
            callbacks,
        );
        let token = SlackApiToken::new(SlackApiTokenValue(app_token));
        listener
            .listen_for(&token)
            .await
            .map_err(|e| FrontendError::Failed {
                frontend: Self::NAME.into(),
                message: format!(
                    "Socket Mode: apps.connections.open failed: {}",
                    crate::slack_adapter::classify(&e)
                ),
            })?;
        listener.start().await;
        ctx.shutdown.cancelled().await;
        listener.shutdown().await;
        Ok(())
    }
}

fn ok_empty() -> HttpResponse {
    http::Response::builder()
        .status(StatusCode::OK)
        .body(Bytes::new())
        .unwrap_or_else(|_| http::Response::new(Bytes::new()))
}

/// Build the `slack-morphism` slash command model from a form body; `Err` names
/// the first missing required field.
pub fn command_event_from_form(
    form: &[(String, String)],
) -> Result<SlackCommandEvent, &'static str> {
    let mut map = serde_json::Map::new();
    for key in [
        "team_id",
        "team_domain",
        "channel_id",
        "channel_name",
        "user_id",
        "command",
        "text",
        "response_url",
        "trigger_id",
    ] {
        if let Some(v) = form_field(form, key) {
            map.insert(key.into(), serde_json::Value::String(v.to_string()));
        }
    }
    for key in [
        "team_id",
        "channel_id",
        "user_id",
        "command",
        "response_url",
        "trigger_id",
    ] {
        if !map.contains_key(key) {
            return Err(key);
        }
    }
    serde_json::from_value(serde_json::Value::Object(map)).map_err(|_| "response_url")
}

/// Undo Slack's `&amp;` `&lt;` `&gt;` escaping of message text.
pub fn unescape(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// Strip leading `<@U...>` mentions (the bot's own) from a message.
pub fn strip_mentions(text: &str) -> &str {
    let mut t = text.trim_start();
    while let Some(rest) = t.strip_prefix("<@") {
        match rest.find('>') {
            Some(end) => t = rest[end + 1..].trim_start(),
            None => break,
        }
    }
    t
}

/// A slash command as an [`Inbound`]. Slack never redelivers a slash command,
/// but every invocation carries a unique `trigger_id`, which is the dedup key: a
/// replayed request (same bytes within the signature window) runs nothing twice.
pub fn command_inbound(ev: &SlackCommandEvent) -> Inbound {
    Inbound {
        user: ev.user_id.0.clone(),
        team: Some(ev.team_id.0.clone()),
        channel: ev.channel_id.0.clone(),
        text: unescape(ev.text.as_deref().unwrap_or("")),
        delivery: format!("slack:command:{}:{}", ev.team_id.0, ev.trigger_id.0),
        retry: None,
        kind: InboundKind::Command {
            command: ev.command.0.clone(),
            response_url: Some(ev.response_url.0.to_string()),
        },
    }
}

/// An `app_mention` event as an [`Inbound`]; the event id is the dedup key.
pub fn mention_inbound(cb: &SlackPushEventCallback, retry: Option<String>) -> Option<Inbound> {
    let SlackEventCallbackBody::AppMention(m) = &cb.event else {
        return None;
    };
    let text = m.content.text.as_deref().unwrap_or("");
    Some(Inbound {
        user: m.user.0.clone(),
        team: Some(cb.team_id.0.clone()),
        channel: m.channel.0.clone(),
        text: unescape(strip_mentions(text)),
        delivery: format!("slack:event:{}", cb.event_id.0),
        retry,
        kind: InboundKind::Mention {
            ts: m.origin.ts.0.clone(),
            thread_ts: m.origin.thread_ts.as_ref().map(|t| t.0.clone()),
        },
    })
}

/// Our Approve/Deny clicks in a `block_actions` interaction.
pub fn actions_from(ev: &SlackInteractionEvent) -> Vec<Action> {
    let SlackInteractionEvent::BlockActions(b) = ev else {
        return Vec::new();
    };
    let Some(user) = &b.user else {
        return Vec::new();
    };
    let message = match &b.container {
        SlackInteractionActionContainer::Message(m) => m
            .channel_id
            .as_ref()
            .or(b.channel.as_ref().map(|c| &c.id))
            .map(|ch| MessageRef {
                channel: ch.0.clone(),
                id: m.message_ts.0.clone(),
            }),
        _ => None,
    };
    let thread = b
        .message
        .as_ref()
        .and_then(|m| m.origin.thread_ts.as_ref())
        .map(|t| t.0.clone());
    b.actions
        .iter()
        .flatten()
        .filter_map(|a| {
            let kind = ActionKind::from_action_id(&a.action_id.0)?;
            Some(Action {
                kind,
                value: a.value.clone().unwrap_or_default(),
                user: user.id.0.clone(),
                message: message.clone(),
                thread: thread.clone(),
                response_url: b.response_url.as_ref().map(|u| u.0.to_string()),
            })
        })
        .collect()
}

#[async_trait]
impl Frontend for SlackFrontend {
    fn name(&self) -> &str {
        Self::NAME
    }

    async fn run(&self, ctx: FrontendContext) -> Result<(), FrontendError> {
        let ready = self.ready.clone();
        let http = self.config.transport == Transport::Http;
        let renderer = {
            let core = self.core.clone();
            let ctx = ctx.clone();
            async move {
                core.run_renderer(ctx, move || {
                    if http {
                        ready.store(true, Ordering::SeqCst)
                    }
                })
                .await
            }
        };
        match self.config.transport {
            Transport::Http => {
                renderer.await;
                Ok(())
            }
            Transport::Socket => {
                let r = tokio::spawn(renderer);
                self.ready.store(true, Ordering::SeqCst);
                let res = self.run_socket_mode(&ctx).await;
                self.ready.store(false, Ordering::SeqCst);
                ctx.shutdown.cancelled().await;
                let _ = r.await;
                res
            }
        }
    }

    fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    fn http_routes(&self) -> Vec<HttpRoute> {
        if self.config.transport == Transport::Socket {
            return Vec::new();
        }
        vec![
            HttpRoute::post(COMMANDS_PATH),
            HttpRoute::post(EVENTS_PATH),
            HttpRoute::post(INTERACTIONS_PATH),
        ]
    }

    async fn handle_http(&self, ctx: &FrontendContext, req: HttpRequest) -> HttpResponse {
        let path = req.uri().path().to_string();
        if !matches!(
            path.as_str(),
            COMMANDS_PATH | EVENTS_PATH | INTERACTIONS_PATH
        ) {
            return simple_response(StatusCode::NOT_FOUND, "not found");
        }
        if req.method() != http::Method::POST {
            return simple_response(StatusCode::METHOD_NOT_ALLOWED, "POST only");
        }
        // Slack checks the certificate of a slash command's URL now and then: a
        // POST of `ssl_check=1&token=…`, no command, signed or not. It asks for a
        // 200 and nothing else; nothing runs and nothing is recorded.
        if path == COMMANDS_PATH
            && req.body().windows(11).any(|w| w == b"ssl_check=1")
            && form_field(&parse_form(req.body()), "ssl_check") == Some("1")
        {
            return ok_empty();
        }
        let header = |n: &str| req.headers().get(n).and_then(|v| v.to_str().ok());
        if let Err(why) = signature::verify(
            &self.config.signing_secret.0,
            header("x-slack-request-timestamp"),
            header("x-slack-signature"),
            req.body(),
            chrono::Utc::now().timestamp(),
        ) {
            return self.unauthorized(&path, &why);
        }
        match path.as_str() {
            COMMANDS_PATH => self.commands(ctx, req.body()).await,
            EVENTS_PATH => self.events(ctx, &req),
            _ => self.interactions(ctx, req.body()),
        }
    }
}

// ---- Socket Mode glue: slack-morphism calls plain fns with a typed user state.

#[derive(Clone)]
struct SocketState {
    core: Arc<ChatCore>,
    ctx: FrontendContext,
}

async fn socket_state(states: &SlackClientEventsUserState) -> Option<SocketState> {
    let g = states.read().await;
    g.get_user_state::<SocketState>().cloned()
}

fn socket_error_handler(
    err: Box<dyn std::error::Error + Send + Sync>,
    _client: Arc<SlackHttpClient>,
    _states: SlackClientEventsUserState,
) -> http::StatusCode {
    tracing::warn!(error = %err, "Socket Mode listener error");
    http::StatusCode::OK
}

async fn socket_command(
    ev: SlackCommandEvent,
    _client: Arc<SlackHttpClient>,
    states: SlackClientEventsUserState,
) -> UserCallbackResult<SlackCommandEventResponse> {
    let text = match socket_state(&states).await {
        Some(s) => {
            let fe = SlackFrontendRef {
                core: s.core.clone(),
            };
            fe.ack(&s.ctx, &ev).await.text
        }
        None => ":warning: YouOps is starting".into(),
    };
    Ok(
        SlackCommandEventResponse::new(SlackMessageContent::new().with_text(text))
            .with_response_type(SlackMessageResponseType::Ephemeral),
    )
}

async fn socket_push(
    ev: SlackPushEventCallback,
    _client: Arc<SlackHttpClient>,
    states: SlackClientEventsUserState,
) -> UserCallbackResult<()> {
    if let (Some(s), Some(inb)) = (socket_state(&states).await, mention_inbound(&ev, None)) {
        let core = s.core.clone();
        let ctx = s.ctx.clone();
        s.core
            .tasks()
            .spawn(async move { core.handle_mention(&ctx, inb).await });
    }
    Ok(())
}

async fn socket_interaction(
    ev: SlackInteractionEvent,
    _client: Arc<SlackHttpClient>,
    states: SlackClientEventsUserState,
) -> UserCallbackResult<()> {
    if let Some(s) = socket_state(&states).await {
        for act in actions_from(&ev) {
            let core = s.core.clone();
            let ctx = s.ctx.clone();
            s.core
                .tasks()
                .spawn(async move { core.handle_action(&ctx, act).await });
        }
    }
    Ok(())
}

/// The slash-command acknowledgement logic, shared by HTTP and Socket Mode.
struct SlackFrontendRef {
    core: Arc<ChatCore>,
}

impl SlackFrontendRef {
    async fn ack(&self, ctx: &FrontendContext, ev: &SlackCommandEvent) -> ChatMessage {
        let inb = command_inbound(ev);
        let core = self.core.clone();
        let c = ctx.clone();
        let i = inb.clone();
        let mut work = tokio::spawn(async move { core.handle_inbound_for(&c, &i).await });
        match tokio::time::timeout(ACK_BUDGET, &mut work).await {
            Ok(Ok((Some(m), _))) => m,
            Ok(Ok((None, _))) => ChatMessage::text("Already received; nothing ran again."),
            Ok(Err(e)) => {
                tracing::error!(error = %e, "slash command handler failed");
                ChatMessage::text(":warning: YouOps hit an internal error; nothing was changed")
            }
            Err(_) => {
                let core = self.core.clone();
                let ctx = ctx.clone();
                let url = ev.response_url.0.to_string();
                self.core.tasks().spawn(async move {
                    if let Ok((Some(m), id)) = work.await {
                        let ad = core.adapter().clone();
                        // Retried like every other delivery; a give-up is an audit notice.
                        core.deliver(&ctx.executor, id, "-", "response_url (answer)", || {
                            let (ad, m, url) = (ad.clone(), m.clone(), url.clone());
                            async move { ad.respond(&url, &m, false).await }
                        })
                        .await;
                    }
                });
                ChatMessage::text(
                    ":hourglass_flowing_sand: Working on it; the answer follows here.",
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mentions_are_stripped_and_text_unescaped() {
        assert_eq!(
            strip_mentions("<@U0BOT> deploy env=prod"),
            "deploy env=prod"
        );
        assert_eq!(strip_mentions("  <@U0BOT>  <@U1>help"), "help");
        assert_eq!(strip_mentions("<@U0BOT"), "<@U0BOT");
        assert_eq!(unescape("a &lt;b&gt; &amp;amp;"), "a <b> &amp;");
    }

    #[test]
    fn a_slash_command_form_becomes_an_inbound_with_trigger_id_dedup() {
        let body = signature::encode_form(&[
            ("token", "legacy"),
            ("team_id", "T1"),
            ("team_domain", "acme"),
            ("channel_id", "C1"),
            ("channel_name", "ops"),
            ("user_id", "U1"),
            ("user_name", "alice"),
            ("command", "/ops"),
            ("text", "deploy env=prod"),
            ("api_app_id", "A1"),
            ("is_enterprise_install", "false"),
            ("response_url", "https://hooks.slack.com/commands/T1/1/abc"),
            ("trigger_id", "13345224609.738474920.8088930838d88f008e0"),
        ]);
        let ev = command_event_from_form(&parse_form(body.as_bytes())).unwrap();
        let inb = command_inbound(&ev);
        assert_eq!(inb.text, "deploy env=prod");
        assert_eq!(
            inb.delivery,
            "slack:command:T1:13345224609.738474920.8088930838d88f008e0"
        );
        assert_eq!(
            command_event_from_form(&parse_form(b"team_id=T1")).unwrap_err(),
            "channel_id"
        );
    }
}
