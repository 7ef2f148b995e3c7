//! Helpers for the daemon's integration tests: an in-process daemon on a real
//! listener with a real log store in a temp dir, the real `youops` binary as a
//! child process, and a small JSON client.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Plain API tokens of the test principals (the config stores them hashed).
pub(crate) const ALICE: &str = "alice-test-token";
pub(crate) const BOB: &str = "bob-test-token";
pub(crate) const CAROL: &str = "carol-test-token";
/// The OS user (`USER`) that `identities.cli` maps to alice.
pub(crate) const CLI_USER: &str = "alice-os";

/// The `youops` binary built for these tests.
pub(crate) fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_youops")
}

/// `sha256:<hex>` of a token, as a config stores it.
pub(crate) fn token_digest(token: &str) -> String {
    use sha2::Digest as _;
    format!(
        "sha256:{}",
        hex::encode(sha2::Sha256::digest(token.as_bytes()))
    )
}

/// A quickstart-style config: alice (ops) and bob (ops, lead) may run everything,
/// carol (viewer) nothing; `deploy` needs one approval from a lead.
/// `server_extra` lines go into `[server]`; `ops_extra` is appended at the end.
pub(crate) fn config(server_extra: &str, ops_extra: &str) -> String {
    let grace = if server_extra.contains("shutdown_grace") {
        ""
    } else {
        "shutdown_grace = \"2s\""
    };
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
{grace}
{server_extra}

[store]
path = "store"

[executor]
default_timeout = "2m"

[[ops]]
name = "hello"
description = "Say hello"
runner = {{ type = "builtin", name = "echo" }}
timeout = "10s"
[[ops.params]]
name = "name"
type = "string"
default = "world"
pattern = "[A-Za-z0-9 ._-]{{1,40}}"

[[ops]]
name = "cache.flush"
description = "Flush a cache region"
runner = {{ type = "builtin", name = "echo" }}
[[ops.params]]
name = "region"
type = "enum"
values = ["eu", "us", "ap"]

[[ops]]
name = "nap"
description = "Sleep (builtin, cancellable)"
runner = {{ type = "builtin", name = "sleep" }}
[[ops.params]]
name = "seconds"
type = "int"
default = 1

[[ops]]
name = "deploy"
description = "Deploy a service"
runner = {{ type = "builtin", name = "echo" }}
approvals = 1
approvers = ["lead"]
[[ops.params]]
name = "service"
type = "enum"
values = ["api", "web"]
[[ops.params]]
name = "version"
type = "string"
pattern = "v[0-9]+\\.[0-9]+\\.[0-9]+"

[[ops]]
name = "db.rotate-password"
description = "Rotate a password (secret arg)"
runner = {{ type = "builtin", name = "echo" }}
[[ops.params]]
name = "db_user"
type = "string"
[[ops.params]]
name = "password"
type = "secret"
pattern = ".{{12,}}"

{ops_extra}

[principals.alice]
roles = ["ops"]
identities = {{ cli = ["{CLI_USER}"] }}
tokens = ["{alice}"]

[principals.bob]
roles = ["ops", "lead"]
tokens = ["{bob}"]

[principals.carol]
roles = ["viewer"]
tokens = ["{carol}"]

[[grants]]
roles = ["ops"]
ops = ["*"]
"#,
        alice = token_digest(ALICE),
        bob = token_digest(BOB),
        carol = token_digest(CAROL),
    )
}

/// An op running `argv` through the exec runner.
pub(crate) fn exec_op(name: &str, argv: &[&str]) -> String {
    let words = argv.join(" ");
    let argv: Vec<String> = argv.iter().map(|a| format!("{a:?}")).collect();
    format!(
        "[[ops]]\nname = \"{name}\"\ndescription = \"runs `{words}`\"\nrunner = {{ type = \"exec\", argv = [{}] }}\ntimeout = \"2m\"\n",
        argv.join(", ")
    )
}

/// A JSON client of one daemon.
#[derive(Debug, Clone)]
pub(crate) struct Api {
    pub base: String,
    pub http: reqwest::Client,
}

