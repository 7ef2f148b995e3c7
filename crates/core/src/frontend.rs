//! The frontend plugin API.
//!
//! A frontend turns its wire input (a Slack slash command, a GitHub webhook, a git
//! commit, ...) into [`Submission`](crate::Submission)s for the executor and renders
//! [`Lifecycle`] events of its requests back in its own format. It is one
//! dyn-compatible trait, [`Frontend`], plus one context struct,
//! [`FrontendContext`]; optional capabilities (HTTP routes, readiness) are default
//! methods. Registration is explicit: [`Frontends`] is the list the daemon and
//! embedders build, and [`FrontendHost`] runs it.
//!
//! What every frontend needs besides the trait is here once:
//! [`delivery`] (outbound calls with timeouts, backoff, `Retry-After` and
//! audit notices), [`webhook`] (HMAC-SHA256 signatures, bearer tokens,
//! seen-sets) and [`lifecycle`] (the loop that follows a frontend's requests).
//!
//! HTTP is plain `http` types with a fully read body (`http::Request<Bytes>`), so
//! core depends on no web framework; the host (the daemon) enforces body limits and
//! timeouts before a frontend sees a request, and a webhook frontend verifies
//! signatures over exactly those bytes.
//!
//! ```
//! use std::sync::Arc;
//! use youops_core::frontend::{Frontend, FrontendContext, FrontendError, Frontends};
//!
//! #[derive(Debug)]
//! struct Quiet;
//!
//! #[async_trait::async_trait]
//! impl Frontend for Quiet {
//!     fn name(&self) -> &str { "quiet" }
//!     async fn run(&self, ctx: FrontendContext) -> Result<(), FrontendError> {
//!         ctx.shutdown.cancelled().await;
//!         Ok(())
//!     }
//! }
//!
//! let set = Frontends::new().with(Quiet);
//! assert_eq!(set.names(), vec!["quiet"]);
//! ```

use std::collections::HashSet;
use std::fmt;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::executor::{Executor, Lifecycle};
use crate::model::RequestId;

/// An HTTP request as a frontend sees it: headers and the whole (size-limited) body.
pub type HttpRequest = http::Request<Bytes>;
/// An HTTP response from a frontend.
pub type HttpResponse = http::Response<Bytes>;

/// Errors a frontend reports to its host.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FrontendError {
    /// Its config section is wrong.
    #[error("config of frontend `{frontend}`: {message}")]
    Config {
        /// Frontend name.
        frontend: String,
        /// What is wrong.
        message: String,
    },
    /// It failed while running.
    #[error("frontend `{frontend}` failed: {message}")]
    Failed {
        /// Frontend name.
        frontend: String,
        /// What happened.
        message: String,
    },
}

/// One HTTP route a frontend serves under the daemon's listener.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct HttpRoute {
    /// Method (webhooks are POST).
    pub method: http::Method,
    /// Absolute path, e.g. `/slack/commands`.
    pub path: String,
}

impl HttpRoute {
    /// A POST route.
    pub fn post(path: impl Into<String>) -> Self {
        HttpRoute {
            method: http::Method::POST,
            path: path.into(),
        }
    }
}

/// What a frontend gets from its host.
#[derive(Clone)]
#[non_exhaustive]
pub struct FrontendContext {
    /// The executor: every request goes through it.
    pub executor: Executor,
    /// Cancelled when the host shuts down; `run` should return soon after.
    pub shutdown: CancellationToken,
    /// The frontend's own `[frontends.NAME]` config section (empty if absent).
    pub config: toml::Table,
    /// The daemon's public base URL, for links to the dashboard.
    pub public_url: Option<String>,
    name: String,
    watched: Arc<Mutex<HashSet<RequestId>>>,
}

impl fmt::Debug for FrontendContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FrontendContext")
            .field("name", &self.name)
            .field("public_url", &self.public_url)
            .finish_non_exhaustive()
    }
}

impl FrontendContext {
    /// A context for frontend `name`.
    pub fn new(
        name: impl Into<String>,
        executor: Executor,
        config: toml::Table,
        public_url: Option<String>,
        shutdown: CancellationToken,
    ) -> Self {
        FrontendContext {
            executor,
            shutdown,
            config,
            public_url,
            name: name.into(),
            watched: Arc::new(Mutex::new(HashSet::new())),
        }
    }

