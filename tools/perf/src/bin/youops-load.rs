//! `youops-load`: an open-loop load generator for `POST /api/v1/requests`.
//!
//! Requests are sent on a fixed schedule (request *i* at `start + i / rate`)
//! whatever the responses do, and each latency is measured from the request's
//! *scheduled* send time, not from when it actually left, so a stalled server
//! cannot hide its stall by slowing the sender down (no coordinated omission).
//! A pacer thread keeps the schedule with sub-millisecond precision; one
//! keep-alive `reqwest::Client` (HTTP/1.1 connection pool) sends, with at most
//! `--concurrency` requests in flight (a request that has to wait for a slot
//! still counts its wait in its latency).
//!
//! With `--pid`, the resident memory (VmRSS) of that process is sampled every
//! 250 ms during the measured phase.
//!
//! With `--fsync-probe DIR` (the store's directory, or one beside it on the same
//! disk), the disk's own `fdatasync` is measured right before the warm-up and
//! right after the last response, for `--probe-duration` each (one `write` of
//! `--probe-group` records of `--probe-record-bytes`, then one `fdatasync`, as
//! the log store's group commit does): the same-run baseline of the latencies.
//!
//! ```text
//! youops-load --url http://127.0.0.1:8080 --token T --op bench.noop \
//!     --rate 1000 --duration 10s --warmup 2s --pid $(pidof youops) \
//!     [--fsync-probe DIR] [--json]
//! ```

// The daemon's allocator (see `main.rs`), so the driver costs what it would there.
#[cfg(all(feature = "jemalloc", not(target_env = "msvc")))]
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

mod fsyncprobe;
mod procfs;

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::json;
use tokio::sync::Semaphore;

