//! The texts answering an inbound command: accepted, pending approval, ended,
//! refused, or why it could not be done.

use youops_core::frontend::FrontendContext;
use youops_core::{RequestRecord, State};

use super::{Chat, Inbound, InboundKind};
use crate::chat::adapter::ChatMessage;
use crate::chat::render;

impl Chat {
    pub(super) fn command_hint(&self, inb: &Inbound) -> String {
        match &inb.kind {
            InboundKind::Command { command, .. } => command.clone(),
            InboundKind::Mention { .. } => format!("{} or @mention", self.settings.command),
        }
    }

    pub(super) fn unmapped(&self, inb: &Inbound) -> String {
        format!(
            ":no_entry: {} you are not mapped to a YouOps principal, so nothing ran. Ask an admin to add `{}` to `identities.{}` of your principal in youops.toml.",
            self.adapter.mention(&inb.user),
            inb.user,
            self.name()
        )
    }

    pub(super) fn error_reply(&self, inb: &Inbound, e: &youops_core::Error) -> ChatMessage {
        let text = match e {
            youops_core::Error::UnknownIdentity { .. } => self.unmapped(inb),
            youops_core::Error::Approval(_) | youops_core::Error::Forbidden(_) => {
                format!(":no_entry: {e}")
            }
            e if e.is_user_error() => format!(":warning: {e}"),
            e => format!(
                ":warning: YouOps could not do that right now ({}); nothing was changed, try again",
                e.code()
            ),
        };
        ChatMessage::text(text)
    }

    pub(super) fn ticket_reply(
        &self,
        ctx: &FrontendContext,
        inb: &Inbound,
        rec: &RequestRecord,
    ) -> ChatMessage {
        let id = rec.request.id;
        let reason = rec.reason.clone().unwrap_or_default();
        let retry = rec
            .request
            .retry_of
            .map(|old| format!(", a retry of `{old}`,"))
            .unwrap_or_default();
        let link = ctx
            .request_url(id)
            .map(|u| format!("\n{}", self.adapter.link(&u, "follow it on the dashboard")))
            .unwrap_or_default();
        let text = match rec.state {
            State::Invalid => format!(":warning: Request `{id}` is invalid: {reason}"),
            State::Denied if rec.request.actor.principal.is_none() => {
                format!("{} (recorded as request `{id}`, denied)", self.unmapped(inb))
            }
            State::Denied => format!(":no_entry: Request `{id}` was denied: {reason}"),
            State::PendingApproval => format!(
                ":raised_hand: Request `{id}` (`{}`){retry} {}. Approvers can click Approve, or type `approve {id}`.{link}",
                rec.request.op,
                render::pending_text(rec).unwrap_or_else(|| "needs approval".into())
            ),
            s if s.is_terminal() => {
                let out = rec
                    .outcome
                    .as_ref()
                    .map(|o| format!("\n```\n{}\n```", o.output))
                    .unwrap_or_default();
                format!("Request `{id}` (`{}`): `{s}`{out}{link}", rec.request.op)
            }
            _ => format!(
                ":ok: Accepted: request `{id}` (`{}`){}. Progress and the result will be posted in this {}.{link}",
                rec.request.op,
                retry.trim_end_matches(','),
                if inb.thread().is_some() { "thread" } else { "channel" }
            ),
        };
        ChatMessage::text(text)
    }
}
