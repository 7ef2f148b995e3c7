//! Prometheus metrics through the `metrics` facade, fed by lifecycle events
//! and an instrumented audit store, and the frontends' own.
//!
//! Each server has its own [`Metrics`]: a Prometheus recorder that is never the
//! process-global one (several servers in one process, as in the tests, keep
//! their counts apart). The daemon's metrics are registered on it, and the
//! built-in frontends are constructed with it as the local recorder
//! ([`Metrics::with_recorder`]), so their handles land there too; `/metrics`
//! renders it.
//!
//! Labels stay low-cardinality: `frontend` and `outcome` come from small fixed
//! sets, and `op` is the op name only when it is in the catalog (`unknown`
//! otherwise, so typos cannot grow the label space).

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use metrics::{
    counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram, Counter,
    Histogram,
};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};
use youops_core::audit::{AppendOptions, ArchiveReport, AuditStore, StoreError, VerifyReport};
use youops_core::{AuditEvent, NewEvent, RequestFilter, RequestId, RequestRecord};

/// The buckets of both histograms (request duration, audit append), in seconds.
const BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 60.0, 300.0,
];

/// How often [`Metrics::upkeep`] should run: it folds histogram samples
/// recorded since into the rendered histograms (a scrape does it too).
pub const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

const REQUESTS: &str = "youops_requests_total";
const REQUEST_DURATION: &str = "youops_request_duration_seconds";
const AUDIT_APPEND: &str = "youops_audit_append_seconds";
const DRAINING_REFUSALS: &str = "youops_http_draining_refusals_total";
const AUTH_FAILURES: &str = "youops_http_auth_failures_total";

/// The metrics of one server: its own Prometheus recorder, with the daemon's
/// metrics registered on it.
#[derive(Clone)]
pub struct Metrics {
    recorder: Arc<PrometheusRecorder>,
    handle: PrometheusHandle,
    audit_append: Histogram,
    drained_refusals: Counter,
    auth_failures: Counter,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A new recorder (not installed globally), with the daemon's metrics
    /// described and registered.
    pub fn new() -> Metrics {
        let recorder = PrometheusBuilder::new()
            .set_buckets(&BUCKETS)
            .expect("the bucket list is not empty")
            .build_recorder();
        let handle = recorder.handle();
        let recorder = Arc::new(recorder);
        metrics::with_local_recorder(&*recorder, || {
            describe_counter!(REQUESTS, "Requests that reached an end state.");
            describe_histogram!(REQUEST_DURATION, "Time from receipt to end state.");
            describe_histogram!(
                AUDIT_APPEND,
                "Latency of audit appends (durable ones include the group fsync)."
            );
            describe_counter!(
                DRAINING_REFUSALS,
                "Requests refused with 503 while shutting down."
            );
            describe_counter!(
                AUTH_FAILURES,
                "Requests refused for a missing or bad token or signature."
            );
            Metrics {
                audit_append: histogram!(AUDIT_APPEND),
                drained_refusals: counter!(DRAINING_REFUSALS),
                auth_failures: counter!(AUTH_FAILURES),
                handle,
                recorder: recorder.clone(),
            }
        })
    }

    /// Run `f` with this server's recorder as the local one: metrics handles
    /// registered in `f` (by a frontend's constructor) record here.
    pub fn with_recorder<T>(&self, f: impl FnOnce() -> T) -> T {
        metrics::with_local_recorder(&*self.recorder, f)
    }

    /// Count a finished request.
    pub fn finished(&self, frontend: &str, op: &str, outcome: &str, secs: f64) {
        self.with_recorder(|| {
            counter!(
                REQUESTS,
                "frontend" => frontend.to_string(),
                "op" => op.to_string(),
                "outcome" => outcome.to_string()
            )
            .increment(1);
            histogram!(REQUEST_DURATION, "frontend" => frontend.to_string()).record(secs);
        });
    }

    /// Record one audit append's latency.
    pub fn audit_appended(&self, secs: f64) {
        self.audit_append.record(secs);
    }

