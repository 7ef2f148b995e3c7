//! Proof under faults: the real `youops` binary killed
//! with SIGKILL at random moments while the API and GitHub webhooks feed it, and
//! the outside world misbehaving (GitHub answering 500 / 429 / hanging / dropping
//! connections; runners that hang, flood output or die by a signal).
//!
//! Everything listens on 127.0.0.1; every test is bounded (seconds).
//! `FAULTS_SEED=N` replays the crash test's random schedule.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::*;
use reqwest::StatusCode;
use serde_json::{json, Value};
use youops_core::model::{AuditEvent, EventBody, State};

/// xorshift64*: a small seeded RNG (no dependency).
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in `lo..hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo)
    }
    fn chance(&mut self, one_in: u64) -> bool {
        self.next().is_multiple_of(one_in)
    }
}

fn seed() -> u64 {
    std::env::var("FAULTS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(42)
        })
}

/// The quickstart config with a high rate limit (the tests flood on purpose).
fn base_config(server_extra: &str, ops_extra: &str) -> String {
    config(server_extra, ops_extra).replacen(
        "[executor]\n",
        "[executor]\nrate_limit_per_minute = 1000000\n",
        1,
    )
}

/// Requests still in flight (must be none right after a start).
async fn active(api: &Api) -> Vec<Value> {
    api.list_all("state=received,approved,running").await
}

/// Current state and dedup key of every request, folded from audit events.
#[derive(Debug, Default, Clone)]
struct Folded {
    op: String,
    dedup: Option<String>,
    state: Option<State>,
    reason: Option<String>,
}

fn fold(events: &[AuditEvent]) -> BTreeMap<String, Folded> {
    let mut out: BTreeMap<String, Folded> = BTreeMap::new();
    for e in events {
        let Some(id) = e.request_id else { continue };
        let r = out.entry(id.to_string()).or_default();
        match &e.body {
            EventBody::Received { request } => {
                r.op = request.op.clone();
                r.dedup = request.dedup_key.clone();
                r.state = Some(State::Received);
            }
            EventBody::Transition(t) => {
                r.state = Some(t.to);
                r.reason = t.reason.clone();
            }
            _ => {}
        }
    }
    out
}

async fn audit_verify_cli(cfg: &std::path::Path) {
    let out = youops_async(&["audit", "verify", "--config", cfg.to_str().unwrap()], &[]).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "audit verify: {}",
        describe(&out)
    );
}

// ================================================================ 1. crash test

/// What the clients were told.
#[derive(Debug, Default)]
struct Accepted {
    /// API request ids answered 2xx.
    api: Vec<String>,
    /// Comment ids whose delivery was answered 2xx, with the delivery and payload.
    hooks: Vec<(u64, String, Value)>,
    /// Re-sent deliveries (same or new delivery id for an accepted comment).
    resent: usize,
}

async fn api_client(
    base: String,
    task: u64,
    round: u64,
    stop: Arc<AtomicBool>,
    acc: Arc<Mutex<Accepted>>,
    mut rng: Rng,
) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let mut n = 0u64;
    while !stop.load(Ordering::SeqCst) {
        n += 1;
        let tag = format!("a{round}-{task}-{n}");
        let body = match n % 3 {
            0 => json!({ "op": "hello", "args": { "name": tag } }),
            1 => json!({ "op": "noop" }),
            _ => json!({ "op": "mark", "args": { "tag": tag } }),
        };
        match http
            .post(format!("{base}/api/v1/requests"))
            .bearer_auth(ALICE)
            .json(&body)
            .send()
            .await
        {
            Ok(r) if r.status().is_success() => {
                if let Ok(v) = r.json::<Value>().await {
                    if let Some(id) = v["request"]["request"]["id"].as_str() {
                        acc.lock().unwrap().api.push(id.to_string());
                    }
                }
            }
            Ok(_) => {}
            Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
        }
        tokio::time::sleep(Duration::from_millis(rng.range(0, 15))).await;
    }
}

#[allow(clippy::too_many_arguments)]
async fn hook_client(
    api: Api,
    ids: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    acc: Arc<Mutex<Accepted>>,
    mut rng: Rng,
) {
    while !stop.load(Ordering::SeqCst) {
        let cid = ids.fetch_add(1, Ordering::SeqCst);
        let text = if cid.is_multiple_of(2) {
            format!("please\n/ops mark tag=w{cid}")
        } else {
            format!("/ops hello name=w{cid}")
        };
        let payload = issue_comment_payload(cid, 1 + cid % 5, GH_LOGIN, &text);
        let delivery = format!("d-{cid}-a");
        match deliver(&api, "issue_comment", &delivery, &payload).await {
            Some(s) if s.is_success() => {
                acc.lock()
                    .unwrap()
                    .hooks
                    .push((cid, delivery.clone(), payload.clone()));
                // GitHub redelivers: the same delivery id, or (a manual redelivery
                // racing a poll) the same comment under a new delivery id.
                if rng.chance(3) {
                    deliver(&api, "issue_comment", &delivery, &payload).await;
                    acc.lock().unwrap().resent += 1;
                }
                if rng.chance(4) {
                    deliver(&api, "issue_comment", &format!("d-{cid}-b"), &payload).await;
                    acc.lock().unwrap().resent += 1;
                }
            }
            Some(_) => {}
            None => tokio::time::sleep(Duration::from_millis(5)).await,
        }
        tokio::time::sleep(Duration::from_millis(rng.range(0, 20))).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_at_random_moments_loses_nothing_and_runs_nothing_twice() {
    let seed = seed();
    println!("crash test seed: {seed} (rerun with FAULTS_SEED={seed})");
    let mut rng = Rng::new(seed);
    let fake = FakeGithub::start().await;
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs.log");
    let ops = format!(
        r#"
[[ops]]
name = "mark"
description = "append the request id to a file, then take a while"
runner = {{ type = "exec", argv = ['sh', '-c', 'echo "$YOUOPS_REQUEST_ID $1" >> "{runs}"; sleep 0.1', 'sh', '{{tag}}'] }}
timeout = "10s"
[[ops.params]]
name = "tag"
type = "string"
pattern = "[a-z0-9-]{{1,40}}"

[[ops]]
name = "noop"
description = "does nothing"
runner = {{ type = "builtin", name = "noop" }}

{github}
"#,
        runs = runs.display(),
        github = github_section(&fake.base, ""),
    );
    let cfg = dir.path().join("youops.toml");
    std::fs::write(&cfg, base_config("", &ops)).unwrap();

    const ROUNDS: u64 = 5;
    let ids = Arc::new(AtomicU64::new(1_000_000));
    let mut all = Accepted::default();
    let mut interrupted_before = 0usize;
    for round in 1..=ROUNDS {
        let mut served = Served::spawn(&cfg, dir.path().join(format!("serve-{round}.log"))).await;
        let api = served.api.clone();
        // Recovery happened before the daemon answered: nothing is left in flight.
        let left = active(&api).await;
        assert!(
            left.is_empty(),
            "round {round}: in flight after restart: {left:#?}"
        );
        let interrupted = api.list_all("state=interrupted").await.len();
        // Deliveries accepted before the crash come again: they must not run again.
        let mut redelivered = 0;
        for (_, delivery, payload) in all.hooks.iter().rev().take(5) {
            let st = deliver(&api, "issue_comment", delivery, payload).await;
            assert!(
                st.is_some_and(|s| s.is_success()),
                "redelivery after restart: {st:?}"
            );
            redelivered += 1;
        }

        let stop = Arc::new(AtomicBool::new(false));
        let acc = Arc::new(Mutex::new(Accepted::default()));
        let mut tasks = Vec::new();
        for t in 0..3 {
            tasks.push(tokio::spawn(api_client(
                api.base.clone(),
                t,
                round,
                stop.clone(),
                acc.clone(),
                Rng::new(rng.next()),
            )));
        }
        for _ in 0..2 {
            tasks.push(tokio::spawn(hook_client(
                api.clone(),
                ids.clone(),
                stop.clone(),
                acc.clone(),
                Rng::new(rng.next()),
            )));
        }
        let delay = rng.range(100, 800);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        served.child.kill().expect("SIGKILL"); // std's kill() is SIGKILL on Unix
        served.child.wait().expect("reap");
        stop.store(true, Ordering::SeqCst);
        for t in tasks {
            tokio::time::timeout(Duration::from_secs(10), t)
                .await
                .expect("client stops")
                .expect("client task");
        }
        // The chain on disk, right after the crash, before any recovery.
        audit_verify_cli(&cfg).await;
        let acc = std::mem::take(&mut *acc.lock().unwrap());
        println!(
            "round {round}: killed after {delay} ms; accepted {} API requests and {} webhook deliveries ({} re-sent, {} redelivered after restart); {} requests found interrupted after the previous kill",
            acc.api.len(),
            acc.hooks.len(),
            acc.resent,
            redelivered,
            interrupted - interrupted_before,
        );
        interrupted_before = interrupted;
        all.api.extend(acc.api);
        all.hooks.extend(acc.hooks);
        all.resent += acc.resent;
    }

    // A last start recovers the last round; then check everything.
    let served = Served::spawn(&cfg, dir.path().join("serve-final.log")).await;
    let api = served.api.clone();
    let left = active(&api).await;
    assert!(
        left.is_empty(),
        "in flight after the final restart: {left:#?}"
    );
    let events = export_events(&api, ALICE).await;
    let report = youops_core::audit::verify_events(events.clone());
    assert!(report.ok(), "{report:?}");
    let reqs = fold(&events);

    // Every acknowledged API request is in the log.
    let missing: Vec<&String> = all
        .api
        .iter()
        .filter(|id| !reqs.contains_key(*id))
        .collect();
    assert!(
        missing.is_empty(),
        "acknowledged but not in the audit log: {missing:?}"
    );
    // Every acknowledged delivery made exactly one request, whatever was re-sent.
    let mut by_key: HashMap<String, Vec<&String>> = HashMap::new();
    for (id, r) in &reqs {
        if let Some(k) = &r.dedup {
            by_key.entry(k.clone()).or_default().push(id);
        }
    }
    for (cid, _, _) in &all.hooks {
        let n = by_key.get(&gh_comment_key(*cid)).map_or(0, Vec::len);
        assert_eq!(n, 1, "comment {cid}: {n} requests (want exactly 1)");
    }
    for (k, v) in &by_key {
        assert_eq!(v.len(), 1, "dedup key {k} made {} requests", v.len());
    }
    // Nothing is left running, received or approved.
    let mut states: BTreeMap<String, usize> = BTreeMap::new();
    for (id, r) in &reqs {
        let s = r.state.expect("state");
        assert!(
            s.is_terminal() || s == State::PendingApproval,
            "request {id} left {s} after restart: {r:?}"
        );
        *states.entry(s.as_str().to_string()).or_default() += 1;
    }
    // Nothing ran twice: one line per request id and per tag at most.
    let text = std::fs::read_to_string(&runs).unwrap_or_default();
    let mut per_id: HashMap<&str, usize> = HashMap::new();
    let mut per_tag: HashMap<&str, usize> = HashMap::new();
    for line in text.lines() {
        let (id, tag) = line.split_once(' ').unwrap_or((line, ""));
        *per_id.entry(id).or_default() += 1;
        *per_tag.entry(tag).or_default() += 1;
    }
    for (id, n) in &per_id {
        assert_eq!(*n, 1, "request {id} ran {n} times");
        let r = reqs
            .get(*id)
            .unwrap_or_else(|| panic!("ran {id}, which the log does not know"));
        assert_eq!(r.op, "mark");
    }
    for (tag, n) in &per_tag {
        assert_eq!(*n, 1, "tag {tag} ran {n} times");
    }
    // A request recorded as succeeded really ran.
    let succeeded_marks: BTreeSet<&String> = reqs
        .iter()
        .filter(|(_, r)| r.op == "mark" && r.state == Some(State::Succeeded))
        .map(|(id, _)| id)
        .collect();
    for id in &succeeded_marks {
        assert!(
            per_id.contains_key(id.as_str()),
            "{id} succeeded but never ran"
        );
    }
    let interrupted: Vec<&Folded> = reqs
        .values()
        .filter(|r| r.state == Some(State::Interrupted))
        .collect();
    for r in &interrupted {
        assert!(
            r.reason.as_deref().unwrap_or("").contains("not re-run"),
            "{r:?}"
        );
    }
    println!(
        "crash test: {ROUNDS} rounds; {} API requests and {} webhook deliveries acknowledged ({} re-sent); {} requests in the log, {} events; states {states:?}; {} runs of `mark` (each once); {} interrupted",
        all.api.len(),
        all.hooks.len(),
        all.resent,
        reqs.len(),
        events.len(),
        per_id.len(),
        interrupted.len(),
    );
    drop(served);
    audit_verify_cli(&cfg).await;
}

// ================================================================ 2. faults of the outside world

/// An exec op with its own timeout.
fn exec_op_timeout(name: &str, argv: &[&str], timeout: &str) -> String {
    let argv: Vec<String> = argv.iter().map(|a| format!("'{a}'")).collect();
    format!(
        "[[ops]]\nname = \"{name}\"\ndescription = \"fault\"\nrunner = {{ type = \"exec\", argv = [{}] }}\ntimeout = \"{timeout}\"\n",
        argv.join(", ")
    )
}

/// After a fault: `/healthz` is 200 and a fresh request runs to success.
async fn assert_healthy(api: &Api) {
    let (st, _) = api.get_text("/healthz", None).await;
    assert_eq!(st, StatusCode::OK, "healthz after the fault");
    let (st, v) = api
        .submit(ALICE, "hello", json!({ "name": "after" }), Some("10s"))
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    assert_eq!(state_of(&v), "succeeded", "{v:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runners_that_hang_flood_or_die_by_signal_leave_a_clear_state() {
    let dir = tempfile::tempdir().unwrap();
    let pgfile = dir.path().join("pg");
    let hang_script = format!("echo $$ > {}; sleep 30 & sleep 30 & wait", pgfile.display());
    let ops = [
        exec_op_timeout("hang", &["sh", "-c", &hang_script], "3s"),
        exec_op_timeout(
            "flood",
            &[
                "sh",
                "-c",
                "head -c 200000000 /dev/zero | tr \\\\000 x; echo; echo tail-marker",
            ],
            "30s",
        ),
        exec_op_timeout("flood.forever", &["yes", "spam"], "1s"),
        exec_op_timeout(
            "selfkill",
            &["sh", "-c", "echo about to die; kill -TERM $$"],
            "10s",
        ),
    ]
    .join("\n");
    let cfg = dir.path().join("youops.toml");
    std::fs::write(&cfg, base_config("", &ops)).unwrap();
    let served = Served::spawn(&cfg, dir.path().join("serve.log")).await;
    let api = served.api.clone();
    let pid = served.child.id();

    // Hang: timed out after 3 s (time enough for the shell to write its pid
    // on a loaded machine), and the whole process group is gone.
    let t0 = Instant::now();
    let (st, v) = api.submit(ALICE, "hang", json!({}), Some("20s")).await;
    assert!(st.is_success(), "{v}");
    assert_eq!(state_of(&v), "timed_out", "{v:#}");
    let took = t0.elapsed();
    assert!(took < Duration::from_secs(12), "timeout took {took:?}");
    let rec = &v["request"];
    assert!(
        rec["reason"]
            .as_str()
            .unwrap_or("")
            .contains("timed out after"),
        "{rec:#}"
    );
    let pg: i32 = std::fs::read_to_string(&pgfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // SIGKILL is sent before `timed_out` is recorded; give the kernel (and the
    // reaper of the orphans) a moment to remove the processes.
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut gone = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pg), None);
    while gone.is_ok() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
        gone = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pg), None);
    }
    assert_eq!(
        gone,
        Err(nix::errno::Errno::ESRCH),
        "process group {pg} of the timed-out op still exists"
    );

    // Flood: 200 MB of output is capped (head and tail kept); memory stays bounded.
    let rss_before = rss_kib(pid);
    let sampling = Arc::new(AtomicBool::new(true));
    let peak = Arc::new(AtomicU64::new(rss_before));
    let sampler = {
        let (sampling, peak) = (sampling.clone(), peak.clone());
        tokio::spawn(async move {
            while sampling.load(Ordering::SeqCst) {
                peak.fetch_max(rss_kib(pid), Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    let (st, v) = api.submit(ALICE, "flood", json!({}), Some("60s")).await;
    assert!(st.is_success(), "{v}");
    assert_eq!(
        state_of(&v),
        "succeeded",
        "{}",
        &v.to_string()[..500.min(v.to_string().len())]
    );
    let out = &v["request"]["outcome"];
    let output = out["output"].as_str().unwrap();
    let cut = out["output_truncated_bytes"].as_u64().unwrap();
    assert!(
        output.len() <= 70 * 1024,
        "output kept: {} bytes",
        output.len()
    );
    assert!(cut >= 199_000_000, "truncated bytes: {cut}");
    assert!(output.starts_with("xxxx") && output.contains("tail-marker"));
    let (st, v) = api
        .submit(ALICE, "flood.forever", json!({}), Some("20s"))
        .await;
    assert!(st.is_success(), "{v}");
    assert_eq!(state_of(&v), "timed_out");
    assert!(
        v["request"]["outcome"]["output_truncated_bytes"]
            .as_u64()
            .unwrap()
            > 0
    );
    sampling.store(false, Ordering::SeqCst);
    sampler.await.unwrap();
    let peak = peak.load(Ordering::SeqCst);
    let grew_mib = peak.saturating_sub(rss_before) / 1024;
    println!("flood: daemon RSS {rss_before} KiB before, peak {peak} KiB while ops wrote >200 MB ({cut} bytes cut)");
    assert!(
        grew_mib < 64,
        "daemon RSS grew by {grew_mib} MiB during the flood"
    );

    // Exit by signal: failed, with the signal named.
    let (st, v) = api.submit(ALICE, "selfkill", json!({}), Some("20s")).await;
    assert!(st.is_success(), "{v}");
    assert_eq!(state_of(&v), "failed", "{v:#}");
    let rec = &v["request"];
    assert_eq!(rec["outcome"]["signal"], 15, "{rec:#}");
    assert!(
        rec["reason"].as_str().unwrap_or("").contains("SIGTERM"),
        "{rec:#}"
    );
    assert!(rec["outcome"]["output"]
        .as_str()
        .unwrap()
        .contains("about to die"));

    assert_healthy(&api).await;
    drop(served);
    audit_verify_cli(&cfg).await;
}

/// The request a comment command made, found by its dedup key (bounded wait for
/// `state`).
async fn request_of_comment(api: &Api, cid: u64, state: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let found = api
            .list_all("frontend=github")
            .await
            .into_iter()
            .find(|r| r["request"]["dedup_key"] == gh_comment_key(cid));
        if let Some(r) = &found {
            if r["state"] == state {
                return r.clone();
            }
        }
        assert!(
            Instant::now() < deadline,
            "comment {cid} never made a {state} request: {found:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// GitHub misbehaves on comment posts; `transient`: only for the first post.
/// Returns the daemon (still running), the fake and the request ids.
async fn github_fault(fault: GhFault, transient: bool) -> (Daemon, FakeGithub, Vec<String>) {
    let fake = FakeGithub::start().await;
    fake.set_fault(fault, transient.then_some(1));
    let d = Daemon::start_with_frontends(&base_config(
        "",
        &github_section(&fake.base, "ack_timeout = \"3s\""),
    ))
    .await;
    let mut ids = Vec::new();
    for (i, cid) in [9001u64, 9002].into_iter().enumerate() {
        let payload = issue_comment_payload(
            cid,
            7 + i as u64,
            GH_LOGIN,
            &format!("/ops hello name=c{cid}"),
        );
        let t0 = Instant::now();
        let st = deliver(&d.api, "issue_comment", &format!("fault-{cid}"), &payload).await;
        assert!(
            st.is_some_and(|s| s.is_success()),
            "delivery answered {st:?}"
        );
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "delivery took {:?}",
            t0.elapsed()
        );
        // The result is in the audit log whatever GitHub does.
        let rec = request_of_comment(&d.api, cid, "succeeded").await;
        assert_eq!(
            rec["outcome"]["output"],
            format!("name=c{cid}\n"),
            "{rec:#}"
        );
        ids.push(rec["request"]["id"].as_str().unwrap().to_string());
    }
    assert_healthy(&d.api).await;
    // The frontend did try to post the status comment.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !fake
        .calls()
        .iter()
        .any(|(m, p)| m == "POST" && p.ends_with("/issues/7/comments"))
    {
        assert!(
            Instant::now() < deadline,
            "no comment post: {:?}",
            fake.calls()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (st, v) = d.api.get("/api/v1/audit/verify", Some(ALICE)).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    (d, fake, ids)
}

/// Wait (bounded) until issue `n` has a status comment showing `state`.
async fn wait_status_comment(fake: &FakeGithub, n: u64, state: &str, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if fake
            .comments_on(n)
            .iter()
            .any(|c| c.contains(&format!("state={state} -->")))
        {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn github_answering_500_keeps_the_result_and_the_daemon_healthy() {
    let (d, fake, ids) = github_fault(GhFault::Status(500), false).await;
    assert!(fake.comments_on(7).is_empty());
    // A lasting 500: the frontend retries in the background, and says so in the audit log.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, v) = d
            .api
            .get(&format!("/api/v1/audit?request={}", ids[0]), Some(ALICE))
            .await;
        let retried = v["events"].as_array().is_some_and(|evs| {
            evs.iter()
                .any(|e| e["body"]["type"] == "notice" && e["body"]["kind"] == "feedback_retry")
        });
        if retried {
            break;
        }
        assert!(Instant::now() < deadline, "no feedback_retry notice: {v:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let posts_before = fake
        .calls()
        .iter()
        .filter(|(m, p)| m == "POST" && p.ends_with("/issues/7/comments"))
        .count();
    let deadline = Instant::now() + Duration::from_secs(10);
    while fake
        .calls()
        .iter()
        .filter(|(m, p)| m == "POST" && p.ends_with("/issues/7/comments"))
        .count()
        <= posts_before
    {
        assert!(
            Instant::now() < deadline,
            "the status comment was not retried"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    d.stop().await.expect("clean stop");
    // A transient 500: a later attempt posts the final status.
    let (d, fake, _) = github_fault(GhFault::Status(500), true).await;
    assert!(
        wait_status_comment(&fake, 7, "succeeded", Duration::from_secs(10)).await,
        "{:?}",
        fake.comments_on(7)
    );
    d.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn github_answering_429_keeps_the_result_and_the_daemon_healthy() {
    let (d, fake, _) = github_fault(GhFault::RateLimited(1), true).await;
    assert!(
        wait_status_comment(&fake, 7, "succeeded", Duration::from_secs(10)).await,
        "{:?}",
        fake.comments_on(7)
    );
    d.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn github_dropping_connections_keeps_the_result_and_the_daemon_healthy() {
    let (d, fake, _) = github_fault(GhFault::Drop, true).await;
    assert!(
        wait_status_comment(&fake, 7, "succeeded", Duration::from_secs(10)).await,
        "{:?}",
        fake.comments_on(7)
    );
    d.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn github_hanging_keeps_the_result_and_the_daemon_healthy_and_stoppable() {
    let (d, _fake, _) = github_fault(GhFault::Hang, false).await;
    let t0 = Instant::now();
    d.stop().await.expect("clean stop");
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "stop took {:?} (GitHub hanging must not hold up shutdown)",
        t0.elapsed()
    );
}
