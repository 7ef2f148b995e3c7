//! Inbound chat traffic: command messages (slash commands, mentions) become
//! executor commands, button clicks approve or deny as the clicking user.

use std::sync::Arc;

use youops_core::frontend::FrontendContext;
use youops_core::grammar::{self, Command};
use youops_core::{Actor, DedupKey, Origin, Reply, RequestId};

use super::{lock, Chat};
use crate::chat::adapter::{ActionKind, ChatMessage, MessageRef};
use crate::chat::render;

/// What kind of inbound message.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum InboundKind {
    /// A slash command; answered synchronously (ephemeral).
    Command {
        /// The command word, e.g. `/ops`.
        command: String,
        /// Per-invocation reply URL (kept in memory only: it is a capability).
        response_url: Option<String>,
    },
    /// A mention of the bot in a channel; answered in the message's thread.
    Mention {
        /// The message id (Slack `ts`).
        ts: String,
        /// The thread it was posted in, if any.
        thread_ts: Option<String>,
    },
}

/// One inbound chat message carrying command grammar.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Inbound {
    /// Chat user id of the sender.
    pub user: String,
    /// Workspace (team) id, if known.
    pub team: Option<String>,
    /// Channel id.
    pub channel: String,
    /// The command text (bot mention already stripped).
    pub text: String,
    /// Stable id of this delivery, the dedup key (`slack:event:Ev..`, `slack:command:..`).
    pub delivery: String,
    /// Set when the chat system says this is a redelivery (e.g. `X-Slack-Retry-Num: 1 (http_timeout)`).
    pub retry: Option<String>,
    /// Slash command or mention.
    pub kind: InboundKind,
}

impl Inbound {
    /// The thread replies to this message belong to (mentions only).
    pub fn thread(&self) -> Option<&str> {
        match &self.kind {
            InboundKind::Mention { ts, thread_ts } => Some(thread_ts.as_deref().unwrap_or(ts)),
            InboundKind::Command { .. } => None,
        }
    }
}

/// A button click.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Action {
    /// Approve or deny.
    pub kind: ActionKind,
    /// The button's value (`<request id>:<digest>`).
    pub value: String,
    /// Chat user id of the clicker.
    pub user: String,
    /// The message carrying the button, to update in place.
    pub message: Option<MessageRef>,
    /// The thread of that message, if any.
    pub thread: Option<String>,
    /// Per-interaction reply URL.
    pub response_url: Option<String>,
}

impl Chat {
    /// Handle one inbound command message; returns the reply to show the sender,
    /// or `None` when there is nothing to say (a redelivery of something already
    /// answered).
    pub async fn handle_inbound(
        &self,
        ctx: &FrontendContext,
        inb: &Inbound,
    ) -> Option<ChatMessage> {
        self.handle_inbound_for(ctx, inb).await.0
    }

    /// [`Chat::handle_inbound`], also returning the request the message is
    /// about (so delivery notices land on that request's audit trail).
    pub(crate) async fn handle_inbound_for(
        &self,
        ctx: &FrontendContext,
        inb: &Inbound,
    ) -> (Option<ChatMessage>, Option<RequestId>) {
        let actor = Actor::new(self.name(), &inb.user);
        let origin = self.origin(inb);
        let cmd = match self.parse_command(inb) {
            Ok(c) => c,
            Err(reply) => return (Some(reply), None),
        };
        let decision = match &cmd {
            Command::Approve { .. } => Some(render::Decision::Approve),
            Command::Deny { .. } => Some(render::Decision::Deny),
            Command::Cancel { .. } => Some(render::Decision::Cancel),
            _ => None,
        };
        self.remember_reply_url(inb);
        // The delivery id is the dedup key of every command: a redelivery of a
        // run gets its ticket back, of a decision `Reply::Duplicate`.
        let inbound = youops_core::Inbound::new(cmd, actor.clone(), origin)
            .dedup(DedupKey::delivery(inb.delivery.clone()))
            .provenance("chat_delivery", inb.delivery.clone());
        let res = ctx.executor.handle(inbound).await;
        self.answer(ctx, inb, &actor, decision, res).await
    }

