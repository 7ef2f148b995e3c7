//! The fake GitHub REST API: issue comments, reactions and labels of
//! [`GH_REPO`], with real JSON, and a count of every feedback call.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State as AxState;
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde_json::{json, Value};

use crate::lock;

/// The GitHub repository the config manages.
pub(crate) const GH_REPO: &str = "acme/soak";

#[derive(Debug, Default)]
struct GithubState {
    next_id: u64,
    /// comment id → (issue, body), for comments the daemon wrote.
    comments: HashMap<u64, (u64, String)>,
    /// issue → its comment ids, in order.
    by_issue: HashMap<u64, Vec<u64>>,
    /// issue → label names.
    labels: HashMap<u64, Vec<String>>,
}

#[derive(Debug, Default)]
pub(crate) struct GithubFake {
    state: Mutex<GithubState>,
    base: String,
    /// Calls by `METHOD kind` (`POST comments`, `POST reaction rocket`, …).
    pub(crate) calls: Mutex<BTreeMap<String, u64>>,
    /// Comment ids (the driver's command comments) that got a 🚀.
    pub(crate) rockets: Mutex<HashSet<u64>>,
}

fn gh_json(status: StatusCode, v: Value) -> Response {
    (
        status,
        [("content-type", "application/json; charset=utf-8")],
        v.to_string(),
    )
        .into_response()
}

/// Now, as GitHub writes times.
pub(crate) fn gh_now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn not_found() -> Response {
    gh_json(
        StatusCode::NOT_FOUND,
        json!({ "message": "Not Found", "documentation_url": "https://docs.github.com/rest" }),
    )
}

/// A created reaction.
fn reaction_json(content: &str) -> Response {
    gh_json(
        StatusCode::CREATED,
        json!({ "id": 1, "node_id": "REA_soak", "content": content,
                "user": { "login": "youops[bot]", "id": 1, "type": "Bot" },
                "created_at": gh_now() }),
    )
}

