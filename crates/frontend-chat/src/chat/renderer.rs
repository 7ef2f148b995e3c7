//! The renderer of lifecycle events: one task per request being shown, a
//! small state machine that posts the status message (after a short delay, so
//! a quick run gets one message in its end state), updates it in place with
//! the elapsed time, and delivers the result in its thread.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use youops_core::frontend::{FrontendContext, StreamError};
use youops_core::{EventBody, Lifecycle, RequestId, RequestRecord, State};

use super::{lock, Chat};
use crate::chat::adapter::{ChatMessage, MessageRef};
use crate::chat::render;

/// Longest time in-flight deliveries get to land after shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// The kind of the notice that records where a request's status message is.
const STATUS_MESSAGE: &str = "chat_status_message";

/// What one request's renderer has shown so far.
#[derive(Debug, Default)]
pub(super) struct Rendering {
    pub(super) status: Option<MessageRef>,
    pub(super) last_status: Option<ChatMessage>,
    pub(super) thread_root: Option<String>,
    pub(super) approvals_posted: bool,
    pub(super) approvals_done: bool,
    pub(super) last_approval: Option<ChatMessage>,
    pub(super) result_posted: bool,
    pub(super) status_failed: bool,
    pub(super) running_since: Option<Instant>,
}

impl Chat {
    /// Render lifecycle events until shutdown.
    pub async fn run_renderer(self: &Arc<Self>, ctx: FrontendContext, ready: impl FnOnce()) {
        let mut stream = ctx.lifecycle_all();
        ready();
        loop {
            tokio::select! {
                _ = ctx.shutdown.cancelled() => {
                    // Events already queued (a request that ended just before
                    // shutdown) are still rendered within the shutdown grace.
                    while let Ok(Ok(ev)) =
                        tokio::time::timeout(Duration::ZERO, stream.recv()).await
                    {
                        self.on_lifecycle(&ctx, ev);
                    }
                    break;
                }
                ev = stream.recv() => match ev {
                    Ok(ev) => self.on_lifecycle(&ctx, ev),
                    Err(StreamError::Lagged(n)) => tracing::warn!(missed = n, "chat renderer fell behind; some intermediate states were not shown"),
                    Err(StreamError::Closed) => break,
                },
            }
        }
        self.tasks.close();
        // Give in-flight posts (results!) up to one more call's time to land;
        // then stop them, so a Slack that never answers cannot hold up shutdown.
        // Each delivery cut short records a `feedback_failed` notice on its way out.
        let grace = self.settings.request_timeout.min(SHUTDOWN_GRACE);
        if tokio::time::timeout(grace, self.tasks.wait())
            .await
            .is_err()
        {
            self.abandon.cancel();
            if tokio::time::timeout(Duration::from_secs(2), self.tasks.wait())
                .await
                .is_err()
            {
                tracing::warn!("chat deliveries still running after shutdown; leaving them");
            }
        }
    }

    fn on_lifecycle(self: &Arc<Self>, ctx: &FrontendContext, ev: Lifecycle) {
        if matches!(
            ev.event.body,
            EventBody::Notice { .. } | EventBody::Checkpoint { .. }
        ) {
            return;
        }
        // This node's renderer of a request starts at its first event, unless
        // the request arrived elsewhere (a node that died, whose feedback this
        // one took over) or before this node started.
        let arrived_here = matches!(ev.event.body, EventBody::Received { .. });
        let rec = ev.record;
        let id = rec.request.id;
        let own = rec.request.origin.frontend == self.settings.name;
        if lock(&self.finished).contains(&id) {
            return;
        }
        let mut map = lock(&self.renderers);
        if let Some(tx) = map.get(&id) {
            tx.send_replace(rec);
            return;
        }
        if !own && (self.settings.approvals_channel.is_none() || !render::awaits_approval(&rec)) {
            return;
        }
        let (tx, rx) = watch::channel(rec);
        map.insert(id, tx);
        drop(map);
        let this = self.clone();
        let ctx = ctx.clone();
        self.tasks.spawn(async move {
            this.render_loop(&ctx, id, own, arrived_here, rx).await;
            lock(&this.renderers).remove(&id);
            lock(&this.finished).insert(id);
            lock(&this.approval_msgs).remove(&id);
        });
    }

