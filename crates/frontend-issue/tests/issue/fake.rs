//! A fake GitHub REST API on 127.0.0.1: issues, comments, reactions and
//! labels in memory, every call recorded, GitHub App token exchange included.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Request, State as AxState};
use axum::response::{IntoResponse, Response};
use axum::Router;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};

pub const REPO: &str = "acme/ops";
pub const BOT: &str = "youops[bot]";

#[derive(Debug, Clone)]
pub struct Call {
    pub method: String,
    pub path: String,
    pub query: String,
    pub body: Value,
    pub authorized: bool,
}

#[derive(Default)]
pub struct FakeState {
    pub base: String,
    pub issues: BTreeMap<(String, u64), Value>,
    /// id → (repo, issue number, comment json)
    pub comments: BTreeMap<u64, (String, u64, Value)>,
    /// (target, content): target is `issue:N` or `comment:ID`
    pub reactions: Vec<(String, String)>,
    pub calls: Vec<Call>,
    pub next_id: u64,
    /// Create the next comment but answer 502 (a lost answer).
    pub lose_next_comment_answer: bool,
    /// Claims of the app JWTs presented to the access-token endpoint.
    pub app_jwt_claims: Vec<Value>,
}

/// Decode one base64url (no padding) JWT segment as JSON.
pub fn base64url_json(seg: &str) -> Option<Value> {
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
pub struct Fake(pub Arc<Mutex<FakeState>>);

pub fn now() -> String {
    Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

pub fn user_json(login: &str) -> Value {
    let bot = login.ends_with("[bot]");
    json!({
        "login": login, "id": 1000 + login.len(), "node_id": "MDQ6VXNlcjE=",
        "avatar_url": "https://avatars.githubusercontent.com/u/1?v=4", "gravatar_id": "",
        "url": format!("https://api.github.com/users/{login}"),
        "html_url": format!("https://github.com/{login}"),
        "type": if bot { "Bot" } else { "User" }, "site_admin": false
    })
}

pub fn repo_json() -> Value {
    json!({
        "id": 4242, "node_id": "R_kgDOA", "name": "ops", "full_name": REPO, "private": false,
        "owner": user_json("acme"), "html_url": format!("https://github.com/{REPO}"),
        "default_branch": "main"
    })
}

pub fn label_json(name: &str) -> Value {
    json!({ "id": 7, "node_id": "LA_1", "url": format!("https://api.github.com/repos/{REPO}/labels/{name}"),
            "name": name, "color": "ededed", "default": false, "description": null })
}

impl Fake {
    pub async fn start() -> (Fake, String) {
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

    pub fn st(&self) -> std::sync::MutexGuard<'_, FakeState> {
        self.0.lock().unwrap()
    }

    pub fn add_issue(&self, number: u64, author: &str, body: &str) -> Value {
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

    pub fn edit_issue_body(&self, number: u64, body: &str) -> Value {
        let mut st = self.st();
        let issue = st.issues.get_mut(&(REPO.into(), number)).unwrap();
        issue["body"] = json!(body);
        issue["updated_at"] = json!(now());
        issue.clone()
    }

    pub fn issue(&self, number: u64) -> Value {
        self.st().issues[&(REPO.to_string(), number)].clone()
    }

    pub fn new_comment(st: &mut FakeState, issue: u64, author: &str, body: &str) -> Value {
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

    pub fn add_comment(&self, issue: u64, author: &str, body: &str) -> Value {
        Self::new_comment(&mut self.st(), issue, author, body)
    }

    pub fn edit_comment(&self, id: u64, body: &str) -> Value {
        let mut st = self.st();
        let c = &mut st.comments.get_mut(&id).unwrap().2;
        c["body"] = json!(body);
        // GitHub's timestamps have second resolution: make the edit visible.
        let later = Utc::now() + chrono::Duration::seconds(5);
        c["updated_at"] = json!(later.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
        c.clone()
    }

    pub fn calls(&self) -> Vec<Call> {
        self.st().calls.clone()
    }

    /// Bodies of the comments on an issue, oldest first.
    pub fn comments_on(&self, issue: u64) -> Vec<(u64, String, String)> {
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

    pub fn bot_comments(&self, issue: u64) -> Vec<(u64, String)> {
        self.comments_on(issue)
            .into_iter()
            .filter(|(_, u, _)| u == BOT)
            .map(|(id, _, b)| (id, b))
            .collect()
    }

    pub fn reactions(&self, target: &str) -> Vec<String> {
        self.st()
            .reactions
            .iter()
            .filter(|(t, _)| t == target)
            .map(|(_, c)| c.clone())
            .collect()
    }

    pub fn labels(&self, issue: u64) -> Vec<String> {
        self.issue(issue)["labels"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["name"].as_str().unwrap().to_string())
            .collect()
    }
}

pub fn not_found() -> Response {
    (
        axum::http::StatusCode::NOT_FOUND,
        axum::Json(
            json!({ "message": "Not Found", "documentation_url": "https://docs.github.com/rest" }),
        ),
    )
        .into_response()
}

pub fn page<T: Clone>(items: Vec<T>, query: &BTreeMap<String, String>) -> Vec<T> {
    let per: usize = query
        .get("per_page")
        .and_then(|p| p.parse().ok())
        .unwrap_or(30);
    let page: usize = query.get("page").and_then(|p| p.parse().ok()).unwrap_or(1);
    items.into_iter().skip((page - 1) * per).take(per).collect()
}

pub fn since_ok(v: &Value, query: &BTreeMap<String, String>) -> bool {
    match query.get("since") {
        None => true,
        Some(s) => {
            let since: DateTime<Utc> = s.parse().unwrap();
            let upd: DateTime<Utc> = v["updated_at"].as_str().unwrap().parse().unwrap();
            upd >= since
        }
    }
}

pub async fn handle(AxState(fake): AxState<Fake>, req: Request) -> Response {
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
