//! The daemon: the executor, the frontends, and the HTTP listener, with a clean
//! lifecycle. [`run`] is the library entry point (`youops serve` calls it), so
//! tests and embedders can start and stop a whole daemon in-process.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, on, MethodFilter};
use axum::serve::ListenerExt as _;
use axum::{Json, Router};
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;
use youops_core::audit::{AuditStore, ChainVerifier, VerifyReport};
use youops_core::config::Config;
use youops_core::frontend::{FrontendHost, Frontends};
use youops_core::runner::BuiltinCall;
use youops_core::{Executor, ExecutorBuilder};

use crate::metrics::{InstrumentedStore, Metrics};

/// Everything the HTTP handlers share.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<AppInner>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").finish_non_exhaustive()
    }
}

struct AppInner {
    exec: Executor,
    host: FrontendHost,
    metrics: Arc<Metrics>,
    draining: AtomicBool,
    public_url: Option<String>,
    request_timeout: Duration,
    git: Option<youops_frontend_git::GitFrontend>,
    chain: Mutex<ChainStatus>,
    started: Instant,
}

/// What the dashboard shows about the audit chain.
#[derive(Debug, Clone)]
pub struct ChainStatus {
    verifier: ChainVerifier,
    /// The first broken record, if one was found.
    pub broken: Option<youops_core::audit::Broken>,
    /// Events verified so far.
    pub verified_through: u64,
    /// When the chain was last advanced.
    pub checked_at: Option<chrono::DateTime<chrono::Utc>>,
}

impl AppState {
    /// The executor.
    pub fn exec(&self) -> &Executor {
        &self.inner.exec
    }

    /// Metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// The frontends.
    pub fn host(&self) -> &FrontendHost {
        &self.inner.host
    }

    /// The running git frontend, if any.
    pub fn git(&self) -> Option<&youops_frontend_git::GitFrontend> {
        self.inner.git.as_ref()
    }

    /// Public base URL.
    pub fn public_url(&self) -> Option<&str> {
        self.inner.public_url.as_deref()
    }

    /// The per-HTTP-request timeout.
    pub fn request_timeout(&self) -> Duration {
        self.inner.request_timeout
    }

    /// Whether the daemon is shutting down.
    pub fn draining(&self) -> bool {
        self.inner.draining.load(Ordering::SeqCst)
    }

    /// Record the result of a full verification.
    pub fn set_chain_status(&self, report: &VerifyReport) {
        let mut c = self.inner.chain.lock().unwrap_or_else(|p| p.into_inner());
        c.broken = report.broken.clone();
        c.verified_through = report.head_seq;
        c.checked_at = Some(chrono::Utc::now());
        if report.ok() {
            c.verifier = if report.head_seq == 0 {
                ChainVerifier::new()
            } else {
                ChainVerifier::after(report.head_seq, &report.head_hash)
            };
        }
    }

    /// Advance the incremental chain check over events appended since the last
    /// look, and return the status. Cheap enough for every dashboard load.
    pub async fn chain_status(&self) -> ChainStatus {
        let (mut verifier, mut through, broken) = {
            let c = self.inner.chain.lock().unwrap_or_else(|p| p.into_inner());
            (c.verifier.clone(), c.verified_through, c.broken.clone())
        };
        if broken.is_none() {
            let mut new_broken = None;
            'outer: loop {
                let Ok(batch) = self.exec().store().events(through, 2000).await else {
                    break;
                };
                if batch.is_empty() {
                    break;
                }
                for e in &batch {
                    if let Err(b) = verifier.check(e) {
                        new_broken = Some(b);
                        break 'outer;
                    }
                    through = e.seq;
                }
            }
            let mut c = self.inner.chain.lock().unwrap_or_else(|p| p.into_inner());
            c.verifier = verifier;
            c.verified_through = through;
            c.broken = new_broken;
            c.checked_at = Some(chrono::Utc::now());
        }
        self.inner
            .chain
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Uptime.
    pub fn uptime(&self) -> Duration {
        self.inner.started.elapsed()
    }
}

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
    /// The git frontend among `frontends`, if one runs: the API computes
    /// reconcile plans on it (`POST /api/v1/reconcile/plan`).
    /// [`crate::frontends::Built::into_options`] sets both.
    pub git: Option<youops_frontend_git::GitFrontend>,
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

/// The names of the builtins every daemon has ([`standard_builtins`]).
pub const STANDARD_BUILTINS: [&str; 3] = ["echo", "noop", "sleep"];

