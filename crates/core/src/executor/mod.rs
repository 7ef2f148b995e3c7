//! The executor: validate → authorize → approval gate → lock → run with timeout →
//! result, every transition one audit event.
//!
//! It is a plain async API ([`Executor::submit`], [`Executor::approve`], ...) and a
//! [`tower::Service`] of [`Submission`]s, so rate limits, concurrency limits and
//! timeouts are ordinary tower layers.

mod command;
mod decide;
mod handle;
mod help;
mod locks;
mod node;
mod rate;
mod recover;
mod run;
mod submit;
mod tail;

pub use handle::Inbound;
pub use locks::SharedLocks;
pub use node::LeaderState;

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use chrono::Utc;
use tokio::sync::{broadcast, watch, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::audit::{AppendOptions, AuditStore};
use crate::catalog::{Catalog, OpSpec};
use crate::cluster::{Leadership, NodeId};
use crate::config::{Config, ExecutorConfig};
use crate::error::{Error, Result};
use crate::model::{
    Actor, AuditEvent, DedupKey, EventBody, NewEvent, RequestFilter, RequestId, RequestRecord,
    Submission, Value,
};
use crate::policy::Policy;
use crate::runner::{Builtin, Builtins};

/// Catalog, policy and executor settings: what a config reload swaps.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Loaded {
    /// The catalog.
    pub catalog: Catalog,
    /// The policy.
    pub policy: Policy,
    /// Executor settings.
    pub settings: ExecutorConfig,
    /// Directory that relative runner paths resolve against.
    pub base_dir: PathBuf,
    /// How long the store's claim of an expiring dedup key holds
    /// (`[store] dedup_ttl` when the executor was built; a reload keeps it,
    /// as the store does): a frontend whose keys name objects for their
    /// whole life stops acting on objects older than this, so that an
    /// expired claim never lets old work run again.
    pub dedup_ttl: std::time::Duration,
    ops: HashMap<String, Arc<OpSpec>>,
}

impl Loaded {
    /// Build from a validated config.
    pub fn from_config(cfg: &Config) -> Self {
        let catalog = cfg.catalog();
        let ops = catalog
            .iter()
            .map(|o| (o.name.clone(), Arc::new(o.clone())))
            .collect();
        Loaded {
            catalog,
            policy: cfg.policy(),
            settings: cfg.executor.clone(),
            base_dir: cfg.base_dir.clone(),
            dedup_ttl: cfg.store.dedup_ttl.0,
            ops,
        }
    }

    fn op(&self, name: &str) -> Option<Arc<OpSpec>> {
        self.ops.get(name).cloned()
    }
}

/// The answer to a submission.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct Ticket {
    /// The request as recorded so far (durable).
    pub record: RequestRecord,
    /// The dedup key had been seen: this is the earlier request, nothing new ran.
    pub duplicate: bool,
}

/// One lifecycle event with the request record right after it, as frontends see it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Lifecycle {
    /// The audit event.
    pub event: AuditEvent,
    /// The request after the event.
    pub record: RequestRecord,
}

/// What a command (chat text, comment, trailer) did.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Reply {
    /// A request was submitted (or the delivery was a duplicate).
    Submitted(Ticket),
    /// Help text.
    Help(String),
    /// The record after `status`, `approve`, `deny` or `cancel`.
    Record(RequestRecord),
    /// The command's dedup key was claimed already (a redelivery): nothing
    /// was done; the record of the request it acted on, as it is now.
    Duplicate(RequestRecord),
}

struct PendingRun {
    args: BTreeMap<String, Value>,
    expires_at: chrono::DateTime<Utc>,
}

struct LockEntry {
    mutex: Arc<tokio::sync::Mutex<()>>,
    holder: Option<RequestId>,
}

