//! # youops-frontend-issue
//!
//! The IssueOps frontend for GitHub: people request an op by opening an issue
//! from a generated issue form, and act on requests with `/ops …` command lines
//! in comments (`/ops approve ID`, `/ops deny ID why`, `/ops cancel ID`,
//! `/ops status ID`, `/ops retry ID`, `/ops help`, or `/ops OP k=v …`). YouOps
//! answers on the issue: 👀 when a request is accepted, one status comment per
//! request edited in place through its lifecycle, 🚀 or 👎 at the end, and the
//! labels `youops:pending-approval`, `youops:running`, `youops:succeeded`,
//! `youops:failed`.
//!
//! Input comes from the signed webhook (`POST /github/webhook`) and from polling
//! the managed repositories, which share their dedup keys (see [`process`]), so a
//! daemon that was down catches up without running anything twice. Everything
//! goes through the core [`Executor`]; the GitHub REST calls go through
//! `octocrab` (see [`github`]). Setup: `docs/frontends/github-issues.md`.
//!
//! ```
//! use youops_frontend_issue::GithubFrontend;
//! use youops_core::frontend::Frontend;
//!
//! let section: toml::Table = r#"
//! webhook_secret = "s3cret"
//! token = "ghp_example"
//! repos = ["acme/ops-requests"]
//! "#.parse().unwrap();
//! let github = GithubFrontend::from_config(&section).unwrap();
//! assert_eq!(github.name(), "github");
//! assert_eq!(github.http_routes()[0].path, "/github/webhook");
//! ```

pub mod config;
pub mod feedback;
pub mod forms;
pub mod github;
pub mod process;
pub mod webhook;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use youops_core::frontend::{
    json_response, simple_response, Frontend, FrontendContext, FrontendError, HttpRequest,
    HttpResponse, HttpRoute, StreamError,
};
use youops_core::model::{EventBody, RequestId, RequestRecord, State};
use youops_core::Executor;

pub use config::GithubConfig;
pub use forms::{issue_forms, parse_issue_form};

use config::RepoName;
use github::Api;
use process::{origin_refs, Via, NAME};
use webhook::Event;

/// The webhook path.
pub const WEBHOOK_PATH: &str = "/github/webhook";

/// How many delivery ids / comment ids are remembered in memory.
const RECENT: usize = 20_000;

/// A bounded set of recently seen ids.
#[derive(Debug)]
struct Recent<T: std::hash::Hash + Eq + Clone> {
    set: HashSet<T>,
    order: VecDeque<T>,
}

impl<T: std::hash::Hash + Eq + Clone> Recent<T> {
    fn new() -> Self {
        Recent {
            set: HashSet::new(),
            order: VecDeque::new(),
        }
    }

