//! GitOps benchmark (issue #6, point 9): plan time for 10,000 declared resources
//! with one change, an unchanged head (which must do no work), and the time from
//! `git push` to the op having run with the webhook trigger.
//!
//! Everything is real: a git repository in a temp dir with the resources spread
//! over TOML files, the log audit store, the core executor with a builtin apply op
//! that does nothing, the frontend's own passes, a bare remote reached over
//! `file://`, pushes made with the `git` CLI, and the webhook delivered through
//! the `FrontendHost` the daemon uses.
//!
//! ```text
//! cargo bench -p youops-frontend-git --bench gitops
//! ```
//!
//! Phases:
//!
//! 1. **initial apply**: the first `reconcile_once` of a local repository plans
//!    every resource as a create and applies them all (one request each).
//! 2. **plan with one change**: a commit changes one resource; measured are the
//!    dry run (`reconcile_once(.., dry_run = true)`: fetch, parse the changed
//!    file, diff all resources, submit nothing), the full pass that applies the
//!    change, the unchanged-head pass after it (`poll_once`, what an interval tick
//!    or webhook does: must do no work), a re-plan of the same head (dry run, all
//!    files already parsed: the diff alone), and a cold dry run by a new frontend
//!    (what `youops reconcile --once --dry-run` does in a new process: load the
//!    state file, parse every file, diff).
//! 3. **push-to-run**: a bare remote, a clone; the running frontend follows the
//!    remote over `file://`. Each round commits a change to one resource in the
//!    clone, then times `git push` + `POST /git/webhook` (bearer trigger) until
//!    the request for that resource is `succeeded`.
//!
//! Environment: `YOUOPS_BENCH_RESOURCES` (default 10,000), `YOUOPS_BENCH_FILES`
//! (default 100), `YOUOPS_BENCH_ROUNDS` (one-change plan rounds, default 20),
//! `YOUOPS_BENCH_PUSHES` (push-to-run rounds, default 20), `YOUOPS_BENCH_DIR`
//! (where the temp dirs go, default the system temp dir).
//!
//! Run without `--bench` (as `cargo test` does: the target has `test = true`),
//! it is a quick smoke run: 200 resources, 2 plan rounds, 3 pushes.

// The daemon's allocator (the `youops` binary's default `jemalloc` feature), so the
// figures are the daemon's; the same-run baselines share it.
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use git2::{Repository, RepositoryInitOptions, Signature};
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;
use youops_core::config::Config;
use youops_core::frontend::{Frontend, FrontendHost, Frontends};
use youops_core::runner::BuiltinCall;
use youops_core::{Executor, State};
use youops_frontend_git::{poll_once, reconcile_once, Action, GitFrontend, Plan};
use youops_store::{LogOptions, LogStore};

const EMAIL: &str = "bench@example.com";
const TOKEN: &str = "bench-webhook-token";

/// The per-principal rate limit is off: every change is by the same author,
/// and the measure is the frontend, not the limiter.
const CONFIG: &str = r#"
[executor]
rate_limit_per_minute = 0

[[ops]]
name = "item.apply"
description = "create or update an item (does nothing)"
runner = { type = "builtin", name = "item.apply" }
[[ops.params]]
name = "name"
type = "string"
[[ops.params]]
name = "owner"
type = "string"
[[ops.params]]
name = "tier"
type = "string"
[[ops.params]]
name = "value"
type = "string"

[principals.bench]
roles = ["bench"]
identities = { git = ["bench@example.com"] }

[[grants]]
roles = ["bench"]
ops = ["*"]

[[kinds]]
name = "item"
apply = "item.apply"
"#;

struct Settings {
    full: bool,
    resources: usize,
    files: usize,
    rounds: usize,
    pushes: usize,
}

fn env_usize(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(v) => v
            .parse::<usize>()
            .ok()
            .filter(|n| *n > 0)
            .unwrap_or_else(|| panic!("{name} must be a positive integer, not {v:?}")),
        Err(_) => default,
    }
}

