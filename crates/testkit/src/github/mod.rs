//! A fake GitHub REST API on 127.0.0.1: issues, comments, reactions and
//! labels in memory, every call recorded, GitHub App token exchange included,
//! and faults on comment creation.

mod json;
mod routes;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use serde_json::{json, Value};

use crate::fault::{serve_killable, Conns, Fault, Observer};

pub use json::{base64url_json, label_json, now, percent_decode, repo_json, user_json};

/// The repository the fake's helpers ([`FakeGithub::add_issue`], …) manage.
pub const REPO: &str = "acme/ops";
/// The login of the comments the frontend writes.
pub const BOT: &str = "youops[bot]";

/// One request the fake received.
#[derive(Debug, Clone)]
pub struct Call {
    /// The HTTP method.
    pub method: String,
    /// The URL path, without the query.
    pub path: String,
    /// The raw query string (empty when there is none).
    pub query: String,
    /// The JSON body (`null` when it is not JSON).
    pub body: Value,
    /// Whether the fake took its credentials (a call answered with a fault is
    /// not checked and counts as taken).
    pub authorized: bool,
}

/// How the fake is set up.
#[derive(Clone)]
pub struct GithubOptions {
    /// Take any credentials, any issue number (an unknown issue is created on
    /// first use, by `octocat`) and reactions on any comment id: for drivers
    /// that make up the issues and comments they deliver webhooks about.
    pub lenient: bool,
    /// Keep every call for [`FakeGithub::calls`] (a long soak counts them
    /// through `observe` instead).
    pub record: bool,
    /// Called with every call.
    pub observe: Option<Observer<Call>>,
    /// The first comment id is one above this.
    pub first_id: u64,
}

impl Default for GithubOptions {
    fn default() -> Self {
        GithubOptions {
            lenient: false,
            record: true,
            observe: None,
            first_id: 5000,
        }
    }
}

impl std::fmt::Debug for GithubOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GithubOptions")
            .field("lenient", &self.lenient)
            .field("record", &self.record)
            .field("observe", &self.observe.is_some())
            .field("first_id", &self.first_id)
            .finish()
    }
}

/// What the fake holds and how it is set up, behind [`FakeGithub::state`].
#[derive(Debug, Default)]
pub struct FakeState {
    /// `http://127.0.0.1:PORT`, the prefix of the API URLs in the JSON.
    pub base: String,
    /// How the fake is set up.
    pub options: GithubOptions,
    /// (repo, issue number) → issue json
    pub issues: BTreeMap<(String, u64), Value>,
    /// id → (repo, issue number, comment json)
    pub comments: BTreeMap<u64, (String, u64, Value)>,
    /// (target, content): target is `issue:N` or `comment:ID`
    pub reactions: Vec<(String, String)>,
    /// The recorded calls, oldest first (when [`GithubOptions::record`]).
    pub calls: Vec<Call>,
    /// The last comment id handed out; the next comment gets one above it.
    pub next_id: u64,
    /// Create the next comment but answer 502 (a lost answer).
    pub lose_next_comment_answer: bool,
    /// Claims of the app JWTs presented to the access-token endpoint.
    pub app_jwt_claims: Vec<Value>,
    /// How comment posts (`POST …/issues/N/comments`) fail; no comment is
    /// created.
    pub fault: Option<Fault>,
    /// How many comment posts the fault still applies to (`None`: all).
    pub fault_left: Option<usize>,
}

/// A running fake GitHub; its clones share it.
#[derive(Debug, Clone, Default)]
pub struct FakeGithub {
    /// What the fake holds, shared with its handler.
    pub state: Arc<Mutex<FakeState>>,
    conns: Conns,
}

impl FakeGithub {
    /// On 127.0.0.1, strict ([`GithubOptions::default`]).
    pub async fn start() -> FakeGithub {
        Self::start_with(GithubOptions::default()).await
    }

    /// On 127.0.0.1, set up by `options`.
    pub async fn start_with(options: GithubOptions) -> FakeGithub {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::serve(listener, options)
    }

    /// On `listener` (served on the current runtime).
    pub fn serve(listener: tokio::net::TcpListener, options: GithubOptions) -> FakeGithub {
        let addr = listener.local_addr().unwrap();
        let fake = FakeGithub::default();
        {
            let mut st = fake.st();
            st.base = format!("http://{addr}");
            st.next_id = options.first_id;
            st.options = options;
        }
        let app = Router::new()
            .fallback(routes::handle)
            .with_state(fake.clone());
        serve_killable(listener, fake.conns.clone(), app);
        fake
    }

