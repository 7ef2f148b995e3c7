//! Lifecycle events from the store: in a cluster, other nodes append to the
//! same chain, and this node reads it after the last seq it has seen and
//! publishes every event it did not append itself, with the request's record
//! as of that event. Waiters, renderers and the dashboard of every node then
//! see every request, wherever it was received or run.
//!
//! A node alone does not follow the store: every event is its own, and is
//! published as it is committed.

use std::collections::BTreeSet;
use std::sync::Arc;

use super::decide::CANCEL_REQUESTED;
use super::{lock, Executor};
use crate::error::Result;
use crate::model::{AuditEvent, EventBody, RequestId, RequestRecord, State};

/// How many events one read of the chain takes.
const PAGE: usize = 512;

/// The least time between two reads of the store woken by other nodes'
/// appends ([`super::ExecutorBuilder::follow_wakeups`]).
const WAKE_GAP: std::time::Duration = std::time::Duration::from_millis(10);

/// What has been published of the chain.
#[derive(Debug, Default)]
pub(super) struct Cursor {
    /// Whether this executor follows the store at all.
    following: bool,
    /// Every event up to this seq has been published here.
    after: u64,
    /// Events after `after` that this node appended and published already.
    local: BTreeSet<u64>,
}

impl Cursor {
    /// Note an event this node has just published.
    pub(super) fn published_here(&mut self, seq: u64) {
        if self.following && seq > self.after {
            self.local.insert(seq);
        }
    }
}

/// The appends of this node between their start and the publication of
/// their events, each by a ticket taken in order (see
/// [`Executor::catch_up`]).
#[derive(Debug, Default)]
pub(super) struct OpenAppends {
    state: std::sync::Mutex<Tickets>,
    closed: tokio::sync::Notify,
}

#[derive(Debug, Default)]
struct Tickets {
    next: u64,
    open: BTreeSet<u64>,
}

impl OpenAppends {
    /// The first ticket not yet taken.
    fn horizon(&self) -> u64 {
        lock(&self.state).next
    }

    /// Wait until every append whose ticket is below `horizon` has closed.
    /// Appends after it go on meanwhile.
    async fn wait_below(&self, horizon: u64) {
        loop {
            let closed = self.closed.notified();
            tokio::pin!(closed);
            // Registered before the check, so a close right after it wakes us.
            closed.as_mut().enable();
            if lock(&self.state).open.first().is_none_or(|t| *t >= horizon) {
                return;
            }
            closed.await;
        }
    }
}

/// Held by an append from before its store call until its events are
/// published (`None` when not following).
pub(super) struct AppendGuard<'a> {
    appends: &'a OpenAppends,
    ticket: u64,
}

impl Drop for AppendGuard<'_> {
    fn drop(&mut self) {
        lock(&self.appends.state).open.remove(&self.ticket);
        self.appends.closed.notify_waiters();
    }
}