    /// Insert; `false` if it was there.
    fn insert(&mut self, v: T) -> bool {
        if !self.set.insert(v.clone()) {
            return false;
        }
        self.order.push_back(v);
        if self.order.len() > RECENT {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        true
    }

    fn remove(&mut self, v: &T) {
        self.set.remove(v);
        self.order.retain(|x| x != v);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// State shared by the webhook handler, the poller and the feedback worker.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) cfg: Arc<GithubConfig>,
    pub(crate) api: Api,
    ready: AtomicBool,
    deliveries: Mutex<Recent<String>>,
    comments: Mutex<Recent<u64>>,
    /// (repo key, issue, status key) → status comment id.
    status_comments: Mutex<HashMap<(String, u64, String), u64>>,
    /// Per request: last rendered audit seq, and whether 👀 was given.
    rendered: Mutex<HashMap<RequestId, (u64, bool)>>,
    /// Requests whose status comment is being retried in the background.
    retrying: Mutex<HashSet<RequestId>>,
}

impl Shared {
    /// Claim a comment for handling; `false` if it is claimed already.
    pub(crate) fn claim_comment(&self, id: u64) -> bool {
        lock(&self.comments).insert(id)
    }
}

const FEEDBACK_RETRIES: u32 = 8;
const FEEDBACK_RETRY_FIRST: Duration = Duration::from_secs(1);
const FEEDBACK_RETRY_MAX: Duration = Duration::from_secs(60);

/// The IssueOps frontend (name `github`).
#[derive(Debug, Clone)]
pub struct GithubFrontend {
    shared: Arc<Shared>,
}

impl GithubFrontend {
    /// Build from the `[frontends.github]` section; every problem at once.
    /// Nothing is contacted yet.
    pub fn from_config(section: &toml::Table) -> Result<GithubFrontend, Vec<String>> {
        let cfg = Arc::new(GithubConfig::from_table(section)?);
        Ok(GithubFrontend {
            shared: Arc::new(Shared {
                api: Api::new(cfg.clone()),
                cfg,
                ready: AtomicBool::new(false),
                deliveries: Mutex::new(Recent::new()),
                comments: Mutex::new(Recent::new()),
                status_comments: Mutex::new(HashMap::new()),
                rendered: Mutex::new(HashMap::new()),
                retrying: Mutex::new(HashSet::new()),
            }),
        })
    }

    /// The validated config.
    pub fn config(&self) -> &GithubConfig {
        &self.shared.cfg
    }

    /// Poll every managed repository once for issues and comments updated since
    /// `since` (what the background poller does every `poll_interval`).
    pub async fn poll_once(&self, exec: &Executor, since: chrono::DateTime<Utc>) -> Vec<String> {
        let mut errors = Vec::new();
        for repo in self.shared.cfg.repos.values() {
            if let Err(e) = self.shared.poll_repo(exec, repo, since).await {
                tracing::warn!(repo = %repo, error = %e, "polling failed");
                errors.push(format!("{repo}: {e}"));
            }
        }
        errors
    }
}

fn header<'a>(req: &'a HttpRequest, name: &str) -> Option<&'a str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

impl Shared {
    async fn handle_webhook(
        self: &Arc<Self>,
        ctx: &FrontendContext,
        req: HttpRequest,
    ) -> HttpResponse {
        use http::StatusCode;
        if req.method() != http::Method::POST {
            return simple_response(StatusCode::METHOD_NOT_ALLOWED, "POST only");
        }
        if let Err(e) = webhook::verify(
            self.cfg.webhook_secret.as_bytes(),
            req.headers(),
            req.body(),
        ) {
            tracing::info!(reason = %e, "refused a GitHub delivery");
            return simple_response(StatusCode::UNAUTHORIZED, &e.to_string());
        }
        let Some(event) = header(&req, "x-github-event").map(str::to_string) else {
            return simple_response(StatusCode::BAD_REQUEST, "missing X-GitHub-Event header");
        };
        let Some(delivery) = header(&req, "x-github-delivery").map(str::to_string) else {
            return simple_response(StatusCode::BAD_REQUEST, "missing X-GitHub-Delivery header");
        };
        let json = match webhook::payload_json(header(&req, "content-type"), req.body()) {
            Ok(j) => j,
            Err(e) => return simple_response(StatusCode::BAD_REQUEST, &e),
        };
        let decoded = match webhook::decode(&event, &json) {
            Ok(d) => d,
            Err(e) => return simple_response(StatusCode::BAD_REQUEST, &e),
        };
        let answer = |status: StatusCode, result: &str| {
            json_response(
                status,
                &serde_json::json!({ "delivery": delivery, "event": event, "result": result }),
            )
        };
        let repo_name = match &decoded {
            Event::Ping(p) => {
                return json_response(
                    StatusCode::OK,
                    &serde_json::json!({ "ok": true, "zen": p.zen, "hook_id": p.hook_id }),
                )
            }
            Event::Ignored(ignored) => {
                // Before the repository check and the delivery id: nothing is
                // recorded for a delivery YouOps does not act on.
                tracing::debug!(delivery = %delivery, event = %ignored.event,
                    action = ignored.action.as_deref().unwrap_or(""), "ignored a GitHub delivery");
                return answer(StatusCode::ACCEPTED, &ignored.to_string());
            }
            Event::Issues(e) => e.repository.full_name.clone(),
            Event::IssueComment(e) => e.repository.full_name.clone(),
        };
        let Some(repo) = self.cfg.repo(&repo_name).cloned() else {
            return answer(
                StatusCode::ACCEPTED,
                &format!("repository `{repo_name}` is not managed by YouOps: ignored"),
            );
        };
        if !lock(&self.deliveries).insert(delivery.clone()) {
            return answer(StatusCode::OK, "duplicate delivery: already handled");
        }
        let via = Via {
            path: "webhook",
            delivery: Some(delivery.clone()),
        };
        let this = self.clone();
        let exec = ctx.executor.clone();
        let work =
            tokio::spawn(async move { this.process_event(&exec, &repo, decoded, &via).await });
        match tokio::time::timeout(self.cfg.ack_timeout, work).await {
            Ok(Ok(Ok(result))) => answer(StatusCode::OK, &result),
            Ok(Ok(Err(e))) => {
                // The system's fault (store, shutdown): let the delivery be redelivered.
                lock(&self.deliveries).remove(&delivery);
                tracing::warn!(delivery = %delivery, error = %e, "delivery not processed");
                answer(StatusCode::SERVICE_UNAVAILABLE, &e)
            }
            Ok(Err(_)) => {
                lock(&self.deliveries).remove(&delivery);
                answer(StatusCode::SERVICE_UNAVAILABLE, "processing failed")
            }
            Err(_) => answer(StatusCode::ACCEPTED, "accepted; still processing"),
        }
    }

