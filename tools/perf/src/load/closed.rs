//! The closed-loop driver: `clients` tasks, each sending its next request as
//! soon as its last one is answered, round robin over the targets. What it
//! measures is the saturation throughput (every client always waiting on the
//! server), not a latency at a given load: that is the open loop's job.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::sender::{One, Record, Target};
use crate::lock;

/// What a closed-loop load gave, over its measured window.
#[derive(Debug)]
pub(crate) struct Saturation {
    /// 2xx answers per second: the requests started in the window, over the
    /// span from its start to the last answer of those.
    pub(crate) rps: f64,
    /// Status code → count.
    pub(crate) statuses: BTreeMap<u16, u64>,
    /// Requests that got no answer.
    pub(crate) errors: u64,
    /// Latencies (µs, sorted) of the answered requests.
    pub(crate) lat: Vec<u32>,
    pub(crate) first_error: Option<String>,
}

impl Saturation {
    /// 2xx answers.
    pub(crate) fn ok(&self) -> u64 {
        let ok = |(s, _): &(&u16, &u64)| (200..300).contains(*s);
        self.statuses.iter().filter(ok).map(|(_, n)| n).sum()
    }

    /// Answers other than 2xx, and requests without an answer.
    pub(crate) fn refused(&self) -> u64 {
        self.statuses.values().sum::<u64>() - self.ok() + self.errors
    }
}

/// `clients` closed loops over `targets` for `warmup` (not measured), then
/// `duration` (measured); waits for every answer.
pub(crate) fn closed_loop(
    rt: &tokio::runtime::Runtime,
    client: &reqwest::Client,
    targets: &[Target],
    clients: usize,
    warmup: Duration,
    duration: Duration,
) -> Saturation {
    let rec = Arc::new(Record::default());
    let next = Arc::new(AtomicUsize::new(0));
    let targets: Arc<[Target]> = targets.into();
    let measure_start = Instant::now() + warmup;
    let end = measure_start + duration;
    rt.block_on(async {
        let tasks: Vec<_> = (0..clients.max(1))
            .map(|_| {
                let (client, targets) = (client.clone(), targets.clone());
                let (rec, next) = (rec.clone(), next.clone());
                tokio::spawn(async move {
                    while let Some(one) = One::unscheduled(measure_start, end) {
                        let i = next.fetch_add(1, Ordering::Relaxed) % targets.len();
                        one.send(client.clone(), targets[i].clone(), &rec).await;
                    }
                })
            })
            .collect();
        for t in tasks {
            let _ = t.await;
        }
    });
    let mut lat = std::mem::take(&mut *lock(&rec.latencies));
    lat.sort_unstable();
    let statuses = lock(&rec.statuses).clone();
    let window = (rec.last_done_us.load(Ordering::Relaxed) as f64 / 1e6)
        .max(duration.as_secs_f64())
        .max(1e-9);
    let mut s = Saturation {
        rps: 0.0,
        statuses,
        errors: rec.errors.load(Ordering::Relaxed),
        lat,
        first_error: lock(&rec.first_error).clone(),
    };
    s.rps = s.ok() as f64 / window;
    s
}
