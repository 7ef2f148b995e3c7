//! `youops-soak`: a soak driver that pushes mixed traffic through every front
//! door of a running `youops serve` at a fixed rate for minutes, and checks that
//! nothing is lost and nothing grows.
//!
//! Front doors, all over loopback HTTP to the daemon:
//!
//! * **api**: `POST /api/v1/requests` with a bearer token;
//! * **slack**: signed slash commands (`POST /slack/commands`, form body,
//!   `X-Slack-Signature` v0 HMAC over `v0:{timestamp}:{body}`, a unique
//!   `trigger_id` each);
//! * **github**: signed `issue_comment` webhooks (`POST /github/webhook`,
//!   `X-Hub-Signature-256`, a unique `X-GitHub-Delivery` and comment id each);
//! * **git**: commits to the local repository the git frontend watches (each one
//!   changes one declared resource and carries a `Youops-Run:` trailer), each
//!   followed by a `POST /git/webhook` (bearer token) that triggers a reconcile.
//!
//! The three HTTP doors share one open-loop schedule (request *i* at
//! `start + i / rate`, doors in turn, latency counted from the scheduled time, as
//! in `youops-load`); git commits run on their own, slower clock.
//!
//! The driver also runs fake Slack Web API and GitHub REST API servers on
//! 127.0.0.1 (the daemon's config points at them): they answer with the real
//! envelopes (`{"ok":true,...}` for `chat.postMessage` / `chat.update`, GitHub
//! comment / reaction / label JSON) and count every feedback call.
//!
//! While it runs it samples the daemon's resident memory and CPU time every
//! second and the live store's size every 2 s: the log segments
//! (`log/*.jsonl`) and the index (`index.redb`) of the log store, not the
//! archive directory nor anything else. After the load it waits (at
//! most `--drain`) for every request to end and the feedback to settle, lists
//! every request through `GET /api/v1/requests`, and checks:
//!
//! 1. every request of the HTTP doors got a 2xx (no 4xx/5xx, no transport error);
//! 2. the store holds exactly one request per acknowledged API call, slash
//!    command and comment, and one trailer request per git commit;
//! 3. every request is terminal and `succeeded`;
//! 4. every Slack request got its result posted in its thread, and every GitHub
//!    request its 🚀 reaction;
//! 5. resident memory grew at most `--rss-growth-mib` over the second half of the
//!    load phase (mean of the last window against the mean of the window at the
//!    middle);
//! 6. with `--store-growth-pct` (`scripts/soak.sh` passes it when the daemon
//!    retains a bounded number of events), the live store grew at most that
//!    many percent over the second half of the load: the mean of the last
//!    `--store-window` against the mean of the same window around the middle
//!    (a window of whole retention periods: retention runs every minute, so the
//!    store's size is a saw-tooth of that period).
//!
//! Exit 0 when all hold, 1 when one fails, 64 on bad arguments.
//!
//! ```text
//! youops-soak --url http://127.0.0.1:8080 --pid $(pidof youops) --store DIR \
//!     --slack-listen 127.0.0.1:P1 --github-listen 127.0.0.1:P2 \
//!     --git-repo REPO --rate 100 --duration 5m [--json FILE]
//! ```
//! Secrets come from the environment: `YOUOPS_SOAK_TOKEN` (API tokens are
//! `TOKEN-0` … `TOKEN-{users-1}`), `YOUOPS_SOAK_SLACK_SECRET`,
//! `YOUOPS_SOAK_GITHUB_SECRET`, `YOUOPS_SOAK_GIT_TOKEN`. `scripts/soak.sh` writes
//! the matching daemon config.

// The daemon's allocator (see `main.rs`), so the driver costs what it would there.
#[cfg(all(feature = "jemalloc", not(target_env = "msvc")))]
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

mod procfs;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path as AxPath, State as AxState};
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use clap::Parser;
use serde_json::{json, Value};
use tokio::sync::Semaphore;

#[derive(Debug, Parser)]
#[command(
    name = "youops-soak",
    about = "Soak driver: mixed traffic through every front door of youops serve"
)]
struct Args {
    /// Daemon base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Pid of the daemon (resident memory and CPU from /proc).
    #[arg(long)]
    pid: u32,
    /// The daemon's audit store directory (the log store's `log/*.jsonl` and
    /// `index.redb` in it are sampled: the live store).
    #[arg(long)]
    store: PathBuf,
    /// The daemon's `[store] archive_dir`, when it runs with `retain_events`:
    /// requests archived out of the store still count as stored (read from
    /// the archive files); the archive's size is reported apart from the
    /// live store's.
    #[arg(long, value_name = "DIR")]
    archive: Option<PathBuf>,
    /// Where the fake Slack Web API listens (the config's `api_base_url` is
    /// `http://ADDR/api/`).
    #[arg(long)]
    slack_listen: String,
    /// Where the fake GitHub REST API listens (the config's `api_base_url`).
    #[arg(long)]
    github_listen: String,
    /// The local git repository the git frontend watches (branch `main`,
    /// desired state in `state/`).
    #[arg(long)]
    git_repo: PathBuf,
    /// Total offered load of the HTTP doors (api, slack, github in turn), req/s.
    #[arg(long, default_value_t = 100.0)]
    rate: f64,
    /// Length of the load phase (e.g. 5m, 60s).
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    duration: Duration,
    /// One git commit (+ webhook) every this long (0: no git traffic).
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    git_every: Duration,
    /// The HTTP doors that share `--rate`, in turn (a subset isolates one
    /// frontend's cost).
    #[arg(long, value_delimiter = ',', default_value = "api,slack,github")]
    doors: Vec<String>,
    /// Longest wait after the load for requests to end and feedback to settle.
    #[arg(long, default_value = "90s", value_parser = parse_duration)]
    drain: Duration,
    /// Principals `soak0` … (API tokens, Slack users, GitHub logins rotate over them).
    #[arg(long, default_value_t = 8)]
    users: usize,
    /// Slack channels the slash commands rotate over. The Slack frontend posts
    /// about 4 messages per command (status, 2 updates, result) at most 1 per
    /// second per channel (`max_messages_per_second_per_channel`, as Slack
    /// allows), so one channel sustains about 0.25 commands/s with full feedback.
    #[arg(long, default_value_t = 256)]
    channels: usize,
    /// Command comments per GitHub issue before the next issue number is used.
    #[arg(long, default_value_t = 5)]
    comments_per_issue: u64,
    /// Every Nth request of a door runs `soak.sleep seconds=1` (0: never).
    #[arg(long, default_value_t = 20)]
    sleep_every: u64,
    /// Most HTTP requests in flight.
    #[arg(long, default_value_t = 256)]
    concurrency: usize,
    /// Per-request timeout.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    timeout: Duration,
    /// Bound on resident-memory growth over the second half of the load, MiB.
    #[arg(long, default_value_t = 8.0)]
    rss_growth_mib: f64,
    /// Bound on the live store's growth over the second half of the load, in
    /// percent (no check without it: a store that keeps everything grows).
    #[arg(long)]
    store_growth_pct: Option<f64>,
    /// The window whose mean store size is compared (at the middle, at the end).
    #[arg(long, default_value = "120s", value_parser = parse_duration)]
    store_window: Duration,
    /// API bearer token prefix (token of principal soakN is `PREFIX-N`).
    #[arg(long, env = "YOUOPS_SOAK_TOKEN", hide_env_values = true)]
    token: String,
    /// Slack signing secret.
    #[arg(long, env = "YOUOPS_SOAK_SLACK_SECRET", hide_env_values = true)]
    slack_secret: String,
    /// GitHub webhook secret.
    #[arg(long, env = "YOUOPS_SOAK_GITHUB_SECRET", hide_env_values = true)]
    github_secret: String,
    /// Bearer token of `POST /git/webhook`.
    #[arg(long, env = "YOUOPS_SOAK_GIT_TOKEN", hide_env_values = true)]
    git_token: String,
    /// Also write the whole report as JSON to this file.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
}

/// The GitHub repository the config manages.
const GH_REPO: &str = "acme/soak";
/// Resources declared in `state/services.toml`.
const SERVICES: usize = 20;
/// `git` CLI calls are bounded by this.
const GIT_TIMEOUT: Duration = Duration::from_secs(20);

fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .map(|i| s.split_at(i))
        .unwrap_or((s, "s"));
    let n: f64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration (e.g. 5m, 30s, 500ms)"))?;
    let secs = match unit {
        "ms" => n / 1e3,
        "s" | "" => n,
        "m" => n * 60.0,
        _ => return Err(format!("`{s}`: unit must be ms, s or m")),
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("`{s}` is not a duration"));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

// --- signing, encoding ---------------------------------------------------------

/// HMAC-SHA256 (RFC 2104) over the concatenation of `parts`. Written out here
/// (sha2 is already a dependency) so that the driver signs from the documented
/// wire format, not with the frontends' own helpers.
fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(k.map(|b| b ^ 0x36));
    for p in parts {
        inner.update(p);
    }
    let mut outer = Sha256::new();
    outer.update(k.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}

/// `application/x-www-form-urlencoded` encoding of one value.
fn form_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fn form(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", form_encode(k), form_encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// Request ids (26-character ULIDs in Crockford base32) mentioned in `text`.
fn ulids(text: &str) -> Vec<String> {
    let is_b32 = |c: u8| c.is_ascii_digit() || (c.is_ascii_uppercase() && !b"ILOU".contains(&c));
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if is_b32(bytes[i]) && (i == 0 || !bytes[i - 1].is_ascii_alphanumeric()) {
            let mut j = i;
            while j < bytes.len() && is_b32(bytes[j]) {
                j += 1;
            }
            if j - i == 26 && (j == bytes.len() || !bytes[j].is_ascii_alphanumeric()) {
                out.push(text[i..j].to_string());
            }
            i = j.max(i + 1);
        } else {
            i += 1;
        }
    }
    out
}

// --- fake Slack Web API -------------------------------------------------------

#[derive(Debug, Default)]
struct SlackFake {
    ts: AtomicU64,
    /// Calls by method (`chat.postMessage`, `chat.postMessage (thread)`, …).
    calls: Mutex<BTreeMap<String, u64>>,
    /// Requests whose `succeeded` result was posted in a thread.
    results: Mutex<HashSet<String>>,
    /// Requests mentioned in any call.
    mentioned: Mutex<HashSet<String>>,
}

async fn slack_api(
    AxState(st): AxState<Arc<SlackFake>>,
    AxPath(method): AxPath<String>,
    body: Bytes,
) -> Response {
    let v: Value = serde_json::from_slice(&body).unwrap_or_else(|_| {
        // Form-encoded calls: keep the raw text, enough to find ids in it.
        Value::String(String::from_utf8_lossy(&body).into_owned())
    });
    let text = v.to_string();
    let in_thread = v.get("thread_ts").is_some();
    let key = if in_thread {
        format!("{method} (thread)")
    } else {
        method.clone()
    };
    *lock(&st.calls).entry(key).or_default() += 1;
    let ids = ulids(&text);
    if !ids.is_empty() {
        lock(&st.mentioned).extend(ids.iter().cloned());
        if method == "chat.postMessage" && in_thread && text.contains("`succeeded`") {
            lock(&st.results).extend(ids);
        }
    }
    let channel = v["channel"].as_str().unwrap_or("C0").to_string();
    let ts = format!("1700000000.{:06}", st.ts.fetch_add(1, Ordering::Relaxed));
    let answer = match method.as_str() {
        "chat.postMessage" => {
            let mut message = json!({
                "type": "message", "subtype": "bot_message", "text": v["text"], "ts": ts,
                "user": "U0BOT", "bot_id": "B0BOT", "app_id": "A0SOAK", "team": "T0SOAK"
            });
            if let Some(t) = v.get("thread_ts") {
                message["thread_ts"] = t.clone();
            }
            json!({ "ok": true, "channel": channel, "ts": ts, "message": message })
        }
        "chat.update" => json!({
            "ok": true, "channel": channel, "ts": v["ts"], "text": v["text"],
            "message": { "text": v["text"], "user": "U0BOT", "bot_id": "B0BOT" }
        }),
        "chat.postEphemeral" => json!({ "ok": true, "message_ts": ts }),
        _ => json!({ "ok": false, "error": "unknown_method" }),
    };
    (
        StatusCode::OK,
        [("content-type", "application/json; charset=utf-8")],
        answer.to_string(),
    )
        .into_response()
}

async fn slack_respond(AxState(st): AxState<Arc<SlackFake>>, body: Bytes) -> Response {
    *lock(&st.calls).entry("response_url".into()).or_default() += 1;
    let text = String::from_utf8_lossy(&body);
    lock(&st.mentioned).extend(ulids(&text));
    (StatusCode::OK, [("content-type", "text/html")], "ok").into_response()
}

// --- fake GitHub REST API -----------------------------------------------------

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
struct GithubFake {
    state: Mutex<GithubState>,
    base: String,
    /// Calls by `METHOD kind` (`POST comments`, `POST reaction rocket`, …).
    calls: Mutex<BTreeMap<String, u64>>,
    /// Comment ids (the driver's command comments) that got a 🚀.
    rockets: Mutex<HashSet<u64>>,
}

fn gh_json(status: StatusCode, v: Value) -> Response {
    (
        status,
        [("content-type", "application/json; charset=utf-8")],
        v.to_string(),
    )
        .into_response()
}

fn gh_now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

