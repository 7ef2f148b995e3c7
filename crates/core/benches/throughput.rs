//! Core throughput: requests per second through validate → authorize → builtin
//! no-op → durable audit append, with 1, 8 and 64 concurrent submitters, beside two
//! raw sled baselines measured in the same run on the same disk:
//!
//! - (a) one sled insert of a ~400-byte value + `Db::flush` per event, one thread;
//! - (b) raw sled inserts of the same size, flushed every `YOUOPS_BENCH_BATCH`
//!   (default 256) inserts.
//!
//! Each submitter loops `submit` then `wait`, so every request writes its whole
//! lifecycle (`received` durable, `running` buffered, `succeeded` durable) before
//! the next one starts. The results are printed as a markdown table.
//!
//! ```text
//! cargo bench -p youops-core --bench throughput
//! ```
//!
//! Environment: `YOUOPS_BENCH_SECS` (seconds per measurement, default 5),
//! `YOUOPS_BENCH_BATCH` (inserts per flush of baseline (b), default 256),
//! `YOUOPS_BENCH_DIR` (where the temporary stores go, default the system temp dir),
//! `YOUOPS_BENCH_SUBMITTERS` (comma-separated submitter counts, default `1,8,64`).
//!
//! Run without `--bench` (as `cargo test --benches` / `--all-targets` does), it is a
//! quick smoke run of 0.2 s per measurement unless `YOUOPS_BENCH_SECS` is set.

// The daemon's allocator (the `youops` binary's default `jemalloc` feature), so the
// figures are the daemon's; the same-run baselines share it.
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use youops_core::audit::{AuditStore, SledStats, SledStore};
use youops_core::config::Config;
use youops_core::{Actor, Executor, Origin, State, Submission};

/// The per-principal rate limit (`[executor] rate_limit_per_minute`, 600 by
/// default) is switched off: every submitter is the same principal, and the
/// measure is the core path, not the limiter.
const CONFIG: &str = r#"
[executor]
rate_limit_per_minute = 0

[[ops]]
name = "noop"
description = "does nothing"
runner = { type = "builtin", name = "noop" }
roles = ["bench"]
[[ops.params]]
name = "n"
type = "int"

[principals.bench]
roles = ["bench"]
identities = { cli = ["bench"] }
"#;

/// Size of the values the sled baselines write (an audit event is a few hundred
/// bytes of JSON; the run prints the real mean).
const VALUE_BYTES: usize = 400;

struct Settings {
    secs: Duration,
    warmup: Duration,
    batch: usize,
    submitters: Vec<usize>,
}

fn settings() -> Settings {
    let benching = std::env::args().any(|a| a == "--bench");
    let secs = match std::env::var("YOUOPS_BENCH_SECS") {
        Ok(v) => v
            .parse::<f64>()
            .ok()
            .filter(|s| *s > 0.0)
            .unwrap_or_else(|| panic!("YOUOPS_BENCH_SECS must be a positive number, not {v:?}")),
        Err(_) if benching => 5.0,
        Err(_) => 0.2,
    };
    let batch = std::env::var("YOUOPS_BENCH_BATCH")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|b| *b > 0)
        .unwrap_or(256);
    let submitters = std::env::var("YOUOPS_BENCH_SUBMITTERS")
        .ok()
        .map(|v| {
            v.split(',')
                .map(|n| n.trim().parse::<usize>().expect("YOUOPS_BENCH_SUBMITTERS"))
                .filter(|n| *n > 0)
                .collect::<Vec<_>>()
        })
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| vec![1, 8, 64]);
    let secs = Duration::from_secs_f64(secs);
    Settings {
        secs,
        warmup: (secs / 5).min(Duration::from_secs(1)),
        batch,
        submitters,
    }
}

/// One line of the results table.
struct Row {
    config: String,
    /// Requests per second (for baselines: events/s divided by events per request).
    requests: f64,
    events: f64,
    p50: Option<Duration>,
    p99: Option<Duration>,
}

struct Percentiles {
    p50: Duration,
    p99: Duration,
}

fn percentiles(mut v: Vec<Duration>) -> Option<Percentiles> {
    if v.is_empty() {
        return None;
    }
    v.sort_unstable();
    let at = |p: usize| v[(v.len() * p / 100).min(v.len() - 1)];
    Some(Percentiles {
        p50: at(50),
        p99: at(99),
    })
}

fn ms(d: Option<Duration>) -> String {
    match d {
        Some(d) => format!("{:.2} ms", d.as_secs_f64() * 1e3),
        None => "—".into(),
    }
}

fn value() -> Vec<u8> {
    (0..VALUE_BYTES).map(|i| b'a' + (i % 26) as u8).collect()
}