struct Inner {
    loaded: RwLock<Arc<Loaded>>,
    store: Arc<dyn AuditStore>,
    builtins: Builtins,
    http: reqwest::Client,
    locks: Mutex<HashMap<String, LockEntry>>,
    runs: Mutex<HashMap<RequestId, CancellationToken>>,
    pending: Mutex<HashMap<RequestId, PendingRun>>,
    watchers: Mutex<HashMap<RequestId, watch::Sender<Option<RequestRecord>>>>,
    actions: tokio::sync::Mutex<()>,
    events: broadcast::Sender<Lifecycle>,
    accepting: AtomicBool,
    interrupting: AtomicBool,
    tasks: TaskTracker,
    slots: Arc<Semaphore>,
    digest_key: [u8; 32],
    stop: CancellationToken,
    buckets: Mutex<HashMap<String, (f64, std::time::Instant)>>,
    /// The approval-expiry sweeper, awaited by `shutdown` so that the store
    /// is released when it returns.
    sweeper: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// This node's id in a cluster; `None` alone.
    node: Option<NodeId>,
    /// Whose requests' feedback this node's frontends render.
    feedback: Arc<crate::cluster::FeedbackOwners>,
    /// Whether this node does the work that happens once per cluster.
    leadership: Leadership,
    /// Which events other nodes appended have been published here.
    tail: Mutex<tail::Cursor>,
    /// How often the store is read for other nodes' events (`None`: alone).
    follow_every: Option<Duration>,
    /// Reads the store when notified too (`follow_wakeups`).
    follow_wake: Option<Arc<tokio::sync::Notify>>,
    /// The appends between their start and the publication of their
    /// events, which a read of other nodes' events waits for.
    appends: tail::OpenAppends,
    /// One read of other nodes' events at a time.
    tail_reader: tokio::sync::Mutex<()>,
    /// Op lock keys held across the cluster (`None`: alone, the node's own
    /// locks are all there is).
    shared_locks: Option<Arc<dyn SharedLocks>>,
    leader_state: Option<Arc<dyn LeaderState>>,
}

/// The executor handle. Cheap to clone.
#[derive(Clone)]
pub struct Executor {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Executor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executor")
            .field("store", &self.inner.store)
            .field("builtins", &self.inner.builtins)
            .finish_non_exhaustive()
    }
}

/// Builds an [`Executor`].
#[derive(Debug)]
pub struct ExecutorBuilder {
    loaded: Loaded,
    store: Arc<dyn AuditStore>,
    builtins: Builtins,
    http: Option<reqwest::Client>,
    sweep_every: Duration,
    node: Option<NodeId>,
    leadership: Leadership,
    follow_every: Option<Duration>,
    follow_wake: Option<Arc<tokio::sync::Notify>>,
    shared_locks: Option<Arc<dyn SharedLocks>>,
    leader_state: Option<Arc<dyn LeaderState>>,
}

impl ExecutorBuilder {
    /// Register a builtin runner.
    pub fn builtin(mut self, name: impl Into<String>, f: impl Builtin) -> Self {
        self.builtins.register(name, f);
        self
    }