    /// Count an HTTP request refused while draining.
    pub fn refused_draining(&self) {
        self.drained_refusals.increment(1);
    }

    /// Count a request refused for a missing or bad token or signature.
    pub fn auth_failed(&self) {
        self.auth_failures.increment(1);
    }

    /// Fold the histogram samples recorded since the last upkeep or scrape
    /// into the histograms (run every [`UPKEEP_INTERVAL`], so samples do not
    /// pile up between scrapes).
    pub fn upkeep(&self) {
        self.handle.run_upkeep();
    }

    /// Prometheus text exposition of everything recorded here, with `gauges`
    /// (name, help, value) set to their value at this scrape first.
    pub fn render(&self, gauges: &[(&'static str, &'static str, f64)]) -> String {
        self.with_recorder(|| {
            for (name, help, v) in gauges {
                describe_gauge!(*name, *help);
                gauge!(*name).set(*v);
            }
        });
        self.handle.render()
    }
}

/// An [`AuditStore`] wrapper that times appends.
#[derive(Debug)]
pub struct InstrumentedStore {
    inner: Arc<dyn AuditStore>,
    metrics: Arc<Metrics>,
}

impl InstrumentedStore {
    /// Wrap `inner`.
    pub fn new(inner: Arc<dyn AuditStore>, metrics: Arc<Metrics>) -> Self {
        InstrumentedStore { inner, metrics }
    }
}

#[async_trait]
impl AuditStore for InstrumentedStore {
    async fn append(
        &self,
        events: Vec<NewEvent>,
        opts: AppendOptions,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        let t = Instant::now();
        let r = self.inner.append(events, opts).await;
        self.metrics.audit_appended(t.elapsed().as_secs_f64());
        r
    }
    async fn flush(&self) -> Result<(), StoreError> {
        self.inner.flush().await
    }
    async fn request(&self, id: RequestId) -> Result<Option<RequestRecord>, StoreError> {
        self.inner.request(id).await
    }
    async fn request_events(&self, id: RequestId) -> Result<Vec<AuditEvent>, StoreError> {
        self.inner.request_events(id).await
    }
    async fn requests_events(
        &self,
        ids: &[RequestId],
    ) -> Result<std::collections::HashMap<RequestId, Vec<AuditEvent>>, StoreError> {
        self.inner.requests_events(ids).await
    }
    async fn find_dedup(&self, key: &str) -> Result<Option<RequestId>, StoreError> {
        self.inner.find_dedup(key).await
    }
    async fn list_requests(
        &self,
        filter: &RequestFilter,
        before: Option<RequestId>,
        limit: usize,
    ) -> Result<Vec<RequestRecord>, StoreError> {
        self.inner.list_requests(filter, before, limit).await
    }
    async fn active_requests(&self) -> Result<Vec<RequestRecord>, StoreError> {
        self.inner.active_requests().await
    }
    async fn events(&self, after: u64, limit: usize) -> Result<Vec<AuditEvent>, StoreError> {
        self.inner.events(after, limit).await
    }
    async fn head(&self) -> Result<(u64, String), StoreError> {
        self.inner.head().await
    }
    async fn verify(&self) -> Result<VerifyReport, StoreError> {
        self.inner.verify().await
    }
    async fn size_on_disk(&self) -> Result<u64, StoreError> {
        self.inner.size_on_disk().await
    }

    async fn archive(
        &self,
        through_seq: u64,
        dir: &std::path::Path,
    ) -> Result<Option<ArchiveReport>, StoreError> {
        self.inner.archive(through_seq, dir).await
    }

    async fn archive_as(
        &self,
        through_seq: u64,
        dir: &std::path::Path,
        leader_epoch: Option<u64>,
    ) -> Result<Option<ArchiveReport>, StoreError> {
        self.inner.archive_as(through_seq, dir, leader_epoch).await
    }
}

#[cfg(test)]
mod tests;
