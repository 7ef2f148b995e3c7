//! Approval prompts: while a request awaits approval, a message with Approve /
//! Deny buttons in its thread (and in the approvals channel), updated in place
//! as approvals come in and finally showing the decision. Each prompt remembers
//! the record it was last rendered from, so a late update never lands over a
//! newer one, whether it comes from the renderer or from a button click.

use std::sync::Arc;

use youops_core::frontend::FrontendContext;
use youops_core::{RequestId, RequestRecord};

use super::renderer::Rendering;
use super::{lock, Chat};
use crate::chat::adapter::{ChatMessage, MessageRef};
use crate::chat::render;

/// One posted approval prompt of a request.
#[derive(Debug, Clone)]
pub(super) struct ApprovalMsg {
    at: MessageRef,
    /// It shows the decision; nothing updates it any more.
    finalized: bool,
    /// `last_seq` of the record it was last rendered from (or is being
    /// rendered from): an update from an older record is dropped, so a slow
    /// "needs 1 more approval" cannot land over "Approved by ...".
    shown_seq: u64,
}

impl Chat {
    /// The renderer's step for approval prompts: post them when approval
    /// becomes pending, update them when what they show changes.
    pub(super) async fn render_approvals(
        self: &Arc<Self>,
        ctx: &FrontendContext,
        st: &mut Rendering,
        own: bool,
        rec: &RequestRecord,
    ) {
        let link = ctx.request_url(rec.request.id);
        let amsg = render::approval(self.adapter.as_ref(), self.name(), rec, link.as_deref());
        let awaiting = render::awaits_approval(rec);
        if awaiting && !st.approvals_posted {
            st.approvals_posted = true;
            self.post_approvals(ctx, st, own, rec, &amsg).await;
            st.last_approval = Some(amsg);
        } else if st.approvals_posted
            && !st.approvals_done
            && st.last_approval.as_ref() != Some(&amsg)
        {
            // No approval outstanding any more: the prompt shows the decision,
            // without buttons, and is not updated again.
            let decided = !awaiting;
            self.update_approvals(ctx, rec, &amsg, decided).await;
            st.last_approval = Some(amsg);
            st.approvals_done = decided;
        } else if !awaiting {
            st.approvals_done = true;
        }
    }

    /// Post the prompt in the request's thread (own requests) and in the
    /// approvals channel, remembering where each landed.
    async fn post_approvals(
        &self,
        ctx: &FrontendContext,
        st: &Rendering,
        own: bool,
        rec: &RequestRecord,
        amsg: &ChatMessage,
    ) {
        let exec = &ctx.executor;
        let id = rec.request.id;
        let ad = self.adapter.clone();
        let channel = rec.request.origin.location.clone();
        let thread = rec.request.origin.reference.get("thread_ts").cloned();
        let mut targets: Vec<(String, Option<String>)> = Vec::new();
        if own {
            targets.push((channel.clone(), st.thread_root.clone().or(thread.clone())));
        }
        if let Some(ac) = &self.settings.approvals_channel {
            if !own || *ac != channel {
                targets.push((ac.clone(), None));
            }
        }
        for (ch, th) in targets {
            let posted = self
                .deliver(exec, Some(id), &ch, "chat.postMessage (approval)", || {
                    let (ad, msg, ch, th) = (ad.clone(), amsg.clone(), ch.clone(), th.clone());
                    async move { ad.post(&ch, th.as_deref(), &msg).await }
                })
                .await;
            if let Some(at) = posted {
                lock(&self.approval_msgs)
                    .entry(id)
                    .or_default()
                    .push(ApprovalMsg {
                        at,
                        finalized: false,
                        shown_seq: rec.last_seq,
                    });
            }
        }
    }

    /// Update every prompt not yet showing this record (or a later one) to
    /// `amsg`; when `decided`, they show the decision and are final.
    async fn update_approvals(
        self: &Arc<Self>,
        ctx: &FrontendContext,
        rec: &RequestRecord,
        amsg: &ChatMessage,
        decided: bool,
    ) {
        let exec = &ctx.executor;
        let id = rec.request.id;
        let ad = self.adapter.clone();
        let seq = rec.last_seq;
        let targets: Vec<MessageRef> = {
            let mut m = lock(&self.approval_msgs);
            let list = m.entry(id).or_default();
            let t = list
                .iter_mut()
                .filter(|a| !a.finalized && a.shown_seq < seq)
                .map(|a| {
                    a.shown_seq = seq;
                    a.at.clone()
                })
                .collect();
            if decided {
                for a in list.iter_mut() {
                    a.finalized = true;
                }
            }
            t
        };
        for at in targets {
            self.deliver(
                exec,
                Some(id),
                &at.channel,
                "chat.update (approval)",
                || {
                    let (ad, msg, at, this) = (ad.clone(), amsg.clone(), at.clone(), self.clone());
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
    }

    /// Mark the approval prompt `at` of request `id` as being updated from the
    /// record with `last_seq` `seq` (and, when `decided`, as showing the
    /// decision). False when it already shows that record or a later one.
    pub(super) fn claim_approval_msg(
        &self,
        id: RequestId,
        at: &MessageRef,
        seq: u64,
        decided: bool,
    ) -> bool {
        let mut m = lock(&self.approval_msgs);
        let list = m.entry(id).or_default();
        match list.iter_mut().find(|a| &a.at == at) {
            Some(a) if a.shown_seq >= seq => false,
            Some(a) => {
                a.shown_seq = seq;
                a.finalized |= decided;
                true
            }
            None => {
                list.push(ApprovalMsg {
                    at: at.clone(),
                    finalized: decided,
                    shown_seq: seq,
                });
                true
            }
        }
    }

    /// Whether an update of prompt `at` from the record with `last_seq` `seq`
    /// is still the latest one claimed (checked right before each attempt, so
    /// a delayed or retried update never lands over a newer one).
    pub(super) fn approval_msg_current(&self, id: RequestId, at: &MessageRef, seq: u64) -> bool {
        lock(&self.approval_msgs)
            .get(&id)
            .and_then(|l| l.iter().find(|a| &a.at == at))
            .is_none_or(|a| a.shown_seq == seq)
    }
}