impl GithubFake {
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
        let not_found = || {
            gh_json(
                StatusCode::NOT_FOUND,
                json!({ "message": "Not Found", "documentation_url": "https://docs.github.com/rest" }),
            )
        };
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
        match (m, &segs[4..]) {
            ("POST", ["comments", id, "reactions"]) => {
                let content = body["content"].as_str().unwrap_or("").to_string();
                self.count(format!("POST reaction {content}"));
                if content == "rocket" {
                    lock(&self.rockets).insert(id.parse().unwrap_or(0));
                }
                gh_json(
                    StatusCode::CREATED,
                    json!({ "id": 1, "node_id": "REA_soak", "content": content,
                            "user": { "login": "youops[bot]", "id": 1, "type": "Bot" },
                            "created_at": gh_now() }),
                )
            }
            ("POST", [_, "reactions"]) => {
                let content = body["content"].as_str().unwrap_or("").to_string();
                self.count(format!("POST reaction {content} (issue)"));
                gh_json(
                    StatusCode::CREATED,
                    json!({ "id": 1, "node_id": "REA_soak", "content": content,
                            "user": { "login": "youops[bot]", "id": 1, "type": "Bot" },
                            "created_at": gh_now() }),
                )
            }
            ("PATCH", ["comments", id]) => {
                self.count("PATCH comment".into());
                let id: u64 = id.parse().unwrap_or(0);
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
            ("GET", [n, "comments"]) => {
                self.count("GET comments".into());
                let n: u64 = n.parse().unwrap_or(0);
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
            ("POST", [n, "comments"]) => {
                self.count("POST comment".into());
                let n: u64 = n.parse().unwrap_or(0);
                let text = body["body"].as_str().unwrap_or("").to_string();
                let mut st = lock(&self.state);
                st.next_id += 1;
                let id = st.next_id;
                st.comments.insert(id, (n, text.clone()));
                st.by_issue.entry(n).or_default().push(id);
                drop(st);
                gh_json(StatusCode::CREATED, self.comment_json(id, n, &text))
            }
            ("GET", [n, "labels"]) => {
                self.count("GET labels".into());
                let n: u64 = n.parse().unwrap_or(0);
                let st = lock(&self.state);
                let names = st.labels.get(&n).cloned().unwrap_or_default();
                gh_json(StatusCode::OK, Self::labels_json(&names))
            }
            ("POST", [n, "labels"]) => {
                self.count("POST labels".into());
                let n: u64 = n.parse().unwrap_or(0);
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
            ("DELETE", [n, "labels", name]) => {
                self.count("DELETE label".into());
                let n: u64 = n.parse().unwrap_or(0);
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
}

fn percent_decode(s: &str) -> String {
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

// --- the load ------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Door {
    Api,
    Slack,
    Github,
    Git,
}

impl Door {
    const ALL: [Door; 4] = [Door::Api, Door::Slack, Door::Github, Door::Git];
    const HTTP: [Door; 3] = [Door::Api, Door::Slack, Door::Github];

    fn name(self) -> &'static str {
        match self {
            Door::Api => "api",
            Door::Slack => "slack",
            Door::Github => "github",
            Door::Git => "git",
        }
    }
}

/// What one door's sender records.
#[derive(Debug, Default)]
struct DoorRec {
    sent: AtomicU64,
    /// Latency (µs from the scheduled send) of every 2xx answer.
    ok_lat: Mutex<Vec<u32>>,
    /// Status → count, all answers.
    statuses: Mutex<BTreeMap<u16, u64>>,
    /// No answer (connect error, timeout, …).
    errors: AtomicU64,
    first_problem: Mutex<Option<String>>,
    /// Completion of the last answer, µs after the start.
    last_done_us: AtomicU64,
}

impl DoorRec {
    fn problem(&self, p: String) {
        let mut first = lock(&self.first_problem);
        if first.is_none() {
            *first = Some(p);
        }
    }

    fn record(&self, start: Instant, scheduled: Instant, res: Result<(u16, String), String>) {
        let done = Instant::now();
        let since = u64::try_from(done.saturating_duration_since(start).as_micros()).unwrap_or(0);
        self.last_done_us.fetch_max(since, Ordering::Relaxed);
        match res {
            Ok((status, text)) => {
                *lock(&self.statuses).entry(status).or_default() += 1;
                if (200..300).contains(&status) {
                    let lat = done.saturating_duration_since(scheduled).as_micros();
                    lock(&self.ok_lat).push(u32::try_from(lat).unwrap_or(u32::MAX));
                } else {
                    let text: String = text.chars().take(300).collect();
                    self.problem(format!("HTTP {status}: {text}"));
                }
            }
            Err(e) => {
                self.errors.fetch_add(1, Ordering::Relaxed);
                self.problem(e);
            }
        }
    }
}

/// Everything a sender needs to build its requests.
#[derive(Debug)]
struct Ctx {
    base: String,
    slack_base: String,
    args: Args,
    run: String,
    /// Requests read from the archive files so far.
    archived: Mutex<Archived>,
}

impl Ctx {
    /// (op, args as `name=value` pairs) for request `j` of a door.
    fn op_for(&self, door: Door, j: u64) -> (&'static str, Vec<(String, String)>) {
        let tag = format!("{}{j}", &door.name()[..1]);
        if self.args.sleep_every > 0 && j % self.args.sleep_every == self.args.sleep_every - 1 {
            ("soak.sleep", vec![("seconds".into(), "1".into())])
        } else if j % 2 == 1 {
            ("soak.echo", vec![("msg".into(), tag)])
        } else {
            ("soak.noop", Vec::new())
        }
    }

    fn command_text(&self, door: Door, j: u64) -> String {
        let (op, args) = self.op_for(door, j);
        let mut s = op.to_string();
        for (k, v) in args {
            s.push_str(&format!(" {k}={v}"));
        }
        s
    }

    fn user(&self, j: u64) -> usize {
        (j % self.args.users.max(1) as u64) as usize
    }

    fn request(&self, client: &reqwest::Client, door: Door, j: u64) -> reqwest::RequestBuilder {
        match door {
            Door::Api => {
                let (op, args) = self.op_for(door, j);
                let args: serde_json::Map<String, Value> = args
                    .into_iter()
                    .map(|(k, v)| {
                        let v = v.parse::<i64>().map_or(Value::String(v), Value::from);
                        (k, v)
                    })
                    .collect();
                client
                    .post(format!("{}/api/v1/requests", self.base))
                    .bearer_auth(format!("{}-{}", self.args.token, self.user(j)))
                    .json(&json!({ "op": op, "args": args }))
            }
            Door::Slack => {
                let u = self.user(j);
                let channel = format!("CSOAK{:03}", j % self.args.channels.max(1) as u64);
                let trigger = format!("{j}.{}.soak", self.run);
                let body = form(&[
                    ("token", "soak-verification-token"),
                    ("team_id", "T0SOAK"),
                    ("team_domain", "soak"),
                    ("channel_id", &channel),
                    ("channel_name", "ops"),
                    ("user_id", &format!("USOAK{u}")),
                    ("user_name", &format!("soak{u}")),
                    ("command", "/ops"),
                    ("text", &self.command_text(door, j)),
                    ("api_app_id", "A0SOAK"),
                    ("is_enterprise_install", "false"),
                    (
                        "response_url",
                        &format!("{}/respond/{trigger}", self.slack_base),
                    ),
                    ("trigger_id", &trigger),
                ]);
                let ts = chrono::Utc::now().timestamp().to_string();
                let mac = hmac_sha256(
                    self.args.slack_secret.as_bytes(),
                    &[b"v0:", ts.as_bytes(), b":", body.as_bytes()],
                );
                client
                    .post(format!("{}/slack/commands", self.base))
                    .header("content-type", "application/x-www-form-urlencoded")
                    .header("user-agent", "Slackbot 1.0 (+https://api.slack.com/robots)")
                    .header("x-slack-request-timestamp", ts)
                    .header("x-slack-signature", format!("v0={}", hex::encode(mac)))
                    .body(body)
            }
            Door::Github => {
                let issue = 1 + j / self.args.comments_per_issue.max(1);
                let comment_id = 50_000_000 + j;
                let login = format!("soak-user-{}", self.user(j));
                let t = gh_now();
                let user = json!({ "login": login, "id": 1000 + self.user(j), "type": "User" });
                let payload = json!({
                    "action": "created",
                    "issue": {
                        "number": issue, "title": "soak requests", "body": "", "user": user,
                        "labels": [], "state": "open",
                        "html_url": format!("https://github.com/{GH_REPO}/issues/{issue}"),
                        "created_at": t, "updated_at": t
                    },
                    "comment": {
                        "id": comment_id,
                        "body": format!("/ops {}", self.command_text(door, j)),
                        "user": user,
                        "html_url": format!("https://github.com/{GH_REPO}/issues/{issue}#issuecomment-{comment_id}"),
                        "issue_url": format!("https://api.github.com/repos/{GH_REPO}/issues/{issue}"),
                        "created_at": t, "updated_at": t
                    },
                    "repository": { "full_name": GH_REPO, "name": "soak", "owner": { "login": "acme" } },
                    "sender": user
                });
                let body = payload.to_string();
                let mac = hmac_sha256(self.args.github_secret.as_bytes(), &[body.as_bytes()]);
                client
                    .post(format!("{}/github/webhook", self.base))
                    .header("content-type", "application/json")
                    .header("user-agent", "GitHub-Hookshot/soak")
                    .header("x-github-event", "issue_comment")
                    .header("x-github-delivery", format!("{}-{j}", self.run))
                    .header(
                        "x-hub-signature-256",
                        format!("sha256={}", hex::encode(mac)),
                    )
                    .body(body)
            }
            Door::Git => client
                .post(format!("{}/git/webhook", self.base))
                .bearer_auth(&self.args.git_token),
        }
    }
}

async fn send(rb: reqwest::RequestBuilder) -> Result<(u16, String), String> {
    match rb.send().await {
        Ok(r) => {
            let status = r.status().as_u16();
            let text = r.text().await.map_err(|e| format!("{e:#}"))?;
            Ok((status, text))
        }
        Err(e) => Err(format!("{e:#}")),
    }
}

// --- git -----------------------------------------------------------------------

fn git(repo: &Path, args: &[&str]) -> Result<(), String> {
    let mut child = std::process::Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(["-c", "gc.auto=0", "-c", "commit.gpgsign=false"])
        .args(args)
        .env("GIT_AUTHOR_NAME", "Soak Bot")
        .env("GIT_AUTHOR_EMAIL", "soak-git@example.invalid")
        .env("GIT_COMMITTER_NAME", "Soak Bot")
        .env("GIT_COMMITTER_EMAIL", "soak-git@example.invalid")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("git {}: {e}", args.join(" ")))?;
    let until = Instant::now() + GIT_TIMEOUT;
    loop {
        match child.try_wait() {
            Ok(Some(st)) if st.success() => return Ok(()),
            Ok(Some(st)) => {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    use std::io::Read as _;
                    let _ = e.read_to_string(&mut err);
                }
                return Err(format!("git {}: {st}: {}", args.join(" "), err.trim()));
            }
            Ok(None) if Instant::now() < until => std::thread::sleep(Duration::from_millis(5)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("git {}: timed out", args.join(" ")));
            }
            Err(e) => return Err(format!("git {}: {e}", args.join(" "))),
        }
    }
}

/// The desired-state file after commit `n` (resource `n % SERVICES` gets
/// version `n`; the others keep theirs).
fn services_toml(versions: &[u64]) -> String {
    let mut s = String::from("# Written by youops-soak.\n");
    for (i, v) in versions.iter().enumerate() {
        s.push_str(&format!(
            "\n[[resource]]\nkind = \"svc\"\nname = \"svc{i:02}\"\nversion = \"v{v}\"\n"
        ));
    }
    s
}

/// One commit: bump one resource, add a trailer command.
fn git_commit(repo: &Path, versions: &mut [u64], n: u64) -> Result<(), String> {
    let i = (n as usize) % versions.len();
    versions[i] = n;
    std::fs::write(repo.join("state/services.toml"), services_toml(versions))
        .map_err(|e| format!("writing state/services.toml: {e}"))?;
    git(repo, &["add", "state/services.toml"])?;
    let msg = format!("soak: svc{i:02} to v{n}\n\nYouops-Run: soak.echo msg=git{n}\n");
    git(repo, &["commit", "-q", "-m", &msg])
}

// --- sampling ------------------------------------------------------------------

/// The live log store under `store`: bytes (file lengths) of its log segments
/// (`log/*.jsonl`: sealed and open) and of its index (`index.redb`). The lock
/// file, and any archive directory (even one inside `store`), are not counted.
fn live_store_bytes(store: &Path) -> u64 {
    let mut total = 0;
    if let Ok(rd) = std::fs::read_dir(store.join("log")) {
        for e in rd.flatten() {
            if e.file_name().to_string_lossy().ends_with(".jsonl") {
                total += e
                    .metadata()
                    .map_or(0, |m| if m.is_file() { m.len() } else { 0 });
            }
        }
    }
    total + std::fs::metadata(store.join("index.redb")).map_or(0, |m| m.len())
}

/// Bytes on disk (allocated blocks) under `dir`.
fn disk_bytes(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt as _;
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let Ok(md) = e.metadata() else { continue };
            if md.is_dir() {
                stack.push(e.path());
            } else {
                total += md.blocks() * 512;
            }
        }
    }
    total
}

