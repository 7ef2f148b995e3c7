//! The [`ChatAdapter`] trait: what the chat logic needs from a chat system.
//!
//! The chat logic ([`crate::chat`]) decides *what* to say and *when* (acks,
//! status updated in place, results in threads, approval buttons, pacing and
//! retries); an adapter only knows *how* to say it on one system's wire. Slack is
//! the first adapter (`SlackAdapter`, in the Slack layer above this one);
//! Mattermost or Matrix would be another implementation of this trait plus
//! their own inbound parsing into [`crate::chat::Inbound`].

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;

/// Where a posted message lives, to update it later.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MessageRef {
    /// Channel (room) id.
    pub channel: String,
    /// Message id within the channel (Slack: `ts`).
    pub id: String,
}

/// What a button does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActionKind {
    /// Approve a pending request.
    Approve,
    /// Deny a pending request.
    Deny,
}

impl ActionKind {
    /// The wire action id.
    pub fn action_id(self) -> &'static str {
        match self {
            ActionKind::Approve => "youops_approve",
            ActionKind::Deny => "youops_deny",
        }
    }

    /// Parse a wire action id.
    pub fn from_action_id(s: &str) -> Option<ActionKind> {
        match s {
            "youops_approve" => Some(ActionKind::Approve),
            "youops_deny" => Some(ActionKind::Deny),
            _ => None,
        }
    }
}

/// A button under a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Button {
    /// What it does.
    pub kind: ActionKind,
    /// Its label.
    pub label: String,
    /// Opaque value carried back on click (request id and digest).
    pub value: String,
}

/// A message in chat-neutral form. `text` uses the common markdown subset
/// (`*bold*`, `` `code` ``, fenced code blocks, `<url|label>` links are rendered by
/// the adapter from [`ChatAdapter::link`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ChatMessage {
    /// The text.
    pub text: String,
    /// Buttons, if any.
    pub buttons: Vec<Button>,
}

impl ChatMessage {
    /// A text-only message.
    pub fn text(text: impl Into<String>) -> Self {
        ChatMessage {
            text: text.into(),
            buttons: Vec::new(),
        }
    }
}

/// How a chat call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChatErrorKind {
    /// Throttled: try again after the given time.
    RateLimited(Option<Duration>),
    /// The system is briefly unavailable (network, 5xx, `internal_error`): retry with backoff.
    Transient,
    /// Retrying cannot help (`channel_not_found`, `invalid_auth`, ...).
    Permanent,
}

/// A failed chat call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ChatError {
    /// Retry class.
    pub kind: ChatErrorKind,
    /// Short, secret-free description (e.g. the Slack error code).
    pub message: String,
}

impl ChatError {
    /// A permanent error.
    pub fn permanent(message: impl Into<String>) -> Self {
        ChatError {
            kind: ChatErrorKind::Permanent,
            message: message.into(),
        }
    }

    /// A transient error.
    pub fn transient(message: impl Into<String>) -> Self {
        ChatError {
            kind: ChatErrorKind::Transient,
            message: message.into(),
        }
    }
}

/// One chat system's outbound wire.
#[async_trait]
pub trait ChatAdapter: Send + Sync + fmt::Debug + 'static {
    /// Post a message to a channel, in a thread if `thread` is given. Returns where it is.
    async fn post(
        &self,
        channel: &str,
        thread: Option<&str>,
        msg: &ChatMessage,
    ) -> Result<MessageRef, ChatError>;

    /// Replace a posted message in place.
    async fn update(&self, at: &MessageRef, msg: &ChatMessage) -> Result<(), ChatError>;

    /// Show a message only to `user` in `channel`.
    async fn post_ephemeral(
        &self,
        channel: &str,
        user: &str,
        thread: Option<&str>,
        msg: &ChatMessage,
    ) -> Result<(), ChatError>;

    /// Answer through a per-interaction reply URL (Slack `response_url`).
    async fn respond(
        &self,
        reply_url: &str,
        msg: &ChatMessage,
        public: bool,
    ) -> Result<(), ChatError>;

    /// How to mention a user in text.
    fn mention(&self, user: &str) -> String;

    /// How to write a link in text.
    fn link(&self, url: &str, label: &str) -> String;

    /// The most text one message may carry (characters).
    fn max_text_len(&self) -> usize;
}