    async fn process_event(
        &self,
        exec: &Executor,
        repo: &RepoName,
        event: Event,
        via: &Via,
    ) -> Result<String, String> {
        if !exec.is_accepting() {
            return Err("YouOps is shutting down".into());
        }
        Ok(match event {
            Event::Issues(mut e) => match e.action.as_str() {
                "opened" | "reopened" | "labeled" => {
                    if e.issue.state.is_none() && e.action != "labeled" {
                        // Opening or reopening leaves the issue open.
                        e.issue.state = Some("open".into());
                    }
                    if e.issue.user.is_none() && e.action == "opened" {
                        // Who opened it is its author.
                        e.issue.user = Some(e.sender.clone());
                    }
                    self.reconcile_issue(exec, repo, &e.issue, Some(&e.sender), via)
                        .await
                }
                "edited" => {
                    if e.changes.as_ref().is_some_and(|c| c.body.is_none()) {
                        "title edit: nothing to do".into()
                    } else {
                        self.reconcile_issue(exec, repo, &e.issue, Some(&e.sender), via)
                            .await
                    }
                }
                "deleted" => self.issue_deleted(exec, repo, &e.issue, &e.sender).await,
                other => format!("issues action `{other}` ignored"),
            },
            Event::IssueComment(e) => match e.action.as_str() {
                "created" => {
                    self.comment_created(exec, repo, e.issue.number, &e.comment, via)
                        .await
                }
                "edited" => {
                    if e.changes.as_ref().is_some_and(|c| c.body.is_none()) {
                        "comment edit without a body change: nothing to do".into()
                    } else {
                        self.comment_changed(exec, repo, &e.comment, "edit", Some(&e.sender), false)
                            .await
                    }
                }
                "deleted" => {
                    self.comment_changed(exec, repo, &e.comment, "delete", Some(&e.sender), false)
                        .await
                }
                other => format!("issue_comment action `{other}` ignored"),
            },
            Event::Ping(_) => "ignored".into(),
            Event::Ignored(i) => i.to_string(),
        })
    }

    /// One poll of one repository.
    async fn poll_repo(
        &self,
        exec: &Executor,
        repo: &RepoName,
        since: chrono::DateTime<Utc>,
    ) -> Result<(), github::ApiError> {
        let via = Via {
            path: "poll",
            delivery: None,
        };
        for issue in self.api.issues_since(repo, since).await? {
            self.reconcile_issue(exec, repo, &issue, None, &via).await;
        }
        let comments = self.api.repo_comments_since(repo, since).await?;
        let replied: HashSet<u64> = comments
            .iter()
            .filter_map(|c| feedback::replied_comment(c.body_text()))
            .collect();
        for c in &comments {
            if process::is_ours(c.body_text()) {
                continue;
            }
            let Some(issue) = c.issue_number() else {
                continue;
            };
            let edited = c.updated_at > c.created_at + chrono::Duration::seconds(2);
            if replied.contains(&c.id) {
                lock(&self.comments).insert(c.id);
            } else {
                self.comment_created(exec, repo, issue, c, &via).await;
            }
            if edited && c.updated_at >= since {
                self.comment_changed(exec, repo, c, "edit", None, true)
                    .await;
            }
        }
        Ok(())
    }

    async fn poll_loop(self: Arc<Self>, ctx: FrontendContext) {
        let mut since = Utc::now()
            - chrono::Duration::from_std(self.cfg.poll_lookback)
                .unwrap_or(chrono::Duration::days(1));
        loop {
            let started = Utc::now();
            let mut ok = true;
            for repo in self.cfg.repos.values() {
                if ctx.shutdown.is_cancelled() {
                    return;
                }
                if let Err(e) = self.poll_repo(&ctx.executor, repo, since).await {
                    ok = false;
                    tracing::warn!(repo = %repo, error = %e, "polling GitHub failed; will retry");
                }
            }
            if ok {
                // Overlap a little: clocks differ and `since` is inclusive.
                since = started - chrono::Duration::minutes(2);
            }
            tokio::select! {
                _ = ctx.shutdown.cancelled() => return,
                _ = tokio::time::sleep(self.cfg.poll_interval) => {}
            }
        }
    }

