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
//!
//! Everything here talks to the chat system through the [`ChatAdapter`] trait
//! only; a chat system's wire (Slack's is the `slack` module) sits above this
//! layer. [`Chat`] is one value shared by every transport of a frontend; its
//! methods are spread over the submodules by job:
//!
//! - [`adapter`]: the [`ChatAdapter`] trait and chat-neutral message types;
//! - [`render`]: pure text of status lines, results and approval prompts;
//! - `inbound`: commands, mentions and button clicks coming in;
//! - `replies`: the texts answering an inbound command;
//! - `renderer`: the per-request renderer of lifecycle events (status, result);
//! - `prompts`: the approval prompts of a request, posted and updated in place;
//! - `delivery`: per-channel pacing of every outbound call, around core's
//!   timeouts and retries.

pub mod adapter;
mod delivery;
mod inbound;
mod prompts;
pub mod render;
mod renderer;
mod replies;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use youops_core::frontend::webhook::SeenSet;
use youops_core::{RequestId, RequestRecord};

use crate::chat::adapter::ChatAdapter;

pub use inbound::{Action, Inbound, InboundKind};
use prompts::ApprovalMsg;

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
pub struct Chat {
    settings: ChatSettings,
    adapter: Arc<dyn ChatAdapter>,
    /// Per channel, when its next message may go (`delivery`).
    pace: Mutex<HashMap<String, Instant>>,
    /// The renderer task of each request being rendered (`renderer`).
    renderers: Mutex<HashMap<RequestId, watch::Sender<RequestRecord>>>,
    /// Requests whose rendering is over; later events are ignored (`renderer`).
    finished: Mutex<SeenSet<RequestId>>,
    /// The posted approval prompts of each request being rendered (`prompts`).
    approval_msgs: Mutex<HashMap<RequestId, Vec<ApprovalMsg>>>,
    /// Slash command reply URLs by dedup key, for results (`inbound`, `renderer`).
    reply_urls: Mutex<HashMap<String, String>>,
    tasks: TaskTracker,
    /// Cancelled when the shutdown grace is over: deliveries still in flight
    /// stop (and say so in the audit log).
    abandon: CancellationToken,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Chat {
    /// The chat logic over one adapter.
    pub fn new(settings: ChatSettings, adapter: Arc<dyn ChatAdapter>) -> Self {
        Chat {
            settings,
            adapter,
            pace: Mutex::new(HashMap::new()),
            renderers: Mutex::new(HashMap::new()),
            finished: Mutex::new(SeenSet::new(100_000)),
            approval_msgs: Mutex::new(HashMap::new()),
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
}
