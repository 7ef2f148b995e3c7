//! # youops-frontend-chat
//!
//! The ChatOps frontend of YouOps. Slack is the first chat system: slash
//! commands (`/ops deploy env=prod`), `@youops` mentions answered in thread,
//! Approve / Deny buttons bound to the exact request digest, results posted in a
//! thread with long output shown as head and tail plus a dashboard link, and
//! Socket Mode for workspaces without a public URL. Everything goes through the
//! core executor; this crate holds no op logic.
//!
//! The chat logic ([`chat::ChatCore`]) is separated from the wire by the
//! [`ChatAdapter`] trait, so another chat system (Mattermost, Matrix) is another
//! adapter plus its own inbound parsing.
//!
//! ```
//! use youops_frontend_chat::{manifest, SlackFrontend};
//! use youops_core::frontend::Frontend;
//!
//! let section: toml::Table = r#"
//! signing_secret = "8f742231b10e8888abcd99yyyzzz85a5"
//! bot_token = "xoxb-test"
//! command = "/ops"
//! "#.parse().unwrap();
//! let slack = SlackFrontend::from_config(&section).unwrap();
//! assert_eq!(slack.name(), "slack");
//! assert_eq!(slack.http_routes().len(), 3);
//! assert!(manifest("https://ops.example.com", &section).contains("/slack/events"));
//! ```

pub mod adapter;
pub mod chat;
pub mod config;
mod manifest;
pub mod render;
pub mod signature;
pub mod slack;
mod slack_adapter;

pub use adapter::{ChatAdapter, ChatError, ChatMessage, MessageRef};
pub use config::{SlackConfig, Transport};
pub use manifest::manifest;
pub use slack::SlackFrontend;
pub use slack_adapter::{build_client, SlackAdapter, SlackHttpClient};