    /// The names of the builtins registered so far, sorted.
    pub fn builtin_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.builtins.names().map(String::from).collect();
        names.sort_unstable();
        names
    }

    /// Use this HTTP client for `http` runners.
    pub fn http_client(mut self, client: reqwest::Client) -> Self {
        self.http = Some(client);
        self
    }

    /// How often pending approvals are checked for expiry (default 1s).
    pub fn expiry_sweep(mut self, every: Duration) -> Self {
        self.sweep_every = every;
        self
    }

    /// Run as node `node` of a cluster sharing one store: the requests it
    /// receives and runs carry its id, and on start it recovers only its own.
    pub fn node(mut self, node: NodeId) -> Self {
        self.node = Some(node);
        self
    }

    /// Leadership of the work that happens once per cluster (the
    /// approval-expiry sweeper among it; frontends get it through their
    /// context). Default: [`Leadership::solo`], a node alone.
    pub fn leadership(mut self, leadership: Leadership) -> Self {
        self.leadership = leadership;
        self
    }

    /// Follow the store for events other nodes append to it, reading it
    /// every `every` (and whenever [`Executor::catch_up`] is called), and
    /// publish them as lifecycle events here. For nodes of a cluster; a node
    /// alone publishes every event as it commits it.
    pub fn follow_store(mut self, every: Duration) -> Self {
        self.follow_every = Some(every);
        self
    }

    /// With [`ExecutorBuilder::follow_store`]: also read the store whenever
    /// `wake` is notified (a store that learns of other nodes' appends, such
    /// as PostgreSQL's `LISTEN`), so that they are seen at once; the polls
    /// go on, in case a wake-up is missed.
    pub fn follow_wakeups(mut self, wake: Arc<tokio::sync::Notify>) -> Self {
        self.follow_wake = Some(wake);
        self
    }

    /// Hold op lock keys across the cluster too (a node of a cluster; see
    /// [`SharedLocks`]).
    pub fn shared_locks(mut self, locks: Arc<dyn SharedLocks>) -> Self {
        self.shared_locks = Some(locks);
        self
    }

    /// Where the work that happens once per cluster keeps its state between
    /// leadership terms (see [`LeaderState`]).
    pub fn leader_state(mut self, state: Arc<dyn LeaderState>) -> Self {
        self.leader_state = Some(state);
        self
    }

    /// Start the executor: requests a crash left in flight on this node are
    /// marked `interrupted`, and pending approvals are picked up again.
    pub async fn build(self) -> Result<Executor> {
        let mut key = [0u8; 32];
        key[..16].copy_from_slice(&ulid::Ulid::new().to_bytes());
        key[16..].copy_from_slice(&ulid::Ulid::new().to_bytes());
        let slots = Arc::new(Semaphore::new(
            self.loaded.settings.max_concurrent_runs.max(1),
        ));
        let (events, _) = broadcast::channel(4096);
        let inner = Arc::new(Inner {
            loaded: RwLock::new(Arc::new(self.loaded)),
            store: self.store,
            builtins: self.builtins,
            http: self.http.unwrap_or_default(),
            locks: Mutex::new(HashMap::new()),
            runs: Mutex::new(HashMap::new()),
            pending: Mutex::new(HashMap::new()),
            watchers: Mutex::new(HashMap::new()),
            actions: tokio::sync::Mutex::new(()),
            events,
            accepting: AtomicBool::new(true),
            interrupting: AtomicBool::new(false),
            tasks: TaskTracker::new(),
            slots,
            digest_key: key,
            stop: CancellationToken::new(),
            buckets: Mutex::new(HashMap::new()),
            sweeper: Mutex::new(None),
            feedback: Arc::new(crate::cluster::FeedbackOwners::new(self.node.clone())),
            node: self.node,
            leadership: self.leadership.clone(),
            tail: Mutex::new(tail::Cursor::default()),
            follow_every: self.follow_every,
            follow_wake: self.follow_wake,
            appends: tail::OpenAppends::default(),
            tail_reader: tokio::sync::Mutex::new(()),
            shared_locks: self.shared_locks,
            leader_state: self.leader_state,
        });
        let exec = Executor { inner };
        exec.start_tail().await?;
        exec.recover().await?;
        // The sweeper holds the executor weakly: dropping every handle (without
        // `shutdown`) ends it too, and with it its hold on the store.
        let weak = Arc::downgrade(&exec.inner);
        let stop = exec.inner.stop.clone();
        let every = self.sweep_every;
        let leadership = self.leadership;
        let sweeper = tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stop.cancelled() => break,
                }
                // Expiry happens once per cluster: on the leader.
                if !leadership.is_leader() {
                    continue;
                }
                let Some(inner) = weak.upgrade() else { break };
                if let Err(e) = (Executor { inner }).expire_due().await {
                    tracing::warn!(error = %e, "approval expiry sweep failed");
                }
            }
        });
        *lock(&exec.inner.sweeper) = Some(sweeper);
        Ok(exec)
    }
}

