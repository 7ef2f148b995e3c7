//! GitOps against a running daemon: plans, and the git frontend's metrics
//! beside the daemon's at `/metrics`.

use std::path::Path;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;

use crate::stdout;
use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_dry_run_through_the_server_plans_on_the_daemons_state() {
    let dir = tempfile::tempdir().unwrap();
    // The commit's author maps to no principal: its request is denied, so
    // the plan stays `+ user/ada` however far the daemon's own pass got.
    let ops = git_setup(dir.path());
    let cfg = dir.path().join("youops.toml");
    std::fs::write(&cfg, config("", &ops)).unwrap();
    let c = cfg.to_str().unwrap();
    let mut served = Served::spawn(&cfg, dir.path().join("serve.log")).await;
    let server = served.api.base.clone();
    let plan = |token: &'static str, extra: &'static [&'static str]| {
        let server = server.clone();
        async move {
            let mut args = vec![
                "--config",
                c,
                "--server",
                &server,
                "--token",
                token,
                "reconcile",
                "--once",
            ];
            args.extend_from_slice(extra);
            youops_async(&args, &[]).await
        }
    };

    let remote = plan(ALICE, &["--dry-run"]).await;
    assert_eq!(remote.status.code(), Some(0), "{}", describe(&remote));
    let remote_text = stdout(&remote);
    assert!(
        remote_text.starts_with("plan for main at "),
        "{remote_text}"
    );
    assert!(remote_text.contains("+ user/ada"), "{remote_text}");

    // Who may not run the kind's ops may not see its plan.
    let carol = plan(CAROL, &["--dry-run"]).await;
    assert_eq!(carol.status.code(), Some(2), "{}", describe(&carol));
    assert!(
        String::from_utf8_lossy(&carol.stderr).contains("may not run `user.apply`"),
        "{}",
        describe(&carol)
    );
    // Applying through the server is the daemon's job; the advice works.
    let apply = plan(ALICE, &[]).await;
    assert_eq!(apply.status.code(), Some(2), "{}", describe(&apply));
    assert!(
        String::from_utf8_lossy(&apply.stderr).contains("--dry-run` with --server"),
        "{}",
        describe(&apply)
    );
    // Locally, the store is the daemon's: the message points at --server.
    let local = youops_async(&["--config", c, "reconcile", "--once", "--dry-run"], &[]).await;
    assert_eq!(local.status.code(), Some(69), "{}", describe(&local));
    assert!(
        String::from_utf8_lossy(&local.stderr).contains("--server"),
        "{}",
        describe(&local)
    );

    served.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(served.wait_exit(Duration::from_secs(10)).await, Some(0));
    // With the daemon stopped, the local plan reads the same.
    let local = youops_async(&["--config", c, "reconcile", "--once", "--dry-run"], &[]).await;
    assert_eq!(local.status.code(), Some(0), "{}", describe(&local));
    assert_eq!(stdout(&local), remote_text);
}

/// A repository with one commit declaring `user/ada` by a committer no
/// principal maps, and the sections that reconcile it.
fn git_setup(dir: &Path) -> String {
    gitops_repo(dir, "stranger@example.com", "1h").1
}

/// The value of the series line `series` (full name with labels).
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// Every metric name `/metrics` had before the `metrics` facade, with its type.
const EXPOSED: &[(&str, &str)] = &[
    ("youops_requests_total", "counter"),
    ("youops_request_duration_seconds", "histogram"),
    ("youops_audit_append_seconds", "histogram"),
    ("youops_pending_approvals", "gauge"),
    ("youops_running_requests", "gauge"),
    ("youops_audit_store_bytes", "gauge"),
    ("youops_audit_verified_seq", "gauge"),
    ("youops_audit_chain_intact", "gauge"),
    ("youops_uptime_seconds", "gauge"),
    ("youops_http_draining_refusals_total", "counter"),
    ("youops_http_auth_failures_total", "counter"),
    ("youops_git_passes_total", "counter"),
    ("youops_git_noop_passes_total", "counter"),
    ("youops_git_change_requests_total", "counter"),
    ("youops_git_changes_applied_total", "counter"),
    ("youops_git_changes_failed_total", "counter"),
    ("youops_git_trailer_commands_total", "counter"),
    ("youops_git_drift_detected_total", "counter"),
    ("youops_git_drift_corrected_total", "counter"),
    ("youops_git_force_pushes_total", "counter"),
    ("youops_git_refused_commits_total", "counter"),
    ("youops_git_invalid_commits_total", "counter"),
    ("youops_git_webhooks_accepted_total", "counter"),
    ("youops_git_webhooks_rejected_total", "counter"),
    ("youops_git_drifted_resources", "gauge"),
    ("youops_git_retries_pending", "gauge"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_show_the_daemon_and_its_frontends_apart_from_other_servers() {
    let dir = tempfile::tempdir().unwrap();
    let ops = git_setup(dir.path());
    let d = Daemon::start_with_frontends(&config("", &ops)).await;
    // A second server in the same process: its counts are its own.
    let other = Daemon::start(&config("", "")).await;

    let (st, v) = d
        .api
        .submit(ALICE, "hello", json!({ "name": "metrics" }), Some("10s"))
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let (st, v) = d.api.get("/api/v1/requests", Some("not-a-token")).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED, "{v}");

    let hello = r#"youops_requests_total{frontend="api",op="hello",outcome="succeeded"}"#;
    let deadline = Instant::now() + Duration::from_secs(10);
    let text = loop {
        let (st, text) = d.api.get_text("/metrics", None).await;
        assert_eq!(st, StatusCode::OK);
        let passes = value(&text, "youops_git_passes_total").unwrap_or(0.0);
        if value(&text, hello) == Some(1.0) && passes >= 1.0 {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "no {hello} 1 or git pass in:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    for (name, kind) in EXPOSED {
        let ty = format!("# TYPE {name} {kind}\n");
        assert!(text.contains(&ty), "no `{ty}` in:\n{text}");
        assert!(
            text.contains(&format!("# HELP {name} ")),
            "no HELP of {name}:\n{text}"
        );
    }
    for series in [
        r#"youops_request_duration_seconds_bucket{frontend="api",le="0.025"}"#,
        r#"youops_request_duration_seconds_bucket{frontend="api",le="+Inf"}"#,
        "youops_audit_append_seconds_bucket{le=\"0.025\"}",
        "youops_audit_append_seconds_sum",
    ] {
        assert!(value(&text, series).is_some(), "no {series} in:\n{text}");
    }
    assert_eq!(
        value(
            &text,
            r#"youops_request_duration_seconds_count{frontend="api"}"#
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        value(&text, "youops_http_auth_failures_total"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        value(&text, "youops_audit_chain_intact"),
        Some(1.0),
        "{text}"
    );

    let (st, text) = other.api.get_text("/metrics", None).await;
    assert_eq!(st, StatusCode::OK);
    assert!(!text.contains("youops_git_"), "{text}");
    assert!(!text.contains(r#"op="hello""#), "{text}");
    assert_eq!(
        value(&text, "youops_http_auth_failures_total"),
        Some(0.0),
        "{text}"
    );

    other.stop().await.expect("clean stop");
    d.stop().await.expect("clean stop");
}
