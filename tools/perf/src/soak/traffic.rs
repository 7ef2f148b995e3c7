//! The HTTP doors' traffic: one open-loop schedule (request *i* at
//! `start + i / rate`, doors in turn, latency counted from the scheduled time).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use super::args::Args;
use super::ctx::Ctx;
use super::doors::{send, Door, Recs};
use super::sampling::Sampler;

/// The doors of `--doors`, in their fixed order.
fn http_doors(args: &Args) -> Result<Vec<Door>, String> {
    let doors: Vec<Door> = Door::HTTP
        .into_iter()
        .filter(|d| args.doors.iter().any(|n| n == d.name()))
        .collect();
    if doors.is_empty() || doors.len() != args.doors.len() {
        return Err(format!(
            "--doors: {:?} must be a non-empty list of api, slack, github",
            args.doors
        ));
    }
    Ok(doors)
}

/// Send the whole load from `start`, with at most `--concurrency` in flight,
/// and wait for every answer; the longest delay of a send behind schedule.
/// Stops when the daemon is gone.
pub(crate) fn pace(
    rt: &tokio::runtime::Runtime,
    client: &reqwest::Client,
    ctx: &Ctx,
    recs: &Arc<Recs>,
    sampler: &Sampler,
    start: Instant,
) -> Result<Duration, String> {
    let args = &ctx.args;
    let doors = http_doors(args)?;
    let sem = Arc::new(Semaphore::new(args.concurrency.max(1)));
    let total = (args.duration.as_secs_f64() * args.rate).round() as u64;
    let rate = args.rate;
    let handle = rt.handle().clone();
    let mut tasks = Vec::with_capacity(total as usize);
    let mut max_lag = Duration::ZERO;
    eprintln!(
        "youops-soak: {} req/s over {} for {:?}, a git commit every {:?}",
        rate,
        args.doors.join(", "),
        args.duration,
        args.git_every
    );
    for i in 0..total {
        sampler.check_daemon("load")?;
        let scheduled = start + Duration::from_secs_f64(i as f64 / rate);
        let now = Instant::now();
        if scheduled > now {
            std::thread::sleep(scheduled - now);
        }
        let permit = match handle.block_on(sem.clone().acquire_owned()) {
            Ok(p) => p,
            Err(_) => break,
        };
        max_lag = max_lag.max(Instant::now().saturating_duration_since(scheduled));
        let door = doors[(i % doors.len() as u64) as usize];
        let j = i / doors.len() as u64;
        let rb = ctx.request(client, door, j);
        let recs = recs.clone();
        recs[&door].sent.fetch_add(1, Ordering::Relaxed);
        tasks.push(handle.spawn(async move {
            let _permit = permit;
            let res = send(rb).await;
            recs[&door].record(start, scheduled, res);
        }));
        if i > 0 && i % (rate.round() as u64 * 30).max(1) == 0 {
            let (rss, st) = sampler.latest_mib();
            eprintln!(
                "youops-soak: t={:.0}s sent {i}, daemon RSS {rss:.1} MiB, store {st:.1} MiB",
                scheduled.saturating_duration_since(start).as_secs_f64()
            );
        }
    }
    rt.block_on(async {
        for t in tasks {
            let _ = t.await;
        }
    });
    Ok(max_lag)
}
