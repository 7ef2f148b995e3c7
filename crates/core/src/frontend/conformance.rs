//! The frontend conformance suite (feature `test-util`).
//!
//! Every frontend, built-in or third-party, runs it from its own tests with a
//! [`Driver`] that speaks the frontend's real wire format (signed webhooks to a
//! real listener, commits in a real repository, ...). The suite checks the
//! contract every frontend owes the core: a delivery becomes exactly one request
//! with the right actor and origin, its lifecycle reaches the origin, a
//! redelivery runs nothing twice, and shutdown is prompt.

use std::fmt;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use super::{Frontend, FrontendHost, Frontends};
use crate::audit::MemoryStore;
use crate::config::Config;
use crate::executor::Executor;
use crate::model::{RequestFilter, RequestId, RequestRecord, State};

/// The op the suite runs: `conformance.echo text=<string>`, a builtin that
/// returns its text.
pub const ECHO_OP: &str = "conformance.echo";

/// Drives a frontend through its real wire format.
#[async_trait]
pub trait Driver: Send + Sync {
    /// A fresh instance of the frontend under test.
    fn frontend(&self) -> Arc<dyn Frontend>;
    /// The frontend identity (external id) the driver's deliveries carry; the
    /// suite maps it to its principal.
    fn user_id(&self) -> String;
    /// The frontend's `[frontends.NAME]` section for the suite's config (TOML text).
    fn config_section(&self) -> String;
    /// Deliver `command` (command grammar) as one new inbound message, through the
    /// real wire path. Delivering the same `delivery` id again must be a
    /// redelivery of the same message (same webhook delivery id, same commit, ...).
    async fn deliver(
        &self,
        host: &FrontendHost,
        command: &str,
        delivery: &str,
    ) -> Result<(), String>;
    /// The states the frontend has shown on the outside system for request `id`
    /// so far (read back from the fake server, the git notes, ...), in order.
    async fn rendered(&self, id: RequestId) -> Vec<State>;
}

/// What the suite saw.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Report {
    /// The request the first delivery created.
    pub record: RequestRecord,
    /// States the frontend rendered for it.
    pub rendered: Vec<State>,
}

