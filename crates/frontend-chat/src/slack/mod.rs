//! The Slack frontend: Slack's wire on top of the chat logic ([`crate::chat`]).
//! HTTP endpoints (slash commands, Events API, interactivity) and Socket Mode
//! both turn `slack-morphism` payload types into the chat logic's
//! [`Inbound`](crate::chat::Inbound) / [`Action`](crate::chat::Action); the
//! [`SlackAdapter`] says what the chat logic decides on the Web API.
//!
//! - `inbound`: Slack payloads into [`crate::chat::Inbound`] / [`crate::chat::Action`];
//! - `http`: the signed HTTP endpoints;
//! - `socket`: Socket Mode;
//! - `ack`: the slash command answer within Slack's 3-second window;
//! - `adapter`: the [`ChatAdapter`](crate::ChatAdapter) on the Web API;
//! - [`config`]: the `[frontends.slack]` section;
//! - [`signature`]: request signatures and form bodies;
//! - `manifest`: `youops gen slack-manifest`.

mod ack;
pub(crate) mod adapter;
pub mod config;
mod http;
mod inbound;
pub(crate) mod manifest;
pub mod signature;
mod socket;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use youops_core::config::{Config, ConfigIssue};
use youops_core::frontend::factory::{FrontendFactory, FrontendSection};
use youops_core::frontend::{
    Frontend, FrontendContext, FrontendError, HttpRequest, HttpResponse, HttpRoute,
};

use crate::chat::{Chat, ChatSettings};
use adapter::{build_client, SlackAdapter, SlackHttpClient};
use config::{SlackConfig, Transport};

pub use inbound::{
    actions_from, command_event_from_form, command_inbound, mention_inbound, strip_mentions,
    unescape,
};

/// Path of the slash command endpoint.
pub const COMMANDS_PATH: &str = "/slack/commands";
/// Path of the Events API endpoint.
pub const EVENTS_PATH: &str = "/slack/events";
/// Path of the interactivity endpoint.
pub const INTERACTIONS_PATH: &str = "/slack/interactions";

/// The Slack frontend (name `slack`).
#[derive(Debug)]
pub struct SlackFrontend {
    config: SlackConfig,
    client: Arc<SlackHttpClient>,
    chat: Arc<Chat>,
    ready: Arc<AtomicBool>,
}

impl SlackFrontend {
    /// The frontend name: `[frontends.slack]`, actors `slack:Uxxxx`.
    pub const NAME: &'static str = "slack";

    /// Build from the `[frontends.slack]` section; every config problem at
    /// once (without lines: see [`SlackFactory`]).
    pub fn from_config(section: &toml::Table) -> Result<SlackFrontend, Vec<String>> {
        let cfg = Config::default();
        Self::from_section(&FrontendSection::new(Self::NAME, section, &cfg))
            .map_err(|e| e.iter().map(ToString::to_string).collect())
    }

    /// Build from the section; every config problem at once, on its line.
    pub fn from_section(s: &FrontendSection<'_>) -> Result<SlackFrontend, Vec<ConfigIssue>> {
        let config = SlackConfig::from_section(s)?;
        let client =
            build_client(&config.api_base_url).map_err(|e| vec![s.issue("", e.to_string())])?;
        let adapter = Arc::new(SlackAdapter::new(client.clone(), &config.bot_token.0));
        let chat = Arc::new(Chat::new(
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
            chat,
            ready: Arc::new(AtomicBool::new(false)),
        })
    }

    /// The validated config.
    pub fn config(&self) -> &SlackConfig {
        &self.config
    }

    /// The chat logic (for embedders adding transports).
    pub fn core(&self) -> &Arc<Chat> {
        &self.chat
    }
}

/// The factory of the Slack frontend, for a
/// [`FrontendRegistry`](youops_core::frontend::factory::FrontendRegistry).
#[derive(Debug, Clone, Copy, Default)]
pub struct SlackFactory;

impl FrontendFactory for SlackFactory {
    fn name(&self) -> &'static str {
        SlackFrontend::NAME
    }

    fn build(&self, section: &FrontendSection<'_>) -> Result<Arc<dyn Frontend>, Vec<ConfigIssue>> {
        Ok(Arc::new(SlackFrontend::from_section(section)?))
    }
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
            let chat = self.chat.clone();
            let ctx = ctx.clone();
            async move {
                chat.run_renderer(ctx, move || {
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
                // One Socket Mode connection per cluster: Slack hands each
                // event to one connection of the app, and it must be the
                // leader's.
                self.ready.store(true, Ordering::SeqCst);
                let failed = std::sync::Mutex::new(None);
                ctx.while_leader(|_, lost| {
                    let mut term = ctx.clone();
                    term.shutdown = lost;
                    let failed = &failed;
                    async move {
                        if let Err(e) = self.run_socket_mode(&term).await {
                            *failed.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                        }
                    }
                })
                .await;
                self.ready.store(false, Ordering::SeqCst);
                ctx.shutdown.cancelled().await;
                let _ = r.await;
                let failed = failed.into_inner().unwrap_or_else(|p| p.into_inner());
                failed.map_or(Ok(()), Err)
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
        self.serve_http(ctx, req).await
    }
}
