//! The running frontend: a first full pass, then passes on the interval, on
//! webhooks, when a retry is due or a request waited on ends, and drift
//! checks on their own interval.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use youops_core::frontend::{FrontendContext, FrontendError, StreamError};
use youops_core::{Executor, Lifecycle};

use crate::engine::{now_ms, Engine, NAME};
use crate::error::GitError;
use crate::plan::Plan;

fn log_pass(r: Result<Plan, GitError>) {
    match r {
        Ok(p) if p.unchanged_head => {}
        Ok(p) => tracing::info!(
            frontend = NAME,
            commit = p.commit.as_deref().unwrap_or(""),
            changes = p.changes().count(),
            "reconciled"
        ),
        Err(e) => {
            tracing::warn!(frontend = NAME, code = e.code(), error = %e, "reconcile pass failed")
        }
    }
}

impl Engine {
    /// Run until shutdown (what [`youops_core::frontend::Frontend::run`] does).
    pub(crate) async fn serve(self: &Arc<Self>, ctx: FrontendContext) -> Result<(), FrontendError> {
        let inner = self.clone();
        let exec = ctx.executor.clone();
        let mut life = ctx.lifecycle();
        tokio::select! {
            r = inner.pass(&exec, false, true) => log_pass(r),
            _ = ctx.shutdown.cancelled() => return Ok(()),
        }
        inner.ready.store(true, Ordering::SeqCst);
        let start = tokio::time::Instant::now();
        let mut tick = tokio::time::interval_at(start + inner.cfg.interval, inner.cfg.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut drift =
            tokio::time::interval_at(start + inner.cfg.drift_interval, inner.cfg.drift_interval);
        drift.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let observers = inner.kinds.iter().any(|k| k.observe.is_some());
        enum Wake {
            Stop,
            Pass,
            Drift,
            Event(Box<Result<Lifecycle, StreamError>>),
        }
        loop {
            let retry_at = inner.next_retry().await;
            let retry = async move {
                match retry_at {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending().await,
                }
            };
            let wake = tokio::select! {
                _ = ctx.shutdown.cancelled() => Wake::Stop,
                _ = tick.tick() => Wake::Pass,
                _ = inner.trigger.notified() => Wake::Pass,
                _ = retry => Wake::Pass,
                _ = drift.tick(), if observers => Wake::Drift,
                ev = life.recv() => Wake::Event(Box::new(ev)),
            };
            let pass = match wake {
                Wake::Stop => break,
                Wake::Pass => true,
                Wake::Drift => {
                    tokio::select! {
                        r = inner.drift(&exec) => {
                            if let Err(e) = r {
                                tracing::warn!(frontend = NAME, code = e.code(), error = %e, "drift check failed");
                            }
                        }
                        _ = ctx.shutdown.cancelled() => break,
                    }
                    false
                }
                Wake::Event(ev) => match *ev {
                    Ok(ev) => inner.on_lifecycle(&exec, &ev).await,
                    Err(StreamError::Lagged(_)) => {
                        inner.dirty.store(true, Ordering::SeqCst);
                        true
                    }
                    Err(StreamError::Closed) => break,
                },
            };
            if pass {
                tokio::select! {
                    r = inner.pass(&exec, false, false) => log_pass(r),
                    _ = ctx.shutdown.cancelled() => break,
                }
            }
        }
        Ok(())
    }

    /// A request of ours ended: update its note; wake a pass if a change waited on it.
    async fn on_lifecycle(self: &Arc<Self>, exec: &Executor, ev: &Lifecycle) -> bool {
        if !ev.record.state.is_terminal() {
            return false;
        }
        let Some(commit) = ev.record.request.origin.reference.get("commit").cloned() else {
            return false;
        };
        let id = ev.record.request.id.to_string();
        let mut guard = self.work.lock().await;
        if self.load(&mut guard).is_err() {
            return false;
        }
        let st = guard.state.as_mut().expect("loaded");
        let mut wake = false;
        if st
            .retries
            .values()
            .any(|r| r.waiting && r.request.as_deref() == Some(id.as_str()))
        {
            self.dirty.store(true, Ordering::SeqCst);
            wake = true;
        }
        let stale = st.notes.get(&commit).is_some_and(|n| {
            n.requests
                .iter()
                .any(|r| r.id == id && r.state != ev.record.state.as_str())
        });
        if stale {
            st.note(&commit, &self.cfg.branch)
                .set_request(&id, ev.record.state.as_str(), "");
            self.publish_note(exec, st, &commit).await;
            if let Err(e) = self.save(st).await {
                tracing::warn!(frontend = NAME, error = %e, "saving git frontend state failed");
            }
        }
        wake
    }

    async fn next_retry(&self) -> Option<tokio::time::Instant> {
        let guard = self.work.lock().await;
        let st = guard.state.as_ref()?;
        let t = st
            .retries
            .values()
            .filter(|r| !r.gave_up && !r.waiting)
            .filter_map(|r| r.next_at_ms)
            .min()?;
        let wait = (t - now_ms()).max(0) as u64;
        Some(tokio::time::Instant::now() + Duration::from_millis(wait))
    }
}
