//! GitHub webhook acknowledgement latency at fixed offered loads, and issue-form
//! parse throughput.
//!
//! What GitHub sees, on loopback: signed `issue_comment` `created` deliveries
//! (unique `X-GitHub-Delivery` and comment ids, a `/ops echo text=…` command) are
//! POSTed over keep-alive HTTP/1.1 to a minimal axum server that does what the
//! daemon does for a frontend route (read the whole body, then
//! `FrontendHost::handle`). Each delivery goes signature check → JSON decode →
//! grammar → policy → durable (group-committed, fdatasynced) log append, and the
//! answer goes back once the request is durable (the frontend waits up to
//! `ack_timeout` for that). The op (a builtin) runs, and the frontend's lifecycle
//! feedback (status comment, reactions, labels) goes to a fake GitHub REST API on
//! 127.0.0.1 during the measurement.
//!
//! Open loop: request *i* of a load is due at `start + i/rate` and is sent then
//! whatever happened to the earlier ones; its latency counts from when it was due
//! to when the whole answer was read, so queueing delay is counted (no
//! coordinated omission). The load generator (`youops_testkit::loadgen`) paces
//! from a plain thread and sends from its own one-worker runtime, with
//! pre-built signed bodies.
//!
//! Run: `cargo bench -p youops-frontend-issue --bench webhook` (env
//! `YOUOPS_BENCH_SECS`, default 5 per load). Without `--bench` (under
//! `cargo test`) it runs a 1 s smoke at a low rate and checks every answer is 200.

// The daemon's allocator (the `youops` binary's default `jemalloc` feature), so the
// figures are the daemon's; the same-run baselines share it.
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
use youops_core::config::Config;
use youops_core::frontend::{Frontend, FrontendHost, Frontends};
use youops_core::Executor;
use youops_frontend_issue::webhook::sign;
use youops_frontend_issue::{parse_issue_form, GithubFrontend};
use youops_store::{LogOptions, LogStore};
use youops_testkit::github::{Call, FakeGithub, GithubOptions};
use youops_testkit::loadgen::{bench_rates, measure, run_open_loop, table_header, Prepared};
use youops_testkit::serve_host;

const SECRET: &str = "bench-webhook-secret";
const REPO: &str = "acme/ops";

// ------------------------------------------------------------ fake GitHub API

/// The kit's fake GitHub, taking the made-up issues and comments of the
/// deliveries, counting every call and keeping none.
async fn fake_github(calls: Arc<AtomicU64>) -> String {
    let fake = FakeGithub::start_with(GithubOptions {
        lenient: true,
        record: false,
        observe: Some(Arc::new(move |_: &Call| {
            calls.fetch_add(1, Ordering::Relaxed);
        })),
        ..Default::default()
    })
    .await;
    fake.base()
}

// ------------------------------------------------------------ payloads

fn user(login: &str, id: u64) -> Value {
    let mut v = json!({
        "login": login, "id": id, "node_id": "MDQ6VXNlcjE=",
        "avatar_url": format!("https://avatars.githubusercontent.com/u/{id}?v=4"), "gravatar_id": "",
        "type": "User", "user_view_type": "public", "site_admin": false
    });
    for k in [
        "url",
        "html_url",
        "followers_url",
        "following_url",
        "gists_url",
        "starred_url",
        "subscriptions_url",
        "organizations_url",
        "repos_url",
        "events_url",
        "received_events_url",
    ] {
        v[k] = json!(format!("https://api.github.com/users/{login}/{k}"));
    }
    v
}