impl Executor {
    /// Hold across an append and the publication of its events.
    pub(super) fn append_guard(&self) -> Option<AppendGuard<'_>> {
        self.inner.follow_every?;
        let appends = &self.inner.appends;
        let mut state = lock(&appends.state);
        let ticket = state.next;
        state.next += 1;
        state.open.insert(ticket);
        Some(AppendGuard { appends, ticket })
    }

    /// Start following the store, if this executor was built to.
    pub(super) async fn start_tail(&self) -> Result<()> {
        let Some(every) = self.inner.follow_every else {
            return Ok(());
        };
        let (head, _) = self.inner.store.head().await?;
        {
            let mut c = lock(&self.inner.tail);
            c.following = true;
            c.after = head;
        }
        let weak = Arc::downgrade(&self.inner);
        let stop = self.inner.stop.clone();
        let wake = self.inner.follow_wake.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let woken = async {
                    match &wake {
                        Some(w) => w.notified().await,
                        None => std::future::pending().await,
                    }
                };
                let woke = tokio::select! {
                    _ = tick.tick() => false,
                    _ = woken => true,
                    _ = stop.cancelled() => break,
                };
                let Some(inner) = weak.upgrade() else { break };
                let exec = Executor { inner };
                loop {
                    match exec.catch_up().await {
                        Ok(n) if n == PAGE => continue,
                        Ok(_) => break,
                        Err(e) => {
                            tracing::warn!(error = %e, "reading other nodes' events failed");
                            break;
                        }
                    }
                }
                drop(exec);
                if woke {
                    // Under load other nodes commit many times a second: read
                    // at most once per WAKE_GAP, the wake-ups meanwhile folded
                    // into the next read.
                    tokio::select! {
                        _ = tokio::time::sleep(WAKE_GAP) => {}
                        _ = stop.cancelled() => break,
                    }
                }
            }
        });
        Ok(())
    }

    /// Publish the events other nodes appended since the last call (one page
    /// of the chain at most); returns how many events were read. The
    /// executor calls it on its follow interval; an embedder that learns of
    /// other nodes' appends sooner may call it then too.
    pub async fn catch_up(&self) -> Result<usize> {
        let (read, remote) = {
            let _one = self.inner.tail_reader.lock().await;
            let after = lock(&self.inner.tail).after;
            let events = self.inner.store.events(after, PAGE).await?;
            // An event of this node among those read was committed before
            // the read, by an append that took its ticket before that:
            // below the horizon taken now. Once those appends closed, its
            // seq is in `local`. Appends that start meanwhile are not
            // waited for (they are not held up either): their events come
            // after those read.
            let horizon = self.inner.appends.horizon();
            self.inner.appends.wait_below(horizon).await;
            let mut c = lock(&self.inner.tail);
            let mut remote = Vec::new();
            for e in &events {
                c.after = c.after.max(e.seq);
                if !c.local.remove(&e.seq) {
                    remote.push(e.clone());
                }
            }
            let after = c.after;
            c.local.retain(|s| *s > after);
            (events.len(), remote)
        };
        self.publish_remote(remote).await?;
        Ok(read)
    }

    /// Publish events of other nodes, each with its request's record as of
    /// that event. Events of no request (global notices, checkpoints) have
    /// no record to go with and are not lifecycle events.
    async fn publish_remote(&self, events: Vec<AuditEvent>) -> Result<()> {
        // Their requests' histories in one read of the store, not one each.
        let ids: Vec<RequestId> = events
            .iter()
            .filter_map(|e| e.request_id)
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let histories = self.inner.store.requests_events(&ids).await?;
        for e in events {
            let Some(id) = e.request_id else { continue };
            let Some(record) = histories.get(&id).and_then(|h| fold_through(h, e.seq)) else {
                continue;
            };
            self.react(&e, &record);
            self.publish(e, &record);
            if record.state.is_terminal() {
                lock(&self.inner.watchers).remove(&id);
            }
        }
        Ok(())
    }
}

impl Executor {
    /// What this node does about another node's event: stop a run of its
    /// own that someone asked to cancel; run a request whose secret it
    /// holds once another node recorded its approval; forget a pending
    /// request another node decided.
    fn react(&self, e: &AuditEvent, record: &RequestRecord) {
        let id = record.request.id;
        match &e.body {
            EventBody::Notice { kind, .. } if kind == CANCEL_REQUESTED => {
                if let Some(token) = lock(&self.inner.runs).get(&id) {
                    token.cancel();
                }
            }
            EventBody::Transition(t) if t.to == State::Approved => {
                let Some(pending) = lock(&self.inner.pending).remove(&id) else {
                    return;
                };
                // Without a secret, the approving node runs it.
                if record.request.secret_args.is_empty() {
                    return;
                }
                match self.loaded().op(&record.request.op) {
                    Some(op) => self.spawn_run(record.clone(), op, pending.args),
                    None => {
                        tracing::warn!(request = %id, op = %record.request.op, "approved elsewhere, but its op is gone from the catalog; not run")
                    }
                }
            }
            EventBody::Transition(t) if t.to.is_terminal() => {
                lock(&self.inner.pending).remove(&id);
            }
            _ => {}
        }
    }
}

/// The record folded from a request's events up to and including `seq`.
fn fold_through(history: &[AuditEvent], seq: u64) -> Option<RequestRecord> {
    let (first, rest) = history.split_first()?;
    let EventBody::Received { request } = &first.body else {
        return None;
    };
    let mut record = RequestRecord::new(Arc::clone(request), first);
    for e in rest.iter().take_while(|e| e.seq <= seq) {
        record.apply(e);
    }
    Some(record)
}
