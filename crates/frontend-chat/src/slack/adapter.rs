//! [`ChatAdapter`] for Slack, on the `slack-morphism` Web API client.

use std::sync::Arc;

use async_trait::async_trait;
use slack_morphism::errors::SlackClientError;
use slack_morphism::prelude::*;

use crate::chat::adapter::{
    ActionKind, ChatAdapter, ChatError, ChatErrorKind, ChatMessage, MessageRef,
};
use crate::ChatFrontendError;

/// The `slack-morphism` client type the frontend uses.
pub type SlackHttpClient = SlackClient<SlackClientHyperHttpsConnector>;

/// Slack's limit for the text of one section block.
pub(crate) const SECTION_TEXT_LIMIT: usize = 3000;

/// Build the production client for an API base URL (`https://slack.com/api` or a
/// test server's `http://127.0.0.1:PORT/api`).
pub fn build_client(api_base_url: &str) -> Result<Arc<SlackHttpClient>, ChatFrontendError> {
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_native_roots()
        .map_err(|e| {
            ChatFrontendError::Client(format!(
                "no TLS root certificates for the Slack client: {e}"
            ))
        })?
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .build();
    let connector =
        SlackClientHyperConnector::with_connector(https).with_slack_api_url(api_base_url);
    Ok(Arc::new(SlackClient::new(connector)))
}

/// Slack's outbound wire: `chat.postMessage`, `chat.update`, `chat.postEphemeral`
/// and `response_url` posts, with the bot token.
#[derive(Clone)]
pub struct SlackAdapter {
    client: Arc<SlackHttpClient>,
    token: SlackApiToken,
}

impl std::fmt::Debug for SlackAdapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlackAdapter").finish_non_exhaustive()
    }
}

impl SlackAdapter {
    /// An adapter posting with `bot_token` through `client`.
    pub fn new(client: Arc<SlackHttpClient>, bot_token: &str) -> Self {
        SlackAdapter {
            client,
            token: SlackApiToken::new(SlackApiTokenValue(bot_token.to_string())),
        }
    }

    /// The underlying client.
    pub fn client(&self) -> &Arc<SlackHttpClient> {
        &self.client
    }
}

/// Block Kit for a chat-neutral message: the text in section blocks (each at
/// most 3000 characters) and buttons in an actions block.
pub(crate) fn blocks(msg: &ChatMessage) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    let mut rest = msg.text.as_str();
    while !rest.is_empty() {
        let mut cut = rest.len().min(SECTION_TEXT_LIMIT);
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        if cut < rest.len() {
            if let Some(nl) = rest[..cut].rfind('\n') {
                if nl > 0 {
                    cut = nl;
                }
            }
        }
        out.push(serde_json::json!({
            "type": "section",
            "text": { "type": "mrkdwn", "text": &rest[..cut] }
        }));
        rest = rest[cut..].trim_start_matches('\n');
    }
    if !msg.buttons.is_empty() {
        let elements: Vec<serde_json::Value> = msg
            .buttons
            .iter()
            .map(|b| {
                serde_json::json!({
                    "type": "button",
                    "action_id": b.kind.action_id(),
                    "text": { "type": "plain_text", "text": b.label },
                    "value": b.value,
                    "style": match b.kind { ActionKind::Approve => "primary", ActionKind::Deny => "danger" },
                })
            })
            .collect();
        out.push(serde_json::json!({ "type": "actions", "block_id": "youops_decision", "elements": elements }));
    }
    out
}

fn content(msg: &ChatMessage) -> SlackMessageContent {
    let mut c = SlackMessageContent::new().with_text(msg.text.clone());
    if !msg.buttons.is_empty() {
        match serde_json::from_value::<Vec<SlackBlock>>(serde_json::Value::Array(blocks(msg))) {
            Ok(b) => c = c.with_blocks(b),
            Err(e) => tracing::error!(error = %e, "could not build Slack blocks"),
        }
    }
    c
}

/// The content of a `chat.update`: always with `blocks`. Slack keeps a
/// message's previous blocks when an update leaves the field out, so a prompt
/// updated with text alone would still show its old text and its Approve /
/// Deny buttons; an empty array removes them and the text shows.
fn update_content(msg: &ChatMessage) -> SlackMessageContent {
    let c = content(msg);
    if c.blocks.is_some() {
        c
    } else {
        c.with_blocks(Vec::new())
    }
}

/// Classify a `slack-morphism` error for the retry policy.
pub(crate) fn classify(e: &SlackClientError) -> ChatError {
    match e {
        SlackClientError::RateLimitError(r) => ChatError {
            kind: ChatErrorKind::RateLimited(r.retry_after),
            message: "rate limited (429)".into(),
        },
        SlackClientError::ApiError(a) => {
            let kind = match a.code.as_str() {
                "ratelimited" | "rate_limited" => ChatErrorKind::RateLimited(None),
                "internal_error" | "fatal_error" | "service_unavailable" | "request_timeout" => {
                    ChatErrorKind::Transient
                }
                _ => ChatErrorKind::Permanent,
            };
            ChatError {
                kind,
                message: a.code.clone(),
            }
        }
        SlackClientError::HttpError(h) => {
            let s = h.status_code;
            ChatError {
                kind: if s.is_server_error() || s == http::StatusCode::REQUEST_TIMEOUT {
                    ChatErrorKind::Transient
                } else {
                    ChatErrorKind::Permanent
                },
                message: format!("HTTP {s}"),
            }
        }
        // Connection refused, reset or closed before an answer: retry. The
        // message names the cause only, never a URL (a `response_url` is a
        // capability) nor a response body.
        SlackClientError::HttpProtocolError(p) => ChatError::transient(match &p.cause {
            Some(c) => format!("connection failed: {}", chain(c.as_ref())),
            None => "connection failed".into(),
        }),
        SlackClientError::ProtocolError(p) => {
            ChatError::transient(format!("unreadable answer: {}", p.json_error))
        }
        SlackClientError::EndOfStream(_) => ChatError::transient("connection closed"),
        other => ChatError::transient(format!("{other}")),
    }
}

