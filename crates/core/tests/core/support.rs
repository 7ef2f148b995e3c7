//! The harness every topic shares: configs, an executor on a real log store,
//! waiting helpers and controllable builtins.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, Semaphore};
use youops_core::audit::{AuditStore, VerifyReport};
use youops_core::config::Config;
use youops_core::runner::{Builtin, BuiltinCall};
use youops_core::{
    Actor, AuditEvent, Executor, ExecutorBuilder, Origin, RequestId, RequestRecord, State,
    Submission,
};
use youops_store::{LogOptions, LogStore};

/// Principals shared by every config: alice, bob and carol hold `ops`; dave is
/// mapped but only holds `viewer`; `mallory` is mapped to nobody.
pub(crate) const PRINCIPALS: &str = r#"
[principals.alice]
roles = ["ops"]
identities = { cli = ["alice"] }

[principals.bob]
roles = ["ops"]
identities = { cli = ["bob"] }

[principals.carol]
roles = ["ops"]
identities = { cli = ["carol"] }

[principals.dave]
roles = ["viewer"]
identities = { cli = ["dave"] }
"#;

/// Runner paths (`fixtures/...`) resolve against this directory.
pub(crate) fn base_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests")
}

pub(crate) fn config(ops: &str) -> Config {
    let text = format!("{PRINCIPALS}\n{ops}");
    Config::parse(&text, &base_dir(), "test", &|_| None)
        .unwrap_or_else(|e| panic!("test config does not load:\n{e}"))
}

pub(crate) struct Harness {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) path: PathBuf,
    pub(crate) store: Arc<LogStore>,
    pub(crate) exec: Executor,
}

pub(crate) async fn start(
    ops: &str,
    setup: impl FnOnce(ExecutorBuilder) -> ExecutorBuilder,
) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let store = Arc::new(LogStore::open(&path, LogOptions::default()).unwrap());
    let exec = setup(Executor::builder(&config(ops), store.clone()))
        .build()
        .await
        .unwrap();
    Harness {
        dir,
        path,
        store,
        exec,
    }
}

/// Open a store, retrying while an earlier handle in this process is still
/// being torn down (the store holds a file lock until its last handle drops).
pub(crate) async fn reopen(path: &Path) -> Arc<LogStore> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match LogStore::open(path, LogOptions::default()) {
            Ok(s) => return Arc::new(s),
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("cannot reopen the store at {}: {e}", path.display()),
        }
    }
}

pub(crate) fn sub(op: &str, who: &str) -> Submission {
    Submission::new(op, Actor::new("cli", who), Origin::new("cli"))
}

pub(crate) fn who(name: &str) -> Actor {
    Actor::new("cli", name)
}

pub(crate) async fn within<T>(secs: u64, what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(secs), f)
        .await
        .unwrap_or_else(|_| panic!("timed out after {secs}s waiting for {what}"))
}

/// Wait until the request ends.
pub(crate) async fn done(exec: &Executor, id: RequestId) -> RequestRecord {
    within(30, "the request to end", exec.wait(id))
        .await
        .unwrap()
}

/// Wait until the request is running.
pub(crate) async fn running(exec: &Executor, id: RequestId) -> RequestRecord {
    reaches(exec, id, State::Running).await
}

/// Wait (up to 30 s) until `exec` sees request `id` in `state`.
pub(crate) async fn reaches(exec: &Executor, id: RequestId, state: State) -> RequestRecord {
    let what = format!("request {id} to be {state}");
    let r = within(30, &what, exec.wait_for(id, |r| r.state == state))
        .await
        .unwrap();
    assert_eq!(r.state, state, "{r:#?}");
    r
}

