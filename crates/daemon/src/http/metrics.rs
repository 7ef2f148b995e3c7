//! Prometheus metrics, fed by lifecycle events and an instrumented audit store.
//!
//! Labels stay low-cardinality: `frontend` and `outcome` come from small fixed
//! sets, and `op` is the op name only when it is in the catalog (`unknown`
//! otherwise, so typos cannot grow the label space).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_trait::async_trait;
use youops_core::audit::{AppendOptions, ArchiveReport, AuditStore, StoreError, VerifyReport};
use youops_core::{AuditEvent, NewEvent, RequestFilter, RequestId, RequestRecord};

const BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 60.0, 300.0,
];

/// A Prometheus histogram.
#[derive(Debug, Default)]
pub struct Histogram {
    counts: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    /// Record one observation in seconds.
    pub fn observe(&self, secs: f64) {
        for (i, b) in BUCKETS.iter().enumerate() {
            if secs <= *b {
                self.counts[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add((secs * 1e6) as u64, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (i, b) in BUCKETS.iter().enumerate() {
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {}",
                self.counts[i].load(Ordering::Relaxed)
            );
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {count}");
        // No label set is written bare: `name_sum{}` is outside the text format's grammar.
        let set = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(
            out,
            "{name}_sum{set} {}",
            self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "{name}_count{set} {count}");
    }
}

/// All daemon metrics.
#[derive(Debug, Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, String, String), u64>>,
    durations: Mutex<BTreeMap<String, Arc<Histogram>>>,
    /// Audit append latency.
    pub audit_append: Histogram,
    /// HTTP requests refused while draining.
    pub drained_refusals: AtomicU64,
    /// Webhook signature failures.
    pub auth_failures: AtomicU64,
}

impl Metrics {
    /// Count a finished request.
    pub fn finished(&self, frontend: &str, op: &str, outcome: &str, secs: f64) {
        *self
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry((frontend.to_string(), op.to_string(), outcome.to_string()))
            .or_default() += 1;
        let h = self
            .durations
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(frontend.to_string())
            .or_default()
            .clone();
        h.observe(secs);
    }

    /// Prometheus text exposition.
    pub fn render(&self, gauges: &[(&str, &str, f64)]) -> String {
        let mut out = String::new();
        out.push_str("# HELP youops_requests_total Requests that reached an end state.\n# TYPE youops_requests_total counter\n");
        for ((f, op, outcome), n) in self
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "youops_requests_total{{frontend=\"{}\",op=\"{}\",outcome=\"{}\"}} {n}",
                esc(f),
                esc(op),
                esc(outcome)
            );
        }
        out.push_str("# HELP youops_request_duration_seconds Time from receipt to end state.\n# TYPE youops_request_duration_seconds histogram\n");
        for (f, h) in self
            .durations
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            h.render(
                &mut out,
                "youops_request_duration_seconds",
                &format!("frontend=\"{}\"", esc(f)),
            );
        }
        out.push_str("# HELP youops_audit_append_seconds Latency of audit appends (durable ones include the group fsync).\n# TYPE youops_audit_append_seconds histogram\n");
        self.audit_append
            .render(&mut out, "youops_audit_append_seconds", "");
        for (name, help, v) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        }
        let _ = writeln!(
            out,
            "# HELP youops_http_draining_refusals_total Requests refused with 503 while shutting down.\n# TYPE youops_http_draining_refusals_total counter\nyouops_http_draining_refusals_total {}",
            self.drained_refusals.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP youops_http_auth_failures_total Requests refused for a missing or bad token or signature.\n# TYPE youops_http_auth_failures_total counter\nyouops_http_auth_failures_total {}",
            self.auth_failures.load(Ordering::Relaxed)
        );
        out
    }
}

fn esc(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
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
        self.metrics.audit_append.observe(t.elapsed().as_secs_f64());
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::default();
        m.finished("api", "deploy", "succeeded", 0.02);
        m.finished("api", "deploy", "succeeded", 0.2);
        let text = m.render(&[(
            "youops_pending_approvals",
            "Requests waiting for approval.",
            3.0,
        )]);
        assert!(
            text.contains(
                "youops_requests_total{frontend=\"api\",op=\"deploy\",outcome=\"succeeded\"} 2"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "youops_request_duration_seconds_bucket{frontend=\"api\",le=\"0.025\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains("youops_request_duration_seconds_count{frontend=\"api\"} 2"),
            "{text}"
        );
        assert!(text.contains("youops_pending_approvals 3"), "{text}");
    }
}