    async fn render_loop(
        self: &Arc<Self>,
        ctx: &FrontendContext,
        id: RequestId,
        own: bool,
        arrived_here: bool,
        mut rx: watch::Receiver<RequestRecord>,
    ) {
        let mut st = Rendering::default();
        if own && !arrived_here {
            // Its status message, if one was posted, is in the channel
            // already: edit it.
            self.recall_status(ctx, id, &mut st).await;
        }
        let mut delayed = false;
        loop {
            let rec = rx.borrow_and_update().clone();
            if own && rec.state == State::Running && st.status.is_none() && !delayed {
                // Most runs are short: wait a little before saying "running", so
                // one that ends meanwhile gets a single status message in its end
                // state instead of a post and an update (fewer calls against the
                // channel's rate limit, less noise in it).
                delayed = true;
                st.running_since.get_or_insert_with(Instant::now);
                let delay = self.settings.status_delay;
                if !delay.is_zero() {
                    tokio::select! {
                        _ = ctx.shutdown.cancelled() => {}
                        r = tokio::time::timeout(delay, rx.changed()) => {
                            if let Ok(Ok(())) = r {
                                continue;
                            }
                        }
                    }
                }
            }
            self.render_step(ctx, &mut st, own, &rec).await;
            let done = rec.state.is_terminal()
                || (!own && !render::awaits_approval(&rec) && st.approvals_done);
            if done {
                break;
            }
            let tick = if own && rec.state == State::Running {
                self.settings.progress_every
            } else {
                Duration::from_secs(24 * 3600)
            };
            tokio::select! {
                // Pending approvals and runs outlive a shutdown; their messages are
                // picked up again by the dashboard and `status ID`. A request that
                // ended meanwhile still gets its result delivered (within the
                // shutdown grace) or its loss recorded.
                _ = ctx.shutdown.cancelled() => {
                    let ended = rx.has_changed().unwrap_or(false)
                        && rx.borrow().state.is_terminal();
                    if !ended {
                        break;
                    }
                }
                r = tokio::time::timeout(tick, rx.changed()) => match r {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => break,
                    // No news while running: refresh the status with the elapsed time.
                    Err(_) => rx.mark_changed(),
                },
            }
        }
        if let Some(d) = rx.borrow().request.dedup_key.clone() {
            lock(&self.reply_urls).remove(&d);
        }
        tracing::debug!(request_id = %id, "chat rendering finished");
    }

    async fn render_step(
        self: &Arc<Self>,
        ctx: &FrontendContext,
        st: &mut Rendering,
        own: bool,
        rec: &RequestRecord,
    ) {
        if own {
            if rec.state == State::Received {
                return;
            }
            if matches!(rec.state, State::Invalid | State::Denied) && st.status.is_none() {
                // Answered inline (ephemeral ack / thread reply); nothing public to show.
                return;
            }
            self.render_status(ctx, st, rec).await;
        }
        self.render_approvals(ctx, st, own, rec).await;
        if own && rec.state.is_terminal() && !st.result_posted {
            st.result_posted = true;
            self.deliver_result(ctx, st, rec).await;
        }
    }

    /// Post the status message of an own request, or update it in place when
    /// it says something new.
    async fn render_status(
        self: &Arc<Self>,
        ctx: &FrontendContext,
        st: &mut Rendering,
        rec: &RequestRecord,
    ) {
        let exec = &ctx.executor;
        let id = rec.request.id;
        let link = ctx.request_url(id);
        let ad = self.adapter.clone();
        let channel = rec.request.origin.location.clone();
        let thread = rec.request.origin.reference.get("thread_ts").cloned();
        let mut msg = render::status(ad.as_ref(), self.name(), rec, link.as_deref());
        if rec.state == State::Running {
            let since = *st.running_since.get_or_insert_with(Instant::now);
            let secs = since.elapsed().as_secs();
            if secs > 0 {
                msg.text
                    .push_str(&format!("\n_running for {}m{:02}s_", secs / 60, secs % 60));
            }
        }
        match st.status.clone() {
            None if st.status_failed => {}
            None => {
                let posted = self
                    .deliver(
                        exec,
                        Some(id),
                        &channel,
                        "chat.postMessage (status)",
                        || {
                            let (ad, msg, channel, thread) =
                                (ad.clone(), msg.clone(), channel.clone(), thread.clone());
                            async move { ad.post(&channel, thread.as_deref(), &msg).await }
                        },
                    )
                    .await;
                match posted {
                    Some(m) => {
                        st.thread_root = Some(thread.clone().unwrap_or_else(|| m.id.clone()));
                        if !rec.state.is_terminal() {
                            self.remember_status(ctx, id, &m, st.thread_root.as_deref())
                                .await;
                        }
                        st.status = Some(m);
                    }
                    None => st.status_failed = true,
                }
                st.last_status = Some(msg);
            }
            Some(at) if st.last_status.as_ref() != Some(&msg) => {
                self.deliver(exec, Some(id), &at.channel, "chat.update (status)", || {
                    let (ad, msg, at) = (ad.clone(), msg.clone(), at.clone());
                    async move { ad.update(&at, &msg).await }
                })
                .await;
                st.last_status = Some(msg);
            }
            Some(_) => {}
        }
    }