/// Poll `check` until it holds (for things that have no event to wait on).
pub(crate) async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(15);
    while !check().await {
        assert!(Instant::now() < deadline, "gave up waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub(crate) async fn labels(exec: &Executor, id: RequestId) -> Vec<String> {
    exec.events(id)
        .await
        .unwrap()
        .iter()
        .map(|e| e.body.label())
        .collect()
}

/// The chain verifies and covers every event.
pub(crate) async fn assert_chain_ok(store: &LogStore) -> VerifyReport {
    let report = store.verify().await.unwrap();
    assert!(report.ok(), "chain broken: {report:?}");
    let (head, _) = store.head().await.unwrap();
    assert_eq!(report.checked, head, "{report:?}");
    report
}

pub(crate) async fn all_events(store: &LogStore) -> Vec<AuditEvent> {
    store.events(0, usize::MAX).await.unwrap()
}

pub(crate) fn output(r: &RequestRecord) -> &str {
    &r.outcome
        .as_ref()
        .unwrap_or_else(|| panic!("no outcome: {r:#?}"))
        .output
}

/// A builtin that counts its calls.
pub(crate) fn counting(counter: Arc<AtomicUsize>) -> impl Builtin {
    move |call: BuiltinCall| {
        let counter = counter.clone();
        async move {
            counter.fetch_add(1, Ordering::SeqCst);
            Ok(format!("ran {}", call.op))
        }
    }
}

/// When a probe's builtin ran: started/ended instants, for overlap checks.
#[derive(Debug, Clone)]
pub(crate) struct Span {
    pub(crate) id: RequestId,
    pub(crate) start: Instant,
    pub(crate) end: Instant,
}

/// A builtin the test controls: it reports that it started, then waits for a
/// permit of `gate` (which the test hands out) before it finishes.
#[derive(Clone)]
pub(crate) struct Probe {
    pub(crate) gate: Arc<Semaphore>,
    pub(crate) started: mpsc::UnboundedSender<RequestId>,
    pub(crate) spans: Arc<Mutex<Vec<Span>>>,
    pub(crate) calls: Arc<AtomicUsize>,
}

impl Probe {
    pub(crate) fn new() -> (Probe, mpsc::UnboundedReceiver<RequestId>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let p = Probe {
            gate: Arc::new(Semaphore::new(0)),
            started: tx,
            spans: Arc::default(),
            calls: Arc::default(),
        };
        (p, rx)
    }

    pub(crate) fn builtin(&self) -> impl Builtin {
        let p = self.clone();
        move |call: BuiltinCall| {
            let p = p.clone();
            async move {
                p.calls.fetch_add(1, Ordering::SeqCst);
                let start = Instant::now();
                let _ = p.started.send(call.request_id);
                p.gate.acquire().await.map_err(|e| e.to_string())?.forget();
                let end = Instant::now();
                p.spans.lock().unwrap().push(Span {
                    id: call.request_id,
                    start,
                    end,
                });
                Ok(format!("{} done", call.request_id))
            }
        }
    }

    pub(crate) fn release(&self, n: usize) {
        self.gate.add_permits(n);
    }

    pub(crate) fn span(&self, id: RequestId) -> Span {
        self.spans
            .lock()
            .unwrap()
            .iter()
            .find(|s| s.id == id)
            .cloned()
            .unwrap_or_else(|| panic!("no span for {id}"))
    }
}

pub(crate) async fn next_start(rx: &mut mpsc::UnboundedReceiver<RequestId>) -> RequestId {
    within(30, "a builtin to start", rx.recv()).await.unwrap()
}

pub(crate) fn contains_bytes(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Whether a process exists and is not a zombie. Orphans are reparented to
/// PID 1, which may never reap them, so a zombie counts as gone.
pub(crate) fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => false,
        Ok(stat) => {
            let state = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.trim_start().chars().next());
            !matches!(state, Some('Z' | 'X' | 'x'))
        }
    }
}

pub(crate) const GREET_OPS: &str = r#"
[[ops]]
name = "greet"
roles = ["ops"]
runner = { type = "builtin", name = "greet" }
[[ops.params]]
name = "who"
type = "string"
[[ops.params]]
name = "times"
type = "int"
default = 1
"#;

pub(crate) fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}
