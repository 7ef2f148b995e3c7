//! What `youops-load` prints (text, or one JSON object with `--json`, which
//! `scripts/bench-http.sh` reads) and writes (`--samples`).

use std::path::Path;

use serde_json::json;

use super::args::Args;
use super::probe::Baseline;
use super::sender::Record;
use super::summary::{max_ms, Summary};
use crate::lock;
use crate::stats::{fmt_ms, percentile_ms};

/// The `--samples` CSV: every measured request, in schedule order.
pub(crate) fn write_samples(path: &Path, rec: &Record) {
    let mut trace = std::mem::take(&mut *lock(&rec.trace));
    trace.sort_unstable();
    let mut csv = String::from("scheduled_ms,latency_us,status\n");
    for (at, lat, status) in trace {
        csv.push_str(&format!("{:.3},{lat},{status}\n", at as f64 / 1e3));
    }
    if let Err(e) = std::fs::write(path, csv) {
        eprintln!("youops-load: writing {}: {e}", path.display());
    }
}

/// The run's facts that are not statistics.
#[derive(Debug)]
pub(crate) struct Run<'a> {
    pub(crate) args: &'a Args,
    pub(crate) url: &'a str,
    /// Measured requests scheduled.
    pub(crate) meas_n: u64,
    pub(crate) fsync: Option<&'a Baseline>,
}

/// The report as one JSON object.
pub(crate) fn print_json(run: &Run<'_>, s: &Summary) {
    let args = run.args;
    let out = json!({
        "url": run.url,
        "op": args.op,
        "offered_rps": args.rate,
        "duration_s": args.duration.as_secs_f64(),
        "warmup_s": args.warmup.as_secs_f64(),
        "concurrency": args.concurrency,
        "requests": run.meas_n,
        "achieved_rps": s.achieved,
        "ok": s.ok,
        "statuses": s.statuses.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
        "errors": s.errors,
        "first_error": s.first_error,
        "latency_ms": { "p50": s.lat_ms(50.0), "p90": s.lat_ms(90.0), "p99": s.lat_ms(99.0), "p999": s.lat_ms(99.9), "max": max_ms(&s.lat) },
        "service_ms": { "p50": s.svc_ms(50.0), "p99": s.svc_ms(99.0), "max": max_ms(&s.svc) },
        "max_send_lag_ms": s.max_lag.as_secs_f64() * 1e3,
        "peak_in_flight": s.peak_in_flight,
        "send_span_s": s.send_span,
        "daemon_cpu": s.cpu_use.map(|(pct, us)| json!({ "core_pct": pct, "us_per_request": us })),
        "rss_kib": s.rss.map(|r| json!({ "min": r.min_kib, "max": r.max_kib, "last": r.last_kib, "samples": r.samples })),
        "fsync_probe": run.fsync.map(|f| f.json.clone()),
    });
    println!("{out}");
}

/// The report as text.
pub(crate) fn print_text(run: &Run<'_>, s: &Summary) {
    let args = run.args;
    let f = fmt_ms;
    println!("target      {} op={}", run.url, args.op);
    println!(
        "offered     {:.0} req/s for {:?} (+{:?} warm-up), {} requests, concurrency cap {}",
        args.rate, args.duration, args.warmup, run.meas_n, args.concurrency
    );
    println!("achieved    {:.1} req/s (2xx)", s.achieved);
    let st: Vec<String> = s
        .statuses
        .iter()
        .map(|(k, v)| format!("{k}: {v}"))
        .collect();
    println!("statuses    {}  errors: {}", st.join(", "), s.errors);
    if let Some(e) = &s.first_error {
        println!("first error {e}");
    }
    println!(
        "latency     p50 {}  p90 {}  p99 {}  p99.9 {}  max {}",
        f(s.lat_ms(50.0)),
        f(s.lat_ms(90.0)),
        f(s.lat_ms(99.0)),
        f(s.lat_ms(99.9)),
        f(max_ms(&s.lat))
    );
    println!(
        "from send   p50 {}  p99 {}  max {}  (timed from the actual send, not the schedule)",
        f(s.svc_ms(50.0)),
        f(s.svc_ms(99.0)),
        f(max_ms(&s.svc))
    );
    println!(
        "sender      max send lag {:.2} ms, peak in flight {}",
        s.max_lag.as_secs_f64() * 1e3,
        s.peak_in_flight
    );
    if let Some((pct, us)) = s.cpu_use {
        println!("daemon CPU  {pct:.0}% of one core, {us:.0} µs per request");
    }
    if let Some(fsync) = run.fsync {
        let (pooled, b) = (&fsync.pooled, &fsync.before);
        let q = |p: f64| f(percentile_ms(pooled, p));
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
    if let Some(r) = s.rss {
        println!(
            "daemon RSS  min {:.1} MiB  max {:.1} MiB  last {:.1} MiB ({} samples)",
            r.min_kib as f64 / 1024.0,
            r.max_kib as f64 / 1024.0,
            r.last_kib as f64 / 1024.0,
            r.samples
        );
    }
}
