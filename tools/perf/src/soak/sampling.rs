//! What the sampler reads while the soak runs: the daemon's resident memory,
//! CPU time and open files from `/proc`, and the live store's size on disk.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::stats::mib;
use crate::{lock, procfs};

/// The live log store under `store`: bytes (file lengths) of its log segments
/// (`log/*.jsonl`: sealed and open) and of its index (`index.redb`). The lock
/// file, and any archive directory (even one inside `store`), are not counted.
pub(crate) fn live_store_bytes(store: &Path) -> u64 {
    let mut total = 0;
    if let Ok(rd) = std::fs::read_dir(store.join("log")) {
        for e in rd.flatten() {
            if e.file_name().to_string_lossy().ends_with(".jsonl") {
                total += e
                    .metadata()
                    .map_or(0, |m| if m.is_file() { m.len() } else { 0 });
            }
        }
    }
    total + std::fs::metadata(store.join("index.redb")).map_or(0, |m| m.len())
}

/// Bytes on disk (allocated blocks) under `dir`.
pub(crate) fn disk_bytes(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt as _;
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let Ok(md) = e.metadata() else { continue };
            if md.is_dir() {
                stack.push(e.path());
            } else {
                total += md.blocks() * 512;
            }
        }
    }
    total
}

#[derive(Debug, Default)]
pub(crate) struct Samples {
    /// (seconds since the start, RSS KiB), every second.
    pub(crate) rss: Vec<(f64, u64)>,
    /// (seconds since the start, cumulative CPU ticks), every second.
    pub(crate) cpu: Vec<(f64, u64)>,
    /// (seconds since the start, live store bytes: log segments + index), every 2 s.
    pub(crate) store: Vec<(f64, u64)>,
    /// (seconds since the start, open file descriptors), every 5 s.
    pub(crate) fds: Vec<(f64, u64)>,
}

/// The sampler thread: RSS and CPU every second, the live store every 2 s,
/// open files every 5 s, until stopped.
#[derive(Debug)]
pub(crate) struct Sampler {
    samples: Arc<Mutex<Samples>>,
    sampling: Arc<AtomicBool>,
    /// Set by the sampler when the daemon's RSS can no longer be read: it exited
    /// (a zombie until soak.sh reaps it has no VmRSS) or crashed.
    daemon_gone: Arc<AtomicBool>,
    pid: u32,
    start: Instant,
    thread: JoinHandle<()>,
}

impl Sampler {
    /// Sample daemon `pid` and the live store in `store` from `start` on.
    pub(crate) fn start(start: Instant, pid: u32, store: PathBuf) -> Self {
        let samples = Arc::new(Mutex::new(Samples::default()));
        let sampling = Arc::new(AtomicBool::new(true));
        let daemon_gone = Arc::new(AtomicBool::new(false));
        let thread = {
            let samples = samples.clone();
            let sampling = sampling.clone();
            let gone = daemon_gone.clone();
            std::thread::spawn(move || sample(start, pid, &store, &samples, &sampling, &gone))
        };
        Sampler {
            samples,
            sampling,
            daemon_gone,
            pid,
            start,
            thread,
        }
    }

    /// An error naming the `phase` (`load`, `drain`) once the daemon is gone.
    pub(crate) fn check_daemon(&self, phase: &str) -> Result<(), String> {
        if !self.daemon_gone.load(Ordering::Relaxed) {
            return Ok(());
        }
        Err(format!(
            "the daemon (pid {}) is gone, {:.0} s into the {phase}: stopped (its exit status \
             follows from soak.sh; a crash is also in `dmesg`)",
            self.pid,
            self.start.elapsed().as_secs_f64()
        ))
    }

    /// The last RSS and live store size sampled, MiB (0 before any).
    pub(crate) fn latest_mib(&self) -> (f64, f64) {
        let s = lock(&self.samples);
        let rss = s.rss.last().map_or(0.0, |r| mib(r.1 as f64));
        let st = s.store.last().map_or(0.0, |r| r.1 as f64 / 1048576.0);
        (rss, st)
    }

    /// Stop the thread; every sample.
    pub(crate) fn stop(self) -> Samples {
        self.sampling.store(false, Ordering::Relaxed);
        let _ = self.thread.join();
        std::mem::take(&mut *lock(&self.samples))
    }
}

/// The sampler thread's loop: one round a second from `start`.
fn sample(
    start: Instant,
    pid: u32,
    store: &Path,
    samples: &Mutex<Samples>,
    sampling: &AtomicBool,
    gone: &AtomicBool,
) {
    let mut k: u64 = 0;
    let mut next = start;
    while sampling.load(Ordering::Relaxed) {
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        }
        let t = Instant::now()
            .saturating_duration_since(start)
            .as_secs_f64();
        let rss = procfs::read_rss_kib(pid);
        if rss.is_none() {
            gone.store(true, Ordering::Relaxed);
        }
        let cpu = procfs::read_cpu_ticks(pid);
        let disk = k.is_multiple_of(2).then(|| live_store_bytes(store));
        let fds = if k.is_multiple_of(5) {
            procfs::count_fds(pid)
        } else {
            None
        };
        let mut s = lock(samples);
        if let Some(r) = rss {
            s.rss.push((t, r));
        }
        if let Some(c) = cpu {
            s.cpu.push((t, c));
        }
        if let Some(d) = disk {
            s.store.push((t, d));
        }
        if let Some(f) = fds {
            s.fds.push((t, f));
        }
        drop(s);
        k += 1;
        next += Duration::from_secs(1);
    }
}