fn open_raw(path: &std::path::Path) -> sled::Db {
    // The same cache size as the audit store's default.
    sled::Config::new()
        .path(path)
        .cache_capacity(64 << 20)
        .open()
        .expect("open baseline sled db")
}

/// Baseline (a): one insert + flush per event, one thread. Per-event latencies.
fn baseline_flush_each(path: &std::path::Path, dur: Duration) -> (u64, Duration, Vec<Duration>) {
    let db = open_raw(path);
    let v = value();
    let mut lat = Vec::new();
    let mut n = 0u64;
    let start = Instant::now();
    while start.elapsed() < dur {
        let t = Instant::now();
        n += 1;
        db.insert(n.to_be_bytes(), v.as_slice()).expect("insert");
        db.flush().expect("flush");
        lat.push(t.elapsed());
    }
    (n, start.elapsed(), lat)
}

/// Baseline (b): inserts flushed every `batch`. Per-batch latencies.
fn baseline_batched(
    path: &std::path::Path,
    dur: Duration,
    batch: usize,
) -> (u64, Duration, Vec<Duration>) {
    let db = open_raw(path);
    let v = value();
    let mut lat = Vec::new();
    let mut n = 0u64;
    let start = Instant::now();
    while start.elapsed() < dur {
        let t = Instant::now();
        for _ in 0..batch {
            n += 1;
            db.insert(n.to_be_bytes(), v.as_slice()).expect("insert");
        }
        db.flush().expect("flush");
        lat.push(t.elapsed());
    }
    (n, start.elapsed(), lat)
}

/// CPU time (user + system, in clock ticks) of this process's threads, grouped by
/// thread name with trailing numbers dropped (`sled-io-3` → `sled-io`). Empty
/// where `/proc` is not available.
fn thread_cpu() -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    let pid = std::process::id().to_string();
    for t in tasks.flatten() {
        let main = t.file_name().to_str() == Some(pid.as_str());
        let Ok(stat) = std::fs::read_to_string(t.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ... utime stime: fields 14 and 15; comm may hold spaces.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let comm = stat[open + 1..close].trim_end_matches(|c: char| c.is_ascii_digit() || c == '-');
        let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        let ticks = |i: usize| {
            fields
                .get(i)
                .and_then(|f| f.parse::<u64>().ok())
                .unwrap_or(0)
        };
        let name = match comm {
            _ if main => "main (bench driver)",
            // Thread names are cut to 15 bytes: youops-audit-wr(iter), youops-audit-fl(usher), youops-audit-in(dexer).
            c if c.starts_with("youops-audit-f") => "audit flusher",
            c if c.starts_with("youops-audit-i") => "audit indexer",
            c if c.starts_with("youops-audit") => "audit writer",
            c if c.starts_with("tokio-runtime") || c.starts_with("tokio-rt") => "tokio workers",
            c if c.starts_with("sled-io") => "sled io pool",
            "log flusher" => "sled log flusher",
            _ => "other",
        };
        // After ")": state is index 0, so utime (field 14) is index 11, stime index 12.
        *out.entry(name.to_string()).or_insert(0) += ticks(11) + ticks(12);
    }
    out
}

/// Ticks per second of `/proc` CPU times (USER_HZ, 100 on Linux).
const TICKS: f64 = 100.0;

fn cpu_since(before: &BTreeMap<String, u64>) -> BTreeMap<String, f64> {
    let mut now = thread_cpu();
    // Threads that ended in between are not counted (only sled io threads may come
    // and go); keep every name seen before.
    for k in before.keys() {
        now.entry(k.clone()).or_insert(0);
    }
    now.into_iter()
        .map(|(k, v)| {
            let b = before.get(&k).copied().unwrap_or(0);
            (k, v.saturating_sub(b) as f64 / TICKS)
        })
        .collect()
}

struct ExecRun {
    submitters: usize,
    requests: u64,
    events: u64,
    elapsed: Duration,
    latencies: Vec<Duration>,
    stats: SledStats,
    /// CPU seconds by thread group during the run.
    cpu: BTreeMap<String, f64>,
}

