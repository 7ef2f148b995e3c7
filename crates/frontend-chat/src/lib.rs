//! # youops-frontend-chat
//!
//! The ChatOps frontend of YouOps. Slack is the first chat system: slash
//! commands (`/ops deploy env=prod`), `@youops` mentions answered in thread,
//! Approve / Deny buttons bound to the exact request digest, results posted in a
//! thread with long output shown as head and tail plus a dashboard link, and
//! Socket Mode for workspaces without a public URL. Everything goes through the
//! core executor; this crate holds no op logic.
//!
//! Two layers, by job: [`chat`] is the chat logic (commands, mentions,
//! approvals, the renderer of lifecycle events, pacing and retries), separated
//! from the wire by the [`ChatAdapter`] trait; [`slack`] sits on top of it with
//! Slack's wire (payloads, Web API client, Socket Mode, signatures, manifest).
//! Another chat system (Mattermost, Matrix) is another adapter plus its own
//! inbound parsing, next to `slack`.
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

pub mod chat;
mod error;
pub mod slack;

pub use chat::adapter::{ChatAdapter, ChatError, ChatMessage, MessageRef};
pub use error::ChatFrontendError;
pub use slack::adapter::{build_client, SlackAdapter, SlackHttpClient};
pub use slack::config::{SlackConfig, Transport};
pub use slack::manifest::manifest;
pub use slack::{SlackFactory, SlackFrontend};
