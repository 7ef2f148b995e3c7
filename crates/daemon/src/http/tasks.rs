//! The daemon's background tasks besides the listener: metrics from lifecycle
//! events and their upkeep, giving freed heap back to the OS, audit retention, and config reload
//! on SIGHUP. Each ends when the daemon's stop token is cancelled.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use youops_core::audit::AuditStore;
use youops_core::cluster::Leadership;
use youops_core::Executor;

use super::metrics::Metrics;

/// Metrics from lifecycle events. The task ends with the daemon: it holds an
/// executor handle, and with it the store, which must be released when `run`
/// returns (an embedder or a test may open it again).
pub(crate) fn spawn_lifecycle_metrics(
    exec: &Executor,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) -> JoinHandle<()> {
    let mut events = exec.subscribe();
    let known_ops = exec.clone();
    tokio::spawn(async move {
        loop {
            let next = tokio::select! {
                biased;
                ev = events.recv() => ev,
                _ = stop.cancelled() => break,
            };
            match next {
                // In a cluster, each node counts the requests it received.
                Ok(ev)
                    if ev.record.state.is_terminal()
                        && matches!(ev.event.body, youops_core::EventBody::Transition(_))
                        && ev.record.request.node.as_ref() == known_ops.node() =>
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
                    metrics.finished(
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
    })
}

/// Histogram samples folded into the server's histograms every
/// [`UPKEEP_INTERVAL`](super::metrics::UPKEEP_INTERVAL), so they do not pile up
/// between scrapes.
pub(crate) fn spawn_metrics_upkeep(
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(super::metrics::UPKEEP_INTERVAL) => metrics.upkeep(),
                _ = stop.cancelled() => break,
            }
        }
    })
}

/// Freed heap back to the OS once a minute (see [`release_free_heap`]).
pub(crate) fn spawn_heap_release(stop: CancellationToken) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(60)) => {}
                _ = stop.cancelled() => break,
            }
            // It walks glibc's arenas under their locks: off the async workers.
            let _ = tokio::task::spawn_blocking(release_free_heap).await;
        }
    })
}

/// Retention: archive old events once the store holds enough more than
/// `[store] retain_events` (checked at start, then every minute), on the
/// leader only: it happens once per cluster. `None` when `keep` is 0
/// (retention off).
pub(crate) fn spawn_retention(
    store: &Arc<dyn AuditStore>,
    leadership: &Leadership,
    keep: u64,
    dir: PathBuf,
    stop: CancellationToken,
) -> Option<JoinHandle<()>> {
    (keep > 0).then(|| {
        let (store, leadership) = (store.clone(), leadership.clone());
        tokio::spawn(async move {
            leadership
                .run_while_leader(&stop, |term, lost| {
                    let (store, dir) = (store.clone(), dir.clone());
                    async move {
                        loop {
                            let epoch = Some(term.epoch);
                            if let Err(e) = retain(store.as_ref(), keep, &dir, epoch).await {
                                tracing::warn!(error = %e, "audit retention");
                            }
                            tokio::select! {
                                _ = tokio::time::sleep(Duration::from_secs(60)) => {}
                                _ = lost.cancelled() => break,
                            }
                        }
                    }
                })
                .await
        })
    })
}

/// SIGHUP: re-validate and reload the catalog and policy from `path`.
/// The handler is installed when this is called, before the server answers
/// anything: a SIGHUP that arrives before a lazily spawned task installs it
/// would kill the process (the default action).
///
/// `extra`: sections of frontends an embedder runs, which are theirs to check.
pub(crate) fn install_reload(
    path: Option<PathBuf>,
    extra: Vec<String>,
    builtin_names: Vec<String>,
    exec: &Executor,
    stop: CancellationToken,
) {
    let hup = path.and_then(|path| {
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .map(|hup| (path, hup))
            .map_err(|e| tracing::warn!(error = %e, "no SIGHUP reload: cannot install the handler"))
            .ok()
    });
    let Some((path, mut hup)) = hup else {
        return;
    };
    let exec = exec.clone();
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

/// One retention check: when the store holds more than `keep` + 10 % events,
/// archive all but the newest `keep` (events of requests in flight stay).
/// `leader_epoch`: the term of the cluster leader running it, whose writes
/// the store refuses once that term is over ([`AuditStore::archive_as`]).
pub async fn retain(
    store: &dyn AuditStore,
    keep: u64,
    dir: &std::path::Path,
    leader_epoch: Option<u64>,
) -> Result<Option<youops_core::audit::ArchiveReport>, youops_core::audit::StoreError> {
    let (tip, _) = store.head().await?;
    let start = store.events(0, 1).await?.first().map_or(1, |e| e.seq);
    let live = (tip + 1).saturating_sub(start);
    if live <= keep.saturating_add(keep / 10) {
        return Ok(None);
    }
    let report = store.archive_as(tip - keep, dir, leader_epoch).await?;
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
