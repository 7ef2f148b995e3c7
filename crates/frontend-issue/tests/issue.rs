//! The IssueOps frontend against a fake GitHub REST API on 127.0.0.1, driven by
//! signed webhook deliveries with GitHub's real payload shapes and headers.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use axum::body::Bytes;
use axum::extract::{Request, State as AxState};
use axum::response::{IntoResponse, Response};
use axum::Router;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
use youops_core::config::Config;
use youops_core::frontend::conformance::{self, Driver};
use youops_core::frontend::{Frontend, FrontendHost, Frontends};
use youops_core::model::{Actor, EventBody, RequestFilter, RequestId, State};
use youops_core::Executor;
use youops_frontend_issue::webhook::sign;
use youops_frontend_issue::{issue_forms, GithubFrontend};
use youops_store::{LogOptions, LogStore};

const SECRET: &str = "webhook-secret-for-tests";
const REPO: &str = "acme/ops";
const BOT: &str = "youops[bot]";

// ---------------------------------------------------------------- fake GitHub

#[derive(Debug, Clone)]
struct Call {
    method: String,
    path: String,
    query: String,
    body: Value,
    authorized: bool,
}

#[derive(Default)]
struct FakeState {
    base: String,
    issues: BTreeMap<(String, u64), Value>,
    /// id → (repo, issue number, comment json)
    comments: BTreeMap<u64, (String, u64, Value)>,
    /// (target, content): target is `issue:N` or `comment:ID`
    reactions: Vec<(String, String)>,
    calls: Vec<Call>,
    next_id: u64,
    /// Create the next comment but answer 502 (a lost answer).
    lose_next_comment_answer: bool,
    /// Claims of the app JWTs presented to the access-token endpoint.
    app_jwt_claims: Vec<Value>,
}

/// Decode one base64url (no padding) JWT segment as JSON.
fn base64url_json(seg: &str) -> Option<Value> {
    let mut bits = 0u32;
    let mut n = 0;
    let mut out = Vec::new();
    for c in seg.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            b'=' => continue,
            _ => return None,
        };
        bits = (bits << 6) | u32::from(v);
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
        }
    }
    serde_json::from_slice(&out).ok()
}

#[derive(Clone, Default)]
struct Fake(Arc<Mutex<FakeState>>);