/// An error and its sources, `: `-separated.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        let t = s.to_string();
        if !out.contains(&t) {
            out.push_str(": ");
            out.push_str(&t);
        }
        src = s.source();
    }
    out
}

#[async_trait]
impl ChatAdapter for SlackAdapter {
    async fn post(
        &self,
        channel: &str,
        thread: Option<&str>,
        msg: &ChatMessage,
    ) -> Result<MessageRef, ChatError> {
        let session = self.client.open_session(&self.token);
        let mut req = SlackApiChatPostMessageRequest::new(channel.into(), content(msg));
        if let Some(t) = thread {
            req = req.with_thread_ts(t.into());
        }
        let res = session
            .chat_post_message(&req)
            .await
            .map_err(|e| classify(&e))?;
        Ok(MessageRef {
            channel: res.channel.0,
            id: res.ts.0,
        })
    }

    async fn update(&self, at: &MessageRef, msg: &ChatMessage) -> Result<(), ChatError> {
        let session = self.client.open_session(&self.token);
        let req = SlackApiChatUpdateRequest::new(
            at.channel.clone().into(),
            update_content(msg),
            at.id.clone().into(),
        );
        session.chat_update(&req).await.map_err(|e| classify(&e))?;
        Ok(())
    }

    async fn post_ephemeral(
        &self,
        channel: &str,
        user: &str,
        thread: Option<&str>,
        msg: &ChatMessage,
    ) -> Result<(), ChatError> {
        let session = self.client.open_session(&self.token);
        let mut req =
            SlackApiChatPostEphemeralRequest::new(channel.into(), user.into(), content(msg));
        if let Some(t) = thread {
            req = req.with_thread_ts(t.into());
        }
        session
            .chat_post_ephemeral(&req)
            .await
            .map_err(|e| classify(&e))?;
        Ok(())
    }

    async fn respond(
        &self,
        reply_url: &str,
        msg: &ChatMessage,
        public: bool,
    ) -> Result<(), ChatError> {
        let url = serde_json::from_value::<SlackResponseUrl>(serde_json::Value::String(
            reply_url.to_string(),
        ))
        .map_err(|_| ChatError::permanent("malformed response_url"))?
        .0;
        let body = SlackCommandEventResponse::new(content(msg)).with_response_type(if public {
            SlackMessageResponseType::InChannel
        } else {
            SlackMessageResponseType::Ephemeral
        });
        let span = tracing::debug_span!("slack response_url");
        let ctx = SlackClientApiCallContext {
            rate_control_params: None,
            token: None,
            tracing_span: &span,
            is_sensitive_url: true,
        };
        let _: serde_json::Value = self
            .client
            .http_api
            .connector
            .http_post_uri(url, &body, ctx)
            .await
            .map_err(|e| classify(&e))?;
        Ok(())
    }

    fn mention(&self, user: &str) -> String {
        format!("<@{user}>")
    }

    fn link(&self, url: &str, label: &str) -> String {
        format!("<{url}|{label}>")
    }

    fn max_text_len(&self) -> usize {
        3900
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::adapter::Button;

    #[test]
    fn long_text_is_split_into_section_blocks_within_the_limit() {
        let text = "line of output\n".repeat(500);
        let msg = ChatMessage {
            text: text.clone(),
            buttons: vec![Button {
                kind: ActionKind::Approve,
                label: "Approve".into(),
                value: "x".into(),
            }],
        };
        let b = blocks(&msg);
        assert!(b.len() >= 3);
        let mut joined = String::new();
        for s in &b[..b.len() - 1] {
            let t = s["text"]["text"].as_str().unwrap();
            assert!(t.chars().count() <= SECTION_TEXT_LIMIT);
            joined.push_str(t);
            joined.push('\n');
        }
        assert_eq!(joined.trim_end(), text.trim_end());
        assert_eq!(b.last().unwrap()["type"], "actions");
        // And the slack-morphism model accepts them.
        let parsed: Vec<SlackBlock> = serde_json::from_value(serde_json::Value::Array(b)).unwrap();
        assert!(!parsed.is_empty());
    }

    #[test]
    fn an_update_without_buttons_clears_the_previous_blocks() {
        // Slack keeps the previous blocks (text and buttons) of a message when
        // `chat.update` leaves `blocks` out.
        let req = SlackApiChatUpdateRequest::new(
            "C1".into(),
            update_content(&ChatMessage::text("Approved by <@U_BOB>")),
            "1.2".into(),
        );
        let v = serde_json::to_value(&req).unwrap();
        assert_eq!(v["text"], "Approved by <@U_BOB>");
        assert_eq!(v["blocks"], serde_json::json!([]));
        // With buttons, the blocks carry text and buttons.
        let msg = ChatMessage {
            text: "Needs 1 approval".into(),
            buttons: vec![Button {
                kind: ActionKind::Approve,
                label: "Approve".into(),
                value: "x".into(),
            }],
        };
        let v = serde_json::to_value(update_content(&msg)).unwrap();
        assert_eq!(v["blocks"][1]["type"], "actions");
    }
}
