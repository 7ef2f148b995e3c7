//! The loop every rendering frontend runs: follow the lifecycle events of
//! its requests until shutdown, hand each to the frontend, and when the
//! stream fell behind (events were dropped), hand it the current record of
//! every active request instead, so nothing it shows stays stale.
//!
//! ```no_run
//! use async_trait::async_trait;
//! use youops_core::executor::Lifecycle;
//! use youops_core::frontend::lifecycle::{follow, LifecycleHandler};
//! use youops_core::frontend::FrontendContext;
//! use youops_core::model::RequestRecord;
//!
//! struct Printer;
//!
//! #[async_trait]
//! impl LifecycleHandler for Printer {
//!     async fn on_record(&self, _ctx: &FrontendContext, record: &RequestRecord) {
//!         println!("{} is {}", record.request.id, record.state.as_str());
//!     }
//! }
//!
//! # async fn run(ctx: FrontendContext) {
//! follow(&ctx, ctx.lifecycle(), &Printer).await;
//! # }
//! ```

use async_trait::async_trait;

use crate::executor::Lifecycle;
use crate::frontend::{FrontendContext, LifecycleStream, StreamError};
use crate::model::{EventBody, RequestRecord};

/// What a frontend does with the events it follows.
#[async_trait]
pub trait LifecycleHandler: Send + Sync {
    /// Whether to handle this event. By default: every event of a request
    /// except notices (which change no state).
    fn wants(&self, lifecycle: &Lifecycle) -> bool {
        !matches!(
            lifecycle.event.body,
            EventBody::Notice { .. } | EventBody::Checkpoint { .. }
        )
    }

    /// Handle one event. By default: render its record.
    async fn on_event(&self, ctx: &FrontendContext, lifecycle: &Lifecycle) {
        self.on_record(ctx, &lifecycle.record).await;
    }

    /// Render a request's current record.
    async fn on_record(&self, ctx: &FrontendContext, record: &RequestRecord);

    /// The stream dropped `missed` events. By default: render the current
    /// record of every active request again.
    async fn on_lagged(&self, ctx: &FrontendContext, missed: u64) {
        tracing::warn!(
            frontend = ctx.name(),
            missed,
            "fell behind the lifecycle stream; rendering the active requests again"
        );
        match ctx.executor.store().active_requests().await {
            Ok(active) => {
                for record in active {
                    if ctx.shutdown.is_cancelled() {
                        return;
                    }
                    self.on_record(ctx, &record).await;
                }
            }
            Err(e) => {
                tracing::warn!(frontend = ctx.name(), error = %e, "could not read the active requests");
            }
        }
    }
}

/// Follow `stream` until `ctx.shutdown` is cancelled or the executor is
/// gone. A handler call in flight at shutdown is dropped at its next await
/// point (a platform that hangs must not hold up shutdown).
pub async fn follow(
    ctx: &FrontendContext,
    mut stream: LifecycleStream,
    handler: &(impl LifecycleHandler + ?Sized),
) {
    loop {
        let next = tokio::select! {
            _ = ctx.shutdown.cancelled() => return,
            next = stream.recv() => next,
        };
        let work = async {
            match next {
                Ok(lc) if handler.wants(&lc) => handler.on_event(ctx, &lc).await,
                Ok(_) => {}
                Err(StreamError::Lagged(n)) => handler.on_lagged(ctx, n).await,
                Err(StreamError::Closed) => return false,
            }
            true
        };
        let go_on = tokio::select! {
            _ = ctx.shutdown.cancelled() => return,
            go_on = work => go_on,
        };
        if !go_on {
            return;
        }
    }
}