    /// Where an inbound message came from, as the request's origin.
    fn origin(&self, inb: &Inbound) -> Origin {
        let mut origin = Origin::new(self.name()).with_location(&inb.channel);
        if let Some(t) = &inb.team {
            origin = origin.with_ref("team", t);
        }
        if let Some(t) = inb.thread() {
            origin = origin.with_ref("thread_ts", t);
        }
        origin
    }

    /// The command an inbound message carries (empty text asks for help), or
    /// the reply saying why it could not be read.
    fn parse_command(&self, inb: &Inbound) -> Result<Command, ChatMessage> {
        let text = inb.text.trim();
        if text.is_empty() {
            return Ok(Command::Help { op: None });
        }
        grammar::parse(text).map_err(|e| {
            ChatMessage::text(format!(
                ":warning: I could not read that: {e}\nTry `{} help`.",
                self.command_hint(inb)
            ))
        })
    }

    /// Keep a slash command's reply URL (in memory only: it is a capability),
    /// for a result that cannot go in a thread.
    fn remember_reply_url(&self, inb: &Inbound) {
        if let InboundKind::Command {
            response_url: Some(url),
            ..
        } = &inb.kind
        {
            let mut m = lock(&self.reply_urls);
            if m.len() > 10_000 {
                m.clear();
            }
            m.insert(inb.delivery.clone(), url.clone());
        }
    }

    /// The reply to an executed command, and the request it is about.
    async fn answer(
        &self,
        ctx: &FrontendContext,
        inb: &Inbound,
        actor: &Actor,
        decision: Option<render::Decision>,
        res: Result<Reply, youops_core::Error>,
    ) -> (Option<ChatMessage>, Option<RequestId>) {
        let exec = &ctx.executor;
        match res {
            Ok(Reply::Submitted(t)) if t.duplicate => {
                let id = t.record.request.id;
                let what = inb
                    .retry
                    .clone()
                    .unwrap_or_else(|| "same delivery id".into());
                let _ = exec
                    .notice(
                        Some(id),
                        self.name(),
                        "delivery_retry",
                        format!("redelivery ({what}) of {}; nothing ran again", inb.delivery),
                        serde_json::json!({ "delivery": inb.delivery, "retry": inb.retry }),
                    )
                    .await;
                if inb.retry.is_some() {
                    (None, Some(id))
                } else {
                    (
                        Some(ChatMessage::text(format!(
                            "Already received as request `{id}` (state `{}`); nothing ran again.",
                            t.record.state
                        ))),
                        Some(id),
                    )
                }
            }
            Ok(Reply::Submitted(t)) => (
                Some(self.ticket_reply(ctx, inb, &t.record)),
                Some(t.record.request.id),
            ),
            Ok(Reply::Help(h)) => (Some(ChatMessage::text(format!("```\n{h}\n```"))), None),
            Ok(Reply::Record(rec)) => {
                let link = ctx.request_url(rec.request.id);
                let ad = self.adapter.as_ref();
                let reply = match decision {
                    Some(did) => {
                        render::decision_reply(ad, self.name(), did, actor, &rec, link.as_deref())
                    }
                    None => render::status(ad, self.name(), &rec, link.as_deref()),
                };
                (Some(reply), Some(rec.request.id))
            }
            Ok(Reply::Duplicate(rec)) => {
                tracing::info!(delivery = %inb.delivery, request_id = %rec.request.id, "redelivery of an answered chat command ignored");
                (None, None)
            }
            Ok(_) => (None, None),
            Err(e) => (Some(self.error_reply(inb, &e)), None),
        }
    }

    /// Handle a mention: reply in its thread (paced and retried).
    pub async fn handle_mention(self: &Arc<Self>, ctx: &FrontendContext, inb: Inbound) {
        if let (Some(reply), id) = self.handle_inbound_for(ctx, &inb).await {
            let thread = inb.thread().map(str::to_string);
            let ad = self.adapter.clone();
            let channel = inb.channel.clone();
            self.deliver(
                &ctx.executor,
                id,
                &inb.channel,
                "chat.postMessage (reply)",
                || {
                    let ad = ad.clone();
                    let reply = reply.clone();
                    let channel = channel.clone();
                    let thread = thread.clone();
                    async move { ad.post(&channel, thread.as_deref(), &reply).await }
                },
            )
            .await;
        }
    }