/// Register the builtins every daemon has: `noop`, `echo` and `sleep`.
pub fn standard_builtins(b: ExecutorBuilder) -> ExecutorBuilder {
    b.builtin("noop", |_c: BuiltinCall| async { Ok(String::new()) })
        .builtin("echo", |c: BuiltinCall| async move {
            let mut out = String::new();
            for (k, v) in &c.args {
                out.push_str(&format!("{k}={}\n", v.as_text()));
            }
            Ok(out)
        })
        .builtin("sleep", |c: BuiltinCall| async move {
            let secs = c
                .args
                .get("seconds")
                .and_then(|v| v.as_text().parse::<u64>().ok())
                .unwrap_or(1);
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(secs)) => Ok(format!("slept {secs}s")),
                _ = c.cancel.cancelled() => Err("cancelled".into()),
            }
        })
}

/// One retention check: when the store holds more than `keep` + 10 % events,
/// archive all but the newest `keep` (events of requests in flight stay).
pub async fn retain(
    exec: &Executor,
    keep: u64,
    dir: &std::path::Path,
) -> Result<Option<youops_core::audit::ArchiveReport>, youops_core::audit::StoreError> {
    let store = exec.store();
    let (tip, _) = store.head().await?;
    let start = store.events(0, 1).await?.first().map_or(1, |e| e.seq);
    let live = (tip + 1).saturating_sub(start);
    if live <= keep.saturating_add(keep / 10) {
        return Ok(None);
    }
    let report = store.archive(tip - keep, dir).await?;
    if report.is_some() {
        // Archiving frees a lot at once (the archived records and read
        // buffers): give it back to the OS.
        let _ = tokio::task::spawn_blocking(release_free_heap).await;
    }
    if let Some(r) = &report {
        tracing::info!(
            first = r.first_seq,
            through = r.through_seq,
            file = %r.file.display(),
            bytes = r.bytes,
            records_removed = r.records_removed,
            "audit retention: archived old events"
        );
    }
    Ok(report)
}

