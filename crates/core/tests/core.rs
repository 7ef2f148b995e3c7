//! Integration tests of `youops-core` with real components: the log store
//! (`youops-store`) in a temp dir, real processes for `exec` runners, a real
//! local HTTP server for `http` runners. Each test proves one promise of the core.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, Semaphore};
use youops_core::audit::{expected_hash, verify_events, AuditStore, VerifyReport};
use youops_core::config::Config;
use youops_core::runner::{Builtin, BuiltinCall};
use youops_core::{
    Actor, AuditEvent, Error, EventBody, Executor, ExecutorBuilder, Origin, RequestFilter,
    RequestId, RequestRecord, State, Submission,
};
use youops_store::{LogOptions, LogStore};

// ---------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------

/// Principals shared by every config: alice, bob and carol hold `ops`; dave is
/// mapped but only holds `viewer`; `mallory` is mapped to nobody.
const PRINCIPALS: &str = r#"
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
fn base_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests")
}

fn config(ops: &str) -> Config {
    let text = format!("{PRINCIPALS}\n{ops}");
    Config::parse(&text, &base_dir(), "test", &|_| None)
        .unwrap_or_else(|e| panic!("test config does not load:\n{e}"))
}

struct Harness {
    dir: tempfile::TempDir,
    path: PathBuf,
    store: Arc<LogStore>,
    exec: Executor,
}

