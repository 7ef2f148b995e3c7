//! Running a request: run slots, locks, the runner and the end states.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::sync::OwnedMutexGuard;
use tokio_util::sync::CancellationToken;

use super::{lock, Executor, Loaded, LockEntry};
use crate::catalog::{render_template, LockMode, OpSpec};
use crate::error::{Error, Result};
use crate::model::{EventBody, NewEvent, RequestId, RequestRecord, State, Transition, Value};
use crate::runner::{self, RunContext, RunEnd};

/// How waiting for a request's lock ended.
enum Locked {
    /// The lock is held (or the op has none): go on.
    Go(Option<OwnedMutexGuard<()>>),
    /// The request ended (refused, or cancelled while queued); its end is recorded.
    Ended,
}

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

    fn end_cancelled(&self, reason: &str) -> (State, String) {
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
        if cancel.is_cancelled() {
            let (st, why) = self.end_cancelled("cancelled before it started");
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
        drop(_guard);
        self.release(key.as_deref(), id);
        self.commit(&mut record, vec![NewEvent::transition(id, t)], true)
            .await
    }

    /// Take the op's lock `key` (if any): at once, or queued behind its holder
    /// (`lock_mode = "queue"`), or refused (`"refuse"`).
    async fn take_lock(
        &self,
        record: &mut RequestRecord,
        op: &OpSpec,
        key: Option<&str>,
        cancel: &CancellationToken,
    ) -> Result<Locked> {
        let Some(key) = key else {
            return Ok(Locked::Go(None));
        };
        let id = record.request.id;
        let (mutex, holder) = {
            let mut locks = lock(&self.inner.locks);
            let entry = locks.entry(key.to_string()).or_insert_with(|| LockEntry {
                mutex: Arc::new(tokio::sync::Mutex::new(())),
                holder: None,
            });
            (entry.mutex.clone(), entry.holder)
        };
        let guard = match mutex.clone().try_lock_owned() {
            Ok(g) => g,
            Err(_) => {
                let holder = holder
                    .map(|h| h.to_string())
                    .unwrap_or_else(|| "another request".into());
                if op.lock_mode == LockMode::Refuse {
                    let t = Transition::to(State::Failed).reason(format!(
                        "lock `{key}` is held by request {holder}; refused (lock_mode = \"refuse\")"
                    ));
                    self.commit(record, vec![NewEvent::transition(id, t)], true)
                        .await?;
                    return Ok(Locked::Ended);
                }
                self.commit(
                    record,
                    vec![NewEvent::request(
                        id,
                        EventBody::Notice {
                            source: "executor".into(),
                            kind: "lock_wait".into(),
                            message: format!("queued: lock `{key}` is held by request {holder}"),
                            data: serde_json::json!({ "lock": key, "holder": holder }),
                        },
                    )],
                    false,
                )
                .await?;
                tokio::select! {
                    g = mutex.clone().lock_owned() => g,
                    _ = cancel.cancelled() => {
                        let (st, why) = self.end_cancelled("cancelled while queued for its lock");
                        self.commit(record, vec![NewEvent::transition(id, Transition::to(st).reason(why))], true).await?;
                        return Ok(Locked::Ended);
                    }
                }
            }
        };
        if let Some(e) = lock(&self.inner.locks).get_mut(key) {
            e.holder = Some(id);
        }
        Ok(Locked::Go(Some(guard)))
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

    fn release(&self, key: Option<&str>, id: RequestId) {
        let Some(key) = key else { return };
        let mut locks = lock(&self.inner.locks);
        if let Some(e) = locks.get_mut(key) {
            if e.holder == Some(id) {
                e.holder = None;
            }
            if Arc::strong_count(&e.mutex) == 1 {
                locks.remove(key);
            }
        }
    }
}
