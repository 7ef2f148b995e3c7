//! The harness: a YouOps executor with the test catalog, the GitHub frontend
//! hosted against the fake, signed deliveries, and payload builders.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
use youops_core::config::Config;
use youops_core::frontend::{Frontend, FrontendHost, Frontends};
use youops_core::model::{RequestFilter, RequestId, State};
use youops_core::Executor;
use youops_frontend_issue::webhook::sign;
use youops_frontend_issue::GithubFrontend;
use youops_store::{LogOptions, LogStore};

use youops_testkit::github::*;
use youops_testkit::serve_host;

pub(crate) const SECRET: &str = "webhook-secret-for-tests";

pub(crate) const OPS: &str = r#"
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

pub(crate) fn section(base: &str, poll: &str) -> String {
    format!(
        "webhook_secret = \"{SECRET}\"\ntoken = \"test-token\"\napi_base_url = \"{base}\"\nrepos = [\"{REPO}\"]\npoll_interval = \"{poll}\"\n"
    )
}

pub(crate) struct Harness {
    pub fake: FakeGithub,
    pub base: String,
    pub exec: Executor,
    pub host: FrontendHost,
    /// The webhook URL on a real 127.0.0.1 listener (see [`listen`]).
    pub url: String,
    pub shutdown: CancellationToken,
    pub runs: Arc<Mutex<Vec<BTreeMap<String, String>>>>,
    pub _dir: tempfile::TempDir,
}

pub(crate) async fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    youops_testkit::eventually(what, || std::future::ready(f())).await
}

impl Harness {
    pub(crate) async fn new(poll: &str) -> Harness {
        Self::new_with(|base| section(base, poll)).await
    }

    pub(crate) async fn new_with(section_of: impl Fn(&str) -> String) -> Harness {
        Self::new_with_store("", section_of).await
    }

    /// With `store` as the `[store]` section's body (its `dedup_ttl` is the
    /// store's, as in the daemon).
    pub(crate) async fn new_with_store(
        store: &str,
        section_of: impl Fn(&str) -> String,
    ) -> Harness {
        let fake = FakeGithub::start().await;
        let base = fake.base();
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "{OPS}\n[store]\n{store}\n[frontends.github]\n{}",
            section_of(&base)
        );
        let cfg = Config::parse(&text, dir.path(), "test", &|_| None).unwrap();
        let mut opts = LogOptions::default();
        opts.dedup_ttl = cfg.store.dedup_ttl.0;
        let store = Arc::new(LogStore::open(dir.path().join("store"), opts).unwrap());
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

    pub(crate) async fn start_host(
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

    pub(crate) async fn deliver(
        &self,
        event: &str,
        delivery: &str,
        payload: &Value,
    ) -> (u16, String) {
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

    pub(crate) fn runs(&self) -> usize {
        self.runs.lock().unwrap().len()
    }

    pub(crate) async fn requests(&self) -> Vec<youops_core::model::RequestRecord> {
        self.exec
            .list(&RequestFilter::default(), None, 100)
            .await
            .unwrap()
    }

    pub(crate) async fn wait_state(&self, id: RequestId, state: State) {
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
    pub(crate) async fn wait_status(
        &self,
        issue: u64,
        id: RequestId,
        state: State,
    ) -> (u64, String) {
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
pub(crate) async fn listen(host: &FrontendHost) -> String {
    format!("http://{}", serve_host(host).await)
}

impl Harness {
    /// POST a signed delivery of raw `body` over HTTP to the real listener, with
    /// the headers GitHub sends.
    pub(crate) async fn post_raw(
        &self,
        event: &str,
        delivery: &str,
        body: Vec<u8>,
    ) -> (u16, String) {
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
    pub(crate) async fn post(&self, event: &str, delivery: &str, payload: &Value) -> (u16, String) {
        self.post_raw(event, delivery, serde_json::to_vec(payload).unwrap())
            .await
    }
}

pub(crate) async fn send(host: &FrontendHost, req: http::Request<bytes::Bytes>) -> (u16, String) {
    let res = youops_testkit::handle_route(host, req).await;
    (
        res.status().as_u16(),
        String::from_utf8_lossy(res.body()).into_owned(),
    )
}

pub(crate) fn issues_event(
    action: &str,
    issue: &Value,
    sender: &str,
    old_body: Option<&str>,
) -> Value {
    let mut v = json!({
        "action": action, "issue": issue, "repository": repo_json(), "sender": user_json(sender),
        "installation": { "id": 77, "node_id": "MDIzOkludGVncmF0aW9uSW5zdGFsbGF0aW9uNzc=" }
    });
    if let Some(old) = old_body {
        v["changes"] = json!({ "body": { "from": old } });
    }
    v
}

pub(crate) fn comment_event(action: &str, issue: &Value, comment: &Value, sender: &str) -> Value {
    let mut v = json!({
        "action": action, "issue": issue, "comment": comment, "repository": repo_json(),
        "sender": user_json(sender)
    });
    if action == "edited" {
        v["changes"] = json!({ "body": { "from": "/ops old text" } });
    }
    v
}

pub(crate) fn form_body(op: &str, fields: &[(&str, &str)]) -> String {
    let mut s = format!("### YouOps operation\r\n\r\n{op}");
    for (k, v) in fields {
        s.push_str(&format!("\r\n\r\n### {k}\r\n\r\n{v}"));
    }
    s
}
