//! Core throughput: durable requests per second through validate → authorize →
//! builtin no-op → the log store (`youops_store::LogStore`), with 1, 64 and 256
//! concurrent submitters, each beside a raw `fdatasync` baseline measured in the
//! same run, in the same directory as the store.
//!
//! Each submitter loops `submit` then `wait`, so every request writes its whole
//! lifecycle before the next one starts: `received` (durable: `submit` returns
//! once its group is `fdatasync`ed, and only then does the op run), `running`
//! (buffered) and `succeeded` (durable, in the next group).
//!
//! The store runs on the real file layer (`fs::StdFs`) behind a wrapper that
//! counts the log's writes, bytes and `fdatasync`s and times each sync, so the
//! run reports the group sizes the store reached (events per `fdatasync`). After
//! each executor run, the raw baseline appends records of the run's mean event
//! size to a plain file, in groups of the group size the store reached (one
//! `write`, then one `fdatasync`, as the store does), for as long as the run:
//! the disk's own `fdatasync` p50 / p99 and records/s at that group size.
//!
//! ```text
//! cargo bench -p youops-core --bench throughput
//! ```
//!
//! Environment: `YOUOPS_BENCH_SECS` (seconds per measurement, default 5),
//! `YOUOPS_BENCH_SUBMITTERS` (comma-separated submitter counts, default
//! `1,64,256`), `YOUOPS_BENCH_DIR` (where the temporary store goes, default the
//! system temp dir; put it on the disk you mean to measure), `YOUOPS_BENCH_KEEP=1`
//! (keep the store afterwards, and print where it is).
//!
//! Run without `--bench` (as `cargo test --benches` / `--all-targets` does), it is a
//! quick smoke run of 0.2 s per measurement unless `YOUOPS_BENCH_SECS` is set.

// The daemon's allocator (the `youops` binary's default `jemalloc` feature), so the
// figures are the daemon's.
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use std::collections::BTreeMap;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use youops_core::audit::AuditStore;
use youops_core::config::Config;
use youops_core::{Actor, Executor, Origin, State, Submission};
use youops_store::fs::{LogFile, LogFs, StdFs};
use youops_store::{LogOptions, LogStore};

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

/// The issue's targets, printed beside the figures.
const TARGET_RPS_AT_64: f64 = 20_000.0;
const TARGET_CPU_US: f64 = 80.0;
const TARGET_BYTES_PER_EVENT: f64 = 600.0;

struct Settings {
    secs: Duration,
    warmup: Duration,
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
    let submitters = std::env::var("YOUOPS_BENCH_SUBMITTERS")
        .ok()
        .map(|v| {
            v.split(',')
                .map(|n| n.trim().parse::<usize>().expect("YOUOPS_BENCH_SUBMITTERS"))
                .filter(|n| *n > 0)
                .collect::<Vec<_>>()
        })
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| vec![1, 64, 256]);
    let secs = Duration::from_secs_f64(secs);
    Settings {
        secs,
        warmup: (secs / 5).min(Duration::from_secs(1)),
        submitters,
    }
}

// --- the counting file layer ------------------------------------------------------

/// What the log did through its file layer (cumulative).
#[derive(Debug, Default)]
struct FsStats {
    appends: AtomicU64,
    bytes: AtomicU64,
    syncs: AtomicU64,
    sync_nanos: AtomicU64,
    /// Every `fdatasync` of a log segment, µs.
    sync_us: Mutex<Vec<u32>>,
    dir_syncs: AtomicU64,
}

#[derive(Debug, Clone, Copy, Default)]
struct FsSnap {
    appends: u64,
    bytes: u64,
    syncs: u64,
    sync_nanos: u64,
    sync_samples: usize,
    dir_syncs: u64,
}

impl FsStats {
    fn snap(&self) -> FsSnap {
        FsSnap {
            appends: self.appends.load(Ordering::SeqCst),
            bytes: self.bytes.load(Ordering::SeqCst),
            syncs: self.syncs.load(Ordering::SeqCst),
            sync_nanos: self.sync_nanos.load(Ordering::SeqCst),
            sync_samples: lock(&self.sync_us).len(),
            dir_syncs: self.dir_syncs.load(Ordering::SeqCst),
        }
    }