#[derive(Debug, Parser)]
#[command(
    name = "youops-load",
    about = "Open-loop load generator for POST /api/v1/requests"
)]
struct Args {
    /// Daemon base URL (the path /api/v1/requests is appended).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// API bearer token.
    #[arg(long, env = "YOUOPS_TOKEN", hide_env_values = true)]
    token: String,
    /// Op to submit.
    #[arg(long, default_value = "noop")]
    op: String,
    /// Op arguments as a JSON object.
    #[arg(long, default_value = "{}")]
    args: String,
    /// Offered load, requests per second.
    #[arg(long, default_value_t = 1000.0)]
    rate: f64,
    /// Length of the measured phase (e.g. 10s, 500ms).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Length of the warm-up phase before it, at the same rate, not measured.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    warmup: Duration,
    /// Most requests in flight at once.
    #[arg(long, default_value_t = 256)]
    concurrency: usize,
    /// Per-request timeout.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    timeout: Duration,
    /// Tokio worker threads of the generator.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Pid of the daemon, to sample its resident memory (Linux /proc).
    #[arg(long)]
    pid: Option<u32>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// Also write every measured request to this CSV file: scheduled send time
    /// (ms after the measured start), latency (µs), HTTP status (0: no answer).
    #[arg(long, value_name = "FILE")]
    samples: Option<std::path::PathBuf>,
    /// Measure the disk's `fdatasync` in this directory right before and right
    /// after the load (a temporary file, removed after).
    #[arg(long, value_name = "DIR")]
    fsync_probe: Option<std::path::PathBuf>,
    /// How long each `fdatasync` probe runs.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    probe_duration: Duration,
    /// Bytes per probe record, newline included (an audit event line is ~420).
    #[arg(long, default_value_t = 420)]
    probe_record_bytes: usize,
    /// Probe records per write + `fdatasync`.
    #[arg(long, default_value_t = 1)]
    probe_group: usize,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .map(|i| s.split_at(i))
        .unwrap_or((s, "s"));
    let n: f64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration (e.g. 10s, 500ms)"))?;
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

/// What the senders record, shared.
#[derive(Default)]
struct Record {
    /// Latencies (µs, from the scheduled send time) of measured requests that got
    /// an HTTP response, whatever its status.
    latencies: Mutex<Vec<u32>>,
    /// The same requests timed from when they actually started (µs): the server's
    /// share, without the sender's own delays.
    service: Mutex<Vec<u32>>,
    /// (scheduled µs after the measured start, latency µs, status) for `--samples`.
    trace: Mutex<Vec<(u64, u32, u16)>>,
    /// Status code → count (measured requests).
    statuses: Mutex<BTreeMap<u16, u64>>,
    /// Measured requests that got no response (connect error, timeout...).
    errors: AtomicU64,
    first_error: Mutex<Option<String>>,
    /// Completion time of the last measured request, in µs after the measured start.
    last_done_us: AtomicU64,
    in_flight: AtomicUsize,
    peak_in_flight: AtomicUsize,
}

#[derive(Debug, Default, Clone, Copy)]
struct Rss {
    min_kib: u64,
    max_kib: u64,
    last_kib: u64,
    samples: u64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if !(args.rate > 0.0 && args.rate.is_finite()) {
        eprintln!("youops-load: --rate must be a positive number");
        return ExitCode::from(64);
    }
    let op_args: serde_json::Value = match serde_json::from_str(&args.args) {
        Ok(v @ serde_json::Value::Object(_)) => v,
        _ => {
            eprintln!("youops-load: --args must be a JSON object");
            return ExitCode::from(64);
        }
    };
    let body = match serde_json::to_vec(&json!({ "op": args.op, "args": op_args })) {
        Ok(b) => axum::body::Bytes::from(b),
        Err(e) => {
            eprintln!("youops-load: {e}");
            return ExitCode::from(64);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("youops-load: starting the runtime: {e}");
            return ExitCode::from(70);
        }
    };
    let client = match rt.block_on(async {
        reqwest::Client::builder()
            .pool_max_idle_per_host(args.concurrency)
            .pool_idle_timeout(Duration::from_secs(90))
            .tcp_nodelay(true)
            .timeout(args.timeout)
            .build()
    }) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("youops-load: building the HTTP client: {e}");
            return ExitCode::from(70);
        }
    };
    let url = format!("{}/api/v1/requests", args.url.trim_end_matches('/'));
    let auth = format!("Bearer {}", args.token);
    let probe = |when: &str| -> Result<Option<fsyncprobe::Probe>, ExitCode> {
        let Some(dir) = &args.fsync_probe else {
            return Ok(None);
        };
        match fsyncprobe::run(
            dir,
            args.probe_record_bytes.max(2),
            args.probe_group.max(1),
            args.probe_duration,
        ) {
            Ok(p) => Ok(Some(p)),
            Err(e) => {
                eprintln!(
                    "youops-load: fdatasync probe {when} the load in {}: {e}",
                    dir.display()
                );
                Err(ExitCode::from(70))
            }
        }
    };
    let probe_before = match probe("before") {
        Ok(p) => p,
        Err(c) => return c,
    };

    let rec = Arc::new(Record::default());
    let sem = Arc::new(Semaphore::new(args.concurrency.max(1)));
    let warm_n = (args.warmup.as_secs_f64() * args.rate).round() as u64;
    let meas_n = (args.duration.as_secs_f64() * args.rate).round() as u64;
    let total = warm_n + meas_n;

    // Start a little in the future so the schedule does not begin behind.
    let start = Instant::now() + Duration::from_millis(20);
    let rate = args.rate;
    let due = move |i: u64| start + Duration::from_secs_f64(i as f64 / rate);
    let measure_start = due(warm_n);

    // RSS sampler: every 250 ms during the measured phase.
    let rss = Arc::new(Mutex::new(None::<Rss>));
    // Daemon CPU ticks at the start and the end of the measured phase.
    let cpu = Arc::new(Mutex::new((None::<(Instant, u64)>, None::<(Instant, u64)>)));
    let sampling = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = args.pid.map(|pid| {
        let rss = rss.clone();
        let cpu = cpu.clone();
        let sampling = sampling.clone();
        let measure_end = measure_start + args.duration;
        std::thread::spawn(move || {
            let now = Instant::now();
            if measure_start > now {
                std::thread::sleep(measure_start - now);
            }
            let tick = |slot: &mut Option<(Instant, u64)>| {
                if let Some(t) = procfs::read_cpu_ticks(pid) {
                    *slot = Some((Instant::now(), t));
                }
            };
            tick(&mut cpu.lock().unwrap_or_else(|p| p.into_inner()).0);
            while sampling.load(Ordering::Relaxed) {
                if Instant::now() <= measure_end {
                    tick(&mut cpu.lock().unwrap_or_else(|p| p.into_inner()).1);
                }
                if let Some(kib) = procfs::read_rss_kib(pid) {
                    let mut g = rss.lock().unwrap_or_else(|p| p.into_inner());
                    let r = g.get_or_insert(Rss {
                        min_kib: kib,
                        max_kib: kib,
                        last_kib: kib,
                        samples: 0,
                    });
                    r.min_kib = r.min_kib.min(kib);
                    r.max_kib = r.max_kib.max(kib);
                    r.last_kib = kib;
                    r.samples += 1;
                }
                std::thread::sleep(Duration::from_millis(250));
            }
        })
    });

    // Pacer: a plain thread (finer than tokio's 1 ms timer wheel) that spawns each
    // request onto the runtime at its scheduled time.
    let handle = rt.handle().clone();
    let want_trace = args.samples.is_some();
    let mut max_lag = Duration::ZERO;
    let mut tasks = Vec::with_capacity(total as usize);
    for i in 0..total {
        let scheduled = due(i);
        let now = Instant::now();
        if scheduled > now {
            std::thread::sleep(scheduled - now);
        }
        // Waiting for a slot delays this send, and the delay counts in its latency.
        let permit = match handle.block_on(sem.clone().acquire_owned()) {
            Ok(p) => p,
            Err(_) => break,
        };
        max_lag = max_lag.max(Instant::now().saturating_duration_since(scheduled));
        let measured = i >= warm_n;
        let client = client.clone();
        let url = url.clone();
        let auth = auth.clone();
        let body = body.clone();
        let rec = rec.clone();
        tasks.push(handle.spawn(async move {
            let _permit = permit;
            let began = Instant::now();
            let n = rec.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
            rec.peak_in_flight.fetch_max(n, Ordering::Relaxed);
            let res = client
                .post(&url)
                .header(reqwest::header::AUTHORIZATION, &auth)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body)
                .send()
                .await;
            // The response is complete once its body is read.
            let res = match res {
                Ok(r) => {
                    let status = r.status().as_u16();
                    r.bytes().await.map(|_| status)
                }
                Err(e) => Err(e),
            };
            let done = Instant::now();
            rec.in_flight.fetch_sub(1, Ordering::Relaxed);
            if !measured {
                return;
            }
            let lat = done.saturating_duration_since(scheduled).as_micros();
            if want_trace {
                let at = scheduled
                    .saturating_duration_since(measure_start)
                    .as_micros();
                let status = res.as_ref().map_or(0, |s| *s);
                rec.trace.lock().unwrap_or_else(|p| p.into_inner()).push((
                    u64::try_from(at).unwrap_or(u64::MAX),
                    u32::try_from(lat).unwrap_or(u32::MAX),
                    status,
                ));
            }
            let since = done.saturating_duration_since(measure_start).as_micros();
            rec.last_done_us
                .fetch_max(u64::try_from(since).unwrap_or(u64::MAX), Ordering::Relaxed);
            match res {
                Ok(status) => {
                    rec.latencies
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(u32::try_from(lat).unwrap_or(u32::MAX));
                    let svc = done.saturating_duration_since(began).as_micros();
                    rec.service
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(u32::try_from(svc).unwrap_or(u32::MAX));
                    *rec.statuses
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .entry(status)
                        .or_default() += 1;
                }
                Err(e) => {
                    rec.errors.fetch_add(1, Ordering::Relaxed);
                    let mut first = rec.first_error.lock().unwrap_or_else(|p| p.into_inner());
                    if first.is_none() {
                        *first = Some(format!("{e:#}"));
                    }
                }
            }
        }));
    }
    let sent_all = Instant::now();
    rt.block_on(async {
        for t in tasks {
            let _ = t.await;
        }
    });
    sampling.store(false, Ordering::Relaxed);
    if let Some(s) = sampler {
        let _ = s.join();
    }
    let probe_after = match probe("after") {
        Ok(p) => p,
        Err(c) => return c,
    };
    let fsync = match (&probe_before, &probe_after) {
        (Some(b), Some(a)) => {
            let mut pooled = [b.sync_us.as_slice(), a.sync_us.as_slice()].concat();
            pooled.sort_unstable();
            Some((
                json!({
                    "dir": args.fsync_probe.as_ref().map(|d| d.display().to_string()),
                    "before": b.json(),
                    "after": a.json(),
                    "pooled_ms": fsyncprobe::summary(&pooled),
                }),
                pooled,
            ))
        }
        _ => None,
    };

    if let Some(path) = &args.samples {
        let mut trace = std::mem::take(&mut *rec.trace.lock().unwrap_or_else(|p| p.into_inner()));
        trace.sort_unstable();
        let mut csv = String::from("scheduled_ms,latency_us,status\n");
        for (at, lat, status) in trace {
            csv.push_str(&format!("{:.3},{lat},{status}\n", at as f64 / 1e3));
        }
        if let Err(e) = std::fs::write(path, csv) {
            eprintln!("youops-load: writing {}: {e}", path.display());
        }
    }
    let mut lat = std::mem::take(&mut *rec.latencies.lock().unwrap_or_else(|p| p.into_inner()));
    lat.sort_unstable();
    let mut svc = std::mem::take(&mut *rec.service.lock().unwrap_or_else(|p| p.into_inner()));
    svc.sort_unstable();
    let statuses = rec
        .statuses
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let errors = rec.errors.load(Ordering::Relaxed);
    let ok: u64 = statuses
        .iter()
        .filter(|(s, _)| (200..300).contains(*s))
        .map(|(_, n)| n)
        .sum();
    // Achieved: successful measured responses over the measured window (which
    // stretches past --duration when the server falls behind).
    let window = (rec.last_done_us.load(Ordering::Relaxed) as f64 / 1e6)
        .max(args.duration.as_secs_f64())
        .max(1e-9);
    let achieved = ok as f64 / window;
    let send_span = sent_all.saturating_duration_since(start).as_secs_f64();
    let ms = |v: Option<u32>| v.map(|us| us as f64 / 1000.0);
    let (p50, p90, p99, p999, max) = (
        ms(procfs::percentile(&lat, 50.0)),
        ms(procfs::percentile(&lat, 90.0)),
        ms(procfs::percentile(&lat, 99.0)),
        ms(procfs::percentile(&lat, 99.9)),
        ms(lat.last().copied()),
    );
    let rss = *rss.lock().unwrap_or_else(|p| p.into_inner());
    // Daemon CPU use over the measured phase: share of one core, and per request.
    let cpu_use = match *cpu.lock().unwrap_or_else(|p| p.into_inner()) {
        (Some((t0, c0)), Some((t1, c1))) if t1 > t0 => {
            let secs = (c1.saturating_sub(c0)) as f64 / procfs::USER_HZ;
            let wall = t1.duration_since(t0).as_secs_f64();
            // Every answered request costs the daemon CPU, not only the 2xx ones.
            let answered: u64 = statuses.values().sum();
            let done = (answered as f64 * wall / window).max(1.0);
            Some((secs / wall * 100.0, secs / done * 1e6))
        }
        _ => None,
    };
    let first_error = rec
        .first_error
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();

    if args.json {
        let out = json!({
            "url": url,
            "op": args.op,
            "offered_rps": args.rate,
            "duration_s": args.duration.as_secs_f64(),
            "warmup_s": args.warmup.as_secs_f64(),
            "concurrency": args.concurrency,
            "requests": meas_n,
            "achieved_rps": achieved,
            "ok": ok,
            "statuses": statuses.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
            "errors": errors,
            "first_error": first_error,
            "latency_ms": { "p50": p50, "p90": p90, "p99": p99, "p999": p999, "max": max },
            "service_ms": { "p50": ms(procfs::percentile(&svc, 50.0)), "p99": ms(procfs::percentile(&svc, 99.0)), "max": ms(svc.last().copied()) },
            "max_send_lag_ms": max_lag.as_secs_f64() * 1e3,
            "peak_in_flight": rec.peak_in_flight.load(Ordering::Relaxed),
            "send_span_s": send_span,
            "daemon_cpu": cpu_use.map(|(pct, us)| json!({ "core_pct": pct, "us_per_request": us })),
            "rss_kib": rss.map(|r| json!({ "min": r.min_kib, "max": r.max_kib, "last": r.last_kib, "samples": r.samples })),
            "fsync_probe": fsync.as_ref().map(|f| f.0.clone()),
        });
        println!("{out}");
    } else {
        let f = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.2} ms"));
        println!("target      {url} op={}", args.op);
        println!(
            "offered     {:.0} req/s for {:?} (+{:?} warm-up), {} requests, concurrency cap {}",
            args.rate, args.duration, args.warmup, meas_n, args.concurrency
        );
        println!("achieved    {achieved:.1} req/s (2xx)");
        let st: Vec<String> = statuses.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        println!("statuses    {}  errors: {errors}", st.join(", "));
        if let Some(e) = &first_error {
            println!("first error {e}");
        }
        println!(
            "latency     p50 {}  p90 {}  p99 {}  p99.9 {}  max {}",
            f(p50),
            f(p90),
            f(p99),
            f(p999),
            f(max)
        );
        println!(
            "from send   p50 {}  p99 {}  max {}  (timed from the actual send, not the schedule)",
            f(ms(procfs::percentile(&svc, 50.0))),
            f(ms(procfs::percentile(&svc, 99.0))),
            f(ms(svc.last().copied()))
        );
        println!(
            "sender      max send lag {:.2} ms, peak in flight {}",
            max_lag.as_secs_f64() * 1e3,
            rec.peak_in_flight.load(Ordering::Relaxed)
        );
        if let Some((pct, us)) = cpu_use {
            println!("daemon CPU  {pct:.0}% of one core, {us:.0} µs per request");
        }
        if let (Some((_, pooled)), Some(b)) = (&fsync, &probe_before) {
            let q = |p: f64| f(fsyncprobe::percentile_ms(pooled, p));
            println!(
                "fdatasync   p50 {}  p99 {}  max {}  (the disk, {} × {} bytes per sync, {:?} before + after the load, {} syncs)",
                q(50.0),
                q(99.0),
                f(pooled.last().map(|us| f64::from(*us) / 1000.0)),
                b.group,
                b.record_bytes,
                args.probe_duration,
                pooled.len()
            );
        }
        if let Some(r) = rss {
            println!(
                "daemon RSS  min {:.1} MiB  max {:.1} MiB  last {:.1} MiB ({} samples)",
                r.min_kib as f64 / 1024.0,
                r.max_kib as f64 / 1024.0,
                r.last_kib as f64 / 1024.0,
                r.samples
            );
        }
    }
    if ok == 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