/// Return the heap memory freed since the last call to the OS. Called after
/// archiving and once a minute.
///
/// With the `jemalloc` feature (the default), jemalloc is the allocator: this
/// purges every arena's unused dirty pages. jemalloc returns them by itself only
/// as it allocates (no background thread), and in a soak with retention the RSS
/// kept what archiving had used.
///
/// Without it, glibc keeps freed memory in its arenas for reuse and gives little
/// of it back by itself: in a soak with retention, the daemon's RSS was 128 MiB
/// of which glibc counted 57 MiB in use; `malloc_trim(0)` took it to 70 MiB.
pub fn release_free_heap() {
    #[cfg(all(feature = "jemalloc", not(target_env = "msvc")))]
    #[allow(unsafe_code)]
    // SAFETY: `arena.<MALLCTL_ARENAS_ALL>.purge` (4096: every arena) reads and
    // writes nothing: null old/new pointers and lengths, as jemalloc's mallctl
    // documents for this command; the name is a NUL-terminated literal.
    unsafe {
        let _ = tikv_jemalloc_sys::mallctl(
            c"arena.4096.purge".as_ptr(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            0,
        );
    }
    #[cfg(all(target_os = "linux", target_env = "gnu", not(feature = "jemalloc")))]
    #[allow(unsafe_code)]
    // SAFETY: `malloc_trim` takes no pointers; it only walks glibc's own arenas
    // under their locks, and may be called from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
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
    let metrics = Arc::new(Metrics::default());
    let opened = crate::store::open(&cfg).context("opening the audit store")?;
    let store: Arc<dyn AuditStore> = Arc::new(InstrumentedStore::new(opened, metrics.clone()));
    let mut builder = standard_builtins(Executor::builder(&cfg, store));
    for (name, b) in opts.builtins {
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

    let stop = CancellationToken::new();
    let public_url = cfg.server.public_url.clone();
    let host = FrontendHost::new(&opts.frontends, &exec, public_url.clone(), &stop, |name| {
        cfg.frontend(name).cloned().unwrap_or_default()
    });
    let state = AppState {
        inner: Arc::new(AppInner {
            exec: exec.clone(),
            host: host.clone(),
            metrics: metrics.clone(),
            draining: AtomicBool::new(false),
            public_url,
            request_timeout: cfg.server.request_timeout.0,
            git: opts.git,
            chain: Mutex::new(ChainStatus {
                verifier: ChainVerifier::new(),
                broken: None,
                verified_through: 0,
                checked_at: None,
            }),
            started: Instant::now(),
        }),
    };

    // Metrics from lifecycle events. The task ends with the daemon: it holds an
    // executor handle, and with it the store, which must be released when `run`
    // returns (an embedder or a test may open it again).
    let mut events = exec.subscribe();
    let m = metrics.clone();
    let known_ops = exec.clone();
    let metrics_stop = stop.clone();
    let metrics_task = tokio::spawn(async move {
        loop {
            let next = tokio::select! {
                biased;
                ev = events.recv() => ev,
                _ = metrics_stop.cancelled() => break,
            };
            match next {
                Ok(ev)
                    if ev.record.state.is_terminal()
                        && matches!(ev.event.body, youops_core::EventBody::Transition(_)) =>
                {
                    let r = &ev.record;
                    let op = if known_ops.loaded().catalog.get(&r.request.op).is_some() {
                        r.request.op.as_str()
                    } else {
                        "unknown"
                    };
                    let secs = (r.updated_at - r.request.created_at)
                        .num_microseconds()
                        .unwrap_or(0) as f64
                        / 1e6;
                    m.finished(
                        &r.request.origin.frontend,
                        op,
                        r.state.as_str(),
                        secs.max(0.0),
                    );
                }
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
            }
        }
    });

    // Freed heap back to the OS once a minute (see `release_free_heap`).
    let heap_stop = stop.clone();
    let heap_task = tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(60)) => {}
                _ = heap_stop.cancelled() => break,
            }
            // It walks glibc's arenas under their locks: off the async workers.
            let _ = tokio::task::spawn_blocking(release_free_heap).await;
        }
    });

    // Retention: archive old events once the store holds enough more than
    // `[store] retain_events` (checked at start, then every minute).
    let retention_task = (cfg.store.retain_events > 0).then(|| {
        let exec = exec.clone();
        let stop = stop.clone();
        let keep = cfg.store.retain_events;
        let dir = cfg.archive_dir();
        tokio::spawn(async move {
            loop {
                if let Err(e) = retain(&exec, keep, &dir).await {
                    tracing::warn!(error = %e, "audit retention");
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(60)) => {}
                    _ = stop.cancelled() => break,
                }
            }
        })
    });

    let frontend_tasks = host.spawn();
    let app = router(state.clone(), &cfg);
    let listener = match opts.listener {
        Some(l) => l,
        None => {
            let addr = opts.listen.unwrap_or_else(|| cfg.server.listen.clone());
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

    // SIGHUP: re-validate and reload the catalog and policy.
    // The handler is installed here, before the server answers anything: a
    // SIGHUP that arrives before a lazily spawned task installs it would kill
    // the process (the default action).
    let hup = opts.config_path.clone().and_then(|path| {
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .map(|hup| (path, hup))
            .map_err(|e| tracing::warn!(error = %e, "no SIGHUP reload: cannot install the handler"))
            .ok()
    });
    if let Some((path, mut hup)) = hup {
        let exec = exec.clone();
        let stop = stop.clone();
        // Sections of frontends an embedder runs are theirs to check.
        let extra: Vec<String> = opts
            .frontends
            .names()
            .into_iter()
            .map(String::from)
            .collect();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = hup.recv() => {}
                    _ = stop.cancelled() => return,
                }
                let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
                let builtins: Vec<&str> = builtin_names.iter().map(String::as_str).collect();
                match crate::check::load_checked(&path, &extra, &builtins) {
                    Ok(new) => {
                        exec.reload(&new);
                        tracing::info!(ops = new.ops.len(), "config reloaded");
                    }
                    Err(problems) => {
                        for p in &problems {
                            tracing::error!(problem = %p, "config reload: problem");
                        }
                        tracing::error!(
                            problems = problems.len(),
                            "config reload refused; keeping the running config"
                        );
                    }
                }
            }
        });
    }

    let grace = cfg.server.shutdown_grace.0;
    let drain_state = state.clone();
    let server_stop = CancellationToken::new();
    let server_stop2 = server_stop.clone();
    // Answers go out as soon as they are written (no Nagle wait behind an
    // unacknowledged earlier segment on a keep-alive connection).
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY on a connection");
        }
    });
    let server = axum::serve(listener, app.into_make_service())
        .with_graceful_shutdown(async move { server_stop2.cancelled().await });
    let server_task = tokio::spawn(async move { server.await });

    shutdown.await;
    tracing::info!(grace = ?grace, "shutting down: new requests get 503, running ops may finish");
    drain_state.inner.draining.store(true, Ordering::SeqCst);
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
    let _ = metrics_task.await;
    let _ = heap_task.await;
    if let Some(t) = retention_task {
        let _ = t.await;
    }
    exec.store()
        .flush()
        .await
        .context("flushing the audit store")?;
    tracing::info!("stopped");
    Ok(())
}

struct ArcBuiltin(Arc<dyn youops_core::runner::Builtin>);

#[async_trait::async_trait]
impl youops_core::runner::Builtin for ArcBuiltin {
    async fn call(&self, call: BuiltinCall) -> Result<String, String> {
        self.0.call(call).await
    }
}