async fn start(ops: &str, setup: impl FnOnce(ExecutorBuilder) -> ExecutorBuilder) -> Harness {
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
async fn reopen(path: &Path) -> Arc<LogStore> {
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

fn sub(op: &str, who: &str) -> Submission {
    Submission::new(op, Actor::new("cli", who), Origin::new("cli"))
}

fn who(name: &str) -> Actor {
    Actor::new("cli", name)
}

async fn within<T>(secs: u64, what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(secs), f)
        .await
        .unwrap_or_else(|_| panic!("timed out after {secs}s waiting for {what}"))
}

/// Wait until the request ends.
async fn done(exec: &Executor, id: RequestId) -> RequestRecord {
    within(30, "the request to end", exec.wait(id))
        .await
        .unwrap()
}

/// Wait until the request is running.
async fn running(exec: &Executor, id: RequestId) -> RequestRecord {
    let r = within(
        30,
        "the request to run",
        exec.wait_for(id, |r| r.state == State::Running),
    )
    .await
    .unwrap();
    assert_eq!(r.state, State::Running, "{r:#?}");
    r
}

/// Poll `check` until it holds (for things that have no event to wait on).
async fn eventually<F, Fut>(what: &str, mut check: F)
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

async fn labels(exec: &Executor, id: RequestId) -> Vec<String> {
    exec.events(id)
        .await
        .unwrap()
        .iter()
        .map(|e| e.body.label())
        .collect()
}

/// The chain verifies and covers every event.
async fn assert_chain_ok(store: &LogStore) -> VerifyReport {
    let report = store.verify().await.unwrap();
    assert!(report.ok(), "chain broken: {report:?}");
    let (head, _) = store.head().await.unwrap();
    assert_eq!(report.checked, head, "{report:?}");
    report
}

async fn all_events(store: &LogStore) -> Vec<AuditEvent> {
    store.events(0, usize::MAX).await.unwrap()
}

fn output(r: &RequestRecord) -> &str {
    &r.outcome
        .as_ref()
        .unwrap_or_else(|| panic!("no outcome: {r:#?}"))
        .output
}

/// A builtin that counts its calls.
fn counting(counter: Arc<AtomicUsize>) -> impl Builtin {
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
struct Span {
    id: RequestId,
    start: Instant,
    end: Instant,
}

/// A builtin the test controls: it reports that it started, then waits for a
/// permit of `gate` (which the test hands out) before it finishes.
#[derive(Clone)]
struct Probe {
    gate: Arc<Semaphore>,
    started: mpsc::UnboundedSender<RequestId>,
    spans: Arc<Mutex<Vec<Span>>>,
    calls: Arc<AtomicUsize>,
}

impl Probe {
    fn new() -> (Probe, mpsc::UnboundedReceiver<RequestId>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let p = Probe {
            gate: Arc::new(Semaphore::new(0)),
            started: tx,
            spans: Arc::default(),
            calls: Arc::default(),
        };
        (p, rx)
    }

    fn builtin(&self) -> impl Builtin {
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

    fn release(&self, n: usize) {
        self.gate.add_permits(n);
    }

    fn span(&self, id: RequestId) -> Span {
        self.spans
            .lock()
            .unwrap()
            .iter()
            .find(|s| s.id == id)
            .cloned()
            .unwrap_or_else(|| panic!("no span for {id}"))
    }
}

async fn next_start(rx: &mut mpsc::UnboundedReceiver<RequestId>) -> RequestId {
    within(30, "a builtin to start", rx.recv()).await.unwrap()
}

fn contains_bytes(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Whether a process exists and is not a zombie. Orphans are reparented to
/// PID 1, which may never reap them, so a zombie counts as gone.
fn alive(pid: i32) -> bool {
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

const GREET_OPS: &str = r#"
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

// ---------------------------------------------------------------------------
// 1. Tamper evidence
// ---------------------------------------------------------------------------

fn replace_once(bytes: &[u8], from: &str, to: &str) -> Vec<u8> {
    let text = std::str::from_utf8(bytes).unwrap();
    assert_eq!(
        text.matches(from).count(),
        1,
        "`{from}` must occur exactly once in {text}"
    );
    text.replacen(from, to, 1).into_bytes()
}

/// The segment file holding event `seq`, its lines (one JSON event each) and
/// the event's line.
fn stored_event(store_dir: &Path, seq: u64) -> (PathBuf, Vec<Vec<u8>>, usize) {
    for file in files_under(&store_dir.join("log")) {
        let bytes = std::fs::read(&file).unwrap();
        let lines: Vec<Vec<u8>> = bytes
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(<[u8]>::to_vec)
            .collect();
        let found = lines
            .iter()
            .position(|l| serde_json::from_slice::<AuditEvent>(l).is_ok_and(|e| e.seq == seq));
        if let Some(index) = found {
            return (file, lines, index);
        }
    }
    panic!("no segment holds event #{seq}");
}

/// Write a segment's lines back (the store is closed).
fn write_lines(file: &Path, lines: &[Vec<u8>]) {
    let mut bytes = lines.join(&b'\n');
    bytes.push(b'\n');
    std::fs::write(file, bytes).unwrap();
}

/// What an auditor finds in a store whose files were changed: the store
/// refuses to open, naming the record, or opens (checking only what it must)
/// and `verify` names it. The seq and reason of the first broken record.
async fn first_broken(path: &Path) -> (u64, String) {
    let mut opts = LogOptions::default();
    opts.verify_on_open = false;
    match LogStore::open(path, opts) {
        Ok(store) => {
            let report = store.verify().await.unwrap();
            let b = report
                .broken
                .clone()
                .unwrap_or_else(|| panic!("tampering went unnoticed: {report:?}"));
            (b.seq, b.reason)
        }
        Err(e) => {
            let text = e.to_string();
            let seq = text
                .split('#')
                .nth(1)
                .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("the refusal names no record: {text}"));
            (seq, text)
        }
    }
}

/// Every event of the store's files that decodes, in order, as an export would
/// hold them.
fn segment_events(store_dir: &Path) -> Vec<AuditEvent> {
    let mut events = Vec::new();
    for file in files_under(&store_dir.join("log")) {
        for line in std::fs::read(&file).unwrap().split(|b| *b == b'\n') {
            if let Ok(e) = serde_json::from_slice::<AuditEvent>(line) {
                events.push(e);
            }
        }
    }
    events.sort_by_key(|e| e.seq);
    events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampering_with_one_stored_event_is_named_exactly() {
    let counter = Arc::new(AtomicUsize::new(0));
    let h = start(GREET_OPS, |b| b.builtin("greet", counting(counter.clone()))).await;
    let mut ids = Vec::new();
    for name in ["ann", "ben", "cat"] {
        let t = h
            .exec
            .submit(sub("greet", "alice").arg("who", name))
            .await
            .unwrap();
        let r = done(&h.exec, t.record.request.id).await;
        assert_eq!(r.state, State::Succeeded, "{r:#?}");
        ids.push(t.record.request.id);
    }
    // Stop everything and open the store afresh, as an auditor would.
    let Harness {
        dir: _dir,
        path,
        store,
        exec,
    } = h;
    exec.shutdown(Duration::from_secs(5)).await.unwrap();
    drop(exec);
    drop(store);
    let store = reopen(&path).await;

    let (count, _) = store.head().await.unwrap();
    assert_eq!(count, 9, "three requests of received, running, succeeded");
    let intact = assert_chain_ok(&store).await;
    assert_eq!(intact.checked, count);
    let exported = verify_events(all_events(&store).await);
    assert_eq!(exported, intact);

    let middle = store.request_events(ids[1]).await.unwrap();
    let seqs: Vec<u64> = middle.iter().map(|e| e.seq).collect();
    let labels: Vec<String> = middle.iter().map(|e| e.body.label()).collect();
    assert_eq!(labels, ["received", "running", "succeeded"]);
    let (received, succeeded) = (seqs[0], seqs[2]);

    type Edit = Box<dyn Fn(&[u8]) -> Vec<u8>>;
    struct Tamper {
        name: &'static str,
        seq: u64,
        edit: Edit,
        broken_at: u64,
        reason: &'static str,
        /// `false` when the altered record no longer decodes, so it cannot be exported.
        exportable: bool,
    }
    let rehash: Edit = Box::new(|bytes| {
        // An attacker who also recomputes the record's own hash still breaks
        // the link to the next record.
        let mut ev: AuditEvent = serde_json::from_slice(bytes).unwrap();
        match &mut ev.body {
            EventBody::Received { request } => {
                std::sync::Arc::make_mut(request).op = "grant".into()
            }
            other => panic!("expected a received event, got {other:?}"),
        }
        ev.hash = expected_hash(&ev);
        serde_json::to_vec(&ev).unwrap()
    });
    let table = vec![
        Tamper {
            name: "op renamed, same length",
            seq: received,
            edit: Box::new(|b| replace_once(b, r#""op":"greet""#, r#""op":"grant""#)),
            broken_at: received,
            reason: "altered",
            exportable: true,
        },
        Tamper {
            name: "op renamed, different length",
            seq: received,
            edit: Box::new(|b| replace_once(b, r#""op":"greet""#, r#""op":"drop-database""#)),
            broken_at: received,
            reason: "altered",
            exportable: true,
        },
        Tamper {
            name: "argument changed",
            seq: received,
            edit: Box::new(|b| replace_once(b, r#""who":"ben""#, r#""who":"eve""#)),
            broken_at: received,
            reason: "altered",
            exportable: true,
        },
        Tamper {
            name: "outcome rewritten",
            seq: succeeded,
            edit: Box::new(|b| replace_once(b, r#""to":"succeeded""#, r#""to":"failed""#)),
            broken_at: succeeded,
            reason: "altered",
            exportable: true,
        },
        Tamper {
            name: "altered and re-hashed",
            seq: received,
            edit: rehash,
            broken_at: received + 1,
            reason: "does not match the previous record's hash",
            exportable: true,
        },
        Tamper {
            name: "bytes that do not decode",
            seq: received,
            edit: Box::new(|b| b[..b.len() / 2].to_vec()),
            broken_at: received,
            // The store reads the hashes off a line before it decodes it.
            reason: "does not end with its prev_hash and hash",
            exportable: false,
        },
    ];
    drop(store);
    for t in &table {
        let (file, mut lines, index) = stored_event(&path, t.seq);
        let original = lines.clone();
        let altered = (t.edit)(&lines[index]);
        assert_ne!(altered, lines[index], "{}", t.name);
        lines[index] = altered;
        write_lines(&file, &lines);

        let (seq, reason) = first_broken(&path).await;
        assert_eq!(seq, t.broken_at, "{}: {reason}", t.name);
        assert!(
            reason.contains(t.reason),
            "{}: reason `{reason}` should mention `{}`",
            t.name,
            t.reason
        );
        if t.exportable {
            let offline = verify_events(segment_events(&path));
            assert_eq!(
                offline.broken.map(|b| b.seq),
                Some(t.broken_at),
                "{}: offline verification disagrees",
                t.name
            );
        }
        write_lines(&file, &original);
        let store = reopen(&path).await;
        assert_eq!(assert_chain_ok(&store).await.checked, count, "{}", t.name);
    }

    // A removed record leaves a gap: the store names the missing record, an
    // export's verification the record after it.
    let (file, mut lines, index) = stored_event(&path, received);
    let original = lines.clone();
    lines.remove(index);
    write_lines(&file, &lines);
    let (seq, reason) = first_broken(&path).await;
    assert_eq!(seq, received, "{reason}");
    assert!(reason.contains("missing"), "{reason}");
    let offline = verify_events(segment_events(&path));
    assert_eq!(offline.broken.map(|b| b.seq), Some(received + 1));
    write_lines(&file, &original);
    let store = reopen(&path).await;
    assert_chain_ok(&store).await;
}

// ---------------------------------------------------------------------------
// 2. No shell ever sees user input
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shell_metacharacters_reach_the_process_literally() {
    // The daemon's own environment must not leak into ops by default.
    const DAEMON_SECRET: &str = "daemon-only-value-7f3a";
    std::env::set_var("YOUOPS_TEST_SECRET_ENV", DAEMON_SECRET);
    let ops = r#"
[[ops]]
name = "echo.args"
roles = ["ops"]
runner = { type = "exec", argv = ["/usr/bin/printf", '[%s]\n', "{a}"] }
[[ops.params]]
name = "a"
type = "string"

[[ops]]
name = "show.env"
roles = ["ops"]
runner = { type = "exec", argv = ["/usr/bin/env"] }
[[ops.params]]
name = "a"
type = "string"

[[ops]]
name = "show.env.inherit"
roles = ["ops"]
runner = { type = "exec", argv = ["/usr/bin/env"], inherit_env = true }
[[ops.params]]
name = "a"
type = "string"
"#;
    let h = start(ops, |b| b).await;
    let marker = h.dir.path().join("pwned");
    let m = marker.display().to_string();
    let values = [
        "x; rm -rf /".to_string(),
        format!("x; touch {m}"),
        format!("$(touch {m})"),
        format!("`touch {m}`"),
        format!("a && touch {m} || touch {m}"),
        format!("> {m}"),
        "$(id)".to_string(),
        "it's \"quoted\" with  spaces\nand a newline\tand a tab".to_string(),
        "*".to_string(),
        "{a} {{a}} ${HOME} $HOME %s %d \\n".to_string(),
        "-v".to_string(),
        String::new(),
    ];
    for v in &values {
        let t = h
            .exec
            .submit(sub("echo.args", "alice").arg("a", v.as_str()))
            .await
            .unwrap();
        let r = done(&h.exec, t.record.request.id).await;
        assert_eq!(r.state, State::Succeeded, "{v:?}: {r:#?}");
        assert_eq!(output(&r), format!("[{v}]\n"), "value {v:?}");
    }
    assert!(!marker.exists(), "a shell ran user input");

    let tricky = "x; $(id) 'q' `id`\nsecond line";
    for (op, inherit) in [("show.env", false), ("show.env.inherit", true)] {
        let t = h
            .exec
            .submit(sub(op, "alice").arg("a", tricky))
            .await
            .unwrap();
        let r = done(&h.exec, t.record.request.id).await;
        assert_eq!(r.state, State::Succeeded, "{r:#?}");
        let out = output(&r);
        assert!(
            out.contains(&format!("YOUOPS_PARAM_A={tricky}\n")),
            "{op}: {out}"
        );
        assert!(
            out.contains(&format!("YOUOPS_REQUEST_ID={}\n", t.record.request.id)),
            "{op}: {out}"
        );
        assert!(out.contains("YOUOPS_PRINCIPAL=alice\n"), "{op}: {out}");
        assert_eq!(
            out.contains(&format!("YOUOPS_TEST_SECRET_ENV={DAEMON_SECRET}")),
            inherit,
            "{op} (inherit_env = {inherit}): {out}"
        );
    }
    assert_chain_ok(&h.store).await;
}

// ---------------------------------------------------------------------------
// 3. Dedup
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dedup_key_runs_the_work_once() {
    let counter = Arc::new(AtomicUsize::new(0));
    let h = start(GREET_OPS, |b| b.builtin("greet", counting(counter.clone()))).await;

    // Sequential redelivery.
    let first = h
        .exec
        .submit(sub("greet", "alice").arg("who", "a").dedup("delivery-1"))
        .await
        .unwrap();
    assert!(!first.duplicate);
    let id = first.record.request.id;
    done(&h.exec, id).await;
    let again = h
        .exec
        .submit(sub("greet", "bob").arg("who", "other").dedup("delivery-1"))
        .await
        .unwrap();
    assert!(again.duplicate);
    assert_eq!(again.record.request.id, id);
    assert_eq!(again.record.state, State::Succeeded);

    // Concurrent redelivery: 16 at once.
    let s = sub("greet", "alice").arg("who", "b").dedup("delivery-2");
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let exec = h.exec.clone();
            let s = s.clone();
            tokio::spawn(async move { exec.submit(s).await })
        })
        .collect();
    let mut tickets = Vec::new();
    for t in tasks {
        tickets.push(t.await.unwrap().unwrap());
    }
    let originals: Vec<_> = tickets.iter().filter(|t| !t.duplicate).collect();
    assert_eq!(originals.len(), 1, "exactly one submission is the original");
    let id2 = originals[0].record.request.id;
    assert!(tickets.iter().all(|t| t.record.request.id == id2));
    assert_eq!(tickets.iter().filter(|t| t.duplicate).count(), 15);
    assert_eq!(done(&h.exec, id2).await.state, State::Succeeded);

    let all = h
        .exec
        .list(&RequestFilter::default(), None, 1000)
        .await
        .unwrap();
    for (key, want) in [("delivery-1", id), ("delivery-2", id2)] {
        let with_key: Vec<_> = all
            .iter()
            .filter(|r| r.request.dedup_key.as_deref() == Some(key))
            .collect();
        assert_eq!(with_key.len(), 1, "{key}: {with_key:#?}");
        assert_eq!(with_key[0].request.id, want);
        assert_eq!(h.store.find_dedup(key).await.unwrap(), Some(want));
    }
    assert_eq!(all.len(), 2, "no other request was recorded");
    assert_eq!(
        counter.load(Ordering::SeqCst),
        2,
        "the work ran once per key"
    );
    assert_chain_ok(&h.store).await;
}

// ---------------------------------------------------------------------------
// 4. Approvals
// ---------------------------------------------------------------------------

const APPROVAL_OPS: &str = r#"
[[ops]]
name = "db.drop"
roles = ["ops"]
approvals = 1
runner = { type = "builtin", name = "work" }
[[ops.params]]
name = "db"
type = "string"

[[ops]]
name = "db.nuke"
roles = ["ops"]
approvals = 2
runner = { type = "builtin", name = "work" }
[[ops.params]]
name = "db"
type = "string"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approvals_are_bound_to_request_approver_and_count() {
    let counter = Arc::new(AtomicUsize::new(0));
    let h = start(APPROVAL_OPS, |b| {
        b.builtin("work", counting(counter.clone()))
    })
    .await;
    let exec = &h.exec;
    let ran = || counter.load(Ordering::SeqCst);

    // One approval needed.
    let t = exec
        .submit(sub("db.drop", "alice").arg("db", "users"))
        .await
        .unwrap();
    let id = t.record.request.id;
    assert_eq!(t.record.state, State::PendingApproval);
    assert_eq!(t.record.approvals_needed, 1);
    let digest = t.record.request.digest.clone();

    match exec.approve(id, &who("alice"), None).await {
        Err(Error::Approval(m)) => assert!(m.contains("alice"), "{m}"),
        other => panic!("requester approved own request: {other:?}"),
    }
    match exec.approve(id, &who("dave"), None).await {
        Err(Error::Approval(m)) => assert!(m.contains("dave") && m.contains("may not"), "{m}"),
        other => panic!("unauthorized approval accepted: {other:?}"),
    }
    match exec.approve(id, &who("mallory"), None).await {
        Err(Error::UnknownIdentity { external_id, .. }) => assert_eq!(external_id, "mallory"),
        other => panic!("unmapped approver accepted: {other:?}"),
    }
    let wrong = "0".repeat(64);
    match exec.approve(id, &who("bob"), Some(&wrong)).await {
        Err(Error::Approval(m)) => assert!(m.contains("digest mismatch"), "{m}"),
        other => panic!("approval of different content accepted: {other:?}"),
    }
    assert_eq!(ran(), 0, "nothing runs before approval");
    assert_eq!(exec.get(id).await.unwrap().state, State::PendingApproval);

    let r = exec.approve(id, &who("bob"), Some(&digest)).await.unwrap();
    assert_eq!(r.state, State::Approved);
    let r = done(exec, id).await;
    assert_eq!(r.state, State::Succeeded, "{r:#?}");
    assert_eq!(ran(), 1);
    assert_eq!(r.approvals.len(), 1);
    assert_eq!(r.approvals[0].by.principal.as_deref(), Some("bob"));
    assert_eq!(r.approvals[0].digest, digest);
    match exec.approve(id, &who("carol"), None).await {
        Err(Error::Conflict(m)) => assert!(m.contains("succeeded"), "{m}"),
        other => panic!("approval of a finished request: {other:?}"),
    }
    assert_eq!(
        labels(exec, id).await,
        [
            "received",
            "pending_approval",
            "approve",
            "approved",
            "running",
            "succeeded"
        ]
    );

    // Two approvals needed: two distinct approvers.
    let t = exec
        .submit(sub("db.nuke", "alice").arg("db", "orders"))
        .await
        .unwrap();
    let id = t.record.request.id;
    assert_eq!(t.record.approvals_needed, 2);
    let r = exec.approve(id, &who("bob"), None).await.unwrap();
    assert_eq!(r.state, State::PendingApproval);
    assert_eq!(r.approvals_needed, 1);
    match exec.approve(id, &who("bob"), None).await {
        Err(Error::Approval(m)) => assert!(m.contains("already approved"), "{m}"),
        other => panic!("the same approver counted twice: {other:?}"),
    }
    assert!(exec.approve(id, &who("alice"), None).await.is_err());
    assert_eq!(ran(), 1, "one approval of two runs nothing");
    let r = exec.approve(id, &who("carol"), None).await.unwrap();
    assert_eq!(r.state, State::Approved);
    let r = done(exec, id).await;
    assert_eq!(r.state, State::Succeeded, "{r:#?}");
    assert_eq!(ran(), 2);
    let approvers: Vec<_> = r
        .approvals
        .iter()
        .map(|a| a.by.principal.clone().unwrap())
        .collect();
    assert_eq!(approvers, ["bob", "carol"]);

    // Denial by an eligible approver.
    let t = exec
        .submit(sub("db.drop", "alice").arg("db", "billing"))
        .await
        .unwrap();
    let id = t.record.request.id;
    assert!(exec
        .deny(id, &who("dave"), Some("no".into()))
        .await
        .is_err());
    let r = exec
        .deny(id, &who("bob"), Some("not on a Friday".into()))
        .await
        .unwrap();
    assert_eq!(r.state, State::Rejected);
    let reason = r.reason.clone().unwrap();
    assert!(
        reason.contains("bob") && reason.contains("not on a Friday"),
        "{reason}"
    );
    assert!(matches!(
        exec.approve(id, &who("carol"), None).await,
        Err(Error::Conflict(_))
    ));
    assert_eq!(done(exec, id).await.state, State::Rejected);
    assert_eq!(ran(), 2, "a rejected request never runs");
    assert_eq!(exec.pending_approvals(), 0);
    assert_chain_ok(&h.store).await;
}

// ---------------------------------------------------------------------------
// 5. Approval expiry
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_approvals_expire() {
    let ops = r#"
[[ops]]
name = "db.drop"
roles = ["ops"]
approvals = 1
approval_ttl = "1s"
runner = { type = "builtin", name = "work" }
"#;
    // The sweeper expires it.
    let counter = Arc::new(AtomicUsize::new(0));
    let h = start(ops, |b| {
        b.builtin("work", counting(counter.clone()))
            .expiry_sweep(Duration::from_millis(100))
    })
    .await;
    let t = h.exec.submit(sub("db.drop", "alice")).await.unwrap();
    let id = t.record.request.id;
    assert_eq!(t.record.state, State::PendingApproval);
    let r = within(10, "expiry", h.exec.wait(id)).await.unwrap();
    assert_eq!(r.state, State::Expired, "{r:#?}");
    assert!(r.reason.unwrap().contains("did not arrive"));
    assert!(h.exec.approve(id, &who("bob"), None).await.is_err());
    assert_eq!(h.exec.get(id).await.unwrap().state, State::Expired);
    assert_eq!(h.exec.pending_approvals(), 0);

    // Before the sweeper comes round, approving an overdue request is refused
    // (and expires it).
    let counter2 = Arc::new(AtomicUsize::new(0));
    let h2 = start(ops, |b| {
        b.builtin("work", counting(counter2.clone()))
            .expiry_sweep(Duration::from_secs(3600))
    })
    .await;
    let t = h2.exec.submit(sub("db.drop", "alice")).await.unwrap();
    let id = t.record.request.id;
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert_eq!(
        h2.exec.get(id).await.unwrap().state,
        State::PendingApproval,
        "the sweeper must not have run yet"
    );
    match h2.exec.approve(id, &who("bob"), None).await {
        Err(Error::Approval(m)) => assert!(m.contains("expired"), "{m}"),
        other => panic!("late approval accepted: {other:?}"),
    }
    assert_eq!(h2.exec.get(id).await.unwrap().state, State::Expired);
    assert_eq!(counter.load(Ordering::SeqCst), 0);
    assert_eq!(counter2.load(Ordering::SeqCst), 0);
    assert_chain_ok(&h.store).await;
    assert_chain_ok(&h2.store).await;
}

// ---------------------------------------------------------------------------
// 6. and 7. Timeouts and cancel take down the whole process group
// ---------------------------------------------------------------------------

const TREE_OPS: &str = r#"
[[ops]]
name = "tree.short"
roles = ["ops"]
timeout = "5s"
runner = { type = "exec", argv = ["/bin/sh", "fixtures/spawn_tree.sh", "{dir}"] }
[[ops.params]]
name = "dir"
type = "string"

[[ops]]
name = "tree.long"
roles = ["ops"]
timeout = "5m"
runner = { type = "exec", argv = ["/bin/sh", "fixtures/spawn_tree.sh", "{dir}"] }
[[ops.params]]
name = "dir"
type = "string"
"#;

/// Wait for the fixture to record its pids: shell, then its two children.
async fn tree_pids(dir: &Path) -> Vec<i32> {
    let file = dir.join("pids");
    eventually("the fixture's pid file", || {
        let f = file.clone();
        async move { f.exists() }
    })
    .await;
    let pids: Vec<i32> = std::fs::read_to_string(&file)
        .unwrap()
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    assert_eq!(pids.len(), 3, "{pids:?}");
    pids
}

async fn assert_all_gone(pids: &[i32]) {
    let pids = pids.to_vec();
    eventually("every process of the tree to die", || {
        let pids = pids.clone();
        async move { pids.iter().all(|p| !alive(*p)) }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_kills_the_whole_process_group() {
    let h = start(TREE_OPS, |b| b).await;
    let work = tempfile::tempdir().unwrap();
    let t = h
        .exec
        .submit(sub("tree.short", "alice").arg("dir", work.path().display().to_string()))
        .await
        .unwrap();
    let id = t.record.request.id;
    let pids = tree_pids(work.path()).await;
    let r = done(&h.exec, id).await;
    assert_eq!(r.state, State::TimedOut, "{r:#?}");
    assert!(r.reason.as_deref().unwrap().contains("timed out after 5s"));
    let o = r.outcome.as_ref().unwrap();
    assert!(o.output.contains("tree started"), "{o:?}");
    assert!(o.duration_ms < 60_000, "{o:?}");
    assert_all_gone(&pids).await;
    assert_chain_ok(&h.store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_a_running_process_tree() {
    let h = start(TREE_OPS, |b| b).await;
    let exec = &h.exec;
    let work = tempfile::tempdir().unwrap();
    let t = exec
        .submit(sub("tree.long", "alice").arg("dir", work.path().display().to_string()))
        .await
        .unwrap();
    let id = t.record.request.id;
    running(exec, id).await;
    let pids = tree_pids(work.path()).await;
    assert!(pids.iter().all(|p| alive(*p)), "the tree runs: {pids:?}");

    match exec.cancel(id, &who("dave")).await {
        Err(Error::Forbidden(m)) => assert!(m.contains("dave"), "{m}"),
        other => panic!("unrelated principal cancelled: {other:?}"),
    }
    assert!(matches!(
        exec.cancel(id, &who("mallory")).await,
        Err(Error::UnknownIdentity { .. })
    ));
    assert!(
        pids.iter().all(|p| alive(*p)),
        "a refused cancel stops nothing"
    );
    assert_eq!(exec.get(id).await.unwrap().state, State::Running);

    let r = within(30, "cancel", exec.cancel(id, &who("alice")))
        .await
        .unwrap();
    assert_eq!(r.state, State::Cancelled, "{r:#?}");
    assert_all_gone(&pids).await;
    assert!(matches!(
        exec.cancel(id, &who("alice")).await,
        Err(Error::Conflict(_))
    ));
    assert!(labels(exec, id)
        .await
        .contains(&"notice:cancel_requested".to_string()));

    // An approver of the op may cancel someone else's run too.
    let work2 = tempfile::tempdir().unwrap();
    let t = exec
        .submit(sub("tree.long", "alice").arg("dir", work2.path().display().to_string()))
        .await
        .unwrap();
    let id = t.record.request.id;
    let pids = tree_pids(work2.path()).await;
    let r = within(30, "cancel", exec.cancel(id, &who("bob")))
        .await
        .unwrap();
    assert_eq!(r.state, State::Cancelled, "{r:#?}");
    assert_all_gone(&pids).await;
    // The run's task forgets the request just after recording its end.
    eventually("no run to be left", || async { exec.running() == 0 }).await;
    assert_chain_ok(&h.store).await;
}

// ---------------------------------------------------------------------------
// 8. Lock keys
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_keys_serialize_same_target_only() {
    let ops = r#"
[[ops]]
name = "deploy"
roles = ["ops"]
lock = "deploy:{env}"
runner = { type = "builtin", name = "deploy" }
[[ops.params]]
name = "env"
type = "enum"
values = ["prod", "staging"]

[[ops]]
name = "deploy.strict"
roles = ["ops"]
lock = "strict:{env}"
lock_mode = "refuse"
runner = { type = "builtin", name = "strict" }
[[ops.params]]
name = "env"
type = "enum"
values = ["prod", "staging"]
"#;
    let (queue, mut queue_rx) = Probe::new();
    let (strict, mut strict_rx) = Probe::new();
    let h = start(ops, |b| {
        b.builtin("deploy", queue.builtin())
            .builtin("strict", strict.builtin())
    })
    .await;
    let exec = &h.exec;
    let deploy = |env: &str| sub("deploy", "alice").arg("env", env);

    // Same key: the second waits for the first.
    let r1 = exec.submit(deploy("prod")).await.unwrap().record.request.id;
    assert_eq!(next_start(&mut queue_rx).await, r1);
    let r2 = exec.submit(deploy("prod")).await.unwrap().record.request.id;
    eventually("the second run to queue for the lock", || async {
        labels(exec, r2)
            .await
            .contains(&"notice:lock_wait".to_string())
    })
    .await;
    let notice = exec
        .events(r2)
        .await
        .unwrap()
        .into_iter()
        .find_map(|e| match e.body {
            EventBody::Notice { kind, message, .. } if kind == "lock_wait" => Some(message),
            _ => None,
        })
        .unwrap();
    assert!(
        notice.contains("deploy:prod") && notice.contains(&r1.to_string()),
        "{notice}"
    );
    assert!(queue_rx.try_recv().is_err(), "the second run started early");
    assert_eq!(queue.calls.load(Ordering::SeqCst), 1);
    queue.release(1);
    assert_eq!(next_start(&mut queue_rx).await, r2);
    queue.release(1);
    assert_eq!(done(exec, r1).await.state, State::Succeeded);
    assert_eq!(done(exec, r2).await.state, State::Succeeded);
    let (s1, s2) = (queue.span(r1), queue.span(r2));
    assert!(
        s1.end <= s2.start,
        "runs with the same lock key overlapped: {s1:?} {s2:?}"
    );

    // Different keys: both run at the same time (each started before either
    // was allowed to finish).
    let r3 = exec.submit(deploy("prod")).await.unwrap().record.request.id;
    let r4 = exec
        .submit(deploy("staging"))
        .await
        .unwrap()
        .record
        .request
        .id;
    let mut started = vec![
        next_start(&mut queue_rx).await,
        next_start(&mut queue_rx).await,
    ];
    started.sort();
    let mut want = vec![r3, r4];
    want.sort();
    assert_eq!(started, want);
    queue.release(2);
    assert_eq!(done(exec, r3).await.state, State::Succeeded);
    assert_eq!(done(exec, r4).await.state, State::Succeeded);
    let (s3, s4) = (queue.span(r3), queue.span(r4));
    assert!(s3.start.max(s4.start) < s3.end.min(s4.end), "{s3:?} {s4:?}");

    // lock_mode = "refuse": the second fails at once, naming the lock and holder.
    let strict_sub = |env: &str| sub("deploy.strict", "alice").arg("env", env);
    let r5 = exec
        .submit(strict_sub("prod"))
        .await
        .unwrap()
        .record
        .request
        .id;
    assert_eq!(next_start(&mut strict_rx).await, r5);
    let r6 = exec
        .submit(strict_sub("prod"))
        .await
        .unwrap()
        .record
        .request
        .id;
    let r = done(exec, r6).await;
    assert_eq!(r.state, State::Failed, "{r:#?}");
    let reason = r.reason.unwrap();
    assert!(
        reason.contains("strict:prod") && reason.contains(&r5.to_string()),
        "{reason}"
    );
    let r7 = exec
        .submit(strict_sub("staging"))
        .await
        .unwrap()
        .record
        .request
        .id;
    assert_eq!(next_start(&mut strict_rx).await, r7);
    strict.release(2);
    assert_eq!(done(exec, r5).await.state, State::Succeeded);
    assert_eq!(done(exec, r7).await.state, State::Succeeded);
    assert_eq!(
        strict.calls.load(Ordering::SeqCst),
        2,
        "the refused run never ran"
    );
    assert_chain_ok(&h.store).await;
}

// ---------------------------------------------------------------------------
// 9. Output cap and secrets
// ---------------------------------------------------------------------------

fn files_under(dir: &Path) -> Vec<PathBuf> {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_is_capped_and_secrets_never_stored() {
    const SECRET: &str = "hunter2-Zq9XbV7pLw";
    let ops = r#"
[[ops]]
name = "noisy"
roles = ["ops"]
output_limit = "1KiB"
runner = { type = "exec", argv = ["/bin/sh", "-c", 'printf HEAD; yes 0123456789 | head -c 1048576; printf TAIL'] }

[[ops]]
name = "vault.login"
roles = ["ops"]
runner = { type = "exec", argv = ["/bin/sh", "-c", 'echo "user=$YOUOPS_PARAM_USER token=$YOUOPS_PARAM_TOKEN"; echo "stderr token=$YOUOPS_PARAM_TOKEN" >&2; echo "arg=$1"', "sh", "{token}"] }
[[ops.params]]
name = "user"
type = "string"
[[ops.params]]
name = "token"
type = "secret"

[[ops]]
name = "vault.leaky"
roles = ["ops"]
output_limit = "1KiB"
runner = { type = "exec", argv = ["/bin/sh", "-c", '''printf '%0505d' 0; printf '%s' "$YOUOPS_PARAM_TOKEN"; yes 0123456789 | head -c 4096; printf '%s' "$YOUOPS_PARAM_TOKEN"; printf '%0500d\n' 0'''] }
[[ops.params]]
name = "token"
type = "secret"
"#;
    let h = start(ops, |b| b).await;
    let exec = &h.exec;

    let t = exec.submit(sub("noisy", "alice")).await.unwrap();
    let r = done(exec, t.record.request.id).await;
    assert_eq!(r.state, State::Succeeded, "{r:#?}");
    let o = r.outcome.unwrap();
    let total = 4 + 1_048_576 + 4;
    assert_eq!(o.output_truncated_bytes, total - 1024, "{}", o.output);
    assert!(o.output.starts_with("HEAD0123456789"), "{}", o.output);
    assert!(o.output.ends_with("TAIL"), "{}", o.output);
    assert!(
        o.output
            .contains(&format!("{} bytes of output omitted", total - 1024)),
        "{}",
        o.output
    );
    assert!(o.output.len() < 1024 + 200, "{}", o.output.len());

    let t = exec
        .submit(
            sub("vault.login", "alice")
                .arg("user", "bob")
                .arg("token", SECRET),
        )
        .await
        .unwrap();
    assert_eq!(t.record.request.args["token"].as_text(), "********");
    assert_eq!(t.record.request.secret_args, ["token"]);
    let r = done(exec, t.record.request.id).await;
    assert_eq!(r.state, State::Succeeded, "{r:#?}");
    let out = output(&r);
    for line in [
        "user=bob token=********\n",
        "stderr token=********\n",
        "arg=********\n",
    ] {
        assert!(out.contains(line), "missing `{line}` in {out}");
    }
    assert!(!out.contains(SECRET), "{out}");

    // A secret cut in two by the cap: neither visible part may show. The head
    // keeps 512 bytes (505 zeros and the secret's first 7), the tail 512 (the
    // secret's last 11, 500 zeros and a newline).
    let t = exec
        .submit(sub("vault.leaky", "alice").arg("token", SECRET))
        .await
        .unwrap();
    let r = done(exec, t.record.request.id).await;
    assert_eq!(r.state, State::Succeeded, "{r:#?}");
    let out = output(&r);
    assert!(out.contains("bytes of output omitted"), "{out}");
    let (first, last) = SECRET.split_at(7);
    assert!(
        !out.contains(first) && !out.contains(last),
        "part of a secret cut by the output cap leaked: {out}"
    );
    assert!(
        out.starts_with(&format!("{}********", "0".repeat(505))),
        "{out}"
    );
    assert!(
        out.ends_with(&format!("********{}\n", "0".repeat(500))),
        "{out}"
    );

    // Nowhere in the store: not in any exported event, not in any file on
    // disk (the log's segments and the index).
    h.store.flush().await.unwrap();
    let files = files_under(&h.path);
    assert!(
        files.iter().any(|f| f.ends_with("index.redb")) && files.len() >= 3,
        "the scan saw the store: {files:?}"
    );
    let events = all_events(&h.store).await;
    let json = serde_json::to_string(&events).unwrap();
    assert!(json.contains("********"));
    assert!(!json.contains(SECRET));
    for file in files_under(&h.path) {
        let bytes = std::fs::read(&file).unwrap();
        assert!(
            !contains_bytes(&bytes, SECRET.as_bytes()),
            "secret on disk in {}",
            file.display()
        );
    }
    assert_chain_ok(&h.store).await;
}

// ---------------------------------------------------------------------------
// 10. Crash recovery
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_leaves_requests_interrupted_not_rerun() {
    let ops = r#"
[[ops]]
name = "forever"
roles = ["ops"]
runner = { type = "builtin", name = "forever" }

[[ops]]
name = "db.drop"
roles = ["ops"]
approvals = 1
runner = { type = "builtin", name = "work" }
[[ops.params]]
name = "db"
type = "string"

[[ops]]
name = "vault.rotate"
roles = ["ops"]
approvals = 1
runner = { type = "builtin", name = "work" }
[[ops.params]]
name = "token"
type = "secret"
"#;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let (probe, _rx) = Probe::new();
    let work = Arc::new(AtomicUsize::new(0));

    // Process A runs on its own runtime; dropping that runtime mid-run drops
    // every task with no shutdown, as a crash would.
    let ids = {
        let (path, probe, work, ops) = (path.clone(), probe.clone(), work.clone(), ops);
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            let ids = rt.block_on(async move {
                let store = Arc::new(LogStore::open(&path, LogOptions::default()).unwrap());
                let exec = Executor::builder(&config(ops), store)
                    .builtin("forever", probe.builtin())
                    .builtin("work", counting(work))
                    .build()
                    .await
                    .unwrap();
                let run = exec.submit(sub("forever", "alice")).await.unwrap();
                let run = run.record.request.id;
                running(&exec, run).await;
                let plain = exec
                    .submit(sub("db.drop", "alice").arg("db", "users"))
                    .await
                    .unwrap()
                    .record
                    .request
                    .id;
                let secret = exec
                    .submit(sub("vault.rotate", "alice").arg("token", "s3cret-value-xyz"))
                    .await
                    .unwrap()
                    .record
                    .request
                    .id;
                (run, plain, secret)
            });
            drop(rt);
            ids
        })
        .join()
        .unwrap()
    };
    let (run, plain, secret) = ids;
    assert_eq!(probe.calls.load(Ordering::SeqCst), 1);

    // Process B starts on the same store.
    let store = reopen(&path).await;
    let exec = Executor::builder(&config(ops), store.clone())
        .builtin("forever", probe.builtin())
        .builtin("work", counting(work.clone()))
        .build()
        .await
        .unwrap();
    let r = exec.get(run).await.unwrap();
    assert_eq!(r.state, State::Interrupted, "{r:#?}");
    let reason = r.reason.unwrap();
    assert!(
        reason.contains("running") && reason.contains("not re-run"),
        "{reason}"
    );
    assert_eq!(
        labels(&exec, run).await,
        ["received", "running", "interrupted"]
    );
    assert_eq!(probe.calls.load(Ordering::SeqCst), 1, "it was not re-run");

    // A pending approval with no secrets survives and can still be approved.
    assert_eq!(exec.get(plain).await.unwrap().state, State::PendingApproval);
    exec.approve(plain, &who("bob"), None).await.unwrap();
    assert_eq!(done(&exec, plain).await.state, State::Succeeded);
    assert_eq!(work.load(Ordering::SeqCst), 1);

    // One with a secret cannot be run (its value was never stored).
    let r = exec.get(secret).await.unwrap();
    assert_eq!(r.state, State::Interrupted, "{r:#?}");
    assert!(r.reason.unwrap().contains("secret"));

    assert_chain_ok(&store).await;
    exec.shutdown(Duration::from_secs(5)).await.unwrap();
}

// ---------------------------------------------------------------------------
// 11. http runner
// ---------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

/// A tiny HTTP/1.1 server: `/fail...` answers 500, anything else 200 with
/// `{"echo": <request body>}`. Every request is recorded.
async fn http_server() -> (std::net::SocketAddr, Arc<Mutex<Vec<Seen>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let log = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let log = log.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let head_end = loop {
                    if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        break p + 4;
                    }
                    match sock.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                };
                let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
                let mut lines = head.split("\r\n");
                let mut first = lines.next().unwrap_or("").split(' ');
                let method = first.next().unwrap_or("").to_string();
                let path = first.next().unwrap_or("").to_string();
                let headers: Vec<(String, String)> = lines
                    .filter_map(|l| l.split_once(':'))
                    .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                    .collect();
                let len: usize = headers
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                    .and_then(|(_, v)| v.parse().ok())
                    .unwrap_or(0);
                while buf.len() < head_end + len {
                    match sock.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let body = buf[head_end..head_end + len].to_vec();
                let (status, reply) = if path.starts_with("/fail") {
                    (
                        "500 Internal Server Error",
                        "boom: database on fire".to_string(),
                    )
                } else {
                    let echoed = if body.is_empty() {
                        "null".to_string()
                    } else {
                        String::from_utf8_lossy(&body).into_owned()
                    };
                    ("200 OK", format!("{{\"echo\":{echoed}}}"))
                };
                log.lock().unwrap().push(Seen {
                    method,
                    path,
                    headers,
                    body,
                });
                let resp = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{reply}",
                    reply.len()
                );
                let _ = sock.write_all(resp.as_bytes()).await;
                let _ = sock.shutdown().await;
            });
        }
    });
    (addr, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_runner_sends_typed_json_and_judges_status() {
    let (addr, seen) = http_server().await;
    let ops = r#"
[[ops]]
name = "svc.scale"
roles = ["ops"]
runner = { type = "http", url = "http://ADDR/ok/{name}" }
[[ops.params]]
name = "name"
type = "string"
[[ops.params]]
name = "count"
type = "int"
[[ops.params]]
name = "force"
type = "bool"

[[ops]]
name = "svc.templated"
roles = ["ops"]
runner = { type = "http", url = "http://ADDR/ok", method = "put", body = { amount = "{count}", label = "n={count}", fixed = 7 } }
[[ops.params]]
name = "count"
type = "int"

[[ops]]
name = "svc.broken"
roles = ["ops"]
runner = { type = "http", url = "http://ADDR/fail" }
[[ops.params]]
name = "name"
type = "string"
"#
    .replace("ADDR", &addr.to_string());
    let h = start(&ops, |b| b).await;
    let exec = &h.exec;

    let t = exec
        .submit(
            sub("svc.scale", "alice")
                .arg("name", "web api")
                .arg("count", "3")
                .arg("force", "yes"),
        )
        .await
        .unwrap();
    let id = t.record.request.id;
    let r = done(exec, id).await;
    assert_eq!(r.state, State::Succeeded, "{r:#?}");
    let o = r.outcome.as_ref().unwrap();
    assert_eq!(o.exit_code, Some(200));
    assert!(o.output.starts_with("HTTP 200 OK\n"), "{}", o.output);
    let echoed: serde_json::Value =
        serde_json::from_str(o.output.strip_prefix("HTTP 200 OK\n").unwrap()).unwrap();
    assert_eq!(
        echoed,
        serde_json::json!({"echo": {"name": "web api", "count": 3, "force": true}})
    );
    let got = seen.lock().unwrap()[0].clone();
    assert_eq!(got.method, "POST");
    assert_eq!(got.path, "/ok/web%20api");
    assert_eq!(
        got.header("x-youops-request-id"),
        Some(id.to_string().as_str())
    );
    assert!(got
        .header("content-type")
        .unwrap()
        .starts_with("application/json"));
    let body = got.json();
    assert!(body["count"].is_i64(), "int args are JSON numbers: {body}");
    assert_eq!(body["count"], 3);
    assert_eq!(body["force"], true);
    assert_eq!(body["name"], "web api");

    let t = exec
        .submit(sub("svc.templated", "alice").arg("count", "42"))
        .await
        .unwrap();
    let r = done(exec, t.record.request.id).await;
    assert_eq!(r.state, State::Succeeded, "{r:#?}");
    let got = seen.lock().unwrap()[1].clone();
    assert_eq!(got.method, "PUT");
    assert_eq!(
        got.json(),
        serde_json::json!({"amount": 42, "label": "n=42", "fixed": 7})
    );

    let t = exec
        .submit(sub("svc.broken", "alice").arg("name", "x"))
        .await
        .unwrap();
    let r = done(exec, t.record.request.id).await;
    assert_eq!(r.state, State::Failed, "{r:#?}");
    assert!(r.reason.as_deref().unwrap().contains("500"), "{r:#?}");
    assert_eq!(r.outcome.as_ref().unwrap().exit_code, Some(500));
    assert!(output(&r).contains("boom: database on fire"));
    assert_eq!(seen.lock().unwrap().len(), 3);
    assert_chain_ok(&h.store).await;
}

// ---------------------------------------------------------------------------
// 12. Invalid and denied requests are recorded
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_and_denied_requests_are_recorded_with_reasons() {
    const SECRET: &str = "pa55-word-never-stored";
    let ops = format!(
        "{GREET_OPS}\n{}",
        r#"
[[ops]]
name = "vault.login"
roles = ["ops"]
runner = { type = "builtin", name = "greet" }
[[ops.params]]
name = "token"
type = "secret"
"#
    );
    let counter = Arc::new(AtomicUsize::new(0));
    let h = start(&ops, |b| b.builtin("greet", counting(counter.clone()))).await;

    struct Case {
        sub: Submission,
        state: State,
        reason: &'static [&'static str],
    }
    let cases = [
        Case {
            sub: sub("greeet", "alice").arg("who", "x"),
            state: State::Invalid,
            reason: &["unknown op `greeet`", "did you mean `greet`"],
        },
        Case {
            sub: sub("greet", "mallory").arg("who", "x"),
            state: State::Denied,
            reason: &["mallory", "not mapped"],
        },
        Case {
            sub: sub("greet", "dave").arg("who", "x"),
            state: State::Denied,
            reason: &["`dave`", "may not run `greet`", "granted to ops"],
        },
        Case {
            sub: sub("greet", "alice").arg("times", "many"),
            state: State::Invalid,
            reason: &["missing parameter `who`", "expected an integer"],
        },
        Case {
            sub: sub("vault.login", "alice")
                .arg("token", SECRET)
                .arg("tokn", "x"),
            state: State::Invalid,
            reason: &["unknown parameter `tokn`", "did you mean `token`"],
        },
        Case {
            sub: sub("vault.logn", "alice").arg("token", SECRET),
            state: State::Invalid,
            reason: &["did you mean `vault.login`"],
        },
    ];
    for c in cases {
        let what = format!("{} by {}", c.sub.op, c.sub.actor.external_id);
        let t = h.exec.submit(c.sub).await.unwrap();
        let id = t.record.request.id;
        assert_eq!(t.record.state, c.state, "{what}: {:#?}", t.record);
        let reason = t.record.reason.clone().unwrap_or_default();
        for part in c.reason {
            assert!(reason.contains(part), "{what}: `{reason}` lacks `{part}`");
        }
        let stored = h.exec.get(id).await.unwrap();
        assert_eq!(stored, t.record, "{what}");
        assert_eq!(
            labels(&h.exec, id).await,
            ["received", c.state.as_str()],
            "{what}"
        );
    }
    let events = all_events(&h.store).await;
    assert!(!serde_json::to_string(&events).unwrap().contains(SECRET));
    assert_eq!(counter.load(Ordering::SeqCst), 0);
    assert_chain_ok(&h.store).await;
}

// ---------------------------------------------------------------------------
// 13. Dry run
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_runs_nothing_and_masks_secrets() {
    const SECRET: &str = "dry-run-secret-4242";
    let ops = format!(
        "{GREET_OPS}\n{}",
        r#"
[[ops]]
name = "file.touch"
roles = ["ops"]
approvals = 1
runner = { type = "exec", argv = ["/bin/sh", "-c", 'touch "$1"', "sh", "{path}", "--token={token}"] }
[[ops.params]]
name = "path"
type = "string"
[[ops.params]]
name = "token"
type = "secret"
"#
    );
    let counter = Arc::new(AtomicUsize::new(0));
    let h = start(&ops, |b| b.builtin("greet", counting(counter.clone()))).await;

    let t = h
        .exec
        .submit(sub("greet", "alice").arg("who", "x").dry_run(true))
        .await
        .unwrap();
    assert!(t.record.request.dry_run);
    let r = done(&h.exec, t.record.request.id).await;
    assert_eq!(r.state, State::Succeeded);
    assert_eq!(output(&r), "dry run: would builtin: greet");
    assert_eq!(
        counter.load(Ordering::SeqCst),
        0,
        "the builtin was not called"
    );

    let target = h.dir.path().join("touched");
    let t = h
        .exec
        .submit(
            sub("file.touch", "alice")
                .arg("path", target.display().to_string())
                .arg("token", SECRET)
                .dry_run(true),
        )
        .await
        .unwrap();
    let id = t.record.request.id;
    let r = done(&h.exec, id).await;
    assert_eq!(r.state, State::Succeeded, "{r:#?}");
    let out = output(&r);
    assert!(out.starts_with("dry run: would exec: /bin/sh -c"), "{out}");
    assert!(out.contains(&target.display().to_string()), "{out}");
    assert!(out.contains("'--token=********'"), "{out}");
    assert!(out.contains("after 1 approval(s)"), "{out}");
    assert!(!out.contains(SECRET), "{out}");
    assert!(!target.exists(), "a dry run ran the program");
    assert_eq!(labels(&h.exec, id).await, ["received", "succeeded"]);
    assert_eq!(h.exec.pending_approvals(), 0);
    assert_chain_ok(&h.store).await;
}

// ---------------------------------------------------------------------------
// 14. tower::Service
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_executor_is_a_tower_service() {
    use tower::ServiceExt;
    let counter = Arc::new(AtomicUsize::new(0));
    let h = start(GREET_OPS, |b| b.builtin("greet", counting(counter.clone()))).await;

    let ticket = h
        .exec
        .clone()
        .oneshot(sub("greet", "alice").arg("who", "tower"))
        .await
        .unwrap();
    assert!(!ticket.duplicate);
    assert_eq!(
        done(&h.exec, ticket.record.request.id).await.state,
        State::Succeeded
    );

    // Ordinary layers compose with it.
    let svc = tower::ServiceBuilder::new()
        .concurrency_limit(1)
        .service(h.exec.clone());
    let ticket = svc
        .oneshot(sub("greet", "alice").arg("who", "layered"))
        .await
        .unwrap();
    assert_eq!(
        done(&h.exec, ticket.record.request.id).await.state,
        State::Succeeded
    );
    assert_eq!(counter.load(Ordering::SeqCst), 2);

    h.exec.shutdown(Duration::from_secs(5)).await.unwrap();
    let err = h
        .exec
        .clone()
        .oneshot(sub("greet", "alice").arg("who", "late"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::ShuttingDown), "{err:?}");
    assert_eq!(counter.load(Ordering::SeqCst), 2);
}

// ---------------------------------------------------------------------------
// 15. Graceful shutdown
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_runs_finish_then_interrupts_the_rest() {
    let ops = r#"
[[ops]]
name = "quick"
roles = ["ops"]
runner = { type = "builtin", name = "quick" }

[[ops]]
name = "forever"
roles = ["ops"]
runner = { type = "builtin", name = "forever" }
"#;
    // A run that finishes within the grace period completes.
    let (started_tx, mut started_rx) = mpsc::unbounded_channel();
    let h = start(ops, |b| {
        b.builtin("quick", move |call: BuiltinCall| {
            let tx = started_tx.clone();
            async move {
                let _ = tx.send(call.request_id);
                tokio::time::sleep(Duration::from_millis(300)).await;
                Ok("finished".to_string())
            }
        })
    })
    .await;
    let id = h
        .exec
        .submit(sub("quick", "alice"))
        .await
        .unwrap()
        .record
        .request
        .id;
    assert_eq!(next_start(&mut started_rx).await, id);
    within(10, "shutdown", h.exec.shutdown(Duration::from_secs(5)))
        .await
        .unwrap();
    let r = h.exec.get(id).await.unwrap();
    assert_eq!(r.state, State::Succeeded, "{r:#?}");
    assert_eq!(output(&r), "finished");
    assert!(!h.exec.is_accepting());
    assert!(matches!(
        h.exec.submit(sub("quick", "alice")).await,
        Err(Error::ShuttingDown)
    ));
    assert_chain_ok(&h.store).await;

    // One that never finishes is interrupted when the grace period ends.
    let (probe, mut rx) = Probe::new();
    let h = start(ops, |b| b.builtin("forever", probe.builtin())).await;
    let id = h
        .exec
        .submit(sub("forever", "alice"))
        .await
        .unwrap()
        .record
        .request
        .id;
    assert_eq!(next_start(&mut rx).await, id);
    let began = Instant::now();
    within(10, "shutdown", h.exec.shutdown(Duration::from_millis(200)))
        .await
        .unwrap();
    assert!(began.elapsed() >= Duration::from_millis(200));
    let r = h.exec.get(id).await.unwrap();
    assert_eq!(r.state, State::Interrupted, "{r:#?}");
    assert!(r.reason.unwrap().contains("shut down"));
    assert_eq!(h.exec.running(), 0);
    assert!(matches!(
        h.exec.submit(sub("forever", "alice")).await,
        Err(Error::ShuttingDown)
    ));
    assert_chain_ok(&h.store).await;
}

// ---------------------------------------------------------------------------
// 16. Audit store conformance: every backend runs the same suite
// ---------------------------------------------------------------------------

mod store_conformance {
    use super::*;
    use async_trait::async_trait;
    use youops_core::audit::conformance::{
        self, Capabilities, Case, MemoryHarness, Outcome, Report, StoreHarness, StoreSite,
    };
    use youops_core::audit::{AppendOptions, MemoryStore, StoreError};
    use youops_core::NewEvent;

    fn outcomes(report: &Report) -> Vec<(Case, &'static str)> {
        report
            .cases
            .iter()
            .map(|c| {
                let kind = match c.outcome {
                    Outcome::Passed => "passed",
                    Outcome::Skipped(_) => "skipped",
                    Outcome::Failed(_) => "failed",
                };
                (c.case, kind)
            })
            .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_memory_store_passes_the_store_conformance_suite() {
        let report = conformance::run_all(&MemoryHarness).await;
        println!("{report}");
        report.assert_passed();
        // Nothing survives a crash of memory: those cases, and the crash parts
        // of the others, are skipped and say so; so is claim expiry (memory
        // keeps every claim).
        assert_eq!(
            report.skipped(),
            [Case::CrashReopen, Case::TornTail, Case::ClaimExpiry]
        );
        for case in [Case::GroupAppends, Case::DedupRace, Case::RetentionVerify] {
            let c = report.cases.iter().find(|c| c.case == case).unwrap();
            assert_eq!(c.notes.len(), 1, "{case}: {:?}", c.notes);
            assert!(c.notes[0].contains("crash_reopen"), "{:?}", c.notes);
        }
        assert!(matches!(
            report.outcome(Case::TornTail),
            Some(Outcome::Skipped(why)) if why.contains("crash_reopen")
        ));
        assert!(matches!(
            report.outcome(Case::ClaimExpiry),
            Some(Outcome::Skipped(why)) if why.contains("expiring_claims")
        ));
    }

    /// A store with one deliberate fault, over the memory store.
    #[derive(Debug)]
    struct Faulty {
        inner: MemoryStore,
        fault: Fault,
        /// `RacyDedup`'s own claims.
        claims: Mutex<std::collections::HashMap<String, RequestId>>,
    }

    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Fault {
        /// Checks the dedup key, then appends: not atomically (as a database
        /// store that reads the claim and writes it in separate statements).
        RacyDedup,
        /// Lists requests oldest first.
        OldestFirst,
        /// Archives the request in flight too.
        ArchivesInFlight,
    }

    #[async_trait]
    impl AuditStore for Faulty {
        async fn append(
            &self,
            events: Vec<NewEvent>,
            mut opts: AppendOptions,
        ) -> Result<Vec<AuditEvent>, StoreError> {
            if self.fault != Fault::RacyDedup {
                return self.inner.append(events, opts).await;
            }
            let Some(key) = opts.dedup_key.take() else {
                return self.inner.append(events, opts).await;
            };
            if let Some(id) = self.claims.lock().unwrap().get(&key) {
                return Err(StoreError::Duplicate(*id));
            }
            // The round trip between the check and the write.
            tokio::time::sleep(Duration::from_millis(1)).await;
            let stored = self.inner.append(events, opts).await?;
            if let Some(id) = stored.first().and_then(|e| e.request_id) {
                self.claims.lock().unwrap().entry(key).or_insert(id);
            }
            Ok(stored)
        }
        async fn flush(&self) -> Result<(), StoreError> {
            self.inner.flush().await
        }
        async fn request(&self, id: RequestId) -> Result<Option<RequestRecord>, StoreError> {
            self.inner.request(id).await
        }
        async fn request_events(&self, id: RequestId) -> Result<Vec<AuditEvent>, StoreError> {
            self.inner.request_events(id).await
        }
        async fn find_dedup(&self, key: &str) -> Result<Option<RequestId>, StoreError> {
            if self.fault == Fault::RacyDedup {
                return Ok(self.claims.lock().unwrap().get(key).copied());
            }
            self.inner.find_dedup(key).await
        }
        async fn list_requests(
            &self,
            filter: &RequestFilter,
            before: Option<RequestId>,
            limit: usize,
        ) -> Result<Vec<RequestRecord>, StoreError> {
            let mut out = self.inner.list_requests(filter, before, limit).await?;
            if self.fault == Fault::OldestFirst {
                out.reverse();
            }
            Ok(out)
        }
        async fn active_requests(&self) -> Result<Vec<RequestRecord>, StoreError> {
            self.inner.active_requests().await
        }
        async fn events(&self, after: u64, limit: usize) -> Result<Vec<AuditEvent>, StoreError> {
            self.inner.events(after, limit).await
        }
        async fn head(&self) -> Result<(u64, String), StoreError> {
            self.inner.head().await
        }
        async fn verify(&self) -> Result<VerifyReport, StoreError> {
            self.inner.verify().await
        }
        async fn size_on_disk(&self) -> Result<u64, StoreError> {
            self.inner.size_on_disk().await
        }
        async fn archive(
            &self,
            through_seq: u64,
            dir: &Path,
        ) -> Result<Option<youops_core::audit::ArchiveReport>, StoreError> {
            if self.fault == Fault::ArchivesInFlight {
                // Finish every request first, so they all qualify.
                for r in self.inner.active_requests().await? {
                    let done = NewEvent::transition(
                        r.request.id,
                        youops_core::Transition::to(State::Cancelled),
                    );
                    self.inner
                        .append(vec![done], AppendOptions::buffered())
                        .await?;
                }
            }
            self.inner.archive(through_seq, dir).await
        }
    }

    struct FaultyHarness(Fault);

    struct FaultySite(Arc<Faulty>);

    #[async_trait]
    impl StoreHarness for FaultyHarness {
        fn name(&self) -> String {
            format!("memory with fault {:?}", self.0)
        }
        fn capabilities(&self) -> Capabilities {
            MemoryHarness.capabilities()
        }
        async fn site(&self) -> Result<Box<dyn StoreSite>, String> {
            Ok(Box::new(FaultySite(Arc::new(Faulty {
                inner: MemoryStore::new(),
                fault: self.0,
                claims: Mutex::new(Default::default()),
            }))))
        }
    }

    #[async_trait]
    impl StoreSite for FaultySite {
        async fn open(&mut self) -> Result<Arc<dyn AuditStore>, String> {
            Ok(self.0.clone())
        }
    }

    /// The suite has teeth: each fault fails the cases that cover it, and only those.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_store_conformance_suite_fails_a_faulty_store() {
        for (fault, failing) in [
            (Fault::RacyDedup, vec![Case::DedupRace]),
            (
                Fault::OldestFirst,
                vec![Case::ReadsAndRecords, Case::RetentionVerify],
            ),
            (Fault::ArchivesInFlight, vec![Case::RetentionVerify]),
        ] {
            let report = conformance::run_all(&FaultyHarness(fault)).await;
            println!("{report}");
            assert_eq!(report.failed(), failing, "{report}");
            let why = match report.outcome(failing[0]) {
                Some(Outcome::Failed(why)) => why.clone(),
                other => panic!("{other:?}"),
            };
            let expected = match fault {
                Fault::RacyDedup => "racers whose append with dedup key",
                Fault::OldestFirst => "list_requests, no filter (newest id first)",
                Fault::ArchivesInFlight => "archive report",
            };
            assert!(why.contains(expected), "{fault:?}: {why}");
            assert!(
                outcomes(&report)
                    .iter()
                    .all(|(c, kind)| failing.contains(c) || *kind != "failed"),
                "{report}"
            );
        }
    }

    /// The executor runs on the memory store: requests, dedup, the chain.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_executor_runs_on_the_memory_store() {
        let counter = Arc::new(AtomicUsize::new(0));
        let store = Arc::new(MemoryStore::new());
        let exec = Executor::builder(&config(GREET_OPS), store.clone())
            .builtin("greet", counting(counter.clone()))
            .build()
            .await
            .unwrap();
        let s = sub("greet", "alice").arg("who", "mem").dedup("memory-1");
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let exec = exec.clone();
                let s = s.clone();
                tokio::spawn(async move { exec.submit(s).await })
            })
            .collect();
        let mut tickets = Vec::new();
        for t in tasks {
            tickets.push(t.await.unwrap().unwrap());
        }
        let originals: Vec<_> = tickets.iter().filter(|t| !t.duplicate).collect();
        assert_eq!(originals.len(), 1, "exactly one submission is the original");
        let id = originals[0].record.request.id;
        assert!(tickets.iter().all(|t| t.record.request.id == id));
        let r = done(&exec, id).await;
        assert_eq!(r.state, State::Succeeded);
        assert_eq!(counter.load(Ordering::SeqCst), 1, "the work ran once");
        assert_eq!(store.find_dedup("memory-1").await.unwrap(), Some(id));
        let events = store.events(0, usize::MAX).await.unwrap();
        let report = verify_events(events.clone());
        assert!(report.ok(), "{report:?}");
        assert_eq!(store.verify().await.unwrap(), report);
        assert_eq!(
            store.request_events(id).await.unwrap(),
            events
                .into_iter()
                .filter(|e| e.request_id == Some(id))
                .collect::<Vec<_>>()
        );
    }
}