async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return Ok(v);
        }
        if start.elapsed() > timeout {
            return Err(format!("timed out after {timeout:?} waiting for {what}"));
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Run the suite. Returns the first violated rule as an error.
pub async fn run_suite(driver: &dyn Driver) -> Result<Report, String> {
    let frontend = driver.frontend();
    let name = frontend.name().to_string();
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let cfg = suite_config(driver, &name, dir.path())?;
    let runs = Arc::new(AtomicUsize::new(0));
    let exec = suite_executor(&cfg, runs.clone()).await?;
    let shutdown = CancellationToken::new();
    let mut set = Frontends::new();
    set.push(frontend.clone());
    let host = FrontendHost::new(
        &set,
        &exec,
        Some("http://youops.test".into()),
        &shutdown,
        |n| cfg.frontend(n).cloned().unwrap_or_default(),
    );
    let handles = host.spawn();

    eventually(
        "the frontend to be ready",
        Duration::from_secs(10),
        || async { frontend.is_ready().then_some(()) },
    )
    .await?;

    let filter = RequestFilter {
        op: Some(ECHO_OP.into()),
        ..Default::default()
    };
    let done = check_one_request(driver, &host, &exec, &name, &filter).await?;
    let rendered = check_rendered(driver, &exec, done.request.id).await?;
    check_redelivery(driver, &host, &exec, &filter, &runs).await?;
    check_shutdown(&shutdown, handles, &exec).await?;
    Ok(Report {
        record: done,
        rendered,
    })
}

/// The suite's config: the echo op, the driver's identity as principal
/// `tester`, and the frontend's section.
fn suite_config(driver: &dyn Driver, name: &str, dir: &Path) -> Result<Config, String> {
    let text = format!(
        r#"
[[ops]]
name = "{ECHO_OP}"
description = "conformance suite echo"
runner = {{ type = "builtin", name = "echo" }}
[[ops.params]]
name = "text"
type = "string"

[principals.tester]
roles = ["ops"]
identities = {{ {name:?} = [{user:?}] }}

[[grants]]
roles = ["ops"]
ops = ["conformance.*"]

[frontends.{name}]
{section}
"#,
        user = driver.user_id(),
        section = driver.config_section(),
    );
    Config::parse(&text, dir, "conformance", &|_| None).map_err(|e| e.to_string())
}

/// An executor on a memory store whose `echo` builtin counts its runs in `counter`.
async fn suite_executor(cfg: &Config, counter: Arc<AtomicUsize>) -> Result<Executor, String> {
    let store = Arc::new(MemoryStore::new());
    Executor::builder(cfg, store)
        .builtin("echo", move |call: crate::runner::BuiltinCall| {
            let counter = counter.clone();
            async move {
                counter.fetch_add(1, Ordering::SeqCst);
                Ok(call
                    .args
                    .get("text")
                    .map(|v| v.as_text())
                    .unwrap_or_default())
            }
        })
        .build()
        .await
        .map_err(|e| e.to_string())
}

/// Rule 1: a delivery becomes one request with the frontend's actor and origin, and
/// it succeeds. Returns its end record.
async fn check_one_request(
    driver: &dyn Driver,
    host: &FrontendHost,
    exec: &Executor,
    name: &str,
    filter: &RequestFilter,
) -> Result<RequestRecord, String> {
    driver
        .deliver(
            host,
            &format!("{ECHO_OP} text=conformance-hello"),
            "conformance-1",
        )
        .await?;
    let first = eventually(
        "the delivery to become a request",
        Duration::from_secs(10),
        || async {
            exec.list(filter, None, 10)
                .await
                .ok()
                .and_then(|v| v.into_iter().next())
        },
    )
    .await?;
    if first.request.origin.frontend != name {
        return Err(format!(
            "origin.frontend is `{}`, expected `{name}`",
            first.request.origin.frontend
        ));
    }
    if first.request.actor.frontend != name || first.request.actor.external_id != driver.user_id() {
        return Err(format!(
            "actor is {}:{}, expected {name}:{}",
            first.request.actor.frontend,
            first.request.actor.external_id,
            driver.user_id()
        ));
    }
    if first.request.actor.principal.as_deref() != Some("tester") {
        return Err(format!(
            "actor principal is {:?}, expected tester",
            first.request.actor.principal
        ));
    }
    if first.request.dedup_key.is_none() {
        return Err("the request carries no dedup key".into());
    }
    let done = tokio::time::timeout(Duration::from_secs(10), exec.wait(first.request.id))
        .await
        .map_err(|_| "request did not finish".to_string())?
        .map_err(|e| e.to_string())?;
    if done.state != State::Succeeded {
        return Err(format!("request ended {} ({:?})", done.state, done.reason));
    }
    Ok(done)
}

/// Rule 2: the lifecycle reaches the origin: the end state is rendered, in order.
async fn check_rendered(
    driver: &dyn Driver,
    exec: &Executor,
    id: RequestId,
) -> Result<Vec<State>, String> {
    let rendered = eventually(
        "the end state to be rendered",
        Duration::from_secs(10),
        || async {
            let r = driver.rendered(id).await;
            r.contains(&State::Succeeded).then_some(r)
        },
    )
    .await?;
    let order: Vec<State> = exec
        .events(id)
        .await
        .map_err(|e| e.to_string())?
        .iter()
        .filter_map(|e| match &e.body {
            crate::model::EventBody::Transition(t) => Some(t.to),
            crate::model::EventBody::Received { .. } => Some(State::Received),
            _ => None,
        })
        .collect();
    let mut pos = 0;
    for s in &rendered {
        match order[pos..].iter().position(|o| o == s) {
            Some(p) => pos += p,
            None => {
                return Err(format!(
                    "rendered states {rendered:?} are not in lifecycle order {order:?}"
                ))
            }
        }
    }
    Ok(rendered)
}

/// Rule 3: a redelivery runs nothing twice.
async fn check_redelivery(
    driver: &dyn Driver,
    host: &FrontendHost,
    exec: &Executor,
    filter: &RequestFilter,
    runs: &AtomicUsize,
) -> Result<(), String> {
    driver
        .deliver(
            host,
            &format!("{ECHO_OP} text=conformance-hello"),
            "conformance-1",
        )
        .await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let all = exec
        .list(filter, None, 10)
        .await
        .map_err(|e| e.to_string())?;
    if all.len() != 1 || runs.load(Ordering::SeqCst) != 1 {
        return Err(format!(
            "a redelivery created {} requests and {} runs; expected 1 and 1",
            all.len(),
            runs.load(Ordering::SeqCst)
        ));
    }
    Ok(())
}

/// Rule 4: shutdown is prompt: every `run()` returns soon after the token is cancelled.
async fn check_shutdown<E: std::fmt::Display>(
    shutdown: &CancellationToken,
    handles: Vec<tokio::task::JoinHandle<Result<(), E>>>,
    exec: &Executor,
) -> Result<(), String> {
    shutdown.cancel();
    for h in handles {
        match tokio::time::timeout(Duration::from_secs(10), h).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => return Err(format!("run() returned an error on shutdown: {e}")),
            Ok(Err(e)) => return Err(format!("run() panicked: {e}")),
            Err(_) => return Err("run() did not return within 10s of shutdown".into()),
        }
    }
    exec.shutdown(Duration::from_secs(5))
        .await
        .map_err(|e| e.to_string())
}

/// Check the codes of a frontend's error type (`code()`): distinct, and
/// `snake_case` ASCII, since logs, metrics and JSON error bodies carry them
/// and users match on them.
pub fn assert_stable_codes(codes: &[&str]) {
    let distinct: std::collections::HashSet<&&str> = codes.iter().collect();
    assert_eq!(distinct.len(), codes.len(), "codes repeat: {codes:?}");
    for c in codes {
        assert!(
            !c.is_empty() && c.chars().all(|ch| ch.is_ascii_lowercase() || ch == '_'),
            "error code {c:?} is not snake_case"
        );
    }
}

/// The problems `parse` (a frontend's section parser) reports for
/// `[frontends.NAME]` of the config `text`, as their lines of text
/// (`line 4: frontends.slack.bot_token …`): how a frontend tests that its
/// section's problems carry their lines. Panics if the config does not load
/// or has no such section, or if `parse` reports nothing.
pub fn section_problems<T: fmt::Debug>(
    text: &str,
    name: &str,
    parse: impl Fn(&super::factory::FrontendSection<'_>) -> Result<T, Vec<crate::config::ConfigIssue>>,
) -> Vec<String> {
    let cfg = Config::parse(text, Path::new("/"), "youops.toml", &|_| None)
        .unwrap_or_else(|e| panic!("the test config does not load:\n{e}"));
    let section = super::factory::FrontendSection::of(&cfg, name)
        .unwrap_or_else(|| panic!("the test config has no [frontends.{name}]"));
    match parse(&section) {
        Ok(v) => panic!("[frontends.{name}] was accepted: {v:?}"),
        Err(issues) => issues.iter().map(ToString::to_string).collect(),
    }
}