/// The whole HTTP surface.
pub fn router(state: AppState, cfg: &Config) -> Router {
    let mut app = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .merge(crate::api::router())
        .merge(crate::dashboard::router());
    for (route, index) in state.host().routes() {
        let filter = MethodFilter::try_from(route.method.clone()).unwrap_or(MethodFilter::POST);
        app = app.route(
            &route.path,
            on(
                filter,
                move |State(st): State<AppState>, req: Request| async move {
                    frontend_http(st, index, req).await
                },
            ),
        );
    }
    app.layer(middleware::from_fn_with_state(state.clone(), drain_guard))
        .layer(TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, cfg.server.request_timeout.0))
        .layer(RequestBodyLimitLayer::new(cfg.server.body_limit.0 as usize))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(
            TraceLayer::new_for_http().make_span_with(|req: &Request| {
                let id = req
                    .headers()
                    .get("x-request-id")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                tracing::info_span!("http", method = %req.method(), path = %req.uri().path(), http_request_id = %id)
            })
            .on_failure(log_failure),
        )
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .with_state(state)
}

/// A 5xx answer, in the log: ERROR, except 503 (shutting down, not ready),
/// which the daemon answers on purpose and a client is told to retry.
fn log_failure(
    class: tower_http::classify::ServerErrorsFailureClass,
    latency: Duration,
    _span: &tracing::Span,
) {
    use tower_http::classify::ServerErrorsFailureClass as Class;
    match class {
        Class::StatusCode(StatusCode::SERVICE_UNAVAILABLE) => {
            tracing::info!(?latency, "answered 503 (unavailable; the client may retry)")
        }
        Class::StatusCode(code) => {
            tracing::error!(status = code.as_u16(), ?latency, "request failed")
        }
        Class::Error(e) => tracing::error!(error = %e, ?latency, "request failed"),
    }
}

async fn frontend_http(st: AppState, index: usize, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let bytes: Bytes = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(b) => b,
        Err(e) => {
            // The body limit layer turns oversized bodies into this error.
            let too_big = std::error::Error::source(&e)
                .map(|s| s.to_string().contains("length limit"))
                .unwrap_or(false)
                || e.to_string().contains("length limit");
            let status = if too_big {
                StatusCode::PAYLOAD_TOO_LARGE
            } else {
                StatusCode::BAD_REQUEST
            };
            return (status, format!("could not read the request body: {e}")).into_response();
        }
    };
    let req = http::Request::from_parts(parts, bytes);
    let resp = st.host().handle(index, req).await;
    let (parts, body) = resp.into_parts();
    Response::from_parts(parts, Body::from(body))
}

async fn drain_guard(State(st): State<AppState>, req: Request, next: Next) -> Response {
    if st.draining() && req.method() != axum::http::Method::GET {
        st.metrics()
            .drained_refusals
            .fetch_add(1, Ordering::Relaxed);
        let mut resp = (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "error": { "code": "shutting_down", "message": "YouOps is shutting down and takes no new requests" } })),
        )
            .into_response();
        resp.headers_mut()
            .insert("retry-after", HeaderValue::from_static("5"));
        return resp;
    }
    next.run(req).await
}

async fn healthz() -> impl IntoResponse {
    (StatusCode::OK, "ok\n")
}

async fn readyz(State(st): State<AppState>) -> Response {
    let frontends = st.host().readiness();
    let accepting = st.exec().is_accepting() && !st.draining();
    let ready = accepting && frontends.iter().all(|(_, r)| *r);
    let body = json!({
        "ready": ready,
        "accepting": accepting,
        "frontends": frontends.iter().map(|(n, r)| json!({ "name": n, "ready": r })).collect::<Vec<_>>(),
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

async fn metrics_text(State(st): State<AppState>) -> Response {
    let exec = st.exec();
    let size = exec.store().size_on_disk().await.unwrap_or(0) as f64;
    let chain = st.chain_status().await;
    let text = st.metrics().render(&[
        (
            "youops_pending_approvals",
            "Requests waiting for approval.",
            exec.pending_approvals() as f64,
        ),
        (
            "youops_running_requests",
            "Requests running or queued for a lock.",
            exec.running() as f64,
        ),
        (
            "youops_audit_store_bytes",
            "Audit store size on disk.",
            size,
        ),
        (
            "youops_audit_verified_seq",
            "Audit events verified by the incremental chain check.",
            chain.verified_through as f64,
        ),
        (
            "youops_audit_chain_intact",
            "1 if the incremental chain check found no broken record.",
            if chain.broken.is_none() { 1.0 } else { 0.0 },
        ),
        (
            "youops_uptime_seconds",
            "Seconds since start.",
            st.uptime().as_secs_f64(),
        ),
    ]) + &st.host().prometheus();
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        text,
    )
        .into_response()
}