/// `n` submitters, each looping submit → wait until `dur` has passed.
async fn drive(exec: &Executor, store: &SledStore, n: usize, dur: Duration) -> ExecRun {
    let (seq0, _) = store.head().await.expect("head");
    let stats0 = store.stats();
    let cpu0 = thread_cpu();
    let start = Instant::now();
    let deadline = start + dur;
    let mut tasks = Vec::with_capacity(n);
    for s in 0..n {
        let exec = exec.clone();
        tasks.push(tokio::spawn(async move {
            let actor = Actor::new("cli", "bench");
            let origin = Origin::new("bench");
            let mut lat = Vec::with_capacity(4096);
            let mut i = 0u64;
            while Instant::now() < deadline {
                let t = Instant::now();
                let sub = Submission::new("noop", actor.clone(), origin.clone())
                    .arg("n", (s as u64 * 1_000_000_000 + i).to_string());
                let ticket = exec.submit(sub).await.expect("submit");
                let rec = exec
                    .wait(ticket.record.request.id)
                    .await
                    .expect("wait for the request");
                assert_eq!(rec.state, State::Succeeded, "{:?}", rec.reason);
                lat.push(t.elapsed());
                i += 1;
            }
            lat
        }));
    }
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await.expect("submitter task"));
    }
    let elapsed = start.elapsed();
    let (seq1, _) = store.head().await.expect("head");
    ExecRun {
        submitters: n,
        requests: latencies.len() as u64,
        events: seq1 - seq0,
        elapsed,
        latencies,
        stats: store.stats().since(&stats0),
        cpu: cpu_since(&cpu0),
    }
}

fn mean_event_bytes(store: &SledStore, last: usize) -> f64 {
    let mut n = 0usize;
    let mut bytes = 0usize;
    // Blocks hold one event per line.
    for kv in store.raw_tree().scan_prefix(b"b").rev() {
        let (_, v) = kv.expect("scan");
        for line in v.split(|b| *b == b'\n') {
            n += 1;
            bytes += line.len();
        }
        if n >= last {
            break;
        }
    }
    if n == 0 {
        0.0
    } else {
        bytes as f64 / n as f64
    }
}

