//! The feedback worker: follows the core lifecycle stream and renders each
//! step of our requests on GitHub, retrying a status comment in the background
//! when GitHub is briefly failing.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use youops_core::frontend::{FrontendContext, StreamError};
use youops_core::model::{EventBody, RequestId};

use crate::origin::NAME;
use crate::shared::{lock, Shared};

const FEEDBACK_RETRIES: u32 = 8;
const FEEDBACK_RETRY_FIRST: Duration = Duration::from_secs(1);
const FEEDBACK_RETRY_MAX: Duration = Duration::from_secs(60);

impl Shared {
    /// Retry a request's feedback in the background with capped exponential
    /// backoff, re-reading its latest record each time, so a result is not lost
    /// because GitHub was briefly failing. Both the retry and a final give-up are
    /// recorded in the audit log.
    fn retry_feedback(self: &Arc<Self>, ctx: &FrontendContext, id: RequestId) {
        if !lock(&self.retrying).insert(id) {
            return;
        }
        let this = self.clone();
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let _ = ctx
                .executor
                .notice(
                    Some(id),
                    NAME,
                    "feedback_retry",
                    "could not write the status comment on GitHub; retrying with backoff",
                    serde_json::Value::Null,
                )
                .await;
            let mut delay = FEEDBACK_RETRY_FIRST;
            let mut written = false;
            for _ in 0..FEEDBACK_RETRIES {
                tokio::select! {
                    _ = ctx.shutdown.cancelled() => break,
                    _ = tokio::time::sleep(delay) => {}
                }
                let Ok(rec) = ctx.executor.get(id).await else {
                    break;
                };
                let done = tokio::select! {
                    _ = ctx.shutdown.cancelled() => break,
                    ok = this.render(&ctx, &rec) => ok,
                };
                if done {
                    written = true;
                    break;
                }
                delay = (delay * 2).min(FEEDBACK_RETRY_MAX);
            }
            if !written && !ctx.shutdown.is_cancelled() {
                let _ = ctx
                    .executor
                    .notice(
                        Some(id),
                        NAME,
                        "feedback_failed",
                        format!("gave up writing the status comment on GitHub after {FEEDBACK_RETRIES} retries; the result is in the audit log and on the dashboard"),
                        serde_json::Value::Null,
                    )
                    .await;
            }
            lock(&this.retrying).remove(&id);
        });
    }

    /// Follow the lifecycle stream until shutdown (or until it closes); the
    /// frontend is ready while this runs.
    pub(crate) async fn feedback_loop(self: &Arc<Self>, ctx: &FrontendContext) {
        let mut stream = ctx.lifecycle();
        self.ready.store(true, Ordering::SeqCst);
        loop {
            let ev = tokio::select! {
                _ = ctx.shutdown.cancelled() => return,
                ev = stream.recv() => ev,
            };
            match ev {
                Ok(lc) => {
                    if matches!(
                        lc.event.body,
                        EventBody::Notice { .. } | EventBody::Checkpoint { .. }
                    ) {
                        continue;
                    }
                    // GitHub may hang (a 30 s read timeout per call): do not
                    // let it hold up shutdown.
                    let written = tokio::select! {
                        _ = ctx.shutdown.cancelled() => return,
                        ok = self.render(ctx, &lc.record) => ok,
                    };
                    if !written {
                        self.retry_feedback(ctx, lc.record.request.id);
                    }
                }
                Err(StreamError::Lagged(n)) => {
                    tracing::warn!(
                        missed = n,
                        "fell behind the lifecycle stream; re-rendering active requests"
                    );
                    if let Ok(active) = ctx.executor.store().active_requests().await {
                        for rec in active {
                            if !self.render(ctx, &rec).await {
                                self.retry_feedback(ctx, rec.request.id);
                            }
                        }
                    }
                }
                Err(StreamError::Closed) => return,
            }
        }
    }
}
