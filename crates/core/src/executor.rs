//! The executor: validate → authorize → approval gate → lock → run with timeout →
//! result, every transition one audit event.
//!
//! It is a plain async API ([`Executor::submit`], [`Executor::approve`], ...) and a
//! [`tower::Service`] of [`Submission`]s, so rate limits, concurrency limits and
//! timeouts are ordinary tower layers.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use chrono::Utc;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use tokio::sync::{broadcast, watch, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::audit::{AppendOptions, AuditStore, StoreError};
use crate::catalog::{render_template, Catalog, LockMode, OpSpec};
use crate::config::{Config, ExecutorConfig};
use crate::error::{Error, Result};
use crate::grammar::{self, Command};
use crate::model::{
    Actor, ApprovalRecord, AuditEvent, DedupKey, EventBody, NewEvent, Origin, Request,
    RequestFilter, RequestId, RequestRecord, RunOutcome, State, Submission, Transition, Value,
    REDACTED,
};
use crate::policy::{Place, Policy};
use crate::runner::{self, Builtin, Builtins, RunContext, RunEnd};

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

    /// Start the executor: requests a crash left in flight are marked
    /// `interrupted`, and pending approvals are picked up again.
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
        });
        let exec = Executor { inner };
        exec.recover().await?;
        // The sweeper holds the executor weakly: dropping every handle (without
        // `shutdown`) ends it too, and with it its hold on the store.
        let weak = Arc::downgrade(&exec.inner);
        let stop = exec.inner.stop.clone();
        let every = self.sweep_every;
        let sweeper = tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stop.cancelled() => break,
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
        }
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn AuditStore> {
        &self.inner.store
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
        let new = Arc::new(Loaded::from_config(cfg));
        *self.inner.loaded.write().unwrap_or_else(|p| p.into_inner()) = new;
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

    fn digest(&self, op: &str, args: &BTreeMap<String, Value>, secret: &[String]) -> String {
        let mut canon = BTreeMap::new();
        for (k, v) in args {
            let j = if secret.contains(k) {
                let mut mac =
                    Hmac::<Sha256>::new_from_slice(&self.inner.digest_key).expect("any key size");
                mac.update(v.as_text().as_bytes());
                serde_json::Value::String(format!(
                    "hmac:{}",
                    hex::encode(mac.finalize().into_bytes())
                ))
            } else {
                v.to_json()
            };
            canon.insert(k.clone(), j);
        }
        let bytes = serde_json::to_vec(&serde_json::json!({ "op": op, "args": canon }))
            .expect("json values serialize");
        hex::encode(Sha256::digest(bytes))
    }

    /// Submit a request. Returns once its first events are durable: the request is
    /// then accepted (it runs in the background, or waits for approvals), or
    /// recorded as `invalid`/`denied` with the reason. A dedup key seen before
    /// returns the earlier request with `duplicate: true` and runs nothing.
    pub async fn submit(&self, sub: Submission) -> Result<Ticket> {
        self.submit_inner(sub, None).await
    }

    async fn submit_inner(&self, sub: Submission, retry_of: Option<RequestId>) -> Result<Ticket> {
        if !self.is_accepting() {
            return Err(Error::ShuttingDown);
        }
        let store = &self.inner.store;
        if let Some(key) = &sub.dedup_key {
            if let Some(id) = store.find_dedup(key).await? {
                return self.duplicate(id).await;
            }
        }
        let loaded = self.loaded();
        let id = RequestId::new();
        let mut actor = sub.actor.clone();
        actor.principal = self.resolve(&sub.actor);
        self.take_token(&loaded, &actor)?;
        let op = loaded.op(&sub.op);
        let secret_names: Vec<String> = op.as_ref().map(|o| o.secret_params()).unwrap_or_default();
        let validated = match &op {
            None => Err(vec![format!(
                "unknown op `{}`{}",
                sub.op,
                loaded
                    .catalog
                    .suggest(&sub.op)
                    .map(|s| format!(" (did you mean `{s}`?)"))
                    .unwrap_or_default()
            )]),
            Some(op) => op.validate_args(&sub.args),
        };
        let (full_args, invalid) = match validated {
            Ok(a) => (a, None),
            Err(errs) => (BTreeMap::new(), Some(errs.join("; "))),
        };
        let redacted: BTreeMap<String, Value> = full_args
            .iter()
            .map(|(k, v)| {
                if secret_names.contains(k) {
                    (k.clone(), Value::Str(REDACTED.into()))
                } else {
                    (k.clone(), v.clone())
                }
            })
            .collect();
        let raw_args = if invalid.is_some() {
            sub.args
                .iter()
                .map(|(k, v)| {
                    // Unknown ops: we cannot tell which values are secret, so keep names only.
                    let keep = op.is_some() && !secret_names.contains(k);
                    (k.clone(), if keep { v.clone() } else { REDACTED.into() })
                })
                .collect()
        } else {
            Vec::new()
        };
        let request = Request {
            id,
            op: sub.op.clone(),
            digest: self.digest(&sub.op, &full_args, &secret_names),
            args: redacted,
            raw_args,
            secret_args: secret_names
                .iter()
                .filter(|n| full_args.contains_key(*n))
                .cloned()
                .collect(),
            actor: actor.clone(),
            origin: sub.origin.clone(),
            dedup_key: sub.dedup_key.clone(),
            dedup_expires: sub.dedup_key.is_some() && sub.dedup_expires,
            dry_run: sub.dry_run,
            provenance: sub.provenance.clone(),
            created_at: Utc::now(),
            retry_of,
        };
        let request = Arc::new(request);
        let mut events = vec![NewEvent::request(
            id,
            EventBody::Received {
                request: Arc::clone(&request),
            },
        )];
        enum Next {
            Nothing,
            Run(Arc<OpSpec>),
            Pending(chrono::DateTime<Utc>),
        }
        let mut next = Next::Nothing;
        if let Some(reason) = invalid {
            events.push(NewEvent::transition(
                id,
                Transition::to(State::Invalid).reason(reason),
            ));
        } else if let (Some(op), Some(principal)) = (&op, &actor.principal) {
            let place = Place {
                frontend: &sub.origin.frontend,
                location: &sub.origin.location,
            };
            if let Err(denial) = loaded.policy.authorize(principal, op, place) {
                events.push(NewEvent::transition(
                    id,
                    Transition::to(State::Denied).reason(denial.0),
                ));
            } else if sub.dry_run {
                let ctx = self.run_context(
                    &loaded,
                    op.clone(),
                    id,
                    &full_args,
                    Some(principal.clone()),
                    CancellationToken::new(),
                );
                events.push(NewEvent::transition(
                    id,
                    Transition::to(State::Succeeded)
                        .reason("dry run: nothing was run")
                        .outcome(RunOutcome {
                            exit_code: Some(0),
                            output: format!(
                                "dry run: would {}{}",
                                runner::describe(&ctx),
                                if op.approvals > 0 {
                                    format!(" after {} approval(s)", op.approvals)
                                } else {
                                    String::new()
                                }
                            ),
                            ..Default::default()
                        }),
                ));
            } else if op.approvals > 0 {
                let ttl = op.approval_ttl.unwrap_or(loaded.settings.approval_ttl).0;
                let expires = Utc::now()
                    + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::hours(1));
                let mut t = Transition::to(State::PendingApproval).reason(format!(
                    "needs {} approval(s) from {}",
                    op.approvals,
                    approvers_text(&loaded.policy, op)
                ));
                t.approvals_needed = Some(op.approvals);
                t.expires_at = Some(expires);
                events.push(NewEvent::transition(id, t));
                next = Next::Pending(expires);
            } else {
                next = Next::Run(op.clone());
            }
        } else {
            events.push(NewEvent::transition(
                id,
                Transition::to(State::Denied).reason(
                    Error::UnknownIdentity {
                        frontend: actor.frontend.clone(),
                        external_id: actor.external_id.clone(),
                    }
                    .to_string(),
                ),
            ));
        }
        let opts = AppendOptions {
            durable: true,
            dedup_key: sub.dedup_key.clone(),
            dedup_expires: sub.dedup_key.is_some() && sub.dedup_expires,
        };
        let stored = match store.append(events, opts).await {
            Ok(s) => s,
            Err(StoreError::Duplicate(existing)) => return self.duplicate(existing).await,
            Err(e) => return Err(e.into()),
        };
        let mut record = RequestRecord::new(request, &stored[0]);
        for e in &stored[1..] {
            record.apply(e);
        }
        for e in &stored {
            self.publish(e.clone(), &record);
        }
        match next {
            Next::Nothing => {}
            Next::Pending(expires_at) => {
                lock(&self.inner.pending).insert(
                    id,
                    PendingRun {
                        args: full_args,
                        expires_at,
                    },
                );
            }
            Next::Run(op) => self.spawn_run(record.clone(), op, full_args),
        }
        Ok(Ticket {
            record,
            duplicate: false,
        })
    }

    /// Per-principal token bucket: floods are refused before they reach the store.
    fn take_token(&self, loaded: &Loaded, actor: &Actor) -> Result<()> {
        let per_minute = loaded.settings.rate_limit_per_minute;
        if per_minute == 0 {
            return Ok(());
        }
        let key = match &actor.principal {
            Some(p) => p.clone(),
            None => format!("unmapped identities on {}", actor.frontend),
        };
        let capacity = f64::from(per_minute);
        let per_sec = capacity / 60.0;
        let now = std::time::Instant::now();
        let mut buckets = lock(&self.inner.buckets);
        if buckets.len() > 10_000 {
            buckets.retain(|_, (tokens, at)| {
                *tokens + at.elapsed().as_secs_f64() * per_sec < capacity
            });
        }
        let (tokens, at) = buckets.entry(key.clone()).or_insert((capacity, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * per_sec).min(capacity);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            let wait = ((1.0 - *tokens) / per_sec).ceil();
            Err(Error::RateLimited(format!(
                "{key} submitted more than {per_minute} requests in a minute; try again in {wait}s (limit: [executor] rate_limit_per_minute)"
            )))
        }
    }

    async fn duplicate(&self, id: RequestId) -> Result<Ticket> {
        let record =
            self.inner.store.request(id).await?.ok_or_else(|| {
                Error::Internal(format!("dedup index names missing request {id}"))
            })?;
        Ok(Ticket {
            record,
            duplicate: true,
        })
    }

    fn publish(&self, event: AuditEvent, record: &RequestRecord) {
        if let Some(w) = lock(&self.inner.watchers).get(&record.request.id) {
            w.send_replace(Some(record.clone()));
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
        let stored = self.inner.store.append(events, opts).await?;
        for e in stored {
            record.apply(&e);
            self.publish(e, record);
        }
        if record.state.is_terminal() {
            lock(&self.inner.watchers).remove(&record.request.id);
        }
        Ok(())
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
                let mut rec = self.get(id).await?;
                self.commit(&mut rec, vec![NewEvent::request(id, body)], true)
                    .await?;
                self.inner
                    .store
                    .request_events(id)
                    .await?
                    .pop()
                    .ok_or_else(|| Error::Internal("notice vanished".into()))
            }
            None => {
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

    fn run_context(
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

    fn spawn_run(&self, record: RequestRecord, op: Arc<OpSpec>, args: BTreeMap<String, Value>) {
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
        let mut _guard = None;
        if let Some(key) = &key {
            let (mutex, holder) = {
                let mut locks = lock(&self.inner.locks);
                let entry = locks.entry(key.clone()).or_insert_with(|| LockEntry {
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
                        return self
                            .commit(&mut record, vec![NewEvent::transition(id, t)], true)
                            .await;
                    }
                    self.commit(
                        &mut record,
                        vec![NewEvent::request(
                            id,
                            EventBody::Notice {
                                source: "executor".into(),
                                kind: "lock_wait".into(),
                                message: format!(
                                    "queued: lock `{key}` is held by request {holder}"
                                ),
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
                            return self.commit(&mut record, vec![NewEvent::transition(id, Transition::to(st).reason(why))], true).await;
                        }
                    }
                }
            };
            if let Some(e) = lock(&self.inner.locks).get_mut(key) {
                e.holder = Some(id);
            }
            _guard = Some(guard);
        }
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
            vec![NewEvent::transition(id, Transition::to(State::Running))],
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
        let t = match end {
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
        };
        drop(_guard);
        self.release(key.as_deref(), id);
        self.commit(&mut record, vec![NewEvent::transition(id, t)], true)
            .await
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
        loop {
            if rx.changed().await.is_err() {
                return self.get(id).await;
            }
            let current = rx.borrow_and_update().clone();
            if let Some(r) = current {
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

    /// Approve a pending request. `digest`, when given (e.g. carried by a chat
    /// button), must match the request's: an approval is bound to exactly what was
    /// asked.
    pub async fn approve(
        &self,
        id: RequestId,
        approver: &Actor,
        digest: Option<&str>,
    ) -> Result<RequestRecord> {
        self.decide(id, approver, digest, true, None).await
    }

    /// Deny a pending request; it ends `rejected`.
    pub async fn deny(
        &self,
        id: RequestId,
        approver: &Actor,
        reason: Option<String>,
    ) -> Result<RequestRecord> {
        self.decide(id, approver, None, false, reason).await
    }

    async fn decide(
        &self,
        id: RequestId,
        approver: &Actor,
        digest: Option<&str>,
        approve: bool,
        reason: Option<String>,
    ) -> Result<RequestRecord> {
        let principal = self.principal_of(approver)?;
        let _g = self.inner.actions.lock().await;
        let mut rec = self.get(id).await?;
        let verb = if approve { "approve" } else { "deny" };
        if rec.state != State::PendingApproval {
            return Err(Error::Conflict(format!(
                "request {id} is {}, not pending approval; there is nothing to {verb}",
                rec.state
            )));
        }
        if let Some(exp) = rec.expires_at {
            if Utc::now() >= exp {
                self.expire(&mut rec).await?;
                return Err(Error::Approval(format!(
                    "request {id} expired at {exp}; approvals are no longer accepted, submit it again"
                )));
            }
        }
        if rec.request.actor.principal.as_deref() == Some(principal.as_str()) {
            return Err(Error::Approval(format!(
                "`{principal}` asked for request {id}; someone else must {verb} it (approver ≠ requester){}",
                if approve { "" } else { " — use `cancel` to withdraw it" }
            )));
        }
        let loaded = self.loaded();
        let Some(op) = loaded.op(&rec.request.op) else {
            return Err(Error::Conflict(format!(
                "op `{}` is no longer in the catalog",
                rec.request.op
            )));
        };
        if !loaded.policy.may_approve(&principal, &op) {
            return Err(Error::Approval(format!(
                "`{principal}` may not {verb} `{}` requests (approvers: {})",
                op.name,
                approvers_text(&loaded.policy, &op)
            )));
        }
        if let Some(d) = digest {
            if d != rec.request.digest {
                return Err(Error::Approval(format!(
                    "the approval was for different content than request {id} now has (digest mismatch); look at it again"
                )));
            }
        }
        if approve
            && rec
                .approvals
                .iter()
                .any(|a| a.approve && a.by.principal.as_deref() == Some(principal.as_str()))
        {
            return Err(Error::Approval(format!(
                "`{principal}` already approved request {id}"
            )));
        }
        let by = self.with_principal(approver, &principal);
        let mut events = vec![NewEvent::request(
            id,
            EventBody::Approval(ApprovalRecord {
                by: by.clone(),
                approve,
                digest: rec.request.digest.clone(),
                at: Utc::now(),
                reason: reason.clone(),
            }),
        )];
        let mut run = false;
        if !approve {
            let mut t = Transition::to(State::Rejected).by(by.clone());
            t.reason = Some(match &reason {
                Some(r) => format!("denied by {principal}: {r}"),
                None => format!("denied by {principal}"),
            });
            events.push(NewEvent::transition(id, t));
        } else if rec.approvals_needed <= 1 {
            events.push(NewEvent::transition(
                id,
                Transition::to(State::Approved)
                    .by(by.clone())
                    .reason(format!("approved by {}", approvers_of(&rec, &principal))),
            ));
            run = true;
        }
        self.commit(&mut rec, events, true).await?;
        if !approve || run {
            let pending = lock(&self.inner.pending).remove(&id);
            if run {
                match pending {
                    Some(p) => self.spawn_run(rec.clone(), op, p.args),
                    None => {
                        let t = Transition::to(State::Interrupted)
                            .reason("its arguments were not kept across a restart (secret values are never stored); submit it again");
                        self.commit(&mut rec, vec![NewEvent::transition(id, t)], true)
                            .await?;
                    }
                }
            }
        }
        Ok(rec)
    }

    async fn expire(&self, rec: &mut RequestRecord) -> Result<()> {
        let id = rec.request.id;
        lock(&self.inner.pending).remove(&id);
        let t = Transition::to(State::Expired).reason(format!(
            "approvals did not arrive before {}",
            rec.expires_at.map(|e| e.to_rfc3339()).unwrap_or_default()
        ));
        self.commit(rec, vec![NewEvent::transition(id, t)], true)
            .await
    }

    /// Expire pending requests whose approval window has passed.
    pub async fn expire_due(&self) -> Result<usize> {
        let now = Utc::now();
        let due: Vec<RequestId> = lock(&self.inner.pending)
            .iter()
            .filter(|(_, p)| p.expires_at <= now)
            .map(|(id, _)| *id)
            .collect();
        let mut n = 0;
        for id in due {
            let _g = self.inner.actions.lock().await;
            let mut rec = self.get(id).await?;
            if rec.state == State::PendingApproval {
                self.expire(&mut rec).await?;
                n += 1;
            } else {
                lock(&self.inner.pending).remove(&id);
            }
        }
        Ok(n)
    }

    /// Cancel a request that is pending, queued or running. The requester may
    /// cancel, and so may anyone who may approve the op.
    pub async fn cancel(&self, id: RequestId, actor: &Actor) -> Result<RequestRecord> {
        let principal = self.principal_of(actor)?;
        let _g = self.inner.actions.lock().await;
        let mut rec = self.get(id).await?;
        if rec.state.is_terminal() {
            return Err(Error::Conflict(format!(
                "request {id} already ended ({})",
                rec.state
            )));
        }
        let loaded = self.loaded();
        let is_requester = rec.request.actor.principal.as_deref() == Some(principal.as_str());
        let may = is_requester
            || loaded
                .op(&rec.request.op)
                .is_some_and(|op| loaded.policy.may_approve(&principal, &op));
        if !may {
            return Err(Error::Forbidden(format!(
                "`{principal}` may not cancel request {id}: only its requester or an approver of `{}` may",
                rec.request.op
            )));
        }
        let token = lock(&self.inner.runs).get(&id).cloned();
        if let Some(token) = token {
            self.commit(
                &mut rec,
                vec![NewEvent::request(
                    id,
                    EventBody::Notice {
                        source: "executor".into(),
                        kind: "cancel_requested".into(),
                        message: format!("cancel requested by {principal}"),
                        data: serde_json::Value::Null,
                    },
                )],
                true,
            )
            .await?;
            token.cancel();
            drop(_g);
            return self.wait(id).await;
        }
        lock(&self.inner.pending).remove(&id);
        let by = self.with_principal(actor, &principal);
        let t = Transition::to(State::Cancelled)
            .by(by)
            .reason(format!("cancelled by {principal}"));
        self.commit(&mut rec, vec![NewEvent::transition(id, t)], true)
            .await?;
        Ok(rec)
    }

    /// Void a request pending approval because what it (or one of its approvals)
    /// came from changed under it: an edited or deleted issue, comment or message.
    /// It ends `cancelled` with `voided: <reason>`; approvals given so far no
    /// longer count. Unlike [`cancel`](Self::cancel) no principal is needed: the
    /// frontend that saw the edit decides, and should first record what happened
    /// with [`notice`](Self::notice). A request in any other state is left alone
    /// (`Conflict`).
    pub async fn void(
        &self,
        id: RequestId,
        by: Option<&Actor>,
        reason: &str,
    ) -> Result<RequestRecord> {
        let _g = self.inner.actions.lock().await;
        let mut rec = self.get(id).await?;
        if rec.state != State::PendingApproval {
            return Err(Error::Conflict(format!(
                "request {id} is {}; only a request pending approval can be voided",
                rec.state
            )));
        }
        lock(&self.inner.pending).remove(&id);
        let mut t = Transition::to(State::Cancelled).reason(format!("voided: {reason}"));
        t.by = by.cloned();
        self.commit(&mut rec, vec![NewEvent::transition(id, t)], true)
            .await?;
        Ok(rec)
    }

    /// Run a finished request again with the same op and arguments, as a new
    /// request by `actor` (checked by the policy and approvals again).
    pub async fn retry(
        &self,
        id: RequestId,
        actor: &Actor,
        origin: Origin,
        dedup_key: Option<DedupKey>,
    ) -> Result<Ticket> {
        self.principal_of(actor)?;
        let rec = self.get(id).await?;
        if !rec.state.is_terminal() {
            return Err(Error::Conflict(format!(
                "request {id} is still {}; retry it when it ends",
                rec.state
            )));
        }
        if rec.state == State::Invalid {
            return Err(Error::Conflict(format!(
                "request {id} was invalid ({}); fix it and submit it again",
                rec.reason.clone().unwrap_or_default()
            )));
        }
        if !rec.request.secret_args.is_empty() {
            return Err(Error::Conflict(format!(
                "request {id} had secret arguments ({}), which are never stored; submit it again with them",
                rec.request.secret_args.join(", ")
            )));
        }
        let mut sub = Submission::new(rec.request.op.clone(), actor.clone(), origin);
        sub.args = rec
            .request
            .args
            .iter()
            .map(|(k, v)| (k.clone(), v.as_text()))
            .collect();
        if let Some(key) = dedup_key {
            sub = sub.dedup_with(key);
        }
        sub.provenance = rec.request.provenance.clone();
        sub.provenance.insert("retry_of".into(), id.to_string());
        self.submit_inner(sub, Some(id)).await
    }

    /// Help for `actor` at `origin`: only the ops they may run there.
    pub fn help(&self, actor: &Actor, origin: &Origin, op: Option<&str>) -> Result<String> {
        let principal = self.principal_of(actor)?;
        let loaded = self.loaded();
        let place = Place {
            frontend: &origin.frontend,
            location: &origin.location,
        };
        let visible = loaded
            .policy
            .visible_ops(&principal, &loaded.catalog, place);
        if let Some(name) = op {
            let Some(spec) = visible.iter().find(|o| o.name == name) else {
                let hint = grammar::suggest(name, visible.iter().map(|o| o.name.as_str()))
                    .map(|s| format!(" Did you mean `{s}`?"))
                    .unwrap_or_default();
                return Ok(format!("`{name}` is not an op you may run here.{hint}"));
            };
            return Ok(describe_op(&loaded, spec));
        }
        if visible.is_empty() {
            return Ok(format!("`{principal}` may not run any op here."));
        }
        let mut s = String::from("Ops you may run here:\n");
        for o in &visible {
            s.push_str(&format!("  {}", o.usage()));
            if !o.description.is_empty() {
                s.push_str(&format!("  — {}", o.description));
            }
            if o.approvals > 0 {
                s.push_str(&format!(
                    " (needs {} approval{})",
                    o.approvals,
                    if o.approvals == 1 { "" } else { "s" }
                ));
            }
            s.push('\n');
        }
        s.push_str("Add --dry-run to see what would run. Also: help OP, status ID, approve ID, deny ID [reason], cancel ID, retry ID");
        Ok(s)
    }

    /// Parse command text (chat message, issue comment line, commit trailer) and do it.
    pub async fn command(
        &self,
        text: &str,
        actor: &Actor,
        origin: &Origin,
        dedup_key: Option<DedupKey>,
    ) -> Result<Reply> {
        let cmd = grammar::parse(text)?;
        self.execute_command(cmd, actor, origin, dedup_key, BTreeMap::new())
            .await
    }

    /// Do a parsed command.
    pub async fn execute_command(
        &self,
        cmd: Command,
        actor: &Actor,
        origin: &Origin,
        dedup_key: Option<DedupKey>,
        provenance: BTreeMap<String, String>,
    ) -> Result<Reply> {
        let parse_id = |s: &str| -> Result<RequestId> {
            s.parse::<RequestId>()
                .map_err(|_| Error::NotFound(format!("{s} (request ids are 26-character ULIDs)")))
        };
        match cmd {
            Command::Run { op, args, dry_run } => {
                let mut sub = Submission::new(op, actor.clone(), origin.clone());
                sub.args = args;
                sub.dry_run = dry_run;
                if let Some(key) = dedup_key {
                    sub = sub.dedup_with(key);
                }
                sub.provenance = provenance;
                Ok(Reply::Submitted(self.submit(sub).await?))
            }
            Command::Help { op } => Ok(Reply::Help(self.help(actor, origin, op.as_deref())?)),
            Command::Status { id } => {
                self.principal_of(actor)?;
                Ok(Reply::Record(self.get(parse_id(&id)?).await?))
            }
            Command::Approve { id } => Ok(Reply::Record(
                self.approve(parse_id(&id)?, actor, None).await?,
            )),
            Command::Deny { id, reason } => Ok(Reply::Record(
                self.deny(parse_id(&id)?, actor, reason).await?,
            )),
            Command::Cancel { id } => Ok(Reply::Record(self.cancel(parse_id(&id)?, actor).await?)),
            Command::Retry { id } => Ok(Reply::Submitted(
                self.retry(parse_id(&id)?, actor, origin.clone(), dedup_key)
                    .await?,
            )),
        }
    }

    async fn recover(&self) -> Result<()> {
        let active = self.inner.store.active_requests().await?;
        for mut rec in active {
            let id = rec.request.id;
            match rec.state {
                State::PendingApproval if rec.request.secret_args.is_empty() => {
                    let args = rec.request.args.clone();
                    let expires_at = rec.expires_at.unwrap_or_else(Utc::now);
                    lock(&self.inner.pending).insert(id, PendingRun { args, expires_at });
                }
                State::PendingApproval => {
                    let t = Transition::to(State::Interrupted).reason(
                        "YouOps restarted while this waited for approval; secret arguments are never stored, so submit it again",
                    );
                    self.commit(&mut rec, vec![NewEvent::transition(id, t)], true)
                        .await?;
                }
                _ => {
                    let t = Transition::to(State::Interrupted).reason(format!(
                        "YouOps stopped while this request was {}; it was not re-run (check the target, then `retry {id}` if needed)",
                        rec.state
                    ));
                    self.commit(&mut rec, vec![NewEvent::transition(id, t)], true)
                        .await?;
                }
            }
        }
        Ok(())
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

fn approvers_text(policy: &Policy, op: &OpSpec) -> String {
    let roles = if op.approvers.is_empty() {
        policy.roles_for(op)
    } else {
        op.approvers.clone()
    };
    if roles.is_empty() {
        "nobody (no role may approve it)".into()
    } else {
        format!("role {} (not the requester)", roles.join(" or "))
    }
}

fn approvers_of(rec: &RequestRecord, last: &str) -> String {
    let mut names: Vec<String> = rec
        .approvals
        .iter()
        .filter(|a| a.approve)
        .filter_map(|a| a.by.principal.clone())
        .collect();
    names.push(last.to_string());
    names.join(", ")
}

fn describe_op(loaded: &Loaded, op: &OpSpec) -> String {
    let mut s = format!("{}\n", op.usage());
    if !op.description.is_empty() {
        s.push_str(&format!("{}\n", op.description));
    }
    for p in &op.params {
        s.push_str(&format!(
            "  {} ({}{}){}{}\n",
            p.name,
            p.type_hint(),
            if p.is_required() { ", required" } else { "" },
            p.default
                .as_ref()
                .map(|d| format!(", default {d}"))
                .unwrap_or_default(),
            if p.description.is_empty() {
                String::new()
            } else {
                format!(": {}", p.description)
            }
        ));
    }
    if op.approvals > 0 {
        s.push_str(&format!(
            "Needs {} approval(s) from {}.\n",
            op.approvals,
            approvers_text(&loaded.policy, op)
        ));
    }
    if let Some(l) = &op.lock {
        s.push_str(&format!(
            "Lock: `{l}` ({} when held).\n",
            match op.lock_mode {
                LockMode::Queue => "queues",
                LockMode::Refuse => "refuses",
            }
        ));
    }
    s.push_str(&format!(
        "Timeout: {}.",
        op.timeout.unwrap_or(loaded.settings.default_timeout)
    ));
    s
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::MemoryStore;

    #[tokio::test]
    async fn floods_are_refused_per_principal_before_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = Config::parse(
            r#"
[executor]
rate_limit_per_minute = 5
[[ops]]
name = "noop"
runner = { type = "builtin", name = "noop" }
roles = ["ops"]
[principals.a]
roles = ["ops"]
identities = { t = ["a"] }
[principals.b]
roles = ["ops"]
identities = { t = ["b"] }
"#,
            dir.path(),
            "t",
            &|_| None,
        )
        .unwrap();
        let store = Arc::new(MemoryStore::new());
        let exec = Executor::builder(&cfg, store.clone())
            .builtin("noop", |_c: runner::BuiltinCall| async {
                Ok(String::new())
            })
            .build()
            .await
            .unwrap();
        let sub = |who: &str| Submission::new("noop", Actor::new("t", who), Origin::new("t"));
        for _ in 0..5 {
            let t = exec.submit(sub("a")).await.unwrap();
            exec.wait(t.record.request.id).await.unwrap();
        }
        let (head_before, _) = store.head().await.unwrap();
        let err = exec.submit(sub("a")).await.unwrap_err();
        assert_eq!(err.code(), "rate_limited", "{err}");
        assert!(err.to_string().contains("rate_limit_per_minute"), "{err}");
        // Refused before the store: nothing was appended for it.
        let (head_after, _) = store.head().await.unwrap();
        assert_eq!(head_after, head_before);
        // Another principal has its own budget; unmapped identities share one per frontend.
        exec.submit(sub("b")).await.unwrap();
        for i in 0..5 {
            exec.submit(sub(&format!("stranger-{i}"))).await.unwrap();
        }
        assert_eq!(
            exec.submit(sub("stranger-x")).await.unwrap_err().code(),
            "rate_limited"
        );
    }
}
