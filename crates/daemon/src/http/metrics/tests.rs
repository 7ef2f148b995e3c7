//! Unit tests of the server's metrics: the exposition, and that two servers'
//! recorders (and what is built under them) keep their counts apart.

use super::*;

fn scrape(m: &Metrics) -> String {
    m.render(&[(
        "youops_pending_approvals",
        "Requests waiting for approval.",
        3.0,
    )])
}

#[test]
fn renders_prometheus_text() {
    let m = Metrics::new();
    m.finished("api", "deploy", "succeeded", 0.02);
    m.finished("api", "deploy", "succeeded", 0.2);
    m.audit_appended(0.004);
    m.auth_failed();
    let text = scrape(&m);
    for want in [
        "# TYPE youops_requests_total counter\n",
        "# HELP youops_requests_total Requests that reached an end state.\n",
        "youops_requests_total{frontend=\"api\",op=\"deploy\",outcome=\"succeeded\"} 2\n",
        "# TYPE youops_request_duration_seconds histogram\n",
        "youops_request_duration_seconds_bucket{frontend=\"api\",le=\"0.025\"} 1\n",
        "youops_request_duration_seconds_bucket{frontend=\"api\",le=\"300\"} 2\n",
        "youops_request_duration_seconds_bucket{frontend=\"api\",le=\"+Inf\"} 2\n",
        "youops_request_duration_seconds_count{frontend=\"api\"} 2\n",
        "# TYPE youops_audit_append_seconds histogram\n",
        "youops_audit_append_seconds_bucket{le=\"0.005\"} 1\n",
        "youops_audit_append_seconds_count 1\n",
        "# TYPE youops_pending_approvals gauge\n",
        "youops_pending_approvals 3\n",
        "# TYPE youops_http_draining_refusals_total counter\n",
        "youops_http_draining_refusals_total 0\n",
        "youops_http_auth_failures_total 1\n",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
}

#[test]
fn servers_keep_their_counts_apart() {
    let a = Metrics::new();
    let b = Metrics::new();
    // What a frontend does at construction: register handles with the
    // current recorder.
    let frontend_counter = a.with_recorder(|| {
        metrics::describe_counter!("youops_test_things_total", "Things.");
        metrics::counter!("youops_test_things_total")
    });
    frontend_counter.increment(7);
    a.auth_failed();
    a.finished("api", "deploy", "failed", 0.5);
    let (ta, tb) = (scrape(&a), scrape(&b));
    assert!(ta.contains("youops_test_things_total 7\n"), "{ta}");
    assert!(
        ta.contains("# HELP youops_test_things_total Things.\n"),
        "{ta}"
    );
    assert!(ta.contains("youops_http_auth_failures_total 1\n"), "{ta}");
    assert!(!tb.contains("youops_test_things_total"), "{tb}");
    assert!(tb.contains("youops_http_auth_failures_total 0\n"), "{tb}");
    assert!(!tb.contains("youops_requests_total{"), "{tb}");
}
