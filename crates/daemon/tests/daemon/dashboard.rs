//! The dashboard in a real headless Chromium.

use std::path::Path;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use crate::support::*;

const CHROMIUM: &str = "/usr/bin/chromium";

/// Run headless Chromium with `args`; its stdout.
async fn chromium(profile: &Path, args: &[&str]) -> String {
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: the dashboard test needs a real browser. Install it with \
         `apt-get install -y chromium` (.ci/run installs it)"
    );
    let mut cmd = tokio::process::Command::new(CHROMIUM);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .args(args)
    .stdin(std::process::Stdio::null())
    .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("chromium finished within 60s")
        .expect("run chromium");
    assert!(
        out.status.success(),
        "chromium {args:?} failed: {}",
        describe(&out)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_in_headless_chromium() {
    let d = Daemon::start(&config("", "")).await;
    let api = &d.api;
    let secret = "correct-horse-battery-staple";
    let (st, v) = api
        .submit(
            ALICE,
            "db.rotate-password",
            json!({ "db_user": "billing", "password": secret }),
            Some("10s"),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let id = id_of(&v);
    for (token, op, args) in [
        (BOB, "hello", json!({ "name": "dashboard" })),
        (ALICE, "cache.flush", json!({ "region": "eu" })),
        (
            CAROL,
            "deploy",
            json!({ "service": "api", "version": "v1.0.0" }),
        ),
    ] {
        api.submit(token, op, args, Some("10s")).await;
    }
    let (st, _) = api
        .submit(
            ALICE,
            "deploy",
            json!({ "service": "web", "version": "v3.1.4" }),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::ACCEPTED);
    let (st, _) = api
        .submit(ALICE, "helo", json!({ "name": "typo" }), None)
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);

    let profile = tempfile::tempdir().unwrap();
    let base = d.base().to_string();

    // The index lists the request with its op and a state badge.
    let dom = chromium(profile.path(), &["--dump-dom", &format!("{base}/")]).await;
    let row_start = dom
        .find(&format!("data-request-id=\"{id}\""))
        .unwrap_or_else(|| panic!("no row for {id} in:\n{dom}"));
    let row = &dom[row_start..];
    let row = &row[..row.find("</tr>").unwrap()];
    assert!(row.contains("db.rotate-password"), "{row}");
    assert!(
        row.contains("class=\"badge s-succeeded\""),
        "no state badge in the row: {row}"
    );
    assert!(
        dom.contains("id=\"pending\""),
        "pending approvals section: {dom}"
    );
    assert!(
        dom.contains("data-ok=\"true\""),
        "audit chain status: {dom}"
    );
    assert!(!dom.contains(secret), "the secret leaked into the index");

    // The request page: arguments with the secret masked, and every event.
    let dom = chromium(
        profile.path(),
        &["--dump-dom", &format!("{base}/requests/{id}")],
    )
    .await;
    assert!(
        !dom.contains(secret),
        "the secret leaked into the request page"
    );
    let args_start = dom.find("id=\"args\"").expect("args");
    let args = &dom[args_start..];
    let args = &args[..args.find("</dd>").unwrap()];
    assert!(args.contains("db_user=billing"), "{args}");
    assert!(args.contains("password=********"), "{args}");
    let events_start = dom.find("id=\"events\"").expect("events table");
    let events = &dom[events_start..];
    let events = &events[..events.find("</table>").unwrap()];
    assert_eq!(
        events.matches("<tr").count(),
        4,
        "header + 3 events: {events}"
    );
    for s in ["received", "running", "succeeded"] {
        assert!(events.contains(s), "no {s} in events: {events}");
    }
    assert!(dom.contains("id=\"output\""), "output: {dom}");

    // A screenshot a person can look at.
    let png = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/dashboard.png");
    std::fs::create_dir_all(png.parent().unwrap()).unwrap();
    let _ = std::fs::remove_file(&png);
    chromium(
        profile.path(),
        &[
            &format!("--screenshot={}", png.display()),
            "--window-size=1280,900",
            &format!("{base}/"),
        ],
    )
    .await;
    let bytes = std::fs::read(&png).expect("screenshot written");
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    assert!(
        bytes.len() > 10 * 1024,
        "screenshot is only {} bytes",
        bytes.len()
    );
    let page = png.with_file_name("dashboard-request.png");
    chromium(
        profile.path(),
        &[
            &format!("--screenshot={}", page.display()),
            "--window-size=1280,900",
            &format!("{base}/requests/{id}"),
        ],
    )
    .await;
    d.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_cluster_page_says_a_lone_daemon_runs_alone() {
    let d = Daemon::start(&config("", "")).await;
    let (st, html) = d.api.get_text("/cluster", None).await;
    assert_eq!(st, StatusCode::OK, "{html}");
    assert!(html.contains("data-cluster=\"alone\""), "{html}");
    assert!(html.contains("runs alone"), "{html}");
    let (st, v) = d.api.get("/api/v1/cluster", Some(ALICE)).await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{v}");
    assert_eq!(v["error"]["code"], "not_a_cluster", "{v}");
    d.stop().await.expect("clean stop");
}