/// A repository object with GitHub's usual `*_url` fields, so the payload has a
/// realistic size (a real `issue_comment` delivery is 8–12 KB).
fn repository() -> Value {
    let mut v = json!({
        "id": 4242, "node_id": "R_kgDOA", "name": "ops", "full_name": REPO, "private": true,
        "owner": user("acme", 1), "html_url": format!("https://github.com/{REPO}"),
        "description": "Operations requests", "fork": false, "created_at": "2023-01-01T00:00:00Z",
        "updated_at": "2024-05-01T10:00:00Z", "pushed_at": "2024-05-01T10:00:00Z",
        "homepage": null, "size": 120, "stargazers_count": 0, "watchers_count": 0,
        "language": null, "has_issues": true, "has_projects": false, "has_downloads": true,
        "has_wiki": false, "has_pages": false, "has_discussions": false, "forks_count": 0,
        "archived": false, "disabled": false, "open_issues_count": 12, "license": null,
        "allow_forking": false, "is_template": false, "topics": [], "visibility": "private",
        "forks": 0, "open_issues": 12, "watchers": 0, "default_branch": "main"
    });
    for k in [
        "url",
        "forks_url",
        "keys_url",
        "collaborators_url",
        "teams_url",
        "hooks_url",
        "issue_events_url",
        "events_url",
        "assignees_url",
        "branches_url",
        "tags_url",
        "blobs_url",
        "git_tags_url",
        "git_refs_url",
        "trees_url",
        "statuses_url",
        "languages_url",
        "stargazers_url",
        "contributors_url",
        "subscribers_url",
        "subscription_url",
        "commits_url",
        "git_commits_url",
        "comments_url",
        "issue_comment_url",
        "contents_url",
        "compare_url",
        "merges_url",
        "archive_url",
        "downloads_url",
        "issues_url",
        "pulls_url",
        "milestones_url",
        "notifications_url",
        "labels_url",
        "releases_url",
        "deployments_url",
    ] {
        v[k] = json!(format!("https://api.github.com/repos/{REPO}/{k}"));
    }
    v
}

fn reactions() -> Value {
    json!({ "url": "", "total_count": 0, "+1": 0, "-1": 0, "laugh": 0, "hooray": 0,
            "confused": 0, "heart": 0, "rocket": 0, "eyes": 0 })
}

/// A signed `issue_comment` `created` delivery, unique by `n`.
fn delivery(n: u64, repo: &Value, people: &[Value]) -> Prepared {
    let alice = &people[(n % PEOPLE) as usize];
    let issue_no = n % 50 + 1;
    let comment_id = 2_000_000_000 + n;
    let api = format!("https://api.github.com/repos/{REPO}/issues");
    let payload = json!({
        "action": "created",
        "issue": {
            "url": format!("{api}/{issue_no}"), "repository_url": format!("https://api.github.com/repos/{REPO}"),
            "labels_url": format!("{api}/{issue_no}/labels{{/name}}"),
            "comments_url": format!("{api}/{issue_no}/comments"),
            "events_url": format!("{api}/{issue_no}/events"),
            "html_url": format!("https://github.com/{REPO}/issues/{issue_no}"),
            "id": 900_000 + issue_no, "node_id": "I_kwDOA", "number": issue_no,
            "title": "Deploys for the web team", "user": alice,
            "labels": [{ "id": 7, "node_id": "LA_1", "url": format!("https://api.github.com/repos/{REPO}/labels/youops"),
                         "name": "youops", "color": "ededed", "default": false, "description": null }],
            "state": "open", "locked": false, "assignee": null, "assignees": [], "milestone": null,
            "comments": 3, "created_at": "2024-05-01T09:00:00Z", "updated_at": "2024-05-01T10:00:00Z",
            "closed_at": null, "author_association": "MEMBER", "active_lock_reason": null,
            "body": "Running the week's deploys from here.", "reactions": reactions(),
            "timeline_url": format!("{api}/{issue_no}/timeline"), "performed_via_github_app": null,
            "state_reason": null
        },
        "comment": {
            "url": format!("{api}/comments/{comment_id}"),
            "html_url": format!("https://github.com/{REPO}/issues/{issue_no}#issuecomment-{comment_id}"),
            "issue_url": format!("{api}/{issue_no}"),
            "id": comment_id, "node_id": "IC_kwDOA", "user": alice,
            "created_at": "2024-05-01T10:00:00Z", "updated_at": "2024-05-01T10:00:00Z",
            "author_association": "MEMBER",
            "body": format!("Shipping the fix.\r\n/ops echo text=bench-{n}"),
            "reactions": reactions(), "performed_via_github_app": null
        },
        "repository": repo,
        "organization": { "login": "acme", "id": 1, "node_id": "MDEyOk9yZ2FuaXphdGlvbjE=",
                          "url": "https://api.github.com/orgs/acme", "description": null },
        "sender": alice,
        "installation": { "id": 77, "node_id": "MDIzOkludGVncmF0aW9uSW5zdGFsbGF0aW9uNzc=" }
    });
    let body = serde_json::to_vec(&payload).unwrap();
    let headers = vec![
        ("content-type", "application/json".to_string()),
        ("user-agent", "GitHub-Hookshot/7a3b2c1".to_string()),
        ("x-github-event", "issue_comment".to_string()),
        (
            "x-github-delivery",
            format!("72d3162e-cc78-11e3-81ab-{n:012x}"),
        ),
        ("x-github-hook-id", "123456".to_string()),
        (
            "x-github-hook-installation-target-type",
            "repository".to_string(),
        ),
        ("x-hub-signature-256", sign(SECRET.as_bytes(), &body)),
    ];
    (headers, Bytes::from(body))
}

