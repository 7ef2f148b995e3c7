//! [`AppState`], what the HTTP handlers share (the API, the dashboard, the
//! health and metrics endpoints), [`ChainStatus`], the incremental check of
//! the audit chain they show, and [`ClusterStatus`], what they show of the
//! cluster when the daemon is a node of one (read through a
//! [`ClusterStatusSource`], so that this side knows no store crate).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Serialize;
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
    cluster: Option<Arc<dyn ClusterStatusSource>>,
}

/// What the dashboard (`/cluster`) and the API (`/api/v1/cluster`) show of
/// the cluster this daemon is a node of. Times are the database's.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterStatus {
    /// This node's id.
    pub node: String,
    /// This node's incarnation.
    pub incarnation: u64,
    /// The epoch under which this node leads now (`None`: it follows).
    pub leading: Option<u64>,
    /// The `leader` lease (`None`: no node ever held it).
    pub leader: Option<ClusterLeader>,
    /// Every node, by id.
    pub nodes: Vec<ClusterNodeStatus>,
    /// Every op lock lease, by key.
    pub locks: Vec<ClusterLock>,
    /// When this status was read (this daemon's clock): ages and
    /// remaining times are counted from it.
    pub checked_at: DateTime<Utc>,
}

/// The `leader` lease: its holder (or last holder, once expired).
#[derive(Debug, Clone, Serialize)]
pub struct ClusterLeader {
    /// The node holding it.
    pub holder: String,
    /// That node's incarnation.
    pub holder_incarnation: u64,
    /// The term's epoch.
    pub epoch: u64,
    /// When it expires unless renewed.
    pub expires_at: DateTime<Utc>,
    /// Whether it expired by the database clock (nobody leads).
    pub expired: bool,
}

/// One node of the cluster.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterNodeStatus {
    /// Its id.
    pub node: String,
    /// Its latest incarnation.
    pub incarnation: u64,
    /// When that incarnation joined.
    pub started_at: DateTime<Utc>,
    /// Its last heartbeat.
    pub heartbeat_at: DateTime<Utc>,
    /// The highest incarnation the leader declared dead, if any.
    pub fenced: Option<u64>,
}

impl ClusterNodeStatus {
    /// Whether its latest incarnation is fenced (declared dead).
    pub fn is_fenced(&self) -> bool {
        self.fenced.is_some_and(|f| f >= self.incarnation)
    }
}

/// One op lock lease.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterLock {
    /// The op lock key.
    pub key: String,
    /// The request holding it.
    pub request_id: String,
    /// The node holding it.
    pub holder: String,
    /// That node's incarnation.
    pub holder_incarnation: u64,
    /// When the request took it.
    pub acquired_at: DateTime<Utc>,
    /// When its lease expires unless renewed.
    pub expires_at: DateTime<Utc>,
    /// Whether it expired by the database clock (any request may take it).
    pub expired: bool,
}

/// Reads the [`ClusterStatus`] (the cluster module implements it on the
/// node's coordinator).
#[async_trait::async_trait]
pub trait ClusterStatusSource: Send + Sync {
    /// The cluster as it is now.
    async fn status(&self) -> anyhow::Result<ClusterStatus>;
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
    /// The state of a daemon that starts now, with nothing of the chain
    /// checked; `cluster` when it is a node of a cluster.
    pub(crate) fn new(
        exec: Executor,
        host: FrontendHost,
        metrics: Arc<Metrics>,
        public_url: Option<String>,
        request_timeout: Duration,
        git: Option<GitHandle>,
        cluster: Option<Arc<dyn ClusterStatusSource>>,
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
                cluster,
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

    /// The cluster's status source, when this daemon is a node of a cluster.
    pub fn cluster(&self) -> Option<&Arc<dyn ClusterStatusSource>> {
        self.inner.cluster.as_ref()
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