impl Api {
    pub(crate) fn new(base: impl Into<String>) -> Self {
        Api {
            base: base.into(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(20))
                .build()
                .expect("reqwest client"),
        }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn auth(rb: reqwest::RequestBuilder, token: Option<&str>) -> reqwest::RequestBuilder {
        match token {
            Some(t) => rb.bearer_auth(t),
            None => rb,
        }
    }

    /// GET; the body as JSON (Null when it is not JSON).
    pub(crate) async fn get(&self, path: &str, token: Option<&str>) -> (StatusCode, Value) {
        let resp = Self::auth(self.http.get(self.url(path)), token)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        let status = resp.status();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// Every request the API lists for `query` (as [`ALICE`], following
    /// `next_before`).
    pub(crate) async fn list_all(&self, query: &str) -> Vec<Value> {
        let mut out = Vec::new();
        let mut before = String::new();
        loop {
            let path = format!("/api/v1/requests?limit=500&{query}{before}");
            let (st, v) = self.get(&path, Some(ALICE)).await;
            assert_eq!(st, StatusCode::OK, "{v}");
            out.extend(v["requests"].as_array().cloned().unwrap_or_default());
            match v["next_before"].as_str() {
                Some(n) => before = format!("&before={n}"),
                None => return out,
            }
        }
    }

    /// GET; the body as text.
    pub(crate) async fn get_text(&self, path: &str, token: Option<&str>) -> (StatusCode, String) {
        let resp = Self::auth(self.http.get(self.url(path)), token)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        let status = resp.status();
        (status, resp.text().await.unwrap_or_default())
    }

    /// POST a JSON body.
    pub(crate) async fn post(
        &self,
        path: &str,
        token: Option<&str>,
        body: &Value,
    ) -> (StatusCode, Value) {
        let resp = Self::auth(self.http.post(self.url(path)), token)
            .json(body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {path}: {e}"));
        let status = resp.status();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// POST raw bytes with a content type.
    pub(crate) async fn post_raw(
        &self,
        path: &str,
        token: Option<&str>,
        content_type: &str,
        body: impl Into<reqwest::Body>,
    ) -> (StatusCode, reqwest::header::HeaderMap, String) {
        let resp = Self::auth(self.http.post(self.url(path)), token)
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .body(body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {path}: {e}"));
        let status = resp.status();
        let headers = resp.headers().clone();
        (status, headers, resp.text().await.unwrap_or_default())
    }

    /// Submit an op; `wait` is the `?wait=` value.
    pub(crate) async fn submit(
        &self,
        token: &str,
        op: &str,
        args: Value,
        wait: Option<&str>,
    ) -> (StatusCode, Value) {
        let path = match wait {
            Some(w) => format!("/api/v1/requests?wait={w}"),
            None => "/api/v1/requests".to_string(),
        };
        self.post(
            &path,
            Some(token),
            &serde_json::json!({ "op": op, "args": args }),
        )
        .await
    }

    /// Wait (bounded) until a request is in `state`; panics with the last record.
    pub(crate) async fn wait_state(&self, token: &str, id: &str, state: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let (status, v) = self
                .get(&format!("/api/v1/requests/{id}?wait=1s"), Some(token))
                .await;
            assert_eq!(status, StatusCode::OK, "GET request {id}: {v}");
            if v["request"]["state"] == state {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "request {id} never became {state}: {v:#}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The id of the request in an API answer.
pub(crate) fn id_of(v: &Value) -> String {
    v["request"]["request"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no request id in {v:#}"))
        .to_string()
}

/// The state of the request in an API answer.
pub(crate) fn state_of(v: &Value) -> &str {
    v["request"]["state"].as_str().unwrap_or("<none>")
}

/// A daemon running in this process, on 127.0.0.1:0, with its store in a temp dir.
#[derive(Debug)]
pub(crate) struct Daemon {
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    pub addr: SocketAddr,
    pub api: Api,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), String>>>,
}

impl Daemon {
    /// Write `toml` to `youops.toml` in a fresh temp dir and start a daemon on it.
    pub(crate) async fn start(toml: &str) -> Daemon {
        Daemon::start_inner(toml, false).await
    }

    /// Like [`Daemon::start`], also running the built-in frontends the config
    /// enables (as `youops serve` does).
    pub(crate) async fn start_with_frontends(toml: &str) -> Daemon {
        Daemon::start_inner(toml, true).await
    }

    async fn start_inner(toml: &str, frontends: bool) -> Daemon {
        let dir = tempfile::tempdir().expect("temp dir");
        let config_path = dir.path().join("youops.toml");
        std::fs::write(&config_path, toml).expect("write config");
        let cfg = youops_core::config::Config::load(&config_path)
            .unwrap_or_else(|e| panic!("test config does not load:\n{e}"));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let mut opts = youops::RunOptions::default();
        opts.listener = Some(listener);
        if frontends {
            youops::frontends::build_parts(&cfg, &[])
                .unwrap_or_else(|e| panic!("test frontends do not build: {e:?}"))
                .into_options(&mut opts);
        }
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            youops::run(cfg, opts, async move {
                let _ = rx.await;
            })
            .await
            .map_err(|e| format!("{e:#}"))
        });
        let api = Api::new(format!("http://{addr}"));
        let d = Daemon {
            dir,
            config_path,
            addr,
            api,
            stop: Some(tx),
            task: Some(task),
        };
        wait_healthy(&d.api).await;
        d
    }

    /// Trigger the shutdown future (the daemon starts draining).
    pub(crate) fn begin_shutdown(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }

    /// Shut down and wait (bounded) for `run` to return.
    pub(crate) async fn stop(mut self) -> Result<(), String> {
        self.begin_shutdown();
        let task = self.task.take().expect("running");
        match tokio::time::timeout(Duration::from_secs(20), task).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => Err(format!("daemon task panicked: {e}")),
            Err(_) => Err("daemon did not stop within 20s".into()),
        }
    }

    pub(crate) fn base(&self) -> &str {
        &self.api.base
    }
}

/// Poll `/healthz` until it answers 200 (at most 15 s).
pub(crate) async fn wait_healthy(api: &Api) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Ok(r) = api.http.get(api.url("/healthz")).send().await {
            if r.status() == StatusCode::OK {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{} never became healthy",
            api.base
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A free port on 127.0.0.1 (bound and released; good enough for a test).
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// Run the `youops` binary to completion (blocking; call from a blocking
/// context or `spawn_blocking`).
pub(crate) fn youops(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(bin());
    cmd.args(args)
        .env_remove("YOUOPS_SERVER")
        .env_remove("YOUOPS_TOKEN")
        .env_remove("YOUOPS_CONFIG")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.output().expect("run youops")
}

/// Run the `youops` binary without blocking the runtime.
pub(crate) async fn youops_async(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let envs: Vec<(String, String)> = envs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    tokio::time::timeout(
        Duration::from_secs(60),
        tokio::task::spawn_blocking(move || {
            let a: Vec<&str> = args.iter().map(String::as_str).collect();
            let e: Vec<(&str, &str)> = envs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            youops(&a, &e)
        }),
    )
    .await
    .expect("youops finished within 60s")
    .expect("youops task")
}

/// Exit code, stdout and stderr of a finished command, for assertions.
pub(crate) fn describe(o: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}--- stderr\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A `youops serve` child process, killed when dropped.
#[derive(Debug)]
pub(crate) struct Served {
    pub child: Child,
    pub api: Api,
    pub log: PathBuf,
}

impl Served {
    /// Spawn `youops serve --config CONFIG --listen 127.0.0.1:PORT`, logging to
    /// `log` (stderr), and wait until it is healthy.
    pub(crate) async fn spawn(config: &Path, log: PathBuf) -> Served {
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let log_file = std::fs::File::create(&log).expect("log file");
        let child = Command::new(bin())
            .args(["serve", "--config"])
            .arg(config)
            .args(["--listen", &listen])
            .env_remove("YOUOPS_LISTEN")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("spawn youops serve");
        let s = Served {
            child,
            api: Api::new(format!("http://{listen}")),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(r) = s.api.http.get(s.api.url("/healthz")).send().await {
                if r.status() == StatusCode::OK {
                    break;
                }
            }
            assert!(
                Instant::now() < deadline,
                "youops serve never became healthy; log:\n{}",
                s.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        s
    }

    pub(crate) fn pid(&self) -> nix::unistd::Pid {
        nix::unistd::Pid::from_raw(self.child.id() as i32)
    }

    pub(crate) fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(self.pid(), sig).expect("send signal");
    }

    pub(crate) fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Wait (bounded) for the log to contain `needle`.
    pub(crate) async fn wait_log(&self, needle: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.log_text().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "log never said {needle:?}:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Wait (bounded) for the process to exit; its exit code.
    pub(crate) async fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(st) = self.child.try_wait().expect("try_wait") {
                return st.code();
            }
            assert!(
                Instant::now() < deadline,
                "youops serve did not exit within {within:?}; log:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

// --- a fake GitHub REST API and signed webhooks (used by tests/faults.rs) --------

/// The webhook secret of [`github_section`].
pub(crate) const GH_SECRET: &str = "faults-webhook-secret";
/// The managed repository of [`github_section`].
pub(crate) const GH_REPO: &str = "acme/ops";
/// The GitHub login mapped to principal `octo` by [`github_section`].
pub(crate) const GH_LOGIN: &str = "octocat";

/// A `[principals.octo]` (role ops, GitHub login [`GH_LOGIN`]) and a
/// `[frontends.github]` section talking to `api_base_url`, with polling off.
/// Goes into `config(_, ops_extra)` after the ops.
pub(crate) fn github_section(api_base_url: &str, extra: &str) -> String {
    format!(
        r#"
[principals.octo]
roles = ["ops"]
identities = {{ github = ["{GH_LOGIN}"] }}

[frontends.github]
webhook_secret = "{GH_SECRET}"
token = "test-token"
repos = ["{GH_REPO}"]
poll_interval = "0s"
api_base_url = "{api_base_url}"
{extra}
"#
    )
}

/// How the fake GitHub answers `POST /repos/O/R/issues/N/comments` (no
/// comment is created): a status with a GitHub-style error body, 429 with
/// `Retry-After: SECS`, a hang (the connection stays open) or a dropped
/// connection.
pub(crate) use youops_testkit::Fault as GhFault;

/// The kit's fake GitHub REST API on 127.0.0.1, lenient (any issue of
/// [`GH_REPO`] exists), answering what the IssueOps frontend calls: issue
/// comments (list, create, edit), reactions and labels. Comment creation can
/// be made to fail.
#[derive(Debug, Clone)]
pub(crate) struct FakeGithub {
    pub base: String,
    kit: youops_testkit::FakeGithub,
}

impl FakeGithub {
    pub(crate) async fn start() -> FakeGithub {
        let kit = youops_testkit::FakeGithub::start_with(youops_testkit::github::GithubOptions {
            lenient: true,
            first_id: 70_000,
            ..Default::default()
        })
        .await;
        FakeGithub {
            base: kit.base(),
            kit,
        }
    }

    /// Make the next `count` comment posts (all when `None`) fail with `fault`.
    pub(crate) fn set_fault(&self, fault: GhFault, count: Option<usize>) {
        self.kit.set_fault(fault, count);
    }

    /// (method, path) of every call so far.
    pub(crate) fn calls(&self) -> Vec<(String, String)> {
        self.kit
            .calls()
            .into_iter()
            .map(|c| (c.method, c.path))
            .collect()
    }

    /// Bodies of the comments on issue `n`.
    pub(crate) fn comments_on(&self, n: u64) -> Vec<String> {
        self.kit
            .comments_on(n)
            .into_iter()
            .map(|(_, _, body)| body)
            .collect()
    }
}

/// An `issue_comment` `created` delivery for comment `comment_id` by `login` on
/// issue `issue` of [`GH_REPO`].
pub(crate) fn issue_comment_payload(comment_id: u64, issue: u64, login: &str, body: &str) -> Value {
    let t = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let user = serde_json::json!({ "login": login, "type": "User" });
    serde_json::json!({
        "action": "created",
        "issue": {
            "number": issue, "title": "ops requests", "body": "", "user": user,
            "labels": [], "state": "open",
            "html_url": format!("https://github.com/{GH_REPO}/issues/{issue}"),
            "created_at": t, "updated_at": t
        },
        "comment": {
            "id": comment_id, "body": body, "user": user,
            "html_url": format!("https://github.com/{GH_REPO}/issues/{issue}#issuecomment-{comment_id}"),
            "issue_url": format!("https://api.github.com/repos/{GH_REPO}/issues/{issue}"),
            "created_at": t, "updated_at": t
        },
        "repository": { "full_name": GH_REPO },
        "sender": user
    })
}

/// The dedup key the IssueOps frontend gives command line 0 of a comment.
pub(crate) fn gh_comment_key(comment_id: u64) -> String {
    format!("github:{GH_REPO}:comment:{comment_id}:0")
}

/// POST a signed delivery to `/github/webhook`; the status, or `None` when the
/// daemon did not answer (connection refused or reset).
#[cfg(feature = "github")]
pub(crate) async fn deliver(
    api: &Api,
    event: &str,
    delivery: &str,
    payload: &Value,
) -> Option<StatusCode> {
    let body = serde_json::to_vec(payload).expect("payload");
    let sig = youops_frontend_issue::webhook::sign(GH_SECRET.as_bytes(), &body);
    api.http
        .post(api.url("/github/webhook"))
        .header("content-type", "application/json")
        .header("x-github-event", event)
        .header("x-github-delivery", delivery)
        .header("x-hub-signature-256", sig)
        .body(body)
        .send()
        .await
        .ok()
        .map(|r| r.status())
}

/// Every event of the daemon's audit log, through `/api/v1/audit/export`.
pub(crate) async fn export_events(api: &Api, token: &str) -> Vec<youops_core::model::AuditEvent> {
    let resp = api
        .http
        .get(api.url("/api/v1/audit/export"))
        .bearer_auth(token)
        .send()
        .await
        .expect("export");
    assert_eq!(resp.status(), StatusCode::OK);
    resp.text()
        .await
        .expect("export body")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// Resident memory of a process in KiB (Linux `/proc`).
pub(crate) fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Run git in `dir` (a real repository), committing as `email`.
pub(crate) fn git_as(dir: &Path, email: &str, args: &[&str]) {
    let out = Command::new("git")
        .args(["-c", "user.name=Committer", "-c"])
        .arg(format!("user.email={email}"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run git");
    assert!(out.status.success(), "git {args:?}: {}", describe(&out));
}

/// Commit user `name` into `repo`'s desired state (`state/NAME.toml`), as
/// `committer`.
pub(crate) fn commit_user(repo: &Path, committer: &str, name: &str) {
    std::fs::write(
        repo.join(format!("state/{name}.toml")),
        format!(
            "[[resource]]\nkind = \"user\"\nname = \"{name}\"\nemail = \"{name}@example.com\"\n"
        ),
    )
    .unwrap();
    git_as(repo, committer, &["add", "."]);
    git_as(repo, committer, &["commit", "-q", "-m", name]);
}

/// A git repository `dir/repo` whose desired state declares user ada
/// (committed by `committer`), and the `user.apply` op, `[frontends.git]`
/// section (fetching every `interval`) and `user` kind that reconcile it.
pub(crate) fn gitops_repo(dir: &Path, committer: &str, interval: &str) -> (PathBuf, String) {
    let repo = dir.join("repo");
    std::fs::create_dir_all(repo.join("state")).unwrap();
    git_as(&repo, committer, &["init", "-q", "-b", "main"]);
    commit_user(&repo, committer, "ada");
    let section = format!(
        r#"
[[ops]]
name = "user.apply"
description = "Apply a user"
runner = {{ type = "builtin", name = "echo" }}
[[ops.params]]
name = "name"
type = "string"
[[ops.params]]
name = "email"
type = "email"

[frontends.git]
repo = "{}"
branch = "main"
path = "state"
interval = "{interval}"

[[kinds]]
name = "user"
apply = "user.apply"
"#,
        repo.display()
    );
    (repo, section)
}