    /// Record where the status message of request `id` is, so that a node
    /// taking its feedback over (or this one, restarted) edits that message
    /// instead of posting another. Only for a request still going: an ended
    /// one's message is not edited again.
    async fn remember_status(
        &self,
        ctx: &FrontendContext,
        id: RequestId,
        at: &MessageRef,
        thread_root: Option<&str>,
    ) {
        let noted = ctx
            .executor
            .notice(
                Some(id),
                self.name(),
                STATUS_MESSAGE,
                format!("status message {} in {}", at.id, at.channel),
                serde_json::json!({
                    "channel": at.channel,
                    "message": at.id,
                    "thread_root": thread_root,
                }),
            )
            .await;
        if let Err(e) = noted {
            tracing::warn!(request_id = %id, error = %e, "could not record where the status message is");
        }
    }

    /// The status message [`Chat::remember_status`] recorded for request
    /// `id`, if any: the rendering goes on from it.
    async fn recall_status(&self, ctx: &FrontendContext, id: RequestId, st: &mut Rendering) {
        let events = match ctx.executor.events(id).await {
            Ok(events) => events,
            Err(e) => {
                tracing::warn!(request_id = %id, error = %e, "could not read where the status message is");
                return;
            }
        };
        let recorded = events.iter().rev().find_map(|e| match &e.body {
            EventBody::Notice {
                source, kind, data, ..
            } if source == self.name() && kind == STATUS_MESSAGE => Some(data),
            _ => None,
        });
        let Some(data) = recorded else { return };
        let (Some(channel), Some(message)) = (data["channel"].as_str(), data["message"].as_str())
        else {
            return;
        };
        st.status = Some(MessageRef {
            channel: channel.to_string(),
            id: message.to_string(),
        });
        st.thread_root = Some(data["thread_root"].as_str().unwrap_or(message).to_string());
    }

    /// Post the result: in the thread under the status message; without one
    /// (the bot is not in that private channel, or Slack was failing when the
    /// status was due) through the slash command's `response_url`, else in the
    /// channel (the mention's thread). If nothing gets through, the audit log
    /// says so: the result itself is stored, and on the dashboard.
    async fn deliver_result(
        self: &Arc<Self>,
        ctx: &FrontendContext,
        st: &Rendering,
        rec: &RequestRecord,
    ) {
        let exec = &ctx.executor;
        let id = rec.request.id;
        let link = ctx.request_url(id);
        let ad = self.adapter.clone();
        let channel = rec.request.origin.location.clone();
        let msg = render::result(ad.as_ref(), self.name(), rec, link.as_deref());
        let post = |root: Option<String>, what: &'static str| {
            let (ad, msg, channel) = (ad.clone(), msg.clone(), channel.clone());
            async move {
                self.deliver(exec, Some(id), &channel, what, || {
                    let (ad, msg, channel, root) =
                        (ad.clone(), msg.clone(), channel.clone(), root.clone());
                    async move { ad.post(&channel, root.as_deref(), &msg).await }
                })
                .await
            }
        };
        let mut delivered = false;
        if st.status.is_some() {
            delivered = post(st.thread_root.clone(), "chat.postMessage (result)")
                .await
                .is_some();
        } else {
            let url = rec
                .request
                .dedup_key
                .as_ref()
                .and_then(|d| lock(&self.reply_urls).get(d).cloned());
            if let Some(url) = url {
                delivered = self
                    .deliver(exec, Some(id), &channel, "response_url (result)", || {
                        let (ad, msg, url) = (ad.clone(), msg.clone(), url.clone());
                        async move { ad.respond(&url, &msg, true).await }
                    })
                    .await
                    .is_some();
            }
            if !delivered && !self.abandon.is_cancelled() {
                let thread = rec.request.origin.reference.get("thread_ts").cloned();
                delivered = post(thread, "chat.postMessage (result, no status message)")
                    .await
                    .is_some();
            }
        }
        if !delivered {
            tracing::warn!(request_id = %id, channel = %channel, "the result could not be delivered to chat");
            if let Err(e) = exec
                .notice(
                    Some(id),
                    self.name(),
                    "chat_undelivered",
                    format!(
                        "the result (`{}`) of request {id} could not be posted in {channel}; it is in the audit log and on the dashboard",
                        rec.state
                    ),
                    serde_json::json!({ "channel": channel, "state": rec.state.to_string() }),
                )
                .await
            {
                tracing::warn!(error = %e, "could not record a chat delivery notice");
            }
        }
    }
}