#[derive(Debug, Default)]
struct Samples {
    /// (seconds since the start, RSS KiB), every second.
    rss: Vec<(f64, u64)>,
    /// (seconds since the start, cumulative CPU ticks), every second.
    cpu: Vec<(f64, u64)>,
    /// (seconds since the start, live store bytes: log segments + index), every 2 s.
    store: Vec<(f64, u64)>,
    /// (seconds since the start, open file descriptors), every 5 s.
    fds: Vec<(f64, u64)>,
}

/// Open file descriptors of a process.
fn count_fds(pid: u32) -> Option<u64> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64)
}

// --- statistics ----------------------------------------------------------------

/// [`procfs::percentile`] of µs samples, in ms.
fn percentile(sorted: &[u32], p: f64) -> Option<f64> {
    procfs::percentile(sorted, p).map(|us| f64::from(us) / 1000.0)
}

/// Least-squares slope of (t, y) in y-units per minute.
fn slope_per_min(points: &[(f64, f64)]) -> Option<f64> {
    if points.len() < 3 {
        return None;
    }
    let n = points.len() as f64;
    let mt = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let num: f64 = points.iter().map(|p| (p.0 - mt) * (p.1 - my)).sum();
    let den: f64 = points.iter().map(|p| (p.0 - mt).powi(2)).sum();
    (den > 0.0).then(|| num / den * 60.0)
}

fn mean_in(points: &[(f64, u64)], from: f64, to: f64) -> Option<f64> {
    let v: Vec<f64> = points
        .iter()
        .filter(|p| p.0 >= from && p.0 <= to)
        .map(|p| p.1 as f64)
        .collect();
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

fn mib(kib: f64) -> f64 {
    kib / 1024.0
}

fn f2(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.2}"))
}

// --- the census ----------------------------------------------------------------

/// Every request in the store, by frontend: (op, state) → count, and the
/// end-to-end durations (created → last update, ms) of terminal ones.
#[derive(Debug, Default)]
struct Census {
    by: BTreeMap<String, BTreeMap<(String, String), u64>>,
    e2e_ms: BTreeMap<String, Vec<u32>>,
    total: u64,
    /// How many of `total` were read from archive files.
    archived: u64,
}

async fn census(client: &reqwest::Client, ctx: &Ctx) -> Result<Census, String> {
    let mut c = Census::default();
    let mut live = HashSet::new();
    let mut before: Option<String> = None;
    let token = format!("{}-0", ctx.args.token);
    loop {
        let mut url = format!("{}/api/v1/requests?limit=500", ctx.base);
        if let Some(b) = &before {
            url.push_str(&format!("&before={b}"));
        }
        let resp = client
            .get(&url)
            .bearer_auth(&token)
            .timeout(Duration::from_secs(60))
            .send()
            .await
            .map_err(|e| format!("GET /api/v1/requests: {e:#}"))?;
        if !resp.status().is_success() {
            return Err(format!("GET /api/v1/requests: HTTP {}", resp.status()));
        }
        let v: Value = resp
            .json()
            .await
            .map_err(|e| format!("GET /api/v1/requests: {e:#}"))?;
        for r in v["requests"].as_array().into_iter().flatten() {
            if let Some(id) = r["request"]["id"].as_str() {
                live.insert(id.to_string());
            }
            let fe = r["request"]["origin"]["frontend"]
                .as_str()
                .unwrap_or("?")
                .to_string();
            let op = r["request"]["op"].as_str().unwrap_or("?").to_string();
            let state = r["state"].as_str().unwrap_or("?").to_string();
            let created = r["request"]["created_at"]
                .as_str()
                .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok());
            let updated = r["updated_at"]
                .as_str()
                .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok());
            if let (Some(a), Some(b)) = (created, updated) {
                let ms = (b - a).num_microseconds().unwrap_or(0).max(0) as f64 / 1000.0;
                c.e2e_ms
                    .entry(fe.clone())
                    .or_default()
                    .push((ms * 1000.0) as u32);
            }
            *c.by.entry(fe).or_default().entry((op, state)).or_default() += 1;
            c.total += 1;
        }
        match v["next_before"].as_str() {
            Some(b) => before = Some(b.to_string()),
            None => break,
        }
    }
    // Requests the daemon archived out of the store (read after the live pages:
    // a record is removed only after its archive file is renamed into place).
    let archived = ctx.archived_requests()?;
    for (id, r) in &archived.reqs {
        if live.contains(id) {
            continue;
        }
        if let (Some(a), Some(b)) = (r.created, r.updated) {
            let us = (b - a).num_microseconds().unwrap_or(0).max(0);
            c.e2e_ms
                .entry(r.frontend.clone())
                .or_default()
                .push(us as u32);
        }
        *c.by
            .entry(r.frontend.clone())
            .or_default()
            .entry((r.op.clone(), r.state.clone()))
            .or_default() += 1;
        c.total += 1;
        c.archived += 1;
    }
    for v in c.e2e_ms.values_mut() {
        v.sort_unstable();
    }
    Ok(c)
}

/// Requests not yet in a terminal state.
async fn unfinished(client: &reqwest::Client, ctx: &Ctx) -> Result<usize, String> {
    let url = format!(
        "{}/api/v1/requests?state=received,pending_approval,approved,running&limit=500",
        ctx.base
    );
    let v: Value = client
        .get(&url)
        .bearer_auth(format!("{}-0", ctx.args.token))
        .send()
        .await
        .map_err(|e| format!("{e:#}"))?
        .json()
        .await
        .map_err(|e| format!("{e:#}"))?;
    Ok(v["requests"].as_array().map_or(0, Vec::len))
}