/// How many times a decision that another node's change made stale is read
/// and made again before its error is returned.
const DECISION_RETRIES: usize = 8;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Executor {
    /// A builder from a validated config and a store.
    pub fn builder(cfg: &Config, store: Arc<dyn AuditStore>) -> ExecutorBuilder {
        ExecutorBuilder {
            loaded: Loaded::from_config(cfg),
            store,
            builtins: Builtins::default(),
            http: None,
            sweep_every: Duration::from_secs(1),
            node: None,
            leadership: Leadership::solo(),
            follow_every: None,
            follow_wake: None,
            shared_locks: None,
            leader_state: None,
        }
    }

    /// Read access to the store. Writes go through the executor
    /// ([`handle`](Self::handle), [`notice`](Self::notice)); whoever opened the
    /// store keeps the writing handle (for retention, say).
    pub fn store(&self) -> crate::audit::StoreView {
        crate::audit::StoreView::new(self.inner.store.clone())
    }

    /// The current catalog and policy.
    pub fn loaded(&self) -> Arc<Loaded> {
        self.inner
            .loaded
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Swap in a new catalog and policy (config reload). Requests in flight keep
    /// the op spec they started with.
    pub fn reload(&self, cfg: &Config) {
        let mut new = Loaded::from_config(cfg);
        // The store keeps the claims TTL it was opened with: frontends must go
        // on judging ages by that one, or a longer TTL read on reload would
        // let them act on objects whose claims already expired.
        new.dedup_ttl = self.loaded().dedup_ttl;
        *self.inner.loaded.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(new);
    }

    /// Lifecycle events of every request, as they are recorded.
    pub fn subscribe(&self) -> broadcast::Receiver<Lifecycle> {
        self.inner.events.subscribe()
    }

    /// Whether new requests are accepted.
    pub fn is_accepting(&self) -> bool {
        self.inner.accepting.load(Ordering::SeqCst)
    }

    /// Requests running (or waiting for a lock or a run slot) now.
    pub fn running(&self) -> usize {
        lock(&self.inner.runs).len()
    }

    /// Requests waiting for approvals now.
    pub fn pending_approvals(&self) -> usize {
        lock(&self.inner.pending).len()
    }

    /// Resolve an actor's principal through the policy. An actor whose principal a
    /// trusted frontend already set (e.g. from an API token) keeps it if it exists.
    pub fn resolve(&self, actor: &Actor) -> Option<String> {
        let loaded = self.loaded();
        if let Some(p) = &actor.principal {
            if loaded.policy.principal(p).is_some() {
                return Some(p.clone());
            }
        }
        loaded
            .policy
            .resolve(&actor.frontend, &actor.external_id)
            .map(String::from)
    }

    fn publish(&self, event: AuditEvent, record: &RequestRecord) {
        // Only a node that follows the store keeps track (a node alone
        // takes no lock here: this is every append's path).
        if self.inner.follow_every.is_some() {
            lock(&self.inner.tail).published_here(event.seq);
        }
        if let Some(w) = lock(&self.inner.watchers).get(&record.request.id) {
            // Another node's events reach this one late, after this node's
            // own later ones: a waiter never goes back to an older record.
            w.send_if_modified(|current| {
                if current
                    .as_ref()
                    .is_some_and(|c| c.last_seq > record.last_seq)
                {
                    return false;
                }
                *current = Some(record.clone());
                true
            });
        }
        let _ = self.inner.events.send(Lifecycle {
            event,
            record: record.clone(),
        });
    }

    /// Append events of one request, fold them into `record`, notify.
    async fn commit(
        &self,
        record: &mut RequestRecord,
        events: Vec<NewEvent>,
        durable: bool,
    ) -> Result<()> {
        let opts = if durable {
            AppendOptions::durable()
        } else {
            AppendOptions::buffered()
        };
        self.commit_with(record, events, opts).await.map(drop)
    }

    /// [`commit`](Self::commit), durably, claiming `dedup` (if any) with the
    /// first event. `Ok(false)`: the key was claimed already and nothing was
    /// appended.
    async fn commit_claiming(
        &self,
        record: &mut RequestRecord,
        events: Vec<NewEvent>,
        dedup: Option<&DedupKey>,
    ) -> Result<bool> {
        self.commit_keyed(record, events, dedup, AppendOptions::durable())
            .await
    }

    /// [`commit_claiming`](Self::commit_claiming) for a decision on
    /// `record` as read: appended only if no one (on any node) changed the
    /// request since; otherwise `Err(Store(Stale))`, and the caller reads it
    /// again and decides again ([`Executor::decided`]).
    async fn commit_decision(
        &self,
        record: &mut RequestRecord,
        events: Vec<NewEvent>,
        dedup: Option<&DedupKey>,
    ) -> Result<bool> {
        self.commit_decision_as(record, events, dedup, None).await
    }

    /// [`commit_decision`](Self::commit_decision), as the cluster's leader
    /// under `leader_epoch` when given: the store refuses it once this node
    /// no longer holds the lease under that epoch.
    async fn commit_decision_as(
        &self,
        record: &mut RequestRecord,
        events: Vec<NewEvent>,
        dedup: Option<&DedupKey>,
        leader_epoch: Option<u64>,
    ) -> Result<bool> {
        let mut opts = AppendOptions::durable().expect_last_seq(record.last_seq);
        opts.leader_epoch = leader_epoch;
        self.commit_keyed(record, events, dedup, opts).await
    }

    /// Commit with `opts`, claiming `dedup` (if any) with the first event;
    /// `Ok(false)` when the key was claimed already.
    async fn commit_keyed(
        &self,
        record: &mut RequestRecord,
        events: Vec<NewEvent>,
        dedup: Option<&DedupKey>,
        mut opts: AppendOptions,
    ) -> Result<bool> {
        if let Some(key) = dedup {
            opts.dedup_key = Some(key.key.clone());
            opts.dedup_expires = key.expires;
        }
        match self.commit_with(record, events, opts).await {
            Err(Error::Store(crate::audit::StoreError::Duplicate(_))) => Ok(false),
            other => other.map(|_| true),
        }
    }

    /// Run a decision, again from a fresh read while another node's change
    /// to the request made it stale (a few times; then the last answer).
    async fn decided<T, F, Fut>(&self, mut decide: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        for _ in 0..DECISION_RETRIES {
            match decide().await {
                Err(Error::Store(crate::audit::StoreError::Stale { .. })) => {
                    tokio::task::yield_now().await
                }
                other => return other,
            }
        }
        decide().await
    }

    /// Append, fold into `record` and publish; the events as stored.
    async fn commit_with(
        &self,
        record: &mut RequestRecord,
        events: Vec<NewEvent>,
        opts: AppendOptions,
    ) -> Result<Vec<AuditEvent>> {
        let _published = self.append_guard();
        let stored = self.inner.store.append(events, opts).await?;
        for e in &stored {
            record.apply(e);
            self.publish(e.clone(), record);
        }
        if record.state.is_terminal() {
            lock(&self.inner.watchers).remove(&record.request.id);
        }
        Ok(stored)
    }

    /// Record a notice about a request (or about nothing in particular).
    pub async fn notice(
        &self,
        request: Option<RequestId>,
        source: &str,
        kind: &str,
        message: impl Into<String>,
        data: serde_json::Value,
    ) -> Result<AuditEvent> {
        let body = EventBody::Notice {
            source: source.into(),
            kind: kind.into(),
            message: message.into(),
            data,
        };
        match request {
            Some(id) => {
                // Appended on the record as read, or read again: the record
                // published with the notice is never older than the request.
                let stored = self
                    .decided(|| async {
                        let mut rec = self.get(id).await?;
                        let opts = AppendOptions::durable().expect_last_seq(rec.last_seq);
                        let event = NewEvent::request(id, body.clone());
                        self.commit_with(&mut rec, vec![event], opts).await
                    })
                    .await?;
                stored
                    .into_iter()
                    .next()
                    .ok_or_else(|| Error::Internal("notice vanished".into()))
            }
            None => {
                let _published = self.append_guard();
                let mut v = self
                    .inner
                    .store
                    .append(vec![NewEvent::global(body)], AppendOptions::durable())
                    .await?;
                v.pop()
                    .ok_or_else(|| Error::Internal("notice vanished".into()))
            }
        }
    }

    /// Record a notice on request `id` that claims `key` for it: what a
    /// frontend did about one of its deliveries that is not a command (an edit
    /// that runs nothing again, say), so that the delivery is recognised
    /// later. `Ok(false)`: the key was claimed already; nothing was recorded.
    pub async fn notice_claiming(
        &self,
        id: RequestId,
        key: &DedupKey,
        source: &str,
        kind: &str,
        message: impl Into<String>,
        data: serde_json::Value,
    ) -> Result<bool> {
        let body = EventBody::Notice {
            source: source.into(),
            kind: kind.into(),
            message: message.into(),
            data,
        };
        let mut rec = self.get(id).await?;
        self.commit_claiming(&mut rec, vec![NewEvent::request(id, body)], Some(key))
            .await
    }

    /// The current record of a request.
    pub async fn get(&self, id: RequestId) -> Result<RequestRecord> {
        self.inner
            .store
            .request(id)
            .await?
            .ok_or_else(|| Error::NotFound(id.to_string()))
    }

    /// Every audit event of a request.
    pub async fn events(&self, id: RequestId) -> Result<Vec<AuditEvent>> {
        Ok(self.inner.store.request_events(id).await?)
    }

    /// Requests, newest first.
    pub async fn list(
        &self,
        filter: &RequestFilter,
        before: Option<RequestId>,
        limit: usize,
    ) -> Result<Vec<RequestRecord>> {
        Ok(self
            .inner
            .store
            .list_requests(filter, before, limit)
            .await?)
    }

    /// Wait until the request's record satisfies `until`.
    pub async fn wait_for(
        &self,
        id: RequestId,
        until: impl Fn(&RequestRecord) -> bool,
    ) -> Result<RequestRecord> {
        let mut rx = {
            let mut w = lock(&self.inner.watchers);
            w.entry(id)
                .or_insert_with(|| watch::channel(None).0)
                .subscribe()
        };
        let rec = match self.get(id).await {
            Ok(rec) => rec,
            Err(e) => {
                // No such request (or no store): drop the watcher made here unless
                // someone else waits on it too.
                let mut w = lock(&self.inner.watchers);
                if w.get(&id).is_some_and(|s| s.receiver_count() <= 1) {
                    w.remove(&id);
                }
                return Err(e);
            }
        };
        if rec.state.is_terminal() {
            // It ended before the watcher was made, so nothing will remove it: do it
            // here (anyone else waiting sees the channel close and reads the record).
            lock(&self.inner.watchers).remove(&id);
            return Ok(rec);
        }
        if until(&rec) {
            return Ok(rec);
        }
        let read = rec.last_seq;
        loop {
            if rx.changed().await.is_err() {
                return self.get(id).await;
            }
            let current = rx.borrow_and_update().clone();
            // Older than what was read (another node's event, published
            // late): not news.
            if let Some(r) = current.filter(|r| r.last_seq >= read) {
                if until(&r) || r.state.is_terminal() {
                    return Ok(r);
                }
            }
        }
    }

    /// Wait until the request reaches a terminal state.
    pub async fn wait(&self, id: RequestId) -> Result<RequestRecord> {
        self.wait_for(id, |r| r.state.is_terminal()).await
    }

    fn principal_of(&self, actor: &Actor) -> Result<String> {
        self.resolve(actor).ok_or_else(|| Error::UnknownIdentity {
            frontend: actor.frontend.clone(),
            external_id: actor.external_id.clone(),
        })
    }

    fn with_principal(&self, actor: &Actor, principal: &str) -> Actor {
        let mut a = actor.clone();
        a.principal = Some(principal.to_string());
        a
    }

    /// Stop taking requests, let runs finish within `grace`, interrupt the rest,
    /// and flush the store. Pending approvals stay pending (they survive restarts).
    pub async fn shutdown(&self, grace: Duration) -> Result<()> {
        self.inner.accepting.store(false, Ordering::SeqCst);
        self.inner.tasks.close();
        if tokio::time::timeout(grace, self.inner.tasks.wait())
            .await
            .is_err()
        {
            self.inner.interrupting.store(true, Ordering::SeqCst);
            let tokens: Vec<CancellationToken> = lock(&self.inner.runs).values().cloned().collect();
            for t in tokens {
                t.cancel();
            }
            self.inner.tasks.wait().await;
        }
        self.inner.stop.cancel();
        let sweeper = lock(&self.inner.sweeper).take();
        if let Some(sweeper) = sweeper {
            let _ = sweeper.await;
        }
        self.inner.store.flush().await?;
        Ok(())
    }
}

impl tower::Service<Submission> for Executor {
    type Response = Ticket;
    type Error = Error;
    type Future = Pin<Box<dyn Future<Output = Result<Ticket>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<()>> {
        if self.is_accepting() {
            Poll::Ready(Ok(()))
        } else {
            Poll::Ready(Err(Error::ShuttingDown))
        }
    }

    fn call(&mut self, sub: Submission) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { this.submit(sub).await })
    }
}
