//! The crate's error type and its stable codes.
//!
//! [`ChatFrontendError`] gathers what a caller of this crate can see fail: a
//! chat call ([`ChatError`]), a refused request signature ([`SignatureError`]),
//! the config, the Web API client, an unreadable slash command payload and the
//! Socket Mode connection. The specific types stay as they are (their texts are
//! HTTP bodies and user replies) and convert into it with `?`.

use youops_core::config::ConfigIssue;

use crate::chat::adapter::{ChatError, ChatErrorKind};
use crate::slack::signature::SignatureError;

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChatFrontendError {
    /// A chat call failed (post, update, ephemeral, reply URL).
    #[error(transparent)]
    Chat(#[from] ChatError),
    /// A request's signature was refused.
    #[error(transparent)]
    Signature(#[from] SignatureError),
    /// The `[frontends.slack]` section has problems (every one of them).
    #[error("{}", .0.join("; "))]
    Config(Vec<String>),
    /// The Web API client could not be built.
    #[error("{0}")]
    Client(String),
    /// A slash command payload lacks a required field.
    #[error("slash command payload lacks `{0}`")]
    MissingField(&'static str),
    /// Socket Mode could not connect (`apps.connections.open` failed).
    #[error("Socket Mode: apps.connections.open failed: {0}")]
    SocketMode(ChatError),
}

impl ChatFrontendError {
    /// A stable, machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            ChatFrontendError::Chat(e) => match e.kind {
                ChatErrorKind::RateLimited(_) => "chat_rate_limited",
                ChatErrorKind::Transient => "chat_unavailable",
                ChatErrorKind::Permanent => "chat_failed",
            },
            ChatFrontendError::Signature(_) => "signature_invalid",
            ChatFrontendError::Config(_) => "config_invalid",
            ChatFrontendError::Client(_) => "client_error",
            ChatFrontendError::MissingField(_) => "bad_payload",
            ChatFrontendError::SocketMode(_) => "socket_mode_failed",
        }
    }
}

impl From<Vec<ConfigIssue>> for ChatFrontendError {
    fn from(issues: Vec<ConfigIssue>) -> Self {
        ChatFrontendError::Config(issues.iter().map(ToString::to_string).collect())
    }
}

#[cfg(test)]
mod tests;