/// Git trailer requests (`soak.echo` from the git frontend) in the store.
async fn git_trailers(client: &reqwest::Client, ctx: &Ctx) -> Result<usize, String> {
    let mut ids = HashSet::new();
    let mut before: Option<String> = None;
    loop {
        let mut url = format!(
            "{}/api/v1/requests?frontend=git&op=soak.echo&limit=500",
            ctx.base
        );
        if let Some(b) = &before {
            url.push_str(&format!("&before={b}"));
        }
        let v: Value = client
            .get(&url)
            .bearer_auth(format!("{}-0", ctx.args.token))
            .send()
            .await
            .map_err(|e| format!("{e:#}"))?
            .json()
            .await
            .map_err(|e| format!("{e:#}"))?;
        for r in v["requests"].as_array().into_iter().flatten() {
            if let Some(id) = r["request"]["id"].as_str() {
                ids.insert(id.to_string());
            }
        }
        if v["next_before"].as_str().is_none() {
            break;
        }
        before = v["next_before"].as_str().map(str::to_string);
    }
    let archived = ctx.archived_requests()?;
    ids.extend(
        archived
            .reqs
            .iter()
            .filter(|(_, r)| r.frontend == "git" && r.op == "soak.echo")
            .map(|(id, _)| id.clone()),
    );
    Ok(ids.len())
}

/// A request as far as the archive files tell it.
#[derive(Debug, Default, Clone)]
struct ArchivedReq {
    frontend: String,
    op: String,
    /// The last state a transition moved it to (`received` before any).
    state: String,
    created: Option<chrono::DateTime<chrono::Utc>>,
    /// Time of its last transition.
    updated: Option<chrono::DateTime<chrono::Utc>>,
}

/// The requests of every archive file read so far. Archive files never change
/// once renamed into place, so each is read once.
#[derive(Debug, Default)]
struct Archived {
    files: HashSet<PathBuf>,
    reqs: HashMap<String, ArchivedReq>,
}

impl Archived {
    /// Read the archive files not read yet, in chain order.
    fn refresh(&mut self, dir: &Path) -> Result<(), String> {
        use youops_core::model::{AuditEvent, EventBody};
        let files = youops_core::audit::archive_files(dir)
            .map_err(|e| format!("cannot list {}: {e}", dir.display()))?;
        for f in files {
            if self.files.contains(&f) {
                continue;
            }
            let text = std::fs::read_to_string(&f)
                .map_err(|e| format!("cannot read {}: {e}", f.display()))?;
            for (i, line) in text.lines().enumerate() {
                let ev: AuditEvent = serde_json::from_str(line)
                    .map_err(|e| format!("{}:{}: {e}", f.display(), i + 1))?;
                let Some(id) = ev.request_id else { continue };
                let r = self.reqs.entry(id.to_string()).or_default();
                match ev.body {
                    EventBody::Received { request } => {
                        r.frontend = request.origin.frontend.clone();
                        r.op = request.op.clone();
                        r.created = Some(request.created_at);
                        if r.state.is_empty() {
                            r.state = "received".into();
                        }
                    }
                    EventBody::Transition(t) => {
                        r.state = t.to.as_str().to_string();
                        r.updated = Some(ev.time);
                    }
                    _ => {}
                }
            }
            self.files.insert(f);
        }
        Ok(())
    }
}

impl Ctx {
    /// The archived requests, after reading any new archive files (empty
    /// without `--archive`).
    fn archived_requests(&self) -> Result<MutexGuard<'_, Archived>, String> {
        let mut a = lock(&self.archived);
        if let Some(dir) = &self.args.archive {
            a.refresh(dir)?;
        }
        Ok(a)
    }
}

// --- main ----------------------------------------------------------------------

fn main() -> ExitCode {
    let args = Args::parse();
    if !(args.rate > 0.0 && args.rate.is_finite()) || args.users == 0 {
        eprintln!("youops-soak: --rate must be positive and --users at least 1");
        return ExitCode::from(64);
    }
    match run(args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("youops-soak: {e}");
            ExitCode::from(70)
        }
    }
}