    /// `http://127.0.0.1:PORT`, the `api_base_url`.
    pub fn base(&self) -> String {
        self.st().base.clone()
    }

    /// Lock the state (taking it over from a panicked holder).
    pub fn st(&self) -> std::sync::MutexGuard<'_, FakeState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Make the next `count` comment posts (all when `None`) fail with `fault`.
    pub fn set_fault(&self, fault: Fault, count: Option<usize>) {
        let mut st = self.st();
        st.fault = Some(fault);
        st.fault_left = count;
    }

    /// Open issue `number` of [`REPO`] by `author`, labelled `youops`, as if
    /// written on GitHub; returns its JSON.
    pub fn add_issue(&self, number: u64, author: &str, body: &str) -> Value {
        let mut st = self.st();
        let issue = json::issue_json(&st.base, REPO, number, author, body);
        st.issues.insert((REPO.into(), number), issue.clone());
        issue
    }

    /// Replace the body of issue `number` of [`REPO`] (bumping `updated_at`);
    /// returns its JSON.
    pub fn edit_issue_body(&self, number: u64, body: &str) -> Value {
        let mut st = self.st();
        let issue = st.issues.get_mut(&(REPO.into(), number)).unwrap();
        issue["body"] = json!(body);
        issue["updated_at"] = json!(now());
        issue.clone()
    }

    /// Issue `number` of [`REPO`] (panics when there is none).
    pub fn issue(&self, number: u64) -> Value {
        self.st().issues[&(REPO.to_string(), number)].clone()
    }

    /// Add a comment by `author` on issue `issue` of [`REPO`] to `st`, with the
    /// next id; returns its JSON.
    pub fn new_comment(st: &mut FakeState, issue: u64, author: &str, body: &str) -> Value {
        Self::new_comment_in(st, REPO, issue, author, body)
    }

    fn new_comment_in(
        st: &mut FakeState,
        repo: &str,
        issue: u64,
        author: &str,
        body: &str,
    ) -> Value {
        st.next_id += 1;
        let id = st.next_id;
        let c = json::comment_json(&st.base, repo, (id, issue), author, body);
        st.comments.insert(id, (repo.into(), issue, c.clone()));
        c
    }

    /// Add a comment by `author` on issue `issue` of [`REPO`], as if written
    /// on GitHub; returns its JSON.
    pub fn add_comment(&self, issue: u64, author: &str, body: &str) -> Value {
        Self::new_comment(&mut self.st(), issue, author, body)
    }

    /// Replace the body of comment `id`, its `updated_at` set 5 s ahead so that
    /// a `since` query sees the edit; returns its JSON.
    pub fn edit_comment(&self, id: u64, body: &str) -> Value {
        let mut st = self.st();
        let c = &mut st.comments.get_mut(&id).unwrap().2;
        c["body"] = json!(body);
        // GitHub's timestamps have second resolution: make the edit visible.
        let later = chrono::Utc::now() + chrono::Duration::seconds(5);
        c["updated_at"] = json!(later.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
        c.clone()
    }

    /// The recorded calls, oldest first.
    pub fn calls(&self) -> Vec<Call> {
        self.st().calls.clone()
    }

    /// (id, author, body) of the comments on an issue, oldest first.
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

    /// (id, body) of the [`BOT`]'s comments on an issue, oldest first.
    pub fn bot_comments(&self, issue: u64) -> Vec<(u64, String)> {
        self.comments_on(issue)
            .into_iter()
            .filter(|(_, u, _)| u == BOT)
            .map(|(id, _, b)| (id, b))
            .collect()
    }

    /// The reactions on `target` (`issue:N` or `comment:ID`), oldest first.
    pub fn reactions(&self, target: &str) -> Vec<String> {
        self.st()
            .reactions
            .iter()
            .filter(|(t, _)| t == target)
            .map(|(_, c)| c.clone())
            .collect()
    }

    /// The label names of an issue.
    pub fn labels(&self, issue: u64) -> Vec<String> {
        self.issue(issue)["labels"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["name"].as_str().unwrap().to_string())
            .collect()
    }
}