    /// Render one lifecycle step of one of our requests on the issue.
    /// Write a request's feedback on its issue. `false` when the status comment
    /// could not be written (the caller retries).
    async fn render(&self, ctx: &FrontendContext, rec: &RequestRecord) -> bool {
        let Some((repo_text, issue, comment_id)) = origin_refs(rec) else {
            return true;
        };
        let Some(repo) = self.cfg.repo(&repo_text).cloned() else {
            return true;
        };
        let id = rec.request.id;
        let first_accept = {
            let mut r = lock(&self.rendered);
            let entry = r.entry(id).or_insert((0, false));
            if rec.last_seq <= entry.0 {
                return true;
            }
            entry.0 = rec.last_seq;
            let first = feedback::accepted(rec.state) && !entry.1;
            if first {
                entry.1 = true;
            }
            if r.len() > RECENT {
                // Keep it bounded: forget every other request (at worst one is rendered again).
                r.retain(|_, (seq, _)| *seq == rec.last_seq);
            }
            first
        };
        let key = if comment_id.is_none() {
            "issue".to_string()
        } else {
            format!("request-{id}")
        };
        let url = ctx.request_url(id);
        let body = feedback::render_status(
            rec,
            &key,
            url.as_deref(),
            self.cfg.output_limit,
            &self.cfg.command_prefix,
        );
        let cache_key = (repo.key(), issue, key.clone());
        let cached = lock(&self.status_comments).get(&cache_key).copied();
        let posted = match cached {
            Some(cid) => self
                .api
                .update_comment(&repo, cid, &body)
                .await
                .map(|c| c.id),
            None => {
                self.api
                    .upsert_marked_comment(
                        &repo,
                        issue,
                        &feedback::status_marker(&key),
                        &body,
                        true,
                    )
                    .await
            }
        };
        let status_written = match posted {
            Ok(cid) => {
                // Remembered while the request lives; once it ended, later
                // updates (rare) find the comment again by its marker, and the
                // cache stays bounded by the requests in flight.
                if rec.state.is_terminal() {
                    lock(&self.status_comments).remove(&cache_key);
                } else {
                    lock(&self.status_comments).insert(cache_key, cid);
                }
                true
            }
            Err(e) => {
                lock(&self.status_comments).remove(&cache_key);
                // Let a retry render this same record again.
                if let Some(entry) = lock(&self.rendered).get_mut(&id) {
                    entry.0 = 0;
                }
                tracing::warn!(request_id = %id, error = %e, "could not write the status comment");
                false
            }
        };
        if first_accept {
            self.react(&repo, issue, comment_id, github::reaction::EYES)
                .await;
        }
        if let Some(r) = feedback::end_reaction(rec.state) {
            self.react(&repo, issue, comment_id, r).await;
        }
        if rec.state != State::Received {
            if let Err(e) = self.set_state_label(&repo, issue, rec.state).await {
                tracing::warn!(request_id = %id, error = %e, "could not set labels");
            }
        }
        if rec.state == State::Succeeded && comment_id.is_none() && close_on_success(ctx, rec) {
            if let Err(e) = self.api.close_issue(&repo, issue).await {
                tracing::warn!(request_id = %id, error = %e, "could not close the issue");
            }
        }
        status_written
    }

