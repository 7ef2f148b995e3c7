//! Op locks: the node's own (a mutex per key, with queueing or refusal as
//! the op says) and, in a cluster, the cluster's lease on the same key
//! ([`SharedLocks`]), taken after the node's own and watched while the run
//! holds it.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::OwnedMutexGuard;
use tokio_util::sync::CancellationToken;

use super::{lock, Executor, LockEntry};
use crate::audit::StoreError;
use crate::catalog::{LockMode, OpSpec};
use crate::error::Result;
use crate::model::{EventBody, NewEvent, RequestId, RequestRecord, State, Transition};

/// How often a request queued for a lock another node holds asks again.
const SHARED_RETRY: Duration = Duration::from_millis(250);

/// How waiting for a request's lock ended.
pub(super) enum Locked {
    /// The lock is held (or the op has none): go on.
    Go(Option<OwnedMutexGuard<()>>),
    /// The request ended (refused, or cancelled while queued); its end is recorded.
    Ended,
}

/// Op lock keys held across a cluster: a lease per key, one request at a
/// time, whichever node runs it. The executor takes its own (per node) lock
/// first, then the cluster's; a node alone needs none.
#[async_trait::async_trait]
pub trait SharedLocks: Send + Sync + fmt::Debug + 'static {
    /// Take `key` for request `id`: `Ok(None)` when it is `id`'s now,
    /// `Ok(Some(holder))` when another request holds it (its id, or who,
    /// as text for the record).
    async fn try_take(&self, key: &str, id: RequestId) -> Result<Option<String>, StoreError>;

    /// Cancelled when this node can no longer be sure `id` holds `key` (its
    /// lease could not be renewed in time): the run under it must stop
    /// before another node may take the key.
    fn lost(&self, key: &str) -> Option<CancellationToken>;

    /// Give `key` up after `id` ran.
    async fn release(&self, key: &str, id: RequestId) -> Result<(), StoreError>;
}

impl Executor {
    /// Take the op's lock `key` (if any): at once, or queued behind its holder
    /// (`lock_mode = "queue"`), or refused (`"refuse"`).
    pub(super) async fn take_lock(
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

    pub(super) fn release(&self, key: Option<&str>, id: RequestId) {
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

    /// In a cluster, take the cluster's lease on `key` too (after the
    /// node's own lock): at once, or waiting while another node's request
    /// holds it (`queue`), or refused (`refuse`).
    pub(super) async fn take_shared(
        &self,
        record: &mut RequestRecord,
        op: &OpSpec,
        key: &str,
        cancel: &CancellationToken,
    ) -> Result<Locked> {
        let Some(shared) = self.inner.shared_locks.clone() else {
            return Ok(Locked::Go(None));
        };
        let id = record.request.id;
        let mut queued = false;
        loop {
            match shared.try_take(key, id).await {
                Ok(None) => return Ok(Locked::Go(None)),
                Ok(Some(holder)) if op.lock_mode == LockMode::Refuse => {
                    let t = Transition::to(State::Failed).reason(format!(
                        "lock `{key}` is held by request {holder} on another node; refused (lock_mode = \"refuse\")"
                    ));
                    self.commit(record, vec![NewEvent::transition(id, t)], true)
                        .await?;
                    return Ok(Locked::Ended);
                }
                Ok(Some(holder)) if !queued => {
                    queued = true;
                    let body = EventBody::Notice {
                        source: "executor".into(),
                        kind: "lock_wait".into(),
                        message: format!(
                            "queued: lock `{key}` is held by request {holder} on another node"
                        ),
                        data: serde_json::json!({ "lock": key, "holder": holder }),
                    };
                    self.commit(record, vec![NewEvent::request(id, body)], false)
                        .await?;
                }
                Ok(Some(_)) => {}
                Err(e) => {
                    tracing::warn!(request = %id, lock = key, error = %e, "cannot take the cluster's op lock; trying again");
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(SHARED_RETRY) => {}
                _ = cancel.cancelled() => {
                    let (st, why) = self.end_cancelled("cancelled while queued for its lock");
                    self.commit(record, vec![NewEvent::transition(id, Transition::to(st).reason(why))], true).await?;
                    return Ok(Locked::Ended);
                }
            }
        }
    }

    /// While the run of `id` holds the cluster's lease on `key`: if this
    /// node can no longer be sure it holds it, record why and cancel the
    /// run, before another node may take the key. The returned token ends
    /// the watch ([`release_shared`](Self::release_shared)).
    pub(super) fn watch_shared(
        &self,
        key: Option<&str>,
        id: RequestId,
        cancel: &CancellationToken,
    ) -> Option<CancellationToken> {
        let key = key?.to_string();
        let lost = self.inner.shared_locks.as_ref()?.lost(&key)?;
        let done = CancellationToken::new();
        let (this, cancel, watching) = (self.clone(), cancel.clone(), done.clone());
        tokio::spawn(async move {
            tokio::select! {
                _ = watching.cancelled() => {}
                _ = lost.cancelled() => {
                    if watching.is_cancelled() {
                        return;
                    }
                    let message = format!("lost lock `{key}`: its lease could not be renewed in time; stopping the run");
                    let data = serde_json::json!({ "lock": key });
                    if let Err(e) = this.notice(Some(id), "executor", "lock_lost", message, data).await {
                        tracing::warn!(request = %id, error = %e, "recording a lost lock");
                    }
                    cancel.cancel();
                }
            }
        });
        Some(done)
    }

    /// End the watch and give the cluster's lease on `key` up.
    pub(super) async fn release_shared(
        &self,
        key: Option<&str>,
        id: RequestId,
        watch: Option<CancellationToken>,
    ) {
        if let Some(w) = watch {
            w.cancel();
        }
        let (Some(shared), Some(key)) = (self.inner.shared_locks.as_ref(), key) else {
            return;
        };
        if let Err(e) = shared.release(key, id).await {
            tracing::warn!(request = %id, lock = key, error = %e, "releasing the cluster's op lock (its lease expires)");
        }
    }
}
