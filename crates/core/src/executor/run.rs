//! Running a request: run slots, locks, the runner and the end states.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::locks::Locked;
use super::{lock, Executor, Loaded};
use crate::catalog::{render_template, OpSpec};
use crate::error::{Error, Result};
use crate::model::{NewEvent, RequestId, RequestRecord, State, Transition, Value};
use crate::runner::{self, RunContext, RunEnd};

impl Executor {
    pub(super) fn run_context(
        &self,
        loaded: &Loaded,
        op: Arc<OpSpec>,
        id: RequestId,
        args: &BTreeMap<String, Value>,
        principal: Option<String>,
        cancel: CancellationToken,
    ) -> RunContext {
        RunContext {
            request_id: id,
            timeout: op.timeout.unwrap_or(loaded.settings.default_timeout).0,
            output_limit: op.output_limit.unwrap_or(loaded.settings.output_limit).0 as usize,
            op,
            args: args.clone(),
            principal,
            base_dir: loaded.base_dir.clone(),
            cancel,
        }
    }

    pub(super) fn spawn_run(
        &self,
        record: RequestRecord,
        op: Arc<OpSpec>,
        args: BTreeMap<String, Value>,
    ) {
        let token = CancellationToken::new();
        lock(&self.inner.runs).insert(record.request.id, token.clone());
        let this = self.clone();
        self.inner.tasks.spawn(async move {
            let id = record.request.id;
            let span = tracing::info_span!(
                "request",
                request_id = %id,
                op = %op.name,
                frontend = %record.request.origin.frontend
            );
            let _ = tracing::Instrument::instrument(this.run(record, op, args, token), span).await;
            lock(&this.inner.runs).remove(&id);
        });
    }

    pub(super) fn end_cancelled(&self, reason: &str) -> (State, String) {
        if self.inner.interrupting.load(Ordering::SeqCst) {
            (
                State::Interrupted,
                "YouOps shut down before the run finished; it was stopped and will not be re-run"
                    .into(),
            )
        } else {
            (State::Cancelled, reason.into())
        }
    }

    async fn run(
        &self,
        mut record: RequestRecord,
        op: Arc<OpSpec>,
        args: BTreeMap<String, Value>,
        cancel: CancellationToken,
    ) -> Result<()> {
        let id = record.request.id;
        let loaded = self.loaded();
        // A run slot.
        let _permit = tokio::select! {
            p = self.inner.slots.clone().acquire_owned() => p.map_err(|_| Error::ShuttingDown)?,
            _ = cancel.cancelled() => {
                let (st, why) = self.end_cancelled("cancelled while waiting for a run slot");
                return self.commit(&mut record, vec![NewEvent::transition(id, Transition::to(st).reason(why))], true).await;
            }
        };
        // The lock, if the op has one.
        let key = op
            .lock
            .as_ref()
            .map(|t| render_template(t, |n| args.get(n).map(Value::as_text)));
        let _guard = match self
            .take_lock(&mut record, &op, key.as_deref(), &cancel)
            .await?
        {
            Locked::Go(guard) => guard,
            Locked::Ended => return Ok(()),
        };
        if let Some(k) = key.as_deref() {
            if let Locked::Ended = self.take_shared(&mut record, &op, k, &cancel).await? {
                self.release(key.as_deref(), id);
                return Ok(());
            }
        }
        let watch = self.watch_shared(key.as_deref(), id, &cancel);
        if cancel.is_cancelled() {
            let (st, why) = self.end_cancelled("cancelled before it started");
            self.release_shared(key.as_deref(), id, watch).await;
            self.release(key.as_deref(), id);
            return self
                .commit(
                    &mut record,
                    vec![NewEvent::transition(id, Transition::to(st).reason(why))],
                    true,
                )
                .await;
        }
        self.commit(
            &mut record,
            vec![NewEvent::transition(
                id,
                Transition::to(State::Running).node(self.inner.node.clone()),
            )],
            false,
        )
        .await?;
        let ctx = self.run_context(
            &loaded,
            op.clone(),
            id,
            &args,
            record.request.actor.principal.clone(),
            cancel.clone(),
        );
        let end = runner::run(&ctx, &self.inner.builtins, &self.inner.http).await;
        let t = self.end_transition(end);
        self.release_shared(key.as_deref(), id, watch).await;
        drop(_guard);
        self.release(key.as_deref(), id);
        self.commit(&mut record, vec![NewEvent::transition(id, t)], true)
            .await
    }

    /// The transition a runner's end makes.
    fn end_transition(&self, end: RunEnd) -> Transition {
        match end {
            RunEnd::Succeeded(o) => Transition::to(State::Succeeded).outcome(o),
            RunEnd::Failed(o) => {
                let why = o.error.clone().unwrap_or_else(|| "failed".into());
                Transition::to(State::Failed).reason(why).outcome(o)
            }
            RunEnd::TimedOut(o) => {
                let why = o.error.clone().unwrap_or_else(|| "timed out".into());
                Transition::to(State::TimedOut).reason(why).outcome(o)
            }
            RunEnd::Cancelled(o) => {
                let (st, why) =
                    self.end_cancelled("cancelled while running; its processes were stopped");
                Transition::to(st).reason(why).outcome(o)
            }
        }
    }
}