fn settings() -> Settings {
    let full = std::env::args().any(|a| a == "--bench");
    let (resources, rounds, pushes) = if full { (10_000, 20, 20) } else { (200, 2, 3) };
    let resources = env_usize("YOUOPS_BENCH_RESOURCES", resources);
    let files = env_usize("YOUOPS_BENCH_FILES", 100).min(resources);
    Settings {
        full,
        resources,
        files,
        rounds: env_usize("YOUOPS_BENCH_ROUNDS", rounds),
        pushes: env_usize("YOUOPS_BENCH_PUSHES", pushes),
    }
}

// ------------------------------------------------------------ desired state

/// The declared resources: `r00000 ..`, spread round-robin-free over files
/// (file `f` holds a contiguous block), each with four fields.
struct Desired {
    values: Vec<u64>,
    files: usize,
}

impl Desired {
    fn new(n: usize, files: usize) -> Desired {
        Desired {
            values: vec![0; n],
            files,
        }
    }

    fn per_file(&self) -> usize {
        self.values.len().div_ceil(self.files)
    }

    fn file_of(&self, i: usize) -> usize {
        i / self.per_file()
    }

    fn path(f: usize) -> String {
        format!("state/items-{f:03}.toml")
    }

    fn name(i: usize) -> String {
        format!("r{i:05}")
    }

    fn text(&self, f: usize) -> String {
        let per = self.per_file();
        let end = ((f + 1) * per).min(self.values.len());
        let mut s = String::with_capacity(per * 96);
        for i in f * per..end {
            s.push_str(&format!(
                "[[resource]]\nkind = \"item\"\nname = \"{}\"\nowner = \"team-{}\"\ntier = \"{}\"\nvalue = \"v{}\"\n\n",
                Self::name(i),
                i % 37,
                ["bronze", "silver", "gold"][i % 3],
                self.values[i]
            ));
        }
        s
    }

    /// Change resource `i`; returns the file to rewrite.
    fn bump(&mut self, i: usize) -> usize {
        self.values[i] += 1;
        self.file_of(i)
    }
}

