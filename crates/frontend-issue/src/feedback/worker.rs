//! The feedback worker: follows the core lifecycle stream and renders each
//! step of our requests on GitHub, retrying a status comment in the background
//! when GitHub is briefly failing.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use youops_core::frontend::delivery::{Delivery, DeliveryError, RetryPolicy};
use youops_core::frontend::lifecycle::{self, LifecycleHandler};
use youops_core::frontend::FrontendContext;
use youops_core::model::{RequestId, RequestRecord};

use crate::origin::NAME;
use crate::shared::{lock, Shared};

const FEEDBACK_RETRIES: u32 = 8;
const FEEDBACK_RETRY_FIRST: Duration = Duration::from_secs(1);
const FEEDBACK_RETRY_MAX: Duration = Duration::from_secs(60);

/// What a retry is, as its audit notices name it.
const FEEDBACK_WHAT: &str = "writing the status comment on GitHub";
/// Why an attempt failed, as its audit notices say (the GitHub error itself
/// is logged where it happened).
const RENDER_FAILED: &str = "GitHub did not take it; the daemon log has the reason";

/// How the status comment is retried: the render that failed first counts as
/// the first attempt, then [`FEEDBACK_RETRIES`] more, backing off from
/// [`FEEDBACK_RETRY_FIRST`] up to [`FEEDBACK_RETRY_MAX`].
fn feedback_policy() -> RetryPolicy {
    RetryPolicy {
        // No deadline of its own: each GitHub call is bounded by the client's
        // timeouts, and a render cut short halfway would leave its record
        // marked as rendered, so the next attempt would skip it.
        timeout: None,
        max_attempts: FEEDBACK_RETRIES + 1,
        first_backoff: FEEDBACK_RETRY_FIRST,
        max_backoff: FEEDBACK_RETRY_MAX,
        ..RetryPolicy::default()
    }
}

/// Renders what the lifecycle stream says on GitHub (notices and checkpoints
/// are skipped, a lag renders every active request again: the trait's
/// defaults), and hands a status comment that could not be written to the
/// background retry.
struct Feedback(Arc<Shared>);

#[async_trait]
impl LifecycleHandler for Feedback {
    async fn on_record(&self, ctx: &FrontendContext, record: &RequestRecord) {
        // `follow` drops this at shutdown: GitHub may hang (a 30 s read
        // timeout per call) and must not hold shutdown up.
        if !self.0.render(ctx, record).await {
            self.0.retry_feedback(ctx, record.request.id);
        }
    }
}

impl Shared {
    /// Retry a request's feedback in the background with capped exponential
    /// backoff, re-reading its latest record each time, so a result is not lost
    /// because GitHub was briefly failing. Each retry and a final give-up are
    /// recorded in the audit log (core's `feedback_retry` / `feedback_failed`).
    fn retry_feedback(self: &Arc<Self>, ctx: &FrontendContext, id: RequestId) {
        if !lock(&self.retrying).insert(id) {
            return;
        }
        let this = self.clone();
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let delivery = Delivery {
                executor: &ctx.executor,
                frontend: NAME,
                request: Some(id),
                what: FEEDBACK_WHAT.to_string(),
                shutdown: &ctx.shutdown,
            };
            let (shared, ctx_ref) = (&this, &ctx);
            // The first attempt is the render that already failed: it is
            // noticed at once, and the first retry waits FEEDBACK_RETRY_FIRST.
            let mut failed_already = true;
            delivery
                .run(&feedback_policy(), || {
                    let replay = std::mem::take(&mut failed_already);
                    async move {
                        if replay {
                            return Err(DeliveryError::transient(RENDER_FAILED));
                        }
                        shared.render_latest(ctx_ref, id).await
                    }
                })
                .await;
            lock(&this.retrying).remove(&id);
        });
    }

    /// One retry: render the request's latest record.
    async fn render_latest(
        &self,
        ctx: &FrontendContext,
        id: RequestId,
    ) -> Result<(), DeliveryError> {
        let rec =
            ctx.executor.get(id).await.map_err(|e| {
                DeliveryError::permanent(format!("could not read the request: {e}"))
            })?;
        if self.render(ctx, &rec).await {
            Ok(())
        } else {
            Err(DeliveryError::transient(RENDER_FAILED))
        }
    }

    /// Follow the lifecycle stream until shutdown (or until it closes); the
    /// frontend is ready while this runs.
    pub(crate) async fn feedback_loop(self: &Arc<Self>, ctx: &FrontendContext) {
        let stream = ctx.lifecycle();
        self.ready.store(true, Ordering::SeqCst);
        lifecycle::follow(ctx, stream, &Feedback(self.clone())).await;
    }
}
