//! The daemon: the executor, the frontends, and the HTTP listener, with a clean
//! lifecycle. [`run`] is the library entry point (`youops serve` calls it), so
//! tests and embedders can start and stop a whole daemon in-process.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::serve::ListenerExt as _;
use axum::Router;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use youops_core::audit::AuditStore;
use youops_core::config::{Config, ConfigErrors};
use youops_core::frontend::{FrontendHost, Frontends};
use youops_core::Executor;

use super::metrics::{InstrumentedStore, Metrics};
use super::router::router;
use super::state::{AppState, ClusterStatusSource};
use super::tasks;
use crate::builtins::{standard_builtins, ArcBuiltin};
use crate::gitops::GitHandle;
use crate::server_config::ServerConfig;

/// What [`run`] needs besides the config.
#[derive(Default)]
#[non_exhaustive]
pub struct RunOptions {
    /// Listen address (overrides `[server] listen`).
    pub listen: Option<String>,
    /// An already-bound listener (tests bind 127.0.0.1:0 themselves).
    pub listener: Option<TcpListener>,
    /// Frontends to run (the built-ins the config enables, plus any an embedder adds).
    pub frontends: Frontends,
    /// The server's metrics, whose recorder `frontends` were built under so
    /// that `/metrics` shows theirs ([`crate::frontends::build_parts`] makes
    /// one; an embedder builds its own frontends inside
    /// [`Metrics::with_recorder`]). `run` makes a new one when unset.
    pub metrics: Option<Arc<Metrics>>,
    /// The git frontend among `frontends`, if one runs: the API computes
    /// reconcile plans on it (`POST /api/v1/reconcile/plan`).
    /// [`crate::frontends::Built::into_options`] sets both (and `metrics`).
    pub git: Option<GitHandle>,
    /// Extra builtin runners.
    pub builtins: Vec<(String, Arc<dyn youops_core::runner::Builtin>)>,
    /// The config file, re-read on SIGHUP (reload is off without it).
    pub config_path: Option<PathBuf>,
    /// Called with the bound address once the server listens.
    pub on_ready: Option<Box<dyn FnOnce(SocketAddr) + Send>>,
}

impl std::fmt::Debug for RunOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunOptions")
            .field("listen", &self.listen)
            .field("frontends", &self.frontends.names())
            .finish_non_exhaustive()
    }
}

/// Run the daemon until `shutdown` resolves (or SIGTERM/SIGINT when
/// `handle_signals` is used by the binary), then drain: stop intake (503), let
/// running ops finish within `[server] shutdown_grace`, interrupt the rest,
/// flush the store.
pub async fn run(
    cfg: Config,
    opts: RunOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    // Core leaves `[server]` to the daemon: a config that did not pass
    // `server_config::check` is refused here.
    let server = ServerConfig::of(&cfg).map_err(|issues| {
        anyhow::anyhow!(
            "{}",
            ConfigErrors {
                source: cfg.source.clone(),
                issues,
            }
        )
    })?;
    let metrics = opts.metrics.unwrap_or_default();
    let (exec, store, builtin_names, cluster) =
        start_executor(&cfg, &server, opts.builtins, &metrics).await?;

    let stop = CancellationToken::new();
    let public_url = server.public_url.clone();
    let host = FrontendHost::new(&opts.frontends, &exec, public_url.clone(), &stop, |name| {
        cfg.frontend(name).cloned().unwrap_or_default()
    });
    let state = AppState::new(
        exec.clone(),
        host.clone(),
        metrics.clone(),
        public_url,
        server.request_timeout.0,
        opts.git,
        cluster.as_ref().map(status_source),
    );
    let mut background = spawn_background(&cfg, &exec, &store, &metrics, &stop);
    background.extend(cluster_tasks(cluster.as_ref(), &exec, &stop));

    let frontend_tasks = host.spawn();
    let app = router(state.clone(), &cfg);
    let listener = match opts.listener {
        Some(l) => l,
        None => {
            let addr = opts.listen.unwrap_or_else(|| server.listen.clone());
            TcpListener::bind(&addr)
                .await
                .with_context(|| format!("listening on {addr}"))?
        }
    };
    let addr = listener.local_addr()?;
    tracing::info!(%addr, frontends = ?opts.frontends.names(), ops = exec.loaded().catalog.len(), "youops is listening");
    if let Some(cb) = opts.on_ready {
        cb(addr);
    }
    // Sections of frontends an embedder runs are theirs to check.
    let extra = opts
        .frontends
        .names()
        .into_iter()
        .map(String::from)
        .collect();
    tasks::install_reload(opts.config_path, extra, builtin_names, &exec, stop.clone());

    let server_stop = CancellationToken::new();
    let server_task = serve(listener, app, server_stop.clone());

    shutdown.await;
    let grace = server.shutdown_grace.0;
    tracing::info!(grace = ?grace, "shutting down: new requests get 503, running ops may finish");
    state.start_draining();
    if let Err(e) = exec.shutdown(grace).await {
        tracing::error!(error = %e, "draining the executor");
    }
    stop.cancel();
    for t in frontend_tasks {
        let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
    }
    server_stop.cancel();
    match tokio::time::timeout(Duration::from_secs(5), server_task).await {
        Ok(Ok(Err(e))) => tracing::warn!(error = %e, "http server"),
        Ok(Err(e)) => tracing::warn!(error = %e, "http server task"),
        _ => {}
    }
    for t in background {
        let _ = t.await;
    }
    store.flush().await.context("flushing the audit store")?;
    leave(cluster).await;
    tracing::info!("stopped");
    Ok(())
}