fn now() -> String {
    Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn user_json(login: &str) -> Value {
    let bot = login.ends_with("[bot]");
    json!({
        "login": login, "id": 1000 + login.len(), "node_id": "MDQ6VXNlcjE=",
        "avatar_url": "https://avatars.githubusercontent.com/u/1?v=4", "gravatar_id": "",
        "url": format!("https://api.github.com/users/{login}"),
        "html_url": format!("https://github.com/{login}"),
        "type": if bot { "Bot" } else { "User" }, "site_admin": false
    })
}

fn repo_json() -> Value {
    json!({
        "id": 4242, "node_id": "R_kgDOA", "name": "ops", "full_name": REPO, "private": false,
        "owner": user_json("acme"), "html_url": format!("https://github.com/{REPO}"),
        "default_branch": "main"
    })
}

fn label_json(name: &str) -> Value {
    json!({ "id": 7, "node_id": "LA_1", "url": format!("https://api.github.com/repos/{REPO}/labels/{name}"),
            "name": name, "color": "ededed", "default": false, "description": null })
}

impl Fake {
    async fn start() -> (Fake, String) {
        let fake = Fake::default();
        let app = Router::new().fallback(handle).with_state(fake.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let base = format!("http://{addr}");
        fake.0.lock().unwrap().base = base.clone();
        fake.0.lock().unwrap().next_id = 5000;
        (fake, base)
    }

    fn st(&self) -> std::sync::MutexGuard<'_, FakeState> {
        self.0.lock().unwrap()
    }

    fn add_issue(&self, number: u64, author: &str, body: &str) -> Value {
        let mut st = self.st();
        let t = now();
        let issue = json!({
            "url": format!("{}/repos/{REPO}/issues/{number}", st.base),
            "repository_url": format!("{}/repos/{REPO}", st.base),
            "labels_url": format!("{}/repos/{REPO}/issues/{number}/labels{{/name}}", st.base),
            "comments_url": format!("{}/repos/{REPO}/issues/{number}/comments", st.base),
            "events_url": format!("{}/repos/{REPO}/issues/{number}/events", st.base),
            "html_url": format!("https://github.com/{REPO}/issues/{number}"),
            "id": 900000 + number, "node_id": "I_kwDOA", "number": number,
            "title": "[youops] request", "user": user_json(author),
            "labels": [label_json("youops")], "state": "open", "locked": false,
            "assignee": null, "assignees": [], "milestone": null, "comments": 0,
            "created_at": t, "updated_at": t, "closed_at": null,
            "author_association": "MEMBER", "active_lock_reason": null, "body": body,
            "reactions": { "url": "", "total_count": 0, "+1": 0, "-1": 0, "laugh": 0, "hooray": 0,
                           "confused": 0, "heart": 0, "rocket": 0, "eyes": 0 },
            "timeline_url": "", "performed_via_github_app": null, "state_reason": null
        });
        st.issues.insert((REPO.into(), number), issue.clone());
        issue
    }

    fn edit_issue_body(&self, number: u64, body: &str) -> Value {
        let mut st = self.st();
        let issue = st.issues.get_mut(&(REPO.into(), number)).unwrap();
        issue["body"] = json!(body);
        issue["updated_at"] = json!(now());
        issue.clone()
    }

    fn issue(&self, number: u64) -> Value {
        self.st().issues[&(REPO.to_string(), number)].clone()
    }

    fn new_comment(st: &mut FakeState, issue: u64, author: &str, body: &str) -> Value {
        st.next_id += 1;
        let id = st.next_id;
        let t = now();
        let c = json!({
            "url": format!("{}/repos/{REPO}/issues/comments/{id}", st.base),
            "html_url": format!("https://github.com/{REPO}/issues/{issue}#issuecomment-{id}"),
            "issue_url": format!("{}/repos/{REPO}/issues/{issue}", st.base),
            "id": id, "node_id": "IC_kwDOA", "user": user_json(author),
            "created_at": t, "updated_at": t, "author_association": "MEMBER", "body": body,
            "reactions": { "url": "", "total_count": 0, "+1": 0, "-1": 0, "laugh": 0, "hooray": 0,
                           "confused": 0, "heart": 0, "rocket": 0, "eyes": 0 },
            "performed_via_github_app": null
        });
        st.comments.insert(id, (REPO.into(), issue, c.clone()));
        c
    }

    fn add_comment(&self, issue: u64, author: &str, body: &str) -> Value {
        Self::new_comment(&mut self.st(), issue, author, body)
    }

    fn edit_comment(&self, id: u64, body: &str) -> Value {
        let mut st = self.st();
        let c = &mut st.comments.get_mut(&id).unwrap().2;
        c["body"] = json!(body);
        // GitHub's timestamps have second resolution: make the edit visible.
        let later = Utc::now() + chrono::Duration::seconds(5);
        c["updated_at"] = json!(later.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
        c.clone()
    }

    fn calls(&self) -> Vec<Call> {
        self.st().calls.clone()
    }

    /// Bodies of the comments on an issue, oldest first.
    fn comments_on(&self, issue: u64) -> Vec<(u64, String, String)> {
        self.st()
            .comments
            .values()
            .filter(|(_, n, _)| *n == issue)
            .map(|(_, _, c)| {
                (
                    c["id"].as_u64().unwrap(),
                    c["user"]["login"].as_str().unwrap().to_string(),
                    c["body"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect()
    }

    fn bot_comments(&self, issue: u64) -> Vec<(u64, String)> {
        self.comments_on(issue)
            .into_iter()
            .filter(|(_, u, _)| u == BOT)
            .map(|(id, _, b)| (id, b))
            .collect()
    }

    fn reactions(&self, target: &str) -> Vec<String> {
        self.st()
            .reactions
            .iter()
            .filter(|(t, _)| t == target)
            .map(|(_, c)| c.clone())
            .collect()
    }

    fn labels(&self, issue: u64) -> Vec<String> {
        self.issue(issue)["labels"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["name"].as_str().unwrap().to_string())
            .collect()
    }
}

fn not_found() -> Response {
    (
        axum::http::StatusCode::NOT_FOUND,
        axum::Json(
            json!({ "message": "Not Found", "documentation_url": "https://docs.github.com/rest" }),
        ),
    )
        .into_response()
}

fn page<T: Clone>(items: Vec<T>, query: &BTreeMap<String, String>) -> Vec<T> {
    let per: usize = query
        .get("per_page")
        .and_then(|p| p.parse().ok())
        .unwrap_or(30);
    let page: usize = query.get("page").and_then(|p| p.parse().ok()).unwrap_or(1);
    items.into_iter().skip((page - 1) * per).take(per).collect()
}

fn since_ok(v: &Value, query: &BTreeMap<String, String>) -> bool {
    match query.get("since") {
        None => true,
        Some(s) => {
            let since: DateTime<Utc> = s.parse().unwrap();
            let upd: DateTime<Utc> = v["updated_at"].as_str().unwrap().parse().unwrap();
            upd >= since
        }
    }
}

async fn handle(AxState(fake): AxState<Fake>, req: Request) -> Response {
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let query_s = req.uri().query().unwrap_or("").to_string();
    let auth_header = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    // A personal token, or the installation token handed out below.
    let authorized = [
        "Bearer test-token",
        "Bearer ghs_installation_token",
        "token ghs_installation_token",
    ]
    .contains(&auth_header.as_str());
    let bytes: Bytes = axum::body::to_bytes(req.into_body(), 1 << 20)
        .await
        .unwrap();
    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let query: BTreeMap<String, String> = query_s
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), urlencoding::decode(v).unwrap().into_owned()))
        .collect();
    let mut st = fake.st();
    st.calls.push(Call {
        method: method.clone(),
        path: path.clone(),
        query: query_s,
        body: body.clone(),
        authorized,
    });
    // GitHub App: exchange the app's JWT for an installation token.
    if method == "POST" && path == "/app/installations/77/access_tokens" {
        let claims = auth_header
            .strip_prefix("Bearer ")
            .and_then(|jwt| jwt.split('.').nth(1))
            .and_then(base64url_json);
        st.app_jwt_claims
            .push(claims.clone().unwrap_or(Value::Null));
        if claims.is_some_and(|c| c["iss"] == json!(4242) || c["iss"] == json!("4242")) {
            return (
                axum::http::StatusCode::CREATED,
                axum::Json(json!({
                    "token": "ghs_installation_token",
                    "expires_at": (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339(),
                    "permissions": { "issues": "write" },
                    "repository_selection": "all"
                })),
            )
                .into_response();
        }
        return (
            axum::http::StatusCode::UNAUTHORIZED,
            axum::Json(json!({ "message": "A JSON web token could not be decoded" })),
        )
            .into_response();
    }
    if !authorized {
        return (
            axum::http::StatusCode::UNAUTHORIZED,
            axum::Json(json!({ "message": "Bad credentials" })),
        )
            .into_response();
    }
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    // /repos/{o}/{r}/issues/...
    if segs.len() < 4 || segs[0] != "repos" || segs[3] != "issues" {
        return not_found();
    }
    let repo = format!("{}/{}", segs[1], segs[2]);
    let rest = &segs[4..];
    let ok = |v: Value| axum::Json(v).into_response();
    let created = |v: Value| (axum::http::StatusCode::CREATED, axum::Json(v)).into_response();
    match (method.as_str(), rest) {
        ("GET", []) => {
            let v: Vec<Value> = st
                .issues
                .iter()
                .filter(|((r, _), i)| *r == repo && since_ok(i, &query))
                .map(|(_, i)| i.clone())
                .collect();
            ok(json!(page(v, &query)))
        }
        ("GET", ["comments"]) => {
            let v: Vec<Value> = st
                .comments
                .values()
                .filter(|(r, _, c)| *r == repo && since_ok(c, &query))
                .map(|(_, _, c)| c.clone())
                .collect();
            ok(json!(page(v, &query)))
        }
        ("PATCH", ["comments", id]) => {
            let id: u64 = id.parse().unwrap_or(0);
            match st.comments.get_mut(&id) {
                Some((_, _, c)) => {
                    c["body"] = body["body"].clone();
                    c["updated_at"] = json!(now());
                    ok(c.clone())
                }
                None => not_found(),
            }
        }
        ("POST", ["comments", id, "reactions"]) => {
            let id: u64 = id.parse().unwrap_or(0);
            if !st.comments.contains_key(&id) {
                return not_found();
            }
            let content = body["content"].as_str().unwrap_or("").to_string();
            st.reactions
                .push((format!("comment:{id}"), content.clone()));
            created(
                json!({ "id": 1, "node_id": "REA_1", "user": user_json(BOT), "content": content, "created_at": now() }),
            )
        }
        (m, [n, tail @ ..]) => {
            let Ok(n) = n.parse::<u64>() else {
                return not_found();
            };
            if !st.issues.contains_key(&(repo.clone(), n)) {
                return not_found();
            }
            match (m, tail) {
                ("GET", []) => ok(st.issues[&(repo, n)].clone()),
                ("PATCH", []) => {
                    let issue = st.issues.get_mut(&(repo, n)).unwrap();
                    if let Some(s) = body.get("state") {
                        issue["state"] = s.clone();
                    }
                    issue["updated_at"] = json!(now());
                    ok(issue.clone())
                }
                ("GET", ["comments"]) => {
                    let v: Vec<Value> = st
                        .comments
                        .values()
                        .filter(|(r, i, _)| *r == repo && *i == n)
                        .map(|(_, _, c)| c.clone())
                        .collect();
                    ok(json!(page(v, &query)))
                }
                ("POST", ["comments"]) => {
                    let text = body["body"].as_str().unwrap_or("").to_string();
                    let c = Fake::new_comment(&mut st, n, BOT, &text);
                    if std::mem::take(&mut st.lose_next_comment_answer) {
                        return (
                            axum::http::StatusCode::BAD_GATEWAY,
                            axum::Json(json!({ "message": "Server Error" })),
                        )
                            .into_response();
                    }
                    created(c)
                }
                ("POST", ["reactions"]) => {
                    let content = body["content"].as_str().unwrap_or("").to_string();
                    st.reactions.push((format!("issue:{n}"), content.clone()));
                    created(
                        json!({ "id": 1, "node_id": "REA_1", "user": user_json(BOT), "content": content, "created_at": now() }),
                    )
                }
                ("GET", ["labels"]) => {
                    let v = st.issues[&(repo, n)]["labels"].clone();
                    ok(v)
                }
                ("POST", ["labels"]) => {
                    let issue = st.issues.get_mut(&(repo, n)).unwrap();
                    let labels = issue["labels"].as_array_mut().unwrap();
                    for l in body["labels"].as_array().cloned().unwrap_or_default() {
                        let name = l.as_str().unwrap();
                        if !labels.iter().any(|x| x["name"] == name) {
                            labels.push(label_json(name));
                        }
                    }
                    ok(Value::Array(labels.clone()))
                }
                ("DELETE", ["labels", name]) => {
                    let name = urlencoding::decode(name).unwrap().into_owned();
                    let issue = st.issues.get_mut(&(repo, n)).unwrap();
                    let labels = issue["labels"].as_array_mut().unwrap();
                    let before = labels.len();
                    labels.retain(|x| x["name"] != name.as_str());
                    if labels.len() == before {
                        return (
                            axum::http::StatusCode::NOT_FOUND,
                            axum::Json(json!({ "message": "Label does not exist" })),
                        )
                            .into_response();
                    }
                    ok(Value::Array(labels.clone()))
                }
                _ => not_found(),
            }
        }
        _ => not_found(),
    }
}

// ---------------------------------------------------------------- harness

const OPS: &str = r#"
[[ops]]
name = "user.create"
description = "Create a user account"
runner = { type = "builtin", name = "record" }
[ops.frontend.github]
close_on_success = true
[[ops.params]]
name = "username"
type = "string"
pattern = "[a-z][a-z0-9]{2,15}"
[[ops.params]]
name = "email"
type = "email"
[[ops.params]]
name = "team"
type = "enum"
values = ["core", "web", "data"]
default = "core"
[[ops.params]]
name = "admin"
type = "bool"
default = false
[[ops.params]]
name = "quota"
type = "int"
min = 1
max = 100
required = false
[[ops.params]]
name = "note"
type = "string"
required = false
[[ops.params]]
name = "api_key"
type = "secret"
required = false

[[ops]]
name = "app.deploy"
runner = { type = "builtin", name = "record" }
approvals = 1
[[ops.params]]
name = "version"
type = "string"

[[ops]]
name = "db.migrate"
runner = { type = "builtin", name = "record" }
approvals = 2
[[ops.params]]
name = "target"
type = "string"

[[ops]]
name = "db.rotate"
runner = { type = "builtin", name = "record" }
[[ops.params]]
name = "password"
type = "secret"

[principals.alice]
roles = ["ops"]
identities = { github = ["alice"] }

[principals.bob]
roles = ["ops"]
identities = { github = ["bob"] }

[principals.dave]
roles = ["ops"]
identities = { github = ["dave"] }

[principals.carol]
roles = ["ops"]
identities = { slack = ["U_CAROL"] }

[[grants]]
roles = ["ops"]
ops = ["*"]
"#;

fn section(base: &str, poll: &str) -> String {
    format!(
        "webhook_secret = \"{SECRET}\"\ntoken = \"test-token\"\napi_base_url = \"{base}\"\nrepos = [\"{REPO}\"]\npoll_interval = \"{poll}\"\n"
    )
}

struct Harness {
    fake: Fake,
    base: String,
    exec: Executor,
    host: FrontendHost,
    /// The webhook URL on a real 127.0.0.1 listener (see [`listen`]).
    url: String,
    shutdown: CancellationToken,
    runs: Arc<Mutex<Vec<BTreeMap<String, String>>>>,
    _dir: tempfile::TempDir,
}

async fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

impl Harness {
    async fn new(poll: &str) -> Harness {
        Self::new_with(|base| section(base, poll)).await
    }

    async fn new_with(section_of: impl Fn(&str) -> String) -> Harness {
        let (fake, base) = Fake::start().await;
        let dir = tempfile::tempdir().unwrap();
        let text = format!("{OPS}\n[frontends.github]\n{}", section_of(&base));
        let cfg = Config::parse(&text, dir.path(), "test", &|_| None).unwrap();
        let store =
            Arc::new(LogStore::open(dir.path().join("store"), LogOptions::default()).unwrap());
        let runs: Arc<Mutex<Vec<BTreeMap<String, String>>>> = Arc::default();
        let r = runs.clone();
        let exec = Executor::builder(&cfg, store)
            .builtin("record", move |call: youops_core::runner::BuiltinCall| {
                let r = r.clone();
                async move {
                    let args: BTreeMap<String, String> = call
                        .args
                        .iter()
                        .map(|(k, v)| (k.clone(), v.as_text()))
                        .collect();
                    r.lock().unwrap().push(args.clone());
                    Ok(format!("{} done: {args:?}", call.op))
                }
            })
            .build()
            .await
            .unwrap();
        let shutdown = CancellationToken::new();
        let host = Self::start_host(&exec, &cfg, &shutdown).await;
        let url = format!("{}/github/webhook", listen(&host).await);
        Harness {
            fake,
            base,
            exec,
            host,
            url,
            shutdown,
            runs,
            _dir: dir,
        }
    }

    async fn start_host(
        exec: &Executor,
        cfg: &Config,
        shutdown: &CancellationToken,
    ) -> FrontendHost {
        let section = cfg.frontend("github").cloned().unwrap();
        let fe = GithubFrontend::from_config(&section).unwrap();
        let mut set = Frontends::new();
        let arc: Arc<dyn Frontend> = Arc::new(fe.clone());
        set.push(arc);
        let host = FrontendHost::new(
            &set,
            exec,
            Some("http://youops.test".into()),
            shutdown,
            |_| section.clone(),
        );
        host.spawn();
        eventually("readiness", || fe.is_ready().then_some(())).await;
        host
    }

    async fn deliver(&self, event: &str, delivery: &str, payload: &Value) -> (u16, String) {
        let body = serde_json::to_vec(payload).unwrap();
        let req = http::Request::builder()
            .method("POST")
            .uri("/github/webhook")
            .header("content-type", "application/json")
            .header("user-agent", "GitHub-Hookshot/abc123")
            .header("x-github-event", event)
            .header("x-github-delivery", delivery)
            .header("x-github-hook-id", "123")
            .header("x-hub-signature-256", sign(SECRET.as_bytes(), &body))
            .body(bytes::Bytes::from(body))
            .unwrap();
        send(&self.host, req).await
    }

    fn runs(&self) -> usize {
        self.runs.lock().unwrap().len()
    }

    async fn requests(&self) -> Vec<youops_core::model::RequestRecord> {
        self.exec
            .list(&RequestFilter::default(), None, 100)
            .await
            .unwrap()
    }

    async fn wait_state(&self, id: RequestId, state: State) {
        let exec = self.exec.clone();
        let rec = tokio::time::timeout(
            Duration::from_secs(10),
            exec.wait_for(id, |r| r.state == state),
        )
        .await
        .unwrap()
        .unwrap();
        assert_eq!(rec.state, state, "{:?}", rec.reason);
    }

    /// Wait until the status comment for `id` shows `state`.
    async fn wait_status(&self, issue: u64, id: RequestId, state: State) -> (u64, String) {
        let fake = self.fake.clone();
        let marker = format!("request={id} state={state} ");
        eventually(&format!("status comment of {id} showing {state}"), || {
            fake.bot_comments(issue)
                .into_iter()
                .find(|(_, b)| b.contains(&marker))
        })
        .await
    }
}

/// Serve the host's frontend routes on 127.0.0.1 the way the daemon does (read
/// the whole body, then `FrontendHost::handle`); the base URL.
async fn listen(host: &FrontendHost) -> String {
    let mut app = Router::new();
    for (route, index) in host.routes() {
        let host = host.clone();
        app = app.route(
            &route.path,
            axum::routing::post(move |req: Request| async move {
                let (parts, body) = req.into_parts();
                let Ok(bytes) = axum::body::to_bytes(body, 1 << 20).await else {
                    return axum::http::StatusCode::PAYLOAD_TOO_LARGE.into_response();
                };
                let res = host
                    .handle(index, http::Request::from_parts(parts, bytes))
                    .await;
                let (parts, body) = res.into_parts();
                Response::from_parts(parts, axum::body::Body::from(body))
            }),
        );
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

impl Harness {
    /// POST a signed delivery of raw `body` over HTTP to the real listener, with
    /// the headers GitHub sends.
    async fn post_raw(&self, event: &str, delivery: &str, body: Vec<u8>) -> (u16, String) {
        let res = reqwest::Client::new()
            .post(&self.url)
            .header("content-type", "application/json")
            .header("user-agent", "GitHub-Hookshot/abc123")
            .header("x-github-event", event)
            .header("x-github-delivery", delivery)
            .header("x-github-hook-id", "123")
            .header("x-hub-signature-256", sign(SECRET.as_bytes(), &body))
            .body(body)
            .send()
            .await
            .unwrap();
        let status = res.status().as_u16();
        (status, res.text().await.unwrap())
    }

    /// POST a signed JSON delivery over HTTP to the real listener.
    async fn post(&self, event: &str, delivery: &str, payload: &Value) -> (u16, String) {
        self.post_raw(event, delivery, serde_json::to_vec(payload).unwrap())
            .await
    }
}

async fn send(host: &FrontendHost, req: http::Request<bytes::Bytes>) -> (u16, String) {
    let (_, index) = host
        .routes()
        .into_iter()
        .find(|(r, _)| r.path == "/github/webhook")
        .unwrap();
    let res = host.handle(index, req).await;
    (
        res.status().as_u16(),
        String::from_utf8_lossy(res.body()).into_owned(),
    )
}

fn issues_event(action: &str, issue: &Value, sender: &str, old_body: Option<&str>) -> Value {
    let mut v = json!({
        "action": action, "issue": issue, "repository": repo_json(), "sender": user_json(sender),
        "installation": { "id": 77, "node_id": "MDIzOkludGVncmF0aW9uSW5zdGFsbGF0aW9uNzc=" }
    });
    if let Some(old) = old_body {
        v["changes"] = json!({ "body": { "from": old } });
    }
    v
}

fn comment_event(action: &str, issue: &Value, comment: &Value, sender: &str) -> Value {
    let mut v = json!({
        "action": action, "issue": issue, "comment": comment, "repository": repo_json(),
        "sender": user_json(sender)
    });
    if action == "edited" {
        v["changes"] = json!({ "body": { "from": "/ops old text" } });
    }
    v
}

fn form_body(op: &str, fields: &[(&str, &str)]) -> String {
    let mut s = format!("### YouOps operation\r\n\r\n{op}");
    for (k, v) in fields {
        s.push_str(&format!("\r\n\r\n### {k}\r\n\r\n{v}"));
    }
    s
}

// ---------------------------------------------------------------- tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signatures_are_checked_before_anything_else() {
    let h = Harness::new("0s").await;
    let issue = h
        .fake
        .add_issue(1, "alice", &form_body("app.deploy", &[("version", "1")]));
    let payload = issues_event("opened", &issue, "alice", None);
    let body = serde_json::to_vec(&payload).unwrap();
    let build = |sig: Option<(&str, String)>| {
        let mut b = http::Request::builder()
            .method("POST")
            .uri("/github/webhook")
            .header("x-github-event", "issues")
            .header("x-github-delivery", "d-sig");
        if let Some((name, value)) = sig {
            b = b.header(name, value);
        }
        b.body(bytes::Bytes::from(body.clone())).unwrap()
    };
    let (s, text) = send(&h.host, build(None)).await;
    assert_eq!(s, 401);
    assert!(text.contains("missing X-Hub-Signature-256"), "{text}");
    let (s, text) = send(
        &h.host,
        build(Some((
            "x-hub-signature",
            "sha1=0123456789abcdef0123456789abcdef01234567".into(),
        ))),
    )
    .await;
    assert_eq!(s, 401);
    assert!(text.contains("SHA-1"), "{text}");
    let (s, _) = send(
        &h.host,
        build(Some(("x-hub-signature-256", sign(b"wrong secret", &body)))),
    )
    .await;
    assert_eq!(s, 401);
    let (s, _) = send(
        &h.host,
        build(Some(("x-hub-signature-256", "sha256=abc".into()))),
    )
    .await;
    assert_eq!(s, 401);
    // Nothing got through.
    assert!(h.requests().await.is_empty());
    assert!(h.fake.calls().is_empty());
    // The right signature works.
    let (s, _) = send(
        &h.host,
        build(Some((
            "x-hub-signature-256",
            sign(SECRET.as_bytes(), &body),
        ))),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(h.requests().await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_unknown_events_unhandled_actions_and_bad_bodies() {
    let h = Harness::new("0s").await;
    let ping = json!({
        "zen": "Keep it logically awesome.", "hook_id": 123,
        "hook": { "type": "Repository", "id": 123, "name": "web", "active": true,
                  "events": ["issues", "issue_comment"],
                  "config": { "content_type": "json", "insecure_ssl": "0", "url": "https://youops.example/github/webhook" } },
        "repository": repo_json(), "sender": user_json("acme")
    });
    let (s, text) = h.deliver("ping", "d-ping", &ping).await;
    assert_eq!(s, 200);
    assert!(text.contains("logically awesome"));

    let push = json!({ "ref": "refs/heads/main", "repository": repo_json(), "sender": user_json("alice") });
    let (s, text) = h.deliver("push", "d-push", &push).await;
    assert!((200..300).contains(&s), "{s} {text}");
    assert!(text.contains("ignored"));

    let issue = h
        .fake
        .add_issue(2, "alice", &form_body("app.deploy", &[("version", "1")]));
    let (s, text) = h
        .deliver(
            "issues",
            "d-assigned",
            &issues_event("assigned", &issue, "alice", None),
        )
        .await;
    assert!((200..300).contains(&s), "{s} {text}");
    assert!(text.contains("ignored"));

    // Not the event it claims: 400 with the reason.
    let (s, text) = h
        .deliver("issues", "d-bad", &json!({ "action": "opened" }))
        .await;
    assert_eq!(s, 400);
    assert!(text.contains("not a valid `issues` event"), "{text}");
    let (s, text) = h.deliver("issue_comment", "d-bad2", &ping).await;
    assert_eq!(s, 400, "{text}");

    // A repository YouOps does not manage.
    let mut other = issues_event("opened", &issue, "alice", None);
    other["repository"]["full_name"] = json!("someone/else");
    let (s, text) = h.deliver("issues", "d-other", &other).await;
    assert!((200..300).contains(&s));
    assert!(text.contains("not managed"));
    assert!(h.requests().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_form_runs_once_with_feedback_edited_in_place() {
    let h = Harness::new("0s").await;
    let body = form_body(
        "user.create",
        &[
            ("username", "jdoe"),
            ("email", "jdoe@example.com"),
            ("team", "data"),
            ("admin", "- [X] yes"),
            ("quota", "_No response_"),
            (
                "note",
                "Hello, world, with commas\r\n### not a field\r\nsecond line",
            ),
        ],
    );
    let issue = h.fake.add_issue(10, "alice", &body);
    let (s, text) = h
        .deliver(
            "issues",
            "d-open-10",
            &issues_event("opened", &issue, "alice", None),
        )
        .await;
    assert_eq!(s, 200, "{text}");
    let rec = h.requests().await.pop().unwrap();
    let id = rec.request.id;
    assert_eq!(rec.request.op, "user.create");
    assert_eq!(rec.request.actor.principal.as_deref(), Some("alice"));
    assert_eq!(rec.request.origin.location, REPO);
    h.wait_state(id, State::Succeeded).await;
    let args = h.runs.lock().unwrap()[0].clone();
    assert_eq!(args["username"], "jdoe");
    assert_eq!(args["team"], "data");
    assert_eq!(args["admin"], "true");
    assert_eq!(
        args["note"],
        "Hello, world, with commas\n### not a field\nsecond line"
    );
    assert!(!args.contains_key("quota"));

    // Redelivery, and a `labeled` event for the same body: nothing new.
    let (s, text) = h
        .deliver(
            "issues",
            "d-open-10",
            &issues_event("opened", &issue, "alice", None),
        )
        .await;
    assert_eq!(s, 200);
    assert!(text.contains("duplicate delivery"));
    let mut labeled = issues_event("labeled", &issue, "alice", None);
    labeled["label"] = label_json("youops");
    let (s, text) = h.deliver("issues", "d-label-10", &labeled).await;
    assert_eq!(s, 200);
    assert!(text.contains("already handled"), "{text}");

    let (cid, status) = h.wait_status(10, id, State::Succeeded).await;
    assert!(status.contains("jdoe@example.com"));
    assert!(status.contains(&rec.request.id.to_string()));
    assert!(status.contains("http://youops.test/requests/"));
    assert!(
        status.contains("user.create done"),
        "output shown: {status}"
    );
    // Close on success, labels and reactions.
    eventually("issue closed", || {
        (h.fake.issue(10)["state"] == "closed").then_some(())
    })
    .await;
    assert_eq!(h.fake.labels(10), vec!["youops", "youops:succeeded"]);
    let reactions = h.fake.reactions("issue:10");
    assert!(reactions.contains(&"eyes".to_string()), "{reactions:?}");
    assert!(reactions.contains(&"rocket".to_string()), "{reactions:?}");
    assert!(!reactions.contains(&"-1".to_string()));
    assert_eq!(h.runs(), 1);
    // ONE status comment, created once and edited in place.
    assert_eq!(h.fake.bot_comments(10).len(), 1);
    let calls = h.fake.calls();
    let posts = calls
        .iter()
        .filter(|c| c.method == "POST" && c.path.ends_with("/issues/10/comments"))
        .count();
    assert_eq!(posts, 1);
    let patches: Vec<&Call> = calls
        .iter()
        .filter(|c| c.method == "PATCH" && c.path.ends_with(&format!("/comments/{cid}")))
        .collect();
    assert!(!patches.is_empty());
    assert!(
        calls.iter().all(|c| c.authorized),
        "every call carries the token"
    );
    // The last status shows the last audit hash of the request.
    let rec = h.exec.get(id).await.unwrap();
    assert!(h.fake.bot_comments(10)[0].1.contains(&rec.last_hash));
    h.shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_form_gets_one_comment_with_every_problem_then_an_edit_fixes_it() {
    let h = Harness::new("0s").await;
    let bad = form_body(
        "user.create",
        &[
            ("username", "_No response_"),
            ("email", "not-an-email"),
            ("quota", "500"),
        ],
    );
    let issue = h.fake.add_issue(11, "alice", &bad);
    let (s, _) = h
        .deliver(
            "issues",
            "d-open-11",
            &issues_event("opened", &issue, "alice", None),
        )
        .await;
    assert_eq!(s, 200);
    let first = h.requests().await.pop().unwrap();
    assert_eq!(first.state, State::Invalid);
    let (cid, text) = h.wait_status(11, first.request.id, State::Invalid).await;
    for problem in [
        "missing parameter `username`",
        "not an e-mail address",
        "above the maximum",
    ] {
        assert!(text.contains(problem), "{problem} missing in {text}");
    }
    eventually("failed label", || {
        h.fake
            .labels(11)
            .contains(&"youops:failed".to_string())
            .then_some(())
    })
    .await;
    assert!(h.fake.reactions("issue:11").contains(&"-1".to_string()));
    assert!(!h.fake.reactions("issue:11").contains(&"eyes".to_string()));
    assert_eq!(h.runs(), 0);

    // A title-only edit does nothing.
    let mut title_edit = issues_event("edited", &issue, "alice", None);
    title_edit["changes"] = json!({ "title": { "from": "old" } });
    let (s, _) = h.deliver("issues", "d-title-11", &title_edit).await;
    assert_eq!(s, 200);
    assert_eq!(h.requests().await.len(), 1);

    let good = form_body(
        "user.create",
        &[
            ("username", "jdoe"),
            ("email", "jdoe@example.com"),
            ("quota", "5"),
        ],
    );
    let edited = h.fake.edit_issue_body(11, &good);
    let (s, _) = h
        .deliver(
            "issues",
            "d-edit-11",
            &issues_event("edited", &edited, "alice", Some(&bad)),
        )
        .await;
    assert_eq!(s, 200);
    let all = h.requests().await;
    assert_eq!(all.len(), 2);
    let second = all[0].request.id;
    h.wait_state(second, State::Succeeded).await;
    let (cid2, _) = h.wait_status(11, second, State::Succeeded).await;
    assert_eq!(cid, cid2, "the same comment is edited");
    assert_eq!(h.fake.bot_comments(11).len(), 1);
    assert_eq!(h.runs(), 1);
    eventually("succeeded label", || {
        let l = h.fake.labels(11);
        (l.contains(&"youops:succeeded".to_string()) && !l.contains(&"youops:failed".to_string()))
            .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approvals_in_comments_requester_refused_other_login_approves() {
    let h = Harness::new("0s").await;
    let issue = h
        .fake
        .add_issue(12, "alice", &form_body("app.deploy", &[("version", "2.0")]));
    h.deliver(
        "issues",
        "d-open-12",
        &issues_event("opened", &issue, "alice", None),
    )
    .await;
    let id = h.requests().await[0].request.id;
    h.wait_state(id, State::PendingApproval).await;
    let (_, status) = h.wait_status(12, id, State::PendingApproval).await;
    assert!(status.contains(&format!("/ops approve {id}")));
    eventually("pending label and eyes", || {
        (h.fake
            .labels(12)
            .contains(&"youops:pending-approval".to_string())
            && h.fake.reactions("issue:12").contains(&"eyes".to_string()))
        .then_some(())
    })
    .await;

    // The requester cannot approve.
    let c1 = h
        .fake
        .add_comment(12, "alice", &format!("LGTM\n/ops approve {id}"));
    let (s, text) = h
        .deliver(
            "issue_comment",
            "d-c1",
            &comment_event("created", &issue, &c1, "alice"),
        )
        .await;
    assert_eq!(s, 200);
    assert!(text.contains("approver ≠ requester"), "{text}");
    let reply = eventually("reply to alice", || {
        h.fake
            .bot_comments(12)
            .into_iter()
            .find(|(_, b)| b.contains(&format!("comment={}", c1["id"])))
    })
    .await;
    assert!(reply.1.contains("someone else must approve"), "{}", reply.1);
    assert_eq!(h.exec.get(id).await.unwrap().state, State::PendingApproval);

    // Another login approves: it runs.
    let c2 = h.fake.add_comment(12, "bob", &format!("/ops approve {id}"));
    let (s, _) = h
        .deliver(
            "issue_comment",
            "d-c2",
            &comment_event("created", &issue, &c2, "bob"),
        )
        .await;
    assert_eq!(s, 200);
    h.wait_state(id, State::Succeeded).await;
    let (_, status) = h.wait_status(12, id, State::Succeeded).await;
    assert!(status.contains("bob"), "approver shown: {status}");
    assert_eq!(h.runs(), 1);
    // The approval is in the audit with where it came from.
    let events = h.exec.events(id).await.unwrap();
    assert!(events
        .iter()
        .any(|e| matches!(&e.body, EventBody::Approval(a) if a.by.external_id == "bob")));
    assert!(events
        .iter()
        .any(|e| matches!(&e.body, EventBody::Notice { kind, .. } if kind == "comment_command")));
    // A redelivery of bob's comment does nothing more.
    let (s, text) = h
        .deliver(
            "issue_comment",
            "d-c2-again",
            &comment_event("created", &issue, &c2, "bob"),
        )
        .await;
    assert_eq!(s, 200);
    assert!(text.contains("already"), "{text}");
    assert_eq!(h.runs(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approval_given_elsewhere_reaches_the_issue() {
    let h = Harness::new("0s").await;
    let issue = h
        .fake
        .add_issue(13, "alice", &form_body("app.deploy", &[("version", "3")]));
    h.deliver(
        "issues",
        "d-open-13",
        &issues_event("opened", &issue, "alice", None),
    )
    .await;
    let id = h.requests().await[0].request.id;
    h.wait_state(id, State::PendingApproval).await;
    // Carol approves in Slack (through the executor, as the chat frontend does).
    h.exec
        .approve(id, &Actor::new("slack", "U_CAROL"), None)
        .await
        .unwrap();
    h.wait_state(id, State::Succeeded).await;
    let (_, status) = h.wait_status(13, id, State::Succeeded).await;
    assert!(status.contains("carol"), "{status}");
    eventually("rocket", || {
        h.fake
            .reactions("issue:13")
            .contains(&"rocket".to_string())
            .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edits_void_pending_requests_and_approvals() {
    let h = Harness::new("0s").await;
    // 1. An edit of the issue body after a partial approval voids that request.
    let body = form_body("db.migrate", &[("target", "users")]);
    let issue = h.fake.add_issue(14, "alice", &body);
    h.deliver(
        "issues",
        "d-open-14",
        &issues_event("opened", &issue, "alice", None),
    )
    .await;
    let first = h.requests().await[0].request.id;
    let c = h
        .fake
        .add_comment(14, "bob", &format!("/ops approve {first}"));
    h.deliver(
        "issue_comment",
        "d-14-approve",
        &comment_event("created", &issue, &c, "bob"),
    )
    .await;
    assert_eq!(h.exec.get(first).await.unwrap().approvals_needed, 1);
    let changed = form_body("db.migrate", &[("target", "everything")]);
    let edited = h.fake.edit_issue_body(14, &changed);
    let (s, text) = h
        .deliver(
            "issues",
            "d-edit-14",
            &issues_event("edited", &edited, "alice", Some(&body)),
        )
        .await;
    assert_eq!(s, 200, "{text}");
    let old = h.exec.get(first).await.unwrap();
    assert_eq!(old.state, State::Cancelled);
    assert!(old.reason.unwrap().contains("voided"));
    let events = h.exec.events(first).await.unwrap();
    assert!(events
        .iter()
        .any(|e| matches!(&e.body, EventBody::Notice { kind, .. } if kind == "edit")));
    let all = h.requests().await;
    assert_eq!(all.len(), 2);
    let second = all[0].request.id;
    let rec = h.exec.get(second).await.unwrap();
    assert_eq!(rec.state, State::PendingApproval);
    assert_eq!(
        rec.approvals_needed, 2,
        "bob's approval does not carry over"
    );
    assert_eq!(rec.request.args["target"].as_text(), "everything");
    h.wait_status(14, second, State::PendingApproval).await;

    // 2. Editing an approval comment voids the request it approved.
    let c2 = h
        .fake
        .add_comment(14, "bob", &format!("/ops approve {second}"));
    h.deliver(
        "issue_comment",
        "d-14-approve2",
        &comment_event("created", &issue, &c2, "bob"),
    )
    .await;
    assert_eq!(h.exec.get(second).await.unwrap().approvals_needed, 1);
    let c2e = h
        .fake
        .edit_comment(c2["id"].as_u64().unwrap(), "never mind");
    let (s, text) = h
        .deliver(
            "issue_comment",
            "d-14-edit2",
            &comment_event("edited", &issue, &c2e, "bob"),
        )
        .await;
    assert_eq!(s, 200);
    assert!(text.contains("voided"), "{text}");
    assert_eq!(h.exec.get(second).await.unwrap().state, State::Cancelled);
    h.wait_status(14, second, State::Cancelled).await;

    // 3. Deleting the comment a request came from voids it.
    let c3 = h.fake.add_comment(14, "alice", "/ops app.deploy version=9");
    h.deliver(
        "issue_comment",
        "d-14-run",
        &comment_event("created", &issue, &c3, "alice"),
    )
    .await;
    let third = h.requests().await[0].request.id;
    assert_eq!(
        h.exec.get(third).await.unwrap().state,
        State::PendingApproval
    );
    let (s, _) = h
        .deliver(
            "issue_comment",
            "d-14-del",
            &comment_event("deleted", &issue, &c3, "alice"),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(h.exec.get(third).await.unwrap().state, State::Cancelled);
    assert_eq!(h.runs(), 0);
    assert!(h.exec.store().verify().await.unwrap().ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unmapped_logins_get_a_reply_and_nothing_runs_secrets_are_refused() {
    let h = Harness::new("0s").await;
    let issue = h
        .fake
        .add_issue(15, "alice", "Just a discussion, not a form.");
    let (s, text) = h
        .deliver(
            "issues",
            "d-open-15",
            &issues_event("opened", &issue, "alice", None),
        )
        .await;
    assert_eq!(s, 200);
    assert!(text.contains("not a YouOps request"));
    let c = h
        .fake
        .add_comment(15, "mallory", "/ops app.deploy version=1");
    h.deliver(
        "issue_comment",
        "d-15-m",
        &comment_event("created", &issue, &c, "mallory"),
    )
    .await;
    let rec = h.requests().await[0].clone();
    assert_eq!(rec.state, State::Denied);
    let (_, status) = h.wait_status(15, rec.request.id, State::Denied).await;
    assert!(status.contains("not mapped"), "{status}");
    let c2 = h
        .fake
        .add_comment(15, "mallory", &format!("/ops approve {}", rec.request.id));
    let (_, text) = h
        .deliver(
            "issue_comment",
            "d-15-m2",
            &comment_event("created", &issue, &c2, "mallory"),
        )
        .await;
    assert!(text.contains("not mapped"), "{text}");
    // A secret typed in a public comment is refused, and the value never stored.
    let c3 = h
        .fake
        .add_comment(15, "alice", "/ops db.rotate password=hunter22");
    let (_, text) = h
        .deliver(
            "issue_comment",
            "d-15-secret",
            &comment_event("created", &issue, &c3, "alice"),
        )
        .await;
    assert!(text.contains("secret"), "{text}");
    assert_eq!(h.requests().await.len(), 1);
    let dump: Vec<String> = h
        .exec
        .store()
        .events(0, 1000)
        .await
        .unwrap()
        .iter()
        .map(|e| serde_json::to_string(e).unwrap())
        .collect();
    assert!(!dump.join("\n").contains("hunter22"));
    // help and a parse error get replies too.
    let c4 = h.fake.add_comment(
        15,
        "alice",
        "/ops help\n/ops app.deploy version=\"unbalanced",
    );
    let (_, text) = h
        .deliver(
            "issue_comment",
            "d-15-help",
            &comment_event("created", &issue, &c4, "alice"),
        )
        .await;
    assert!(text.contains("app.deploy"), "{text}");
    let reply = eventually("help reply", || {
        h.fake
            .bot_comments(15)
            .into_iter()
            .find(|(_, b)| b.contains(&format!("comment={}", c4["id"])))
    })
    .await;
    assert!(reply.1.contains("Ops you may run here"));
    assert!(reply.1.contains("❌"));
    assert_eq!(h.runs(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_comment_answer_is_not_posted_twice() {
    let h = Harness::new("0s").await;
    h.fake.st().lose_next_comment_answer = true;
    let issue = h
        .fake
        .add_issue(16, "alice", &form_body("app.deploy", &[("version", "1")]));
    h.deliver(
        "issues",
        "d-open-16",
        &issues_event("opened", &issue, "alice", None),
    )
    .await;
    let id = h.requests().await[0].request.id;
    h.exec
        .approve(id, &Actor::new("github", "bob"), None)
        .await
        .unwrap();
    h.wait_state(id, State::Succeeded).await;
    h.wait_status(16, id, State::Succeeded).await;
    // GitHub created the comment but the answer was a 502: no automatic retry
    // re-posted it, and the next update found it by its marker.
    assert_eq!(h.fake.bot_comments(16).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_catches_up_after_downtime_without_running_twice() {
    let h = Harness::new("0s").await;
    // Before the "downtime": one form issue handled by webhook.
    let issue = h
        .fake
        .add_issue(20, "alice", &form_body("app.deploy", &[("version", "1")]));
    h.deliver(
        "issues",
        "d-open-20",
        &issues_event("opened", &issue, "alice", None),
    )
    .await;
    let first = h.requests().await[0].request.id;
    let c = h
        .fake
        .add_comment(20, "bob", &format!("/ops approve {first}"));
    h.deliver(
        "issue_comment",
        "d-20-ok",
        &comment_event("created", &issue, &c, "bob"),
    )
    .await;
    h.wait_state(first, State::Succeeded).await;
    h.wait_status(20, first, State::Succeeded).await;
    let help = h.fake.add_comment(20, "alice", "/ops help");
    h.deliver(
        "issue_comment",
        "d-20-help",
        &comment_event("created", &issue, &help, "alice"),
    )
    .await;
    let help_marker = format!("comment={} ", help["id"]);
    eventually("help reply", || {
        h.fake
            .bot_comments(20)
            .into_iter()
            .find(|(_, b)| b.contains(&help_marker))
    })
    .await;
    // #20's status, the reply to bob's approval, the help reply.
    assert_eq!(h.fake.bot_comments(20).len(), 3);
    // The frontend goes down; webhooks sent meanwhile are lost.
    h.shutdown.cancel();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let i2 = h.fake.add_issue(
        21,
        "dave",
        &form_body(
            "user.create",
            &[("username", "newbie"), ("email", "n@example.com")],
        ),
    );
    let _ = i2;
    let c2 = h.fake.add_comment(20, "dave", "/ops app.deploy version=2");
    // It comes back (fresh memory, same audit store) and polls.
    let text = format!("{OPS}\n[frontends.github]\n{}", section(&h.base, "100ms"));
    let cfg = Config::parse(&text, h._dir.path(), "test", &|_| None).unwrap();
    let shutdown2 = CancellationToken::new();
    let host2 = Harness::start_host(&h.exec, &cfg, &shutdown2).await;
    let runs = h.runs.clone();
    eventually("the missed issue to run", || {
        (runs.lock().unwrap().len() == 2).then_some(())
    })
    .await;
    let start = Instant::now();
    let all = loop {
        let all = h.requests().await;
        if all.len() >= 3 {
            break all;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "the missed comment was not picked up"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let from_comment = all
        .iter()
        .find(|r| {
            r.request
                .dedup_key
                .as_deref()
                .is_some_and(|k| k.contains(&format!(":comment:{}:", c2["id"])))
        })
        .expect("a request from the missed comment")
        .request
        .id;
    assert_eq!(
        h.exec.get(from_comment).await.unwrap().state,
        State::PendingApproval
    );
    // Several more polls: nothing new, no duplicate comments.
    let polls_before = h
        .fake
        .calls()
        .iter()
        .filter(|c| c.path.ends_with("/issues/comments"))
        .count();
    eventually("three more polls", || {
        (h.fake
            .calls()
            .iter()
            .filter(|c| c.path.ends_with("/issues/comments"))
            .count()
            >= polls_before + 3)
            .then_some(())
    })
    .await;
    assert_eq!(h.runs(), 2);
    assert_eq!(h.requests().await.len(), 3);
    // The feedback loop posts statuses on its own time: wait for them, then
    // check there are no more than expected.
    eventually("the missed comment's request's status comment", || {
        (h.fake.bot_comments(20).len() >= 4 && !h.fake.bot_comments(21).is_empty()).then_some(())
    })
    .await;
    let bot20 = h.fake.bot_comments(20);
    assert_eq!(
        bot20.len(),
        4,
        "one more: the status of the missed comment's request: {bot20:?}"
    );
    assert_eq!(h.fake.bot_comments(21).len(), 1);
    // The poll used `since`.
    assert!(h.fake.calls().iter().any(|c| c.query.contains("since=")));
    // A late webhook redelivery of the missed comment does not run it again.
    let (s, text) = send(&host2, {
        let payload = comment_event("created", &h.fake.issue(20), &c2, "dave");
        let body = serde_json::to_vec(&payload).unwrap();
        http::Request::builder()
            .method("POST")
            .uri("/github/webhook")
            .header("x-github-event", "issue_comment")
            .header("x-github-delivery", "d-late")
            .header("x-hub-signature-256", sign(SECRET.as_bytes(), &body))
            .body(bytes::Bytes::from(body))
            .unwrap()
    })
    .await;
    assert_eq!(s, 200);
    assert!(text.contains("already"), "{text}");
    assert_eq!(h.requests().await.len(), 3);
    shutdown2.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_forms_are_generated_for_the_catalog() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = Config::parse(OPS, dir.path(), "t", &|_| None).unwrap();
    let forms = issue_forms(&cfg.catalog());
    let names: Vec<&str> = forms.iter().map(|(n, _)| n.as_str()).collect();
    // db.rotate needs a secret: no form.
    assert_eq!(
        names,
        vec!["app.deploy.yml", "db.migrate.yml", "user.create.yml"]
    );
    let uc: serde_yaml::Value = serde_yaml::from_str(&forms[2].1).unwrap();
    assert_eq!(uc["name"].as_str(), Some("user.create"));
    assert!(uc["labels"]
        .as_sequence()
        .unwrap()
        .iter()
        .any(|l| l.as_str() == Some("youops")));
    let types: Vec<&str> = uc["body"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        vec![
            "markdown",
            "dropdown",
            "input",
            "input",
            "dropdown",
            "checkboxes",
            "input",
            "input"
        ]
    );
}

// ---------------------------------------------------------------- conformance

struct IssueDriver {
    fake: Fake,
    base: String,
    next: AtomicUsize,
}

#[async_trait]
impl Driver for IssueDriver {
    fn frontend(&self) -> Arc<dyn Frontend> {
        let section: toml::Table = self.config_section().parse().unwrap();
        Arc::new(GithubFrontend::from_config(&section).unwrap())
    }

    fn user_id(&self) -> String {
        "octo-tester".into()
    }

    fn config_section(&self) -> String {
        // Polling on: the poller sees the same comments and must agree on keys.
        section(&self.base, "200ms")
    }

    async fn deliver(
        &self,
        host: &FrontendHost,
        command: &str,
        delivery: &str,
    ) -> Result<(), String> {
        let issue = self.fake.issue(1);
        // The same delivery id is the same comment.
        let existing = self
            .fake
            .comments_on(1)
            .into_iter()
            .find(|(_, _, b)| b.ends_with(&format!("<!-- delivery {delivery} -->")));
        let comment = match existing {
            Some((id, _, _)) => self.fake.st().comments[&id].2.clone(),
            None => {
                self.next.fetch_add(1, Ordering::SeqCst);
                self.fake.add_comment(
                    1,
                    &self.user_id(),
                    &format!("/ops {command}\n<!-- delivery {delivery} -->"),
                )
            }
        };
        let payload = comment_event("created", &issue, &comment, &self.user_id());
        let body = serde_json::to_vec(&payload).unwrap();
        let req = http::Request::builder()
            .method("POST")
            .uri("/github/webhook")
            .header("content-type", "application/json")
            .header("x-github-event", "issue_comment")
            .header("x-github-delivery", delivery)
            .header("x-hub-signature-256", sign(SECRET.as_bytes(), &body))
            .body(bytes::Bytes::from(body))
            .unwrap();
        let (s, text) = send(host, req).await;
        if (200..300).contains(&s) {
            Ok(())
        } else {
            Err(format!("webhook answered {s}: {text}"))
        }
    }

    async fn rendered(&self, id: RequestId) -> Vec<State> {
        // Every body the frontend wrote for this request, in call order.
        let marker = format!("request={id} ");
        let mut states: Vec<State> = self
            .fake
            .calls()
            .into_iter()
            .filter(|c| c.method == "POST" || c.method == "PATCH")
            .filter_map(|c| {
                c.body
                    .get("body")
                    .and_then(|b| b.as_str())
                    .map(String::from)
            })
            .filter(|b| b.contains(&marker))
            .filter_map(|b| {
                youops_frontend_issue::feedback::parse_status_marker(&b).map(|(_, s)| s)
            })
            .fold(Vec::new(), |mut v, s| {
                if v.last() != Some(&s) {
                    v.push(s);
                }
                v
            });
        // An end state is shown once its reaction (written after the status
        // comment) is there too.
        let ended = self
            .fake
            .st()
            .reactions
            .iter()
            .any(|(_, c)| c == "rocket" || c == "-1");
        if states.last().is_some_and(|s| s.is_terminal()) && !ended {
            states.pop();
        }
        states
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_suite() {
    let (fake, base) = Fake::start().await;
    fake.add_issue(1, "octo-tester", "A place for commands.");
    let driver = IssueDriver {
        fake: fake.clone(),
        base,
        next: AtomicUsize::new(0),
    };
    let report = conformance::run_suite(&driver).await.unwrap();
    assert_eq!(report.record.state, State::Succeeded);
    assert!(report.rendered.contains(&State::Succeeded));
    let id = report.record.request.id;
    let rocket = fake
        .reactions("comment:5001")
        .contains(&"rocket".to_string());
    assert!(rocket, "🚀 on the command comment of {id}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authenticates_as_a_github_app_installation() {
    let keys = tempfile::tempdir().unwrap();
    let pem = keys.path().join("app.pem");
    let out = std::process::Command::new("openssl")
        .args(["genrsa", "-traditional", "-out"])
        .arg(&pem)
        .arg("2048")
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pem_path = pem.display().to_string();
    let h = Harness::new_with(|base| {
        format!(
            "webhook_secret = \"{SECRET}\"\napp_id = 4242\ninstallation_id = 77\nprivate_key_path = \"{pem_path}\"\napi_base_url = \"{base}\"\nrepos = [\"{REPO}\"]\npoll_interval = \"0s\"\n"
        )
    })
    .await;
    let issue = h.fake.add_issue(31, "alice", "Just a discussion.");
    let c = h.fake.add_comment(31, "alice", "/ops help");
    let (s, _) = h
        .deliver(
            "issue_comment",
            "d-app-31",
            &comment_event("created", &issue, &c, "alice"),
        )
        .await;
    assert_eq!(s, 200);
    // The help reply is written with the installation token, got with the app's JWT.
    let fake = h.fake.clone();
    eventually("a reply written as the app installation", || {
        fake.calls()
            .iter()
            .any(|c| c.method == "POST" && c.path.ends_with("/issues/31/comments") && c.authorized)
            .then_some(())
    })
    .await;
    let claims = h.fake.st().app_jwt_claims.clone();
    assert!(!claims.is_empty(), "no access-token exchange");
    assert!(
        claims
            .iter()
            .all(|c| c["iss"] == json!(4242) || c["iss"] == json!("4242")),
        "{claims:?}"
    );
    assert!(claims[0]["exp"].as_i64().unwrap_or(0) > chrono::Utc::now().timestamp());
    h.shutdown.cancel();
}

// ------------------------------------------ every documented event and action
//
// Payloads with only what GitHub's "Webhook events and payloads" documents as
// always present for each event and action (its webhook schemas), so nothing
// that GitHub may leave out is relied on: an `issue` there has no `state`,
// `labels`, `locked` or `assignee` unless the action's own schema requires
// them. Every delivery goes signed over HTTP to a real listener.

/// The fields GitHub's webhook schemas require of an `issue` (`webhooks_issue`,
/// and `webhooks_issue_2`, the reduced one `pinned` and `unpinned` carry).
const ISSUE_REQUIRED: &[&str] = &[
    "active_lock_reason",
    "assignees",
    "author_association",
    "body",
    "closed_at",
    "comments",
    "comments_url",
    "created_at",
    "events_url",
    "html_url",
    "id",
    "labels_url",
    "milestone",
    "node_id",
    "number",
    "reactions",
    "repository_url",
    "title",
    "updated_at",
    "url",
    "user",
];

/// `v` with only the keys `keys` (and `extra`).
fn pick(v: &Value, keys: &[&str], extra: &[&str]) -> Value {
    let o = v.as_object().unwrap();
    Value::Object(
        o.iter()
            .filter(|(k, _)| keys.contains(&k.as_str()) || extra.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    )
}

/// `issue` as an `issues` action documents it: the required fields, plus
/// `extra` ones the action's schema also requires.
fn documented_issue(issue: &Value, extra: &[(&str, Value)]) -> Value {
    let mut v = pick(issue, ISSUE_REQUIRED, &[]);
    for (k, x) in extra {
        v[*k] = x.clone();
    }
    v
}

/// `issue` as `issue_comment` documents it: GitHub's schema for that event
/// also requires `labels`, `state`, `locked` and `assignee`.
fn documented_comment_issue(issue: &Value) -> Value {
    pick(
        issue,
        ISSUE_REQUIRED,
        &["labels", "state", "locked", "assignee"],
    )
}

/// An `issues` delivery: `action`, `issue`, `repository`, `sender`, plus `extra`.
fn documented_issues(action: &str, issue: Value, sender: &str, extra: &[(&str, Value)]) -> Value {
    let mut v = json!({
        "action": action, "issue": issue, "repository": repo_json(), "sender": user_json(sender)
    });
    for (k, x) in extra {
        v[*k] = x.clone();
    }
    v
}

/// An `issue_comment` delivery (`changes` for `edited`, as documented).
fn documented_comment(action: &str, issue: &Value, comment: &Value, sender: &str) -> Value {
    let keys = [
        "author_association",
        "body",
        "created_at",
        "html_url",
        "id",
        "issue_url",
        "node_id",
        "performed_via_github_app",
        "reactions",
        "updated_at",
        "url",
        "user",
    ];
    let mut v = json!({
        "action": action, "issue": documented_comment_issue(issue),
        "comment": pick(comment, &keys, &[]), "repository": repo_json(), "sender": user_json(sender)
    });
    if action == "edited" {
        v["changes"] = json!({ "body": { "from": "/ops old text" } });
    }
    v
}

fn milestone_json() -> Value {
    json!({
        "url": format!("https://api.github.com/repos/{REPO}/milestones/1"),
        "html_url": format!("https://github.com/{REPO}/milestone/1"),
        "labels_url": format!("https://api.github.com/repos/{REPO}/milestones/1/labels"),
        "id": 1, "node_id": "MI_1", "number": 1, "title": "v1", "description": null,
        "creator": user_json("acme"), "open_issues": 1, "closed_issues": 0, "state": "open",
        "created_at": now(), "updated_at": now(), "due_on": null, "closed_at": null
    })
}

fn issue_type_json() -> Value {
    json!({
        "id": 3, "node_id": "IT_1", "name": "Bug", "description": "Something is broken",
        "color": "red", "created_at": now(), "updated_at": now(), "is_enabled": true
    })
}

fn installation_json(suspended: bool) -> Value {
    json!({
        "id": 77, "account": user_json("acme"), "repository_selection": "selected",
        "access_tokens_url": "https://api.github.com/app/installations/77/access_tokens",
        "repositories_url": "https://api.github.com/installation/repositories",
        "html_url": "https://github.com/settings/installations/77", "app_id": 4242,
        "app_slug": "youops", "target_id": 1004, "target_type": "Organization",
        "permissions": { "issues": "write", "metadata": "read" },
        "events": ["issues", "issue_comment"], "created_at": now(), "updated_at": now(),
        "single_file_name": null,
        "suspended_by": if suspended { user_json("acme") } else { Value::Null },
        "suspended_at": if suspended { json!(now()) } else { Value::Null }
    })
}

fn documented_installation(action: &str) -> Value {
    let mut v = json!({
        "action": action, "installation": installation_json(action == "suspend"),
        "sender": user_json("acme")
    });
    if matches!(action, "created" | "new_permissions_accepted") {
        v["repositories"] = json!([{ "id": 4242, "node_id": "R_kgDOA", "name": "ops", "full_name": REPO, "private": false }]);
        v["requester"] = Value::Null;
    }
    v
}

fn documented_label(action: &str) -> Value {
    let mut v = json!({
        "action": action, "label": label_json("youops"), "repository": repo_json(),
        "sender": user_json("acme")
    });
    if action == "edited" {
        v["changes"] = json!({ "name": { "from": "ops" } });
    }
    v
}

fn documented_push() -> Value {
    let (before, after) = (
        "6113728f27ae82c7b1a177c8d03f9e96e0adf246",
        "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c",
    );
    json!({
        "ref": "refs/heads/main", "before": before, "after": after, "base_ref": null,
        "created": false, "deleted": false, "forced": false,
        "compare": format!("https://github.com/{REPO}/compare/{before}...{after}"),
        "commits": [], "head_commit": null,
        "pusher": { "name": "alice", "email": "alice@example.com" },
        "repository": repo_json(), "sender": user_json("alice")
    })
}

fn documented_ping() -> Value {
    json!({
        "zen": "Design for failure.", "hook_id": 123,
        "hook": {
            "type": "Repository", "id": 123, "name": "web", "active": true,
            "events": ["issues", "issue_comment"],
            "config": { "content_type": "json", "insecure_ssl": "0", "url": "https://youops.example/github/webhook" },
            "updated_at": now(), "created_at": now(),
            "url": format!("https://api.github.com/repos/{REPO}/hooks/123"),
            "test_url": format!("https://api.github.com/repos/{REPO}/hooks/123/test"),
            "ping_url": format!("https://api.github.com/repos/{REPO}/hooks/123/pings"),
            "deliveries_url": format!("https://api.github.com/repos/{REPO}/hooks/123/deliveries"),
            "last_response": { "code": null, "status": "unused", "message": null }
        },
        "repository": repo_json(), "sender": user_json("acme")
    })
}

/// Every `issues` action YouOps does not act on, with its documented payload,
/// for an issue that is a valid YouOps request form (so acting on it by mistake
/// would show).
fn ignored_issues_deliveries(issue: &Value) -> Vec<(&'static str, Value)> {
    let doc = |extra: &[(&str, Value)]| documented_issue(issue, extra);
    let bob = || user_json("bob");
    let closed_at = json!(now());
    vec![
        (
            "pinned",
            documented_issues("pinned", doc(&[]), "alice", &[]),
        ),
        (
            "unpinned",
            documented_issues("unpinned", doc(&[]), "alice", &[]),
        ),
        (
            "closed",
            documented_issues(
                "closed",
                doc(&[("state", json!("closed")), ("closed_at", closed_at)]),
                "alice",
                &[],
            ),
        ),
        (
            "assigned",
            documented_issues("assigned", doc(&[]), "alice", &[("assignee", bob())]),
        ),
        (
            "unassigned",
            documented_issues("unassigned", doc(&[]), "alice", &[("assignee", bob())]),
        ),
        (
            "unlabeled",
            documented_issues(
                "unlabeled",
                doc(&[]),
                "alice",
                &[("label", label_json("youops"))],
            ),
        ),
        (
            "locked",
            documented_issues(
                "locked",
                doc(&[
                    ("locked", json!(true)),
                    ("active_lock_reason", json!("resolved")),
                ]),
                "alice",
                &[],
            ),
        ),
        (
            "unlocked",
            documented_issues("unlocked", doc(&[("locked", json!(false))]), "alice", &[]),
        ),
        (
            "transferred",
            documented_issues(
                "transferred",
                doc(&[]),
                "alice",
                &[(
                    "changes",
                    json!({ "new_issue": doc(&[]), "new_repository": repo_json() }),
                )],
            ),
        ),
        (
            "milestoned",
            documented_issues(
                "milestoned",
                doc(&[("milestone", milestone_json())]),
                "alice",
                &[("milestone", milestone_json())],
            ),
        ),
        (
            "demilestoned",
            documented_issues(
                "demilestoned",
                doc(&[]),
                "alice",
                &[("milestone", milestone_json())],
            ),
        ),
        (
            "typed",
            documented_issues("typed", doc(&[]), "alice", &[("type", issue_type_json())]),
        ),
        (
            "untyped",
            documented_issues("untyped", doc(&[]), "alice", &[("type", issue_type_json())]),
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_delivery_youops_does_not_act_on_gets_a_2xx_and_does_nothing() {
    let h = Harness::new("0s").await;
    let issue = h.fake.add_issue(
        30,
        "alice",
        &form_body(
            "user.create",
            &[("username", "jdoe"), ("email", "j@example.com")],
        ),
    );
    let head = h.exec.store().head().await.unwrap();

    // (event, payload, status, what the answer says)
    let mut table: Vec<(&str, Value, u16, String)> = Vec::new();
    for (action, payload) in ignored_issues_deliveries(&issue) {
        table.push(("issues", payload, 202, format!("ignored: issues/{action}")));
    }
    for action in [
        "created",
        "deleted",
        "suspend",
        "unsuspend",
        "new_permissions_accepted",
    ] {
        table.push((
            "installation",
            documented_installation(action),
            202,
            format!("ignored: installation/{action}"),
        ));
    }
    for action in ["created", "edited", "deleted"] {
        table.push((
            "label",
            documented_label(action),
            202,
            format!("ignored: label/{action}"),
        ));
    }
    table.push(("push", documented_push(), 202, "ignored: push".into()));
    // Event types and actions GitHub may add later.
    table.push((
        "youops_future_event",
        json!({ "action": "created", "sender": user_json("acme") }),
        202,
        "ignored: youops_future_event/created".into(),
    ));
    table.push((
        "issues",
        json!({ "action": "archived", "issue": { "number": 30 } }),
        202,
        "ignored: issues/archived".into(),
    ));
    table.push((
        "issue_comment",
        json!({ "action": "pinned", "comment": "not even an object" }),
        202,
        "ignored: issue_comment/pinned".into(),
    ));
    table.push(("ping", documented_ping(), 200, "Design for failure.".into()));

    for (i, (event, payload, status, says)) in table.iter().enumerate() {
        let delivery = format!("d-ignored-{i}");
        let (s, text) = h.post(event, &delivery, payload).await;
        assert_eq!(s, *status, "{event} {says}: {text}");
        assert!(text.contains(says.as_str()), "{event}: {text}");
        if *status == 202 {
            let v: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(v["delivery"], json!(delivery), "{text}");
            assert_eq!(v["event"], json!(event), "{text}");
        }
        // The same delivery again: still ignored, not a "duplicate" (no id was kept).
        let (s, again) = h.post(event, &delivery, payload).await;
        assert_eq!(s, *status, "{again}");
        assert!(again.contains(says.as_str()), "{again}");
    }
    let ping: Value =
        serde_json::from_str(&h.post("ping", "d-ping-2", &documented_ping()).await.1).unwrap();
    assert_eq!(ping["hook_id"], json!(123));

    // Nothing ran, nothing was recorded, GitHub was not called.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(h.requests().await.is_empty());
    assert_eq!(h.runs(), 0);
    assert_eq!(h.exec.store().head().await.unwrap(), head);
    assert!(h.fake.calls().is_empty(), "{:?}", h.fake.calls());
    h.shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_bodies_get_a_400_with_the_reason_and_do_nothing() {
    let h = Harness::new("0s").await;
    let issue = h
        .fake
        .add_issue(31, "alice", &form_body("app.deploy", &[("version", "1")]));
    let head = h.exec.store().head().await.unwrap();
    let mut no_number = documented_issue(&issue, &[]);
    no_number.as_object_mut().unwrap().remove("number");
    let comment = h.fake.add_comment(31, "bob", "/ops help");
    let mut no_comment = documented_comment("created", &issue, &comment, "bob");
    no_comment.as_object_mut().unwrap().remove("comment");
    // (event, body, what the 400 says)
    let table: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "issues",
            br#"{"action":"opened""#.to_vec(),
            "not a valid `issues` event",
        ),
        ("push", b"not json".to_vec(), "the body is not JSON"),
        (
            "installation",
            b"{\"action\":\"created\",\"x\":\"\xff\"}".to_vec(),
            "not UTF-8",
        ),
        (
            "issues",
            br#"{"issue":{"number":31}}"#.to_vec(),
            "missing field `action`",
        ),
        (
            "issue_comment",
            br#"{"action":5}"#.to_vec(),
            "`action` is not a string",
        ),
        (
            "issues",
            serde_json::to_vec(&documented_issues("opened", no_number, "alice", &[])).unwrap(),
            "not a valid `issues` event (action `opened`): missing field `number`",
        ),
        (
            "issue_comment",
            serde_json::to_vec(&no_comment).unwrap(),
            "not a valid `issue_comment` event (action `created`): missing field `comment`",
        ),
        (
            "ping",
            br#"{"hook":{}}"#.to_vec(),
            "not a valid `ping` event",
        ),
    ];
    for (i, (event, body, says)) in table.into_iter().enumerate() {
        let (s, text) = h.post_raw(event, &format!("d-bad-{i}"), body).await;
        assert_eq!(s, 400, "{event}: {text}");
        assert!(text.contains(says), "{event}: {text}");
    }
    assert!(h.requests().await.is_empty());
    assert_eq!(h.exec.store().head().await.unwrap(), head);
    assert!(h.fake.calls().is_empty());
    h.shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handled_actions_act_on_the_payloads_github_documents() {
    let h = Harness::new("0s").await;
    let body = form_body("app.deploy", &[("version", "1")]);
    let issue = h.fake.add_issue(40, "alice", &body);
    let get_issue = |h: &Harness| {
        h.fake
            .calls()
            .iter()
            .filter(|c| c.method == "GET" && c.path == format!("/repos/{REPO}/issues/40"))
            .count()
    };

    // issues/opened without `state` (documented as optional): opening implies it.
    let opened = documented_issues("opened", documented_issue(&issue, &[]), "alice", &[]);
    let (s, text) = h.post("issues", "d-40-opened", &opened).await;
    assert_eq!(s, 200, "{text}");
    assert!(text.contains("pending_approval"), "{text}");
    let first = h.requests().await[0].request.id;
    h.wait_state(first, State::PendingApproval).await;
    assert_eq!(get_issue(&h), 0, "no need to ask GitHub");

    // issues/labeled and issues/reopened of the same body: nothing new.
    let labeled = documented_issues(
        "labeled",
        documented_issue(&issue, &[]),
        "alice",
        &[("label", label_json("youops"))],
    );
    let reopened = documented_issues(
        "reopened",
        documented_issue(&issue, &[("state", json!("open"))]),
        "alice",
        &[],
    );
    for (action, payload) in [("labeled", &labeled), ("reopened", &reopened)] {
        let (s, text) = h.post("issues", &format!("d-40-{action}"), payload).await;
        assert_eq!(s, 200, "{action}: {text}");
        assert!(
            text.contains(&format!("already handled as request {first}")),
            "{action}: {text}"
        );
    }

    // issues/edited without `state`: GitHub is asked, the pending request is
    // voided and the new body is a new request.
    let edited_issue = h
        .fake
        .edit_issue_body(40, &form_body("app.deploy", &[("version", "2")]));
    let edited = documented_issues(
        "edited",
        documented_issue(&edited_issue, &[]),
        "alice",
        &[("changes", json!({ "body": { "from": body } }))],
    );
    let (s, text) = h.post("issues", "d-40-edited", &edited).await;
    assert_eq!(s, 200, "{text}");
    assert_eq!(get_issue(&h), 1, "the state was asked for once");
    assert_eq!(h.exec.get(first).await.unwrap().state, State::Cancelled);
    let all = h.requests().await;
    assert_eq!(all.len(), 2);
    let second = all[0].request.id;
    assert_eq!(
        h.exec.get(second).await.unwrap().request.args["version"].as_text(),
        "2"
    );

    // issue_comment/created: bob approves, it runs.
    let approve = h
        .fake
        .add_comment(40, "bob", &format!("/ops approve {second}"));
    let (s, text) = h
        .post(
            "issue_comment",
            "d-40-c1",
            &documented_comment("created", &edited_issue, &approve, "bob"),
        )
        .await;
    assert_eq!(s, 200, "{text}");
    h.wait_state(second, State::Succeeded).await;
    assert_eq!(h.runs(), 1);

    // issue_comment/edited after it ran: recorded, nothing voided, nothing runs.
    let approve_edited = h
        .fake
        .edit_comment(approve["id"].as_u64().unwrap(), "never mind");
    let (s, text) = h
        .post(
            "issue_comment",
            "d-40-c1-edited",
            &documented_comment("edited", &edited_issue, &approve_edited, "bob"),
        )
        .await;
    assert_eq!(s, 200, "{text}");
    assert!(text.contains("nothing pending to void"), "{text}");
    assert_eq!(h.exec.get(second).await.unwrap().state, State::Succeeded);

    // A command comment makes a pending request; deleting the issue voids it.
    let run = h.fake.add_comment(40, "alice", "/ops app.deploy version=3");
    let (s, text) = h
        .post(
            "issue_comment",
            "d-40-c2",
            &documented_comment("created", &edited_issue, &run, "alice"),
        )
        .await;
    assert_eq!(s, 200, "{text}");
    let third = h.requests().await[0].request.id;
    assert_eq!(
        h.exec.get(third).await.unwrap().state,
        State::PendingApproval
    );
    let deleted = documented_issues(
        "deleted",
        documented_issue(&edited_issue, &[]),
        "alice",
        &[],
    );
    let (s, text) = h.post("issues", "d-40-deleted", &deleted).await;
    assert_eq!(s, 200, "{text}");
    assert!(text.contains("voided 1 pending request(s)"), "{text}");
    assert_eq!(h.exec.get(third).await.unwrap().state, State::Cancelled);

    // issue_comment/deleted of a comment whose request is already void.
    let (s, text) = h
        .post(
            "issue_comment",
            "d-40-c2-deleted",
            &documented_comment("deleted", &edited_issue, &run, "alice"),
        )
        .await;
    assert_eq!(s, 200, "{text}");
    assert!(text.contains("nothing pending to void"), "{text}");
    assert_eq!(h.runs(), 1);
    assert!(h.exec.store().verify().await.unwrap().ok());
    h.shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_without_state_of_a_closed_issue_is_not_submitted() {
    let h = Harness::new("0s").await;
    let body = form_body("app.deploy", &[("version", "1")]);
    h.fake.add_issue(41, "alice", "Just a discussion.");
    let issue = h.fake.edit_issue_body(41, &body);
    h.fake.st().issues.get_mut(&(REPO.to_string(), 41)).unwrap()["state"] = json!("closed");
    let edited = documented_issues(
        "edited",
        documented_issue(&issue, &[]),
        "alice",
        &[(
            "changes",
            json!({ "body": { "from": "Just a discussion." } }),
        )],
    );
    let (s, text) = h.post("issues", "d-41-edited", &edited).await;
    assert_eq!(s, 200, "{text}");
    assert!(text.contains("closed issue: not submitted"), "{text}");
    assert!(h.requests().await.is_empty());
    h.shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_issue_whose_author_is_null_is_opened_by_the_sender_and_otherwise_not_submitted() {
    let h = Harness::new("0s").await;
    // `user` is `null` in GitHub's schema for a deleted account.
    let issue = h
        .fake
        .add_issue(42, "alice", &form_body("app.deploy", &[("version", "1")]));
    let opened = documented_issues(
        "opened",
        documented_issue(&issue, &[("user", Value::Null)]),
        "alice",
        &[],
    );
    let (s, text) = h.post("issues", "d-42-opened", &opened).await;
    assert_eq!(s, 200, "{text}");
    let rec = h.requests().await.pop().unwrap();
    assert_eq!(rec.request.actor.principal.as_deref(), Some("alice"));

    let other = h
        .fake
        .add_issue(43, "bob", &form_body("app.deploy", &[("version", "2")]));
    let labeled = documented_issues(
        "labeled",
        documented_issue(&other, &[("user", Value::Null)]),
        "alice",
        &[("label", label_json("youops"))],
    );
    let (s, text) = h.post("issues", "d-43-labeled", &labeled).await;
    assert_eq!(s, 200, "{text}");
    assert!(text.contains("issue #43 has no author"), "{text}");
    assert_eq!(h.requests().await.len(), 1);
    h.shutdown.cancel();
}