impl GithubFake {
    /// A fake whose URLs start with `base`; the comments it creates are
    /// numbered from 90,000,001 (the driver's own are 50,000,000 on).
    pub(crate) fn new(base: String) -> Self {
        GithubFake {
            base,
            state: Mutex::new(GithubState {
                next_id: 90_000_000,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn comment_json(&self, id: u64, issue: u64, body: &str) -> Value {
        let t = gh_now();
        json!({
            "id": id, "node_id": format!("IC_soak{id}"), "body": body,
            "user": { "login": "youops[bot]", "id": 1, "type": "Bot" },
            "url": format!("{}/repos/{GH_REPO}/issues/comments/{id}", self.base),
            "html_url": format!("https://github.com/{GH_REPO}/issues/{issue}#issuecomment-{id}"),
            "issue_url": format!("{}/repos/{GH_REPO}/issues/{issue}", self.base),
            "author_association": "NONE",
            "created_at": t, "updated_at": t
        })
    }

    fn labels_json(names: &[String]) -> Value {
        Value::Array(
            names
                .iter()
                .enumerate()
                .map(
                    |(i, n)| json!({ "id": i + 1, "name": n, "color": "ededed", "default": false }),
                )
                .collect(),
        )
    }

    fn count(&self, what: String) {
        *lock(&self.calls).entry(what).or_default() += 1;
    }

    fn answer(&self, method: &Method, path: &str, query: &str, body: &Value) -> Response {
        let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let prefix = format!("repos/{GH_REPO}/issues");
        if segs.len() < 4 || segs[..4].join("/") != prefix {
            self.count(format!("{method} other"));
            return not_found();
        }
        let page1 = !query
            .split('&')
            .any(|kv| kv.starts_with("page=") && kv != "page=1");
        let m = method.as_str();
        let num = |n: &str| -> u64 { n.parse().unwrap_or(0) };
        match (m, &segs[4..]) {
            ("POST", ["comments", id, "reactions"]) => {
                let content = body["content"].as_str().unwrap_or("").to_string();
                self.count(format!("POST reaction {content}"));
                if content == "rocket" {
                    lock(&self.rockets).insert(num(id));
                }
                reaction_json(&content)
            }
            ("POST", [_, "reactions"]) => {
                let content = body["content"].as_str().unwrap_or("").to_string();
                self.count(format!("POST reaction {content} (issue)"));
                reaction_json(&content)
            }
            ("PATCH", ["comments", id]) => self.edit_comment(num(id), body),
            ("GET", [n, "comments"]) => self.list_comments(num(n), page1),
            ("POST", [n, "comments"]) => self.add_comment(num(n), body),
            ("GET", [n, "labels"]) => {
                self.count("GET labels".into());
                let st = lock(&self.state);
                let names = st.labels.get(&num(n)).cloned().unwrap_or_default();
                gh_json(StatusCode::OK, Self::labels_json(&names))
            }
            ("POST", [n, "labels"]) => self.add_labels(num(n), body),
            ("DELETE", [n, "labels", name]) => self.remove_label(num(n), name),
            ("PATCH", [_]) => {
                self.count("PATCH issue".into());
                gh_json(StatusCode::OK, json!({ "state": body["state"] }))
            }
            _ => {
                self.count(format!("{m} other"));
                not_found()
            }
        }
    }

    /// `PATCH …/issues/comments/{id}`.
    fn edit_comment(&self, id: u64, body: &Value) -> Response {
        self.count("PATCH comment".into());
        let text = body["body"].as_str().unwrap_or("").to_string();
        let mut st = lock(&self.state);
        match st.comments.get_mut(&id) {
            Some((issue, b)) => {
                b.clone_from(&text);
                let issue = *issue;
                drop(st);
                gh_json(StatusCode::OK, self.comment_json(id, issue, &text))
            }
            None => not_found(),
        }
    }

    /// `GET …/issues/{n}/comments` (all on the first page).
    fn list_comments(&self, n: u64, page1: bool) -> Response {
        self.count("GET comments".into());
        let st = lock(&self.state);
        let list: Vec<Value> = if page1 {
            st.by_issue
                .get(&n)
                .into_iter()
                .flatten()
                .filter_map(|id| st.comments.get(id).map(|(i, b)| (*id, *i, b)))
                .map(|(id, i, b)| self.comment_json(id, i, b))
                .collect()
        } else {
            Vec::new()
        };
        gh_json(StatusCode::OK, Value::Array(list))
    }

    /// `POST …/issues/{n}/comments`.
    fn add_comment(&self, n: u64, body: &Value) -> Response {
        self.count("POST comment".into());
        let text = body["body"].as_str().unwrap_or("").to_string();
        let mut st = lock(&self.state);
        st.next_id += 1;
        let id = st.next_id;
        st.comments.insert(id, (n, text.clone()));
        st.by_issue.entry(n).or_default().push(id);
        drop(st);
        gh_json(StatusCode::CREATED, self.comment_json(id, n, &text))
    }

    /// `POST …/issues/{n}/labels`.
    fn add_labels(&self, n: u64, body: &Value) -> Response {
        self.count("POST labels".into());
        let mut st = lock(&self.state);
        let have = st.labels.entry(n).or_default();
        for l in body["labels"].as_array().into_iter().flatten() {
            if let Some(l) = l.as_str() {
                if !have.iter().any(|h| h == l) {
                    have.push(l.to_string());
                }
            }
        }
        let names = have.clone();
        gh_json(StatusCode::OK, Self::labels_json(&names))
    }

    /// `DELETE …/issues/{n}/labels/{name}`.
    fn remove_label(&self, n: u64, name: &str) -> Response {
        self.count("DELETE label".into());
        let name = percent_decode(name);
        let mut st = lock(&self.state);
        let have = st.labels.entry(n).or_default();
        match have.iter().position(|h| *h == name) {
            Some(p) => {
                have.remove(p);
                let names = have.clone();
                gh_json(StatusCode::OK, Self::labels_json(&names))
            }
            None => gh_json(
                StatusCode::NOT_FOUND,
                json!({ "message": "Label does not exist" }),
            ),
        }
    }
}

pub(crate) fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn github_api(
    AxState(st): AxState<Arc<GithubFake>>,
    method: Method,
    uri: Uri,
    body: Bytes,
) -> Response {
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    st.answer(&method, uri.path(), uri.query().unwrap_or(""), &v)
}

/// The fake's routes (every path) over `state`.
pub(crate) fn router(state: Arc<GithubFake>) -> Router {
    Router::new().fallback(github_api).with_state(state)
}