fn main() {
    let set = settings();
    let root = match std::env::var_os("YOUOPS_BENCH_DIR") {
        Some(d) => std::path::PathBuf::from(d),
        None => std::env::temp_dir(),
    };
    let dir = tempfile::Builder::new()
        .prefix("youops-bench-")
        .tempdir_in(&root)
        .expect("temp dir");
    let load = || {
        std::fs::read_to_string("/proc/loadavg")
            .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
            .unwrap_or_else(|_| "?".into())
    };
    let load_before = load();
    eprintln!(
        "youops-core throughput: {:.1}s per measurement (warm-up {:.1}s), stores in {}, load average {load_before}",
        set.secs.as_secs_f64(),
        set.warmup.as_secs_f64(),
        dir.path().display()
    );

    // Baselines first, on the same disk, nothing else running.
    eprintln!("baseline (a): insert + flush per event ...");
    let (a_events, a_elapsed, a_lat) =
        baseline_flush_each(&dir.path().join("baseline-a"), set.secs);
    let a_rate = a_events as f64 / a_elapsed.as_secs_f64();
    eprintln!("  {a_rate:.0} events/s");
    eprintln!("baseline (b): inserts, flush every {} ...", set.batch);
    let (b_events, b_elapsed, b_lat) =
        baseline_batched(&dir.path().join("baseline-b"), set.secs, set.batch);
    let b_rate = b_events as f64 / b_elapsed.as_secs_f64();
    eprintln!("  {b_rate:.0} events/s");

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let store_path = dir.path().join("store");
    let (runs, verify, event_bytes) = rt.block_on(async {
        let cfg = Config::parse(CONFIG, dir.path(), "bench", &|_| None)
            .unwrap_or_else(|e| panic!("bench config: {e}"));
        let store = SledStore::open(&store_path).expect("open store");
        let exec = Executor::builder(&cfg, Arc::new(store.clone()))
            .builtin("noop", |_c| async { Ok(String::new()) })
            .build()
            .await
            .expect("executor");
        let mut runs = Vec::new();
        for &n in &set.submitters {
            eprintln!("executor, {n} submitter(s) ...");
            drive(&exec, &store, n, set.warmup).await;
            let r = drive(&exec, &store, n, set.secs).await;
            eprintln!(
                "  {:.0} requests/s",
                r.requests as f64 / r.elapsed.as_secs_f64()
            );
            runs.push(r);
        }
        exec.shutdown(Duration::from_secs(10))
            .await
            .expect("shutdown");
        let event_bytes = mean_event_bytes(&store, 30_000);
        let t = Instant::now();
        let verify = store.verify().await.expect("verify");
        (runs, (verify, t.elapsed()), event_bytes)
    });

    // Every run should write the same number of events per request.
    let epr = runs
        .iter()
        .map(|r| r.events as f64 / r.requests.max(1) as f64)
        .fold(0.0f64, f64::max)
        .max(1.0);
    let a_req = a_rate / epr;
    let b_req = b_rate / epr;

    let mut rows = Vec::new();
    for r in &runs {
        let p = percentiles(r.latencies.clone());
        let secs = r.elapsed.as_secs_f64();
        rows.push(Row {
            config: format!(
                "executor, {} submitter{}",
                r.submitters,
                if r.submitters == 1 { "" } else { "s" }
            ),
            requests: r.requests as f64 / secs,
            events: r.events as f64 / secs,
            p50: p.as_ref().map(|p| p.p50),
            p99: p.as_ref().map(|p| p.p99),
        });
    }
    let pa = percentiles(a_lat);
    rows.push(Row {
        config: "baseline (a): 1 insert + flush per event, 1 thread".into(),
        requests: a_req,
        events: a_rate,
        p50: pa.as_ref().map(|p| p.p50),
        p99: pa.as_ref().map(|p| p.p99),
    });
    let pb = percentiles(b_lat);
    rows.push(Row {
        config: format!(
            "baseline (b): inserts, flush every {} (latency per batch)",
            set.batch
        ),
        requests: b_req,
        events: b_rate,
        p50: pb.as_ref().map(|p| p.p50),
        p99: pb.as_ref().map(|p| p.p99),
    });

    println!();
    println!(
        "{:.0} s per measurement; {epr:.2} audit events per request (received, running, succeeded); \
         baselines write {VALUE_BYTES}-byte values, stored events average {event_bytes:.0} bytes; \
         baseline requests/s = events/s ÷ {epr:.2}.",
        set.secs.as_secs_f64()
    );
    println!();
    println!("| config | requests/s | events/s | p50 | p99 | × baseline (a) | × baseline (b) |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for r in &rows {
        println!(
            "| {} | {:.0} | {:.0} | {} | {} | {:.2} | {:.3} |",
            r.config,
            r.requests,
            r.events,
            ms(r.p50),
            ms(r.p99),
            r.requests / a_req,
            r.requests / b_req
        );
    }
    println!();
    println!("Group commit in the audit writer (same runs):");
    println!();
    println!("| submitters | groups/s | events/group | appends/group | sled keys/request | fsyncs/s | mean fsync | writer busy applying | indexer busy | flusher busy in fsync |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in &runs {
        let s = &r.stats;
        let secs = r.elapsed.as_secs_f64();
        let pct = |n: u64| 100.0 * n as f64 / 1e9 / secs;
        println!(
            "| {} | {:.0} | {:.1} | {:.1} | {:.2} | {:.0} | {:.2} ms | {:.0}% | {:.0}% | {:.0}% |",
            r.submitters,
            s.groups as f64 / secs,
            s.events as f64 / s.groups.max(1) as f64,
            s.jobs as f64 / s.groups.max(1) as f64,
            s.keys as f64 / r.requests.max(1) as f64,
            s.flushes as f64 / secs,
            s.flush_nanos as f64 / s.flushes.max(1) as f64 / 1e6,
            pct(s.apply_nanos),
            pct(s.index_nanos),
            pct(s.flush_nanos),
        );
    }
    if runs.iter().any(|r| !r.cpu.is_empty()) {
        let names: Vec<String> = runs
            .iter()
            .flat_map(|r| r.cpu.keys().cloned())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        println!();
        println!(
            "CPU time per request, µs, by thread (from /proc; {} cores; 100% = one core busy):",
            std::thread::available_parallelism().map_or(0, |n| n.get())
        );
        println!();
        print!("| submitters |");
        for n in &names {
            print!(" {n} |");
        }
        println!(" total | CPU use |");
        print!("|---:|");
        for _ in &names {
            print!("---:|");
        }
        println!("---:|---:|");
        for r in &runs {
            let req = r.requests.max(1) as f64;
            print!("| {} |", r.submitters);
            let mut total = 0.0;
            for n in &names {
                let c = r.cpu.get(n).copied().unwrap_or(0.0);
                total += c;
                print!(" {:.0} |", c * 1e6 / req);
            }
            println!(
                " {:.0} | {:.0}% |",
                total * 1e6 / req,
                100.0 * total / r.elapsed.as_secs_f64()
            );
        }
    }
    println!();
    println!(
        "Load average (1, 5, 15 min) before the run: {load_before}; after: {}.",
        load()
    );
    let (report, took) = verify;
    println!();
    println!(
        "Chain verification: {} ({} events checked, head #{}, {:.2}s)",
        if report.ok() { "intact" } else { "BROKEN" },
        report.checked,
        report.head_seq,
        took.as_secs_f64()
    );
    if let Some(b) = &report.broken {
        panic!("the audit chain is broken: {b}");
    }
}