/// Commit `files` (path, text) with git2 on top of HEAD.
fn commit(repo: &Repository, files: &[(String, String)], message: &str) -> String {
    let wd = repo.workdir().expect("a work tree").to_path_buf();
    let mut index = repo.index().unwrap();
    for (p, text) in files {
        let full = wd.join(p);
        std::fs::create_dir_all(full.parent().unwrap()).unwrap();
        std::fs::write(&full, text).unwrap();
        index.add_path(Path::new(p)).unwrap();
    }
    index.write().unwrap();
    let tree = repo.find_tree(index.write_tree().unwrap()).unwrap();
    let sig = Signature::now("Bench", EMAIL).unwrap();
    let parent = repo.head().ok().and_then(|h| h.peel_to_commit().ok());
    let parents: Vec<&git2::Commit<'_>> = parent.iter().collect();
    repo.commit(Some("HEAD"), &sig, &sig, message, &tree, &parents)
        .unwrap()
        .to_string()
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .current_dir(dir)
        .args(args)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "Bench")
        .env("GIT_AUTHOR_EMAIL", EMAIL)
        .env("GIT_COMMITTER_NAME", "Bench")
        .env("GIT_COMMITTER_EMAIL", EMAIL)
        .output()
        .expect("the git CLI is installed");
    assert!(
        out.status.success(),
        "git {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

// ------------------------------------------------------------ executor, frontend

async fn executor(cfg: &Config, store: &Path, applied: Arc<AtomicU64>) -> Executor {
    let store = Arc::new(LogStore::open(store, LogOptions::default()).unwrap());
    Executor::builder(cfg, store)
        .builtin("item.apply", move |_call: BuiltinCall| {
            let applied = applied.clone();
            async move {
                applied.fetch_add(1, Ordering::Relaxed);
                Ok("ok".to_string())
            }
        })
        .build()
        .await
        .unwrap()
}

fn frontend(cfg: &Config, section: &str) -> GitFrontend {
    let section: toml::Table = toml::from_str(section).unwrap();
    GitFrontend::from_config(&section, &cfg.kinds, &cfg.base_dir).unwrap()
}

/// A frontend built with a debugging recorder of its own as the local
/// recorder, and its counters.
fn recorded_frontend(cfg: &Config, section: &str) -> (GitFrontend, Counters) {
    let recorder = DebuggingRecorder::new();
    let git = metrics::with_local_recorder(&recorder, || frontend(cfg, section));
    let counters = Counters {
        snapshotter: recorder.snapshotter(),
        totals: Mutex::default(),
    };
    (git, counters)
}

/// The counters of one frontend. A snapshot resets the counters it reads, so
/// the totals add the snapshots up.
struct Counters {
    snapshotter: Snapshotter,
    totals: Mutex<HashMap<String, u64>>,
}

impl Counters {
    fn get(&self, name: &str) -> u64 {
        let mut totals = self.totals.lock().unwrap();
        for (key, _, _, value) in self.snapshotter.snapshot().into_vec() {
            if let DebugValue::Counter(n) = value {
                *totals.entry(key.key().name().to_string()).or_default() += n;
            }
        }
        totals.get(name).copied().unwrap_or_default()
    }
}

fn toml_path(p: &Path) -> String {
    p.display().to_string().replace('\\', "\\\\")
}

// ------------------------------------------------------------ figures

#[derive(Default)]
struct Samples(Vec<Duration>);

impl Samples {
    fn push(&mut self, d: Duration) {
        self.0.push(d);
    }

    /// Nearest-rank percentile.
    fn pct(&self, p: f64) -> Duration {
        let mut v = self.0.clone();
        v.sort();
        let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
        v[rank.clamp(1, v.len()) - 1]
    }

    fn max(&self) -> Duration {
        self.0.iter().copied().max().unwrap_or_default()
    }
}

fn ms(d: Duration) -> String {
    let m = d.as_secs_f64() * 1e3;
    if m < 10.0 {
        format!("{m:.2} ms")
    } else {
        format!("{m:.1} ms")
    }
}

struct Row {
    what: String,
    runs: usize,
    p50: String,
    p99: String,
    max: String,
    target: String,
}

impl Row {
    fn timed(what: impl Into<String>, s: &Samples, target: Option<Duration>) -> Row {
        let goal = |t: Duration| match t.as_millis() {
            m if m >= 1000 && m % 1000 == 0 => format!("{} s", m / 1000),
            m => format!("{m} ms"),
        };
        let verdict = match target {
            Some(t) if s.max() <= t => format!("≤ {} ✅", goal(t)),
            Some(t) if s.pct(50.0) <= t => format!("≤ {} (p50 ✅, max ❌)", goal(t)),
            Some(t) => format!("≤ {} ❌", goal(t)),
            None => "—".into(),
        };
        Row {
            what: what.into(),
            runs: s.0.len(),
            p50: ms(s.pct(50.0)),
            p99: ms(s.pct(99.0)),
            max: ms(s.max()),
            target: verdict,
        }
    }

    fn once(what: impl Into<String>, value: String) -> Row {
        Row {
            what: what.into(),
            runs: 1,
            p50: value,
            p99: "".into(),
            max: "".into(),
            target: "—".into(),
        }
    }
}

// ------------------------------------------------------------ phases

/// The 1-minute load average (other work on the machine skews the figures).
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

/// Wait until the running frontend has made no pass for 300 ms.
async fn settle(counters: &Counters) {
    loop {
        let passes = counters.get("youops_git_passes_total");
        tokio::time::sleep(Duration::from_millis(300)).await;
        if counters.get("youops_git_passes_total") == passes {
            return;
        }
    }
}

fn one_update(plan: &Plan, id: &str, n: usize, applied: bool) {
    assert!(!plan.unchanged_head, "a new head must be planned");
    assert_eq!(plan.entries.len(), n, "every resource is planned");
    let changes: Vec<_> = plan.changes().collect();
    assert_eq!(changes.len(), 1, "exactly one change: {:?}", changes);
    assert_eq!(changes[0].id(), id);
    assert_eq!(changes[0].action, Action::Update);
    assert_eq!(plan.count(Action::Unchanged), n - 1);
    if applied {
        assert_eq!(changes[0].state, Some(State::Succeeded), "{plan}");
    }
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let s = settings();
    let base = std::env::var_os("YOUOPS_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let load_before = loadavg();
    let tmp = tempfile::tempdir_in(&base).unwrap();
    let dir = tmp.path();
    let n = s.resources;
    eprintln!(
        "gitops bench ({}): {n} resources in {} files, {} plan rounds, {} pushes, in {}",
        if s.full { "full" } else { "smoke" },
        s.files,
        s.rounds,
        s.pushes,
        dir.display()
    );
    let cfg = Config::parse(CONFIG, dir, "bench", &|_| None).unwrap();
    let applied = Arc::new(AtomicU64::new(0));
    let exec = executor(&cfg, &dir.join("store"), applied.clone()).await;
    let mut rows: Vec<Row> = Vec::new();

    // ---- the repository: n resources in `files` files, one commit.
    let repo_dir = dir.join("repo");
    let mut opts = RepositoryInitOptions::new();
    opts.initial_head("main");
    let repo = Repository::init_opts(&repo_dir, &opts).unwrap();
    let mut desired = Desired::new(n, s.files);
    let all: Vec<(String, String)> = (0..s.files)
        .map(|f| (Desired::path(f), desired.text(f)))
        .filter(|(_, t)| !t.is_empty())
        .collect();
    let bytes: usize = all.iter().map(|(_, t)| t.len()).sum();
    commit(&repo, &all, "declare everything");
    eprintln!(
        "repository: {} files, {:.1} MiB of TOML",
        all.len(),
        bytes as f64 / (1 << 20) as f64
    );

    // ---- phase 1: the initial apply (local repository).
    let local_section = format!(
        "repo = \"{}\"\npath = \"state\"\nstate_dir = \"{}\"\ninterval = \"1h\"\n",
        toml_path(&repo_dir),
        toml_path(&dir.join("state-local"))
    );
    let (local, local_counters) = recorded_frontend(&cfg, &local_section);
    let t = Instant::now();
    let plan = reconcile_once(&exec, &local, false).await.unwrap();
    let initial = t.elapsed();
    assert_eq!(plan.count(Action::Create), n);
    assert!(plan.changes().all(|e| e.state == Some(State::Succeeded)));
    assert_eq!(applied.load(Ordering::Relaxed), n as u64);
    rows.push(Row::once(
        format!("initial apply: {n} creates, one request each (local repo)"),
        format!(
            "{:.2} s = {:.0} req/s",
            initial.as_secs_f64(),
            n as f64 / initial.as_secs_f64()
        ),
    ));

    // ---- phase 2: one change per round.
    let (mut dry, mut pass, mut noop, mut replan, mut cold) = (
        Samples::default(),
        Samples::default(),
        Samples::default(),
        Samples::default(),
        Samples::default(),
    );
    for round in 0..s.rounds {
        let i = (round * 7919 + 4242) % n;
        let id = format!("item/{}", Desired::name(i));
        let f = desired.bump(i);
        commit(
            &repo,
            &[(Desired::path(f), desired.text(f))],
            &format!("change {id}"),
        );

        // The dry run: plans the new head, submits nothing.
        let before = applied.load(Ordering::Relaxed);
        let t = Instant::now();
        let plan = reconcile_once(&exec, &local, true).await.unwrap();
        dry.push(t.elapsed());
        one_update(&plan, &id, n, false);
        assert_eq!(
            applied.load(Ordering::Relaxed),
            before,
            "a dry run runs nothing"
        );

        // A cold dry run: a new frontend (new process), state loaded from disk,
        // every file parsed.
        let fresh = frontend(&cfg, &local_section);
        let t = Instant::now();
        let plan = reconcile_once(&exec, &fresh, true).await.unwrap();
        cold.push(t.elapsed());
        one_update(&plan, &id, n, false);
        drop(fresh);

        // The full pass: plan, apply the one change, note, state.
        let t = Instant::now();
        let plan = reconcile_once(&exec, &local, false).await.unwrap();
        pass.push(t.elapsed());
        one_update(&plan, &id, n, true);
        assert_eq!(applied.load(Ordering::Relaxed), before + 1);

        // Unchanged head: what every interval tick does until the next push.
        for _ in 0..20 {
            let passes = local_counters.get("youops_git_noop_passes_total");
            let t = Instant::now();
            let plan = poll_once(&exec, &local).await.unwrap();
            noop.push(t.elapsed());
            assert!(plan.unchanged_head, "an unchanged head is not re-planned");
            assert!(plan.entries.is_empty());
            assert_eq!(
                local_counters.get("youops_git_noop_passes_total"),
                passes + 1
            );
        }
        assert_eq!(applied.load(Ordering::Relaxed), before + 1, "no work");

        // Re-plan of the same head, every file already parsed: the diff alone.
        let t = Instant::now();
        let plan = reconcile_once(&exec, &local, true).await.unwrap();
        replan.push(t.elapsed());
        assert_eq!(plan.changes().count(), 0);
    }
    let state_bytes = std::fs::metadata(dir.join("state-local").join("state.json"))
        .map(|m| m.len())
        .unwrap_or(0);
    let target_plan = Some(Duration::from_millis(100));
    rows.push(Row::timed(
        format!("plan, one change of {n} (dry run: fetch, parse changed file, diff)"),
        &dry,
        target_plan,
    ));
    rows.push(Row::timed(
        format!("plan, one change of {n}, cold (new frontend: load state, parse all files, diff)"),
        &cold,
        None,
    ));
    rows.push(Row::timed(
        format!("full pass, one change of {n} (plan + apply 1 + note + state)"),
        &pass,
        None,
    ));
    rows.push(Row::timed(
        format!("re-plan of an unchanged head, {n} resources (dry run, diff only)"),
        &replan,
        None,
    ));
    rows.push(Row::timed(
        format!("unchanged head, {n} resources (`poll_once`: no parse, no plan, no request)"),
        &noop,
        Some(Duration::from_millis(10)),
    ));

    // ---- phase 3: push-to-run over a file:// remote with the webhook trigger.
    let bare = dir.join("remote.git");
    let work = dir.join("work");
    git(
        dir,
        &[
            "clone",
            "-q",
            "--bare",
            repo_dir.to_str().unwrap(),
            bare.to_str().unwrap(),
        ],
    );
    git(
        dir,
        &[
            "clone",
            "-q",
            bare.to_str().unwrap(),
            work.to_str().unwrap(),
        ],
    );
    let remote_section = format!(
        "repo = \"file://{}\"\npath = \"state\"\nstate_dir = \"{}\"\ninterval = \"1h\"\nwebhook_token = \"{TOKEN}\"\n",
        toml_path(&bare),
        toml_path(&dir.join("state-remote"))
    );
    let (remote, remote_counters) = recorded_frontend(&cfg, &remote_section);
    let shutdown = CancellationToken::new();
    let host = FrontendHost::new(
        &Frontends::new().with(remote.clone()),
        &exec,
        None,
        &shutdown,
        |_| toml::Table::new(),
    );
    let routes = host.routes();
    let (_, index) = routes
        .iter()
        .find(|(r, _)| r.path == "/git/webhook")
        .expect("the webhook route");
    let index = *index;
    let before = applied.load(Ordering::Relaxed);
    let t = Instant::now();
    let handles = host.spawn();
    while !remote.is_ready() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let initial_remote = t.elapsed();
    assert_eq!(
        applied.load(Ordering::Relaxed) - before,
        n as u64,
        "the first pass over the remote applies everything (its own commits' requests)"
    );
    rows.push(Row::once(
        format!("initial apply: {n} creates (file:// remote, running frontend)"),
        format!(
            "{:.2} s = {:.0} req/s",
            initial_remote.as_secs_f64(),
            n as f64 / initial_remote.as_secs_f64()
        ),
    ));

    // The running frontend's lifecycle stream lagged behind the initial apply's
    // events, so it makes one more (full) pass to re-read: let it finish.
    settle(&remote_counters).await;

    // Unchanged head over the remote: includes a fetch.
    let mut noop_remote = Samples::default();
    for _ in 0..50 {
        let t = Instant::now();
        let plan = poll_once(&exec, &remote).await.unwrap();
        noop_remote.push(t.elapsed());
        assert!(plan.unchanged_head);
    }
    rows.push(Row::timed(
        format!("unchanged head, {n} resources, file:// remote (`poll_once`: fetch, no work)"),
        &noop_remote,
        Some(Duration::from_millis(10)),
    ));

    let (mut total, mut push, mut hook) =
        (Samples::default(), Samples::default(), Samples::default());
    for round in 0..s.pushes {
        let i = (round * 104_729 + 17) % n;
        let id = format!("item/{}", Desired::name(i));
        let f = desired.bump(i);
        std::fs::write(work.join(Desired::path(f)), desired.text(f)).unwrap();
        git(&work, &["commit", "-q", "-am", &format!("change {id}")]);
        let head = git(&work, &["rev-parse", "HEAD"]).trim().to_string();
        let mut events = exec.subscribe();

        let t0 = Instant::now();
        git(&work, &["push", "-q", "origin", "HEAD:main"]);
        let pushed = t0.elapsed();
        let r = host
            .handle(
                index,
                http::Request::builder()
                    .method("POST")
                    .uri("/git/webhook")
                    .header("authorization", format!("Bearer {TOKEN}"))
                    .body(Bytes::new())
                    .unwrap(),
            )
            .await;
        assert_eq!(r.status(), 202, "{:?}", r.body());
        let rid = loop {
            match events.recv().await {
                Ok(ev) => {
                    let refs = &ev.record.request.origin.reference;
                    if refs.get("resource") == Some(&id) && refs.get("commit") == Some(&head) {
                        break ev.record.request.id;
                    }
                }
                Err(RecvError::Lagged(_)) => continue,
                Err(RecvError::Closed) => panic!("the executor stopped"),
            }
        };
        let rec = exec.wait(rid).await.unwrap();
        let done = t0.elapsed();
        assert_eq!(rec.state, State::Succeeded, "{rec:?}");
        total.push(done);
        push.push(pushed);
        hook.push(done - pushed);
        // Pushes are seconds apart in real life: let the pass finish (note, state).
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    rows.push(Row::timed(
        "`git push` alone (git CLI, file:// remote)",
        &push,
        None,
    ));
    rows.push(Row::timed(
        "webhook → request `succeeded` (fetch, plan, submit, run)",
        &hook,
        None,
    ));
    rows.push(Row::timed(
        format!("**push-to-run**, {n} resources: `git push` → webhook → op `succeeded`"),
        &total,
        Some(Duration::from_secs(1)),
    ));

    shutdown.cancel();
    for h in handles {
        h.await.unwrap().unwrap();
    }
    exec.shutdown(Duration::from_secs(10)).await.unwrap();

    println!();
    if !s.full {
        println!("(smoke run: a debug build and few resources; the figures mean nothing)");
    }
    println!(
        "GitOps bench: {n} resources in {} files ({:.1} MiB TOML), 4 fields each; builtin no-op apply op; log store",
        all.len(),
        bytes as f64 / (1 << 20) as f64
    );
    println!();
    println!(
        "Load average (1 min) at start / end: {load_before} / {}; {} CPUs; the frontend's state file: {:.1} MiB",
        loadavg(),
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        state_bytes as f64 / (1 << 20) as f64
    );
    println!();
    println!("| measurement | runs | p50 | p99 | max | target |");
    println!("|---|---:|---:|---:|---:|---|");
    for r in &rows {
        println!(
            "| {} | {} | {} | {} | {} | {} |",
            r.what, r.runs, r.p50, r.p99, r.max, r.target
        );
    }
}
