//! [`AppState`], what the HTTP handlers share (the API, the dashboard, the
//! health and metrics endpoints), and [`ChainStatus`], the incremental check of
//! the audit chain they show.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use youops_core::audit::{ChainVerifier, VerifyReport};
use youops_core::frontend::FrontendHost;
use youops_core::Executor;

use super::metrics::Metrics;
use crate::gitops::GitHandle;

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
    git: Option<GitHandle>,
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
    /// The state of a daemon that starts now, with nothing of the chain checked.
    pub(crate) fn new(
        exec: Executor,
        host: FrontendHost,
        metrics: Arc<Metrics>,
        public_url: Option<String>,
        request_timeout: Duration,
        git: Option<GitHandle>,
    ) -> Self {
        AppState {
            inner: Arc::new(AppInner {
                exec,
                host,
                metrics,
                draining: AtomicBool::new(false),
                public_url,
                request_timeout,
                git,
                chain: Mutex::new(ChainStatus {
                    verifier: ChainVerifier::new(),
                    broken: None,
                    verified_through: 0,
                    checked_at: None,
                }),
                started: Instant::now(),
            }),
        }
    }

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
    pub fn git(&self) -> Option<&GitHandle> {
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

    /// Start draining: from now on, requests that change something get 503.
    pub(crate) fn start_draining(&self) {
        self.inner.draining.store(true, Ordering::SeqCst);
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
