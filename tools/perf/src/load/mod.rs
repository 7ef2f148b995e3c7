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

mod args;
mod closed;
mod probe;
mod report;
mod sampler;
mod sender;
mod summary;

use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;

use probe::{probe, Baseline};
use report::Run;
use sampler::Sampler;
use sender::{Record, Schedule};

pub(crate) use args::Args;
pub(crate) use closed::{closed_loop, Saturation};
pub(crate) use sender::Target;
pub(crate) use summary::Summary;

/// `youops-load`'s `main`: exit 0 when a measured request got a 2xx, 1 when
/// none did, 64 on bad arguments, 70 when the run cannot start.
pub fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(code) => code,
    }
}

/// The run, step by step: whether any measured request got a 2xx.
fn run(args: &Args) -> Result<bool, ExitCode> {
    let body = args.request_body()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("youops-load: starting the runtime: {e}");
            ExitCode::from(70)
        })?;
    let client = crate::http_client(&rt, args.concurrency, args.timeout).map_err(|e| {
        eprintln!("youops-load: building the HTTP client: {e}");
        ExitCode::from(70)
    })?;
    let target = Target {
        url: format!("{}/api/v1/requests", args.url.trim_end_matches('/')),
        auth: format!("Bearer {}", args.token),
        body,
    };
    let probe_before = probe(args, "before")?;

    let rec = Arc::new(Record::default());
    let sched = Schedule::new(args);
    let sampler = Sampler::start(
        args.pid,
        sched.measure_start,
        sched.measure_start + args.duration,
    );
    let sent = sender::send_all(
        &rt,
        &client,
        std::slice::from_ref(&target),
        &sched,
        &rec,
        args,
    );
    let (rss, cpu) = sampler.stop();
    let probe_after = probe(args, "after")?;
    let fsync = Baseline::new(args, probe_before, probe_after);

    if let Some(path) = &args.samples {
        report::write_samples(path, &rec);
    }
    let summary = Summary::new(args, &rec, sched.start(), &sent, rss, cpu);
    let run = Run {
        args,
        url: &target.url,
        meas_n: sched.meas_n,
        fsync: fsync.as_ref(),
    };
    if args.json {
        report::print_json(&run, &summary);
    } else {
        report::print_text(&run, &summary);
    }
    Ok(summary.ok != 0)
}

/// One open-loop load of `args` (rate, warm-up, duration, concurrency) spread
/// round robin over `targets`, as `youops-load` runs it, without its probes
/// and samplers (`youops-cluster-bench`).
pub(crate) fn open_loop(
    rt: &tokio::runtime::Runtime,
    client: &reqwest::Client,
    targets: &[Target],
    args: &Args,
) -> Summary {
    let rec = Arc::new(Record::default());
    let sched = Schedule::new(args);
    let sent = sender::send_all(rt, client, targets, &sched, &rec, args);
    Summary::new(args, &rec, sched.start(), &sent, None, (None, None))
}