/// The daemon's background tasks (see [`tasks`]); each ends when `stop` is
/// cancelled.
fn spawn_background(
    cfg: &Config,
    exec: &Executor,
    store: &Arc<dyn AuditStore>,
    metrics: &Arc<Metrics>,
    stop: &CancellationToken,
) -> Vec<tokio::task::JoinHandle<()>> {
    [
        Some(tasks::spawn_lifecycle_metrics(
            exec,
            metrics.clone(),
            stop.clone(),
        )),
        Some(tasks::spawn_metrics_upkeep(metrics.clone(), stop.clone())),
        Some(tasks::spawn_heap_release(stop.clone())),
        tasks::spawn_retention(
            store,
            exec.leadership(),
            cfg.store.retain_events,
            cfg.archive_dir(),
            stop.clone(),
        ),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// Open the store (instrumented for `metrics`) and start an executor with the
/// standard builtins and `extra` ones: the executor, the store's writing
/// handle (the executor hands out only reads) and the names of its builtins.
async fn start_executor(
    cfg: &Config,
    server: &ServerConfig,
    extra: Vec<(String, Arc<dyn youops_core::runner::Builtin>)>,
    metrics: &Arc<Metrics>,
) -> anyhow::Result<(
    Executor,
    Arc<dyn AuditStore>,
    Vec<String>,
    Option<ClusterNode>,
)> {
    let (opened, cluster) = open_store(cfg, server).await?;
    let store: Arc<dyn AuditStore> = Arc::new(InstrumentedStore::new(opened, metrics.clone()));
    let mut builder = standard_builtins(Executor::builder(cfg, store.clone()));
    if let Some(c) = &cluster {
        builder = as_node(c, builder);
    }
    for (name, b) in extra {
        builder = builder.builtin(name, ArcBuiltin(b));
    }
    let builtin_names = builder.builtin_names();
    let unknown = cfg
        .catalog()
        .unknown_builtins(&builtin_names.iter().map(String::as_str).collect::<Vec<_>>());
    if !unknown.is_empty() {
        anyhow::bail!("bad config: {}", unknown.join("; "));
    }
    let exec = builder.build().await.context("starting the executor")?;
    Ok((exec, store, builtin_names, cluster))
}

#[cfg(feature = "postgres")]
use crate::cluster::ClusterNode;

/// Without the `postgres` feature there is no shared store, and no cluster.
#[cfg(not(feature = "postgres"))]
#[derive(Debug)]
enum ClusterNode {}

/// Open the store; with a shared one, join its cluster.
#[cfg(feature = "postgres")]
async fn open_store(
    cfg: &Config,
    server: &ServerConfig,
) -> anyhow::Result<(Arc<dyn AuditStore>, Option<ClusterNode>)> {
    crate::cluster::open(cfg, server).await
}

#[cfg(not(feature = "postgres"))]
async fn open_store(
    cfg: &Config,
    _: &ServerConfig,
) -> anyhow::Result<(Arc<dyn AuditStore>, Option<ClusterNode>)> {
    let store = crate::store::open(cfg)
        .await
        .context("opening the audit store")?;
    Ok((store, None))
}

#[cfg(feature = "postgres")]
fn as_node(c: &ClusterNode, builder: youops_core::ExecutorBuilder) -> youops_core::ExecutorBuilder {
    c.executor(builder)
}

#[cfg(not(feature = "postgres"))]
fn as_node(c: &ClusterNode, _: youops_core::ExecutorBuilder) -> youops_core::ExecutorBuilder {
    match *c {}
}

/// What the dashboard and the API show of the cluster.
#[cfg(feature = "postgres")]
fn status_source(c: &ClusterNode) -> Arc<dyn ClusterStatusSource> {
    c.status_source()
}

#[cfg(not(feature = "postgres"))]
fn status_source(c: &ClusterNode) -> Arc<dyn ClusterStatusSource> {
    match *c {}
}

/// The cluster's own background work (the leader's dead-node sweep).
#[cfg(feature = "postgres")]
fn cluster_tasks(
    c: Option<&ClusterNode>,
    exec: &Executor,
    stop: &CancellationToken,
) -> Option<JoinHandle<()>> {
    c.map(|c| c.spawn_dead_node_sweep(exec.clone(), stop.clone()))
}

#[cfg(not(feature = "postgres"))]
fn cluster_tasks(
    c: Option<&ClusterNode>,
    _: &Executor,
    _: &CancellationToken,
) -> Option<JoinHandle<()>> {
    c.map(|c| match *c {})
}

/// Leave the cluster, if this daemon is a node of one.
async fn leave(c: Option<ClusterNode>) {
    #[cfg(feature = "postgres")]
    if let Some(c) = c {
        c.leave().await;
    }
    #[cfg(not(feature = "postgres"))]
    if let Some(c) = c {
        match c {}
    }
}

/// Serve `app` on `listener` until `stop` is cancelled (then gracefully).
fn serve(
    listener: TcpListener,
    app: Router,
    stop: CancellationToken,
) -> JoinHandle<std::io::Result<()>> {
    // Answers go out as soon as they are written (no Nagle wait behind an
    // unacknowledged earlier segment on a keep-alive connection).
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY on a connection");
        }
    });
    let server = axum::serve(listener, app.into_make_service())
        .with_graceful_shutdown(async move { stop.cancelled().await });
    tokio::spawn(async move { server.await })
}
