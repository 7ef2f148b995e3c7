//! The slash-command acknowledgement, shared by HTTP and Socket Mode: an
//! answer within Slack's 3-second window, and a late answer through
//! `response_url` when the work takes longer.

use std::sync::Arc;
use std::time::Duration;

use slack_morphism::prelude::*;
use youops_core::frontend::FrontendContext;

use super::inbound::command_inbound;
use crate::chat::adapter::ChatMessage;
use crate::chat::Chat;

/// How long a slash command may take before Slack gets a "working on it" answer
/// (Slack gives up at 3 s).
const ACK_BUDGET: Duration = Duration::from_millis(2500);

/// The answer to a slash command, within [`ACK_BUDGET`]; work that takes
/// longer goes on, and its answer follows through `response_url`.
pub(super) async fn ack(
    chat: &Arc<Chat>,
    ctx: &FrontendContext,
    ev: &SlackCommandEvent,
) -> ChatMessage {
    let mut work = {
        let (chat, ctx, inb) = (chat.clone(), ctx.clone(), command_inbound(ev));
        tokio::spawn(async move { chat.handle_inbound_for(&ctx, &inb).await })
    };
    match tokio::time::timeout(ACK_BUDGET, &mut work).await {
        Ok(Ok((Some(m), _))) => m,
        Ok(Ok((None, _))) => ChatMessage::text("Already received; nothing ran again."),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "slash command handler failed");
            ChatMessage::text(":warning: YouOps hit an internal error; nothing was changed")
        }
        Err(_) => {
            chat.tasks().spawn({
                let chat = chat.clone();
                let ctx = ctx.clone();
                let url = ev.response_url.0.to_string();
                async move {
                    if let Ok((Some(m), id)) = work.await {
                        let ad = chat.adapter().clone();
                        // Retried like every other delivery; a give-up is an audit notice.
                        chat.deliver(&ctx.executor, id, "-", "response_url (answer)", || {
                            let (ad, m, url) = (ad.clone(), m.clone(), url.clone());
                            async move { ad.respond(&url, &m, false).await }
                        })
                        .await;
                    }
                }
            });
            ChatMessage::text(":hourglass_flowing_sand: Working on it; the answer follows here.")
        }
    }
}