fn run(args: Args) -> Result<bool, String> {
    // The fakes get their own runtime (one worker), so that their work does not
    // delay the senders' timing.
    let fake_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("fakes")
        .enable_all()
        .build()
        .map_err(|e| format!("fake runtime: {e}"))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("load")
        .enable_all()
        .build()
        .map_err(|e| format!("load runtime: {e}"))?;

    let slack = Arc::new(SlackFake {
        ts: AtomicU64::new(100),
        ..Default::default()
    });
    let github = Arc::new(GithubFake {
        base: format!("http://{}", args.github_listen),
        state: Mutex::new(GithubState {
            next_id: 90_000_000,
            ..Default::default()
        }),
        ..Default::default()
    });
    {
        let slack_app = Router::new()
            .route("/api/{method}", post(slack_api))
            .route("/respond/{id}", post(slack_respond))
            .with_state(slack.clone());
        let gh_app = Router::new()
            .fallback(github_api)
            .with_state(github.clone());
        let (sl, gl) = fake_rt.block_on(async {
            let sl = tokio::net::TcpListener::bind(&args.slack_listen).await;
            let gl = tokio::net::TcpListener::bind(&args.github_listen).await;
            (sl, gl)
        });
        let sl = sl.map_err(|e| format!("fake Slack on {}: {e}", args.slack_listen))?;
        let gl = gl.map_err(|e| format!("fake GitHub on {}: {e}", args.github_listen))?;
        fake_rt.spawn(async move { axum::serve(sl, slack_app).await });
        fake_rt.spawn(async move { axum::serve(gl, gh_app).await });
    }

    let client = rt
        .block_on(async {
            reqwest::Client::builder()
                .pool_max_idle_per_host(args.concurrency)
                .pool_idle_timeout(Duration::from_secs(90))
                .tcp_nodelay(true)
                .timeout(args.timeout)
                .build()
        })
        .map_err(|e| format!("HTTP client: {e}"))?;
    let run_tag = format!(
        "{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis())
    );
    let ctx = Arc::new(Ctx {
        base: args.url.trim_end_matches('/').to_string(),
        slack_base: format!("http://{}", args.slack_listen),
        run: run_tag,
        args,
        archived: Mutex::default(),
    });
    let args = &ctx.args;

    let recs: Arc<BTreeMap<Door, DoorRec>> =
        Arc::new(Door::ALL.iter().map(|d| (*d, DoorRec::default())).collect());
    let start = Instant::now() + Duration::from_millis(50);
    let load_end = start + args.duration;

    // Sampler: RSS and CPU every second, the live store every 2 s, until stopped.
    let samples = Arc::new(Mutex::new(Samples::default()));
    let sampling = Arc::new(AtomicBool::new(true));
    // Set by the sampler when the daemon's RSS can no longer be read: it exited
    // (a zombie until soak.sh reaps it has no VmRSS) or crashed.
    let daemon_gone = Arc::new(AtomicBool::new(false));
    let sampler = {
        let samples = samples.clone();
        let sampling = sampling.clone();
        let gone = daemon_gone.clone();
        let pid = args.pid;
        let store = args.store.clone();
        std::thread::spawn(move || {
            let mut k: u64 = 0;
            let mut next = start;
            while sampling.load(Ordering::Relaxed) {
                let now = Instant::now();
                if next > now {
                    std::thread::sleep(next - now);
                }
                let t = Instant::now()
                    .saturating_duration_since(start)
                    .as_secs_f64();
                let rss = procfs::read_rss_kib(pid);
                if rss.is_none() {
                    gone.store(true, Ordering::Relaxed);
                }
                let cpu = procfs::read_cpu_ticks(pid);
                let disk = k.is_multiple_of(2).then(|| live_store_bytes(&store));
                let fds = if k.is_multiple_of(5) {
                    count_fds(pid)
                } else {
                    None
                };
                let mut s = lock(&samples);
                if let Some(r) = rss {
                    s.rss.push((t, r));
                }
                if let Some(c) = cpu {
                    s.cpu.push((t, c));
                }
                if let Some(d) = disk {
                    s.store.push((t, d));
                }
                if let Some(f) = fds {
                    s.fds.push((t, f));
                }
                drop(s);
                k += 1;
                next += Duration::from_secs(1);
            }
        })
    };

    // Git committer: its own thread and clock.
    let git_thread = {
        let ctx = ctx.clone();
        let recs = recs.clone();
        let client = client.clone();
        let handle = rt.handle().clone();
        std::thread::spawn(move || {
            let rec = &recs[&Door::Git];
            let mut versions = vec![0u64; SERVICES];
            let mut commits = 0u64;
            let mut commit_ms: Vec<u32> = Vec::new();
            let mut n = 1u64;
            while !ctx.args.git_every.is_zero() {
                let due = start + ctx.args.git_every.mul_f64(n as f64);
                if due >= load_end {
                    break;
                }
                let now = Instant::now();
                if due > now {
                    std::thread::sleep(due - now);
                }
                let t0 = Instant::now();
                match git_commit(&ctx.args.git_repo, &mut versions, n) {
                    Ok(()) => {
                        commits += 1;
                        commit_ms.push(t0.elapsed().as_micros() as u32);
                    }
                    Err(e) => {
                        rec.errors.fetch_add(1, Ordering::Relaxed);
                        rec.problem(e);
                        n += 1;
                        continue;
                    }
                }
                rec.sent.fetch_add(1, Ordering::Relaxed);
                let rb = ctx.request(&client, Door::Git, n);
                let res = handle.block_on(send(rb));
                rec.record(start, t0, res);
                n += 1;
            }
            commit_ms.sort_unstable();
            (commits, commit_ms)
        })
    };

    // Pacer for the HTTP doors.
    let doors: Vec<Door> = Door::HTTP
        .into_iter()
        .filter(|d| args.doors.iter().any(|n| n == d.name()))
        .collect();
    if doors.is_empty() || doors.len() != args.doors.len() {
        return Err(format!(
            "--doors: {:?} must be a non-empty list of api, slack, github",
            args.doors
        ));
    }
    let sem = Arc::new(Semaphore::new(args.concurrency.max(1)));
    let total = (args.duration.as_secs_f64() * args.rate).round() as u64;
    let rate = args.rate;
    let handle = rt.handle().clone();
    let mut tasks = Vec::with_capacity(total as usize);
    let mut max_lag = Duration::ZERO;
    eprintln!(
        "youops-soak: {} req/s over {} for {:?}, a git commit every {:?}",
        rate,
        args.doors.join(", "),
        args.duration,
        args.git_every
    );
    let died = |phase: &str| {
        format!(
            "the daemon (pid {}) is gone, {:.0} s into the {phase}: stopped (its exit status \
             follows from soak.sh; a crash is also in `dmesg`)",
            args.pid,
            start.elapsed().as_secs_f64()
        )
    };
    for i in 0..total {
        if daemon_gone.load(Ordering::Relaxed) {
            return Err(died("load"));
        }
        let scheduled = start + Duration::from_secs_f64(i as f64 / rate);
        let now = Instant::now();
        if scheduled > now {
            std::thread::sleep(scheduled - now);
        }
        let permit = match handle.block_on(sem.clone().acquire_owned()) {
            Ok(p) => p,
            Err(_) => break,
        };
        max_lag = max_lag.max(Instant::now().saturating_duration_since(scheduled));
        let door = doors[(i % doors.len() as u64) as usize];
        let j = i / doors.len() as u64;
        let rb = ctx.request(&client, door, j);
        let recs = recs.clone();
        recs[&door].sent.fetch_add(1, Ordering::Relaxed);
        tasks.push(handle.spawn(async move {
            let _permit = permit;
            let res = send(rb).await;
            recs[&door].record(start, scheduled, res);
        }));
        if i > 0 && i % (rate.round() as u64 * 30).max(1) == 0 {
            let s = lock(&samples);
            let rss = s.rss.last().map_or(0.0, |r| mib(r.1 as f64));
            let st = s.store.last().map_or(0.0, |r| r.1 as f64 / 1048576.0);
            drop(s);
            eprintln!(
                "youops-soak: t={:.0}s sent {i}, daemon RSS {rss:.1} MiB, store {st:.1} MiB",
                scheduled.saturating_duration_since(start).as_secs_f64()
            );
        }
    }
    rt.block_on(async {
        for t in tasks {
            let _ = t.await;
        }
    });
    let (commits, commit_us) = git_thread
        .join()
        .map_err(|_| "the git thread panicked".to_string())?;
    let sent_done = Instant::now();
    let load_secs = sent_done
        .saturating_duration_since(start)
        .as_secs_f64()
        .max(args.duration.as_secs_f64());
    eprintln!(
        "youops-soak: load done after {load_secs:.1}s; draining (at most {:?})",
        args.drain
    );

    // Drain: wait until nothing is unfinished, every git commit's trailer ran,
    // and the fakes have seen no new call for 3 s.
    let drain_until = Instant::now() + args.drain;
    let feedback_total = || -> u64 {
        lock(&slack.calls).values().sum::<u64>() + lock(&github.calls).values().sum::<u64>()
    };
    let mut last_fb = (feedback_total(), Instant::now());
    let mut drained = false;
    let mut last_unfinished = None;
    while Instant::now() < drain_until {
        if daemon_gone.load(Ordering::Relaxed) {
            return Err(died("drain"));
        }
        std::thread::sleep(Duration::from_millis(500));
        let fb = feedback_total();
        if fb != last_fb.0 {
            last_fb = (fb, Instant::now());
        }
        let open = rt.block_on(unfinished(&client, &ctx)).ok();
        last_unfinished = open;
        let trailers = rt.block_on(git_trailers(&client, &ctx)).unwrap_or(0);
        if open == Some(0)
            && trailers as u64 >= commits
            && last_fb.1.elapsed() >= Duration::from_secs(3)
        {
            drained = true;
            break;
        }
    }
    let drain_secs = sent_done.elapsed().as_secs_f64();
    sampling.store(false, Ordering::Relaxed);
    let _ = sampler.join();
    let census = rt.block_on(census(&client, &ctx))?;

    // ---- report ----
    let samples = std::mem::take(&mut *lock(&samples));
    let mut checks: Vec<(String, bool)> = Vec::new();
    let mut out = String::new();
    let mut j = serde_json::Map::new();
    macro_rules! line {
        ($($t:tt)*) => {{ out.push_str(&format!($($t)*)); out.push('\n'); }};
    }
    line!(
        "offered: {rate} req/s over {} in turn ({:.1} req/s each), a git commit every {:?}; load {:.1} s, drain {:.1} s{}",
        args.doors.join("/"),
        rate / args.doors.len() as f64,
        args.git_every,
        args.duration.as_secs_f64(),
        drain_secs,
        if drained { "" } else { " (drain timed out)" }
    );
    line!("sender: max send lag {:.1} ms", max_lag.as_secs_f64() * 1e3);
    line!("");
    line!("| front door | sent | 2xx | non-2xx | no answer | achieved req/s | p50 ms | p99 ms | max ms |");
    line!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut doors_json = serde_json::Map::new();
    let mut all_2xx = true;
    for d in Door::ALL {
        let r = &recs[&d];
        let mut lat = std::mem::take(&mut *lock(&r.ok_lat));
        lat.sort_unstable();
        let statuses = lock(&r.statuses).clone();
        let ok: u64 = statuses
            .iter()
            .filter(|(s, _)| (200..300).contains(*s))
            .map(|(_, n)| n)
            .sum();
        let non2xx: u64 = statuses.values().sum::<u64>() - ok;
        let errors = r.errors.load(Ordering::Relaxed);
        let sent = r.sent.load(Ordering::Relaxed);
        let window = (r.last_done_us.load(Ordering::Relaxed) as f64 / 1e6).max(load_secs);
        let achieved = ok as f64 / window;
        if non2xx > 0 || errors > 0 || ok != sent {
            all_2xx = false;
        }
        line!(
            "| {} | {sent} | {ok} | {non2xx} | {errors} | {achieved:.2} | {} | {} | {} |",
            d.name(),
            f2(percentile(&lat, 50.0)),
            f2(percentile(&lat, 99.0)),
            f2(lat.last().map(|v| *v as f64 / 1000.0))
        );
        doors_json.insert(
            d.name().into(),
            json!({
                "sent": sent, "ok": ok, "non_2xx": non2xx, "no_answer": errors,
                "statuses": statuses.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
                "achieved_rps": achieved,
                "ack_ms": { "p50": percentile(&lat, 50.0), "p90": percentile(&lat, 90.0),
                            "p99": percentile(&lat, 99.0), "max": lat.last().map(|v| *v as f64 / 1000.0) },
                "first_problem": lock(&r.first_problem).clone(),
            }),
        );
        if let Some(p) = lock(&r.first_problem).as_ref() {
            line!("  {} first problem: {p}", d.name());
        }
    }
    line!(
        "(git row: one commit + one POST /git/webhook each; latency = commit + webhook ack; `git commit` alone p50 {} ms)",
        f2(percentile(&commit_us, 50.0))
    );
    j.insert("doors".into(), Value::Object(doors_json));
    checks.push((
        "every request of every front door got a 2xx".into(),
        all_2xx,
    ));

    // Census.
    line!("");
    line!(
        "requests in the store: {} (by front door, op and state):",
        census.total
    );
    let mut census_json = serde_json::Map::new();
    let mut all_succeeded = true;
    let mut terminal = true;
    for (fe, m) in &census.by {
        let parts: Vec<String> = m
            .iter()
            .map(|((op, st), n)| format!("{op} {st} {n}"))
            .collect();
        let e2e = census.e2e_ms.get(fe).map(Vec::as_slice).unwrap_or(&[]);
        line!(
            "  {fe}: {}; created → last state change p50 {} ms, p99 {} ms",
            parts.join(", "),
            f2(percentile(e2e, 50.0)),
            f2(percentile(e2e, 99.0))
        );
        for ((_, st), _) in m.iter() {
            if st != "succeeded" {
                all_succeeded = false;
            }
            if matches!(
                st.as_str(),
                "received" | "pending_approval" | "approved" | "running"
            ) {
                terminal = false;
            }
        }
        census_json.insert(
            fe.clone(),
            json!({
                "states": m.iter().map(|((op, st), n)| (format!("{op} {st}"), json!(n))).collect::<serde_json::Map<_, _>>(),
                "e2e_ms": { "p50": percentile(e2e, 50.0), "p99": percentile(e2e, 99.0), "max": e2e.last().map(|v| *v as f64 / 1000.0) },
            }),
        );
    }
    j.insert("requests".into(), Value::Object(census_json));
    let in_store = |fe: &str, op: Option<&str>| -> u64 {
        census.by.get(fe).map_or(0, |m| {
            m.iter()
                .filter(|((o, _), _)| op.is_none_or(|op| op == o))
                .map(|(_, n)| n)
                .sum()
        })
    };
    let ok_of = |d: Door| -> u64 {
        lock(&recs[&d].statuses)
            .iter()
            .filter(|(s, _)| (200..300).contains(*s))
            .map(|(_, n)| n)
            .sum()
    };
    let git_trailers_n = in_store("git", Some("soak.echo"));
    let git_applies = in_store("git", Some("soak.svc.apply"));
    let exact = ok_of(Door::Api) == in_store("api", None)
        && ok_of(Door::Slack) == in_store("slack", None)
        && ok_of(Door::Github) == in_store("github", None)
        && git_trailers_n == commits;
    line!(
        "accepted vs stored: api {} / {}, slack {} / {}, github {} / {}, git trailers {} commits / {} requests (+ {} resource applies)",
        ok_of(Door::Api),
        in_store("api", None),
        ok_of(Door::Slack),
        in_store("slack", None),
        ok_of(Door::Github),
        in_store("github", None),
        commits,
        git_trailers_n,
        git_applies
    );
    checks.push((
        "one stored request per accepted call (and per git trailer)".into(),
        exact,
    ));
    checks.push((
        format!(
            "every request terminal after the drain (unfinished at the last poll: {})",
            last_unfinished.map_or("?".into(), |n: usize| n.to_string())
        ),
        terminal,
    ));
    checks.push((
        format!(
            "feedback settled within the drain of {:?} (no new call for 3 s)",
            args.drain
        ),
        drained,
    ));
    checks.push(("every request succeeded".into(), all_succeeded));

    // Feedback.
    let slack_calls = lock(&slack.calls).clone();
    let gh_calls = lock(&github.calls).clone();
    let slack_results = lock(&slack.results).len() as u64;
    let slack_mentioned = lock(&slack.mentioned).len() as u64;
    let rockets = lock(&github.rockets).len() as u64;
    let fmt_calls = |m: &BTreeMap<String, u64>| {
        m.iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let slack_total: u64 = slack_calls.values().sum();
    let gh_total: u64 = gh_calls.values().sum();
    line!("");
    line!(
        "feedback to the fake Slack: {slack_total} calls ({}); {slack_mentioned} requests mentioned, {slack_results} with a `succeeded` result in their thread",
        fmt_calls(&slack_calls)
    );
    line!(
        "feedback to the fake GitHub: {gh_total} calls ({}); {rockets} command comments with a rocket",
        fmt_calls(&gh_calls)
    );
    let slack_ok = in_store("slack", None);
    let gh_ok = in_store("github", None);
    line!(
        "feedback calls per request: Slack {:.2}, GitHub {:.2}",
        slack_total as f64 / slack_ok.max(1) as f64,
        gh_total as f64 / gh_ok.max(1) as f64
    );
    checks.push((
        format!(
            "every Slack request's result posted in its thread ({slack_results} of {slack_ok})"
        ),
        slack_results == slack_ok,
    ));
    checks.push((
        format!("every GitHub request got its rocket ({rockets} of {gh_ok})"),
        rockets == gh_ok,
    ));
    j.insert(
        "feedback".into(),
        json!({
            "slack": { "calls": slack_calls, "results": slack_results, "mentioned": slack_mentioned },
            "github": { "calls": gh_calls, "rockets": rockets },
        }),
    );

    // Memory, CPU, store.
    let dur = args.duration.as_secs_f64();
    let in_load: Vec<(f64, u64)> = samples
        .rss
        .iter()
        .copied()
        .filter(|p| p.0 <= dur + 0.5)
        .collect();
    let rss_min = in_load.iter().map(|p| p.1).min().unwrap_or(0) as f64;
    let rss_max = in_load.iter().map(|p| p.1).max().unwrap_or(0) as f64;
    let w = (dur * 0.1).clamp(5.0, 30.0);
    let mid = mean_in(&in_load, dur / 2.0 - w / 2.0, dur / 2.0 + w / 2.0);
    let last = mean_in(&in_load, dur - w, dur + 0.5);
    let growth = match (mid, last) {
        (Some(a), Some(b)) => Some(mib(b - a)),
        _ => None,
    };
    let half = |first: bool| -> Vec<(f64, f64)> {
        in_load
            .iter()
            .filter(|p| {
                if first {
                    p.0 < dur / 2.0
                } else {
                    p.0 >= dur / 2.0
                }
            })
            .map(|p| (p.0, mib(p.1 as f64)))
            .collect()
    };
    let (s1, s2) = (slope_per_min(&half(true)), slope_per_min(&half(false)));
    line!("");
    line!(
        "daemon RSS over the load ({} samples, 1/s): min {:.1} MiB, max {:.1} MiB; slope first half {} MiB/min, second half {} MiB/min",
        in_load.len(),
        mib(rss_min),
        mib(rss_max),
        f2(s1),
        f2(s2)
    );
    line!(
        "  mean of the {w:.0} s around the middle {} MiB, of the last {w:.0} s {} MiB: growth over the second half {} MiB (bound {} MiB)",
        f2(mid.map(mib)),
        f2(last.map(mib)),
        f2(growth),
        args.rss_growth_mib
    );
    let mut per_min = Vec::new();
    let mut m = 0.0;
    while m <= dur + 0.5 {
        if let Some(p) = samples.rss.iter().find(|p| p.0 >= m - 0.5) {
            per_min.push(json!({ "t_s": m, "rss_mib": mib(p.1 as f64) }));
        }
        m += 60.0;
    }
    let at_end = samples.rss.last().map(|p| mib(p.1 as f64));
    line!(
        "  RSS at each minute: {}; after the drain {} MiB",
        per_min
            .iter()
            .map(|v| format!(
                "{:.0}m {:.1}",
                v["t_s"].as_f64().unwrap_or(0.0) / 60.0,
                v["rss_mib"].as_f64().unwrap_or(0.0)
            ))
            .collect::<Vec<_>>()
            .join(", "),
        f2(at_end)
    );
    checks.push((
        format!(
            "RSS growth over the second half ≤ {} MiB ({} MiB)",
            args.rss_growth_mib,
            f2(growth)
        ),
        growth.is_some_and(|g| g <= args.rss_growth_mib),
    ));
    let cpu_at = |t: f64| samples.cpu.iter().find(|p| p.0 >= t).copied();
    let cpu_load = match (cpu_at(0.0), cpu_at(dur)) {
        (Some(a), Some(b)) if b.0 > a.0 => {
            let secs = (b.1.saturating_sub(a.1)) as f64 / procfs::USER_HZ;
            let reqs: u64 = Door::ALL.iter().map(|d| ok_of(*d)).sum();
            Some((secs / (b.0 - a.0) * 100.0, secs / reqs.max(1) as f64 * 1e6))
        }
        _ => None,
    };
    if let Some((pct, us)) = cpu_load {
        line!("daemon CPU over the load: {pct:.0}% of one core, {us:.0} µs per accepted request (feedback work included)");
    }
    let fd_max = samples.fds.iter().map(|p| p.1).max();
    let fd_first = samples.fds.first().map(|p| p.1);
    let fd_last = samples.fds.last().map(|p| p.1);
    line!(
        "daemon open file descriptors (every 5 s): first {}, max {}, last {}",
        fd_first.map_or("-".into(), |v| v.to_string()),
        fd_max.map_or("-".into(), |v| v.to_string()),
        fd_last.map_or("-".into(), |v| v.to_string())
    );
    let store_at_min: Vec<String> = {
        let mut v = Vec::new();
        let mut m = 0.0;
        while m <= dur + 0.5 {
            if let Some(p) = samples.store.iter().find(|p| p.0 >= m - 1.0) {
                v.push(format!("{:.0}m {:.1}", m / 60.0, p.1 as f64 / 1048576.0));
            }
            m += 60.0;
        }
        v
    };
    let store_end = live_store_bytes(&args.store);
    let in_store_now = census.total - census.archived;
    let per_req = store_end as f64 / in_store_now.max(1) as f64;
    line!(
        "live store (log segments + index, MiB) at each minute: {}; after the drain {:.1} MiB = {:.0} bytes per stored request ({} requests)",
        store_at_min.join(", "),
        store_end as f64 / 1048576.0,
        per_req,
        in_store_now
    );
    // Growth of the live store over the second half of the load: the mean of
    // the last window against the mean of the same window around the middle.
    let sw = args.store_window.as_secs_f64().min(dur / 2.0).max(2.0);
    let store_load: Vec<(f64, u64)> = samples
        .store
        .iter()
        .copied()
        .filter(|p| p.0 <= dur + 0.5)
        .collect();
    let s_mid = mean_in(&store_load, dur / 2.0 - sw / 2.0, dur / 2.0 + sw / 2.0);
    let s_last = mean_in(&store_load, dur - sw, dur + 0.5);
    let s_growth = match (s_mid, s_last) {
        (Some(a), Some(b)) if a > 0.0 => Some((b - a) / a * 100.0),
        _ => None,
    };
    let second_half: Vec<u64> = store_load
        .iter()
        .filter(|p| p.0 >= dur / 2.0)
        .map(|p| p.1)
        .collect();
    let (s_min2, s_max2) = (
        second_half.iter().copied().min(),
        second_half.iter().copied().max(),
    );
    let mb = |v: Option<f64>| v.map_or("-".into(), |b| format!("{:.1}", b / 1048576.0));
    line!(
        "  mean of the {sw:.0} s around the middle {} MiB, of the last {sw:.0} s {} MiB: growth over the second half {}% (bound {}); second half min {} MiB, max {} MiB",
        mb(s_mid),
        mb(s_last),
        f2(s_growth),
        args.store_growth_pct
            .map_or("none".to_string(), |b| format!("{b}%")),
        mb(s_min2.map(|v| v as f64)),
        mb(s_max2.map(|v| v as f64)),
    );
    if let Some(bound) = args.store_growth_pct {
        checks.push((
            format!(
                "live store growth over the second half ≤ {bound}% ({}%)",
                f2(s_growth)
            ),
            s_growth.is_some_and(|g| g <= bound),
        ));
    }
    let archive_end = args.archive.as_deref().map(disk_bytes);
    if let Some(a) = archive_end {
        line!(
            "archive on disk after the drain: {:.1} MiB; {} of the {} requests were archived out of the store (read back from the archive files)",
            a as f64 / 1048576.0,
            census.archived,
            census.total
        );
    }
    j.insert(
        "memory".into(),
        json!({
            "rss_mib": { "min": mib(rss_min), "max": mib(rss_max), "after_drain": at_end,
                         "mid_mean": mid.map(mib), "last_mean": last.map(mib), "window_s": w,
                         "growth_second_half": growth, "bound": args.rss_growth_mib,
                         "slope_first_half_per_min": s1, "slope_second_half_per_min": s2,
                         "per_minute": per_min,
                         "series": samples.rss.iter().map(|p| json!([p.0, p.1])).collect::<Vec<_>>() },
            "fds": { "first": fd_first, "max": fd_max, "last": fd_last },
            "cpu": cpu_load.map(|(pct, us)| json!({ "core_pct": pct, "us_per_request": us })),
            "archive_bytes": archive_end,
            "archived_requests": census.archived,
            "store_bytes": { "what": "log/*.jsonl + index.redb (live store, archives excluded)",
                             "after_drain": store_end, "per_request": per_req,
                             "mid_mean": s_mid, "last_mean": s_last, "window_s": sw,
                             "growth_second_half_pct": s_growth, "bound_pct": args.store_growth_pct,
                             "second_half_min": s_min2, "second_half_max": s_max2,
                             "series": samples.store.iter().map(|p| json!([p.0, p.1])).collect::<Vec<_>>() },
        }),
    );

    line!("");
    let mut all = true;
    for (what, ok) in &checks {
        all &= ok;
        line!("{} {what}", if *ok { "PASS" } else { "FAIL" });
    }
    j.insert(
        "checks".into(),
        Value::Array(
            checks
                .iter()
                .map(|(w, ok)| json!({ "check": w, "ok": ok }))
                .collect(),
        ),
    );
    j.insert(
        "config".into(),
        json!({ "rate": rate, "duration_s": dur, "git_every_s": args.git_every.as_secs_f64(),
                "users": args.users, "channels": args.channels, "sleep_every": args.sleep_every,
                "commits": commits }),
    );
    print!("{out}");
    if let Some(path) = &args.json {
        let text = Value::Object(j).to_string();
        std::fs::write(path, text).map_err(|e| format!("writing {}: {e}", path.display()))?;
    }
    // Stop the fake servers before the runtimes drop.
    drop(fake_rt);
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc_4231_case_2() {
        let mac = hmac_sha256(b"Jefe", &[b"what do ya want ", b"for nothing?"]);
        assert_eq!(
            hex::encode(mac),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn hmac_hashes_long_keys_first() {
        // RFC 4231 case 6: a 131-byte key.
        let key = [0xaa_u8; 131];
        let mac = hmac_sha256(
            &key,
            &[b"Test Using Larger Than Block-Size Key - Hash Key First"],
        );
        assert_eq!(
            hex::encode(mac),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    #[test]
    fn form_encoding_and_ulids() {
        assert_eq!(form_encode("soak.echo msg=a1"), "soak.echo+msg%3Da1");
        assert_eq!(
            ulids("request `01J9Z4K3M2ABCDEFGHJKMNPQRS` — state: `succeeded` 01J9Z4K3M2ABCDEFGHJKMNPQRSX"),
            vec!["01J9Z4K3M2ABCDEFGHJKMNPQRS".to_string()]
        );
        assert_eq!(percent_decode("youops%3Asucceeded"), "youops:succeeded");
    }

    #[test]
    fn slope_of_a_line() {
        let pts: Vec<(f64, f64)> = (0..10).map(|i| (i as f64, 2.0 * i as f64)).collect();
        assert!((slope_per_min(&pts).unwrap() - 120.0).abs() < 1e-9);
    }
}