    /// The frontend's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Receive lifecycle events of requests this frontend originated, and of
    /// requests it subscribed to with [`watch`](Self::watch).
    pub fn lifecycle(&self) -> LifecycleStream {
        LifecycleStream {
            rx: self.executor.subscribe(),
            name: self.name.clone(),
            owners: self.executor.feedback_owners(),
            watched: self.watched.clone(),
            all: false,
        }
    }

    /// Receive lifecycle events of every request (e.g. a chat frontend that posts
    /// every pending approval to an approvals channel).
    pub fn lifecycle_all(&self) -> LifecycleStream {
        LifecycleStream {
            all: true,
            ..self.lifecycle()
        }
    }

    /// Also receive events of `id` (a request from another frontend that this
    /// one shows, e.g. an approval given in chat for an issue's request).
    pub fn watch(&self, id: RequestId) {
        self.watched
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id);
    }

    /// Run `task` while this node leads its cluster, until shutdown: for
    /// work that must happen once per cluster (polling a source,
    /// reconciling, holding Slack's Socket Mode connection). A node alone
    /// always leads, so the task runs once, until shutdown. In a cluster it
    /// starts on every term this node wins and gets a token cancelled when
    /// the term ends; see [`Leadership::run_while_leader`](crate::cluster::Leadership::run_while_leader).
    pub async fn while_leader<F, Fut>(&self, task: F)
    where
        F: FnMut(crate::cluster::Term, CancellationToken) -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        self.executor
            .leadership()
            .run_while_leader(&self.shutdown, task)
            .await
    }

    /// A dashboard link for a request, if the public URL is known.
    pub fn request_url(&self, id: RequestId) -> Option<String> {
        self.public_url
            .as_ref()
            .map(|u| format!("{}/requests/{id}", u.trim_end_matches('/')))
    }
}

/// A filtered view of the executor's lifecycle events. In a cluster, every
/// node sees every request's events, and each request's are rendered once:
/// by the node that received it, by the leader once that node is declared
/// dead ([`Executor::adopt_feedback`]), or by whichever node watches it.
#[derive(Debug)]
pub struct LifecycleStream {
    rx: broadcast::Receiver<Lifecycle>,
    name: String,
    owners: Arc<crate::cluster::FeedbackOwners>,
    watched: Arc<Mutex<HashSet<RequestId>>>,
    all: bool,
}

/// Why [`LifecycleStream::recv`] returned nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamError {
    /// The receiver fell behind and `n` events were dropped; re-read the records
    /// it cares about from the store.
    Lagged(u64),
    /// The executor is gone.
    Closed,
}

impl LifecycleStream {
    /// The next event for this frontend.
    pub async fn recv(&mut self) -> Result<Lifecycle, StreamError> {
        loop {
            match self.rx.recv().await {
                Ok(ev) => {
                    let mine = self.owners.covers(ev.record.request.node.as_ref())
                        && (self.all || ev.record.request.origin.frontend == self.name);
                    if mine || {
                        let w = self.watched.lock().unwrap_or_else(|p| p.into_inner());
                        w.contains(&ev.record.request.id)
                    } {
                        if ev.record.state.is_terminal() {
                            self.watched
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .remove(&ev.record.request.id);
                        }
                        return Ok(ev);
                    }
                }
                Err(broadcast::error::RecvError::Lagged(n)) => return Err(StreamError::Lagged(n)),
                Err(broadcast::error::RecvError::Closed) => return Err(StreamError::Closed),
            }
        }
    }
}

/// A frontend: one front door to the executor.
///
/// MUST: turn every inbound action into executor calls (never run op logic
/// itself); map identities only through the executor/policy; give every inbound
/// delivery a stable dedup key; return from [`run`](Frontend::run) soon after
/// `ctx.shutdown` is cancelled. See `docs/frontends.md`.
#[async_trait]
pub trait Frontend: Send + Sync + fmt::Debug + 'static {
    /// Stable name: the `[frontends.NAME]` section, the `frontend` of its actors
    /// and origins, the metrics label.
    fn name(&self) -> &str;

    /// Run until `ctx.shutdown` is cancelled: poll sources, render lifecycle events.
    async fn run(&self, ctx: FrontendContext) -> Result<(), FrontendError>;

    /// Whether it is ready to take traffic (for `/readyz`).
    fn is_ready(&self) -> bool {
        true
    }

    /// HTTP routes to mount under the daemon's listener (webhook frontends).
    fn http_routes(&self) -> Vec<HttpRoute> {
        Vec::new()
    }

    /// Handle one request to one of [`http_routes`](Frontend::http_routes).
    async fn handle_http(&self, ctx: &FrontendContext, req: HttpRequest) -> HttpResponse {
        let _ = (ctx, req);
        simple_response(http::StatusCode::NOT_FOUND, "not found")
    }
}