    /// The `fdatasync` latencies since `from`, sorted.
    fn sync_us_since(&self, from: &FsSnap) -> Vec<u32> {
        let mut v = lock(&self.sync_us)[from.sync_samples..].to_vec();
        v.sort_unstable();
        v
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// `StdFs`, counting.
#[derive(Debug)]
struct CountingFs {
    stats: Arc<FsStats>,
}

#[derive(Debug)]
struct CountingFile {
    inner: Box<dyn LogFile>,
    stats: Arc<FsStats>,
}

impl LogFile for CountingFile {
    fn append(&mut self, buf: &[u8]) -> io::Result<()> {
        self.stats.appends.fetch_add(1, Ordering::SeqCst);
        self.stats
            .bytes
            .fetch_add(buf.len() as u64, Ordering::SeqCst);
        self.inner.append(buf)
    }

    fn sync_data(&mut self) -> io::Result<()> {
        let t = Instant::now();
        let r = self.inner.sync_data();
        let d = t.elapsed();
        self.stats.syncs.fetch_add(1, Ordering::SeqCst);
        self.stats
            .sync_nanos
            .fetch_add(d.as_nanos() as u64, Ordering::SeqCst);
        lock(&self.stats.sync_us).push(u32::try_from(d.as_micros()).unwrap_or(u32::MAX));
        r
    }

    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }
}

impl CountingFs {
    fn wrap(&self, f: io::Result<Box<dyn LogFile>>) -> io::Result<Box<dyn LogFile>> {
        Ok(Box::new(CountingFile {
            inner: f?,
            stats: self.stats.clone(),
        }))
    }
}

impl LogFs for CountingFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        StdFs.create_dir_all(dir)
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        StdFs.list(dir)
    }
    fn create(&self, path: &Path) -> io::Result<Box<dyn LogFile>> {
        self.wrap(StdFs.create(path))
    }
    fn open_append(&self, path: &Path) -> io::Result<Box<dyn LogFile>> {
        self.wrap(StdFs.open_append(path))
    }
    fn read_at(&self, path: &Path, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        StdFs.read_at(path, offset, buf)
    }
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        StdFs.read(path)
    }
    fn len(&self, path: &Path) -> io::Result<u64> {
        StdFs.len(path)
    }
    fn truncate(&self, path: &Path, len: u64) -> io::Result<()> {
        StdFs.truncate(path, len)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        StdFs.rename(from, to)
    }
    fn link(&self, from: &Path, to: &Path) -> io::Result<()> {
        StdFs.link(from, to)
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        StdFs.remove(path)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.stats.dir_syncs.fetch_add(1, Ordering::SeqCst);
        StdFs.sync_dir(dir)
    }
}

// --- measures ---------------------------------------------------------------------

/// Nearest-rank percentile of sorted samples.
fn pct<T: Copy>(sorted: &[T], p: f64) -> Option<T> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

fn ms_us(v: Option<u32>) -> String {
    v.map_or("—".into(), |us| format!("{:.2}", f64::from(us) / 1e3))
}

fn ms_d(v: Option<Duration>) -> String {
    v.map_or("—".into(), |d| format!("{:.2}", d.as_secs_f64() * 1e3))
}

/// Ticks per second of `/proc` CPU times (USER_HZ, 100 on Linux).
const TICKS: f64 = 100.0;

/// User + system CPU seconds of the whole process, threads that ended included
/// (`/proc/self/stat` fields 14 and 15: the kernel's thread-group accounting,
/// the same figure as `getrusage(RUSAGE_SELF)`, in 10 ms ticks).
fn process_cpu() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    let Some(close) = stat.rfind(')') else {
        return 0.0;
    };
    let f: Vec<&str> = stat[close + 1..].split_whitespace().collect();
    let t = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    (t(11) + t(12)) as f64 / TICKS
}

/// CPU time (user + system, ticks) of this process's live threads, by role.
fn thread_cpu() -> BTreeMap<&'static str, u64> {
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
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let comm = &stat[open + 1..close];
        let f: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        // Thread names are cut to 15 bytes: youops-log-writ(er), youops-log-inde(xer).
        let role = match comm {
            _ if main => "bench main",
            c if c.starts_with("youops-log-w") => "store writer",
            c if c.starts_with("youops-log-i") => "store indexer",
            c if c.starts_with("tokio-runtime") || c.starts_with("tokio-rt") => {
                "tokio (executor + submitters)"
            }
            _ => "other",
        };
        *out.entry(role).or_insert(0) += ticks(11) + ticks(12);
    }
    out
}

