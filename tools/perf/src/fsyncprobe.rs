//! The disk's own `fdatasync`, measured beside a benchmark: append groups of
//! records to a plain file (one `write`, then one `fdatasync`, as the log store
//! does for a group commit) in the directory of the store, and time each sync.

use std::io::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::stats::percentile_ms;

/// One probe's samples.
#[derive(Debug, Clone, Default)]
pub struct Probe {
    /// Each `fdatasync`, µs, sorted.
    pub sync_us: Vec<u32>,
    /// Records written.
    pub records: u64,
    /// How long the probe ran.
    pub elapsed: Duration,
    /// Bytes per record, newline included.
    pub record_bytes: usize,
    /// Records per `write` and `fdatasync`.
    pub group: usize,
}

impl Probe {
    /// Records per second, `fdatasync` included.
    pub fn records_per_sec(&self) -> f64 {
        self.records as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Append `group` records of `record_bytes` (newline included) with one
/// `write`, then `fdatasync`, for `dur`, to a new file in `dir` (removed
/// after).
pub fn run(dir: &Path, record_bytes: usize, group: usize, dur: Duration) -> std::io::Result<Probe> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(format!("fsync-probe-{}.log", std::process::id()));
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create_new(true)
        .open(&path)?;
    let mut record: Vec<u8> = (0..record_bytes.saturating_sub(1))
        .map(|i| b'a' + (i % 26) as u8)
        .collect();
    record.push(b'\n');
    let group = group.max(1);
    let buf = record.repeat(group);
    let mut sync_us = Vec::new();
    let mut records = 0u64;
    let start = Instant::now();
    let result = (|| -> std::io::Result<()> {
        while start.elapsed() < dur {
            f.write_all(&buf)?;
            let t = Instant::now();
            f.sync_data()?;
            sync_us.push(u32::try_from(t.elapsed().as_micros()).unwrap_or(u32::MAX));
            records += group as u64;
        }
        Ok(())
    })();
    let elapsed = start.elapsed();
    drop(f);
    let removed = std::fs::remove_file(&path);
    result?;
    removed?;
    sync_us.sort_unstable();
    Ok(Probe {
        sync_us,
        records,
        elapsed,
        record_bytes,
        group,
    })
}

/// `{n, p50, p90, p99, max}` (ms) of sorted µs samples.
pub fn summary(sorted: &[u32]) -> serde_json::Value {
    serde_json::json!({
        "n": sorted.len(),
        "p50": percentile_ms(sorted, 50.0),
        "p90": percentile_ms(sorted, 90.0),
        "p99": percentile_ms(sorted, 99.0),
        "max": sorted.last().map(|us| f64::from(*us) / 1000.0),
    })
}

impl Probe {
    /// The probe as JSON: its settings, records/s and `fdatasync` latencies.
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "record_bytes": self.record_bytes,
            "group": self.group,
            "seconds": self.elapsed.as_secs_f64(),
            "records_per_sec": self.records_per_sec(),
            "fdatasync_ms": summary(&self.sync_us),
        })
    }
}