// ------------------------------------------------------------ main

const CONFIG: &str = r#"
[[ops]]
name = "echo"
runner = { type = "builtin", name = "echo" }
[[ops.params]]
name = "text"
type = "string"

[[ops]]
name = "app.deploy"
description = "Deploy a version of an application"
runner = { type = "builtin", name = "echo" }
[[ops.params]]
name = "app"
type = "enum"
values = ["web", "api", "worker"]
[[ops.params]]
name = "env"
type = "enum"
values = ["staging", "prod"]
[[ops.params]]
name = "version"
type = "string"
[[ops.params]]
name = "replicas"
type = "int"
min = 1
max = 50
required = false
[[ops.params]]
name = "verify"
type = "bool"
default = true
[[ops.params]]
name = "note"
type = "string"
required = false

[[grants]]
roles = ["ops"]
ops = ["*"]
"#;

/// Requesters: the executor limits each principal to 600 requests a minute (the
/// default), so the load is spread over this many people, as it would be.
const PEOPLE: u64 = 100;

fn principals() -> String {
    (0..PEOPLE)
        .map(|i| format!("[principals.p{i:03}]\nroles = [\"ops\"]\nidentities = {{ github = [\"user{i:03}\"] }}\n"))
        .collect()
}

/// Issue-form parsing: what GitHub renders from a filled-in `app.deploy` form.
fn form_throughput(cfg: &Config, budget: Duration) {
    let catalog = cfg.catalog();
    let op = catalog.get("app.deploy").unwrap();
    let body = "### YouOps operation\r\n\r\napp.deploy\r\n\r\n### app\r\n\r\nweb\r\n\r\n### env\r\n\r\nprod\r\n\r\n### version\r\n\r\n2024.05.1-rc.3\r\n\r\n### replicas\r\n\r\n_No response_\r\n\r\n### verify\r\n\r\n- [X] yes\r\n\r\n### note\r\n\r\nRoll out after the 10:00 freeze lifts.\r\nPing #web-oncall, then watch the error budget.";
    let args = parse_issue_form(body, op).expect("the form parses");
    assert!(args.len() >= 5, "{args:?}");
    // Warm up, then time batches until the budget is spent.
    for _ in 0..1000 {
        std::hint::black_box(parse_issue_form(std::hint::black_box(body), op).unwrap());
    }
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < budget {
        for _ in 0..1000 {
            std::hint::black_box(parse_issue_form(std::hint::black_box(body), op).unwrap());
        }
        n += 1000;
    }
    let el = start.elapsed();
    println!(
        "\nissue-form parse (`parse_issue_form`, {} fields, {} bytes body): {n} forms in {:.2} s = {:.0} forms/s, {:.2} µs/form",
        args.len(),
        body.len(),
        el.as_secs_f64(),
        n as f64 / el.as_secs_f64(),
        el.as_secs_f64() * 1e6 / n as f64
    );
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        return; // a test runner asking for test names: there are none
    }
    let bench = args.iter().any(|a| a == "--bench");
    let secs: u64 = std::env::var("YOUOPS_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let (rates, secs): (Vec<u64>, u64) = if bench {
        (bench_rates(&[100, 250, 500]), secs)
    } else {
        (vec![20], 1)
    };

    let calls = Arc::new(AtomicU64::new(0));
    let api = fake_github(calls.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "{CONFIG}\n{}\n[frontends.github]\nwebhook_secret = \"{SECRET}\"\ntoken = \"bench-token\"\napi_base_url = \"{api}\"\nrepos = [\"{REPO}\"]\npoll_interval = \"0s\"\n",
        principals()
    );
    let cfg = Config::parse(&text, dir.path(), "bench", &|_| None).unwrap();
    let store = Arc::new(LogStore::open(dir.path().join("store"), LogOptions::default()).unwrap());
    let exec = Executor::builder(&cfg, store.clone())
        .builtin("echo", |c: youops_core::runner::BuiltinCall| async move {
            Ok(c.args.get("text").map(|v| v.as_text()).unwrap_or_default())
        })
        .build()
        .await
        .unwrap();
    let section = cfg.frontend("github").cloned().unwrap();
    let fe = GithubFrontend::from_config(&section).unwrap();
    let shutdown = CancellationToken::new();
    let mut set = Frontends::new();
    set.push(Arc::new(fe.clone()) as Arc<dyn Frontend>);
    let host = Arc::new(FrontendHost::new(
        &set,
        &exec,
        Some("https://youops.example".into()),
        &shutdown,
        |n| cfg.frontend(n).cloned().unwrap_or_default(),
    ));
    host.spawn();
    while !fe.is_ready() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let addr = serve_host(&host).await;
    let url = format!("http://{addr}/github/webhook");
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(1024)
        .pool_idle_timeout(Duration::from_secs(90))
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap();

    let repo = repository();
    let people: Vec<Value> = (0..PEOPLE)
        .map(|i| user(&format!("user{i:03}"), 500 + i))
        .collect();
    let size = delivery(0, &repo, &people).1.len();
    println!(
        "GitHub webhook acknowledgement over loopback HTTP, open loop, {secs} s per load; \
         signed `issue_comment` deliveries of {size} bytes; log store in {}\n",
        dir.path().display()
    );
    let mut n = 1u64;
    let mut batch = |count: u64| -> Vec<Prepared> {
        (0..count)
            .map(|_| {
                n += 1;
                delivery(n, &repo, &people)
            })
            .collect()
    };
    // Warm-up (connections, caches, the store); not reported.
    let warm = run_open_loop(&client, &url, 100, batch(if bench { 200 } else { 10 }));
    assert_eq!(
        warm.statuses.get("200"),
        Some(&warm.sent),
        "warm-up: {:?}",
        warm.statuses
    );
    tokio::time::sleep(Duration::from_millis(500)).await;

    println!("{}", table_header("GitHub"));
    for rate in rates {
        let (r, row) = measure(&client, &url, rate, batch(rate * secs), &calls);
        println!("{row}");
        if !bench {
            assert_eq!(r.statuses.get("200"), Some(&r.sent), "{:?}", r.statuses);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    form_throughput(
        &cfg,
        if bench {
            Duration::from_secs(2)
        } else {
            Duration::from_millis(100)
        },
    );

    shutdown.cancel();
    let _ = exec.shutdown(Duration::from_secs(5)).await;
}