fn thread_cpu_since(before: &BTreeMap<&'static str, u64>) -> BTreeMap<&'static str, f64> {
    thread_cpu()
        .into_iter()
        .map(|(k, v)| {
            let b = before.get(k).copied().unwrap_or(0);
            (k, v.saturating_sub(b) as f64 / TICKS)
        })
        .collect()
}

struct ExecRun {
    submitters: usize,
    requests: u64,
    events: u64,
    elapsed: Duration,
    /// Submit → terminal, per request, sorted.
    latencies: Vec<Duration>,
    fs: FsSnap,
    /// The log's `fdatasync`s in the run, µs, sorted.
    sync_us: Vec<u32>,
    cpu_secs: f64,
    threads: BTreeMap<&'static str, f64>,
    baseline: Option<Baseline>,
}

impl ExecRun {
    fn secs(&self) -> f64 {
        self.elapsed.as_secs_f64()
    }
    fn rps(&self) -> f64 {
        self.requests as f64 / self.secs()
    }
    fn eps(&self) -> f64 {
        self.events as f64 / self.secs()
    }
    fn events_per_sync(&self) -> f64 {
        self.events as f64 / self.fs.syncs.max(1) as f64
    }
    fn bytes_per_event(&self) -> f64 {
        self.fs.bytes as f64 / self.events.max(1) as f64
    }
    fn cpu_us_per_request(&self) -> f64 {
        self.cpu_secs * 1e6 / self.requests.max(1) as f64
    }
}

/// `n` submitters, each looping submit → wait until `dur` has passed.
async fn drive(
    exec: &Executor,
    store: &LogStore,
    fs: &FsStats,
    n: usize,
    dur: Duration,
) -> ExecRun {
    let (seq0, _) = store.head().await.expect("head");
    let fs0 = fs.snap();
    let threads0 = thread_cpu();
    let cpu0 = process_cpu();
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
    let cpu_secs = process_cpu() - cpu0;
    let threads = thread_cpu_since(&threads0);
    let (seq1, _) = store.head().await.expect("head");
    let fs1 = fs.snap();
    latencies.sort_unstable();
    ExecRun {
        submitters: n,
        requests: latencies.len() as u64,
        events: seq1 - seq0,
        elapsed,
        latencies,
        fs: FsSnap {
            appends: fs1.appends - fs0.appends,
            bytes: fs1.bytes - fs0.bytes,
            syncs: fs1.syncs - fs0.syncs,
            sync_nanos: fs1.sync_nanos - fs0.sync_nanos,
            sync_samples: fs1.sync_samples - fs0.sync_samples,
            dir_syncs: fs1.dir_syncs - fs0.dir_syncs,
        },
        sync_us: fs.sync_us_since(&fs0),
        cpu_secs,
        threads,
        baseline: None,
    }
}

// --- the raw baseline -------------------------------------------------------------

struct Baseline {
    group: usize,
    record_bytes: usize,
    records: u64,
    elapsed: Duration,
    /// Each `fdatasync`, µs, sorted.
    sync_us: Vec<u32>,
}

impl Baseline {
    fn rps(&self) -> f64 {
        self.records as f64 / self.elapsed.as_secs_f64()
    }
}

/// Append `group` records of `record_bytes` (newline included) with one `write`,
/// then `fdatasync`, until `dur` has passed: a plain file in `dir`, opened for
/// appending as the log opens its segments.
fn raw_baseline(dir: &Path, record_bytes: usize, group: usize, dur: Duration) -> Baseline {
    let path = dir.join("raw-baseline.log");
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create_new(true)
        .open(&path)
        .expect("create the baseline file");
    let mut record: Vec<u8> = (0..record_bytes.saturating_sub(1))
        .map(|i| b'a' + (i % 26) as u8)
        .collect();
    record.push(b'\n');
    let buf = record.repeat(group);
    let mut sync_us = Vec::new();
    let mut records = 0u64;
    let start = Instant::now();
    while start.elapsed() < dur {
        f.write_all(&buf).expect("baseline write");
        let t = Instant::now();
        f.sync_data().expect("baseline fdatasync");
        sync_us.push(u32::try_from(t.elapsed().as_micros()).unwrap_or(u32::MAX));
        records += group as u64;
    }
    let elapsed = start.elapsed();
    drop(f);
    std::fs::remove_file(&path).expect("remove the baseline file");
    sync_us.sort_unstable();
    Baseline {
        group,
        record_bytes,
        records,
        elapsed,
        sync_us,
    }
}

// --- disk use ---------------------------------------------------------------------

/// Bytes of a file: its length, and the blocks allocated to it (`du`; less
/// than the length for a sparse file).
#[derive(Debug, Clone, Copy, Default)]
struct Bytes {
    len: u64,
    allocated: u64,
}

impl Bytes {
    fn of(md: &std::fs::Metadata) -> Bytes {
        use std::os::unix::fs::MetadataExt as _;
        Bytes {
            len: md.len(),
            allocated: md.blocks() * 512,
        }
    }
}

/// The live log segments (`log/*.jsonl`) and `index.redb`.
fn live_bytes(store_dir: &Path) -> (Bytes, Bytes) {
    let mut log = Bytes::default();
    if let Ok(rd) = std::fs::read_dir(store_dir.join("log")) {
        for e in rd.flatten() {
            if e.file_name().to_string_lossy().ends_with(".jsonl") {
                if let Ok(md) = e.metadata() {
                    let b = Bytes::of(&md);
                    log.len += b.len;
                    log.allocated += b.allocated;
                }
            }
        }
    }
    let index = std::fs::metadata(store_dir.join("index.redb"))
        .map(|md| Bytes::of(&md))
        .unwrap_or_default();
    (log, index)
}

// --- the machine ------------------------------------------------------------------

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// The mount (device, type) holding `path`.
fn mount_of(path: &Path) -> String {
    let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") else {
        return "?".into();
    };
    let mut best: Option<(usize, String)> = None;
    for l in mounts.lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() < 3 {
            continue;
        }
        let mp = PathBuf::from(f[1]);
        if path.starts_with(&mp) && best.as_ref().is_none_or(|b| f[1].len() > b.0) {
            best = Some((f[1].len(), format!("{} ({}) on {}", f[0], f[2], f[1])));
        }
    }
    best.map_or("?".into(), |b| b.1)
}

fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        })
        .map_or("?".into(), |kib| format!("{:.0} GiB", kib / 1048576.0));
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "?".into());
    format!("{cores} cores, {mem} RAM, Linux {kernel}")
}

fn main() {
    let set = settings();
    let root = match std::env::var_os("YOUOPS_BENCH_DIR") {
        Some(d) => PathBuf::from(d),
        None => std::env::temp_dir(),
    };
    let dir = tempfile::Builder::new()
        .prefix("youops-bench-")
        .tempdir_in(&root)
        .expect("temp dir");
    let store_path = dir.path().join("store");
    let load_before = loadavg();
    eprintln!(
        "youops-core throughput: {:.1}s per measurement (warm-up {:.1}s), store in {} ({}), load average {load_before}",
        set.secs.as_secs_f64(),
        set.warmup.as_secs_f64(),
        store_path.display(),
        mount_of(dir.path()),
    );

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let fs = Arc::new(FsStats::default());
    let (runs, verify, (live_log, live_index, stored_events)) = rt.block_on(async {
        let cfg = Config::parse(CONFIG, dir.path(), "bench", &|_| None)
            .unwrap_or_else(|e| panic!("bench config: {e}"));
        let store = LogStore::open_with_fs(
            &store_path,
            LogOptions::default(),
            Arc::new(CountingFs { stats: fs.clone() }),
        )
        .expect("open the log store");
        let exec = Executor::builder(&cfg, Arc::new(store.clone()))
            .builtin("noop", |_c| async { Ok(String::new()) })
            .build()
            .await
            .expect("executor");
        let mut runs = Vec::new();
        for &n in &set.submitters {
            eprintln!("executor, {n} submitter(s) ...");
            drive(&exec, &store, &fs, n, set.warmup).await;
            let mut r = drive(&exec, &store, &fs, n, set.secs).await;
            // The indexer catches up before the baseline uses the disk.
            store.flush().await.expect("flush");
            let group = (r.events_per_sync().round() as usize).max(1);
            let record = (r.bytes_per_event().round() as usize).max(2);
            eprintln!(
                "  {:.0} requests/s, {:.1} events per fdatasync; raw baseline: {group} × {record} bytes per fdatasync ...",
                r.rps(),
                r.events_per_sync()
            );
            let b = raw_baseline(&store_path, record, group, set.secs);
            eprintln!("  {:.0} records/s", b.rps());
            r.baseline = Some(b);
            runs.push(r);
        }
        exec.shutdown(Duration::from_secs(10))
            .await
            .expect("shutdown");
        store.flush().await.expect("flush");
        let (stored_events, _) = store.head().await.expect("head");
        let (log, index) = live_bytes(&store_path);
        let size = store.size_on_disk().await.expect("size_on_disk");
        assert_eq!(
            size,
            log.len + index.len,
            "size_on_disk is the log plus the index"
        );
        let t = Instant::now();
        let verify = store.verify().await.expect("verify");
        (runs, (verify, t.elapsed()), (log, index, stored_events))
    });
    let load_after = loadavg();

    let epr = runs
        .iter()
        .map(|r| r.events as f64 / r.requests.max(1) as f64)
        .fold(0.0f64, f64::max);
    println!();
    println!(
        "Machine: {}; store on {}. {:.1} s per measurement after {:.1} s of warm-up; {epr:.2} events per request (received, running, succeeded).",
        machine(),
        mount_of(dir.path()),
        set.secs.as_secs_f64(),
        set.warmup.as_secs_f64()
    );
    println!();
    println!("Throughput (durable requests/s) beside the raw baseline of the same run (records of the run's mean event size, in groups of the run's events per fdatasync, one write + one fdatasync per group, same directory):");
    println!();
    println!("| submitters | requests/s | events/s | target | raw baseline records/s (group × bytes) | events/s ÷ raw | request p50 / p99 ms |");
    println!("|---:|---:|---:|---|---:|---:|---:|");
    for r in &runs {
        let b = r.baseline.as_ref().expect("baseline");
        let target = if r.submitters == 64 {
            format!("≥ {TARGET_RPS_AT_64:.0} req/s")
        } else {
            "—".into()
        };
        println!(
            "| {} | {:.0} | {:.0} | {target} | {:.0} ({} × {}) | {:.2} | {} / {} |",
            r.submitters,
            r.rps(),
            r.eps(),
            b.rps(),
            b.group,
            b.record_bytes,
            r.eps() / b.rps(),
            ms_d(pct(&r.latencies, 50.0)),
            ms_d(pct(&r.latencies, 99.0)),
        );
    }
    println!();
    println!("Group commit and CPU (same runs; fdatasync latencies of the store's log beside the raw baseline's):");
    println!();
    println!("| submitters | fdatasyncs/s | events per fdatasync | writes per fdatasync | bytes per event | store fdatasync p50 / p99 ms | raw fdatasync p50 / p99 ms | CPU µs per request (target ≤ {TARGET_CPU_US:.0}) | CPU use |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in &runs {
        let b = r.baseline.as_ref().expect("baseline");
        println!(
            "| {} | {:.0} | {:.1} | {:.2} | {:.0} | {} / {} | {} / {} | {:.0} | {:.0}% |",
            r.submitters,
            r.fs.syncs as f64 / r.secs(),
            r.events_per_sync(),
            r.fs.appends as f64 / r.fs.syncs.max(1) as f64,
            r.bytes_per_event(),
            ms_us(pct(&r.sync_us, 50.0)),
            ms_us(pct(&r.sync_us, 99.0)),
            ms_us(pct(&b.sync_us, 50.0)),
            ms_us(pct(&b.sync_us, 99.0)),
            r.cpu_us_per_request(),
            100.0 * r.cpu_secs / r.secs(),
        );
    }
    let roles: Vec<&'static str> = runs
        .iter()
        .flat_map(|r| r.threads.keys().copied())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    if !roles.is_empty() {
        println!();
        println!("CPU µs per request by thread (live threads, /proc/self/task):");
        println!();
        print!("| submitters |");
        for n in &roles {
            print!(" {n} |");
        }
        println!();
        print!("|---:|");
        for _ in &roles {
            print!("---:|");
        }
        println!();
        for r in &runs {
            print!("| {} |", r.submitters);
            for n in &roles {
                let c = r.threads.get(n).copied().unwrap_or(0.0);
                print!(" {:.0} |", c * 1e6 / r.requests.max(1) as f64);
            }
            println!();
        }
    }
    let per = |b: u64| b as f64 / stored_events.max(1) as f64;
    let mib = |b: u64| b as f64 / 1048576.0;
    println!();
    println!("Disk use after the runs (flushed; live store = log segments + index.redb, `size_on_disk`), {stored_events} events:");
    println!();
    println!("| | log | index.redb | live store | bytes per event (log + index) | target |");
    println!("|---|---:|---:|---:|---:|---|");
    for (what, l, i) in [
        ("file length", live_log.len, live_index.len),
        ("allocated (du)", live_log.allocated, live_index.allocated),
    ] {
        println!(
            "| {what} | {:.1} MiB | {:.1} MiB | {:.1} MiB | {:.0} ({:.0} + {:.0}) | ≤ {TARGET_BYTES_PER_EVENT:.0} |",
            mib(l),
            mib(i),
            mib(l + i),
            per(l + i),
            per(l),
            per(i),
        );
    }
    let dir_syncs: u64 = runs.iter().map(|r| r.fs.dir_syncs).sum();
    println!();
    println!(
        "Load average (1, 5, 15 min) before the run: {load_before}; after: {load_after}. Directory fsyncs during the measured runs: {dir_syncs}."
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
    if std::env::var_os("YOUOPS_BENCH_KEEP").is_some_and(|v| v == "1") {
        eprintln!("kept {}", dir.keep().display());
    }
}
