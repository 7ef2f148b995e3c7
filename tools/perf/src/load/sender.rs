//! The open-loop sender: a pacer thread that starts request *i* at
//! `start + i / rate`, and what the requests record.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use super::args::Args;
use crate::lock;

/// What the senders record, shared.
#[derive(Debug, Default)]
pub(crate) struct Record {
    /// Latencies (µs, from the scheduled send time) of measured requests that got
    /// an HTTP response, whatever its status.
    pub(crate) latencies: Mutex<Vec<u32>>,
    /// The same requests timed from when they actually started (µs): the server's
    /// share, without the sender's own delays.
    pub(crate) service: Mutex<Vec<u32>>,
    /// (scheduled µs after the measured start, latency µs, status) for `--samples`.
    pub(crate) trace: Mutex<Vec<(u64, u32, u16)>>,
    /// Status code → count (measured requests).
    pub(crate) statuses: Mutex<BTreeMap<u16, u64>>,
    /// Measured requests that got no response (connect error, timeout...).
    pub(crate) errors: AtomicU64,
    pub(crate) first_error: Mutex<Option<String>>,
    /// Completion time of the last measured request, in µs after the measured start.
    pub(crate) last_done_us: AtomicU64,
    in_flight: AtomicUsize,
    pub(crate) peak_in_flight: AtomicUsize,
}

/// When each request is due.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Schedule {
    start: Instant,
    rate: f64,
    /// Warm-up requests (not measured), then measured ones.
    pub(crate) warm_n: u64,
    pub(crate) meas_n: u64,
    /// The due time of the first measured request.
    pub(crate) measure_start: Instant,
}

impl Schedule {
    pub(crate) fn new(args: &Args) -> Self {
        let warm_n = (args.warmup.as_secs_f64() * args.rate).round() as u64;
        let meas_n = (args.duration.as_secs_f64() * args.rate).round() as u64;
        // Start a little in the future so the schedule does not begin behind.
        let start = Instant::now() + Duration::from_millis(20);
        let mut s = Schedule {
            start,
            rate: args.rate,
            warm_n,
            meas_n,
            measure_start: start,
        };
        s.measure_start = s.due(warm_n);
        s
    }

    pub(crate) fn start(&self) -> Instant {
        self.start
    }

    /// The scheduled send time of request `i`.
    fn due(&self, i: u64) -> Instant {
        self.start + Duration::from_secs_f64(i as f64 / self.rate)
    }
}

/// The request every send repeats.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub(crate) url: String,
    pub(crate) auth: String,
    pub(crate) body: axum::body::Bytes,
}

/// What the pacer saw.
#[derive(Debug)]
pub(crate) struct Sent {
    /// Longest delay of a send behind its schedule.
    pub(crate) max_lag: Duration,
    /// When the last request was started.
    pub(crate) sent_all: Instant,
}

/// Send every request of `sched` with at most `--concurrency` in flight, and
/// wait for them all. Request *i* goes to `targets[i % targets.len()]` (round
/// robin over the daemons of a cluster; `youops-load` has one).
pub(crate) fn send_all(
    rt: &tokio::runtime::Runtime,
    client: &reqwest::Client,
    targets: &[Target],
    sched: &Schedule,
    rec: &Arc<Record>,
    args: &Args,
) -> Sent {
    let sem = Arc::new(Semaphore::new(args.concurrency.max(1)));
    let total = sched.warm_n + sched.meas_n;
    // Pacer: a plain thread (finer than tokio's 1 ms timer wheel) that spawns each
    // request onto the runtime at its scheduled time.
    let handle = rt.handle().clone();
    let want_trace = args.samples.is_some();
    let mut max_lag = Duration::ZERO;
    let mut tasks = Vec::with_capacity(total as usize);
    for i in 0..total {
        let scheduled = sched.due(i);
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
        let one = One {
            scheduled,
            measure_start: sched.measure_start,
            measured: i >= sched.warm_n,
            want_trace,
        };
        let client = client.clone();
        let target = targets[i as usize % targets.len()].clone();
        let rec = rec.clone();
        tasks.push(handle.spawn(async move {
            let _permit = permit;
            one.send(client, target, &rec).await;
        }));
    }
    let sent_all = Instant::now();
    rt.block_on(async {
        for t in tasks {
            let _ = t.await;
        }
    });
    Sent { max_lag, sent_all }
}

/// One request of the schedule.
#[derive(Debug, Clone, Copy)]
pub(crate) struct One {
    scheduled: Instant,
    measure_start: Instant,
    /// After the warm-up.
    measured: bool,
    /// Keep its (time, latency, status) for `--samples`.
    want_trace: bool,
}

impl One {
    /// A closed-loop request starting now (it has no schedule, so its latency
    /// counts from now), measured from `measure_start` on; `None` from
    /// `measure_end` on, when the load is over.
    pub(crate) fn unscheduled(measure_start: Instant, measure_end: Instant) -> Option<One> {
        let now = Instant::now();
        (now < measure_end).then_some(One {
            scheduled: now,
            measure_start,
            measured: now >= measure_start,
            want_trace: false,
        })
    }

    /// Send it and record its latency (from the schedule) and answer.
    pub(crate) async fn send(self, client: reqwest::Client, target: Target, rec: &Record) {
        let began = Instant::now();
        let n = rec.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        rec.peak_in_flight.fetch_max(n, Ordering::Relaxed);
        let res = client
            .post(&target.url)
            .header(reqwest::header::AUTHORIZATION, &target.auth)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(target.body)
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
        if self.measured {
            self.record(rec, began, done, res);
        }
    }

    fn record(
        &self,
        rec: &Record,
        began: Instant,
        done: Instant,
        res: Result<u16, reqwest::Error>,
    ) {
        let lat = done.saturating_duration_since(self.scheduled).as_micros();
        if self.want_trace {
            let at = self
                .scheduled
                .saturating_duration_since(self.measure_start)
                .as_micros();
            let status = res.as_ref().map_or(0, |s| *s);
            lock(&rec.trace).push((
                u64::try_from(at).unwrap_or(u64::MAX),
                u32::try_from(lat).unwrap_or(u32::MAX),
                status,
            ));
        }
        let since = done
            .saturating_duration_since(self.measure_start)
            .as_micros();
        rec.last_done_us
            .fetch_max(u64::try_from(since).unwrap_or(u64::MAX), Ordering::Relaxed);
        match res {
            Ok(status) => {
                lock(&rec.latencies).push(u32::try_from(lat).unwrap_or(u32::MAX));
                let svc = done.saturating_duration_since(began).as_micros();
                lock(&rec.service).push(u32::try_from(svc).unwrap_or(u32::MAX));
                *lock(&rec.statuses).entry(status).or_default() += 1;
            }
            Err(e) => {
                rec.errors.fetch_add(1, Ordering::Relaxed);
                let mut first = lock(&rec.first_error);
                if first.is_none() {
                    *first = Some(format!("{e:#}"));
                }
            }
        }
    }
}