/// A plain-text response.
pub fn simple_response(status: http::StatusCode, text: &str) -> HttpResponse {
    http::Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Bytes::from(text.to_string()))
        .unwrap_or_else(|_| http::Response::new(Bytes::new()))
}

/// A JSON response.
pub fn json_response(status: http::StatusCode, body: &serde_json::Value) -> HttpResponse {
    http::Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Bytes::from(body.to_string()))
        .unwrap_or_else(|_| http::Response::new(Bytes::new()))
}

/// The explicit list of frontends a host runs.
#[derive(Debug, Default, Clone)]
pub struct Frontends {
    list: Vec<Arc<dyn Frontend>>,
}

impl Frontends {
    /// An empty list.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add a frontend.
    pub fn with(mut self, f: impl Frontend) -> Self {
        self.list.push(Arc::new(f));
        self
    }

    /// Add a shared frontend.
    pub fn push(&mut self, f: Arc<dyn Frontend>) {
        self.list.push(f);
    }

    /// Names, in order.
    pub fn names(&self) -> Vec<&str> {
        self.list.iter().map(|f| f.name()).collect()
    }

    /// The frontends.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<dyn Frontend>> {
        self.list.iter()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }
}

/// Runs a [`Frontends`] list against an executor and routes HTTP to them.
#[derive(Debug, Clone)]
pub struct FrontendHost {
    entries: Vec<(Arc<dyn Frontend>, FrontendContext)>,
}

impl FrontendHost {
    /// Prepare contexts for every frontend; `section(name)` gives each its config.
    pub fn new(
        frontends: &Frontends,
        executor: &Executor,
        public_url: Option<String>,
        shutdown: &CancellationToken,
        section: impl Fn(&str) -> toml::Table,
    ) -> Self {
        let entries = frontends
            .iter()
            .map(|f| {
                let ctx = FrontendContext::new(
                    f.name(),
                    executor.clone(),
                    section(f.name()),
                    public_url.clone(),
                    shutdown.child_token(),
                );
                (f.clone(), ctx)
            })
            .collect();
        FrontendHost { entries }
    }

    /// Start every frontend's `run` on the current runtime.
    pub fn spawn(&self) -> Vec<tokio::task::JoinHandle<Result<(), FrontendError>>> {
        self.entries
            .iter()
            .map(|(f, ctx)| {
                let f = f.clone();
                let ctx = ctx.clone();
                tokio::spawn(async move {
                    let name = f.name().to_string();
                    let r = f.run(ctx).await;
                    if let Err(e) = &r {
                        tracing::error!(frontend = %name, error = %e, "frontend stopped with an error");
                    }
                    r
                })
            })
            .collect()
    }

    /// Every route with the frontend that serves it.
    pub fn routes(&self) -> Vec<(HttpRoute, usize)> {
        self.entries
            .iter()
            .enumerate()
            .flat_map(|(i, (f, _))| f.http_routes().into_iter().map(move |r| (r, i)))
            .collect()
    }

    /// Dispatch a request to frontend number `index` (from [`routes`](Self::routes)).
    pub async fn handle(&self, index: usize, req: HttpRequest) -> HttpResponse {
        match self.entries.get(index) {
            Some((f, ctx)) => f.handle_http(ctx, req).await,
            None => simple_response(http::StatusCode::NOT_FOUND, "not found"),
        }
    }

    /// Readiness of each frontend.
    pub fn readiness(&self) -> Vec<(String, bool)> {
        self.entries
            .iter()
            .map(|(f, _)| (f.name().to_string(), f.is_ready()))
            .collect()
    }

    /// The context of frontend `name`.
    pub fn context(&self, name: &str) -> Option<&FrontendContext> {
        self.entries
            .iter()
            .find(|(f, _)| f.name() == name)
            .map(|(_, c)| c)
    }
}

#[cfg(feature = "test-util")]
pub mod conformance;

pub mod delivery;
pub mod lifecycle;
pub mod webhook;

pub mod factory;
