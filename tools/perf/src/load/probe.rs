//! The `--fsync-probe` baseline: the disk's own `fdatasync`, measured right
//! before the warm-up and right after the last response.

use std::process::ExitCode;

use serde_json::json;

use super::args::Args;
use crate::fsyncprobe::{self, Probe};

/// One probe of `--fsync-probe DIR` (none without it); `when` (`before`,
/// `after`) names it in the error, whose exit code is 70.
pub(crate) fn probe(args: &Args, when: &str) -> Result<Option<Probe>, ExitCode> {
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
}

/// Both probes of a run.
#[derive(Debug)]
pub(crate) struct Baseline {
    /// The first probe (its settings are the run's).
    pub(crate) before: Probe,
    /// `{dir, before, after, pooled_ms}`.
    pub(crate) json: serde_json::Value,
    /// Every `fdatasync` of both, µs, sorted.
    pub(crate) pooled: Vec<u32>,
}

impl Baseline {
    /// The baseline of both probes, when there are both.
    pub(crate) fn new(args: &Args, before: Option<Probe>, after: Option<Probe>) -> Option<Self> {
        let (b, a) = (before?, after?);
        let mut pooled = [b.sync_us.as_slice(), a.sync_us.as_slice()].concat();
        pooled.sort_unstable();
        let json = json!({
            "dir": args.fsync_probe.as_ref().map(|d| d.display().to_string()),
            "before": b.json(),
            "after": a.json(),
            "pooled_ms": fsyncprobe::summary(&pooled),
        });
        Some(Baseline {
            before: b,
            json,
            pooled,
        })
    }
}
