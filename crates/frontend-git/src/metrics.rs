//! Counters of the frontend's work and their Prometheus exposition.

use std::sync::atomic::{AtomicU64, Ordering};

/// Counters for metrics (monotonic unless noted).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct GitMetrics {
    /// Reconcile passes run (including no-op passes).
    pub passes: u64,
    /// Passes that found the head already reconciled and did no work.
    pub noop_passes: u64,
    /// Requests submitted for resource changes (not counting duplicates).
    pub change_requests: u64,
    /// Changes that succeeded.
    pub changes_applied: u64,
    /// Changes that failed (each attempt).
    pub changes_failed: u64,
    /// Trailer commands submitted.
    pub trailer_commands: u64,
    /// Resources found drifted.
    pub drift_detected: u64,
    /// Drifted resources corrected by self-heal.
    pub drift_corrected: u64,
    /// Force-pushes seen.
    pub force_pushes: u64,
    /// Commits refused by `require_signed`.
    pub refused_commits: u64,
    /// Commits whose desired state has errors.
    pub invalid_commits: u64,
    /// Webhook deliveries that triggered a pass.
    pub webhooks_accepted: u64,
    /// Webhook deliveries refused (bad signature or token).
    pub webhooks_rejected: u64,
    /// Gauge: resources drifted now.
    pub drifted_now: u64,
    /// Gauge: changes waiting for a retry.
    pub retries_pending: u64,
}

impl GitMetrics {
    /// Prometheus text exposition.
    pub fn prometheus(&self) -> String {
        let mut s = String::new();
        let mut put = |name: &str, kind: &str, help: &str, v: u64| {
            s.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}\n"
            ));
        };
        put(
            "youops_git_passes_total",
            "counter",
            "Reconcile passes.",
            self.passes,
        );
        put(
            "youops_git_noop_passes_total",
            "counter",
            "Passes that found nothing to do.",
            self.noop_passes,
        );
        put(
            "youops_git_change_requests_total",
            "counter",
            "Requests submitted for resource changes.",
            self.change_requests,
        );
        put(
            "youops_git_changes_applied_total",
            "counter",
            "Resource changes that succeeded.",
            self.changes_applied,
        );
        put(
            "youops_git_changes_failed_total",
            "counter",
            "Resource change attempts that failed.",
            self.changes_failed,
        );
        put(
            "youops_git_trailer_commands_total",
            "counter",
            "Commit-trailer commands submitted.",
            self.trailer_commands,
        );
        put(
            "youops_git_drift_detected_total",
            "counter",
            "Resources found drifted.",
            self.drift_detected,
        );
        put(
            "youops_git_drift_corrected_total",
            "counter",
            "Drifted resources corrected.",
            self.drift_corrected,
        );
        put(
            "youops_git_force_pushes_total",
            "counter",
            "Force-pushes that rewrote seen history.",
            self.force_pushes,
        );
        put(
            "youops_git_refused_commits_total",
            "counter",
            "Commits refused by require_signed.",
            self.refused_commits,
        );
        put(
            "youops_git_invalid_commits_total",
            "counter",
            "Commits whose desired state has errors.",
            self.invalid_commits,
        );
        put(
            "youops_git_webhooks_accepted_total",
            "counter",
            "Webhook deliveries that triggered a pass.",
            self.webhooks_accepted,
        );
        put(
            "youops_git_webhooks_rejected_total",
            "counter",
            "Webhook deliveries refused.",
            self.webhooks_rejected,
        );
        put(
            "youops_git_drifted_resources",
            "gauge",
            "Resources drifted now.",
            self.drifted_now,
        );
        put(
            "youops_git_retries_pending",
            "gauge",
            "Changes waiting for a retry.",
            self.retries_pending,
        );
        s
    }
}

/// The live counters behind [`GitMetrics`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) passes: AtomicU64,
    pub(crate) noop_passes: AtomicU64,
    pub(crate) change_requests: AtomicU64,
    pub(crate) changes_applied: AtomicU64,
    pub(crate) changes_failed: AtomicU64,
    pub(crate) trailer_commands: AtomicU64,
    pub(crate) drift_detected: AtomicU64,
    pub(crate) drift_corrected: AtomicU64,
    pub(crate) force_pushes: AtomicU64,
    pub(crate) refused_commits: AtomicU64,
    pub(crate) invalid_commits: AtomicU64,
    pub(crate) webhooks_accepted: AtomicU64,
    pub(crate) webhooks_rejected: AtomicU64,
    pub(crate) drifted_now: AtomicU64,
    pub(crate) retries_pending: AtomicU64,
}

impl Counters {
    /// The counters now.
    pub(crate) fn snapshot(&self) -> GitMetrics {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        GitMetrics {
            passes: g(&self.passes),
            noop_passes: g(&self.noop_passes),
            change_requests: g(&self.change_requests),
            changes_applied: g(&self.changes_applied),
            changes_failed: g(&self.changes_failed),
            trailer_commands: g(&self.trailer_commands),
            drift_detected: g(&self.drift_detected),
            drift_corrected: g(&self.drift_corrected),
            force_pushes: g(&self.force_pushes),
            refused_commits: g(&self.refused_commits),
            invalid_commits: g(&self.invalid_commits),
            webhooks_accepted: g(&self.webhooks_accepted),
            webhooks_rejected: g(&self.webhooks_rejected),
            drifted_now: g(&self.drifted_now),
            retries_pending: g(&self.retries_pending),
        }
    }
}

/// Add `n` to a counter.
pub(crate) fn bump(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}