    /// Retry a request's feedback in the background with capped exponential
    /// backoff, re-reading its latest record each time, so a result is not lost
    /// because GitHub was briefly failing. Both the retry and a final give-up are
    /// recorded in the audit log.
    fn retry_feedback(self: &Arc<Self>, ctx: &FrontendContext, id: RequestId) {
        if !lock(&self.retrying).insert(id) {
            return;
        }
        let this = self.clone();
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let _ = ctx
                .executor
                .notice(
                    Some(id),
                    NAME,
                    "feedback_retry",
                    "could not write the status comment on GitHub; retrying with backoff",
                    serde_json::Value::Null,
                )
                .await;
            let mut delay = FEEDBACK_RETRY_FIRST;
            let mut written = false;
            for _ in 0..FEEDBACK_RETRIES {
                tokio::select! {
                    _ = ctx.shutdown.cancelled() => break,
                    _ = tokio::time::sleep(delay) => {}
                }
                let Ok(rec) = ctx.executor.get(id).await else {
                    break;
                };
                let done = tokio::select! {
                    _ = ctx.shutdown.cancelled() => break,
                    ok = this.render(&ctx, &rec) => ok,
                };
                if done {
                    written = true;
                    break;
                }
                delay = (delay * 2).min(FEEDBACK_RETRY_MAX);
            }
            if !written && !ctx.shutdown.is_cancelled() {
                let _ = ctx
                    .executor
                    .notice(
                        Some(id),
                        NAME,
                        "feedback_failed",
                        format!("gave up writing the status comment on GitHub after {FEEDBACK_RETRIES} retries; the result is in the audit log and on the dashboard"),
                        serde_json::Value::Null,
                    )
                    .await;
            }
            lock(&this.retrying).remove(&id);
        });
    }

    async fn react(&self, repo: &RepoName, issue: u64, comment_id: Option<u64>, content: &str) {
        let r = match comment_id {
            Some(c) => self.api.react_comment(repo, c, content).await,
            None => self.api.react_issue(repo, issue, content).await,
        };
        if let Err(e) = r {
            tracing::warn!(repo = %repo, issue, error = %e, "could not react");
        }
    }

    async fn set_state_label(
        &self,
        repo: &RepoName,
        issue: u64,
        state: State,
    ) -> Result<(), github::ApiError> {
        let want = feedback::state_label(state);
        let have = self.api.labels(repo, issue).await?;
        for l in feedback::STATE_LABELS {
            if Some(l) != want && have.iter().any(|h| h == l) {
                self.api.remove_label(repo, issue, l).await?;
            }
        }
        if let Some(w) = want {
            if !have.iter().any(|h| h == w) {
                self.api.add_labels(repo, issue, &[w]).await?;
            }
        }
        Ok(())
    }

    async fn feedback_loop(self: &Arc<Self>, ctx: &FrontendContext) {
        let mut stream = ctx.lifecycle();
        self.ready.store(true, Ordering::SeqCst);
        loop {
            let ev = tokio::select! {
                _ = ctx.shutdown.cancelled() => return,
                ev = stream.recv() => ev,
            };
            match ev {
                Ok(lc) => {
                    if matches!(
                        lc.event.body,
                        EventBody::Notice { .. } | EventBody::Checkpoint { .. }
                    ) {
                        continue;
                    }
                    // GitHub may hang (a 30 s read timeout per call): do not
                    // let it hold up shutdown.
                    let written = tokio::select! {
                        _ = ctx.shutdown.cancelled() => return,
                        ok = self.render(ctx, &lc.record) => ok,
                    };
                    if !written {
                        self.retry_feedback(ctx, lc.record.request.id);
                    }
                }
                Err(StreamError::Lagged(n)) => {
                    tracing::warn!(
                        missed = n,
                        "fell behind the lifecycle stream; re-rendering active requests"
                    );
                    if let Ok(active) = ctx.executor.store().active_requests().await {
                        for rec in active {
                            if !self.render(ctx, &rec).await {
                                self.retry_feedback(ctx, rec.request.id);
                            }
                        }
                    }
                }
                Err(StreamError::Closed) => return,
            }
        }
    }
}

fn close_on_success(ctx: &FrontendContext, rec: &RequestRecord) -> bool {
    ctx.executor
        .loaded()
        .catalog
        .get(&rec.request.op)
        .and_then(|op| op.frontend.get(NAME))
        .and_then(|t| t.get("close_on_success"))
        .and_then(toml::Value::as_bool)
        .unwrap_or(false)
}

#[async_trait]
impl Frontend for GithubFrontend {
    fn name(&self) -> &str {
        NAME
    }

    async fn run(&self, ctx: FrontendContext) -> Result<(), FrontendError> {
        let shared = self.shared.clone();
        let poller = (!self.shared.cfg.poll_interval.is_zero())
            .then(|| tokio::spawn(shared.clone().poll_loop(ctx.clone())));
        shared.feedback_loop(&ctx).await;
        self.shared.ready.store(false, Ordering::SeqCst);
        if let Some(p) = poller {
            // It returns at its next await point after shutdown; do not wait on GitHub.
            if tokio::time::timeout(Duration::from_secs(2), async {
                while !p.is_finished() {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
            .await
            .is_err()
            {
                p.abort();
            }
        }
        Ok(())
    }

    fn is_ready(&self) -> bool {
        self.shared.ready.load(Ordering::SeqCst)
    }

    fn http_routes(&self) -> Vec<HttpRoute> {
        vec![HttpRoute::post(WEBHOOK_PATH)]
    }

    async fn handle_http(&self, ctx: &FrontendContext, req: HttpRequest) -> HttpResponse {
        if req.uri().path() != WEBHOOK_PATH {
            return simple_response(http::StatusCode::NOT_FOUND, "not found");
        }
        self.shared.handle_webhook(ctx, req).await
    }
}