    /// Do what an Approve/Deny click asks, through the executor: the record
    /// after it, or why it was refused (in words for the clicker).
    async fn decide_on_click(
        &self,
        exec: &youops_core::Executor,
        act: &Action,
    ) -> Result<youops_core::model::RequestRecord, String> {
        let Some((id, digest)) = render::parse_button_value(&act.value) else {
            return Err("that button is not a YouOps approval button".to_string());
        };
        if id.parse::<RequestId>().is_err() {
            return Err(format!("`{id}` is not a request id"));
        }
        let id = id.to_string();
        let command = match act.kind {
            ActionKind::Approve => Command::Approve { id },
            ActionKind::Deny => Command::Deny { id, reason: None },
        };
        let actor = Actor::new(self.name(), &act.user);
        let mut inbound = youops_core::Inbound::new(command, actor, Origin::new(self.name()));
        if act.kind == ActionKind::Approve {
            inbound = inbound.digest(digest);
        }
        match exec.handle(inbound).await {
            Ok(Reply::Record(rec) | Reply::Duplicate(rec)) => Ok(rec),
            Ok(_) => Err("the executor answered a decision with something else than a record".into()),
            Err(youops_core::Error::UnknownIdentity { .. }) => Err(format!(
                "you are not mapped to a YouOps principal; ask an admin to add `{}` to `identities.{}`",
                act.user,
                self.name()
            )),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Handle an Approve/Deny click.
    pub async fn handle_action(self: &Arc<Self>, ctx: &FrontendContext, act: Action) {
        let exec = &ctx.executor;
        let outcome = self.decide_on_click(exec, &act).await;
        match outcome {
            Ok(rec) => {
                let Some(at) = act.message.clone() else {
                    return;
                };
                let id = rec.request.id;
                let seq = rec.last_seq;
                if !self.claim_approval_msg(id, &at, seq, !render::awaits_approval(&rec)) {
                    // The renderer already showed this record, or a later one.
                    return;
                }
                let msg = render::approval(
                    self.adapter.as_ref(),
                    self.name(),
                    &rec,
                    ctx.request_url(id).as_deref(),
                );
                let ad = self.adapter.clone();
                self.deliver(
                    exec,
                    Some(id),
                    &at.channel,
                    "chat.update (decision)",
                    || {
                        let ad = ad.clone();
                        let at = at.clone();
                        let msg = msg.clone();
                        let this = self.clone();
                        async move {
                            if !this.approval_msg_current(id, &at, seq) {
                                return Ok(());
                            }
                            ad.update(&at, &msg).await
                        }
                    },
                )
                .await;
            }
            Err(why) => {
                let verb = match act.kind {
                    ActionKind::Approve => "approve",
                    ActionKind::Deny => "deny",
                };
                let msg = ChatMessage::text(format!(":no_entry: Could not {verb}: {why}"));
                let ad = self.adapter.clone();
                if let Some(at) = &act.message {
                    let channel = at.channel.clone();
                    let user = act.user.clone();
                    let thread = act.thread.clone();
                    self.deliver(
                        exec,
                        None,
                        &at.channel,
                        "chat.postEphemeral (refusal)",
                        || {
                            let ad = ad.clone();
                            let msg = msg.clone();
                            let channel = channel.clone();
                            let user = user.clone();
                            let thread = thread.clone();
                            async move {
                                ad.post_ephemeral(&channel, &user, thread.as_deref(), &msg)
                                    .await
                            }
                        },
                    )
                    .await;
                } else if let Some(url) = act.response_url.clone() {
                    self.deliver(exec, None, "-", "response_url (refusal)", || {
                        let (ad, msg, url) = (ad.clone(), msg.clone(), url.clone());
                        async move { ad.respond(&url, &msg, false).await }
                    })
                    .await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mention_replies_go_to_the_thread_root() {
        let mut inb = Inbound {
            user: "U1".into(),
            team: None,
            channel: "C1".into(),
            text: String::new(),
            delivery: "d".into(),
            retry: None,
            kind: InboundKind::Mention {
                ts: "1.1".into(),
                thread_ts: None,
            },
        };
        assert_eq!(inb.thread(), Some("1.1"));
        inb.kind = InboundKind::Mention {
            ts: "1.2".into(),
            thread_ts: Some("1.0".into()),
        };
        assert_eq!(inb.thread(), Some("1.0"));
    }
}
