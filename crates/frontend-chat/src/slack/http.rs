//! Slack's HTTP endpoints: every request signature-checked, then slash
//! commands answered inline, Events API callbacks and interactivity payloads
//! acknowledged at once and handled in the background.

use bytes::Bytes;
use http::StatusCode;
use slack_morphism::prelude::*;
use youops_core::frontend::{
    json_response, simple_response, FrontendContext, HttpRequest, HttpResponse,
};

use super::inbound::{actions_from, command_event_from_form, mention_inbound};
use super::signature::{self, form_field, parse_form};
use super::{ack, SlackFrontend, COMMANDS_PATH, EVENTS_PATH, INTERACTIONS_PATH};
use crate::chat::adapter::ChatMessage;

impl SlackFrontend {
    /// Serve one request on a Slack route.
    pub(super) async fn serve_http(&self, ctx: &FrontendContext, req: HttpRequest) -> HttpResponse {
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

    fn unauthorized(&self, path: &str, why: &signature::SignatureError) -> HttpResponse {
        // Audit-free: forged requests must not be able to fill the audit log.
        tracing::warn!(path, reason = %why, "refused a Slack request with a bad signature");
        simple_response(StatusCode::UNAUTHORIZED, "invalid Slack signature")
    }

    async fn commands(&self, ctx: &FrontendContext, body: &[u8]) -> HttpResponse {
        let form = parse_form(body);
        let ev = match command_event_from_form(&form) {
            Ok(ev) => ev,
            Err(e) => return simple_response(StatusCode::BAD_REQUEST, &e.to_string()),
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
        ack::ack(&self.chat, ctx, ev).await
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
            let chat = self.chat.clone();
            let ctx = ctx.clone();
            self.chat
                .tasks()
                .spawn(async move { chat.handle_mention(&ctx, inb).await });
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
            let chat = self.chat.clone();
            let ctx = ctx.clone();
            self.chat
                .tasks()
                .spawn(async move { chat.handle_action(&ctx, act).await });
        }
    }
}

fn ok_empty() -> HttpResponse {
    http::Response::builder()
        .status(StatusCode::OK)
        .body(Bytes::new())
        .unwrap_or_else(|_| http::Response::new(Bytes::new()))
}
