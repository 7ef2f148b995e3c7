//! Several daemons on one PostgreSQL store (a throw-away cluster started by
//! the test, reached over a Unix socket): one chain, approvals and
//! idempotency keys across nodes, and a node killed with SIGKILL whose
//! running request the leader marks interrupted.

use std::path::Path;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};
use youops_testkit::pg::PgCluster;

use crate::support::*;

/// An op that holds lock `db` while it sleeps.
const LOCKED_OP: &str = r#"
[[ops]]
name = "migrate"
description = "Migrate the database (one at a time)"
runner = { type = "builtin", name = "sleep" }
lock = "db"
[[ops.params]]
name = "seconds"
type = "int"
default = 1
"#;

/// The test config with its store on `url`, as node `node`.
fn node_config(url: &str, node: &str, lease_ttl: &str) -> String {
    config(
        &format!("node_id = \"{node}\"\nlease_ttl = \"{lease_ttl}\""),
        LOCKED_OP,
    )
    .replace("path = \"store\"", &format!("url = \"{url}\""))
}

fn write_config(dir: &Path, text: &str) -> std::path::PathBuf {
    let path = dir.join("youops.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// The events of request `id` whose label is `label`, as `node` reads them.
pub(crate) async fn count_events(api: &Api, id: &str, label: &str) -> usize {
    let (st, v) = api
        .get(&format!("/api/v1/requests/{id}"), Some(ALICE))
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    v["events"]
        .as_array()
        .unwrap_or_else(|| panic!("no events in {v:#}"))
        .iter()
        .filter(|e| e["body"]["type"] == "transition" && e["body"]["to"] == label)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_daemons_share_one_chain_and_decide_across_nodes() {
    let pg = PgCluster::start().unwrap();
    let url = pg.create_database();
    let a = Daemon::start(&node_config(&url, "a", "3s")).await;
    let b = Daemon::start(&node_config(&url, "b", "3s")).await;

    // Received on a, approved on b (bob leads `deploy`), run once.
    let (st, v) = a
        .api
        .submit(
            ALICE,
            "deploy",
            json!({"service": "api", "version": "v1.2.3"}),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::ACCEPTED, "{v}");
    let id = id_of(&v);
    b.api.wait_state(BOB, &id, "pending_approval").await;
    let approve = format!("/api/v1/requests/{id}/approve");
    let (st, v) = b.api.post(&approve, Some(BOB), &json!({})).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    a.api.wait_state(ALICE, &id, "succeeded").await;
    assert_eq!(count_events(&a.api, &id, "running").await, 1);

    // One idempotency key, sent to both nodes: one request, run once.
    let mut ids = Vec::new();
    for d in [&a, &b] {
        let resp = d
            .api
            .http
            .post(d.api.url("/api/v1/requests?wait=5s"))
            .bearer_auth(ALICE)
            .header("Idempotency-Key", "deploy-once-2026")
            .json(&json!({"op": "hello", "args": {"name": "cluster"}}))
            .send()
            .await
            .unwrap();
        let v: Value = resp.json().await.unwrap();
        ids.push(id_of(&v));
    }
    assert_eq!(
        ids[0], ids[1],
        "the second node answered with the first request"
    );
    b.api.wait_state(ALICE, &ids[0], "succeeded").await;
    assert_eq!(count_events(&b.api, &ids[0], "running").await, 1);

    // Both nodes verify the one chain.
    for d in [&a, &b] {
        let (st, v) = d.api.get("/api/v1/audit/verify", Some(ALICE)).await;
        assert_eq!(st, StatusCode::OK, "{v}");
        assert_eq!(v["ok"], true, "{v:#}");
    }
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_is_fenced_and_its_running_request_interrupted() {
    let pg = PgCluster::start().unwrap();
    let url = pg.create_database();
    let fake = FakeGithub::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (repo, gitops) = gitops_repo_of_ops(dir.path());
    let ops = format!(
        "{LOCKED_OP}{}{gitops}",
        github_section(&fake.base, "ack_timeout = \"3s\"")
    );
    // a leads: its reconciler applies ada.
    let [mut a, b, c] = three_nodes(dir.path(), &url, &ops).await;
    wait_applied(&b.api, "ada").await;

    // Load through every node, and a long run on a, the leader.
    let stop = tokio_util::sync::CancellationToken::new();
    let apis = [&a, &b, &c].map(|n| Api::new(n.api.base.clone())).to_vec();
    let load = spawn_load(apis.clone(), stop.clone());
    let hooks = spawn_webhooks(apis, stop.clone());
    let (st, v) = a
        .api
        .submit(ALICE, "nap", json!({"seconds": 120}), None)
        .await;
    assert_eq!(st, StatusCode::ACCEPTED, "{v}");
    let id = id_of(&v);
    b.api.wait_state(ALICE, &id, "running").await;
    // And one asked on an issue, received by a: a renders its status.
    let payload = issue_comment_payload(9001, 99, GH_LOGIN, "/ops nap seconds=120");
    let st = deliver(&a.api, "issue_comment", "wh-nap", &payload).await;
    assert!(st.is_some_and(|s| s.is_success()), "{st:?}");
    let status_of = |state: &'static str| {
        let fake = fake.clone();
        move || {
            let bodies = fake.comments_on(99);
            let marked: Vec<&String> = bodies
                .iter()
                .filter(|b| b.contains("<!-- youops:status "))
                .collect();
            assert!(marked.len() <= 1, "one status comment: {marked:#?}");
            marked
                .iter()
                .any(|b| b.contains(&format!("state={state} ")))
        }
    };
    wait_until(Duration::from_secs(20), status_of("running")).await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    let killed = Instant::now();
    let takeover = tokio::spawn(leads_after([b.log.clone(), c.log.clone()], killed));
    a.signal(nix::sys::signal::Signal::SIGKILL);
    a.wait_exit(Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.cancel();
    let acked = load.await.unwrap();
    assert!(acked.len() > 20, "only {} acknowledged", acked.len());
    let comments = hooks.await.unwrap();
    assert!(
        comments.len() > 5,
        "only {} webhooks acknowledged",
        comments.len()
    );

    // b or c takes the lease once a's expires, then fences a and interrupts
    // its run, never re-running it.
    let r = b.api.wait_state(ALICE, &id, "interrupted").await;
    let reason = r["request"]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("node a stopped"), "{r:#}");
    assert!(
        killed.elapsed() < Duration::from_secs(30),
        "took {:?}",
        killed.elapsed()
    );
    // Another node leads within the lease TTL (2 s) of a's last renewal,
    // give or take scheduling under a loaded test run.
    let took = takeover.await.unwrap();
    assert!(
        took < Duration::from_secs(6),
        "another node led after {took:?}"
    );
    // Its reconciler took over: a new commit is applied, ada is not again.
    commit_user(&repo, OPS_COMMITTER, "bea");
    wait_applied(&c.api, "bea").await;
    assert!(
        killed.elapsed() < Duration::from_secs(30),
        "took {:?}",
        killed.elapsed()
    );
    let ada = applied(&c.api, "ada").await;
    assert_eq!(ada.len(), 1, "ada applied once: {ada:#?}");
    // The new leader adopted a's requests: the issue's status comment (the
    // same one, edited) tells the interruption.
    wait_until(Duration::from_secs(20), status_of("interrupted")).await;
    assert_eq!(
        count_events(&b.api, &id, "running").await,
        1,
        "never re-run"
    );

    // Every acknowledged request is there, and ran at most once; every
    // acknowledged comment made exactly one request, wherever its
    // deliveries went.
    check_acked(&c.api, &acked).await;
    let by_comment = github_requests(&c.api).await;
    for cid in &comments {
        let ids = by_comment.get(cid).cloned().unwrap_or_default();
        assert_eq!(ids.len(), 1, "comment {cid}: {ids:?}");
        check_acked(&c.api, &ids).await;
    }
    let (_, v) = c.api.get("/api/v1/audit/verify", Some(ALICE)).await;
    assert_eq!(v["ok"], true, "{v:#}");
}

/// Nodes a, b and c in subdirectories of `dir`, on the store at `url`,
/// with `ops` (ops and frontend sections) and a lease TTL of 2 s; a starts
/// first and leads, b and c follow.
pub(crate) async fn three_nodes(dir: &Path, url: &str, ops: &str) -> [Served; 3] {
    let mut nodes = Vec::new();
    for name in ["a", "b", "c"] {
        let d = dir.join(name);
        std::fs::create_dir_all(&d).unwrap();
        let text = config(&format!("node_id = \"{name}\"\nlease_ttl = \"2s\""), ops)
            .replace("path = \"store\"", &format!("url = \"{url}\""));
        let node = Served::spawn(&write_config(&d, &text), d.join("log")).await;
        if name == "a" {
            node.wait_log("this node leads the cluster").await;
        }
        nodes.push(node);
    }
    <[Served; 3]>::try_from(nodes).ok().unwrap()
}

/// The committer the gitops principal maps.
const OPS_COMMITTER: &str = "ops@example.com";

/// [`gitops_repo`] reconciled every second, its commits' author mapped to
/// a principal of role ops.
fn gitops_repo_of_ops(dir: &Path) -> (std::path::PathBuf, String) {
    let (repo, section) = gitops_repo(dir, OPS_COMMITTER, "1s");
    let principal = format!(
        "\n[principals.gitops]\nroles = [\"ops\"]\nidentities = {{ git = [\"{OPS_COMMITTER}\"] }}\n"
    );
    (repo, section + &principal)
}

/// The `user.apply` requests for user `name`.
async fn applied(api: &Api, name: &str) -> Vec<Value> {
    let mut all = api.list_all("op=user.apply").await;
    all.retain(|r| r["request"]["args"]["name"] == name);
    all
}

/// Wait (bounded) until user `name` was applied.
async fn wait_applied(api: &Api, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let found = applied(api, name).await;
        if found.iter().any(|r| r["state"] == "succeeded") {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name} never applied: {found:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// How long after `since` one of `logs` first says its node leads (polled;
/// panics after 30 s).
async fn leads_after(logs: [std::path::PathBuf; 2], since: Instant) -> Duration {
    let leads = |p: &std::path::PathBuf| {
        std::fs::read_to_string(p)
            .unwrap_or_default()
            .contains("this node leads the cluster")
    };
    assert!(!logs.iter().any(leads), "only a led before the kill");
    loop {
        if logs.iter().any(leads) {
            return since.elapsed();
        }
        assert!(
            since.elapsed() < Duration::from_secs(30),
            "no node took over"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Poll `done` until it holds; panic after `limit`.
async fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The time of the first transition of `id` to `to`.
async fn transition_time(api: &Api, id: &str, to: &str) -> chrono::DateTime<chrono::Utc> {
    let (_, v) = api
        .get(&format!("/api/v1/requests/{id}"), Some(ALICE))
        .await;
    let e = v["events"]
        .as_array()
        .and_then(|es| {
            es.iter()
                .find(|e| e["body"]["type"] == "transition" && e["body"]["to"] == to)
        })
        .unwrap_or_else(|| panic!("no {to} in {v:#}"));
    serde_json::from_value(e["time"].clone()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_op_lock_is_held_across_the_cluster() {
    let pg = PgCluster::start().unwrap();
    let url = pg.create_database();
    let a = Daemon::start(&node_config(&url, "a", "3s")).await;
    let b = Daemon::start(&node_config(&url, "b", "3s")).await;
    let (_, v) = a
        .api
        .submit(ALICE, "migrate", json!({"seconds": 2}), None)
        .await;
    let first = id_of(&v);
    a.api.wait_state(ALICE, &first, "running").await;
    let (_, v) = b
        .api
        .submit(ALICE, "migrate", json!({"seconds": 1}), None)
        .await;
    let second = id_of(&v);
    b.api.wait_state(ALICE, &first, "succeeded").await;
    b.api.wait_state(ALICE, &second, "succeeded").await;

    let first_end = transition_time(&b.api, &first, "succeeded").await;
    let second_start = transition_time(&b.api, &second, "running").await;
    assert!(
        second_start >= first_end,
        "the second ran at {second_start} while the first held the lock until {first_end}"
    );
    let (_, v) = b
        .api
        .get(&format!("/api/v1/requests/{second}"), Some(ALICE))
        .await;
    let waited = v["events"].as_array().unwrap().iter().any(|e| {
        e["body"]["kind"] == "lock_wait"
            && e["body"]["message"]
                .as_str()
                .unwrap_or("")
                .contains("another node")
    });
    assert!(waited, "the second queued for the other node's lock: {v:#}");
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}

/// The leader's node id, once a node leads (by `api`'s `/api/v1/cluster`).
async fn leader_of(api: &Api) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (st, v) = api.get("/api/v1/cluster", Some(ALICE)).await;
        assert_eq!(st, StatusCode::OK, "{v}");
        if v["leader"]["expired"] == false {
            return v["leader"]["holder"].as_str().unwrap().to_string();
        }
        assert!(Instant::now() < deadline, "no leader: {v:#}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_page_shows_the_nodes_the_leader_and_the_op_locks() {
    let pg = PgCluster::start().unwrap();
    let url = pg.create_database();
    let a = Daemon::start(&node_config(&url, "a", "3s")).await;
    let b = Daemon::start(&node_config(&url, "b", "3s")).await;
    let leader = leader_of(&b.api).await;
    let (_, v) = a
        .api
        .submit(ALICE, "migrate", json!({"seconds": 3}), None)
        .await;
    let id = id_of(&v);
    a.api.wait_state(ALICE, &id, "running").await;

    // The page, as the other node shows it.
    let (st, html) = b.api.get_text("/cluster", None).await;
    assert_eq!(st, StatusCode::OK, "{html}");
    assert!(html.contains("data-node=\"self\">b<"), "this node: {html}");
    assert!(
        html.contains(&format!("data-leader=\"{leader}\"")),
        "the leader {leader}: {html}"
    );
    for node in ["a", "b"] {
        assert!(
            html.contains(&format!("<td class=\"mono\">{node}</td>")),
            "node {node}: {html}"
        );
    }
    let locks = &html[html.find("<h2>Op locks</h2>").expect("op locks")..];
    assert!(locks.contains("<td class=\"mono\">db</td>"), "{locks}");
    assert!(
        locks.contains(&format!("href=\"/requests/{id}\"")),
        "the holding request: {locks}"
    );
    assert!(locks.contains("a <span"), "held by node a: {locks}");
    assert!(html.contains("href=\"/cluster\""), "the header links it");

    // The same as JSON, with a token only.
    let (st, _) = b.api.get("/api/v1/cluster", None).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    let (st, v) = b.api.get("/api/v1/cluster", Some(ALICE)).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["node"], "b", "{v:#}");
    assert_eq!(v["leader"]["holder"], leader.as_str(), "{v:#}");
    assert_eq!(v["leading"].is_u64(), leader == "b", "{v:#}");
    let nodes: Vec<&str> = v["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["node"].as_str().unwrap())
        .collect();
    assert_eq!(nodes, ["a", "b"], "{v:#}");
    let lock = v["locks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["key"] == "db")
        .unwrap_or_else(|| panic!("no lock db: {v:#}"));
    assert_eq!(lock["request_id"], id.as_str(), "{v:#}");
    assert_eq!(lock["holder"], "a", "{v:#}");
    assert_eq!(lock["expired"], false, "{v:#}");

    a.api.wait_state(ALICE, &id, "succeeded").await;
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}

/// Submits `hello` round-robin to `nodes` until `stop`, each with an
/// idempotency key of its own; the ids of the acknowledged (202) requests.
fn spawn_load(
    nodes: Vec<Api>,
    stop: tokio_util::sync::CancellationToken,
) -> tokio::task::JoinHandle<Vec<String>> {
    tokio::spawn(async move {
        let mut acked = Vec::new();
        let mut i = 0usize;
        while !stop.is_cancelled() {
            let api = &nodes[i % nodes.len()];
            let sent = api
                .http
                .post(api.url("/api/v1/requests"))
                .bearer_auth(ALICE)
                .header("Idempotency-Key", format!("load-{i}"))
                .json(&json!({"op": "hello", "args": {"name": format!("n{i}")}}))
                .timeout(Duration::from_secs(5))
                .send()
                .await;
            if let Ok(resp) = sent {
                if resp.status() == StatusCode::ACCEPTED {
                    if let Ok(v) = resp.json::<Value>().await {
                        acked.push(id_of(&v));
                    }
                }
            }
            i += 1;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        acked
    })
}

/// Delivers a new `/ops hello` comment to a node, then the same delivery
/// to the next node (a redelivery), until `stop`; the comments whose first
/// delivery was acknowledged.
fn spawn_webhooks(
    nodes: Vec<Api>,
    stop: tokio_util::sync::CancellationToken,
) -> tokio::task::JoinHandle<Vec<u64>> {
    tokio::spawn(async move {
        let mut acked = Vec::new();
        let mut i = 0usize;
        while !stop.is_cancelled() {
            let cid = 7000 + i as u64;
            let payload = issue_comment_payload(cid, 30 + cid % 4, GH_LOGIN, "/ops hello");
            let delivery = format!("wh-{cid}");
            let first = deliver(
                &nodes[i % nodes.len()],
                "issue_comment",
                &delivery,
                &payload,
            );
            if first.await.is_some_and(|s| s.is_success()) {
                acked.push(cid);
            }
            let again = &nodes[(i + 1) % nodes.len()];
            let _ = deliver(again, "issue_comment", &delivery, &payload).await;
            i += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        acked
    })
}

/// The GitHub requests in the chain, by the comment they came from.
async fn github_requests(api: &Api) -> std::collections::HashMap<u64, Vec<String>> {
    let mut out: std::collections::HashMap<u64, Vec<String>> = Default::default();
    for r in api.list_all("frontend=github").await {
        let key = r["request"]["dedup_key"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let cid = (7000..8000).find(|c| gh_comment_key(*c) == key);
        if let (Some(cid), Some(id)) = (cid, r["request"]["id"].as_str()) {
            out.entry(cid).or_default().push(id.to_string());
        }
    }
    out
}

/// Every acknowledged request is in the chain, ran at most once, and ended.
async fn check_acked(api: &Api, acked: &[String]) {
    for id in acked {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (st, v) = api
                .get(&format!("/api/v1/requests/{id}"), Some(ALICE))
                .await;
            assert_eq!(
                st,
                StatusCode::OK,
                "acknowledged request {id} is missing: {v}"
            );
            let state = state_of(&v).to_string();
            if ["succeeded", "interrupted"].contains(&state.as_str()) {
                assert!(count_events(api, id, "running").await <= 1, "{v:#}");
                break;
            }
            assert!(Instant::now() < deadline, "{id} never ended: {v:#}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgresql_restart_under_load_loses_nothing_acknowledged() {
    let mut pg = PgCluster::start().unwrap();
    let url = pg.create_database();
    let a = Daemon::start(&node_config(&url, "a", "3s")).await;
    let b = Daemon::start(&node_config(&url, "b", "3s")).await;
    let stop = tokio_util::sync::CancellationToken::new();
    let load = spawn_load(
        vec![Api::new(a.api.base.clone()), Api::new(b.api.base.clone())],
        stop.clone(),
    );
    tokio::time::sleep(Duration::from_millis(700)).await;
    pg.restart().unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.cancel();
    let acked = load.await.unwrap();
    assert!(acked.len() > 20, "only {} acknowledged", acked.len());
    check_acked(&a.api, &acked).await;

    // Both nodes take new requests again.
    for d in [&a, &b] {
        let (st, v) = d.api.submit(ALICE, "hello", json!({}), Some("5s")).await;
        assert_eq!(st, StatusCode::CREATED, "{v}");
    }
    let (_, v) = b.api.get("/api/v1/audit/verify", Some(ALICE)).await;
    assert_eq!(v["ok"], true, "{v:#}");
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_redelivered_to_another_node_runs_nothing_and_is_rendered_once() {
    let pg = PgCluster::start().unwrap();
    let url = pg.create_database();
    let fake = FakeGithub::start().await;
    let with_github = |node: &str| {
        config(
            &format!("node_id = \"{node}\"\nlease_ttl = \"3s\""),
            &github_section(&fake.base, "ack_timeout = \"3s\""),
        )
        .replace("path = \"store\"", &format!("url = \"{url}\""))
    };
    let a = Daemon::start_with_frontends(&with_github("a")).await;
    let b = Daemon::start_with_frontends(&with_github("b")).await;

    let payload = issue_comment_payload(5001, 12, GH_LOGIN, "/ops hello name=webhook");
    for d in [&a, &b, &a] {
        let st = deliver(&d.api, "issue_comment", "delivery-5001", &payload).await;
        assert!(st.is_some_and(|s| s.is_success()), "{st:?}");
    }
    // The same comment under a new delivery id (as polling would see it).
    let st = deliver(&b.api, "issue_comment", "delivery-5001-again", &payload).await;
    assert!(st.is_some_and(|s| s.is_success()), "{st:?}");

    let deadline = Instant::now() + Duration::from_secs(10);
    let found = loop {
        let (_, v) = b
            .api
            .get("/api/v1/requests?frontend=github", Some(ALICE))
            .await;
        let found: Vec<Value> = v["requests"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|r| r["request"]["dedup_key"] == gh_comment_key(5001))
            .collect();
        if found.iter().any(|r| r["state"] == "succeeded") || Instant::now() > deadline {
            break found;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(found.len(), 1, "one request for one comment: {found:#?}");
    assert_eq!(found[0]["state"], "succeeded", "{found:#?}");

    // One node renders it: it looks for its status comment once, posts it
    // once (a second renderer would look again, and edit it again).
    tokio::time::sleep(Duration::from_secs(1)).await;
    let calls = fake.calls();
    let count = |method: &str| {
        calls
            .iter()
            .filter(|(m, p)| m == method && p.ends_with("/issues/12/comments"))
            .count()
    };
    assert_eq!((count("GET"), count("POST")), (1, 1), "{calls:#?}");
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}
