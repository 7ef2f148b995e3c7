//! The statistics of a run: latencies, statuses, achieved rate, daemon CPU.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::args::Args;
use super::sampler::{CpuTicks, Rss};
use super::sender::{Record, Sent};
use crate::{lock, procfs, stats};

/// What the report shows of a run.
#[derive(Debug)]
pub(crate) struct Summary {
    /// Measured latencies from the schedule, µs, sorted.
    pub(crate) lat: Vec<u32>,
    /// The same from the actual send, µs, sorted.
    pub(crate) svc: Vec<u32>,
    pub(crate) statuses: BTreeMap<u16, u64>,
    pub(crate) errors: u64,
    /// 2xx answers.
    pub(crate) ok: u64,
    pub(crate) achieved: f64,
    pub(crate) send_span: f64,
    pub(crate) max_lag: Duration,
    pub(crate) peak_in_flight: usize,
    pub(crate) rss: Option<Rss>,
    /// (% of one core, µs per answered request) over the measured phase.
    pub(crate) cpu_use: Option<(f64, f64)>,
    pub(crate) first_error: Option<String>,
}

impl Summary {
    pub(crate) fn new(
        args: &Args,
        rec: &Record,
        start: Instant,
        sent: &Sent,
        rss: Option<Rss>,
        cpu: CpuTicks,
    ) -> Self {
        let mut lat = std::mem::take(&mut *lock(&rec.latencies));
        lat.sort_unstable();
        let mut svc = std::mem::take(&mut *lock(&rec.service));
        svc.sort_unstable();
        let statuses = lock(&rec.statuses).clone();
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
        let send_span = sent.sent_all.saturating_duration_since(start).as_secs_f64();
        let cpu_use = cpu_use(cpu, &statuses, window);
        Summary {
            lat,
            svc,
            statuses,
            errors,
            ok,
            achieved,
            send_span,
            max_lag: sent.max_lag,
            peak_in_flight: rec.peak_in_flight.load(Ordering::Relaxed),
            rss,
            cpu_use,
            first_error: lock(&rec.first_error).clone(),
        }
    }

    /// Percentile `p` of the latencies from the schedule, ms.
    pub(crate) fn lat_ms(&self, p: f64) -> Option<f64> {
        stats::percentile_ms(&self.lat, p)
    }

    /// Percentile `p` of the latencies from the actual send, ms.
    pub(crate) fn svc_ms(&self, p: f64) -> Option<f64> {
        stats::percentile_ms(&self.svc, p)
    }
}

/// Longest of sorted µs samples, ms.
pub(crate) fn max_ms(sorted: &[u32]) -> Option<f64> {
    sorted.last().map(|us| *us as f64 / 1000.0)
}

/// Daemon CPU use over the measured phase: share of one core, and per request.
fn cpu_use(cpu: CpuTicks, statuses: &BTreeMap<u16, u64>, window: f64) -> Option<(f64, f64)> {
    match cpu {
        (Some((t0, c0)), Some((t1, c1))) if t1 > t0 => {
            let secs = (c1.saturating_sub(c0)) as f64 / procfs::USER_HZ;
            let wall = t1.duration_since(t0).as_secs_f64();
            // Every answered request costs the daemon CPU, not only the 2xx ones.
            let answered: u64 = statuses.values().sum();
            let done = (answered as f64 * wall / window).max(1.0);
            Some((secs / wall * 100.0, secs / done * 1e6))
        }
        _ => None,
    }
}
