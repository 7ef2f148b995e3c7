//! The chat frontend's logic, independent of the chat system's wire format.
//!
//! Inbound: an [`Inbound`] message (slash command or mention) becomes one executor
//! command with the delivery's dedup key; the reply says what happened (accepted,
//! help, a precise error). A button click ([`Action`]) approves or denies as the
//! clicking user. Outbound: lifecycle events of this frontend's requests are
//! rendered as one status message updated in place, an approval prompt with
//! buttons while approval is pending, and the result in the thread; pending
//! approvals of *every* frontend's requests also go to the approvals channel.
//! Every outbound call is paced per channel, bounded by a client timeout and
//! retried with backoff (honouring `Retry-After`); retries and give-ups are
//! recorded in the audit log as notices, and so is a result that could not be
//! delivered at all (it stays in the audit log and on the dashboard).

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use youops_core::frontend::{FrontendContext, StreamError};
use youops_core::grammar::{self, Command};
use youops_core::{
    Actor, DedupKey, EventBody, Executor, Lifecycle, Origin, Reply, RequestId, RequestRecord, State,
};

use crate::adapter::{ActionKind, ChatAdapter, ChatError, ChatErrorKind, ChatMessage, MessageRef};
use crate::render;

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

/// A set that forgets its oldest entries past a capacity.
#[derive(Debug)]
struct Bounded<T: std::hash::Hash + Eq + Clone> {
    set: HashSet<T>,
    order: VecDeque<T>,
    cap: usize,
}

impl<T: std::hash::Hash + Eq + Clone> Bounded<T> {
    fn new(cap: usize) -> Self {
        Bounded {
            set: HashSet::new(),
            order: VecDeque::new(),
            cap,
        }
    }

    /// Insert; false if it was already there.
    fn insert(&mut self, v: T) -> bool {
        if !self.set.insert(v.clone()) {
            return false;
        }
        self.order.push_back(v);
        while self.order.len() > self.cap {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        true
    }

    fn contains(&self, v: &T) -> bool {
        self.set.contains(v)
    }
}

/// One posted approval prompt of a request.
#[derive(Debug, Clone)]
struct ApprovalMsg {
    at: MessageRef,
    /// It shows the decision; nothing updates it any more.
    finalized: bool,
    /// `last_seq` of the record it was last rendered from (or is being
    /// rendered from): an update from an older record is dropped, so a slow
    /// "needs 1 more approval" cannot land over "Approved by ...".
    shown_seq: u64,
}

/// Settings of the chat logic.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ChatSettings {
    /// Frontend name (actor and origin `frontend`).
    pub name: String,
    /// The slash command word, for hints.
    pub command: String,
    /// Channel that also gets every pending approval.
    pub approvals_channel: Option<String>,
    /// Minimum spacing of messages per channel.
    pub channel_interval: Duration,
    /// Tries per outbound call.
    pub max_attempts: u32,
    /// First backoff after a transient failure (doubles, capped at 30 s).
    pub backoff: Duration,
    /// Time limit of one outbound call; no answer by then is a transient failure.
    pub request_timeout: Duration,
    /// Refresh of a running request's status message (elapsed time).
    pub progress_every: Duration,
    /// How long a run may go before its status message is posted; a run that
    /// ends sooner gets one message in its end state.
    pub status_delay: Duration,
}

/// The chat logic, shared by every transport of one frontend.
#[derive(Debug)]
pub struct ChatCore {
    settings: ChatSettings,
    adapter: Arc<dyn ChatAdapter>,
    pace: Mutex<HashMap<String, Instant>>,
    renderers: Mutex<HashMap<RequestId, watch::Sender<RequestRecord>>>,
    finished: Mutex<Bounded<RequestId>>,
    approval_msgs: Mutex<HashMap<RequestId, Vec<ApprovalMsg>>>,
    seen: Mutex<Bounded<String>>,
    reply_urls: Mutex<HashMap<String, String>>,
    tasks: TaskTracker,
    /// Cancelled when the shutdown grace is over: deliveries still in flight
    /// stop (and say so in the audit log).
    abandon: CancellationToken,
}

/// Longest time in-flight deliveries get to land after shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[derive(Debug, Default)]
struct Rendering {
    status: Option<MessageRef>,
    last_status: Option<ChatMessage>,
    thread_root: Option<String>,
    approvals_posted: bool,
    approvals_done: bool,
    last_approval: Option<ChatMessage>,
    result_posted: bool,
    status_failed: bool,
    running_since: Option<Instant>,
}

