//! With `--pid`: the daemon's resident memory every 250 ms of the measured
//! phase, and its CPU ticks at the start and the end of it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::{lock, procfs};

#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Rss {
    pub(crate) min_kib: u64,
    pub(crate) max_kib: u64,
    pub(crate) last_kib: u64,
    pub(crate) samples: u64,
}

/// (when, CPU ticks) at the start and at the end of the measured phase.
pub(crate) type CpuTicks = (Option<(Instant, u64)>, Option<(Instant, u64)>);

/// The sampler thread (none without `--pid`) and what it gathers.
#[derive(Debug)]
pub(crate) struct Sampler {
    rss: Arc<Mutex<Option<Rss>>>,
    cpu: Arc<Mutex<CpuTicks>>,
    sampling: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Sampler {
    /// Sample `pid` (if any) from `measure_start` until [`Sampler::stop`]; its
    /// CPU ticks are read last at `measure_end` or before.
    pub(crate) fn start(pid: Option<u32>, measure_start: Instant, measure_end: Instant) -> Self {
        let rss = Arc::new(Mutex::new(None::<Rss>));
        let cpu = Arc::new(Mutex::new((None, None)));
        let sampling = Arc::new(AtomicBool::new(true));
        let thread = pid.map(|pid| {
            let rss = rss.clone();
            let cpu = cpu.clone();
            let sampling = sampling.clone();
            std::thread::spawn(move || {
                sample(pid, &rss, &cpu, &sampling, measure_start, measure_end)
            })
        });
        Sampler {
            rss,
            cpu,
            sampling,
            thread,
        }
    }

    /// Stop the thread; what it sampled.
    pub(crate) fn stop(self) -> (Option<Rss>, CpuTicks) {
        self.sampling.store(false, Ordering::Relaxed);
        if let Some(s) = self.thread {
            let _ = s.join();
        }
        let rss = *lock(&self.rss);
        let cpu = *lock(&self.cpu);
        (rss, cpu)
    }
}

fn sample(
    pid: u32,
    rss: &Mutex<Option<Rss>>,
    cpu: &Mutex<CpuTicks>,
    sampling: &AtomicBool,
    measure_start: Instant,
    measure_end: Instant,
) {
    let now = Instant::now();
    if measure_start > now {
        std::thread::sleep(measure_start - now);
    }
    let tick = |slot: &mut Option<(Instant, u64)>| {
        if let Some(t) = procfs::read_cpu_ticks(pid) {
            *slot = Some((Instant::now(), t));
        }
    };
    tick(&mut lock(cpu).0);
    while sampling.load(Ordering::Relaxed) {
        if Instant::now() <= measure_end {
            tick(&mut lock(cpu).1);
        }
        if let Some(kib) = procfs::read_rss_kib(pid) {
            let mut g = lock(rss);
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
}
