//! The frontend's metrics, recorded through the `metrics` facade.
//!
//! The handles are registered once, when the frontend is constructed, with
//! whichever recorder is current then: the process-global one, or a local one
//! installed with `metrics::with_local_recorder` around the construction (the
//! daemon's per-server Prometheus recorder; a test's debugging recorder).
//! Without a recorder the handles are no-ops. The crate never renders metrics:
//! whoever installs the recorder exports them.

use metrics::{describe_counter, describe_gauge, Counter, Gauge};

/// The handles the frontend records into.
#[derive(Debug, Clone)]
pub(crate) struct Metrics {
    /// Reconcile passes run (including no-op passes).
    pub(crate) passes: Counter,
    /// Passes that found the head already reconciled and did no work.
    pub(crate) noop_passes: Counter,
    /// Requests submitted for resource changes (not counting duplicates).
    pub(crate) change_requests: Counter,
    /// Changes that succeeded.
    pub(crate) changes_applied: Counter,
    /// Changes that failed (each attempt).
    pub(crate) changes_failed: Counter,
    /// Trailer commands submitted.
    pub(crate) trailer_commands: Counter,
    /// Resources found drifted.
    pub(crate) drift_detected: Counter,
    /// Drifted resources corrected by self-heal.
    pub(crate) drift_corrected: Counter,
    /// Force-pushes seen.
    pub(crate) force_pushes: Counter,
    /// Commits refused by `require_signed`.
    pub(crate) refused_commits: Counter,
    /// Commits whose desired state has errors.
    pub(crate) invalid_commits: Counter,
    /// Webhook deliveries that triggered a pass.
    pub(crate) webhooks_accepted: Counter,
    /// Webhook deliveries refused (bad signature or token).
    pub(crate) webhooks_rejected: Counter,
    /// Resources drifted now (set from the persisted state when it changes).
    pub(crate) drifted_now: Gauge,
    /// Changes waiting for a retry (set from the persisted state on each save).
    pub(crate) retries_pending: Gauge,
}

impl Metrics {
    /// Describe and register every metric with the current recorder.
    pub(crate) fn register() -> Metrics {
        fn counter(name: &'static str, help: &'static str) -> Counter {
            describe_counter!(name, help);
            metrics::counter!(name)
        }
        fn gauge(name: &'static str, help: &'static str) -> Gauge {
            describe_gauge!(name, help);
            metrics::gauge!(name)
        }
        Metrics {
            passes: counter("youops_git_passes_total", "Reconcile passes."),
            noop_passes: counter(
                "youops_git_noop_passes_total",
                "Passes that found nothing to do.",
            ),
            change_requests: counter(
                "youops_git_change_requests_total",
                "Requests submitted for resource changes.",
            ),
            changes_applied: counter(
                "youops_git_changes_applied_total",
                "Resource changes that succeeded.",
            ),
            changes_failed: counter(
                "youops_git_changes_failed_total",
                "Resource change attempts that failed.",
            ),
            trailer_commands: counter(
                "youops_git_trailer_commands_total",
                "Commit-trailer commands submitted.",
            ),
            drift_detected: counter(
                "youops_git_drift_detected_total",
                "Resources found drifted.",
            ),
            drift_corrected: counter(
                "youops_git_drift_corrected_total",
                "Drifted resources corrected.",
            ),
            force_pushes: counter(
                "youops_git_force_pushes_total",
                "Force-pushes that rewrote seen history.",
            ),
            refused_commits: counter(
                "youops_git_refused_commits_total",
                "Commits refused by require_signed.",
            ),
            invalid_commits: counter(
                "youops_git_invalid_commits_total",
                "Commits whose desired state has errors.",
            ),
            webhooks_accepted: counter(
                "youops_git_webhooks_accepted_total",
                "Webhook deliveries that triggered a pass.",
            ),
            webhooks_rejected: counter(
                "youops_git_webhooks_rejected_total",
                "Webhook deliveries refused.",
            ),
            drifted_now: gauge("youops_git_drifted_resources", "Resources drifted now."),
            retries_pending: gauge("youops_git_retries_pending", "Changes waiting for a retry."),
        }
    }
}
