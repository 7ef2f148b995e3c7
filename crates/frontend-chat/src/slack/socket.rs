//! Socket Mode: YouOps opens a websocket to Slack (`apps.connections.open`
//! with the app-level token) and takes slash commands, events and
//! interactions over it; no public URL needed.

use std::sync::Arc;

use slack_morphism::prelude::*;
use youops_core::frontend::{FrontendContext, FrontendError};

use super::adapter::{classify, SlackHttpClient};
use super::inbound::{actions_from, mention_inbound};
use super::{ack, SlackFrontend};
use crate::chat::Chat;
use crate::ChatFrontendError;

impl SlackFrontend {
    /// Listen on Socket Mode until shutdown.
    pub(super) async fn run_socket_mode(&self, ctx: &FrontendContext) -> Result<(), FrontendError> {
        let app_token = self
            .config
            .app_token
            .clone()
            .map(|s| s.0)
            .unwrap_or_default();
        let state = SocketState {
            chat: self.chat.clone(),
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
                message: ChatFrontendError::SocketMode(classify(&e)).to_string(),
            })?;
        listener.start().await;
        ctx.shutdown.cancelled().await;
        listener.shutdown().await;
        Ok(())
    }
}

// ---- Socket Mode glue: slack-morphism calls plain fns with a typed user state.

#[derive(Clone)]
struct SocketState {
    chat: Arc<Chat>,
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
        Some(s) => ack::ack(&s.chat, &s.ctx, &ev).await.text,
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
        let chat = s.chat.clone();
        let ctx = s.ctx.clone();
        s.chat
            .tasks()
            .spawn(async move { chat.handle_mention(&ctx, inb).await });
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
            let chat = s.chat.clone();
            let ctx = s.ctx.clone();
            s.chat
                .tasks()
                .spawn(async move { chat.handle_action(&ctx, act).await });
        }
    }
    Ok(())
}