impl ChatCore {
    /// A chat core over one adapter.
    pub fn new(settings: ChatSettings, adapter: Arc<dyn ChatAdapter>) -> Self {
        ChatCore {
            settings,
            adapter,
            pace: Mutex::new(HashMap::new()),
            renderers: Mutex::new(HashMap::new()),
            finished: Mutex::new(Bounded::new(100_000)),
            approval_msgs: Mutex::new(HashMap::new()),
            seen: Mutex::new(Bounded::new(100_000)),
            reply_urls: Mutex::new(HashMap::new()),
            tasks: TaskTracker::new(),
            abandon: CancellationToken::new(),
        }
    }

    /// The adapter.
    pub fn adapter(&self) -> &Arc<dyn ChatAdapter> {
        &self.adapter
    }

    /// Background work (replies, renders) in flight.
    pub fn tasks(&self) -> &TaskTracker {
        &self.tasks
    }

    fn name(&self) -> &str {
        &self.settings.name
    }

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

    /// [`ChatCore::handle_inbound`], also returning the request the message is
    /// about (so delivery notices land on that request's audit trail).
    pub(crate) async fn handle_inbound_for(
        &self,
        ctx: &FrontendContext,
        inb: &Inbound,
    ) -> (Option<ChatMessage>, Option<RequestId>) {
        let exec = &ctx.executor;
        let actor = Actor::new(self.name(), &inb.user);
        let mut origin = Origin::new(self.name()).with_location(&inb.channel);
        if let Some(t) = &inb.team {
            origin = origin.with_ref("team", t);
        }
        if let Some(t) = inb.thread() {
            origin = origin.with_ref("thread_ts", t);
        }
        let text = inb.text.trim();
        let cmd = if text.is_empty() {
            Command::Help { op: None }
        } else {
            match grammar::parse(text) {
                Ok(c) => c,
                Err(e) => {
                    return (
                        Some(ChatMessage::text(format!(
                            ":warning: I could not read that: {e}\nTry `{} help`.",
                            self.command_hint(inb)
                        ))),
                        None,
                    )
                }
            }
        };
        let is_run = matches!(cmd, Command::Run { .. } | Command::Retry { .. });
        let decision = match &cmd {
            Command::Approve { .. } => Some(render::Decision::Approve),
            Command::Deny { .. } => Some(render::Decision::Deny),
            Command::Cancel { .. } => Some(render::Decision::Cancel),
            _ => None,
        };
        if !is_run && !lock(&self.seen).insert(inb.delivery.clone()) {
            tracing::info!(delivery = %inb.delivery, "redelivery of an answered chat command ignored");
            return (None, None);
        }
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
        let mut provenance = std::collections::BTreeMap::new();
        provenance.insert("chat_delivery".to_string(), inb.delivery.clone());
        let res = exec
            .execute_command(
                cmd,
                &actor,
                &origin,
                Some(DedupKey::delivery(inb.delivery.clone())),
                provenance,
            )
            .await;
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
                        render::decision_reply(ad, self.name(), did, &actor, &rec, link.as_deref())
                    }
                    None => render::status(ad, self.name(), &rec, link.as_deref()),
                };
                (Some(reply), Some(rec.request.id))
            }
            Ok(_) => (None, None),
            Err(e) => (Some(self.error_reply(inb, &e)), None),
        }
    }

    fn command_hint(&self, inb: &Inbound) -> String {
        match &inb.kind {
            InboundKind::Command { command, .. } => command.clone(),
            InboundKind::Mention { .. } => format!("{} or @mention", self.settings.command),
        }
    }

    fn unmapped(&self, inb: &Inbound) -> String {
        format!(
            ":no_entry: {} you are not mapped to a YouOps principal, so nothing ran. Ask an admin to add `{}` to `identities.{}` of your principal in youops.toml.",
            self.adapter.mention(&inb.user),
            inb.user,
            self.name()
        )
    }

    fn error_reply(&self, inb: &Inbound, e: &youops_core::Error) -> ChatMessage {
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

    fn ticket_reply(
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

    /// Handle an Approve/Deny click.
    pub async fn handle_action(self: &Arc<Self>, ctx: &FrontendContext, act: Action) {
        let exec = &ctx.executor;
        let actor = Actor::new(self.name(), &act.user);
        let outcome = match render::parse_button_value(&act.value) {
            None => Err("that button is not a YouOps approval button".to_string()),
            Some((id, digest)) => match id.parse::<RequestId>() {
                Err(_) => Err(format!("`{id}` is not a request id")),
                Ok(id) => {
                    let r = match act.kind {
                        ActionKind::Approve => exec.approve(id, &actor, Some(digest)).await,
                        ActionKind::Deny => exec.deny(id, &actor, None).await,
                    };
                    r.map_err(|e| match e {
                        youops_core::Error::UnknownIdentity { .. } => format!(
                            "you are not mapped to a YouOps principal; ask an admin to add `{}` to `identities.{}`",
                            act.user,
                            self.name()
                        ),
                        e => e.to_string(),
                    })
                }
            },
        };
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
        // Each delivery cut short records a `chat_failed` notice on its way out.
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
            this.render_loop(&ctx, id, own, rx).await;
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
        mut rx: watch::Receiver<RequestRecord>,
    ) {
        let mut st = Rendering::default();
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
        let exec = &ctx.executor;
        let id = rec.request.id;
        let link = ctx.request_url(id);
        let ad = self.adapter.clone();
        let channel = rec.request.origin.location.clone();
        let thread = rec.request.origin.reference.get("thread_ts").cloned();
        if own {
            if rec.state == State::Received {
                return;
            }
            if matches!(rec.state, State::Invalid | State::Denied) && st.status.is_none() {
                // Answered inline (ephemeral ack / thread reply); nothing public to show.
                return;
            }
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
        // Approval prompts.
        let amsg = render::approval(ad.as_ref(), self.name(), rec, link.as_deref());
        let awaiting = render::awaits_approval(rec);
        if awaiting && !st.approvals_posted {
            st.approvals_posted = true;
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
            st.last_approval = Some(amsg);
        } else if st.approvals_posted
            && !st.approvals_done
            && st.last_approval.as_ref() != Some(&amsg)
        {
            // No approval outstanding any more: the prompt shows the decision,
            // without buttons, and is not updated again.
            let decided = !awaiting;
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
                        let (ad, msg, at, this) =
                            (ad.clone(), amsg.clone(), at.clone(), self.clone());
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
            st.last_approval = Some(amsg);
            st.approvals_done = decided;
        } else if !awaiting {
            st.approvals_done = true;
        }
        if own && rec.state.is_terminal() && !st.result_posted {
            st.result_posted = true;
            self.deliver_result(ctx, st, rec).await;
        }
    }

    /// Mark the approval prompt `at` of request `id` as being updated from the
    /// record with `last_seq` `seq` (and, when `decided`, as showing the
    /// decision). False when it already shows that record or a later one.
    fn claim_approval_msg(&self, id: RequestId, at: &MessageRef, seq: u64, decided: bool) -> bool {
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
    fn approval_msg_current(&self, id: RequestId, at: &MessageRef, seq: u64) -> bool {
        lock(&self.approval_msgs)
            .get(&id)
            .and_then(|l| l.iter().find(|a| &a.at == at))
            .is_none_or(|a| a.shown_seq == seq)
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

    async fn pace(&self, channel: &str) {
        if channel == "-" {
            return;
        }
        let wait = {
            let mut m = lock(&self.pace);
            let now = Instant::now();
            let next = m.get(channel).copied().unwrap_or(now).max(now);
            m.insert(channel.to_string(), next + self.settings.channel_interval);
            next - now
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }

    fn push_back(&self, channel: &str, wait: Duration) {
        let mut m = lock(&self.pace);
        let until = Instant::now() + wait;
        let e = m.entry(channel.to_string()).or_insert(until);
        if *e < until {
            *e = until;
        }
    }

    /// One outbound call: paced per channel (`"-"`: not a channel call), each
    /// attempt bounded by the request timeout, retried with backoff (honouring
    /// `Retry-After`), every retry and give-up recorded as an audit notice.
    /// Returns `None` when it did not get through.
    pub async fn deliver<T, F, Fut>(
        &self,
        exec: &Executor,
        request: Option<RequestId>,
        channel: &str,
        what: &str,
        call: F,
    ) -> Option<T>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, ChatError>>,
    {
        let max = self.settings.max_attempts.max(1);
        let mut backoff = self.settings.backoff;
        let limit = self.settings.request_timeout;
        for attempt in 1..=max {
            let result = tokio::select! {
                biased;
                _ = self.abandon.cancelled() => None,
                r = async {
                    self.pace(channel).await;
                    tokio::time::timeout(limit, call()).await
                } => Some(r),
            };
            let e = match result {
                Some(Ok(Ok(v))) => return Some(v),
                Some(Ok(Err(e))) => e,
                Some(Err(_)) => {
                    ChatError::transient(format!("no answer within {} ms", limit.as_millis()))
                }
                None => {
                    self.abandoned(exec, request, channel, what, attempt).await;
                    return None;
                }
            };
            let wait = match e.kind {
                ChatErrorKind::RateLimited(after) => {
                    let w = rate_limit_wait(after);
                    self.push_back(channel, w);
                    w
                }
                ChatErrorKind::Transient => {
                    let w = backoff;
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                    w
                }
                ChatErrorKind::Permanent => {
                    tracing::warn!(call = what, channel, error = %e.message, "chat call failed; not retrying");
                    self.note(
                        exec,
                        request,
                        "chat_failed",
                        format!("{what} in {channel} failed: {}; not retried", e.message),
                        attempt,
                    )
                    .await;
                    return None;
                }
            };
            if attempt == max {
                tracing::warn!(call = what, channel, error = %e.message, attempts = max, "chat call gave up");
                self.note(
                    exec,
                    request,
                    "chat_failed",
                    format!(
                        "{what} in {channel} failed {max} times (last: {}); gave up",
                        e.message
                    ),
                    attempt,
                )
                .await;
                return None;
            }
            self.note(
                exec,
                request,
                "chat_retry",
                format!(
                    "{what} in {channel} failed ({}); retrying in {} ms (attempt {attempt}/{max})",
                    e.message,
                    wait.as_millis()
                ),
                attempt,
            )
            .await;
            tokio::select! {
                biased;
                _ = self.abandon.cancelled() => {
                    self.abandoned(exec, request, channel, what, attempt).await;
                    return None;
                }
                _ = tokio::time::sleep(wait) => {}
            }
        }
        None
    }

    async fn abandoned(
        &self,
        exec: &Executor,
        request: Option<RequestId>,
        channel: &str,
        what: &str,
        attempt: u32,
    ) {
        tracing::warn!(call = what, channel, "chat call abandoned at shutdown");
        self.note(
            exec,
            request,
            "chat_failed",
            format!("{what} in {channel} abandoned at shutdown (attempt {attempt}); not delivered"),
            attempt,
        )
        .await;
    }

    async fn note(
        &self,
        exec: &Executor,
        request: Option<RequestId>,
        kind: &str,
        message: String,
        attempt: u32,
    ) {
        if let Err(e) = exec
            .notice(
                request,
                self.name(),
                kind,
                message,
                serde_json::json!({ "attempt": attempt }),
            )
            .await
        {
            tracing::warn!(error = %e, "could not record a chat delivery notice");
        }
    }
}

/// Longest `Retry-After` honoured: a larger (or bogus) value would park a
/// channel's deliveries for that long; past it, one more attempt is spent and a
/// second 429 waits again.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

/// How long to wait after a 429: its `Retry-After` (1 s if it gave none), at most
/// [`MAX_RETRY_AFTER`].
fn rate_limit_wait(after: Option<Duration>) -> Duration {
    after.unwrap_or(Duration::from_secs(1)).min(MAX_RETRY_AFTER)
}

#[cfg(test)]
mod tests {

    #[test]
    fn retry_after_is_honoured_up_to_a_cap() {
        use std::time::Duration;
        assert_eq!(super::rate_limit_wait(None), Duration::from_secs(1));
        assert_eq!(
            super::rate_limit_wait(Some(Duration::from_secs(30))),
            Duration::from_secs(30)
        );
        assert_eq!(
            super::rate_limit_wait(Some(Duration::from_secs(86_400))),
            super::MAX_RETRY_AFTER
        );
    }

    use super::*;

    #[test]
    fn bounded_set_forgets_the_oldest() {
        let mut b = Bounded::new(2);
        assert!(b.insert(1));
        assert!(!b.insert(1));
        assert!(b.insert(2));
        assert!(b.insert(3));
        assert!(!b.contains(&1));
        assert!(b.contains(&3));
    }

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
